//! End-to-end: every partner command and every relationship transition,
//! through the real loopback Postfix and Dovecot.

mod common;

use common::*;
use liaison::clock::ManualClock;
use liaison::store::Store;
use std::sync::Arc;
use std::time::Duration;

const PARTNER1: &str = "partner1@liaison.test";
const PARTNER2: &str = "partner2@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const HELPDESK: &str = "helpdesk@liaison.test";
const ALICE: &str = "alice@contoso.test";
const BOB: &str = "bob@fabrikam.test";

async fn clear_all() {
    for u in [PARTNER1, PARTNER2, COMMANDS, INVITES, HELPDESK, ALICE, BOB] {
        clear_mailbox(u).await;
    }
}

/// Sends `body` as commands from `partner` and returns the transcript.
async fn commands(partner: &str, subject: &str, body: &str) -> Received {
    send_raw(
        partner,
        &[COMMANDS],
        &mail(partner, COMMANDS, subject, "", body),
    )
    .await;
    wait_for(partner, "transcript", |m| {
        m.subject.contains(subject) && m.subject.contains("Liaison")
    })
    .await
}

/// Replies to `request` (an invitation or restore request) as `from`.
async fn answer(from: &str, request: &Received, answer: &str) {
    let to = request.reply_to.clone().expect("Reply-To");
    let headers = format!(
        "In-Reply-To: <{0}>\r\nReferences: <{0}>\r\n",
        request.message_id
    );
    let quoted: String = request.text.lines().map(|l| format!("> {l}\n")).collect();
    let body = format!("{answer}\n\nOn Wed, 25 Nov 2026, Liaison <{INVITES}> wrote:\n{quoted}");
    send_raw(
        from,
        &[&to],
        &mail(
            from,
            &to,
            &format!("Re: {}", request.subject),
            &headers,
            &body,
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_and_the_whole_lifecycle() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let mut daemon = Daemon::start(Transport::Plain);

    // help, and a mail without any command, both answer with the reference.
    let t = commands(PARTNER1, "c1", "help").await;
    for verb in [
        "invite CUSTOMER",
        "resend",
        "status",
        "list",
        "history",
        "revoked",
        "restore",
        "remove",
        "contact",
    ] {
        assert!(t.text.contains(verb), "help lacks {verb}: {}", t.text);
    }

    // invite + contact + status + an unknown command, in one mail.
    let t = commands(
        PARTNER1,
        "c2",
        "invite alice@contoso.test name \"Contoso Ltd\"\ncontact alice@contoso.test helpdesk@liaison.test\nstatus alice@contoso.test\nfrobnicate\nthanks\nlist",
    )
    .await;
    assert!(t.text.contains("> invite alice@contoso.test"), "{}", t.text);
    assert!(
        t.text
            .contains("helpdesk@liaison.test is now the support contact"),
        "{}",
        t.text
    );
    assert!(t.text.contains("alice@contoso.test  invited"), "{}", t.text);
    assert!(
        t.text.contains("ERROR: unknown command `frobnicate`"),
        "{}",
        t.text
    );
    assert!(
        !t.text.contains("> list"),
        "nothing after `thanks` runs: {}",
        t.text
    );

    // resend: same token, second copy of the invitation.
    let t = commands(PARTNER1, "c3", "resend alice@contoso.test").await;
    assert!(
        t.text.contains("invitation resent to alice@contoso.test"),
        "{}",
        t.text
    );
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    let mails: Vec<Received> = fetch_all(ALICE)
        .await
        .iter()
        .map(|r| Received::parse(r))
        .collect();
    let copies: Vec<&Received> = mails
        .iter()
        .filter(|m| m.subject.contains("[ref:"))
        .collect();
    assert_eq!(copies.len(), 2);
    assert_eq!(
        copies[0].reply_to, copies[1].reply_to,
        "resend keeps the token"
    );

    // invited -> active.
    answer(ALICE, &inv, "Yes").await;
    daemon.wait_state("northwind", ALICE, "active").await;
    // The support contact is copied on the partner's notice.
    wait_for(HELPDESK, "acceptance notice copy", |m| {
        m.subject.starts_with("Accepted:")
    })
    .await;

    // active -> permissions_removed, reported by the customer in the thread.
    let confirm = wait_for(ALICE, "confirmation", |m| m.subject.contains("You granted")).await;
    let headers = format!("In-Reply-To: <{}>\r\n", confirm.message_id);
    send_raw(
        ALICE,
        &[INVITES],
        &mail(
            ALICE,
            INVITES,
            "Re: permissions",
            &headers,
            "Hello,\nI removed your admin permissions today.\n",
        ),
    )
    .await;
    daemon
        .wait_state("northwind", ALICE, "permissions_removed")
        .await;
    let notice = wait_for(PARTNER1, "removal notice", |m| {
        m.subject.starts_with("Permissions removed:")
    })
    .await;
    assert!(
        notice
            .text
            .contains("You remain responsible for their support"),
        "{}",
        notice.text
    );
    wait_for(ALICE, "removal acknowledgement", |m| {
        m.subject.contains("We recorded")
    })
    .await;

    // permissions_removed -> active, through a restore request.
    let t = commands(PARTNER1, "c4", "restore alice@contoso.test").await;
    assert!(t.text.contains("restore request sent"), "{}", t.text);
    let restore = wait_for(ALICE, "restore request", |m| {
        m.subject.contains("restore its delegated")
    })
    .await;
    assert!(restore.html.is_some());
    answer(ALICE, &restore, "Accept").await;
    daemon.wait_state("northwind", ALICE, "active").await;

    // active -> permissions_removed by the partner's `revoked`.
    let t = commands(PARTNER1, "c5", "revoked alice@contoso.test").await;
    assert!(
        t.text.contains("recorded: alice@contoso.test removed"),
        "{}",
        t.text
    );
    daemon
        .wait_state("northwind", ALICE, "permissions_removed")
        .await;

    // history lists every transition with its actor.
    let t = commands(
        PARTNER1,
        "c6",
        "history alice@contoso.test\nlist permissions_removed",
    )
    .await;
    for step in [
        "(new) -> invited",
        "invited -> active",
        "active -> permissions_removed",
        "permissions_removed -> active",
    ] {
        assert!(t.text.contains(step), "history lacks {step}: {}", t.text);
    }
    assert!(
        t.text.contains("by alice@contoso.test") && t.text.contains("by partner1@liaison.test"),
        "{}",
        t.text
    );

    // -> removed; the customer is told.
    let t = commands(PARTNER1, "c7", "remove alice@contoso.test").await;
    assert!(t.text.contains("removed the relationship"), "{}", t.text);
    daemon.wait_state("northwind", ALICE, "removed").await;
    wait_for(ALICE, "removal notice", |m| {
        m.subject.contains("ended its partner relationship")
    })
    .await;

    // Another partner sees none of it.
    let t = commands(
        PARTNER2,
        "c8",
        "status alice@contoso.test\nremove alice@contoso.test",
    )
    .await;
    assert_eq!(
        t.text
            .matches("has no relationship with Hanbit Cloud")
            .count(),
        2,
        "{}",
        t.text
    );

    // invited -> declined, with a fresh invitation after `removed`.
    let t = commands(PARTNER1, "c9", "invite alice@contoso.test").await;
    assert!(t.text.contains("invited alice@contoso.test"), "{}", t.text);
    let inv2 = wait_for(ALICE, "new invitation", |m| {
        m.subject.contains("asks for delegated admin permissions") && m.reply_to != inv.reply_to
    })
    .await;
    answer(ALICE, &inv2, "No thanks").await;
    daemon.wait_state("northwind", ALICE, "declined").await;
    wait_for(PARTNER1, "decline notice", |m| {
        m.subject.starts_with("Declined:")
    })
    .await;
    assert!(daemon.stop().success());
}

/// The daemon running inside the test process, so the test owns its clock.
struct InProcess {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), liaison::daemon::DaemonError>>,
    _tmp: tempfile::TempDir,
}

impl InProcess {
    fn start(extra_config: &str) -> InProcess {
        let tmp = tempfile::tempdir().unwrap();
        let config_path = tmp.path().join("liaison.toml");
        let text = format!(
            "{}\n{extra_config}",
            config_text(tmp.path(), Transport::Plain)
        );
        std::fs::write(&config_path, text).unwrap();
        let config = liaison::files::load_config(&config_path).unwrap();
        // The configured backend (LIAISON_TEST_BACKEND), as the daemon opens it.
        let store: Arc<dyn Store> =
            liaison::store::open(&config.store, &config.admin_socket).unwrap();
        let templates = liaison::files::load_templates(&config.templates_dir).unwrap();
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let clock = Arc::new(ManualClock::new(start));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(liaison::daemon::run_with(
            Arc::new(config),
            store.clone(),
            templates,
            clock.clone(),
            liaison::daemon::Options {
                sweep_every: Duration::from_millis(200),
            },
            async {
                let _ = stop_rx.await;
            },
        ));
        InProcess {
            store,
            clock,
            stop: Some(stop_tx),
            task,
            _tmp: tmp,
        }
    }

    fn state(&self, partner: &str, customer: &str) -> Option<String> {
        self.store
            .relationship(partner, customer)
            .unwrap()
            .map(|r| r.state.as_str().to_string())
    }

    async fn wait_state(&self, partner: &str, customer: &str, state: &str) {
        for _ in 0..200 {
            if self.state(partner, customer).as_deref() == Some(state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{customer} did not become {state}: {:?}",
            self.state(partner, customer)
        );
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_invitations_expire_on_an_injected_clock() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let daemon = InProcess::start("");
    send_raw(
        PARTNER2,
        &[COMMANDS],
        &mail(PARTNER2, COMMANDS, "x", "", "invite bob@fabrikam.test\n"),
    )
    .await;
    let inv = wait_for(BOB, "invitation", |m| m.subject.contains("[ref:")).await;
    assert_eq!(daemon.state("hanbit", BOB).as_deref(), Some("invited"));

    // 89 days later nothing has happened…
    daemon.clock.advance(89 * 86_400);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(daemon.state("hanbit", BOB).as_deref(), Some("invited"));
    // …after 90 days and a second, the invitation expires and the partner
    // is told in Korean.
    daemon.clock.advance(86_400 + 1);
    let notice = wait_for(PARTNER2, "expiry notice", |m| {
        m.subject.starts_with("만료됨")
    })
    .await;
    assert!(notice.text.contains(BOB), "{}", notice.text);
    assert_eq!(daemon.state("hanbit", BOB).as_deref(), Some("expired"));
    // A late answer changes nothing and tells the customer why.
    answer(BOB, &inv, "수락합니다").await;
    wait_for(BOB, "expired notice", |m| m.subject.starts_with("Re:")).await;
    assert_eq!(daemon.state("hanbit", BOB).as_deref(), Some("expired"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_duration_relationships_remind_then_end() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let daemon = InProcess::start("[lifecycle]\nrelationship_days = 40\nreminder_days = [30]\n");
    send_raw(
        PARTNER1,
        &[COMMANDS],
        &mail(PARTNER1, COMMANDS, "x", "", "invite alice@contoso.test\n"),
    )
    .await;
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    answer(ALICE, &inv, "Accept").await;
    daemon.wait_state("northwind", ALICE, "active").await;

    daemon.clock.advance(10 * 86_400);
    let reminder = wait_for(PARTNER1, "reminder", |m| {
        m.subject.starts_with("Ending in 30 day(s)")
    })
    .await;
    assert!(reminder.text.contains(ALICE), "{}", reminder.text);
    daemon.clock.advance(30 * 86_400);
    wait_for(PARTNER1, "end notice", |m| m.subject.starts_with("Ended:")).await;
    daemon.wait_state("northwind", ALICE, "expired").await;
    daemon.stop().await;
}
