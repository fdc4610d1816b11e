//! `tickets [open|all]`: the partner's support tickets.

use super::{no_more, usage_error, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::model::ticket::TicketState;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "tickets [open|all]";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let all = match args.first().map(|a| a.to_lowercase()) {
        None => false,
        Some(a) if a == "open" => false,
        Some(a) if a == "all" => true,
        Some(a) => return Err(usage_error("tickets", format!("`{a}` is not `open` or `all`"))),
    };
    no_more("tickets", args.get(1..).unwrap_or(&[]))?;
    Ok(Command::Tickets { all })

}

impl CommandRun<'_, '_> {
    pub(crate) fn tickets(&self, all: bool) -> Result<Outcome, WorkflowError> {
        let mut tickets = self.view.tickets_of(&self.partner.id)?;
        // Tickets changed earlier in this same mail are not stored yet.
        for changed in &self.decision.tickets {
            tickets.retain(|t| t.id != changed.id);
            tickets.push(changed.clone());
        }
        tickets.sort_by_key(|t| t.id);
        let lines: Vec<String> = tickets
            .iter()
            .filter(|t| all || t.state != TicketState::Closed)
            .map(crate::decide::support::ticket_line)
            .collect();
        Ok(Ok(if lines.is_empty() {
            if all {
                "no tickets".into()
            } else {
                "no open tickets".into()
            }
        } else {
            lines.join("\n")
        }))
    }
}
