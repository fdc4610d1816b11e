//! Turning the raw bytes of a fetched message into an [`InboundMail`]: the
//! plain data the workflow decides on.
//!
//! Only this module touches `mail-parser`; the rest of the crate sees owned
//! strings. Parsing is total: a message that cannot be read yields an
//! [`InboundError`] naming what is wrong, which the caller records as a
//! quarantine reason instead of crashing or dropping the message.

use sha2::{Digest, Sha256};

/// Why a message could not be turned into an [`InboundMail`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// Bigger than the configured limit; not parsed at all.
    #[error("message is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a parseable RFC 5322 message.
    #[error("message is not valid MIME: {0}")]
    Malformed(String),
}

/// A file attached to a received mail.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    /// File name (sanitised: no path, no control characters).
    pub name: String,
    /// MIME type, e.g. `application/pdf`.
    pub content_type: String,
    /// The decoded bytes.
    pub data: Vec<u8>,
}

/// A received mail, reduced to what Liaison needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboundMail {
    /// Message-ID without angle brackets, if present.
    pub message_id: Option<String>,
    /// Dedupe key: the Message-ID plus a hash of what the sender wrote (see
    /// [`key`]), so one sender's mail never suppresses another's.
    pub key: String,
    /// The From address, lowercase, if it has one.
    pub from: Option<String>,
    /// The From display name.
    pub from_name: Option<String>,
    /// Further From addresses after the first (RFC 5322 allows several
    /// authors). Nobody can check such a mail's sender: DMARC aligns with
    /// one From domain, and which author would have the power is a guess.
    pub other_from: Vec<String>,
    /// To and Cc addresses, lowercase.
    pub recipients: Vec<String>,
    /// Delivered-To headers (the final recipient incl. `+tag`, added by the
    /// delivering server; survives clients that rewrite To).
    pub delivered_to: Vec<String>,
    /// Subject, or empty.
    pub subject: String,
    /// In-Reply-To ids without angle brackets.
    pub in_reply_to: Vec<String>,
    /// References ids without angle brackets.
    pub references: Vec<String>,
    /// The first text part; an HTML-only body converted to text.
    pub text: String,
    /// Why this is an automatic message that must not be answered (RFC 3834),
    /// if it is one.
    pub automatic: Option<String>,
    /// The size of the raw message in bytes.
    pub size: usize,
    /// Attached files.
    pub attachments: Vec<Attachment>,
    /// `Authentication-Results` headers, raw.
    pub authentication_results: Vec<String>,
    /// The delivery report, when this is a bounce.
    pub dsn: Option<crate::mail::dsn::Dsn>,
}

/// Parses `raw`, refusing messages bigger than `max_bytes` before parsing.
pub fn parse(raw: &[u8], max_bytes: usize) -> Result<InboundMail, InboundError> {
    if raw.len() > max_bytes {
        return Err(InboundError::TooLarge {
            size: raw.len(),
            limit: max_bytes,
        });
    }
    let msg = mail_parser::MessageParser::default()
        .parse(raw)
        .ok_or_else(|| InboundError::Malformed("no header section could be read".into()))?;
    if msg.headers().is_empty() {
        return Err(InboundError::Malformed("the message has no headers".into()));
    }

    let addrs = |a: Option<&mail_parser::Address>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address())
                .filter_map(crate::mail::address::normalize)
                .collect()
        })
        .unwrap_or_default()
    };
    let from_addr = msg.from().and_then(|a| a.first());
    let other_from: Vec<String> = msg
        .from()
        .map(|a| {
            a.iter()
                .skip(1)
                .map(|x| x.address().unwrap_or("(no address)").to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let from = from_addr
        .and_then(|a| a.address())
        .and_then(crate::mail::address::normalize);
    let from_name = from_addr.and_then(|a| a.name()).map(str::to_string);
    let mut recipients = addrs(msg.to());
    recipients.extend(addrs(msg.cc()));

    // One pass over the headers, in message order (topmost first: the
    // trust and bounce checks read the delivering server's own on top).
    let mut delivered_to = Vec::new();
    let mut authentication_results = Vec::new();
    let mut return_path = None;
    let mut automatic = None;
    for (name, value) in msg.headers_raw() {
        let value = value.trim();
        let lname = name.to_ascii_lowercase();
        match lname.as_str() {
            "delivered-to" | "x-original-to" => {
                if let Some(a) = crate::mail::address::normalize(value.trim_matches(['<', '>'])) {
                    delivered_to.push(a);
                }
            }
            "authentication-results" => {
                authentication_results.push(value.split_whitespace().collect::<Vec<_>>().join(" "))
            }
            // The topmost one is the delivering server's (from MAIL FROM).
            "return-path" if return_path.is_none() => return_path = Some(value.to_string()),
            _ => {}
        }
        if automatic.is_none() {
            automatic = automatic_reason(&lname, value);
        }
    }
    if automatic.is_none() {
        if let Some(f) = &from {
            let local = f.split('@').next().unwrap_or("");
            if local == "mailer-daemon" || local == "postmaster" {
                automatic = Some(format!("sender is {local}"));
            }
        }
    }
    let id_list = |v: &mail_parser::HeaderValue| -> Vec<String> {
        match v {
            mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
            mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
            _ => Vec::new(),
        }
    };
    let message_id = msg.message_id().map(str::to_string);
    let key = key(message_id.as_deref(), &msg, raw);
    let has_plain = msg
        .parts
        .iter()
        .any(|p| matches!(p.body, mail_parser::PartType::Text(_)));
    // `body_html` of a plain-text mail is the text converted to HTML (three
    // times its size for short lines): ask for it only when there is no
    // plain part.
    let html = if has_plain { None } else { msg.body_html(0) };
    let text: std::borrow::Cow<'_, str> = match html {
        // HTML-only mail: convert it ourselves, keeping block boundaries
        // as line breaks (see `html_to_text`).
        Some(html) => html_to_text(&html).into(),
        None => msg.body_text(0).unwrap_or_default(),
    };
    // One copy of the body, not two: the text is usually borrowed from
    // `raw`, and only a body with CRLF needs a rewritten one.
    let text = if text.contains('\r') {
        crlf_to_lf(&text)
    } else {
        text.into_owned()
    };
    let attachments = msg
        .attachments()
        .enumerate()
        .map(|(i, part)| {
            use mail_parser::MimeHeaders;
            let ct = part
                .content_type()
                .map(|c| match &c.c_subtype {
                    Some(sub) => format!("{}/{}", c.c_type, sub),
                    None => c.c_type.to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into());
            Attachment {
                name: sanitize_file_name(part.attachment_name(), i),
                content_type: ct.to_ascii_lowercase(),
                data: part.contents().to_vec(),
            }
        })
        .collect();
    let dsn = if automatic.is_some() {
        crate::mail::dsn::parse(&String::from_utf8_lossy(raw)).map(|mut d| {
            d.return_path = return_path;
            d
        })
    } else {
        None
    };
    Ok(InboundMail {
        dsn,
        attachments,
        authentication_results,
        message_id,
        key,
        from,
        from_name,
        other_from,
        recipients,
        delivered_to,
        subject: msg.subject().unwrap_or("").to_string(),
        in_reply_to: id_list(msg.in_reply_to()),
        references: id_list(msg.references()),
        text,
        automatic,
        size: raw.len(),
    })
}

/// Headers the author's side writes; trace headers (Received, Return-Path,
/// Delivered-To, Authentication-Results, …) are added on the way and differ
/// between two copies of one mail, so they are left out of the key.
const AUTHOR_HEADERS: [&str; 8] = [
    "from",
    "sender",
    "to",
    "cc",
    "subject",
    "date",
    "in-reply-to",
    "references",
];

/// The dedupe key of a message: `<Message-ID>#<hash>`, or `sha256:<hash>`
/// when it has none. The hash (128 bits, hex) covers the author's headers
/// ([`AUTHOR_HEADERS`], whitespace-normalised) and the raw body — what the
/// sender wrote, not the trace headers — so the same mail delivered to two
/// of Liaison's inboxes, or found again after a UIDVALIDITY change, has one
/// key, while a stranger who reuses a partner's Message-ID (or sends first
/// with one he expects) gets a key of his own and suppresses nothing.
fn key(message_id: Option<&str>, msg: &mail_parser::Message<'_>, raw: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(message_id.unwrap_or("").as_bytes());
    for wanted in AUTHOR_HEADERS {
        for (name, value) in msg.headers_raw() {
            if name.eq_ignore_ascii_case(wanted) {
                h.update(b"\0");
                h.update(wanted.as_bytes());
                h.update(b":");
                for word in value.split_whitespace() {
                    h.update(word.as_bytes());
                    h.update(b" ");
                }
            }
        }
    }
    h.update(b"\0\0");
    h.update(
        raw.get(msg.root_part().raw_body_offset() as usize..)
            .unwrap_or(&[]),
    );
    let hash = data_encoding::HEXLOWER.encode(&h.finalize()[..16]);
    match message_id {
        Some(id) => format!("{id}#{hash}"),
        None => format!("sha256:{hash}"),
    }
}

/// `text` with every CRLF as LF, in a string of exactly the needed size
/// (`str::replace` grows by doubling, up to twice the text).
fn crlf_to_lf(text: &str) -> String {
    let crlfs = text.matches("\r\n").count();
    let mut out = String::with_capacity(text.len() - crlfs);
    let mut rest = text;
    while let Some(p) = rest.find("\r\n") {
        out.push_str(&rest[..p]);
        out.push('\n');
        rest = &rest[p + 2..];
    }
    out.push_str(rest);
    out
}

/// A file name safe to put in a header and show: no directories, no control
/// or format characters (a U+202E in `invoice\u{202E}fdp.exe` would show it
/// as `invoiceexe.pdf`), bounded length; a generic name when there is none.
fn sanitize_file_name(name: Option<&str>, index: usize) -> String {
    let base = name
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|&c| !c.is_control() && !crate::command::is_format_character(c) && c != '"')
        .take(120)
        .collect::<String>();
    let base = base.trim().trim_start_matches('.').to_string();
    if base.is_empty() {
        format!("attachment-{}", index + 1)
    } else {
        base
    }
}

/// Converts an HTML body to text. Block-level tags get a line break first:
/// mail-parser's converter does not break lines at `<div>` or `<p>`, which
/// would glue a customer's "Accept" to the "On … wrote:" line below it and
/// hide it from the quote splitter.
pub fn html_to_text(html: &str) -> String {
    // Written straight into the message that mail-parser converts, so the
    // HTML is copied once, not twice.
    let head = b"Content-Type: text/html; charset=utf-8\r\n\r\n";
    let mut msg = Vec::with_capacity(head.len() + html.len() + 256);
    msg.extend_from_slice(head);
    let mut rest: &str = html;
    while let Some(pos) = rest.find('<') {
        msg.extend_from_slice(&rest.as_bytes()[..pos]);
        // The longest tag below has 10 letters: 11 tell it from a longer
        // name, and bound the work on a `<` followed by megabytes of letters.
        let tag = rest[pos + 1..]
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .take(11)
            .collect::<String>()
            .to_ascii_lowercase();
        if matches!(
            tag.as_str(),
            "div" | "p" | "br" | "hr" | "blockquote" | "table" | "tr" | "li"
        ) {
            msg.extend_from_slice(b"<br>");
        }
        msg.push(b'<');
        rest = &rest[pos + 1..];
    }
    msg.extend_from_slice(rest.as_bytes());
    mail_parser::MessageParser::default()
        .parse(&msg[..])
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default()
}

/// RFC 3834 and common practice: headers that mark a message as automatic.
/// Answering those is how mail loops start.
fn automatic_reason(name: &str, value: &str) -> Option<String> {
    let v = value.to_ascii_lowercase();
    match name {
        "auto-submitted" if v != "no" && !v.is_empty() => Some(format!("Auto-Submitted: {value}")),
        "precedence" if ["bulk", "junk", "list", "auto_reply"].contains(&v.as_str()) => {
            Some(format!("Precedence: {value}"))
        }
        "x-auto-response-suppress" => Some(format!("X-Auto-Response-Suppress: {value}")),
        "list-id" => Some("List-Id present (mailing list)".into()),
        "x-loop" if v.contains("liaison") => Some("our own X-Loop header".into()),
        "return-path" if v == "<>" => Some("empty Return-Path (bounce)".into()),
        "content-type" if v.contains("multipart/report") => {
            Some("delivery or disposition report".into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &str = "From: Partner One <Partner1@Liaison.test>\r\n\
To: commands@liaison.test\r\n\
Delivered-To: invites+abc@liaison.test\r\n\
Subject: Re: hello\r\n\
Message-ID: <m1@x.test>\r\n\
In-Reply-To: <prev@liaison.test>\r\n\
References: <a@x> <prev@liaison.test>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
invite alice@contoso.test\r\n";

    #[test]
    fn parses_the_fields_liaison_uses() {
        let m = parse(MAIL.as_bytes(), 1 << 20).unwrap();
        assert_eq!(m.from.as_deref(), Some("partner1@liaison.test"));
        assert_eq!(m.from_name.as_deref(), Some("Partner One"));
        assert_eq!(m.recipients, vec!["commands@liaison.test"]);
        assert_eq!(m.delivered_to, vec!["invites+abc@liaison.test"]);
        assert_eq!(m.message_id.as_deref(), Some("m1@x.test"));
        assert!(m.key.starts_with("m1@x.test#"), "{}", m.key);
        assert_eq!(m.in_reply_to, vec!["prev@liaison.test"]);
        assert_eq!(m.references, vec!["a@x", "prev@liaison.test"]);
        assert_eq!(m.text.trim(), "invite alice@contoso.test");
        assert_eq!(m.automatic, None);
    }

    #[test]
    fn authentication_results_keep_message_order() {
        // The trust check reads them top-down (the receiving MX's own
        // header is the topmost), so their order must survive parsing.
        let raw = format!(
            "Authentication-Results: mx.liaison.test;\r\n\tdkim=fail header.d=liaison.test\r\n\
             Received: from x by y\r\nAuthentication-Results: relay.example; none\r\n\
             authentication-results: mx.liaison.test; dkim=pass header.d=liaison.test\r\n{MAIL}"
        );
        let m = parse(raw.as_bytes(), 1 << 20).unwrap();
        assert_eq!(
            m.authentication_results,
            vec![
                "mx.liaison.test; dkim=fail header.d=liaison.test",
                "relay.example; none",
                "mx.liaison.test; dkim=pass header.d=liaison.test",
            ]
        );
    }

    #[test]
    fn html_only_bodies_become_text() {
        let raw = "From: a@b.test\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n<p>Accept</p><div>thanks</div>";
        let m = parse(raw.as_bytes(), 1 << 20).unwrap();
        assert!(m.text.contains("Accept"), "{:?}", m.text);
        assert!(!m.text.contains("<p>"));
    }

    #[test]
    fn html_blocks_become_lines() {
        let raw = "From: a@b.test\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n\
                   <div>Accept</div><div>On Mon, 1 Jan 2026, X &lt;x@y.test&gt; wrote:</div>\
                   <blockquote>decline</blockquote>";
        let m = parse(raw.as_bytes(), 1 << 20).unwrap();
        let first = m.text.lines().find(|l| !l.trim().is_empty()).unwrap();
        assert_eq!(first.trim(), "Accept", "{:?}", m.text);
        assert_eq!(
            crate::mail::reply::new_text(&m.text),
            "Accept",
            "{:?}",
            m.text
        );
    }

    #[test]
    fn korean_legacy_charset_is_decoded() {
        // "수락합니다" in EUC-KR.
        let mut raw =
            b"From: a@b.test\r\nSubject: x\r\nContent-Type: text/plain; charset=euc-kr\r\n\r\n"
                .to_vec();
        raw.extend_from_slice(&[0xbc, 0xf6, 0xb6, 0xf4, 0xc7, 0xd5, 0xb4, 0xcf, 0xb4, 0xd9]);
        let m = parse(&raw, 1 << 20).unwrap();
        assert_eq!(m.text.trim(), "수락합니다");
    }

    #[test]
    fn automatic_mails_are_recognised() {
        for (hdr, expect) in [
            ("Auto-Submitted: auto-replied", true),
            ("Auto-Submitted: no", false),
            ("Precedence: bulk", true),
            ("X-Auto-Response-Suppress: All", true),
            ("List-Id: <x.lists.test>", true),
            ("Return-Path: <>", true),
            ("X-Loop: liaison@liaison.test", true),
        ] {
            let raw = format!("From: a@b.test\r\n{hdr}\r\nSubject: x\r\n\r\nbody");
            let m = parse(raw.as_bytes(), 1 << 20).unwrap();
            assert_eq!(m.automatic.is_some(), expect, "{hdr}");
        }
        let raw = "From: MAILER-DAEMON@mail.test\r\nSubject: x\r\n\r\nbody";
        assert!(parse(raw.as_bytes(), 1 << 20).unwrap().automatic.is_some());
    }

    #[test]
    fn attachments_are_kept_with_safe_names() {
        let raw = "From: a@b.test\r\nSubject: x\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
--b\r\nContent-Type: application/pdf; name=\"../../etc/passwd.pdf\"\r\n\
Content-Disposition: attachment; filename=\"../../etc/passwd.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
        let m = parse(raw.as_bytes(), 1 << 20).unwrap();
        assert_eq!(m.text.trim(), "See attached.");
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].name, "passwd.pdf");
        assert_eq!(m.attachments[0].content_type, "application/pdf");
        assert_eq!(m.attachments[0].data, b"%PDF-1.4\n");
    }

    #[test]
    fn too_large_and_missing_ids() {
        assert!(matches!(
            parse(MAIL.as_bytes(), 10),
            Err(InboundError::TooLarge { .. })
        ));
        let raw = "From: a@b.test\r\nSubject: x\r\n\r\nbody";
        let m = parse(raw.as_bytes(), 1 << 20).unwrap();
        assert!(m.key.starts_with("sha256:"));
        assert_eq!(parse(raw.as_bytes(), 1 << 20).unwrap().key, m.key);
    }

    #[test]
    fn keys_cover_sender_and_content_but_not_trace_headers() {
        let key = |raw: &str| parse(raw.as_bytes(), 1 << 20).unwrap().key;
        let original = key(MAIL);
        // The same mail as delivered to another inbox or fetched again.
        let copy = format!(
            "Return-Path: <partner1@liaison.test>\r\nDelivered-To: other@liaison.test\r\n\
             Received: from mx.test by mail.test; Wed, 25 Nov 2026 10:00:01 +0000\r\n\
             Authentication-Results: mx.test; spf=pass\r\n{MAIL}"
        );
        assert_eq!(key(&copy), original);
        // A stranger reusing the Message-ID, or other content under it.
        let stranger = MAIL.replace("Partner1@Liaison.test", "mallory@evil.test");
        assert_ne!(key(&stranger), original);
        assert!(key(&stranger).starts_with("m1@x.test#"));
        let other_text = MAIL.replace("invite alice", "invite bob");
        assert_ne!(key(&other_text), original);
        // Without a Message-ID the content hash alone is the key.
        let no_id = MAIL.replace("Message-ID: <m1@x.test>\r\n", "");
        let no_id_copy = format!("Received: from a by b\r\n{no_id}");
        assert!(key(&no_id).starts_with("sha256:"));
        assert_eq!(key(&no_id), key(&no_id_copy));
    }

    #[test]
    fn attachment_names_lose_format_characters() {
        assert_eq!(
            sanitize_file_name(Some("invoice\u{202E}fdp.exe"), 0),
            "invoicefdp.exe"
        );
        assert_eq!(
            sanitize_file_name(Some("\u{200B}\u{2066}report.pdf\u{2069}"), 0),
            "report.pdf"
        );
        assert_eq!(sanitize_file_name(Some("\u{202E}"), 2), "attachment-3");
    }

    #[test]
    fn garbage_does_not_panic() {
        for raw in [&b""[..], b"\0\0\0", b"no colon here\r\n\r\n", &[0xff; 100]] {
            let _ = parse(raw, 1 << 20);
        }
    }
}
