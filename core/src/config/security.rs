//! `[security]`: the token secret, sender trust and the caps.

use super::*;

/// `[security]`.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// Key for the HMAC that signs invitation tokens.
    pub token_secret: Secret,
    /// Days an invitation (and its token) stays valid.
    pub invitation_ttl_days: u32,
    /// The authserv-id of the receiving MX whose `Authentication-Results`
    /// headers Liaison believes. When set, every sender that gets power from
    /// its address alone must be authenticated by it (see [`crate::decide::trust`]);
    /// when unset, sender addresses are not verified at all.
    pub trusted_authserv_id: Option<String>,
    /// How many of the topmost `Authentication-Results` headers that MX
    /// adds (1 for most servers; one per milter for milter stacks).
    pub trusted_authserv_headers: usize,
    /// How an authenticated domain must match the From domain.
    pub alignment: crate::mail::auth::Alignment,
    /// Customers answering with a valid token or thread must be
    /// authenticated too (by default the credential is enough).
    pub authenticate_customers: bool,
    /// Messages larger than this are quarantined unread.
    pub max_message_bytes: usize,
    /// Replies Liaison sends to one address per hour at most.
    pub max_replies_per_hour: u32,
    /// A quarantined mail's raw bytes are kept in the store (so it can be
    /// released) only up to this size; larger ones stay only in the IMAP
    /// quarantine folder.
    pub quarantine_keep_bytes: usize,
    /// The raw bytes kept for quarantined mails take at most this much of
    /// the store in total; beyond it new ones stay only in the IMAP
    /// quarantine folder (releasing frees room).
    pub quarantine_store_bytes: u64,
    /// The mails a cap held back take at most this much of the store in
    /// total (their composed bytes, attachments included): whoever can
    /// make Liaison hold mail (a flood of support requests) must not be
    /// able to fill the disk. Beyond it a held mail is recorded (reason,
    /// subject, recipients) but not kept; its original stays in the inbox.
    pub held_store_bytes: u64,
    /// Support requests one customer address may have forwarded to the
    /// partner or opened as tickets per hour; the rest are held.
    pub max_support_requests_per_hour: u32,
    /// Hosts an invitation's approval link may point at (lower case).
    pub approval_link_hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurity {
    token_secret: Option<String>,
    token_secret_env: Option<String>,
    token_secret_file: Option<PathBuf>,
    #[serde(default = "default_ttl")]
    invitation_ttl_days: u32,
    trusted_authserv_id: Option<String>,
    #[serde(default = "default_trusted_authserv_headers")]
    trusted_authserv_headers: usize,
    #[serde(default)]
    alignment: crate::mail::auth::Alignment,
    #[serde(default)]
    authenticate_customers: bool,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: usize,
    #[serde(default = "default_max_replies")]
    max_replies_per_hour: u32,
    #[serde(default = "default_quarantine_keep_bytes")]
    quarantine_keep_bytes: usize,
    #[serde(default = "default_quarantine_store_bytes")]
    quarantine_store_bytes: u64,
    #[serde(default = "default_held_store_bytes")]
    held_store_bytes: u64,
    #[serde(default = "default_max_support_requests")]
    max_support_requests_per_hour: u32,
    #[serde(default = "default_approval_link_hosts")]
    approval_link_hosts: Vec<String>,
}

fn default_approval_link_hosts() -> Vec<String> {
    crate::model::gdap::DEFAULT_APPROVAL_LINK_HOSTS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn default_ttl() -> u32 {
    90
}

fn default_max_message_bytes() -> usize {
    10 * 1024 * 1024
}

fn default_trusted_authserv_headers() -> usize {
    1
}

fn default_max_replies() -> u32 {
    20
}

fn default_quarantine_keep_bytes() -> usize {
    1024 * 1024
}

fn default_quarantine_store_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_held_store_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_max_support_requests() -> u32 {
    5
}

impl RawSecurity {
    /// Checks `[security]` and resolves the token secret.
    pub(super) fn validate(self, secrets: &dyn SecretSource) -> Result<SecurityConfig> {
        let sec = self;
        let token_secret = resolve_secret(
            secrets,
            "security.token_secret",
            sec.token_secret,
            sec.token_secret_env,
            sec.token_secret_file,
        )?
        .ok_or_else(|| {
            invalid(
                "security.token_secret",
                "one of token_secret, token_secret_env or token_secret_file is required",
            )
        })?;
        if token_secret.expose().len() < 16 {
            return Err(invalid(
                "security.token_secret",
                "must be at least 16 characters (use 32+ random bytes, e.g. `openssl rand -hex 32`)",
            ));
        }
        let trusted_authserv_id = match sec.trusted_authserv_id {
            None => None,
            Some(id) => {
                let id = id.trim().to_string();
                if id.is_empty()
                    || id.contains(|c: char| c.is_whitespace() || c.is_control() || c == ';')
                {
                    return Err(invalid(
                        "security.trusted_authserv_id",
                        "must be the authserv-id your MX writes first in its Authentication-Results header, e.g. \"mx.example.com\"",
                    ));
                }
                Some(id)
            }
        };
        if !(1..=16).contains(&sec.trusted_authserv_headers) {
            return Err(invalid(
                "security.trusted_authserv_headers",
                "must be 1-16: how many Authentication-Results headers your MX adds on top (1 for most servers, one per milter for milter stacks)",
            ));
        }
        if sec.authenticate_customers && trusted_authserv_id.is_none() {
            return Err(invalid(
                "security.authenticate_customers",
                "needs security.trusted_authserv_id: without a trusted MX no sender can be authenticated",
            ));
        }
        if sec.invitation_ttl_days == 0 {
            return Err(invalid(
                "security.invitation_ttl_days",
                "must be at least 1",
            ));
        }
        let approval_link_hosts: Vec<String> = sec
            .approval_link_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if approval_link_hosts.is_empty()
            || approval_link_hosts
                .iter()
                .any(|h| h.is_empty() || h.contains(['/', ':', '@', ' ', '#', '?']))
        {
            return Err(invalid(
                "security.approval_link_hosts",
                "must list at least one host name (such as \"admin.microsoft.com\"), without scheme, port or path",
            ));
        }
        Ok(SecurityConfig {
            approval_link_hosts,
            token_secret,
            invitation_ttl_days: sec.invitation_ttl_days,
            trusted_authserv_id,
            trusted_authserv_headers: sec.trusted_authserv_headers,
            alignment: sec.alignment,
            authenticate_customers: sec.authenticate_customers,
            max_message_bytes: sec.max_message_bytes,
            max_replies_per_hour: sec.max_replies_per_hour,
            quarantine_keep_bytes: sec.quarantine_keep_bytes,
            quarantine_store_bytes: sec.quarantine_store_bytes,
            held_store_bytes: sec.held_store_bytes,
            max_support_requests_per_hour: sec.max_support_requests_per_hour,
        })
    }
}
