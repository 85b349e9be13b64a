//! The operator benchmark (`just bench-operator`, hack/bench-operator.sh): on a cluster (the local
//! kwok one by default; E2E_CLUSTER as for the e2e suite), with an optimized operator build:
//!
//! - reconcile latency: from creating an MCPServer to its Deployment arriving on a watch, one
//!   server at a time, against the round trip of a plain create (a ConfigMap) in the same run;
//! - a burst: BENCH_SERVERS MCPServers (default 200) applied in two halves, 8 creates in flight:
//!   create-to-Deployment latency under load and the time until every one is Running;
//! - the operator's resident memory per MCPServer, for each half (flat: about equal);
//! - a quiet window (BENCH_QUIET_SECS, default 60) after: objects the operator rewrote (their
//!   resourceVersion changed; the budget is none) and reconciles it ran.
//!
//! Timings on a shared machine are noisy: compare the ratios, not the absolute figures.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use mcp_operator::api::{McpServer, McpServerPhase};
use mcp_operator_e2e::{env, TestNamespace};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident memory of a process in KiB (Linux).
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn server(name: &str) -> McpServer {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "mcp.n-takatsu.dev/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": name}, "spec": {},
    }))
    .expect("MCPServer")
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((p / 100.0) * (v.len().max(1) - 1) as f64).round() as usize).copied().unwrap_or(f64::NAN)
}

/// When each Deployment of the namespace was first seen on a watch.
fn watch_deployments(ns: &TestNamespace) -> Arc<Mutex<HashMap<String, Instant>>> {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (api, s) = (ns.api::<Deployment>(), seen.clone());
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).applied_objects().boxed();
        while let Some(Ok(d)) = stream.next().await {
            s.lock().unwrap().entry(d.name_any()).or_insert_with(Instant::now);
        }
    });
    seen
}

async fn deployment_seen(seen: &Mutex<HashMap<String, Instant>>, name: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(t) = seen.lock().unwrap().get(name) {
            return *t;
        }
        assert!(Instant::now() < deadline, "no Deployment for {name}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn running(api: &Api<McpServer>) -> usize {
    let list = api.list(&ListParams::default()).await.expect("list MCPServers");
    list.items.iter().filter(|s| s.status.as_ref().is_some_and(|st| st.phase == McpServerPhase::Running)).count()
}

async fn wait_running(api: &Api<McpServer>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(900);
    while running(api).await < n {
        assert!(Instant::now() < deadline, "not all {n} MCPServers Running");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates `names` (8 in flight); returns create-to-Deployment latencies in ms.
async fn burst(api: &Api<McpServer>, seen: &Mutex<HashMap<String, Instant>>, names: Vec<String>) -> Vec<f64> {
    let created: Vec<(String, Instant)> = futures::stream::iter(names)
        .map(|name| async move {
            let t = Instant::now();
            api.create(&PostParams::default(), &server(&name)).await.expect("create");
            (name, t)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut out = vec![];
    for (name, t) in created {
        out.push(deployment_seen(seen, &name).await.duration_since(t).as_secs_f64() * 1e3);
    }
    out
}

/// resourceVersion of everything the operator writes in the namespace.
async fn versions(ns: &TestNamespace) -> BTreeMap<String, String> {
    async fn of<K>(api: Api<K>, kind: &str, out: &mut BTreeMap<String, String>)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        for o in api.list(&ListParams::default()).await.expect("list").items {
            out.insert(format!("{kind}/{}", o.name_any()), o.resource_version().unwrap_or_default());
        }
    }
    let mut out = BTreeMap::new();
    of(ns.api::<McpServer>(), "MCPServer", &mut out).await;
    of(ns.api::<Deployment>(), "Deployment", &mut out).await;
    of(ns.api::<Service>(), "Service", &mut out).await;
    of(ns.api::<ConfigMap>(), "ConfigMap", &mut out).await;
    of(ns.api::<ServiceAccount>(), "ServiceAccount", &mut out).await;
    out
}

async fn reconciles() -> Option<f64> {
    let body = mcp_operator_e2e::env::http_get(&format!("http://{}/metrics", env().metrics_addr)).await.ok()?;
    Some(
        body.lines()
            .filter(|l| l.starts_with("mcp_operator_reconcile_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_operator() {
    let total = setting("BENCH_SERVERS", 200) as usize;
    let quiet = Duration::from_secs(setting("BENCH_QUIET_SECS", 60));
    let env = env();
    let _install = env.exclusive().await;
    let ns = env.namespace("bench").await.expect("namespace");
    let servers = ns.api::<McpServer>();
    let seen = watch_deployments(&ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = env.operator_pid();
    let rss0 = rss_kib(pid);

    // One at a time: reconcile latency against a plain create's round trip.
    let cms = ns.api::<ConfigMap>();
    let (mut rtt, mut single) = (vec![], vec![]);
    for i in 0..20 {
        let cm: ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": format!("rtt-{i}")}})).unwrap();
        let t = Instant::now();
        cms.create(&PostParams::default(), &cm).await.expect("create ConfigMap");
        rtt.push(t.elapsed().as_secs_f64() * 1e3);
        let name = format!("single-{i}");
        let t = Instant::now();
        servers.create(&PostParams::default(), &server(&name)).await.expect("create");
        single.push(deployment_seen(&seen, &name).await.duration_since(t).as_secs_f64() * 1e3);
    }
    wait_running(&servers, 20).await;

    // The burst, in two halves.
    let half = total / 2;
    let t = Instant::now();
    let mut loaded = burst(&servers, &seen, (0..half).map(|i| format!("a-{i}")).collect()).await;
    wait_running(&servers, 20 + half).await;
    let first_half = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(pid);
    let t = Instant::now();
    loaded.extend(burst(&servers, &seen, (0..total - half).map(|i| format!("b-{i}")).collect()).await);
    wait_running(&servers, 20 + total).await;
    let second_half = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss2 = rss_kib(pid);

    // Quiet: nothing changes, so nothing should be written.
    let before = versions(&ns).await;
    let r0 = reconciles().await;
    tokio::time::sleep(quiet).await;
    let after = versions(&ns).await;
    let r1 = reconciles().await;
    let rewritten: Vec<&String> =
        before.iter().filter(|(k, v)| after.get(*k).is_some_and(|a| a != *v)).map(|(k, _)| k).collect();

    let per = |a: Option<u64>, b: Option<u64>, n: usize| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1} KiB", (b as f64 - a as f64) / n as f64),
        _ => "n/a (operator not a local process)".into(),
    };
    println!("\n## mcp-operator benchmark ({:?}, {total} + 20 MCPServers)\n", env.cluster.provider);
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| plain create round trip, p50 / p99 | {:.1} / {:.1} ms |", pct(&rtt, 50.0), pct(&rtt, 99.0));
    println!(
        "| create to Deployment on a watch, one at a time, p50 / p99 | {:.1} / {:.1} ms ({:.1}x the round trip) |",
        pct(&single, 50.0),
        pct(&single, 99.0),
        pct(&single, 50.0) / pct(&rtt, 50.0)
    );
    println!(
        "| create to Deployment, burst of {total} (8 in flight), p50 / p99 | {:.0} / {:.0} ms |",
        pct(&loaded, 50.0),
        pct(&loaded, 99.0)
    );
    println!(
        "| all Running: first {half} / next {} | {:.1} s / {:.1} s |",
        total - half,
        first_half.as_secs_f64(),
        second_half.as_secs_f64()
    );
    println!(
        "| operator memory per MCPServer: first half / second half | {} / {} |",
        per(rss0, rss1, half),
        per(rss1, rss2, total - half)
    );
    println!("| operator resident memory idle / with {} servers | {:?} / {:?} KiB |", total + 20, rss0, rss2);
    println!(
        "| quiet {} s: objects rewritten (of {}) / reconciles | {} / {} |",
        quiet.as_secs(),
        before.len(),
        rewritten.len(),
        match (r0, r1) {
            (Some(a), Some(b)) => format!("{}", b - a),
            _ => "n/a".into(),
        }
    );
    if !rewritten.is_empty() {
        println!("\nrewritten while quiet: {rewritten:?}");
    }
    assert!(rewritten.is_empty(), "a steady cluster causes no writes: {rewritten:?}");
}
