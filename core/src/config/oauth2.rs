//! `[[oauth2]]`: one OAuth2 client (an app registration at Microsoft Entra
//! or a Google Cloud OAuth client) that inboxes, `[smtp]` and the Graph
//! client refer to by `name`.
//!
//! Validated up front like the rest of the file: a token URL that is not
//! https (except to a loopback test endpoint), a grant the provider does not
//! offer, or a missing secret is an error naming the key, not a refused
//! login minutes later.

use super::{resolve_secret, ConfigError, Secret, SecretSource, TlsMode};
use crate::oauth::sasl::Mechanism;
use serde::Deserialize;
use std::path::PathBuf;

/// The file shape of one `[[oauth2]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    /// The name inboxes and `[smtp]` refer to (`oauth2 = "m365"`).
    pub name: String,
    /// `"microsoft"` (needs `tenant`) or `"google"`: fills the URLs and scope.
    pub provider: Option<String>,
    /// Entra tenant: `contoso.onmicrosoft.com`, a tenant id, `organizations`
    /// or `consumers` (Outlook.com).
    pub tenant: Option<String>,
    /// The token endpoint; overrides the preset.
    pub token_url: Option<String>,
    /// The device authorization endpoint (RFC 8628) for `liaison oauth
    /// login`; overrides the preset.
    pub device_authorization_url: Option<String>,
    /// The application (client) id.
    pub client_id: String,
    /// The client secret, inline.
    pub client_secret: Option<String>,
    /// The client secret, from this environment variable.
    pub client_secret_env: Option<String>,
    /// The client secret, from this file.
    pub client_secret_file: Option<PathBuf>,
    /// Space-separated scopes; overrides the preset.
    pub scope: Option<String>,
    /// `"client_credentials"` (default) or `"refresh_token"`.
    pub grant: Option<String>,
    /// Where the refresh token is kept (mode 0600), for `grant =
    /// "refresh_token"`; rewritten whenever the provider rotates it.
    pub refresh_token_file: Option<PathBuf>,
    /// PEM file of extra CAs trusted for the token endpoint.
    pub ca_file: Option<PathBuf>,
    /// Upper bound on one token request, in seconds (default 30).
    pub timeout_secs: Option<u64>,
}

/// Which provider's conventions apply (presets, and the hints in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Microsoft identity platform (Entra ID): Microsoft 365, Outlook.com.
    Microsoft,
    /// Google OAuth 2.0: Gmail, Google Workspace.
    Google,
    /// Anything else, configured by URL.
    Other,
}

/// How tokens are obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// App-only: the client id and secret buy a token (Microsoft 365
    /// `IMAP.AccessAsApp` / `SMTP.SendAsApp`).
    ClientCredentials,
    /// Delegated: a refresh token (from `liaison oauth login`) buys access
    /// tokens; a rotated one is written back to `file` before it is used.
    RefreshToken {
        /// The refresh token file (mode 0600).
        file: PathBuf,
    },
}

/// One validated `[[oauth2]]` client.
#[derive(Debug, Clone)]
pub struct OAuth2Config {
    /// The name others refer to.
    pub name: String,
    /// Whose conventions apply.
    pub provider: Provider,
    /// The token endpoint (https, or http to a loopback host).
    pub token_url: String,
    /// The device authorization endpoint, when known.
    pub device_authorization_url: Option<String>,
    /// The application (client) id.
    pub client_id: String,
    /// The client secret; `None` for a public client (device login).
    pub client_secret: Option<Secret>,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// How tokens are obtained.
    pub grant: Grant,
    /// Extra CAs for the token endpoint.
    pub ca_file: Option<PathBuf>,
    /// Upper bound on one token request, in seconds.
    pub timeout_secs: u64,
}

const MICROSOFT_LOGIN: &str = "https://login.microsoftonline.com";
/// App-only Exchange Online access (IMAP and SMTP): the permissions granted
/// to the app registration decide what the token may do.
const MICROSOFT_APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// Delegated Exchange Online access; `offline_access` brings the refresh
/// token.
const MICROSOFT_USER_SCOPE: &str = "https://outlook.office365.com/IMAP.AccessAsUser.All https://outlook.office365.com/SMTP.Send offline_access";
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_DEVICE_URL: &str = "https://oauth2.googleapis.com/device/code";
/// Full IMAP/SMTP access to Gmail; no narrower scope covers IMAP.
const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";

fn invalid(key: String, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Whether a URL may carry client secrets and tokens: https anywhere, plain
/// http only to a loopback host (a test endpoint on this machine).
pub fn check_token_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` is not a URL with a host"));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        "http" => Err(format!(
            "`{url}` is plain http: secrets and tokens need https (plain http is allowed only to a loopback host)"
        )),
        other => Err(format!("`{url}` has scheme {other}; use https")),
    }
}

/// 127.0.0.0/8, ::1 or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<core::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How an inbox or `[smtp]` logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// `auth = "password"` (default): LOGIN / AUTH PLAIN with a password.
    Password(Secret),
    /// `auth = "oauth2"`: a bearer token from an `[[oauth2]]` client.
    OAuth2(OAuthLogin),
}

/// `auth = "oauth2"`: which client's tokens, over which SASL mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthLogin {
    /// The `[[oauth2]]` name.
    pub client: String,
    /// `oauth2_mechanism`: XOAUTH2 (default) or OAUTHBEARER.
    pub mechanism: Mechanism,
}

/// Validates the `auth`, `oauth2` and `oauth2_mechanism` keys of an inbox
/// or `[smtp]` (`prefix` is `inbox[0]` or `smtp`). `Ok(None)`: password
/// login. A token goes over `tls = "none"` only to a loopback host, as a
/// password should.
pub(super) fn validate_login_keys(
    prefix: &str,
    auth: Option<&str>,
    client: Option<String>,
    mechanism: Option<Mechanism>,
    password_given: bool,
    tls: TlsMode,
    host: &str,
) -> Result<Option<OAuthLogin>, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    match auth.unwrap_or("password") {
        "password" => {
            if client.is_some() || mechanism.is_some() {
                return Err(invalid(
                    key("oauth2"),
                    "is only used with auth = \"oauth2\"",
                ));
            }
            Ok(None)
        }
        "oauth2" => {
            let client = client.ok_or_else(|| {
                invalid(
                    key("oauth2"),
                    "auth = \"oauth2\" needs the name of an [[oauth2]] client",
                )
            })?;
            if password_given {
                return Err(invalid(
                    key("password"),
                    "is not used with auth = \"oauth2\"; remove it",
                ));
            }
            if tls == TlsMode::None && !is_loopback_host(host) {
                return Err(invalid(
                    key("tls"),
                    format!("tls = \"none\" would send the token in clear text to {host}; use \"tls\" or \"starttls\" (\"none\" is allowed only to a loopback host)"),
                ));
            }
            Ok(Some(OAuthLogin {
                client,
                mechanism: mechanism.unwrap_or(Mechanism::Xoauth2),
            }))
        }
        other => Err(invalid(
            key("auth"),
            format!("`{other}` is not \"password\" or \"oauth2\""),
        )),
    }
}

impl OAuth2Config {
    /// Parses and validates one `[[oauth2]]` table given as TOML text (its
    /// keys, without the `[[oauth2]]` line); for tests and tools that build
    /// a client without a whole config file.
    pub fn from_toml(text: &str, secrets: &dyn SecretSource) -> Result<OAuth2Config, ConfigError> {
        let raw: RawOAuth2 = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::from("[[oauth2]]"),
            message: e.to_string(),
        })?;
        Self::from_raw(0, raw, secrets)
    }

    /// Validates table `index` of `[[oauth2]]`; `secrets` resolves
    /// `client_secret_env` / `client_secret_file`.
    pub fn from_raw(
        index: usize,
        raw: RawOAuth2,
        secrets: &dyn SecretSource,
    ) -> Result<OAuth2Config, ConfigError> {
        let key = |k: &str| format!("oauth2[{index}].{k}");
        let name = raw.name.trim().to_string();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(key("name"), "must be a non-empty word"));
        }
        if raw.client_id.trim().is_empty() {
            return Err(invalid(key("client_id"), "must not be empty"));
        }
        let provider = match raw.provider.as_deref() {
            None => Provider::Other,
            Some("microsoft") => Provider::Microsoft,
            Some("google") => Provider::Google,
            Some(other) => {
                return Err(invalid(
                    key("provider"),
                    format!("`{other}` is not \"microsoft\" or \"google\" (leave it out and set token_url for another provider)"),
                ))
            }
        };
        let grant_name = raw.grant.as_deref().unwrap_or(match provider {
            // Google has no app-only grant for Gmail.
            Provider::Google => "refresh_token",
            _ => "client_credentials",
        });
        let grant = match grant_name {
            "client_credentials" => {
                if provider == Provider::Google {
                    return Err(invalid(
                        key("grant"),
                        "Google offers no client_credentials grant for Gmail; use grant = \"refresh_token\"",
                    ));
                }
                if raw.refresh_token_file.is_some() {
                    return Err(invalid(
                        key("refresh_token_file"),
                        "is only used with grant = \"refresh_token\"",
                    ));
                }
                Grant::ClientCredentials
            }
            "refresh_token" => Grant::RefreshToken {
                file: raw.refresh_token_file.clone().ok_or_else(|| {
                    invalid(
                        key("refresh_token_file"),
                        "is required with grant = \"refresh_token\" (where `liaison oauth login` stores the token)",
                    )
                })?,
            },
            other => {
                return Err(invalid(
                    key("grant"),
                    format!("`{other}` is not \"client_credentials\" or \"refresh_token\""),
                ))
            }
        };
        let tenant = raw.tenant.as_deref().map(str::trim);
        if let Some(t) = tenant {
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                return Err(invalid(
                    key("tenant"),
                    format!("`{t}` is not a tenant name or id (like contoso.onmicrosoft.com)"),
                ));
            }
        }
        let (preset_token, preset_device, preset_scope) = match provider {
            Provider::Microsoft => {
                let t = tenant.ok_or_else(|| {
                    invalid(
                        key("tenant"),
                        "is required with provider = \"microsoft\" (the tenant's domain like contoso.onmicrosoft.com, or its id)",
                    )
                })?;
                let scope = match grant {
                    Grant::ClientCredentials => MICROSOFT_APP_SCOPE,
                    Grant::RefreshToken { .. } => MICROSOFT_USER_SCOPE,
                };
                (
                    Some(format!("{MICROSOFT_LOGIN}/{t}/oauth2/v2.0/token")),
                    Some(format!("{MICROSOFT_LOGIN}/{t}/oauth2/v2.0/devicecode")),
                    Some(scope.to_string()),
                )
            }
            Provider::Google => (
                Some(GOOGLE_TOKEN_URL.to_string()),
                Some(GOOGLE_DEVICE_URL.to_string()),
                Some(GOOGLE_MAIL_SCOPE.to_string()),
            ),
            Provider::Other => (None, None, None),
        };
        if provider != Provider::Microsoft && tenant.is_some() {
            return Err(invalid(
                key("tenant"),
                "is only used with provider = \"microsoft\"",
            ));
        }
        let token_url = raw.token_url.or(preset_token).ok_or_else(|| {
            invalid(
                key("token_url"),
                "is required (or set provider = \"microsoft\" | \"google\")",
            )
        })?;
        check_token_url(&token_url).map_err(|r| invalid(key("token_url"), r))?;
        let device_authorization_url = raw.device_authorization_url.or(preset_device);
        if let Some(url) = &device_authorization_url {
            check_token_url(url).map_err(|r| invalid(key("device_authorization_url"), r))?;
        }
        let scope = raw.scope.or(preset_scope).ok_or_else(|| {
            invalid(
                key("scope"),
                "is required (or set provider = \"microsoft\" | \"google\")",
            )
        })?;
        let scopes: Vec<String> = scope.split_whitespace().map(str::to_string).collect();
        if scopes.is_empty() {
            return Err(invalid(key("scope"), "must name at least one scope"));
        }
        let client_secret = resolve_secret(
            secrets,
            &key("client_secret"),
            raw.client_secret,
            raw.client_secret_env,
            raw.client_secret_file,
        )?;
        if grant == Grant::ClientCredentials && client_secret.is_none() {
            return Err(invalid(
                key("client_secret"),
                "one of client_secret, client_secret_env or client_secret_file is required for grant = \"client_credentials\"",
            ));
        }
        let timeout_secs = raw.timeout_secs.unwrap_or(30);
        if timeout_secs == 0 {
            return Err(invalid(key("timeout_secs"), "must be at least 1"));
        }
        Ok(OAuth2Config {
            name,
            provider,
            token_url,
            device_authorization_url,
            client_id: raw.client_id.trim().to_string(),
            client_secret,
            scopes,
            grant,
            ca_file: raw.ca_file,
            timeout_secs,
        })
    }
}

/// Validates every `[[oauth2]]` table; names must be unique.
pub(super) fn validate_clients(
    raw: Vec<RawOAuth2>,
    secrets: &dyn SecretSource,
) -> Result<Vec<OAuth2Config>, ConfigError> {
    let mut out: Vec<OAuth2Config> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let c = OAuth2Config::from_raw(i, r, secrets)?;
        if out.iter().any(|o| o.name == c.name) {
            return Err(invalid(
                format!("oauth2[{i}].name"),
                format!("`{}` is used twice", c.name),
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// Every `oauth2 = "…"` of an inbox or `[smtp]` names a configured client.
pub(super) fn check_references(
    clients: &[OAuth2Config],
    inboxes: &[super::InboxConfig],
    smtp: &super::SmtpConfig,
) -> Result<(), ConfigError> {
    let known = |name: &str| clients.iter().any(|c| c.name == name);
    let names = || {
        let list: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
        if list.is_empty() {
            "no [[oauth2]] client is configured".to_string()
        } else {
            format!("the configured ones are {}", list.join(", "))
        }
    };
    for (i, inbox) in inboxes.iter().enumerate() {
        if let Login::OAuth2(o) = &inbox.login {
            if !known(&o.client) {
                return Err(invalid(
                    format!("inbox[{i}].oauth2"),
                    format!("no [[oauth2]] is named `{}`; {}", o.client, names()),
                ));
            }
        }
    }
    if let Some(o) = &smtp.oauth2 {
        if !known(&o.client) {
            return Err(invalid(
                "smtp.oauth2".to_string(),
                format!("no [[oauth2]] is named `{}`; {}", o.client, names()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSecrets;
    impl SecretSource for NoSecrets {
        fn env(&self, _: &str) -> Option<String> {
            None
        }
        fn file(&self, _: &std::path::Path) -> Result<String, String> {
            Err("no files in this test".into())
        }
    }

    fn parse(text: &str) -> Result<OAuth2Config, ConfigError> {
        OAuth2Config::from_toml(text, &NoSecrets)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn microsoft_preset_fills_urls_and_the_app_scope() {
        let c = parse(
            "name = \"m365\"\nprovider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"abc\"\nclient_secret = \"s\"\n",
        )
        .unwrap();
        assert_eq!(
            c.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(c.scopes, vec!["https://outlook.office365.com/.default"]);
        assert_eq!(c.grant, Grant::ClientCredentials);
        let delegated = parse(
            "name = \"o\"\nprovider = \"microsoft\"\ntenant = \"consumers\"\nclient_id = \"abc\"\ngrant = \"refresh_token\"\nrefresh_token_file = \"/var/lib/liaison/o.token\"\n",
        )
        .unwrap();
        assert!(delegated.scopes.contains(&"offline_access".to_string()));
        assert!(delegated.client_secret.is_none());
        assert!(err(
            "name = \"m\"\nprovider = \"microsoft\"\nclient_id = \"a\"\nclient_secret = \"s\"\n"
        )
        .contains("oauth2[0].tenant"));
    }

    #[test]
    fn google_preset_defaults_to_refresh_tokens_and_refuses_app_only() {
        let c = parse(
            "name = \"g\"\nprovider = \"google\"\nclient_id = \"a\"\nclient_secret = \"s\"\nrefresh_token_file = \"g.token\"\n",
        )
        .unwrap();
        assert_eq!(c.token_url, "https://oauth2.googleapis.com/token");
        assert_eq!(c.scopes, vec!["https://mail.google.com/"]);
        assert!(matches!(c.grant, Grant::RefreshToken { .. }));
        assert!(err("name = \"g\"\nprovider = \"google\"\nclient_id = \"a\"\nclient_secret = \"s\"\ngrant = \"client_credentials\"\n")
            .contains("no client_credentials grant"));
    }

    #[test]
    fn token_urls_must_be_https_except_to_loopback() {
        let base = "name = \"t\"\nclient_id = \"a\"\nclient_secret = \"s\"\nscope = \"x\"\n";
        assert!(parse(&format!("{base}token_url = \"http://127.0.0.1:9/token\"\n")).is_ok());
        assert!(parse(&format!("{base}token_url = \"http://[::1]:9/token\"\n")).is_ok());
        assert!(parse(&format!("{base}token_url = \"http://localhost:9/token\"\n")).is_ok());
        assert!(parse(&format!(
            "{base}token_url = \"https://idp.example/token\"\n"
        ))
        .is_ok());
        let e = err(&format!("{base}token_url = \"http://idp.example/token\"\n"));
        assert!(
            e.contains("oauth2[0].token_url") && e.contains("https"),
            "{e}"
        );
        assert!(err(&format!("{base}token_url = \"ftp://127.0.0.1/token\"\n")).contains("scheme"));
        assert!(err(base).contains("token_url"));
    }

    #[test]
    fn app_only_needs_a_secret_and_refresh_needs_a_file() {
        let base = "name = \"t\"\nclient_id = \"a\"\nscope = \"x\"\ntoken_url = \"https://idp.example/t\"\n";
        assert!(err(base).contains("client_secret"));
        assert!(err(&format!("{base}grant = \"refresh_token\"\n")).contains("refresh_token_file"));
        assert!(err(&format!(
            "{base}client_secret = \"s\"\ngrant = \"password\"\n"
        ))
        .contains("grant"));
        assert!(err(&format!(
            "{base}client_secret = \"s\"\nprovider = \"yahoo\"\n"
        ))
        .contains("provider"));
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let c = parse(
            "name = \"t\"\nclient_id = \"a\"\nscope = \"x\"\ntoken_url = \"https://idp.example/t\"\nclient_secret = \"hunter2-secret\"\n",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
