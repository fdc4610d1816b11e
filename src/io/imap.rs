//! Watching an IMAP mailbox: connect (plain, STARTTLS or TLS), log in,
//! fetch everything after the stored cursor, hand each message to the
//! [`Engine`], then wait with IDLE (or poll) and repeat.
//!
//! async-imap has no timeouts of its own outside IDLE, so every call here is
//! wrapped in one: a server that stops answering must cost a reconnect, not
//! a hung daemon. An IDLE wake-up is only a hint; after each one the mailbox
//! is re-synced by UID, because notices can be missed between two waits.

use super::imap_login::{ImapLogin, PreLoginCaps};
use crate::engine::Engine;
use crate::store::Cursor;
use futures::StreamExt;
use liaison_core::config::{InboxConfig, TlsMode};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Errors talking to an IMAP server.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    /// TCP connection failed.
    #[error("cannot connect to IMAP server {host}:{port}: {source}")]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS set-up failed.
    #[error("TLS with IMAP server {host}:{port} failed: {reason}")]
    Tls {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// What failed.
        reason: String,
    },
    /// The server refused the login.
    #[error("IMAP login as {user} on {host}:{port} refused: {reason}")]
    Login {
        /// Login name.
        user: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The server's answer.
        reason: String,
    },
    /// A command failed.
    #[error("IMAP {command} on {inbox} failed: {reason}")]
    Command {
        /// Inbox name.
        inbox: String,
        /// The command.
        command: &'static str,
        /// What failed.
        reason: String,
    },
    /// A command took longer than the configured timeout.
    #[error("IMAP {command} on {inbox} timed out after {secs} s")]
    Timeout {
        /// Inbox name.
        inbox: String,
        /// The command.
        command: &'static str,
        /// The timeout.
        secs: u64,
    },
    /// No token could be had for an `auth = "oauth2"` inbox.
    #[error(transparent)]
    Token(#[from] crate::oauth::OAuthError),
    /// Processing a message failed in the store.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// Any byte stream an IMAP session can run over.
pub trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> ImapStream for T {}

/// A logged-in session.
pub type Session = async_imap::Session<Box<dyn ImapStream>>;

/// Messages fetched per round trip at most; with [`FETCH_CHUNK_BYTES`] it
/// bounds memory on a large backlog (two chunks are held at a time: one
/// being processed, the next being fetched).
const FETCH_CHUNK: usize = 500;
/// Declared bytes fetched per round trip, about (one message may exceed it).
const FETCH_CHUNK_BYTES: u64 = 16 << 20;
/// Within a chunk, the store is flushed whenever this much time has passed
/// since the last flush (and always at the end of the chunk).
const FLUSH_AFTER: Duration = Duration::from_millis(200);
/// Processed messages are marked on the server at least this often during
/// a long backlog (and always at the end of a sync).
const MARK_EVERY: usize = 5_000;
/// IDLE is restarted this often even when nothing happens (RFC 2177 asks
/// for less than 29 minutes).
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);

async fn timed<T, E: std::fmt::Display>(
    cfg: &InboxConfig,
    command: &'static str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(Duration::from_secs(cfg.timeout_secs), fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ImapError::Command {
            inbox: cfg.name.clone(),
            command,
            reason: e.to_string(),
        }),
        Err(_) => Err(ImapError::Timeout {
            inbox: cfg.name.clone(),
            command,
            secs: cfg.timeout_secs,
        }),
    }
}

/// A rustls client configuration trusting the web PKI roots plus an
/// optional PEM file of extra CAs.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(tls_roots(ca_file)?)
            .with_no_client_auth(),
    ))
}

/// The web PKI roots plus an optional PEM file of extra CAs.
pub fn tls_roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("unusable certificate in {}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

async fn tls_wrap(
    cfg: &InboxConfig,
    tcp: tokio::net::TcpStream,
) -> Result<Box<dyn ImapStream>, ImapError> {
    let tls_err = |reason: String| ImapError::Tls {
        host: cfg.host.clone(),
        port: cfg.port,
        reason,
    };
    let config = tls_config(cfg.ca_file.as_deref()).map_err(tls_err)?;
    let name = rustls::pki_types::ServerName::try_from(cfg.host.clone())
        .map_err(|e| tls_err(e.to_string()))?;
    let stream = timed(
        cfg,
        "TLS handshake",
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await?;
    Ok(Box::new(stream))
}

/// Connects and logs in (see [`super::imap_login`]).
pub async fn connect(cfg: &InboxConfig, login: &ImapLogin) -> Result<Session, ImapError> {
    let tcp = match tokio::time::timeout(
        Duration::from_secs(cfg.timeout_secs),
        tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            return Err(ImapError::Connect {
                host: cfg.host.clone(),
                port: cfg.port,
                source,
            })
        }
        Err(_) => {
            return Err(ImapError::Timeout {
                inbox: cfg.name.clone(),
                command: "connect",
                secs: cfg.timeout_secs,
            })
        }
    };
    tcp.set_nodelay(true).ok();
    let stream: Box<dyn ImapStream> = match cfg.tls {
        TlsMode::None => Box::new(tcp),
        TlsMode::Tls => tls_wrap(cfg, tcp).await?,
        TlsMode::Starttls => {
            let mut client = async_imap::Client::new(tcp);
            greeting(cfg, &mut client).await?;
            timed(
                cfg,
                "STARTTLS",
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await?;
            tls_wrap(cfg, client.into_inner()).await?
        }
    };
    let mut client = async_imap::Client::new(stream);
    let mut caps = if cfg.tls != TlsMode::Starttls {
        greeting(cfg, &mut client).await?
    } else {
        // Capabilities from before STARTTLS must not be trusted.
        PreLoginCaps::default()
    };
    if !caps.known && matches!(login, ImapLogin::Token { .. }) {
        // Not in the greeting (Exchange), or after STARTTLS: ask, to know
        // whether the token may go with AUTHENTICATE (SASL-IR).
        caps = super::imap_login::ask_capabilities(cfg, &mut client).await;
    }
    super::imap_login::login(cfg, client, login, &caps).await
}

/// Reads the greeting, with the capabilities it lists (Dovecot and
/// Exchange list them there).
async fn greeting<T: ImapStream>(
    cfg: &InboxConfig,
    client: &mut async_imap::Client<T>,
) -> Result<PreLoginCaps, ImapError> {
    match tokio::time::timeout(
        Duration::from_secs(cfg.timeout_secs),
        client.read_response(),
    )
    .await
    {
        Ok(Ok(Some(response))) => Ok(PreLoginCaps::from_response(response.parsed())),
        Ok(Ok(None)) => Err(ImapError::Command {
            inbox: cfg.name.clone(),
            command: "greeting",
            reason: "server closed the connection".into(),
        }),
        Ok(Err(e)) => Err(ImapError::Command {
            inbox: cfg.name.clone(),
            command: "greeting",
            reason: e.to_string(),
        }),
        Err(_) => Err(ImapError::Timeout {
            inbox: cfg.name.clone(),
            command: "greeting",
            secs: cfg.timeout_secs,
        }),
    }
}

/// Watches one inbox until `shutdown` turns true, reconnecting with backoff.
pub async fn watch_inbox(
    cfg: InboxConfig,
    login: ImapLogin,
    engine: Arc<Engine>,
    durable: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    // Outlives a session: a copy that failed is tried again after a
    // reconnect too.
    let mut uncopied = UncopiedQuarantine::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match run_session(
            &cfg,
            &login,
            &engine,
            &durable,
            &mut shutdown,
            &mut uncopied,
        )
        .await
        {
            Ok(()) => return,
            Err(e) => {
                crate::metrics::add(&crate::metrics::METRICS.imap_reconnects, 1);
                tracing::warn!(inbox = %cfg.name, error = %e, retry_in_secs = backoff.as_secs(), "IMAP session ended; reconnecting");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// Whether the server announced new mail (EXISTS or RECENT) since the last
/// look, taking every notice out of the channel. A full channel drops
/// further notices, but then it holds some, so nothing is missed.
/// `next` takes the next notice from the session's channel.
fn new_mail_noticed(
    mut next: impl FnMut() -> Option<async_imap::types::UnsolicitedResponse>,
) -> bool {
    let mut noticed = false;
    while let Some(r) = next() {
        noticed |= matches!(
            r,
            async_imap::types::UnsolicitedResponse::Exists(_)
                | async_imap::types::UnsolicitedResponse::Recent(_)
        );
    }
    noticed
}

async fn run_session(
    cfg: &InboxConfig,
    login: &ImapLogin,
    engine: &Arc<Engine>,
    durable: &watch::Sender<u64>,
    shutdown: &mut watch::Receiver<bool>,
    uncopied: &mut UncopiedQuarantine,
) -> Result<(), ImapError> {
    let mut session = connect(cfg, login).await?;
    let _connected = ConnectedGauge::new();
    let mut folders = Folders::on_server(cfg, &mut session).await;
    let mailbox = timed(cfg, "SELECT", session.select(&cfg.mailbox)).await?;
    if let Some(moved) = folders.without_keywords(&mailbox.permanent_flags) {
        tracing::warn!(inbox = %cfg.name, mailbox = %cfg.mailbox, permanent_flags = ?mailbox.permanent_flags, folder = %moved.processed_name(), "the server allows no custom keywords here (PERMANENTFLAGS without \\*), so processed mail cannot be marked with a keyword; moving it to a folder instead");
        folders = moved;
    }
    ensure_folders(cfg, &folders, &mut session).await;
    let uid_validity = mailbox.uid_validity.unwrap_or(0);
    if uncopied.uid_validity != uid_validity {
        // Those UIDs name other messages now (or none).
        *uncopied = UncopiedQuarantine {
            uid_validity,
            ..Default::default()
        };
    }
    let caps = timed(cfg, "CAPABILITY", session.capabilities()).await?;
    let use_idle = cfg.idle && caps.has_str("IDLE");
    tracing::info!(inbox = %cfg.name, mailbox = %cfg.mailbox, uid_validity, idle = use_idle, separator = %folders.separator, quarantine_folder = %folders.quarantine, "watching");
    let notices = session.unsolicited_responses.clone();
    let mut marker = Marker {
        cfg,
        folders: &folders,
        uncopied,
    };
    loop {
        // Mail delivered while a sync runs is announced (EXISTS) during it:
        // sync again until a pass finds nothing and nothing was announced,
        // so no mail waits for the next IDLE wake-up.
        loop {
            let found = sync(
                cfg,
                &mut session,
                engine,
                durable,
                uid_validity,
                &mut marker,
                shutdown,
            )
            .await?;
            let noticed = new_mail_noticed(|| notices.try_recv().ok());
            if (found == 0 && !noticed) || *shutdown.borrow() {
                break;
            }
        }
        if *shutdown.borrow() {
            let _ = timed(cfg, "LOGOUT", session.logout()).await;
            return Ok(());
        }
        if use_idle {
            let mut handle = session.idle();
            timed(cfg, "IDLE", handle.init()).await?;
            // Mail that came between the last fetch and IDLE is announced
            // while IDLE starts: go back and fetch it instead of waiting.
            let stopped = if new_mail_noticed(|| notices.try_recv().ok()) {
                false
            } else {
                let (wait, _stop) = handle.wait_with_timeout(IDLE_RENEW);
                tokio::select! {
                    r = wait => {
                        r.map_err(|e| ImapError::Command { inbox: cfg.name.clone(), command: "IDLE", reason: e.to_string() })?;
                        false
                    }
                    _ = shutdown.changed() => true,
                }
            };
            session = timed(cfg, "DONE", handle.done()).await?;
            if stopped {
                let _ = timed(cfg, "LOGOUT", session.logout()).await;
                return Ok(());
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(cfg.poll_interval_secs)) => {}
                _ = shutdown.changed() => {}
            }
            timed(cfg, "NOOP", session.noop()).await?;
        }
    }
}

/// Fetches and processes every message after the cursor.
///
/// One round trip lists every new message with its size, so an oversized
/// message is never downloaded. The bodies then come in chunks, pipelined:
/// while one chunk is processed and committed (one durable flush per
/// chunk, on a blocking thread), the next one is already being fetched.
/// Messages are marked on the server once their effects are durable, in a
/// few large commands rather than one per chunk (the cursor, not the mark,
/// is what keeps a message from being processed twice).
///
/// `stop` turning true (shutdown, or this instance lost the inbox's lease)
/// ends a long backlog after the chunk in hand: the rest stays on the
/// server after the cursor, for whoever watches the inbox next.
async fn sync(
    cfg: &InboxConfig,
    session: &mut Session,
    engine: &Arc<Engine>,
    durable: &watch::Sender<u64>,
    uid_validity: u32,
    marker: &mut Marker<'_>,
    stop: &watch::Receiver<bool>,
) -> Result<usize, ImapError> {
    let store = engine.store().clone();
    let stored = store
        .cursor(&cfg.name)
        .map_err(crate::engine::EngineError::from)?;
    let last_uid = match stored {
        Some(c) if c.uid_validity == uid_validity => c.last_uid,
        Some(c) => {
            // The mailbox was recreated: UIDs mean something else now.
            // Rescan everything; the dedupe key (Message-ID, sender and
            // content) keeps it from reprocessing.
            tracing::warn!(inbox = %cfg.name, old = c.uid_validity, new = uid_validity, "UIDVALIDITY changed; rescanning the mailbox");
            0
        }
        None => 0,
    };
    let set = format!("{}:*", last_uid.saturating_add(1));
    let mut sizes: Vec<(u32, u32)> = timed(cfg, "UID FETCH (RFC822.SIZE)", async {
        let mut stream = session.uid_fetch(&set, "(UID RFC822.SIZE)").await?;
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let f = item?;
            if let (Some(uid), Some(size)) = (f.uid, f.size) {
                out.push((uid, size));
            }
        }
        Ok::<_, async_imap::error::Error>(out)
    })
    .await?;
    // `n:*` always matches the last message even when its UID is below n.
    sizes.retain(|&(uid, _)| uid > last_uid);
    sizes.sort_unstable();
    sizes.dedup_by_key(|(uid, _)| *uid);
    if sizes.is_empty() {
        // Nothing new; quarantine copies that failed earlier are retried.
        if !marker.uncopied.uids.is_empty() {
            marker.mark(session, &mut Vec::new(), &mut Vec::new()).await;
        }
        return Ok(0);
    }
    let found = sizes.len();
    let limit = engine.max_message_bytes();
    let chunks = plan_chunks(&sizes, limit);
    let mut remaining = sizes.len();
    let mut done: Vec<u32> = Vec::new();
    let mut quarantined: Vec<u32> = Vec::new();
    let mut next = fetch_bodies(cfg, session, &chunks[0], limit).await?;
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 && *stop.borrow() {
            break;
        }
        crate::metrics::set(&crate::metrics::METRICS.backlog, remaining as u64);
        let bodies = std::mem::take(&mut next);
        let work = tokio::task::spawn_blocking({
            let (engine, inbox, chunk, durable) = (
                engine.clone(),
                cfg.name.clone(),
                chunk.clone(),
                durable.clone(),
            );
            let parent = tracing::Span::current();
            move || {
                let batch = Batch {
                    inbox: &inbox,
                    uid_validity,
                    limit,
                    parent: &parent,
                };
                process_chunk(&engine, &batch, &chunk, bodies, &durable)
            }
        });
        let following = chunks.get(i + 1);
        let prefetch = async {
            match following {
                Some(c) => Some(fetch_bodies(cfg, session, c, limit).await),
                None => None,
            }
        };
        let (worked, fetched) = tokio::join!(work, prefetch);
        // Panics are caught per mail inside; a join error here is a bug
        // outside any one mail, so the session ends and is retried.
        let outcomes = worked.map_err(|e| ImapError::Command {
            inbox: cfg.name.clone(),
            command: "processing",
            reason: e.to_string(),
        })??;
        for (uid, was_quarantined) in outcomes {
            done.push(uid);
            if was_quarantined {
                quarantined.push(uid);
            }
        }
        remaining -= chunk.len();
        if let Some(fetched) = fetched {
            next = fetched?;
        }
        if done.len() >= MARK_EVERY {
            marker.mark(session, &mut done, &mut quarantined).await;
        }
    }
    marker.mark(session, &mut done, &mut quarantined).await;
    crate::metrics::set(&crate::metrics::METRICS.backlog, 0);
    Ok(found)
}

/// Splits the new messages into chunks of at most [`FETCH_CHUNK`] messages
/// and about [`FETCH_CHUNK_BYTES`] declared bytes (a chunk always takes at
/// least one message). Messages over `limit` cost nothing to fetch: they
/// are never downloaded.
fn plan_chunks(sizes: &[(u32, u32)], limit: usize) -> Vec<Vec<(u32, u32)>> {
    let mut chunks: Vec<Vec<(u32, u32)>> = Vec::new();
    let mut bytes = 0u64;
    for &(uid, size) in sizes {
        let cost = if size as usize > limit {
            0
        } else {
            size as u64
        };
        let start_new = match chunks.last() {
            None => true,
            Some(c) => c.len() >= FETCH_CHUNK || (bytes > 0 && bytes + cost > FETCH_CHUNK_BYTES),
        };
        if start_new {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += cost;
        chunks.last_mut().expect("pushed").push((uid, size));
    }
    chunks
}

/// Downloads the bodies of a chunk's messages that are within `limit`,
/// sorted by UID.
async fn fetch_bodies(
    cfg: &InboxConfig,
    session: &mut Session,
    chunk: &[(u32, u32)],
    limit: usize,
) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
    let small: Vec<u32> = chunk
        .iter()
        .filter(|(_, size)| (*size as usize) <= limit)
        .map(|(uid, _)| *uid)
        .collect();
    if small.is_empty() {
        return Ok(Vec::new());
    }
    let body_set = uid_set(&small);
    let mut fetched = timed(cfg, "UID FETCH", async {
        let mut stream = session.uid_fetch(&body_set, "(UID BODY.PEEK[])").await?;
        let mut out = Vec::new();
        // Drain the whole response before the next command.
        while let Some(item) = stream.next().await {
            let f = item?;
            if let (Some(uid), Some(body)) = (f.uid, f.body()) {
                out.push((uid, body.to_vec()));
            }
        }
        Ok::<_, async_imap::error::Error>(out)
    })
    .await?;
    fetched.sort_by_key(|(uid, _)| *uid);
    Ok(fetched)
}

/// Where a chunk came from, for [`process_chunk`].
struct Batch<'a> {
    inbox: &'a str,
    uid_validity: u32,
    /// Messages over this many bytes were not downloaded.
    limit: usize,
    /// The inbox's span, parent of each mail's span.
    parent: &'a tracing::Span,
}

/// Processes one fetched chunk through the engine and makes its effects
/// durable with one flush (group commit); the outbox may then send what it
/// queued. Runs on a blocking thread. Returns each processed UID and
/// whether it was quarantined.
fn process_chunk(
    engine: &Engine,
    batch: &Batch<'_>,
    chunk: &[(u32, u32)],
    bodies: Vec<(u32, Vec<u8>)>,
    durable: &watch::Sender<u64>,
) -> Result<Vec<(u32, bool)>, crate::engine::EngineError> {
    let (inbox, limit) = (batch.inbox, batch.limit);
    let raws: Vec<&[u8]> = bodies.iter().map(|(_, raw)| raw.as_slice()).collect();
    let mut parsed = engine.prefetch(&raws).into_iter();
    let mut bodies = bodies
        .iter()
        .map(|(uid, raw)| (*uid, raw, parsed.next().flatten()))
        .peekable();
    let mut out = Vec::with_capacity(chunk.len());
    let mut last_flush = std::time::Instant::now();
    for &(uid, size) in chunk {
        // A slow chunk is flushed on the way too: a crash then redoes at
        // most this much work, and the outbox starts sending earlier.
        if last_flush.elapsed() >= FLUSH_AFTER {
            crate::engine::flush_and_publish(engine.store().as_ref(), durable)?;
            last_flush = std::time::Instant::now();
        }
        let cursor = Cursor {
            uid_validity: batch.uid_validity,
            last_uid: uid,
        };
        let outcome = if (size as usize) > limit {
            engine.record_unread(
                inbox,
                cursor,
                &format!(
                    "message is {size} bytes, over the limit of {limit} bytes; not downloaded"
                ),
            )?
        } else {
            match bodies.next_if(|(u, _, _)| *u == uid) {
                Some((_, raw, parsed)) => {
                    // One span per mail: everything logged while it is
                    // decided carries its inbox, UID and Message-ID.
                    let span = tracing::info_span!(
                        parent: batch.parent,
                        "mail",
                        inbox = %inbox,
                        uid,
                        message_id = tracing::field::Empty,
                        class = tracing::field::Empty,
                        partner = tracing::field::Empty,
                        customer = tracing::field::Empty
                    );
                    let _entered = span.enter();
                    // A panic (a bug) while deciding one mail must not end
                    // the inbox, nor hit again after every restart: the
                    // mail is quarantined with the reason, the cursor moves
                    // past it. The engine's locks survive poisoning.
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        engine.process_parsed(inbox, cursor, raw, parsed)
                    }));
                    let outcome = match run {
                        Ok(outcome) => outcome?,
                        Err(payload) => {
                            let message = crate::engine::panic_message(payload.as_ref());
                            tracing::error!(inbox = %inbox, uid, panic = %message, "processing a mail panicked; quarantining it");
                            engine.record_internal_error(inbox, cursor, raw, &message)?
                        }
                    };
                    span.record("message_id", outcome.key.as_str());
                    span.record("class", outcome.class.as_str());
                    outcome
                }
                // Listed, but no body came back: usually expunged by someone
                // between the two fetches, possibly a server fault. The
                // cursor moves past it either way, so it is recorded (and
                // shown by `quarantine list`) instead of vanishing unseen.
                None => engine.record_unread(
                    inbox,
                    cursor,
                    &format!(
                        "the server listed UID {uid} ({size} bytes) but returned no body for it (expunged meanwhile, or a server fault); not processed"
                    ),
                )?,
            }
        };
        out.push((
            uid,
            outcome.class == liaison_core::effects::ProcessedClass::Quarantined,
        ));
        tracing::info!(
            inbox = %inbox,
            uid,
            message_id = %outcome.key,
            class = %outcome.class,
            summary = %outcome.summary,
            queued = outcome.queued.len(),
            "processed"
        );
    }
    crate::engine::flush_and_publish(engine.store().as_ref(), durable)?;
    Ok(out)
}

/// An IMAP sequence set for sorted UIDs, runs folded into ranges
/// (`1:500,502`), so a large set stays a short command.
fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j].wrapping_add(1) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            out.push_str(&format!("{}:{}", uids[i], uids[j]));
        } else {
            out.push_str(&uids[i].to_string());
        }
        i = j + 1;
    }
    out
}

/// Quarantined messages whose copy to the quarantine folder failed, by
/// UID, with how often it was tried; tried again at the next sync.
#[derive(Debug, Default)]
struct UncopiedQuarantine {
    /// The mailbox's UIDVALIDITY these UIDs belong to.
    uid_validity: u32,
    /// UID → failed attempts.
    uids: std::collections::BTreeMap<u32, u32>,
}

/// A failed quarantine copy is given up after this many attempts (the
/// message may have been expunged); it stays in the inbox, marked.
const COPY_ATTEMPTS: u32 = 10;

/// The folders Liaison files messages into, as the server names them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Folders {
    /// The server's hierarchy separator (`/` when it has none).
    separator: String,
    /// The quarantine folder.
    quarantine: String,
    /// How processed messages are marked (a move names the server's folder).
    processed: liaison_core::config::ProcessedMark,
}

impl Folders {
    /// Asks the server for its hierarchy separator (`LIST "" ""`) and
    /// names the configured folders with it. Configured names use `/`
    /// between levels whatever the server's separator is; a server that
    /// cannot be asked is assumed to use `/`.
    async fn on_server(cfg: &InboxConfig, session: &mut Session) -> Folders {
        let asked = timed(cfg, "LIST", async {
            // `None, None` is `LIST "" ""` (async-imap quotes the
            // reference but sends the pattern as given).
            let mut stream = session.list(None, None).await?;
            let mut separator = None;
            // Drain the whole response before the next command.
            while let Some(item) = stream.next().await {
                if let Some(d) = item?.delimiter() {
                    separator = Some(d.to_string());
                }
            }
            Ok::<_, async_imap::error::Error>(separator)
        })
        .await;
        let separator = match asked {
            Ok(Some(s)) if !s.is_empty() => s,
            Ok(_) => "/".to_string(),
            Err(e) => {
                tracing::warn!(inbox = %cfg.name, error = %e, "cannot ask the server for its hierarchy separator; assuming \"/\"");
                "/".to_string()
            }
        };
        Folders::with_separator(cfg, separator)
    }

    fn with_separator(cfg: &InboxConfig, separator: String) -> Folders {
        let name = |logical: &str| server_folder(logical, &separator);
        Folders {
            quarantine: name(&cfg.quarantine_folder),
            processed: match &cfg.processed {
                liaison_core::config::ProcessedMark::Move(f) => {
                    liaison_core::config::ProcessedMark::Move(name(f))
                }
                keyword => keyword.clone(),
            },
            separator,
        }
    }
}

/// Where processed mail goes when the configured keyword cannot be set
/// (the default `processed_folder` of move mode).
pub const FALLBACK_PROCESSED_FOLDER: &str = "Liaison/Processed";

impl Folders {
    /// These folders for a mailbox whose server allows no custom keywords,
    /// or `None` when the configured marking works there. Exchange Online
    /// (and any server or mailbox whose `PERMANENTFLAGS` lacks `\*`)
    /// refuses to store a keyword it does not list: marking processed mail
    /// would fail at every sync. Then processed mail is moved to
    /// [`FALLBACK_PROCESSED_FOLDER`] instead, which needs only the moves
    /// any server allows. An empty list means the server sent no
    /// `PERMANENTFLAGS` at all, and RFC 3501 then says every flag may be
    /// stored: the keyword is kept.
    fn without_keywords(&self, permanent: &[async_imap::types::Flag<'_>]) -> Option<Folders> {
        use async_imap::types::Flag;
        let liaison_core::config::ProcessedMark::Keyword(k) = &self.processed else {
            return None;
        };
        let allowed = permanent.is_empty()
            || permanent.iter().any(|f| match f {
                Flag::MayCreate => true,
                Flag::Custom(c) => c.eq_ignore_ascii_case(k),
                _ => false,
            });
        if allowed {
            return None;
        }
        Some(Folders {
            processed: liaison_core::config::ProcessedMark::Move(server_folder(
                FALLBACK_PROCESSED_FOLDER,
                &self.separator,
            )),
            ..self.clone()
        })
    }

    /// How processed mail is marked, for logs.
    fn processed_name(&self) -> String {
        match &self.processed {
            liaison_core::config::ProcessedMark::Keyword(k) => format!("keyword {k}"),
            liaison_core::config::ProcessedMark::Move(f) => f.clone(),
        }
    }
}

/// For `check-config`: logs in, selects the mailbox (read-write, as the
/// daemon does: a read-only EXAMINE lists no permanent flags at all) and,
/// when processed mail will be moved instead of marked with the configured
/// keyword (Exchange-like servers), says so, so the operator learns it
/// before the first mail.
pub async fn check_mailbox(
    cfg: &InboxConfig,
    login: &ImapLogin,
) -> Result<Option<String>, ImapError> {
    let mut session = connect(cfg, login).await?;
    let checked = async {
        let folders = Folders::on_server(cfg, &mut session).await;
        let mailbox = timed(cfg, "SELECT", session.select(&cfg.mailbox)).await?;
        Ok::<_, ImapError>(folders.without_keywords(&mailbox.permanent_flags).map(|moved| {
            format!(
                "the server allows no custom keywords here (PERMANENTFLAGS without \\*): processed mail will be moved to {} instead of marked with {}",
                moved.processed_name(),
                folders.processed_name()
            )
        }))
    }
    .await;
    let _ = timed(cfg, "LOGOUT", session.logout()).await;
    checked
}

/// A configured folder name (levels separated by `/`) as the server names
/// it with its hierarchy `separator`.
fn server_folder(logical: &str, separator: &str) -> String {
    logical.split('/').collect::<Vec<_>>().join(separator)
}

/// Marks processed messages on the server and files quarantined ones.
struct Marker<'a> {
    cfg: &'a InboxConfig,
    folders: &'a Folders,
    uncopied: &'a mut UncopiedQuarantine,
}

impl Marker<'_> {
    /// Copies the quarantined messages (and those whose copy failed before)
    /// to the quarantine folder, then marks every processed message as
    /// configured (keyword, or move), and forgets both lists. The two are
    /// independent: a failed copy is logged, counted and tried again at the
    /// next sync, and never keeps the rest from being marked (in move mode
    /// only the uncopied messages stay in the inbox, so the copy can be
    /// retried). A failed mark loses nothing either: the cursor and the
    /// dedupe key keep those messages from being processed twice.
    async fn mark(
        &mut self,
        session: &mut Session,
        done: &mut Vec<u32>,
        quarantined: &mut Vec<u32>,
    ) {
        let cfg = self.cfg;
        let mut to_copy: Vec<u32> = quarantined.clone();
        to_copy.extend(self.uncopied.uids.keys().copied());
        to_copy.sort_unstable();
        to_copy.dedup();
        let mut failed: Vec<u32> = Vec::new();
        if !to_copy.is_empty() {
            let copied = timed(
                cfg,
                "UID COPY (quarantine)",
                session.uid_copy(uid_set(&to_copy), &self.folders.quarantine),
            )
            .await;
            match copied {
                Ok(()) => self.uncopied.uids.clear(),
                Err(e) => {
                    crate::metrics::add(
                        &crate::metrics::METRICS.quarantine_copy_failures,
                        to_copy.len() as u64,
                    );
                    tracing::warn!(inbox = %cfg.name, folder = %self.folders.quarantine, messages = to_copy.len(), error = %e, "could not copy quarantined messages to the quarantine folder; will retry");
                    for &uid in &to_copy {
                        let tries = self.uncopied.uids.entry(uid).or_insert(0);
                        *tries += 1;
                        if *tries >= COPY_ATTEMPTS {
                            tracing::error!(inbox = %cfg.name, uid, folder = %self.folders.quarantine, "giving up copying a quarantined message after {COPY_ATTEMPTS} attempts; it stays in the inbox");
                            self.uncopied.uids.remove(&uid);
                        } else {
                            failed.push(uid);
                        }
                    }
                }
            }
        }
        let mut marked: Vec<u32> = done.iter().chain(&to_copy).copied().collect();
        marked.sort_unstable();
        marked.dedup();
        if matches!(
            self.folders.processed,
            liaison_core::config::ProcessedMark::Move(_)
        ) {
            marked.retain(|u| failed.binary_search(u).is_err());
        }
        done.clear();
        quarantined.clear();
        if marked.is_empty() {
            return;
        }
        let set = uid_set(&marked);
        let result = match &self.folders.processed {
            liaison_core::config::ProcessedMark::Move(folder) => {
                timed(cfg, "UID MOVE", session.uid_mv(&set, folder)).await
            }
            liaison_core::config::ProcessedMark::Keyword(k) => {
                timed(cfg, "UID STORE", async {
                    let stream = session
                        .uid_store(&set, format!("+FLAGS.SILENT ({k})"))
                        .await?;
                    let _: Vec<_> = stream.collect().await;
                    Ok::<_, async_imap::error::Error>(())
                })
                .await
            }
        };
        if let Err(e) = result {
            tracing::warn!(inbox = %cfg.name, error = %e, "could not mark processed messages on the server");
        }
    }
}

/// Creates the folders Liaison files messages into; an existing folder is
/// fine.
async fn ensure_folders(cfg: &InboxConfig, folders: &Folders, session: &mut Session) {
    let moved = match &folders.processed {
        liaison_core::config::ProcessedMark::Move(f) => Some(f),
        liaison_core::config::ProcessedMark::Keyword(_) => None,
    };
    for f in std::iter::once(&folders.quarantine).chain(moved) {
        match timed(cfg, "CREATE", session.create(f)).await {
            Ok(()) => tracing::info!(inbox = %cfg.name, folder = %f, "created folder"),
            Err(e) => {
                tracing::debug!(inbox = %cfg.name, folder = %f, error = %e, "folder not created (usually: exists)")
            }
        }
    }
}

/// Counts a connected session in the `imap_connected` gauge while it lives.
struct ConnectedGauge;

impl ConnectedGauge {
    fn new() -> Self {
        crate::metrics::add(&crate::metrics::METRICS.imap_connected, 1);
        ConnectedGauge
    }
}

impl Drop for ConnectedGauge {
    fn drop(&mut self) {
        crate::metrics::METRICS.imap_connected.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine over a fresh store in `dir`, with the shipped dev config.
    fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("config/liaison.dev.toml")).unwrap();
        let config = liaison_core::config::Config::parse(
            &text,
            &root.join("config/liaison.dev.toml"),
            &crate::files::EnvAndFiles,
        )
        .unwrap();
        let store =
            crate::store::SledStore::open(&dir.join("db"), 1 << 20, &dir.join("s.sock")).unwrap();
        let templates = crate::files::load_templates(&root.join("templates")).unwrap();
        Arc::new(Engine::new(
            Arc::new(config),
            Arc::new(store),
            templates,
            Arc::new(crate::clock::SystemClock),
        ))
    }

    #[test]
    fn a_listed_message_without_a_body_is_recorded_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let (durable, _rx) = watch::channel(0);
        let parent = tracing::Span::none();
        let batch = Batch {
            inbox: "invites",
            uid_validity: 7,
            limit: 1 << 20,
            parent: &parent,
        };
        let raw = b"From: dave@fabrikam.test\r\nTo: invites@liaison.test\r\nSubject: x\r\nMessage-ID: <x@f.test>\r\n\r\nhello\r\n".to_vec();
        // UID 5 was listed but the body fetch returned only UID 6.
        let out = process_chunk(
            &engine,
            &batch,
            &[(5, 100), (6, 100)],
            vec![(6, raw)],
            &durable,
        )
        .unwrap();
        assert_eq!(out.iter().map(|(u, _)| *u).collect::<Vec<_>>(), [5, 6]);
        let store = engine.store();
        let q = store.quarantined().unwrap();
        assert_eq!(q.len(), 1, "{q:?}");
        assert!(q[0].summary.contains("returned no body"), "{:?}", q[0]);
        assert_eq!(store.cursor("invites").unwrap().unwrap().last_uid, 6);
    }

    #[test]
    fn a_server_without_custom_keywords_gets_moves() {
        use async_imap::types::Flag;
        let folders = |processed| Folders {
            separator: ".".into(),
            quarantine: "Liaison.Quarantine".into(),
            processed,
        };
        let keyword = folders(liaison_core::config::ProcessedMark::Keyword(
            "$LiaisonProcessed".into(),
        ));
        // Exchange Online: system flags and $MDNSent, no \*.
        let exchange = [
            Flag::Seen,
            Flag::Answered,
            Flag::Flagged,
            Flag::Deleted,
            Flag::Draft,
            Flag::Custom("$MDNSent".into()),
        ];
        let moved = keyword.without_keywords(&exchange).expect("falls back");
        assert_eq!(
            moved.processed,
            liaison_core::config::ProcessedMark::Move("Liaison.Processed".into())
        );
        assert_eq!(moved.quarantine, "Liaison.Quarantine");
        // \* allows any keyword; a listed keyword is allowed; no
        // PERMANENTFLAGS at all means everything may be stored.
        assert_eq!(
            keyword.without_keywords(&[Flag::Seen, Flag::MayCreate]),
            None
        );
        assert_eq!(
            keyword.without_keywords(&[Flag::Seen, Flag::Custom("$liaisonprocessed".into())]),
            None
        );
        assert_eq!(keyword.without_keywords(&[]), None);
        // Move mode needs no keyword.
        let moving = folders(liaison_core::config::ProcessedMark::Move("Done".into()));
        assert_eq!(moving.without_keywords(&exchange), None);
    }

    #[test]
    fn folder_names_use_the_servers_separator() {
        assert_eq!(
            server_folder("Liaison/Quarantine", "."),
            "Liaison.Quarantine"
        );
        assert_eq!(
            server_folder("Liaison/Quarantine", "/"),
            "Liaison/Quarantine"
        );
        assert_eq!(server_folder("Quarantine", "."), "Quarantine");
    }

    #[test]
    fn only_new_mail_notices_count_and_all_are_taken() {
        use async_imap::types::UnsolicitedResponse as U;
        let mut q = vec![U::Expunge(3), U::Exists(7), U::Expunge(1)];
        assert!(new_mail_noticed(|| q.pop()));
        assert!(q.is_empty());
        let mut q = vec![U::Expunge(3)];
        assert!(!new_mail_noticed(|| q.pop()));
        assert!(!new_mail_noticed(|| None));
    }

    #[test]
    fn uid_sets_fold_runs_into_ranges() {
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[7]), "7");
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        let many: Vec<u32> = (1..=10_000).filter(|u| u % 1000 != 0).collect();
        let set = uid_set(&many);
        assert!(set.starts_with("1:999,1001:1999,"), "{set}");
        assert_eq!(set.split(',').count(), 10);
    }

    #[test]
    fn chunks_are_bounded_by_count_and_bytes() {
        let limit = 10 << 20;
        // Count bound.
        let sizes: Vec<(u32, u32)> = (1..=1200).map(|u| (u, 1000)).collect();
        let chunks = plan_chunks(&sizes, limit);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [FETCH_CHUNK, FETCH_CHUNK, 200]
        );
        // Byte bound: 6 MiB messages, two to a chunk (16 MiB).
        let sizes: Vec<(u32, u32)> = (1..=5).map(|u| (u, 6 << 20)).collect();
        let chunks = plan_chunks(&sizes, limit);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        // An oversized message costs nothing (never downloaded), and one
        // message larger than the chunk budget still gets a chunk.
        let sizes = [(1, 20 << 20), (2, 100), (3, 100)];
        assert_eq!(plan_chunks(&sizes, 10 << 20).len(), 1);
        let sizes = [(1, 20 << 20), (2, 100)];
        assert_eq!(
            plan_chunks(&sizes, 64 << 20)
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>(),
            [1, 1]
        );
        // Every message lands in exactly one chunk, in order.
        let flat: Vec<u32> = plan_chunks(&[(3, 1), (9, 2), (11, 3)], limit)
            .concat()
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        assert_eq!(flat, [3, 9, 11]);
    }
}
