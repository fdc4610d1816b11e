//! `[[partner]]`: the resellers allowed to send commands.

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartner {
    id: String,
    name: String,
    emails: Vec<String>,
    #[serde(default = "default_locale")]
    locale: String,
}

fn default_locale() -> String {
    "en".into()
}

/// Checks every `[[partner]]`: ids and addresses unique, locales known.
pub(super) fn validate_partners(raw: Vec<RawPartner>) -> Result<Vec<Partner>> {
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
        partners.push(Partner {
            id: p.id,
            name: check_header_text(&key("name"), &p.name)?,
            emails,
            locale: p.locale,
        });
    }

    Ok(partners)
}
