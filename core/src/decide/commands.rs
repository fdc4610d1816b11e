//! Partner commands: running each parsed command against the partner's own
//! relationships and collecting the transcript.

use super::{
    date_only, derive_id, rfc3339, strip_reply_prefixes, Context, Decision, MailClass, MailPlan,
    MessageIds, Sender, WorkflowError,
};
use crate::command::{self, Command, CommandError, Stop};
use crate::config::Partner;
use crate::effects::StoreView;
use crate::mail::address;
use crate::mail::inbound::InboundMail;
use crate::model::invitation::{Invitation, InvitationKind};
use crate::model::relationship::{
    Relationship, RelationshipEvent, RelationshipState, RelationshipSummary, TransitionError,
};
use crate::render::templates::TemplateName;
use serde_json::json;

/// Relationships shown per page of `list`.
pub const LIST_PAGE: usize = 500;

struct CommandRun<'a, 'c> {
    ctx: &'a Context<'c>,
    view: &'a dyn StoreView,
    mail: &'a InboundMail,
    partner: &'a Partner,
    ids: MessageIds<'a>,
    decision: Decision,
}

pub(super) fn run_commands(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    partner: &Partner,
    from: &str,
) -> Result<Decision, WorkflowError> {
    let mut script = command::parse_script(&mail.text);
    if script.lines.is_empty() && !mail.subject.trim().is_empty() {
        let subject = strip_reply_prefixes(&mail.subject);
        let from_subject = command::parse_script(subject);
        // Use the subject when it holds a known verb, even with an error in
        // its arguments: the partner should see that error, not the help.
        if from_subject
            .lines
            .iter()
            .any(|l| !matches!(l.parsed, Err(CommandError::Unknown(_))))
        {
            script = from_subject;
        }
    }
    let mut run = CommandRun::new(ctx, view, mail, partner);
    let mut results = Vec::new();
    if script.lines.is_empty() {
        results.push(json!({"command": null, "ok": true, "result": help_text()}));
    }
    for (index, line) in script.lines.iter().enumerate() {
        let (ok, result) = match &line.parsed {
            Ok(cmd) => match run.execute(index, cmd)? {
                Ok(text) => (true, text),
                Err(text) => (false, text),
            },
            Err(e @ CommandError::Unknown(_)) => (false, e.to_string()),
            Err(e) => (false, e.to_string()),
        };
        results.push(json!({"command": line.text, "ok": ok, "result": result}));
    }
    let note = match script.stopped {
        Some(Stop::TooManyCommands) => Some(format!(
            "Only the first {} commands were run; send the rest in another mail.",
            command::MAX_COMMANDS
        )),
        Some(Stop::TooManyUnknown) => Some(format!(
            "Stopped after {} unknown commands; the rest of the mail was skipped.",
            command::MAX_UNKNOWN
        )),
        _ => None,
    };
    let n_ok = results.iter().filter(|r| r["ok"] == true).count();
    let summary = format!(
        "{} command(s) from {} ({}): {} ok, {} failed",
        script.lines.len(),
        from,
        partner.id,
        n_ok,
        results.len() - n_ok
    );
    let message_id = run.ids.next();
    let mut references = mail.references.clone();
    references.extend(mail.message_id.clone());
    run.decision.mails.push(MailPlan {
        template: TemplateName::Transcript,
        locale: partner.locale.clone(),
        to: vec![from.to_string()],
        from: Sender::Commands,
        reply_to: None,
        message_id,
        in_reply_to: mail.message_id.clone(),
        references,
        vars: json!({
            "partner_name": partner.name,
            "original_subject": super::quoted_subject(&mail.subject),
            "results": results,
            "note": note,
        }),
        invitation: None,
        ticket: None,
        attachments: vec![],
    });
    run.decision.summary = summary;
    Ok(run.decision)
}

/// What one command given as data did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened, or what was wrong (the transcript's text).
    pub result: String,
}

/// Runs commands that were built as data, not read from a mail (`liaison
/// import`): each runs exactly as the same command mailed by `actor`, one of
/// `partner`'s addresses, would, but nothing is parsed and no transcript is
/// mailed; the caller reports the outcomes, one per command, in order.
/// `key` names the batch: ids and Message-IDs derive from it as from a
/// mail's key, and the history records it as the Message-ID.
pub fn run_given_commands(
    ctx: &Context,
    view: &dyn StoreView,
    partner: &Partner,
    actor: &str,
    key: &str,
    commands: &[Command],
) -> Result<(Decision, Vec<CommandOutcome>), WorkflowError> {
    // Where the run comes from, in the shape the command code reads (key,
    // actor, Message-ID); it has no text, so no splitter or parser sees it.
    let origin = InboundMail {
        key: key.to_string(),
        message_id: Some(key.to_string()),
        from: Some(actor.to_string()),
        ..Default::default()
    };
    let mut run = CommandRun::new(ctx, view, &origin, partner);
    let mut outcomes = Vec::with_capacity(commands.len());
    for (index, cmd) in commands.iter().enumerate() {
        let (ok, result) = match run.execute(index, cmd)? {
            Ok(text) => (true, text),
            Err(text) => (false, text),
        };
        outcomes.push(CommandOutcome { ok, result });
    }
    let n_ok = outcomes.iter().filter(|o| o.ok).count();
    let mut decision = run.decision;
    decision.summary = format!(
        "{} command(s) given as data by {actor} ({}), batch {key}: {n_ok} ok, {} failed",
        commands.len(),
        partner.id,
        commands.len() - n_ok
    );
    Ok((decision, outcomes))
}

/// The command reference sent for `help` and for mails with no command.
pub fn help_text() -> String {
    let mut out = String::from("Commands (one per line; CUSTOMER is an email address):\n");
    for (_, usage) in command::USAGE {
        out.push_str("  ");
        out.push_str(usage);
        out.push('\n');
    }
    out.push_str("Lines after `thanks`, a signature (`-- `) or quoted text are ignored.");
    out
}

type Outcome = Result<String, String>;

impl<'a, 'c> CommandRun<'a, 'c> {
    fn new(
        ctx: &'a Context<'c>,
        view: &'a dyn StoreView,
        mail: &'a InboundMail,
        partner: &'a Partner,
    ) -> Self {
        CommandRun {
            ctx,
            view,
            mail,
            partner,
            ids: MessageIds::new(&mail.key, ctx),
            decision: Decision::new(
                MailClass::Command {
                    partner: partner.id.clone(),
                },
                "",
            ),
        }
    }

    /// The relationship as already changed earlier in this mail, or as stored.
    fn current(&self, customer: &str) -> Result<Option<Relationship>, WorkflowError> {
        if let Some(r) = self
            .decision
            .relationships
            .iter()
            .rev()
            .find(|r| r.customer == customer)
        {
            return Ok(Some(r.clone()));
        }
        Ok(self.view.relationship(&self.partner.id, customer)?)
    }

    fn put(&mut self, rel: Relationship) {
        self.decision
            .relationships
            .retain(|r| r.customer != rel.customer);
        self.decision.relationships.push(rel);
    }

    fn not_found(&self, customer: &str) -> String {
        // Another partner's customer gets the same answer as an unknown one:
        // a partner must not learn who else works with whom.
        format!(
            "{customer} has no relationship with {}; use `invite {customer}` first",
            self.partner.name
        )
    }

    fn execute(&mut self, index: usize, cmd: &Command) -> Result<Outcome, WorkflowError> {
        Ok(match cmd {
            Command::Help => Ok(help_text()),
            Command::Invite {
                customer,
                name,
                locale,
                draft,
                link,
                gdap,
            } => self.invite(
                index,
                customer,
                name.as_deref(),
                locale.as_deref(),
                *draft,
                link.as_deref(),
                gdap.as_ref(),
            )?,
            Command::Roles => Ok(self.roles()),
            Command::Terminate { customer, confirm } => self.terminate(customer, *confirm)?,
            Command::Resend { customer } => self.resend(customer)?,
            Command::Status { customer: Some(c) } => match self.current(c)? {
                Some(r) => Ok(status_line(&RelationshipSummary::from(&r))),
                None => Err(self.not_found(c)),
            },
            Command::Status { customer: None } => self.list(None, 1)?,
            Command::List { state, page } => self.list(*state, *page)?,
            Command::Revoked { customer } => self.revoked(customer)?,
            Command::Restore { customer } => self.restore(index, customer)?,
            Command::Remove { customer } => self.remove(customer)?,
            Command::Contact { customer, support } => self.contact(customer, support)?,
            Command::Tickets { all } => {
                let mut tickets = self.view.tickets_of(&self.partner.id)?;
                for changed in &self.decision.tickets {
                    tickets.retain(|t| t.id != changed.id);
                    tickets.push(changed.clone());
                }
                tickets.sort_by_key(|t| t.id);
                let lines: Vec<String> = tickets
                    .iter()
                    .filter(|t| *all || t.state != crate::model::ticket::TicketState::Closed)
                    .map(super::support::ticket_line)
                    .collect();
                Ok(if lines.is_empty() {
                    if *all {
                        "no tickets".into()
                    } else {
                        "no open tickets".into()
                    }
                } else {
                    lines.join("\n")
                })
            }
            Command::Ticket { id } => match self
                .decision
                .tickets
                .iter()
                .find(|t| t.id == *id)
                .cloned()
                .or(self.view.ticket(*id)?)
                .filter(|t| t.partner == self.partner.id)
            {
                Some(t) => Ok(super::support::ticket_thread(&t)),
                None => Err(format!(
                    "ticket {} not found",
                    crate::model::ticket::format_id(*id)
                )),
            },
            Command::Close { id, note } => {
                let actor = self.actor();
                match super::support::close_ticket(
                    self.ctx,
                    self.view,
                    self.partner,
                    &actor,
                    &self.mail.key,
                    *id,
                    note.as_deref(),
                )? {
                    Ok((text, ticket, mails)) => {
                        self.decision.tickets.retain(|t| t.id != ticket.id);
                        self.decision.tickets.push(ticket);
                        self.decision.mails.extend(mails);
                        Ok(text)
                    }
                    Err(e) => Err(e),
                }
            }
            Command::History { customer } => match self.current(customer)? {
                Some(r) => Ok(r
                    .history
                    .iter()
                    .map(|h| {
                        format!(
                            "{}  {} -> {}  by {}{}  [{}]",
                            rfc3339(h.at),
                            h.from.map(|s| s.as_str()).unwrap_or("(new)"),
                            h.to,
                            h.actor,
                            h.message_id
                                .as_deref()
                                .map(|m| format!("  <{m}>"))
                                .unwrap_or_default(),
                            h.source.map_or("source not recorded", |s| s.as_str()),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")),
                None => Err(self.not_found(customer)),
            },
        })
    }

    /// One page of the partner's relationships. A mail of ten thousand
    /// lines helps nobody, so long lists come [`LIST_PAGE`] lines at a time
    /// with a pointer to the next page.
    fn list(&self, state: Option<RelationshipState>, page: u32) -> Result<Outcome, WorkflowError> {
        let mut rels = self.view.relationship_summaries_of(&self.partner.id)?;
        if !self.decision.relationships.is_empty() {
            // Changes made earlier in this same mail are not stored yet.
            for changed in &self.decision.relationships {
                rels.retain(|r| r.customer != changed.customer);
                rels.push(RelationshipSummary::from(changed));
            }
            rels.sort_by(|a, b| a.customer.cmp(&b.customer));
        }
        rels.retain(|r| state.is_none_or(|s| r.state == s));
        if rels.is_empty() {
            return Ok(Ok("no relationships".to_string()));
        }
        let total = rels.len();
        let pages = total.div_ceil(LIST_PAGE);
        let page = page as usize;
        if page > pages {
            return Ok(Err(format!(
                "there is no page {page}: {total} relationship(s) make {pages} page(s)"
            )));
        }
        let first = (page - 1) * LIST_PAGE;
        let shown = &rels[first..total.min(first + LIST_PAGE)];
        let mut out = String::with_capacity(shown.len() * 80);
        for (i, r) in shown.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&status_line(r));
        }
        if pages > 1 {
            let filter = state.map(|s| format!("{s} ")).unwrap_or_default();
            out.push_str(&format!(
                "\n(relationships {}-{} of {total}, page {page} of {pages}",
                first + 1,
                first + shown.len()
            ));
            if page < pages {
                out.push_str(&format!(
                    "; send `list {filter}page {}` for the next",
                    page + 1
                ));
            }
            out.push(')');
        }
        Ok(Ok(out))
    }

    #[allow(clippy::too_many_arguments)]
    fn invite(
        &mut self,
        index: usize,
        customer: &str,
        name: Option<&str>,
        locale: Option<&str>,
        draft: bool,
        link: Option<&str>,
        gdap_ask: Option<&command::InviteGdap>,
    ) -> Result<Outcome, WorkflowError> {
        let cfg = self.ctx.config;
        // The admin-center step: a GDAP request Liaison makes through Graph,
        // a link given for this invitation, or the partner's configured one.
        let gdap_request = match gdap_ask {
            Some(ask) => {
                if self.partner.graph.is_none() {
                    return Ok(Err(format!(
                        "`roles` needs Microsoft Graph for {} ([partner.graph] in Liaison's config); \
                         or make the GDAP request in Partner Center and send `invite {customer} link URL`",
                        self.partner.name
                    )));
                }
                let roles =
                    match crate::model::gdap::parse_roles(&ask.roles, |n| self.partner.role_set(n))
                    {
                        Ok(r) => r,
                        Err(e) => return Ok(Err(e.to_string())),
                    };
                match crate::model::gdap::GdapRequest::new(
                    &roles,
                    ask.duration_days,
                    ask.auto_extend,
                ) {
                    Ok(r) => Some(r),
                    Err(e) => return Ok(Err(e.to_string())),
                }
            }
            None => None,
        };
        let approval_link = match (link, &gdap_request) {
            (Some(l), _) => {
                if let Err(e) =
                    crate::model::gdap::check_approval_link(l, &cfg.security.approval_link_hosts)
                {
                    return Ok(Err(format!("{e}; nothing was sent")));
                }
                Some(l.to_string())
            }
            (None, Some(_)) => None,
            (None, None) => self.partner.approval_link.clone(),
        };
        // Plus-variants of our own or a partner's address are still ours.
        let base = address::without_plus_tag(customer);
        if cfg.partner_by_email(&base).is_some()
            || [
                &cfg.addresses.commands,
                &cfg.addresses.invitations,
                &cfg.addresses.support_desk,
            ]
            .contains(&&base)
        {
            return Ok(Err(format!(
                "{customer} is a partner or Liaison address, not a customer"
            )));
        }
        let existing = self.current(customer)?;
        let mut rel = match existing {
            Some(r) => r,
            None => Relationship {
                partner: self.partner.id.clone(),
                customer: customer.to_string(),
                customer_name: None,
                locale: self.partner.locale.clone(),
                state: RelationshipState::Removed,
                since: self.ctx.now,
                invitation_id: None,
                support_contact: None,
                ends_at: None,
                reminders_sent: vec![],
                history: vec![],
                gdap: None,
            },
        };
        let is_new = rel.history.is_empty();
        let from_state = if is_new { None } else { Some(rel.state) };
        match crate::model::relationship::transition(from_state, RelationshipEvent::Invited) {
            Ok(_) => {}
            Err(TransitionError::Already(RelationshipState::Invited)) => {
                return Ok(Err(format!(
                "{customer} was already invited on {}; use `resend {customer}` to send it again",
                date_only(rel.since)
            )))
            }
            Err(_) => {
                return Ok(Err(format!(
                    "{customer} is {} since {}; no new invitation is needed",
                    rel.state,
                    date_only(rel.since)
                )))
            }
        }
        if let Some(n) = name {
            rel.customer_name = Some(n.to_string());
        }
        if let Some(l) = locale {
            rel.locale = l.to_string();
        }
        let (mut invitation, mut plan) = self.new_invitation(
            index,
            InvitationKind::Invitation,
            &rel,
            draft,
            approval_link.as_deref(),
        );
        invitation.approval_link = approval_link;
        let (id, expires) = (invitation.id, invitation.expires);
        rel.gdap = gdap_request
            .clone()
            .map(|request| crate::model::gdap::GdapLink {
                display_name: crate::model::gdap::display_name(customer, id),
                request,
                relationship_id: None,
                status: None,
                ends_at: None,
                auto_extend: false,
                draft_to: draft.then(|| self.actor()),
                assignments_due: false,
                terminate_due: false,
            });
        if rel.gdap.is_some() {
            // The invitation goes out when Microsoft has created the
            // request: its link is the request's own.
            plan = None;
        }
        let actor = self.mail.from.clone().unwrap_or_default();
        if is_new {
            rel.history.push(crate::model::relationship::HistoryEntry {
                at: self.ctx.now,
                from: None,
                to: RelationshipState::Invited,
                actor,
                message_id: self.mail.message_id.clone(),
                source: Some(crate::model::relationship::HistorySource::Command),
            });
            rel.state = RelationshipState::Invited;
            rel.since = self.ctx.now;
        } else {
            rel.apply(
                RelationshipEvent::Invited,
                self.ctx.now,
                &actor,
                self.mail.message_id.as_deref(),
                crate::model::relationship::HistorySource::Command,
            )
            .expect("checked above");
        }
        rel.invitation_id = Some(id);
        self.decision.mails.extend(plan);
        self.decision.invitations.push(invitation);
        let locale_name = if rel.locale == "ko" {
            "Korean"
        } else {
            "English"
        };
        let result = if let Some(g) = &gdap_request {
            let names: Vec<&str> = g
                .role_ids
                .iter()
                .filter_map(|r| crate::model::gdap::role_by_id(r).map(|r| r.name))
                .collect();
            format!(
                "requesting a GDAP relationship with {customer} from Microsoft (roles: {}; {} days{}); \
                 the {}invitation with its approval link goes out as soon as Microsoft has created the request. \
                 It expires on {}.",
                names.join(", "),
                g.duration_days,
                if g.auto_extend { ", auto-extend" } else { "" },
                if draft { "draft " } else { "" },
                date_only(expires)
            )
        } else if draft {
            format!(
                "draft invitation for {customer} sent to you ({locale_name}); forward it to the customer. \
                 Their answer counts whoever sends it on. It expires on {}.",
                date_only(expires)
            )
        } else {
            format!(
                "invited {customer} (invitation sent in {locale_name}; it expires on {})",
                date_only(expires)
            )
        };
        self.put(rel);
        Ok(Ok(result))
    }

    /// A new invitation (or restore request) for `rel`'s customer, and the
    /// mail that carries it.
    fn new_invitation(
        &mut self,
        index: usize,
        kind: InvitationKind,
        rel: &Relationship,
        draft: bool,
        approval_link: Option<&str>,
    ) -> (Invitation, Option<MailPlan>) {
        let id = derive_id(self.ctx, &self.mail.key, &format!("{kind:?}{index}"));
        let expires =
            self.ctx.now + u64::from(self.ctx.config.security.invitation_ttl_days) * 86_400;
        let message_id = self.ids.next();
        let invitation = Invitation {
            id,
            kind,
            partner: self.partner.id.clone(),
            customer: rel.customer.clone(),
            customer_name: rel.customer_name.clone(),
            locale: rel.locale.clone(),
            created: self.ctx.now,
            expires,
            message_id: message_id.clone(),
            draft,
            bounced: None,
            approval_link: approval_link.map(str::to_string),
        };
        let plan = self.invitation_mail(&invitation, message_id, draft, None);
        (invitation, Some(plan))
    }

    fn actor(&self) -> String {
        self.mail.from.clone().unwrap_or_default()
    }

    /// Applies a partner-caused event to an existing relationship.
    fn transition(
        &mut self,
        customer: &str,
        event: RelationshipEvent,
    ) -> Result<Result<Relationship, String>, WorkflowError> {
        let Some(mut rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        let actor = self.actor();
        match rel.apply(
            event,
            self.ctx.now,
            &actor,
            self.mail.message_id.as_deref(),
            crate::model::relationship::HistorySource::Command,
        ) {
            Ok(_) => Ok(Ok(rel)),
            Err(e) => Ok(Err(format!("{customer}: {e}"))),
        }
    }

    fn revoked(&mut self, customer: &str) -> Result<Outcome, WorkflowError> {
        let rel = match self.transition(customer, RelationshipEvent::PermissionsRemoved)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        self.put(rel);
        Ok(Ok(format!(
            "recorded: {customer} removed your delegated admin permissions (now permissions_removed). \
             You remain responsible for their support: their support requests will be opened as \
             tickets with the support desk on their behalf. `restore {customer}` asks them to grant \
             the permissions again."
        )))
    }

    fn restore(&mut self, index: usize, customer: &str) -> Result<Outcome, WorkflowError> {
        let Some(mut rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        if rel.state != RelationshipState::PermissionsRemoved {
            return Ok(Err(format!(
                "{customer} is {}; only a relationship whose permissions were removed can be restored",
                rel.state
            )));
        }
        let link = self.partner.approval_link.clone();
        // A restore request is a level-1 request (the partner's configured
        // link, the customer's word): the GDAP relationship Graph showed
        // ended is not followed any more, or a mailed "accept" would wait
        // for it for ever.
        rel.gdap = None;
        let (invitation, plan) =
            self.new_invitation(index, InvitationKind::Restore, &rel, false, link.as_deref());
        let expires = invitation.expires;
        rel.invitation_id = Some(invitation.id);
        self.decision.mails.extend(plan);
        self.decision.invitations.push(invitation);
        self.put(rel);
        Ok(Ok(format!(
            "restore request sent to {customer}; when they accept, the relationship is active again \
             (the request expires on {})",
            date_only(expires)
        )))
    }

    fn remove(&mut self, customer: &str) -> Result<Outcome, WorkflowError> {
        let rel = match self.transition(customer, RelationshipEvent::Removed)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let message_id = self.ids.next();
        self.decision.mails.push(MailPlan {
            template: TemplateName::RemovedCustomer,
            locale: rel.locale.clone(),
            to: vec![rel.customer.clone()],
            from: Sender::Invitations,
            reply_to: None,
            message_id,
            in_reply_to: None,
            references: vec![],
            vars: json!({
                "partner_name": self.partner.name,
                "customer_email": rel.customer,
                "customer_name": rel.customer_name,
                "at": rfc3339(self.ctx.now),
            }),
            invitation: None,
            ticket: None,
            attachments: vec![],
        });
        self.put(rel);
        Ok(Ok(format!(
            "removed the relationship with {customer}; they have been told"
        )))
    }

    fn contact(&mut self, customer: &str, support: &str) -> Result<Outcome, WorkflowError> {
        let Some(mut rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        if rel.state == RelationshipState::Removed {
            return Ok(Err(format!("{customer} is removed; invite them first")));
        }
        // A contact gets ticket authority and copies of support traffic:
        // one of Liaison's own addresses there would mail Liaison itself.
        let own = &self.ctx.config.addresses;
        if support == own.commands || support == own.invitations {
            return Ok(Err(format!(
                "{support} is one of Liaison's own addresses and cannot be a support contact"
            )));
        }
        rel.support_contact = Some(support.to_string());
        self.put(rel);
        Ok(Ok(format!(
            "{support} is now the support contact for {customer} and is copied on their support traffic"
        )))
    }

    fn resend(&mut self, customer: &str) -> Result<Outcome, WorkflowError> {
        let Some(rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        if !matches!(
            rel.state,
            RelationshipState::Invited | RelationshipState::PermissionsRemoved
        ) {
            return Ok(Err(format!(
                "{customer} is {}; only a pending invitation or restore request can be resent",
                rel.state
            )));
        }
        let invitation = match rel.invitation_id {
            Some(id) => match self
                .decision
                .invitations
                .iter()
                .find(|i| i.id == id)
                .cloned()
            {
                Some(i) => Some(i),
                None => self.view.invitation(id)?,
            },
            None => None,
        };
        let Some(invitation) = invitation else {
            return Ok(Err(format!(
                "the invitation of {customer} is missing from the store"
            )));
        };
        if rel.state == RelationshipState::PermissionsRemoved
            && invitation.kind != InvitationKind::Restore
        {
            return Ok(Err(format!(
                "{customer} has no pending restore request; use `restore {customer}`"
            )));
        }
        if invitation.expires < self.ctx.now {
            return Ok(Err(format!(
                "the request to {customer} expired on {}; send a new one",
                date_only(invitation.expires)
            )));
        }
        if let Some(g) = rel.gdap.as_ref().filter(|g| g.relationship_id.is_none()) {
            let _ = g;
            return Ok(Err(format!(
                "the invitation to {customer} waits for Microsoft to create the GDAP request; it goes out then"
            )));
        }
        let message_id = self.ids.next();
        let plan = self.invitation_mail(
            &invitation,
            message_id,
            false,
            rel.gdap.as_ref().map(|g| &g.request),
        );
        self.decision.mails.push(plan);
        Ok(Ok(format!(
            "{} resent to {customer} (same link; it expires on {})",
            match invitation.kind {
                InvitationKind::Invitation => "invitation",
                InvitationKind::Restore => "restore request",
            },
            date_only(invitation.expires)
        )))
    }

    fn invitation_mail(
        &self,
        inv: &Invitation,
        message_id: String,
        draft: bool,
        gdap: Option<&crate::model::gdap::GdapRequest>,
    ) -> MailPlan {
        let draft_to = draft.then(|| self.mail.from.clone().unwrap_or_default());
        super::invitation_mail::plan(
            self.ctx,
            self.partner,
            inv,
            message_id,
            draft_to.as_deref(),
            super::invitation_mail::ApprovalStep {
                link: inv.approval_link.as_deref(),
                gdap,
            },
        )
    }

    /// `roles`: the names `invite … roles` takes.
    fn roles(&self) -> String {
        let mut out = String::from("Entra built-in roles for `invite CUSTOMER roles \"…\"`:\n");
        for r in crate::model::gdap::ENTRA_ROLES {
            out.push_str(&format!("  {}\n", r.name));
        }
        if !self.partner.role_sets.is_empty() {
            out.push_str("Role sets of ");
            out.push_str(&self.partner.name);
            out.push_str(":\n");
            for s in &self.partner.role_sets {
                out.push_str(&format!("  {}: {}\n", s.name, s.roles.join(", ")));
            }
        }
        if self.partner.graph.is_none() {
            out.push_str("(Microsoft Graph is not configured for you, so `roles` in `invite` is refused; use `invite CUSTOMER link URL`.)");
        }
        out.trim_end().to_string()
    }

    /// `terminate CUSTOMER [confirm]`: ends the GDAP relationship in
    /// Microsoft's system, after confirmation.
    fn terminate(&mut self, customer: &str, confirm: bool) -> Result<Outcome, WorkflowError> {
        let Some(mut rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        let Some(id) = rel.gdap.as_ref().and_then(|g| g.relationship_id.clone()) else {
            return Ok(Err(format!(
                "{customer} has no GDAP relationship that Liaison follows in Microsoft Graph; \
                 end it in Partner Center, then send `revoked {customer}`"
            )));
        };
        if rel.state != RelationshipState::Active {
            return Ok(Err(format!(
                "{customer} is {}; only an active GDAP relationship can be terminated",
                rel.state
            )));
        }
        if !confirm {
            return Ok(Ok(format!(
                "this would end the GDAP relationship {id} with {customer} in Microsoft's system: \
                 your delegated admin permissions for them end. Send `terminate {customer} confirm` to do it."
            )));
        }
        if let Some(g) = rel.gdap.as_mut() {
            g.terminate_due = true;
        }
        self.put(rel);
        Ok(Ok(format!(
            "terminating the GDAP relationship {id} with {customer}: the request goes to Microsoft now, \
             and the relationship becomes permissions_removed when Microsoft shows it ended"
        )))
    }
}

fn status_line(r: &RelationshipSummary) -> String {
    format!(
        "{}  {}  since {}{}{}{}",
        r.customer,
        r.state,
        rfc3339(r.since),
        r.ends_at
            .map(|e| format!("  ends {}", rfc3339(e)))
            .unwrap_or_default(),
        r.gdap.as_ref().map(gdap_line).unwrap_or_default(),
        r.customer_name
            .as_deref()
            .map(|n| format!("  ({n})"))
            .unwrap_or_default()
    )
}

/// The GDAP part of a status line.
fn gdap_line(g: &crate::model::relationship::GdapSummary) -> String {
    match &g.id {
        None => "  gdap: waiting for Microsoft to create the request".into(),
        Some(id) => format!(
            "  gdap {id} {}{}  auto-extend {}",
            g.status.map_or("?", |s| s.as_str()),
            g.ends_at
                .map(|e| format!("  gdap ends {}", date_only(e)))
                .unwrap_or_default(),
            if g.auto_extend { "on" } else { "off" }
        ),
    }
}
