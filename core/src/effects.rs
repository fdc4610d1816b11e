//! What a decision reads and writes, as plain data: the read interface
//! [`StoreView`] the decision code queries, and [`Changes`], everything one
//! decision writes, applied atomically by the shell's store.
//!
//! No storage engine appears here: a backend (sled in the shell, the
//! in-memory store of [`crate::testing`]) turns its own failures into a
//! [`ReadError`].

use crate::model::invitation::Invitation;
use crate::model::relationship::{Relationship, RelationshipState, RelationshipSummary};
use crate::model::ticket::Ticket;
use serde::{Deserialize, Serialize};

/// A read the decision needed failed in the storage backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The backend could not read (disk, IO, connection); its own words.
    #[error("{0}")]
    Backend(String),
    /// A record could not be decoded.
    #[error("store record {key} is corrupt: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What failed.
        reason: String,
    },
}

/// Result alias for reads.
pub type Result<T> = std::result::Result<T, ReadError>;

/// Where an inbox's processing stands on the IMAP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The mailbox's UIDVALIDITY when `last_uid` was recorded.
    pub uid_validity: u32,
    /// The highest UID whose processing is committed.
    pub last_uid: u32,
}

/// What happened to one inbound message (kept for dedupe and audit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processed {
    /// Message-ID or body hash.
    pub key: String,
    /// Unix seconds.
    pub at: u64,
    /// What the message was (stored as its name, e.g. `"quarantined"`).
    pub class: ProcessedClass,
    /// What was done, or why nothing was.
    pub summary: String,
}

/// What a processed message was: the kind of its
/// [`crate::decide::MailClass`], or what the shell made of it before any
/// decision (a duplicate, an imported row). Stored by name, so the records
/// of older versions read the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessedClass {
    /// Commands from a configured partner.
    Command,
    /// A customer's answer or message.
    Customer,
    /// Nothing to do and nobody to answer.
    Ignored,
    /// Changes that time alone caused.
    Timer,
    /// Set aside with a reason; `quarantine release` may decide it again.
    Quarantined,
    /// A delivery failure of one of Liaison's mails.
    Bounce,
    /// The same message (key) was processed before.
    Duplicate,
    /// Commands of a `liaison import` batch.
    Import,
    /// A customer's answer on the landing page (no mail).
    Web,
    /// What Microsoft Graph showed of a GDAP relationship.
    Graph,
}

impl ProcessedClass {
    /// The stored and printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessedClass::Command => "command",
            ProcessedClass::Customer => "customer",
            ProcessedClass::Ignored => "ignored",
            ProcessedClass::Timer => "timer",
            ProcessedClass::Quarantined => "quarantined",
            ProcessedClass::Bounce => "bounce",
            ProcessedClass::Duplicate => "duplicate",
            ProcessedClass::Import => "import",
            ProcessedClass::Web => "web",
            ProcessedClass::Graph => "graph",
        }
    }
}

impl std::fmt::Display for ProcessedClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mail ready to hand to SMTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMail {
    /// Its Message-ID (no angle brackets); deterministic, so a resend after a
    /// crash is recognisably the same mail.
    pub message_id: String,
    /// Envelope sender.
    pub envelope_from: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// The full RFC 5322 message.
    pub raw: String,
    /// Its subject, for logs and the demo.
    pub subject: String,
    /// Invitation this mail belongs to, so replies to it thread back.
    pub invitation: Option<u64>,
    /// Ticket this mail belongs to, so replies to it thread into it.
    #[serde(default)]
    pub ticket: Option<u64>,
}

/// An outbox entry: a mail plus delivery bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Monotonic id; order of sending.
    pub id: u64,
    /// The mail.
    pub mail: OutgoingMail,
    /// Attempts so far.
    pub attempts: u32,
    /// Unix seconds before which no new attempt is made.
    pub not_before: u64,
    /// Last error, if an attempt failed.
    pub last_error: Option<String>,
    /// Recipients that have accepted the mail: a retry never sends to them
    /// again (SMTP answers each RCPT on its own, so one mail can be
    /// accepted for some recipients and refused, or deferred, for others).
    #[serde(default)]
    pub delivered: Vec<String>,
    /// Recipients refused for good, with the server's answer.
    #[serde(default)]
    pub refused: Vec<(String, String)>,
}

impl OutboxEntry {
    /// The recipients still to deliver to: neither accepted nor refused.
    pub fn pending_recipients(&self) -> Vec<String> {
        self.mail
            .recipients
            .iter()
            .filter(|r| !self.delivered.contains(r) && !self.refused.iter().any(|(a, _)| a == *r))
            .cloned()
            .collect()
    }
}

/// A mail a cap held back: kept whole, with why and when, until the
/// operator releases it into the outbox (`liaison held release`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMail {
    /// Its number (from the same sequence as outbox ids).
    pub id: u64,
    /// Unix seconds when it was held.
    pub at: u64,
    /// Why it was held.
    pub reason: String,
    /// The partner it concerns, if any (told at most once an hour).
    pub partner: Option<String>,
    /// The composed mail, as it would have been sent. When `kept` is false
    /// only its headers' worth is here (subject, recipients) and `raw` is
    /// empty.
    pub mail: OutgoingMail,
    /// Whether the mail is kept whole and can be released; false when the
    /// held store was full (`security.held_store_bytes`).
    #[serde(default = "kept_by_default")]
    pub kept: bool,
}

/// Held mails written before the held store was bounded were all kept.
fn kept_by_default() -> bool {
    true
}

/// A mail to hold, as a commit gives it (the store numbers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Unix seconds.
    pub at: u64,
    /// Why.
    pub reason: String,
    /// The partner it concerns, if any.
    pub partner: Option<String>,
    /// The composed mail (`raw` empty when not kept).
    pub mail: OutgoingMail,
    /// Whether `mail` is kept whole (see [`HeldMail::kept`]).
    pub kept: bool,
}

/// One record of a backup: the key (hex, since some keys hold binary ids)
/// and the JSON value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportRecord {
    /// The key, hex-encoded.
    pub key: String,
    /// The record.
    pub value: serde_json::Value,
}

/// Counts of what the store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Processed messages by class.
    pub processed: std::collections::BTreeMap<String, u64>,
    /// Mails waiting in the outbox.
    pub outbox_pending: u64,
    /// Mails handed to SMTP (or failed for good).
    pub outbox_sent: u64,
    /// Relationships.
    pub relationships: u64,
    /// Tickets.
    pub tickets: u64,
    /// Mails held back by a cap, waiting for `liaison held release`.
    #[serde(default)]
    pub held: u64,
}

/// Everything one decision writes, applied atomically.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Relationship records to insert or replace.
    pub relationships: Vec<Relationship>,
    /// Invitation records to insert or replace.
    pub invitations: Vec<Invitation>,
    /// Ticket records to insert or replace.
    pub tickets: Vec<Ticket>,
    /// Mails to queue.
    pub outbox: Vec<OutgoingMail>,
    /// Messages to mark processed.
    pub processed: Vec<Processed>,
    /// Inbox cursor to advance: (inbox name, cursor).
    pub cursor: Option<(String, Cursor)>,
    /// Replies sent: (address, hour since the epoch), one per reply.
    pub replies: Vec<(String, u64)>,
    /// Raw bytes of messages quarantined now, kept so they can be released
    /// (stored as bytes, not encoded; the caller applies the size caps).
    pub quarantined_raw: Vec<(String, Vec<u8>)>,
    /// Quarantined messages released now: their records are replaced.
    pub released: Vec<String>,
    /// Mails a cap held back now.
    pub held: Vec<Hold>,
    /// Held mails released now (by id): their records are removed (the
    /// mail itself goes in `outbox`).
    pub released_held: Vec<u64>,
    /// Support requests passed now: (customer, hour since the epoch).
    pub support_requests: Vec<(String, u64)>,
    /// Partners told now that mails are held: (partner id, hour).
    pub held_reported: Vec<(String, u64)>,
}

/// One page of a partner's relationship summaries
/// ([`StoreView::relationship_summaries_page`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SummaryPage {
    /// How many summaries match in all (on every page).
    pub total: usize,
    /// This page's, ordered by customer.
    pub rows: Vec<RelationshipSummary>,
}

/// Read access used by the workflow.
pub trait StoreView {
    /// One relationship.
    fn relationship(&self, partner: &str, customer: &str) -> Result<Option<Relationship>>;
    /// All relationships of a partner, ordered by customer.
    fn relationships_of(&self, partner: &str) -> Result<Vec<Relationship>>;
    /// All relationships of a customer address, with any partner.
    fn relationships_with(&self, customer: &str) -> Result<Vec<Relationship>>;
    /// An invitation by id.
    fn invitation(&self, id: u64) -> Result<Option<Invitation>>;
    /// Several invitations by id, in the order of `ids`. A store across a
    /// network reads them in one round trip (the timer sweep asks for every
    /// invited relationship's); the default reads them one by one.
    fn invitations(&self, ids: &[u64]) -> Result<Vec<Option<Invitation>>> {
        ids.iter().map(|id| self.invitation(*id)).collect()
    }
    /// Several relationships by (partner, customer), in the order of
    /// `keys`; like [`StoreView::invitations`], one round trip where that
    /// matters.
    fn relationships_by_key(&self, keys: &[(&str, &str)]) -> Result<Vec<Option<Relationship>>> {
        keys.iter()
            .map(|(partner, customer)| self.relationship(partner, customer))
            .collect()
    }
    /// The invitation a sent Message-ID belongs to.
    fn invitation_by_message_id(&self, message_id: &str) -> Result<Option<u64>>;
    /// Every relationship.
    fn all_relationships(&self) -> Result<Vec<Relationship>>;
    /// The summaries of a partner's relationships, ordered by customer.
    fn relationship_summaries_of(&self, partner: &str) -> Result<Vec<RelationshipSummary>> {
        Ok(self
            .relationships_of(partner)?
            .iter()
            .map(RelationshipSummary::from)
            .collect())
    }
    /// One page of a partner's summaries, ordered by customer: those in
    /// `state` (every state when `None`), the first `skip` of them left
    /// out, at most `limit`; with how many there are in all. A store that
    /// keeps counts answers without reading the rows before or after the
    /// page (`list` at 10 000 relationships a partner).
    fn relationship_summaries_page(
        &self,
        partner: &str,
        state: Option<RelationshipState>,
        skip: usize,
        limit: usize,
    ) -> Result<SummaryPage> {
        let mut all = self.relationship_summaries_of(partner)?;
        all.retain(|r| state.is_none_or(|s| r.state == s));
        let total = all.len();
        let rows = all.into_iter().skip(skip).take(limit).collect();
        Ok(SummaryPage { total, rows })
    }
    /// The summaries of every relationship, ordered by partner and customer.
    fn all_relationship_summaries(&self) -> Result<Vec<RelationshipSummary>> {
        Ok(self
            .all_relationships()?
            .iter()
            .map(RelationshipSummary::from)
            .collect())
    }
    /// Up to `limit` summaries, in the order of
    /// [`StoreView::all_relationship_summaries`], of the relationships that
    /// come after `after` (partner, customer), or from the first when
    /// `None`: the timer sweep reads the whole store a page at a time, so
    /// its memory does not grow with the store. Fewer than `limit` means
    /// there are no more. The default filters every summary; a store reads
    /// just the page.
    fn relationship_summaries_after(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<RelationshipSummary>> {
        Ok(self
            .all_relationship_summaries()?
            .into_iter()
            .filter(|s| after.is_none_or(|a| (s.partner.as_str(), s.customer.as_str()) > a))
            .take(limit)
            .collect())
    }
    /// How many relationships each partner has in each state (states with
    /// none left out), ordered by partner.
    fn relationship_counts(&self) -> Result<Vec<(String, RelationshipState, u64)>> {
        let mut counts: std::collections::BTreeMap<
            (String, &'static str),
            (RelationshipState, u64),
        > = Default::default();
        for r in self.all_relationships()? {
            counts
                .entry((r.partner, r.state.as_str()))
                .or_insert((r.state, 0))
                .1 += 1;
        }
        Ok(counts
            .into_iter()
            .map(|((p, _), (s, n))| (p, s, n))
            .collect())
    }
    /// A ticket by number.
    fn ticket(&self, id: u64) -> Result<Option<Ticket>>;
    /// The ticket a Message-ID (inbound or outbound) belongs to.
    fn ticket_by_message_id(&self, message_id: &str) -> Result<Option<u64>>;
    /// All tickets of a partner, oldest first.
    fn tickets_of(&self, partner: &str) -> Result<Vec<Ticket>>;
    /// The highest ticket number given so far (0 when none).
    fn last_ticket_id(&self) -> Result<u64>;
    /// How many mails wait in the outbox, for the transcript's estimate of
    /// when paced mail goes out (see `pacing`); a view without an outbox
    /// has none.
    fn outbox_pending(&self) -> Result<u64> {
        Ok(0)
    }
    /// The mail Liaison queued or sent with this Message-ID (no angle
    /// brackets), if it belongs to an invitation or a ticket and is still
    /// kept: the reply splitter finds its quoted copy in an answer by its
    /// content ([`crate::mail::reply::KnownOriginal`]).
    fn sent_mail(&self, message_id: &str) -> Result<Option<OutgoingMail>>;
}
