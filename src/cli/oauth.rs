//! `oauth login NAME` (the device authorization grant) and `oauth status`.

use anyhow::{Context as _, Result};
use liaison::io::admin::Request;
use liaison::oauth::{Grant, OAuthClients, TokenStatus};
use liaison_core::config::Config;

/// `liaison oauth login NAME`: prints where to sign in, waits, stores the
/// refresh token.
pub async fn login(config: &Config, name: &str) -> Result<()> {
    let clients = OAuthClients::new(&config.oauth2)?;
    let client = clients.get(name).with_context(|| {
        let names: Vec<&str> = config.oauth2.iter().map(|c| c.name.as_str()).collect();
        format!(
            "no [[oauth2]] client is named `{name}` (configured: {})",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )
    })?;
    let Grant::RefreshToken { file } = &client.config().grant else {
        anyhow::bail!(
            "oauth2 client `{name}` uses grant = \"client_credentials\": it needs no login (check it with `liaison check-config`)"
        );
    };
    if client.config().provider == liaison::oauth::Provider::Google
        && client.config().device_authorization_url.as_deref()
            == Some("https://oauth2.googleapis.com/device/code")
    {
        anyhow::bail!(
            "Google's device login does not allow the Gmail scope (https://mail.google.com/): get the refresh token with the authorization code flow as the README says (Running it for real: Google Workspace and Gmail) and write it to {}",
            file.display()
        );
    }
    let file = file.clone();
    liaison::oauth::device::login(&client, |prompt| {
        match &prompt.verification_uri_complete {
            Some(complete) => println!(
                "To sign in, open {complete}\n(or open {} and enter the code {})",
                prompt.verification_uri, prompt.user_code
            ),
            None => println!(
                "To sign in, open {} and enter the code {}",
                prompt.verification_uri, prompt.user_code
            ),
        }
        println!(
            "Sign in as the mailbox this client is for. Waiting up to {} minutes…",
            prompt.expires_in_secs.div_ceil(60)
        );
    })
    .await?;
    println!(
        "signed in: the refresh token of `{name}` is stored in {} (mode 0600); a running daemon picks it up at its next token request",
        file.display()
    );
    Ok(())
}

/// `liaison oauth status [--json]`: asks the running daemon.
pub async fn status(config: &Config, json: bool) -> Result<()> {
    if config.oauth2.is_empty() {
        anyhow::bail!("no [[oauth2]] client is configured");
    }
    let daemon = if config.admin_socket.exists() {
        liaison::io::admin::request(&config.admin_socket, &Request::OAuthStatus)
            .await
            .ok()
    } else {
        None
    };
    let Some(value) = daemon else {
        // No daemon: say what is configured and stored, without asking the
        // endpoint (a refresh here would rotate the token under a daemon
        // about to start).
        let rows: Vec<serde_json::Value> = config
            .oauth2
            .iter()
            .map(|c| {
                let stored = match &c.grant {
                    Grant::ClientCredentials => "client credentials (no stored token)".to_string(),
                    Grant::RefreshToken { file } => match std::fs::metadata(file) {
                        Ok(_) => format!("refresh token stored in {}", file.display()),
                        Err(_) => format!(
                            "no refresh token in {}: run `liaison oauth login {}`",
                            file.display(),
                            c.name
                        ),
                    },
                };
                serde_json::json!({"client": c.name, "state": "daemon not running", "stored": stored})
            })
            .collect();
        if json {
            println!("{}", serde_json::to_string(&rows)?);
        } else {
            for r in &rows {
                println!(
                    "{:<12} daemon not running; {}",
                    r["client"].as_str().unwrap_or_default(),
                    r["stored"].as_str().unwrap_or_default()
                );
            }
        }
        return Ok(());
    };
    let statuses: Vec<TokenStatus> = serde_json::from_value(value)?;
    if json {
        println!("{}", serde_json::to_string(&statuses)?);
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for s in &statuses {
        let expiry = match s.expires_at {
            Some(at) if at > now => format!(
                "token expires {} (in {} s)",
                liaison_core::model::time::rfc3339(at),
                at - now
            ),
            Some(at) => format!("token expired {}", liaison_core::model::time::rfc3339(at)),
            None => "no token".into(),
        };
        println!(
            "{:<12} {}; {expiry}; {} failed token requests",
            s.client, s.state, s.refresh_failures
        );
    }
    if statuses.iter().any(|s| !s.is_ok()) {
        anyhow::bail!("not every oauth2 client has a fresh token");
    }
    Ok(())
}
