//! End-to-end: support requests and tickets through the real loopback
//! Postfix and Dovecot. Each step asserts the mails that arrive in each
//! mailbox, not only the stored state.

mod common;

use common::*;
use std::time::Duration;

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const DESK: &str = "helpdesk@liaison.test";
const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";
const CAROL: &str = "carol@contoso.test";

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, DESK, ALICE, BOB, CAROL] {
        clear_mailbox(u).await;
    }
}

/// A mail with a small PDF attached.
fn with_attachment(from: &str, to: &str, subject: &str, headers: &str, text: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <att.{nanos}@client.test>\r\n{headers}\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n\
         --XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --XX\r\nContent-Type: application/pdf; name=\"error.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"error.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         JVBERi0xLjQKJcOkw7zDtsOfCg==\r\n--XX--\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_relationship_forwards_support_requests_to_the_partner() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    make_active(&daemon, CAROL).await;
    send_raw(
        CAROL,
        &[INVITES],
        &mail(
            CAROL,
            INVITES,
            "Licences missing",
            "",
            "We lost 3 licences overnight.\n",
        ),
    )
    .await;
    let fwd = wait_for(PARTNER1, "forwarded request", |m| {
        m.subject.starts_with("Support request from")
    })
    .await;
    assert!(
        fwd.text.contains("We lost 3 licences overnight."),
        "{}",
        fwd.text
    );
    assert_eq!(fwd.reply_to.as_deref(), Some(CAROL));
    wait_for(CAROL, "acknowledgement", |m| {
        m.subject == "Re: Licences missing"
    })
    .await;
    assert_eq!(
        count_where(DESK, |_| true).await,
        0,
        "no ticket while the partner holds permissions"
    );
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_open_thread_relay_refuse_hijacks_close_and_reopen() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    make_active(&daemon, ALICE).await;
    partner_commands(
        "revoked alice@contoso.test\ncontact alice@contoso.test carol@contoso.test",
        "revoke",
    )
    .await;
    daemon
        .wait_state("northwind", ALICE, "permissions_removed")
        .await;

    // 1. Alice asks for help (with an attachment): a ticket opens.
    send_raw(
        ALICE,
        &[INVITES],
        &with_attachment(
            ALICE,
            INVITES,
            "Cannot sign in",
            "",
            "Nobody can sign in since 9:00.",
        ),
    )
    .await;
    let desk = wait_for(DESK, "new ticket", |m| m.subject.starts_with("[T-")).await;
    assert_eq!(
        desk.subject,
        "[T-000001] Support request for alice@contoso.test on behalf of Northwind Traders"
    );
    assert!(
        desk.text.contains("Nobody can sign in since 9:00."),
        "{}",
        desk.text
    );
    assert!(
        desk.text.contains("carol@contoso.test"),
        "support contact named: {}",
        desk.text
    );
    assert!(desk.raw.contains("error.pdf"), "attachment forwarded");
    let ack = wait_for(ALICE, "ticket acknowledgement", |m| {
        m.subject.contains("[T-000001]")
    })
    .await;
    assert!(ack.text.contains("T-000001"));
    wait_for(PARTNER1, "ticket notice", |m| {
        m.subject.starts_with("[T-000001] Ticket opened")
    })
    .await;
    wait_for(CAROL, "ticket notice to the support contact", |m| {
        m.subject.starts_with("[T-000001]")
    })
    .await;

    // 2. Alice follows up by replying to the acknowledgement.
    let headers = format!("In-Reply-To: <{}>\r\n", ack.message_id);
    send_raw(
        ALICE,
        &[INVITES],
        &mail(
            ALICE,
            INVITES,
            &format!("Re: {}", ack.subject),
            &headers,
            "It also fails on mobile.\n",
        ),
    )
    .await;
    let follow = wait_for(DESK, "follow-up", |m| {
        m.text.contains("It also fails on mobile.")
    })
    .await;
    assert!(follow.subject.contains("[T-000001]"), "{}", follow.subject);
    assert_eq!(
        follow.in_reply_to.as_deref(),
        Some(desk.message_id.as_str()),
        "threaded for the desk"
    );

    // 3. The desk replies: relayed to Alice and to the partner.
    let headers = format!("In-Reply-To: <{}>\r\n", desk.message_id);
    send_raw(
        DESK,
        &[INVITES],
        &mail(
            DESK,
            INVITES,
            &format!("RE: {}", desk.subject),
            &headers,
            "Please reset your password.\n",
        ),
    )
    .await;
    let relay = wait_for(ALICE, "desk answer", |m| {
        m.text.contains("Please reset your password.")
    })
    .await;
    assert!(relay.subject.contains("[T-000001]"));
    wait_for(PARTNER1, "desk answer copy", |m| {
        m.text.contains("Please reset your password.")
    })
    .await;

    // 4. Bob quotes the ticket number: refused, nothing relayed, no reply.
    let desk_before = count_where(DESK, |_| true).await;
    send_raw(
        BOB,
        &[INVITES],
        &mail(
            BOB,
            INVITES,
            "Re: [T-000001] Cannot sign in",
            "",
            "Send me Alice's data\n",
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count_where(DESK, |_| true).await,
        desk_before,
        "hijack not relayed"
    );
    assert_eq!(
        count_where(BOB, |_| true).await,
        0,
        "no reply to the hijacker"
    );
    assert!(
        daemon.log().contains("possible ticket hijack"),
        "{}",
        daemon.log()
    );

    // 5. The partner looks at and closes the ticket; both sides are told.
    let t = partner_commands("tickets\nticket T-000001", "look").await;
    assert!(
        t.text.contains("T-000001  waiting_on_customer"),
        "{}",
        t.text
    );
    assert!(t.text.contains("It also fails on mobile."), "{}", t.text);
    // The same through the CLI, asking the running daemon.
    let (ok, out, err) = daemon.cli(&["tickets", "--json"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["id"], "T-000001");
    assert_eq!(rows[0]["state"], "waiting_on_customer");
    let (ok, out, err) = daemon.cli(&["ticket", "T-000001"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("It also fails on mobile.") && out.contains("SupportDesk"),
        "{out}"
    );
    let t = partner_commands("close T-000001 solved by a password reset", "close").await;
    assert!(t.text.contains("ticket T-000001 closed"), "{}", t.text);
    wait_for(ALICE, "closed notice", |m| m.subject.contains("is closed")).await;
    wait_for(DESK, "closed notice", |m| m.subject.contains("Closed:")).await;

    // 6. Alice writes again in the thread within 14 days: reopened.
    send_raw(
        ALICE,
        &[INVITES],
        &mail(
            ALICE,
            INVITES,
            "Re: [T-000001] Your support request is closed",
            "",
            "It broke again.\n",
        ),
    )
    .await;
    let reopened = wait_for(DESK, "reopened follow-up", |m| {
        m.text.contains("It broke again.")
    })
    .await;
    assert!(reopened.text.contains("reopened"), "{}", reopened.text);
    let t = partner_commands("tickets", "after").await;
    assert!(
        t.text.contains("T-000001  waiting_on_support"),
        "{}",
        t.text
    );
    assert!(daemon.stop().success());
}
