//! Liaison's Microsoft Graph client against the local Graph emulator
//! (`tests/graph_emulator`, not Microsoft Graph): every GDAP call, and every
//! error the API reference describes for them.

mod graph_emulator;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use graph_emulator::GraphEmulator;
use liaison::io::graph::{BaseUrl, BearerTokenSource, GdapApi, GraphClient, GraphError};
use liaison_core::model::gdap::{
    granular_admin_link, parse_roles, AccessAssignmentBody, GdapRequest, GdapStatus, RequestAction,
};

/// Test tokens: the emulator accepts exactly the ones issued and not yet
/// expired, like a resource server checking an authority's tokens.
#[derive(Default)]
struct Issuer {
    valid: Mutex<HashSet<String>>,
    cached: Mutex<Option<String>>,
    issued: AtomicU64,
}

impl Issuer {
    fn check(self: &Arc<Self>) -> graph_emulator::TokenCheck {
        let me = self.clone();
        Arc::new(move |t: &str| {
            if me.valid.lock().unwrap().contains(t) {
                Ok(())
            } else {
                Err("expired or unknown".into())
            }
        })
    }
    /// Every token issued so far expires (the cached one too).
    fn expire_all(&self) {
        self.valid.lock().unwrap().clear();
    }
}

impl BearerTokenSource for Issuer {
    fn bearer_token(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().unwrap();
            if let Some(t) = cached.as_ref() {
                return Ok(t.clone());
            }
            let n = self.issued.fetch_add(1, Ordering::SeqCst);
            let t = format!("test-token-{n}-{:x}", std::process::id());
            self.valid.lock().unwrap().insert(t.clone());
            *cached = Some(t.clone());
            Ok(t)
        })
    }
    fn invalidate(&self) {
        *self.cached.lock().unwrap() = None;
    }
}

async fn setup() -> (GraphEmulator, Arc<Issuer>, GraphClient) {
    let issuer = Arc::new(Issuer::default());
    let emu = GraphEmulator::start(issuer.check()).await;
    let client = GraphClient::new(
        BaseUrl::parse(&emu.base_url()).unwrap(),
        issuer.clone(),
        None,
    )
    .unwrap()
    .with_timeout(Duration::from_secs(5));
    (emu, issuer, client)
}

fn request(roles: &str, days: u32, auto_extend: bool) -> GdapRequest {
    let roles = parse_roles(roles, |_| None).unwrap();
    GdapRequest::new(&roles, days, auto_extend).unwrap()
}

#[tokio::test]
async fn the_whole_relationship_through_the_client() {
    let (emu, _issuer, client) = setup().await;
    let req = request("Helpdesk Administrator, User Administrator", 730, true);
    let body = req.body("Liaison contoso.test 0000000000000001");
    let created = client.create_relationship(&body).await.unwrap();
    assert_eq!(created.status, GdapStatus::Created);
    assert_eq!(
        created.display_name,
        "Liaison contoso.test 0000000000000001"
    );
    assert!(created.auto_extends());
    let stored = emu.relationship(&created.id).unwrap();
    assert_eq!(stored.duration_days, 730);
    assert_eq!(
        stored.roles,
        [
            "729827e3-9c14-49f7-bb1b-9608f156bbb8",
            "fe930be7-5e62-47db-91af-98c3a49a38b1"
        ]
    );

    client
        .request_action(&created.id, RequestAction::LockForApproval)
        .await
        .unwrap();
    let got = client.get_relationship(&created.id).await.unwrap();
    assert_eq!(got.status, GdapStatus::ApprovalPending);
    assert!(granular_admin_link(&got.id).ends_with(&got.id));

    // A retry finds the earlier request by its display name.
    let found = client
        .find_by_display_name("Liaison contoso.test 0000000000000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, created.id);
    assert!(client
        .find_by_display_name("Liaison it's not there")
        .await
        .unwrap()
        .is_none());

    // The customer approves in "Microsoft".
    assert!(emu.approve(&created.id));
    let active = client.get_relationship(&created.id).await.unwrap();
    assert_eq!(active.status, GdapStatus::Active);
    assert!(active.end_date_time.is_some());

    let assignment = AccessAssignmentBody::new(
        "869713c9-0b28-4d08-8949-ae07ae1bf528",
        &["729827e3-9c14-49f7-bb1b-9608f156bbb8".to_string()],
    );
    let aid = client
        .create_access_assignment(&created.id, &assignment)
        .await
        .unwrap();
    let stored = emu.relationship(&created.id).unwrap();
    assert_eq!(stored.assignments.len(), 1);
    assert_eq!(stored.assignments[0].id, aid);
    assert_eq!(
        stored.assignments[0].group_id,
        "869713c9-0b28-4d08-8949-ae07ae1bf528"
    );

    client
        .request_action(&created.id, RequestAction::Terminate)
        .await
        .unwrap();
    assert_eq!(
        client.get_relationship(&created.id).await.unwrap().status,
        GdapStatus::TerminationRequested
    );
    assert!(emu.terminate_by_customer(&created.id));
    assert_eq!(
        client.get_relationship(&created.id).await.unwrap().status,
        GdapStatus::Terminated
    );
}

#[tokio::test]
async fn graph_refusals_come_back_as_their_errors() {
    let (emu, _issuer, client) = setup().await;
    let body = request("Helpdesk Administrator", 30, false).body("Liaison dup");
    let first = client.create_relationship(&body).await.unwrap();
    // 409 for a displayName already used.
    match client.create_relationship(&body).await {
        Err(GraphError::Conflict { code, .. }) => assert_eq!(code, "Conflict"),
        other => panic!("{other:?}"),
    }
    // 400 for auto-extend with Global Administrator: Liaison refuses it
    // before asking, and Graph refuses it too when asked.
    let mut ga = request("Global Administrator", 30, false).body("Liaison ga");
    ga.auto_extend_duration = "P180D".into();
    match client.create_relationship(&ga).await {
        Err(GraphError::BadRequest { message, .. }) => {
            assert!(message.contains("Global Administrator"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // 400 for a duration beyond P2Y.
    let mut long = request("Helpdesk Administrator", 30, false).body("Liaison long");
    long.duration = "P731D".into();
    assert!(matches!(
        client.create_relationship(&long).await,
        Err(GraphError::BadRequest { .. })
    ));
    // 404 for an unknown id.
    assert!(matches!(
        client.get_relationship("no-such-id").await,
        Err(GraphError::NotFound { .. })
    ));
    // 400 for an assignment on a relationship that is not active.
    let a = AccessAssignmentBody::new("g", &["729827e3-9c14-49f7-bb1b-9608f156bbb8".into()]);
    assert!(matches!(
        client.create_access_assignment(&first.id, &a).await,
        Err(GraphError::BadRequest { .. })
    ));
    // 403 when the app lacks its permission; the error says what to grant.
    emu.set_forbidden(true);
    match client.get_relationship(&first.id).await {
        Err(e @ GraphError::Forbidden { .. }) => {
            assert!(e
                .to_string()
                .contains("DelegatedAdminRelationship.ReadWrite.All"));
            assert!(!e.is_transient());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_expired_token_is_replaced_once() {
    let (emu, issuer, client) = setup().await;
    let body = request("Helpdesk Administrator", 30, false).body("Liaison tok");
    let r = client.create_relationship(&body).await.unwrap();
    assert_eq!(issuer.issued.load(Ordering::SeqCst), 1);
    // The token expires mid-run: one 401, a fresh token, and the call works.
    issuer.expire_all();
    client.get_relationship(&r.id).await.unwrap();
    assert_eq!(issuer.issued.load(Ordering::SeqCst), 2);
    let gets = emu.log().iter().filter(|l| l.starts_with("GET ")).count();
    assert_eq!(gets, 2, "{:?}", emu.log());

    // A token source whose tokens are always refused: 401 after one retry,
    // and the error names neither token.
    struct Refused;
    impl BearerTokenSource for Refused {
        fn bearer_token(&self) -> BoxFuture<'_, Result<String, String>> {
            Box::pin(async { Ok("SECRET-never-valid".to_string()) })
        }
        fn invalidate(&self) {}
    }
    let bad = GraphClient::new(
        BaseUrl::parse(&emu.base_url()).unwrap(),
        Arc::new(Refused),
        None,
    )
    .unwrap();
    match bad.get_relationship(&r.id).await {
        Err(e @ GraphError::Unauthorized { .. }) => {
            let text = e.to_string();
            assert!(text.contains("InvalidAuthenticationToken"), "{text}");
            assert!(!text.contains("SECRET"), "{text}");
            assert!(!format!("{e:?}").contains("SECRET"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn throttling_and_being_down_are_transient() {
    let (emu, _issuer, client) = setup().await;
    let body = request("Helpdesk Administrator", 30, false).body("Liaison thr");
    let r = client.create_relationship(&body).await.unwrap();
    emu.throttle(1, 7);
    match client.get_relationship(&r.id).await {
        Err(e @ GraphError::Throttled { .. }) => {
            assert!(e.is_transient());
            let GraphError::Throttled { retry_after, .. } = e else {
                unreachable!()
            };
            assert_eq!(retry_after, Duration::from_secs(7));
        }
        other => panic!("{other:?}"),
    }
    // After the throttled call, the next one goes through.
    client.get_relationship(&r.id).await.unwrap();

    emu.set_down(true);
    match client.get_relationship(&r.id).await {
        Err(e @ GraphError::Transport { .. }) => assert!(e.is_transient(), "{e}"),
        other => panic!("{other:?}"),
    }
    emu.set_down(false);
    assert_eq!(
        client.get_relationship(&r.id).await.unwrap().status,
        GdapStatus::Created
    );
}
