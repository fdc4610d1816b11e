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
//! lettre's pooled transport keeps connections open; every send is wrapped
//! in a timeout because a silent network can hang it. 4xx replies and
//! connection errors are retried with exponential backoff; 5xx replies are
//! permanent, recorded as failed, and reported to the partner when the
//! mail carried an invitation.

use crate::clock::Clock;
use crate::config::{SmtpConfig, TlsMode};
use crate::store::{OutboxEntry, OutgoingMail, Store};
use futures::StreamExt;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;
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
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    timeout: Duration,
    /// Parallel deliveries.
    pub parallel: usize,
}

impl Mailer {
    /// Builds the transport; must be called inside the tokio runtime.
    pub fn new(cfg: &SmtpConfig) -> Result<Self, SmtpError> {
        let setup = |reason: String| SmtpError::Setup {
            host: cfg.host.clone(),
            port: cfg.port,
            reason,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .timeout(Some(Duration::from_secs(cfg.timeout_secs)))
            .pool_config(PoolConfig::new().max_size(cfg.max_connections));
        b = match cfg.tls {
            TlsMode::None => b.tls(Tls::None),
            TlsMode::Starttls | TlsMode::Tls => {
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
                let params = params.build_rustls().map_err(|e| setup(e.to_string()))?;
                if cfg.tls == TlsMode::Tls {
                    b.tls(Tls::Wrapper(params))
                } else {
                    b.tls(Tls::Required(params))
                }
            }
        };
        if let (Some(user), Some(pass)) = (&cfg.username, &cfg.password) {
            b = b.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        Ok(Mailer {
            transport: b.build(),
            timeout: Duration::from_secs(cfg.timeout_secs),
            parallel: cfg.max_connections as usize,
        })
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
        match tokio::time::timeout(
            self.timeout,
            self.transport.send_raw(&envelope, mail.raw.as_bytes()),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(err("permanent", e.to_string())),
            Ok(Err(e)) => Err(err("temporary", e.to_string())),
            Err(_) => Err(err(
                "temporary",
                format!("no answer within {:?}", self.timeout),
            )),
        }
    }

    /// Checks the server answers (EHLO/NOOP), for `check-config`.
    pub async fn check(&self) -> Result<bool, SmtpError> {
        tokio::time::timeout(self.timeout, self.transport.test_connection())
            .await
            .map_err(|_| SmtpError::Setup {
                host: String::new(),
                port: 0,
                reason: "timed out".into(),
            })?
            .map_err(|e| SmtpError::Setup {
                host: String::new(),
                port: 0,
                reason: e.to_string(),
            })
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
