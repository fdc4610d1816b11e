//! Several `liaison run` processes on one PostgreSQL database and the same
//! mailboxes: starting them, finding which one owns a lease (the lease
//! table names the owner's pid), killing, pausing and resuming them.
//!
//! Included by the failover tests with `#[path]` beside `mod common;`.
//! They run on PostgreSQL whatever `LIAISON_TEST_BACKEND` says.

use crate::common::{pg, Backend, Daemon, Transport};
use std::time::{Duration, Instant};

/// The lease length the failover tests run with: short, so takeovers take
/// seconds.
pub const LEASE_SECS: u64 = 2;

/// A daemon config (from [`crate::common::config_text`]) moved onto the
/// PostgreSQL database `url`, with its own admin socket (in its folder, where
/// [`Daemon::spawn`] waits for it), `/healthz` on `http_port`, caps high
/// enough for a backlog from a few addresses, and the short lease.
pub fn on_postgres(config: &str, dir: &std::path::Path, url: &str, http_port: u16) -> String {
    let store = format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nlease_secs = {LEASE_SECS}\n\n\
         [admin]\nsocket = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n",
        dir.join("store.sock").display()
    );
    crate::common::replace_store(config, &store).replace(
        "invitation_ttl_days = 90\n",
        "invitation_ttl_days = 90\nmax_replies_per_hour = 100000\nmax_support_requests_per_hour = 100000\n",
    )
}

/// The folder of a test config's files: where its admin socket is (sled's
/// `path` or postgres's `[admin] socket`, both `<dir>/store…`).
fn config_dir(config: &str) -> std::path::PathBuf {
    let line = config
        .lines()
        .find(|l| l.starts_with("path = \"") || l.starts_with("socket = \""))
        .expect("the test config names its store folder or socket");
    let value = line.split('"').nth(1).expect("a quoted value");
    std::path::Path::new(value)
        .parent()
        .expect("in the test's folder")
        .to_path_buf()
}

/// One instance: the real binary on `url`.
pub fn start_instance(url: &str, http_port: u16) -> Daemon {
    let url = url.to_string();
    // From the sled text, which on_postgres rewrites, whatever
    // LIAISON_TEST_BACKEND says.
    Daemon::start_on(Backend::Sled, Transport::Plain, move |c| {
        let dir = config_dir(&c);
        on_postgres(&c, &dir, &url, http_port)
    })
}

/// The lease `name`'s owner's pid and whether it is unexpired, from the
/// lease table (the owner is `host/pid/start`).
pub fn lease_owner(url: &str, name: &str) -> Option<(u32, bool)> {
    let out = pg::psql(
        url,
        &format!(
            "SELECT owner || ' ' || (expires_at > clock_timestamp())::text \
             FROM liaison_lease WHERE name = '{name}'"
        ),
    )
    .ok()?;
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (owner, live) = line.split_once(' ')?;
    let pid = owner.split('/').nth(1)?.parse().ok()?;
    Some((pid, live.starts_with('t')))
}

/// The pid of a running daemon.
pub fn pid(d: &Daemon) -> u32 {
    d.child.as_ref().expect("running").id()
}

/// SIGKILL, as a crash or the OOM killer would.
pub fn kill9(d: &mut Daemon) {
    let mut child = d.child.take().expect("running");
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
}

/// Sends `signal` (`STOP`, `CONT`) to the daemon.
pub fn signal(d: &Daemon, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid(d).to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal}");
}

/// Waits until `name` is held, unexpired, by a live process other than
/// `not`; returns its pid and how long that took.
pub async fn wait_taken_over(
    url: &str,
    name: &str,
    not: Option<u32>,
    within: Duration,
) -> (u32, Duration) {
    let start = Instant::now();
    loop {
        if let Some((owner, true)) = lease_owner(url, name) {
            if Some(owner) != not && std::path::Path::new(&format!("/proc/{owner}")).exists() {
                return (owner, start.elapsed());
            }
        }
        assert!(
            start.elapsed() < within,
            "nobody took {name} over within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /healthz` on `port`, the JSON body.
pub async fn healthz(port: u16) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to /healthz");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("/healthz {text:?}: {e}"))
}
