//! Who is trusted for what: the one policy that decides whether a mail's
//! sender may have the power its From address would give it.
//!
//! Liaison acts on mail because of who sent it, and anyone can write any
//! From. So every place in the workflow where a sender gets power from its
//! address states its [`Claim`] here, and [`check`] applies one table:
//!
//! | sender (as its From says) | power | check, with `trusted_authserv_id` set |
//! |---|---|---|
//! | a partner, to the command address | its commands run | authenticated From |
//! | the support desk, on a ticket | its answer reaches the customer under Liaison's name | authenticated From |
//! | the partner or its support contact, on a ticket | relayed to the desk | authenticated From |
//! | the customer, on a ticket (`[T-…]` tag or thread) | relayed to the desk, reopens | authenticated From (a ticket tag is computable: no credential) |
//! | a known customer, no token or thread | support request: forwarded to the partner, or a ticket opened | authenticated From |
//! | the customer, with a valid token or thread, asking for support (not answering) | the same support request | authenticated From (the credential shows only that the sender saw a mail to the customer) |
//! | the customer, with a valid token or a thread to a mail Liaison sent | answers the invitation (accept, decline, …) | the credential; also an authenticated From with `authenticate_customers` |
//! | the customer, with the token of a draft invitation (the partner saw it) | answers the invitation | authenticated From (the token is no secret of the customer's alone) |
//!
//! "Authenticated From" is [`crate::mail::auth::verify_sender`]: the trusted MX's
//! topmost `Authentication-Results` record a pass aligned with the From
//! domain. Without `trusted_authserv_id` nothing can be authenticated:
//! addresses are believed as they are, and the operator is warned at start
//! ([`crate::config::Config::warnings`]). A refused mail is quarantined
//! with the reason [`Untrusted`] gives; `liaison quarantine release`
//! decides it again with the MX check turned off (the operator vouches).

use crate::config::SecurityConfig;
use crate::mail::auth::{self, NotAuthenticated};
use crate::model::ticket::Author;

/// Something an outsider cannot compute that ties a customer's mail to one
/// of Liaison's mails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A valid HMAC token in the plus-address or the subject.
    Token,
    /// In-Reply-To/References naming a Message-ID Liaison sent.
    Thread,
    /// A valid token of a draft invitation: the draft was mailed to the
    /// partner to forward, so the partner has seen the token too, and it
    /// cannot tell the customer's answer from the partner's. The From must
    /// be authenticated whenever it can be, whatever
    /// `authenticate_customers` says.
    DraftToken,
}

/// Whom a mail's sender claims to be, and so what it could make Liaison do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim<'a> {
    /// A configured partner address writing commands.
    PartnerCommand {
        /// The partner's id.
        partner: &'a str,
    },
    /// One of a ticket's parties writing on it.
    Ticket {
        /// The ticket's number, formatted (`T-000123`).
        ticket: &'a str,
        /// Who the From says wrote it.
        author: Author,
    },
    /// A known customer's mail without a token or thread: a support request
    /// by its address alone.
    SupportRequest,
    /// A support request (not an answer) that carries a valid token or a
    /// thread: those prove only that the sender has seen a mail Liaison
    /// sent to the customer (forwarded, copied, archived), not who writes,
    /// so it needs what [`Claim::SupportRequest`] needs.
    SupportRequestByReference,
    /// The customer answering with a credential.
    CustomerAnswer(Credential),
}

impl Claim<'_> {
    fn who(&self) -> String {
        match self {
            Claim::PartnerCommand { partner } => {
                format!("command mail claiming to be from partner {partner}")
            }
            Claim::Ticket { ticket, author } => format!(
                "mail on ticket {ticket} claiming to be from {}",
                match author {
                    Author::Customer => "its customer",
                    Author::Partner => "its partner",
                    Author::SupportContact => "its support contact",
                    Author::SupportDesk => "the support desk",
                }
            ),
            Claim::SupportRequest => {
                "support request (no token, no thread) claiming to be from a customer".into()
            }
            Claim::SupportRequestByReference => {
                "support request (with a token or thread, which only shows the sender saw a mail to the customer) claiming to be from the customer".into()
            }
            Claim::CustomerAnswer(c) => format!(
                "answer claiming to be from the customer (with a valid {})",
                match c {
                    Credential::Token => "token",
                    Credential::Thread => "thread reference",
                    Credential::DraftToken => "token of a draft the partner forwarded",
                }
            ),
        }
    }

    fn withheld(&self) -> &'static str {
        match self {
            Claim::PartnerCommand { .. } => "no command run, no reply",
            Claim::Ticket {
                author: Author::SupportDesk,
                ..
            } => "nothing relayed to the customer or the partner, no reply",
            Claim::Ticket { .. } => "nothing relayed to the support desk, no reply",
            Claim::SupportRequest | Claim::SupportRequestByReference => {
                "nothing forwarded, no ticket opened, no reply"
            }
            Claim::CustomerAnswer(_) => "nothing changed, no reply",
        }
    }
}

/// Whether `claim` needs an authenticated From under this configuration
/// (the table in the module docs).
pub fn needs_authenticated_from(security: &SecurityConfig, claim: Claim) -> bool {
    if security.trusted_authserv_id.is_none() {
        // Nothing could be checked; the operator has been warned.
        return false;
    }
    match claim {
        Claim::CustomerAnswer(Credential::DraftToken) => true,
        Claim::CustomerAnswer(_) => security.authenticate_customers,
        Claim::PartnerCommand { .. }
        | Claim::Ticket { .. }
        | Claim::SupportRequest
        | Claim::SupportRequestByReference => true,
    }
}

/// Why a sender is not trusted for its claim: the quarantine reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{who} ({from}) is not authenticated: {why}. Quarantined: {withheld}. {advice}")]
pub struct Untrusted {
    /// Who the mail claimed to be, and in what role.
    pub who: String,
    /// The From address.
    pub from: String,
    /// Which check failed (boxed: it is the cold path).
    pub why: Box<NotAuthenticated>,
    /// What Liaison did not do.
    pub withheld: &'static str,
    /// What to configure or fix.
    pub advice: String,
}

/// Applies the policy: `Ok` when the sender of a mail with these
/// `Authentication-Results` headers may have the power of `claim`.
pub fn check(
    security: &SecurityConfig,
    authentication_results: &[String],
    from: &str,
    claim: Claim,
) -> Result<(), Untrusted> {
    let Some(trusted) = security.trusted_authserv_id.as_deref() else {
        return Ok(());
    };
    if !needs_authenticated_from(security, claim) {
        return Ok(());
    }
    let policy = auth::Policy {
        trusted_authserv_id: trusted,
        trusted_headers: security.trusted_authserv_headers,
        alignment: security.alignment,
    };
    let why = match auth::verify_sender(authentication_results, &policy, from) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let mut advice = match &why {
        NotAuthenticated::NoFromDomain { .. } => String::new(),
        NotAuthenticated::NoTrustedHeader { .. } => format!(
            "If it is genuine, the MX named in security.trusted_authserv_id (\"{trusted}\") must add its Authentication-Results header on top of every incoming mail. "
        ),
        NotAuthenticated::NoAlignedPass { domain, .. } => format!(
            "If it is genuine, {domain} needs DKIM signing or SPF that passes aligned with the From domain (security.alignment = \"{}\"); if the MX adds more than {} Authentication-Results header(s) on top, raise security.trusted_authserv_headers. ",
            security.alignment, security.trusted_authserv_headers
        ),
    };
    if matches!(claim, Claim::CustomerAnswer(Credential::DraftToken)) {
        advice.push_str(
            "The partner has seen a draft's token, so an answer to a draft needs an authenticated From. ",
        );
    } else if matches!(claim, Claim::CustomerAnswer(_)) {
        advice.push_str(
            "With security.authenticate_customers = false a valid token or thread suffices. ",
        );
    }
    advice.push_str("`liaison quarantine release KEY` decides it again, trusting the sender.");
    Err(Untrusted {
        who: claim.who(),
        from: from.to_string(),
        why: Box::new(why),
        withheld: claim.withheld(),
        advice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::auth::Alignment;

    fn security(trusted: Option<&str>, authenticate_customers: bool) -> SecurityConfig {
        SecurityConfig {
            token_secret: crate::config::Secret::new("0123456789abcdef0123"),
            invitation_ttl_days: 90,
            trusted_authserv_id: trusted.map(str::to_string),
            trusted_authserv_headers: 1,
            alignment: Alignment::Relaxed,
            authenticate_customers,
            max_message_bytes: 1 << 20,
            max_replies_per_hour: 20,
            quarantine_keep_bytes: 1 << 20,
            quarantine_store_bytes: 64 << 20,
            held_store_bytes: 64 << 20,
            max_support_requests_per_hour: 5,
            approval_link_hosts: vec!["admin.microsoft.com".into()],
        }
    }

    const PASS: &str = "mx.liaison.test; dkim=pass header.d=liaison.test";
    const DESK: Claim = Claim::Ticket {
        ticket: "T-000001",
        author: Author::SupportDesk,
    };

    fn all_claims() -> Vec<Claim<'static>> {
        let mut v = vec![
            Claim::PartnerCommand {
                partner: "northwind",
            },
            Claim::SupportRequest,
            Claim::SupportRequestByReference,
            Claim::CustomerAnswer(Credential::Token),
            Claim::CustomerAnswer(Credential::Thread),
            Claim::CustomerAnswer(Credential::DraftToken),
        ];
        for author in [
            Author::Customer,
            Author::Partner,
            Author::SupportContact,
            Author::SupportDesk,
        ] {
            v.push(Claim::Ticket {
                ticket: "T-000001",
                author,
            });
        }
        v
    }

    #[test]
    fn the_policy_table() {
        let off = security(None, false);
        let on = security(Some("mx.liaison.test"), false);
        let strict = security(Some("mx.liaison.test"), true);
        // What `quarantine release` decides with: the MX check cleared on
        // a copy of the config, whatever else is set.
        let released = security(None, true);
        for claim in all_claims() {
            for s in [&off, &released] {
                assert!(!needs_authenticated_from(s, claim), "{claim:?}");
                assert!(check(s, &[], "x@liaison.test", claim).is_ok());
            }
            // A draft's token was seen by the partner: no credential.
            let credential = matches!(
                claim,
                Claim::CustomerAnswer(Credential::Token | Credential::Thread)
            );
            assert_eq!(
                needs_authenticated_from(&on, claim),
                !credential,
                "{claim:?}"
            );
            assert!(needs_authenticated_from(&strict, claim), "{claim:?}");
            // Authenticated: always fine.
            for s in [&on, &strict] {
                assert!(check(s, &[PASS.into()], "helpdesk@liaison.test", claim).is_ok());
            }
            // Not authenticated: refused exactly where the table says so.
            assert_eq!(
                check(&on, &[], "helpdesk@liaison.test", claim).is_err(),
                !credential,
                "{claim:?}"
            );
            assert!(check(&strict, &[], "helpdesk@liaison.test", claim).is_err());
        }
    }

    #[test]
    fn reasons_say_which_check_failed_and_what_to_configure() {
        let on = security(Some("mx.liaison.test"), false);
        let e = check(&on, &[], "helpdesk@liaison.test", DESK)
            .unwrap_err()
            .to_string();
        for part in [
            "mail on ticket T-000001 claiming to be from the support desk (helpdesk@liaison.test) is not authenticated",
            "no Authentication-Results header",
            "nothing relayed to the customer",
            "security.trusted_authserv_id (\"mx.liaison.test\")",
            "quarantine release",
        ] {
            assert!(e.contains(part), "{part:?} missing: {e}");
        }
        let e = check(
            &on,
            &["mx.liaison.test; dkim=fail header.d=liaison.test".into()],
            "partner1@liaison.test",
            Claim::PartnerCommand {
                partner: "northwind",
            },
        )
        .unwrap_err()
        .to_string();
        for part in [
            "command mail claiming to be from partner northwind (partner1@liaison.test) is not authenticated",
            "no pass aligned with liaison.test",
            "dkim=fail header.d=liaison.test",
            "no command run, no reply",
            "If it is genuine, liaison.test needs DKIM signing or SPF",
            "security.trusted_authserv_headers",
        ] {
            assert!(e.contains(part), "{part:?} missing: {e}");
        }
        let strict = security(Some("mx.liaison.test"), true);
        let e = check(
            &strict,
            &[],
            "alice@contoso.test",
            Claim::CustomerAnswer(Credential::Token),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("security.authenticate_customers = false a valid token"),
            "{e}"
        );
    }
}
