//! The adversarial battery: one test per attack. Each asserts the status code, an audit record,
//! and that the recording upstream never saw the denied request (the request carries a unique
//! marker in its JSON-RPC id).

mod common;

use base64::Engine;
use common::*;
use http::{Method, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

async fn setup() -> (Recorder, Idp, Gw) {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": [jwk("rsa-a")]})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    (rec, idp, gw)
}

/// Send a tools/call with `marker` as its id and this Authorization header.
async fn attempt(gw: &Gw, auth: &str, marker: &str) -> Resp {
    rpc(&gw.url(), &[("authorization", auth)], &call_tool(json!(marker), "echo", json!({"message": "x"}))).await
}

async fn assert_401(gw: &Gw, rec: &Recorder, token: &str, marker: &str, reason: &str) {
    let r = attempt(gw, &bearer(token), marker).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let challenge = r.header("www-authenticate").expect("WWW-Authenticate");
    assert!(challenge.starts_with("Bearer resource_metadata=\""), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(r.json()["id"], Value::Null, "the body of an unauthenticated request is never read");
    assert_eq!(r.header("connection").as_deref(), Some("close"), "and its connection ends");
    let a = gw.denied(reason, 401).await;
    assert_eq!((a["http_method"].as_str(), a["method"].as_str()), (Some("POST"), None), "refused before the body: {a}");
    assert_eq!(rec.with_marker(marker), 0, "the backend saw a denied request");
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn alg_none() {
    let (rec, _idp, gw) = setup().await;
    let token = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims("mallory", &["admin"])));
    assert_401(&gw, &rec, &token, "m-alg-none", "invalid_token").await;
}

#[tokio::test]
async fn hs_rs_confusion() {
    // Only a JWKS (no shared secret): an HS256 token "signed" with the RSA public key must fail.
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": [jwk("rsa-a")]})).await;
    let dir = tempdir("conf");
    let gw = Gw::start(
        &policy(json!({"authentication": jwt_auth(&dir, Some(&idp.jwks_uri()), false)})),
        &rec.upstream_args(),
    )
    .await;
    let public = std::fs::read(fixture("rsa-a.pub.pem")).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-a".into());
    let token = encode(&h, &claims("mallory", &["admin"]), &EncodingKey::from_secret(&public).unwrap()).unwrap();
    assert_401(&gw, &rec, &token, "m-confusion", "not accepted").await;
    // and the same key as an RS256 signer works, so the JWKS itself is fine
    let ok = attempt(&gw, &bearer(&rs256(&claims("alice", &[]), "rsa-a", Some("rsa-a"))), "ok-confusion").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

#[tokio::test]
async fn expired() {
    let (rec, _idp, gw) = setup().await;
    let mut c = claims("alice", &["developer"]);
    c["exp"] = json!(now() - 3600);
    assert_401(&gw, &rec, &hs256(&c), "m-expired", "token expired").await;
}

#[tokio::test]
async fn not_yet_valid() {
    let (rec, _idp, gw) = setup().await;
    let mut c = claims("alice", &["developer"]);
    c["nbf"] = json!(now() + 3600);
    assert_401(&gw, &rec, &hs256(&c), "m-nbf", "not yet valid").await;
}

#[tokio::test]
async fn wrong_issuer() {
    let (rec, _idp, gw) = setup().await;
    let mut c = claims("alice", &["developer"]);
    c["iss"] = json!("https://evil.test");
    assert_401(&gw, &rec, &rs256(&c, "rsa-a", Some("rsa-a")), "m-iss", "wrong issuer").await;
}

#[tokio::test]
async fn wrong_audience() {
    let (rec, _idp, gw) = setup().await;
    let mut c = claims("alice", &["developer"]);
    c["aud"] = json!("another-api");
    assert_401(&gw, &rec, &hs256(&c), "m-aud", "wrong audience").await;
}

#[tokio::test]
async fn bad_signature() {
    let (rec, _idp, gw) = setup().await;
    // signed with key b, claiming to be key a
    let token = rs256(&claims("alice", &["developer"]), "rsa-b", Some("rsa-a"));
    assert_401(&gw, &rec, &token, "m-badsig", "bad signature").await;
    // a tampered HS256 payload
    let good = hs256(&claims("alice", &["developer"]));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(&claims("alice", &["admin"])), parts[2]);
    assert_401(&gw, &rec, &forged, "m-forged", "bad signature").await;
}

#[tokio::test]
async fn unknown_kid() {
    let (rec, idp, gw) = setup().await;
    let before = idp.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);
    let token = rs256(&claims("alice", &["developer"]), "rsa-b", Some("rsa-b"));
    assert_401(&gw, &rec, &token, "m-kid", "unknown kid").await;
    let after = idp.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after > before, "an unknown kid refreshes the JWKS ({before} -> {after})");
}

#[tokio::test]
async fn missing_role() {
    let (rec, _idp, gw) = setup().await;
    let r = attempt(&gw, &bearer(&hs256(&claims("guest", &["viewer"]))), "m-role").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let a = gw.denied("not allowed", 403).await;
    assert_eq!(a["identity"], "guest");
    assert_eq!(rec.with_marker("m-role"), 0);
    // no roles claim at all
    let mut c = claims("nobody", &[]);
    c.as_object_mut().unwrap().remove("roles");
    assert_eq!(attempt(&gw, &bearer(&hs256(&c)), "m-role2").await.status, StatusCode::FORBIDDEN);
    assert_eq!(rec.with_marker("m-role2"), 0);
}

#[tokio::test]
async fn tool_not_allowed() {
    let (rec, _idp, gw) = setup().await;
    let token = hs256(&claims("dev", &["developer"]));
    let r =
        rpc(&gw.url(), &[("authorization", &bearer(&token))], &call_tool(json!("m-tool"), "admin-reset", json!({})))
            .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let body = r.json();
    assert_eq!(body["id"], "m-tool");
    assert_eq!(body["error"]["code"], -32001, "{body}");
    let a = gw.denied("tool_denied", 403).await;
    assert_eq!(a["tool"], "admin-reset");
    assert_eq!(rec.with_marker("m-tool"), 0);
    // a prefix pattern and an exact name pass
    let ok =
        rpc(&gw.url(), &[("authorization", &bearer(&token))], &call_tool(json!("ok-tool"), "search_docs", json!({})))
            .await;
    assert_eq!(ok.json()["result"]["content"][0]["text"], "called search_docs");
    // a batch smuggling a denied call is refused whole
    let batch = json!([
        call_tool(json!("m-smuggle-1"), "echo", json!({})),
        call_tool(json!("m-smuggle-2"), "admin-reset", json!({}))
    ]);
    let r = rpc(&gw.url(), &[("authorization", &bearer(&token))], &batch).await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert!(r.json().as_array().unwrap().iter().all(|e| e["error"]["code"] == -32001));
    assert_eq!(rec.with_marker("m-smuggle"), 0);
}

#[tokio::test]
async fn oversized_body() {
    let (rec, _idp, gw) = setup().await;
    let token = hs256(&claims("dev", &["developer"]));
    let big = "x".repeat(5 * 1024 * 1024);
    let msg = call_tool(json!("m-big"), "echo", json!({"message": big}));
    let r = rpc(&gw.url(), &[("authorization", &bearer(&token))], &msg).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"]["code"], -32600);
    gw.denied("body_too_large", 413).await;
    assert_eq!(rec.with_marker("m-big"), 0);
    // without a Content-Length (chunked), the limit still holds while reading
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..5 {
        if tcp.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_err() {
            break;
        }
        if tcp.write_all(&chunk).await.is_err() || tcp.write_all(b"\r\n").await.is_err() {
            break;
        }
    }
    let mut buf = vec![0u8; 256];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"), "{}", String::from_utf8_lossy(&buf[..n]));
}

#[tokio::test]
async fn malformed_json_rpc() {
    let (rec, _idp, gw) = setup().await;
    let auth = bearer(&hs256(&claims("dev", &["developer"])));
    let h = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("authorization", auth.as_str()),
    ];
    let r = send(Method::POST, &gw.url(), &h, Some("{\"m-malformed\": ".into())).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], -32700);
    gw.denied("parse_error", 400).await;
    let r = send(Method::POST, &gw.url(), &h, Some(json!({"jsonrpc": "2.0", "id": "m-invalid"}).to_string()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], -32600);
    assert_eq!(r.json()["id"], "m-invalid");
    gw.denied("invalid_request", 400).await;
    assert_eq!(rec.with_marker("m-malformed") + rec.with_marker("m-invalid"), 0);
    // the gateway is still serving
    assert_eq!(attempt(&gw, &auth, "ok-after").await.status, StatusCode::OK);
}

#[tokio::test]
async fn batch_abuse() {
    let (rec, _idp, gw) = setup().await;
    let auth = bearer(&hs256(&claims("dev", &["developer"])));
    let huge: Vec<Value> =
        (0..1000).map(|i| json!({"jsonrpc": "2.0", "id": format!("m-batch-{i}"), "method": "ping"})).collect();
    let r = rpc(&gw.url(), &[("authorization", &auth)], &Value::Array(huge)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], -32600);
    gw.denied("batch_too_large", 400).await;
    let r = rpc(&gw.url(), &[("authorization", &auth)], &json!([])).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let dup = json!([{"jsonrpc": "2.0", "id": "m-dup", "method": "ping"}, {"jsonrpc": "2.0", "id": "m-dup", "method": "ping"}]);
    assert_eq!(rpc(&gw.url(), &[("authorization", &auth)], &dup).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(rec.with_marker("m-batch") + rec.with_marker("m-dup"), 0);
    // a small, well-formed batch passes
    let ok = json!([{"jsonrpc": "2.0", "id": "ok-b1", "method": "ping"}, list_tools(json!("ok-b2"))]);
    let r = rpc(&gw.url(), &[("authorization", &auth)], &ok).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn burst_over_the_limit() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({"rateLimiting": {"requestsPerMinute": 1, "burstSize": 3}})).await;
    let auth = bearer(&hs256(&claims("dev", &["developer"])));
    for i in 0..3 {
        assert_eq!(attempt(&gw, &auth, &format!("ok-burst-{i}")).await.status, StatusCode::OK);
    }
    let r = attempt(&gw, &auth, "m-burst").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    gw.denied("rate_limited", 429).await;
    assert_eq!(rec.with_marker("m-burst"), 0);
    assert_eq!(rec.with_marker("ok-burst"), 3);
    // another identity has its own bucket
    let other = bearer(&hs256(&claims("dev2", &["developer"])));
    assert_eq!(attempt(&gw, &other, "ok-other").await.status, StatusCode::OK);
    assert!(gw.metrics().await.contains("mcp_gateway_rate_limited_total 1"));
}

/// TLS policy with a server certificate from `pki`; `mtls` adds client-certificate auth.
async fn tls_gateway(rec: &Recorder, pki: &Pki, min: &str, mtls: bool) -> Gw {
    let dir = tempdir("tls");
    let server = pki.leaf("localhost", &[], false);
    std::fs::write(dir.join("tls.crt"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &server.key_pem).unwrap();
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
    let mut sections =
        json!({"tls": {"minVersion": min, "certFile": dir.join("tls.crt"), "keyFile": dir.join("tls.key")}});
    if mtls {
        sections["authentication"] =
            json!({"required": true, "methods": ["mtls"], "mtls": {"caFile": dir.join("ca.crt")}});
        sections["authorization"] = rbac(&["ops"], json!({}));
    }
    Gw::start(&policy(sections), &rec.upstream_args()).await
}

fn tls_rpc(marker: &str) -> String {
    call_tool(json!(marker), "echo", json!({})).to_string()
}

const RPC_HEADERS: [(&str, &str); 2] =
    [("content-type", "application/json"), ("accept", "application/json, text/event-stream")];

#[tokio::test]
async fn tls12_client_against_tls13_policy() {
    let rec = Recorder::start().await;
    let pki = Pki::new("test ca");
    let gw = tls_gateway(&rec, &pki, "1.3", false).await;
    let old = tls_client(&pki.ca_pem, &[&rustls::version::TLS12], None);
    let err = tls_send(gw.addr, old, Method::POST, "/mcp", &RPC_HEADERS, Some(tls_rpc("m-tls12"))).await.unwrap_err();
    assert!(err.starts_with("handshake"), "{err}");
    let a =
        gw.audit_where("tls_handshake", |r| r["reason"].as_str().is_some_and(|s| s.starts_with("tls_handshake"))).await;
    assert_eq!((a["decision"].as_str(), a["status"].as_u64()), (Some("deny"), Some(0)));
    assert_eq!(rec.with_marker("m-tls12"), 0);
    let new = tls_client(&pki.ca_pem, &[&rustls::version::TLS13], None);
    let ok = tls_send(gw.addr, new, Method::POST, "/mcp", &RPC_HEADERS, Some(tls_rpc("ok-tls13"))).await.unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    // a 1.2 policy accepts both
    let gw12 = tls_gateway(&rec, &pki, "1.2", false).await;
    let old = tls_client(&pki.ca_pem, &[&rustls::version::TLS12], None);
    assert_eq!(
        tls_send(gw12.addr, old, Method::POST, "/mcp", &RPC_HEADERS, Some(tls_rpc("ok-tls12"))).await.unwrap().status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn mtls_without_certificate() {
    let rec = Recorder::start().await;
    let pki = Pki::new("client ca");
    let gw = tls_gateway(&rec, &pki, "1.3", true).await;
    let cfg = tls_client(&pki.ca_pem, &[&rustls::version::TLS13], None);
    let r = tls_send(gw.addr, cfg, Method::POST, "/mcp", &RPC_HEADERS, Some(tls_rpc("m-nocert"))).await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").unwrap().contains("https://localhost:"));
    gw.denied("missing_credentials", 401).await;
    assert_eq!(rec.with_marker("m-nocert"), 0);
}

#[tokio::test]
async fn mtls_with_wrong_certificate() {
    let rec = Recorder::start().await;
    let pki = Pki::new("client ca");
    let gw = tls_gateway(&rec, &pki, "1.3", true).await;
    let rogue = Pki::new("rogue ca").leaf("mallory", &["ops"], true);
    let cfg = tls_client(&pki.ca_pem, &[&rustls::version::TLS13], Some(&rogue));
    let r = tls_send(gw.addr, cfg, Method::POST, "/mcp", &RPC_HEADERS, Some(tls_rpc("m-rogue"))).await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    gw.denied("invalid_client_certificate", 401).await;
    assert_eq!(rec.with_marker("m-rogue"), 0);
    // the right CA, the right organization (role): allowed, identity = CN
    let good = pki.leaf("alice", &["ops"], true);
    let cfg = tls_client(&pki.ca_pem, &[&rustls::version::TLS13], Some(&good));
    let r = tls_send(gw.addr, cfg, Method::POST, "/mcp", &RPC_HEADERS, Some(tls_rpc("ok-mtls"))).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let a = gw.audit_where("mtls allow", |r| r["decision"] == "allow" && r["auth"] == "mtls").await;
    assert_eq!(a["identity"], "alice");
    // the right CA but an organization that is not an allowed role
    let other = pki.leaf("bob", &["sales"], true);
    let cfg = tls_client(&pki.ca_pem, &[&rustls::version::TLS13], Some(&other));
    let r = tls_send(gw.addr, cfg, Method::POST, "/mcp", &RPC_HEADERS, Some(tls_rpc("m-sales"))).await.unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(rec.with_marker("m-sales"), 0);
}
