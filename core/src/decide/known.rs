//! The mails Liaison sent that a reply answers, for the reply splitter.
//!
//! A customer's reply quotes the invitation (or the clarification, the
//! ticket mail) it answers. Liaison kept that mail when it queued it; found
//! through the Message-IDs the reply names, its text lets the splitter find
//! the quoted copy by content, in any client's format and language
//! ([`crate::mail::reply::KnownOriginal`]). Without one (a first contact, a
//! mail no longer kept) the splitter's heuristics decide alone.

use crate::effects::StoreView;
use crate::mail::inbound::InboundMail;
use crate::mail::reply::{KnownOriginal, SentMail};

use super::WorkflowError;

/// At most this many Message-IDs are looked up per mail: the ones named
/// first (`also`, such as the invitation's), In-Reply-To, then the last
/// References (the newest mails of the thread).
const MAX_LOOKUPS: usize = 6;

/// The sent mails `mail` refers to, plus the ones with the ids in `also`.
pub(super) fn known_original(
    view: &dyn StoreView,
    mail: &InboundMail,
    also: &[&str],
) -> Result<KnownOriginal, WorkflowError> {
    let mut ids: Vec<&str> = Vec::with_capacity(MAX_LOOKUPS);
    let newest_references = mail.references.iter().rev().map(String::as_str);
    for id in also
        .iter()
        .copied()
        .chain(mail.in_reply_to.iter().map(String::as_str))
        .chain(newest_references)
    {
        if ids.len() >= MAX_LOOKUPS {
            break;
        }
        if !id.is_empty() && !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut sent = Vec::new();
    for id in ids {
        if let Some(m) = view.sent_mail(id)? {
            sent.extend(SentMail::from_raw(m.raw.as_bytes()));
        }
    }
    Ok(KnownOriginal::new(&sent))
}
