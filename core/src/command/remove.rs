//! `remove CUSTOMER`: end the relationship; the customer is told.

use super::{customer_arg, no_more, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::decide::{rfc3339, Sender};
use crate::model::relationship::RelationshipEvent;
use crate::render::plan::MailPlan;
use crate::render::templates::TemplateName;
use serde_json::json;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "remove CUSTOMER";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let customer = customer_arg("remove", args.first().map(String::as_str))?;
    no_more("remove", &args[1..])?;
    Ok(Command::Remove { customer })
}

impl CommandRun<'_, '_> {
    pub(crate) fn remove(&mut self, customer: &str) -> Result<Outcome, WorkflowError> {
        let rel = match self.transition(customer, RelationshipEvent::Removed)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let message_id = self.ids.next();
        self.decision.mails.push(MailPlan {
            template: TemplateName::RemovedCustomer,
            locale: rel.locale.clone(),
            to: vec![rel.customer.clone()],
            from: Sender::Invitations,
            reply_to: None,
            message_id,
            in_reply_to: None,
            references: vec![],
            vars: json!({
                "partner_name": self.partner.name,
                "customer_email": rel.customer,
                "customer_name": rel.customer_name,
                "at": rfc3339(self.ctx.now),
            }),
            invitation: None,
            ticket: None,
            attachments: vec![],
        });
        self.put(rel);
        Ok(Ok(format!(
            "removed the relationship with {customer}; they have been told"
        )))
    }
}
