//! `export` and `restore`: the whole store as JSON lines.

use super::query;
use anyhow::{Context as _, Result};
use liaison::io::admin::Request;
use liaison_core::config::Config;
use std::path::PathBuf;

/// `liaison export`: a backup, through the running daemon or from the store.
pub async fn export(config: &Config, output: Option<PathBuf>) -> Result<()> {
    let value = query(config, &Request::Export).await?;
    let rows: Vec<liaison::store::ExportRecord> = serde_json::from_value(value)?;
    let mut out = String::new();
    for r in &rows {
        out.push_str(&serde_json::to_string(r)?);
        out.push('\n');
    }
    match output {
        Some(path) => {
            std::fs::write(&path, out)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("exported {} records to {}", rows.len(), path.display());
        }
        None => print!("{out}"),
    }
    Ok(())
}

/// `liaison restore FILE`: into an empty store, with the daemon stopped.
pub fn restore(config: &Config, file: PathBuf) -> Result<()> {
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        rows.push(
            serde_json::from_str::<liaison::store::ExportRecord>(line).with_context(|| {
                format!("{} line {}: not an export record", file.display(), i + 1)
            })?,
        );
    }
    let store = liaison::store::open(&config.store, &config.admin_socket)?;
    let target = liaison::store::describe(&config.store);
    anyhow::ensure!(
        store.is_empty()?,
        "the store {target} is not empty; restore only into a new store"
    );
    store.import(&rows)?;
    println!("restored {} records into {target}", rows.len());
    Ok(())
}
