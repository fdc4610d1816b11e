//! The OAuth2 token client against the token endpoint emulator
//! (`tests/common/token_emulator.rs`, a stand-in for Entra ID written from
//! its published reference): caching, one refresh at a time, refresh before
//! expiry, refused tokens, rotation saved before use, outages and
//! revocations. No mail server is needed (the emulator signs with its own
//! key here).

mod common;

use common::token_emulator::TokenEmulator;
use liaison::files::EnvAndFiles;
use liaison::oauth::{OAuth2Config, OAuthClients, OAuthError, TokenClient};
use std::sync::Arc;
use std::time::Duration;

fn emulator() -> TokenEmulator {
    TokenEmulator::with_key(b"test-key-not-the-stack-one".to_vec())
}

fn app_client(emu: &TokenEmulator) -> TokenClient {
    emu.register_app("app-1", "app-secret-1", "liaison.test");
    TokenClient::new(
        OAuth2Config::from_toml(&format!(
            "name = \"m365\"\ntoken_url = \"{}\"\nclient_id = \"app-1\"\nclient_secret = \"app-secret-1\"\nscope = \"https://outlook.office365.com/.default\"\ntimeout_secs = 5\n",
            emu.token_url("contoso.onmicrosoft.com")
        ), &EnvAndFiles)
        .unwrap(),
    )
    .unwrap()
}

fn refresh_client(emu: &TokenEmulator, file: &std::path::Path) -> TokenClient {
    TokenClient::new(
        OAuth2Config::from_toml(&format!(
            "name = \"outlook\"\ntoken_url = \"{}\"\ndevice_authorization_url = \"{}\"\nclient_id = \"public-1\"\nscope = \"https://outlook.office365.com/IMAP.AccessAsUser.All offline_access\"\ngrant = \"refresh_token\"\nrefresh_token_file = \"{}\"\ntimeout_secs = 5\n",
            emu.token_url("consumers"),
            emu.device_url("consumers"),
            file.display()
        ), &EnvAndFiles)
        .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_is_cached_and_twenty_callers_cause_one_request() {
    let emu = emulator();
    let client = Arc::new(app_client(&emu));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.bearer().await.unwrap() }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    assert_eq!(emu.issued("client_credentials"), 1, "one refresh at a time");
    assert!(tokens.iter().all(|t| t.secret() == tokens[0].secret()));
    assert_eq!(tokens[0].secret().split('.').count(), 3, "a JWT");
    client.bearer().await.unwrap();
    assert_eq!(
        emu.issued("client_credentials"),
        1,
        "answered from the cache"
    );
    assert!(client.status().is_ok());
    assert!(!format!("{:?}", tokens[0]).contains(tokens[0].secret()));
}

#[tokio::test]
async fn a_token_is_refreshed_when_a_tenth_of_its_lifetime_remains() {
    let emu = emulator();
    emu.set_lifetime(3);
    let client = app_client(&emu);
    let first = client.bearer().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let same = client.bearer().await.unwrap();
    assert_eq!(same.generation, first.generation, "2 s of 3 s: not due yet");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let fresh = client.bearer().await.unwrap();
    assert_eq!(emu.issued("client_credentials"), 2);
    assert!(fresh.generation > first.generation);
    assert!(fresh.expires_at_ms > first.expires_at_ms);
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_not_for_every_caller() {
    let emu = emulator();
    let client = app_client(&emu);
    let first = client.bearer().await.unwrap();
    let second = client.refused(&first).await.unwrap();
    assert!(second.generation > first.generation);
    assert_eq!(emu.issued("client_credentials"), 2);
    // Another connection reports the same old token: the new one stands.
    let again = client.refused(&first).await.unwrap();
    assert_eq!(again.generation, second.generation);
    assert_eq!(emu.issued("client_credentials"), 2);
}

#[tokio::test]
async fn an_outage_backs_off_and_recovers() {
    let emu = emulator();
    emu.set_lifetime(2);
    let client = app_client(&emu);
    let held = client.bearer().await.unwrap();
    emu.set_down(true);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = client.bearer().await.unwrap_err();
    assert!(matches!(e, OAuthError::Unreachable { .. }), "{e:?}");
    let status = client.status();
    assert!(
        !status.is_ok() && status.state.contains("unreachable"),
        "{status:?}"
    );
    assert_eq!(status.refresh_failures, 1);
    // Within the backoff (1 s after the first failure): no request at all.
    let requests = emu.requests();
    let e = client.bearer().await.unwrap_err();
    assert!(matches!(e, OAuthError::BackingOff { .. }), "{e:?}");
    assert_eq!(emu.requests(), requests);
    emu.set_down(false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = client.bearer().await.unwrap();
    assert!(fresh.generation > held.generation);
    assert!(client.status().is_ok());
}

#[tokio::test]
async fn a_due_token_is_still_handed_out_while_the_endpoint_is_down() {
    // A tenth of 12 s is 1.2 s: the token is due before its last second.
    let emu = emulator();
    emu.set_lifetime(12);
    let client = app_client(&emu);
    let held = client.bearer().await.unwrap();
    emu.set_down(true);
    tokio::time::sleep(Duration::from_millis(10_900)).await;
    let still = client.bearer().await.unwrap();
    assert_eq!(still.generation, held.generation);
    assert_eq!(client.status().refresh_failures, 1, "a refresh was tried");
    assert!(!client.status().is_ok(), "health says the refresh failed");
}

#[tokio::test]
async fn a_revoked_client_gets_a_clear_error_naming_the_secret_expiry() {
    let emu = emulator();
    let client = app_client(&emu);
    emu.revoke_client("app-1");
    let e = client.bearer().await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, OAuthError::Refused { .. }), "{e:?}");
    assert!(e.needs_operator());
    assert!(
        text.contains("invalid_client") && text.contains("AADSTS7000222"),
        "{text}"
    );
    assert!(
        text.contains("expiry date in the app registration"),
        "{text}"
    );
    assert!(
        !text.contains("app-secret-1"),
        "the secret never shows: {text}"
    );
    let status = client.status();
    assert!(!status.is_ok() && status.state.contains("invalid_client"));
}

#[tokio::test]
async fn a_wrong_secret_is_invalid_client_too() {
    let emu = emulator();
    emu.register_app("app-1", "the-right-one", "liaison.test");
    let client = TokenClient::new(
        OAuth2Config::from_toml(&format!(
            "name = \"m365\"\ntoken_url = \"{}\"\nclient_id = \"app-1\"\nclient_secret = \"a-wrong-one\"\nscope = \"https://outlook.office365.com/.default\"\n",
            emu.token_url("t")
        ), &EnvAndFiles)
        .unwrap(),
    )
    .unwrap();
    let text = client.bearer().await.unwrap_err().to_string();
    assert!(
        text.contains("AADSTS7000215") && !text.contains("a-wrong-one"),
        "{text}"
    );
}

#[tokio::test]
async fn a_rotated_refresh_token_is_saved_before_use_and_survives_a_restart() {
    let emu = emulator();
    emu.register_public_app("public-1", "liaison.test");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outlook.token");
    let first = emu.issue_refresh_token("public-1", "invites@liaison.test");
    std::fs::write(&file, format!("{first}\n")).unwrap();
    let client = refresh_client(&emu, &file);
    client.bearer().await.unwrap();
    let saved = std::fs::read_to_string(&file).unwrap();
    assert_ne!(saved.trim(), first, "the rotated token is in the file");
    assert!(!emu.refresh_token_valid(&first), "the old one is used up");
    assert!(emu.refresh_token_valid(&saved));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(client);
    // A restart: a new client reads the file and goes on.
    let restarted = refresh_client(&emu, &file);
    restarted.bearer().await.unwrap();
    assert_eq!(emu.issued("refresh_token"), 2);
    assert!(emu.refresh_token_valid(&std::fs::read_to_string(&file).unwrap()));
}

#[tokio::test]
async fn a_dead_refresh_token_says_to_run_oauth_login() {
    let emu = emulator();
    emu.register_public_app("public-1", "liaison.test");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outlook.token");
    let missing = refresh_client(&emu, &file)
        .bearer()
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("liaison oauth login outlook"), "{missing}");
    std::fs::write(
        &file,
        emu.issue_refresh_token("public-1", "invites@liaison.test"),
    )
    .unwrap();
    emu.revoke_refresh_tokens("public-1");
    let e = refresh_client(&emu, &file).bearer().await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("invalid_grant") && text.contains("run `liaison oauth login outlook` again"),
        "{text}"
    );
}

#[tokio::test]
async fn a_server_error_answer_is_temporary() {
    let emu = emulator();
    let client = app_client(&emu);
    emu.fail_next(
        503,
        r#"{"error":"temporarily_unavailable","error_description":"AADSTS90033: busy"}"#,
    );
    let e = client.bearer().await.unwrap_err();
    assert!(
        matches!(e, OAuthError::Unreachable { .. }) && !e.needs_operator(),
        "{e:?}"
    );
    emu.fail_next(502, "<html>bad gateway</html>");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = client.bearer().await.unwrap_err();
    assert!(matches!(e, OAuthError::Unreachable { .. }), "{e:?}");
}

#[tokio::test]
async fn device_login_stores_the_refresh_token() {
    let emu = emulator();
    emu.register_public_app("public-1", "liaison.test");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outlook.token");
    let client = refresh_client(&emu, &file);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let login = liaison::oauth::device::login(&client, |prompt| {
        assert_eq!(prompt.verification_uri, "https://microsoft.com/devicelogin");
        tx.send(prompt.user_code.clone()).unwrap();
    });
    let approve = async {
        let code = tokio::task::spawn_blocking(move || rx.recv().unwrap())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(emu.approve_device(&code, "invites@liaison.test"));
    };
    let (result, ()) = tokio::join!(login, approve);
    result.unwrap();
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(emu.refresh_token_valid(&stored));
    // The stored token works.
    refresh_client(&emu, &file).bearer().await.unwrap();
}

#[tokio::test]
async fn metrics_name_each_client_with_failures_and_expiry() {
    let emu = emulator();
    emu.register_app("app-1", "s", "liaison.test");
    let configs = vec![OAuth2Config::from_toml(&format!(
        "name = \"m365\"\ntoken_url = \"{}\"\nclient_id = \"app-1\"\nclient_secret = \"s\"\nscope = \"x/.default\"\n",
        emu.token_url("t")
    ), &EnvAndFiles)
    .unwrap()];
    let clients = OAuthClients::new(&configs).unwrap();
    clients.get("m365").unwrap().bearer().await.unwrap();
    let text = clients.render_metrics();
    assert!(
        text.contains("liaison_oauth_refresh_failures_total{client=\"m365\"} 0"),
        "{text}"
    );
    let expiry: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("liaison_oauth_token_expiry_seconds{client=\"m365\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&expiry), "{expiry}");
}

#[test]
fn the_oauth_login_command_prints_the_code_and_stores_the_token() {
    use std::io::BufRead;
    let emu = emulator();
    emu.register_public_app("public-1", "liaison.test");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outlook.token");
    let config = dir.path().join("liaison.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[oauth2]]\nname = \"outlook\"\ntoken_url = \"{}\"\ndevice_authorization_url = \"{}\"\nclient_id = \"public-1\"\nscope = \"https://outlook.office365.com/IMAP.AccessAsUser.All offline_access\"\ngrant = \"refresh_token\"\nrefresh_token_file = \"{}\"\n",
            common::config_text(dir.path(), common::Transport::Plain),
            emu.token_url("consumers"),
            emu.device_url("consumers"),
            file.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_liaison"))
        .arg("--config")
        .arg(&config)
        .args(["oauth", "login", "outlook"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("To sign in, open https://microsoft.com/devicelogin and enter the code "),
        "{first}"
    );
    let code = first.rsplit(' ').next().unwrap().to_string();
    assert!(emu.approve_device(&code, "invites@liaison.test"));
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{rest:?}");
    assert!(rest.iter().any(|l| l.starts_with("signed in:")), "{rest:?}");
    assert!(emu.refresh_token_valid(&std::fs::read_to_string(&file).unwrap()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // No daemon: `oauth status` says so and what is stored.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liaison"))
        .arg("--config")
        .arg(&config)
        .args(["oauth", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("outlook")
            && text.contains("daemon not running")
            && text.contains("refresh token stored"),
        "{text}"
    );
}
