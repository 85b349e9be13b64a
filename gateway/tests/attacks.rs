//! The attack suite: every class of bypass the default-deny gateway closes, each asserting the
//! status, the audit record, and that the server never saw the request (a unique marker in the
//! request). Run against a recording HTTP server, a hostile one (answers under other ids, odd
//! content types and SSE line endings, unparsable JSON), the real server-everything, a recording
//! WebSocket server, and a recording stdio server behind the bridge.
//!
//! Roles: `developer` may call `echo` and `search*`; `admin` may call everything. The denied tool
//! of the recording servers is `admin-reset`; server-everything's is `get-env`.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn dev() -> String {
    bearer(&hs256(&claims("dev", &["developer"])))
}

fn admin() -> String {
    bearer(&hs256(&claims("root", &["admin"])))
}

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

/// Send exactly these bytes on a fresh connection and read the answer (the request should ask
/// for `connection: close`; the read ends at EOF or after 10 s).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Raw {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut buf = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Raw { status, head: head.to_string(), body: body.to_string() }
}

/// A request with the given method, target, extra header lines and body.
fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

fn post_headers(auth: &str) -> Vec<(&str, &str)> {
    vec![
        ("authorization", auth),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ]
}

/// Every spelling of "the MCP path" a router might normalise to /mcp, and other paths.
const PATH_VARIANTS: &[&str] = &[
    "/mcp/",
    "/MCP",
    "/Mcp",
    "//mcp",
    "/./mcp",
    "/mcp/../mcp",
    "/%6dcp",
    "/m%63p",
    "/mcp;x=1",
    "/mcp%2f",
    "/mcp%2F",
    "/mcp%00",
    "/mcp?x=1",
    "http://gw/mcp/",
    "/admin",
    "/mcp/../admin",
    "/internal/debug",
    "/",
    "*",
];

#[tokio::test]
async fn only_the_exact_mcp_path_is_served_and_nothing_else_is_forwarded() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    for (i, path) in PATH_VARIANTS.iter().enumerate() {
        for auth in [dev(), admin()] {
            let marker = format!("m-path-{i}");
            let body = call_tool(json!(marker), "admin-reset", json!({})).to_string();
            let r = raw(gw.addr, &request("POST", path, &post_headers(&auth), &body)).await;
            assert!(r.status == 404 || r.status == 400, "{path:?}: {} {}", r.status, r.body);
            let list = list_tools(json!(format!("m-list-{i}"))).to_string();
            let r = raw(gw.addr, &request("POST", path, &post_headers(&auth), &list)).await;
            assert!(r.status == 404 || r.status == 400, "{path:?}: tools/list {}", r.status);
            assert_eq!(rec.with_marker(&marker) + rec.with_marker(&format!("m-list-{i}")), 0, "{path:?} forwarded");
        }
    }
    gw.denied("not_found", 404).await;
    // The exact path works (and a denied tool on it is refused).
    let ok = raw(
        gw.addr,
        &request("POST", "/mcp", &post_headers(&dev()), &call_tool(json!("ok-1"), "echo", json!({})).to_string()),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let no = raw(
        gw.addr,
        &request("POST", "/mcp", &post_headers(&dev()), &call_tool(json!("m-x"), "admin-reset", json!({})).to_string()),
    )
    .await;
    assert_eq!(no.status, 403);
    assert_eq!(rec.with_marker("m-x"), 0);
}

#[tokio::test]
async fn methods_other_than_post_get_delete_are_refused_and_overrides_ignored() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    let body = |m: &str| call_tool(json!(m), "admin-reset", json!({})).to_string();
    for method in ["PUT", "PATCH", "HEAD", "TRACE", "PROPFIND", "FOO"] {
        let marker = format!("m-method-{method}");
        let r = raw(gw.addr, &request(method, "/mcp", &post_headers(&admin()), &body(&marker))).await;
        assert_eq!(r.status, 405, "{method}: {}", r.head);
        if method != "HEAD" {
            assert!(r.head.to_ascii_lowercase().contains("allow: get, post, delete, options"), "{}", r.head);
        }
        assert_eq!(rec.with_marker(&marker), 0);
    }
    gw.denied("method_not_allowed", 405).await;
    // GET and DELETE with a tools/call body: refused, never forwarded.
    for method in ["GET", "DELETE"] {
        let marker = format!("m-body-{method}");
        let r = raw(gw.addr, &request(method, "/mcp", &post_headers(&admin()), &body(&marker))).await;
        assert_eq!(r.status, 400, "{method}");
        assert_eq!(rec.with_marker(&marker), 0);
    }
    gw.denied("unexpected_body", 400).await;
    // OPTIONS (no credentials, a tools/call body): the gateway answers, nothing is forwarded.
    let r =
        raw(gw.addr, &request("OPTIONS", "/mcp", &[("content-type", "application/json")], &body("m-options"))).await;
    assert_eq!(r.status, 204, "{}", r.head);
    assert_eq!(rec.with_marker("m-options"), 0);
    // Method override headers change nothing and are not passed on.
    let token = dev();
    let mut h = post_headers(&token);
    h.extend([("x-http-method-override", "DELETE"), ("x-http-method", "PUT"), ("x-method-override", "GET")]);
    let r = raw(gw.addr, &request("POST", "/mcp", &h, &call_tool(json!("ok-override"), "echo", json!({})).to_string()))
        .await;
    assert_eq!(r.status, 200);
    let seen = rec.seen().into_iter().find(|s| s.body.contains("ok-override")).unwrap();
    assert_eq!(seen.method, Method::POST);
    for name in ["x-http-method-override", "x-http-method", "x-method-override", "authorization"] {
        assert!(!seen.headers.contains_key(name), "{name} forwarded");
    }
    // A body that is not application/json is not a JSON-RPC message, nor is JSON in a charset the
    // gateway does not parse: a server that decoded UTF-7 would read `+ACI-` as a quote, i.e. a
    // second "name" the gateway never saw.
    let utf7 = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":"+ACI-},+ACI-name+ACI-:+ACI-admin-reset+ACI-,+ACI-m+ACI-:+ACI-m-ct"}}}"#;
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-7",
        "application/json; charset=UTF-7-IMAP",
        "application/json; charset=utf-16",
    ] {
        let h = [("authorization", dev()), ("content-type", ct.to_string())];
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = raw(gw.addr, &request("POST", "/mcp", &h, utf7)).await;
        assert_eq!(r.status, 415, "{ct}");
    }
    assert_eq!(rec.with_marker("m-ct"), 0);
    // UTF-8 named explicitly is admitted, and the server is told plain application/json; of a
    // header sent twice it gets only the value the gateway checked.
    let token = dev();
    let h = [
        ("authorization", token.as_str()),
        ("content-type", "application/json; charset=UTF-8"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-06-18"),
        ("mcp-protocol-version", "1999-01-01"),
    ];
    let r =
        raw(gw.addr, &request("POST", "/mcp", &h, &call_tool(json!("ok-utf8"), "echo", json!({})).to_string())).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = rec.seen().into_iter().find(|s| s.body.contains("ok-utf8")).unwrap();
    assert_eq!(seen.headers.get_all("content-type").iter().collect::<Vec<_>>(), ["application/json"]);
    assert_eq!(seen.headers.get_all("mcp-protocol-version").iter().collect::<Vec<_>>(), ["2025-06-18"]);
}

#[tokio::test]
async fn every_framing_of_a_denied_call_is_refused() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("notification", r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"admin-reset","m":"m-f1"}}"#.into(), 400, "invalid_request"),
        (
            "notification in a batch",
            r#"[{"jsonrpc":"2.0","id":"ok","method":"ping"},{"jsonrpc":"2.0","method":"tools/call","params":{"name":"admin-reset","m":"m-f2"}}]"#.into(),
            400,
            "invalid_request",
        ),
        (
            "denied call in a batch",
            r#"[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo"}},{"jsonrpc":"2.0","id":"m-f3","method":"tools/call","params":{"name":"admin-reset"}}]"#.into(),
            403,
            "tool_denied",
        ),
        ("duplicate name", r#"{"jsonrpc":"2.0","id":"m-f4","method":"tools/call","params":{"name":"admin-reset","name":"echo"}}"#.into(), 400, "invalid_request"),
        ("duplicate name, first allowed", r#"{"jsonrpc":"2.0","id":"m-f5","method":"tools/call","params":{"name":"echo","name":"admin-reset"}}"#.into(), 400, "invalid_request"),
        ("duplicate method", r#"{"jsonrpc":"2.0","id":"m-f6","method":"tools/call","method":"ping","params":{"name":"admin-reset"}}"#.into(), 400, "invalid_request"),
        ("escaped duplicate", r#"{"jsonrpc":"2.0","id":"m-f7","method":"tools/call","params":{"name":"echo","na\u006de":"admin-reset"}}"#.into(), 400, "invalid_request"),
        ("Tools/Call", r#"{"jsonrpc":"2.0","id":"m-f8","method":"Tools/Call","params":{"name":"admin-reset"}}"#.into(), 400, "unknown_method"),
        ("TOOLS/CALL", r#"{"jsonrpc":"2.0","id":"m-f9","method":"TOOLS/CALL","params":{"name":"admin-reset"}}"#.into(), 400, "unknown_method"),
        ("tools/call with a space", r#"{"jsonrpc":"2.0","id":"m-f10","method":"tools/call ","params":{"name":"admin-reset"}}"#.into(), 400, "unknown_method"),
        ("escaped method", r#"{"jsonrpc":"2.0","id":"m-f11","method":"tools\/call","params":{"name":"admin-reset"}}"#.into(), 403, "tool_denied"),
        ("lone surrogate", r#"{"jsonrpc":"2.0","id":"m-f12","method":"tools/call","params":{"name":"admin-reset\ud800"}}"#.into(), 400, "parse_error"),
        ("params array", r#"{"jsonrpc":"2.0","id":"m-f13","method":"tools/call","params":["admin-reset"]}"#.into(), 400, "invalid_params"),
        ("extra member", r#"{"jsonrpc":"2.0","id":"m-f14","method":"tools/call","params":{"name":"echo"},"name":"admin-reset"}"#.into(), 400, "invalid_request"),
    ];
    for (what, body, status, reason) in cases {
        let r = raw(gw.addr, &request("POST", "/mcp", &post_headers(&dev()), &body)).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let marker = body.split("m-f").nth(1).map(|s| format!("m-f{}", s.split('"').next().unwrap())).unwrap();
        assert_eq!(rec.with_marker(&marker), 0, "{what} forwarded");
        gw.denied(reason, status).await;
    }
    // Not UTF-8 at all.
    let mut bytes = request("POST", "/mcp", &post_headers(&dev()), "");
    let body =
        b"{\"jsonrpc\":\"2.0\",\"id\":\"m-latin\",\"method\":\"tools/call\",\"params\":{\"name\":\"admin-reset\xff\"}}";
    let pos = bytes.windows(18).position(|w| w == b"content-length: 0\r").unwrap();
    bytes.splice(pos..pos + 17, format!("content-length: {}", body.len()).bytes());
    bytes.extend_from_slice(body);
    assert_eq!(raw(gw.addr, &bytes).await.status, 400);
    assert_eq!(rec.with_marker("m-latin"), 0);
    // What was checked is what was forwarded: a big number and odd spacing arrive byte for byte.
    let exact = "{ \"jsonrpc\" : \"2.0\", \"id\":\"ok-exact\",\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"n\":123456789012345678901234567890}} }";
    assert_eq!(raw(gw.addr, &request("POST", "/mcp", &post_headers(&dev()), exact)).await.status, 200);
    assert!(rec.seen().iter().any(|s| s.body == exact), "forwarded exactly as received");
}

/// An upstream that answers tools/list in a way a naive filter would miss.
async fn hostile(mode: Arc<Mutex<&'static str>>) -> std::net::SocketAddr {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let mode = mode.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let mode = *mode.lock().unwrap();
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let method = msg["method"].as_str().unwrap_or("");
                        let mut resp = http::Response::builder();
                        if method == "initialize" || method != "tools/list" {
                            let result = if method == "initialize" {
                                json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "hostile", "version": "6.6.6"}})
                            } else {
                                json!({})
                            };
                            let out = json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}).to_string();
                            return Ok::<_, std::convert::Infallible>(
                                resp.header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(out)))
                                    .unwrap(),
                            );
                        }
                        let tools =
                            r#"{"tools":[{"name":"echo","inputSchema":{}},{"name":"admin-reset","inputSchema":{}}]}"#;
                        let sse = |sep: &str, id: &str| {
                            format!("event: message{sep}data: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{tools}}}{sep}{sep}")
                        };
                        let (ct, out): (Option<&str>, String) = match mode {
                            "float-id" => {
                                (Some("application/json"), format!(r#"{{"jsonrpc":"2.0","id":1.0,"result":{tools}}}"#))
                            }
                            "other-id" => (
                                Some("application/json"),
                                format!(r#"{{"jsonrpc":"2.0","id":"not-yours","result":{tools}}}"#),
                            ),
                            "upper-ct" => (
                                Some("Application/JSON"),
                                format!(r#"{{"jsonrpc":"2.0","id":{},"result":{tools}}}"#, msg["id"]),
                            ),
                            "no-ct" => (None, format!(r#"{{"jsonrpc":"2.0","id":{},"result":{tools}}}"#, msg["id"])),
                            "text-ct" => (
                                Some("text/plain"),
                                format!(r#"{{"jsonrpc":"2.0","id":{},"result":{tools}}}"#, msg["id"]),
                            ),
                            "batch" => {
                                (Some("application/json"), format!(r#"[{{"jsonrpc":"2.0","id":7,"result":{tools}}}]"#))
                            }
                            "duplicate" => (
                                Some("application/json"),
                                format!(
                                    r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[]}},"result":{tools}}}"#,
                                    msg["id"]
                                ),
                            ),
                            "garbage" => {
                                (Some("application/json"), format!(r#"{{"jsonrpc":"2.0","id":1,"result":{tools}"#))
                            }
                            "sse-nrn" => (Some("text/event-stream"), sse("\n\r", "\"x\"")),
                            "sse-cr" => (Some("text/event-stream"), sse("\r", "\"x\"")),
                            "sse-crlf" => (Some("Text/Event-Stream; charset=utf-8"), sse("\r\n", "1.0")),
                            "sse-garbage" => {
                                (Some("text/event-stream"), format!("data: {{\"id\":1,\"result\":{tools}\n\n"))
                            }
                            _ => unreachable!("mode {mode}"),
                        };
                        if let Some(ct) = ct {
                            resp = resp.header("content-type", ct);
                        }
                        Ok(resp.body(Full::new(Bytes::from(out))).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tool_lists_are_filtered_whatever_the_server_answers() {
    let mode = Arc::new(Mutex::new("float-id"));
    let addr = hostile(mode.clone()).await;
    let dir = tempdir("hostile");
    let gw = Gw::start(
        &policy(json!({
            "authentication": jwt_auth(&dir, None, true),
            "authorization": rbac(&["admin", "developer"], json!({"developer": ["echo"]})),
        })),
        &["--upstream".into(), format!("http://{addr}/mcp"), "--check-interval".into(), "60s".into()],
    )
    .await;
    for m in [
        "float-id",
        "other-id",
        "upper-ct",
        "no-ct",
        "text-ct",
        "batch",
        "duplicate",
        "garbage",
        "sse-nrn",
        "sse-cr",
        "sse-crlf",
        "sse-garbage",
    ] {
        *mode.lock().unwrap() = m;
        let r = rpc(&gw.url(), &[("authorization", &dev())], &list_tools(json!(1))).await;
        assert!(!r.body.contains("admin-reset"), "{m}: the denied tool leaked: {}", r.body);
        assert!(r.status == StatusCode::OK || r.status == StatusCode::BAD_GATEWAY, "{m}: {}", r.status);
        if r.status == StatusCode::OK && !matches!(m, "sse-garbage") {
            assert!(r.body.contains("echo"), "{m}: the allowed tool is kept: {}", r.body);
        }
        if matches!(m, "upper-ct" | "no-ct" | "text-ct") {
            assert_eq!(r.json()["id"], 1, "{m}: the client's id is restored");
        }
        // an unrestricted caller gets what the server sent
        let all = rpc(&gw.url(), &[("authorization", &admin())], &list_tools(json!(2))).await;
        if !matches!(m, "garbage" | "sse-garbage") {
            assert!(all.body.contains("admin-reset"), "{m}: {}", all.body);
        }
    }
}

#[tokio::test]
async fn anonymous_is_never_more_privileged_than_a_role() {
    let rec = Recorder::start().await;
    let dir = tempdir("anon");
    let mut auth = jwt_auth(&dir, None, true);
    auth["required"] = json!(false);
    let gw = Gw::start(
        &policy(json!({
            "authentication": auth.clone(),
            "authorization": rbac(&["admin", "developer"], json!({"developer": ["echo"]})),
        })),
        &rec.upstream_args(),
    )
    .await;
    // The default: anonymous may connect and list, but use no tool.
    let init = rpc(&gw.url(), &[], &initialize(json!(1))).await;
    assert_eq!(init.status, StatusCode::OK);
    let list = rpc(&gw.url(), &[], &list_tools(json!(2))).await;
    assert_eq!(tool_names(&list.json()), Vec::<String>::new(), "anonymous sees no tools");
    for tool in ["admin-reset", "get-sum", "echo"] {
        let marker = format!("m-anon-{tool}");
        let r = rpc(&gw.url(), &[], &call_tool(json!(marker), tool, json!({}))).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "anonymous {tool}");
        assert_eq!(rec.with_marker(&marker), 0);
    }
    let a = gw.denied("tool_denied", 403).await;
    assert_eq!(a["identity"], "anonymous");
    // Nor may anonymous read what the server holds besides tools: resources, prompts,
    // completions and logging need credentials (the lists do not).
    for method in ["resources/read", "prompts/get", "completion/complete", "logging/setLevel", "resources/subscribe"] {
        let marker = format!("m-anon-{method}");
        let msg = json!({"jsonrpc": "2.0", "id": marker, "method": method, "params": {"uri": "demo://x", "name": "p"}});
        let r = rpc(&gw.url(), &[], &msg).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "anonymous {method}");
        assert_eq!(rec.with_marker(&marker), 0, "{method} not forwarded");
    }
    gw.denied("method_denied", 403).await;
    let lists = json!({"jsonrpc": "2.0", "id": "ok-anon-resources", "method": "resources/list"});
    assert_eq!(rpc(&gw.url(), &[], &lists).await.status, StatusCode::OK, "the lists stay open");
    // A caller whose role is not allowed is served as anonymous, not better.
    let guest = bearer(&hs256(&claims("guest", &["viewer"])));
    let r = rpc(&gw.url(), &[("authorization", &guest)], &call_tool(json!("m-guest"), "get-sum", json!({}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(rec.with_marker("m-guest"), 0);
    // Tools granted to anonymous are granted to every role too.
    let gw2 = Gw::start(
        &policy(json!({
            "authentication": auth,
            "authorization": {"mode": "rbac", "allowedRoles": ["developer"], "rolesClaim": "roles",
                              "tools": {"developer": ["echo"]}, "anonymousTools": ["get-sum"]},
        })),
        &rec.upstream_args(),
    )
    .await;
    assert_eq!(rpc(&gw2.url(), &[], &call_tool(json!("ok-a1"), "get-sum", json!({}))).await.status, StatusCode::OK);
    assert_eq!(rpc(&gw2.url(), &[], &call_tool(json!("m-a2"), "echo", json!({}))).await.status, StatusCode::FORBIDDEN);
    let d = rpc(&gw2.url(), &[("authorization", &dev())], &call_tool(json!("ok-a3"), "get-sum", json!({}))).await;
    assert_eq!(d.status, StatusCode::OK, "a developer may do what anonymous may");
    let list = rpc(&gw2.url(), &[("authorization", &dev())], &list_tools(json!(3))).await;
    assert_eq!(tool_names(&list.json()), vec!["echo", "get-sum"]);
    assert_eq!(rec.with_marker("m-a2"), 0);
}

#[tokio::test]
async fn origins_are_validated_and_cors_answered_by_the_gateway() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({"cors": {"allowedOrigins": ["https://app.example.com"]}})).await;
    for origin in
        ["http://evil.example", "null", "https://app.example.com.evil.example", "https://app.example.com:8443"]
    {
        let marker = format!("m-origin-{origin}");
        let r = rpc(
            &gw.url(),
            &[("authorization", &dev()), ("origin", origin)],
            &call_tool(json!(marker), "echo", json!({})),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(rec.with_marker(&marker), 0);
        let pre =
            send(Method::OPTIONS, &gw.url(), &[("origin", origin), ("access-control-request-method", "POST")], None)
                .await
                .unwrap();
        assert_eq!(pre.status, StatusCode::FORBIDDEN, "preflight {origin}");
    }
    gw.denied("origin_not_allowed", 403).await;
    let ok = rpc(
        &gw.url(),
        &[("authorization", &dev()), ("origin", "https://app.example.com")],
        &call_tool(json!("ok-o"), "echo", json!({})),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert!(ok.header("access-control-expose-headers").unwrap().contains("mcp-session-id"));
    let pre = send(
        Method::OPTIONS,
        &gw.url(),
        &[("origin", "https://app.example.com"), ("access-control-request-method", "POST")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(pre.status, StatusCode::NO_CONTENT);
    assert_eq!(pre.header("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert!(pre.header("access-control-allow-headers").unwrap().contains("authorization"));
    assert!(!rec.seen().iter().any(|s| s.method == Method::OPTIONS), "preflights are the gateway's own");
    // Without any allowed origin (the default), every Origin is refused.
    let plain = jwt_gateway(&rec, &idp, json!({})).await;
    let r = rpc(
        &plain.url(),
        &[("authorization", &dev()), ("origin", "http://localhost:6274")],
        &call_tool(json!("m-o2"), "echo", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(rec.with_marker("m-o2"), 0);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn slow_and_unauthenticated_bodies_cost_the_gateway_nothing() {
    let rec = Recorder::start().await;
    let dir = tempdir("slow");
    let gw = Gw::start(
        &policy(json!({"authentication": jwt_auth(&dir, None, true)})),
        &[rec.upstream_args(), vec!["--body-timeout".into(), "1s".into()]].concat(),
    )
    .await;
    let before = rss_kib(gw.pid());
    // 16 unauthenticated clients announce 4 MB and send one byte: each is refused at once.
    let start = Instant::now();
    let mut conns = vec![];
    for _ in 0..16 {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(
            b"POST /mcp HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 4194304\r\n\r\n{",
        )
        .await
        .unwrap();
        conns.push(tcp);
    }
    for mut tcp in conns {
        let mut buf = vec![];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await.expect("closed in time").unwrap();
        assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 401"), "{}", String::from_utf8_lossy(&buf));
    }
    assert!(start.elapsed() < Duration::from_secs(5), "refused without waiting for the body");
    let grew = rss_kib(gw.pid()).saturating_sub(before);
    assert!(grew < 8 * 1024, "the gateway grew by {grew} KiB");
    gw.denied("missing_credentials", 401).await;
    // An authenticated client that stalls is cut at --body-timeout.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!("POST /mcp HTTP/1.1\r\nhost: gw\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{", dev());
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await.expect("cut in time").unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&buf));
    gw.denied("body_timeout", 408).await;
    // Headers that never end are cut too (the header deadline).
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"POST /mcp HTTP/1.1\r\nhost: gw\r\n").await.unwrap();
    let mut buf = vec![];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await.expect("cut in time").ok();
}

#[tokio::test]
async fn jwt_issuer_arrays_and_wrong_claim_types_are_refused() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    let with = |k: &str, v: Value| {
        let mut c = claims("dev", &["admin"]);
        c[k] = v;
        bearer(&hs256(&c))
    };
    for (what, token) in [
        ("iss array", with("iss", json!([ISSUER]))),
        ("iss array with another", with("iss", json!(["https://evil.test", ISSUER]))),
        ("nbf string", with("nbf", json!((now() + 3600).to_string()))),
        ("exp string", with("exp", json!("99999999999"))),
        ("aud object", with("aud", json!({"aud": AUDIENCE}))),
    ] {
        let marker = format!("m-jwt-{}", what.replace(' ', "-"));
        let r = rpc(&gw.url(), &[("authorization", &token)], &call_tool(json!(marker), "echo", json!({}))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(rec.with_marker(&marker), 0);
    }
    gw.denied("invalid_token", 401).await;
}

#[tokio::test]
async fn unknown_foreign_and_evicted_sessions_are_refused() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let dir = tempdir("sess");
    let gw = Gw::start(
        &policy(json!({
            "authentication": jwt_auth(&dir, Some(&idp.jwks_uri()), true),
            "authorization": rbac(&["admin", "developer"], json!({"developer": ["echo"]})),
        })),
        &[rec.upstream_args(), vec!["--max-tracked-sessions".into(), "2".into()]].concat(),
    )
    .await;
    let open = |auth: String| {
        let url = gw.url();
        async move { rpc(&url, &[("authorization", &auth)], &initialize(json!(1))).await.header("mcp-session-id").unwrap() }
    };
    let s1 = open(dev()).await;
    let use_session = |auth: String, sid: String, marker: &'static str| {
        let url = gw.url();
        async move {
            rpc(
                &url,
                &[("authorization", &auth), ("mcp-session-id", &sid)],
                &call_tool(json!(marker), "echo", json!({})),
            )
            .await
            .status
        }
    };
    assert_eq!(use_session(dev(), s1.clone(), "ok-s1").await, StatusCode::OK);
    assert_eq!(use_session(dev(), "never-issued".into(), "m-s-unknown").await, StatusCode::NOT_FOUND);
    assert_eq!(use_session(admin(), s1.clone(), "m-s-foreign").await, StatusCode::FORBIDDEN);
    let anon_url = gw.url();
    let anon = rpc(&anon_url, &[("mcp-session-id", &s1)], &call_tool(json!("m-s-anon"), "echo", json!({}))).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    gw.denied("unknown_session", 404).await;
    gw.denied("session_owner", 403).await;
    // The table holds two: a third session evicts the least recently used, which is then refused.
    let s2 = open(dev()).await;
    let _s3 = open(dev()).await;
    assert_eq!(use_session(dev(), s1, "m-s-evicted").await, StatusCode::NOT_FOUND, "evicted, not reopened");
    assert_eq!(use_session(dev(), s2, "ok-s2").await, StatusCode::OK);
    for m in ["m-s-unknown", "m-s-foreign", "m-s-anon", "m-s-evicted"] {
        assert_eq!(rec.with_marker(m), 0, "{m}");
    }
}

/// One caller opening sessions in a loop fills only its own share of the session table: it loses
/// its own oldest sessions, never another caller's.
#[tokio::test]
async fn a_session_flood_of_one_caller_evicts_no_other_callers_session() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let dir = tempdir("sess-flood");
    let args = ["--max-tracked-sessions", "10", "--max-sessions-per-caller", "3"].map(String::from).to_vec();
    let gw = Gw::start(
        &policy(json!({
            "authentication": jwt_auth(&dir, Some(&idp.jwks_uri()), true),
            "authorization": rbac(&["admin", "developer"], json!({"developer": ["echo"]})),
        })),
        &[rec.upstream_args(), args].concat(),
    )
    .await;
    let open = |auth: String| {
        let url = gw.url();
        async move { rpc(&url, &[("authorization", &auth)], &initialize(json!(1))).await.header("mcp-session-id").unwrap() }
    };
    let status = |auth: String, sid: String, marker: String| {
        let url = gw.url();
        async move {
            let headers = [("authorization", auth.as_str()), ("mcp-session-id", sid.as_str())];
            rpc(&url, &headers, &call_tool(json!(marker), "echo", json!({}))).await.status
        }
    };
    let theirs = open(admin()).await;
    let mut mine = vec![];
    for _ in 0..25 {
        mine.push(open(dev()).await);
    }
    assert_eq!(status(admin(), theirs, "ok-theirs".into()).await, StatusCode::OK, "another caller's session stays");
    for (n, sid) in mine.iter().enumerate() {
        let expected = if n >= 22 { StatusCode::OK } else { StatusCode::NOT_FOUND };
        assert_eq!(status(dev(), sid.clone(), format!("flood-{n}")).await, expected, "session {n} of 25");
    }
    gw.denied("unknown_session", 404).await;
    // The server is told to end each session the gateway forgot (a DELETE each, in the
    // background), so that none lingers there unusable.
    let ended = |rec: &Recorder| -> Vec<String> {
        let seen = rec.seen();
        let deletes = seen.iter().filter(|s| s.method == Method::DELETE);
        deletes.filter_map(|s| s.headers.get("mcp-session-id")?.to_str().ok().map(String::from)).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ended(&rec).len() < 22 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ended = ended(&rec);
    ended.sort();
    let mut forgotten = mine[..22].to_vec();
    forgotten.sort();
    assert_eq!(ended, forgotten, "the 22 forgotten sessions, and only those, ended at the server");
}

/// An upstream whose GET streams never end (a server pushing notifications), whose initialize
/// issues a session, and which answers every other request with an empty result.
async fn endless_streams() -> std::net::SocketAddr {
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let sessions = sessions.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let sessions = sessions.clone();
                    async move {
                        type Frames =
                            futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::convert::Infallible>>;
                        let resp = http::Response::builder();
                        let (resp, frames): (_, Frames) = if req.method() == http::Method::DELETE {
                            (resp.status(200), futures_util::stream::empty().boxed())
                        } else if req.method() == http::Method::GET {
                            let first = Frame::data(Bytes::from("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"hello\"}}\n\n"));
                            let endless = futures_util::stream::once(async move { Ok(first) })
                                .chain(futures_util::stream::pending());
                            (resp.header("content-type", "text/event-stream"), endless.boxed())
                        } else {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            if msg.get("id").is_none() || msg.get("method").is_none() {
                                // A notification or an answer: accepted, nothing to say.
                                let accepted = resp.status(202);
                                return Ok(accepted
                                    .body(StreamBody::new(futures_util::stream::empty().boxed()))
                                    .unwrap());
                            }
                            let mut resp = resp.header("content-type", "application/json");
                            let result = if msg["method"] == "initialize" {
                                let n = sessions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                resp = resp.header("mcp-session-id", format!("endless-{n}"));
                                json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "endless", "version": "1"}})
                            } else {
                                json!({})
                            };
                            let out = json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}).to_string();
                            (resp, futures_util::stream::once(async move { Ok(Frame::data(Bytes::from(out))) }).boxed())
                        };
                        Ok::<_, std::convert::Infallible>(resp.body(StreamBody::new(frames)).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Opens a GET stream of session `sid` and returns its status and, while open, the connection.
async fn open_stream(addr: std::net::SocketAddr, auth: &str, sid: &str) -> (u16, tokio::net::TcpStream) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let headers = [("authorization", auth), ("accept", "text/event-stream"), ("mcp-session-id", sid)];
    tcp.write_all(&request("GET", "/mcp", &headers, "")).await.unwrap();
    let mut head = vec![];
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    (head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), tcp)
}

/// One caller holding its limit of requests and streams in flight is refused more (429) before
/// anything is forwarded; another caller is served; a stream that ends frees its permit.
#[tokio::test]
async fn a_caller_at_its_limit_of_open_streams_is_refused_more_and_no_one_else_is() {
    let addr = endless_streams().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let dir = tempdir("in-flight");
    let gw = Gw::start(
        &policy(json!({
            "authentication": jwt_auth(&dir, Some(&idp.jwks_uri()), true),
            "authorization": rbac(&["admin", "developer"], json!({"developer": ["echo"]})),
        })),
        &["--upstream", &format!("http://{addr}/mcp"), "--check-interval", "60s", "--max-in-flight-per-caller", "2"]
            .map(String::from),
    )
    .await;
    let session = |auth: String| {
        let url = gw.url();
        async move { rpc(&url, &[("authorization", &auth)], &initialize(json!(1))).await.header("mcp-session-id").unwrap() }
    };
    let (mine, theirs, spare) = (session(dev()).await, session(admin()).await, session(dev()).await);
    let (first, stream1) = open_stream(gw.addr, &dev(), &mine).await;
    let (second, _stream2) = open_stream(gw.addr, &dev(), &mine).await;
    assert_eq!((first, second), (200, 200), "two streams within the limit");
    let third = rpc(&gw.url(), &[("authorization", &dev()), ("mcp-session-id", &mine)], &list_tools(json!(3))).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS, "{}", third.body);
    gw.denied("caller_in_flight", 429).await;
    // At its limit a client may still answer what its streams wait for (an elicitation), send
    // notifications and end sessions: those hold no stream.
    let headers = [("authorization", dev()), ("mcp-session-id", mine.clone())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answer = json!({"jsonrpc": "2.0", "id": "elicit-1", "result": {"action": "accept", "content": {}}});
    assert_eq!(rpc(&gw.url(), &headers, &answer).await.status, StatusCode::ACCEPTED, "an answer");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}});
    assert_eq!(rpc(&gw.url(), &headers, &note).await.status, StatusCode::ACCEPTED, "a notification");
    let end = send(Method::DELETE, &gw.url(), &[("authorization", &dev()), ("mcp-session-id", &spare)], None).await;
    assert_eq!(end.unwrap().status, StatusCode::OK, "ending a session");
    let (other, _stream3) = open_stream(gw.addr, &admin(), &theirs).await;
    assert_eq!(other, 200, "another caller is served");
    let r = rpc(&gw.url(), &[("authorization", &admin()), ("mcp-session-id", &theirs)], &list_tools(json!(4))).await;
    assert_eq!(r.status, StatusCode::OK);
    // The client closes one stream: its permit is free again.
    drop(stream1);
    let again = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r =
                rpc(&gw.url(), &[("authorization", &dev()), ("mcp-session-id", &mine)], &list_tools(json!(5))).await;
            if r.status == StatusCode::OK {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(again.is_ok(), "a closed stream frees its caller's permit");
}

#[tokio::test]
async fn server_everything_never_runs_a_denied_tool_by_another_path() {
    let (_server, port) = server_everything_http().await;
    let dir = tempdir("se-attack");
    let gw = Gw::start(
        &policy(json!({
            "authentication": jwt_auth(&dir, None, true),
            "authorization": rbac(&["admin", "developer"], json!({"developer": ["echo"]})),
        })),
        &["--upstream".into(), format!("http://127.0.0.1:{port}/mcp"), "--check-interval".into(), "60s".into()],
    )
    .await;
    gw.wait_ready(Duration::from_secs(30)).await;
    let init = rpc(&gw.url(), &[("authorization", &dev())], &initialize(json!(1))).await;
    let sid = init.header("mcp-session-id").expect("session");
    let token = dev();
    let mut h = post_headers(&token);
    h.extend([("mcp-session-id", sid.as_str()), ("mcp-protocol-version", "2025-06-18")]);
    for path in PATH_VARIANTS {
        let body = call_tool(json!(9), "get-env", json!({})).to_string();
        let r = raw(gw.addr, &request("POST", path, &h, &body)).await;
        assert!(r.status == 404 || r.status == 400, "{path:?}: {}", r.status);
        assert!(!r.body.contains("PATH") && !r.body.contains("HOME"), "{path:?}: the environment leaked");
        let list = raw(gw.addr, &request("POST", path, &h, &list_tools(json!(10)).to_string())).await;
        assert!(!list.body.contains("get-env"), "{path:?}: unfiltered tools/list");
    }
    let r = raw(gw.addr, &request("POST", "/mcp", &h, &call_tool(json!(11), "get-env", json!({})).to_string())).await;
    assert_eq!(r.status, 403);
    let r = raw(gw.addr, &request("POST", "/mcp", &h, &list_tools(json!(12)).to_string())).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("echo") && !r.body.contains("get-env"), "{}", r.body);
}

#[tokio::test]
async fn websocket_frames_take_the_same_admission_and_answers_the_same_filter() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let (addr, seen) = ws_server(true).await;
    let dir = tempdir("ws-attack");
    let gw = ws_gateway(
        addr,
        &policy(json!({
            "authentication": jwt_auth(&dir, None, true),
            "authorization": rbac(&["developer"], json!({"developer": ["echo"]})),
            "cors": {"allowedOrigins": ["https://app.example.com"]},
        })),
    )
    .await;
    // The upgrade is on the exact path, from an allowed origin, with credentials.
    for (path, origin, want) in [
        ("/mcp/", None, 404u16),
        ("/MCP", None, 404),
        ("/mcp", Some("http://evil.example"), 403),
        ("/mcp", Some("null"), 403),
    ] {
        let mut req = format!("ws://{}{path}", gw.addr).into_client_request().unwrap();
        req.headers_mut().insert("authorization", dev().parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await.unwrap_err() {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                assert_eq!(r.status().as_u16(), want, "{path} {origin:?}")
            }
            e => panic!("{path}: {e}"),
        }
    }
    let mut req = format!("ws://{}/mcp", gw.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", dev().parse().unwrap());
    req.headers_mut().insert("origin", "https://app.example.com".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    for frame in [
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"admin-reset","m":"m-ws1"}}"#,
        r#"[{"jsonrpc":"2.0","id":"m-ws2","method":"tools/call","params":{"name":"admin-reset"}}]"#,
        r#"{"jsonrpc":"2.0","id":"m-ws3","method":"tools/call","params":{"name":"echo","name":"admin-reset"}}"#,
        r#"{"jsonrpc":"2.0","id":"m-ws4","method":"Tools/Call","params":{"name":"admin-reset"}}"#,
        r#"{"jsonrpc":"2.0","id":"m-ws5","method":"tools/call","params":{"name":"admin-reset"}}"#,
    ] {
        ws.send(Message::text(frame)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert!(v.to_string().contains("\"error\""), "{frame}: {v}");
    }
    assert!(seen.lock().unwrap().iter().all(|m| !m.contains("m-ws")), "a refused frame reached the server");
    // The hostile server answers tools/list under its own id after a frame that is not JSON:
    // the non-JSON frame is dropped, the list is filtered anyway.
    ws.send(Message::text(list_tools(json!(1)).to_string())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    let text = reply.to_text().unwrap().to_string();
    assert!(!text.contains("admin-reset"), "{text}");
    assert_eq!(tool_names(&serde_json::from_str(&text).unwrap()), vec!["echo"]);
}

#[tokio::test]
async fn the_stdio_bridge_takes_the_same_admission() {
    let dir = tempdir("stdio-attack");
    let record = dir.join("received.jsonl");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/recording_stdio_server.py");
    let gw = Gw::start(
        &policy(json!({
            "authentication": jwt_auth(&dir, None, true),
            "authorization": rbac(&["admin", "developer"], json!({"developer": ["echo"]})),
        })),
        &[
            "--stdio".into(),
            "--check-interval".into(),
            "60s".into(),
            "--".into(),
            "python3".into(),
            script.display().to_string(),
            record.display().to_string(),
        ],
    )
    .await;
    gw.wait_ready(Duration::from_secs(20)).await;
    let received = || std::fs::read_to_string(&record).unwrap_or_default();
    let init = rpc(&gw.url(), &[("authorization", &dev())], &initialize(json!(1))).await;
    let sid = init.header("mcp-session-id").expect("session");
    let token = dev();
    let mut h = post_headers(&token);
    h.extend([("mcp-session-id", sid.as_str())]);
    for path in PATH_VARIANTS {
        let r = raw(
            gw.addr,
            &request("POST", path, &h, &call_tool(json!("m-b-path"), "admin-reset", json!({})).to_string()),
        )
        .await;
        assert!(r.status == 404 || r.status == 400, "{path:?}: {}", r.status);
    }
    for method in ["PUT", "PATCH"] {
        let r = raw(
            gw.addr,
            &request(method, "/mcp", &h, &call_tool(json!("m-b-method"), "admin-reset", json!({})).to_string()),
        )
        .await;
        assert_eq!(r.status, 405);
    }
    for body in [
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"admin-reset","m":"m-b-note"}}"#,
        r#"{"jsonrpc":"2.0","id":"m-b-dup","method":"tools/call","params":{"name":"echo","name":"admin-reset"}}"#,
        r#"{"jsonrpc":"2.0","id":"m-b-case","method":"Tools/Call","params":{"name":"admin-reset"}}"#,
        r#"[{"jsonrpc":"2.0","id":"m-b-batch","method":"tools/call","params":{"name":"admin-reset"}}]"#,
    ] {
        let r = raw(gw.addr, &request("POST", "/mcp", &h, body)).await;
        assert!(r.status == 400 || r.status == 403, "{body}: {}", r.status);
    }
    let foreign = rpc(
        &gw.url(),
        &[("authorization", &admin()), ("mcp-session-id", &sid)],
        &call_tool(json!("m-b-foreign"), "echo", json!({})),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let unknown = rpc(
        &gw.url(),
        &[("authorization", &dev()), ("mcp-session-id", "nope")],
        &call_tool(json!("m-b-unknown"), "echo", json!({})),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(!received().contains("m-b-"), "a refused message reached the server: {}", received());
    // What passes arrives as checked: one line, ids the gateway's, answers mapped back and filtered.
    let ok =
        raw(gw.addr, &request("POST", "/mcp", &h, "{\"jsonrpc\":\"2.0\",\"id\":1.0,\n \"method\":\"tools/list\"}"))
            .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        ok.body.contains("\"id\":1.0") && ok.body.contains("echo") && !ok.body.contains("admin-reset"),
        "{}",
        ok.body
    );
    let last = received().lines().last().unwrap().to_string();
    assert!(
        last.starts_with("{\"jsonrpc\":\"2.0\",\"id\":\"mcpgw-") && last.ends_with("\"method\":\"tools/list\"}"),
        "{last}"
    );
}

/// A connection from the loopback address `source` (all of 127/8 is this host) that sends nothing.
async fn connect_from(source: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the gateway has closed `tcp` (EOF or reset within a moment).
async fn is_closed(tcp: &mut tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

/// Send `request` on `tcp` and read the answer's status (the request asks for `connection: close`).
async fn status_on(tcp: &mut tokio::net::TcpStream, request: &[u8]) -> u16 {
    tcp.write_all(request).await.unwrap();
    let mut buf = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn idle_connections_of_one_address_push_out_only_their_own() {
    let rec = Recorder::start().await;
    let dir = tempdir("idle");
    let gw = Gw::start(
        &policy(json!({"authentication": jwt_auth(&dir, None, true)})),
        &[rec.upstream_args(), vec!["--max-unauthenticated-connections".into(), "8".into()]].concat(),
    )
    .await;
    // 127.0.0.2 fills the table of connections that have not authenticated yet and keeps
    // opening more (a slowloris).
    let mut flood = vec![];
    for _ in 0..16 {
        flood.push(connect_from([127, 0, 0, 2], gw.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A client from another address still gets in, and stays in while the flood goes on.
    let mut client = connect_from([127, 0, 0, 1], gw.addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..32 {
        flood.push(connect_from([127, 0, 0, 2], gw.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = list_tools(json!("m-idle")).to_string();
    assert_eq!(status_on(&mut client, &request("POST", "/mcp", &post_headers(&dev()), &body)).await, 200);
    assert_eq!(rec.with_marker("m-idle"), 1);
    // Only the flood paid: all but its newest (at most 7 with the client in the table) closed.
    let mut closed = 0;
    for tcp in &mut flood {
        closed += usize::from(is_closed(tcp).await);
    }
    assert!(closed >= flood.len() - 7, "{closed} of {} flood connections closed", flood.len());
    assert!(gw.metrics().await.contains("too_many_unauthenticated_connections"));
    // The admin port too: an address opening many idle connections loses its oldest, and the
    // probes are answered.
    let mut idle = vec![];
    for _ in 0..130 {
        idle.push(connect_from([127, 0, 0, 3], gw.admin).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(is_closed(&mut idle[0]).await, "the oldest idle admin connection was closed to make room");
    assert!(!is_closed(&mut idle[129]).await);
    let r = send(Method::GET, &gw.admin_url("/healthz"), &[], None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn bodies_cost_their_bytes_and_one_caller_cannot_hold_the_budget() {
    let rec = Recorder::start().await;
    let dir = tempdir("budget");
    // 256 KiB in all; a caller's share is a quarter (64 KiB, one largest body), a body being read
    // counts 16 KiB at least: at most 4 of one caller's bodies at once.
    let gw = Gw::start(
        &policy(json!({"authentication": jwt_auth(&dir, None, true)})),
        &[
            rec.upstream_args(),
            ["--max-buffered-bytes", "262144", "--max-body-bytes", "65536"].map(String::from).to_vec(),
        ]
        .concat(),
    )
    .await;
    // A body sent one byte per chunk costs its bytes, not a KiB per chunk (1,000 chunks would
    // have needed 1,000 KiB of the 256).
    let body = json!({"jsonrpc": "2.0", "id": "m-chunks", "method": "tools/list", "params": {"pad": "x".repeat(900)}})
        .to_string();
    let mut chunked = format!(
        "POST /mcp HTTP/1.1\r\nhost: gw\r\nconnection: close\r\nauthorization: {}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        dev()
    );
    for b in body.chars() {
        chunked.push_str(&format!("1\r\n{b}\r\n"));
    }
    chunked.push_str("0\r\n\r\n");
    assert!(body.len() > 256 + 64, "more chunks than the budget has KiB");
    let r = raw(gw.addr, chunked.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(rec.with_marker("m-chunks"), 1);
    // One caller sending bodies slowly holds at most its share: the fifth is refused, another
    // caller is served.
    let mut slow = vec![];
    for _ in 0..4 {
        let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let head = format!("POST /mcp HTTP/1.1\r\nhost: gw\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{", dev());
        tcp.write_all(head.as_bytes()).await.unwrap();
        slow.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r =
        raw(gw.addr, &request("POST", "/mcp", &post_headers(&dev()), &list_tools(json!("m-fifth")).to_string())).await;
    assert_eq!(r.status, 429, "{}", r.head);
    assert_eq!(rec.with_marker("m-fifth"), 0);
    gw.denied("caller_in_flight", 429).await;
    let r = raw(gw.addr, &request("POST", "/mcp", &post_headers(&admin()), &list_tools(json!("m-other")).to_string()))
        .await;
    assert_eq!(r.status, 200, "{}", r.head);
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r =
        raw(gw.addr, &request("POST", "/mcp", &post_headers(&dev()), &list_tools(json!("m-again")).to_string())).await;
    assert_eq!(r.status, 200, "the share is given back with the bodies: {}", r.head);
}

#[tokio::test]
async fn websocket_frames_count_against_the_rate_limit_refused_or_not() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let (addr, seen) = ws_server(false).await;
    let dir = tempdir("ws-rate");
    let gw = ws_gateway(
        addr,
        &policy(json!({
            "authentication": jwt_auth(&dir, None, true),
            "authorization": rbac(&["developer"], json!({"developer": ["echo"]})),
            "rateLimiting": {"requestsPerMinute": 1, "burstSize": 4},
        })),
    )
    .await;
    let mut req = format!("ws://{}/mcp", gw.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", dev().parse().unwrap());
    // The upgrade is one request of the burst of 4.
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut next = async |frame: String| -> Value {
        ws.send(Message::text(frame)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        serde_json::from_str(reply.to_text().unwrap()).unwrap()
    };
    for i in 0..3 {
        let v = next(call_tool(json!(format!("m-wsr{i}")), "admin-reset", json!({})).to_string()).await;
        assert!(v["error"]["message"].as_str().unwrap_or("").contains("not allowed"), "{v}");
    }
    // The burst is spent on refused frames: an allowed call is now rate limited, under its id.
    let v = next(call_tool(json!("m-wsr-echo"), "echo", json!({"message": "hi"})).to_string()).await;
    assert_eq!(v["id"], "m-wsr-echo", "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("rate limit"), "{v}");
    // A batch: an error for each request in it, none for its notification.
    let batch =
        json!([call_tool(json!("m-wsr-b1"), "echo", json!({})), {"jsonrpc": "2.0", "method": "notifications/x"}]);
    let v = next(batch.to_string()).await;
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["id"], "m-wsr-b1", "{v}");
    assert!(seen.lock().unwrap().iter().all(|m| !m.contains("m-wsr")), "nothing reached the server");
}
