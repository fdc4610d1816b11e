//! `status [CUSTOMER]`: one relationship, or the first page of all.

use super::{customer_arg, no_more, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::decide::commands::status_line;
use crate::model::relationship::RelationshipSummary;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "status [CUSTOMER]";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = match args.first() {
        Some(_) => Some(customer_arg("status", args.first().map(String::as_str))?),
        None => None,
    };
    no_more("status", args.get(1..).unwrap_or(&[]))?;
    Ok(Command::Status { customer })

}

impl CommandRun<'_, '_> {
    pub(crate) fn status(&self, customer: Option<&str>) -> Result<Outcome, WorkflowError> {
        let Some(c) = customer else {
            return self.list(None, 1);
        };
        Ok(match self.current(c)? {
            Some(r) => Ok(status_line(&RelationshipSummary::from(&r))),
            None => Err(self.not_found(c)),
        })
    }
}
