//! Questions about the state: `status`, `list`, `history`, `tickets`,
//! `ticket`, `stats`. Each asks the running daemon over its admin socket,
//! or reads the store directly when no daemon runs ([`super::query`]).

use super::query;
use anyhow::Result;
use liaison::io::admin::{printable, CountRow, Request, StatusRow};
use liaison_core::config::Config;

/// `liaison tickets`.
pub async fn tickets(
    config: &Config,
    partner: Option<String>,
    all: bool,
    json: bool,
) -> Result<()> {
    let value = query(config, &Request::Tickets { partner, all }).await?;
    let rows: Vec<liaison::io::admin::TicketRow> = serde_json::from_value(value)?;
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else if rows.is_empty() {
        println!("no tickets");
    } else {
        for r in rows {
            println!(
                "{}  {:<19}  {:<12} {:<28} opened {}  {}",
                r.id,
                r.state,
                r.partner,
                r.customer,
                r.opened,
                printable(&r.subject)
            );
        }
    }
    Ok(())
}

/// `liaison ticket ID`.
pub async fn ticket(config: &Config, id: String, json: bool) -> Result<()> {
    let value = query(config, &Request::Ticket { id }).await?;
    if json {
        println!("{value}");
    } else {
        let t: liaison_core::model::ticket::Ticket = serde_json::from_value(value)?;
        println!(
            "{}  {}  partner {}  customer {}\nsubject: {}",
            liaison_core::model::ticket::format_id(t.id),
            t.state,
            t.partner,
            t.customer,
            printable(&t.subject)
        );
        for e in t.entries {
            println!(
                "\n{}  {:?} {}",
                liaison_core::decide::rfc3339(e.at),
                e.author,
                e.from
            );
            for line in e.text.lines() {
                println!("  {}", printable(line));
            }
        }
    }
    Ok(())
}

/// `liaison list`.
pub async fn list(
    config: &Config,
    state: Option<String>,
    partner: Option<String>,
    json: bool,
) -> Result<()> {
    if let Some(st) = &state {
        anyhow::ensure!(
            liaison_core::model::relationship::RelationshipState::parse(st).is_some(),
            "`{st}` is not a relationship state"
        );
    }
    let value = query(config, &Request::List { partner, state }).await?;
    let rows: Vec<StatusRow> = serde_json::from_value::<Vec<StatusRow>>(value)?;
    print_status_rows(&rows, json)?;
    Ok(())
}

/// `liaison history CUSTOMER`.
pub async fn history(config: &Config, customer: String, json: bool) -> Result<()> {
    let value = query(config, &Request::History { customer }).await?;
    if json {
        println!("{value}");
    } else {
        let rels: Vec<liaison_core::model::relationship::Relationship> =
            serde_json::from_value(value)?;
        if rels.is_empty() {
            println!("no relationships");
        }
        for r in rels {
            println!("{} with {} ({})", r.customer, r.partner, r.state);
            for h in r.history {
                println!(
                    "  {}  {} -> {}  by {}{}  [{}]",
                    liaison_core::decide::rfc3339(h.at),
                    h.from.map(|s| s.as_str()).unwrap_or("(new)"),
                    h.to,
                    h.actor,
                    h.message_id
                        .map(|m| format!("  <{}>", printable(&m)))
                        .unwrap_or_default(),
                    h.source.map_or("source not recorded", |s| s.as_str())
                );
            }
        }
    }
    Ok(())
}

/// `liaison stats`.
pub async fn stats(config: &Config) -> Result<()> {
    let value = query(config, &Request::Stats).await?;
    println!("{value}");
    Ok(())
}

/// `liaison status CUSTOMER`: that customer's relationships.
pub async fn status_of(config: &Config, customer: String, json: bool) -> Result<()> {
    let req = Request::Status { customer };
    let value = query(config, &req).await?;
    let rows: Vec<StatusRow> = serde_json::from_value(value)?;
    print_status_rows(&rows, json)?;
    Ok(())
}

/// `liaison status`: counts per partner and state.
pub async fn counts(config: &Config, json: bool) -> Result<()> {
    let value = query(config, &Request::Counts).await?;
    let rows: Vec<CountRow> = serde_json::from_value(value)?;
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else if rows.is_empty() {
        println!("no relationships");
    } else {
        let total: u64 = rows.iter().map(|r| r.count).sum();
        for r in &rows {
            println!("{:<12} {:<20} {:>8}", r.partner, r.state, r.count);
        }
        println!("{:<12} {:<20} {:>8}", "", "total", total);
    }
    Ok(())
}

/// Prints relationships as a table, or as JSON.
pub(super) fn print_status_rows(rows: &[StatusRow], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(rows)?);
    } else if rows.is_empty() {
        println!("no relationships");
    } else {
        for r in rows {
            let gdap = match &r.gdap_id {
                Some(id) => format!(
                    "  gdap {id}{}  auto-extend {}",
                    r.gdap_ends
                        .as_deref()
                        .map(|e| format!(" ends {e}"))
                        .unwrap_or_default(),
                    if r.auto_extend == Some(true) {
                        "on"
                    } else {
                        "off"
                    }
                ),
                None => String::new(),
            };
            println!(
                "{:<12} {:<32} {:<20} since {}{gdap}",
                r.partner, r.customer, r.state, r.since
            );
        }
    }
    Ok(())
}
