//! Shared by the integration tests: the gateway binary as a child process, a recording MCP
//! upstream, an identity provider (JWKS + introspection), plain and TLS HTTP clients, PKI and
//! tokens, and the third-party test dependencies (installed by hack/gateway-test-deps.sh).
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

// ---------------------------------------------------------------- third-party dependencies

/// What hack/gateway-test-deps.sh installed.
pub struct Deps {
    /// server-everything's entry point (run with node).
    pub server_everything: PathBuf,
    /// Python with the `mcp` SDK.
    pub python: PathBuf,
}

/// Install (idempotent) and locate the test dependencies. Panics (fails the test) when they
/// cannot be had: these tests never skip.
pub fn deps() -> &'static Deps {
    static DEPS: OnceLock<Deps> = OnceLock::new();
    DEPS.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/gateway-test-deps.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("running hack/gateway-test-deps.sh");
        assert!(out.status.success(), "hack/gateway-test-deps.sh failed: the gateway tests need npm and python3");
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("{k} not reported"))
        };
        let d = Deps { server_everything: get("SERVER_EVERYTHING"), python: get("PYTHON") };
        assert!(d.server_everything.exists(), "{} missing", d.server_everything.display());
        assert!(d.python.exists(), "{} missing", d.python.display());
        d
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "mcp-gw-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

// ---------------------------------------------------------------- the gateway process

/// A gateway child process, killed on drop.
pub struct Gw {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
}

impl Gw {
    /// Start `mcp-gateway` with this policy document and extra arguments (e.g. --upstream ...).
    pub async fn start(policy: &Value, extra: &[String]) -> Gw {
        // Free ports are picked before the gateway binds them; another process may win the race,
        // so a gateway that exits at once is started again on other ports.
        for _ in 0..3 {
            if let Some(gw) = Self::try_start(policy, extra).await {
                return gw;
            }
        }
        panic!("mcp-gateway did not start (see its log above)");
    }

    async fn try_start(policy: &Value, extra: &[String]) -> Option<Gw> {
        let dir = tempdir("gw");
        std::fs::write(dir.join("policy.json"), policy.to_string()).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"));
        cmd.args(["--listen", &addr.to_string(), "--admin-listen", &admin.to_string()])
            .arg("--policy")
            .arg(dir.join("policy.json"))
            .arg("--audit-dir")
            .arg(dir.join("audit"))
            .args(["--name", "test-server", "--tls-reload-interval", "200ms", "--jwks-refresh-min-interval", "0s"])
            .args(extra)
            .env("RUST_LOG", std::env::var("GATEWAY_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().expect("starting mcp-gateway");
        let mut gw = Gw { child, addr, admin, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while send(Method::GET, &gw.admin_url("/healthz"), &[], None).await.map(|r| r.status) != Ok(StatusCode::OK) {
            if gw.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "gateway did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(gw)
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Wait until /readyz says ready.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = send(Method::GET, &self.admin_url("/readyz"), &[], None).await {
                if r.status == StatusCode::OK {
                    return;
                }
                assert!(Instant::now() < deadline, "gateway not ready: {}", r.body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every audit record written so far.
    pub fn audit(&self) -> Vec<Value> {
        let mut out = vec![];
        for e in std::fs::read_dir(self.dir.join("audit")).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.extend(text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()));
        }
        out
    }

    /// Wait (up to 5 s) for an audit record that satisfies `pred`.
    pub async fn audit_where(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(r) = self.audit().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(Instant::now() < deadline, "no audit record {what}; have: {:#?}", self.audit());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A denial record whose reason contains `reason`.
    pub async fn denied(&self, reason: &str, status: u16) -> Value {
        let rec = self
            .audit_where(&format!("deny {reason}"), |r| {
                r["decision"] == "deny" && r["reason"].as_str().is_some_and(|s| s.contains(reason))
            })
            .await;
        assert_eq!(rec["status"], status, "{rec}");
        for k in ["time", "identity", "method", "tool", "decision", "status", "latency_ms", "session"] {
            assert!(rec.get(k).is_some(), "audit record lacks {k}: {rec}");
        }
        rec
    }

    pub async fn metrics(&self) -> String {
        send(Method::GET, &self.admin_url("/metrics"), &[], None).await.unwrap().body
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed on drop (MCP servers started by tests).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// server-everything in Streamable HTTP mode on a free port; waits until it listens.
pub async fn server_everything_http() -> (Proc, u16) {
    listening("server-everything", |port| {
        Command::new("node")
            .arg(&deps().server_everything)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node")
    })
    .await
}

/// `tests/py/task_server.py` (the Python SDK's task support, one task store for every session)
/// in Streamable HTTP mode on a free port with these flags (`--json`: JSON answers, not SSE);
/// waits until it listens.
pub async fn python_task_server(flags: &[&str]) -> (Proc, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/task_server.py");
    listening("the Python task server", |port| {
        Command::new(&deps().python)
            .arg(&script)
            .arg(port.to_string())
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python")
    })
    .await
}

/// Starts a server with `spawn(port)` on a free port and waits until it listens (a busy machine
/// may take long to start node or python: up to a minute). Tests run in parallel, so another one
/// may take the port between `free_port` and the server's bind: a server that exits before it
/// listens is started again on another port.
async fn listening(what: &str, spawn: impl Fn(u16) -> Child) -> (Proc, u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    'start: for _ in 0..5 {
        let port = free_port();
        let mut p = Proc(spawn(port));
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if p.0.try_wait().ok().flatten().is_some() {
                continue 'start;
            }
            assert!(Instant::now() < deadline, "{what} did not listen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Whoever answered, it was not ours if ours then dies of the taken port.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if p.0.try_wait().ok().flatten().is_some() {
            continue;
        }
        return (p, port);
    }
    panic!("{what} exited five times before it listened")
}

// ---------------------------------------------------------------- HTTP clients

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        if self.headers.get("content-type").is_some_and(|c| c.to_str().unwrap_or("").starts_with("text/event-stream")) {
            let data: Vec<Value> = self
                .body
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .collect();
            return if data.len() == 1 { data[0].clone() } else { Value::Array(data) };
        }
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: Option<String>) -> Result<Resp, String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Resp { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).to_string() })
}

/// POST a JSON-RPC message to an MCP endpoint the way Streamable HTTP clients do.
pub async fn rpc(url: &str, headers: &[(&str, &str)], msg: &Value) -> Resp {
    let mut h = vec![("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
    h.extend_from_slice(headers);
    send(Method::POST, url, &h, Some(msg.to_string())).await.unwrap()
}

pub fn initialize(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}})
}

pub fn call_tool(id: Value, name: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": args}})
}

pub fn list_tools(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {}})
}

pub fn tool_names(result: &Value) -> Vec<String> {
    result["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {result}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- a recording MCP upstream

/// One request the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: String,
}

/// A tiny MCP server that records every request (except the gateway's health checks).
pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// An Accept header value that makes the recorder answer with an SSE stream.
pub const SSE_FIRST: &str = "text/event-stream, application/json";

pub const RECORDER_TOOLS: [&str; 4] = ["echo", "get-sum", "search_docs", "admin-reset"];

fn recorder_answer(msg: &Value) -> Option<Value> {
    let id = msg.get("id")?.clone();
    let method = msg.get("method")?.as_str()?;
    let result = match method {
        "initialize" => json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                                "serverInfo": {"name": "recorder", "version": "9.9.9"}}),
        "tools/list" => {
            json!({"tools": RECORDER_TOOLS.iter().map(|n| json!({"name": n, "inputSchema": {"type": "object"}})).collect::<Vec<_>>()})
        }
        // One task store for every caller (a task-augmented call creates `rec-task-<who>`).
        "tools/call" if msg["params"].get("task").is_some() => {
            json!({"task": {"taskId": format!("rec-task-{}", msg["params"]["arguments"]["who"].as_str().unwrap_or("")),
                            "status": "working"}})
        }
        "tools/call" => {
            json!({"content": [{"type": "text", "text": format!("called {}", msg["params"]["name"].as_str().unwrap_or(""))}]})
        }
        "tasks/list" => json!({"tasks": [{"taskId": "rec-task-alice"}, {"taskId": "rec-task-bob"}]}),
        _ => json!({}),
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

async fn recorder_handle(seen: Arc<Mutex<Vec<Seen>>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = String::from_utf8_lossy(&body.collect().await.map(|b| b.to_bytes()).unwrap_or_default()).to_string();
    let probe = parts
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|u| u.starts_with("mcp-gateway-probe"));
    if !probe {
        seen.lock().unwrap().push(Seen {
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    }
    // Answers as SSE when the client lists text/event-stream first (see SSE_FIRST).
    let sse = parts.headers.get_all("accept").iter().any(|v| v == SSE_FIRST);
    // A new session id for every initialize (the same one, 1, for anything else).
    static SESSIONS: AtomicUsize = AtomicUsize::new(1);
    let n = if body.contains("\"initialize\"") { SESSIONS.fetch_add(1, Ordering::SeqCst) } else { 1 };
    let mut resp = Response::builder().header("mcp-session-id", format!("rec-session-{n}"));
    let out = match parts.method {
        Method::POST => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let answers: Vec<Value> = match &v {
                Value::Array(items) => items.iter().filter_map(recorder_answer).collect(),
                m => recorder_answer(m).into_iter().collect(),
            };
            if answers.is_empty() {
                return resp.status(202).body(Full::new(Bytes::new())).unwrap();
            }
            if sse {
                resp = resp.header("content-type", "text/event-stream");
                let mut s = String::from(": opening comment\n\n");
                for a in &answers {
                    // split data over two lines to exercise the parser
                    s.push_str(&format!("id: ev-1\nevent: message\ndata: {a}\n\n"));
                }
                s
            } else {
                resp = resp.header("content-type", "application/json");
                if v.is_array() {
                    Value::Array(answers).to_string()
                } else {
                    answers[0].to_string()
                }
            }
        }
        // A GET stream replays a tools/list answer; resumed after event `tasks`, a tasks/list answer
        // and a CreateTaskResult.
        Method::GET if parts.headers.get("last-event-id").is_some_and(|v| v == "tasks") => {
            resp = resp.header("content-type", "text/event-stream");
            let list = recorder_answer(&json!({"id": "r1", "method": "tasks/list"})).unwrap();
            let call =
                json!({"id": "r2", "method": "tools/call", "params": {"task": {}, "arguments": {"who": "replayed"}}});
            let created = recorder_answer(&call).unwrap();
            format!("event: message\ndata: {list}\n\nevent: message\ndata: {created}\n\n")
        }
        Method::GET => {
            resp = resp.header("content-type", "text/event-stream");
            let list = recorder_answer(&list_tools(json!("replayed"))).unwrap();
            format!("event: message\ndata: {list}\n\n")
        }
        _ => String::new(),
    };
    resp.body(Full::new(Bytes::from(out))).unwrap()
}

/// Serve HTTP/1 on `listener` in the background, every request answered by `handle`.
fn serve<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answer = handle(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s2 = seen.clone();
        serve(listener, move |req| recorder_handle(s2.clone(), req));
        Recorder { addr, seen }
    }

    pub fn upstream_args(&self) -> Vec<String> {
        vec!["--upstream".into(), format!("http://{}/mcp", self.addr), "--check-interval".into(), "60s".into()]
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests that carry `marker` in a header value or the body.
    pub fn with_marker(&self, marker: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| {
                s.body.contains(marker) || s.headers.values().any(|v| v.to_str().is_ok_and(|v| v.contains(marker)))
            })
            .count()
    }
}

/// The tasks the WebSocket test servers created, whoever asked.
fn ws_tasks() -> &'static Mutex<Vec<String>> {
    static TASKS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    TASKS.get_or_init(Mutex::default)
}

/// A WebSocket MCP server that records the messages of non-probe connections. A `hostile` one
/// answers tools/list under an id of its own choosing and sends a frame that is not JSON. A
/// task-augmented `tools/call` creates task `ws-task-<arguments.who>`, in one store for every
/// connection, which `tasks/list` lists whole.
pub async fn ws_server(hostile: bool) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let seen = s2.clone();
            tokio::spawn(async move {
                let probe = Arc::new(Mutex::new(false));
                let p2 = probe.clone();
                // the callback's signature is tungstenite's
                #[allow(clippy::result_large_err)]
                let cb = move |req: &Request, mut resp: Response| {
                    *p2.lock().unwrap() = req
                        .headers()
                        .get("user-agent")
                        .is_some_and(|u| u.to_str().unwrap_or("").starts_with("mcp-gateway-probe"));
                    if let Some(p) = req.headers().get("sec-websocket-protocol") {
                        resp.headers_mut().insert("sec-websocket-protocol", p.clone());
                    }
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else { return };
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    if !*probe.lock().unwrap() {
                        seen.lock().unwrap().push(t.to_string());
                    }
                    let msg: Value = serde_json::from_str(t.as_str()).unwrap();
                    let Some(mut id) = msg.get("id").cloned() else { continue };
                    // A tool that never answers.
                    if msg["params"]["name"] == "hang" {
                        continue;
                    }
                    if hostile && msg["method"] == "tools/list" {
                        let _ = ws.send(Message::text("{not json: {\"tools\": [{\"name\": \"admin-reset\"}]")).await;
                        id = json!("an-id-of-my-own");
                    }
                    let result = match msg["method"].as_str().unwrap_or("") {
                        "initialize" => {
                            json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "ws-server", "version": "1.0.0"}})
                        }
                        "tools/list" => {
                            json!({"tools": [{"name": "echo", "inputSchema": {}}, {"name": "admin-reset", "inputSchema": {}}]})
                        }
                        // One task store for every connection (as the Python SDK keeps).
                        "tools/call" if msg["params"].get("task").is_some() => {
                            let id = format!("ws-task-{}", msg["params"]["arguments"]["who"].as_str().unwrap_or(""));
                            ws_tasks().lock().unwrap().push(id.clone());
                            json!({"task": {"taskId": id, "status": "completed"}})
                        }
                        "tasks/list" => {
                            let tasks = ws_tasks().lock().unwrap().clone();
                            json!({"tasks": tasks.iter().map(|t| json!({"taskId": t, "status": "completed"})).collect::<Vec<_>>()})
                        }
                        "tasks/get" => json!({"taskId": msg["params"]["taskId"], "status": "completed"}),
                        _ => json!({"content": [{"type": "text", "text": "called"}]}),
                    };
                    let _ =
                        ws.send(Message::text(json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())).await;
                }
            });
        }
    });
    (addr, seen)
}

// ---------------------------------------------------------------- identity provider

/// JWKS at /jwks and RFC 7662 introspection at /introspect.
pub struct Idp {
    pub addr: SocketAddr,
    pub jwks: Arc<Mutex<Value>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    pub introspections: Arc<AtomicUsize>,
    /// How long each introspection answer takes (ms).
    pub introspection_delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// token -> introspection answer
    pub tokens: Arc<Mutex<std::collections::HashMap<String, Value>>>,
    /// the Authorization header the last introspection carried
    pub last_auth: Arc<Mutex<Option<String>>>,
}

impl Idp {
    pub async fn start(jwks: Value) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let idp = Idp {
            addr: listener.local_addr().unwrap(),
            jwks: Arc::new(Mutex::new(jwks)),
            jwks_fetches: Arc::default(),
            introspections: Arc::default(),
            introspection_delay_ms: Arc::default(),
            tokens: Arc::default(),
            last_auth: Arc::default(),
        };
        let delay = idp.introspection_delay_ms.clone();
        let (jwks, fetches, intros, tokens, last_auth) = (
            idp.jwks.clone(),
            idp.jwks_fetches.clone(),
            idp.introspections.clone(),
            idp.tokens.clone(),
            idp.last_auth.clone(),
        );
        serve(listener, move |req: Request<Incoming>| {
            let (jwks, fetches, intros, tokens, last_auth) =
                (jwks.clone(), fetches.clone(), intros.clone(), tokens.clone(), last_auth.clone());
            let delay = Duration::from_millis(delay.load(Ordering::SeqCst));
            async move {
                let path = req.uri().path().to_string();
                let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
                let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let out = match path.as_str() {
                    "/jwks" => {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        jwks.lock().unwrap().to_string()
                    }
                    "/introspect" => {
                        intros.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        *last_auth.lock().unwrap() = auth;
                        let form = String::from_utf8_lossy(&body).to_string();
                        let token = form.split('&').find_map(|kv| kv.strip_prefix("token=")).unwrap_or("").to_string();
                        tokens.lock().unwrap().get(&token).cloned().unwrap_or(json!({"active": false})).to_string()
                    }
                    _ => "{}".into(),
                };
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(out)))
                    .unwrap()
            }
        });
        idp
    }

    pub fn jwks_uri(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }
}

// ---------------------------------------------------------------- tokens

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "mcp-test";
pub const HS_SECRET: &[u8] = b"a-test-secret-of-sufficient-length-0123456789";

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now(), "roles": roles})
}

pub fn hs256(claims: &Value) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(HS_SECRET).unwrap()).unwrap()
}

/// RS256 with fixture key `rsa-a` or `rsa-b`, header kid as given.
pub fn rs256(claims: &Value, key: &str, kid: Option<&str>) -> String {
    let pem = std::fs::read(fixture(&format!("{key}.pem"))).unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

pub fn jwk(key: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{key}.jwk.json"))).unwrap()).unwrap()
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The policy document as src/policy.rs renders it, with the given sections.
pub fn policy(sections: Value) -> Value {
    let mut p = json!({"enabled": true, "policy": "test-policy", "generation": 1, "tls": null,
        "authentication": null, "authorization": null, "rateLimiting": null,
        "audit": {"logLevel": "info", "retentionDays": 7}});
    for (k, v) in sections.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// JWT authentication (HS256 secret file and/or JWKS).
pub fn jwt_auth(dir: &Path, jwks_uri: Option<&str>, with_secret: bool) -> Value {
    let secret_file = with_secret.then(|| {
        let f = dir.join("jwt-secret");
        std::fs::write(&f, HS_SECRET).unwrap();
        f
    });
    json!({"required": true, "methods": ["jwt"], "jwt": {"issuer": ISSUER, "audiences": [AUDIENCE],
        "jwksUri": jwks_uri, "secretFile": secret_file}, "oauth2": null, "apiKeys": null, "mtls": null})
}

/// A gateway in front of `rec` with JWT (HS256 secret and the IdP's JWKS) and rbac: roles admin
/// and developer, developer limited to `echo` and `search*`; `extra` adds or replaces sections.
pub async fn jwt_gateway(rec: &Recorder, idp: &Idp, extra: Value) -> Gw {
    let dir = tempdir("jwt");
    let mut sections = json!({
        "authentication": jwt_auth(&dir, Some(&idp.jwks_uri()), true),
        "authorization": rbac(&["admin", "developer"], json!({"developer": ["echo", "search*"]})),
    });
    for (k, v) in extra.as_object().unwrap() {
        sections[k] = v.clone();
    }
    Gw::start(&policy(sections), &rec.upstream_args()).await
}

/// A gateway with this policy document in front of the WebSocket MCP server at `upstream`.
pub async fn ws_gateway(upstream: SocketAddr, policy: &Value) -> Gw {
    let upstream = format!("http://{upstream}/mcp");
    let args = ["--upstream", &upstream, "--transport", "websocket", "--check-interval", "60s"];
    Gw::start(policy, &args.map(String::from)).await
}

pub fn rbac(allowed: &[&str], tools: Value) -> Value {
    json!({"mode": "rbac", "allowedRoles": allowed, "rolesClaim": "roles", "tools": tools})
}

// ---------------------------------------------------------------- PKI and TLS clients

pub struct Pki {
    pub ca_pem: String,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap();
        Pki { ca_pem: ca.pem(), ca }
    }

    pub fn leaf(&self, cn: &str, orgs: &[&str], client: bool) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let sans = if client { vec![] } else { vec!["localhost".to_string(), "127.0.0.1".to_string()] };
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name.push(rcgen::DnType::OrganizationName, *o);
        }
        p.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.ca).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// A rustls client trusting `ca_pem`, limited to `versions`, optionally with a client cert.
pub fn tls_client(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    client: Option<&Leaf>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        Some(l) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(l.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(l.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// One HTTPS request over a fresh connection. Err when the handshake fails.
pub async fn tls_send(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Result<Resp, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", format!("localhost:{}", addr.port()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body.unwrap_or_default()))).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Resp { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).to_string() })
}

/// The certificate a TLS server presents now.
pub async fn served_cert(addr: SocketAddr, ca_pem: &str) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let cfg = tls_client(ca_pem, &[&rustls::version::TLS13], None);
    let tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}
