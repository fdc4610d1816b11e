//! Inbound mail, end to end through the pure core: arbitrary bytes as a raw
//! message through `liaison_core::mail::inbound::parse`, then — when it parses — the
//! reply splitter, the intent reader, the command parser and the whole
//! decision `liaison_core::decide::decide`, and every planned mail through
//! `liaison_core::render::compose::compose` with the shipped templates.
//!
//! The decision runs twice: against an empty in-memory store, and against
//! one holding a single pending invitation (partner `northwind`, customer
//! `alice@contoso.test`, sent as `<liaison.seed@liaison.test>`), so customer
//! answers threaded to it reach the relationship code too.
//!
//! Invariants besides "never panics":
//! * the parsed From, To/Cc and Delivered-To addresses are normalised
//!   (lowercase plain `local@domain`, nothing that could inject a header);
//! * reading a store that cannot fail never yields an error;
//! * the decision is deterministic (same mail, same state, same decision);
//! * an automatic mail (RFC 3834) is never answered;
//! * every planned recipient is a normalised address, and every planned mail
//!   composes; fed back through `inbound::parse`, a composed mail is
//!   recognised as Liaison's own automatic mail (so it is never answered)
//!   and carries the planned Message-ID.
#![no_main]

use liaison_core::config::Config;
use liaison_core::decide::{decide, Context, MailClass};
use liaison_core::effects::StoreView;
use liaison_core::model::invitation::Invitation;
use liaison_core::model::relationship::Relationship;
use liaison_core::model::ticket::Ticket;
use liaison_core::model::token::TokenKey;
use liaison_core::render::templates::Templates;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

/// 2026-05-28T20:26:40Z.
const NOW: u64 = 1_780_000_000;
const MAX_BYTES: usize = 1 << 20;

const CONFIG: &str = r#"
[store]
path = "/nonexistent/liaison-fuzz"
[[inbox]]
name = "commands"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "commands@liaison.test"
password = "pw"
[smtp]
host = "127.0.0.1"
port = 2525
tls = "none"
[addresses]
commands = "commands@liaison.test"
invitations = "invites@liaison.test"
support_desk = "helpdesk@liaison.test"
[security]
token_secret = "0123456789abcdef0123"
[[partner]]
id = "northwind"
name = "Northwind"
emails = ["Partner1@liaison.test"]
"#;

/// A store view holding at most one relationship and its invitation.
#[derive(Default)]
struct MemStore {
    seeded: Option<(Relationship, Invitation)>,
}

impl StoreView for MemStore {
    fn relationship(
        &self,
        partner: &str,
        customer: &str,
    ) -> liaison_core::effects::Result<Option<Relationship>> {
        Ok(self
            .seeded
            .as_ref()
            .map(|(r, _)| r)
            .filter(|r| r.partner == partner && r.customer == customer)
            .cloned())
    }
    fn relationships_of(&self, partner: &str) -> liaison_core::effects::Result<Vec<Relationship>> {
        Ok(self.relationship_list(|r| r.partner == partner))
    }
    fn relationships_with(
        &self,
        customer: &str,
    ) -> liaison_core::effects::Result<Vec<Relationship>> {
        Ok(self.relationship_list(|r| r.customer == customer))
    }
    fn invitation(&self, id: u64) -> liaison_core::effects::Result<Option<Invitation>> {
        Ok(self
            .seeded
            .as_ref()
            .map(|(_, i)| i)
            .filter(|i| i.id == id)
            .cloned())
    }
    fn invitation_by_message_id(
        &self,
        message_id: &str,
    ) -> liaison_core::effects::Result<Option<u64>> {
        Ok(self
            .seeded
            .as_ref()
            .map(|(_, i)| i)
            .filter(|i| i.message_id == message_id)
            .map(|i| i.id))
    }
    fn all_relationships(&self) -> liaison_core::effects::Result<Vec<Relationship>> {
        Ok(self.relationship_list(|_| true))
    }
    fn ticket(&self, _id: u64) -> liaison_core::effects::Result<Option<Ticket>> {
        Ok(None)
    }
    fn ticket_by_message_id(
        &self,
        _message_id: &str,
    ) -> liaison_core::effects::Result<Option<u64>> {
        Ok(None)
    }
    fn tickets_of(&self, _partner: &str) -> liaison_core::effects::Result<Vec<Ticket>> {
        Ok(Vec::new())
    }
    fn last_ticket_id(&self) -> liaison_core::effects::Result<u64> {
        Ok(0)
    }
}

impl MemStore {
    fn relationship_list(&self, keep: impl Fn(&Relationship) -> bool) -> Vec<Relationship> {
        self.seeded
            .as_ref()
            .map(|(r, _)| r)
            .filter(|r| keep(r))
            .cloned()
            .into_iter()
            .collect()
    }

    /// One pending invitation, built through serde so that fields added to
    /// the records later with `#[serde(default)]` need no change here.
    fn seeded() -> Self {
        let sent = NOW - 86_400;
        let inv: Invitation = serde_json::from_value(serde_json::json!({
            "id": 1, "kind": "invitation", "partner": "northwind",
            "customer": "alice@contoso.test", "customer_name": "Contoso",
            "locale": "en", "created": sent, "expires": NOW + 30 * 86_400,
            "message_id": "liaison.seed@liaison.test", "draft": false,
        }))
        .expect("seed invitation");
        let rel: Relationship = serde_json::from_value(serde_json::json!({
            "partner": "northwind", "customer": "alice@contoso.test",
            "customer_name": "Contoso", "locale": "en", "state": "invited",
            "since": sent, "invitation_id": 1,
            "history": [{"at": sent, "from": null, "to": "invited",
                         "actor": "partner1@liaison.test",
                         "message_id": "seed-command@liaison.test"}],
        }))
        .expect("seed relationship");
        MemStore {
            seeded: Some((rel, inv)),
        }
    }
}

struct Fixture {
    config: Config,
    tokens: TokenKey,
    templates: Option<Templates>,
    empty: MemStore,
    seeded: MemStore,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let config = Config::parse(CONFIG, Path::new("fuzz.toml"), &liaison::files::EnvAndFiles)
            .expect("fuzz config is valid");
        let tokens = TokenKey::new(config.security.token_secret.expose().as_bytes());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates");
        let templates = match liaison::files::load_templates(&dir) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!(
                    "WARNING: templates in {} do not load ({e}); compose is not fuzzed",
                    dir.display()
                );
                None
            }
        };
        Fixture {
            config,
            tokens,
            templates,
            empty: MemStore::default(),
            seeded: MemStore::seeded(),
        }
    })
}

fn assert_normalised(what: &str, a: &str) {
    assert_eq!(
        liaison_core::mail::address::normalize(a).as_deref(),
        Some(a),
        "{what} {a:?} is not a normalised address"
    );
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(mail) = liaison_core::mail::inbound::parse(data, MAX_BYTES) else {
        return;
    };
    assert_eq!(mail.size, data.len());
    assert!(!mail.key.is_empty(), "empty dedupe key");
    if let Some(from) = &mail.from {
        assert_normalised("From", from);
    }
    for a in mail.recipients.iter().chain(&mail.delivered_to) {
        assert_normalised("recipient", a);
    }

    let split = liaison_core::mail::reply::split_reply(&mail.text);
    let _ = liaison_core::mail::intent::detect(&split.new_text);
    let _ = liaison_core::command::parse_script(&mail.text);

    let ctx = Context {
        config: &f.config,
        tokens: &f.tokens,
        now: NOW,
    };
    for view in [&f.empty, &f.seeded] {
        let d = decide(&ctx, view, &mail).expect("an in-memory store cannot fail");
        let again = decide(&ctx, view, &mail).expect("an in-memory store cannot fail");
        assert_eq!(d, again, "decision is not deterministic");
        if mail.automatic.is_some() {
            assert_eq!(d.class, MailClass::Ignored, "automatic mail not ignored");
            assert!(
                d.mails.is_empty(),
                "automatic mail answered: {:?}",
                d.summary
            );
        }
        for plan in &d.mails {
            for to in &plan.to {
                assert_normalised("planned recipient", to);
            }
            let Some(templates) = &f.templates else {
                continue;
            };
            let out = liaison_core::render::compose::compose(
                &f.config,
                templates,
                f.tokens.ids(),
                plan,
                NOW,
            )
            .unwrap_or_else(|e| panic!("planned mail {:?} does not compose: {e}", plan.template));
            let back = liaison_core::mail::inbound::parse(out.raw.as_bytes(), usize::MAX)
                .unwrap_or_else(|e| panic!("composed mail does not parse back: {e}\n{}", out.raw));
            assert!(
                back.automatic.is_some(),
                "Liaison's own mail is not recognised as automatic:\n{}",
                out.raw
            );
            assert_eq!(
                back.message_id.as_deref(),
                Some(plan.message_id.as_str()),
                "Message-ID lost in:\n{}",
                out.raw
            );
        }
    }
});
