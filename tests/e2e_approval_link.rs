//! End-to-end, level 1 of GDAP (no Microsoft API): the partner's approval
//! link in every invitation, through the real loopback Postfix and Dovecot.

mod common;

use common::*;

const PARTNER1: &str = "partner1@liaison.test";
const COMMANDS: &str = "commands@liaison.test";
const INVITES: &str = "invites@liaison.test";
const ALICE: &str = "alice@contoso.test";
const CAROL: &str = "carol@contoso.test";
const BOB: &str = "bob@fabrikam.test";
const TENANT: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

async fn clear_all() {
    for u in [PARTNER1, COMMANDS, INVITES, ALICE, CAROL, BOB] {
        clear_mailbox(u).await;
    }
}

fn with_link(config: String) -> String {
    config.replace(
        "emails = [\"partner1@liaison.test\"]\nlocale = \"en\"\n",
        &format!(
            "emails = [\"partner1@liaison.test\"]\nlocale = \"en\"\ntenant_id = \"{TENANT}\"\n\
             approval_link = \"https://admin.microsoft.com/Adminportal/Home?invType=ResellerRelationship&partnerId={{partner_tenant_id}}&msppId=0&DAP=true#/BillingAccounts/partner-invitation\"\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invitation_carries_the_approval_link() {
    let _serial = serial().await;
    require_mailstack();
    clear_all().await;
    let daemon = Daemon::start_custom(Transport::Plain, with_link);
    let legacy = format!(
        "https://admin.microsoft.com/Adminportal/Home?invType=ResellerRelationship&partnerId={TENANT}&msppId=0&DAP=true#/BillingAccounts/partner-invitation"
    );

    // The partner's configured link, filled with its tenant id.
    let t = partner_commands(&format!("invite {ALICE} name \"Contoso\""), "l1").await;
    assert!(t.text.contains(&format!("invited {ALICE}")), "{}", t.text);
    let inv = wait_for(ALICE, "invitation", |m| m.subject.contains("[ref:")).await;
    assert!(inv.text.contains(&legacy), "{}", inv.text);
    assert!(inv.text.contains("Global Administrator"), "{}", inv.text);
    let html = inv.html.clone().expect("HTML part");
    assert!(
        html.contains(&legacy.replace('&', "&amp;").replace('=', "&#x3D;")),
        "{html}"
    );

    // A link per invitation, bare, with a `#` fragment that is no comment.
    let granular = "https://admin.microsoft.com/AdminPortal/Home#/partners/invitation/granularAdminRelationships/6f2b0a1e-0000-4000-8000-000000000001";
    let t = partner_commands(
        &format!("invite {CAROL} link {granular}  # their GDAP request"),
        "l2",
    )
    .await;
    assert!(t.text.contains(&format!("invited {CAROL}")), "{}", t.text);
    let inv2 = wait_for(CAROL, "invitation", |m| m.subject.contains("[ref:")).await;
    assert!(inv2.text.contains(granular), "{}", inv2.text);
    assert!(!inv2.text.contains("their GDAP request"));

    // A link elsewhere is refused in the transcript and nothing is sent.
    let t = partner_commands(
        &format!("invite {BOB} link \"https://admin.microsoft.com.evil.example/x\""),
        "l3",
    )
    .await;
    assert!(t.text.contains("ERROR"), "{}", t.text);
    assert!(t.text.contains("approval_link_hosts"), "{}", t.text);
    let t = partner_commands(
        &format!("invite {BOB} link http://admin.microsoft.com/x"),
        "l4",
    )
    .await;
    assert!(t.text.contains("https://"), "{}", t.text);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(count_where(BOB, |_| true).await, 0);
    let v = daemon.status(BOB);
    assert!(v.as_array().is_none_or(|a| a.is_empty()), "{v}");

    // Draft mode shows the link to the partner before it goes.
    clear_mailbox(PARTNER1).await;
    let _ = partner_commands(&format!("invite {BOB} draft link {granular}"), "l5").await;
    let draft = wait_for(PARTNER1, "draft", |m| m.subject.contains("[ref:")).await;
    assert!(draft.text.contains(granular), "{}", draft.text);

    // "accept" now means "I approved it in the admin center", and the
    // partner is told it was claimed by mail.
    let to = inv.reply_to.clone().unwrap();
    send_raw(
        ALICE,
        &[&to],
        &mail(ALICE, &to, &format!("Re: {}", inv.subject), "", "Accept\n"),
    )
    .await;
    daemon.wait_state("northwind", ALICE, "active").await;
    let notice = wait_for(PARTNER1, "acceptance notice", |m| {
        m.subject.starts_with("Accepted:")
    })
    .await;
    assert!(
        notice.text.contains("approved your request"),
        "{}",
        notice.text
    );
    assert!(notice.text.contains("claimed by mail"), "{}", notice.text);
    let confirm = wait_for(ALICE, "confirmation", |m| m.subject.contains("granted")).await;
    assert!(confirm.text.contains("admin center"), "{}", confirm.text);

    // The history names each entry's source.
    let (ok, out, err) = daemon.cli(&["history", ALICE, "--json"]);
    assert!(ok, "{err}");
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sources: Vec<&str> = h[0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(sources, ["command", "mail"], "{out}");
    let (ok, out, _) = daemon.cli(&["history", ALICE]);
    assert!(
        ok && out.contains("mail") && out.contains("command"),
        "{out}"
    );
}
