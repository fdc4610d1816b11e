//! The relationship between a partner and one customer: its states, its
//! history, and the table of allowed transitions.
//!
//! This is the heart of the lifecycle and is pure data: [`transition`] takes
//! a current state and an event and answers with the next state or a refusal
//! that explains itself. Nothing here reads a clock or a store; callers pass
//! the time and the actor in.

use serde::{Deserialize, Serialize};

/// Where a partner–customer relationship stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationshipState {
    /// An invitation was sent and is not yet answered.
    Invited,
    /// The customer granted delegated admin permissions.
    Active,
    /// The customer declined the invitation.
    Declined,
    /// The invitation was not answered in time.
    Expired,
    /// The customer removed the partner's admin permissions; the partner
    /// still owes support.
    PermissionsRemoved,
    /// The partner ended the relationship.
    Removed,
}

impl RelationshipState {
    /// All states, in lifecycle order.
    pub const ALL: [RelationshipState; 6] = [
        RelationshipState::Invited,
        RelationshipState::Active,
        RelationshipState::Declined,
        RelationshipState::Expired,
        RelationshipState::PermissionsRemoved,
        RelationshipState::Removed,
    ];

    /// The snake_case name used in the store, the CLI and mails.
    pub fn as_str(self) -> &'static str {
        match self {
            RelationshipState::Invited => "invited",
            RelationshipState::Active => "active",
            RelationshipState::Declined => "declined",
            RelationshipState::Expired => "expired",
            RelationshipState::PermissionsRemoved => "permissions_removed",
            RelationshipState::Removed => "removed",
        }
    }

    /// Parses a snake_case name (as typed in `list STATE`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl std::fmt::Display for RelationshipState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to a relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationshipEvent {
    /// The partner sent (or re-sent after an end) an invitation.
    Invited,
    /// The customer accepted an invitation.
    Accepted,
    /// The customer accepted a request to restore removed permissions.
    RestoreAccepted,
    /// The customer declined.
    Declined,
    /// The invitation's time ran out.
    Expired,
    /// The customer removed the partner's admin permissions.
    PermissionsRemoved,
    /// The partner ended the relationship.
    Removed,
}

/// Why an event does not apply to the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The event repeats what already happened ("already accepted").
    #[error("the relationship is already {0}")]
    Already(RelationshipState),
    /// The answer is to a request that no longer applies: e.g. accepting
    /// the original invitation after the permissions were removed (only
    /// the current restore request can give them back).
    #[error("that request no longer applies: the relationship is {0}")]
    Superseded(RelationshipState),
    /// The event makes no sense in this state.
    #[error("cannot {event} a relationship that is {state}")]
    NotAllowed {
        /// The current state.
        state: RelationshipState,
        /// A verb for the event.
        event: &'static str,
    },
}

/// The transition table. `None` as the current state means no relationship
/// exists yet. Keep this in step with the table in the README.
pub fn transition(
    current: Option<RelationshipState>,
    event: RelationshipEvent,
) -> Result<RelationshipState, TransitionError> {
    use RelationshipEvent as E;
    use RelationshipState as S;
    let verb = match event {
        E::Invited => "invite",
        E::Accepted | E::RestoreAccepted => "accept",
        E::Declined => "decline",
        E::Expired => "expire",
        E::PermissionsRemoved => "remove permissions of",
        E::Removed => "remove",
    };
    match (current, event) {
        // A new invitation: nothing yet, or after an ending.
        (None | Some(S::Declined | S::Expired | S::Removed), E::Invited) => Ok(S::Invited),
        (Some(S::Invited), E::Accepted) => Ok(S::Active),
        (Some(S::Invited), E::Declined) => Ok(S::Declined),
        (Some(S::Invited), E::Expired) => Ok(S::Expired),
        // A relationship with a fixed duration reached its end.
        (Some(S::Active), E::Expired) => Ok(S::Expired),
        (Some(S::Active), E::PermissionsRemoved) => Ok(S::PermissionsRemoved),
        // Only accepting a restore request gives the permissions back; an
        // answer to the original invitation is one to a request that no
        // longer applies, however it was matched.
        (Some(S::PermissionsRemoved), E::RestoreAccepted) => Ok(S::Active),
        (Some(S::PermissionsRemoved), E::Accepted | E::Declined) => {
            Err(TransitionError::Superseded(S::PermissionsRemoved))
        }
        (Some(s), E::Removed) if s != S::Removed => Ok(S::Removed),
        (Some(S::Active), E::Accepted | E::RestoreAccepted) => {
            Err(TransitionError::Already(S::Active))
        }
        (Some(S::Declined), E::Declined) => Err(TransitionError::Already(S::Declined)),
        (Some(S::Invited), E::Invited) => Err(TransitionError::Already(S::Invited)),
        (Some(S::PermissionsRemoved), E::PermissionsRemoved) => {
            Err(TransitionError::Already(S::PermissionsRemoved))
        }
        (Some(state), _) => Err(TransitionError::NotAllowed { state, event: verb }),
        (None, _) => Err(TransitionError::NotAllowed {
            state: S::Removed,
            event: verb,
        }),
    }
}

/// Where a history entry came from: what `history` shows so a partner can
/// tell an activation claimed by mail from one Microsoft verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistorySource {
    /// A customer's mail (accept, decline, "I removed your permissions").
    Mail,
    /// A partner's command (by mail, or `liaison import`).
    Command,
    /// What Microsoft Graph showed of the GDAP relationship.
    Graph,
    /// The web interface.
    Web,
    /// Time alone (an invitation's lifetime, a fixed duration's end).
    Timer,
}

impl HistorySource {
    /// The name `history` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            HistorySource::Mail => "mail",
            HistorySource::Command => "command",
            HistorySource::Graph => "graph",
            HistorySource::Web => "web",
            HistorySource::Timer => "timer",
        }
    }
}

/// One line of a relationship's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Unix seconds.
    pub at: u64,
    /// State before (`None` for the first entry).
    pub from: Option<RelationshipState>,
    /// State after.
    pub to: RelationshipState,
    /// Who caused it: a partner or customer address, or `liaison` for timers.
    pub actor: String,
    /// Message-ID of the mail that caused it, when a mail did.
    pub message_id: Option<String>,
    /// Where it came from (`None` in entries written before sources were
    /// recorded).
    #[serde(default)]
    pub source: Option<HistorySource>,
}

/// A partner's relationship with one customer, with its full history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    /// Partner id from the config.
    pub partner: String,
    /// Customer address, lowercase.
    pub customer: String,
    /// Customer organisation name, if the partner gave one.
    pub customer_name: Option<String>,
    /// Locale of customer-facing mails.
    pub locale: String,
    /// Current state.
    pub state: RelationshipState,
    /// Unix seconds of the last state change.
    pub since: u64,
    /// The invitation (or restore request) currently in force.
    pub invitation_id: Option<u64>,
    /// Support contact copied on this customer's support traffic (`contact`).
    #[serde(default)]
    pub support_contact: Option<String>,
    /// Unix seconds at which an active relationship ends, when
    /// `lifecycle.relationship_days` is set.
    #[serde(default)]
    pub ends_at: Option<u64>,
    /// Reminders (days before the end) already sent for the current period.
    #[serde(default)]
    pub reminders_sent: Vec<u32>,
    /// Every transition, oldest first.
    pub history: Vec<HistoryEntry>,
    /// The GDAP relationship in Microsoft Graph, when Liaison asked for one.
    #[serde(default)]
    pub gdap: Option<crate::model::gdap::GdapLink>,
}

/// What lists and counts need of a relationship, without its history. The
/// store keeps one beside each full record, so listing ten thousand
/// relationships does not decode ten thousand histories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationshipSummary {
    /// Partner id from the config.
    pub partner: String,
    /// Customer address, lowercase.
    pub customer: String,
    /// Customer organisation name, if the partner gave one.
    pub customer_name: Option<String>,
    /// Current state.
    pub state: RelationshipState,
    /// Unix seconds of the last state change.
    pub since: u64,
    /// When an active relationship ends (fixed durations only).
    #[serde(default)]
    pub ends_at: Option<u64>,
    /// The invitation (or restore request) currently in force.
    #[serde(default)]
    pub invitation_id: Option<u64>,
    /// Its GDAP relationship in Microsoft Graph, if Liaison follows one.
    #[serde(default)]
    pub gdap: Option<GdapSummary>,
}

/// What lists show of a GDAP relationship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GdapSummary {
    /// Graph's id (none until Microsoft created the request).
    pub id: Option<String>,
    /// The status Graph showed last.
    pub status: Option<crate::model::gdap::GdapStatus>,
    /// Graph's end date.
    pub ends_at: Option<u64>,
    /// Whether Microsoft extends it.
    pub auto_extend: bool,
    /// Still followed (the sync reads it).
    pub open: bool,
}

impl From<&Relationship> for RelationshipSummary {
    fn from(r: &Relationship) -> Self {
        RelationshipSummary {
            partner: r.partner.clone(),
            customer: r.customer.clone(),
            customer_name: r.customer_name.clone(),
            state: r.state,
            since: r.since,
            ends_at: r.ends_at,
            invitation_id: r.invitation_id,
            gdap: r.gdap.as_ref().map(|g| GdapSummary {
                id: g.relationship_id.clone(),
                status: g.status,
                ends_at: g.ends_at,
                auto_extend: g.auto_extend,
                open: g.is_open(),
            }),
        }
    }
}

impl Relationship {
    /// Applies `event`, recording it in the history. On error nothing changes.
    pub fn apply(
        &mut self,
        event: RelationshipEvent,
        at: u64,
        actor: &str,
        message_id: Option<&str>,
        source: HistorySource,
    ) -> Result<RelationshipState, TransitionError> {
        let next = transition(Some(self.state), event)?;
        self.history.push(HistoryEntry {
            at,
            from: Some(self.state),
            to: next,
            actor: actor.to_string(),
            message_id: message_id.map(str::to_string),
            source: Some(source),
        });
        self.state = next;
        self.since = at;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RelationshipEvent as E;
    use RelationshipState as S;

    #[test]
    fn happy_path() {
        assert_eq!(transition(None, E::Invited), Ok(S::Invited));
        assert_eq!(transition(Some(S::Invited), E::Accepted), Ok(S::Active));
        assert_eq!(
            transition(Some(S::Active), E::PermissionsRemoved),
            Ok(S::PermissionsRemoved)
        );
        assert_eq!(
            transition(Some(S::PermissionsRemoved), E::RestoreAccepted),
            Ok(S::Active)
        );
        assert_eq!(transition(Some(S::Active), E::Removed), Ok(S::Removed));
    }

    #[test]
    fn only_a_restore_request_gives_removed_permissions_back() {
        // Replaying "accept" to the original invitation must not reactivate.
        assert_eq!(
            transition(Some(S::PermissionsRemoved), E::Accepted),
            Err(TransitionError::Superseded(S::PermissionsRemoved))
        );
        assert_eq!(
            transition(Some(S::PermissionsRemoved), E::Declined),
            Err(TransitionError::Superseded(S::PermissionsRemoved))
        );
        // A restore request is accepted from nowhere else.
        for s in [S::Invited, S::Declined, S::Expired, S::Removed] {
            assert!(transition(Some(s), E::RestoreAccepted).is_err(), "{s}");
        }
        assert_eq!(
            transition(Some(S::Active), E::RestoreAccepted),
            Err(TransitionError::Already(S::Active))
        );
    }

    #[test]
    fn repeats_say_already() {
        assert_eq!(
            transition(Some(S::Active), E::Accepted),
            Err(TransitionError::Already(S::Active))
        );
        assert_eq!(
            transition(Some(S::Invited), E::Invited),
            Err(TransitionError::Already(S::Invited))
        );
    }

    #[test]
    fn every_pair_is_decided() {
        // Every (state, event) pair gives an answer, and endings can be re-invited.
        for s in S::ALL {
            for e in [
                E::Invited,
                E::Accepted,
                E::RestoreAccepted,
                E::Declined,
                E::Expired,
                E::PermissionsRemoved,
                E::Removed,
            ] {
                let _ = transition(Some(s), e);
            }
        }
        for s in [S::Declined, S::Expired, S::Removed] {
            assert_eq!(transition(Some(s), E::Invited), Ok(S::Invited));
        }
        assert!(transition(Some(S::Declined), E::Accepted).is_err());
        assert!(transition(Some(S::Removed), E::Removed).is_err());
        assert!(transition(None, E::Accepted).is_err());
    }

    #[test]
    fn apply_records_history_and_refusal_changes_nothing() {
        let mut r = Relationship {
            partner: "p".into(),
            customer: "a@b.test".into(),
            customer_name: None,
            locale: "en".into(),
            state: S::Invited,
            since: 1,
            invitation_id: Some(1),
            support_contact: None,
            ends_at: None,
            reminders_sent: vec![],
            history: vec![],
            gdap: None,
        };
        r.apply(E::Accepted, 5, "a@b.test", Some("m@x"), HistorySource::Mail)
            .unwrap();
        assert_eq!(r.history[0].source, Some(HistorySource::Mail));
        assert_eq!((r.state, r.since, r.history.len()), (S::Active, 5, 1));
        let before = r.clone();
        assert!(r
            .apply(E::Declined, 6, "a@b.test", None, HistorySource::Mail)
            .is_err());
        assert_eq!(r, before);
    }

    #[test]
    fn names_round_trip() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
