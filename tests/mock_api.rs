//! Whole reconciles against a scripted API server (the kube-rs controller-rs style): the client
//! talks to a `tower_test` mock, and a script asserts every request in order (method, path,
//! query, body) and answers with what a real API server would.

use assert_json_diff::assert_json_include;
use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use mcp_operator::build::{config_hash, Defaults};
use mcp_operator::consts::{ANNOTATION_CONFIG_HASH, FINALIZER, IN_USE_FINALIZER};
use mcp_operator::controller::cache::{caches, CachedChild, Writers, ANNOTATION_APPLIED};
use mcp_operator::controller::{mcpserver, plugin, securitypolicy, Context};
use mcp_operator::metrics::Metrics;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const TIMEOUT: Duration = Duration::from_secs(20);

const NS: &str = "default";
const NAME: &str = "my-mcp-server";
const UID: &str = "6f1d2c3b-0000-4000-8000-000000000001";
const API_VERSION: &str = "mcp.n-takatsu.dev/v1alpha1";

const MCPSERVERS: &str = "/apis/mcp.n-takatsu.dev/v1alpha1/namespaces/default/mcpservers";
const PLUGINS: &str = "/apis/mcp.n-takatsu.dev/v1alpha1/namespaces/default/plugins";
const POLICIES: &str = "/apis/mcp.n-takatsu.dev/v1alpha1/namespaces/default/securitypolicies";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const SERVICE_ACCOUNTS: &str = "/api/v1/namespaces/default/serviceaccounts";
const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";
const NETWORK_POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";
const PDBS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// Query of every server-side apply, exactly as kube sends it (no search for unknown fields: the
/// operator's objects are typed).
const SSA: &[(&str, &str)] = &[("force", "true"), ("fieldManager", "mcp-operator"), ("fieldValidation", "Ignore")];
/// Query of every status write.
const STATUS: &[(&str, &str)] = &[("fieldManager", "mcp-operator")];
/// The server pods (status).
const SERVER_PODS: &str =
    "app.kubernetes.io/component=server,app.kubernetes.io/instance=my-mcp-server,app.kubernetes.io/name=mcp-server";

const JSON: &str = "application/json";
const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

// ---------------------------------------------------------------------------------------------
// The scripted API server
// ---------------------------------------------------------------------------------------------

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// The API server side of the mock: hands out the client's requests one at a time.
struct ApiServer {
    handle: Handle,
    seen: usize,
    /// Requests read while looking for an Event (published without waiting, so it may come
    /// after requests made later), handed out first.
    stash: std::collections::VecDeque<Call>,
}

/// One request the client made, decoded, with the means to answer it.
struct Call {
    number: usize,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    body: Value,
    responder: Responder,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ASCII");
                out.push(u8::from_str_radix(hex, 16).expect("percent-encoded byte"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 query")
}

fn decode_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

impl ApiServer {
    async fn next(&mut self) -> Call {
        if let Some(call) = self.stash.pop_front() {
            return call;
        }
        self.read().await
    }

    /// The next Event publication, wherever it comes among the requests.
    async fn next_event(&mut self) -> Call {
        if let Some(i) = self.stash.iter().position(|c| c.method == Method::POST && c.path == EVENTS) {
            return self.stash.remove(i).expect("stashed");
        }
        loop {
            let call = self.read().await;
            if call.method == Method::POST && call.path == EVENTS {
                return call;
            }
            self.stash.push_back(call);
        }
    }

    async fn read(&mut self) -> Call {
        let number = self.seen + 1;
        let (request, responder) = self
            .handle
            .next_request()
            .await
            .unwrap_or_else(|| panic!("request #{number} expected, but the reconcile made no more requests"));
        self.seen = number;
        let (parts, body) = request.into_parts();
        let header = |h: http::header::HeaderName| parts.headers.get(h).map(|v| v.to_str().unwrap().to_string());
        let bytes = body.collect_bytes().await.expect("request body");
        Call {
            number,
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: decode_query(parts.uri.query().unwrap_or("")),
            content_type: header(http::header::CONTENT_TYPE),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("request #{number}: body is not JSON: {e}"))
            },
            responder,
        }
    }

    /// The next request must be `method path?query`.
    async fn expect(&mut self, method: Method, path: &str, query: &[(&str, &str)]) -> Call {
        let call = self.next().await;
        let want: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(
            (&call.method, call.path.as_str(), &call.query),
            (&method, path, &want),
            "request #{} is not the one expected; its body: {}",
            call.number,
            call.body
        );
        call
    }

    /// GET of one object that does not exist.
    async fn get_not_found(&mut self, path: &str) {
        let call = self.expect(Method::GET, path, &[]).await;
        call.not_found();
    }

    /// GET of one object that exists.
    async fn get(&mut self, path: &str, obj: Value) {
        self.expect(Method::GET, path, &[]).await.ok(obj);
    }

    /// Dry runs (`dryRun=All`) of server-side applies of exactly `paths`, in any order, each
    /// answered by `answer`: how a change of a running server to more than one child starts.
    async fn dry_run_all(&mut self, paths: &[String], answer: impl Fn(&str, &Value) -> (u16, Value)) {
        let mut seen = BTreeSet::new();
        for _ in paths {
            let call = self.next().await;
            let mut want: Vec<(String, String)> = SSA.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            want.push(("dryRun".into(), "All".into()));
            let (mut got, mut want) = (call.query.clone(), want);
            got.sort();
            want.sort();
            assert_eq!(
                (&call.method, &got),
                (&Method::PATCH, &want),
                "request #{}: a dry-run apply expected, got {} {}",
                call.number,
                call.method,
                call.path
            );
            assert!(paths.contains(&call.path), "request #{}: unexpected dry run of {}", call.number, call.path);
            assert!(seen.insert(call.path.clone()), "request #{}: {} tried twice", call.number, call.path);
            let (code, body) = answer(&call.path, &call.body);
            call.respond(code, body);
        }
    }

    /// Server-side applies of exactly `paths`, in any order (the children are applied
    /// concurrently), each answered by `answer` (status code, body); returns the bodies sent.
    async fn apply_all(
        &mut self,
        paths: &[String],
        answer: impl Fn(&str, &Value) -> (u16, Value),
    ) -> BTreeMap<String, Value> {
        let mut bodies = BTreeMap::new();
        for _ in paths {
            let call = self.next().await;
            let want: Vec<(String, String)> = SSA.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(
                (&call.method, &call.query),
                (&Method::PATCH, &want),
                "request #{}: a server-side apply expected, got {} {}",
                call.number,
                call.method,
                call.path
            );
            assert!(paths.contains(&call.path), "request #{}: unexpected apply of {}", call.number, call.path);
            assert!(!bodies.contains_key(&call.path), "request #{}: {} applied twice", call.number, call.path);
            assert_eq!(call.content_type.as_deref(), Some(APPLY), "request #{}: server-side apply", call.number);
            assert!(call.body["metadata"].get("managedFields").is_none(), "managedFields are never applied");
            assert!(
                call.body["metadata"]["annotations"][ANNOTATION_APPLIED].is_string(),
                "request #{}: every child records the hash of what was applied",
                call.number
            );
            let (code, body) = answer(&call.path, &call.body);
            bodies.insert(call.path.clone(), call.body.clone());
            call.respond(code, body);
        }
        bodies
    }

    /// The status of `path` replaced whole (a JSON patch `add /status`); answers with `obj`
    /// carrying that status; returns `{"status": <the status written>}`.
    async fn write_status(&mut self, path: &str, mut obj: Value) -> Value {
        let call = self.expect(Method::PATCH, &format!("{path}/status"), STATUS).await;
        assert_eq!(call.content_type.as_deref(), Some(JSON_PATCH), "request #{}: a JSON patch", call.number);
        let ops = call.body.as_array().unwrap_or_else(|| panic!("a JSON patch: {}", call.body));
        assert_eq!(ops.len(), 1, "one operation: {}", call.body);
        assert_eq!(
            (ops[0]["op"].as_str(), ops[0]["path"].as_str()),
            (Some("add"), Some("/status")),
            "the status is replaced whole: {}",
            call.body
        );
        let status = ops[0]["value"].clone();
        obj["status"] = status.clone();
        call.ok(obj);
        json!({ "status": status })
    }

    /// An Event about my-mcp-server, published through the events.k8s.io API.
    async fn event(&mut self, type_: &str, reason: &str, action: &str, note: &str) {
        self.event_about(
            json!({"apiVersion": API_VERSION, "kind": "MCPServer", "name": NAME, "namespace": NS, "uid": UID}),
            type_,
            reason,
            action,
            note,
        )
        .await;
    }

    async fn event_about(&mut self, regarding: Value, type_: &str, reason: &str, action: &str, note: &str) {
        let call = self.next_event().await;
        assert_eq!(call.content_type.as_deref(), Some(JSON));
        let body = call.body.clone();
        assert_json_include!(
            actual: body.clone(),
            expected: json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"namespace": NS},
                "type": type_,
                "reason": reason,
                "action": action,
                "note": note,
                "reportingController": "mcp-operator",
                "reportingInstance": "test",
                "regarding": regarding,
            })
        );
        let name = body["metadata"]["name"].as_str().expect("event name");
        assert!(name.starts_with(&format!("{}.", regarding["name"].as_str().unwrap())), "event name {name}");
        call.respond(201, stored(body));
    }

    /// No request may follow.
    async fn done(mut self) {
        if let Some(call) = self.stash.pop_front() {
            panic!("unexpected request #{}: {} {}", call.number, call.method, call.path);
        }
        if let Some((request, _)) = self.handle.next_request().await {
            panic!("unexpected request #{}: {} {}", self.seen + 1, request.method(), request.uri());
        }
    }
}

impl Call {
    fn respond(self, code: u16, body: Value) {
        let response = Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, JSON)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.responder.send_response(response);
    }

    fn ok(self, body: Value) {
        self.respond(200, body)
    }

    fn not_found(self) {
        let mut segments = self.path.rsplit('/');
        let name = segments.next().unwrap().to_string();
        let resource = segments.next().unwrap().to_string();
        self.respond(
            404,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": format!("{resource} \"{name}\" not found"),
                "reason": "NotFound",
                "details": {"name": name, "kind": resource},
                "code": 404,
            }),
        )
    }
}

/// What the API server stores: the object plus the metadata it sets.
fn stored(mut obj: Value) -> Value {
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    let name = meta["name"].as_str().unwrap_or("x").to_string();
    meta.entry("uid").or_insert(json!(format!("uid-{name}")));
    meta.entry("creationTimestamp").or_insert(json!("2024-01-01T00:00:00Z"));
    meta.entry("generation").or_insert(json!(1));
    meta.insert("resourceVersion".into(), json!("1001"));
    obj
}

/// A client backed by a fresh scripted API server, and the context the controllers use, with
/// empty caches.
fn testbed() -> (Arc<Context>, ApiServer) {
    testbed_with(|_| {})
}

/// Same as [`testbed`], with caches filled by `fill` (what the watches would have delivered).
fn testbed_with(fill: impl FnOnce(&mut Writers)) -> (Arc<Context>, ApiServer) {
    let (ctx, api, mut writers) = testbed_writers();
    fill(&mut writers);
    (ctx, api)
}

/// Same as [`testbed`], with the writing ends of the caches.
fn testbed_writers() -> (Arc<Context>, ApiServer, Writers) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, NS);
    let (caches, writers) = caches();
    let ctx = Context::new(
        client,
        Defaults::default(),
        Arc::new(Metrics::default()),
        Some("test".into()),
        Default::default(),
    )
    .with_caches(Arc::new(caches));
    (Arc::new(ctx), ApiServer { handle, seen: 0, stash: Default::default() }, writers)
}

/// Puts `obj` in a cache.
fn seed<K>(writer: &mut Writer<K>, obj: Value)
where
    K: kube::runtime::reflector::Lookup<DynamicType = ()> + serde::de::DeserializeOwned + Clone + 'static,
{
    writer.apply_watcher_event(&watcher::Event::Apply(serde_json::from_value(obj).expect("fixture deserializes")));
}

/// Puts an object with metadata `meta` in a metadata-only cache.
fn seed_meta<K>(writer: &mut Writer<CachedChild<K>>, meta: Value)
where
    K: kube::Resource<DynamicType = ()>,
{
    let obj = PartialObjectMeta::<K> {
        types: None,
        metadata: serde_json::from_value(meta).expect("metadata deserializes"),
        _phantom: std::marker::PhantomData,
    };
    writer.apply_watcher_event(&watcher::Event::Apply(obj.into()));
}

/// Every child of my-mcp-server without policy and plugins (2 replicas: with a PDB).
fn children_paths() -> Vec<String> {
    vec![
        format!("{SERVICE_ACCOUNTS}/{NAME}"),
        format!("{CONFIG_MAPS}/{NAME}-config"),
        format!("{SERVICES}/{NAME}"),
        format!("{PDBS}/{NAME}"),
        format!("{DEPLOYMENTS}/{NAME}"),
    ]
}

/// Answers an apply with the object as stored.
fn as_stored(_: &str, body: &Value) -> (u16, Value) {
    (200, stored(body.clone()))
}

/// Waits for the script; an assertion that failed in it fails the test with its own message.
async fn finish(script: JoinHandle<()>) {
    match timeout(TIMEOUT, script).await.expect("the API server script timed out") {
        Ok(()) => {}
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("API server script: {e}"),
    }
}

/// Runs the reconcile under a timeout.
async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    timeout(TIMEOUT, fut).await.expect("the reconcile timed out")
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

/// The guide's my-mcp-server as stored: no finalizer, generation 1.
/// The Progressing condition of a status computed while the Deployment existed (what a server
/// whose workload runs has from an earlier reconcile).
fn workload_reported() -> Value {
    json!([{"type": "Progressing", "status": "True", "reason": "RolloutComplete",
            "message": "every replica runs the current pod template", "observedGeneration": 1,
            "lastTransitionTime": "2024-01-01T00:00:00Z"}])
}

fn server_json() -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "MCPServer",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "uid": UID,
            "resourceVersion": "500",
            "generation": 1,
            "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {"replicas": 2, "image": "mcp-rs:latest", "transport": "http", "port": 3000},
    })
}

fn typed<K: serde::de::DeserializeOwned>(v: &Value) -> Arc<K> {
    Arc::new(serde_json::from_value(v.clone()).expect("fixture deserializes"))
}

fn server_labels() -> Value {
    json!({
        "app.kubernetes.io/name": "mcp-server",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/managed-by": "mcp-operator",
    })
}

fn server_selector() -> Value {
    json!({
        "app.kubernetes.io/name": "mcp-server",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/component": "server",
    })
}

fn owner() -> Value {
    json!([{
        "apiVersion": API_VERSION,
        "kind": "MCPServer",
        "name": NAME,
        "uid": UID,
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// Checks what every child of my-mcp-server carries: type, name, labels, owner.
fn assert_child(body: &Value, api_version: &str, kind: &str, name: &str) {
    assert_eq!((&body["apiVersion"], &body["kind"]), (&json!(api_version), &json!(kind)), "{body}");
    assert_eq!(body["metadata"]["name"], name);
    assert_eq!(body["metadata"]["namespace"], NS);
    assert_eq!(body["metadata"]["labels"], server_labels(), "{kind} labels");
    assert_eq!(body["metadata"]["ownerReferences"], owner(), "{kind} is owned by the MCPServer");
}

/// A running Deployment of the server as the API server returns it.
fn running_deployment(replicas: i32, ready: i32, generation: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": NAME, "namespace": NS, "uid": "uid-deployment", "resourceVersion": "700",
            "generation": generation, "labels": server_labels(),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": server_selector()},
            "template": {
                "metadata": {"labels": server_labels()},
                "spec": {"containers": [{"name": "server", "image": "mcp-rs:latest"}]},
            },
        },
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            "availableReplicas": ready,
        },
    })
}

fn running_pod(name: &str) -> Value {
    let mut labels = server_labels();
    labels["app"] = json!(NAME);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"containers": [{"name": "server", "image": "mcp-rs:latest"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "server", "ready": true, "restartCount": 0, "image": "mcp-rs:latest", "imageID": "",
                "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
            }],
        },
    })
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": NS, "labels": server_labels()})
}

fn deleting_meta(name: &str) -> Value {
    json!({"name": name, "namespace": NS, "labels": server_labels(), "deletionTimestamp": "2024-01-02T00:00:00Z"})
}

/// (type, status, reason) of each condition, in order.
fn conditions(status: &Value) -> Vec<(String, String, String)> {
    status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_else(|| panic!("condition without {k}: {c}")).to_string();
            (s("type"), s("status"), s("reason"))
        })
        .collect()
}

fn cond(status: &Value, type_: &str) -> Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).cloned().expect(type_)
}

fn triples(v: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    v.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect()
}

// ---------------------------------------------------------------------------------------------
// MCPServer
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_earlier_versions_finalizer_is_released_and_nothing_else() {
    let (ctx, mut api) = testbed();
    let mut server = server_json();
    server["metadata"]["finalizers"] = json!(["example.com/other", FINALIZER]);
    let obj = server.clone();
    let script = tokio::spawn(async move {
        let call = api.expect(Method::PATCH, &format!("{MCPSERVERS}/{NAME}"), &[]).await;
        assert_eq!(call.content_type.as_deref(), Some(MERGE));
        assert_eq!(
            call.body,
            json!({"metadata": {"resourceVersion": "500", "finalizers": ["example.com/other"]}}),
            "only the operator's finalizer goes, optimistically locked"
        );
        let mut released = stored(obj);
        released["metadata"]["finalizers"] = json!(["example.com/other"]);
        call.ok(released);
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::await_change(), "the patch triggers the next reconcile");
}

/// The API server refuses the Deployment (422): the running workload stays, the status says
/// Ready=False ApplyFailed quoting the API's field error, a Warning Event says the same, and the
/// reconcile fails so that the controller retries with backoff.
#[tokio::test]
async fn a_refused_child_is_reported_with_the_api_field_error_and_what_runs_stays() {
    let (ctx, mut api) = testbed_with(|w| {
        seed(&mut w.deployments, running_deployment(2, 2, 1));
        seed(&mut w.pods, running_pod("a"));
        seed(&mut w.pods, running_pod("b"));
    });
    let mut server = server_json();
    server["status"] = json!({ "conditions": workload_reported() });
    let obj = server.clone();
    let refusal = "Deployment.apps \"my-mcp-server\" is invalid: spec.template.spec.containers[0].env[0].name: Invalid value: \"\": a valid environment variable name must consist of alphabetic characters";
    let script = tokio::spawn(async move {
        let deployment = format!("{DEPLOYMENTS}/{NAME}");
        // A change of a running server to several children is tried first: the refusal of one
        // leaves every other child unwritten.
        api.dry_run_all(&children_paths(), |path, body| {
            if path == deployment {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": refusal, "reason": "Invalid", "code": 422});
                (422, status)
            } else {
                as_stored(path, body)
            }
        })
        .await;
        // Nothing is deleted; the running Deployment already has 2 replicas.
        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let status = &body["status"];
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["ready"], "2/2", "what runs keeps running");
        let ready = cond(status, "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("ApplyFailed")));
        let message = ready["message"].as_str().unwrap();
        assert!(message.contains("env[0].name: Invalid value"), "quotes the API's field error: {message}");
        assert_eq!(cond(status, "Degraded")["reason"], "ApplyFailed");
        let note = format!("changes are held back: the API server refused a child object (Invalid): {refusal}");
        api.event("Warning", "ApplyFailed", "Apply", &note).await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    let err = result.expect_err("a refused apply is retried with backoff");
    assert_eq!(err.metric_label(), "Refused");
}

/// A testbed with a policy `fenced` that restricts the network, and a server naming it.
fn fenced_server() -> (Arc<Context>, ApiServer, Value) {
    let policy = json!({
        "apiVersion": API_VERSION,
        "kind": "SecurityPolicy",
        "metadata": {"name": "fenced", "namespace": NS, "uid": "uid-policy", "resourceVersion": "300", "generation": 1},
        "spec": {"enabled": true, "network": {"allowedCIDRs": ["10.0.0.0/8"]}},
    });
    let (ctx, api) = testbed_with(|w| seed(&mut w.policies, policy));
    let mut server = server_json();
    server["spec"]["securityPolicy"] = json!("fenced");
    (ctx, api, server)
}

/// A new server whose policy restricts the network: its NetworkPolicy is applied before anything
/// that runs, so a NetworkPolicy the API server refuses (422) starts no pod without the isolation
/// asked for; the status says ApplyFailed quoting the refusal.
#[tokio::test]
async fn a_new_servers_network_policy_is_applied_first_and_a_refused_one_starts_nothing() {
    let (ctx, mut api, server) = fenced_server();
    let obj = server.clone();
    let refusal = "NetworkPolicy.networking.k8s.io \"my-mcp-server\" is invalid: spec.ingress[0].from[0].ipBlock.cidr: Invalid value";
    let script = tokio::spawn(async move {
        let np = format!("{NETWORK_POLICIES}/{NAME}");
        let bodies = api
            .apply_all(std::slice::from_ref(&np), |_, _| {
                let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": refusal, "reason": "Invalid", "code": 422});
                (422, status)
            })
            .await;
        assert_child(&bodies[&np], "networking.k8s.io/v1", "NetworkPolicy", NAME);
        // Nothing else is applied: the next request is the status.
        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let ready = cond(&body["status"], "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("ApplyFailed")));
        assert!(ready["message"].as_str().unwrap().contains("ipBlock.cidr"), "{ready}");
        let note = format!("changes are held back: the API server refused a child object (Invalid): {refusal}");
        api.event("Warning", "ApplyFailed", "Apply", &note).await;
        api.event("Normal", "PolicyApplied", "ApplyPolicy", "SecurityPolicy \"fenced\" (generation 1) is enforced")
            .await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect_err("a refused apply is retried with backoff").metric_label(), "Refused");
}

/// A new server whose NetworkPolicy is accepted: it comes first, then every other child at once.
#[tokio::test]
async fn a_new_servers_network_policy_comes_before_its_other_children() {
    let (ctx, mut api, server) = fenced_server();
    let obj = server.clone();
    let script = tokio::spawn(async move {
        api.apply_all(&[format!("{NETWORK_POLICIES}/{NAME}")], as_stored).await;
        api.apply_all(&children_paths(), as_stored).await;
        api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        api.event(
            "Normal",
            "Created",
            "Create",
            "Created Deployment, Service, ServiceAccount and ConfigMap my-mcp-server-config",
        )
        .await;
        api.event("Normal", "PolicyApplied", "ApplyPolicy", "SecurityPolicy \"fenced\" (generation 1) is enforced")
            .await;
        api.done().await;
    });
    within(mcpserver::reconcile(typed(&server), ctx)).await.expect("reconcile");
    finish(script).await;
}

/// A request above its limit is the spec's own mistake, reported naming the MCPServer's fields
/// before any child is written (no dry run, no apply: the API server would refuse the Deployment
/// naming only its pod template): the running workload stays, Ready=False InvalidResources, a
/// Warning Event, and the reconcile is retried with backoff.
#[tokio::test]
async fn a_request_above_its_limit_is_refused_naming_the_field_before_any_write() {
    let (ctx, mut api) = testbed_with(|w| {
        seed(&mut w.deployments, running_deployment(2, 2, 1));
        seed(&mut w.pods, running_pod("a"));
        seed(&mut w.pods, running_pod("b"));
    });
    let mut server = server_json();
    server["spec"]["resources"] = json!({"requests": {"cpu": "2", "memory": "64Mi"}, "limits": {"cpu": "500m"}});
    server["status"] = json!({ "conditions": workload_reported() });
    let obj = server.clone();
    let script = tokio::spawn(async move {
        // The first request is the status: nothing was written before it.
        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let status = &body["status"];
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["ready"], "2/2", "what runs keeps running");
        let ready = cond(status, "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidResources")));
        let message = ready["message"].as_str().unwrap().to_string();
        assert_eq!(
            message,
            "changes are held back: spec.resources.requests.cpu (2) is more than spec.resources.limits.cpu (500m): a \
             container may not request more than its limit"
        );
        assert_eq!(cond(status, "Degraded")["reason"], "InvalidResources");
        api.event("Warning", "InvalidResources", "Apply", &message).await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect_err("retried with backoff").metric_label(), "Refused");
}

/// Reconciles `server_json()` against a cache where `held` (e.g. `Service "NAME"`) belongs to
/// server `other-server`, and expects the refusal before any write: the first and only requests
/// are the status (`Failed`, `Ready=False NameTaken` naming the object and the other server, plus
/// what `check` asserts) and the Warning Event; the reconcile fails as `Refused` (retried with
/// backoff: the other server may go).
async fn refused_as_name_taken(ctx: Arc<Context>, mut api: ApiServer, held: String, check: fn(&Value)) {
    let server = server_json();
    let obj = server.clone();
    let script = tokio::spawn(async move {
        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let status = &body["status"];
        assert_eq!(status["phase"], "Failed");
        check(status);
        let ready = cond(status, "Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("NameTaken")));
        let message = ready["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(&format!("{held} belongs to MCPServer \"other-server\"")),
            "names the kind, the object and the other server: {message}"
        );
        api.event("Warning", "NameTaken", "Apply", &message).await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect_err("retried with backoff").metric_label(), "Refused");
}

/// A child whose name another server's child has (a plugin workload `SERVER-PLUGIN` can be
/// another server's own name) is never applied over it: no apply, no dry run, no deletion.
#[tokio::test]
async fn a_child_name_held_by_another_server_is_refused_before_any_write() {
    let (ctx, api) = testbed_with(|w| {
        let mut labels = server_labels();
        labels["app.kubernetes.io/instance"] = json!("other-server");
        seed_meta(&mut w.services, json!({"name": NAME, "namespace": NS, "labels": labels}));
    });
    refused_as_name_taken(ctx, api, format!("Service \"{NAME}\""), |_| {}).await;
}

/// The same when this server comes second: a Deployment of its name that another server's plugin
/// workload holds is neither written, nor scaled to this server's replicas, nor reported as its.
#[tokio::test]
async fn a_deployment_of_another_server_with_this_servers_name_is_not_scaled_or_reported() {
    let (ctx, api) = testbed_with(|w| {
        let mut other = running_deployment(3, 3, 1);
        other["metadata"]["labels"]["app.kubernetes.io/instance"] = json!("other-server");
        seed(&mut w.deployments, other);
    });
    refused_as_name_taken(ctx, api, format!("Deployment \"{NAME}\""), |status| {
        assert_eq!((status["replicas"].as_i64(), status["ready"].as_str()), (Some(0), Some("0/0")), "not its replicas");
    })
    .await;
}

/// The full apply of my-mcp-server without policy and plugins, from the first GET to the Event.
#[tokio::test]
async fn first_reconcile_applies_every_child_then_status_and_event() {
    let (ctx, mut api) = testbed();
    let server = server_json();
    let obj = server.clone();
    let script = tokio::spawn(async move {
        // Nothing is cached: every child is applied (concurrently), nothing read.
        let bodies = api.apply_all(&children_paths(), as_stored).await;
        let sa = bodies[&format!("{SERVICE_ACCOUNTS}/{NAME}")].clone();
        assert_child(&sa, "v1", "ServiceAccount", NAME);
        assert_eq!(sa["automountServiceAccountToken"], false);

        let cm = bodies[&format!("{CONFIG_MAPS}/{NAME}-config")].clone();
        assert_child(&cm, "v1", "ConfigMap", "my-mcp-server-config");
        let data = cm["data"].as_object().expect("data");
        assert_eq!(data.keys().collect::<Vec<_>>(), ["plugins.json", "policy.json", "server.json"]);
        let doc = |k: &str| serde_json::from_str::<Value>(data[k].as_str().unwrap()).unwrap();
        assert_eq!(doc("plugins.json"), json!([]));
        assert_eq!(
            doc("policy.json"),
            json!({"enabled": false, "policy": null, "tls": null, "authentication": null, "authorization": null,
                   "rateLimiting": null, "audit": null, "cors": {"allowedOrigins": []}})
        );
        assert_eq!(doc("server.json"), json!({"name": NAME, "transport": "http", "port": 3000, "path": "/mcp"}));

        let svc = bodies[&format!("{SERVICES}/{NAME}")].clone();
        assert_child(&svc, "v1", "Service", NAME);
        assert_eq!(svc["spec"]["selector"], server_selector());
        assert_eq!(
            svc["spec"]["ports"],
            json!([
                {"name": "mcp", "port": 3000, "targetPort": "mcp", "protocol": "TCP", "appProtocol": "http"},
                {"name": "admin", "port": 9090, "targetPort": "admin", "protocol": "TCP", "appProtocol": "http"}
            ])
        );

        let dep = bodies[&format!("{DEPLOYMENTS}/{NAME}")].clone();
        assert_child(&dep, "apps/v1", "Deployment", NAME);
        assert_eq!(dep["spec"]["replicas"], 2);
        assert_eq!(dep["spec"]["selector"], json!({"matchLabels": server_selector()}));
        let template = &dep["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["app"], NAME, "the guide reads logs with -l app=NAME");
        let hash = template["metadata"]["annotations"][ANNOTATION_CONFIG_HASH].as_str().expect("config hash");
        let applied_cm: ConfigMap = serde_json::from_value(cm.clone()).unwrap();
        assert_eq!(hash, config_hash(&applied_cm, &BTreeMap::new()), "the hash is of the ConfigMap applied");
        let pod = &template["spec"];
        assert_eq!(pod["serviceAccountName"], NAME);
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(
            pod["securityContext"],
            json!({
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            })
        );
        let container = &pod["containers"][0];
        assert_eq!(container["name"], "server");
        assert_eq!(container["image"], "mcp-rs:latest");
        assert_eq!(
            container["securityContext"],
            json!({"allowPrivilegeEscalation": false, "privileged": false, "capabilities": {"drop": ["ALL"]}})
        );
        assert_eq!(container["ports"], json!([{"name": "upstream", "containerPort": 3000, "protocol": "TCP"}]));
        assert_eq!(container["readinessProbe"]["tcpSocket"], json!({"port": "upstream"}));
        let gateway = &pod["containers"][1];
        assert_eq!(gateway["name"], "gateway");
        assert_eq!(gateway["ports"][0], json!({"name": "mcp", "containerPort": 8443, "protocol": "TCP"}));
        assert_eq!(
            container["volumeMounts"],
            json!([{"name": "mcp-config", "mountPath": "/etc/mcp", "readOnly": true}])
        );
        assert_eq!(pod["volumes"][0]["projected"]["sources"], json!([{"configMap": {"name": "my-mcp-server-config"}}]));

        let pdb = bodies[&format!("{PDBS}/{NAME}")].clone();
        assert_child(&pdb, "policy/v1", "PodDisruptionBudget", NAME);
        assert_eq!(pdb["spec"], json!({"maxUnavailable": 1, "selector": {"matchLabels": server_selector()}}));

        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let status = &body["status"];
        assert_json_include!(
            actual: status.clone(),
            expected: json!({
                "phase": "Pending",
                "replicas": 2,
                "readyReplicas": 0,
                "ready": "0/2",
                "selector": SERVER_PODS,
                "url": "http://my-mcp-server.default.svc:3000/mcp",
                "observedGeneration": 1,
            })
        );
        assert_eq!(
            conditions(status),
            triples(&[
                ("SecurityPolicyResolved", "True", "NoPolicy"),
                ("PluginsResolved", "True", "NoPlugins"),
                ("Available", "False", "NoReplicasReady"),
                ("Progressing", "True", "RolloutInProgress"),
                ("Degraded", "True", "InsufficientReplicas"),
                ("Ready", "False", "ReplicasNotReady"),
                ("McpReady", "Unknown", "StatusNotRead"),
            ])
        );
        assert!(status["conditions"].as_array().unwrap().iter().all(|c| c["observedGeneration"] == 1));

        api.event(
            "Normal",
            "Created",
            "Create",
            "Created Deployment, Service, ServiceAccount and ConfigMap my-mcp-server-config",
        )
        .await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::requeue(Duration::from_secs(30)), "not steady yet: look again soon");
}

/// A first reconcile that created the Deployment but failed on another child (a 500) writes no
/// status and publishes nothing; its retry, with the Deployment already in the cache, applies what
/// is missing, writes the status and publishes the `Created` Event the first attempt could not.
#[tokio::test]
async fn a_first_reconcile_that_failed_after_creating_the_deployment_says_created_on_its_retry() {
    let (ctx, mut api) = testbed();
    let server = server_json();
    let service = format!("{SERVICES}/{NAME}");
    let failing = service.clone();
    let script = tokio::spawn(async move {
        let bodies = api
            .apply_all(&children_paths(), |path, body| {
                if path == failing {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500});
                    (500, status)
                } else {
                    as_stored(path, body)
                }
            })
            .await;
        api.done().await;
        bodies
    });
    let first = within(mcpserver::reconcile(typed(&server), ctx)).await;
    let bodies = timeout(TIMEOUT, script).await.expect("script").expect("script ran");
    assert!(first.is_err(), "the failed apply fails the reconcile (retried with backoff)");

    // The retry: the watches delivered every child the first attempt created.
    let (ctx, mut api, mut w) = testbed_writers();
    let stored_child = |path: String| stored(bodies[&path].clone());
    seed(&mut w.deployments, stored_child(format!("{DEPLOYMENTS}/{NAME}")));
    seed_meta(&mut w.service_accounts, stored_child(format!("{SERVICE_ACCOUNTS}/{NAME}"))["metadata"].clone());
    seed_meta(&mut w.config_maps, stored_child(format!("{CONFIG_MAPS}/{NAME}-config"))["metadata"].clone());
    seed_meta(&mut w.pdbs, stored_child(format!("{PDBS}/{NAME}"))["metadata"].clone());
    let obj = server.clone();
    let script = tokio::spawn(async move {
        api.apply_all(&[service], as_stored).await;
        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        assert_eq!(body["status"]["phase"], "Pending");
        let note = "Created Deployment, Service, ServiceAccount and ConfigMap my-mcp-server-config";
        api.event("Normal", "Created", "Create", note).await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("the retry"), Action::requeue(Duration::from_secs(30)));
}

/// The reconcile after the first one, with the caches holding what the first applied and the
/// status it wrote: no API call at all (no read, no apply, no status, no Event). Then someone
/// scales the Deployment by hand (its generation moves): only the Deployment is applied again.
#[tokio::test]
async fn a_reconcile_of_an_unchanged_server_makes_no_api_call() {
    let (ctx, mut api) = testbed();
    let server = server_json();
    let obj = server.clone();
    let script = tokio::spawn(async move {
        let bodies = api.apply_all(&children_paths(), as_stored).await;
        let status = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let note = "Created Deployment, Service, ServiceAccount and ConfigMap my-mcp-server-config";
        api.event("Normal", "Created", "Create", note).await;
        api.done().await;
        (bodies, status)
    });
    within(mcpserver::reconcile(typed(&server), ctx)).await.expect("first reconcile");
    let (bodies, status) = timeout(TIMEOUT, script).await.expect("script").expect("script ran");

    let (ctx, mut api, mut w) = testbed_writers();
    let stored_child = |path: String| stored(bodies[&path].clone());
    let deployment = stored_child(format!("{DEPLOYMENTS}/{NAME}"));
    seed(&mut w.deployments, deployment.clone());
    seed_meta(&mut w.service_accounts, stored_child(format!("{SERVICE_ACCOUNTS}/{NAME}"))["metadata"].clone());
    seed_meta(&mut w.config_maps, stored_child(format!("{CONFIG_MAPS}/{NAME}-config"))["metadata"].clone());
    seed_meta(&mut w.services, stored_child(format!("{SERVICES}/{NAME}"))["metadata"].clone());
    seed_meta(&mut w.pdbs, stored_child(format!("{PDBS}/{NAME}"))["metadata"].clone());
    let mut server = server_json();
    server["status"] = status["status"].clone();
    let script = tokio::spawn(async move {
        // Nothing for the unchanged reconcile; then the Deployment alone, and why.
        let applied = api.apply_all(&[format!("{DEPLOYMENTS}/{NAME}")], as_stored).await;
        assert_eq!(applied[&format!("{DEPLOYMENTS}/{NAME}")]["spec"]["replicas"], 2);
        api.event("Normal", "Scaled", "Scale", "Scaled from 7 to 2 replicas").await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx.clone())).await;
    assert_eq!(result.expect("reconcile"), Action::requeue(Duration::from_secs(30)), "still rolling out");
    assert!(!script.is_finished(), "no request was made");

    let mut scaled = deployment;
    scaled["metadata"]["generation"] = json!(2);
    scaled["spec"]["replicas"] = json!(7);
    seed(&mut w.deployments, scaled);
    within(mcpserver::reconcile(typed(&server), ctx)).await.expect("reconcile after the drift");
    finish(script).await;
}

/// A scale-up of a running server: Event Scaled, and children no longer needed are deleted
/// (in the background), while one already being deleted is left alone.
#[tokio::test]
async fn scale_up_reports_scaled_and_prunes_stale_children() {
    let stale = format!("{NAME}-old-plugin");
    let deployment_of = |meta: Value| json!({"metadata": meta, "spec": {"selector": {}, "template": {}}});
    let (ctx, mut api) = testbed_with(|w| {
        seed(&mut w.deployments, running_deployment(1, 1, 3));
        seed(&mut w.deployments, deployment_of(meta(&stale)));
        seed(&mut w.deployments, deployment_of(deleting_meta("my-mcp-server-gone")));
        seed_meta(&mut w.services, meta(NAME));
        seed_meta(&mut w.services, meta(&stale));
        // A NetworkPolicy left from a policy with network rules that the server no longer names.
        seed_meta(&mut w.network_policies, meta(NAME));
        seed(&mut w.pods, running_pod("my-mcp-server-abc"));
    });
    let mut server = server_json();
    server["metadata"]["generation"] = json!(2);
    server["status"] = json!({ "conditions": workload_reported() });
    let obj = server.clone();
    let script = tokio::spawn(async move {
        let deployment = format!("{DEPLOYMENTS}/{NAME}");
        // A running server changing more than one child: a dry run of them first.
        api.dry_run_all(&children_paths(), as_stored).await;
        let bodies = api
            .apply_all(&children_paths(), |path, body| {
                if path != deployment {
                    return as_stored(path, body);
                }
                // The apply answers with the new spec; the rollout has not been observed yet.
                let mut applied = running_deployment(2, 1, 4);
                applied["status"] =
                    json!({"observedGeneration": 3, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1});
                (200, applied)
            })
            .await;
        assert_eq!(bodies[&format!("{DEPLOYMENTS}/{NAME}")]["spec"]["replicas"], 2);

        let stale = format!("{NAME}-old-plugin");
        let del = api.expect(Method::DELETE, &format!("{DEPLOYMENTS}/{stale}"), &[]).await;
        assert_eq!(del.body, json!({"propagationPolicy": "Background"}));
        del.ok(json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}));
        let del = api.expect(Method::DELETE, &format!("{SERVICES}/{stale}"), &[]).await;
        assert_eq!(del.body, json!({"propagationPolicy": "Background"}));
        del.ok(json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}));
        let del = api.expect(Method::DELETE, &format!("{NETWORK_POLICIES}/{NAME}"), &[]).await;
        assert_eq!(del.body, json!({"propagationPolicy": "Background"}));
        del.ok(json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}));

        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        assert_json_include!(
            actual: body["status"].clone(),
            expected: json!({"phase": "Running", "replicas": 2, "readyReplicas": 1, "ready": "1/2", "observedGeneration": 2})
        );
        assert_eq!(cond(&body["status"], "Progressing")["reason"], "RolloutInProgress");
        assert_eq!(cond(&body["status"], "Degraded")["message"], "1 of 2 replicas ready");

        api.event("Normal", "Scaled", "Scale", "Scaled from 1 to 2 replicas").await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn missing_policy_starts_nothing_and_says_why() {
    let (ctx, mut api) = testbed();
    let mut server = server_json();
    server["spec"]["securityPolicy"] = json!("default-policy");
    let obj = server.clone();
    let script = tokio::spawn(async move {
        // The policy is not in the cache. Fail closed: no child is applied, nothing is pruned.

        let message =
            "SecurityPolicy \"default-policy\" not found in namespace default: the server is not started without it";
        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let status = &body["status"];
        assert_json_include!(
            actual: status.clone(),
            expected: json!({"phase": "Failed", "replicas": 0, "readyReplicas": 0, "ready": "0/0"})
        );
        assert_eq!(
            conditions(status),
            triples(&[
                ("SecurityPolicyResolved", "False", "PolicyNotFound"),
                ("PluginsResolved", "True", "NoPlugins"),
                ("Available", "False", "NoReplicasReady"),
                ("Progressing", "False", "NoWorkload"),
                ("Degraded", "True", "ReferencesUnresolved"),
                ("Ready", "False", "PolicyNotFound"),
                ("McpReady", "Unknown", "StatusNotRead"),
            ])
        );
        assert_eq!(cond(status, "SecurityPolicyResolved")["message"], message);

        api.event("Warning", "PolicyNotFound", "Resolve", message).await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::requeue(Duration::from_secs(30)), "look again for the policy");
}

/// The guide's policy, whose TLS Secret is gone while the server runs: the running Deployment is
/// not touched (fail closed without losing what runs) and the status names the field.
#[tokio::test]
async fn invalid_policy_leaves_the_running_deployment_alone() {
    let mut server = server_json();
    server["spec"]["securityPolicy"] = json!("default-policy");
    server["status"] = json!({
        "phase": "Running", "replicas": 2, "readyReplicas": 2, "ready": "2/2",
        "selector": SERVER_PODS, "url": "https://my-mcp-server.default.svc:3000/mcp", "observedGeneration": 1,
        "conditions": [
            {"type": "SecurityPolicyResolved", "status": "True", "reason": "PolicyValid", "message": "SecurityPolicy \"default-policy\" (generation 1) is enforced", "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 1},
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "2 of 2 replicas ready", "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 1},
        ],
    });
    let policy = json!({
        "apiVersion": API_VERSION,
        "kind": "SecurityPolicy",
        "metadata": {"name": "default-policy", "namespace": NS, "uid": "uid-policy", "resourceVersion": "300", "generation": 1},
        "spec": {
            "enabled": true,
            "authentication": {
                "required": true,
                "methods": ["jwt", "oauth2"],
                "jwt": {"issuer": "https://auth.example.com", "audiences": ["mcp"], "jwksUri": "https://auth.example.com/.well-known/jwks.json"},
                "oauth2": {"introspectionUrl": "https://auth.example.com/oauth2/introspect", "clientSecretRef": {"name": "oauth2-client"}},
            },
            "authorization": {"mode": "rbac", "allowedRoles": ["admin", "developer"]},
            "rateLimiting": {"enabled": true, "requestsPerMinute": 100, "burstSize": 200},
            "encryption": {"tlsEnabled": true, "tlsVersion": "1.3", "certSecretName": "tls-cert-secret"},
            "audit": {"enabled": true, "logLevel": "info", "retentionDays": 30},
        },
    });
    let (ctx, mut api) = testbed_with(|w| {
        seed(&mut w.policies, policy);
        seed(&mut w.deployments, running_deployment(2, 2, 1));
        seed(&mut w.pods, running_pod("my-mcp-server-a"));
        seed(&mut w.pods, running_pod("my-mcp-server-b"));
    });
    let obj = server.clone();
    let script = tokio::spawn(async move {
        // The policy, the Deployment and the pods come from the caches; the Secrets the policy
        // names are read once (they are not watched).
        // Referenced Secrets, by name.
        api.get(
            &format!("{SECRETS}/oauth2-client"),
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "oauth2-client", "namespace": NS, "resourceVersion": "77"},
                "data": {"client-id": "bWNw", "client-secret": "c2VjcmV0"},
            }),
        )
        .await;
        api.get_not_found(&format!("{SECRETS}/tls-cert-secret")).await;
        // No apply, no prune: straight to the status.

        let message = "SecurityPolicy \"default-policy\" is invalid: spec.encryption.certSecretName: Secret \"tls-cert-secret\" not found";
        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let status = &body["status"];
        assert_json_include!(
            actual: status.clone(),
            expected: json!({"phase": "Failed", "replicas": 2, "readyReplicas": 2, "ready": "2/2"})
        );
        assert_eq!(
            conditions(status),
            triples(&[
                ("SecurityPolicyResolved", "False", "PolicyInvalid"),
                ("PluginsResolved", "True", "NoPlugins"),
                ("Available", "True", "MinimumReplicasAvailable"),
                ("Progressing", "True", "RolloutComplete"),
                ("Degraded", "True", "ReferencesUnresolved"),
                ("Ready", "False", "PolicyInvalid"),
                ("McpReady", "Unknown", "StatusNotRead"),
            ])
        );
        let resolved = cond(status, "SecurityPolicyResolved");
        assert_eq!(resolved["message"], message);
        assert_ne!(resolved["lastTransitionTime"], "2024-01-01T00:00:00Z", "the condition changed");
        assert_eq!(cond(status, "Available")["lastTransitionTime"], "2024-01-01T00:00:00Z", "unchanged: kept");

        api.event("Warning", "PolicyInvalid", "Resolve", message).await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn held_back_server_still_scales_its_running_deployment() {
    let mut server = server_json();
    server["spec"]["securityPolicy"] = json!("default-policy");
    // `kubectl scale mcpserver my-mcp-server --replicas=5` while its policy is invalid.
    server["spec"]["replicas"] = json!(5);
    server["status"] = json!({
        "phase": "Running", "replicas": 2, "readyReplicas": 2, "ready": "2/2",
        "selector": SERVER_PODS, "url": "https://my-mcp-server.default.svc:3000/mcp", "observedGeneration": 1,
        "conditions": [
            {"type": "SecurityPolicyResolved", "status": "True", "reason": "PolicyValid", "message": "SecurityPolicy \"default-policy\" (generation 1) is enforced", "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 1},
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "2 of 2 replicas ready", "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 1},
        ],
    });
    let policy = json!({
        "apiVersion": API_VERSION,
        "kind": "SecurityPolicy",
        "metadata": {"name": "default-policy", "namespace": NS, "uid": "uid-policy", "resourceVersion": "300", "generation": 1},
        "spec": {
            "enabled": true,
            "authentication": {
                "required": true,
                "methods": ["jwt", "oauth2"],
                "jwt": {"issuer": "https://auth.example.com", "audiences": ["mcp"], "jwksUri": "https://auth.example.com/.well-known/jwks.json"},
                "oauth2": {"introspectionUrl": "https://auth.example.com/oauth2/introspect", "clientSecretRef": {"name": "oauth2-client"}},
            },
            "authorization": {"mode": "rbac", "allowedRoles": ["admin", "developer"]},
            "rateLimiting": {"enabled": true, "requestsPerMinute": 100, "burstSize": 200},
            "encryption": {"tlsEnabled": true, "tlsVersion": "1.3", "certSecretName": "tls-cert-secret"},
            "audit": {"enabled": true, "logLevel": "info", "retentionDays": 30},
        },
    });
    let (ctx, mut api) = testbed_with(|w| {
        seed(&mut w.policies, policy);
        seed(&mut w.deployments, running_deployment(2, 2, 1));
        seed(&mut w.pods, running_pod("my-mcp-server-a"));
        seed(&mut w.pods, running_pod("my-mcp-server-b"));
    });
    let obj = server.clone();
    let script = tokio::spawn(async move {
        // The policy, the Deployment and the pods come from the caches; the Secrets the policy
        // names are read once (they are not watched).
        // Referenced Secrets, by name.
        api.get(
            &format!("{SECRETS}/oauth2-client"),
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "oauth2-client", "namespace": NS, "resourceVersion": "77"},
                "data": {"client-id": "bWNw", "client-secret": "c2VjcmV0"},
            }),
        )
        .await;
        api.get_not_found(&format!("{SECRETS}/tls-cert-secret")).await;
        // No apply of the held-back template, no prune: only the replica count, through the
        // scale subresource.
        let scale = api.expect(Method::PATCH, &format!("{DEPLOYMENTS}/{NAME}/scale"), &[]).await;
        assert_eq!(scale.content_type.as_deref(), Some("application/merge-patch+json"));
        assert_eq!(scale.body, json!({"spec": {"replicas": 5}}), "nothing but the replicas");
        scale.ok(json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": NAME, "namespace": NS}, "spec": {"replicas": 5}, "status": {"replicas": 2}}));

        let message = "SecurityPolicy \"default-policy\" is invalid: spec.encryption.certSecretName: Secret \"tls-cert-secret\" not found";
        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let status = &body["status"];
        assert_json_include!(
            actual: status.clone(),
            expected: json!({"phase": "Failed", "replicas": 5, "readyReplicas": 2, "ready": "2/5"})
        );
        assert_eq!(
            conditions(status),
            triples(&[
                ("SecurityPolicyResolved", "False", "PolicyInvalid"),
                ("PluginsResolved", "True", "NoPlugins"),
                ("Available", "True", "MinimumReplicasAvailable"),
                ("Progressing", "True", "RolloutInProgress"),
                ("Degraded", "True", "ReferencesUnresolved"),
                ("Ready", "False", "PolicyInvalid"),
                ("McpReady", "Unknown", "StatusNotRead"),
            ])
        );
        let resolved = cond(status, "SecurityPolicyResolved");
        assert_eq!(resolved["message"], message);
        assert_ne!(resolved["lastTransitionTime"], "2024-01-01T00:00:00Z", "the condition changed");
        assert_eq!(cond(status, "Available")["lastTransitionTime"], "2024-01-01T00:00:00Z", "unchanged: kept");

        api.event(
            "Normal",
            "Scaled",
            "Scale",
            "Scaled from 2 to 5 replicas (the running pod template; other changes are held back)",
        )
        .await;
        api.event("Warning", "PolicyInvalid", "Resolve", message).await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::requeue(Duration::from_secs(30)));
}

fn deleting_server(status: Value) -> Value {
    let mut server = server_json();
    server["metadata"]["deletionTimestamp"] = json!("2024-01-02T00:00:00Z");
    server["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    server["status"] = status;
    server
}

#[tokio::test]
async fn a_deleted_server_is_left_to_the_garbage_collector() {
    // No finalizer: the children carry owner references; nothing to do, nothing to wait for.
    let (ctx, api) = testbed();
    let server = deleting_server(json!({"phase": "Running", "replicas": 2, "readyReplicas": 2, "conditions": []}));
    let script = tokio::spawn(api.done());
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::await_change());
}

#[tokio::test]
async fn a_deleted_server_with_an_earlier_versions_finalizer_goes_at_once() {
    let (ctx, mut api) = testbed();
    let mut server =
        deleting_server(json!({"phase": "Terminating", "replicas": 2, "readyReplicas": 2, "conditions": []}));
    server["metadata"]["finalizers"] = json!([FINALIZER]);
    let obj = server.clone();
    let script = tokio::spawn(async move {
        // Pods or not: released straight away.
        let call = api.expect(Method::PATCH, &format!("{MCPSERVERS}/{NAME}"), &[]).await;
        assert_eq!(call.body, json!({"metadata": {"resourceVersion": "500", "finalizers": []}}));
        let mut released = obj;
        released["metadata"]["finalizers"] = json!([]);
        call.ok(released);
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::await_change());
}

// ---------------------------------------------------------------------------------------------
// Plugin and SecurityPolicy: usage, no finalizers
// ---------------------------------------------------------------------------------------------

fn server_named(name: &str, spec: Value) -> Value {
    let mut s = server_json();
    s["metadata"]["name"] = json!(name);
    s["metadata"]["uid"] = json!(format!("uid-{name}"));
    for (k, v) in spec.as_object().unwrap() {
        s["spec"][k] = v.clone();
    }
    s
}

#[tokio::test]
async fn plugin_in_use_reports_its_users_and_gets_no_finalizer() {
    let plugin = json!({
        "apiVersion": API_VERSION,
        "kind": "Plugin",
        "metadata": {"name": "wordpress-plugin", "namespace": NS, "uid": "uid-plugin", "resourceVersion": "100", "generation": 1},
        "spec": {"name": "wordpress", "image": "mcp-rs-wordpress-plugin:latest", "version": "1.0.0", "isolation": {"level": "Container"}},
    });
    let obj = plugin.clone();
    let (ctx, mut api) = testbed_with(|w| {
        seed(&mut w.servers, server_named(NAME, json!({"plugins": ["wordpress-plugin"]})));
        seed(&mut w.servers, server_named("other-server", json!({"plugins": []})));
        // Written under a newer CRD: skipped, and the others still count.
        seed(
            &mut w.servers,
            server_named("future-server", json!({"plugins": ["wordpress-plugin"], "transport": "grpc"})),
        );
        seed(&mut w.plugins, obj.clone());
    });
    let script = tokio::spawn(async move {
        // Servers and plugins come from the caches.
        // In use, yet no finalizer: straight to the status.
        let body = api.write_status(&format!("{PLUGINS}/wordpress-plugin"), obj.clone()).await;
        let status = &body["status"];
        assert_json_include!(
            actual: status.clone(),
            expected: json!({"phase": "Ready", "usedBy": [NAME], "usedByCount": 1, "dependencies": [], "observedGeneration": 1})
        );
        assert_eq!(
            conditions(status),
            triples(&[("DependenciesResolved", "True", "NoDependencies"), ("Ready", "True", "Ready")])
        );
        assert_eq!(cond(status, "Ready")["message"], "isolation Container");
        // Ready: no Event.
        api.done().await;
    });
    let result = within(plugin::reconcile(typed(&plugin), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::requeue(Duration::from_secs(300)));
}

/// An MCPServer written under a newer CRD (`transport: grpc`) with `meta` merged into its
/// metadata, as the operator's guard reads it, and the reason it cannot be read.
fn unreadable_server(meta: Value) -> (Value, mcp_operator::controller::Guarded<mcp_operator::api::McpServer>, String) {
    let mut obj = server_named("future-server", json!({"transport": "grpc"}));
    for (k, v) in meta.as_object().unwrap() {
        obj["metadata"][k] = v.clone();
    }
    let guard: mcp_operator::controller::Guarded<mcp_operator::api::McpServer> =
        serde_json::from_value(obj.clone()).expect("the guard takes any object");
    let error = guard.0.as_ref().expect_err("not readable").error.clone();
    assert!(error.contains("grpc") && error.contains("websocket"), "names the value and what is accepted: {error}");
    (obj, guard, error)
}

const FUTURE_SERVER: &str = "future-server";

fn future_server_ref() -> Value {
    json!({"apiVersion": API_VERSION, "kind": "MCPServer", "name": FUTURE_SERVER, "namespace": NS, "uid": "uid-future-server"})
}

async fn reconcile_unreadable(
    guard: mcp_operator::controller::Guarded<mcp_operator::api::McpServer>,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    let result =
        within(mcp_operator::controller::reconcile_guarded(Arc::new(guard), ctx, "mcpserver", mcpserver::reconcile))
            .await;
    result.expect("reconcile")
}

#[tokio::test]
async fn unreadable_server_gets_an_event_and_is_left_alone() {
    let (ctx, mut api) = testbed();
    let (_, guard, error) = unreadable_server(json!({}));
    let script = tokio::spawn(async move {
        let note = format!("this MCPServer cannot be read by the operator ({error}); fix it or upgrade the operator");
        api.event_about(future_server_ref(), "Warning", "InvalidObject", "Read", &note).await;
        // Nothing else: no finalizer, no children, no status.
        api.done().await;
    });
    let action = reconcile_unreadable(guard, ctx).await;
    finish(script).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn deleting_an_unreadable_server_is_not_held_up() {
    let (ctx, mut api) = testbed();
    let (future, guard, error) = unreadable_server(json!({
        "resourceVersion": "300",
        "deletionTimestamp": "2024-01-02T00:00:00Z",
        "finalizers": ["example.com/other", FINALIZER],
    }));
    let script = tokio::spawn(async move {
        let note = format!("this MCPServer cannot be read by the operator ({error}); fix it or upgrade the operator");
        api.event_about(future_server_ref(), "Warning", "InvalidObject", "Read", &note).await;
        let call = api.expect(Method::PATCH, &format!("{MCPSERVERS}/{FUTURE_SERVER}"), &[]).await;
        assert_eq!(call.content_type.as_deref(), Some(MERGE));
        assert_eq!(
            call.body,
            json!({"metadata": {"resourceVersion": "300", "finalizers": ["example.com/other"]}}),
            "only the operator's finalizer goes, optimistically locked"
        );
        let mut released = future;
        released["metadata"]["finalizers"] = json!(["example.com/other"]);
        call.ok(released);
        let note = "deleting an unreadable MCPServer: the operator's finalizer is released";
        api.event_about(future_server_ref(), "Warning", "Deleted", "Delete", note).await;
        api.done().await;
    });
    let action = reconcile_unreadable(guard, ctx).await;
    finish(script).await;
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn unused_policy_being_deleted_is_released() {
    let (ctx, mut api) = testbed_with(|w| {
        seed(&mut w.servers, server_named(NAME, json!({"securityPolicy": "production-policy"})));
        seed(&mut w.servers, server_named("other-server", json!({})));
    });
    let policy = json!({
        "apiVersion": API_VERSION,
        "kind": "SecurityPolicy",
        "metadata": {
            "name": "default-policy", "namespace": NS, "uid": "uid-policy", "resourceVersion": "200", "generation": 1,
            "deletionTimestamp": "2024-01-02T00:00:00Z", "deletionGracePeriodSeconds": 0,
            "finalizers": [IN_USE_FINALIZER],
        },
        "spec": {"enabled": true},
        "status": {"phase": "Active", "usedBy": [], "usedByCount": 0, "tls": "off", "conditions": []},
    });
    let obj = policy.clone();
    let script = tokio::spawn(async move {
        let call = api.expect(Method::PATCH, &format!("{POLICIES}/default-policy"), &[]).await;
        assert_eq!(call.content_type.as_deref(), Some(MERGE));
        assert_eq!(call.body, json!({"metadata": {"resourceVersion": "200", "finalizers": []}}));
        let mut released = obj;
        released["metadata"]["finalizers"] = json!([]);
        call.ok(released);
        // The object is gone: no Secret lookups, no status write, no Event.
        api.done().await;
    });
    let result = within(securitypolicy::reconcile(typed(&policy), ctx)).await;
    finish(script).await;
    assert_eq!(result.expect("reconcile"), Action::await_change());
}

/// A policy that asks for a self-signed certificate and a generated JWT key: both missing
/// Secrets are created (owned by the policy, marked as issued) and announced, then the policy
/// validates against them and is Active.
#[tokio::test]
async fn missing_secrets_a_policy_asks_for_are_issued_then_it_validates() {
    let (ctx, mut api) = testbed();
    let policy = json!({
        "apiVersion": API_VERSION,
        "kind": "SecurityPolicy",
        "metadata": {"name": "default-policy", "namespace": NS, "uid": "uid-policy", "resourceVersion": "200", "generation": 1},
        "spec": {
            "enabled": true,
            "authentication": {"required": true, "methods": ["jwt"],
                               "jwt": {"secretRef": {"name": "jwt-key", "key": "hs256"}, "generateSecret": true}},
            "encryption": {"tlsEnabled": true, "tlsVersion": "1.3", "certSecretName": "tls", "selfSigned": true},
        },
    });
    let obj = policy.clone();
    let script = tokio::spawn(async move {
        // Each Secret the policy names is read once, in name order; both are missing.
        for name in ["jwt-key", "tls"] {
            api.get_not_found(&format!("{SECRETS}/{name}")).await;
        }
        for (name, type_, keys) in
            [("tls", "kubernetes.io/tls", vec!["tls.crt", "tls.key"]), ("jwt-key", "Opaque", vec!["hs256"])]
        {
            let call = api.expect(Method::POST, SECRETS, &[]).await;
            let body = call.body.clone();
            assert_eq!(body["metadata"]["name"], name);
            assert_eq!(body["type"], type_);
            assert_eq!(body["metadata"]["ownerReferences"][0]["name"], "default-policy", "owned by the policy");
            assert!(body["metadata"]["annotations"]["mcp.n-takatsu.dev/issued"].is_string(), "marked as issued");
            let data = body["data"].as_object().expect("data");
            assert_eq!(data.keys().map(String::as_str).collect::<Vec<_>>(), keys);
            call.respond(201, stored(body.clone()));
            let (what, reason) = if name == "tls" {
                (
                    "a self-signed certificate for the namespace's Services (spec.encryption.selfSigned)",
                    "CertificateIssued",
                )
            } else {
                ("a random HS256 key (spec.authentication.jwt.generateSecret)", "JwtKeyIssued")
            };
            let policy_ref = json!({"apiVersion": API_VERSION, "kind": "SecurityPolicy", "name": "default-policy", "namespace": NS, "uid": "uid-policy"});
            let note = format!("Issued Secret {name:?} with {what}");
            api.event_about(policy_ref, "Normal", reason, "Issue", &note).await;
        }
        // Validation uses what was written: no read back.
        let body = api.write_status(&format!("{POLICIES}/default-policy"), stored(obj)).await;
        assert_eq!(body["status"]["phase"], "Active", "{body}");
        let policy_ref = json!({"apiVersion": API_VERSION, "kind": "SecurityPolicy", "name": "default-policy", "namespace": NS, "uid": "uid-policy"});
        api.event_about(policy_ref, "Normal", "Active", "Validate", "SecurityPolicy is Active").await;
        api.done().await;
    });
    let result = within(securitypolicy::reconcile(typed(&policy), ctx)).await;
    finish(script).await;
    result.expect("reconcile");
}

/// A Secret that exists is used as it is, whoever made it: nothing is created or replaced.
#[tokio::test]
async fn an_existing_secret_is_never_replaced_by_an_issued_one() {
    let (ctx, mut api) = testbed();
    let policy = json!({
        "apiVersion": API_VERSION,
        "kind": "SecurityPolicy",
        "metadata": {"name": "p", "namespace": NS, "uid": "uid-p", "resourceVersion": "200", "generation": 1},
        "spec": {"enabled": true, "encryption": {"tlsEnabled": true, "certSecretName": "tls", "selfSigned": true}},
        "status": {"phase": "Active", "usedBy": [], "usedByCount": 0, "tls": "1.3", "observedGeneration": 1,
                   "conditions": [{"type": "Valid", "status": "True", "reason": "Valid", "observedGeneration": 1,
                                   "message": "every referenced Secret exists and holds its keys",
                                   "lastTransitionTime": "2024-01-01T00:00:00Z"}]},
    });
    let mine = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                      "metadata": {"name": "tls", "namespace": NS, "resourceVersion": "5"},
                      "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"}});
    let script = tokio::spawn(async move {
        // Read once, by name.
        api.get(&format!("{SECRETS}/tls"), mine).await;
        // Valid and unchanged: no status write, no Event.
        api.done().await;
    });
    let result = within(securitypolicy::reconcile(typed(&policy), ctx)).await;
    finish(script).await;
    result.expect("reconcile");
}

/// A Secret a policy names is rotated: the policy's reconcile (the one place Secrets are read)
/// sees the new resourceVersion and asks for a reconcile of the servers that name the policy,
/// which then read it from the cache, not the API server.
#[tokio::test]
async fn a_rotated_secret_triggers_the_servers_of_its_policy() {
    let (ctx, mut api, mut w) = testbed_writers();
    seed(&mut w.servers, server_named(NAME, json!({"securityPolicy": "p"})));
    seed(&mut w.servers, server_named("other-server", json!({"securityPolicy": "q"})));
    let secret = |rv: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
               "metadata": {"name": "tls", "namespace": NS, "resourceVersion": rv},
               "data": {"tls.crt": "Y3J0", "tls.key": "a2V5"}})
    };
    ctx.caches.secrets.put(NS, "tls", Some(serde_json::from_value(secret("5")).unwrap()));
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let mut inner = Arc::try_unwrap(ctx).unwrap_or_else(|_| panic!("one owner"));
    inner.server_trigger = Some(tx);
    let ctx = Arc::new(inner);
    let policy = json!({
        "apiVersion": API_VERSION,
        "kind": "SecurityPolicy",
        "metadata": {"name": "p", "namespace": NS, "uid": "uid-p", "resourceVersion": "200", "generation": 1},
        "spec": {"enabled": true, "encryption": {"tlsEnabled": true, "certSecretName": "tls"}},
        "status": {"phase": "Active", "usedBy": [NAME], "usedByCount": 1, "tls": "1.3", "observedGeneration": 1,
                   "conditions": [{"type": "Valid", "status": "True", "reason": "Valid", "observedGeneration": 1,
                                   "message": "every referenced Secret exists and holds its keys",
                                   "lastTransitionTime": "2024-01-01T00:00:00Z"}]},
    });
    let script = tokio::spawn(async move {
        api.get(&format!("{SECRETS}/tls"), secret("6")).await;
        api.done().await;
    });
    within(securitypolicy::reconcile(typed(&policy), ctx.clone())).await.expect("reconcile");
    drop(ctx);
    finish(script).await;
    let triggered: Vec<String> = futures::StreamExt::collect::<Vec<_>>(rx).await.into_iter().map(|r| r.name).collect();
    assert_eq!(triggered, vec![NAME.to_string()], "only the server naming the policy");
}

#[tokio::test]
async fn gateway_status_is_read_through_the_service_proxy_and_tool_changes_are_announced() {
    let (ctx, mut api) = testbed_with(|w| {
        seed(&mut w.deployments, running_deployment(2, 2, 3));
        seed(&mut w.pods, running_pod("a"));
        seed(&mut w.pods, running_pod("b"));
    });
    let ctx = Arc::new(Arc::try_unwrap(ctx).unwrap_or_else(|_| panic!("one owner")).with_gateway_status(true));
    let mut server = server_json();
    server["metadata"]["generation"] = json!(2);
    // Steady state, as the previous reconcile left it, with one tool known.
    server["status"] = json!({
        "phase": "Running", "replicas": 2, "readyReplicas": 2, "ready": "2/2", "observedGeneration": 2,
        "serverInfo": {"name": "everything"}, "toolCount": 1, "tools": ["echo"], "conditions": workload_reported(),
    });
    let obj = server.clone();
    let script = tokio::spawn(async move {
        // The cached children carry no applied hash: each is applied once (after a dry run: the
        // server runs and more than one child changes).
        let deployment = format!("{DEPLOYMENTS}/{NAME}");
        api.dry_run_all(&children_paths(), as_stored).await;
        api.apply_all(&children_paths(), |path, body| {
            if path == deployment {
                (200, running_deployment(2, 2, 3))
            } else {
                as_stored(path, body)
            }
        })
        .await;
        // The gateway's admin port, through the API server's service proxy (the operator runs
        // outside the cluster here: in a pod it asks the pod directly).
        let proxy = api.expect(Method::GET, &format!("{SERVICES}/{NAME}:admin/proxy/status"), &[]).await;
        proxy.ok(json!({
            "ready": true, "name": "everything", "version": "2.0.0", "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}, "prompts": {}}, "tools": ["echo", "add"],
        }));
        let body = api.write_status(&format!("{MCPSERVERS}/{NAME}"), stored(obj)).await;
        let status = &body["status"];
        assert_eq!(status["tools"], json!(["add", "echo"]));
        assert_eq!(status["toolCount"], 2);
        assert_eq!(
            status["serverInfo"],
            json!({"name": "everything", "version": "2.0.0", "protocolVersion": "2025-06-18", "capabilities": ["prompts", "tools"]})
        );
        assert_eq!(cond(status, "McpReady")["reason"], "HandshakeSucceeded");
        api.event("Normal", "ToolsChanged", "Discover", "tools added: [add]; removed: []").await;
        api.done().await;
    });
    let result = within(mcpserver::reconcile(typed(&server), ctx)).await;
    finish(script).await;
    assert_eq!(
        result.expect("reconcile"),
        Action::requeue(Duration::from_secs(300)),
        "steady: the tools are read again when the pods change, or after the slow period"
    );
}

// ---------------------------------------------------------------------------------------------
// CRD upgrades
// ---------------------------------------------------------------------------------------------

/// Starting with older CRDs installed: an older MCPServer CRD is replaced by ours (optimistically,
/// its labels kept), a newer Plugin CRD is left alone, a missing SecurityPolicy CRD is not created.
#[tokio::test]
async fn older_crds_are_upgraded_newer_and_missing_ones_left_alone() {
    use mcp_operator::api::{crds, CRD_VERSION_ANNOTATION};
    use mcp_operator::crds::{upgrade, CrdPlan};
    const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let (ctx, mut api) = testbed();
    let shipped: Vec<Value> = crds().iter().map(|c| serde_json::to_value(c).unwrap()).collect();
    let installed = |i: usize, version: &str| {
        let mut v = shipped[i].clone();
        v["metadata"]["annotations"] = json!({CRD_VERSION_ANNOTATION: version});
        v["metadata"]["labels"] = json!({"team": "platform"});
        v["metadata"]["resourceVersion"] = json!("77");
        v["spec"]["versions"][0]["additionalPrinterColumns"] = json!([]);
        v
    };
    let expected = shipped.clone();
    let old = installed(0, "0.0.1");
    let newer = installed(1, "999.0.0");
    let script = tokio::spawn(async move {
        api.get(&format!("{CRDS}/mcpservers.mcp.n-takatsu.dev"), old).await;
        let put = api.expect(Method::PUT, &format!("{CRDS}/mcpservers.mcp.n-takatsu.dev"), &[]).await;
        assert_eq!(put.body["spec"], expected[0]["spec"], "the shipped schema");
        assert_eq!(put.body["metadata"]["resourceVersion"], "77", "optimistic");
        assert_eq!(put.body["metadata"]["labels"], json!({"team": "platform"}));
        assert_eq!(put.body["metadata"]["annotations"][CRD_VERSION_ANNOTATION], env!("CARGO_PKG_VERSION"));
        let body = put.body.clone();
        put.ok(body);
        api.get(&format!("{CRDS}/plugins.mcp.n-takatsu.dev"), newer).await;
        api.get_not_found(&format!("{CRDS}/securitypolicies.mcp.n-takatsu.dev")).await;
    });
    let done = within(upgrade(&ctx.client)).await;
    finish(script).await;
    let plans: Vec<(String, CrdPlan)> = done.into_iter().map(|(n, r)| (n, r.unwrap())).collect();
    assert_eq!(
        plans,
        [
            ("mcpservers.mcp.n-takatsu.dev".to_string(), CrdPlan::Upgrade(Some("0.0.1".into()))),
            ("plugins.mcp.n-takatsu.dev".to_string(), CrdPlan::Newer("999.0.0".into())),
            ("securitypolicies.mcp.n-takatsu.dev".to_string(), CrdPlan::Missing),
        ]
    );
}
