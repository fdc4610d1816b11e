//! The decision reads a customer's reply with the mail Liaison sent as the
//! known original (issue 15): the store's `sent_mail` gives the composed
//! mail back, and the quoted copy is cut by content even when the client's
//! attribution and quoting are in a format no heuristic knows.
//!
//! Each check is run twice: with the sent mail in the store (the daemon's
//! case), and without it, to show what the heuristics alone would have
//! let through.

use liaison_core::config::Config;
use liaison_core::decide::{decide, Context, Decision, MailPlan};
use liaison_core::mail::inbound::InboundMail;
use liaison_core::model::relationship::RelationshipState;
use liaison_core::model::token::TokenKey;
use liaison_core::render::compose::compose;
use liaison_core::render::templates::{TemplateName, Templates};
use liaison_core::testing::MemStore;
use std::path::Path;

const NOW: u64 = 1_780_000_000;
const ALICE: &str = "alice@contoso.test";

const CONFIG: &str = r#"
[store]
path = "/tmp/liaison-workflow-known-test"

[[inbox]]
name = "invites"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "invites@liaison.test"
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
token_secret = "workflow-known-test-secret-0123456789"

[[partner]]
id = "northwind"
name = "Northwind Traders"
emails = ["partner1@liaison.test"]
locale = "en"
"#;

struct World {
    config: Config,
    key: TokenKey,
    templates: Templates,
    store: MemStore,
    seq: u32,
}

impl World {
    fn new() -> Self {
        let config = Config::parse(CONFIG, Path::new("test.toml"), &liaison::files::EnvAndFiles)
            .expect("test config");
        let key = TokenKey::new(config.security.token_secret.expose().as_bytes());
        let templates = liaison::files::load_templates(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
        )
        .expect("templates");
        World {
            config,
            key,
            templates,
            store: MemStore::default(),
            seq: 0,
        }
    }

    fn decide(&self, mail: &InboundMail, store: &MemStore) -> Decision {
        let ctx = Context {
            config: &self.config,
            tokens: &self.key,
            now: NOW,
        };
        decide(&ctx, store, mail).expect("in-memory store never fails")
    }

    /// Decides, applies, and keeps every composed mail as the store would.
    fn run(&mut self, mail: &InboundMail) -> Decision {
        let d = self.decide(mail, &self.store);
        self.store.apply(&d);
        for plan in &d.mails {
            let sent = compose(&self.config, &self.templates, self.key.ids(), plan, NOW)
                .expect("composes");
            self.store.sent_mails.insert(sent.message_id.clone(), sent);
        }
        d
    }

    fn mail(&mut self, from: &str, to: &str, body: &str) -> InboundMail {
        self.seq += 1;
        let id = format!("in{}@mail.test", self.seq);
        InboundMail {
            message_id: Some(id.clone()),
            key: id,
            from: Some(from.to_string()),
            recipients: vec![to.to_string()],
            delivered_to: vec![to.to_string()],
            subject: "Re: your mail".to_string(),
            text: body.to_string(),
            size: body.len(),
            ..InboundMail::default()
        }
    }

    /// The HTML part of a mail Liaison sent, as text, re-wrapped at 50
    /// columns: how a client with its own HTML converter quotes it.
    fn html_copy(&self, plan: &MailPlan) -> String {
        let sent = &self.store.sent_mails[&plan.message_id];
        let parsed =
            liaison_core::mail::reply::SentMail::from_raw(sent.raw.as_bytes()).expect("parses");
        let mut out = String::new();
        let mut col = 0;
        for word in parsed.html_text.expect("html part").split_whitespace() {
            if col + word.len() > 50 {
                out.push('\n');
                col = 0;
            } else if col > 0 {
                out.push(' ');
            }
            out.push_str(word);
            col += word.len() + 1;
        }
        out
    }
}

fn plan_of(d: &Decision, t: TemplateName) -> MailPlan {
    d.mails
        .iter()
        .find(|p| p.template == t)
        .unwrap_or_else(|| panic!("no {t:?} in {d:#?}"))
        .clone()
}

/// An attribution no heuristic knows (Swahili, no address, no colon).
const ATTRIBUTION: &str = "Mnamo Jumanne tarehe 6 Januari 2026 Liaison aliandika hivi";

#[test]
fn a_support_request_quoting_liaison_mail_in_an_unknown_format_forwards_only_the_request() {
    let mut w = World::new();
    let cmd = w.mail(
        "partner1@liaison.test",
        "commands@liaison.test",
        "invite alice@contoso.test",
    );
    let d = w.run(&cmd);
    let invitation = plan_of(&d, TemplateName::Invitation);
    let token = invitation.vars["token"]
        .as_str()
        .expect("token")
        .to_string();

    // Alice accepts; the invitation is quoted below in a format no
    // heuristic knows.
    let body = format!(
        "Yes, go ahead.\n\n{ATTRIBUTION}\n\n{}\n",
        w.html_copy(&invitation)
    );
    let mut reply = w.mail(ALICE, &format!("invites+{token}@liaison.test"), &body);
    reply.in_reply_to = vec![invitation.message_id.clone()];
    let d = w.run(&reply);
    assert_eq!(
        d.relationships[0].state,
        RelationshipState::Active,
        "{}",
        d.summary
    );
    let confirmation = plan_of(&d, TemplateName::AcceptedCustomer);

    // Then she answers the confirmation with a question: a support request
    // forwarded to the partner, with her text only.
    let question = "Can you add five licences for our new staff?";
    let body = format!(
        "{question}\n\n{ATTRIBUTION}\n\n{}\n",
        w.html_copy(&confirmation)
    );
    let mut ask = w.mail(ALICE, "invites@liaison.test", &body);
    ask.in_reply_to = vec![confirmation.message_id.clone()];
    ask.references = vec![
        invitation.message_id.clone(),
        confirmation.message_id.clone(),
    ];
    let d = w.decide(&ask, &w.store);
    let forward = plan_of(&d, TemplateName::SupportForwardPartner);
    assert_eq!(forward.vars["text"], question, "{}", d.summary);

    // Without the sent mails the heuristics forward the quoted copy too.
    let mut forgetful = w.store.clone();
    forgetful.sent_mails.clear();
    let d = w.decide(&ask, &forgetful);
    let forward = plan_of(&d, TemplateName::SupportForwardPartner);
    let text = forward.vars["text"].as_str().unwrap_or_default();
    assert!(text.contains("aliandika"), "{text}");
}

#[test]
fn an_answer_below_an_unmarked_header_first_copy_decides() {
    let mut w = World::new();
    let cmd = w.mail(
        "partner1@liaison.test",
        "commands@liaison.test",
        "invite alice@contoso.test",
    );
    let d = w.run(&cmd);
    let invitation = plan_of(&d, TemplateName::Invitation);
    let token = invitation.vars["token"]
        .as_str()
        .expect("token")
        .to_string();

    // Header block on top, the copy unmarked, the answer at the bottom.
    let body = format!(
        "From: Liaison <invites@liaison.test>\nSent: Tuesday, January 6, 2026 10:00 AM\nTo: {ALICE}\nSubject: {}\n\n{}\n\nDecline, thank you.\n",
        invitation.vars["partner_name"],
        w.html_copy(&invitation)
    );
    let mut reply = w.mail(ALICE, &format!("invites+{token}@liaison.test"), &body);
    reply.in_reply_to = vec![invitation.message_id.clone()];
    let d = w.decide(&reply, &w.store);
    assert_eq!(
        d.relationships[0].state,
        RelationshipState::Declined,
        "{}",
        d.summary
    );

    // The heuristics alone see nothing new and ask again.
    let mut forgetful = w.store.clone();
    forgetful.sent_mails.clear();
    let d = w.decide(&reply, &forgetful);
    assert!(d.relationships.is_empty(), "{}", d.summary);
    plan_of(&d, TemplateName::Clarify);
}
