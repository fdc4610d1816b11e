//! The decision core: given one inbound mail and a read-only view of the
//! store, decide what changes and which mails to send.
//!
//! Nothing here performs IO, reads a clock or draws randomness: the time
//! comes in through [`Context::now`], ids and Message-IDs are derived from
//! the inbound message's key, and the result is a plain [`Decision`]. The
//! same mail and the same state always give the same decision, which is what
//! lets the shell re-run a message after a crash without sending different
//! mails, and lets the tests below run without any server.

//!
//! Layout: this file holds the shared types and the entry points;
//! [`commands`] runs partner commands, [`customer`] handles customer mail,
//! [`support`] support requests and tickets, and [`timers`] decides what
//! time alone changes (expiry, fixed durations).

pub(crate) mod commands;
pub use commands::LIST_PAGE;
mod customer;
mod known;
pub(crate) mod support;
pub use support::MAX_ENTRY_TEXT_CHARS;
pub mod gdap;
pub(crate) mod invitation_mail;
mod timers;
pub mod trust;
pub mod web;

pub use commands::{help_text, run_given_commands, CommandOutcome, Transcript, TranscriptLine};
pub use timers::{due_among, due_candidates, expire_candidates, expire_due, SWEEP_PAGE};
// The plan a decision fills in, and time formatting, live below the
// decision code (render, model); named here for the decision modules.
pub use crate::model::time::{date_only, rfc3339};
pub use crate::render::plan::{MailPlan, Sender};

use crate::config::Config;
use crate::effects::{ProcessedClass, ReadError, StoreView};
use crate::mail::inbound::InboundMail;
use crate::model::invitation::Invitation;
use crate::model::relationship::Relationship;
use crate::model::token::TokenKey;
use crate::render::templates::TemplateName;

/// Errors that stop a decision (only store reads can fail).
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] ReadError),
}

/// What the decision core needs besides the mail and the store.
pub struct Context<'a> {
    /// The configuration (partners, addresses, lifetimes).
    pub config: &'a Config,
    /// Signs and checks tokens, and (`tokens.ids()`) keys every id and
    /// Message-ID the core derives.
    pub tokens: &'a TokenKey,
    /// Current time, Unix seconds.
    pub now: u64,
}

/// How a mail was classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailClass {
    /// Commands from a configured partner.
    Command {
        /// Partner id.
        partner: String,
    },
    /// A customer's answer or message about one relationship.
    Customer {
        /// Partner id.
        partner: String,
        /// Customer address.
        customer: String,
    },
    /// Nothing to do and nobody to answer; the reason is logged and stored.
    Ignored,
    /// Changes that time alone caused (expiry).
    Timer,
    /// Set aside with a reason, no action, no reply (e.g. a forged partner).
    Quarantined,
    /// A delivery failure of one of Liaison's mails.
    Bounce,
    /// What Microsoft Graph showed of a GDAP relationship.
    Graph,
}

impl MailClass {
    /// The kind stored in the processed record (and named in logs).
    pub fn kind(&self) -> ProcessedClass {
        match self {
            MailClass::Command { .. } => ProcessedClass::Command,
            MailClass::Customer { .. } => ProcessedClass::Customer,
            MailClass::Ignored => ProcessedClass::Ignored,
            MailClass::Timer => ProcessedClass::Timer,
            MailClass::Quarantined => ProcessedClass::Quarantined,
            MailClass::Bounce => ProcessedClass::Bounce,
            MailClass::Graph => ProcessedClass::Graph,
        }
    }
}

/// The result of deciding on one mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The classification.
    pub class: MailClass,
    /// One line saying what was done, or why nothing was.
    pub summary: String,
    /// Relationship records to write.
    pub relationships: Vec<Relationship>,
    /// Invitation records to write.
    pub invitations: Vec<Invitation>,
    /// Ticket records to write.
    pub tickets: Vec<crate::model::ticket::Ticket>,
    /// Mails to send.
    pub mails: Vec<MailPlan>,
    /// For a command mail: what its transcript (one of `mails`) reports.
    pub transcript: Option<Transcript>,
}

impl Decision {
    /// A decision of `class` that changes nothing and sends nothing (yet).
    pub(crate) fn new(class: MailClass, summary: impl Into<String>) -> Self {
        Decision {
            class,
            summary: summary.into(),
            relationships: vec![],
            invitations: vec![],
            tickets: vec![],
            mails: vec![],
            transcript: None,
        }
    }

    pub(crate) fn ignored(summary: impl Into<String>) -> Self {
        Decision::new(MailClass::Ignored, summary)
    }

    pub(crate) fn quarantined(summary: impl Into<String>) -> Self {
        Decision::new(MailClass::Quarantined, summary)
    }
}

/// The trust policy ([`crate::decide::trust`]) applied to `mail`: a quarantine
/// decision when its sender may not have the power of `claim`.
pub(crate) fn untrusted(
    ctx: &Context,
    mail: &InboundMail,
    from: &str,
    claim: crate::decide::trust::Claim,
) -> Option<Decision> {
    crate::decide::trust::check(
        &ctx.config.security,
        &mail.authentication_results,
        from,
        claim,
    )
    .err()
    .map(|why| Decision::quarantined(why.to_string()))
}

/// Derives a stable 63-bit id from a message key and a salt, keyed with the
/// secret (see [`crate::model::token::IdKey`]): stable across a replay, and not
/// computable by whoever chose the inbound mail's Message-ID.
pub(crate) fn derive_id(ctx: &Context, key: &str, salt: &str) -> u64 {
    let h = ctx.tokens.ids().digest("record-id", &[key, salt]);
    let id = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) >> 1;
    id.max(1)
}

/// Builds deterministic Message-IDs for the mails caused by one inbound mail.
///
/// Each is `liaison.k1.` and 24 hex digits of a MAC keyed with the secret over
/// the inbound key and a counter: the same mail gives the same ids after a
/// crash, but nobody without the secret can predict them. That matters
/// because a reply threading to an invitation's Message-ID is tied to that
/// invitation, as a token is.
pub(crate) struct MessageIds<'a> {
    key: &'a str,
    ids: &'a crate::model::token::IdKey,
    domain: &'a str,
    n: usize,
}

impl<'a> MessageIds<'a> {
    /// Message-IDs derived from `key` (usually the inbound mail's key), in
    /// the domain of Liaison's own addresses.
    pub(crate) fn new(key: &'a str, ctx: &'a Context) -> Self {
        MessageIds {
            key,
            ids: ctx.tokens.ids(),
            domain: ctx.config.addresses.message_id_domain(),
            n: 0,
        }
    }

    pub(crate) fn next(&mut self) -> String {
        self.n += 1;
        let h = self
            .ids
            .digest("message-id", &[self.key, &self.n.to_string()]);
        format!(
            "{KEYED_MESSAGE_ID_PREFIX}{}@{}",
            data_encoding::HEXLOWER.encode(&h[..12]),
            self.domain
        )
    }
}

/// What starts every keyed Message-ID. Older versions wrote `liaison.` and
/// an unkeyed hash, which anyone who knew the inbound Message-ID could
/// compute: such ids, still in the thread index for mails sent before the
/// upgrade, are not accepted as a reference to an invitation
/// ([`is_keyed_message_id`]); the token in those mails still is.
pub(crate) const KEYED_MESSAGE_ID_PREFIX: &str = "liaison.k1.";

/// Whether `id` is one of Liaison's keyed Message-IDs (as opposed to one
/// of the old, computable kind). Only meaningful for ids Liaison sent,
/// i.e. found in its thread index: anyone may write the prefix.
pub(crate) fn is_keyed_message_id(id: &str) -> bool {
    id.starts_with(KEYED_MESSAGE_ID_PREFIX)
}

/// Decides what to do with `mail`.
pub fn decide(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
) -> Result<Decision, WorkflowError> {
    if let Some(dsn) = &mail.dsn {
        // A bounce is automatic mail too: never answered; but if it is a
        // real one about an invitation, the partner must learn that it did
        // not arrive. Anyone can write a report, so it must prove itself
        // first (`dsn::authenticate`: keyed bounce address, null sender,
        // the recipient that address was issued for).
        return match crate::mail::dsn::authenticate(
            ctx.tokens.ids(),
            &ctx.config.addresses.invitations,
            &mail.delivered_to,
            dsn,
        ) {
            Ok(bounce) => delivery_failed(
                ctx,
                view,
                bounce.message_id,
                &bounce.failed.address,
                &bounce.reason(),
                &mail.key,
            ),
            Err(why) => Ok(Decision::ignored(format!(
                "delivery report not believed: {why}; nothing marked bounced, nothing forwarded, never answered"
            ))),
        };
    }
    if let Some(reason) = &mail.automatic {
        return Ok(Decision::ignored(format!(
            "automatic mail ({reason}); never answered (RFC 3834)"
        )));
    }
    let Some(from) = mail.from.as_deref() else {
        return Ok(Decision::ignored("no usable From address"));
    };
    if !mail.other_from.is_empty() {
        // Whoever of the authors would get power, the others could be
        // anyone: no alignment check can vouch for a list of senders.
        return Ok(Decision::quarantined(format!(
            "mail with several From addresses ({from}, {}): no single sender can be authenticated; quarantined, nothing done, no reply",
            mail.other_from.join(", ")
        )));
    }
    let cfg = ctx.config;
    if from == cfg.addresses.commands || from == cfg.addresses.invitations {
        return Ok(Decision::ignored("sent from Liaison's own address (loop)"));
    }
    let to_commands = mail
        .recipients
        .iter()
        .chain(&mail.delivered_to)
        .any(|a| *a == cfg.addresses.commands);
    if to_commands {
        if let Some(partner) = cfg.partner_by_email(from) {
            let claim = crate::decide::trust::Claim::PartnerCommand {
                partner: &partner.id,
            };
            if let Some(refused) = untrusted(ctx, mail, from, claim) {
                return Ok(refused);
            }
            return commands::run_commands(ctx, view, mail, partner, from);
        }
    }
    // A mail in a ticket's thread belongs to the ticket, whoever wrote it
    // (the ticket decides who may): decided here, once, before anything
    // reads it as an answer.
    if let Some(t) = support::referenced_ticket(view, mail)? {
        return support::ticket_mail(ctx, view, mail, from, t);
    }
    // Anyone else, even writing to the command address (a customer who
    // answers "to all" on a forwarded draft), is judged as a customer:
    // a signed answer still counts, and a stranger is ignored.
    customer::customer_mail(ctx, view, mail, from, to_commands)
}

/// Longest subject, in characters, that Liaison quotes from a mail.
pub const MAX_QUOTED_SUBJECT_CHARS: usize = 200;

/// A subject someone else wrote, as Liaison quotes it in its own mails
/// (`Re: …`, "Support request from …: …", a ticket's subject): without
/// reply prefixes, without control characters (they become spaces) and
/// without format characters, and cut at [`MAX_QUOTED_SUBJECT_CHARS`].
/// The mail goes out under Liaison's name: a bidi override must not make
/// `Invoice <U+202E>fdp.exe` read "Invoice exe.pdf" in the partner's inbox,
/// and the sender's subject length must not set the size of every answer.
pub(crate) fn quoted_subject(subject: &str) -> String {
    let mut out = String::new();
    for (n, c) in strip_reply_prefixes(subject)
        .chars()
        .filter(|c| !crate::command::is_format_character(*c))
        .enumerate()
    {
        if n == MAX_QUOTED_SUBJECT_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out.trim_end().to_string()
}

/// Strips `Re:`/`Fwd:`-style prefixes (several languages) from a subject.
pub(crate) fn strip_reply_prefixes(subject: &str) -> &str {
    let mut s = subject.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        let cut = ["re:", "fw:", "fwd:", "aw:", "sv:", "답장:", "회신:"]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map(|p| p.len());
        match cut {
            Some(n) => s = s[n..].trim_start(),
            None => return s,
        }
    }
}

/// One of Liaison's mails could not be delivered to `recipient` (a 5xx reply
/// or a bounce). When it carried an invitation, the invitation is marked
/// bounced and the partner is told which address failed and why.
pub fn delivery_failed(
    ctx: &Context,
    view: &dyn StoreView,
    message_id: &str,
    recipient: &str,
    reason: &str,
    key: &str,
) -> Result<Decision, WorkflowError> {
    let Some(mut inv) = view
        .invitation_by_message_id(message_id)?
        .map(|id| view.invitation(id))
        .transpose()?
        .flatten()
    else {
        return Ok(Decision::ignored(format!(
            "delivery to {recipient} failed ({reason}) for {message_id}, which carried no invitation"
        )));
    };
    let recipient = recipient.to_ascii_lowercase();
    // Also for a draft: it went to the partner, and a failure to reach the
    // partner is not the customer's address failing.
    if inv.customer != recipient {
        return Ok(Decision::ignored(format!(
            "delivery report names {recipient}, not {}; ignored",
            inv.customer
        )));
    }
    if inv.bounced.is_some() {
        return Ok(Decision::ignored(format!(
            "invitation {} already marked bounced",
            inv.id
        )));
    }
    let Some(partner) = ctx.config.partner(&inv.partner) else {
        return Ok(Decision::ignored(
            "bounce for a partner no longer configured",
        ));
    };
    // The reason is the remote server's text (or, for a 5xx, our relay's
    // rendering of it): quoted to the partner only defanged.
    let reason = crate::mail::dsn::defang(reason);
    inv.bounced = Some(reason.clone());
    let key = format!("{key}\0bounce");
    let mut ids = MessageIds::new(&key, ctx);
    let mut decision = Decision::new(
        MailClass::Bounce,
        format!(
            "invitation {} to {recipient} bounced: {reason}; partner {} told",
            inv.id, partner.id
        ),
    );
    decision.mails.push(partner_notice(
        partner,
        None,
        TemplateName::BouncedPartner,
        ids.next(),
        serde_json::json!({
            "partner_name": partner.name,
            "customer_email": inv.customer,
            "customer_name": inv.customer_name,
            "reason": reason,
            "at": rfc3339(ctx.now),
        }),
    ));
    decision.invitations.push(inv);
    Ok(decision)
}

/// What [`recipient_refused`] needs to know of the refused mail.
pub struct RefusedMail<'a> {
    /// Its subject.
    pub subject: &'a str,
    /// All its recipients.
    pub recipients: &'a [String],
    /// The ticket it belongs to.
    pub ticket: Option<u64>,
}

/// One recipient of a mail that carried no invitation refused it for good.
/// The partner the mail concerned (the ticket's, or the partner among its
/// recipients) is told which address did not get it and why, unless the
/// refused address is one of that partner's own: a notice to an address
/// that refuses mail would only be refused again.
pub fn recipient_refused(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &RefusedMail,
    recipient: &str,
    reason: &str,
    key: &str,
) -> Result<Decision, WorkflowError> {
    // The remote server's answer is its text, not ours: defanged like a
    // bounce's diagnostic before anyone is shown it.
    let reason = crate::mail::dsn::defang(reason);
    let reason = reason.as_str();
    let cfg = ctx.config;
    let by_ticket = match mail.ticket {
        Some(t) => view.ticket(t)?.and_then(|t| cfg.partner(&t.partner)),
        None => None,
    };
    let partner =
        by_ticket.or_else(|| mail.recipients.iter().find_map(|r| cfg.partner_by_email(r)));
    let Some(partner) = partner else {
        return Ok(Decision::ignored(format!(
            "delivery of \"{}\" to {recipient} failed ({reason}); no partner concerned to tell",
            mail.subject
        )));
    };
    let recipient = recipient.to_ascii_lowercase();
    if partner.emails.contains(&recipient) {
        return Ok(Decision::ignored(format!(
            "delivery of \"{}\" to partner {}'s own address {recipient} failed ({reason}); not reported to it",
            mail.subject, partner.id
        )));
    }
    let key = format!("{key}\0refused");
    let mut ids = MessageIds::new(&key, ctx);
    let mut decision = Decision::new(
        MailClass::Bounce,
        format!(
            "delivery of \"{}\" to {recipient} failed: {reason}; partner {} told",
            mail.subject, partner.id
        ),
    );
    let mut notice = partner_notice(
        partner,
        None,
        TemplateName::DeliveryFailedPartner,
        ids.next(),
        serde_json::json!({
            "partner_name": partner.name,
            "recipient": recipient,
            "subject": mail.subject,
            "reason": reason,
            "at": rfc3339(ctx.now),
        }),
    );
    notice.ticket = mail.ticket;
    decision.mails.push(notice);
    Ok(decision)
}

/// A mail a cap held back instead of sending: it is recorded with the
/// reason, counted, and can be released by the operator; nothing a cap
/// holds vanishes.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldPlan {
    /// The mail, as it would have been sent.
    pub plan: MailPlan,
    /// Why it was held.
    pub reason: String,
    /// The partner to tell (at most once an hour), when there is one who
    /// must know; replies to unknown addresses concern only the operator.
    pub partner: Option<String>,
    /// The address whose traffic was capped.
    pub sender: String,
    /// What was capped, for the partner's notice ("support requests").
    pub what: &'static str,
}

/// Holds back replies to addresses that already got `cap` replies this hour
/// (RFC 3834's advice against mail loops with misbehaving auto-responders).
/// Only replies count: mails answering an inbound mail, not invitations or
/// relays. A reply is a mail with `in_reply_to`, or one addressed to
/// `sender`, the inbound mail's From: a mail without a Message-ID cannot be
/// referred to, and its sender (an auto-responder, or a forged From) must
/// not escape the cap by leaving the header out. Traffic of a ticket (relays and notices between
/// its customer, partner, support contact and the desk) is between known
/// parties and is never capped here: a desk answering thirty follow-ups an
/// hour is work, not a loop. A transcript of a command mail in which at
/// least one command did something is real work too and is never capped
/// (a partner may send hundreds of commands an hour); a transcript that
/// only says "help" or lists errors is. Returns the addresses of the
/// replies kept (to count them) and the replies held.
pub fn apply_reply_cap(
    decision: &mut Decision,
    sender: Option<&str>,
    sent_this_hour: &dyn Fn(&str) -> u32,
    cap: u32,
) -> (Vec<String>, Vec<HeldPlan>) {
    let mut counted: Vec<String> = Vec::new();
    let mut held = Vec::new();
    let mails = std::mem::take(&mut decision.mails);
    for m in mails {
        let reply = m.in_reply_to.is_some() || sender.is_some_and(|s| m.to.iter().any(|t| t == s));
        let did_work = m.template == TemplateName::Transcript
            && decision
                .transcript
                .as_ref()
                .is_some_and(Transcript::did_work);
        if !reply || m.ticket.is_some() || did_work {
            decision.mails.push(m);
            continue;
        }
        let over =
            m.to.iter()
                .find(|a| {
                    let planned = counted.iter().filter(|c| c == a).count() as u32;
                    sent_this_hour(a) + planned >= cap
                })
                .cloned();
        match over {
            Some(a) => held.push(HeldPlan {
                reason: format!("reply to {a} held: {cap} replies this hour already"),
                plan: m,
                partner: None,
                sender: a,
                what: "replies",
            }),
            None => {
                counted.extend(m.to.iter().cloned());
                decision.mails.push(m);
            }
        }
    }
    (counted, held)
}

/// Whether a mail carries a support request to the partner or the desk
/// (a forward, or a new ticket): what one customer address may cause at
/// most `security.max_support_requests_per_hour` times an hour.
fn is_support_request(m: &MailPlan) -> bool {
    matches!(
        m.template,
        TemplateName::SupportForwardPartner
            | TemplateName::TicketOpenedDesk
            | TemplateName::TicketOpenedPartner
    )
}

/// Holds back every mail of a decision that forwards a support request or
/// opens a ticket when its customer already had `cap` of them this hour
/// (forged requests must not flood the partner or the desk with forwards
/// and attachments). The acknowledgement to the customer is held with it.
/// Returns the customer to count, when the request went through, and the
/// mails held.
pub fn apply_support_cap(
    decision: &mut Decision,
    requests_this_hour: &dyn Fn(&str) -> u32,
    cap: u32,
) -> (Option<String>, Vec<HeldPlan>) {
    let MailClass::Customer { partner, customer } = &decision.class else {
        return (None, vec![]);
    };
    if !decision.mails.iter().any(is_support_request) {
        return (None, vec![]);
    }
    if requests_this_hour(customer) < cap {
        return (Some(customer.clone()), vec![]);
    }
    let reason = format!("more than {cap} support requests from {customer} this hour");
    let held = std::mem::take(&mut decision.mails)
        .into_iter()
        .map(|plan| HeldPlan {
            plan,
            reason: reason.clone(),
            partner: Some(partner.clone()),
            sender: customer.clone(),
            what: "support requests",
        })
        .collect();
    decision.summary.push_str(&format!("; held: {reason}"));
    (None, held)
}

/// The notice telling `partner` that mails from `held.sender` are being
/// held, and why (sent at most once an hour per partner).
pub fn held_notice(
    ctx: &Context,
    partner: &crate::config::Partner,
    held: &HeldPlan,
    key: &str,
) -> MailPlan {
    let key = format!("{key}\0held");
    let mut ids = MessageIds::new(&key, ctx);
    partner_notice(
        partner,
        None,
        TemplateName::HeldPartner,
        ids.next(),
        serde_json::json!({
            "partner_name": partner.name,
            "sender": held.sender,
            "what": held.what,
            "cap": ctx.config.security.max_support_requests_per_hour,
            "reason": held.reason,
            "at": rfc3339(ctx.now),
        }),
    )
}

/// A notice to a partner (and its support contact, if any): from the
/// command address, in the partner's locale, not threaded to anything.
pub(crate) fn partner_notice(
    partner: &crate::config::Partner,
    support_contact: Option<&str>,
    template: TemplateName,
    message_id: String,
    vars: serde_json::Value,
) -> MailPlan {
    let mut to = vec![partner.emails[0].clone()];
    to.extend(support_contact.map(str::to_string));
    MailPlan {
        template,
        locale: partner.locale.clone(),
        to,
        from: Sender::Commands,
        reply_to: None,
        message_id,
        in_reply_to: None,
        references: vec![],
        vars,
        invitation: None,
        ticket: None,
        attachments: vec![],
    }
}
