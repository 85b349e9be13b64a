//! Against software others wrote: the reference MCP server `@modelcontextprotocol/server-everything`
//! (npm) over Streamable HTTP through the gateway and over stdio through the bridge, driven by raw
//! Streamable HTTP requests and by the official Python SDK client (`mcp` on PyPI) with real HS256
//! and RS256 (JWKS) tokens. Dependencies come from hack/gateway-test-deps.sh; missing ones fail.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// HS256 (secret) and RS256 (JWKS) accepted; developers may use echo and get-* tools only.
fn dev_policy(dir: &std::path::Path, idp: &Idp) -> Value {
    policy(json!({
        "authentication": jwt_auth(dir, Some(&idp.jwks_uri()), true),
        "authorization": rbac(&["developer", "admin"], json!({"developer": ["echo", "get-*"]})),
        "rateLimiting": {"requestsPerMinute": 6000, "burstSize": 1000},
    }))
}

fn python_client(url: &str, token: &str, allowed: &str, denied: &str) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/mcp_client.py");
    let out = std::process::Command::new(&deps().python)
        .arg(script)
        .args([url, token, allowed, denied])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(out.stdout.trim_ascii()).expect("client output")
}

fn assert_client_result(r: &Value) {
    assert_eq!(r["server"], "mcp-servers/everything", "{r}");
    let tools: Vec<&str> = r["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tools.contains(&"echo") && tools.contains(&"get-sum"), "{tools:?}");
    assert!(
        tools.iter().all(|t| *t == "echo" || t.starts_with("get-")),
        "tools/list filtered for the developer role: {tools:?}"
    );
    assert_eq!(r["allowed"][0], "Echo: hello through the gateway");
    assert_eq!(r["denied"]["status"], 403, "a denied tool is refused with 403: {r}");
}

async fn raw_session(url: &str, auth: &str) {
    let h = [("authorization", auth)];
    let init = rpc(url, &h, &initialize(json!(1))).await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    assert_eq!(init.json()["result"]["serverInfo"]["name"], "mcp-servers/everything");
    let sid = init.header("mcp-session-id").expect("session id");
    let hs = [("authorization", auth), ("mcp-session-id", sid.as_str()), ("mcp-protocol-version", "2025-06-18")];
    let note = rpc(url, &hs, &json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    assert_eq!(note.status, StatusCode::ACCEPTED);
    let list = rpc(url, &hs, &list_tools(json!(2))).await;
    let names = tool_names(&list.json());
    assert!(
        names.contains(&"echo".to_string()) && !names.contains(&"trigger-long-running-operation".to_string()),
        "{names:?}"
    );
    let sum = rpc(url, &hs, &call_tool(json!(3), "get-sum", json!({"a": 2, "b": 40}))).await;
    assert!(sum.json()["result"]["content"][0]["text"].as_str().unwrap().contains("42"), "{}", sum.body);
    let denied = rpc(url, &hs, &call_tool(json!(4), "toggle-simulated-logging", json!({}))).await;
    assert_eq!(denied.json()["error"]["code"], -32001);
    let denied = rpc(url, &hs, &call_tool(json!(5), "trigger-long-running-operation", json!({}))).await;
    assert_eq!(denied.json()["error"]["code"], -32001);
    // a GET stream opens (head only; the stream stays open)
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut req = http::Request::get(url).header("accept", "text/event-stream");
    for (k, v) in hs {
        req = req.header(k, v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req.body(Default::default()).unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    drop(resp);
    let del = send(Method::DELETE, url, &hs, None).await.unwrap();
    assert!(del.status.is_success(), "{}", del.status);
    let after = rpc(url, &hs, &list_tools(json!(6))).await;
    assert!(
        after.status == StatusCode::NOT_FOUND || after.status == StatusCode::BAD_REQUEST,
        "ended session: {}",
        after.status
    );
}

/// A POST whose SSE answer is read event by event (a sampling request must be answered before
/// the stream goes on).
struct Events {
    body: hyper::body::Incoming,
    buf: String,
}

impl Events {
    async fn post(url: &str, headers: &[(&str, &str)], msg: &Value) -> (http::response::Parts, Events) {
        Self::open(Method::POST, url, headers, msg.to_string()).await
    }

    /// The session's GET stream.
    async fn get(url: &str, headers: &[(&str, &str)]) -> (http::response::Parts, Events) {
        Self::open(Method::GET, url, headers, String::new()).await
    }

    async fn open(
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> (http::response::Parts, Events) {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<bytes::Bytes>>();
        let mut req = http::Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.into()).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.unwrap().unwrap();
        let (parts, body) = resp.into_parts();
        (parts, Events { body, buf: String::new() })
    }

    /// The next event's data, or None at the end of the stream.
    async fn next(&mut self) -> Option<Value> {
        self.next_event().await.map(|(_, data)| data)
    }

    /// The next event with data: its id and its data.
    async fn next_event(&mut self) -> Option<(Option<String>, Value)> {
        use http_body_util::BodyExt;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data: String = event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
                let id = event.lines().find_map(|l| l.strip_prefix("id:")).map(|i| i.trim().to_string());
                if !data.is_empty() {
                    return Some((id, serde_json::from_str(&data).unwrap()));
                }
                continue;
            }
            let frame = tokio::time::timeout(Duration::from_secs(20), self.body.frame()).await.expect("event in time");
            match frame {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        self.buf.push_str(&String::from_utf8_lossy(d));
                    }
                }
                _ => return None,
            }
        }
    }
}

/// Resumability of the bridge's GET stream: a client that reconnects with `Last-Event-ID` gets
/// the events after that one again (here one it had already seen: a new event would have a new
/// id). (In front of an HTTP server the header is passed on and resumption is the server's; its
/// passing on is checked in features.rs.)
async fn get_stream_resumes_after_last_event_id(url: &str, auth: &str) {
    let init = rpc(url, &[("authorization", auth)], &initialize(json!(1))).await;
    let sid = init.header("mcp-session-id").expect("session id");
    let hs = [("authorization", auth), ("mcp-session-id", sid.as_str()), ("mcp-protocol-version", "2025-06-18")];
    let note = rpc(url, &hs, &json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    assert_eq!(note.status, StatusCode::ACCEPTED);
    let (parts, mut first) = Events::get(url, &hs).await;
    assert_eq!(parts.status, StatusCode::OK);
    // The server logs to the session every 5 s once asked to.
    let toggle = rpc(url, &hs, &call_tool(json!(2), "toggle-simulated-logging", json!({}))).await;
    assert_eq!(toggle.status, StatusCode::OK, "{}", toggle.body);
    let (id1, _) = first.next_event().await.expect("an event");
    let (id2, m2) = first.next_event().await.expect("another event");
    let (id1, id2) = (id1.expect("events have ids"), id2.expect("events have ids"));
    drop(first);
    let mut h = hs.to_vec();
    h.push(("last-event-id", id1.as_str()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut again = loop {
        // The server may take a moment to notice the first stream is gone (one GET stream per session).
        let (parts, events) = Events::get(url, &h).await;
        if parts.status == StatusCode::OK {
            break events;
        }
        assert!(std::time::Instant::now() < deadline, "resumption refused: {}", parts.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (replayed, m) = again.next_event().await.expect("the replayed event");
    assert_eq!(replayed.as_deref(), Some(id2.as_str()), "replayed after {id1}");
    assert_eq!(m, m2);
    let _ = rpc(url, &hs, &call_tool(json!(3), "toggle-simulated-logging", json!({}))).await;
    let del = send(Method::DELETE, url, &hs, None).await.unwrap();
    assert!(del.status.is_success(), "{}", del.status);
}

/// Server messages that belong to a request come on that request's SSE answer: progress
/// notifications of a long-running tool, and a sampling request the client answers while the
/// tool call waits for it.
async fn related_messages_on_the_request_stream(url: &str, auth: &str) {
    let mut init = initialize(json!(1));
    init["params"]["capabilities"] = json!({"sampling": {}});
    let init = rpc(url, &[("authorization", auth)], &init).await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    let sid = init.header("mcp-session-id").expect("session id");
    let hs = [("authorization", auth), ("mcp-session-id", sid.as_str()), ("mcp-protocol-version", "2025-06-18")];
    let note = rpc(url, &hs, &json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    assert_eq!(note.status, StatusCode::ACCEPTED);

    let mut call = call_tool(json!(10), "trigger-long-running-operation", json!({"duration": 0.6, "steps": 3}));
    call["params"]["_meta"] = json!({"progressToken": "lro-1"});
    let r = rpc(url, &hs, &call).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"), "{:?}", r.headers);
    let msgs = r.json();
    let msgs = msgs.as_array().unwrap_or_else(|| panic!("several events: {}", r.body));
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    for (i, m) in msgs[..3].iter().enumerate() {
        assert_eq!(m["method"], "notifications/progress", "{m}");
        assert_eq!(m["params"]["progressToken"], "lro-1");
        assert_eq!(m["params"]["progress"], i + 1);
    }
    assert_eq!(msgs[3]["id"], 10);
    assert!(msgs[3]["result"]["content"][0]["text"].as_str().unwrap().contains("Steps: 3"), "{}", msgs[3]);

    let call = call_tool(json!(11), "trigger-sampling-request", json!({"prompt": "hi", "maxTokens": 5}));
    let (parts, mut events) = Events::post(url, &hs, &call).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(parts.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let ask = events.next().await.expect("a sampling request");
    assert_eq!(ask["method"], "sampling/createMessage", "{ask}");
    let answer = json!({"jsonrpc": "2.0", "id": ask["id"], "result": {
        "role": "assistant", "model": "test-model", "stopReason": "endTurn",
        "content": {"type": "text", "text": "sampled by the test"}}});
    let ack = rpc(url, &hs, &answer).await;
    assert_eq!(ack.status, StatusCode::ACCEPTED, "{}", ack.body);
    let done = events.next().await.expect("the tool result");
    assert_eq!(done["id"], 11, "{done}");
    assert!(done["result"]["content"][0]["text"].as_str().unwrap().contains("sampled by the test"), "{done}");
    assert!(events.next().await.is_none(), "the stream ends after the answer");
    let del = send(Method::DELETE, url, &hs, None).await.unwrap();
    assert!(del.status.is_success(), "{}", del.status);
}

/// A stream ends when the credential it was opened with expires; one opened afterwards with a
/// longer-lived credential of the same caller stays open.
async fn streams_end_when_the_credential_expires(gw: &Gw) {
    let url = gw.url();
    let long = bearer(&hs256(&claims("expiring", &["developer"])));
    let init = rpc(&url, &[("authorization", &long)], &initialize(json!(1))).await;
    let sid = init.header("mcp-session-id").expect("session id");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let h = [("authorization", long.as_str()), ("mcp-session-id", sid.as_str())];
    assert_eq!(rpc(&url, &h, &note).await.status, StatusCode::ACCEPTED);

    // exp 27 s ago: accepted for about 3 more seconds (30 s clock skew allowance).
    let mut c = claims("expiring", &["developer"]);
    c["exp"] = json!(now() - 27);
    let short = bearer(&hs256(&c));
    let (parts, mut expiring) = Events::get(&url, &[("authorization", &short), ("mcp-session-id", &sid)]).await;
    assert_eq!(parts.status, StatusCode::OK, "accepted while within the allowance");
    while expiring.next().await.is_some() {}
    assert!(gw.metrics().await.contains(r#"mcp_gateway_denials_total{reason="stream_credential_expired"} 1"#));

    // The server may take a moment to notice the first stream is gone (one GET stream per session).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut lasting = loop {
        let (parts, events) = Events::get(&url, &h).await;
        if parts.status == StatusCode::OK {
            break events;
        }
        assert!(std::time::Instant::now() < deadline, "GET stream refused: {}", parts.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let still = tokio::time::timeout(Duration::from_secs(2), lasting.next()).await;
    assert!(still.is_err() || still.unwrap().is_some(), "the long-lived stream stays open");
    let del = send(Method::DELETE, &url, &h, None).await.unwrap();
    assert!(del.status.is_success(), "{}", del.status);
}

#[tokio::test]
async fn server_everything_over_streamable_http() {
    let (_server, port) = server_everything_http().await;
    let idp = Idp::start(json!({"keys": [jwk("rsa-a")]})).await;
    let dir = tempdir("se-http");
    let gw = Gw::start(&dev_policy(&dir, &idp), &["--upstream".into(), format!("http://127.0.0.1:{port}/mcp")]).await;
    gw.wait_ready(Duration::from_secs(20)).await;
    let status = send(Method::GET, &gw.admin_url("/status"), &[], None).await.unwrap().json();
    assert_eq!(status["name"], "mcp-servers/everything");
    assert!(status["tools"].as_array().unwrap().iter().any(|t| t == "echo"));
    assert!(status["capabilities"]["tools"].is_object());

    raw_session(&gw.url(), &bearer(&hs256(&claims("dev", &["developer"])))).await;
    // Parity: what the server itself streams on a request's answer comes through the gateway.
    related_messages_on_the_request_stream(&format!("http://127.0.0.1:{port}/mcp"), "").await;
    related_messages_on_the_request_stream(&gw.url(), &bearer(&hs256(&claims("ops", &["admin"])))).await;
    streams_end_when_the_credential_expires(&gw).await;

    // The official Python SDK client, once with an HS256 token and once with an RS256 one.
    let (url, hs) = (gw.url(), hs256(&claims("py-hs", &["developer"])));
    let r = tokio::task::spawn_blocking(move || python_client(&url, &hs, "echo", "toggle-simulated-logging"))
        .await
        .unwrap();
    assert_client_result(&r);
    let (url, rs) = (gw.url(), rs256(&claims("py-rs", &["developer"]), "rsa-a", Some("rsa-a")));
    let r = tokio::task::spawn_blocking(move || python_client(&url, &rs, "echo", "trigger-long-running-operation"))
        .await
        .unwrap();
    assert_client_result(&r);
    let a = gw.audit_where("python rs256 call", |r| r["identity"] == "py-rs" && r["tool"] == "echo").await;
    assert_eq!(a["decision"], "allow");
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"mcp_gateway_requests_total{method="tools/call",tool="echo",status="200",decision="allow"}"#),
        "{m}"
    );
    assert!(m.contains(r#"mcp_gateway_denials_total{reason="tool_denied"}"#));
}

#[tokio::test]
async fn server_everything_over_stdio_through_the_bridge() {
    let idp = Idp::start(json!({"keys": [jwk("rsa-a")]})).await;
    let dir = tempdir("se-stdio");
    let node_args = vec![
        "--stdio".to_string(),
        "--max-sessions".into(),
        "2".into(),
        "--idle-timeout".into(),
        "2s".into(),
        "--check-interval".into(),
        "60s".into(),
        "--".into(),
        "node".into(),
        deps().server_everything.display().to_string(),
        "stdio".into(),
    ];
    let gw = Gw::start(&dev_policy(&dir, &idp), &node_args).await;
    gw.wait_ready(Duration::from_secs(30)).await;
    let status = send(Method::GET, &gw.admin_url("/status"), &[], None).await.unwrap().json();
    assert_eq!(status["name"], "mcp-servers/everything");

    raw_session(&gw.url(), &bearer(&hs256(&claims("dev", &["developer"])))).await;
    related_messages_on_the_request_stream(&gw.url(), &bearer(&hs256(&claims("ops", &["admin"])))).await;
    streams_end_when_the_credential_expires(&gw).await;
    get_stream_resumes_after_last_event_id(&gw.url(), &bearer(&hs256(&claims("ops", &["admin"])))).await;

    let (url, rs) = (gw.url(), rs256(&claims("py-stdio", &["developer"]), "rsa-a", Some("rsa-a")));
    let r = tokio::task::spawn_blocking(move || python_client(&url, &rs, "echo", "toggle-simulated-logging"))
        .await
        .unwrap();
    assert_client_result(&r);

    // bounded: two sessions at most; idle ones are ended after --idle-timeout (the Python client's
    // session, cut by the 403 of its denied call, is reaped first)
    let wait_reaped = || async {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !gw.metrics().await.contains("mcp_gateway_sessions 0") {
            assert!(std::time::Instant::now() < deadline, "idle sessions not reaped");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    wait_reaped().await;
    let auth = bearer(&hs256(&claims("dev", &["developer"])));
    let s1 = rpc(&gw.url(), &[("authorization", &auth)], &initialize(json!(1))).await;
    let s2 = rpc(&gw.url(), &[("authorization", &auth)], &initialize(json!(1))).await;
    assert_eq!((s1.status, s2.status), (StatusCode::OK, StatusCode::OK));
    assert_ne!(s1.header("mcp-session-id"), s2.header("mcp-session-id"));
    let s3 = rpc(&gw.url(), &[("authorization", &auth)], &initialize(json!(1))).await;
    assert_eq!(s3.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(gw.metrics().await.contains("mcp_gateway_sessions 2"));
    wait_reaped().await;
    let sid = s1.header("mcp-session-id").unwrap();
    let gone = rpc(&gw.url(), &[("authorization", &auth), ("mcp-session-id", &sid)], &list_tools(json!(2))).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    // another identity cannot use a session it did not create
    let s = rpc(&gw.url(), &[("authorization", &auth)], &initialize(json!(1))).await;
    let sid = s.header("mcp-session-id").unwrap();
    let other = bearer(&hs256(&claims("someone-else", &["developer"])));
    let hijack = rpc(&gw.url(), &[("authorization", &other), ("mcp-session-id", &sid)], &list_tools(json!(2))).await;
    assert_eq!(hijack.status, StatusCode::FORBIDDEN);
}
