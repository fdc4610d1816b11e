//! Forged tokens, strangers, automatic mail, quoted commands, and the sender trust policy (decide/trust.rs).

use super::*;

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

// ---- the sender trust policy (core/src/decide/trust.rs) -------------------

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
