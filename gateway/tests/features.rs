//! Behaviour against the recording upstream: what is passed on and how (tokens stripped, tool
//! lists filtered in JSON, SSE and GET streams), the 401 challenge and protected resource
//! metadata, API keys, OAuth2 introspection, JWKS rotation, TLS reload, sessions, audit levels,
//! the admin port.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn valid_tokens_pass_and_are_not_forwarded() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": [jwk("rsa-a")]})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    for (marker, token) in [
        ("ok-hs", hs256(&claims("alice", &["admin"]))),
        ("ok-rs", rs256(&claims("bob", &["admin"]), "rsa-a", Some("rsa-a"))),
        ("ok-rs-nokid", rs256(&claims("carol", &["admin"]), "rsa-a", None)),
    ] {
        let r = rpc(
            &gw.url(),
            &[("authorization", &bearer(&token)), ("mcp-protocol-version", "2025-06-18")],
            &call_tool(json!(marker), "admin-reset", json!({})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{marker}: {}", r.body);
        assert_eq!(r.json()["result"]["content"][0]["text"], "called admin-reset");
    }
    let seen = rec.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert!(!s.headers.contains_key("authorization"), "the token is not passed through");
        assert_eq!(s.headers["mcp-protocol-version"], "2025-06-18");
        assert_eq!(s.headers["x-forwarded-for"], "127.0.0.1");
    }
    let a = gw.audit_where("allow bob", |r| r["identity"] == "bob").await;
    assert_eq!(
        (a["decision"].as_str(), a["auth"].as_str(), a["tool"].as_str()),
        (Some("allow"), Some("jwt"), Some("admin-reset"))
    );
    assert!(a["latency_ms"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn challenge_and_protected_resource_metadata() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    let r = rpc(&gw.url(), &[], &initialize(json!("m-anon"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let challenge = r.header("www-authenticate").unwrap();
    let expected = format!("Bearer resource_metadata=\"http://{}/.well-known/oauth-protected-resource\"", gw.addr);
    assert_eq!(challenge, expected);
    gw.denied("missing_credentials", 401).await;
    assert_eq!(rec.with_marker("m-anon"), 0);
    let doc = send(Method::GET, &format!("http://{}/.well-known/oauth-protected-resource", gw.addr), &[], None)
        .await
        .unwrap();
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    assert_eq!(doc["resource"], format!("http://{}/mcp", gw.addr));
    assert_eq!(doc["authorization_servers"], json!([ISSUER]));
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    // the path-suffixed form of RFC 9728 too
    let doc2 = send(Method::GET, &format!("http://{}/.well-known/oauth-protected-resource/mcp", gw.addr), &[], None)
        .await
        .unwrap();
    assert_eq!(doc2.json()["resource"], doc["resource"]);
}

#[tokio::test]
async fn tools_list_is_filtered_in_json_sse_and_get_streams() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    let dev = bearer(&hs256(&claims("dev", &["developer"])));
    let admin = bearer(&hs256(&claims("root", &["admin"])));
    let json_list = rpc(&gw.url(), &[("authorization", &dev)], &list_tools(json!(1))).await;
    assert_eq!(tool_names(&json_list.json()), vec!["echo", "search_docs"]);
    let sse_list = rpc(&gw.url(), &[("authorization", &dev), ("accept", SSE_FIRST)], &list_tools(json!(2))).await;
    assert!(sse_list.header("content-type").unwrap().starts_with("text/event-stream"));
    assert!(sse_list.body.contains("id: ev-1"), "other event fields kept: {}", sse_list.body);
    assert_eq!(tool_names(&sse_list.json()), vec!["echo", "search_docs"]);
    let all = rpc(&gw.url(), &[("authorization", &admin), ("accept", SSE_FIRST)], &list_tools(json!(3))).await;
    assert_eq!(tool_names(&all.json()).len(), RECORDER_TOOLS.len(), "admin has no allow list");
    // a batch with a tools/list inside
    let batch = rpc(
        &gw.url(),
        &[("authorization", &dev)],
        &json!([list_tools(json!("b1")), {"jsonrpc": "2.0", "id": "b2", "method": "ping"}]),
    )
    .await;
    assert_eq!(tool_names(&batch.json()[0]), vec!["echo", "search_docs"]);
    // a GET stream replaying a tools/list answer; resumption (Last-Event-ID) is the server's
    let sid = session_of(&gw, &dev).await;
    let h = [
        ("authorization", dev.as_str()),
        ("accept", "text/event-stream"),
        ("mcp-session-id", sid.as_str()),
        ("last-event-id", "ev-41"),
    ];
    let get = send(Method::GET, &gw.url(), &h, None).await.unwrap();
    assert_eq!(tool_names(&get.json()), vec!["echo", "search_docs"]);
    let seen = rec.seen();
    let last = seen.last().unwrap();
    assert_eq!((&last.method, last.headers.get("last-event-id")), (&Method::GET, Some(&"ev-41".parse().unwrap())));
    // Resuming without a session: the events could be anyone's (the server's ids need be neither
    // secret nor scoped), so it never reaches the server.
    let before = rec.seen().len();
    let h = [("authorization", dev.as_str()), ("accept", "text/event-stream"), ("last-event-id", "ev-41")];
    let get = send(Method::GET, &gw.url(), &h, None).await.unwrap();
    assert_eq!(get.status, StatusCode::BAD_REQUEST, "{}", get.body);
    assert_eq!(rec.seen().len(), before, "refused before the server");
    gw.denied("no_session", 400).await;
    // Without resuming, a sessionless GET stream is the server's business.
    let h = [("authorization", dev.as_str()), ("accept", "text/event-stream")];
    assert_eq!(send(Method::GET, &gw.url(), &h, None).await.unwrap().status, StatusCode::OK);
}

/// A session of the caller `auth` (the recorder hands one out on `initialize`).
async fn session_of(gw: &Gw, auth: &str) -> String {
    let init = rpc(&gw.url(), &[("authorization", auth)], &initialize(json!("init"))).await;
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    init.header("mcp-session-id").expect("a session")
}

/// A GET stream, resumed, may replay answers of earlier POSTs: a task list there keeps only the
/// caller's tasks, and a task created there is the caller's.
#[tokio::test]
async fn tasks_are_bound_on_get_streams_too() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    let (alice, bob) = (bearer(&hs256(&claims("alice", &["admin"]))), bearer(&hs256(&claims("bob", &["admin"]))));
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"who": "alice"}, "task": {"ttl": 1000}}});
    let created = rpc(&gw.url(), &[("authorization", &alice)], &call).await.json();
    assert_eq!(created["result"]["task"]["taskId"], "rec-task-alice");
    fn resumed<'a>(who: &'a str, session: &'a str) -> [(&'a str, &'a str); 4] {
        [
            ("authorization", who),
            ("accept", "text/event-stream"),
            ("mcp-session-id", session),
            ("last-event-id", "tasks"),
        ]
    }
    let (alice_session, bob_session) = (session_of(&gw, &alice).await, session_of(&gw, &bob).await);
    let get = send(Method::GET, &gw.url(), &resumed(&bob, &bob_session), None).await.unwrap().json();
    assert_eq!(get[0]["result"]["tasks"], json!([]), "the server's list holds alice's task: {get}");
    assert_eq!(get[1]["result"]["task"]["taskId"], "rec-task-replayed");
    let get = send(Method::GET, &gw.url(), &resumed(&alice, &alice_session), None).await.unwrap().json();
    assert_eq!(get[0]["result"]["tasks"], json!([{"taskId": "rec-task-alice"}]));
    // The task created on bob's stream is bob's.
    let poll =
        |id: &str| json!({"jsonrpc": "2.0", "id": "m-task-poll", "method": "tasks/get", "params": {"taskId": id}});
    assert_eq!(rpc(&gw.url(), &[("authorization", &bob)], &poll("rec-task-replayed")).await.status, StatusCode::OK);
    assert_eq!(
        rpc(&gw.url(), &[("authorization", &alice)], &poll("rec-task-replayed")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(rec.with_marker("m-task-poll"), 1, "only bob's poll reached the server");
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_on_unknown_kid() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": [jwk("rsa-a")]})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    let a = rs256(&claims("alice", &["admin"]), "rsa-a", Some("rsa-a"));
    assert_eq!(rpc(&gw.url(), &[("authorization", &bearer(&a))], &list_tools(json!(1))).await.status, StatusCode::OK);
    let fetched = idp.jwks_fetches.load(Ordering::SeqCst);
    assert_eq!(rpc(&gw.url(), &[("authorization", &bearer(&a))], &list_tools(json!(2))).await.status, StatusCode::OK);
    assert_eq!(idp.jwks_fetches.load(Ordering::SeqCst), fetched, "keys are cached");
    *idp.jwks.lock().unwrap() = json!({"keys": [jwk("rsa-b")]});
    let b = rs256(&claims("alice", &["admin"]), "rsa-b", Some("rsa-b"));
    assert_eq!(rpc(&gw.url(), &[("authorization", &bearer(&b))], &list_tools(json!(3))).await.status, StatusCode::OK);
    assert_eq!(idp.jwks_fetches.load(Ordering::SeqCst), fetched + 1);
}

#[tokio::test]
async fn api_keys_in_constant_time() {
    let rec = Recorder::start().await;
    let dir = tempdir("keys");
    std::fs::write(dir.join("ci-bot.developer"), "key-one\n").unwrap();
    std::fs::write(dir.join("..data"), "hidden").unwrap();
    let gw = Gw::start(
        &policy(json!({
            "authentication": {"required": true, "methods": ["apikey"], "apiKeys": {"dir": dir}},
            "authorization": rbac(&["developer"], json!({"developer": ["echo"]})),
        })),
        &rec.upstream_args(),
    )
    .await;
    let r = rpc(&gw.url(), &[("x-api-key", "key-one")], &call_tool(json!("ok-key"), "echo", json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r =
        rpc(&gw.url(), &[("authorization", "Bearer key-one")], &call_tool(json!("ok-key2"), "echo", json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "a key as a bearer token");
    let a = gw.audit_where("apikey", |r| r["auth"] == "apikey").await;
    assert_eq!(a["identity"], "ci-bot");
    for bad in ["key-two", "hidden", "key-on", "key-one2"] {
        let r = rpc(&gw.url(), &[("x-api-key", bad)], &call_tool(json!("m-badkey"), "echo", json!({}))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    gw.denied("invalid_api_key", 401).await;
    assert_eq!(rec.with_marker("m-badkey"), 0);
    assert!(rec.seen().iter().all(|s| !s.headers.contains_key("x-api-key")));
}

#[tokio::test]
async fn oauth2_introspection_is_cached_within_the_token_lifetime() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let dir = tempdir("oauth");
    std::fs::write(dir.join("client-id"), "gateway").unwrap();
    std::fs::write(dir.join("client-secret"), "s3cret\n").unwrap();
    idp.tokens
        .lock()
        .unwrap()
        .insert("opaque-good".into(), json!({"active": true, "sub": "svc", "exp": now() + 600, "roles": "developer"}));
    idp.tokens.lock().unwrap().insert(
        "opaque-expired".into(),
        json!({"active": true, "sub": "old", "exp": now() - 5, "roles": ["developer"]}),
    );
    let gw = Gw::start(
        &policy(json!({
            "authentication": {"required": true, "methods": ["oauth2"], "oauth2": {
                "introspectionUrl": format!("http://{}/introspect", idp.addr),
                "clientIdFile": dir.join("client-id"), "clientSecretFile": dir.join("client-secret")}},
            "authorization": rbac(&["developer"], json!({})),
        })),
        &rec.upstream_args(),
    )
    .await;
    for i in 0..3 {
        let r = rpc(&gw.url(), &[("authorization", "Bearer opaque-good")], &list_tools(json!(i))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(idp.introspections.load(Ordering::SeqCst), 1, "cached");
    assert_eq!(idp.last_auth.lock().unwrap().as_deref(), Some("Basic Z2F0ZXdheTpzM2NyZXQ="), "client_secret_basic");
    for (tok, marker) in [("opaque-bad", "m-inactive"), ("opaque-expired", "m-oexpired")] {
        let r = rpc(&gw.url(), &[("authorization", &bearer(tok))], &list_tools(json!(marker))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(rec.with_marker(marker), 0);
    }
    gw.denied("not active", 401).await;
    // A token found inactive is refused again without asking (random tokens cannot make the
    // gateway flood the endpoint: at most 16 calls at once, 8 of one client).
    let asked = idp.introspections.load(Ordering::SeqCst);
    for i in 0..3 {
        let r = rpc(&gw.url(), &[("authorization", &bearer("opaque-bad"))], &list_tools(json!(i))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(idp.introspections.load(Ordering::SeqCst), asked, "not asked again");
    // A slow endpoint: one client's fresh tokens take at most 8 calls at once; a token that waits
    // longer than 5 s for a call is answered 503 (retry), not 401 (its token may be good).
    idp.introspection_delay_ms.store(6_500, Ordering::SeqCst);
    let calls: Vec<_> = (0..9)
        .map(|i| {
            let url = gw.url();
            tokio::spawn(async move {
                rpc(&url, &[("authorization", &bearer(&format!("fresh-{i}")))], &list_tools(json!(i))).await.status
            })
        })
        .collect();
    let mut statuses = vec![];
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    statuses.sort();
    assert_eq!(idp.introspections.load(Ordering::SeqCst), asked + 8, "8 calls, the 9th never made");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 8, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE).count(), 1, "{statuses:?}");
}

#[tokio::test]
async fn optional_authentication_and_rate_limit_by_address() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let dir = tempdir("opt");
    let mut auth = jwt_auth(&dir, None, true);
    auth["required"] = json!(false);
    let gw = Gw::start(
        &policy(json!({"authentication": auth, "rateLimiting": {"requestsPerMinute": 1, "burstSize": 2},
                       "audit": {"logLevel": "warn", "retentionDays": 1}})),
        &rec.upstream_args(),
    )
    .await;
    let _ = idp;
    for i in 0..2 {
        assert_eq!(rpc(&gw.url(), &[], &list_tools(json!(i))).await.status, StatusCode::OK);
    }
    assert_eq!(rpc(&gw.url(), &[], &list_tools(json!("m-anon-limited"))).await.status, StatusCode::TOO_MANY_REQUESTS);
    // a bad token is refused even though anonymous callers are let in
    let bad = rpc(&gw.url(), &[("authorization", "Bearer not-a-jwt")], &list_tools(json!("m-badtok"))).await;
    assert!(bad.status == StatusCode::UNAUTHORIZED || bad.status == StatusCode::TOO_MANY_REQUESTS);
    let a = gw.denied("rate_limited", 429).await;
    assert_eq!(a["identity"], "anonymous");
    // logLevel warn: allowed requests are not audited
    assert!(gw.audit().iter().all(|r| r["decision"] != "allow"), "{:?}", gw.audit());
}

#[tokio::test]
async fn sessions_are_bound_to_their_creator() {
    let rec = Recorder::start().await;
    let idp = Idp::start(json!({"keys": []})).await;
    let gw = jwt_gateway(&rec, &idp, json!({})).await;
    let alice = bearer(&hs256(&claims("alice", &["admin"])));
    let bob = bearer(&hs256(&claims("bob", &["admin"])));
    let init = rpc(&gw.url(), &[("authorization", &alice)], &initialize(json!(1))).await;
    let sid = init.header("mcp-session-id").unwrap();
    assert!(gw.metrics().await.contains("mcp_gateway_sessions 1"));
    let ok = rpc(&gw.url(), &[("authorization", &alice), ("mcp-session-id", &sid)], &list_tools(json!(2))).await;
    assert_eq!(ok.status, StatusCode::OK);
    let hijack =
        rpc(&gw.url(), &[("authorization", &bob), ("mcp-session-id", &sid)], &list_tools(json!("m-hijack"))).await;
    assert_eq!(hijack.status, StatusCode::FORBIDDEN);
    assert_eq!(rec.with_marker("m-hijack"), 0);
    let del =
        send(Method::DELETE, &gw.url(), &[("authorization", &alice), ("mcp-session-id", &sid)], None).await.unwrap();
    assert_eq!(del.status, StatusCode::OK);
    assert!(gw.metrics().await.contains("mcp_gateway_sessions 0"));
}

#[tokio::test]
async fn tls_certificate_is_reloaded_when_the_files_change() {
    let rec = Recorder::start().await;
    let pki = Pki::new("reload ca");
    let dir = tempdir("reload");
    let first = pki.leaf("localhost", &[], false);
    std::fs::write(dir.join("tls.crt"), &first.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &first.key_pem).unwrap();
    let gw = Gw::start(
        &policy(json!({"tls": {"minVersion": "1.3", "certFile": dir.join("tls.crt"), "keyFile": dir.join("tls.key")}})),
        &rec.upstream_args(),
    )
    .await;
    let before = served_cert(gw.addr, &pki.ca_pem).await.unwrap();
    // half-written files are not taken: the old certificate stays
    std::fs::write(dir.join("tls.crt"), "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_cert(gw.addr, &pki.ca_pem).await.unwrap(), before);
    let second = pki.leaf("localhost", &[], false);
    std::fs::write(dir.join("tls.key"), &second.key_pem).unwrap();
    std::fs::write(dir.join("tls.crt"), &second.cert_pem).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = served_cert(gw.addr, &pki.ca_pem).await.unwrap();
        if now != before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "certificate not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn admin_port_reports_readiness_status_and_metrics() {
    let rec = Recorder::start().await;
    let gw = Gw::start(&json!({"enabled": false, "policy": null}), &rec.upstream_args()).await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let status = send(Method::GET, &gw.admin_url("/status"), &[], None).await.unwrap().json();
    assert_eq!(status["name"], "recorder");
    assert_eq!(status["version"], "9.9.9");
    assert_eq!(status["protocolVersion"], "2025-06-18");
    assert_eq!(status["tools"], json!(RECORDER_TOOLS));
    assert!(status["capabilities"]["tools"].is_object());
    assert_eq!(status["gateway"]["name"], "test-server");
    // no policy: everything passes, nothing is audited
    let r = rpc(&gw.url(), &[], &call_tool(json!(1), "echo", json!({}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(gw.audit().is_empty());
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"mcp_gateway_requests_total{method="tools/call",tool="echo",status="200",decision="allow"} 1"#),
        "{m}"
    );
    assert!(m.contains("mcp_gateway_upstream_ready 1"));
    assert!(m.contains("mcp_gateway_request_duration_seconds_bucket"));
    assert_eq!(send(Method::GET, &gw.admin_url("/healthz"), &[], None).await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn not_ready_without_a_server() {
    let gw = Gw::start(
        &json!({"enabled": false, "policy": null}),
        &["--upstream".into(), format!("http://127.0.0.1:{}/mcp", free_port()), "--check-interval".into(), "1s".into()],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = send(Method::GET, &gw.admin_url("/readyz"), &[], None).await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = rpc(&gw.url(), &[], &list_tools(json!(1))).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"]["code"], -32002);
}

#[tokio::test]
async fn drain_turns_readiness_off_and_answers_after_the_delay() {
    let rec = Recorder::start().await;
    let gw = Gw::start(
        &json!({"enabled": false}),
        &[rec.upstream_args(), vec!["--drain-delay".into(), "700ms".into()]].concat(),
    )
    .await;
    gw.wait_ready(Duration::from_secs(10)).await;
    // The server container's hook waits for the drain, and starts none itself.
    let url = gw.admin_url("/drained");
    let waiting = tokio::spawn(async move { send(Method::GET, &url, &[], None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = send(Method::GET, &gw.admin_url("/readyz"), &[], None).await.unwrap();
    assert_eq!(ready.status, StatusCode::OK, "/drained drains nothing");
    // The admin port drains nothing, not even from loopback: the MCP server shares it (a tool
    // fetching http://127.0.0.1:9090/drain must not take the pod out of its Service).
    let url = gw.admin_url("/drain");
    assert!(url.contains("127.0.0.1"), "{url}");
    let refused = send(Method::GET, &url, &[], None).await.unwrap();
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let ready = send(Method::GET, &gw.admin_url("/readyz"), &[], None).await.unwrap();
    assert_eq!(ready.status, StatusCode::OK, "still ready after a drain over the admin port");
    // The gateway container's hook: the binary's --drain, over the drain socket.
    let start = std::time::Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .arg(format!("--drain={}", gw.admin))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(start.elapsed() >= Duration::from_millis(700), "answered after the delay: {:?}", start.elapsed());
    let waited = waiting.await.unwrap().unwrap();
    assert_eq!(waited.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(700), "/drained answered after the drain");
    let ready = send(Method::GET, &gw.admin_url("/readyz"), &[], None).await.unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.body.contains("draining"), "{}", ready.body);
    // Still serving while the pod drains.
    let r = rpc(&gw.url(), &[], &call_tool(json!("after-drain"), "echo", json!({}))).await;
    assert_eq!(r.status, StatusCode::OK);
}
