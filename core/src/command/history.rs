//! `history CUSTOMER`: every transition of one relationship.

use super::{customer_arg, no_more, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::decide::rfc3339;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "history CUSTOMER";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = customer_arg("history", args.first().map(String::as_str))?;
    no_more("history", &args[1..])?;
    Ok(Command::History { customer })

}

impl CommandRun<'_, '_> {
    pub(crate) fn history(&self, customer: &str) -> Result<Outcome, WorkflowError> {
        Ok(match self.current(customer)? {
            Some(r) => Ok(r
                .history
                .iter()
                .map(|h| {
                    format!(
                        "{}  {} -> {}  by {}{}  [{}]",
                        rfc3339(h.at),
                        h.from.map(|s| s.as_str()).unwrap_or("(new)"),
                        h.to,
                        h.actor,
                        h.message_id
                            .as_deref()
                            .map(|m| format!("  <{m}>"))
                            .unwrap_or_default(),
                        // Where it came from: mail, command, graph, web, timer.
                        h.source.map_or("source not recorded", |s| s.as_str())
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")),
            None => Err(self.not_found(customer)),
        })
    }
}
