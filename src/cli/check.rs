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
            if let Some(web) = &config.web {
                // The landing page's templates and certificate, as the
                // daemon loads them at start.
                let pages = liaison::io::web::pages::Pages::load(&config.templates_dir)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let tls = match &web.tls {
                    Some(files) => liaison::io::web::tls_acceptor(files)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                checks.push(Check::new(
                    "web",
                    format!(
                        "{} at {} ({})",
                        web.public_base_url,
                        web.listen,
                        if web.tls.is_some() {
                            "TLS"
                        } else {
                            "plain HTTP, for a reverse proxy"
                        }
                    ),
                    pages.and(tls),
                ));
            }
            if !offline {
                // Tokens first (each client once), then the logins that
                // use them.
                let oauth = match liaison::oauth::OAuthClients::new(&config.oauth2) {
                    Ok(o) => o,
                    Err(e) => {
                        checks.push(Check::new("oauth2", "clients".into(), Err(e.to_string())));
                        liaison::oauth::OAuthClients::default()
                    }
                };
                let tokens = futures::future::join_all(oauth.all().map(|c| async move {
                    let result = c.bearer().await.map(|_| ()).map_err(|e| e.to_string());
                    (c.name().to_string(), c.config().token_url.clone(), result)
                }))
                .await;
                for (name, url, result) in tokens {
                    checks.push(Check::new(
                        "oauth2",
                        format!("{name} (token from {url})"),
                        result,
                    ));
                }
                // All at once: an unreachable server costs its timeout once.
                let imap = futures::future::join_all(
                    config.inboxes.iter().map(|inbox| check_imap(inbox, &oauth)),
                );
                let (imap, smtp) = tokio::join!(imap, check_smtp(&config.smtp, &oauth));
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
async fn check_imap(cfg: &InboxConfig, oauth: &liaison::oauth::OAuthClients) -> Result<(), String> {
    let login =
        liaison::io::imap_login::ImapLogin::for_inbox(cfg, oauth).map_err(|e| e.to_string())?;
    let mut session = liaison::io::imap::connect(cfg, &login)
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
async fn check_smtp(cfg: &SmtpConfig, oauth: &liaison::oauth::OAuthClients) -> Result<(), String> {
    let reason = |e: liaison::io::smtp::SmtpError| match e {
        liaison::io::smtp::SmtpError::Setup { reason, .. } => reason,
        other => other.to_string(),
    };
    let mailer = liaison::io::smtp::Mailer::with_oauth(cfg, oauth).map_err(reason)?;
    match mailer.check().await {
        Ok(true) => Ok(()),
        Ok(false) => Err("the server did not answer NOOP".into()),
        Err(e) => Err(reason(e)),
    }
}
