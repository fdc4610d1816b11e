//! **A local emulator of Microsoft Graph's GDAP endpoints** — not Microsoft
//! Graph. Graph cannot be reached from the test machines, so the tests run
//! Liaison's real Graph client against this in-process HTTP/1.1 server on
//! 127.0.0.1, written from Microsoft's published Graph v1.0 API reference
//! ("Partner customer administration"):
//!
//! - *delegatedAdminRelationship resource type* (fields, the status values
//!   `created, approvalPending, approved, activating, active, expiring,
//!   expired, terminationRequested, terminating, terminated`,
//!   `endDateTime = activatedDateTime + duration`, `displayName` unique and
//!   at most 50 characters, `duration` `P1D`..`P2Y`, `autoExtendDuration`
//!   `P0D`/`PT0S`/`P180D`);
//! - *Create delegatedAdminRelationship* (`POST
//!   /tenantRelationships/delegatedAdminRelationships`, 201 with `Location`,
//!   `@odata.type`, `@odata.context`, `@odata.etag`);
//! - *List delegatedAdminRelationships* (`$filter=displayName eq '…'`,
//!   `{"@odata.context", "value": [...]}`);
//! - *Get delegatedAdminRelationship*;
//! - *Create delegatedAdminRelationshipRequest* (`lockForApproval`,
//!   `terminate`; 201 with the request, status `created`);
//! - *Create delegatedAdminAccessAssignment* (201, status `pending`);
//! - *Microsoft Graph error responses and resource types* (the
//!   `{"error": {"code", "message", "innerError"}}` body) and *Microsoft
//!   Graph throttling guidance* (429 with `Retry-After` in seconds).
//!
//! What it models: token checks (401 `InvalidAuthenticationToken` for an
//! expired or unknown token), a missing permission (403
//! `Authorization_RequestDenied`), unknown ids (404), a duplicate
//! `displayName` (409), auto-extend with Global Administrator (400, as
//! Microsoft refuses it), invalid durations and roles (400), throttling
//! (429 with `Retry-After`), and being down (connections dropped). The test
//! drives what the customer and time do in "Microsoft": [`GraphEmulator::approve`],
//! [`GraphEmulator::terminate_by_customer`], [`GraphEmulator::expire`].
//! What it does not model: paging, `$select`, ETags on update, the
//! intermediate long-running operations, MFA, and the customer tenant's
//! side (access assignments are recorded, not enforced).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The Global Administrator role template id.
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";

/// Decides whether a bearer token is valid: `Ok` or the reason.
pub type TokenCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// One relationship as the emulator keeps it.
#[derive(Debug, Clone)]
pub struct Relationship {
    pub id: String,
    pub display_name: String,
    pub duration_days: u32,
    pub auto_extend: String,
    pub roles: Vec<String>,
    pub status: String,
    pub created: u64,
    pub activated: Option<u64>,
    pub end: Option<u64>,
    pub assignments: Vec<Assignment>,
    pub requests: Vec<String>,
}

/// An access assignment as recorded.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub id: String,
    pub group_id: String,
    pub roles: Vec<String>,
}

struct State {
    relationships: BTreeMap<String, Relationship>,
    token_check: TokenCheck,
    down: bool,
    forbidden: bool,
    throttle_next: u32,
    retry_after_secs: u64,
    next: u64,
    log: Vec<String>,
    partner_tenant: String,
    seen_tokens: std::collections::HashSet<String>,
    expired_tokens: std::collections::HashSet<String>,
}

/// The running emulator.
#[derive(Clone)]
pub struct GraphEmulator {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 with seven fractional digits, as Graph writes it.
pub fn graph_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.0000000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl GraphEmulator {
    /// Starts the emulator on 127.0.0.1 (a free port), accepting tokens that
    /// `token_check` accepts.
    pub async fn start(token_check: TokenCheck) -> GraphEmulator {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            relationships: BTreeMap::new(),
            token_check,
            down: false,
            forbidden: false,
            throttle_next: 0,
            retry_after_secs: 1,
            next: 1,
            log: vec![],
            seen_tokens: Default::default(),
            expired_tokens: Default::default(),
            partner_tenant: "7e1a0b4c-1d2e-4f50-8a6b-9c0d1e2f3a4b".into(),
        }));
        let emu = GraphEmulator { addr, state };
        let serving = emu.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let emu = serving.clone();
                tokio::spawn(async move { emu.serve(stream).await });
            }
        });
        emu
    }

    /// `http://127.0.0.1:PORT/v1.0`, for `[partner.graph] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1.0", self.addr)
    }

    /// Graph is unreachable (connections are dropped) while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// The app lacks its permission: every call gets 403.
    pub fn set_forbidden(&self, forbidden: bool) {
        self.state.lock().unwrap().forbidden = forbidden;
    }

    /// The next `n` calls get 429 with `Retry-After: secs`.
    pub fn throttle(&self, n: u32, secs: u64) {
        let mut s = self.state.lock().unwrap();
        s.throttle_next = n;
        s.retry_after_secs = secs;
    }

    /// Every token presented so far now counts as expired (what Graph
    /// answers for a token past its lifetime): the next call with one gets
    /// 401 `InvalidAuthenticationToken`.
    pub fn expire_seen_tokens(&self) {
        let mut s = self.state.lock().unwrap();
        let seen: Vec<String> = s.seen_tokens.drain().collect();
        s.expired_tokens.extend(seen);
    }

    /// How many calls were refused with 401.
    pub fn unauthorized(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.starts_with("401 "))
            .count()
    }

    /// Every request seen, as `METHOD path`.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// The relationships, by id.
    pub fn relationships(&self) -> Vec<Relationship> {
        self.state
            .lock()
            .unwrap()
            .relationships
            .values()
            .cloned()
            .collect()
    }

    /// One relationship.
    pub fn relationship(&self, id: &str) -> Option<Relationship> {
        self.state.lock().unwrap().relationships.get(id).cloned()
    }

    /// The customer's Global Administrator approves in the admin center:
    /// approvalPending → active (Microsoft passes through approved and
    /// activating; the tests set those with [`Self::set_status`]).
    pub fn approve(&self, id: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        let Some(r) = s.relationships.get_mut(id) else {
            return false;
        };
        if r.status != "approvalPending" && r.status != "approved" && r.status != "activating" {
            return false;
        }
        let at = now();
        r.status = "active".into();
        r.activated = Some(at);
        r.end = Some(at + u64::from(r.duration_days) * 86_400);
        true
    }

    /// The customer removes the partner's access in the admin center.
    pub fn terminate_by_customer(&self, id: &str) -> bool {
        self.set_status(id, "terminated")
    }

    /// Time passes beyond `endDateTime` without extension.
    pub fn expire(&self, id: &str) -> bool {
        self.set_status(id, "expired")
    }

    /// Sets a status as it is.
    pub fn set_status(&self, id: &str, status: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        match s.relationships.get_mut(id) {
            Some(r) => {
                r.status = status.into();
                if matches!(status, "terminated" | "expired") && r.end.is_none() {
                    r.end = Some(now());
                }
                true
            }
            None => false,
        }
    }

    async fn serve(&self, mut stream: TcpStream) {
        if self.state.lock().unwrap().down {
            // Being down: the connection closes before any answer.
            drop(stream);
            return;
        }
        let Some((method, target, headers, body)) = read_request(&mut stream).await else {
            return;
        };
        let (status, extra, body) = self.route(&method, &target, &headers, &body);
        let reason = match status {
            200 => "OK",
            201 => "Created",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            429 => "Too Many Requests",
            _ => "Error",
        };
        let text = body.to_string();
        let mut head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8\r\n\
             request-id: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.next_id(),
            text.len()
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(text.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn next_id(&self) -> String {
        let mut s = self.state.lock().unwrap();
        s.next += 1;
        format!("{:08x}-0000-4000-8000-{:012x}", s.next, s.next)
    }

    fn route(
        &self,
        method: &str,
        target: &str,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Value) {
        self.state
            .lock()
            .unwrap()
            .log
            .push(format!("{method} {target}"));
        // Throttling comes before authentication, as at Graph's gateway.
        {
            let mut s = self.state.lock().unwrap();
            if s.throttle_next > 0 {
                s.throttle_next -= 1;
                let secs = s.retry_after_secs;
                drop(s);
                return (
                    429,
                    vec![("Retry-After".into(), secs.to_string())],
                    self.error("TooManyRequests", "Too many requests. Please retry after the time given in the Retry-After header."),
                );
            }
        }
        let token = headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string();
        let check = self.state.lock().unwrap().token_check.clone();
        if token.is_empty() {
            return (
                401,
                vec![],
                self.error("InvalidAuthenticationToken", "Access token is empty."),
            );
        }
        let expired = {
            let mut s = self.state.lock().unwrap();
            let expired = s.expired_tokens.contains(&token);
            if !expired {
                s.seen_tokens.insert(token.clone());
            }
            expired
        };
        if expired || check(&token).is_err() {
            self.state
                .lock()
                .unwrap()
                .log
                .push(format!("401 {method} {target}"));
            return (
                401,
                vec![(
                    "WWW-Authenticate".into(),
                    "Bearer realm=\"\", error=\"invalid_token\"".into(),
                )],
                self.error(
                    "InvalidAuthenticationToken",
                    "Access token has expired or is not yet valid.",
                ),
            );
        }
        if self.state.lock().unwrap().forbidden {
            return (
                403,
                vec![],
                self.error(
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                ),
            );
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let Some(rest) = path.strip_prefix("/v1.0/tenantRelationships/delegatedAdminRelationships")
        else {
            return (
                404,
                vec![],
                self.error("UnknownError", "Resource not found for the segment."),
            );
        };
        let parts: Vec<&str> = rest
            .trim_start_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        let json: Option<Value> = if body.is_empty() {
            None
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => Some(v),
                Err(_) => {
                    return (
                        400,
                        vec![],
                        self.error("BadRequest", "Unable to read JSON request payload."),
                    )
                }
            }
        };
        match (method, parts.as_slice()) {
            ("POST", []) => self.create(json.unwrap_or(Value::Null)),
            ("GET", []) => self.list(query),
            ("GET", [id]) => match self.relationship(id) {
                Some(r) => (200, vec![], self.render(&r)),
                None => self.not_found(id),
            },
            ("POST", [id, "requests"]) => self.request(id, json.unwrap_or(Value::Null)),
            ("POST", [id, "accessAssignments"]) => self.assign(id, json.unwrap_or(Value::Null)),
            _ => (
                405,
                vec![],
                self.error(
                    "BadRequest",
                    "The HTTP method is not allowed on this resource.",
                ),
            ),
        }
    }

    fn error(&self, code: &str, message: &str) -> Value {
        json!({"error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": graph_time(now()).split('.').next().unwrap_or_default(),
                "request-id": self.next_id(),
                "client-request-id": self.next_id(),
            }
        }})
    }

    fn not_found(&self, id: &str) -> (u16, Vec<(String, String)>, Value) {
        (
            404,
            vec![],
            self.error(
                "NotFound",
                &format!("The delegated admin relationship with id '{id}' was not found."),
            ),
        )
    }

    fn bad(&self, message: &str) -> (u16, Vec<(String, String)>, Value) {
        (400, vec![], self.error("BadRequest", message))
    }

    fn render(&self, r: &Relationship) -> Value {
        json!({
            "@odata.type": "#microsoft.graph.delegatedAdminRelationship",
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#tenantRelationships/delegatedAdminRelationships/$entity",
            "@odata.etag": format!("W/\"{}-{}\"", r.id, r.status),
            "id": r.id,
            "displayName": r.display_name,
            "duration": format!("P{}D", r.duration_days),
            "customer": null,
            "accessDetails": {"unifiedRoles": r.roles.iter().map(|id| json!({"roleDefinitionId": id})).collect::<Vec<_>>()},
            "status": r.status,
            "autoExtendDuration": r.auto_extend,
            "createdDateTime": graph_time(r.created),
            "lastModifiedDateTime": graph_time(now()),
            "activatedDateTime": r.activated.map(graph_time),
            "endDateTime": r.end.map(graph_time),
        })
    }

    fn create(&self, v: Value) -> (u16, Vec<(String, String)>, Value) {
        let Some(name) = v["displayName"].as_str().filter(|n| !n.trim().is_empty()) else {
            return self.bad("The displayName field is required.");
        };
        if name.chars().count() > 50 {
            return self.bad("The displayName must be at most 50 characters.");
        }
        let Some(days) = v["duration"].as_str().and_then(iso_days) else {
            return self.bad("The duration must be an ISO 8601 duration.");
        };
        if !(1..=730).contains(&days) {
            return self.bad("The duration must be between P1D and P2Y.");
        }
        let roles: Vec<String> = v["accessDetails"]["unifiedRoles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["roleDefinitionId"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if roles.is_empty() {
            return self.bad("At least one role must be specified in accessDetails.unifiedRoles.");
        }
        if roles.iter().any(|r| r.len() != 36) {
            return self.bad("Invalid roleDefinitionId.");
        }
        let auto_extend = v["autoExtendDuration"]
            .as_str()
            .unwrap_or("PT0S")
            .to_string();
        if !matches!(auto_extend.as_str(), "P0D" | "PT0S" | "P180D") {
            return self.bad("The autoExtendDuration must be PT0S, P0D or P180D.");
        }
        if auto_extend == "P180D" && roles.iter().any(|r| r == GLOBAL_ADMINISTRATOR) {
            return self.bad("Auto-extend is not supported for relationships that include the Global Administrator role.");
        }
        let mut s = self.state.lock().unwrap();
        if s.relationships.values().any(|r| r.display_name == name) {
            drop(s);
            return (
                409,
                vec![],
                self.error(
                    "Conflict",
                    "A delegated admin relationship with the same displayName already exists.",
                ),
            );
        }
        s.next += 1;
        let id = format!(
            "{}-{:08x}-0000-4000-8000-{:012x}",
            s.partner_tenant, s.next, s.next
        );
        let r = Relationship {
            id: id.clone(),
            display_name: name.to_string(),
            duration_days: days,
            auto_extend,
            roles,
            status: "created".into(),
            created: now(),
            activated: None,
            end: None,
            assignments: vec![],
            requests: vec![],
        };
        s.relationships.insert(id.clone(), r.clone());
        drop(s);
        let mut body = self.render(&r);
        body["@odata.context"] = json!("https://graph.microsoft.com/v1.0/tenantRelationships/$metadata#delegatedAdminRelationships");
        (
            201,
            vec![(
                "Location".into(),
                format!("https://graph.microsoft.com/v1.0/tenantRelationships/delegatedAdminRelationships/{id}"),
            )],
            body,
        )
    }

    fn list(&self, query: &str) -> (u16, Vec<(String, String)>, Value) {
        let query = percent_decode(query);
        let mut wanted: Option<String> = None;
        for pair in query.split('&') {
            if let Some(f) = pair.strip_prefix("$filter=") {
                let Some(lit) = f
                    .strip_prefix("displayName eq '")
                    .and_then(|l| l.strip_suffix('\''))
                else {
                    return self.bad("Invalid filter clause: only displayName eq '…' is supported by this emulator.");
                };
                wanted = Some(lit.replace("''", "'"));
            }
        }
        let list: Vec<Value> = self
            .relationships()
            .iter()
            .filter(|r| wanted.as_deref().is_none_or(|w| w == r.display_name))
            .map(|r| {
                let mut v = self.render(r);
                if let Some(o) = v.as_object_mut() {
                    o.remove("@odata.context");
                }
                v
            })
            .collect();
        (
            200,
            vec![],
            json!({
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#tenantRelationships/delegatedAdminRelationships",
                "value": list,
            }),
        )
    }

    fn request(&self, id: &str, v: Value) -> (u16, Vec<(String, String)>, Value) {
        let action = v["action"].as_str().unwrap_or_default().to_string();
        let mut s = self.state.lock().unwrap();
        let Some(r) = s.relationships.get_mut(id) else {
            drop(s);
            return self.not_found(id);
        };
        match action.as_str() {
            "lockForApproval" if r.status == "created" => r.status = "approvalPending".into(),
            "lockForApproval" => {
                drop(s);
                return self.bad(
                    "The relationship can only be locked for approval in the created status.",
                );
            }
            "terminate" if r.status == "active" => r.status = "terminationRequested".into(),
            "terminate" => {
                drop(s);
                return self.bad("Only an active relationship can be terminated.");
            }
            _ => {
                drop(s);
                return self.bad("The action must be lockForApproval or terminate.");
            }
        }
        r.requests.push(action.clone());
        drop(s);
        let req_id = self.next_id();
        (
            201,
            vec![(
                "Location".into(),
                format!("https://graph.microsoft.com/v1.0/tenantRelationships/delegatedAdminRelationships/{id}/requests/{req_id}"),
            )],
            json!({
                "@odata.type": "#microsoft.graph.delegatedAdminRelationshipRequest",
                "@odata.context": "https://graph.microsoft.com/v1.0/tenantRelationships/$metadata#requests",
                "id": req_id,
                "action": action,
                "status": "created",
                "createdDateTime": graph_time(now()),
                "lastModifiedDateTime": graph_time(now()),
            }),
        )
    }

    fn assign(&self, id: &str, v: Value) -> (u16, Vec<(String, String)>, Value) {
        let group = v["accessContainer"]["accessContainerId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = v["accessContainer"]["accessContainerType"]
            .as_str()
            .unwrap_or_default();
        let roles: Vec<String> = v["accessDetails"]["unifiedRoles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["roleDefinitionId"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let aid = self.next_id();
        let mut s = self.state.lock().unwrap();
        let Some(r) = s.relationships.get_mut(id) else {
            drop(s);
            return self.not_found(id);
        };
        if r.status != "active" {
            drop(s);
            return self.bad("Access assignments can only be created for an active relationship.");
        }
        if group.is_empty() || kind != "securityGroup" {
            drop(s);
            return self.bad("accessContainer must name a securityGroup.");
        }
        if roles.is_empty() || roles.iter().any(|x| !r.roles.contains(x)) {
            drop(s);
            return self.bad(
                "The roles of an access assignment must be a subset of the relationship's roles.",
            );
        }
        r.assignments.push(Assignment {
            id: aid.clone(),
            group_id: group.clone(),
            roles: roles.clone(),
        });
        drop(s);
        (
            201,
            vec![],
            json!({
                "@odata.type": "#microsoft.graph.delegatedAdminAccessAssignment",
                "@odata.context": "https://graph.microsoft.com/v1.0/tenantRelationships/$metadata#accessAssignments",
                "id": aid,
                "status": "pending",
                "createdDateTime": graph_time(now()),
                "lastModifiedDateTime": graph_time(now()),
                "accessContainer": {"accessContainerId": group, "accessContainerType": "securityGroup"},
                "accessDetails": {"unifiedRoles": roles.iter().map(|id| json!({"roleDefinitionId": id})).collect::<Vec<_>>()},
            }),
        )
    }
}

fn iso_days(s: &str) -> Option<u32> {
    let b = s.strip_prefix('P')?;
    let (n, unit) = b.split_at(b.len().checked_sub(1)?);
    let n: u32 = n.parse().ok()?;
    match unit {
        "D" => Some(n),
        "Y" => Some(n * 365),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Request = (String, String, BTreeMap<String, String>, Vec<u8>);

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if raw.len() > 64 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = raw[end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(len);
    Some((method, target, headers, body))
}
