//! The customer landing page: `GET /i/<token>` shows an invitation (or a
//! restore request) with an accept and a decline button, and only a `POST`
//! of that form answers it. Served by axum over the same connection
//! handling as `/metrics` ([`crate::io::http::serve_router`]), on its own
//! listener (`[web] listen`), optionally over TLS with rustls.
//!
//! Mail security scanners fetch every link of a mail before the customer
//! does (some with a full browser), so nothing a GET, a HEAD or a page load
//! does changes state; the page needs no JavaScript at all, and its
//! Content-Security-Policy allows none. A POST must carry the page's
//! anti-forgery value (a hidden form field keyed with the secret; no cookie,
//! and no reliance on `Origin`/`Referer`, which `Referrer-Policy:
//! no-referrer` makes browsers send as `null`/not at all). The decision is
//! the core's ([`liaison_core::decide::web`]): the same token checks, effects,
//! notices and history as an emailed answer.
//!
//! | request | answer |
//! |---|---|
//! | `GET`/`HEAD /i/<token>` | 200 the question, or "already answered"; 404 "not found" (forged, expired, superseded) |
//! | `POST /i/<token>` `answer=accept\|decline&form_token=…` | 200 "thank you" (state changed, notices queued), 200 "already answered", 403 (no or wrong `form_token`), 404, 400 (no answer) |
//! | `GET`/`HEAD /t/<token>` | 200 a ticket's read-only status page (number, subject, state, when who wrote); 404 forged or expired |
//! | `GET /static/liaison.css` | the style sheet |
//! | more than `rate_limit_per_minute` requests of one client | 429 with `Retry-After` |

pub use liaison_core::config::web as config;
pub mod limit;
pub mod pages;

use crate::engine::{Engine, WebPosted};
use crate::io::http::{ConnLimits, HttpError};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use config::{TlsFiles, WebConfig};
use liaison_core::decide::web::{Lookup, WebAnswer};
use pages::{Pages, PagesError, Rendered};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Errors starting the landing page.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A page template is missing or broken.
    #[error(transparent)]
    Pages(#[from] PagesError),
    /// The address could not be bound.
    #[error(transparent)]
    Bind(#[from] HttpError),
    /// The certificate or key could not be used.
    #[error("cannot use the TLS {what} {path} (config key `web.tls_{what}_file`): {reason}")]
    Tls {
        /// `cert` or `key`.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The Content-Security-Policy of every answer: nothing but the page's own
/// style sheet, no script, no inline style, forms only to the page itself,
/// never in a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the handlers share.
pub struct WebState {
    engine: Arc<Engine>,
    pages: Pages,
    durable: watch::Sender<u64>,
    limiter: limit::RateLimiter,
    trusted_proxies: Vec<IpAddr>,
    /// Whether the public address is https (then HSTS is sent).
    https: bool,
}

impl WebState {
    /// The page's state: the engine it decides with, its templates (from
    /// `templates_dir`), and the durable watermark the outbox sender waits
    /// on (a committed answer's notices go out once flushed).
    pub fn new(
        engine: Arc<Engine>,
        templates_dir: &std::path::Path,
        durable: watch::Sender<u64>,
        config: &WebConfig,
    ) -> Result<Self, WebError> {
        Ok(WebState {
            engine,
            pages: Pages::load(templates_dir)?,
            durable,
            limiter: limit::RateLimiter::new(config.rate_limit_per_minute),
            trusted_proxies: config.trusted_proxies.clone(),
            https: config.public_base_url.starts_with("https://"),
        })
    }
}

/// `?lang=ko`, the locale switch.
#[derive(Debug, Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

/// The page's form. Every field is optional so that a missing one gets
/// this module's answer (403, 400), not the extractor's.
#[derive(Debug, Deserialize)]
struct AnswerForm {
    answer: Option<String>,
    form_token: Option<String>,
    lang: Option<String>,
}

fn html(r: Rendered) -> Response {
    (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        r.html,
    )
        .into_response()
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}

fn internal(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "landing page: {what}");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "something went wrong on our side; nothing was changed. Please try again later, or reply to the invitation mail.",
    )
}

fn page(r: Result<Rendered, PagesError>) -> Response {
    match r {
        Ok(r) => html(r),
        Err(e) => internal("cannot render a page", e),
    }
}

/// Runs engine work off the async threads (sled and the engine's lock are
/// synchronous).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}

async fn show(
    State(s): State<Arc<WebState>>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
) -> Response {
    let engine = s.engine.clone();
    match blocking(move || engine.web_page(&token)).await {
        Ok(Ok(lookup)) => page(s.pages.for_lookup(&lookup, q.lang.as_deref(), false)),
        Ok(Err(e)) => internal("cannot read the store", e),
        Err(e) => internal("the page task failed", e),
    }
}

async fn answer(
    State(s): State<Arc<WebState>>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    Form(form): Form<AnswerForm>,
) -> Response {
    let lang = form.lang.or(q.lang);
    let answer = form.answer.as_deref().and_then(WebAnswer::parse);
    let form_token = form.form_token.unwrap_or_default();
    let engine = s.engine.clone();
    let durable = s.durable.clone();
    let posted = blocking(move || {
        let posted = engine.web_answer(&token, answer, &form_token)?;
        if matches!(posted, WebPosted::Answered(..)) {
            // The notices go out only once the answer is on disk.
            crate::engine::flush_and_publish(engine.store().as_ref(), &durable)?;
        }
        Ok::<_, crate::engine::EngineError>(posted)
    })
    .await;
    let lang = lang.as_deref();
    match posted {
        Ok(Ok(WebPosted::NotFound(l) | WebPosted::Unchanged(l))) => {
            page(s.pages.for_lookup(&l, lang, false))
        }
        Ok(Ok(WebPosted::Answered(l, _))) => page(s.pages.for_lookup(&l, lang, true)),
        Ok(Ok(WebPosted::Forbidden(l))) => {
            let own = match &l {
                Lookup::Page(p) => Some(p.invitation.locale.clone()),
                Lookup::NotFound { locale, .. } => locale.clone(),
            };
            page(s.pages.forbidden(&pages::pick_locale(lang, own.as_deref())))
        }
        Ok(Ok(WebPosted::NoAnswer)) => text(
            StatusCode::BAD_REQUEST,
            "the form has no answer: press accept or decline on the page",
        ),
        Ok(Ok(WebPosted::Failed(e))) => internal("cannot compose the notices", e),
        Ok(Err(e)) => internal("cannot commit the answer", e),
        Err(e) => internal("the answer task failed", e),
    }
}

async fn ticket(
    State(s): State<Arc<WebState>>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
) -> Response {
    let engine = s.engine.clone();
    match blocking(move || engine.web_ticket(&token)).await {
        Ok(Ok(t)) => page(s.pages.for_ticket(t.as_ref(), q.lang.as_deref())),
        Ok(Err(e)) => internal("cannot read the store", e),
        Err(e) => internal("the page task failed", e),
    }
}

async fn stylesheet(State(s): State<Arc<WebState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        s.pages.stylesheet.clone(),
    )
        .into_response()
}

async fn not_found(State(s): State<Arc<WebState>>, Query(q): Query<LangQuery>) -> Response {
    let locale = pages::pick_locale(q.lang.as_deref(), None);
    page(s.pages.not_found(
        &locale,
        liaison_core::decide::web::NotFound::NoReference,
        None,
    ))
}

/// Counts the request against its client's rate limit.
async fn rate_limit(
    State(s): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let client = limit::client_ip(peer, forwarded, &s.trusted_proxies);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match s.limiter.check(client, now) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            tracing::info!(%client, "landing page: rate limit reached");
            let mut r = text(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests from your address; please wait a minute",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            r
        }
    }
}

/// The security headers of every answer.
fn security_headers(https: bool) -> impl Fn(Response) -> std::future::Ready<Response> + Clone {
    move |mut r: Response| {
        let h = r.headers_mut();
        let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
            h.insert(name, HeaderValue::from_static(value));
        };
        set(h, header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
        set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        // The token is in the path: it must not reach the Microsoft link
        // (or anything else) in a Referer.
        set(h, header::REFERRER_POLICY, "no-referrer");
        set(h, header::X_FRAME_OPTIONS, "DENY");
        set(h, header::CACHE_CONTROL, "no-store");
        if https {
            set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
        }
        std::future::ready(r)
    }
}

/// The landing page's routes over `state`, with `max_body_bytes` the
/// largest form accepted (413 past it).
pub fn router(state: Arc<WebState>, max_body_bytes: usize) -> Router {
    let https = state.https;
    Router::new()
        .route("/i/{token}", get(show).post(answer))
        .route("/t/{token}", get(ticket))
        .route("/static/liaison.css", get(stylesheet))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit,
        ))
        .layer(axum::middleware::map_response(security_headers(https)))
        .with_state(state)
}

/// Binds `[web] listen`.
pub async fn bind(config: &WebConfig) -> Result<TcpListener, WebError> {
    Ok(crate::io::http::bind(config.listen, "the landing page", "web.listen").await?)
}

/// A TLS acceptor from the certificate chain and key files (PEM).
pub fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, WebError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| WebError::Tls {
            what: "cert",
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(WebError::Tls {
            what: "cert",
            path: files.cert.clone(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| WebError::Tls {
        what: "key",
        path: files.key.clone(),
        // Never the key's bytes: only what kind of problem it is.
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| WebError::Tls {
            what: "cert",
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The landing page's connection limits under `config`.
pub fn limits(config: &WebConfig) -> ConnLimits {
    ConnLimits {
        head_timeout: config.request_timeout.min(Duration::from_secs(5)),
        request_timeout: config.request_timeout,
        max_connections: config.max_connections,
        keep_alive: true,
        max_lifetime: Duration::from_secs(60),
    }
}

/// Serves the landing page on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<WebState>,
    config: WebConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, public = %config.public_base_url, tls = tls.is_some(), "serving the landing page");
    }
    crate::io::http::serve_router(
        listener,
        router(state, config.max_body_bytes),
        limits(&config),
        tls,
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use liaison_core::model::relationship::RelationshipState;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const NOW: u64 = 1_796_000_000;
    const ALICE: &str = "alice@contoso.test";

    struct Fixture {
        _dir: tempfile::TempDir,
        engine: Arc<Engine>,
        clock: Arc<ManualClock>,
        addr: SocketAddr,
        stop: watch::Sender<bool>,
        server: tokio::task::JoinHandle<()>,
    }

    /// An engine over a fresh store with the shipped dev config and
    /// templates, and the landing page served on a loopback port.
    async fn start(rate_limit_per_minute: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("config/liaison.dev.toml")).unwrap();
        let config = liaison_core::config::Config::parse(
            &text,
            &root.join("config/liaison.dev.toml"),
            &crate::files::EnvAndFiles,
        )
        .unwrap();
        let store = crate::store::SledStore::open(
            &dir.path().join("db"),
            1 << 20,
            &dir.path().join("s.sock"),
        )
        .unwrap();
        let templates = crate::files::load_templates(&root.join("templates")).unwrap();
        let clock = Arc::new(ManualClock::new(NOW));
        let web = config::RawWeb {
            listen: Some("127.0.0.1:0".into()),
            public_base_url: Some("http://127.0.0.1:1".into()),
            rate_limit_per_minute: Some(rate_limit_per_minute),
            request_timeout_secs: Some(2),
            ..Default::default()
        }
        .validate(None)
        .unwrap()
        .unwrap();
        let mut config = config;
        config.web = Some(web.clone());
        let engine = Arc::new(Engine::new(
            Arc::new(config),
            Arc::new(store),
            templates,
            clock.clone(),
        ));
        let (durable, _) = watch::channel(0);
        let state = Arc::new(
            WebState::new(engine.clone(), &root.join("templates"), durable, &web).unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, state, web, None, stop_rx));
        Fixture {
            _dir: dir,
            engine,
            clock,
            addr,
            stop,
            server,
        }
    }

    impl Fixture {
        /// Invites `customer` as Northwind, returning the invitation's token.
        fn invite(&self, line: &str, key: &str) -> String {
            let cmd = liaison_core::command::parse_line(line).unwrap();
            let r = self
                .engine
                .run_commands_as_partner("northwind", vec![cmd], key)
                .unwrap();
            assert!(r[0].ok, "{r:?}");
            let outbox = self.engine.store().pending_outbox(u64::MAX, 1000).unwrap();
            let inv = outbox
                .iter()
                .rev()
                .find(|e| e.mail.invitation.is_some() && e.mail.subject.contains("[ref:"))
                .expect("an invitation queued");
            let token =
                liaison_core::model::token::find_candidates(&inv.mail.subject)[0].to_string();
            assert!(
                body_text(&inv.mail.raw).contains(&format!("http://127.0.0.1:1/i/{token}")),
                "the invitation links its page"
            );
            token
        }

        fn state(&self) -> RelationshipState {
            self.engine
                .store()
                .relationship("northwind", ALICE)
                .unwrap()
                .unwrap()
                .state
        }

        fn outbox_len(&self) -> u64 {
            self.engine.store().outbox_len().unwrap()
        }

        /// One exchange: (status, head, body).
        async fn request(&self, raw: &str) -> (u16, String, String) {
            let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            s.write_all(raw.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            let out = String::from_utf8_lossy(&out).into_owned();
            let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            (status, head.to_string(), body.to_string())
        }

        async fn get(&self, path: &str) -> (u16, String, String) {
            self.request(&format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ))
            .await
        }

        async fn post(&self, path: &str, form: &str) -> (u16, String, String) {
            self.request(&format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nOrigin: null\r\nContent-Length: {}\r\n\r\n{form}",
                form.len()
            ))
            .await
        }

        async fn stop(self) {
            self.stop.send(true).unwrap();
            self.server.await.unwrap();
        }
    }

    /// A mail's decoded text part.
    fn body_text(raw: &str) -> String {
        mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
            .unwrap_or_default()
    }

    fn form_token(body: &str) -> String {
        let at = body.find("name=\"form_token\" value=\"").expect("a form") + 25;
        body[at..].split('"').next().unwrap().to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_shows_only_post_with_the_form_value_decides() {
        let f = start(1000).await;
        let token = f.invite(
            "invite alice@contoso.test name \"<b>Contoso</b> & Co\"",
            "t1",
        );
        let queued = f.outbox_len();
        let path = format!("/i/{token}");

        // Scanners: GET, HEAD, and again GET change nothing.
        let (status, head, body) = f.get(&path).await;
        assert_eq!(status, 200, "{head}\n{body}");
        for h in [
            "\r\nContent-Security-Policy: default-src 'none'; style-src 'self'",
            "frame-ancestors 'none'",
            "\r\nX-Content-Type-Options: nosniff",
            "\r\nReferrer-Policy: no-referrer",
            "\r\nCache-Control: no-store",
            "\r\nContent-Type: text/html; charset=utf-8",
        ] {
            assert!(head.contains(h), "no {h} in {head}");
        }
        assert!(body.contains("Northwind Traders asks for delegated admin permissions"));
        assert!(
            body.contains("&lt;b&gt;Contoso&lt;/b&gt; &amp; Co"),
            "{body}"
        );
        assert!(body.contains("value=\"accept\"") && body.contains("value=\"decline\""));
        assert!(!body.contains("<script"), "{body}");
        let (status, _, body_head) = f
            .request(&format!(
                "HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert_eq!((status, body_head.as_str()), (200, ""));
        assert_eq!(f.state(), RelationshipState::Invited);
        assert_eq!(f.outbox_len(), queued, "showing queues nothing");

        // A POST without, or with a wrong, anti-forgery value is refused.
        let (status, _, body) = f.post(&path, "answer=accept").await;
        assert_eq!(status, 403, "{body}");
        let good = form_token(&f.get(&path).await.2);
        let mut bad = good.clone();
        bad.replace_range(..1, if good.starts_with('a') { "b" } else { "a" });
        let (status, _, _) = f
            .post(&path, &format!("answer=accept&form_token={bad}"))
            .await;
        assert_eq!(status, 403);
        // Another invitation's value does not fit this one.
        let (status, _, _) = f.post(&path, "answer=accept&form_token=").await;
        assert_eq!(status, 403);
        assert_eq!(f.state(), RelationshipState::Invited);
        assert_eq!(f.outbox_len(), queued);
        // Right value, no answer: 400, nothing changed.
        let (status, _, _) = f.post(&path, &format!("form_token={good}")).await;
        assert_eq!(status, 400);

        // The real answer.
        let (status, _, body) = f
            .post(&path, &format!("answer=accept&form_token={good}&lang=en"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("You granted Northwind Traders delegated admin permissions"),
            "{body}"
        );
        assert_eq!(f.state(), RelationshipState::Active);
        let outbox = f.engine.store().pending_outbox(u64::MAX, 1000).unwrap();
        let subjects: Vec<&str> = outbox[queued as usize..]
            .iter()
            .map(|e| e.mail.subject.as_str())
            .collect();
        assert_eq!(
            subjects,
            [
                "You granted Northwind Traders delegated admin permissions",
                "Accepted: alice@contoso.test granted delegated admin permissions"
            ]
        );
        let rel = f
            .engine
            .store()
            .relationship("northwind", ALICE)
            .unwrap()
            .unwrap();
        let last = rel.history.last().unwrap();
        assert_eq!(
            (last.actor.as_str(), last.message_id.as_deref()),
            (ALICE, None)
        );
        let done = f
            .engine
            .store()
            .processed(&liaison_core::decide::web::web_key(
                rel.invitation_id.unwrap(),
                WebAnswer::Accept,
            ))
            .unwrap()
            .expect("a processed record of the answer");
        assert_eq!(done.class, liaison_core::effects::ProcessedClass::Web);

        // A second POST: "already answered", nothing more.
        let n = f.outbox_len();
        let (status, _, body) = f
            .post(&path, &format!("answer=decline&form_token={good}"))
            .await;
        assert_eq!(status, 200);
        assert!(
            body.contains("Already answered") && body.contains("already active"),
            "{body}"
        );
        assert_eq!(f.state(), RelationshipState::Active);
        assert_eq!(f.outbox_len(), n);
        f.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forged_expired_and_superseded_links_are_not_found() {
        let f = start(1000).await;
        let old = f.invite("invite alice@contoso.test locale ko", "t1");
        // Korean, from the invitation's locale; the switch gives English.
        let (status, _, body) = f.get(&format!("/i/{old}")).await;
        assert_eq!(status, 200);
        assert!(
            body.contains("<html lang=\"ko\">") && body.contains(">수락</button>"),
            "{body}"
        );
        let (_, _, body) = f.get(&format!("/i/{old}?lang=en")).await;
        assert!(body.contains("<html lang=\"en\">") && body.contains(">Accept</button>"));

        // Forged: one character changed.
        let mut forged = old.clone();
        let last = if old.ends_with('a') { "b" } else { "a" };
        forged.replace_range(old.len() - 1.., last);
        for path in [format!("/i/{forged}"), "/i/nothing".into(), "/x".into()] {
            let (status, _, body) = f.get(&path).await;
            assert_eq!(status, 404, "{path}");
            assert!(body.contains("does not refer to one"), "{path}: {body}");
        }
        let good = form_token(&f.get(&format!("/i/{old}")).await.2);
        let (status, _, _) = f
            .post(
                &format!("/i/{forged}"),
                &format!("answer=accept&form_token={good}"),
            )
            .await;
        assert_eq!(status, 404);

        // Superseded: the partner removed and invited again.
        for (line, key) in [
            ("remove alice@contoso.test", "t2"),
            ("invite alice@contoso.test", "t3"),
        ] {
            let cmd = liaison_core::command::parse_line(line).unwrap();
            assert!(
                f.engine
                    .run_commands_as_partner("northwind", vec![cmd], key)
                    .unwrap()[0]
                    .ok
            );
        }
        let (status, _, body) = f.get(&format!("/i/{old}")).await;
        assert_eq!(status, 404);
        assert!(body.contains("새 초대로 대체되었습니다"), "{body}");
        let (status, _, _) = f
            .post(
                &format!("/i/{old}"),
                &format!("answer=accept&form_token={good}"),
            )
            .await;
        assert_eq!(status, 404);
        assert_eq!(f.state(), RelationshipState::Invited);

        // Expired: past the invitation's 90 days.
        let outbox = f.engine.store().pending_outbox(u64::MAX, 1000).unwrap();
        let new = outbox
            .iter()
            .rev()
            .find_map(|e| {
                liaison_core::model::token::find_candidates(&e.mail.subject)
                    .first()
                    .map(|t| t.to_string())
            })
            .unwrap();
        assert_ne!(new, old);
        assert_eq!(f.get(&format!("/i/{new}")).await.0, 200);
        f.clock.advance(91 * 86_400);
        let (status, _, body) = f.get(&format!("/i/{new}")).await;
        assert_eq!(status, 404);
        assert!(body.contains("초대가 만료되었습니다"), "{body}");
        let (_, _, body) = f.get(&format!("/i/{new}?lang=en")).await;
        assert!(body.contains("the invitation has expired"), "{body}");
        f.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ticket_link_shows_its_status_only() {
        let f = start(1000).await;
        let token = f.invite("invite alice@contoso.test", "t1");
        let good = form_token(&f.get(&format!("/i/{token}")).await.2);
        let accepted = f
            .post(
                &format!("/i/{token}"),
                &format!("answer=accept&form_token={good}"),
            )
            .await;
        assert_eq!(accepted.0, 200);
        let cmd = liaison_core::command::parse_line("revoked alice@contoso.test").unwrap();
        assert!(
            f.engine
                .run_commands_as_partner("northwind", vec![cmd], "t2")
                .unwrap()[0]
                .ok
        );
        // Permissions removed: a support request opens a ticket.
        let raw = b"From: alice@contoso.test\r\nTo: invites@liaison.test\r\nSubject: Licences for the new office\r\nMessage-ID: <ask-1@contoso.test>\r\n\r\nWe need five more licences; the secret word is hunter2.\r\n";
        let cursor = crate::store::Cursor {
            uid_validity: 1,
            last_uid: 1,
        };
        let out = f.engine.process("invites", cursor, raw).unwrap();
        assert_eq!(
            out.class,
            liaison_core::effects::ProcessedClass::Customer,
            "{out:?}"
        );
        let t = f.engine.web_ticket_token(1).unwrap().expect("ticket 1");
        // The acknowledgement to the customer links the status page; the
        // desk's mail does not.
        let outbox = f.engine.store().pending_outbox(u64::MAX, 1000).unwrap();
        let link = format!("http://127.0.0.1:1/t/{t}");
        let with_link: Vec<&str> = outbox
            .iter()
            .filter(|e| body_text(&e.mail.raw).contains(&link))
            .map(|e| e.mail.recipients[0].as_str())
            .collect();
        assert_eq!(
            with_link,
            [ALICE],
            "{:?}",
            outbox.iter().map(|e| &e.mail.subject).collect::<Vec<_>>()
        );
        let (status, _, body) = f.get(&format!("/t/{t}")).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Support request T-000001"), "{body}");
        assert!(body.contains("Licences for the new office"), "{body}");
        assert!(body.contains("Opened; the support desk has it"), "{body}");
        assert!(!body.contains("hunter2"), "the page shows no texts: {body}");
        let (_, _, ko) = f.get(&format!("/t/{t}?lang=ko")).await;
        assert!(ko.contains("지원 요청 T-000001"), "{ko}");
        // An invitation token is no ticket token, nor is a forged one.
        let mut forged = t.clone();
        forged.replace_range(t.len() - 1.., if t.ends_with('a') { "b" } else { "a" });
        for bad in [forged, token] {
            let (status, _, body) = f.get(&format!("/t/{bad}")).await;
            assert_eq!(status, 404);
            assert!(
                body.contains("does not lead to a support request"),
                "{body}"
            );
        }
        f.clock.advance(366 * 86_400);
        assert_eq!(f.get(&format!("/t/{t}")).await.0, 404, "expired");
        f.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unclear_reply_is_answered_with_the_page_link() {
        let f = start(1000).await;
        let token = f.invite("invite alice@contoso.test", "t1");
        let raw = format!(
            "From: alice@contoso.test\r\nTo: invites+{token}@liaison.test\r\nSubject: Re: invitation\r\nMessage-ID: <unclear-1@contoso.test>\r\n\r\nHmm, maybe later.\r\n"
        );
        let cursor = crate::store::Cursor {
            uid_validity: 1,
            last_uid: 1,
        };
        f.engine.process("invites", cursor, raw.as_bytes()).unwrap();
        let outbox = f.engine.store().pending_outbox(u64::MAX, 1000).unwrap();
        let clarify = outbox.last().unwrap();
        let text = body_text(&clarify.mail.raw);
        assert!(text.contains("could not tell whether you accept"), "{text}");
        assert!(
            text.contains(&format!("http://127.0.0.1:1/i/{token}")),
            "{text}"
        );
        f.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_heads_and_bodies_get_408() {
        let f = start(1000).await;
        let started = std::time::Instant::now();
        // A head that never ends, and a form that never arrives whole.
        let (status, _, _) = f.request("GET /i/x HTTP/1.1\r\nHost:").await;
        assert_eq!(status, 408);
        let (status, _, body) = f
            .request("POST /i/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nanswer=acc")
            .await;
        assert_eq!(status, 408, "{body}");
        assert!(started.elapsed() < Duration::from_secs(5));
        f.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_past_its_rate_limit_gets_429() {
        let f = start(4).await;
        // A body over `max_body_bytes` (16 KiB) is refused before it is read.
        let big = format!("answer=accept&form_token={}", "a".repeat(20_000));
        let (status, _, _) = f.post("/i/x", &big).await;
        assert_eq!(status, 413);
        for _ in 0..3 {
            assert_eq!(f.get("/static/liaison.css").await.0, 200);
        }
        let (status, head, _) = f.get("/i/x").await;
        assert_eq!(status, 429, "{head}");
        assert!(head.contains("\r\nRetry-After: "), "{head}");
        f.stop().await;
    }
}
