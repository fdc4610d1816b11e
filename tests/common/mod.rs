//! Shared helpers for the end-to-end tests: talking to the loopback
//! Postfix + Dovecot started by `tests/mailstack.sh up`, and running the
//! real `liaison` binary against them.
//!
//! Tests that use the mail stack share its mailboxes, so they take
//! [`serial`] first and empty the mailboxes they use.

#![allow(dead_code)]

pub mod pg;
pub mod token_emulator;

use futures::StreamExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Password of every account on the loopback mail stack.
pub const PASSWORD: &str = "liaison-dev";
/// Loopback SMTP (Postfix).
/// Ports of the loopback mail stack. A private instance of
/// `tests/mailstack.sh` (started with `LIAISON_MAILSTACK_PORT_OFFSET=N` and
/// its own `LIAISON_MAILSTACK_DIR`) listens on each port plus N, and its
/// tests lock their own file; the shared instance has offset 0.
pub fn port_offset() -> u16 {
    std::env::var("LIAISON_MAILSTACK_PORT_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
pub static SMTP_PORT: std::sync::LazyLock<u16> = std::sync::LazyLock::new(|| 2525 + port_offset());
/// Loopback IMAP (Dovecot).
pub static IMAP_PORT: std::sync::LazyLock<u16> = std::sync::LazyLock::new(|| 1143 + port_offset());
pub static IMAPS_PORT: std::sync::LazyLock<u16> = std::sync::LazyLock::new(|| 1993 + port_offset());
pub static SMTPS_PORT: std::sync::LazyLock<u16> = std::sync::LazyLock::new(|| 2465 + port_offset());
/// Loopback submission (Postfix, SMTP AUTH through Dovecot: passwords or
/// OAuth2 tokens).
pub static SUBMISSION_PORT: std::sync::LazyLock<u16> =
    std::sync::LazyLock::new(|| 2587 + port_offset());

/// The mail stack's state folder.
pub fn stack_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("LIAISON_MAILSTACK_DIR").unwrap_or_else(|_| "/tmp/liaison-ms".into()),
    )
}

/// The lock file of this mail stack instance (see [`port_offset`]).
pub fn mailstack_lock_path() -> std::path::PathBuf {
    match port_offset() {
        0 => std::env::temp_dir().join("liaison-mailstack.lock"),
        n => std::env::temp_dir().join(format!("liaison-mailstack-{n}.lock")),
    }
}

/// Held while a test uses the shared mailboxes.
pub struct Serial {
    _in_process: tokio::sync::MutexGuard<'static, ()>,
    _across_processes: std::fs::File,
}

/// One test at a time may use the shared mailboxes: an async mutex within
/// this test binary (the guard is held across awaits), and an exclusive
/// file lock across processes, since cargo may run several test binaries
/// (and a developer a benchmark) against the same mail stack.
pub async fn serial() -> Serial {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = LOCK.lock().await;
    let file = tokio::task::spawn_blocking(|| {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(mailstack_lock_path())
            .expect("open the mail stack lock file");
        f.lock().expect("lock the mail stack lock file");
        f
    })
    .await
    .expect("lock task");
    Serial {
        _in_process: guard,
        _across_processes: file,
    }
}

/// Panics with instructions when the mail stack is not running.
pub fn require_mailstack() {
    for port in [*SMTP_PORT, *IMAP_PORT] {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            panic!(
                "nothing listens on 127.0.0.1:{port}: start the loopback mail stack with \
                 `bash tests/mailstack.sh up` (or run the whole suite with `bash .ci/run`)"
            );
        }
    }
}

/// An IMAP session on the loopback Dovecot.
pub type Session = async_imap::Session<tokio::net::TcpStream>;

/// Logs `user` in to the loopback Dovecot (plain IMAP).
pub async fn imap(user: &str) -> Session {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", *IMAP_PORT))
        .await
        .expect("connect to IMAP");
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.expect("greeting");
    client
        .login(user, PASSWORD)
        .await
        .map_err(|(e, _)| e)
        .unwrap_or_else(|e| panic!("IMAP login {user}: {e}"))
}

/// Deletes every message in `user`'s INBOX.
pub async fn clear_mailbox(user: &str) {
    let mut s = imap(user).await;
    let mbox = s.select("INBOX").await.expect("select");
    if mbox.exists > 0 {
        {
            let stream = s
                .store("1:*", "+FLAGS.SILENT (\\Deleted)")
                .await
                .expect("store");
            let _: Vec<_> = stream.collect().await;
        }
        {
            let stream = s.expunge().await.expect("expunge");
            let _: Vec<_> = stream.collect().await;
        }
    }
    let _ = s.logout().await;
}

/// Every message in `user`'s INBOX, raw, oldest first.
pub async fn fetch_all(user: &str) -> Vec<Vec<u8>> {
    let mut s = imap(user).await;
    let mbox = s.select("INBOX").await.expect("select");
    let mut out = Vec::new();
    if mbox.exists > 0 {
        let mut stream = s.fetch("1:*", "BODY.PEEK[]").await.expect("fetch");
        while let Some(f) = stream.next().await {
            let f = f.expect("fetch item");
            if let Some(b) = f.body() {
                out.push(b.to_vec());
            }
        }
    }
    let _ = s.logout().await;
    out
}

/// A received mail, parsed enough for assertions.
#[derive(Debug, Clone)]
pub struct Received {
    pub raw: String,
    pub subject: String,
    pub from: String,
    pub reply_to: Option<String>,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub text: String,
    pub html: Option<String>,
}

impl Received {
    pub fn parse(raw: &[u8]) -> Received {
        let m = mail_parser::MessageParser::default()
            .parse(raw)
            .expect("parseable mail");
        let html = m
            .html_bodies()
            .find(|p| p.is_text_html())
            .and_then(|p| p.text_contents())
            .map(str::to_string);
        Received {
            html,
            raw: String::from_utf8_lossy(raw).into_owned(),
            subject: m.subject().unwrap_or("").to_string(),
            from: m
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or("")
                .to_string(),
            reply_to: m
                .reply_to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(str::to_string),
            message_id: m.message_id().unwrap_or("").to_string(),
            in_reply_to: m.in_reply_to().as_text().map(str::to_string),
            text: m.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
        }
    }

    /// The value of a header, as raw text.
    pub fn header(&self, name: &str) -> Option<String> {
        let m = mail_parser::MessageParser::default().parse(self.raw.as_bytes())?;
        m.header_raw(name).map(|v| v.trim().to_string())
    }
}

/// The Message-ID of a raw mail, without angle brackets.
pub fn message_id_of(raw: &str) -> String {
    Received::parse(raw.as_bytes()).message_id
}

/// Waits until `user`'s INBOX holds a mail matching `pred`, and returns it.
pub async fn wait_for(user: &str, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mails: Vec<Received> = fetch_all(user)
            .await
            .iter()
            .map(|r| Received::parse(r))
            .collect();
        if let Some(m) = mails.iter().find(|m| pred(m)) {
            return m.clone();
        }
        if Instant::now() > deadline {
            let subjects: Vec<&str> = mails.iter().map(|m| m.subject.as_str()).collect();
            panic!("no {what} arrived for {user} within 20 s; the mailbox holds {subjects:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Hands a raw RFC 5322 message to Postfix with an empty envelope sender
/// (`MAIL FROM:<>`), as bounces are sent.
pub async fn send_null_sender(to: &[&str], raw: &str) {
    use lettre::AsyncTransport;
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(*SMTP_PORT)
            .build();
    let envelope =
        lettre::address::Envelope::new(None, to.iter().map(|t| t.parse().unwrap()).collect())
            .unwrap();
    transport
        .send_raw(&envelope, raw.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("SMTP send with null sender: {e}"));
}

/// Puts `raws` straight into `user`'s INBOX over IMAP (much faster than
/// SMTP for building a backlog).
pub async fn append_all(user: &str, raws: &[String]) {
    let mut s = imap(user).await;
    for raw in raws {
        s.append("INBOX", None, None, raw.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("APPEND to {user}: {e}"));
    }
    let _ = s.logout().await;
}

/// Creates a folder of `user` (an existing one is fine) and appends `raws`.
pub async fn append_to(user: &str, folder: &str, raws: &[String]) {
    let mut s = imap(user).await;
    let _ = s.create(folder).await;
    for raw in raws {
        s.append(folder, None, None, raw.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("APPEND to {user}/{folder}: {e}"));
    }
    let _ = s.logout().await;
}

/// Deletes a folder of `user` if it exists.
pub async fn delete_folder(user: &str, folder: &str) {
    let mut s = imap(user).await;
    let _ = s.delete(folder).await;
    let _ = s.logout().await;
}

/// How many messages a folder of `user` holds (0 when it does not exist).
pub async fn folder_count(user: &str, folder: &str) -> u32 {
    let mut s = imap(user).await;
    let n = match s.examine(folder).await {
        Ok(m) => m.exists,
        Err(_) => 0,
    };
    let _ = s.logout().await;
    n
}

/// Hands a raw RFC 5322 message to Postfix.
pub async fn send_raw(from: &str, to: &[&str], raw: &str) {
    use lettre::AsyncTransport;
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(*SMTP_PORT)
            .build();
    let envelope = lettre::address::Envelope::new(
        Some(from.parse().unwrap()),
        to.iter().map(|t| t.parse().unwrap()).collect(),
    )
    .unwrap();
    transport
        .send_raw(&envelope, raw.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("SMTP send from {from}: {e}"));
}

/// A plain-text mail.
pub fn mail(from: &str, to: &str, subject: &str, extra_headers: &str, body: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <test.{nanos}.{n}@client.test>\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n{extra_headers}\r\n{}",
        body.replace('\n', "\r\n")
    )
}

/// The daemon under test: the real binary with a config in a temporary
/// folder.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// How the daemon under test reaches the mail servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain IMAP with IDLE, plain SMTP.
    Plain,
    /// Plain IMAP, IDLE off: the daemon polls every second.
    Polling,
    /// IMAPS (1993) for the command inbox, STARTTLS (1143) for the
    /// invitations inbox, STARTTLS SMTP; all verified against the stack's
    /// self-signed certificate given as `ca_file`.
    Tls,
}

/// The stack's self-signed certificate.
pub fn stack_cert() -> PathBuf {
    PathBuf::from(
        std::env::var("LIAISON_MAILSTACK_DIR").unwrap_or_else(|_| "/tmp/liaison-ms".into()),
    )
    .join("tls/ca.pem")
}

/// `config` (from [`config_text`]) trusting the Authentication-Results
/// headers of `authserv_id` (`security.trusted_authserv_id`), with `extra`
/// further `[security]` lines (each ending in `\n`).
pub fn trusting(config: &str, authserv_id: &str, extra: &str) -> String {
    config.replace(
        "invitation_ttl_days = 90\n",
        &format!("invitation_ttl_days = 90\ntrusted_authserv_id = \"{authserv_id}\"\n{extra}"),
    )
}

/// Sends `body` as a command mail from the northwind partner
/// (`partner1@liaison.test`, see [`config_text`]) and waits for its
/// transcript.
pub async fn partner_commands(body: &str, subject: &str) -> Received {
    const PARTNER1: &str = "partner1@liaison.test";
    const COMMANDS: &str = "commands@liaison.test";
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, subject, "", body),
    )
    .await;
    wait_for(PARTNER1, "transcript", |m| {
        m.subject.contains(subject) && m.subject.contains("Liaison")
    })
    .await
}

/// Invites `customer` for northwind and accepts as them; the relationship
/// is active.
pub async fn make_active(daemon: &Daemon, customer: &str) {
    partner_commands(&format!("invite {customer}"), &format!("invite {customer}")).await;
    let inv = wait_for(customer, "invitation", |m| m.subject.contains("[ref:")).await;
    let to = inv.reply_to.clone().unwrap();
    send_raw(
        customer,
        &[&to],
        &mail(
            customer,
            &to,
            &format!("Re: {}", inv.subject),
            "",
            "Accept\n",
        ),
    )
    .await;
    daemon.wait_state("northwind", customer, "active").await;
}

/// How many mails in `user`'s inbox match `pred`.
pub async fn count_where(user: &str, pred: impl Fn(&Received) -> bool) -> usize {
    fetch_all(user)
        .await
        .iter()
        .map(|r| Received::parse(r))
        .filter(|m| pred(m))
        .count()
}

/// `liaison stats`, parsed.
pub fn stats(daemon: &Daemon) -> serde_json::Value {
    let (ok, out, err) = daemon.cli(&["stats"]);
    assert!(ok, "stats failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stats output {out:?}: {e}"))
}

/// The number of processed records, over every class (`liaison stats`).
pub fn processed_total(daemon: &Daemon) -> u64 {
    stats(daemon)["processed"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

/// The store backend the tests run on: `LIAISON_TEST_BACKEND=sled` (the
/// default) or `postgres` (the private PostgreSQL of `tests/postgres.sh`,
/// a fresh database per daemon). `tests/run.sh` runs the end-to-end
/// suites once with each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded sled store, in the test's temporary folder.
    Sled,
    /// A database of its own on the test PostgreSQL.
    Postgres,
}

/// The backend chosen by `LIAISON_TEST_BACKEND`; anything but `sled`,
/// `postgres` (or unset) is a mistake in the test run, not a reason to
/// quietly test sled.
pub fn backend() -> Backend {
    match std::env::var("LIAISON_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("sled") => Backend::Sled,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("LIAISON_TEST_BACKEND={other}: use `sled` or `postgres`"),
    }
}

/// Seconds a test daemon on PostgreSQL holds its leases: short, so a daemon
/// started again after a kill -9 (a new owner) takes its inboxes over in a
/// few seconds instead of the default 30.
pub const TEST_LEASE_SECS: u64 = 2;

/// The `[store]` section of a test configuration whose files are in
/// `dir`, for [`backend`]: sled in `dir/store`, or a fresh PostgreSQL
/// database, with the admin socket (which postgres requires to be named)
/// where sled would put it, `dir/store.sock`. Ends with a blank line.
pub fn store_section(dir: &std::path::Path) -> String {
    store_section_on(backend(), dir, "store")
}

/// The `[store]` section for `backend` named `name`: the sled folder
/// `dir/name`, or a fresh database; the admin socket is `dir/name.sock`
/// (sled's default, written out for postgres, which requires it).
pub fn store_section_on(backend: Backend, dir: &std::path::Path, name: &str) -> String {
    match backend {
        Backend::Sled => format!(
            "[store]\npath = \"{}\"\ncache_capacity_mb = 8\n\n",
            dir.join(name).display()
        ),
        // TLS with the server's name checked against the test CA, as a
        // production config should (anything less gets a warning).
        Backend::Postgres => format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{url}?sslmode=verify-full\"\nca_file = \"{ca}\"\n\
             max_connections = 4\nlease_secs = {TEST_LEASE_SECS}\n\n\
             [admin]\nsocket = \"{socket}\"\n\n",
            url = pg::fresh_database(&database_prefix()),
            ca = pg::ca_path().display(),
            socket = dir.join(format!("{name}.sock")).display(),
        ),
    }
}

/// The test's name (cargo names each test's thread after it), so a test's
/// database can be found when a run is inspected.
fn database_prefix() -> String {
    std::thread::current()
        .name()
        .map(|n| n.rsplit("::").next().unwrap_or(n).to_string())
        .filter(|n| n != "main" && !n.starts_with("tokio"))
        .unwrap_or_else(|| "e2e".into())
}

/// `config` (a text made by [`config_text`]) with its store section (and
/// the `[admin]` one written with it) replaced by `section` (from
/// [`store_section_on`]).
pub fn replace_store(config: &str, section: &str) -> String {
    let start = config.find("[store]\n").expect("a [store] section");
    // store_section writes both sections before the first [[inbox]].
    let end = start
        + config[start..]
            .find("[[inbox]]")
            .expect("an [[inbox]] after [store]");
    format!("{}{section}{}", &config[..start], &config[end..])
}

/// `config` with a new, empty store of the same backend beside the old,
/// named `name` (see [`store_section_on`]): where a test restores a backup.
pub fn with_new_store(config: &str, dir: &std::path::Path, name: &str) -> String {
    replace_store(config, &store_section_on(backend(), dir, name))
}

/// The admin socket of the configuration file `config`: `[admin] socket`,
/// or sled's default beside the store folder.
pub fn admin_socket_of(config: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    if let Some(socket) = value.get("admin").and_then(|a| a.get("socket")) {
        return PathBuf::from(socket.as_str().unwrap());
    }
    let path = value["store"]["path"].as_str().expect("[store] path");
    PathBuf::from(format!("{path}.sock"))
}

/// The `[store] url` of the configuration file `config` (postgres only).
pub fn store_url(config: &std::path::Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value["store"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no [store] url", config.display()))
        .to_string()
}

/// `url` (a store URL of a test config) for [`pg::psql`]: without its
/// query (`sslmode=verify-full` would make psql look for a CA file of its
/// own; the server is on loopback).
pub fn psql_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// The bytes the tables of the database at `url` take, with their indexes
/// and TOAST (where large values go), without PostgreSQL's own catalogs.
pub fn pg_tables_size(url: &str) -> u64 {
    let out = pg::psql(
        psql_url(url),
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'm', 'p') \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%'",
    )
    .unwrap_or_else(|e| panic!("size of the store's tables: {e}"));
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("size {out:?}: {e}"))
}

/// The test configuration, with the store in `dir`, on [`backend`].
pub fn config_text(dir: &std::path::Path, transport: Transport) -> String {
    config_text_on(backend(), dir, transport)
}

/// [`config_text`] on the given backend, whatever the run's.
pub fn config_text_on(backend: Backend, dir: &std::path::Path, transport: Transport) -> String {
    let templates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates");
    let idle = transport != Transport::Polling;
    let cert = stack_cert();
    let inbox = |name: &str, user: &str, tls: &str, port: u16| {
        let ca = if tls == "none" {
            String::new()
        } else {
            format!("ca_file = \"{}\"\n", cert.display())
        };
        format!(
            "[[inbox]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\n{ca}\
             username = \"{user}\"\npassword = \"{PASSWORD}\"\nidle = {idle}\npoll_interval_secs = 1\ntimeout_secs = 10\n\n"
        )
    };
    let (commands, invites, smtp_tls) = match transport {
        Transport::Tls => (
            inbox("commands", "commands@liaison.test", "tls", *IMAPS_PORT),
            inbox("invites", "invites@liaison.test", "starttls", *IMAP_PORT),
            format!("tls = \"starttls\"\nca_file = \"{}\"\n", cert.display()),
        ),
        _ => (
            inbox("commands", "commands@liaison.test", "none", *IMAP_PORT),
            inbox("invites", "invites@liaison.test", "none", *IMAP_PORT),
            "tls = \"none\"\n".to_string(),
        ),
    };
    format!(
        "{store}{commands}{invites}\
         [smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\n{smtp_tls}timeout_secs = 10\n\n\
         [addresses]\ncommands = \"commands@liaison.test\"\ninvitations = \"invites@liaison.test\"\n\
         support_desk = \"helpdesk@liaison.test\"\nfrom_name = \"Liaison\"\n\n\
         [security]\ntoken_secret = \"test-secret-0123456789abcdef\"\ninvitation_ttl_days = 90\n\n\
         [templates]\ndir = \"{templates}\"\n\n\
         [[partner]]\nid = \"northwind\"\nname = \"Northwind Traders\"\nemails = [\"partner1@liaison.test\"]\nlocale = \"en\"\n\n\
         [[partner]]\nid = \"hanbit\"\nname = \"Hanbit Cloud\"\nemails = [\"partner2@liaison.test\"]\nlocale = \"ko\"\n",
        store = store_section_on(backend, dir, "store"),
        templates = templates.display(),
        smtp_port = *SMTP_PORT,
    )
}

impl Daemon {
    /// Writes a config into a new temporary folder and starts the daemon.
    pub fn start(transport: Transport) -> Daemon {
        Self::start_custom(transport, |c| c)
    }

    /// Like [`Daemon::start`], with the config text edited by `edit` first.
    pub fn start_custom(transport: Transport, edit: impl FnOnce(String) -> String) -> Daemon {
        Self::start_on(backend(), transport, edit)
    }

    /// Like [`Daemon::start_custom`], on `backend` whatever the run's.
    pub fn start_on(
        backend: Backend,
        transport: Transport,
        edit: impl FnOnce(String) -> String,
    ) -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let config = dir.join("liaison.toml");
        std::fs::write(&config, edit(config_text_on(backend, &dir, transport))).unwrap();
        let mut d = Daemon {
            child: None,
            dir,
            config,
            _tmp: Some(tmp),
        };
        d.spawn();
        d
    }

    /// A daemon (not started: see [`Daemon::spawn`]) on a config file the
    /// test wrote in `dir`, which it keeps.
    pub fn on_config(dir: PathBuf, config: PathBuf) -> Daemon {
        Daemon {
            child: None,
            dir,
            config,
            _tmp: None,
        }
    }

    /// Starts (again) the binary on this daemon's config.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_liaison"))
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("LIAISON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start liaison");
        self.child = Some(child);
        // Ready when the admin socket exists.
        let sock = admin_socket_of(&self.config);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "daemon did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Runs a CLI subcommand against this daemon's config; returns stdout.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_liaison"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run liaison CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `status CUSTOMER --json`, parsed.
    pub fn status(&self, customer: &str) -> serde_json::Value {
        let (ok, out, err) = self.cli(&["status", customer, "--json"]);
        assert!(ok, "status failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status output {out:?}: {e}"))
    }

    /// Waits until `customer`'s relationship with `partner` is in `state`.
    pub async fn wait_state(&self, partner: &str, customer: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.status(customer);
            if v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["partner"] == partner && r["state"] == state)
            }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{customer} did not become {state} with {partner}; status: {v}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "daemon did not stop within 20 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
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

/// A small deterministic generator, so a failing run can be repeated from
/// its printed seed.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// The seed of a test that kills at random moments: `LIAISON_CRASH_SEED`,
/// else the clock; printed, so a failing run can be repeated.
pub fn crash_seed(test: &str) -> u64 {
    let seed = std::env::var("LIAISON_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("{test} seed: {seed} (set LIAISON_CRASH_SEED to repeat)");
    seed
}
