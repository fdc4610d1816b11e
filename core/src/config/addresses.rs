//! `[addresses]`: Liaison's own addresses.

use super::*;

/// `[addresses]`: Liaison's own mail addresses.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Where partners send commands.
    pub commands: String,
    /// Sender of invitations; customers reply to `local+TOKEN@domain` of it.
    pub invitations: String,
    /// The vendor's support desk tickets go to.
    pub support_desk: String,
    /// Display name on every mail Liaison sends.
    pub from_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAddresses {
    commands: String,
    invitations: String,
    support_desk: String,
    #[serde(default = "default_from_name")]
    from_name: String,
}

impl Addresses {
    /// The domain used in Message-IDs Liaison generates.
    pub fn message_id_domain(&self) -> &str {
        domain_of(&self.commands).unwrap_or("liaison.invalid")
    }
}

fn default_from_name() -> String {
    "Liaison".into()
}

impl RawAddresses {
    /// Checks `[addresses]`.
    pub(super) fn validate(self) -> Result<Addresses> {
        let a = self;
        let addresses = Addresses {
            commands: check_address("addresses.commands", &a.commands)?,
            invitations: check_address("addresses.invitations", &a.invitations)?,
            support_desk: check_address("addresses.support_desk", &a.support_desk)?,
            from_name: check_header_text("addresses.from_name", &a.from_name)?,
        };
        if addresses.invitations.contains('+') {
            return Err(invalid(
                "addresses.invitations",
                "must not contain '+': Liaison appends +TOKEN to it",
            ));
        }
        // Replies come to `local+TOKEN@`, bounces to `local+b-TAG@`; a local
        // part may have 64 characters (RFC 5321).
        let tag_len = crate::model::token::TOKEN_LEN.max(crate::model::token::BOUNCE_TAG_LEN);
        let local_len = addresses.invitations.split('@').next().map_or(0, str::len);
        if local_len + 1 + tag_len > 64 {
            return Err(invalid(
                "addresses.invitations",
                format!(
                    "its local part may have at most {} characters: Liaison appends +TOKEN ({} characters) to it",
                    64 - 1 - tag_len,
                    crate::model::token::TOKEN_LEN
                ),
            ));
        }
        Ok(addresses)
    }
}
