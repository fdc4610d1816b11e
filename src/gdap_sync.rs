//! Following GDAP relationships in Microsoft Graph (shell): one task per
//! partner with a `[partner.graph]`, which makes the requests partners
//! asked for (`invite … roles …`), follows each open relationship's status
//! on a schedule, makes the access assignments on activation and sends
//! confirmed terminations. Every answer goes through a pure decision in
//! `workflow::gdap` and is committed like any other decision, so nothing
//! here changes state by itself.
//!
//! Schedule: a pass over the partner's open relationships every
//! `poll_interval_secs`, and at once when a command asked for something
//! ([`wake`]). A pass that meets a transient failure (Graph down, a 5xx,
//! no token) stops and is tried again after a backoff (1 s doubling up to
//! the poll interval); a 429 waits exactly Graph's `Retry-After`. Nothing
//! is lost meanwhile: what is still to do is in the store (a request
//! without a Graph id, `assignments_due`, `terminate_due`), and a request
//! whose answer was lost is found again by its unique display name.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::io::graph::{GdapApi, GraphError};
use liaison_core::config::Partner;
use liaison_core::decide::{self as workflow, Context, Decision, WorkflowError};
use liaison_core::effects::StoreView;
use liaison_core::model::gdap::{
    self as gdap, AccessAssignmentBody, GdapLink, GdapStatus, GraphRelationship, RequestAction,
};

/// First wait after a transient failure.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);

static WAKE: Notify = Notify::const_new();

/// Asks every partner's task for a pass now (a command asked Graph for
/// something).
pub fn wake() {
    WAKE.notify_waiters();
}

/// What the sync needs of the engine: the open GDAP links, and a way to
/// decide and commit under the engine's lock.
pub trait GdapEngine: Send + Sync {
    /// The relationships of `partner` whose GDAP link is open, with it.
    fn open_gdap_links(&self, partner: &str) -> Result<Vec<(String, GdapLink)>, String>;
    /// Runs `decide` on the current state and commits its decision;
    /// answers how many relationships it changed.
    fn decide_and_commit(
        &self,
        decide: &dyn Fn(&Context, &dyn StoreView) -> Result<Decision, WorkflowError>,
    ) -> Result<usize, String>;
}

/// One partner's connection to Graph.
#[derive(Clone)]
pub struct PartnerSync {
    /// The partner (its access assignments, its name for notices).
    pub partner: Partner,
    /// The Graph client.
    pub api: Arc<dyn GdapApi>,
    /// Time between passes.
    pub poll_interval: Duration,
}

/// Why a pass stopped early.
enum PassError {
    /// Graph (or the token endpoint) failed in a way that passes: try again.
    Transient(GraphError),
    /// The store failed.
    Store(String),
}

impl From<GraphError> for PassError {
    fn from(e: GraphError) -> Self {
        PassError::Transient(e)
    }
}

/// Runs one task per partner until `shutdown` turns true.
pub async fn run(
    engine: Arc<dyn GdapEngine>,
    partners: Vec<PartnerSync>,
    shutdown: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for p in partners {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(partner_loop(engine, p, shutdown));
    }
    while tasks.join_next().await.is_some() {}
}

async fn partner_loop(
    engine: Arc<dyn GdapEngine>,
    sync: PartnerSync,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Registered before the pass, so a wake during it is not lost.
        let woken = WAKE.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let wait = match pass(engine.as_ref(), &sync).await {
            Ok(()) => {
                backoff = MIN_BACKOFF;
                sync.poll_interval
            }
            Err(PassError::Transient(GraphError::Throttled { retry_after, .. })) => {
                tracing::warn!(partner = %sync.partner.id, retry_after_secs = retry_after.as_secs(), "Microsoft Graph is throttling; waiting as asked");
                retry_after
            }
            Err(PassError::Transient(e)) => {
                tracing::warn!(partner = %sync.partner.id, error = %e, backoff_secs = backoff.as_secs(), "Microsoft Graph call failed; trying again later");
                let w = backoff;
                backoff = (backoff * 2).min(sync.poll_interval.max(MIN_BACKOFF));
                w
            }
            Err(PassError::Store(e)) => {
                tracing::error!(partner = %sync.partner.id, error = %e, "store error while following GDAP relationships");
                sync.poll_interval
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut woken => {}
            _ = shutdown.changed() => {}
        }
    }
}

fn commit(
    engine: &dyn GdapEngine,
    decide: &dyn Fn(&Context, &dyn StoreView) -> Result<Decision, WorkflowError>,
) -> Result<(), PassError> {
    engine
        .decide_and_commit(decide)
        .map(|_| ())
        .map_err(PassError::Store)
}

/// One pass over the partner's open relationships.
async fn pass(engine: &dyn GdapEngine, sync: &PartnerSync) -> Result<(), PassError> {
    let partner = &sync.partner;
    let links = engine
        .open_gdap_links(&partner.id)
        .map_err(PassError::Store)?;
    for (customer, link) in links {
        let customer = customer.as_str();
        let Some(id) = link.relationship_id.clone() else {
            match make_request(sync.api.as_ref(), &link).await {
                Ok(seen) => commit(engine, &|ctx, view| {
                    workflow::gdap::request_created(ctx, view, partner, customer, &seen)
                })?,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    let reason = e.to_string();
                    commit(engine, &|ctx, view| {
                        workflow::gdap::call_failed(
                            ctx,
                            view,
                            partner,
                            customer,
                            "the GDAP relationship request",
                            &reason,
                        )
                    })?
                }
            }
            continue;
        };
        if link.terminate_due {
            match sync.api.request_action(&id, RequestAction::Terminate).await {
                Ok(()) => commit(engine, &|_, view| {
                    workflow::gdap::terminate_sent(view, partner, customer)
                })?,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    let reason = e.to_string();
                    commit(engine, &|ctx, view| {
                        workflow::gdap::call_failed(
                            ctx,
                            view,
                            partner,
                            customer,
                            "the terminate request",
                            &reason,
                        )
                    })?
                }
            }
        }
        let seen = match sync.api.get_relationship(&id).await {
            Ok(seen) => seen,
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                // A refusal to read (403, 404) does not change by itself and
                // is the operator's to fix: logged at every pass, no mail.
                tracing::error!(partner = %partner.id, %customer, relationship = %id, error = %e, "cannot read the GDAP relationship");
                continue;
            }
        };
        commit(engine, &|ctx, view| {
            workflow::gdap::observed(ctx, view, partner, customer, &seen)
        })?;
        let activated = matches!(seen.status, GdapStatus::Active | GdapStatus::Expiring);
        let assignments_due = link.assignments_due
            || (activated
                && link.status != Some(seen.status)
                && !partner.access_assignments.is_empty());
        if activated && assignments_due {
            let failures = assign(sync, &seen).await?;
            commit(engine, &|ctx, view| {
                workflow::gdap::assignments_tried(ctx, view, partner, customer, &failures)
            })?;
        }
    }
    Ok(())
}

/// Creates the relationship (or finds the one an earlier attempt created)
/// and locks it for approval; answers it as Graph shows it afterwards.
async fn make_request(api: &dyn GdapApi, link: &GdapLink) -> Result<GraphRelationship, GraphError> {
    let created = match api
        .create_relationship(&link.request.body(&link.display_name))
        .await
    {
        Ok(r) => r,
        // 409: the name is taken, by our own earlier attempt whose answer
        // was lost (the name is derived from the invitation's keyed id).
        Err(GraphError::Conflict { .. }) => {
            match api.find_by_display_name(&link.display_name).await? {
                Some(r) => r,
                None => {
                    return Err(GraphError::Conflict {
                        call: "create delegatedAdminRelationship".into(),
                        code: "Conflict".into(),
                        message: format!(
                    "the display name `{}` is taken and no relationship of that name can be read",
                    link.display_name
                ),
                    })
                }
            }
        }
        Err(e) => return Err(e),
    };
    if created.status == GdapStatus::Created {
        api.request_action(&created.id, RequestAction::LockForApproval)
            .await?;
    }
    api.get_relationship(&created.id).await
}

/// Makes the partner's access assignments on an active relationship; each
/// failure is one line for the partner. A transient failure stops them all
/// (they are tried again at the next pass).
async fn assign(sync: &PartnerSync, seen: &GraphRelationship) -> Result<Vec<String>, PassError> {
    let mut failures = Vec::new();
    let granted = seen.access_details.ids();
    for a in &sync.partner.access_assignments {
        let mut ids = Vec::new();
        let mut missing = Vec::new();
        for name in &a.roles {
            match gdap::role_by_name(name) {
                Some(r)
                    if granted
                        .iter()
                        .any(|g| g.eq_ignore_ascii_case(r.template_id)) =>
                {
                    ids.push(r.template_id.to_string())
                }
                _ => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            failures.push(format!(
                "group {}: the relationship does not include {}",
                a.group_id,
                missing.join(", ")
            ));
        }
        if ids.is_empty() {
            continue;
        }
        let body = AccessAssignmentBody::new(&a.group_id, &ids);
        match sync.api.create_access_assignment(&seen.id, &body).await {
            Ok(aid) => {
                tracing::info!(partner = %sync.partner.id, group = %a.group_id, assignment = %aid, "access assignment created")
            }
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => failures.push(format!("group {}: {e}", a.group_id)),
        }
    }
    Ok(failures)
}

/// The engine as the sync sees it: decisions committed, flushed and the
/// durable watermark moved, so their mails go out at once.
pub struct EngineHandle {
    /// The engine.
    pub engine: Arc<crate::engine::Engine>,
    /// The outbox sender's watermark.
    pub durable: watch::Sender<u64>,
}

impl GdapEngine for EngineHandle {
    fn open_gdap_links(&self, partner: &str) -> Result<Vec<(String, GdapLink)>, String> {
        self.engine
            .open_gdap_links(partner)
            .map_err(|e| e.to_string())
    }

    fn decide_and_commit(
        &self,
        decide: &dyn Fn(&Context, &dyn StoreView) -> Result<Decision, WorkflowError>,
    ) -> Result<usize, String> {
        let n = self
            .engine
            .decide_and_commit(decide)
            .map_err(|e| e.to_string())?;
        if n > 0 {
            crate::engine::flush_and_publish(self.engine.store().as_ref(), &self.durable)
                .map_err(|e| e.to_string())?;
        }
        Ok(n)
    }
}

/// The OAuth2 client (client credentials) as the Graph client's token
/// source: a token Graph refused is handed back to the client once
/// (`refused`), which fetches a fresh one unless a newer one exists.
pub struct OAuthTokens {
    client: Arc<crate::oauth::TokenClient>,
    /// The last token handed out and whether Graph refused it.
    last: std::sync::Mutex<(Option<crate::oauth::BearerToken>, bool)>,
}

impl OAuthTokens {
    /// A token source over `client`.
    pub fn new(client: Arc<crate::oauth::TokenClient>) -> Self {
        OAuthTokens {
            client,
            last: std::sync::Mutex::new((None, false)),
        }
    }
}

impl crate::io::graph::BearerTokenSource for OAuthTokens {
    fn bearer_token(&self) -> futures::future::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let refused = {
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                let r = if last.1 { last.0.clone() } else { None };
                last.1 = false;
                r
            };
            let token = match refused {
                Some(t) => self.client.refused(&t).await,
                None => self.client.bearer().await,
            }
            .map_err(|e| e.to_string())?;
            let secret = token.secret().to_string();
            self.last.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(token);
            Ok(secret)
        })
    }

    fn invalidate(&self) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
    }
}

/// One [`PartnerSync`] per partner with a `[partner.graph]`.
pub fn partner_syncs(
    config: &liaison_core::config::Config,
    oauth: &crate::oauth::OAuthClients,
) -> Result<Vec<PartnerSync>, String> {
    let mut out = Vec::new();
    for p in &config.partners {
        let Some(g) = &p.graph else { continue };
        let client = oauth
            .get(&g.oauth2)
            .ok_or_else(|| format!("partner {}: no [[oauth2]] client `{}`", p.id, g.oauth2))?;
        let base = crate::io::graph::BaseUrl::parse(&g.base_url)
            .map_err(|e| format!("partner {}: graph.base_url {e}", p.id))?;
        let api =
            crate::io::graph::GraphClient::new(base, Arc::new(OAuthTokens::new(client)), None)
                .map_err(|e| format!("partner {}: {e}", p.id))?;
        out.push(PartnerSync {
            partner: p.clone(),
            api: Arc::new(api),
            poll_interval: Duration::from_secs(g.poll_interval_secs),
        });
    }
    Ok(out)
}
