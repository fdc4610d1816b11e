//! The loopback HTTP endpoint for scrapers and health checks:
//! `GET /metrics` (Prometheus text) and `GET /healthz` (JSON).
//!
//! Deliberately tiny and hand-written rather than a web framework: one
//! request per connection, only its request line matters, and the
//! connection is closed after the answer. A request head is bounded in
//! size ([`MAX_REQUEST_BYTES`]) and in time ([`READ_TIMEOUT`]), and at most
//! [`MAX_CONNECTIONS`] are served at once, so a slow or hostile client holds
//! one slot for a few seconds at most and never the daemon. The address is
//! loopback only; the configuration refuses any other.
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` | 200, `text/plain; version=0.0.4`, [`Metrics::render`] |
//! | `GET /healthz` | 200 `{"status":"ok",…}` when every inbox is connected and SMTP works, else 503 `{"status":"degraded",…}` |
//! | any other method on those paths | 405 with `Allow: GET` |
//! | any other path | 404 |
//! | malformed, too large, too slow | 400, 431, 408 |

use crate::metrics::{Metrics, METRICS};
use crate::oauth::OAuthClients;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Largest request head (request line and headers) read; larger gets 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its whole request head; slower gets 408.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the answer before the connection is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; further ones wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// The Prometheus text format's content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound (in use, or not a local address).
    #[error("cannot listen for HTTP (/metrics, /healthz) on {addr} (config key `http.listen`): {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What `/healthz` reports, in this field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// Inbox sessions connected now.
    pub imap_connected: u64,
    /// Inboxes configured.
    pub inboxes: u64,
    /// Whether the last SMTP attempt succeeded.
    pub smtp_ok: bool,
    /// Mails quarantined since start.
    pub quarantined: u64,
    /// Mails waiting to be sent.
    pub outbox_depth: u64,
    /// Each `[[oauth2]]` client: `"ok"` or why it has no fresh token (left
    /// out when none is configured).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub oauth: std::collections::BTreeMap<String, String>,
}

impl Health {
    /// Reads the gauges. Healthy means every configured inbox has a session
    /// and the last SMTP attempt succeeded.
    pub fn from_metrics(m: &Metrics, inboxes: usize) -> Health {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let imap_connected = g(&m.imap_connected);
        let inboxes = inboxes as u64;
        let smtp_ok = g(&m.smtp_ok) != 0;
        Health {
            status: if imap_connected >= inboxes && smtp_ok {
                "ok"
            } else {
                "degraded"
            },
            imap_connected,
            inboxes,
            smtp_ok,
            quarantined: g(&m.mails_quarantined),
            outbox_depth: g(&m.outbox_depth),
            oauth: Default::default(),
        }
    }

    /// Adds the token clients' states; any that is not `ok` degrades the
    /// whole (mail may still flow on a held token, but it will stop).
    pub fn with_oauth(mut self, clients: &OAuthClients) -> Health {
        for status in clients.statuses() {
            if !status.is_ok() {
                self.status = "degraded";
            }
            self.oauth.insert(status.client, status.state);
        }
        self
    }

    /// Whether `status` is `ok`.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// The part of a request that matters: its request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The path, without any query string.
    pub path: String,
}

/// Why a request head could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The head has not ended yet; read more.
    Incomplete,
    /// The head is longer than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The request line is not `METHOD /path HTTP/1.x`.
    Malformed,
}

/// Parses a request head from the bytes read so far. The head ends at the
/// first empty line; only its request line is looked at.
pub fn parse_head(buf: &[u8]) -> Result<Request, ParseError> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"));
    let Some(end) = end else {
        return Err(if buf.len() >= MAX_REQUEST_BYTES {
            ParseError::TooLarge
        } else {
            ParseError::Incomplete
        });
    };
    if end > MAX_REQUEST_BYTES {
        return Err(ParseError::TooLarge);
    }
    let line_end = buf[..end].iter().position(|&b| b == b'\n').unwrap_or(end);
    let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| ParseError::Malformed)?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed);
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(ParseError::Malformed);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
    })
}

/// An answer, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
        }
    }

    /// The reason phrase of the status.
    pub fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        }
    }

    /// The bytes on the wire: status line, headers, body. Every answer
    /// closes the connection.
    pub fn to_bytes(&self) -> Vec<u8> {
        let allow = if self.status == 405 {
            "Allow: GET\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len(),
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// Answers one request from `metrics`, with `inboxes` inboxes configured.
pub fn route(req: &Request, metrics: &Metrics, inboxes: usize) -> Response {
    route_with(req, metrics, inboxes, &OAuthClients::default())
}

/// [`route`], with the token clients' metrics and health.
pub fn route_with(
    req: &Request,
    metrics: &Metrics,
    inboxes: usize,
    oauth: &OAuthClients,
) -> Response {
    let known = matches!(req.path.as_str(), "/metrics" | "/healthz");
    if !known {
        return Response::text(404, "not found; try /metrics or /healthz");
    }
    if req.method != "GET" {
        return Response::text(405, "only GET is allowed");
    }
    if req.path == "/metrics" {
        return Response {
            status: 200,
            content_type: METRICS_CONTENT_TYPE,
            body: metrics.render() + &oauth.render_metrics(),
        };
    }
    let health = Health::from_metrics(metrics, inboxes).with_oauth(oauth);
    let mut body = serde_json::to_string(&health).expect("health serialises");
    body.push('\n');
    Response {
        status: if health.is_ok() { 200 } else { 503 },
        content_type: "application/json",
        body,
    }
}

/// Binds the listener. Done before the daemon starts its other tasks, so a
/// port in use stops start-up with a clear error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Time limits for one connection; tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    read: Duration,
    write: Duration,
}

const LIMITS: Limits = Limits {
    read: READ_TIMEOUT,
    write: WRITE_TIMEOUT,
};

/// Serves `listener` until `shutdown` turns true (or its sender goes away),
/// answering from the process's [`METRICS`] with `inboxes` inboxes
/// configured.
pub async fn serve(
    listener: TcpListener,
    inboxes: usize,
    oauth: OAuthClients,
    shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics and /healthz");
    }
    serve_with(listener, inboxes, oauth, &METRICS, LIMITS, shutdown).await;
}

async fn serve_with(
    listener: TcpListener,
    inboxes: usize,
    oauth: OAuthClients,
    metrics: &'static Metrics,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let oauth = oauth.clone();
                conns.spawn(async move {
                    handle(stream, inboxes, &oauth, metrics, limits).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    conns.shutdown().await;
}

/// Reads the head, bounded in size; `None` when the client went away.
async fn read_head(stream: &mut TcpStream) -> Option<Result<Request, ParseError>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let room = MAX_REQUEST_BYTES.saturating_sub(buf.len());
        if room == 0 {
            return Some(Err(ParseError::TooLarge));
        }
        let n = match stream.read(&mut chunk[..room.min(1024)]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        match parse_head(&buf) {
            Err(ParseError::Incomplete) => continue,
            r => return Some(r),
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    inboxes: usize,
    oauth: &OAuthClients,
    metrics: &Metrics,
    limits: Limits,
) {
    let response = match tokio::time::timeout(limits.read, read_head(&mut stream)).await {
        Ok(None) => return,
        Ok(Some(Ok(req))) => route_with(&req, metrics, inboxes, oauth),
        Ok(Some(Err(ParseError::TooLarge))) => Response::text(431, "request head too large"),
        Ok(Some(Err(_))) => Response::text(400, "expected `GET /path HTTP/1.1`"),
        Err(_) => Response::text(408, "request not received in time"),
    };
    let _ = tokio::time::timeout(limits.write, async {
        stream.write_all(&response.to_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn parses_the_request_line() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"),
            Ok(req("GET", "/metrics"))
        );
        assert_eq!(
            parse_head(b"GET /healthz?verbose=1 HTTP/1.0\r\n\r\n"),
            Ok(req("GET", "/healthz"))
        );
        // Bare LF line ends, as from `printf | nc`.
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1\nHost: x\n\n"),
            Ok(req("POST", "/metrics"))
        );
    }

    #[test]
    fn waits_for_the_end_of_the_head() {
        assert_eq!(parse_head(b""), Err(ParseError::Incomplete));
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\n"),
            Err(ParseError::Incomplete)
        );
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Err(ParseError::Incomplete)
        );
    }

    #[test]
    fn refuses_oversized_and_malformed_heads() {
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX: {}",
            "a".repeat(MAX_REQUEST_BYTES)
        );
        assert_eq!(parse_head(big.as_bytes()), Err(ParseError::TooLarge));
        let big_done = format!("{big}\r\n\r\n");
        assert_eq!(parse_head(big_done.as_bytes()), Err(ParseError::TooLarge));
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(bad),
                Err(ParseError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn routes_metrics_health_and_the_rest() {
        let m = Metrics::default();
        crate::metrics::add(&m.mails_command, 2);
        let r = route(&req("GET", "/metrics"), &m, 1);
        assert_eq!(r.status, 200);
        assert!(r.content_type.starts_with("text/plain; version=0.0.4"));
        assert!(r
            .body
            .contains("liaison_mails_total{class=\"command\"} 2\n"));

        assert_eq!(route(&req("GET", "/"), &m, 1).status, 404);
        assert_eq!(route(&req("GET", "/metrics/x"), &m, 1).status, 404);
        assert_eq!(route(&req("POST", "/metrics"), &m, 1).status, 405);
        assert_eq!(route(&req("HEAD", "/healthz"), &m, 1).status, 405);
        let bytes = String::from_utf8(route(&req("PUT", "/healthz"), &m, 1).to_bytes()).unwrap();
        assert!(
            bytes.starts_with("HTTP/1.1 405 Method Not Allowed\r\n")
                && bytes.contains("\r\nAllow: GET\r\n"),
            "{bytes}"
        );
    }

    #[test]
    fn health_is_ok_only_with_every_inbox_and_smtp() {
        let m = Metrics::default();
        crate::metrics::set(&m.smtp_ok, 1);
        crate::metrics::set(&m.imap_connected, 2);
        crate::metrics::set(&m.outbox_depth, 3);
        crate::metrics::add(&m.mails_quarantined, 1);
        let r = route(&req("GET", "/healthz"), &m, 2);
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "application/json");
        assert_eq!(
            r.body,
            "{\"status\":\"ok\",\"imap_connected\":2,\"inboxes\":2,\"smtp_ok\":true,\"quarantined\":1,\"outbox_depth\":3}\n"
        );
        let r = route(&req("GET", "/healthz"), &m, 3);
        assert_eq!(r.status, 503);
        assert!(r.body.contains("\"status\":\"degraded\""), "{}", r.body);
        crate::metrics::set(&m.smtp_ok, 0);
        let h = Health::from_metrics(&m, 2);
        assert!(!h.is_ok() && !h.smtp_ok);
    }

    #[test]
    fn response_bytes_have_length_and_close() {
        let r = Response::text(404, "nope");
        let s = String::from_utf8(r.to_bytes()).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(s.contains("\r\nContent-Length: 5\r\n"), "{s}");
        assert!(s.contains("\r\nConnection: close\r\n"), "{s}");
        assert!(s.ends_with("\r\n\r\nnope\n"), "{s}");
    }

    /// A metrics instance the server under test can borrow for ever.
    fn leaked_metrics() -> &'static Metrics {
        let m = Box::leak(Box::new(Metrics::default()));
        crate::metrics::set(&m.smtp_ok, 1);
        m
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_over_tcp_bounds_slow_and_large_clients_and_stops() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let limits = Limits {
            read: Duration::from_millis(300),
            write: Duration::from_millis(300),
        };
        let server = tokio::spawn(serve_with(
            listener,
            0,
            OAuthClients::default(),
            leaked_metrics(),
            limits,
            stop_rx,
        ));

        let ok = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\"outbox_depth\":0}\n"), "{ok}");
        let metrics = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            metrics.contains("Content-Type: text/plain; version=0.0.4"),
            "{metrics}"
        );
        assert!(
            metrics.contains("# TYPE liaison_mails_total counter"),
            "{metrics}"
        );

        // A client that never finishes its head is answered 408 and cut off.
        let started = std::time::Instant::now();
        let slow = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost:").await;
        assert!(slow.starts_with("HTTP/1.1 408 "), "{slow}");
        assert!(started.elapsed() < Duration::from_secs(3));

        // A head that does not end within the limit is refused.
        let mut junk = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        junk.resize(MAX_REQUEST_BYTES, b'a');
        let big = exchange(addr, &junk).await;
        assert!(big.starts_with("HTTP/1.1 431 "), "{big}");

        let bad = exchange(addr, b"HELLO\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("the server stops on shutdown")
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }
}
