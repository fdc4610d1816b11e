//! `[[partner]]`: the resellers allowed to send commands.

use super::gdap::RawPartnerGdap;
pub use super::gdap::{AccessAssignment, PartnerGraph, RoleSet};
use super::*;

/// One `[[partner]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    /// Stable identifier used in the store and in `status` output.
    pub id: String,
    /// Name shown to customers ("Northwind Traders").
    pub name: String,
    /// Addresses allowed to send commands for this partner (lowercase).
    pub emails: Vec<String>,
    /// Default locale of mails for this partner and its customers.
    pub locale: String,
    /// The partner's Entra tenant id (a GUID), for `{partner_tenant_id}`.
    pub tenant_id: Option<String>,
    /// The approval link every invitation carries (template filled and
    /// checked against `security.approval_link_hosts`).
    pub approval_link: Option<String>,
    /// Microsoft Graph, when Liaison makes and follows GDAP relationships.
    pub graph: Option<PartnerGraph>,
    /// Named role sets (`invite … roles helpdesk`).
    pub role_sets: Vec<RoleSet>,
    /// Access assignments made when a GDAP relationship becomes active.
    pub access_assignments: Vec<AccessAssignment>,
}

impl Partner {
    /// The role names of the role set `name` (case ignored).
    pub fn role_set(&self, name: &str) -> Option<&[String]> {
        self.role_sets
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name.trim()))
            .map(|s| s.roles.as_slice())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartner {
    id: String,
    name: String,
    emails: Vec<String>,
    #[serde(default = "default_locale")]
    locale: String,
    // The GDAP keys (config/gdap.rs); not flattened, since serde cannot
    // deny unknown keys through `flatten`.
    tenant_id: Option<String>,
    approval_link: Option<String>,
    graph: Option<super::gdap::RawPartnerGraph>,
    #[serde(default)]
    role_set: Vec<super::gdap::RawRoleSet>,
    #[serde(default)]
    access_assignment: Vec<super::gdap::RawAccessAssignment>,
}

fn default_locale() -> String {
    "en".into()
}

/// Checks every `[[partner]]`: ids and addresses unique, locales known.
pub(super) fn validate_partners(
    raw: Vec<RawPartner>,
    approval_link_hosts: &[String],
) -> Result<Vec<Partner>> {
    if raw.is_empty() {
        return Err(invalid(
            "partner",
            "at least one [[partner]] is needed, or nobody may send commands",
        ));
    }
    let mut partners: Vec<Partner> = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("partner[{i}].{k}");
        if p.id.is_empty()
            || !p
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                key("id"),
                "must be non-empty and use only letters, digits, '-' and '_'",
            ));
        }
        if partners.iter().any(|q| q.id == p.id) {
            return Err(invalid(key("id"), format!("`{}` is used twice", p.id)));
        }
        if p.emails.is_empty() {
            return Err(invalid(key("emails"), "needs at least one address"));
        }
        let mut emails = Vec::new();
        for (j, e) in p.emails.iter().enumerate() {
            let e = check_address(&format!("partner[{i}].emails[{j}]"), e)?;
            if let Some(other) = partners.iter().find(|q| q.emails.contains(&e)) {
                return Err(invalid(
                    format!("partner[{i}].emails[{j}]"),
                    format!("{e} already belongs to partner `{}`", other.id),
                ));
            }
            emails.push(e);
        }
        if !SUPPORTED_LOCALES.contains(&p.locale.as_str()) {
            return Err(invalid(
                key("locale"),
                format!("`{}` is not one of {:?}", p.locale, SUPPORTED_LOCALES),
            ));
        }
        let gdap = RawPartnerGdap {
            tenant_id: p.tenant_id,
            approval_link: p.approval_link,
            graph: p.graph,
            role_set: p.role_set,
            access_assignment: p.access_assignment,
        }
        .validate(i, approval_link_hosts)?;
        partners.push(Partner {
            tenant_id: gdap.tenant_id,
            approval_link: gdap.approval_link,
            graph: gdap.graph,
            role_sets: gdap.role_sets,
            access_assignments: gdap.access_assignments,
            id: p.id,
            name: check_header_text(&key("name"), &p.name)?,
            emails,
            locale: p.locale,
        });
    }

    Ok(partners)
}
