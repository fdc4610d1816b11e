//! Wiring the daemon together: open the store, load templates, start one
//! watcher per inbox, the outbox sender and the admin socket; on shutdown,
//! tell every task, wait for them, and flush the store.

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

/// Runs until `shutdown` completes, then stops cleanly: the message being
/// processed is finished, in-flight mails are handed over or left queued,
/// and the store is flushed.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let (store, templates) = open_parts(&config)?;
    run_with(
        Arc::new(config),
        store,
        templates,
        Arc::new(SystemClock),
        Options::default(),
        shutdown,
    )
    .await
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
    if let Some(listener) = http {
        tasks.spawn(crate::io::http::serve(
            listener,
            config.inboxes.len(),
            oauth.clone(),
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
    tasks.spawn(sweep_timers(
        engine.clone(),
        durable_tx.clone(),
        options.sweep_every,
        stop_rx.clone(),
    ));
    // Microsoft Graph (GDAP) for the partners that configure it.
    let graph = crate::gdap_sync::partner_syncs(&config, &oauth).map_err(DaemonError::Graph)?;
    if !graph.is_empty() {
        let handle = Arc::new(crate::gdap_sync::EngineHandle {
            engine: engine.clone(),
            durable: durable_tx.clone(),
        });
        tasks.spawn(crate::gdap_sync::run(handle, graph, stop_rx.clone()));
    }
    for (inbox, login) in config.inboxes.iter().cloned().zip(logins) {
        tasks.spawn(crate::io::imap::watch_inbox(
            inbox,
            login,
            engine.clone(),
            durable_tx.clone(),
            stop_rx.clone(),
        ));
    }
    tracing::info!(
        inboxes = config.inboxes.len(),
        partners = config.partners.len(),
        store = %crate::store::describe(&config.store),
        admin_socket = %config.admin_socket.display(),
        "liaison started"
    );
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "a task failed during shutdown");
        }
    }
    store.flush()?;
    tracing::info!("stopped; store flushed");
    Ok(())
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
        // A sweep reads every relationship summary (about a third of a
        // second at 100 000): synchronous store work, so it runs on the
        // blocking pool and the runtime's workers keep serving IMAP and SMTP.
        let (e, d) = (engine.clone(), durable.clone());
        let result = tokio::task::spawn_blocking(move || {
            e.sweep().and_then(|changed| {
                if changed > 0 {
                    crate::engine::flush_and_publish(e.store().as_ref(), &d)?;
                }
                Ok(())
            })
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
