//! The configuration file: its TOML shape, defaults, secret resolution and
//! validation.
//!
//! Everything here happens before any connection is made, so that a typo in
//! the file is reported with the key that holds it instead of surfacing as a
//! confusing network error minutes later. Secrets are resolved once, into
//! [`Secret`] values whose `Debug` output is redacted, so a stray `{:?}` in a
//! log line can never print a password.

mod addresses;
mod gdap;
mod lifecycle;
mod mailbox;
pub mod oauth2;
mod partner;
mod security;
mod smtp;
mod store;
mod tickets;
pub mod web;

pub use addresses::Addresses;
pub use lifecycle::LifecycleConfig;
pub use mailbox::{InboxConfig, ProcessedMark};
pub use oauth2::{Login, OAuth2Config, OAuthLogin};
pub use partner::{AccessAssignment, Partner, PartnerGraph, RoleSet};
pub use security::SecurityConfig;
pub use smtp::SmtpConfig;
pub use store::{split_sslmode, PostgresConfig, StoreBackend, StoreConfig};
pub use tickets::TicketsConfig;

use addresses::RawAddresses;
use lifecycle::RawLifecycle;
use mailbox::RawInbox;
use partner::RawPartner;
use security::RawSecurity;
use smtp::RawSmtp;
use store::RawStore;
use tickets::RawTickets;

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
    pub http_listen: Option<core::net::SocketAddr>,
    /// The customer landing page (`[web]`), when it is on.
    pub web: Option<web::WebConfig>,
    /// Folder holding the Handlebars templates.
    pub templates_dir: PathBuf,
    /// The partners allowed to send commands.
    pub partners: Vec<Partner>,
    /// `[[oauth2]]` clients, referred to by inboxes and `[smtp]` with
    /// `auth = "oauth2"` (and by the Graph client).
    pub oauth2: Vec<OAuth2Config>,
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
    web: web::RawWeb,
    #[serde(default)]
    templates: RawTemplates,
    #[serde(default)]
    partner: Vec<RawPartner>,
    #[serde(default)]
    oauth2: Vec<oauth2::RawOAuth2>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    socket: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    dir: Option<PathBuf>,
}

fn default_timeout() -> u64 {
    30
}
fn default_true() -> bool {
    true
}

impl Config {
    /// Parses and validates config text; `origin` names it in errors, and
    /// `secrets` resolves `*_env` and `*_file` keys (the shell reads the
    /// environment and files: `liaison::files::load_config`).
    pub fn parse(text: &str, origin: &Path, secrets: &dyn SecretSource) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_raw(raw, secrets)
    }

    fn from_raw(raw: RawConfig, secrets: &dyn SecretSource) -> Result<Config> {
        let mut store = raw.store.validate(secrets, raw.admin.socket.is_some())?;
        let oauth2 = oauth2::validate_clients(raw.oauth2, secrets)?;
        let inboxes = mailbox::validate_inboxes(raw.inbox, secrets)?;
        let smtp = raw.smtp.validate(secrets)?;
        if let StoreBackend::Postgres(pg) = &mut store.backend {
            pg.claim_secs = store::claim_secs(pg.lease_secs, smtp.timeout_secs);
        }
        oauth2::check_references(&oauth2, &inboxes, &smtp)?;
        let addresses = raw.addresses.validate()?;
        let security = raw.security.validate(secrets)?;
        let partners = partner::validate_partners(raw.partner, &security.approval_link_hosts)?;
        for (i, p) in partners.iter().enumerate() {
            if let Some(g) = &p.graph {
                if !oauth2.iter().any(|c| c.name == g.oauth2) {
                    return Err(invalid(
                        format!("partner[{i}].graph.oauth2"),
                        format!("`{}` is not the name of an [[oauth2]] client", g.oauth2),
                    ));
                }
            }
        }
        let lifecycle = raw.lifecycle.validate()?;
        let http_listen = validate_http_listen(raw.http.listen)?;
        let tickets = raw.tickets.validate();
        let web = raw
            .web
            .validate(http_listen)
            .map_err(|e| invalid(e.key, e.reason))?;
        let admin_socket = raw.admin.socket.unwrap_or_else(|| {
            let mut s = store.path.clone().into_os_string();
            s.push(".sock");
            PathBuf::from(s)
        });
        Ok(Config {
            store,
            admin_socket,
            inboxes,
            smtp,
            addresses,
            security,
            lifecycle,
            tickets,
            http_listen,
            web,
            templates_dir: raw
                .templates
                .dir
                .unwrap_or_else(|| PathBuf::from("templates")),
            partners,
            oauth2,
        })
    }

    /// What the operator should know about a valid configuration that
    /// leaves a door open (printed by `check-config`, logged at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.store.warnings();
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

/// Where `*_env` and `*_file` secrets are read from: the shell implements
/// it over the process environment and the disk, tests over a map.
pub trait SecretSource {
    /// The environment variable's value, if it is set.
    fn env(&self, var: &str) -> Option<String>;
    /// The file's whole text, or why it could not be read.
    fn file(&self, path: &Path) -> std::result::Result<String, String>;
}

fn resolve_secret(
    secrets: &dyn SecretSource,
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
        return match secrets.env(&var) {
            Some(v) if !v.is_empty() => Ok(Some(Secret(v))),
            _ => Err(invalid(
                format!("{key}_env"),
                format!("environment variable {var} is not set or empty"),
            )),
        };
    }
    if let Some(path) = file {
        return match secrets.file(&path) {
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

/// `[http] listen`: a loopback address, or none.
fn validate_http_listen(listen: Option<String>) -> Result<Option<core::net::SocketAddr>> {
    let http_listen = match listen {
        None => None,
        Some(a) => {
            let addr: core::net::SocketAddr = a.parse().map_err(|_| {
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
    Ok(http_listen)
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
    crate::mail::address::normalize(addr).ok_or_else(|| {
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

    /// Secrets for the tests: one file, no environment.
    struct TestSecrets;

    impl SecretSource for TestSecrets {
        fn env(&self, _var: &str) -> Option<String> {
            None
        }
        fn file(&self, path: &Path) -> std::result::Result<String, String> {
            match path.to_str() {
                Some("/run/liaison/token-secret") => Ok("abcdefghijklmnopqrstuvwxyz\n".into()),
                _ => Err("No such file or directory".into()),
            }
        }
    }

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("test.toml"), &TestSecrets)
    }

    fn with_store(store: &str) -> String {
        GOOD.replace("[store]\npath = \"/tmp/x\"\n", store)
    }

    fn invalid_key(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn a_postgres_store_needs_a_url_and_an_admin_socket_and_no_path() {
        let pg = "[store]\nbackend = \"postgres\"\nurl = \"postgres://liaison:pw@db.example/liaison?sslmode=verify-full\"\n[admin]\nsocket = \"/run/liaison/a.sock\"\n";
        let c = parse(&with_store(pg)).unwrap();
        let StoreBackend::Postgres(p) = &c.store.backend else {
            panic!("postgres expected");
        };
        assert_eq!(p.max_connections, store::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(p.lease_secs, store::DEFAULT_LEASE_SECS);
        // Four leases, and longer than a send may take (2 × 30 s + 10 s).
        assert_eq!(p.claim_secs, 120);
        assert_eq!(store::claim_secs(2, 30), 70);
        assert_eq!(c.admin_socket, PathBuf::from("/run/liaison/a.sock"));
        // The URL (and its password) never shows in debug output.
        assert!(!format!("{c:?}").contains("pw@"));
        assert!(c.store.warnings().is_empty());
        // Each instance needs its own socket: there is no folder for a default.
        assert_eq!(
            invalid_key(&with_store(
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://db/x\"\n"
            )),
            "admin.socket"
        );
        assert_eq!(
            invalid_key(&with_store("[store]\nbackend = \"postgres\"\npath = \"/x\"\nurl = \"postgres://db/x\"\n[admin]\nsocket = \"/a\"\n")),
            "store.path"
        );
        assert_eq!(
            invalid_key(&with_store(
                "[store]\nbackend = \"postgres\"\n[admin]\nsocket = \"/a\"\n"
            )),
            "store.url"
        );
        assert_eq!(
            invalid_key(&with_store("[store]\nbackend = \"postgres\"\nurl_env = \"NOPE_UNSET\"\n[admin]\nsocket = \"/a\"\n")),
            "store.url_env"
        );
        assert_eq!(
            invalid_key(&with_store("[store]\nbackend = \"postgres\"\nurl = \"postgres://db/x\"\nlease_secs = 0\n[admin]\nsocket = \"/a\"\n")),
            "store.lease_secs"
        );
    }

    #[test]
    fn sled_refuses_postgres_settings_and_unknown_backends() {
        assert_eq!(
            invalid_key(&with_store(
                "[store]\npath = \"/x\"\nurl = \"postgres://db/x\"\n"
            )),
            "store.url"
        );
        assert_eq!(
            invalid_key(&with_store("[store]\nbackend = \"mysql\"\npath = \"/x\"\n")),
            "store.backend"
        );
        assert_eq!(invalid_key(&with_store("[store]\n")), "store.path");
    }

    #[test]
    fn a_postgres_connection_that_does_not_check_the_server_is_warned_about() {
        let text = |mode: &str| {
            with_store(&format!(
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://db/x{mode}\"\n[admin]\nsocket = \"/a\"\n"
            ))
        };
        let warned = |mode: &str| {
            parse(&text(mode))
                .unwrap()
                .warnings()
                .iter()
                .any(|w| w.starts_with("store.url"))
        };
        assert!(warned(""), "the default, prefer, does not verify");
        assert!(warned("?sslmode=require"));
        assert!(warned("?sslmode=disable"));
        assert!(!warned("?sslmode=verify-full"));
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
        assert_eq!(c.security.alignment, crate::mail::auth::Alignment::Relaxed);
        assert!(!c.security.authenticate_customers);
    }

    /// GOOD with every login on the `[[oauth2]]` client `m365`.
    fn on_oauth(inbox_tls: &str, host: &str) -> String {
        GOOD.replace(
            "tls = \"none\"\nusername = \"commands@liaison.test\"\npassword = \"pw\"\n",
            &format!("tls = \"{inbox_tls}\"\nusername = \"commands@liaison.test\"\nauth = \"oauth2\"\noauth2 = \"m365\"\noauth2_mechanism = \"oauthbearer\"\n"),
        )
        .replace("host = \"127.0.0.1\"\nport = 1143", &format!("host = \"{host}\"\nport = 993"))
        .replace(
            "port = 2525\ntls = \"none\"\n",
            "port = 2525\ntls = \"none\"\nusername = \"invites@liaison.test\"\nauth = \"oauth2\"\noauth2 = \"m365\"\n",
        )
            + "[[oauth2]]\nname = \"m365\"\nprovider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\nclient_secret = \"s\"\n"
    }

    #[test]
    fn oauth2_logins_name_a_configured_client() {
        let c = parse(&on_oauth("tls", "imap.example.com")).unwrap();
        assert_eq!(c.oauth2.len(), 1);
        let Login::OAuth2(o) = &c.inboxes[0].login else {
            panic!("token login expected")
        };
        assert_eq!(o.client, "m365");
        assert_eq!(o.mechanism, crate::oauth::sasl::Mechanism::Oauthbearer);
        let smtp = c.smtp.oauth2.as_ref().unwrap();
        assert_eq!(
            smtp.mechanism,
            crate::oauth::sasl::Mechanism::Xoauth2,
            "the default"
        );
        assert!(c.smtp.password.is_none());
        // An unknown client, a token in clear text to another host, a
        // password beside a token, smtp without the mailbox it sends as.
        let unknown =
            on_oauth("tls", "imap.example.com").replace("name = \"m365\"", "name = \"other\"");
        let e = parse(&unknown).unwrap_err().to_string();
        assert!(
            e.contains("inbox[0].oauth2") && e.contains("the configured ones are other"),
            "{e}"
        );
        let e = parse(&on_oauth("none", "imap.example.com"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("inbox[0].tls") && e.contains("clear text"),
            "{e}"
        );
        assert!(
            parse(&on_oauth("none", "127.0.0.1")).is_ok(),
            "loopback may go without TLS"
        );
        let both = on_oauth("tls", "h").replace(
            "auth = \"oauth2\"\noauth2 = \"m365\"\noauth2_mechanism",
            "password = \"pw\"\nauth = \"oauth2\"\noauth2 = \"m365\"\noauth2_mechanism",
        );
        assert!(parse(&both)
            .unwrap_err()
            .to_string()
            .contains("inbox[0].password"));
        let no_user = on_oauth("tls", "h").replace("username = \"invites@liaison.test\"\n", "");
        assert!(parse(&no_user)
            .unwrap_err()
            .to_string()
            .contains("smtp.username"));
        let twice = on_oauth("tls", "h") + "[[oauth2]]\nname = \"m365\"\ntoken_url = \"https://x.example/t\"\nclient_id = \"a\"\nclient_secret = \"s\"\nscope = \"x\"\n";
        assert!(parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("oauth2[1].name"));
        let bad_auth = GOOD.replace(
            "password = \"pw\"\n",
            "password = \"pw\"\nauth = \"kerberos\"\n",
        );
        assert!(parse(&bad_auth)
            .unwrap_err()
            .to_string()
            .contains("inbox[0].auth"));
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
        assert_eq!(c.security.alignment, crate::mail::auth::Alignment::Strict);
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
    fn secret_file_drops_trailing_newline() {
        let text = GOOD.replace(
            "token_secret = \"0123456789abcdef0123\"",
            "token_secret_file = \"/run/liaison/token-secret\"",
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.security.token_secret.expose(),
            "abcdefghijklmnopqrstuvwxyz"
        );
    }
}
