//! `restore CUSTOMER`: ask for removed permissions again.

use super::{customer_arg, no_more, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::decide::date_only;
use crate::model::invitation::InvitationKind;
use crate::model::relationship::RelationshipState;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "restore CUSTOMER";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = customer_arg("restore", args.first().map(String::as_str))?;
    no_more("restore", &args[1..])?;
    Ok(Command::Restore { customer })
}

impl CommandRun<'_, '_> {
    pub(crate) fn restore(&mut self, index: usize, customer: &str) -> Result<Outcome, WorkflowError> {
        let Some(mut rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        if rel.state != RelationshipState::PermissionsRemoved {
            return Ok(Err(format!(
                "{customer} is {}; only a relationship whose permissions were removed can be restored",
                rel.state
            )));
        }
        let link = self.partner.approval_link.clone();
        // A restore request is a level-1 request (the partner's configured
        // link, the customer's word): the GDAP relationship Graph showed
        // ended is not followed any more, or a mailed "accept" would wait
        // for it for ever.
        rel.gdap = None;
        let (invitation, plan) =
            self.new_invitation(index, InvitationKind::Restore, &rel, false, link.as_deref());
        let expires = invitation.expires;
        rel.invitation_id = Some(invitation.id);
        self.decision.mails.extend(plan);
        self.decision.invitations.push(invitation);
        self.put(rel);
        Ok(Ok(format!(
            "restore request sent to {customer}; when they accept, the relationship is active again \
             (the request expires on {})",
            date_only(expires)
        )))
    }
}
