//! The PostgreSQL store: several instances on one database.
//! (Being written: see issue 16.)

use super::{Result, StoreError};
use liaison_core::config::PostgresConfig;

/// A store in a PostgreSQL database, shared by several instances.
pub struct PgStore {
    _private: (),
}

/// Connects, migrates the schema to this binary's version and opens.
pub fn open(config: &PostgresConfig) -> Result<std::sync::Arc<dyn super::Store>> {
    let _ = config;
    Err(StoreError::Postgres("not built yet".into()))
}

/// The URL with any password replaced by `***`, for messages.
pub fn redacted(url: &str) -> String {
    url.to_string()
}

// ---- placeholders of the lead's API (issue 16), replaced when it lands ----

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Applies the embedded migrations; returns the version before and after.
pub fn migrate(config: &PostgresConfig) -> Result<(i64, i64)> {
    let _ = config;
    Err(StoreError::Postgres("not built yet".into()))
}

/// The database's schema version (0 when Liaison never ran on it).
pub fn schema_version(config: &PostgresConfig) -> Result<i64> {
    let _ = config;
    Err(StoreError::Postgres("not built yet".into()))
}
