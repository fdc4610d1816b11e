//! The operator commands end to end against the loopback mail stack:
//! `import` of 500 rows, `list`, `history`, `tickets`, `stats`, and a backup
//! through `export` and `restore`.

mod common;

use common::*;
use std::time::{Duration, Instant};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const ALICE: &str = "alice@contoso.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_500_rows_then_list_history_export_and_restore() {
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, ALICE] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start(Transport::Plain);

    // 500 customers (plus-addresses of Alice's mailbox, so Postfix accepts
    // them all) and one bad row.
    let mut csv = String::from("email,name,locale\n");
    for i in 0..500 {
        let locale = if i % 2 == 0 { "en" } else { "ko" };
        csv.push_str(&format!("alice+{i}@contoso.test,Customer {i},{locale}\n"));
    }
    csv.push_str("not-an-address,Broken,en\n");
    let file = daemon.dir.join("customers.csv");
    std::fs::write(&file, csv).unwrap();
    let started = Instant::now();
    let (ok, out, err) = daemon.cli(&["import", file.to_str().unwrap(), "--partner", "northwind"]);
    println!("import took {:?}", started.elapsed());
    assert!(!ok, "one row failed, so the exit status says so");
    assert!(
        out.contains("500 of 501 rows invited, 1 failed"),
        "{out}\n{err}"
    );
    assert!(out.contains("FAILED  invite not-an-address"), "{out}");
    assert!(
        err.contains("importing: 501/501 rows"),
        "progress on stderr: {err}"
    );
    // Running the same file again changes nothing (batches are keyed).
    let (_, out2, _) = daemon.cli(&["import", file.to_str().unwrap(), "--partner", "northwind"]);
    assert!(out2.contains("already run"), "{out2}");

    // Every invitation arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = fetch_all(ALICE).await.len();
        if n >= 500 {
            assert_eq!(n, 500, "each invitation once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of 500 invitations arrived\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "500 invitations delivered {:?} after the import started",
        started.elapsed()
    );

    let (ok, out, _) = daemon.cli(&["list", "invited", "--partner", "northwind", "--json"]);
    assert!(ok);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 500);
    let (ok, out, _) = daemon.cli(&["list", "active"]);
    assert!(ok && out.contains("no relationships"), "{out}");
    // `status` without a customer: the counters, not a scan.
    let (ok, out, _) = daemon.cli(&["status", "--json"]);
    assert!(ok, "{out}");
    let counts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        counts,
        serde_json::json!([{"partner": "northwind", "state": "invited", "count": 500}])
    );
    let (ok, out, _) = daemon.cli(&["status"]);
    assert!(
        ok && out.contains("invited") && out.contains("500"),
        "{out}"
    );
    let (ok, out, _) = daemon.cli(&["history", "alice+7@contoso.test"]);
    assert!(
        ok && out.contains("(new) -> invited") && out.contains("by partner1@liaison.test"),
        "{out}"
    );
    let (ok, out, _) = daemon.cli(&["tickets", "--json"]);
    assert!(ok && out.trim() == "[]", "{out}");
    let (ok, out, _) = daemon.cli(&["stats"]);
    assert!(ok && out.contains("\"relationships\":500"), "{out}");

    // A backup while the daemon runs, restored into a new store.
    let backup = daemon.dir.join("backup.jsonl");
    let (ok, _, err) = daemon.cli(&["export", "--output", backup.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(daemon.stop().success());
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    let restored_cfg = daemon.dir.join("restored.toml");
    std::fs::write(
        &restored_cfg,
        with_new_store(&config, &daemon.dir, "restored"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_liaison"))
            .arg("--config")
            .arg(&restored_cfg)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["restore", backup.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("restored"), "{out}");
    let (ok, out, _) = run(&["list", "invited", "--json"]);
    assert!(ok);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rows.as_array().unwrap().len(),
        500,
        "the restored store holds everything"
    );
    let (ok, out, _) = run(&["status", "--json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([{"partner": "northwind", "state": "invited", "count": 500}]),
        "the restored store's counters are right"
    );
    // Restoring twice is refused.
    let (ok, _, err) = run(&["restore", backup.to_str().unwrap()]);
    assert!(!ok && err.contains("not empty"), "{err}");
}

/// Empties the mailboxes the daemon reads and the customer's, so mail left
/// by another test is neither processed nor counted.
async fn clear_inboxes() {
    for u in [PARTNER1, COMMANDS, "invites@liaison.test", ALICE] {
        clear_mailbox(u).await;
    }
}

/// The invited relationships of `northwind`, by customer.
fn invited(daemon: &Daemon) -> Vec<String> {
    let (ok, out, err) = daemon.cli(&["list", "invited", "--partner", "northwind", "--json"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut customers: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["customer"].as_str().unwrap().to_string())
        .collect();
    customers.sort();
    customers
}

/// Waits until Alice's mailbox holds `n` mails, and checks it gets no more.
async fn wait_for_mails(daemon: &Daemon, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while fetch_all(ALICE).await.len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} invitations arrived\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fetch_all(ALICE).await.len(), n, "each invitation once");
}

/// A row whose last cell looks like a quote header (`wrote:`) used to end
/// the command script it was pasted into: the rest of its batch vanished
/// and the import said "1 of 4 rows invited, 0 failed". Every row is now
/// reported, and the other rows are invited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reports_every_row_around_a_wrote_row() {
    let _serial = serial().await;
    require_mailstack();
    clear_inboxes().await;
    let daemon = Daemon::start(Transport::Plain);
    let file = daemon.dir.join("wrote.csv");
    std::fs::write(
        &file,
        "email,name,locale\nalice+1@contoso.test,One,en\nalice+2@contoso.test,,wrote:\n\
         alice+3@contoso.test,Three,en\nalice+4@contoso.test,Four,ko\n",
    )
    .unwrap();
    let (ok, out, err) = daemon.cli(&["import", file.to_str().unwrap(), "--partner", "northwind"]);
    assert!(
        !ok,
        "a row failed, so the exit status says so\n{out}\n{err}"
    );
    assert!(
        out.contains("3 of 4 rows invited, 1 failed"),
        "{out}\n{err}"
    );
    assert!(
        out.contains("FAILED  invite alice+2@contoso.test (line 3): ") && out.contains("`wrote:`"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{out}"
    );
    assert_eq!(
        invited(&daemon),
        [
            "alice+1@contoso.test",
            "alice+3@contoso.test",
            "alice+4@contoso.test"
        ]
    );
    wait_for_mails(&daemon, 3).await;
}

/// RFC 4180 quoting, and malformed rows reported with their line while the
/// others go through; imported with the daemon stopped (straight into the
/// store), sent when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_quoting_and_malformed_rows_offline() {
    let _serial = serial().await;
    require_mailstack();
    clear_inboxes().await;
    let mut daemon = Daemon::start(Transport::Plain);
    assert!(daemon.stop().success());
    let file = daemon.dir.join("quoted.csv");
    std::fs::write(
        &file,
        "email,name,locale\r\n\
         alice+1@contoso.test,\"Contoso, Ltd\",en\r\n\
         alice+2@contoso.test,\"Two\r\nlines\",ko\r\n\
         alice+3@contoso.test,Fabrikam, Inc,en\r\n\
         alice+4@contoso.test,\"Unclosed,en\r\n\
         alice+5@contoso.test,\"Five \"\"5\"\"\",ko\r\n",
    )
    .unwrap();
    let (ok, out, err) = daemon.cli(&[
        "import",
        file.to_str().unwrap(),
        "--partner",
        "northwind",
        "--json",
    ]);
    assert!(!ok, "rows failed, so the exit status says so\n{out}\n{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    let summary: Vec<(u64, bool)> = rows
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["ok"] == true))
        .collect();
    assert_eq!(
        summary,
        [
            (2, true),
            (3, false),
            (4, false),
            (5, false),
            (6, false),
            (7, true)
        ],
        "{out}"
    );
    assert_eq!(
        rows[0]["command"], "invite alice+1@contoso.test name \"Contoso, Ltd\" locale en",
        "{out}"
    );
    assert_eq!(
        rows[5]["command"],
        "invite alice+5@contoso.test name \"Five \"5\"\" locale ko"
    );
    let reason = |i: usize| rows[i]["result"].as_str().unwrap();
    assert!(reason(1).contains("from line 3 to line 4"), "{out}");
    assert!(reason(3).contains("4 cells"), "{out}");
    assert!(reason(4).contains("from line 6 to line 7"), "{out}");
    assert_eq!(rows[3]["email"], "alice+3@contoso.test");

    daemon.spawn();
    assert_eq!(
        invited(&daemon),
        ["alice+1@contoso.test", "alice+5@contoso.test"]
    );
    wait_for_mails(&daemon, 2).await;
}

/// With `trusted_authserv_id` set, the old import's synthesised command mail
/// carried no Authentication-Results and was quarantined as a forged
/// partner: "0 of 2 rows invited, 0 failed", exit 0, nothing sent. The
/// operator's import is not a mail and gets no mail checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_works_with_a_trusted_authserv_id() {
    let _serial = serial().await;
    require_mailstack();
    clear_inboxes().await;
    let daemon = Daemon::start_custom(Transport::Plain, |c| trusting(&c, "mx.liaison.test", ""));
    let file = daemon.dir.join("two.csv");
    std::fs::write(&file, "alice+1@contoso.test\nalice+2@contoso.test,Two,ko\n").unwrap();
    let (ok, out, err) = daemon.cli(&["import", file.to_str().unwrap(), "--partner", "northwind"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("2 of 2 rows invited, 0 failed"),
        "{out}\n{err}"
    );
    assert_eq!(
        invited(&daemon),
        ["alice+1@contoso.test", "alice+2@contoso.test"]
    );
    wait_for_mails(&daemon, 2).await;
}

/// Issue 11, point 18: a request line without a newline is bounded. 20 MB
/// sent to the admin socket get an error (or a closed connection), and the
/// daemon goes on answering `status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_socket_refuses_an_endless_line_and_goes_on() {
    use std::io::{Read, Write};
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, ALICE] {
        clear_mailbox(u).await;
    }
    let mut daemon = Daemon::start(Transport::Plain);
    let sock = daemon.dir.join("store.sock");
    let stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..20 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut answer = String::new();
    let mut reader = stream;
    let read = reader.read_to_string(&mut answer);
    let sent = sender.join().unwrap();
    assert!(
        read.is_ok() || answer.contains("longer than"),
        "the connection neither answered nor closed within 20 s: {read:?}"
    );
    if !answer.is_empty() {
        assert!(
            answer.contains("longer than 1048576 bytes"),
            "unexpected answer: {answer}"
        );
    }
    assert!(
        sent < 20 << 20,
        "the daemon read all 20 MB instead of closing the connection"
    );
    let (ok, out, err) = daemon.cli(&["status", ALICE, "--json"]);
    assert!(ok, "status after the long line failed: {out}\n{err}");
    let status = std::fs::read_to_string(format!(
        "/proc/{}/status",
        daemon.child.as_ref().unwrap().id()
    ))
    .unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(rss_kb < 100_000, "daemon peak RSS {rss_kb} kB");
    assert!(daemon.stop().success());
}

/// The admin socket answers only its owner (and root): even with its file
/// mode loosened (as during the moment between bind and chmod), another
/// user's connection is closed without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_socket_answers_only_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = serial().await;
    require_mailstack();
    let mut daemon = Daemon::start(Transport::Plain);
    let sock = daemon.dir.join("store.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is private");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Let `nobody` reach the socket's folder too.
    for dir in [daemon.dir.as_path(), daemon.dir.parent().unwrap()] {
        let m = std::fs::metadata(dir).unwrap().permissions().mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(m | 0o711)).unwrap();
    }
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(10)\ns.connect({:?})\n\
         try:\n    s.sendall(b'{{\"op\":\"stats\"}}\\n')\n    print(repr(s.recv(65536)))\n\
         except (ConnectionResetError, BrokenPipeError):\n    print(\"b''\")\n",
        sock.to_str().unwrap()
    );
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "python3", "-c", &script])
        .output()
        .expect("runuser");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "b''", "another user got an answer: {stdout}");
    // The owner still gets one.
    let (ok, stats, err) = daemon.cli(&["stats"]);
    assert!(ok && stats.contains("processed"), "{stats}{err}");
    assert!(daemon
        .log()
        .contains("admin connection from another user refused"));
    assert!(daemon.stop().success());
}
