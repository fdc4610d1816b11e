//! The landing page's decisions: what an invitation link shows, and what a
//! POST of its form does. Pure, like the rest of the core: the token, the
//! stored state and the time in; a page and a [`Decision`] out.
//!
//! Mail scanners (Safe Links, Proofpoint, Mimecast, Gmail) fetch every
//! link in a mail before the customer sees it, and some render it with
//! JavaScript. So a GET (or HEAD) only ever *shows* ([`invitation_page`]);
//! only a POST of the page's form changes state ([`web_answer`]), and that
//! form carries a [`form_token`] that only a rendered page holds. The answer
//! goes through exactly the path an emailed answer takes
//! (`customer::answer_invitation`), so it has the same effects, notices and
//! history; only the origin differs (no Message-ID, the notices thread
//! under the invitation mail).
//!
//! The token in the link is the invitation's token (the one in its
//! Reply-To and subject), with the same checks: HMAC over purpose, id,
//! expiry and recipient, in constant time. Anything forged, expired or
//! superseded is "not found", with the words of the `not_matched` mail.

use super::customer::{answer_invitation, Answered, Origin};
use super::{Context, Decision, MessageIds, WorkflowError};
use crate::effects::StoreView;
use crate::mail::intent::Intent;
use crate::model::invitation::{Invitation, InvitationKind};
use crate::model::relationship::{Relationship, RelationshipState};
use crate::model::token::{self, TokenError};

/// The two buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebAnswer {
    /// "Accept" (for GDAP: "I have approved it in Microsoft's admin center").
    Accept,
    /// "Decline".
    Decline,
}

impl WebAnswer {
    /// The form value (`answer=accept`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "accept" => Some(WebAnswer::Accept),
            "decline" => Some(WebAnswer::Decline),
            _ => None,
        }
    }

    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebAnswer::Accept => "accept",
            WebAnswer::Decline => "decline",
        }
    }
}

/// Why a link shows the "not found" page (404). The names are the
/// `reason`s of the `not_matched` mail, whose words the page repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFound {
    /// Forged, damaged, or naming no invitation.
    NoReference,
    /// Genuine, but past its expiry.
    Expired,
    /// Genuine, but a newer invitation or request replaced it.
    Superseded,
}

impl NotFound {
    /// The `reason` template variable.
    pub fn reason(self) -> &'static str {
        match self {
            NotFound::NoReference => "no_reference",
            NotFound::Expired => "expired",
            NotFound::Superseded => "superseded",
        }
    }
}

/// What an invitation's page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// The question and its two buttons.
    Question,
    /// The relationship no longer waits for this answer: it is `state`
    /// (answered already, here or by mail, or changed since).
    Answered(RelationshipState),
    /// The answer cannot be given on the page: the token is a draft's (the
    /// partner saw it too) and this deployment authenticates such answers
    /// by mail, so the customer is asked to reply to the mail instead.
    ReplyByMail,
}

/// An invitation page: the invitation, its relationship and what to show.
#[derive(Debug, Clone, PartialEq)]
pub struct InvitationPage {
    /// What to show.
    pub state: PageState,
    /// The invitation the link names.
    pub invitation: Invitation,
    /// Its relationship, as stored.
    pub relationship: Relationship,
    /// The partner's display name (shown as text, escaped).
    pub partner_name: String,
    /// The anti-forgery value the page's form must send back.
    pub form_token: String,
    /// The partner's Microsoft approval link, when issue 14's data
    /// supplies one (see [`approval_link`]).
    pub approval_link: Option<String>,
    /// The roles the approval grants, where known.
    pub roles: Vec<String>,
}

/// The link's lookup: a page, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A genuine, current invitation.
    Page(Box<InvitationPage>),
    /// Nothing to show; `locale` is the invitation's when the token was
    /// genuine (expired or superseded), so the page speaks its language.
    NotFound {
        /// Why.
        why: NotFound,
        /// The invitation's locale, when known.
        locale: Option<String>,
        /// The partner's name, when known.
        partner_name: Option<String>,
    },
}

/// The anti-forgery value of the page for `token`: keyed with the id key
/// (so nobody without the secret computes it from the link alone) and
/// bound to the link's token and invitation.
pub fn form_token(ctx: &Context, token: &str, invitation_id: u64) -> String {
    let h = ctx.tokens.ids().digest(
        "web-form-v1",
        &[&token.to_ascii_lowercase(), &invitation_id.to_string()],
    );
    data_encoding::BASE32_NOPAD
        .encode(&h[..16])
        .to_ascii_lowercase()
}

/// Compares two strings in time that depends on their lengths only.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether `given` is the anti-forgery value of `page`.
pub fn form_token_ok(page: &InvitationPage, given: &str) -> bool {
    constant_time_eq(&page.form_token, given)
}

/// The partner's Microsoft approval link and the roles it grants, for the
/// page. HOOK (issue 14): the GDAP work stores the approval link (and roles)
/// with the invitation or the partner; return them from here and the page
/// shows them, with the GDAP wording on the accept button. Until then
/// there is none, and the page shows the plain question.
pub fn approval_link(_ctx: &Context, inv: &Invitation) -> (Option<String>, Vec<String>) {
    // The roles of a GDAP request are on its relationship record; the
    // invitation carries the link, which is what the page needs to show.
    (inv.approval_link.clone(), Vec::new())
}

/// Whether the relationship still waits for an answer to `inv`.
fn awaits_answer(inv: &Invitation, rel: &Relationship) -> bool {
    rel.invitation_id == Some(inv.id)
        && match inv.kind {
            InvitationKind::Invitation => rel.state == RelationshipState::Invited,
            InvitationKind::Restore => rel.state == RelationshipState::PermissionsRemoved,
        }
}

/// Looks up what the link with `token` shows. Reads the store only.
pub fn invitation_page(
    ctx: &Context,
    view: &dyn StoreView,
    token: &str,
) -> Result<Lookup, WorkflowError> {
    let not_found = |why, inv: Option<&Invitation>| {
        let partner_name = inv.map(|i| {
            ctx.config
                .partner(&i.partner)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| i.partner.clone())
        });
        Ok(Lookup::NotFound {
            why,
            locale: inv.map(|i| i.locale.clone()),
            partner_name,
        })
    };
    let Ok(claims) = token::peek(token) else {
        return not_found(NotFound::NoReference, None);
    };
    let Some(inv) = view.invitation(claims.invitation_id)? else {
        return not_found(NotFound::NoReference, None);
    };
    match ctx
        .tokens
        .verify(token, inv.kind.purpose(), &inv.customer, ctx.now)
    {
        Ok(_) => {}
        Err(TokenError::Expired) => return not_found(NotFound::Expired, Some(&inv)),
        // Forged or altered: say nothing about the invitation it names.
        Err(_) => return not_found(NotFound::NoReference, None),
    }
    let Some(partner) = ctx.config.partner(&inv.partner) else {
        return not_found(NotFound::NoReference, None);
    };
    let Some(rel) = view.relationship(&inv.partner, &inv.customer)? else {
        return not_found(NotFound::NoReference, None);
    };
    if rel.invitation_id != Some(inv.id) {
        return not_found(NotFound::Superseded, Some(&inv));
    }
    if inv.expires < ctx.now {
        return not_found(NotFound::Expired, Some(&inv));
    }
    let state = if !awaits_answer(&inv, &rel) {
        PageState::Answered(rel.state)
    } else if crate::decide::trust::needs_authenticated_from(
        &ctx.config.security,
        crate::decide::trust::Claim::CustomerAnswer(credential(&inv)),
    ) {
        PageState::ReplyByMail
    } else {
        PageState::Question
    };
    let (approval_link, roles) = approval_link(ctx, &inv);
    Ok(Lookup::Page(Box::new(InvitationPage {
        state,
        form_token: form_token(ctx, token, inv.id),
        partner_name: partner.name.clone(),
        invitation: inv,
        relationship: rel,
        approval_link,
        roles,
    })))
}

/// What the link's token is, as a credential: the page has no sender to
/// authenticate, so the token alone must do, as for a mailed answer.
fn credential(inv: &Invitation) -> crate::decide::trust::Credential {
    if inv.draft {
        crate::decide::trust::Credential::DraftToken
    } else {
        crate::decide::trust::Credential::Token
    }
}

/// The key of an answer from the page: its processed record, and what its
/// Message-IDs derive from. One per invitation and answer, so a replay
/// after a crash derives the same ids.
pub fn web_key(invitation_id: u64, answer: WebAnswer) -> String {
    format!("web:{invitation_id}:{}", answer.as_str())
}

/// The decision for a POST of the page's form with `answer`, when the page
/// would show the question (see [`invitation_page`]); `None` when it would
/// not (not found, already answered, reply by mail), which the caller
/// shows instead. The caller has checked the anti-forgery value.
pub fn web_answer(
    ctx: &Context,
    view: &dyn StoreView,
    token: &str,
    answer: WebAnswer,
) -> Result<Option<Decision>, WorkflowError> {
    let Lookup::Page(page) = invitation_page(ctx, view, token)? else {
        return Ok(None);
    };
    if page.state != PageState::Question {
        return Ok(None);
    }
    let inv = &page.invitation;
    let key = web_key(inv.id, answer);
    let mut ids = MessageIds::new(&key, ctx);
    let origin = Origin {
        from: &inv.customer,
        how: "answered on the web page".into(),
        // No mail: the history entry has no Message-ID. HOOK (issue 14):
        // its source is `web` (see `answer_invitation`).
        message_id: None,
        in_reply_to: Some(inv.message_id.clone()),
        references: vec![inv.message_id.clone()],
        subject: String::new(),
        source: crate::model::relationship::HistorySource::Web,
    };
    let intent = match answer {
        WebAnswer::Accept => Intent::Accept,
        WebAnswer::Decline => Intent::Decline,
    };
    Ok(
        match answer_invitation(ctx, view, inv, &origin, intent, &mut ids)? {
            Answered::Decided(d) => Some(d),
            // Only an unclear answer is a support request; the buttons are
            // never unclear.
            Answered::SupportRequest(_) => None,
        },
    )
}

/// How long a ticket's status link works, from the ticket's opening.
pub const TICKET_PAGE_DAYS: u64 = 365;

/// The token of ticket `ticket`'s status page (`/t/<token>`): the same
/// HMAC token as an invitation's, for the purpose "ticket page", bound to
/// the ticket number and its customer, expiring [`TICKET_PAGE_DAYS`] after
/// the ticket was opened. Deterministic, so every mail about the ticket
/// carries the same link.
pub fn ticket_token(ctx: &Context, ticket: &crate::model::ticket::Ticket) -> String {
    ctx.tokens.issue(
        token::Purpose::TicketPage,
        ticket.id,
        ticket.opened + TICKET_PAGE_DAYS * 86_400,
        &ticket.customer,
    )
}

/// A ticket's status page: what the customer may read of their own ticket
/// (its number, subject, state and when who wrote; not the texts, which a
/// forwarded link must not show to whoever it reaches).
#[derive(Debug, Clone, PartialEq)]
pub struct TicketPage {
    /// The ticket.
    pub ticket: crate::model::ticket::Ticket,
    /// The partner's display name.
    pub partner_name: String,
    /// The customer's locale (their relationship's), else the partner's.
    pub locale: String,
}

/// Looks up the status page of `token`; `None` (404) when it is forged,
/// expired or names no ticket.
pub fn ticket_page(
    ctx: &Context,
    view: &dyn StoreView,
    token: &str,
) -> Result<Option<TicketPage>, WorkflowError> {
    let Ok(claims) = token::peek(token) else {
        return Ok(None);
    };
    let Some(ticket) = view.ticket(claims.invitation_id)? else {
        return Ok(None);
    };
    if ctx
        .tokens
        .verify(token, token::Purpose::TicketPage, &ticket.customer, ctx.now)
        .is_err()
    {
        return Ok(None);
    }
    let partner = ctx.config.partner(&ticket.partner);
    let locale = view
        .relationship(&ticket.partner, &ticket.customer)?
        .map(|r| r.locale)
        .or_else(|| partner.map(|p| p.locale.clone()))
        .unwrap_or_else(|| "en".into());
    Ok(Some(TicketPage {
        partner_name: partner
            .map(|p| p.name.clone())
            .unwrap_or_else(|| ticket.partner.clone()),
        ticket,
        locale,
    }))
}

/// The landing page's link for invitation token `token`, when `[web]` is
/// on (the `page_link` of invitation and restore mails).
pub fn page_link(ctx: &Context, token: &str) -> Option<String> {
    ctx.config.web.as_ref().map(|w| w.invitation_link(token))
}

/// The status page's link of ticket `id` (opened at `opened`, for
/// `customer`), when `[web]` is on (the `status_link` of the customer's
/// ticket mails).
pub fn status_link(ctx: &Context, id: u64, opened: u64, customer: &str) -> Option<String> {
    let web = ctx.config.web.as_ref()?;
    let token = ctx.tokens.issue(
        token::Purpose::TicketPage,
        id,
        opened + TICKET_PAGE_DAYS * 86_400,
        customer,
    );
    Some(web.ticket_link(&token))
}

/// Sets `status_link` in a customer mail's variables.
pub(super) fn with_status_link(vars: &mut serde_json::Value, link: Option<String>) {
    if let Some(obj) = vars.as_object_mut() {
        obj.insert("status_link".into(), serde_json::json!(link));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SecretSource};
    use crate::model::relationship::RelationshipEvent;
    use crate::render::templates::TemplateName;
    use crate::testing::MemStore;

    const NOW: u64 = 1_780_000_000;
    const ALICE: &str = "alice@contoso.test";

    struct NoSecrets;
    impl SecretSource for NoSecrets {
        fn env(&self, _: &str) -> Option<String> {
            None
        }
        fn file(&self, _: &std::path::Path) -> Result<String, String> {
            Err("no files in tests".into())
        }
    }

    fn config(extra: &str) -> Config {
        let text = crate::testing::CONFIG.replace(
            "invitation_ttl_days = 30\n",
            &format!("invitation_ttl_days = 30\n{extra}"),
        );
        Config::parse(
            &format!("{text}\n[web]\nlisten = \"127.0.0.1:8080\"\npublic_base_url = \"https://l.example\"\n"),
            std::path::Path::new("test.toml"),
            &NoSecrets,
        )
        .unwrap()
    }

    /// A store with alice's relationship in `state` and its current
    /// invitation of `kind`, and that invitation's token.
    fn store(
        ctx: &Context,
        state: RelationshipState,
        kind: InvitationKind,
        draft: bool,
    ) -> (MemStore, String) {
        let inv = Invitation {
            id: 42,
            kind,
            partner: "northwind".into(),
            customer: ALICE.into(),
            customer_name: None,
            locale: "en".into(),
            created: NOW - 100,
            expires: NOW + 86_400,
            message_id: "liaison.k1.inv@liaison.test".into(),
            draft,
            bounced: None,
            approval_link: None,
        };
        let rel = Relationship {
            partner: "northwind".into(),
            customer: ALICE.into(),
            customer_name: None,
            locale: "en".into(),
            state,
            since: NOW - 100,
            invitation_id: Some(42),
            support_contact: None,
            ends_at: None,
            reminders_sent: vec![],
            history: vec![],
            gdap: None,
        };
        let token = ctx.tokens.issue(kind.purpose(), 42, inv.expires, ALICE);
        (MemStore::with(rel, inv), token)
    }

    /// The decision's context at `NOW`; the token key lives as long as
    /// the test.
    fn ctx(config: &Config) -> Context<'_> {
        let key =
            crate::model::token::TokenKey::new(config.security.token_secret.expose().as_bytes());
        Context {
            config,
            tokens: Box::leak(Box::new(key)),
            now: NOW,
        }
    }

    #[test]
    fn a_web_accept_is_the_mailed_accept_threaded_under_the_invitation() {
        let config = config("");
        let ctx = ctx(&config);
        let (mut view, token) = store(
            &ctx,
            RelationshipState::Invited,
            InvitationKind::Invitation,
            false,
        );
        let Lookup::Page(page) = invitation_page(&ctx, &view, &token).unwrap() else {
            panic!("a page")
        };
        assert_eq!(page.state, PageState::Question);
        assert_eq!(page.form_token, form_token(&ctx, &token, 42));
        assert_eq!(
            page_link(&ctx, &token),
            Some(format!("https://l.example/i/{token}"))
        );
        let d = web_answer(&ctx, &view, &token, WebAnswer::Accept)
            .unwrap()
            .unwrap();
        assert_eq!(d.relationships[0].state, RelationshipState::Active);
        let last = d.relationships[0].history.last().unwrap();
        assert_eq!(
            (last.actor.as_str(), last.message_id.as_deref()),
            (ALICE, None)
        );
        let templates: Vec<TemplateName> = d.mails.iter().map(|m| m.template).collect();
        assert_eq!(
            templates,
            [
                TemplateName::AcceptedCustomer,
                TemplateName::AcceptedPartner
            ]
        );
        assert_eq!(
            d.mails[0].in_reply_to.as_deref(),
            Some("liaison.k1.inv@liaison.test")
        );
        // The same answer decided again derives the same ids (crash replay).
        let again = web_answer(&ctx, &view, &token, WebAnswer::Accept)
            .unwrap()
            .unwrap();
        assert_eq!(again.mails[0].message_id, d.mails[0].message_id);
        view.apply(&d);
        // Answered: the page says so and a POST decides nothing.
        let Lookup::Page(page) = invitation_page(&ctx, &view, &token).unwrap() else {
            panic!("a page")
        };
        assert_eq!(page.state, PageState::Answered(RelationshipState::Active));
        assert_eq!(
            web_answer(&ctx, &view, &token, WebAnswer::Decline).unwrap(),
            None
        );
    }

    #[test]
    fn a_restore_request_accepted_on_the_page_restores() {
        let config = config("");
        let ctx = ctx(&config);
        let (view, token) = store(
            &ctx,
            RelationshipState::PermissionsRemoved,
            InvitationKind::Restore,
            false,
        );
        let d = web_answer(&ctx, &view, &token, WebAnswer::Accept)
            .unwrap()
            .unwrap();
        assert_eq!(d.relationships[0].state, RelationshipState::Active);
        assert_eq!(
            crate::model::relationship::transition(
                Some(RelationshipState::PermissionsRemoved),
                RelationshipEvent::RestoreAccepted
            ),
            Ok(RelationshipState::Active)
        );
        // An invitation token does not open a restore request's page.
        let wrong = ctx.tokens.issue(
            crate::model::token::Purpose::Invitation,
            42,
            NOW + 86_400,
            ALICE,
        );
        assert!(matches!(
            invitation_page(&ctx, &view, &wrong).unwrap(),
            Lookup::NotFound {
                why: NotFound::NoReference,
                locale: None,
                ..
            }
        ));
    }

    #[test]
    fn a_drafts_token_answers_by_mail_when_senders_are_authenticated() {
        let config = config("trusted_authserv_id = \"mx.liaison.test\"\n");
        let ctx = ctx(&config);
        let (view, token) = store(
            &ctx,
            RelationshipState::Invited,
            InvitationKind::Invitation,
            true,
        );
        let Lookup::Page(page) = invitation_page(&ctx, &view, &token).unwrap() else {
            panic!("a page")
        };
        assert_eq!(page.state, PageState::ReplyByMail);
        assert_eq!(
            web_answer(&ctx, &view, &token, WebAnswer::Accept).unwrap(),
            None
        );
        // Without the MX check nothing could be authenticated anyway: the
        // draft's token answers as by mail.
        let plain = self::config("");
        let ctx = self::ctx(&plain);
        let (view, token) = store(
            &ctx,
            RelationshipState::Invited,
            InvitationKind::Invitation,
            true,
        );
        assert!(web_answer(&ctx, &view, &token, WebAnswer::Accept)
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_status_link_carries_the_ticket_token() {
        let key = crate::model::token::TokenKey::new(b"a test secret that is long enough");
        let t = key.issue(crate::model::token::Purpose::TicketPage, 7, 100, "a@b.test");
        assert!(key
            .verify(&t, crate::model::token::Purpose::TicketPage, "a@b.test", 50)
            .is_ok());
        assert!(key
            .verify(&t, crate::model::token::Purpose::Invitation, "a@b.test", 50)
            .is_err());
    }
}
