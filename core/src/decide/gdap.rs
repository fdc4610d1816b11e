//! Decisions fed by Microsoft Graph (GDAP): what Liaison does when
//! Microsoft has created a relationship request, when Graph shows a new
//! status, and when a Graph call failed for good.
//!
//! The shell (`gdap_sync`) makes the calls; these functions get what Graph
//! answered plus the stored state and decide, like every other decision:
//! the same answer on the same state gives the same decision, Message-IDs
//! included (they are keyed by the Graph relationship and what changed).
//! Every transition they make names its source `graph` in the history.

use super::{
    invitation_mail, partner_notice, rfc3339, Context, Decision, MailClass, MailPlan, MessageIds,
    Sender, WorkflowError,
};
use crate::config::Partner;
use crate::effects::StoreView;
use crate::model::gdap::{self as gdap, GdapStatus, GraphRelationship};
use crate::model::relationship::{
    HistorySource, Relationship, RelationshipEvent, RelationshipState,
};
use crate::render::templates::TemplateName;
use serde_json::json;

/// Who Graph-caused transitions are recorded as.
pub const GRAPH_ACTOR: &str = "microsoft-graph";

fn graph_decision(summary: impl Into<String>) -> Decision {
    Decision::new(MailClass::Graph, summary)
}

/// Microsoft created (and Liaison locked for approval) the GDAP
/// relationship asked for by `invite … roles …`: the invitation goes out
/// now, carrying the link to approve exactly that request.
pub fn request_created(
    ctx: &Context,
    view: &dyn StoreView,
    partner: &Partner,
    customer: &str,
    seen: &GraphRelationship,
) -> Result<Decision, WorkflowError> {
    let Some(mut rel) = view.relationship(&partner.id, customer)? else {
        return Ok(Decision::ignored(format!(
            "no relationship {}/{customer}",
            partner.id
        )));
    };
    let Some(mut link) = rel.gdap.clone() else {
        return Ok(Decision::ignored(format!("{customer} has no GDAP request")));
    };
    if link.relationship_id.is_some() || link.display_name != seen.display_name {
        return Ok(Decision::ignored(format!(
            "GDAP relationship {} for {customer} is not the pending request",
            seen.id
        )));
    }
    let Some(mut inv) = rel
        .invitation_id
        .map(|id| view.invitation(id))
        .transpose()?
        .flatten()
    else {
        return Ok(Decision::ignored(format!(
            "the invitation of {customer} is missing"
        )));
    };
    let approval = gdap::granular_admin_link(&seen.id);
    link.relationship_id = Some(seen.id.clone());
    link.status = Some(seen.status);
    link.auto_extend = seen.auto_extends();
    inv.approval_link = Some(approval.clone());
    let key = format!("gdap-created:{}:{}", inv.id, seen.id);
    let mut ids = MessageIds::new(&key, ctx);
    let mail = invitation_mail::plan(
        ctx,
        partner,
        &inv,
        ids.next(),
        link.draft_to.as_deref(),
        invitation_mail::ApprovalStep {
            link: Some(&approval),
            gdap: Some(&link.request),
        },
    );
    let mut decision = graph_decision(format!(
        "GDAP relationship {} created for {customer}; invitation {} sent{}",
        seen.id,
        inv.id,
        if link.draft_to.is_some() {
            " (draft, to the partner)"
        } else {
            ""
        }
    ));
    rel.gdap = Some(link);
    decision.mails.push(mail);
    decision.invitations.push(inv);
    decision.relationships.push(rel);
    Ok(decision)
}

/// A Graph call for `customer` failed for good: the partner is told what
/// and why. When it was the request itself, no invitation was sent and the
/// relationship is removed again (`what` names the call).
pub fn call_failed(
    ctx: &Context,
    view: &dyn StoreView,
    partner: &Partner,
    customer: &str,
    what: &str,
    reason: &str,
) -> Result<Decision, WorkflowError> {
    let Some(mut rel) = view.relationship(&partner.id, customer)? else {
        return Ok(Decision::ignored(format!(
            "no relationship {}/{customer}",
            partner.id
        )));
    };
    let Some(mut link) = rel.gdap.clone() else {
        return Ok(Decision::ignored(format!(
            "{customer} has no GDAP relationship"
        )));
    };
    let request_failed = link.relationship_id.is_none();
    let key = format!(
        "gdap-failed:{}:{}:{what}:{}",
        partner.id,
        customer,
        link.relationship_id
            .as_deref()
            .unwrap_or(&link.display_name)
    );
    let mut ids = MessageIds::new(&key, ctx);
    let mut decision = graph_decision(format!("GDAP {what} for {customer} failed: {reason}"));
    if request_failed {
        // Nothing was sent to the customer: the invitation never existed for
        // them, so the relationship ends where it began.
        if rel.state == RelationshipState::Invited {
            let _ = rel.apply(
                RelationshipEvent::Removed,
                ctx.now,
                GRAPH_ACTOR,
                None,
                HistorySource::Graph,
            );
        }
    }
    if what.contains("terminat") {
        link.terminate_due = false;
    }
    if what.contains("access assignment") {
        link.assignments_due = false;
    }
    decision.mails.push(partner_notice(
        partner,
        rel.support_contact.as_deref(),
        TemplateName::GdapProblemPartner,
        ids.next(),
        json!({
            "partner_name": partner.name,
            "customer_email": rel.customer,
            "customer_name": rel.customer_name,
            "what": what,
            "reason": reason,
            "invitation_held": request_failed,
            "at": rfc3339(ctx.now),
        }),
    ));
    // A request Microsoft refused is not followed any more.
    rel.gdap = (!request_failed).then_some(link);
    decision.relationships.push(rel);
    Ok(decision)
}

/// The access assignments were tried: `failures` (one line each) are
/// reported to the partner; success needs no mail.
pub fn assignments_tried(
    ctx: &Context,
    view: &dyn StoreView,
    partner: &Partner,
    customer: &str,
    failures: &[String],
) -> Result<Decision, WorkflowError> {
    if !failures.is_empty() {
        return call_failed(
            ctx,
            view,
            partner,
            customer,
            "the access assignments",
            &failures.join("; "),
        );
    }
    update_link(
        view,
        partner,
        customer,
        format!("access assignments made for {customer}"),
        |link| link.assignments_due = false,
    )
}

/// The terminate request was sent to Graph.
pub fn terminate_sent(
    view: &dyn StoreView,
    partner: &Partner,
    customer: &str,
) -> Result<Decision, WorkflowError> {
    update_link(
        view,
        partner,
        customer,
        format!("terminate request sent for {customer}"),
        |link| link.terminate_due = false,
    )
}

/// `customer`'s relationship with its Graph link changed by `change`, as a
/// Graph decision; nothing when there is no such relationship or link.
fn update_link(
    view: &dyn StoreView,
    partner: &Partner,
    customer: &str,
    summary: String,
    change: impl FnOnce(&mut gdap::GdapLink),
) -> Result<Decision, WorkflowError> {
    let Some(mut rel) = view.relationship(&partner.id, customer)? else {
        return Ok(Decision::ignored(format!(
            "no relationship {}/{customer}",
            partner.id
        )));
    };
    let Some(link) = rel.gdap.as_mut() else {
        return Ok(Decision::ignored(format!(
            "{customer} has no GDAP relationship"
        )));
    };
    change(link);
    let mut decision = graph_decision(summary);
    decision.relationships.push(rel);
    Ok(decision)
}

/// What Graph shows of `customer`'s relationship now: the record follows
/// (status, end date, auto-extend), and a status that means a Liaison
/// transition makes it, with the usual notices. An empty decision (no
/// relationships) when nothing changed.
pub fn observed(
    ctx: &Context,
    view: &dyn StoreView,
    partner: &Partner,
    customer: &str,
    seen: &GraphRelationship,
) -> Result<Decision, WorkflowError> {
    let Some(mut rel) = view.relationship(&partner.id, customer)? else {
        return Ok(Decision::ignored(format!(
            "no relationship {}/{customer}",
            partner.id
        )));
    };
    let Some(mut link) = rel.gdap.clone() else {
        return Ok(Decision::ignored(format!(
            "{customer} has no GDAP relationship"
        )));
    };
    if link.relationship_id.as_deref() != Some(seen.id.as_str()) {
        return Ok(Decision::ignored(format!(
            "GDAP relationship {} is not {customer}'s current one",
            seen.id
        )));
    }
    let before = link.clone();
    link.status = Some(seen.status);
    link.auto_extend = seen.auto_extends();
    link.ends_at = seen
        .end_date_time
        .as_deref()
        .and_then(gdap::parse_graph_time);
    let mut decision = graph_decision("");
    let state_before = rel.state;
    if let Some(event) = gdap::event_for_status(rel.state, seen.status) {
        let after = rel
            .apply(event, ctx.now, GRAPH_ACTOR, None, HistorySource::Graph)
            .expect("event_for_status names only allowed events");
        let key = format!("gdap:{}:{}:{}", seen.id, seen.status, after);
        let mut ids = MessageIds::new(&key, ctx);
        let vars = json!({
            "partner_name": partner.name,
            "customer_email": rel.customer,
            "customer_name": rel.customer_name,
            "state": after.as_str(),
            "at": rfc3339(ctx.now),
            "restore": event == RelationshipEvent::RestoreAccepted,
            "support_contact": rel.support_contact,
            "approval_link": null,
            "verified": true,
            "source": "graph",
            "graph_status": seen.status.as_str(),
        });
        match after {
            RelationshipState::Active => {
                rel.ends_at = link.ends_at;
                rel.reminders_sent.clear();
                link.assignments_due = !partner.access_assignments.is_empty();
                decision.mails.push(customer_mail(
                    &rel,
                    &mut ids,
                    TemplateName::AcceptedCustomer,
                    vars.clone(),
                ));
                decision.mails.push(partner_notice(
                    partner,
                    rel.support_contact.as_deref(),
                    TemplateName::AcceptedPartner,
                    ids.next(),
                    vars,
                ));
            }
            RelationshipState::PermissionsRemoved => {
                rel.ends_at = None;
                decision.mails.push(customer_mail(
                    &rel,
                    &mut ids,
                    TemplateName::PermissionsRemovedCustomer,
                    vars.clone(),
                ));
                decision.mails.push(partner_notice(
                    partner,
                    rel.support_contact.as_deref(),
                    TemplateName::PermissionsRemovedPartner,
                    ids.next(),
                    vars,
                ));
            }
            RelationshipState::Expired if state_before == RelationshipState::Active => {
                let ended = link.ends_at.unwrap_or(ctx.now);
                rel.ends_at = None;
                decision.mails.push(partner_notice(
                    partner,
                    rel.support_contact.as_deref(),
                    TemplateName::RelationshipEndedPartner,
                    ids.next(),
                    json!({
                        "partner_name": partner.name,
                        "customer_email": rel.customer,
                        "customer_name": rel.customer_name,
                        "extended": false,
                        "ended_at": rfc3339(ended),
                        "ends_at": null,
                    }),
                ));
            }
            RelationshipState::Expired => {
                let invited_at = rel
                    .history
                    .iter()
                    .rev()
                    .find(|h| h.to == RelationshipState::Invited)
                    .map_or(rel.since, |h| h.at);
                decision.mails.push(partner_notice(
                    partner,
                    rel.support_contact.as_deref(),
                    TemplateName::ExpiredPartner,
                    ids.next(),
                    json!({
                        "partner_name": partner.name,
                        "customer_email": rel.customer,
                        "customer_name": rel.customer_name,
                        "invited_at": rfc3339(invited_at),
                        "expired_at": rfc3339(ctx.now),
                    }),
                ));
            }
            _ => {}
        }
        decision.summary = format!(
            "Graph shows {} for {customer}: {state_before} -> {after}",
            seen.status
        );
    } else if rel.state == RelationshipState::Active && link.ends_at != before.ends_at {
        // Microsoft extended it (auto-extend): reminders count from the new end.
        rel.ends_at = link.ends_at;
        rel.reminders_sent.clear();
        decision.summary = format!("Graph shows a new end date for {customer}");
    } else {
        decision.summary = format!("Graph shows {} for {customer}", seen.status);
    }
    if link != before || decision.summary.contains("->") {
        rel.gdap = Some(link);
        decision.relationships.push(rel);
    }
    Ok(decision)
}

/// A notice to the customer that answers no mail of theirs (Graph, not
/// the customer, caused it): from the invitations address, tied to the
/// current invitation so a reply to it counts as an answer.
fn customer_mail(
    rel: &Relationship,
    ids: &mut MessageIds,
    template: TemplateName,
    vars: serde_json::Value,
) -> MailPlan {
    MailPlan {
        template,
        locale: rel.locale.clone(),
        to: vec![rel.customer.clone()],
        from: Sender::Invitations,
        reply_to: None,
        message_id: ids.next(),
        in_reply_to: None,
        references: vec![],
        vars,
        invitation: rel.invitation_id,
        ticket: None,
        attachments: vec![],
    }
}

/// Whether a mailed "accept" must wait for Microsoft: the relationship's
/// GDAP request exists in Graph and Graph does not show it active yet.
pub fn accept_waits_for_microsoft(rel: &Relationship) -> Option<GdapStatus> {
    let link = rel.gdap.as_ref()?;
    match link.status {
        Some(GdapStatus::Active | GdapStatus::Expiring) => None,
        Some(s) => Some(s),
        None => Some(GdapStatus::Created),
    }
}
