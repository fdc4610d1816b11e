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
//! silent network can hang it.
//!
//! Recipients are handled one by one, as SMTP answers them (one reply per
//! RCPT): the mail goes to those accepted, a 4xx or a connection error is
//! retried with exponential backoff for the recipients concerned only, and
//! a 5xx is permanent, recorded, and reported to the partner (see
//! [`crate::engine::Engine::delivery_failed`]). Which recipients accepted is
//! kept in the outbox entry, so no retry and no restart sends to them again.
//!
//! Scheduling: the sender reads the outbox through its next-attempt index,
//! so only what is due is looked at, earliest first, however many mails
//! wait on a retry. A destination domain that refuses a recipient
//! temporarily backs off as a whole ([`DomainBackoff`]): its other mails
//! are not tried until then, and mail to every other domain goes out at
//! once.

use super::smtp_login::SmtpLogin;
use crate::clock::Clock;
use crate::oauth::OAuthClients;
use crate::store::{OutboxEntry, OutgoingMail, Store};
use futures::StreamExt;
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use liaison_core::config::{SmtpConfig, TlsMode};
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
    /// Connections not in use, with when each was last used and when the
    /// token it logged in with expires (`auth = "oauth2"`).
    idle: Arc<std::sync::Mutex<Vec<IdleConnection>>>,
    timeout: Duration,
    /// Parallel deliveries.
    pub parallel: usize,
    /// The provider's sending limits the outbox keeps (see
    /// [`crate::pacing`]).
    pub limits: liaison_core::pacing::SendLimits,
}

/// A pooled connection: when it was last used, and when the token it
/// logged in with expires (Unix ms; `None` without a token).
type IdleConnection = (AsyncSmtpConnection, std::time::Instant, Option<u64>);

/// How to reach and log in to the server.
struct Settings {
    host: String,
    port: u16,
    security: Security,
    login: SmtpLogin,
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
    /// Prepares the client (password login or none); connects only when
    /// there is mail.
    pub fn new(cfg: &SmtpConfig) -> Result<Self, SmtpError> {
        Self::with_oauth(cfg, &OAuthClients::default())
    }

    /// Prepares the client; `auth = "oauth2"` takes its tokens from
    /// `clients`.
    pub fn with_oauth(cfg: &SmtpConfig, clients: &OAuthClients) -> Result<Self, SmtpError> {
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
                Security::Tls(crate::io::imap::tls_config(cfg.ca_file.as_deref()).map_err(setup)?)
            }
        };
        let login = SmtpLogin::for_smtp(cfg, clients).map_err(setup)?;
        Ok(Mailer {
            settings: Arc::new(Settings {
                host: cfg.host.clone(),
                port: cfg.port,
                security,
                login,
                hello: ClientId::default(),
            }),
            idle: Default::default(),
            timeout: Duration::from_secs(cfg.timeout_secs),
            parallel: cfg.max_connections.max(1) as usize,
            limits: cfg.limits,
        })
    }

    /// A new connection: TCP with `TCP_NODELAY`, TLS as configured, EHLO,
    /// and AUTH when credentials are set. Also returns when the token it
    /// logged in with expires.
    async fn connect(&self) -> Result<(AsyncSmtpConnection, Option<u64>), String> {
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
        match super::smtp_login::login(&mut conn, &s.login, &s.host, s.port).await {
            Ok(token_expires) => Ok((conn, token_expires)),
            Err(e) => {
                conn.abort().await;
                Err(e)
            }
        }
    }

    /// An idle connection that still works, or a new one.
    ///
    /// A connection is not reused once the token it logged in with has
    /// expired: servers may end such a session at any command (Exchange
    /// does), which would cost a mail's transaction; a new login is cheap.
    async fn checkout(&self) -> Result<(AsyncSmtpConnection, Option<u64>), String> {
        loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((mut conn, since, token_expires)) = next else {
                break;
            };
            if conn.has_broken() {
                continue;
            }
            if token_expires.is_some_and(|exp| {
                !liaison_core::oauth::policy::usable(crate::oauth::client::now_ms(), exp)
            }) {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
                continue;
            }
            if since.elapsed() < CHECK_AFTER_IDLE || conn.test_connected().await {
                return Ok((conn, token_expires));
            }
        }
        self.connect().await
    }

    /// Returns a connection for the next mail.
    fn checkin(&self, conn: AsyncSmtpConnection, token_expires: Option<u64>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !conn.has_broken() && idle.len() < self.parallel {
            idle.push((conn, std::time::Instant::now(), token_expires));
        }
    }

    /// Sends one mail to all its recipients; fails unless every one
    /// accepted it.
    pub async fn send(&self, mail: &OutgoingMail) -> Result<(), SmtpError> {
        for (rcpt, outcome) in self.deliver(mail, &mail.recipients).await? {
            let kind = match outcome {
                RcptOutcome::Accepted => continue,
                RcptOutcome::Temporary(_) => "temporary",
                RcptOutcome::Permanent(_) => "permanent",
            };
            return Err(SmtpError::Send {
                message_id: mail.message_id.clone(),
                kind,
                reason: format!("{rcpt}: {}", outcome.reason()),
            });
        }
        Ok(())
    }

    /// Sends one mail to `recipients` in one transaction and returns each
    /// recipient's outcome. SMTP answers every RCPT on its own: the mail
    /// goes to those accepted (DATA is sent when at least one was), and the
    /// others are reported as refused, temporarily or for good. An error is
    /// a failure of the whole transaction (connection, MAIL FROM, DATA,
    /// timeout), which applies to every recipient tried.
    ///
    /// lettre's `AsyncSmtpConnection::send` aborts the transaction and the
    /// connection at the first refused RCPT, so one bad address would fail
    /// the mail for everyone; it is done here with lettre's own command
    /// types over `command`, which returns each reply and leaves the
    /// connection usable. (One transaction per recipient would also work,
    /// but costs a transaction each and sends the body once per recipient.)
    pub async fn deliver(
        &self,
        mail: &OutgoingMail,
        recipients: &[String],
    ) -> Result<Vec<(String, RcptOutcome)>, SmtpError> {
        let err = |kind, reason: String| SmtpError::Send {
            message_id: mail.message_id.clone(),
            kind,
            reason,
        };
        let from: lettre::Address = mail
            .envelope_from
            .parse()
            .map_err(|e: lettre::address::AddressError| err("permanent", e.to_string()))?;
        let mut to = Vec::new();
        let mut outcomes = Vec::new();
        for r in recipients {
            match r.parse::<lettre::Address>() {
                Ok(a) => to.push((r.clone(), a)),
                Err(e) => outcomes.push((r.clone(), RcptOutcome::Permanent(e.to_string()))),
            }
        }
        if to.is_empty() {
            return Ok(outcomes);
        }
        let attempt = async {
            let (mut conn, token_expires) =
                self.checkout().await.map_err(|e| err("temporary", e))?;
            match transaction(&mut conn, from, &to, mail.raw.as_bytes()).await {
                Ok(results) => {
                    self.checkin(conn, token_expires);
                    Ok(results)
                }
                Err(e) => {
                    // A failed transaction leaves the session in an unknown
                    // state: the connection is closed, not put back.
                    conn.abort().await;
                    if e.is_permanent() {
                        Err(err("permanent", e.to_string()))
                    } else {
                        Err(err("temporary", e.to_string()))
                    }
                }
            }
        };
        let results = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(err(
                    "temporary",
                    format!("no answer within {:?}", self.timeout),
                ))
            }
        };
        outcomes.extend(results);
        Ok(outcomes)
    }

    /// With `auth = "oauth2"`, while the token client cannot get a token:
    /// how long to wait before trying (see [`crate::oauth::TokenClient::waiting`]).
    pub fn waiting_for_token(&self) -> Option<Duration> {
        match &self.settings.login {
            SmtpLogin::Token { client, .. } => client.waiting(),
            _ => None,
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
            let (mut conn, _) = self.connect().await.map_err(setup)?;
            let ok = conn.test_connected().await;
            let _ = conn.quit().await;
            Ok(ok)
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| setup("timed out".into()))?
    }
}

/// What the server answered for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The server took the mail for this recipient.
    Accepted,
    /// Refused for now (4xx): try again later.
    Temporary(String),
    /// Refused for good (5xx).
    Permanent(String),
}

impl RcptOutcome {
    /// The server's answer, empty when accepted.
    pub fn reason(&self) -> &str {
        match self {
            RcptOutcome::Accepted => "",
            RcptOutcome::Temporary(r) | RcptOutcome::Permanent(r) => r,
        }
    }
}

/// MAIL FROM, one RCPT per recipient (each answer kept), then DATA and the
/// message when at least one recipient was accepted, RSET otherwise. The
/// MAIL and DATA parameters are those lettre's own `send` would use.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    from: lettre::Address,
    to: &[(String, lettre::Address)],
    body: &[u8],
) -> Result<Vec<(String, RcptOutcome)>, lettre::transport::smtp::Error> {
    use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
    use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
    let mut options = Vec::new();
    let non_ascii = !from.to_string().is_ascii() || to.iter().any(|(r, _)| !r.is_ascii());
    if non_ascii && conn.server_info().supports_feature(Extension::SmtpUtfEight) {
        options.push(MailParameter::SmtpUtfEight);
    }
    if !body.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(Some(from), options)).await?;
    let mut outcomes = Vec::with_capacity(to.len());
    for (name, addr) in to {
        let outcome = match conn.command(Rcpt::new(addr.clone(), vec![])).await {
            Ok(_) => RcptOutcome::Accepted,
            Err(e) if e.is_permanent() => RcptOutcome::Permanent(e.to_string()),
            Err(e) if e.is_transient() => RcptOutcome::Temporary(e.to_string()),
            // Not a reply (the connection broke, or nonsense came back).
            Err(e) => return Err(e),
        };
        outcomes.push((name.clone(), outcome));
    }
    if outcomes.iter().any(|(_, o)| *o == RcptOutcome::Accepted) {
        conn.command(Data).await?;
        conn.message(body).await?;
    } else {
        conn.command(Rset).await?;
    }
    Ok(outcomes)
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

/// Outbox entries read per round: the due ones, earliest attempt first.
const BATCH: usize = 256;

/// Entries claimed per round with a shared store, per parallel delivery: a
/// crashed instance's claims hold its entries back until they expire, so
/// it claims only about what it is about to send.
const SHARED_BATCH_PER_CONNECTION: usize = 4;

/// Entries read (claimed) per round.
fn batch_size(store: &dyn Store, parallel: usize) -> usize {
    if store.shared().is_some() {
        (parallel.max(1) * SHARED_BATCH_PER_CONNECTION).min(BATCH)
    } else {
        BATCH
    }
}

/// How often the outbox looks for due mail when the store is shared.
const SHARED_POLL: Duration = Duration::from_secs(1);

/// Per destination domain, whether it refused a recipient temporarily of
/// late. While a domain backs off, its recipients are not tried (the mail
/// is put back as if refused again), so one greylisting or slow domain is
/// neither hammered by every queued mail nor in the way of the others.
#[derive(Debug, Default)]
pub struct DomainBackoff {
    /// Domain → (no attempt before, consecutive temporary refusals).
    domains: std::collections::HashMap<String, (u64, u32)>,
}

impl DomainBackoff {
    /// Until when `domain` is not tried, if it backs off at `now`.
    pub fn blocked_until(&self, domain: &str, now: u64) -> Option<u64> {
        self.domains
            .get(domain)
            .map(|(until, _)| *until)
            .filter(|until| *until > now)
    }

    /// `domain` refused a recipient temporarily at `now`. Refusals while it
    /// already backs off (mails that were in flight together) count once.
    pub fn refused(&mut self, domain: &str, now: u64) {
        let (until, failures) = self.domains.entry(domain.to_string()).or_insert((0, 0));
        if *until <= now {
            *failures += 1;
            *until = now + backoff_secs(*failures);
        }
    }

    /// `domain` accepted a recipient: it is tried at once again.
    pub fn accepted(&mut self, domain: &str) {
        self.domains.remove(domain);
    }
}

/// The domain of an address, lower case.
fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or(address)
        .to_ascii_lowercase()
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
    let domains = Arc::new(std::sync::Mutex::new(DomainBackoff::default()));
    let pacer = std::sync::Mutex::new(liaison_core::pacing::Pacer::new(
        mailer.limits,
        pacing_windows(),
    ));
    let shared = store.shared().is_some();
    if mailer.limits.any() {
        tracing::info!(
            max_per_minute = ?mailer.limits.max_per_minute,
            max_recipients_per_day = ?mailer.limits.max_recipients_per_day,
            "the outbox keeps the provider's sending limits"
        );
    }
    loop {
        let mut watermark = (*durable.borrow_and_update()).max(own);
        let mut store_failed = false;
        let next_wake = match deliver_due(
            &store,
            &mailer,
            &clock,
            &engine,
            &Limiters {
                domains: &domains,
                pacer: &pacer,
            },
            &mut watermark,
            &shutdown,
        )
        .await
        {
            Ok(wake) => wake,
            Err(e) => {
                tracing::error!(error = %e, "outbox store error; retrying in 5 s");
                store_failed = true;
                Some(Duration::from_secs(5))
            }
        };
        own = own.max(watermark);
        if *shutdown.borrow() {
            return;
        }
        let mut sleep = next_wake.unwrap_or(Duration::from_secs(3600));
        if shared && !store_failed {
            // Other instances queue mail this one must be able to send (the
            // instance that queued it may have died): no watermark tells
            // of theirs, so look every second.
            sleep = sleep.min(SHARED_POLL);
        }
        tokio::select! {
            _ = durable.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The lengths of the pacing windows: a minute and a day, except in debug
/// builds run with `LIAISON_TEST_MINUTE_SECS` set, where the end-to-end
/// tests shorten the minute (and the day with it) to watch pacing without
/// waiting minutes. Release builds have no such knob.
fn pacing_windows() -> liaison_core::pacing::Windows {
    #[cfg(debug_assertions)]
    if let Some(secs) = std::env::var("LIAISON_TEST_MINUTE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return liaison_core::pacing::Windows::scaled(secs);
    }
    liaison_core::pacing::Windows::default()
}

/// What holds mail back besides each entry's own retry time: per-domain
/// backoff, and the sender's pacing (provider limits and throttling).
struct Limiters<'a> {
    domains: &'a Arc<std::sync::Mutex<DomainBackoff>>,
    pacer: &'a std::sync::Mutex<liaison_core::pacing::Pacer>,
}

/// A blocking store task that did not finish (it panicked), as a store
/// error: the outbox loop retries, as after any store error.
fn task_failed(what: &str, e: tokio::task::JoinError) -> crate::store::StoreError {
    crate::store::StoreError::Read(crate::store::ReadError::Backend(format!(
        "{what} failed: {e}"
    )))
}

/// What one attempt at an entry gave.
struct Attempt {
    /// Per recipient tried (or held back for its domain): the outcome.
    outcomes: Vec<(String, RcptOutcome)>,
    /// Whether the server was talked to at all.
    tried: bool,
    /// Not sent, and not counted as an attempt: the sender is paced or
    /// paused until then. The entry keeps its place in the queue.
    held_until: Option<u64>,
    /// The provider's throttling answer, when it gave one.
    throttled: Option<String>,
}

impl Attempt {
    /// Held back by the pacer until `until`, as the server said `why` (or
    /// without asking it).
    fn held(until: u64, throttled: Option<String>) -> Attempt {
        Attempt {
            outcomes: Vec::new(),
            tried: throttled.is_some(),
            held_until: Some(until),
            throttled,
        }
    }
}

/// Sends every due entry up to `watermark`, earliest next attempt first;
/// returns when to look again for entries waiting on a retry.
///
/// Each recipient's result is recorded in the entry (accepted ones are
/// never sent to again, refused ones are reported to whoever must know,
/// deferred ones are retried with backoff), and flushed as soon as anyone
/// accepted the mail.
async fn deliver_due(
    store: &Arc<dyn Store>,
    mailer: &Mailer,
    clock: &Arc<dyn Clock>,
    engine: &Arc<crate::engine::Engine>,
    limiters: &Limiters<'_>,
    watermark: &mut u64,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<Duration>, crate::store::StoreError> {
    let domains = limiters.domains;
    let lock = || domains.lock().unwrap_or_else(|p| p.into_inner());
    let pace = || limiters.pacer.lock().unwrap_or_else(|p| p.into_inner());
    // Counted at the start and, when batches were sent, at the end; not per
    // batch: it reads every pending key.
    crate::metrics::set(&crate::metrics::METRICS.outbox_depth, store.outbox_len()?);
    let mut sent_batches = false;
    loop {
        // Stopping waits for the batch in flight, not for the whole queue
        // (a long one, or one retried against a server that is down).
        if *shutdown.borrow() {
            return Ok(None);
        }
        // No token to log in with: the mails wait, their attempts unspent.
        if let Some(wait) = mailer.waiting_for_token() {
            return Ok(Some(wait));
        }
        let now = clock.now();
        // Claimed: with a shared store no other instance sends these while
        // this one tries them (with sled, simply the due ones).
        let due = store.claim_due(*watermark, now, batch_size(store.as_ref(), mailer.parallel))?;
        if due.is_empty() {
            if sent_batches {
                crate::metrics::set(&crate::metrics::METRICS.outbox_depth, store.outbox_len()?);
            }
            return Ok(store
                .next_attempt(*watermark)?
                .map(|at| Duration::from_secs(at.saturating_sub(now).max(1))));
        }
        let batch_hold: std::sync::Mutex<Option<u64>> = std::sync::Mutex::new(None);
        let hold = || batch_hold.lock().unwrap_or_else(|p| p.into_inner());
        let mut sends = futures::stream::iter(due)
            .map(|entry| async move {
                // Read when the send starts, not when the batch was read:
                // a domain that refused a moment ago is not tried again by
                // every other mail of this batch.
                let now = clock.now();
                let mut outcomes = Vec::new();
                let mut open = Vec::new();
                for r in entry.pending_recipients() {
                    let domain = domain_of(&r);
                    match lock().blocked_until(&domain, now) {
                        Some(until) => outcomes.push((
                            r,
                            RcptOutcome::Temporary(format!(
                                "not tried: {domain} refused a recipient temporarily of late; next try at {}",
                                liaison_core::decide::rfc3339(until)
                            )),
                        )),
                        None => open.push(r),
                    }
                }
                let tried = !open.is_empty();
                if tried {
                    // Asked when the send starts, in queue order: a full
                    // window or a pause holds this mail and every later one
                    // (their futures start after it), so the queue's order
                    // is kept across the wait.
                    // Once one mail is held, so is every later one of the
                    // batch, even one that would fit (a mail to fewer
                    // recipients under the daily limit): it would overtake.
                    let admitted = match *hold() {
                        Some(until) => liaison_core::pacing::Admission::WaitUntil(until),
                        None => pace().admit(now, open.len() as u32),
                    };
                    if let liaison_core::pacing::Admission::WaitUntil(until) = admitted {
                        hold().get_or_insert(until);
                        return (entry, Attempt::held(until, None));
                    }
                    let delivered = mailer.deliver(&entry.mail, &open).await;
                    if let Some(why) = throttling_answer(&delivered) {
                        let until = pace().throttled(clock.now());
                        *hold() = Some(until);
                        // Recipients that accepted must be recorded (never
                        // sent to again): then it is an attempt like any
                        // other, the rest retried later; the pause holds.
                        let partly = matches!(&delivered, Ok(results)
                            if results.iter().any(|(_, o)| *o == RcptOutcome::Accepted));
                        if !partly {
                            return (entry, Attempt::held(until, Some(why)));
                        }
                    }
                    match delivered {
                        Ok(results) => {
                            if results.iter().any(|(_, o)| *o == RcptOutcome::Accepted) {
                                pace().accepted();
                            }
                            let mut d = lock();
                            for (r, o) in &results {
                                match o {
                                    RcptOutcome::Accepted => d.accepted(&domain_of(r)),
                                    RcptOutcome::Temporary(_) => d.refused(&domain_of(r), clock.now()),
                                    RcptOutcome::Permanent(_) => {}
                                }
                            }
                            drop(d);
                            outcomes.extend(results);
                        }
                        // The whole transaction failed: every recipient tried
                        // shares the outcome (not held against its domain:
                        // the connection or the message was at fault).
                        Err(e) => {
                            let o = if e.is_permanent() {
                                RcptOutcome::Permanent(e.to_string())
                            } else {
                                RcptOutcome::Temporary(e.to_string())
                            };
                            outcomes.extend(open.into_iter().map(|r| (r, o.clone())));
                        }
                    }
                }
                (entry, Attempt { outcomes, tried, held_until: None, throttled: None })
            })
            .buffer_unordered(mailer.parallel.max(1));
        // Each result is recorded and flushed as soon as it is known, while
        // the other connections keep sending: after a crash, at most the
        // mails in flight at that moment (one per connection) go out twice.
        let mut held_until: Option<u64> = None;
        while let Some((entry, attempt)) = sends.next().await {
            if let Some(until) = attempt.held_until {
                held_until = Some(held_until.map_or(until, |h| h.min(until)));
            }
            // Recording writes and flushes the store (an fsync per mail
            // someone accepted): synchronous work, on the blocking pool, so
            // the other connections' sends go on meanwhile.
            let (st, cl, en, dm) = (
                store.clone(),
                clock.clone(),
                engine.clone(),
                domains.clone(),
            );
            tokio::task::spawn_blocking(move || {
                record_attempt(&st, cl.as_ref(), &en, &dm, entry, attempt)
            })
            .await
            .map_err(|e| task_failed("recording a delivery", e))??;
        }
        drop(sends);
        let st = store.clone();
        let last = tokio::task::spawn_blocking(move || {
            let last = st.last_outbox_id()?;
            st.flush()?;
            Ok::<_, crate::store::StoreError>(last)
        })
        .await
        .map_err(|e| task_failed("flushing the outbox", e))??;
        // Every entry read was either finished or moved to a later
        // attempt, so the next round reads what is due after them.
        *watermark = (*watermark).max(last);
        sent_batches = true;
        if let Some(until) = held_until {
            // Held entries are still due: reading again now would only
            // hold them again. Look again when the pacer allows.
            crate::metrics::set(&crate::metrics::METRICS.outbox_depth, store.outbox_len()?);
            return Ok(Some(Duration::from_secs(
                until.saturating_sub(clock.now()).max(1),
            )));
        }
    }
}

/// The provider's throttling answer in a delivery's result, if it is one
/// ([`liaison_core::pacing::is_provider_throttling`]): to the whole transaction,
/// or a `421` or quota answer to a recipient.
fn throttling_answer(delivered: &Result<Vec<(String, RcptOutcome)>, SmtpError>) -> Option<String> {
    match delivered {
        Err(SmtpError::Send { reason, .. }) => {
            liaison_core::pacing::is_provider_throttling(reason, true).then(|| reason.clone())
        }
        Err(SmtpError::Setup { .. }) => None,
        Ok(results) => results.iter().find_map(|(r, o)| match o {
            RcptOutcome::Temporary(why) | RcptOutcome::Permanent(why)
                if liaison_core::pacing::is_provider_throttling(why, false) =>
            {
                Some(format!("{r}: {why}"))
            }
            _ => None,
        }),
    }
}

/// Records what one attempt gave: accepted and refused recipients in the
/// entry, refusals reported, the rest retried later.
fn record_attempt(
    store: &Arc<dyn Store>,
    clock: &dyn Clock,
    engine: &crate::engine::Engine,
    domains: &std::sync::Mutex<DomainBackoff>,
    mut entry: OutboxEntry,
    attempt: Attempt,
) -> Result<(), crate::store::StoreError> {
    let m = &crate::metrics::METRICS;
    let now = clock.now();
    if let Some(until) = attempt.held_until {
        return record_held(store, &mut entry, until, attempt.throttled);
    }
    let mut newly_refused = Vec::new();
    let mut temporary = Vec::new();
    let mut accepted = Vec::new();
    for (r, o) in attempt.outcomes {
        match o {
            RcptOutcome::Accepted => accepted.push(r),
            RcptOutcome::Permanent(why) => newly_refused.push((r, why)),
            RcptOutcome::Temporary(why) => temporary.push((r, why)),
        }
    }
    let mid = entry.mail.message_id.clone();
    if !accepted.is_empty() {
        crate::metrics::add(&m.smtp_sent, 1);
        crate::metrics::set(&m.smtp_ok, 1);
        tracing::info!(message_id = %mid, to = ?accepted, subject = %entry.mail.subject, "mail sent");
    }
    if attempt.tried && !(temporary.is_empty() && newly_refused.is_empty()) {
        crate::metrics::add(&m.smtp_failures, 1);
    }
    entry.delivered.extend(accepted.iter().cloned());
    if !temporary.is_empty() {
        entry.attempts += 1;
        if entry.attempts >= MAX_ATTEMPTS {
            // Given up: the recipients still deferred are refused for good.
            for (r, why) in temporary.drain(..) {
                newly_refused.push((r, format!("gave up after {MAX_ATTEMPTS} attempts: {why}")));
            }
        }
    }
    for (r, why) in &newly_refused {
        tracing::error!(message_id = %mid, recipient = %r, error = %why, "mail refused for good");
        entry.refused.push((r.clone(), why.clone()));
    }
    // Refusals are reported in the same flush as the entry's new state, so
    // a crash can neither lose the report nor make it twice.
    for (r, why) in &newly_refused {
        match engine.delivery_failed(&entry.mail, r, why) {
            Ok(_) => {}
            Err(crate::engine::EngineError::Store(se)) => return Err(se),
        }
    }
    let changed = !accepted.is_empty() || !newly_refused.is_empty();
    if temporary.is_empty() {
        let error = (!entry.refused.is_empty()).then(|| reasons(&entry.refused));
        store.mark_sent(entry.id, now, error)?;
        store.flush()?;
        return Ok(());
    }
    let reason = reasons(&temporary);
    // Not before the entry's own backoff, nor before any of its deferred
    // recipients' domains is tried again.
    let blocked = {
        let d = domains.lock().unwrap_or_else(|p| p.into_inner());
        temporary
            .iter()
            .filter_map(|(r, _)| d.blocked_until(&domain_of(r), now))
            .max()
    };
    entry.not_before = (now + backoff_secs(entry.attempts)).max(blocked.unwrap_or(0));
    entry.last_error = Some(reason);
    if attempt.tried {
        crate::metrics::set(&m.smtp_ok, 0);
        tracing::warn!(message_id = %mid, error = ?entry.last_error, attempt = entry.attempts, retry_at = %liaison_core::decide::rfc3339(entry.not_before), "mail delivery deferred; will retry");
    } else {
        tracing::debug!(message_id = %mid, retry_at = %liaison_core::decide::rfc3339(entry.not_before), "mail held back while its domain backs off");
    }
    store.mark_retry(&entry)?;
    if changed {
        // Someone has the mail now: a crash must not send it to them again.
        store.flush()?;
    }
    Ok(())
}

/// An entry the pacer held back (a full window, or the provider's
/// throttling): it is not an attempt and keeps its place in the queue
/// (`not_before` unchanged), so it goes first when sending resumes. Only
/// the provider's answer is kept, as its last error.
fn record_held(
    store: &Arc<dyn Store>,
    entry: &mut OutboxEntry,
    until: u64,
    throttled: Option<String>,
) -> Result<(), crate::store::StoreError> {
    let mid = &entry.mail.message_id;
    let Some(why) = throttled else {
        tracing::debug!(message_id = %mid, until = %liaison_core::decide::rfc3339(until), "mail waits for the sending limit's window");
        return Ok(());
    };
    crate::metrics::add(&crate::metrics::METRICS.smtp_throttled, 1);
    tracing::warn!(message_id = %mid, error = %why, paused_until = %liaison_core::decide::rfc3339(until), "the provider throttled the sender; pausing all sending, queue order kept, nothing given up");
    entry.last_error = Some(format!("throttled by the provider: {why}"));
    store.mark_retry(entry)
}

/// Recipients with the server's answers, as one error text:
/// `a@x: why; b@y: why`.
fn reasons(per_recipient: &[(String, String)]) -> String {
    per_recipient
        .iter()
        .map(|(r, why)| format!("{r}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
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

    #[test]
    fn a_domain_backs_off_once_per_window_and_reopens_on_success() {
        let mut d = DomainBackoff::default();
        assert_eq!(d.blocked_until("greylist.test", 10), None);
        d.refused("greylist.test", 10);
        // Mails in flight together refuse together: counted once.
        d.refused("greylist.test", 10);
        d.refused("greylist.test", 11);
        assert_eq!(d.blocked_until("greylist.test", 11), Some(12));
        assert_eq!(d.blocked_until("contoso.test", 11), None);
        assert_eq!(d.blocked_until("greylist.test", 12), None);
        d.refused("greylist.test", 12);
        assert_eq!(d.blocked_until("greylist.test", 12), Some(16));
        d.accepted("greylist.test");
        assert_eq!(d.blocked_until("greylist.test", 12), None);
        assert_eq!(domain_of("Bob@Fabrikam.TEST"), "fabrikam.test");
    }
}
