//! The gateway benchmark (`hack/bench-gateway.sh`, i.e. `cargo bench -p mcp-gateway --bench gateway
//! -- --test --nocapture`): on loopback, in one run,
//!   - added latency (p50/p99) and throughput of `mcp-gateway --upstream` in front of
//!     `@modelcontextprotocol/server-everything` over Streamable HTTP, versus the server directly,
//!     with no policy and with a JWT + RBAC + rate limit + audit policy;
//!   - the stdio bridge (`mcp-gateway --stdio`) versus `supergateway` (npm) and `mcp-proxy` (PyPI),
//!     each exposing server-everything's stdio transport as Streamable HTTP;
//!   - for reference, the gateway in front of a minimal in-process Rust MCP stub (JSON answers), which
//!     shows the gateway's own cost without the Node.js server's.
//!
//! Every target gets the same client and the same requests: one initialized MCP session, then
//! `tools/call echo` (the server answers each POST with a one-event SSE body). Latency: one
//! keep-alive connection, requests one after another. Throughput: `CONNECTIONS` keep-alive
//! connections on the same session, as many requests as complete within the time bound. Counts
//! and durations are bounded; the run stops by itself and prints a markdown table.
//!
//! Built with the libtest harness (Cargo's default for benches), so the benchmark is a `#[test]`:
//! `cargo bench` runs it only with `-- --test`. Run as a plain test (`cargo test --benches`) it does
//! a short smoke run of the same code with small counts.

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::{claims, free_port, hs256, jwt_auth, policy, rbac, tempdir, Proc};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Requests before measuring, per target.
    warmup: usize,
    /// Latency is measured per group of targets compared with each other (the HTTP ones, the stdio
    /// ones), round-robin: each iteration sends one request to every target of the group, so load
    /// from elsewhere on a shared machine hits all of them alike. Iterations per group:
    latency_iterations: usize,
    /// Upper bound on one group's latency phase.
    latency_time: Duration,
    /// Throughput: concurrent connections; per target `slices` slices of at most
    /// `slice_requests` requests or `slice_time`, the targets of a group taking turns slice by slice
    /// (again so that outside load hits them alike).
    connections: usize,
    slices: usize,
    slice_requests: usize,
    slice_time: Duration,
}

const FULL: Plan = Plan {
    warmup: 300,
    latency_iterations: 3000,
    latency_time: Duration::from_secs(20),
    connections: 8,
    slices: 5,
    slice_requests: 10_000,
    slice_time: Duration::from_secs(1),
};

const SMOKE: Plan = Plan {
    warmup: 20,
    latency_iterations: 100,
    latency_time: Duration::from_secs(5),
    connections: 4,
    slices: 2,
    slice_requests: 200,
    slice_time: Duration::from_millis(500),
};

const PROTOCOL: &str = "2025-06-18";
const ECHO: &str = "hello from the benchmark";

// ---------------------------------------------------------------- targets

/// An MCP endpoint under test and the header it needs, if any.
#[derive(Clone)]
struct Target {
    name: &'static str,
    host: String,
    path: String,
    auth: Option<String>,
    /// serverInfo.name expected from initialize.
    server: &'static str,
}

/// A started MCP session on a target.
#[derive(Clone)]
struct Session {
    target: Target,
    id: Option<String>,
    next_id: Arc<AtomicU64>,
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    host: String,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(host: &str) -> Conn {
        Conn { host: host.to_string(), sender: None }
    }

    async fn post(&mut self, s: &Session, body: Bytes) -> Result<(StatusCode, Option<String>, Bytes), String> {
        if self.sender.as_ref().is_none_or(|c| c.is_closed()) {
            let tcp = TcpStream::connect(&self.host).await.map_err(|e| format!("connect: {e}"))?;
            tcp.set_nodelay(true).ok();
            let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().unwrap();
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut req = Request::post(&s.target.path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(id) = &s.id {
            req = req.header("mcp-session-id", id).header("mcp-protocol-version", PROTOCOL);
        }
        if let Some(a) = &s.target.auth {
            req = req.header("authorization", a);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let work = async {
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let sid = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, sid, body))
        };
        match tokio::time::timeout(Duration::from_secs(10), work).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err("timeout".into())
            }
        }
    }
}

/// The JSON-RPC message in a JSON or a (one-event) SSE body.
fn message(body: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Some(v);
    }
    text.lines().filter_map(|l| l.strip_prefix("data:")).find_map(|d| serde_json::from_str(d.trim()).ok())
}

impl Session {
    async fn start(target: &Target) -> Result<Session, String> {
        let mut s = Session { target: target.clone(), id: None, next_id: Arc::new(AtomicU64::new(1)) };
        let mut c = Conn::new(&target.host);
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench-gateway", "version": "1"}}});
        let (status, sid, body) = c.post(&s, Bytes::from(init.to_string())).await?;
        let msg = message(&body).ok_or_else(|| format!("initialize: {status} {}", String::from_utf8_lossy(&body)))?;
        if status != StatusCode::OK || msg["result"]["serverInfo"]["name"] != target.server {
            return Err(format!("initialize: {status} {msg}"));
        }
        s.id = sid;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let (status, _, _) = c.post(&s, Bytes::from(note.to_string())).await?;
        if !status.is_success() {
            return Err(format!("notifications/initialized: {status}"));
        }
        // One checked call.
        let (ok, detail) = s.echo(&mut c).await;
        if !ok {
            return Err(format!("tools/call echo: {detail}"));
        }
        Ok(s)
    }

    /// One `tools/call echo`; true when the answer is the echo.
    async fn echo(&self, c: &mut Conn) -> (bool, String) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{ECHO}"}}}}}}"#
        );
        match c.post(self, Bytes::from(body)).await {
            Ok((StatusCode::OK, _, body)) => {
                // Cheap check on the hot path: the echoed text and our id are in the body.
                let text = String::from_utf8_lossy(&body);
                let ok = text.contains(&format!("Echo: {ECHO}")) && text.contains(&format!("\"id\":{id}"));
                (ok, if ok { String::new() } else { text.chars().take(300).collect() })
            }
            Ok((status, _, body)) => (false, format!("{status} {}", String::from_utf8_lossy(&body))),
            Err(e) => (false, e),
        }
    }
}

// ---------------------------------------------------------------- measurements

#[derive(Default, Clone)]
struct Stats {
    latencies_us: Vec<f64>,
    latency_errors: usize,
    throughput: f64,
    throughput_done: usize,
    throughput_errors: usize,
    throughput_secs: f64,
    first_error: Option<String>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.latencies_us.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
        v[i.min(v.len() - 1)]
    }
    fn errors(&self) -> usize {
        self.latency_errors + self.throughput_errors
    }
}

/// Round-robin over `group` (indexes into `sessions`), one keep-alive connection per target,
/// requests one after another.
async fn latency(sessions: &[Session], group: &[usize], plan: &Plan, stats: &mut [Stats]) {
    let mut conns: Vec<Conn> = group.iter().map(|&i| Conn::new(&sessions[i].target.host)).collect();
    for (k, &i) in group.iter().enumerate() {
        for _ in 0..plan.warmup {
            sessions[i].echo(&mut conns[k]).await;
        }
    }
    let deadline = Instant::now() + plan.latency_time;
    for it in 0..plan.latency_iterations {
        if Instant::now() > deadline {
            break;
        }
        for j in 0..group.len() {
            // Rotate who goes first.
            let k = (it + j) % group.len();
            let i = group[k];
            let t = Instant::now();
            let (ok, detail) = sessions[i].echo(&mut conns[k]).await;
            let st = &mut stats[i];
            if ok {
                st.latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
            } else {
                st.latency_errors += 1;
                st.first_error.get_or_insert(detail);
            }
        }
    }
}

/// One throughput slice against one target; adds to its totals.
async fn throughput(s: &Session, plan: &Plan, st: &mut Stats) {
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let issued = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..plan.connections {
        let (s, done, errors, issued, stop, first_error) =
            (s.clone(), done.clone(), errors.clone(), issued.clone(), stop.clone(), first_error.clone());
        let cap = plan.slice_requests;
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(&s.target.host);
            while !stop.load(Ordering::Relaxed) && issued.fetch_add(1, Ordering::Relaxed) < cap {
                let (ok, detail) = s.echo(&mut c).await;
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(detail);
                }
            }
        }));
    }
    let all = futures_util::future::join_all(tasks);
    tokio::pin!(all);
    if tokio::time::timeout(plan.slice_time, &mut all).await.is_err() {
        stop.store(true, Ordering::Relaxed);
        // In-flight requests finish (each is bounded by the client timeout).
        let _ = tokio::time::timeout(Duration::from_secs(15), &mut all).await;
    }
    let secs = start.elapsed().as_secs_f64();
    st.throughput_done += done.load(Ordering::Relaxed);
    st.throughput_errors += errors.load(Ordering::Relaxed);
    st.throughput_secs += secs;
    st.throughput = st.throughput_done as f64 / st.throughput_secs;
    if st.first_error.is_none() {
        st.first_error = first_error.lock().unwrap().take();
    }
}

// ---------------------------------------------------------------- processes

struct BenchDeps {
    server_everything: PathBuf,
    supergateway: PathBuf,
    mcp_proxy: PathBuf,
}

fn bench_deps() -> BenchDeps {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/gateway-test-deps.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--bench")
        .stderr(Stdio::inherit())
        .output()
        .expect("running hack/gateway-test-deps.sh --bench");
    assert!(out.status.success(), "hack/gateway-test-deps.sh --bench failed (needs npm and python3)");
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        let p = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{k} not reported"));
        assert!(p.exists(), "{} missing", p.display());
        p
    };
    BenchDeps {
        server_everything: get("SERVER_EVERYTHING"),
        supergateway: get("SUPERGATEWAY"),
        mcp_proxy: get("MCP_PROXY"),
    }
}

fn spawn(cmd: &mut Command, what: &str) -> Proc {
    Proc(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}")),
    )
}

/// The first MCP session that works on the target (it is ready when one does).
async fn wait_session(t: &Target, within: Duration) -> Session {
    let deadline = Instant::now() + within;
    loop {
        match Session::start(t).await {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "{} not ready: {e}", t.name),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// This tree's gateway.
fn this_gateway() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp-gateway"))
}

fn gateway(policy: &Value, dir: &Path, extra: &[&str], port: u16) -> Proc {
    gateway_from(&this_gateway(), policy, dir, extra, port)
}

fn gateway_from(binary: &Path, policy: &Value, dir: &Path, extra: &[&str], port: u16) -> Proc {
    std::fs::write(dir.join("policy.json"), policy.to_string()).unwrap();
    let mut cmd = Command::new(binary);
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--policy")
        .arg(dir.join("policy.json"))
        // No readiness handshakes (in stdio mode each spawns a server) during the measurement.
        .args(["--check-interval", "3600s", "--name", "bench"])
        .args(extra)
        .env("RUST_LOG", "error");
    spawn(&mut cmd, "mcp-gateway")
}

fn target(name: &'static str, port: u16, auth: Option<String>) -> Target {
    Target { name, host: format!("127.0.0.1:{port}"), path: "/mcp".into(), auth, server: "mcp-servers/everything" }
}

// ---------------------------------------------------------------- a minimal upstream

const STUB: &str = "bench-stub";

/// The answer of the stub MCP server: initialize, tools/call echo, {} for anything else; JSON.
fn stub_answer(body: &[u8]) -> Option<String> {
    let msg: Value = serde_json::from_slice(body).ok()?;
    let id = msg.get("id")?;
    let result = match msg["method"].as_str()? {
        "initialize" => json!({"protocolVersion": PROTOCOL, "capabilities": {"tools": {}},
            "serverInfo": {"name": STUB, "version": "1"}}),
        "tools/list" => json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}),
        "tools/call" => json!({"content": [{"type": "text",
            "text": format!("Echo: {}", msg["params"]["arguments"]["message"].as_str().unwrap_or(""))}]}),
        _ => json!({}),
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())
}

/// A minimal Streamable HTTP MCP server (JSON responses) on its own thread, to show what the
/// gateway itself adds when the server behind it costs next to nothing.
fn stub_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                tcp.set_nodelay(true).ok();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let resp = http::Response::builder().header("mcp-session-id", "stub-session");
                        Ok::<_, std::convert::Infallible>(
                            match stub_answer(&body) {
                                Some(a) => {
                                    resp.header("content-type", "application/json").body(Full::new(Bytes::from(a)))
                                }
                                None => resp.status(202).body(Full::new(Bytes::new())),
                            }
                            .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
    });
    port
}

// ---------------------------------------------------------------- the run

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

#[tokio::test(flavor = "current_thread")]
async fn bench_gateway() {
    // `cargo bench` passes --bench; anything else is a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full { FULL } else { SMOKE };
    let wall = Instant::now();
    let deps = bench_deps();
    let se = deps.server_everything.display().to_string();
    let dir = tempdir("bench");
    let mut procs = vec![];

    // server-everything over Streamable HTTP, and the gateway in front of it.
    let se_port = free_port();
    procs.push(spawn(Command::new("node").arg(&se).arg("streamableHttp").env("PORT", se_port.to_string()), "node"));
    let upstream = format!("http://127.0.0.1:{se_port}/mcp");
    let gw_port = free_port();
    let d = dir.join("open");
    std::fs::create_dir_all(&d).unwrap();
    procs.push(gateway(&json!({"enabled": false}), &d, &["--upstream", &upstream], gw_port));
    // The same with a policy: HS256 JWT, a role check, a tool allow list, a rate limit, audit.
    let gwp_port = free_port();
    let d = dir.join("policy");
    std::fs::create_dir_all(&d).unwrap();
    let pol = policy(json!({
        "authentication": jwt_auth(&d, None, true),
        "authorization": rbac(&["developer"], json!({"developer": ["echo", "get-*"]})),
        "rateLimiting": {"requestsPerMinute": 60_000_000, "burstSize": 1_000_000},
    }));
    procs.push(gateway(&pol, &d, &["--upstream", &upstream], gwp_port));
    let token = format!("Bearer {}", hs256(&claims("bench", &["developer"])));

    // A minimal upstream, directly and through the gateway (no policy).
    let stub_port = stub_server();
    let gws_port = free_port();
    let d = dir.join("stub");
    std::fs::create_dir_all(&d).unwrap();
    procs.push(gateway(
        &json!({"enabled": false}),
        &d,
        &["--upstream", &format!("http://127.0.0.1:{stub_port}/mcp")],
        gws_port,
    ));

    // stdio: the bridge, supergateway, mcp-proxy, each running `node server-everything stdio`.
    let br_port = free_port();
    let d = dir.join("bridge");
    std::fs::create_dir_all(&d).unwrap();
    procs.push(gateway(
        &json!({"enabled": false}),
        &d,
        &["--stdio", "--path", "/mcp", "--max-sessions", "64", "--", "node", &se, "stdio"],
        br_port,
    ));
    let sg_port = free_port();
    procs.push(spawn(
        Command::new("node").arg(&deps.supergateway).args([
            "--stdio",
            &format!("node {se} stdio"),
            "--outputTransport",
            "streamableHttp",
            "--stateful",
            "--port",
            &sg_port.to_string(),
            "--streamableHttpPath",
            "/mcp",
            "--logLevel",
            "none",
        ]),
        "supergateway",
    ));
    let mp_port = free_port();
    procs.push(spawn(
        Command::new(&deps.mcp_proxy).args([
            "--host",
            "127.0.0.1",
            "--port",
            &mp_port.to_string(),
            "--log-level",
            "WARNING",
            "--",
            "node",
            &se,
            "stdio",
        ]),
        "mcp-proxy",
    ));

    // The baseline: another build of the gateway (hack/bench-gateway.sh builds the one before the
    // default-deny admission work), in front of the same servers, measured in the same run.
    let baseline = std::env::var_os("MCP_GATEWAY_BASELINE").map(PathBuf::from);
    let mut baseline_ports = vec![];
    if let Some(bin) = &baseline {
        for (name, policy_doc, up) in [
            ("base-open", json!({"enabled": false}), upstream.clone()),
            ("base-policy", pol.clone(), upstream.clone()),
            ("base-stub", json!({"enabled": false}), format!("http://127.0.0.1:{stub_port}/mcp")),
        ] {
            let port = free_port();
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap();
            // The policy names its secret file by path: the baseline reads the same one.
            procs.push(gateway_from(bin, &policy_doc, &d, &["--upstream", &up], port));
            baseline_ports.push(port);
        }
    }

    let mut targets = vec![
        target("direct (server-everything, Streamable HTTP)", se_port, None),
        target("gateway, no policy", gw_port, None),
        target("gateway, JWT+RBAC+rate limit+audit", gwp_port, Some(token.clone())),
        target("stdio bridge (mcp-gateway --stdio)", br_port, None),
        target("supergateway --stateful (stdio)", sg_port, None),
        target("mcp-proxy (stdio)", mp_port, None),
        Target { server: STUB, ..target("minimal Rust stub server (JSON), direct", stub_port, None) },
        Target { server: STUB, ..target("gateway, no policy, in front of the stub", gws_port, None) },
    ];
    if let [open, with_policy, stub] = baseline_ports[..] {
        targets.push(target("baseline gateway, no policy", open, None));
        targets.push(target("baseline gateway, JWT+RBAC+rate limit+audit", with_policy, Some(token.clone())));
        targets
            .push(Target { server: STUB, ..target("baseline gateway, no policy, in front of the stub", stub, None) });
    }
    let (http_group, stub_group): (Vec<usize>, Vec<usize>) =
        if baseline.is_some() { (vec![0, 1, 2, 8, 9], vec![6, 7, 10]) } else { (vec![0, 1, 2], vec![6, 7]) };
    let mut sessions = vec![];
    for t in &targets {
        sessions.push(wait_session(t, Duration::from_secs(60)).await);
    }
    let setup = wall.elapsed();
    let mut stats = vec![Stats::default(); targets.len()];
    latency(&sessions, &http_group, &plan, &mut stats).await;
    latency(&sessions, &[3, 4, 5], &plan, &mut stats).await;
    latency(&sessions, &stub_group, &plan, &mut stats).await;
    for group in [&http_group[..], &[3, 4, 5], &stub_group[..]] {
        for _ in 0..plan.slices {
            for &i in group {
                throughput(&sessions[i], &plan, &mut stats[i]).await;
            }
        }
    }
    drop(procs);

    // ---- report
    let mode = if full { "full" } else { "smoke (run with `cargo bench` for the full run)" };
    println!();
    println!(
        "## mcp-gateway benchmark ({mode}; {} cores; loopback; tools/call echo on one initialized session)\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "Latency: 1 connection per target, sequential, round-robin over the targets compared (HTTP; stdio; stub), \
         at most {} requests per target or {} s per group, after {} warm-up. Throughput: {} connections, \
         {} slices of at most {} requests or {:.1} s per target, the targets of a group taking turns.\n",
        plan.latency_iterations,
        plan.latency_time.as_secs(),
        plan.warmup,
        plan.connections,
        plan.slices,
        plan.slice_requests,
        plan.slice_time.as_secs_f64()
    );
    println!("| target | p50 ms | p99 ms | mean ms | samples | req/s | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (t, st) in targets.iter().zip(&stats) {
        let mean = st.latencies_us.iter().sum::<f64>() / st.latencies_us.len().max(1) as f64;
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} |",
            t.name,
            ms(st.pct(50.0)),
            ms(st.pct(99.0)),
            ms(mean),
            st.latencies_us.len(),
            st.throughput,
            st.errors()
        );
    }
    println!();
    println!("| comparison | added p50 | added p99 | p50 ratio | throughput ratio |");
    println!("|---|---:|---:|---:|---:|");
    let cmp = |a: usize, b: usize| {
        let (x, y) = (&stats[a], &stats[b]);
        println!(
            "| {} vs {} | {:+.3} ms | {:+.3} ms | {:.2}x | {:.2}x |",
            targets[a].name,
            targets[b].name,
            (x.pct(50.0) - y.pct(50.0)) / 1000.0,
            (x.pct(99.0) - y.pct(99.0)) / 1000.0,
            x.pct(50.0) / y.pct(50.0),
            x.throughput / y.throughput
        );
    };
    cmp(1, 0);
    cmp(2, 0);
    cmp(3, 4);
    cmp(3, 5);
    cmp(7, 6);
    if baseline.is_some() {
        // Before/after in the same run: this gateway against the baseline build.
        cmp(1, 8);
        cmp(2, 9);
        cmp(7, 10);
        cmp(8, 0);
        cmp(10, 6);
    }
    println!();
    println!("setup {:.1} s, total {:.1} s", setup.as_secs_f64(), wall.elapsed().as_secs_f64());
    for (t, st) in targets.iter().zip(&stats) {
        if let Some(e) = &st.first_error {
            println!("first error from {}: {e}", t.name);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    for (t, st) in targets.iter().zip(&stats) {
        assert!(!st.latencies_us.is_empty() && st.throughput_done > 0, "{}: no successful request", t.name);
        assert!(
            st.errors() * 100 <= st.latencies_us.len() + st.throughput_done,
            "{}: more than 1% errors ({}); first: {:?}",
            t.name,
            st.errors(),
            st.first_error
        );
    }
}
