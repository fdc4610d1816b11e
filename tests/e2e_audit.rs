//! End-to-end: holes found by going over the merged code once more as an
//! attacker would, each tried against the real loopback Postfix and
//! Dovecot and the real binary.

mod common;

use common::*;
use std::time::{Duration, Instant};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";

/// `liaison stats`, parsed.
fn stats(daemon: &Daemon) -> serde_json::Value {
    let (ok, out, err) = daemon.cli(&["stats"]);
    assert!(ok, "stats failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The number of processed records, over every class.
fn processed_total(daemon: &Daemon) -> u64 {
    stats(daemon)["processed"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

/// Waits until `n` mails have their processed record.
async fn wait_processed(daemon: &Daemon, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while processed_total(daemon) < n {
        assert!(
            Instant::now() < deadline,
            "not all {n} mails processed\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many mails in `user`'s INBOX satisfy `pred`.
async fn count_where(user: &str, pred: impl Fn(&Received) -> bool) -> usize {
    fetch_all(user)
        .await
        .iter()
        .map(|r| Received::parse(r))
        .filter(|m| pred(m))
        .count()
}

/// A mail with the Message-ID header left out (as some auto-responders do,
/// and as any forger may): its answers have no In-Reply-To, and used to
/// escape the per-address reply cap, so a forged partner From asking
/// `status` got an answer every time, without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mails_without_message_id_do_not_escape_the_reply_cap() {
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        c.replace(
            "invitation_ttl_days = 90\n",
            "invitation_ttl_days = 90\nmax_replies_per_hour = 3\n",
        )
    });
    let forged: Vec<String> = (0..8)
        .map(|i| {
            format!(
                "From: {PARTNER1}\r\nTo: {COMMANDS}\r\nSubject: question {i}\r\n\
                 Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\nstatus\r\n"
            )
        })
        .collect();
    // Straight into the inbox: a server that adds no Message-ID (Postfix
    // adds one only for local clients) delivers them just so.
    append_all(COMMANDS, &forged).await;
    wait_processed(&daemon, 8).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let held = stats(&daemon)["held"].as_u64().unwrap();
        if held >= 5 || Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let transcripts = count_where(PARTNER1, |m| m.subject.contains("question")).await;
    assert_eq!(
        (transcripts, held),
        (3, 5),
        "3 answers at most, the rest held\n{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
}
