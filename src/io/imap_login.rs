//! Logging in to IMAP: LOGIN with a password, or SASL AUTHENTICATE with an
//! OAuth2 bearer token (XOAUTH2 or OAUTHBEARER).
//!
//! With a token, the client's message goes with the command itself
//! (SASL-IR, RFC 4959) when the server offers it, so a login is one round
//! trip. A refused token is answered with a challenge (base64 JSON
//! `{"status":"401",…}`) that must be acknowledged before the server's NO;
//! then the token client is told ([`TokenClient::refused`]) and the login is
//! tried **once** more with a fresh token on the same connection. A second
//! refusal is an error: the watcher backs off and reconnects. Dovecot's
//! `NO [UNAVAILABLE]` for a token it cannot judge is treated the same, so it
//! is never retried in a loop.

use super::imap::{ImapError, ImapStream, Session};
use crate::oauth::{sasl, BearerToken, OAuthClients, TokenClient};
use async_imap::imap_proto::{Capability, Response, ResponseCode};
use liaison_core::config::{InboxConfig, Login, Secret};
use std::sync::Arc;
use std::time::Duration;

/// How one inbox logs in, resolved against the configured token clients.
#[derive(Clone, Debug)]
pub enum ImapLogin {
    /// LOGIN with this password.
    Password(Secret),
    /// AUTHENTICATE with a token from `client`.
    Token {
        /// The `[[oauth2]]` client.
        client: Arc<TokenClient>,
        /// XOAUTH2 or OAUTHBEARER.
        mechanism: sasl::Mechanism,
    },
}

impl ImapLogin {
    /// The login of `cfg`; its `oauth2` client must be among `clients`
    /// (the config validation makes sure of that).
    pub fn for_inbox(cfg: &InboxConfig, clients: &OAuthClients) -> Result<ImapLogin, ImapError> {
        match &cfg.login {
            Login::Password(p) => Ok(ImapLogin::Password(p.clone())),
            Login::OAuth2(o) => {
                let client = clients.get(&o.client).ok_or_else(|| ImapError::Login {
                    user: cfg.username.clone(),
                    host: cfg.host.clone(),
                    port: cfg.port,
                    reason: format!("no [[oauth2]] client named `{}`", o.client),
                })?;
                Ok(ImapLogin::Token {
                    client,
                    mechanism: o.mechanism,
                })
            }
        }
    }
}

/// What the server said it offers before login.
#[derive(Debug, Clone, Default)]
pub struct PreLoginCaps {
    /// Whether any capability list was seen (else everything is unknown).
    pub known: bool,
    /// SASL-IR: the first SASL message may go with AUTHENTICATE.
    pub sasl_ir: bool,
    /// The `AUTH=` mechanisms, upper case.
    pub mechanisms: Vec<String>,
}

impl PreLoginCaps {
    fn add<'a>(&mut self, caps: impl IntoIterator<Item = &'a Capability<'a>>) {
        self.known = true;
        for c in caps {
            match c {
                Capability::Auth(m) => self.mechanisms.push(m.to_ascii_uppercase()),
                Capability::Atom(a) if a.eq_ignore_ascii_case("SASL-IR") => self.sasl_ir = true,
                _ => {}
            }
        }
    }

    /// The capabilities in a greeting or a CAPABILITY answer, if any.
    pub fn from_response(response: &Response<'_>) -> PreLoginCaps {
        let mut caps = PreLoginCaps::default();
        match response {
            Response::Capabilities(list) => caps.add(list.iter()),
            Response::Data { outcome, .. } | Response::Done { outcome, .. } => {
                if let Some(ResponseCode::Capabilities(list)) = &outcome.code {
                    caps.add(list.iter());
                }
            }
            _ => {}
        }
        caps
    }
}

/// Asks for CAPABILITY before login (after STARTTLS, where there is no new
/// greeting). async-imap keeps its tagged-command helper private, so the
/// command is written to the stream with a tag of its own (nothing else is
/// in flight before login).
pub async fn ask_capabilities<T: ImapStream>(
    cfg: &InboxConfig,
    client: &mut async_imap::Client<T>,
) -> PreLoginCaps {
    const TAG: &str = "LCAP";
    let ask = async {
        use tokio::io::AsyncWriteExt;
        let stream = client.get_mut();
        stream
            .write_all(format!("{TAG} CAPABILITY\r\n").as_bytes())
            .await
            .ok()?;
        stream.flush().await.ok()?;
        let mut caps = PreLoginCaps::default();
        loop {
            let response = client.read_response().await.ok()??;
            let parsed = response.parsed();
            let more = PreLoginCaps::from_response(parsed);
            if more.known {
                caps = more;
            }
            if let Response::Done { tag, .. } = parsed {
                if tag.0 == TAG {
                    return Some(caps);
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(cfg.timeout_secs), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Logs in as configured.
pub async fn login(
    cfg: &InboxConfig,
    client: async_imap::Client<Box<dyn ImapStream>>,
    login: &ImapLogin,
    caps: &PreLoginCaps,
) -> Result<Session, ImapError> {
    let timeout = Duration::from_secs(cfg.timeout_secs);
    let refused = |reason: String| ImapError::Login {
        user: cfg.username.clone(),
        host: cfg.host.clone(),
        port: cfg.port,
        reason,
    };
    let timed_out = |command| ImapError::Timeout {
        inbox: cfg.name.clone(),
        command,
        secs: cfg.timeout_secs,
    };
    match login {
        ImapLogin::Password(password) => {
            match tokio::time::timeout(timeout, client.login(&cfg.username, password.expose()))
                .await
            {
                Ok(Ok(session)) => Ok(session),
                Ok(Err((e, _))) => Err(refused(e.to_string())),
                Err(_) => Err(timed_out("LOGIN")),
            }
        }
        ImapLogin::Token {
            client: tokens,
            mechanism,
        } => {
            if caps.known && !caps.mechanisms.iter().any(|m| m == mechanism.name()) {
                return Err(refused(format!(
                    "the server does not offer AUTH={} (it offers {}); set oauth2_mechanism to one it offers",
                    mechanism.name(),
                    if caps.mechanisms.is_empty() { "none".to_string() } else { caps.mechanisms.join(", ") }
                )));
            }
            let token = tokens.bearer().await?;
            let client = match authenticate(cfg, client, *mechanism, &token, caps.sasl_ir).await? {
                Ok(session) => return Ok(session),
                Err((client, why)) => {
                    tracing::warn!(inbox = %cfg.name, user = %cfg.username, reason = %why, "IMAP refused the token; trying once more with a fresh one");
                    client
                }
            };
            let fresh = tokens.refused(&token).await?;
            match authenticate(cfg, client, *mechanism, &fresh, caps.sasl_ir).await? {
                Ok(session) => Ok(session),
                Err((_, why)) => Err(refused(format!(
                    "token refused twice ({why}); check that oauth2 client `{}` may use this mailbox (Exchange: the service principal needs FullAccess on it, Add-MailboxPermission) and that `username` is the mailbox's address",
                    tokens.name()
                ))),
            }
        }
    }
}

type Attempt = Result<Session, (async_imap::Client<Box<dyn ImapStream>>, String)>;

/// One AUTHENTICATE. `Ok(Err((client, why)))`: the token was refused and
/// the connection can be used for another attempt.
async fn authenticate(
    cfg: &InboxConfig,
    client: async_imap::Client<Box<dyn ImapStream>>,
    mechanism: sasl::Mechanism,
    token: &BearerToken,
    sasl_ir: bool,
) -> Result<Attempt, ImapError> {
    use data_encoding::BASE64;
    let message = mechanism.initial_response(&cfg.username, token.secret(), &cfg.host, cfg.port);
    let command = if sasl_ir {
        format!("{} {}", mechanism.name(), BASE64.encode(&message))
    } else {
        mechanism.name().to_string()
    };
    let mut exchange = Exchange {
        initial: Some(message).filter(|_| !sasl_ir),
        ack: mechanism.error_ack(),
        challenge: None,
    };
    let attempt = tokio::time::timeout(
        Duration::from_secs(cfg.timeout_secs),
        client.authenticate(command, &mut exchange),
    )
    .await
    .map_err(|_| ImapError::Timeout {
        inbox: cfg.name.clone(),
        command: "AUTHENTICATE",
        secs: cfg.timeout_secs,
    })?;
    Ok(match attempt {
        Ok(session) => Ok(session),
        Err((e, client)) => {
            let why = match &exchange.challenge {
                Some(c) => format!("{}; {}", sasl::describe_challenge(c), e),
                None => e.to_string(),
            };
            match e {
                async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_) => {
                    Err((client, why))
                }
                // The connection is gone or confused: no retry on it.
                _ => {
                    return Err(ImapError::Login {
                        user: cfg.username.clone(),
                        host: cfg.host.clone(),
                        port: cfg.port,
                        reason: why,
                    })
                }
            }
        }
    })
}

/// The client side of one SASL exchange: the message (unless it went with
/// the command), then an acknowledgement of any error challenge.
struct Exchange {
    initial: Option<Vec<u8>>,
    ack: &'static [u8],
    /// The server's error challenge, kept for the log.
    challenge: Option<Vec<u8>>,
}

impl async_imap::Authenticator for &mut Exchange {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        if let Some(initial) = self.initial.take() {
            return initial;
        }
        self.challenge = Some(challenge.to_vec());
        self.ack.to_vec()
    }
}
