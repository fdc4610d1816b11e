//! # Liaison — the shell
//!
//! An email-driven workflow daemon for cloud resellers. Partners email
//! commands (`invite alice@contoso.example`); Liaison sends the customer an
//! invitation to grant delegated admin permissions, watches IMAP for the
//! answer, keeps the relationship's state and history in sled, and answers
//! everyone by mail.
//!
//! Every decision is made by the pure core, the `liaison-core` crate
//! (`core/`): parsing commands and mail, transitions, which mails to send,
//! the configuration model. This crate is the imperative shell around it —
//! everything that touches a socket, a disk or the clock:
//!
//! * [`store`] — the [`store::Store`] interface (the core's
//!   [`liaison_core::effects::StoreView`] plus commit and flush) and its
//!   sled backend.
//! * [`io`] — IMAP ([`io::imap`]), SMTP ([`io::smtp`]), the admin socket the
//!   CLI uses while the daemon runs ([`io::admin`]), `/metrics` and
//!   `/healthz` on axum ([`io::http`]), and the customer landing page
//!   ([`io::web`]).
//! * [`engine`] — one message through the core and into the store.
//! * [`deliver`] — `liaison deliver`: a message the MTA hands over (pipe
//!   delivery), through the running daemon or straight into the store.
//! * [`daemon`] — building the engine and wiring the tasks together, and
//!   shutdown; the one composition root.
//! * [`clock`] — the time, behind a trait.
//! * [`metrics`] — counters and gauges, Prometheus text.
//! * [`files`] — what the core needs from disk and environment: template
//!   sources and secrets.
//!
//! Arrows point one way: shell → core, never back.

pub mod clock;
pub mod daemon;
pub mod deliver;
pub mod engine;
pub mod files;
pub mod gdap_sync;
pub mod io;
pub mod metrics;
pub mod oauth;
pub mod store;
