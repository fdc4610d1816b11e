//! SASL messages for bearer tokens: XOAUTH2 (Google's and Microsoft's) and
//! OAUTHBEARER (RFC 7628), as bytes; IMAP and SMTP base64 them.
//!
//! Both are one message from the client. A refused token is answered by the
//! server with a challenge (base64 JSON such as `{"status":"401",…}`) that
//! the client must acknowledge before the server sends its final NO/535:
//! XOAUTH2 with an empty response, OAUTHBEARER with `%x01` (RFC 7628 §3.2.3).

/// Which SASL mechanism carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// `XOAUTH2`: offered by Microsoft 365, Gmail and Dovecot.
    Xoauth2,
    /// `OAUTHBEARER` (RFC 7628): Gmail and Dovecot; not Exchange Online.
    Oauthbearer,
}

impl Mechanism {
    /// The name on the wire (`AUTHENTICATE XOAUTH2`, `AUTH XOAUTH2`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Xoauth2 => "XOAUTH2",
            Mechanism::Oauthbearer => "OAUTHBEARER",
        }
    }

    /// The client's one message. `host` and `port` are the server's
    /// (OAUTHBEARER carries them; XOAUTH2 does not).
    pub fn initial_response(self, user: &str, token: &str, host: &str, port: u16) -> Vec<u8> {
        match self {
            Mechanism::Xoauth2 => {
                format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes()
            }
            Mechanism::Oauthbearer => format!(
                "n,a={},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01",
                gs2_escape(user)
            )
            .into_bytes(),
        }
    }

    /// The client's answer to an error challenge, after which the server
    /// sends its final refusal.
    pub fn error_ack(self) -> &'static [u8] {
        match self {
            Mechanism::Xoauth2 => b"",
            Mechanism::Oauthbearer => b"\x01",
        }
    }
}

/// RFC 5801 saslname: `=` and `,` are written `=3D` and `=2C`.
fn gs2_escape(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// A short, printable account of an error challenge (its `status` and
/// `scope`, or its first bytes) for the login error; it holds no secret.
pub fn describe_challenge(challenge: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorChallenge {
        status: Option<String>,
        scope: Option<String>,
    }
    match serde_json::from_slice::<ErrorChallenge>(challenge) {
        Ok(c) => {
            let mut s = format!("status {}", c.status.as_deref().unwrap_or("?"));
            if let Some(scope) = c.scope {
                s.push_str(&format!(", scope {scope}"));
            }
            s
        }
        Err(_) => String::from_utf8_lossy(&challenge[..challenge.len().min(120)])
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_is_user_then_bearer_with_ctrl_a_separators() {
        let m = Mechanism::Xoauth2.initial_response("invites@contoso.com", "tok", "h", 993);
        assert_eq!(m, b"user=invites@contoso.com\x01auth=Bearer tok\x01\x01");
        assert_eq!(Mechanism::Xoauth2.error_ack(), b"");
    }

    #[test]
    fn oauthbearer_has_a_gs2_header_with_the_user_and_escapes_it() {
        let m = Mechanism::Oauthbearer.initial_response("a,b=c@x.test", "tok", "imap.x.test", 993);
        assert_eq!(
            m,
            b"n,a=a=2Cb=3Dc@x.test,\x01host=imap.x.test\x01port=993\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(Mechanism::Oauthbearer.error_ack(), b"\x01");
    }

    #[test]
    fn error_challenges_are_summarised_without_control_characters() {
        assert_eq!(
            describe_challenge(br#"{"status":"401","schemes":"bearer","scope":"mail"}"#),
            "status 401, scope mail"
        );
        assert_eq!(describe_challenge(b"odd\x01text"), "odd?text");
    }
}
