//! End-to-end: what caps and queues do to the mail Liaison decides to send,
//! through the real loopback Postfix and Dovecot. `greylist.test` answers
//! every RCPT with `451 4.7.1` (see `tests/mailstack.sh`); an unknown user
//! of a virtual domain is refused at RCPT with `550 5.1.1`.

mod common;

use common::*;
use std::time::{Duration, Instant};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const DESK: &str = "helpdesk@liaison.test";
const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";
const CAROL: &str = "carol@contoso.test";
const DAVE: &str = "dave@fabrikam.test";

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, DESK, ALICE, BOB, CAROL, DAVE] {
        clear_mailbox(u).await;
    }
}

/// Point 10: 300 mails to a domain that answers 451 must not delay mail to
/// other domains, must not be tried all over again on every round, and
/// are retried later, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greylisting_domain_neither_blocks_other_mail_nor_is_hammered() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let daemon = Daemon::start(Transport::Plain);
    // 300 invitations to greylist.test, 50 commands per mail.
    for batch in 0..6 {
        let body: String = (0..50)
            .map(|i| format!("invite g{}@greylist.test\n", batch * 50 + i))
            .collect();
        send_raw(
            PARTNER1,
            &[COMMANDS],
            &mail(
                PARTNER1,
                COMMANDS,
                &format!("grey batch {batch}"),
                "",
                &body,
            ),
        )
        .await;
    }
    // The transcripts (to a good domain) arrive although every mail before
    // them waits on greylist.test.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count_where(PARTNER1, |m| m.subject.contains("grey batch")).await;
        if n == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of 6 transcripts arrived within 30 s\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pending = stats(&daemon)["outbox_pending"].as_u64().unwrap();
    assert!(
        pending >= 300,
        "300 greylisted mails pending, got {pending}"
    );

    // A new invitation to a good domain goes out at once.
    let started = Instant::now();
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(
            PARTNER1,
            COMMANDS,
            "invite alice",
            "",
            "invite alice@contoso.test",
        ),
    )
    .await;
    wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the invitation to alice took {took:?} behind 300 greylisted mails"
    );

    // Greylisted mails are retried after the domain's backoff, a few at a
    // time, not 300 at once on every round, and none is given up.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let log = daemon.log();
    let tried = log
        .lines()
        .filter(|l| l.contains("mail delivery deferred; will retry") && l.contains("greylist.test"))
        .count();
    assert!(
        (2..=60).contains(&tried),
        "expected a few real attempts at greylist.test (backoff per domain), got {tried}"
    );
    assert!(
        log.contains("(451): 4.7.1"),
        "the server's 451 reply is recorded"
    );
    let st = stats(&daemon);
    assert!(
        st["outbox_pending"].as_u64().unwrap() >= 300,
        "greylisted mails stay queued: {st}"
    );
    assert!(
        !log.contains("mail refused for good"),
        "nothing given up:\n{log}"
    );
}

/// Point 9: a notice to the partner and a support contact the server
/// refuses (550 at RCPT) reaches the partner, once, and the partner is told
/// that the contact did not get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_recipient_does_not_cost_the_others_their_mail() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let daemon = Daemon::start(Transport::Plain);
    partner_commands(
        "invite bob@fabrikam.test\ncontact bob@fabrikam.test nobody@fabrikam.test",
        "invite bob",
    )
    .await;
    let inv = wait_for(BOB, "invitation", |m| m.subject.contains("[ref:")).await;
    let to = inv.reply_to.clone().unwrap();
    send_raw(
        BOB,
        &[&to],
        &mail(BOB, &to, &format!("Re: {}", inv.subject), "", "Accept\n"),
    )
    .await;
    daemon.wait_state("northwind", BOB, "active").await;
    let accepted = wait_for(PARTNER1, "acceptance notice", |m| {
        m.subject.starts_with("Accepted: bob@fabrikam.test")
    })
    .await;
    let failed = wait_for(PARTNER1, "delivery failure notice", |m| {
        m.subject.contains("Not delivered to nobody@fabrikam.test")
    })
    .await;
    assert!(failed.text.contains("550"), "{}", failed.text);
    assert!(
        failed.text.contains(&accepted.subject),
        "the notice names the mail: {}",
        failed.text
    );

    // A contact whose domain defers (451): the partner gets the notice at
    // once, and the retries for the contact never send it to them again.
    partner_commands(
        "invite dave@fabrikam.test\ncontact dave@fabrikam.test later@greylist.test",
        "invite dave",
    )
    .await;
    let inv = wait_for(DAVE, "invitation", |m| m.subject.contains("[ref:")).await;
    let to = inv.reply_to.clone().unwrap();
    send_raw(
        DAVE,
        &[&to],
        &mail(DAVE, &to, &format!("Re: {}", inv.subject), "", "Accept\n"),
    )
    .await;
    wait_for(PARTNER1, "acceptance notice", |m| {
        m.subject.starts_with("Accepted: dave@fabrikam.test")
    })
    .await;
    // Two backoffs (2 s, 4 s) later the contact has been tried again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let retries = daemon
            .log()
            .lines()
            .filter(|l| l.contains("will retry") && l.contains("later@greylist.test"))
            .count();
        if retries >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "later@greylist.test was not retried\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No mail goes twice, and the deferred contact is not reported.
    assert_eq!(
        count_where(PARTNER1, |m| m.subject.starts_with("Accepted: bob")).await,
        1
    );
    assert_eq!(
        count_where(PARTNER1, |m| m.subject.starts_with("Accepted: dave")).await,
        1,
        "a retry for the contact must not resend to the partner"
    );
    assert_eq!(
        count_where(PARTNER1, |m| m.subject.contains("Not delivered to")).await,
        1
    );
}

/// Point 7: thirty follow-ups on two tickets within an hour all reach the
/// shared desk address: ticket traffic between its known parties is not
/// held by the per-address reply cap (20 an hour by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ticket_follow_up_reaches_the_desk() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let daemon = Daemon::start(Transport::Plain);
    make_active(&daemon, ALICE).await;
    partner_commands("revoked alice@contoso.test", "revoke").await;
    daemon
        .wait_state("northwind", ALICE, "permissions_removed")
        .await;
    for (tid, subject) in [
        ("T-000001", "Cannot sign in"),
        ("T-000002", "Invoices missing"),
    ] {
        send_raw(
            ALICE,
            &[INVITES],
            &mail(ALICE, INVITES, subject, "", "Please help.\n"),
        )
        .await;
        wait_for(DESK, "new ticket", |m| {
            m.subject.starts_with(&format!("[{tid}]"))
        })
        .await;
    }
    for i in 0..30 {
        let (tid, subject) = if i % 2 == 0 {
            ("T-000001", "Cannot sign in")
        } else {
            ("T-000002", "Invoices missing")
        };
        send_raw(
            ALICE,
            &[INVITES],
            &mail(
                ALICE,
                INVITES,
                &format!("Re: [{tid}] {subject}"),
                "",
                &format!("Follow-up number {i}.\n"),
            ),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count_where(DESK, |m| m.text.contains("Follow-up number")).await;
        if n == 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of 30 follow-ups reached the desk\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stats(&daemon)["held"], 0, "nothing held");
}

/// Point 15: forty support requests from one customer within an hour: at
/// most the cap (5) is forwarded to the partner, the rest are held (kept,
/// listed, counted), the partner is told once, and a held mail can be
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_support_requests_is_held_not_forwarded() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let daemon = Daemon::start(Transport::Plain);
    make_active(&daemon, CAROL).await;
    for i in 0..40 {
        send_raw(
            CAROL,
            &[INVITES],
            &mail(
                CAROL,
                INVITES,
                &format!("Urgent request {i}"),
                "",
                "Click http://evil.test/login to fix your account.\n",
            ),
        )
        .await;
    }
    wait_for(PARTNER1, "held notice", |m| {
        m.subject.starts_with("Held back:") && m.subject.contains(CAROL)
    })
    .await;
    // All 40 decided: 5 forwarded, 35 held with their acknowledgements.
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let (ok, out, err) = daemon.cli(&["held", "list", "--json"]);
        assert!(ok, "held list failed: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = v.as_array().unwrap().clone();
        if rows.len() >= 70 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} mails held\n{}",
            rows.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(held.len(), 70, "{held:?}");
    assert!(held.iter().all(|h| h["reason"]
        .as_str()
        .unwrap()
        .contains("support requests from carol@contoso.test")));
    assert_eq!(stats(&daemon)["held"], 70);
    let (ok, text, _) = daemon.cli(&["held", "list"]);
    assert!(ok && text.contains("Support request from"), "{text}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let forwards = |m: &Received| m.subject.starts_with("Support request from");
    assert_eq!(count_where(PARTNER1, forwards).await, 5);
    assert_eq!(
        count_where(PARTNER1, |m| m.subject.starts_with("Held back:")).await,
        1,
        "told once"
    );
    // The operator releases one forward: it is sent and no longer held.
    let fwd = held
        .iter()
        .find(|h| {
            h["subject"]
                .as_str()
                .unwrap()
                .starts_with("Support request from")
        })
        .unwrap();
    let id = fwd["id"].to_string();
    let (ok, out, err) = daemon.cli(&["held", "release", &id]);
    assert!(ok, "release failed: {err}");
    assert!(out.contains("queued"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_where(PARTNER1, forwards).await < 6 {
        assert!(Instant::now() < deadline, "released forward not sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stats(&daemon)["held"], 69);
    let (ok, _, err) = daemon.cli(&["held", "release", &id]);
    assert!(!ok && err.contains("no held mail"), "{err}");
}
