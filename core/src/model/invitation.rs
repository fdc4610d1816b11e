//! An invitation (or restore request) sent to a customer, as stored.
//!
//! The token itself is not stored: it is recomputed from the id, expiry and
//! recipient with the configured key, so a leaked database does not leak
//! working tokens without the secret.

use serde::{Deserialize, Serialize};

/// What the invitation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationKind {
    /// Grant delegated admin permissions for the first time.
    Invitation,
    /// Restore permissions the customer removed.
    Restore,
}

impl InvitationKind {
    /// The token purpose that goes with it.
    pub fn purpose(self) -> crate::model::token::Purpose {
        match self {
            InvitationKind::Invitation => crate::model::token::Purpose::Invitation,
            InvitationKind::Restore => crate::model::token::Purpose::Restore,
        }
    }
}

/// A stored invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Unique id, carried in the token.
    pub id: u64,
    /// What it asks for.
    pub kind: InvitationKind,
    /// Partner id.
    pub partner: String,
    /// Customer address, lowercase.
    pub customer: String,
    /// Customer organisation name, if given.
    pub customer_name: Option<String>,
    /// Locale of the mail.
    pub locale: String,
    /// Unix seconds it was created.
    pub created: u64,
    /// Unix seconds after which it no longer counts.
    pub expires: u64,
    /// Message-ID of the mail (first send) that carried it.
    pub message_id: String,
    /// Sent to the partner for review rather than to the customer.
    pub draft: bool,
    /// Why delivery failed for good (5xx reply or a bounce), if it did.
    #[serde(default)]
    pub bounced: Option<String>,
    /// The admin-center link the invitation carries (the partner's
    /// configured one, one given with `invite … link`, or that of the GDAP
    /// request Liaison made), kept so `resend` sends the same one.
    #[serde(default)]
    pub approval_link: Option<String>,
}
