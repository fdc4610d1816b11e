//! `contact CUSTOMER SUPPORT-ADDRESS`: who is copied on the customer's support traffic.

use super::{customer_arg, no_more, usage_error, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use super::{shorten, MAX_QUOTED_ARG};
use crate::mail::address;
use crate::model::relationship::RelationshipState;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "contact CUSTOMER SUPPORT-ADDRESS";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = customer_arg("contact", args.first().map(String::as_str))?;
    let support = args
        .get(1)
        .ok_or_else(|| usage_error("contact", "the support contact's address is missing".into()))?;
    let support = address::normalize(support).ok_or_else(|| {
        usage_error(
            "contact",
            format!(
                "`{}` is not an email address",
                shorten(support, MAX_QUOTED_ARG)
            ),
        )
    })?;
    no_more("contact", &args[2..])?;
    Ok(Command::Contact { customer, support })

}

impl CommandRun<'_, '_> {
    pub(crate) fn contact(&mut self, customer: &str, support: &str) -> Result<Outcome, WorkflowError> {
        let Some(mut rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        if rel.state == RelationshipState::Removed {
            return Ok(Err(format!("{customer} is removed; invite them first")));
        }
        // A contact gets ticket authority and copies of support traffic:
        // one of Liaison's own addresses there would mail Liaison itself.
        let own = &self.ctx.config.addresses;
        if support == own.commands || support == own.invitations {
            return Ok(Err(format!(
                "{support} is one of Liaison's own addresses and cannot be a support contact"
            )));
        }
        rel.support_contact = Some(support.to_string());
        self.put(rel);
        Ok(Ok(format!(
            "{support} is now the support contact for {customer} and is copied on their support traffic"
        )))
    }
}
