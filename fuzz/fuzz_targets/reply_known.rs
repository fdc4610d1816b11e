//! Reply splitting with a known original: arbitrary UTF-8 through
//! `reply::split_reply_known`, with the shipped English invitation text as
//! the sent mail, and a second time with the input's own first half as the
//! original (so the matcher's runs, attribution walk and forced ranges are
//! reached often).
//!
//! Invariants, as for `reply_splitter`: no line of `new_text` starts with
//! `>`; both parts are trimmed and made only of input lines; and the
//! known-original split never keeps more new text than there was input.
#![no_main]

use liaison_core::mail::reply::{split_reply_known, KnownOriginal, SentMail};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::sync::OnceLock;

fn invitation() -> &'static KnownOriginal {
    static K: OnceLock<KnownOriginal> = OnceLock::new();
    K.get_or_init(|| {
        KnownOriginal::new(&[SentMail {
            text: include_str!("../../templates/en/invitation.txt.hbs").to_string(),
            html_text: None,
            header_words: vec!["Liaison".into(), "invites@liaison.test".into()],
        }])
    })
}

fn check(body: &str, known: &KnownOriginal) {
    let split = split_reply_known(body, known);
    for line in split.new_text.lines() {
        assert!(
            !line.trim_start().starts_with('>'),
            "quoted line {line:?} leaked into new_text {:?}",
            split.new_text
        );
    }
    assert_eq!(split.new_text.trim(), split.new_text, "new_text not trimmed");
    assert_eq!(split.quoted.trim(), split.quoted, "quoted not trimmed");
    assert!(split.new_text.len() <= body.len());
    let normalized = body.replace("\r\n", "\n").replace('\r', "\n");
    let input: HashSet<&str> = normalized.split('\n').map(str::trim).collect();
    for (what, part) in [("new_text", &split.new_text), ("quoted", &split.quoted)] {
        for line in part.lines().map(str::trim).filter(|l| !l.is_empty()) {
            assert!(input.contains(line), "{what} line {line:?} is not a line of the input");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    check(body, invitation());
    let half = (0..=body.len() / 2).rev().find(|&i| body.is_char_boundary(i)).unwrap_or(0);
    let own = KnownOriginal::new(&[SentMail {
        text: body[..half].to_string(),
        html_text: None,
        header_words: vec![],
    }]);
    check(body, &own);
});
