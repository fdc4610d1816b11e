//! End to end with OAuth2: the real binary with both inboxes and SMTP
//! logging in with tokens (XOAUTH2) from the token endpoint emulator
//! (`tests/common/token_emulator.rs`, standing in for Entra ID), against
//! the loopback Dovecot and Postfix, which check the tokens themselves.
//! The story (invite → accept → ticket), a token expiring mid-run, the
//! endpoint down for a while, a revoked client, and a rotated refresh token
//! surviving a restart. Token lifetimes are a few seconds.

mod common;

use common::token_emulator::TokenEmulator;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE: &str = "alice@contoso.test";
const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const DESK: &str = "helpdesk@liaison.test";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `config_text` with every login on tokens of `[[oauth2]] name = "m365"`
/// (given as `client`), SMTP on the submission port, and `[http]`.
fn on_oauth(config: String, client: &str, http_port: u16) -> String {
    let config = config.replace(
        &format!("password = \"{PASSWORD}\"\n"),
        "auth = \"oauth2\"\noauth2 = \"m365\"\n",
    );
    let smtp = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        *SMTP_PORT
    );
    assert!(config.contains(&smtp));
    let config = config.replace(
        &smtp,
        &format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{INVITES}\"\nauth = \"oauth2\"\noauth2 = \"m365\"\n",
            *SUBMISSION_PORT
        ),
    );
    format!("{config}\n[[oauth2]]\nname = \"m365\"\n{client}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n")
}

fn app_client(emu: &TokenEmulator) -> String {
    emu.register_app("liaison-app", "app-secret-value", "liaison.test");
    format!(
        "token_url = \"{}\"\nclient_id = \"liaison-app\"\nclient_secret = \"app-secret-value\"\nscope = \"https://outlook.office365.com/.default\"\n",
        emu.token_url("liaison.test")
    )
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_string()))
}

/// Polls `/healthz` until `pred` holds on (status, JSON).
async fn wait_health(
    daemon: &Daemon,
    port: u16,
    what: &str,
    pred: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((status, body)) = get(port, "/healthz").await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if pred(status, &v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz: no {what} within 30 s; last {status} {body}\n{}",
                daemon.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_count(file: &str, needle: &str) -> usize {
    std::fs::read_to_string(stack_dir().join("log").join(file))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Ends the IMAP sessions of `users` at the server (as a restart or an
/// admin would), so the watchers log in again.
fn kick(users: &[&str]) {
    for u in users {
        let _ = std::process::Command::new("doveadm")
            .arg("-c")
            .arg(stack_dir().join("dovecot.conf"))
            .args(["kick", u])
            .output();
    }
}

async fn clear() {
    for u in [COMMANDS, INVITES, PARTNER1, ALICE, DESK] {
        clear_mailbox(u).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_runs_with_both_inboxes_and_smtp_on_oauth2() {
    let _serial = serial().await;
    require_mailstack();
    clear().await;
    let emu = TokenEmulator::start();
    let client = app_client(&emu);
    let http = free_port();
    let xoauth2 = |u: &str| {
        log_count(
            "dovecot-info.log",
            &format!("Login: user=<{u}>, method=XOAUTH2,"),
        )
    };
    let plain = |u: &str| {
        log_count(
            "dovecot-info.log",
            &format!("Login: user=<{u}>, method=PLAIN,"),
        )
    };
    let sasl = || {
        log_count(
            "postfix.log",
            &format!("sasl_method=XOAUTH2, sasl_username={INVITES}"),
        )
    };
    let (x_commands, x_invites, p_commands, p_invites, smtp_logins) = (
        xoauth2(COMMANDS),
        xoauth2(INVITES),
        plain(COMMANDS),
        plain(INVITES),
        sasl(),
    );
    let daemon = Daemon::start_custom(Transport::Plain, |c| on_oauth(c, &client, http));
    let health = wait_health(&daemon, http, "ok", |s, _| s == 200).await;
    assert_eq!(health["oauth"]["m365"], "ok", "{health}");

    make_active(&daemon, ALICE).await;
    partner_commands(&format!("revoked {ALICE}"), "revoke").await;
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
            "Nobody can sign in since 9:00.",
        ),
    )
    .await;
    let desk = wait_for(DESK, "new ticket", |m| m.subject.starts_with("[T-")).await;
    assert!(desk.text.contains("Nobody can sign in since 9:00."));

    // Tokens, not passwords, at both servers; one token for all of them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(xoauth2(COMMANDS) > x_commands && xoauth2(INVITES) > x_invites);
    assert_eq!(
        (plain(COMMANDS), plain(INVITES)),
        (p_commands, p_invites),
        "no password login"
    );
    assert!(
        sasl() >= smtp_logins + 5,
        "every mail went through an XOAUTH2 SMTP login"
    );
    assert_eq!(
        emu.issued("client_credentials"),
        1,
        "one token shared by both inboxes and the SMTP pool"
    );

    let (_, metrics) = get(http, "/metrics").await.unwrap();
    let expiry: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("liaison_oauth_token_expiry_seconds{client=\"m365\"} "))
        .expect("expiry metric")
        .parse()
        .unwrap();
    assert!(expiry > 3000, "{expiry}");
    assert!(metrics.contains("liaison_oauth_refresh_failures_total{client=\"m365\"} 0"));
    let (ok, out, err) = daemon.cli(&["oauth", "status", "--json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status[0]["client"], "m365");
    assert_eq!(status[0]["state"], "ok");
    let (ok, out, err) = daemon.cli(&["check-config"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("oauth2 m365 (token from http://127.0.0.1:"),
        "{out}"
    );
    assert!(!daemon.log().contains("app-secret-value") && !out.contains("app-secret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_run_is_refreshed_and_nothing_is_lost() {
    let _serial = serial().await;
    require_mailstack();
    clear().await;
    let emu = TokenEmulator::start();
    emu.set_lifetime(4);
    let client = app_client(&emu);
    let http = free_port();
    let daemon = Daemon::start_custom(Transport::Plain, |c| on_oauth(c, &client, http));
    wait_health(&daemon, http, "ok", |s, _| s == 200).await;
    partner_commands("help", "before expiry").await;
    // The first token has expired; sessions log in again (and SMTP opens a
    // new connection) with the refreshed one.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    kick(&[COMMANDS, INVITES]);
    partner_commands("help", "after expiry").await;
    assert!(emu.issued("client_credentials") >= 2);
    let log = daemon.log();
    assert!(
        !log.contains("refused the token"),
        "no expired token was ever presented:\n{log}"
    );
    wait_health(&daemon, http, "ok", |s, v| {
        s == 200 && v["oauth"]["m365"] == "ok"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_down_for_a_while_degrades_health_queues_and_catches_up() {
    let _serial = serial().await;
    require_mailstack();
    clear().await;
    let emu = TokenEmulator::start();
    emu.set_lifetime(3);
    let client = app_client(&emu);
    let http = free_port();
    let daemon = Daemon::start_custom(Transport::Plain, |c| on_oauth(c, &client, http));
    wait_health(&daemon, http, "ok", |s, _| s == 200).await;
    emu.set_down(true);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let health = wait_health(&daemon, http, "degraded by the outage", |s, v| {
        s == 503
            && v["oauth"]["m365"]
                .as_str()
                .is_some_and(|r| r.contains("unreachable"))
    })
    .await;
    assert_eq!(health["status"], "degraded");
    // The open IMAP session still works: the mail is fetched and decided;
    // its transcript waits in the outbox (no token for a new SMTP login).
    let before = processed_total(&daemon);
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "during the outage", "", "help\n"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while processed_total(&daemon) == before {
        assert!(
            Instant::now() < deadline,
            "not processed during the outage:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        stats(&daemon)["outbox_pending"].as_u64().unwrap() >= 1,
        "queued, not lost"
    );
    assert_eq!(
        count_where(PARTNER1, |m| m.subject.contains("during the outage")).await,
        0
    );
    emu.set_down(false);
    wait_for(PARTNER1, "the transcript, after the outage", |m| {
        m.subject.contains("during the outage")
    })
    .await;
    wait_health(&daemon, http, "ok again", |s, v| {
        s == 200 && v["oauth"]["m365"] == "ok"
    })
    .await;
    let (_, metrics) = get(http, "/metrics").await.unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("liaison_oauth_refresh_failures_total{client=\"m365\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 1);
    // The outbox waited for a token instead of spending delivery attempts.
    assert!(
        metrics.contains("liaison_send_failures_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_says_what_to_do_degrades_health_and_loses_nothing() {
    let _serial = serial().await;
    require_mailstack();
    clear().await;
    let emu = TokenEmulator::start();
    emu.set_lifetime(3);
    let client = app_client(&emu);
    let http = free_port();
    let daemon = Daemon::start_custom(Transport::Plain, |c| on_oauth(c, &client, http));
    wait_health(&daemon, http, "ok", |s, _| s == 200).await;
    emu.revoke_client("liaison-app");
    let health = wait_health(&daemon, http, "degraded by the refusal", |s, v| {
        s == 503
            && v["oauth"]["m365"]
                .as_str()
                .is_some_and(|r| r.contains("invalid_client"))
    })
    .await;
    let reason = health["oauth"]["m365"].as_str().unwrap();
    assert!(
        reason.contains("invalid_client") && reason.contains("AADSTS7000222"),
        "{health}"
    );
    let log = daemon.log();
    assert!(log.contains("check its client_id and client secret, and the secret's expiry date in the app registration"), "{log}");
    assert!(!log.contains("app-secret-value"));
    let (ok, out, _) = daemon.cli(&["check-config"]);
    assert!(
        !ok && out.contains("oauth2 m365")
            && out.contains("FAILED")
            && out.contains("invalid_client"),
        "{out}"
    );
    // A command sent meanwhile is answered once a valid secret is in place.
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "while revoked", "", "help\n"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    emu.restore_client("liaison-app");
    wait_for(PARTNER1, "the transcript", |m| {
        m.subject.contains("while revoked")
    })
    .await;
    wait_health(&daemon, http, "ok again", |s, _| s == 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_a_restart() {
    let _serial = serial().await;
    require_mailstack();
    clear().await;
    let emu = TokenEmulator::start();
    emu.register_public_app("liaison-public", "liaison.test");
    let tokens = tempfile::tempdir().unwrap();
    let file = tokens.path().join("m365.refresh-token");
    let first = emu.issue_refresh_token("liaison-public", INVITES);
    std::fs::write(&file, format!("{first}\n")).unwrap();
    let client = format!(
        "token_url = \"{}\"\ndevice_authorization_url = \"{}\"\nclient_id = \"liaison-public\"\nscope = \"https://outlook.office365.com/IMAP.AccessAsUser.All offline_access\"\ngrant = \"refresh_token\"\nrefresh_token_file = \"{}\"\n",
        emu.token_url("consumers"),
        emu.device_url("consumers"),
        file.display()
    );
    let http = free_port();
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| on_oauth(c, &client, http));
    wait_health(&daemon, http, "ok", |s, _| s == 200).await;
    partner_commands("help", "before the restart").await;
    let saved = std::fs::read_to_string(&file).unwrap();
    assert_ne!(saved.trim(), first, "rotated and saved");
    assert!(!emu.refresh_token_valid(&first) && emu.refresh_token_valid(&saved));
    assert!(daemon.stop().success());
    daemon.spawn();
    wait_health(&daemon, http, "ok after the restart", |s, _| s == 200).await;
    partner_commands("help", "after the restart").await;
    assert!(emu.issued("refresh_token") >= 2);
    assert!(emu.refresh_token_valid(&std::fs::read_to_string(&file).unwrap()));
}
