//! Provider sending limits against the real Postfix, behind a local SMTP
//! proxy that answers like a throttling provider: Exchange Online's
//! `554 5.2.0 … SubmissionQuotaExceededException`, a `421` that closes the
//! session, a `451 4.7.500 Server busy`. Nothing may be lost, the queue's
//! order is kept, and `smtp.max_per_minute` is honoured. The pacing minute
//! is shortened for the test (`LIAISON_TEST_MINUTE_SECS`, a debug-build
//! knob), and what is checked is order and counts, not timing.

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// What the proxy saw.
#[derive(Debug, Clone)]
enum Seen {
    /// A transaction handed to Postfix: its recipients, when its data ended.
    Forwarded(Vec<String>, Instant),
    /// A MAIL FROM answered with a throttling reply instead.
    Throttled(&'static str),
}

/// Answers the `n`-th MAIL FROM (1-based, over every connection) gets
/// instead of being passed on; `None` passes it.
fn throttle_plan(n: usize) -> Option<&'static str> {
    match n {
        2 => Some(
            "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Message submission quota exceeded[EndDiagnosticData]",
        ),
        4 => Some("421 4.7.0 Too many messages, closing connection"),
        5 => Some("451 4.7.500 Server busy. Please try again later"),
        _ => None,
    }
}

/// A throttling SMTP proxy in front of the loopback Postfix; returns its
/// port and what it sees.
async fn start_proxy() -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let mails = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let (log, mails) = (log.clone(), mails.clone());
            tokio::spawn(async move {
                let upstream = tokio::net::TcpStream::connect(("127.0.0.1", *SMTP_PORT))
                    .await
                    .expect("connect to Postfix");
                let (mut up_r, mut up_w) = upstream.into_split();
                let (client_r, client_w) = client.into_split();
                let client_w = Arc::new(tokio::sync::Mutex::new(client_w));
                let to_client = client_w.clone();
                let down = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match up_r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if to_client.lock().await.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut lines = BufReader::new(client_r);
                let mut line = Vec::new();
                let mut in_data = false;
                let mut rcpts: Vec<String> = Vec::new();
                loop {
                    line.clear();
                    match lines.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if in_data {
                        if line == b".\r\n" {
                            in_data = false;
                            log.lock()
                                .unwrap()
                                .push(Seen::Forwarded(std::mem::take(&mut rcpts), Instant::now()));
                        }
                    } else {
                        let upper = String::from_utf8_lossy(&line).to_ascii_uppercase();
                        if upper.starts_with("MAIL FROM") {
                            let n = mails.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            rcpts.clear();
                            if let Some(answer) = throttle_plan(n) {
                                log.lock().unwrap().push(Seen::Throttled(answer));
                                let mut w = client_w.lock().await;
                                let _ = w.write_all(format!("{answer}\r\n").as_bytes()).await;
                                if answer.starts_with("421") {
                                    let _ = w.shutdown().await;
                                    break;
                                }
                                continue;
                            }
                        } else if upper.starts_with("RCPT TO:") {
                            let text = String::from_utf8_lossy(&line);
                            let addr = text
                                .split_once('<')
                                .and_then(|(_, r)| r.split_once('>'))
                                .map(|(a, _)| a.to_ascii_lowercase())
                                .unwrap_or_default();
                            rcpts.push(addr);
                        } else if upper == "DATA\r\n" {
                            in_data = true;
                        }
                    }
                    if up_w.write_all(&line).await.is_err() {
                        break;
                    }
                }
                let _ = up_w.shutdown().await;
                down.abort();
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_throttling_provider_loses_nothing_and_the_order_and_pace_are_kept() {
    require_mailstack();
    let _serial = serial().await;
    const ALICE: &str = "alice@contoso.test";
    const PARTNER1: &str = "partner1@liaison.test";
    for u in [ALICE, PARTNER1, "commands@liaison.test"] {
        clear_mailbox(u).await;
    }
    let (proxy_port, seen) = start_proxy().await;
    // A pacing "minute" of 2 s, 3 mails in it; one connection, so the
    // order of hand-over is the order of the queue.
    const MINUTE_SECS: u64 = 2;
    const PER_MINUTE: usize = 3;
    std::env::set_var("LIAISON_TEST_MINUTE_SECS", MINUTE_SECS.to_string());
    let daemon = Daemon::start_custom(Transport::Plain, |c| {
        c.replace(
            &format!("port = {}\n", *SMTP_PORT),
            &format!(
                "port = {proxy_port}\nmax_connections = 1\nmax_per_minute = {PER_MINUTE}\nmax_recipients_per_day = 10000\n"
            ),
        )
    });
    let customers: Vec<String> = (1..=8).map(|i| format!("alice+{i}@contoso.test")).collect();
    let body: String = customers.iter().map(|c| format!("invite {c}\n")).collect();
    let subject = "bulk under limits";
    send_raw(
        PARTNER1,
        &["commands@liaison.test"],
        &mail(PARTNER1, "commands@liaison.test", subject, "", &body),
    )
    .await;
    let transcript = wait_for(PARTNER1, "transcript", |m| m.subject.contains(subject)).await;
    // The transcript says when the last invitation goes out.
    assert!(
        transcript.text.contains("The provider's sending limit (3 messages a minute, 10000 recipients a day) paces these mails: with 9 in the queue, the last should go out at about "),
        "{}",
        transcript.text
    );

    // Every invitation arrives, exactly once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = count_where(ALICE, |m| m.subject.contains("[ref:")).await;
        if n == customers.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {} invitations arrived; proxy saw {:?}\n{}",
            customers.len(),
            seen.lock().unwrap(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count_where(ALICE, |m| m.subject.contains("[ref:")).await,
        customers.len()
    );
    let stats = stats(&daemon);
    assert_eq!(stats["outbox_pending"], 0, "{stats}");
    assert_eq!(stats["outbox_sent"], customers.len() as u64 + 1, "{stats}");
    let log = daemon.log();
    assert!(!log.contains("refused for good"), "{log}");
    assert_eq!(
        log.matches("the provider throttled the sender").count(),
        3,
        "{log}"
    );

    let seen = seen.lock().unwrap().clone();
    let throttled: Vec<&str> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Throttled(answer) => Some(&answer[..3]),
            _ => None,
        })
        .collect();
    assert_eq!(throttled, ["554", "421", "451"], "{seen:?}");
    let forwarded: Vec<(Vec<String>, Instant)> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Forwarded(r, at) => Some((r.clone(), *at)),
            _ => None,
        })
        .collect();
    // Nothing sent twice: the invitations and the transcript, once each.
    assert_eq!(forwarded.len(), customers.len() + 1, "{seen:?}");
    let invitations: Vec<String> = forwarded
        .iter()
        .flat_map(|(r, _)| r.iter())
        .filter(|r| r.starts_with("alice+"))
        .cloned()
        .collect();
    // The queue's order is kept across every throttling answer.
    assert_eq!(invitations, customers, "{seen:?}");
    // The pace: 9 mails at 3 a "minute" span at least two minutes of
    // windows (less the clock's one-second granularity). Slowness can only
    // make the span longer.
    let span = forwarded.last().unwrap().1 - forwarded[0].1;
    let windows = (forwarded.len().div_ceil(PER_MINUTE) - 1) as u64;
    assert!(
        span >= Duration::from_secs(windows * MINUTE_SECS - 1),
        "9 mails within {span:?}: {seen:?}"
    );

    // A CSV import says the same when its invitations are paced.
    let csv = daemon.dir.join("customers.csv");
    // Seven: however many the outbox sends at once (3), the rest wait.
    let rows: String = (11..=17)
        .map(|i| format!("alice+{i}@contoso.test\n"))
        .collect();
    std::fs::write(&csv, format!("email\n{rows}")).unwrap();
    let (ok, out, err) = daemon.cli(&["import", csv.to_str().unwrap(), "--partner", "northwind"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("7 of 7 rows invited, 0 failed"), "{out}");
    assert!(
        out.lines().any(
            |l| l.starts_with("The provider's sending limit (3 messages a minute")
                && l.contains("the last should go out at about ")
        ),
        "{out}"
    );
}
