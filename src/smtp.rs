//! Delivering the outbox over SMTP.
//!
//! The sender only takes entries at or below the *durable watermark*: the
//! highest outbox id known to be flushed to disk. A mail whose cause could
//! still be lost in a crash is never sent, so a restart cannot send a mail
//! for a decision that no longer exists. Each delivery is marked sent and
//! flushed the moment the server accepts it, so the duplicate window after
//! a crash is the mails in flight: one per pooled connection
//! (`smtp.max_connections`).
//!
//! [`Mailer`] keeps up to `smtp.max_connections` connections open (with
//! `TCP_NODELAY`, see there); every send is wrapped in a timeout because a
//! silent network can hang it. 4xx replies and
//! connection errors are retried with exponential backoff; 5xx replies are
//! permanent, recorded as failed, and reported to the partner when the
//! mail carried an invitation.

use crate::clock::Clock;
use crate::config::{SmtpConfig, TlsMode};
use crate::store::{OutboxEntry, OutgoingMail, Store};
use futures::StreamExt;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Errors setting up or using SMTP.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// The transport could not be configured.
    #[error("cannot set up SMTP to {host}:{port}: {reason}")]
    Setup {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// What failed.
        reason: String,
    },
    /// One delivery failed.
    #[error("SMTP delivery of {message_id} failed ({kind}): {reason}")]
    Send {
        /// The mail.
        message_id: String,
        /// `temporary` or `permanent`.
        kind: &'static str,
        /// The server's answer or the IO error.
        reason: String,
    },
}

impl SmtpError {
    /// Whether trying again later may help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SmtpError::Send {
                kind: "permanent",
                ..
            }
        )
    }
}

/// Attempts before a temporarily failing mail is given up.
pub const MAX_ATTEMPTS: u32 = 12;

/// A pooled SMTP client.
///
/// Connections are made here rather than by lettre's pooled transport, for
/// one reason: lettre's own sockets keep Nagle's algorithm on, and it writes
/// a message and its closing dot separately, so every mail waited for the
/// server's delayed ACK (about 45 ms on Linux): 21 mails a second per
/// connection instead of hundreds. Our sockets set `TCP_NODELAY`; lettre
/// still speaks the protocol over them.
#[derive(Clone)]
pub struct Mailer {
    settings: Arc<Settings>,
    /// Connections not in use, with when each was last used.
    idle: Arc<std::sync::Mutex<Vec<(AsyncSmtpConnection, std::time::Instant)>>>,
    timeout: Duration,
    /// Parallel deliveries.
    pub parallel: usize,
}

/// How to reach and log in to the server.
struct Settings {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
}

/// Transport security, with what each mode needs.
enum Security {
    Plain,
    /// STARTTLS, done by lettre with these settings.
    Starttls(TlsParameters),
    /// TLS from the first byte, done here with rustls.
    Tls(Arc<rustls::ClientConfig>),
}

/// A connection unused for longer than this is checked with NOOP before it
/// carries a mail (servers drop idle clients, Postfix after 300 s).
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(10);

impl Mailer {
    /// Prepares the client; connects only when there is mail.
    pub fn new(cfg: &SmtpConfig) -> Result<Self, SmtpError> {
        let setup = |reason: String| SmtpError::Setup {
            host: cfg.host.clone(),
            port: cfg.port,
            reason,
        };
        let security = match cfg.tls {
            TlsMode::None => Security::Plain,
            TlsMode::Starttls => {
                let mut params = TlsParameters::builder(cfg.host.clone());
                if let Some(path) = &cfg.ca_file {
                    let pem = std::fs::read(path).map_err(|e| {
                        setup(format!("cannot read CA file {}: {e}", path.display()))
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| {
                        setup(format!("bad certificate in {}: {e}", path.display()))
                    })?;
                    params = params.add_root_certificate(cert);
                }
                Security::Starttls(params.build_rustls().map_err(|e| setup(e.to_string()))?)
            }
            TlsMode::Tls => {
                Security::Tls(crate::imap::tls_config(cfg.ca_file.as_deref()).map_err(setup)?)
            }
        };
        let credentials = match (&cfg.username, &cfg.password) {
            (Some(user), Some(pass)) => {
                Some(Credentials::new(user.clone(), pass.expose().to_string()))
            }
            _ => None,
        };
        Ok(Mailer {
            settings: Arc::new(Settings {
                host: cfg.host.clone(),
                port: cfg.port,
                security,
                credentials,
                hello: ClientId::default(),
            }),
            idle: Default::default(),
            timeout: Duration::from_secs(cfg.timeout_secs),
            parallel: cfg.max_connections.max(1) as usize,
        })
    }

    /// A new connection: TCP with `TCP_NODELAY`, TLS as configured, EHLO,
    /// and AUTH when credentials are set.
    async fn connect(&self) -> Result<AsyncSmtpConnection, String> {
        let s = &self.settings;
        let tcp = tokio::net::TcpStream::connect((s.host.as_str(), s.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", s.host, s.port))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let peer = tcp.peer_addr().map_err(|e| e.to_string())?;
        let mut conn = match &s.security {
            Security::Tls(config) => {
                let name = rustls::pki_types::ServerName::try_from(s.host.clone())
                    .map_err(|e| format!("`{}` is not a TLS server name: {e}", s.host))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}:{} failed: {e}", s.host, s.port))?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(Socket { inner: tls, peer }),
                    &s.hello,
                )
                .await
            }
            Security::Plain | Security::Starttls(_) => {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &s.hello).await
            }
        }
        .map_err(|e| e.to_string())?;
        if let Security::Starttls(params) = &s.security {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(format!(
                    "{}:{} does not offer STARTTLS, and smtp.tls requires it",
                    s.host, s.port
                ));
            }
            conn.starttls(params.clone(), &s.hello)
                .await
                .map_err(|e| format!("STARTTLS with {}:{} failed: {e}", s.host, s.port))?;
        }
        if let Some(credentials) = &s.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| format!("SMTP login to {}:{} refused: {e}", s.host, s.port))?;
        }
        Ok(conn)
    }

    /// An idle connection that still works, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, String> {
        loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((mut conn, since)) = next else {
                break;
            };
            if conn.has_broken() {
                continue;
            }
            if since.elapsed() < CHECK_AFTER_IDLE || conn.test_connected().await {
                return Ok(conn);
            }
        }
        self.connect().await
    }

    /// Returns a connection for the next mail.
    fn checkin(&self, conn: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !conn.has_broken() && idle.len() < self.parallel {
            idle.push((conn, std::time::Instant::now()));
        }
    }

    /// Sends one mail as is.
    pub async fn send(&self, mail: &OutgoingMail) -> Result<(), SmtpError> {
        let err = |kind, reason: String| SmtpError::Send {
            message_id: mail.message_id.clone(),
            kind,
            reason,
        };
        let from = mail
            .envelope_from
            .parse()
            .map_err(|e: lettre::address::AddressError| err("permanent", e.to_string()))?;
        let to = mail
            .recipients
            .iter()
            .map(|r| r.parse())
            .collect::<Result<Vec<lettre::Address>, _>>()
            .map_err(|e| err("permanent", e.to_string()))?;
        let envelope = lettre::address::Envelope::new(Some(from), to)
            .map_err(|e| err("permanent", e.to_string()))?;
        let attempt = async {
            let mut conn = self.checkout().await.map_err(|e| err("temporary", e))?;
            match conn.send(&envelope, mail.raw.as_bytes()).await {
                Ok(_) => {
                    self.checkin(conn);
                    Ok(())
                }
                // lettre has already closed the connection (its `try_smtp`
                // aborts on any error), so it is not put back.
                Err(e) if e.is_permanent() => Err(err("permanent", e.to_string())),
                Err(e) => Err(err("temporary", e.to_string())),
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(err(
                "temporary",
                format!("no answer within {:?}", self.timeout),
            )),
        }
    }

    /// Checks the server answers (connect, EHLO, TLS and login as
    /// configured, NOOP), for `check-config`.
    pub async fn check(&self) -> Result<bool, SmtpError> {
        let setup = |reason: String| SmtpError::Setup {
            host: self.settings.host.clone(),
            port: self.settings.port,
            reason,
        };
        let attempt = async {
            let mut conn = self.connect().await.map_err(setup)?;
            let ok = conn.test_connected().await;
            let _ = conn.quit().await;
            Ok(ok)
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| setup("timed out".into()))?
    }
}

/// A TLS stream as lettre wants it: lettre asks its transports for the
/// peer's address.
#[derive(Debug)]
struct Socket<S> {
    inner: S,
    peer: std::net::SocketAddr,
}

impl<S: AsyncRead + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Socket<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> AsyncTokioStream for Socket<S>
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + std::fmt::Debug,
{
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(self.peer)
    }
}

/// Delay before attempt `attempts + 1`: 2, 4, 8 … seconds, capped at an hour.
pub fn backoff_secs(attempts: u32) -> u64 {
    2u64.saturating_pow(attempts.min(12)).min(3600)
}

/// Delivers the outbox until `shutdown` turns true.
pub async fn run_outbox(
    store: Arc<dyn Store>,
    mailer: Mailer,
    clock: Arc<dyn Clock>,
    engine: Arc<crate::engine::Engine>,
    mut durable: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Notices this task queues itself (bounces) are durable once it has
    // flushed them, so it may move its own watermark past them.
    let mut own = 0u64;
    loop {
        let mut watermark = (*durable.borrow_and_update()).max(own);
        let next_wake =
            match deliver_due(&store, &mailer, clock.as_ref(), &engine, &mut watermark).await {
                Ok(wake) => wake,
                Err(e) => {
                    tracing::error!(error = %e, "outbox store error; retrying in 5 s");
                    Some(Duration::from_secs(5))
                }
            };
        own = own.max(watermark);
        if *shutdown.borrow() {
            return;
        }
        let sleep = next_wake.unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = durable.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Sends every due entry up to `watermark`; returns when to look again for
/// entries waiting on a retry.
async fn deliver_due(
    store: &Arc<dyn Store>,
    mailer: &Mailer,
    clock: &dyn Clock,
    engine: &crate::engine::Engine,
    watermark: &mut u64,
) -> Result<Option<Duration>, crate::store::StoreError> {
    loop {
        let now = clock.now();
        let pending = store.pending_outbox(*watermark, 256)?;
        crate::metrics::set(&crate::metrics::METRICS.outbox_depth, pending.len() as u64);
        let (due, waiting): (Vec<OutboxEntry>, Vec<OutboxEntry>) =
            pending.into_iter().partition(|e| e.not_before <= now);
        let next = waiting
            .iter()
            .map(|e| Duration::from_secs(e.not_before.saturating_sub(now).max(1)))
            .min();
        if due.is_empty() {
            return Ok(next);
        }
        let mut sends = futures::stream::iter(due)
            .map(|entry| async move {
                let r = mailer.send(&entry.mail).await;
                (entry, r)
            })
            .buffer_unordered(mailer.parallel.max(1));
        let mut progressed = false;
        // Each result is recorded and flushed as soon as it is known, while
        // the other connections keep sending: after a crash, at most the
        // mails in flight at that moment (one per connection) go out twice.
        while let Some((mut entry, result)) = sends.next().await {
            match result {
                Ok(()) => {
                    store.mark_sent(entry.id, clock.now(), None)?;
                    store.flush()?;
                    progressed = true;
                    crate::metrics::add(&crate::metrics::METRICS.smtp_sent, 1);
                    crate::metrics::set(&crate::metrics::METRICS.smtp_ok, 1);
                    tracing::info!(message_id = %entry.mail.message_id, to = ?entry.mail.recipients, subject = %entry.mail.subject, "mail sent");
                }
                Err(e) if e.is_permanent() || entry.attempts + 1 >= MAX_ATTEMPTS => {
                    crate::metrics::add(&crate::metrics::METRICS.smtp_failures, 1);
                    tracing::error!(message_id = %entry.mail.message_id, error = %e, "mail failed permanently");
                    store.mark_sent(entry.id, clock.now(), Some(e.to_string()))?;
                    store.flush()?;
                    progressed = true;
                    if entry.mail.invitation.is_some() {
                        match engine.delivery_failed(&entry.mail, &e.to_string()) {
                            Ok(_) => {}
                            Err(crate::engine::EngineError::Store(se)) => return Err(se),
                        }
                    }
                }
                Err(e) => {
                    crate::metrics::add(&crate::metrics::METRICS.smtp_failures, 1);
                    crate::metrics::set(&crate::metrics::METRICS.smtp_ok, 0);
                    entry.attempts += 1;
                    entry.not_before = clock.now() + backoff_secs(entry.attempts);
                    entry.last_error = Some(e.to_string());
                    tracing::warn!(message_id = %entry.mail.message_id, error = %e, attempt = entry.attempts, retry_in_secs = backoff_secs(entry.attempts), "mail delivery failed; will retry");
                    store.mark_retry(&entry)?;
                }
            }
        }
        drop(sends);
        let last = store.last_outbox_id()?;
        store.flush()?;
        *watermark = (*watermark).max(last);
        if !progressed {
            // Everything due failed temporarily: wait for the backoff.
            return Ok(Some(Duration::from_secs(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_secs(1), 2);
        assert_eq!(backoff_secs(2), 4);
        assert_eq!(backoff_secs(11), 2048);
        assert_eq!(backoff_secs(12), 3600);
        assert_eq!(backoff_secs(40), 3600);
    }
}
