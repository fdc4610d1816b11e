//! Delivery status notifications (RFC 3464): which recipient failed, why,
//! and which of our messages it was about.
//!
//! Parsed from the text of the report, not trusted for anything but telling
//! the partner: the original Message-ID must name an invitation Liaison
//! sent, or the report is ignored.

/// What a delivery report says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dsn {
    /// Recipients that failed, with their status and diagnostic.
    pub failed: Vec<FailedRecipient>,
    /// Message-ID of the returned message, without angle brackets.
    pub original_message_id: Option<String>,
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
