//! The customer landing page in a real browser: Debian's Chromium driven
//! over WebDriver (chromedriver, headless, loopback) by `fantoccini`,
//! against the real `liaison` binary and the loopback Postfix + Dovecot.
//!
//! The link is taken from the invitation that arrived in the customer's
//! mailbox over IMAP. Scanners (a plain GET, a HEAD, a browser that only
//! loads the page) change nothing; a POST without the page's anti-forgery
//! value is refused; clicking "Accept" makes the relationship active and
//! the partner's notice and the customer's confirmation arrive by mail;
//! forged and superseded links show the "not found" page; the Korean
//! page renders Korean. Screenshots are kept under
//! `target/tmp/e2e_web/` (a CI artifact).
//!
//! Needs `tests/browser.sh install` (run by `tests/run.sh`) and the mail
//! stack. One browser for the whole binary: the steps run in one test.

mod common;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const ALICE: &str = "alice@contoso.test";
const CAROL: &str = "carol@contoso.test";
/// The partner's name, with markup in it: the page must show it as text.
const PARTNER_NAME: &str = "Northwind & <b>Sons</b>";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// chromedriver on a loopback port, ended when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let bin = std::env::var("LIAISON_CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} is missing: run `bash tests/browser.sh install` (tests/run.sh does)"
        );
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }

    async fn browser(&self) -> Client {
        let chromium = std::env::var("LIAISON_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // Root in CI: no sandbox. No GPU, no /dev/shm games, a
                // fixed window so the screenshots compare.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1000,900",
                         "--no-first-run", "--disable-extensions"],
            }
        });
        let caps = caps.as_object().unwrap().clone();
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP exchange with the landing page: (status, body).
async fn http(port: u16, raw: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {out:?}"));
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

fn post(path: &str, form: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
}

/// The page link in an invitation's text.
fn link_in(mail: &Received, base: &str) -> String {
    let prefix = format!("{base}/i/");
    let at = mail
        .text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in:\n{}", mail.text));
    let token: String = mail.text[at + prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("{prefix}{token}")
}

/// Saves a screenshot under `target/tmp/e2e_web/` and returns its size.
fn keep(name: &str, png: &[u8]) -> usize {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e_web");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is a PNG");
    png.len()
}

/// The text of the first element matching `css`. Looked for and read
/// again (for up to 2 s) when it is not there yet or went stale between
/// finding and reading it: the page it is on may still be replacing the
/// one before it after a form's submit.
async fn text_of(b: &Client, css: &str) -> String {
    let mut tries = 0;
    loop {
        let element = match b.find(Locator::Css(css)).await {
            Ok(element) => element,
            Err(_) if tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => panic!("no {css}: {e}"),
        };
        match element.text().await {
            Ok(text) => return text,
            Err(_) if tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot read {css}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_in_a_real_browser() {
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES, ALICE, CAROL] {
        clear_mailbox(u).await;
    }
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        format!(
            "{}\n[web]\nlisten = \"127.0.0.1:{port}\"\npublic_base_url = \"{base}\"\n",
            c.replace(
                "name = \"Northwind Traders\"",
                "name = \"Northwind & <b>Sons</b>\""
            )
        )
    });
    let driver = Driver::start();
    let browser = driver.browser().await;

    // The invitation arrives over IMAP with its page link.
    partner_commands(
        "invite alice@contoso.test name \"Contoso Ltd\"",
        "invite alice",
    )
    .await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let link = link_in(&inv, &base);
    assert!(
        inv.html.as_deref().is_some_and(|h| h.contains(&link)),
        "the HTML part links the page too"
    );
    let path = link.trim_start_matches(&base).to_string();

    // Scanners: a plain GET, a HEAD, and a browser that loads the page and
    // runs whatever it finds. Nothing changes, nothing is sent.
    let (status, body) = http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        port,
        &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, ""));
    browser.goto("about:blank").await.unwrap();
    let blank = browser.screenshot().await.unwrap().len();
    browser.goto(&link).await.unwrap();
    let shown = browser.screenshot().await.unwrap();
    browser.goto(&link).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(daemon.status(ALICE)[0]["state"], "invited");

    // A POST without, or with a wrong, anti-forgery value: 403, nothing.
    let (status, _) = http(port, &post(&path, "answer=accept")).await;
    assert_eq!(status, 403);
    let (status, _) = http(
        port,
        &post(&path, "answer=accept&form_token=aaaaaaaaaaaaaaaaaaaaaaaaaa"),
    )
    .await;
    assert_eq!(status, 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(daemon.status(ALICE)[0]["state"], "invited");
    assert_eq!(
        count_where(PARTNER1, |m| m.subject.starts_with("Accepted:")).await,
        0,
        "no scanner answered"
    );

    // What the customer sees: who asks (as text), what it grants, the
    // buttons, in English.
    assert_eq!(
        browser
            .find(Locator::Css("html"))
            .await
            .unwrap()
            .attr("lang")
            .await
            .unwrap()
            .as_deref(),
        Some("en")
    );
    let h1 = text_of(&browser, "h1").await;
    assert_eq!(
        h1,
        format!("{PARTNER_NAME} asks for delegated admin permissions")
    );
    assert_eq!(text_of(&browser, "button[value=accept]").await, "Accept");
    assert_eq!(text_of(&browser, "button[value=decline]").await, "Decline");
    let main = text_of(&browser, "main").await;
    assert!(main.contains("What accepting grants"), "{main}");
    assert!(main.contains("alice@contoso.test"), "{main}");
    let size = keep("invitation-en.png", &shown);
    assert!(
        size > 4 * blank,
        "a page of text, not a blank: {size} vs {blank} bytes"
    );

    // The customer accepts.
    browser
        .find(Locator::Css("button[value=accept]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let thanks = text_of(&browser, "main").await;
    assert!(thanks.contains("Thank you"), "{thanks}");
    assert!(
        thanks.contains(&format!(
            "You granted {PARTNER_NAME} delegated admin permissions"
        )),
        "{thanks}"
    );
    keep("accepted-en.png", &browser.screenshot().await.unwrap());
    daemon.wait_state("northwind", ALICE, "active").await;
    wait_for(PARTNER1, "acceptance notice", |m| {
        m.subject.starts_with("Accepted:")
    })
    .await;
    let confirmation = wait_for(ALICE, "confirmation", |m| m.subject.contains("You granted")).await;
    assert_eq!(
        confirmation.in_reply_to.as_deref(),
        Some(inv.message_id.as_str()),
        "the confirmation threads under the invitation"
    );
    let (ok, history, _) = daemon.cli(&["history", ALICE, "--json"]);
    assert!(ok && history.contains("\"active\""), "{history}");

    // Again: "already answered", and nothing more is sent.
    browser.goto(&link).await.unwrap();
    assert_eq!(text_of(&browser, "h1").await, "Already answered");
    let (status, _) = http(port, &post(&path, "answer=decline&form_token=x")).await;
    assert_eq!(status, 403);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count_where(PARTNER1, |m| m.subject.starts_with("Accepted:")).await,
        1
    );
    assert_eq!(daemon.status(ALICE)[0]["state"], "active");

    // A forged link: the "not found" page (404).
    let mut forged = link.clone();
    let last = if link.ends_with('a') { "b" } else { "a" };
    forged.replace_range(link.len() - 1.., last);
    browser.goto(&forged).await.unwrap();
    assert_eq!(
        text_of(&browser, "h1").await,
        "This link does not lead to a current invitation"
    );
    let (status, _) = http(
        port,
        &format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            forged.trim_start_matches(&base)
        ),
    )
    .await;
    assert_eq!(status, 404);

    // The Korean page renders Korean (Hangul in the screenshot: the CJK
    // font is installed), with a switch to English.
    partner_commands("invite carol@contoso.test locale ko", "invite carol").await;
    let inv_ko = wait_for(CAROL, "Korean invitation", |m| m.subject.contains("[ref:")).await;
    let link_ko = link_in(&inv_ko, &base);
    browser.goto(&link_ko).await.unwrap();
    assert_eq!(
        browser
            .find(Locator::Css("html"))
            .await
            .unwrap()
            .attr("lang")
            .await
            .unwrap()
            .as_deref(),
        Some("ko")
    );
    assert_eq!(text_of(&browser, "button[value=accept]").await, "수락");
    assert_eq!(text_of(&browser, "button[value=decline]").await, "거절");
    assert!(text_of(&browser, "h1")
        .await
        .contains("위임된 관리자 권한을 요청합니다"));
    let size = keep("invitation-ko.png", &browser.screenshot().await.unwrap());
    assert!(size > 4 * blank, "{size} vs {blank}");
    browser
        .find(Locator::Css("nav a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&browser, "button[value=accept]").await, "Accept");

    // Superseded: the partner ended it and invited again; the old link
    // says so, in Korean, and changes nothing.
    partner_commands(
        "remove carol@contoso.test\ninvite carol@contoso.test locale ko",
        "again carol",
    )
    .await;
    browser.goto(&link_ko).await.unwrap();
    let gone = text_of(&browser, "main").await;
    assert!(gone.contains("새 초대로 대체되었습니다"), "{gone}");
    assert_eq!(daemon.status(CAROL)[0]["state"], "invited");

    browser.close().await.unwrap();
    drop(driver);
    let status = daemon.stop();
    assert!(status.success(), "exit {status:?}\n{}", daemon.log());
    for u in [PARTNER1, COMMANDS, INVITES, ALICE, CAROL] {
        clear_mailbox(u).await;
    }
}

/// TLS terminated by Liaison itself (rustls), with the mail stack's
/// certificate (CN=localhost, SAN 127.0.0.1, signed by its test CA): the
/// page answers over https only, with HSTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_over_tls_with_a_certificate_file() {
    let _serial = serial().await;
    require_mailstack();
    let port = free_port();
    let tls_dir = stack_cert().parent().unwrap().to_path_buf();
    let mut daemon = Daemon::start_custom(Transport::Plain, |c| {
        format!(
            "{c}\n[web]\nlisten = \"127.0.0.1:{port}\"\npublic_base_url = \"https://127.0.0.1:{port}\"\n\
             tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            tls_dir.join("cert.pem").display(),
            tls_dir.join("key.pem").display(),
        )
    });
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(stack_cert()).unwrap();
    for cert in rustls_pemfile_certs(&ca) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("a verified TLS session");
    tls.write_all(b"GET /i/nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
    assert!(
        out.contains("\r\nStrict-Transport-Security: max-age=31536000"),
        "{out}"
    );
    assert!(
        out.contains("does not lead to a current invitation"),
        "{out}"
    );
    // Plain HTTP on the TLS port gets no page.
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(10),
        raw_status(port, "GET /i/nothing HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await
    .unwrap_or_default();
    assert_ne!(status, 404, "no page over plain HTTP");
    let status = daemon.stop();
    assert!(status.success(), "exit {status:?}\n{}", daemon.log());
}

/// The certificates in a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The status of a plain exchange, 0 when the answer is not HTTP.
async fn raw_status(port: u16, raw: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _ = s.write_all(raw.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// `check-config --offline` loads the page's templates and its
/// certificate as the daemon would, and names the key of a bad file.
#[test]
fn check_config_checks_the_landing_page() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = stack_cert().parent().unwrap().to_path_buf();
    let run = |cert: &str| {
        let config = dir.path().join("liaison.toml");
        std::fs::write(
            &config,
            format!(
                "{}\n[web]\nlisten = \"127.0.0.1:1\"\npublic_base_url = \"https://liaison.example.com\"\n\
                 tls_cert_file = \"{cert}\"\ntls_key_file = \"{}\"\n",
                config_text(dir.path(), Transport::Plain),
                tls_dir.join("key.pem").display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_liaison"))
            .arg("--config")
            .arg(&config)
            .args(["check-config", "--offline"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run(&tls_dir.join("cert.pem").display().to_string());
    assert!(ok, "{out}");
    assert!(
        out.contains("web https://liaison.example.com at 127.0.0.1:1 (TLS): ok"),
        "{out}"
    );
    let (ok, out) = run("/nonexistent/cert.pem");
    assert!(!ok, "{out}");
    assert!(out.contains("FAILED: cannot use the TLS cert /nonexistent/cert.pem (config key `web.tls_cert_file`)"), "{out}");
}
