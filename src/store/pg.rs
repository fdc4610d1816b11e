//! The PostgreSQL store: several Liaison instances on one database.
//!
//! # Layout
//! The same records as sled (see the parent module), one row each in
//! `liaison_kv (key bytea primary key, value bytea)`. `bytea` compares
//! bytewise, as sled orders its keys, so every prefix scan and the outbox's
//! next-attempt index (`outd/`) are range scans of the primary key. Derived
//! records (customer index, summaries, counters) are written by the same
//! transaction as the relationships they derive from, as with sled.
//! `liaison_ids` numbers outbox entries and held mails; `liaison_schema`
//! holds the schema version (migrations are embedded, applied at start).
//!
//! # Several instances
//! - **Decision turns.** An instance holds a session-level advisory lock
//!   (`TURN_LOCK`) on its writer connection from its first decision after a
//!   flush until that flush has committed: decisions of all instances take
//!   turns, so what one read stays true until its writes land (the one
//!   process lock of sled, stretched over instances). While it holds the
//!   turn, what it reads is cached: nobody else can change it.
//!   A paused instance cannot keep the turn forever: its session is ended
//!   by the server after `lease_secs` idle (`idle_session_timeout`,
//!   `idle_in_transaction_session_timeout`), which also drops its lock.
//! - **Leases and fencing.** `liaison_lease (name, owner, expires_at,
//!   fence)`: an inbox, the timer sweep and the Graph follower each have
//!   one owner at a time. Expiry is by the database's clock, so instances'
//!   clocks need not agree. The fencing token grows with each new owner. A
//!   commit that advances an inbox's cursor records which token it needs;
//!   the flush's transaction reads those lease rows `FOR SHARE` (a takeover
//!   waits for it) and commits only if this instance still holds them with
//!   the same tokens. Otherwise the batch is dropped and the store reports
//!   itself lost: the daemon restarts its tasks, and the new owner redoes
//!   the work from the durable cursor.
//! - **Outbox claims.** Any instance sends. Due entries are claimed in
//!   `liaison_outbox_claim` with `FOR UPDATE SKIP LOCKED` and an expiry
//!   (`claim_secs`: four lease lengths, and longer than a send may take);
//!   sent and retried entries drop their claim. After a crash its claimed entries wait until the claim expires,
//!   then another instance sends them: the duplicate window is the mails in
//!   flight, as with sled.
//!
//! # Threads
//! The `Store` interface is synchronous (as sled is, and as the decision
//! core reads), and it is called from the daemon's async tasks as well as
//! from blocking threads. The driver is async: it runs on a small runtime
//! of its own, and each call hands its work over and waits for the answer
//! on a plain channel, which works from any thread.

use super::{
    due_key, id_key, parse_due_key, Backend, Record, Records, Result, Shared, Staged, StoreError,
};
use liaison_core::config::PostgresConfig;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Each migration brings the schema from the version before it to its own.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE liaison_kv (key bytea PRIMARY KEY, value bytea NOT NULL);
     CREATE SEQUENCE liaison_ids;
     CREATE TABLE liaison_lease (
         name text PRIMARY KEY,
         owner text NOT NULL,
         expires_at timestamptz NOT NULL,
         fence bigint NOT NULL
     );
     CREATE TABLE liaison_outbox_claim (
         id bigint PRIMARY KEY,
         owner text NOT NULL,
         until timestamptz NOT NULL
     );",
)];

/// Advisory lock held during a decision turn ("Liaison" + 1).
const TURN_LOCK: i64 = 0x4c69_6169_736f_6e01;
/// Advisory lock held while migrating.
const MIGRATE_LOCK: i64 = 0x4c69_6169_736f_6e02;

/// Rows fetched per page of a range scan.
const PAGE: i64 = 1000;
/// Rows per statement when a batch is written.
const WRITE_CHUNK: usize = 5000;

/// A store in a PostgreSQL database, shared by several instances.
pub type PgStore = super::KvStore<PgBackend>;

impl PgStore {
    /// Connects, migrates the schema to this binary's version and opens.
    pub fn open(config: &PostgresConfig) -> Result<PgStore> {
        Self::open_as(config, &instance_name())
    }

    /// [`PgStore::open`] under another instance name than this process's
    /// (tests run several instances in one process).
    pub fn open_as(config: &PostgresConfig, instance: &str) -> Result<PgStore> {
        let backend = PgBackend::connect(config, instance)?;
        backend.migrate()?;
        super::KvStore::with_backend(backend)
    }
}

/// Connects, migrates the schema to this binary's version and opens.
pub fn open(config: &PostgresConfig) -> Result<Arc<dyn super::Store>> {
    Ok(Arc::new(PgStore::open(config)?))
}

/// Applies the embedded migrations (`liaison migrate`); returns the schema
/// version before and after.
pub fn migrate(config: &PostgresConfig) -> Result<(i64, i64)> {
    PgBackend::connect(config, &instance_name())?.migrate()
}

/// The database's schema version (0 when Liaison never ran on it), without
/// changing anything (`check-config`).
pub fn schema_version(config: &PostgresConfig) -> Result<i64> {
    let backend = PgBackend::connect(config, &instance_name())?;
    let inner = backend.inner.clone();
    backend.run("reading the schema version", async move {
        let c = inner.client().await?;
        let exists: bool = c
            .query_one("SELECT to_regclass('liaison_schema') IS NOT NULL", &[])
            .await
            .map_err(|e| pg_err("reading the schema version", e))?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let v: Option<i64> = c
            .query_one("SELECT max(version) FROM liaison_schema", &[])
            .await
            .map_err(|e| pg_err("reading the schema version", e))?
            .get(0);
        Ok(v.unwrap_or(0))
    })
}

/// The URL or key/value string with any password replaced by `***`, for
/// messages and logs.
pub fn redacted(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .map(|r| ("postgres://", r))
        .or_else(|| {
            url.strip_prefix("postgresql://")
                .map(|r| ("postgresql://", r))
        })
    {
        let (scheme, rest) = rest;
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((user, host)) => match user.split_once(':') {
                Some((name, _)) => format!("{name}:***@{host}"),
                None => format!("{user}@{host}"),
            },
            None => authority.to_string(),
        };
        let tail = redact_params(tail, '&');
        return format!("{scheme}{authority}{tail}");
    }
    redact_params(url, ' ')
}

/// `password=…` among `sep`-separated parameters, replaced by `***`.
fn redact_params(text: &str, sep: char) -> String {
    text.split(sep)
        .map(|part| {
            let (head, value) = match part.split_once('=') {
                Some(kv) => kv,
                None => return part.to_string(),
            };
            let name = head.rsplit('?').next().unwrap_or(head).trim();
            if name.eq_ignore_ascii_case("password") && !value.is_empty() {
                format!("{head}=***")
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

fn pg_err(what: &str, e: tokio_postgres::Error) -> StoreError {
    // The driver's words name the server's error, never the connection
    // string; its source (the IO error) says why a connection failed.
    let mut text = e.to_string();
    if let Some(db) = e.as_db_error() {
        text = format!("{}: {}", db.severity(), db.message());
    } else if let Some(source) = std::error::Error::source(&e) {
        let s = source.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
    }
    StoreError::Postgres(format!("{what}: {text}"))
}

fn pool_err(what: &str, e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(what, e),
        other => StoreError::Postgres(format!("{what}: {other}")),
    }
}

/// Keys a sender writes without a decision turn: not cached during a turn.
fn is_outbox_key(key: &[u8]) -> bool {
    key.starts_with(b"outq/") || key.starts_with(b"outd/") || key.starts_with(b"outs/")
}

/// What every async task of the backend shares.
struct Inner {
    pool: deadpool_postgres::Pool,
    pg_config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The connection that holds the turn and writes batches; separate
    /// from the pool, since a session-level lock belongs to it.
    writer: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    instance: String,
    lease_secs: u64,
}

impl Inner {
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_err("connecting to the database", e))
    }

    /// A new writer session, with the timeouts that free the turn of an
    /// instance that stopped answering.
    async fn connect_writer(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = self
            .pg_config
            .connect(self.tls.clone())
            .await
            .map_err(|e| pg_err("connecting to the database", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the store's writer connection ended");
            }
        });
        let idle_ms = self.lease_secs * 1000;
        // Waiting for another instance's turn: it is freed at the latest
        // when the server ends that instance's idle session.
        let lock_ms = self.lease_secs * 2000 + 5000;
        client
            .batch_execute(&format!(
                "SET application_name = 'liaison writer';
                 SET idle_session_timeout = {idle_ms};
                 SET idle_in_transaction_session_timeout = {idle_ms};
                 SET lock_timeout = {lock_ms};"
            ))
            .await
            .map_err(|e| pg_err("setting up the writer connection", e))?;
        Ok(client)
    }
}

/// Where this instance's decision turn stands.
#[derive(Default)]
struct Turn {
    /// Decisions in progress (begun, not ended).
    holders: usize,
    /// The leases the staged batch needs, with the tokens it was decided
    /// under.
    needs: BTreeMap<String, u64>,
}

/// The PostgreSQL backend of [`PgStore`].
pub struct PgBackend {
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
    turn: Mutex<Turn>,
    /// Whether the writer holds [`TURN_LOCK`].
    locked: AtomicBool,
    /// Leases held, with their tokens.
    held: Mutex<HashMap<String, u64>>,
    /// What was read during the current turn.
    cache: Mutex<HashMap<Vec<u8>, Option<Vec<u8>>>>,
    lost: Mutex<Option<String>>,
    /// Time one call may take before it is given up.
    timeout: Duration,
    /// How long an outbox claim lasts.
    claim_secs: f64,
}

impl PgBackend {
    /// Connects (a pool and a writer), checking that the server answers.
    pub fn connect(config: &PostgresConfig, instance: &str) -> Result<PgBackend> {
        let (url, mode) = liaison_core::config::split_sslmode(config.url.expose());
        let mode = SslMode::parse(mode.as_deref().unwrap_or("prefer"))?;
        let mut pg_config = tokio_postgres::Config::from_str(&url).map_err(|e| {
            StoreError::Postgres(format!(
                "store.url is not a PostgreSQL URL or key/value string: {e}"
            ))
        })?;
        pg_config.ssl_mode(mode.driver());
        let tls = make_tls(
            mode.check(config.ca_file.is_some()),
            config.ca_file.as_deref(),
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("liaison-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Postgres(format!("cannot start the store's threads: {e}")))?;
        let manager = deadpool_postgres::Manager::from_config(
            pg_config.clone(),
            tls.clone(),
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _entered = runtime.enter();
            deadpool_postgres::Pool::builder(manager)
                .max_size(config.max_connections.saturating_sub(1).max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(|e| StoreError::Postgres(format!("cannot set up the pool: {e}")))?
        };
        let lease_secs = config.lease_secs;
        let backend = PgBackend {
            runtime: Some(runtime),
            inner: Arc::new(Inner {
                pool,
                pg_config,
                tls,
                writer: tokio::sync::Mutex::new(None),
                instance: instance.to_string(),
                lease_secs,
            }),
            turn: Mutex::new(Turn::default()),
            locked: AtomicBool::new(false),
            held: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            lost: Mutex::new(None),
            timeout: Duration::from_secs(lease_secs * 2 + 30),
            claim_secs: config.claim_secs.max(1) as f64,
        };
        // Fails here, with the server's words, when it cannot be reached.
        let inner = backend.inner.clone();
        backend.run("connecting to the database", async move {
            inner.client().await.map(|_| ())
        })?;
        Ok(backend)
    }

    /// This instance's name in the lease and claim tables.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Runs `work` on the store's runtime and waits for its answer; from
    /// any thread, inside an async runtime or not.
    fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        let runtime = self
            .runtime
            .as_ref()
            .expect("runtime lives as long as the backend");
        runtime.spawn(async move {
            let answer = match tokio::time::timeout(timeout, work).await {
                Ok(answer) => answer,
                Err(_) => Err(StoreError::Postgres(format!(
                    "{what}: no answer from the database within {} s",
                    timeout.as_secs()
                ))),
            };
            let _ = tx.send(answer);
        });
        rx.recv()
            .map_err(|_| StoreError::Postgres(format!("{what}: the store's threads stopped")))?
    }

    fn migrate(&self) -> Result<(i64, i64)> {
        let inner = self.inner.clone();
        self.run("migrating the schema", async move {
            let mut c = inner.client().await?;
            let e = |err| pg_err("migrating the schema", err);
            c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
                .await
                .map_err(e)?;
            let migrated = async {
                c.batch_execute(
                    "CREATE TABLE IF NOT EXISTS liaison_schema (version bigint NOT NULL)",
                )
                .await
                .map_err(e)?;
                let from: Option<i64> = c
                    .query_one("SELECT max(version) FROM liaison_schema", &[])
                    .await
                    .map_err(e)?
                    .get(0);
                let from = from.unwrap_or(0);
                if from > SCHEMA_VERSION {
                    return Err(StoreError::SchemaTooNew {
                        found: from,
                        known: SCHEMA_VERSION,
                    });
                }
                for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
                    let tx = c.transaction().await.map_err(e)?;
                    tx.batch_execute(sql).await.map_err(e)?;
                    tx.execute(
                        "INSERT INTO liaison_schema (version) VALUES ($1)",
                        &[version],
                    )
                    .await
                    .map_err(e)?;
                    tx.commit().await.map_err(e)?;
                    tracing::info!(version, "store schema migrated");
                }
                Ok((from, SCHEMA_VERSION))
            }
            .await;
            let _ = c
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
                .await;
            migrated
        })
    }

    fn turn(&self) -> std::sync::MutexGuard<'_, Turn> {
        self.turn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_lost(&self, reason: String) {
        tracing::error!(reason = %reason, "the store dropped a batch it could not write; restarting the daemon's tasks");
        *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    fn forget_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Takes the turn lock on the writer (connecting it if needed).
    fn lock_turn(&self) -> Result<()> {
        let inner = self.inner.clone();
        self.run("waiting for the store's turn", async move {
            let mut writer = inner.writer.lock().await;
            if writer.as_ref().is_none_or(|c| c.is_closed()) {
                *writer = Some(inner.connect_writer().await?);
            }
            let c = writer.as_ref().expect("connected above");
            c.execute("SELECT pg_advisory_lock($1)", &[&TURN_LOCK])
                .await
                .map_err(|e| {
                    if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                        StoreError::Postgres(
                            "another instance has held the store's turn for too long (is it stuck?); retrying".into(),
                        )
                    } else {
                        pg_err("waiting for the store's turn", e)
                    }
                })?;
            Ok(())
        })?;
        self.locked.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Ends the turn after its batch is written. If the lock cannot be
    /// freed, the session goes (which frees it): the batch is durable
    /// already, so that is no error for the flush.
    fn end_turn(&self) {
        if let Err(e) = self.unlock_turn() {
            tracing::warn!(error = %e, "could not end the store's turn; closing the writer connection instead");
            let inner = self.inner.clone();
            let _ = self.run("closing the writer connection", async move {
                *inner.writer.lock().await = None;
                Ok(())
            });
        }
    }

    /// Whether the writer's session is still there.
    fn writer_alive(&self) -> Result<bool> {
        let inner = self.inner.clone();
        self.run("checking the writer connection", async move {
            Ok(inner
                .writer
                .lock()
                .await
                .as_ref()
                .is_some_and(|c| !c.is_closed()))
        })
    }

    /// Frees the turn lock (the writer stays connected).
    fn unlock_turn(&self) -> Result<()> {
        self.locked.store(false, Ordering::SeqCst);
        self.forget_cache();
        let inner = self.inner.clone();
        self.run("ending the store's turn", async move {
            let writer = inner.writer.lock().await;
            if let Some(c) = writer.as_ref().filter(|c| !c.is_closed()) {
                c.execute("SELECT pg_advisory_unlock($1)", &[&TURN_LOCK])
                    .await
                    .map_err(|e| pg_err("ending the store's turn", e))?;
            }
            Ok(())
        })
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's task would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// libpq's `sslmode`, honoured as libpq does: `disable` (no TLS),
/// `prefer` (TLS when the server offers it; the default), `require` (TLS
/// or nothing), `verify-ca` (and the certificate chains to a trusted CA),
/// `verify-full` (and it names the host). As with libpq and a root
/// certificate file, `prefer` and `require` verify like `verify-full` once
/// `ca_file` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CertCheck {
    /// Nothing (libpq's `prefer`/`require` without a root file): encrypted,
    /// not authenticated.
    Nothing,
    /// The chain, not the host name (`verify-ca`).
    Chain,
    /// The chain and the host name.
    Full,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(StoreError::Postgres(format!(
                    "store.url: sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }

    fn driver(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    fn check(self, ca_file: bool) -> CertCheck {
        match self {
            SslMode::VerifyFull => CertCheck::Full,
            SslMode::VerifyCa => CertCheck::Chain,
            _ if ca_file => CertCheck::Full,
            _ => CertCheck::Nothing,
        }
    }
}

/// The TLS connector for `check`.
fn make_tls(
    check: CertCheck,
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let roots = crate::io::imap::tls_roots(ca_file)
        .map_err(|e| StoreError::Postgres(format!("store.ca_file: {e}")))?;
    let webpki = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| StoreError::Postgres(format!("store.ca_file: {e}")))?;
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CertVerifier { check, webpki }))
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// rustls's verifier, asked for as much as `sslmode` asks.
#[derive(Debug)]
struct CertVerifier {
    check: CertCheck,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for CertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError;
        if self.check == CertCheck::Nothing {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == CertCheck::Chain => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // The handshake's signature is always checked: without it, anyone
        // on the path could answer for the server.
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Host, process and start time: unique among instances, and the same for
/// every store this process opens (a store opened anew after it was lost
/// still owns its leases and claims).
fn instance_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(new_instance_name).clone()
}

fn new_instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{host}/{}/{:x}", std::process::id(), started & 0xff_ffff)
}

/// One page of a range scan: the SQL for the bounds given.
fn range_sql(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> String {
    let mut sql = String::from("SELECT key, value FROM liaison_kv WHERE true");
    let mut n = 0;
    for (bound, inc, exc) in [(lo, ">=", ">"), (hi, "<=", "<")] {
        match bound {
            Bound::Included(_) => {
                n += 1;
                sql.push_str(&format!(" AND key {inc} ${n}"));
            }
            Bound::Excluded(_) => {
                n += 1;
                sql.push_str(&format!(" AND key {exc} ${n}"));
            }
            Bound::Unbounded => {}
        }
    }
    sql.push_str(&format!(" ORDER BY key LIMIT {PAGE}"));
    sql
}

/// A range scan, a page at a time (keyset pagination).
struct PgRange<'a> {
    backend: &'a PgBackend,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    page: VecDeque<Record>,
    done: bool,
}

impl PgRange<'_> {
    fn fetch(&mut self) -> Result<()> {
        let (lo, hi) = (self.lo.clone(), self.hi.clone());
        let inner = self.backend.inner.clone();
        let rows: Vec<Record> = self.backend.run("reading the store", async move {
            let c = inner.client().await?;
            let sql = range_sql(&lo, &hi);
            let st = c
                .prepare_cached(&sql)
                .await
                .map_err(|e| pg_err("reading the store", e))?;
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
            for b in [&lo, &hi] {
                if let Bound::Included(k) | Bound::Excluded(k) = b {
                    params.push(k);
                }
            }
            let rows = c
                .query(&st, &params)
                .await
                .map_err(|e| pg_err("reading the store", e))?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })?;
        if (rows.len() as i64) < PAGE {
            self.done = true;
        }
        if let Some((last, _)) = rows.last() {
            self.lo = Bound::Excluded(last.clone());
        }
        self.page.extend(rows);
        Ok(())
    }
}

impl Iterator for PgRange<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.page.pop_front().map(Ok)
    }
}

/// Writes `writes` in `tx` (upserts, then removals), in chunks.
async fn write_rows(
    tx: &tokio_postgres::Transaction<'_>,
    writes: &[(&Vec<u8>, &Option<Vec<u8>>)],
) -> Result<()> {
    let e = |err| pg_err("writing the store", err);
    // In order, a later write to a key wins (as when staged): a retry that
    // keeps its next attempt removes and re-adds the same index key.
    let mut last: BTreeMap<&[u8], &Option<Vec<u8>>> = BTreeMap::new();
    for (k, v) in writes {
        last.insert(k.as_slice(), *v);
    }
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut values: Vec<&[u8]> = Vec::new();
    let mut removed: Vec<&[u8]> = Vec::new();
    for (k, v) in last {
        match v {
            Some(v) => {
                keys.push(k);
                values.push(v);
            }
            None => removed.push(k),
        }
    }
    for (ks, vs) in keys.chunks(WRITE_CHUNK).zip(values.chunks(WRITE_CHUNK)) {
        tx.execute(
            "INSERT INTO liaison_kv (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[])
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&ks, &vs],
        )
        .await
        .map_err(e)?;
    }
    for ks in removed.chunks(WRITE_CHUNK) {
        tx.execute("DELETE FROM liaison_kv WHERE key = ANY($1)", &[&ks])
            .await
            .map_err(e)?;
    }
    // A sent or retried entry's claim is over.
    let done: Vec<i64> = writes
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(b"outq/"))
        .filter_map(|id| Some(u64::from_be_bytes(id.try_into().ok()?) as i64))
        .collect();
    if !done.is_empty() {
        tx.execute(
            "DELETE FROM liaison_outbox_claim WHERE id = ANY($1)",
            &[&done],
        )
        .await
        .map_err(e)?;
    }
    Ok(())
}

impl Backend for PgBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let cacheable = self.locked.load(Ordering::SeqCst) && !is_outbox_key(key);
        if cacheable {
            if let Some(v) = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
            {
                return Ok(v.clone());
            }
        }
        let inner = self.inner.clone();
        let k = key.to_vec();
        let value = self.run("reading the store", async move {
            let c = inner.client().await?;
            let st = c
                .prepare_cached("SELECT value FROM liaison_kv WHERE key = $1")
                .await
                .map_err(|e| pg_err("reading the store", e))?;
            Ok(c.query_opt(&st, &[&k])
                .await
                .map_err(|e| pg_err("reading the store", e))?
                .map(|r| r.get::<_, Vec<u8>>(0)))
        })?;
        if cacheable && self.locked.load(Ordering::SeqCst) {
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.to_vec(), value.clone());
        }
        Ok(value)
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let cacheable = |k: &[u8]| self.locked.load(Ordering::SeqCst) && !is_outbox_key(k);
        let mut found: Vec<Option<Option<Vec<u8>>>> = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter()
                .map(|k| cacheable(k).then(|| cache.get(k).cloned()).flatten())
                .collect()
        };
        let missing: Vec<Vec<u8>> = keys
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if missing.is_empty() {
            return Ok(found.into_iter().map(Option::flatten).collect());
        }
        let inner = self.inner.clone();
        let asked = missing.clone();
        let read: HashMap<Vec<u8>, Vec<u8>> = self.run("reading the store", async move {
            let c = inner.client().await?;
            let st = c
                .prepare_cached("SELECT key, value FROM liaison_kv WHERE key = ANY($1)")
                .await
                .map_err(|e| pg_err("reading the store", e))?;
            let mut read = HashMap::with_capacity(asked.len());
            for chunk in asked.chunks(WRITE_CHUNK) {
                for row in c
                    .query(&st, &[&chunk])
                    .await
                    .map_err(|e| pg_err("reading the store", e))?
                {
                    read.insert(row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1));
                }
            }
            Ok(read)
        })?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for (k, slot) in keys.iter().zip(found.iter_mut()) {
            if slot.is_none() {
                let value = read.get(k).cloned();
                if cacheable(k) {
                    cache.insert(k.clone(), value.clone());
                }
                *slot = Some(value);
            }
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }

    fn range(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Records<'_> {
        Box::new(PgRange {
            backend: self,
            lo: range.0,
            hi: range.1,
            page: VecDeque::new(),
            done: false,
        })
    }

    fn apply(&self, writes: &Staged) -> Result<()> {
        if let Some(reason) = self.lost() {
            return Err(StoreError::Lost(reason));
        }
        let mut turn = self.turn();
        let had_turn = self.locked.load(Ordering::SeqCst);
        if !had_turn {
            // Writes outside a decision (a store brought up to date, a
            // restore): they take a turn of their own.
            self.lock_turn()?;
        }
        let needs: Vec<(String, u64)> = std::mem::take(&mut turn.needs).into_iter().collect();
        let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            writes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let inner = self.inner.clone();
        let written = self.run("writing the store", async move {
            let mut writer = inner.writer.lock().await;
            let c = match writer.as_mut().filter(|c| !c.is_closed()) {
                Some(c) => c,
                None => {
                    return Err(StoreError::Postgres(
                        "the connection to the database was lost during the batch".into(),
                    ))
                }
            };
            let e = |err| pg_err("writing the store", err);
            let tx = c.transaction().await.map_err(e)?;
            if !needs.is_empty() {
                let names: Vec<&str> = needs.iter().map(|(n, _)| n.as_str()).collect();
                let rows = tx
                    .query(
                        "SELECT name, owner, fence FROM liaison_lease WHERE name = ANY($1) FOR SHARE",
                        &[&names],
                    )
                    .await
                    .map_err(e)?;
                for (name, fence) in &needs {
                    let holds = rows.iter().any(|r| {
                        r.get::<_, &str>(0) == name
                            && r.get::<_, &str>(1) == inner.instance
                            && r.get::<_, i64>(2) as u64 == *fence
                    });
                    if !holds {
                        // Dropping the transaction rolls it back.
                        return Err(StoreError::Fenced(name.clone()));
                    }
                }
            }
            let refs: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = rows.iter().map(|(k, v)| (k, v)).collect();
            write_rows(&tx, &refs).await?;
            tx.commit().await.map_err(e)?;
            Ok(())
        });
        self.forget_cache();
        if let Err(e) = written {
            // What was decided under this turn cannot be written later: the
            // turn may be gone, and others may have changed what it read.
            self.set_lost(e.to_string());
            self.locked.store(false, Ordering::SeqCst);
            let inner = self.inner.clone();
            let _ = self.run("dropping the writer connection", async move {
                *inner.writer.lock().await = None;
                Ok(())
            });
            return Err(e);
        }
        if turn.holders == 0 {
            self.end_turn();
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        // A commit is durable when it returns.
        Ok(())
    }

    fn nothing_to_apply(&self) -> Result<()> {
        let turn = self.turn();
        if turn.holders == 0 && self.locked.load(Ordering::SeqCst) {
            self.end_turn();
        }
        Ok(())
    }

    fn next_id(&self) -> Result<u64> {
        let inner = self.inner.clone();
        self.run("numbering a mail", async move {
            let c = inner.client().await?;
            let id: i64 = c
                .query_one("SELECT nextval('liaison_ids')", &[])
                .await
                .map_err(|e| pg_err("numbering a mail", e))?
                .get(0);
            Ok(id as u64)
        })
    }

    fn drops_failed_batches(&self) -> bool {
        true
    }

    fn write_now(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<bool> {
        let rows = writes.to_vec();
        let inner = self.inner.clone();
        self.run("recording a sent mail", async move {
            let mut c = inner.client().await?;
            let tx = c
                .transaction()
                .await
                .map_err(|e| pg_err("recording a sent mail", e))?;
            let refs: Vec<(&Vec<u8>, &Option<Vec<u8>>)> =
                rows.iter().map(|(k, v)| (k, v)).collect();
            write_rows(&tx, &refs).await?;
            tx.commit()
                .await
                .map_err(|e| pg_err("recording a sent mail", e))
        })?;
        Ok(true)
    }

    fn require_lease(&self, name: &str) -> Result<()> {
        let fence = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .ok_or_else(|| StoreError::NotOwner(name.to_string()))?;
        self.turn().needs.insert(name.to_string(), fence);
        Ok(())
    }

    fn begin_decision(&self, pending: bool) -> Result<()> {
        if let Some(reason) = self.lost() {
            return Err(StoreError::Lost(reason));
        }
        let mut turn = self.turn();
        if self.locked.load(Ordering::SeqCst) && !self.writer_alive()? {
            // The server ended the session that held the turn (restart,
            // idle past the lease): the turn is gone.
            self.locked.store(false, Ordering::SeqCst);
            self.forget_cache();
            if pending || !turn.needs.is_empty() {
                let reason =
                    "the connection holding the store's turn was lost with commits not yet written"
                        .to_string();
                self.set_lost(reason.clone());
                return Err(StoreError::Lost(reason));
            }
        }
        if !self.locked.load(Ordering::SeqCst) {
            self.lock_turn()?;
        }
        turn.holders += 1;
        Ok(())
    }

    fn end_decision(&self) {
        let mut turn = self.turn();
        turn.holders = turn.holders.saturating_sub(1);
    }

    fn acquire_lease(&self, name: &str) -> Result<Option<u64>> {
        let inner = self.inner.clone();
        let lease = name.to_string();
        let fence = self.run("renewing a lease", async move {
            let c = inner.client().await?;
            let row = c
                .query_opt(
                    "INSERT INTO liaison_lease AS l (name, owner, expires_at, fence)
                     VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3), 1)
                     ON CONFLICT (name) DO UPDATE SET
                         owner = EXCLUDED.owner,
                         expires_at = EXCLUDED.expires_at,
                         fence = l.fence + CASE WHEN l.owner = EXCLUDED.owner THEN 0 ELSE 1 END
                     WHERE l.owner = EXCLUDED.owner OR l.expires_at < clock_timestamp()
                     RETURNING fence",
                    &[&lease, &inner.instance, &(inner.lease_secs as f64)],
                )
                .await
                .map_err(|e| pg_err("renewing a lease", e))?;
            Ok(row.map(|r| r.get::<_, i64>(0) as u64))
        })?;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match fence {
            Some(f) => {
                held.insert(name.to_string(), f);
            }
            None => {
                held.remove(name);
            }
        }
        Ok(fence)
    }

    fn release_lease(&self, name: &str) -> Result<()> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let inner = self.inner.clone();
        let lease = name.to_string();
        self.run("giving a lease up", async move {
            let c = inner.client().await?;
            // The owner is cleared, so whoever takes it next (this
            // instance too) gets a new token.
            c.execute(
                "UPDATE liaison_lease SET owner = '', expires_at = '-infinity'
                 WHERE name = $1 AND owner = $2",
                &[&lease, &inner.instance],
            )
            .await
            .map_err(|e| pg_err("giving a lease up", e))?;
            Ok(())
        })
    }

    fn claim_due(&self, now: u64, limit: usize) -> Result<Option<Vec<Record>>> {
        if limit == 0 {
            return Ok(Some(Vec::new()));
        }
        let inner = self.inner.clone();
        let claim_secs = self.claim_secs;
        let records = self.run("claiming mail to send", async move {
            let e = |err| pg_err("claiming mail to send", err);
            let mut c = inner.client().await?;
            let (lo, hi) = (due_key(0, 0), due_key(now, u64::MAX));
            // Due in the next-attempt index (`outd/<not_before><id>`) and
            // not under another instance's claim. This instance's own
            // claims are taken again: its one sender asks only once its
            // last batch is done (or its tasks were restarted on a store
            // opened anew), so an entry it still holds a claim on is not
            // in flight, and must not wait for the claim to run out.
            let due = c
                .query(
                    "SELECT key FROM liaison_kv k
                     WHERE key >= $1 AND key <= $2
                       AND NOT EXISTS (
                           SELECT 1 FROM liaison_outbox_claim c
                           WHERE c.id = ('x' || encode(substring(k.key from 14 for 8), 'hex'))::bit(64)::bigint
                             AND c.until >= clock_timestamp()
                             AND c.owner <> $4)
                     ORDER BY key LIMIT $3",
                    &[&lo, &hi, &((limit * 2 + 8) as i64), &inner.instance],
                )
                .await
                .map_err(e)?;
            let ids: Vec<i64> = due
                .iter()
                .filter_map(|r| parse_due_key(r.get::<_, &[u8]>(0)))
                .map(|(_, id)| id as i64)
                .collect();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let tx = c.transaction().await.map_err(e)?;
            tx.execute(
                "INSERT INTO liaison_outbox_claim (id, owner, until)
                 SELECT unnest($1::bigint[]), '', '-infinity' ON CONFLICT (id) DO NOTHING",
                &[&ids],
            )
            .await
            .map_err(e)?;
            // Rows another instance is claiming right now are skipped, not
            // waited for; rows it holds an unexpired claim on are not taken.
            let claimed = tx
                .query(
                    "WITH free AS (
                         SELECT id FROM liaison_outbox_claim
                         WHERE id = ANY($1) AND (until < clock_timestamp() OR owner = $2)
                         ORDER BY array_position($1, id)
                         LIMIT $4
                         FOR UPDATE SKIP LOCKED
                     )
                     UPDATE liaison_outbox_claim o
                     SET owner = $2, until = clock_timestamp() + make_interval(secs => $3)
                     FROM free WHERE o.id = free.id
                     RETURNING o.id",
                    &[&ids, &inner.instance, &claim_secs, &(limit as i64)],
                )
                .await
                .map_err(e)?;
            tx.commit().await.map_err(e)?;
            let claimed: Vec<i64> = claimed.iter().map(|r| r.get(0)).collect();
            let keys: Vec<Vec<u8>> = claimed
                .iter()
                .map(|id| id_key("outq/", *id as u64))
                .collect();
            let rows = c
                .query(
                    "SELECT key, value FROM liaison_kv WHERE key = ANY($1)",
                    &[&keys],
                )
                .await
                .map_err(e)?;
            let mut found: HashMap<Vec<u8>, Vec<u8>> =
                rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
            // In the order the index gave (next attempt, then id); an entry
            // sent meanwhile by its claimer's predecessor is gone.
            Ok(keys
                .into_iter()
                .filter_map(|k| found.remove(&k).map(|v| (k, v)))
                .collect())
        })?;
        Ok(Some(records))
    }

    fn shared(&self) -> Option<Shared> {
        Some(Shared {
            lease: Duration::from_secs(self.inner.lease_secs),
            instance: self.inner.instance.clone(),
        })
    }

    fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_urls_and_key_value_strings() {
        assert_eq!(
            redacted("postgres://liaison:s3cret@db.example:5432/liaison?sslmode=require"),
            "postgres://liaison:***@db.example:5432/liaison?sslmode=require"
        );
        assert_eq!(
            redacted("postgresql://liaison@db.example/liaison?password=s3cret&sslmode=prefer"),
            "postgresql://liaison@db.example/liaison?password=***&sslmode=prefer"
        );
        assert_eq!(
            redacted("host=db.example user=liaison password=s3cret dbname=liaison"),
            "host=db.example user=liaison password=*** dbname=liaison"
        );
        assert_eq!(
            redacted("postgres://db.example/x"),
            "postgres://db.example/x"
        );
    }

    #[test]
    fn range_pages_name_only_the_bounds_given() {
        assert_eq!(
            range_sql(&Bound::Included(vec![1]), &Bound::Excluded(vec![2])),
            format!("SELECT key, value FROM liaison_kv WHERE true AND key >= $1 AND key < $2 ORDER BY key LIMIT {PAGE}")
        );
        assert_eq!(
            range_sql(&Bound::Unbounded, &Bound::Included(vec![2])),
            format!("SELECT key, value FROM liaison_kv WHERE true AND key <= $1 ORDER BY key LIMIT {PAGE}")
        );
    }

    #[test]
    fn sslmode_checks_what_libpq_checks() {
        let check = |m: &str, ca| SslMode::parse(m).unwrap().check(ca);
        assert_eq!(check("prefer", false), CertCheck::Nothing);
        assert_eq!(check("require", false), CertCheck::Nothing);
        assert_eq!(check("require", true), CertCheck::Full);
        assert_eq!(check("verify-ca", false), CertCheck::Chain);
        assert_eq!(check("verify-full", false), CertCheck::Full);
        assert!(SslMode::parse("verify").is_err());
    }
}
