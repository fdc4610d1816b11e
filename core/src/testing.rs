//! The one in-memory store, for tests of the decision core (the
//! workspace's `tests/workflow_core*.rs`), the fuzz targets and the
//! benchmarks. Behind the `testing` feature: the daemon never uses it.
//!
//! It keeps exactly what the decision code reads through [`StoreView`], in
//! ordered maps so two snapshots compare with `==`, and [`MemStore::apply`]
//! writes a [`Decision`] the way the shell's `Store::commit` would
//! (relationships, invitations, tickets, and the sent Message-ID →
//! invitation/ticket maps used for threading).

use crate::decide::Decision;
use crate::effects::{OutgoingMail, Result, StoreView};
use crate::mail::inbound::InboundMail;
use crate::model::invitation::Invitation;
use crate::model::relationship::{Relationship, RelationshipState, RelationshipSummary};
use crate::model::ticket::Ticket;
use std::collections::BTreeMap;

/// State the decision reads, in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemStore {
    /// (partner id, customer address) → relationship.
    pub relationships: BTreeMap<(String, String), Relationship>,
    /// Invitation id → invitation.
    pub invitations: BTreeMap<u64, Invitation>,
    /// Sent Message-ID → invitation id.
    pub threads: BTreeMap<String, u64>,
    /// Ticket id → ticket.
    pub tickets: BTreeMap<u64, Ticket>,
    /// Message-ID → ticket id.
    pub ticket_threads: BTreeMap<String, u64>,
    /// Message-ID → the composed mail Liaison sent (tests that check the
    /// known-original matching put them here; `apply` has only plans).
    pub sent_mails: BTreeMap<String, OutgoingMail>,
}

impl StoreView for MemStore {
    fn relationship(&self, partner: &str, customer: &str) -> Result<Option<Relationship>> {
        Ok(self
            .relationships
            .get(&(partner.to_string(), customer.to_string()))
            .cloned())
    }

    fn relationships_of(&self, partner: &str) -> Result<Vec<Relationship>> {
        // Keys are (partner, customer), so this is ordered by customer.
        Ok(self
            .relationships
            .values()
            .filter(|r| r.partner == partner)
            .cloned()
            .collect())
    }

    fn relationships_with(&self, customer: &str) -> Result<Vec<Relationship>> {
        Ok(self
            .relationships
            .values()
            .filter(|r| r.customer == customer)
            .cloned()
            .collect())
    }

    fn invitation(&self, id: u64) -> Result<Option<Invitation>> {
        Ok(self.invitations.get(&id).cloned())
    }

    fn invitation_by_message_id(&self, message_id: &str) -> Result<Option<u64>> {
        Ok(self.threads.get(message_id).copied())
    }

    fn all_relationships(&self) -> Result<Vec<Relationship>> {
        Ok(self.relationships.values().cloned().collect())
    }

    fn relationship_summaries_after(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<RelationshipSummary>> {
        use std::ops::Bound;
        // Keys are (partner, customer): the summaries' order.
        let start = match after {
            Some((p, c)) => Bound::Excluded((p.to_string(), c.to_string())),
            None => Bound::Unbounded,
        };
        Ok(self
            .relationships
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, r)| RelationshipSummary::from(r))
            .collect())
    }

    fn ticket(&self, id: u64) -> Result<Option<Ticket>> {
        Ok(self.tickets.get(&id).cloned())
    }

    fn ticket_by_message_id(&self, message_id: &str) -> Result<Option<u64>> {
        Ok(self.ticket_threads.get(message_id).copied())
    }

    fn tickets_of(&self, partner: &str) -> Result<Vec<Ticket>> {
        Ok(self
            .tickets
            .values()
            .filter(|t| t.partner == partner)
            .cloned()
            .collect())
    }

    fn last_ticket_id(&self) -> Result<u64> {
        Ok(self.tickets.keys().max().copied().unwrap_or(0))
    }

    fn sent_mail(&self, message_id: &str) -> Result<Option<OutgoingMail>> {
        Ok(self.sent_mails.get(message_id).cloned())
    }
}

impl MemStore {
    /// A store holding one relationship and its invitation (threaded by the
    /// invitation's Message-ID).
    pub fn with(relationship: Relationship, invitation: Invitation) -> Self {
        let mut s = MemStore::default();
        s.threads
            .insert(invitation.message_id.clone(), invitation.id);
        s.invitations.insert(invitation.id, invitation);
        s.relationships.insert(
            (relationship.partner.clone(), relationship.customer.clone()),
            relationship,
        );
        s
    }

    /// Writes what a decision changes, as `Store::commit` would.
    pub fn apply(&mut self, d: &Decision) {
        for r in &d.relationships {
            self.relationships
                .insert((r.partner.clone(), r.customer.clone()), r.clone());
        }
        for i in &d.invitations {
            self.invitations.insert(i.id, i.clone());
        }
        for t in &d.tickets {
            for mid in &t.message_ids {
                self.ticket_threads.insert(mid.clone(), t.id);
            }
            self.tickets.insert(t.id, t.clone());
        }
        for m in &d.mails {
            if let Some(inv) = m.invitation {
                self.threads.insert(m.message_id.clone(), inv);
            }
            if let Some(t) = m.ticket {
                self.ticket_threads.insert(m.message_id.clone(), t);
            }
        }
    }

    /// The state of one relationship, if there is one.
    pub fn state(&self, partner: &str, customer: &str) -> Option<RelationshipState> {
        self.relationships
            .get(&(partner.to_string(), customer.to_string()))
            .map(|r| r.state)
    }
}

/// A valid configuration for tests of the decision: two partners
/// (`northwind`, English, partner1@; `p2`, Korean, partner2@), the
/// `liaison.test` addresses of the loopback mail stack, and a 30-day
/// invitation lifetime. Append sections (`[lifecycle]`, …) to vary it.
pub const CONFIG: &str = r#"
[store]
path = "/tmp/liaison-workflow-core-test"

[[inbox]]
name = "commands"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "commands@liaison.test"
password = "pw"

[smtp]
host = "127.0.0.1"
port = 2525
tls = "none"

[addresses]
commands = "commands@liaison.test"
invitations = "invites@liaison.test"
support_desk = "helpdesk@liaison.test"

[security]
token_secret = "workflow-core-test-secret-0123456789"
invitation_ttl_days = 30

[[partner]]
id = "northwind"
name = "Northwind Traders"
emails = ["partner1@liaison.test"]
locale = "en"

[[partner]]
id = "p2"
name = "Fabrikam Partners"
emails = ["partner2@liaison.test"]
locale = "ko"
"#;

/// A plain mail as [`crate::mail::inbound::parse`] would give it: one
/// text part, no references, no authentication results, nothing automatic.
/// `key` is the Message-ID; tests change the fields they exercise.
pub fn mail(message_id: &str, from: &str, to: &str, subject: &str, text: &str) -> InboundMail {
    InboundMail {
        message_id: Some(message_id.to_string()),
        key: message_id.to_string(),
        from: Some(from.to_string()),
        from_name: None,
        other_from: vec![],
        recipients: vec![to.to_string()],
        delivered_to: vec![],
        subject: subject.to_string(),
        in_reply_to: vec![],
        references: vec![],
        text: text.to_string(),
        automatic: None,
        size: text.len(),
        attachments: vec![],
        authentication_results: vec![],
        dsn: None,
    }
}
