//! Reading `Authentication-Results` (RFC 8601) to decide whether a partner's
//! command mail really comes from the partner's domain.
//!
//! Anyone can write a From header. When `security.trusted_authserv_id` is
//! set, a partner command counts only if the receiving server named there
//! recorded `dkim=pass` (with `header.d`/`header.i` in the From domain) or
//! `spf=pass` (with `smtp.mailfrom` in the From domain). Headers from any
//! other authserv-id are ignored: a sender can add such headers itself.

/// Why a command mail's sender is not trusted, or `Ok` when it is.
pub fn verify_sender(
    authentication_results: &[String],
    trusted_authserv_id: &str,
    from: &str,
) -> Result<(), String> {
    let Some(domain) = from.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()) else {
        return Err("the From address has no domain".into());
    };
    let mut seen_trusted = false;
    for header in authentication_results {
        let mut parts = header.split(';');
        let authserv = parts
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        if !authserv.eq_ignore_ascii_case(trusted_authserv_id) {
            continue;
        }
        seen_trusted = true;
        for resinfo in parts {
            let words: Vec<String> = resinfo
                .split_whitespace()
                .map(|w| {
                    w.trim_matches(|c| c == '(' || c == ')')
                        .to_ascii_lowercase()
                })
                .collect();
            let Some(method) = words.first() else {
                continue;
            };
            let prop = |name: &str| {
                words
                    .iter()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
            };
            let in_domain = |value: Option<String>| {
                value.is_some_and(|v| {
                    let d = v
                        .rsplit('@')
                        .next()
                        .unwrap_or("")
                        .trim_matches('"')
                        .to_string();
                    d == domain || d.ends_with(&format!(".{domain}"))
                })
            };
            match method.as_str() {
                "dkim=pass" if in_domain(prop("header.d")) || in_domain(prop("header.i")) => {
                    return Ok(())
                }
                "spf=pass" if in_domain(prop("smtp.mailfrom")) => return Ok(()),
                _ => {}
            }
        }
    }
    Err(if seen_trusted {
        format!("{trusted_authserv_id} recorded neither dkim=pass nor spf=pass for {domain}")
    } else {
        format!("no Authentication-Results header from {trusted_authserv_id}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "mx.liaison.test";
    fn v(headers: &[&str], from: &str) -> Result<(), String> {
        let h: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        verify_sender(&h, ID, from)
    }

    #[test]
    fn dkim_or_spf_pass_for_the_from_domain() {
        assert!(v(
            &["mx.liaison.test; dkim=pass header.d=northwind.example header.s=s1"],
            "ops@northwind.example"
        )
        .is_ok());
        assert!(v(
            &["mx.liaison.test 1; spf=pass smtp.mailfrom=bounce@mail.northwind.example"],
            "ops@northwind.example"
        )
        .is_ok());
        assert!(v(&["MX.LIAISON.TEST; dkim=fail header.d=northwind.example; spf=pass smtp.mailfrom=northwind.example"], "ops@northwind.example").is_ok());
    }

    #[test]
    fn refuses_forgeries() {
        // Nothing at all.
        assert!(v(&[], "ops@northwind.example")
            .unwrap_err()
            .contains("no Authentication-Results"));
        // Written by someone else's server (or the sender itself).
        assert!(v(
            &["evil.example; dkim=pass header.d=northwind.example"],
            "ops@northwind.example"
        )
        .is_err());
        // Passes, but for another domain.
        assert!(v(
            &["mx.liaison.test; dkim=pass header.d=evil.example"],
            "ops@northwind.example"
        )
        .is_err());
        assert!(v(
            &["mx.liaison.test; dkim=pass header.d=notnorthwind.example"],
            "ops@northwind.example"
        )
        .is_err());
        // Fails.
        let e = v(&["mx.liaison.test; dkim=fail header.d=northwind.example; spf=softfail smtp.mailfrom=northwind.example"], "ops@northwind.example").unwrap_err();
        assert!(e.contains("neither dkim=pass nor spf=pass"), "{e}");
    }
}
