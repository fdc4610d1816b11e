//! `roles`: the Entra role names `invite … roles` takes, and the partner's
//! role sets.

use super::{usage_error, Command, CommandError};
use crate::decide::commands::CommandRun;

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "roles";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    match args.first() {
        Some(extra) => Err(usage_error("roles", format!("unexpected `{}`", super::shorten(extra, super::MAX_QUOTED_ARG)))),
        None => Ok(Command::Roles),
    }
}

impl CommandRun<'_, '_> {
    /// `roles`: the names `invite … roles` takes.
    pub(crate) fn roles(&self) -> String {
        let mut out = String::from("Entra built-in roles for `invite CUSTOMER roles \"…\"`:\n");
        for r in crate::model::gdap::ENTRA_ROLES {
            out.push_str(&format!("  {}\n", r.name));
        }
        if !self.partner.role_sets.is_empty() {
            out.push_str("Role sets of ");
            out.push_str(&self.partner.name);
            out.push_str(":\n");
            for s in &self.partner.role_sets {
                out.push_str(&format!("  {}: {}\n", s.name, s.roles.join(", ")));
            }
        }
        if self.partner.graph.is_none() {
            out.push_str("(Microsoft Graph is not configured for you, so `roles` in `invite` is refused; use `invite CUSTOMER link URL`.)");
        }
        out.trim_end().to_string()
    }

}
