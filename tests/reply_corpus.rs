//! Evaluates `liaison_core::mail::reply` against the third-party reply corpus.
//!
//! The corpus is third-party test data and is never copied into this
//! repository; it is read at test time from `$LIAISON_REPLY_CORPUS` or from
//! `<CARGO_MANIFEST_DIR>/../shared/corpus/replies` (see its README.md for the
//! file formats). When neither exists the test prints a notice and passes.
//!
//! Two kinds of assertions are made:
//! * a hard one: text a fixture's `.checks` file lists as `quoted_contains`
//!   must never appear in the new text (quoted text must not leak, since a
//!   quoted invitation says both "accept" and "decline"). Only text that
//!   occurs once in the body is unambiguous; a greeting such as "Hej" that
//!   the sender also wrote above the quote is not a leak;
//! * a regression floor on the number of fixtures whose `.expected` text and
//!   `.checks` assertions all hold. The sources disagree on policy (e.g.
//!   keeping "Sent from my iPhone" or inline quotes), so 100% is impossible.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use liaison_core::mail::reply::{new_text, split_reply};

/// Fixtures (all formats) that must keep passing. Set just below the
/// current result so that regressions fail the build.
const MIN_PASSED_TOTAL: usize = 135;
/// Same, counting only the plain-text `.txt` fixtures.
const MIN_PASSED_TXT: usize = 107;

fn corpus_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LIAISON_REPLY_CORPUS") {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/replies");
    dir.is_dir().then_some(dir)
}

fn html_to_text(html: &[u8]) -> String {
    liaison_core::mail::inbound::html_to_text(&String::from_utf8_lossy(html))
}

/// The text body of a complete message; HTML-only messages go through
/// [`html_to_text`] so that they get the same line breaks as `.html`
/// fixtures.
fn eml_to_text(bytes: &[u8]) -> String {
    let Some(msg) = mail_parser::MessageParser::default().parse(bytes) else {
        return String::new();
    };
    let has_plain = msg
        .parts
        .iter()
        .any(|p| matches!(p.body, mail_parser::PartType::Text(_)));
    if !has_plain {
        if let Some(html) = msg.body_html(0) {
            return html_to_text(html.as_bytes());
        }
    }
    msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default()
}

fn normalize_trim(s: &str) -> String {
    s.replace("\r\n", "\n").trim().to_string()
}

fn strip_all_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

struct Outcome {
    passed: bool,
    failures: Vec<String>,
    leaks: Vec<String>,
}

fn evaluate(dir: &Path, name: &str) -> Option<Outcome> {
    let path = dir.join(name);
    let bytes = fs::read(&path).ok()?;
    let is_html = name.ends_with(".html");
    let body = if is_html {
        html_to_text(&bytes)
    } else if name.ends_with(".eml") {
        eml_to_text(&bytes)
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let split = split_reply(&body);
    assert_eq!(
        split.new_text,
        new_text(&body),
        "{name}: new_text shorthand"
    );

    let expected = fs::read(dir.join(format!("{name}.expected"))).ok();
    let checks = fs::read_to_string(dir.join(format!("{name}.checks"))).ok();
    if expected.is_none() && checks.is_none() {
        return None;
    }
    let mut failures = Vec::new();
    let mut leaks = Vec::new();

    if let Some(exp) = expected {
        let exp_text = String::from_utf8_lossy(&exp).into_owned();
        let ok = if is_html {
            // talon and quotequail compare HTML-derived text ignoring all
            // whitespace; some expectations are HTML themselves.
            let exp_plain = if exp_text.trim_start().starts_with('<') {
                html_to_text(&exp)
            } else {
                exp_text.clone()
            };
            strip_all_whitespace(&split.new_text) == strip_all_whitespace(&exp_plain)
        } else {
            normalize_trim(&split.new_text) == normalize_trim(&exp_text)
        };
        if !ok {
            failures.push(format!(
                "expected {:?}\n      got {:?}",
                truncate(&normalize_trim(&exp_text)),
                truncate(&split.new_text)
            ));
        }
    }

    if let Some(checks) = checks {
        for line in checks.lines().filter(|l| !l.trim().is_empty()) {
            let Some((kind, text)) = line.split_once('\t') else {
                continue;
            };
            let mut text = text.replace("\\n", "\n");
            if !name.ends_with(".txt") {
                // fiedl's checks on HTML mails keep entities ("f&uuml;r");
                // our input is decoded text.
                text = decode_entities(&text);
            }
            let reply = split.new_text.trim();
            let ok = match kind {
                "reply_contains" => reply.contains(&text),
                "reply_not_contains" => !reply.contains(&text),
                "reply_startswith" => reply.starts_with(&text),
                "reply_endswith" => reply.ends_with(&text),
                "quoted_contains" => {
                    // Text that occurs once in the body and shows up in the
                    // new text has leaked. Text occurring several times
                    // (a greeting like "Hej" both above and inside the
                    // quote) may legitimately be in both parts.
                    let unique = body.matches(text.as_str()).count() <= 1;
                    let leaked = unique && split.new_text.contains(&text);
                    if leaked {
                        leaks.push(text.clone());
                    }
                    split.quoted.contains(&text) && !leaked
                }
                _ => true,
            };
            if !ok {
                failures.push(format!("{kind} {:?}", truncate(&text)));
            }
        }
    }
    Some(Outcome {
        passed: failures.is_empty(),
        failures,
        leaks,
    })
}

/// Decodes the few named HTML entities that appear in the checks.
fn decode_entities(s: &str) -> String {
    const ENTITIES: &[(&str, &str)] = &[
        ("&auml;", "ä"),
        ("&ouml;", "ö"),
        ("&uuml;", "ü"),
        ("&Auml;", "Ä"),
        ("&Ouml;", "Ö"),
        ("&Uuml;", "Ü"),
        ("&szlig;", "ß"),
        ("&nbsp;", " "),
        ("&quot;", "\""),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&amp;", "&"),
    ];
    ENTITIES
        .iter()
        .fold(s.to_string(), |acc, (from, to)| acc.replace(from, to))
}

fn truncate(s: &str) -> String {
    let mut t: String = s.chars().take(160).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

#[test]
fn reply_corpus() {
    let Some(dir) = corpus_dir() else {
        println!(
            "reply corpus not found (set LIAISON_REPLY_CORPUS or place it at ../shared/corpus/replies); skipping"
        );
        return;
    };
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("read corpus dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt") || n.ends_with(".eml") || n.ends_with(".html"))
        .collect();
    names.sort();

    // source -> (evaluated, passed)
    let mut table: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut evaluated, mut passed, mut txt_evaluated, mut txt_passed) = (0, 0, 0, 0);
    let mut all_leaks = Vec::new();
    let verbose = std::env::var_os("LIAISON_REPLY_CORPUS_VERBOSE").is_some();

    for name in &names {
        let Some(outcome) = evaluate(&dir, name) else {
            continue;
        };
        let source = name.split("__").next().unwrap_or("?").to_string();
        let entry = table.entry(source).or_default();
        entry.0 += 1;
        evaluated += 1;
        let is_txt = name.ends_with(".txt");
        if is_txt {
            txt_evaluated += 1;
        }
        if outcome.passed {
            entry.1 += 1;
            passed += 1;
            if is_txt {
                txt_passed += 1;
            }
        } else {
            println!("FAIL {name}");
            if verbose {
                for f in &outcome.failures {
                    println!("    {f}");
                }
            }
        }
        for leak in outcome.leaks {
            all_leaks.push(format!("{name}: {leak:?}"));
        }
    }

    println!("\n{:<12} {:>6} {:>6}", "source", "passed", "of");
    for (source, (n, p)) in &table {
        println!("{source:<12} {p:>6} {n:>6}");
    }
    println!("{:<12} {passed:>6} {evaluated:>6}", "TOTAL");
    println!("{:<12} {txt_passed:>6} {txt_evaluated:>6}", "TOTAL .txt");

    assert!(
        all_leaks.is_empty(),
        "quoted text leaked into new text:\n{}",
        all_leaks.join("\n")
    );
    assert!(
        passed >= MIN_PASSED_TOTAL,
        "corpus regression: {passed} fixtures passed, floor is {MIN_PASSED_TOTAL}"
    );
    assert!(
        txt_passed >= MIN_PASSED_TXT,
        "corpus regression: {txt_passed} .txt fixtures passed, floor is {MIN_PASSED_TXT}"
    );
}
