//! What Liaison set aside: `quarantine list|show|release` (mail it would
//! not act on) and `held list|show|release` (mail it would not send).

use super::{ask_daemon, query};
use anyhow::Result;
use liaison::io::admin::{printable, Request};
use liaison_core::config::Config;

/// `liaison quarantine list`.
pub async fn quarantine_list(config: &Config, json: bool) -> Result<()> {
    let value = query(config, &Request::Quarantine).await?;
    print_list(&value, json, "nothing quarantined", |r| {
        format!(
            "{}  {}  {}",
            r["at"].as_str().unwrap_or(""),
            printable(r["key"].as_str().unwrap_or("")),
            printable(r["reason"].as_str().unwrap_or(""))
        )
    });
    Ok(())
}

/// `liaison quarantine show KEY`.
pub async fn quarantine_show(config: &Config, key: String, json: bool) -> Result<()> {
    let value = query(config, &Request::QuarantineShow { key }).await?;
    print_mail_content(&value, json);
    Ok(())
}

/// `liaison quarantine release KEY`.
pub async fn quarantine_release(config: &Config, key: String) -> Result<()> {
    let v = ask_daemon(config, &Request::Release { key }, "release messages").await?;
    println!(
        "released {}: {} ({})",
        printable(v["key"].as_str().unwrap_or("")),
        printable(v["summary"].as_str().unwrap_or("")),
        v["class"].as_str().unwrap_or("")
    );
    Ok(())
}

/// `liaison held list`.
pub async fn held_list(config: &Config, json: bool) -> Result<()> {
    let value = query(config, &Request::Held).await?;
    print_list(&value, json, "nothing held", |r| {
        let to: Vec<&str> = r["to"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        format!(
            "{}  {}  to {}  \"{}\"  {}",
            r["id"],
            r["at"].as_str().unwrap_or(""),
            printable(&to.join(", ")),
            printable(r["subject"].as_str().unwrap_or("")),
            printable(r["reason"].as_str().unwrap_or(""))
        )
    });
    Ok(())
}

/// `liaison held show ID`.
pub async fn held_show(config: &Config, id: u64, json: bool) -> Result<()> {
    let value = query(config, &Request::HeldShow { id }).await?;
    print_mail_content(&value, json);
    Ok(())
}

/// `liaison held release ID`.
pub async fn held_release(config: &Config, id: u64) -> Result<()> {
    let v = ask_daemon(config, &Request::HeldRelease { id }, "release held mail").await?;
    println!(
        "released {}: \"{}\" queued for sending",
        v["id"],
        printable(v["subject"].as_str().unwrap_or(""))
    );
    Ok(())
}

/// Prints a list the daemon or the store answered: as JSON with `json`,
/// else one `line` per row, or `empty` when there is none.
fn print_list(
    value: &serde_json::Value,
    json: bool,
    empty: &str,
    line: impl Fn(&serde_json::Value) -> String,
) {
    if json {
        println!("{value}");
        return;
    }
    let rows = value.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        println!("{empty}");
    }
    for r in rows {
        println!("{}", line(r));
    }
}

/// Prints what `held show` or `quarantine show` answered: the record, the
/// mail's headers, its text and its attachments, every line of it through
/// [`printable`] (it is what someone else wrote).
fn print_mail_content(v: &serde_json::Value, json: bool) {
    if json {
        println!("{v}");
        return;
    }
    let field = |name: &str, value: &serde_json::Value| {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
            serde_json::Value::Null => return,
            other => other.to_string(),
        };
        println!("{name}: {}", printable(&text));
    };
    for (label, key) in [
        ("id", "id"),
        ("key", "key"),
        ("at", "at"),
        ("reason", "reason"),
        ("kept", "kept"),
        ("to", "to"),
        ("subject", "subject"),
        ("from", "from"),
        ("from name", "from_name"),
        ("other from", "other_from"),
        ("recipients", "recipients"),
        ("mail subject", "mail_subject"),
        ("message-id", "message_id"),
        ("authentication-results", "authentication_results"),
        ("unreadable", "unreadable"),
    ] {
        if let Some(value) = v.get(key) {
            field(label, value);
        }
    }
    for a in v["attachments"].as_array().into_iter().flatten() {
        println!(
            "attachment: {} ({}, {} bytes)",
            printable(a["name"].as_str().unwrap_or("")),
            printable(a["content_type"].as_str().unwrap_or("")),
            a["bytes"]
        );
    }
    if let Some(text) = v["text"].as_str() {
        println!();
        for line in text.lines() {
            println!("  {}", printable(line));
        }
    } else if v["kept"] == false {
        println!("\n(the mail itself was not kept in the store)");
    }
}
