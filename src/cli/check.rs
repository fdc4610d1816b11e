//! `check-config`: the file, the templates and every mail server.

use anyhow::Result;
use liaison_core::config::{InboxConfig, SmtpConfig, SUPPORTED_LOCALES};
use liaison_core::render::templates::TemplateName;
use std::path::Path;
use std::time::Duration;

/// One line of `check-config`.
#[derive(serde::Serialize)]
struct Check {
    /// `config`, `templates`, `imap` or `smtp`.
    check: &'static str,
    /// What was checked: a file, or an account and its server.
    target: String,
    ok: bool,
    /// Why it failed.
    error: Option<String>,
}

impl Check {
    fn new(check: &'static str, target: String, result: Result<(), String>) -> Check {
        Check {
            check,
            target,
            ok: result.is_ok(),
            error: result.err(),
        }
    }
}

pub async fn check_config(path: &Path, offline: bool, json: bool) -> Result<()> {
    let mut checks = Vec::new();
    let config = liaison::files::load_config(path);
    let target = path.display().to_string();
    match config {
        Err(e) => checks.push(Check::new("config", target, Err(e.to_string()))),
        Ok(config) => {
            // On stderr: a valid config still passes, and stdout stays
            // one line per check.
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            checks.push(Check::new(
                "config",
                format!(
                    "{target} ({} inbox(es), {} partner(s))",
                    config.inboxes.len(),
                    config.partners.len()
                ),
                Ok(()),
            ));
            checks.push(Check::new(
                "templates",
                format!(
                    "{} ({} templates in {})",
                    config.templates_dir.display(),
                    TemplateName::ALL.len(),
                    SUPPORTED_LOCALES.join(", ")
                ),
                liaison::files::load_templates(&config.templates_dir)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ));
            if !offline {
                // All at once: an unreachable server costs its timeout once.
                let imap = futures::future::join_all(config.inboxes.iter().map(check_imap));
                let (imap, smtp) = tokio::join!(imap, check_smtp(&config.smtp));
                for (inbox, result) in config.inboxes.iter().zip(imap) {
                    checks.push(Check::new(
                        "imap",
                        format!(
                            "{} ({} at {}:{}, mailbox {})",
                            inbox.name, inbox.username, inbox.host, inbox.port, inbox.mailbox
                        ),
                        result,
                    ));
                }
                checks.push(Check::new(
                    "smtp",
                    format!("{}:{}", config.smtp.host, config.smtp.port),
                    smtp,
                ));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string(&checks)?);
    } else {
        for c in &checks {
            match &c.error {
                None => println!("{} {}: ok", c.check, c.target),
                Some(e) => println!("{} {}: FAILED: {e}", c.check, c.target),
            }
        }
        if offline {
            println!("(--offline: no connection to the mail servers was tried)");
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

/// Logs in, opens the mailbox read-only, logs out.
async fn check_imap(cfg: &InboxConfig) -> Result<(), String> {
    let mut session = liaison::io::imap::connect(cfg)
        .await
        .map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(cfg.timeout_secs);
    let opened = match tokio::time::timeout(limit, session.examine(&cfg.mailbox)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot open mailbox {}: {e}", cfg.mailbox)),
        Err(_) => Err(format!(
            "opening mailbox {} took longer than {} s",
            cfg.mailbox, cfg.timeout_secs
        )),
    };
    let _ = tokio::time::timeout(limit, session.logout()).await;
    opened
}

/// Connects (EHLO, STARTTLS or TLS, AUTH when configured) and sends NOOP.
async fn check_smtp(cfg: &SmtpConfig) -> Result<(), String> {
    let reason = |e: liaison::io::smtp::SmtpError| match e {
        liaison::io::smtp::SmtpError::Setup { reason, .. } => reason,
        other => other.to_string(),
    };
    let mailer = liaison::io::smtp::Mailer::new(cfg).map_err(reason)?;
    match mailer.check().await {
        Ok(true) => Ok(()),
        Ok(false) => Err("the server did not answer NOOP".into()),
        Err(e) => Err(reason(e)),
    }
}
