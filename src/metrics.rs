//! Process-wide counters and gauges, exported in the Prometheus text format
//! by the [`prometheus`] crate (its registry and text encoder replace the
//! hand-written renderer this module had).
//!
//! Why `prometheus` rather than `prometheus-client` or the `metrics`
//! facade: it writes the classic text format (`text/plain; version=0.0.4`,
//! `# TYPE liaison_mails_total counter`), so every name, type line and
//! content type scrapers see stays exactly what the README documents, and
//! its counters and gauges can be read back, which `/healthz` needs
//! (`prometheus-client` writes OpenMetrics, whose `# TYPE` lines drop the
//! `_total`; the `metrics` facade cannot be read). Each counter is an
//! atomic inside: incrementing one costs a few nanoseconds and takes no
//! lock, so the hot paths can count freely.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use std::sync::LazyLock;

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every counter and gauge Liaison exports, registered in its own
/// [`Registry`] (tests make their own instances; the daemon uses
/// [`METRICS`]).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Inbound mails processed, by class: command.
    pub mails_command: IntCounter,
    /// Customer mails processed.
    pub mails_customer: IntCounter,
    /// Mails ignored (strangers, forgeries, auto-replies…).
    pub mails_ignored: IntCounter,
    /// Mails quarantined (unparseable, oversized…), as a class of
    /// `liaison_mails_total`.
    pub mails_quarantined: IntCounter,
    /// Duplicates skipped (already processed).
    pub mails_duplicate: IntCounter,
    /// Mails quarantined, as its own counter (`liaison_quarantined_total`,
    /// the one alerts use and `/healthz` reports).
    pub quarantined: IntCounter,
    /// Invitations and restore requests sent (queued).
    pub invitations_sent: IntCounter,
    /// Relationships that became active.
    pub acceptances: IntCounter,
    /// Tickets opened.
    pub tickets_opened: IntCounter,
    /// Mails handed to SMTP successfully.
    pub smtp_sent: IntCounter,
    /// SMTP attempts that failed (temporarily or for good).
    pub smtp_failures: IntCounter,
    /// IMAP sessions that ended with an error and were reconnected.
    pub imap_reconnects: IntCounter,
    /// Pending outbox entries (gauge, set by the sender).
    pub outbox_depth: IntGauge,
    /// Messages fetched but not yet processed (gauge, set by the watchers).
    pub backlog: IntGauge,
    /// Inbox sessions currently connected (gauge).
    pub imap_connected: IntGauge,
    /// 1 when the last SMTP attempt succeeded, 0 after a failure (gauge).
    pub smtp_ok: IntGauge,
    /// Mails whose processing panicked (each one quarantined).
    pub processing_panics: IntCounter,
    /// Quarantined mails whose copy to the quarantine folder failed (retried
    /// at the next sync).
    pub quarantine_copy_failures: IntCounter,
    /// Mails a cap held back (counter).
    pub mails_held: IntCounter,
    /// Mails held back now, waiting for release (gauge).
    pub held_now: IntGauge,
    /// Throttling answers from the provider (each paused the sender).
    pub smtp_throttled: IntCounter,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// Something a count can be added to: a counter, or a gauge that moves up
/// (sessions connected, mails held).
pub trait Addable {
    /// Adds `n`.
    fn add_n(&self, n: u64);
}

impl Addable for IntCounter {
    fn add_n(&self, n: u64) {
        self.inc_by(n);
    }
}

impl Addable for IntGauge {
    fn add_n(&self, n: u64) {
        self.add(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Adds `n` to a counter (or an upward-moving gauge).
pub fn add(metric: &impl Addable, n: u64) {
    metric.add_n(n);
}

/// Sets a gauge.
pub fn set(gauge: &IntGauge, v: u64) {
    gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
}

/// A gauge's value as the unsigned number it counts.
pub fn get(gauge: &IntGauge) -> u64 {
    u64::try_from(gauge.get()).unwrap_or(0)
}

/// Counts one processed mail of `class` (as named by the engine).
pub fn count_class(class: liaison_core::effects::ProcessedClass) {
    use liaison_core::effects::ProcessedClass as C;
    let m = &*METRICS;
    match class {
        C::Command | C::Import => m.mails_command.inc(),
        C::Customer => m.mails_customer.inc(),
        C::Quarantined => {
            m.mails_quarantined.inc();
            m.quarantined.inc();
        }
        C::Duplicate => m.mails_duplicate.inc(),
        C::Ignored | C::Timer | C::Bounce | C::Graph => m.mails_ignored.inc(),
        // Not a mail: its effects (acceptances, …) are counted as such.
        C::Web => {}
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(name, help)).expect("a valid metric name");
            registry
                .register(Box::new(c.clone()))
                .expect("each name is registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help)).expect("a valid metric name");
            registry
                .register(Box::new(g.clone()))
                .expect("each name is registered once");
            g
        };
        let mails = IntCounterVec::new(
            Opts::new("liaison_mails_total", "Inbound mails processed, by class."),
            &["class"],
        )
        .expect("a valid metric name");
        registry
            .register(Box::new(mails.clone()))
            .expect("each name is registered once");
        // Every class exists from the start, at 0, so a scraper sees the
        // whole family before the first mail.
        let class = |c: &str| mails.with_label_values(&[c]);
        let m = Metrics {
            mails_command: class("command"),
            mails_customer: class("customer"),
            mails_ignored: class("ignored"),
            mails_quarantined: class("quarantined"),
            mails_duplicate: class("duplicate"),
            invitations_sent: counter(
                "liaison_invitations_sent_total",
                "Invitations and restore requests queued.",
            ),
            acceptances: counter(
                "liaison_acceptances_total",
                "Relationships that became active.",
            ),
            tickets_opened: counter("liaison_tickets_opened_total", "Support tickets opened."),
            quarantined: counter("liaison_quarantined_total", "Mails quarantined."),
            smtp_sent: counter(
                "liaison_smtp_sent_total",
                "Mails accepted by the SMTP server.",
            ),
            smtp_failures: counter("liaison_send_failures_total", "Failed SMTP attempts."),
            smtp_throttled: counter(
                "liaison_smtp_throttled_total",
                "Throttling answers from the SMTP provider; each paused all sending.",
            ),
            imap_reconnects: counter(
                "liaison_imap_reconnects_total",
                "IMAP sessions that ended with an error.",
            ),
            mails_held: counter(
                "liaison_mails_held_total",
                "Mails a cap held back instead of sending.",
            ),
            held_now: gauge(
                "liaison_mails_held",
                "Mails held back now, waiting for `liaison held release`.",
            ),
            outbox_depth: gauge("liaison_outbox_depth", "Mails waiting to be sent."),
            backlog: gauge("liaison_backlog", "Fetched messages not yet processed."),
            imap_connected: gauge("liaison_imap_connected", "Inbox sessions connected."),
            smtp_ok: gauge("liaison_smtp_up", "1 when the last SMTP attempt succeeded."),
            processing_panics: counter(
                "liaison_processing_panics_total",
                "Mails whose processing hit an internal error (quarantined).",
            ),
            quarantine_copy_failures: counter(
                "liaison_quarantine_copy_failures_total",
                "Failed copies of quarantined mails to the quarantine folder.",
            ),
            registry,
        };
        // Nothing has failed yet.
        m.smtp_ok.set(1);
        m
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory and every metric is valid");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        add(&m.mails_command, 3);
        set(&m.outbox_depth, 7);
        let text = m.render();
        assert!(
            text.contains("liaison_mails_total{class=\"command\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE liaison_outbox_depth gauge\nliaison_outbox_depth 7\n"),
            "{text}"
        );
        add(&m.mails_held, 2);
        set(&m.held_now, 1);
        let text = m.render();
        assert!(text.contains("liaison_mails_held_total 2\n"), "{text}");
        assert!(
            text.contains("# TYPE liaison_mails_held gauge\nliaison_mails_held 1\n"),
            "{text}"
        );
        // The classic format: the type line names the sample, `_total` and all.
        assert!(
            text.contains("# TYPE liaison_mails_total counter\n"),
            "{text}"
        );
        assert!(text.contains("liaison_send_failures_total 0\n"), "{text}");
        assert!(text.contains("liaison_smtp_up 1\n"), "{text}");
    }

    #[test]
    fn every_documented_metric_is_exported() {
        let text = Metrics::default().render();
        for name in [
            "liaison_mails_total{class=\"command\"}",
            "liaison_mails_total{class=\"customer\"}",
            "liaison_mails_total{class=\"ignored\"}",
            "liaison_mails_total{class=\"quarantined\"}",
            "liaison_mails_total{class=\"duplicate\"}",
            "liaison_invitations_sent_total",
            "liaison_acceptances_total",
            "liaison_tickets_opened_total",
            "liaison_quarantined_total",
            "liaison_smtp_sent_total",
            "liaison_send_failures_total",
            "liaison_imap_reconnects_total",
            "liaison_mails_held_total",
            "liaison_mails_held",
            "liaison_outbox_depth",
            "liaison_backlog",
            "liaison_imap_connected",
            "liaison_smtp_up",
            "liaison_processing_panics_total",
            "liaison_quarantine_copy_failures_total",
        ] {
            assert!(
                text.lines().any(|l| l.split(' ').next() == Some(name)),
                "{name} missing:\n{text}"
            );
        }
    }
}
