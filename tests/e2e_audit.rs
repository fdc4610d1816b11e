//! End-to-end: holes found by going over the merged code once more as an
//! attacker would, each tried against the real loopback Postfix and
//! Dovecot and the real binary.

mod common;

use common::*;
use std::time::{Duration, Instant};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";

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
                 Content-Type: text/plain; charset=utf-8\r\n\r\nhelp\r\n"
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

/// A support request with a 12 kB attachment.
fn request_with_attachment(from: &str, i: usize) -> String {
    let data = "QUJD".repeat(4096);
    format!(
        "From: {from}\r\nTo: {INVITES}\r\nSubject: Request {i}\r\nMessage-ID: <req.{i}.{}@contoso.test>\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease look at the attached log.\r\n\
         --b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"log{i}.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{data}\r\n--b--\r\n",
        std::process::id()
    )
}

/// Held mails used to be kept whole without any bound: every support
/// request past the per-customer cap was stored with its attachments, so
/// whoever can send support requests as a customer (an authenticated one,
/// a holder of a forwarded token, or anyone while senders are not
/// verified) could fill the disk. Now the held mails are bounded by
/// `security.held_store_bytes`: past it a hold is listed with the reason
/// but not kept, and it cannot be released (it says why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_mails_cannot_fill_the_store() {
    const CAROL: &str = "carol@contoso.test";
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES, CAROL] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        c.replace(
            "invitation_ttl_days = 90\n",
            "invitation_ttl_days = 90\nmax_support_requests_per_hour = 1\nheld_store_bytes = 40000\n",
        )
    });
    make_active(&daemon, CAROL).await;
    let before = processed_total(&daemon);
    let requests: Vec<String> = (0..8).map(|i| request_with_attachment(CAROL, i)).collect();
    append_all(INVITES, &requests).await;
    wait_processed(&daemon, before + 8).await;
    let (ok, out, err) = daemon.cli(&["held", "list", "--json"]);
    assert!(ok, "held list failed: {err}");
    let held: Vec<serde_json::Value> = serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    // Seven requests held, each with its forward and its acknowledgement:
    // all listed, whether kept or not.
    assert_eq!(held.len(), 14, "{held:#?}\n{}", daemon.log());
    let forwards: Vec<&serde_json::Value> = held
        .iter()
        .filter(|h| {
            h["subject"]
                .as_str()
                .unwrap()
                .starts_with("Support request from")
        })
        .collect();
    let kept = forwards.iter().filter(|h| h["kept"] == true).count();
    let dropped: Vec<&&serde_json::Value> =
        forwards.iter().filter(|h| h["kept"] == false).collect();
    // A forward with its attachment is about 16 kB: at most two fit.
    assert!(kept <= 2, "{kept} forwards kept whole: {held:#?}");
    assert!(dropped.len() >= 5, "{held:#?}");
    assert!(
        dropped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("security.held_store_bytes"),
        "{}",
        dropped[0]
    );
    // Releasing one that was not kept says why and sends nothing.
    let id = dropped[0]["id"].to_string();
    let (ok, _, err) = daemon.cli(&["held", "release", &id]);
    assert!(!ok && err.contains("not kept"), "{err}");
    let (_, out, _) = daemon.cli(&["held", "list", "--json"]);
    assert!(
        out.contains(&format!("\"id\":{id},")),
        "still listed: {out}"
    );
    assert!(daemon.stop().success());
}

/// What the CLI prints of text a mail wrote (a held mail's subject, a
/// quarantined mail's key, which starts with its Message-ID) reached the
/// operator's terminal raw: an escape sequence in a subject could erase the
/// line `held list` printed and write another, so a held forward looks
/// like something else before the operator releases it. Now control and
/// format characters are printed as visible escapes, and the subject
/// quoted in Liaison's own mails loses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_text_cannot_drive_the_operators_terminal() {
    const CAROL: &str = "carol@contoso.test";
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES, CAROL] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        c.replace(
            "invitation_ttl_days = 90\n",
            "invitation_ttl_days = 90\nmax_support_requests_per_hour = 1\n",
        )
    });
    make_active(&daemon, CAROL).await;
    let before = processed_total(&daemon);
    // ESC [2K ESC [1A (erase the line, go up), a bidi override, and an
    // OSC window title, as an encoded-word the way any mail client sends it.
    let subject = "=?utf-8?q?Invoice_=1B[2K=1B[1A=E2=80=AEfdp.exe_=1B]0;owned=07?=";
    let requests: Vec<String> = (0..2)
        .map(|i| {
            mail(
                CAROL,
                INVITES,
                &format!("{subject} {i}"),
                "",
                "See the attached invoice.\n",
            )
        })
        .collect();
    // A mail with two authors is quarantined; its Message-ID (the start of
    // the key `quarantine list` prints) carries an escape too.
    let forged = format!(
        "From: {PARTNER1}, {CAROL}\r\nTo: {COMMANDS}\r\nSubject: x\r\n\
         Message-ID: <\x1b[2Kfine.{}@evil.test>\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nstatus\r\n",
        std::process::id()
    );
    append_all(INVITES, &requests).await;
    append_all(COMMANDS, &[forged]).await;
    wait_processed(&daemon, before + 3).await;
    let (ok, held, err) = daemon.cli(&["held", "list"]);
    assert!(ok, "{err}");
    assert!(held.contains("Invoice"), "{held}\n{}", daemon.log());
    let (ok, quarantine, err) = daemon.cli(&["quarantine", "list"]);
    assert!(ok, "{err}");
    assert!(quarantine.contains("fine."), "{quarantine}");
    for out in [&quarantine, &held] {
        assert!(
            !out.chars()
                .any(|c| c == '\x1b' || c == '\x07' || c == '\u{202e}'),
            "raw control characters reach the terminal: {out:?}"
        );
    }
    assert!(
        quarantine.contains("\\u{1b}[2Kfine."),
        "shown as escapes: {quarantine:?}"
    );
    // The forward that went out quotes the subject without them: under
    // Liaison's name, "Invoice <U+202E>fdp.exe" must not read "exe.pdf".
    let forward = wait_for(PARTNER1, "forward", |m| {
        m.subject.starts_with("Support request from")
    })
    .await;
    assert!(
        !forward
            .subject
            .chars()
            .any(|c| c.is_control() || liaison_core::command::is_format_character(c)),
        "{:?}",
        forward.subject
    );
    assert!(forward.subject.contains("Invoice"), "{:?}", forward.subject);
    assert!(daemon.stop().success());
}

/// `quarantine list --json`, parsed.
fn quarantine(daemon: &Daemon) -> Vec<serde_json::Value> {
    let (ok, out, err) = daemon.cli(&["quarantine", "list", "--json"]);
    assert!(ok, "quarantine list failed: {err}");
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Releasing a quarantined mail trusts its sender. That is what the
/// operator means for a mail quarantined because its sender was not
/// authenticated, but not for one quarantined by an internal error: a
/// forged partner command that happened to hit a bug was run, unchecked,
/// once the operator released it after the fix. Now such a release decides
/// it under the full policy first; refused for a reason the operator was
/// not shown, it is quarantined again with that reason, and only a second
/// release, of what the operator has now seen, trusts the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_a_mail_after_a_bug_does_not_vouch_for_its_sender() {
    const DAVE: &str = "dave@fabrikam.test";
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES, DAVE] {
        clear_mailbox(u).await;
    }
    // The debug build's test-only fault hook (inherited by the daemon).
    std::env::set_var("LIAISON_TEST_PANIC_SUBJECT", "audit-bug");
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        c.replace(
            "invitation_ttl_days = 90\n",
            "invitation_ttl_days = 90\ntrusted_authserv_id = \"mail.liaison.test\"\n",
        )
    });
    std::env::remove_var("LIAISON_TEST_PANIC_SUBJECT");
    // A forged partner command: no Authentication-Results at all.
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(
            PARTNER1,
            COMMANDS,
            "hits the audit-bug",
            "",
            &format!("invite {DAVE}"),
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let key = loop {
        if let Some(q) = quarantine(&daemon).first() {
            break q["key"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "not quarantined\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        quarantine(&daemon)[0]["reason"]
            .as_str()
            .unwrap()
            .contains("internal error"),
        "{:?}",
        quarantine(&daemon)
    );
    // The bug is fixed (the hook is off after a restart); the operator
    // releases the mail to have it processed.
    assert!(daemon.stop().success());
    daemon.spawn();
    let (ok, out, err) = daemon.cli(&["quarantine", "release", &key]);
    assert!(!ok, "released: {out}");
    assert!(
        err.contains("a reason you were not shown") && err.contains("is not authenticated"),
        "{err}"
    );
    assert_eq!(daemon.status(DAVE), serde_json::json!([]), "nobody invited");
    let q = quarantine(&daemon);
    assert_eq!(q.len(), 1, "{q:?}");
    let reason = q[0]["reason"].as_str().unwrap();
    assert!(reason.contains("is not authenticated"), "{reason}");
    // Released again, now knowing what it vouches for: it runs.
    let key = q[0]["key"].as_str().unwrap().to_string();
    let (ok, out, err) = daemon.cli(&["quarantine", "release", &key]);
    assert!(ok, "{out}{err}");
    daemon.wait_state("northwind", DAVE, "invited").await;
    assert!(quarantine(&daemon).is_empty());
    assert!(daemon.stop().success());
}

/// Before `held release` sends a held forward under Liaison's name, or
/// `quarantine release` vouches for a sender, the operator could see only
/// a subject and a reason, never what the mail says (a link, an
/// attachment). `held show` and `quarantine show` print it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_what_a_release_would_send() {
    const CAROL: &str = "carol@contoso.test";
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES, CAROL] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        c.replace(
            "invitation_ttl_days = 90\n",
            "invitation_ttl_days = 90\nmax_support_requests_per_hour = 1\n",
        )
    });
    make_active(&daemon, CAROL).await;
    let before = processed_total(&daemon);
    let requests: Vec<String> = (0..2).map(|i| request_with_attachment(CAROL, i)).collect();
    let forged = format!(
        "From: {PARTNER1}, {CAROL}\r\nTo: {COMMANDS}\r\nSubject: two authors\r\n\
         Message-ID: <two.{}@evil.test>\r\nAuthentication-Results: mx.evil.test; dkim=pass\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\ninvite eve@evil.test\r\n",
        std::process::id()
    );
    append_all(INVITES, &requests).await;
    append_all(COMMANDS, &[forged]).await;
    wait_processed(&daemon, before + 3).await;
    let (ok, out, err) = daemon.cli(&["held", "list", "--json"]);
    assert!(ok, "{err}");
    let held: serde_json::Value = serde_json::from_str(&out).unwrap();
    let forward = held
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h["subject"]
                .as_str()
                .unwrap()
                .starts_with("Support request from")
        })
        .unwrap_or_else(|| panic!("no held forward: {held}"));
    let id = forward["id"].to_string();
    let (ok, out, err) = daemon.cli(&["held", "show", &id]);
    assert!(ok, "held show failed: {err}");
    for part in [
        "to: partner1@liaison.test",
        "subject: Support request from carol@contoso.test: Request 1",
        "Please look at the attached log.",
        "attachment: log1.bin (application/octet-stream, 12288 bytes)",
    ] {
        assert!(out.contains(part), "{part:?} missing from:\n{out}");
    }
    let (ok, out, err) = daemon.cli(&["quarantine", "list", "--json"]);
    assert!(ok, "{err}");
    let q: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = q[0]["key"].as_str().unwrap().to_string();
    let (ok, out, err) = daemon.cli(&["quarantine", "show", &key]);
    assert!(ok, "quarantine show failed: {err}");
    for part in [
        "from: partner1@liaison.test",
        "other from: carol@contoso.test",
        "mail subject: two authors",
        "authentication-results: mx.evil.test; dkim=pass",
        "invite eve@evil.test",
    ] {
        assert!(out.contains(part), "{part:?} missing from:\n{out}");
    }
    assert!(daemon.stop().success());
}

/// A valid token (or a thread to a mail Liaison sent the customer) is the
/// credential for answering the invitation. It used to be enough for a
/// support request too: anyone the invitation was forwarded or copied to
/// could write the customer's From with the token and have Liaison forward
/// "call me at …, here is the file" to the partner under its own name,
/// while the same request without a token needed an authenticated From.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_token_does_not_make_its_holder_the_customer() {
    const CAROL: &str = "carol@contoso.test";
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES, CAROL] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        c.replace(
            "invitation_ttl_days = 90\n",
            "invitation_ttl_days = 90\ntrusted_authserv_id = \"mail.liaison.test\"\n",
        )
    });
    let pass = "Authentication-Results: mail.liaison.test; dkim=pass header.d=liaison.test\r\n";
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(
            PARTNER1,
            COMMANDS,
            "invite carol",
            pass,
            &format!("invite {CAROL}"),
        ),
    )
    .await;
    let inv = wait_for(CAROL, "invitation", |m| m.subject.contains("[ref:")).await;
    let tagged = inv.reply_to.clone().unwrap();
    // Carol accepts: the token is the credential for her answer.
    send_raw(
        CAROL,
        &[&tagged],
        &mail(
            CAROL,
            &tagged,
            &format!("Re: {}", inv.subject),
            "",
            "Accept\n",
        ),
    )
    .await;
    daemon.wait_state("northwind", CAROL, "active").await;
    let before = processed_total(&daemon);
    // Whoever else holds the invitation writes as Carol, with its token.
    send_raw(
        CAROL,
        &[&tagged],
        &mail(
            CAROL,
            &tagged,
            &format!("Re: {}", inv.subject),
            "",
            "Our admin changed: please call me at +1 555 0100 and send the reset link to eve@evil.test.\n",
        ),
    )
    .await;
    wait_processed(&daemon, before + 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let forwards = count_where(PARTNER1, |m| m.subject.starts_with("Support request from")).await;
    assert_eq!(forwards, 0, "forwarded\n{}", daemon.log());
    let (ok, out, err) = daemon.cli(&["quarantine", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("support request (with a token or thread"),
        "{out}"
    );
    assert!(daemon.stop().success());
}
