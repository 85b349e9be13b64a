//! `--transport websocket`: the upgrade is authenticated, each message is checked and audited,
//! tools/list answers are filtered, and the server never sees a refused message.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websocket_pass_through_enforces_the_policy() {
    let (addr, seen) = ws_server(false).await;
    let dir = tempdir("ws");
    let gw = ws_gateway(
        addr,
        &policy(json!({
            "authentication": jwt_auth(&dir, None, true),
            "authorization": rbac(&["developer"], json!({"developer": ["echo"]})),
        })),
    )
    .await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let status = send(http::Method::GET, &gw.admin_url("/status"), &[], None).await.unwrap().json();
    assert_eq!(status["name"], "ws-server");

    // no token: refused at the upgrade
    let url = format!("ws://{}/mcp", gw.addr);
    let err = tokio_tungstenite::connect_async(url.as_str()).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), StatusCode::UNAUTHORIZED),
        e => panic!("expected 401, got {e}"),
    }
    gw.denied("missing_credentials", 401).await;

    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", bearer(&hs256(&claims("dev", &["developer"]))).parse().unwrap());
    req.headers_mut().insert("sec-websocket-protocol", "mcp".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "mcp");
    let mut ask = async |msg: Value| -> Value {
        ws.send(Message::text(msg.to_string())).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let list = ask(list_tools(json!(1))).await;
    assert_eq!(tool_names(&list), vec!["echo"], "filtered");
    let ok = ask(call_tool(json!(2), "echo", json!({}))).await;
    assert_eq!(ok["result"]["content"][0]["text"], "called");
    let denied = ask(call_tool(json!("m-ws-tool"), "admin-reset", json!({}))).await;
    assert_eq!(denied["error"]["code"], -32001);
    let bad = ask(json!({"jsonrpc": "2.0", "id": "m-ws-bad"})).await;
    assert_eq!(bad["error"]["code"], -32600);
    gw.denied("tool_denied", 403).await;
    gw.denied("invalid_request", 400).await;
    let a = gw.audit_where("ws allow", |r| r["http_method"] == "WS" && r["tool"] == "echo").await;
    assert_eq!(a["decision"], "allow");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|m| !m.contains("m-ws-")));

    // A connection ends when its credential expires: exp 27 s ago is accepted for about 3 more
    // seconds (30 s clock skew allowance); then the gateway closes with 1008 (policy).
    let mut c = claims("short-lived", &["developer"]);
    c["exp"] = json!(now() - 27);
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", bearer(&hs256(&c)).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(call_tool(json!(3), "echo", json!({})).to_string())).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");
    let closed = tokio::time::timeout(Duration::from_secs(15), ws.next()).await.expect("closed in time");
    match closed {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1008);
            assert_eq!(f.reason.as_str(), "credential expired");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(gw.metrics().await.contains(r#"mcp_gateway_denials_total{reason="stream_credential_expired"} 1"#));
}

/// Tasks over WebSocket: a connection's caller owns the tasks created through it; another caller
/// never reaches them and its task list hides them, though the server shares one store.
/// Sends `msg` over `ws` and returns the next text frame, as JSON.
async fn ask<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, msg: Value) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(msg.to_string())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn websocket_tasks_stay_with_their_caller() {
    let (addr, seen) = ws_server(false).await;
    let dir = tempdir("ws-tasks");
    let gw = ws_gateway(addr, &policy(json!({"authentication": jwt_auth(&dir, None, true)}))).await;
    let url = format!("ws://{}/mcp", gw.addr);
    let connect = async |sub: &str| {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("authorization", bearer(&hs256(&claims(sub, &["user"]))).parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap().0
    };
    let (mut alice, mut bob) = (connect("alice").await, connect("bob").await);
    let create = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"who": "ws-alice"}, "task": {"ttl": 1000}}});
    let created = ask(&mut alice, create).await;
    assert_eq!(created["result"]["task"]["taskId"], "ws-task-ws-alice");
    let get = |id: &str| json!({"jsonrpc": "2.0", "id": "m-ws-task", "method": "tasks/get", "params": {"taskId": id}});
    let stolen = ask(&mut bob, get("ws-task-ws-alice")).await;
    assert_eq!(stolen["error"]["code"], -32602, "{stolen}");
    assert_eq!(stolen["id"], "m-ws-task");
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/list", "params": {}});
    assert_eq!(ask(&mut bob, list.clone()).await["result"]["tasks"], json!([]));
    let mine = ask(&mut alice, list).await;
    assert_eq!(mine["result"]["tasks"], json!([{"taskId": "ws-task-ws-alice", "status": "completed"}]));
    assert_eq!(ask(&mut alice, get("ws-task-ws-alice")).await["result"]["status"], "completed");
    gw.denied("task_not_found", 400).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|m| m.contains("m-ws-task")).count(), 1, "only alice's tasks/get: {seen:?}");
}

/// Opens a WebSocket to `gw` over raw TCP (the handshake done).
async fn raw_socket(gw: &Gw) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let upgrade = format!(
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        gw.addr
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// A masked client frame: `first` (FIN and opcode), declaring `declared` payload bytes, `sent` of
/// them.
fn frame(first: u8, declared: u64, sent: usize) -> Vec<u8> {
    let mut frame = vec![first, 0x80 | 127];
    frame.extend_from_slice(&declared.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend(std::iter::repeat_n(b'x' ^ 1, sent));
    frame
}

/// A masked ping (or pong) with no payload.
fn control(opcode: u8) -> Vec<u8> {
    vec![0x80 | opcode, 0x80, 1, 2, 3, 4]
}

/// Opens a WebSocket to `gw` over raw TCP and sends the header of a masked text frame declaring
/// `declared` bytes, then `sent` of them: a message that is never completed.
async fn partial_message(gw: &Gw, declared: u64, sent: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = raw_socket(gw).await;
    // The gateway may close before all of it is read (over its budget).
    let _ = tcp.write_all(&frame(0x81, declared, sent)).await;
    tcp
}

/// Reads until the gateway closes the connection (a close frame, then EOF or a reset); the bytes
/// read.
async fn until_closed(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A WebSocket message is charged to the body budget while it is read, and bounded in time, like a
/// request body: a caller sending every message but its last byte holds no more than one sending
/// slow bodies.
#[tokio::test]
async fn an_incomplete_websocket_message_is_bounded_in_time_and_bytes() {
    let (addr, _) = ws_server(false).await;
    let upstream = format!("http://{addr}/mcp");
    let start = |timeout: &str| {
        let args = [
            "--upstream",
            &upstream,
            "--transport",
            "websocket",
            "--check-interval",
            "60s",
            "--body-timeout",
            timeout,
            "--max-buffered-bytes",
            "262144",
        ]
        .map(String::from);
        async move { Gw::start(&json!({"enabled": false}), &args).await }
    };
    // In time: a message not completed within --body-timeout closes the socket (1008).
    let gw = start("1s").await;
    let mut tcp = partial_message(&gw, 100_000, 1_000).await;
    let began = std::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(10), until_closed(&mut tcp)).await.expect("closed in time");
    assert!(began.elapsed() >= Duration::from_millis(900), "not before the timeout: {:?}", began.elapsed());
    assert!(got.starts_with(&[0x88]) && got.len() >= 4, "a close frame: {got:?}");
    assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1008);
    assert!(gw.metrics().await.contains(r#"mcp_gateway_denials_total{reason="body_timeout"} 1"#));
    // A pong between the fragments of an unfinished message leaves it charged and timed.
    {
        use tokio::io::AsyncWriteExt;
        let mut tcp = raw_socket(&gw).await;
        let mut first_fragment = frame(0x01, 1_000, 1_000);
        first_fragment.extend(control(0xA));
        tcp.write_all(&first_fragment).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), until_closed(&mut tcp)).await.expect("closed in time");
        assert!(got.starts_with(&[0x88]), "a close frame: {got:?}");
    }
    // A ping on its own (a keep-alive) is no unfinished message: the socket stays.
    {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/mcp", gw.addr)).await.unwrap();
        ws.send(Message::Ping(vec![7].into())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        ws.send(Message::text(list_tools(json!(1)).to_string())).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
                Some(Ok(Message::Pong(_))) => continue,
                Some(Ok(Message::Text(t))) => break assert!(t.as_str().contains("tools"), "{t}"),
                other => panic!("{other:?}"),
            }
        }
    }
    // In bytes: more than --max-buffered-bytes of one unfinished message closes it at once.
    let gw = start("60s").await;
    let mut tcp = partial_message(&gw, 1_000_000, 300_000).await;
    tokio::time::timeout(Duration::from_secs(10), until_closed(&mut tcp)).await.expect("closed at once");
    // What it held is free again: a whole message gets through.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/mcp", gw.addr)).await.unwrap();
    ws.send(Message::text(list_tools(json!(1)).to_string())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => assert!(t.as_str().contains("tools"), "{t}"),
        other => panic!("{other:?}"),
    }
}

/// A WebSocket's requests count against its caller's in-flight limit until answered (or
/// cancelled), as HTTP requests do: one socket cannot have more requests running at the server
/// than its caller may.
#[tokio::test]
async fn a_websockets_requests_count_against_the_callers_in_flight_limit() {
    let (addr, seen) = ws_server(false).await;
    let dir = tempdir("ws-inflight");
    let upstream = format!("http://{addr}/mcp");
    let args = [
        "--upstream",
        &upstream,
        "--transport",
        "websocket",
        "--check-interval",
        "60s",
        "--max-in-flight-per-caller",
        "3",
    ]
    .map(String::from);
    let gw = Gw::start(&policy(json!({"authentication": jwt_auth(&dir, None, true)})), &args).await;
    let mut req = format!("ws://{}/mcp", gw.addr).into_client_request().unwrap();
    req.headers_mut().insert("authorization", bearer(&hs256(&claims("dev", &["developer"]))).parse().unwrap());
    // The socket holds one permit, each request awaiting its answer one more.
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    for id in [1, 2] {
        ws.send(Message::text(call_tool(json!(id), "hang", json!({})).to_string())).await.unwrap();
    }
    let refused = ask(&mut ws, call_tool(json!("m-ws-busy"), "echo", json!({}))).await;
    assert_eq!(refused["id"], "m-ws-busy");
    assert!(refused["error"]["message"].as_str().unwrap().contains("in flight"), "{refused}");
    // Cancelled: the server sends no answer, and the request is done.
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
    ws.send(Message::text(cancel.to_string())).await.unwrap();
    // Answered requests give their permits back: any number, one after the other.
    for id in 3..8 {
        let ok = ask(&mut ws, call_tool(json!(id), "echo", json!({}))).await;
        assert_eq!(ok["result"]["content"][0]["text"], "called", "{ok}");
    }
    gw.denied("caller_in_flight", 429).await;
    assert!(
        !seen.lock().unwrap().iter().any(|m| m.contains("m-ws-busy")),
        "the refused request never reached the server"
    );
}
