//! `check-config`: the file, the templates and every mail server.

use anyhow::Result;
use liaison_core::config::{
    InboxConfig, PostgresConfig, SmtpConfig, StoreBackend, StoreConfig, SUPPORTED_LOCALES,
};
use liaison_core::render::templates::TemplateName;
use std::path::Path;
use std::time::Duration;

/// One line of `check-config`.
#[derive(serde::Serialize)]
struct Check {
    /// `config`, `templates`, `web`, `store` (PostgreSQL), `oauth2`,
    /// `imap` or `smtp`.
    check: &'static str,
    /// What was checked: a file, or an account and its server.
    target: String,
    ok: bool,
    /// Why it failed.
    error: Option<String>,
    /// What the operator should know although it passed (a server quirk
    /// Liaison works around).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl Check {
    fn new(check: &'static str, target: String, result: Result<(), String>) -> Check {
        Check {
            check,
            target,
            ok: result.is_ok(),
            error: result.err(),
            note: None,
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
                if let StoreBackend::Postgres(pg) = &config.store.backend {
                    checks.push(check_postgres(&config.store, pg).await);
                }
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
                    let (result, note) = match result {
                        Ok(note) => (Ok(()), note),
                        Err(e) => (Err(e), None),
                    };
                    checks.push(Check {
                        note,
                        ..Check::new(
                            "imap",
                            format!(
                                "{} ({} at {}:{}, mailbox {})",
                                inbox.name, inbox.username, inbox.host, inbox.port, inbox.mailbox
                            ),
                            result,
                        )
                    });
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
                None => match &c.note {
                    None => println!("{} {}: ok", c.check, c.target),
                    Some(note) => println!("{} {}: ok ({note})", c.check, c.target),
                },
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

/// Connects to the PostgreSQL store and reads its schema version, changing
/// nothing: too new for this binary fails (the daemon would refuse to
/// start); older or empty passes with a note (the daemon migrates at
/// start). The URL is shown with its password replaced.
async fn check_postgres(store: &StoreConfig, pg: &PostgresConfig) -> Check {
    let target = liaison::store::describe(store);
    let known = liaison::store::pg::SCHEMA_VERSION;
    let config = pg.clone();
    let found = tokio::task::spawn_blocking(move || liaison::store::pg::schema_version(&config))
        .await
        .map_err(|e| format!("the check failed: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    let (result, note) = match found {
        Err(e) => (Err(without_password(&e, pg.url.expose())), None),
        Ok(v) if v > known => (
            Err(format!(
                "the database has schema version {v}, this binary knows up to {known}; \
                 the daemon would refuse to start: run the newer Liaison"
            )),
            None,
        ),
        Ok(0) => (
            Ok(()),
            Some(format!(
                "no Liaison schema yet: the daemon creates version {known} when it starts (or run `liaison migrate`)"
            )),
        ),
        Ok(v) if v < known => (
            Ok(()),
            Some(format!(
                "schema version {v}: the daemon migrates it to {known} when it starts (or run `liaison migrate`)"
            )),
        ),
        Ok(v) => (Ok(()), Some(format!("schema version {v}"))),
    };
    Check {
        note,
        ..Check::new("store", target, result)
    }
}

/// `text` with the password of `url` (a URL's `user:password@`, or a
/// key/value string's `password=…`) replaced by `***`: a second guard,
/// since the store's errors are written not to hold it.
fn without_password(text: &str, url: &str) -> String {
    let password = if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        authority
            .rsplit_once('@')
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, p)| p.to_string())
    } else {
        url.split_whitespace()
            .find_map(|kv| kv.strip_prefix("password="))
            .map(|p| p.trim_matches('\'').to_string())
    };
    match password {
        // As written, and percent-decoded (as a driver may quote it).
        Some(p) if !p.is_empty() => text.replace(&p, "***").replace(&percent_decoded(&p), "***"),
        _ => text.to_string(),
    }
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Logs in, opens the mailbox, logs out; says how processed mail will be
/// marked when the server needs the fallback to moves (no custom
/// keywords), which needs a read-write SELECT to see.
async fn check_imap(
    cfg: &InboxConfig,
    oauth: &liaison::oauth::OAuthClients,
) -> Result<Option<String>, String> {
    let login =
        liaison::io::imap_login::ImapLogin::for_inbox(cfg, oauth).map_err(|e| e.to_string())?;
    if let liaison_core::config::ProcessedMark::Keyword(_) = cfg.processed {
        return liaison::io::imap::check_mailbox(cfg, &login)
            .await
            .map_err(|e| e.to_string());
    }
    check_imap_read_only(cfg, &login).await.map(|()| None)
}

/// Logs in, opens the mailbox read-only, logs out.
async fn check_imap_read_only(
    cfg: &InboxConfig,
    login: &liaison::io::imap_login::ImapLogin,
) -> Result<(), String> {
    let mut session = liaison::io::imap::connect(cfg, login)
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

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn a_password_in_an_error_is_replaced() {
        let url = "postgres://liaison:s3cr%21t@db.example:5432/liaison?sslmode=require";
        assert_eq!(
            without_password("auth failed for s3cr%21t at db.example", url),
            "auth failed for *** at db.example"
        );
        assert_eq!(without_password("bad s3cr!t", url), "bad ***");
        assert_eq!(
            without_password("x password=hunter2 y", "host=db user=l password=hunter2"),
            "x password=*** y"
        );
        // No password: nothing to replace.
        assert_eq!(
            without_password("refused", "postgres://db/liaison"),
            "refused"
        );
        assert_eq!(
            without_password("refused", "postgres://l@db/liaison"),
            "refused"
        );
    }
}
