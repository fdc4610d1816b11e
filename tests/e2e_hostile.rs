//! End-to-end: hostile and broken mail through the real loopback Postfix
//! and Dovecot. Each case asserts its exact outcome: what changed (nothing),
//! who got mail (nobody, or exactly the partner), and what was recorded.

mod common;

use common::*;
use std::time::Duration;

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const ALICE: &str = "alice@contoso.test";
const DAVE: &str = "dave@fabrikam.test";
const TRUSTED: &str = "mail.liaison.test";

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, ALICE, DAVE] {
        clear_mailbox(u).await;
    }
    for u in [COMMANDS, INVITES] {
        delete_folder(u, "Liaison/Quarantine").await;
    }
}

async fn count(user: &str) -> usize {
    fetch_all(user).await.len()
}

/// A partner command that our (trusted) receiving server authenticated.
fn authenticated(body: &str, subject: &str) -> String {
    mail(
        PARTNER1,
        COMMANDS,
        subject,
        &format!(
            "Authentication-Results: {TRUSTED}; dkim=pass header.d=liaison.test header.s=s1\r\n"
        ),
        body,
    )
}

fn quarantine(daemon: &Daemon) -> serde_json::Value {
    let (ok, out, err) = daemon.cli(&["quarantine", "list", "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mail_changes_nothing_and_is_accounted_for() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        trusting(&c, TRUSTED, "max_message_bytes = 65536\n")
    });

    // 1. A forged partner: right From, no authentication by our server.
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(
            PARTNER1,
            COMMANDS,
            "forged",
            "",
            "invite alice@contoso.test\n",
        ),
    )
    .await;
    // …and one that forged the header itself, naming another server.
    let forged_header = mail(
        PARTNER1,
        COMMANDS,
        "forged2",
        "Authentication-Results: evil.example; dkim=pass header.d=liaison.test\r\n",
        "invite alice@contoso.test\n",
    );
    send_raw(PARTNER1, &[COMMANDS], &forged_header).await;
    // 2. The real partner, authenticated: works.
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &authenticated("invite alice@contoso.test\n", "real"),
    )
    .await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    wait_for(PARTNER1, "transcript", |m| m.subject.contains("real")).await;
    let q = quarantine(&daemon);
    let reasons: Vec<&str> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.contains("not authenticated")),
        "{reasons:?}"
    );
    assert_eq!(count(ALICE).await, 1, "only the authenticated invite acted");
    assert_eq!(count(PARTNER1).await, 1, "no reply to forged mail");
    // The quarantined mails were copied to the quarantine folder.
    for _ in 0..50 {
        if folder_count(COMMANDS, "Liaison/Quarantine").await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(folder_count(COMMANDS, "Liaison/Quarantine").await, 2);

    // 3. Automatic mail from the customer with her valid token: never answered.
    let to = inv.reply_to.clone().unwrap();
    for header in [
        "Auto-Submitted: auto-replied\r\n",
        "Precedence: bulk\r\n",
        "List-Id: <customers.contoso.test>\r\n",
        "X-Auto-Response-Suppress: All\r\n",
    ] {
        send_raw(
            ALICE,
            &[&to],
            &mail(ALICE, &to, "Out of office", header, "accept\n"),
        )
        .await;
    }
    send_null_sender(&[&to], &mail(ALICE, &to, "Null sender", "", "accept\n")).await;
    // 4. A forged token, and a header-injection attempt in an encoded subject.
    let token = to
        .trim_start_matches("invites+")
        .trim_end_matches("@liaison.test");
    let forged: String = token.chars().rev().collect();
    let forged_to = format!("invites+{forged}@liaison.test");
    send_raw(
        ALICE,
        &[&forged_to],
        &mail(ALICE, &forged_to, "Re: invitation", "", "accept\n"),
    )
    .await;
    let injection = "invite alice@contoso.test name \"Contoso\r\nBcc: dave@fabrikam.test\"";
    let b64 = data_encoding::BASE64.encode(injection.as_bytes());
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &authenticated("", &format!("=?utf-8?B?{b64}?=")),
    )
    .await;
    // 5. An absurdly long line. Postfix folds it into lines of under 1000
    //    bytes; what reaches Liaison is refused piece by piece, and the
    //    transcript stays short.
    let long = format!("invite {}\n", "x".repeat(30_000));
    send_raw(PARTNER1, &[COMMANDS], &authenticated(&long, "long")).await;
    // 6. Oversized mail (over the 64 KiB limit of this daemon).
    let big = "A".repeat(200_000);
    send_raw(
        ALICE,
        &[INVITES],
        &mail(ALICE, INVITES, "big", "", &format!("accept\n{big}\n")),
    )
    .await;
    // 7. Malformed MIME: a multipart with no closing boundary, bad base64
    //    and an unknown charset, from a stranger.
    let broken = "From: dave@fabrikam.test\r\nTo: invites@liaison.test\r\nSubject: broken\r\n\
                  Message-ID: <broken1@client.test>\r\nMIME-Version: 1.0\r\n\
                  Content-Type: multipart/mixed; boundary=\"NEVER\"\r\n\r\n--NEVER\r\n\
                  Content-Type: text/plain; charset=x-no-such-charset\r\n\
                  Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n";
    send_raw(DAVE, &[INVITES], broken).await;

    // Exact outcomes.
    let transcript = |subject: &'static str| async move {
        wait_for(PARTNER1, "transcript", move |m| m.subject.contains(subject)).await
    };
    let t = transcript("long").await;
    assert!(t.text.contains("is not an email address"), "{}", t.text);
    assert!(
        t.text.contains("Stopped after 3 unknown commands"),
        "{}",
        t.text
    );
    assert!(!t.text.contains("invited"), "{}", t.text);
    assert!(
        t.text.len() < 3000,
        "transcript stays short: {} bytes",
        t.text.len()
    );
    // The injected subject decodes to two lines; the first has an unclosed
    // quote, so nothing runs, the partner is told why, and no header is ever
    // built from it: Dave receives nothing.
    let injected = wait_for(PARTNER1, "transcript of the injection", |m| {
        m.subject.contains("Bcc: dave")
    })
    .await;
    assert!(
        injected.text.contains("a double quote is not closed"),
        "{}",
        injected.text
    );
    assert!(
        !injected.raw.contains("\r\nBcc:"),
        "no Bcc header in the transcript"
    );
    // Let the daemon work through everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let q = quarantine(&daemon);
    let reasons: Vec<String> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("over the limit of 65536 bytes; not downloaded")),
        "{reasons:?}"
    );
    assert_eq!(
        folder_count(INVITES, "Liaison/Quarantine").await,
        1,
        "the big mail is set aside"
    );
    assert_eq!(
        daemon.status(ALICE)[0]["state"],
        "invited",
        "nothing accepted anything"
    );
    assert_eq!(
        count(ALICE).await,
        1,
        "no reply to auto-replies, forgeries or the oversized mail"
    );
    assert_eq!(count(DAVE).await, 0, "no backscatter, no injected Bcc");
    let log = daemon.log();
    for reason in [
        "Auto-Submitted: auto-replied",
        "Precedence: bulk",
        "List-Id present",
        "X-Auto-Response-Suppress",
        "empty Return-Path",
        // A reversed token is either malformed or names no invitation.
        "PlusAddress token",
        "neither a partner nor a known customer",
    ] {
        assert!(log.contains(reason), "log lacks {reason:?}:\n{log}");
    }
    // The operator vouches for one forged-looking command: released, it runs
    // (Alice was invited already, so the transcript says so), and it leaves
    // the quarantine.
    let first_key = q
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"].as_str().unwrap().contains("not authenticated"))
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out, err) = daemon.cli(&["quarantine", "release", &first_key]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("released") && out.contains("(command)"),
        "{out}"
    );
    wait_for(PARTNER1, "transcript of the released command", |m| {
        m.subject.contains("forged")
    })
    .await;
    assert_eq!(quarantine(&daemon).as_array().unwrap().len(), 2);
    let (ok, _, err) = daemon.cli(&["quarantine", "release", &first_key]);
    assert!(!ok && err.contains("not quarantined"), "{err}");
    // Every processed message is marked on the server.
    let raw = fetch_all(INVITES).await;
    assert!(!raw.is_empty());
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_invitations_and_bounces_tell_the_partner() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    // Postfix refuses an unknown user at RCPT time: a permanent 5xx.
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "x", "", "invite nobody@contoso.test\n"),
    )
    .await;
    let notice = wait_for(PARTNER1, "failure notice", |m| {
        m.subject.starts_with("Not delivered:")
    })
    .await;
    assert!(
        notice.text.contains("nobody@contoso.test"),
        "{}",
        notice.text
    );
    assert!(
        notice.text.contains("550"),
        "the server's answer is quoted: {}",
        notice.text
    );

    // A bounce arriving later (as from a relay) for a delivered invitation.
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "y", "", "invite alice@contoso.test\n"),
    )
    .await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let dsn = format!(
        "From: MAILER-DAEMON@relay.contoso.test\r\nTo: invites@liaison.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
Message-ID: <dsn.{}@relay.contoso.test>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.contoso.test\r\n\r\n\
Final-Recipient: rfc822; alice@contoso.test\r\nAction: failed\r\nStatus: 5.2.2\r\n\
Diagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{}>\r\nSubject: x\r\n\r\n--B--\r\n",
        inv.message_id, inv.message_id
    );
    // A relay sends it to the envelope sender it saw: the invitation's own
    // bounce address (Alice's copy records it as Return-Path).
    let bounce_to = inv
        .header("Return-Path")
        .expect("Return-Path")
        .trim_matches(['<', '>'])
        .to_string();
    assert!(bounce_to.starts_with("invites+b-"), "{bounce_to}");
    send_null_sender(&[&bounce_to], &dsn).await;
    let notice = wait_for(PARTNER1, "bounce notice", |m| {
        m.subject == "Not delivered: your invitation to alice@contoso.test"
    })
    .await;
    assert!(notice.text.contains("mailbox full"), "{}", notice.text);
    assert_eq!(count(ALICE).await, 1, "the bounce is never answered");
    assert!(daemon.stop().success());
}

/// A campaign of forged, malformed and flooding mail against a daemon with a
/// trusted MX: none of it may change a state, reach anyone, or be lost (each
/// has its processed record), and the legitimate commands mixed into it are
/// answered exactly once each. The counts are written to the test's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_campaign_is_refused_lost_never_and_answered_once() {
    use std::io::Write;
    const BOB: &str = "bob@fabrikam.test";
    const CAROL: &str = "carol@contoso.test";
    const DESK: &str = "helpdesk@liaison.test";
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    for u in [BOB, CAROL, DESK] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        trusting(&c, TRUSTED, "max_message_bytes = 65536\n")
    });
    // The world under attack: Alice active, Bob invited.
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &authenticated(
            "invite alice@contoso.test\ninvite bob@fabrikam.test\n",
            "setup",
        ),
    )
    .await;
    let alice_inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let bob_inv = wait_for(BOB, "invitation", |m| m.subject.contains("[ref:")).await;
    let alice_to = alice_inv.reply_to.clone().unwrap();
    send_raw(
        ALICE,
        &[&alice_to],
        &mail(ALICE, &alice_to, "Re: invitation", "", "Accept\n"),
    )
    .await;
    daemon.wait_state("northwind", ALICE, "active").await;
    wait_for(PARTNER1, "acceptance notice", |m| m.text.contains(ALICE)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<(&str, usize)> = {
        let mut v = Vec::new();
        for u in [PARTNER1, ALICE, BOB, CAROL, DAVE, DESK] {
            v.push((u, count(u).await));
        }
        v
    };
    let processed_before = processed_total(&daemon);

    let bob_token = bob_inv
        .reply_to
        .clone()
        .unwrap()
        .trim_start_matches("invites+")
        .trim_end_matches("@liaison.test")
        .to_string();
    let forged_token: String = bob_token.chars().rev().collect();
    let a_r = |v: &str| format!("Authentication-Results: {v}\r\n");
    let mut forged: Vec<(&str, Vec<&str>, String)> = Vec::new();
    // Partner commands whose authentication is forged, each way.
    for header in [
        String::new(),
        a_r("evil.example; dkim=pass header.d=liaison.test"),
        a_r(&format!("{TRUSTED}; dkim=fail header.d=liaison.test"))
            + &a_r(&format!("{TRUSTED}; dkim=pass header.d=liaison.test")),
        a_r(&format!(
            "{TRUSTED}; dkim=fail (header.d=liaison.test dkim=pass) header.d=evil.example"
        )),
        a_r(&format!(
            "{TRUSTED}; spf=pass smtp.mailfrom=liaison.test.evil.example"
        )),
    ] {
        forged.push((
            PARTNER1,
            vec![COMMANDS],
            mail(
                PARTNER1,
                COMMANDS,
                "forged command",
                &header,
                "invite carol@contoso.test\nremove alice@contoso.test\n",
            ),
        ));
    }
    // Answers for Bob: a reversed token, a thread to an id nobody sent, and
    // a thread to the invitation's real Message-ID from a stranger.
    let forged_to = format!("invites+{forged_token}@liaison.test");
    forged.push((
        BOB,
        vec![&forged_to],
        mail(BOB, &forged_to, "Re: invitation", "", "accept\n"),
    ));
    forged.push((
        BOB,
        vec![INVITES],
        mail(
            BOB,
            INVITES,
            "Re: invitation",
            "In-Reply-To: <liaison.0123456789abcdef01234567@liaison.test>\r\n",
            "accept\n",
        ),
    ));
    forged.push((
        DAVE,
        vec![INVITES],
        mail(
            DAVE,
            INVITES,
            "Re: invitation",
            &format!("In-Reply-To: <{}>\r\n", bob_inv.message_id),
            "accept\n",
        ),
    ));
    // A desk answer and a ticket follow-up nobody authenticated.
    forged.push((
        DESK,
        vec![INVITES],
        mail(
            DESK,
            INVITES,
            "RE: [T-000001] help",
            "",
            "Log in at http://evil.example/\n",
        ),
    ));
    // Several authors.
    forged.push((
        PARTNER1,
        vec![COMMANDS],
        format!("From: {PARTNER1}, <mallory@evil.example>\r\nTo: {COMMANDS}\r\nSubject: two authors\r\nMessage-ID: <two-authors@evil.example>\r\n\r\ninvite carol@contoso.test\r\n"),
    ));
    let mut bounces = 0;
    // Bounces naming Bob's invitation: to the untagged address.
    let dsn = format!(
        "From: MAILER-DAEMON@relay.evil.example\r\nTo: {INVITES}\r\nSubject: Undelivered\r\n\
Message-ID: <forged-dsn@relay.evil.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.evil.example\r\n\r\n\
Final-Recipient: rfc822; {BOB}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 see http://evil.example/login\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{}>\r\n\r\n--B--\r\n",
        bob_inv.message_id
    );
    send_null_sender(&[INVITES], &dsn).await;
    bounces += 1;
    send_raw(
        DAVE,
        &[INVITES],
        &dsn.replace("forged-dsn@", "forged-dsn2@"),
    )
    .await;
    bounces += 1;
    // Flooding: forged support requests from Alice, strangers writing
    // commands, and a stranger asking for help again and again.
    let mut flooding: Vec<(&str, Vec<&str>, String)> = Vec::new();
    for i in 0..20 {
        flooding.push((
            ALICE,
            vec![INVITES],
            mail(
                ALICE,
                INVITES,
                &format!("urgent {i}"),
                "",
                "Please call me at once.\n",
            ),
        ));
    }
    for i in 0..15 {
        flooding.push((
            DAVE,
            vec![COMMANDS],
            mail(DAVE, COMMANDS, &format!("help {i}"), "", "help\n"),
        ));
    }
    // Malformed.
    let malformed: Vec<(&str, Vec<&str>, String)> = vec![
        (DAVE, vec![INVITES], "From: dave@fabrikam.test\r\nTo: invites@liaison.test\r\nSubject: broken\r\nMessage-ID: <broken2@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"NEVER\"\r\n\r\n--NEVER\r\nContent-Type: text/plain; charset=x-no-such-charset\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n".to_string()),
        (DAVE, vec![INVITES], "this is not a mail at all\r\n\r\n\u{0}\u{1}\u{2}".to_string()),
        (DAVE, vec![COMMANDS], format!("From: dave@fabrikam.test\r\nTo: {COMMANDS}\r\nSubject: =?x-bogus?Q?=FF=FE?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=FF=FE=00 invite carol@contoso.test\r\n")),
        (ALICE, vec![INVITES], mail(ALICE, INVITES, "huge", "", &format!("accept\n{}\n", "B".repeat(120_000)))),
    ];
    // Legitimate commands mixed in: each must get exactly one transcript.
    let mut legit_ids = Vec::new();
    let mut legit: Vec<(&str, Vec<&str>, String)> = Vec::new();
    for i in 0..8 {
        let m = authenticated("status\n", &format!("legit {i}"));
        legit_ids.push(message_id_of(&m));
        legit.push((PARTNER1, vec![COMMANDS], m));
    }
    let all: Vec<&(&str, Vec<&str>, String)> = forged
        .iter()
        .chain(&flooding)
        .chain(&malformed)
        .chain(&legit)
        .collect();
    for (from, to, raw) in &all {
        send_raw(from, to, raw).await;
    }
    let sent = all.len() as u64 + bounces;
    // None lost: every mail gets its processed record.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while processed_total(&daemon) < processed_before + sent {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {sent} mails were processed:\n{}",
            processed_total(&daemon) - processed_before,
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Give the outbox time to send anything it (wrongly) queued.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        processed_total(&daemon),
        processed_before + sent,
        "one record per mail"
    );
    // None accepted.
    assert_eq!(daemon.status(ALICE)[0]["state"], "active");
    assert_eq!(daemon.status(BOB)[0]["state"], "invited");
    assert_eq!(
        daemon.status(CAROL).as_array().map_or(0, Vec::len),
        0,
        "Carol was never invited"
    );
    let (ok, tickets, _) = daemon.cli(&["tickets", "--all", "--json"]);
    assert!(ok);
    assert_eq!(tickets.trim(), "[]", "no ticket was opened");
    // Answered once: one transcript per legitimate command, nothing else.
    let partner_mail: Vec<Received> = fetch_all(PARTNER1)
        .await
        .iter()
        .map(|r| Received::parse(r))
        .collect();
    for id in &legit_ids {
        let answers = partner_mail
            .iter()
            .filter(|m| m.in_reply_to.as_deref() == Some(id.as_str()))
            .count();
        assert_eq!(answers, 1, "command {id} answered {answers} times");
    }
    for (u, n) in &before {
        let expected = if *u == PARTNER1 {
            n + legit_ids.len()
        } else {
            *n
        };
        let now = count(u).await;
        assert_eq!(
            now,
            expected,
            "{u} received {} unexpected mails",
            now as i64 - expected as i64
        );
    }
    let forged_n = forged.len() as u64 + bounces;
    let report = format!(
        "hostile campaign: {forged_n} forged, {} malformed and {} flooding mails tried, with {} legitimate commands among them: 0 accepted, 0 lost ({sent} of {sent} have a processed record), 0 answered twice ({} transcripts, one per command)",
        malformed.len(),
        flooding.len(),
        legit_ids.len(),
        legit_ids.len()
    );
    // Straight to the process's stderr, past the harness's capture, so the
    // suite's output carries the figures.
    writeln!(std::io::stderr(), "{report}").unwrap();
    assert!(daemon.stop().success());
}
