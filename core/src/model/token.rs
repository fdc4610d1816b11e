//! Invitation tokens: unguessable, HMAC-signed, expiring references that tie
//! a customer's reply (or click) to exactly one invitation.
//!
//! A token is `base32(id ‖ expires ‖ mac)`, lowercase and unpadded so that it
//! survives plus-addressing (mail systems may lowercase local parts) and fits
//! in an address local part:
//!
//! * `id` — the invitation id, 8 bytes big-endian, so a token can be looked
//!   up without a token index;
//! * `expires` — Unix seconds, 4 bytes, so expiry is checked before any
//!   store access;
//! * `mac` — the first 16 bytes (128 bits) of HMAC-SHA256 over a version
//!   label, the purpose, the id, the expiry and the recipient's address.
//!
//! Binding the recipient and purpose means a token copied into another
//! customer's mail, or a restore token used as an invitation token, fails
//! verification. Comparison is constant-time (`Mac::verify_truncated_left`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const MAC_LEN: usize = 16;
const RAW_LEN: usize = 8 + 4 + MAC_LEN;
/// Length of a token in characters.
pub const TOKEN_LEN: usize = (RAW_LEN * 8).div_ceil(5);

/// What a token authorises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Answer an invitation to grant delegated admin permissions.
    Invitation,
    /// Answer a request to restore removed permissions.
    Restore,
    /// Read a support ticket's status page (the id is the ticket number;
    /// grants nothing but the read-only page).
    TicketPage,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Invitation => b"invitation",
            Purpose::Restore => b"restore",
            Purpose::TicketPage => b"ticket-page",
        }
    }
}

/// Why a token was refused. Callers log this; customers are told only that
/// the link or reply could not be matched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base32 of the right length.
    #[error("not a Liaison token")]
    Malformed,
    /// The signature does not match (forged, altered, or wrong recipient/purpose).
    #[error("token signature does not match")]
    BadSignature,
    /// Valid, but past its expiry.
    #[error("token expired")]
    Expired,
}

/// The fields a token carries in the clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    /// The invitation it refers to.
    pub invitation_id: u64,
    /// Unix seconds after which it is no longer accepted.
    pub expires: u64,
}

/// Signs and verifies tokens with the configured secret, and carries the
/// [`IdKey`] derived from the same secret.
#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
    ids: IdKey,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    /// A key from the configured secret.
    pub fn new(secret: &[u8]) -> Self {
        TokenKey {
            secret: secret.to_vec(),
            ids: IdKey::new(secret),
        }
    }

    /// The key for Liaison's own identifiers (Message-IDs, record ids,
    /// bounce addresses), derived from the same secret.
    pub fn ids(&self) -> &IdKey {
        &self.ids
    }

    fn mac(&self, purpose: Purpose, id: u64, expires: u32, recipient: &str) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(b"liaison-token-v1\0");
        mac.update(purpose.label());
        mac.update(b"\0");
        mac.update(&id.to_be_bytes());
        mac.update(&expires.to_be_bytes());
        mac.update(recipient.to_ascii_lowercase().as_bytes());
        mac
    }

    /// Issues a token for invitation `id` sent to `recipient`.
    pub fn issue(&self, purpose: Purpose, id: u64, expires: u64, recipient: &str) -> String {
        let expires = u32::try_from(expires).unwrap_or(u32::MAX);
        let tag = self
            .mac(purpose, id, expires, recipient)
            .finalize()
            .into_bytes();
        let mut raw = Vec::with_capacity(RAW_LEN);
        raw.extend_from_slice(&id.to_be_bytes());
        raw.extend_from_slice(&expires.to_be_bytes());
        raw.extend_from_slice(&tag[..MAC_LEN]);
        data_encoding::BASE32_NOPAD
            .encode(&raw)
            .to_ascii_lowercase()
    }

    /// Verifies `token` for `recipient` at time `now` (Unix seconds).
    pub fn verify(
        &self,
        token: &str,
        purpose: Purpose,
        recipient: &str,
        now: u64,
    ) -> Result<TokenClaims, TokenError> {
        let claims = peek(token)?;
        let raw = decode(token)?;
        let expires = claims.expires as u32;
        self.mac(purpose, claims.invitation_id, expires, recipient)
            .verify_truncated_left(&raw[12..])
            .map_err(|_| TokenError::BadSignature)?;
        if now > claims.expires {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Keys every identifier Liaison derives and sends out: Message-IDs, record
/// ids, and the tag of each mail's bounce address.
///
/// These ids are deterministic (the same inbound mail gives the same ids,
/// which replay after a crash relies on), so without a key anyone who knows
/// the input, e.g. a command mail's Message-ID, could compute them. A
/// Message-ID is a credential in disguise: a reply whose In-Reply-To names
/// an invitation's Message-ID is tied to that invitation, and a bounce that
/// names it marks the invitation bounced. Keyed with HMAC-SHA256 under a
/// sub-key of the secret, they are as unguessable as tokens.
///
/// The sub-key is `HMAC(secret, "liaison-id-key-v1")`, so the token key and
/// the id key differ, and each use below adds its own label, so an id of one
/// kind never equals one of another.
#[derive(Clone)]
pub struct IdKey {
    key: [u8; 32],
}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(***)")
    }
}

/// Bytes of MAC in a bounce tag (128 bits, as in tokens).
const BOUNCE_MAC_LEN: usize = 16;
/// What starts the plus-tag of a bounce address (`invites+b-…@`), telling it
/// apart from a token.
pub const BOUNCE_TAG_PREFIX: &str = "b-";
/// Length of a bounce tag in characters, prefix included.
pub const BOUNCE_TAG_LEN: usize = BOUNCE_TAG_PREFIX.len() + (BOUNCE_MAC_LEN * 8).div_ceil(5);

/// What follows [`BOUNCE_TAG_PREFIX`] (in any case) in a plus-tag, or `None`
/// when the tag does not start with it (it is then no bounce tag at all).
pub fn bounce_tag_mac(tag: &str) -> Option<&str> {
    tag.get(..BOUNCE_TAG_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(BOUNCE_TAG_PREFIX))
        .and_then(|_| tag.get(BOUNCE_TAG_PREFIX.len()..))
}

impl IdKey {
    /// The id key derived from the configured secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
        mac.update(b"liaison-id-key-v1");
        IdKey {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// HMAC over a label and length-prefixed parts (so `("ab", "c")` and
    /// `("a", "bc")` differ).
    fn mac(&self, label: &str, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(label.as_bytes());
        mac.update(b"\0");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    /// 32 keyed bytes naming `parts` for the use `label`.
    pub fn digest(&self, label: &str, parts: &[&str]) -> [u8; 32] {
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        self.mac(label, &parts).finalize().into_bytes().into()
    }

    fn bounce_mac(&self, message_id: &str, recipients: &[String]) -> HmacSha256 {
        let lower: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
        let mut parts: Vec<&[u8]> = vec![message_id.as_bytes()];
        parts.extend(lower.iter().map(|r| r.as_bytes()));
        self.mac("bounce", &parts)
    }

    /// The plus-tag of the bounce address (SMTP envelope sender) of the mail
    /// `message_id` sent to `recipients`: `b-` and the base32 of a MAC over
    /// both. A delivery report sent there is about that mail and those
    /// recipients, and nobody who did not receive the mail can compute it.
    pub fn bounce_tag(&self, message_id: &str, recipients: &[String]) -> String {
        let tag = self
            .bounce_mac(message_id, recipients)
            .finalize()
            .into_bytes();
        format!(
            "{BOUNCE_TAG_PREFIX}{}",
            data_encoding::BASE32_NOPAD
                .encode(&tag[..BOUNCE_MAC_LEN])
                .to_ascii_lowercase()
        )
    }

    /// Whether `tag` is the bounce tag of `message_id` sent to `recipient`
    /// alone (compared in constant time; case-insensitive, as mail systems
    /// may change the case of a local part).
    pub fn verify_bounce_tag(&self, tag: &str, message_id: &str, recipient: &str) -> bool {
        let Some(b32) = bounce_tag_mac(tag) else {
            return false;
        };
        let Ok(raw) = data_encoding::BASE32_NOPAD.decode(b32.to_ascii_uppercase().as_bytes())
        else {
            return false;
        };
        raw.len() == BOUNCE_MAC_LEN
            && self
                .bounce_mac(message_id, &[recipient.to_string()])
                .verify_truncated_left(&raw)
                .is_ok()
    }
}

fn decode(token: &str) -> Result<Vec<u8>, TokenError> {
    if token.len() != TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let raw = data_encoding::BASE32_NOPAD
        .decode(token.to_ascii_uppercase().as_bytes())
        .map_err(|_| TokenError::Malformed)?;
    if raw.len() != RAW_LEN {
        return Err(TokenError::Malformed);
    }
    Ok(raw)
}

/// Reads the unsigned fields of a token so the invitation can be looked up.
/// Nothing read here is trusted until [`TokenKey::verify`] passes.
pub fn peek(token: &str) -> Result<TokenClaims, TokenError> {
    let raw = decode(token)?;
    let id = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
    let expires = u32::from_be_bytes(raw[8..12].try_into().expect("4 bytes"));
    Ok(TokenClaims {
        invitation_id: id,
        expires: u64::from(expires),
    })
}

/// Finds every substring of `text` that looks like a token (right length,
/// base32 alphabet, bounded by non-token characters). Used on subjects and
/// bodies, where the token sits in `[ref:TOKEN]` or in a link.
pub fn find_candidates(text: &str) -> Vec<&str> {
    let is_tok = |c: char| c.is_ascii_alphabetic() || ('2'..='7').contains(&c);
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        if is_tok(c) {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            // Both ends are char boundaries: token characters are ASCII.
            if i - s == TOKEN_LEN {
                out.push(&text[s..i]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_780_000_000;

    fn key() -> TokenKey {
        TokenKey::new(b"a test secret that is long enough")
    }

    #[test]
    fn round_trip() {
        let t = key().issue(Purpose::Invitation, 42, NOW + 100, "alice@contoso.test");
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(t.len() <= 64 - "invites+".len(), "must fit in a local part");
        assert!(t
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let claims = key()
            .verify(&t, Purpose::Invitation, "Alice@Contoso.test", NOW)
            .unwrap();
        assert_eq!(claims.invitation_id, 42);
        // Mail systems may change case in a local part.
        assert!(key()
            .verify(
                &t.to_uppercase(),
                Purpose::Invitation,
                "alice@contoso.test",
                NOW
            )
            .is_ok());
    }

    #[test]
    fn refuses_wrong_recipient_purpose_key_and_expiry() {
        let t = key().issue(Purpose::Invitation, 42, NOW + 100, "alice@contoso.test");
        assert_eq!(
            key().verify(&t, Purpose::Invitation, "bob@fabrikam.test", NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            key().verify(&t, Purpose::Restore, "alice@contoso.test", NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            TokenKey::new(b"another secret entirely!").verify(
                &t,
                Purpose::Invitation,
                "alice@contoso.test",
                NOW
            ),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            key().verify(&t, Purpose::Invitation, "alice@contoso.test", NOW + 101),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn altered_tokens_fail() {
        let t = key().issue(Purpose::Invitation, 42, NOW + 100, "alice@contoso.test");
        // Change the id (and so the lookup) but keep the signature.
        let mut raw = data_encoding::BASE32_NOPAD
            .decode(t.to_uppercase().as_bytes())
            .unwrap();
        raw[7] ^= 1;
        let forged = data_encoding::BASE32_NOPAD.encode(&raw).to_lowercase();
        assert_eq!(
            key().verify(&forged, Purpose::Invitation, "alice@contoso.test", NOW),
            Err(TokenError::BadSignature)
        );
        // Extending the expiry is caught too.
        raw[7] ^= 1;
        raw[11] ^= 0x80;
        let forged = data_encoding::BASE32_NOPAD.encode(&raw).to_lowercase();
        assert_eq!(
            key().verify(&forged, Purpose::Invitation, "alice@contoso.test", NOW),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "abc",
            &t[1..],
            &format!("{t}a"),
            &t.replace(|c: char| c.is_ascii_digit(), "1"),
        ] {
            assert!(
                key()
                    .verify(bad, Purpose::Invitation, "alice@contoso.test", NOW)
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_are_keyed_stable_and_separate_from_tokens() {
        let a = IdKey::new(b"a test secret that is long enough");
        let b = IdKey::new(b"another secret entirely!");
        // Same input, same secret: the same id (crash replay relies on it).
        assert_eq!(
            a.digest("message-id", &["m1@x.test", "1"]),
            IdKey::new(b"a test secret that is long enough")
                .digest("message-id", &["m1@x.test", "1"])
        );
        // Another secret, another label or another split: another id.
        let base = a.digest("message-id", &["m1@x.test", "1"]);
        assert_ne!(base, b.digest("message-id", &["m1@x.test", "1"]));
        assert_ne!(base, a.digest("record-id", &["m1@x.test", "1"]));
        assert_ne!(base, a.digest("message-id", &["m1@x.test1", ""]));
        // The id key is not the token key.
        assert_ne!(&a.key[..], b"a test secret that is long enough");
        assert_eq!(key().ids().key, a.key);
        assert_eq!(format!("{a:?}"), "IdKey(***)");
    }

    #[test]
    fn bounce_tags_bind_message_and_recipient() {
        let k = key();
        let ids = k.ids();
        let rcpt = vec!["alice@contoso.test".to_string()];
        let tag = ids.bounce_tag("liaison.1@liaison.test", &rcpt);
        assert_eq!(tag.len(), BOUNCE_TAG_LEN);
        assert!(tag.starts_with(BOUNCE_TAG_PREFIX));
        assert!(
            "invites+".len() + BOUNCE_TAG_LEN <= 64,
            "must fit in a local part"
        );
        assert!(ids.verify_bounce_tag(&tag, "liaison.1@liaison.test", "alice@contoso.test"));
        assert!(ids.verify_bounce_tag(
            &tag.to_uppercase(),
            "liaison.1@liaison.test",
            "Alice@Contoso.test"
        ));
        assert!(!ids.verify_bounce_tag(&tag, "liaison.2@liaison.test", "alice@contoso.test"));
        assert!(!ids.verify_bounce_tag(&tag, "liaison.1@liaison.test", "bob@fabrikam.test"));
        assert!(!IdKey::new(b"another secret entirely!").verify_bounce_tag(
            &tag,
            "liaison.1@liaison.test",
            "alice@contoso.test"
        ));
        for bad in [
            "",
            "b-",
            "b-abc",
            &tag[2..],
            &format!("x{}", &tag[1..]),
            &format!("{tag}a"),
        ] {
            assert!(
                !ids.verify_bounce_tag(bad, "liaison.1@liaison.test", "alice@contoso.test"),
                "{bad}"
            );
        }
        // A mail to two recipients has one tag, which names neither alone.
        let two = vec!["p@liaison.test".to_string(), "c@liaison.test".to_string()];
        let tag2 = ids.bounce_tag("liaison.1@liaison.test", &two);
        assert!(!ids.verify_bounce_tag(&tag2, "liaison.1@liaison.test", "p@liaison.test"));
    }

    #[test]
    fn finds_tokens_in_text() {
        let t = key().issue(Purpose::Invitation, 7, NOW, "a@b.test");
        let subject = format!("Re: Invitation from Northwind [ref:{t}]");
        assert_eq!(find_candidates(&subject), vec![t.as_str()]);
        let link = format!("mailto:invites+{t}@liaison.test?subject=Accept");
        assert_eq!(find_candidates(&link), vec![t.as_str()]);
        assert!(find_candidates("수락합니다 no token here").is_empty());
        let longer = format!("{t}x");
        assert!(find_candidates(&longer).is_empty());
    }
}
