//! End-to-end, level 2 of GDAP: the real `liaison` binary, the loopback
//! Postfix + Dovecot, the local OAuth2 token endpoint emulator
//! (`common::token_emulator`) and the local Microsoft Graph emulator
//! (`graph_emulator`; neither is Microsoft's service). The whole story:
//! invite with roles → request created and locked in "Graph" → invitation
//! with its approval link → the customer approves in "Microsoft" → active,
//! partner told, access assignment made → the customer terminates →
//! `permissions_removed`, tickets as usual; and Graph down for a while,
//! throttling, an expired token, the partner's `terminate`.

mod common;
mod graph_emulator;

use common::token_emulator::TokenEmulator;
use common::*;
use graph_emulator::{GraphEmulator, TokenCheck};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const HELPDESK: &str = "helpdesk@liaison.test";
const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";
const GROUP: &str = "869713c9-0b28-4d08-8949-ae07ae1bf528";
const HELPDESK_ROLE: &str = "729827e3-9c14-49f7-bb1b-9608f156bbb8";

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, HELPDESK, ALICE, BOB] {
        clear_mailbox(u).await;
    }
}

/// Graph accepts exactly the JWTs the token emulator signed for our app
/// and that have not expired, as a resource server checks its authority's
/// tokens.
fn jwt_check(key: Vec<u8>) -> TokenCheck {
    Arc::new(move |token: &str| {
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            return Err("not a JWT".into());
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        let sig = data_encoding::BASE64URL_NOPAD
            .decode(parts[2].as_bytes())
            .map_err(|_| "bad signature encoding")?;
        mac.verify_slice(&sig).map_err(|_| "bad signature")?;
        let claims: serde_json::Value = serde_json::from_slice(
            &data_encoding::BASE64URL_NOPAD
                .decode(parts[1].as_bytes())
                .map_err(|_| "bad payload")?,
        )
        .map_err(|_| "bad claims")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if claims["exp"].as_i64().unwrap_or(0) <= now {
            return Err("expired".into());
        }
        if claims["appid"] != "graph-app" {
            return Err("another app".into());
        }
        Ok(())
    })
}

fn with_graph(config: String, token_url: &str, graph_url: &str) -> String {
    let partner = "emails = [\"partner1@liaison.test\"]\nlocale = \"en\"\n";
    let config = config.replace(
        partner,
        &format!(
            "{partner}tenant_id = \"7e1a0b4c-1d2e-4f50-8a6b-9c0d1e2f3a4b\"\n\n\
             [partner.graph]\noauth2 = \"northwind-graph\"\nbase_url = \"{graph_url}\"\npoll_interval_secs = 1\n\n\
             [[partner.role_set]]\nname = \"helpdesk\"\nroles = [\"Helpdesk Administrator\", \"User Administrator\"]\n\n\
             [[partner.access_assignment]]\ngroup_id = \"{GROUP}\"\nroles = [\"Helpdesk Administrator\"]\n\n"
        ),
    );
    format!(
        "{config}\n[[oauth2]]\nname = \"northwind-graph\"\ntoken_url = \"{token_url}\"\n\
         client_id = \"graph-app\"\nclient_secret = \"graph-secret-not-logged\"\n\
         scope = \"https://graph.microsoft.com/.default\"\ngrant = \"client_credentials\"\n"
    )
}

/// Waits until the emulator holds a relationship whose status is `status`.
async fn wait_graph(
    emu: &GraphEmulator,
    what: &str,
    pred: impl Fn(&graph_emulator::Relationship) -> bool,
) -> graph_emulator::Relationship {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(r) = emu.relationships().into_iter().find(|r| pred(r)) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in Graph; log {:?}",
            emu.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_of(daemon: &Daemon, customer: &str) -> String {
    daemon.status(customer)[0]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_gdap_story_through_graph() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let key = b"graph-emulator-test-key".to_vec();
    let tokens = TokenEmulator::with_key(key.clone());
    tokens.register_app("graph-app", "graph-secret-not-logged", "liaison.test");
    let graph = GraphEmulator::start(jwt_check(key)).await;
    let token_url = tokens.token_url("northwind.onmicrosoft.com");
    let graph_url = graph.base_url();
    let mut daemon =
        Daemon::start_custom(Transport::Plain, |c| with_graph(c, &token_url, &graph_url));

    // Auto-extend with Global Administrator is refused before Graph is asked.
    let t = partner_commands(
        &format!("invite {ALICE} roles \"Global Administrator\" auto-extend"),
        "g0",
    )
    .await;
    assert!(
        t.text
            .contains("auto-extend is not possible with Global Administrator"),
        "{}",
        t.text
    );
    let t = partner_commands("roles", "g0b").await;
    assert!(
        t.text.contains("Helpdesk Administrator") && t.text.contains("helpdesk: "),
        "{}",
        t.text
    );

    // 1. The partner invites with roles: the request is created and locked.
    let t = partner_commands(
        &format!("invite {ALICE} name \"Contoso\" roles helpdesk duration 30d auto-extend"),
        "g1",
    )
    .await;
    assert!(
        t.text.contains("requesting a GDAP relationship"),
        "{}",
        t.text
    );
    let rel = wait_graph(&graph, "the request", |r| r.status == "approvalPending").await;
    assert_eq!(rel.duration_days, 30);
    assert_eq!(rel.auto_extend, "P180D");
    assert_eq!(rel.roles.len(), 2);
    assert!(
        rel.display_name.starts_with("Liaison contoso.test "),
        "{}",
        rel.display_name
    );
    assert_eq!(rel.requests, ["lockForApproval"]);

    // 2. The invitation carries that request's own approval link.
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let link = format!(
        "https://admin.microsoft.com/AdminPortal/Home#/partners/invitation/granularAdminRelationships/{}",
        rel.id
    );
    assert!(inv.text.contains(&link), "{}", inv.text);
    assert!(
        inv.text.contains("Helpdesk Administrator") && inv.text.contains("30 days"),
        "{}",
        inv.text
    );
    assert!(inv.html.clone().unwrap().contains(&link));

    // 3. A mailed "accept" before Microsoft shows the approval changes nothing.
    let to = inv.reply_to.clone().unwrap();
    send_raw(
        ALICE,
        &[&to],
        &mail(ALICE, &to, &format!("Re: {}", inv.subject), "", "Accept\n"),
    )
    .await;
    let wait = wait_for(ALICE, "thanks", |m| {
        m.subject.contains("as soon as Microsoft shows it")
    })
    .await;
    assert!(wait.text.contains("approvalPending"), "{}", wait.text);
    assert_eq!(state_of(&daemon, ALICE), "invited");

    // 4. Graph is down while the customer approves: nothing is lost, and
    //    Liaison catches up when Graph is back, through throttling and an
    //    expired token.
    graph.set_down(true);
    assert!(graph.approve(&rel.id));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state_of(&daemon, ALICE), "invited");
    graph.expire_seen_tokens();
    graph.throttle(2, 1);
    let issued_before = tokens.issued("client_credentials");
    graph.set_down(false);
    daemon.wait_state("northwind", ALICE, "active").await;
    assert!(
        graph.unauthorized() >= 1,
        "the expired token was presented once"
    );
    assert!(
        tokens.issued("client_credentials") > issued_before,
        "a fresh token was fetched"
    );

    // 5. The partner is told Microsoft verified it; the access assignment exists.
    let notice = wait_for(PARTNER1, "activation notice", |m| {
        m.subject.starts_with("Accepted:")
    })
    .await;
    assert!(
        notice.text.contains("verified by Microsoft Graph"),
        "{}",
        notice.text
    );
    let confirm = wait_for(ALICE, "confirmation", |m| m.subject.contains("granted")).await;
    assert!(confirm.text.contains("Microsoft shows"), "{}", confirm.text);
    let rel_now = wait_graph(&graph, "the assignment", |r| {
        r.id == rel.id && !r.assignments.is_empty()
    })
    .await;
    assert_eq!(rel_now.assignments.len(), 1);
    assert_eq!(rel_now.assignments[0].group_id, GROUP);
    assert_eq!(rel_now.assignments[0].roles, [HELPDESK_ROLE]);
    let v = daemon.status(ALICE);
    assert_eq!(v[0]["gdap_id"], rel.id.as_str(), "{v}");
    assert_eq!(v[0]["auto_extend"], true, "{v}");
    assert!(v[0]["gdap_ends"].is_string(), "{v}");
    let t = partner_commands(&format!("status {ALICE}\nhistory {ALICE}"), "g2").await;
    assert!(
        t.text.contains(&format!("gdap {} active", rel.id)),
        "{}",
        t.text
    );
    assert!(t.text.contains("auto-extend on"), "{}", t.text);
    assert!(
        t.text.contains("by microsoft-graph") && t.text.contains("[graph]"),
        "{}",
        t.text
    );

    // 6. The customer removes the partner in "Microsoft": permissions_removed,
    //    the usual notices with the support duty, tickets as today.
    assert!(graph.terminate_by_customer(&rel.id));
    daemon
        .wait_state("northwind", ALICE, "permissions_removed")
        .await;
    let removed = wait_for(PARTNER1, "removal notice", |m| {
        m.subject.starts_with("Permissions removed")
    })
    .await;
    assert!(removed.text.contains("Microsoft shows"), "{}", removed.text);
    assert!(
        removed
            .text
            .contains("remain responsible for their support"),
        "{}",
        removed.text
    );
    send_raw(
        ALICE,
        &[INVITES],
        &mail(
            ALICE,
            INVITES,
            "Cannot sign in",
            "",
            "Since this morning nobody can sign in.\n",
        ),
    )
    .await;
    wait_for(HELPDESK, "ticket", |m| m.subject.contains("[T-")).await;

    // 7. The partner's `terminate` (after confirmation) ends another one.
    let _ = partner_commands(
        &format!("invite {BOB} roles \"Helpdesk Administrator\""),
        "g3",
    )
    .await;
    let bob = wait_graph(&graph, "bob's request", |r| {
        r.id != rel.id && r.status == "approvalPending"
    })
    .await;
    assert!(graph.approve(&bob.id));
    daemon.wait_state("northwind", BOB, "active").await;
    let t = partner_commands(&format!("terminate {BOB}"), "g4").await;
    assert!(
        t.text.contains(&format!("terminate {BOB} confirm")),
        "{}",
        t.text
    );
    assert_eq!(graph.relationship(&bob.id).unwrap().status, "active");
    let t = partner_commands(&format!("terminate {BOB} confirm"), "g5").await;
    assert!(
        t.text.contains("terminating the GDAP relationship"),
        "{}",
        t.text
    );
    daemon
        .wait_state("northwind", BOB, "permissions_removed")
        .await;
    assert_eq!(
        graph.relationship(&bob.id).unwrap().requests,
        ["lockForApproval", "terminate"]
    );

    // The client secret and the tokens never reach the log.
    let log = daemon.log();
    assert!(
        !log.contains("graph-secret-not-logged"),
        "secret in the log"
    );
    assert!(!log.contains("eyJ"), "a token in the log");
    let status = daemon.stop();
    assert!(status.success(), "{}", daemon.log());
}
