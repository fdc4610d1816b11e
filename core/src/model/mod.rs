//! What Liaison keeps: relationships and their transition table,
//! invitations, tickets, the tokens and keyed ids, and time as numbers.

pub mod gdap;
pub mod invitation;
pub mod relationship;
pub mod ticket;
pub mod time;
pub mod token;
