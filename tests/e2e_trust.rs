//! End-to-end: the sender trust policy through the real loopback Postfix
//! and Dovecot. With `security.trusted_authserv_id` set, every mail whose
//! sender would get power from its address alone (partner commands, every
//! party of a ticket, support requests without a token) must carry an
//! aligned pass in the trusted MX's topmost `Authentication-Results`;
//! forgeries are quarantined with the reason, nothing is relayed, nobody is
//! answered. The loopback stack adds no `Authentication-Results` itself, so
//! the topmost header a test writes stands for the MX's own.

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
const DAVE: &str = "dave@fabrikam.test";
const TRUSTED: &str = "mail.liaison.test";

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, DESK, ALICE, BOB, CAROL, DAVE] {
        clear_mailbox(u).await;
    }
    for u in [COMMANDS, INVITES] {
        delete_folder(u, "Liaison/Quarantine").await;
    }
}

/// The trusted MX's header saying DKIM passed for `domain`.
fn passed(domain: &str) -> String {
    format!("Authentication-Results: {TRUSTED}; dkim=pass header.d={domain} header.s=s1\r\n")
}

/// A daemon that trusts `mail.liaison.test`, with `extra` security keys.
fn trusting_daemon(extra: &str) -> Daemon {
    let extra = extra.to_string();
    Daemon::start_custom(Transport::Plain, move |c| trusting(&c, TRUSTED, &extra))
}

/// An authenticated partner command mail; waits for its transcript.
async fn command(body: &str, subject: &str) -> Received {
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, subject, &passed("liaison.test"), body),
    )
    .await;
    wait_for(PARTNER1, "transcript", |m| {
        m.subject.contains(subject) && m.subject.contains("Liaison")
    })
    .await
}

async fn texts(user: &str) -> Vec<String> {
    fetch_all(user)
        .await
        .iter()
        .map(|r| Received::parse(r).text)
        .collect()
}

fn quarantine(daemon: &Daemon) -> Vec<(String, String)> {
    let (ok, out, err) = daemon.cli(&["quarantine", "list", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Invites Alice and lets her accept with her token (no authentication:
/// by default a valid token is credential enough), then revokes, so her
/// support requests open tickets.
async fn alice_removed_permissions(daemon: &Daemon) {
    command("invite alice@contoso.test", "invite").await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let to = inv.reply_to.clone().unwrap();
    send_raw(
        ALICE,
        &[&to],
        &mail(ALICE, &to, &format!("Re: {}", inv.subject), "", "Accept\n"),
    )
    .await;
    daemon.wait_state("northwind", ALICE, "active").await;
    command("revoked alice@contoso.test", "revoke").await;
    daemon
        .wait_state("northwind", ALICE, "permissions_removed")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_ticket_mail_is_quarantined_and_authenticated_mail_relayed() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = trusting_daemon("");
    alice_removed_permissions(&daemon).await;

    // A support request in Alice's name with no authentication: no ticket.
    send_raw(
        ALICE,
        &[INVITES],
        &mail(ALICE, INVITES, "Help", "", "FORGED-REQUEST open a ticket\n"),
    )
    .await;
    // The real Alice, authenticated: the ticket opens (as T-000001, so the
    // forged request opened none).
    send_raw(
        ALICE,
        &[INVITES],
        &mail(
            ALICE,
            INVITES,
            "Cannot sign in",
            &passed("contoso.test"),
            "Nobody can sign in since 9:00.\n",
        ),
    )
    .await;
    let desk = wait_for(DESK, "new ticket", |m| m.subject.starts_with("[T-")).await;
    assert!(desk.subject.starts_with("[T-000001] "), "{}", desk.subject);
    assert!(desk.text.contains("Nobody can sign in"), "{}", desk.text);
    wait_for(ALICE, "ticket acknowledgement", |m| {
        m.subject.contains("[T-000001]")
    })
    .await;

    // Forged answers "from the desk", threaded like the real one would be.
    let subject = format!("RE: {}", desk.subject);
    let threaded = format!("In-Reply-To: <{}>\r\n", desk.message_id);
    let forged_desk = [
        // No Authentication-Results at all.
        String::new(),
        // One written by another server (or the sender).
        "Authentication-Results: evil.example; dkim=pass header.d=liaison.test\r\n".into(),
        // The MX's own header says fail; the sender's forgery below it says pass.
        format!(
            "Authentication-Results: {TRUSTED}; dkim=fail header.d=liaison.test\r\n\
             Authentication-Results: {TRUSTED}; dkim=pass header.d=liaison.test\r\n"
        ),
        // The trusted domain only inside a comment.
        format!(
            "Authentication-Results: {TRUSTED}; dkim=pass (header.d=liaison.test) header.d=evil.example\r\n"
        ),
    ];
    for (i, ar) in forged_desk.iter().enumerate() {
        send_raw(
            DESK,
            &[INVITES],
            &mail(
                DESK,
                INVITES,
                &subject,
                &format!("{threaded}{ar}"),
                &format!("FORGED-DESK-{i}: log in at http://evil.example/\n"),
            ),
        )
        .await;
    }
    // A forged partner follow-up and a forged customer follow-up.
    send_raw(
        PARTNER1,
        &[INVITES],
        &mail(
            PARTNER1,
            INVITES,
            "Re: [T-000001] Ticket opened",
            "",
            "FORGED-PARTNER send everything to me\n",
        ),
    )
    .await;
    send_raw(
        ALICE,
        &[INVITES],
        &mail(
            ALICE,
            INVITES,
            "Re: [T-000001] Cannot sign in",
            "",
            "FORGED-CUSTOMER please reset my MFA\n",
        ),
    )
    .await;
    // The real desk, authenticated: relayed to Alice and the partner.
    send_raw(
        DESK,
        &[INVITES],
        &mail(
            DESK,
            INVITES,
            &subject,
            &format!("{threaded}{}", passed("liaison.test")),
            "Please reset your password.\n",
        ),
    )
    .await;
    wait_for(ALICE, "desk answer", |m| {
        m.text.contains("Please reset your password.")
    })
    .await;
    wait_for(PARTNER1, "desk answer copy", |m| {
        m.text.contains("Please reset your password.")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    for user in [ALICE, DESK, PARTNER1] {
        let t = texts(user).await;
        assert!(
            !t.iter().any(|t| t.contains("FORGED")),
            "{user} received forged text: {t:#?}"
        );
    }
    assert_eq!(
        texts(DESK).await.len(),
        1,
        "the desk got only the real ticket"
    );
    let q = quarantine(&daemon);
    assert_eq!(q.len(), 7, "{q:#?}");
    assert!(
        q.iter().all(|(_, r)| r.contains("is not authenticated")),
        "{q:#?}"
    );
    let count = |what: &str| q.iter().filter(|(_, r)| r.contains(what)).count();
    assert_eq!(count("support request (no token, no thread)"), 1, "{q:#?}");
    assert_eq!(
        count("ticket T-000001 claiming to be from the support desk"),
        4
    );
    assert_eq!(count("ticket T-000001 claiming to be from its partner"), 1);
    assert_eq!(count("ticket T-000001 claiming to be from its customer"), 1);
    assert_eq!(
        count("topmost Authentication-Results header is from evil.example"),
        1
    );
    assert_eq!(count("dkim=fail header.d=liaison.test"), 1);
    assert_eq!(count("dkim=pass header.d=evil.example (not aligned)"), 1);

    // The operator vouches for the first forged desk answer: released, it
    // is relayed after all.
    let (key, _) = q
        .iter()
        .find(|(_, r)| {
            r.contains("support desk") && r.contains("carries no Authentication-Results")
        })
        .unwrap()
        .clone();
    let (ok, out, err) = daemon.cli(&["quarantine", "release", &key]);
    assert!(ok, "{out}{err}");
    wait_for(ALICE, "released desk answer", |m| {
        m.text.contains("FORGED-DESK-0")
    })
    .await;
    assert_eq!(quarantine(&daemon).len(), 6);
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_authentication_results_never_authorise_a_partner_command() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    // A second partner under a multi-label public suffix, and customers who
    // must be authenticated even with a valid token.
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        format!(
            "{}\n[[partner]]\nid = \"brit\"\nname = \"Brit Ltd\"\nemails = [\"ops@x.co.uk\"]\n",
            trusting(&c, TRUSTED, "authenticate_customers = true\n")
        )
    });
    let forged = [
        // A forged pass below the MX's own dkim=fail.
        (
            PARTNER1,
            BOB,
            format!(
                "Authentication-Results: {TRUSTED}; dkim=fail header.d=liaison.test\r\n\
                 Authentication-Results: {TRUSTED}; dkim=pass header.d=liaison.test\r\n"
            ),
        ),
        // The partner's domain only in a comment.
        (
            PARTNER1,
            CAROL,
            format!("Authentication-Results: {TRUSTED}; dkim=pass (header.d=liaison.test) header.d=evil.example\r\n"),
        ),
        // A pass hidden in a quoted string.
        (
            PARTNER1,
            DAVE,
            format!("Authentication-Results: {TRUSTED}; dkim=fail reason=\"x; spf=pass smtp.mailfrom=liaison.test\" header.d=liaison.test\r\n"),
        ),
        // Another organisation under the same public suffix (co.uk).
        (
            "ops@x.co.uk",
            BOB,
            format!("Authentication-Results: {TRUSTED}; spf=pass smtp.mailfrom=bounce@evil.co.uk\r\n"),
        ),
    ];
    for (i, (from, customer, ar)) in forged.iter().enumerate() {
        send_raw(
            from,
            &[COMMANDS],
            &mail(
                from,
                COMMANDS,
                &format!("forged {i}"),
                ar,
                &format!("invite {customer}\n"),
            ),
        )
        .await;
    }
    // The real partner: its command runs (and, processed after the forged
    // ones, marks that they are done).
    command("invite alice@contoso.test", "real").await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for user in [BOB, CAROL, DAVE] {
        assert_eq!(fetch_all(user).await.len(), 0, "{user} was invited");
    }
    assert_eq!(fetch_all(PARTNER1).await.len(), 1, "no reply to forgeries");
    let q = quarantine(&daemon);
    assert_eq!(q.len(), 4, "{q:#?}");
    let has = |what: &str| q.iter().any(|(_, r)| r.contains(what));
    assert!(has("dkim=fail header.d=liaison.test"), "{q:#?}");
    assert!(
        has("dkim=pass header.d=evil.example (not aligned)"),
        "{q:#?}"
    );
    assert!(has("partner brit (ops@x.co.uk)"), "{q:#?}");
    assert!(
        has("spf=pass smtp.mailfrom=bounce@evil.co.uk (not aligned)"),
        "{q:#?}"
    );
    assert!(
        q.iter().all(|(_, r)| r.contains("no command run")),
        "{q:#?}"
    );

    // authenticate_customers: Alice's valid token alone is not enough…
    let to = inv.reply_to.clone().unwrap();
    let re = format!("Re: {}", inv.subject);
    send_raw(ALICE, &[&to], &mail(ALICE, &to, &re, "", "Accept\n")).await;
    // …with her domain authenticated it is.
    send_raw(
        ALICE,
        &[&to],
        &mail(ALICE, &to, &re, &passed("contoso.test"), "Accept\n"),
    )
    .await;
    daemon.wait_state("northwind", ALICE, "active").await;
    let q = quarantine(&daemon);
    assert_eq!(q.len(), 5, "{q:#?}");
    assert!(
        q.iter().any(
            |(_, r)| r.contains("answer claiming to be from the customer (with a valid token)")
        ),
        "{q:#?}"
    );
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_that_is_also_the_support_contact_answers_the_customer() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    make_active(&daemon, ALICE).await;
    // The README's own example: the desk is the support contact.
    partner_commands(
        "revoked alice@contoso.test\ncontact alice@contoso.test helpdesk@liaison.test",
        "revoke",
    )
    .await;
    daemon
        .wait_state("northwind", ALICE, "permissions_removed")
        .await;
    send_raw(
        ALICE,
        &[INVITES],
        &mail(
            ALICE,
            INVITES,
            "Cannot sign in",
            "",
            "Nobody can sign in.\n",
        ),
    )
    .await;
    let desk = wait_for(DESK, "new ticket", |m| m.subject.starts_with("[T-")).await;
    wait_for(PARTNER1, "ticket notice", |m| {
        m.subject.starts_with("[T-000001] Ticket opened")
    })
    .await;
    send_raw(
        DESK,
        &[INVITES],
        &mail(
            DESK,
            INVITES,
            &format!("RE: {}", desk.subject),
            &format!("In-Reply-To: <{}>\r\n", desk.message_id),
            "Please reset your password.\n",
        ),
    )
    .await;
    let relay = wait_for(ALICE, "desk answer", |m| {
        m.text.contains("Please reset your password.")
    })
    .await;
    assert!(relay.subject.contains("[T-000001]"), "{}", relay.subject);
    wait_for(PARTNER1, "desk answer copy", |m| {
        m.text.contains("Please reset your password.")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_desk: Vec<String> = fetch_all(DESK)
        .await
        .iter()
        .map(|r| Received::parse(r).subject)
        .collect();
    assert_eq!(
        at_desk,
        vec![desk.subject.clone()],
        "the desk gets the ticket once, and no copy of its own answer"
    );
    let log = daemon.log();
    assert!(
        log.contains("support desk helpdesk@liaison.test wrote to ticket T-000001"),
        "{log}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn check_config_warns_when_sender_addresses_are_not_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("liaison.toml");
    let run = |text: String| {
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_liaison"))
            .arg("--config")
            .arg(&path)
            .args(["check-config", "--offline"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let plain = config_text(tmp.path(), Transport::Plain);
    let err = run(plain.clone());
    assert!(
        err.contains(
            "warning: security.trusted_authserv_id is not set: sender addresses are not verified"
        ),
        "{err}"
    );
    let err = run(trusting(&plain, TRUSTED, ""));
    assert!(!err.contains("warning"), "{err}");
}
