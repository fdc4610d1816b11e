//! Turning a [`MailPlan`] and its rendered template into the RFC 5322 bytes
//! that go into the outbox.
//!
//! Every mail carries `Auto-Submitted: auto-replied` (or `auto-generated`)
//! and Liaison's own `X-Loop`, so well-behaved auto-responders stay quiet
//! (RFC 3834) and Liaison recognises its own mail if it ever comes back.

use crate::config::Config;
use crate::decide::{MailPlan, Sender};
use crate::effects::OutgoingMail;
use crate::render::templates::{Rendered, TemplateName, Templates};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};

/// Errors composing a mail.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// Rendering the template failed.
    #[error(transparent)]
    Template(#[from] crate::render::templates::TemplateError),
    /// An address could not be used in a header.
    #[error("cannot use address `{address}` in a mail header: {reason}")]
    Address {
        /// The address.
        address: String,
        /// lettre's message.
        reason: String,
    },
    /// The message could not be built.
    #[error("cannot build mail {message_id}: {reason}")]
    Build {
        /// Its Message-ID.
        message_id: String,
        /// lettre's message.
        reason: String,
    },
}

/// The X-Loop value Liaison puts on every mail (and refuses to answer).
pub fn x_loop(config: &Config) -> String {
    format!("liaison@{}", config.addresses.message_id_domain())
}

fn mailbox(name: Option<&str>, addr: &str) -> Result<Mailbox, ComposeError> {
    let address =
        addr.parse()
            .map_err(|e: lettre::address::AddressError| ComposeError::Address {
                address: addr.to_string(),
                reason: e.to_string(),
            })?;
    Ok(Mailbox::new(name.map(str::to_string), address))
}

fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// How many References ids a mail carries at most. The list is copied from
/// inbound mail, whose sender chooses its length: unbounded, a mail with
/// thousands of ids would make every reply to it as large.
pub const MAX_REFERENCES: usize = 20;

/// The ids to put in References, at most [`MAX_REFERENCES`]: the thread's
/// first id and its latest ones (RFC 5322 §3.6.4 lets a long list be
/// shortened so); ids too long for a header line are left out.
pub fn bounded_references(refs: &[String]) -> Vec<&str> {
    let usable: Vec<&str> = refs
        .iter()
        .map(String::as_str)
        .filter(|r| !r.is_empty() && r.len() <= 250)
        .collect();
    if usable.len() <= MAX_REFERENCES {
        return usable;
    }
    let mut kept = vec![usable[0]];
    kept.extend_from_slice(&usable[usable.len() - (MAX_REFERENCES - 1)..]);
    kept
}

/// Renders and builds one planned mail. `now` is the Date header (Unix
/// seconds); `ids` keys the envelope sender, the mail's own bounce address
/// ([`crate::mail::dsn::return_path`]), so that only a real bounce of this mail to
/// these recipients can be believed.
pub fn compose(
    config: &Config,
    templates: &Templates,
    ids: &crate::model::token::IdKey,
    plan: &MailPlan,
    now: u64,
) -> Result<OutgoingMail, ComposeError> {
    let Rendered {
        subject,
        text,
        html,
    } = templates.render(plan.template, &plan.locale, &plan.vars)?;
    let from_addr = match plan.from {
        Sender::Commands => &config.addresses.commands,
        Sender::Invitations => &config.addresses.invitations,
    };
    let mut b = lettre::Message::builder()
        .from(mailbox(Some(&config.addresses.from_name), from_addr)?)
        .subject(subject.clone())
        .message_id(Some(format!("<{}>", plan.message_id)))
        // The date from `now`, written as a raw header: lettre's typed Date
        // takes a SystemTime, and without any Date it would read the clock.
        .raw_header(raw_header("Date", crate::model::time::rfc5322(now)));
    for to in &plan.to {
        b = b.to(mailbox(None, to)?);
    }
    if let Some(r) = &plan.reply_to {
        b = b.reply_to(mailbox(Some(&config.addresses.from_name), r)?);
    }
    if let Some(irt) = &plan.in_reply_to {
        b = b.in_reply_to(format!("<{irt}>"));
    }
    if !plan.references.is_empty() {
        let refs: Vec<String> = bounded_references(&plan.references)
            .into_iter()
            .map(|r| format!("<{r}>"))
            .collect();
        b = b.references(refs.join(" "));
    }
    let auto = if plan.in_reply_to.is_some() && plan.template != TemplateName::Invitation {
        "auto-replied"
    } else {
        "auto-generated"
    };
    b = b
        .raw_header(raw_header("Auto-Submitted", auto.into()))
        .raw_header(raw_header("X-Loop", x_loop(config)))
        .raw_header(raw_header("X-Auto-Response-Suppress", "All".into()))
        .raw_header(raw_header(
            "X-Liaison-Template",
            format!("{}/{}", plan.locale, plan.template.as_str()),
        ));
    let text_part = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(text);
    let body = match html {
        Some(html) => Body::Multi(
            MultiPart::alternative().singlepart(text_part).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html),
            ),
        ),
        None => Body::Single(text_part),
    };
    let built = if plan.attachments.is_empty() {
        match body {
            Body::Multi(m) => b.multipart(m),
            Body::Single(p) => b.singlepart(p),
        }
    } else {
        let mut mixed = match body {
            Body::Multi(m) => MultiPart::mixed().multipart(m),
            Body::Single(p) => MultiPart::mixed().singlepart(p),
        };
        for a in &plan.attachments {
            let ct = ContentType::parse(&a.content_type)
                .unwrap_or_else(|_| ContentType::parse("application/octet-stream").expect("valid"));
            mixed = mixed.singlepart(Attachment::new(a.name.clone()).body(a.data.clone(), ct));
        }
        b.multipart(mixed)
    }
    .map_err(|e| ComposeError::Build {
        message_id: plan.message_id.clone(),
        reason: e.to_string(),
    })?;
    let raw = String::from_utf8(built.formatted()).map_err(|e| ComposeError::Build {
        message_id: plan.message_id.clone(),
        reason: format!("not 7-bit clean: {e}"),
    })?;
    Ok(OutgoingMail {
        message_id: plan.message_id.clone(),
        envelope_from: crate::mail::dsn::return_path(
            ids,
            &config.addresses.invitations,
            &plan.message_id,
            &plan.to,
        ),
        recipients: plan.to.clone(),
        raw,
        subject,
        invitation: plan.invitation,
        ticket: plan.ticket,
    })
}

/// The body before attachments are added.
enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_keep_the_first_and_the_latest_ids() {
        let few: Vec<String> = (0..5).map(|i| format!("m{i}@x.test")).collect();
        assert_eq!(
            bounded_references(&few),
            few.iter().map(String::as_str).collect::<Vec<_>>()
        );
        let many: Vec<String> = (0..5000).map(|i| format!("m{i}@x.test")).collect();
        let kept = bounded_references(&many);
        assert_eq!(kept.len(), MAX_REFERENCES);
        assert_eq!(kept[0], "m0@x.test");
        assert_eq!(kept[1], "m4981@x.test");
        assert_eq!(*kept.last().unwrap(), "m4999@x.test");
        let long = vec!["a".repeat(5000), "ok@x.test".into()];
        assert_eq!(bounded_references(&long), vec!["ok@x.test"]);
    }
}
