//! Partner command mails: arbitrary bytes, read as (lossy) UTF-8, through
//! `liaison_core::command::parse_script`.
//!
//! Besides "never panics", it checks what the rest of Liaison relies on:
//! * at most `MAX_COMMANDS` command lines are returned, and no more than
//!   `MAX_UNKNOWN` unknown ones;
//! * every echoed `text` is one non-empty, trimmed line of at most 200
//!   characters and is never a quoted (`>`) line;
//! * every address that reaches a command (the customer of every command,
//!   the support contact of `contact`) is a plain normalised `local@domain`:
//!   no CR/LF, spaces, angle brackets or quotes, lowercase, and stable under
//!   `address::normalize` — this is what keeps a command from injecting mail
//!   headers;
//! * an invitation's name is 1-200 bytes, trimmed, without control
//!   characters, and its locale a supported one.
#![no_main]

use liaison_core::command::{parse_script, Command, CommandError, Stop, MAX_COMMANDS, MAX_UNKNOWN};
use libfuzzer_sys::fuzz_target;

fn check_address(what: &str, a: &str, line: &str) {
    assert!(
        !a.chars().any(
            |c| matches!(c, '\r' | '\n' | ' ' | '\t' | '<' | '>' | '"' | ',' | ';')
                || c.is_whitespace()
                || c.is_control()
        ),
        "{what} {a:?} (from line {line:?}) contains a character that could inject a header"
    );
    assert_eq!(
        liaison_core::mail::address::normalize(a).as_deref(),
        Some(a),
        "{what} {a:?} (from line {line:?}) is not a normalised address"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let script = parse_script(&text);

    assert!(
        script.lines.len() <= MAX_COMMANDS,
        "{} command lines > MAX_COMMANDS",
        script.lines.len()
    );
    if script.stopped == Some(Stop::TooManyCommands) {
        assert_eq!(script.lines.len(), MAX_COMMANDS);
    }
    let unknown = script
        .lines
        .iter()
        .filter(|l| matches!(l.parsed, Err(CommandError::Unknown(_))))
        .count();
    assert!(
        unknown <= MAX_UNKNOWN,
        "{unknown} unknown commands > MAX_UNKNOWN"
    );

    for line in &script.lines {
        let t = &line.text;
        assert!(
            t.chars().count() <= 200,
            "echo longer than 200 chars: {t:?}"
        );
        assert!(!t.is_empty(), "empty command line echoed");
        assert!(!t.contains('\n'), "echo spans lines: {t:?}");
        assert!(
            !t.trim_start().starts_with('>'),
            "quoted line parsed: {t:?}"
        );

        let Ok(cmd) = &line.parsed else { continue };
        match cmd {
            Command::Invite {
                customer,
                name,
                locale,
                ..
            } => {
                check_address("invite customer", customer, t);
                if let Some(n) = name {
                    assert!(
                        !n.is_empty() && n.len() <= 200 && n.trim() == n,
                        "bad invite name {n:?} from {t:?}"
                    );
                    assert!(
                        !n.chars().any(char::is_control),
                        "control character in invite name {n:?} from {t:?}"
                    );
                }
                if let Some(l) = locale {
                    assert!(
                        liaison_core::config::SUPPORTED_LOCALES.contains(&l.as_str()),
                        "unsupported locale {l:?} from {t:?}"
                    );
                }
            }
            Command::Resend { customer }
            | Command::History { customer }
            | Command::Revoked { customer }
            | Command::Restore { customer }
            | Command::Remove { customer } => check_address("customer", customer, t),
            Command::Status {
                customer: Some(customer),
            } => check_address("status customer", customer, t),
            Command::Contact { customer, support } => {
                check_address("contact customer", customer, t);
                check_address("support contact", support, t);
            }
            // Commands without addresses, and any added later.
            _ => {}
        }
    }
});
