//! The MCP front end: Streamable HTTP (POST, GET SSE, DELETE, Mcp-Session-Id,
//! MCP-Protocol-Version) and WebSocket upgrades. Every request takes one path: the HTTP surface
//! ([`admission::route`]), authentication from the headers alone (the body is never read for a
//! caller that fails it), the role check, the rate limit, the session check, the body (bounded in
//! size, time and total memory), the messages ([`admission::admit`]), and only then the server:
//! an HTTP upstream (the checked bytes, answers filtered for restricted callers) or the stdio
//! bridge. A refusal anywhere is answered by [`Gateway::refuse`], the one place that turns a
//! [`Refusal`] into a response, an audit record and a metric.

use crate::admission::{self, media_type, Admitted, Refusal, Route, Surface};
use crate::audit::{Auditor, Decision, Record};
use crate::auth::{Authenticator, Credentials, Identity};
use crate::authz::{Grants, IdMap, ResponseFilter, RoleCheck, TaskBinding, ToolAccess};
use crate::jsonrpc::{self, error_response, Kind};
use crate::metrics::Metrics;
use crate::owners::OwnerTable;
use crate::ratelimit::{retry_after_secs, Limiter};
use crate::sse::{self, Transform};
use crate::stdio::{Bridge, BridgeError, Busy, RouteGuard};
use crate::{Body, BoxError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Mcp-Session-Id.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The header a client resumes an SSE stream with.
const LAST_EVENT_ID: &str = "last-event-id";
/// Largest JSON answer read whole to be inspected for a restricted caller.
const MAX_FILTERED_JSON: usize = 16 * 1024 * 1024;
/// Largest refused body of an admitted caller still read (and dropped) so it can read the 413.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// SSE keep-alive comment interval on bridged GET streams.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Headers passed on to the server; nothing else is (no method overrides, no encodings the
/// gateway could not inspect, no hop-by-hop headers).
const FORWARDED_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "user-agent",
    "traceparent",
    "tracestate",
];
/// Request headers a browser may send cross-origin (CORS preflight).
const CORS_REQUEST_HEADERS: &str =
    "authorization, content-type, accept, mcp-session-id, mcp-protocol-version, last-event-id, x-api-key";
/// The methods of the MCP endpoint.
const ALLOW: &str = "GET, POST, DELETE, OPTIONS";

/// The HTTP (or WebSocket) server behind the gateway.
pub struct HttpUpstream {
    /// Client for plain HTTP on loopback.
    pub client: Client<HttpConnector, Body>,
    /// `http://host:port`.
    pub origin: String,
    /// The upstream's MCP path.
    pub path: String,
    /// `ws://host:port/path` when the transport is WebSocket.
    pub ws_url: Option<String>,
}

impl HttpUpstream {
    /// From `--upstream`.
    pub fn new(upstream: &str, websocket: bool) -> anyhow::Result<Self> {
        let uri: http::Uri = upstream.parse().map_err(|e| anyhow::anyhow!("--upstream {upstream:?}: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or("http");
        anyhow::ensure!(
            matches!(scheme, "http" | "ws"),
            "--upstream must be http:// (or ws://) on the pod's loopback, got {scheme}"
        );
        let authority = uri.authority().ok_or_else(|| anyhow::anyhow!("--upstream has no host"))?;
        let path = match uri.path() {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            client,
            origin: format!("http://{authority}"),
            ws_url: websocket.then(|| format!("ws://{authority}{path}")),
            path,
        })
    }
}

/// Where requests go.
pub enum Backend {
    /// Streamable HTTP or WebSocket server.
    Http(Arc<HttpUpstream>),
    /// stdio children.
    Stdio(Arc<Bridge>),
}

/// Everything a request needs.
pub struct Gateway {
    /// --name.
    pub name: String,
    /// Clients connect with TLS.
    pub tls: bool,
    /// The HTTP surface.
    pub surface: Surface,
    /// Authentication.
    pub authn: Authenticator,
    /// Roles and tools.
    pub grants: Grants,
    /// Rate limit.
    pub limiter: Option<Limiter>,
    /// Audit.
    pub audit: Auditor,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where requests go.
    pub backend: Backend,
    /// Sessions and their owners (HTTP mode).
    pub sessions: OwnerTable,
    /// Task ids and the callers they were created for, when the policy authenticates.
    pub tasks: Option<TaskTables>,
    /// Requests and streams in flight per caller.
    pub in_flight: Arc<crate::inflight::InFlight>,
    /// --max-body-bytes.
    pub max_body: usize,
    /// --max-batch.
    pub max_batch: usize,
    /// --body-timeout.
    pub body_timeout: Duration,
    /// Request-body bytes that may be held at once (permits are KiB).
    pub body_budget: Arc<Semaphore>,
    /// Each caller's share of `body_budget` (KiB; a body being read counts at least
    /// [`MIN_BODY_SHARE_KIB`], a body read what it holds until its request is forwarded) when the
    /// policy authenticates: one caller cannot hold it all.
    pub body_share: Arc<crate::inflight::InFlight>,
}

/// Tasks of authenticated callers the gateway keeps track of (ids and owners: a few MiB at most).
pub const MAX_TASKS: usize = 65_536;
/// Tasks of one authenticated caller kept track of (beyond it its least recently used goes).
pub const MAX_TASKS_PER_CALLER: usize = 4_096;
/// Tasks of anonymous callers kept track of, in a table of their own: anonymous callers, who can
/// come with a new session at will, never evict an authenticated caller's task.
pub const MAX_ANONYMOUS_TASKS: usize = 8_192;
/// Tasks of one anonymous session or WebSocket connection kept track of.
pub const MAX_ANONYMOUS_TASKS_PER_SCOPE: usize = 256;
/// A task not used for this long is forgotten.
pub const TASK_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Where task owners are kept: authenticated callers' and anonymous callers' tasks apart.
pub struct TaskTables {
    /// Authenticated callers' tasks.
    pub callers: Arc<OwnerTable>,
    /// Anonymous callers' tasks (per session or connection).
    pub anonymous: Arc<OwnerTable>,
    /// `tasks/list` cursors handed out.
    pub cursors: Arc<crate::authz::Cursors>,
}

impl TaskTables {
    /// Empty tables of the default sizes, and a fresh cursor key.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            callers: Arc::new(OwnerTable::new(MAX_TASKS, MAX_TASKS_PER_CALLER, TASK_IDLE)),
            anonymous: Arc::new(OwnerTable::new(MAX_ANONYMOUS_TASKS, MAX_ANONYMOUS_TASKS_PER_SCOPE, TASK_IDLE)),
            cursors: Arc::new(crate::authz::Cursors::generate()?),
        })
    }
}

/// What a request body being read counts against its caller's share at least (KiB): bounds how
/// many bodies one caller may be sending at once, however slowly.
pub const MIN_BODY_SHARE_KIB: usize = 16;

/// Grows `held`, KiB of the gateway's body budget (`--max-buffered-bytes`), to `kib`: false when
/// the budget cannot give that much more now. Request bodies and WebSocket messages are charged
/// through this alike.
pub(crate) fn hold_budget(budget: &Arc<Semaphore>, held: &mut Option<OwnedSemaphorePermit>, kib: usize) -> bool {
    let more = kib.saturating_sub(held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits));
    if more == 0 {
        return true;
    }
    let Ok(more) = u32::try_from(more) else { return false };
    let Ok(permit) = budget.clone().try_acquire_many_owned(more) else { return false };
    match held {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
    true
}

/// A read body's hold on the gateway's body budget and its caller's share: given back when dropped.
pub struct BodyHold {
    _budget: Option<OwnedSemaphorePermit>,
    _share: crate::inflight::Permit,
}

/// The client side of a connection.
pub struct ConnInfo {
    /// Peer address.
    pub remote: SocketAddr,
    /// Client certificate chain (TLS with mtls).
    pub client_cert: Option<Vec<CertificateDer<'static>>>,
    /// Held until the connection sends an authenticated request (bounds unauthenticated
    /// connections).
    pub unauthenticated: std::sync::Mutex<Option<crate::slots::Slot>>,
}

impl ConnInfo {
    /// A connection from `remote`.
    pub fn new(
        remote: SocketAddr,
        client_cert: Option<Vec<CertificateDer<'static>>>,
        slot: Option<crate::slots::Slot>,
    ) -> Self {
        Self { remote, client_cert, unauthenticated: std::sync::Mutex::new(slot) }
    }

    fn authenticated(&self) {
        self.unauthenticated.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Whether the connection has sent an authenticated request (its slot is given back).
    pub fn is_authenticated(&self) -> bool {
        self.unauthenticated.lock().unwrap_or_else(|e| e.into_inner()).is_none()
    }
}

/// A full body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// A JSON response.
pub fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn accepts(headers: &HeaderMap, what: &str) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|t| {
            let t = media_type(t);
            t == what || t == "*/*" || (t == "application/*" && what.starts_with("application/"))
        })
    })
}

/// Messages as the client accepts them: JSON, or SSE when it accepts only that.
fn messages_response(headers: &HeaderMap, body: &Value) -> Response<Body> {
    if accepts(headers, "application/json") || !accepts(headers, "text/event-stream") {
        return json_response(StatusCode::OK, body);
    }
    let mut out = Vec::new();
    push_events(&mut out, body);
    sse_response(full(out))
}

/// SSE events for a message or each message of a batch.
fn push_events(out: &mut Vec<u8>, body: &Value) {
    match body {
        Value::Array(items) => items.iter().for_each(|m| out.extend_from_slice(&sse::event(m))),
        m => out.extend_from_slice(&sse::event(m)),
    }
}

/// Tell the client the session a bridged initialize created.
fn set_session_header(r: &mut Response<Body>, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
}

/// A `text/event-stream` answer.
fn sse_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Audit and metrics of one request.
pub(crate) struct Ctx {
    pub(crate) rec: Record,
    pub(crate) start: Instant,
}

impl Ctx {
    pub(crate) fn finish(&mut self, gw: &Gateway, status: u16, decision: Decision, reason: Option<(&str, String)>) {
        let took = self.start.elapsed();
        self.rec.status = status;
        self.rec.decision = Some(decision);
        self.rec.latency_ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        if let Some((label, detail)) = reason {
            if decision == Decision::Deny {
                gw.metrics.deny(label);
            }
            self.rec.reason = Some(detail);
        }
        let method = self.rec.method.clone().unwrap_or_else(|| self.rec.http_method.clone());
        gw.metrics.observe(&method, self.rec.tool.as_deref(), status, decision.as_str(), took);
        gw.audit.record(std::mem::take(&mut self.rec));
    }
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

impl Gateway {
    fn public_base(&self, headers: &HeaderMap, uri: &http::Uri) -> String {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
            .map(str::to_string)
            .or_else(|| uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".to_string());
        format!("{}://{host}", if self.tls { "https" } else { "http" })
    }

    /// RFC 9728 protected resource metadata.
    fn resource_metadata(&self, headers: &HeaderMap, uri: &http::Uri) -> Response<Body> {
        let base = self.public_base(headers, uri);
        let doc = serde_json::json!({
            "resource": format!("{base}{}", self.surface.mcp_path),
            "authorization_servers": self.authn.issuer().into_iter().collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
            "resource_name": self.name,
        });
        let mut r = json_response(StatusCode::OK, &doc);
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
        r
    }

    fn www_authenticate(&self, headers: &HeaderMap, uri: &http::Uri, refusal: &Refusal) -> HeaderValue {
        let base = self.public_base(headers, uri);
        let mut v = format!(r#"Bearer resource_metadata="{base}{}""#, admission::RESOURCE_METADATA);
        match refusal {
            Refusal::Unauthenticated(e) if e.reason != "missing_credentials" => {
                let desc: String = e.detail.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
                v.push_str(&format!(r#", error="invalid_token", error_description="{desc}""#));
            }
            Refusal::InsufficientRole(_) => v.push_str(r#", error="insufficient_scope""#),
            _ => {}
        }
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// The one place a refusal becomes an answer: status, JSON-RPC error (`reply`, or one with a
    /// null id), the headers it calls for, the audit record and the metric.
    pub(crate) fn refuse(
        &self,
        cx: &mut Ctx,
        refusal: Refusal,
        reply: Option<Value>,
        headers: &HeaderMap,
        uri: &http::Uri,
    ) -> Response<Body> {
        let status = refusal.status();
        cx.finish(self, status.as_u16(), Decision::Deny, Some((refusal.reason(), refusal.detail())));
        let mut r = json_response(status, &reply.unwrap_or_else(|| refusal.rpc_error(None)));
        let h = r.headers_mut();
        match &refusal {
            Refusal::Unauthenticated(_) | Refusal::InsufficientRole(_) => {
                h.insert(header::WWW_AUTHENTICATE, self.www_authenticate(headers, uri, &refusal));
            }
            Refusal::RateLimited(wait) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(*wait)));
            }
            Refusal::MethodNotAllowed => {
                h.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            }
            _ => {}
        }
        if refusal.closes_connection() {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }

    /// A stream ended when the caller's credential expires.
    pub(crate) fn until_expiry(&self, body: Body, identity: &Identity) -> Body {
        let (metrics, who) = (self.metrics.clone(), identity.audit_name());
        sse::UntilExpiry::wrap(body, identity.time_left(), move || {
            tracing::info!(identity = %who, "credential expired: stream ended");
            metrics.deny("stream_credential_expired");
        })
    }

    /// The binding of the caller's tasks, when the policy authenticates: an authenticated caller's
    /// tasks are its own wherever it polls them from; anonymous callers (who share one identity)
    /// each own the tasks of their `scope` (the session, or the WebSocket connection).
    /// An anonymous caller without a session (a stateless server) has nothing to tell it from
    /// another: its tasks get an owner nobody, itself included, can name again.
    pub(crate) fn task_binding(&self, identity: &Identity, scope: Option<&str>) -> Option<TaskBinding> {
        let tables = self.tasks.as_ref()?;
        let (table, other, owner) = match (identity.anonymous, scope) {
            (false, _) => (&tables.callers, &tables.anonymous, identity.session_owner()),
            (true, Some(scope)) => (&tables.anonymous, &tables.callers, format!("anonymous:{scope}")),
            (true, None) => (&tables.anonymous, &tables.callers, format!("anonymous:{}", admission::gateway_id())),
        };
        Some(TaskBinding {
            table: table.clone(),
            owner,
            cursors: tables.cursors.clone(),
            other: Some(other.clone()),
            ephemeral: identity.anonymous && scope.is_none(),
        })
    }

    /// The rate limit for `key`.
    pub(crate) fn rate_check(&self, key: &str) -> Result<(), Refusal> {
        self.limiter.as_ref().map_or(Ok(()), |l| l.check(key)).map_err(Refusal::RateLimited)
    }

    /// Authenticate from the headers (never the body), then the role check: the identity the
    /// request is served as, and its tool access.
    pub(crate) async fn identify(
        &self,
        headers: &HeaderMap,
        conn: &ConnInfo,
        cx: &mut Ctx,
    ) -> Result<(Identity, ToolAccess), Refusal> {
        let client_ip = conn.remote.ip().to_string();
        let creds = Credentials::from_headers(headers, conn.client_cert.as_deref());
        let identity = match self.authn.authenticate(creds, &client_ip).await {
            Ok(id) => {
                cx.rec.identity = Some(id.audit_name());
                cx.rec.auth = Some(id.method);
                id
            }
            Err(e) if e.reason == crate::auth::INTROSPECTION_BUSY => {
                tracing::debug!(detail = %e.detail, "introspection busy");
                return Err(Refusal::Overloaded);
            }
            Err(e) => {
                // Failed attempts count against the client address.
                self.rate_check(&format!("ip:{client_ip}"))?;
                tracing::debug!(reason = e.reason, detail = %e.detail, "unauthenticated");
                return Err(Refusal::Unauthenticated(e));
            }
        };
        let identity = match self.grants.role_check(&identity) {
            RoleCheck::Allowed => identity,
            RoleCheck::AsAnonymous => identity.as_anonymous(),
            RoleCheck::Refused => return Err(Refusal::InsufficientRole(identity.roles)),
        };
        cx.rec.identity = Some(identity.audit_name());
        cx.rec.auth = Some(identity.method);
        conn.authenticated();
        let access = self.grants.tool_access(&identity);
        Ok((identity, access))
    }

    /// CORS headers on an answer to a request with an allowed `Origin`.
    fn cors(&self, origin: Option<&HeaderValue>, r: &mut Response<Body>) {
        let Some(origin) = origin else { return };
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("mcp-session-id, www-authenticate"));
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }

    /// The answer to OPTIONS: the gateway's own (allowed origins only reach here).
    fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        if headers.contains_key(header::ORIGIN) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(CORS_REQUEST_HEADERS));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
        r
    }

    /// Read a body: bounded in size, in time, and in what all requests hold together.
    async fn read_body(
        &self,
        mut body: Incoming,
        headers: &HeaderMap,
        owner: &str,
    ) -> Result<(Bytes, BodyHold), Refusal> {
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            // Read and drop a moderately oversized body (bounded, never kept) so that the
            // client, still sending, gets to read the 413 instead of a reset connection.
            if declared.is_some_and(|n| n <= DRAIN_LIMIT) {
                let _ = tokio::time::timeout(self.body_timeout, drain(body)).await;
            }
            return Err(Refusal::BodyTooLarge(self.max_body));
        }
        let budget = self.body_budget.clone();
        let mut share = self.body_share.acquire_n(owner, MIN_BODY_SHARE_KIB).ok_or(Refusal::CallerBusy)?;
        let read = async move {
            let mut buf = BytesMut::new();
            let mut held: Option<OwnedSemaphorePermit> = None;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| Refusal::BodyTimeout)?;
                let Ok(data) = frame.into_data() else { continue };
                if buf.len() + data.len() > self.max_body {
                    return Err(Refusal::BodyTooLarge(self.max_body));
                }
                buf.extend_from_slice(&data);
                // Charged by the bytes held, whatever the framing (one byte per chunk must not
                // cost a KiB each).
                let kib = buf.len().div_ceil(1024);
                if !hold_budget(&budget, &mut held, kib) {
                    return Err(Refusal::Overloaded);
                }
                if !share.grow_to(kib.max(MIN_BODY_SHARE_KIB)) {
                    return Err(Refusal::CallerBusy);
                }
            }
            // Read: from now on the body counts what it holds (the minimum bounded reading).
            share.shrink_to(buf.len().div_ceil(1024));
            Ok((buf.freeze(), BodyHold { _budget: held, _share: share }))
        };
        tokio::time::timeout(self.body_timeout, read).await.map_err(|_| Refusal::BodyTimeout)?
    }
}

/// Read a body to its end (at most [`DRAIN_LIMIT`] bytes), keeping nothing.
async fn drain(mut body: Incoming) {
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
        if read > DRAIN_LIMIT {
            break;
        }
    }
}

/// Handle one request.
pub async fn handle(gw: Arc<Gateway>, conn: Arc<ConnInfo>, mut req: Request<Incoming>) -> Response<Body> {
    let mut cx = Ctx {
        rec: Record {
            client: conn.remote.to_string(),
            http_method: req.method().to_string(),
            session: req.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string),
            ..Default::default()
        },
        start: Instant::now(),
    };
    // The request target exactly as received: path and query, never decoded or normalised.
    let target = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let route = match admission::route(&gw.surface, req.method(), &target, req.headers()) {
        Ok(r) => r,
        Err(refusal) => return gw.refuse(&mut cx, refusal, None, req.headers(), req.uri()),
    };
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut r = match route {
        Route::ResourceMetadata => return gw.resource_metadata(req.headers(), req.uri()),
        Route::Preflight => gw.preflight(req.headers()),
        Route::WebSocket => {
            cx.rec.http_method = "WS".into();
            cx.rec.method = Some("websocket".into());
            let on_upgrade = hyper::upgrade::on(&mut req);
            let (parts, _) = req.into_parts();
            let (identity, access) = match gw.identify(&parts.headers, &conn, &mut cx).await {
                Ok(x) => x,
                Err(refusal) => return gw.refuse(&mut cx, refusal, None, &parts.headers, &parts.uri),
            };
            if let Err(refusal) = gw.rate_check(&identity.rate_key()) {
                return gw.refuse(&mut cx, refusal, None, &parts.headers, &parts.uri);
            }
            let Some(permit) = gw.in_flight.acquire(&identity.rate_key()) else {
                return gw.refuse(&mut cx, Refusal::CallerBusy, None, &parts.headers, &parts.uri);
            };
            let Backend::Http(up) = &gw.backend else {
                return gw.refuse(&mut cx, Refusal::NotFound, None, &parts.headers, &parts.uri);
            };
            let caller = crate::ws::Caller { identity, access, permit };
            crate::ws::proxy(gw.clone(), up, &parts, on_upgrade, caller, cx.rec).await
        }
        Route::Mcp => serve_mcp(&gw, &conn, &mut cx, req).await,
    };
    gw.cors(origin.as_ref(), &mut r);
    r
}

/// POST, GET or DELETE on the MCP endpoint.
async fn serve_mcp(gw: &Arc<Gateway>, conn: &ConnInfo, cx: &mut Ctx, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let refuse = |cx: &mut Ctx, r: Refusal, reply: Option<Value>| gw.refuse(cx, r, reply, &parts.headers, &parts.uri);
    let (identity, access) = match gw.identify(&parts.headers, conn, cx).await {
        Ok(x) => x,
        Err(refusal) => return refuse(cx, refusal, None),
    };
    if let Err(refusal) = gw.rate_check(&identity.rate_key()) {
        return refuse(cx, refusal, None);
    }
    let session = parts.headers.get(SESSION_HEADER).map(|v| v.to_str().unwrap_or("\u{fffd}").to_string());
    if let (Some(sid), Backend::Http(_)) = (&session, &gw.backend) {
        if let Err(refusal) = gw.sessions.check(sid, &identity.session_owner()) {
            return refuse(cx, refusal, None);
        }
    }
    // A stream resumed without a session could be anyone's (a server's event ids need be neither
    // secret nor scoped to a session): where callers are told apart, resuming needs a session the
    // caller owns.
    if parts.method == Method::GET
        && session.is_none()
        && gw.tasks.is_some()
        && parts.headers.contains_key(LAST_EVENT_ID)
    {
        return refuse(cx, Refusal::NoSession, None);
    }
    // The caller's tasks, bound once for the request and its answer.
    let tasks = gw.task_binding(&identity, session_scope(&parts.headers));
    let mut admitted = None;
    let mut _held = None;
    if parts.method == Method::POST {
        let (bytes, permit) = match gw.read_body(body, &parts.headers, &identity.rate_key()).await {
            Ok(x) => x,
            Err(refusal) => return refuse(cx, refusal, None),
        };
        _held = Some(permit);
        let rewrite_all = matches!(gw.backend, Backend::Stdio(_));
        // An anonymous caller under a policy (authentication optional) may use only some
        // methods; where no authentication is configured everyone is anonymous and unrestricted.
        let anonymous = identity.anonymous && access.is_restricted();
        match admission::admit(bytes, gw.max_batch, &access, anonymous, rewrite_all, tasks.as_ref()) {
            Ok(a) => {
                cx.rec.method = Some(a.parsed.method_label());
                cx.rec.tool = a.parsed.tool_label();
                admitted = Some(a);
            }
            Err(denied) => {
                let denied = *denied;
                cx.rec.method = denied.method;
                cx.rec.tool = denied.tool;
                return refuse(cx, denied.refusal, Some(denied.reply));
            }
        }
    }
    // A GET stream or a POST with requests holds one of the caller's permits until its answer
    // ends. A DELETE, and a POST of only answers and notifications (a client at its limit must
    // still answer an elicitation its open streams wait for), need none.
    let permit = match &admitted {
        Some(a) if a.parsed.requests().next().is_none() => None,
        _ if parts.method == Method::DELETE => None,
        _ => match gw.in_flight.acquire(&identity.rate_key()) {
            Some(permit) => Some(permit),
            None => {
                let reply = Refusal::CallerBusy.rpc_error(admitted.as_ref().and_then(|a| a.parsed.single_id()));
                return refuse(cx, Refusal::CallerBusy, Some(reply));
            }
        },
    };
    let response = match &gw.backend {
        Backend::Http(up) => forward_http(gw, up, cx, parts, admitted, conn, &identity, &access, tasks).await,
        Backend::Stdio(bridge) => {
            forward_stdio(gw, bridge, cx, &parts, admitted, &identity, &access, session, tasks).await
        }
    };
    match permit {
        Some(permit) => response.map(|body| permit.hold(body)),
        None => response,
    }
}

/// The request to the upstream: method, the upstream's MCP path, the allowed headers.
fn upstream_request(
    gw: &Gateway,
    up: &HttpUpstream,
    parts: &http::request::Parts,
    conn: &ConnInfo,
) -> http::request::Builder {
    let mut b = Request::builder().method(parts.method.clone()).uri(format!("{}{}", up.origin, up.path));
    if let Some(h) = b.headers_mut() {
        // One value of each, the one the gateway checked (a second `Mcp-Session-Id` a server
        // read instead would be another caller's session), but every value of `Accept`, a list
        // the gateway decides nothing on; a body is always UTF-8 JSON.
        for name in FORWARDED_HEADERS {
            if *name == header::ACCEPT {
                for v in parts.headers.get_all(*name) {
                    h.append(*name, v.clone());
                }
            } else if let Some(v) = parts.headers.get(*name) {
                h.insert(*name, v.clone());
            }
        }
        if parts.method == Method::POST {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        // Without authentication at the gateway, the server's own is the caller's business;
        // with it, the token was for the gateway and is not passed on (no token passthrough).
        if !gw.authn.enabled {
            if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
                h.insert(header::AUTHORIZATION, v.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(&conn.remote.ip().to_string()) {
            h.insert("x-forwarded-for", v);
        }
        h.insert("x-forwarded-proto", HeaderValue::from_static(if gw.tls { "https" } else { "http" }));
    }
    b
}

#[allow(clippy::too_many_arguments)]
async fn forward_http(
    gw: &Gateway,
    up: &HttpUpstream,
    cx: &mut Ctx,
    parts: http::request::Parts,
    admitted: Option<Admitted>,
    conn: &ConnInfo,
    identity: &Identity,
    access: &ToolAccess,
    tasks: Option<TaskBinding>,
) -> Response<Body> {
    let body = admitted.as_ref().map(|a| full(a.forward())).unwrap_or_else(empty);
    let req = match upstream_request(gw, up, &parts, conn).body(body) {
        Ok(r) => r,
        Err(e) => {
            cx.finish(gw, 400, Decision::Error, Some(("bad_request", e.to_string())));
            return json_response(
                StatusCode::BAD_REQUEST,
                &error_response(None, jsonrpc::INVALID_REQUEST, "bad request"),
            );
        }
    };
    let reply_id = admitted.as_ref().and_then(|a| a.parsed.single_id().cloned());
    let resp = match up.client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "upstream request failed");
            cx.finish(gw, 502, Decision::Error, Some(("upstream", format!("upstream: {e}"))));
            return json_response(
                StatusCode::BAD_GATEWAY,
                &error_response(reply_id.as_ref(), jsonrpc::UPSTREAM_ERROR, "MCP server unreachable"),
            );
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    let status = rparts.status;

    // Session bookkeeping: created by an initialize, ended by a DELETE.
    let created = rparts.headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    let initialize = admitted.as_ref().is_some_and(|a| a.parsed.messages.iter().any(|m| m.is_initialize()));
    if let (Some(sid), true, true) = (created, initialize, status.is_success()) {
        let (n, forgotten) = gw.sessions.bind(sid, &identity.session_owner());
        gw.metrics.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
        end_upstream_sessions(up, forgotten);
        cx.rec.session = Some(sid.to_string());
    }
    if let (true, Some(sid), true) = (parts.method == Method::DELETE, &cx.rec.session, status.is_success()) {
        let n = gw.sessions.forget(sid);
        gw.metrics.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    let ctype = rparts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(media_type);
    let is_sse = ctype.as_deref() == Some("text/event-stream");
    // A GET stream may carry anything the server sends the session, answers replayed on
    // resumption (`Last-Event-ID`) included: task lists and created tasks too.
    let tasks = if parts.method == Method::GET { tasks } else { answer_tasks(tasks, admitted.as_ref()) };
    let filter = ResponseFilter::new(access.clone(), admitted.as_ref().map(|a| a.ids.clone()).unwrap_or_default())
        .with_tasks(tasks);
    // The SSE answer to a POST ends for the client together with the last awaited response.
    let awaited: Option<HashSet<String>> = admitted
        .as_ref()
        .filter(|_| is_sse && status.is_success())
        .map(|a| a.parsed.requests().filter_map(|m| m.id.as_ref().map(Value::to_string)).collect());
    let body = if is_sse {
        rparts.headers.remove(header::CONTENT_LENGTH);
        let body = sse::transform_body(rbody, Transform::new(filter, awaited));
        gw.until_expiry(body, identity)
    } else if filter.is_noop() {
        rbody.map_err(BoxError::from).boxed_unsync()
    } else {
        // Whatever the server says its content is: read it as JSON, filter it, or refuse it.
        let bytes = match Limited::new(rbody, MAX_FILTERED_JSON).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return inspect_failed(gw, cx, reply_id.as_ref(), format!("reading the answer: {e}")),
        };
        if bytes.is_empty() {
            full(bytes)
        } else {
            match filter.apply_text(&bytes) {
                Ok(out) => {
                    rparts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
                    rparts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    full(out)
                }
                Err(e) => {
                    return inspect_failed(gw, cx, reply_id.as_ref(), format!("the answer is not strict JSON: {e}"))
                }
            }
        }
    };
    let decision = if status.is_server_error() { Decision::Error } else { Decision::Allow };
    let reason = status.is_server_error().then(|| ("upstream", format!("upstream answered {status}")));
    cx.finish(gw, status.as_u16(), decision, reason);
    Response::from_parts(rparts, body)
}

/// The session a request names, as the scope of an anonymous caller's tasks.
fn session_scope(headers: &HeaderMap) -> Option<&str> {
    headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok())
}

/// The task binding the answer to a POST needs: when the request may create a task or lists them.
fn answer_tasks(tasks: Option<TaskBinding>, admitted: Option<&Admitted>) -> Option<TaskBinding> {
    admitted?.parsed.messages.iter().any(|m| m.creates_task || m.is_task_list()).then_some(())?;
    tasks
}

/// Tells the server, in the background, to end sessions the gateway forgot to make room (a
/// DELETE each, as a client ending its session would): their streams end and their state goes,
/// instead of lingering until the server's own timeout while nobody may use them.
fn end_upstream_sessions(up: &HttpUpstream, ids: Vec<String>) {
    for id in ids {
        let request = Request::builder()
            .method(Method::DELETE)
            .uri(format!("{}{}", up.origin, up.path))
            .header(SESSION_HEADER, id.as_str())
            .body(empty());
        let Ok(request) = request else { continue };
        let client = up.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.request(request).await {
                tracing::debug!(session = %id, error = %e, "ending a forgotten session at the server failed");
            }
        });
    }
}

/// An answer a restricted caller may not see unfiltered could not be inspected: never passed on.
fn inspect_failed(gw: &Gateway, cx: &mut Ctx, id: Option<&Value>, why: String) -> Response<Body> {
    tracing::warn!(error = %why, "an answer from the server could not be inspected: replaced by an error");
    cx.finish(gw, 502, Decision::Error, Some(("upstream", format!("upstream: {why}"))));
    json_response(
        StatusCode::BAD_GATEWAY,
        &error_response(id, jsonrpc::UPSTREAM_ERROR, "the MCP server's answer could not be inspected"),
    )
}

fn bridge_refusal(e: &BridgeError) -> Option<Refusal> {
    match e {
        BridgeError::NoSession => Some(Refusal::NoSession),
        BridgeError::UnknownSession => Some(Refusal::UnknownSession),
        BridgeError::TooMany => Some(Refusal::TooManySessions),
        BridgeError::CallerTooMany => Some(Refusal::CallerSessions),
        BridgeError::Spawn(_) | BridgeError::Gone => None,
    }
}

fn bridge_error(
    cx: &mut Ctx,
    gw: &Gateway,
    e: BridgeError,
    id: Option<&Value>,
    parts: &http::request::Parts,
) -> Response<Body> {
    if let Some(refusal) = bridge_refusal(&e) {
        let reply = refusal.rpc_error(id);
        return gw.refuse(cx, refusal, Some(reply), &parts.headers, &parts.uri);
    }
    cx.finish(gw, 502, Decision::Error, Some(("upstream", e.to_string())));
    json_response(StatusCode::BAD_GATEWAY, &error_response(id, jsonrpc::UPSTREAM_ERROR, &e.to_string()))
}

#[allow(clippy::too_many_arguments)]
async fn forward_stdio(
    gw: &Gateway,
    bridge: &Arc<Bridge>,
    cx: &mut Ctx,
    parts: &http::request::Parts,
    admitted: Option<Admitted>,
    identity: &Identity,
    access: &ToolAccess,
    session_id: Option<String>,
    tasks: Option<TaskBinding>,
) -> Response<Body> {
    let owner = identity.session_owner();
    let existing = |cx: &mut Ctx| -> Result<Arc<crate::stdio::Session>, Box<Response<Body>>> {
        let Some(sid) = session_id.as_deref() else {
            return Err(Box::new(bridge_error(cx, gw, BridgeError::NoSession, None, parts)));
        };
        let s = bridge.get(sid).map_err(|e| Box::new(bridge_error(cx, gw, e, None, parts)))?;
        if s.owner != owner {
            return Err(Box::new(gw.refuse(cx, Refusal::ForeignSession, None, &parts.headers, &parts.uri)));
        }
        Ok(s)
    };
    match parts.method {
        Method::POST => {
            let Some(admitted) = admitted else {
                return bridge_error(cx, gw, BridgeError::NoSession, None, parts);
            };
            let parsed = &admitted.parsed;
            let initialize = parsed.messages.iter().any(|m| m.is_initialize());
            let (session, created) = match (&session_id, initialize) {
                (None, true) => match bridge.create(&owner) {
                    Ok(s) => (s, true),
                    Err(e) => return bridge_error(cx, gw, e, parsed.single_id(), parts),
                },
                _ => match existing(cx) {
                    Ok(s) => (s, false),
                    Err(r) => return *r,
                },
            };
            cx.rec.session = Some(session.id.clone());
            let busy = session.busy();
            // Requests wait for their answers; the rest (notifications, answers to the server's
            // requests) are written straight away. Every line is the checked message itself.
            let mut requests = vec![];
            for (i, m) in parsed.messages.iter().enumerate() {
                let line = admitted.line(i);
                if m.kind == Kind::Request {
                    let key = admitted
                        .id_for(i)
                        .map(str::to_string)
                        .unwrap_or_else(|| m.id.as_ref().map(Value::to_string).unwrap_or_default());
                    let progress = serde_json::from_slice::<Value>(&parsed.body[m.span.clone()])
                        .ok()
                        .and_then(|v| crate::stdio::progress_token(&v));
                    requests.push((line, key, progress));
                } else if let Err(e) = session.send_line(&line).await {
                    return bridge_error(cx, gw, e, None, parts);
                }
            }
            if requests.is_empty() {
                cx.finish(gw, 202, Decision::Allow, None);
                let mut r = Response::builder().status(StatusCode::ACCEPTED).body(empty()).unwrap_or_default();
                if created {
                    set_session_header(&mut r, &session.id);
                }
                return r;
            }
            // Server messages related to these requests are answered on this POST's SSE stream when
            // the client takes one (opened before the requests are written, so none is missed).
            let route = accepts(&parts.headers, "text/event-stream")
                .then(|| session.open_route(requests.iter().filter_map(|(_, _, p)| p.clone()).collect()));
            let answer = Answer {
                batch: parsed.batch,
                ids: parsed.requests().map(|m| m.id.clone()).collect(),
                filter: ResponseFilter::new(access.clone(), admitted.ids.clone())
                    .with_tasks(answer_tasks(tasks, Some(&admitted))),
            };
            let waits = requests.into_iter().map(|(line, key, _)| {
                let s = session.clone();
                async move { s.request_line(&line, key).await }
            });
            let mut all: Answers = Box::pin(futures_util::future::join_all(waits));
            let Some((guard, mut rx)) = route else {
                let results = all.await;
                return answer.finish(cx, gw, parts, &session, created, vec![], results, bridge).await;
            };
            let first = tokio::select! {
                biased;
                Some(m) = rx.recv() => m,
                results = &mut all => {
                    // Answered before anything related came (or together with it).
                    let mut early = vec![];
                    while let Ok(m) = rx.try_recv() {
                        early.push(m);
                    }
                    drop(guard);
                    return answer.finish(cx, gw, parts, &session, created, early, results, bridge).await;
                }
            };
            // A related message came first: stream it, the ones after it, then the answers.
            cx.finish(gw, 200, Decision::Allow, None);
            let body = answer.stream(vec![first], rx, guard, all, busy);
            let mut r = sse_response(gw.until_expiry(body, identity));
            if created {
                set_session_header(&mut r, &session.id);
            }
            r
        }
        Method::GET => {
            if !accepts(&parts.headers, "text/event-stream") {
                return gw.refuse(cx, Refusal::MethodNotAllowed, None, &parts.headers, &parts.uri);
            }
            let session = match existing(cx) {
                Ok(s) => s,
                Err(r) => return *r,
            };
            // Resumption: what the client missed after the last event it saw on this session's GET stream.
            let last_event =
                parts.headers.get(LAST_EVENT_ID).and_then(|v| v.to_str().ok()).and_then(crate::stdio::parse_event_id);
            let rx = session.open_stream(last_event);
            let busy = session.busy();
            cx.finish(gw, 200, Decision::Allow, None);
            // The session is the one the request names (`existing`): the binding's scope.
            let filter = ResponseFilter::new(access.clone(), IdMap::default()).with_tasks(tasks);
            sse_response(gw.until_expiry(channel_sse(rx, busy, filter), identity))
        }
        Method::DELETE => {
            let session = match existing(cx) {
                Ok(s) => s,
                Err(r) => return *r,
            };
            match bridge.remove(&session.id).await {
                Ok(()) => {
                    cx.finish(gw, 200, Decision::Allow, None);
                    Response::new(empty())
                }
                Err(e) => bridge_error(cx, gw, e, None, parts),
            }
        }
        _ => gw.refuse(cx, Refusal::MethodNotAllowed, None, &parts.headers, &parts.uri),
    }
}

/// The answers of a bridged POST's requests, in order.
type Answers = Pin<Box<dyn Future<Output = Vec<Result<Value, BridgeError>>> + Send>>;

/// How the answers of a bridged POST are put together.
struct Answer {
    batch: bool,
    /// The client's ids of the requests, in order.
    ids: Vec<Option<Value>>,
    /// Ids restored, tool lists filtered for restricted callers.
    filter: ResponseFilter,
}

impl Answer {
    /// One response, or the batch.
    fn value(&self, responses: Vec<Value>) -> Value {
        let mut out =
            if self.batch { Value::Array(responses) } else { responses.into_iter().next().unwrap_or(Value::Null) };
        self.filter.apply(&mut out);
        out
    }

    /// All answered before the stream started: JSON (or SSE as the client accepts), preceded by
    /// the related messages that came with the answers.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        cx: &mut Ctx,
        gw: &Gateway,
        parts: &http::request::Parts,
        session: &crate::stdio::Session,
        created: bool,
        related: Vec<Value>,
        results: Vec<Result<Value, BridgeError>>,
        bridge: &Bridge,
    ) -> Response<Body> {
        let mut responses = vec![];
        for r in results {
            match r {
                Ok(v) => responses.push(v),
                Err(e) => {
                    if created {
                        let _ = bridge.remove(&session.id).await;
                    }
                    let id = if self.batch { None } else { self.ids.first().cloned().flatten() };
                    return bridge_error(cx, gw, e, id.as_ref(), parts);
                }
            }
        }
        let out = self.value(responses);
        let mut r = if related.is_empty() {
            messages_response(&parts.headers, &out)
        } else {
            let mut buf = Vec::new();
            for mut m in related {
                self.filter.apply(&mut m);
                push_events(&mut buf, &m);
            }
            push_events(&mut buf, &out);
            sse_response(full(buf))
        };
        if created {
            set_session_header(&mut r, &session.id);
        }
        cx.finish(gw, 200, Decision::Allow, None);
        r
    }

    /// The SSE answer of requests still in flight: `first` and the related messages that follow,
    /// then the answers (a failed request gets a JSON-RPC error), then the end of the stream.
    fn stream(self, first: Vec<Value>, rx: mpsc::Receiver<Value>, guard: RouteGuard, all: Answers, busy: Busy) -> Body {
        struct State {
            queued: VecDeque<Value>,
            rx: mpsc::Receiver<Value>,
            open: Option<(RouteGuard, Answers)>,
            answer: Answer,
            _busy: Busy,
        }
        let state = State { queued: first.into(), rx, open: Some((guard, all)), answer: self, _busy: busy };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(mut m) = st.queued.pop_front() {
                    st.answer.filter.apply(&mut m);
                    return Some((Ok::<_, BoxError>(Frame::data(sse::event(&m))), st));
                }
                let (_, all) = st.open.as_mut()?;
                tokio::select! {
                    biased;
                    Some(m) = st.rx.recv() => st.queued.push_back(m),
                    results = all => {
                        while let Ok(m) = st.rx.try_recv() {
                            st.queued.push_back(m);
                        }
                        st.open = None;
                        let mut responses = vec![];
                        for (r, id) in results.into_iter().zip(&st.answer.ids) {
                            responses.push(r.unwrap_or_else(|e| error_response(id.as_ref(), jsonrpc::UPSTREAM_ERROR, &e.to_string())));
                        }
                        match st.answer.value(responses) {
                            Value::Array(items) => st.queued.extend(items),
                            v => st.queued.push_back(v),
                        }
                    }
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        return Some((Ok(Frame::data(Bytes::from_static(b": keepalive\n\n"))), st));
                    }
                }
            }
        });
        StreamBody::new(stream.boxed()).boxed_unsync()
    }
}

/// The GET stream of a bridged session: server messages as events, keep-alive comments, filtered
/// for restricted callers. Holding `busy` keeps the session from being reaped while open.
fn channel_sse(rx: mpsc::Receiver<crate::stdio::Numbered>, busy: Busy, filter: ResponseFilter) -> Body {
    let stream = futures_util::stream::unfold((rx, busy, filter), |(mut rx, busy, filter)| async move {
        match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
            Ok(Some((n, line, queued))) => {
                // The line the server wrote, parsed before (it is JSON).
                let mut msg = serde_json::from_slice::<Value>(&line).unwrap_or_default();
                drop(line);
                filter.apply(&mut msg);
                let event = sse::event_with_id(&crate::stdio::event_id(n), &msg);
                // Written: its share of the stream's byte budget is free again.
                drop(queued);
                Some((Ok::<_, BoxError>(Frame::data(event)), (rx, busy, filter)))
            }
            Ok(None) => None,
            Err(_) => Some((Ok(Frame::data(Bytes::from_static(b": keepalive\n\n"))), (rx, busy, filter))),
        }
    });
    StreamBody::new(stream.boxed()).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, "application/json, text/event-stream".parse().unwrap());
        assert!(accepts(&h, "application/json") && accepts(&h, "text/event-stream"));
        h.insert(header::ACCEPT, "Text/Event-Stream;q=1".parse().unwrap());
        assert!(!accepts(&h, "application/json") && accepts(&h, "text/event-stream"));
        let r = messages_response(&h, &serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert(SESSION_HEADER, "s".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(SESSION_HEADER));
    }
}
