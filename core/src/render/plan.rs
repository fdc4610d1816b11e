//! A mail to send, as the decision leaves it: which template, for whom,
//! with which variables. Rendering ([`super::templates`]) and building the
//! message ([`super::compose`]) turn it into bytes; the decision code
//! above only fills it in.

use super::templates::TemplateName;

/// Which of Liaison's addresses a mail is sent from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The command address (transcripts, partner notices).
    Commands,
    /// The invitations address (everything to customers).
    Invitations,
}

/// A mail to send, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct MailPlan {
    /// Which template.
    pub template: TemplateName,
    /// In which locale.
    pub locale: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Sending address.
    pub from: Sender,
    /// Reply-To, when replies must reach a tagged address.
    pub reply_to: Option<String>,
    /// Message-ID (no angle brackets).
    pub message_id: String,
    /// In-Reply-To (no angle brackets).
    pub in_reply_to: Option<String>,
    /// References (no angle brackets).
    pub references: Vec<String>,
    /// Template variables.
    pub vars: serde_json::Value,
    /// Invitation this mail belongs to: replies to it thread back there and
    /// count as the customer's answer. Set only on mails to that
    /// invitation's customer, and on a draft invitation (to the partner),
    /// which the thread match skips.
    pub invitation: Option<u64>,
    /// Ticket this mail belongs to: replies to it thread into the ticket.
    pub ticket: Option<u64>,
    /// Files to attach.
    pub attachments: Vec<crate::mail::inbound::Attachment>,
}
