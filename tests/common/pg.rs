//! The private PostgreSQL of `tests/postgres.sh` for the tests: bringing it
//! up once per test binary, a fresh database per test, SQL through the
//! `psql` client, and stopping/starting the server for the tests of a
//! restart mid-run.
//!
//! The instance listens on 127.0.0.1:55432 (plus `LIAISON_PG_PORT_OFFSET`),
//! its state folder is `LIAISON_PG_DIR` (default `/tmp/liaison-pg`): the
//! same two variables the script reads. Tests log in as [`ROLE`] with
//! [`PASSWORD`]; the password goes to `psql` in `PGPASSWORD`, never on its
//! command line.
//!
//! Each test takes its own database ([`fresh_database`]), so tests of one
//! binary run in parallel. Databases are named `lt_<prefix>_<pid>_<n>`
//! (the creating process's pid); [`ensure_up`] drops those whose process
//! is gone, so a run leaves its databases for inspection until the next
//! one starts. [`stop`], [`restart`] and [`stop_immediate`] affect every
//! test using the server: a test that calls them belongs in a binary of its
//! own (or holds a lock the binary's other tests take too).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The login role the tests use (CREATEDB, not a superuser).
pub const ROLE: &str = "liaison";
/// Its password (scram-sha-256 over TCP).
pub const PASSWORD: &str = "liaison-dev";
/// The only address the server listens on.
pub const HOST: &str = "127.0.0.1";
/// The port of the instance with offset 0.
pub const BASE_PORT: u16 = 55432;

/// `LIAISON_PG_PORT_OFFSET` (0 when unset): a private instance beside the
/// shared one listens on [`BASE_PORT`] plus it.
pub fn port_offset() -> u16 {
    std::env::var("LIAISON_PG_PORT_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The server's TCP port.
pub fn port() -> u16 {
    BASE_PORT + port_offset()
}

/// The state folder (`LIAISON_PG_DIR`, default `/tmp/liaison-pg`).
pub fn state_dir() -> PathBuf {
    let dir = std::env::var("LIAISON_PG_DIR").unwrap_or_else(|_| "/tmp/liaison-pg".into());
    // The script strips trailing slashes too; the same spelling for both.
    PathBuf::from(dir.trim_end_matches('/'))
}

/// The private CA that signed the server's certificate (trust it for
/// `sslmode=verify-full`).
pub fn ca_path() -> PathBuf {
    state_dir().join("tls/ca.pem")
}

/// The URL of database `database` as the test role, e.g. for a daemon's
/// `[store] url`.
pub fn url_of(database: &str) -> String {
    format!("postgres://{ROLE}:{PASSWORD}@{HOST}:{}/{database}", port())
}

/// The base URL: the `postgres` database, as `tests/postgres.sh env` prints
/// it in `LIAISON_PG_URL`.
pub fn base_url() -> String {
    url_of("postgres")
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/postgres.sh")
}

/// Runs `tests/postgres.sh ARGS…` and returns its standard output; panics
/// with its standard error when it fails.
pub fn run_script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tests/postgres.sh");
    assert!(
        out.status.success(),
        "tests/postgres.sh {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Brings the server up (`tests/postgres.sh up`: installs and initialises it
/// on first use, a no-op when it runs) once per test binary, then drops the
/// databases of test processes that are gone (in the background).
pub fn ensure_up() {
    static UP: OnceLock<()> = OnceLock::new();
    UP.get_or_init(|| {
        run_script(&["up"]);
        drop_stale_databases_in_background();
    });
}

/// Starts the server (after [`stop`]); its data is kept.
pub fn start() {
    run_script(&["up"]);
}

/// Stops the server (fast shutdown: open transactions roll back, clients
/// are disconnected). Its data is kept.
pub fn stop() {
    run_script(&["down"]);
}

/// Stops the server like a crash (no shutdown checkpoint): the next
/// [`start`] recovers from the write-ahead log.
pub fn stop_immediate() {
    run_script(&["down", "--immediate"]);
}

/// Stops and starts the server, keeping its data.
pub fn restart() {
    stop();
    start();
}

/// The running server's pid (the first line of `postmaster.pid`), if it
/// has one.
pub fn server_pid() -> Option<u32> {
    let text = std::fs::read_to_string(state_dir().join("data/postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// Creates a new, uniquely named, empty database owned by [`ROLE`] and
/// returns its URL ([`url_of`]). `prefix` (letters, digits, `_`; others
/// become `_`) says which test made it.
pub fn fresh_database(prefix: &str) -> String {
    ensure_up();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = database_name(
        prefix,
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
    );
    psql(&base_url(), &format!("CREATE DATABASE \"{name}\""))
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    url_of(&name)
}

/// `lt_<prefix>_<pid>_<n>`, within PostgreSQL's 63-byte limit.
pub fn database_name(prefix: &str, pid: u32, n: u32) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(36)
        .collect();
    format!("lt_{clean}_{pid}_{n}")
}

/// The pid in a name made by [`database_name`].
pub fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("lt_")?;
    let mut fields = rest.rsplitn(3, '_');
    let _n: u32 = fields.next()?.parse().ok()?;
    let pid = fields.next()?.parse().ok()?;
    fields.next()?;
    Some(pid)
}

/// The databases made by [`fresh_database`] in processes that no longer
/// run; with `own_pid_too`, also those with this process's pid (when
/// [`ensure_up`] asks, before this process made any, a former process
/// with the same pid made them).
pub fn stale_databases(own_pid_too: bool) -> Vec<String> {
    let listing = psql(
        &base_url(),
        "SELECT datname FROM pg_database WHERE datname LIKE 'lt\\_%'",
    )
    .unwrap_or_else(|e| panic!("list test databases: {e}"));
    let me = std::process::id();
    listing
        .lines()
        .map(str::trim)
        .filter(|name| {
            creator_pid(name).is_some_and(|pid| {
                (own_pid_too && pid == me)
                    || !std::path::Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .map(str::to_string)
        .collect()
}

/// `psql` arguments dropping `names`, one statement each (DROP DATABASE
/// cannot run in a transaction). `WITH (FORCE)` ends the connections a
/// leftover daemon of a finished run may still hold.
fn drop_command(names: &[String]) -> Command {
    let (conninfo, _) = split_password(&base_url());
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-w", "-d", &conninfo])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
    for name in names {
        cmd.arg("-c")
            .arg(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    }
    cmd
}

/// Drops the databases of test processes that are gone
/// ([`stale_databases`]) and waits; returns their names.
pub fn drop_stale_databases() -> Vec<String> {
    let stale = stale_databases(false);
    if !stale.is_empty() {
        let out = drop_command(&stale).output().expect("run psql");
        assert!(
            out.status.success(),
            "drop stale test databases: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stale
}

/// Drops the [`stale_databases`] in a psql of its own, not waited for:
/// each DROP DATABASE forces a checkpoint (a second or more here), which a
/// test binary should not wait for at its start.
fn drop_stale_databases_in_background() {
    let stale = stale_databases(true);
    if !stale.is_empty() {
        let _ = drop_command(&stale)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

/// Runs `sql` with `psql` on the database `url` names (a URL such as
/// [`url_of`] returns, or a libpq `key=value` string; a password in a URL
/// is moved to `PGPASSWORD`, else [`PASSWORD`] is used) and returns its
/// unaligned, tuples-only output, or `psql`'s error.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let (conninfo, password) = split_password(url);
    let out = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-w"])
        .arg("-d")
        .arg(&conninfo)
        .arg("-c")
        .arg(sql)
        .env("PGPASSWORD", password.as_deref().unwrap_or(PASSWORD))
        .env("PGCONNECT_TIMEOUT", "10")
        // Nothing from the caller's environment picks another server.
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .env_remove("PGSERVICE")
        .env_remove("PGSSLMODE")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "psql on {conninfo}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `postgres://user:secret@host…` → (`postgres://user@host…`, `secret`),
/// so the password never shows on a command line or in a message.
pub fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let Some((user, password)) = rest[..at].split_once(':') else {
        return (url.to_string(), None);
    };
    (
        format!("{scheme}://{user}@{}", &rest[at + 1..]),
        Some(percent_decode(password)),
    )
}

/// Decodes `%XX` escapes (a URL's password may contain them).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) if bytes[i] == b'%' => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
