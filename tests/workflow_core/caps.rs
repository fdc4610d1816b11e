//! Reliability and limits: the reply and support-request caps, refused recipients, bounces, commands given as data.

use super::*;

// ---- reliability and security ----------------------------------------------

#[test]
fn reply_cap_suppresses_replies_past_the_limit() {
    let mut w = World::new();
    let m = w.command_mail(PARTNER1, "help");
    let mut d = w.decide(&m);
    assert_eq!(d.mails.len(), 1);
    // 19 sent this hour: the 20th goes out.
    let (kept, notes) =
        liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 19, 20);
    assert_eq!((kept.len(), notes.len(), d.mails.len()), (1, 0, 1));
    // 20 sent: suppressed, and said so.
    let mut d = w.decide(&m);
    let (kept, notes) =
        liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 20, 20);
    assert!(kept.is_empty() && d.mails.is_empty());
    assert!(
        notes[0].reason.contains("partner1@liaison.test"),
        "{notes:?}"
    );
    // A transcript of real work is never capped; one of errors only is.
    let m = w.command_mail(PARTNER1, "status");
    let mut d = w.decide(&m);
    let (_, notes) =
        liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert!(notes.is_empty() && d.mails.len() == 1);
    let m = w.command_mail(PARTNER1, "frobnicate");
    let mut d = w.decide(&m);
    liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert!(d.mails.is_empty());
    // Invitations are not replies and are never capped (and the transcript
    // of a successful invite is real work).
    let m = w.command_mail(PARTNER1, "invite alice@contoso.test");
    let mut d = w.decide(&m);
    liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert_eq!(
        templates_of(&d),
        vec![TemplateName::Invitation, TemplateName::Transcript]
    );
}

#[test]
fn a_mail_without_message_id_does_not_escape_the_reply_cap() {
    // Leaving out the Message-ID (as some auto-responders do, and as any
    // forger may) leaves the answers without In-Reply-To: they are still
    // replies to the sender and are capped.
    // (A transcript that only answers "help" is a reply like any other; one
    // whose commands did something is work and never capped.)
    let mut w = World::new();
    let mut m = w.command_mail(PARTNER1, "help");
    m.message_id = None;
    let mut d = w.decide(&m);
    assert_eq!(templates_of(&d), vec![TemplateName::Transcript]);
    assert!(d.mails[0].in_reply_to.is_none());
    let (kept, held) =
        liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert!(kept.is_empty() && d.mails.is_empty(), "{d:#?}");
    assert_eq!(held.len(), 1);
    assert!(held[0].reason.contains(PARTNER1), "{}", held[0].reason);
    // A customer's unclear answer by token: the clarification is capped too.
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.reply_plus(ALICE, &token, "hmm");
    reply.message_id = None;
    let mut d = w.decide(&reply);
    assert_eq!(templates_of(&d), vec![TemplateName::Clarify]);
    let (_, held) =
        liaison_core::decide::apply_reply_cap(&mut d, reply.from.as_deref(), &|_| 1000, 20);
    assert!(d.mails.is_empty() && held.len() == 1, "{d:#?}");
    // Invitations (to a customer, not the sender) are still never capped.
    let mut m = w.command_mail(PARTNER1, "invite bob@fabrikam.test");
    m.message_id = None;
    let mut d = w.decide(&m);
    liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert_eq!(
        templates_of(&d),
        vec![TemplateName::Invitation, TemplateName::Transcript]
    );
}

#[test]
fn a_ticket_keeps_the_start_of_a_long_follow_up_and_relays_all_of_it() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    w.run(&m);
    let long = "log line with some detail\n".repeat(40_000);
    let m = support_mail(&mut w, ALICE, "Re: [T-000001] Cannot sign in", &long);
    let d = w.run(&m);
    let relay = plan(&d, TemplateName::TicketRelayDesk);
    assert_eq!(
        relay.vars["text"].as_str().unwrap().len(),
        long.trim_end().len(),
        "the desk gets all of it"
    );
    let kept = &d.tickets[0].entries.last().unwrap().text;
    assert!(
        kept.chars().count() < liaison_core::decide::MAX_ENTRY_TEXT_CHARS + 100,
        "{} characters kept",
        kept.chars().count()
    );
    assert!(kept.starts_with("log line with some detail\n"));
    assert!(
        kept.contains("more characters, not kept here"),
        "{}",
        &kept[kept.len() - 200..]
    );
    // A short follow-up is kept as it is.
    let m = support_mail(
        &mut w,
        ALICE,
        "Re: [T-000001] Cannot sign in",
        "Still failing.",
    );
    let d = w.run(&m);
    assert_eq!(d.tickets[0].entries.last().unwrap().text, "Still failing.");
}

#[test]
fn ticket_traffic_is_never_held_by_the_reply_cap() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    w.run(&m);
    // A follow-up relayed to the desk is a reply (In-Reply-To the desk's
    // thread), to a shared address that got hundreds this hour: not a loop.
    let m = support_mail(
        &mut w,
        ALICE,
        "Re: [T-000001] Cannot sign in",
        "Still failing.",
    );
    let mut d = w.decide(&m);
    assert_eq!(templates_of(&d), vec![TemplateName::TicketRelayDesk]);
    assert!(d.mails[0].in_reply_to.is_some());
    let (_, held) = liaison_core::decide::apply_reply_cap(&mut d, m.from.as_deref(), &|_| 1000, 20);
    assert!(held.is_empty(), "{held:?}");
    assert_eq!(d.mails.len(), 1);
}

#[test]
fn support_requests_past_the_cap_are_held_with_their_mails() {
    let mut w = World::new();
    removed_permissions(&mut w);
    let m = support_mail(&mut w, ALICE, "Cannot sign in", "Nobody can sign in.");
    let mut d = w.decide(&m);
    let (counted, held) = liaison_core::decide::apply_support_cap(&mut d, &|_| 4, 5);
    assert_eq!(counted.as_deref(), Some(ALICE));
    assert!(held.is_empty());
    assert_eq!(d.mails.len(), 3);
    let mut d = w.decide(&m);
    let (counted, held) = liaison_core::decide::apply_support_cap(&mut d, &|_| 5, 5);
    assert!(counted.is_none() && d.mails.is_empty());
    assert_eq!(
        held.iter().map(|h| h.plan.template).collect::<Vec<_>>(),
        vec![
            TemplateName::TicketOpenedDesk,
            TemplateName::TicketOpenedCustomer,
            TemplateName::TicketOpenedPartner
        ]
    );
    assert!(held
        .iter()
        .all(|h| h.partner.as_deref() == Some("northwind")));
    assert!(held[0].reason.contains(ALICE), "{}", held[0].reason);
    // The ticket itself is still recorded: releasing its mails completes it.
    assert_eq!(d.tickets.len(), 1);
    // Other mail is not a support request and is not counted.
    let m = w.command_mail(PARTNER1, "status");
    let mut d = w.decide(&m);
    let (counted, held) = liaison_core::decide::apply_support_cap(&mut d, &|_| 1000, 5);
    assert!(counted.is_none() && held.is_empty() && d.mails.len() == 1);
}

#[test]
fn a_refused_recipient_is_reported_to_the_partner_but_never_to_itself() {
    let w = World::new();
    let ctx = Context {
        config: &w.config,
        tokens: &w.key,
        now: w.now,
    };
    let recipients = vec![PARTNER1.to_string(), "support@northwind.test".to_string()];
    let refused = liaison_core::decide::RefusedMail {
        subject: "Accepted: alice@contoso.test granted delegated admin permissions",
        recipients: &recipients,
        ticket: None,
    };
    let d = liaison_core::decide::recipient_refused(
        &ctx,
        &w.store,
        &refused,
        "support@northwind.test",
        "550 5.1.1 user unknown",
        "k1",
    )
    .unwrap();
    assert_eq!(templates_of(&d), vec![TemplateName::DeliveryFailedPartner]);
    assert_eq!(d.mails[0].to, vec![PARTNER1.to_string()]);
    assert_eq!(d.mails[0].vars["recipient"], "support@northwind.test");
    assert_eq!(d.mails[0].vars["reason"], "550 5.1.1 user unknown");
    // The partner's own address refused: logged, not written to again.
    let d = liaison_core::decide::recipient_refused(
        &ctx,
        &w.store,
        &refused,
        PARTNER1,
        "550 5.1.1 user unknown",
        "k2",
    )
    .unwrap();
    assert!(d.mails.is_empty(), "{:?}", d.mails);
    // Nobody concerned (no ticket, no partner among the recipients).
    let strangers = vec!["x@elsewhere.test".to_string()];
    let d = liaison_core::decide::recipient_refused(
        &ctx,
        &w.store,
        &liaison_core::decide::RefusedMail {
            subject: "s",
            recipients: &strangers,
            ticket: None,
        },
        "x@elsewhere.test",
        "550",
        "k3",
    )
    .unwrap();
    assert!(d.mails.is_empty());
}

#[test]
fn a_bounce_marks_the_invitation_and_tells_the_partner() {
    let mut w = World::new();
    let (_, plan, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    // As delivered: to the invitation's bounce address, with a null sender.
    let bounce_to =
        liaison_core::mail::dsn::return_path(w.key.ids(), INVITES, &plan.message_id, &plan.to);
    let raw = format!(
        "Return-Path: <>\r\nDelivered-To: {bounce_to}\r\n\
From: MAILER-DAEMON@mail.liaison.test\r\nTo: invites@liaison.test\r\nSubject: Undelivered Mail\r\n\
Message-ID: <bounce1@mail.liaison.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nSorry.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
Final-Recipient: rfc822; alice@contoso.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{}>\r\nSubject: x\r\n\r\n--B--\r\n",
        plan.message_id
    );
    let m = inbound::parse(raw.as_bytes(), 1 << 20).unwrap();
    assert!(m.automatic.is_some(), "a bounce is automatic mail");
    let d = w.run(&m);
    assert_eq!(d.class, MailClass::Bounce);
    assert_eq!(templates_of(&d), vec![TemplateName::BouncedPartner]);
    assert_eq!(d.mails[0].to, vec![PARTNER1.to_string()]);
    assert!(d.mails[0].vars["reason"]
        .as_str()
        .unwrap()
        .contains("5.1.1"));
    assert!(d.invitations[0].bounced.is_some());
    // The same bounce again: nothing more.
    let mut again = m.clone();
    again.key = "other".into();
    assert!(w.decide(&again).mails.is_empty());
    // A bounce for a mail that is not an invitation: ignored, never answered.
    let m = inbound::parse(
        raw.replace(&plan.message_id, "unknown@x").as_bytes(),
        1 << 20,
    )
    .unwrap();
    let d = w.decide(&m);
    assert_silent_ignore(&d);
}

#[test]
fn with_a_trusted_authserv_id_forged_partners_are_quarantined() {
    let mut w = World::with_config("");
    w.config.security.trusted_authserv_id = Some("mx.liaison.test".into());
    let mut m = w.command_mail(PARTNER1, "invite alice@contoso.test");
    let d = w.decide(&m);
    assert_eq!(d.class, MailClass::Quarantined);
    assert!(d.mails.is_empty() && d.invitations.is_empty(), "{d:#?}");
    assert!(d.summary.contains("not authenticated"), "{}", d.summary);
    // Forged header from elsewhere: still quarantined.
    m.authentication_results = vec!["evil.test; dkim=pass header.d=liaison.test".into()];
    assert_eq!(w.decide(&m).class, MailClass::Quarantined);
    // Our server says DKIM passed for the partner's domain: accepted.
    m.authentication_results = vec!["mx.liaison.test; dkim=pass header.d=liaison.test".into()];
    let d = w.decide(&m);
    assert_eq!(
        d.class,
        MailClass::Command {
            partner: "northwind".into()
        }
    );
    assert_eq!(d.invitations.len(), 1);
}

#[test]
fn commands_given_as_data_run_as_the_same_mailed_commands() {
    use liaison_core::command::Command;
    let commands = vec![
        Command::invite(ALICE, Some("Contoso, Ltd"), Some("ko"), false).unwrap(),
        Command::invite(ALICE, None, None, false).unwrap(),
        Command::invite(PARTNER2, None, None, false).unwrap(),
    ];
    let w = World::new();
    let ctx = Context {
        config: &w.config,
        tokens: &w.key,
        now: w.now,
    };
    let partner = w.config.partner("northwind").unwrap();
    let (d, outcomes) = liaison_core::decide::run_given_commands(
        &ctx,
        &w.store,
        partner,
        PARTNER1,
        "import:northwind:test:0",
        &commands,
    )
    .unwrap();
    // No transcript: the caller reports the outcomes.
    assert_eq!(templates_of(&d), vec![TemplateName::Invitation]);
    assert_eq!(d.relationships.len(), 1);
    assert_eq!(
        d.relationships[0].customer_name.as_deref(),
        Some("Contoso, Ltd")
    );
    assert_eq!(d.relationships[0].history[0].actor, PARTNER1);
    // The same commands mailed give the same results.
    let mut mailed = World::new();
    let m = mailed.command_mail(
        PARTNER1,
        &format!(
            "invite {ALICE} name \"Contoso, Ltd\" locale ko\ninvite {ALICE}\ninvite {PARTNER2}\n"
        ),
    );
    let expected: Vec<(bool, String)> = results(&mailed.run(&m))
        .into_iter()
        .map(|(_, ok, text)| (ok, text))
        .collect();
    let got: Vec<(bool, String)> = outcomes.into_iter().map(|o| (o.ok, o.result)).collect();
    assert_eq!(got, expected);
    assert_eq!(
        got.iter().map(|(ok, _)| *ok).collect::<Vec<_>>(),
        [true, false, false]
    );
}
