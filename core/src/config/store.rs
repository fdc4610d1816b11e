//! The `[store]` section: which backend keeps the state, and its settings.
//!
//! sled is the embedded default (one process, one folder); PostgreSQL lets
//! several instances share one store, each owning what it works on by a
//! lease (see the shell's `store::pg`).

use super::{invalid, resolve_secret, Result, Secret, SecretSource};
use serde::Deserialize;
use std::path::PathBuf;

/// `[store]` as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default = "default_cache_mb")]
    cache_capacity_mb: u64,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    #[serde(default)]
    url_file: Option<PathBuf>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    lease_secs: Option<u64>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

fn default_cache_mb() -> u64 {
    16
}

/// Default for `max_connections` (per instance).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;
/// Default for `lease_secs`: how long an instance owns an inbox (or the
/// timer sweep) without renewing; another instance takes over within two
/// lease lengths after it dies.
pub const DEFAULT_LEASE_SECS: u64 = 30;

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Folder of the sled database (empty with PostgreSQL, which has none).
    pub path: PathBuf,
    /// sled page cache size in bytes; sled's 1 GB default is far too big for a
    /// daemon that mostly idles.
    pub cache_capacity_bytes: u64,
    /// Which backend, with its own settings.
    pub backend: StoreBackend,
}

/// The backend that keeps the state.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// The embedded default: one process, one folder (`path`).
    Sled,
    /// A PostgreSQL database shared by any number of instances.
    Postgres(PostgresConfig),
}

/// `backend = "postgres"`.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// A libpq-style URL (`postgres://user:pass@host:port/db?sslmode=…`) or
    /// key/value string; a secret, since it usually carries a password.
    pub url: Secret,
    /// Connections this instance opens at most.
    pub max_connections: usize,
    /// Seconds an instance owns a lease without renewing it.
    pub lease_secs: u64,
    /// PEM file of the CA(s) the server's certificate must chain to;
    /// default: the system's web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// Seconds a queued mail stays claimed by the instance sending it:
    /// longer than any send may take, so no other instance sends it
    /// meanwhile (see [`claim_secs`]).
    pub claim_secs: u64,
}

/// How long a send claim lasts: four lease lengths, and at least twice the
/// SMTP timeout plus ten seconds, so a slow send never outlives its claim
/// (after a crash, the dead instance's claims hold its mails this long).
pub fn claim_secs(lease_secs: u64, smtp_timeout_secs: u64) -> u64 {
    (lease_secs * 4).max(smtp_timeout_secs * 2 + 10)
}

impl RawStore {
    /// The validated section. `admin_socket_set` tells whether `[admin]
    /// socket` was given: with a shared store every instance needs its own,
    /// and there is no folder to put a default beside.
    pub(super) fn validate(
        self,
        secrets: &dyn SecretSource,
        admin_socket_set: bool,
    ) -> Result<StoreConfig> {
        let cache_capacity_bytes = self.cache_capacity_mb.max(1) * 1024 * 1024;
        match self.backend.as_deref().unwrap_or("sled") {
            "sled" => {
                for (key, given) in [
                    ("url", self.url.is_some()),
                    ("url_env", self.url_env.is_some()),
                    ("url_file", self.url_file.is_some()),
                    ("max_connections", self.max_connections.is_some()),
                    ("lease_secs", self.lease_secs.is_some()),
                    ("ca_file", self.ca_file.is_some()),
                ] {
                    if given {
                        return Err(invalid(
                            format!("store.{key}"),
                            "is a PostgreSQL setting; set `backend = \"postgres\"` to use it, or remove it",
                        ));
                    }
                }
                let path = self.path.unwrap_or_default();
                if path.as_os_str().is_empty() {
                    return Err(invalid(
                        "store.path",
                        "must be set to the sled database's folder (e.g. /var/lib/liaison/store)",
                    ));
                }
                Ok(StoreConfig {
                    path,
                    cache_capacity_bytes,
                    backend: StoreBackend::Sled,
                })
            }
            "postgres" | "postgresql" => {
                if self.path.is_some() {
                    return Err(invalid(
                        "store.path",
                        "is not used with `backend = \"postgres\"` (the state is in the database); remove it",
                    ));
                }
                if !admin_socket_set {
                    return Err(invalid(
                        "admin.socket",
                        "must be set with `backend = \"postgres\"`: each instance needs its own admin socket (e.g. /run/liaison/admin.sock)",
                    ));
                }
                let url = resolve_secret(secrets, "store.url", self.url, self.url_env, self.url_file)?
                    .ok_or_else(|| {
                        invalid(
                            "store.url",
                            "must be set with `backend = \"postgres\"` (or `url_env` / `url_file`): postgres://user:password@host:5432/liaison",
                        )
                    })?;
                let text = url.expose().trim();
                if text.is_empty() {
                    return Err(invalid("store.url", "must not be empty"));
                }
                let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
                if !(2..=1000).contains(&max_connections) {
                    return Err(invalid(
                        "store.max_connections",
                        "must be between 2 and 1000 (one connection holds the write transaction, the others read)",
                    ));
                }
                let lease_secs = self.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
                if !(1..=3600).contains(&lease_secs) {
                    return Err(invalid(
                        "store.lease_secs",
                        "must be between 1 and 3600 seconds",
                    ));
                }
                Ok(StoreConfig {
                    path: PathBuf::new(),
                    cache_capacity_bytes,
                    backend: StoreBackend::Postgres(PostgresConfig {
                        url: Secret::new(text),
                        max_connections,
                        lease_secs,
                        ca_file: self.ca_file,
                        // Set from [smtp] once it is read (Config::from_raw).
                        claim_secs: lease_secs * 4,
                    }),
                })
            }
            other => Err(invalid(
                "store.backend",
                format!("`{other}` is not a backend; use \"sled\" (the default) or \"postgres\""),
            )),
        }
    }
}

/// The URL without its `sslmode` (which the driver does not fully know),
/// and that mode.
pub fn split_sslmode(url: &str) -> (String, Option<String>) {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut mode = None;
    if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| match p.strip_prefix("sslmode=") {
                Some(m) => {
                    mode = Some(m.to_string());
                    false
                }
                None => true,
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, mode);
    }
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|p| match p.strip_prefix("sslmode=") {
            Some(m) => {
                mode = Some(m.to_string());
                false
            }
            None => true,
        })
        .collect();
    (kept.join(" "), mode)
}

impl StoreConfig {
    /// Whether several instances may share this store.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, StoreBackend::Postgres(_))
    }

    /// What an operator should know about this section: a PostgreSQL
    /// connection whose server is not authenticated.
    pub fn warnings(&self) -> Vec<String> {
        let StoreBackend::Postgres(pg) = &self.backend else {
            return Vec::new();
        };
        let (_, mode) = split_sslmode(pg.url.expose());
        let mode = mode.unwrap_or_else(|| "prefer".into());
        match mode.as_str() {
            "verify-full" => Vec::new(),
            "prefer" | "allow" | "require" if pg.ca_file.is_some() => Vec::new(),
            "disable" => vec![
                "store.url: sslmode=disable sends the store's data and password unencrypted; use sslmode=verify-full unless the database is on this host".to_string(),
            ],
            "verify-ca" => vec![
                "store.url: sslmode=verify-ca checks the database's certificate but not that it names the host; use sslmode=verify-full".to_string(),
            ],
            other => vec![format!(
                "store.url: sslmode={other} encrypts but does not check who the database server is; set sslmode=verify-full (and store.ca_file for a private CA)"
            )],
        }
    }

    /// The lease length of a shared store; `None` for sled.
    pub fn lease_secs(&self) -> Option<u64> {
        match &self.backend {
            StoreBackend::Sled => None,
            StoreBackend::Postgres(p) => Some(p.lease_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_urls_and_key_value_strings() {
        assert_eq!(
            split_sslmode("postgres://h/db?sslmode=verify-full&application_name=x"),
            (
                "postgres://h/db?application_name=x".into(),
                Some("verify-full".into())
            )
        );
        assert_eq!(
            split_sslmode("postgres://h/db?sslmode=require"),
            ("postgres://h/db".into(), Some("require".into()))
        );
        assert_eq!(
            split_sslmode("host=h sslmode=verify-ca dbname=d"),
            ("host=h dbname=d".into(), Some("verify-ca".into()))
        );
        assert_eq!(
            split_sslmode("postgres://h/db"),
            ("postgres://h/db".into(), None)
        );
    }
}
