//! The decision core: given one inbound mail and a read-only view of the
//! store, decide what changes and which mails to send.
//!
//! Nothing here performs IO, reads a clock or draws randomness: the time
//! comes in through [`Context::now`], ids and Message-IDs are derived from
//! the inbound message's key, and the result is a plain [`Decision`]. The
//! same mail and the same state always give the same decision, which is what
//! lets the shell re-run a message after a crash without sending different
//! mails, and lets the tests below run without any server.

use crate::address;
use crate::command::{self, Command, CommandError, Stop};
use crate::config::{Config, Partner};
use crate::inbound::InboundMail;
use crate::intent::{self, Intent};
use crate::invitation::{Invitation, InvitationKind};
use crate::relationship::{Relationship, RelationshipEvent, RelationshipState, TransitionError};
use crate::store::{StoreError, StoreView};
use crate::templates::TemplateName;
use crate::token::{self, TokenError, TokenKey};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Errors that stop a decision (only store reads can fail).
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the decision core needs besides the mail and the store.
pub struct Context<'a> {
    /// The configuration (partners, addresses, lifetimes).
    pub config: &'a Config,
    /// Signs and checks tokens.
    pub tokens: &'a TokenKey,
    /// Current time, Unix seconds.
    pub now: u64,
}

/// Which of Liaison's addresses a mail is sent from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The command address (transcripts, partner notices).
    Commands,
    /// The invitations address (everything to customers).
    Invitations,
}

/// A mail to send, before rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct MailPlan {
    /// Which template.
    pub template: TemplateName,
    /// In which locale.
    pub locale: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Sending address.
    pub from: Sender,
    /// Reply-To, when replies must reach a tagged address.
    pub reply_to: Option<String>,
    /// Message-ID (no angle brackets).
    pub message_id: String,
    /// In-Reply-To (no angle brackets).
    pub in_reply_to: Option<String>,
    /// References (no angle brackets).
    pub references: Vec<String>,
    /// Template variables.
    pub vars: serde_json::Value,
    /// Invitation this mail belongs to: replies to it thread back there.
    pub invitation: Option<u64>,
}

/// How a mail was classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailClass {
    /// Commands from a configured partner.
    Command {
        /// Partner id.
        partner: String,
    },
    /// A customer's answer or message about one relationship.
    Customer {
        /// Partner id.
        partner: String,
        /// Customer address.
        customer: String,
    },
    /// Nothing to do and nobody to answer; the reason is logged and stored.
    Ignored,
}

impl MailClass {
    /// Short name for logs and the processed record.
    pub fn name(&self) -> &'static str {
        match self {
            MailClass::Command { .. } => "command",
            MailClass::Customer { .. } => "customer",
            MailClass::Ignored => "ignored",
        }
    }
}

/// The result of deciding on one mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The classification.
    pub class: MailClass,
    /// One line saying what was done, or why nothing was.
    pub summary: String,
    /// Relationship records to write.
    pub relationships: Vec<Relationship>,
    /// Invitation records to write.
    pub invitations: Vec<Invitation>,
    /// Mails to send.
    pub mails: Vec<MailPlan>,
}

impl Decision {
    fn ignored(summary: impl Into<String>) -> Self {
        Decision {
            class: MailClass::Ignored,
            summary: summary.into(),
            relationships: vec![],
            invitations: vec![],
            mails: vec![],
        }
    }
}

/// Formats Unix seconds as RFC 3339 (UTC, whole seconds).
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

fn date_only(secs: u64) -> String {
    rfc3339(secs)[..10].to_string()
}

/// Derives a stable 63-bit id from a message key and a salt.
fn derive_id(key: &str, salt: &str) -> u64 {
    let h = Sha256::digest(format!("{key}\0{salt}").as_bytes());
    let id = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) >> 1;
    id.max(1)
}

/// Builds deterministic Message-IDs for the mails caused by one inbound mail.
struct MessageIds<'a> {
    key: &'a str,
    domain: &'a str,
    n: usize,
}

impl MessageIds<'_> {
    fn next(&mut self) -> String {
        self.n += 1;
        let h = Sha256::digest(format!("{}\0out{}", self.key, self.n).as_bytes());
        format!(
            "liaison.{}@{}",
            data_encoding::HEXLOWER.encode(&h[..12]),
            self.domain
        )
    }
}

/// Decides what to do with `mail`.
pub fn decide(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
) -> Result<Decision, WorkflowError> {
    if let Some(reason) = &mail.automatic {
        return Ok(Decision::ignored(format!(
            "automatic mail ({reason}); never answered (RFC 3834)"
        )));
    }
    let Some(from) = mail.from.as_deref() else {
        return Ok(Decision::ignored("no usable From address"));
    };
    let cfg = ctx.config;
    if from == cfg.addresses.commands || from == cfg.addresses.invitations {
        return Ok(Decision::ignored("sent from Liaison's own address (loop)"));
    }
    let to_commands = mail
        .recipients
        .iter()
        .chain(&mail.delivered_to)
        .any(|a| *a == cfg.addresses.commands);
    if to_commands {
        if let Some(partner) = cfg.partner_by_email(from) {
            return run_commands(ctx, view, mail, partner, from);
        }
    }
    // Anyone else, even writing to the command address (a customer who
    // answers "to all" on a forwarded draft), is judged as a customer:
    // a signed answer still counts, and a stranger is ignored.
    customer_mail(ctx, view, mail, from, to_commands)
}

// ---- partner commands -----------------------------------------------------

struct CommandRun<'a, 'c> {
    ctx: &'a Context<'c>,
    view: &'a dyn StoreView,
    mail: &'a InboundMail,
    partner: &'a Partner,
    ids: MessageIds<'a>,
    decision: Decision,
}

fn run_commands(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    partner: &Partner,
    from: &str,
) -> Result<Decision, WorkflowError> {
    let mut script = command::parse_script(&mail.text);
    if script.lines.is_empty() && !mail.subject.trim().is_empty() {
        let subject = strip_reply_prefixes(&mail.subject);
        let from_subject = command::parse_script(subject);
        if from_subject.lines.iter().any(|l| l.parsed.is_ok()) {
            script = from_subject;
        }
    }
    let mut run = CommandRun {
        ctx,
        view,
        mail,
        partner,
        ids: MessageIds {
            key: &mail.key,
            domain: ctx.config.addresses.message_id_domain(),
            n: 0,
        },
        decision: Decision {
            class: MailClass::Command {
                partner: partner.id.clone(),
            },
            summary: String::new(),
            relationships: vec![],
            invitations: vec![],
            mails: vec![],
        },
    };
    let mut results = Vec::new();
    if script.lines.is_empty() {
        results.push(json!({"command": null, "ok": true, "result": help_text()}));
    }
    for (index, line) in script.lines.iter().enumerate() {
        let (ok, result) = match &line.parsed {
            Ok(cmd) => match run.execute(index, cmd)? {
                Ok(text) => (true, text),
                Err(text) => (false, text),
            },
            Err(e @ CommandError::Unknown(_)) => (false, e.to_string()),
            Err(e) => (false, e.to_string()),
        };
        results.push(json!({"command": line.text, "ok": ok, "result": result}));
    }
    let note = match script.stopped {
        Some(Stop::TooManyCommands) => Some(format!(
            "Only the first {} commands were run; send the rest in another mail.",
            command::MAX_COMMANDS
        )),
        Some(Stop::TooManyUnknown) => Some(format!(
            "Stopped after {} unknown commands; the rest of the mail was skipped.",
            command::MAX_UNKNOWN
        )),
        _ => None,
    };
    let n_ok = results.iter().filter(|r| r["ok"] == true).count();
    let summary = format!(
        "{} command(s) from {} ({}): {} ok, {} failed",
        script.lines.len(),
        from,
        partner.id,
        n_ok,
        results.len() - n_ok
    );
    let message_id = run.ids.next();
    let mut references = mail.references.clone();
    references.extend(mail.message_id.clone());
    run.decision.mails.push(MailPlan {
        template: TemplateName::Transcript,
        locale: partner.locale.clone(),
        to: vec![from.to_string()],
        from: Sender::Commands,
        reply_to: None,
        message_id,
        in_reply_to: mail.message_id.clone(),
        references,
        vars: json!({
            "partner_name": partner.name,
            "original_subject": strip_reply_prefixes(&mail.subject),
            "results": results,
            "note": note,
        }),
        invitation: None,
    });
    run.decision.summary = summary;
    Ok(run.decision)
}

fn strip_reply_prefixes(subject: &str) -> &str {
    let mut s = subject.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        let cut = ["re:", "fw:", "fwd:", "aw:", "sv:", "답장:", "회신:"]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map(|p| p.len());
        match cut {
            Some(n) => s = s[n..].trim_start(),
            None => return s,
        }
    }
}

/// The command reference sent for `help` and for mails with no command.
pub fn help_text() -> String {
    let mut out = String::from("Commands (one per line; CUSTOMER is an email address):\n");
    for (_, usage) in command::USAGE {
        out.push_str("  ");
        out.push_str(usage);
        out.push('\n');
    }
    out.push_str("Lines after `thanks`, a signature (`-- `) or quoted text are ignored.");
    out
}

type Outcome = Result<String, String>;

impl CommandRun<'_, '_> {
    /// The relationship as already changed earlier in this mail, or as stored.
    fn current(&self, customer: &str) -> Result<Option<Relationship>, WorkflowError> {
        if let Some(r) = self
            .decision
            .relationships
            .iter()
            .rev()
            .find(|r| r.customer == customer)
        {
            return Ok(Some(r.clone()));
        }
        Ok(self.view.relationship(&self.partner.id, customer)?)
    }

    fn put(&mut self, rel: Relationship) {
        self.decision
            .relationships
            .retain(|r| r.customer != rel.customer);
        self.decision.relationships.push(rel);
    }

    fn not_found(&self, customer: &str) -> String {
        // Another partner's customer gets the same answer as an unknown one:
        // a partner must not learn who else works with whom.
        format!(
            "{customer} has no relationship with {}; use `invite {customer}` first",
            self.partner.name
        )
    }

    fn execute(&mut self, index: usize, cmd: &Command) -> Result<Outcome, WorkflowError> {
        Ok(match cmd {
            Command::Help => Ok(help_text()),
            Command::Invite {
                customer,
                name,
                locale,
                draft,
            } => self.invite(index, customer, name.as_deref(), locale.as_deref(), *draft)?,
            Command::Resend { customer } => self.resend(customer)?,
            Command::Status { customer: Some(c) } => match self.current(c)? {
                Some(r) => Ok(status_line(&r)),
                None => Err(self.not_found(c)),
            },
            Command::Status { customer: None } | Command::List { state: None } => {
                self.list(None)?
            }
            Command::List { state } => self.list(*state)?,
            Command::History { customer } => match self.current(customer)? {
                Some(r) => Ok(r
                    .history
                    .iter()
                    .map(|h| {
                        format!(
                            "{}  {} -> {}  by {}{}",
                            rfc3339(h.at),
                            h.from.map(|s| s.as_str()).unwrap_or("(new)"),
                            h.to,
                            h.actor,
                            h.message_id
                                .as_deref()
                                .map(|m| format!("  <{m}>"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")),
                None => Err(self.not_found(customer)),
            },
        })
    }

    fn list(&self, state: Option<RelationshipState>) -> Result<Outcome, WorkflowError> {
        let mut rels = self.view.relationships_of(&self.partner.id)?;
        for changed in &self.decision.relationships {
            rels.retain(|r| r.customer != changed.customer);
            rels.push(changed.clone());
        }
        rels.sort_by(|a, b| a.customer.cmp(&b.customer));
        let lines: Vec<String> = rels
            .iter()
            .filter(|r| state.is_none_or(|s| r.state == s))
            .map(status_line)
            .collect();
        Ok(Ok(if lines.is_empty() {
            "no relationships".to_string()
        } else {
            lines.join("\n")
        }))
    }

    fn invite(
        &mut self,
        index: usize,
        customer: &str,
        name: Option<&str>,
        locale: Option<&str>,
        draft: bool,
    ) -> Result<Outcome, WorkflowError> {
        let cfg = self.ctx.config;
        // Plus-variants of our own or a partner's address are still ours.
        let base = address::without_plus_tag(customer);
        if cfg.partner_by_email(&base).is_some()
            || [
                &cfg.addresses.commands,
                &cfg.addresses.invitations,
                &cfg.addresses.support_desk,
            ]
            .contains(&&base)
        {
            return Ok(Err(format!(
                "{customer} is a partner or Liaison address, not a customer"
            )));
        }
        let existing = self.current(customer)?;
        let mut rel = match existing {
            Some(r) => r,
            None => Relationship {
                partner: self.partner.id.clone(),
                customer: customer.to_string(),
                customer_name: None,
                locale: self.partner.locale.clone(),
                state: RelationshipState::Removed,
                since: self.ctx.now,
                invitation_id: None,
                history: vec![],
            },
        };
        let is_new = rel.history.is_empty();
        let from_state = if is_new { None } else { Some(rel.state) };
        match crate::relationship::transition(from_state, RelationshipEvent::Invited) {
            Ok(_) => {}
            Err(TransitionError::Already(RelationshipState::Invited)) => {
                return Ok(Err(format!(
                "{customer} was already invited on {}; use `resend {customer}` to send it again",
                date_only(rel.since)
            )))
            }
            Err(_) => {
                return Ok(Err(format!(
                    "{customer} is {} since {}; no new invitation is needed",
                    rel.state,
                    date_only(rel.since)
                )))
            }
        }
        if let Some(n) = name {
            rel.customer_name = Some(n.to_string());
        }
        if let Some(l) = locale {
            rel.locale = l.to_string();
        }
        let id = derive_id(&self.mail.key, &format!("invite{index}"));
        let expires = self.ctx.now + u64::from(cfg.security.invitation_ttl_days) * 86_400;
        let message_id = self.ids.next();
        let invitation = Invitation {
            id,
            kind: InvitationKind::Invitation,
            partner: self.partner.id.clone(),
            customer: customer.to_string(),
            customer_name: rel.customer_name.clone(),
            locale: rel.locale.clone(),
            created: self.ctx.now,
            expires,
            message_id: message_id.clone(),
            draft,
        };
        let actor = self.mail.from.clone().unwrap_or_default();
        if is_new {
            rel.history.push(crate::relationship::HistoryEntry {
                at: self.ctx.now,
                from: None,
                to: RelationshipState::Invited,
                actor,
                message_id: self.mail.message_id.clone(),
            });
            rel.state = RelationshipState::Invited;
            rel.since = self.ctx.now;
        } else {
            rel.apply(
                RelationshipEvent::Invited,
                self.ctx.now,
                &actor,
                self.mail.message_id.as_deref(),
            )
            .expect("checked above");
        }
        rel.invitation_id = Some(id);
        let plan = self.invitation_mail(&invitation, message_id, draft);
        self.decision.mails.push(plan);
        self.decision.invitations.push(invitation);
        let locale_name = if rel.locale == "ko" {
            "Korean"
        } else {
            "English"
        };
        let result = if draft {
            format!(
                "draft invitation for {customer} sent to you ({locale_name}); forward it to the customer. \
                 Their answer counts whoever sends it on. It expires on {}.",
                date_only(expires)
            )
        } else {
            format!(
                "invited {customer} (invitation sent in {locale_name}; it expires on {})",
                date_only(expires)
            )
        };
        self.put(rel);
        Ok(Ok(result))
    }

    fn resend(&mut self, customer: &str) -> Result<Outcome, WorkflowError> {
        let Some(rel) = self.current(customer)? else {
            return Ok(Err(self.not_found(customer)));
        };
        if rel.state != RelationshipState::Invited {
            return Ok(Err(format!(
                "{customer} is {}; only a pending invitation can be resent",
                rel.state
            )));
        }
        let invitation = match rel.invitation_id {
            Some(id) => match self
                .decision
                .invitations
                .iter()
                .find(|i| i.id == id)
                .cloned()
            {
                Some(i) => Some(i),
                None => self.view.invitation(id)?,
            },
            None => None,
        };
        let Some(invitation) = invitation else {
            return Ok(Err(format!(
                "the invitation of {customer} is missing from the store"
            )));
        };
        let message_id = self.ids.next();
        let plan = self.invitation_mail(&invitation, message_id, false);
        self.decision.mails.push(plan);
        Ok(Ok(format!(
            "invitation resent to {customer} (same link; it expires on {})",
            date_only(invitation.expires)
        )))
    }

    fn invitation_mail(&self, inv: &Invitation, message_id: String, draft: bool) -> MailPlan {
        let cfg = self.ctx.config;
        let token = self
            .ctx
            .tokens
            .issue(inv.kind.purpose(), inv.id, inv.expires, &inv.customer);
        let reply_address = address::with_plus_tag(&cfg.addresses.invitations, &token);
        let subject_ref = format!("[ref:{token}]");
        let mailto = |word: &str| {
            format!(
                "mailto:{reply_address}?subject={}&body={word}",
                percent(&format!("Re: {word} {subject_ref}"))
            )
        };
        let to = if draft {
            vec![self.mail.from.clone().unwrap_or_default()]
        } else {
            vec![inv.customer.clone()]
        };
        MailPlan {
            template: TemplateName::Invitation,
            locale: inv.locale.clone(),
            to,
            from: Sender::Invitations,
            reply_to: Some(reply_address.clone()),
            message_id,
            in_reply_to: None,
            references: vec![],
            vars: json!({
                "partner_name": self.partner.name,
                "customer_email": inv.customer,
                "customer_name": inv.customer_name,
                "token": token,
                "subject_ref": subject_ref,
                "reply_address": reply_address,
                "accept_link": mailto("accept"),
                "decline_link": mailto("decline"),
                "expires": date_only(inv.expires),
            }),
            invitation: Some(inv.id),
        }
    }
}

fn status_line(r: &Relationship) -> String {
    format!(
        "{}  {}  since {}{}",
        r.customer,
        r.state,
        rfc3339(r.since),
        r.customer_name
            .as_deref()
            .map(|n| format!("  ({n})"))
            .unwrap_or_default()
    )
}

/// Percent-encodes for a mailto: query value.
fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---- customer mail --------------------------------------------------------

/// How an inbound mail was tied to an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchedBy {
    PlusAddress,
    Subject,
    Thread,
}

/// The result of looking for the invitation a customer mail refers to.
enum Reference {
    /// A valid token or thread.
    Found(Invitation, MatchedBy),
    /// A genuine token or thread whose invitation has expired.
    Expired(Invitation),
    /// A token that fails verification: forged, damaged or unknown.
    Refused(String),
    /// No reference at all.
    Missing,
}

fn find_invitation(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
) -> Result<Reference, WorkflowError> {
    let base = &ctx.config.addresses.invitations;
    let mut candidates: Vec<(String, MatchedBy)> = mail
        .delivered_to
        .iter()
        .chain(&mail.recipients)
        .filter_map(|a| address::plus_tag(a, base))
        .map(|t| (t.to_string(), MatchedBy::PlusAddress))
        .collect();
    candidates.extend(
        token::find_candidates(&mail.subject)
            .into_iter()
            .map(|t| (t.to_string(), MatchedBy::Subject)),
    );
    let mut refusal = None;
    for (tok, how) in candidates {
        let Ok(claims) = token::peek(&tok) else {
            refusal.get_or_insert(format!("{how:?} token is malformed"));
            continue;
        };
        let Some(inv) = view.invitation(claims.invitation_id)? else {
            refusal.get_or_insert(format!("{how:?} token names no known invitation"));
            continue;
        };
        match ctx
            .tokens
            .verify(&tok, inv.kind.purpose(), &inv.customer, ctx.now)
        {
            Ok(_) => return Ok(Reference::Found(inv, how)),
            Err(TokenError::Expired) => return Ok(Reference::Expired(inv)),
            Err(e) => {
                refusal.get_or_insert(format!("{how:?} token refused: {e}"));
            }
        }
    }
    for id in mail.in_reply_to.iter().chain(mail.references.iter().rev()) {
        if let Some(inv_id) = view.invitation_by_message_id(id)? {
            if let Some(inv) = view.invitation(inv_id)? {
                if inv.expires < ctx.now {
                    return Ok(Reference::Expired(inv));
                }
                return Ok(Reference::Found(inv, MatchedBy::Thread));
            }
        }
    }
    Ok(match refusal {
        Some(r) => Reference::Refused(r),
        None => Reference::Missing,
    })
}

fn customer_mail(
    ctx: &Context,
    view: &dyn StoreView,
    mail: &InboundMail,
    from: &str,
    to_commands: bool,
) -> Result<Decision, WorkflowError> {
    let mut ids = MessageIds {
        key: &mail.key,
        domain: ctx.config.addresses.message_id_domain(),
        n: 0,
    };
    let (inv, how) = match find_invitation(ctx, view, mail)? {
        Reference::Found(inv, how) => (inv, how),
        Reference::Refused(reason) => {
            // A forged or damaged token earns no answer: the From address
            // may be forged too, and answering it would be backscatter.
            return Ok(Decision::ignored(format!(
                "mail from {from}: {reason}; nothing changed, no reply"
            )));
        }
        Reference::Expired(inv) => {
            let rel = view.relationship(&inv.partner, &inv.customer)?;
            return Ok(match rel {
                Some(rel) if inv.customer == from => {
                    let mut d = Decision::ignored(format!(
                        "{from} answered invitation {}, which expired on {}",
                        inv.id,
                        rfc3339(inv.expires)
                    ));
                    d.mails.push(customer_notice(
                        ctx,
                        &rel,
                        mail,
                        &mut ids,
                        TemplateName::NotMatched,
                        json!({"reason": "expired"}),
                    ));
                    d
                }
                _ => Decision::ignored(format!(
                    "mail from {from} refers to expired invitation {} of {}; no reply",
                    inv.id, inv.customer
                )),
            });
        }
        Reference::Missing => {
            let known = view.relationships_with(from)?;
            let Some(first) = known.first() else {
                return Ok(Decision::ignored(if to_commands {
                    format!("command mail from {from}, which is not a configured partner address; no reply (no backscatter)")
                } else {
                    format!("mail from {from}, who is neither a partner nor a known customer; no reply (no backscatter)")
                }));
            };
            // A known customer without a reference: never guess which
            // relationship is meant; ask them to answer the mail itself.
            let partner_names: Vec<String> = known
                .iter()
                .map(|r| {
                    ctx.config
                        .partner(&r.partner)
                        .map(|p| p.name.clone())
                        .unwrap_or_else(|| r.partner.clone())
                })
                .collect();
            let mut d = Decision::ignored(format!(
                "customer {from} wrote without a reference to an invitation; asked to answer the invitation itself"
            ));
            let mut notice = customer_notice(
                ctx,
                first,
                mail,
                &mut ids,
                TemplateName::NotMatched,
                json!({"reason": "no_reference", "partner_name": partner_names.join(", ")}),
            );
            // The notice must not thread to any one invitation, or a reply
            // to it would pick that partner: exactly the guess avoided here.
            notice.invitation = None;
            d.mails.push(notice);
            return Ok(d);
        }
    };
    if inv.customer != from {
        return Ok(Decision::ignored(format!(
            "reply to the invitation of {} came from {from} (matched by {how:?}); only the invited address may answer; nothing changed, no reply",
            inv.customer
        )));
    }
    let Some(partner) = ctx.config.partner(&inv.partner) else {
        return Ok(Decision::ignored(format!(
            "invitation {} belongs to partner `{}`, which is no longer configured",
            inv.id, inv.partner
        )));
    };
    let Some(mut rel) = view.relationship(&inv.partner, &inv.customer)? else {
        return Ok(Decision::ignored(format!(
            "invitation {} has no relationship record",
            inv.id
        )));
    };
    let mut decision = Decision {
        class: MailClass::Customer {
            partner: partner.id.clone(),
            customer: from.to_string(),
        },
        summary: String::new(),
        relationships: vec![],
        invitations: vec![],
        mails: vec![],
    };
    if rel.invitation_id != Some(inv.id) {
        decision.summary = format!("{from} answered a superseded invitation {}", inv.id);
        decision.mails.push(customer_notice(
            ctx,
            &rel,
            mail,
            &mut ids,
            TemplateName::NotMatched,
            json!({"reason": "superseded"}),
        ));
        return Ok(decision);
    }
    let new_text = crate::reply::new_text(&mail.text);
    let intent = intent::detect(&new_text);
    let event = match intent {
        Intent::Accept => RelationshipEvent::Accepted,
        Intent::Decline => RelationshipEvent::Declined,
        Intent::PermissionsRemoved => RelationshipEvent::PermissionsRemoved,
        Intent::Unclear | Intent::Other => {
            decision.summary = format!(
                "{from} answered invitation {} with no clear accept or decline ({intent:?})",
                inv.id
            );
            decision.mails.push(customer_notice(
                ctx,
                &rel,
                mail,
                &mut ids,
                TemplateName::Clarify,
                json!({"partner_name": partner.name}),
            ));
            return Ok(decision);
        }
    };
    let before = rel.state;
    match rel.apply(event, ctx.now, from, mail.message_id.as_deref()) {
        Ok(after) => {
            decision.summary = format!(
                "{from} {intent:?} (matched by {how:?}): {} -> {after}",
                before
            );
            let (customer_tpl, partner_tpl) = match after {
                RelationshipState::Active => (
                    TemplateName::AcceptedCustomer,
                    TemplateName::AcceptedPartner,
                ),
                RelationshipState::Declined => (
                    TemplateName::DeclinedCustomer,
                    TemplateName::DeclinedPartner,
                ),
                _ => (TemplateName::Clarify, TemplateName::Clarify),
            };
            if customer_tpl != TemplateName::Clarify {
                let vars = json!({
                    "partner_name": partner.name,
                    "customer_email": rel.customer,
                    "customer_name": rel.customer_name,
                    "state": after.as_str(),
                    "at": rfc3339(ctx.now),
                });
                decision.mails.push(customer_notice(
                    ctx,
                    &rel,
                    mail,
                    &mut ids,
                    customer_tpl,
                    vars.clone(),
                ));
                decision.mails.push(MailPlan {
                    template: partner_tpl,
                    locale: partner.locale.clone(),
                    to: vec![partner.emails[0].clone()],
                    from: Sender::Commands,
                    reply_to: None,
                    message_id: ids.next(),
                    in_reply_to: None,
                    references: vec![],
                    vars,
                    invitation: None,
                });
            }
            decision.relationships.push(rel);
        }
        Err(TransitionError::Already(state)) => {
            decision.summary = format!("{from} {intent:?} again; relationship already {state}");
            decision.mails.push(customer_notice(
                ctx,
                &rel,
                mail,
                &mut ids,
                TemplateName::AlreadyAnswered,
                json!({"partner_name": partner.name, "state": state.as_str()}),
            ));
        }
        Err(e) => {
            decision.summary = format!("{from} {intent:?} refused: {e}");
            decision.mails.push(customer_notice(
                ctx,
                &rel,
                mail,
                &mut ids,
                TemplateName::AlreadyAnswered,
                json!({"partner_name": partner.name, "state": rel.state.as_str()}),
            ));
        }
    }
    Ok(decision)
}

/// A mail to the customer, threaded under the mail they sent.
fn customer_notice(
    ctx: &Context,
    rel: &Relationship,
    mail: &InboundMail,
    ids: &mut MessageIds,
    template: TemplateName,
    mut vars: serde_json::Value,
) -> MailPlan {
    let partner_name = ctx
        .config
        .partner(&rel.partner)
        .map(|p| p.name.clone())
        .unwrap_or_else(|| rel.partner.clone());
    if let Some(obj) = vars.as_object_mut() {
        obj.entry("partner_name").or_insert(json!(partner_name));
        obj.entry("original_subject")
            .or_insert(json!(strip_reply_prefixes(&mail.subject)));
        obj.entry("customer_email").or_insert(json!(rel.customer));
    }
    let mut references = mail.references.clone();
    references.extend(mail.message_id.clone());
    MailPlan {
        template,
        locale: rel.locale.clone(),
        to: vec![rel.customer.clone()],
        from: Sender::Invitations,
        reply_to: None,
        message_id: ids.next(),
        in_reply_to: mail.message_id.clone(),
        references,
        vars,
        invitation: rel.invitation_id,
    }
}
