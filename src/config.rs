//! The configuration file: its TOML shape, defaults, secret resolution and
//! validation.
//!
//! Everything here happens before any connection is made, so that a typo in
//! the file is reported with the key that holds it instead of surfacing as a
//! confusing network error minutes later. Secrets are resolved once, into
//! [`Secret`] values whose `Debug` output is redacted, so a stray `{:?}` in a
//! log line can never print a password.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Errors raised while reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key has the wrong type or is unknown.
    #[error("config file {path} is not valid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A key has a value of the right type that still cannot work.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `inbox[1].port`.
        key: String,
        /// What is wrong and what would be right.
        reason: String,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, ConfigError>;

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A secret value (password, token key). Its `Debug` and `Display` never show
/// the value, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value itself; call only where it is handed to a protocol.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How a connection to a mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP. Only sensible on loopback.
    None,
    /// Plain TCP upgraded with STARTTLS before login.
    Starttls,
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the sled database lives.
    pub store: StoreConfig,
    /// The loopback admin socket the CLI uses while the daemon runs.
    pub admin_socket: PathBuf,
    /// IMAP accounts to watch; at least one.
    pub inboxes: Vec<InboxConfig>,
    /// The SMTP server mails are submitted to.
    pub smtp: SmtpConfig,
    /// Liaison's own addresses.
    pub addresses: Addresses,
    /// Token key and lifetimes.
    pub security: SecurityConfig,
    /// Optional fixed relationship duration and its reminders.
    pub lifecycle: LifecycleConfig,
    /// Support tickets.
    pub tickets: TicketsConfig,
    /// Loopback address of the `/metrics` and `/healthz` endpoint, if any.
    pub http_listen: Option<std::net::SocketAddr>,
    /// Folder holding the Handlebars templates.
    pub templates_dir: PathBuf,
    /// The partners allowed to send commands.
    pub partners: Vec<Partner>,
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Folder of the sled database.
    pub path: PathBuf,
    /// sled page cache size in bytes; sled's 1 GB default is far too big for a
    /// daemon that mostly idles.
    pub cache_capacity_bytes: u64,
}

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
    /// Login password.
    pub password: Secret,
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

/// `[smtp]`.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Server host name or IP.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// PEM file of an extra trusted CA certificate (e.g. a self-signed server).
    pub ca_file: Option<PathBuf>,
    /// Login name, when the server wants authentication.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
    /// Upper bound on one SMTP transaction, in seconds.
    pub timeout_secs: u64,
    /// Parallel SMTP connections kept in the pool.
    pub max_connections: u32,
    /// The provider's sending limits (`max_per_minute`,
    /// `max_recipients_per_day`), kept by the outbox.
    pub limits: crate::pacing::SendLimits,
}

/// `[addresses]`: Liaison's own mail addresses.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Where partners send commands.
    pub commands: String,
    /// Sender of invitations; customers reply to `local+TOKEN@domain` of it.
    pub invitations: String,
    /// The vendor's support desk tickets go to.
    pub support_desk: String,
    /// Display name on every mail Liaison sends.
    pub from_name: String,
}

impl Addresses {
    /// The domain used in Message-IDs Liaison generates.
    pub fn message_id_domain(&self) -> &str {
        domain_of(&self.commands).unwrap_or("liaison.invalid")
    }
}

/// `[security]`.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Key for the HMAC that signs invitation tokens.
    pub token_secret: Secret,
    /// Days an invitation (and its token) stays valid.
    pub invitation_ttl_days: u32,
    /// The authserv-id of the receiving MX whose `Authentication-Results`
    /// headers Liaison believes. When set, every sender that gets power from
    /// its address alone must be authenticated by it (see [`crate::trust`]);
    /// when unset, sender addresses are not verified at all.
    pub trusted_authserv_id: Option<String>,
    /// How many of the topmost `Authentication-Results` headers that MX
    /// adds (1 for most servers; one per milter for milter stacks).
    pub trusted_authserv_headers: usize,
    /// How an authenticated domain must match the From domain.
    pub alignment: crate::auth::Alignment,
    /// Customers answering with a valid token or thread must be
    /// authenticated too (by default the credential is enough).
    pub authenticate_customers: bool,
    /// Messages larger than this are quarantined unread.
    pub max_message_bytes: usize,
    /// Replies Liaison sends to one address per hour at most.
    pub max_replies_per_hour: u32,
    /// A quarantined mail's raw bytes are kept in the store (so it can be
    /// released) only up to this size; larger ones stay only in the IMAP
    /// quarantine folder.
    pub quarantine_keep_bytes: usize,
    /// The raw bytes kept for quarantined mails take at most this much of
    /// the store in total; beyond it new ones stay only in the IMAP
    /// quarantine folder (releasing frees room).
    pub quarantine_store_bytes: u64,
    /// The mails a cap held back take at most this much of the store in
    /// total (their composed bytes, attachments included): whoever can
    /// make Liaison hold mail (a flood of support requests) must not be
    /// able to fill the disk. Beyond it a held mail is recorded (reason,
    /// subject, recipients) but not kept; its original stays in the inbox.
    pub held_store_bytes: u64,
    /// Support requests one customer address may have forwarded to the
    /// partner or opened as tickets per hour; the rest are held.
    pub max_support_requests_per_hour: u32,
}

/// `[lifecycle]`: an optional fixed duration for active relationships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Days an accepted relationship lasts; `None` (the default) for ever.
    pub relationship_days: Option<u32>,
    /// Days before the end at which the partner is reminded.
    pub reminder_days: Vec<u32>,
    /// At the end, start a new period instead of ending the relationship.
    pub auto_extend: bool,
}

/// `[tickets]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketsConfig {
    /// Attachments up to this total size are forwarded to the support desk.
    pub attachment_max_bytes: usize,
    /// A customer mail on a ticket closed less than this many days ago
    /// reopens it; later ones open a new ticket that refers to the old one.
    pub reopen_days: u32,
}

/// One `[[partner]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    /// Stable identifier used in the store and in `status` output.
    pub id: String,
    /// Name shown to customers ("Northwind Traders").
    pub name: String,
    /// Addresses allowed to send commands for this partner (lowercase).
    pub emails: Vec<String>,
    /// Default locale of mails for this partner and its customers.
    pub locale: String,
}

/// Locales for which templates must exist.
pub const SUPPORTED_LOCALES: &[&str] = &["en", "ko"];

// ---- raw file shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: RawStore,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    inbox: Vec<RawInbox>,
    smtp: RawSmtp,
    addresses: RawAddresses,
    security: RawSecurity,
    #[serde(default)]
    lifecycle: RawLifecycle,
    #[serde(default)]
    tickets: RawTickets,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    templates: RawTemplates,
    #[serde(default)]
    partner: Vec<RawPartner>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
    #[serde(default = "default_cache_mb")]
    cache_capacity_mb: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTickets {
    #[serde(default = "default_attachment_bytes")]
    attachment_max_bytes: usize,
    #[serde(default = "default_reopen_days")]
    reopen_days: u32,
}

impl Default for RawTickets {
    fn default() -> Self {
        RawTickets {
            attachment_max_bytes: default_attachment_bytes(),
            reopen_days: default_reopen_days(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
    relationship_days: Option<u32>,
    #[serde(default = "default_reminders")]
    reminder_days: Vec<u32>,
    #[serde(default)]
    auto_extend: bool,
}

impl Default for RawLifecycle {
    fn default() -> Self {
        RawLifecycle {
            relationship_days: None,
            reminder_days: default_reminders(),
            auto_extend: false,
        }
    }
}

fn default_reminders() -> Vec<u32> {
    vec![30, 7, 1]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbox {
    name: String,
    host: String,
    port: u16,
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: String,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: u16,
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_smtp_connections")]
    max_connections: u32,
    max_per_minute: Option<u32>,
    max_recipients_per_day: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddresses {
    commands: String,
    invitations: String,
    support_desk: String,
    #[serde(default = "default_from_name")]
    from_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    token_secret: Option<String>,
    token_secret_env: Option<String>,
    token_secret_file: Option<PathBuf>,
    #[serde(default = "default_ttl")]
    invitation_ttl_days: u32,
    trusted_authserv_id: Option<String>,
    #[serde(default = "default_trusted_authserv_headers")]
    trusted_authserv_headers: usize,
    #[serde(default)]
    alignment: crate::auth::Alignment,
    #[serde(default)]
    authenticate_customers: bool,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: usize,
    #[serde(default = "default_max_replies")]
    max_replies_per_hour: u32,
    #[serde(default = "default_quarantine_keep_bytes")]
    quarantine_keep_bytes: usize,
    #[serde(default = "default_quarantine_store_bytes")]
    quarantine_store_bytes: u64,
    #[serde(default = "default_held_store_bytes")]
    held_store_bytes: u64,
    #[serde(default = "default_max_support_requests")]
    max_support_requests_per_hour: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartner {
    id: String,
    name: String,
    emails: Vec<String>,
    #[serde(default = "default_locale")]
    locale: String,
}

fn default_cache_mb() -> u64 {
    16
}
fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_true() -> bool {
    true
}
fn default_poll() -> u64 {
    30
}
fn default_timeout() -> u64 {
    30
}
fn default_smtp_connections() -> u32 {
    4
}
fn default_from_name() -> String {
    "Liaison".into()
}
fn default_ttl() -> u32 {
    90
}
fn default_max_message_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_trusted_authserv_headers() -> usize {
    1
}
fn default_max_replies() -> u32 {
    20
}
fn default_quarantine_keep_bytes() -> usize {
    1024 * 1024
}
fn default_quarantine_store_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_held_store_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_max_support_requests() -> u32 {
    5
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
fn default_reopen_days() -> u32 {
    14
}
fn default_attachment_bytes() -> usize {
    5 * 1024 * 1024
}
fn default_locale() -> String {
    "en".into()
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it
    /// (store, templates, secret files) are taken relative to the current
    /// directory, like every other command-line tool does.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Config> {
        if raw.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        if raw.inbox.is_empty() {
            return Err(invalid(
                "inbox",
                "at least one [[inbox]] is needed, or Liaison has nothing to watch",
            ));
        }
        let mut inboxes = Vec::new();
        for (i, r) in raw.inbox.into_iter().enumerate() {
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
            let password = resolve_secret(
                &format!("inbox[{i}].password"),
                r.password,
                r.password_env,
                r.password_file,
            )?
            .ok_or_else(|| {
                invalid(
                    key("password"),
                    "one of password, password_env or password_file is required",
                )
            })?;
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
                password,
                mailbox: r.mailbox,
                idle: r.idle,
                poll_interval_secs: r.poll_interval_secs,
                timeout_secs: r.timeout_secs,
            });
        }

        let s = raw.smtp;
        check_host("smtp.host", &s.host)?;
        check_port("smtp.port", s.port)?;
        if s.timeout_secs == 0 {
            return Err(invalid("smtp.timeout_secs", "must be at least 1"));
        }
        if s.max_connections == 0 {
            return Err(invalid("smtp.max_connections", "must be at least 1"));
        }
        if s.max_per_minute == Some(0) {
            return Err(invalid(
                "smtp.max_per_minute",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if s.max_recipients_per_day == Some(0) {
            return Err(invalid(
                "smtp.max_recipients_per_day",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        let smtp_password =
            resolve_secret("smtp.password", s.password, s.password_env, s.password_file)?;
        if smtp_password.is_some() && s.username.is_none() {
            return Err(invalid(
                "smtp.username",
                "a password is set but no username",
            ));
        }
        let smtp = SmtpConfig {
            host: s.host,
            port: s.port,
            tls: s.tls,
            ca_file: s.ca_file,
            username: s.username,
            password: smtp_password,
            timeout_secs: s.timeout_secs,
            max_connections: s.max_connections,
            limits: crate::pacing::SendLimits {
                max_per_minute: s.max_per_minute,
                max_recipients_per_day: s.max_recipients_per_day,
            },
        };

        let a = raw.addresses;
        let addresses = Addresses {
            commands: check_address("addresses.commands", &a.commands)?,
            invitations: check_address("addresses.invitations", &a.invitations)?,
            support_desk: check_address("addresses.support_desk", &a.support_desk)?,
            from_name: check_header_text("addresses.from_name", &a.from_name)?,
        };
        if addresses.invitations.contains('+') {
            return Err(invalid(
                "addresses.invitations",
                "must not contain '+': Liaison appends +TOKEN to it",
            ));
        }
        // Replies come to `local+TOKEN@`, bounces to `local+b-TAG@`; a local
        // part may have 64 characters (RFC 5321).
        let tag_len = crate::token::TOKEN_LEN.max(crate::token::BOUNCE_TAG_LEN);
        let local_len = addresses.invitations.split('@').next().map_or(0, str::len);
        if local_len + 1 + tag_len > 64 {
            return Err(invalid(
                "addresses.invitations",
                format!(
                    "its local part may have at most {} characters: Liaison appends +TOKEN ({} characters) to it",
                    64 - 1 - tag_len,
                    crate::token::TOKEN_LEN
                ),
            ));
        }

        let sec = raw.security;
        let token_secret = resolve_secret(
            "security.token_secret",
            sec.token_secret,
            sec.token_secret_env,
            sec.token_secret_file,
        )?
        .ok_or_else(|| {
            invalid(
                "security.token_secret",
                "one of token_secret, token_secret_env or token_secret_file is required",
            )
        })?;
        if token_secret.expose().len() < 16 {
            return Err(invalid(
                "security.token_secret",
                "must be at least 16 characters (use 32+ random bytes, e.g. `openssl rand -hex 32`)",
            ));
        }
        let trusted_authserv_id = match sec.trusted_authserv_id {
            None => None,
            Some(id) => {
                let id = id.trim().to_string();
                if id.is_empty()
                    || id.contains(|c: char| c.is_whitespace() || c.is_control() || c == ';')
                {
                    return Err(invalid(
                        "security.trusted_authserv_id",
                        "must be the authserv-id your MX writes first in its Authentication-Results header, e.g. \"mx.example.com\"",
                    ));
                }
                Some(id)
            }
        };
        if !(1..=16).contains(&sec.trusted_authserv_headers) {
            return Err(invalid(
                "security.trusted_authserv_headers",
                "must be 1-16: how many Authentication-Results headers your MX adds on top (1 for most servers, one per milter for milter stacks)",
            ));
        }
        if sec.authenticate_customers && trusted_authserv_id.is_none() {
            return Err(invalid(
                "security.authenticate_customers",
                "needs security.trusted_authserv_id: without a trusted MX no sender can be authenticated",
            ));
        }
        if sec.invitation_ttl_days == 0 {
            return Err(invalid(
                "security.invitation_ttl_days",
                "must be at least 1",
            ));
        }

        if raw.partner.is_empty() {
            return Err(invalid(
                "partner",
                "at least one [[partner]] is needed, or nobody may send commands",
            ));
        }
        let mut partners: Vec<Partner> = Vec::new();
        for (i, p) in raw.partner.into_iter().enumerate() {
            let key = |k: &str| format!("partner[{i}].{k}");
            if p.id.is_empty()
                || !p
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    key("id"),
                    "must be non-empty and use only letters, digits, '-' and '_'",
                ));
            }
            if partners.iter().any(|q| q.id == p.id) {
                return Err(invalid(key("id"), format!("`{}` is used twice", p.id)));
            }
            if p.emails.is_empty() {
                return Err(invalid(key("emails"), "needs at least one address"));
            }
            let mut emails = Vec::new();
            for (j, e) in p.emails.iter().enumerate() {
                let e = check_address(&format!("partner[{i}].emails[{j}]"), e)?;
                if let Some(other) = partners.iter().find(|q| q.emails.contains(&e)) {
                    return Err(invalid(
                        format!("partner[{i}].emails[{j}]"),
                        format!("{e} already belongs to partner `{}`", other.id),
                    ));
                }
                emails.push(e);
            }
            if !SUPPORTED_LOCALES.contains(&p.locale.as_str()) {
                return Err(invalid(
                    key("locale"),
                    format!("`{}` is not one of {:?}", p.locale, SUPPORTED_LOCALES),
                ));
            }
            partners.push(Partner {
                id: p.id,
                name: check_header_text(&key("name"), &p.name)?,
                emails,
                locale: p.locale,
            });
        }

        let l = raw.lifecycle;
        if l.relationship_days == Some(0) {
            return Err(invalid(
                "lifecycle.relationship_days",
                "must be at least 1, or left out for relationships without an end",
            ));
        }
        if let (Some(days), Some(&r)) = (l.relationship_days, l.reminder_days.iter().max()) {
            if r >= days {
                return Err(invalid(
                    "lifecycle.reminder_days",
                    format!("a reminder {r} days before the end of a {days}-day relationship would come at its start"),
                ));
            }
        }
        if l.reminder_days.contains(&0) {
            return Err(invalid(
                "lifecycle.reminder_days",
                "days must be at least 1",
            ));
        }
        let mut reminder_days = l.reminder_days;
        reminder_days.sort_unstable_by(|a, b| b.cmp(a));
        reminder_days.dedup();
        let lifecycle = LifecycleConfig {
            relationship_days: l.relationship_days,
            reminder_days,
            auto_extend: l.auto_extend,
        };

        let http_listen = match raw.http.listen {
            None => None,
            Some(a) => {
                let addr: std::net::SocketAddr = a.parse().map_err(|_| {
                    invalid(
                        "http.listen",
                        format!("`{a}` is not an address like 127.0.0.1:9898"),
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(invalid(
                        "http.listen",
                        format!("{addr} is not a loopback address; /metrics and /healthz are for local scrapers only"),
                    ));
                }
                Some(addr)
            }
        };
        let tickets = TicketsConfig {
            attachment_max_bytes: raw.tickets.attachment_max_bytes,
            reopen_days: raw.tickets.reopen_days,
        };

        let admin_socket = raw.admin.socket.unwrap_or_else(|| {
            let mut s = raw.store.path.clone().into_os_string();
            s.push(".sock");
            PathBuf::from(s)
        });
        Ok(Config {
            store: StoreConfig {
                path: raw.store.path,
                cache_capacity_bytes: raw.store.cache_capacity_mb.max(1) * 1024 * 1024,
            },
            admin_socket,
            inboxes,
            smtp,
            addresses,
            security: SecurityConfig {
                token_secret,
                invitation_ttl_days: sec.invitation_ttl_days,
                trusted_authserv_id,
                trusted_authserv_headers: sec.trusted_authserv_headers,
                alignment: sec.alignment,
                authenticate_customers: sec.authenticate_customers,
                max_message_bytes: sec.max_message_bytes,
                max_replies_per_hour: sec.max_replies_per_hour,
                quarantine_keep_bytes: sec.quarantine_keep_bytes,
                quarantine_store_bytes: sec.quarantine_store_bytes,
                held_store_bytes: sec.held_store_bytes,
                max_support_requests_per_hour: sec.max_support_requests_per_hour,
            },
            lifecycle,
            tickets,
            http_listen,
            templates_dir: raw
                .templates
                .dir
                .unwrap_or_else(|| PathBuf::from("templates")),
            partners,
        })
    }

    /// What the operator should know about a valid configuration that
    /// leaves a door open (printed by `check-config`, logged at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.security.trusted_authserv_id.is_none() {
            out.push(
                "security.trusted_authserv_id is not set: sender addresses are not verified, so anyone can write as a partner (commands), as the support desk or a partner on a ticket, or as a customer; set it to your MX's authserv-id (README: Trusting senders)"
                    .to_string(),
            );
        }
        out
    }

    /// The partner an address belongs to, if any (case-insensitive).
    pub fn partner_by_email(&self, email: &str) -> Option<&Partner> {
        let email = email.to_ascii_lowercase();
        self.partners.iter().find(|p| p.emails.contains(&email))
    }

    /// The partner with this id.
    pub fn partner(&self, id: &str) -> Option<&Partner> {
        self.partners.iter().find(|p| p.id == id)
    }
}

fn resolve_secret(
    key: &str,
    inline: Option<String>,
    env: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>> {
    let given = inline.is_some() as u8 + env.is_some() as u8 + file.is_some() as u8;
    if given > 1 {
        return Err(invalid(
            key,
            "set only one of the inline value, `_env` and `_file`",
        ));
    }
    if let Some(v) = inline {
        return Ok(Some(Secret(v)));
    }
    if let Some(var) = env {
        return match std::env::var(&var) {
            Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
            _ => Err(invalid(
                format!("{key}_env"),
                format!("environment variable {var} is not set or empty"),
            )),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(&path) {
            // A trailing newline from `echo secret > file` is not part of it.
            Ok(v) if !v.trim_end_matches(['\r', '\n']).is_empty() => {
                Ok(Some(Secret(v.trim_end_matches(['\r', '\n']).to_string())))
            }
            Ok(_) => Err(invalid(
                format!("{key}_file"),
                format!("{} is empty", path.display()),
            )),
            Err(e) => Err(invalid(
                format!("{key}_file"),
                format!("cannot read {}: {e}", path.display()),
            )),
        };
    }
    Ok(None)
}

fn check_host(key: &str, host: &str) -> Result<()> {
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(invalid(key, format!("`{host}` is not a host name or IP")));
    }
    Ok(())
}

fn check_port(key: &str, port: u16) -> Result<()> {
    if port == 0 {
        return Err(invalid(key, "must be 1-65535"));
    }
    Ok(())
}

fn check_header_text(key: &str, text: &str) -> Result<String> {
    if text.trim().is_empty() || text.chars().any(|c| c.is_control()) {
        return Err(invalid(
            key,
            "must be non-empty text without control characters",
        ));
    }
    Ok(text.trim().to_string())
}

fn check_address(key: &str, addr: &str) -> Result<String> {
    crate::address::normalize(addr).ok_or_else(|| {
        invalid(
            key,
            format!("`{addr}` is not a plain email address like name@example.com"),
        )
    })
}

/// The domain part of an address.
pub fn domain_of(addr: &str) -> Option<&str> {
    addr.rsplit_once('@').map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[store]
path = "/tmp/x"
[[inbox]]
name = "commands"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "commands@liaison.test"
password = "pw"
[smtp]
host = "127.0.0.1"
port = 2525
tls = "none"
[addresses]
commands = "commands@liaison.test"
invitations = "invites@liaison.test"
support_desk = "helpdesk@liaison.test"
[security]
token_secret = "0123456789abcdef0123"
[[partner]]
id = "northwind"
name = "Northwind"
emails = ["Partner1@liaison.test"]
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn good_config_gets_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.inboxes[0].mailbox, "INBOX");
        assert!(c.inboxes[0].idle);
        assert_eq!(c.security.invitation_ttl_days, 90);
        assert_eq!(c.partners[0].emails, vec!["partner1@liaison.test"]);
        assert_eq!(c.partners[0].locale, "en");
        assert_eq!(c.admin_socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.lifecycle.relationship_days, None);
        assert_eq!(c.lifecycle.reminder_days, vec![30, 7, 1]);
        assert!(c.partner_by_email("PARTNER1@liaison.test").is_some());
        assert_eq!(c.security.trusted_authserv_id, None);
        assert_eq!(c.security.trusted_authserv_headers, 1);
        assert_eq!(c.security.alignment, crate::auth::Alignment::Relaxed);
        assert!(!c.security.authenticate_customers);
    }

    fn with_security(keys: &str) -> String {
        GOOD.replace(
            "token_secret = \"0123456789abcdef0123\"\n",
            &format!("token_secret = \"0123456789abcdef0123\"\n{keys}\n"),
        )
    }

    #[test]
    fn sender_trust_keys_are_read_and_checked() {
        let c = parse(&with_security(
            "trusted_authserv_id = \"mx.liaison.test\"\ntrusted_authserv_headers = 2\nalignment = \"strict\"\nauthenticate_customers = true",
        ))
        .unwrap();
        assert_eq!(
            c.security.trusted_authserv_id.as_deref(),
            Some("mx.liaison.test")
        );
        assert_eq!(c.security.trusted_authserv_headers, 2);
        assert_eq!(c.security.alignment, crate::auth::Alignment::Strict);
        assert!(c.security.authenticate_customers);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        // Without a trusted MX, the operator is warned.
        let w = parse(GOOD).unwrap().warnings();
        assert!(
            w.len() == 1 && w[0].contains("sender addresses are not verified"),
            "{w:?}"
        );
        for (keys, key) in [
            ("trusted_authserv_id = \"\"", "security.trusted_authserv_id"),
            (
                "trusted_authserv_id = \"mx; dkim=pass\"",
                "security.trusted_authserv_id",
            ),
            (
                "trusted_authserv_id = \"mx\"\ntrusted_authserv_headers = 0",
                "security.trusted_authserv_headers",
            ),
            (
                "authenticate_customers = true",
                "security.authenticate_customers",
            ),
            ("alignment = \"loose\"", "alignment"),
        ] {
            let err = parse(&with_security(keys)).unwrap_err().to_string();
            assert!(err.contains(key), "expected `{key}` in: {err}");
        }
    }

    #[test]
    fn support_request_cap_has_a_default_and_can_be_set() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.security.max_support_requests_per_hour, 5);
        let text = with_security("max_support_requests_per_hour = 2");
        assert_eq!(
            parse(&text).unwrap().security.max_support_requests_per_hour,
            2
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = parse(GOOD).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("0123456789abcdef0123"), "{dbg}");
        assert!(!dbg.contains("\"pw\""), "{dbg}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = GOOD.replace("[store]\n", "[store]\npaht = 1\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("paht"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                GOOD.replace("tls = \"none\"\nusername", "tls = \"ssl\"\nusername"),
                "tls",
            ),
            (GOOD.replace("port = 1143", "port = 0"), "inbox[0].port"),
            (
                GOOD.replace("\"0123456789abcdef0123\"", "\"short\""),
                "security.token_secret",
            ),
            (
                GOOD.replace("Partner1@liaison.test", "not an address"),
                "partner[0].emails[0]",
            ),
            (GOOD.replace("password = \"pw\"", ""), "inbox[0].password"),
            (
                GOOD.replace(
                    "password = \"pw\"",
                    "password = \"pw\"\npassword_env = \"X\"",
                ),
                "inbox[0].password",
            ),
            (
                GOOD.replace("invites@liaison.test", "invites+x@liaison.test"),
                "addresses.invitations",
            ),
            (
                format!("{GOOD}\n[lifecycle]\nrelationship_days = 20\n"),
                "lifecycle.reminder_days",
            ),
            (
                format!("{GOOD}\n[lifecycle]\nrelationship_days = 0\n"),
                "lifecycle.relationship_days",
            ),
            (
                format!("{GOOD}\n[http]\nlisten = \"0.0.0.0:9898\"\n"),
                "http.listen",
            ),
            (
                GOOD.replace(
                    "username = \"commands",
                    "processed = \"delete\"\nusername = \"commands",
                ),
                "inbox[0].processed",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "expected `{key}` in: {err}");
        }
    }

    #[test]
    fn secret_from_missing_env_var_is_an_error() {
        let text = GOOD.replace(
            "password = \"pw\"",
            "password_env = \"LIAISON_TEST_SURELY_UNSET_VAR\"",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("LIAISON_TEST_SURELY_UNSET_VAR"), "{err}");
    }

    #[test]
    fn shipped_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let dev = Config::load(&root.join("liaison.dev.toml")).unwrap();
        assert_eq!(dev.inboxes.len(), 2);
        // The example's secrets point at a production host's environment and
        // files; swap them for inline values so every other key is checked.
        let example = std::fs::read_to_string(root.join("liaison.example.toml")).unwrap();
        let example: Vec<&str> = example
            .lines()
            .map(|l| {
                if l.starts_with("password_env") || l.starts_with("password_file") {
                    "password = \"x\""
                } else if l.starts_with("token_secret_file") {
                    "token_secret = \"0123456789abcdef0123\""
                } else {
                    l
                }
            })
            .collect();
        let c = parse(&example.join("\n")).unwrap();
        assert_eq!(c.inboxes[0].tls, TlsMode::Tls);
        assert_eq!(c.partners[0].emails.len(), 2);
    }

    #[test]
    fn secret_file_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "abcdefghijklmnopqrstuvwxyz\n").unwrap();
        let text = GOOD.replace(
            "token_secret = \"0123456789abcdef0123\"",
            &format!("token_secret_file = {:?}", f.display().to_string()),
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.security.token_secret.expose(),
            "abcdefghijklmnopqrstuvwxyz"
        );
    }
}
