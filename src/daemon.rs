//! Wiring the daemon together: open the store, load templates, start one
//! watcher per inbox, the outbox sender and the admin socket; on shutdown,
//! tell every task, wait for them, and flush the store.
//!
//! Several instances may share one store (PostgreSQL): each inbox, the
//! timer sweep and the Graph follower then run under a lease, on one
//! instance at a time ([`leases`]); the outbox, the admin socket and HTTP
//! run on every instance. When the store gives up on commits it could not
//! make durable ([`Store::lost`]), every task is stopped and [`run`] starts
//! them again on a freshly opened store, which redoes that work from what
//! is durable. A database that cannot be reached, at start or later, is
//! waited for with backoff, never a reason to exit.

pub mod leases;

use crate::clock::{Clock, SystemClock};
use crate::engine::Engine;
use crate::store::Store;
use liaison_core::config::Config;
use liaison_core::render::templates::Templates;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Errors that stop the daemon from starting or from shutting down cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store could not be opened or flushed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A template is missing or broken.
    #[error(transparent)]
    Templates(#[from] liaison_core::render::templates::TemplateError),
    /// SMTP could not be set up.
    #[error(transparent)]
    Smtp(#[from] crate::io::smtp::SmtpError),
    /// The admin socket could not be opened.
    #[error(transparent)]
    Admin(#[from] crate::io::admin::AdminError),
    /// The `/metrics` and `/healthz` address could not be bound.
    #[error(transparent)]
    Http(#[from] crate::io::http::HttpError),
    /// A partner's Microsoft Graph client could not be set up.
    #[error("Microsoft Graph: {0}")]
    Graph(String),
    /// An `[[oauth2]]` client could not be set up.
    #[error(transparent)]
    OAuth(#[from] crate::oauth::OAuthError),
    /// An inbox's login could not be set up.
    #[error(transparent)]
    Imap(#[from] crate::io::imap::ImapError),
    /// The landing page could not be set up (its templates, its address,
    /// its certificate).
    #[error(transparent)]
    Web(#[from] crate::io::web::WebError),
    /// The store dropped commits it could not make durable (it lost a
    /// lease, or the database, mid-batch); every task was stopped.
    #[error("the store gave up ({0}); restarting every task on a freshly opened store")]
    StoreLost(String),
}

impl DaemonError {
    /// Whether this is the store being unreachable or lost, which [`run`]
    /// waits out (backoff, then open it again) rather than exiting: a
    /// database restart or failover must not need a person, and systemd's
    /// restarts are not a retry loop. Broken configuration, templates or a
    /// sled folder in use still stop the daemon.
    pub fn is_store_unavailable(&self) -> bool {
        use crate::store::StoreError as S;
        matches!(
            self,
            DaemonError::StoreLost(_)
                | DaemonError::Store(S::Postgres(_) | S::Lost(_) | S::Fenced(_) | S::NotOwner(_))
        )
    }
}

/// Knobs that tests turn; production uses the defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often time-driven changes (expiry) are looked for.
    pub sweep_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sweep_every: Duration::from_secs(60),
        }
    }
}

/// First wait before the store is opened again after it was unreachable
/// or lost; doubled up to [`RESTART_BACKOFF_MAX`].
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two attempts at the store.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run that lasted this long was a success: the next failure waits
/// [`RESTART_BACKOFF_MIN`] again.
const RESTART_STABLE_AFTER: Duration = Duration::from_secs(60);

/// Runs until `shutdown` completes, then stops cleanly: the message being
/// processed is finished, in-flight mails are handed over or left queued,
/// and the store is flushed. A store that cannot be reached or that was
/// lost ([`DaemonError::is_store_unavailable`]) is opened again after a
/// backoff (1 s doubling to 30 s), with everything else (templates too).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        let started = std::time::Instant::now();
        let result = match open_parts(&config) {
            Ok((store, templates)) => {
                run_with(
                    config.clone(),
                    store,
                    templates,
                    Arc::new(SystemClock),
                    Options::default(),
                    shutdown.as_mut(),
                )
                .await
            }
            Err(e) => Err(e),
        };
        let e = match result {
            Err(e) if e.is_store_unavailable() => e,
            other => return other,
        };
        if started.elapsed() >= RESTART_STABLE_AFTER {
            backoff = RESTART_BACKOFF_MIN;
        }
        let store = crate::store::describe(&config.store);
        match &e {
            DaemonError::StoreLost(_) => {
                tracing::warn!(error = %e, %store, retry_in_secs = backoff.as_secs(), "store lost; every task stopped, starting again on a freshly opened store")
            }
            _ => {
                tracing::error!(error = %e, %store, retry_in_secs = backoff.as_secs(), "cannot use the store; waiting for it (check that the database runs and is reachable, and that [store] url and its password are right)")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.as_mut() => {
                tracing::info!("shutting down while waiting for the store");
                return Ok(());
            }
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// What the daemon runs on, as configured: the store opened and the
/// templates loaded (and checked).
fn open_parts(config: &Config) -> Result<(Arc<dyn Store>, Templates), DaemonError> {
    let templates = crate::files::load_templates(&config.templates_dir)?;
    let store = crate::store::open(&config.store, &config.admin_socket)?;
    Ok((store, templates))
}

/// The one place an [`Engine`] is put together from its parts.
pub fn build_engine(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    templates: Templates,
    clock: Arc<dyn Clock>,
) -> Arc<Engine> {
    Arc::new(Engine::new(config, store, templates, clock))
}

/// The engine exactly as [`run`] would build it, without starting any task:
/// for CLI commands that act while no daemon runs (`import`). Opening the
/// store fails while a daemon has it open; ask the daemon then.
pub fn offline_engine(config: &Config) -> Result<Arc<Engine>, DaemonError> {
    let (store, templates) = open_parts(config)?;
    Ok(build_engine(
        Arc::new(config.clone()),
        store,
        templates,
        Arc::new(SystemClock),
    ))
}

/// [`run`] with its parts given, for tests.
pub async fn run_with(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    templates: Templates,
    clock: Arc<dyn Clock>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    // Whatever is in the store now becomes durable, so every queued mail
    // from before a restart may be sent.
    store.flush()?;
    let (durable_tx, durable_rx) = watch::channel(store.last_outbox_id()?);
    let (stop_tx, stop_rx) = watch::channel(false);
    // One token client per [[oauth2]], shared by every inbox and the SMTP
    // pool that name it.
    let oauth = crate::oauth::OAuthClients::new(&config.oauth2)?;
    let mailer = crate::io::smtp::Mailer::with_oauth(&config.smtp, &oauth)?;
    let mut logins = Vec::new();
    for inbox in &config.inboxes {
        logins.push(crate::io::imap_login::ImapLogin::for_inbox(inbox, &oauth)?);
    }
    let engine = build_engine(config.clone(), store.clone(), templates, clock.clone());

    // Bound before any task starts, so a port in use stops start-up.
    let http = match config.http_listen {
        Some(addr) => Some(crate::io::http::bind(addr, "/metrics, /healthz", "http.listen").await?),
        None => None,
    };

    // The landing page: templates checked, certificate read and address
    // bound before any task starts, so each of them stops start-up with a
    // clear error.
    let web = match &config.web {
        Some(w) => {
            let tls = w
                .tls
                .as_ref()
                .map(crate::io::web::tls_acceptor)
                .transpose()?;
            let state = Arc::new(crate::io::web::WebState::new(
                engine.clone(),
                &config.templates_dir,
                durable_tx.clone(),
                w,
            )?);
            let listener = crate::io::web::bind(w).await?;
            Some((listener, state, w.clone(), tls))
        }
        None => None,
    };

    let mut tasks = tokio::task::JoinSet::new();
    if let Some((listener, state, w, tls)) = web {
        tasks.spawn(crate::io::web::serve(
            listener,
            state,
            w,
            tls,
            stop_rx.clone(),
        ));
    }
    // With a shared store, what this instance owns: /healthz tells it.
    let shared = store.shared();
    let held = Arc::new(leases::HeldLeases::default());
    if let Some(listener) = http {
        tasks.spawn(crate::io::http::serve(
            listener,
            config.inboxes.len(),
            oauth.clone(),
            shared.is_some().then(|| held.clone()),
            stop_rx.clone(),
        ));
    }
    // Tokens are fetched at start and kept fresh, so logins never wait for
    // the token endpoint and /healthz knows at once when it fails.
    oauth.spawn_keepers(&mut tasks, &stop_rx);
    let admin_path = config.admin_socket.clone();
    let admin_engine = engine.clone();
    let admin_durable = durable_tx.clone();
    let admin_stop = stop_rx.clone();
    let admin_oauth = oauth.clone();
    tasks.spawn(async move {
        if let Err(e) = crate::io::admin::serve(
            admin_path,
            admin_engine,
            admin_durable,
            admin_oauth,
            admin_stop,
        )
        .await
        {
            tracing::error!(error = %e, "admin socket failed; the CLI cannot reach this daemon");
        }
    });
    tasks.spawn(crate::io::smtp::run_outbox(
        store.clone(),
        mailer,
        clock.clone(),
        engine.clone(),
        durable_rx,
        stop_rx.clone(),
    ));
    // The work one instance at a time does, each under its lease (with
    // sled granted at once and for good).
    let mut guarded = Vec::new();
    let (e, d, every) = (engine.clone(), durable_tx.clone(), options.sweep_every);
    guarded.push(leases::Guarded {
        lease: crate::store::SWEEP_LEASE.to_string(),
        what: "the timer sweep".to_string(),
        work: Box::new(move |stop| Box::pin(sweep_timers(e.clone(), d.clone(), every, stop))),
    });
    // Microsoft Graph (GDAP) for the partners that configure it.
    let graph = crate::gdap_sync::partner_syncs(&config, &oauth).map_err(DaemonError::Graph)?;
    if !graph.is_empty() {
        let handle = Arc::new(crate::gdap_sync::EngineHandle {
            engine: engine.clone(),
            durable: durable_tx.clone(),
        });
        let graph = Arc::new(graph);
        guarded.push(leases::Guarded {
            lease: crate::store::GRAPH_LEASE.to_string(),
            what: "the Microsoft Graph follower".to_string(),
            work: Box::new(move |stop| {
                Box::pin(crate::gdap_sync::run(handle.clone(), graph.to_vec(), stop))
            }),
        });
    }
    for (inbox, login) in config.inboxes.iter().cloned().zip(logins) {
        let (e, d) = (engine.clone(), durable_tx.clone());
        guarded.push(leases::Guarded {
            lease: crate::store::inbox_lease(&inbox.name),
            what: format!("inbox {}", inbox.name),
            work: Box::new(move |stop| {
                Box::pin(crate::io::imap::watch_inbox(
                    inbox.clone(),
                    login.clone(),
                    e.clone(),
                    d.clone(),
                    stop,
                ))
            }),
        });
    }
    let lease_store: Arc<dyn leases::LeaseStore> = Arc::new(leases::StoreLeases(store.clone()));
    for g in guarded {
        tasks.spawn(leases::keep(
            lease_store.clone(),
            g,
            shared.as_ref().map(|s| s.lease),
            held.clone(),
            stop_rx.clone(),
        ));
    }
    tracing::info!(
        inboxes = config.inboxes.len(),
        partners = config.partners.len(),
        store = %crate::store::describe(&config.store),
        instance = shared.as_ref().map(|s| s.instance.as_str()),
        lease_secs = shared.as_ref().map(|s| s.lease.as_secs()),
        admin_socket = %config.admin_socket.display(),
        "liaison started"
    );
    let lost = tokio::select! {
        _ = shutdown => None,
        reason = store_lost(store.as_ref()) => Some(reason),
    };
    match &lost {
        None => tracing::info!("shutting down"),
        Some(reason) => {
            tracing::warn!(reason = %reason, "the store gave up on commits it could not make durable; stopping every task")
        }
    }
    let _ = stop_tx.send(true);
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "a task failed during shutdown");
        }
    }
    if let Some(reason) = lost {
        // Nothing left to flush: the store refuses everything now; what it
        // dropped is redone from what is durable.
        return Err(DaemonError::StoreLost(reason));
    }
    store.flush()?;
    tracing::info!("stopped; store flushed");
    Ok(())
}

/// How often [`Store::lost`] is looked at: the time a lost store may go
/// unnoticed (its tasks' writes fail meanwhile, nothing is lost).
const LOST_POLL: Duration = Duration::from_millis(250);

/// Completes with the reason once the store has given up.
async fn store_lost(store: &dyn Store) -> String {
    loop {
        if let Some(reason) = store.lost() {
            return reason;
        }
        tokio::time::sleep(LOST_POLL).await;
    }
}

/// Applies time-driven changes every `every`, and once at start (a daemon
/// that was down when an invitation ran out catches up at once).
async fn sweep_timers(
    engine: Arc<Engine>,
    durable: watch::Sender<u64>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // A sweep reads every relationship summary (seconds at 1 000 000):
        // synchronous store work, so it runs on the blocking pool and the
        // runtime's workers keep serving IMAP and SMTP.
        let (e, d, stopping) = (engine.clone(), durable.clone(), shutdown.clone());
        let result = tokio::task::spawn_blocking(move || {
            // Each part that changed something is flushed and handed to
            // the outbox sender at once, not at the end of the whole sweep.
            e.sweep_in_parts(
                &mut |store| crate::engine::flush_and_publish(store, &d),
                &|| *stopping.borrow(),
            )
            .map(|_| ())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "timer sweep failed; retrying at the next one")
            }
            Err(e) => tracing::error!(error = %e, "timer sweep panicked; retrying at the next one"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
