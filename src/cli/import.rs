//! `import`: invitations in bulk from a CSV file.

use anyhow::{Context as _, Result};
use liaison::io::admin::Request;
use liaison_core::config::Config;

/// What became of one data row of an import, as printed.
#[derive(serde::Serialize)]
struct RowReport {
    /// Line of the file where the row starts.
    line: usize,
    /// The row's `email` cell as written.
    email: String,
    /// The command the row became (or would have).
    command: String,
    /// Whether the customer was invited.
    ok: bool,
    /// What happened, or why not.
    result: String,
}

/// `liaison import`: invitations in bulk, through the running daemon or, when
/// none runs, straight into the store (the mails go out at the next start).
/// Every data row gets a report; the exit status is non-zero when any failed.
pub async fn import(
    config: &Config,
    file: &std::path::Path,
    partner: &str,
    draft: bool,
    json: bool,
) -> Result<()> {
    anyhow::ensure!(
        config.partner(partner).is_some(),
        "no partner `{partner}` in the configuration"
    );
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let rows = liaison_core::command::import::parse(&bytes)
        .with_context(|| format!("cannot import {}", file.display()))?;
    let total = rows.len();
    let mut reports: Vec<Option<RowReport>> = Vec::with_capacity(total);
    // Rows the daemon checks and runs, with their index in `reports`.
    let mut runnable = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        match row.cells {
            Ok(cells) => {
                runnable.push((i, row.line, cells));
                reports.push(None);
            }
            Err(problem) => reports.push(Some(RowReport {
                line: row.line,
                command: format!("invite {}", row.email),
                email: row.email,
                ok: false,
                result: problem.to_string(),
            })),
        }
    }
    let mut done = total - runnable.len();
    let keys = liaison_core::command::import::BatchKeys::new(
        config.security.token_secret.expose().as_bytes(),
        partner,
        draft,
        &bytes,
    );
    let mut local: Option<(
        std::sync::Arc<liaison::engine::Engine>,
        tokio::sync::watch::Sender<u64>,
    )> = None;
    for (n, chunk) in runnable
        .chunks(liaison_core::command::MAX_COMMANDS)
        .enumerate()
    {
        let key = keys.key(n);
        let cells: Vec<liaison_core::command::import::InviteRow> =
            chunk.iter().map(|(_, _, c)| c.clone()).collect();
        let req = Request::Import {
            partner: partner.to_string(),
            rows: cells,
            draft,
            key: key.clone(),
        };
        let value = if config.admin_socket.exists() {
            match liaison::io::admin::request(&config.admin_socket, &req).await {
                Ok(v) => Some(v),
                Err(liaison::io::admin::AdminError::Io { .. }) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let value = match value {
            Some(v) => v,
            None => {
                if local.is_none() {
                    let engine = liaison::daemon::offline_engine(config)?;
                    local = Some((engine, tokio::sync::watch::channel(0).0));
                }
                let (engine, durable) = local.as_ref().expect("set above");
                let Request::Import {
                    partner,
                    rows,
                    draft,
                    key,
                } = &req
                else {
                    unreachable!("built above")
                };
                liaison::io::admin::import_batch(engine, durable, partner, rows, *draft, key)
                    .map_err(anyhow::Error::msg)?
            }
        };
        let results: Vec<liaison::engine::CommandResult> = serde_json::from_value(value)?;
        anyhow::ensure!(
            results.len() == chunk.len(),
            "batch {key}: {} results for {} rows",
            results.len(),
            chunk.len()
        );
        for ((i, line, cells), r) in chunk.iter().zip(results) {
            reports[*i] = Some(RowReport {
                line: *line,
                email: cells.email.clone(),
                command: r.command,
                ok: r.ok,
                result: r.result,
            });
        }
        done += chunk.len();
        if !json {
            eprint!("\rimporting: {done}/{total} rows");
        }
    }
    let reports: Vec<RowReport> = reports
        .into_iter()
        .map(|r| r.expect("every row is reported: malformed ones above, the rest per batch"))
        .collect();
    let ok = reports.iter().filter(|r| r.ok).count();
    let failed = total - ok;
    if json {
        println!("{}", serde_json::to_string(&reports)?);
    } else {
        eprintln!();
        for r in &reports {
            let status = if r.ok { "ok" } else { "FAILED" };
            println!("{status:<7} {} (line {}): {}", r.command, r.line, r.result);
        }
        println!("{ok} of {total} rows invited, {failed} failed");
    }
    anyhow::ensure!(failed == 0, "{failed} of {total} row(s) failed");
    Ok(())
}
