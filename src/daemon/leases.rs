//! Owning shared work by lease: each inbox, the timer sweep and the
//! Microsoft Graph follower run on one instance at a time.
//!
//! One [`keep`] task per lease. It takes the lease, runs the work while it
//! holds it, renews it every third of the lease length, and stops the work
//! when the lease goes to another instance — or when renewals failed for a
//! whole lease length (the database is unreachable): another instance may
//! own it by then. The store itself is what makes that safe: a commit that
//! advances an inbox's cursor needs its lease, and a flush is refused when
//! the lease changed owner meanwhile (the fencing token), so an instance
//! paused past its lease (GC, SIGSTOP, a network partition) cannot write
//! afterwards. Stopping the work is only what keeps it from trying.
//!
//! Takeover: an owner that dies renewed last at most a lease length ago; the
//! others try every third of one, so one of them owns it within
//! `lease + lease / 3` (under two lease lengths). A clean shutdown releases
//! the lease, so another instance takes over at its next try.
//!
//! With a store of one process (sled) every lease is granted at once and
//! [`crate::store::Store::shared`] is `None`: the work starts at once and
//! is never renewed nor stopped, exactly as before leases existed.
//!
//! What a renewal means is decided by [`Ownership::renewed`], a pure state
//! machine; [`keep`] is the shell that calls the store and starts and stops
//! the work.

use crate::store::{Store, StoreError};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
// Tokio's instant: the same as std's, except under paused time in tests.
use tokio::sync::watch;
use tokio::time::Instant;

/// The leases this instance holds now, name → fencing token: for
/// `/healthz` (`"leases": [...]`).
#[derive(Debug, Default)]
pub struct HeldLeases(Mutex<BTreeMap<String, u64>>);

impl HeldLeases {
    /// The names held, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// How many inbox leases are held (each should have an IMAP session).
    pub fn inboxes(&self) -> usize {
        self.lock()
            .keys()
            .filter(|n| n.starts_with(&crate::store::inbox_lease("")))
            .count()
    }

    pub(crate) fn set(&self, name: &str, token: Option<u64>) {
        let mut held = self.lock();
        match token {
            Some(t) => held.insert(name.to_string(), t),
            None => held.remove(name),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The lease calls of a store, all a keeper needs (a seam for the tests).
pub trait LeaseStore: Send + Sync {
    /// See [`Store::acquire_lease`].
    fn acquire(&self, name: &str) -> Result<Option<u64>, StoreError>;
    /// See [`Store::release_lease`].
    fn release(&self, name: &str) -> Result<(), StoreError>;
    /// See [`Store::flush`].
    fn flush(&self) -> Result<(), StoreError>;
}

/// A [`Store`] as a [`LeaseStore`].
pub struct StoreLeases(pub Arc<dyn Store>);

impl LeaseStore for StoreLeases {
    fn acquire(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.0.acquire_lease(name)
    }
    fn release(&self, name: &str) -> Result<(), StoreError> {
        self.0.release_lease(name)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()
    }
}

/// What a keeper does after a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The lease is ours now (fencing token): start the work.
    Start(u64),
    /// Still ours: keep the work running.
    Keep,
    /// The lease went to another owner and came back with a new token
    /// while we believed we held it: what the work staged under the old
    /// token will be refused, so it restarts under the new one.
    Restart(u64),
    /// Not ours any more: stop the work.
    Stop(StopReason),
    /// Not ours, nothing running: try again later.
    Wait,
}

/// Why a keeper stops the work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Another instance holds the lease.
    Lost,
    /// No renewal succeeded for a whole lease length (the last error).
    Unrenewed(String),
}

/// Whether this instance owns a lease, as its renewals tell (pure).
#[derive(Debug, Clone)]
pub struct Ownership {
    /// The fencing token while we own it.
    token: Option<u64>,
    /// When the lease was last granted to us.
    renewed_at: Option<Instant>,
    /// How long a granted lease lasts.
    lease: Duration,
}

impl Ownership {
    /// Not owned yet; a grant lasts `lease`.
    pub fn new(lease: Duration) -> Self {
        Ownership {
            token: None,
            renewed_at: None,
            lease,
        }
    }

    /// The fencing token while owned.
    pub fn token(&self) -> Option<u64> {
        self.token
    }

    /// What to do after an attempt at `now` to take or renew the lease gave
    /// `result` (`Ok(Some(token))` granted, `Ok(None)` another holds it,
    /// `Err` the store could not be asked).
    pub fn renewed(&mut self, result: Result<Option<u64>, String>, now: Instant) -> Step {
        match result {
            Ok(Some(token)) => {
                self.renewed_at = Some(now);
                match self.token.replace(token) {
                    None => Step::Start(token),
                    Some(old) if old != token => Step::Restart(token),
                    Some(_) => Step::Keep,
                }
            }
            Ok(None) => match self.token.take() {
                Some(_) => Step::Stop(StopReason::Lost),
                None => Step::Wait,
            },
            Err(why) => {
                let expired = self
                    .renewed_at
                    .is_none_or(|at| now.duration_since(at) >= self.lease);
                match self.token {
                    Some(_) if expired => {
                        self.token = None;
                        Step::Stop(StopReason::Unrenewed(why))
                    }
                    Some(_) => Step::Keep,
                    None => Step::Wait,
                }
            }
        }
    }
}

/// The work a lease guards: started with its own stop channel each time
/// the lease is taken; it returns once the channel turns true.
pub type Work = Box<dyn Fn(watch::Receiver<bool>) -> BoxFuture<'static, ()> + Send + Sync>;

/// One lease and the work it guards, for [`keep`].
pub struct Guarded {
    /// The lease's name ([`crate::store::inbox_lease`], …).
    pub lease: String,
    /// What it guards, for the log ("inbox commands", "the timer sweep").
    pub what: String,
    /// Starts the work.
    pub work: Work,
}

/// Keeps `guarded.lease` while it can and runs the work while it holds it,
/// until `shutdown` turns true; then stops the work, flushes and releases
/// the lease. `lease` is `None` for a store of one process: the lease is
/// taken once and never renewed.
pub async fn keep(
    store: Arc<dyn LeaseStore>,
    guarded: Guarded,
    lease: Option<Duration>,
    held: Arc<HeldLeases>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Guarded {
        lease: name,
        what,
        work,
    } = guarded;
    // sled: granted at once, for good; a retry only if the call failed.
    let renew_every = lease.map_or(Duration::from_secs(5), |l| {
        (l / 3).max(Duration::from_millis(100))
    });
    let mut ownership = Ownership::new(lease.unwrap_or(Duration::MAX));
    let mut running: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
    let mut last_error_logged: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let result = blocking(&store, &name, |s, n| s.acquire(n)).await;
        if let Err(e) = &result {
            // Once per lease length at most: a database that is down for a
            // while would otherwise fill the log.
            if last_error_logged.is_none_or(|t| t.elapsed() >= lease.unwrap_or(renew_every)) {
                tracing::warn!(lease = %name, error = %e, "cannot take or renew the lease of {what}; trying again (is the database reachable?)");
                last_error_logged = Some(Instant::now());
            }
        }
        match ownership.renewed(result.map_err(|e| e.to_string()), Instant::now()) {
            Step::Start(token) => {
                last_error_logged = None;
                if lease.is_some() {
                    tracing::info!(lease = %name, token, "took over {what}, fencing token {token}");
                }
                held.set(&name, Some(token));
                running = Some(start(&work));
            }
            Step::Restart(token) => {
                tracing::warn!(lease = %name, token, "{what} was owned by another instance meanwhile; restarting it under fencing token {token}");
                stop(running.take()).await;
                held.set(&name, Some(token));
                running = Some(start(&work));
            }
            Step::Keep => {}
            Step::Stop(reason) => {
                match &reason {
                    StopReason::Lost => {
                        tracing::warn!(lease = %name, "lost {what} to another instance; stopping it here")
                    }
                    StopReason::Unrenewed(e) => {
                        tracing::warn!(lease = %name, error = %e, lease_secs = lease.unwrap_or_default().as_secs(), "could not renew the lease of {what} for a whole lease length; stopping it here so that another instance can take over")
                    }
                }
                held.set(&name, None);
                stop(running.take()).await;
            }
            Step::Wait => {}
        }
        // A store of one process has granted the lease for good.
        let again = if lease.is_none() && ownership.token().is_some() {
            Duration::MAX
        } else {
            renew_every
        };
        tokio::select! {
            _ = tokio::time::sleep(again.min(Duration::from_secs(3600 * 24))) => {}
            _ = shutdown.changed() => {}
        }
    }
    let owned = running.is_some();
    stop(running.take()).await;
    held.set(&name, None);
    if owned {
        // What the work committed becomes durable before another instance
        // may take over; then the lease is given up at once.
        let released = blocking(&store, &name, |s, n| {
            s.flush()?;
            s.release(n)
        })
        .await;
        match released {
            Ok(()) if lease.is_some() => tracing::info!(lease = %name, "released {what}"),
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "could not release {what}; another instance takes over when the lease runs out")
            }
        }
    }
}

/// Starts the work with a fresh stop channel.
fn start(work: &Work) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    (tx, tokio::spawn(work(rx)))
}

/// Tells the work to stop and waits until it has (it finishes the message
/// or the chunk in hand; a flush of work the lease no longer covers is
/// refused by the store anyway).
async fn stop(running: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>) {
    if let Some((tx, handle)) = running {
        let _ = tx.send(true);
        if let Err(e) = handle.await {
            tracing::error!(error = %e, "a task guarded by a lease failed");
        }
    }
}

/// A lease call on the blocking pool: a store may wait on the network.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn LeaseStore>,
    name: &str,
    call: impl FnOnce(&dyn LeaseStore, &str) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let (store, name) = (store.clone(), name.to_string());
    tokio::task::spawn_blocking(move || call(store.as_ref(), &name))
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Read(crate::store::ReadError::Backend(format!(
                "lease call failed: {e}"
            ))))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LEASE: Duration = Duration::from_secs(3);

    #[test]
    fn a_grant_starts_a_renewal_keeps_and_a_new_token_restarts() {
        let t0 = Instant::now();
        let mut o = Ownership::new(LEASE);
        assert_eq!(o.renewed(Ok(None), t0), Step::Wait);
        assert_eq!(o.renewed(Ok(Some(4)), t0), Step::Start(4));
        assert_eq!(o.renewed(Ok(Some(4)), t0 + LEASE / 3), Step::Keep);
        assert_eq!(o.renewed(Ok(Some(6)), t0 + LEASE), Step::Restart(6));
        assert_eq!(o.token(), Some(6));
    }

    #[test]
    fn another_owner_stops_the_work() {
        let t0 = Instant::now();
        let mut o = Ownership::new(LEASE);
        o.renewed(Ok(Some(1)), t0);
        assert_eq!(
            o.renewed(Ok(None), t0 + LEASE / 3),
            Step::Stop(StopReason::Lost)
        );
        assert_eq!(o.token(), None);
        assert_eq!(o.renewed(Ok(None), t0 + LEASE), Step::Wait);
        assert_eq!(o.renewed(Ok(Some(2)), t0 + LEASE * 2), Step::Start(2));
    }

    #[test]
    fn failed_renewals_stop_the_work_only_after_a_whole_lease() {
        let t0 = Instant::now();
        let mut o = Ownership::new(LEASE);
        o.renewed(Ok(Some(1)), t0);
        let down = || Err("connection refused".to_string());
        assert_eq!(o.renewed(down(), t0 + LEASE / 3), Step::Keep);
        assert_eq!(o.renewed(down(), t0 + LEASE * 2 / 3), Step::Keep);
        assert_eq!(
            o.renewed(down(), t0 + LEASE),
            Step::Stop(StopReason::Unrenewed("connection refused".into()))
        );
        assert_eq!(o.renewed(down(), t0 + LEASE * 2), Step::Wait);
        // The database back: taken again (the store says by whom).
        assert_eq!(o.renewed(Ok(Some(3)), t0 + LEASE * 3), Step::Start(3));
    }

    #[test]
    fn a_renewal_in_time_resets_the_failure_clock() {
        let t0 = Instant::now();
        let mut o = Ownership::new(LEASE);
        o.renewed(Ok(Some(1)), t0);
        assert_eq!(o.renewed(Err("x".into()), t0 + LEASE * 2 / 3), Step::Keep);
        assert_eq!(o.renewed(Ok(Some(1)), t0 + LEASE * 5 / 6), Step::Keep);
        assert_eq!(o.renewed(Err("x".into()), t0 + LEASE * 3 / 2), Step::Keep);
    }

    /// A lease table of one lease shared by "instances" (fake stores):
    /// granted to whoever asks while free or theirs, the token growing with
    /// each new owner.
    #[derive(Default)]
    struct Table {
        owner: Mutex<Option<(usize, u64)>>,
        down: std::sync::atomic::AtomicBool,
        flushes: AtomicUsize,
    }

    struct Instance {
        table: Arc<Table>,
        id: usize,
    }

    impl LeaseStore for Instance {
        fn acquire(&self, _: &str) -> Result<Option<u64>, StoreError> {
            if self.table.down.load(Ordering::SeqCst) {
                return Err(StoreError::Postgres("connection refused".into()));
            }
            let mut owner = self.table.owner.lock().unwrap();
            Ok(match *owner {
                Some((id, t)) if id == self.id => Some(t),
                Some(_) => None,
                None => {
                    let t = TOKENS.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                    *owner = Some((self.id, t));
                    Some(t)
                }
            })
        }
        fn release(&self, _: &str) -> Result<(), StoreError> {
            let mut owner = self.table.owner.lock().unwrap();
            if owner.is_some_and(|(id, _)| id == self.id) {
                *owner = None;
            }
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.table.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    static TOKENS: AtomicUsize = AtomicUsize::new(0);

    /// Work that counts how many copies of it run, and the most ever at once.
    fn counting(running: Arc<AtomicUsize>, starts: Arc<AtomicUsize>) -> Work {
        Box::new(move |mut stop: watch::Receiver<bool>| {
            let (running, starts) = (running.clone(), starts.clone());
            Box::pin(async move {
                running.fetch_add(1, Ordering::SeqCst);
                starts.fetch_add(1, Ordering::SeqCst);
                while !*stop.borrow() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
                running.fetch_sub(1, Ordering::SeqCst);
            })
        })
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn one_instance_runs_the_work_and_a_clean_stop_hands_it_over() {
        let table = Arc::new(Table::default());
        let (running, starts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut stops = Vec::new();
        let mut keepers = Vec::new();
        let helds: Vec<Arc<HeldLeases>> = (0..2).map(|_| Arc::default()).collect();
        for (id, held) in helds.iter().enumerate() {
            let (tx, rx) = watch::channel(false);
            stops.push(tx);
            keepers.push(tokio::spawn(keep(
                Arc::new(Instance {
                    table: table.clone(),
                    id,
                }),
                Guarded {
                    lease: "inbox/commands".into(),
                    what: "inbox commands".into(),
                    work: counting(running.clone(), starts.clone()),
                },
                Some(LEASE),
                held.clone(),
                rx,
            )));
        }
        for _ in 0..10 {
            tokio::time::sleep(LEASE / 3).await;
            assert_eq!(running.load(Ordering::SeqCst), 1, "exactly one copy runs");
        }
        let owner = table.owner.lock().unwrap().unwrap().0;
        assert_eq!(helds[owner].names(), vec!["inbox/commands".to_string()]);
        assert_eq!(helds[owner].inboxes(), 1);
        assert!(helds[1 - owner].names().is_empty());
        // The owner shuts down: its work stops, it flushes and releases, and
        // the other takes over within a renewal interval.
        let _ = stops[owner].send(true);
        keepers.remove(owner).await.unwrap();
        assert_eq!(table.flushes.load(Ordering::SeqCst), 1);
        tokio::time::sleep(LEASE / 3 + Duration::from_millis(10)).await;
        settle().await;
        assert_eq!(running.load(Ordering::SeqCst), 1);
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert_eq!(table.owner.lock().unwrap().unwrap().0, 1 - owner);
        assert_eq!(helds[1 - owner].names(), vec!["inbox/commands".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_by_another_stops_the_work_and_an_outage_stops_it_after_a_lease() {
        let table = Arc::new(Table::default());
        let (running, starts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let held = Arc::new(HeldLeases::default());
        let (_tx, rx) = watch::channel(false);
        let keeper = tokio::spawn(keep(
            Arc::new(Instance {
                table: table.clone(),
                id: 0,
            }),
            Guarded {
                lease: "sweep".into(),
                what: "the timer sweep".into(),
                work: counting(running.clone(), starts.clone()),
            },
            Some(LEASE),
            held.clone(),
            rx,
        ));
        settle().await;
        assert_eq!(running.load(Ordering::SeqCst), 1);
        // Another instance owns it now (ours ran out while we were paused).
        *table.owner.lock().unwrap() = Some((9, 100));
        tokio::time::sleep(LEASE / 3 + Duration::from_millis(10)).await;
        settle().await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "stopped on losing the lease"
        );
        assert!(held.names().is_empty());
        // Free again: taken back.
        *table.owner.lock().unwrap() = None;
        tokio::time::sleep(LEASE / 3).await;
        settle().await;
        assert_eq!(running.load(Ordering::SeqCst), 1);
        // The database goes away: the work keeps running within the lease,
        // and stops once a whole lease passed without a renewal.
        table.down.store(true, Ordering::SeqCst);
        tokio::time::sleep(LEASE * 2 / 3).await;
        assert_eq!(running.load(Ordering::SeqCst), 1, "still within the lease");
        tokio::time::sleep(LEASE / 2).await;
        settle().await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "stopped after a lease without renewal"
        );
        table.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(LEASE / 3).await;
        settle().await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            1,
            "taken again once the database is back"
        );
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        keeper.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_of_one_process_starts_the_work_once_and_never_renews() {
        struct Counting(AtomicUsize);
        impl LeaseStore for Counting {
            fn acquire(&self, _: &str) -> Result<Option<u64>, StoreError> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(Some(1))
            }
            fn release(&self, _: &str) -> Result<(), StoreError> {
                Ok(())
            }
            fn flush(&self) -> Result<(), StoreError> {
                Ok(())
            }
        }
        let store = Arc::new(Counting(AtomicUsize::new(0)));
        let (running, starts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = watch::channel(false);
        let keeper = tokio::spawn(keep(
            store.clone(),
            Guarded {
                lease: "inbox/a".into(),
                what: "inbox a".into(),
                work: counting(running.clone(), starts.clone()),
            },
            None,
            Arc::default(),
            rx,
        ));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(store.0.load(Ordering::SeqCst), 1, "asked once");
        assert_eq!(running.load(Ordering::SeqCst), 1);
        let _ = tx.send(true);
        keeper.await.unwrap();
        assert_eq!(running.load(Ordering::SeqCst), 0, "stopped on shutdown");
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }
}
