//! `[tickets]`: support tickets.

use super::*;

/// `[tickets]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketsConfig {
    /// Attachments up to this total size are forwarded to the support desk.
    pub attachment_max_bytes: usize,
    /// A customer mail on a ticket closed less than this many days ago
    /// reopens it; later ones open a new ticket that refers to the old one.
    pub reopen_days: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTickets {
    #[serde(default = "default_attachment_bytes")]
    attachment_max_bytes: usize,
    #[serde(default = "default_reopen_days")]
    reopen_days: u32,
}

impl Default for RawTickets {
    fn default() -> Self {
        RawTickets {
            attachment_max_bytes: default_attachment_bytes(),
            reopen_days: default_reopen_days(),
        }
    }
}

fn default_reopen_days() -> u32 {
    14
}

fn default_attachment_bytes() -> usize {
    5 * 1024 * 1024
}

impl RawTickets {
    /// `[tickets]` as validated (every value is accepted).
    pub(super) fn validate(self) -> TicketsConfig {
        TicketsConfig {
            attachment_max_bytes: self.attachment_max_bytes,
            reopen_days: self.reopen_days,
        }
    }
}
