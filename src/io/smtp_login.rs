//! Logging in to SMTP: AUTH PLAIN/LOGIN with a password (lettre), or AUTH
//! XOAUTH2 / OAUTHBEARER with an OAuth2 bearer token.
//!
//! The token exchange is written here over lettre's `command` rather than
//! with lettre's `Mechanism::Xoauth2`, for two reasons: lettre answers the
//! server's error challenge (`334 <base64 JSON>`) with a client-side error
//! and leaves the server waiting mid-AUTH, so the real refusal (`535 5.7.8`)
//! is never read; and lettre has no OAUTHBEARER. Here the challenge is
//! acknowledged (an empty line for XOAUTH2, `%x01` for OAUTHBEARER) and the
//! final answer read, so a refused token reads as one. As with IMAP, a
//! refused token gets one retry with a fresh token on the same connection.

use crate::oauth::{sasl, BearerToken, OAuthClients, TokenClient};
use data_encoding::BASE64;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use liaison_core::config::SmtpConfig;
use std::sync::Arc;

/// How the mailer logs in.
#[derive(Clone)]
pub enum SmtpLogin {
    /// No AUTH.
    None,
    /// AUTH PLAIN or LOGIN.
    Password(Credentials),
    /// AUTH with a token from `client`, as `user`.
    Token {
        /// The `[[oauth2]]` client.
        client: Arc<TokenClient>,
        /// XOAUTH2 or OAUTHBEARER.
        mechanism: sasl::Mechanism,
        /// The mailbox the token sends as.
        user: String,
    },
}

impl SmtpLogin {
    /// The login `[smtp]` asks for; its `oauth2` client must be in
    /// `clients`.
    pub fn for_smtp(cfg: &SmtpConfig, clients: &OAuthClients) -> Result<SmtpLogin, String> {
        if let Some(o) = &cfg.oauth2 {
            let client = clients
                .get(&o.client)
                .ok_or_else(|| format!("no [[oauth2]] client named `{}`", o.client))?;
            return Ok(SmtpLogin::Token {
                client,
                mechanism: o.mechanism,
                user: cfg.username.clone().unwrap_or_default(),
            });
        }
        Ok(match (&cfg.username, &cfg.password) {
            (Some(user), Some(pass)) => {
                SmtpLogin::Password(Credentials::new(user.clone(), pass.expose().to_string()))
            }
            _ => SmtpLogin::None,
        })
    }
}

/// Logs `conn` in. Returns when the token used expires (Unix ms), so the
/// pool does not reuse the connection past it.
pub async fn login(
    conn: &mut AsyncSmtpConnection,
    login: &SmtpLogin,
    host: &str,
    port: u16,
) -> Result<Option<u64>, String> {
    match login {
        SmtpLogin::None => Ok(None),
        SmtpLogin::Password(credentials) => {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| format!("SMTP login to {host}:{port} refused: {e}"))?;
            Ok(None)
        }
        SmtpLogin::Token {
            client,
            mechanism,
            user,
        } => {
            let token = client.bearer().await.map_err(|e| e.to_string())?;
            match authenticate(conn, *mechanism, user, &token, host, port).await? {
                Ok(()) => return Ok(Some(token.expires_at_ms)),
                Err(why) => {
                    tracing::warn!(smtp = %format!("{host}:{port}"), user = %user, reason = %why, "SMTP refused the token; trying once more with a fresh one")
                }
            }
            let fresh = client.refused(&token).await.map_err(|e| e.to_string())?;
            match authenticate(conn, *mechanism, user, &fresh, host, port).await? {
                Ok(()) => Ok(Some(fresh.expires_at_ms)),
                Err(why) => Err(format!(
                    "SMTP login to {host}:{port} as {user} refused: token refused twice ({why}); check that oauth2 client `{}` may send as this mailbox (Exchange: SMTP.SendAsApp, and SMTP AUTH enabled for the mailbox) and that smtp.username is its address",
                    client.name()
                )),
            }
        }
    }
}

/// One AUTH exchange. `Ok(Err(why))`: the token was refused, the connection
/// is ready for another AUTH. `Err`: the connection cannot be used.
async fn authenticate(
    conn: &mut AsyncSmtpConnection,
    mechanism: sasl::Mechanism,
    user: &str,
    token: &BearerToken,
    host: &str,
    port: u16,
) -> Result<Result<(), String>, String> {
    let message = mechanism.initial_response(user, token.secret(), host, port);
    let line = format!("AUTH {} {}\r\n", mechanism.name(), BASE64.encode(&message));
    let broken =
        |e: lettre::transport::smtp::Error| format!("SMTP AUTH with {host}:{port} failed: {e}");
    match conn.command(line).await {
        Ok(r) if r.has_code(235) => Ok(Ok(())),
        Ok(r) if r.has_code(334) => {
            let challenge = r
                .first_line()
                .and_then(|l| BASE64.decode(l.trim().as_bytes()).ok())
                .unwrap_or_default();
            let why = sasl::describe_challenge(&challenge);
            let ack = format!("{}\r\n", BASE64.encode(mechanism.error_ack()));
            match conn.command(ack).await {
                Ok(r) => Ok(Err(format!("{why}; then {}", r.code()))),
                Err(e) if e.is_permanent() => Ok(Err(format!("{why}; {e}"))),
                Err(e) => Err(broken(e)),
            }
        }
        Ok(r) => Err(format!(
            "SMTP AUTH with {host}:{port}: unexpected answer {}",
            r.code()
        )),
        Err(e) if e.is_permanent() => Ok(Err(e.to_string())),
        Err(e) => Err(broken(e)),
    }
}
