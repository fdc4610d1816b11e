//! `terminate CUSTOMER [confirm]`: ends the GDAP relationship in
//! Microsoft's system (a `terminate` request through Graph), after the
//! partner confirmed.

use super::{customer_arg, usage_error, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::model::relationship::RelationshipState;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "terminate CUSTOMER [confirm]";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = customer_arg("terminate", args.first().map(String::as_str))?;
    let confirm = match args.get(1).map(|a| a.to_lowercase()) {
        None => false,
        Some(a) if a == "confirm" => true,
        Some(a) => {
            return Err(usage_error(
                "terminate",
                format!("unexpected `{}`", super::shorten(&a, super::MAX_QUOTED_ARG)),
            ))
        }
    };
    if let Some(extra) = args.get(2) {
        return Err(usage_error("terminate", format!("unexpected `{}`", super::shorten(extra, super::MAX_QUOTED_ARG))));
    }
    Ok(Command::Terminate { customer, confirm })
}

impl CommandRun<'_, '_> {
    /// `terminate CUSTOMER [confirm]`: ends the GDAP relationship in
    /// Microsoft's system, after confirmation.
    pub(crate) fn terminate(&mut self, customer: &str, confirm: bool) -> Result<Outcome, WorkflowError> {
        let Some(mut rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        let Some(id) = rel.gdap.as_ref().and_then(|g| g.relationship_id.clone()) else {
            return Ok(Err(format!(
                "{customer} has no GDAP relationship that Liaison follows in Microsoft Graph; \
                 end it in Partner Center, then send `revoked {customer}`"
            )));
        };
        if rel.state != RelationshipState::Active {
            return Ok(Err(format!(
                "{customer} is {}; only an active GDAP relationship can be terminated",
                rel.state
            )));
        }
        if !confirm {
            return Ok(Ok(format!(
                "this would end the GDAP relationship {id} with {customer} in Microsoft's system: \
                 your delegated admin permissions for them end. Send `terminate {customer} confirm` to do it."
            )));
        }
        if let Some(g) = rel.gdap.as_mut() {
            g.terminate_due = true;
        }
        self.put(rel);
        Ok(Ok(format!(
            "terminating the GDAP relationship {id} with {customer}: the request goes to Microsoft now, \
             and the relationship becomes permissions_removed when Microsoft shows it ended"
        )))
    }
}
