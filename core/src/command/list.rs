//! `list [STATE] [page N]`: the partner's relationships, a page at a time.

use super::{no_more, usage_error, Command, CommandError};
use crate::decide::commands::{CommandRun, Outcome};
use crate::decide::WorkflowError;
use crate::decide::commands::status_line;
use crate::decide::LIST_PAGE;
use crate::model::relationship::{RelationshipState, RelationshipSummary};

/// Its line in `help` and in usage errors.
pub(super) const USAGE: &str = "list [invited|active|declined|expired|permissions_removed|removed] [page N]";

pub(super) fn parse(args: &[String]) -> Result<Command, CommandError> {
    let mut rest = args;
    let state =
        match rest.first() {
            Some(s) if !s.eq_ignore_ascii_case("page") => {
                rest = &rest[1..];
                Some(RelationshipState::parse(s).ok_or_else(|| {
                    usage_error("list", format!("`{s}` is not a relationship state"))
                })?)
            }
            _ => None,
        };
    let page = match rest.first() {
        Some(_) => {
            let n = rest
                .get(1)
                .ok_or_else(|| usage_error("list", "`page` needs a number".into()))?;
            rest = &rest[2..];
            n.parse::<u32>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| usage_error("list", format!("`{n}` is not a page number")))?
        }
        None => 1,
    };
    no_more("list", rest)?;
    Ok(Command::List { state, page })

}

impl CommandRun<'_, '_> {
    /// One page of the partner's relationships. A mail of ten thousand
    /// lines helps nobody, so long lists come [`LIST_PAGE`] lines at a time
    /// with a pointer to the next page.
    pub(crate) fn list(&self, state: Option<RelationshipState>, page: u32) -> Result<Outcome, WorkflowError> {
        let page = page as usize;
        let first = (page - 1) * LIST_PAGE;
        let (total, shown) = if self.decision.relationships.is_empty() {
            // Only the page is read: at 10 000 relationships a partner,
            // reading them all to show 500 was most of the time `list` took.
            let found = self
                .view
                .relationship_summaries_page(&self.partner.id, state, first, LIST_PAGE)?;
            (found.total, found.rows)
        } else {
            // Changes made earlier in this same mail are not stored yet.
            let mut rels = self.view.relationship_summaries_of(&self.partner.id)?;
            for changed in &self.decision.relationships {
                rels.retain(|r| r.customer != changed.customer);
                rels.push(RelationshipSummary::from(changed));
            }
            rels.sort_by(|a, b| a.customer.cmp(&b.customer));
            rels.retain(|r| state.is_none_or(|s| r.state == s));
            let total = rels.len();
            (total, rels.into_iter().skip(first).take(LIST_PAGE).collect())
        };
        if total == 0 {
            return Ok(Ok("no relationships".to_string()));
        }
        let pages = total.div_ceil(LIST_PAGE);
        if page > pages {
            return Ok(Err(format!(
                "there is no page {page}: {total} relationship(s) make {pages} page(s)"
            )));
        }
        let mut out = String::with_capacity(shown.len() * 80);
        for (i, r) in shown.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&status_line(r));
        }
        if pages > 1 {
            let filter = state.map(|s| format!("{s} ")).unwrap_or_default();
            out.push_str(&format!(
                "\n(relationships {}-{} of {total}, page {page} of {pages}",
                first + 1,
                first + shown.len()
            ));
            if page < pages {
                out.push_str(&format!(
                    "; send `list {filter}page {}` for the next",
                    page + 1
                ));
            }
            out.push(')');
        }
        Ok(Ok(out))
    }
}
