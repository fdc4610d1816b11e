//! The partner command language: one command per line in a mail to the
//! command address, in the spirit of Debian's `control@` server.
//!
//! Parsing is pure: text in, [`CommandScript`] out. Every line that was read
//! is kept with its parse result so the transcript can echo it (`> invite …`)
//! followed by the outcome. Quoted text is never executed: parsing stops at
//! the first quoted line or reply header, at a signature separator, and at
//! `thanks`/`quit`/`stop`.

pub mod import;

use crate::mail::address;
use crate::model::relationship::RelationshipState;

/// At most this many commands are executed from one mail.
pub const MAX_COMMANDS: usize = 50;
/// After this many unknown commands the rest of the mail is skipped: it is
/// probably not a command mail at all.
pub const MAX_UNKNOWN: usize = 3;
/// Lines longer than this are refused rather than parsed.
pub const MAX_LINE_LEN: usize = 1000;

/// A parsed partner command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send the command reference.
    Help,
    /// Invite a customer to grant delegated admin permissions.
    Invite {
        /// Customer address.
        customer: String,
        /// Customer organisation name.
        name: Option<String>,
        /// Locale override for the invitation.
        locale: Option<String>,
        /// Send the rendered invitation to the partner instead of the customer.
        draft: bool,
        /// The admin-center approval link for this invitation (`link URL`).
        link: Option<String>,
        /// The GDAP relationship to request through Microsoft Graph.
        gdap: Option<InviteGdap>,
    },
    /// List the Entra role names (and this partner's role sets) `invite …
    /// roles` takes.
    Roles,
    /// End the GDAP relationship in Microsoft's system; without `confirm`
    /// only says what it would do.
    Terminate {
        /// Customer address.
        customer: String,
        /// The partner confirmed.
        confirm: bool,
    },
    /// Send a pending invitation again, with the same token.
    Resend {
        /// Customer address.
        customer: String,
    },
    /// Show one relationship, or all of them.
    Status {
        /// Customer address; `None` for all.
        customer: Option<String>,
    },
    /// List relationships, optionally only those in one state, a page at
    /// a time.
    List {
        /// Only this state.
        state: Option<RelationshipState>,
        /// Which page (from 1) of a long list.
        page: u32,
    },
    /// Every transition of one relationship.
    History {
        /// Customer address.
        customer: String,
    },
    /// Record that the customer removed the partner's admin permissions
    /// (as seen in the admin portal).
    Revoked {
        /// Customer address.
        customer: String,
    },
    /// Ask the customer to restore removed permissions.
    Restore {
        /// Customer address.
        customer: String,
    },
    /// End the relationship; the customer is told.
    Remove {
        /// Customer address.
        customer: String,
    },
    /// Assign the support contact copied on this customer's support traffic.
    Contact {
        /// Customer address.
        customer: String,
        /// The support contact's address.
        support: String,
    },
    /// List this partner's tickets.
    Tickets {
        /// Closed ones too.
        all: bool,
    },
    /// Show one ticket's whole thread.
    Ticket {
        /// Ticket number.
        id: u64,
    },
    /// Close a ticket, with an optional note to the customer and the desk.
    Close {
        /// Ticket number.
        id: u64,
        /// The note.
        note: Option<String>,
    },
}

/// `invite … roles "…" [duration 730d] [auto-extend]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteGdap {
    /// Role names and role-set names, comma-separated, as written.
    pub roles: String,
    /// Days, 1 to 730.
    pub duration_days: u32,
    /// Whether Microsoft extends it by 180 days at its end.
    pub auto_extend: bool,
}

/// The duration of a GDAP request when `invite … roles` gives none.
pub const DEFAULT_GDAP_DAYS: u32 = 730;

/// Why a line is not a valid command. The text is shown to the partner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The verb is not known.
    #[error("unknown command `{0}`; send `help` for the list of commands")]
    Unknown(String),
    /// The verb is known but its arguments are wrong.
    #[error("{verb}: {problem}. Usage: {usage}")]
    Usage {
        /// The verb.
        verb: &'static str,
        /// What is wrong.
        problem: String,
        /// The correct form.
        usage: &'static str,
    },
    /// The line is longer than [`MAX_LINE_LEN`].
    #[error("line too long ({0} characters); commands are short lines")]
    TooLong(usize),
}

/// One command line and what it parsed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The line as the partner wrote it (trimmed, comment removed), for the echo.
    pub text: String,
    /// The command, or why it is not one.
    pub parsed: Result<Command, CommandError>,
}

/// Why parsing stopped before the end of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A `thanks`/`quit`/`stop` line.
    StopWord,
    /// A signature separator `-- `.
    Signature,
    /// A quoted line or reply header: quoted text is never executed.
    Quote,
    /// More than [`MAX_COMMANDS`] commands.
    TooManyCommands,
    /// More than [`MAX_UNKNOWN`] unknown commands.
    TooManyUnknown,
}

/// Everything read from one command mail.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandScript {
    /// The command lines, in order.
    pub lines: Vec<CommandLine>,
    /// Why reading stopped early, if it did.
    pub stopped: Option<Stop>,
}

/// One verb of the command language: its names, its usage line, and its
/// parser. Each lives in its own file (`command/<verb>.rs`), beside the code
/// that carries it out (`impl CommandRun`); a new command is a new file, a
/// variant of [`Command`], and one line here and in `decide::commands`.
pub struct Verb {
    /// The verb as written (lower case).
    pub name: &'static str,
    /// Other spellings accepted.
    pub aliases: &'static [&'static str],
    /// Its line in `help` and in usage errors.
    pub usage: &'static str,
    /// Parses the arguments after the verb.
    parse: fn(&[String]) -> Result<Command, CommandError>,
}

macro_rules! verbs {
    ($($module:ident $(| $alias:literal)*),* $(,)?) => {
        $(mod $module;)*
        /// Every verb, in the order `help` lists them.
        pub static VERBS: &[Verb] = &[$(Verb {
            name: stringify!($module),
            aliases: &[$($alias),*],
            usage: $module::USAGE,
            parse: $module::parse,
        }),*];
    };
}

verbs![
    help | "?",
    invite,
    resend,
    status,
    list,
    history,
    revoked,
    restore,
    remove,
    contact,
    tickets,
    ticket,
    close,
    roles,
    terminate,
];

/// The verb named `word` (any case), if there is one.
pub fn verb(word: &str) -> Option<&'static Verb> {
    let w = word.to_lowercase();
    VERBS
        .iter()
        .find(|v| v.name == w || v.aliases.contains(&w.as_str()))
}

fn usage(verb: &'static str) -> &'static str {
    VERBS
        .iter()
        .find(|v| v.name == verb)
        .map(|v| v.usage)
        .unwrap_or("help")
}

/// Parses the text of a command mail (its first text part, or the subject
/// when the body has no commands).
pub fn parse_script(text: &str) -> CommandScript {
    let lines: Vec<&str> = text.lines().collect();
    // Everything from the first quote or reply header on is somebody else's
    // text, usually our own previous transcript; never execute it.
    let quote_at = crate::mail::reply::quote_start(&lines).unwrap_or(lines.len());
    let mut script = CommandScript::default();
    let mut unknown = 0;
    for (i, raw) in lines.iter().enumerate() {
        if i >= quote_at {
            script.stopped = Some(Stop::Quote);
            break;
        }
        if *raw == "-- " || raw.trim_end() == "--" {
            script.stopped = Some(Stop::Signature);
            break;
        }
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('>') {
            script.stopped = Some(Stop::Quote);
            break;
        }
        if is_stop_word(line) {
            script.stopped = Some(Stop::StopWord);
            break;
        }
        if script.lines.len() == MAX_COMMANDS {
            script.stopped = Some(Stop::TooManyCommands);
            break;
        }
        let parsed = parse_line(line);
        if matches!(parsed, Err(CommandError::Unknown(_))) {
            unknown += 1;
        }
        script.lines.push(CommandLine {
            text: line.chars().take(200).collect(),
            parsed,
        });
        if unknown >= MAX_UNKNOWN {
            let rest_has_text = lines[i + 1..quote_at.max(i + 1)]
                .iter()
                .any(|l| !strip_comment(l).trim().is_empty());
            if rest_has_text {
                script.stopped = Some(Stop::TooManyUnknown);
            }
            break;
        }
    }
    script
}

/// Unicode general category Cf (format characters, Unicode 15), and the
/// whole tag block U+E0000-E007F with its unassigned code points: invisible,
/// and several of them reorder or hide the text around them. The one table
/// for both refusing such text ([`check_text`]) and dropping it from text
/// quoted to a partner ([`crate::mail::dsn::defang`]).
const FORMAT_CHARACTERS: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE007F),
];

/// Whether `c` is a format character (general category Cf, or in the tag
/// block).
pub fn is_format_character(c: char) -> bool {
    let c = u32::from(c);
    FORMAT_CHARACTERS
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Checks partner-supplied free text that ends up in a customer's mail
/// (an invitation's name, a ticket's closing note, …): no control
/// characters, no line or paragraph separators, and no format characters
/// (category Cf: bidi overrides such as U+202E, zero-width spaces, BOMs),
/// which are invisible and can make a name read as something else, e.g.
/// "Contoso\u{202E}gro.live" shown as "Contosoevil.org". The problem is
/// returned as a sentence for the transcript, naming the character by its
/// code point, never echoing it.
pub fn check_text(what: &str, text: &str) -> Result<(), String> {
    for c in text.chars() {
        let code = u32::from(c);
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            return Err(format!(
                "the {what} must be on one line: it contains the control character U+{code:04X}"
            ));
        }
        if is_format_character(c) {
            return Err(format!(
                "the {what} contains U+{code:04X}, an invisible formatting character \
                 (such as a bidi override or a zero-width space) that can make text read \
                 differently from what it is; remove it"
            ));
        }
    }
    Ok(())
}

/// Longest argument quoted back in an error, in characters.
const MAX_QUOTED_ARG: usize = 60;

/// Text someone sent as quoted back in an error or a report: cut after
/// `max` characters (marked with `…`), so a transcript or a report stays
/// readable whatever was sent.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

fn strip_comment(line: &str) -> &str {
    // `#` starts a comment, except inside a quoted name and inside a link
    // (a word starting with http:// or https://), where it starts the
    // URL's fragment: admin-center links are all fragments
    // (`…/AdminPortal/Home#/partners/invitation/…`).
    let mut in_quotes = false;
    let mut word_start = 0;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() => word_start = i + c.len_utf8(),
            '#' if !in_quotes => {
                let word = line[word_start..i].to_ascii_lowercase();
                if !(word.starts_with("https://") || word.starts_with("http://")) {
                    return &line[..i];
                }
            }
            _ => {}
        }
    }
    line
}

fn is_stop_word(line: &str) -> bool {
    let w = line.trim_end_matches(['.', '!', ',']).trim().to_lowercase();
    matches!(
        w.as_str(),
        "thanks" | "thank you" | "quit" | "stop" | "end" | "감사합니다"
    )
}

/// Splits on white space, keeping `"double quoted"` runs together.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut had_quotes = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                had_quotes = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if !cur.is_empty() || had_quotes {
                    out.push(std::mem::take(&mut cur));
                }
                had_quotes = false;
            }
            c => cur.push(c),
        }
    }
    if in_quotes {
        return Err("a double quote is not closed".into());
    }
    if !cur.is_empty() || had_quotes {
        out.push(cur);
    }
    Ok(out)
}

fn usage_error(verb: &'static str, problem: String) -> CommandError {
    CommandError::Usage {
        verb,
        problem,
        usage: usage(verb),
    }
}

/// A command's CUSTOMER argument: present and an email address (normalised).
fn customer_arg(verb: &'static str, arg: Option<&str>) -> Result<String, CommandError> {
    let arg = arg
        .filter(|a| !a.is_empty())
        .ok_or_else(|| usage_error(verb, "the customer's email address is missing".into()))?;
    address::normalize(arg).ok_or_else(|| {
        usage_error(
            verb,
            format!("`{}` is not an email address", shorten(arg, MAX_QUOTED_ARG)),
        )
    })
}

/// The value of `invite … name "…"`: 1-200 characters on one line, trimmed.
fn invite_name(v: &str) -> Result<String, CommandError> {
    if v.trim().is_empty() || v.len() > 200 {
        return Err(usage_error(
            "invite",
            "the name must be 1-200 characters on one line".into(),
        ));
    }
    check_text("name", v).map_err(|problem| usage_error("invite", problem))?;
    Ok(v.trim().to_string())
}

/// The value of `invite … link …`: one token a URL can be, at most
/// [`crate::model::gdap::MAX_LINK_CHARS`]; which scheme and host is checked
/// against the configuration when the command runs.
fn invite_link(v: &str) -> Result<String, CommandError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(usage_error("invite", "`link` needs a URL".into()));
    }
    if v.chars().count() > crate::model::gdap::MAX_LINK_CHARS {
        return Err(usage_error(
            "invite",
            format!(
                "the link is longer than {} characters",
                crate::model::gdap::MAX_LINK_CHARS
            ),
        ));
    }
    check_text("link", v).map_err(|problem| usage_error("invite", problem))?;
    Ok(v.to_string())
}

/// The value of `invite … locale …`: one of the supported locales (lower case).
fn invite_locale(v: &str) -> Result<String, CommandError> {
    let v = v.to_lowercase();
    if !crate::config::SUPPORTED_LOCALES.contains(&v.as_str()) {
        return Err(usage_error(
            "invite",
            format!(
                "locale `{v}` is not one of {}",
                crate::config::SUPPORTED_LOCALES.join(", ")
            ),
        ));
    }
    Ok(v)
}

impl Command {
    /// An `invite` built from its arguments as data (e.g. one row of
    /// `liaison import`), checked exactly as [`parse_line`] checks the same
    /// arguments written in a mail. `name` and `locale` are left out when
    /// `None`.
    pub fn invite(
        customer: &str,
        name: Option<&str>,
        locale: Option<&str>,
        draft: bool,
    ) -> Result<Command, CommandError> {
        Ok(Command::Invite {
            customer: customer_arg("invite", Some(customer))?,
            name: name.map(invite_name).transpose()?,
            locale: locale.map(invite_locale).transpose()?,
            draft,
            link: None,
            gdap: None,
        })
    }

    /// The same `invite` with an approval link (the CSV column `link`),
    /// checked as `invite … link URL` is.
    pub fn with_link(self, link: Option<&str>) -> Result<Command, CommandError> {
        match (self, link) {
            (
                Command::Invite {
                    customer,
                    name,
                    locale,
                    draft,
                    gdap,
                    ..
                },
                Some(l),
            ) => Ok(Command::Invite {
                customer,
                name,
                locale,
                draft,
                link: Some(invite_link(l)?),
                gdap,
            }),
            (c, _) => Ok(c),
        }
    }
}

/// A command as its line in the command language, for reports (the name is
/// quoted as written; a name given as data may itself hold `"`).
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Help => write!(f, "help"),
            Command::Invite {
                customer,
                name,
                locale,
                draft,
                link,
                gdap,
            } => {
                write!(f, "invite {customer}")?;
                if let Some(n) = name {
                    write!(f, " name \"{n}\"")?;
                }
                if let Some(l) = locale {
                    write!(f, " locale {l}")?;
                }
                if *draft {
                    write!(f, " draft")?;
                }
                if let Some(l) = link {
                    write!(f, " link {l}")?;
                }
                if let Some(g) = gdap {
                    write!(f, " roles \"{}\" duration {}d", g.roles, g.duration_days)?;
                    if g.auto_extend {
                        write!(f, " auto-extend")?;
                    }
                }
                Ok(())
            }
            Command::Roles => write!(f, "roles"),
            Command::Terminate { customer, confirm } => {
                write!(
                    f,
                    "terminate {customer}{}",
                    if *confirm { " confirm" } else { "" }
                )
            }
            Command::Resend { customer } => write!(f, "resend {customer}"),
            Command::Status { customer: None } => write!(f, "status"),
            Command::Status { customer: Some(c) } => write!(f, "status {c}"),
            Command::List { state, page } => {
                write!(f, "list")?;
                if let Some(s) = state {
                    write!(f, " {s}")?;
                }
                if *page != 1 {
                    write!(f, " page {page}")?;
                }
                Ok(())
            }
            Command::History { customer } => write!(f, "history {customer}"),
            Command::Revoked { customer } => write!(f, "revoked {customer}"),
            Command::Restore { customer } => write!(f, "restore {customer}"),
            Command::Remove { customer } => write!(f, "remove {customer}"),
            Command::Contact { customer, support } => write!(f, "contact {customer} {support}"),
            Command::Tickets { all } => write!(f, "tickets {}", if *all { "all" } else { "open" }),
            Command::Ticket { id } => write!(f, "ticket {}", crate::model::ticket::format_id(*id)),
            Command::Close { id, note } => {
                write!(f, "close {}", crate::model::ticket::format_id(*id))?;
                if let Some(n) = note {
                    write!(f, " {n}")?;
                }
                Ok(())
            }
        }
    }
}

/// Parses one command line (comment already removed).
pub fn parse_line(line: &str) -> Result<Command, CommandError> {
    if line.chars().count() > MAX_LINE_LEN {
        return Err(CommandError::TooLong(line.chars().count()));
    }
    let words = words(line).map_err(|problem| {
        let word = line.split_whitespace().next().unwrap_or("").to_lowercase();
        match verb(&word) {
            Some(v) => CommandError::Usage {
                verb: v.name,
                problem,
                usage: v.usage,
            },
            None => CommandError::Unknown(word),
        }
    })?;
    let Some((word, args)) = words.split_first() else {
        return Err(CommandError::Unknown(String::new()));
    };
    match verb(word) {
        Some(v) => (v.parse)(args),
        None => Err(CommandError::Unknown(word.chars().take(40).collect())),
    }
}

/// Refuses arguments after the last one `verb` takes.
fn no_more(verb: &'static str, rest: &[String]) -> Result<(), CommandError> {
    match rest.first() {
        Some(extra) => Err(usage_error(verb, format!("unexpected `{extra}`"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_is_found_by_its_names_and_its_usage_starts_with_it() {
        assert!(VERBS.len() >= 13);
        for v in VERBS {
            assert!(std::ptr::eq(verb(v.name).unwrap(), v), "{}", v.name);
            assert!(std::ptr::eq(verb(&v.name.to_uppercase()).unwrap(), v));
            for a in v.aliases {
                assert!(std::ptr::eq(verb(a).unwrap(), v), "{a}");
            }
            assert!(v.usage.starts_with(v.name), "{}: {}", v.name, v.usage);
            // A verb alone either parses or says what is missing, with its usage.
            match parse_line(v.name) {
                Ok(_) => {}
                Err(CommandError::Usage { verb, usage, .. }) => {
                    assert_eq!((verb, usage), (v.name, v.usage))
                }
                Err(e) => panic!("{}: {e}", v.name),
            }
        }
        assert_eq!(parse_line("?"), Ok(Command::Help));
        assert!(verb("nosuchverb").is_none());
    }

    fn cmds(text: &str) -> Vec<Result<Command, CommandError>> {
        parse_script(text)
            .lines
            .into_iter()
            .map(|l| l.parsed)
            .collect()
    }

    #[test]
    fn invite_with_options() {
        assert_eq!(
            parse_line(r#"INVITE Alice@Contoso.test name "Contoso Ltd" locale KO draft"#),
            Ok(Command::Invite {
                customer: "alice@contoso.test".into(),
                name: Some("Contoso Ltd".into()),
                locale: Some("ko".into()),
                draft: true,
                link: None,
                gdap: None,
            })
        );
        assert_eq!(
            parse_line("invite bob@fabrikam.test"),
            Ok(Command::Invite {
                customer: "bob@fabrikam.test".into(),
                name: None,
                locale: None,
                draft: false,
                link: None,
                gdap: None,
            })
        );
    }

    #[test]
    fn invite_links_keep_their_fragment_and_gdap_options_parse() {
        let link = "https://admin.microsoft.com/AdminPortal/Home#/partners/invitation/granularAdminRelationships/x";
        for line in [
            format!("invite alice@contoso.test link {link}  # the request"),
            format!("invite alice@contoso.test link \"{link}\""),
        ] {
            let c = cmds(&line);
            assert!(
                matches!(&c[0], Ok(Command::Invite { link: Some(l), .. }) if l == link),
                "{line}: {c:?}"
            );
        }
        // Elsewhere `#` still starts a comment.
        assert_eq!(
            cmds("status # all of them"),
            vec![Ok(Command::Status { customer: None })]
        );
        let c = parse_line("invite alice@contoso.test roles \"Helpdesk Administrator, helpdesk\" duration 30d auto-extend");
        assert!(
            matches!(
                c,
                Ok(Command::Invite {
                    gdap: Some(InviteGdap {
                        duration_days: 30,
                        auto_extend: true,
                        ..
                    }),
                    ..
                })
            ),
            "{c:?}"
        );
        assert!(parse_line("invite alice@contoso.test auto-extend").is_err());
        assert!(parse_line("invite alice@contoso.test roles x duration 731d").is_err());
        assert!(parse_line(&format!("invite alice@contoso.test roles x link {link}")).is_err());
        assert_eq!(
            parse_line("terminate Alice@Contoso.test confirm"),
            Ok(Command::Terminate {
                customer: "alice@contoso.test".into(),
                confirm: true
            })
        );
        assert_eq!(parse_line("roles"), Ok(Command::Roles));
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let e = parse_line("invite").unwrap_err().to_string();
        assert!(
            e.contains("missing") && e.contains("Usage: invite CUSTOMER"),
            "{e}"
        );
        let e = parse_line("invite alice@contoso.test locale fr")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`fr`"), "{e}");
        let e = parse_line("invite alice@contoso.test\r\nBcc: x@y.test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown option `bcc:`"), "{e}");
        let e = parse_line("invite alice@contoso.test name \"Contoso")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not closed"), "{e}");
        let e = parse_line("list happy").unwrap_err().to_string();
        assert!(e.contains("`happy`"), "{e}");
        assert_eq!(
            parse_line("frobnicate"),
            Err(CommandError::Unknown("frobnicate".into()))
        );
    }

    #[test]
    fn script_stops_at_quotes_signatures_and_stop_words() {
        let s = parse_script("invite a@b.test\n\n-- \nPartner One\ninvite c@d.test");
        assert_eq!((s.lines.len(), s.stopped), (1, Some(Stop::Signature)));
        let s = parse_script("status\nthanks!\nlist");
        assert_eq!((s.lines.len(), s.stopped), (1, Some(Stop::StopWord)));
        let s = parse_script("list\n> invite evil@x.test\n");
        assert_eq!((s.lines.len(), s.stopped), (1, Some(Stop::Quote)));
        let s = parse_script(
            "list\n\nOn Mon, 1 Jan 2026 at 10:00, Liaison <commands@liaison.test> wrote:\n> invite evil@x.test\n",
        );
        assert_eq!(s.lines.len(), 1);
        assert_eq!(s.stopped, Some(Stop::Quote));
    }

    #[test]
    fn lifecycle_commands() {
        assert_eq!(
            parse_line("Revoked alice@contoso.test"),
            Ok(Command::Revoked {
                customer: "alice@contoso.test".into()
            })
        );
        assert_eq!(
            parse_line("restore alice@contoso.test"),
            Ok(Command::Restore {
                customer: "alice@contoso.test".into()
            })
        );
        assert_eq!(
            parse_line("remove alice@contoso.test"),
            Ok(Command::Remove {
                customer: "alice@contoso.test".into()
            })
        );
        assert_eq!(
            parse_line("contact alice@contoso.test Support@Northwind.test"),
            Ok(Command::Contact {
                customer: "alice@contoso.test".into(),
                support: "support@northwind.test".into()
            })
        );
        let e = parse_line("contact alice@contoso.test")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("support contact") && e.contains("Usage: contact"),
            "{e}"
        );
        let e = parse_line("remove alice@contoso.test now")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unexpected `now`"), "{e}");
    }

    #[test]
    fn ticket_commands() {
        assert_eq!(parse_line("tickets"), Ok(Command::Tickets { all: false }));
        assert_eq!(
            parse_line("TICKETS all"),
            Ok(Command::Tickets { all: true })
        );
        assert_eq!(
            parse_line("ticket T-000123"),
            Ok(Command::Ticket { id: 123 })
        );
        assert_eq!(
            parse_line("ticket [T-000123]"),
            Ok(Command::Ticket { id: 123 })
        );
        assert_eq!(
            parse_line("close T-000007 solved by a restart"),
            Ok(Command::Close {
                id: 7,
                note: Some("solved by a restart".into())
            })
        );
        assert_eq!(
            parse_line("close T-7"),
            Ok(Command::Close { id: 7, note: None })
        );
        assert!(parse_line("ticket 123")
            .unwrap_err()
            .to_string()
            .contains("T-000123"));
        assert!(parse_line("tickets some").is_err());
    }

    #[test]
    fn comments_and_case() {
        assert_eq!(
            cmds("# my commands\nLIST active # only active\nHelp"),
            vec![
                Ok(Command::List {
                    state: Some(RelationshipState::Active),
                    page: 1,
                }),
                Ok(Command::Help)
            ]
        );
    }

    #[test]
    fn names_and_notes_refuse_control_and_format_characters() {
        for bad in [
            "\u{202E}",
            "\u{202A}",
            "\u{2066}",
            "\u{2069}",
            "\u{200B}",
            "\u{200F}",
            "\u{FEFF}",
            "\u{00AD}",
            "\u{061C}",
            "\u{E0041}",
            "\u{E0000}",
        ] {
            let line = format!("invite alice@contoso.test name \"Contoso{bad}gro.live\"");
            let e = parse_line(&line).unwrap_err().to_string();
            let code = format!("U+{:04X}", u32::from(bad.chars().next().unwrap()));
            assert!(
                e.contains(&format!(
                    "the name contains {code}, an invisible formatting character"
                )) && e.contains("Usage: invite"),
                "{e}"
            );
            assert!(
                !e.contains(bad),
                "the error must not echo the character: {e:?}"
            );
            let e = parse_line(&format!("close T-000007 fixed{bad} it"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("the note contains {code}")), "{e}");
        }
        let e = parse_line("invite alice@contoso.test name \"Contoso\u{7}Ltd\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the name must be on one line: it contains the control character U+0007"),
            "{e}"
        );
        let e = parse_line("invite alice@contoso.test name \"a\u{2028}b\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the name must be on one line"), "{e}");
        // Ordinary letters, accents, CJK, Hangul, RTL scripts and emoji stay.
        for good in [
            "Contoso Ltd",
            "Société Générale",
            "한빛 클라우드",
            "שלום",
            "مرحبا",
            "株式会社 🚀",
        ] {
            let line = format!("invite alice@contoso.test name \"{good}\"");
            assert!(parse_line(&line).is_ok(), "{good}");
        }
        assert!(parse_line("close T-7 출장 후 해결").is_ok());
    }

    #[test]
    fn limits() {
        let many = "list\n".repeat(60);
        let s = parse_script(&many);
        assert_eq!(
            (s.lines.len(), s.stopped),
            (MAX_COMMANDS, Some(Stop::TooManyCommands))
        );
        let s = parse_script("Dear team,\nplease do this\nand that\nlist\n");
        assert_eq!(s.lines.len(), 3);
        assert_eq!(s.stopped, Some(Stop::TooManyUnknown));
        let long = format!("invite {}", "a".repeat(2000));
        assert!(matches!(parse_line(&long), Err(CommandError::TooLong(_))));
        let e = parse_line(&format!("invite {}", "a".repeat(900)))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 250, "errors quote long arguments shortened: {e}");
    }
}
