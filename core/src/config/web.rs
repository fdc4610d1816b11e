//! The `[web]` section: the public landing page's listener, its public
//! address and its limits. Pure data and validation; the shell binds the
//! address and reads the certificate files.

use core::net::{IpAddr, SocketAddr};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[web]` as written in the file; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    /// Address to listen on.
    pub listen: Option<String>,
    /// The address customers' links start with.
    pub public_base_url: Option<String>,
    /// Requests one client address may make per minute.
    pub rate_limit_per_minute: Option<u32>,
    /// Largest request body (the form) accepted.
    pub max_body_bytes: Option<usize>,
    /// Time a request may take, head and body.
    pub request_timeout_secs: Option<u64>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// PEM certificate chain, to terminate TLS in Liaison itself.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key that goes with `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

/// Default for `rate_limit_per_minute`: generous for a person, who loads a
/// page and presses a button, and for a scanner's few fetches.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 60;
/// Default for `max_body_bytes`: the form is under 200 bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;
/// Default for `request_timeout_secs`.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 10;
/// Default for `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Certificate and key files for TLS terminated by Liaison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The validated `[web]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Address the landing page listens on.
    pub listen: SocketAddr,
    /// What links start with, without a trailing `/`
    /// (`https://liaison.example.com`); pages are under `/i/` and `/t/`.
    pub public_base_url: String,
    /// Requests per client address and minute; past it, 429.
    pub rate_limit_per_minute: u32,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: usize,
    /// Time a request may take; slower gets 408.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Peers whose `X-Forwarded-For` names the client (the address the
    /// rate limit counts). Empty: the peer is the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// TLS terminated by Liaison (else plain HTTP, for a reverse proxy).
    pub tls: Option<TlsFiles>,
}

/// A `[web]` key that cannot work: its dotted name and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfigError {
    /// e.g. `web.public_base_url`.
    pub key: &'static str,
    /// What is wrong and what would be right.
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> WebConfigError {
    WebConfigError {
        key,
        reason: reason.into(),
    }
}

impl WebConfig {
    /// The link to the page of invitation token `token`.
    pub fn invitation_link(&self, token: &str) -> String {
        format!("{}/i/{token}", self.public_base_url)
    }

    /// The link to the status page of ticket token `token`.
    pub fn ticket_link(&self, token: &str) -> String {
        format!("{}/t/{token}", self.public_base_url)
    }
}

/// Whether `host` (from a URL) names this machine.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RawWeb {
    /// Validates the section: `None` when the page is off (no `listen`).
    /// `metrics_listen` is `[http] listen`, which must differ: the public
    /// page and the loopback metrics are separate listeners.
    pub fn validate(
        self,
        metrics_listen: Option<SocketAddr>,
    ) -> Result<Option<WebConfig>, WebConfigError> {
        let (listen, base) = match (self.listen, self.public_base_url) {
            (None, None) => {
                let set = self.rate_limit_per_minute.is_some()
                    || self.max_body_bytes.is_some()
                    || self.request_timeout_secs.is_some()
                    || self.max_connections.is_some()
                    || self.trusted_proxies.is_some()
                    || self.tls_cert_file.is_some()
                    || self.tls_key_file.is_some();
                if set {
                    return Err(invalid(
                        "web.listen",
                        "other [web] keys are set but not `listen` and `public_base_url`; set both to turn the landing page on, or remove the section",
                    ));
                }
                return Ok(None);
            }
            (Some(_), None) => {
                return Err(invalid(
                    "web.public_base_url",
                    "must be set with `web.listen`: the links in mails start with it (e.g. https://liaison.example.com)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "web.listen",
                    "must be set with `web.public_base_url`: without a listener the links in mails would lead nowhere",
                ))
            }
            (Some(l), Some(b)) => (l, b),
        };
        let listen: SocketAddr = listen.parse().map_err(|_| {
            invalid(
                "web.listen",
                format!("`{listen}` is not an address like 0.0.0.0:8443 or 127.0.0.1:8080"),
            )
        })?;
        if metrics_listen == Some(listen) {
            return Err(invalid(
                "web.listen",
                format!("{listen} is also `http.listen`; the public page and /metrics need separate listeners"),
            ));
        }
        let base = base.trim_end_matches('/').to_string();
        let (scheme, rest) = base.split_once("://").ok_or_else(|| {
            invalid(
                "web.public_base_url",
                format!("`{base}` is not a URL like https://liaison.example.com"),
            )
        })?;
        let host_port = rest.split('/').next().unwrap_or("");
        let host = match host_port.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host_port,
        };
        if host.is_empty() || base.contains(['?', '#', ' ', '"', '<', '>']) {
            return Err(invalid(
                "web.public_base_url",
                format!("`{base}` must be a plain URL with a host and no query or fragment"),
            ));
        }
        match scheme {
            "https" => {}
            "http" if is_loopback_host(host) => {}
            _ => {
                return Err(invalid(
                    "web.public_base_url",
                    format!("`{base}` must start with https:// (plain http only for a loopback host, in tests): the links carry tokens"),
                ))
            }
        }
        let trusted_proxies = self
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|p| {
                p.parse::<IpAddr>().map_err(|_| {
                    invalid("web.trusted_proxies", format!("`{p}` is not an IP address"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match (self.tls_cert_file, self.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (Some(_), None) => {
                return Err(invalid(
                    "web.tls_key_file",
                    "must be set with `web.tls_cert_file`",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "web.tls_cert_file",
                    "must be set with `web.tls_key_file`",
                ))
            }
        };
        let rate_limit_per_minute = self
            .rate_limit_per_minute
            .unwrap_or(DEFAULT_RATE_LIMIT_PER_MINUTE);
        if rate_limit_per_minute == 0 {
            return Err(invalid(
                "web.rate_limit_per_minute",
                "must be at least 1 (a customer needs two requests: the page and the answer)",
            ));
        }
        let max_body_bytes = self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if !(256..=1 << 20).contains(&max_body_bytes) {
            return Err(invalid(
                "web.max_body_bytes",
                "must be between 256 and 1048576 (the form is under 200 bytes)",
            ));
        }
        let secs = self
            .request_timeout_secs
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS);
        if !(1..=300).contains(&secs) {
            return Err(invalid(
                "web.request_timeout_secs",
                "must be between 1 and 300",
            ));
        }
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=65_536).contains(&max_connections) {
            return Err(invalid(
                "web.max_connections",
                "must be between 1 and 65536",
            ));
        }
        Ok(Some(WebConfig {
            listen,
            public_base_url: base,
            rate_limit_per_minute,
            max_body_bytes,
            request_timeout: Duration::from_secs(secs),
            max_connections,
            trusted_proxies,
            tls,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(listen: &str, base: &str) -> RawWeb {
        RawWeb {
            listen: Some(listen.into()),
            public_base_url: Some(base.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_links() {
        let w = raw("0.0.0.0:8443", "https://liaison.example.com/")
            .validate(None)
            .unwrap()
            .unwrap();
        assert_eq!(w.public_base_url, "https://liaison.example.com");
        assert_eq!(
            w.invitation_link("abc"),
            "https://liaison.example.com/i/abc"
        );
        assert_eq!(w.ticket_link("abc"), "https://liaison.example.com/t/abc");
        assert_eq!(w.rate_limit_per_minute, 60);
        assert_eq!(w.request_timeout, Duration::from_secs(10));
        assert!(w.trusted_proxies.is_empty() && w.tls.is_none());
        assert_eq!(RawWeb::default().validate(None), Ok(None));
    }

    #[test]
    fn refuses_what_cannot_work() {
        let err = |r: RawWeb| {
            r.validate(Some("127.0.0.1:9898".parse().unwrap()))
                .unwrap_err()
        };
        assert_eq!(
            err(raw("0.0.0.0:80", "http://liaison.example.com")).key,
            "web.public_base_url"
        );
        assert!(raw("127.0.0.1:8080", "http://127.0.0.1:8080")
            .validate(None)
            .is_ok());
        assert!(raw("127.0.0.1:8080", "http://localhost:8080/x")
            .validate(None)
            .is_ok());
        assert_eq!(
            err(raw("127.0.0.1:9898", "https://a.example")).key,
            "web.listen"
        );
        assert_eq!(err(raw("nonsense", "https://a.example")).key, "web.listen");
        assert_eq!(
            err(raw("0.0.0.0:1", "https://a.example?x=1")).key,
            "web.public_base_url"
        );
        assert_eq!(
            err(raw("0.0.0.0:1", "liaison.example.com")).key,
            "web.public_base_url"
        );
        let mut r = raw("0.0.0.0:1", "https://a.example");
        r.trusted_proxies = Some(vec!["10.0.0.1".into(), "proxy".into()]);
        assert_eq!(err(r).key, "web.trusted_proxies");
        let mut r = raw("0.0.0.0:1", "https://a.example");
        r.tls_cert_file = Some("/c.pem".into());
        assert_eq!(err(r).key, "web.tls_key_file");
        let mut r = raw("0.0.0.0:1", "https://a.example");
        r.rate_limit_per_minute = Some(0);
        assert_eq!(err(r).key, "web.rate_limit_per_minute");
        let only = RawWeb {
            public_base_url: Some("https://a.example".into()),
            ..Default::default()
        };
        assert_eq!(err(only).key, "web.listen");
        let stray = RawWeb {
            rate_limit_per_minute: Some(5),
            ..Default::default()
        };
        assert_eq!(err(stray).key, "web.listen");
    }
}
