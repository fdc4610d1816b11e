//! OAuth2's pure parts: when a token is refreshed and what an error answer
//! means ([`policy`]), and the SASL messages that carry a token
//! ([`sasl`]). The token client itself (HTTP, cache, files) is in the
//! shell, `liaison::oauth`.

pub mod policy;
pub mod sasl;
