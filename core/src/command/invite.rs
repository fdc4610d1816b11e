//! `invite CUSTOMER [name "…"] [locale …] [draft]`: a new invitation.

use super::{customer_arg, usage_error, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use super::{invite_locale, invite_name};
use crate::decide::commands::percent;
use crate::decide::{date_only, derive_id, Sender};
use crate::mail::address;
use crate::model::invitation::{Invitation, InvitationKind};
use crate::model::relationship::{Relationship, RelationshipEvent, RelationshipState, TransitionError};
use crate::render::plan::MailPlan;
use crate::render::templates::TemplateName;
use serde_json::json;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "invite CUSTOMER [name \"Contoso Ltd\"] [locale en|ko] [draft]";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = customer_arg("invite", args.first().map(String::as_str))?;
    let mut name = None;
    let mut locale = None;
    let mut draft = false;
    let mut rest = args[1..].iter();
    while let Some(opt) = rest.next() {
        match opt.to_lowercase().as_str() {
            "name" => {
                let v = rest
                    .next()
                    .ok_or_else(|| usage_error("invite", "`name` needs a value".into()))?;
                name = Some(invite_name(v)?);
            }
            "locale" => {
                let v = rest
                    .next()
                    .ok_or_else(|| usage_error("invite", "`locale` needs a value".into()))?;
                locale = Some(invite_locale(v)?);
            }
            "draft" => draft = true,
            other => return Err(usage_error("invite", format!("unknown option `{other}`"))),
        }
    }
    Ok(Command::Invite {
        customer,
        name,
        locale,
        draft,
    })

}

impl CommandRun<'_, '_> {
    pub(crate) fn invite(
        &mut self,
        index: usize,
        customer: &str,
        name: Option<&str>,
        locale: Option<&str>,
        draft: bool,
    ) -> Result<Outcome, WorkflowError> {
        let cfg = self.ctx.config;
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
        let (invitation, plan) =
            self.new_invitation(index, InvitationKind::Invitation, &rel, draft);
        let (id, expires) = (invitation.id, invitation.expires);
        let actor = self.mail.from.clone().unwrap_or_default();
        if is_new {
            rel.history.push(crate::model::relationship::HistoryEntry {
                at: self.ctx.now,
                from: None,
                to: RelationshipState::Invited,
                actor,
                message_id: self.mail.message_id.clone(),
            });
            rel.state = RelationshipState::Invited;
            rel.since = self.ctx.now;
        } else {
            rel.apply(
                RelationshipEvent::Invited,
                self.ctx.now,
                &actor,
                self.mail.message_id.as_deref(),
            )
            .expect("checked above");
        }
        rel.invitation_id = Some(id);
        self.decision.mails.push(plan);
        self.decision.invitations.push(invitation);
        let locale_name = if rel.locale == "ko" {
            "Korean"
        } else {
            "English"
        };
        let result = if draft {
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
    pub(crate) fn new_invitation(
        &mut self,
        index: usize,
        kind: InvitationKind,
        rel: &Relationship,
        draft: bool,
    ) -> (Invitation, MailPlan) {
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
        };
        let plan = self.invitation_mail(&invitation, message_id, draft);
        (invitation, plan)
    }

    pub(crate) fn invitation_mail(&self, inv: &Invitation, message_id: String, draft: bool) -> MailPlan {
        let cfg = self.ctx.config;
        let token = self
            .ctx
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
        let to = if draft {
            vec![self.mail.from.clone().unwrap_or_default()]
        } else {
            vec![inv.customer.clone()]
        };
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
                "partner_name": self.partner.name,
                "customer_email": inv.customer,
                "customer_name": inv.customer_name,
                "token": token,
                "subject_ref": subject_ref,
                "reply_address": reply_address,
                "accept_link": mailto("accept"),
                "decline_link": mailto("decline"),
                "expires": date_only(inv.expires),
                "page_link": crate::decide::web::page_link(self.ctx, &token),
            }),
            invitation: Some(inv.id),
            ticket: None,
            attachments: vec![],
        }
    }
}
