//! Support tickets opened on a customer's behalf: the record, its states and
//! the `[T-000123]` subject tag.
//!
//! A ticket exists when a customer who removed the partner's admin
//! permissions asks for support: the partner stays responsible, so Liaison
//! opens a service request with the support desk for them and relays the
//! conversation both ways.

use serde::{Deserialize, Serialize};

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Just opened; the request went to the support desk.
    Open,
    /// The support desk answered; the customer's turn.
    WaitingOnCustomer,
    /// The customer (or partner) wrote; the support desk's turn.
    WaitingOnSupport,
    /// Closed by the partner.
    Closed,
}

impl TicketState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::Open => "open",
            TicketState::WaitingOnCustomer => "waiting_on_customer",
            TicketState::WaitingOnSupport => "waiting_on_support",
            TicketState::Closed => "closed",
        }
    }
}

impl std::fmt::Display for TicketState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who wrote a ticket entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    /// The customer.
    Customer,
    /// The partner (any of its addresses).
    Partner,
    /// The partner's assigned support contact.
    SupportContact,
    /// The vendor's support desk.
    SupportDesk,
}

/// One message in a ticket's thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketEntry {
    /// Unix seconds.
    pub at: u64,
    /// Who wrote it.
    pub author: Author,
    /// Their address.
    pub from: String,
    /// Message-ID of the mail.
    pub message_id: Option<String>,
    /// The new text (quotes stripped).
    pub text: String,
    /// Names of the attachments it carried.
    pub attachments: Vec<String>,
}

/// A support ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Sequential number; shown as `T-000123`.
    pub id: u64,
    /// Partner id.
    pub partner: String,
    /// Customer address.
    pub customer: String,
    /// The partner's support contact when the ticket was opened.
    pub support_contact: Option<String>,
    /// Current state.
    pub state: TicketState,
    /// The customer's original subject.
    pub subject: String,
    /// Unix seconds it was opened.
    pub opened: u64,
    /// Unix seconds it was last closed.
    pub closed_at: Option<u64>,
    /// The closed ticket this one continues, if any.
    pub previous: Option<u64>,
    /// Every Message-ID of the thread (inbound and outbound): replies that
    /// refer to any of them thread into this ticket.
    pub message_ids: Vec<String>,
    /// Message-ID of the mail that opened the ticket with the support desk;
    /// later relays to the desk reply to it, so the desk sees one thread.
    #[serde(default)]
    pub desk_message_id: Option<String>,
    /// Message-ID of the acknowledgement to the customer, likewise.
    #[serde(default)]
    pub customer_message_id: Option<String>,
    /// The conversation, oldest first.
    pub entries: Vec<TicketEntry>,
}

/// `T-000123` for ticket 123.
pub fn format_id(id: u64) -> String {
    format!("T-{id:06}")
}

/// Parses `T-000123` (case-insensitive, leading zeros optional).
pub fn parse_id(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.strip_prefix("T-").or_else(|| s.strip_prefix("t-"))?;
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

/// The ticket number of the first `[T-000123]` tag in a subject.
pub fn find_tag(subject: &str) -> Option<u64> {
    let mut rest = subject;
    while let Some(start) = rest.find('[') {
        let after = &rest[start + 1..];
        if let Some(end) = after.find(']') {
            if let Some(id) = parse_id(&after[..end]) {
                return Some(id);
            }
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tags() {
        assert_eq!(format_id(123), "T-000123");
        assert_eq!(format_id(1_234_567), "T-1234567");
        assert_eq!(parse_id("T-000123"), Some(123));
        assert_eq!(parse_id("t-7"), Some(7));
        for bad in ["T-", "T-0", "T-12a", "X-1", "T--1", "T-9999999999999"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        assert_eq!(find_tag("Re: [T-000042] Support request for a@b"), Some(42));
        assert_eq!(find_tag("AW: [ext] [T-000042] x"), Some(42));
        assert_eq!(find_tag("no tag [T-x] here"), None);
        assert_eq!(find_tag("[[[[["), None);
    }

    #[test]
    fn state_names() {
        assert_eq!(
            serde_json::to_string(&TicketState::WaitingOnCustomer).unwrap(),
            "\"waiting_on_customer\""
        );
        assert_eq!(TicketState::Closed.to_string(), "closed");
    }
}
