//! Support requests and tickets: the desk, follow-ups, ticket commands.

use super::*;

// ---- support requests and tickets ------------------------------------------

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
