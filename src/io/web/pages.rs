//! The landing page's Handlebars templates, `templates/<locale>/web/`, and
//! what each page shows. HTML-escaped (a partner name `<b>A&B</b>` is
//! shown as those characters, never as markup) and strict (a missing
//! variable is an error at start-up, when every page is rendered once with
//! sample data, not a blank on a customer's screen).

use handlebars::Handlebars;
use liaison_core::decide::web::{InvitationPage, Lookup, NotFound, PageState, TicketPage};
use liaison_core::model::relationship::RelationshipState;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Errors loading the page templates.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// A template file is missing or unreadable.
    #[error("web page template {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A template does not compile or cannot be rendered with sample data.
    #[error("web page template {name} ({locale}): {reason}")]
    Template {
        /// The page.
        name: &'static str,
        /// The locale.
        locale: String,
        /// Handlebars' message.
        reason: String,
    },
}

/// The pages, by file name (`templates/<locale>/web/<name>.html.hbs`).
pub const PAGES: [&str; 6] = [
    "layout",
    "invitation",
    "answered",
    "not_found",
    "forbidden",
    "ticket",
];

/// The page templates of every locale, and the style sheet.
pub struct Pages {
    registry: Handlebars<'static>,
    /// `templates/static/liaison.css`, served at `/static/liaison.css`.
    pub stylesheet: String,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pages")
    }
}

/// A rendered page: its status and HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// HTTP status.
    pub status: u16,
    /// The whole document.
    pub html: String,
}

fn other_locale(locale: &str) -> (&'static str, &'static str) {
    // Two locales today; the switch names the other in its own language.
    if locale == "ko" {
        ("en", "English")
    } else {
        ("ko", "한국어")
    }
}

/// The locale to show: the one asked for (`?lang=`, the switch) when it is
/// supported, else the invitation's, else English.
pub fn pick_locale(asked: Option<&str>, own: Option<&str>) -> String {
    let supported = |l: &&str| liaison_core::config::SUPPORTED_LOCALES.contains(l);
    asked
        .filter(supported)
        .or(own.filter(supported))
        .unwrap_or("en")
        .to_string()
}

impl Pages {
    /// Loads every page of every supported locale from `dir` (the
    /// configured templates folder) and renders each once with sample
    /// data.
    pub fn load(dir: &Path) -> Result<Pages, PagesError> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        for locale in liaison_core::config::SUPPORTED_LOCALES {
            for name in PAGES {
                let path = dir
                    .join(locale)
                    .join("web")
                    .join(format!("{name}.html.hbs"));
                let source = std::fs::read_to_string(&path).map_err(|e| PagesError::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                registry
                    .register_template_string(&format!("{locale}/{name}"), source)
                    .map_err(|e| PagesError::Template {
                        name,
                        locale: locale.to_string(),
                        reason: e.to_string(),
                    })?;
            }
        }
        let css_path = dir.join("static").join("liaison.css");
        let stylesheet = std::fs::read_to_string(&css_path).map_err(|e| PagesError::File {
            path: css_path,
            reason: e.to_string(),
        })?;
        let pages = Pages {
            registry,
            stylesheet,
        };
        for locale in liaison_core::config::SUPPORTED_LOCALES {
            for (name, vars) in sample_vars() {
                pages.render(locale, name, 200, &vars)?;
            }
        }
        Ok(pages)
    }

    /// Renders page `name` in `locale` inside the layout.
    pub fn render(
        &self,
        locale: &str,
        name: &'static str,
        status: u16,
        vars: &Value,
    ) -> Result<Rendered, PagesError> {
        let err = |e: handlebars::RenderError| PagesError::Template {
            name,
            locale: locale.to_string(),
            reason: e.to_string(),
        };
        let content = self
            .registry
            .render(&format!("{locale}/{name}"), vars)
            .map_err(err)?;
        let (other_lang, other_lang_name) = other_locale(locale);
        let layout = json!({
            "title": vars.get("title").cloned().unwrap_or(json!("Liaison")),
            "partner_name": vars.get("partner_name").cloned().unwrap_or(Value::Null),
            "other_lang": other_lang,
            "other_lang_name": other_lang_name,
            "static_prefix": "../",
            "content": content,
        });
        let html = self
            .registry
            .render(&format!("{locale}/layout"), &layout)
            .map_err(|e| PagesError::Template {
                name: "layout",
                locale: locale.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Rendered { status, html })
    }

    /// The page for a lookup: the question, the answered page, or "not
    /// found" (404). `just_answered` says the answer was taken now.
    pub fn for_lookup(
        &self,
        lookup: &Lookup,
        asked_locale: Option<&str>,
        just_answered: bool,
    ) -> Result<Rendered, PagesError> {
        match lookup {
            Lookup::NotFound {
                why,
                locale,
                partner_name,
            } => {
                let locale = pick_locale(asked_locale, locale.as_deref());
                self.not_found(&locale, *why, partner_name.as_deref())
            }
            Lookup::Page(page) => {
                let locale = pick_locale(asked_locale, Some(&page.invitation.locale));
                let vars = page_vars(page, just_answered);
                match page.state {
                    PageState::Question | PageState::ReplyByMail => {
                        self.render(&locale, "invitation", 200, &vars)
                    }
                    PageState::Answered(_) => self.render(&locale, "answered", 200, &vars),
                }
            }
        }
    }

    /// The "not found" page (404), in the words of the `not_matched` mail.
    pub fn not_found(
        &self,
        locale: &str,
        why: NotFound,
        partner_name: Option<&str>,
    ) -> Result<Rendered, PagesError> {
        let vars = json!({
            "title": if locale == "ko" { "초대를 찾을 수 없습니다" } else { "Invitation not found" },
            "reason": why.reason(),
            "partner_name": partner_name,
            "ticket": false,
        });
        self.render(locale, "not_found", 404, &vars)
    }

    /// A ticket's status page, or "not found" (404).
    pub fn for_ticket(
        &self,
        page: Option<&TicketPage>,
        asked_locale: Option<&str>,
    ) -> Result<Rendered, PagesError> {
        let Some(page) = page else {
            let locale = pick_locale(asked_locale, None);
            let vars = json!({
                "title": if locale == "ko" { "지원 요청을 찾을 수 없습니다" } else { "Support request not found" },
                "reason": NotFound::NoReference.reason(),
                "partner_name": null,
                "ticket": true,
            });
            return self.render(&locale, "not_found", 404, &vars);
        };
        let locale = pick_locale(asked_locale, Some(&page.locale));
        let t = &page.ticket;
        let minutes = |at: u64| {
            let s = liaison_core::decide::rfc3339(at);
            format!("{} {} UTC", &s[..10], &s[11..16])
        };
        let entries: Vec<Value> = t
            .entries
            .iter()
            .map(|e| {
                json!({
                    "at": minutes(e.at),
                    "author": match e.author {
                        liaison_core::model::ticket::Author::Customer => "customer",
                        liaison_core::model::ticket::Author::SupportDesk => "support_desk",
                        liaison_core::model::ticket::Author::Partner | liaison_core::model::ticket::Author::SupportContact => "partner",
                    },
                })
            })
            .collect();
        let id = liaison_core::model::ticket::format_id(t.id);
        let vars = json!({
            "title": format!("{id} — Liaison"),
            "ticket": id,
            "subject": t.subject,
            "state": t.state.as_str(),
            "opened": minutes(t.opened),
            "partner_name": page.partner_name,
            "entries": entries,
        });
        self.render(&locale, "ticket", 200, &vars)
    }

    /// The page for a POST without the right anti-forgery value (403).
    pub fn forbidden(&self, locale: &str) -> Result<Rendered, PagesError> {
        let vars = json!({
            "title": if locale == "ko" { "답변이 처리되지 않았습니다" } else { "Answer not taken" },
            "partner_name": null,
        });
        self.render(locale, "forbidden", 403, &vars)
    }
}

/// The variables of an invitation's page.
fn page_vars(page: &InvitationPage, just_answered: bool) -> Value {
    let inv = &page.invitation;
    let state = match page.state {
        PageState::Answered(s) => s,
        _ => page.relationship.state,
    };
    let restore = inv.kind == liaison_core::model::invitation::InvitationKind::Restore;
    json!({
        "title": format!("{} — Liaison", page.partner_name),
        "partner_name": page.partner_name,
        "customer_email": inv.customer,
        "customer_name": inv.customer_name,
        "expires": liaison_core::decide::rfc3339(inv.expires)[..10].to_string(),
        "restore": restore,
        "form_token": page.form_token,
        "approval_link": page.approval_link,
        "roles": page.roles,
        "reply_by_mail": page.state == PageState::ReplyByMail,
        "state": state.as_str(),
        "just_answered": just_answered,
    })
}

/// Sample data for every page, rendered once at load time.
fn sample_vars() -> Vec<(&'static str, Value)> {
    let page = json!({
        "title": "Northwind Traders — Liaison",
        "partner_name": "Northwind Traders",
        "customer_email": "alice@contoso.example",
        "customer_name": "Contoso Ltd",
        "expires": "2027-02-23",
        "restore": false,
        "form_token": "sampleformtoken",
        "approval_link": "https://admin.microsoft.com/AdminPortal/Home#/partners/invitation/granularAdminRelationships/x",
        "roles": ["Helpdesk Administrator"],
        "reply_by_mail": false,
        "state": RelationshipState::Active.as_str(),
        "just_answered": true,
    });
    vec![
        ("invitation", page.clone()),
        ("answered", page),
        (
            "not_found",
            json!({"title": "x", "reason": "expired", "partner_name": "Northwind Traders", "ticket": false}),
        ),
        ("forbidden", json!({"title": "x", "partner_name": null})),
        (
            "ticket",
            json!({
                "title": "x", "ticket": "T-000001", "subject": "Licences", "state": "open",
                "opened": "2026-12-01", "partner_name": "Northwind Traders",
                "entries": [{"at": "2026-12-01 10:00", "author": "customer"}],
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Pages {
        Pages::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap()
    }

    #[test]
    fn every_page_loads_and_escapes_the_partner_name() {
        let pages = shipped();
        let vars = json!({"title": "t", "reason": "no_reference", "partner_name": "<b>A&B</b>", "ticket": false});
        for locale in ["en", "ko"] {
            let r = pages.render(locale, "not_found", 404, &vars).unwrap();
            assert!(r.html.contains("&lt;b&gt;A&amp;B&lt;/b&gt;"), "{}", r.html);
            assert!(!r.html.contains("<b>A&B"), "{}", r.html);
            assert!(r.html.contains(&format!("<html lang=\"{locale}\">")));
            assert!(!r.html.contains("<script"), "no script at all");
            assert!(!r.html.contains("style="), "no inline style (CSP)");
        }
    }

    #[test]
    fn locale_follows_the_switch_then_the_invitation() {
        assert_eq!(pick_locale(Some("ko"), Some("en")), "ko");
        assert_eq!(pick_locale(None, Some("ko")), "ko");
        assert_eq!(pick_locale(Some("fr"), Some("ko")), "ko");
        assert_eq!(pick_locale(Some("<x>"), None), "en");
    }

    #[test]
    fn a_missing_page_stops_loading_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = Pages::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("layout.html.hbs"), "{err}");
    }
}
