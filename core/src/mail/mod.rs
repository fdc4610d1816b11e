//! Reading mail: raw bytes to [`inbound::InboundMail`], addresses, who
//! authenticated it ([`auth`]), whether it is a bounce ([`dsn`]), what is
//! new in a reply ([`reply`]) and what that new text means ([`intent`]).

pub mod address;
pub mod auth;
pub mod dsn;
pub mod inbound;
pub mod intent;
pub mod reply;
