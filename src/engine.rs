//! One inbound message through the core and into the store: parse, dedupe,
//! decide, render, commit. The imperative counterpart of [`liaison_core::decide`].
//!
//! A message's effects (state, invitations, outgoing mails), its processed
//! marker and the inbox cursor are committed in one atomic write, so after a
//! crash a message is either fully done or not done at all. Durability needs
//! a flush, which the caller does once per batch (group commit).

use crate::clock::Clock;
use crate::store::{Changes, Cursor, Processed, ProcessedClass, Store, StoreError};
use liaison_core::config::Config;
use liaison_core::decide::{self, Context, MailClass};
use liaison_core::model::token::TokenKey;
use liaison_core::render::templates::Templates;
use std::sync::{Arc, Mutex};

mod web;
pub use web::WebPosted;

/// Errors that stop processing (the message stays unprocessed and is tried
/// again later). Bad input is *not* an error: it is quarantined.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why `quarantine release` or `held release` did not go through. Each
/// message says what the operator can do next.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// No processed message has that key.
    #[error("no message {key} is known")]
    UnknownMessage {
        /// The key asked for.
        key: String,
    },
    /// The message was processed, but not quarantined.
    #[error("{key} is not quarantined (it was {class})")]
    NotQuarantined {
        /// The key asked for.
        key: String,
        /// What it was.
        class: ProcessedClass,
    },
    /// The quarantined mail's bytes are not in the store.
    #[error(
        "{key} cannot be released: its raw mail is not in the store (it was over \
         security.max_message_bytes and not downloaded, or over \
         security.quarantine_keep_bytes, or the store's quarantine space \
         security.quarantine_store_bytes was full). The original is in the inbox's \
         quarantine folder on the IMAP server: have it sent again by an \
         authenticated sender, or raise the limit and move it back to the inbox"
    )]
    NotKept {
        /// The key asked for.
        key: String,
    },
    /// Deciding it again panicked.
    #[error("{key} is still refused: internal error while processing: {panic}; please report")]
    Panicked {
        /// The key asked for.
        key: String,
        /// The panic's message.
        panic: String,
    },
    /// The full policy refused it for a reason the operator was not shown;
    /// it is quarantined again under a new key with that reason.
    #[error(
        "{key} is still refused, for a reason you were not shown: {reason} It is quarantined \
         again as {again} with that reason; `liaison quarantine release {again}` decides it \
         trusting the sender"
    )]
    RefusedForAnotherReason {
        /// The key asked for.
        key: String,
        /// The new reason.
        reason: String,
        /// The key it is quarantined under now.
        again: String,
    },
    /// Decided again trusting the sender, it is still quarantined.
    #[error("{key} is still refused: {reason}")]
    StillRefused {
        /// The key asked for.
        key: String,
        /// Why.
        reason: String,
    },
    /// No held mail has that number.
    #[error("no held mail {id}")]
    UnknownHeld {
        /// The number asked for.
        id: u64,
    },
    /// The held mail was not kept whole.
    #[error("held mail {id} cannot be released: it was not kept ({reason}); ask its sender to send it again")]
    HeldNotKept {
        /// The number asked for.
        id: u64,
        /// Why it was held.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for ReleaseError {
    fn from(e: StoreError) -> Self {
        ReleaseError::Engine(EngineError::Store(e))
    }
}

impl From<liaison_core::effects::ReadError> for EngineError {
    fn from(e: liaison_core::effects::ReadError) -> Self {
        EngineError::Store(StoreError::Read(e))
    }
}

/// The result of one command run through [`Engine::run_commands_as_partner`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandResult {
    /// The command, as its line in the command language.
    pub command: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened, or what was wrong.
    pub result: String,
}

/// The outcome of one message, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Message-ID or body hash.
    pub key: String,
    /// What the message was.
    pub class: ProcessedClass,
    /// What happened.
    pub summary: String,
    /// Subjects of the mails queued.
    pub queued: Vec<String>,
}

/// Relationships the timer sweep decides and commits in one turn (see
/// [`Engine::sweep_in_parts`]): composing one notice takes a fraction of a
/// millisecond, so a mail waits for the sweep some tens of milliseconds at
/// most. (At 100, one mail in 1 778 waited 108 ms on PostgreSQL at
/// 1 000 000 relationships, the flush of a part included; more parts cost
/// a flush each, a few seconds over a sweep that changes 10 000.)
pub const SWEEP_CHUNK: usize = 40;

/// A mail as parsed for the engine, or why it could not be.
pub type ParsedMail =
    Result<liaison_core::mail::inbound::InboundMail, liaison_core::mail::inbound::InboundError>;

/// Processes messages; shared by every inbox task.
pub struct Engine {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    templates: Templates,
    tokens: TokenKey,
    clock: Arc<dyn Clock>,
    /// Serialises decide-and-commit across inboxes: two mails about the same
    /// relationship arriving in different inboxes must not both read the old
    /// state.
    lock: Mutex<()>,
}

impl Engine {
    /// An engine over the given parts.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        templates: Templates,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let tokens = TokenKey::new(config.security.token_secret.expose().as_bytes());
        let engine = Engine {
            config,
            store,
            templates,
            tokens,
            clock,
            lock: Mutex::new(()),
        };
        engine.publish_held();
        engine
    }

    /// This process's turn to decide: the lock that serialises decisions
    /// across its inboxes and, with a shared store, across instances
    /// ([`Store::begin_decision`]). Held from before a decision reads until
    /// after it committed.
    fn turn(&self) -> Result<DecisionTurn<'_>, StoreError> {
        let lock = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.store.begin_decision()?;
        Ok(DecisionTurn {
            _lock: lock,
            store: self.store.as_ref(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Composes every planned mail, logging and skipping one that cannot be
    /// built. For notices whose state change matters more than the mail;
    /// templates are checked at start-up, so a failure here is a bug.
    fn compose_or_log(
        &self,
        plans: &[decide::MailPlan],
        now: u64,
        what: &str,
    ) -> Vec<crate::store::OutgoingMail> {
        plans
            .iter()
            .filter_map(|plan| match self.compose(plan, now) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(error = %e, "cannot compose {what}");
                    None
                }
            })
            .collect()
    }

    /// Renders one planned mail with this engine's configuration,
    /// templates and id key.
    fn compose(
        &self,
        plan: &decide::MailPlan,
        now: u64,
    ) -> Result<crate::store::OutgoingMail, liaison_core::render::compose::ComposeError> {
        liaison_core::render::compose::compose(
            &self.config,
            &self.templates,
            self.tokens.ids(),
            plan,
            now,
        )
    }

    /// Processes one fetched message and records `cursor` for its inbox in
    /// the same commit. Does not flush.
    pub fn process(&self, inbox: &str, cursor: Cursor, raw: &[u8]) -> Result<Outcome, EngineError> {
        self.process_parsed(inbox, cursor, raw, None)
    }

    /// Parses a fetched chunk's mails ahead of deciding them, and has the
    /// store read at once what those decisions will read — on a store
    /// across a network one round trip for the chunk instead of several a
    /// mail. Returns each mail's parse for [`Engine::process_parsed`]
    /// (`None` where parsing panicked: it is parsed again there, where a
    /// panic quarantines the mail). With a store that gains nothing
    /// (sled), nothing is parsed ahead.
    pub fn prefetch(&self, raws: &[&[u8]]) -> Vec<Option<ParsedMail>> {
        if !self.store.prefetches() {
            return raws.iter().map(|_| None).collect();
        }
        let max = self.config.security.max_message_bytes;
        let parsed: Vec<Option<ParsedMail>> = raws
            .iter()
            .map(|raw| {
                std::panic::catch_unwind(|| liaison_core::mail::inbound::parse(raw, max)).ok()
            })
            .collect();
        let mails: Vec<&liaison_core::mail::inbound::InboundMail> = parsed
            .iter()
            .filter_map(|p| p.as_ref().and_then(|p| p.as_ref().ok()))
            .collect();
        let warmed = self.turn().and_then(|_turn| self.store.prefetch(&mails));
        if let Err(e) = warmed {
            // Only a hint: each decision reads what it needs anyway.
            tracing::debug!(error = %e, "could not read ahead for a chunk of mail");
        }
        parsed
    }

    /// [`Engine::process`] with the mail parsed already (by
    /// [`Engine::prefetch`]), or parsed here when `parsed` is `None`.
    pub fn process_parsed(
        &self,
        inbox: &str,
        cursor: Cursor,
        raw: &[u8],
        parsed: Option<ParsedMail>,
    ) -> Result<Outcome, EngineError> {
        // Parsing reads nothing shared, so it runs before the lock: another
        // inbox's mail can be decided meanwhile.
        let parsed = parsed.unwrap_or_else(|| {
            liaison_core::mail::inbound::parse(raw, self.config.security.max_message_bytes)
        });
        let _turn = self.turn()?;
        #[cfg(debug_assertions)]
        test_fault(&parsed);
        // A message that cannot be parsed has no Message-ID to key it by;
        // its place in the mailbox identifies it instead.
        let bad_key = place_key(inbox, cursor);
        self.process_with(
            &self.config,
            Some((inbox.to_string(), cursor)),
            raw,
            parsed,
            bad_key,
            None,
        )
    }

    /// Releases a quarantined message: it is decided again, this time
    /// without the sender authentication check (the operator vouches for
    /// it), and its effects replace the quarantine record. Messages that
    /// were never downloaded or cannot be parsed cannot be released.
    ///
    /// The operator vouches for the reason `quarantine list` showed, and
    /// only for that: a mail quarantined for something else (a panic, a
    /// reply that could not be composed) is first decided under the full
    /// policy. If that refuses it for another reason (its sender is not
    /// authenticated: it may be a forged partner command that happened to
    /// hit a bug), it is quarantined again with that reason and the
    /// operator is told; a second release, now of what they have seen,
    /// trusts the sender.
    pub fn release(&self, key: &str) -> Result<Outcome, ReleaseError> {
        let _turn = self.turn()?;
        let shown = match self.store.processed(key)? {
            Some(p) if p.class == ProcessedClass::Quarantined => p.summary,
            Some(p) => {
                return Err(ReleaseError::NotQuarantined {
                    key: key.to_string(),
                    class: p.class,
                })
            }
            None => {
                return Err(ReleaseError::UnknownMessage {
                    key: key.to_string(),
                })
            }
        };
        let Some(raw) = self.store.quarantined_raw(key)? else {
            return Err(ReleaseError::NotKept {
                key: key.to_string(),
            });
        };
        let mut trusting = (*self.config).clone();
        trusting.security.trusted_authserv_id = None;
        let parsed = liaison_core::mail::inbound::parse(&raw, trusting.security.max_message_bytes);
        // Under the full policy first, without effects: does it refuse the
        // mail for exactly the reason the operator saw?
        let vouched = match &parsed {
            Ok(mail) => {
                let ctx = Context {
                    config: &self.config,
                    tokens: &self.tokens,
                    now: self.clock.now(),
                };
                let strict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    decide::decide(&ctx, self.store.as_ref(), mail)
                }));
                match strict {
                    Ok(Ok(d)) => d.class != MailClass::Quarantined || d.summary == shown,
                    Ok(Err(decide::WorkflowError::Store(e))) => {
                        return Err(ReleaseError::Engine(e.into()))
                    }
                    // Still panics: decided below, which answers with it.
                    Err(_) => true,
                }
            }
            Err(_) => true,
        };
        let config: &Config = if vouched { &trusting } else { &self.config };
        // The bug that quarantined a mail may still be there: a panic
        // answers the operator instead of ending the admin request.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.process_with(config, None, &raw, parsed, key.to_string(), Some(key))
        }));
        let outcome = match run {
            Ok(outcome) => outcome?,
            Err(payload) => {
                return Err(ReleaseError::Panicked {
                    key: key.to_string(),
                    panic: panic_message(payload.as_ref()),
                })
            }
        };
        if outcome.class == ProcessedClass::Quarantined && !vouched {
            return Err(ReleaseError::RefusedForAnotherReason {
                key: key.to_string(),
                reason: outcome.summary,
                again: outcome.key,
            });
        }
        if outcome.class == ProcessedClass::Quarantined {
            return Err(ReleaseError::StillRefused {
                key: key.to_string(),
                reason: outcome.summary,
            });
        }
        Ok(outcome)
    }

    fn process_with(
        &self,
        config: &Config,
        cursor: Option<(String, Cursor)>,
        raw: &[u8],
        parsed: Result<
            liaison_core::mail::inbound::InboundMail,
            liaison_core::mail::inbound::InboundError,
        >,
        bad_key: String,
        releasing: Option<&str>,
    ) -> Result<Outcome, EngineError> {
        let now = self.clock.now();
        let mail = match parsed {
            Ok(m) => m,
            Err(e) => {
                return self.record(
                    bad_key,
                    ProcessedClass::Quarantined,
                    e.to_string(),
                    now,
                    cursor,
                    Some(raw),
                )
            }
        };
        // A quarantined record does not make a later copy a duplicate: the
        // key covers sender and content, but a forgery of exactly that mail
        // (same From, same text) must not keep the genuine, authenticated
        // one from being decided. Deciding a quarantined mail again only
        // quarantines it again.
        let earlier = self
            .store
            .processed(&mail.key)?
            .filter(|_| releasing.is_none());
        let requarantine = earlier
            .as_ref()
            .is_some_and(|p| p.class == ProcessedClass::Quarantined);
        if let Some(prev) = earlier.filter(|_| !requarantine) {
            self.store.commit(Changes {
                cursor,
                ..Default::default()
            })?;
            crate::metrics::count_class(ProcessedClass::Duplicate);
            return Ok(Outcome {
                key: mail.key,
                class: ProcessedClass::Duplicate,
                summary: format!(
                    "already processed at {} as {}",
                    decide::rfc3339(prev.at),
                    prev.class
                ),
                queued: vec![],
            });
        }
        let ctx = Context {
            config,
            tokens: &self.tokens,
            now,
        };
        let mut decision = match decide::decide(&ctx, self.store.as_ref(), &mail) {
            Ok(d) => d,
            Err(decide::WorkflowError::Store(e)) => return Err(e.into()),
        };
        let hour = now / 3600;
        let composed = self
            .apply_caps(&ctx, &mut decision, &mail.key, mail.from.as_deref(), hour)
            .and_then(|caps| {
                let outbox = decision
                    .mails
                    .iter()
                    .map(|plan| self.compose(plan, now))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((caps, outbox))
            });
        let (caps, outbox) = match composed {
            Ok(c) => c,
            Err(e) => {
                // Nothing of this decision is applied: half a decision
                // (state changed, no mail) would be worse than none.
                return self.record(
                    mail.key,
                    ProcessedClass::Quarantined,
                    format!("could not compose a reply: {e}"),
                    now,
                    cursor,
                    Some(raw),
                );
            }
        };
        let queued: Vec<String> = outbox.iter().map(|m| m.subject.clone()).collect();
        let held_now = caps.held.len() as u64;
        let class = decision.class.kind();
        let decision_counts = EffectCounts::of(&decision, now);
        let processed = Processed {
            key: mail.key.clone(),
            at: now,
            class,
            summary: decision.summary.clone(),
        };
        let graph_work = decision.relationships.iter().any(|r| {
            r.gdap
                .as_ref()
                .is_some_and(|g| g.relationship_id.is_none() || g.terminate_due)
        });
        self.store.commit(Changes {
            relationships: decision.relationships,
            invitations: decision.invitations,
            tickets: decision.tickets,
            outbox,
            processed: vec![processed],
            cursor,
            replies: caps.replied.into_iter().map(|a| (a, hour)).collect(),
            quarantined_raw: if decision.class == MailClass::Quarantined {
                self.kept_raw(raw)?
                    .map(|r| (mail.key.clone(), r))
                    .into_iter()
                    .collect()
            } else {
                vec![]
            },
            released: releasing
                .map(str::to_string)
                .or_else(|| requarantine.then(|| mail.key.clone()))
                .into_iter()
                .collect(),
            support_requests: caps.requests.into_iter().map(|c| (c, hour)).collect(),
            held_reported: caps.reported.into_iter().map(|p| (p, hour)).collect(),
            held: caps.held,
            ..Default::default()
        })?;
        if graph_work {
            // A command asked Microsoft Graph for something: do not wait
            // for the next poll.
            crate::gdap_sync::wake();
        }
        if held_now > 0 {
            crate::metrics::add(&crate::metrics::METRICS.mails_held, held_now);
            // The gauge was set from the store at start and moves with each
            // hold and release: no rescan of every held mail per mail held
            // (that is a flood's hot path).
            crate::metrics::add(&crate::metrics::METRICS.held_now, held_now);
        }
        // Fill in the mail's span (opened by the IMAP watcher).
        let span = tracing::Span::current();
        match &decision.class {
            MailClass::Command { partner } => {
                span.record("partner", partner.as_str());
            }
            MailClass::Customer { partner, customer } => {
                span.record("partner", partner.as_str());
                span.record("customer", customer.as_str());
            }
            _ => {}
        }
        if decision.class == MailClass::Ignored {
            tracing::info!(key = %mail.key, reason = %decision.summary, "mail ignored");
        }
        crate::metrics::count_class(class);
        count_effects(&decision_counts);
        Ok(Outcome {
            key: mail.key,
            class,
            summary: decision.summary,
            queued,
        })
    }

    /// Applies the caps to a decision: replies past the per-address reply
    /// cap and support requests past the per-customer cap are taken out of
    /// `decision.mails` and composed as held mails (with the reason), and
    /// the partner concerned gets one notice an hour that mails are held.
    /// Nothing a cap stops is dropped. `sender` is the inbound mail's From:
    /// mails to it are replies.
    fn apply_caps(
        &self,
        ctx: &Context,
        decision: &mut decide::Decision,
        key: &str,
        sender: Option<&str>,
        hour: u64,
    ) -> Result<Caps, liaison_core::render::compose::ComposeError> {
        // The support-request cap first: a request it holds is held whole,
        // and its acknowledgement must not count as a reply sent.
        let store = self.store.clone();
        let requests = move |c: &str| store.support_requests(c, hour).unwrap_or(u32::MAX);
        let (request, mut held) = decide::apply_support_cap(
            decision,
            &requests,
            self.config.security.max_support_requests_per_hour,
        );
        let store = self.store.clone();
        let replies = move |a: &str| store.replies_sent(a, hour).unwrap_or(u32::MAX);
        let (replied, held_replies) = decide::apply_reply_cap(
            decision,
            sender,
            &replies,
            self.config.security.max_replies_per_hour,
        );
        held.extend(held_replies);
        let mut reported = Vec::new();
        for h in &held {
            tracing::warn!(key = %key, to = ?h.plan.to, reason = %h.reason, "mail held back");
            let Some(pid) = &h.partner else { continue };
            if reported.contains(pid) || self.store.held_reported(pid, hour).unwrap_or(true) {
                continue;
            }
            if let Some(partner) = ctx.config.partner(pid) {
                decision
                    .mails
                    .push(decide::held_notice(ctx, partner, h, key));
                reported.push(pid.clone());
            }
        }
        if !held.is_empty() {
            decision.summary.push_str(&format!(
                "; {} mail(s) held ({}); see `liaison held list`",
                held.len(),
                held[0].reason
            ));
        }
        // Held mails are bounded in all, like the quarantine: past the
        // budget a hold is recorded without its mail (the original stays in
        // the inbox), so a flood of held requests cannot fill the disk.
        let budget = self.config.security.held_store_bytes;
        let mut used = self.store.held_bytes().unwrap_or(u64::MAX);
        let mut holds = Vec::with_capacity(held.len());
        for h in held {
            let mut mail = self.compose(&h.plan, ctx.now)?;
            let size = mail.raw.len() as u64;
            let kept = used.saturating_add(size) <= budget;
            let mut reason = h.reason;
            if kept {
                used += size;
            } else {
                tracing::warn!(
                    key = %key,
                    size,
                    limit = budget,
                    "held store is full (security.held_store_bytes); the held mail is listed but not kept"
                );
                mail.raw = String::new();
                reason.push_str(&format!(
                    "; not kept: the held mails fill security.held_store_bytes ({budget} bytes), so this one cannot be released; the original mail is still in the inbox"
                ));
            }
            holds.push(crate::store::Hold {
                at: ctx.now,
                reason,
                partner: h.partner,
                mail,
                kept,
            });
        }
        Ok(Caps {
            replied,
            requests: request.into_iter().collect(),
            reported,
            held: holds,
        })
    }

    /// Sets the gauge of held mails from the store (at start and after a
    /// release; a hold adds to it).
    fn publish_held(&self) {
        if let Ok(n) = self.store.held_count() {
            crate::metrics::set(&crate::metrics::METRICS.held_now, n);
        }
    }

    /// Sends a held mail after all: it moves into the outbox. Does not
    /// flush. Returns the mail's subject and recipients.
    pub fn release_held(&self, id: u64) -> Result<(String, Vec<String>), ReleaseError> {
        let _turn = self.turn()?;
        let Some(held) = self.store.held_mail(id)? else {
            return Err(ReleaseError::UnknownHeld { id });
        };
        if !held.kept {
            return Err(ReleaseError::HeldNotKept {
                id,
                reason: held.reason,
            });
        }
        let done = (held.mail.subject.clone(), held.mail.recipients.clone());
        self.store.commit(Changes {
            outbox: vec![held.mail],
            released_held: vec![id],
            ..Default::default()
        })?;
        tracing::info!(id, subject = %done.0, to = ?done.1, "held mail released");
        self.publish_held();
        Ok(done)
    }

    /// `recipient` refused a mail for good (a 5xx reply, or given up after
    /// too many deferrals). If it carried an invitation, the invitation is
    /// marked bounced and the partner told; otherwise the partner the mail
    /// concerned is told which address did not get it (never the refused
    /// address itself, so a refused partner address cannot loop). Does not
    /// flush. Returns how many mails were queued.
    pub fn delivery_failed(
        &self,
        mail: &crate::store::OutgoingMail,
        recipient: &str,
        reason: &str,
    ) -> Result<usize, EngineError> {
        let _turn = self.turn()?;
        let now = self.clock.now();
        let ctx = Context {
            config: &self.config,
            tokens: &self.tokens,
            now,
        };
        let key = format!("smtp-failure:{}:{recipient}", mail.message_id);
        let decided = if mail.invitation.is_some() {
            decide::delivery_failed(
                &ctx,
                self.store.as_ref(),
                &mail.message_id,
                recipient,
                reason,
                &key,
            )
        } else {
            decide::recipient_refused(
                &ctx,
                self.store.as_ref(),
                &decide::RefusedMail {
                    subject: &mail.subject,
                    recipients: &mail.recipients,
                    ticket: mail.ticket,
                },
                recipient,
                reason,
                &key,
            )
        };
        let decision = match decided {
            Ok(d) => d,
            Err(decide::WorkflowError::Store(e)) => return Err(e.into()),
        };
        tracing::info!(message_id = %mail.message_id, summary = %decision.summary, "delivery failure handled");
        let outbox = self.compose_or_log(&decision.mails, now, "a delivery failure notice");
        let queued = outbox.len();
        self.store.commit(Changes {
            invitations: decision.invitations,
            outbox,
            ..Default::default()
        })?;
        Ok(queued)
    }

    /// Runs `commands`, built as data (`liaison import`), as commands of
    /// `partner_id` sent from its first address, and returns one result per
    /// command, in order, instead of mailing a transcript. Nothing is parsed
    /// from text and no mail check applies: the caller is the operator, on
    /// the admin socket or with the store itself. Invitations and other
    /// mails are queued as usual. `key` identifies the batch, so running the
    /// same batch twice does nothing the second time. Does not flush.
    pub fn run_commands_as_partner(
        &self,
        partner_id: &str,
        commands: Vec<liaison_core::command::Command>,
        key: &str,
    ) -> Result<Vec<CommandResult>, EngineError> {
        let _turn = self.turn()?;
        let not_run = |why: String| {
            commands
                .iter()
                .map(|c| CommandResult {
                    command: c.to_string(),
                    ok: false,
                    result: why.clone(),
                })
                .collect()
        };
        let Some(partner) = self.config.partner(partner_id) else {
            return Ok(not_run(format!(
                "not run: no partner `{partner_id}` in the configuration"
            )));
        };
        if let Some(prev) = self.store.processed(key)? {
            return Ok(not_run(format!(
                "not run: batch {key} was already run at {}",
                decide::rfc3339(prev.at)
            )));
        }
        let now = self.clock.now();
        let ctx = Context {
            config: &self.config,
            tokens: &self.tokens,
            now,
        };
        let (decision, outcomes) = match decide::run_given_commands(
            &ctx,
            self.store.as_ref(),
            partner,
            &partner.emails[0],
            key,
            &commands,
        ) {
            Ok(d) => d,
            Err(decide::WorkflowError::Store(e)) => return Err(e.into()),
        };
        let outbox = self.compose_or_log(&decision.mails, now, "an imported invitation");
        count_effects(&EffectCounts::of(&decision, now));
        self.store.commit(Changes {
            relationships: decision.relationships,
            invitations: decision.invitations,
            tickets: decision.tickets,
            outbox,
            processed: vec![Processed {
                key: key.to_string(),
                at: now,
                class: ProcessedClass::Import,
                summary: decision.summary,
            }],
            ..Default::default()
        })?;
        Ok(commands
            .iter()
            .zip(outcomes)
            .map(|(c, o)| CommandResult {
                command: c.to_string(),
                ok: o.ok,
                result: o.result,
            })
            .collect())
    }

    /// Processes one message the MTA handed over (`liaison deliver`): the
    /// same dedupe, decision and commit as a fetched one, without a cursor
    /// (the MTA's retry is deduped by the mail's key instead). A message
    /// over the size limit, or one that cannot be parsed, is quarantined
    /// under a key from its digest, so a retry of it lands on the same
    /// record. A panic (a bug) quarantines it too, with the reason. Does
    /// not flush.
    ///
    /// A fetched mail that is quarantined stays in the server's quarantine
    /// folder; a piped one exists nowhere else once the MTA is told it was
    /// taken. So its raw bytes are kept in the store whole (past
    /// `security.quarantine_keep_bytes`), and when they do not fit in
    /// `security.quarantine_store_bytes` the answer is `Err(reason)`: not
    /// taken now, the MTA keeps the mail and retries.
    pub fn process_piped(
        &self,
        inbox: &str,
        raw: &[u8],
        size: u64,
        digest: &str,
    ) -> Result<Result<Outcome, String>, EngineError> {
        let outcome = self.decide_piped(inbox, raw, size, digest)?;
        if outcome.class != ProcessedClass::Quarantined || raw.is_empty() {
            return Ok(Ok(outcome));
        }
        let _turn = self.turn()?;
        if self.store.quarantined_raw(&outcome.key)?.is_some() {
            return Ok(Ok(outcome));
        }
        let limit = self.config.security.quarantine_store_bytes;
        let used = self.store.quarantined_raw_bytes()?;
        if used.saturating_add(raw.len() as u64) > limit {
            return Ok(Err(format!(
                "{} is quarantined, but its {} bytes do not fit in the store's quarantine space \
                 ({used} of security.quarantine_store_bytes = {limit} used), and a piped mail is \
                 kept nowhere else: release or export and restore quarantined mail, or raise the \
                 limit",
                outcome.key,
                raw.len()
            )));
        }
        self.store.commit(Changes {
            quarantined_raw: vec![(outcome.key.clone(), raw.to_vec())],
            ..Default::default()
        })?;
        Ok(Ok(outcome))
    }

    /// [`Engine::process_piped`] before the quarantined mail's bytes are
    /// made sure of.
    fn decide_piped(
        &self,
        inbox: &str,
        raw: &[u8],
        size: u64,
        digest: &str,
    ) -> Result<Outcome, EngineError> {
        let key = format!(
            "quarantine:{inbox}:pipe:{}",
            &digest[..digest.len().min(32)]
        );
        let limit = self.config.security.max_message_bytes;
        if size > limit as u64 {
            let _turn = self.turn()?;
            return self.record(
                key,
                ProcessedClass::Quarantined,
                format!("message is {size} bytes, over the limit of {limit} bytes; not read"),
                self.clock.now(),
                None,
                None,
            );
        }
        let parsed = liaison_core::mail::inbound::parse(raw, limit);
        let _turn = self.turn()?;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(debug_assertions)]
            test_fault(&parsed);
            self.process_with(&self.config, None, raw, parsed, key.clone(), None)
        }));
        match run {
            Ok(outcome) => outcome,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                tracing::error!(inbox = %inbox, panic = %message, "processing a piped mail panicked; quarantining it");
                crate::metrics::add(&crate::metrics::METRICS.processing_panics, 1);
                self.record(
                    key,
                    ProcessedClass::Quarantined,
                    format!("internal error while processing: {message}; please report"),
                    self.clock.now(),
                    None,
                    Some(raw),
                )
            }
        }
    }

    /// Whether the configuration names an inbox `name`.
    pub fn has_inbox(&self, name: &str) -> bool {
        self.config.inboxes.iter().any(|i| i.name == name)
    }

    /// The configured size limit for inbound messages.
    pub fn max_message_bytes(&self) -> usize {
        self.config.security.max_message_bytes
    }

    /// Records a message that was not read (over the size limit, or listed
    /// without a body) as quarantined, keyed by its place in the mailbox.
    pub fn record_unread(
        &self,
        inbox: &str,
        cursor: Cursor,
        reason: &str,
    ) -> Result<Outcome, EngineError> {
        self.quarantine_place(inbox, cursor, reason.to_string(), None)
    }

    /// The raw bytes of a quarantined mail to keep in the store, so it can
    /// be released: only within `security.quarantine_keep_bytes` per mail
    /// and `security.quarantine_store_bytes` in all. The mail itself always
    /// stays in the IMAP quarantine folder, so a large or flooding
    /// quarantine cannot grow the store without bound.
    fn kept_raw(&self, raw: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let sec = &self.config.security;
        if raw.len() > sec.quarantine_keep_bytes {
            return Ok(None);
        }
        let used = self.store.quarantined_raw_bytes()?;
        if used.saturating_add(raw.len() as u64) > sec.quarantine_store_bytes {
            tracing::warn!(
                used,
                limit = sec.quarantine_store_bytes,
                "quarantine space in the store is full; the mail is kept only in the IMAP quarantine folder"
            );
            return Ok(None);
        }
        Ok(Some(raw.to_vec()))
    }

    /// Records a message whose processing panicked (a bug) as quarantined,
    /// keyed by its place in the mailbox, so the inbox goes on and the same
    /// mail does not hit the bug again after a restart. The raw bytes are
    /// kept like any quarantined mail's.
    pub fn record_internal_error(
        &self,
        inbox: &str,
        cursor: Cursor,
        raw: &[u8],
        panic_message: &str,
    ) -> Result<Outcome, EngineError> {
        crate::metrics::add(&crate::metrics::METRICS.processing_panics, 1);
        self.quarantine_place(
            inbox,
            cursor,
            format!("internal error while processing: {panic_message}; please report"),
            Some(raw),
        )
    }

    /// Records the message at `cursor` of `inbox` as quarantined with
    /// `summary`, keyed by its place in the mailbox ([`place_key`]), with
    /// its raw bytes kept as any quarantined mail's when given.
    fn quarantine_place(
        &self,
        inbox: &str,
        cursor: Cursor,
        summary: String,
        raw: Option<&[u8]>,
    ) -> Result<Outcome, EngineError> {
        let _turn = self.turn()?;
        let now = self.clock.now();
        self.record(
            place_key(inbox, cursor),
            ProcessedClass::Quarantined,
            summary,
            now,
            Some((inbox.to_string(), cursor)),
            raw,
        )
    }

    /// Decides with `decide` on the current state, under the engine's lock,
    /// and commits what it decided (relationships, invitations, mails).
    /// For decisions with no inbound mail (Microsoft Graph's answers).
    /// Does not flush. Returns how many relationships changed.
    pub fn decide_and_commit(
        &self,
        decide: &dyn Fn(
            &Context,
            &dyn crate::store::StoreView,
        ) -> Result<
            liaison_core::decide::Decision,
            liaison_core::decide::WorkflowError,
        >,
    ) -> Result<usize, EngineError> {
        let now = self.clock.now();
        let ctx = Context {
            config: &self.config,
            tokens: &self.tokens,
            now,
        };
        let _turn = self.turn()?;
        let decision = match decide(&ctx, self.store.as_ref()) {
            Ok(d) => d,
            Err(liaison_core::decide::WorkflowError::Store(e)) => return Err(e.into()),
        };
        if decision.relationships.is_empty()
            && decision.invitations.is_empty()
            && decision.mails.is_empty()
        {
            if decision.class == MailClass::Ignored {
                tracing::debug!(summary = %decision.summary, "Graph answer changed nothing");
            }
            return Ok(0);
        }
        tracing::info!(summary = %decision.summary, "Microsoft Graph");
        let outbox = self.compose_or_log(&decision.mails, now, "a Microsoft Graph notice");
        let changed = decision.relationships.len();
        self.store.commit(Changes {
            relationships: decision.relationships,
            invitations: decision.invitations,
            outbox,
            ..Default::default()
        })?;
        Ok(changed)
    }

    /// The relationships of `partner` whose GDAP link is still followed.
    pub fn open_gdap_links(
        &self,
        partner: &str,
    ) -> Result<Vec<(String, liaison_core::model::gdap::GdapLink)>, EngineError> {
        let mut out = Vec::new();
        for s in self.store.relationship_summaries_of(partner)? {
            if !s.gdap.as_ref().is_some_and(|g| g.open) {
                continue;
            }
            if let Some(r) = self.store.relationship(partner, &s.customer)? {
                if let Some(g) = r.gdap {
                    out.push((r.customer, g));
                }
            }
        }
        Ok(out)
    }

    /// Applies what time alone changed (expired invitations, reminders and
    /// ends of fixed durations), flushing after each part that changed
    /// something. Returns how many relationships changed.
    pub fn sweep(&self) -> Result<usize, EngineError> {
        self.sweep_in_parts(&mut |store| store.flush(), &|| false)
    }

    /// [`Engine::sweep`], calling `flush` (which must make the commits so
    /// far durable) after each part that changed something; the daemon
    /// also lets the outbox sender go on then. When `stop` says so (the
    /// daemon shuts down), it ends before the next page: what it committed
    /// stays, the rest waits for the next sweep, and a shutdown does not
    /// wait for a sweep over the whole store (tens of seconds at 1 000 000
    /// relationships on PostgreSQL).
    ///
    /// Why in parts: the sweep goes over every relationship (1 000 000 in
    /// the benchmark), and inbound mail must not wait for it. It reads the
    /// summaries a page ([`decide::SWEEP_PAGE`]) at a time, and finds what
    /// may be due on each page (with its invitations in one read) without
    /// the engine's lock. Only deciding and committing what is due takes
    /// the decision turn, for at most [`SWEEP_CHUNK`] relationships at a
    /// time, and the flush after it ends the store's turn (on PostgreSQL,
    /// other instances wait for it). So a mail arriving during a sweep
    /// waits at most for one chunk's decision, commit and flush. Each part
    /// re-reads its candidates under the turn, and message ids are keyed
    /// by what is due (invitation, period), so the decisions are those of
    /// one pass over the whole store, and a sweep cut short by a crash
    /// re-plans the same mails for what it had not committed.
    pub fn sweep_in_parts(
        &self,
        flush: &mut dyn FnMut(&dyn Store) -> Result<(), StoreError>,
        stop: &dyn Fn() -> bool,
    ) -> Result<usize, EngineError> {
        let now = self.clock.now();
        let ctx = Context {
            config: &self.config,
            tokens: &self.tokens,
            now,
        };
        let store = self.store.as_ref();
        let mut changed = 0;
        let mut after: Option<(String, String)> = None;
        loop {
            if stop() {
                tracing::info!(changed, "timer sweep stopped for the shutdown");
                return Ok(changed);
            }
            let page = store.relationship_summaries_after(
                after.as_ref().map(|(p, c)| (p.as_str(), c.as_str())),
                decide::SWEEP_PAGE,
            )?;
            let more = page.len() == decide::SWEEP_PAGE;
            if let Some(last) = page.last() {
                after = Some((last.partner.clone(), last.customer.clone()));
            }
            let candidates = match decide::due_among(&ctx, store, page) {
                Ok(c) => c,
                Err(decide::WorkflowError::Store(e)) => return Err(e.into()),
            };
            for part in candidates.chunks(SWEEP_CHUNK) {
                let done = self.sweep_part(&ctx, part)?;
                if done > 0 {
                    flush(store)?;
                    changed += done;
                }
            }
            if !more {
                return Ok(changed);
            }
        }
    }

    /// Decides and commits, under the decision turn, what time changed for
    /// `candidates`. Does not flush. Returns how many relationships changed.
    fn sweep_part(
        &self,
        ctx: &Context,
        candidates: &[liaison_core::model::relationship::RelationshipSummary],
    ) -> Result<usize, EngineError> {
        let _turn = self.turn()?;
        let decision = match decide::expire_candidates(ctx, self.store.as_ref(), candidates) {
            Ok(d) => d,
            Err(decide::WorkflowError::Store(e)) => return Err(e.into()),
        };
        if decision.relationships.is_empty() {
            return Ok(0);
        }
        let outbox = self.compose_or_log(&decision.mails, ctx.now, "a timer notice");
        let changed = decision.relationships.len();
        for r in &decision.relationships {
            tracing::info!(partner = %r.partner, customer = %r.customer, state = %r.state.as_str(), "changed by time");
        }
        self.store.commit(Changes {
            relationships: decision.relationships,
            outbox,
            ..Default::default()
        })?;
        Ok(changed)
    }

    fn record(
        &self,
        key: String,
        class: ProcessedClass,
        summary: String,
        now: u64,
        cursor: Option<(String, Cursor)>,
        raw: Option<&[u8]>,
    ) -> Result<Outcome, EngineError> {
        tracing::warn!(%key, %summary, "mail {class}");
        crate::metrics::count_class(class);
        let kept = match raw.filter(|_| class == ProcessedClass::Quarantined) {
            Some(r) => self.kept_raw(r)?,
            None => None,
        };
        self.store.commit(Changes {
            processed: vec![Processed {
                key: key.clone(),
                at: now,
                class,
                summary: summary.clone(),
            }],
            cursor,
            quarantined_raw: kept.map(|r| (key.clone(), r)).into_iter().collect(),
            ..Default::default()
        })?;
        Ok(Outcome {
            key,
            class,
            summary,
            queued: vec![],
        })
    }
}

/// Test-only fault hook, compiled into debug builds only: when the
/// environment variable `LIAISON_TEST_PANIC_SUBJECT` is set and non-empty,
/// a mail whose subject contains it makes processing panic (while the
/// engine's lock is held, as a real bug would), so the end-to-end tests can
/// prove that one panicking mail neither kills its inbox nor poisons the
/// engine. Release builds have no such hook.
#[cfg(debug_assertions)]
fn test_fault(
    parsed: &Result<
        liaison_core::mail::inbound::InboundMail,
        liaison_core::mail::inbound::InboundError,
    >,
) {
    let Ok(mail) = parsed else { return };
    match std::env::var("LIAISON_TEST_PANIC_SUBJECT") {
        Ok(s) if !s.is_empty() && mail.subject.contains(&s) => {
            panic!("test fault: the subject contains {s:?}")
        }
        _ => {}
    }
}

/// The key of a message recorded by its place in `inbox`, not by what it
/// says: one that could not be parsed or read, or whose decision panicked.
fn place_key(inbox: &str, cursor: Cursor) -> String {
    format!(
        "quarantine:{inbox}:{}:{}",
        cursor.uid_validity, cursor.last_uid
    )
}

/// The text of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Makes every commit so far durable and then lets the outbox sender send
/// what they queued. The last outbox id is read *before* the flush, so
/// everything up to it is on disk afterwards even if another task commits
/// more in between; the watermark only ever moves forward.
pub fn flush_and_publish(
    store: &dyn crate::store::Store,
    durable: &tokio::sync::watch::Sender<u64>,
) -> Result<(), StoreError> {
    let last = store.last_outbox_id()?;
    store.flush()?;
    durable.send_if_modified(|v| {
        let moved = last > *v;
        *v = (*v).max(last);
        moved
    });
    Ok(())
}

/// One decision's turn (see [`Engine::turn`]); ends the store's decision
/// when dropped, whichever way the decision left.
struct DecisionTurn<'a> {
    _lock: std::sync::MutexGuard<'a, ()>,
    store: &'a dyn Store,
}

impl Drop for DecisionTurn<'_> {
    fn drop(&mut self) {
        self.store.end_decision();
    }
}

/// What [`Engine::apply_caps`] decided, for the commit.
struct Caps {
    /// Addresses replied to (for the reply cap's counts).
    replied: Vec<String>,
    /// Customers whose support request went through (for their counts).
    requests: Vec<String>,
    /// Partners told now that mails are held.
    reported: Vec<String>,
    /// Mails held back.
    held: Vec<crate::store::Hold>,
}

/// What a decision adds to the effect counters.
struct EffectCounts {
    invitations: u64,
    acceptances: u64,
    tickets_opened: u64,
}

impl EffectCounts {
    /// Acceptances are relationships this decision moved into `active` now.
    fn of(d: &decide::Decision, now: u64) -> Self {
        EffectCounts {
            invitations: d.invitations.len() as u64,
            tickets_opened: d
                .tickets
                .iter()
                .filter(|t| t.opened == now && t.entries.len() == 1)
                .count() as u64,
            acceptances: d
                .relationships
                .iter()
                .filter(|r| {
                    r.history.last().is_some_and(|h| {
                        h.at == now
                            && h.to == liaison_core::model::relationship::RelationshipState::Active
                            && h.from != Some(h.to)
                    })
                })
                .count() as u64,
        }
    }
}

fn count_effects(c: &EffectCounts) {
    let m = &crate::metrics::METRICS;
    crate::metrics::add(&m.invitations_sent, c.invitations);
    crate::metrics::add(&m.acceptances, c.acceptances);
    crate::metrics::add(&m.tickets_opened, c.tickets_opened);
}
