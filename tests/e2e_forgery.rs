//! End-to-end: forgeries that used to work, through the real loopback
//! Postfix and Dovecot. Each test plays the attacker exactly as the issue
//! describes, then a genuine mail behind it (same inbox, so processed after
//! it), and asserts that only the genuine one had any effect.
//!
//! - A thread-only "accept" naming the invitation's Message-ID as the old,
//!   public formula computed it (sha256 of the command's Message-ID).
//! - Forged bounces of every kind: a stranger's envelope sender; a null
//!   sender to the untagged invitations address; a genuine bounce address
//!   of another mail and recipient; a made-up tag; a stranger writing
//!   `Return-Path: <>` and the genuine bounce address as `Delivered-To`
//!   into the mail itself. A real bounce, generated
//!   by Postfix itself for `gone@contoso.test` (see tests/mailstack.sh), is
//!   believed.
//! - "Accept" replayed to the original invitation after `revoked`.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::time::Duration;

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const ALICE: &str = "alice@contoso.test";
/// Accepted by the loopback Postfix at RCPT, then bounced by it.
const GONE: &str = "gone@contoso.test";
const MALLORY: &str = "mallory@evil.test";

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, ALICE] {
        clear_mailbox(u).await;
    }
}

/// All of `user`'s mails, parsed.
async fn mails(user: &str) -> Vec<Received> {
    fetch_all(user)
        .await
        .iter()
        .map(|r| Received::parse(r))
        .collect()
}

/// Sends `raw` (a command mail) from the partner and waits for its transcript.
async fn command(raw: &str, subject: &str) -> Received {
    send_raw(PARTNER1, &[COMMANDS], raw).await;
    wait_for(PARTNER1, "transcript", |m| {
        m.subject.contains(subject) && m.subject.contains("Liaison")
    })
    .await
}

/// The envelope sender a delivered mail came with (Dovecot writes it as
/// `Return-Path`): Liaison's bounce address for that mail and recipient.
fn return_path(m: &Received) -> String {
    m.header("Return-Path")
        .expect("Return-Path written by Dovecot")
        .trim_matches(['<', '>'])
        .to_string()
}

/// The relationship records of `customer`, with their history.
fn history(daemon: &Daemon, customer: &str) -> serde_json::Value {
    let (ok, out, err) = daemon.cli(&["history", customer, "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_only_accept_with_a_computed_message_id_does_nothing() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    let cmd = mail(PARTNER1, COMMANDS, "t1", "", "invite alice@contoso.test\n");
    // The attacker knows (or chose) the command mail's Message-ID.
    let key = message_id_of(&cmd);
    command(&cmd, "t1").await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;

    // The formula Liaison used to derive the invitation's Message-ID.
    let h = Sha256::digest(format!("{key}\0out1").as_bytes());
    let hex: String = h[..12].iter().map(|b| format!("{b:02x}")).collect();
    let predicted = format!("liaison.{hex}@liaison.test");
    // Forged: From the customer, from any host, to the bare invitations
    // address, threaded to the predicted Message-ID, no token anywhere.
    let forged = mail(
        ALICE,
        INVITES,
        "Re: Invitation",
        &format!("In-Reply-To: <{predicted}>\r\nReferences: <{predicted}>\r\n"),
        "accept\n",
    );
    let forged_id = message_id_of(&forged);
    send_raw(MALLORY, &[INVITES], &forged).await;

    // The genuine answer, behind it in the same inbox: threaded to the real
    // Message-ID only (no token), so the thread path itself still works.
    let genuine = mail(
        ALICE,
        INVITES,
        "Re: Invitation",
        &format!(
            "In-Reply-To: <{0}>\r\nReferences: <{0}>\r\n",
            inv.message_id
        ),
        "accept\n",
    );
    let genuine_id = message_id_of(&genuine);
    send_raw(ALICE, &[INVITES], &genuine).await;
    daemon.wait_state("northwind", ALICE, "active").await;

    // Exactly one acceptance, and it is the genuine mail's.
    let h = history(&daemon, ALICE);
    let entries = h[0]["history"].as_array().unwrap();
    let accepted: Vec<&serde_json::Value> =
        entries.iter().filter(|e| e["to"] == "active").collect();
    assert_eq!(accepted.len(), 1, "{h}");
    assert_eq!(
        accepted[0]["message_id"], genuine_id,
        "the forged mail ({forged_id}) must not be the one that activated: {h}"
    );
    assert_ne!(
        inv.message_id, predicted,
        "Message-IDs must not be computable without the secret"
    );
    assert!(
        inv.message_id.starts_with("liaison.k1."),
        "{}",
        inv.message_id
    );
    let log = daemon.log();
    assert!(
        log.contains(&forged_id),
        "the forged mail was seen and logged"
    );
    assert!(daemon.stop().success());
}

/// A delivery report for `message_id` naming `failed`, with an attacker's
/// link in the diagnostic.
fn report(message_id: &str, failed: &str, n: u32) -> String {
    format!(
        "From: MAILER-DAEMON@relay.evil.test\r\nTo: {INVITES}\r\nSubject: Undelivered Mail Returned to Sender\r\n\
Message-ID: <forged-dsn.{n}.{nanos}@relay.evil.test>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.evil.test\r\n\r\n\
Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 mailbox moved, log in at http://evil.example/login\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{message_id}>\r\nSubject: x\r\n\r\n--B--\r\n",
        nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bounces_change_nothing_and_a_real_bounce_is_believed() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    let transcript = command(
        &mail(PARTNER1, COMMANDS, "b1", "", "invite alice@contoso.test\n"),
        "b1",
    )
    .await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    // Every mail goes out with its own bounce address as envelope sender
    // (checked at the end, so that the forgeries below are tried first).
    let alice_bounce = return_path(&inv);
    let partner_bounce = return_path(&transcript);

    // 1. A stranger's envelope sender, even to the right bounce address.
    send_raw(
        MALLORY,
        &[&alice_bounce],
        &report(&inv.message_id, ALICE, 1),
    )
    .await;
    // 2. A null sender, to the untagged invitations address (what every
    //    forged bounce used to be).
    send_null_sender(&[INVITES], &report(&inv.message_id, ALICE, 2)).await;
    // 3. A genuine bounce address, but of another mail and recipient (the
    //    partner's transcript), naming the invitation and Alice.
    send_null_sender(&[&partner_bounce], &report(&inv.message_id, ALICE, 3)).await;
    // 4. A made-up tag.
    let made_up = format!("invites+b-{}@liaison.test", "a".repeat(26));
    send_null_sender(&[&made_up], &report(&inv.message_id, ALICE, 4)).await;

    // 5. A stranger writing the headers itself: `Return-Path: <>` (Postfix
    //    drops it) and the genuine bounce address as `Delivered-To` (it
    //    stays below the one Dovecot writes on top), sent to the bare address.
    let headers = format!("Return-Path: <>\r\nDelivered-To: {alice_bounce}\r\n");
    send_raw(
        MALLORY,
        &[INVITES],
        &format!("{headers}{}", report(&inv.message_id, ALICE, 5)),
    )
    .await;

    // The real thing, behind them in the same inbox: Postfix accepts
    // gone@contoso.test, then bounces it itself, to the bounce address.
    command(
        &mail(PARTNER1, COMMANDS, "b2", "", "invite gone@contoso.test\n"),
        "b2",
    )
    .await;
    let notice = wait_for(PARTNER1, "bounce notice", |m| {
        m.subject == format!("Not delivered: your invitation to {GONE}")
    })
    .await;
    assert!(
        notice.text.contains("mailbox unavailable"),
        "the real server's diagnostic is quoted: {}",
        notice.text
    );

    // None of the forged reports marked or forwarded anything.
    let partner_mail = mails(PARTNER1).await;
    let not_delivered: Vec<&str> = partner_mail
        .iter()
        .filter(|m| m.subject.starts_with("Not delivered"))
        .map(|m| m.subject.as_str())
        .collect();
    assert_eq!(not_delivered.len(), 1, "{not_delivered:?}");
    for m in &partner_mail {
        assert!(
            !m.raw.contains("evil.example") && !m.raw.contains("log in at"),
            "forged text reached the partner: {}",
            m.raw
        );
    }
    // Each forged report is logged as not believed, with its reason.
    let log = daemon.log();
    for (n, why) in [
        (1, "not the null sender"),
        (2, "not to one of Liaison's bounce addresses"),
        (3, "was not issued for"),
        (4, "was not issued for"),
        (5, "not to one of Liaison's bounce addresses"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(&format!("forged-dsn.{n}."))
                && l.contains("delivery report not believed")
                && l.contains(why)),
            "forged report {n} is not logged as not believed ({why}):\n{log}"
        );
    }
    // Alice's relationship is untouched, and she got nothing more.
    daemon.wait_state("northwind", ALICE, "invited").await;
    assert_eq!(mails(ALICE).await.len(), 1);
    assert!(
        alice_bounce.starts_with("invites+b-") && alice_bounce.ends_with("@liaison.test"),
        "{alice_bounce}"
    );
    assert_ne!(alice_bounce, partner_bounce);
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_replayed_after_permissions_were_removed_does_not_reactivate() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    command(
        &mail(PARTNER1, COMMANDS, "r1", "", "invite alice@contoso.test\n"),
        "r1",
    )
    .await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let to = inv.reply_to.clone().expect("Reply-To with the token");
    let reply = |body: &str| {
        mail(
            ALICE,
            &to,
            &format!("Re: {}", inv.subject),
            &format!(
                "In-Reply-To: <{0}>\r\nReferences: <{0}>\r\n",
                inv.message_id
            ),
            body,
        )
    };
    send_raw(ALICE, &[&to], &reply("Accept\n")).await;
    daemon.wait_state("northwind", ALICE, "active").await;
    command(
        &mail(PARTNER1, COMMANDS, "r2", "", "revoked alice@contoso.test\n"),
        "r2",
    )
    .await;
    daemon
        .wait_state("northwind", ALICE, "permissions_removed")
        .await;

    // The replay: "Accept" again, to the original invitation (token and thread).
    send_raw(ALICE, &[&to], &reply("Accept\n")).await;
    let note = wait_for(ALICE, "superseded note", |m| {
        m.header("X-Liaison-Template").as_deref() == Some("en/not_matched")
    })
    .await;
    assert!(
        note.text.contains("a newer invitation replaced it"),
        "{}",
        note.text
    );
    // Give a wrong reactivation every chance to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let h = history(&daemon, ALICE);
    assert_eq!(h[0]["state"], "permissions_removed", "{h}");
    assert_eq!(
        h[0]["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["to"] == "active")
            .count(),
        1,
        "{h}"
    );
    let confirmations = mails(ALICE)
        .await
        .into_iter()
        .filter(|m| m.header("X-Liaison-Template").as_deref() == Some("en/accepted_customer"))
        .count();
    assert_eq!(confirmations, 1, "only the first acceptance was confirmed");
    assert!(daemon.stop().success());
}
