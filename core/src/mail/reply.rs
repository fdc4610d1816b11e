//! Separating the *new* text of an email reply from the quoted older text.
//!
//! Customers answer invitation emails from every imaginable mail client:
//! top-posting above a quoted copy, bottom-posting below it, or answering
//! inline between quoted paragraphs. The quoted invitation itself contains
//! words such as "accept" and "decline", so anything downstream that looks
//! for a decision (or, for partner command mails, for commands) must only
//! ever see the text the sender wrote *now*. This module is the single place
//! that draws that line.
//!
//! The module is pure (no IO, no allocation-heavy machinery, no regex): it
//! works line by line with plain string code so that any input, however
//! large or strange, is handled in roughly linear time and never panics.
//!
//! The policy, in short:
//! * `>`-quoted lines (and `|`-quoted blocks) are never new text.
//! * A reply header ("On … wrote:", its translations, Outlook
//!   `From:/Sent:/To:/Subject:` blocks, "-----Original Message-----",
//!   forward markers) followed by *unquoted* text means everything from the
//!   header on is the older message.
//! * A header followed by a `>` block only introduces that block; text after
//!   the block is new again (bottom-posting, inline replies).
//! * Trailing device signatures ("Sent from my iPhone") and a short `-- `
//!   signature block are dropped from the new text, because they are noise
//!   to every consumer and several clients add them automatically.
//!
//! When in doubt the module prefers classifying text as quoted: a missed
//! customer sentence can be re-asked, but a quoted "accept" that leaks into
//! the new text could trigger an action nobody asked for.

use std::borrow::Cow;
use std::collections::VecDeque;

mod known;
pub use known::{KnownOriginal, SentMail};

/// The parts of a reply body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitReply {
    /// What the sender wrote now (trimmed).
    pub new_text: String,
    /// The quoted/older part: reply headers such as "On … wrote:", `>`
    /// lines, Outlook header blocks and everything after them.
    pub quoted: String,
}

/// Split a plain-text body (already decoded to UTF-8; HTML bodies are
/// converted to text before calling) into new and quoted text.
pub fn split_reply(body: &str) -> SplitReply {
    let doc = Doc::new(TextLines::new(body), TextLines::new(body).count());
    doc.split(Assembler::both())
}

/// `split_reply(body).new_text`, without building the quoted part (what
/// the workflow uses): it costs at most the body's size on top of it.
pub fn new_text(body: &str) -> String {
    let doc = Doc::new(TextLines::new(body), TextLines::new(body).count());
    doc.split(Assembler::new_only(body.len())).new_text
}

/// [`split_reply`] for a reply to mails Liaison sent: the lines where
/// `known` finds their quoted copy (and the attribution above it) are
/// quoted whatever the client made of them; the heuristics decide the
/// rest. With an empty `known` this is [`split_reply`].
pub fn split_reply_known(body: &str, known: &KnownOriginal) -> SplitReply {
    let mut doc = Doc::new(TextLines::new(body), TextLines::new(body).count());
    doc.forced = known.quoted_lines(body);
    doc.split(Assembler::both())
}

/// `split_reply_known(body, known).new_text`, without the quoted part.
pub fn new_text_known(body: &str, known: &KnownOriginal) -> String {
    let mut doc = Doc::new(TextLines::new(body), TextLines::new(body).count());
    doc.forced = known.quoted_lines(body);
    doc.split(Assembler::new_only(body.len())).new_text
}

/// Find where the quoted part of a message begins.
///
/// A quoted section starts at a `>`-quoted line, at the attribution line
/// directly above such a block, or at a reply header such as
/// "On Tue, 1 Jan 2026 at 10:00, Alice <a@b> wrote:", "Le … a écrit :",
/// "Am … schrieb …:", "El … escribió:", "Il … ha scritto:",
/// "Op … geschreven:", "… 写道：", "…님이 작성:",
/// "2016-10-24 15:36 GMT+02:00 Name <…>:", "-----Original Message-----",
/// "----- Ursprüngliche Nachricht -----", Outlook
/// "From: … / Sent: … / To: … / Subject: …" blocks in many languages
/// (Von/Gesendet/An/Betreff, De/Envoyé/À/Objet, Da/Inviato/A/Oggetto,
/// 보낸 사람/보낸 날짜/받는 사람/제목, 发件人/发送时间/收件人/主题, …),
/// "---- On … wrote ----" (Zoho) and forwarded-message markers. Headers
/// wrapped over two or three lines are recognised at their first line.
///
/// Returns the index of the first line of the quoted section, or `None`
/// when the message quotes nothing. Partner command mails use this to stop
/// processing at the first quoted line or reply header. Lines may still
/// carry a trailing `\r`.
pub fn quote_start(lines: &[&str]) -> Option<usize> {
    let raw = lines.iter().map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut doc = Doc::new(raw, lines.len());
    for i in 0..doc.len() {
        doc.advance(i);
        if doc.kind(i) == Kind::Quote || doc.header_at(i).is_some() {
            return Some(i);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Line model
// ---------------------------------------------------------------------------

/// Upper bound on the length of a line (in bytes) that we are willing to
/// examine as a possible header. Real headers are short; refusing to look at
/// huge lines keeps the work per line bounded.
const MAX_HEADER_BYTES: usize = 1200;

/// How many non-blank lines a wrapped "On … wrote:" header may span (a
/// narrow client breaks it after the date, the time and the name).
const MAX_HEADER_LINES: usize = 5;

/// A `-- ` signature longer than this many non-blank lines is more likely
/// real content after a separator than a signature, so it is kept.
const MAX_SIGNATURE_LINES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Blank,
    Quote,
    Text,
}

/// Field kinds of an Outlook-style header block. Requiring several
/// *different* kinds keeps prose lines like "A: yes" from matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    From,
    Date,
    To,
    Subject,
    Cc,
    ReplyTo,
}

impl Field {
    fn bit(self) -> u8 {
        match self {
            Field::From => 1,
            Field::Date => 2,
            Field::To => 4,
            Field::Subject => 8,
            Field::Cc => 16,
            Field::ReplyTo => 32,
        }
    }
}

/// How many lines past the current one the splitter may look at. The
/// deepest look is a rule line, up to three blanks, then an Outlook block
/// of up to 14 lines (`header_at`: 4 + 13), and a line's kind depends on
/// the two lines after it (`|` blocks); 24 leaves a margin.
const LOOK_AHEAD: usize = 24;
/// How many lines before the current one are kept (the wrapped-quote check
/// looks at the previous line).
const LOOK_BEHIND: usize = 3;

/// One line of the reply as the splitter sees it.
struct Line<'a> {
    /// The line as written, without its line break.
    raw: &'a str,
    /// Lower-cased, trimmed line with invisible characters removed; used
    /// for all pattern checks so that bidi marks, zero-width spaces and
    /// BOMs (common in Arabic, Zimbra and iOS mail) do not defeat them.
    /// Borrowed from `raw` when cleaning changes nothing.
    clean: Cow<'a, str>,
    /// Blank, quoted or text; a `|` line becomes quoted once the next
    /// lines show it is part of a `|` block.
    kind: Kind,
    /// Whether this is a text line starting with `|` (see `is_pipe`).
    pipe: bool,
    /// The initials of a Supercite prefix ("ab>"), packed; 0 for none.
    cite: u32,
}

/// Returned for a line outside the window (never in a correct splitter;
/// blank rather than a panic if it ever happened).
static OUTSIDE: Line<'static> = Line {
    raw: "",
    clean: Cow::Borrowed(""),
    kind: Kind::Blank,
    pipe: false,
    cite: 0,
};

/// The reply, read line by line through a small window. Memory stays a
/// few dozen lines, whatever the number of lines: a mail of millions of
/// one-character lines must not cost tens of bytes per line (issue 11).
struct Doc<'a, I> {
    /// The lines not read yet.
    source: I,
    /// The number of lines in the reply.
    len: usize,
    /// The index of `window[0]`.
    first: usize,
    /// Lines `first .. first + window.len()`.
    window: VecDeque<Line<'a>>,
    /// Line ranges (inclusive, sorted) known to be quoted whatever they
    /// look like: Liaison's own mail found by content ([`KnownOriginal`]).
    forced: Vec<(usize, usize)>,
    /// The first entry of `forced` that may still matter.
    forced_at: usize,
}

impl<'a, I: Iterator<Item = &'a str>> Doc<'a, I> {
    /// `len` is the number of lines `source` yields.
    fn new(source: I, len: usize) -> Self {
        Doc {
            source,
            len,
            first: 0,
            window: VecDeque::with_capacity(LOOK_AHEAD + LOOK_BEHIND + 2),
            forced: Vec::new(),
            forced_at: 0,
        }
    }

    /// Moves the window to line `i`: lines `i - LOOK_BEHIND ..= i +
    /// LOOK_AHEAD` are available. `i` never decreases.
    fn advance(&mut self, i: usize) {
        let end = i.saturating_add(LOOK_AHEAD + 1).min(self.len);
        while self.first + self.window.len() < end {
            let Some(raw) = self.source.next() else {
                self.len = self.first + self.window.len();
                break;
            };
            self.push(raw);
        }
        let keep_from = i.saturating_sub(LOOK_BEHIND);
        while self.first < keep_from && !self.window.is_empty() {
            self.window.pop_front();
            self.first += 1;
        }
    }

    /// Whether line `i` lies in a `forced` range; `i` never decreases.
    fn is_forced(&mut self, i: usize) -> bool {
        while let Some(&(_, end)) = self.forced.get(self.forced_at) {
            if end >= i {
                return self.forced[self.forced_at].0 <= i;
            }
            self.forced_at += 1;
        }
        false
    }

    fn push(&mut self, raw: &'a str) {
        let index = self.first + self.window.len();
        let clean = clean_line(raw);
        let kind = if clean.is_empty() {
            Kind::Blank
        } else if clean.starts_with('>') || self.is_forced(index) {
            Kind::Quote
        } else {
            Kind::Text
        };
        let pipe = kind == Kind::Text && is_pipe(&clean);
        let cite = if kind == Kind::Text {
            supercite_initials(&clean)
        } else {
            0
        };
        // Supercite quotes with the author's initials ("AB> …"); two lines
        // in a row with the same initials are a quote, one alone may be
        // prose ("A>B is how we write it").
        let kind = match self.window.back_mut() {
            Some(prev) if cite != 0 && prev.cite == cite => {
                prev.kind = Kind::Quote;
                Kind::Quote
            }
            _ => kind,
        };
        self.window.push_back(Line {
            raw,
            clean,
            kind,
            pipe,
            cite,
        });
        // `|`-quoted blocks (old Gmail, some list software) count as quotes
        // only when at least three consecutive lines use the marker: every
        // line of such a run is in some three `|` lines in a row.
        let n = self.window.len();
        if n >= 3 && self.window.range(n - 3..).all(|l| l.pipe) {
            self.window
                .range_mut(n - 3..)
                .for_each(|l| l.kind = Kind::Quote);
        }
    }

    fn line(&self, i: usize) -> &Line<'a> {
        match i.checked_sub(self.first).and_then(|k| self.window.get(k)) {
            Some(l) => l,
            None => {
                debug_assert!(false, "line {i} is outside the window at {}", self.first);
                &OUTSIDE
            }
        }
    }

    fn kind(&self, i: usize) -> Kind {
        self.line(i).kind
    }

    fn clean(&self, i: usize) -> &str {
        &self.line(i).clean
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Index of the next non-blank line at or after `from`, looking at most
    /// `max_blanks` blank lines ahead.
    fn next_non_blank(&self, from: usize, max_blanks: usize) -> Option<usize> {
        (from..self
            .len()
            .min(from.saturating_add(max_blanks).saturating_add(1)))
            .find(|&j| self.kind(j) != Kind::Blank)
    }

    /// If a reply header starts at line `i`, the number of lines it spans.
    fn header_at(&self, i: usize) -> Option<usize> {
        if self.kind(i) != Kind::Text {
            return None;
        }
        if let Some(n) = self.header_core(i) {
            return Some(n);
        }
        // A horizontal rule directly above a header belongs to it (Outlook's
        // "________" line, discourse's "-----" line, webmail "====").
        if is_rule(self.clean(i)) {
            if let Some(j) = self.next_non_blank(i + 1, 3) {
                if self.kind(j) == Kind::Text {
                    if let Some(n) = self.header_core(j) {
                        return Some(j - i + n);
                    }
                }
            }
        }
        // An attribution line right above a quote block, even in a shape
        // we do not know ("2013/7/20 sam <sam@example.org>").
        if is_loose_attribution(self.clean(i)) {
            if let Some(j) = self.next_non_blank(i + 1, 2) {
                if self.kind(j) == Kind::Quote {
                    return Some(1);
                }
            }
        }
        None
    }

    fn header_core(&self, i: usize) -> Option<usize> {
        let c = self.clean(i);
        if c.len() > MAX_HEADER_BYTES {
            return None;
        }
        if is_separator_header(c) {
            return Some(1);
        }
        // The field a line opens with is looked up once: both block shapes
        // need it, and it is the costly part of their test (issue 15's
        // throughput bound).
        if let Some(first) = field_kind(c) {
            if let Some(n) = self.outlook_block(i, first) {
                return Some(n);
            }
            if is_one_line_header(c, first) {
                return Some(1);
            }
        }
        if let Some(rest) = after_dashed_marker(c) {
            if field_kind(rest).is_some_and(|first| is_one_line_header(rest, first)) {
                return Some(1);
            }
        }
        self.attribution(i, true)
    }

    /// "From: … / Sent: … / To: … / Subject: …" blocks, in any order and
    /// language, possibly with blank lines between fields (some webmailers)
    /// and addresses wrapped onto a continuation line.
    fn outlook_block(&self, i: usize, first: Field) -> Option<usize> {
        let mut seen = first.bit();
        let mut count = 1;
        let mut last = i;
        // Wrapped lines of the current field ("From: Name via the\nportal\n<addr>").
        let mut continuations = 0;
        let end = self.len().min(i + 14);
        for j in i + 1..end {
            match self.kind(j) {
                Kind::Blank => continue,
                Kind::Quote => break,
                Kind::Text => {}
            }
            if let Some(f) = field_kind(self.clean(j)) {
                if seen & f.bit() == 0 {
                    count += 1;
                }
                seen |= f.bit();
                last = j;
                continuations = 0;
            } else if continuations < 2 && last + continuations == j - 1 {
                continuations += 1;
            } else {
                break;
            }
        }
        (count >= 3).then_some(last - i + 1)
    }

    /// "On … wrote:" style attribution lines, possibly wrapped over up to
    /// three lines. `check_next` guards against swallowing the last line of
    /// the new text: if the header also starts on the next line and the
    /// current line reads like the end of a sentence, the header starts
    /// there instead.
    fn attribution(&self, i: usize, check_next: bool) -> Option<usize> {
        // Most candidates are tested as one line: borrow it, and copy only
        // when a second line is joined.
        let mut joined: Cow<'_, str> = Cow::Borrowed("");
        let mut lines = 0;
        let mut blank_used = false;
        let mut j = i;
        while lines < MAX_HEADER_LINES && j < self.len() {
            let c = self.clean(j);
            match self.kind(j) {
                // One blank line inside a wrapped attribution (clients
                // that break it at the address leave one).
                Kind::Blank if lines > 0 && !blank_used => {
                    blank_used = true;
                    j += 1;
                    continue;
                }
                Kind::Blank => return None,
                // "> wrote:": the tail of an attribution wrapped inside its
                // "<address>" looks like a quoted line.
                Kind::Quote if lines > 0 && is_quoted_attribution_tail(c) => {}
                Kind::Quote => return None,
                Kind::Text => {}
            }
            if c.len() > MAX_HEADER_BYTES || joined.len() > MAX_HEADER_BYTES {
                return None;
            }
            if lines == 0 {
                // Only lines that could open a header may be joined with
                // the following ones.
                joined = Cow::Borrowed(c);
            } else {
                if lines == 1 && !could_open_header(self.clean(i)) {
                    return None;
                }
                let owned = joined.to_mut();
                owned.push(' ');
                owned.push_str(c.trim_start_matches(['>', ' ']));
            }
            lines += 1;
            // Asked only by the shapes that need it: `field_kind` costs a
            // look-up in every field table.
            let next_is_block = || {
                self.next_non_blank(j + 1, 2).is_some_and(|n| {
                    self.kind(n) == Kind::Quote || field_kind(self.clean(n)).is_some()
                })
            };
            if is_attribution(&joined, next_is_block) {
                if lines > 1 && check_next && self.later_header_within(i, j) {
                    return None;
                }
                return Some(j - i + 1);
            }
            j += 1;
        }
        None
    }

    /// Whether a header that starts on a line after `i` and ends by line
    /// `j` explains the match better than one starting at `i`. It does when
    /// that later line opens a header on its own (an "On"-style opener or a
    /// date) or when line `i` reads like the end of a sentence; otherwise
    /// the later line is just the wrapped tail ("<addr> kirjoitti:").
    fn later_header_within(&self, i: usize, j: usize) -> bool {
        // A first line that opens an attribution itself ("On Tue, 6 Jan
        // 2026" wrapped by a narrow client) is where it starts.
        let first = self.clean(i);
        if ON_PREFIXES.iter().any(|p| first.starts_with(p))
            && has_digit(first)
            && !ends_sentence(first)
            && first.chars().count() <= 80
        {
            return false;
        }
        (i + 1..=j).any(|m| {
            let c = self.clean(m);
            let opener = has_digit(c) || ON_PREFIXES.iter().any(|p| c.starts_with(p));
            (opener || ends_sentence(self.clean(i)))
                && self
                    .attribution(m, false)
                    .is_some_and(|span| m + span - 1 <= j)
        })
    }

    /// Reads the whole reply once, line by line, writing each line to the
    /// new or the quoted text as it is decided.
    fn split(mut self, mut out: Assembler) -> SplitReply {
        let n = self.len();
        let mut after_quote = false;
        let mut i = 0;
        while i < n {
            self.advance(i);
            if let Some(span) = self.header_at(i) {
                let end = (i + span).min(n);
                let mut j = i;
                while j < end {
                    self.advance(j);
                    out.quoted(self.line(j).raw);
                    j += 1;
                }
                // The header and the blank lines after it are quoted in
                // either case below.
                while j < n {
                    self.advance(j);
                    if self.kind(j) != Kind::Blank {
                        break;
                    }
                    out.quoted(self.line(j).raw);
                    j += 1;
                }
                if j < n && self.kind(j) == Kind::Quote {
                    // The header only introduces a quote block; text
                    // after that block may be new again.
                    i = j;
                    continue;
                }
                // Header followed by the unquoted original (or by
                // nothing): the rest is the older message.
                self.quote_rest(j, &mut out);
                break;
            }
            match self.kind(i) {
                Kind::Quote => {
                    out.quoted(self.line(i).raw);
                    after_quote = true;
                }
                Kind::Blank => out.new_line(self.line(i).raw, true),
                Kind::Text => {
                    if after_quote && self.ends_reply_after_quote(i) {
                        // A signature or mailing-list footer below the
                        // quoted thread: nothing new follows.
                        self.quote_rest(i, &mut out);
                        break;
                    }
                    if out.has_new_text()
                        && could_be_device_signature(self.clean(i))
                        && is_device_signature(self.clean(i))
                    {
                        // "Sent from my iPhone" ends what the sender wrote:
                        // unquoted text below it is the older message.
                        self.quote_rest(i, &mut out);
                        break;
                    }
                    if after_quote && self.is_wrapped_quote_continuation(i) {
                        out.quoted(self.line(i).raw);
                    } else {
                        out.new_line(self.line(i).raw, false);
                    }
                }
            }
            i += 1;
        }
        // The window's cleaned lines are not needed any more; free them
        // before the new text is cleaned up.
        self.window.clear();
        out.finish()
    }

    /// Lines `from..` are all quoted.
    fn quote_rest(&mut self, from: usize, out: &mut Assembler) {
        for k in from..self.len() {
            self.advance(k);
            out.quoted(self.line(k).raw);
        }
    }

    /// After a quote block, a signature delimiter or a long rule starts the
    /// sender's signature or a list footer rather than more reply text.
    fn ends_reply_after_quote(&self, i: usize) -> bool {
        let c = self.clean(i);
        c == "--" || c == "__" || (is_rule(c) && !c.starts_with('='))
    }

    /// Broken clients wrap long quoted lines without re-adding the `>`
    /// marker. Such a fragment sits directly between two quoted lines; a
    /// short answer in the same spot usually starts a sentence, while the
    /// fragment continues a long quoted line or starts in lower case.
    fn is_wrapped_quote_continuation(&self, i: usize) -> bool {
        if i == 0 || i + 1 >= self.len() {
            return false;
        }
        if self.kind(i - 1) != Kind::Quote || self.kind(i + 1) != Kind::Quote {
            return false;
        }
        let prev = self.clean(i - 1).trim_start_matches(['>', ' ']);
        let starts_lower = self
            .clean(i)
            .chars()
            .next()
            .is_some_and(|ch| ch.is_lowercase());
        starts_lower || prev.chars().count() >= 60
    }
}

/// Builds the new and the quoted text while the lines are decided, in one
/// pass and without a list of lines.
///
/// The new text is made of *segments*: runs of new lines, cut where quoted
/// lines were taken out. Each segment loses its leading and trailing blank
/// lines, and segments are joined with one empty line (a paragraph gap).
/// Blank lines inside a segment are written at once and taken back if the
/// segment ends before another non-blank line.
struct Assembler {
    /// The kept lines ("entries") joined with `\n`, possibly followed by
    /// blank lines that may yet be taken back.
    new: String,
    /// The number of entries in `new`.
    entries: usize,
    /// `new.len()` and `entries` after the last non-blank line.
    committed: (usize, usize),
    /// Whether the current segment has a non-blank line yet.
    in_segment: bool,
    /// The quoted lines joined with `\n`.
    quoted: String,
    /// Whether `quoted` has a line yet.
    any_quoted: bool,
    /// Whether the quoted text is wanted at all.
    keep_quoted: bool,
}

impl Assembler {
    fn both() -> Self {
        Assembler {
            new: String::new(),
            entries: 0,
            committed: (0, 0),
            in_segment: false,
            quoted: String::new(),
            any_quoted: false,
            keep_quoted: true,
        }
    }

    /// Only the new text, of a body of `body_len` bytes. The new text is
    /// never longer than the body, so reserving that once avoids growing
    /// by doubling (up to twice the text); the rest is given back.
    fn new_only(body_len: usize) -> Self {
        Assembler {
            new: String::with_capacity(body_len),
            keep_quoted: false,
            ..Self::both()
        }
    }

    fn push_entry(&mut self, line: &str) {
        if self.entries > 0 {
            self.new.push('\n');
        }
        self.new.push_str(line);
        self.entries += 1;
    }

    fn new_line(&mut self, raw: &str, blank: bool) {
        if !self.in_segment {
            if blank {
                return;
            }
            self.in_segment = true;
            if self.entries > 0 {
                self.push_entry("");
            }
        }
        self.push_entry(raw);
        if !blank {
            self.committed = (self.new.len(), self.entries);
        }
    }

    /// Whether a non-blank line was kept as new text.
    fn has_new_text(&self) -> bool {
        self.committed.1 > 0
    }

    fn end_segment(&mut self) {
        self.new.truncate(self.committed.0);
        self.entries = self.committed.1;
        self.in_segment = false;
    }

    fn quoted(&mut self, raw: &str) {
        self.end_segment();
        if !self.keep_quoted {
            return;
        }
        if self.any_quoted {
            self.quoted.push('\n');
        }
        self.quoted.push_str(raw);
        self.any_quoted = true;
    }

    /// Removes banners and signatures and trims both parts.
    fn finish(mut self) -> SplitReply {
        self.end_segment();
        let mut new_text = self.new;
        strip_banner(&mut new_text);
        strip_signature_block(&mut new_text);
        strip_device_signatures(&mut new_text);
        strip_leading_device_signature(&mut new_text);
        trim_in_place(&mut new_text);
        new_text.shrink_to_fit();
        trim_in_place(&mut self.quoted);
        SplitReply {
            new_text,
            quoted: self.quoted,
        }
    }
}

// The clean-ups below work on the assembled new text: its lines are the
// kept entries, and a line is blank exactly when its cleaned form is empty
// (paragraph gaps are empty lines).

fn is_blank_entry(line: &str) -> bool {
    // What `clean_line(line).is_empty()` says, without building it.
    line.chars()
        .all(|ch| is_invisible(ch) || ch.is_whitespace())
}

/// `clean_line(line)` if it is at most `limit` bytes long, else `None`,
/// having built at most about `limit` bytes: the clean-ups only compare
/// short lines, and a line may be megabytes long.
fn clean_line_bounded(line: &str, limit: usize) -> Option<String> {
    let mut s = String::new();
    for ch in line.chars() {
        if is_invisible(ch) {
            continue;
        }
        let mapped = if ch == '\u{00A0}' || ch == '\t' {
            ' '
        } else {
            ch
        };
        for l in mapped.to_lowercase() {
            if l.is_whitespace() {
                // Leading white space is trimmed.
                if !s.is_empty() {
                    s.push(l);
                }
                continue;
            }
            s.push(l);
            // This character stays in the trimmed line.
            if s.len() > limit {
                return None;
            }
        }
    }
    trim_in_place(&mut s);
    Some(s)
}

/// Byte offset where the last line of `s` starts.
fn last_line_start(s: &str) -> usize {
    s.rfind('\n').map_or(0, |p| p + 1)
}

/// Corporate gateways inject "CAUTION: external sender" lines above the
/// reply; they are not something the sender wrote. (The first line is
/// never blank: segments start with a non-blank line.)
fn strip_banner(text: &mut String) {
    if text.is_empty() {
        return;
    }
    let first_end = text.find('\n').unwrap_or(text.len());
    let Some(c) = clean_line_bounded(&text[..first_end], 599) else {
        return;
    };
    let banner = c.len() < 600
        && (c.contains("external sender")
            || c.contains("external email")
            || c.contains("originated from outside")
            || c.starts_with("[external]"));
    if banner {
        let cut = (first_end + 1).min(text.len());
        text.drain(..cut);
    }
}

/// A `--`/`-- ` line followed by a short block is a signature: the first
/// such line with something above it and at most `MAX_SIGNATURE_LINES`
/// non-blank lines below it ends the new text.
fn strip_signature_block(text: &mut String) {
    let mut first_content = None;
    let mut at = 0;
    for line in text.split('\n') {
        if !is_blank_entry(line) {
            first_content = Some(at);
            break;
        }
        at += line.len() + 1;
    }
    let Some(first_content) = first_content else {
        return;
    };
    // Only the last lines can qualify: walk back until more than
    // MAX_SIGNATURE_LINES non-blank lines lie below.
    let mut end = text.len();
    let mut below = 0;
    let mut cut = None;
    loop {
        let start = last_line_start(&text[..end]);
        let line = &text[start..end];
        let c = clean_line_bounded(line, 3);
        if matches!(c.as_deref(), Some("--" | "—")) && start > first_content {
            cut = Some(start);
        }
        if !is_blank_entry(line) {
            below += 1;
            if below > MAX_SIGNATURE_LINES {
                break;
            }
        }
        if start == 0 {
            break;
        }
        end = start - 1;
    }
    if let Some(start) = cut {
        text.truncate(start - 1);
    }
}

/// Drops trailing "Sent from my iPhone"-style lines (never the only line).
fn strip_device_signatures(text: &mut String) {
    loop {
        let mut start = last_line_start(text);
        while is_blank_entry(&text[start..]) {
            if start == 0 {
                text.clear();
                return;
            }
            text.truncate(start - 1);
            start = last_line_start(text);
        }
        let device =
            clean_line_bounded(&text[start..], 300).is_some_and(|c| is_device_signature(&c));
        if start > 0 && device {
            text.truncate(start - 1);
        } else {
            return;
        }
    }
}

/// Drops a device line that some clients put *above* the answer, when
/// something follows it.
fn strip_leading_device_signature(text: &mut String) {
    let Some(end) = text.find('\n') else {
        return;
    };
    let device = clean_line_bounded(&text[..end], 300).is_some_and(|c| is_device_signature(&c));
    if device && !is_blank_entry(&text[end..]) {
        text.drain(..=end);
        trim_in_place(text);
    }
}

fn trim_in_place(s: &mut String) {
    let end = s.trim_end().len();
    s.truncate(end);
    let start = s.len() - s.trim_start().len();
    s.drain(..start);
}

// ---------------------------------------------------------------------------
// Line-level helpers
// ---------------------------------------------------------------------------

/// The lines of a text, split at `\r\n`, `\n` and a lone `\r` (all
/// three are line breaks in mail), without copying it.
struct TextLines<'a> {
    /// What is left; `None` once the last line was returned.
    rest: Option<&'a str>,
}

impl<'a> TextLines<'a> {
    fn new(text: &'a str) -> Self {
        TextLines { rest: Some(text) }
    }
}

impl<'a> Iterator for TextLines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match s.find(['\r', '\n']) {
            None => {
                self.rest = None;
                Some(s)
            }
            Some(p) => {
                let skip = if s[p..].starts_with("\r\n") { 2 } else { 1 };
                self.rest = Some(&s[p + skip..]);
                Some(&s[..p])
            }
        }
    }
}

/// Characters that are invisible but break prefix/suffix checks.
fn is_invisible(ch: char) -> bool {
    matches!(ch,
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}'
        | '\u{FEFF}'
        | '\u{00AD}'
        | '\u{061C}'
        | '\r')
}

/// The line lower-cased and trimmed, invisible characters removed, tabs
/// and no-break spaces as spaces. Borrows the line when that changes
/// nothing (plain lower-case text), so most lines cost no copy.
fn clean_line(line: &str) -> Cow<'_, str> {
    let unchanged = |ch: char| {
        !is_invisible(ch) && ch != '\u{00A0}' && ch != '\t' && {
            let mut lower = ch.to_lowercase();
            lower.next() == Some(ch) && lower.next().is_none()
        }
    };
    if line.chars().all(unchanged) {
        return Cow::Borrowed(line.trim());
    }
    let mut s = String::with_capacity(line.len());
    for ch in line.chars() {
        if is_invisible(ch) {
            continue;
        }
        if ch == '\u{00A0}' || ch == '\t' {
            s.push(' ');
        } else {
            s.extend(ch.to_lowercase());
        }
    }
    trim_in_place(&mut s);
    Cow::Owned(s)
}

/// The packed initials of a Supercite prefix: one to three ASCII letters
/// directly followed by `>` at the start of the line; 0 when there is none.
fn supercite_initials(c: &str) -> u32 {
    let letters = c
        .bytes()
        .take_while(u8::is_ascii_alphabetic)
        .take(4)
        .count();
    if !(1..=3).contains(&letters) || c.as_bytes().get(letters) != Some(&b'>') {
        return 0;
    }
    c.bytes()
        .take(letters)
        .fold(0, |acc, b| (acc << 8) | u32::from(b))
}

/// A `|` line that is no table row (a table row also ends with `|`).
fn is_pipe(c: &str) -> bool {
    c == "|" || (c.starts_with('|') && !c.ends_with('|'))
}

/// "-----", "______", "=====" and similar horizontal rules.
fn is_rule(c: &str) -> bool {
    c.chars().count() >= 5
        && c.chars()
            .all(|ch| matches!(ch, '-' | '_' | '=' | '—' | '–' | '*' | '~' | ' '))
        && c.chars().filter(|ch| *ch != ' ').count() >= 5
}

fn is_dash_like(ch: char) -> bool {
    matches!(ch, '-' | '_' | '=' | '—' | '–' | '*' | ' ' | '~')
}

/// Keywords of "-----Original Message-----" style separators.
const SEPARATOR_KEYWORDS: &[&str] = &[
    "original message",
    "original-nachricht",
    "originalnachricht",
    "ursprüngliche nachricht",
    "message d'origine",
    "message d’origine",
    "message original",
    "mensaje original",
    "messaggio originale",
    "mensagem original",
    "oorspronkelijk bericht",
    "oorspronkelijke bericht",
    "oprindelig",
    "opprinnelig",
    "ursprungligt meddelande",
    "alkuperäinen viesti",
    "eredeti üzenet",
    "wiadomość oryginalna",
    "oryginalna wiadomość",
    "původní zpráva",
    "исходное сообщение",
    "оригинальное сообщение",
    "пересылаемое сообщение",
    "原始邮件",
    "原始郵件",
    "元のメッセージ",
    "원본 메시지",
    "전달된 메시지",
    "forwarded message",
    "weitergeleitete nachricht",
    "message transféré",
    "mensaje reenviado",
    "messaggio inoltrato",
    "mensagem encaminhada",
    "doorgestuurd bericht",
    "videresendt",
    "vidarebefordrat",
    "転送",
    "转发",
    "轉寄",
    "original",
    "forward",
];

/// Forward markers written without dashes.
const FORWARD_PHRASES: &[&str] = &[
    "begin forwarded message",
    "anfang der weitergeleiteten nachricht",
    "début du message réexpédié",
    "début du message transféré",
    "inicio del mensaje reenviado",
    "inizio messaggio inoltrato",
    "begin doorgestuurd bericht",
    "início da mensagem encaminhada",
    "転送されたメッセージ",
    "forwarded message",
];

fn is_separator_header(c: &str) -> bool {
    let leading = c.chars().take_while(|ch| is_dash_like(*ch)).count();
    let dashes = c.chars().take(leading).filter(|ch| *ch != ' ').count();
    if dashes >= 2 {
        let core = c.trim_matches(is_dash_like);
        // Only look at the start of the core: a one-line Samsung header
        // ("--- Ursprüngliche Nachricht ---Von: …") continues after it.
        let head: String = core.chars().take(60).collect();
        return SEPARATOR_KEYWORDS.iter().any(|k| head.contains(k));
    }
    c.chars().count() <= 80 && FORWARD_PHRASES.iter().any(|p| c.starts_with(p))
}

const FROM_KEYS: &[&str] = &[
    "from",
    "von",
    "de",
    "van",
    "da",
    "fra",
    "från",
    "frá",
    "от",
    "від",
    "od",
    "lähettäjä",
    "feladó",
    "από",
    "kimden",
    "من",
    "发件人",
    "寄件者",
    "差出人",
    "보낸 사람",
    "보낸사람",
    "remetente",
    "送信元",
    "mittente",
    "afzender",
    "avsändare",
    "avsender",
    "nadawca",
    "odesílatel",
    "expéditeur",
    "absender",
];
const DATE_KEYS: &[&str] = &[
    "sent",
    "date",
    "datum",
    "gesendet",
    "envoyé",
    "envoyé le",
    "enviado",
    "enviado el",
    "enviada",
    "inviato",
    "data",
    "verzonden",
    "sendt",
    "skickat",
    "lähetetty",
    "elküldve",
    "küldve",
    "dátum",
    "отправлено",
    "дата",
    "надіслано",
    "wysłano",
    "wysłane",
    "发送时间",
    "發送時間",
    "日期",
    "傳送時間",
    "寄件日期",
    "送信日時",
    "日付",
    "보낸 날짜",
    "날짜",
    "تم الإرسال",
    "التاريخ",
    "gönderildi",
    "tarih",
    "message du",
    "odesláno",
    "στάλθηκε",
    "ημερομηνία",
    "päivämäärä",
    "dato",
    "sent on",
];
const TO_KEYS: &[&str] = &[
    "to",
    "adresat",
    "odbiorca",
    "do",
    "an",
    "à",
    "a",
    "aan",
    "til",
    "till",
    "кому",
    "до",
    "do",
    "vastaanottaja",
    "címzett",
    "προς",
    "kime",
    "إلى",
    "收件人",
    "收件者",
    "宛先",
    "받는 사람",
    "받는사람",
    "para",
    "destinatário",
    "送信先",
    "per",
    "adresát",
    "komu",
    "destinataire",
    "empfänger",
];
const SUBJECT_KEYS: &[&str] = &[
    "subject",
    "betreff",
    "objet",
    "asunto",
    "oggetto",
    "onderwerp",
    "emne",
    "ämne",
    "aihe",
    "tárgy",
    "тема",
    "temat",
    "θέμα",
    "konu",
    "الموضوع",
    "主题",
    "主旨",
    "件名",
    "제목",
    "assunto",
    "sujet",
    "předmět",
    "tema",
];
const CC_KEYS: &[&str] = &[
    "cc",
    "kopie",
    "copie à",
    "抄送",
    "副本",
    "참조",
    "копия",
    "kopia",
    "kopi",
];
const REPLY_TO_KEYS: &[&str] = &[
    "reply-to",
    "reply to",
    "risposta",
    "antwort an",
    "répondre à",
    "responder a",
];

/// Every field name, by kind.
const FIELD_TABLES: [(&[&str], Field); 6] = [
    (FROM_KEYS, Field::From),
    (DATE_KEYS, Field::Date),
    (TO_KEYS, Field::To),
    (SUBJECT_KEYS, Field::Subject),
    (CC_KEYS, Field::Cc),
    (REPLY_TO_KEYS, Field::ReplyTo),
];

/// A whole header block on one line, as Yahoo and some webmailers write
/// it ("Von: … An: … Gesendet: … Betreff: …", "Temat: … Nadawca: …
/// Adresat: …"): a line that opens with a field and names at least two
/// other kinds of field, each as a word followed by a colon. `first` is
/// the field the line opens with (`field_kind`).
fn is_one_line_header(c: &str, first: Field) -> bool {
    let mut seen = first.bit();
    let mut count = 1;
    // A field name ends, up to spaces and `*`, at a colon: look at the
    // colons rather than search the line for every name (the line may be
    // 1200 bytes and the names are many; the fuzz target's throughput).
    for (at, _) in c.match_indices([':', '：']) {
        let before = c[..at].trim_end_matches([' ', '*']);
        for (keys, field) in FIELD_TABLES {
            if seen & field.bit() != 0 {
                continue;
            }
            if keys.iter().any(|k| names_field(before, k)) {
                seen |= field.bit();
                count += 1;
                if count >= 3 {
                    return true;
                }
            }
        }
    }
    false
}

/// Whether `before` (the line up to a colon, without the spaces and `*`
/// before it) ends with the field name `key`, after a space or `*`.
fn names_field(before: &str, key: &str) -> bool {
    before
        .strip_suffix(key)
        .is_some_and(|head| head.ends_with([' ', '*']))
}

/// The rest of a line that opens with a dashed marker, as Yahoo writes a
/// forward on one line ("----- İletilen Mesaj ----- Kimden: … Kime: …"):
/// the marker's words are the UI language's, and no list can hold them
/// all, so the fields after it decide ([`is_one_line_header`]).
fn after_dashed_marker(c: &str) -> Option<&str> {
    fn dash(ch: char) -> bool {
        matches!(ch, '-' | '_' | '=' | '—' | '–' | '~')
    }
    // Most lines open with no dash at all: no further look.
    if !c.starts_with(is_dash_like) {
        return None;
    }
    let words = c.trim_start_matches(is_dash_like);
    if c[..c.len() - words.len()]
        .chars()
        .filter(|ch| dash(*ch))
        .count()
        < 2
    {
        return None;
    }
    // The marker ends at the next two dashes in a row.
    let close = words
        .char_indices()
        .zip(words.chars().skip(1))
        .find(|((_, a), b)| dash(*a) && dash(*b))
        .map(|((at, _), _)| at)?;
    let marker = words[..close].trim();
    if marker.is_empty() || marker.chars().count() > 60 || marker.contains([':', '：']) {
        return None;
    }
    Some(words[close..].trim_start_matches(is_dash_like))
}

/// The kind of an Outlook-style `Key: value` header field on this line.
fn field_kind(c: &str) -> Option<Field> {
    let colon = c.find([':', '：'])?;
    let key = c[..colon].trim_matches(|ch: char| ch == '*' || ch.is_whitespace());
    if key.is_empty() || key.len() > 40 {
        return None;
    }
    FIELD_TABLES
        .iter()
        .find(|(keys, _)| keys.contains(&key))
        .map(|(_, f)| *f)
}

/// Verbs that end "On … wrote:" attributions, per language.
const WROTE_VERBS: &[&str] = &[
    "wrote",
    "writes",
    "a écrit",
    "a ecrit",
    "schrieb",
    "escribió",
    "escribio",
    "ha scritto",
    "scrisse",
    "geschreven",
    "schreef",
    "skrev",
    "napisał",
    "napisała",
    "pisze",
    "pisał",
    "pisała",
    "napisal",
    "napisana",
    "napsal",
    "написал",
    "написала",
    "написав",
    "пише",
    "пишет",
    "kirjoitti",
    "írta",
    "escreveu",
    "a scris",
    "έγραψε",
    "كتب",
    "写道",
    "寫道",
    "님이 작성",
    "님의 메일",
    "님이 보낸 메일",
    " 작성",
    "쓴 글",
    "쓰신 글",
    "書きました",
    "のメール",
    "のメッセージ",
    "yazdı",
    "menulis",
    "đã viết",
    "va escriure",
    "ha escrit",
    "kirjutas",
    "rašė",
    "rakstīja",
    "napisao",
    "כתב",
];

/// Words that open an attribution line ("On …", "Am …", "Le …").
const ON_PREFIXES: &[&str] = &[
    "on ", "am ", "le ", "el ", "il ", "op ", "em ", "den ", "w dniu", "dnia ", "in data", "στις",
    "في ", "no dia", "at ", "în ", "dne ", "på ", "el el ",
];

fn has_digit(s: &str) -> bool {
    s.chars().any(|c| c.is_numeric())
}

fn has_address(s: &str) -> bool {
    s.contains('@') || (s.contains('<') && s.contains('>'))
}

fn ends_sentence(c: &str) -> bool {
    c.ends_with(['.', '!', '?', '…'])
}

/// Whether a line may be the first of a wrapped header: it must carry a
/// date or an address. (An "On"/"Il"/"Le" opener alone is not enough: those
/// are ordinary words that start many sentences.)
fn could_open_header(c: &str) -> bool {
    has_digit(c) || has_address(c)
}

/// `next_is_block` says whether a quote block or a header field follows
/// within two blank lines; it is asked (at most once) only when the shape
/// depends on it.
fn is_attribution(joined: &str, next_is_block: impl Fn() -> bool) -> bool {
    if joined.len() > MAX_HEADER_BYTES || joined.chars().count() > 400 {
        return false;
    }
    // Zoho wraps the header in dashes, Zimbra starts it with "- ".
    let s = joined.trim_matches(|ch: char| is_dash_like(ch) || ch.is_whitespace());
    let ends_colon = s.ends_with([':', '：']);
    let digit = has_digit(s);
    let addr = has_address(s);
    let on_prefix = ON_PREFIXES.iter().any(|p| s.starts_with(p));
    // Every shape accepted below needs one of these; most lines of a mail
    // have neither, and skip the search for each language's verb.
    let could_be = if ends_colon {
        digit || addr
    } else {
        (on_prefix && digit) || (starts_with_iso_date_time(s) && next_is_block())
    };
    if !could_be {
        return false;
    }
    // Gmail's "2016-03-03 17:21 GMT+01:00 Some One" above a quote block:
    // neither address nor colon, but an ISO date and time to the minute
    // open no sentence.
    if !ends_colon && !on_prefix {
        return s.chars().count() <= 120 && !ends_sentence(s);
    }
    if let Some(end) = last_verb_end(s) {
        // "… Name wrote:" — the verb directly before the colon. Prose such
        // as "as I wrote 2 days ago:" has words in between.
        let near_end = s.len() - end <= 3;
        if ends_colon && (digit || addr) && (on_prefix || addr || near_end) {
            return true;
        }
        // "Name schrieb am Do. 20. Juni 2024 um 14:49:" (name only, the
        // date after the verb) directly above a quote block.
        if ends_colon && digit && s.chars().count() <= 160 && next_is_block() {
            return true;
        }
        // "Am 20.06.24 um 16:20 schrieb X" (no colon) or Zoho's
        // "---- On … wrote ----": accept only with strong evidence.
        if !ends_colon
            && on_prefix
            && digit
            && !ends_sentence(s)
            && s.chars().count() <= 200
            && (addr || next_is_block())
        {
            return true;
        }
        return false;
    }
    // Date + address + colon, no verb: "2016-10-24 15:36 GMT+02:00 Name
    // <a@b>:", "30.09.2017, 18.30, "X" <a@b>:", "2022年1月1日(金) 9:00 名前 <a@b>:".
    if ends_colon && s.contains('@') && s.chars().filter(|c| c.is_numeric()).count() >= 2 {
        let before = s[..s.len() - s.chars().last().map_or(0, char::len_utf8)].trim_end();
        let last_token = before.rsplit(' ').next().unwrap_or("");
        return before.ends_with(['>', '"', ')', ']']) || last_token.contains('@');
    }
    false
}

/// "2026-01-06 10:00…": a four-digit year, month and day joined by `-`,
/// then a time.
fn starts_with_iso_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let d = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let date = (0..4).all(d)
        && b.get(4) == Some(&b'-')
        && d(5)
        && d(6)
        && b.get(7) == Some(&b'-')
        && d(8)
        && d(9);
    if !date || b.get(10) != Some(&b' ') {
        return false;
    }
    let t = 11;
    (d(t) && b.get(t + 1) == Some(&b':') && d(t + 2) && d(t + 3))
        || (d(t) && d(t + 1) && b.get(t + 2) == Some(&b':') && d(t + 3) && d(t + 4))
}

/// An unrecognised line directly above a quote block that still looks
/// like an attribution: a date and an address.
fn is_quoted_attribution_tail(c: &str) -> bool {
    let rest = c.trim_start_matches(['>', ' ']);
    rest.len() <= 40 && rest.ends_with([':', '：']) && last_verb_end(rest).is_some()
}

/// Where the last of [`WROTE_VERBS`] in `s` ends (the largest end of any
/// occurrence of any verb), in one pass from the end: at each byte only
/// the verbs that end with that byte are compared. This is the costly part
/// of the attribution test, asked of up to five joined lines per candidate
/// line; searching the string once per verb cost about 50 passes.
fn last_verb_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (1..=b.len()).rev().find(|&end| {
        any_in_set(WROTE_VERBS_BY_LAST[usize::from(b[end - 1])], |i| {
            b[..end].ends_with(WROTE_VERBS[i].as_bytes())
        })
    })
}

/// For each byte, the verbs of [`WROTE_VERBS`] that end with it.
static WROTE_VERBS_BY_LAST: [u128; 256] = entries_by_byte(WROTE_VERBS, true);

fn is_loose_attribution(c: &str) -> bool {
    c.len() <= 300 && has_digit(c) && has_address(c)
}

/// Phrases that open an automatic "sent from my device" line.
const DEVICE_PREFIXES: &[&str] = &[
    "sent from",
    "sent with",
    "sent via",
    "sent using",
    "sent by",
    "sent on my",
    "from my iphone",
    "from my ipad",
    "from my android",
    "from my mobile",
    "get outlook",
    "obter o outlook",
    "outlook für",
    "outlook pour",
    "envoyé de mon",
    "envoyé depuis",
    "envoyé à partir de",
    "envoyé avec",
    "von meinem",
    "gesendet von",
    "gesendet mit",
    "diese nachricht wurde von meinem",
    "enviado desde",
    "enviado do meu",
    "enviado de meu",
    "enviado de mi",
    "enviado com",
    "inviato da",
    "inviato dal",
    "verzonden met",
    "verzonden vanaf",
    "verstuurd vanaf",
    "verstuurd met",
    "sendt fra",
    "skickat från",
    "lähetetty",
    "az iphone",
    "wysłane z",
    "отправлено с",
    "отправлено из",
    "надіслано з",
    "iphone'umdan",
    "從我的",
    "从我的",
    "发自我的",
    "發自我的",
    "أُرسلت من",
    "أرسلت من",
    "내 iphone",
    "iphoneから送信",
    "trimis de pe",
    "trimis cu",
    "trimis din",
    "obtener outlook",
    "descargar outlook",
    "baixe o outlook",
    "scarica outlook",
    "télécharger outlook",
    "outlook voor",
    "download outlook",
    "pobierz outlook",
    "hol dir outlook",
    "holen sie sich outlook",
    "skaffa outlook",
    "hent outlook",
    "получить outlook",
];

/// Endings of device lines in languages that put the device first
/// ("iPhone에서 보냄", "Android용 Outlook 받기", "iPhoneから送信").
const DEVICE_SUFFIXES: &[&str] = &[
    "에서 보냄",
    "에서 보냈습니다",
    "에서 보냈습니다.",
    "outlook 받기",
    "から送信",
    "から送信しました",
    "发送自我的iphone",
];

const DEVICE_WORDS: &[&str] = &[
    "iphone",
    "ipad",
    "ipod",
    "android",
    "blackberry",
    "mobile",
    "samsung",
    "galaxy",
    "phone",
    "outlook",
    "windows",
    "smartphone",
    "tablet",
    "device",
    "mail",
];

/// A cheap first look for [`is_device_signature`], which builds strings:
/// the splitter asks it of every line below the first new one.
fn could_be_device_signature(c: &str) -> bool {
    if c.len() > 300 {
        return false;
    }
    // Only the entries that open (end) with the line's first (last) byte
    // are compared: this keeps the check cheap on ordinary prose.
    let t = c.trim_start_matches(['[', '(', '<', '*', '_', '"', ' ']);
    let e = c.trim_end_matches([']', ')', '>', '*', '_', '"', ' ']);
    let prefix = t.bytes().next().is_some_and(|b| {
        any_in_set(DEVICE_PREFIX_BY_FIRST[usize::from(b)], |i| {
            t.starts_with(DEVICE_PREFIXES[i])
        })
    });
    prefix
        || e.bytes().last().is_some_and(|b| {
            any_in_set(DEVICE_SUFFIX_BY_LAST[usize::from(b)], |i| {
                e.ends_with(DEVICE_SUFFIXES[i])
            })
        })
}

/// For each byte, the entries of [`DEVICE_PREFIXES`] that open with it
/// and those of [`DEVICE_SUFFIXES`] that end with it (bit `i` for entry
/// `i`).
static DEVICE_PREFIX_BY_FIRST: [u128; 256] = entries_by_byte(DEVICE_PREFIXES, false);
static DEVICE_SUFFIX_BY_LAST: [u128; 256] = entries_by_byte(DEVICE_SUFFIXES, true);

/// For each byte, the entries of `list` that open (`last`: end) with it,
/// as a set of indices.
const fn entries_by_byte(list: &[&str], last: bool) -> [u128; 256] {
    assert!(list.len() <= 128);
    let mut set = [0u128; 256];
    let mut i = 0;
    while i < list.len() {
        let b = list[i].as_bytes();
        assert!(!b.is_empty());
        set[b[if last { b.len() - 1 } else { 0 }] as usize] |= 1 << i;
        i += 1;
    }
    set
}

/// Whether `test` holds for an index in the set `set`.
fn any_in_set(mut set: u128, test: impl Fn(usize) -> bool) -> bool {
    while set != 0 {
        if test(set.trailing_zeros() as usize) {
            return true;
        }
        set &= set - 1;
    }
    false
}

fn is_device_signature(c: &str) -> bool {
    if c.len() > 300 {
        return false;
    }
    let stripped: String = c
        .chars()
        .filter(|ch| !matches!(ch, '[' | ']' | '(' | ')' | '<' | '>' | '*' | '_' | '"'))
        .collect();
    let words: Vec<&str> = stripped
        .split_whitespace()
        .filter(|w| !w.starts_with("http"))
        .collect();
    let text = words.join(" ");
    if text.chars().count() <= 60 && DEVICE_SUFFIXES.iter().any(|p| text.ends_with(p)) {
        return true;
    }
    if !DEVICE_PREFIXES.iter().any(|p| text.starts_with(p)) {
        return false;
    }
    let head = words.iter().take(6).copied().collect::<Vec<_>>().join(" ");
    words.len() <= 6
        || text.contains("excuse")
        || text.contains("typo")
        || DEVICE_WORDS.iter().any(|d| head.contains(d))
}

// ---------------------------------------------------------------------------
// Tests (synthetic examples only)
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn nt(s: &str) -> String {
        new_text(s)
    }

    #[test]
    fn no_quote_is_all_new() {
        assert_eq!(
            nt("I accept.\n\nThanks,\nMina"),
            "I accept.\n\nThanks,\nMina"
        );
        assert_eq!(split_reply("Yes").quoted, "");
    }

    #[test]
    fn empty_and_whitespace() {
        assert_eq!(split_reply(""), SplitReply::default());
        assert_eq!(nt("   \n\n\t\n"), "");
        assert_eq!(quote_start(&[]), None);
    }

    #[test]
    fn top_post_english_gmail() {
        let body =
            "Accept\n\nOn Tue, 6 Jan 2026 at 10:00, Partner Desk <desk@example.net> wrote:\n\
                    > Please reply Accept or Decline to the invitation.\n> Thanks";
        let r = split_reply(body);
        assert_eq!(r.new_text, "Accept");
        assert!(r.quoted.contains("Accept or Decline"));
        assert!(r.quoted.starts_with("On Tue"));
    }

    #[test]
    fn top_post_wrapped_header() {
        let body = "I accept\n\nOn Tue, Jan 6, 2026 at 10:00 AM Partner Desk <\ndesk@example.net> wrote:\n\n> Accept or decline?";
        assert_eq!(nt(body), "I accept");
        let body = "yes please\n\nOn Tue, Jan 6, 2026 at 10:00 AM Partner Desk <desk@example.net>\nwrote:\n\n> Accept or decline?";
        assert_eq!(nt(body), "yes please");
    }

    #[test]
    fn top_post_korean() {
        let body = "수락합니다.\n\n2026년 1월 6일 (화) 오전 10:00, 파트너 센터 <desk@example.net>님이 작성:\n> 초대를 수락하거나 거절해 주세요.";
        let r = split_reply(body);
        assert_eq!(r.new_text, "수락합니다.");
        assert!(r.quoted.contains("거절"));
    }

    #[test]
    fn korean_outlook_block() {
        let body = "거절합니다\n\n보낸 사람: 파트너 센터 <desk@example.net>\n보낸 날짜: 2026년 1월 6일 화요일 오전 10:00\n받는 사람: 고객 <c@example.org>\n제목: 초대\n\n수락 또는 거절로 답장해 주세요.";
        assert_eq!(nt(body), "거절합니다");
    }

    #[test]
    fn top_post_german_french_spanish_italian_dutch() {
        let cases = [
            "Am 06.01.2026 um 10:00 schrieb Partner Desk <desk@example.net>:",
            "Partner Desk <desk@example.net> schrieb am Di., 6. Jan. 2026 um 10:00:",
            "Le mar. 6 janv. 2026 à 10:00, Partner Desk <desk@example.net> a écrit :",
            "El mar, 6 ene 2026 a las 10:00, Partner Desk (<desk@example.net>) escribió:",
            "Il giorno mar 6 gen 2026 alle ore 10:00 Partner Desk <desk@example.net> ha scritto:",
            "Op di 6 jan. 2026 om 10:00 schreef Partner Desk <desk@example.net>:",
            "Den 6. jan. 2026 kl. 10.00 skrev Partner Desk <desk@example.net>:",
        ];
        for header in cases {
            let body = format!("Ja, gerne.\n\n{header}\n\n> Annehmen oder ablehnen?\n");
            let r = split_reply(&body);
            assert_eq!(r.new_text, "Ja, gerne.", "header: {header}");
            assert!(r.quoted.contains("ablehnen"), "header: {header}");
        }
    }

    #[test]
    fn top_post_japanese_and_chinese() {
        let ja = "承認します。\n\n2026年1月6日(火) 10:00 パートナー窓口 <desk@example.net>:\n> 招待を承認または辞退してください。";
        assert_eq!(nt(ja), "承認します。");
        let ja_apple = "承認します。\n\n2026/01/06 10:00、パートナー窓口 <desk@example.net>のメール:\n\n> 辞退";
        assert_eq!(nt(ja_apple), "承認します。");
        let zh = "我接受。\n\n在 2026年1月6日，上午10:00，合作伙伴 <desk@example.net> 写道：\n\n> 请接受或拒绝邀请。";
        assert_eq!(nt(zh), "我接受。");
        let zh_outlook = "我接受\n\n发件人: 合作伙伴 <desk@example.net>\n发送时间: 2026年1月6日 10:00\n收件人: 客户\n主题: 邀请\n\n请接受或拒绝。";
        assert_eq!(nt(zh_outlook), "我接受");
    }

    #[test]
    fn header_followed_by_unquoted_original() {
        let body = "Decline, sorry.\n\nOn Tue, 6 Jan 2026 at 10:00, Desk <desk@example.net> wrote:\n\nPlease Accept the invitation.";
        let r = split_reply(body);
        assert_eq!(r.new_text, "Decline, sorry.");
        assert!(r.quoted.contains("Please Accept"));
    }

    #[test]
    fn outlook_blocks() {
        let en = "Accepted.\n\n________________________________\nFrom: Desk <desk@example.net>\nSent: Tuesday, January 6, 2026 10:00 AM\nTo: Customer <c@example.org>\nSubject: Invitation\n\nAccept or decline.";
        assert_eq!(nt(en), "Accepted.");
        let de = "Angenommen\n\n*Von:* Desk [mailto:desk@example.net]\n*Gesendet:* Dienstag, 6. Januar 2026 10:00\n*An:* Kunde\n*Betreff:* Einladung\n\nAnnehmen oder ablehnen";
        assert_eq!(nt(de), "Angenommen");
        let fr = "Oui\n\nDe : Desk <desk@example.net>\nEnvoyé : mardi 6 janvier 2026 10:00\nÀ : Client\nObjet : Invitation\n\nAccepter ou refuser";
        assert_eq!(nt(fr), "Oui");
        let it = "Accetto\n\nDa: Desk\nInviato: martedì 6 gennaio 2026 10:00\nA: Cliente\nOggetto: Invito\n\nAccettare o rifiutare";
        assert_eq!(nt(it), "Accetto");
    }

    #[test]
    fn original_message_separators() {
        let body = "I accept\n\n-----Original Message-----\nFrom: Desk\nSent: Tuesday\nSubject: Invitation\n\nAccept or Decline";
        let r = split_reply(body);
        assert_eq!(r.new_text, "I accept");
        assert!(r.quoted.starts_with("-----Original Message-----"));
        let de = "Nein danke\n----- Ursprüngliche Nachricht -----\nAnnehmen oder ablehnen";
        assert_eq!(nt(de), "Nein danke");
        let fwd = "FYI\n\n---------- Forwarded message ---------\nFrom: Desk <desk@example.net>\n\nAccept";
        assert_eq!(nt(fwd), "FYI");
    }

    #[test]
    fn zoho_dashed_header() {
        let body = "Accept\n\n---- On Tue, 06 Jan 2026 10:00:00 +0100 Desk <desk@example.net> wrote ----\n\nAccept or decline";
        assert_eq!(nt(body), "Accept");
    }

    #[test]
    fn bottom_post() {
        let body = "On 06/01/2026 10:00, Desk wrote:\n> Accept or decline?\n> Thanks\n\nAccept, thank you.\n";
        let r = split_reply(body);
        assert_eq!(r.new_text, "Accept, thank you.");
        assert!(r.quoted.contains("Accept or decline?"));
        assert!(!r.new_text.contains("wrote"));
    }

    #[test]
    fn inline_reply_keeps_text_between_quotes() {
        let body = "Hi Desk,\n\n> Do you accept the invitation?\n\nYes.\n\n> Which start date?\n\nMonday 12 January.\n\nBest,\nMina";
        let r = split_reply(body);
        assert_eq!(
            r.new_text,
            "Hi Desk,\n\nYes.\n\nMonday 12 January.\n\nBest,\nMina"
        );
        assert!(!r.new_text.contains('>'));
        assert!(r.quoted.contains("Which start date?"));
    }

    #[test]
    fn nested_and_unspaced_quotes() {
        let body = "ok\n\n>>> deep\n>> middle\n>no space\n> > spaced nesting";
        let r = split_reply(body);
        assert_eq!(r.new_text, "ok");
        assert!(r.quoted.contains(">no space"));
    }

    #[test]
    fn pipe_quoting() {
        let body = "Sounds good.\n\n2026/1/6 Desk <desk@example.net>\n\n| Accept?\n|\n| Decline?\n";
        assert_eq!(nt(body), "Sounds good.");
    }

    #[test]
    fn markdown_table_is_not_a_quote() {
        let body = "Numbers:\n| a | b |\n| 1 | 2 |\n| 3 | 4 |";
        assert_eq!(nt(body), body);
    }

    #[test]
    fn crlf_is_handled() {
        let body = "Accept\r\n\r\nOn Tue, 6 Jan 2026, Desk <desk@example.net> wrote:\r\n> Accept or decline?\r\n";
        let r = split_reply(body);
        assert_eq!(r.new_text, "Accept");
        assert!(!r.quoted.contains('\r'));
        let lines: Vec<&str> = body.split('\n').collect();
        assert_eq!(quote_start(&lines), Some(2));
    }

    #[test]
    fn device_and_dash_signatures() {
        let body = "Accept\n\nSent from my iPhone\n\nOn Tue, 6 Jan 2026, Desk <desk@example.net> wrote:\n> x";
        assert_eq!(nt(body), "Accept");
        let body = "Decline\n\n-- \nMina Park\nExample Corp";
        assert_eq!(nt(body), "Decline");
        let body = "Here is the file.\n\nSent from my desk, which is much nicer than my phone.";
        assert_eq!(nt(body), body);
        // A lone device line is kept rather than returning nothing.
        assert_eq!(nt("Sent from my iPhone"), "Sent from my iPhone");
    }

    #[test]
    fn prose_with_wrote_is_not_a_header() {
        let body = "I wrote to you on Monday about the invitation.\nI accept it now.";
        assert_eq!(nt(body), body);
        assert_eq!(quote_start(&body.lines().collect::<Vec<_>>()), None);
        let body = "Answer to your 3 questions:\nyes, yes, no";
        assert_eq!(nt(body), body);
        let body = "As I wrote 2 days ago:\nwe accept.";
        assert_eq!(nt(body), body);
    }

    #[test]
    fn quote_only_has_no_new_text() {
        let r = split_reply("> Accept or decline?");
        assert_eq!(r.new_text, "");
        assert_eq!(r.quoted, "> Accept or decline?");
    }

    #[test]
    fn quote_start_variants() {
        let lines = [
            "command one",
            "command two",
            "",
            "-----Original Message-----",
            "From: x",
        ];
        assert_eq!(quote_start(&lines), Some(3));
        let lines = ["cmd", "> quoted"];
        assert_eq!(quote_start(&lines), Some(1));
        let lines = [
            "cmd",
            "Le 6 janv. 2026 à 10:00, Desk <desk@example.net>",
            "a écrit :",
            "x",
        ];
        assert_eq!(quote_start(&lines), Some(1));
    }

    #[test]
    fn wrapped_quote_fragment_does_not_leak() {
        let body = "Yes\n\nOn Tue, 6 Jan 2026, Desk <desk@example.net> wrote:\n> Please click accept or decline in the portal to confirm your reseller re\nlationship.\n> Thanks";
        let r = split_reply(body);
        assert_eq!(r.new_text, "Yes");
    }

    #[test]
    fn invisible_characters_do_not_hide_headers() {
        let body = "Accept\n\n\u{200F}\u{200B}On Tue, 6 Jan 2026, Desk <desk@example.net> wrote:\u{202C}\n> decline";
        assert_eq!(nt(body), "Accept");
    }

    #[test]
    fn last_verb_end_is_the_last_end_of_any_verb() {
        // The one-pass search against a search per verb, which it replaced.
        let per_verb = |s: &str| {
            WROTE_VERBS
                .iter()
                .filter_map(|v| s.rfind(v).map(|p| p + v.len()))
                .max()
        };
        let mut cases: Vec<String> = [
            "",
            "e",
            "wrote",
            "wrotewrote",
            "writes, then wrote",
            "wrote and then writes:",
            "napisał",
            "napisała",
            "pisała napisał",
            "2026년 1월 6일 파트너 센터님이 작성:",
            "파트너 작성 님의 메일 쓴 글:",
            "le 6 janv. 2026, desk a écrit :",
            "désk écrit écrite",
            "のメッセージのメール:",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for v in WROTE_VERBS {
            for w in WROTE_VERBS {
                cases.push(format!("{v}{w}"));
                cases.push(format!("on 1 jan {v} x {w}:"));
                cases.push(format!(
                    "{w} {}",
                    &v[..v.len() - v.chars().last().unwrap().len_utf8()]
                ));
            }
        }
        for c in &cases {
            assert_eq!(last_verb_end(c), per_verb(c), "{c:?}");
        }
    }

    #[test]
    fn device_first_look_is_a_search_of_every_entry() {
        // The look-up by first (last) byte against a search of every entry,
        // which it replaced.
        let every_entry = |c: &str| {
            let t = c.trim_start_matches(['[', '(', '<', '*', '_', '"', ' ']);
            let e = c.trim_end_matches([']', ')', '>', '*', '_', '"', ' ']);
            c.len() <= 300
                && (DEVICE_PREFIXES.iter().any(|p| t.starts_with(p))
                    || DEVICE_SUFFIXES.iter().any(|p| e.ends_with(p)))
        };
        let mut cases: Vec<String> = ["", "a", "sent", "x sent from", "s".repeat(301).as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for p in DEVICE_PREFIXES.iter().chain(DEVICE_SUFFIXES) {
            let cut = &p[..p.len() - p.chars().last().map_or(0, char::len_utf8)];
            for line in [
                p.to_string(),
                format!("[{p} my phone]"),
                format!("*{p}*"),
                format!("device {p}"),
                format!("{p} device"),
                cut.to_string(),
                format!("x{cut}"),
            ] {
                cases.push(line);
            }
        }
        for c in &cases {
            assert_eq!(could_be_device_signature(c), every_entry(c), "{c:?}");
        }
    }

    #[test]
    fn pathological_inputs_do_not_panic_and_are_fast() {
        let long_line = "a".repeat(2_000_000);
        let _ = split_reply(&long_line);
        let many_colons = ":".repeat(500_000);
        let _ = split_reply(&many_colons);
        let many_lines = "On 1 wrote <a@b>:\n".repeat(50_000);
        let _ = split_reply(&many_lines);
        let quotes = "> q\nx\n".repeat(100_000);
        let _ = split_reply(&quotes);
        let headers = "From: a\nSent: b\nTo: c\n".repeat(20_000);
        let _ = split_reply(&headers);
        let weird = "\u{FEFF}\r\r\n\u{200B}>\u{0301}日本語\r> é\n|\n|\n|";
        let _ = split_reply(weird);
        let mixed: String = (0..20_000u32)
            .filter_map(char::from_u32)
            .collect::<String>()
            .replace('\u{0}', "\n");
        let _ = split_reply(&mixed);
    }
}
