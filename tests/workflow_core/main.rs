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

use liaison_core::testing::CONFIG;

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
        let mut m = liaison_core::testing::mail(&id, from, COMMANDS, "commands", body);
        m.delivered_to = vec![COMMANDS.to_string()];
        m
    }

    /// A mail from `from` to the bare invitations address, with no reference
    /// to any invitation; tests add the reference they exercise.
    fn customer_mail(&mut self, from: &str, body: &str) -> InboundMail {
        let id = self.next_message_id();
        let mut m = liaison_core::testing::mail(
            &id,
            from,
            INVITES,
            "Re: delegated admin permissions",
            body,
        );
        m.delivered_to = vec![];
        m
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

/// `token` with one character in its signature part replaced.
fn flip(token: &str, at: usize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[at] = if chars[at] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

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

/// The id of the only invitation in `w`'s store.
fn only_invitation_id(w: &World) -> u64 {
    let ids: Vec<u64> = w.store.invitations.keys().copied().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0]
}

fn plan_of(d: &Decision) -> MailPlan {
    plan(d, TemplateName::Invitation)
}

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

mod caps;
mod commands;
mod customer;
mod lifecycle;
mod security;
mod support;
