//! `liaison oauth login NAME`: the OAuth 2.0 device authorization grant
//! (RFC 8628) for `grant = "refresh_token"` clients. It prints where to
//! sign in and the code to enter, polls the token endpoint until the user
//! has signed in (at the interval the endpoint asks for, slower when told
//! `slow_down`), and stores the refresh token (mode 0600) in
//! `refresh_token_file`.

use super::{OAuthError, TokenClient};
use liaison_core::config::Secret;
use oauth2::{
    DeviceAuthorizationUrl, RequestTokenError, Scope, StandardDeviceAuthorizationResponse,
    TokenResponse,
};

/// What the user is asked to do; printed by the CLI.
#[derive(Debug, Clone)]
pub struct DevicePrompt {
    /// The page to open.
    pub verification_uri: String,
    /// The code to enter there.
    pub user_code: String,
    /// The same page with the code filled in, when the endpoint gives one.
    pub verification_uri_complete: Option<String>,
    /// How long the code is valid, in seconds.
    pub expires_in_secs: u64,
}

/// Runs the device grant: `prompt` is called once with what to show the
/// user; returns when the refresh token is stored.
pub async fn login(
    client: &TokenClient,
    prompt: impl FnOnce(&DevicePrompt),
) -> Result<(), OAuthError> {
    let cfg = client.config();
    let fail = |reason: String| OAuthError::DeviceLogin {
        client: cfg.name.clone(),
        reason,
    };
    if !matches!(cfg.grant, super::Grant::RefreshToken { .. }) {
        return Err(fail(
            "this client uses grant = \"client_credentials\" and needs no login".into(),
        ));
    }
    let url = cfg.device_authorization_url.clone().ok_or_else(|| {
        fail("no device_authorization_url is configured (the presets set it)".into())
    })?;
    let endpoint = client.endpoint_client()?.set_device_authorization_url(
        DeviceAuthorizationUrl::new(url).map_err(|e| fail(e.to_string()))?,
    );
    let scopes = cfg.scopes.iter().map(|s| Scope::new(s.clone()));
    let details: StandardDeviceAuthorizationResponse = endpoint
        .exchange_device_code()
        .add_scopes(scopes)
        .request_async(client.http())
        .await
        .map_err(|e| client.classify(e, false))?;
    prompt(&DevicePrompt {
        verification_uri: details.verification_uri().to_string(),
        user_code: details.user_code().secret().clone(),
        verification_uri_complete: details
            .verification_uri_complete()
            .map(|u| u.secret().clone()),
        expires_in_secs: details.expires_in().as_secs(),
    });
    let token = endpoint
        .exchange_device_access_token(&details)
        .request_async(client.http(), tokio::time::sleep, None)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(answer) => {
                let error = answer.error().as_ref().to_string();
                let why = match error.as_str() {
                    "expired_token" => {
                        "the code expired before sign-in was completed; run the command again"
                            .to_string()
                    }
                    "access_denied" => "sign-in was declined".to_string(),
                    _ => format!(
                        "{error}: {}",
                        answer.error_description().cloned().unwrap_or_default()
                    ),
                };
                fail(why)
            }
            other => fail(other.to_string()),
        })?;
    let refresh = token.refresh_token().ok_or_else(|| {
        fail(
            "the endpoint issued no refresh token (Microsoft needs the scope offline_access)"
                .into(),
        )
    })?;
    client
        .adopt_refresh_token(Secret::new(refresh.secret().clone()))
        .await
}
