//! The `liaison` command line, run as an operator would: `--version`,
//! `--help` on every subcommand (and no secret in any of it),
//! `check-config` offline and against the loopback mail stack (with a wrong
//! password and an unreachable server too), `render` in Korean and as a
//! complete message, and `status --json` on an empty store.

mod common;

use common::*;
use mail_parser::MimeHeaders as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dev_config() -> PathBuf {
    root().join("config/liaison.dev.toml")
}

/// Runs the binary from the repository root (the dev config's paths are
/// relative to it); returns (success, stdout, stderr).
fn liaison(config: &Path, args: &[&str]) -> (bool, String, String) {
    liaison_env(config, args, &[])
}

fn liaison_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_liaison"))
        .current_dir(root())
        .env_remove("LIAISON_CONFIG")
        .env("LIAISON_LOG", "warn")
        .envs(env.iter().copied())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run liaison");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A configuration for the loopback stack in a new temporary folder,
/// changed by `edit`.
fn temp_config(edit: impl FnOnce(String) -> String) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("liaison.toml");
    std::fs::write(&path, edit(config_text(tmp.path(), Transport::Plain))).unwrap();
    (tmp, path)
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn version_is_the_crate_version() {
    let (ok, out, err) = liaison(&dev_config(), &["--version"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("liaison {}", env!("CARGO_PKG_VERSION")));
}

/// The subcommands listed by `liaison --help` (so a new one is covered
/// without touching this test).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn every_subcommand_has_help_and_no_help_shows_a_secret() {
    // Secrets as an operator might have them in the environment, and the
    // dev config's secrets: none may appear in any help text.
    let env = [
        ("LIAISON_TOKEN_SECRET", "sentinel-token-secret-4f1d"),
        ("LIAISON_SMTP_PASSWORD", "sentinel-smtp-password-9a2c"),
        ("LIAISON_COMMANDS_PASSWORD", "sentinel-imap-password-77e0"),
    ];
    let secrets = [
        "sentinel-",
        common::PASSWORD,
        "dev-only-token-secret",
        "test-secret-0123456789abcdef",
    ];
    let check = |args: &[&str]| -> String {
        let (ok, out, err) = liaison_env(&dev_config(), args, &env);
        assert!(ok, "liaison {args:?} failed: {err}");
        for s in secrets {
            assert!(!out.contains(s), "liaison {args:?} shows `{s}`:\n{out}");
        }
        out
    };
    let top = check(&["--help"]);
    let commands = subcommands(&top);
    for expected in ["run", "status", "check-config", "render"] {
        assert!(
            commands.iter().any(|c| c == expected),
            "{expected} missing from:\n{top}"
        );
    }
    assert!(top.contains("--log-format"), "{top}");
    for c in &commands {
        for args in [vec![c.as_str(), "--help"], vec!["help", c.as_str()]] {
            let out = check(&args);
            assert!(
                out.contains(&format!("Usage: liaison {c}")),
                "liaison {args:?}:\n{out}"
            );
        }
    }
    let check_help = check(&["check-config", "--help"]);
    assert!(
        check_help.contains("--offline") && check_help.contains("--json"),
        "{check_help}"
    );
    let render_help = check(&["render", "--help"]);
    for word in ["invitation", "--locale", "--eml", "ko"] {
        assert!(render_help.contains(word), "{word}:\n{render_help}");
    }
    assert!(check(&["status", "--help"]).contains("--json"));
}

#[test]
fn check_config_offline_validates_the_file_and_templates() {
    let (ok, out, err) = liaison(&dev_config(), &["check-config", "--offline"]);
    assert!(ok, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("config ")
            && lines[0].contains("liaison.dev.toml")
            && lines[0].ends_with(": ok"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("templates ") && lines[1].ends_with(": ok"),
        "{out}"
    );
    assert!(!out.contains("imap ") && !out.contains("smtp "), "{out}");

    let (ok, out, _) = liaison(&dev_config(), &["check-config", "--offline", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let checks = v.as_array().unwrap();
    assert_eq!(checks.len(), 2, "{v}");
    assert!(checks
        .iter()
        .all(|c| c["ok"] == true && c["error"].is_null()));
    assert_eq!(checks[1]["check"], "templates");
}

#[test]
fn check_config_reports_a_bad_file_as_a_failed_check() {
    let (_tmp, path) = temp_config(|t| t.replace("port = 1143", "port = 0"));
    let (ok, out, err) = liaison(&path, &["check-config", "--offline"]);
    assert!(!ok);
    assert!(
        out.contains("config ") && out.contains("FAILED: config key `inbox[0].port`"),
        "{out}"
    );
    assert!(err.contains("1 of 1 checks failed"), "{err}");
}

#[test]
fn check_config_connects_to_every_server_of_the_loopback_stack() {
    // Read-only (login, EXAMINE, logout): no need to take the mailboxes.
    require_mailstack();
    let (ok, out, err) = liaison(&dev_config(), &["check-config"]);
    assert!(ok, "{out}\n{err}");
    for line in [
        "imap commands (commands@liaison.test at 127.0.0.1:1143, mailbox INBOX): ok",
        "imap invites (invites@liaison.test at 127.0.0.1:1143, mailbox INBOX): ok",
        "smtp 127.0.0.1:2525: ok",
    ] {
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
    assert_eq!(out.lines().count(), 5, "{out}");

    let (ok, out, _) = liaison(&dev_config(), &["check-config", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["config", "templates", "imap", "imap", "smtp"]);
}

#[test]
fn check_config_names_a_wrong_password() {
    require_mailstack();
    let wrong = "not-the-password-31c5";
    let (_tmp, path) = temp_config(|t| {
        t.replacen(
            &format!("password = \"{PASSWORD}\""),
            &format!("password = \"{wrong}\""),
            1,
        )
    });
    let (ok, out, err) = liaison(&path, &["check-config"]);
    assert!(!ok, "{out}");
    let failed = out
        .lines()
        .find(|l| l.starts_with("imap commands "))
        .unwrap_or_else(|| panic!("no commands line:\n{out}"));
    assert!(failed.contains(": FAILED: "), "{failed}");
    assert!(
        failed.contains("login")
            && failed.contains("commands@liaison.test")
            && failed.contains("127.0.0.1:1143"),
        "{failed}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("imap invites ") && l.ends_with(": ok")),
        "{out}"
    );
    assert!(out.contains("smtp 127.0.0.1:2525: ok"), "{out}");
    assert!(err.contains("1 of 5 checks failed"), "{err}");
    assert!(
        !out.contains(wrong) && !err.contains(wrong),
        "the password is printed"
    );
}

#[test]
fn check_config_names_an_unreachable_server() {
    let (imap, smtp) = (closed_port(), closed_port());
    let (_tmp, path) = temp_config(|t| {
        t.replacen("port = 1143", &format!("port = {imap}"), 1)
            .replace("port = 2525", &format!("port = {smtp}"))
    });
    let started = std::time::Instant::now();
    let (ok, out, err) = liaison(&path, &["check-config"]);
    assert!(!ok, "{out}");
    assert!(started.elapsed().as_secs() < 10, "a refused port is quick");
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{out}"))
            .to_string()
    };
    let imap_line = line("imap commands ");
    assert!(
        imap_line.contains(&format!("127.0.0.1:{imap}")) && imap_line.contains(": FAILED: "),
        "{imap_line}"
    );
    let smtp_line = line("smtp ");
    assert!(
        smtp_line.starts_with(&format!("smtp 127.0.0.1:{smtp}: FAILED: ")),
        "{smtp_line}"
    );
    assert!(err.contains("checks failed"), "{err}");
}

#[test]
fn render_previews_a_korean_invitation() {
    let (ok, out, err) = liaison(&dev_config(), &["render", "invitation", "--locale", "ko"]);
    assert!(ok, "{err}");
    let subject = out.lines().next().unwrap();
    assert!(
        subject.starts_with("Subject: ") && subject.contains("위임 관리자 권한"),
        "{subject}"
    );
    assert!(out.contains("----- text/plain -----"), "{out}");
    assert!(out.contains("----- text/html -----"), "{out}");
    assert!(out.contains("수락"), "{out}");
    assert!(out.contains("Northwind Traders"), "{out}");

    let (ok, out, _) = liaison(
        &dev_config(),
        &["render", "transcript", "--locale", "en", "--json"],
    );
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["text"]
        .as_str()
        .unwrap()
        .contains("> invite alice@contoso.test"));
    assert!(v["subject"].as_str().is_some());

    let (ok, _, err) = liaison(&dev_config(), &["render", "no_such_template"]);
    assert!(!ok);
    assert!(
        err.contains("invitation") && err.contains("transcript"),
        "lists the names: {err}"
    );
    let (ok, _, _) = liaison(&dev_config(), &["render", "invitation", "--locale", "fr"]);
    assert!(!ok);
}

#[test]
fn render_eml_is_a_complete_multipart_message() {
    let (ok, out, err) = liaison(&dev_config(), &["render", "invitation", "--eml"]);
    assert!(ok, "{err}");
    let parsed = mail_parser::MessageParser::default()
        .parse(out.as_bytes())
        .expect("parseable");
    let ct = parsed.content_type().expect("a Content-Type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );
    let m = Received::parse(out.as_bytes());
    assert!(m.subject.contains("[ref:"), "{}", m.subject);
    assert_eq!(m.from, "invites@liaison.test");
    assert!(m.reply_to.as_deref().unwrap().starts_with("invites+"));
    assert!(m.text.contains("Northwind Traders"), "{}", m.text);
    assert!(m.html.as_deref().unwrap().contains("mailto:invites+"));
    assert!(m.message_id.ends_with("@liaison.test"), "{}", m.message_id);
    assert_eq!(
        m.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert!(parsed.date().is_some());

    // Partner mails have no HTML part and go to the partner.
    let (ok, out, err) = liaison(
        &dev_config(),
        &["render", "accepted_partner", "--locale", "ko", "--eml"],
    );
    assert!(ok, "{err}");
    let m = Received::parse(out.as_bytes());
    assert_eq!(m.from, "commands@liaison.test");
    assert!(out.contains("To: partner1@liaison.test"), "{out}");
}

#[test]
fn status_json_on_an_empty_store_is_an_empty_list() {
    let (_tmp, path) = temp_config(|t| t);
    let (ok, out, err) = liaison(&path, &["status", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "[]");
    let (ok, out, _) = liaison(&path, &["status"]);
    assert!(ok);
    assert_eq!(out.trim(), "no relationships");
    let (ok, out, _) = liaison(&path, &["status", "alice@contoso.test", "--json"]);
    assert!(ok);
    assert_eq!(out.trim(), "[]");
}
