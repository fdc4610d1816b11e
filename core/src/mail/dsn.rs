//! Delivery status notifications (RFC 3464): which recipient failed, why,
//! and which of our messages it was about — and whether to believe it.
//!
//! Anyone can send a `multipart/report` naming any Message-ID and any
//! recipient, so a report is believed only when all of these hold
//! ([`authenticate`]):
//!
//! 1. it was delivered to a *bounce address*: every mail Liaison sends has
//!    the SMTP envelope sender `<invitations local>+b-<tag>@<domain>`
//!    ([`return_path`]), where the tag is a MAC keyed with the secret over the
//!    mail's Message-ID and its recipient ([`crate::model::token::IdKey::bounce_tag`]).
//!    Only the receiving side of that mail ever sees the address, and only
//!    there does a real bounce go. The topmost `Delivered-To` /
//!    `X-Original-To` (written by the delivering server) must carry it;
//! 2. its reverse-path as delivered is null (`Return-Path: <>`, written by
//!    the delivering server from `MAIL FROM:<>`; Postfix drops a
//!    `Return-Path` the sender wrote). Anyone can send with a null sender, so
//!    this only filters out what is plainly not a bounce: the tag is the
//!    credential;
//! 3. the failed recipient it names is the one the tag was issued for, and
//!    the returned headers name the Message-ID it was issued for.
//!
//! What a report says is still the remote side's text: [`defang`] makes it
//! safe to quote to a partner (no control or format characters, bounded,
//! links disabled).

use crate::model::token::IdKey;

/// What a delivery report says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dsn {
    /// Recipients that failed, with their status and diagnostic.
    pub failed: Vec<FailedRecipient>,
    /// Message-ID of the returned message, without angle brackets.
    pub original_message_id: Option<String>,
    /// The topmost `Return-Path` header as delivered (`<>` for a real
    /// bounce), filled in by [`crate::mail::inbound::parse`].
    pub return_path: Option<String>,
}

/// One failed recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailedRecipient {
    /// The address.
    pub address: String,
    /// The status code, e.g. `5.1.1`.
    pub status: String,
    /// The remote server's diagnostic, if given.
    pub diagnostic: Option<String>,
}

/// Reads a delivery report from the raw message text; `None` when it is
/// not a `multipart/report; report-type=delivery-status` with a failure.
pub fn parse(raw: &str) -> Option<Dsn> {
    let lower = raw.to_ascii_lowercase();
    if !lower.contains("multipart/report") || !lower.contains("delivery-status") {
        return None;
    }
    // Unfold header-style continuation lines so a long Diagnostic-Code stays whole.
    let mut lines: Vec<String> = Vec::new();
    for line in raw.lines() {
        if (line.starts_with(' ') || line.starts_with('\t')) && !lines.is_empty() {
            let last = lines.last_mut().expect("not empty");
            last.push(' ');
            last.push_str(line.trim());
        } else {
            lines.push(line.to_string());
        }
    }
    let field = |l: &str, name: &str| -> Option<String> {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    };
    let mut dsn = Dsn::default();
    let mut current: Option<FailedRecipient> = None;
    let mut in_status = false;
    let mut in_returned = false;
    for l in &lines {
        let ll = l.to_ascii_lowercase();
        if ll.starts_with("content-type:") {
            in_status = ll.contains("message/delivery-status");
            in_returned = ll.contains("message/rfc822") || ll.contains("text/rfc822-headers");
            continue;
        }
        if in_status {
            if let Some(v) = field(l, "Final-Recipient").or_else(|| field(l, "Original-Recipient"))
            {
                if field(l, "Final-Recipient").is_some() || current.is_none() {
                    if let Some(c) = current.take() {
                        push_failed(&mut dsn, c);
                    }
                    let addr = v
                        .rsplit(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .trim_matches(['<', '>']);
                    current = Some(FailedRecipient {
                        address: addr.to_ascii_lowercase(),
                        ..Default::default()
                    });
                }
            } else if let Some(v) = field(l, "Status") {
                if let Some(c) = current.as_mut() {
                    c.status = v.split_whitespace().next().unwrap_or("").to_string();
                }
            } else if let Some(v) = field(l, "Diagnostic-Code") {
                if let Some(c) = current.as_mut() {
                    c.diagnostic = Some(v.chars().take(300).collect());
                }
            }
        } else if in_returned && dsn.original_message_id.is_none() {
            if let Some(v) = field(l, "Message-ID") {
                dsn.original_message_id = Some(v.trim().trim_matches(['<', '>']).to_string());
            }
        }
    }
    if let Some(c) = current.take() {
        push_failed(&mut dsn, c);
    }
    (!dsn.failed.is_empty()).then_some(dsn)
}

fn push_failed(dsn: &mut Dsn, r: FailedRecipient) {
    // Only failures count: 2.x.x (delivered) and 4.x.x (delayed) are not bounces.
    if r.status.starts_with('5') && !r.address.is_empty() {
        dsn.failed.push(r);
    }
}

/// The SMTP envelope sender (bounce address) of the mail `message_id` sent
/// to `recipients`: a plus-address of `base` (the invitations address)
/// whose tag only Liaison can compute.
pub fn return_path(ids: &IdKey, base: &str, message_id: &str, recipients: &[String]) -> String {
    crate::mail::address::with_plus_tag(base, &ids.bounce_tag(message_id, recipients))
}

/// A delivery report that passed [`authenticate`]: about a mail Liaison sent
/// to exactly this recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticBounce<'a> {
    /// Message-ID of the mail that failed.
    pub message_id: &'a str,
    /// The recipient that failed (the one the bounce address was issued for).
    pub failed: &'a FailedRecipient,
}

impl AuthenticBounce<'_> {
    /// The status and diagnostic, as the remote server wrote them: pass it
    /// through [`defang`] before quoting it to anyone.
    pub fn reason(&self) -> String {
        let f = self.failed;
        match &f.diagnostic {
            Some(d) => format!("{} ({d})", f.status),
            None => f.status.clone(),
        }
    }
}

/// Why a delivery report is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BounceRefusal {
    /// Not delivered to one of Liaison's bounce addresses.
    #[error("it was delivered to {0}, not to one of Liaison's bounce addresses")]
    NotToBounceAddress(String),
    /// The delivering server recorded a sender: real bounces have none.
    #[error("its reverse-path is {0}, not the null sender <> of a real bounce")]
    NotNullSender(String),
    /// Nothing says which mail it is about.
    #[error("it does not give the Message-ID of the returned mail")]
    NoMessageId,
    /// The bounce address was not issued for the mail and recipient named.
    #[error("its bounce address was not issued for {recipient} of {message_id} (forged, or about another recipient)")]
    TagMismatch {
        /// The Message-ID the report names.
        message_id: String,
        /// The failed recipient(s) it names.
        recipient: String,
    },
}

/// Decides whether `dsn`, delivered with the delivery headers
/// `delivered_to` (topmost first), is a real bounce of a mail Liaison sent
/// with [`return_path`] from `base`. See the module docs for the rules.
pub fn authenticate<'a>(
    ids: &IdKey,
    base: &str,
    delivered_to: &[String],
    dsn: &'a Dsn,
) -> Result<AuthenticBounce<'a>, BounceRefusal> {
    // Only the delivering server's own header counts: it stands on top,
    // above anything the sender wrote.
    let top = delivered_to.first().map(String::as_str).unwrap_or("");
    let tag = crate::mail::address::plus_tag(top, base)
        .filter(|t| crate::model::token::bounce_tag_mac(t).is_some())
        .ok_or_else(|| {
            BounceRefusal::NotToBounceAddress(if top.is_empty() {
                "no recorded address".into()
            } else {
                top.to_string()
            })
        })?;
    let return_path = dsn.return_path.as_deref().map(str::trim).unwrap_or("");
    if return_path != "<>" {
        return Err(BounceRefusal::NotNullSender(if return_path.is_empty() {
            "not recorded".into()
        } else {
            defang(return_path)
        }));
    }
    let message_id = dsn
        .original_message_id
        .as_deref()
        .ok_or(BounceRefusal::NoMessageId)?;
    dsn.failed
        .iter()
        .find(|f| ids.verify_bounce_tag(tag, message_id, &f.address))
        .map(|failed| AuthenticBounce { message_id, failed })
        .ok_or_else(|| BounceRefusal::TagMismatch {
            message_id: defang(message_id),
            recipient: defang(
                &dsn.failed
                    .iter()
                    .map(|f| f.address.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        })
}

/// Longest text [`defang`] keeps, in characters.
pub const MAX_QUOTED_CHARS: usize = 200;

/// Makes text a remote server (or a forger) wrote safe to quote in a mail
/// to a partner: control and format characters (bidi overrides, zero-width
/// characters) become spaces or go, runs of white space shrink to one, the
/// text is cut at [`MAX_QUOTED_CHARS`], and nothing in it can be clicked:
/// `http://` becomes `hxxp://`, other `scheme:` becomes `scheme[:]`, and
/// every dot that joins a name to a following letter (`evil.example`,
/// `a@b.test`) becomes `[.]`, as do the full stops that browsers read as
/// dots in host names (`。`, `．`, `｡`).
pub fn defang(text: &str) -> String {
    let mut clean = String::with_capacity(text.len().min(4 * MAX_QUOTED_CHARS));
    let mut kept = 0;
    for c in text.chars() {
        if kept >= MAX_QUOTED_CHARS {
            clean.push('…');
            break;
        }
        if c.is_control() || c.is_whitespace() {
            if !clean.is_empty() && !clean.ends_with(' ') {
                clean.push(' ');
                kept += 1;
            }
        } else if !crate::command::is_format_character(c) {
            clean.push(c);
            kept += 1;
        }
    }
    let chars: Vec<char> = clean.trim_end().chars().collect();
    let mut out = String::with_capacity(clean.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let rest = |n: usize| -> String {
            chars[i..chars.len().min(i + n)]
                .iter()
                .collect::<String>()
                .to_ascii_lowercase()
        };
        let word_start = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        let c = chars[i];
        if word_start && rest(7) == "http://" {
            out.push_str("hxxp://");
            i += 7;
        } else if word_start && rest(8) == "https://" {
            out.push_str("hxxps://");
            i += 8;
        } else if rest(3) == "://" && !out.ends_with("hxxp") && !out.ends_with("hxxps") {
            out.push_str("[://]");
            i += 3;
        } else if let Some(scheme) = LINK_SCHEMES
            .iter()
            .find(|s| word_start && rest(s.len() + 1) == format!("{s}:"))
        {
            out.extend(&chars[i..i + scheme.len()]);
            out.push_str("[:]");
            i += scheme.len() + 1;
        } else if matches!(c, '\u{3002}' | '\u{ff0e}' | '\u{ff61}')
            || (c == '.'
                && i > 0
                && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '-')
                && chars.get(i + 1).is_some_and(|n| n.is_alphabetic()))
        {
            out.push_str("[.]");
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Schemes that mail clients turn into links without `//`.
const LINK_SCHEMES: [&str; 7] = [
    "mailto",
    "tel",
    "sms",
    "javascript",
    "data",
    "file",
    "callto",
];

#[cfg(test)]
mod tests {
    use super::*;

    const POSTFIX_DSN: &str = "From: MAILER-DAEMON@mail.liaison.test (Mail Delivery System)\r
Subject: Undelivered Mail Returned to Sender\r
To: invites@liaison.test\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
\tboundary=\"B1\"\r
\r
--B1\r
Content-Description: Notification\r
Content-Type: text/plain; charset=us-ascii\r
\r
I'm sorry to have to inform you that your message could not be delivered.\r
\r
--B1\r
Content-Description: Delivery report\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mail.liaison.test\r
\r
Final-Recipient: rfc822; nobody@contoso.test\r
Original-Recipient: rfc822;nobody@contoso.test\r
Action: failed\r
Status: 5.1.1\r
Diagnostic-Code: x-unix; user unknown in virtual mailbox\r
    table\r
\r
--B1\r
Content-Description: Undelivered Message Headers\r
Content-Type: text/rfc822-headers\r
\r
From: Liaison <invites@liaison.test>\r
Message-ID: <liaison.abc@liaison.test>\r
Subject: Invitation\r
\r
--B1--\r
";

    #[test]
    fn reads_a_postfix_bounce() {
        let d = parse(POSTFIX_DSN).unwrap();
        assert_eq!(
            d.original_message_id.as_deref(),
            Some("liaison.abc@liaison.test")
        );
        assert_eq!(d.failed.len(), 1);
        assert_eq!(d.failed[0].address, "nobody@contoso.test");
        assert_eq!(d.failed[0].status, "5.1.1");
        assert_eq!(
            d.failed[0].diagnostic.as_deref(),
            Some("x-unix; user unknown in virtual mailbox table")
        );
    }

    const MID: &str = "liaison.abc@liaison.test";
    const BASE: &str = "invites@liaison.test";

    fn ids() -> IdKey {
        IdKey::new(b"a test secret that is long enough")
    }

    /// The Postfix report as delivered to `to` with `Return-Path: rp`.
    fn delivered(to: &str, rp: &str) -> (Vec<String>, Dsn) {
        let mut d = parse(POSTFIX_DSN).unwrap();
        d.return_path = Some(rp.to_string());
        (vec![to.to_string(), BASE.to_string()], d)
    }

    fn bounce_address(recipient: &str) -> String {
        return_path(&ids(), BASE, MID, &[recipient.to_string()])
    }

    #[test]
    fn a_real_bounce_is_believed() {
        let (to, d) = delivered(&bounce_address("nobody@contoso.test"), "<>");
        let b = authenticate(&ids(), BASE, &to, &d).unwrap();
        assert_eq!(b.message_id, MID);
        assert_eq!(b.failed.address, "nobody@contoso.test");
        assert_eq!(
            b.reason(),
            "5.1.1 (x-unix; user unknown in virtual mailbox table)"
        );
        // Mail systems may change the case of the local part.
        let (to, d) = delivered(&bounce_address("nobody@contoso.test").to_uppercase(), "<>");
        assert!(authenticate(&ids(), BASE, &to, &d).is_ok());
    }

    #[test]
    fn forged_bounces_are_not_believed() {
        let good = bounce_address("nobody@contoso.test");
        // To the plain invitations address (a stranger naming a Message-ID).
        let (to, d) = delivered(BASE, "<>");
        assert!(matches!(
            authenticate(&ids(), BASE, &to, &d),
            Err(BounceRefusal::NotToBounceAddress(_))
        ));
        // Nothing recorded at all.
        assert!(matches!(
            authenticate(&ids(), BASE, &[], &d),
            Err(BounceRefusal::NotToBounceAddress(_))
        ));
        // A token-style plus-address is not a bounce address.
        let (to, d) = delivered("invites+abcdef@liaison.test", "<>");
        assert!(matches!(
            authenticate(&ids(), BASE, &to, &d),
            Err(BounceRefusal::NotToBounceAddress(_))
        ));
        // From a stranger's envelope sender.
        let (to, d) = delivered(&good, "<mallory@evil.test>");
        assert!(matches!(
            authenticate(&ids(), BASE, &to, &d),
            Err(BounceRefusal::NotNullSender(_))
        ));
        let (to, mut d) = delivered(&good, "<>");
        d.return_path = None;
        assert!(matches!(
            authenticate(&ids(), BASE, &to, &d),
            Err(BounceRefusal::NotNullSender(_))
        ));
        // A made-up tag, or one keyed with another secret.
        let (to, d) = delivered("invites+b-aaaaaaaaaaaaaaaaaaaaaaaaaa@liaison.test", "<>");
        assert!(matches!(
            authenticate(&ids(), BASE, &to, &d),
            Err(BounceRefusal::TagMismatch { .. })
        ));
        let other = return_path(
            &IdKey::new(b"another secret entirely!"),
            BASE,
            MID,
            &["nobody@contoso.test".to_string()],
        );
        let (to, d) = delivered(&other, "<>");
        assert!(authenticate(&ids(), BASE, &to, &d).is_err());
        // The right tag, but the report names another recipient or mail.
        let (to, d) = delivered(&bounce_address("alice@contoso.test"), "<>");
        assert!(matches!(
            authenticate(&ids(), BASE, &to, &d),
            Err(BounceRefusal::TagMismatch { .. })
        ));
        let (to, mut d) = delivered(&good, "<>");
        d.original_message_id = Some("liaison.other@liaison.test".into());
        assert!(authenticate(&ids(), BASE, &to, &d).is_err());
        d.original_message_id = None;
        assert_eq!(
            authenticate(&ids(), BASE, &to, &d),
            Err(BounceRefusal::NoMessageId)
        );
        // A good tag only in a header below the delivering server's.
        let (mut to, d) = delivered(BASE, "<>");
        to.push(good);
        assert!(authenticate(&ids(), BASE, &to, &d).is_err());
    }

    #[test]
    fn defang_disables_links_and_strips_tricks() {
        assert_eq!(
            defang("550 go to http://evil.example/login now"),
            "550 go to hxxp://evil[.]example/login now"
        );
        assert_eq!(defang("HTTPS://Evil.Example"), "hxxps://Evil[.]Example");
        assert_eq!(defang("see www.evil.example"), "see www[.]evil[.]example");
        assert_eq!(defang("ftp://x.test"), "ftp[://]x[.]test");
        assert_eq!(
            defang("mailto:boss@evil.example"),
            "mailto[:]boss@evil[.]example"
        );
        assert_eq!(defang("evil。example"), "evil[.]example");
        // Status codes and numbers stay readable.
        assert_eq!(
            defang("5.1.1 (smtp; 550 5.1.1 no such user)"),
            "5.1.1 (smtp; 550 5.1.1 no such user)"
        );
        // Control and format characters (bidi override, zero width) go.
        assert_eq!(
            defang("ok\r\nSubject: x\u{202e}gnp.exe\u{200b}\t end"),
            "ok Subject: xgnp[.]exe end"
        );
        // The same table as the command checks: Arabic number signs and
        // the tag block go too.
        assert_eq!(defang("a\u{0600}b\u{e0000}c\u{e0041}d"), "abcd");
        // Bounded.
        let long = "a".repeat(10_000);
        assert_eq!(defang(&long).chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(defang(&long).ends_with('…'));
        assert_eq!(defang(""), "");
        // Defanging twice changes nothing more.
        let once = defang("see http://evil.example and mailto:x@y.test");
        assert_eq!(defang(&once), once);
    }

    #[test]
    fn delays_and_non_reports_are_not_bounces() {
        assert_eq!(
            parse(&POSTFIX_DSN.replace("Status: 5.1.1", "Status: 4.4.1")),
            None
        );
        assert_eq!(
            parse("Subject: hi\r\n\r\nFinal-Recipient: rfc822; a@b.test\r\nStatus: 5.1.1"),
            None
        );
        assert_eq!(parse(""), None);
    }
}
