//! The MCP front end: Streamable HTTP (POST, GET SSE, DELETE, Mcp-Session-Id,
//! MCP-Protocol-Version passed through) with the policy enforced on every request, forwarded to
//! an HTTP upstream without buffering streams, or to the stdio bridge.

use crate::audit::{Auditor, Decision, Record};
use crate::auth::{AuthError, Authenticator, Credentials, Identity};
use crate::authz::{role_allowed, tool_access, ToolAccess};
use crate::config::AuthzPolicy;
use crate::jsonrpc::{self, error_response, Kind, Parsed};
use crate::metrics::Metrics;
use crate::ratelimit::{retry_after_secs, Limiter};
use crate::sse::{self, SseFilter, Target};
use crate::stdio::{Bridge, BridgeError, Busy, RouteGuard};
use crate::{Body, BoxError};
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Mcp-Session-Id.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// Largest JSON response read whole to filter a tools/list.
const MAX_FILTERED_JSON: usize = 16 * 1024 * 1024;
/// Largest refused body still read (and discarded) before answering 413.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;
/// Longest a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// SSE keep-alive comment interval on bridged GET streams.
const KEEPALIVE: Duration = Duration::from_secs(15);

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

/// Who created which session (HTTP mode), so that one caller cannot use another's session.
#[derive(Default)]
pub struct SessionOwners {
    map: Mutex<HashMap<String, (String, Instant)>>,
}

const MAX_TRACKED_SESSIONS: usize = 10_000;
const SESSION_FORGET: Duration = Duration::from_secs(3600);

impl SessionOwners {
    fn bind(&self, id: &str, owner: &str) -> usize {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_TRACKED_SESSIONS {
            m.retain(|_, (_, seen)| seen.elapsed() < SESSION_FORGET);
            if m.len() >= MAX_TRACKED_SESSIONS {
                m.clear();
            }
        }
        m.insert(id.to_string(), (owner.to_string(), Instant::now()));
        m.len()
    }
    fn owner_ok(&self, id: &str, who: &Identity) -> bool {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(id) {
            Some((owner, seen)) => {
                *seen = Instant::now();
                owner_matches(owner, who)
            }
            None => true,
        }
    }
    fn forget(&self, id: &str) -> usize {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(id);
        m.len()
    }
}

/// A session may be used by the identity that created it; sessions of anonymous callers are not
/// bound (their address may change).
fn owner_matches(owner: &str, who: &Identity) -> bool {
    owner.is_empty() || owner.starts_with("ip:") || who.anonymous || owner == who.rate_key()
}

/// Everything a request needs.
pub struct Gateway {
    /// --name.
    pub name: String,
    /// The path clients use.
    pub mcp_path: String,
    /// Clients connect with TLS.
    pub tls: bool,
    /// Authentication.
    pub authn: Authenticator,
    /// Authorization.
    pub authz: Option<AuthzPolicy>,
    /// Rate limit.
    pub limiter: Option<Limiter>,
    /// Audit.
    pub audit: Auditor,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where requests go.
    pub backend: Backend,
    /// Session owners (HTTP mode).
    pub owners: SessionOwners,
    /// --max-body-bytes.
    pub max_body: usize,
    /// --max-batch.
    pub max_batch: usize,
}

/// The client side of a connection.
pub struct ConnInfo {
    /// Peer address.
    pub remote: SocketAddr,
    /// Client certificate chain (TLS with mtls).
    pub client_cert: Option<Vec<CertificateDer<'static>>>,
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
            let t = t.split(';').next().unwrap_or("").trim();
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
struct Ctx {
    rec: Record,
    start: Instant,
}

impl Ctx {
    fn finish(&mut self, gw: &Gateway, status: StatusCode, decision: Decision, reason: Option<(&str, String)>) {
        let took = self.start.elapsed();
        self.rec.status = status.as_u16();
        self.rec.decision = Some(decision);
        self.rec.latency_ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        if let Some((label, detail)) = reason {
            if decision == Decision::Deny {
                gw.metrics.deny(label);
            }
            self.rec.reason = Some(detail);
        }
        let method = self.rec.method.clone().unwrap_or_else(|| self.rec.http_method.clone());
        gw.metrics.observe(&method, self.rec.tool.as_deref(), status.as_u16(), decision.as_str(), took);
        gw.audit.record(std::mem::take(&mut self.rec));
    }

    fn deny(&mut self, gw: &Gateway, status: StatusCode, label: &str, detail: String, body: Value) -> Response<Body> {
        self.finish(gw, status, Decision::Deny, Some((label, detail)));
        json_response(status, &body)
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
            .map(str::to_string)
            .or_else(|| uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".to_string());
        format!("{}://{host}", if self.tls { "https" } else { "http" })
    }

    /// RFC 9728 protected resource metadata.
    fn resource_metadata(&self, headers: &HeaderMap, uri: &http::Uri) -> Response<Body> {
        if !self.authn.enabled {
            return json_response(StatusCode::NOT_FOUND, &serde_json::json!({"error": "not found"}));
        }
        let base = self.public_base(headers, uri);
        let doc = serde_json::json!({
            "resource": format!("{base}{}", self.mcp_path),
            "authorization_servers": self.authn.issuer().into_iter().collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
            "resource_name": self.name,
        });
        let mut r = json_response(StatusCode::OK, &doc);
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
        r
    }

    fn www_authenticate(&self, headers: &HeaderMap, uri: &http::Uri, err: Option<&AuthError>) -> HeaderValue {
        let base = self.public_base(headers, uri);
        let mut v = format!(r#"Bearer resource_metadata="{base}/.well-known/oauth-protected-resource""#);
        if let Some(e) = err.filter(|e| e.reason != "missing_credentials") {
            let desc: String = e.detail.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
            v.push_str(&format!(r#", error="invalid_token", error_description="{desc}""#));
        }
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// A stream ended when the caller's credential expires.
    fn until_expiry(&self, body: Body, identity: &Identity) -> Body {
        let (metrics, who) = (self.metrics.clone(), identity.audit_name());
        sse::UntilExpiry::wrap(body, identity.time_left(), move || {
            tracing::info!(identity = %who, "credential expired: stream ended");
            metrics.deny("stream_credential_expired");
        })
    }

    fn rate_check(&self, key: &str) -> Result<(), Duration> {
        self.limiter.as_ref().map_or(Ok(()), |l| l.check(key))
    }
}

fn retry_response(wait: Duration, id: Option<&Value>) -> Response<Body> {
    let mut r = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        &error_response(id, jsonrpc::FORBIDDEN, "Too Many Requests: rate limit exceeded"),
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs(wait).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Handle one request.
pub async fn handle(gw: Arc<Gateway>, conn: Arc<ConnInfo>, mut req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path.starts_with("/.well-known/oauth-protected-resource") {
        return gw.resource_metadata(req.headers(), req.uri());
    }
    let client_ip = conn.remote.ip().to_string();
    let session = req.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut cx = Ctx {
        rec: Record {
            client: conn.remote.to_string(),
            http_method: req.method().to_string(),
            session: session.clone(),
            ..Default::default()
        },
        start,
    };
    let is_mcp = path == gw.mcp_path;
    let ws_upgrade = matches!(&gw.backend, Backend::Http(u) if u.ws_url.is_some())
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let on_upgrade = ws_upgrade.then(|| hyper::upgrade::on(&mut req));
    if ws_upgrade {
        cx.rec.http_method = "WS".into();
        cx.rec.method = Some("websocket".into());
    }
    let (parts, body) = req.into_parts();

    // CORS preflight carries no credentials; it reveals nothing and is passed on.
    if parts.method == Method::OPTIONS {
        return match &gw.backend {
            Backend::Http(up) => forward_plain(up, &parts, body, &conn).await,
            Backend::Stdio(_) => Response::builder().status(StatusCode::NO_CONTENT).body(empty()).unwrap_or_default(),
        };
    }

    // 1. The body of a POST to the MCP endpoint is read (bounded) to know what it asks for.
    let mut post_body: Option<Bytes> = None;
    let mut stream_body: Option<Incoming> = None;
    if parts.method == Method::POST && is_mcp {
        let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let too_large = || {
            error_response(None, jsonrpc::INVALID_REQUEST, &format!("Request body larger than {} bytes", gw.max_body))
        };
        if declared.is_some_and(|n| n > gw.max_body as u64) {
            // Read and discard a moderately oversized body (bounded, never buffered) so that the
            // client, still sending, gets to read the 413 instead of a reset connection.
            if declared.is_some_and(|n| n <= DRAIN_LIMIT) {
                drain(body).await;
            }
            return cx.deny(&gw, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "body_too_large".into(), too_large());
        }
        let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, gw.max_body).collect()).await;
        let Ok(read) = read else {
            let body = error_response(None, jsonrpc::INVALID_REQUEST, "request body not received in time");
            return cx.deny(&gw, StatusCode::REQUEST_TIMEOUT, "body_timeout", "body_timeout".into(), body);
        };
        match read {
            Ok(b) => post_body = Some(b.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return cx.deny(
                    &gw,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "body_too_large".into(),
                    too_large(),
                );
            }
            Err(e) => {
                let body = error_response(None, jsonrpc::PARSE_ERROR, "could not read the request body");
                return cx.deny(&gw, StatusCode::BAD_REQUEST, "bad_body", format!("reading body: {e}"), body);
            }
        }
    } else {
        stream_body = Some(body);
    }
    let parsed = post_body.as_ref().map(|b| jsonrpc::parse(b, gw.max_batch));
    if let Some(Ok(p)) = &parsed {
        cx.rec.method = Some(p.method_label());
        cx.rec.tool = p.tool_label();
    }
    let reply_id = match &parsed {
        Some(Ok(p)) => p.single_id().cloned(),
        Some(Err(e)) => e.id.clone(),
        None => None,
    };

    // 2. Authentication.
    let creds = Credentials::from_headers(&parts.headers, conn.client_cert.as_deref());
    let identity = match gw.authn.authenticate(creds, &client_ip).await {
        Ok(id) => id,
        Err(e) => {
            if let Err(wait) = gw.rate_check(&format!("ip:{client_ip}")) {
                cx.finish(
                    &gw,
                    StatusCode::TOO_MANY_REQUESTS,
                    Decision::Deny,
                    Some(("rate_limited", "rate_limited".into())),
                );
                return retry_response(wait, reply_id.as_ref());
            }
            tracing::debug!(reason = e.reason, detail = %e.detail, "unauthenticated");
            let challenge = gw.www_authenticate(&parts.headers, &parts.uri, Some(&e));
            let body = error_response(reply_id.as_ref(), jsonrpc::FORBIDDEN, "Unauthorized");
            let mut r = cx.deny(&gw, StatusCode::UNAUTHORIZED, e.reason, e.describe(), body);
            r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            return r;
        }
    };
    cx.rec.identity = Some(identity.audit_name());
    cx.rec.auth = Some(identity.method);

    // 3. Rate limit per identity (client address when anonymous).
    if let Err(wait) = gw.rate_check(&identity.rate_key()) {
        cx.finish(&gw, StatusCode::TOO_MANY_REQUESTS, Decision::Deny, Some(("rate_limited", "rate_limited".into())));
        return retry_response(wait, reply_id.as_ref());
    }

    // 4. Well-formed JSON-RPC.
    let parsed = match parsed {
        Some(Err(e)) => {
            let resp = e.to_response();
            return cx.deny(&gw, StatusCode::BAD_REQUEST, e.reason, format!("{}: {}", e.reason, e.message), resp);
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };

    // 5. Roles.
    if !role_allowed(gw.authz.as_ref(), &identity) {
        let body = error_response(reply_id.as_ref(), jsonrpc::FORBIDDEN, "Forbidden: no allowed role");
        let mut r = cx.deny(
            &gw,
            StatusCode::FORBIDDEN,
            "forbidden_role",
            format!("roles {:?} not allowed", identity.roles),
            body,
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="insufficient_scope""#));
        return r;
    }

    // 6. Sessions belong to their creator.
    if let (Some(sid), Backend::Http(_)) = (&session, &gw.backend) {
        if !gw.owners.owner_ok(sid, &identity) {
            let body = error_response(reply_id.as_ref(), jsonrpc::FORBIDDEN, "Forbidden: session of another caller");
            return cx.deny(&gw, StatusCode::FORBIDDEN, "session_owner", "session of another caller".into(), body);
        }
    }

    // 7. Tools.
    let access = tool_access(gw.authz.as_ref(), &identity);
    if let Some(p) = &parsed {
        if let Some((denied, body)) = crate::authz::refuse_tools(p, &access) {
            cx.finish(
                &gw,
                StatusCode::OK,
                Decision::Deny,
                Some(("tool_denied", format!("tool_denied: {}", denied.join(",")))),
            );
            return messages_response(&parts.headers, &body);
        }
    }

    // 8. Forward.
    match &gw.backend {
        Backend::Http(up) => {
            if let Some(on_upgrade) = on_upgrade {
                return crate::ws::proxy(gw.clone(), up, &parts, on_upgrade, identity, access, cx.rec).await;
            }
            let body = match post_body {
                Some(b) => full(b),
                None => stream_body.map(|b| b.map_err(BoxError::from).boxed_unsync()).unwrap_or_else(empty),
            };
            forward_http(&gw, up, &mut cx, parts, body, &conn, &identity, parsed.as_ref(), &access, is_mcp).await
        }
        Backend::Stdio(bridge) => {
            if !is_mcp {
                return cx.deny(
                    &gw,
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such path".into(),
                    serde_json::json!({"error": "not found"}),
                );
            }
            forward_stdio(&gw, bridge, &mut cx, &parts, post_body, parsed.as_ref(), &identity, &access, session).await
        }
    }
}

fn upstream_request(
    up: &HttpUpstream,
    parts: &http::request::Parts,
    conn: &ConnInfo,
    mcp_path: &str,
    strip_credentials: bool,
) -> http::request::Builder {
    let path = parts.uri.path();
    let path = if path == mcp_path { up.path.as_str() } else { path };
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    if strip_credentials {
        // The token was for the gateway; it is not passed on (MCP forbids token passthrough).
        headers.remove(header::AUTHORIZATION);
        headers.remove("x-api-key");
    }
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", conn.remote.ip()),
        None => conn.remote.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    let mut b = Request::builder().method(parts.method.clone()).uri(format!("{}{path}{query}", up.origin));
    if let Some(h) = b.headers_mut() {
        *h = headers;
    }
    b
}

async fn forward_plain(
    up: &HttpUpstream,
    parts: &http::request::Parts,
    body: Incoming,
    conn: &ConnInfo,
) -> Response<Body> {
    let req = upstream_request(up, parts, conn, "", false).body(body.map_err(BoxError::from).boxed_unsync());
    match req {
        Ok(req) => match up.client.request(req).await {
            Ok(resp) => {
                let (mut p, b) = resp.into_parts();
                strip_hop_by_hop(&mut p.headers);
                Response::from_parts(p, b.map_err(BoxError::from).boxed_unsync())
            }
            Err(_) => json_response(StatusCode::BAD_GATEWAY, &serde_json::json!({"error": "upstream unreachable"})),
        },
        Err(_) => json_response(StatusCode::BAD_REQUEST, &serde_json::json!({"error": "bad request"})),
    }
}

/// Read a body to its end (at most [`DRAIN_LIMIT`] bytes, [`BODY_TIMEOUT`]), keeping nothing.
async fn drain(mut body: Incoming) {
    let work = async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len() as u64);
            if read > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(BODY_TIMEOUT, work).await;
}

fn tool_list_ids(parsed: Option<&Parsed>) -> HashSet<String> {
    parsed
        .map(|p| {
            p.messages.iter().filter(|m| m.is_tool_list()).filter_map(|m| m.id.as_ref().map(Value::to_string)).collect()
        })
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
async fn forward_http(
    gw: &Gateway,
    up: &HttpUpstream,
    cx: &mut Ctx,
    parts: http::request::Parts,
    body: Body,
    conn: &ConnInfo,
    identity: &Identity,
    parsed: Option<&Parsed>,
    access: &ToolAccess,
    is_mcp: bool,
) -> Response<Body> {
    let req = match upstream_request(up, &parts, conn, &gw.mcp_path, gw.authn.enabled).body(body) {
        Ok(r) => r,
        Err(e) => {
            return cx.deny(
                gw,
                StatusCode::BAD_REQUEST,
                "bad_request",
                e.to_string(),
                serde_json::json!({"error": "bad request"}),
            )
        }
    };
    let resp = match up.client.request(req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "upstream request failed");
            cx.finish(gw, StatusCode::BAD_GATEWAY, Decision::Error, Some(("upstream", format!("upstream: {e}"))));
            let id = parsed.and_then(Parsed::single_id);
            return json_response(
                StatusCode::BAD_GATEWAY,
                &error_response(id, jsonrpc::UPSTREAM_ERROR, "MCP server unreachable"),
            );
        }
    };
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    let status = rparts.status;

    // Session bookkeeping: created by an initialize, ended by a DELETE.
    if is_mcp {
        let created = rparts.headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
        if let (Some(sid), true) = (created, parsed.is_some_and(|p| p.messages.iter().any(|m| m.is_initialize()))) {
            let n = gw.owners.bind(sid, &identity.rate_key());
            gw.metrics.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
            cx.rec.session = Some(sid.to_string());
        }
        if let (true, Some(sid), true) = (parts.method == Method::DELETE, &cx.rec.session, status.is_success()) {
            let n = gw.owners.forget(sid);
            gw.metrics.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    let content_type = rparts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let is_sse = content_type.starts_with("text/event-stream");
    let ids = tool_list_ids(parsed);
    let target = if parts.method == Method::GET {
        Some(Target::AnyToolsResult)
    } else {
        (!ids.is_empty()).then_some(Target::Ids(ids))
    };
    let body = match target.filter(|_| access.is_restricted() && is_mcp) {
        Some(target) if is_sse => {
            rparts.headers.remove(header::CONTENT_LENGTH);
            sse::filter_body(rbody, SseFilter::new(target, access.clone()))
        }
        Some(target) if content_type.starts_with("application/json") => {
            match Limited::new(rbody, MAX_FILTERED_JSON).collect().await {
                Ok(b) => {
                    let bytes = b.to_bytes();
                    match serde_json::from_slice::<Value>(&bytes) {
                        Ok(mut v) => {
                            sse::filter_value(&mut v, &target, access);
                            let out = v.to_string();
                            rparts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
                            full(out)
                        }
                        Err(_) => full(bytes),
                    }
                }
                Err(e) => {
                    cx.finish(
                        gw,
                        StatusCode::BAD_GATEWAY,
                        Decision::Error,
                        Some(("upstream", format!("reading tools/list: {e}"))),
                    );
                    return json_response(
                        StatusCode::BAD_GATEWAY,
                        &error_response(None, jsonrpc::UPSTREAM_ERROR, "bad answer from the MCP server"),
                    );
                }
            }
        }
        _ => rbody.map_err(BoxError::from).boxed_unsync(),
    };
    // The SSE answer to a POST ends for the client together with the last awaited response.
    let awaited: HashSet<String> = parsed
        .filter(|_| is_sse && is_mcp && parts.method == Method::POST && status.is_success())
        .map(|p| p.requests().filter_map(|m| m.id.as_ref().map(Value::to_string)).collect())
        .unwrap_or_default();
    let body = if awaited.is_empty() { body } else { sse::EndWhenAnswered::wrap(body, awaited) };
    let body = if is_sse { gw.until_expiry(body, identity) } else { body };
    let decision = if status.is_server_error() { Decision::Error } else { Decision::Allow };
    let reason = status.is_server_error().then(|| ("upstream", format!("upstream answered {status}")));
    cx.finish(gw, status, decision, reason);
    Response::from_parts(rparts, body)
}

fn bridge_error(cx: &mut Ctx, gw: &Gateway, e: BridgeError, id: Option<&Value>) -> Response<Body> {
    let (status, code, label) = match e {
        BridgeError::NoSession => (StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST, "no_session"),
        BridgeError::UnknownSession => (StatusCode::NOT_FOUND, jsonrpc::INVALID_REQUEST, "unknown_session"),
        BridgeError::TooMany => (StatusCode::SERVICE_UNAVAILABLE, jsonrpc::UNAVAILABLE, "too_many_sessions"),
        BridgeError::Spawn(_) | BridgeError::Gone => (StatusCode::BAD_GATEWAY, jsonrpc::UPSTREAM_ERROR, "upstream"),
    };
    let decision = if status.is_server_error() { Decision::Error } else { Decision::Deny };
    cx.finish(gw, status, decision, Some((label, e.to_string())));
    json_response(status, &error_response(id, code, &e.to_string()))
}

#[allow(clippy::too_many_arguments)]
async fn forward_stdio(
    gw: &Gateway,
    bridge: &Arc<Bridge>,
    cx: &mut Ctx,
    parts: &http::request::Parts,
    body: Option<Bytes>,
    parsed: Option<&Parsed>,
    identity: &Identity,
    access: &ToolAccess,
    session_id: Option<String>,
) -> Response<Body> {
    let existing = |cx: &mut Ctx| -> Result<Arc<crate::stdio::Session>, Box<Response<Body>>> {
        let Some(sid) = session_id.as_deref() else {
            return Err(Box::new(bridge_error(cx, gw, BridgeError::NoSession, parsed.and_then(Parsed::single_id))));
        };
        let s = bridge.get(sid).map_err(|e| Box::new(bridge_error(cx, gw, e, parsed.and_then(Parsed::single_id))))?;
        if !owner_matches(&s.owner, identity) {
            let body = error_response(None, jsonrpc::FORBIDDEN, "Forbidden: session of another caller");
            return Err(Box::new(cx.deny(
                gw,
                StatusCode::FORBIDDEN,
                "session_owner",
                "session of another caller".into(),
                body,
            )));
        }
        Ok(s)
    };
    match parts.method {
        Method::POST => {
            let (Some(parsed), Some(body)) = (parsed, body) else {
                return bridge_error(cx, gw, BridgeError::NoSession, None);
            };
            let initialize = parsed.messages.iter().any(|m| m.is_initialize());
            let (session, created) = match (&session_id, initialize) {
                (None, true) => match bridge.create(&identity.rate_key()) {
                    Ok(s) => (s, true),
                    Err(e) => return bridge_error(cx, gw, e, parsed.single_id()),
                },
                _ => match existing(cx) {
                    Ok(s) => (s, false),
                    Err(r) => return *r,
                },
            };
            cx.rec.session = Some(session.id.clone());
            let busy = session.busy();
            let Ok(value) = serde_json::from_slice::<Value>(&body) else {
                return bridge_error(cx, gw, BridgeError::Gone, None);
            };
            let items = match value {
                Value::Array(items) => items,
                v => vec![v],
            };
            let mut requests = vec![];
            for (msg, info) in items.into_iter().zip(&parsed.messages) {
                if info.kind == Kind::Request {
                    requests.push(msg);
                } else if let Err(e) = session.send(&msg).await {
                    return bridge_error(cx, gw, e, None);
                }
            }
            if requests.is_empty() {
                cx.finish(gw, StatusCode::ACCEPTED, Decision::Allow, None);
                return Response::builder().status(StatusCode::ACCEPTED).body(empty()).unwrap_or_default();
            }
            // Server messages related to these requests are answered on this POST's SSE stream when
            // the client takes one (opened before the requests are written, so none is missed).
            let route = accepts(&parts.headers, "text/event-stream")
                .then(|| session.open_route(requests.iter().filter_map(crate::stdio::progress_token).collect()));
            let answer = Answer {
                batch: parsed.batch,
                ids: requests.iter().map(|m| m.get("id").cloned()).collect(),
                list_ids: tool_list_ids(Some(parsed)),
                access: access.clone(),
            };
            let waits = requests.into_iter().map(|msg| {
                let s = session.clone();
                async move { s.request(&msg).await }
            });
            let mut all: Answers = Box::pin(futures_util::future::join_all(waits));
            let Some((guard, mut rx)) = route else {
                let results = all.await;
                return answer.finish(cx, gw, &parts.headers, &session, created, vec![], results, bridge).await;
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
                    return answer.finish(cx, gw, &parts.headers, &session, created, early, results, bridge).await;
                }
            };
            // A related message came first: stream it, the ones after it, then the answers.
            cx.finish(gw, StatusCode::OK, Decision::Allow, None);
            let body = answer.stream(vec![first], rx, guard, all, busy);
            let mut r = sse_response(gw.until_expiry(body, identity));
            if created {
                set_session_header(&mut r, &session.id);
            }
            r
        }
        Method::GET => {
            if !accepts(&parts.headers, "text/event-stream") {
                cx.finish(
                    gw,
                    StatusCode::METHOD_NOT_ALLOWED,
                    Decision::Deny,
                    Some(("not_acceptable", "GET without Accept: text/event-stream".into())),
                );
                return Response::builder()
                    .status(StatusCode::METHOD_NOT_ALLOWED)
                    .header(header::ALLOW, "POST, DELETE")
                    .body(empty())
                    .unwrap_or_default();
            }
            let session = match existing(cx) {
                Ok(s) => s,
                Err(r) => return *r,
            };
            // Resumption: what the client missed after the last event it saw on this session's GET stream.
            let last_event =
                parts.headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(crate::stdio::parse_event_id);
            let rx = session.open_stream(last_event);
            let busy = session.busy();
            cx.finish(gw, StatusCode::OK, Decision::Allow, None);
            sse_response(gw.until_expiry(channel_sse(rx, busy, access.clone()), identity))
        }
        Method::DELETE => {
            let session = match existing(cx) {
                Ok(s) => s,
                Err(r) => return *r,
            };
            match bridge.remove(&session.id).await {
                Ok(()) => {
                    cx.finish(gw, StatusCode::OK, Decision::Allow, None);
                    Response::new(empty())
                }
                Err(e) => bridge_error(cx, gw, e, None),
            }
        }
        _ => {
            cx.finish(
                gw,
                StatusCode::METHOD_NOT_ALLOWED,
                Decision::Deny,
                Some(("method_not_allowed", "method not allowed".into())),
            );
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "GET, POST, DELETE")
                .body(empty())
                .unwrap_or_default()
        }
    }
}

/// The answers of a bridged POST's requests, in order.
type Answers = Pin<Box<dyn Future<Output = Vec<Result<Value, BridgeError>>> + Send>>;

/// How the answers of a bridged POST are put together.
struct Answer {
    batch: bool,
    /// The requests' ids, in order.
    ids: Vec<Option<Value>>,
    /// Ids of its tools/list requests.
    list_ids: HashSet<String>,
    access: ToolAccess,
}

impl Answer {
    /// One response, or the batch, with tools/list filtered for restricted callers.
    fn value(&self, mut responses: Vec<Value>) -> Value {
        let mut out = if self.batch { Value::Array(responses) } else { responses.pop().unwrap_or(Value::Null) };
        if self.access.is_restricted() && !self.list_ids.is_empty() {
            sse::filter_value(&mut out, &Target::Ids(self.list_ids.clone()), &self.access);
        }
        out
    }

    /// All answered before the stream started: JSON (or SSE as the client accepts), preceded by
    /// the related messages that came with the answers.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        cx: &mut Ctx,
        gw: &Gateway,
        headers: &HeaderMap,
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
                    return bridge_error(cx, gw, e, id.as_ref());
                }
            }
        }
        let out = self.value(responses);
        let mut r = if related.is_empty() {
            messages_response(headers, &out)
        } else {
            let mut buf = Vec::new();
            related.iter().for_each(|m| push_events(&mut buf, m));
            push_events(&mut buf, &out);
            sse_response(full(buf))
        };
        if created {
            set_session_header(&mut r, &session.id);
        }
        cx.finish(gw, StatusCode::OK, Decision::Allow, None);
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
                if let Some(m) = st.queued.pop_front() {
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
fn channel_sse(rx: mpsc::Receiver<crate::stdio::Numbered>, busy: Busy, access: ToolAccess) -> Body {
    let stream = futures_util::stream::unfold((rx, busy, access), |(mut rx, busy, access)| async move {
        match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
            Ok(Some((n, mut msg))) => {
                if access.is_restricted() {
                    sse::filter_value(&mut msg, &Target::AnyToolsResult, &access);
                }
                let event = sse::event_with_id(&crate::stdio::event_id(n), &msg);
                Some((Ok::<_, BoxError>(Frame::data(event)), (rx, busy, access)))
            }
            Ok(None) => None,
            Err(_) => Some((Ok(Frame::data(Bytes::from_static(b": keepalive\n\n"))), (rx, busy, access))),
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
        h.insert(header::ACCEPT, "text/event-stream;q=1".parse().unwrap());
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

    #[test]
    fn session_binding() {
        let o = SessionOwners::default();
        o.bind("s1", "jwt:alice");
        assert!(o.owner_ok("s1", &Identity::new("alice", "jwt", vec![])));
        assert!(!o.owner_ok("s1", &Identity::new("bob", "jwt", vec![])));
        assert!(o.owner_ok("unknown", &Identity::new("bob", "jwt", vec![])));
        o.bind("s2", "ip:10.0.0.1");
        assert!(o.owner_ok("s2", &Identity::new("bob", "jwt", vec![])));
    }
}
