//! The landing page's two entry points into the engine: reading what a link
//! shows, and committing a POSTed answer. The decisions are the core's
//! ([`liaison_core::decide::web`]); this is the imperative half: the clock, the
//! engine's lock, composing the notices and one atomic commit, exactly as
//! for a customer's mail.

use super::{count_effects, EffectCounts, Engine, EngineError};
use crate::store::{Changes, Processed};
use liaison_core::decide::web::{self as core, Lookup, PageState, WebAnswer};
use liaison_core::decide::Context;

/// What a POST of the page's form came to.
#[derive(Debug, Clone, PartialEq)]
pub enum WebPosted {
    /// The link shows nothing: forged, expired or superseded (404).
    NotFound(Lookup),
    /// The anti-forgery value was missing or wrong; nothing changed (403).
    /// The lookup says in which language to say so.
    Forbidden(Lookup),
    /// The form's value was right but it named no answer (400).
    NoAnswer,
    /// Nothing to decide: the page (already answered, reply by mail) is
    /// shown as it is now (200).
    Unchanged(Lookup),
    /// A notice could not be composed (a template bug: templates are
    /// checked at start-up), so nothing was applied (500).
    Failed(String),
    /// The answer was committed; the page as it is now, and the decision's
    /// summary. The caller flushes and lets the outbox send.
    Answered(Lookup, String),
}

impl Engine {
    fn web_context(&self) -> Context<'_> {
        Context {
            config: &self.config,
            tokens: &self.tokens,
            now: self.clock.now(),
        }
    }

    /// What the page of `token` shows now. Reads only: a GET, a HEAD or a
    /// scanner's fetch changes nothing.
    pub fn web_page(&self, token: &str) -> Result<Lookup, EngineError> {
        let ctx = self.web_context();
        core::invitation_page(&ctx, self.store.as_ref(), token).map_err(EngineError::from)
    }

    /// A POST of the page's form: `answer`, with the anti-forgery value
    /// `form_token`. Decided and committed under the engine's lock, like a
    /// mail, so two answers (two POSTs, or a POST and a mail) are never
    /// both decided on the old state. Does not flush.
    pub fn web_answer(
        &self,
        token: &str,
        answer: Option<WebAnswer>,
        form_token: &str,
    ) -> Result<WebPosted, EngineError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let ctx = self.web_context();
        let lookup = core::invitation_page(&ctx, self.store.as_ref(), token)?;
        let Lookup::Page(page) = &lookup else {
            return Ok(WebPosted::NotFound(lookup));
        };
        if !core::form_token_ok(page, form_token) {
            return Ok(WebPosted::Forbidden(lookup));
        }
        let Some(answer) = answer else {
            return Ok(WebPosted::NoAnswer);
        };
        if page.state != PageState::Question {
            return Ok(WebPosted::Unchanged(lookup));
        }
        let Some(decision) = core::web_answer(&ctx, self.store.as_ref(), token, answer)? else {
            return Ok(WebPosted::Unchanged(lookup));
        };
        let outbox = match decision
            .mails
            .iter()
            .map(|plan| self.compose(plan, ctx.now))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(o) => o,
            Err(e) => {
                // Half a decision (state changed, no mail) would be worse
                // than none.
                tracing::error!(error = %e, "cannot compose the notices of an answer from the web page");
                return Ok(WebPosted::Failed(e.to_string()));
            }
        };
        let counts = EffectCounts::of(&decision, ctx.now);
        let key = core::web_key(page.invitation.id, answer);
        let summary = decision.summary.clone();
        self.store.commit(Changes {
            relationships: decision.relationships,
            invitations: decision.invitations,
            tickets: decision.tickets,
            outbox,
            processed: vec![Processed {
                key,
                at: ctx.now,
                class: liaison_core::effects::ProcessedClass::Web,
                summary: summary.clone(),
            }],
            ..Default::default()
        })?;
        count_effects(&counts);
        tracing::info!(
            partner = %page.invitation.partner,
            customer = %page.invitation.customer,
            %summary,
            "answered on the web page"
        );
        let now = core::invitation_page(&ctx, self.store.as_ref(), token)?;
        Ok(WebPosted::Answered(now, summary))
    }
}

impl Engine {
    /// The status page of ticket token `token`, if it is genuine. Reads
    /// only.
    pub fn web_ticket(
        &self,
        token: &str,
    ) -> Result<Option<liaison_core::decide::web::TicketPage>, EngineError> {
        let ctx = self.web_context();
        core::ticket_page(&ctx, self.store.as_ref(), token).map_err(EngineError::from)
    }

    /// The status-page token of ticket `id` (for tests and the operator).
    pub fn web_ticket_token(&self, id: u64) -> Result<Option<String>, EngineError> {
        let ctx = self.web_context();
        Ok(self.store.ticket(id)?.map(|t| core::ticket_token(&ctx, &t)))
    }
}

impl From<liaison_core::decide::WorkflowError> for EngineError {
    fn from(e: liaison_core::decide::WorkflowError) -> Self {
        match e {
            liaison_core::decide::WorkflowError::Store(e) => e.into(),
        }
    }
}
