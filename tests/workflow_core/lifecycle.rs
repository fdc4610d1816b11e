//! The relationship lifecycle: revoked, restore, remove, bounces, expiry, and the fixed relationship duration.

use super::*;

// ---- lifecycle: revoked, restore, remove, contact, expiry -----------------

#[test]
fn revoked_then_restore_accepted_makes_it_active_again() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(PARTNER1, "revoked alice@contoso.test");
    let d = w.run(&m);
    let (ok, text) = only_result(&d);
    assert!(
        ok && text.contains("remain responsible for their support"),
        "{text}"
    );
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::PermissionsRemoved)
    );
    // A second `revoked` says so instead of failing oddly.
    let m = w.command_mail(PARTNER1, "revoked alice@contoso.test");
    let (ok, text) = only_result(&w.run(&m));
    assert!(
        !ok && text.contains("already permissions_removed"),
        "{text}"
    );

    let m = w.command_mail(PARTNER1, "restore alice@contoso.test");
    let d = w.run(&m);
    let plan = d
        .mails
        .iter()
        .find(|p| p.template == TemplateName::Restore)
        .expect("restore mail")
        .clone();
    assert_eq!(plan.to, vec![ALICE.to_string()]);
    let token = plan.vars["token"].as_str().unwrap().to_string();
    // A restore token is not an invitation token.
    assert!(w
        .key
        .verify(&token, Purpose::Invitation, ALICE, w.now)
        .is_err());
    assert!(w.key.verify(&token, Purpose::Restore, ALICE, w.now).is_ok());
    // The restore mail renders in both locales.
    let t = templates();
    for locale in ["en", "ko"] {
        t.render(TemplateName::Restore, locale, &plan.vars).unwrap();
    }

    let reply = w.reply_plus(ALICE, &token, "Accept");
    let d = w.run(&reply);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active),
        "{d:#?}"
    );
    assert!(templates_of(&d).contains(&TemplateName::AcceptedPartner));
    assert_eq!(d.mails[0].vars["restore"], true);
}

#[test]
fn accept_replayed_to_the_original_invitation_after_revoked_does_not_reactivate() {
    let mut w = World::new();
    let token = make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(PARTNER1, "revoked alice@contoso.test");
    w.run(&m);
    // The customer replays "accept" to the original invitation: by token
    // and by thread. Neither is the current (restore) request.
    let invitation_mid = w
        .store
        .relationship("northwind", ALICE)
        .unwrap()
        .and_then(|r| r.invitation_id)
        .and_then(|id| w.store.invitation(id).unwrap())
        .map(|i| i.message_id)
        .unwrap();
    let by_token = w.reply_plus(ALICE, &token, "Accept");
    let mut by_thread = w.customer_mail(ALICE, "Accept");
    by_thread.in_reply_to = vec![invitation_mid];
    for m in [by_token, by_thread] {
        let d = w.run(&m);
        assert_eq!(
            w.store.state("northwind", ALICE),
            Some(RelationshipState::PermissionsRemoved),
            "{d:#?}"
        );
        assert!(d.relationships.is_empty(), "{d:#?}");
        assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
        assert_eq!(d.mails[0].vars["reason"], "superseded");
        assert_eq!(d.mails[0].to, vec![ALICE.to_string()]);
    }
    // Declining the original is no answer to anything either.
    let decline = w.reply_plus(ALICE, &token, "Decline");
    let d = w.run(&decline);
    assert_eq!(d.mails[0].vars["reason"], "superseded");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::PermissionsRemoved)
    );
}

#[test]
fn a_thread_reference_must_be_a_keyed_message_id_sent_to_the_customer() {
    use sha2::{Digest, Sha256};
    let mut w = World::new();
    let cmd = w.command_mail(PARTNER1, "invite alice@contoso.test");
    let d = w.run(&cmd);
    let plan = plan(&d, TemplateName::Invitation);
    // The old, public formula: `liaison.` + hex(sha256(key ‖ "\0out1")[..12]).
    let h = Sha256::digest(format!("{}\0out1", cmd.key).as_bytes());
    let predicted = format!(
        "liaison.{}@liaison.test",
        h[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_ne!(plan.message_id, predicted, "Message-IDs are keyed");
    assert!(
        plan.message_id.starts_with("liaison.k1."),
        "{}",
        plan.message_id
    );
    let mut forged = w.customer_mail(ALICE, "accept");
    forged.in_reply_to = vec![predicted.clone()];
    forged.references = vec![predicted.clone()];
    let d = w.run(&forged);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
    // A store from before the upgrade indexes the old, computable id: it is
    // still no credential.
    let inv_id = only_invitation_id(&w);
    w.store.threads.insert(predicted, inv_id);
    let d = w.run(&forged);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
    // Another secret gives other ids for the same command mail.
    let same = World::new().run(&cmd);
    assert_eq!(plan.message_id, plan_of(&same).message_id, "stable");
    let mut keyed = World::new();
    keyed.key = TokenKey::new(b"a different secret, also long enough");
    let d2 = keyed.run(&cmd);
    assert_ne!(plan.message_id, plan_of(&d2).message_id);
    assert_ne!(same.invitations[0].id, d2.invitations[0].id);
    // The genuine Message-ID threads.
    let mut genuine = w.customer_mail(ALICE, "accept");
    genuine.in_reply_to = vec![plan.message_id.clone()];
    w.run(&genuine);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
}

#[test]
fn the_draft_itself_is_no_thread_for_the_customer() {
    let mut w = World::new();
    let (_, draft, _) = w.invite(PARTNER1, "invite alice@contoso.test draft");
    assert_eq!(draft.to, vec![PARTNER1]);
    // The draft went to the partner: naming its Message-ID proves nothing
    // about the customer.
    let mut m = w.customer_mail(ALICE, "accept");
    m.in_reply_to = vec![draft.message_id.clone()];
    let d = w.run(&m);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
    // A bounce of the draft names the partner, not the customer: the
    // invitation is not marked bounced (it was never sent to the customer).
    let bounce_to =
        liaison_core::mail::dsn::return_path(w.key.ids(), INVITES, &draft.message_id, &draft.to);
    let raw = format!(
        "Return-Path: <>\r\nDelivered-To: {bounce_to}\r\nFrom: MAILER-DAEMON@mail.liaison.test\r\n\
To: invites@liaison.test\r\nSubject: Undelivered\r\nMessage-ID: <b2@mail.liaison.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
Final-Recipient: rfc822; {PARTNER1}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{}>\r\n\r\n--B--\r\n",
        draft.message_id
    );
    let d = w.run(&inbound::parse(raw.as_bytes(), 1 << 20).unwrap());
    assert!(d.mails.is_empty() && d.invitations.is_empty(), "{d:#?}");
    assert!(
        d.summary.contains("not alice@contoso.test"),
        "{}",
        d.summary
    );
}

#[test]
fn forged_bounces_mark_nothing_and_forward_nothing() {
    let mut w = World::new();
    let (_, plan, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    let good_to =
        liaison_core::mail::dsn::return_path(w.key.ids(), INVITES, &plan.message_id, &plan.to);
    let other_to = liaison_core::mail::dsn::return_path(
        w.key.ids(),
        INVITES,
        &plan.message_id,
        &[BOB.to_string()],
    );
    let report = |return_path: &str, to: &str, failed: &str| {
        format!(
            "Return-Path: {return_path}\r\nDelivered-To: {to}\r\nFrom: MAILER-DAEMON@evil.test\r\n\
To: invites@liaison.test\r\nSubject: Undelivered\r\nMessage-ID: <f@evil.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 log in at http://evil.example/login\r\n\r\n\
--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{}>\r\n\r\n--B--\r\n",
            plan.message_id
        )
    };
    for (what, raw) in [
        (
            "stranger's envelope sender",
            report("<mallory@evil.test>", &good_to, ALICE),
        ),
        (
            "null sender, untagged address",
            report("<>", INVITES, ALICE),
        ),
        ("right tag, wrong recipient", report("<>", &other_to, ALICE)),
        (
            "forged tag",
            report(
                "<>",
                "invites+b-aaaaaaaaaaaaaaaaaaaaaaaaaa@liaison.test",
                ALICE,
            ),
        ),
    ] {
        let d = w.run(&inbound::parse(raw.as_bytes(), 1 << 20).unwrap());
        assert_eq!(d.class, MailClass::Ignored, "{what}");
        assert!(
            d.mails.is_empty() && d.invitations.is_empty(),
            "{what}: {d:#?}"
        );
        assert!(d.summary.contains("not believed"), "{what}: {}", d.summary);
    }
    // The real one is believed, and its text is defanged.
    let d = w.run(&inbound::parse(report("<>", &good_to, ALICE).as_bytes(), 1 << 20).unwrap());
    assert_eq!(d.class, MailClass::Bounce, "{d:#?}");
    let reason = d.mails[0].vars["reason"].as_str().unwrap();
    assert!(reason.contains("hxxp://evil[.]example/login"), "{reason}");
    assert!(!reason.contains("http://"), "{reason}");
}

#[test]
fn declining_a_restore_keeps_the_permissions_removed() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(
        PARTNER1,
        "revoked alice@contoso.test\nrestore alice@contoso.test",
    );
    let d = w.run(&m);
    let token = d
        .mails
        .iter()
        .find(|p| p.template == TemplateName::Restore)
        .expect("restore mail")
        .vars["token"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = w.reply_plus(ALICE, &token, "decline");
    let d = w.run(&reply);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::PermissionsRemoved)
    );
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::DeclinedCustomer,
            TemplateName::DeclinedPartner
        ]
    );
    let text = templates()
        .render(TemplateName::DeclinedPartner, "en", &d.mails[1].vars)
        .unwrap()
        .text;
    assert!(text.contains("request to restore"), "{text}");
}

#[test]
fn restore_needs_removed_permissions() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(PARTNER1, "restore alice@contoso.test");
    let (ok, text) = only_result(&w.run(&m));
    assert!(!ok && text.contains("is active"), "{text}");
    let m = w.command_mail(PARTNER1, "restore bob@fabrikam.test");
    let (ok, text) = only_result(&w.run(&m));
    assert!(!ok && text.contains("has no relationship"), "{text}");
}

#[test]
fn customer_reporting_removal_tells_partner_and_support_contact() {
    let mut w = World::new();
    let token = make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(
        PARTNER1,
        "contact alice@contoso.test support@northwind.test",
    );
    let (ok, text) = only_result(&w.run(&m));
    assert!(ok && text.contains("support@northwind.test"), "{text}");
    let reply = w.reply_plus(
        ALICE,
        &token,
        "Hi, we removed your admin permissions today.",
    );
    let d = w.run(&reply);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::PermissionsRemoved)
    );
    assert_eq!(
        templates_of(&d),
        vec![
            TemplateName::PermissionsRemovedCustomer,
            TemplateName::PermissionsRemovedPartner
        ]
    );
    assert_eq!(d.mails[0].to, vec![ALICE.to_string()]);
    assert_eq!(
        d.mails[1].to,
        vec![PARTNER1.to_string(), "support@northwind.test".to_string()]
    );
    let text = templates()
        .render(
            TemplateName::PermissionsRemovedPartner,
            "en",
            &d.mails[1].vars,
        )
        .unwrap()
        .text;
    assert!(
        text.contains("You remain responsible for their support"),
        "{text}"
    );
    // Korean too.
    let reply = w.reply_plus(ALICE, &token, "관리자 권한을 제거했습니다");
    let d = w.decide(&reply);
    assert!(
        d.summary.contains("already permissions_removed"),
        "{}",
        d.summary
    );
}

#[test]
fn remove_ends_the_relationship_and_tells_the_customer() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    let m = w.command_mail(PARTNER1, "remove alice@contoso.test");
    let d = w.run(&m);
    let (ok, text) = only_result(&d);
    assert!(ok && text.contains("removed the relationship"), "{text}");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Removed)
    );
    let notice = d
        .mails
        .iter()
        .find(|p| p.template == TemplateName::RemovedCustomer)
        .expect("customer told");
    assert_eq!(notice.to, vec![ALICE.to_string()]);
    // Removed twice: refused; invite again: allowed.
    let m = w.command_mail(PARTNER1, "remove alice@contoso.test");
    let (ok, _) = only_result(&w.run(&m));
    assert!(!ok);
    let (_, _, _) = w.invite(PARTNER1, "invite alice@contoso.test");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
    let history = &w
        .store
        .relationship("northwind", ALICE)
        .unwrap()
        .unwrap()
        .history;
    let states: Vec<&str> = history.iter().map(|h| h.to.as_str()).collect();
    assert_eq!(states, ["invited", "active", "removed", "invited"]);
}

#[test]
fn another_partner_cannot_touch_the_relationship() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    for cmd in [
        "revoked alice@contoso.test",
        "restore alice@contoso.test",
        "remove alice@contoso.test",
        "contact alice@contoso.test x@y.test",
        "history alice@contoso.test",
    ] {
        let m = w.command_mail(PARTNER2, cmd);
        let d = w.run(&m);
        let (ok, text) = only_result(&d);
        assert!(
            !ok && text.contains("has no relationship with Fabrikam Partners"),
            "{cmd}: {text}"
        );
        assert_eq!(d.mails.len(), 1, "only the transcript: {cmd}");
    }
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
}

#[test]
fn unanswered_invitations_expire_and_the_partner_is_told() {
    let mut w = World::new();
    w.invite(PARTNER1, "invite alice@contoso.test");
    w.invite(PARTNER2, "invite bob@fabrikam.test");
    let ctx = |w: &World, now| {
        liaison_core::decide::expire_due(
            &Context {
                config: &w.config,
                tokens: &w.key,
                now,
            },
            &w.store,
        )
        .unwrap()
    };
    // Not yet: one second before the 30 days (invitation_ttl_days) are over.
    let d = ctx(&w, w.now + 30 * DAY - 1);
    assert!(d.relationships.is_empty() && d.mails.is_empty(), "{d:#?}");
    // Then both expire, each partner told in its own locale.
    let later = w.now + 30 * DAY + 1;
    let d = ctx(&w, later);
    assert_eq!(d.class, MailClass::Timer);
    assert_eq!(d.relationships.len(), 2);
    assert!(d
        .relationships
        .iter()
        .all(|r| r.state == RelationshipState::Expired));
    let mut locales: Vec<(&str, &str)> = d
        .mails
        .iter()
        .map(|m| (m.to[0].as_str(), m.locale.as_str()))
        .collect();
    locales.sort();
    assert_eq!(locales, [(PARTNER1, "en"), (PARTNER2, "ko")]);
    assert!(d
        .mails
        .iter()
        .all(|m| m.template == TemplateName::ExpiredPartner));
    // Deterministic, and idempotent once applied.
    assert_eq!(ctx(&w, later), d);
    w.store.apply(&d);
    assert!(ctx(&w, later + 10).relationships.is_empty());
}

#[test]
fn an_answer_after_expiry_changes_nothing_and_says_why() {
    let mut w = World::new();
    let (_, _, token) = w.invite(PARTNER1, "invite alice@contoso.test");
    w.now += 30 * DAY + 1;
    let reply = w.reply_plus(ALICE, &token, "Accept");
    let d = w.run(&reply);
    assert!(d.relationships.is_empty(), "{d:#?}");
    assert_eq!(templates_of(&d), vec![TemplateName::NotMatched]);
    assert_eq!(d.mails[0].vars["reason"], "expired");
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Invited)
    );
}

// ---- fixed relationship duration ------------------------------------------

#[test]
fn fixed_duration_reminds_at_30_7_1_days_then_expires() {
    let mut w = World::with_config("[lifecycle]\nrelationship_days = 60\n");
    make_active(&mut w, PARTNER1, ALICE);
    let accepted = w.now;
    let ends = accepted + 60 * DAY;
    let rel = w.store.relationship("northwind", ALICE).unwrap().unwrap();
    assert_eq!(rel.ends_at, Some(ends));
    // status shows the end.
    let m = w.command_mail(PARTNER1, "status alice@contoso.test");
    let (_, text) = only_result(&w.run(&m));
    assert!(text.contains("ends "), "{text}");

    w.now = ends - 30 * DAY - 1;
    assert!(sweep(&mut w).mails.is_empty(), "too early");
    w.now = ends - 30 * DAY;
    let d = sweep(&mut w);
    assert_eq!(templates_of(&d), vec![TemplateName::EndingSoonPartner]);
    assert_eq!(d.mails[0].vars["days_left"], 30);
    assert_eq!(d.mails[0].to, vec![PARTNER1.to_string()]);
    assert!(sweep(&mut w).mails.is_empty(), "each reminder once");
    // The daemon was down across the 7-day mark: one reminder, not two.
    w.now = ends - DAY / 2;
    let d = sweep(&mut w);
    assert_eq!(d.mails.len(), 1, "{d:#?}");
    assert_eq!(d.mails[0].vars["days_left"], 1);
    assert!(sweep(&mut w).mails.is_empty());
    // The end.
    w.now = ends;
    let d = sweep(&mut w);
    assert_eq!(
        templates_of(&d),
        vec![TemplateName::RelationshipEndedPartner]
    );
    assert_eq!(d.mails[0].vars["extended"], false);
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Expired)
    );
    assert!(sweep(&mut w).mails.is_empty());
    let t = templates();
    for locale in ["en", "ko"] {
        t.render(
            TemplateName::RelationshipEndedPartner,
            locale,
            &d.mails[0].vars,
        )
        .unwrap();
    }
}

#[test]
fn fixed_duration_auto_extends_when_configured() {
    let mut w = World::with_config(
        "[lifecycle]\nrelationship_days = 60\nreminder_days = [7]\nauto_extend = true\n",
    );
    make_active(&mut w, PARTNER1, ALICE);
    let ends = w.now + 60 * DAY;
    w.now = ends - 7 * DAY;
    assert_eq!(sweep(&mut w).mails.len(), 1);
    w.now = ends;
    let d = sweep(&mut w);
    assert_eq!(d.mails[0].vars["extended"], true);
    let rel = w.store.relationship("northwind", ALICE).unwrap().unwrap();
    assert_eq!(rel.state, RelationshipState::Active);
    assert_eq!(rel.ends_at, Some(ends + 60 * DAY));
    assert!(rel.reminders_sent.is_empty(), "reminders start over");
    w.now = ends + 53 * DAY;
    assert_eq!(
        sweep(&mut w).mails.len(),
        1,
        "reminded again in the new period"
    );
}

#[test]
fn without_a_duration_active_relationships_never_end() {
    let mut w = World::new();
    make_active(&mut w, PARTNER1, ALICE);
    w.now += 10 * 365 * DAY;
    assert!(sweep(&mut w).relationships.is_empty());
    assert_eq!(
        w.store.state("northwind", ALICE),
        Some(RelationshipState::Active)
    );
}

/// A [`StoreView`] that counts how the timer sweep reads: one record at a
/// time (a round trip each on PostgreSQL) or in batches and pages.
struct CountingView<'a> {
    inner: &'a MemStore,
    single_invitations: std::cell::Cell<usize>,
    invitation_batches: std::cell::Cell<usize>,
    single_relationships: std::cell::Cell<usize>,
    pages: std::cell::Cell<usize>,
    whole_scans: std::cell::Cell<usize>,
}

impl StoreView for CountingView<'_> {
    fn relationship(
        &self,
        partner: &str,
        customer: &str,
    ) -> liaison_core::effects::Result<Option<Relationship>> {
        self.single_relationships
            .set(self.single_relationships.get() + 1);
        self.inner.relationship(partner, customer)
    }
    fn relationships_of(&self, partner: &str) -> liaison_core::effects::Result<Vec<Relationship>> {
        self.inner.relationships_of(partner)
    }
    fn relationships_with(
        &self,
        customer: &str,
    ) -> liaison_core::effects::Result<Vec<Relationship>> {
        self.inner.relationships_with(customer)
    }
    fn invitation(
        &self,
        id: u64,
    ) -> liaison_core::effects::Result<Option<liaison_core::model::invitation::Invitation>> {
        self.single_invitations
            .set(self.single_invitations.get() + 1);
        self.inner.invitation(id)
    }
    fn invitations(
        &self,
        ids: &[u64],
    ) -> liaison_core::effects::Result<Vec<Option<liaison_core::model::invitation::Invitation>>>
    {
        self.invitation_batches
            .set(self.invitation_batches.get() + 1);
        self.inner.invitations(ids)
    }
    fn relationships_by_key(
        &self,
        keys: &[(&str, &str)],
    ) -> liaison_core::effects::Result<Vec<Option<Relationship>>> {
        self.inner.relationships_by_key(keys)
    }
    fn relationship_summaries_after(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> liaison_core::effects::Result<Vec<liaison_core::model::relationship::RelationshipSummary>>
    {
        self.pages.set(self.pages.get() + 1);
        self.inner.relationship_summaries_after(after, limit)
    }
    fn all_relationship_summaries(
        &self,
    ) -> liaison_core::effects::Result<Vec<liaison_core::model::relationship::RelationshipSummary>>
    {
        self.whole_scans.set(self.whole_scans.get() + 1);
        self.inner.all_relationship_summaries()
    }
    fn invitation_by_message_id(&self, m: &str) -> liaison_core::effects::Result<Option<u64>> {
        self.inner.invitation_by_message_id(m)
    }
    fn all_relationships(&self) -> liaison_core::effects::Result<Vec<Relationship>> {
        self.inner.all_relationships()
    }
    fn ticket(
        &self,
        id: u64,
    ) -> liaison_core::effects::Result<Option<liaison_core::model::ticket::Ticket>> {
        self.inner.ticket(id)
    }
    fn ticket_by_message_id(&self, m: &str) -> liaison_core::effects::Result<Option<u64>> {
        self.inner.ticket_by_message_id(m)
    }
    fn tickets_of(
        &self,
        partner: &str,
    ) -> liaison_core::effects::Result<Vec<liaison_core::model::ticket::Ticket>> {
        self.inner.tickets_of(partner)
    }
    fn last_ticket_id(&self) -> liaison_core::effects::Result<u64> {
        self.inner.last_ticket_id()
    }
    fn sent_mail(&self, m: &str) -> liaison_core::effects::Result<Option<OutgoingMail>> {
        self.inner.sent_mail(m)
    }
}

/// The sweep over a store larger than one page: it reads the summaries a
/// page at a time and each page's invitations in one batch (a read per
/// invited relationship was 100 000 round trips on PostgreSQL at 1 000 000
/// relationships), and it decides what a relationship-by-relationship
/// reading decides: the expired invitations, the due reminders, nothing
/// else.
#[test]
fn the_sweep_reads_by_page_and_batch_and_finds_exactly_what_is_due() {
    use liaison_core::model::invitation::{Invitation, InvitationKind};
    let mut w = World::with_config("[lifecycle]\nrelationship_days = 40\nreminder_days = [30]\n");
    let page = liaison_core::decide::SWEEP_PAGE;
    let total = 2 * page + 345;
    let mut expected: Vec<(String, &str)> = vec![];
    for i in 0..total {
        let partner = if i % 2 == 0 { "northwind" } else { "p2" };
        let customer = format!("c{i:05}@contoso.test");
        // Every third invited; of those, two in three ran out (a restore
        // request never expires by time). Every seventh of the others is
        // active with an end date: one in four of those within the reminder.
        let (state, invitation, ends_at) = match i % 3 {
            0 => {
                let expires = if i % 9 == 0 { w.now + DAY } else { w.now - 1 };
                let kind = if i % 27 == 3 {
                    InvitationKind::Restore
                } else {
                    InvitationKind::Invitation
                };
                (RelationshipState::Invited, Some((kind, expires)), None)
            }
            _ if i % 7 == 0 => {
                let days = if i % 4 == 0 { 10 } else { 35 };
                (RelationshipState::Active, None, Some(w.now + days * DAY))
            }
            _ => (RelationshipState::Active, None, None),
        };
        let id = i as u64 + 1;
        if let Some((kind, expires)) = invitation {
            if kind == InvitationKind::Invitation && expires < w.now {
                expected.push((customer.clone(), "expired"));
            }
            w.store.invitations.insert(
                id,
                Invitation {
                    id,
                    kind,
                    partner: partner.into(),
                    customer: customer.clone(),
                    customer_name: None,
                    locale: "en".into(),
                    created: w.now - 31 * DAY,
                    expires,
                    message_id: format!("inv{i}@liaison.test"),
                    draft: false,
                    bounced: None,
                    approval_link: None,
                },
            );
        }
        if ends_at.is_some_and(|e| e <= w.now + 30 * DAY) {
            expected.push((customer.clone(), "active"));
        }
        w.store.relationships.insert(
            (partner.into(), customer.clone()),
            Relationship {
                partner: partner.into(),
                customer,
                customer_name: None,
                locale: "en".into(),
                state,
                since: w.now - 31 * DAY,
                invitation_id: invitation.map(|_| id),
                support_contact: None,
                ends_at,
                reminders_sent: vec![],
                history: vec![],
                gdap: None,
            },
        );
    }
    let view = CountingView {
        inner: &w.store,
        single_invitations: Default::default(),
        invitation_batches: Default::default(),
        single_relationships: Default::default(),
        pages: Default::default(),
        whole_scans: Default::default(),
    };
    let d = liaison_core::decide::expire_due(
        &Context {
            config: &w.config,
            tokens: &w.key,
            now: w.now,
        },
        &view,
    )
    .unwrap();
    let mut got: Vec<(String, &str)> = d
        .relationships
        .iter()
        .map(|r| (r.customer.clone(), r.state.as_str()))
        .collect();
    got.sort();
    expected.sort();
    assert!(expected.len() > 400, "{}", expected.len());
    assert_eq!(got, expected);
    assert_eq!(d.mails.len(), expected.len());
    // Reminders went out for the active ones, and each is remembered.
    assert!(d
        .relationships
        .iter()
        .filter(|r| r.state == RelationshipState::Active)
        .all(|r| r.reminders_sent == [30]));
    // How it read: three pages (the last one short), one invitation batch
    // per page and one for the decision, never a record at a time, and
    // never every summary at once.
    assert_eq!(view.pages.get(), 3);
    assert_eq!(view.whole_scans.get(), 0);
    assert_eq!(view.single_invitations.get(), 0);
    assert_eq!(view.single_relationships.get(), 0);
    assert_eq!(view.invitation_batches.get(), 4);
}
