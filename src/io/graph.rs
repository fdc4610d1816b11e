//! The Microsoft Graph client for GDAP relationships (shell).
//!
//! Behind a small interface, [`GdapApi`], so the daemon and the tests use
//! the same calls whether the other end is `graph.microsoft.com` or the
//! local emulator the test suite starts. The bearer token comes from a
//! [`BearerTokenSource`] (the OAuth2 client-credentials client); a token
//! Graph refuses with 401 is dropped and fetched once more before the call
//! fails. 429 answers are returned as [`GraphError::Throttled`] with
//! Graph's `Retry-After`, so the caller's schedule honours it.
//!
//! HTTP is deliberately minimal: one request per connection
//! (`Connection: close`), HTTP/1.1 over rustls (or plain TCP to a loopback
//! address, for the emulator), bodies read up to [`MAX_RESPONSE_BYTES`],
//! `Content-Length` or chunked, every step under a timeout. The token is
//! never logged and never part of an error.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use liaison_core::model::gdap::{
    AccessAssignmentBody, CreateRelationshipBody, GraphErrorBody, GraphRelationship, RequestAction,
};

/// Graph's address when the config names none.
pub const DEFAULT_BASE_URL: &str = "https://graph.microsoft.com/v1.0";
/// Largest answer read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Time for one whole request (connect, send, answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Used when a 429 carries no usable `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Where bearer tokens come from: the OAuth2 client (client credentials,
/// scope `https://graph.microsoft.com/.default`).
pub trait BearerTokenSource: Send + Sync {
    /// A token valid now (cached or fresh).
    fn bearer_token(&self) -> BoxFuture<'_, Result<String, String>>;
    /// Graph refused the token: forget it, so the next call fetches anew.
    fn invalidate(&self);
}

/// What a Graph call can fail with. Messages are Graph's own words and the
/// call; never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// 401 twice: the token (fresh as well) was refused.
    #[error("Microsoft Graph refused the token for {call} (401 {code}: {message}); check the app registration's client secret and tenant")]
    Unauthorized {
        /// The call.
        call: String,
        /// Graph's error code.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// 403: the app lacks the permission (or the service principal).
    #[error("Microsoft Graph denied {call} (403 {code}: {message}); the app needs the application permission DelegatedAdminRelationship.ReadWrite.All with admin consent")]
    Forbidden {
        /// The call.
        call: String,
        /// Graph's error code.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// 404.
    #[error("Microsoft Graph has no such relationship ({call}: 404 {message})")]
    NotFound {
        /// The call.
        call: String,
        /// Graph's message.
        message: String,
    },
    /// 409: e.g. a displayName already used.
    #[error("Microsoft Graph reports a conflict for {call} (409 {code}: {message})")]
    Conflict {
        /// The call.
        call: String,
        /// Graph's error code.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// 400: Graph refused the request as asked.
    #[error("Microsoft Graph refused {call} (400 {code}: {message})")]
    BadRequest {
        /// The call.
        call: String,
        /// Graph's error code.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// 429: try again after this long.
    #[error("Microsoft Graph is throttling {call}; retry after {} s", retry_after.as_secs())]
    Throttled {
        /// The call.
        call: String,
        /// Graph's `Retry-After`.
        retry_after: Duration,
    },
    /// 5xx or another status.
    #[error("Microsoft Graph answered {status} to {call}: {message}")]
    Server {
        /// The call.
        call: String,
        /// The HTTP status.
        status: u16,
        /// Graph's message, or the start of the body.
        message: String,
    },
    /// Connecting, TLS, a timeout, or an answer that is not HTTP.
    #[error("cannot reach Microsoft Graph at {base} for {call}: {reason}")]
    Transport {
        /// The base URL.
        base: String,
        /// The call.
        call: String,
        /// What went wrong.
        reason: String,
    },
    /// No token could be had.
    #[error("no token for Microsoft Graph ({call}): {reason}")]
    Token {
        /// The call.
        call: String,
        /// The token source's reason (never the secret).
        #[source]
        reason: TokenFailure,
    },
    /// A 2xx answer whose body is not what the API reference describes.
    #[error("Microsoft Graph's answer to {call} is not what the API describes: {reason}")]
    BadResponse {
        /// The call.
        call: String,
        /// Why.
        reason: String,
    },
}

/// The token source's reason, as an error of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenFailure(pub String);

impl GraphError {
    /// Worth trying again later (Graph down, throttling, a 5xx), as opposed
    /// to a refusal that will not change by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            GraphError::Throttled { .. }
            | GraphError::Transport { .. }
            | GraphError::Token { .. } => true,
            GraphError::Server { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// The GDAP calls Liaison makes.
pub trait GdapApi: Send + Sync {
    /// `POST /tenantRelationships/delegatedAdminRelationships`.
    fn create_relationship<'a>(
        &'a self,
        body: &'a CreateRelationshipBody,
    ) -> BoxFuture<'a, Result<GraphRelationship, GraphError>>;
    /// `GET …?$filter=displayName eq '…'`: finds the request an earlier
    /// attempt made (a retry after a crash, or after a lost answer).
    fn find_by_display_name<'a>(
        &'a self,
        display_name: &'a str,
    ) -> BoxFuture<'a, Result<Option<GraphRelationship>, GraphError>>;
    /// `GET …/{id}`.
    fn get_relationship<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<GraphRelationship, GraphError>>;
    /// `POST …/{id}/requests {"action": …}`.
    fn request_action<'a>(
        &'a self,
        id: &'a str,
        action: RequestAction,
    ) -> BoxFuture<'a, Result<(), GraphError>>;
    /// `POST …/{id}/accessAssignments`; answers the assignment's id.
    fn create_access_assignment<'a>(
        &'a self,
        id: &'a str,
        body: &'a AccessAssignmentBody,
    ) -> BoxFuture<'a, Result<String, GraphError>>;
}

/// Where Graph is, parsed from `base_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// TLS (https) or plain TCP (http, loopback only).
    pub tls: bool,
    /// Host name or IP.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path prefix without a trailing `/` (`/v1.0`).
    pub path: String,
    /// The URL as configured, for messages.
    pub text: String,
}

impl BaseUrl {
    /// Parses `https://host[:port]/path` or, for loopback addresses only
    /// (the emulator), `http://127.0.0.1:port/path`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{url}` is not an https:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("`{url}` has no usable host"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("`{url}` has a bad port"))?,
            ),
            _ => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        if !tls {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "`{url}`: plain http is only allowed to a loopback address (a local emulator)"
                ));
            }
        }
        Ok(BaseUrl {
            tls,
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
            text: url.to_string(),
        })
    }
}

/// The real client.
pub struct GraphClient {
    base: BaseUrl,
    tokens: Arc<dyn BearerTokenSource>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

const RELATIONSHIPS: &str = "/tenantRelationships/delegatedAdminRelationships";

impl GraphClient {
    /// A client for `base`, with tokens from `tokens`, trusting the
    /// compiled-in Mozilla roots plus `extra_roots` (PEM, for a private CA).
    pub fn new(
        base: BaseUrl,
        tokens: Arc<dyn BearerTokenSource>,
        extra_roots: Option<&[u8]>,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = extra_roots {
            let mut rd = pem;
            for cert in rustls_pemfile_certs(&mut rd)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate: {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(GraphClient {
            base,
            tokens,
            tls: Arc::new(tls),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// Sets the time one request may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A call with one retry on 401 (with a fresh token).
    async fn call(
        &self,
        call: &str,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, GraphError> {
        let mut refused = None;
        for _ in 0..2 {
            let token = self
                .tokens
                .bearer_token()
                .await
                .map_err(|reason| GraphError::Token {
                    call: call.to_string(),
                    reason: TokenFailure(reason),
                })?;
            let answer = tokio::time::timeout(
                self.timeout,
                self.exchange(method, path, &token, body.as_deref()),
            )
            .await
            .map_err(|_| self.transport(call, format!("no answer within {:?}", self.timeout)))?
            .map_err(|reason| self.transport(call, reason))?;
            if answer.status == 401 {
                self.tokens.invalidate();
                refused = Some(answer);
                continue;
            }
            return Ok(answer);
        }
        let answer = refused.expect("set when the loop ran out");
        let (code, message) = error_parts(&answer.body);
        Err(GraphError::Unauthorized {
            call: call.to_string(),
            code,
            message,
        })
    }

    fn transport(&self, call: &str, reason: String) -> GraphError {
        GraphError::Transport {
            base: self.base.text.clone(),
            call: call.to_string(),
            reason,
        }
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, String> {
        let tcp = TcpStream::connect((self.base.host.as_str(), self.base.port))
            .await
            .map_err(|e| format!("connect to {}:{}: {e}", self.base.host, self.base.port))?;
        let _ = tcp.set_nodelay(true);
        let head = request_head(&self.base, method, path, token, body.map(<[u8]>::len));
        if self.base.tls {
            let name = rustls::pki_types::ServerName::try_from(self.base.host.clone())
                .map_err(|e| format!("bad host name: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", self.base.host))?;
            send_and_read(stream, &head, body).await
        } else {
            send_and_read(tcp, &head, body).await
        }
    }

    fn path(&self, tail: &str) -> String {
        format!("{}{RELATIONSHIPS}{tail}", self.base.path)
    }
}

fn rustls_pemfile_certs(
    pem: &mut &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read the CA file: {e}"))
}

fn request_head(
    base: &BaseUrl,
    method: &str,
    path: &str,
    token: &str,
    body_len: Option<usize>,
) -> Vec<u8> {
    let host = if (base.tls && base.port == 443) || (!base.tls && base.port == 80) {
        base.host.clone()
    } else {
        format!("{}:{}", base.host, base.port)
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Accept: application/json\r\nUser-Agent: liaison/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(n) = body_len {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {n}\r\n"
        ));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

async fn send_and_read<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &[u8],
    body: Option<&[u8]>,
) -> Result<Answer, String> {
    stream.write_all(head).await.map_err(|e| e.to_string())?;
    if let Some(b) = body {
        stream.write_all(b).await.map_err(|e| e.to_string())?;
    }
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // rustls reports a peer that closes without close_notify as an
            // error; the answer is complete when its framing says so.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.to_string()),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE_BYTES + 16 * 1024 {
            return Err(format!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        if let Some(done) = parse_answer(&raw, false)? {
            return Ok(done);
        }
    }
    parse_answer(&raw, true)?.ok_or_else(|| "the connection closed mid-answer".to_string())
}

/// Parses a whole answer; `Ok(None)` while more bytes are needed.
fn parse_answer(raw: &[u8], at_eof: bool) -> Result<Option<Answer>, String> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        if at_eof {
            return Err("the answer is not HTTP".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "bad status line `{}`",
                status_line.chars().take(60).collect::<String>()
            )
        })?;
    let mut length = None;
    let mut chunked = false;
    let mut retry_after = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "retry-after" => retry_after = value.parse::<u64>().ok().map(Duration::from_secs),
            _ => {}
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(b) => b,
            None if at_eof => return Err("the chunked answer ended early".into()),
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if rest.len() < n {
            if at_eof {
                return Err("the answer ended before its Content-Length".into());
            }
            return Ok(None);
        }
        rest[..n].to_vec()
    } else if at_eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(format!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
    }
    Ok(Some(Answer {
        status,
        retry_after,
        body,
    }))
}

/// Decodes a chunked body; `Ok(None)` while incomplete.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..size]);
        if out.len() > MAX_RESPONSE_BYTES {
            return Err(format!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        rest = &rest[size + 2..];
    }
}

/// Graph's error code and message, or the start of a body that is none.
fn error_parts(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<GraphErrorBody>(body) {
        Ok(e) => (clean(&e.error.code), clean(&e.error.message)),
        Err(_) => (
            "unknown".into(),
            clean(&String::from_utf8_lossy(&body[..body.len().min(200)])),
        ),
    }
}

/// At most 300 characters, no control characters: Graph's words go into
/// logs and partner mails.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Maps a non-2xx answer to its error.
fn status_error(call: &str, answer: &Answer) -> GraphError {
    let (code, message) = error_parts(&answer.body);
    let call = call.to_string();
    match answer.status {
        400 => GraphError::BadRequest {
            call,
            code,
            message,
        },
        403 => GraphError::Forbidden {
            call,
            code,
            message,
        },
        404 => GraphError::NotFound { call, message },
        409 => GraphError::Conflict {
            call,
            code,
            message,
        },
        429 => GraphError::Throttled {
            call,
            retry_after: answer.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        },
        status => GraphError::Server {
            call,
            status,
            message,
        },
    }
}

fn expect_json<T: DeserializeOwned>(call: &str, answer: &Answer) -> Result<T, GraphError> {
    if !(200..300).contains(&answer.status) {
        return Err(status_error(call, answer));
    }
    serde_json::from_slice(&answer.body).map_err(|e| GraphError::BadResponse {
        call: call.to_string(),
        reason: e.to_string(),
    })
}

fn json_body<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serialises")
}

/// Percent-encodes a query value (OData `$filter`).
fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks that an id Graph gave us can be put into a path as it is.
fn path_id(call: &str, id: &str) -> Result<(), GraphError> {
    if id.is_empty()
        || id.len() > 200
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(GraphError::BadResponse {
            call: call.to_string(),
            reason: "the relationship id is not of letters, digits and dashes".into(),
        });
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Collection<T> {
    value: Vec<T>,
}

#[derive(serde::Deserialize)]
struct WithId {
    id: String,
}

impl GdapApi for GraphClient {
    fn create_relationship<'a>(
        &'a self,
        body: &'a CreateRelationshipBody,
    ) -> BoxFuture<'a, Result<GraphRelationship, GraphError>> {
        Box::pin(async move {
            let call = "create delegatedAdminRelationship";
            let answer = self
                .call(call, "POST", &self.path(""), Some(json_body(body)))
                .await?;
            expect_json(call, &answer)
        })
    }

    fn find_by_display_name<'a>(
        &'a self,
        display_name: &'a str,
    ) -> BoxFuture<'a, Result<Option<GraphRelationship>, GraphError>> {
        Box::pin(async move {
            let call = "list delegatedAdminRelationships";
            // OData string literals double a single quote.
            let filter = format!("displayName eq '{}'", display_name.replace('\'', "''"));
            let path = self.path(&format!("?$filter={}", encode_query(&filter)));
            let answer = self.call(call, "GET", &path, None).await?;
            let list: Collection<GraphRelationship> = expect_json(call, &answer)?;
            Ok(list
                .value
                .into_iter()
                .find(|r| r.display_name == display_name))
        })
    }

    fn get_relationship<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<GraphRelationship, GraphError>> {
        Box::pin(async move {
            let call = "get delegatedAdminRelationship";
            path_id(call, id)?;
            let answer = self
                .call(call, "GET", &self.path(&format!("/{id}")), None)
                .await?;
            expect_json(call, &answer)
        })
    }

    fn request_action<'a>(
        &'a self,
        id: &'a str,
        action: RequestAction,
    ) -> BoxFuture<'a, Result<(), GraphError>> {
        Box::pin(async move {
            let call = match action {
                RequestAction::LockForApproval => "lockForApproval request",
                RequestAction::Terminate => "terminate request",
            };
            path_id(call, id)?;
            let body = json_body(&serde_json::json!({ "action": action }));
            let answer = self
                .call(
                    call,
                    "POST",
                    &self.path(&format!("/{id}/requests")),
                    Some(body),
                )
                .await?;
            let _: WithId = expect_json(call, &answer)?;
            Ok(())
        })
    }

    fn create_access_assignment<'a>(
        &'a self,
        id: &'a str,
        body: &'a AccessAssignmentBody,
    ) -> BoxFuture<'a, Result<String, GraphError>> {
        Box::pin(async move {
            let call = "create delegatedAdminAccessAssignment";
            path_id(call, id)?;
            let answer = self
                .call(
                    call,
                    "POST",
                    &self.path(&format!("/{id}/accessAssignments")),
                    Some(json_body(body)),
                )
                .await?;
            let created: WithId = expect_json(call, &answer)?;
            Ok(created.id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("https://graph.microsoft.com/v1.0").unwrap();
        assert_eq!(
            (b.tls, b.host.as_str(), b.port, b.path.as_str()),
            (true, "graph.microsoft.com", 443, "/v1.0")
        );
        let e = BaseUrl::parse("http://127.0.0.1:9000/v1.0/").unwrap();
        assert_eq!((e.tls, e.port, e.path.as_str()), (false, 9000, "/v1.0"));
        assert!(BaseUrl::parse("http://graph.microsoft.com/v1.0").is_err());
        assert!(BaseUrl::parse("ftp://x/").is_err());
        assert!(BaseUrl::parse("https://user@evil/").is_err());
    }

    #[test]
    fn answers_parse_with_length_or_chunks() {
        let a = parse_answer(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\n{}",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (a.status, a.retry_after, a.body.as_slice()),
            (429, Some(Duration::from_secs(7)), &b"{}"[..])
        );
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_answer(raw, false).unwrap().unwrap().body,
            b"{\"a\":1}"
        );
        assert!(parse_answer(&raw[..raw.len() - 6], false)
            .unwrap()
            .is_none());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true).is_err());
        assert!(parse_answer(b"garbage", true).is_err());
    }

    #[test]
    fn graph_errors_are_read_and_cleaned() {
        let body = br#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges\r\nto complete the operation."}}"#;
        assert_eq!(
            error_parts(body),
            (
                "Authorization_RequestDenied".into(),
                "Insufficient privilegesto complete the operation.".into()
            )
        );
        let e = status_error(
            "x",
            &Answer {
                status: 429,
                retry_after: None,
                body: vec![],
            },
        );
        assert_eq!(
            e,
            GraphError::Throttled {
                call: "x".into(),
                retry_after: DEFAULT_RETRY_AFTER
            }
        );
        assert!(e.is_transient());
        assert!(!status_error(
            "x",
            &Answer {
                status: 409,
                retry_after: None,
                body: vec![]
            }
        )
        .is_transient());
    }

    #[test]
    fn the_token_is_only_in_the_authorization_header() {
        let b = BaseUrl::parse("https://graph.microsoft.com/v1.0").unwrap();
        let head =
            String::from_utf8(request_head(&b, "GET", "/v1.0/x", "SECRET-TOKEN", None)).unwrap();
        assert!(head.contains("\r\nAuthorization: Bearer SECRET-TOKEN\r\n"));
        assert_eq!(head.matches("SECRET-TOKEN").count(), 1);
        assert!(head.contains("\r\nHost: graph.microsoft.com\r\n"));
    }
}
