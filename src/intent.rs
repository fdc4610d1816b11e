//! What a customer's new text means: accept, decline, "I removed your
//! permissions", or something else.
//!
//! Pure and conservative. Only short lines at the top of the *new* text
//! count (the caller strips quotes first), so a long support question that
//! happens to contain "yes" is not an acceptance, and a reply that says both
//! "accept" and "decline" is [`Intent::Unclear`] rather than a guess.

/// The meaning of a customer's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Grants the request ("Accept", "I accept", "yes", "수락합니다").
    Accept,
    /// Refuses it ("decline", "no thanks", "거절합니다").
    Decline,
    /// Reports that the partner's admin permissions were removed.
    PermissionsRemoved,
    /// Says several of the above at once.
    Unclear,
    /// None of the above: a question or other message.
    Other,
}

/// Only this many non-empty lines at the top are read for a verdict.
const LINES_READ: usize = 3;
/// A line longer than this is prose, not an answer.
const MAX_ANSWER_LINE: usize = 80;

const REMOVED_PHRASES: &[&str] = &[
    "removed your admin",
    "removed the admin",
    "removed your permission",
    "removed the permission",
    "removed your delegated",
    "removed the delegated",
    "removed admin permission",
    "removed delegated",
    "have removed your access",
    "revoke",
    "권한을 제거",
    "권한을 삭제",
    "권한을 해제",
    "권한을 철회",
    "권한 제거",
    "권한 해제",
    "권한 철회",
    "권한을 회수",
];

const DECLINE_WORDS: &[&str] = &["decline", "declined", "reject", "refuse", "no", "nope"];
const DECLINE_PHRASES: &[&str] = &[
    "not accept",
    "don't accept",
    "dont accept",
    "cannot accept",
    "can't accept",
    "no thanks",
    "no thank you",
    "거절",
    "거부",
    "아니요",
    "아니오",
    "수락하지 않",
    "수락 안",
    "동의하지 않",
];
const ACCEPT_WORDS: &[&str] = &[
    "accept",
    "accepted",
    "accepting",
    "yes",
    "agree",
    "agreed",
    "approve",
    "approved",
    "ok",
    "okay",
    "confirm",
    "confirmed",
];
const ACCEPT_PHRASES: &[&str] = &["수락", "승인", "동의", "네", "예"];

/// Reads the intent of `new_text` (quotes already removed).
pub fn detect(new_text: &str) -> Intent {
    let head: Vec<String> = new_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(LINES_READ)
        .map(str::to_lowercase)
        .collect();
    let all = head.join("\n");
    if REMOVED_PHRASES.iter().any(|p| all.contains(p)) {
        return Intent::PermissionsRemoved;
    }
    let mut accept = false;
    let mut decline = false;
    for line in head.iter().filter(|l| l.chars().count() <= MAX_ANSWER_LINE) {
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
            .collect();
        let has_decline_phrase = DECLINE_PHRASES.iter().any(|p| line.contains(p));
        decline |= has_decline_phrase || words.iter().any(|w| DECLINE_WORDS.contains(w));
        // "수락하지 않습니다" contains "수락": a negated accept is only a decline.
        if !has_decline_phrase {
            accept |= words.iter().any(|w| ACCEPT_WORDS.contains(w))
                || ACCEPT_PHRASES.iter().any(|p| {
                    // One-syllable Korean answers must stand alone.
                    if p.chars().count() == 1 {
                        words.iter().any(|w| w == p)
                    } else {
                        line.contains(p)
                    }
                });
        }
    }
    match (accept, decline) {
        (true, true) => Intent::Unclear,
        (true, false) => Intent::Accept,
        (false, true) => Intent::Decline,
        (false, false) => Intent::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts() {
        for t in [
            "Accept",
            "accept",
            "I accept.",
            "Yes",
            "yes please",
            "수락합니다",
            "수락",
            "네",
            "Hi,\nI accept\nAlice",
            "OK, approved!",
        ] {
            assert_eq!(detect(t), Intent::Accept, "{t:?}");
        }
    }

    #[test]
    fn declines() {
        for t in [
            "Decline",
            "No thanks",
            "no",
            "We do not accept this.",
            "거절합니다",
            "수락하지 않습니다",
        ] {
            assert_eq!(detect(t), Intent::Decline, "{t:?}");
        }
    }

    #[test]
    fn removals() {
        for t in [
            "I removed your admin permissions today.",
            "We have revoked the delegated access",
            "관리자 권한을 제거했습니다",
        ] {
            assert_eq!(detect(t), Intent::PermissionsRemoved, "{t:?}");
        }
    }

    #[test]
    fn unclear_and_other() {
        assert_eq!(detect("accept or decline?"), Intent::Unclear);
        assert_eq!(detect(""), Intent::Other);
        assert_eq!(detect("Can you help me with my invoice?"), Intent::Other);
        // A long line of prose that happens to contain "yes" is no answer.
        let prose = "yes we had an outage yesterday and the portal was down for hours and hours, please look at it";
        assert_eq!(detect(prose), Intent::Other);
        // Words inside other words do not count.
        assert_eq!(detect("Notes on the acceptance test"), Intent::Other);
        assert_eq!(detect("Okinawa"), Intent::Other);
    }
}
