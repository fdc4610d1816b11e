//! `[smtp]`: where mails are submitted.

use super::*;

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
    /// `auth = "oauth2"`: log in as `username` with a token of this client
    /// (then `password` is `None`).
    pub oauth2: Option<OAuthLogin>,
    /// Upper bound on one SMTP transaction, in seconds.
    pub timeout_secs: u64,
    /// Parallel SMTP connections kept in the pool.
    pub max_connections: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    host: String,
    port: u16,
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    /// `"password"` (default) or `"oauth2"`.
    auth: Option<String>,
    /// The `[[oauth2]]` client, with `auth = "oauth2"`.
    oauth2: Option<String>,
    /// `"xoauth2"` (default) or `"oauthbearer"`.
    oauth2_mechanism: Option<crate::oauth::sasl::Mechanism>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default = "default_smtp_connections")]
    max_connections: u32,
}

fn default_smtp_connections() -> u32 {
    4
}

impl RawSmtp {
    /// Checks `[smtp]` and resolves its password.
    pub(super) fn validate(self, secrets: &dyn SecretSource) -> Result<SmtpConfig> {
        let s = self;
        check_host("smtp.host", &s.host)?;
        check_port("smtp.port", s.port)?;
        if s.timeout_secs == 0 {
            return Err(invalid("smtp.timeout_secs", "must be at least 1"));
        }
        if s.max_connections == 0 {
            return Err(invalid("smtp.max_connections", "must be at least 1"));
        }
        let password_given =
            s.password.is_some() || s.password_env.is_some() || s.password_file.is_some();
        let oauth2 = oauth2::validate_login_keys(
            "smtp",
            s.auth.as_deref(),
            s.oauth2.clone(),
            s.oauth2_mechanism,
            password_given,
            s.tls,
            &s.host,
        )?;
        if oauth2.is_some() && s.username.is_none() {
            return Err(invalid(
                "smtp.username",
                "auth = \"oauth2\" needs the mailbox the token sends as",
            ));
        }
        let smtp_password = resolve_secret(
            secrets,
            "smtp.password",
            s.password,
            s.password_env,
            s.password_file,
        )?;
        if smtp_password.is_some() && s.username.is_none() {
            return Err(invalid(
                "smtp.username",
                "a password is set but no username",
            ));
        }
        Ok(SmtpConfig {
            host: s.host,
            port: s.port,
            tls: s.tls,
            ca_file: s.ca_file,
            username: s.username,
            password: smtp_password,
            oauth2,
            timeout_secs: s.timeout_secs,
            max_connections: s.max_connections,
        })
    }
}
