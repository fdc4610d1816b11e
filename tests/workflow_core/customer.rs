//! Customer answers: accept and decline by every kind of reference, in every locale, quoted invitations, and ambiguity.

use super::*;

// ---- 4. customer answers --------------------------------------------------

#[test]
fn accept_matched_by_plus_address() {
    // Delivered-To and To both carry the tag.
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(ALICE, &token, QUOTED_ACCEPT_AND_DECLINE);
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "PlusAddress");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );

    // Only Delivered-To has it (the client rewrote To).
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.reply_plus(ALICE, &token, QUOTED_ACCEPT_AND_DECLINE);
    reply.recipients = vec![INVITES.into()];
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "PlusAddress");

    // Only To has it; the mail system upper-cased the tag.
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.reply_plus(ALICE, &token, QUOTED_ACCEPT_AND_DECLINE);
    reply.delivered_to.clear();
    reply.recipients = vec![format!("invites+{}@liaison.test", token.to_uppercase())];
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "PlusAddress");
}

#[test]
fn accept_matched_by_subject_reference() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.customer_mail(ALICE, QUOTED_ACCEPT_AND_DECLINE);
    reply.subject = format!("RE: Northwind Traders asks for permissions [ref:{token}]");
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "Subject");
}

#[test]
fn accept_matched_by_thread_only() {
    let mut w = World::new();
    let (_, plan, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.customer_mail(ALICE, QUOTED_ACCEPT_AND_DECLINE);
    reply.in_reply_to = vec![plan.message_id.clone()];
    reply.references = vec![plan.message_id.clone()];
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "Thread");

    // References alone are enough too.
    let mut w = World::new();
    let (_, plan, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    let mut reply = w.customer_mail(ALICE, "accept");
    reply.references = vec!["unrelated@mail.test".into(), plan.message_id.clone()];
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "Thread");
}

#[test]
fn accept_from_a_parsed_raw_reply() {
    let mut w = World::new();
    let (_, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let raw = format!(
        "From: Alice <Alice@Contoso.test>\r\n\
To: Liaison <invites+{token}@liaison.test>\r\n\
Subject: Re: Northwind Traders asks for permissions [ref:{token}]\r\n\
Message-ID: <reply1@contoso.test>\r\n\
In-Reply-To: <{mid}>\r\n\
References: <{mid}>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Accept\r\n\
\r\n\
On Thu, 28 May 2026 at 20:26, Liaison <invites@liaison.test> wrote:\r\n\
> To decline, reply with the word \"decline\".\r\n",
        mid = plan.message_id
    );
    let reply = inbound::parse(raw.as_bytes(), 1 << 20).unwrap();
    let d = w.run(&reply);
    assert_accepted(&w, &d, &reply, "PlusAddress");
    assert_eq!(
        d.relationships[0].history[1].message_id.as_deref(),
        Some("reply1@contoso.test")
    );
    // The confirmation threads under the customer's reply.
    assert_eq!(
        d.mails[0].references,
        vec![plan.message_id.clone(), "reply1@contoso.test".to_string()]
    );
    let out = compose(&w.config, &templates(), w.key.ids(), &d.mails[0], NOW).unwrap();
    let msg = parsed(&out);
    assert!(msg
        .header_raw("In-Reply-To")
        .unwrap()
        .contains("<reply1@contoso.test>"));
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(msg.html_body_count(), 1);
}

#[test]
fn korean_accept_and_confirmations() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER2, "invite minji@woodgrove.test");
    let reply = w.reply_plus("minji@woodgrove.test", &token, "수락합니다\n\n감사합니다");
    let d = w.run(&reply);
    assert_eq!(d.relationships[0].state, RelationshipState::Active);
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::AcceptedCustomer,
            TemplateName::AcceptedPartner
        ]
    );
    assert_eq!(d.mails[0].locale, "ko");
    assert_eq!(d.mails[1].to, vec![PARTNER2]);
    assert_eq!(d.mails[1].locale, "ko");
    let t = templates();
    for plan in &d.mails {
        compose(&w.config, &t, w.key.ids(), plan, NOW).expect("Korean confirmation composes");
    }

    // Korean accept on an English invitation works too.
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(ALICE, &token, "수락합니다");
    let d = w.run(&reply);
    assert_eq!(d.relationships[0].state, RelationshipState::Active);
    assert_eq!(d.mails[0].locale, "en");
}

#[test]
fn decline_notifies_both_sides() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(
        ALICE,
        &token,
        "decline\n\nOn Thu, 28 May 2026 at 20:26, Liaison <invites@liaison.test> wrote:\n> To accept, reply with \"accept\".\n",
    );
    let d = w.run(&reply);
    assert_eq!(d.relationships[0].state, RelationshipState::Declined);
    assert!(d.summary.contains("invited -> declined"), "{}", d.summary);
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::DeclinedCustomer,
            TemplateName::DeclinedPartner
        ]
    );
    assert_eq!(d.mails[0].to, vec![ALICE]);
    assert_eq!(d.mails[1].to, vec![PARTNER1]);
    assert_eq!(d.mails[1].vars["state"], "declined");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Declined)
    );
    let t = templates();
    for plan in &d.mails {
        compose(&w.config, &t, w.key.ids(), plan, NOW).unwrap();
    }
}

#[test]
fn customer_reporting_removed_permissions_moves_the_relationship() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(ALICE, &token, "accept");
    let accepted = w.run(&reply);
    // Replying to the confirmation threads back to the invitation.
    let mut m = w.customer_mail(ALICE, "I removed your admin permissions today.");
    m.in_reply_to = vec![accepted.mails[0].message_id.clone()];
    let d = w.run(&m);
    assert!(d.summary.contains("(matched by Thread)"), "{}", d.summary);
    assert_eq!(d.relationships.len(), 1);
    let rel = &d.relationships[0];
    assert_eq!(rel.state, RelationshipState::PermissionsRemoved);
    let last = rel.history.last().unwrap();
    assert_eq!(
        (last.from, last.to, last.actor.as_str()),
        (
            Some(RelationshipState::Active),
            RelationshipState::PermissionsRemoved,
            ALICE
        )
    );
    // No acceptance or decline notice goes out for it.
    assert!(d.mails.iter().all(|m| !matches!(
        m.template,
        TemplateName::AcceptedCustomer
            | TemplateName::AcceptedPartner
            | TemplateName::DeclinedCustomer
            | TemplateName::DeclinedPartner
    )));
}

#[test]
fn quoted_invitation_without_new_answer_asks_to_clarify() {
    let mut w = World::new();
    let (_, plan, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    // Quote the whole rendered invitation, which says both "accept" and
    // "decline", and write nothing new.
    let rendered = templates()
        .render(TemplateName::Invitation, &plan.locale, &plan.vars)
        .unwrap();
    assert!(rendered.text.contains("accept") && rendered.text.contains("decline"));
    let quoted: String = rendered.text.lines().map(|l| format!("> {l}\n")).collect();
    let body =
        format!("On Thu, 28 May 2026 at 20:26, Liaison <invites@liaison.test> wrote:\n{quoted}");
    let before = w.store.clone();
    let reply = w.reply_plus(ALICE, &token, &body);
    let d = w.run(&reply);
    assert_eq!(
        d.class,
        MailClass::Customer {
            partner: "northwind".into(),
            customer: ALICE.into()
        }
    );
    assert!(d.relationships.is_empty() && d.invitations.is_empty());
    assert_eq!(templates_of(&d), vec![TemplateName::Clarify]);
    assert_eq!(d.mails[0].to, vec![ALICE]);
    assert_eq!(d.mails[0].in_reply_to, reply.message_id);
    assert_eq!(w.store.relationships, before.relationships);
    compose(&w.config, &templates(), w.key.ids(), &d.mails[0], NOW).unwrap();

    // Both words in the new text is unclear, not a guess.
    let reply = w.reply_plus(ALICE, &token, "accept or decline?");
    let d = w.run(&reply);
    assert!(d.relationships.is_empty());
    assert_eq!(templates_of(&d), vec![TemplateName::Clarify]);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
}

// ---- 6. ambiguity ---------------------------------------------------------

#[test]
fn customer_of_two_partners_without_reference_is_asked_not_guessed() {
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    w.invite(PARTNER2, "invite alice@contoso.test");
    let before = w.store.clone();

    let m = w.customer_mail(ALICE, "Accept");
    let d = w.run(&m);
    assert_eq!(d.class, MailClass::Ignored);
    assert!(d.relationships.is_empty() && d.invitations.is_empty());
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
    let plan = &d.mails[0];
    assert_eq!(plan.to, vec![ALICE]);
    assert_eq!(plan.vars["reason"], "no_reference");
    assert_eq!(plan.in_reply_to, m.message_id);
    assert_eq!(w.store.relationships, before.relationships);
    compose(&w.config, &templates(), w.key.ids(), plan, NOW).expect("not-matched composes");

    // A single-partner customer without a reference is not guessed either.
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    let m = w.customer_mail(ALICE, "Accept");
    let d = w.run(&m);
    assert!(d.relationships.is_empty());
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
}

#[test]
fn reply_to_a_not_matched_notice_does_not_pick_a_partner() {
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    w.invite(PARTNER2, "invite alice@contoso.test");
    let m = w.customer_mail(ALICE, "Accept");
    let d = w.run(&m);
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
    let notice = d.mails[0].clone();
    let before = w.store.clone();

    // The customer answers the notice itself, the most natural thing to do.
    let mut reply = w.customer_mail(ALICE, "Accept");
    reply.subject = "Re: your mail".into();
    reply.in_reply_to = vec![notice.message_id.clone()];
    reply.references = vec![m.message_id.clone().unwrap(), notice.message_id.clone()];
    let d = w.run(&reply);
    // Still ambiguous: neither relationship may change.
    assert!(d.relationships.is_empty(), "{}", d.summary);
    assert_eq!(w.store.relationships, before.relationships);
}

#[test]
fn answer_to_a_superseded_invitation_changes_nothing() {
    let mut w = World::new();
    let (_, _, old) = w.invite(PARTNER1, "invite alice@contoso.test");
    let reply = w.reply_plus(ALICE, &old, "decline");
    w.run(&reply);
    let (d, _, new) = w.invite(PARTNER1, "invite alice@contoso.test");
    assert_ne!(old, new);
    assert_eq!(d.relationships[0].state, RelationshipState::Invited);
    assert_eq!(d.relationships[0].history.len(), 3);

    let reply = w.reply_plus(ALICE, &old, "accept");
    let d = w.run(&reply);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
    assert_eq!(d.mails[0].vars["reason"], "superseded");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );

    let reply = w.reply_plus(ALICE, &new, "accept");
    assert_eq!(
        w.run(&reply).relationships[0].state,
        RelationshipState::Active
    );
}
