//! Partner commands: running each parsed command against the partner's own
//! relationships and collecting the transcript.

use super::{
    rfc3339, strip_reply_prefixes, Context, Decision, MailClass, MailPlan, MessageIds, Sender,
    WorkflowError,
};
use crate::command::{self, Command, CommandError, Stop};
use crate::config::Partner;
use crate::effects::StoreView;
use crate::mail::inbound::InboundMail;
use crate::model::relationship::{Relationship, RelationshipEvent, RelationshipSummary};
use crate::render::templates::TemplateName;
use serde_json::json;

/// Relationships shown per page of `list`.
pub const LIST_PAGE: usize = 500;

/// What a command mail's transcript reports: one line per command, in
/// order, and a note when the mail was cut short. The decision carries it
/// typed ([`Decision::transcript`]); the transcript mail's template reads
/// the same data as variables.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Transcript {
    /// One result per command line (or the help, for a mail without one).
    pub results: Vec<TranscriptLine>,
    /// Why the rest of the mail was not run, if it was not.
    pub note: Option<String>,
}

/// One command's line in a [`Transcript`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TranscriptLine {
    /// The command as written; none for the help sent for an empty mail.
    pub command: Option<String>,
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened, or what was wrong.
    pub result: String,
}

impl Transcript {
    /// Whether at least one command did something (not only `help`, not
    /// only errors): such a transcript is real work, never capped.
    pub fn did_work(&self) -> bool {
        self.results
            .iter()
            .any(|r| r.ok && r.command.as_deref().is_some_and(|c| c != "help"))
    }
}

/// One command mail (or batch of commands) being run: what each verb's
/// code in `command/` reads and adds to.
pub(crate) struct CommandRun<'a, 'c> {
    pub(crate) ctx: &'a Context<'c>,
    pub(crate) view: &'a dyn StoreView,
    pub(crate) mail: &'a InboundMail,
    pub(crate) partner: &'a Partner,
    pub(crate) ids: MessageIds<'a>,
    pub(crate) decision: Decision,
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
        results.push(TranscriptLine {
            command: None,
            ok: true,
            result: help_text(),
        });
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
        results.push(TranscriptLine {
            command: Some(line.text.clone()),
            ok,
            result,
        });
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
    let note = match (note, paced_note(ctx, view, &run.decision)?) {
        (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
        (a, b) => a.or(b),
    };
    let n_ok = results.iter().filter(|r| r.ok).count();
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
    run.decision.transcript = Some(Transcript { results, note });
    Ok(run.decision)
}

/// When the sending limits delay the mails this command mail queued (its
/// transcript among them), when the last should go out.
fn paced_note(
    ctx: &Context,
    view: &dyn StoreView,
    decision: &Decision,
) -> Result<Option<String>, WorkflowError> {
    let limits = ctx.config.smtp.limits;
    if !limits.any() || decision.mails.is_empty() {
        return Ok(None);
    }
    let queued = view.outbox_pending()?;
    let mails = decision.mails.len() as u64 + 1;
    let recipients = decision
        .mails
        .iter()
        .map(|m| m.to.len() as u64)
        .sum::<u64>()
        + 1;
    Ok(crate::pacing::last_send_note(
        limits, ctx.now, queued, mails, recipients,
    ))
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
    for verb in command::VERBS {
        out.push_str("  ");
        out.push_str(verb.usage);
        out.push('\n');
    }
    out.push_str("Lines after `thanks`, a signature (`-- `) or quoted text are ignored.");
    out
}

/// What one command did (`Ok`) or why it did not (`Err`): its transcript line.
pub(crate) type Outcome = Result<String, String>;

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
    pub(crate) fn current(&self, customer: &str) -> Result<Option<Relationship>, WorkflowError> {
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

    pub(crate) fn put(&mut self, rel: Relationship) {
        self.decision
            .relationships
            .retain(|r| r.customer != rel.customer);
        self.decision.relationships.push(rel);
    }

    pub(crate) fn not_found(&self, customer: &str) -> String {
        // Another partner's customer gets the same answer as an unknown one:
        // a partner must not learn who else works with whom.
        format!(
            "{customer} has no relationship with {}; use `invite {customer}` first",
            self.partner.name
        )
    }

    fn execute(&mut self, index: usize, cmd: &Command) -> Result<Outcome, WorkflowError> {
        // One line per verb; each verb's file in `command/` carries it out.
        match cmd {
            Command::Help => Ok(Ok(help_text())),
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
            ),
            Command::Roles => Ok(Ok(self.roles())),
            Command::Terminate { customer, confirm } => self.terminate(customer, *confirm),
            Command::Resend { customer } => self.resend(customer),
            Command::Status { customer } => self.status(customer.as_deref()),
            Command::List { state, page } => self.list(*state, *page),
            Command::History { customer } => self.history(customer),
            Command::Revoked { customer } => self.revoked(customer),
            Command::Restore { customer } => self.restore(index, customer),
            Command::Remove { customer } => self.remove(customer),
            Command::Contact { customer, support } => self.contact(customer, support),
            Command::Tickets { all } => self.tickets(*all),
            Command::Ticket { id } => self.ticket(*id),
            Command::Close { id, note } => self.close(*id, note.as_deref()),
        }
    }

    pub(crate) fn actor(&self) -> String {
        self.mail.from.clone().unwrap_or_default()
    }

    /// Applies a partner-caused event to an existing relationship.
    pub(crate) fn transition(
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
}

pub(crate) fn status_line(r: &RelationshipSummary) -> String {
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
                .map(|e| format!("  gdap ends {}", crate::model::time::date_only(e)))
                .unwrap_or_default(),
            if g.auto_extend { "on" } else { "off" }
        ),
    }
}
