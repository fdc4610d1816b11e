//! `revoked CUSTOMER`: the customer removed the partner's permissions.

use super::{customer_arg, no_more, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::model::relationship::RelationshipEvent;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "revoked CUSTOMER";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = customer_arg("revoked", args.first().map(String::as_str))?;
    no_more("revoked", &args[1..])?;
    Ok(Command::Revoked { customer })
}

impl CommandRun<'_, '_> {
    pub(crate) fn revoked(&mut self, customer: &str) -> Result<Outcome, WorkflowError> {
        let rel = match self.transition(customer, RelationshipEvent::PermissionsRemoved)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        self.put(rel);
        Ok(Ok(format!(
            "recorded: {customer} removed your delegated admin permissions (now permissions_removed). \
             You remain responsible for their support: their support requests will be opened as \
             tickets with the support desk on their behalf. `restore {customer}` asks them to grant \
             the permissions again."
        )))
    }
}
