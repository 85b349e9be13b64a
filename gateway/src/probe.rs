//! MCP-level health: an `initialize` handshake (and `tools/list`) with the server, repeated
//! periodically. Readiness is "the last handshake succeeded"; the status document is the server's
//! identity, capabilities and tool names from it. The handshake messages are typed with the
//! official MCP Rust SDK's model (rmcp).

use crate::metrics::Metrics;
use crate::proxy::{full, HttpUpstream, SESSION_HEADER};
use crate::stdio::{Bridge, Session};
use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use http::{header, Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;
use mcp_gateway_contract::status::{GatewayInfo, StatusDocument};
use rmcp::model::{ClientCapabilities, Implementation, InitializeRequestParams, InitializeResult, ProtocolVersion};
use serde_json::{json, Value};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Longest a whole check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer read.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// User-Agent of the health checks (so that servers and tests can tell them apart).
pub const PROBE_AGENT: &str = concat!("mcp-gateway-probe/", env!("CARGO_PKG_VERSION"));
/// Most tools/list pages followed.
const MAX_PAGES: usize = 20;

/// What the gateway talks to.
pub enum Target {
    /// Streamable HTTP.
    Http(Arc<HttpUpstream>),
    /// WebSocket.
    Ws(String),
    /// stdio children.
    Stdio(Arc<Bridge>),
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum Channel {
    Http { up: Arc<HttpUpstream>, session: Option<String>, version: Option<String> },
    Ws(Box<WsStream>),
    Stdio(Arc<Session>),
}

/// Read JSON-RPC messages from an SSE body until the one with `id`.
async fn sse_until(mut body: hyper::body::Incoming, id: &Value) -> anyhow::Result<Value> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
        if buf.len() > MAX_ANSWER {
            bail!("event stream answer too large");
        }
        let text = String::from_utf8_lossy(&buf).replace("\r\n", "\n");
        for event in text.split("\n\n") {
            let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            if let Ok(v) = serde_json::from_str::<Value>(&data.join("\n")) {
                if v.get("id") == Some(id) {
                    return Ok(v);
                }
            }
        }
        if body.is_end_stream() {
            break;
        }
    }
    bail!("stream ended without the answer")
}

impl Channel {
    async fn post(&mut self, msg: &Value) -> anyhow::Result<Option<Value>> {
        let Channel::Http { up, session, version } = self else { unreachable!() };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{}", up.origin, up.path))
            .header(header::USER_AGENT, PROBE_AGENT)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream");
        if let Some(s) = session {
            req = req.header(SESSION_HEADER, s.as_str());
        }
        if let Some(v) = version {
            req = req.header("mcp-protocol-version", v.as_str());
        }
        let resp = up.client.request(req.body(full(msg.to_string()))?).await.context("POST to the MCP server")?;
        let status = resp.status();
        if let Some(s) = resp.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
            *session = Some(s.to_string());
        }
        if !status.is_success() {
            bail!("the MCP server answered {status}");
        }
        let Some(id) = msg.get("id") else { return Ok(None) };
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if is_sse {
            return sse_until(resp.into_body(), id).await.map(Some);
        }
        let body = Limited::new(resp.into_body(), MAX_ANSWER).collect().await.map_err(|e| anyhow!("{e}"))?.to_bytes();
        Ok(Some(serde_json::from_slice(&body).context("answer is not JSON")?))
    }

    async fn call(&mut self, msg: Value) -> anyhow::Result<Value> {
        let answer = match self {
            Channel::Http { .. } => self.post(&msg).await?.ok_or_else(|| anyhow!("no answer"))?,
            Channel::Ws(ws) => {
                ws.send(Message::text(msg.to_string())).await?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            let v: Value = serde_json::from_str(t.as_str())?;
                            if v.get("id") == msg.get("id") && v.get("method").is_none() {
                                break v;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.into()),
                        None => bail!("WebSocket closed"),
                    }
                }
            }
            Channel::Stdio(s) => s.request(&msg).await?,
        };
        if let Some(err) = answer.get("error") {
            bail!("{} failed: {err}", msg["method"]);
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    async fn notify(&mut self, msg: Value) -> anyhow::Result<()> {
        match self {
            Channel::Http { .. } => self.post(&msg).await.map(|_| ()),
            Channel::Ws(ws) => Ok(ws.send(Message::text(msg.to_string())).await?),
            Channel::Stdio(s) => Ok(s.send(&msg).await?),
        }
    }

    async fn close(self) {
        match self {
            Channel::Http { up, session: Some(s), version } => {
                let mut req = Request::builder()
                    .method(Method::DELETE)
                    .uri(format!("{}{}", up.origin, up.path))
                    .header(header::USER_AGENT, PROBE_AGENT)
                    .header(SESSION_HEADER, s);
                if let Some(v) = version {
                    req = req.header("mcp-protocol-version", v);
                }
                if let Ok(req) = req.body(crate::proxy::empty()) {
                    let _ = up.client.request(req).await;
                }
            }
            Channel::Http { .. } => {}
            Channel::Ws(mut ws) => {
                let _ = SinkExt::close(&mut ws).await;
            }
            Channel::Stdio(s) => s.terminate().await,
        }
    }
}

/// Run the handshake; what the status document says of the server.
async fn handshake(ch: &mut Channel) -> anyhow::Result<StatusDocument> {
    let params = InitializeRequestParams::new(
        ClientCapabilities::default(),
        Implementation::new("mcp-gateway", env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    let result = ch.call(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})).await?;
    let init: InitializeResult = serde_json::from_value(result).context("initialize result")?;
    if let Channel::Http { version, .. } = ch {
        *version = Some(init.protocol_version.to_string());
    }
    ch.notify(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
    let mut tools = vec![];
    if init.capabilities.tools.is_some() {
        let mut cursor: Option<Value> = None;
        for page in 0..MAX_PAGES {
            let params = cursor.as_ref().map(|c| json!({"cursor": c})).unwrap_or_else(|| json!({}));
            let result =
                ch.call(json!({"jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params})).await?;
            tools.extend(
                result
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.get("name")?.as_str().map(str::to_string)),
            );
            cursor = result.get("nextCursor").filter(|c| !c.is_null()).cloned();
            if cursor.is_none() {
                break;
            }
        }
    }
    Ok(StatusDocument {
        name: Some(init.server_info.name),
        title: init.server_info.title,
        version: Some(init.server_info.version),
        protocol_version: Some(init.protocol_version.to_string()),
        capabilities: serde_json::to_value(&init.capabilities).ok(),
        tools,
        ..Default::default()
    })
}

async fn check(target: &Target) -> anyhow::Result<StatusDocument> {
    let mut ch = match target {
        Target::Http(up) => Channel::Http { up: up.clone(), session: None, version: None },
        Target::Ws(url) => {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = url.as_str().into_client_request()?;
            req.headers_mut().insert(header::USER_AGENT, http::HeaderValue::from_static(PROBE_AGENT));
            Channel::Ws(Box::new(tokio_tungstenite::connect_async(req).await.context("WebSocket connect")?.0))
        }
        Target::Stdio(bridge) => Channel::Stdio(bridge.spawn_probe()?),
    };
    let result = handshake(&mut ch).await;
    ch.close().await;
    result
}

#[derive(Default)]
struct State {
    ready: bool,
    error: Option<String>,
    status: Option<StatusDocument>,
    checked_at: Option<String>,
}

/// Readiness and the status document.
pub struct Health {
    state: RwLock<State>,
    draining: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
    name: String,
}

impl Health {
    /// Not ready until the first handshake succeeds.
    pub fn new(name: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { state: RwLock::default(), draining: Default::default(), metrics, name: name.to_string() })
    }

    /// The last handshake succeeded, and the pod is not being drained.
    pub fn ready(&self) -> bool {
        !self.is_draining() && self.state.read().unwrap_or_else(|e| e.into_inner()).ready
    }

    /// Why not ready.
    pub fn error(&self) -> Option<String> {
        if self.is_draining() {
            return Some("draining: the pod is shutting down".into());
        }
        self.state.read().unwrap_or_else(|e| e.into_inner()).error.clone()
    }

    /// From now on not ready (the pod is going away).
    pub fn start_draining(&self) {
        if !self.draining.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::info!("draining: readiness off, still serving until SIGTERM");
        }
    }

    /// Whether the pod is draining (a `/drain` arrived).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The status document: the server's identity and tools (from the last successful
    /// handshake), whether it is ready now, and the gateway's own name and version.
    pub fn status(&self) -> StatusDocument {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        StatusDocument {
            ready: s.ready,
            error: s.error.clone(),
            checked_at: s.checked_at.clone(),
            gateway: GatewayInfo { name: self.name.clone(), version: env!("CARGO_PKG_VERSION").to_string() },
            ..s.status.clone().unwrap_or_default()
        }
    }

    /// Run one check now.
    pub async fn check_once(&self, target: &Target) -> bool {
        let result = tokio::time::timeout(CHECK_TIMEOUT, check(target))
            .await
            .unwrap_or_else(|_| Err(anyhow!("handshake timed out")));
        let now = jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).ok();
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        let was_ready = s.ready;
        s.checked_at = now;
        match result {
            Ok(doc) => {
                self.metrics.set_known_tools(&doc.tools);
                if !was_ready {
                    tracing::info!(server = ?doc.name, tools = doc.tools.len(), "MCP handshake with the server succeeded");
                }
                s.ready = true;
                s.error = None;
                s.status = Some(doc);
            }
            Err(e) => {
                if was_ready || s.error.is_none() {
                    tracing::warn!(error = %format!("{e:#}"), "MCP handshake with the server failed");
                }
                s.ready = false;
                s.error = Some(format!("{e:#}"));
            }
        }
        self.metrics.upstream_ready.set(i64::from(s.ready));
        s.ready
    }

    /// Check now and then every `interval` (backing off from 1 s while failing).
    pub fn spawn(self: &Arc<Self>, target: Target, interval: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut retry = Duration::from_millis(500);
            loop {
                let ok = this.check_once(&target).await;
                let wait = if ok {
                    retry = Duration::from_millis(500);
                    interval
                } else {
                    retry = (retry * 2).min(interval.max(Duration::from_secs(1)));
                    retry
                };
                tokio::time::sleep(wait).await;
            }
        });
    }
}
