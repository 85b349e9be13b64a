//! MCP tasks (specification 2025-11-25) are the caller's that created them. The gateway does not
//! pass credentials on, so a server cannot tell the callers behind it apart; the Python SDK's task
//! support (one store for every session, `tests/py/task_server.py`) hands any task to any session
//! that names it. Through the gateway, `tasks/get`, `tasks/result` and `tasks/cancel` of another
//! caller's task are "task not found" and `tasks/list` shows only the caller's own tasks, in SSE and
//! JSON answers; the reference server's task flow (server-everything) still works end to end.

mod common;

use common::*;
use http::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PROTOCOL: &str = "2025-11-25";

/// One client session at `url`, with these credentials.
struct Client {
    url: String,
    auth: Option<String>,
    session: String,
}

impl Client {
    /// Initializes a session the way a 2025-11-25 client does.
    async fn open(url: &str, auth: Option<String>) -> Client {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {"tasks": {}},
            "clientInfo": {"name": "tasks-test", "version": "1"}}});
        let mut c = Client { url: url.to_string(), auth, session: String::new() };
        let r = c.send(&init).await;
        assert_eq!(r.status, StatusCode::OK, "initialize: {}", r.body);
        c.session = r.header("mcp-session-id").expect("a session");
        let done = c.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
        c
    }

    async fn send(&self, msg: &Value) -> Resp {
        let mut h = vec![("mcp-protocol-version", PROTOCOL)];
        if !self.session.is_empty() {
            h.push(("mcp-session-id", &self.session));
        }
        if let Some(a) = &self.auth {
            h.push(("authorization", a));
        }
        rpc(&self.url, &h, msg).await
    }

    /// `method` with `params`: the status and the JSON-RPC answer.
    async fn ask(&self, method: &str, params: Value) -> (StatusCode, Value) {
        let r = self.send(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})).await;
        let body = if r.body.is_empty() { Value::Null } else { r.json() };
        (r.status, body)
    }

    /// Calls `tool` as a task: its task id.
    async fn start_task(&self, tool: &str, arguments: Value) -> String {
        let params = json!({"name": tool, "arguments": arguments, "task": {"ttl": 60000}});
        let (status, answer) = self.ask("tools/call", params).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["result"]["task"]["taskId"].as_str().unwrap_or_else(|| panic!("a CreateTaskResult: {answer}")).into()
    }

    /// Polls `tasks/get` until the task is completed.
    async fn wait_completed(&self, task: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, answer) = self.ask("tasks/get", json!({"taskId": task})).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            match answer["result"]["status"].as_str() {
                Some("completed") => return,
                Some("working" | "input_required") => {}
                other => panic!("task {task}: {other:?} in {answer}"),
            }
            assert!(Instant::now() < deadline, "task {task} not completed: {answer}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The ids `tasks/list` shows.
    async fn listed(&self) -> Vec<String> {
        let (status, answer) = self.ask("tasks/list", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let tasks = answer["result"]["tasks"].as_array().unwrap_or_else(|| panic!("a task list: {answer}"));
        tasks.iter().map(|t| t["taskId"].as_str().unwrap().to_string()).collect()
    }

    /// The text of a finished task's result.
    async fn result_text(&self, task: &str) -> String {
        let (status, answer) = self.ask("tasks/result", json!({"taskId": task})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("a tool result: {answer}")).into()
    }

    /// Every way of naming `task` is refused as a task nobody has.
    async fn assert_not_found(&self, task: &str) {
        for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
            let (status, answer) = self.ask(method, json!({"taskId": task})).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method}: {answer}");
            assert_eq!(answer["error"]["code"], -32602, "{method}: {answer}");
            assert_eq!(answer["error"]["message"], "Invalid params: task not found", "{method}");
            assert_eq!(answer["id"], 7);
        }
        // Not inside a batch either.
        let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "id": 2, "method": "tasks/result", "params": {"taskId": task}}]);
        assert_eq!(self.send(&batch).await.status, StatusCode::BAD_REQUEST);
    }
}

async fn tasks_stay_with_their_caller(json_answers: bool) {
    let (_server, port) = python_task_server(if json_answers { &["--json"] } else { &[] }).await;
    let direct = format!("http://127.0.0.1:{port}/mcp");
    // Without the gateway, the server gives one session's task to any other: what the gateway
    // must prevent.
    let (owner, other) = (Client::open(&direct, None).await, Client::open(&direct, None).await);
    let shared = owner.start_task("report", json!({"who": "owner"})).await;
    owner.wait_completed(&shared).await;
    assert_eq!(other.result_text(&shared).await, "report for owner", "the server shares its tasks");

    let dir = tempdir("tasks");
    let upstream = ["--upstream".to_string(), direct.clone(), "--check-interval".into(), "60s".into()];
    let gw = Gw::start(&policy(json!({"authentication": jwt_auth(&dir, None, true)})), &upstream).await;
    let token = |sub: &str| Some(bearer(&hs256(&claims(sub, &["user"]))));
    let alice = Client::open(&gw.url(), token("alice")).await;
    let bob = Client::open(&gw.url(), token("bob")).await;

    let alices = alice.start_task("report", json!({"who": "alice"})).await;
    alice.wait_completed(&alices).await;
    bob.assert_not_found(&alices).await;
    bob.assert_not_found(&shared).await;
    bob.assert_not_found("no-such-task").await;
    assert!(!bob.listed().await.contains(&alices), "bob's list hides alice's task");
    assert_eq!(alice.listed().await, vec![alices.clone()], "alice's list: hers only, not the direct one");
    assert_eq!(alice.result_text(&alices).await, "report for alice");
    // Refused at the gateway: alice's task was not cancelled by bob's attempts.
    let (_, got) = alice.ask("tasks/get", json!({"taskId": alices})).await;
    assert_eq!(got["result"]["status"], "completed");
    let denied = gw.denied("task_not_found", 400).await;
    assert_eq!(denied["identity"], "bob");

    // Bob's own task is his, in a new session too (the binding is to the caller, not the session).
    let bobs = bob.start_task("report", json!({"who": "bob"})).await;
    bob.wait_completed(&bobs).await;
    let bob_again = Client::open(&gw.url(), token("bob")).await;
    assert_eq!(bob_again.result_text(&bobs).await, "report for bob");
    alice.assert_not_found(&bobs).await;
    assert_eq!(alice.listed().await, vec![alices]);
}

#[tokio::test]
async fn tasks_stay_with_their_caller_in_sse_answers() {
    tasks_stay_with_their_caller(false).await;
}

#[tokio::test]
async fn tasks_stay_with_their_caller_in_json_answers() {
    tasks_stay_with_their_caller(true).await;
}

/// Anonymous callers share one identity: each one's tasks are its session's.
#[tokio::test]
async fn anonymous_tasks_stay_with_their_session() {
    let (_server, port) = python_task_server(&[]).await;
    let gw = anonymous_gateway(&["--upstream".to_string(), format!("http://127.0.0.1:{port}/mcp")]).await;
    let (first, second) = (Client::open(&gw.url(), None).await, Client::open(&gw.url(), None).await);
    let task = first.start_task("report", json!({"who": "first"})).await;
    first.wait_completed(&task).await;
    second.assert_not_found(&task).await;
    assert!(second.listed().await.is_empty());
    assert_eq!(first.result_text(&task).await, "report for first");
    // Credentials do not reach an anonymous session's task either.
    let alice = Client::open(&gw.url(), Some(bearer(&hs256(&claims("alice", &["user"]))))).await;
    alice.assert_not_found(&task).await;
}

/// `tasks/list` pages: the server's `nextCursor` (the Python SDK's is the page's last task id,
/// whoever's) never reaches a caller; the gateway's cursor pages through the caller's own tasks
/// and is the caller's alone.
#[tokio::test]
async fn task_list_pages_name_no_other_callers_task() {
    let (_server, port) = python_task_server(&["--json"]).await;
    let dir = tempdir("tasks-pages");
    let upstream = ["--upstream".to_string(), format!("http://127.0.0.1:{port}/mcp")];
    let gw = Gw::start(&policy(json!({"authentication": jwt_auth(&dir, None, true)})), &upstream).await;
    let token = |sub: &str| Some(bearer(&hs256(&claims(sub, &["user"]))));
    let (alice, bob) = (Client::open(&gw.url(), token("alice")).await, Client::open(&gw.url(), token("bob")).await);
    let mut alices = vec![];
    for n in 0..12 {
        alices.push(alice.start_task("report", json!({"who": format!("alice-{n}")})).await);
    }
    let bobs = bob.start_task("report", json!({"who": "bob"})).await;
    // Every page of a caller's listing, as the client reads it.
    let pages = async |c: &Client| {
        let (mut pages, mut cursor) = (vec![], None::<String>);
        loop {
            let params = cursor.as_ref().map(|c| json!({"cursor": c})).unwrap_or(json!({}));
            let (status, page) = c.ask("tasks/list", params).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            cursor = page["result"]["nextCursor"].as_str().map(str::to_string);
            pages.push(page);
            if cursor.is_none() {
                return pages;
            }
            assert!(pages.len() < 10, "endless pages");
        }
    };
    let listed = |pages: &[Value]| -> Vec<String> {
        pages
            .iter()
            .flat_map(|p| p["result"]["tasks"].as_array().unwrap().clone())
            .map(|t| t["taskId"].as_str().unwrap().to_string())
            .collect()
    };
    let bob_pages = pages(&bob).await;
    assert!(bob_pages.len() > 1, "the server pages (ten a page): {bob_pages:?}");
    assert_eq!(listed(&bob_pages), vec![bobs.clone()]);
    let text = bob_pages.iter().map(Value::to_string).collect::<String>();
    for id in &alices {
        assert!(!text.contains(id.as_str()), "bob's pages name alice's task {id}: {text}");
    }
    let alice_pages = pages(&alice).await;
    assert_eq!(listed(&alice_pages), alices);
    // Alice's cursor is hers: bob cannot page with it, nor with a server cursor (a task id).
    let hers = alice_pages[0]["result"]["nextCursor"].as_str().unwrap();
    for cursor in [hers, alices[9].as_str()] {
        let (status, e) = bob.ask("tasks/list", json!({"cursor": cursor})).await;
        assert_eq!((status, e["error"]["code"].clone()), (StatusCode::BAD_REQUEST, json!(-32602)), "{e}");
    }
}

/// Authentication optional, anonymous callers may use `report` (and the recorder's `echo`).
async fn anonymous_gateway(upstream: &[String]) -> Gw {
    let dir = tempdir("tasks-anon");
    let mut authn = jwt_auth(&dir, None, true);
    authn["required"] = json!(false);
    let sections = json!({"authentication": authn,
        "authorization": {"mode": "rbac", "allowedRoles": ["user"], "rolesClaim": "roles", "tools": {},
                          "anonymousTools": ["report", "echo"]}});
    Gw::start(&policy(sections), upstream).await
}

/// Without a session (a stateless server) nothing tells one anonymous caller from another: no
/// anonymous task can be followed, not even by its creator, and none is listed.
#[tokio::test]
async fn anonymous_tasks_without_a_session_cannot_be_followed() {
    let rec = Recorder::start().await;
    let gw = anonymous_gateway(&rec.upstream_args()).await;
    let sessionless = |auth: Option<String>| Client { url: gw.url(), auth, session: String::new() };
    let (first, second) = (sessionless(None), sessionless(None));
    let task = first.start_task("echo", json!({"who": "first"})).await;
    assert_eq!(task, "rec-task-first");
    first.assert_not_found(&task).await;
    second.assert_not_found(&task).await;
    assert!(first.listed().await.is_empty(), "the server lists rec-task-alice and rec-task-bob");
    // An authenticated caller's task on the same server is followed as usual.
    let alice = sessionless(Some(bearer(&hs256(&claims("alice", &["user"])))));
    let hers = alice.start_task("echo", json!({"who": "alice"})).await;
    assert_eq!(alice.listed().await, vec![hers.clone()]);
    let (status, _) = alice.ask("tasks/get", json!({"taskId": hers})).await;
    assert_eq!(status, StatusCode::OK);
    first.assert_not_found(&hers).await;
}

/// The reference server's task tool, through the gateway, from start to result.
#[tokio::test]
async fn the_reference_servers_task_flow_passes() {
    let (_server, port) = server_everything_http().await;
    let dir = tempdir("tasks-everything");
    let upstream = ["--upstream".to_string(), format!("http://127.0.0.1:{port}/mcp")];
    let gw = Gw::start(&policy(json!({"authentication": jwt_auth(&dir, None, true)})), &upstream).await;
    let alice = Client::open(&gw.url(), Some(bearer(&hs256(&claims("alice", &["user"]))))).await;
    let task = alice.start_task("simulate-research-query", json!({"topic": "gateways"})).await;
    assert_eq!(alice.listed().await, vec![task.clone()]);
    alice.wait_completed(&task).await;
    assert!(alice.result_text(&task).await.contains("gateways"));
    let bob = Client::open(&gw.url(), Some(bearer(&hs256(&claims("bob", &["user"]))))).await;
    bob.assert_not_found(&task).await;
}
