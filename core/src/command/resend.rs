//! `resend CUSTOMER`: a pending invitation or restore request again, same token.

use super::{customer_arg, no_more, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::decide::date_only;
use crate::model::invitation::InvitationKind;
use crate::model::relationship::RelationshipState;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "resend CUSTOMER";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = customer_arg("resend", args.first().map(String::as_str))?;
    no_more("resend", &args[1..])?;
    Ok(Command::Resend { customer })

}

impl CommandRun<'_, '_> {
    pub(crate) fn resend(&mut self, customer: &str) -> Result<Outcome, WorkflowError> {
        let Some(rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        if !matches!(
            rel.state,
            RelationshipState::Invited | RelationshipState::PermissionsRemoved
        ) {
            return Ok(Err(format!(
                "{customer} is {}; only a pending invitation or restore request can be resent",
                rel.state
            )));
        }
        let invitation = match rel.invitation_id {
            Some(id) => match self
                .decision
                .invitations
                .iter()
                .find(|i| i.id == id)
                .cloned()
            {
                Some(i) => Some(i),
                None => self.view.invitation(id)?,
            },
            None => None,
        };
        let Some(invitation) = invitation else {
            return Ok(Err(format!(
                "the invitation of {customer} is missing from the store"
            )));
        };
        if rel.state == RelationshipState::PermissionsRemoved
            && invitation.kind != InvitationKind::Restore
        {
            return Ok(Err(format!(
                "{customer} has no pending restore request; use `restore {customer}`"
            )));
        }
        if invitation.expires < self.ctx.now {
            return Ok(Err(format!(
                "the request to {customer} expired on {}; send a new one",
                date_only(invitation.expires)
            )));
        }
        if rel.gdap.as_ref().is_some_and(|g| g.relationship_id.is_none()) {
            return Ok(Err(format!(
                "the invitation to {customer} waits for Microsoft to create the GDAP request; it goes out then"
            )));
        }
        let message_id = self.ids.next();
        let plan = self.invitation_mail(
            &invitation,
            message_id,
            false,
            rel.gdap.as_ref().map(|g| &g.request),
        );
        self.decision.mails.push(plan);
        Ok(Ok(format!(
            "{} resent to {customer} (same link; it expires on {})",
            match invitation.kind {
                InvitationKind::Invitation => "invitation",
                InvitationKind::Restore => "restore request",
            },
            date_only(invitation.expires)
        )))
    }
}
