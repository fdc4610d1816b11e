//! End-to-end: the daemon reads a customer's answer with the invitation it
//! sent as the known original (issue 15). The reply puts a header block in
//! a language no heuristic knows on top, pastes the invitation below it
//! without quote marks, and answers at the very bottom: only the invitation
//! kept in the store (`omid/…`) tells where the copy ends. The heuristics
//! alone would keep the copy (with its "accept" and "decline") and lose
//! the answer.

mod common;

use common::*;

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const ALICE: &str = "alice@contoso.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_below_an_unmarked_copy_in_an_unknown_format_decides() {
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES, ALICE] {
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
    let body = format!(
        "Mnamo Jumanne tarehe 6 Januari 2026 Liaison <{INVITES}> aliandika hivi\n\n{}\n\nDecline, thank you.\n",
        inv.text.trim()
    );
    let heuristic = liaison_core::mail::reply::new_text(&body);
    assert!(
        heuristic.contains("To decline, reply with the word") && !heuristic.contains("thank you"),
        "the heuristics alone keep the copy and lose the answer: {heuristic:?}"
    );
    send_raw(ALICE, &[&to], &mail(ALICE, &to, &subject, &thread, &body)).await;
    daemon.wait_state("northwind", ALICE, "declined").await;
    assert!(daemon.stop().success());
}
