//! End-to-end: the real `liaison` binary against the real loopback Postfix
//! and Dovecot (`tests/mailstack.sh up`). Partners and customers are played
//! by plain SMTP submissions and IMAP reads, like any mail client would.

mod common;

use common::*;
use std::time::Duration;

const PARTNER1: &str = "partner1@liaison.test";
const PARTNER2: &str = "partner2@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";
const CAROL: &str = "carol@contoso.test";
const DAVE: &str = "dave@fabrikam.test";

async fn clear_all() {
    for u in [
        PARTNER1, PARTNER2, COMMANDS, INVITES, ALICE, BOB, CAROL, DAVE,
    ] {
        clear_mailbox(u).await;
    }
}

/// Quotes `text` the way a mail client does below a reply.
fn quoted(text: &str) -> String {
    text.lines().map(|l| format!("> {l}\n")).collect()
}

/// Answers `invitation` as `from` with `answer` on top and the invitation quoted.
async fn reply_to_invitation(from: &str, invitation: &Received, answer: &str) {
    let to = invitation
        .reply_to
        .clone()
        .expect("invitation has Reply-To");
    let body = format!(
        "{answer}\n\nOn Wed, 25 Nov 2026 at 10:00, Liaison <{INVITES}> wrote:\n{}",
        quoted(&invitation.text)
    );
    let headers = format!(
        "In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n",
        id = invitation.message_id
    );
    let raw = mail(
        from,
        &to,
        &format!("Re: {}", invitation.subject),
        &headers,
        &body,
    );
    send_raw(from, &[&to], &raw).await;
}

async fn count(user: &str) -> usize {
    fetch_all(user).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_then_accept_makes_the_relationship_active() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);

    // 1. The partner emails a command.
    let cmd = mail(
        PARTNER1,
        COMMANDS,
        "please invite",
        "",
        "invite alice@contoso.test name \"Contoso Ltd\"\n\n-- \nPartner One\n",
    );
    send_raw(PARTNER1, &[COMMANDS], &cmd).await;

    // 2. Alice receives a two-part invitation in English.
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    assert!(inv.subject.contains("Northwind Traders"), "{}", inv.subject);
    assert!(
        inv.raw.contains("multipart/alternative"),
        "not multipart/alternative"
    );
    let html = inv.html.clone().expect("an HTML part");
    assert!(html.contains("mailto:invites+"), "HTML has the mailto link");
    assert!(
        inv.text.contains("delegated admin permissions"),
        "{}",
        inv.text
    );
    assert!(inv.text.contains("Contoso Ltd"));
    assert_eq!(inv.from, INVITES);
    assert_eq!(
        inv.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert!(inv.header("X-Loop").is_some());
    // 3. The token sits in Reply-To, subject and body, and is the same in all.
    let reply_to = inv.reply_to.clone().unwrap();
    let token = reply_to
        .strip_prefix("invites+")
        .and_then(|r| r.strip_suffix("@liaison.test"))
        .expect("plus address")
        .to_string();
    assert!(token.len() >= 26, "at least 128 bits of base32: {token}");
    assert!(inv.subject.contains(&format!("[ref:{token}]")));
    assert!(inv.text.contains(&token));

    // 4. One transcript for the partner, echoing the command.
    let ack = wait_for(PARTNER1, "transcript", |m| {
        m.subject.contains("Liaison results")
    })
    .await;
    assert!(
        ack.text.contains("> invite alice@contoso.test"),
        "{}",
        ack.text
    );
    assert!(
        ack.text.contains("invited alice@contoso.test"),
        "{}",
        ack.text
    );
    assert_eq!(
        ack.in_reply_to.as_deref(),
        Some(Received::parse(cmd.as_bytes()).message_id.as_str())
    );
    daemon.wait_state("northwind", ALICE, "invited").await;

    // 5. Alice accepts from a normal client; the quoted invitation (which
    //    says "decline" too) must not count.
    reply_to_invitation(ALICE, &inv, "Accept").await;
    daemon.wait_state("northwind", ALICE, "active").await;
    let notice = wait_for(PARTNER1, "acceptance notice", |m| {
        m.subject.starts_with("Accepted:")
    })
    .await;
    assert!(notice.text.contains(ALICE));
    let confirm = wait_for(ALICE, "confirmation", |m| m.subject.contains("You granted")).await;
    assert_eq!(
        confirm.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );

    // 6. status --json has exactly the documented shape.
    let v = daemon.status(ALICE);
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 1);
    let row = rows[0].as_object().unwrap();
    let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["customer", "partner", "since", "state"]);
    assert_eq!(row["partner"], "northwind");
    assert_eq!(row["customer"], ALICE);
    assert_eq!(row["state"], "active");
    assert!(row["since"].as_str().unwrap().ends_with('Z'));
    let (ok, text, _) = daemon.cli(&["status", ALICE]);
    assert!(ok && text.contains("active"), "{text}");

    // 7. SIGTERM stops cleanly, and a restart processes nothing again.
    let status = daemon.stop();
    assert!(status.success(), "exit status {status:?}\n{}", daemon.log());
    let (p1, a1) = (count(PARTNER1).await, count(ALICE).await);
    assert_eq!(
        (p1, a1),
        (2, 2),
        "transcript + notice; invitation + confirmation"
    );
    // With the daemon stopped, the CLI reads the store itself.
    assert_eq!(daemon.status(ALICE)[0]["state"], "active");
    daemon.spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (count(PARTNER1).await, count(ALICE).await),
        (p1, a1),
        "no mail twice after restart"
    );
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn korean_partner_invites_and_customer_declines_in_korean() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    send_raw(
        PARTNER2,
        &[COMMANDS],
        &mail(PARTNER2, COMMANDS, "명령", "", "invite bob@fabrikam.test\n"),
    )
    .await;
    let inv = wait_for(BOB, "Korean invitation", |m| m.subject.contains("[ref:")).await;
    assert!(inv.subject.contains("위임 관리자 권한"), "{}", inv.subject);
    assert!(inv.text.contains("Hanbit Cloud"));
    let ack = wait_for(PARTNER2, "transcript", |m| m.subject.contains("Liaison")).await;
    assert!(ack.text.contains("처리 결과"), "{}", ack.text);
    reply_to_invitation(BOB, &inv, "거절합니다").await;
    daemon.wait_state("hanbit", BOB, "declined").await;
    wait_for(PARTNER2, "decline notice", |m| {
        m.subject.starts_with("거절됨")
    })
    .await;
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locale_option_overrides_and_polling_mode_works() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    // IDLE off: the daemon polls every second.
    let mut daemon = Daemon::start(Transport::Polling);
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(
            PARTNER1,
            COMMANDS,
            "x",
            "",
            "invite carol@contoso.test locale ko\n",
        ),
    )
    .await;
    let inv = wait_for(CAROL, "invitation", |m| m.subject.contains("[ref:")).await;
    assert!(
        inv.subject.contains("Northwind Traders에서"),
        "{}",
        inv.subject
    );
    // "수락합니다" in the first line accepts.
    reply_to_invitation(CAROL, &inv, "수락합니다").await;
    daemon.wait_state("northwind", CAROL, "active").await;
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_forgeries_change_nothing_and_get_no_reply() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    // A non-partner sends commands: ignored, no reply.
    send_raw(
        DAVE,
        &[COMMANDS],
        &mail(DAVE, COMMANDS, "x", "", "invite alice@contoso.test\n"),
    )
    .await;
    // The real partner invites Alice.
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "x", "", "invite alice@contoso.test\n"),
    )
    .await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let reply_to = inv.reply_to.clone().unwrap();
    // Someone else answers with Alice's token: ignored.
    let body = "accept\n";
    send_raw(
        DAVE,
        &[&reply_to],
        &mail(DAVE, &reply_to, "Re: x", "", body),
    )
    .await;
    // Alice answers with a forged token: ignored.
    let token = reply_to
        .trim_start_matches("invites+")
        .trim_end_matches("@liaison.test");
    let mut forged: Vec<char> = token.chars().collect();
    forged[10] = if forged[10] == 'a' { 'b' } else { 'a' };
    let forged: String = forged.into_iter().collect();
    let forged_to = format!("invites+{forged}@liaison.test");
    send_raw(
        ALICE,
        &[&forged_to],
        &mail(ALICE, &forged_to, &format!("Re: [ref:{forged}]"), "", body),
    )
    .await;
    // An auto-reply from Alice with the right token: never answered, no change.
    send_raw(
        ALICE,
        &[&reply_to],
        &mail(
            ALICE,
            &reply_to,
            "Out of office",
            "Auto-Submitted: auto-replied\r\n",
            "accept\n",
        ),
    )
    .await;
    // Let the daemon see all of them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        daemon.status(ALICE)[0]["state"],
        "invited",
        "{}",
        daemon.log()
    );
    assert_eq!(count(DAVE).await, 0, "no backscatter to the stranger");
    assert_eq!(count(ALICE).await, 1, "only the invitation");
    let log = daemon.log();
    assert!(log.contains("not a configured partner"), "{log}");
    assert!(log.contains("only the invited address may answer"), "{log}");
    assert!(log.contains("Auto-Submitted"), "{log}");
    assert!(
        !log.contains("test-secret-0123456789abcdef"),
        "secret in log"
    );
    assert!(!log.contains("liaison-dev"), "password in log");
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_over_imaps_starttls_and_smtp_starttls_with_a_private_ca() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Tls);
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "x", "", "invite alice@contoso.test\n"),
    )
    .await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    reply_to_invitation(ALICE, &inv, "I accept").await;
    daemon.wait_state("northwind", ALICE, "active").await;
    let log = daemon.log();
    assert!(
        log.contains("inbox=commands") && log.contains("watching"),
        "{log}"
    );
    assert!(daemon.stop().success());
}
