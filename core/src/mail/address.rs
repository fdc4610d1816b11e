//! Email address helpers: normalising, and the plus-address tag that carries
//! an invitation token (`invites+TOKEN@example.com`).
//!
//! Deliberately strict: Liaison only ever needs plain `local@domain`
//! addresses, and refusing anything else (spaces, CR/LF, angle brackets,
//! quotes) is what keeps command arguments from injecting mail headers.

/// Lowercases and checks a plain address; `None` when it is not one.
pub fn normalize(addr: &str) -> Option<String> {
    let addr = addr.trim();
    if addr.len() > 254 {
        return None;
    }
    let (local, domain) = addr.rsplit_once('@')?;
    if local.is_empty() || local.len() > 64 || domain.is_empty() {
        return None;
    }
    let local_ok = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let domain_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    }) && domain.contains('.');
    if !local_ok
        || !domain_ok
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return None;
    }
    Some(addr.to_ascii_lowercase())
}

/// The `+tag` of `base+tag@domain` when `addr` is a plus-address of `base`
/// (`base` given as `local@domain`). The tag keeps its case.
pub fn plus_tag<'a>(addr: &'a str, base: &str) -> Option<&'a str> {
    let (base_local, base_domain) = base.rsplit_once('@')?;
    let (local, domain) = addr.trim().rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(base_domain) {
        return None;
    }
    let (l, tag) = local.split_once('+')?;
    if !l.eq_ignore_ascii_case(base_local) || tag.is_empty() {
        return None;
    }
    Some(tag)
}

/// `addr` without any `+tag` in its local part.
pub fn without_plus_tag(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            let base = local.split_once('+').map(|(b, _)| b).unwrap_or(local);
            format!("{base}@{domain}")
        }
        None => addr.to_string(),
    }
}

/// `base` with `+tag` appended to its local part.
pub fn with_plus_tag(base: &str, tag: &str) -> String {
    match base.rsplit_once('@') {
        Some((local, domain)) => format!("{local}+{tag}@{domain}"),
        None => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_plain_addresses() {
        assert_eq!(
            normalize(" Alice@Contoso.Test ").as_deref(),
            Some("alice@contoso.test")
        );
        assert_eq!(
            normalize("a.b+c@x.example").as_deref(),
            Some("a.b+c@x.example")
        );
    }

    #[test]
    fn refuses_anything_that_could_inject_headers() {
        for bad in [
            "alice@contoso.test\r\nBcc: x@y.z",
            "alice@contoso.test\nX",
            "<alice@contoso.test>",
            "Alice <alice@contoso.test>",
            "alice",
            "@contoso.test",
            "alice@",
            "alice@localhost",
            "al ice@contoso.test",
            "alice@contoso..test",
            ".alice@contoso.test",
            "\"a\"@contoso.test",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plus_tags() {
        assert_eq!(
            plus_tag("invites+AbC@liaison.test", "invites@liaison.test"),
            Some("AbC")
        );
        assert_eq!(
            plus_tag("INVITES+x@LIAISON.test", "invites@liaison.test"),
            Some("x")
        );
        assert_eq!(
            plus_tag("invites@liaison.test", "invites@liaison.test"),
            None
        );
        assert_eq!(
            plus_tag("other+x@liaison.test", "invites@liaison.test"),
            None
        );
        assert_eq!(
            plus_tag("invites+x@evil.test", "invites@liaison.test"),
            None
        );
        assert_eq!(
            with_plus_tag("invites@liaison.test", "t0k"),
            "invites+t0k@liaison.test"
        );
    }
}
