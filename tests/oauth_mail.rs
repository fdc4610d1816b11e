//! OAuth2 logins against the real loopback Dovecot (IMAP) and Postfix
//! (submission, SASL through Dovecot), with tokens from the token endpoint
//! emulator signed with the key Dovecot trusts: both mechanisms, the one
//! retry after a refused token, a token for another domain, and SMTP
//! connections not reused past their token.

mod common;

use common::token_emulator::TokenEmulator;
use common::*;
use liaison::files::EnvAndFiles;
use liaison::io::imap_login::ImapLogin;
use liaison::io::smtp::Mailer;
use liaison::oauth::{Mechanism, OAuth2Config, OAuthClients, TokenClient};
use liaison_core::config::{InboxConfig, Login, OAuthLogin, ProcessedMark, SmtpConfig, TlsMode};
use liaison_core::effects::OutgoingMail;
use std::sync::Arc;
use std::time::Duration;

fn client(emu: &TokenEmulator, secret: &str) -> Arc<TokenClient> {
    Arc::new(
        TokenClient::new(
            OAuth2Config::from_toml(
                &format!(
                    "name = \"m365\"\ntoken_url = \"{}\"\nclient_id = \"app-1\"\nclient_secret = \"{secret}\"\nscope = \"https://outlook.office365.com/.default\"\n",
                    emu.token_url("liaison.test")
                ),
                &EnvAndFiles,
            )
            .unwrap(),
        )
        .unwrap(),
    )
}

fn inbox(user: &str, tls: TlsMode, port: u16, mechanism: Mechanism) -> InboxConfig {
    InboxConfig {
        name: "t".into(),
        host: "127.0.0.1".into(),
        port,
        tls,
        ca_file: (tls != TlsMode::None).then(stack_cert),
        username: user.into(),
        login: Login::OAuth2(OAuthLogin {
            client: "m365".into(),
            mechanism,
        }),
        mailbox: "INBOX".into(),
        idle: true,
        poll_interval_secs: 1,
        timeout_secs: 10,
        processed: ProcessedMark::Keyword("$LiaisonProcessed".into()),
        quarantine_folder: "Liaison/Quarantine".into(),
    }
}

fn token_login(c: &Arc<TokenClient>, mechanism: Mechanism) -> ImapLogin {
    ImapLogin::Token {
        client: c.clone(),
        mechanism,
    }
}

fn dovecot_logins(method: &str, user: &str) -> usize {
    let log = std::fs::read_to_string(stack_dir().join("log/dovecot-info.log")).unwrap_or_default();
    let needle = format!("Login: user=<{user}>, method={method},");
    log.lines().filter(|l| l.contains(&needle)).count()
}

fn postfix_sasl(method: &str, user: &str) -> usize {
    let log = std::fs::read_to_string(stack_dir().join("log/postfix.log")).unwrap_or_default();
    let needle = format!("sasl_method={method}, sasl_username={user}");
    log.lines().filter(|l| l.contains(&needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_logs_in_with_either_mechanism_over_every_transport() {
    require_mailstack();
    let emu = TokenEmulator::start();
    emu.register_app("app-1", "s1", "liaison.test");
    let c = client(&emu, "s1");
    for (tls, port) in [
        (TlsMode::None, *IMAP_PORT),
        (TlsMode::Starttls, *IMAP_PORT),
        (TlsMode::Tls, *IMAPS_PORT),
    ] {
        for mechanism in [Mechanism::Xoauth2, Mechanism::Oauthbearer] {
            let before = dovecot_logins(mechanism.name(), "commands@liaison.test");
            let cfg = inbox("commands@liaison.test", tls, port, mechanism);
            let mut session = liaison::io::imap::connect(&cfg, &token_login(&c, mechanism))
                .await
                .unwrap_or_else(|e| panic!("{tls:?} {mechanism:?}: {e}"));
            session.select("INBOX").await.unwrap();
            session.logout().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(
                dovecot_logins(mechanism.name(), "commands@liaison.test"),
                before + 1,
                "Dovecot saw a {} login ({tls:?})",
                mechanism.name()
            );
        }
    }
    // One app token served every login.
    assert_eq!(emu.issued("client_credentials"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_gets_one_fresh_token_and_one_retry_then_an_error() {
    require_mailstack();
    // Signed with a key Dovecot does not trust: every token is refused.
    let emu = TokenEmulator::with_key(b"not-the-key-dovecot-trusts".to_vec());
    emu.register_app("app-1", "s1", "liaison.test");
    let c = client(&emu, "s1");
    let cfg = inbox(
        "commands@liaison.test",
        TlsMode::None,
        *IMAP_PORT,
        Mechanism::Xoauth2,
    );
    let Err(e) = liaison::io::imap::connect(&cfg, &token_login(&c, Mechanism::Xoauth2)).await
    else {
        panic!("the login should be refused");
    };
    let text = e.to_string();
    assert!(
        text.contains("token refused twice") && text.contains("status 401"),
        "{text}"
    );
    assert!(text.contains("Add-MailboxPermission"), "{text}");
    assert_eq!(
        emu.issued("client_credentials"),
        2,
        "one fresh token for the one retry"
    );
    let token = c.bearer().await.unwrap();
    assert!(!text.contains(token.secret()), "no token in the error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_failure_for_a_token_is_no_endless_retry() {
    require_mailstack();
    // Without the claim Dovecot matches, it answers NO [UNAVAILABLE]
    // ("temporary"): one fresh token, one retry, then an error, like any
    // refusal, so the watcher backs off instead of looping.
    let emu = TokenEmulator::start();
    emu.register_app("app-1", "s1", "liaison.test");
    emu.omit_username_claim(true);
    let c = client(&emu, "s1");
    let cfg = inbox(
        "commands@liaison.test",
        TlsMode::None,
        *IMAP_PORT,
        Mechanism::Xoauth2,
    );
    let started = std::time::Instant::now();
    let Err(e) = liaison::io::imap::connect(&cfg, &token_login(&c, Mechanism::Xoauth2)).await
    else {
        panic!("the login should fail");
    };
    assert!(e.to_string().contains("token refused twice"), "{e}");
    assert_eq!(emu.issued("client_credentials"), 2);
    assert!(started.elapsed() < Duration::from_secs(9), "no retry loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_domain_and_a_password_as_token_are_refused() {
    require_mailstack();
    let emu = TokenEmulator::start();
    emu.register_app("app-1", "s1", "fabrikam.test");
    let c = client(&emu, "s1");
    let cfg = inbox(
        "commands@liaison.test",
        TlsMode::None,
        *IMAP_PORT,
        Mechanism::Xoauth2,
    );
    assert!(
        liaison::io::imap::connect(&cfg, &token_login(&c, Mechanism::Xoauth2))
            .await
            .is_err()
    );
    // The password where a token belongs: the oauth2 passdb alone judges
    // XOAUTH2, so it fails (a missing mechanisms filter would let it in).
    let mut session_cfg = cfg.clone();
    session_cfg.login = Login::Password(liaison_core::config::Secret::new(PASSWORD));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", *IMAP_PORT))
        .await
        .unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap();
    struct Raw(Vec<u8>);
    impl async_imap::Authenticator for &Raw {
        type Response = Vec<u8>;
        fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
            if challenge.is_empty() {
                self.0.clone()
            } else {
                Vec::new()
            }
        }
    }
    let raw = Raw(Mechanism::Xoauth2.initial_response("commands@liaison.test", PASSWORD, "h", 1));
    assert!(
        client.authenticate("XOAUTH2", &raw).await.is_err(),
        "a password is no token"
    );
    // And a token is no password.
    let token = emu.mint(
        serde_json::json!({"sub": "x", "tenant_domain": "@liaison.test"}),
        60,
    );
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", *IMAP_PORT))
        .await
        .unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap();
    assert!(
        client.login("commands@liaison.test", &token).await.is_err(),
        "a token is no password"
    );
}

fn smtp_cfg(mechanism: Mechanism) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: *SUBMISSION_PORT,
        tls: TlsMode::Starttls,
        ca_file: Some(stack_cert()),
        username: Some("invites@liaison.test".into()),
        password: None,
        oauth2: Some(OAuthLogin {
            client: "m365".into(),
            mechanism,
        }),
        timeout_secs: 10,
        max_connections: 1,
    }
}

fn mail(id: &str, subject: &str) -> OutgoingMail {
    OutgoingMail {
        message_id: id.into(),
        envelope_from: "invites@liaison.test".into(),
        recipients: vec!["carol@contoso.test".into()],
        raw: format!(
            "From: Liaison <invites@liaison.test>\r\nTo: carol@contoso.test\r\nSubject: {subject}\r\n\
             Message-ID: <{id}>\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n\r\nHello.\r\n"
        ),
        subject: subject.into(),
        invitation: None,
        ticket: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sends_with_tokens_and_does_not_reuse_a_connection_past_its_token() {
    let _serial = serial().await;
    require_mailstack();
    clear_mailbox("carol@contoso.test").await;
    let emu = TokenEmulator::start();
    emu.register_app("app-1", "s1", "liaison.test");
    emu.set_lifetime(3);
    let configs = vec![client(&emu, "s1").config().clone()];
    let clients = OAuthClients::new(&configs).unwrap();
    let run = std::process::id();
    for mechanism in [Mechanism::Xoauth2, Mechanism::Oauthbearer] {
        let mailer = Mailer::with_oauth(&smtp_cfg(mechanism), &clients).unwrap();
        assert!(mailer.check().await.unwrap(), "{mechanism:?}");
        let before = postfix_sasl(mechanism.name(), "invites@liaison.test");
        for i in 0..2 {
            mailer
                .send(&mail(
                    &format!("oauth.{run}.{mechanism:?}.{i}@liaison.test"),
                    &format!("oauth {mechanism:?} {i}"),
                ))
                .await
                .unwrap();
        }
        // Two mails on one pooled connection: one login.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            postfix_sasl(mechanism.name(), "invites@liaison.test"),
            before + 2,
            "Postfix logs sasl_method on each mail"
        );
        // Past the token's lifetime: a new connection and login.
        let issued = emu.issued("client_credentials");
        tokio::time::sleep(Duration::from_millis(3100)).await;
        mailer
            .send(&mail(
                &format!("oauth.{run}.{mechanism:?}.late@liaison.test"),
                &format!("oauth {mechanism:?} late"),
            ))
            .await
            .unwrap();
        assert!(
            emu.issued("client_credentials") > issued,
            "a fresh token for the new connection"
        );
    }
    for subject in [
        "oauth Xoauth2 0",
        "oauth Xoauth2 late",
        "oauth Oauthbearer 1",
        "oauth Oauthbearer late",
    ] {
        wait_for("carol@contoso.test", subject, |m| m.subject == subject).await;
    }
    // A refused token at SMTP reads as a refusal, with the server's answer.
    let bad = TokenEmulator::with_key(b"wrong".to_vec());
    bad.register_app("app-1", "s1", "liaison.test");
    let clients = OAuthClients::new(&[client(&bad, "s1").config().clone()]).unwrap();
    let e = Mailer::with_oauth(&smtp_cfg(Mechanism::Xoauth2), &clients)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("token refused twice") && e.contains("535"),
        "{e}"
    );
    assert_eq!(bad.issued("client_credentials"), 2);
}
