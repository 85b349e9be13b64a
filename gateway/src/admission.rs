//! Admission: the one place that decides whether a request reaches the MCP server. Every
//! transport (Streamable HTTP POST/GET/DELETE, each WebSocket frame, the stdio bridge) goes
//! through [`route`] for the HTTP surface and [`admit`] for the messages; each returns either
//! what may be forwarded or a named [`Refusal`], and [`Refusal`] alone says what a refusal
//! becomes: HTTP status, JSON-RPC error, WebSocket close, audit reason and metric label.
//!
//! Default deny: only the MCP path of the server, byte for byte, is served; on it only POST, GET
//! and DELETE (OPTIONS is answered here); only the MCP methods, parsed strictly; the bytes that
//! were checked are the bytes forwarded.

use crate::auth::AuthError;
use crate::authz::{denied_to_anonymous, denied_tools, IdMap, TaskBinding, ToolAccess};
use crate::config::Cors;
use crate::jsonrpc::{self, error_response, Kind, ParseError, Parsed};
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a request is not forwarded.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// Not the MCP path (404).
    NotFound,
    /// Not POST, GET, DELETE or OPTIONS (405).
    MethodNotAllowed,
    /// An `Origin` that the policy does not allow (403).
    OriginNotAllowed(String),
    /// No valid credentials (401).
    Unauthenticated(AuthError),
    /// Authenticated, but with no allowed role (403).
    InsufficientRole(Vec<String>),
    /// Over the rate limit (429).
    RateLimited(Duration),
    /// A POST whose body is not `application/json` (415).
    UnsupportedMediaType(String),
    /// A GET or DELETE with a body (400).
    UnexpectedBody,
    /// Larger than --max-body-bytes (413).
    BodyTooLarge(usize),
    /// The body did not arrive within --body-timeout (408).
    BodyTimeout,
    /// The gateway holds as many request bytes as it may (503).
    Overloaded,
    /// Not JSON-RPC the gateway forwards (400).
    Invalid(ParseError),
    /// A `tools/call` of a tool the caller may not use (403).
    ToolDenied(Vec<String>),
    /// A method an anonymous caller may not use (403): it may initialize, ping, list, call the
    /// anonymous tools and follow their tasks; reading resources or prompts, completions and
    /// logging need credentials.
    MethodDenied(Vec<String>),
    /// No `Mcp-Session-Id` where one is needed (400).
    NoSession,
    /// A session the gateway does not know, or that ended (404, the client starts a new one).
    UnknownSession,
    /// A session of another caller (403).
    ForeignSession,
    /// As many sessions as --max-sessions (503).
    TooManySessions,
    /// The caller has --max-in-flight-per-caller requests and streams open (429).
    CallerBusy,
    /// The caller has as many stdio sessions (processes) as one caller may (429).
    CallerSessions,
    /// `tasks/get`, `tasks/result` or `tasks/cancel` of a task the gateway did not see created
    /// for this caller (400, JSON-RPC -32602 as a server answers for a task it does not have:
    /// another caller's task is indistinguishable from none).
    TaskNotFound(Vec<String>),
    /// A `tasks/list` cursor the gateway did not give this caller (400, -32602).
    InvalidCursor,
}

impl Refusal {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound | Self::UnknownSession => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::OriginNotAllowed(_)
            | Self::InsufficientRole(_)
            | Self::ToolDenied(_)
            | Self::MethodDenied(_)
            | Self::ForeignSession => StatusCode::FORBIDDEN,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) | Self::CallerBusy | Self::CallerSessions => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UnexpectedBody | Self::Invalid(_) | Self::NoSession | Self::TaskNotFound(_) | Self::InvalidCursor => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded | Self::TooManySessions => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Stable label: metric `denials_total{reason}` and the audit record's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::OriginNotAllowed(_) => "origin_not_allowed",
            Self::Unauthenticated(e) => e.reason,
            Self::InsufficientRole(_) => "forbidden_role",
            Self::RateLimited(_) => "rate_limited",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::UnexpectedBody => "unexpected_body",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::Overloaded => "overloaded",
            Self::Invalid(e) => e.reason,
            Self::ToolDenied(_) => "tool_denied",
            Self::MethodDenied(_) => "method_denied",
            Self::NoSession => "no_session",
            Self::UnknownSession => "unknown_session",
            Self::ForeignSession => "session_owner",
            Self::TooManySessions => "too_many_sessions",
            Self::CallerBusy => "caller_in_flight",
            Self::CallerSessions => "caller_sessions",
            Self::TaskNotFound(_) => "task_not_found",
            Self::InvalidCursor => "invalid_cursor",
        }
    }

    /// What the audit record says.
    pub fn detail(&self) -> String {
        match self {
            Self::OriginNotAllowed(o) => format!("origin_not_allowed: {o:?}"),
            Self::Unauthenticated(e) => e.describe(),
            Self::InsufficientRole(roles) => format!("forbidden_role: roles {roles:?} not allowed"),
            Self::UnsupportedMediaType(t) => format!("unsupported_media_type: {t:?}"),
            Self::BodyTooLarge(n) => format!("body_too_large: more than {n} bytes"),
            Self::Invalid(e) => format!("{}: {}", e.reason, e.message),
            Self::ToolDenied(tools) => format!("tool_denied: {}", tools.join(",")),
            Self::MethodDenied(methods) => format!("method_denied: {}", methods.join(",")),
            Self::ForeignSession => "session_owner: session of another caller".into(),
            Self::TaskNotFound(ids) => format!("task_not_found: {}", ids.join(",")),
            other => other.reason().to_string(),
        }
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        match self {
            Self::Invalid(e) => e.code,
            Self::NotFound | Self::MethodNotAllowed => jsonrpc::METHOD_NOT_FOUND,
            Self::UnsupportedMediaType(_)
            | Self::UnexpectedBody
            | Self::BodyTooLarge(_)
            | Self::BodyTimeout
            | Self::NoSession
            | Self::UnknownSession => jsonrpc::INVALID_REQUEST,
            Self::Overloaded | Self::TooManySessions => jsonrpc::UNAVAILABLE,
            Self::TaskNotFound(_) | Self::InvalidCursor => jsonrpc::INVALID_PARAMS,
            _ => jsonrpc::FORBIDDEN,
        }
    }

    /// The message a client reads.
    pub fn message(&self) -> String {
        match self {
            Self::NotFound => "Not Found".into(),
            Self::MethodNotAllowed => "Method Not Allowed".into(),
            Self::OriginNotAllowed(_) => "Forbidden: Origin not allowed".into(),
            Self::Unauthenticated(_) => "Unauthorized".into(),
            Self::InsufficientRole(_) => "Forbidden: no allowed role".into(),
            Self::RateLimited(_) => "Too Many Requests: rate limit exceeded".into(),
            Self::UnsupportedMediaType(_) => "Unsupported Media Type: POST bodies are application/json".into(),
            Self::UnexpectedBody => "Bad Request: GET and DELETE carry no body".into(),
            Self::BodyTooLarge(n) => format!("Request body larger than {n} bytes"),
            Self::BodyTimeout => "request body not received in time".into(),
            Self::Overloaded => "Service Unavailable: too many requests in flight".into(),
            Self::Invalid(e) => e.message.clone(),
            Self::ToolDenied(tools) => format!("Forbidden: tool {:?} is not allowed", tools.join(",")),
            Self::MethodDenied(methods) => {
                format!("Forbidden: {:?} needs credentials", methods.join(","))
            }
            Self::NoSession => "Bad Request: no valid session ID provided".into(),
            Self::UnknownSession => "Session not found".into(),
            Self::ForeignSession => "Forbidden: session of another caller".into(),
            Self::TooManySessions => "too many sessions".into(),
            Self::CallerBusy => "Too Many Requests: too many requests and streams of this caller in flight".into(),
            Self::CallerSessions => "Too Many Requests: this caller has as many sessions as it may".into(),
            Self::TaskNotFound(_) => "Invalid params: task not found".into(),
            Self::InvalidCursor => "Invalid params: invalid cursor".into(),
        }
    }

    /// The JSON-RPC error answering the request with `id` (or the parse error's own id).
    pub fn rpc_error(&self, id: Option<&Value>) -> Value {
        match self {
            Self::Invalid(e) => e.to_response(),
            _ => error_response(id, self.code(), &self.message()),
        }
    }

    /// True when the refusal ends the connection (the client must not keep sending on it).
    pub fn closes_connection(&self) -> bool {
        matches!(self, Self::Unauthenticated(_) | Self::BodyTooLarge(_) | Self::BodyTimeout | Self::Overloaded)
    }
}

/// What an admitted HTTP request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// POST, GET or DELETE on the MCP path.
    Mcp,
    /// A WebSocket upgrade on the MCP path.
    WebSocket,
    /// OPTIONS on the MCP path: a CORS preflight, answered by the gateway.
    Preflight,
    /// RFC 9728 protected resource metadata (served by the gateway).
    ResourceMetadata,
}

/// The HTTP surface.
#[derive(Clone, Debug)]
pub struct Surface {
    /// The MCP path, compared byte for byte with the request's path.
    pub mcp_path: String,
    /// Allowed origins.
    pub cors: Cors,
    /// The upstream speaks WebSocket.
    pub websocket: bool,
    /// Authentication is configured (the resource metadata exists).
    pub authn: bool,
}

/// The well-known path of the protected resource metadata.
pub const RESOURCE_METADATA: &str = "/.well-known/oauth-protected-resource";

/// Media type of a header value, lowercased, without parameters.
pub fn media_type(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Whether a Content-Type is JSON in UTF-8, the only encoding the gateway parses: a server that
/// honoured another `charset` (UTF-7, UTF-16, ...) would read other JSON than the checked one.
/// `application/json` takes no parameter but `charset`, and only `utf-8` (quoted or not).
fn is_utf8_json(value: &str) -> bool {
    let mut parts = value.split(';');
    if parts.next().is_none_or(|t| !t.trim().eq_ignore_ascii_case("application/json")) {
        return false;
    }
    parts.all(|param| {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        name.trim().eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("utf-8")
    })
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) != Some(0))
}

/// Decide on the HTTP surface: path, method, Origin, body shape. `path` is the request target's
/// path exactly as received (no decoding, no normalisation).
pub fn route(s: &Surface, method: &Method, path: &str, headers: &HeaderMap) -> Result<Route, Refusal> {
    if method == Method::GET
        && s.authn
        && (path == RESOURCE_METADATA || path.strip_prefix(RESOURCE_METADATA) == Some(s.mcp_path.as_str()))
    {
        return Ok(Route::ResourceMetadata);
    }
    if path != s.mcp_path {
        return Err(Refusal::NotFound);
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    if let Some(origin) = origins.next() {
        let origin = origin.to_str().unwrap_or("").to_string();
        if origins.next().is_some() || !s.cors.allows(&origin) {
            return Err(Refusal::OriginNotAllowed(origin));
        }
    }
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    match *method {
        Method::OPTIONS => Ok(Route::Preflight),
        Method::GET if upgrade => {
            if !s.websocket {
                return Err(Refusal::NotFound);
            }
            if has_body(headers) {
                return Err(Refusal::UnexpectedBody);
            }
            Ok(Route::WebSocket)
        }
        Method::GET | Method::DELETE => {
            if has_body(headers) {
                return Err(Refusal::UnexpectedBody);
            }
            Ok(Route::Mcp)
        }
        Method::POST => {
            let mut types = headers.get_all(header::CONTENT_TYPE).iter();
            let ct = types.next().map(|v| v.to_str().unwrap_or("").to_string());
            if types.next().is_some() || !ct.as_deref().is_some_and(is_utf8_json) {
                return Err(Refusal::UnsupportedMediaType(ct.unwrap_or_default()));
            }
            Ok(Route::Mcp)
        }
        _ => Err(Refusal::MethodNotAllowed),
    }
}

/// A body that may be forwarded.
#[derive(Clone, Debug)]
pub struct Admitted {
    /// The parsed messages (spans into the body as received).
    pub parsed: Parsed,
    /// Ids the gateway put in place of the client's (index of the message, new id text).
    pub rewrites: Vec<(usize, String)>,
    /// The same, for restoring the client's ids in the answers.
    pub ids: IdMap,
    /// The server's `tasks/list` cursors in place of the gateway's (index, JSON string).
    pub cursors: Vec<(usize, String)>,
}

impl Admitted {
    /// The bytes to forward to an HTTP or WebSocket server.
    pub fn forward(&self) -> Bytes {
        self.parsed.forward_with(&self.rewrites, &self.cursors)
    }

    /// Message `i` as the stdio line to forward.
    pub fn line(&self, i: usize) -> Vec<u8> {
        self.parsed.line_with(i, &self.rewrites, &self.cursors)
    }

    /// The id text to send for message `i` (the gateway's, when it replaced it).
    pub fn id_for(&self, i: usize) -> Option<&str> {
        self.rewrites.iter().find(|(j, _)| *j == i).map(|(_, id)| id.as_str())
    }
}

/// A body refused by [`admit`]: why, the JSON-RPC reply, and what it asked for (for the audit).
#[derive(Clone, Debug, PartialEq)]
pub struct Denied {
    /// Why.
    pub refusal: Refusal,
    /// The JSON-RPC answer (an error, or an array of errors for a batch).
    pub reply: Value,
    /// The method (label), when the body could be parsed.
    pub method: Option<String>,
    /// The tools named, when the body could be parsed.
    pub tool: Option<String>,
}

/// A new id for a request whose answer the gateway must recognise: unguessable (a client cannot
/// pick it in advance) and unique.
pub(crate) fn gateway_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| crate::stdio::new_session_id()[..12].to_string());
    format!("mcpgw-{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Decide on a body (a POST's, or a WebSocket text frame): parse it strictly, check every message
/// (batches element by element, notifications like requests) against the caller's tool access
/// (and, for an `anonymous` caller, the methods it may use), and give ids the gateway controls to
/// a restricted caller's `tools/list` requests (every request when `rewrite_all`, as the stdio
/// bridge matches every answer itself).
pub fn admit(
    body: Bytes,
    max_batch: usize,
    access: &ToolAccess,
    anonymous: bool,
    rewrite_all: bool,
    tasks: Option<&TaskBinding>,
) -> Result<Admitted, Box<Denied>> {
    let parsed = jsonrpc::parse(body, max_batch).map_err(|e| {
        Box::new(Denied { reply: e.to_response(), refusal: Refusal::Invalid(e), method: None, tool: None })
    })?;
    let methods = if anonymous { denied_to_anonymous(&parsed) } else { vec![] };
    let tools = denied_tools(&parsed, access);
    let foreign_tasks = tasks.map(|t| t.not_owned(&parsed)).unwrap_or_default();
    // A cursor is the gateway's, given to this caller, and goes to the server as the server's.
    let mut cursors = vec![];
    let mut bad_cursor = false;
    for (i, m) in parsed.messages.iter().enumerate() {
        if let (Some(t), Some((token, _))) = (tasks, &m.cursor) {
            match t.cursors.server_cursor(token, &t.owner) {
                Some(c) => cursors.push((i, Value::String(c).to_string())),
                None => bad_cursor = true,
            }
        }
    }
    let refusal = if !methods.is_empty() {
        Some(Refusal::MethodDenied(methods))
    } else if !tools.is_empty() {
        Some(Refusal::ToolDenied(tools))
    } else if !foreign_tasks.is_empty() {
        Some(Refusal::TaskNotFound(foreign_tasks))
    } else if bad_cursor {
        Some(Refusal::InvalidCursor)
    } else {
        None
    };
    if let Some(refusal) = refusal {
        // One error per request (an array for a batch), each echoing its request's id.
        let errors: Vec<Value> = parsed.requests().map(|m| refusal.rpc_error(m.id.as_ref())).collect();
        let reply = if parsed.batch { Value::Array(errors) } else { errors.into_iter().next().unwrap_or(Value::Null) };
        return Err(Box::new(Denied {
            refusal,
            reply,
            method: Some(parsed.method_label()),
            tool: parsed.tool_label(),
        }));
    }
    let mut rewrites = vec![];
    let mut ids = IdMap::default();
    if access.is_restricted() || rewrite_all {
        for (i, m) in parsed.messages.iter().enumerate() {
            if m.kind == Kind::Request && (rewrite_all || m.is_tool_list()) {
                let id = gateway_id();
                rewrites.push((i, Value::String(id.clone()).to_string()));
                ids.entries.push((id, m.id.clone().unwrap_or(Value::Null)));
            }
        }
    }
    Ok(Admitted { parsed, rewrites, ids, cursors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn surface() -> Surface {
        Surface {
            mcp_path: "/mcp".into(),
            cors: Cors { allowed_origins: vec!["https://app.example.com".into()] },
            websocket: false,
            authn: true,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn post(path: &str) -> Result<Route, Refusal> {
        route(&surface(), &Method::POST, path, &headers(&[("content-type", "application/json")]))
    }

    #[test]
    fn only_the_exact_mcp_path_is_served() {
        assert_eq!(post("/mcp"), Ok(Route::Mcp));
        for path in [
            "/mcp/",
            "/MCP",
            "/Mcp",
            "//mcp",
            "/./mcp",
            "/mcp/../mcp",
            "/%6dcp",
            "/mcp;x=1",
            "/mcp%2f",
            "/admin",
            "/mcp/../admin",
            "/internal/debug",
            "/",
            "",
            "/mcp/x",
            "/mcp%00",
            "/m%63p",
        ] {
            assert_eq!(post(path), Err(Refusal::NotFound), "{path:?}");
        }
    }

    #[test]
    fn methods() {
        let h = headers(&[]);
        for m in ["PUT", "PATCH", "HEAD", "TRACE", "CONNECT", "PROPFIND", "FOO"] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(route(&surface(), &m, "/mcp", &h), Err(Refusal::MethodNotAllowed), "{m}");
        }
        assert_eq!(route(&surface(), &Method::OPTIONS, "/mcp", &h), Ok(Route::Preflight));
        assert_eq!(route(&surface(), &Method::GET, "/mcp", &h), Ok(Route::Mcp));
        assert_eq!(route(&surface(), &Method::DELETE, "/mcp", &h), Ok(Route::Mcp));
        // A method override header changes nothing.
        let over = headers(&[("x-http-method-override", "POST"), ("content-length", "0")]);
        assert_eq!(route(&surface(), &Method::PUT, "/mcp", &over), Err(Refusal::MethodNotAllowed));
        // GET and DELETE with a body are refused, whatever the body says.
        for m in [Method::GET, Method::DELETE] {
            for h in [headers(&[("content-length", "60")]), headers(&[("transfer-encoding", "chunked")])] {
                assert_eq!(route(&surface(), &m, "/mcp", &h), Err(Refusal::UnexpectedBody), "{m}");
            }
        }
        // The resource metadata is the gateway's own.
        assert_eq!(route(&surface(), &Method::GET, RESOURCE_METADATA, &h), Ok(Route::ResourceMetadata));
        assert_eq!(
            route(&surface(), &Method::GET, "/.well-known/oauth-protected-resource/mcp", &h),
            Ok(Route::ResourceMetadata)
        );
        assert_eq!(route(&surface(), &Method::POST, RESOURCE_METADATA, &h), Err(Refusal::NotFound));
    }

    #[test]
    fn content_types() {
        for ct in ["application/json", "Application/JSON", "application/json; charset=utf-8", " APPLICATION/json "] {
            let h = headers(&[("content-type", ct)]);
            assert_eq!(route(&surface(), &Method::POST, "/mcp", &h), Ok(Route::Mcp), "{ct}");
        }
        for ct in ["application/json;charset=UTF-8", "application/json; charset=\"utf-8\""] {
            let h = headers(&[("content-type", ct)]);
            assert_eq!(route(&surface(), &Method::POST, "/mcp", &h), Ok(Route::Mcp), "{ct}");
        }
        // Another charset would make a server that honours it read other JSON than the checked
        // one (UTF-7's `+ACI-` is a quote): refused, as is any other parameter or a second header.
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "application/jsonx",
            "application/json; charset=utf-7",
            "application/json; charset=utf-7-imap",
            "application/json; charset=utf-16le",
            "application/json; charset=latin1",
            "application/json; charset=",
            "application/json; charset=utf-8; charset=utf-7",
            "application/json; boundary=x",
            "application/json;",
        ] {
            let h = headers(&[("content-type", ct)]);
            assert!(
                matches!(route(&surface(), &Method::POST, "/mcp", &h), Err(Refusal::UnsupportedMediaType(_))),
                "{ct}"
            );
        }
        assert!(matches!(
            route(&surface(), &Method::POST, "/mcp", &headers(&[])),
            Err(Refusal::UnsupportedMediaType(_))
        ));
        let two = headers(&[("content-type", "application/json"), ("content-type", "application/json; charset=utf-7")]);
        assert!(matches!(route(&surface(), &Method::POST, "/mcp", &two), Err(Refusal::UnsupportedMediaType(_))));
    }

    #[test]
    fn origins() {
        let with = |o: &str| headers(&[("content-type", "application/json"), ("origin", o)]);
        assert_eq!(route(&surface(), &Method::POST, "/mcp", &with("https://app.example.com")), Ok(Route::Mcp));
        for o in ["http://evil.example", "null", "https://app.example.com.evil.example", ""] {
            assert!(
                matches!(route(&surface(), &Method::POST, "/mcp", &with(o)), Err(Refusal::OriginNotAllowed(_))),
                "{o}"
            );
            assert!(matches!(route(&surface(), &Method::OPTIONS, "/mcp", &with(o)), Err(Refusal::OriginNotAllowed(_))));
        }
        let two = headers(&[
            ("content-type", "application/json"),
            ("origin", "https://app.example.com"),
            ("origin", "http://evil.example"),
        ]);
        assert!(matches!(route(&surface(), &Method::POST, "/mcp", &two), Err(Refusal::OriginNotAllowed(_))));
    }

    #[test]
    fn websocket_upgrades_only_where_the_upstream_is_one() {
        let h = headers(&[("upgrade", "websocket"), ("connection", "Upgrade")]);
        assert_eq!(route(&surface(), &Method::GET, "/mcp", &h), Err(Refusal::NotFound));
        let ws = Surface { websocket: true, ..surface() };
        assert_eq!(route(&ws, &Method::GET, "/mcp", &h), Ok(Route::WebSocket));
        assert_eq!(route(&ws, &Method::GET, "/mcp/", &h), Err(Refusal::NotFound));
    }

    fn body(v: &Value) -> Bytes {
        Bytes::from(v.to_string())
    }

    #[test]
    fn tool_calls_are_checked_whatever_their_framing() {
        let dev = ToolAccess::Only(vec!["echo".into()]);
        let call = |id: Value, tool: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool}});
        assert!(admit(body(&call(json!(1), "echo")), 8, &dev, false, false, None).is_ok());
        assert_eq!(
            admit(body(&call(json!(1), "get-env")), 8, &dev, false, false, None).unwrap_err().refusal,
            Refusal::ToolDenied(vec!["get-env".into()])
        );
        let batch = json!([call(json!(1), "echo"), call(json!(2), "get-env")]);
        assert_eq!(admit(body(&batch), 8, &dev, false, false, None).unwrap_err().refusal.reason(), "tool_denied");
        let note = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "get-env"}});
        assert_eq!(admit(body(&note), 8, &dev, false, false, None).unwrap_err().refusal.reason(), "invalid_request");
        let dup = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-env","name":"echo"}}"#,
        );
        assert_eq!(admit(dup, 8, &dev, false, false, None).unwrap_err().refusal.reason(), "invalid_request");
        let spelled = json!({"jsonrpc": "2.0", "id": 1, "method": "Tools/Call", "params": {"name": "get-env"}});
        assert_eq!(admit(body(&spelled), 8, &dev, false, false, None).unwrap_err().refusal.reason(), "unknown_method");
    }

    #[test]
    fn an_anonymous_caller_may_initialize_ping_list_and_call_its_tools_only() {
        let anon = ToolAccess::Only(vec!["get-sum".into()]);
        let req = |method: &str| json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}});
        for method in ["initialize", "ping", "tools/list", "resources/list", "resources/templates/list", "prompts/list"]
        {
            assert!(admit(body(&req(method)), 8, &anon, true, false, None).is_ok(), "{method}");
        }
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get-sum"}});
        assert!(admit(body(&call), 8, &anon, true, false, None).is_ok());
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert!(admit(body(&note), 8, &anon, true, false, None).is_ok());
        for method in
            ["resources/read", "resources/subscribe", "prompts/get", "completion/complete", "logging/setLevel"]
        {
            let denied = admit(body(&req(method)), 8, &anon, true, false, None).unwrap_err();
            assert_eq!(denied.refusal, Refusal::MethodDenied(vec![method.into()]), "{method}");
            assert_eq!(denied.refusal.status(), StatusCode::FORBIDDEN);
            assert_eq!(denied.reply["id"], 1, "the JSON-RPC error answers the request");
            // A caller with credentials may.
            assert!(admit(body(&req(method)), 8, &anon, false, false, None).is_ok(), "{method}");
        }
        // Inside a batch too, and before any tool check.
        let mut read = req("resources/read");
        read["id"] = json!(2);
        let batch = json!([req("ping"), read]);
        assert_eq!(admit(body(&batch), 8, &anon, true, false, None).unwrap_err().refusal.reason(), "method_denied");
    }

    #[test]
    fn restricted_tool_lists_get_gateway_ids_and_nothing_else_changes() {
        let dev = ToolAccess::Only(vec!["echo".into()]);
        let text = r#"[{"jsonrpc":"2.0","id":1.0,"method":"tools/list"},{"jsonrpc":"2.0","id":"p","method":"ping"}]"#;
        let a = admit(Bytes::from_static(text.as_bytes()), 8, &dev, false, false, None).unwrap();
        assert_eq!(a.rewrites.len(), 1);
        let forwarded: Value = serde_json::from_slice(&a.forward()).unwrap();
        let gw_id = forwarded[0]["id"].as_str().unwrap().to_string();
        assert!(gw_id.starts_with("mcpgw-"), "{gw_id}");
        assert_eq!(forwarded[1]["id"], "p");
        assert_eq!(a.ids.entries, vec![(gw_id, json!(1.0))]);
        let all = admit(Bytes::from_static(text.as_bytes()), 8, &ToolAccess::All, false, false, None).unwrap();
        assert_eq!(all.forward(), text.as_bytes(), "an unrestricted caller's bytes pass untouched");
        let bridged = admit(Bytes::from_static(text.as_bytes()), 8, &ToolAccess::All, false, true, None).unwrap();
        assert_eq!(bridged.rewrites.len(), 2, "the bridge gets a gateway id for every request");
        assert_eq!(bridged.ids.entries[1].1, json!("p"));
    }

    #[test]
    fn one_mapping_for_every_refusal() {
        let all = [
            Refusal::NotFound,
            Refusal::MethodNotAllowed,
            Refusal::OriginNotAllowed("x".into()),
            Refusal::Unauthenticated(AuthError::new("missing_credentials", "none")),
            Refusal::InsufficientRole(vec![]),
            Refusal::RateLimited(Duration::from_secs(1)),
            Refusal::UnsupportedMediaType("text/plain".into()),
            Refusal::UnexpectedBody,
            Refusal::BodyTooLarge(1),
            Refusal::BodyTimeout,
            Refusal::Overloaded,
            Refusal::ToolDenied(vec!["x".into()]),
            Refusal::NoSession,
            Refusal::UnknownSession,
            Refusal::ForeignSession,
            Refusal::TooManySessions,
            Refusal::CallerBusy,
            Refusal::CallerSessions,
            Refusal::TaskNotFound(vec!["t".into()]),
            Refusal::InvalidCursor,
        ];
        for r in all {
            assert!(r.status().is_client_error() || r.status().is_server_error(), "{r:?}");
            let e = r.rpc_error(Some(&json!(5)));
            assert_eq!(e["id"], 5);
            assert!(e["error"]["code"].as_i64().unwrap() < 0);
            assert!(!r.reason().is_empty() && !r.detail().is_empty());
        }
    }

    #[test]
    fn a_task_of_another_caller_is_not_found() {
        let table = std::sync::Arc::new(crate::owners::OwnerTable::new(8, 8, Duration::from_secs(60)));
        table.bind("t-alice", "jwt:sub:alice");
        let bob = TaskBinding::new(table, "jwt:sub:bob");
        let get = |id: Value, task: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tasks/result", "params": {"taskId": task}});
        let denied = admit(body(&get(json!(9), "t-alice")), 8, &ToolAccess::All, false, false, Some(&bob)).unwrap_err();
        assert_eq!(denied.refusal, Refusal::TaskNotFound(vec!["t-alice".into()]));
        assert_eq!(denied.refusal.status(), StatusCode::BAD_REQUEST);
        assert_eq!(denied.reply["id"], 9);
        assert_eq!(denied.reply["error"]["code"], jsonrpc::INVALID_PARAMS);
        // The same answer as for a task nobody has.
        let none = admit(body(&get(json!(9), "t-none")), 8, &ToolAccess::All, false, false, Some(&bob)).unwrap_err();
        assert_eq!(none.reply["error"], denied.reply["error"]);
        // In a batch, the whole batch.
        let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, get(json!(2), "t-alice")]);
        let denied = admit(body(&batch), 8, &ToolAccess::All, false, false, Some(&bob)).unwrap_err();
        assert_eq!(denied.refusal.reason(), "task_not_found");
        assert_eq!(denied.reply.as_array().map(Vec::len), Some(2));
        // Alice's own, and anything without a binding (no authentication: nobody to tell apart).
        let alice = TaskBinding { owner: "jwt:sub:alice".into(), ..bob };
        assert!(admit(body(&get(json!(3), "t-alice")), 8, &ToolAccess::All, false, false, Some(&alice)).is_ok());
        assert!(admit(body(&get(json!(3), "t-alice")), 8, &ToolAccess::All, false, false, None).is_ok());
    }

    #[test]
    fn task_list_cursors_are_the_gateways_and_the_server_gets_its_own() {
        let table = std::sync::Arc::new(crate::owners::OwnerTable::new(8, 8, Duration::from_secs(60)));
        let bob = TaskBinding::new(table, "jwt:sub:bob");
        let token = bob.cursors.issue(&bob.owner, "t-alice");
        let list = |cursor: &str| {
            body(&json!({"jsonrpc": "2.0", "id": 4, "method": "tasks/list", "params": {"cursor": cursor}}))
        };
        let a = admit(list(&token), 8, &ToolAccess::All, false, false, Some(&bob)).unwrap();
        let forwarded: Value = serde_json::from_slice(&a.forward()).unwrap();
        assert_eq!(forwarded["params"]["cursor"], "t-alice", "the server's cursor back");
        let line: Value = serde_json::from_slice(&a.line(0)).unwrap();
        assert_eq!(line["params"]["cursor"], "t-alice", "on the stdio line too");
        // A cursor the gateway never gave, or gave another caller, is refused.
        let e = admit(list("t-alice"), 8, &ToolAccess::All, false, false, Some(&bob)).unwrap_err();
        assert_eq!((e.refusal.clone(), e.reply["error"]["code"].clone()), (Refusal::InvalidCursor, json!(-32602)));
        let alice = TaskBinding { owner: "jwt:sub:alice".into(), ..bob.clone() };
        assert!(admit(list(&token), 8, &ToolAccess::All, false, false, Some(&alice)).is_err());
        // Without a binding (no authentication) the cursor is the server's business.
        let a = admit(list("t-alice"), 8, &ToolAccess::All, false, false, None).unwrap();
        assert_eq!(a.forward(), list("t-alice"));
    }
}
