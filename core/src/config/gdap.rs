//! The GDAP keys of a `[[partner]]`: the approval link (level 1) and,
//! optionally, Microsoft Graph (`[partner.graph]`), named role sets and the
//! access assignments made on activation (level 2). See the README's
//! "Microsoft Partner Center / GDAP".

use super::*;
use crate::model::gdap::{check_approval_link, fill_approval_link, is_tenant_id, role_by_name};

/// Graph's address when `[partner.graph]` names none.
pub const DEFAULT_GRAPH_BASE_URL: &str = "https://graph.microsoft.com/v1.0";
/// Seconds between two reads of a partner's open relationships by default.
pub const DEFAULT_GRAPH_POLL_SECS: u64 = 300;

/// `[partner.graph]`: the partner's app registration, through an
/// `[[oauth2]]` client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerGraph {
    /// The `[[oauth2]]` client's name (client credentials, scope
    /// `https://graph.microsoft.com/.default`).
    pub oauth2: String,
    /// Graph's address (https, or http to a loopback address for a local
    /// emulator).
    pub base_url: String,
    /// Seconds between two reads of the open relationships.
    pub poll_interval_secs: u64,
}

/// `[[partner.role_set]]`: a name partners type after `roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSet {
    /// What partners type.
    pub name: String,
    /// Entra built-in role names.
    pub roles: Vec<String>,
}

/// `[[partner.access_assignment]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessAssignment {
    /// The security group's object id in the partner's tenant.
    pub group_id: String,
    /// Entra built-in role names (a subset of the relationship's).
    pub roles: Vec<String>,
}

/// The GDAP keys of one `[[partner]]` as read (fields of `RawPartner`).
pub(super) struct RawPartnerGdap {
    pub tenant_id: Option<String>,
    pub approval_link: Option<String>,
    pub graph: Option<RawPartnerGraph>,
    pub role_set: Vec<RawRoleSet>,
    pub access_assignment: Vec<RawAccessAssignment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartnerGraph {
    oauth2: String,
    base_url: Option<String>,
    poll_interval_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoleSet {
    name: String,
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessAssignment {
    group_id: String,
    roles: Vec<String>,
}

/// A partner's GDAP keys, checked.
pub(super) struct PartnerGdap {
    pub tenant_id: Option<String>,
    pub approval_link: Option<String>,
    pub graph: Option<PartnerGraph>,
    pub role_sets: Vec<RoleSet>,
    pub access_assignments: Vec<AccessAssignment>,
}

/// `https://…`, or `http://` to a loopback host (a local emulator).
fn check_base_url(url: &str) -> std::result::Result<(), String> {
    let rest = if let Some(r) = url.strip_prefix("https://") {
        r
    } else if let Some(r) = url.strip_prefix("http://") {
        let host = r.split('/').next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(
                "plain http is only allowed to a loopback address (a local emulator); use https"
                    .into(),
            );
        }
        r
    } else {
        return Err(format!("`{url}` is not an https:// URL"));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return Err(format!("`{url}` has no usable host"));
    }
    Ok(())
}

impl RawPartnerGdap {
    pub(super) fn validate(self, i: usize, hosts: &[String]) -> Result<PartnerGdap> {
        let key = |k: &str| format!("partner[{i}].{k}");
        let tenant_id = match &self.tenant_id {
            Some(t) if is_tenant_id(t.trim()) => Some(t.trim().to_ascii_lowercase()),
            Some(_) => {
                return Err(invalid(
                    key("tenant_id"),
                    "must be the partner's Entra tenant id, a GUID such as 00000000-0000-0000-0000-000000000000",
                ))
            }
            None => None,
        };
        let approval_link = match &self.approval_link {
            Some(t) => {
                let link = fill_approval_link(t.trim(), tenant_id.as_deref())
                    .map_err(|e| invalid(key("approval_link"), e.to_string()))?;
                check_approval_link(&link, hosts)
                    .map_err(|e| invalid(key("approval_link"), e.to_string()))?;
                Some(link)
            }
            None => None,
        };
        let graph = match self.graph {
            Some(g) => {
                let base_url = g
                    .base_url
                    .unwrap_or_else(|| DEFAULT_GRAPH_BASE_URL.into())
                    .trim_end_matches('/')
                    .to_string();
                check_base_url(&base_url).map_err(|e| invalid(key("graph.base_url"), e))?;
                if g.oauth2.trim().is_empty() {
                    return Err(invalid(
                        key("graph.oauth2"),
                        "must name an [[oauth2]] client",
                    ));
                }
                let poll = g.poll_interval_secs.unwrap_or(DEFAULT_GRAPH_POLL_SECS);
                if poll == 0 {
                    return Err(invalid(
                        key("graph.poll_interval_secs"),
                        "must be at least 1",
                    ));
                }
                Some(PartnerGraph {
                    oauth2: g.oauth2.trim().to_string(),
                    base_url,
                    poll_interval_secs: poll,
                })
            }
            None => None,
        };
        let known = |k: String, names: &[String]| -> Result<()> {
            if names.is_empty() {
                return Err(invalid(k, "needs at least one role"));
            }
            match names.iter().find(|n| role_by_name(n).is_none()) {
                Some(n) => Err(invalid(
                    k,
                    format!("`{n}` is not an Entra built-in role Liaison knows (the `roles` command lists them)"),
                )),
                None => Ok(()),
            }
        };
        let mut role_sets: Vec<RoleSet> = Vec::new();
        for (j, s) in self.role_set.iter().enumerate() {
            let name = s.name.trim();
            if name.is_empty() || name.contains([',', '"']) || role_by_name(name).is_some() {
                return Err(invalid(
                    key(&format!("role_set[{j}].name")),
                    "must be a name without commas or quotes that is not itself a role name",
                ));
            }
            if role_sets.iter().any(|r| r.name.eq_ignore_ascii_case(name)) {
                return Err(invalid(
                    key(&format!("role_set[{j}].name")),
                    format!("`{name}` is used twice"),
                ));
            }
            known(key(&format!("role_set[{j}].roles")), &s.roles)?;
            role_sets.push(RoleSet {
                name: name.to_string(),
                roles: s.roles.clone(),
            });
        }
        let mut access_assignments = Vec::new();
        for (j, a) in self.access_assignment.iter().enumerate() {
            if !is_tenant_id(a.group_id.trim()) {
                return Err(invalid(
                    key(&format!("access_assignment[{j}].group_id")),
                    "must be the security group's object id (a GUID)",
                ));
            }
            known(key(&format!("access_assignment[{j}].roles")), &a.roles)?;
            access_assignments.push(AccessAssignment {
                group_id: a.group_id.trim().to_ascii_lowercase(),
                roles: a.roles.clone(),
            });
        }
        if (!role_sets.is_empty() || !access_assignments.is_empty()) && graph.is_none() {
            return Err(invalid(
                key("graph"),
                "role_set and access_assignment need [partner.graph] (Liaison makes GDAP requests only through Microsoft Graph)",
            ));
        }
        Ok(PartnerGdap {
            tenant_id,
            approval_link,
            graph,
            role_sets,
            access_assignments,
        })
    }
}
