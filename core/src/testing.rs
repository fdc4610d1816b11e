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
use crate::effects::{Result, StoreView};
use crate::model::invitation::Invitation;
use crate::model::relationship::{Relationship, RelationshipState};
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
