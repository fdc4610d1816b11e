//! The GDAP decisions of the pure core, over the in-memory store: no
//! server, no Graph, no clock. What `invite … link` and `invite … roles`
//! decide, and what each Graph answer (`decide::gdap`) does to the state
//! and the mails — the same answer on the same state, the same decision.

use liaison_core::config::Config;
use liaison_core::decide::{decide, gdap, Context, Decision, MailClass};
use liaison_core::mail::inbound::InboundMail;
use liaison_core::model::gdap::{GdapStatus, GraphRelationship};
use liaison_core::model::relationship::{HistorySource, RelationshipState};
use liaison_core::model::token::TokenKey;
use liaison_core::render::templates::TemplateName;
use liaison_core::testing::MemStore;
use std::path::Path;

const NOW: u64 = 1_780_000_000;
const ALICE: &str = "alice@contoso.test";
const CONFIG: &str = r#"
[store]
path = "/tmp/liaison-workflow-gdap-test"
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
token_secret = "workflow-gdap-test-secret-0123456789"
[[partner]]
id = "northwind"
name = "Northwind Traders"
emails = ["partner1@liaison.test"]
tenant_id = "7E1A0B4C-1D2E-4F50-8A6B-9C0D1E2F3A4B"
approval_link = "https://admin.microsoft.com/Adminportal/Home?invType=ResellerRelationship&partnerId={partner_tenant_id}&msppId=0&DAP=true#/BillingAccounts/partner-invitation"
[partner.graph]
oauth2 = "g"
[[partner.access_assignment]]
group_id = "869713c9-0b28-4d08-8949-ae07ae1bf528"
roles = ["Helpdesk Administrator"]
[[partner]]
id = "plain"
name = "Plain Partners"
emails = ["partner2@liaison.test"]
[[oauth2]]
name = "g"
token_url = "https://login.example/token"
client_id = "c"
client_secret = "s"
scope = "https://graph.microsoft.com/.default"
"#;

struct World {
    config: Config,
    key: TokenKey,
    store: MemStore,
    now: u64,
    seq: u32,
}

impl World {
    fn new() -> World {
        let config = Config::parse(CONFIG, Path::new("t.toml"), &liaison::files::EnvAndFiles)
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

    fn ctx(&self) -> Context<'_> {
        Context {
            config: &self.config,
            tokens: &self.key,
            now: self.now,
        }
    }

    fn commands(&mut self, from: &str, body: &str) -> Decision {
        self.seq += 1;
        let id = format!("in{}@mail.test", self.seq);
        let mail = InboundMail {
            message_id: Some(id.clone()),
            key: id,
            from: Some(from.to_string()),
            from_name: None,
            other_from: vec![],
            recipients: vec!["commands@liaison.test".into()],
            delivered_to: vec!["commands@liaison.test".into()],
            subject: "commands".into(),
            in_reply_to: vec![],
            references: vec![],
            text: body.to_string(),
            automatic: None,
            size: body.len(),
            attachments: vec![],
            authentication_results: vec![],
            dsn: None,
        };
        let d = decide(&self.ctx(), &self.store, &mail).unwrap();
        self.store.apply(&d);
        d
    }

    fn graph(&mut self, f: impl Fn(&Context, &MemStore) -> Decision) -> Decision {
        let d = f(&self.ctx(), &self.store);
        self.store.apply(&d);
        d
    }
}

fn transcript(d: &Decision) -> String {
    let t = d
        .mails
        .iter()
        .find(|m| m.template == TemplateName::Transcript)
        .expect("transcript");
    t.vars["results"][0]["result"].as_str().unwrap().to_string()
}

fn seen(id: &str, name: &str, status: GdapStatus) -> GraphRelationship {
    serde_json::from_value(serde_json::json!({
        "id": id, "displayName": name, "status": status, "duration": "P730D",
        "autoExtendDuration": "PT0S",
        "accessDetails": {"unifiedRoles": [{"roleDefinitionId": "729827e3-9c14-49f7-bb1b-9608f156bbb8"}]},
        "endDateTime": "2028-05-27T20:26:40Z",
    }))
    .unwrap()
}

#[test]
fn the_partners_link_or_one_per_invitation_and_nothing_elsewhere() {
    let mut w = World::new();
    let d = w.commands("partner1@liaison.test", &format!("invite {ALICE}"));
    let inv = d
        .mails
        .iter()
        .find(|m| m.template == TemplateName::Invitation)
        .unwrap();
    assert_eq!(
        inv.vars["approval_link"],
        "https://admin.microsoft.com/Adminportal/Home?invType=ResellerRelationship&partnerId=7e1a0b4c-1d2e-4f50-8a6b-9c0d1e2f3a4b&msppId=0&DAP=true#/BillingAccounts/partner-invitation"
    );
    assert_eq!(
        d.invitations[0].approval_link.as_deref(),
        inv.vars["approval_link"].as_str()
    );
    assert_eq!(
        w.store.relationships[&("northwind".into(), ALICE.into())].history[0].source,
        Some(HistorySource::Command)
    );
    // Another host: refused, nothing sent, nothing stored.
    let d = w.commands(
        "partner2@liaison.test",
        "invite bob@fabrikam.test link https://evil.example/#/partners",
    );
    assert!(
        transcript(&d).contains("not one of admin.microsoft.com"),
        "{}",
        transcript(&d)
    );
    assert!(d.invitations.is_empty() && d.relationships.is_empty());
    assert_eq!(d.mails.len(), 1);
    // `roles` without [partner.graph] is refused.
    let d = w.commands(
        "partner2@liaison.test",
        "invite bob@fabrikam.test roles \"Helpdesk Administrator\"",
    );
    assert!(
        transcript(&d).contains("needs Microsoft Graph"),
        "{}",
        transcript(&d)
    );
    assert!(d.relationships.is_empty());
}

#[test]
fn graph_answers_drive_the_relationship() {
    let mut w = World::new();
    let d = w.commands(
        "partner1@liaison.test",
        &format!("invite {ALICE} roles \"Helpdesk Administrator\""),
    );
    assert!(
        transcript(&d).contains("requesting a GDAP relationship"),
        "{}",
        transcript(&d)
    );
    // No invitation mail yet: it waits for Microsoft's request id.
    assert!(d
        .mails
        .iter()
        .all(|m| m.template == TemplateName::Transcript));
    let rel = &d.relationships[0];
    let link = rel.gdap.clone().unwrap();
    assert_eq!(link.relationship_id, None);
    assert_eq!(link.request.duration_days, 730);
    let partner = w.config.partner("northwind").unwrap().clone();

    // Microsoft created it: the invitation goes out with that request's link.
    let created = seen("rel-1", &link.display_name, GdapStatus::ApprovalPending);
    let d = w.graph(|ctx, s| gdap::request_created(ctx, s, &partner, ALICE, &created).unwrap());
    let inv = d
        .mails
        .iter()
        .find(|m| m.template == TemplateName::Invitation)
        .unwrap();
    assert_eq!(inv.to, [ALICE]);
    assert!(inv.vars["approval_link"]
        .as_str()
        .unwrap()
        .ends_with("/granularAdminRelationships/rel-1"));
    assert_eq!(inv.vars["roles"][0], "Helpdesk Administrator");
    assert_eq!(d.class, MailClass::Graph);

    // Pending statuses change no state.
    let approved = seen("rel-1", &link.display_name, GdapStatus::Approved);
    let d = w.graph(|ctx, s| gdap::observed(ctx, s, &partner, ALICE, &approved).unwrap());
    assert!(d.mails.is_empty());
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );

    // Active: active, told, recorded as Graph's, assignments due; the same
    // answer twice gives the same mails, then nothing.
    let active = seen("rel-1", &link.display_name, GdapStatus::Active);
    let first = gdap::observed(&w.ctx(), &w.store, &partner, ALICE, &active).unwrap();
    let again = gdap::observed(&w.ctx(), &w.store, &partner, ALICE, &active).unwrap();
    assert_eq!(first, again);
    let d = w.graph(|ctx, s| gdap::observed(ctx, s, &partner, ALICE, &active).unwrap());
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
    let templates: Vec<TemplateName> = d.mails.iter().map(|m| m.template).collect();
    assert_eq!(
        templates,
        [
            TemplateName::AcceptedCustomer,
            TemplateName::AcceptedPartner
        ]
    );
    assert_eq!(d.mails[1].vars["verified"], true);
    let r = &w.store.relationships[&("northwind".into(), ALICE.into())];
    assert_eq!(r.history.last().unwrap().source, Some(HistorySource::Graph));
    assert!(r.gdap.as_ref().unwrap().assignments_due);
    assert_eq!(r.ends_at, Some(1_843_072_000));
    let d = w.graph(|ctx, s| gdap::observed(ctx, s, &partner, ALICE, &active).unwrap());
    assert!(d.mails.is_empty() && d.relationships.is_empty());
    let d = w.graph(|ctx, s| gdap::assignments_tried(ctx, s, &partner, ALICE, &[]).unwrap());
    assert!(!d.relationships[0].gdap.as_ref().unwrap().assignments_due);

    // Terminated in Microsoft: permissions removed, with the support duty.
    let gone = seen("rel-1", &link.display_name, GdapStatus::Terminated);
    let d = w.graph(|ctx, s| gdap::observed(ctx, s, &partner, ALICE, &gone).unwrap());
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::PermissionsRemoved)
    );
    assert!(d
        .mails
        .iter()
        .any(|m| m.template == TemplateName::PermissionsRemovedPartner));

    // Another relationship's id changes nothing.
    let other = seen("rel-2", "x", GdapStatus::Active);
    let d = w.graph(|ctx, s| gdap::observed(ctx, s, &partner, ALICE, &other).unwrap());
    assert_eq!(d.class, MailClass::Ignored);
}

#[test]
fn a_refused_request_removes_the_relationship_and_tells_the_partner() {
    let mut w = World::new();
    w.commands(
        "partner1@liaison.test",
        &format!("invite {ALICE} roles \"User Administrator\""),
    );
    let partner = w.config.partner("northwind").unwrap().clone();
    let d = w.graph(|ctx, s| {
        gdap::call_failed(
            ctx,
            s,
            &partner,
            ALICE,
            "the GDAP relationship request",
            "403 Authorization_RequestDenied",
        )
        .unwrap()
    });
    assert_eq!(d.mails[0].template, TemplateName::GdapProblemPartner);
    assert_eq!(d.mails[0].vars["invitation_held"], true);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Removed)
    );
    assert!(w.store.relationships[&("northwind".into(), ALICE.into())]
        .gdap
        .is_none());
}
