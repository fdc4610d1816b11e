//! Several instances on one PostgreSQL store, through the real loopback
//! Postfix, Dovecot and PostgreSQL: two `liaison run` processes share the
//! database and the mailboxes. The inbox owner is killed with SIGKILL at
//! random moments (and started again, as systemd would), one is paused with
//! SIGSTOP past its lease and resumed, and PostgreSQL itself is restarted
//! under them; every mail must be processed exactly once and every reply
//! sent, duplicates only within the documented window (the mails in flight
//! of a crashed instance: at most `smtp.max_connections` per crash).
//!
//! Both tests restart servers the other uses, so they take the mail stack's
//! lock ([`serial`]) for their whole run.

mod common;
#[path = "common/ha.rs"]
mod ha;

use common::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const ALICE: &str = "alice@contoso.test";
const DAVE: &str = "dave@fabrikam.test";
/// `[smtp] max_connections` of the test config (the default).
const MAX_CONNECTIONS: usize = 4;

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, ALICE, DAVE] {
        clear_mailbox(u).await;
    }
}

/// A fresh database URL (no TLS on loopback: the TLS path has its own tests).
fn database(prefix: &str) -> String {
    format!("{}?sslmode=disable", pg::fresh_database(prefix))
}

/// Every mail Liaison sent to `users`, by Message-ID: how many copies
/// arrived, and the In-Reply-To of each.
async fn delivered(users: &[&str]) -> (HashMap<String, usize>, HashMap<String, String>) {
    let mut copies: HashMap<String, usize> = HashMap::new();
    let mut answers = HashMap::new();
    for u in users {
        for raw in fetch_all(u).await {
            let m = Received::parse(&raw);
            if m.from.ends_with("@liaison.test") {
                *copies.entry(m.message_id.clone()).or_default() += 1;
                if let Some(irt) = m.in_reply_to.clone() {
                    answers.insert(m.message_id.clone(), irt);
                }
            }
        }
    }
    (copies, answers)
}

/// `liaison stats` through whichever instance answers.
fn stats_of(daemons: &[Daemon]) -> serde_json::Value {
    for d in daemons {
        if d.child.is_some() {
            let (ok, out, _) = d.cli(&["stats"]);
            if ok {
                if let Ok(v) = serde_json::from_str(&out) {
                    return v;
                }
            }
        }
    }
    panic!("no instance answered stats")
}

fn processed_sum(s: &serde_json::Value) -> u64 {
    s["processed"]
        .as_object()
        .map(|o| o.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0)
}

/// Waits until the store has processed `total` mails and has nothing left
/// to send, then a little longer for the last deliveries to land.
async fn wait_done(daemons: &[Daemon], total: u64, within: Duration) -> serde_json::Value {
    let start = Instant::now();
    let deadline = start + within;
    let mut all_processed = false;
    loop {
        let s = stats_of(daemons);
        if !all_processed && processed_sum(&s) >= total {
            all_processed = true;
            println!(
                "every mail processed {:?} after the wait began; {} mails still to send",
                start.elapsed(),
                s["outbox_pending"]
            );
        }
        if processed_sum(&s) >= total && s["outbox_pending"] == 0 {
            println!("everything sent {:?} after the wait began", start.elapsed());
            tokio::time::sleep(Duration::from_secs(1)).await;
            return stats_of(daemons);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = daemons.iter().map(|d| d.log()).collect();
            panic!(
                "not done within {within:?}: {s}\n---- logs ----\n{}",
                logs.join("\n---- next instance ----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

const N_CUSTOMERS: usize = 100;
const N_COMMANDS: usize = 700;

fn customer(k: usize) -> String {
    format!("alice+c{k}@contoso.test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_survive_kills_and_a_pause_with_every_mail_once() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let url = database("failover");
    let ports = [18_930 + port_offset(), 18_931 + port_offset()];
    let mut daemons = vec![
        ha::start_instance(&url, ports[0]),
        ha::start_instance(&url, ports[1]),
    ];

    // Set-up: 100 invitations (two command mails of 50), so the backlog can
    // hold customers' answers and, once they accepted, support requests.
    for half in 0..2 {
        let body: String = (half * 50..half * 50 + 50)
            .map(|k| format!("invite {}\n", customer(k)))
            .collect();
        send_raw(
            PARTNER1,
            &[COMMANDS],
            &mail(PARTNER1, COMMANDS, &format!("setup {half}"), "", &body),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let invitations: HashMap<String, Received> = loop {
        let found: HashMap<String, Received> = fetch_all(ALICE)
            .await
            .iter()
            .map(|r| Received::parse(r))
            .filter(|m| m.subject.contains("[ref:"))
            .filter_map(|m| {
                let to = m.header("To")?;
                let addr = match (to.find('<'), to.find('>')) {
                    (Some(a), Some(b)) if a < b => to[a + 1..b].to_string(),
                    _ => to.trim().to_string(),
                };
                Some((addr, m))
            })
            .collect();
        if found.len() >= N_CUSTOMERS {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {N_CUSTOMERS} invitations\n{}",
            found.len(),
            daemons[0].log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Both stop cleanly (their leases are released), the backlog lands.
    for d in daemons.iter_mut() {
        assert!(d.stop().success());
    }

    // The backlog: 700 partner commands (a transcript each); in the
    // invitations inbox, per customer an acceptance and then a support
    // request (forwarded to the partner, acknowledged to the customer),
    // and 100 mails from a stranger (recorded, never answered).
    let commands: Vec<String> = (0..N_COMMANDS)
        .map(|i| mail(PARTNER1, COMMANDS, &format!("cmd-{i}"), "", "list\n"))
        .collect();
    let command_ids: Vec<String> = commands.iter().map(|r| message_id_of(r)).collect();
    let mut answers = Vec::new();
    for k in 0..N_CUSTOMERS {
        let c = customer(k);
        let inv = &invitations[&c];
        let to = inv.reply_to.clone().expect("invitation has a reply-to");
        answers.push(mail(
            &c,
            &to,
            &format!("Re: {}", inv.subject),
            "",
            "Accept\n",
        ));
        answers.push(mail(DAVE, INVITES, &format!("noise-{k}"), "", "hello?\n"));
    }
    for k in 0..N_CUSTOMERS {
        let c = customer(k);
        answers.push(mail(
            &c,
            INVITES,
            &format!("help {k}"),
            "",
            "Licences missing.\n",
        ));
    }
    assert_eq!(N_COMMANDS + answers.len(), 1000, "a 1 000-mail backlog");
    append_all(COMMANDS, &commands).await;
    append_all(INVITES, &answers).await;
    let total = (N_COMMANDS + answers.len() + 2) as u64;

    for d in daemons.iter_mut() {
        d.spawn();
    }
    let mut rng = Lcg(crash_seed("failover test"));
    let lease = Duration::from_secs(ha::LEASE_SECS);
    let mut kills = 0;
    let mut takeovers = Vec::new();
    let mut progress = Vec::new();
    // Kill the owner of the commands inbox at random moments, restarting
    // it at once; time until another instance holds the lease.
    for _ in 0..4 {
        let (owner, _) = ha::wait_taken_over(&url, "inbox/commands", None, lease * 4).await;
        tokio::time::sleep(Duration::from_millis(200 + rng.next(1200))).await;
        let Some(i) = daemons
            .iter()
            .position(|d| d.child.as_ref().map(|c| c.id()) == Some(owner))
        else {
            continue;
        };
        ha::kill9(&mut daemons[i]);
        let killed = Instant::now();
        kills += 1;
        daemons[i].spawn();
        let (_, _) = ha::wait_taken_over(&url, "inbox/commands", Some(owner), lease * 4).await;
        takeovers.push(killed.elapsed());
        let s = stats_of(&daemons);
        progress.push((processed_sum(&s), s["outbox_sent"].as_u64().unwrap_or(0)));
    }
    // Pause the owner past its lease; the other takes over; resumed, the
    // paused one must not write what it had in hand (fenced) and goes on
    // as a standby or takes its share again.
    let (owner, _) = ha::wait_taken_over(&url, "inbox/commands", None, lease * 4).await;
    let paused = daemons
        .iter()
        .position(|d| d.child.as_ref().map(|c| c.id()) == Some(owner))
        .expect("the owner is one of ours");
    ha::signal(&daemons[paused], "STOP");
    let stopped = Instant::now();
    let (_, took) = ha::wait_taken_over(&url, "inbox/commands", Some(owner), lease * 4).await;
    println!("takeover after SIGSTOP of the owner: {took:?}");
    tokio::time::sleep(lease * 2).await;
    ha::signal(&daemons[paused], "CONT");
    println!("owner paused for {:?}", stopped.elapsed());
    let s = stats_of(&daemons);
    progress.push((processed_sum(&s), s["outbox_sent"].as_u64().unwrap_or(0)));

    let s = wait_done(&daemons, total, Duration::from_secs(90)).await;
    println!("(processed, sent) after each kill and the pause: {progress:?}");
    println!("final store counts: {s}");
    let max_takeover = takeovers.iter().max().copied().unwrap_or_default();
    println!(
        "takeover times after SIGKILL of the inbox owner (lease {LEASE_SECS} s): {takeovers:?}, longest {max_takeover:?}",
        LEASE_SECS = ha::LEASE_SECS
    );
    assert!(
        max_takeover <= lease * 2 + Duration::from_millis(500),
        "takeover within two lease lengths: {takeovers:?}"
    );
    let mid_work = progress.iter().filter(|(p, _)| *p < total).count();
    assert!(mid_work >= 2, "kills must hit mid-work: {progress:?}");

    // Both instances watch part of the work: /healthz names the leases
    // each holds, and every inbox has exactly one owner.
    let mut owned = Vec::new();
    for port in ports {
        let h = ha::healthz(port).await;
        println!("/healthz on {port}: {h}");
        owned.extend(
            h["leases"]
                .as_array()
                .expect("a shared store's /healthz names its leases")
                .iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .filter(|l| l.starts_with("inbox/")),
        );
    }
    owned.sort();
    assert_eq!(
        owned,
        vec!["inbox/commands", "inbox/invites"],
        "one owner per inbox"
    );

    print_log_counts(&daemons);
    let paused_log = daemons[paused].log();
    assert!(
        paused_log.contains("lost inbox") || paused_log.contains("store lost"),
        "the resumed instance noticed it lost its lease:\n{paused_log}"
    );
    for d in daemons.iter_mut() {
        assert!(d.stop().success(), "{}", d.log());
    }

    // Every mail processed exactly once: one record each, no duplicates.
    let s = stats_of_store(&daemons[0]);
    assert_eq!(processed_sum(&s), total, "{s}");
    assert_eq!(s["processed"]["command"], (N_COMMANDS + 2) as u64, "{s}");
    assert_eq!(s["processed"]["duplicate"], serde_json::Value::Null, "{s}");
    assert_eq!(s["outbox_pending"], 0, "{s}");
    for k in [0, N_CUSTOMERS / 2, N_CUSTOMERS - 1] {
        let v = daemons[0].status(&customer(k));
        assert!(
            v.as_array()
                .is_some_and(|a| a.iter().any(|r| r["state"] == "active")),
            "{} accepted: {v}",
            customer(k)
        );
    }

    // Every expected reply sent: a transcript per command, a forward to the
    // partner and an acknowledgement per support request; nothing to the
    // stranger. Each sent once, or more only within the window.
    let (copies, in_reply_to) = delivered(&[PARTNER1, ALICE]).await;
    let answered: HashSet<&String> = in_reply_to.values().collect();
    for id in &command_ids {
        assert!(answered.contains(id), "command {id} was never answered");
    }
    let acks = fetch_all(ALICE)
        .await
        .iter()
        .map(|r| Received::parse(r).subject)
        .filter(|s| s.starts_with("Re: help "))
        .collect::<HashSet<_>>();
    assert_eq!(
        acks.len(),
        N_CUSTOMERS,
        "every support request acknowledged"
    );
    let forwards = count_where(PARTNER1, |m| m.subject.starts_with("Support request from")).await;
    assert!(forwards >= N_CUSTOMERS, "{forwards} forwards");
    assert_eq!(fetch_all(DAVE).await.len(), 0, "strangers never answered");
    let sent = s["outbox_sent"].as_u64().unwrap() as usize;
    assert_eq!(copies.len(), sent, "every mail the store sent arrived: {s}");
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    println!(
        "deliveries: {} distinct mails, {duplicates} duplicate deliveries over {kills} kills and one pause (window: {MAX_CONNECTIONS} per crash)",
        copies.len()
    );
    assert!(
        duplicates <= (kills + 1) * MAX_CONNECTIONS,
        "{duplicates} duplicates"
    );
}

/// What each instance's log says happened, counted and printed.
fn print_log_counts(daemons: &[Daemon]) {
    for (i, d) in daemons.iter().enumerate() {
        let log = d.log();
        let count = |what: &str| log.matches(what).count();
        println!(
            "instance {i}: {} takeovers, {} leases lost, {} unrenewed, {} store lost, {} store unreachable, {} releases",
            count("took over"),
            count("to another instance; stopping it here"),
            count("for a whole lease length"),
            count("store lost; every task stopped"),
            count("cannot use the store"),
            count("released "),
        );
    }
}

/// `liaison stats` with no daemon running: the CLI opens the store itself.
fn stats_of_store(d: &Daemon) -> serde_json::Value {
    stats(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_run_loses_and_duplicates_nothing() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let url = database("pgrestart");
    let ports = [18_932 + port_offset(), 18_933 + port_offset()];
    let commands: Vec<String> = (0..300)
        .map(|i| mail(PARTNER1, COMMANDS, &format!("pr-{i}"), "", "list\n"))
        .collect();
    append_all(COMMANDS, &commands).await;
    let mut daemons = vec![
        ha::start_instance(&url, ports[0]),
        ha::start_instance(&url, ports[1]),
    ];
    // Mid-work: some processed, not all.
    let deadline = Instant::now() + Duration::from_secs(30);
    while processed_sum(&stats_of(&daemons)) < 20 {
        assert!(Instant::now() < deadline, "{}", daemons[0].log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg::stop();
    let down = Instant::now();
    // Longer than a lease, so every lease runs out meanwhile.
    tokio::time::sleep(Duration::from_secs(ha::LEASE_SECS * 2 + 1)).await;
    // More mail arrives while the database is away.
    let later: Vec<String> = (0..50)
        .map(|i| mail(PARTNER1, COMMANDS, &format!("pr-late-{i}"), "", "list\n"))
        .collect();
    append_all(COMMANDS, &later).await;
    pg::start();
    println!("PostgreSQL was down for {:?}", down.elapsed());
    let back = Instant::now();
    let s = wait_done(&daemons, 350, Duration::from_secs(90)).await;
    println!(
        "caught up {:?} after PostgreSQL came back: {s}",
        back.elapsed()
    );
    print_log_counts(&daemons);
    if std::env::var_os("LIAISON_FAILOVER_LOGS").is_some() {
        for d in &daemons {
            println!("---- instance log ----\n{}", d.log());
        }
    }
    for d in &daemons {
        let log = d.log();
        assert!(
            log.contains("cannot use the store")
                || log.contains("cannot take or renew the lease")
                || log.contains("store lost"),
            "each instance noticed the outage:\n{log}"
        );
        assert!(d.child.is_some(), "never exits on an unreachable database");
    }
    for d in daemons.iter_mut() {
        assert!(d.stop().success(), "{}", d.log());
    }
    let s = stats(&daemons[0]);
    assert_eq!(s["processed"]["command"], 350, "{s}");
    assert_eq!(s["outbox_pending"], 0, "{s}");
    let (copies, in_reply_to) = delivered(&[PARTNER1]).await;
    let answered: HashSet<&String> = in_reply_to.values().collect();
    for r in commands.iter().chain(&later) {
        let id = message_id_of(r);
        assert!(answered.contains(&id), "command {id} was never answered");
    }
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    println!(
        "{} transcripts, {duplicates} duplicate deliveries",
        copies.len()
    );
    assert_eq!(copies.len(), 350);
    // No instance crashed; a mail accepted by Postfix whose sent mark the
    // restart cut off is sent again (the in-flight window).
    assert!(duplicates <= 2 * MAX_CONNECTIONS, "{duplicates} duplicates");
}
