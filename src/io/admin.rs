//! The admin socket: how the CLI talks to a running daemon.
//!
//! sled allows one process per database, so while the daemon runs the CLI
//! cannot open the store. The daemon listens on a Unix socket (mode 0600,
//! beside the store) for one JSON request per line and answers with one JSON
//! line. The protocol is deliberately tiny and local-only.

use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// Errors on the admin socket.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Socket IO failed.
    #[error("admin socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon answered with an error or nonsense.
    #[error("admin request failed: {0}")]
    Remote(String),
}

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The relationships of one customer (with any partner). `Counts` and
    /// `List` answer for everyone.
    Status {
        /// Customer address.
        customer: String,
    },
    /// How many relationships each partner has in each state. Kept as
    /// counters by the store, so it costs the same at any size.
    Counts,
    /// Relationships, optionally of one partner and in one state.
    List {
        /// Partner id.
        partner: Option<String>,
        /// State name.
        state: Option<String>,
    },
    /// Tickets, optionally of one partner; closed ones only with `all`.
    Tickets {
        /// Partner id.
        partner: Option<String>,
        /// Include closed tickets.
        all: bool,
    },
    /// One ticket with its whole thread.
    Ticket {
        /// Ticket number, `T-000123` or `123`.
        id: String,
    },
    /// Messages set aside, with the reason.
    Quarantine,
    /// What a quarantined message says (From, Subject, its text, its
    /// attachments), so the operator sees what a release would vouch for.
    QuarantineShow {
        /// The quarantine record's key (see `quarantine list`).
        key: String,
    },
    /// Counts: processed messages by class, outbox pending and sent.
    Stats,
    /// Invite customers as a partner (one batch of `liaison import`);
    /// answers one result per row, in order.
    Import {
        /// Partner id.
        partner: String,
        /// The rows' cells, checked by the daemon as mailed `invite`
        /// arguments are (at most 50).
        rows: Vec<liaison_core::command::import::InviteRow>,
        /// Send each invitation to the partner instead, to forward.
        draft: bool,
        /// Batch key: the same batch is never run twice.
        key: String,
    },
    /// Every record of the store, for a backup.
    Export,
    /// Decide a quarantined message again, trusting its sender.
    Release {
        /// The quarantine record's key (see `quarantine list`).
        key: String,
    },
    /// Mails a cap held back, oldest first.
    Held,
    /// What a held mail says (its recipients, subject, text and
    /// attachments), so the operator sees what a release would send under
    /// Liaison's name.
    HeldShow {
        /// Its number (see `held list`).
        id: u64,
    },
    /// Send a held mail after all.
    HeldRelease {
        /// Its number (see `held list`).
        id: u64,
    },
    /// Every `[[oauth2]]` client's token state (`liaison oauth status`);
    /// only the running daemon holds tokens.
    OAuthStatus,
    /// The relationships of one customer with their full history.
    History {
        /// Customer address.
        customer: String,
    },
    /// A message handed over by the MTA (`liaison deliver`). The request
    /// line is followed by exactly `bytes` bytes of the raw message (not
    /// JSON: a mail may be 10 MiB, and need not be UTF-8).
    Deliver {
        /// The configured inbox it counts as.
        inbox: String,
        /// Bytes of the message that follow the line (0 when it is over
        /// the size limit and was not kept).
        bytes: u64,
        /// The message's whole size.
        size: u64,
        /// SHA-256 of the whole message, hex.
        digest: String,
    },
}

/// One ticket as the CLI lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRow {
    /// `T-000123`.
    pub id: String,
    /// Partner id.
    pub partner: String,
    /// Customer address.
    pub customer: String,
    /// State name.
    pub state: String,
    /// Subject.
    pub subject: String,
    /// RFC 3339 time it was opened.
    pub opened: String,
}

/// How many relationships a partner has in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRow {
    /// Partner id.
    pub partner: String,
    /// State name.
    pub state: String,
    /// How many.
    pub count: u64,
}

/// One relationship as the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    /// Partner id.
    pub partner: String,
    /// Customer address.
    pub customer: String,
    /// State name.
    pub state: String,
    /// RFC 3339 time of the last change.
    pub since: String,
    /// The GDAP relationship's id in Microsoft Graph, when Liaison follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gdap_id: Option<String>,
    /// Its end date as Graph gives it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gdap_ends: Option<String>,
    /// Whether Microsoft extends it at its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_extend: Option<bool>,
}

impl StatusRow {
    /// The row for one relationship.
    pub fn of(r: &liaison_core::model::relationship::RelationshipSummary) -> Self {
        StatusRow {
            partner: r.partner.clone(),
            customer: r.customer.clone(),
            state: r.state.as_str().to_string(),
            since: liaison_core::decide::rfc3339(r.since),
            gdap_id: r.gdap.as_ref().and_then(|g| g.id.clone()),
            gdap_ends: r
                .gdap
                .as_ref()
                .and_then(|g| g.ends_at)
                .map(liaison_core::decide::rfc3339),
            auto_extend: r
                .gdap
                .as_ref()
                .filter(|g| g.id.is_some())
                .map(|g| g.auto_extend),
        }
    }
}

/// Text that came from mail (subjects, Message-IDs, ticket text, reasons
/// quoting an address) as the CLI prints it to an operator's terminal:
/// every control character (C0, DEL, C1: ESC starts the sequences that move
/// the cursor, rewrite lines or set the window title) and every format
/// character (bidi overrides that reverse what follows) is shown as a
/// visible `\u{…}` escape. An outsider writes these fields, and must not be
/// able to change what `held list` or `quarantine list` appears to say
/// before the operator releases something. `--json` output is for
/// programs and stays as it is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || liaison_core::command::is_format_character(c);
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Most characters of a mail's text that `held show` and `quarantine show`
/// answer with.
pub const MAX_SHOWN_TEXT_CHARS: usize = 64 * 1024;

/// What a mail says, as `held show` and `quarantine show` answer: its
/// author's headers, its text (at most [`MAX_SHOWN_TEXT_CHARS`]) and its
/// attachments' names, types and sizes.
fn mail_content(raw: &[u8]) -> serde_json::Value {
    match liaison_core::mail::inbound::parse(raw, usize::MAX) {
        Ok(m) => {
            let total = m.text.chars().count();
            let mut text: String = m.text.chars().take(MAX_SHOWN_TEXT_CHARS).collect();
            if total > MAX_SHOWN_TEXT_CHARS {
                text.push_str(&format!(
                    "\n[… {} more characters]",
                    total - MAX_SHOWN_TEXT_CHARS
                ));
            }
            serde_json::json!({
                "from": m.from,
                "from_name": m.from_name,
                "other_from": m.other_from,
                "recipients": m.recipients,
                "mail_subject": m.subject,
                "message_id": m.message_id,
                "authentication_results": m.authentication_results,
                "text": text,
                "attachments": m.attachments.iter().map(|a| serde_json::json!({
                    "name": a.name,
                    "content_type": a.content_type,
                    "bytes": a.data.len(),
                })).collect::<Vec<_>>(),
            })
        }
        Err(e) => serde_json::json!({ "unreadable": e.to_string() }),
    }
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

/// Answers a request from the store (used by the daemon, and by the CLI
/// directly when no daemon runs).
pub fn answer(store: &dyn Store, req: &Request) -> Result<serde_json::Value, String> {
    match req {
        Request::Status { customer } => {
            let c = liaison_core::mail::address::normalize(customer)
                .ok_or_else(|| format!("`{customer}` is not an email address"))?;
            let rels = store.relationships_with(&c).map_err(|e| e.to_string())?;
            let rows: Vec<StatusRow> = rels
                .iter()
                .map(|r| {
                    StatusRow::of(&liaison_core::model::relationship::RelationshipSummary::from(r))
                })
                .collect();
            serde_json::to_value(rows).map_err(|e| e.to_string())
        }
        Request::Counts => {
            let rows: Vec<CountRow> = store
                .relationship_counts()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(partner, state, count)| CountRow {
                    partner,
                    state: state.as_str().to_string(),
                    count,
                })
                .collect();
            serde_json::to_value(rows).map_err(|e| e.to_string())
        }
        Request::List { partner, state } => {
            let state = match state {
                Some(s) => Some(
                    liaison_core::model::relationship::RelationshipState::parse(s)
                        .ok_or_else(|| format!("`{s}` is not a relationship state"))?,
                ),
                None => None,
            };
            let rels = match partner {
                Some(p) => store.relationship_summaries_of(p),
                None => store.all_relationship_summaries(),
            }
            .map_err(|e| e.to_string())?;
            let rows: Vec<StatusRow> = rels
                .iter()
                .filter(|r| state.is_none_or(|s| r.state == s))
                .map(StatusRow::of)
                .collect();
            serde_json::to_value(rows).map_err(|e| e.to_string())
        }
        Request::Tickets { partner, all } => {
            let partners: Vec<String> = match partner {
                Some(p) => vec![p.clone()],
                // Every partner with a relationship, from the counters
                // rather than a scan of every record.
                None => store
                    .relationship_counts()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|(p, _, _)| p)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            };
            let mut rows = Vec::new();
            for p in partners {
                for t in store.tickets_of(&p).map_err(|e| e.to_string())? {
                    if *all || t.state != liaison_core::model::ticket::TicketState::Closed {
                        rows.push(TicketRow {
                            id: liaison_core::model::ticket::format_id(t.id),
                            partner: t.partner,
                            customer: t.customer,
                            state: t.state.as_str().to_string(),
                            subject: t.subject,
                            opened: liaison_core::decide::rfc3339(t.opened),
                        });
                    }
                }
            }
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            serde_json::to_value(rows).map_err(|e| e.to_string())
        }
        Request::Ticket { id } => {
            let n = liaison_core::model::ticket::parse_id(id)
                .or_else(|| id.trim().parse().ok())
                .ok_or_else(|| format!("`{id}` is not a ticket number like T-000123"))?;
            let t = store.ticket(n).map_err(|e| e.to_string())?.ok_or_else(|| {
                format!(
                    "ticket {} not found",
                    liaison_core::model::ticket::format_id(n)
                )
            })?;
            serde_json::to_value(t).map_err(|e| e.to_string())
        }
        Request::Held => {
            let rows: Vec<serde_json::Value> = store
                .held()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|h| {
                    serde_json::json!({
                        "id": h.id,
                        "at": liaison_core::decide::rfc3339(h.at),
                        "reason": h.reason,
                        "partner": h.partner,
                        "to": h.mail.recipients,
                        "subject": h.mail.subject,
                        "kept": h.kept,
                    })
                })
                .collect();
            Ok(serde_json::Value::Array(rows))
        }
        Request::Import { .. }
        | Request::Release { .. }
        | Request::HeldRelease { .. }
        | Request::Deliver { .. } => Err("this request needs the engine".into()),
        Request::OAuthStatus => Err("token states are held by the running daemon only".into()),
        Request::History { customer } => {
            let c = liaison_core::mail::address::normalize(customer)
                .ok_or_else(|| format!("`{customer}` is not an email address"))?;
            let rels = store.relationships_with(&c).map_err(|e| e.to_string())?;
            serde_json::to_value(rels).map_err(|e| e.to_string())
        }
        Request::Export => {
            let rows = store.export().map_err(|e| e.to_string())?;
            serde_json::to_value(rows).map_err(|e| e.to_string())
        }
        Request::Stats => {
            let stats = store.stats().map_err(|e| e.to_string())?;
            serde_json::to_value(stats).map_err(|e| e.to_string())
        }
        Request::HeldShow { id } => {
            let h = store
                .held_mail(*id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no held mail {id}"))?;
            let mut v = serde_json::json!({
                "id": h.id,
                "at": liaison_core::decide::rfc3339(h.at),
                "reason": h.reason,
                "partner": h.partner,
                "to": h.mail.recipients,
                "subject": h.mail.subject,
                "kept": h.kept,
            });
            if h.kept {
                merge(&mut v, mail_content(h.mail.raw.as_bytes()));
            }
            Ok(v)
        }
        Request::QuarantineShow { key } => {
            let p = store
                .processed(key)
                .map_err(|e| e.to_string())?
                .filter(|p| p.class == liaison_core::effects::ProcessedClass::Quarantined)
                .ok_or_else(|| format!("no quarantined message {key}"))?;
            let raw = store.quarantined_raw(key).map_err(|e| e.to_string())?;
            let mut v = serde_json::json!({
                "key": p.key,
                "at": liaison_core::decide::rfc3339(p.at),
                "reason": p.summary,
                "kept": raw.is_some(),
            });
            if let Some(raw) = raw {
                merge(&mut v, mail_content(&raw));
            }
            Ok(v)
        }
        Request::Quarantine => {
            let rows: Vec<serde_json::Value> = store
                .quarantined()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|p| {
                    serde_json::json!({
                        "key": p.key,
                        "at": liaison_core::decide::rfc3339(p.at),
                        "reason": p.summary,
                    })
                })
                .collect();
            Ok(serde_json::Value::Array(rows))
        }
    }
}

/// The longest request line the daemon reads, newline excluded. The
/// largest legitimate request is a `liaison import` batch: at most
/// [`liaison_core::command::MAX_COMMANDS`] command lines of at most
/// [`liaison_core::command::MAX_LINE_LEN`] characters (4 bytes each at worst),
/// about 200 KB; 1 MiB leaves room for that and the JSON around it, while a
/// client that never sends a newline can no longer grow the daemon's memory.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Why a request line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestLineError {
    /// Longer than [`MAX_REQUEST_BYTES`] without a newline.
    #[error("bad request: the request line is longer than {MAX_REQUEST_BYTES} bytes; closing the connection")]
    TooLong,
    /// Not UTF-8.
    #[error("bad request: the request line is not UTF-8")]
    NotUtf8,
    /// The connection failed.
    #[error("admin connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one newline-terminated request line of at most
/// [`MAX_REQUEST_BYTES`] bytes; `None` at the end of the stream. A last line
/// without a newline still counts, as with `AsyncBufReadExt::lines`.
async fn read_request_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Result<Option<String>, RequestLineError> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    // One byte more than the limit tells a line of exactly the limit from
    // a longer one.
    let limit = MAX_REQUEST_BYTES as u64 + 1;
    let n = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > MAX_REQUEST_BYTES {
        return Err(RequestLineError::TooLong);
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| RequestLineError::NotUtf8)
}

/// Serves the socket until `shutdown` turns true.
pub async fn serve(
    path: PathBuf,
    engine: Arc<crate::engine::Engine>,
    durable: watch::Sender<u64>,
    oauth: crate::oauth::OAuthClients,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AdminError> {
    let io = |source| AdminError::Io {
        path: path.clone(),
        source,
    };
    // A socket file left by a daemon that was killed would make bind fail.
    if path.exists() {
        std::fs::remove_file(&path).map_err(io)?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(io)?;
    let owner = {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        std::fs::metadata(&path).map_err(io)?.uid()
    };
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // The file mode keeps other users out, but only from the
                // moment it is set, and only while nobody loosens it: the
                // kernel's word on who connected is checked as well. The
                // socket's owner (the daemon's user) and root may talk to it.
                match stream.peer_cred() {
                    Ok(peer) if peer.uid() == owner || peer.uid() == 0 => {}
                    peer => {
                        tracing::warn!(path = %path.display(), peer_uid = ?peer.map(|p| p.uid()).ok(), "admin connection from another user refused");
                        continue;
                    }
                }
                connections.spawn(connection(
                    stream,
                    engine.clone(),
                    durable.clone(),
                    oauth.clone(),
                    shutdown.clone(),
                ));
            }
            // Reap finished connections as they go, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    // Every connection is told (it watches the same shutdown) and finishes
    // the request it is answering; none outlives the daemon.
    while connections.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Reads the body of a `deliver` request (`bytes` raw bytes after its
/// line, at most the engine's size limit) and has the engine take it, on a
/// blocking thread. An error closes the connection (the body may be
/// unread).
async fn take_delivery<R: tokio::io::AsyncRead + Unpin>(
    engine: &Arc<crate::engine::Engine>,
    durable: &watch::Sender<u64>,
    reader: &mut R,
    inbox: String,
    bytes: u64,
    size: u64,
    digest: String,
) -> Result<serde_json::Value, String> {
    use tokio::io::AsyncReadExt;
    let limit = engine.max_message_bytes() as u64;
    if bytes > limit || bytes > size {
        return Err(format!(
            "bad request: a delivered message carries at most {limit} bytes (its size is {size}), not {bytes}"
        ));
    }
    let mut raw = vec![0u8; bytes as usize];
    reader
        .read_exact(&mut raw)
        .await
        .map_err(|e| format!("bad request: the message ended early: {e}"))?;
    let message = crate::deliver::PipedMessage { raw, size, digest };
    let (engine, durable) = (engine.clone(), durable.clone());
    let taken = tokio::task::spawn_blocking(move || {
        crate::deliver::take(&engine, &durable, &inbox, &message)
    })
    .await
    .map_err(|e| format!("processing failed: {e}"))??;
    serde_json::to_value(taken).map_err(|e| e.to_string())
}

/// One CLI connection: a request per line, an answer per line, until the
/// client closes it or the daemon shuts down (between requests).
async fn connection(
    stream: tokio::net::UnixStream,
    engine: Arc<crate::engine::Engine>,
    durable: watch::Sender<u64>,
    oauth: crate::oauth::OAuthClients,
    mut shutdown: watch::Receiver<bool>,
) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    loop {
        let read = tokio::select! {
            read = read_request_line(&mut reader) => read,
            _ = shutdown.changed() => break,
        };
        let line = match read {
            Ok(Some(line)) => line,
            Ok(None) | Err(RequestLineError::Io(_)) => break,
            Err(e @ RequestLineError::TooLong) => {
                // Answer, then close: the rest of the line is not read, so
                // nothing further on this connection could be framed
                // reliably.
                let mut out = serde_json::json!({"error": e.to_string()}).to_string();
                out.push('\n');
                let _ = w.write_all(out.as_bytes()).await;
                break;
            }
            Err(e @ RequestLineError::NotUtf8) => {
                let mut out = serde_json::json!({"error": e.to_string()}).to_string();
                out.push('\n');
                if w.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let request =
            serde_json::from_str::<Request>(&line).map_err(|e| format!("bad request: {e}"));
        let reply = if let Ok(Request::Deliver {
            inbox,
            bytes,
            size,
            digest,
        }) = request
        {
            // The raw message follows the line on this connection.
            match take_delivery(&engine, &durable, &mut reader, inbox, bytes, size, digest).await {
                Ok(v) => serde_json::json!({"ok": v}),
                Err(e) => {
                    // The body may be unread: nothing more on this
                    // connection can be framed.
                    let mut out = serde_json::json!({"error": e}).to_string();
                    out.push('\n');
                    let _ = w.write_all(out.as_bytes()).await;
                    break;
                }
            }
        } else {
            // Answering reads (and for some requests writes and flushes)
            // the store: synchronous work, kept off the runtime's workers.
            let (engine, durable, oauth) = (engine.clone(), durable.clone(), oauth.clone());
            tokio::task::spawn_blocking(move || handle(&engine, &durable, &oauth, request))
                .await
                .unwrap_or_else(|e| serde_json::json!({"error": format!("internal error: {e}")}))
        };
        let mut out = reply.to_string();
        out.push('\n');
        if w.write_all(out.as_bytes()).await.is_err() {
            break;
        }
    }
}

/// Answers one request (a `deliver` is taken by [`take_delivery`]).
fn handle(
    engine: &crate::engine::Engine,
    durable: &watch::Sender<u64>,
    oauth: &crate::oauth::OAuthClients,
    request: Result<Request, String>,
) -> serde_json::Value {
    let answered = match request {
        Ok(Request::Import {
            partner,
            rows,
            draft,
            key,
        }) => import_batch(engine, durable, &partner, &rows, draft, &key),
        Ok(Request::HeldRelease { id }) => release_held(engine, durable, id),
        Ok(Request::Release { key }) => release(engine, durable, &key),
        Ok(Request::OAuthStatus) => {
            serde_json::to_value(oauth.statuses()).map_err(|e| e.to_string())
        }
        Ok(req) => answer(engine.store().as_ref(), &req),
        Err(e) => Err(e),
    };
    match answered {
        Ok(v) => serde_json::json!({"ok": v}),
        Err(e) => serde_json::json!({"error": e}),
    }
}

/// Sends one request to a running daemon.
pub async fn request(path: &Path, req: &Request) -> Result<serde_json::Value, AdminError> {
    request_with_body(path, req, &[]).await
}

/// Sends one request to a running daemon, followed by `body` (the raw
/// message of a `deliver` request; empty for every other request).
pub async fn request_with_body(
    path: &Path,
    req: &Request,
    body: &[u8],
) -> Result<serde_json::Value, AdminError> {
    let io = |source| AdminError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = tokio::net::UnixStream::connect(path).await.map_err(io)?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req).expect("requests serialise");
    line.push('\n');
    w.write_all(line.as_bytes()).await.map_err(io)?;
    if !body.is_empty() {
        w.write_all(body).await.map_err(io)?;
    }
    let mut lines = BufReader::new(r).lines();
    let reply = lines
        .next_line()
        .await
        .map_err(io)?
        .ok_or_else(|| AdminError::Remote("the daemon closed the connection".into()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&reply).map_err(|e| AdminError::Remote(e.to_string()))?;
    if let Some(e) = v.get("error") {
        return Err(AdminError::Remote(
            e.as_str().unwrap_or("unknown").to_string(),
        ));
    }
    Ok(v["ok"].take())
}

/// Runs one batch of `liaison import` and makes its effects durable, so the
/// outbox may send what it queued. Answers one result per row, in order: a
/// row whose cells are not a valid `invite` is not run and says why.
pub fn import_batch(
    engine: &crate::engine::Engine,
    durable: &watch::Sender<u64>,
    partner: &str,
    rows: &[liaison_core::command::import::InviteRow],
    draft: bool,
    key: &str,
) -> Result<serde_json::Value, String> {
    if rows.len() > liaison_core::command::MAX_COMMANDS {
        return Err(format!(
            "a batch holds at most {} rows, not {}",
            liaison_core::command::MAX_COMMANDS,
            rows.len()
        ));
    }
    let checked: Vec<_> = rows.iter().map(|r| r.command(draft)).collect();
    let commands = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let mut ran = engine
        .run_commands_as_partner(partner, commands, key)
        .map_err(|e| e.to_string())?
        .into_iter();
    crate::engine::flush_and_publish(engine.store().as_ref(), durable)
        .map_err(|e| e.to_string())?;
    let mut results = Vec::with_capacity(rows.len());
    for (row, c) in rows.iter().zip(checked) {
        results.push(match c {
            Ok(_) => ran
                .next()
                .ok_or("the engine answered fewer results than commands")?,
            Err(e) => crate::engine::CommandResult {
                command: format!("invite {}", row.email.chars().take(80).collect::<String>()),
                ok: false,
                result: e.to_string(),
            },
        });
    }
    serde_json::to_value(results).map_err(|e| e.to_string())
}

/// Releases a quarantined message and makes its effects durable.
pub fn release(
    engine: &crate::engine::Engine,
    durable: &watch::Sender<u64>,
    key: &str,
) -> Result<serde_json::Value, String> {
    let outcome = engine.release(key).map_err(|e| e.to_string())?;
    crate::engine::flush_and_publish(engine.store().as_ref(), durable)
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({"key": outcome.key, "class": outcome.class, "summary": outcome.summary}))
}

/// Moves a held mail into the outbox and makes that durable, so it is sent.
pub fn release_held(
    engine: &crate::engine::Engine,
    durable: &watch::Sender<u64>,
    id: u64,
) -> Result<serde_json::Value, String> {
    let (subject, to) = engine.release_held(id).map_err(|e| e.to_string())?;
    crate::engine::flush_and_publish(engine.store().as_ref(), durable)
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({"id": id, "subject": subject, "to": to}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_shows_control_and_format_characters_as_escapes() {
        assert!(matches!(
            printable("Invoice 42 — 송장"),
            std::borrow::Cow::Borrowed("Invoice 42 — 송장")
        ));
        assert_eq!(
            printable("a\x1b[2K\x1b]0;t\x07b\u{202e}c\u{9b}d\re\nf"),
            "a\\u{1b}[2K\\u{1b}]0;t\\u{7}b\\u{202e}c\\u{9b}d\\u{d}e\\u{a}f"
        );
    }

    async fn read_all(input: &[u8]) -> Vec<Result<Option<String>, String>> {
        let mut reader = BufReader::new(input);
        let mut out = Vec::new();
        loop {
            let r = read_request_line(&mut reader).await;
            let stop = !matches!(r, Ok(Some(_)) | Err(RequestLineError::NotUtf8));
            out.push(r.map_err(|e| e.to_string()));
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn request_lines_are_bounded() {
        assert_eq!(
            read_all(b"{\"op\":\"counts\"}\r\nlast").await,
            vec![
                Ok(Some("{\"op\":\"counts\"}".into())),
                Ok(Some("last".into())),
                Ok(None)
            ]
        );
        // Exactly the limit is a request; one byte more is refused.
        let mut max = vec![b'x'; MAX_REQUEST_BYTES];
        max.push(b'\n');
        assert_eq!(
            read_all(&max).await[0]
                .as_ref()
                .map(|l| l.as_ref().map(String::len)),
            Ok(Some(MAX_REQUEST_BYTES))
        );
        let endless = vec![b'x'; 3 * MAX_REQUEST_BYTES];
        let r = read_all(&endless).await;
        assert_eq!(r.len(), 1);
        let e = r[0].clone().unwrap_err();
        assert!(e.contains("longer than 1048576 bytes"), "{e}");
        let r = read_all(b"\xff\xfe\n{}\n").await;
        assert!(r[0].as_ref().unwrap_err().contains("not UTF-8"), "{r:?}");
        assert_eq!(r[1], Ok(Some("{}".into())));
    }
}
