//! Liaison's SMTP client (`smtp::Mailer`, its own `TCP_NODELAY`
//! connections with lettre speaking the protocol) against the loopback
//! Postfix (`tests/mailstack.sh up`): each transport security mode (plain,
//! STARTTLS on 2525, implicit TLS on 2465) delivers mail that arrives in
//! Dovecot, `check` answers, and a server certificate the client does not
//! trust is refused as a temporary failure.

mod common;

use common::*;
use liaison::io::smtp::Mailer;
use liaison::store::OutgoingMail;
use liaison_core::config::{SmtpConfig, TlsMode};

const ALICE: &str = "alice@contoso.test";

fn smtp(port: u16, tls: TlsMode, trust_stack_ca: bool) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        tls,
        ca_file: trust_stack_ca.then(stack_cert),
        username: None,
        password: None,
        oauth2: None,
        timeout_secs: 10,
        max_connections: 2,
    }
}

fn outgoing(id: &str, subject: &str) -> OutgoingMail {
    OutgoingMail {
        message_id: id.into(),
        envelope_from: "commands@liaison.test".into(),
        recipients: vec![ALICE.into()],
        raw: format!(
            "From: Liaison <commands@liaison.test>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\
             Message-ID: <{id}>\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n\r\nHello.\r\n"
        ),
        subject: subject.into(),
        invitation: None,
        ticket: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tls_mode_delivers_and_an_untrusted_certificate_is_refused() {
    let _serial = serial().await;
    require_mailstack();
    clear_mailbox(ALICE).await;
    let run = std::process::id();
    for (name, config) in [
        ("plain", smtp(*SMTP_PORT, TlsMode::None, false)),
        ("starttls", smtp(*SMTP_PORT, TlsMode::Starttls, true)),
        ("tls", smtp(*SMTPS_PORT, TlsMode::Tls, true)),
    ] {
        let mailer = Mailer::new(&config).unwrap();
        assert!(mailer.check().await.unwrap(), "{name}: check");
        // Two mails: the second goes over the connection the first left idle.
        for n in 1..=2 {
            let subject = format!("smtp test {run} {name} {n}");
            mailer
                .send(&outgoing(
                    &format!("smtp.{run}.{name}.{n}@liaison.test"),
                    &subject,
                ))
                .await
                .unwrap_or_else(|e| panic!("{name}: mail {n}: {e}"));
            let got = wait_for(ALICE, &subject, |m| m.subject == subject).await;
            assert_eq!(got.text.trim(), "Hello.");
            if name != "plain" {
                // Postfix notes the TLS session in its Received header.
                assert!(
                    got.raw.contains("with ESMTPS"),
                    "{name}: not encrypted:\n{}",
                    got.raw
                );
            }
        }
    }
    // Without the test CA, neither TLS mode trusts the server.
    for (name, config) in [
        ("starttls", smtp(*SMTP_PORT, TlsMode::Starttls, false)),
        ("tls", smtp(*SMTPS_PORT, TlsMode::Tls, false)),
    ] {
        let mailer = Mailer::new(&config).unwrap();
        let e = mailer
            .send(&outgoing(
                &format!("smtp.{run}.untrusted.{name}@liaison.test"),
                "never",
            ))
            .await
            .expect_err("an untrusted certificate must be refused");
        assert!(!e.is_permanent(), "{name}: {e}");
        assert!(
            e.to_string().contains("TLS") || e.to_string().contains("certificate"),
            "{name}: {e}"
        );
        assert!(mailer.check().await.is_err(), "{name}: check passed");
    }
}
