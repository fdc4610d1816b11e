//! End-to-end: intent read from a customer's free text is conservative
//! (issue 11, point 6). A support question that merely contains a
//! lifecycle word ("revoke") is a support request, never a state change.

mod common;

use common::*;

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const DESK: &str = "helpdesk@liaison.test";
const ALICE: &str = "alice@contoso.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_question_with_revoke_in_the_invitation_thread_stays_active() {
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES, DESK, ALICE] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start(Transport::Plain);

    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(
            PARTNER1,
            COMMANDS,
            "invite",
            "",
            "invite alice@contoso.test",
        ),
    )
    .await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let to = inv.reply_to.clone().expect("Reply-To");
    let thread = format!(
        "In-Reply-To: <{0}>\r\nReferences: <{0}>\r\n",
        inv.message_id
    );
    let subject = format!("Re: {}", inv.subject);
    send_raw(
        ALICE,
        &[&to],
        &mail(ALICE, &to, &subject, &thread, "Accept\n"),
    )
    .await;
    daemon.wait_state("northwind", ALICE, "active").await;

    // The customer answers the same invitation thread again, now with a
    // support question that contains "revoke".
    let question = "How do I revoke a licence from an employee who left?";
    let quoted: String = inv.text.lines().map(|l| format!("> {l}\n")).collect();
    let body = format!("{question}\n\nOn Wed, 25 Nov 2026, Liaison <{INVITES}> wrote:\n{quoted}");
    send_raw(ALICE, &[&to], &mail(ALICE, &to, &subject, &thread, &body)).await;

    let fwd = wait_for(PARTNER1, "forwarded support question", |m| {
        m.subject.starts_with("Support request from")
    })
    .await;
    assert!(fwd.text.contains(question), "{}", fwd.text);
    let status = daemon.status(ALICE);
    let states: Vec<&str> = status
        .as_array()
        .expect("status is a list")
        .iter()
        .filter(|r| r["partner"] == "northwind")
        .filter_map(|r| r["state"].as_str())
        .collect();
    assert_eq!(states, ["active"], "{status}\n{}", daemon.log());
    assert!(
        !fetch_all(PARTNER1)
            .await
            .iter()
            .map(|r| Received::parse(r))
            .any(|m| m.subject.starts_with("Permissions removed:")),
        "the partner was told permissions were removed"
    );
    assert!(daemon.stop().success());
}
