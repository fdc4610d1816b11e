//! What time alone changes: an invitation not answered within its lifetime
//! expires, and the partner is told.
//!
//! Expiry is derived from the stored invitation's `expires`, not from a
//! timer held in memory, so it survives restarts: a daemon that was down
//! when an invitation ran out expires it at the next sweep.

use super::{rfc3339, Context, Decision, MailClass, MailPlan, MessageIds, Sender, WorkflowError};
use crate::invitation::InvitationKind;
use crate::relationship::{RelationshipEvent, RelationshipState};
use crate::store::StoreView;
use crate::templates::TemplateName;
use serde_json::json;

/// Expires every pending invitation whose time ran out. The decision is
/// empty when nothing is due.
pub fn expire_due(ctx: &Context, view: &dyn StoreView) -> Result<Decision, WorkflowError> {
    let mut decision = Decision {
        class: MailClass::Timer,
        summary: String::new(),
        relationships: vec![],
        invitations: vec![],
        mails: vec![],
    };
    for mut rel in view.all_relationships()? {
        if rel.state != RelationshipState::Invited {
            continue;
        }
        let Some(inv) = rel
            .invitation_id
            .map(|id| view.invitation(id))
            .transpose()?
            .flatten()
        else {
            continue;
        };
        if inv.kind != InvitationKind::Invitation || inv.expires >= ctx.now {
            continue;
        }
        let Some(partner) = ctx.config.partner(&rel.partner) else {
            continue;
        };
        rel.apply(RelationshipEvent::Expired, ctx.now, "liaison", None)
            .expect("invited -> expired is always allowed");
        // Keyed by the invitation, so a sweep re-run after a crash plans the
        // very same mail.
        let key = format!("expire:{}", inv.id);
        let mut ids = MessageIds {
            key: &key,
            domain: ctx.config.addresses.message_id_domain(),
            n: 0,
        };
        let mut to = vec![partner.emails[0].clone()];
        to.extend(rel.support_contact.clone());
        decision.mails.push(MailPlan {
            template: TemplateName::ExpiredPartner,
            locale: partner.locale.clone(),
            to,
            from: Sender::Commands,
            reply_to: None,
            message_id: ids.next(),
            in_reply_to: None,
            references: vec![],
            vars: json!({
                "partner_name": partner.name,
                "customer_email": rel.customer,
                "customer_name": rel.customer_name,
                "invited_at": rfc3339(inv.created),
                "expired_at": rfc3339(inv.expires),
            }),
            invitation: None,
        });
        decision.relationships.push(rel);
    }
    decision.summary = format!("{} invitation(s) expired", decision.relationships.len());
    Ok(decision)
}
