//! The command line with the PostgreSQL store, with the real binary against
//! the test PostgreSQL of `tests/postgres.sh` (and the loopback mail stack
//! for a deployment to move):
//! - `liaison migrate` applies the schema (from → to), is a no-op the
//!   second time, and is an error with sled;
//! - `liaison check-config` connects and reports the schema version, and
//!   fails clearly for a wrong password, a server that does not answer and
//!   a schema newer than the binary, never showing the URL's password;
//! - `liaison export` from sled → `liaison restore` into PostgreSQL → a
//!   daemon runs on it → export → restore into sled moves a deployment with
//!   every record intact.
//!
//! These run on both backends whatever `LIAISON_TEST_BACKEND` says.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";

/// The binary on `config`: (success, stdout, stderr).
fn liaison(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_liaison"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("LIAISON_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run liaison");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A configuration on a fresh PostgreSQL database in a new folder, its
/// `[store]` edited by `edit_store`.
fn pg_config(edit_store: impl FnOnce(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("liaison.toml");
    let text = config_text_on(Backend::Postgres, tmp.path(), Transport::Plain);
    let url = url_in(&text);
    std::fs::write(&path, text.replace(&url, &edit_store(url.clone()))).unwrap();
    (tmp, path)
}

/// The `[store] url` written in a configuration text.
fn url_in(config: &str) -> String {
    let value: toml::Value = toml::from_str(config).unwrap();
    value["store"]["url"].as_str().unwrap().to_string()
}

/// The `store` line of `check-config --json` on `config` (which also
/// checks the mail servers; only the store's line is looked at), and
/// everything the command printed.
fn store_check(config: &Path) -> (serde_json::Value, String) {
    let (_, out, err) = liaison(config, &["check-config", "--json"]);
    let checks: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("check-config output {out:?}: {e}\n{err}"));
    let store = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "store")
        .unwrap_or_else(|| panic!("no store check: {checks}"))
        .clone();
    (store, format!("{out}{err}"))
}

#[test]
fn migrate_applies_the_schema_once_and_refuses_sled() {
    let (_tmp, config) = pg_config(|url| url);
    let (ok, out, err) = liaison(&config, &["migrate"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("migrated the schema from version 0 to"),
        "{out}"
    );
    assert!(!out.contains(pg::PASSWORD), "the password is shown: {out}");
    // The second time there is nothing to do.
    let (ok, out, err) = liaison(&config, &["migrate"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("nothing to do"), "{out}");
    // check-config sees the version, and the URL without its password.
    let (store, printed) = store_check(&config);
    assert_eq!(store["ok"], true, "{store}");
    assert!(
        store["note"]
            .as_str()
            .unwrap_or("")
            .starts_with("schema version "),
        "{store}"
    );
    assert!(
        store["target"].as_str().unwrap().starts_with("postgres "),
        "{store}"
    );
    assert!(
        !printed.contains(pg::PASSWORD),
        "the password is shown: {printed}"
    );

    // sled has no schema: a clear error, non-zero exit.
    let tmp = tempfile::tempdir().unwrap();
    let sled = tmp.path().join("liaison.toml");
    std::fs::write(
        &sled,
        config_text_on(Backend::Sled, tmp.path(), Transport::Plain),
    )
    .unwrap();
    let (ok, out, err) = liaison(&sled, &["migrate"]);
    assert!(!ok, "{out}");
    assert!(err.contains("nothing to migrate"), "{err}");
}

#[test]
fn check_config_reports_the_store_without_its_password() {
    // A database Liaison never ran on: fine, the daemon creates the schema.
    let (_tmp, config) = pg_config(|url| url);
    let (store, printed) = store_check(&config);
    assert_eq!(store["ok"], true, "{store}");
    assert!(
        store["note"]
            .as_str()
            .unwrap_or("")
            .contains("no Liaison schema yet"),
        "{store}"
    );
    assert!(!printed.contains(pg::PASSWORD), "{printed}");
    // check-config changed nothing: migrate still starts from 0.
    let (ok, out, _) = liaison(&config, &["migrate"]);
    assert!(ok && out.contains("from version 0"), "{out}");

    // A wrong password: the server's refusal, neither password shown.
    let wrong = "Wr0ng-pass-for-the-test";
    let (_tmp, config) = pg_config(|url| url.replace(pg::PASSWORD, wrong));
    let (store, printed) = store_check(&config);
    assert_eq!(store["ok"], false, "{store}");
    let error = store["error"].as_str().unwrap();
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(!printed.contains(wrong), "the password is shown: {printed}");
    assert!(!printed.contains(pg::PASSWORD), "{printed}");

    // Nothing answers at the address (a stopped server looks like this to
    // a client): a clear error in time, no password.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_tmp, config) =
        pg_config(|url| url.replace(&format!(":{}/", pg::port()), &format!(":{port}/")));
    let started = std::time::Instant::now();
    let (store, printed) = store_check(&config);
    assert_eq!(store["ok"], false, "{store}");
    let error = store["error"].as_str().unwrap().to_lowercase();
    assert!(
        error.contains("connect") || error.contains("refused"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!printed.contains(pg::PASSWORD), "{printed}");
    // The daemon says the same and exits, without the password.
    let (ok, out, err) = liaison(&config, &["stats"]);
    assert!(!ok, "{out}");
    assert!(
        !err.contains(pg::PASSWORD) && !out.contains(pg::PASSWORD),
        "{err}"
    );

    // A schema newer than this binary: check-config fails, and so do
    // migrate and the daemon, saying which versions.
    let (_tmp, config) = pg_config(|url| url);
    let (ok, out, err) = liaison(&config, &["migrate"]);
    assert!(ok, "{out}{err}");
    let url = store_url(&config);
    pg::psql(
        psql_url(&url),
        "INSERT INTO liaison_schema (version) VALUES (999)",
    )
    .unwrap();
    let (store, _) = store_check(&config);
    assert_eq!(store["ok"], false, "{store}");
    assert!(
        store["error"]
            .as_str()
            .unwrap()
            .contains("schema version 999"),
        "{store}"
    );
    let (ok, _, err) = liaison(&config, &["migrate"]);
    assert!(!ok && err.contains("999"), "{err}");
    let (ok, _, err) = liaison(&config, &["run"]);
    assert!(!ok && err.contains("999"), "{err}");
}

/// Every record of a JSON-lines backup: key → value.
fn records(path: &Path) -> BTreeMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r: liaison::store::ExportRecord = serde_json::from_str(line).unwrap();
        assert!(
            out.insert(r.key.clone(), r.value).is_none(),
            "{} twice",
            r.key
        );
    }
    out
}

/// What the operator sees of a store: the same on every backend.
fn views(config: &Path) -> Vec<String> {
    [
        &["status", "--json"][..],
        &["list", "--json"],
        &["stats"],
        &["history", ALICE, "--json"],
        &["history", BOB, "--json"],
        &["quarantine", "list", "--json"],
        &["tickets", "--all", "--json"],
        &["held", "list", "--json"],
    ]
    .iter()
    .map(|args| {
        let (ok, out, err) = liaison(config, args);
        assert!(ok, "{args:?}: {err}");
        out
    })
    .collect()
}

/// The key of a hex-encoded export key, for messages.
fn readable(hex_key: &str) -> String {
    let bytes = data_encoding::HEXLOWER.decode(hex_key.as_bytes()).unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `a` and `b` hold the same records; else the keys that differ.
fn assert_same_records(
    a: &BTreeMap<String, serde_json::Value>,
    b: &BTreeMap<String, serde_json::Value>,
    what: &str,
) {
    let differ: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| readable(k))
        .collect();
    assert!(differ.is_empty(), "{what}: records differ: {differ:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_sled_restore_into_postgres_and_back_moves_a_deployment() {
    let _serial = serial().await;
    require_mailstack();
    for u in [PARTNER1, COMMANDS, INVITES, ALICE, BOB] {
        clear_mailbox(u).await;
    }
    // A deployment on sled: an active relationship, a pending invitation,
    // a forwarded support request, a quarantined piped mail (kept whole),
    // transcripts in the sent log.
    let mut daemon = Daemon::start_on(Backend::Sled, Transport::Plain, |c| c);
    make_active(&daemon, ALICE).await;
    partner_commands(&format!("invite {BOB}"), "invite bob").await;
    wait_for(BOB, "invitation", |m| m.subject.contains("[ref:")).await;
    send_raw(
        ALICE,
        &[INVITES],
        &mail(
            ALICE,
            INVITES,
            "Licences missing",
            "",
            "We lost 3 licences.\n",
        ),
    )
    .await;
    wait_for(PARTNER1, "forwarded request", |m| {
        m.subject.starts_with("Support request from")
    })
    .await;
    let mut pipe = Command::new(env!("CARGO_BIN_EXE_liaison"))
        .arg("--config")
        .arg(&daemon.config)
        .args(["deliver", "--inbox", "commands"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        pipe.stdin
            .take()
            .unwrap()
            .write_all(b"\r\n\r\nno headers at all\r\n")
            .unwrap();
    }
    assert!(pipe.wait().unwrap().success());
    // Everything queued is sent before the move.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stats(&daemon)["outbox_pending"] != 0 {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(daemon.stop().success());
    let dir = daemon.dir.clone();
    let sled_config = daemon.config.clone();
    let sled_backup = dir.join("from-sled.jsonl");
    let (ok, _, err) = liaison(
        &sled_config,
        &["export", "-o", sled_backup.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let from_sled = records(&sled_backup);
    assert!(from_sled.len() > 20, "{} records", from_sled.len());

    // Into PostgreSQL: the same records, the same answers.
    let text = std::fs::read_to_string(&sled_config).unwrap();
    let pg_config = dir.join("postgres.toml");
    std::fs::write(
        &pg_config,
        replace_store(&text, &store_section_on(Backend::Postgres, &dir, "pg")),
    )
    .unwrap();
    let (ok, out, err) = liaison(&pg_config, &["restore", sled_backup.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!(
            "restored {} records into postgres",
            from_sled.len()
        )),
        "{out}"
    );
    assert!(!out.contains(pg::PASSWORD), "{out}");
    let pg_backup = dir.join("from-postgres.jsonl");
    let (ok, _, err) = liaison(&pg_config, &["export", "-o", pg_backup.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_same_records(&from_sled, &records(&pg_backup), "sled → postgres");
    assert_eq!(views(&sled_config), views(&pg_config));
    // A second restore into the same database is refused.
    let (ok, _, err) = liaison(&pg_config, &["restore", sled_backup.to_str().unwrap()]);
    assert!(!ok && err.contains("not empty"), "{err}");

    // A daemon on the moved store carries on: nothing sent again, new mail
    // decided on the moved state (Alice is active, Bob invited).
    let mut moved = Daemon::on_config(dir.clone(), pg_config.clone());
    moved.spawn();
    let listed = partner_commands("list", "list after the move").await;
    assert!(
        listed.text.contains(ALICE) && listed.text.contains(BOB),
        "{}",
        listed.text
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count_where(BOB, |m| m.subject.contains("[ref:")).await,
        1,
        "the moved outbox sent nothing again"
    );
    assert!(moved.stop().success());
    let after = dir.join("after-postgres.jsonl");
    let (ok, _, err) = liaison(&pg_config, &["export", "-o", after.to_str().unwrap()]);
    assert!(ok, "{err}");
    let after_pg = records(&after);
    assert!(
        after_pg.len() > from_sled.len(),
        "the daemon's work is in the store"
    );

    // And back into sled: again the same records and answers.
    let back_config = dir.join("back.toml");
    std::fs::write(
        &back_config,
        replace_store(&text, &store_section_on(Backend::Sled, &dir, "back")),
    )
    .unwrap();
    let (ok, out, err) = liaison(&back_config, &["restore", after.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let back = dir.join("back.jsonl");
    let (ok, _, err) = liaison(&back_config, &["export", "-o", back.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_same_records(&after_pg, &records(&back), "postgres → sled");
    assert_eq!(views(&pg_config), views(&back_config));
}
