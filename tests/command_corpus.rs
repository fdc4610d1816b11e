//! The command parser against real replies written by real mail clients.
//!
//! The corpus (third-party data, never committed) is read at test time from
//! `$LIAISON_REPLY_CORPUS` or `../shared/corpus/replies`. Each reply is used
//! as the body of a command mail with a command injected *inside its quoted
//! part*: whatever the client and language, quoted text must never be
//! executed, while a command written above the quote always is.

use liaison_core::command::{parse_script, Command};
use std::path::{Path, PathBuf};

fn corpus_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LIAISON_REPLY_CORPUS") {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/replies");
    dir.is_dir().then_some(dir)
}

fn body_of(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    match path.extension()?.to_str()? {
        "txt" => Some(String::from_utf8_lossy(&bytes).replace("\r\n", "\n")),
        "eml" => liaison_core::mail::inbound::parse(&bytes, 50 << 20)
            .ok()
            .map(|m| m.text),
        "html" => Some(liaison_core::mail::inbound::html_to_text(
            &String::from_utf8_lossy(&bytes),
        )),
        _ => None,
    }
}

const EVIL: &str = "invite evil@evil.test";

fn is_evil(c: &Command) -> bool {
    matches!(c, Command::Invite { customer, .. } if customer == "evil@evil.test")
}

#[test]
fn quoted_commands_are_never_executed_in_real_replies() {
    let Some(dir) = corpus_dir() else {
        eprintln!("reply corpus not found (set LIAISON_REPLY_CORPUS); skipping");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("txt" | "eml" | "html")
            )
        })
        .collect();
    files.sort();
    let (mut with_quote, mut checked) = (0, 0);
    let mut failures = Vec::new();
    for path in &files {
        let Some(body) = body_of(path) else { continue };
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let lines: Vec<&str> = body.lines().collect();
        checked += 1;

        // 1. A command on top of the reply runs, whatever follows.
        let on_top = format!("list\n\n{body}");
        let s = parse_script(&on_top);
        if !matches!(
            s.lines.first().map(|l| &l.parsed),
            Some(Ok(Command::List { .. }))
        ) {
            failures.push(format!("{name}: the command on top was not parsed"));
        }

        // 2. A command inside the quoted part never runs.
        let Some(q) = liaison_core::mail::reply::quote_start(&lines) else {
            continue;
        };
        with_quote += 1;
        let mut injected: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        // Just below the quote header, as a client would quote it…
        injected.insert((q + 1).min(injected.len()), format!("> {EVIL}"));
        // …and unquoted at the very end (bottom of a forwarded original).
        injected.push(EVIL.to_string());
        let text = format!("list\n\n{}", injected.join("\n"));
        let s = parse_script(&text);
        if s.lines.iter().any(|l| l.parsed.as_ref().is_ok_and(is_evil)) {
            failures.push(format!(
                "{name}: a command inside the quoted part was executed"
            ));
        }
    }
    println!("command corpus: {checked} replies checked, {with_quote} with a quoted part");
    assert!(
        checked >= 100,
        "expected the corpus to have 100+ replies, read {checked}"
    );
    assert!(
        with_quote >= 80,
        "expected most replies to quote, found {with_quote}"
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
