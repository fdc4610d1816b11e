//! The network edges: mailboxes, mail submission, the local admin socket,
//! the loopback HTTP endpoint, and the customer landing page.

pub mod admin;
pub mod graph;
pub mod http;
pub mod imap;
pub mod imap_login;
pub mod smtp;
pub mod smtp_login;
pub mod web;
