//! The token lifecycle's decisions, as pure functions of times and answers:
//! when to refresh, how long to wait after a failure, and what an error
//! answer from the token endpoint asks the operator to do.

/// A refresh is started when less than this remains, at most.
pub const REFRESH_MARGIN_MAX_MS: u64 = 5 * 60 * 1000;

/// Whether a token obtained at `obtained_ms` and expiring at `expires_ms`
/// (Unix milliseconds) should be replaced at `now_ms`: when less than
/// min(5 minutes, a tenth of its lifetime) remains. A tenth keeps short-lived
/// tokens (tests, some IdPs issue 5-minute ones) from being refreshed all
/// the time; five minutes covers a slow token endpoint for hour-long ones.
pub fn refresh_due(now_ms: u64, obtained_ms: u64, expires_ms: u64) -> bool {
    let lifetime = expires_ms.saturating_sub(obtained_ms);
    let margin = REFRESH_MARGIN_MAX_MS.min(lifetime / 10);
    now_ms.saturating_add(margin) >= expires_ms
}

/// Whether the token can still be presented at `now_ms`: the server
/// compares `exp` to the second with no leeway, so a token in its last
/// second is not offered.
pub fn usable(now_ms: u64, expires_ms: u64) -> bool {
    now_ms.saturating_add(1000) < expires_ms
}

/// Wait after the `failures`-th failed token request in a row: 1 s
/// doubling to 60 s, shared by every inbox and the SMTP pool (they all ask
/// the same client, so an outage costs one request per wait, not one per
/// connection).
pub fn retry_after_ms(failures: u32) -> u64 {
    let exp = failures.saturating_sub(1).min(6);
    (1000u64 << exp).min(60_000)
}

/// What an error answer (RFC 6749 §5.2 `error`) means for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// The refresh token is dead (revoked, expired, password changed):
    /// only a new `liaison oauth login` helps.
    LoginAgain,
    /// The client id or secret is wrong, or the secret expired.
    CheckClientSecret,
    /// The app may not use this grant, or lacks consent.
    CheckPermissions,
    /// The scope is wrong for this provider.
    CheckScope,
    /// Anything else: may pass (server trouble, throttling).
    RetryLater,
}

/// Classifies an error answer. `refresh_grant` tells whether the request
/// used a refresh token: `invalid_grant` then means the token is dead,
/// while for client credentials it points at the app registration.
pub fn remedy(error: &str, refresh_grant: bool) -> Remedy {
    match error {
        "invalid_grant" if refresh_grant => Remedy::LoginAgain,
        "invalid_grant" => Remedy::CheckPermissions,
        "invalid_client" => Remedy::CheckClientSecret,
        "unauthorized_client" | "access_denied" | "consent_required" | "interaction_required" => {
            Remedy::CheckPermissions
        }
        "invalid_scope" => Remedy::CheckScope,
        _ => Remedy::RetryLater,
    }
}

impl Remedy {
    /// Whether retrying without the operator can help.
    pub fn is_permanent(self) -> bool {
        self != Remedy::RetryLater
    }

    /// The log line's advice, naming the client and what to run or check.
    pub fn advice(self, client: &str) -> String {
        match self {
            Remedy::LoginAgain => format!(
                "the refresh token of oauth2 client `{client}` was revoked or has expired: run `liaison oauth login {client}` again"
            ),
            Remedy::CheckClientSecret => format!(
                "oauth2 client `{client}` was refused: check its client_id and client secret, and the secret's expiry date in the app registration (Entra admin center: App registrations > Certificates & secrets; Google Cloud console: Credentials)"
            ),
            Remedy::CheckPermissions => format!(
                "oauth2 client `{client}` may not get this token: check the app's API permissions and admin consent (IMAP.AccessAsApp, SMTP.SendAsApp), and that the grant is allowed for it"
            ),
            Remedy::CheckScope => format!(
                "oauth2 client `{client}`: the scope was refused; check `scope` (Microsoft 365 app-only: https://outlook.office365.com/.default; Google: https://mail.google.com/)"
            ),
            Remedy::RetryLater => format!(
                "the token endpoint of oauth2 client `{client}` answered with an error; retrying with backoff"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_when_less_than_min_five_minutes_or_a_tenth_remains() {
        // One hour: refreshed in the last five minutes.
        let hour = 3_600_000;
        assert!(!refresh_due(hour - 300_001, 0, hour));
        assert!(refresh_due(hour - 300_000, 0, hour));
        // Ten seconds: refreshed in the last second, not in the last five
        // minutes (which would be always).
        assert!(!refresh_due(8_999, 0, 10_000));
        assert!(refresh_due(9_000, 0, 10_000));
        // Already expired, or a token with no lifetime at all.
        assert!(refresh_due(20_000, 0, 10_000));
        assert!(refresh_due(5, 5, 5));
    }

    #[test]
    fn a_token_in_its_last_second_is_not_offered() {
        assert!(usable(8_999, 10_000));
        assert!(!usable(9_000, 10_000));
        assert!(!usable(11_000, 10_000));
    }

    #[test]
    fn retries_double_from_one_second_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(retry_after_ms).collect();
        assert_eq!(
            waits,
            [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        assert_eq!(retry_after_ms(0), 1000);
    }

    #[test]
    fn error_answers_name_the_remedy() {
        assert_eq!(remedy("invalid_grant", true), Remedy::LoginAgain);
        assert_eq!(remedy("invalid_grant", false), Remedy::CheckPermissions);
        assert_eq!(remedy("invalid_client", false), Remedy::CheckClientSecret);
        assert_eq!(remedy("temporarily_unavailable", true), Remedy::RetryLater);
        assert!(!Remedy::RetryLater.is_permanent());
        assert!(Remedy::LoginAgain
            .advice("g")
            .contains("liaison oauth login g"));
        assert!(Remedy::CheckClientSecret.advice("m365").contains("expiry"));
    }
}
