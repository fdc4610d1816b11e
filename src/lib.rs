//! # Liaison
//!
//! An email-driven workflow daemon for cloud resellers. Partners email
//! commands (`invite alice@contoso.example`); Liaison sends the customer an
//! invitation to grant delegated admin permissions, watches IMAP for the
//! answer, keeps the relationship's state and history in sled, and answers
//! everyone by mail.
//!
//! ## Layout
//!
//! The crate is a functional core inside an imperative shell.
//!
//! Pure core (no sockets, no clock, no disk):
//! * [`config`] — the TOML configuration, validated up front.
//! * [`address`] — address normalisation and plus-address tags.
//! * [`token`] — HMAC-signed, expiring invitation tokens, and the key
//!   (`IdKey`) for every id, Message-ID and bounce address Liaison derives.
//! * [`command`] — the partner command language parser.
//! * [`import`] — CSV rows of `liaison import` to `invite` commands, as data.
//! * [`reply`] — separates a reply's new text from quoted text.
//! * [`auth`] — reading Authentication-Results: was the From authenticated?
//! * [`trust`] — who is trusted for what: the one sender policy.
//! * [`intent`] — what a customer's new text means (accept, decline, …).
//! * [`dsn`] — reading delivery status notifications (bounces), and whether
//!   one is real (VERP bounce address, null sender, recipient).
//! * [`inbound`] — raw message bytes to plain [`inbound::InboundMail`].
//! * [`relationship`] — states and the transition table.
//! * [`invitation`] — the stored invitation record.
//! * [`ticket`] — support tickets and their `[T-000123]` tags.
//! * [`workflow`] — the decision: mail + state → changes + mails to send.
//! * [`templates`] and [`compose`] — rendering and building outgoing mail.
//!
//! Shell (IO at the edges):
//! * [`clock`] — the time, behind a trait.
//! * [`store`] — the [`store::Store`] interface and its sled backend.
//! * [`imap`] — watching mailboxes (IDLE or polling), with timeouts.
//! * [`smtp`] — delivering the outbox.
//! * [`engine`] — one message through the core and into the store.
//! * [`metrics`] — counters and gauges, Prometheus text.
//! * [`admin`] — the local socket the CLI uses while the daemon runs.
//! * [`http`] — `/metrics` and `/healthz` on a loopback address.
//! * [`daemon`] — wiring the tasks together, and shutdown.

pub mod address;
pub mod admin;
pub mod auth;
pub mod clock;
pub mod command;
pub mod compose;
pub mod config;
pub mod daemon;
pub mod dsn;
pub mod gdap;
pub mod engine;
pub mod graph;
pub mod http;
pub mod imap;
pub mod import;
pub mod inbound;
pub mod intent;
pub mod invitation;
pub mod metrics;
pub mod relationship;
pub mod reply;
pub mod smtp;
pub mod store;
pub mod templates;
pub mod ticket;
pub mod token;
pub mod trust;
pub mod workflow;
