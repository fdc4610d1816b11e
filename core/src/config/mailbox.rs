//! `[[inbox]]`: the IMAP accounts Liaison watches.

use super::*;

/// One `[[inbox]]`: an IMAP account and mailbox that Liaison watches.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// Name used in logs and as the key of this inbox's cursor in the store.
    pub name: String,
    /// Server host name or IP.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// PEM file of extra trusted CA certificates (e.g. a self-signed server).
    pub ca_file: Option<PathBuf>,
    /// Login name.
    pub username: String,
    /// How it logs in: a password, or a token (`auth = "oauth2"`; the
    /// token acts for `username`).
    pub login: Login,
    /// Mailbox to select.
    pub mailbox: String,
    /// Use IDLE when the server offers it.
    pub idle: bool,
    /// Seconds between polls when IDLE is off or not offered.
    pub poll_interval_secs: u64,
    /// Upper bound on every IMAP command, in seconds.
    pub timeout_secs: u64,
    /// How a processed message is marked on the server.
    pub processed: ProcessedMark,
    /// Folder where quarantined messages are copied, with `/` between
    /// levels (translated to the server's separator).
    pub quarantine_folder: String,
}

/// How a processed message is marked on the IMAP server, once its effects
/// are durably committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessedMark {
    /// Set this keyword (flag) on it; it stays in the mailbox.
    Keyword(String),
    /// Move it to this folder.
    Move(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInbox {
    name: String,
    host: String,
    port: u16,
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: String,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// `"password"` (default) or `"oauth2"`.
    auth: Option<String>,
    /// The `[[oauth2]]` client, with `auth = "oauth2"`.
    oauth2: Option<String>,
    /// `"xoauth2"` (default) or `"oauthbearer"`.
    oauth2_mechanism: Option<crate::oauth::sasl::Mechanism>,
    #[serde(default = "default_mailbox")]
    mailbox: String,
    #[serde(default = "default_true")]
    idle: bool,
    #[serde(default = "default_poll")]
    poll_interval_secs: u64,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    /// `"keyword"` (default) or `"move"`.
    processed: Option<String>,
    #[serde(default = "default_processed_keyword")]
    processed_keyword: String,
    processed_folder: Option<String>,
    #[serde(default = "default_quarantine_folder")]
    quarantine_folder: String,
}

fn default_mailbox() -> String {
    "INBOX".into()
}

fn default_poll() -> u64 {
    30
}

fn default_processed_keyword() -> String {
    "$LiaisonProcessed".into()
}

/// Configured folder names use `/` between levels, whatever the server's
/// hierarchy separator: the watcher asks the server for its separator
/// (`LIST "" ""`) and builds the real name with it, so this default is
/// `Liaison.Quarantine` on a server that separates with `.`.
fn default_quarantine_folder() -> String {
    "Liaison/Quarantine".into()
}

/// Checks every `[[inbox]]` and resolves its password.
pub(super) fn validate_inboxes(
    raw: Vec<RawInbox>,
    secrets: &dyn SecretSource,
) -> Result<Vec<InboxConfig>> {
    if raw.is_empty() {
        return Err(invalid(
            "inbox",
            "at least one [[inbox]] is needed, or Liaison has nothing to watch",
        ));
    }
    let mut inboxes = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("inbox[{i}].{k}");
        if r.name.trim().is_empty() {
            return Err(invalid(key("name"), "must not be empty"));
        }
        if inboxes.iter().any(|b: &InboxConfig| b.name == r.name) {
            return Err(invalid(key("name"), format!("`{}` is used twice", r.name)));
        }
        check_host(&key("host"), &r.host)?;
        check_port(&key("port"), r.port)?;
        if r.poll_interval_secs == 0 {
            return Err(invalid(key("poll_interval_secs"), "must be at least 1"));
        }
        if r.timeout_secs == 0 {
            return Err(invalid(key("timeout_secs"), "must be at least 1"));
        }
        let password_given =
            r.password.is_some() || r.password_env.is_some() || r.password_file.is_some();
        let oauth = oauth2::validate_login_keys(
            &format!("inbox[{i}]"),
            r.auth.as_deref(),
            r.oauth2.clone(),
            r.oauth2_mechanism,
            password_given,
            r.tls,
            &r.host,
        )?;
        let login = match oauth {
            Some(o) => Login::OAuth2(o),
            None => Login::Password(
                resolve_secret(
                    secrets,
                    &format!("inbox[{i}].password"),
                    r.password,
                    r.password_env,
                    r.password_file,
                )?
                .ok_or_else(|| {
                    invalid(
                        key("password"),
                        "one of password, password_env or password_file is required (or auth = \"oauth2\")",
                    )
                })?,
            ),
        };
        let processed = match r.processed.as_deref().unwrap_or("keyword") {
            "keyword" => {
                let k = &r.processed_keyword;
                if k.is_empty()
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_graphic() && !"(){%*\"\\]".contains(c))
                {
                    return Err(invalid(
                        key("processed_keyword"),
                        format!("`{k}` is not a valid IMAP keyword (atom characters only)"),
                    ));
                }
                ProcessedMark::Keyword(k.clone())
            }
            "move" => ProcessedMark::Move(
                r.processed_folder
                    .clone()
                    .unwrap_or_else(|| "Liaison/Processed".into()),
            ),
            other => {
                return Err(invalid(
                    key("processed"),
                    format!("`{other}` is not \"keyword\" or \"move\""),
                ))
            }
        };
        inboxes.push(InboxConfig {
            processed,
            quarantine_folder: r.quarantine_folder.clone(),
            name: r.name,
            host: r.host,
            port: r.port,
            tls: r.tls,
            ca_file: r.ca_file,
            username: r.username,
            login,
            mailbox: r.mailbox,
            idle: r.idle,
            poll_interval_secs: r.poll_interval_secs,
            timeout_secs: r.timeout_secs,
        });
    }

    Ok(inboxes)
}
