//! OAuth2 for the mail servers (and the Graph client): tokens from a
//! provider's token endpoint, presented over SASL XOAUTH2 / OAUTHBEARER.
//!
//! * [`config`] — `[[oauth2]]`: presets, grants, validation (the core's
//!   `liaison_core::config::oauth2`).
//! * [`policy`] — when to refresh, backoff, what an error answer means
//!   (core).
//! * [`sasl`] — the XOAUTH2 and OAUTHBEARER messages (core).
//! * [`client`] — the token client: cache, one refresh at a time, refused
//!   logins, rotated refresh tokens saved before use.
//! * [`device`] — `liaison oauth login`: the device authorization grant.

pub mod client;
pub mod device;
pub use liaison_core::config::oauth2 as config;
pub use liaison_core::oauth::{policy, sasl};

pub use client::{BearerToken, OAuthClients, TokenClient, TokenStatus};
pub use config::{Grant, OAuth2Config, Provider, RawOAuth2};
pub use sasl::Mechanism;

/// Errors getting a token.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The client cannot be set up (TLS roots, URL).
    #[error("oauth2 client `{client}`: {reason}")]
    Setup {
        /// The `[[oauth2]]` name.
        client: String,
        /// What failed.
        reason: String,
    },
    /// The endpoint could not be reached or answered something that may
    /// pass (5xx, `temporarily_unavailable`, a timeout).
    #[error("oauth2 client `{client}`: token endpoint unreachable or failing: {reason}")]
    Unreachable {
        /// The `[[oauth2]]` name.
        client: String,
        /// What happened.
        reason: String,
    },
    /// The endpoint refused: the operator has to act.
    #[error("oauth2 client `{client}`: token request refused ({error}: {description}); {advice}")]
    Refused {
        /// The `[[oauth2]]` name.
        client: String,
        /// RFC 6749 `error`, e.g. `invalid_grant`.
        error: String,
        /// The endpoint's `error_description` (Entra's AADSTS code and text).
        description: String,
        /// What to do, naming the command or setting.
        advice: String,
    },
    /// No refresh token is stored for a refresh-grant client.
    #[error("oauth2 client `{client}`: no usable refresh token in {file} ({reason}); run `liaison oauth login {client}`")]
    NoRefreshToken {
        /// The `[[oauth2]]` name.
        client: String,
        /// The refresh token file.
        file: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A rotated refresh token could not be saved.
    #[error("oauth2 client `{client}`: cannot save the rotated refresh token to {file}: {reason}; make the file and its folder writable by Liaison")]
    SaveRefreshToken {
        /// The `[[oauth2]]` name.
        client: String,
        /// The refresh token file.
        file: String,
        /// What failed.
        reason: String,
    },
    /// Waiting after failed requests.
    #[error("oauth2 client `{client}`: waiting {retry_in_secs} s before the next token request (last failure: {last})")]
    BackingOff {
        /// The `[[oauth2]]` name.
        client: String,
        /// The last failure.
        last: String,
        /// Seconds until the next request.
        retry_in_secs: u64,
    },
    /// The device login did not complete.
    #[error("oauth2 client `{client}`: device login failed: {reason}")]
    DeviceLogin {
        /// The `[[oauth2]]` name.
        client: String,
        /// What happened.
        reason: String,
    },
}

impl OAuthError {
    /// Whether only the operator can fix it (retrying alone will not).
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            OAuthError::Refused { .. }
                | OAuthError::NoRefreshToken { .. }
                | OAuthError::SaveRefreshToken { .. }
                | OAuthError::Setup { .. }
        )
    }
}
