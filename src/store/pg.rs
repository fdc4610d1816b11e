//! The PostgreSQL store: several Liaison instances on one database.
//!
//! # Layout
//! The same records as sled (see the parent module), one row each in
//! `liaison_kv (key bytea primary key, value bytea)`. `bytea` compares
//! bytewise, as sled orders its keys, so every prefix scan and the outbox's
//! next-attempt index (`outd/`) are range scans of the primary key. Derived
//! records (customer index, summaries, counters) are written by the same
//! transaction as the relationships they derive from, as with sled.
//! `liaison_ids` numbers outbox entries and held mails (taken in blocks:
//! unique, increasing within an instance, not across instances);
//! `liaison_generation` counts flushes (see below); `liaison_schema` holds
//! the schema version (migrations are embedded, applied at start).
//!
//! # Several instances
//! - **Decision turns.** An instance holds a session-level advisory lock
//!   (`TURN_LOCK`) on its writer connection from its first decision after a
//!   flush until that flush has committed: decisions of all instances take
//!   turns, so what one read stays true until its writes land (the one
//!   process lock of sled, stretched over instances). While it holds the
//!   turn, what it reads is cached: nobody else can change it. The cache
//!   outlives the turn: every flush also counts up `liaison_generation`,
//!   and taking the turn reads that count in the same round trip; when it
//!   is the one this instance's last flush left, nobody wrote in between
//!   and the cache stays (see [`ReadCache`]).
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
pub const SCHEMA_VERSION: i64 = 2;

/// Each migration brings the schema from the version before it to its own.
const MIGRATIONS: &[(i64, &str)] = &[
    (
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
    ),
    (
        2,
        "CREATE TABLE liaison_generation (id int PRIMARY KEY CHECK (id = 1), generation bigint NOT NULL);
         INSERT INTO liaison_generation VALUES (1, 0);",
    ),
];

/// Advisory lock held during a decision turn ("Liaison" + 1).
const TURN_LOCK: i64 = 0x4c69_6169_736f_6e01;
/// Advisory lock held while migrating.
const MIGRATE_LOCK: i64 = 0x4c69_6169_736f_6e02;

/// Rows fetched per page of a range scan.
const PAGE: i64 = 1000;
/// Rows per statement when a batch is written.
const WRITE_CHUNK: usize = 5000;
/// Bytes of keys and values the read cache holds before it starts afresh.
const CACHE_BYTES: usize = 64 << 20;
/// Ids taken from `liaison_ids` at a time.
const ID_BLOCK: i64 = 64;

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

/// Whether a scan of `prefix` may hold outbox records (never cached).
fn may_hold_outbox(prefix: &[u8]) -> bool {
    is_outbox_key(prefix)
        || [b"outq/", b"outd/", b"outs/"]
            .iter()
            .any(|o| o.starts_with(prefix))
}

/// What this instance read from the store, kept while nobody else writes.
///
/// Valid only under a decision turn: taking the turn reads the store's
/// flush count (`liaison_generation`), and when that is not the count this
/// instance's own last flush left (or that it saw when it last took the
/// turn), another instance wrote in between and the cache starts afresh.
/// A flush writes its records through, so the cache stays right after it.
/// Outbox records are never cached: senders write them without a turn.
#[derive(Default)]
struct ReadCache {
    records: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Whole prefix scans (prefix → every record under it, in key order).
    scans: HashMap<Vec<u8>, Arc<Vec<Record>>>,
    bytes: usize,
    /// The flush count the records are right for; `None` when unknown.
    generation: Option<i64>,
    /// Counts every clear and write-through: a read that began before one
    /// must not put what it read into the cache (it may be older).
    epoch: u64,
}

impl ReadCache {
    fn clear(&mut self) {
        self.records.clear();
        self.scans.clear();
        self.bytes = 0;
        self.generation = None;
        self.epoch += 1;
    }

    /// The turn was taken with the store at `generation`.
    fn turn_taken(&mut self, generation: i64) {
        if self.generation != Some(generation) {
            self.clear();
            self.generation = Some(generation);
        }
    }

    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        if self.bytes + size > CACHE_BYTES {
            // Starting afresh keeps the bound without bookkeeping per
            // record; what is read again comes back in a round trip.
            let generation = self.generation;
            self.clear();
            self.generation = generation;
        }
        self.bytes += size;
        if let Some(old) = self.records.insert(key, value) {
            self.bytes -= old.map_or(0, |v| v.len());
        }
    }

    /// Puts what one reader read, unless the cache changed since it began.
    fn fill(&mut self, began: u64, key: Vec<u8>, value: Option<Vec<u8>>) {
        if self.epoch == began && self.generation.is_some() {
            self.insert(key, value);
        }
    }

    /// Keeps a whole prefix scan, unless the cache changed since it began.
    fn fill_scan(&mut self, began: u64, prefix: Vec<u8>, records: Vec<Record>) {
        if self.epoch != began || self.generation.is_none() || may_hold_outbox(&prefix) {
            return;
        }
        let size = prefix.len()
            + records
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > CACHE_BYTES / 4 {
            return;
        }
        if self.bytes + size > CACHE_BYTES {
            let generation = self.generation;
            self.clear();
            self.generation = generation;
        }
        self.bytes += size;
        self.scans.insert(prefix, Arc::new(records));
    }

    /// Forgets the scans a write to `key` changes: those of its prefixes.
    fn drop_scans_of(&mut self, key: &[u8]) {
        if self.scans.is_empty() {
            return;
        }
        for end in 1..=key.len() {
            if let Some(gone) = self.scans.remove(&key[..end]) {
                let size = end + gone.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
                self.bytes = self.bytes.saturating_sub(size);
            }
        }
    }

    /// A flush committed `writes` and left the store at `generation`.
    fn written(&mut self, writes: &[(Vec<u8>, Option<Vec<u8>>)], generation: i64) {
        if self.generation != Some(generation - 1) {
            self.clear();
        } else {
            self.epoch += 1;
            for (k, v) in writes.iter().filter(|(k, _)| !is_outbox_key(k)) {
                self.drop_scans_of(k);
                self.insert(k.clone(), v.clone());
            }
        }
        self.generation = Some(generation);
    }
}

/// What every async task of the backend shares.
struct Inner {
    pool: deadpool_postgres::Pool,
    pg_config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// The connection that holds the turn and writes batches; separate
    /// from the pool, since a session-level lock belongs to it.
    writer: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// Whether the current writer's connection is still up (set by its
    /// connection task), readable without a hop to the store's runtime.
    writer_open: Mutex<Arc<AtomicBool>>,
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
        let open = Arc::new(AtomicBool::new(true));
        *self.writer_open.lock().unwrap_or_else(|p| p.into_inner()) = open.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the store's writer connection ended");
            }
            open.store(false, Ordering::SeqCst);
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
    /// What was read, while nobody else wrote.
    cache: Mutex<ReadCache>,
    /// Ids taken from the sequence, not yet handed out.
    ids: Mutex<VecDeque<u64>>,
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
                writer_open: Mutex::new(Arc::new(AtomicBool::new(false))),
                instance: instance.to_string(),
                lease_secs,
            }),
            turn: Mutex::new(Turn::default()),
            locked: AtomicBool::new(false),
            held: Mutex::new(HashMap::new()),
            cache: Mutex::new(ReadCache::default()),
            ids: Mutex::new(VecDeque::new()),
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

    fn cache(&self) -> std::sync::MutexGuard<'_, ReadCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_cache(&self) {
        self.cache().clear();
    }

    /// Takes the turn lock on the writer (connecting it if needed).
    fn lock_turn(&self) -> Result<()> {
        let inner = self.inner.clone();
        let generation = self.run("waiting for the store's turn", async move {
            let mut writer = inner.writer.lock().await;
            if writer.as_ref().is_none_or(|c| c.is_closed()) {
                *writer = Some(inner.connect_writer().await?);
            }
            let c = writer.as_ref().expect("connected above");
            // Sent together (one round trip): the count is read once the
            // lock is held, in a snapshot of its own.
            let (locked, generation) = tokio::join!(
                c.execute("SELECT pg_advisory_lock($1)", &[&TURN_LOCK]),
                c.query_one("SELECT generation FROM liaison_generation", &[]),
            );
            locked.map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                    StoreError::Postgres(
                        "another instance has held the store's turn for too long (is it stuck?); retrying".into(),
                    )
                } else {
                    pg_err("waiting for the store's turn", e)
                }
            })?;
            match generation {
                Ok(row) => Ok(row.get::<_, i64>(0)),
                Err(e) => {
                    // The lock is held: free it before giving up.
                    let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&TURN_LOCK]).await;
                    Err(pg_err("waiting for the store's turn", e))
                }
            }
        })?;
        self.cache().turn_taken(generation);
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
    fn writer_alive(&self) -> bool {
        self.inner
            .writer_open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .load(Ordering::SeqCst)
    }

    /// Frees the turn lock (the writer stays connected).
    fn unlock_turn(&self) -> Result<()> {
        // The cache stays: the next turn checks whether anyone wrote since.
        self.locked.store(false, Ordering::SeqCst);
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

/// The rows of the multi-prefix scan: (prefix's index from 0, record).
fn scans_rows(rows: Vec<tokio_postgres::Row>) -> impl Iterator<Item = (usize, Record)> {
    rows.into_iter().map(|r| {
        let i: i64 = r.get(0);
        ((i - 1) as usize, (r.get(1), r.get(2)))
    })
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
    /// A prefix scan under a turn: its prefix, the cache's epoch when it
    /// began, and every record so far, to be cached once it is whole.
    collect: Option<(Vec<u8>, u64, Vec<Record>)>,
}

/// A prefix scan served from the read cache.
struct CachedScan {
    records: Arc<Vec<Record>>,
    next: usize,
}

impl Iterator for CachedScan {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = self.records.get(self.next)?.clone();
        self.next += 1;
        Some(Ok(record))
    }
}

/// The prefix `range` scans, if it is exactly a prefix scan.
fn scanned_prefix(range: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Option<Vec<u8>> {
    match &range.0 {
        Bound::Included(prefix) if super::prefix_range(prefix) == *range => Some(prefix.clone()),
        _ => None,
    }
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
        if let Some((_, _, so_far)) = &mut self.collect {
            so_far.extend(rows.iter().cloned());
        }
        if self.done && self.backend.locked.load(Ordering::SeqCst) {
            if let Some((prefix, began, records)) = self.collect.take() {
                self.backend.cache().fill_scan(began, prefix, records);
            }
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
        let began = {
            let cache = self.cache();
            if cacheable {
                if let Some(v) = cache.records.get(key) {
                    return Ok(v.clone());
                }
            }
            cache.epoch
        };
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
            self.cache().fill(began, key.to_vec(), value.clone());
        }
        Ok(value)
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let cacheable = |k: &[u8]| self.locked.load(Ordering::SeqCst) && !is_outbox_key(k);
        let (mut found, began): (Vec<Option<Option<Vec<u8>>>>, u64) = {
            let cache = self.cache();
            let found = keys
                .iter()
                .map(|k| {
                    cacheable(k)
                        .then(|| cache.records.get(k).cloned())
                        .flatten()
                })
                .collect();
            (found, cache.epoch)
        };
        let missing = super::still_missing(keys, &found);
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
        let mut cache = self.cache();
        for (k, slot) in keys.iter().zip(found.iter_mut()) {
            if slot.is_none() {
                let value = read.get(k).cloned();
                if cacheable(k) {
                    cache.fill(began, k.clone(), value.clone());
                }
                *slot = Some(value);
            }
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }

    fn range(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Records<'_> {
        let prefix = scanned_prefix(&range).filter(|p| !may_hold_outbox(p));
        let collect = match prefix {
            Some(prefix) if self.locked.load(Ordering::SeqCst) => {
                let cache = self.cache();
                if let Some(records) = cache.scans.get(&prefix) {
                    return Box::new(CachedScan {
                        records: records.clone(),
                        next: 0,
                    });
                }
                Some((prefix, cache.epoch, Vec::new()))
            }
            _ => None,
        };
        Box::new(PgRange {
            backend: self,
            lo: range.0,
            hi: range.1,
            page: VecDeque::new(),
            done: false,
            collect,
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
        let rows = Arc::new(rows);
        let to_write = rows.clone();
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
            let refs: Vec<(&Vec<u8>, &Option<Vec<u8>>)> =
                to_write.iter().map(|(k, v)| (k, v)).collect();
            write_rows(&tx, &refs).await?;
            // Counted in the same transaction: another instance taking the
            // turn next sees that its cache is out of date.
            let generation: i64 = tx
                .query_one(
                    "UPDATE liaison_generation SET generation = generation + 1 RETURNING generation",
                    &[],
                )
                .await
                .map_err(e)?
                .get(0);
            tx.commit().await.map_err(e)?;
            Ok(generation)
        });
        match &written {
            Ok(generation) => self.cache().written(&rows, *generation),
            Err(_) => self.forget_cache(),
        }
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
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.is_empty() {
            // A block at a time: one round trip per ID_BLOCK mails. Ids an
            // instance never hands out (it stopped) are gaps, no harm.
            let inner = self.inner.clone();
            let block: Vec<i64> = self.run("numbering a mail", async move {
                let c = inner.client().await?;
                let rows = c
                    .query(
                        "SELECT nextval('liaison_ids') FROM generate_series(1, $1::bigint)",
                        &[&ID_BLOCK],
                    )
                    .await
                    .map_err(|e| pg_err("numbering a mail", e))?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })?;
            let mut block: Vec<u64> = block.into_iter().map(|id| id as u64).collect();
            block.sort_unstable();
            ids.extend(block);
        }
        Ok(ids.pop_front().expect("a block was taken above"))
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
        if self.locked.load(Ordering::SeqCst) && !self.writer_alive() {
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

    fn prefetches(&self) -> bool {
        true
    }

    fn prefetch(&self, keys: &[Vec<u8>], prefixes: &[Vec<u8>]) -> Result<()> {
        if !self.locked.load(Ordering::SeqCst) {
            // Nothing read outside a turn may be cached.
            return Ok(());
        }
        let (keys, prefixes, began) = {
            let cache = self.cache();
            let keys: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| !is_outbox_key(k) && !cache.records.contains_key(*k))
                .cloned()
                .collect();
            let prefixes: Vec<Vec<u8>> = prefixes
                .iter()
                .filter(|p| {
                    !may_hold_outbox(p)
                        && !cache.scans.contains_key(*p)
                        && matches!(super::prefix_range(p).1, Bound::Excluded(_))
                })
                .cloned()
                .collect();
            (keys, prefixes, cache.epoch)
        };
        if keys.is_empty() && prefixes.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let (asked, scanned) = (keys.clone(), prefixes.clone());
        let (records, scans) = self.run("reading the store", async move {
            let e = |err| pg_err("reading the store", err);
            let c = inner.client().await?;
            // Every prefix here has an end (only the empty prefix and
            // prefixes of 0xff bytes have none, filtered out below).
            let ends: Vec<Vec<u8>> = scanned
                .iter()
                .filter_map(|p| match super::prefix_range(p).1 {
                    Bound::Excluded(end) => Some(end),
                    _ => None,
                })
                .collect();
            // Both in one round trip. Each prefix gets at most PAGE rows;
            // a scan that fills them is left to be read when asked for.
            let (records, scan_rows) = tokio::join!(
                async {
                    if asked.is_empty() {
                        return Ok(Vec::new());
                    }
                    c.query(
                        "SELECT key, value FROM liaison_kv WHERE key = ANY($1)",
                        &[&asked],
                    )
                    .await
                },
                async {
                    if scanned.is_empty() {
                        return Ok(Vec::new());
                    }
                    c.query(
                        "SELECT p.i, k.key, k.value
                         FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS p(lo, hi, i)
                         CROSS JOIN LATERAL (
                             SELECT key, value FROM liaison_kv
                             WHERE key >= p.lo AND key < p.hi
                             ORDER BY key LIMIT $3
                         ) k
                         ORDER BY p.i, k.key",
                        &[&scanned, &ends, &(PAGE + 1)],
                    )
                    .await
                }
            );
            let records: HashMap<Vec<u8>, Vec<u8>> = records
                .map_err(e)?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let mut scans: Vec<Vec<Record>> = vec![Vec::new(); scanned.len()];
            for r in scans_rows(scan_rows.map_err(e)?) {
                if let Some(slot) = scans.get_mut(r.0) {
                    slot.push(r.1);
                }
            }
            Ok((records, scans))
        })?;
        let mut cache = self.cache();
        for k in keys {
            let value = records.get(&k).cloned();
            cache.fill(began, k, value);
        }
        for (prefix, rows) in prefixes.into_iter().zip(scans) {
            if (rows.len() as i64) <= PAGE {
                cache.fill_scan(began, prefix, rows);
            }
        }
        Ok(())
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
    fn the_read_cache_starts_afresh_when_someone_else_wrote() {
        let mut cache = ReadCache::default();
        // Nothing is kept before a turn says which flush count it is for.
        cache.fill(cache.epoch, b"k".to_vec(), Some(b"1".to_vec()));
        assert!(cache.records.is_empty());
        cache.turn_taken(7);
        cache.fill(cache.epoch, b"k".to_vec(), Some(b"1".to_vec()));
        // The same count at the next turn: kept.
        cache.turn_taken(7);
        assert_eq!(
            cache.records.get(b"k".as_slice()),
            Some(&Some(b"1".to_vec()))
        );
        // Own flush (7 → 8) writes through, outbox records left out.
        cache.written(
            &[
                (b"k".to_vec(), Some(b"2".to_vec())),
                (b"outq/x".to_vec(), Some(b"m".to_vec())),
            ],
            8,
        );
        assert_eq!(
            cache.records.get(b"k".as_slice()),
            Some(&Some(b"2".to_vec()))
        );
        assert!(!cache.records.contains_key(b"outq/x".as_slice()));
        cache.turn_taken(8);
        assert_eq!(cache.records.len(), 1);
        // Another instance flushed in between: 9 at the next turn.
        cache.turn_taken(9);
        assert!(cache.records.is_empty());
        // A flush that does not follow the known count clears too.
        cache.fill(cache.epoch, b"k".to_vec(), Some(b"3".to_vec()));
        cache.written(&[(b"j".to_vec(), None)], 11);
        assert!(cache.records.is_empty());
        assert_eq!(cache.generation, Some(11));
    }

    #[test]
    fn a_read_begun_before_a_write_through_is_not_cached() {
        let mut cache = ReadCache::default();
        cache.turn_taken(1);
        let began = cache.epoch;
        // A flush lands while the read is on its way; what it read is older.
        cache.written(&[(b"k".to_vec(), Some(b"new".to_vec()))], 2);
        cache.fill(began, b"k".to_vec(), Some(b"old".to_vec()));
        assert_eq!(
            cache.records.get(b"k".as_slice()),
            Some(&Some(b"new".to_vec()))
        );
    }

    #[test]
    fn the_read_cache_stays_within_its_bound() {
        let mut cache = ReadCache::default();
        cache.turn_taken(1);
        let value = vec![0u8; 1 << 20];
        for i in 0..(CACHE_BYTES / value.len() + 10) {
            cache.fill(
                cache.epoch,
                format!("k{i}").into_bytes(),
                Some(value.clone()),
            );
            assert!(cache.bytes <= CACHE_BYTES);
        }
        assert!(!cache.records.is_empty());
        // Still valid for the same flush count after starting afresh.
        assert_eq!(cache.generation, Some(1));
    }

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
