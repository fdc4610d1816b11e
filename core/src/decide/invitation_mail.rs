//! The mail that carries an invitation (or a restore request): one builder
//! for the partner's `invite`/`restore`/`resend` commands and for the GDAP
//! flow, where the invitation goes out only once Microsoft has created the
//! relationship request and its approval link exists.

use super::{date_only, Context, MailPlan, Sender};
use crate::config::Partner;
use crate::mail::address;
use crate::model::gdap::GdapRequest;
use crate::model::invitation::{Invitation, InvitationKind};
use crate::render::templates::TemplateName;
use serde_json::json;

/// What the invitation asks the customer to approve in Microsoft's admin
/// center, when there is such a step.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApprovalStep<'a> {
    /// The link to the partner's request in the admin center.
    pub link: Option<&'a str>,
    /// The GDAP request (roles, duration) when Liaison made it via Graph.
    pub gdap: Option<&'a GdapRequest>,
}

/// The mail carrying `inv`: to the customer, or (a draft) to `draft_to`.
pub(crate) fn plan(
    ctx: &Context,
    partner: &Partner,
    inv: &Invitation,
    message_id: String,
    draft_to: Option<&str>,
    step: ApprovalStep,
) -> MailPlan {
    let cfg = ctx.config;
    let token = ctx
        .tokens
        .issue(inv.kind.purpose(), inv.id, inv.expires, &inv.customer);
    let reply_address = address::with_plus_tag(&cfg.addresses.invitations, &token);
    let subject_ref = format!("[ref:{token}]");
    let mailto = |word: &str| {
        format!(
            "mailto:{reply_address}?subject={}&body={word}",
            percent(&format!("Re: {word} {subject_ref}"))
        )
    };
    let to = match draft_to {
        Some(d) => vec![d.to_string()],
        None => vec![inv.customer.clone()],
    };
    let roles: Vec<&str> = step
        .gdap
        .map(|g| {
            g.role_ids
                .iter()
                .map(|id| crate::model::gdap::role_by_id(id).map_or(id.as_str(), |r| r.name))
                .collect()
        })
        .unwrap_or_default();
    MailPlan {
        template: match inv.kind {
            InvitationKind::Invitation => TemplateName::Invitation,
            InvitationKind::Restore => TemplateName::Restore,
        },
        locale: inv.locale.clone(),
        to,
        from: Sender::Invitations,
        reply_to: Some(reply_address.clone()),
        message_id,
        in_reply_to: None,
        references: vec![],
        vars: json!({
            "partner_name": partner.name,
            "customer_email": inv.customer,
            "customer_name": inv.customer_name,
            "token": token,
            "subject_ref": subject_ref,
            "reply_address": reply_address,
            "accept_link": mailto("accept"),
            "decline_link": mailto("decline"),
            "expires": date_only(inv.expires),
            "approval_link": step.link,
            "roles": roles,
            "duration_days": step.gdap.map(|g| g.duration_days),
            "graph": step.gdap.is_some(),
            "page_link": crate::decide::web::page_link(ctx, &token),
        }),
        invitation: Some(inv.id),
        ticket: None,
        attachments: vec![],
    }
}

/// Percent-encodes for a mailto: query value.
pub(crate) fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
