//! Handlebars templates for every mail Liaison sends, per locale, with a
//! subject, a plain-text part and (for customer mails) an HTML part.
//!
//! Files live in `templates/<locale>/<name>.subject.hbs`, `<name>.txt.hbs`
//! and `<name>.html.hbs`. Text and HTML are rendered by two registries: the
//! text one does not HTML-escape (a customer name "A&B" must stay "A&B" in
//! the plain part), the HTML one does. Both run in strict mode, and every
//! template is rendered once with sample data at load time, so a missing
//! variable or file stops the daemon at start-up instead of producing blank
//! text in a customer's mailbox.

use handlebars::Handlebars;
use serde_json::json;

/// Where template texts come from. The shell reads them from the
/// templates folder (`liaison::files::TemplateDir`); tests may give strings.
pub trait TemplateSource {
    /// The text of `<locale>/<file>` (`en/invitation.txt.hbs`), `Ok(None)`
    /// when there is no such template.
    fn read(&self, locale: &str, file: &str) -> Result<Option<String>, TemplateError>;
    /// Where the texts come from (a folder's path), for messages.
    fn origin(&self) -> String;
}

/// Errors loading or rendering templates.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A required template file is missing or unreadable.
    #[error("template file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A template does not compile.
    #[error("template {name} ({locale}) does not compile: {reason}")]
    Syntax {
        /// Template name.
        name: String,
        /// Locale.
        locale: String,
        /// Handlebars' message.
        reason: String,
    },
    /// Rendering failed (e.g. a variable the template uses was not given).
    #[error("template {name} ({locale}) cannot be rendered: {reason}")]
    Render {
        /// Template name.
        name: String,
        /// Locale.
        locale: String,
        /// Handlebars' message.
        reason: String,
    },
}

/// Every mail Liaison sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateName {
    /// Invitation to grant delegated admin permissions (to the customer).
    Invitation,
    /// Results of a command mail (to the partner).
    Transcript,
    /// Confirmation of an acceptance (to the customer).
    AcceptedCustomer,
    /// Notice of an acceptance (to the partner).
    AcceptedPartner,
    /// Confirmation of a decline (to the customer).
    DeclinedCustomer,
    /// Notice of a decline (to the partner).
    DeclinedPartner,
    /// "Please answer accept or decline" (to the customer).
    Clarify,
    /// "You already answered" (to the customer).
    AlreadyAnswered,
    /// "We could not tie your mail to an invitation" (to the customer).
    NotMatched,
    /// Request to restore removed permissions (to the customer).
    Restore,
    /// The customer removed the permissions (to the partner).
    PermissionsRemovedPartner,
    /// Acknowledgement of the removal (to the customer).
    PermissionsRemovedCustomer,
    /// The partner ended the relationship (to the customer).
    RemovedCustomer,
    /// An invitation expired unanswered (to the partner).
    ExpiredPartner,
    /// A fixed-duration relationship ends soon (to the partner).
    EndingSoonPartner,
    /// A fixed-duration relationship ended or was extended (to the partner).
    RelationshipEndedPartner,
    /// A support request forwarded to the partner (relationship active).
    SupportForwardPartner,
    /// Acknowledgement of a forwarded support request (to the customer).
    SupportAckCustomer,
    /// A new ticket, to the support desk.
    TicketOpenedDesk,
    /// Ticket number, to the customer.
    TicketOpenedCustomer,
    /// Notice of a new ticket, to the partner.
    TicketOpenedPartner,
    /// A follow-up relayed to the support desk.
    TicketRelayDesk,
    /// The support desk's answer relayed to the customer.
    TicketRelayCustomer,
    /// The support desk's answer relayed to the partner.
    TicketRelayPartner,
    /// A closed ticket, to the customer.
    TicketClosedCustomer,
    /// A closed ticket, to the support desk.
    TicketClosedDesk,
    /// An invitation could not be delivered (to the partner).
    BouncedPartner,
    /// Another mail could not be delivered to one of its recipients (to
    /// the partner).
    DeliveryFailedPartner,
    /// Mails held back by a cap (to the partner).
    HeldPartner,
    /// "Thanks, we will confirm as soon as Microsoft shows the approval"
    /// (to the customer, whose mailed "accept" came before Graph said so).
    AwaitingMicrosoftCustomer,
    /// A Microsoft Graph call for a GDAP relationship failed for good (to
    /// the partner): the request, an access assignment, a termination.
    GdapProblemPartner,
}

impl TemplateName {
    /// All templates.
    pub const ALL: [TemplateName; 31] = [
        TemplateName::Invitation,
        TemplateName::Transcript,
        TemplateName::AcceptedCustomer,
        TemplateName::AcceptedPartner,
        TemplateName::DeclinedCustomer,
        TemplateName::DeclinedPartner,
        TemplateName::Clarify,
        TemplateName::AlreadyAnswered,
        TemplateName::NotMatched,
        TemplateName::Restore,
        TemplateName::PermissionsRemovedPartner,
        TemplateName::PermissionsRemovedCustomer,
        TemplateName::RemovedCustomer,
        TemplateName::ExpiredPartner,
        TemplateName::EndingSoonPartner,
        TemplateName::RelationshipEndedPartner,
        TemplateName::SupportForwardPartner,
        TemplateName::SupportAckCustomer,
        TemplateName::TicketOpenedDesk,
        TemplateName::TicketOpenedCustomer,
        TemplateName::TicketOpenedPartner,
        TemplateName::TicketRelayDesk,
        TemplateName::TicketRelayCustomer,
        TemplateName::TicketRelayPartner,
        TemplateName::TicketClosedCustomer,
        TemplateName::TicketClosedDesk,
        TemplateName::BouncedPartner,
        TemplateName::DeliveryFailedPartner,
        TemplateName::HeldPartner,
        TemplateName::AwaitingMicrosoftCustomer,
        TemplateName::GdapProblemPartner,
    ];

    /// File name stem.
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateName::Invitation => "invitation",
            TemplateName::Transcript => "transcript",
            TemplateName::AcceptedCustomer => "accepted_customer",
            TemplateName::AcceptedPartner => "accepted_partner",
            TemplateName::DeclinedCustomer => "declined_customer",
            TemplateName::DeclinedPartner => "declined_partner",
            TemplateName::Clarify => "clarify",
            TemplateName::AlreadyAnswered => "already_answered",
            TemplateName::NotMatched => "not_matched",
            TemplateName::Restore => "restore",
            TemplateName::PermissionsRemovedPartner => "permissions_removed_partner",
            TemplateName::PermissionsRemovedCustomer => "permissions_removed_customer",
            TemplateName::RemovedCustomer => "removed_customer",
            TemplateName::ExpiredPartner => "expired_partner",
            TemplateName::EndingSoonPartner => "ending_soon_partner",
            TemplateName::RelationshipEndedPartner => "relationship_ended_partner",
            TemplateName::SupportForwardPartner => "support_forward_partner",
            TemplateName::SupportAckCustomer => "support_ack_customer",
            TemplateName::TicketOpenedDesk => "ticket_opened_desk",
            TemplateName::TicketOpenedCustomer => "ticket_opened_customer",
            TemplateName::TicketOpenedPartner => "ticket_opened_partner",
            TemplateName::TicketRelayDesk => "ticket_relay_desk",
            TemplateName::TicketRelayCustomer => "ticket_relay_customer",
            TemplateName::TicketRelayPartner => "ticket_relay_partner",
            TemplateName::TicketClosedCustomer => "ticket_closed_customer",
            TemplateName::TicketClosedDesk => "ticket_closed_desk",
            TemplateName::BouncedPartner => "bounced_partner",
            TemplateName::DeliveryFailedPartner => "delivery_failed_partner",
            TemplateName::HeldPartner => "held_partner",
            TemplateName::AwaitingMicrosoftCustomer => "awaiting_microsoft_customer",
            TemplateName::GdapProblemPartner => "gdap_problem_partner",
        }
    }

    /// Parses a file name stem.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Customer mails must have an HTML part; partner mails may.
    pub fn needs_html(self) -> bool {
        !matches!(
            self,
            TemplateName::Transcript
                | TemplateName::AcceptedPartner
                | TemplateName::DeclinedPartner
                | TemplateName::PermissionsRemovedPartner
                | TemplateName::ExpiredPartner
                | TemplateName::EndingSoonPartner
                | TemplateName::RelationshipEndedPartner
                | TemplateName::SupportForwardPartner
                | TemplateName::TicketOpenedDesk
                | TemplateName::TicketOpenedPartner
                | TemplateName::TicketRelayDesk
                | TemplateName::TicketRelayPartner
                | TemplateName::TicketClosedDesk
                | TemplateName::BouncedPartner
                | TemplateName::DeliveryFailedPartner
                | TemplateName::HeldPartner
                | TemplateName::GdapProblemPartner
        )
    }

    /// Sample variables: every variable the workflow passes, used to check
    /// templates at load time and for previews.
    pub fn sample_vars(self) -> serde_json::Value {
        let common = json!({
            "partner_name": "Northwind Traders",
            "customer_email": "alice@contoso.test",
            "customer_name": "Contoso Ltd",
            "original_subject": "Re: Invitation",
        });
        let extra = match self {
            TemplateName::Invitation | TemplateName::Restore => json!({
                "token": "sampletokensampletokensampletokensampletoken1",
                "subject_ref": "[ref:sampletokensampletokensampletokensampletoken1]",
                "reply_address": "invites+sampletoken@liaison.test",
                "accept_link": "mailto:invites+sampletoken@liaison.test?subject=accept&body=accept",
                "decline_link": "mailto:invites+sampletoken@liaison.test?subject=decline&body=decline",
                "expires": "2027-02-23",
                "approval_link": "https://admin.microsoft.com/AdminPortal/Home#/partners/invitation/granularAdminRelationships/7e1a0b4c-1d2e-4f50-8a6b-9c0d1e2f3a4b-00000002",
                "roles": ["Helpdesk Administrator", "User Administrator"],
                "duration_days": 730,
                "graph": true,
            }),
            TemplateName::Transcript => json!({
                "results": [
                    {"command": "invite alice@contoso.test", "ok": true, "result": "invited alice@contoso.test"},
                    {"command": "frobnicate", "ok": false, "result": "unknown command `frobnicate`"},
                ],
                "note": "Only the first 50 commands were run.",
            }),
            TemplateName::AcceptedCustomer
            | TemplateName::AcceptedPartner
            | TemplateName::DeclinedCustomer
            | TemplateName::DeclinedPartner
            | TemplateName::PermissionsRemovedPartner
            | TemplateName::PermissionsRemovedCustomer
            | TemplateName::RemovedCustomer => json!({
                "state": "active",
                "at": "2026-11-25T12:00:00Z",
                "restore": false,
                "support_contact": "support@northwind.test",
                "approval_link": "https://admin.microsoft.com/AdminPortal/Home#/partners/invitation/granularAdminRelationships/x",
                "verified": true,
                "source": "graph",
                "graph_status": "terminated",
            }),
            TemplateName::AwaitingMicrosoftCustomer => json!({
                "approval_link": "https://admin.microsoft.com/AdminPortal/Home#/partners/invitation/granularAdminRelationships/x",
                "graph_status": "approvalPending",
            }),
            TemplateName::GdapProblemPartner => json!({
                "what": "the GDAP relationship request",
                "reason": "Microsoft Graph denied create delegatedAdminRelationship (403 Authorization_RequestDenied: Insufficient privileges to complete the operation.)",
                "invitation_held": true,
                "at": "2026-11-25T12:00:00Z",
            }),
            TemplateName::ExpiredPartner => json!({
                "invited_at": "2026-08-27T12:00:00Z",
                "expired_at": "2026-11-25T12:00:00Z",
            }),
            TemplateName::EndingSoonPartner => json!({
                "days_left": 7,
                "ends_at": "2026-12-02T12:00:00Z",
                "auto_extend": false,
            }),
            TemplateName::RelationshipEndedPartner => json!({
                "extended": true,
                "ended_at": "2026-11-25T12:00:00Z",
                "ends_at": "2027-11-25T12:00:00Z",
            }),
            TemplateName::SupportForwardPartner | TemplateName::SupportAckCustomer => json!({
                "subject": "Cannot sign in",
                "text": "Since this morning nobody can sign in.",
                "omitted_attachments": ["big.zip (30000000 bytes)"],
                "at": "2026-11-25T12:00:00Z",
            }),
            TemplateName::TicketOpenedDesk
            | TemplateName::TicketOpenedCustomer
            | TemplateName::TicketOpenedPartner => json!({
                "ticket_id": "T-000123",
                "partner_id": "northwind",
                "partner_email": "partner1@liaison.test",
                "support_contact": "support@northwind.test",
                "subject": "Cannot sign in",
                "text": "Since this morning nobody can sign in.",
                "omitted_attachments": [],
                "previous_ticket": "T-000100",
                "at": "2026-11-25T12:00:00Z",
            }),
            TemplateName::TicketRelayDesk
            | TemplateName::TicketRelayCustomer
            | TemplateName::TicketRelayPartner => json!({
                "ticket_id": "T-000123",
                "author": "customer",
                "from": "alice@contoso.test",
                "subject": "Cannot sign in",
                "text": "It works again, thank you.",
                "omitted_attachments": [],
                "reopened": false,
            }),
            TemplateName::BouncedPartner => json!({
                "reason": "5.1.1 (user unknown)",
                "at": "2026-11-25T12:00:00Z",
            }),
            TemplateName::DeliveryFailedPartner => json!({
                "recipient": "support@northwind.test",
                "subject": "New ticket T-000123: Cannot sign in",
                "reason": "550 5.1.1 <support@northwind.test>: Recipient address rejected",
                "at": "2026-11-25T12:00:00Z",
            }),
            TemplateName::HeldPartner => json!({
                "sender": "alice@contoso.test",
                "what": "support requests",
                "cap": 5,
                "reason": "more than 5 support requests from alice@contoso.test this hour",
                "at": "2026-11-25T12:00:00Z",
            }),
            TemplateName::TicketClosedCustomer | TemplateName::TicketClosedDesk => json!({
                "ticket_id": "T-000123",
                "subject": "Cannot sign in",
                "note": "Solved after the password reset.",
                "at": "2026-11-25T12:00:00Z",
            }),
            TemplateName::Clarify => json!({}),
            TemplateName::AlreadyAnswered => json!({"state": "active"}),
            TemplateName::NotMatched => json!({"reason": "no_reference"}),
        };
        let mut v = common;
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        v
    }
}

/// A rendered mail body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject line (one line).
    pub subject: String,
    /// Plain-text part.
    pub text: String,
    /// HTML part, if the template has one.
    pub html: Option<String>,
}

/// All loaded templates.
pub struct Templates {
    text: Handlebars<'static>,
    html: Handlebars<'static>,
    origin: String,
}

fn key(name: TemplateName, locale: &str, part: &str) -> String {
    format!("{locale}/{}.{part}", name.as_str())
}

impl Templates {
    /// Loads every template for every supported locale from `source` and
    /// checks each renders with sample data.
    pub fn from_source(source: &dyn TemplateSource) -> Result<Self, TemplateError> {
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        for locale in crate::config::SUPPORTED_LOCALES {
            for name in TemplateName::ALL {
                for (part, required) in [
                    ("subject", true),
                    ("txt", true),
                    ("html", name.needs_html()),
                ] {
                    let reg = if part == "html" { &mut html } else { &mut text };
                    let file = format!("{}.{part}.hbs", name.as_str());
                    let source = match source.read(locale, &file)? {
                        Some(s) => s,
                        None if !required => continue,
                        None => {
                            return Err(TemplateError::File {
                                path: format!("{}/{locale}/{file}", source.origin()),
                                reason: "missing (every locale needs it)".into(),
                            })
                        }
                    };
                    reg.register_template_string(&key(name, locale, part), source)
                        .map_err(|e| TemplateError::Syntax {
                            name: format!("{}.{part}", name.as_str()),
                            locale: locale.to_string(),
                            reason: e.to_string(),
                        })?;
                }
            }
        }
        let t = Templates {
            text,
            html,
            origin: source.origin(),
        };
        for locale in crate::config::SUPPORTED_LOCALES {
            for name in TemplateName::ALL {
                t.render(name, locale, &name.sample_vars())?;
            }
        }
        Ok(t)
    }

    /// Where the templates were loaded from (a folder's path).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders one mail. Unknown locales fall back to English.
    pub fn render(
        &self,
        name: TemplateName,
        locale: &str,
        vars: &serde_json::Value,
    ) -> Result<Rendered, TemplateError> {
        let locale = if crate::config::SUPPORTED_LOCALES.contains(&locale) {
            locale
        } else {
            "en"
        };
        let err = |part: &str, e: handlebars::RenderError| TemplateError::Render {
            name: format!("{}.{part}", name.as_str()),
            locale: locale.to_string(),
            reason: e.to_string(),
        };
        // One context for all three parts: `render` would copy `vars` into
        // a new one for each.
        let ctx = handlebars::Context::wraps(vars).map_err(|e| err("context", e))?;
        let subject = self
            .text
            .render_with_context(&key(name, locale, "subject"), &ctx)
            .map_err(|e| err("subject", e))?;
        // A subject is one line whatever the template or the data contain:
        // a newline there would start a new header.
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = self
            .text
            .render_with_context(&key(name, locale, "txt"), &ctx)
            .map_err(|e| err("txt", e))?;
        let html_key = key(name, locale, "html");
        let html = if self.html.has_template(&html_key) {
            Some(
                self.html
                    .render_with_context(&html_key, &ctx)
                    .map_err(|e| err("html", e))?,
            )
        } else {
            None
        };
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Template texts given as strings: `locale/file` → text.
    struct Texts(HashMap<String, String>);

    impl TemplateSource for Texts {
        fn read(&self, locale: &str, file: &str) -> Result<Option<String>, TemplateError> {
            Ok(self.0.get(&format!("{locale}/{file}")).cloned())
        }
        fn origin(&self) -> String {
            "(test texts)".into()
        }
    }

    #[test]
    fn a_missing_required_template_is_named() {
        let err = Templates::from_source(&Texts(HashMap::new()))
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            err.contains("(test texts)/en/invitation.subject.hbs"),
            "{err}"
        );
    }

    #[test]
    fn a_template_that_does_not_compile_is_named_with_its_locale() {
        let texts = HashMap::from([(
            "en/invitation.subject.hbs".to_string(),
            "{{#if}}".to_string(),
        )]);
        let err = Templates::from_source(&Texts(texts))
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            err.contains("invitation.subject") && err.contains("(en)"),
            "{err}"
        );
    }
}
