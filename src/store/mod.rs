//! Persistent state behind a small [`Store`] interface, with the sled
//! implementation [`SledStore`].
//!
//! The workflow only reads through [`StoreView`]; every write goes through
//! [`Store::commit`], which applies one [`Changes`] atomically: the new
//! relationship and invitation records, the mails to send (the outbox), the
//! processed-message marker and the inbox cursor all land together or not at
//! all. That is what makes "never lose, never duplicate" possible: a crash
//! either keeps a message's effects *and* its marker, or neither.
//!
//! Group commit: [`Store::commit`] only *stages* its changes in memory, where
//! every read of this store already sees them. [`Store::flush`] applies all
//! staged commits to sled as one atomic batch and makes it durable, so a
//! fetched chunk of hundreds of mails costs one write to disk, not hundreds
//! (sled 0.34 seals its log on every `apply_batch`, which was three syncs per
//! mail). A crash loses staged commits whole, never half of one; nothing
//! that depends on them (a sent mail, a message marked done on the IMAP
//! server) happens before the flush, so they are simply done again.
//! [`Store::flush`] must be called before anything that depends on
//! durability; callers batch commits and flush once.
//!
//! Layout: one sled tree, keys prefixed by record type, values JSON (except
//! `qraw/<key>`: a quarantined mail's raw bytes as they are, their total in
//! `meta/qraw_bytes`).
//! `rel/<partner>\0<customer>`, `inv/<id be>`, `thr/<message-id>` (sent
//! Message-ID → invitation id), `msg/<key>` (processed messages),
//! `cur/<inbox>`, `outq/<id be>` (pending mails), `outd/<not_before be><id be>`
//! (the pending mails by next attempt, so the sender reads only what is
//! due, in order), `outs/<id be>` (sent log),
//! `omid/<message-id>` (outbox id of a mail of an invitation or a ticket,
//! for [`StoreView::sent_mail`]), `tkt/<id be>` (tickets), `tth/<message-id>` (Message-ID → ticket id),
//! `held/<id be>` (mails a cap held back; the bytes of those kept whole in
//! `meta/held_bytes`), `rate/<address>/<hour>` and
//! `sreq/<customer>/<hour>` (reply and support-request counts per hour),
//! `hrep/<partner>/<hour>` (partner told that mails are held).
//! Derived from the relationships, written by the same commits and rebuilt
//! when missing: `cix/<customer>\0<partner>` (customer index),
//! `rsum/<partner>\0<customer>` (summaries for lists) and
//! `cnt/<partner>\0<state>` (how many relationships are in each state).

use liaison_core::effects::Result as ReadResult;
pub use liaison_core::effects::*;
use liaison_core::model::invitation::Invitation;
use liaison_core::model::relationship::{Relationship, RelationshipState, RelationshipSummary};
use liaison_core::model::ticket::Ticket;
use serde::Serialize;
use std::ops::Bound;
use std::path::Path;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, corruption, IO).
    #[error("store {path}: {source}")]
    Sled {
        /// Database folder.
        path: String,
        /// sled's error.
        source: sled::Error,
    },
    /// Another process (usually the running daemon) has the database open.
    #[error("store {path} is in use by another process (is the daemon running? the CLI then talks to it over {socket})")]
    Locked {
        /// Database folder.
        path: String,
        /// Where the daemon's admin socket would be.
        socket: String,
    },
    /// A record could not be decoded.
    #[error("store record {key} is corrupt: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What failed.
        reason: String,
    },
    /// A read through the [`StoreView`] interface failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// PostgreSQL failed (connection, query, transaction); never holds the
    /// URL's password.
    #[error("postgres store: {0}")]
    Postgres(String),
    /// The database's schema is newer than this binary knows.
    #[error("postgres store: the database has schema version {found}, this binary knows up to {known}; run the newer Liaison (or restore a backup into a new database)")]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest this binary can run.
        known: i64,
    },
    /// A commit needs a lease this instance does not hold.
    #[error("this instance does not hold the lease `{0}` (another instance owns it); not written")]
    NotOwner(String),
    /// A lease changed owner between the commit and the flush: this instance
    /// was paused or cut off past its lease; its batch was dropped.
    #[error("lost the lease `{0}` to another instance before the batch was written; the batch was dropped and will be redone by the new owner")]
    Fenced(String),
    /// The store dropped commits it could not make durable; see [`Store::lost`].
    #[error(
        "store lost commits it could not write ({0}); the daemon restarts its tasks to redo them"
    )]
    Lost(String),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, StoreError>;

pub mod pg;

/// Opens the configured store: the sled folder, or the PostgreSQL database
/// (migrated to this binary's schema first). `admin_socket` is named in the
/// error when a sled folder is held by a running daemon.
pub fn open(
    config: &liaison_core::config::StoreConfig,
    admin_socket: &Path,
) -> Result<std::sync::Arc<dyn Store>> {
    Ok(match &config.backend {
        liaison_core::config::StoreBackend::Sled => std::sync::Arc::new(SledStore::open(
            &config.path,
            config.cache_capacity_bytes,
            admin_socket,
        )?),
        liaison_core::config::StoreBackend::Postgres(pg) => pg::open(pg)?,
    })
}

/// Where the configured store is, for messages (never a URL's password).
pub fn describe(config: &liaison_core::config::StoreConfig) -> String {
    match &config.backend {
        liaison_core::config::StoreBackend::Sled => format!("sled {}", config.path.display()),
        liaison_core::config::StoreBackend::Postgres(pg) => {
            format!("postgres {}", pg::redacted(pg.url.expose()))
        }
    }
}

/// A decision's read failed: the core sees the backend's words only.
impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt { key, reason } => ReadError::Corrupt { key, reason },
            StoreError::Read(e) => e,
            other => ReadError::Backend(other.to_string()),
        }
    }
}

/// The whole store interface.
pub trait Store: StoreView + Send + Sync {
    /// Whether a message key was processed already.
    fn processed(&self, key: &str) -> Result<Option<Processed>>;
    /// An inbox's cursor.
    fn cursor(&self, inbox: &str) -> Result<Option<Cursor>>;
    /// Applies `changes` atomically; returns the outbox ids assigned.
    fn commit(&self, changes: Changes) -> Result<Vec<u64>>;
    /// Makes every commit so far durable.
    fn flush(&self) -> Result<()>;
    /// Pending outbox entries with id ≤ `up_to`, oldest first, at most `limit`.
    fn pending_outbox(&self, up_to: u64, limit: usize) -> Result<Vec<OutboxEntry>>;
    /// Pending entries with id ≤ `up_to` whose next attempt is due at `now`,
    /// earliest attempt first (then oldest), at most `limit`. Read through
    /// the next-attempt index: entries waiting on a retry are not looked at.
    fn due_outbox(&self, up_to: u64, now: u64, limit: usize) -> Result<Vec<OutboxEntry>>;
    /// The earliest next attempt (Unix seconds) of a pending entry with
    /// id ≤ `up_to`, if any.
    fn next_attempt(&self, up_to: u64) -> Result<Option<u64>>;
    /// How many entries are pending.
    fn outbox_len(&self) -> Result<u64>;
    /// Moves an entry from pending to the sent log; `error` is set when it
    /// failed for good.
    fn mark_sent(&self, id: u64, at: u64, error: Option<String>) -> Result<()>;
    /// Records a failed attempt and when to retry.
    fn mark_retry(&self, entry: &OutboxEntry) -> Result<()>;
    /// Highest outbox id ever assigned (0 when none).
    fn last_outbox_id(&self) -> Result<u64>;
    /// Replies sent to `address` in `hour` (hours since the epoch).
    fn replies_sent(&self, address: &str, hour: u64) -> Result<u32>;
    /// Support requests of `customer` passed in `hour`.
    fn support_requests(&self, customer: &str, hour: u64) -> Result<u32>;
    /// Whether `partner` was told in `hour` that mails are held.
    fn held_reported(&self, partner: &str, hour: u64) -> Result<bool>;
    /// Every held mail, oldest first.
    fn held(&self) -> Result<Vec<HeldMail>>;
    /// One held mail.
    fn held_mail(&self, id: u64) -> Result<Option<HeldMail>>;
    /// How many mails are held (without reading them).
    fn held_count(&self) -> Result<u64>;
    /// How many bytes the held mails kept whole take in total (those held
    /// before the counter existed are not counted).
    fn held_bytes(&self) -> Result<u64>;
    /// Records of messages that were quarantined, oldest first.
    fn quarantined(&self) -> Result<Vec<Processed>>;
    /// Counts for operators and tests.
    fn stats(&self) -> Result<Stats>;
    /// The raw bytes of a quarantined message, if they were kept.
    fn quarantined_raw(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// How many bytes the kept raw quarantined messages take in total.
    fn quarantined_raw_bytes(&self) -> Result<u64>;
    /// Every record, for a backup (`liaison export`).
    fn export(&self) -> Result<Vec<ExportRecord>>;
    /// Writes records from a backup (`liaison restore`) and flushes.
    fn import(&self, records: &[ExportRecord]) -> Result<()>;
    /// Whether the store holds no record at all.
    fn is_empty(&self) -> Result<bool>;
    /// Sent mails (most recent last), for inspection and tests.
    fn sent_log(&self) -> Result<Vec<OutboxEntry>>;

    // ---- several instances on one store ----------------------------------
    // A store of one process (sled) grants all of these at once; a shared
    // store (PostgreSQL) makes them mean something. The daemon calls them
    // the same way for both, so there is one code path.

    /// Called before a decision reads what it decides on; [`Store::end_decision`]
    /// after it committed (or gave up). A shared store makes decisions of
    /// all instances take turns: from the first `begin_decision` after a
    /// flush until the next flush, no other instance decides, so what this
    /// one read stays true until its writes land.
    fn begin_decision(&self) -> Result<()> {
        Ok(())
    }
    /// Whether [`Store::prefetch`] is worth a parse ahead of the decisions
    /// (a store across a network; sled reads in memory).
    fn prefetches(&self) -> bool {
        false
    }
    /// Reads at once what deciding `mails` will probably read (their
    /// processed markers, the threads they refer to, the relationships of
    /// their senders), so the decisions find it cached. Only a hint: a read
    /// it misses is read when asked for. Call under a decision turn.
    fn prefetch(&self, mails: &[&liaison_core::mail::inbound::InboundMail]) -> Result<()> {
        let _ = mails;
        Ok(())
    }
    /// The end of what [`Store::begin_decision`] began.
    fn end_decision(&self) {}
    /// Takes, or renews, the lease `name` (see [`inbox_lease`],
    /// [`SWEEP_LEASE`], [`GRAPH_LEASE`]) for this instance; `Some(fencing
    /// token)` while this instance holds it, `None` while another does. The
    /// token grows with each new owner. A commit that advances an inbox's
    /// cursor needs that inbox's lease, and a flush fails if the lease
    /// changed owner meanwhile (an instance paused past its lease can no
    /// longer write).
    fn acquire_lease(&self, name: &str) -> Result<Option<u64>> {
        let _ = name;
        Ok(Some(1))
    }
    /// Gives a lease up (clean shutdown, or an inbox stopped), so another
    /// instance takes over at once instead of after the lease runs out.
    fn release_lease(&self, name: &str) -> Result<()> {
        let _ = name;
        Ok(())
    }
    /// Like [`Store::due_outbox`], but each entry returned is claimed for
    /// this instance for a while, so no other instance sends it meanwhile.
    fn claim_due(&self, up_to: u64, now: u64, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.due_outbox(up_to, now, limit)
    }
    /// Set when other instances may share this store: how long a lease
    /// lasts. The outbox then also polls for mail others queued.
    fn shared(&self) -> Option<Shared> {
        None
    }
    /// Why the store gave up for good, if it did: it had to drop commits it
    /// could not make durable (it lost a lease, or the database, in the
    /// middle of a batch). The daemon then restarts all its tasks, which
    /// redo that work from what is durable.
    fn lost(&self) -> Option<String> {
        None
    }
}

/// What a shared store tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// How long a lease lasts without renewal (`[store] lease_secs`).
    pub lease: std::time::Duration,
    /// This instance's name in the lease table (host, process, start).
    pub instance: String,
}

/// The lease of an inbox: its owner alone fetches and processes its mail.
pub fn inbox_lease(inbox: &str) -> String {
    format!("inbox/{inbox}")
}

/// The lease of the timer sweep: one instance at a time runs it.
pub const SWEEP_LEASE: &str = "sweep";

/// The lease of the Microsoft Graph (GDAP) follower.
pub const GRAPH_LEASE: &str = "graph";

/// The writes of one commit, in order; a later write to a key wins.
#[derive(Default)]
struct WriteSet(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl WriteSet {
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.push((key, Some(value)));
    }

    fn remove(&mut self, key: Vec<u8>) {
        self.0.push((key, None));
    }
}

/// The store's records and rules over an ordered key-value [`Backend`]:
/// sled ([`SledStore`]) or PostgreSQL ([`pg::PgStore`]). Everything about
/// keys, derived records, the outbox index and group commit is here, once.
pub struct KvStore<B: Backend> {
    backend: B,
    /// Writes committed since the last flush, not yet in the backend: key →
    /// new value, or `None` for a removal. Reads look here first.
    staged: std::sync::Mutex<Staged>,
}

/// The sled-backed store: one process, one folder.
pub type SledStore = KvStore<sled_backend::SledBackend>;

/// Staged writes: key → new value, or `None` for a removal.
pub type Staged = std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One staged write: key and new value, or `None` for a removal.
pub type StagedWrite = (Vec<u8>, Option<Vec<u8>>);

/// One record as a backend returns it.
pub type Record = (Vec<u8>, Vec<u8>);

/// Records in key order, as a backend streams them.
pub type Records<'a> = Box<dyn Iterator<Item = Result<Record>> + 'a>;

/// What [`KvStore`] needs from a storage engine: ordered keys (bytewise),
/// atomic batches, and ids. The several-instance hooks have single-process
/// defaults.
pub trait Backend: Send + Sync {
    /// One record.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Several records, in the order of `keys`. A backend across a network
    /// reads them in one round trip; the default reads them one by one.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// The records in `range`, in key order.
    fn range(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Records<'_>;
    /// Writes every staged write in one atomic batch (durable once
    /// [`Backend::sync`] returned).
    fn apply(&self, writes: &Staged) -> Result<()>;
    /// Makes what was applied durable.
    fn sync(&self) -> Result<()>;
    /// A flush found nothing staged.
    fn nothing_to_apply(&self) -> Result<()> {
        Ok(())
    }
    /// A new id (outbox entries, held mails): unique, and increasing within
    /// one instance (a shared store hands out blocks per instance).
    fn next_id(&self) -> Result<u64>;
    /// Whether a failed [`Backend::apply`] drops the staged batch (a shared
    /// store cannot retry it: what it was decided on may have changed) or
    /// keeps it for the next flush (one process).
    fn drops_failed_batches(&self) -> bool {
        false
    }
    /// Writes one outbox entry's bookkeeping (sent, retry) at once and
    /// returns true, or returns false to have it staged with the rest. A
    /// shared store writes it at once: a sender needs no decision turn.
    fn write_now(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<bool> {
        let _ = writes;
        Ok(false)
    }
    /// A commit needs the lease `name` (it advances that inbox's cursor).
    fn require_lease(&self, name: &str) -> Result<()> {
        let _ = name;
        Ok(())
    }
    /// See [`Store::begin_decision`]; `pending` says whether commits are
    /// staged (made under an earlier part of this turn).
    fn begin_decision(&self, pending: bool) -> Result<()> {
        let _ = pending;
        Ok(())
    }
    /// See [`Store::end_decision`].
    fn end_decision(&self) {}
    /// See [`Store::acquire_lease`].
    fn acquire_lease(&self, name: &str) -> Result<Option<u64>> {
        let _ = name;
        Ok(Some(1))
    }
    /// See [`Store::release_lease`].
    fn release_lease(&self, name: &str) -> Result<()> {
        let _ = name;
        Ok(())
    }
    /// Claims due outbox records (`outq/` key and value) for this instance,
    /// or `None` when the store has no claims (one process).
    fn claim_due(&self, now: u64, limit: usize) -> Result<Option<Vec<Record>>> {
        let _ = (now, limit);
        Ok(None)
    }
    /// See [`Store::shared`].
    fn shared(&self) -> Option<Shared> {
        None
    }
    /// See [`Store::lost`].
    fn lost(&self) -> Option<String> {
        None
    }
    /// Whether reads are worth prefetching (see [`Store::prefetches`]).
    fn prefetches(&self) -> bool {
        false
    }
    /// Reads `keys` and the whole scans of `prefixes` into a read cache, in
    /// as few round trips as it can.
    fn prefetch(&self, keys: &[Vec<u8>], prefixes: &[Vec<u8>]) -> Result<()> {
        let _ = (keys, prefixes);
        Ok(())
    }
}

mod sled_backend;

/// The keys that start with `prefix`, as a range.
fn prefix_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

/// sled's records in a key range with the staged writes laid over them, in
/// key order: a staged value replaces sled's, a staged removal hides it.
struct Overlaid<I: Iterator<Item = Result<Record>>> {
    tree: std::iter::Peekable<I>,
    staged: std::iter::Peekable<std::vec::IntoIter<StagedWrite>>,
}

impl<I: Iterator<Item = Result<Record>>> Iterator for Overlaid<I> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.tree.peek(), self.staged.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(Ok((tk, _))), Some((sk, _))) => tk.as_slice().cmp(sk.as_slice()),
            };
            if order == std::cmp::Ordering::Less {
                return self.tree.next();
            }
            if order == std::cmp::Ordering::Equal {
                // Staged wins over what sled holds for the same key.
                self.tree.next();
            }
            let (k, v) = self.staged.next().expect("peeked");
            if let Some(v) = v {
                return Some(Ok((k, v)));
            }
        }
    }
}

/// The keys of `keys` whose slot in `found` (same order) is still empty.
fn still_missing<T>(keys: &[Vec<u8>], found: &[Option<T>]) -> Vec<Vec<u8>> {
    keys.iter()
        .zip(found)
        .filter(|(_, f)| f.is_none())
        .map(|(k, _)| k.clone())
        .collect()
}

fn rel_key(partner: &str, customer: &str) -> Vec<u8> {
    format!("rel/{partner}\0{customer}").into_bytes()
}

/// `cix/<customer>\0`: the customer index, customer → partners.
fn cix_prefix(customer: &str) -> Vec<u8> {
    format!("cix/{customer}\0").into_bytes()
}

fn rsum_key(partner: &str, customer: &str) -> Vec<u8> {
    format!("rsum/{partner}\0{customer}").into_bytes()
}

fn cnt_key(partner: &str, state: RelationshipState) -> Vec<u8> {
    format!("cnt/{partner}\0{}", state.as_str()).into_bytes()
}

/// Version of the derived records (`cix/`, `rsum/`, `cnt/`); a store with
/// an older one gets them rebuilt when opened.
const DERIVED_VERSION: u32 = 2;

/// `outd/<not_before be><id be>`: the next-attempt index of the outbox.
fn due_key(not_before: u64, id: u64) -> Vec<u8> {
    let mut k = b"outd/".to_vec();
    k.extend_from_slice(&not_before.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The (not_before, id) of a `outd/` key.
fn parse_due_key(k: &[u8]) -> Option<(u64, u64)> {
    let rest = k.strip_prefix(b"outd/")?;
    if rest.len() != 16 {
        return None;
    }
    let nb = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let id = u64::from_be_bytes(rest[8..].try_into().ok()?);
    Some((nb, id))
}

/// The value of an `outd/` record: the key says everything; JSON `null`
/// keeps every record decodable (for `export`).
const DUE_VALUE: &[u8] = b"null";

/// Version of the outbox's next-attempt index; a store without it (written
/// by an earlier Liaison) gets it built when opened.
const DUE_INDEX_VERSION: u32 = 1;

fn id_key(prefix: &str, id: u64) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl SledStore {
    /// Opens (creating if needed) the database at `path`. `admin_socket` is
    /// only named in the error when the database is locked.
    pub fn open(path: &Path, cache_capacity_bytes: u64, admin_socket: &Path) -> Result<Self> {
        KvStore::with_backend(sled_backend::SledBackend::open(
            path,
            cache_capacity_bytes,
            admin_socket,
        )?)
    }
}

impl<B: Backend> KvStore<B> {
    /// The store over an opened backend; brings derived records and the
    /// outbox index up to this version's layout.
    pub fn with_backend(backend: B) -> Result<Self> {
        let store = KvStore {
            backend,
            staged: Default::default(),
        };
        // A turn, as for any decision: another instance opening the same
        // shared store at once must not rebuild from what this one changes.
        store.backend.begin_decision(false)?;
        let built = store.bring_up_to_date();
        store.backend.end_decision();
        built?;
        store.flush()?;
        Ok(store)
    }

    fn bring_up_to_date(&self) -> Result<()> {
        self.build_derived()?;
        if self.get::<u32>(b"meta/due_index")? != Some(DUE_INDEX_VERSION) {
            self.rebuild_due_index()?;
            self.flush()?;
        }
        Ok(())
    }

    /// How many of `partner`'s relationships are in `state` (in any state
    /// when `None`), from the counters.
    fn summary_count(&self, partner: &str, state: Option<RelationshipState>) -> Result<usize> {
        let n = match state {
            Some(s) => self.get::<u64>(&cnt_key(partner, s))?.unwrap_or(0),
            None => {
                let mut n = 0u64;
                for kv in self.scan_raw(format!("cnt/{partner}\0").as_bytes()) {
                    let (k, v) = kv?;
                    n += decode::<u64>(&k, &v)?;
                }
                n
            }
        };
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The backend underneath.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Writes the outbox's next-attempt index anew from the pending entries
    /// (staged).
    fn rebuild_due_index(&self) -> Result<()> {
        let mut batch = WriteSet::default();
        for kv in self.scan_raw(b"outd/") {
            batch.remove(kv?.0.to_vec());
        }
        for e in self.scan::<OutboxEntry>(b"outq/")? {
            batch.insert(due_key(e.not_before, e.id), DUE_VALUE.to_vec());
        }
        batch.insert(b"meta/due_index".to_vec(), encode(&DUE_INDEX_VERSION));
        self.stage(batch.0);
        Ok(())
    }

    /// Rebuilds the records derived from the relationships (customer
    /// index, summaries, counts) when they are missing or from an older
    /// version: a store written by an earlier Liaison gets them on open.
    fn build_derived(&self) -> Result<()> {
        if self.get::<u32>(b"meta/derived")? == Some(DERIVED_VERSION) {
            return Ok(());
        }
        self.rebuild_derived()?;
        self.flush()
    }

    /// Writes the derived records anew from the relationships (staged).
    fn rebuild_derived(&self) -> Result<()> {
        let mut removals = WriteSet::default();
        for prefix in [&b"cix/"[..], b"rsum/", b"cnt/"] {
            for kv in self.scan_raw(prefix) {
                removals.remove(kv?.0.to_vec());
            }
        }
        // Staged first, so the counters below start from nothing.
        self.stage(removals.0);
        let rels = self.scan::<Relationship>(b"rel/")?;
        let with_old: Vec<(&Relationship, Option<RelationshipState>)> =
            rels.iter().map(|r| (r, None)).collect();
        let mut batch = WriteSet::default();
        self.derived_writes(&mut batch, &with_old)?;
        batch.insert(b"meta/derived".to_vec(), encode(&DERIVED_VERSION));
        self.stage(batch.0);
        Ok(())
    }

    /// The derived records' writes for relationships being stored, given
    /// each one's previous state (`None` when new). Counters are read
    /// through the staged writes, so earlier commits not yet flushed count.
    fn derived_writes(
        &self,
        batch: &mut WriteSet,
        rels: &[(&Relationship, Option<RelationshipState>)],
    ) -> Result<()> {
        let mut deltas: std::collections::BTreeMap<Vec<u8>, i64> = Default::default();
        for (r, old) in rels {
            let mut ix = cix_prefix(&r.customer);
            ix.extend_from_slice(r.partner.as_bytes());
            batch.insert(ix, encode(&r.partner));
            batch.insert(
                rsum_key(&r.partner, &r.customer),
                encode(&RelationshipSummary::from(*r)),
            );
            if *old != Some(r.state) {
                if let Some(old) = old {
                    *deltas.entry(cnt_key(&r.partner, *old)).or_default() -= 1;
                }
                *deltas.entry(cnt_key(&r.partner, r.state)).or_default() += 1;
            }
        }
        let moved: Vec<(Vec<u8>, i64)> = deltas.into_iter().filter(|(_, d)| *d != 0).collect();
        let keys: Vec<Vec<u8>> = moved.iter().map(|(k, _)| k.clone()).collect();
        for ((key, delta), current) in moved.into_iter().zip(self.get_many::<u64>(&keys)?) {
            let now = (current.unwrap_or(0) as i64 + delta).max(0) as u64;
            batch.insert(key, encode(&now));
        }
        Ok(())
    }

    /// Stages `key`'s byte count (quarantined raw mail, held mail) moved by
    /// `delta`, never below zero; nothing when it does not move.
    fn add_to_byte_count(&self, batch: &mut WriteSet, key: &[u8], delta: i64) -> Result<()> {
        if delta != 0 {
            let now = self.get::<u64>(key)?.unwrap_or(0) as i64 + delta;
            batch.insert(key.to_vec(), encode(&(now.max(0) as u64)));
        }
        Ok(())
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        // A panic while the lock was held cannot leave the map half-written
        // (every change to it is a single insert or a clear).
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stages writes; they become durable with the next flush.
    fn stage(&self, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let mut staged = self.staged();
        for (k, v) in writes {
            staged.insert(k, v);
        }
    }

    /// Applies every staged write to the backend in one atomic batch (with
    /// sled not yet synced to disk). With one process the staged writes are
    /// kept if that fails, for the next flush; a shared store drops them
    /// (see [`Backend::drops_failed_batches`]).
    fn apply_staged(&self) -> Result<()> {
        let mut staged = self.staged();
        if staged.is_empty() {
            // A shared store may still hold the turn of a decision that
            // wrote nothing; a flush ends it.
            return self.backend.nothing_to_apply();
        }
        // Applied while the lock is held: a reader never finds a write
        // neither staged nor in the backend.
        match self.backend.apply(&staged) {
            Ok(()) => {
                staged.clear();
                Ok(())
            }
            Err(e) => {
                if self.backend.drops_failed_batches() {
                    staged.clear();
                }
                Err(e)
            }
        }
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.staged().get(key) {
            return Ok(v.clone());
        }
        self.backend.get(key)
    }

    /// Several records, staged writes first, the rest from the backend in
    /// one call; in the order of `keys`.
    fn get_many_raw(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut found: Vec<Option<Option<Vec<u8>>>> = {
            let staged = self.staged();
            keys.iter().map(|k| staged.get(k).cloned()).collect()
        };
        let missing = still_missing(keys, &found);
        if !missing.is_empty() {
            let mut read = self.backend.get_many(&missing)?.into_iter();
            for slot in found.iter_mut().filter(|f| f.is_none()) {
                *slot = Some(read.next().flatten());
            }
        }
        Ok(found.into_iter().map(Option::flatten).collect())
    }

    /// Several decoded records, in the order of `keys`.
    fn get_many<T: serde::de::DeserializeOwned>(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<T>>> {
        keys.iter()
            .zip(self.get_many_raw(keys)?)
            .map(|(k, v)| v.map(|v| decode(k, &v)).transpose())
            .collect()
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.get_raw(key)? {
            Some(v) => decode(key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Records in `range`, staged writes included, in key order.
    fn range(
        &self,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> impl Iterator<Item = Result<Record>> + '_ {
        let staged: Vec<(Vec<u8>, Option<Vec<u8>>)> = self
            .staged()
            .range(range.clone())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Overlaid {
            tree: self.backend.range(range).peekable(),
            staged: staged.into_iter().peekable(),
        }
    }

    fn scan_raw(&self, prefix: &[u8]) -> impl Iterator<Item = Result<Record>> + '_ {
        self.range(prefix_range(prefix))
    }

    fn scan<T: serde::de::DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>> {
        self.scan_raw(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }
}

impl<B: Backend> Drop for KvStore<B> {
    /// A store dropped with staged commits (a caller that forgot to flush)
    /// still writes them; a crash is the only way to lose them.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "could not write the store's last commits on close");
        }
    }
}

/// The state of a summary, read without the rest of it.
#[derive(serde::Deserialize)]
struct StateOnly {
    state: RelationshipState,
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// A raw quarantined mail kept as a JSON string of base64.
fn legacy_raw(key: &str, value: &[u8]) -> Result<Vec<u8>> {
    let b64: String = decode(key.as_bytes(), value)?;
    data_encoding::BASE64
        .decode(b64.as_bytes())
        .map_err(|e| StoreError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records always serialise")
}

impl<B: Backend> StoreView for KvStore<B> {
    fn outbox_pending(&self) -> ReadResult<u64> {
        Ok(self.scan_raw(b"outd/").count() as u64)
    }

    fn relationship(&self, partner: &str, customer: &str) -> ReadResult<Option<Relationship>> {
        Ok(self.get(&rel_key(partner, customer))?)
    }

    fn relationships_of(&self, partner: &str) -> ReadResult<Vec<Relationship>> {
        Ok(self.scan(format!("rel/{partner}\0").as_bytes())?)
    }

    fn relationships_with(&self, customer: &str) -> ReadResult<Vec<Relationship>> {
        // Through the customer index: every customer mail without a
        // reference asks this, and a scan of all relationships made that
        // cost grow with the whole store (0.6 s at 100 000 relationships).
        let mut out = Vec::new();
        for kv in self.scan_raw(&cix_prefix(customer)) {
            let (k, v) = kv?;
            let partner: String = decode(&k, &v)?;
            if let Some(r) = self.relationship(&partner, customer)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn invitation(&self, id: u64) -> ReadResult<Option<Invitation>> {
        Ok(self.get(&id_key("inv/", id))?)
    }

    fn invitations(&self, ids: &[u64]) -> ReadResult<Vec<Option<Invitation>>> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| id_key("inv/", *id)).collect();
        Ok(self.get_many(&keys)?)
    }

    fn relationships_by_key(&self, keys: &[(&str, &str)]) -> ReadResult<Vec<Option<Relationship>>> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|(p, c)| rel_key(p, c)).collect();
        Ok(self.get_many(&keys)?)
    }

    fn invitation_by_message_id(&self, message_id: &str) -> ReadResult<Option<u64>> {
        Ok(self.get(format!("thr/{message_id}").as_bytes())?)
    }

    fn all_relationships(&self) -> ReadResult<Vec<Relationship>> {
        Ok(self.scan(b"rel/")?)
    }

    fn relationship_summaries_of(&self, partner: &str) -> ReadResult<Vec<RelationshipSummary>> {
        Ok(self.scan(format!("rsum/{partner}\0").as_bytes())?)
    }

    fn relationship_summaries_page(
        &self,
        partner: &str,
        state: Option<RelationshipState>,
        skip: usize,
        limit: usize,
    ) -> ReadResult<SummaryPage> {
        // The total from the counters, which every commit keeps with the
        // summaries; the rows from the summaries in key order, stopping at
        // the end of the page. Only the page's rows are decoded whole.
        let total = self.summary_count(partner, state)?;
        let mut rows = Vec::with_capacity(limit.min(total));
        let mut before = 0usize;
        for kv in self.scan_raw(format!("rsum/{partner}\0").as_bytes()) {
            if rows.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            if let Some(wanted) = state {
                if decode::<StateOnly>(&k, &v)?.state != wanted {
                    continue;
                }
            }
            if before < skip {
                before += 1;
                continue;
            }
            rows.push(decode(&k, &v)?);
        }
        Ok(SummaryPage { total, rows })
    }

    fn all_relationship_summaries(&self) -> ReadResult<Vec<RelationshipSummary>> {
        Ok(self.scan(b"rsum/")?)
    }

    fn relationship_summaries_after(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> ReadResult<Vec<RelationshipSummary>> {
        let (start, end) = prefix_range(b"rsum/");
        let start = match after {
            Some((partner, customer)) => Bound::Excluded(rsum_key(partner, customer)),
            None => start,
        };
        // `take` stops the scan: on PostgreSQL a page of `limit` (up to
        // the backend's page) is one round trip.
        Ok(self
            .range((start, end))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect::<Result<Vec<_>>>()?)
    }

    fn relationship_counts(&self) -> ReadResult<Vec<(String, RelationshipState, u64)>> {
        let mut out = Vec::new();
        for kv in self.scan_raw(b"cnt/") {
            let (k, v) = kv?;
            let n: u64 = decode(&k, &v)?;
            let key = String::from_utf8_lossy(&k[b"cnt/".len()..]).into_owned();
            let (partner, state) = key.split_once('\0').unwrap_or((&key, ""));
            let state = RelationshipState::parse(state).ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: format!("`{state}` is not a state"),
            })?;
            if n > 0 {
                out.push((partner.to_string(), state, n));
            }
        }
        Ok(out)
    }

    fn ticket(&self, id: u64) -> ReadResult<Option<Ticket>> {
        Ok(self.get(&id_key("tkt/", id))?)
    }

    fn ticket_by_message_id(&self, message_id: &str) -> ReadResult<Option<u64>> {
        Ok(self.get(format!("tth/{message_id}").as_bytes())?)
    }

    fn tickets_of(&self, partner: &str) -> ReadResult<Vec<Ticket>> {
        Ok(self
            .scan::<Ticket>(b"tkt/")?
            .into_iter()
            .filter(|t| t.partner == partner)
            .collect())
    }

    fn last_ticket_id(&self) -> ReadResult<u64> {
        Ok(self.get(b"meta/last_ticket_id")?.unwrap_or(0))
    }

    fn sent_mail(&self, message_id: &str) -> ReadResult<Option<OutgoingMail>> {
        let Some(id) = self.get::<u64>(format!("omid/{message_id}").as_bytes())? else {
            return Ok(None);
        };
        // Pending in the outbox, or moved to the sent log once delivered.
        for prefix in ["outq/", "outs/"] {
            if let Some(e) = self.get::<OutboxEntry>(&id_key(prefix, id))? {
                return Ok(Some(e.mail));
            }
        }
        Ok(None)
    }
}

impl<B: Backend> Store for KvStore<B> {
    fn processed(&self, key: &str) -> Result<Option<Processed>> {
        self.get(format!("msg/{key}").as_bytes())
    }

    fn cursor(&self, inbox: &str) -> Result<Option<Cursor>> {
        self.get(format!("cur/{inbox}").as_bytes())
    }

    fn commit(&self, changes: Changes) -> Result<Vec<u64>> {
        if let Some(reason) = self.backend.lost() {
            return Err(StoreError::Lost(reason));
        }
        if let Some((inbox, _)) = &changes.cursor {
            // Only the inbox's owner may move its cursor (several instances).
            self.backend.require_lease(&inbox_lease(inbox))?;
        }
        let mut batch = WriteSet::default();
        // Removals first: a released message's new record replaces the old.
        let mut raw_delta = 0i64;
        for key in &changes.released {
            batch.remove(format!("msg/{key}").into_bytes());
            let qkey = format!("qraw/{key}").into_bytes();
            if let Some(old) = self.get_raw(&qkey)? {
                raw_delta -= old.len() as i64;
            }
            batch.remove(qkey);
        }
        for (key, raw) in &changes.quarantined_raw {
            // Raw bytes as they are: a JSON string of base64 cost 4/3 of
            // the mail plus a copy to encode it.
            batch.insert(format!("qraw/{key}").into_bytes(), raw.clone());
            raw_delta += raw.len() as i64;
        }
        self.add_to_byte_count(&mut batch, b"meta/qraw_bytes", raw_delta)?;
        let mut with_old = Vec::with_capacity(changes.relationships.len());
        let mut seen: std::collections::HashMap<(&str, &str), RelationshipState> =
            Default::default();
        // The stored summaries, read in one call (one round trip on a
        // shared store).
        let summary_keys: Vec<Vec<u8>> = changes
            .relationships
            .iter()
            .map(|r| rsum_key(&r.partner, &r.customer))
            .collect();
        let stored: std::collections::HashMap<Vec<u8>, RelationshipState> = summary_keys
            .iter()
            .cloned()
            .zip(self.get_many::<RelationshipSummary>(&summary_keys)?)
            .filter_map(|(k, s)| Some((k, s?.state)))
            .collect();
        for (r, summary_key) in changes.relationships.iter().zip(&summary_keys) {
            batch.insert(rel_key(&r.partner, &r.customer), encode(r));
            // The state before this commit: from an earlier entry of this
            // same commit, or from the stored summary.
            let old = match seen.get(&(r.partner.as_str(), r.customer.as_str())) {
                Some(s) => Some(*s),
                None => stored.get(summary_key).copied(),
            };
            seen.insert((&r.partner, &r.customer), r.state);
            with_old.push((r, old));
        }
        self.derived_writes(&mut batch, &with_old)?;
        for i in &changes.invitations {
            batch.insert(id_key("inv/", i.id), encode(i));
        }
        let mut last_ticket = None;
        for t in &changes.tickets {
            batch.insert(id_key("tkt/", t.id), encode(t));
            for mid in &t.message_ids {
                // First writer wins: a thread's Message-ID belongs to the
                // ticket that first recorded it. Inbound Message-IDs are the
                // sender's choice, so a later mail reusing one must not
                // re-route another ticket's replies to its own ticket.
                let key = format!("tth/{mid}").into_bytes();
                match self.get::<u64>(&key)? {
                    Some(owner) if owner != t.id => {}
                    _ => batch.insert(key, encode(&t.id)),
                }
            }
            last_ticket = last_ticket.max(Some(t.id));
        }
        if let Some(t) = last_ticket {
            if t > self.last_ticket_id()? {
                batch.insert(b"meta/last_ticket_id".to_vec(), encode(&t));
            }
        }
        let mut ids = Vec::new();
        for mail in changes.outbox {
            let id = self.backend.next_id()?;
            if let Some(inv) = mail.invitation {
                batch.insert(
                    format!("thr/{}", mail.message_id).into_bytes(),
                    encode(&inv),
                );
            }
            if let Some(t) = mail.ticket {
                batch.insert(format!("tth/{}", mail.message_id).into_bytes(), encode(&t));
            }
            if mail.invitation.is_some() || mail.ticket.is_some() {
                // What a customer may quote back: the reply splitter finds
                // the copy by its content (StoreView::sent_mail).
                batch.insert(
                    format!("omid/{}", mail.message_id).into_bytes(),
                    encode(&id),
                );
            }
            let entry = OutboxEntry {
                id,
                mail,
                attempts: 0,
                not_before: 0,
                last_error: None,
                delivered: vec![],
                refused: vec![],
            };
            batch.insert(id_key("outq/", id), encode(&entry));
            batch.insert(due_key(0, id), DUE_VALUE.to_vec());
            ids.push(id);
        }
        for p in &changes.processed {
            batch.insert(format!("msg/{}", p.key).into_bytes(), encode(p));
        }
        let mut held_delta = 0i64;
        for h in changes.held {
            let id = self.backend.next_id()?;
            held_delta += h.mail.raw.len() as i64;
            let held = HeldMail {
                id,
                at: h.at,
                reason: h.reason,
                partner: h.partner,
                mail: h.mail,
                kept: h.kept,
            };
            batch.insert(id_key("held/", id), encode(&held));
        }
        for id in &changes.released_held {
            if let Some(old) = self.held_mail(*id)? {
                held_delta -= old.mail.raw.len() as i64;
            }
            batch.remove(id_key("held/", *id));
        }
        self.add_to_byte_count(&mut batch, b"meta/held_bytes", held_delta)?;
        for (partner, hour) in &changes.held_reported {
            batch.insert(format!("hrep/{partner}/{hour}").into_bytes(), encode(&true));
        }
        let mut rates: std::collections::BTreeMap<String, u32> = Default::default();
        for (addr, hour) in &changes.replies {
            *rates.entry(format!("rate/{addr}/{hour}")).or_default() += 1;
        }
        for (customer, hour) in &changes.support_requests {
            *rates.entry(format!("sreq/{customer}/{hour}")).or_default() += 1;
        }
        for (k, n) in rates {
            // Read-modify-write is safe: commits are serialised by the engine.
            let cur: u32 = self.get(k.as_bytes())?.unwrap_or(0);
            batch.insert(k.into_bytes(), encode(&(cur + n)));
        }
        if let Some((inbox, cursor)) = &changes.cursor {
            batch.insert(format!("cur/{inbox}").into_bytes(), encode(cursor));
        }
        if let Some(&last) = ids.last() {
            batch.insert(b"meta/last_outbox_id".to_vec(), encode(&last));
        }
        self.stage(batch.0);
        Ok(ids)
    }

    fn flush(&self) -> Result<()> {
        self.apply_staged()?;
        self.backend.sync()
    }

    fn pending_outbox(&self, up_to: u64, limit: usize) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let range = (
            Bound::Included(id_key("outq/", 0)),
            Bound::Included(id_key("outq/", up_to)),
        );
        for kv in self.range(range) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    fn due_outbox(&self, up_to: u64, now: u64, limit: usize) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let range = (
            Bound::Included(due_key(0, 0)),
            Bound::Included(due_key(now, u64::MAX)),
        );
        for kv in self.range(range) {
            let (k, _) = kv?;
            let Some((_, id)) = parse_due_key(&k) else {
                continue;
            };
            if id > up_to {
                // Not durable yet: its cause could still be lost.
                continue;
            }
            if let Some(e) = self.get::<OutboxEntry>(&id_key("outq/", id))? {
                out.push(e);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn next_attempt(&self, up_to: u64) -> Result<Option<u64>> {
        for kv in self.scan_raw(b"outd/") {
            let (k, _) = kv?;
            if let Some((nb, id)) = parse_due_key(&k) {
                if id <= up_to {
                    return Ok(Some(nb));
                }
            }
        }
        Ok(None)
    }

    fn outbox_len(&self) -> Result<u64> {
        Ok(self.scan_raw(b"outd/").count() as u64)
    }

    fn mark_sent(&self, id: u64, at: u64, error: Option<String>) -> Result<()> {
        let Some(mut entry) = self.get::<OutboxEntry>(&id_key("outq/", id))? else {
            return Ok(());
        };
        let indexed = due_key(entry.not_before, id);
        entry.not_before = at;
        entry.attempts += 1;
        entry.last_error = error;
        let writes = vec![
            (id_key("outq/", id), None),
            (indexed, None),
            (id_key("outs/", id), Some(encode(&entry))),
        ];
        if !self.backend.write_now(&writes)? {
            self.stage(writes);
        }
        Ok(())
    }

    fn mark_retry(&self, entry: &OutboxEntry) -> Result<()> {
        let Some(old) = self.get::<OutboxEntry>(&id_key("outq/", entry.id))? else {
            // Sent meanwhile: nothing to retry.
            return Ok(());
        };
        let writes = vec![
            (due_key(old.not_before, entry.id), None),
            (id_key("outq/", entry.id), Some(encode(entry))),
            (
                due_key(entry.not_before, entry.id),
                Some(DUE_VALUE.to_vec()),
            ),
        ];
        if !self.backend.write_now(&writes)? {
            self.stage(writes);
        }
        Ok(())
    }

    fn last_outbox_id(&self) -> Result<u64> {
        Ok(self.get(b"meta/last_outbox_id")?.unwrap_or(0))
    }

    fn replies_sent(&self, address: &str, hour: u64) -> Result<u32> {
        Ok(self
            .get(format!("rate/{address}/{hour}").as_bytes())?
            .unwrap_or(0))
    }

    fn support_requests(&self, customer: &str, hour: u64) -> Result<u32> {
        Ok(self
            .get(format!("sreq/{customer}/{hour}").as_bytes())?
            .unwrap_or(0))
    }

    fn held_reported(&self, partner: &str, hour: u64) -> Result<bool> {
        Ok(self
            .get::<bool>(format!("hrep/{partner}/{hour}").as_bytes())?
            .unwrap_or(false))
    }

    fn held(&self) -> Result<Vec<HeldMail>> {
        self.scan(b"held/")
    }

    fn held_mail(&self, id: u64) -> Result<Option<HeldMail>> {
        self.get(&id_key("held/", id))
    }

    fn held_count(&self) -> Result<u64> {
        Ok(self.scan_raw(b"held/").count() as u64)
    }

    fn held_bytes(&self) -> Result<u64> {
        Ok(self.get(b"meta/held_bytes")?.unwrap_or(0))
    }

    fn quarantined_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let qkey = format!("qraw/{key}");
        let Some(value) = self.get_raw(qkey.as_bytes())? else {
            return Ok(None);
        };
        if value.first() == Some(&b'"') {
            // Written by an older version: a JSON string of base64 (no mail
            // starts with a quote; a header name cannot contain one).
            return legacy_raw(&qkey, &value).map(Some);
        }
        Ok(Some(value.to_vec()))
    }

    fn quarantined_raw_bytes(&self) -> Result<u64> {
        Ok(self.get(b"meta/qraw_bytes")?.unwrap_or(0))
    }

    fn export(&self) -> Result<Vec<ExportRecord>> {
        self.range((Bound::Unbounded, Bound::Unbounded))
            .map(|kv| {
                let (k, v) = kv?;
                // Raw quarantined mails are bytes; a JSON dump holds them
                // as a base64 string (the format older versions stored).
                let value = if k.starts_with(b"qraw/") && v.first() != Some(&b'"') {
                    serde_json::Value::String(data_encoding::BASE64.encode(&v))
                } else {
                    decode(&k, &v)?
                };
                Ok(ExportRecord {
                    key: data_encoding::HEXLOWER.encode(&k),
                    value,
                })
            })
            .collect()
    }

    fn import(&self, records: &[ExportRecord]) -> Result<()> {
        let mut batch = Vec::with_capacity(records.len());
        for r in records {
            let key = data_encoding::HEXLOWER
                .decode(r.key.as_bytes())
                .map_err(|e| StoreError::Corrupt {
                    key: r.key.clone(),
                    reason: format!("key is not hex: {e}"),
                })?;
            let value = match &r.value {
                serde_json::Value::String(_) if key.starts_with(b"qraw/") => {
                    legacy_raw(&r.key, &encode(&r.value))?
                }
                v => encode(v),
            };
            batch.push((key, Some(value)));
        }
        self.backend.begin_decision(!self.staged().is_empty())?;
        self.stage(batch);
        // A backup from an older version may lack the derived records.
        let rebuilt = self
            .rebuild_derived()
            .and_then(|()| self.rebuild_due_index());
        self.backend.end_decision();
        rebuilt?;
        self.flush()
    }

    fn is_empty(&self) -> Result<bool> {
        // Bookkeeping under `meta/` (written when a store is created) is not
        // content.
        for kv in self.range((Bound::Unbounded, Bound::Unbounded)) {
            if !kv?.0.starts_with(b"meta/") {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn stats(&self) -> Result<Stats> {
        let mut st = Stats::default();
        for p in self.scan::<Processed>(b"msg/")? {
            *st.processed.entry(p.class.to_string()).or_default() += 1;
        }
        let count = |prefix: &[u8]| self.scan_raw(prefix).count() as u64;
        st.outbox_pending = count(b"outq/");
        st.outbox_sent = count(b"outs/");
        st.relationships = count(b"rel/");
        st.tickets = count(b"tkt/");
        st.held = count(b"held/");
        Ok(st)
    }

    fn quarantined(&self) -> Result<Vec<Processed>> {
        let mut v: Vec<Processed> = self
            .scan::<Processed>(b"msg/")?
            .into_iter()
            .filter(|p| p.class == ProcessedClass::Quarantined)
            .collect();
        v.sort_by_key(|p| p.at);
        Ok(v)
    }

    fn sent_log(&self) -> Result<Vec<OutboxEntry>> {
        self.scan(b"outs/")
    }

    fn begin_decision(&self) -> Result<()> {
        let pending = !self.staged().is_empty();
        self.backend.begin_decision(pending)
    }

    fn end_decision(&self) {
        self.backend.end_decision();
        // A decision that wrote nothing has nothing to flush: its turn ends
        // now, not at somebody's next flush.
        let staged = self.staged();
        if staged.is_empty() {
            if let Err(e) = self.backend.nothing_to_apply() {
                tracing::warn!(error = %e, "could not end the store's turn; the server ends it with the session");
            }
        }
    }

    fn acquire_lease(&self, name: &str) -> Result<Option<u64>> {
        self.backend.acquire_lease(name)
    }

    fn release_lease(&self, name: &str) -> Result<()> {
        self.backend.release_lease(name)
    }

    fn claim_due(&self, up_to: u64, now: u64, limit: usize) -> Result<Vec<OutboxEntry>> {
        match self.backend.claim_due(now, limit)? {
            Some(records) => records.iter().map(|(k, v)| decode(k, v)).collect(),
            None => self.due_outbox(up_to, now, limit),
        }
    }

    fn shared(&self) -> Option<Shared> {
        self.backend.shared()
    }

    fn lost(&self) -> Option<String> {
        self.backend.lost()
    }

    fn prefetches(&self) -> bool {
        self.backend.prefetches()
    }

    fn prefetch(&self, mails: &[&liaison_core::mail::inbound::InboundMail]) -> Result<()> {
        if !self.backend.prefetches() || mails.is_empty() {
            return Ok(());
        }
        // What the engine and decide read for a mail, by key: its processed
        // marker, and for each mail it refers to the invitation thread, the
        // ticket thread and the sent copy; by scan: the customer index of
        // its sender.
        let mut keys = Vec::new();
        let mut senders = Vec::new();
        for m in mails {
            keys.push(format!("msg/{}", m.key).into_bytes());
            for id in m.in_reply_to.iter().chain(&m.references) {
                for prefix in ["thr/", "tth/", "omid/"] {
                    keys.push(format!("{prefix}{id}").into_bytes());
                }
            }
            if let Some(from) = &m.from {
                senders.push(from.as_str());
            }
        }
        keys.sort_unstable();
        keys.dedup();
        senders.sort_unstable();
        senders.dedup();
        let prefixes: Vec<Vec<u8>> = senders.iter().map(|c| cix_prefix(c)).collect();
        self.backend.prefetch(&keys, &prefixes)?;
        // Then the relationships that index names (now read from the cache).
        let mut rels = Vec::new();
        for (customer, prefix) in senders.iter().zip(&prefixes) {
            for kv in self.backend.range(prefix_range(prefix)) {
                let (k, v) = kv?;
                let partner: String = decode(&k, &v)?;
                rels.push(rel_key(&partner, customer));
            }
        }
        self.backend.prefetch(&rels, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use liaison_core::model::relationship::RelationshipState;

    fn rel(partner: &str, customer: &str) -> Relationship {
        Relationship {
            partner: partner.into(),
            customer: customer.into(),
            customer_name: None,
            locale: "en".into(),
            state: RelationshipState::Invited,
            since: 1,
            invitation_id: Some(9),
            support_contact: None,
            ends_at: None,
            reminders_sent: vec![],
            history: vec![],
            gdap: None,
        }
    }

    fn mail(id: &str, inv: Option<u64>) -> OutgoingMail {
        OutgoingMail {
            message_id: id.into(),
            envelope_from: "a@b.test".into(),
            recipients: vec!["c@d.test".into()],
            raw: "Subject: x\r\n\r\nbody".into(),
            subject: "x".into(),
            invitation: inv,
            ticket: None,
        }
    }

    fn ticket(id: u64, message_ids: &[&str]) -> Ticket {
        Ticket {
            id,
            partner: "p".into(),
            customer: "c@d.test".into(),
            support_contact: None,
            state: liaison_core::model::ticket::TicketState::Open,
            subject: "s".into(),
            opened: 1,
            closed_at: None,
            previous: None,
            message_ids: message_ids.iter().map(|m| m.to_string()).collect(),
            desk_message_id: None,
            customer_message_id: None,
            entries: vec![],
        }
    }

    #[test]
    fn reading_several_records_sees_staged_writes_removals_and_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("db"), 1 << 20, Path::new("x.sock")).unwrap();
        s.stage(vec![
            (b"k/a".to_vec(), Some(b"1".to_vec())),
            (b"k/b".to_vec(), Some(b"2".to_vec())),
        ]);
        s.flush().unwrap();
        // b removed and c added, both only staged.
        s.stage(vec![
            (b"k/b".to_vec(), None),
            (b"k/c".to_vec(), Some(b"3".to_vec())),
        ]);
        let keys: Vec<Vec<u8>> = ["k/c", "k/a", "k/b", "k/none", "k/a"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        let got = s.get_many_raw(&keys).unwrap();
        let want: Vec<Option<Vec<u8>>> = vec![
            Some(b"3".to_vec()),
            Some(b"1".to_vec()),
            None,
            None,
            Some(b"1".to_vec()),
        ];
        assert_eq!(got, want);
        let one_by_one: Vec<Option<Vec<u8>>> = keys.iter().map(|k| s.get_raw(k).unwrap()).collect();
        assert_eq!(got, one_by_one);
    }

    #[test]
    fn a_thread_message_id_stays_with_the_ticket_that_recorded_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("db"), 1 << 20, Path::new("x.sock")).unwrap();
        let commit = |t: Ticket| {
            s.commit(Changes {
                tickets: vec![t],
                ..Default::default()
            })
            .unwrap();
        };
        commit(ticket(
            1,
            &["customer-a@mail.test", "liaison.k1.a@liaison.test"],
        ));
        // A mail on ticket 2 that reuses ticket 1's inbound Message-ID.
        commit(ticket(
            2,
            &["customer-a@mail.test", "liaison.k1.b@liaison.test"],
        ));
        assert_eq!(
            s.ticket_by_message_id("customer-a@mail.test").unwrap(),
            Some(1)
        );
        assert_eq!(
            s.ticket_by_message_id("liaison.k1.b@liaison.test").unwrap(),
            Some(2)
        );
        // Ticket 1 written again keeps its own ids.
        commit(ticket(
            1,
            &["customer-a@mail.test", "liaison.k1.a@liaison.test"],
        ));
        s.flush().unwrap();
        assert_eq!(
            s.ticket_by_message_id("customer-a@mail.test").unwrap(),
            Some(1)
        );
    }

    #[test]
    fn commit_is_visible_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
            let ids = s
                .commit(Changes {
                    relationships: vec![
                        rel("p1", "alice@contoso.test"),
                        rel("p2", "alice@contoso.test"),
                    ],
                    outbox: vec![mail("m1@x", Some(9)), mail("m2@x", None)],
                    processed: vec![Processed {
                        key: "in1@x".into(),
                        at: 1,
                        class: ProcessedClass::Command,
                        summary: "ok".into(),
                    }],
                    cursor: Some((
                        "commands".into(),
                        Cursor {
                            uid_validity: 5,
                            last_uid: 7,
                        },
                    )),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(ids.len(), 2);
            assert!(ids[0] < ids[1]);
            s.flush().unwrap();
        }
        let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
        assert_eq!(s.relationships_of("p1").unwrap().len(), 1);
        assert_eq!(s.relationships_with("alice@contoso.test").unwrap().len(), 2);
        assert_eq!(s.invitation_by_message_id("m1@x").unwrap(), Some(9));
        assert!(s.processed("in1@x").unwrap().is_some());
        assert_eq!(s.cursor("commands").unwrap().unwrap().last_uid, 7);
        let last = s.last_outbox_id().unwrap();
        let pending = s.pending_outbox(last, 10).unwrap();
        assert_eq!(pending.len(), 2);
        // Entries above the durable watermark are not handed out.
        assert_eq!(s.pending_outbox(pending[0].id, 10).unwrap().len(), 1);
        s.mark_sent(pending[0].id, 5, None).unwrap();
        assert_eq!(s.pending_outbox(last, 10).unwrap().len(), 1);
        assert_eq!(s.sent_log().unwrap()[0].mail.message_id, "m1@x");
    }

    #[test]
    fn sent_mails_of_invitations_are_kept_for_the_reply_splitter() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("db"), 1 << 20, Path::new("x.sock")).unwrap();
        s.commit(Changes {
            outbox: vec![mail("m1@x", Some(9)), mail("m2@x", None)],
            ..Default::default()
        })
        .unwrap();
        // Staged and pending: already readable.
        assert_eq!(
            s.sent_mail("m1@x").unwrap().unwrap().raw,
            mail("m1@x", None).raw
        );
        // A mail of no invitation or ticket is nobody's original.
        assert_eq!(s.sent_mail("m2@x").unwrap(), None);
        assert_eq!(s.sent_mail("unknown@x").unwrap(), None);
        s.flush().unwrap();
        let last = s.last_outbox_id().unwrap();
        let first = s.pending_outbox(last, 10).unwrap()[0].id;
        s.mark_sent(first, 5, None).unwrap();
        // Delivered: read from the sent log.
        assert_eq!(s.sent_mail("m1@x").unwrap().unwrap().message_id, "m1@x");
    }

    #[test]
    fn customer_index_is_built_for_old_stores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
            s.commit(Changes {
                relationships: vec![
                    rel("p1", "alice@contoso.test"),
                    rel("p2", "alice@contoso.test"),
                    rel("p1", "bob@fabrikam.test"),
                ],
                ..Default::default()
            })
            .unwrap();
            s.flush().unwrap();
            // Make it look like a store from before the derived records.
            for prefix in [&b"cix/"[..], b"rsum/", b"cnt/"] {
                for k in s.backend().tree().scan_prefix(prefix).keys() {
                    s.backend().tree().remove(k.unwrap()).unwrap();
                }
            }
            s.backend().tree().remove(b"meta/derived").unwrap();
            s.flush().unwrap();
            assert!(s
                .relationships_with("alice@contoso.test")
                .unwrap()
                .is_empty());
            assert!(s.relationship_counts().unwrap().is_empty());
            assert!(s.all_relationship_summaries().unwrap().is_empty());
        }
        let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
        let mut partners: Vec<String> = s
            .relationships_with("alice@contoso.test")
            .unwrap()
            .into_iter()
            .map(|r| r.partner)
            .collect();
        partners.sort();
        assert_eq!(partners, ["p1", "p2"]);
        assert_eq!(s.relationships_with("bob@fabrikam.test").unwrap().len(), 1);
        assert!(s
            .relationships_with("carol@contoso.test")
            .unwrap()
            .is_empty());
        assert_eq!(
            s.relationship_counts().unwrap(),
            [
                ("p1".to_string(), RelationshipState::Invited, 2),
                ("p2".to_string(), RelationshipState::Invited, 1)
            ]
        );
        assert_eq!(s.relationship_summaries_of("p1").unwrap().len(), 2);
    }

    /// sled's newest page-table snapshot in a store's folder (its name is
    /// the log position it covers).
    fn newest_snapshot(path: &Path) -> Option<String> {
        std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap."))
            .max()
    }

    #[test]
    fn closing_a_written_store_writes_a_snapshot_so_the_next_start_reads_no_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
            for i in 0..20 {
                s.commit(Changes {
                    relationships: (0..50)
                        .map(|j| rel("p1", &format!("c{i}.{j}@contoso.test")))
                        .collect(),
                    ..Default::default()
                })
                .unwrap();
                s.flush().unwrap();
            }
        }
        let closed = newest_snapshot(&path);
        assert!(closed.is_some(), "no snapshot after a clean close");
        // An open that finds log entries after the snapshot reads them and
        // writes a newer snapshot; one right after a clean close finds none.
        {
            let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
            assert_eq!(s.relationship_summaries_of("p1").unwrap().len(), 1000);
        }
        assert_eq!(newest_snapshot(&path), closed);
        // A close with nothing written does not open the store again; a
        // write is in the next snapshot.
        {
            let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
            s.commit(Changes {
                relationships: vec![rel("p1", "late@contoso.test")],
                ..Default::default()
            })
            .unwrap();
        }
        let later = newest_snapshot(&path);
        assert!(later > closed, "{later:?} after {closed:?}");
        let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
        assert_eq!(s.relationship_summaries_of("p1").unwrap().len(), 1001);
        assert_eq!(newest_snapshot(&path), later);
    }

    #[test]
    fn counts_and_summaries_follow_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(&dir.path().join("db"), 1 << 20, Path::new("x.sock")).unwrap();
        let with = |customer: &str, state: RelationshipState| {
            let mut r = rel("p1", customer);
            r.state = state;
            r
        };
        let counts = |s: &SledStore| -> Vec<(RelationshipState, u64)> {
            s.relationship_counts()
                .unwrap()
                .into_iter()
                .map(|(_, st, n)| (st, n))
                .collect()
        };
        s.commit(Changes {
            relationships: vec![
                with("a@x.test", RelationshipState::Invited),
                with("b@x.test", RelationshipState::Invited),
            ],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(counts(&s), [(RelationshipState::Invited, 2)]);
        // The same relationship twice in one commit counts once, at its
        // last state; an unchanged state changes nothing.
        s.commit(Changes {
            relationships: vec![
                with("a@x.test", RelationshipState::Active),
                with("a@x.test", RelationshipState::PermissionsRemoved),
                with("b@x.test", RelationshipState::Invited),
            ],
            ..Default::default()
        })
        .unwrap();
        let expect = [
            (RelationshipState::Invited, 1),
            (RelationshipState::PermissionsRemoved, 1),
        ];
        assert_eq!(counts(&s), expect);
        s.flush().unwrap();
        assert_eq!(counts(&s), expect);
        let sums = s.relationship_summaries_of("p1").unwrap();
        assert_eq!(
            sums.iter()
                .map(|r| (r.customer.as_str(), r.state))
                .collect::<Vec<_>>(),
            [
                ("a@x.test", RelationshipState::PermissionsRemoved),
                ("b@x.test", RelationshipState::Invited)
            ]
        );
        // The counts agree with a full scan.
        let mut full = std::collections::BTreeMap::new();
        for r in s.all_relationships().unwrap() {
            *full.entry(r.state.as_str()).or_insert(0u64) += 1;
        }
        let counted: std::collections::BTreeMap<&str, u64> = counts(&s)
            .into_iter()
            .map(|(st, n)| (st.as_str(), n))
            .collect();
        assert_eq!(full, counted);
    }

    #[test]
    fn staged_commits_are_read_before_the_flush_and_written_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
        s.commit(Changes {
            relationships: vec![rel("p1", "alice@contoso.test"), rel("p1", "bob@f.test")],
            outbox: vec![mail("m1@x", None), mail("m2@x", None), mail("m3@x", None)],
            ..Default::default()
        })
        .unwrap();
        s.flush().unwrap();
        // Staged on top of flushed records: a replacement, a new key, a
        // removal (the sent mark) and a retry.
        let mut carol = rel("p1", "carol@contoso.test");
        carol.customer_name = Some("Carol".into());
        let mut alice = rel("p1", "alice@contoso.test");
        alice.customer_name = Some("Alice".into());
        s.commit(Changes {
            relationships: vec![alice, carol],
            ..Default::default()
        })
        .unwrap();
        let pending = s.pending_outbox(u64::MAX, 10).unwrap();
        s.mark_sent(pending[0].id, 5, None).unwrap();
        let mut retry = pending[1].clone();
        retry.attempts = 1;
        s.mark_retry(&retry).unwrap();
        assert!(!s.staged().is_empty());

        let check = |s: &SledStore| {
            let names: Vec<(String, Option<String>)> = s
                .relationships_of("p1")
                .unwrap()
                .into_iter()
                .map(|r| (r.customer, r.customer_name))
                .collect();
            assert_eq!(
                names,
                [
                    ("alice@contoso.test".to_string(), Some("Alice".to_string())),
                    ("bob@f.test".to_string(), None),
                    ("carol@contoso.test".to_string(), Some("Carol".to_string())),
                ]
            );
            assert_eq!(s.relationships_with("carol@contoso.test").unwrap().len(), 1);
            let pending = s.pending_outbox(u64::MAX, 10).unwrap();
            assert_eq!(pending.len(), 2, "the sent one is hidden: {pending:?}");
            assert_eq!(pending[0].attempts, 1, "the retry replaces the entry");
            assert_eq!(s.pending_outbox(u64::MAX, 1).unwrap().len(), 1);
            assert_eq!(s.sent_log().unwrap().len(), 1);
            let st = s.stats().unwrap();
            assert_eq!(
                (st.relationships, st.outbox_pending, st.outbox_sent),
                (3, 2, 1)
            );
        };
        check(&s);
        s.flush().unwrap();
        assert!(s.staged().is_empty());
        check(&s);
        drop(s);
        check(&SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap());
    }

    #[test]
    fn due_outbox_reads_by_next_attempt_and_skips_what_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
        let mails: Vec<OutgoingMail> = (0..5).map(|i| mail(&format!("m{i}@x"), None)).collect();
        let ids = s
            .commit(Changes {
                outbox: mails,
                ..Default::default()
            })
            .unwrap();
        // The three oldest wait on a retry; the two newest are due first.
        for (n, id) in ids[..3].iter().enumerate() {
            let mut e = s
                .get::<OutboxEntry>(&id_key("outq/", *id))
                .unwrap()
                .unwrap();
            e.attempts = 1;
            e.not_before = 100 + n as u64;
            s.mark_retry(&e).unwrap();
        }
        let due = |s: &SledStore, now| -> Vec<u64> {
            s.due_outbox(u64::MAX, now, 10)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(due(&s, 50), ids[3..]);
        assert_eq!(due(&s, 101), [ids[3], ids[4], ids[0], ids[1]]);
        // Above the watermark nothing is handed out; the limit holds.
        assert_eq!(s.due_outbox(ids[3], 50, 10).unwrap().len(), 1);
        assert_eq!(s.due_outbox(u64::MAX, 200, 2).unwrap().len(), 2);
        assert_eq!(s.next_attempt(ids[2]).unwrap(), Some(100));
        assert_eq!(s.next_attempt(u64::MAX).unwrap(), Some(0));
        s.mark_sent(ids[3], 5, None).unwrap();
        s.mark_sent(ids[0], 5, None).unwrap();
        assert_eq!(s.outbox_len().unwrap(), 3);
        s.flush().unwrap();
        drop(s);
        // The index survives a restart, and is rebuilt when missing.
        let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
        assert_eq!(due(&s, 200), [ids[4], ids[1], ids[2]]);
        for k in s.backend().tree().scan_prefix(b"outd/").keys() {
            s.backend().tree().remove(k.unwrap()).unwrap();
        }
        s.backend().tree().remove(b"meta/due_index").unwrap();
        drop(s);
        let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
        assert_eq!(due(&s, 200), [ids[4], ids[1], ids[2]]);
        assert_eq!(due(&s, 0), [ids[4]]);
    }

    #[test]
    fn dropping_the_store_writes_what_is_staged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
        s.commit(Changes {
            relationships: vec![rel("p1", "alice@contoso.test")],
            ..Default::default()
        })
        .unwrap();
        drop(s);
        let s = SledStore::open(&path, 1 << 20, Path::new("x.sock")).unwrap();
        assert_eq!(s.relationships_of("p1").unwrap().len(), 1);
    }

    #[test]
    fn prefix_ranges_end_where_the_prefix_ends() {
        assert_eq!(
            prefix_range(b"rel/"),
            (
                Bound::Included(b"rel/".to_vec()),
                Bound::Excluded(b"rel0".to_vec())
            )
        );
        assert_eq!(
            prefix_range(&[b'a', 0xff]),
            (
                Bound::Included(vec![b'a', 0xff]),
                Bound::Excluded(b"b".to_vec())
            )
        );
        assert_eq!(
            prefix_range(&[0xff]),
            (Bound::Included(vec![0xff]), Bound::Unbounded)
        );
    }

    #[test]
    fn export_and_import_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let a = SledStore::open(&dir.path().join("a"), 1 << 20, Path::new("a.sock")).unwrap();
        a.commit(Changes {
            relationships: vec![rel("p1", "alice@contoso.test")],
            outbox: vec![mail("m1@x", Some(9))],
            ..Default::default()
        })
        .unwrap();
        let dump = a.export().unwrap();
        assert!(dump.len() >= 3, "{dump:?}");
        let b = SledStore::open(&dir.path().join("b"), 1 << 20, Path::new("b.sock")).unwrap();
        assert!(b.is_empty().unwrap());
        b.import(&dump).unwrap();
        assert_eq!(b.export().unwrap(), dump);
        assert_eq!(b.relationships_of("p1").unwrap().len(), 1);
        assert_eq!(b.invitation_by_message_id("m1@x").unwrap(), Some(9));
    }

    #[test]
    fn quarantined_raw_is_kept_as_bytes_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let a = SledStore::open(&dir.path().join("a"), 1 << 20, Path::new("a.sock")).unwrap();
        let raw = b"From: x@y.test\r\n\r\nbody \xff".to_vec();
        a.commit(Changes {
            quarantined_raw: vec![("k1".into(), raw.clone()), ("k2".into(), vec![b'a'; 10])],
            ..Default::default()
        })
        .unwrap();
        a.flush().unwrap();
        assert_eq!(
            a.backend()
                .tree()
                .get(b"qraw/k1")
                .unwrap()
                .unwrap()
                .as_ref(),
            &raw[..]
        );
        assert_eq!(a.quarantined_raw("k1").unwrap(), Some(raw.clone()));
        assert_eq!(a.quarantined_raw_bytes().unwrap(), raw.len() as u64 + 10);
        // An older version's base64 JSON string is still read.
        a.backend()
            .tree()
            .insert(
                b"qraw/old",
                encode(&data_encoding::BASE64.encode(b"old mail")),
            )
            .unwrap();
        assert_eq!(
            a.quarantined_raw("old").unwrap(),
            Some(b"old mail".to_vec())
        );
        // A release frees the room.
        a.commit(Changes {
            released: vec!["k2".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.quarantined_raw_bytes().unwrap(), raw.len() as u64);
        // Export and import carry the bytes.
        let b = SledStore::open(&dir.path().join("b"), 1 << 20, Path::new("b.sock")).unwrap();
        b.import(&a.export().unwrap()).unwrap();
        assert_eq!(b.quarantined_raw("k1").unwrap(), Some(raw));
        assert_eq!(
            b.quarantined_raw("old").unwrap(),
            Some(b"old mail".to_vec())
        );
        assert_eq!(b.export().unwrap(), a.export().unwrap());
    }

    #[test]
    fn held_mails_are_counted_and_a_release_frees_the_room() {
        let dir = tempfile::tempdir().unwrap();
        let a = SledStore::open(&dir.path().join("a"), 1 << 20, Path::new("a.sock")).unwrap();
        let hold = |kept: bool| Hold {
            at: 1,
            reason: "r".into(),
            partner: None,
            mail: OutgoingMail {
                raw: if kept { "x".repeat(100) } else { String::new() },
                ..mail("m", None)
            },
            kept,
        };
        a.commit(Changes {
            held: vec![hold(true), hold(true), hold(false)],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.held_bytes().unwrap(), 200);
        let held = a.held().unwrap();
        assert_eq!(
            held.iter().map(|h| h.kept).collect::<Vec<_>>(),
            vec![true, true, false]
        );
        a.commit(Changes {
            released_held: vec![held[0].id, held[2].id],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.held_bytes().unwrap(), 100);
        assert_eq!(a.held_count().unwrap(), 1);
        // A record written before `kept` existed was kept whole.
        let mut old = serde_json::to_value(&held[1]).unwrap();
        old.as_object_mut().unwrap().remove("kept");
        let old: HeldMail = serde_json::from_value(old).unwrap();
        assert!(old.kept);
    }

    #[test]
    fn second_open_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let _a = SledStore::open(&path, 1 << 20, Path::new("admin.sock")).unwrap();
        match SledStore::open(&path, 1 << 20, Path::new("admin.sock")) {
            Err(StoreError::Locked { socket, .. }) => assert_eq!(socket, "admin.sock"),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("expected Locked, got a second handle"),
        }
    }
}
