//! The store interface, tested the same way on both backends: each test
//! function below runs once on sled and once on a fresh PostgreSQL
//! database (the private server of `tests/postgres.sh`). The tests after
//! them are about several instances, which only PostgreSQL allows.

mod common;

use liaison::store::pg::PgStore;
use liaison::store::{inbox_lease, Changes, Cursor, SledStore, Store, StoreError, StoreView};
use liaison_core::config::{PostgresConfig, Secret};
use liaison_core::effects::{OutgoingMail, Processed, ProcessedClass};
use liaison_core::model::relationship::{Relationship, RelationshipState};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Sled,
    Postgres,
}

/// An opened store and what keeps it alive (sled's folder, the
/// database's URL for a second instance).
struct Opened {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    url: Option<String>,
}

fn pg_config(url: &str, lease_secs: u64) -> PostgresConfig {
    PostgresConfig {
        url: Secret::new(url),
        max_connections: 4,
        lease_secs,
        ca_file: None,
        claim_secs: lease_secs * 4,
    }
}

fn open(kind: Kind, name: &str) -> Opened {
    match kind {
        Kind::Sled => {
            let dir = tempfile::tempdir().unwrap();
            let store =
                SledStore::open(&dir.path().join("db"), 8 << 20, Path::new("x.sock")).unwrap();
            Opened {
                store: Arc::new(store),
                _dir: Some(dir),
                url: None,
            }
        }
        Kind::Postgres => {
            let url = common::pg::fresh_database(name);
            let store = PgStore::open(&pg_config(&url, 30)).unwrap();
            Opened {
                store: Arc::new(store),
                _dir: None,
                url: Some(url),
            }
        }
    }
}

/// Another instance on the same PostgreSQL database.
fn second_instance(url: &str, lease_secs: u64) -> Arc<PgStore> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("test-instance-{}-{n}", std::process::id());
    Arc::new(PgStore::open_as(&pg_config(url, lease_secs), &name).unwrap())
}

fn rel(partner: &str, customer: &str, state: RelationshipState) -> Relationship {
    Relationship {
        partner: partner.into(),
        customer: customer.into(),
        customer_name: None,
        locale: "en".into(),
        state,
        since: 1,
        invitation_id: None,
        support_contact: None,
        ends_at: None,
        reminders_sent: vec![],
        history: vec![],
        gdap: None,
    }
}

fn mail(id: &str) -> OutgoingMail {
    OutgoingMail {
        message_id: id.into(),
        envelope_from: "liaison@liaison.test".into(),
        recipients: vec!["alice@contoso.test".into()],
        raw: format!("Message-ID: <{id}>\r\nSubject: x\r\n\r\nbody"),
        subject: "x".into(),
        invitation: Some(7),
        ticket: None,
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sled() {
                super::$name(super::Kind::Sled);
            }
            #[test]
            fn postgres() {
                super::$name(super::Kind::Postgres);
            }
        }
    )*};
}

on_both!(
    relationships_and_their_derived_records_read_back,
    the_outbox_moves_from_due_to_retry_to_sent,
    a_backup_restores_into_an_empty_store_record_for_record,
    processed_markers_and_cursors_land_together,
    a_mail_held_in_its_place_stays_due,
    summaries_read_by_page_and_records_in_batches_see_staged_writes,
    the_sweep_commits_in_parts_and_a_mail_is_decided_between_them,
    a_page_of_summaries_is_the_slice_of_the_whole_list,
);

/// `list`'s page read (counters for the total, the summaries from the
/// page's first key on) gives what slicing the whole list gives, for every
/// filter and position, with staged and flushed commits, and a partner
/// whose id starts with another's.
fn a_page_of_summaries_is_the_slice_of_the_whole_list(kind: Kind) {
    let o = open(kind, "pages");
    let s = &o.store;
    let states = [
        RelationshipState::Active,
        RelationshipState::Invited,
        RelationshipState::Active,
        RelationshipState::Declined,
        RelationshipState::Removed,
    ];
    let of = |partner: &str, n: usize, shift: usize| -> Vec<Relationship> {
        (0..n)
            .map(|i| {
                rel(
                    partner,
                    &format!("c{i:03}@contoso.test"),
                    states[(i + shift) % states.len()],
                )
            })
            .collect()
    };
    s.commit(Changes {
        relationships: [of("p1", 37, 0), of("p10", 9, 1), of("p0", 4, 2)].concat(),
        ..Default::default()
    })
    .unwrap();
    s.flush().unwrap();
    let check = |when: &str, n: usize| {
        let whole = s.relationship_summaries_of("p1").unwrap();
        assert_eq!(whole.len(), n, "{when}");
        let filters = [
            None,
            Some(RelationshipState::Active),
            Some(RelationshipState::Invited),
            Some(RelationshipState::Declined),
            Some(RelationshipState::Removed),
            Some(RelationshipState::Expired),
        ];
        for state in filters {
            let matching: Vec<_> = whole
                .iter()
                .filter(|r| state.is_none_or(|st| r.state == st))
                .cloned()
                .collect();
            for skip in [0, 1, 5, 12, 36, 37, 40] {
                for limit in [1, 7, 100] {
                    let page = s
                        .relationship_summaries_page("p1", state, skip, limit)
                        .unwrap();
                    let want: Vec<_> = matching.iter().skip(skip).take(limit).cloned().collect();
                    assert_eq!(page.total, matching.len(), "{when}: {state:?} total");
                    assert_eq!(
                        page.rows, want,
                        "{when}: {state:?} skip {skip} limit {limit}"
                    );
                }
            }
        }
    };
    check("flushed", 37);
    // Staged, not flushed: states moved, one new, read through the overlay.
    s.commit(Changes {
        relationships: [of("p1", 38, 3), of("p10", 3, 0)].concat(),
        ..Default::default()
    })
    .unwrap();
    check("staged", 38);
    let staged = s.relationship_summaries_page("p1", None, 0, 100).unwrap();
    assert_eq!((staged.total, staged.rows.len()), (38, 38));
    assert_eq!(
        staged.rows[0].state, states[3],
        "the staged state is the one read"
    );
    s.flush().unwrap();
    let flushed = s.relationship_summaries_page("p1", None, 0, 100).unwrap();
    assert_eq!(flushed, staged);
    check("flushed again", 38);
    let empty = s
        .relationship_summaries_page("nobody", None, 0, 100)
        .unwrap();
    assert_eq!((empty.total, empty.rows.len()), (0, 0));
}

fn summaries_read_by_page_and_records_in_batches_see_staged_writes(kind: Kind) {
    let o = open(kind, "pages");
    let s = &o.store;
    let mut flushed: Vec<Relationship> = (0..25)
        .map(|i| {
            rel(
                ["p1", "p2", "p10"][i % 3],
                &format!("c{i:02}@contoso.test"),
                RelationshipState::Active,
            )
        })
        .collect();
    for (i, r) in flushed.iter_mut().enumerate() {
        r.invitation_id = Some(i as u64 + 1);
    }
    s.commit(Changes {
        relationships: flushed.clone(),
        ..Default::default()
    })
    .unwrap();
    s.flush().unwrap();
    // Not flushed: a new one, and a change of one already in the backend.
    s.commit(Changes {
        relationships: vec![
            rel("p1", "zz@contoso.test", RelationshipState::Invited),
            rel("p2", "c01@contoso.test", RelationshipState::Declined),
        ],
        ..Default::default()
    })
    .unwrap();
    let all = s.all_relationship_summaries().unwrap();
    assert_eq!(all.len(), 26);
    for limit in [1, 4, 7, 26, 100] {
        let mut paged = vec![];
        let mut after: Option<(String, String)> = None;
        loop {
            let page = s
                .relationship_summaries_after(
                    after.as_ref().map(|(p, c)| (p.as_str(), c.as_str())),
                    limit,
                )
                .unwrap();
            assert!(page.len() <= limit);
            let more = page.len() == limit;
            if let Some(last) = page.last() {
                after = Some((last.partner.clone(), last.customer.clone()));
            }
            paged.extend(page);
            if !more {
                break;
            }
        }
        assert_eq!(paged, all, "pages of {limit}");
    }
    // Batches: in the order asked, missing ones as None, staged ones seen.
    let got = s
        .relationships_by_key(&[
            ("p2", "c01@contoso.test"),
            ("p9", "nobody@contoso.test"),
            ("p1", "zz@contoso.test"),
            ("p1", "c00@contoso.test"),
        ])
        .unwrap();
    let states: Vec<Option<RelationshipState>> =
        got.iter().map(|r| r.as_ref().map(|r| r.state)).collect();
    assert_eq!(
        states,
        [
            Some(RelationshipState::Declined),
            None,
            Some(RelationshipState::Invited),
            Some(RelationshipState::Active)
        ]
    );
    let invitation = |id: u64| liaison_core::model::invitation::Invitation {
        id,
        kind: liaison_core::model::invitation::InvitationKind::Invitation,
        partner: "p1".into(),
        customer: format!("c{id}@contoso.test"),
        customer_name: None,
        locale: "en".into(),
        created: 1,
        expires: 100 + id,
        message_id: format!("inv{id}@liaison.test"),
        draft: false,
        bounced: None,
        approval_link: None,
    };
    s.commit(Changes {
        invitations: vec![invitation(3), invitation(9)],
        ..Default::default()
    })
    .unwrap();
    s.flush().unwrap();
    s.commit(Changes {
        invitations: vec![invitation(5)],
        ..Default::default()
    })
    .unwrap();
    let expires: Vec<Option<u64>> = s
        .invitations(&[9, 4, 5, 3, 9])
        .unwrap()
        .into_iter()
        .map(|i| i.map(|i| i.expires))
        .collect();
    assert_eq!(expires, [Some(109), None, Some(105), Some(103), Some(109)]);
    s.flush().unwrap();
}

/// The timer sweep as the daemon runs it, over more than one page of
/// summaries with more due than one part: it commits at most
/// `SWEEP_CHUNK` relationships between two flushes, a mail that arrives
/// between two parts is decided at once (neither the engine's lock nor
/// the store's turn is held), and what it decides is what one decision
/// over the whole store decides (same relationships, same message ids).
fn the_sweep_commits_in_parts_and_a_mail_is_decided_between_them(kind: Kind) {
    use liaison::engine::{Engine, SWEEP_CHUNK};
    use liaison_core::model::invitation::{Invitation, InvitationKind};
    let o = open(kind, "sweep_parts");
    let s = o.store.clone();
    let now = 1_780_000_000;
    let day = 86_400;
    let total = 1_600;
    let mut rels = vec![];
    let mut invitations = vec![];
    for i in 0..total {
        let partner = if i % 2 == 0 { "northwind" } else { "p2" };
        let customer = format!("c{i:05}@contoso.test");
        let mut r = rel(partner, &customer, RelationshipState::Active);
        if i % 4 == 0 {
            // Invited; one in eight still has time.
            r.state = RelationshipState::Invited;
            r.invitation_id = Some(i as u64 + 1);
            invitations.push(Invitation {
                id: i as u64 + 1,
                kind: InvitationKind::Invitation,
                partner: partner.into(),
                customer: customer.clone(),
                customer_name: None,
                locale: "en".into(),
                created: now - 31 * day,
                expires: if i % 32 == 0 { now + day } else { now - 1 },
                message_id: format!("inv{i}@liaison.test"),
                draft: false,
                bounced: None,
                approval_link: None,
            });
        }
        rels.push(r);
    }
    s.commit(Changes {
        relationships: rels,
        invitations,
        ..Default::default()
    })
    .unwrap();
    s.flush().unwrap();
    let config = liaison_core::config::Config::parse(
        liaison_core::testing::CONFIG,
        Path::new("test.toml"),
        &liaison::files::EnvAndFiles,
    )
    .unwrap();
    let templates =
        liaison::files::load_templates(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"))
            .unwrap();
    let tokens =
        liaison_core::model::token::TokenKey::new(config.security.token_secret.expose().as_bytes());
    let one_pass = liaison_core::decide::expire_due(
        &liaison_core::decide::Context {
            config: &config,
            tokens: &tokens,
            now,
        },
        s.as_ref(),
    )
    .unwrap();
    let expected = 1_600 / 4 - 1_600 / 32;
    assert_eq!(one_pass.relationships.len(), expected);
    let engine = Arc::new(Engine::new(
        Arc::new(config),
        s.clone(),
        templates,
        Arc::new(liaison::clock::ManualClock::new(now)),
    ));
    assert!(s.acquire_lease(&inbox_lease("invites")).unwrap().is_some());
    let mut parts = vec![];
    let mut queued_before = 0;
    let changed = engine
        .sweep_in_parts(
            &mut |store| {
                store.flush()?;
                let queued = store.outbox_len()?;
                parts.push(queued - queued_before);
                queued_before = queued;
                // A mail now is decided at once, on another thread.
                let n = parts.len() as u32;
                let (e, (tx, rx)) = (engine.clone(), std::sync::mpsc::channel());
                std::thread::spawn(move || {
                    let raw = format!(
                        "From: someone{n}@example.test\r\nTo: invites@liaison.test\r\n\
                     Subject: Re: hello\r\nMessage-ID: <between{n}@example.test>\r\n\
                     Date: Thu, 28 May 2026 20:26:40 +0000\r\n\r\nThanks.\r\n"
                    );
                    let cursor = Cursor {
                        uid_validity: 1,
                        last_uid: n,
                    };
                    let _ = tx.send(
                        e.process("invites", cursor, raw.as_bytes())
                            .map(|o| o.class),
                    );
                });
                let class = rx
                    .recv_timeout(Duration::from_secs(60))
                    .expect("a mail between two parts of the sweep waited for the sweep")
                    .expect("the mail between two parts was processed");
                assert_eq!(class, ProcessedClass::Ignored);
                Ok(())
            },
            &|| false,
        )
        .unwrap();
    s.flush().unwrap();
    assert_eq!(changed, expected);
    assert!(parts.len() >= expected.div_ceil(SWEEP_CHUNK), "{parts:?}");
    assert!(
        parts.iter().all(|&n| n > 0 && n as usize <= SWEEP_CHUNK),
        "{parts:?}"
    );
    // The same decision as one pass over the whole store.
    let mut want: Vec<(String, String, &str)> = one_pass
        .relationships
        .iter()
        .map(|r| (r.partner.clone(), r.customer.clone(), r.state.as_str()))
        .collect();
    want.sort();
    let mut got: Vec<(String, String, &str)> = s
        .all_relationships()
        .unwrap()
        .into_iter()
        .filter(|r| r.state == RelationshipState::Expired)
        .map(|r| (r.partner, r.customer, r.state.as_str()))
        .collect();
    got.sort();
    assert_eq!(got, want);
    let mut want_ids: Vec<String> = one_pass
        .mails
        .iter()
        .map(|m| m.message_id.clone())
        .collect();
    want_ids.sort();
    let mut got_ids: Vec<String> = s
        .pending_outbox(u64::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.mail.message_id)
        .collect();
    got_ids.sort();
    assert_eq!(got_ids, want_ids);
    // The mails between the parts were committed with their cursor.
    assert_eq!(
        s.cursor("invites").unwrap().map(|c| c.last_uid),
        Some(parts.len() as u32)
    );
    // Nothing is left due: a second sweep changes nothing, flushes nothing.
    let mut flushes = 0;
    let again = engine
        .sweep_in_parts(
            &mut |_| {
                flushes += 1;
                Ok(())
            },
            &|| false,
        )
        .unwrap();
    assert_eq!((again, flushes), (0, 0));
    // A sweep told to stop (the daemon shuts down) ends before it reads.
    let stopped = engine.sweep_in_parts(&mut |_| Ok(()), &|| true).unwrap();
    assert_eq!(stopped, 0);
}

fn a_mail_held_in_its_place_stays_due(kind: Kind) {
    let o = open(kind, "held");
    let s = &o.store;
    let ids = s
        .commit(Changes {
            outbox: vec![mail("h1@liaison.test")],
            ..Default::default()
        })
        .unwrap();
    s.flush().unwrap();
    let mut entry = s.claim_due(ids[0], 100, 10).unwrap().remove(0);
    // Throttled by the provider: not an attempt, same place in the queue
    // (`not_before` unchanged), only the answer kept.
    entry.last_error = Some("throttled by the provider: 421".into());
    s.mark_retry(&entry).unwrap();
    s.flush().unwrap();
    let again = s.claim_due(ids[0], 100, 10).unwrap();
    assert_eq!(again.len(), 1, "the held mail vanished from the queue");
    assert_eq!(
        again[0].last_error.as_deref(),
        Some("throttled by the provider: 421")
    );
    assert_eq!(s.outbox_len().unwrap(), 1);
}

fn relationships_and_their_derived_records_read_back(kind: Kind) {
    let o = open(kind, "derived");
    let s = &o.store;
    s.commit(Changes {
        relationships: vec![
            rel("p1", "a@contoso.test", RelationshipState::Invited),
            rel("p1", "b@contoso.test", RelationshipState::Active),
            rel("p2", "a@contoso.test", RelationshipState::Invited),
        ],
        ..Default::default()
    })
    .unwrap();
    // Staged commits are read before the flush…
    assert_eq!(s.relationships_of("p1").unwrap().len(), 2);
    s.flush().unwrap();
    // …and after it, from the backend.
    s.commit(Changes {
        relationships: vec![rel("p1", "a@contoso.test", RelationshipState::Active)],
        ..Default::default()
    })
    .unwrap();
    s.flush().unwrap();
    let counts = s.relationship_counts().unwrap();
    assert_eq!(
        counts,
        vec![
            ("p1".to_string(), RelationshipState::Active, 2),
            ("p2".to_string(), RelationshipState::Invited, 1),
        ]
    );
    let with_a: Vec<String> = s
        .relationships_with("a@contoso.test")
        .unwrap()
        .into_iter()
        .map(|r| r.partner)
        .collect();
    assert_eq!(with_a, vec!["p1", "p2"]);
    let summaries = s.relationship_summaries_of("p1").unwrap();
    assert_eq!(summaries.len(), 2);
    assert!(summaries
        .iter()
        .all(|x| x.state == RelationshipState::Active));
    assert_eq!(s.stats().unwrap().relationships, 3);
}

fn the_outbox_moves_from_due_to_retry_to_sent(kind: Kind) {
    let o = open(kind, "outbox");
    let s = &o.store;
    let ids = s
        .commit(Changes {
            outbox: vec![mail("m1@liaison.test"), mail("m2@liaison.test")],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    s.flush().unwrap();
    let up_to = s.last_outbox_id().unwrap();
    assert_eq!(up_to, ids[1]);
    let due = s.claim_due(up_to, 100, 10).unwrap();
    assert_eq!(due.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    // The first fails and waits; the second is sent.
    let mut retry = due[0].clone();
    retry.attempts = 1;
    retry.not_before = 500;
    retry.last_error = Some("451 try later".into());
    s.mark_retry(&retry).unwrap();
    s.mark_sent(ids[1], 101, None).unwrap();
    s.flush().unwrap();
    assert_eq!(s.outbox_len().unwrap(), 1);
    assert_eq!(s.next_attempt(up_to).unwrap(), Some(500));
    assert!(s.claim_due(up_to, 200, 10).unwrap().is_empty());
    let later = s.claim_due(up_to, 600, 10).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].last_error.as_deref(), Some("451 try later"));
    let sent = s.sent_log().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].mail.message_id, "m2@liaison.test");
    // What a customer may quote back is found by its Message-ID, pending
    // or sent.
    assert!(s.sent_mail("m1@liaison.test").unwrap().is_some());
    assert!(s.sent_mail("m2@liaison.test").unwrap().is_some());
    assert_eq!(
        s.invitation_by_message_id("m2@liaison.test").unwrap(),
        Some(7)
    );
}

fn a_backup_restores_into_an_empty_store_record_for_record(kind: Kind) {
    let from = open(Kind::Sled, "backup-from");
    from.store
        .commit(Changes {
            relationships: vec![rel("p1", "a@contoso.test", RelationshipState::Active)],
            outbox: vec![mail("m1@liaison.test")],
            quarantined_raw: vec![("q1".into(), b"From: x\r\n\r\n\xff raw".to_vec())],
            processed: vec![Processed {
                key: "q1".into(),
                at: 5,
                class: ProcessedClass::Quarantined,
                summary: "why".into(),
            }],
            ..Default::default()
        })
        .unwrap();
    from.store.flush().unwrap();
    let records = from.store.export().unwrap();
    let to = open(kind, "backup-to");
    assert!(to.store.is_empty().unwrap());
    to.store.import(&records).unwrap();
    assert_eq!(to.store.export().unwrap(), records);
    assert_eq!(
        to.store.quarantined_raw("q1").unwrap().unwrap(),
        b"From: x\r\n\r\n\xff raw".to_vec()
    );
    assert_eq!(to.store.relationship_counts().unwrap().len(), 1);
    // And back: the restored store exports what a sled store restores.
    let back = open(Kind::Sled, "backup-back");
    back.store.import(&to.store.export().unwrap()).unwrap();
    assert_eq!(back.store.export().unwrap(), records);
}

fn processed_markers_and_cursors_land_together(kind: Kind) {
    let o = open(kind, "cursor");
    let s = &o.store;
    // With a shared store only the inbox's owner moves its cursor.
    let granted = s.acquire_lease(&inbox_lease("main")).unwrap();
    assert!(granted.is_some());
    let cursor = Cursor {
        uid_validity: 3,
        last_uid: 42,
    };
    s.begin_decision().unwrap();
    s.commit(Changes {
        processed: vec![Processed {
            key: "<m@x>".into(),
            at: 9,
            class: ProcessedClass::Customer,
            summary: "accepted".into(),
        }],
        cursor: Some(("main".into(), cursor)),
        ..Default::default()
    })
    .unwrap();
    s.end_decision();
    s.flush().unwrap();
    assert_eq!(s.cursor("main").unwrap(), Some(cursor));
    assert_eq!(
        s.processed("<m@x>").unwrap().unwrap().class,
        ProcessedClass::Customer
    );
}

// ---- several instances (PostgreSQL only) ----------------------------------

#[test]
fn a_cursor_cannot_move_without_the_inbox_lease() {
    let o = open(Kind::Postgres, "notowner");
    let err = o
        .store
        .commit(Changes {
            cursor: Some((
                "main".into(),
                Cursor {
                    uid_validity: 1,
                    last_uid: 1,
                },
            )),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotOwner(ref l) if l == "inbox/main"),
        "{err}"
    );
}

#[test]
fn a_lease_has_one_owner_and_its_token_grows_with_each_new_one() {
    let o = open(Kind::Postgres, "lease");
    let url = o.url.clone().unwrap();
    let a = second_instance(&url, 1);
    let b = second_instance(&url, 1);
    let first = a.acquire_lease("inbox/main").unwrap().expect("free lease");
    assert_eq!(b.acquire_lease("inbox/main").unwrap(), None);
    // Renewing keeps the token.
    assert_eq!(a.acquire_lease("inbox/main").unwrap(), Some(first));
    // A stops renewing; once the lease ran out, B takes over with a new one.
    std::thread::sleep(Duration::from_millis(1300));
    let second = b
        .acquire_lease("inbox/main")
        .unwrap()
        .expect("expired lease");
    assert!(second > first, "{second} > {first}");
    assert_eq!(a.acquire_lease("inbox/main").unwrap(), None);
    // Given up, it is free at once, with yet another token.
    b.release_lease("inbox/main").unwrap();
    let third = a
        .acquire_lease("inbox/main")
        .unwrap()
        .expect("released lease");
    assert!(third > second);
}

#[test]
fn an_owner_paused_past_its_lease_cannot_write_after_the_takeover() {
    let o = open(Kind::Postgres, "fence");
    let url = o.url.clone().unwrap();
    let a = second_instance(&url, 1);
    let b = second_instance(&url, 1);
    a.acquire_lease("inbox/main").unwrap().unwrap();
    // A decides one mail and commits; then it is "paused" before its flush.
    a.begin_decision().unwrap();
    a.commit(Changes {
        processed: vec![Processed {
            key: "<late@x>".into(),
            at: 1,
            class: ProcessedClass::Customer,
            summary: "decided by A".into(),
        }],
        cursor: Some((
            "main".into(),
            Cursor {
                uid_validity: 1,
                last_uid: 10,
            },
        )),
        ..Default::default()
    })
    .unwrap();
    a.end_decision();
    std::thread::sleep(Duration::from_millis(1300));
    let token = b
        .acquire_lease("inbox/main")
        .unwrap()
        .expect("A's lease ran out");
    assert!(token >= 2);
    // A wakes up and flushes: its session holding the turn was ended by
    // the server (idle past the lease), so the batch is dropped and the
    // store reports itself lost.
    let err = a.flush().unwrap_err();
    assert!(
        matches!(err, StoreError::Postgres(ref m) if m.contains("lost during the batch")),
        "{err}"
    );
    assert!(a.lost().is_some());
    assert!(matches!(a.begin_decision(), Err(StoreError::Lost(_))));
    // B gets the turn (A's was freed with its batch) and nothing of A's
    // batch was written.
    b.begin_decision().unwrap();
    assert_eq!(b.processed("<late@x>").unwrap(), None);
    assert_eq!(b.cursor("main").unwrap(), None);
    b.commit(Changes {
        cursor: Some((
            "main".into(),
            Cursor {
                uid_validity: 1,
                last_uid: 10,
            },
        )),
        ..Default::default()
    })
    .unwrap();
    b.end_decision();
    b.flush().unwrap();
    assert_eq!(b.cursor("main").unwrap().unwrap().last_uid, 10);
}

#[test]
fn a_flush_checks_the_fencing_token_of_the_lease_its_batch_needs() {
    let o = open(Kind::Postgres, "fencetoken");
    let url = o.url.clone().unwrap();
    let a = second_instance(&url, 1);
    let b = second_instance(&url, 1);
    let first = a.acquire_lease("inbox/main").unwrap().unwrap();
    // Staged under token `first`, not yet written (no turn is held, so no
    // session of A's is idle on the server meanwhile).
    a.commit(Changes {
        cursor: Some((
            "main".into(),
            Cursor {
                uid_validity: 1,
                last_uid: 5,
            },
        )),
        ..Default::default()
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    let second = b.acquire_lease("inbox/main").unwrap().unwrap();
    assert!(second > first);
    let err = a.flush().unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced(ref l) if l == "inbox/main"),
        "{err}"
    );
    assert!(a.lost().is_some());
    assert_eq!(b.cursor("main").unwrap(), None);
}

#[test]
fn decisions_of_two_instances_take_turns() {
    let o = open(Kind::Postgres, "turns");
    let url = o.url.clone().unwrap();
    let a = second_instance(&url, 5);
    let b = second_instance(&url, 5);
    a.begin_decision().unwrap();
    let counter = a.relationships_of("p1").unwrap().len();
    assert_eq!(counter, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let b2 = b.clone();
    let waiter = std::thread::spawn(move || {
        b2.begin_decision().unwrap();
        // B reads only after A's write landed.
        let seen = b2.relationships_of("p1").unwrap().len();
        tx.send(seen).unwrap();
        b2.end_decision();
        b2.flush().unwrap();
    });
    // B waits while A holds the turn…
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    a.commit(Changes {
        relationships: vec![rel("p1", "a@contoso.test", RelationshipState::Invited)],
        ..Default::default()
    })
    .unwrap();
    a.end_decision();
    a.flush().unwrap();
    // …and sees A's write once it has its turn.
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), 1);
    waiter.join().unwrap();
}

/// One decision of `store`: takes the turn, runs `work`, flushes.
fn decision<T>(store: &PgStore, work: impl FnOnce(&PgStore) -> T) -> T {
    store.begin_decision().unwrap();
    let out = work(store);
    store.end_decision();
    store.flush().unwrap();
    out
}

#[test]
fn an_instance_reads_what_another_instance_wrote_since_its_last_turn() {
    let o = open(Kind::Postgres, "cache");
    let url = o.url.clone().unwrap();
    let a = second_instance(&url, 5);
    let b = second_instance(&url, 5);
    let state = |s: &PgStore| {
        s.relationship("p1", "a@contoso.test")
            .unwrap()
            .map(|r| r.state)
    };
    let set = |s: &PgStore, to: RelationshipState| {
        s.commit(Changes {
            relationships: vec![rel("p1", "a@contoso.test", to)],
            ..Default::default()
        })
        .unwrap();
    };
    // A writes, then reads in later turns of its own (from its cache).
    decision(&a, |s| set(s, RelationshipState::Invited));
    for _ in 0..2 {
        assert_eq!(decision(&a, state), Some(RelationshipState::Invited));
    }
    // B reads it (caching it too), then changes it.
    assert_eq!(decision(&b, state), Some(RelationshipState::Invited));
    decision(&b, |s| set(s, RelationshipState::Active));
    // A's next turn sees B's write, not what it had read before.
    assert_eq!(decision(&a, state), Some(RelationshipState::Active));
    // And the other way round, B having read its own write since.
    assert_eq!(decision(&b, state), Some(RelationshipState::Active));
    decision(&a, |s| set(s, RelationshipState::Removed));
    assert_eq!(decision(&b, state), Some(RelationshipState::Removed));
    // A restore (a write outside a decision) is seen too.
    let backup = b.export().unwrap();
    decision(&a, |s| set(s, RelationshipState::Declined));
    assert_eq!(decision(&b, state), Some(RelationshipState::Declined));
    let c = open(Kind::Postgres, "cache_restored");
    let c_url = c.url.clone().unwrap();
    let c1 = second_instance(&c_url, 5);
    let c2 = second_instance(&c_url, 5);
    assert_eq!(decision(&c1, state), None);
    c2.import(&backup).unwrap();
    assert_eq!(decision(&c1, state), Some(RelationshipState::Removed));
    // The counters derived in each flush agree with what both wrote.
    let counts = a.relationship_counts().unwrap();
    assert_eq!(
        counts,
        vec![("p1".to_string(), RelationshipState::Declined, 1)]
    );
}

#[test]
fn what_is_read_ahead_for_a_chunk_stays_true_to_what_others_and_this_instance_write() {
    let o = open(Kind::Postgres, "prefetch");
    let url = o.url.clone().unwrap();
    let a = second_instance(&url, 5);
    let b = second_instance(&url, 5);
    let raw = b"From: a@contoso.test\r\nTo: invites@liaison.test\r\nMessage-ID: <r1@contoso.test>\r\nIn-Reply-To: <inv1@liaison.test>\r\nSubject: Re: x\r\n\r\nyes\r\n";
    let mail = liaison_core::mail::inbound::parse(raw, 1 << 20).unwrap();
    let marker = |key: &str| Processed {
        key: key.into(),
        at: 9,
        class: ProcessedClass::Customer,
        summary: "accepted".into(),
    };
    let seen = |s: &PgStore| {
        s.prefetch(&[&mail]).unwrap();
        let rels: Vec<(String, RelationshipState)> = s
            .relationships_with("a@contoso.test")
            .unwrap()
            .into_iter()
            .map(|r| (r.partner, r.state))
            .collect();
        let processed = s.processed(&mail.key).unwrap().map(|p| p.summary);
        (rels, processed)
    };
    assert!(a.prefetches());
    // Read ahead with nothing there yet: nothing is found.
    assert_eq!(decision(&a, seen), (vec![], None));
    // Another instance writes what A read ahead (absent) before.
    decision(&b, |s| {
        s.commit(Changes {
            relationships: vec![rel("p1", "a@contoso.test", RelationshipState::Invited)],
            processed: vec![marker(&mail.key)],
            ..Default::default()
        })
        .unwrap()
    });
    assert_eq!(
        decision(&a, seen),
        (
            vec![("p1".into(), RelationshipState::Invited)],
            Some("accepted".into())
        )
    );
    // A's own write to a scanned index shows in its next read ahead.
    decision(&a, |s| {
        s.commit(Changes {
            relationships: vec![rel("p2", "a@contoso.test", RelationshipState::Active)],
            ..Default::default()
        })
        .unwrap()
    });
    assert_eq!(
        decision(&a, seen).0,
        vec![
            ("p1".into(), RelationshipState::Invited),
            ("p2".into(), RelationshipState::Active)
        ]
    );
    // And B's change to one of those relationships shows at A's next turn.
    decision(&b, |s| {
        s.commit(Changes {
            relationships: vec![rel("p1", "a@contoso.test", RelationshipState::Removed)],
            ..Default::default()
        })
        .unwrap()
    });
    assert_eq!(
        decision(&a, seen).0,
        vec![
            ("p1".into(), RelationshipState::Removed),
            ("p2".into(), RelationshipState::Active)
        ]
    );
    // Outside a turn nothing is kept, and reads are still right.
    assert_eq!(seen(&a).0.len(), 2);
}

#[test]
fn two_instances_never_claim_the_same_mail() {
    let o = open(Kind::Postgres, "claims");
    let url = o.url.clone().unwrap();
    let a = second_instance(&url, 30);
    let b = second_instance(&url, 30);
    let mails: Vec<OutgoingMail> = (0..60)
        .map(|i| mail(&format!("m{i}@liaison.test")))
        .collect();
    let ids = a
        .commit(Changes {
            outbox: mails,
            ..Default::default()
        })
        .unwrap();
    a.flush().unwrap();
    // Each instance claims and "sends" (marks sent) what it got, as its
    // sender does, until nothing is left.
    let send_all = |s: Arc<PgStore>| {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                let batch = s.claim_due(u64::MAX, 100, 7).unwrap();
                if batch.is_empty() {
                    return got;
                }
                for e in batch {
                    s.mark_sent(e.id, 100, None).unwrap();
                    got.push(e.id);
                }
            }
        })
    };
    let (ta, tb) = (send_all(a.clone()), send_all(b.clone()));
    let (got_a, got_b) = (ta.join().unwrap(), tb.join().unwrap());
    let mut all: Vec<u64> = got_a.iter().chain(&got_b).copied().collect();
    all.sort();
    assert_eq!(all, ids, "every mail claimed exactly once");
    assert_eq!(a.sent_log().unwrap().len(), 60);

    // A claim keeps others off, while its owner takes it again (its sender
    // asks again only when none of its mails is in flight: a mail the pacer
    // held back must not wait for its own claim to run out).
    let more = a
        .commit(Changes {
            outbox: vec![mail("x1@liaison.test"), mail("x2@liaison.test")],
            ..Default::default()
        })
        .unwrap();
    a.flush().unwrap();
    let first: Vec<u64> = a
        .claim_due(u64::MAX, 100, 10)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(first, more);
    assert!(b.claim_due(u64::MAX, 100, 10).unwrap().is_empty());
    let again: Vec<u64> = a
        .claim_due(u64::MAX, 100, 10)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(again, more);
}

#[test]
fn a_batch_whose_connection_died_is_dropped_whole_and_reported() {
    let o = open(Kind::Postgres, "conn");
    let url = o.url.clone().unwrap();
    let a = second_instance(&url, 30);
    a.begin_decision().unwrap();
    a.commit(Changes {
        relationships: vec![rel("p1", "a@contoso.test", RelationshipState::Invited)],
        ..Default::default()
    })
    .unwrap();
    a.end_decision();
    // The server ends the writer's session (a restart, a network cut).
    common::pg::psql(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'liaison writer' AND datname = current_database()",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(a.flush().is_err());
    assert!(a.lost().is_some());
    // A new instance (the restarted daemon) finds nothing half-written, and
    // can work.
    let b = second_instance(&url, 30);
    assert!(b.relationships_of("p1").unwrap().is_empty());
    b.begin_decision().unwrap();
    b.commit(Changes {
        relationships: vec![rel("p1", "a@contoso.test", RelationshipState::Invited)],
        ..Default::default()
    })
    .unwrap();
    b.end_decision();
    b.flush().unwrap();
    assert_eq!(b.relationships_of("p1").unwrap().len(), 1);
}

#[test]
fn a_schema_newer_than_this_binary_is_refused() {
    let o = open(Kind::Postgres, "schema");
    let url = o.url.clone().unwrap();
    common::pg::psql(&url, "INSERT INTO liaison_schema (version) VALUES (999)").unwrap();
    let err = PgStore::open(&pg_config(&url, 30)).err().expect("refused");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer Liaison"));
}

#[test]
fn sslmode_is_honoured_and_errors_never_show_the_password() {
    let o = open(Kind::Postgres, "tls");
    let url = o.url.clone().unwrap();
    // Writer sessions on this database without TLS.
    let plain_writers = || {
        common::pg::psql(
            &url,
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'liaison writer' AND a.datname = current_database() AND NOT s.ssl",
        )
        .unwrap()
        .trim()
        .to_string()
    };
    let with_mode = |mode: &str, ca: bool| PostgresConfig {
        ca_file: ca.then(common::pg::ca_path),
        ..pg_config(&format!("{url}?sslmode={mode}"), 30)
    };
    // verify-full with the private CA: encrypted, and the server checked.
    let s = PgStore::open(&with_mode("verify-full", true)).unwrap();
    s.begin_decision().unwrap();
    assert_eq!(plain_writers(), "0");
    s.end_decision();
    drop(s);
    // verify-full without that CA: refused, with the reason and no password.
    let err = PgStore::open(&with_mode("verify-full", false))
        .err()
        .expect("an unknown CA is refused");
    let text = err.to_string();
    assert!(
        text.contains("UnknownIssuer") || text.contains("certificate"),
        "{text}"
    );
    assert!(!text.contains("liaison-dev"), "{text}");
    // disable: no TLS at all.
    let s = PgStore::open(&with_mode("disable", false)).unwrap();
    s.begin_decision().unwrap();
    assert_eq!(plain_writers(), "1");
    s.end_decision();
    // A wrong password: the server's words, not ours.
    let wrong = url.replace("liaison-dev", "not-the-password");
    let err = PgStore::open(&pg_config(&wrong, 30))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}
