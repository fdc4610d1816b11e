//! Process-wide counters for observability, rendered in the Prometheus text
//! format. Plain atomics: incrementing one costs a few nanoseconds and
//! needs no lock, so the hot paths can count freely.

use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter and gauge Liaison exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Inbound mails processed, by class.
    pub mails_command: AtomicU64,
    /// Customer mails processed.
    pub mails_customer: AtomicU64,
    /// Mails ignored (strangers, forgeries, auto-replies…).
    pub mails_ignored: AtomicU64,
    /// Mails quarantined (unparseable, oversized…).
    pub mails_quarantined: AtomicU64,
    /// Duplicates skipped (already processed).
    pub mails_duplicate: AtomicU64,
    /// Invitations and restore requests sent (queued).
    pub invitations_sent: AtomicU64,
    /// Relationships that became active.
    pub acceptances: AtomicU64,
    /// Tickets opened.
    pub tickets_opened: AtomicU64,
    /// Mails handed to SMTP successfully.
    pub smtp_sent: AtomicU64,
    /// SMTP attempts that failed (temporarily or for good).
    pub smtp_failures: AtomicU64,
    /// IMAP sessions that ended with an error and were reconnected.
    pub imap_reconnects: AtomicU64,
    /// Pending outbox entries (gauge, set by the sender).
    pub outbox_depth: AtomicU64,
    /// Messages fetched but not yet processed (gauge, set by the watchers).
    pub backlog: AtomicU64,
    /// Inbox sessions currently connected (gauge).
    pub imap_connected: AtomicU64,
    /// 1 when the last SMTP attempt succeeded, 0 after a failure (gauge).
    pub smtp_ok: AtomicU64,
    /// Mails whose processing panicked (each one quarantined).
    pub processing_panics: AtomicU64,
    /// Quarantined mails whose copy to the quarantine folder failed (retried
    /// at the next sync).
    pub quarantine_copy_failures: AtomicU64,
    /// Mails a cap held back (counter).
    pub mails_held: AtomicU64,
    /// Mails held back now, waiting for release (gauge).
    pub held_now: AtomicU64,
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics {
    mails_command: AtomicU64::new(0),
    mails_customer: AtomicU64::new(0),
    mails_ignored: AtomicU64::new(0),
    mails_quarantined: AtomicU64::new(0),
    mails_duplicate: AtomicU64::new(0),
    invitations_sent: AtomicU64::new(0),
    acceptances: AtomicU64::new(0),
    tickets_opened: AtomicU64::new(0),
    smtp_sent: AtomicU64::new(0),
    smtp_failures: AtomicU64::new(0),
    imap_reconnects: AtomicU64::new(0),
    outbox_depth: AtomicU64::new(0),
    backlog: AtomicU64::new(0),
    imap_connected: AtomicU64::new(0),
    smtp_ok: AtomicU64::new(1),
    processing_panics: AtomicU64::new(0),
    quarantine_copy_failures: AtomicU64::new(0),
    mails_held: AtomicU64::new(0),
    held_now: AtomicU64::new(0),
};

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Sets a gauge.
pub fn set(gauge: &AtomicU64, v: u64) {
    gauge.store(v, Ordering::Relaxed);
}

/// Counts one processed mail of `class` (as named by the engine).
pub fn count_class(class: liaison_core::effects::ProcessedClass) {
    use liaison_core::effects::ProcessedClass as C;
    let m = &METRICS;
    let c = match class {
        C::Command | C::Import => &m.mails_command,
        C::Customer => &m.mails_customer,
        C::Quarantined => &m.mails_quarantined,
        C::Duplicate => &m.mails_duplicate,
        C::Ignored | C::Timer | C::Bounce | C::Graph => &m.mails_ignored,
    };
    add(c, 1);
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, v) in samples {
                out.push_str(&format!("{name}{labels} {v}\n"));
            }
        };
        metric(
            "liaison_mails_total",
            "counter",
            "Inbound mails processed, by class.",
            &[
                ("{class=\"command\"}", g(&self.mails_command)),
                ("{class=\"customer\"}", g(&self.mails_customer)),
                ("{class=\"ignored\"}", g(&self.mails_ignored)),
                ("{class=\"quarantined\"}", g(&self.mails_quarantined)),
                ("{class=\"duplicate\"}", g(&self.mails_duplicate)),
            ],
        );
        metric(
            "liaison_invitations_sent_total",
            "counter",
            "Invitations and restore requests queued.",
            &[("", g(&self.invitations_sent))],
        );
        metric(
            "liaison_acceptances_total",
            "counter",
            "Relationships that became active.",
            &[("", g(&self.acceptances))],
        );
        metric(
            "liaison_tickets_opened_total",
            "counter",
            "Support tickets opened.",
            &[("", g(&self.tickets_opened))],
        );
        metric(
            "liaison_quarantined_total",
            "counter",
            "Mails quarantined.",
            &[("", g(&self.mails_quarantined))],
        );
        metric(
            "liaison_smtp_sent_total",
            "counter",
            "Mails accepted by the SMTP server.",
            &[("", g(&self.smtp_sent))],
        );
        metric(
            "liaison_send_failures_total",
            "counter",
            "Failed SMTP attempts.",
            &[("", g(&self.smtp_failures))],
        );
        metric(
            "liaison_imap_reconnects_total",
            "counter",
            "IMAP sessions that ended with an error.",
            &[("", g(&self.imap_reconnects))],
        );
        metric(
            "liaison_mails_held_total",
            "counter",
            "Mails a cap held back instead of sending.",
            &[("", g(&self.mails_held))],
        );
        metric(
            "liaison_mails_held",
            "gauge",
            "Mails held back now, waiting for `liaison held release`.",
            &[("", g(&self.held_now))],
        );
        metric(
            "liaison_outbox_depth",
            "gauge",
            "Mails waiting to be sent.",
            &[("", g(&self.outbox_depth))],
        );
        metric(
            "liaison_backlog",
            "gauge",
            "Fetched messages not yet processed.",
            &[("", g(&self.backlog))],
        );
        metric(
            "liaison_imap_connected",
            "gauge",
            "Inbox sessions connected.",
            &[("", g(&self.imap_connected))],
        );
        metric(
            "liaison_smtp_up",
            "gauge",
            "1 when the last SMTP attempt succeeded.",
            &[("", g(&self.smtp_ok))],
        );
        metric(
            "liaison_processing_panics_total",
            "counter",
            "Mails whose processing hit an internal error (quarantined).",
            &[("", g(&self.processing_panics))],
        );
        metric(
            "liaison_quarantine_copy_failures_total",
            "counter",
            "Failed copies of quarantined mails to the quarantine folder.",
            &[("", g(&self.quarantine_copy_failures))],
        );
        out
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
    }
}
