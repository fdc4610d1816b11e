//! HTTP on hyper and axum: the loopback endpoint for scrapers and health
//! checks (`GET /metrics`, `GET /healthz`), and the connection handling the
//! public landing page ([`crate::io::web`]) shares with it.
//!
//! hyper parses HTTP/1.1; what this module adds is the policy around it.
//! A request head is bounded in size ([`MAX_REQUEST_BYTES`], 431 past it)
//! and in time ([`ConnLimits::head_timeout`], 408: hyper's own header
//! timeout would close the connection without an answer), a request is
//! bounded in time as a whole ([`ConnLimits::request_timeout`], 408), and
//! at most [`ConnLimits::max_connections`] connections are served at once.
//! Every connection is its own task, so idle or slow clients wait for their
//! own timeout and never delay another request: `/healthz` answers at once
//! with dozens of idle connections open (the hand-written server this
//! replaces served 16 at a time, so 16 idle ones delayed it by 5 s).
//!
//! The metrics address is loopback only; the configuration refuses any
//! other.
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` (or `HEAD`) | 200, `text/plain; version=0.0.4`, [`Metrics::render`] |
//! | `GET /healthz` (or `HEAD`) | 200 `{"status":"ok",…}` when every inbox is connected and SMTP works, else 503 `{"status":"degraded",…}`; with a shared store, every inbox *this instance holds the lease of*, and `"leases": [...]` names them |
//! | any other method on those paths | 405 with `Allow: GET,HEAD` |
//! | any other path | 404 |
//! | malformed, too large, too slow | 400, 431, 408 |

use crate::metrics::{Metrics, METRICS};
use crate::oauth::OAuthClients;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Largest request head (request line and headers) read; larger gets 431.
/// (hyper's smallest read buffer, so the limit is exact.)
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Errors starting an HTTP listener.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound (in use, or not a local address).
    #[error("cannot listen for HTTP ({what}) on {addr} (config key `{key}`): {source}")]
    Bind {
        /// What the listener serves.
        what: &'static str,
        /// The config key that names the address.
        key: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Bounds on one listener's connections; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time a client has to send its first request head; slower gets 408.
    pub head_timeout: Duration,
    /// Time one request may take as a whole, its body included; slower
    /// gets 408.
    pub request_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's
    /// backlog.
    pub max_connections: usize,
    /// Whether a connection may carry more than one request.
    pub keep_alive: bool,
    /// A connection is closed (after its current request) this long after
    /// it was opened, so keep-alive cannot hold a slot for ever.
    pub max_lifetime: Duration,
}

/// The metrics endpoint's limits: one request per connection, as a
/// scraper or `curl` sends it.
pub const METRICS_LIMITS: ConnLimits = ConnLimits {
    head_timeout: Duration::from_secs(5),
    request_timeout: Duration::from_secs(5),
    max_connections: 256,
    keep_alive: false,
    max_lifetime: Duration::from_secs(30),
};

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
    /// With a store shared by several instances: the leases this one
    /// holds (`inbox/<name>`, `sweep`, `graph`); left out with sled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases: Option<Vec<String>>,
}

impl Health {
    /// Reads the gauges. Healthy means every configured inbox has a session
    /// and the last SMTP attempt succeeded.
    pub fn from_metrics(m: &Metrics, inboxes: usize) -> Health {
        let imap_connected = crate::metrics::get(&m.imap_connected);
        let inboxes = inboxes as u64;
        let smtp_ok = crate::metrics::get(&m.smtp_ok) != 0;
        Health {
            status: if imap_connected >= inboxes && smtp_ok {
                "ok"
            } else {
                "degraded"
            },
            imap_connected,
            inboxes,
            smtp_ok,
            quarantined: m.quarantined.get(),
            outbox_depth: crate::metrics::get(&m.outbox_depth),
            oauth: Default::default(),
            leases: None,
        }
    }

    /// With a shared store: names the leases held, and healthy means a
    /// session for every inbox this instance owns (another instance
    /// watches the rest; an instance that owns none is a healthy standby).
    pub fn with_leases(mut self, held: &crate::daemon::leases::HeldLeases) -> Health {
        let owned = held.inboxes() as u64;
        self.status = if self.imap_connected >= owned && self.smtp_ok {
            "ok"
        } else {
            "degraded"
        };
        self.leases = Some(held.names());
        self
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

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}

/// The `/metrics` and `/healthz` routes over `metrics`, with `inboxes`
/// inboxes configured.
pub fn metrics_router(metrics: &'static Metrics, inboxes: usize) -> Router {
    metrics_router_with(metrics, inboxes, OAuthClients::default())
}

/// [`metrics_router`] with the `[[oauth2]]` clients' metrics
/// (`liaison_oauth_*`) and their state in `/healthz`.
pub fn metrics_router_with(
    metrics: &'static Metrics,
    inboxes: usize,
    oauth: OAuthClients,
) -> Router {
    metrics_router_shared(metrics, inboxes, oauth, None)
}

/// [`metrics_router_with`] for an instance that shares its store: `/healthz`
/// names the leases in `leases` and expects sessions for those inboxes only.
pub fn metrics_router_shared(
    metrics: &'static Metrics,
    inboxes: usize,
    oauth: OAuthClients,
    leases: Option<Arc<crate::daemon::leases::HeldLeases>>,
) -> Router {
    let for_health = oauth.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                    metrics.render() + &oauth.render_metrics(),
                )
            }),
        )
        .route(
            "/healthz",
            get(move || async move {
                let mut health = Health::from_metrics(metrics, inboxes);
                if let Some(held) = &leases {
                    health = health.with_leases(held);
                }
                let health = health.with_oauth(&for_health);
                let mut body = serde_json::to_string(&health).expect("health serialises");
                body.push('\n');
                let status = if health.is_ok() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, [(header::CONTENT_TYPE, "application/json")], body)
            }),
        )
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found; try /metrics or /healthz") })
        .method_not_allowed_fallback(|| async {
            text(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed")
        })
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            },
        ))
}

/// Binds a listener. Done before the daemon starts its other tasks, so a
/// port in use stops start-up with a clear error.
pub async fn bind(
    addr: SocketAddr,
    what: &'static str,
    key: &'static str,
) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind {
            what,
            key,
            addr,
            source,
        })
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` turns
/// true (or its sender goes away), answering from the process's
/// [`METRICS`] with `inboxes` inboxes configured (and, with a shared
/// store, the leases this instance holds).
pub async fn serve(
    listener: TcpListener,
    inboxes: usize,
    oauth: OAuthClients,
    leases: Option<Arc<crate::daemon::leases::HeldLeases>>,
    shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics and /healthz");
    }
    serve_router(
        listener,
        metrics_router_shared(&METRICS, inboxes, oauth, leases),
        METRICS_LIMITS,
        None,
        shutdown,
    )
    .await;
}

/// Serves `app` on `listener` (over TLS when `tls` is given) within
/// `limits`, until `shutdown` turns true or its sender goes away. Each
/// request carries the peer's address as [`ConnectInfo<SocketAddr>`].
/// On shutdown every connection finishes the request in hand (up to two
/// seconds) and the function returns once all are closed.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => text(StatusCode::REQUEST_TIMEOUT, "request not received in time"),
            }
        },
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let tls = tls.clone();
                let stop = shutdown.clone();
                conns.spawn(async move {
                    match tls {
                        None => serve_io(stream, peer, app, limits, stop).await,
                        Some(acceptor) => {
                            // The handshake is part of the head's time.
                            match tokio::time::timeout(limits.head_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => serve_io(s, peer, app, limits, stop).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                    }
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
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// One connection: hyper's HTTP/1.1 over `io`, with the head deadline.
async fn serve_io<S>(
    io: S,
    peer: SocketAddr,
    app: Router,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head_seen = Arc::new(AtomicBool::new(false));
    let io = HeadDeadline {
        inner: io,
        deadline: Box::pin(tokio::time::sleep(limits.head_timeout)),
        head_seen: head_seen.clone(),
        expired: false,
    };
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            head_seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            async move { tower::Service::call(&mut app, req).await }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        // Our own deadline answers the first head with 408; hyper's closes
        // idle keep-alive connections between requests.
        .header_read_timeout(limits.head_timeout + Duration::from_secs(1))
        .keep_alive(limits.keep_alive)
        // `Content-Type`, as the hand-written server wrote and tools that
        // match header lines expect; HTTP itself does not care.
        .title_case_headers(true)
        .max_buf_size(MAX_REQUEST_BYTES);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    let lifetime = tokio::time::sleep(limits.max_lifetime);
    tokio::pin!(lifetime);
    let hard_stop = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(hard_stop);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
                hard_stop.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(2));
            }
            _ = &mut lifetime, if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
                hard_stop.as_mut().reset(tokio::time::Instant::now() + limits.request_timeout);
            }
            _ = &mut hard_stop, if stopping => return,
        }
    }
}

/// The answer to a client that did not send its first request head in
/// time.
const TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 29\r\nConnection: close\r\n\r\nrequest not received in time\n";

/// A stream that answers 408 and ends when the first request head has not
/// arrived by its deadline. hyper's own header timeout closes the
/// connection silently; a client (or a load balancer's log) should see why.
struct HeadDeadline<S> {
    inner: S,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Set by the service when hyper hands it a request: the head is in.
    head_seen: Arc<AtomicBool>,
    expired: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeadDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        if this.head_seen.load(Ordering::Relaxed) || this.deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.expired = true;
        // Best effort: a fresh connection's send buffer takes these bytes
        // whole; if it does not, the client only misses the reason.
        let _ = Pin::new(&mut this.inner).poll_write(cx, TIMEOUT_RESPONSE);
        let _ = Pin::new(&mut this.inner).poll_flush(cx);
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A metrics instance the server under test can borrow for ever.
    fn leaked_metrics() -> &'static Metrics {
        Box::leak(Box::new(Metrics::default()))
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn start(
        metrics: &'static Metrics,
        inboxes: usize,
        limits: ConnLimits,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "test", "test")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve_router(
            listener,
            metrics_router(metrics, inboxes),
            limits,
            None,
            stop_rx,
        ));
        (addr, stop_tx, server)
    }

    const SHORT: ConnLimits = ConnLimits {
        head_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        max_connections: 64,
        keep_alive: false,
        max_lifetime: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn routes_metrics_health_and_the_rest() {
        let m = leaked_metrics();
        crate::metrics::add(&m.mails_command, 2);
        let (addr, stop, server) = start(m, 1, SHORT).await;
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("\r\nContent-Type: text/plain; version=0.0.4"),
            "{r}"
        );
        assert!(r.contains("\r\nCache-Control: no-store"), "{r}");
        assert!(r.contains("\r\nConnection: close"), "{r}");
        assert!(
            r.contains("liaison_mails_total{class=\"command\"} 2\n"),
            "{r}"
        );
        // HTTP/1.0 and a query string.
        let r = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");

        for (req, status) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "404 Not Found"),
            (b"GET /metrics/x HTTP/1.1\r\n\r\n", "404 Not Found"),
            (b"GET /metrics/../admin HTTP/1.1\r\n\r\n", "404 Not Found"),
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                "405 Method Not Allowed",
            ),
            (b"PUT /healthz HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
            (b"nonsense\r\n\r\n", "400 Bad Request"),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", "400 Bad Request"),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                "400 Bad Request",
            ),
        ] {
            let r = exchange(addr, req).await;
            assert!(
                r.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{:?} -> {r}",
                String::from_utf8_lossy(req)
            );
        }
        let r = exchange(addr, b"PUT /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.contains("\r\nAllow: GET,HEAD\r\n"), "{r}");
        // HEAD is GET without the body.
        let r = exchange(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
        stop.send(true).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn health_is_ok_only_with_every_inbox_and_smtp() {
        let m = leaked_metrics();
        crate::metrics::set(&m.smtp_ok, 1);
        crate::metrics::set(&m.imap_connected, 2);
        crate::metrics::set(&m.outbox_depth, 3);
        m.quarantined.inc();
        let h = Health::from_metrics(m, 2);
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            "{\"status\":\"ok\",\"imap_connected\":2,\"inboxes\":2,\"smtp_ok\":true,\"quarantined\":1,\"outbox_depth\":3}"
        );
        let (addr, stop, server) = start(m, 2, SHORT).await;
        let r = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("\r\nContent-Type: application/json"), "{r}");
        assert!(
            r.ends_with("{\"status\":\"ok\",\"imap_connected\":2,\"inboxes\":2,\"smtp_ok\":true,\"quarantined\":1,\"outbox_depth\":3}\n"),
            "{r}"
        );
        assert!(!Health::from_metrics(m, 3).is_ok());
        crate::metrics::set(&m.smtp_ok, 0);
        let r = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.contains("\"status\":\"degraded\""), "{r}");
        stop.send(true).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn a_shared_instance_is_healthy_with_sessions_for_the_inboxes_it_owns() {
        let m = leaked_metrics();
        crate::metrics::set(&m.smtp_ok, 1);
        crate::metrics::set(&m.imap_connected, 1);
        let held = crate::daemon::leases::HeldLeases::default();
        // A standby owns nothing and watches nothing: healthy.
        crate::metrics::set(&m.imap_connected, 0);
        let h = Health::from_metrics(m, 2).with_leases(&held);
        assert!(h.is_ok(), "{h:?}");
        assert!(serde_json::to_string(&h)
            .unwrap()
            .ends_with(",\"leases\":[]}"));
        // It owns one inbox and the sweep: one session needed.
        held.set("inbox/commands", Some(3));
        held.set("sweep", Some(1));
        let h = Health::from_metrics(m, 2).with_leases(&held);
        assert!(!h.is_ok(), "owned inbox without a session: {h:?}");
        crate::metrics::set(&m.imap_connected, 1);
        let h = Health::from_metrics(m, 2).with_leases(&held);
        assert!(h.is_ok(), "{h:?}");
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            "{\"status\":\"ok\",\"imap_connected\":1,\"inboxes\":2,\"smtp_ok\":true,\"quarantined\":0,\"outbox_depth\":0,\"leases\":[\"inbox/commands\",\"sweep\"]}"
        );
        // Without leases (sled) every configured inbox needs a session.
        assert!(!Health::from_metrics(m, 2).is_ok());
    }

    #[tokio::test]
    async fn bounds_slow_and_large_clients_and_stops() {
        let (addr, stop_tx, server) = start(leaked_metrics(), 0, SHORT).await;

        // A client that never finishes its head is answered 408 and cut off.
        let started = std::time::Instant::now();
        let slow = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost:").await;
        assert!(slow.starts_with("HTTP/1.1 408 "), "{slow}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // One that sends nothing at all, too.
        let silent = exchange(addr, b"").await;
        assert!(silent.starts_with("HTTP/1.1 408 "), "{silent}");

        // A head that does not end within the limit is refused.
        let mut junk = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        junk.resize(MAX_REQUEST_BYTES, b'a');
        let big = exchange(addr, &junk).await;
        assert!(big.starts_with("HTTP/1.1 431 "), "{big}");

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("the server stops on shutdown")
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }

    /// The hand-written server served 16 connections at a time, so 16 idle
    /// ones kept `/healthz` waiting for their 5 s read timeout (a 3 s
    /// load-balancer probe failed). Now each connection is its own task.
    #[tokio::test]
    async fn health_answers_while_many_idle_connections_are_open() {
        let limits = ConnLimits {
            head_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(20),
            ..METRICS_LIMITS
        };
        let (addr, stop, server) = start(leaked_metrics(), 0, limits).await;
        let mut idle = Vec::new();
        for _ in 0..64 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
            idle.push(s);
        }
        let answered = tokio::time::timeout(
            Duration::from_secs(3),
            exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n"),
        )
        .await
        .expect("/healthz answers within a load balancer's 3 s with 64 idle connections");
        assert!(answered.starts_with("HTTP/1.1 200 OK\r\n"), "{answered}");
        drop(idle);
        stop.send(true).unwrap();
        server.await.unwrap();
    }
}
