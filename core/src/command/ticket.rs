//! `ticket T-000123`: one ticket's whole thread.

use super::{no_more, usage_error, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "ticket T-000123";

/// The ticket number argument of `ticket` and `close` (`T-000123`, with or
/// without the brackets of a subject tag).
pub(super) fn ticket_id(verb: &'static str, args: &[String]) -> Result<u64, CommandError> {
    let arg = args
        .first()
        .ok_or_else(|| usage_error(verb, "the ticket number is missing".into()))?;
    crate::model::ticket::parse_id(arg.trim_matches(['[', ']']))
        .ok_or_else(|| usage_error(verb, format!("`{arg}` is not a ticket number like T-000123")))
}

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let id = ticket_id("ticket", args)?;
    no_more("ticket", &args[1..])?;
    Ok(Command::Ticket { id })
}

impl CommandRun<'_, '_> {
    pub(crate) fn ticket(&self, id: u64) -> Result<Outcome, WorkflowError> {
        Ok(match self
            .decision
            .tickets
            .iter()
            .find(|t| t.id == id)
            .cloned()
            .or(self.view.ticket(id)?)
            .filter(|t| t.partner == self.partner.id)
        {
            Some(t) => Ok(crate::decide::support::ticket_thread(&t)),
            None => Err(format!(
                "ticket {} not found",
                crate::model::ticket::format_id(id)
            )),
        })
    }
}
