//! `close T-000123 [note]`: close a ticket, telling the customer and the desk.

use super::{usage_error, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use super::check_text;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "close T-000123 [note]";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let id = super::ticket::ticket_id("close", args)?;
    let note = args[1..].join(" ");
    check_text("note", &note).map_err(|problem| usage_error("close", problem))?;
    Ok(Command::Close {
        id,
        note: (!note.trim().is_empty()).then(|| note.trim().to_string()),
    })
}

impl CommandRun<'_, '_> {
    pub(crate) fn close(&mut self, id: u64, note: Option<&str>) -> Result<Outcome, WorkflowError> {
        let actor = self.actor();
        Ok(
            match crate::decide::support::close_ticket(
                self.ctx,
                self.view,
                self.partner,
                &actor,
                &self.mail.key,
                id,
                note,
            )? {
                Ok((text, ticket, mails)) => {
                    self.decision.tickets.retain(|t| t.id != ticket.id);
                    self.decision.tickets.push(ticket);
                    self.decision.mails.extend(mails);
                    Ok(text)
                }
                Err(e) => Err(e),
            },
        )
    }
}
