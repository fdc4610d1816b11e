//! What the core needs from the disk and the environment, read here at
//! the edge: template texts ([`TemplateDir`], [`load_templates`]), the
//! configuration file ([`load_config`]) and the secrets its `*_env` and
//! `*_file` keys name ([`EnvAndFiles`]).

use liaison_core::config::{Config, ConfigError, SecretSource};
use liaison_core::render::templates::{TemplateError, TemplateSource, Templates};
use std::path::{Path, PathBuf};

/// Template texts in a folder: `<dir>/<locale>/<name>.<part>.hbs`.
pub struct TemplateDir(pub PathBuf);

impl TemplateSource for TemplateDir {
    fn read(&self, locale: &str, file: &str) -> Result<Option<String>, TemplateError> {
        let path = self.0.join(locale).join(file);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TemplateError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    fn origin(&self) -> String {
        self.0.display().to_string()
    }
}

/// Loads and checks every template in `dir` (see [`Templates::from_source`]).
pub fn load_templates(dir: &Path) -> Result<Templates, TemplateError> {
    Templates::from_source(&TemplateDir(dir.to_owned()))
}

/// Secrets from this process's environment and from files.
pub struct EnvAndFiles;

impl SecretSource for EnvAndFiles {
    fn env(&self, var: &str) -> Option<String> {
        std::env::var(var).ok()
    }

    fn file(&self, path: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
}

/// Reads, parses and validates a config file. Relative paths inside it
/// (store, templates, secret files) are taken relative to the current
/// directory, like every other command-line tool does.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Config::parse(&text, path, &EnvAndFiles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use liaison_core::render::templates::TemplateName;
    use serde_json::json;

    fn shipped() -> Templates {
        load_templates(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap()
    }

    #[test]
    fn shipped_templates_load_in_every_locale() {
        let t = shipped();
        for locale in liaison_core::config::SUPPORTED_LOCALES {
            let r = t
                .render(
                    TemplateName::Invitation,
                    locale,
                    &TemplateName::Invitation.sample_vars(),
                )
                .unwrap();
            assert!(
                r.subject.contains("[ref:sampletoken"),
                "{locale}: {}",
                r.subject
            );
            assert!(r.text.contains("Northwind Traders"));
            let html = r.html.unwrap();
            assert!(html.contains("mailto:invites+sampletoken"), "{locale}");
        }
        let ko = t
            .render(
                TemplateName::Invitation,
                "ko",
                &TemplateName::Invitation.sample_vars(),
            )
            .unwrap();
        assert!(ko.text.contains("수락"), "{}", ko.text);
    }

    #[test]
    fn the_approval_link_is_the_step_when_there_is_one() {
        let t = shipped();
        for locale in liaison_core::config::SUPPORTED_LOCALES {
            for name in [TemplateName::Invitation, TemplateName::Restore] {
                let vars = name.sample_vars();
                let link = vars["approval_link"].as_str().unwrap().to_string();
                let r = t.render(name, locale, &vars).unwrap();
                assert!(r.text.contains(&link), "{locale} {name:?}: {}", r.text);
                assert!(r.text.contains("Global Administrator"), "{locale}");
                let html = r.html.unwrap();
                assert!(
                    html.contains(&format!("href=\"{link}\"")),
                    "{locale}: {html}"
                );
                // Without a link, the mail is the old one: no admin-center step.
                let mut plain = vars.clone();
                plain["approval_link"] = serde_json::Value::Null;
                let r = t.render(name, locale, &plain).unwrap();
                assert!(!r.text.contains("admin.microsoft.com"), "{locale}");
                assert!(!r.text.contains("Global Administrator"), "{locale}");
                assert!(!r.html.unwrap().contains("admin.microsoft.com"));
            }
            let r = t
                .render(
                    TemplateName::Invitation,
                    locale,
                    &TemplateName::Invitation.sample_vars(),
                )
                .unwrap();
            assert!(r.text.contains("User Administrator"), "{locale}");
            // A claimed approval reads differently from a verified one.
            let mut vars = TemplateName::AcceptedPartner.sample_vars();
            let verified = t
                .render(TemplateName::AcceptedPartner, locale, &vars)
                .unwrap()
                .text;
            vars["verified"] = json!(false);
            let claimed = t
                .render(TemplateName::AcceptedPartner, locale, &vars)
                .unwrap()
                .text;
            assert!(verified.contains("Microsoft Graph"), "{locale}: {verified}");
            assert!(!claimed.contains("Microsoft Graph"), "{locale}: {claimed}");
            assert_ne!(verified, claimed);
        }
    }

    #[test]
    fn text_is_not_escaped_and_html_is() {
        let t = shipped();
        let mut vars = TemplateName::Invitation.sample_vars();
        vars["partner_name"] = json!("A&B <Partners>");
        let r = t.render(TemplateName::Invitation, "en", &vars).unwrap();
        assert!(r.text.contains("A&B <Partners>"));
        let html = r.html.unwrap();
        assert!(html.contains("A&amp;B &lt;Partners&gt;"), "{html}");
        assert!(!html.contains("<Partners>"));
    }

    #[test]
    fn missing_variable_is_an_error_not_blank_text() {
        let t = shipped();
        let err = t
            .render(
                TemplateName::Invitation,
                "en",
                &json!({"partner_name": "X"}),
            )
            .unwrap_err();
        assert!(err.to_string().contains("invitation"), "{err}");
    }

    #[test]
    fn a_broken_template_stops_loading_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        for locale in liaison_core::config::SUPPORTED_LOCALES {
            std::fs::create_dir_all(dir.path().join(locale)).unwrap();
            for f in std::fs::read_dir(src.join(locale)).unwrap() {
                let f = f.unwrap();
                // The landing page's templates (`web/`) are not mails.
                if f.file_type().unwrap().is_dir() {
                    continue;
                }
                std::fs::copy(f.path(), dir.path().join(locale).join(f.file_name())).unwrap();
            }
        }
        std::fs::write(
            dir.path().join("ko/clarify.txt.hbs"),
            "{{partner_name}} {{no_such_variable}}",
        )
        .unwrap();
        let err = load_templates(dir.path())
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("clarify") && err.contains("ko"), "{err}");
        std::fs::remove_file(dir.path().join("en/invitation.html.hbs")).unwrap();
        let err = load_templates(dir.path())
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("invitation.html.hbs"), "{err}");
    }

    #[test]
    fn subjects_are_one_line() {
        let t = shipped();
        let mut vars = TemplateName::AcceptedPartner.sample_vars();
        vars["customer_email"] = json!("x\r\nBcc: evil@x.test");
        let r = t
            .render(TemplateName::AcceptedPartner, "en", &vars)
            .unwrap();
        assert!(!r.subject.contains('\n') && !r.subject.contains('\r'));
    }

    #[test]
    fn shipped_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let dev = load_config(&root.join("liaison.dev.toml")).unwrap();
        assert_eq!(dev.inboxes.len(), 2);
        // The example's secrets point at a production host's environment and
        // files; swap them for inline values so every other key is checked.
        let example = std::fs::read_to_string(root.join("liaison.example.toml")).unwrap();
        let example: Vec<&str> = example
            .lines()
            .map(|l| {
                if l.starts_with("password_env") || l.starts_with("password_file") {
                    "password = \"x\""
                } else if l.starts_with("token_secret_file") {
                    "token_secret = \"0123456789abcdef0123\""
                } else {
                    l
                }
            })
            .collect();
        let example = example.join("\n");
        let c = Config::parse(&example, Path::new("example"), &EnvAndFiles).unwrap();
        assert_eq!(c.inboxes[0].tls, liaison_core::config::TlsMode::Tls);
        assert_eq!(c.partners[0].emails.len(), 2);
        assert!(!c.store.is_shared());

        // The commented PostgreSQL variant, put in place of the sled
        // [store] (its URL inline instead of the file), is valid too.
        let sled_store = example.find("[store]\n").unwrap();
        let variant = example.find("# --- The PostgreSQL variant").unwrap();
        let variant_end = variant + example[variant..].find("\n\n").unwrap();
        let block: Vec<&str> = example[variant..variant_end]
            .lines()
            .skip(1)
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| {
                if l.starts_with("url_file") {
                    "url = \"postgres://liaison:pw@db.example.com:5432/liaison\""
                } else {
                    l
                }
            })
            .collect();
        assert!(block[0] == "[store]" && block.contains(&"backend = \"postgres\""));
        let pg = format!(
            "{}{}{}",
            &example[..sled_store],
            block.join("\n"),
            &example[variant_end..]
        );
        let c = Config::parse(&pg, Path::new("example"), &EnvAndFiles).unwrap();
        let liaison_core::config::StoreBackend::Postgres(p) = &c.store.backend else {
            panic!("the variant is not postgres");
        };
        assert_eq!((p.max_connections, p.lease_secs), (8, 30));
        assert!(p.ca_file.is_some());
        assert_eq!(c.admin_socket, Path::new("/var/lib/liaison/store.sock"));
    }

    #[test]
    fn a_secret_file_is_read_and_a_missing_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "abc\n").unwrap();
        assert_eq!(EnvAndFiles.file(&f).unwrap(), "abc\n");
        let err = EnvAndFiles.file(&dir.path().join("none")).unwrap_err();
        assert!(err.contains("No such file"), "{err}");
    }
}
