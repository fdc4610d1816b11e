//! What time alone changes: an invitation not answered within its lifetime
//! expires, and the partner is told; and, when relationships have a fixed
//! duration (`lifecycle.relationship_days`), the partner is reminded before
//! the end, and at the end the relationship expires or is extended.
//!
//! Expiry is derived from the stored invitation's `expires`, not from a
//! timer held in memory, so it survives restarts: a daemon that was down
//! when an invitation ran out expires it at the next sweep.

use super::{rfc3339, Context, Decision, MailClass, MailPlan, MessageIds, WorkflowError};
use crate::effects::StoreView;
use crate::model::invitation::{Invitation, InvitationKind};
use crate::model::relationship::{
    Relationship, RelationshipEvent, RelationshipState, RelationshipSummary,
};
use crate::render::templates::TemplateName;
use serde_json::json;

/// Summaries the timer sweep reads at a time (one round trip on
/// PostgreSQL, whose range scans read pages of this size).
pub const SWEEP_PAGE: usize = 1000;

/// Expires every pending invitation whose time ran out, and takes each
/// relationship with a fixed duration one step (reminder, end). The
/// decision is empty when nothing is due.
pub fn expire_due(ctx: &Context, view: &dyn StoreView) -> Result<Decision, WorkflowError> {
    let candidates = due_candidates(ctx, view)?;
    expire_candidates(ctx, view, &candidates)
}

/// The relationships that may have something due now, found from the
/// summaries (a sweep runs every minute over every relationship, so it must
/// not decode every history), read [`SWEEP_PAGE`] at a time. Reading only,
/// it can run without the engine's lock; [`expire_candidates`] then decides
/// from the full records.
pub fn due_candidates(
    ctx: &Context,
    view: &dyn StoreView,
) -> Result<Vec<RelationshipSummary>, WorkflowError> {
    let mut out = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = view.relationship_summaries_after(
            after.as_ref().map(|(p, c)| (p.as_str(), c.as_str())),
            SWEEP_PAGE,
        )?;
        let more = page.len() == SWEEP_PAGE;
        if let Some(last) = page.last() {
            after = Some((last.partner.clone(), last.customer.clone()));
        }
        out.extend(due_among(ctx, view, page)?);
        if !more {
            return Ok(out);
        }
    }
}

/// Those of `summaries` that may have something due now (see
/// [`due_candidates`]): an active relationship whose end or earliest
/// reminder has come, an invited one whose invitation ran out. The
/// invitations of the invited ones are read in one call
/// ([`StoreView::invitations`]), not one round trip each.
pub fn due_among(
    ctx: &Context,
    view: &dyn StoreView,
    summaries: Vec<RelationshipSummary>,
) -> Result<Vec<RelationshipSummary>, WorkflowError> {
    let earliest_reminder = ctx
        .config
        .lifecycle
        .reminder_days
        .iter()
        .max()
        .map_or(0, |d| u64::from(*d) * 86_400);
    let invited: Vec<u64> = summaries
        .iter()
        .filter(|s| s.state == RelationshipState::Invited)
        .filter_map(|s| s.invitation_id)
        .collect();
    let expired: std::collections::HashSet<u64> = view
        .invitations(&invited)?
        .into_iter()
        .flatten()
        .filter(|inv| inv.kind == InvitationKind::Invitation && inv.expires < ctx.now)
        .map(|inv| inv.id)
        .collect();
    Ok(summaries
        .into_iter()
        .filter(|summary| match summary.state {
            RelationshipState::Active => summary
                .ends_at
                .is_some_and(|ends_at| ctx.now.saturating_add(earliest_reminder) >= ends_at),
            RelationshipState::Invited => summary
                .invitation_id
                .is_some_and(|id| expired.contains(&id)),
            _ => false,
        })
        .collect())
}

/// Decides, from their full records, what time changed for `candidates`
/// (from [`due_candidates`]); anything no longer due is left alone. The
/// records are read in two calls (relationships, then the invitations of
/// the invited ones), so a decision over many candidates costs two round
/// trips on a store across a network, not two per candidate.
pub fn expire_candidates(
    ctx: &Context,
    view: &dyn StoreView,
    candidates: &[RelationshipSummary],
) -> Result<Decision, WorkflowError> {
    let mut decision = Decision::new(MailClass::Timer, "");
    let keys: Vec<(&str, &str)> = candidates
        .iter()
        .map(|c| (c.partner.as_str(), c.customer.as_str()))
        .collect();
    let rels: Vec<Relationship> = view
        .relationships_by_key(&keys)?
        .into_iter()
        .flatten()
        .collect();
    let invitation_ids: Vec<u64> = rels
        .iter()
        .filter(|r| r.state == RelationshipState::Invited)
        .filter_map(|r| r.invitation_id)
        .collect();
    let invitations: std::collections::HashMap<u64, Invitation> = invitation_ids
        .iter()
        .copied()
        .zip(view.invitations(&invitation_ids)?)
        .filter_map(|(id, inv)| Some((id, inv?)))
        .collect();
    for mut rel in rels {
        if rel.state == RelationshipState::Active {
            if let Some(plan) = duration_step(ctx, &mut rel) {
                decision.mails.push(plan);
                decision.relationships.push(rel);
            }
            continue;
        }
        if rel.state != RelationshipState::Invited {
            continue;
        }
        let Some(inv) = rel.invitation_id.and_then(|id| invitations.get(&id)) else {
            continue;
        };
        if inv.kind != InvitationKind::Invitation || inv.expires >= ctx.now {
            continue;
        }
        let Some(partner) = ctx.config.partner(&rel.partner) else {
            continue;
        };
        rel.apply(
            RelationshipEvent::Expired,
            ctx.now,
            "liaison",
            None,
            crate::model::relationship::HistorySource::Timer,
        )
        .expect("invited -> expired is always allowed");
        // Keyed by the invitation, so a sweep re-run after a crash plans the
        // very same mail.
        let key = format!("expire:{}", inv.id);
        let mut ids = MessageIds::new(&key, ctx);
        decision.mails.push(super::partner_notice(
            partner,
            rel.support_contact.as_deref(),
            TemplateName::ExpiredPartner,
            ids.next(),
            json!({
                "partner_name": partner.name,
                "customer_email": rel.customer,
                "customer_name": rel.customer_name,
                "invited_at": rfc3339(inv.created),
                "expired_at": rfc3339(inv.expires),
            }),
        ));
        decision.relationships.push(rel);
    }
    decision.summary = format!(
        "{} relationship(s) changed by time",
        decision.relationships.len()
    );
    Ok(decision)
}

/// For an active relationship with an end date: the reminder that is due,
/// or the end itself (expire, or extend when `auto_extend` is on).
fn duration_step(ctx: &Context, rel: &mut Relationship) -> Option<MailPlan> {
    let ends_at = rel.ends_at?;
    let partner = ctx.config.partner(&rel.partner)?;
    let lifecycle = &ctx.config.lifecycle;
    let period = format!("{}:{}", rel.partner, rel.customer);
    if let Some(g) = &rel.gdap {
        // Microsoft decides the end of a GDAP relationship (Graph shows it
        // expired, or extended): the end date is Graph's, and only the
        // reminders are Liaison's, and none when Microsoft extends it.
        if ctx.now >= ends_at || g.auto_extend {
            return None;
        }
    }
    let (template, key, vars) = if ctx.now >= ends_at {
        let extended = match (lifecycle.auto_extend, lifecycle.relationship_days) {
            (true, Some(days)) => {
                rel.ends_at = Some(ends_at + u64::from(days) * 86_400);
                rel.reminders_sent.clear();
                true
            }
            _ => {
                rel.apply(
                    RelationshipEvent::Expired,
                    ctx.now,
                    "liaison",
                    None,
                    crate::model::relationship::HistorySource::Timer,
                )
                .expect("active -> expired is always allowed");
                rel.ends_at = None;
                false
            }
        };
        (
            TemplateName::RelationshipEndedPartner,
            format!("end:{period}:{ends_at}"),
            json!({"extended": extended, "ended_at": rfc3339(ends_at), "ends_at": rel.ends_at.map(rfc3339)}),
        )
    } else {
        // The smallest reminder whose time has come and that was not sent.
        // If the daemon was down across several, only the latest goes out.
        let due: Vec<u32> = lifecycle
            .reminder_days
            .iter()
            .copied()
            .filter(|d| ctx.now + u64::from(*d) * 86_400 >= ends_at)
            .filter(|d| !rel.reminders_sent.contains(d))
            .collect();
        let days = *due.iter().min()?;
        rel.reminders_sent.extend(due);
        let days_left = (ends_at - ctx.now).div_ceil(86_400);
        (
            TemplateName::EndingSoonPartner,
            format!("remind:{period}:{ends_at}:{days}"),
            json!({"days_left": days_left, "ends_at": rfc3339(ends_at), "auto_extend": rel.gdap.as_ref().map_or(lifecycle.auto_extend, |g| g.auto_extend)}),
        )
    };
    let mut ids = MessageIds::new(&key, ctx);
    let mut all = json!({
        "partner_name": partner.name,
        "customer_email": rel.customer,
        "customer_name": rel.customer_name,
    });
    all.as_object_mut()
        .expect("object")
        .extend(vars.as_object().expect("object").clone());
    Some(super::partner_notice(
        partner,
        rel.support_contact.as_deref(),
        template,
        ids.next(),
        all,
    ))
}
