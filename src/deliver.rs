//! MTA pipe delivery: `liaison deliver --inbox NAME < message`.
//!
//! An operator whose own Postfix or Exim hands mail to a program (a
//! `pipe(8)` transport, a `.forward` line) gets a second inbound path beside
//! IMAP. The message goes through exactly what a fetched one goes through:
//! the same dedupe key, decision and single atomic commit
//! ([`crate::engine::Engine::process_piped`]). It is taken by the running
//! daemon over the admin socket when one runs (sled allows one process per
//! database), or by this process straight in the store when none does.
//! With PostgreSQL the store is shared: without a daemon on this host's
//! socket, this process is one more instance for the length of one
//! message. Its decision takes its turn with the other instances'
//! ([`crate::store::Store::begin_decision`]), it commits no cursor (so it
//! needs no inbox lease), and the mails it queues are sent by whichever
//! instance's outbox polls next.
//!
//! The exit status follows sysexits(3), because it is all the MTA reads:
//! * 0 when the message was processed, quarantined, or had been processed
//!   before (an MTA retry of the same message is a duplicate, not a second
//!   decision). Malformed mail is quarantined, never bounced: a bounce
//!   would go to whoever the malformed mail claims to be from.
//! * 75 (`EX_TEMPFAIL`) when it could not be taken now: the store is locked
//!   or unreachable, the daemon is busy or failed. The MTA keeps the
//!   message and tries again; nothing was committed, or a commit happened
//!   and the retry is a duplicate.
//! * 64 (`EX_USAGE`) for an `--inbox` the configuration does not name: a
//!   mistake in the MTA's configuration, which retrying cannot fix.
//!
//! Success is only answered after the commit is flushed, so a 0 never
//! stands for a message a crash could still lose.

use liaison_core::config::Config;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::time::Duration;

/// sysexits(3) exit statuses of `liaison deliver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `EX_OK`: processed, quarantined or already processed.
    Delivered = 0,
    /// `EX_USAGE`: unknown `--inbox`.
    Usage = 64,
    /// `EX_TEMPFAIL`: try again later.
    TempFail = 75,
}

/// Why a message could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// `--inbox` names no configured inbox.
    #[error("no inbox `{inbox}` in the configuration (configured: {known})")]
    UnknownInbox {
        /// The name given.
        inbox: String,
        /// The configured names.
        known: String,
    },
    /// Standard input could not be read.
    #[error("cannot read the message from standard input: {0}")]
    Stdin(#[source] std::io::Error),
    /// The running daemon refused or failed.
    #[error("the running daemon did not take the message: {0}")]
    Daemon(String),
    /// The mail is quarantined but cannot be kept: the MTA must keep it.
    #[error("not taken now: {0}")]
    NoRoom(String),
    /// The running daemon did not answer in time.
    #[error("the running daemon did not answer within {0} s (busy); the MTA will retry")]
    Busy(u64),
    /// No daemon runs, and the store or the templates could not be used.
    #[error(transparent)]
    Offline(#[from] crate::daemon::DaemonError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Processing failed in the store.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

impl DeliverError {
    /// The exit status the MTA should see.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            DeliverError::UnknownInbox { .. } => ExitStatus::Usage,
            _ => ExitStatus::TempFail,
        }
    }
}

/// A message as the MTA handed it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipedMessage {
    /// Its bytes; empty when it is over the size limit (not kept).
    pub raw: Vec<u8>,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of all its bytes (hex): what identifies a message that is
    /// over the limit, or cannot be parsed, so an MTA retry of it lands on
    /// the same record.
    pub digest: String,
}

/// Reads the whole message from `input`, keeping at most `limit` bytes: a
/// larger message is read to its end (the MTA must see it consumed) and
/// only its size and digest are kept.
pub fn read_message(mut input: impl Read, limit: usize) -> std::io::Result<PipedMessage> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut raw = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
        if size <= limit as u64 {
            raw.extend_from_slice(&buf[..n]);
        } else {
            raw = Vec::new();
        }
    }
    Ok(PipedMessage {
        raw,
        size,
        digest: data_encoding::HEXLOWER.encode(&hasher.finalize()),
    })
}

/// What became of a delivered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// Its dedupe key (or quarantine key).
    pub key: String,
    /// `command`, `customer`, `ignored`, `quarantined`, `duplicate`, …
    pub class: String,
    /// What happened.
    pub summary: String,
    /// Whether the running daemon took it (else this process, in the
    /// store).
    pub by_daemon: bool,
}

/// How long the daemon may take to answer before the MTA is told to retry.
/// Generous: a retry after a late commit is a duplicate, but a retry costs
/// the MTA a queue run.
pub const DAEMON_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// [`DAEMON_ANSWER_TIMEOUT`], except in debug builds run with
/// `LIAISON_TEST_DELIVER_TIMEOUT_SECS` set: the end-to-end test of a busy
/// daemon does not wait a minute. Release builds have no such knob.
fn daemon_answer_timeout() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(secs) = std::env::var("LIAISON_TEST_DELIVER_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_secs(secs);
    }
    DAEMON_ANSWER_TIMEOUT
}

/// Hands `message` to the running daemon, or, when none runs, processes it
/// in the store directly.
pub async fn deliver(
    config: &Config,
    inbox: &str,
    message: PipedMessage,
) -> Result<Delivered, DeliverError> {
    if !config.inboxes.iter().any(|i| i.name == inbox) {
        return Err(DeliverError::UnknownInbox {
            inbox: inbox.to_string(),
            known: config
                .inboxes
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let request = crate::io::admin::Request::Deliver {
        inbox: inbox.to_string(),
        bytes: message.raw.len() as u64,
        size: message.size,
        digest: message.digest.clone(),
    };
    let timeout = daemon_answer_timeout();
    let asked = tokio::time::timeout(
        timeout,
        crate::io::admin::request_with_body(&config.admin_socket, &request, &message.raw),
    )
    .await;
    match asked {
        Ok(Ok(v)) => serde_json::from_value(v).map_err(|e| DeliverError::Daemon(e.to_string())),
        // No daemon listens (no socket, or one left by a daemon that was
        // killed): the store is ours to open, if nobody else has it.
        Ok(Err(crate::io::admin::AdminError::Io { source, .. }))
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            let config = config.clone();
            let inbox = inbox.to_string();
            tokio::task::spawn_blocking(move || deliver_to_store(&config, &inbox, &message))
                .await
                .map_err(|e| DeliverError::Daemon(format!("processing failed: {e}")))?
        }
        Ok(Err(e)) => Err(DeliverError::Daemon(e.to_string())),
        Err(_) => Err(DeliverError::Busy(timeout.as_secs())),
    }
}

/// Processes `message` straight in the store (no daemon runs) and flushes
/// before answering. Mails it queues are sent when the daemon starts.
pub fn deliver_to_store(
    config: &Config,
    inbox: &str,
    message: &PipedMessage,
) -> Result<Delivered, DeliverError> {
    let engine = crate::daemon::offline_engine(config)?;
    let outcome = engine
        .process_piped(inbox, &message.raw, message.size, &message.digest)?
        .map_err(DeliverError::NoRoom)?;
    engine.store().flush()?;
    Ok(Delivered {
        key: outcome.key,
        class: outcome.class.to_string(),
        summary: outcome.summary,
        by_daemon: false,
    })
}

/// The daemon's side (admin request `deliver`): processes the message and
/// makes it durable before answering; the outbox may then send what it
/// queued. Runs on a blocking thread.
pub fn take(
    engine: &crate::engine::Engine,
    durable: &tokio::sync::watch::Sender<u64>,
    inbox: &str,
    message: &PipedMessage,
) -> Result<Delivered, String> {
    if !engine.has_inbox(inbox) {
        return Err(format!("no inbox `{inbox}` in the daemon's configuration"));
    }
    let outcome = engine
        .process_piped(inbox, &message.raw, message.size, &message.digest)
        .map_err(|e| e.to_string())??;
    crate::engine::flush_and_publish(engine.store().as_ref(), durable)
        .map_err(|e| e.to_string())?;
    tracing::info!(inbox = %inbox, message_id = %outcome.key, class = %outcome.class, summary = %outcome.summary, queued = outcome.queued.len(), "processed (pipe delivery)");
    Ok(Delivered {
        key: outcome.key,
        class: outcome.class.to_string(),
        summary: outcome.summary,
        by_daemon: true,
    })
}

/// `liaison deliver`: reads standard input, delivers, prints one line for
/// the MTA's log (pipe(8) quotes a failing command's output in its defer
/// notice), and returns the exit status.
pub async fn run(config: &Config, inbox: &str) -> ExitStatus {
    let limit = config.security.max_message_bytes;
    let read = tokio::task::spawn_blocking(move || read_message(std::io::stdin().lock(), limit))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let result = match read {
        Ok(message) => deliver(config, inbox, message).await,
        Err(e) => Err(DeliverError::Stdin(e)),
    };
    match result {
        Ok(d) => {
            println!(
                "liaison deliver: {} {} ({})",
                d.class,
                crate::io::admin::printable(&d.key),
                crate::io::admin::printable(&d.summary)
            );
            ExitStatus::Delivered
        }
        Err(e) => {
            let status = e.exit_status();
            println!("liaison deliver: {e}");
            status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_read_whole_and_an_oversized_one_only_counted() {
        let m = read_message(&b"Subject: x\r\n\r\nhello\r\n"[..], 100).unwrap();
        assert_eq!(m.raw, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(m.size, 21);
        assert_eq!(m.digest.len(), 64);
        // Larger than the buffer and than the limit: read to the end.
        let big = vec![b'x'; 200_000];
        let m = read_message(&big[..], 100_000).unwrap();
        assert!(m.raw.is_empty());
        assert_eq!(m.size, 200_000);
        // The same bytes, the same digest (an MTA retry).
        assert_eq!(read_message(&big[..], 10).unwrap().digest, m.digest);
        assert_ne!(read_message(&big[..1000], 10).unwrap().digest, m.digest);
        // Exactly the limit is kept.
        let m = read_message(&big[..100_000], 100_000).unwrap();
        assert_eq!(m.raw.len(), 100_000);
    }

    #[test]
    fn only_an_unknown_inbox_is_a_usage_error() {
        let unknown = DeliverError::UnknownInbox {
            inbox: "x".into(),
            known: "invites".into(),
        };
        assert_eq!(unknown.exit_status() as i32, 64);
        assert_eq!(DeliverError::Busy(60).exit_status() as i32, 75);
        assert_eq!(
            DeliverError::Daemon("store failed".into()).exit_status() as i32,
            75
        );
        assert_eq!(ExitStatus::Delivered as i32, 0);
    }
}
