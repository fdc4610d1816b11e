//! # liaison-core — the decision core of Liaison
//!
//! Everything Liaison *decides*, as pure code: data in, decisions out. A
//! mail's bytes, the state it needs (through [`effects::StoreView`]) and the
//! time (a number the shell passes in) go in; the changes to store and the
//! mails to send ([`effects::Changes`], [`render::plan::MailPlan`]) come out.
//!
//! ## What may go in this crate
//! No IO of any kind: no sockets, no files, no environment, no clock, no
//! threads, no async runtime. This crate's `Cargo.toml` is the boundary —
//! it depends on no runtime, storage, network or TLS crate, so such a use is
//! a compile error — and `tests/core_purity.rs` in the workspace checks the
//! rest (`std::fs`, `std::net`, `std::env`, `SystemTime`, `Instant`,
//! `std::process`, `std::thread` appear nowhere in `core/src`). Templates
//! arrive as text, secrets through [`config::SecretSource`], the time as
//! Unix seconds.
//!
//! ## Layout (arrows point down: a module uses only those below it)
//! * [`command`] — the partner command language: parsing, and CSV import
//!   rows to commands.
//! * [`decide`] — the decision: one mail + state → [`decide::Decision`];
//!   customer answers, support tickets, timers, notices, and [`decide::trust`]
//!   (which sender is trusted for what).
//! * [`render`] — [`render::plan::MailPlan`], templates from sources,
//!   composing the MIME message.
//! * [`mail`] — reading mail: bytes to [`mail::inbound::InboundMail`],
//!   addresses, authentication results, bounces, replies, intents.
//! * [`config`] — the configuration model and its validation.
//! * [`oauth`] — OAuth2 decisions (refresh timing, backoff, what an error
//!   answer asks of the operator) and the XOAUTH2 / OAUTHBEARER messages.
//! * [`effects`] — what decisions read and write: [`effects::StoreView`],
//!   [`effects::Changes`], and the records in them.
//! * [`model`] — relationships and their transitions, invitations, tickets,
//!   tokens and keyed ids, time as numbers.
//! * `testing` (feature `testing`) — the in-memory store used by the
//!   workspace's tests, fuzz targets and benchmarks.

pub mod command;
pub mod config;
pub mod decide;
pub mod effects;
pub mod mail;
pub mod model;
pub mod oauth;
pub mod render;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
