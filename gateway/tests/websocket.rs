//! `--transport websocket`: the upgrade is authenticated, each message is checked and audited,
//! tools/list answers are filtered, and the server never sees a refused message.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket MCP server that records the messages of non-probe connections.
async fn ws_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
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
                    let Some(id) = msg.get("id") else { continue };
                    let result = match msg["method"].as_str().unwrap_or("") {
                        "initialize" => {
                            json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "ws-server", "version": "1.0.0"}})
                        }
                        "tools/list" => {
                            json!({"tools": [{"name": "echo", "inputSchema": {}}, {"name": "admin-reset", "inputSchema": {}}]})
                        }
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

#[tokio::test]
async fn websocket_pass_through_enforces_the_policy() {
    let (addr, seen) = ws_server().await;
    let dir = tempdir("ws");
    let gw = Gw::start(
        &policy(json!({
            "authentication": jwt_auth(&dir, None, true),
            "authorization": rbac(&["developer"], json!({"developer": ["echo"]})),
        })),
        &[
            "--upstream".into(),
            format!("http://{addr}/mcp"),
            "--transport".into(),
            "websocket".into(),
            "--check-interval".into(),
            "60s".into(),
        ],
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
