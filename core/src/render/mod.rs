//! From a decision's [`plan::MailPlan`] to a message: templates rendered
//! from sources the shell gives ([`templates`]), then the MIME message
//! ([`compose`]). Below the decision code: nothing here decides.

pub mod compose;
pub mod plan;
pub mod templates;
