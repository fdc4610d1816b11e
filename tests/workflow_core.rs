//! Integration tests of the pure decision core, [`liaison_core::decide::decide`],
//! and of [`liaison_core::render::compose::compose`] with the shipped templates.
//!
//! No server, clock or disk is involved: an in-memory [`StoreView`] holds the
//! state, each [`Decision`] is applied to it the way the engine would apply
//! it (relationships, invitations, and the sent Message-ID → invitation map
//! used for threading), and the time is a constant in the [`Context`].

use liaison::store::{OutgoingMail, StoreView};
use liaison_core::config::Config;
use liaison_core::decide::{decide, Context, Decision, MailClass, MailPlan, Sender};
use liaison_core::mail::inbound::{self, InboundMail};
use liaison_core::model::relationship::{Relationship, RelationshipState};
use liaison_core::model::ticket::TicketState;
use liaison_core::model::token::{Purpose, TokenKey, TOKEN_LEN};
use liaison_core::render::compose::compose;
use liaison_core::render::templates::{TemplateName, Templates};
use liaison_core::testing::MemStore;
use std::path::Path;

/// 2026-05-28T20:26:40Z.
const NOW: u64 = 1_780_000_000;
const DAY: u64 = 86_400;

const PARTNER1: &str = "partner1@liaison.test";
const PARTNER2: &str = "partner2@liaison.test";
const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";
const INVITES: &str = "invites@liaison.test";
const COMMANDS: &str = "commands@liaison.test";

const CONFIG: &str = r#"
[store]
path = "/tmp/liaison-workflow-core-test"

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
token_secret = "workflow-core-test-secret-0123456789"
invitation_ttl_days = 30

[[partner]]
id = "northwind"
name = "Northwind Traders"
emails = ["partner1@liaison.test"]
locale = "en"

[[partner]]
id = "p2"
name = "Fabrikam Partners"
emails = ["partner2@liaison.test"]
locale = "ko"
"#;

// ---- test world -----------------------------------------------------------

struct World {
    config: Config,
    key: TokenKey,
    store: MemStore,
    now: u64,
    seq: u32,
}

impl World {
    fn new() -> Self {
        Self::with_config("")
    }

    /// A world whose config has `extra` appended (e.g. a `[lifecycle]`).
    fn with_config(extra: &str) -> Self {
        let config = Config::parse(
            &format!("{CONFIG}\n{extra}"),
            Path::new("test.toml"),
            &liaison::files::EnvAndFiles,
        )
        .expect("test config");
        let key = TokenKey::new(config.security.token_secret.expose().as_bytes());
        World {
            config,
            key,
            store: MemStore::default(),
            now: NOW,
            seq: 0,
        }
    }

    /// Decides without changing the state.
    fn decide(&self, mail: &InboundMail) -> Decision {
        let ctx = Context {
            config: &self.config,
            tokens: &self.key,
            now: self.now,
        };
        decide(&ctx, &self.store, mail).expect("in-memory store never fails")
    }

    /// Decides and applies the decision.
    fn run(&mut self, mail: &InboundMail) -> Decision {
        let d = self.decide(mail);
        self.store.apply(&d);
        d
    }

    fn next_message_id(&mut self) -> String {
        self.seq += 1;
        format!("in{}.{}@mail.test", self.seq, self.now)
    }

    /// A command mail from `from` to the command address.
    fn command_mail(&mut self, from: &str, body: &str) -> InboundMail {
        let id = self.next_message_id();
        InboundMail {
            message_id: Some(id.clone()),
            key: id,
            from: Some(from.to_string()),
            from_name: None,
            other_from: vec![],
            recipients: vec![COMMANDS.to_string()],
            delivered_to: vec![COMMANDS.to_string()],
            subject: "commands".to_string(),
            in_reply_to: vec![],
            references: vec![],
            text: body.to_string(),
            automatic: None,
            size: body.len(),
            attachments: vec![],
            authentication_results: vec![],
            dsn: None,
        }
    }

    /// A mail from `from` to the bare invitations address, with no reference
    /// to any invitation; tests add the reference they exercise.
    fn customer_mail(&mut self, from: &str, body: &str) -> InboundMail {
        let id = self.next_message_id();
        InboundMail {
            message_id: Some(id.clone()),
            key: id,
            from: Some(from.to_string()),
            from_name: None,
            other_from: vec![],
            recipients: vec![INVITES.to_string()],
            delivered_to: vec![],
            subject: "Re: delegated admin permissions".to_string(),
            in_reply_to: vec![],
            references: vec![],
            text: body.to_string(),
            automatic: None,
            size: body.len(),
            attachments: vec![],
            authentication_results: vec![],
            dsn: None,
        }
    }

    /// Runs `invite CUSTOMER` (plus options) from `partner` and returns the
    /// decision, the invitation mail and its token.
    fn invite(&mut self, partner: &str, line: &str) -> (Decision, MailPlan, String) {
        let m = self.command_mail(partner, line);
        let d = self.run(&m);
        let plan = d
            .mails
            .iter()
            .find(|p| p.template == TemplateName::Invitation)
            .unwrap_or_else(|| panic!("no invitation mail for `{line}`: {d:#?}"))
            .clone();
        let token = plan.vars["token"].as_str().expect("token var").to_string();
        (d, plan, token)
    }

    /// A reply from the invited customer to `invites+TOKEN@…`.
    fn reply_plus(&mut self, from: &str, token: &str, body: &str) -> InboundMail {
        let mut m = self.customer_mail(from, body);
        let tagged = format!("invites+{token}@liaison.test");
        m.recipients = vec![tagged.clone()];
        m.delivered_to = vec![tagged];
        m
    }
}

fn templates() -> Templates {
    liaison::files::load_templates(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"))
        .expect("shipped templates load")
}

/// The transcript's results as (command, ok, result).
fn results(d: &Decision) -> Vec<(Option<String>, bool, String)> {
    let t = d
        .mails
        .iter()
        .find(|m| m.template == TemplateName::Transcript)
        .unwrap_or_else(|| panic!("no transcript: {d:#?}"));
    t.vars["results"]
        .as_array()
        .expect("results array")
        .iter()
        .map(|r| {
            (
                r["command"].as_str().map(str::to_string),
                r["ok"].as_bool().expect("ok is a bool"),
                r["result"].as_str().expect("result text").to_string(),
            )
        })
        .collect()
}

/// The single result of a one-command mail.
fn only_result(d: &Decision) -> (bool, String) {
    let r = results(d);
    assert_eq!(r.len(), 1, "{r:?}");
    (r[0].1, r[0].2.clone())
}

fn templates_of(d: &Decision) -> Vec<TemplateName> {
    d.mails.iter().map(|m| m.template).collect()
}

/// Asserts `d` changes nothing and sends nothing.
fn assert_silent_ignore(d: &Decision) {
    assert_eq!(d.class, MailClass::Ignored, "{d:#?}");
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert!(d.invitations.is_empty(), "{d:#?}");
    assert!(d.mails.is_empty(), "no mail may be sent: {d:#?}");
}

/// Parses a composed mail back with mail-parser.
fn parsed(out: &OutgoingMail) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(out.raw.as_bytes())
        .expect("composed mail parses")
}

const QUOTED_ACCEPT_AND_DECLINE: &str = "Accept\n\
\n\
On Thu, 28 May 2026 at 20:26, Liaison <invites@liaison.test> wrote:\n\
> How to answer:\n\
>   * To accept, reply with \"accept\".\n\
>   * To decline, reply with the word \"decline\".\n";

// ---- 1. invite ------------------------------------------------------------

#[test]
fn invite_sends_signed_invitation_and_transcript() {
    let mut w = World::new();
    let m = w.command_mail(PARTNER1, "invite alice@contoso.test\n");
    let d = w.run(&m);

    assert_eq!(
        d.class,
        MailClass::Command {
            partner: "northwind".into()
        }
    );
    assert!(d.summary.contains("1 ok, 0 failed"), "{}", d.summary);
    assert_eq!(d.invitations.len(), 1);
    let inv = &d.invitations[0];
    assert_eq!(inv.partner, "northwind");
    assert_eq!(inv.customer, ALICE);
    assert_eq!(inv.locale, "en");
    assert_eq!(inv.created, NOW);
    assert_eq!(inv.expires, NOW + 30 * DAY);
    assert!(!inv.draft);

    assert_eq!(d.relationships.len(), 1);
    let rel = &d.relationships[0];
    assert_eq!(
        (rel.partner.as_str(), rel.customer.as_str()),
        ("northwind", ALICE)
    );
    assert_eq!(rel.state, RelationshipState::Invited);
    assert_eq!(rel.invitation_id, Some(inv.id));
    assert_eq!(rel.history.len(), 1);
    assert_eq!(rel.history[0].from, None);
    assert_eq!(rel.history[0].to, RelationshipState::Invited);
    assert_eq!(rel.history[0].actor, PARTNER1);
    assert_eq!(rel.history[0].message_id, m.message_id);

    assert_eq!(
        templates_of(&d),
        vec![TemplateName::Invitation, TemplateName::Transcript]
    );
    let invite = &d.mails[0];
    assert_eq!(invite.to, vec![ALICE]);
    assert_eq!(invite.from, Sender::Invitations);
    assert_eq!(invite.locale, "en");
    assert_eq!(invite.invitation, Some(inv.id));
    assert_eq!(invite.message_id, inv.message_id);
    assert!(
        invite.message_id.ends_with("@liaison.test"),
        "{}",
        invite.message_id
    );
    let token = invite.vars["token"].as_str().unwrap();
    assert_eq!(token.len(), TOKEN_LEN);
    assert_eq!(
        invite.reply_to.as_deref(),
        Some(format!("invites+{token}@liaison.test").as_str())
    );
    let claims = w
        .key
        .verify(token, Purpose::Invitation, ALICE, NOW)
        .expect("token verifies for alice");
    assert_eq!(claims.invitation_id, inv.id);
    assert_eq!(claims.expires, inv.expires);
    // Bound to the recipient and purpose.
    assert!(w.key.verify(token, Purpose::Invitation, BOB, NOW).is_err());
    assert!(w.key.verify(token, Purpose::Restore, ALICE, NOW).is_err());
    assert_eq!(
        invite.vars["subject_ref"].as_str(),
        Some(format!("[ref:{token}]").as_str())
    );
    assert_eq!(invite.vars["customer_email"], ALICE);
    assert_eq!(invite.vars["partner_name"], "Northwind Traders");

    let transcript = &d.mails[1];
    assert_eq!(transcript.to, vec![PARTNER1]);
    assert_eq!(transcript.from, Sender::Commands);
    assert_eq!(transcript.locale, "en");
    assert_eq!(transcript.in_reply_to, m.message_id);
    assert_eq!(transcript.references, vec![m.message_id.clone().unwrap()]);
    assert_eq!(transcript.vars["original_subject"], "commands");
    let r = results(&d);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0.as_deref(), Some("invite alice@contoso.test"));
    assert!(r[0].1);
    assert!(
        r[0].2.starts_with("invited alice@contoso.test")
            && r[0].2.contains("English")
            && r[0].2.contains("2026-06-27"),
        "{}",
        r[0].2
    );
    assert_ne!(invite.message_id, transcript.message_id);

    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
}

#[test]
fn invitation_composes_to_multipart_mail_with_reference_and_loop_headers() {
    let mut w = World::new();
    let (d, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test name \"Contoso Ltd\"");
    let t = templates();
    let out = compose(&w.config, &t, w.key.ids(), &plan, NOW).expect("invitation composes");

    assert_eq!(out.message_id, plan.message_id);
    // The envelope sender is the mail's own keyed bounce address (VERP).
    assert_eq!(
        out.envelope_from,
        liaison_core::mail::dsn::return_path(w.key.ids(), INVITES, &plan.message_id, &plan.to)
    );
    assert!(out.envelope_from.starts_with("invites+b-"));
    assert_eq!(out.recipients, vec![ALICE]);
    assert_eq!(out.invitation, Some(d.invitations[0].id));
    assert!(
        out.subject.contains(&format!("[ref:{token}]")),
        "{}",
        out.subject
    );
    assert!(out.subject.contains("Northwind Traders"), "{}", out.subject);

    let msg = parsed(&out);
    assert!(
        msg.subject().unwrap().contains(&format!("[ref:{token}]")),
        "{:?}",
        msg.subject()
    );
    let raw = &out.raw;
    assert!(raw.contains("Content-Type: multipart/alternative"), "{raw}");
    // The Date is the decision's time (the core reads no clock), once.
    assert_eq!(
        raw.matches("\r\nDate: ").count() + raw.starts_with("Date: ") as usize,
        1,
        "{raw}"
    );
    assert_eq!(
        msg.date().map(|d| d.to_timestamp()),
        Some(NOW as i64),
        "{raw}"
    );
    assert_eq!(msg.text_body_count(), 1, "{raw}");
    assert_eq!(msg.html_body_count(), 1, "{raw}");
    let text = msg.body_text(0).unwrap();
    assert!(text.contains("Hello Contoso Ltd"), "{text}");
    assert!(text.contains(&token), "{text}");
    let html = msg.body_html(0).unwrap();
    assert!(html.contains("<html"), "{html}");
    assert!(
        html.contains(&format!("mailto:invites+{token}@liaison.test")),
        "{html}"
    );
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    assert_eq!(
        msg.header_raw("X-Loop").map(str::trim),
        Some("liaison@liaison.test")
    );
    assert_eq!(
        msg.header_raw("X-Auto-Response-Suppress").map(str::trim),
        Some("All")
    );
    let reply_to = msg.header_raw("Reply-To").unwrap();
    assert!(
        reply_to.contains(&format!("invites+{token}@liaison.test")),
        "{reply_to}"
    );
    let mid = msg.header_raw("Message-ID").unwrap();
    assert!(mid.contains(&format!("<{}>", plan.message_id)), "{mid}");

    // Liaison's own mail coming back is recognised as automatic.
    let back = inbound::parse(raw.as_bytes(), 1 << 20).unwrap();
    assert!(back.automatic.is_some());

    // The transcript composes too, text only, echoing the command.
    let transcript = d
        .mails
        .iter()
        .find(|m| m.template == TemplateName::Transcript)
        .unwrap();
    let out = compose(&w.config, &t, w.key.ids(), transcript, NOW).unwrap();
    // Bounces of the command address's mails come to the invitations inbox too.
    assert_eq!(
        out.envelope_from,
        liaison_core::mail::dsn::return_path(
            w.key.ids(),
            INVITES,
            &transcript.message_id,
            &transcript.to
        )
    );
    assert!(
        out.raw.contains(&format!("From: Liaison <{COMMANDS}>")),
        "{}",
        out.raw
    );
    assert!(!out.raw.contains("text/html"), "{}", out.raw);
    assert!(!out.raw.contains("multipart/"), "{}", out.raw);
    let msg = parsed(&out);
    let text = msg.body_text(0).unwrap();
    assert!(
        text.contains("> invite alice@contoso.test name \"Contoso Ltd\""),
        "{text}"
    );
    assert!(text.contains("invited alice@contoso.test"), "{text}");
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
}

#[test]
fn locale_option_gives_korean_invitation() {
    let mut w = World::new();
    let (d, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test locale ko");
    assert_eq!(plan.locale, "ko");
    assert_eq!(d.invitations[0].locale, "ko");
    assert_eq!(d.relationships[0].locale, "ko");
    // The partner's own transcript stays in the partner's locale.
    let transcript = d
        .mails
        .iter()
        .find(|m| m.template == TemplateName::Transcript)
        .unwrap();
    assert_eq!(transcript.locale, "en");
    let (ok, result) = only_result(&d);
    assert!(ok && result.contains("Korean"), "{result}");

    let out = compose(&w.config, &templates(), w.key.ids(), &plan, NOW).unwrap();
    assert!(out.subject.contains("위임 관리자 권한"), "{}", out.subject);
    assert!(out.subject.contains(&format!("[ref:{token}]")));
    let msg = parsed(&out);
    let subject = msg.subject().unwrap();
    assert!(subject.contains("위임 관리자 권한"), "{subject}");
    assert!(subject.contains(&format!("[ref:{token}]")), "{subject}");
    assert!(msg.body_text(0).unwrap().contains("수락"));
}

#[test]
fn partner_locale_is_the_default_for_its_customers() {
    let mut w = World::new();
    let (_, plan, _) = w.invite(PARTNER2, "invite minji@woodgrove.test");
    assert_eq!(plan.locale, "ko");
    assert_eq!(plan.vars["partner_name"], "Fabrikam Partners");
}

#[test]
fn draft_goes_to_the_partner_but_stays_bound_to_the_customer() {
    let mut w = World::new();
    let (d, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test draft");
    assert_eq!(plan.to, vec![PARTNER1]);
    assert!(d.invitations[0].draft);
    assert_eq!(d.invitations[0].customer, ALICE);
    assert_eq!(d.relationships[0].state, RelationshipState::Invited);
    assert!(w
        .key
        .verify(&token, Purpose::Invitation, ALICE, NOW)
        .is_ok());
    let (ok, result) = only_result(&d);
    assert!(ok && result.starts_with("draft invitation"), "{result}");

    // Forwarded by the partner, the customer's answer still counts.
    let m = w.reply_plus(ALICE, &token, "accept");
    let d = w.run(&m);
    assert_eq!(d.relationships[0].state, RelationshipState::Active);
}

// ---- 2. determinism -------------------------------------------------------

#[test]
fn same_mail_and_state_give_the_same_decision() {
    let mut w = World::new();
    let m = w.command_mail(PARTNER1, "invite alice@contoso.test\nlist\n");
    let first = w.decide(&m);
    let second = w.decide(&m);
    assert_eq!(first, second);
    // A fresh process with the same configuration agrees too.
    let mut other = World::new();
    other.seq = w.seq;
    assert_eq!(other.decide(&m), first);

    // A different mail gets different ids.
    let m2 = w.command_mail(PARTNER1, "invite alice@contoso.test\nlist\n");
    let third = w.decide(&m2);
    assert_ne!(third.invitations[0].id, first.invitations[0].id);
    assert_ne!(third.mails[0].message_id, first.mails[0].message_id);
    assert_ne!(third.mails[0].vars["token"], first.mails[0].vars["token"]);

    // Customer decisions are deterministic as well.
    w.store.apply(&first);
    let token = first.mails[0].vars["token"].as_str().unwrap().to_string();
    let reply = w.reply_plus(ALICE, &token, "accept");
    assert_eq!(w.decide(&reply), w.decide(&reply));
    let a = w.decide(&reply);
    let ids: Vec<&str> = a.mails.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
}

// ---- 3. the other commands ------------------------------------------------

#[test]
fn second_invite_points_to_resend_and_resend_keeps_the_token() {
    let mut w = World::new();
    let (first, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let inv_id = first.invitations[0].id;

    let m = w.command_mail(PARTNER1, "invite alice@contoso.test");
    let d = w.run(&m);
    let (ok, result) = only_result(&d);
    assert!(!ok, "{result}");
    assert!(
        result.contains("already invited") && result.contains("resend alice@contoso.test"),
        "{result}"
    );
    assert!(d.invitations.is_empty() && d.relationships.is_empty());
    assert_eq!(templates_of(&d), vec![TemplateName::Transcript]);
    assert!(d.summary.contains("0 ok, 1 failed"), "{}", d.summary);

    let m = w.command_mail(PARTNER1, "resend alice@contoso.test");
    let d = w.run(&m);
    let (ok, result) = only_result(&d);
    assert!(ok && result.contains("same link"), "{result}");
    assert!(d.invitations.is_empty() && d.relationships.is_empty());
    assert_eq!(
        templates_of(&d),
        vec![TemplateName::Invitation, TemplateName::Transcript]
    );
    let again = &d.mails[0];
    assert_eq!(again.vars["token"].as_str(), Some(token.as_str()));
    assert_eq!(again.reply_to, plan.reply_to);
    assert_eq!(again.to, vec![ALICE]);
    assert_eq!(again.invitation, Some(inv_id));
    assert_ne!(again.message_id, plan.message_id);

    // A reply threaded under the resent mail counts.
    let mut reply = w.customer_mail(ALICE, "accept");
    reply.in_reply_to = vec![again.message_id.clone()];
    let d = w.run(&reply);
    assert_eq!(d.relationships[0].state, RelationshipState::Active);

    // Only a pending invitation can be resent.
    let m = w.command_mail(PARTNER1, "resend alice@contoso.test");
    let (ok, result) = only_result(&w.run(&m));
    assert!(!ok && result.contains("active"), "{result}");
}

#[test]
fn status_list_and_history() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test name \"Contoso Ltd\"");
    w.invite(PARTNER1, "invite carol@adatum.test");

    let m = w.command_mail(
        PARTNER1,
        "status alice@contoso.test\nlist\nlist active\nlist invited\nhistory alice@contoso.test\nstatus dave@nowhere.test\n",
    );
    let d = w.run(&m);
    assert!(d.relationships.is_empty() && d.invitations.is_empty());
    let r = results(&d);
    assert_eq!(r.len(), 6, "{r:?}");
    assert_eq!(r[0].0.as_deref(), Some("status alice@contoso.test"));
    assert!(r[0].1);
    assert_eq!(
        r[0].2,
        "alice@contoso.test  invited  since 2026-05-28T20:26:40Z  (Contoso Ltd)"
    );
    assert!(r[1].1);
    let lines: Vec<&str> = r[1].2.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r[1].2);
    assert!(lines[0].starts_with("alice@contoso.test  invited"));
    assert!(lines[1].starts_with("carol@adatum.test  invited"));
    assert_eq!((r[2].1, r[2].2.as_str()), (true, "no relationships"));
    assert_eq!(r[3].2.lines().count(), 2);
    assert!(r[4].1);
    assert!(
        r[4].2
            .contains("(new) -> invited  by partner1@liaison.test  <in1."),
        "{}",
        r[4].2
    );
    assert!(!r[5].1);
    assert!(
        r[5].2
            .contains("dave@nowhere.test has no relationship with Northwind Traders"),
        "{}",
        r[5].2
    );

    // After the acceptance, `list active` and `history` show it.
    let reply = w.reply_plus(ALICE, &token, "Accept");
    let reply_id = reply.message_id.clone().unwrap();
    w.now += 3600;
    w.run(&reply);
    let m = w.command_mail(PARTNER1, "list active\nhistory alice@contoso.test\nstatus");
    let r = results(&w.run(&m));
    assert_eq!(
        r[0].2,
        "alice@contoso.test  active  since 2026-05-28T21:26:40Z  (Contoso Ltd)"
    );
    let history: Vec<&str> = r[1].2.lines().collect();
    assert_eq!(history.len(), 2, "{}", r[1].2);
    assert_eq!(
        history[1],
        // Issue 14: every history line names its source (here the customer's mail).
        format!(
            "2026-05-28T21:26:40Z  invited -> active  by alice@contoso.test  <{reply_id}>  [mail]"
        )
    );
    assert!(history[0].ends_with("  [command]"), "{}", history[0]);
    // `status` without a customer lists everything.
    assert_eq!(r[2].2.lines().count(), 2, "{}", r[2].2);
}

#[test]
fn long_lists_come_a_page_at_a_time() {
    let mut w = World::new();
    let page = liaison_core::decide::LIST_PAGE;
    let total = 2 * page + 3;
    for i in 0..total {
        let customer = format!("c{i:05}@contoso.test");
        w.store.relationships.insert(
            ("northwind".into(), customer.clone()),
            Relationship {
                partner: "northwind".into(),
                customer,
                customer_name: None,
                locale: "en".into(),
                state: if i % 2 == 0 {
                    RelationshipState::Active
                } else {
                    RelationshipState::Invited
                },
                since: NOW,
                invitation_id: None,
                support_contact: None,
                ends_at: None,
                reminders_sent: vec![],
                history: vec![],
                gdap: None,
            },
        );
    }
    let m = w.command_mail(
        PARTNER1,
        "list\nlist page 3\nlist page 4\nlist active page 2\nlist page\nlist active page 0\nstatus",
    );
    let r = results(&w.run(&m));
    assert_eq!(r.len(), 7, "{r:?}");
    let first: Vec<&str> = r[0].2.lines().collect();
    assert_eq!(first.len(), page + 1);
    assert!(first[0].starts_with("c00000@contoso.test  active"));
    assert_eq!(
        first[page],
        format!(
            "(relationships 1-{page} of {total}, page 1 of 3; send `list page 2` for the next)"
        )
    );
    let third: Vec<&str> = r[1].2.lines().collect();
    assert_eq!(third.len(), 4, "{}", r[1].2);
    assert!(third[0].starts_with(&format!("c{:05}@", 2 * page)));
    assert_eq!(
        third[3],
        format!(
            "(relationships {}-{total} of {total}, page 3 of 3)",
            2 * page + 1
        )
    );
    assert!(!r[2].1);
    assert_eq!(
        r[2].2,
        format!("there is no page 4: {total} relationship(s) make 3 page(s)")
    );
    // 502 active ones: page 2 holds two, and names the filter.
    let active: Vec<&str> = r[3].2.lines().collect();
    assert_eq!(active.len(), 3, "{}", r[3].2);
    assert!(active.iter().take(2).all(|l| l.contains("  active  ")));
    assert_eq!(
        active[2],
        format!(
            "(relationships {}-{} of {}, page 2 of 2)",
            page + 1,
            page + 2,
            page + 2
        )
    );
    assert!(
        !r[4].1 && r[4].2.contains("`page` needs a number"),
        "{}",
        r[4].2
    );
    assert!(
        !r[5].1 && r[5].2.contains("`0` is not a page number"),
        "{}",
        r[5].2
    );
    // `status` without a customer is the first page of `list`.
    assert_eq!(r[6].2, r[0].2);
}

#[test]
fn unknown_commands_and_help() {
    let mut w = World::new();
    let m = w.command_mail(PARTNER1, "frobnicate alice@contoso.test\nhelp\n");
    let d = w.run(&m);
    let r = results(&d);
    assert_eq!(r.len(), 2);
    assert!(!r[0].1);
    assert!(
        r[0].2.contains("unknown command `frobnicate`") && r[0].2.contains("help"),
        "{}",
        r[0].2
    );
    assert!(r[1].1 && r[1].2.contains("invite CUSTOMER"), "{}", r[1].2);
    assert!(d.relationships.is_empty() && d.invitations.is_empty());

    // An empty mail gets the help text.
    let m = w.command_mail(PARTNER1, "\n\n");
    let r = results(&w.run(&m));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, None);
    assert!(r[0].1 && r[0].2.contains("Commands"), "{}", r[0].2);

    // A command in the subject is run when the body has none.
    let mut m = w.command_mail(PARTNER1, "");
    m.subject = "Re: status".into();
    let r = results(&w.run(&m));
    assert_eq!(r[0].0.as_deref(), Some("status"));
    assert_eq!(r[0].2, "no relationships");

    // Liaison's own addresses are not customers.
    let m = w.command_mail(
        PARTNER1,
        "invite helpdesk@liaison.test\ninvite partner2@liaison.test",
    );
    let d = w.run(&m);
    assert!(d.invitations.is_empty());
    assert!(results(&d).iter().all(|r| !r.1));
}

#[test]
fn partners_never_see_each_others_customers() {
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");

    let m = w.command_mail(
        PARTNER2,
        "status alice@contoso.test\nhistory alice@contoso.test\nresend alice@contoso.test\nlist\n",
    );
    let d = w.run(&m);
    assert_eq!(
        d.class,
        MailClass::Command {
            partner: "p2".into()
        }
    );
    let r = results(&d);
    let unknown = "alice@contoso.test has no relationship with Fabrikam Partners";
    for (cmd, ok, result) in &r[..3] {
        assert!(!ok, "{cmd:?}");
        assert!(result.contains(unknown), "{cmd:?}: {result}");
    }
    assert_eq!(r[3].2, "no relationships");
    assert!(d
        .mails
        .iter()
        .all(|m| m.template == TemplateName::Transcript));
    assert_eq!(d.mails[0].to, vec![PARTNER2]);
    assert_eq!(d.mails[0].locale, "ko");

    // p2 may invite the same customer independently.
    let (d, _, _) = w.invite(PARTNER2, "invite alice@contoso.test");
    assert_eq!(d.relationships[0].partner, "p2");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
    assert_eq!(w.store.state("p2", ALICE), Some(RelationshipState::Invited));
    assert_eq!(w.store.relationships.len(), 2);
}

// ---- 4. customer answers --------------------------------------------------

/// Checks an accepted decision for alice/northwind answering `reply`.
fn assert_accepted(w: &World, d: &Decision, reply: &InboundMail, matched_by: &str) {
    assert_eq!(
        d.class,
        MailClass::Customer {
            partner: "northwind".into(),
            customer: ALICE.into()
        }
    );
    assert!(
        d.summary.contains(&format!("(matched by {matched_by})"))
            && d.summary.contains("invited -> active"),
        "{}",
        d.summary
    );
    assert!(d.invitations.is_empty());
    assert_eq!(d.relationships.len(), 1);
    let rel = &d.relationships[0];
    assert_eq!(rel.state, RelationshipState::Active);
    assert_eq!(rel.since, w.now);
    let last = rel.history.last().unwrap();
    assert_eq!(last.from, Some(RelationshipState::Invited));
    assert_eq!(last.to, RelationshipState::Active);
    assert_eq!(last.actor, ALICE);
    assert_eq!(last.message_id, reply.message_id);
    assert_eq!(last.at, w.now);

    assert_eq!(
        templates_of(d),
        vec![
            TemplateName::AcceptedCustomer,
            TemplateName::AcceptedPartner
        ]
    );
    let c = &d.mails[0];
    assert_eq!(c.to, vec![ALICE]);
    assert_eq!(c.from, Sender::Invitations);
    assert_eq!(c.in_reply_to, reply.message_id);
    assert_eq!(c.locale, "en");
    assert_eq!(c.vars["state"], "active");
    let p = &d.mails[1];
    assert_eq!(p.to, vec![PARTNER1]);
    assert_eq!(p.from, Sender::Commands);
    assert_eq!(p.vars["customer_email"], ALICE);
    assert_eq!(p.vars["partner_name"], "Northwind Traders");
}

#[test]
fn accept_matched_by_plus_address() {
    // Delivered-To and To both carry the tag.
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(ALICE, &token, QUOTED_ACCEPT_AND_DECLINE);
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "PlusAddress");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );

    // Only Delivered-To has it (the client rewrote To).
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.reply_plus(ALICE, &token, QUOTED_ACCEPT_AND_DECLINE);
    reply.recipients = vec![INVITES.into()];
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "PlusAddress");

    // Only To has it; the mail system upper-cased the tag.
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.reply_plus(ALICE, &token, QUOTED_ACCEPT_AND_DECLINE);
    reply.delivered_to.clear();
    reply.recipients = vec![format!("invites+{}@liaison.test", token.to_uppercase())];
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "PlusAddress");
}

#[test]
fn accept_matched_by_subject_reference() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.customer_mail(ALICE, QUOTED_ACCEPT_AND_DECLINE);
    reply.subject = format!("RE: Northwind Traders asks for permissions [ref:{token}]");
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "Subject");
}

#[test]
fn accept_matched_by_thread_only() {
    let mut w = World::new();
    let (_, plan, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.customer_mail(ALICE, QUOTED_ACCEPT_AND_DECLINE);
    reply.in_reply_to = vec![plan.message_id.clone()];
    reply.references = vec![plan.message_id.clone()];
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "Thread");

    // References alone are enough too.
    let mut w = World::new();
    let (_, plan, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.customer_mail(ALICE, "accept");
    reply.references = vec!["unrelated@mail.test".into(), plan.message_id.clone()];
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "Thread");
}

#[test]
fn accept_from_a_parsed_raw_reply() {
    let mut w = World::new();
    let (_, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let raw = format!(
        "From: Alice <Alice@Contoso.test>\r\n\
To: Liaison <invites+{token}@liaison.test>\r\n\
Subject: Re: Northwind Traders asks for permissions [ref:{token}]\r\n\
Message-ID: <reply1@contoso.test>\r\n\
In-Reply-To: <{mid}>\r\n\
References: <{mid}>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Accept\r\n\
\r\n\
On Thu, 28 May 2026 at 20:26, Liaison <invites@liaison.test> wrote:\r\n\
> To decline, reply with the word \"decline\".\r\n",
        mid = plan.message_id
    );
    let reply = inbound::parse(raw.as_bytes(), 1 << 20).unwrap();
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "PlusAddress");
    assert_eq!(
        d.relationships[0].history[1].message_id.as_deref(),
        Some("reply1@contoso.test")
    );
    // The confirmation threads under the customer's reply.
    assert_eq!(
        d.mails[0].references,
        vec![plan.message_id.clone(), "reply1@contoso.test".to_string()]
    );
    let out = compose(&w.config, &templates(), w.key.ids(), &d.mails[0], NOW).unwrap();
    let msg = parsed(&out);
    assert!(msg
        .header_raw("In-Reply-To")
        .unwrap()
        .contains("<reply1@contoso.test>"));
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(msg.html_body_count(), 1);
}

#[test]
fn korean_accept_and_confirmations() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER2, "invite minji@woodgrove.test");
    let reply = w.reply_plus("minji@woodgrove.test", &token, "수락합니다\n\n감사합니다");
    let d = w.run(&reply);
    assert_eq!(d.relationships[0].state, RelationshipState::Active);
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::AcceptedCustomer,
            TemplateName::AcceptedPartner
        ]
    );
    assert_eq!(d.mails[0].locale, "ko");
    assert_eq!(d.mails[1].to, vec![PARTNER2]);
    assert_eq!(d.mails[1].locale, "ko");
    let t = templates();
    for plan in &d.mails {
        compose(&w.config, &t, w.key.ids(), plan, NOW).expect("Korean confirmation composes");
    }

    // Korean accept on an English invitation works too.
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(ALICE, &token, "수락합니다");
    let d = w.run(&reply);
    assert_eq!(d.relationships[0].state, RelationshipState::Active);
    assert_eq!(d.mails[0].locale, "en");
}

#[test]
fn decline_notifies_both_sides() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(
        ALICE,
        &token,
        "decline\n\nOn Thu, 28 May 2026 at 20:26, Liaison <invites@liaison.test> wrote:\n> To accept, reply with \"accept\".\n",
    );
    let d = w.run(&reply);
    assert_eq!(d.relationships[0].state, RelationshipState::Declined);
    assert!(d.summary.contains("invited -> declined"), "{}", d.summary);
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::DeclinedCustomer,
            TemplateName::DeclinedPartner
        ]
    );
    assert_eq!(d.mails[0].to, vec![ALICE]);
    assert_eq!(d.mails[1].to, vec![PARTNER1]);
    assert_eq!(d.mails[1].vars["state"], "declined");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Declined)
    );
    let t = templates();
    for plan in &d.mails {
        compose(&w.config, &t, w.key.ids(), plan, NOW).unwrap();
    }
}

#[test]
fn customer_reporting_removed_permissions_moves_the_relationship() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(ALICE, &token, "accept");
    let accepted = w.run(&reply);
    // Replying to the confirmation threads back to the invitation.
    let mut m = w.customer_mail(ALICE, "I removed your admin permissions today.");
    m.in_reply_to = vec![accepted.mails[0].message_id.clone()];
    let d = w.run(&m);
    assert!(d.summary.contains("(matched by Thread)"), "{}", d.summary);
    assert_eq!(d.relationships.len(), 1);
    let rel = &d.relationships[0];
    assert_eq!(rel.state, RelationshipState::PermissionsRemoved);
    let last = rel.history.last().unwrap();
    assert_eq!(
        (last.from, last.to, last.actor.as_str()),
        (
            Some(RelationshipState::Active),
            RelationshipState::PermissionsRemoved,
            ALICE
        )
    );
    // No acceptance or decline notice goes out for it.
    assert!(d.mails.iter().all(|m| !matches!(
        m.template,
        TemplateName::AcceptedCustomer
            | TemplateName::AcceptedPartner
            | TemplateName::DeclinedCustomer
            | TemplateName::DeclinedPartner
    )));
}

#[test]
fn quoted_invitation_without_new_answer_asks_to_clarify() {
    let mut w = World::new();
    let (_, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    // Quote the whole rendered invitation, which says both "accept" and
    // "decline", and write nothing new.
    let rendered = templates()
        .render(TemplateName::Invitation, &plan.locale, &plan.vars)
        .unwrap();
    assert!(rendered.text.contains("accept") && rendered.text.contains("decline"));
    let quoted: String = rendered.text.lines().map(|l| format!("> {l}\n")).collect();
    let body =
        format!("On Thu, 28 May 2026 at 20:26, Liaison <invites@liaison.test> wrote:\n{quoted}");
    let before = w.store.clone();
    let reply = w.reply_plus(ALICE, &token, &body);
    let d = w.run(&reply);
    assert_eq!(
        d.class,
        MailClass::Customer {
            partner: "northwind".into(),
            customer: ALICE.into()
        }
    );
    assert!(d.relationships.is_empty() && d.invitations.is_empty());
    assert_eq!(templates_of(&d), vec![TemplateName::Clarify]);
    assert_eq!(d.mails[0].to, vec![ALICE]);
    assert_eq!(d.mails[0].in_reply_to, reply.message_id);
    assert_eq!(w.store.relationships, before.relationships);
    compose(&w.config, &templates(), w.key.ids(), &d.mails[0], NOW).unwrap();

    // Both words in the new text is unclear, not a guess.
    let reply = w.reply_plus(ALICE, &token, "accept or decline?");
    let d = w.run(&reply);
    assert!(d.relationships.is_empty());
    assert_eq!(templates_of(&d), vec![TemplateName::Clarify]);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
}

// ---- 5. security ----------------------------------------------------------

#[test]
fn valid_token_from_another_sender_is_ignored() {
    let mut w = World::new();
    let (_, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let before = w.store.clone();

    let reply = w.reply_plus(BOB, &token, "accept");
    assert_silent_ignore(&w.run(&reply));

    let mut reply = w.customer_mail(BOB, "accept");
    reply.subject = format!("Re: [ref:{token}]");
    assert_silent_ignore(&w.run(&reply));

    let mut reply = w.customer_mail(BOB, "accept");
    reply.in_reply_to = vec![plan.message_id.clone()];
    assert_silent_ignore(&w.run(&reply));

    // Even a known customer (of another partner) cannot answer alice's.
    w.invite(PARTNER2, "invite bob@fabrikam.test");
    let before_bob = w.store.clone();
    let reply = w.reply_plus(BOB, &token, "accept");
    assert_silent_ignore(&w.run(&reply));
    assert_eq!(w.store, before_bob);
    assert_eq!(
        w.store.relationship("northwind", ALICE).unwrap(),
        before.relationship("northwind", ALICE).unwrap()
    );
}

/// `token` with one character in its signature part replaced.
fn flip(token: &str, at: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[at] = if chars[at] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

#[test]
fn forged_tokens_are_ignored() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let before = w.store.clone();
    // Characters in the signature, the expiry and the id.
    for at in [30, 40, 17, 5] {
        let forged = flip(&token, at);
        assert_ne!(forged, token);

        // From a stranger: silently ignored.
        let reply = w.reply_plus("mallory@evil.test", &forged, "accept");
        assert_silent_ignore(&w.run(&reply));

        // From the customer's own address: no reply either, since the From
        // address may be forged as well (backscatter).
        let reply = w.reply_plus(ALICE, &forged, "accept");
        let d = w.run(&reply);
        assert_silent_ignore(&d);
        assert!(d.summary.contains("no reply"), "{}", d.summary);

        let mut reply = w.customer_mail(ALICE, "accept");
        reply.subject = format!("Re: [ref:{forged}]");
        assert_silent_ignore(&w.run(&reply));

        // The same token in upper case (a rewritten local part) is no better.
        let reply = w.reply_plus(ALICE, &forged.to_uppercase(), "accept");
        assert_silent_ignore(&w.run(&reply));
    }
    // A made-up token naming no invitation at all.
    let fake = "a".repeat(TOKEN_LEN);
    let reply = w.reply_plus(ALICE, &fake, "accept");
    assert_silent_ignore(&w.run(&reply));
    assert_eq!(w.store, before);
}

#[test]
fn expired_tokens_change_nothing() {
    let mut w = World::new();
    let (d, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let expires = d.invitations[0].expires;
    w.now = expires + 1;
    let before = w.store.clone();

    let reply = w.reply_plus(ALICE, &token, "accept");
    let d = w.run(&reply);
    assert_eq!(d.class, MailClass::Ignored, "{d:#?}");
    assert!(d.relationships.is_empty());
    assert!(d.summary.contains("expired"), "{}", d.summary);
    assert!(d
        .mails
        .iter()
        .all(|m| m.template == TemplateName::NotMatched && m.to == vec![ALICE]));
    assert_eq!(
        d.mails.first().map(|m| m.vars["reason"].clone()),
        Some("expired".into())
    );

    let mut reply = w.customer_mail(ALICE, "accept");
    reply.in_reply_to = vec![plan.message_id.clone()];
    let d = w.run(&reply);
    assert!(d.relationships.is_empty(), "{d:#?}");

    // A stranger holding an expired token gets nothing at all.
    let reply = w.reply_plus(BOB, &token, "accept");
    assert_silent_ignore(&w.run(&reply));

    assert_eq!(w.store.relationships, before.relationships);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );

    // The last second of validity still counts.
    w.now = expires;
    let reply = w.reply_plus(ALICE, &token, "accept");
    assert_eq!(
        w.run(&reply).relationships[0].state,
        RelationshipState::Active
    );
}

#[test]
fn a_second_answer_after_active_changes_nothing() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(ALICE, &token, "accept");
    w.run(&reply);
    let before = w.store.clone();

    for body in ["accept", "Decline"] {
        let reply = w.reply_plus(ALICE, &token, body);
        let d = w.run(&reply);
        assert_eq!(
            d.class,
            MailClass::Customer {
                partner: "northwind".into(),
                customer: ALICE.into()
            }
        );
        assert!(d.relationships.is_empty(), "{body}: {d:#?}");
        assert_eq!(templates_of(&d), vec![TemplateName::AlreadyAnswered]);
        assert_eq!(d.mails[0].to, vec![ALICE]);
        assert_eq!(d.mails[0].vars["state"], "active");
    }
    assert_eq!(w.store.relationships, before.relationships);
}

#[test]
fn command_mail_from_a_stranger_gets_no_reply() {
    let mut w = World::new();
    let m = w.command_mail("mallory@evil.test", "invite alice@contoso.test\nlist");
    let d = w.run(&m);
    assert_silent_ignore(&d);
    assert!(
        d.summary.contains("not a configured partner"),
        "{}",
        d.summary
    );
    assert_eq!(w.store, MemStore::default());

    // Cc'ing the command address does not make it a command mail either.
    let mut m = w.customer_mail("mallory@evil.test", "invite alice@contoso.test");
    m.recipients.push(COMMANDS.into());
    assert_silent_ignore(&w.run(&m));
}

#[test]
fn signed_answer_that_also_cc_s_the_command_address_still_counts() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test draft");
    // The partner forwarded the draft with the command address in Cc and
    // the customer answered to all.
    let mut reply = w.customer_mail(ALICE, "accept");
    reply.subject = format!("Re: Fwd: Northwind Traders asks [ref:{token}]");
    reply.recipients = vec![PARTNER1.into(), COMMANDS.into()];
    reply.delivered_to = vec![COMMANDS.into()];
    let d = w.run(&reply);
    assert_eq!(
        d.relationships.first().map(|r| r.state),
        Some(RelationshipState::Active),
        "{}",
        d.summary
    );
}

#[test]
fn automatic_mail_is_never_answered() {
    let mut w = World::new();
    let raw = "From: Partner One <partner1@liaison.test>\r\n\
To: commands@liaison.test\r\n\
Auto-Submitted: auto-replied\r\n\
Subject: Out of office: commands\r\n\
Message-ID: <ooo1@liaison.test>\r\n\
\r\n\
invite alice@contoso.test\r\n";
    let m = inbound::parse(raw.as_bytes(), 1 << 20).unwrap();
    assert!(m.automatic.is_some());
    let d = w.run(&m);
    assert_silent_ignore(&d);
    assert!(d.summary.contains("automatic"), "{}", d.summary);

    // An auto-reply from the customer to the tagged address does not accept.
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let raw = format!(
        "From: alice@contoso.test\r\n\
To: invites+{token}@liaison.test\r\n\
Auto-Submitted: auto-replied\r\n\
Subject: Automatic reply: accept [ref:{token}]\r\n\
Message-ID: <ooo2@contoso.test>\r\n\
\r\n\
Accept. I am out of the office.\r\n"
    );
    let m = inbound::parse(raw.as_bytes(), 1 << 20).unwrap();
    assert_silent_ignore(&w.run(&m));
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );

    // Mail from Liaison's own addresses is a loop.
    let m = w.command_mail(INVITES, "invite alice@contoso.test");
    assert_silent_ignore(&w.run(&m));
}

#[test]
fn unknown_sender_without_reference_gets_no_reply() {
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    let before = w.store.clone();
    let m = w.customer_mail("stranger@elsewhere.test", "accept");
    let d = w.run(&m);
    assert_silent_ignore(&d);
    assert_eq!(w.store, before);

    let mut m = w.customer_mail("stranger@elsewhere.test", "hello");
    m.from = None;
    assert_silent_ignore(&w.run(&m));
}

#[test]
fn commands_after_a_quote_are_never_run() {
    let mut w = World::new();

    let m = w.command_mail(
        PARTNER1,
        "list\n> invite eve@evil.test\ninvite mallory@evil.test\n",
    );
    let d = w.run(&m);
    assert!(d.invitations.is_empty() && d.relationships.is_empty());
    let r = results(&d);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0.as_deref(), Some("list"));

    let m = w.command_mail(
        PARTNER1,
        "status\n\nOn Thu, 28 May 2026 at 20:26, Liaison <commands@liaison.test> wrote:\ninvite eve@evil.test\n",
    );
    let d = w.run(&m);
    assert!(d.invitations.is_empty() && d.relationships.is_empty());
    assert_eq!(results(&d).len(), 1);

    // A reply to a transcript that adds nothing runs nothing.
    let mut m = w.command_mail(
        PARTNER1,
        "On Thu, 28 May 2026 at 20:26, Liaison <commands@liaison.test> wrote:\n> > invite eve@evil.test\n> invited eve@evil.test\n",
    );
    m.subject = "Re: commands — Liaison results".into();
    let d = w.run(&m);
    assert!(d.invitations.is_empty() && d.relationships.is_empty());
    assert_eq!(w.store, MemStore::default());
}

// ---- 6. ambiguity ---------------------------------------------------------

#[test]
fn customer_of_two_partners_without_reference_is_asked_not_guessed() {
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    w.invite(PARTNER2, "invite alice@contoso.test");
    let before = w.store.clone();

    let m = w.customer_mail(ALICE, "Accept");
    let d = w.run(&m);
    assert_eq!(d.class, MailClass::Ignored);
    assert!(d.relationships.is_empty() && d.invitations.is_empty());
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
    let plan = &d.mails[0];
    assert_eq!(plan.to, vec![ALICE]);
    assert_eq!(plan.vars["reason"], "no_reference");
    assert_eq!(plan.in_reply_to, m.message_id);
    assert_eq!(w.store.relationships, before.relationships);
    compose(&w.config, &templates(), w.key.ids(), plan, NOW).expect("not-matched composes");

    // A single-partner customer without a reference is not guessed either.
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    let m = w.customer_mail(ALICE, "Accept");
    let d = w.run(&m);
    assert!(d.relationships.is_empty());
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
}

#[test]
fn reply_to_a_not_matched_notice_does_not_pick_a_partner() {
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    w.invite(PARTNER2, "invite alice@contoso.test");
    let m = w.customer_mail(ALICE, "Accept");
    let d = w.run(&m);
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
    let notice = d.mails[0].clone();
    let before = w.store.clone();

    // The customer answers the notice itself, the most natural thing to do.
    let mut reply = w.customer_mail(ALICE, "Accept");
    reply.subject = "Re: your mail".into();
    reply.in_reply_to = vec![notice.message_id.clone()];
    reply.references = vec![m.message_id.clone().unwrap(), notice.message_id.clone()];
    let d = w.run(&reply);
    // Still ambiguous: neither relationship may change.
    assert!(d.relationships.is_empty(), "{}", d.summary);
    assert_eq!(w.store.relationships, before.relationships);
}

#[test]
fn answer_to_a_superseded_invitation_changes_nothing() {
    let mut w = World::new();
    let (_, _, old) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(ALICE, &old, "decline");
    w.run(&reply);
    let (d, _, new) = w.invite(PARTNER1, "invite alice@contoso.test");
    assert_ne!(old, new);
    assert_eq!(d.relationships[0].state, RelationshipState::Invited);
    assert_eq!(d.relationships[0].history.len(), 3);

    let reply = w.reply_plus(ALICE, &old, "accept");
    let d = w.run(&reply);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
    assert_eq!(d.mails[0].vars["reason"], "superseded");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );

    let reply = w.reply_plus(ALICE, &new, "accept");
    assert_eq!(
        w.run(&reply).relationships[0].state,
        RelationshipState::Active
    );
}

// ---- lifecycle: revoked, restore, remove, contact, expiry -----------------

/// Invites and accepts `customer` for `partner`; returns the token used.
fn make_active(w: &mut World, partner: &str, customer: &str) -> String {
    let (_, _, token) = w.invite(partner, &format!("invite {customer}"));
    let reply = w.reply_plus(customer, &token, "Accept");
    w.run(&reply);
    assert_eq!(
        w.store.state("northwind", customer),
        Some(RelationshipState::Active)
    );
    token
}

#[test]
fn revoked_then_restore_accepted_makes_it_active_again() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(PARTNER1, "revoked alice@contoso.test");
    let d = w.run(&m);
    let (ok, text) = only_result(&d);
    assert!(
        ok && text.contains("remain responsible for their support"),
        "{text}"
    );
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::PermissionsRemoved)
    );
    // A second `revoked` says so instead of failing oddly.
    let m = w.command_mail(PARTNER1, "revoked alice@contoso.test");
    let (ok, text) = only_result(&w.run(&m));
    assert!(
        !ok && text.contains("already permissions_removed"),
        "{text}"
    );

    let m = w.command_mail(PARTNER1, "restore alice@contoso.test");
    let d = w.run(&m);
    let plan = d
        .mails
        .iter()
        .find(|p| p.template == TemplateName::Restore)
        .expect("restore mail")
        .clone();
    assert_eq!(plan.to, vec![ALICE.to_string()]);
    let token = plan.vars["token"].as_str().unwrap().to_string();
    // A restore token is not an invitation token.
    assert!(w
        .key
        .verify(&token, Purpose::Invitation, ALICE, w.now)
        .is_err());
    assert!(w.key.verify(&token, Purpose::Restore, ALICE, w.now).is_ok());
    // The restore mail renders in both locales.
    let t = templates();
    for locale in ["en", "ko"] {
        t.render(TemplateName::Restore, locale, &plan.vars).unwrap();
    }

    let reply = w.reply_plus(ALICE, &token, "Accept");
    let d = w.run(&reply);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active),
        "{d:#?}"
    );
    assert!(templates_of(&d).contains(&TemplateName::AcceptedPartner));
    assert_eq!(d.mails[0].vars["restore"], true);
}

#[test]
fn accept_replayed_to_the_original_invitation_after_revoked_does_not_reactivate() {
    let mut w = World::new();
    let token = make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(PARTNER1, "revoked alice@contoso.test");
    w.run(&m);
    // The customer replays "accept" to the original invitation: by token
    // and by thread. Neither is the current (restore) request.
    let invitation_mid = w
        .store
        .relationship("northwind", ALICE)
        .unwrap()
        .and_then(|r| r.invitation_id)
        .and_then(|id| w.store.invitation(id).unwrap())
        .map(|i| i.message_id)
        .unwrap();
    let by_token = w.reply_plus(ALICE, &token, "Accept");
    let mut by_thread = w.customer_mail(ALICE, "Accept");
    by_thread.in_reply_to = vec![invitation_mid];
    for m in [by_token, by_thread] {
        let d = w.run(&m);
        assert_eq!(
            w.store.state("northwind", ALICE),
            Some(RelationshipState::PermissionsRemoved),
            "{d:#?}"
        );
        assert!(d.relationships.is_empty(), "{d:#?}");
        assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
        assert_eq!(d.mails[0].vars["reason"], "superseded");
        assert_eq!(d.mails[0].to, vec![ALICE.to_string()]);
    }
    // Declining the original is no answer to anything either.
    let decline = w.reply_plus(ALICE, &token, "Decline");
    let d = w.run(&decline);
    assert_eq!(d.mails[0].vars["reason"], "superseded");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::PermissionsRemoved)
    );
}

#[test]
fn a_thread_reference_must_be_a_keyed_message_id_sent_to_the_customer() {
    use sha2::{Digest, Sha256};
    let mut w = World::new();
    let cmd = w.command_mail(PARTNER1, "invite alice@contoso.test");
    let d = w.run(&cmd);
    let plan = plan(&d, TemplateName::Invitation);
    // The old, public formula: `liaison.` + hex(sha256(key ‖ "\0out1")[..12]).
    let h = Sha256::digest(format!("{}\0out1", cmd.key).as_bytes());
    let predicted = format!(
        "liaison.{}@liaison.test",
        h[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_ne!(plan.message_id, predicted, "Message-IDs are keyed");
    assert!(
        plan.message_id.starts_with("liaison.k1."),
        "{}",
        plan.message_id
    );
    let mut forged = w.customer_mail(ALICE, "accept");
    forged.in_reply_to = vec![predicted.clone()];
    forged.references = vec![predicted.clone()];
    let d = w.run(&forged);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
    // A store from before the upgrade indexes the old, computable id: it is
    // still no credential.
    let inv_id = only_invitation_id(&w);
    w.store.threads.insert(predicted, inv_id);
    let d = w.run(&forged);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
    // Another secret gives other ids for the same command mail.
    let same = World::new().run(&cmd);
    assert_eq!(plan.message_id, plan_of(&same).message_id, "stable");
    let mut keyed = World::new();
    keyed.key = TokenKey::new(b"a different secret, also long enough");
    let d2 = keyed.run(&cmd);
    assert_ne!(plan.message_id, plan_of(&d2).message_id);
    assert_ne!(same.invitations[0].id, d2.invitations[0].id);
    // The genuine Message-ID threads.
    let mut genuine = w.customer_mail(ALICE, "accept");
    genuine.in_reply_to = vec![plan.message_id.clone()];
    w.run(&genuine);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
}

/// The id of the only invitation in `w`'s store.
fn only_invitation_id(w: &World) -> u64 {
    let ids: Vec<u64> = w.store.invitations.keys().copied().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0]
}

fn plan_of(d: &Decision) -> MailPlan {
    plan(d, TemplateName::Invitation)
}

#[test]
fn the_draft_itself_is_no_thread_for_the_customer() {
    let mut w = World::new();
    let (_, draft, _) = w.invite(PARTNER1, "invite alice@contoso.test draft");
    assert_eq!(draft.to, vec![PARTNER1]);
    // The draft went to the partner: naming its Message-ID proves nothing
    // about the customer.
    let mut m = w.customer_mail(ALICE, "accept");
    m.in_reply_to = vec![draft.message_id.clone()];
    let d = w.run(&m);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
    // A bounce of the draft names the partner, not the customer: the
    // invitation is not marked bounced (it was never sent to the customer).
    let bounce_to =
        liaison_core::mail::dsn::return_path(w.key.ids(), INVITES, &draft.message_id, &draft.to);
    let raw = format!(
        "Return-Path: <>\r\nDelivered-To: {bounce_to}\r\nFrom: MAILER-DAEMON@mail.liaison.test\r\n\
To: invites@liaison.test\r\nSubject: Undelivered\r\nMessage-ID: <b2@mail.liaison.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
Final-Recipient: rfc822; {PARTNER1}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{}>\r\n\r\n--B--\r\n",
        draft.message_id
    );
    let d = w.run(&inbound::parse(raw.as_bytes(), 1 << 20).unwrap());
    assert!(d.mails.is_empty() && d.invitations.is_empty(), "{d:#?}");
    assert!(
        d.summary.contains("not alice@contoso.test"),
        "{}",
        d.summary
    );
}

#[test]
fn forged_bounces_mark_nothing_and_forward_nothing() {
    let mut w = World::new();
    let (_, plan, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    let good_to =
        liaison_core::mail::dsn::return_path(w.key.ids(), INVITES, &plan.message_id, &plan.to);
    let other_to = liaison_core::mail::dsn::return_path(
        w.key.ids(),
        INVITES,
        &plan.message_id,
        &[BOB.to_string()],
    );
    let report = |return_path: &str, to: &str, failed: &str| {
        format!(
            "Return-Path: {return_path}\r\nDelivered-To: {to}\r\nFrom: MAILER-DAEMON@evil.test\r\n\
To: invites@liaison.test\r\nSubject: Undelivered\r\nMessage-ID: <f@evil.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 log in at http://evil.example/login\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{}>\r\n\r\n--B--\r\n",
            plan.message_id
        )
    };
    for (what, raw) in [
        (
            "stranger's envelope sender",
            report("<mallory@evil.test>", &good_to, ALICE),
        ),
        (
            "null sender, untagged address",
            report("<>", INVITES, ALICE),
        ),
        ("right tag, wrong recipient", report("<>", &other_to, ALICE)),
        (
            "forged tag",
            report(
                "<>",
                "invites+b-aaaaaaaaaaaaaaaaaaaaaaaaaa@liaison.test",
                ALICE,
            ),
        ),
    ] {
        let d = w.run(&inbound::parse(raw.as_bytes(), 1 << 20).unwrap());
        assert_eq!(d.class, MailClass::Ignored, "{what}");
        assert!(
            d.mails.is_empty() && d.invitations.is_empty(),
            "{what}: {d:#?}"
        );
        assert!(d.summary.contains("not believed"), "{what}: {}", d.summary);
    }
    // The real one is believed, and its text is defanged.
    let d = w.run(&inbound::parse(report("<>", &good_to, ALICE).as_bytes(), 1 << 20).unwrap());
    assert_eq!(d.class, MailClass::Bounce, "{d:#?}");
    let reason = d.mails[0].vars["reason"].as_str().unwrap();
    assert!(reason.contains("hxxp://evil[.]example/login"), "{reason}");
    assert!(!reason.contains("http://"), "{reason}");
}

#[test]
fn declining_a_restore_keeps_the_permissions_removed() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(
        PARTNER1,
        "revoked alice@contoso.test\nrestore alice@contoso.test",
    );
    let d = w.run(&m);
    let token = d
        .mails
        .iter()
        .find(|p| p.template == TemplateName::Restore)
        .expect("restore mail")
        .vars["token"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = w.reply_plus(ALICE, &token, "decline");
    let d = w.run(&reply);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::PermissionsRemoved)
    );
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::DeclinedCustomer,
            TemplateName::DeclinedPartner
        ]
    );
    let text = templates()
        .render(TemplateName::DeclinedPartner, "en", &d.mails[1].vars)
        .unwrap()
        .text;
    assert!(text.contains("request to restore"), "{text}");
}

#[test]
fn restore_needs_removed_permissions() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(PARTNER1, "restore alice@contoso.test");
    let (ok, text) = only_result(&w.run(&m));
    assert!(!ok && text.contains("is active"), "{text}");
    let m = w.command_mail(PARTNER1, "restore bob@fabrikam.test");
    let (ok, text) = only_result(&w.run(&m));
    assert!(!ok && text.contains("has no relationship"), "{text}");
}

#[test]
fn customer_reporting_removal_tells_partner_and_support_contact() {
    let mut w = World::new();
    let token = make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(
        PARTNER1,
        "contact alice@contoso.test support@northwind.test",
    );
    let (ok, text) = only_result(&w.run(&m));
    assert!(ok && text.contains("support@northwind.test"), "{text}");
    let reply = w.reply_plus(
        ALICE,
        &token,
        "Hi, we removed your admin permissions today.",
    );
    let d = w.run(&reply);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::PermissionsRemoved)
    );
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::PermissionsRemovedCustomer,
            TemplateName::PermissionsRemovedPartner
        ]
    );
    assert_eq!(d.mails[0].to, vec![ALICE.to_string()]);
    assert_eq!(
        d.mails[1].to,
        vec![PARTNER1.to_string(), "support@northwind.test".to_string()]
    );
    let text = templates()
        .render(
            TemplateName::PermissionsRemovedPartner,
            "en",
            &d.mails[1].vars,
        )
        .unwrap()
        .text;
    assert!(
        text.contains("You remain responsible for their support"),
        "{text}"
    );
    // Korean too.
    let reply = w.reply_plus(ALICE, &token, "관리자 권한을 제거했습니다");
    let d = w.decide(&reply);
    assert!(
        d.summary.contains("already permissions_removed"),
        "{}",
        d.summary
    );
}

#[test]
fn remove_ends_the_relationship_and_tells_the_customer() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(PARTNER1, "remove alice@contoso.test");
    let d = w.run(&m);
    let (ok, text) = only_result(&d);
    assert!(ok && text.contains("removed the relationship"), "{text}");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Removed)
    );
    let notice = d
        .mails
        .iter()
        .find(|p| p.template == TemplateName::RemovedCustomer)
        .expect("customer told");
    assert_eq!(notice.to, vec![ALICE.to_string()]);
    // Removed twice: refused; invite again: allowed.
    let m = w.command_mail(PARTNER1, "remove alice@contoso.test");
    let (ok, _) = only_result(&w.run(&m));
    assert!(!ok);
    let (_, _, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
    let history = &w
        .store
        .relationship("northwind", ALICE)
        .unwrap()
        .unwrap()
        .history;
    let states: Vec<&str> = history.iter().map(|h| h.to.as_str()).collect();
    assert_eq!(states, ["invited", "active", "removed", "invited"]);
}

#[test]
fn another_partner_cannot_touch_the_relationship() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    for cmd in [
        "revoked alice@contoso.test",
        "restore alice@contoso.test",
        "remove alice@contoso.test",
        "contact alice@contoso.test x@y.test",
        "history alice@contoso.test",
    ] {
        let m = w.command_mail(PARTNER2, cmd);
        let d = w.run(&m);
        let (ok, text) = only_result(&d);
        assert!(
            !ok && text.contains("has no relationship with Fabrikam Partners"),
            "{cmd}: {text}"
        );
        assert_eq!(d.mails.len(), 1, "only the transcript: {cmd}");
    }
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
}

#[test]
fn unanswered_invitations_expire_and_the_partner_is_told() {
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    w.invite(PARTNER2, "invite bob@fabrikam.test");
    let ctx = |w: &World, now| {
        liaison_core::decide::expire_due(
            &Context {
                config: &w.config,
                tokens: &w.key,
                now,
            },
            &w.store,
        )
        .unwrap()
    };
    // Not yet: one second before the 30 days (invitation_ttl_days) are over.
    let d = ctx(&w, w.now + 30 * DAY - 1);
    assert!(d.relationships.is_empty() && d.mails.is_empty(), "{d:#?}");
    // Then both expire, each partner told in its own locale.
    let later = w.now + 30 * DAY + 1;
    let d = ctx(&w, later);
    assert_eq!(d.class, MailClass::Timer);
    assert_eq!(d.relationships.len(), 2);
    assert!(d
        .relationships
        .iter()
        .all(|r| r.state == RelationshipState::Expired));
    let mut locales: Vec<(&str, &str)> = d
        .mails
        .iter()
        .map(|m| (m.to[0].as_str(), m.locale.as_str()))
        .collect();
    locales.sort();
    assert_eq!(locales, [(PARTNER1, "en"), (PARTNER2, "ko")]);
    assert!(d
        .mails
        .iter()
        .all(|m| m.template == TemplateName::ExpiredPartner));
    // Deterministic, and idempotent once applied.
    assert_eq!(ctx(&w, later), d);
    w.store.apply(&d);
    assert!(ctx(&w, later + 10).relationships.is_empty());
}

#[test]
fn an_answer_after_expiry_changes_nothing_and_says_why() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    w.now += 30 * DAY + 1;
    let reply = w.reply_plus(ALICE, &token, "Accept");
    let d = w.run(&reply);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
    assert_eq!(d.mails[0].vars["reason"], "expired");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
}

// ---- fixed relationship duration ------------------------------------------

fn sweep(w: &mut World) -> Decision {
    let d = liaison_core::decide::expire_due(
        &Context {
            config: &w.config,
            tokens: &w.key,
            now: w.now,
        },
        &w.store,
    )
    .unwrap();
    w.store.apply(&d);
    d
}

#[test]
fn fixed_duration_reminds_at_30_7_1_days_then_expires() {
    let mut w = World::with_config("[lifecycle]\nrelationship_days = 60\n");
    make_active(&mut w, PARTNER1, ALICE);
    let accepted = w.now;
    let ends = accepted + 60 * DAY;
    let rel = w.store.relationship("northwind", ALICE).unwrap().unwrap();
    assert_eq!(rel.ends_at, Some(ends));
    // status shows the end.
    let m = w.command_mail(PARTNER1, "status alice@contoso.test");
    let (_, text) = only_result(&w.run(&m));
    assert!(text.contains("ends "), "{text}");

    w.now = ends - 30 * DAY - 1;
    assert!(sweep(&mut w).mails.is_empty(), "too early");
    w.now = ends - 30 * DAY;
    let d = sweep(&mut w);
    assert_eq!(templates_of(&d), vec![TemplateName::EndingSoonPartner]);
    assert_eq!(d.mails[0].vars["days_left"], 30);
    assert_eq!(d.mails[0].to, vec![PARTNER1.to_string()]);
    assert!(sweep(&mut w).mails.is_empty(), "each reminder once");
    // The daemon was down across the 7-day mark: one reminder, not two.
    w.now = ends - DAY / 2;
    let d = sweep(&mut w);
    assert_eq!(d.mails.len(), 1, "{d:#?}");
    assert_eq!(d.mails[0].vars["days_left"], 1);
    assert!(sweep(&mut w).mails.is_empty());
    // The end.
    w.now = ends;
    let d = sweep(&mut w);
    assert_eq!(
        templates_of(&d),
        vec![TemplateName::RelationshipEndedPartner]
    );
    assert_eq!(d.mails[0].vars["extended"], false);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Expired)
    );
    assert!(sweep(&mut w).mails.is_empty());
    let t = templates();
    for locale in ["en", "ko"] {
        t.render(
            TemplateName::RelationshipEndedPartner,
            locale,
            &d.mails[0].vars,
        )
        .unwrap();
    }
}

#[test]
fn fixed_duration_auto_extends_when_configured() {
    let mut w = World::with_config(
        "[lifecycle]\nrelationship_days = 60\nreminder_days = [7]\nauto_extend = true\n",
    );
    make_active(&mut w, PARTNER1, ALICE);
    let ends = w.now + 60 * DAY;
    w.now = ends - 7 * DAY;
    assert_eq!(sweep(&mut w).mails.len(), 1);
    w.now = ends;
    let d = sweep(&mut w);
    assert_eq!(d.mails[0].vars["extended"], true);
    let rel = w.store.relationship("northwind", ALICE).unwrap().unwrap();
    assert_eq!(rel.state, RelationshipState::Active);
    assert_eq!(rel.ends_at, Some(ends + 60 * DAY));
    assert!(rel.reminders_sent.is_empty(), "reminders start over");
    w.now = ends + 53 * DAY;
    assert_eq!(
        sweep(&mut w).mails.len(),
        1,
        "reminded again in the new period"
    );
}

#[test]
fn without_a_duration_active_relationships_never_end() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    w.now += 10 * 365 * DAY;
    assert!(sweep(&mut w).relationships.is_empty());
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
}

// ---- support requests and tickets ------------------------------------------

const DESK: &str = "helpdesk@liaison.test";

/// Makes Alice's relationship with Northwind `permissions_removed`.
fn removed_permissions(w: &mut World) {
    make_active(w, PARTNER1, ALICE);
    let m = w.command_mail(PARTNER1, "revoked alice@contoso.test");
    w.run(&m);
}

fn support_mail(w: &mut World, from: &str, subject: &str, body: &str) -> InboundMail {
    let mut m = w.customer_mail(from, body);
    m.subject = subject.to_string();
    m
}

fn plan(d: &Decision, t: TemplateName) -> MailPlan {
    d.mails
        .iter()
        .find(|m| m.template == t)
        .unwrap_or_else(|| panic!("no {t:?} in {d:#?}"))
        .clone()
}

#[test]
fn quoted_subjects_lose_control_and_format_characters_and_are_bounded() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = support_mail(
        &mut w,
        ALICE,
        "Re: Invoice \u{202e}fdp.exe\x1b[2K\u{200b}\ttoday",
        "See the attached invoice.",
    );
    let d = w.run(&m);
    let subjects: Vec<String> = d
        .mails
        .iter()
        .map(|p| {
            compose(&w.config, &templates(), w.key.ids(), p, NOW)
                .unwrap()
                .subject
        })
        .collect();
    assert!(!subjects.is_empty(), "{d:#?}");
    for s in subjects.iter().chain(d.tickets.iter().map(|t| &t.subject)) {
        assert!(
            !s.chars()
                .any(|c| c.is_control() || liaison_core::command::is_format_character(c)),
            "{s:?}"
        );
        assert!(s.contains("Invoice fdp.exe [2K today"), "{s:?}");
    }
    // A subject as long as the sender likes is quoted at 200 characters.
    let long = "x".repeat(100_000);
    let m = w.command_mail(PARTNER1, "status");
    let m = InboundMail { subject: long, ..m };
    let d = w.decide(&m);
    let quoted = d.mails[0].vars["original_subject"].as_str().unwrap();
    assert_eq!(quoted.chars().count(), 201, "{quoted}");
}

#[test]
fn active_customers_support_request_goes_to_the_partner() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(
        PARTNER1,
        "contact alice@contoso.test support@northwind.test",
    );
    w.run(&m);
    let m = support_mail(
        &mut w,
        ALICE,
        "Cannot sign in",
        "Nobody can sign in since 9:00.\n\n-- \nAlice",
    );
    let d = w.run(&m);
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::SupportForwardPartner,
            TemplateName::SupportAckCustomer
        ]
    );
    let fwd = &d.mails[0];
    assert_eq!(
        fwd.to,
        vec![PARTNER1.to_string(), "support@northwind.test".to_string()]
    );
    assert_eq!(
        fwd.reply_to.as_deref(),
        Some(ALICE),
        "the partner answers the customer"
    );
    assert_eq!(fwd.vars["text"], "Nobody can sign in since 9:00.");
    assert_eq!(d.mails[1].to, vec![ALICE.to_string()]);
    assert!(d.tickets.is_empty() && d.relationships.is_empty());
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
}

#[test]
fn removed_permissions_open_a_ticket_with_the_desk() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let mut m = support_mail(&mut w, ALICE, "Re: Cannot sign in", "Nobody can sign in.");
    m.attachments = vec![
        inbound::Attachment {
            name: "screenshot.png".into(),
            content_type: "image/png".into(),
            data: vec![1; 1000],
        },
        inbound::Attachment {
            name: "huge.zip".into(),
            content_type: "application/zip".into(),
            data: vec![0; 6 * 1024 * 1024],
        },
    ];
    let d = w.run(&m);
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::TicketOpenedDesk,
            TemplateName::TicketOpenedCustomer,
            TemplateName::TicketOpenedPartner
        ]
    );
    let t = &d.tickets[0];
    assert_eq!((t.id, t.state), (1, TicketState::Open));
    assert_eq!(t.subject, "Cannot sign in");
    assert_eq!(t.entries[0].attachments, vec!["screenshot.png"]);
    let desk = plan(&d, TemplateName::TicketOpenedDesk);
    assert_eq!(desk.to, vec![DESK.to_string()]);
    assert_eq!(
        desk.attachments.len(),
        1,
        "the 6 MiB file is over the 5 MiB limit"
    );
    let out = compose(&w.config, &templates(), w.key.ids(), &desk, w.now).unwrap();
    assert_eq!(
        out.subject,
        "[T-000001] Support request for alice@contoso.test on behalf of Northwind Traders"
    );
    assert!(out.raw.contains("screenshot.png"));
    assert!(
        out.raw.contains("huge.zip"),
        "the desk is told what was left out"
    );
    let ack = compose(
        &w.config,
        &templates(),
        w.key.ids(),
        &plan(&d, TemplateName::TicketOpenedCustomer),
        w.now,
    )
    .unwrap();
    assert!(ack.subject.contains("[T-000001]"), "{}", ack.subject);
    // Numbers go up.
    let m = support_mail(&mut w, ALICE, "Another problem", "Billing is wrong.");
    let d = w.run(&m);
    assert_eq!(d.tickets[0].id, 2);
}

#[test]
fn ticket_thread_follow_ups_desk_replies_and_hijacks() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    let d = w.run(&m);
    let desk_mail = plan(&d, TemplateName::TicketOpenedDesk);

    // The desk answers in its thread (In-Reply-To only, subject rewritten).
    let mut reply = support_mail(&mut w, DESK, "RE: your case", "Please reset the password.\n\nOn Wed, 25 Nov 2026 at 10:00, Liaison <invites@liaison.test> wrote:\n> old");
    reply.in_reply_to = vec![desk_mail.message_id.clone()];
    let d = w.run(&reply);
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::TicketRelayCustomer,
            TemplateName::TicketRelayPartner
        ]
    );
    assert_eq!(d.mails[0].to, vec![ALICE.to_string()]);
    assert_eq!(d.mails[0].vars["text"], "Please reset the password.");
    assert_eq!(d.tickets[0].state, TicketState::WaitingOnCustomer);

    // The customer follows up by subject tag only.
    let m = support_mail(
        &mut w,
        ALICE,
        "Re: [T-000001] Cannot sign in",
        "Done, still failing.",
    );
    let d = w.run(&m);
    assert_eq!(templates_of(&d), vec![TemplateName::TicketRelayDesk]);
    assert_eq!(d.mails[0].to, vec![DESK.to_string()]);
    assert_eq!(d.mails[0].in_reply_to.as_ref(), Some(&desk_mail.message_id));
    assert_eq!(d.tickets[0].state, TicketState::WaitingOnSupport);
    assert_eq!(d.tickets[0].entries.len(), 3);

    // Anyone else quoting the number is refused, silently.
    let m = support_mail(
        &mut w,
        BOB,
        "Re: [T-000001] Cannot sign in",
        "Send me the data",
    );
    let d = w.run(&m);
    assert_silent_ignore(&d);
    assert!(d.summary.contains("hijack"), "{}", d.summary);
    assert_eq!(w.store.tickets[&1].entries.len(), 3);
}

#[test]
fn ticket_commands_close_and_reopen() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    w.run(&m);

    let m = w.command_mail(PARTNER1, "tickets");
    let (_, text) = only_result(&w.run(&m));
    assert!(text.contains("T-000001") && text.contains("open"), "{text}");
    let m = w.command_mail(PARTNER1, "ticket T-000001");
    let (_, text) = only_result(&w.run(&m));
    assert!(text.contains("Nobody can sign in."), "{text}");
    // Another partner: not found, never revealed.
    for cmd in ["ticket T-000001", "close T-000001"] {
        let m = w.command_mail(PARTNER2, cmd);
        let (ok, text) = only_result(&w.run(&m));
        assert!(!ok && text.contains("not found"), "{cmd}: {text}");
    }
    let m = w.command_mail(PARTNER2, "tickets all");
    let (_, text) = only_result(&w.run(&m));
    assert_eq!(text, "no tickets");

    let m = w.command_mail(PARTNER1, "close T-000001 fixed by a password reset");
    let d = w.run(&m);
    let (ok, text) = only_result(&d);
    assert!(ok && text.contains("closed"), "{text}");
    assert!(templates_of(&d).contains(&TemplateName::TicketClosedCustomer));
    assert!(templates_of(&d).contains(&TemplateName::TicketClosedDesk));
    assert_eq!(w.store.tickets[&1].state, TicketState::Closed);
    let m = w.command_mail(PARTNER1, "tickets");
    let (_, text) = only_result(&w.run(&m));
    assert_eq!(text, "no open tickets");

    // Within 14 days a customer mail reopens it…
    w.now += 13 * DAY;
    let m = support_mail(
        &mut w,
        ALICE,
        "Re: [T-000001] Cannot sign in",
        "It broke again.",
    );
    let d = w.run(&m);
    assert_eq!(d.tickets[0].id, 1);
    assert_eq!(d.tickets[0].state, TicketState::WaitingOnSupport);
    assert_eq!(d.mails[0].vars["reopened"], true);
    // …closed again, and 15 days later a new ticket refers to the old one.
    let m = w.command_mail(PARTNER1, "close T-000001");
    w.run(&m);
    w.now += 15 * DAY;
    let m = support_mail(&mut w, ALICE, "Re: [T-000001] Cannot sign in", "Again!");
    let d = w.run(&m);
    assert_eq!(d.tickets[0].id, 2);
    assert_eq!(d.tickets[0].previous, Some(1));
    assert_eq!(w.store.tickets[&1].state, TicketState::Closed);
}

// ---- reliability and security ----------------------------------------------

#[test]
fn reply_cap_suppresses_replies_past_the_limit() {
    let mut w = World::new();
    let m = w.command_mail(PARTNER1, "help");
    let mut d = w.decide(&m);
    assert_eq!(d.mails.len(), 1);
    // 19 sent this hour: the 20th goes out.
    let (kept, notes) =
        liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 19, 20);
    assert_eq!((kept.len(), notes.len(), d.mails.len()), (1, 0, 1));
    // 20 sent: suppressed, and said so.
    let mut d = w.decide(&m);
    let (kept, notes) =
        liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 20, 20);
    assert!(kept.is_empty() && d.mails.is_empty());
    assert!(
        notes[0].reason.contains("partner1@liaison.test"),
        "{notes:?}"
    );
    // A transcript of real work is never capped; one of errors only is.
    let m = w.command_mail(PARTNER1, "status");
    let mut d = w.decide(&m);
    let (_, notes) =
        liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert!(notes.is_empty() && d.mails.len() == 1);
    let m = w.command_mail(PARTNER1, "frobnicate");
    let mut d = w.decide(&m);
    liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert!(d.mails.is_empty());
    // Invitations are not replies and are never capped (and the transcript
    // of a successful invite is real work).
    let m = w.command_mail(PARTNER1, "invite alice@contoso.test");
    let mut d = w.decide(&m);
    liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert_eq!(
        templates_of(&d),
        vec![TemplateName::Invitation, TemplateName::Transcript]
    );
}

#[test]
fn a_mail_without_message_id_does_not_escape_the_reply_cap() {
    // Leaving out the Message-ID (as some auto-responders do, and as any
    // forger may) leaves the answers without In-Reply-To: they are still
    // replies to the sender and are capped.
    // (A transcript that only answers "help" is a reply like any other; one
    // whose commands did something is work and never capped.)
    let mut w = World::new();
    let mut m = w.command_mail(PARTNER1, "help");
    m.message_id = None;
    let mut d = w.decide(&m);
    assert_eq!(templates_of(&d), vec![TemplateName::Transcript]);
    assert!(d.mails[0].in_reply_to.is_none());
    let (kept, held) =
        liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert!(kept.is_empty() && d.mails.is_empty(), "{d:#?}");
    assert_eq!(held.len(), 1);
    assert!(held[0].reason.contains(PARTNER1), "{}", held[0].reason);
    // A customer's unclear answer by token: the clarification is capped too.
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.reply_plus(ALICE, &token, "hmm");
    reply.message_id = None;
    let mut d = w.decide(&reply);
    assert_eq!(templates_of(&d), vec![TemplateName::Clarify]);
    let (_, held) =
        liaison_core::decide::apply_reply_cap(&mut d, reply.from.as_deref(), &|_| 1000, 20);
    assert!(d.mails.is_empty() && held.len() == 1, "{d:#?}");
    // Invitations (to a customer, not the sender) are still never capped.
    let mut m = w.command_mail(PARTNER1, "invite bob@fabrikam.test");
    m.message_id = None;
    let mut d = w.decide(&m);
    liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert_eq!(
        templates_of(&d),
        vec![TemplateName::Invitation, TemplateName::Transcript]
    );
}

#[test]
fn a_ticket_keeps_the_start_of_a_long_follow_up_and_relays_all_of_it() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    w.run(&m);
    let long = "log line with some detail\n".repeat(40_000);
    let m = support_mail(&mut w, ALICE, "Re: [T-000001] Cannot sign in", &long);
    let d = w.run(&m);
    let relay = plan(&d, TemplateName::TicketRelayDesk);
    assert_eq!(
        relay.vars["text"].as_str().unwrap().len(),
        long.trim_end().len(),
        "the desk gets all of it"
    );
    let kept = &d.tickets[0].entries.last().unwrap().text;
    assert!(
        kept.chars().count() < liaison_core::decide::MAX_ENTRY_TEXT_CHARS + 100,
        "{} characters kept",
        kept.chars().count()
    );
    assert!(kept.starts_with("log line with some detail\n"));
    assert!(
        kept.contains("more characters, not kept here"),
        "{}",
        &kept[kept.len() - 200..]
    );
    // A short follow-up is kept as it is.
    let m = support_mail(
        &mut w,
        ALICE,
        "Re: [T-000001] Cannot sign in",
        "Still failing.",
    );
    let d = w.run(&m);
    assert_eq!(d.tickets[0].entries.last().unwrap().text, "Still failing.");
}

#[test]
fn ticket_traffic_is_never_held_by_the_reply_cap() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    w.run(&m);
    // A follow-up relayed to the desk is a reply (In-Reply-To the desk's
    // thread), to a shared address that got hundreds this hour: not a loop.
    let m = support_mail(
        &mut w,
        ALICE,
        "Re: [T-000001] Cannot sign in",
        "Still failing.",
    );
    let mut d = w.decide(&m);
    assert_eq!(templates_of(&d), vec![TemplateName::TicketRelayDesk]);
    assert!(d.mails[0].in_reply_to.is_some());
    let (_, held) = liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert!(held.is_empty(), "{held:?}");
    assert_eq!(d.mails.len(), 1);
}

#[test]
fn support_requests_past_the_cap_are_held_with_their_mails() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    let mut d = w.decide(&m);
    let (counted, held) = liaison_core::decide::apply_support_cap(&mut d, &|_| 4, 5);
    assert_eq!(counted.as_deref(), Some(ALICE));
    assert!(held.is_empty());
    assert_eq!(d.mails.len(), 3);
    let mut d = w.decide(&m);
    let (counted, held) = liaison_core::decide::apply_support_cap(&mut d, &|_| 5, 5);
    assert!(counted.is_none() && d.mails.is_empty());
    assert_eq!(
        held.iter().map(|h| h.plan.template).collect::<Vec<_>>(),
        vec![
            TemplateName::TicketOpenedDesk,
            TemplateName::TicketOpenedCustomer,
            TemplateName::TicketOpenedPartner
        ]
    );
    assert!(held
        .iter()
        .all(|h| h.partner.as_deref() == Some("northwind")));
    assert!(held[0].reason.contains(ALICE), "{}", held[0].reason);
    // The ticket itself is still recorded: releasing its mails completes it.
    assert_eq!(d.tickets.len(), 1);
    // Other mail is not a support request and is not counted.
    let m = w.command_mail(PARTNER1, "status");
    let mut d = w.decide(&m);
    let (counted, held) = liaison_core::decide::apply_support_cap(&mut d, &|_| 1000, 5);
    assert!(counted.is_none() && held.is_empty() && d.mails.len() == 1);
}

#[test]
fn a_refused_recipient_is_reported_to_the_partner_but_never_to_itself() {
    let w = World::new();
    let ctx = Context {
        config: &w.config,
        tokens: &w.key,
        now: w.now,
    };
    let recipients = vec![PARTNER1.to_string(), "support@northwind.test".to_string()];
    let refused = liaison_core::decide::RefusedMail {
        subject: "Accepted: alice@contoso.test granted delegated admin permissions",
        recipients: &recipients,
        ticket: None,
    };
    let d = liaison_core::decide::recipient_refused(
        &ctx,
        &w.store,
        &refused,
        "support@northwind.test",
        "550 5.1.1 user unknown",
        "k1",
    )
    .unwrap();
    assert_eq!(templates_of(&d), vec![TemplateName::DeliveryFailedPartner]);
    assert_eq!(d.mails[0].to, vec![PARTNER1.to_string()]);
    assert_eq!(d.mails[0].vars["recipient"], "support@northwind.test");
    assert_eq!(d.mails[0].vars["reason"], "550 5.1.1 user unknown");
    // The partner's own address refused: logged, not written to again.
    let d = liaison_core::decide::recipient_refused(
        &ctx,
        &w.store,
        &refused,
        PARTNER1,
        "550 5.1.1 user unknown",
        "k2",
    )
    .unwrap();
    assert!(d.mails.is_empty(), "{:?}", d.mails);
    // Nobody concerned (no ticket, no partner among the recipients).
    let strangers = vec!["x@elsewhere.test".to_string()];
    let d = liaison_core::decide::recipient_refused(
        &ctx,
        &w.store,
        &liaison_core::decide::RefusedMail {
            subject: "s",
            recipients: &strangers,
            ticket: None,
        },
        "x@elsewhere.test",
        "550",
        "k3",
    )
    .unwrap();
    assert!(d.mails.is_empty());
}

#[test]
fn a_bounce_marks_the_invitation_and_tells_the_partner() {
    let mut w = World::new();
    let (_, plan, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    // As delivered: to the invitation's bounce address, with a null sender.
    let bounce_to =
        liaison_core::mail::dsn::return_path(w.key.ids(), INVITES, &plan.message_id, &plan.to);
    let raw = format!(
        "Return-Path: <>\r\nDelivered-To: {bounce_to}\r\n\
From: MAILER-DAEMON@mail.liaison.test\r\nTo: invites@liaison.test\r\nSubject: Undelivered Mail\r\n\
Message-ID: <bounce1@mail.liaison.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
Final-Recipient: rfc822; alice@contoso.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{}>\r\nSubject: x\r\n\r\n--B--\r\n",
        plan.message_id
    );
    let m = inbound::parse(raw.as_bytes(), 1 << 20).unwrap();
    assert!(m.automatic.is_some(), "a bounce is automatic mail");
    let d = w.run(&m);
    assert_eq!(d.class, MailClass::Bounce);
    assert_eq!(templates_of(&d), vec![TemplateName::BouncedPartner]);
    assert_eq!(d.mails[0].to, vec![PARTNER1.to_string()]);
    assert!(d.mails[0].vars["reason"]
        .as_str()
        .unwrap()
        .contains("5.1.1"));
    assert!(d.invitations[0].bounced.is_some());
    // The same bounce again: nothing more.
    let mut again = m.clone();
    again.key = "other".into();
    assert!(w.decide(&again).mails.is_empty());
    // A bounce for a mail that is not an invitation: ignored, never answered.
    let m = inbound::parse(
        raw.replace(&plan.message_id, "unknown@x").as_bytes(),
        1 << 20,
    )
    .unwrap();
    let d = w.decide(&m);
    assert_silent_ignore(&d);
}

#[test]
fn with_a_trusted_authserv_id_forged_partners_are_quarantined() {
    let mut w = World::with_config("");
    w.config.security.trusted_authserv_id = Some("mx.liaison.test".into());
    let mut m = w.command_mail(PARTNER1, "invite alice@contoso.test");
    let d = w.decide(&m);
    assert_eq!(d.class, MailClass::Quarantined);
    assert!(d.mails.is_empty() && d.invitations.is_empty(), "{d:#?}");
    assert!(d.summary.contains("not authenticated"), "{}", d.summary);
    // Forged header from elsewhere: still quarantined.
    m.authentication_results = vec!["evil.test; dkim=pass header.d=liaison.test".into()];
    assert_eq!(w.decide(&m).class, MailClass::Quarantined);
    // Our server says DKIM passed for the partner's domain: accepted.
    m.authentication_results = vec!["mx.liaison.test; dkim=pass header.d=liaison.test".into()];
    let d = w.decide(&m);
    assert_eq!(
        d.class,
        MailClass::Command {
            partner: "northwind".into()
        }
    );
    assert_eq!(d.invitations.len(), 1);
}

#[test]
fn commands_given_as_data_run_as_the_same_mailed_commands() {
    use liaison_core::command::Command;
    let commands = vec![
        Command::invite(ALICE, Some("Contoso, Ltd"), Some("ko"), false).unwrap(),
        Command::invite(ALICE, None, None, false).unwrap(),
        Command::invite(PARTNER2, None, None, false).unwrap(),
    ];
    let w = World::new();
    let ctx = Context {
        config: &w.config,
        tokens: &w.key,
        now: w.now,
    };
    let partner = w.config.partner("northwind").unwrap();
    let (d, outcomes) = liaison_core::decide::run_given_commands(
        &ctx,
        &w.store,
        partner,
        PARTNER1,
        "import:northwind:test:0",
        &commands,
    )
    .unwrap();
    // No transcript: the caller reports the outcomes.
    assert_eq!(templates_of(&d), vec![TemplateName::Invitation]);
    assert_eq!(d.relationships.len(), 1);
    assert_eq!(
        d.relationships[0].customer_name.as_deref(),
        Some("Contoso, Ltd")
    );
    assert_eq!(d.relationships[0].history[0].actor, PARTNER1);
    // The same commands mailed give the same results.
    let mut mailed = World::new();
    let m = mailed.command_mail(
        PARTNER1,
        &format!(
            "invite {ALICE} name \"Contoso, Ltd\" locale ko\ninvite {ALICE}\ninvite {PARTNER2}\n"
        ),
    );
    let expected: Vec<(bool, String)> = results(&mailed.run(&m))
        .into_iter()
        .map(|(_, ok, text)| (ok, text))
        .collect();
    let got: Vec<(bool, String)> = outcomes.into_iter().map(|o| (o.ok, o.result)).collect();
    assert_eq!(got, expected);
    assert_eq!(
        got.iter().map(|(ok, _)| *ok).collect::<Vec<_>>(),
        [true, false, false]
    );
}

// ---- the sender trust policy (src/trust.rs) --------------------------------

const TRUSTED_MX: &str = "mx.liaison.test";

fn passed(domain: &str) -> Vec<String> {
    vec![format!("{TRUSTED_MX}; dkim=pass header.d={domain}")]
}

fn assert_quarantined(d: &Decision, what: &str) {
    assert_eq!(d.class, MailClass::Quarantined, "{d:#?}");
    assert!(
        d.mails.is_empty()
            && d.tickets.is_empty()
            && d.relationships.is_empty()
            && d.invitations.is_empty(),
        "{d:#?}"
    );
    assert!(d.summary.contains(what), "{what:?} not in: {}", d.summary);
    assert!(d.summary.contains("is not authenticated"), "{}", d.summary);
}

#[test]
fn with_a_trusted_authserv_id_every_party_of_a_ticket_must_be_authenticated() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = w.command_mail(PARTNER1, "contact alice@contoso.test carol@contoso.test");
    w.run(&m);
    w.config.security.trusted_authserv_id = Some(TRUSTED_MX.into());

    // A support request by address alone: quarantined, no ticket.
    let mut m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    assert_quarantined(&w.decide(&m), "support request (no token, no thread)");
    m.authentication_results = passed("contoso.test");
    let d = w.run(&m);
    assert_eq!(d.tickets.len(), 1, "{d:#?}");
    let desk = plan(&d, TemplateName::TicketOpenedDesk);

    // Every party, forged and then authenticated, by tag and by thread.
    for (from, domain, who) in [
        (DESK, "liaison.test", "the support desk"),
        (PARTNER1, "liaison.test", "its partner"),
        ("carol@contoso.test", "contoso.test", "its support contact"),
        (ALICE, "contoso.test", "its customer"),
    ] {
        for by_tag in [true, false] {
            let subject = if by_tag {
                "Re: [T-000001] Cannot sign in"
            } else {
                "Re: Cannot sign in"
            };
            let mut m = support_mail(&mut w, from, subject, "Try again.");
            if !by_tag {
                m.in_reply_to = vec![desk.message_id.clone()];
            }
            assert_quarantined(
                &w.decide(&m),
                &format!("ticket T-000001 claiming to be from {who} ({from})"),
            );
            // A pass for another domain, or the MX's dkim=fail above a
            // forged pass, is no better.
            m.authentication_results = passed("evil.example");
            assert_quarantined(&w.decide(&m), "(not aligned)");
            m.authentication_results = vec![
                format!("{TRUSTED_MX}; dkim=fail header.d={domain}"),
                passed(domain)[0].clone(),
            ];
            assert_quarantined(&w.decide(&m), &format!("dkim=fail header.d={domain}"));
            m.authentication_results = passed(domain);
            let d = w.decide(&m);
            assert!(
                matches!(d.class, MailClass::Customer { .. }) && !d.mails.is_empty(),
                "{who}: {d:#?}"
            );
        }
    }
}

#[test]
fn answers_with_a_token_need_authentication_only_with_authenticate_customers() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    w.config.security.trusted_authserv_id = Some(TRUSTED_MX.into());
    let mut reply = w.reply_plus(ALICE, &token, "Accept");
    // By default the token is credential enough.
    assert!(matches!(w.decide(&reply).class, MailClass::Customer { .. }));
    w.config.security.authenticate_customers = true;
    assert_quarantined(
        &w.decide(&reply),
        "answer claiming to be from the customer (with a valid token)",
    );
    reply.authentication_results = passed("contoso.test");
    w.run(&reply);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
}

#[test]
fn a_support_request_with_a_token_or_thread_needs_an_authenticated_customer() {
    // The token (or a thread to a mail Liaison sent her) shows only that
    // the sender has seen a mail to the customer: forwarded, copied to a
    // colleague, archived. It answers the invitation; it does not make
    // whoever holds it the customer for a support request forwarded under
    // Liaison's name.
    let mut w = World::new();
    let token = make_active(&mut w, PARTNER1, ALICE);
    w.config.security.trusted_authserv_id = Some(TRUSTED_MX.into());
    let question = "Our printer stopped working after the update, please call me back.";
    let mut by_token = w.reply_plus(ALICE, &token, question);
    assert_quarantined(
        &w.decide(&by_token),
        "support request (with a token or thread",
    );
    let sent = w
        .store
        .threads
        .keys()
        .find(|k| k.starts_with("liaison.k1."))
        .cloned()
        .expect("a mail sent to her");
    let mut by_thread = w.customer_mail(ALICE, question);
    by_thread.in_reply_to = vec![sent];
    assert_quarantined(
        &w.decide(&by_thread),
        "support request (with a token or thread",
    );
    // Authenticated, both are support requests as before.
    for m in [&mut by_token, &mut by_thread] {
        m.authentication_results = passed("contoso.test");
        let d = w.decide(m);
        assert!(
            templates_of(&d).contains(&TemplateName::SupportForwardPartner),
            "{d:#?}"
        );
    }
    // An answer (a state change) still needs only the credential.
    let m = w.reply_plus(ALICE, &token, "We removed your permissions.");
    let d = w.decide(&m);
    assert_eq!(d.relationships.len(), 1, "{d:#?}");
}

#[test]
fn an_answer_to_a_draft_needs_an_authenticated_customer() {
    // The partner received the draft (and its token) to forward: with a
    // trusted MX, the partner must not be able to answer for the customer
    // by writing her From, even with authenticate_customers off.
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test draft");
    w.config.security.trusted_authserv_id = Some(TRUSTED_MX.into());
    let mut reply = w.reply_plus(ALICE, &token, "Accept");
    assert_quarantined(
        &w.decide(&reply),
        "answer claiming to be from the customer (with a valid token of a draft the partner forwarded)",
    );
    // Authenticated as the partner's domain: still not the customer.
    reply.authentication_results = passed("liaison.test");
    assert_quarantined(&w.decide(&reply), "token of a draft");
    reply.authentication_results = passed("contoso.test");
    w.run(&reply);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
}

#[test]
fn the_desk_as_support_contact_answers_the_customer_and_is_mailed_once() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = w.command_mail(PARTNER1, "contact alice@contoso.test helpdesk@liaison.test");
    w.run(&m);
    let m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    let d = w.run(&m);
    let to_desk = d
        .mails
        .iter()
        .flat_map(|m| &m.to)
        .filter(|a| *a == DESK)
        .count();
    assert_eq!(to_desk, 1, "the desk gets the new ticket once: {d:#?}");
    let desk = plan(&d, TemplateName::TicketOpenedDesk);
    let mut m = support_mail(&mut w, DESK, "RE: [T-000001] Cannot sign in", "Reset it.");
    m.in_reply_to = vec![desk.message_id.clone()];
    let d = w.run(&m);
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::TicketRelayCustomer,
            TemplateName::TicketRelayPartner
        ],
        "{}",
        d.summary
    );
    assert_eq!(d.mails[0].to, vec![ALICE.to_string()]);
    assert_eq!(
        d.mails[1].to,
        vec![PARTNER1.to_string()],
        "no copy of its own answer for the desk"
    );
    let t = &d.tickets[0];
    assert_eq!(t.state, TicketState::WaitingOnCustomer);
    assert_eq!(
        t.entries.last().unwrap().author,
        liaison_core::model::ticket::Author::SupportDesk
    );
}

#[test]
fn liaisons_own_addresses_cannot_be_support_contacts() {
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    for own in [COMMANDS, INVITES, "Commands@Liaison.test"] {
        let m = w.command_mail(PARTNER1, &format!("contact alice@contoso.test {own}"));
        let r = results(&w.run(&m));
        assert!(!r[0].1, "{r:?}");
        assert!(r[0].2.contains("Liaison's own addresses"), "{r:?}");
    }
    let m = w.command_mail(PARTNER1, &format!("contact alice@contoso.test {DESK}"));
    let r = results(&w.run(&m));
    assert!(r[0].1, "the desk may be the contact: {r:?}");
}

#[test]
fn a_mail_with_several_from_addresses_is_quarantined() {
    let mut w = World::new();
    let raw = format!(
        "From: {PARTNER1}, Mallory <mallory@evil.test>\r\nTo: {COMMANDS}\r\nSubject: x\r\n\
Message-ID: <multi@evil.test>\r\n\r\ninvite alice@contoso.test\r\n"
    );
    let m = inbound::parse(raw.as_bytes(), 1 << 20).unwrap();
    assert_eq!(m.from.as_deref(), Some(PARTNER1));
    assert_eq!(m.other_from, vec!["mallory@evil.test"]);
    let d = w.run(&m);
    assert_eq!(d.class, MailClass::Quarantined, "{d:#?}");
    assert!(d.mails.is_empty() && d.relationships.is_empty());
    assert!(
        d.summary.contains("several From addresses"),
        "{}",
        d.summary
    );
}
