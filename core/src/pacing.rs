//! Provider sending limits: how fast the outbox may hand mail to the SMTP
//! server, and what to do when the provider says "too fast".
//!
//! Hosted mailboxes cap what one mailbox may send. Exchange Online allows
//! 30 messages a minute and 10 000 recipients a day per mailbox; past that
//! it answers `554 5.2.0 STOREDRV.Submission.Exception:
//! SubmissionQuotaExceededException` (a *permanent* code for a temporary
//! condition), `421 4.7.x` or another `4.x.x`. Gmail answers `421 4.7.0` or
//! `550 5.4.5 Daily user sending limit exceeded`. A bulk `invite` of a
//! thousand customers must neither bounce its tail nor hammer the server.
//!
//! So the outbox asks a [`Pacer`] before every mail: within the configured
//! `smtp.max_per_minute` and `smtp.max_recipients_per_day` it may go now,
//! otherwise it waits for the window. A throttling answer
//! ([`is_provider_throttling`]) pauses the whole sender (not that one mail):
//! the refused mail keeps its place at the head of the queue, nothing is
//! counted as a failed attempt, and sending resumes in queue order after
//! the pause. Nothing is given up because of throttling.
//!
//! Pure: the time comes in as an argument, so the windows are tested with
//! plain numbers.

use std::collections::VecDeque;

/// `[smtp] max_per_minute` and `max_recipients_per_day`; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendLimits {
    /// Messages handed to the server in any minute, at most.
    pub max_per_minute: Option<u32>,
    /// Recipients (RCPT TO) in any day, at most.
    pub max_recipients_per_day: Option<u32>,
}

impl SendLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_per_minute.is_some() || self.max_recipients_per_day.is_some()
    }
}

/// The lengths of the two windows, in seconds. A minute and a day in
/// production; the end-to-end tests shorten them (a debug-build knob in the
/// shell), so pacing can be watched without waiting minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// The "minute" of `max_per_minute`.
    pub minute_secs: u64,
    /// The "day" of `max_recipients_per_day`.
    pub day_secs: u64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            minute_secs: 60,
            day_secs: 86_400,
        }
    }
}

impl Windows {
    /// Windows with a minute of `minute_secs` and a day of 1 440 of them.
    pub fn scaled(minute_secs: u64) -> Self {
        let minute_secs = minute_secs.max(1);
        Windows {
            minute_secs,
            day_secs: minute_secs * 1440,
        }
    }
}

/// What the pacer says about the next mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it now; it is counted.
    Go,
    /// Not before this time (Unix seconds): a window is full, or the
    /// provider throttled the sender.
    WaitUntil(u64),
}

/// The sender's windows: what was handed to the server lately, and whether
/// the provider asked for a pause.
#[derive(Debug, Clone)]
pub struct Pacer {
    limits: SendLimits,
    windows: Windows,
    /// When each message of the last minute was admitted, oldest first.
    minute: VecDeque<u64>,
    /// (when, recipients) of each message of the last day, oldest first.
    day: VecDeque<(u64, u32)>,
    /// Sum of the recipients in `day`.
    day_recipients: u64,
    /// The provider throttled the sender: nothing is sent before this.
    paused_until: u64,
    /// Throttling answers since the last accepted mail; each doubles the
    /// pause.
    throttles: u32,
}

impl Pacer {
    /// A pacer with empty windows.
    pub fn new(limits: SendLimits, windows: Windows) -> Self {
        Pacer {
            limits,
            windows,
            minute: VecDeque::new(),
            day: VecDeque::new(),
            day_recipients: 0,
            paused_until: 0,
            throttles: 0,
        }
    }

    /// The limits this pacer keeps.
    pub fn limits(&self) -> SendLimits {
        self.limits
    }

    fn expire(&mut self, now: u64) {
        while self
            .minute
            .front()
            .is_some_and(|t| t + self.windows.minute_secs <= now)
        {
            self.minute.pop_front();
        }
        while let Some(&(t, n)) = self.day.front() {
            if t + self.windows.day_secs > now {
                break;
            }
            self.day.pop_front();
            self.day_recipients -= u64::from(n);
        }
    }

    /// May a mail to `recipients` recipients be handed over at `now`? When
    /// it may, it is counted in both windows at once (so mails started
    /// together cannot overrun a limit between them).
    ///
    /// A single mail with more recipients than the daily limit is admitted
    /// when the day's window is empty: it cannot be split here, and waiting
    /// would not make it fit.
    pub fn admit(&mut self, now: u64, recipients: u32) -> Admission {
        if now < self.paused_until {
            return Admission::WaitUntil(self.paused_until);
        }
        self.expire(now);
        let mut wait = 0u64;
        if let Some(max) = self.limits.max_per_minute {
            let max = max.max(1) as usize;
            if self.minute.len() >= max {
                // The (len - max + 1)-th oldest must age out first.
                let t = self.minute[self.minute.len() - max];
                wait = wait.max(t + self.windows.minute_secs);
            }
        }
        if let Some(max) = self.limits.max_recipients_per_day {
            let max = u64::from(max);
            if !self.day.is_empty() && self.day_recipients + u64::from(recipients) > max {
                // Age out the oldest until the new mail fits (or the window
                // is empty).
                let mut left = self.day_recipients;
                let mut until = 0;
                for &(t, n) in &self.day {
                    left -= u64::from(n);
                    until = t + self.windows.day_secs;
                    if left + u64::from(recipients) <= max {
                        break;
                    }
                }
                wait = wait.max(until);
            }
        }
        if wait > now {
            return Admission::WaitUntil(wait);
        }
        self.minute.push_back(now);
        self.day.push_back((now, recipients));
        self.day_recipients += u64::from(recipients);
        Admission::Go
    }

    /// The provider throttled the sender at `now`: nothing is sent until
    /// the returned time. The pause starts at a quarter of the minute
    /// window and doubles with each throttling answer in a row, up to an
    /// hour (at the production window lengths): a per-minute limit clears
    /// within the first pauses, a daily quota is not asked about more than
    /// hourly.
    pub fn throttled(&mut self, now: u64) -> u64 {
        let base = (self.windows.minute_secs / 4).max(1);
        let cap = self.windows.minute_secs * 60;
        let pause = base.saturating_mul(1 << self.throttles.min(16)).min(cap);
        self.throttles = self.throttles.saturating_add(1);
        self.paused_until = self.paused_until.max(now + pause);
        self.paused_until
    }

    /// The server accepted a mail: the next throttling answer starts again
    /// from the shortest pause.
    pub fn accepted(&mut self) {
        self.throttles = 0;
    }

    /// Until when the provider's throttling pauses the sender, if it does
    /// at `now`.
    pub fn paused(&self, now: u64) -> Option<u64> {
        (self.paused_until > now).then_some(self.paused_until)
    }
}

/// Whether an SMTP answer is the provider saying "too fast" (or "not now"
/// for the whole sender), rather than a verdict on one mail or recipient:
/// `421` (the server closes the session), any `4xx` to the transaction
/// (MAIL, DATA, the end of data), Exchange Online's
/// `554 5.2.0 … SubmissionQuotaExceededException`, and Gmail's
/// `550 5.4.5 Daily user sending limit exceeded`. `reply` is the answer as
/// lettre words it (`transient error (421): 4.7.0 Try again later`), and
/// `transaction` whether it answered the transaction rather than one RCPT
/// (a `4xx` to one RCPT is that recipient's domain greylisting, handled per
/// domain).
pub fn is_provider_throttling(reply: &str, transaction: bool) -> bool {
    let lower = reply.to_ascii_lowercase();
    if lower.contains("submissionquotaexceeded")
        || lower.contains("5.4.5")
        || lower.contains("sending limit exceeded")
        || lower.contains("sending quota exceeded")
    {
        return true;
    }
    if lower.contains("(421)") || lower.starts_with("421") {
        return true;
    }
    transaction && (lower.contains("transient error (4") || lower.starts_with('4'))
}

/// About when the last of `new_mails` mails (to `new_recipients`
/// recipients in all), queued behind `queued` pending mails, will be handed
/// to the server under `limits`, if they delay it by more than a minute
/// window at all. Pending mails count one recipient each (most have one).
/// Assumes the windows are empty now: the daemon's own windows are not
/// known where the transcript is written, so this is an estimate, and the
/// transcript says "about".
pub fn last_send_estimate(
    limits: SendLimits,
    windows: Windows,
    now: u64,
    queued: u64,
    new_mails: u64,
    new_recipients: u64,
) -> Option<u64> {
    if new_mails == 0 || !limits.any() {
        return None;
    }
    let mails = queued + new_mails;
    let recipients = queued + new_recipients;
    let mut at = now;
    if let Some(max) = limits.max_per_minute {
        at = at.max(now + (mails - 1) / u64::from(max.max(1)) * windows.minute_secs);
    }
    if let Some(max) = limits.max_recipients_per_day {
        at = at.max(now + (recipients - 1) / u64::from(max.max(1)) * windows.day_secs);
    }
    (at >= now + windows.minute_secs).then_some(at)
}

/// The sentence a transcript (or `liaison import`) adds when the sending
/// limits delay the mails just queued: when the last of them should go out.
/// `queued` mails were pending before them; `new_mails` were just queued,
/// to `new_recipients` recipients. `None` when no limit is set or they all
/// go out within the first minute.
pub fn last_send_note(
    limits: SendLimits,
    now: u64,
    queued: u64,
    new_mails: u64,
    new_recipients: u64,
) -> Option<String> {
    let at = last_send_estimate(
        limits,
        Windows::default(),
        now,
        queued,
        new_mails,
        new_recipients,
    )?;
    let mut limit = Vec::new();
    if let Some(n) = limits.max_per_minute {
        limit.push(format!("{n} messages a minute"));
    }
    if let Some(n) = limits.max_recipients_per_day {
        limit.push(format!("{n} recipients a day"));
    }
    Some(format!(
        "The provider's sending limit ({}) paces these mails: with {} in the queue, the last \
         should go out at about {}.",
        limit.join(", "),
        queued + new_mails,
        crate::model::time::rfc3339(at)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(per_minute: Option<u32>, per_day: Option<u32>) -> Pacer {
        Pacer::new(
            SendLimits {
                max_per_minute: per_minute,
                max_recipients_per_day: per_day,
            },
            Windows::default(),
        )
    }

    #[test]
    fn no_limits_admit_everything() {
        let mut p = pacer(None, None);
        for i in 0..10_000 {
            assert_eq!(p.admit(1000 + i / 100, 3), Admission::Go);
        }
    }

    #[test]
    fn the_minute_window_admits_its_limit_then_waits_for_the_oldest() {
        let mut p = pacer(Some(30), None);
        // 30 in the first 10 seconds go; the 31st waits until the first is
        // a minute old.
        for i in 0..30 {
            assert_eq!(p.admit(1000 + i / 3, 1), Admission::Go, "mail {i}");
        }
        assert_eq!(p.admit(1010, 1), Admission::WaitUntil(1060));
        assert_eq!(p.admit(1059, 1), Admission::WaitUntil(1060));
        assert_eq!(p.admit(1060, 1), Admission::Go);
        // The next three started at 1000 too (i = 1, 2): they go as soon
        // as the window allows, then the ones of 1001 wait for 1061.
        assert_eq!(p.admit(1060, 1), Admission::Go);
        assert_eq!(p.admit(1060, 1), Admission::Go);
        assert_eq!(p.admit(1060, 1), Admission::WaitUntil(1061));
        // Over an hour at 30 a minute: never more than 30 in any minute.
        let mut p = pacer(Some(30), None);
        let mut sent = Vec::new();
        let mut now = 0;
        while sent.len() < 1800 {
            match p.admit(now, 1) {
                Admission::Go => sent.push(now),
                Admission::WaitUntil(t) => {
                    assert!(t > now);
                    now = t;
                }
            }
        }
        for (i, &t) in sent.iter().enumerate().skip(30) {
            assert!(sent[i - 30] + 60 <= t, "31 mails within a minute at {t}");
        }
        assert!(now <= 60 * 60, "1800 mails at 30/min took until {now}");
    }

    #[test]
    fn the_day_window_counts_recipients() {
        let mut p = pacer(None, Some(10));
        assert_eq!(p.admit(0, 4), Admission::Go);
        assert_eq!(p.admit(100, 4), Admission::Go);
        // 8 used: a mail to 3 waits until the first mail (4) ages out.
        assert_eq!(p.admit(200, 3), Admission::WaitUntil(86_400));
        assert_eq!(p.admit(200, 2), Admission::Go);
        assert_eq!(p.admit(300, 1), Admission::WaitUntil(86_400));
        assert_eq!(p.admit(86_400, 3), Admission::Go);
        // A mail to more than the whole day's limit goes when the window
        // is empty, and only then.
        let mut p = pacer(None, Some(10));
        assert_eq!(p.admit(0, 1), Admission::Go);
        assert_eq!(p.admit(5, 25), Admission::WaitUntil(86_400));
        assert_eq!(p.admit(86_400, 25), Admission::Go);
    }

    #[test]
    fn throttling_pauses_everything_and_backs_off_until_a_mail_is_accepted() {
        let mut p = pacer(None, None);
        assert_eq!(p.throttled(1000), 1015);
        assert_eq!(p.paused(1000), Some(1015));
        assert_eq!(p.admit(1014, 1), Admission::WaitUntil(1015));
        assert_eq!(p.admit(1015, 1), Admission::Go);
        assert_eq!(p.throttled(1015), 1045);
        assert_eq!(p.throttled(1045), 1105);
        p.accepted();
        assert_eq!(p.throttled(2000), 2015);
        // Capped at an hour.
        for _ in 0..40 {
            p.throttled(5000);
        }
        let until = p.throttled(100_000);
        assert_eq!(until, 100_000 + 3600);
        // Scaled windows scale the pause.
        let mut p = Pacer::new(SendLimits::default(), Windows::scaled(4));
        assert_eq!(p.throttled(10), 11);
        assert_eq!(p.throttled(11), 13);
    }

    #[test]
    fn throttling_answers_are_told_from_verdicts_on_one_mail() {
        let exchange = "permanent error (554): 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]";
        assert!(is_provider_throttling(exchange, true));
        assert!(is_provider_throttling(exchange, false));
        assert!(is_provider_throttling(
            "transient error (421): 4.7.0 Try again later, closing connection.",
            false
        ));
        assert!(is_provider_throttling(
            "transient error (451): 4.7.500 Server busy. Please try again later",
            true
        ));
        assert!(is_provider_throttling(
            "permanent error (550): 5.4.5 Daily user sending limit exceeded.",
            true
        ));
        // A recipient's own 4xx is its domain's business (greylisting).
        assert!(!is_provider_throttling(
            "transient error (451): 4.7.1 try again later",
            false
        ));
        // A verdict on one mail or recipient is no throttling.
        assert!(!is_provider_throttling(
            "permanent error (550): 5.1.1 <gone@contoso.test>: Recipient address rejected",
            false
        ));
        assert!(!is_provider_throttling(
            "permanent error (554): 5.7.1 message content rejected",
            true
        ));
        assert!(!is_provider_throttling(
            "network error: connection refused",
            true
        ));
    }

    #[test]
    fn the_estimate_says_when_the_last_mail_goes() {
        let limits = SendLimits {
            max_per_minute: Some(30),
            max_recipients_per_day: Some(10_000),
        };
        let w = Windows::default();
        // Within the first minute: nothing worth saying.
        assert_eq!(last_send_estimate(limits, w, 1000, 0, 30, 30), None);
        // 31 mails: the 31st a minute later.
        assert_eq!(last_send_estimate(limits, w, 1000, 0, 31, 31), Some(1060));
        // 1000 invitations behind 200 queued mails: 1200 at 30/min is the
        // 40th minute (index 1199 / 30 = 39).
        assert_eq!(
            last_send_estimate(limits, w, 1000, 200, 1000, 1000),
            Some(1000 + 39 * 60)
        );
        // 25 000 recipients at 10 000 a day: the third day.
        assert_eq!(
            last_send_estimate(limits, w, 0, 0, 25_000, 25_000),
            Some(2 * 86_400)
        );
        assert_eq!(
            last_send_estimate(SendLimits::default(), w, 0, 0, 5000, 5000),
            None
        );
        assert_eq!(last_send_estimate(limits, w, 0, 50, 0, 0), None);
        let note = last_send_note(limits, 0, 200, 1000, 1000).unwrap();
        assert!(
            note.contains("(30 messages a minute, 10000 recipients a day)")
                && note.contains("with 1200 in the queue")
                && note.contains("at about 1970-01-01T00:39:00Z"),
            "{note}"
        );
        assert_eq!(last_send_note(limits, 0, 0, 3, 3), None);
    }
}
