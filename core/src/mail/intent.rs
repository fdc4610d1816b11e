//! What a customer's new text means: accept, decline, "I removed your
//! permissions", or something else.
//!
//! Pure and conservative, because a wrong verdict changes a relationship
//! while a missed one only costs a support round trip: the customer's mail
//! then goes to the partner as a support request, and a customer who
//! really meant "accept" is asked again.
//!
//! The rules (the caller strips quotes first):
//! * Only the **first meaningful sentence** decides. Greetings and thanks
//!   before it ("Hi Mina,", "Thanks!", "안녕하세요") are skipped; anything
//!   after it is not read (except a bare answer word that contradicts it,
//!   which makes the reply [`Intent::Unclear`]).
//! * That sentence must be **short** (at most [`MAX_ANSWER_WORDS`] words and
//!   [`MAX_ANSWER_CHARS`] characters) and **not a question**: no `?`, no
//!   question word or inverted opener ("How …", "Can I …", "어떻게",
//!   "…나요"), no condition ("If I decline …", "…하면"). Such a sentence
//!   is a support request, whatever words it contains.
//! * A **negated** acceptance ("I do not accept", "수락하지 않습니다") is a
//!   decline; a negated removal ("we have not removed …") is nothing.
//! * "Permissions removed" needs a statement that it **was done** (a past
//!   form: "removed", "revoked", "제거했습니다"), about the partner's
//!   **permissions or access** ("your admin permissions", "the delegated
//!   access", "관리자 권한"), not a wish or a request ("I want to …",
//!   "please …", "해 주세요") and not about somebody else's account
//!   ("… for our employee", "직원의 …").
//! * A sentence that both accepts and declines is [`Intent::Unclear`].

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

/// Only this many non-empty lines at the top are read at all.
const LINES_READ: usize = 3;
/// How many greeting or thank-you sentences may come before the answer.
const MAX_PLEASANTRIES: usize = 2;
/// An answer longer than this many words is prose, not an answer.
pub const MAX_ANSWER_WORDS: usize = 12;
/// An answer longer than this many characters is prose, not an answer.
pub const MAX_ANSWER_CHARS: usize = 100;
/// A line at least this long without a sentence end is hard-wrapped
/// prose: its sentence goes on in the next line.
const WRAPPED_LINE: usize = 60;

const ACCEPT_WORDS: &[&str] = &[
    "accept",
    "accepted",
    "accepting",
    "yes",
    "yep",
    "agree",
    "agreed",
    "approve",
    "approved",
    "ok",
    "okay",
    "confirm",
    "confirmed",
];
const DECLINE_WORDS: &[&str] = &[
    "decline", "declined", "reject", "rejected", "refuse", "refused", "no", "nope",
];
/// "no" in these does not refuse anything.
const NOT_A_NO: &[&str] = &["problem", "problems", "worries", "worry", "issue", "issues"];
/// A negator before an accept word turns it into a decline.
const NEGATORS: &[&str] = &[
    "not",
    "don't",
    "dont",
    "doesn't",
    "didn't",
    "cannot",
    "can't",
    "cant",
    "won't",
    "wont",
    "never",
    "wouldn't",
    "shouldn't",
    "couldn't",
    "haven't",
    "hasn't",
];
/// Words before a noun: an answer word after one of them names a thing.
const DETERMINERS: &[&str] = &[
    "the", "a", "an", "this", "that", "these", "those", "my", "your", "our", "their", "his", "her",
    "its",
];
/// Words that open a question when they start a sentence.
const QUESTION_OPENERS: &[&str] = &[
    "how", "what", "why", "when", "where", "which", "who", "whom", "whose", "can", "could",
    "would", "should", "may", "might", "shall", "will", "is", "are", "am", "was", "were", "do",
    "does", "did", "if", "whether",
];
/// Words that make a sentence a wish, a request or a hypothesis rather
/// than a report of something done.
const REQUEST_WORDS: &[&str] = &[
    "please", "pls", "want", "wants", "wanted", "like", "need", "needs", "help", "how", "trying",
    "try", "going", "will", "can", "could", "able", "should", "must", "if",
];
/// Past forms of removing something.
const REMOVED_VERBS: &[&str] = &["removed", "revoked", "deleted", "withdrawn", "withdrew"];
/// What was removed: the partner's rights.
const PERMISSION_NOUNS: &[&str] = &[
    "permission",
    "permissions",
    "access",
    "privilege",
    "privileges",
    "rights",
    "role",
    "roles",
];
/// Words that make those rights the partner's.
const PARTNER_QUALIFIERS: &[&str] = &[
    "your",
    "yours",
    "delegated",
    "partner",
    "partner's",
    "gdap",
    "dap",
];
/// Weaker qualifiers ("the admin permissions"): enough only when the
/// sentence names nobody else.
const WEAK_QUALIFIERS: &[&str] = &["admin", "administrator", "administrative", "the"];
/// Prepositions that name somebody else ("… for our employee").
const OTHER_PARTY: &[&str] = &["for", "of", "from", "on"];

const GREETINGS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "dear",
    "good",
    "greetings",
    "thanks",
    "thank",
    "cheers",
    "morning",
    "afternoon",
    "evening",
];
const KO_GREETINGS: &[&str] = &["안녕", "감사", "고맙", "수고"];

const KO_ACCEPT_STEMS: &[&str] = &["수락", "승인", "동의"];
const KO_DECLINE_STEMS: &[&str] = &["거절", "거부"];
/// What may follow an accept or decline stem in a plain answer.
const KO_ANSWER_ENDINGS: &[&str] = &[
    "",
    "합니다",
    "함",
    "해요",
    "해",
    "했습니다",
    "했어요",
    "하였습니다",
    "할게요",
    "할께요",
    "하겠습니다",
    "드립니다",
    "입니다",
    "요",
];
const KO_YES: &[&str] = &["네", "예"];
const KO_NO: &[&str] = &["아니요", "아니오", "아뇨"];
/// Tokens or endings that negate: "않습니다", "안 합니다", "못 합니다".
const KO_NEGATORS: &[&str] = &["않", "안", "못", "아직"];
const KO_REMOVE_STEMS: &[&str] = &["제거", "삭제", "해제", "철회", "회수"];
/// Endings (on the verb or as the next token) that say it was done.
const KO_DONE: &[&str] = &[
    "했습니다",
    "했어요",
    "했음",
    "했다",
    "하였습니다",
    "함",
    "완료",
    "완료했습니다",
    "완료하였습니다",
    "완료되었습니다",
    "완료됨",
    "됐습니다",
    "되었습니다",
    "됨",
];
/// Question words and polite question endings.
const KO_QUESTION_WORDS: &[&str] = &[
    "어떻게",
    "왜",
    "무엇",
    "뭐",
    "어디",
    "언제",
    "방법",
    "문의",
    "알려주",
    "알려 주",
    "궁금",
    "도와",
];
const KO_QUESTION_ENDINGS: &[&str] = &[
    "나요", "까요", "니까", "가요", "는지", "을지", "할지", "지요", "죠", "데요", "는데", "을까",
];
/// Wishes and requests: "…하고 싶습니다", "…해 주세요", "부탁".
const KO_REQUEST: &[&str] = &[
    "싶",
    "주세요",
    "주십시오",
    "부탁",
    "원합니다",
    "려고",
    "려면",
    "해야",
    "수 있",
];
/// Somebody else's account or licence.
const KO_OTHER_PARTY: &[&str] = &[
    "직원",
    "사용자",
    "유저",
    "계정",
    "라이선스",
    "라이센스",
    "사원",
    "팀원",
    "멤버",
    "퇴사",
];

/// Reads the intent of `new_text` (quotes already removed).
pub fn detect(new_text: &str) -> Intent {
    let lines: Vec<&str> = new_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(LINES_READ)
        .collect();
    let sentences = sentences(&lines);
    let mut verdict = None;
    let mut answer_line = 0;
    for (skipped, s) in sentences.iter().enumerate() {
        let v = judge(&s.text);
        if v == Intent::Other && is_pleasantry(&s.text) && skipped < MAX_PLEASANTRIES {
            continue;
        }
        verdict = Some(v);
        answer_line = s.last_line;
        break;
    }
    let Some(verdict) = verdict else {
        return Intent::Other;
    };
    if matches!(verdict, Intent::Accept | Intent::Decline) {
        // "Accept\nDecline": a later line that is nothing but the other
        // answer makes the reply unclear.
        let contradicted = lines[answer_line + 1..]
            .iter()
            .filter_map(|l| bare_answer(l))
            .any(|v| v != verdict);
        if contradicted {
            return Intent::Unclear;
        }
    }
    verdict
}

/// A sentence of the reply and the last line it came from.
struct Sentence {
    text: String,
    last_line: usize,
}

/// Splits the first lines into sentences. A line ends a sentence unless
/// it is long and unpunctuated (a hard-wrapped paragraph).
fn sentences(lines: &[&str]) -> Vec<Sentence> {
    let mut out = Vec::new();
    let mut current = String::new();
    for (n, line) in lines.iter().enumerate() {
        if !current.is_empty() {
            current.push(' ');
        }
        let mut rest = *line;
        while let Some((end, len)) = sentence_end(rest) {
            current.push_str(&rest[..end + len]);
            out.push(Sentence {
                text: std::mem::take(&mut current),
                last_line: n,
            });
            rest = rest[end + len..].trim_start();
        }
        current.push_str(rest);
        let wrapped = line.chars().count() >= WRAPPED_LINE && !rest.is_empty();
        if !wrapped && !current.trim().is_empty() {
            out.push(Sentence {
                text: std::mem::take(&mut current),
                last_line: n,
            });
        }
    }
    if !current.trim().is_empty() {
        out.push(Sentence {
            text: current,
            last_line: lines.len().saturating_sub(1),
        });
    }
    out
}

/// Byte position and length of the first sentence end in `s`: `.`, `!`,
/// `?` or their full-width forms, followed by a space or the end.
fn sentence_end(s: &str) -> Option<(usize, usize)> {
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?' | '。' | '！' | '？') {
            let mut len = c.len_utf8();
            // Runs such as "?!" or "..." end together.
            while let Some(&(_, n)) = chars.peek() {
                if matches!(n, '.' | '!' | '?' | '。' | '！' | '？') {
                    len += n.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let after = &s[i + len..];
            if after.is_empty() || after.starts_with(char::is_whitespace) {
                return Some((i, len));
            }
        }
    }
    None
}

/// Lower-cased words, apostrophes unified, punctuation dropped.
fn words(sentence: &str) -> Vec<String> {
    sentence
        .to_lowercase()
        .replace(['’', '‘', '`'], "'")
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

fn is_hangul(w: &str) -> bool {
    w.chars().any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c))
}

/// A greeting or thanks that says nothing about the request.
fn is_pleasantry(sentence: &str) -> bool {
    let w = words(sentence);
    let Some(first) = w.first() else {
        return true;
    };
    w.len() <= 6
        && (GREETINGS.contains(&first.as_str())
            || KO_GREETINGS.iter().any(|g| first.starts_with(g))
            || (w.len() <= 2 && w.iter().any(|x| x.ends_with('님') || x.ends_with("님께"))))
}

/// Whether the sentence asks, or supposes, rather than answers.
fn is_question(sentence: &str, w: &[String]) -> bool {
    if sentence.contains(['?', '？']) {
        return true;
    }
    // An opener at the start, or after a greeting and a name ("Hi Mina,
    // how do I …").
    let after_greeting = w.first().is_some_and(|f| GREETINGS.contains(&f.as_str()));
    let window = if after_greeting { 4 } else { 1 };
    for p in 0..w.len().min(window) {
        let next = w.get(p + 1).map(String::as_str);
        let negated_do = matches!(w[p].as_str(), "do" | "does" | "did") && next == Some("not");
        if QUESTION_OPENERS.contains(&w[p].as_str()) && !negated_do {
            return true;
        }
    }
    if KO_QUESTION_WORDS.iter().any(|q| sentence.contains(q)) {
        return true;
    }
    let ko: Vec<&String> = w.iter().filter(|x| is_hangul(x)).collect();
    if let Some(last) = ko.last() {
        if KO_QUESTION_ENDINGS.iter().any(|e| last.ends_with(e)) {
            return true;
        }
    }
    // "거절하면 …", "수락하시면": a condition, not an answer.
    ko.iter().any(|x| {
        x.ends_with("하면") || x.ends_with("시면") || x.starts_with("만약") || x.starts_with("만일")
    })
}

/// Korean answer token: `stem` followed by a plain answer ending.
fn ko_answer(token: &str, stems: &[&str]) -> bool {
    stems.iter().any(|s| {
        token
            .strip_prefix(s)
            .is_some_and(|rest| KO_ANSWER_ENDINGS.contains(&rest))
    })
}

/// Whether Korean token `i` is negated: an ending with 않/못, or a
/// negator token right before or after it ("안 합니다", "하지 않습니다").
fn ko_negated(w: &[String], i: usize) -> bool {
    let t = &w[i];
    let own = t.contains('않') || t.ends_with("하지") || t.ends_with("지");
    let before = i > 0 && KO_NEGATORS.iter().any(|n| w[i - 1].starts_with(n));
    let after = w
        .get(i + 1)
        .is_some_and(|n| KO_NEGATORS.iter().any(|x| n.starts_with(x)));
    own || before || after
}

/// The verdict of one sentence.
fn judge(sentence: &str) -> Intent {
    let w = words(sentence);
    if w.is_empty() || w.len() > MAX_ANSWER_WORDS || sentence.chars().count() > MAX_ANSWER_CHARS {
        return Intent::Other;
    }
    let question = is_question(sentence, &w);
    let mut accept = false;
    let mut decline = false;
    for (i, t) in w.iter().enumerate() {
        let t = t.as_str();
        let negated_en = w[..i].iter().any(|x| NEGATORS.contains(&x.as_str()));
        // "the approve button", "a decline notice": a noun, not an answer.
        let after_determiner = i > 0 && DETERMINERS.contains(&w[i - 1].as_str());
        if after_determiner {
            continue;
        }
        if ACCEPT_WORDS.contains(&t) {
            if negated_en {
                decline = true;
            } else {
                accept = true;
            }
        } else if DECLINE_WORDS.contains(&t) {
            let harmless_no =
                t == "no" && w.get(i + 1).is_some_and(|n| NOT_A_NO.contains(&n.as_str()));
            if !harmless_no {
                decline = true;
            }
        } else if KO_ACCEPT_STEMS.iter().any(|s| t.starts_with(s)) {
            // "수락하지 않습니다": a negated accept is a decline.
            if ko_negated(&w, i) {
                decline = true;
            } else if ko_answer(t, KO_ACCEPT_STEMS) {
                accept = true;
            }
        } else if ko_answer(t, KO_DECLINE_STEMS) && !ko_negated(&w, i) {
            decline = true;
        } else if KO_YES.contains(&t) {
            accept = true;
        } else if KO_NO.contains(&t) {
            decline = true;
        }
    }
    if question {
        // "accept or decline?" names the choice without making it.
        return if accept && decline {
            Intent::Unclear
        } else {
            Intent::Other
        };
    }
    if removal_reported(sentence, &w) {
        return if accept || decline {
            Intent::Unclear
        } else {
            Intent::PermissionsRemoved
        };
    }
    match (accept, decline) {
        (true, true) => Intent::Unclear,
        (true, false) => Intent::Accept,
        (false, true) => Intent::Decline,
        (false, false) => Intent::Other,
    }
}

/// "I removed your admin permissions", "관리자 권한을 제거했습니다": a
/// statement that the partner's rights are gone.
fn removal_reported(sentence: &str, w: &[String]) -> bool {
    let has = |list: &[&str]| w.iter().any(|x| list.contains(&x.as_str()));
    let negated = has(NEGATORS) || has(&["no", "never", "yet"]);
    let english = !negated
        && !has(REQUEST_WORDS)
        && has(REMOVED_VERBS)
        && has(PERMISSION_NOUNS)
        && (has(PARTNER_QUALIFIERS) || (has(WEAK_QUALIFIERS) && !has(OTHER_PARTY)));
    if english {
        return true;
    }
    let ko: Vec<&String> = w.iter().filter(|x| is_hangul(x)).collect();
    if ko.is_empty()
        || !ko.iter().any(|x| x.starts_with("권한"))
        || KO_REQUEST.iter().any(|r| sentence.contains(r))
        || KO_OTHER_PARTY.iter().any(|o| sentence.contains(o))
    {
        return false;
    }
    (0..w.len()).any(|i| {
        let t = w[i].as_str();
        let Some(rest) = KO_REMOVE_STEMS.iter().find_map(|s| t.strip_prefix(s)) else {
            return false;
        };
        let done = KO_DONE.contains(&rest)
            || (rest.is_empty() && w.get(i + 1).is_some_and(|n| KO_DONE.contains(&n.as_str())));
        done && !ko_negated(w, i)
            && !w[i + 1..]
                .iter()
                .any(|n| KO_NEGATORS.iter().any(|x| n.starts_with(x)))
    })
}

/// A line that is nothing but an answer word ("Decline.", "네").
fn bare_answer(line: &str) -> Option<Intent> {
    let w = words(line);
    let [only] = w.as_slice() else {
        return None;
    };
    let t = only.as_str();
    if ACCEPT_WORDS.contains(&t) || KO_YES.contains(&t) || ko_answer(t, KO_ACCEPT_STEMS) {
        Some(Intent::Accept)
    } else if DECLINE_WORDS.contains(&t) || KO_NO.contains(&t) || ko_answer(t, KO_DECLINE_STEMS) {
        Some(Intent::Decline)
    } else {
        None
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

/// Realistic support questions and answers, English and Korean, written
/// for Liaison (issue 11, point 6): questions and prose that merely
/// contain a lifecycle word must not decide; short plain answers must.
#[cfg(test)]
mod table {
    use super::*;
    use Intent::*;

    const TABLE: &[(&str, Intent)] = &[
        // --- questions and prose with a keyword: never a state change ---
        ("How do I revoke a licence from an employee who left?", Other),
        ("How can I remove a user from our tenant?", Other),
        ("Can you revoke the licence of our former intern", Other),
        ("Should I accept the invitation before Friday?", Other),
        ("What happens if I decline?", Other),
        ("If we decline now, can you invite us again next month", Other),
        ("Is it safe to approve this request?", Other),
        ("Do I need to accept again after the renewal?", Other),
        ("Hi Mina, how do I remove the old admin account", Other),
        ("I want to revoke access for a user who left the company last week.", Other),
        ("Please remove my colleague's licence, he has left us.", Other),
        ("We removed the admin permissions for our old employee.", Other),
        ("Our employee left, so we revoked his licence and deleted his mailbox yesterday.", Other),
        ("We would like to know whether removing your delegated access affects our billing.", Other),
        ("We have not removed your admin permissions.", Other),
        ("I accidentally clicked decline in the portal and need help restoring our setup, thanks", Other),
        ("Yes we had an outage yesterday and the portal was down for hours, please look at it", Other),
        ("The approve button in the admin centre does nothing.", Other),
        ("Where do I confirm the new billing address?", Other),
        ("퇴사한 직원의 라이선스를 어떻게 철회하나요?", Other),
        ("직원 계정을 삭제하려면 어떻게 해야 하나요", Other),
        ("초대를 거절하면 어떻게 되나요?", Other),
        ("수락하기 전에 확인하고 싶은 것이 있습니다", Other),
        ("퇴사한 직원의 권한을 삭제했습니다", Other),
        ("관리자 권한을 해제해 주세요", Other),
        ("권한 철회 방법을 알려주세요", Other),
        ("관리자 권한을 아직 제거하지 않았습니다", Other),
        ("승인 버튼이 보이지 않는데 어디에 있나요?", Other),
        ("동의서 양식을 보내주실 수 있나요", Other),
        // --- short, plain answers: they decide ---
        ("Accept", Accept),
        ("Yes, we accept.", Accept),
        ("Hi Mina,\nWe accept the invitation.\nBest, Jun", Accept),
        ("Thanks!\nApproved.", Accept),
        ("Accepted. How do I add more users afterwards?", Accept),
        ("Decline, thank you.", Decline),
        ("We will not accept this request.", Decline),
        ("No thanks, we handle it ourselves.", Decline),
        ("I don’t agree to this.", Decline),
        ("Hello,\nI removed your admin permissions today.", PermissionsRemoved),
        ("Your delegated admin access has been revoked.", PermissionsRemoved),
        ("We have removed the partner's permissions.", PermissionsRemoved),
        ("수락합니다", Accept),
        ("안녕하세요.\n초대를 수락합니다.\n감사합니다.", Accept),
        ("네, 동의합니다", Accept),
        ("거절합니다. 감사합니다.", Decline),
        ("수락하지 않겠습니다", Decline),
        ("아니요, 괜찮습니다", Decline),
        ("귀사의 관리자 권한을 제거했습니다", PermissionsRemoved),
        ("위임 관리자 권한 해제 완료했습니다.", PermissionsRemoved),
        // --- saying both ---
        ("accept or decline?", Unclear),
        ("Accept\nDecline", Unclear),
        ("수락 또는 거절", Unclear),
    ];

    #[test]
    fn support_questions_do_not_decide_and_answers_do() {
        let mut wrong = Vec::new();
        for (text, want) in TABLE {
            let got = detect(text);
            if got != *want {
                wrong.push(format!("{text:?}: got {got:?}, want {want:?}"));
            }
        }
        assert!(TABLE.len() >= 40);
        assert!(
            wrong.is_empty(),
            "{} wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}
