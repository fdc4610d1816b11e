//! End-to-end: the inbound path through the real loopback Postfix and
//! Dovecot — folder names on a server whose hierarchy separator is ".",
//! the size of the quarantine, dedupe that one sender cannot use against
//! another, mail that arrives during a sync, and a mail whose processing
//! panics.

mod common;

use common::*;
use futures::StreamExt;
use std::time::{Duration, Instant};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const DAVE: &str = "dave@fabrikam.test";
/// A user whose namespace separator is "." (see tests/mailstack.sh).
const DOTTED: &str = "dotted@liaison.test";
const TRUSTED: &str = "mail.liaison.test";

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, DAVE] {
        clear_mailbox(u).await;
    }
    for u in [COMMANDS, INVITES] {
        delete_folder(u, "Liaison/Quarantine").await;
    }
}

/// The config edit that makes unauthenticated partner commands quarantined.
fn trusting_mx(c: String) -> String {
    trusting(&c, TRUSTED, "")
}

fn quarantine(daemon: &Daemon) -> Vec<serde_json::Value> {
    let (ok, out, err) = daemon.cli(&["quarantine", "list", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array().cloned().unwrap_or_default()
}

/// Waits until `daemon`'s quarantine holds `n` records.
async fn wait_quarantined(daemon: &Daemon, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let q = quarantine(daemon);
        if q.len() >= n {
            return q;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} quarantined within 30 s: {q:?}\n{}",
            q.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many of `user`'s INBOX messages carry the processed keyword, of how
/// many.
async fn marked(user: &str) -> (usize, usize) {
    let mut s = imap(user).await;
    let mbox = s.select("INBOX").await.expect("select");
    let mut marked = 0;
    if mbox.exists > 0 {
        let mut stream = s.fetch("1:*", "FLAGS").await.expect("fetch");
        while let Some(f) = stream.next().await {
            let f = f.expect("fetch item");
            if f.flags().any(
                |fl| matches!(fl, async_imap::types::Flag::Custom(k) if k == "$LiaisonProcessed"),
            ) {
                marked += 1;
            }
        }
    }
    let _ = s.logout().await;
    (marked, mbox.exists as usize)
}

/// A partner command without the trusted server's Authentication-Results
/// (quarantined when `trusted_authserv_id` is set).
fn unauthenticated_command(subject: &str, body: &str) -> String {
    mail(PARTNER1, COMMANDS, subject, "", body)
}

/// Point 11: with separator "." the default quarantine folder must still be
/// created and filled, and every processed message marked; with "/" too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_folder_and_marks_work_with_either_separator() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    clear_mailbox(DOTTED).await;
    delete_folder(DOTTED, "Liaison.Quarantine").await;
    delete_folder(DOTTED, "Liaison").await;
    // The command inbox is the "." user; the invitations inbox the "/" one.
    let daemon = Daemon::start_custom(Transport::Plain, |c| {
        trusting_mx(c).replacen(
            "username = \"commands@liaison.test\"",
            &format!("username = \"{DOTTED}\""),
            1,
        )
    });
    for user in [DOTTED, INVITES] {
        let mut raws = Vec::new();
        for i in 0..5 {
            raws.push(unauthenticated_command(&format!("forged {i}"), "list"));
        }
        for i in 0..6 {
            raws.push(mail(DAVE, COMMANDS, &format!("stranger {i}"), "", "hello"));
        }
        append_all(user, &raws).await;
    }
    wait_quarantined(&daemon, 10).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dotted = marked(DOTTED).await;
        let slashed = marked(INVITES).await;
        let q_dotted = folder_count(DOTTED, "Liaison.Quarantine").await;
        let q_slashed = folder_count(INVITES, "Liaison/Quarantine").await;
        if dotted == (11, 11) && slashed == (11, 11) && q_dotted == 5 && q_slashed == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "marked (\".\" user) {dotted:?}, (\"/\" user) {slashed:?}; quarantine folders hold \
             {q_dotted} and {q_slashed}, want 5 each\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The bytes the daemon's store takes: the sled folder, or with
/// PostgreSQL its tables (with their indexes and TOAST), which is where a
/// kept mail's bytes would go.
fn store_size(daemon: &Daemon) -> u64 {
    match backend() {
        Backend::Sled => dir_size(&daemon.dir.join("store")),
        Backend::Postgres => pg_tables_size(&store_url(&daemon.config)),
    }
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Point 13: large quarantined mails stay on the IMAP server, not in the
/// store; a small one is kept and can still be released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_quarantined_mails_stay_out_of_the_store() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start_custom(Transport::Plain, trusting_mx);
    // 20 forged commands of about 2 MB each (a long text body), then one
    // small one.
    let filler = "x".repeat(998) + "\n";
    let big_body = format!("list\n\n{}", filler.repeat(2_000));
    let raws: Vec<String> = (0..20)
        .map(|i| unauthenticated_command(&format!("big forged {i}"), &big_body))
        .collect();
    append_all(COMMANDS, &raws).await;
    let small_raw = unauthenticated_command("small forged", "list");
    send_raw(PARTNER1, &[COMMANDS], &small_raw).await;
    let q = wait_quarantined(&daemon, 21).await;
    assert_eq!(folder_count(COMMANDS, "Liaison/Quarantine").await, 21);
    assert!(daemon.stop().success());
    let store_bytes = store_size(&daemon);
    let quarantined_bytes = 20 * big_body.len() as u64;
    assert!(
        store_bytes < quarantined_bytes / 4,
        "the store takes {store_bytes} bytes for {quarantined_bytes} bytes of quarantined mail"
    );
    daemon.spawn();
    // Quarantine keys start with the mail's Message-ID.
    let key_of = |raw: &str| {
        let mid = Received::parse(raw.as_bytes()).message_id;
        q.iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .find(|k| k.starts_with(&format!("{mid}#")))
            .unwrap_or_else(|| panic!("no quarantine record for {mid}: {q:?}"))
    };
    let small = key_of(&small_raw);
    let big = key_of(&raws[0]);
    let (ok, out, err) = daemon.cli(&["quarantine", "release", &small]);
    assert!(ok && out.contains("released"), "{out}{err}");
    wait_for(PARTNER1, "transcript of the released command", |m| {
        m.subject.contains("small forged")
    })
    .await;
    let (ok, out, err) = daemon.cli(&["quarantine", "release", &big]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("quarantine folder on the IMAP server"),
        "a clear reason: {err}"
    );
    assert!(daemon.stop().success());
}

/// Point 14: a stranger who sends a Message-ID first does not make the
/// partner's later command with the same Message-ID a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_preempt_a_partners_message_id() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    let id = format!(
        "preempted.{}@client.test",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let with_id = |raw: String| {
        let start = raw.find("Message-ID: <").unwrap();
        let end = start + raw[start..].find('>').unwrap() + 1;
        format!("{}Message-ID: <{id}>{}", &raw[..start], &raw[end..])
    };
    send_raw(
        DAVE,
        &[COMMANDS],
        &with_id(mail(DAVE, COMMANDS, "first", "", "list")),
    )
    .await;
    // Processed (ignored) before the partner's command arrives.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon
        .log()
        .lines()
        .any(|l| l.contains("processed") && l.contains(&format!("message_id={id}")))
    {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Delivered to both of Liaison's inboxes: two copies whose trace
    // headers differ, one mail all the same.
    send_raw(
        PARTNER1,
        &[COMMANDS, INVITES],
        &with_id(mail(
            PARTNER1,
            COMMANDS,
            "the partner's command",
            "",
            "list",
        )),
    )
    .await;
    let transcript = wait_for(PARTNER1, "the partner's transcript", |m| {
        m.subject.contains("Liaison results")
    })
    .await;
    assert_eq!(transcript.in_reply_to.as_deref(), Some(id.as_str()));
    // Both copies were looked at; the second was a duplicate.
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon
        .log()
        .lines()
        .filter(|l| l.contains("processed") && l.contains(&format!("message_id={id}")))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let transcripts = fetch_all(PARTNER1)
        .await
        .iter()
        .filter(|r| Received::parse(r).subject.contains("Liaison results"))
        .count();
    assert_eq!(transcripts, 1, "one transcript for the two copies");
    assert!(daemon.log().contains("class=duplicate"), "{}", daemon.log());
    assert!(daemon.stop().success());
}

/// The Message-IDs of the mails the daemon logged as processed.
fn processed_ids(daemon: &Daemon) -> std::collections::HashSet<String> {
    daemon
        .log()
        .lines()
        .filter(|l| l.contains("processed"))
        .filter_map(|l| l.split("message_id=").nth(1))
        // The key is the Message-ID, then `#` and a hash.
        .filter_map(|rest| rest.split(['#', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Point 16: mail delivered while a large sync runs is processed within
/// seconds, not at the next IDLE renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_arriving_during_a_sync_is_processed_promptly() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    const BACKLOG: usize = 600;
    let backlog: Vec<String> = (0..BACKLOG)
        .map(|i| mail(DAVE, COMMANDS, &format!("backlog {i}"), "", "hello"))
        .collect();
    let backlog_ids: Vec<String> = backlog
        .iter()
        .map(|r| Received::parse(r.as_bytes()).message_id)
        .collect();
    append_all(COMMANDS, &backlog).await;
    let daemon = Daemon::start(Transport::Plain);
    // One mail every 20 ms while the backlog is worked through, until half
    // of it is done: the last ones arrive while that sync still runs.
    let mut delivered: Vec<(String, Instant)> = Vec::new();
    let mut seen_at: Vec<Option<Instant>> = Vec::new();
    let mut s = imap(COMMANDS).await;
    let look = |delivered: &[(String, Instant)], seen_at: &mut Vec<Option<Instant>>| {
        let processed = processed_ids(&daemon);
        seen_at.resize(delivered.len(), None);
        for (i, (mid, _)) in delivered.iter().enumerate() {
            if seen_at[i].is_none() && processed.contains(mid) {
                seen_at[i] = Some(Instant::now());
            }
        }
        backlog_ids
            .iter()
            .filter(|m| processed.contains(*m))
            .count()
    };
    for i in 0..300 {
        let raw = mail(DAVE, COMMANDS, &format!("live {i}"), "", "hello");
        let mid = Received::parse(raw.as_bytes()).message_id;
        s.append("INBOX", None, None, raw.as_bytes())
            .await
            .expect("APPEND");
        delivered.push((mid, Instant::now()));
        if look(&delivered, &mut seen_at) >= BACKLOG / 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = s.logout().await;
    // Every mail is processed within 5 s of its delivery.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        look(&delivered, &mut seen_at);
        if seen_at.iter().all(Option::is_some) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late: Vec<String> = delivered
        .iter()
        .zip(&seen_at)
        .filter(|((_, at), seen)| {
            seen.is_none_or(|s| s.duration_since(*at) > Duration::from_secs(5))
        })
        .map(|((mid, _), _)| mid.clone())
        .collect();
    assert!(
        late.is_empty(),
        "{} of {} mails delivered during the sync were not processed within 5 s: {late:?}",
        late.len(),
        delivered.len()
    );
    let mut daemon = daemon;
    assert!(daemon.stop().success());
}

/// Point 19: a mail whose processing panics is quarantined with the
/// reason; the inbox goes on, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_mail_is_quarantined_and_the_inbox_goes_on() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    // The debug build's test-only fault hook (inherited by the daemon).
    std::env::set_var("LIAISON_TEST_PANIC_SUBJECT", "trigger-a-panic");
    let mut daemon = Daemon::start(Transport::Plain);
    std::env::remove_var("LIAISON_TEST_PANIC_SUBJECT");
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "please trigger-a-panic", "", "list"),
    )
    .await;
    let q = wait_quarantined(&daemon, 1).await;
    let reason = q[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("internal error while processing")
            && reason.contains("trigger-a-panic")
            && reason.contains("please report"),
        "{reason}"
    );
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "after the panic", "", "list"),
    )
    .await;
    wait_for(PARTNER1, "a transcript after the panic", |m| {
        m.subject.contains("after the panic")
    })
    .await;
    assert!(daemon.stop().success());
    // After a restart the same inbox works (and the panicking mail is not
    // tried again: it is still the only quarantined one).
    daemon.spawn();
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "after the restart", "", "list"),
    )
    .await;
    wait_for(PARTNER1, "a transcript after the restart", |m| {
        m.subject.contains("after the restart")
    })
    .await;
    assert_eq!(quarantine(&daemon).len(), 1);
    assert!(daemon.stop().success());
}
