//! The token client: one per `[[oauth2]]`, shared by every inbox, the SMTP
//! pool and the Graph client that name it.
//!
//! - **Cached in memory.** [`TokenClient::bearer`] answers from the cache
//!   until less than min(5 minutes, a tenth of the lifetime) remains
//!   ([`policy::refresh_due`]).
//! - **One refresh at a time.** Refreshes run under one async lock: twenty
//!   connections that find the token due cause one request, and the others
//!   take its result.
//! - **Refused logins.** [`TokenClient::refused`] drops the token a server
//!   refused (unless a newer one replaced it meanwhile) and gets a fresh
//!   one, for exactly one retry by the caller.
//! - **Failures back off, shared.** After a failed request, further ones
//!   wait 1 s doubling to 60 s; meanwhile a token that is still valid keeps
//!   being handed out (an early refresh failed, the token has not expired).
//! - **Rotated refresh tokens are saved before use.** When the endpoint
//!   answers with a new refresh token, it is written to `refresh_token_file`
//!   (atomically, mode 0600, fsynced) before the access token is returned,
//!   so a restart never falls back to a dead one.
//!
//! Tokens and secrets are held as [`Secret`]s: `Debug` prints `***`, and no
//! error message here contains one.

use super::config::{Grant, OAuth2Config};
use super::policy::{self, Remedy};
use super::OAuthError;
use liaison_core::config::Secret;
use oauth2::basic::{BasicClient, BasicErrorResponse};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lifetime assumed when the endpoint leaves out `expires_in` (both
/// Microsoft and Google send it; RFC 6749 makes it only recommended).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// An access token with what the caller needs to know about it.
#[derive(Clone, Debug)]
pub struct BearerToken {
    /// The token itself; present it with [`BearerToken::secret`] only.
    token: Secret,
    /// When the token expires, Unix milliseconds.
    pub expires_at_ms: u64,
    /// Which token of this client it is (1, 2, …): a refusal of an old one
    /// does not throw away a newer one.
    pub generation: u64,
}

impl BearerToken {
    /// The token, for the `Authorization: Bearer` header or a SASL message.
    pub fn secret(&self) -> &str {
        self.token.expose()
    }

    /// Whether it can still be presented (more than a second left).
    pub fn usable(&self) -> bool {
        policy::usable(now_ms(), self.expires_at_ms)
    }
}

/// What [`TokenClient::status`] reports: for `/healthz`, `/metrics` and
/// `liaison oauth status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TokenStatus {
    /// The client's name.
    pub client: String,
    /// `"ok"`, or why no usable token is held / the last refresh failed.
    pub state: String,
    /// Expiry of the token held, Unix seconds.
    pub expires_at: Option<u64>,
    /// Failed token requests since start.
    pub refresh_failures: u64,
}

impl TokenStatus {
    /// Whether the client is healthy.
    pub fn is_ok(&self) -> bool {
        self.state == "ok"
    }
}

#[derive(Default)]
struct State {
    token: Option<Held>,
    generation: u64,
    /// Failed requests in a row (0 after a success).
    failures_in_row: u32,
    /// No request before this (Unix ms).
    retry_at_ms: u64,
    /// The last failure, for health; `None` after a success.
    last_error: Option<String>,
    /// Failed requests since start (the metric).
    failures_total: u64,
    /// The current refresh token (refresh grant), once read or rotated.
    refresh_token: Option<Secret>,
}

#[derive(Clone)]
struct Held {
    token: Secret,
    obtained_ms: u64,
    expires_ms: u64,
    generation: u64,
}

impl Held {
    fn bearer(&self) -> BearerToken {
        BearerToken {
            token: self.token.clone(),
            expires_at_ms: self.expires_ms,
            generation: self.generation,
        }
    }
}

/// An OAuth2 client for one `[[oauth2]]` entry.
pub struct TokenClient {
    cfg: OAuth2Config,
    http: reqwest::Client,
    state: Mutex<State>,
    /// Held while a token request runs: one at a time.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClient")
            .field("name", &self.cfg.name)
            .field("token_url", &self.cfg.token_url)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type TokenEndpointClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The HTTP client for a token endpoint: rustls with the web PKI roots and
/// `ca_file`, no redirects (RFC 6749 §3.2 endpoints do not redirect, and
/// following one could hand the secret to another host), a timeout.
pub(crate) fn http_client(cfg: &OAuth2Config) -> Result<reqwest::Client, OAuthError> {
    let setup = |reason: String| OAuthError::Setup {
        client: cfg.name.clone(),
        reason,
    };
    let tls = crate::io::imap::tls_config(cfg.ca_file.as_deref()).map_err(setup)?;
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(cfg.timeout_secs))
        .connect_timeout(Duration::from_secs(cfg.timeout_secs))
        .build()
        .map_err(|e| setup(format!("cannot build the HTTP client: {e}")))
}

impl TokenClient {
    /// A client for `cfg`. Makes no request; reads the refresh token file
    /// (refresh grant) at the first token request.
    pub fn new(cfg: OAuth2Config) -> Result<TokenClient, OAuthError> {
        let http = http_client(&cfg)?;
        Ok(TokenClient {
            cfg,
            http,
            state: Mutex::new(State::default()),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The client's configuration.
    pub fn config(&self) -> &OAuth2Config {
        &self.cfg
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub(crate) fn endpoint_client(&self) -> Result<TokenEndpointClient, OAuthError> {
        let token_url =
            TokenUrl::new(self.cfg.token_url.clone()).map_err(|e| OAuthError::Setup {
                client: self.cfg.name.clone(),
                reason: format!("token_url: {e}"),
            })?;
        let mut client = BasicClient::new(ClientId::new(self.cfg.client_id.clone()))
            // Secrets in the form body (client_secret_post): what Entra
            // documents, and what Google accepts too.
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(token_url);
        if let Some(secret) = &self.cfg.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.expose().to_string()));
        }
        Ok(client)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A token that is not due for refresh, else a fresh one.
    pub async fn bearer(&self) -> Result<BearerToken, OAuthError> {
        {
            let st = self.lock();
            if let Some(held) = &st.token {
                if !policy::refresh_due(now_ms(), held.obtained_ms, held.expires_ms) {
                    return Ok(held.bearer());
                }
            }
        }
        let _one_at_a_time = self.refreshing.lock().await;
        self.refresh_locked(None).await
    }

    /// A server refused `token`: drop it (unless a newer one replaced it)
    /// and get a fresh one, for one retry.
    pub async fn refused(&self, token: &BearerToken) -> Result<BearerToken, OAuthError> {
        let _one_at_a_time = self.refreshing.lock().await;
        self.refresh_locked(Some(token.generation)).await
    }

    /// Runs under `refreshing`. `drop_generation`: the token of that
    /// generation was refused and must not be handed out again.
    async fn refresh_locked(
        &self,
        drop_generation: Option<u64>,
    ) -> Result<BearerToken, OAuthError> {
        let now = now_ms();
        {
            let mut st = self.lock();
            if let (Some(g), Some(held)) = (drop_generation, &st.token) {
                if held.generation == g {
                    st.token = None;
                } else {
                    // A newer token came while the caller logged in.
                    return Ok(held.bearer());
                }
            }
            if let Some(held) = &st.token {
                // Another task refreshed while this one waited for the lock.
                if !policy::refresh_due(now, held.obtained_ms, held.expires_ms) {
                    return Ok(held.bearer());
                }
            }
            if now < st.retry_at_ms {
                if let Some(held) = st
                    .token
                    .as_ref()
                    .filter(|h| policy::usable(now, h.expires_ms))
                {
                    return Ok(held.bearer());
                }
                return Err(OAuthError::BackingOff {
                    client: self.cfg.name.clone(),
                    last: st.last_error.clone().unwrap_or_default(),
                    retry_in_secs: (st.retry_at_ms - now).div_ceil(1000),
                });
            }
        }
        let result = tokio::time::timeout(
            Duration::from_secs(self.cfg.timeout_secs),
            self.request_token(),
        )
        .await
        .unwrap_or_else(|_| {
            Err(OAuthError::Unreachable {
                client: self.cfg.name.clone(),
                reason: format!("no answer within {} s", self.cfg.timeout_secs),
            })
        });
        let mut st = self.lock();
        match result {
            Ok((token, lifetime)) => {
                let obtained = now_ms();
                st.generation += 1;
                let held = Held {
                    token,
                    obtained_ms: obtained,
                    expires_ms: obtained + lifetime.as_millis() as u64,
                    generation: st.generation,
                };
                if st.last_error.is_some() {
                    tracing::info!(oauth2 = %self.cfg.name, "token endpoint answers again; token refreshed");
                }
                tracing::debug!(oauth2 = %self.cfg.name, lifetime_secs = lifetime.as_secs(), generation = held.generation, "access token obtained");
                st.failures_in_row = 0;
                st.retry_at_ms = 0;
                st.last_error = None;
                st.token = Some(held.clone());
                Ok(held.bearer())
            }
            Err(e) => {
                st.failures_in_row += 1;
                st.failures_total += 1;
                st.retry_at_ms = now_ms() + policy::retry_after_ms(st.failures_in_row);
                let text = e.to_string();
                // Say it once per kind of failure, not at every retry.
                if st.last_error.as_deref() != Some(text.as_str()) {
                    match &e {
                        OAuthError::Refused { .. } | OAuthError::NoRefreshToken { .. } => {
                            tracing::error!(oauth2 = %self.cfg.name, error = %text, "cannot get an access token")
                        }
                        _ => {
                            tracing::warn!(oauth2 = %self.cfg.name, error = %text, "cannot get an access token; retrying with backoff")
                        }
                    }
                }
                st.last_error = Some(text);
                let now = now_ms();
                if let Some(held) = st
                    .token
                    .as_ref()
                    .filter(|h| policy::usable(now, h.expires_ms))
                {
                    return Ok(held.bearer());
                }
                Err(e)
            }
        }
    }

    /// One request to the token endpoint; saves a rotated refresh token
    /// before returning.
    async fn request_token(&self) -> Result<(Secret, Duration), OAuthError> {
        let client = self.endpoint_client()?;
        let scopes = self.cfg.scopes.iter().map(|s| Scope::new(s.clone()));
        let response = match &self.cfg.grant {
            Grant::ClientCredentials => client
                .exchange_client_credentials()
                .add_scopes(scopes)
                .request_async(&self.http)
                .await
                .map_err(|e| self.classify(e, false))?,
            Grant::RefreshToken { file } => {
                let current = self.current_refresh_token(file).await?;
                let refresh = RefreshToken::new(current.expose().to_string());
                let response = client
                    .exchange_refresh_token(&refresh)
                    .add_scopes(scopes)
                    .request_async(&self.http)
                    .await
                    .map_err(|e| {
                        let e = self.classify(e, true);
                        if matches!(&e, OAuthError::Refused { error, .. } if error == "invalid_grant") {
                            // Dead: read the file again next time, where
                            // `liaison oauth login` puts the new one.
                            self.lock().refresh_token = None;
                        }
                        e
                    })?;
                if let Some(rotated) = response.refresh_token() {
                    if rotated.secret() != current.expose() {
                        let rotated = Secret::new(rotated.secret().clone());
                        save_refresh_token(file, &rotated).await.map_err(|reason| {
                            // Kept in memory all the same: it may be the
                            // only valid one now.
                            self.lock().refresh_token = Some(rotated.clone());
                            OAuthError::SaveRefreshToken {
                                client: self.cfg.name.clone(),
                                file: file.display().to_string(),
                                reason,
                            }
                        })?;
                        tracing::info!(oauth2 = %self.cfg.name, file = %file.display(), "rotated refresh token saved");
                        self.lock().refresh_token = Some(rotated);
                    }
                }
                response
            }
        };
        let token = Secret::new(response.access_token().secret().clone());
        let lifetime = response.expires_in().unwrap_or(DEFAULT_LIFETIME);
        Ok((token, lifetime))
    }

    async fn current_refresh_token(&self, file: &Path) -> Result<Secret, OAuthError> {
        if let Some(t) = self.lock().refresh_token.clone() {
            return Ok(t);
        }
        let token =
            load_refresh_token(file)
                .await
                .map_err(|reason| OAuthError::NoRefreshToken {
                    client: self.cfg.name.clone(),
                    file: file.display().to_string(),
                    reason,
                })?;
        self.lock().refresh_token = Some(token.clone());
        Ok(token)
    }

    /// Stores a refresh token got by `liaison oauth login` (saved first).
    pub(crate) async fn adopt_refresh_token(&self, token: Secret) -> Result<(), OAuthError> {
        let Grant::RefreshToken { file } = &self.cfg.grant else {
            return Err(OAuthError::Setup {
                client: self.cfg.name.clone(),
                reason: "grant = \"client_credentials\" uses no refresh token; `oauth login` is for grant = \"refresh_token\"".into(),
            });
        };
        save_refresh_token(file, &token)
            .await
            .map_err(|reason| OAuthError::SaveRefreshToken {
                client: self.cfg.name.clone(),
                file: file.display().to_string(),
                reason,
            })?;
        self.lock().refresh_token = Some(token);
        Ok(())
    }

    pub(crate) fn classify<RE: std::error::Error + 'static>(
        &self,
        e: RequestTokenError<RE, BasicErrorResponse>,
        refresh_grant: bool,
    ) -> OAuthError {
        let client = self.cfg.name.clone();
        match e {
            RequestTokenError::ServerResponse(answer) => {
                let error = answer.error().as_ref().to_string();
                let description = answer
                    .error_description()
                    .map(|d| printable(d, 300))
                    .unwrap_or_default();
                let remedy = policy::remedy(&error, refresh_grant);
                if remedy == Remedy::RetryLater {
                    OAuthError::Unreachable {
                        client,
                        reason: format!("the endpoint answered {error}: {description}"),
                    }
                } else {
                    OAuthError::Refused {
                        advice: remedy.advice(&client),
                        client,
                        error,
                        description,
                    }
                }
            }
            RequestTokenError::Request(e) => OAuthError::Unreachable {
                client,
                reason: error_chain(&e),
            },
            // The body is not quoted: it may hold a token.
            RequestTokenError::Parse(e, _body) => OAuthError::Unreachable {
                client,
                reason: format!("unexpected answer from the token endpoint ({})", e.path()),
            },
            RequestTokenError::Other(s) => OAuthError::Unreachable {
                client,
                reason: printable(&s, 300),
            },
        }
    }

    /// While no usable token is held and requests are failing: how long
    /// until the next one may succeed. The outbox waits that long instead of
    /// spending its delivery attempts (a token outage is not the mail's
    /// fault, and attempts are limited).
    pub fn waiting(&self) -> Option<Duration> {
        let st = self.lock();
        let now = now_ms();
        if st
            .token
            .as_ref()
            .is_some_and(|h| policy::usable(now, h.expires_ms))
        {
            return None;
        }
        st.last_error.as_ref()?;
        Some(Duration::from_millis(
            st.retry_at_ms.saturating_sub(now).max(1000),
        ))
    }

    /// The state for health, metrics and `oauth status`.
    pub fn status(&self) -> TokenStatus {
        let st = self.lock();
        let now = now_ms();
        let usable = st
            .token
            .as_ref()
            .filter(|h| policy::usable(now, h.expires_ms));
        let state = match (&st.last_error, usable) {
            (Some(e), _) => e.clone(),
            (None, Some(_)) => "ok".to_string(),
            (None, None) if st.token.is_some() => "token expired; not refreshed yet".to_string(),
            (None, None) => "no token yet".to_string(),
        };
        TokenStatus {
            client: self.cfg.name.clone(),
            state,
            expires_at: st.token.as_ref().map(|h| h.expires_ms / 1000),
            refresh_failures: st.failures_total,
        }
    }

    /// Keeps a fresh token at hand until `shutdown`: refreshes when due (so
    /// logins never wait for the endpoint) and after failures as the backoff
    /// allows, which also keeps [`TokenClient::status`] current for health.
    pub async fn keep_fresh(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let _ = self.bearer().await;
            let wait_ms = {
                let st = self.lock();
                let now = now_ms();
                let due = st.token.as_ref().map(|h| {
                    let lifetime = h.expires_ms.saturating_sub(h.obtained_ms);
                    let margin = policy::REFRESH_MARGIN_MAX_MS.min(lifetime / 10);
                    h.expires_ms.saturating_sub(margin).saturating_sub(now)
                });
                let retry = (st.last_error.is_some()).then(|| st.retry_at_ms.saturating_sub(now));
                match (due, retry) {
                    (_, Some(r)) => r.max(100),
                    (Some(d), None) => d.max(100),
                    (None, None) => 1000,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Every configured client, by name.
#[derive(Debug, Default, Clone)]
pub struct OAuthClients {
    by_name: BTreeMap<String, Arc<TokenClient>>,
}

impl OAuthClients {
    /// One client per `[[oauth2]]`.
    pub fn new(configs: &[OAuth2Config]) -> Result<OAuthClients, OAuthError> {
        let mut by_name = BTreeMap::new();
        for c in configs {
            by_name.insert(c.name.clone(), Arc::new(TokenClient::new(c.clone())?));
        }
        Ok(OAuthClients { by_name })
    }

    /// The client named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<TokenClient>> {
        self.by_name.get(name).cloned()
    }

    /// Every client.
    pub fn all(&self) -> impl Iterator<Item = &Arc<TokenClient>> {
        self.by_name.values()
    }

    /// Whether any client is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every client's status.
    pub fn statuses(&self) -> Vec<TokenStatus> {
        self.all().map(|c| c.status()).collect()
    }

    /// Prometheus text: `liaison_oauth_refresh_failures_total{client}` and
    /// `liaison_oauth_token_expiry_seconds{client}` (seconds left on the
    /// token held; 0 when none is).
    pub fn render_metrics(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let now = now_ms() / 1000;
        let statuses = self.statuses();
        let mut out = String::new();
        out.push_str("# HELP liaison_oauth_refresh_failures_total Failed OAuth2 token requests.\n# TYPE liaison_oauth_refresh_failures_total counter\n");
        for s in &statuses {
            out.push_str(&format!(
                "liaison_oauth_refresh_failures_total{{client=\"{}\"}} {}\n",
                s.client, s.refresh_failures
            ));
        }
        out.push_str("# HELP liaison_oauth_token_expiry_seconds Seconds until the OAuth2 access token held expires (0: none).\n# TYPE liaison_oauth_token_expiry_seconds gauge\n");
        for s in &statuses {
            out.push_str(&format!(
                "liaison_oauth_token_expiry_seconds{{client=\"{}\"}} {}\n",
                s.client,
                s.expires_at.map(|e| e.saturating_sub(now)).unwrap_or(0)
            ));
        }
        out
    }

    /// Starts [`TokenClient::keep_fresh`] for every client.
    pub fn spawn_keepers(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) {
        for c in self.all() {
            tasks.spawn(c.clone().keep_fresh(shutdown.clone()));
        }
    }
}

/// Text fit for a log line: no control characters, at most `max` chars.
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    printable(&s, 400)
}

/// Reads the refresh token file (trailing newline ignored).
pub(crate) async fn load_refresh_token(file: &Path) -> Result<Secret, String> {
    let path = file.to_owned();
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "no refresh token stored yet".to_string(),
            _ => format!("cannot read it: {e}"),
        })?;
    let token = text.trim();
    if token.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(Secret::new(token))
}

/// Writes the refresh token durably: a 0600 temporary file beside it,
/// fsynced, renamed over the old one, and the folder fsynced, so a crash
/// leaves either the old token or the new one, never a torn file.
pub(crate) async fn save_refresh_token(file: &Path, token: &Secret) -> Result<(), String> {
    let path = file.to_owned();
    let value = format!("{}\n", token.expose());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".new");
        let tmp = dir.join(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot write it: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refresh_tokens_are_saved_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.token");
        assert!(load_refresh_token(&file)
            .await
            .unwrap_err()
            .contains("no refresh token"));
        save_refresh_token(&file, &Secret::new("one"))
            .await
            .unwrap();
        save_refresh_token(&file, &Secret::new("two"))
            .await
            .unwrap();
        assert_eq!(load_refresh_token(&file).await.unwrap().expose(), "two");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("g.token.new").exists());
    }
}
