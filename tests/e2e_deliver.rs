//! Second inbound path and a server quirk, against the real servers:
//! `liaison deliver` (MTA pipe delivery) with and without a running daemon,
//! its sysexits exit statuses, Postfix's own `pipe` transport handing a
//! customer's reply to it, and an IMAP account without custom keywords
//! (PERMANENTFLAGS without `\*`, as on Exchange Online).

mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The user the mail stack's pipe transport runs as (tests/mailstack.sh
/// PIPE_USER); a daemon that Postfix's pipe must reach runs as it too.
const PIPE_USER: &str = "liaisond";
/// Mail to this address (and its +tag forms) goes to the pipe transport.
const PIPE_INVITES: &str = "pipe-invites@liaison.test";
const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";

/// `liaison deliver --inbox INBOX` with `raw` on stdin: (exit code, output).
fn deliver(config: &Path, inbox: &str, raw: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liaison"))
        .arg("--config")
        .arg(config)
        .args(["deliver", "--inbox", inbox])
        .env("LIAISON_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run liaison deliver");
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The CLI on `config` (no daemon needed: it reads the store directly when
/// none runs).
fn cli(config: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_liaison"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn processed(stats: &serde_json::Value, class: &str) -> u64 {
    stats["processed"][class].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn deliver_takes_mail_through_the_daemon_or_the_store_with_sysexits_statuses() {
    require_mailstack();
    let _serial = serial().await;
    for u in [PARTNER1, COMMANDS] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start(Transport::Plain);
    let config = daemon.config.clone();

    // 1. The daemon runs: the message goes over its admin socket, the
    //    command is run and answered once; the MTA's retry of the same
    //    message is a duplicate, exit 0, no second answer.
    let command = mail(PARTNER1, COMMANDS, "piped 1", "", "status\n");
    let (code, out) = deliver(&config, "commands", command.as_bytes());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("liaison deliver: command "), "{out}");
    wait_for(PARTNER1, "transcript", |m| m.subject.contains("piped 1")).await;
    let (code, out) = deliver(&config, "commands", command.as_bytes());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("liaison deliver: duplicate "), "{out}");

    // Malformed mail is quarantined with the reason (exit 0, not bounced),
    // and its retry lands on the same record.
    let malformed = b"\r\n\r\nonly a body, no headers\r\n";
    for _ in 0..2 {
        let (code, out) = deliver(&config, "commands", malformed);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("quarantined"), "{out}");
    }
    // An inbox the configuration does not name: EX_USAGE, nothing recorded.
    let (code, out) = deliver(&config, "no-such-inbox", command.as_bytes());
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("no inbox `no-such-inbox`"), "{out}");
    let stats = stats(&daemon);
    assert_eq!(processed(&stats, "command"), 1, "{stats}");
    assert_eq!(processed(&stats, "quarantined"), 1, "{stats}");

    // 2. No daemon: straight into the store, the same decision and dedupe;
    //    the answer is queued and sent when the daemon starts again.
    assert!(daemon.stop().success());
    let second = mail(PARTNER1, COMMANDS, "piped 2", "", "status\n");
    let (code, out) = deliver(&config, "commands", second.as_bytes());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("liaison deliver: command "), "{out}");
    let (code, out) = deliver(&config, "commands", second.as_bytes());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("duplicate"), "{out}");
    let (code, out) = deliver(&config, "commands", malformed);
    assert_eq!(code, 0, "{out}");
    let stats = cli(&config, &["stats"]);
    assert_eq!(processed(&stats, "command"), 2, "{stats}");
    assert_eq!(processed(&stats, "quarantined"), 1, "{stats}");
    let q = cli(&config, &["quarantine", "list", "--json"]);
    let keys: Vec<&str> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 1, "{q}");
    assert!(keys[0].starts_with("quarantine:commands:pipe:"), "{q}");
    assert!(
        q[0]["reason"].as_str().unwrap().contains("no headers"),
        "{q}"
    );

    // 3. The store cannot be used now (and no daemon answers): EX_TEMPFAIL,
    //    so the MTA keeps the mail and retries. With sled: another process
    //    holds the folder. With PostgreSQL: the server is unreachable (the
    //    same configuration with a port nobody listens on); the message
    //    says so without the URL's password.
    let third = mail(PARTNER1, COMMANDS, "piped 3", "", "status\n");
    match backend() {
        Backend::Sled => {
            let held = liaison::store::SledStore::open(
                &daemon.dir.join("store"),
                1 << 20,
                &daemon.dir.join("store.sock"),
            )
            .expect("open the store in the test");
            let (code, out) = deliver(&config, "commands", third.as_bytes());
            assert_eq!(code, 75, "{out}");
            drop(held);
        }
        Backend::Postgres => {
            let unreachable = daemon.dir.join("unreachable.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            let url = store_url(&config);
            let port = format!(":{}/", pg::port());
            assert!(url.contains(&port), "{url}");
            std::fs::write(&unreachable, text.replace(&url, &url.replace(&port, ":1/"))).unwrap();
            let (code, out) = deliver(&unreachable, "commands", third.as_bytes());
            assert_eq!(code, 75, "{out}");
            assert!(!out.contains(pg::PASSWORD), "the password is shown: {out}");
        }
    }
    // The retry, once the store is free, goes through.
    let (code, out) = deliver(&config, "commands", third.as_bytes());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("liaison deliver: command "), "{out}");

    // 4. A socket left behind by a daemon that was killed: no daemon
    //    answers, so the store is used.
    std::os::unix::net::UnixListener::bind(daemon.dir.join("store.sock"))
        .map(drop)
        .unwrap();
    let fourth = mail(PARTNER1, COMMANDS, "piped 4", "", "status\n");
    let (code, out) = deliver(&config, "commands", fourth.as_bytes());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("liaison deliver: command "), "{out}");
    let _ = std::fs::remove_file(daemon.dir.join("store.sock"));

    // 5. Something listens on the socket but never answers (a daemon
    //    stuck or overloaded): EX_TEMPFAIL once the wait is over, and the
    //    store is not touched behind its back.
    {
        let sock = daemon.dir.join("store.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let busy = mail(PARTNER1, COMMANDS, "piped busy", "", "status\n");
        let mut child = Command::new(env!("CARGO_BIN_EXE_liaison"))
            .arg("--config")
            .arg(&config)
            .args(["deliver", "--inbox", "commands"])
            .env("LIAISON_TEST_DELIVER_TIMEOUT_SECS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(busy.as_bytes())
            .unwrap();
        // Accept and hold the connection without answering.
        let (_held, _) = listener.accept().unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(75), "{text}");
        assert!(text.contains("did not answer within 1 s"), "{text}");
        drop(listener);
        let _ = std::fs::remove_file(&sock);
        let stats = cli(&config, &["stats"]);
        assert_eq!(processed(&stats, "command"), 4, "{stats}");
    }

    // The daemon starts and sends what was queued meanwhile, once each.
    daemon.spawn();
    for n in 2..=4 {
        wait_for(PARTNER1, "queued transcript", |m| {
            m.subject.contains(&format!("piped {n}"))
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 1..=4 {
        let subject = format!("piped {n}");
        assert_eq!(
            count_where(PARTNER1, |m| m.subject.contains(&subject)).await,
            1,
            "{subject} answered more than once"
        );
    }
}

#[test]
fn a_quarantined_piped_mail_is_kept_whole_or_left_with_the_mta() {
    // No daemon and no mail server: straight into the store.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("liaison.toml");
    std::fs::write(
        &config,
        config_text(tmp.path(), Transport::Plain).replace(
            "invitation_ttl_days = 90\n",
            "invitation_ttl_days = 90\nquarantine_keep_bytes = 1000\nquarantine_store_bytes = 5000\n",
        ),
    )
    .unwrap();
    // Malformed (no headers) and larger than quarantine_keep_bytes: a
    // fetched one would stay in the server's quarantine folder, a piped
    // one is kept whole in the store.
    let first = format!("\r\n\r\n{}\r\n", "a".repeat(3000));
    let (code, out) = deliver(&config, "commands", first.as_bytes());
    assert_eq!(code, 0, "{out}");
    let q = cli(&config, &["quarantine", "list", "--json"]);
    let key = q[0]["key"].as_str().unwrap().to_string();
    let shown = cli(&config, &["quarantine", "show", &key, "--json"]);
    assert_eq!(shown["kept"], true, "{shown}");
    // The next one does not fit in quarantine_store_bytes: not taken, the
    // MTA keeps it (EX_TEMPFAIL) and says why.
    let second = format!("\r\n\r\n{}\r\n", "b".repeat(3000));
    let (code, out) = deliver(&config, "commands", second.as_bytes());
    assert_eq!(code, 75, "{out}");
    assert!(out.contains("quarantine_store_bytes"), "{out}");
    // A retry of the first is still fine.
    let (code, out) = deliver(&config, "commands", first.as_bytes());
    assert_eq!(code, 0, "{out}");
}

/// Mail taken from the MTA gets no more power than fetched mail: with a
/// trusted MX configured, a partner command without that MX's
/// authentication is quarantined (exit 0: taken, not bounced), and only the
/// authenticated one runs.
#[test]
fn a_forged_partner_command_piped_in_is_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("liaison.toml");
    std::fs::write(
        &config,
        trusting(
            &config_text(tmp.path(), Transport::Plain),
            "mx.liaison.test",
            "",
        ),
    )
    .unwrap();
    let forged = mail(
        PARTNER1,
        COMMANDS,
        "forged",
        "Authentication-Results: mx.liaison.test; dkim=fail header.d=liaison.test\r\n",
        "invite victim@contoso.test\n",
    );
    let (code, out) = deliver(&config, "commands", forged.as_bytes());
    assert_eq!(code, 0, "{out}");
    let stats = cli(&config, &["stats"]);
    assert_eq!(processed(&stats, "quarantined"), 1, "{stats}");
    assert_eq!(processed(&stats, "command"), 0, "{stats}");
    let q = cli(&config, &["quarantine", "list", "--json"]);
    assert!(
        q[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("mx.liaison.test"),
        "{q}"
    );
    let authentic = mail(
        PARTNER1,
        COMMANDS,
        "authentic",
        "Authentication-Results: mx.liaison.test; dkim=pass header.d=liaison.test\r\n",
        "status\n",
    );
    let (code, out) = deliver(&config, "commands", authentic.as_bytes());
    assert_eq!(code, 0, "{out}");
    let stats = cli(&config, &["stats"]);
    assert_eq!(processed(&stats, "command"), 1, "{stats}");
    assert_eq!(processed(&stats, "quarantined"), 1, "{stats}");
}

/// A daemon run as [`PIPE_USER`], as an operator runs it beside a Postfix
/// whose pipe transport runs as the same user (the admin socket admits its
/// owner and root only).
struct PipeDaemon {
    child: std::process::Child,
    dir: PathBuf,
    config: PathBuf,
    _tmp: tempfile::TempDir,
}

impl PipeDaemon {
    fn start(edit: impl FnOnce(String) -> String) -> PipeDaemon {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let config = dir.join("liaison.toml");
        std::fs::write(&config, edit(config_text(&dir, Transport::Plain))).unwrap();
        let owner = format!("{PIPE_USER}:{PIPE_USER}");
        let chown = Command::new("chown")
            .args(["-R", &owner])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            chown.success(),
            "no user {PIPE_USER}: start the mail stack with `bash tests/mailstack.sh up`"
        );
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new("setpriv")
            .args([
                &format!("--reuid={PIPE_USER}"),
                &format!("--regid={PIPE_USER}"),
                "--clear-groups",
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_liaison"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("LIAISON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start liaison as the pipe user");
        let d = PipeDaemon {
            child,
            dir,
            config,
            _tmp: tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !d.dir.join("store.sock").exists() {
            assert!(
                Instant::now() < deadline,
                "daemon did not start:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Waits until `customer`'s relationship with northwind is `state`.
    async fn wait_state(&self, customer: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = cli(&self.config, &["status", customer, "--json"]);
            if v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["partner"] == "northwind" && r["state"] == state)
            }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{customer} did not become {state}: {v}\n{}\n--- postfix log ---\n{}",
                self.log(),
                postfix_log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PipeDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log());
        }
    }
}

fn mailstack_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("LIAISON_MAILSTACK_DIR").unwrap_or_else(|_| "/tmp/liaison-ms".into()),
    )
}

fn postfix_log_tail() -> String {
    let log = std::fs::read_to_string(mailstack_dir().join("log/postfix.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[tokio::test]
async fn a_reply_delivered_by_postfixs_pipe_transport_is_committed() {
    require_mailstack();
    let _serial = serial().await;
    let customer = "carol@contoso.test";
    for u in [PARTNER1, COMMANDS, customer] {
        clear_mailbox(u).await;
    }
    // Invitations ask for replies to pipe-invites+TOKEN@, which Postfix
    // delivers through its pipe transport only: no IMAP mailbox sees them.
    let daemon = PipeDaemon::start(|c| {
        c.replace(
            "invitations = \"invites@liaison.test\"",
            &format!("invitations = \"{PIPE_INVITES}\""),
        )
    });
    let script = mailstack_dir().join("pipe-deliver");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Written by tests/e2e_deliver.rs: the mail stack's pipe transport runs it.\nexec {} --config {} deliver --inbox invites\n",
            env!("CARGO_BIN_EXE_liaison"),
            daemon.config.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("0755")
        .arg(&script)
        .status()
        .unwrap();

    partner_commands(&format!("invite {customer}"), "pipe invite").await;
    let inv = wait_for(customer, "invitation", |m| m.subject.contains("[ref:")).await;
    let reply_to = inv.reply_to.clone().unwrap();
    assert!(
        reply_to.starts_with("pipe-invites+"),
        "replies must go to the piped address: {reply_to}"
    );
    let reply = mail(
        customer,
        &reply_to,
        &format!("Re: {}", inv.subject),
        "",
        "Accept\n",
    );
    send_raw(customer, &[&reply_to], &reply).await;
    daemon.wait_state(customer, "active").await;
    let log = daemon.log();
    assert!(log.contains("processed (pipe delivery)"), "{log}");
    assert!(
        postfix_log_tail().contains("delivered via liaisonpipe service"),
        "{}",
        postfix_log_tail()
    );
    // The customer is told once.
    wait_for(customer, "confirmation", |m| m.subject.contains("granted")).await;
}

#[tokio::test]
async fn a_server_without_custom_keywords_gets_processed_mail_moved() {
    require_mailstack();
    let _serial = serial().await;
    const NOKEYWORDS: &str = "nokeywords@liaison.test";
    for u in [PARTNER1, NOKEYWORDS] {
        clear_mailbox(u).await;
    }
    delete_folder(NOKEYWORDS, "Liaison/Processed").await;
    // The command address is an account whose server stores no keywords.
    let edit = |c: String| {
        c.replace(
            "username = \"commands@liaison.test\"",
            &format!("username = \"{NOKEYWORDS}\""),
        )
        .replace(
            "commands = \"commands@liaison.test\"",
            &format!("commands = \"{NOKEYWORDS}\""),
        )
    };
    let daemon = Daemon::start_custom(Transport::Plain, edit);
    let (ok, out, err) = daemon.cli(&["check-config"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.lines().any(|l| l.starts_with("imap commands ")
            && l.contains(": ok (the server allows no custom keywords here")
            && l.contains("moved to Liaison/Processed")),
        "{out}"
    );
    // Other accounts are unaffected: no note.
    assert!(
        out.lines()
            .any(|l| l.starts_with("imap invites ") && l.ends_with(": ok")),
        "{out}"
    );

    send_raw(
        PARTNER1,
        &[NOKEYWORDS],
        &mail(PARTNER1, NOKEYWORDS, "no keywords", "", "status\n"),
    )
    .await;
    wait_for(PARTNER1, "transcript", |m| {
        m.subject.contains("no keywords")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while folder_count(NOKEYWORDS, "Liaison/Processed").await < 1 {
        assert!(
            Instant::now() < deadline,
            "the processed mail was not moved:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(folder_count(NOKEYWORDS, "INBOX").await, 0);
    let log = daemon.log();
    assert!(log.contains("allows no custom keywords"), "{log}");
    assert!(!log.contains("could not mark processed messages"), "{log}");
}
