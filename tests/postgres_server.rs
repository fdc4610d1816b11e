//! The private PostgreSQL of `tests/postgres.sh` and the helpers of
//! `tests/common/pg.rs`: `up` is idempotent, a fresh database can be made
//! and used, TLS is offered (and verifies against the private CA) while
//! plaintext stays allowed, only loopback listens, the settings the store
//! tests rely on are in place, and a restart or a crash keeps the data.
//!
//! The restart test stops the server, so it holds [`SERVER`] exclusively;
//! every other test here holds it shared.

mod common;

use common::pg;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

static SERVER: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    let guard = SERVER.read().unwrap_or_else(|e| e.into_inner());
    pg::ensure_up();
    guard
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    let guard = SERVER.write().unwrap_or_else(|e| e.into_inner());
    pg::ensure_up();
    guard
}

/// One value from `psql` (trimmed), panicking on an error.
fn one(url: &str, sql: &str) -> String {
    pg::psql(url, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .trim()
        .to_string()
}

/// A libpq keyword connection string to `database` on the test server.
fn conninfo(host: &str, database: &str, ssl: &str) -> String {
    format!(
        "host={host} port={} user={} dbname={database} {ssl}",
        pg::port(),
        pg::ROLE
    )
}

const TLS_OF_THIS_SESSION: &str =
    "SELECT ssl::text || ' ' || coalesce(version, '-') FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[test]
fn up_is_idempotent_and_leaves_the_running_server_alone() {
    let _server = shared();
    let before = pg::server_pid().expect("the server runs after ensure_up");
    let started = Instant::now();
    let out = pg::run_script(&["up"]);
    println!(
        "tests/postgres.sh up on a running instance: {:?}",
        started.elapsed()
    );
    assert!(out.contains(&format!("127.0.0.1:{}", pg::port())), "{out}");
    assert_eq!(
        pg::server_pid(),
        Some(before),
        "a second up starts no new server"
    );
    let status = pg::run_script(&["status"]);
    assert!(
        status.contains(&format!("running (pid {before})")),
        "{status}"
    );
}

#[test]
fn a_fresh_database_is_created_and_used() {
    let _server = shared();
    let first = pg::fresh_database("pg server/first");
    let second = pg::fresh_database("pg server/first");
    assert_ne!(first, second, "each call makes a database of its own");
    assert!(first.starts_with(&format!(
        "postgres://liaison:liaison-dev@127.0.0.1:{}/lt_pg_server_first_{}_",
        pg::port(),
        std::process::id()
    )));
    pg::psql(
        &first,
        "CREATE TABLE probe (id int PRIMARY KEY, note text); \
         INSERT INTO probe VALUES (1, 'één'), (2, 'two')",
    )
    .expect("create and fill a table");
    assert_eq!(
        one(
            &first,
            "SELECT string_agg(note, ',' ORDER BY id) FROM probe"
        ),
        "één,two"
    );
    assert_eq!(one(&first, "SHOW server_encoding"), "UTF8");
    // The other database is empty, and the role owns what it made but is
    // no superuser.
    assert_eq!(
        one(
            &second,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'probe'"
        ),
        "0"
    );
    assert_eq!(
        one(&first, "SELECT current_user || ' ' || rolsuper::text || ' ' || rolcreatedb::text FROM pg_roles WHERE rolname = current_user"),
        "liaison false true"
    );
    let db = first.rsplit('/').next().unwrap();
    assert_eq!(
        one(
            &pg::base_url(),
            &format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}'")
        ),
        "liaison"
    );
}

#[test]
fn tls_is_offered_and_verified_and_plaintext_stays_allowed() {
    let _server = shared();
    let ca = pg::ca_path();
    assert!(ca.is_file(), "{} exists", ca.display());
    // verify-full: the chain to the private CA and the host name, by IP
    // address and by name.
    for host in ["127.0.0.1", "localhost"] {
        let info = conninfo(
            host,
            "postgres",
            &format!("sslmode=verify-full sslrootcert={}", ca.display()),
        );
        let tls = one(&info, TLS_OF_THIS_SESSION);
        assert!(
            tls == "true TLSv1.3" || tls == "true TLSv1.2",
            "{host}: {tls}"
        );
    }
    // Not signed by a CA the client trusts: refused under verify-ca.
    let other_ca = std::env::temp_dir().join(format!("pg-other-ca-{}.pem", std::process::id()));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(other_ca.with_extension("key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let refused = pg::psql(
        &conninfo(
            "127.0.0.1",
            "postgres",
            &format!("sslmode=verify-ca sslrootcert={}", other_ca.display()),
        ),
        "SELECT 1",
    );
    let _ = std::fs::remove_file(&other_ca);
    let _ = std::fs::remove_file(other_ca.with_extension("key"));
    let err = refused.expect_err("a certificate from an untrusted CA is refused");
    assert!(err.contains("certificate verify failed"), "{err}");
    // Plaintext and the default (prefer: TLS when offered).
    assert_eq!(
        one(
            &conninfo("127.0.0.1", "postgres", "sslmode=disable"),
            TLS_OF_THIS_SESSION
        ),
        "false -"
    );
    assert!(one(&pg::base_url(), TLS_OF_THIS_SESSION).starts_with("true TLSv1."));
}

#[test]
fn only_loopback_listens() {
    let _server = shared();
    assert_eq!(one(&pg::base_url(), "SHOW listen_addresses"), "127.0.0.1");
    // Every listening socket on the port, from the kernel's tables: IPv4
    // 127.0.0.1 only, nothing on IPv6.
    let port_hex = format!("{:04X}", pg::port());
    let listeners = |table: &str| -> Vec<String> {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (addr, state) = (fields.get(1)?, fields.get(3)?);
                (*state == "0A" && addr.ends_with(&format!(":{port_hex}")))
                    .then(|| addr.to_string())
            })
            .collect()
    };
    let v4 = listeners("/proc/net/tcp");
    assert_eq!(
        v4,
        vec![format!("0100007F:{port_hex}")],
        "IPv4 listeners on the port"
    );
    assert_eq!(
        listeners("/proc/net/tcp6"),
        Vec::<String>::new(),
        "IPv6 listeners on the port"
    );
}

#[test]
fn passwords_are_checked_and_the_superuser_has_no_tcp_login() {
    let _server = shared();
    let wrong = pg::psql(
        &format!(
            "postgres://liaison:not-the-password@127.0.0.1:{}/postgres",
            pg::port()
        ),
        "SELECT 1",
    )
    .expect_err("a wrong password is refused");
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    assert!(
        !wrong.contains("not-the-password"),
        "the password stays out of the message: {wrong}"
    );
    let superuser = pg::psql(
        &format!("postgres://postgres:@127.0.0.1:{}/postgres", pg::port()),
        "SELECT 1",
    )
    .expect_err("the bootstrap superuser has no password, so no TCP login");
    assert!(superuser.contains("password"), "{superuser}");
    assert_eq!(
        one(&pg::base_url(), "SHOW password_encryption"),
        "scram-sha-256"
    );
}

#[test]
fn settings_fit_the_store_tests() {
    let _server = shared();
    let max: u32 = one(&pg::base_url(), "SHOW max_connections")
        .parse()
        .unwrap();
    assert!(max >= 200, "max_connections = {max}");
    assert_eq!(one(&pg::base_url(), "SHOW fsync"), "on");
    assert_eq!(one(&pg::base_url(), "SHOW synchronous_commit"), "on");
    assert_eq!(one(&pg::base_url(), "SHOW ssl"), "on");
    let log = pg::state_dir().join("log/postgres.log");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(
        text.contains("database system is ready to accept connections"),
        "the server logs to {}",
        log.display()
    );
}

#[test]
fn env_prints_the_values_the_helpers_use() {
    let _server = shared();
    let out = pg::run_script(&["env"]);
    let value = |name: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{name} in {out}"))
            .to_string()
    };
    assert_eq!(value("LIAISON_PG_URL"), pg::base_url());
    assert_eq!(value("LIAISON_PG_HOST"), pg::HOST);
    assert_eq!(value("LIAISON_PG_PORT"), pg::port().to_string());
    assert_eq!(value("LIAISON_PG_CA"), pg::ca_path().display().to_string());
    // The URL the script prints works as it is.
    assert_eq!(
        one(&value("LIAISON_PG_URL"), "SELECT current_database()"),
        "postgres"
    );
}

#[test]
fn stale_test_databases_are_dropped_and_live_ones_kept() {
    let _server = shared();
    let live = pg::fresh_database("stale check live");
    // A pid no process has: the creator of this one is gone.
    let dead_pid = (400_000..)
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let stale = pg::database_name("stale check", dead_pid, 0);
    pg::psql(&pg::base_url(), &format!("CREATE DATABASE \"{stale}\"")).expect("create");
    let dropped = pg::drop_stale_databases();
    assert!(dropped.contains(&stale), "{stale} dropped: {dropped:?}");
    let live_name = live.rsplit('/').next().unwrap().to_string();
    assert!(!dropped.contains(&live_name), "{live_name} kept");
    let left = one(
        &pg::base_url(),
        &format!("SELECT count(*) FROM pg_database WHERE datname IN ('{stale}', '{live_name}')"),
    );
    assert_eq!(left, "1");
}

#[test]
fn restart_and_crash_keep_committed_data() {
    let _server = exclusive();
    let url = pg::fresh_database("restart");
    pg::psql(
        &url,
        "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)",
    )
    .expect("insert");
    let first = pg::server_pid().expect("running");

    let started = Instant::now();
    pg::stop();
    assert_eq!(pg::server_pid(), None, "stopped");
    assert!(
        pg::psql(&url, "SELECT 1").is_err(),
        "no server while stopped"
    );
    pg::start();
    println!("stop + start: {:?}", started.elapsed());
    let second = pg::server_pid().expect("running again");
    assert_ne!(first, second, "a new server process");
    pg::psql(&url, "INSERT INTO kept VALUES (2)").expect("insert after the restart");

    // A crash (no shutdown checkpoint): the committed rows come back from
    // the write-ahead log.
    let started = Instant::now();
    pg::stop_immediate();
    pg::start();
    println!("crash + recovery: {:?}", started.elapsed());
    assert_eq!(
        one(&url, "SELECT string_agg(n::text, ',' ORDER BY n) FROM kept"),
        "1,2"
    );

    pg::restart();
    assert_eq!(one(&url, "SELECT count(*) FROM kept"), "2");
}

#[test]
fn helper_names_and_urls() {
    let name = pg::database_name("Store trait/roundtrip", 4242, 7);
    assert_eq!(name, "lt_store_trait_roundtrip_4242_7");
    assert_eq!(pg::creator_pid(&name), Some(4242));
    assert_eq!(pg::creator_pid("lt_a_b"), None);
    assert_eq!(pg::creator_pid("postgres"), None);
    assert!(pg::database_name(&"x".repeat(200), u32::MAX, u32::MAX).len() <= 63);
    assert_eq!(
        pg::split_password("postgres://liaison:li%40s@127.0.0.1:5/db?sslmode=require"),
        (
            "postgres://liaison@127.0.0.1:5/db?sslmode=require".to_string(),
            Some("li@s".to_string())
        )
    );
    assert_eq!(
        pg::split_password("host=127.0.0.1 dbname=x"),
        ("host=127.0.0.1 dbname=x".to_string(), None)
    );
}
