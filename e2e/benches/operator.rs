//! The operator benchmark (`just bench-operator`, hack/bench-operator.sh): on a cluster (the local
//! kwok one by default; E2E_CLUSTER as for the e2e suite), with an optimized operator build:
//!
//! - reconcile latency: from creating an MCPServer to its Deployment arriving on a watch, one
//!   server at a time, against the round trip of a plain create (a ConfigMap) in the same run;
//! - a burst: BENCH_SERVERS MCPServers (default 200; `just bench-operator 1000` or 5000) created
//!   32 at a time: the time until every one has its Deployment and until every one is Running,
//!   create-to-Deployment latency under load (p50/p99);
//! - the operator's resident memory (idle, after, peak) and CPU seconds for the burst;
//! - the operator's requests to the API server by verb (its `mcp_operator_kube_requests_total`)
//!   during the burst and during a quiet window after (BENCH_QUIET_SECS, default 120), where the
//!   budget is none at all; and objects rewritten in the quiet window (resourceVersion changed).
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
    proc_status_kib(pid, "VmRSS:")
}

/// Peak resident memory of a process in KiB (Linux).
fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: Option<u32>, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU seconds (user + system) a process has used (Linux, 100 ticks per second).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The operator's requests to the API server so far, by verb.
async fn requests() -> BTreeMap<String, f64> {
    let url = format!("http://{}/metrics", env().metrics_addr);
    let body = mcp_operator_e2e::env::http_get(&url).await.unwrap_or_default();
    body.lines()
        .filter_map(|l| l.strip_prefix("mcp_operator_kube_requests_total{verb=\""))
        .filter_map(|l| {
            let (verb, rest) = l.split_once('"')?;
            Some((verb.to_string(), rest.rsplit(' ').next()?.parse::<f64>().ok()?))
        })
        .collect()
}

/// What changed between two readings of [`requests`], as "verb n, ..." and the total of writes.
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> (String, f64, f64) {
    let mut parts = vec![];
    let (mut reads, mut writes) = (0.0, 0.0);
    for (verb, n) in after {
        let d = n - before.get(verb).copied().unwrap_or(0.0);
        if d > 0.0 {
            parts.push(format!("{verb} {d}"));
            if matches!(verb.as_str(), "get" | "list" | "watch") {
                reads += d;
            } else {
                writes += d;
            }
        }
    }
    (if parts.is_empty() { "none".into() } else { parts.join(", ") }, reads, writes)
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

/// Creates `names` (32 in flight); returns create-to-Deployment latencies in ms.
async fn burst(api: &Api<McpServer>, seen: &Mutex<HashMap<String, Instant>>, names: Vec<String>) -> Vec<f64> {
    let created: Vec<(String, Instant)> = futures::stream::iter(names)
        .map(|name| async move {
            let t = Instant::now();
            api.create(&PostParams::default(), &server(&name)).await.expect("create");
            (name, t)
        })
        .buffer_unordered(32)
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
    let quiet = Duration::from_secs(setting("BENCH_QUIET_SECS", 120));
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

    // The burst.
    let (cpu0, req0) = (cpu_seconds(pid), requests().await);
    let names: Vec<String> = (0..total).map(|i| format!("b-{i}")).collect();
    let t = Instant::now();
    let loaded = burst(&servers, &seen, names.clone()).await;
    let all_deployments = names
        .iter()
        .filter_map(|n| seen.lock().unwrap().get(n).copied())
        .max()
        .map(|last| last.duration_since(t))
        .unwrap_or_default();
    wait_running(&servers, 20 + total).await;
    let all_running = t.elapsed();
    let (cpu1, req1) = (cpu_seconds(pid), requests().await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(pid);
    let peak = peak_rss_kib(pid);
    let (converge_requests, converge_reads, converge_writes) = delta(&req0, &req1);

    // Quiet: nothing changes, so nothing should be written, nor even read.
    let before = versions(&ns).await;
    let r0 = reconciles().await;
    let q0 = requests().await;
    tokio::time::sleep(quiet).await;
    let q1 = requests().await;
    let after = versions(&ns).await;
    let r1 = reconciles().await;
    let rewritten: Vec<&String> =
        before.iter().filter(|(k, v)| after.get(*k).is_some_and(|a| a != *v)).map(|(k, _)| k).collect();
    let (quiet_requests, _, quiet_writes) = delta(&q0, &q1);

    let kib = |v: Option<u64>| {
        v.map_or("n/a (operator not a local process)".to_string(), |v| format!("{:.1} MiB", v as f64 / 1024.0))
    };
    let n = total as f64;
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
        "| burst of {total} (32 creates in flight): all Deployments / all Running | {:.1} s / {:.1} s |",
        all_deployments.as_secs_f64(),
        all_running.as_secs_f64()
    );
    println!(
        "| create to Deployment in the burst, p50 / p99 | {:.0} / {:.0} ms |",
        pct(&loaded, 50.0),
        pct(&loaded, 99.0)
    );
    println!("| operator memory: idle / after the burst / peak | {} / {} / {} |", kib(rss0), kib(rss1), kib(peak));
    println!(
        "| operator CPU for the burst | {} |",
        match (cpu0, cpu1) {
            (Some(a), Some(b)) => format!("{:.1} s ({:.1} ms per server)", b - a, (b - a) * 1e3 / n),
            _ => "n/a".into(),
        }
    );
    println!(
        "| operator API requests for the burst | {converge_requests} ({:.1} reads and {:.1} writes per server) |",
        converge_reads / n,
        converge_writes / n
    );
    println!(
        "| quiet {} s: operator API requests / objects rewritten (of {}) / reconciles | {} / {} / {} |",
        quiet.as_secs(),
        before.len(),
        quiet_requests,
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
    assert_eq!(quiet_writes, 0.0, "no write requests while quiet: {quiet_requests}");
}
