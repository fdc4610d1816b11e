//! The partner commands: invite (and its mail), determinism, resend, status, list, history, help, and partners kept apart.

use super::*;

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
