//! Support requests: forwarding them to the partner while it holds admin
//! permissions, and opening and threading tickets with the support desk on
//! the customer's behalf once the customer has removed them.
//!
//! A ticket thread accepts mail only from the ticket's customer, the
//! partner, its support contact and the support desk. Anyone else quoting
//! `[T-000123]` is refused: a ticket number in a subject is not a password.
//! With `security.trusted_authserv_id` set, the parties themselves must be
//! authenticated too ([`crate::decide::trust`]), or their mail is quarantined.

use super::{rfc3339, Context, Decision, MailClass, MailPlan, MessageIds, Sender, WorkflowError};
use crate::config::{Config, Partner};
use crate::effects::StoreView;
use crate::mail::inbound::{Attachment, InboundMail};
use crate::model::relationship::{Relationship, RelationshipState};
use crate::model::ticket::{self, Author, Ticket, TicketEntry, TicketState};
use crate::render::templates::TemplateName;
use serde_json::json;

/// The attachments that fit in `limit` bytes (in order), and the names of
/// those left out.
fn within_limit(all: &[Attachment], limit: usize) -> (Vec<Attachment>, Vec<String>) {
    let mut used = 0usize;
    let mut kept = Vec::new();
    let mut omitted = Vec::new();
    for a in all {
        if used + a.data.len() <= limit {
            used += a.data.len();
            kept.push(a.clone());
        } else {
            omitted.push(format!("{} ({} bytes)", a.name, a.data.len()));
        }
    }
    (kept, omitted)
}

/// The ticket a mail refers to by subject tag or thread, if any.
pub(super) fn referenced_ticket(
    view: &dyn StoreView,
    mail: &InboundMail,
) -> Result<Option<Ticket>, WorkflowError> {
    if let Some(id) = ticket::find_tag(&mail.subject) {
        if let Some(t) = view.ticket(id)? {
            return Ok(Some(t));
        }
    }
    for id in mail.in_reply_to.iter().chain(mail.references.iter().rev()) {
        if let Some(tid) = view.ticket_by_message_id(id)? {
            if let Some(t) = view.ticket(tid)? {
                return Ok(Some(t));
            }
        }
    }
    Ok(None)
}

/// The ticket's record of `mail`; `text` is its new text
/// ([`crate::mail::reply::new_text`], computed once by the caller, which quotes
/// it in its mails too).
/// Most characters of a mail's text a ticket keeps in its entry. The
/// whole text is relayed; the record keeps the start of it. A ticket is one
/// record, rewritten on every follow-up and read whole by `liaison ticket`:
/// kept whole, every follow-up of up to `security.max_message_bytes` would
/// grow it by as much, as often as a party (or, without sender checks,
/// anyone who writes the customer's From and the computable tag) likes.
pub const MAX_ENTRY_TEXT_CHARS: usize = 16 * 1024;

/// `text` cut at [`MAX_ENTRY_TEXT_CHARS`], saying how much was left out.
fn entry_text(text: String) -> String {
    let Some((cut, _)) = text.char_indices().nth(MAX_ENTRY_TEXT_CHARS) else {
        return text;
    };
    let left_out = text[cut..].chars().count();
    format!(
        "{}\n[… {left_out} more characters, not kept here; the whole text was relayed]",
        &text[..cut]
    )
}

fn entry(
    ctx: &Context,
    author: Author,
    from: &str,
    mail: &InboundMail,
    text: String,
    attachments: &[Attachment],
) -> TicketEntry {
    TicketEntry {
        at: ctx.now,
        author,
        from: from.to_string(),
        message_id: mail.message_id.clone(),
        text: entry_text(text),
        attachments: attachments.iter().map(|a| a.name.clone()).collect(),
    }
}

/// Handles a mail that refers to a ticket.
pub(super) fn ticket_mail(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    from: &str,
    mut t: Ticket,
) -> Result<Decision, WorkflowError> {
    let cfg = ctx.config;
    let rel = view.relationship(&t.partner, &t.customer)?;
    let partner = cfg.partner(&t.partner);
    let contact = rel.as_ref().and_then(|r| r.support_contact.clone());
    // The desk's address is the desk, whatever else it is: a partner may
    // name the desk as its support contact, and the desk's answers must
    // still reach the customer.
    let author = if from == cfg.addresses.support_desk {
        Author::SupportDesk
    } else if from == t.customer {
        Author::Customer
    } else if partner.is_some_and(|p| p.emails.iter().any(|e| e == from)) {
        Author::Partner
    } else if Some(from) == t.support_contact.as_deref() || Some(from) == contact.as_deref() {
        Author::SupportContact
    } else {
        return Ok(Decision::ignored(format!(
            "refused: {from} wrote to ticket {} but is not its customer, partner, support contact or the support desk (possible ticket hijack); no reply",
            ticket::format_id(t.id)
        )));
    };
    // A ticket tag or thread is no credential (the tag is computable, the
    // thread passes through many hands): every party must be authenticated.
    let tid = ticket::format_id(t.id);
    let claim = crate::decide::trust::Claim::Ticket {
        ticket: &tid,
        author,
    };
    if let Some(refused) = super::untrusted(ctx, mail, from, claim) {
        return Ok(refused);
    }
    let Some(partner) = partner else {
        return Ok(Decision::ignored(format!(
            "ticket {} belongs to partner `{}`, which is no longer configured",
            ticket::format_id(t.id),
            t.partner
        )));
    };
    let key = format!("{}\0ticket", mail.key);
    let mut ids = MessageIds::new(&key, ctx);
    let mut decision = Decision::new(
        MailClass::Customer {
            partner: t.partner.clone(),
            customer: t.customer.clone(),
        },
        "",
    );
    let (attachments, omitted) = within_limit(&mail.attachments, cfg.tickets.attachment_max_bytes);

    if t.state == TicketState::Closed && author != Author::SupportDesk {
        let closed_at = t.closed_at.unwrap_or(t.opened);
        if ctx.now > closed_at + u64::from(cfg.tickets.reopen_days) * 86_400 {
            // Too old to reopen: a new ticket that refers to the old one.
            let Some(rel) = rel else {
                return Ok(Decision::ignored("closed ticket without a relationship"));
            };
            return open_ticket(ctx, view, mail, from, &rel, partner, Some(t.id));
        }
    }
    let reopened = t.state == TicketState::Closed;
    // The reply splitter is the costly step on a large mail: once per
    // mail, for the ticket's record and every mail that quotes it.
    let text = crate::mail::reply::new_text(&mail.text);
    t.entries
        .push(entry(ctx, author, from, mail, text.clone(), &attachments));
    t.message_ids.extend(mail.message_id.clone());
    let id = &tid;
    let vars = |who: &str| {
        json!({
            "ticket_id": id,
            "partner_name": partner.name,
            "customer_email": t.customer,
            "author": who,
            "from": from,
            "subject": t.subject,
            "text": text,
            "omitted_attachments": omitted,
            "reopened": reopened,
        })
    };
    let author_name = match author {
        Author::Customer => "customer",
        Author::Partner => "partner",
        Author::SupportContact => "support contact",
        Author::SupportDesk => "support desk",
    };
    if author == Author::SupportDesk {
        // The desk answered: relay to the customer, and to the partner and
        // its support contact.
        t.state = TicketState::WaitingOnCustomer;
        let locale = rel
            .as_ref()
            .map(|r| r.locale.clone())
            .unwrap_or_else(|| partner.locale.clone());
        let mut customer_vars = vars(author_name);
        super::web::with_status_link(
            &mut customer_vars,
            super::web::status_link(ctx, t.id, t.opened, &t.customer),
        );
        decision.mails.push(MailPlan {
            template: TemplateName::TicketRelayCustomer,
            locale,
            to: vec![t.customer.clone()],
            from: Sender::Invitations,
            reply_to: None,
            message_id: ids.next(),
            in_reply_to: t.customer_message_id.clone(),
            references: t.customer_message_id.iter().cloned().collect(),
            vars: customer_vars,
            invitation: None,
            ticket: Some(t.id),
            attachments: attachments.clone(),
        });
        let mut notice = ticket_notice(
            cfg,
            partner,
            contact.as_deref(),
            TemplateName::TicketRelayPartner,
            ids.next(),
            vars(author_name),
            t.id,
        );
        notice.attachments = attachments;
        decision.mails.push(notice);
    } else {
        // The customer, partner or contact wrote: relay to the desk.
        t.state = TicketState::WaitingOnSupport;
        t.closed_at = if reopened { None } else { t.closed_at };
        decision.mails.push(MailPlan {
            template: TemplateName::TicketRelayDesk,
            locale: "en".into(),
            to: vec![cfg.addresses.support_desk.clone()],
            from: Sender::Invitations,
            reply_to: None,
            message_id: ids.next(),
            in_reply_to: t.desk_message_id.clone(),
            references: t.desk_message_id.iter().cloned().collect(),
            vars: vars(author_name),
            invitation: None,
            ticket: Some(t.id),
            attachments,
        });
    }
    for m in &decision.mails {
        t.message_ids.push(m.message_id.clone());
    }
    decision.summary = format!(
        "{author_name} {from} wrote to ticket {id}{}; relayed; now {}",
        if reopened { " (reopened)" } else { "" },
        t.state
    );
    decision.tickets.push(t);
    Ok(decision)
}

/// A support request from the customer of `rel` (not tied to a ticket).
pub(super) fn support_request(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    from: &str,
    rel: &Relationship,
) -> Result<Decision, WorkflowError> {
    let Some(partner) = ctx.config.partner(&rel.partner) else {
        return Ok(Decision::ignored(format!(
            "support request for partner `{}`, which is no longer configured",
            rel.partner
        )));
    };
    match rel.state {
        RelationshipState::PermissionsRemoved => {
            open_ticket(ctx, view, mail, from, rel, partner, None)
        }
        RelationshipState::Active => Ok(forward_to_partner(ctx, mail, from, rel, partner)),
        _ => {
            let key = format!("{}\0support", mail.key);
            let mut ids = MessageIds::new(&key, ctx);
            let mut d = Decision::ignored(format!(
                "support request from {from}, whose relationship with {} is {}; told to contact the partner",
                partner.id, rel.state
            ));
            let mut notice = super::customer::customer_notice(
                ctx,
                rel,
                mail,
                &mut ids,
                TemplateName::NotMatched,
                json!({"reason": "ended"}),
            );
            notice.invitation = None;
            d.mails.push(notice);
            Ok(d)
        }
    }
}

fn forward_to_partner(
    ctx: &Context,
    mail: &InboundMail,
    from: &str,
    rel: &Relationship,
    partner: &Partner,
) -> Decision {
    let key = format!("{}\0support", mail.key);
    let mut ids = MessageIds::new(&key, ctx);
    let (attachments, omitted) =
        within_limit(&mail.attachments, ctx.config.tickets.attachment_max_bytes);
    let subject = super::quoted_subject(&mail.subject);
    let vars = json!({
        "partner_name": partner.name,
        "customer_email": rel.customer,
        "customer_name": rel.customer_name,
        "subject": subject,
        "text": crate::mail::reply::new_text(&mail.text),
        "omitted_attachments": omitted,
        "at": rfc3339(ctx.now),
    });
    let mut d = Decision::new(
        MailClass::Customer {
            partner: partner.id.clone(),
            customer: from.to_string(),
        },
        "",
    );
    let mut to = vec![partner.emails[0].clone()];
    to.extend(rel.support_contact.clone());
    d.mails.push(MailPlan {
        template: TemplateName::SupportForwardPartner,
        locale: partner.locale.clone(),
        to,
        from: Sender::Commands,
        // The partner answers the customer directly.
        reply_to: Some(rel.customer.clone()),
        message_id: ids.next(),
        in_reply_to: None,
        references: vec![],
        vars: vars.clone(),
        invitation: None,
        ticket: None,
        attachments,
    });
    let mut ack = super::customer::customer_notice(
        ctx,
        rel,
        mail,
        &mut ids,
        TemplateName::SupportAckCustomer,
        vars,
    );
    ack.invitation = None;
    d.mails.push(ack);
    d.summary = format!(
        "support request from {from} forwarded to partner {} (relationship active)",
        partner.id
    );
    d
}

fn open_ticket(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    from: &str,
    rel: &Relationship,
    partner: &Partner,
    previous: Option<u64>,
) -> Result<Decision, WorkflowError> {
    let cfg = ctx.config;
    // Tickets are numbered in order; decisions are serialised by the engine,
    // so the next number cannot be taken twice.
    let id = view.last_ticket_id()? + 1;
    let tid = ticket::format_id(id);
    let key = format!("{}\0ticket", mail.key);
    let mut ids = MessageIds::new(&key, ctx);
    let (attachments, omitted) = within_limit(&mail.attachments, cfg.tickets.attachment_max_bytes);
    let subject = super::quoted_subject(&mail.subject);
    let text = crate::mail::reply::new_text(&mail.text);
    let vars = json!({
        "ticket_id": tid,
        "partner_name": partner.name,
        "partner_id": partner.id,
        "partner_email": partner.emails[0],
        "customer_email": rel.customer,
        "customer_name": rel.customer_name,
        "support_contact": rel.support_contact,
        "subject": subject,
        "text": text,
        "omitted_attachments": omitted,
        "previous_ticket": previous.map(ticket::format_id),
        "at": rfc3339(ctx.now),
    });
    let desk_id = ids.next();
    let mut desk_cc = Vec::new();
    desk_cc.extend(contact_besides_desk(cfg, rel.support_contact.as_deref()).map(str::to_string));
    let mut d = Decision::new(
        MailClass::Customer {
            partner: partner.id.clone(),
            customer: from.to_string(),
        },
        "",
    );
    let mut to = vec![cfg.addresses.support_desk.clone()];
    to.extend(desk_cc);
    d.mails.push(MailPlan {
        template: TemplateName::TicketOpenedDesk,
        locale: "en".into(),
        to,
        from: Sender::Invitations,
        reply_to: None,
        message_id: desk_id.clone(),
        in_reply_to: None,
        references: vec![],
        vars: vars.clone(),
        invitation: None,
        ticket: Some(id),
        attachments: attachments.clone(),
    });
    let mut ack_vars = vars.clone();
    super::web::with_status_link(
        &mut ack_vars,
        super::web::status_link(ctx, id, ctx.now, &rel.customer),
    );
    let mut ack = super::customer::customer_notice(
        ctx,
        rel,
        mail,
        &mut ids,
        TemplateName::TicketOpenedCustomer,
        ack_vars,
    );
    ack.invitation = None;
    ack.ticket = Some(id);
    let customer_id = ack.message_id.clone();
    d.mails.push(ack);
    d.mails.push(ticket_notice(
        cfg,
        partner,
        rel.support_contact.as_deref(),
        TemplateName::TicketOpenedPartner,
        ids.next(),
        vars,
        id,
    ));
    let mut message_ids: Vec<String> = mail.message_id.iter().cloned().collect();
    message_ids.extend(d.mails.iter().map(|m| m.message_id.clone()));
    d.tickets.push(Ticket {
        id,
        partner: partner.id.clone(),
        customer: rel.customer.clone(),
        support_contact: rel.support_contact.clone(),
        state: TicketState::Open,
        subject,
        opened: ctx.now,
        closed_at: None,
        previous,
        message_ids,
        desk_message_id: Some(desk_id),
        customer_message_id: Some(customer_id),
        entries: vec![entry(
            ctx,
            Author::Customer,
            from,
            mail,
            text.clone(),
            &attachments,
        )],
    });
    d.summary = format!(
        "ticket {tid} opened for {from} on behalf of {} (permissions removed){}",
        partner.id,
        previous
            .map(|p| format!(", continuing {}", ticket::format_id(p)))
            .unwrap_or_default()
    );
    Ok(d)
}

/// What closing a ticket produces: the transcript line, the updated ticket
/// and the notices to send.
pub(super) type Closed = (String, Ticket, Vec<MailPlan>);

/// `close T-000123 [note]` by `partner`: the customer and the desk are told.
pub(crate) fn close_ticket(
    ctx: &Context,
    view: &dyn StoreView,
    partner: &Partner,
    actor: &str,
    key: &str,
    id: u64,
    note: Option<&str>,
) -> Result<Result<Closed, String>, WorkflowError> {
    let tid = ticket::format_id(id);
    let Some(mut t) = view.ticket(id)?.filter(|t| t.partner == partner.id) else {
        // Another partner's ticket is "not found", never revealed.
        return Ok(Err(format!("ticket {tid} not found")));
    };
    if t.state == TicketState::Closed {
        return Ok(Err(format!("ticket {tid} is already closed")));
    }
    t.state = TicketState::Closed;
    t.closed_at = Some(ctx.now);
    t.entries.push(TicketEntry {
        at: ctx.now,
        author: Author::Partner,
        from: actor.to_string(),
        message_id: None,
        text: note
            .map(str::to_string)
            .unwrap_or_else(|| "(closed)".into()),
        attachments: vec![],
    });
    let rel = view.relationship(&t.partner, &t.customer)?;
    let key = format!("{key}\0close{id}");
    let mut ids = MessageIds::new(&key, ctx);
    let vars = json!({
        "ticket_id": tid,
        "partner_name": partner.name,
        "customer_email": t.customer,
        "subject": t.subject,
        "note": note,
        "at": rfc3339(ctx.now),
    });
    let mut customer_vars = vars.clone();
    super::web::with_status_link(
        &mut customer_vars,
        super::web::status_link(ctx, t.id, t.opened, &t.customer),
    );
    let mails = vec![
        MailPlan {
            template: TemplateName::TicketClosedCustomer,
            locale: rel
                .map(|r| r.locale)
                .unwrap_or_else(|| partner.locale.clone()),
            to: vec![t.customer.clone()],
            from: Sender::Invitations,
            reply_to: None,
            message_id: ids.next(),
            in_reply_to: t.customer_message_id.clone(),
            references: t.customer_message_id.iter().cloned().collect(),
            vars: customer_vars,
            invitation: None,
            ticket: Some(id),
            attachments: vec![],
        },
        MailPlan {
            template: TemplateName::TicketClosedDesk,
            locale: "en".into(),
            to: vec![ctx.config.addresses.support_desk.clone()],
            from: Sender::Invitations,
            reply_to: None,
            message_id: ids.next(),
            in_reply_to: t.desk_message_id.clone(),
            references: t.desk_message_id.iter().cloned().collect(),
            vars,
            invitation: None,
            ticket: Some(id),
            attachments: vec![],
        },
    ];
    t.message_ids
        .extend(mails.iter().map(|m| m.message_id.clone()));
    Ok(Ok((
        format!("ticket {tid} closed; the customer and the support desk have been told"),
        t,
        mails,
    )))
}

/// One line per ticket, for `tickets`.
pub(crate) fn ticket_line(t: &Ticket) -> String {
    format!(
        "{}  {:<19}  {}  opened {}  {}",
        ticket::format_id(t.id),
        t.state.as_str(),
        t.customer,
        rfc3339(t.opened),
        t.subject
    )
}

/// The whole thread, for `ticket T-…`.
pub(crate) fn ticket_thread(t: &Ticket) -> String {
    let mut out = format!(
        "{}  {}  customer {}{}\nsubject: {}\n",
        ticket::format_id(t.id),
        t.state,
        t.customer,
        t.previous
            .map(|p| format!("  (continues {})", ticket::format_id(p)))
            .unwrap_or_default(),
        t.subject
    );
    for e in &t.entries {
        out.push_str(&format!(
            "\n{}  {:?} {}{}\n",
            rfc3339(e.at),
            e.author,
            e.from,
            if e.attachments.is_empty() {
                String::new()
            } else {
                format!("  [attachments: {}]", e.attachments.join(", "))
            }
        ));
        for line in e.text.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The support contact to copy on ticket mail, unless it is the support
/// desk itself: the desk as support contact gets the desk's own mails, not
/// copies of them (nor of its own answers).
fn contact_besides_desk<'a>(cfg: &Config, contact: Option<&'a str>) -> Option<&'a str> {
    contact.filter(|c| *c != cfg.addresses.support_desk)
}

/// A ticket mail to the partner and its support contact: a
/// [`partner_notice`](super::partner_notice) threaded into the ticket, whose
/// replies go to the invitations address (where ticket mail is read).
fn ticket_notice(
    cfg: &crate::config::Config,
    partner: &crate::config::Partner,
    support_contact: Option<&str>,
    template: TemplateName,
    message_id: String,
    vars: serde_json::Value,
    ticket: u64,
) -> MailPlan {
    let support_contact = contact_besides_desk(cfg, support_contact);
    let mut notice = super::partner_notice(partner, support_contact, template, message_id, vars);
    notice.reply_to = Some(cfg.addresses.invitations.clone());
    notice.ticket = Some(ticket);
    notice
}
