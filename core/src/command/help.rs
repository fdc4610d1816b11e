//! `help`: the command reference.

use super::{Command, CommandError};

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "help";

pub(super) fn parse(_args: &[String]) -> Result<Command, CommandError> {
    Ok(Command::Help)
}
