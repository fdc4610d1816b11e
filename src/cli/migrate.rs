//! `migrate`: the embedded schema migrations of the PostgreSQL store, by
//! hand. The daemon applies them itself at start; this is for an operator
//! who wants the schema changed before the new binary takes over (and to
//! see the versions), e.g. before a rolling upgrade of several instances.

use anyhow::{Context as _, Result};
use liaison_core::config::{Config, StoreBackend};

/// `liaison migrate`: prints `from → to`; an error for sled, which has no
/// schema to migrate.
pub async fn migrate(config: &Config) -> Result<()> {
    let target = liaison::store::describe(&config.store);
    let pg = match &config.store.backend {
        StoreBackend::Sled => anyhow::bail!(
            "the store is {target}: nothing to migrate (migrations are for `[store] backend = \"postgres\"`; sled needs none)"
        ),
        StoreBackend::Postgres(pg) => pg.clone(),
    };
    // The store's calls block until its own runtime answers: off the
    // CLI's runtime threads.
    let (from, to) = tokio::task::spawn_blocking(move || liaison::store::pg::migrate(&pg))
        .await
        .context("the migration task failed")??;
    if from == to {
        println!("{target}: schema version {to}, the newest this binary knows; nothing to do");
    } else {
        println!("{target}: migrated the schema from version {from} to {to}");
    }
    Ok(())
}
