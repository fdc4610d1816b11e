//! End-to-end faults through the real loopback Postfix and Dovecot:
//! the daemon killed with SIGKILL at random moments while it works through a
//! backlog, and the mail servers stopped and started under it.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const DAVE: &str = "dave@fabrikam.test";

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, DAVE] {
        clear_mailbox(u).await;
    }
}

/// Transcripts in partner1's mailbox: Message-ID → copies, and the command
/// Message-IDs they answer.
async fn transcripts() -> (HashMap<String, usize>, Vec<String>) {
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut answered = Vec::new();
    for raw in fetch_all(PARTNER1).await {
        let m = Received::parse(&raw);
        if m.subject.contains("Liaison results") {
            *by_id.entry(m.message_id.clone()).or_default() += 1;
            answered.extend(m.in_reply_to.clone());
        }
    }
    (by_id, answered)
}

fn kill9(daemon: &mut Daemon) {
    let mut child = daemon.child.take().expect("running");
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
}

/// Waits until the daemon processed more than `before` mails (or all
/// `total`): it holds its inbox leases again. Returns how long that took.
async fn wait_for_takeover(daemon: &Daemon, before: u64, total: u64) -> Duration {
    let started = Instant::now();
    let limit = Duration::from_secs(3 * TEST_LEASE_SECS + 10);
    loop {
        let now = processed_total(daemon);
        if now > before || now >= total {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no progress within {limit:?} of a restart ({now} processed)\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const N_COMMANDS: usize = 300;
const N_STRANGERS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_processes_every_mail_once() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;

    // A backlog of 400 mails: 300 partner commands (each answered by one
    // transcript) and 100 mails from a stranger (each recorded, never answered).
    let commands: Vec<String> = (0..N_COMMANDS)
        .map(|i| mail(PARTNER1, COMMANDS, &format!("cmd-{i}"), "", "list\n"))
        .collect();
    let command_ids: Vec<String> = commands
        .iter()
        .map(|r| Received::parse(r.as_bytes()).message_id)
        .collect();
    let strangers: Vec<String> = (0..N_STRANGERS)
        .map(|i| mail(DAVE, INVITES, &format!("noise-{i}"), "", "hello?\n"))
        .collect();
    append_all(COMMANDS, &commands).await;
    append_all(INVITES, &strangers).await;

    let mut rng = Lcg(crash_seed("crash test"));
    let mut daemon = Daemon::start(Transport::Plain);
    let mut kills = 0;
    let mut progress = Vec::new();
    let mut takeovers = Vec::new();
    let total = (N_COMMANDS + N_STRANGERS) as u64;
    while kills < 12 {
        // Somewhere between start-up and well into the work.
        tokio::time::sleep(Duration::from_millis(10 + rng.next(150))).await;
        kill9(&mut daemon);
        kills += 1;
        // The CLI reads the store directly while no daemon runs.
        let s = stats(&daemon);
        let processed = s["processed"]
            .as_object()
            .map(|o| o.values().map(|v| v.as_u64().unwrap()).sum::<u64>())
            .unwrap_or(0);
        progress.push((processed, s["outbox_sent"].as_u64().unwrap_or(0)));
        daemon.spawn();
        if backend() == Backend::Postgres {
            // A new process is a new lease owner: it fetches only once the
            // killed one's inbox leases ran out (within two lease lengths).
            // Kill it only after it works again, so the kills keep landing
            // mid-work instead of all within the takeover.
            takeovers.push(wait_for_takeover(&daemon, processed, total).await);
        }
    }
    println!("(processed, sent) after each of the {kills} kills: {progress:?}");
    if !takeovers.is_empty() {
        println!("takeover after each kill (new process working again): {takeovers:?}");
    }
    let mid_work = progress
        .iter()
        .filter(|(p, s)| *p < total || *s < N_COMMANDS as u64)
        .count();
    assert!(
        mid_work >= 3,
        "at least 3 kills must hit the daemon mid-work: {progress:?}"
    );

    // Let the last run finish the backlog.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (by_id, _) = transcripts().await;
        if by_id.len() >= N_COMMANDS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {N_COMMANDS} transcripts after 60 s\n{}",
            by_id.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(daemon.stop().success());

    let s = stats(&daemon);
    println!("final store counts: {s}");
    assert_eq!(s["processed"]["command"], N_COMMANDS, "{s}");
    assert_eq!(s["processed"]["ignored"], N_STRANGERS, "{s}");
    assert_eq!(s["outbox_pending"], 0, "{s}");
    assert_eq!(
        s["outbox_sent"], N_COMMANDS,
        "one reply per command, queued once: {s}"
    );
    let (by_id, answered) = transcripts().await;
    // Every command answered…
    for id in &command_ids {
        assert!(answered.contains(id), "command {id} was never answered");
    }
    // …and each answer delivered once, or more only if a kill fell between
    // the SMTP server's acceptance and the flushed sent mark: at most the
    // mails in flight, one per connection (max_connections = 4) per kill.
    let duplicates: usize = by_id.values().map(|n| n - 1).sum();
    println!(
        "transcripts: {} distinct, {duplicates} duplicate deliveries over {kills} kills",
        by_id.len()
    );
    assert_eq!(by_id.len(), N_COMMANDS);
    assert!(duplicates <= kills * 4, "{duplicates} duplicates");
    assert_eq!(fetch_all(DAVE).await.len(), 0, "strangers never answered");
}

fn mailstack(action: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mailstack.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(action)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mailstack.sh");
    assert!(
        out.status.success(),
        "mailstack {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_smtp_outages_lose_nothing_and_duplicate_only_mail_in_flight() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);
    let batch = |from: usize| -> Vec<String> {
        (from..from + 20)
            .map(|i| mail(PARTNER1, COMMANDS, &format!("out-{i}"), "", "list\n"))
            .collect()
    };
    for m in batch(0) {
        send_raw(PARTNER1, &[COMMANDS], &m).await;
    }
    // Both servers stop for a while mid-run.
    mailstack("down");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", *IMAP_PORT)).is_err()
            && std::net::TcpStream::connect(("127.0.0.1", *SMTP_PORT)).is_err(),
        "the mail stack is down"
    );
    // 30 s, as long as a real restart of a mail server may take.
    tokio::time::sleep(Duration::from_secs(30)).await;
    mailstack("up");
    // Mail that arrives after the outage is handled too.
    for m in batch(20) {
        send_raw(PARTNER1, &[COMMANDS], &m).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (by_id, _) = transcripts().await;
        if by_id.len() >= 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 40 transcripts\n{}",
            by_id.len(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (by_id, _) = transcripts().await;
    assert_eq!(by_id.len(), 40);
    // A send the server took (its 250 written) as it went down, but whose
    // answer never came back, is sent again: at most the mails in flight,
    // one per connection (max_connections = 4), for the one outage.
    let duplicates: usize = by_id.values().map(|n| n - 1).sum();
    println!(
        "transcripts: {} distinct, {duplicates} duplicate deliveries over 1 outage",
        by_id.len()
    );
    assert!(duplicates <= 4, "{duplicates} duplicates: {by_id:?}");
    let log = daemon.log();
    let reconnects = log.matches("IMAP session ended; reconnecting").count();
    println!("IMAP reconnect attempts logged: {reconnects}");
    assert!(reconnects >= 1, "{log}");
    assert!(daemon.stop().success());
    let s = stats(&daemon);
    assert_eq!(s["processed"]["command"], 40, "{s}");
    assert_eq!(s["outbox_pending"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uidvalidity_change_rescans_without_reprocessing() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    delete_folder(COMMANDS, "Work").await;
    let mails: Vec<String> = (0..10)
        .map(|i| mail(PARTNER1, COMMANDS, &format!("uv-{i}"), "", "list\n"))
        .collect();
    append_to(COMMANDS, "Work", &mails).await;
    // The command inbox watches the folder "Work".
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        c.replacen(
            "username = \"commands@liaison.test\"",
            "username = \"commands@liaison.test\"\nmailbox = \"Work\"",
            1,
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while transcripts().await.0.len() < 10 {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(daemon.stop().success());
    // The folder is recreated (new UIDVALIDITY) holding the same mails plus
    // one new one.
    delete_folder(COMMANDS, "Work").await;
    let mut again = mails.clone();
    again.push(mail(PARTNER1, COMMANDS, "uv-new", "", "list\n"));
    append_to(COMMANDS, "Work", &again).await;
    daemon.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while transcripts().await.0.len() < 11 {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (by_id, _) = transcripts().await;
    assert_eq!(by_id.len(), 11, "only the new mail is answered");
    assert!(by_id.values().all(|&n| n == 1));
    assert!(
        daemon.log().contains("UIDVALIDITY changed; rescanning"),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
    let s = stats(&daemon);
    assert_eq!(s["processed"]["command"], 11, "{s}");
    assert_eq!(
        s["processed"]["duplicate"],
        serde_json::Value::Null,
        "duplicates are not new records: {s}"
    );
    delete_folder(COMMANDS, "Work").await;
}
