//! Finding Liaison's own mail quoted in a reply, by its content.
//!
//! The header heuristics in the parent module have to recognise how a mail
//! client introduces a quote ("On … wrote:", "보낸 사람:", …), and a client
//! or language nobody has seen yet defeats them. For a reply to a mail
//! Liaison sent, there is a better witness: Liaison knows that mail's exact
//! text and HTML. Wherever a long enough run of its words shows up in the
//! reply, in order, that is the quoted copy — whatever prefixes (`>`, `|`,
//! Supercite `AB>`), re-wrapping, collapsed white space, changed
//! punctuation or HTML→text conversion the client applied, and whatever
//! language its attribution line is in.
//!
//! How (one pass over the reply, memory independent of its size):
//! * Both texts become streams of *tokens*: runs of letters and digits,
//!   lower-cased; each CJK ideograph or kana is a token of its own (those
//!   scripts wrap anywhere). Quote prefixes at the start of a line are
//!   dropped first, and punctuation and line breaks are no tokens at all.
//! * Every [`GRAM`] consecutive tokens of the original are hashed into a
//!   set. The reply is scanned token by token; a *run* is a stretch where
//!   every window of [`GRAM`] tokens is in that set. Runs shorter than
//!   [`MIN_RUN_TOKENS`] are chance (customers write "on behalf of" too).
//! * The lines the runs cover are the quoted copy. When the copy is not
//!   `>`-marked (Outlook and webmail paste it as plain text), every line
//!   from its first run to its last is quoted, and so is everything after
//!   it unless the copy reached the original's end (only then is text below
//!   it a bottom-posted answer rather than more of a shortened copy).
//! * The lines just above the copy are its attribution or header block if
//!   they look like one (a date, an address, a trailing colon, a header
//!   field, a rule) and one of them names the sender, the subject, a date
//!   or an address: those are quoted too, in any language.
//!
//! The result is a set of line ranges that the splitter treats as quoted;
//! the splitter's own rules still apply to everything else (no known
//! original, a forward, an older message quoted below Liaison's).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::{
    clean_line, field_kind, has_address, has_digit, is_rule, is_separator_header, TextLines,
};

/// Tokens per hashed window. Three words in a row are rare by chance but
/// short enough that one changed word (a client's "[cid:…]", a re-encoded
/// link) costs only a few tokens of the run.
pub const GRAM: usize = 3;
/// A run must have this many tokens to count as a quoted copy.
pub const MIN_RUN_TOKENS: usize = 6;
/// Only the first this many tokens of an original are indexed: Liaison's
/// mails are a few hundred words, a relayed ticket text at most a few
/// thousand; the index stays bounded whatever a caller passes.
pub const MAX_ORIGINAL_TOKENS: usize = 20_000;
/// At most this many runs are kept (a hostile reply repeating a phrase a
/// million times makes a million runs): further ones extend the last.
const MAX_RUNS: usize = 512;
/// The copy "reaches the original's end" when its last run ends within
/// this many tokens of the end (clients drop a signature, a footer).
const TAIL_SLACK_TOKENS: usize = 14;
/// How many lines above the copy may form its attribution or header block.
const MAX_ATTRIBUTION_LINES: usize = 10;
/// How many lines between a header block and the copy may be passed over.
const MAX_SKIPPED_LINES: usize = 3;
/// Lines longer than this are prose, never part of an attribution.
const MAX_ATTRIBUTION_BYTES: usize = 300;

/// A mail Liaison sent, as the matcher needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentMail {
    /// Its plain-text part.
    pub text: String,
    /// Its HTML part converted to text (a client that quotes the HTML part
    /// quotes what a reader saw), if it had one.
    pub html_text: Option<String>,
    /// Words a client puts in the attribution: the sender's display name
    /// and address, the subject. Lower-cased when indexed.
    pub header_words: Vec<String>,
}

impl SentMail {
    /// What the matcher needs of a mail as Liaison sent it (the RFC 5322
    /// text kept in the outbox and sent log): its text and HTML parts and
    /// its From name, From address and subject. `None` when it does not
    /// parse as a mail.
    pub fn from_raw(raw: &[u8]) -> Option<SentMail> {
        let msg = mail_parser::MessageParser::default().parse(raw)?;
        let text = msg
            .text_bodies()
            .find(|p| matches!(p.body, mail_parser::PartType::Text(_)))
            .and_then(|p| p.text_contents())
            .unwrap_or_default()
            .replace("\r\n", "\n");
        let html_text = msg
            .html_bodies()
            .find(|p| matches!(p.body, mail_parser::PartType::Html(_)))
            .and_then(|p| p.text_contents())
            .map(|h| crate::mail::inbound::html_to_text(h).replace("\r\n", "\n"));
        let mut header_words = Vec::new();
        if let Some(from) = msg.from().and_then(|a| a.first()) {
            header_words.extend(from.name().map(str::to_string));
            header_words.extend(from.address().map(str::to_string));
        }
        header_words.extend(msg.subject().map(str::to_string));
        Some(SentMail {
            text,
            html_text,
            header_words,
        })
    }
}

/// The index of one or more sent mails, built once per reply decision.
#[derive(Debug, Default)]
pub struct KnownOriginal {
    /// One index per text (each mail's text part, its HTML part).
    texts: Vec<TextIndex>,
    /// Lower-cased, trimmed header words (at least 4 bytes each).
    header_words: Vec<String>,
}

impl KnownOriginal {
    /// Indexes the given sent mails (their text and HTML parts).
    pub fn new(mails: &[SentMail]) -> Self {
        let mut k = KnownOriginal::default();
        for mail in mails {
            k.add_text(&mail.text);
            if let Some(h) = &mail.html_text {
                k.add_text(h);
            }
            for w in &mail.header_words {
                let w = w.trim().to_lowercase();
                if w.len() >= 4 && !k.header_words.contains(&w) {
                    k.header_words.push(w);
                }
            }
        }
        k
    }

    /// Whether nothing was indexed (no original known).
    pub fn is_empty(&self) -> bool {
        self.texts.iter().all(|t| t.grams.is_empty())
    }

    fn add_text(&mut self, text: &str) {
        let mut index = TextIndex::default();
        let mut window = [0u64; GRAM];
        let mut n = 0usize;
        for line in TextLines::new(text) {
            for_each_token(strip_quote_prefix(line).0, &mut |h| {
                window.rotate_left(1);
                window[GRAM - 1] = h;
                n += 1;
                if n >= GRAM {
                    let pos = (n - 1) as u32;
                    index
                        .grams
                        .entry(gram_hash(&window))
                        .and_modify(|e| *e = REPEATED)
                        .or_insert(pos);
                }
            });
            if n >= MAX_ORIGINAL_TOKENS {
                break;
            }
        }
        index.len = n as u32;
        if !index.grams.is_empty() {
            self.texts.push(index);
        }
    }

    /// The lines of `reply` (in [`TextLines`] numbering) that are Liaison's
    /// quoted mail, as sorted, disjoint, inclusive ranges.
    pub(super) fn quoted_lines(&self, reply: &str) -> Vec<(usize, usize)> {
        if self.is_empty() {
            return Vec::new();
        }
        let runs = self.runs(reply);
        let Some(first) = runs.first() else {
            return Vec::new();
        };
        // The run that ends last decides whether the copy is complete.
        let last = runs
            .iter()
            .max_by_key(|r| (r.last_line, r.orig_last != REPEATED))
            .unwrap_or(first);
        let marked: usize = runs.iter().map(|r| r.marked_lines).sum();
        let unmarked: usize = runs.iter().map(|r| r.unmarked_lines).sum();
        let mut ranges: Vec<(usize, usize)> = if marked > unmarked {
            // A `>`-marked copy: the runs' lines are quoted; unmarked text
            // between them is an inline answer, which the splitter keeps.
            runs.iter().map(|r| (r.first_line, r.last_line)).collect()
        } else {
            let len = self.texts.get(last.text).map_or(0, |t| t.len as usize);
            let complete = last.orig_last != REPEATED
                && last.orig_last as usize + TAIL_SLACK_TOKENS + 1 >= len;
            let end = if complete { last.last_line } else { usize::MAX };
            vec![(first.first_line, end)]
        };
        if let Some(from) = self.attribution_above(reply, first.first_line) {
            ranges.insert(0, (from, first.first_line.saturating_sub(1)));
        }
        merge_ranges(&mut ranges);
        ranges
    }

    /// The runs of the original's tokens in `reply`, in order.
    fn runs(&self, reply: &str) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        let mut window = [0u64; GRAM];
        let mut window_lines = [0usize; GRAM];
        let mut n = 0usize;
        // The run under way in each text.
        let mut current: Vec<Option<Run>> = vec![None; self.texts.len()];
        for (line_no, line) in TextLines::new(reply).enumerate() {
            let (rest, marked) = strip_quote_prefix(line);
            for_each_token(rest, &mut |h| {
                window.rotate_left(1);
                window[GRAM - 1] = h;
                window_lines.rotate_left(1);
                window_lines[GRAM - 1] = line_no;
                n += 1;
                if n < GRAM {
                    return;
                }
                let gram = gram_hash(&window);
                for (text, (index, slot)) in self.texts.iter().zip(current.iter_mut()).enumerate() {
                    let hit = index.grams.get(&gram).copied();
                    // A run goes on only in the original's order: a window
                    // found elsewhere in the text starts a new run.
                    let continues = match (hit, slot.as_ref()) {
                        (Some(pos), Some(run)) => {
                            pos == REPEATED
                                || run.orig_last == REPEATED
                                || pos == run.orig_last.wrapping_add(1)
                        }
                        _ => false,
                    };
                    if !continues {
                        if let Some(run) = slot.take() {
                            push_run(&mut runs, run);
                        }
                    }
                    let Some(pos) = hit else { continue };
                    let run = slot.get_or_insert(Run {
                        first_line: window_lines[0],
                        last_line: line_no,
                        tokens: GRAM - 1,
                        text,
                        orig_last: pos,
                        counted_line: None,
                        marked_lines: 0,
                        unmarked_lines: 0,
                    });
                    run.tokens += 1;
                    if pos != REPEATED || run.orig_last != REPEATED {
                        run.orig_last = if pos == REPEATED {
                            run.orig_last.saturating_add(1)
                        } else {
                            pos
                        };
                    }
                    run.last_line = line_no;
                    if run.counted_line != Some(line_no) {
                        run.counted_line = Some(line_no);
                        if marked {
                            run.marked_lines += 1;
                        } else {
                            run.unmarked_lines += 1;
                        }
                    }
                }
            });
        }
        for run in current.into_iter().flatten() {
            push_run(&mut runs, run);
        }
        // Runs of different texts cover the same lines; the range logic
        // wants them in reply order.
        runs.sort_by_key(|r| (r.first_line, r.last_line));
        runs
    }

    /// The first line of the attribution or header block directly above
    /// line `copy_start`, if there is one.
    fn attribution_above(&self, reply: &str, copy_start: usize) -> Option<usize> {
        if copy_start == 0 {
            return None;
        }
        // The last lines before the copy, newest last; borrowed, so this
        // second pass costs no copy of the reply.
        let from = copy_start.saturating_sub(MAX_ATTRIBUTION_LINES + 3);
        let above: Vec<&str> = TextLines::new(reply)
            .skip(from)
            .take(copy_start - from)
            .collect();
        let mut first = None;
        let mut strong = false;
        let mut blanks = 0;
        let mut taken = 0;
        let mut skipped = 0;
        for (k, raw) in above.iter().enumerate().rev() {
            let c = clean_line(raw);
            if c.is_empty() {
                blanks += 1;
                // HTML conversions leave several blank lines above the
                // copy; inside a wrapped attribution or between webmail
                // header fields, three in a row end the block.
                if blanks > 4 || (first.is_some() && blanks > 2) {
                    break;
                }
                continue;
            }
            blanks = 0;
            if taken < MAX_ATTRIBUTION_LINES && self.header_like(&c) {
                strong |= self.strong_evidence(&c);
                taken += 1;
                first = Some(from + k);
                continue;
            }
            // A line that is no header ends the block. Below a block it
            // may be a banner the client put between the header and the
            // copy ("You don't often get email from …"), or the copy's
            // first words changed: up to three such lines are passed over,
            // and count only if a header block with evidence is above.
            if first.is_some() || skipped >= MAX_SKIPPED_LINES || c.len() > MAX_ATTRIBUTION_BYTES {
                break;
            }
            skipped += 1;
        }
        first.filter(|_| strong)
    }

    /// Whether a cleaned line could be part of an attribution or header
    /// block in some language: short, and with a date, an address, a
    /// trailing colon, a field name, a rule or a word of the sent mail's
    /// headers.
    fn header_like(&self, c: &str) -> bool {
        if c.len() > MAX_ATTRIBUTION_BYTES {
            return false;
        }
        let c = c.trim_start_matches(['>', ' ', '*']);
        // What is left of a wrapped attribution's tail ("<", ">", "a").
        let stub = c.chars().filter(|ch| ch.is_alphanumeric()).count() <= 1;
        stub || has_digit(c)
            || c.contains('@')
            || c.contains("mailto:")
            || c.ends_with([':', '：', '<'])
            || c.starts_with('<')
            || is_rule(c)
            || is_separator_header(c)
            || field_kind(c).is_some()
            || self.names_sender(c)
    }

    /// Whether a header-like line says whom or what it quotes: a word of
    /// the sent mail's headers, an address, or a date with a year or time.
    fn strong_evidence(&self, c: &str) -> bool {
        self.names_sender(c)
            || has_address(c)
            || field_kind(c).is_some()
            || is_separator_header(c)
            || has_year_or_time(c)
    }

    fn names_sender(&self, c: &str) -> bool {
        self.header_words.iter().any(|w| c.contains(w.as_str()))
    }
}

/// Hash of a fixed hasher: the same index on every run (SipHash with fixed
/// keys; the keys are Liaison's own text, not a stranger's).
type FixedState = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// The [`GRAM`]-windows of one text.
#[derive(Debug, Default)]
struct TextIndex {
    /// Window hash → position of its last token, or [`REPEATED`] for a
    /// window the text has more than once.
    grams: HashMap<u64, u32, FixedState>,
    /// How many tokens were indexed.
    len: u32,
}

/// Marks a window that occurs more than once in a text: it continues a
/// run from anywhere.
const REPEATED: u32 = u32::MAX;

/// A stretch of the reply whose every [`GRAM`]-window is in the original.
#[derive(Debug, Clone)]
struct Run {
    first_line: usize,
    last_line: usize,
    tokens: usize,
    /// Which indexed text, and the position in it of the run's last
    /// window ([`REPEATED`] while only repeated windows were seen).
    text: usize,
    orig_last: u32,
    /// The last line counted in `marked_lines`/`unmarked_lines`.
    counted_line: Option<usize>,
    /// Lines of the run with and without a quote prefix.
    marked_lines: usize,
    unmarked_lines: usize,
}

fn push_run(runs: &mut Vec<Run>, run: Run) {
    if run.tokens < MIN_RUN_TOKENS {
        return;
    }
    if runs.len() >= MAX_RUNS {
        if let Some(last) = runs.last_mut() {
            last.tokens += run.tokens;
            if run.last_line >= last.last_line {
                last.last_line = run.last_line;
                last.text = run.text;
                last.orig_last = run.orig_last;
            }
            last.marked_lines += run.marked_lines;
            last.unmarked_lines += run.unmarked_lines;
        }
        return;
    }
    runs.push(run);
}

fn merge_ranges(ranges: &mut Vec<(usize, usize)>) {
    ranges.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges.iter() {
        if b < a {
            continue;
        }
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *ranges = out;
}

/// A line without its quote prefix (`>`, `|`, Supercite's `AB>`, nested
/// and spaced), and whether it had one.
pub(super) fn strip_quote_prefix(line: &str) -> (&str, bool) {
    let mut rest = line.trim_start();
    let mut marked = false;
    loop {
        if let Some(r) = rest.strip_prefix(['>', '|']) {
            rest = r.trim_start();
            marked = true;
            continue;
        }
        // Supercite: up to three letters (the author's initials), then `>`.
        let initials = rest
            .char_indices()
            .take_while(|(_, ch)| ch.is_ascii_alphabetic())
            .take(4)
            .count();
        if (1..=3).contains(&initials) && rest[initials..].starts_with('>') {
            rest = rest[initials + 1..].trim_start();
            marked = true;
            continue;
        }
        return (rest, marked);
    }
}

fn is_cjk_char(ch: char) -> bool {
    matches!(ch,
        '\u{3040}'..='\u{30FF}'   // hiragana, katakana
        | '\u{3400}'..='\u{4DBF}' // CJK extension A
        | '\u{4E00}'..='\u{9FFF}' // CJK unified ideographs
        | '\u{F900}'..='\u{FAFF}')
}

/// Calls `emit` with the hash of each token of `s`.
fn for_each_token(s: &str, emit: &mut impl FnMut(u64)) {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut in_token = false;
    for ch in s.chars() {
        if is_cjk_char(ch) {
            if in_token {
                emit(h);
                h = OFFSET;
                in_token = false;
            }
            emit((OFFSET ^ ch as u64).wrapping_mul(PRIME));
        } else if ch.is_alphanumeric() {
            for l in ch.to_lowercase() {
                h = (h ^ l as u64).wrapping_mul(PRIME);
            }
            in_token = true;
        } else if in_token {
            emit(h);
            h = OFFSET;
            in_token = false;
        }
    }
    if in_token {
        emit(h);
    }
}

fn gram_hash(window: &[u64; GRAM]) -> u64 {
    window.iter().fold(0x9e37_79b9_7f4a_7c15u64, |acc, &h| {
        (acc.rotate_left(23) ^ h).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A four-digit year (19xx/20xx) or a clock time (`10:00`, `10.00`,
/// `오전 10:00`): what a date in an attribution has and prose rarely does.
fn has_year_or_time(c: &str) -> bool {
    let b = c.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    (0..b.len()).any(|i| {
        let starts = i == 0 || !b[i - 1].is_ascii_digit();
        let year = starts
            && (b[i..].starts_with(b"19") || b[i..].starts_with(b"20"))
            && digit(i + 2)
            && digit(i + 3)
            && !digit(i + 4);
        let time = starts
            && digit(i)
            && ((b.get(i + 1) == Some(&b':') && digit(i + 2) && digit(i + 3))
                || (digit(i + 1)
                    && matches!(b.get(i + 2), Some(b':') | Some(b'.'))
                    && digit(i + 3)
                    && digit(i + 4)));
        year || time
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_stripped() {
        assert_eq!(strip_quote_prefix("> > hello"), ("hello", true));
        assert_eq!(strip_quote_prefix("AB> hello"), ("hello", true));
        assert_eq!(strip_quote_prefix("| C> hello"), ("hello", true));
        assert_eq!(strip_quote_prefix("ABCD> hello"), ("ABCD> hello", false));
        assert_eq!(strip_quote_prefix("hello"), ("hello", false));
    }

    #[test]
    fn tokens_ignore_punctuation_case_and_wrapping() {
        let mut a = Vec::new();
        for_each_token("To accept, reply", &mut |h| a.push(h));
        let mut b = Vec::new();
        for_each_token("to ACCEPT — reply!", &mut |h| b.push(h));
        assert_eq!(a, b);
        let mut c = Vec::new();
        for_each_token("日本語", &mut |h| c.push(h));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn years_and_times() {
        assert!(has_year_or_time("2026. 1. 6. 오전 10:00"));
        assert!(has_year_or_time("den 6. jan. kl. 10.00"));
        assert!(!has_year_or_time("call me at 555"));
        assert!(!has_year_or_time("order 202612"));
    }
}
