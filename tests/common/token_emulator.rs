//! **An emulator of the Microsoft identity platform token endpoint**, for
//! tests only: Entra ID cannot exist on this machine, so this stands in for
//! `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/{token,devicecode}`,
//! written from Microsoft's published reference ("Microsoft identity
//! platform and the OAuth 2.0 client credentials flow", "… refresh tokens",
//! "… device authorization grant flow", and the AADSTS error code list):
//!
//! - `POST /{tenant}/oauth2/v2.0/token`, form-encoded, client authenticated
//!   by `client_id` + `client_secret` in the body (or HTTP Basic):
//!   - `grant_type=client_credentials` with `scope` ending in `/.default`;
//!     answers `{"token_type":"Bearer","expires_in","ext_expires_in","access_token"}`;
//!   - `grant_type=refresh_token`: a new access token **and a new refresh
//!     token; the old one stops working** (rotation, strictly: Entra keeps the
//!     old one valid for a while, which would hide a client that forgets to
//!     save the new one);
//!   - `grant_type=urn:ietf:params:oauth:grant-type:device_code`:
//!     `authorization_pending` until the test approves the code, then
//!     tokens; `expired_token`, `authorization_declined` as Entra answers.
//! - `POST /{tenant}/oauth2/v2.0/devicecode` (`client_id`, `scope`):
//!   `device_code`, `user_code`, `verification_uri`, `expires_in`,
//!   `interval`, `message`.
//! - Errors as Entra sends them: HTTP 400 (401 for `invalid_client`) with
//!   `{"error","error_description":"AADSTS…: …","error_codes":[…],"timestamp","trace_id","correlation_id"}`.
//!
//! Access tokens are JWTs signed HS256 with the key the loopback Dovecot
//! trusts (`$LIAISON_MAILSTACK_DIR/oauth2/hs256.key`, see
//! `tests/mailstack.sh`): header `{"alg":"HS256","typ":"JWT"}`, claims `iss`
//! `liaison-token-emulator`, `sub`, `aud`, `iat`, `nbf`, `exp` (lifetime
//! settable), `appid`, `tenant_domain` `"@<domain>"` (what Dovecot matches
//! with the login's domain), and `roles` (app) or `email` + `scp` (user).
//!
//! Switches for the failure tests: [`TokenEmulator::set_down`] (connections
//! are accepted and closed unanswered, as a dead proxy does),
//! [`TokenEmulator::revoke_client`] (`invalid_client`, AADSTS7000222: the
//! secret expired), [`TokenEmulator::revoke_refresh_tokens`]
//! (`invalid_grant`, AADSTS70008), [`TokenEmulator::fail_next`] (any
//! answer, e.g. a 503).
//!
//! It runs on its own thread and runtime, so it answers while the test
//! thread blocks (a spawned `liaison` process asking it for a token while
//! the test waits for that process).

#![allow(dead_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `iss` of every token; the loopback Dovecot accepts only this one.
pub const ISSUER: &str = "liaison-token-emulator";

/// A registered application (client).
#[derive(Debug, Clone)]
struct App {
    /// `None` for a public client (device login, no secret).
    secret: Option<String>,
    /// The mailbox domain its app-only tokens are for.
    domain: String,
    /// `invalid_client` from now on.
    revoked: bool,
}

#[derive(Debug, Clone)]
struct Device {
    client_id: String,
    user_code: String,
    expires_at: u64,
    /// Set when the test approves the code: the user who signed in.
    approved_as: Option<String>,
    declined: bool,
}

#[derive(Debug, Default)]
struct State {
    apps: HashMap<String, App>,
    /// refresh token → (client id, user).
    refresh_tokens: HashMap<String, (String, String)>,
    devices: HashMap<String, Device>,
    lifetime_secs: u64,
    down: bool,
    /// Tokens leave out the claim Dovecot matches the login with.
    omit_username_claim: bool,
    /// Canned answers (status, body) for the next requests.
    fail_next: Vec<(u16, String)>,
    /// Token requests answered with a token, by grant type.
    issued: HashMap<String, usize>,
    /// Every token request, answered or not.
    requests: usize,
    counter: u64,
}

/// The running emulator; stops when dropped.
pub struct TokenEmulator {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    key: Vec<u8>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The signing key the loopback Dovecot trusts.
pub fn stack_signing_key() -> Vec<u8> {
    let dir = std::env::var("LIAISON_MAILSTACK_DIR").unwrap_or_else(|_| "/tmp/liaison-ms".into());
    let path = std::path::Path::new(&dir).join("oauth2/hs256.key");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): start the mail stack with `bash tests/mailstack.sh up`",
            path.display()
        )
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64url(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

/// A JWT over `claims`, signed HS256 with `key`.
pub fn sign_jwt(key: &[u8], claims: &serde_json::Value) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64url(claims.to_string().as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let sig = b64url(&mac.finalize().into_bytes());
    format!("{header}.{payload}.{sig}")
}

impl TokenEmulator {
    /// Starts with the loopback Dovecot's key.
    pub fn start() -> TokenEmulator {
        Self::with_key(stack_signing_key())
    }

    /// Starts signing with `key`.
    pub fn with_key(key: Vec<u8>) -> TokenEmulator {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            lifetime_secs: 3600,
            ..Default::default()
        }));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (st, k) = (state.clone(), key.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let (st, k) = (st.clone(), k.clone());
                            tokio::spawn(async move { serve(stream, st, k).await });
                        }
                    }
                }
            });
        });
        TokenEmulator {
            addr,
            state,
            key,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `http://127.0.0.1:PORT/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("http://{}/{tenant}/oauth2/v2.0/token", self.addr)
    }

    /// `http://127.0.0.1:PORT/{tenant}/oauth2/v2.0/devicecode`.
    pub fn device_url(&self, tenant: &str) -> String {
        format!("http://{}/{tenant}/oauth2/v2.0/devicecode", self.addr)
    }

    /// Registers a confidential app whose app-only tokens are good for
    /// every mailbox of `domain`.
    pub fn register_app(&self, client_id: &str, secret: &str, domain: &str) {
        self.lock().apps.insert(
            client_id.into(),
            App {
                secret: Some(secret.into()),
                domain: domain.into(),
                revoked: false,
            },
        );
    }

    /// Registers a public client (no secret), for refresh tokens and device
    /// login.
    pub fn register_public_app(&self, client_id: &str, domain: &str) {
        self.lock().apps.insert(
            client_id.into(),
            App {
                secret: None,
                domain: domain.into(),
                revoked: false,
            },
        );
    }

    /// A refresh token for `user`, as a finished login would have left.
    pub fn issue_refresh_token(&self, client_id: &str, user: &str) -> String {
        let mut st = self.lock();
        st.counter += 1;
        let token = format!("rt-{}-{:x}", st.counter, rand_u64());
        st.refresh_tokens
            .insert(token.clone(), (client_id.into(), user.into()));
        token
    }

    /// Whether `token` is a currently valid refresh token.
    pub fn refresh_token_valid(&self, token: &str) -> bool {
        self.lock().refresh_tokens.contains_key(token.trim())
    }

    /// Lifetime of the access tokens issued from now on.
    pub fn set_lifetime(&self, secs: u64) {
        self.lock().lifetime_secs = secs;
    }

    /// Tokens from now on lack `tenant_domain` (the claim the loopback
    /// Dovecot compares with the login), which Dovecot answers with a
    /// *temporary* failure (`NO [UNAVAILABLE]`).
    pub fn omit_username_claim(&self, omit: bool) {
        self.lock().omit_username_claim = omit;
    }

    /// Down: every connection is accepted and closed unanswered.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// The app's secret no longer works (AADSTS7000222: expired).
    pub fn revoke_client(&self, client_id: &str) {
        if let Some(a) = self.lock().apps.get_mut(client_id) {
            a.revoked = true;
        }
    }

    /// The app's secret works again (a new one was put in place).
    pub fn restore_client(&self, client_id: &str) {
        if let Some(a) = self.lock().apps.get_mut(client_id) {
            a.revoked = false;
        }
    }

    /// Every refresh token of the app stops working (AADSTS70008).
    pub fn revoke_refresh_tokens(&self, client_id: &str) {
        self.lock()
            .refresh_tokens
            .retain(|_, (c, _)| c != client_id);
    }

    /// The next request gets this answer instead (status and JSON body).
    pub fn fail_next(&self, status: u16, body: &str) {
        self.lock().fail_next.push((status, body.into()));
    }

    /// The user signs in and approves the pending device code `user_code`.
    pub fn approve_device(&self, user_code: &str, user: &str) -> bool {
        let mut st = self.lock();
        match st.devices.values_mut().find(|d| d.user_code == user_code) {
            Some(d) => {
                d.approved_as = Some(user.into());
                true
            }
            None => false,
        }
    }

    /// The user codes waiting for sign-in.
    pub fn pending_user_codes(&self) -> Vec<String> {
        self.lock()
            .devices
            .values()
            .filter(|d| d.approved_as.is_none())
            .map(|d| d.user_code.clone())
            .collect()
    }

    /// Tokens issued so far with `grant_type` (`client_credentials`,
    /// `refresh_token`, `urn:ietf:params:oauth:grant-type:device_code`).
    pub fn issued(&self, grant_type: &str) -> usize {
        self.lock().issued.get(grant_type).copied().unwrap_or(0)
    }

    /// Every request to the token endpoint so far (answered or not).
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// An access token for `claims` (filled with iss/iat/nbf/exp when
    /// missing), signed like the issued ones: for tests that log in with a
    /// hand-made token.
    pub fn mint(&self, mut claims: serde_json::Value, lifetime_secs: i64) -> String {
        let now = now() as i64;
        let obj = claims.as_object_mut().unwrap();
        obj.entry("iss").or_insert(ISSUER.into());
        obj.entry("iat").or_insert(now.into());
        obj.entry("nbf").or_insert(now.into());
        obj.entry("exp").or_insert((now + lifetime_secs).into());
        sign_jwt(&self.key, &claims)
    }
}

impl Drop for TokenEmulator {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// `application/x-www-form-urlencoded` → pairs.
fn parse_form(body: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn entra_error(status: u16, error: &str, code: u32, text: &str) -> (u16, String) {
    let body = serde_json::json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {text} Trace ID: 00000000-0000-0000-0000-000000000000 Correlation ID: 00000000-0000-0000-0000-000000000000 Timestamp: 2026-12-01 00:00:00Z"),
        "error_codes": [code],
        "timestamp": "2026-12-01 00:00:00Z",
        "trace_id": "00000000-0000-0000-0000-000000000000",
        "correlation_id": "00000000-0000-0000-0000-000000000000",
    });
    (status, body.to_string())
}

async fn serve(mut stream: tokio::net::TcpStream, state: Arc<Mutex<State>>, key: Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, content_length) = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if state.lock().unwrap().down {
            return; // closed unanswered
        }
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            break (pos + 4, len);
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    while buf.len() < head_end + content_length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let body = String::from_utf8_lossy(&buf[head_end..head_end + content_length]).to_string();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let basic = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let b64 = v.trim().strip_prefix("Basic ")?;
        let decoded = data_encoding::BASE64.decode(b64.as_bytes()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((id.to_string(), secret.to_string()))
    });
    let (status, json) = answer(&state, &key, &method, &path, parse_form(&body), basic);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn answer(
    state: &Arc<Mutex<State>>,
    key: &[u8],
    method: &str,
    path: &str,
    mut form: HashMap<String, String>,
    basic: Option<(String, String)>,
) -> (u16, String) {
    let mut st = state.lock().unwrap();
    st.requests += 1;
    if !st.fail_next.is_empty() {
        return st.fail_next.remove(0);
    }
    if method != "POST" {
        return (405, r#"{"error":"invalid_request"}"#.into());
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let endpoint = match segments.as_slice() {
        [_tenant, "oauth2", "v2.0", e] => *e,
        _ => return (404, r#"{"error":"not_found"}"#.into()),
    };
    if let Some((id, secret)) = basic {
        form.entry("client_id".into()).or_insert(id);
        form.entry("client_secret".into()).or_insert(secret);
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let Some(app) = st.apps.get(&client_id).cloned() else {
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory."),
        );
    };
    let now = now();
    if endpoint == "devicecode" {
        if form.get("scope").is_none_or(|s| s.is_empty()) {
            return entra_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            );
        }
        st.counter += 1;
        let device_code = format!("dc-{}-{:x}", st.counter, rand_u64());
        let user_code = format!("LIA{:05}", st.counter);
        st.devices.insert(
            device_code.clone(),
            Device {
                client_id,
                user_code: user_code.clone(),
                expires_at: now + 900,
                approved_as: None,
                declined: false,
            },
        );
        let uri = "https://microsoft.com/devicelogin";
        return (
            200,
            serde_json::json!({
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": uri,
                "expires_in": 900,
                "interval": 1,
                "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
            })
            .to_string(),
        );
    }
    if endpoint != "token" {
        return (404, r#"{"error":"not_found"}"#.into());
    }
    // Client authentication: a confidential app must send its secret.
    if let Some(secret) = &app.secret {
        if form.get("client_secret") != Some(secret) {
            return entra_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.");
        }
    }
    if app.revoked {
        return entra_error(401, "invalid_client", 7000222, &format!("The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app."));
    }
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    let scope = form.get("scope").cloned().unwrap_or_default();
    let lifetime = st.lifetime_secs;
    let omit_claim = st.omit_username_claim;
    let claims_for = |user: Option<&str>| {
        let domain = user
            .and_then(|u| u.rsplit_once('@').map(|(_, d)| d.to_string()))
            .unwrap_or_else(|| app.domain.clone());
        let mut c = serde_json::json!({
            "iss": ISSUER,
            "aud": "https://outlook.office365.com",
            "iat": now, "nbf": now, "exp": now + lifetime,
            "appid": client_id,
            "tenant_domain": format!("@{domain}"),
        });
        match user {
            Some(u) => {
                c["sub"] = u.into();
                c["email"] = u.into();
                c["scp"] = "IMAP.AccessAsUser.All SMTP.Send".into();
            }
            None => {
                c["sub"] = format!("sp-{client_id}").into();
                c["roles"] = serde_json::json!(["IMAP.AccessAsApp", "SMTP.SendAsApp"]);
            }
        }
        if omit_claim {
            c.as_object_mut().unwrap().remove("tenant_domain");
        }
        c
    };
    let issue_refresh = |st: &mut State, user: &str| {
        st.counter += 1;
        let token = format!("rt-{}-{:x}", st.counter, rand_u64());
        st.refresh_tokens
            .insert(token.clone(), (client_id.clone(), user.to_string()));
        token
    };
    match grant.as_str() {
        "client_credentials" => {
            if app.secret.is_none() {
                return entra_error(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.");
            }
            if !scope.ends_with("/.default") {
                return entra_error(400, "invalid_scope", 1002012, &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."));
            }
            *st.issued.entry(grant.clone()).or_default() += 1;
            let jwt = sign_jwt(key, &claims_for(None));
            (
                200,
                serde_json::json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": jwt}).to_string(),
            )
        }
        "refresh_token" => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            let Some((owner, user)) = st.refresh_tokens.get(&presented).cloned() else {
                return entra_error(400, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.");
            };
            if owner != client_id {
                return entra_error(
                    400,
                    "invalid_grant",
                    70000,
                    "Provided grant is invalid or malformed.",
                );
            }
            // Rotation: the presented token is used up.
            st.refresh_tokens.remove(&presented);
            let rotated = issue_refresh(&mut st, &user);
            *st.issued.entry(grant.clone()).or_default() += 1;
            let jwt = sign_jwt(key, &claims_for(Some(&user)));
            (
                200,
                serde_json::json!({"token_type": "Bearer", "scope": scope, "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": jwt, "refresh_token": rotated}).to_string(),
            )
        }
        "urn:ietf:params:oauth:grant-type:device_code" => {
            let code = form.get("device_code").cloned().unwrap_or_default();
            let Some(device) = st.devices.get(&code).cloned() else {
                return entra_error(
                    400,
                    "bad_verification_code",
                    70019,
                    "Verification code is not recognized.",
                );
            };
            if device.client_id != client_id {
                return entra_error(
                    400,
                    "bad_verification_code",
                    70019,
                    "Verification code is not recognized.",
                );
            }
            if now > device.expires_at {
                return entra_error(
                    400,
                    "expired_token",
                    70020,
                    "The provided device code has expired.",
                );
            }
            if device.declined {
                return entra_error(
                    400,
                    "authorization_declined",
                    70018,
                    "The user declined the request.",
                );
            }
            let Some(user) = device.approved_as.clone() else {
                return entra_error(
                    400,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                );
            };
            st.devices.remove(&code);
            let rt = issue_refresh(&mut st, &user);
            *st.issued.entry(grant.clone()).or_default() += 1;
            let jwt = sign_jwt(key, &claims_for(Some(&user)));
            (
                200,
                serde_json::json!({"token_type": "Bearer", "scope": scope, "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": jwt, "refresh_token": rt}).to_string(),
            )
        }
        other => entra_error(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
    }
}
