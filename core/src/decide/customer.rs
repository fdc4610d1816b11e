//! Customer mail: tying it to one invitation, checking the sender, reading
//! what the new text means, and moving the relationship.

use super::{rfc3339, Context, Decision, MailClass, MailPlan, MessageIds, Sender, WorkflowError};
use crate::config::Partner;
use crate::effects::StoreView;
use crate::mail::address;
use crate::mail::inbound::InboundMail;
use crate::mail::intent::{self, Intent};
use crate::model::invitation::{Invitation, InvitationKind};
use crate::model::relationship::{
    Relationship, RelationshipEvent, RelationshipState, TransitionError,
};
use crate::model::token::{self, TokenError};
use crate::render::templates::TemplateName;
use serde_json::json;

/// How an inbound mail was tied to an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchedBy {
    PlusAddress,
    Subject,
    Thread,
}

/// The result of looking for the invitation a customer mail refers to.
enum Reference {
    /// A valid token or thread.
    Found(Invitation, MatchedBy),
    /// A genuine token or thread whose invitation has expired.
    Expired(Invitation),
    /// A token that fails verification: forged, damaged or unknown.
    Refused(String),
    /// No reference at all.
    Missing,
}

fn find_invitation(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
) -> Result<Reference, WorkflowError> {
    let base = &ctx.config.addresses.invitations;
    let mut candidates: Vec<(String, MatchedBy)> = mail
        .delivered_to
        .iter()
        .chain(&mail.recipients)
        .filter_map(|a| address::plus_tag(a, base))
        .map(|t| (t.to_string(), MatchedBy::PlusAddress))
        .collect();
    candidates.extend(
        token::find_candidates(&mail.subject)
            .into_iter()
            .map(|t| (t.to_string(), MatchedBy::Subject)),
    );
    let mut refusal = None;
    let mut expired = None;
    for (tok, how) in candidates {
        let Ok(claims) = token::peek(&tok) else {
            refusal.get_or_insert(format!("{how:?} token is malformed"));
            continue;
        };
        let Some(inv) = view.invitation(claims.invitation_id)? else {
            refusal.get_or_insert(format!("{how:?} token names no known invitation"));
            continue;
        };
        match ctx
            .tokens
            .verify(&tok, inv.kind.purpose(), &inv.customer, ctx.now)
        {
            Ok(_) => return Ok(Reference::Found(inv, how)),
            // The token is genuine but old; the thread may still identify
            // the relationship (e.g. a late "we removed your permissions").
            Err(TokenError::Expired) => {
                expired.get_or_insert(inv);
            }
            Err(e) => {
                refusal.get_or_insert(format!("{how:?} token refused: {e}"));
            }
        }
    }
    // A thread reference is as strong as a token only because Liaison's
    // Message-IDs are keyed with the secret (`MessageIds`): whoever names one
    // has seen the mail. It must also be a mail sent to the invitation's
    // customer: only those are indexed by invitation, except the draft
    // itself, which went to the partner. Ids of the old, computable kind
    // (mails sent before ids were keyed) prove nothing. Supersession and
    // expiry are then checked as for a token, where it matters (answering
    // the request).
    for id in mail.in_reply_to.iter().chain(mail.references.iter().rev()) {
        if !super::is_keyed_message_id(id) {
            continue;
        }
        if let Some(inv_id) = view.invitation_by_message_id(id)? {
            if let Some(inv) = view.invitation(inv_id)? {
                if inv.draft && inv.message_id == *id {
                    continue;
                }
                return Ok(Reference::Found(inv, MatchedBy::Thread));
            }
        }
    }
    Ok(match (expired, refusal) {
        (Some(inv), _) => Reference::Expired(inv),
        (None, Some(r)) => Reference::Refused(r),
        (None, None) => Reference::Missing,
    })
}

pub(super) fn customer_mail(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    from: &str,
    to_commands: bool,
) -> Result<Decision, WorkflowError> {
    let mut ids = MessageIds::new(&mail.key, ctx);
    let (inv, how) = match find_invitation(ctx, view, mail)? {
        Reference::Found(inv, how) => (inv, how),
        Reference::Refused(reason) => {
            // A forged or damaged token earns no answer: the From address
            // may be forged too, and answering it would be backscatter.
            return Ok(Decision::ignored(format!(
                "mail from {from}: {reason}; nothing changed, no reply"
            )));
        }
        Reference::Expired(inv) => return answer_to_expired(ctx, view, mail, from, &inv, &mut ids),
        Reference::Missing => {
            return without_reference(ctx, view, mail, from, to_commands, &mut ids)
        }
    };
    answer(ctx, view, mail, from, inv, how, &mut ids)
}

/// An answer to an invitation that expired: its customer is told so, anyone
/// else gets nothing (the reference may be a forgery's).
fn answer_to_expired(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    from: &str,
    inv: &Invitation,
    ids: &mut MessageIds,
) -> Result<Decision, WorkflowError> {
    let rel = view.relationship(&inv.partner, &inv.customer)?;
    Ok(match rel {
        Some(rel) if inv.customer == from => {
            let mut d = Decision::ignored(format!(
                "{from} answered invitation {}, which expired on {}",
                inv.id,
                rfc3339(inv.expires)
            ));
            d.mails.push(customer_notice(
                ctx,
                &rel,
                mail,
                ids,
                TemplateName::NotMatched,
                json!({"reason": "expired"}),
            ));
            d
        }
        _ => Decision::ignored(format!(
            "mail from {from} refers to expired invitation {} of {}; no reply",
            inv.id, inv.customer
        )),
    })
}

/// A mail that names no invitation, ticket or thread: a support request
/// when its sender has exactly one live relationship, a request to answer
/// the invitation itself when there are several (never a guess), nothing
/// for a stranger.
fn without_reference(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    from: &str,
    to_commands: bool,
    ids: &mut MessageIds,
) -> Result<Decision, WorkflowError> {
    let known = view.relationships_with(from)?;
    let Some(first) = known.first() else {
        return Ok(Decision::ignored(if to_commands {
            format!("command mail from {from}, which is not a configured partner address; no reply (no backscatter)")
        } else {
            format!("mail from {from}, who is neither a partner nor a known customer; no reply (no backscatter)")
        }));
    };
    // Known by its address alone (no token, no thread): whatever
    // follows acts on the address, so the sender must be trusted.
    let claim = crate::decide::trust::Claim::SupportRequest;
    if let Some(refused) = super::untrusted(ctx, mail, from, claim) {
        return Ok(refused);
    }
    // One relationship that is not waiting for an answer: this is a
    // support request for it; nothing to guess.
    let live: Vec<&Relationship> = known
        .iter()
        .filter(|r| r.state != RelationshipState::Removed)
        .collect();
    if let [rel] = live[..] {
        if rel.state != RelationshipState::Invited {
            return super::support::support_request(ctx, view, mail, from, rel);
        }
    }
    // Several, or an open invitation: never guess which relationship
    // is meant; ask them to answer the mail itself.
    let partner_names: Vec<String> = known
        .iter()
        .map(|r| {
            ctx.config
                .partner(&r.partner)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| r.partner.clone())
        })
        .collect();
    let mut d = Decision::ignored(format!(
        "customer {from} wrote without a reference to an invitation; asked to answer the invitation itself"
    ));
    let mut notice = customer_notice(
        ctx,
        first,
        mail,
        ids,
        TemplateName::NotMatched,
        json!({"reason": "no_reference", "partner_name": partner_names.join(", ")}),
    );
    // The notice must not thread to any one invitation, or a reply
    // to it would pick that partner: exactly the guess avoided here.
    notice.invitation = None;
    d.mails.push(notice);
    Ok(d)
}

/// The customer's answer to the invitation `inv`, found by `how`: checked
/// (sender, trust, supersession, expiry), read (intent) and applied.
fn answer(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    from: &str,
    inv: Invitation,
    how: MatchedBy,
    ids: &mut MessageIds,
) -> Result<Decision, WorkflowError> {
    if inv.customer != from {
        return Ok(Decision::ignored(format!(
            "reply to the invitation of {} came from {from} (matched by {how:?}); only the invited address may answer; nothing changed, no reply",
            inv.customer
        )));
    }
    let credential = match how {
        MatchedBy::PlusAddress | MatchedBy::Subject if inv.draft => {
            crate::decide::trust::Credential::DraftToken
        }
        MatchedBy::PlusAddress | MatchedBy::Subject => crate::decide::trust::Credential::Token,
        MatchedBy::Thread => crate::decide::trust::Credential::Thread,
    };
    let claim = crate::decide::trust::Claim::CustomerAnswer(credential);
    if let Some(refused) = super::untrusted(ctx, mail, from, claim) {
        return Ok(refused);
    }
    // The invitation's own mail and whatever Liaison mail the reply names:
    // their quoted copy is cut by content, whatever the client made of it.
    let known = super::known::known_original(view, mail, &[inv.message_id.as_str()])?;
    let new_text = crate::mail::reply::new_text_known(&mail.text, &known);
    let intent = intent::detect(&new_text);
    let origin = Origin::of_mail(mail, from, format!("matched by {how:?}"));
    match answer_invitation(ctx, view, &inv, &origin, intent, ids)? {
        Answered::Decided(d) => Ok(d),
        Answered::SupportRequest(rel) => {
            // Not an answer: a support request, forwarded under Liaison's
            // name. The token or thread proves only that the sender has
            // seen a mail Liaison sent to the customer (forwarded, copied,
            // archived), not that it is the customer: it needs what a
            // support request without one needs.
            let claim = crate::decide::trust::Claim::SupportRequestByReference;
            if let Some(refused) = super::untrusted(ctx, mail, from, claim) {
                return Ok(refused);
            }
            super::support::support_request(ctx, view, mail, from, &rel)
        }
    }
}

/// Where an answer to an invitation came from, as far as the notices and
/// the history need it: a customer's mail, or the landing page.
pub(super) struct Origin<'a> {
    /// The customer's address (the invited one).
    pub from: &'a str,
    /// How it was tied to the invitation, for the summary.
    pub how: String,
    /// The Message-ID of the customer's mail, recorded in the history
    /// (`None` for an answer from the page).
    pub message_id: Option<String>,
    /// The mail Liaison's notices answer: the customer's, or for the
    /// page the invitation mail.
    pub in_reply_to: Option<String>,
    /// What Liaison's notices thread under, besides `message_id`: the
    /// customer's mail's references, or for the page the invitation mail.
    pub references: Vec<String>,
    /// The subject the customer wrote (empty for the page).
    pub subject: String,
    /// Where the answer came from, for the history: a mail or the page.
    pub source: crate::model::relationship::HistorySource,
}

impl<'a> Origin<'a> {
    /// The origin of an answer by mail.
    pub(super) fn of_mail(mail: &'a InboundMail, from: &'a str, how: String) -> Self {
        Origin {
            from,
            how,
            message_id: mail.message_id.clone(),
            in_reply_to: mail.message_id.clone(),
            references: mail.references.clone(),
            subject: mail.subject.clone(),
            source: crate::model::relationship::HistorySource::Mail,
        }
    }
}

/// What [`answer_invitation`] made of an answer.
pub(super) enum Answered {
    /// The decision: state changes and notices.
    Decided(Decision),
    /// Not an answer at all, for a relationship that is not waiting for
    /// one: the caller treats it as a support request.
    SupportRequest(Relationship),
}

/// The customer answered invitation `inv` (already verified: the token or
/// thread is genuine and the sender is the invited address and trusted for
/// it) with `intent`. The same for a mail and for the landing page, so
/// both have exactly the same effects, notices and history.
pub(super) fn answer_invitation(
    ctx: &Context,
    view: &dyn StoreView,
    inv: &Invitation,
    origin: &Origin,
    intent: Intent,
    ids: &mut MessageIds,
) -> Result<Answered, WorkflowError> {
    let from = origin.from;
    let how = &origin.how;
    let Some(partner) = ctx.config.partner(&inv.partner) else {
        return Ok(Answered::Decided(Decision::ignored(format!(
            "invitation {} belongs to partner `{}`, which is no longer configured",
            inv.id, inv.partner
        ))));
    };
    let Some(mut rel) = view.relationship(&inv.partner, &inv.customer)? else {
        return Ok(Answered::Decided(Decision::ignored(format!(
            "invitation {} has no relationship record",
            inv.id
        ))));
    };
    let mut decision = Decision::new(
        MailClass::Customer {
            partner: partner.id.clone(),
            customer: from.to_string(),
        },
        "",
    );
    if rel.invitation_id != Some(inv.id) {
        decision.summary = format!("{from} answered a superseded invitation {}", inv.id);
        decision.mails.push(customer_notice_from(
            ctx,
            &rel,
            origin,
            ids,
            TemplateName::NotMatched,
            json!({"reason": "superseded"}),
        ));
        return Ok(Answered::Decided(decision));
    }
    let event = match intent {
        Intent::Accept if inv.kind == InvitationKind::Restore => RelationshipEvent::RestoreAccepted,
        Intent::Accept => RelationshipEvent::Accepted,
        Intent::Decline => RelationshipEvent::Declined,
        Intent::PermissionsRemoved => RelationshipEvent::PermissionsRemoved,
        Intent::Unclear | Intent::Other
            if rel.state != RelationshipState::Invited
                && !(inv.kind == InvitationKind::Restore
                    && rel.state == RelationshipState::PermissionsRemoved
                    && intent == Intent::Unclear) =>
        {
            return Ok(Answered::SupportRequest(rel));
        }
        Intent::Unclear | Intent::Other => {
            decision.summary = format!(
                "{from} answered invitation {} with no clear accept or decline ({intent:?})",
                inv.id
            );
            decision.mails.push(customer_notice_from(
                ctx,
                &rel,
                origin,
                ids,
                TemplateName::Clarify,
                json!({
                    "partner_name": partner.name,
                    // The page answers without any wording to get right.
                    "page_link": super::web::page_link(
                        ctx,
                        &ctx.tokens.issue(inv.kind.purpose(), inv.id, inv.expires, &inv.customer),
                    ),
                }),
            ));
            return Ok(Answered::Decided(decision));
        }
    };
    let answers_request = matches!(
        event,
        RelationshipEvent::Accepted
            | RelationshipEvent::RestoreAccepted
            | RelationshipEvent::Declined
    );
    if answers_request && inv.expires < ctx.now {
        decision.summary = format!(
            "{from} answered invitation {}, which expired on {}",
            inv.id,
            rfc3339(inv.expires)
        );
        decision.mails.push(customer_notice_from(
            ctx,
            &rel,
            origin,
            ids,
            TemplateName::NotMatched,
            json!({"reason": "expired"}),
        ));
        return Ok(Answered::Decided(decision));
    }
    let restore = inv.kind == InvitationKind::Restore;
    if restore
        && event == RelationshipEvent::Declined
        && rel.state == RelationshipState::PermissionsRemoved
    {
        // Declining a restore request leaves the permissions removed; both
        // sides are told, nothing changes.
        decision.summary = format!("{from} declined the restore request {}", inv.id);
        push_pair(
            ctx,
            &mut decision,
            &rel,
            partner,
            origin,
            ids,
            (
                TemplateName::DeclinedCustomer,
                TemplateName::DeclinedPartner,
            ),
            true,
            inv.approval_link.as_deref(),
        );
        return Ok(Answered::Decided(decision));
    }
    if matches!(
        event,
        RelationshipEvent::Accepted | RelationshipEvent::RestoreAccepted
    ) && matches!(
        rel.state,
        RelationshipState::Invited | RelationshipState::PermissionsRemoved
    ) {
        if let Some(status) = super::gdap::accept_waits_for_microsoft(&rel) {
            // Liaison follows this relationship in Microsoft Graph: only
            // Microsoft's word makes it active. The customer is thanked and
            // told so; nothing changes until Graph shows the approval.
            decision.summary =
                format!("{from} says they approved; Graph shows {status}, waiting for Microsoft");
            decision.mails.push(customer_notice_from(
                ctx,
                &rel,
                origin,
                ids,
                TemplateName::AwaitingMicrosoftCustomer,
                json!({"approval_link": inv.approval_link, "graph_status": status.as_str()}),
            ));
            return Ok(Answered::Decided(decision));
        }
    }
    let before = rel.state;
    match rel.apply(
        event,
        ctx.now,
        from,
        origin.message_id.as_deref(),
        origin.source,
    ) {
        Ok(after) => {
            if after == RelationshipState::Active {
                // A new period starts with every acceptance (also of a restore).
                rel.ends_at = ctx
                    .config
                    .lifecycle
                    .relationship_days
                    .map(|d| ctx.now + u64::from(d) * 86_400);
                rel.reminders_sent.clear();
            }
            decision.summary = format!("{from} {intent:?} ({how}): {before} -> {after}");
            let templates = match after {
                RelationshipState::Active => (
                    TemplateName::AcceptedCustomer,
                    TemplateName::AcceptedPartner,
                ),
                RelationshipState::Declined => (
                    TemplateName::DeclinedCustomer,
                    TemplateName::DeclinedPartner,
                ),
                _ => (
                    TemplateName::PermissionsRemovedCustomer,
                    TemplateName::PermissionsRemovedPartner,
                ),
            };
            push_pair(
                ctx,
                &mut decision,
                &rel,
                partner,
                origin,
                ids,
                templates,
                restore,
                inv.approval_link.as_deref(),
            );
            decision.relationships.push(rel);
        }
        Err(TransitionError::Superseded(state)) => {
            decision.summary = format!(
                "{from} {intent:?} to {} {}, which no longer applies (relationship {state})",
                match inv.kind {
                    InvitationKind::Invitation => "invitation",
                    InvitationKind::Restore => "restore request",
                },
                inv.id
            );
            decision.mails.push(customer_notice_from(
                ctx,
                &rel,
                origin,
                ids,
                TemplateName::NotMatched,
                json!({"reason": "superseded"}),
            ));
        }
        Err(TransitionError::Already(state)) => {
            decision.summary = format!("{from} {intent:?} again; relationship already {state}");
            decision.mails.push(customer_notice_from(
                ctx,
                &rel,
                origin,
                ids,
                TemplateName::AlreadyAnswered,
                json!({"partner_name": partner.name, "state": state.as_str()}),
            ));
        }
        Err(e) => {
            decision.summary = format!("{from} {intent:?} refused: {e}");
            decision.mails.push(customer_notice_from(
                ctx,
                &rel,
                origin,
                ids,
                TemplateName::AlreadyAnswered,
                json!({"partner_name": partner.name, "state": rel.state.as_str()}),
            ));
        }
    }
    Ok(Answered::Decided(decision))
}

/// A mail to the customer, threaded under the mail they sent.
pub(super) fn customer_notice(
    ctx: &Context,
    rel: &Relationship,
    mail: &InboundMail,
    ids: &mut MessageIds,
    template: TemplateName,
    vars: serde_json::Value,
) -> MailPlan {
    let origin = Origin::of_mail(mail, "", String::new());
    customer_notice_from(ctx, rel, &origin, ids, template, vars)
}

/// A mail to the customer, threaded under what `origin` names.
pub(super) fn customer_notice_from(
    ctx: &Context,
    rel: &Relationship,
    origin: &Origin,
    ids: &mut MessageIds,
    template: TemplateName,
    mut vars: serde_json::Value,
) -> MailPlan {
    let partner_name = ctx
        .config
        .partner(&rel.partner)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| rel.partner.clone());
    if let Some(obj) = vars.as_object_mut() {
        obj.entry("partner_name").or_insert(json!(partner_name));
        obj.entry("original_subject")
            .or_insert(json!(super::quoted_subject(&origin.subject)));
        obj.entry("customer_email").or_insert(json!(rel.customer));
    }
    let mut references = origin.references.clone();
    references.extend(origin.message_id.clone());
    MailPlan {
        template,
        locale: rel.locale.clone(),
        to: vec![rel.customer.clone()],
        from: Sender::Invitations,
        reply_to: None,
        message_id: ids.next(),
        in_reply_to: origin.in_reply_to.clone(),
        references,
        vars,
        invitation: rel.invitation_id,
        ticket: None,
        attachments: vec![],
    }
}

/// The confirmation to the customer and the notice to the partner (and the
/// support contact, if one is assigned) after a customer's answer.
#[allow(clippy::too_many_arguments)]
fn push_pair(
    ctx: &Context,
    decision: &mut Decision,
    rel: &Relationship,
    partner: &Partner,
    origin: &Origin,
    ids: &mut MessageIds,
    (customer_tpl, partner_tpl): (TemplateName, TemplateName),
    restore: bool,
    approval_link: Option<&str>,
) {
    let vars = json!({
        "approval_link": approval_link,
        "verified": false,
        "source": "mail",
        "graph_status": null,
        "partner_name": partner.name,
        "customer_email": rel.customer,
        "customer_name": rel.customer_name,
        "state": rel.state.as_str(),
        "at": rfc3339(ctx.now),
        "restore": restore,
        "support_contact": rel.support_contact,
    });
    decision.mails.push(customer_notice_from(
        ctx,
        rel,
        origin,
        ids,
        customer_tpl,
        vars.clone(),
    ));
    decision.mails.push(super::partner_notice(
        partner,
        rel.support_contact.as_deref(),
        partner_tpl,
        ids.next(),
        vars,
    ));
}
