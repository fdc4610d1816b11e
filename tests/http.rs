//! `/metrics` and `/healthz` of the real `liaison` binary against the
//! loopback Postfix and Dovecot (`tests/mailstack.sh up`): scraped after a
//! real invite → accept, and `/healthz` turning `degraded` (503) when SMTP
//! cannot be reached.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const ALICE: &str = "alice@contoso.test";

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The daemon with `[http] listen` set, in a temporary folder.
struct Liaison {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Liaison {
    /// Starts the binary on `config_text(..)` changed by `edit`, plus an
    /// `[http]` section; returns once `/healthz` answers.
    async fn start(edit: impl FnOnce(String) -> String) -> Liaison {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("liaison.toml");
        let text = format!(
            "{}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            edit(config_text(dir.path(), Transport::Plain))
        );
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_liaison"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("LIAISON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start liaison");
        let d = Liaison {
            child: Some(child),
            dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while try_get(port, "/healthz").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "/healthz never answered:\n{}",
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
            .await
    }

    async fn request(&self, raw: &str) -> (u16, String, String) {
        send(self.port, raw)
            .await
            .unwrap_or_else(|e| panic!("HTTP {raw:?}: {e}\n{}", self.log()))
    }

    /// Polls `path` until `pred` holds on (status, body).
    async fn wait_for(&self, path: &str, what: &str, pred: impl Fn(u16, &str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _, body) = self.get(path).await;
            if pred(status, &body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: no {what} within 20 s; last answer {status}:\n{body}\n---- log ----\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("did not stop within 20 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Liaison {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log());
        }
    }
}

/// One HTTP exchange: (status, head, body).
async fn send(port: u16, raw: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(raw.as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::other("no answer within 10 s"))??;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {out:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status: {head:?}")))?;
    Ok((status, head.to_string(), body.to_string()))
}

async fn try_get(port: u16, path: &str) -> Option<(u16, String, String)> {
    send(port, &format!("GET {path} HTTP/1.1\r\n\r\n"))
        .await
        .ok()
}

/// The value of an unlabelled or labelled sample, e.g.
/// `liaison_mails_total{class="command"}`.
fn sample(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn health(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/healthz body {body:?}: {e}"))
}

/// Answers `invitation` as `from` with `answer`, the invitation quoted below.
async fn reply_to_invitation(from: &str, invitation: &Received, answer: &str) {
    let to = invitation
        .reply_to
        .clone()
        .expect("invitation has Reply-To");
    let quoted: String = invitation
        .text
        .lines()
        .map(|l| format!("> {l}\n"))
        .collect();
    let body =
        format!("{answer}\n\nOn Wed, 25 Nov 2026 at 10:00, Liaison <{INVITES}> wrote:\n{quoted}");
    let headers = format!(
        "In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n",
        id = invitation.message_id
    );
    let raw = mail(
        from,
        &to,
        &format!("Re: {}", invitation.subject),
        &headers,
        &body,
    );
    send_raw(from, &[&to], &raw).await;
}

async fn clear(users: &[&str]) {
    for u in users {
        clear_mailbox(u).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_real_invite_and_accept() {
    let _serial = serial().await;
    require_mailstack();
    clear(&[PARTNER1, COMMANDS, INVITES, ALICE]).await;
    let mut daemon = Liaison::start(|t| t).await;

    // Both inboxes connect and SMTP has not failed: healthy.
    let body = daemon
        .wait_for("/healthz", "status ok", |s, _| s == 200)
        .await;
    let h = health(&body);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(
        (h["imap_connected"].as_u64(), h["inboxes"].as_u64()),
        (Some(2), Some(2))
    );

    // The story: invite, accept.
    let cmd = mail(
        PARTNER1,
        COMMANDS,
        "please invite",
        "",
        "invite alice@contoso.test name \"Contoso Ltd\"\n",
    );
    send_raw(PARTNER1, &[COMMANDS], &cmd).await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    reply_to_invitation(ALICE, &inv, "Accept").await;
    wait_for(PARTNER1, "acceptance notice", |m| {
        m.subject.starts_with("Accepted:")
    })
    .await;
    wait_for(ALICE, "confirmation", |m| m.subject.contains("You granted")).await;

    // Transcript, invitation, both acceptance mails: at least 4 sent.
    let metrics = daemon
        .wait_for("/metrics", "4 mails sent", |s, b| {
            s == 200 && sample(b, "liaison_smtp_sent_total").is_some_and(|n| n >= 4)
        })
        .await;
    for line in [
        "liaison_mails_total{class=\"command\"} 1",
        "liaison_invitations_sent_total 1",
        "liaison_acceptances_total 1",
        "liaison_send_failures_total 0",
        "liaison_smtp_up 1",
        "# TYPE liaison_mails_total counter",
        "# TYPE liaison_outbox_depth gauge",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    let (status, head, _) = daemon.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4"),
        "{head}"
    );

    // The outbox gauge drops to 0 just after the last send is recorded.
    daemon
        .wait_for("/healthz", "an empty outbox", |s, b| {
            s == 200 && b.contains("\"outbox_depth\":0")
        })
        .await;
    let (status, head, body) = daemon.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("\r\nContent-Type: application/json"),
        "{head}"
    );
    // The documented shape, in the documented order.
    assert!(
        body.starts_with(
            "{\"status\":\"ok\",\"imap_connected\":2,\"inboxes\":2,\"smtp_ok\":true,\"quarantined\":0,\"outbox_depth\":"
        ),
        "{body}"
    );
    assert_eq!(health(&body)["outbox_depth"], 0, "{body}");

    // Everything else.
    assert_eq!(daemon.get("/").await.0, 404);
    assert_eq!(daemon.get("/metrics/../admin").await.0, 404);
    let (status, head, _) = daemon
        .request("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(status, 405);
    assert!(head.contains("\r\nAllow: GET"), "{head}");
    assert_eq!(daemon.request("nonsense\r\n\r\n").await.0, 400);

    let status = daemon.stop();
    assert!(status.success(), "exit {status:?}\n{}", daemon.log());
    assert!(
        try_get(daemon.port, "/healthz").await.is_none(),
        "the endpoint stops with the daemon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_degraded_when_smtp_cannot_be_reached() {
    let _serial = serial().await;
    require_mailstack();
    clear(&[PARTNER1, COMMANDS, INVITES, ALICE]).await;
    // SMTP on a port nothing listens on. IMAP is the real stack, so the
    // partner's command still arrives; answering it is what fails.
    let closed = free_port();
    let mut daemon = Liaison::start(|t| {
        t.replace(
            &format!("port = {}\n", *SMTP_PORT),
            &format!("port = {closed}\n"),
        )
    })
    .await;
    let config = std::fs::read_to_string(daemon.dir.path().join("liaison.toml")).unwrap();
    assert!(config.contains(&format!("port = {closed}\n")), "{config}");

    // Nothing has been sent yet, so nothing has failed yet.
    daemon
        .wait_for("/healthz", "status ok", |s, _| s == 200)
        .await;

    let cmd = mail(
        PARTNER1,
        COMMANDS,
        "invite",
        "",
        "invite alice@contoso.test\n",
    );
    send_raw(PARTNER1, &[COMMANDS], &cmd).await;
    let body = daemon.wait_for("/healthz", "503", |s, _| s == 503).await;
    let h = health(&body);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["smtp_ok"], false, "{h}");
    assert_eq!(h["imap_connected"], 2, "IMAP is fine: {h}");
    assert!(h["outbox_depth"].as_u64().unwrap() >= 1, "{h}");

    let (_, _, metrics) = daemon.get("/metrics").await;
    assert!(
        sample(&metrics, "liaison_send_failures_total").is_some_and(|n| n >= 1),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "liaison_smtp_up"), Some(0), "{metrics}");
    assert_eq!(
        sample(&metrics, "liaison_smtp_sent_total"),
        Some(0),
        "{metrics}"
    );

    // A failing SMTP server does not keep the daemon from stopping.
    let status = daemon.stop();
    assert!(status.success(), "exit {status:?}\n{}", daemon.log());
    clear(&[COMMANDS]).await;
}
