//! `invite CUSTOMER [name "…"] [locale …] [draft] [link URL | roles "…" [duration Nd] [auto-extend]]`:
//! a new invitation, with the admin-center step: the partner's configured
//! approval link, one given for this invitation, or (with `roles`) the
//! GDAP request Liaison makes through Microsoft Graph, whose link the
//! invitation carries once Microsoft has created it.

use super::{customer_arg, usage_error, Command, CommandError, InviteGdap, DEFAULT_GDAP_DAYS};
use super::{check_text, invite_link, invite_locale, invite_name, shorten, MAX_QUOTED_ARG};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::decide::{date_only, derive_id};
use crate::mail::address;
use crate::model::invitation::{Invitation, InvitationKind};
use crate::model::relationship::{Relationship, RelationshipEvent, RelationshipState, TransitionError};
use crate::render::plan::MailPlan;
use crate::command;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "invite CUSTOMER [name \"Contoso Ltd\"] [locale en|ko] [draft] [link URL | roles \"ROLE, …\" [duration 730d] [auto-extend]]";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = customer_arg("invite", args.first().map(String::as_str))?;
    let mut name = None;
    let mut locale = None;
    let mut draft = false;
    let mut link = None;
    let mut roles: Option<String> = None;
    let mut duration = None;
    let mut auto_extend = false;
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
            "link" => {
                let v = rest
                    .next()
                    .ok_or_else(|| usage_error("invite", "`link` needs a URL".into()))?;
                link = Some(invite_link(v)?);
            }
            "roles" => {
                let v = rest.next().filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                    usage_error("invite", "`roles` needs role names, e.g. roles \"Helpdesk Administrator, User Administrator\"".into())
                })?;
                check_text("roles", v).map_err(|p| usage_error("invite", p))?;
                roles = Some(v.trim().to_string());
            }
            "duration" => {
                let v = rest.next().ok_or_else(|| {
                    usage_error(
                        "invite",
                        "`duration` needs a number of days, e.g. 730d".into(),
                    )
                })?;
                duration = Some(
                    crate::model::gdap::parse_duration_days(v)
                        .map_err(|e| usage_error("invite", e.to_string()))?,
                );
            }
            "auto-extend" | "autoextend" => auto_extend = true,
            other => {
                return Err(usage_error(
                    "invite",
                    format!("unknown option `{}`", shorten(other, MAX_QUOTED_ARG)),
                ))
            }
        }
    }
    let gdap = match roles {
        Some(roles) => Some(InviteGdap {
            roles,
            duration_days: duration.unwrap_or(DEFAULT_GDAP_DAYS),
            auto_extend,
        }),
        None if duration.is_some() || auto_extend => {
            return Err(usage_error(
                "invite",
                "`duration` and `auto-extend` go with `roles`".into(),
            ))
        }
        None => None,
    };
    if gdap.is_some() && link.is_some() {
        return Err(usage_error(
            "invite",
            "`roles` makes Liaison request the GDAP relationship and use its link; leave out `link`".into(),
        ));
    }
    Ok(Command::Invite {
        customer,
        name,
        locale,
        draft,
        link,
        gdap,
    })
}

impl CommandRun<'_, '_> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn invite(
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
    pub(crate) fn new_invitation(
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

    pub(crate) fn invitation_mail(
        &self,
        inv: &Invitation,
        message_id: String,
        draft: bool,
        gdap: Option<&crate::model::gdap::GdapRequest>,
    ) -> MailPlan {
        let draft_to = draft.then(|| self.mail.from.clone().unwrap_or_default());
        crate::decide::invitation_mail::plan(
            self.ctx,
            self.partner,
            inv,
            message_id,
            draft_to.as_deref(),
            crate::decide::invitation_mail::ApprovalStep {
                link: inv.approval_link.as_deref(),
                gdap,
            },
        )
    }

}
