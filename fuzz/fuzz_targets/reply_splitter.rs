//! Reply splitting: arbitrary UTF-8 through `liaison_core::mail::reply::split_reply`
//! (and `quote_start`, which partner command mails use).
//!
//! Invariants (the module's documented policy):
//! * `>`-quoted lines are never new text: no line of `new_text` starts with
//!   `>` after leading white space;
//! * `new_text` and `quoted` are trimmed, and every line of either is
//!   (up to surrounding white space) a line of the input — splitting only
//!   selects lines, it never invents or merges text;
//! * `quote_start` points inside the input.
#![no_main]

use liaison_core::mail::reply::{quote_start, split_reply};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let split = split_reply(body);

    for line in split.new_text.lines() {
        assert!(
            !line.trim_start().starts_with('>'),
            "quoted line {line:?} leaked into new_text {:?}",
            split.new_text
        );
    }
    assert_eq!(
        split.new_text.trim(),
        split.new_text,
        "new_text not trimmed"
    );
    assert_eq!(split.quoted.trim(), split.quoted, "quoted not trimmed");

    // split_reply treats CRLF and lone CR as line breaks.
    let normalized = body.replace("\r\n", "\n").replace('\r', "\n");
    let input: HashSet<&str> = normalized.split('\n').map(str::trim).collect();
    for (what, part) in [("new_text", &split.new_text), ("quoted", &split.quoted)] {
        for line in part.lines().map(str::trim).filter(|l| !l.is_empty()) {
            assert!(
                input.contains(line),
                "{what} line {line:?} is not a line of the input"
            );
        }
    }

    let lines: Vec<&str> = body.lines().collect();
    if let Some(q) = quote_start(&lines) {
        assert!(
            q < lines.len(),
            "quote_start {q} past {} lines",
            lines.len()
        );
    }
});
