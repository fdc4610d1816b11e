//! Reading `Authentication-Results` (RFC 8601) to decide whether a mail's
//! From address was authenticated by the receiving server Liaison trusts.
//!
//! Anyone can write a From header, and anyone can write an
//! `Authentication-Results` header too. So the rules are strict:
//!
//! * **Only the trusted MX's own headers count, and only the topmost.** A
//!   receiving server prepends its header, so its headers stand above
//!   everything the sender wrote. The headers are walked top-down; the walk
//!   stops at the first header whose authserv-id is not the trusted one,
//!   and after `trusted_headers` headers (one for most servers; a milter
//!   stack such as OpenDKIM + OpenDMARC adds one per milter). A header with
//!   the trusted id *below* those is a forgery and is never read.
//! * **The header is tokenised, not split.** Comments `( … )` (nested, with
//!   quoted pairs) are skipped, never read as properties; quoted strings may
//!   hold `;` and `=`. A header that cannot be read yields no result.
//! * **The authenticated domain must align with the From domain**, as DMARC
//!   defines it (RFC 7489 §3.1): `dmarc=pass` with `header.from` equal to
//!   the From domain; `dkim=pass` whose `header.d` (or, when the server gave
//!   no `header.d`, the domain of `header.i`) aligns; or `spf=pass` whose
//!   `smtp.mailfrom` domain aligns. Strict alignment means the same domain;
//!   relaxed (the default) the same organisational domain, found through
//!   the Public Suffix List (the `psl` crate compiles the list in), so
//!   `evil.co.uk` never aligns with `x.co.uk`.
//!
//! Everything here is pure and total: malformed input gives a reason, never
//! a panic.

use serde::Deserialize;
use std::fmt;

/// How closely an authenticated domain must match the From domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alignment {
    /// The same organisational domain (`mail.example.com` aligns with
    /// `example.com`), as DMARC's default `adkim=r`/`aspf=r`.
    #[default]
    Relaxed,
    /// Exactly the same domain.
    Strict,
}

impl fmt::Display for Alignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Alignment::Relaxed => "relaxed",
            Alignment::Strict => "strict",
        })
    }
}

/// Which headers to believe and how to compare domains (from `[security]`).
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The authserv-id of the receiving server Liaison trusts.
    pub trusted_authserv_id: &'a str,
    /// How many of the topmost headers that server adds (at least 1).
    pub trusted_headers: usize,
    /// Strict or relaxed alignment.
    pub alignment: Alignment,
}

/// One `Authentication-Results` header, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    /// Who added it (lowercase).
    pub authserv_id: String,
    /// Its results in order; empty for `none`.
    pub results: Vec<MethodResult>,
}

/// One `method=result` with its reason and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodResult {
    /// `dkim`, `spf`, `dmarc`, … (lowercase, without a version).
    pub method: String,
    /// `pass`, `fail`, … (lowercase).
    pub result: String,
    /// The `reason=` value, if given.
    pub reason: Option<String>,
    /// `ptype.property` (lowercase) and value, in order.
    pub properties: Vec<(String, String)>,
}

impl MethodResult {
    /// The first value of `ptype.property`.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// It does not start with an authserv-id.
    #[error("it has no authserv-id")]
    NoAuthservId,
    /// A `(` without its `)`.
    #[error("a comment is not closed")]
    UnclosedComment,
    /// A `"` without its closing `"`.
    #[error("a quoted string is not closed")]
    UnclosedQuote,
    /// Something else stands where the grammar needs `expected`.
    #[error("{expected} expected at byte {at}")]
    Expected {
        /// What the grammar needs there.
        expected: &'static str,
        /// Byte offset in the (unfolded) header.
        at: usize,
    },
}

/// How the sender was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The result that counted, e.g. `dkim=pass header.d=example.com`.
    pub by: String,
}

/// Why the From address is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAuthenticated {
    /// The From address has no domain to check.
    #[error("the From address {from} has no usable domain")]
    NoFromDomain {
        /// The address.
        from: String,
    },
    /// The topmost header is not from the trusted server (or there is none).
    #[error("{}", no_trusted_header(.trusted, .topmost.as_deref()))]
    NoTrustedHeader {
        /// The trusted authserv-id.
        trusted: String,
        /// The authserv-id of the topmost header, when there is one.
        topmost: Option<String>,
    },
    /// The trusted server's headers hold no aligned pass.
    #[error("{trusted} recorded no pass aligned with {domain} ({alignment} alignment), only: {}", list_or_nothing(.seen))]
    NoAlignedPass {
        /// The trusted authserv-id.
        trusted: String,
        /// The From domain.
        domain: String,
        /// The alignment mode.
        alignment: Alignment,
        /// What the trusted headers did say, one entry per result.
        seen: Vec<String>,
    },
}

fn list_or_nothing(seen: &[String]) -> String {
    if seen.is_empty() {
        "nothing".to_string()
    } else {
        seen.join(", ")
    }
}

fn no_trusted_header(trusted: &str, topmost: Option<&str>) -> String {
    match topmost {
        None => format!("the mail carries no Authentication-Results header (none from {trusted})"),
        Some(id) => format!(
            "the topmost Authentication-Results header is from {id}, not from {trusted} (only the trusted server's own headers on top of the message count)"
        ),
    }
}

/// Whether the mail's From address was authenticated by the trusted server
/// (see the module docs for the rules). `headers` are the
/// `Authentication-Results` values in message order, topmost first.
pub fn verify_sender(
    headers: &[String],
    policy: &Policy,
    from: &str,
) -> Result<Verified, NotAuthenticated> {
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| normalize_domain(d))
        .filter(|d| !d.is_empty() && !d.contains(|c: char| c.is_whitespace()))
        .ok_or_else(|| NotAuthenticated::NoFromDomain { from: clean(from) })?;
    let trusted = policy.trusted_authserv_id;
    let mut seen = Vec::new();
    let mut counted = 0usize;
    for header in headers {
        if counted >= policy.trusted_headers.max(1) {
            break;
        }
        let id = authserv_id(header);
        if !id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(trusted))
        {
            if counted == 0 {
                return Err(NotAuthenticated::NoTrustedHeader {
                    trusted: trusted.to_string(),
                    topmost: Some(
                        id.map(|i| clean(&i))
                            .unwrap_or_else(|| "(unreadable)".into()),
                    ),
                });
            }
            break;
        }
        counted += 1;
        let parsed = match parse(header) {
            Ok(p) => p,
            Err(e) => {
                seen.push(format!("a header it cannot have written ({e})"));
                continue;
            }
        };
        for r in &parsed.results {
            match judge(r, &domain, policy.alignment) {
                Ok(by) => return Ok(Verified { by }),
                Err(note) => seen.push(note),
            }
        }
    }
    if counted == 0 {
        return Err(NotAuthenticated::NoTrustedHeader {
            trusted: trusted.to_string(),
            topmost: None,
        });
    }
    Err(NotAuthenticated::NoAlignedPass {
        trusted: trusted.to_string(),
        domain,
        alignment: policy.alignment,
        seen,
    })
}

/// `Ok` with a description when `r` authenticates `domain`; otherwise a
/// short note of what it said, for the reason text.
fn judge(r: &MethodResult, domain: &str, alignment: Alignment) -> Result<String, String> {
    let identity = |name: &'static str| r.property(name).map(|v| (name, v));
    let (name, value) = match r.method.as_str() {
        "dmarc" => match identity("header.from") {
            // DMARC itself checked alignment; the domain it evaluated must
            // be the From domain.
            Some((n, v)) if r.result == "pass" && domain_of(v) == domain => {
                return Ok(format!("dmarc=pass {n}={}", clean(v)))
            }
            other => other.unwrap_or(("header.from", "")),
        },
        // DMARC aligns the signing domain d=; i= (always within d=) only
        // stands in when a server reports no d=.
        "dkim" => identity("header.d")
            .or_else(|| identity("header.i"))
            .unwrap_or(("header.d", "")),
        "spf" => identity("smtp.mailfrom").unwrap_or(("smtp.mailfrom", "")),
        _ => return Err(format!("{}={}", clean(&r.method), clean(&r.result))),
    };
    let shown = format!("{}={} {name}={}", r.method, clean(&r.result), clean(value));
    if r.result != "pass" {
        return Err(shown);
    }
    if r.method != "dmarc" && aligned(&domain_of(value), domain, alignment) {
        return Ok(shown);
    }
    Err(format!("{shown} (not aligned)"))
}

/// Whether `authenticated` aligns with `from_domain` (RFC 7489 §3.1).
pub fn aligned(authenticated: &str, from_domain: &str, alignment: Alignment) -> bool {
    let a = normalize_domain(authenticated);
    let f = normalize_domain(from_domain);
    if a.is_empty() || f.is_empty() {
        return false;
    }
    if a == f {
        return true;
    }
    match alignment {
        Alignment::Strict => false,
        Alignment::Relaxed => match (organizational_domain(&a), organizational_domain(&f)) {
            (Some(x), Some(y)) => x == y,
            // A public suffix itself has no organisational domain: only
            // the exact domain matches it.
            _ => false,
        },
    }
}

/// The organisational domain (the public suffix plus one label), or `None`
/// for a public suffix itself or a name that is not a domain.
pub fn organizational_domain(domain: &str) -> Option<&str> {
    psl::domain_str(domain)
}

/// The domain of an identity that may be `local@domain`, `@domain` or
/// `domain`.
fn domain_of(identity: &str) -> String {
    let d = identity.rsplit_once('@').map_or(identity, |(_, d)| d);
    normalize_domain(d)
}

fn normalize_domain(d: &str) -> String {
    d.trim()
        .trim_matches(|c| c == '<' || c == '>')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Attacker-written text made safe and short for a reason line.
fn clean(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// The authserv-id of a header, if one can be read.
pub fn authserv_id(header: &str) -> Option<String> {
    let mut lx = Lexer::new(header);
    lx.skip_cfws().ok()?;
    lx.value().ok().flatten().filter(|v| !v.is_empty())
}

/// Parses one header value (the text after `Authentication-Results:`).
pub fn parse(header: &str) -> Result<AuthResults, ParseError> {
    let mut lx = Lexer::new(header);
    lx.skip_cfws()?;
    let authserv_id = lx
        .value()?
        .filter(|v| !v.is_empty())
        .ok_or(ParseError::NoAuthservId)?
        .to_ascii_lowercase();
    lx.skip_cfws()?;
    // Optional authres-version: digits before the first `;`.
    if lx.peek().is_some_and(|c| c.is_ascii_digit()) {
        lx.take_while(|c| c.is_ascii_digit());
        lx.skip_cfws()?;
    }
    let mut results = Vec::new();
    loop {
        lx.skip_cfws()?;
        match lx.peek() {
            None => break,
            Some(b';') => lx.bump(),
            Some(_) => return Err(lx.expected("`;`")),
        }
        lx.skip_cfws()?;
        if lx.peek().is_none() {
            // A trailing `;`: nothing follows.
            break;
        }
        let method = lx.keyword().ok_or_else(|| lx.expected("a method name"))?;
        lx.skip_cfws()?;
        if method == "none" && matches!(lx.peek(), None | Some(b';')) {
            // `no-result`: the server evaluated nothing.
            continue;
        }
        if lx.peek() == Some(b'/') {
            lx.bump();
            lx.skip_cfws()?;
            lx.keyword()
                .ok_or_else(|| lx.expected("a method version"))?;
            lx.skip_cfws()?;
        }
        lx.expect(b'=', "`=` after the method")?;
        lx.skip_cfws()?;
        let result = lx.keyword().ok_or_else(|| lx.expected("a result"))?;
        let mut r = MethodResult {
            method,
            result,
            reason: None,
            properties: Vec::new(),
        };
        loop {
            lx.skip_cfws()?;
            if matches!(lx.peek(), None | Some(b';')) {
                break;
            }
            let ptype = lx.keyword().ok_or_else(|| lx.expected("a property"))?;
            lx.skip_cfws()?;
            if ptype == "reason" && lx.peek() == Some(b'=') && r.reason.is_none() {
                lx.bump();
                lx.skip_cfws()?;
                r.reason = Some(lx.value()?.ok_or_else(|| lx.expected("a reason"))?);
                continue;
            }
            lx.expect(b'.', "`.` in `ptype.property`")?;
            lx.skip_cfws()?;
            let property = lx.keyword().ok_or_else(|| lx.expected("a property name"))?;
            lx.skip_cfws()?;
            lx.expect(b'=', "`=` after the property")?;
            lx.skip_cfws()?;
            let value = lx.pvalue()?;
            r.properties.push((format!("{ptype}.{property}"), value));
        }
        results.push(r);
    }
    Ok(AuthResults {
        authserv_id,
        results,
    })
}

/// A cursor over the header's bytes. Every special character of the
/// grammar is ASCII, so slicing at their positions keeps UTF-8 intact.
struct Lexer<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer { s, i: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn bump(&mut self) {
        self.i = (self.i + 1).min(self.s.len());
    }

    fn expected(&self, expected: &'static str) -> ParseError {
        ParseError::Expected {
            expected,
            at: self.i,
        }
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// Skips folding white space and comments (CFWS, RFC 5322 §3.2.2).
    fn skip_cfws(&mut self) -> Result<(), ParseError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.bump(),
                Some(b'(') => self.comment()?,
                _ => return Ok(()),
            }
        }
    }

    /// Skips one comment, with nested comments and quoted pairs inside.
    fn comment(&mut self) -> Result<(), ParseError> {
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            self.bump();
            match c {
                b'\\' => self.bump(),
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        Err(ParseError::UnclosedComment)
    }

    /// An RFC 5321 keyword (letters, digits, `-`; `_` tolerated), lowercase.
    fn keyword(&mut self) -> Option<String> {
        let k = self.take_while(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        (!k.is_empty()).then(|| k.to_ascii_lowercase())
    }

    /// A quoted string, unquoted.
    fn quoted(&mut self) -> Result<String, ParseError> {
        self.bump();
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.bump();
            match c {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.bump();
                    }
                }
                _ => out.push(c),
            }
        }
        Err(ParseError::UnclosedQuote)
    }

    /// A bare word: anything up to white space, a comment, `;` or `"`.
    /// Looser than RFC 2045's token on purpose: servers write base64
    /// (`header.b=ab/c+d=`) and addresses unquoted.
    fn word(&mut self) -> &'a str {
        self.take_while(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b';' | b'"'))
    }

    /// A value: a quoted string or a bare word; `None` when there is none.
    fn value(&mut self) -> Result<Option<String>, ParseError> {
        if self.peek() == Some(b'"') {
            return self.quoted().map(Some);
        }
        let w = self.word();
        Ok((!w.is_empty()).then(|| w.to_string()))
    }

    /// A property value: a value, or `"quoted local part"@domain`.
    fn pvalue(&mut self) -> Result<String, ParseError> {
        let mut v = self.value()?.unwrap_or_default();
        if self.peek() == Some(b'@') {
            v.push_str(self.word());
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "mx.liaison.test";
    const FROM: &str = "ops@northwind.example";

    fn policy(headers: usize, alignment: Alignment) -> Policy<'static> {
        Policy {
            trusted_authserv_id: ID,
            trusted_headers: headers,
            alignment,
        }
    }

    fn v(headers: &[&str], from: &str) -> Result<Verified, NotAuthenticated> {
        vn(headers, from, 1, Alignment::Relaxed)
    }

    fn vn(
        headers: &[&str],
        from: &str,
        n: usize,
        alignment: Alignment,
    ) -> Result<Verified, NotAuthenticated> {
        let h: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        verify_sender(&h, &policy(n, alignment), from)
    }

    #[test]
    fn dkim_spf_or_dmarc_pass_for_the_from_domain() {
        let ok = v(
            &["mx.liaison.test; dkim=pass header.d=northwind.example header.s=s1"],
            FROM,
        )
        .unwrap();
        assert_eq!(ok.by, "dkim=pass header.d=northwind.example");
        assert!(v(
            &["mx.liaison.test 1; spf=pass smtp.mailfrom=bounce@mail.northwind.example"],
            FROM
        )
        .is_ok());
        assert!(v(&["MX.LIAISON.TEST; dkim=fail header.d=northwind.example; spf=pass smtp.mailfrom=northwind.example"], FROM).is_ok());
        let ok = v(
            &["mx.liaison.test; dmarc=pass (p=reject dis=none) header.from=northwind.example"],
            FROM,
        )
        .unwrap();
        assert_eq!(ok.by, "dmarc=pass header.from=northwind.example");
        // header.i stands in when no header.d is given.
        assert!(v(
            &["mx.liaison.test; dkim=pass header.i=@northwind.example"],
            FROM
        )
        .is_ok());
        // A quoted authserv-id, a method version, folded white space.
        assert!(v(
            &["\"mx.liaison.test\"; dkim/1 = pass\r\n\theader.d = \"northwind.example\""],
            FROM
        )
        .is_ok());
    }

    #[test]
    fn refuses_missing_and_foreign_headers() {
        let e = v(&[], FROM).unwrap_err();
        assert!(
            matches!(e, NotAuthenticated::NoTrustedHeader { topmost: None, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("no Authentication-Results"), "{e}");
        // Written by someone else's server (or the sender itself).
        let e = v(
            &["evil.example; dkim=pass header.d=northwind.example"],
            FROM,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("topmost Authentication-Results header is from evil.example"),
            "{e}"
        );
        // A foreign instance above the trusted one: the trusted one is not
        // on top, so it was not added last by our MX; refused.
        let e = v(
            &[
                "evil.example; dkim=pass header.d=northwind.example",
                "mx.liaison.test; dkim=pass header.d=northwind.example",
            ],
            FROM,
        )
        .unwrap_err();
        assert!(matches!(e, NotAuthenticated::NoTrustedHeader { .. }), "{e}");
    }

    #[test]
    fn a_forged_trusted_header_below_the_real_one_never_counts() {
        // The MX's own header (on top) says fail; the sender's forgery
        // below says pass.
        let forged = [
            "mx.liaison.test; dkim=fail header.d=northwind.example; spf=fail smtp.mailfrom=northwind.example",
            "mx.liaison.test; dkim=pass header.d=northwind.example",
        ];
        let e = v(&forged, FROM).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("no pass aligned with northwind.example"),
            "{text}"
        );
        assert!(
            text.contains("dkim=fail header.d=northwind.example"),
            "{text}"
        );
        // Even with two trusted headers (a milter stack), a third is not read.
        let three = [
            "mx.liaison.test; dkim=fail header.d=northwind.example",
            "mx.liaison.test; dmarc=fail header.from=northwind.example",
            "mx.liaison.test; dkim=pass header.d=northwind.example",
        ];
        assert!(vn(&three, FROM, 2, Alignment::Relaxed).is_err());
        // …while a real second milter header is read.
        assert!(vn(&three, FROM, 3, Alignment::Relaxed).is_ok());
        let milters = [
            "mx.liaison.test; dmarc=pass header.from=northwind.example",
            "mx.liaison.test; dkim=pass header.d=northwind.example",
        ];
        assert!(vn(&milters, FROM, 2, Alignment::Relaxed).is_ok());
        // A foreign header between two trusted ones ends the walk.
        let split = [
            "mx.liaison.test; dkim=fail header.d=northwind.example",
            "relay.example; none",
            "mx.liaison.test; dkim=pass header.d=northwind.example",
        ];
        assert!(vn(&split, FROM, 3, Alignment::Relaxed).is_err());
    }

    #[test]
    fn comments_and_quoted_strings_are_not_properties() {
        for h in [
            "mx.liaison.test; dkim=pass (header.d=northwind.example) header.d=evil.example",
            "mx.liaison.test; dkim=pass header.d=evil.example (header.d=northwind.example)",
            "mx.liaison.test; dkim=fail (; dkim=pass header.d=northwind.example) header.d=evil.example",
            "mx.liaison.test; dkim=fail (nested (comment; dkim=pass header.d=northwind.example) still) header.d=x.example",
            "mx.liaison.test; dkim=fail reason=\"x; dkim=pass header.d=northwind.example\" header.d=evil.example",
            "mx.liaison.test (spf=pass smtp.mailfrom=northwind.example); dkim=fail header.d=northwind.example",
            "mx.liaison.test; spf=fail smtp.mailfrom=\"x\\\"; spf=pass smtp.mailfrom=northwind.example\"",
        ] {
            assert!(v(&[h], FROM).is_err(), "accepted: {h}");
        }
        let p = parse("mx.liaison.test; dkim=pass (good (nested \\) ok)) reason=\"a; b\" header.d=northwind.example header.b=ab/c+d=").unwrap();
        assert_eq!(
            p.results,
            vec![MethodResult {
                method: "dkim".into(),
                result: "pass".into(),
                reason: Some("a; b".into()),
                properties: vec![
                    ("header.d".into(), "northwind.example".into()),
                    ("header.b".into(), "ab/c+d=".into())
                ],
            }]
        );
    }

    #[test]
    fn alignment_relaxed_and_strict() {
        let sub = ["mx.liaison.test; spf=pass smtp.mailfrom=bounce@mail.northwind.example"];
        assert!(vn(&sub, FROM, 1, Alignment::Relaxed).is_ok());
        let e = vn(&sub, FROM, 1, Alignment::Strict).unwrap_err();
        assert!(
            e.to_string().contains("(not aligned)") && e.to_string().contains("strict"),
            "{e}"
        );
        let exact = ["mx.liaison.test; dkim=pass header.d=northwind.example"];
        assert!(vn(&exact, FROM, 1, Alignment::Strict).is_ok());
        // Parent domain signs for a subdomain's From: relaxed only.
        let parent = ["mx.liaison.test; dkim=pass header.d=northwind.example"];
        assert!(vn(&parent, "ops@eu.northwind.example", 1, Alignment::Relaxed).is_ok());
        assert!(vn(&parent, "ops@eu.northwind.example", 1, Alignment::Strict).is_err());
        // Strict uses d=, not a more specific i=.
        let di = [
            "mx.liaison.test; dkim=pass header.d=northwind.example header.i=@eu.northwind.example",
        ];
        assert!(vn(&di, "ops@eu.northwind.example", 1, Alignment::Strict).is_err());
        // Lookalikes and other domains never align.
        for d in [
            "evil.partner-lookalike.example",
            "northwind.example.evil.example",
            "notnorthwind.example",
            "evil.example",
        ] {
            let h = format!("mx.liaison.test; spf=pass smtp.mailfrom={d}");
            assert!(v(&[&h], FROM).is_err(), "{d}");
        }
        let e = v(
            &["mx.liaison.test; spf=pass smtp.mailfrom=evil.partner-lookalike.example"],
            FROM,
        )
        .unwrap_err();
        assert!(e.to_string().contains("(not aligned)"), "{e}");
    }

    #[test]
    fn public_suffixes_are_respected() {
        // Two organisations under the same public suffix.
        let h = ["mx.liaison.test; dkim=pass header.d=evil.co.uk"];
        assert!(v(&h, "ops@x.co.uk").is_err());
        let h = ["mx.liaison.test; spf=pass smtp.mailfrom=attacker.github.io"];
        assert!(v(&h, "ops@victim.github.io").is_err());
        // The same organisation under a multi-label suffix.
        let h = ["mx.liaison.test; dkim=pass header.d=mail.x.co.uk"];
        assert!(v(&h, "ops@x.co.uk").is_ok());
        // A public suffix itself aligns with nothing but itself.
        let h = ["mx.liaison.test; dkim=pass header.d=co.uk"];
        assert!(v(&h, "ops@x.co.uk").is_err());
        assert_eq!(organizational_domain("a.b.x.co.uk"), Some("x.co.uk"));
        assert_eq!(organizational_domain("co.uk"), None);
        // Test domains: the last label acts as the suffix.
        assert_eq!(
            organizational_domain("mx.liaison.test"),
            Some("liaison.test")
        );
        assert!(aligned(
            "Mail.Liaison.Test.",
            "liaison.test",
            Alignment::Relaxed
        ));
    }

    #[test]
    fn dmarc_needs_the_from_domain_itself() {
        assert!(v(
            &["mx.liaison.test; dmarc=pass header.from=evil.example"],
            FROM
        )
        .is_err());
        assert!(v(
            &["mx.liaison.test; dmarc=pass header.from=mail.northwind.example"],
            FROM
        )
        .is_err());
        assert!(v(
            &["mx.liaison.test; dmarc=fail header.from=northwind.example"],
            FROM
        )
        .is_err());
        assert!(v(&["mx.liaison.test; dmarc=pass"], FROM).is_err());
    }

    #[test]
    fn malformed_headers_never_panic_and_never_pass() {
        for h in [
            "",
            ";",
            "mx.liaison.test",
            "mx.liaison.test;",
            "mx.liaison.test; none",
            "mx.liaison.test; dkim",
            "mx.liaison.test; dkim=",
            "mx.liaison.test; dkim=pass header.d",
            "mx.liaison.test; dkim=pass header.d=",
            "mx.liaison.test; dkim=pass (unclosed header.d=northwind.example",
            "mx.liaison.test; dkim=pass header.d=\"northwind.example",
            "mx.liaison.test; dkim=pass header.d=northwind.example\\",
            "mx.liaison.test; dkim=pass header.d=northwind.example garbage",
            "mx.liaison.test; dkim=pass header.d=northwind.example (",
            "mx.liaison.test; =pass header.d=northwind.example",
            "mx.liaison.test; dkim=pass header.=northwind.example",
            "mx.liaison.test; dkim=pass .d=northwind.example",
            "(((((",
            "\"",
            "\\",
            "mx.liaison.test; dkim=pass header.d=\u{202e}elpmaxe.dniwhtron",
            "mx.liaison.test; dkim=pass header.d=北风.example",
            "mx.liaison.test; dkim=pass header.d=..",
        ] {
            assert!(v(&[h], FROM).is_err(), "accepted: {h:?}");
            let _ = parse(h);
            let _ = authserv_id(h);
        }
        // Byte-level garbage, every prefix of a real header.
        let real = "mx.liaison.test 1; dkim=pass (c (n)) reason=\"q\\\"\" header.d=northwind.example; spf=pass smtp.mailfrom=\"a b\"@northwind.example";
        for i in 0..=real.len() {
            let _ = parse(&real[..i]);
            let _ = v(&[&real[..i]], FROM);
        }
        assert!(v(&[real], FROM).is_ok());
        let p = parse(real).unwrap();
        assert_eq!(
            p.results[1].property("smtp.mailfrom"),
            Some("a b@northwind.example")
        );
        // A From without a domain.
        assert!(matches!(
            v(
                &["mx.liaison.test; dkim=pass header.d=northwind.example"],
                "ops"
            ),
            Err(NotAuthenticated::NoFromDomain { .. })
        ));
        // An unreadable trusted header is named in the reason.
        let e = v(&["mx.liaison.test; dkim=pass (unclosed"], FROM).unwrap_err();
        assert!(e.to_string().contains("a comment is not closed"), "{e}");
    }

    #[test]
    fn reason_text_is_bounded_and_free_of_control_characters() {
        let long = format!(
            "mx.liaison.test; dkim=fail header.d={}\u{7}x",
            "a".repeat(500)
        );
        let e = v(&[&long], FROM).unwrap_err().to_string();
        assert!(e.len() < 400, "{e}");
        assert!(!e.contains('\u{7}'), "{e}");
    }
}
