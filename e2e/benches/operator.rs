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
//!   budget is none at all; and objects rewritten in the quiet window (resourceVersion changed);
//! - with BENCH_PAUSE_CLUSTER=1 (local cluster): the cluster's controller manager, scheduler and
//!   kwok stopped (SIGSTOP) from the burst's start until every Deployment exists, so that "all
//!   Deployments" measures the operator's own pace against the API server (which otherwise
//!   spends most of the machine's two cores on the simulator's writes); "all Running" then
//!   includes the simulator catching up;
//! - with BENCH_TOOLHIVE (a thv-operator binary, hack/toolhive.sh) and BENCH_TOOLHIVE_CRDS (its
//!   CRDs): the same burst of ToolHive MCPServers against ToolHive's operator, on the same
//!   cluster right after (ours stopped), and the ratios.
//!
//! Timings on a shared machine are noisy: compare the ratios, not the absolute figures.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::core::PartialObjectMeta;
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

/// CPU seconds so far of each local cluster component (kwokctl's pid files in
/// BENCH_CLUSTER_PIDS, set by hack/bench-operator.sh for the local cluster): where the rest of a
/// burst's CPU goes on a shared machine.
fn cluster_cpu() -> BTreeMap<String, f64> {
    let Ok(dir) = std::env::var("BENCH_CLUSTER_PIDS") else { return BTreeMap::new() };
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeMap::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().strip_suffix(".pid")?.to_string();
            let pid = std::fs::read_to_string(e.path()).ok()?.trim().parse().ok();
            Some((name, cpu_seconds(pid)?))
        })
        .collect()
}

/// Each component's CPU seconds between two readings of [`cluster_cpu`], as "name 1.2 s".
fn cluster_spent(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<String> {
    after.iter().map(|(name, b)| format!("{name} {:.1} s", b - before.get(name).copied().unwrap_or(*b))).collect()
}

/// The cluster's own controllers (controller manager, scheduler, kwok), which BENCH_PAUSE_CLUSTER=1
/// stops (SIGSTOP) for the burst until every Deployment exists: the API server then serves the
/// operator alone, and "all Deployments" is the operator's own pace on this machine.
const SIMULATOR: [&str; 3] = ["kube-controller-manager", "kube-scheduler", "kwok-controller"];

/// Sends `signal` to the simulator's processes; true when there was one to send it to.
fn signal_simulator(signal: &str) -> bool {
    let Ok(dir) = std::env::var("BENCH_CLUSTER_PIDS") else { return false };
    let mut sent = false;
    // Resumed in reverse: kwok (which renews the simulated nodes' heartbeats) before the
    // controller manager, which would otherwise find them stale after a long pause.
    let order: Vec<&str> =
        if signal == "-CONT" { SIMULATOR.iter().rev().copied().collect() } else { SIMULATOR.to_vec() };
    for name in order {
        let Ok(pid) = std::fs::read_to_string(format!("{dir}/{name}.pid")) else { continue };
        let ok = std::process::Command::new("kill").args([signal, pid.trim()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} {name} ({})", pid.trim());
        sent = true;
    }
    sent
}

/// The operator's requests to the API server so far, by "verb resource".
async fn requests() -> BTreeMap<String, f64> {
    let url = format!("http://{}/metrics", env().metrics_addr);
    let body = mcp_operator_e2e::env::http_get(&url).await.unwrap_or_default();
    body.lines()
        .filter_map(|l| l.strip_prefix("mcp_operator_kube_requests_total{"))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            let label = |name: &str| labels.split(&format!("{name}=\"")).nth(1)?.split('"').next();
            Some((format!("{} {}", label("verb")?, label("resource")?), value.parse::<f64>().ok()?))
        })
        .collect()
}

/// Requests between two readings of [`requests`] (or a controller-runtime operator's, keyed by
/// method only), in three groups: reconcile traffic (everything but what follows), the leader
/// Lease's renewals, and watch renewals (a watch that ended and resumes, no relist).
struct Delta {
    reads: f64,
    writes: f64,
    lease: f64,
    watches: f64,
    detail: String,
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Delta {
    let mut d = Delta { reads: 0.0, writes: 0.0, lease: 0.0, watches: 0.0, detail: String::new() };
    let mut parts = vec![];
    for (key, n) in after {
        let n = n - before.get(key).copied().unwrap_or(0.0);
        if n <= 0.0 {
            continue;
        }
        parts.push(format!("{key} {n}"));
        let verb = key.split(' ').next().unwrap_or_default();
        if key.ends_with(" leases") {
            d.lease += n;
        } else if verb == "watch" {
            d.watches += n;
        } else if matches!(verb, "get" | "list") {
            d.reads += n;
        } else {
            d.writes += n;
        }
    }
    d.detail = if parts.is_empty() { "none".into() } else { parts.join(", ") };
    d
}

impl Delta {
    fn summary(&self) -> String {
        format!(
            "{} reads, {} writes (+ leader Lease {}, watch renewals {})",
            self.reads, self.writes, self.lease, self.watches
        )
    }
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

/// When each Deployment of the namespace was first seen on a watch (of metadata only: the
/// benchmark's own client should cost the machine it measures as little as it can).
fn watch_deployments(ns: &TestNamespace) -> Arc<Mutex<HashMap<String, Instant>>> {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (api, s) = (ns.api::<PartialObjectMeta<Deployment>>(), seen.clone());
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(d) = stream.next().await {
            if let Ok(d) = d {
                s.lock().unwrap().entry(d.name_any()).or_insert_with(Instant::now);
            }
        }
    });
    seen
}

async fn deployment_seen(seen: &Mutex<HashMap<String, Instant>>, name: &str) -> Instant {
    // A burst of thousands is worked through in no particular order.
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Some(t) = seen.lock().unwrap().get(name) {
            return *t;
        }
        assert!(Instant::now() < deadline, "no Deployment for {name}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// When each MCPServer of the namespace was first seen Running on a watch (a watch, not lists:
/// polling thousands of objects would load the API server the benchmark measures).
fn watch_running(ns: &TestNamespace) -> Arc<Mutex<HashMap<String, Instant>>> {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (api, s) = (ns.api::<McpServer>(), seen.clone());
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(server) = stream.next().await {
            let Ok(server) = server else { continue };
            if server.status.as_ref().is_some_and(|st| st.phase == McpServerPhase::Running) {
                s.lock().unwrap().entry(server.name_any()).or_insert_with(Instant::now);
            }
        }
    });
    seen
}

async fn wait_running(running: &Mutex<HashMap<String, Instant>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while running.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "not all {n} MCPServers Running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `names` (32 in flight); returns create-to-Deployment latencies in ms and how long
/// the creates took.
async fn burst(
    api: &Api<McpServer>,
    seen: &Mutex<HashMap<String, Instant>>,
    names: Vec<String>,
) -> (Vec<f64>, Duration) {
    let start = Instant::now();
    let created: Vec<(String, Instant)> = futures::stream::iter(names)
        .map(|name| async move {
            let t = Instant::now();
            api.create(&PostParams::default(), &server(&name)).await.expect("create");
            (name, t)
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let creates = start.elapsed();
    let mut out = vec![];
    for (name, t) in created {
        out.push(deployment_seen(seen, &name).await.duration_since(t).as_secs_f64() * 1e3);
    }
    (out, creates)
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

/// Events the operator has queued or is publishing (`mcp_operator_events_queued`).
async fn events_queued() -> Option<f64> {
    let body = mcp_operator_e2e::env::http_get(&format!("http://{}/metrics", env().metrics_addr)).await.ok()?;
    body.lines().find_map(|l| l.strip_prefix("mcp_operator_events_queued ")?.trim().parse().ok())
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
    let running = watch_running(&ns);
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
    wait_running(&running, 20).await;

    // The burst.
    let paused = std::env::var("BENCH_PAUSE_CLUSTER").is_ok_and(|v| v == "1") && signal_simulator("-STOP");
    let (cpu0, req0, cluster0) = (cpu_seconds(pid), requests().await, cluster_cpu());
    let bench0 = cpu_seconds(Some(std::process::id()));
    let names: Vec<String> = (0..total).map(|i| format!("b-{i}")).collect();
    let t = Instant::now();
    let (loaded, creates) = burst(&servers, &seen, names.clone()).await;
    // Where the CPU went until the last Deployment (the operator's own phase when paused).
    let (cpu_d, req_d, cluster_d, bench_d) =
        (cpu_seconds(pid), requests().await, cluster_cpu(), cpu_seconds(Some(std::process::id())));
    if paused {
        signal_simulator("-CONT");
    }
    let all_deployments = names
        .iter()
        .filter_map(|n| seen.lock().unwrap().get(n).copied())
        .max()
        .map(|last| last.duration_since(t))
        .unwrap_or_default();
    wait_running(&running, 20 + total).await;
    let all_running = t.elapsed();
    // The Events trail the children (paced): the burst ends once they are published too.
    let queued_when_running = events_queued().await.unwrap_or_default();
    let events_deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while events_queued().await.is_some_and(|q| q > 0.0) {
        assert!(tokio::time::Instant::now() < events_deadline, "the operator's Events still queued after 600 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_events = t.elapsed();
    let (cpu1, req1, cluster1) = (cpu_seconds(pid), requests().await, cluster_cpu());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(pid);
    let peak = peak_rss_kib(pid);
    let converge = delta(&req0, &req1);

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
    let quiet_delta = delta(&q0, &q1);

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
    if paused {
        println!(
            "| the cluster's controllers ({}) stopped until all Deployments existed | yes: Running comes after |",
            SIMULATOR.join(", ")
        );
    }
    println!(
        "| burst of {total} (32 creates in flight): all created / all Deployments / all Running | {:.1} s / {:.1} s / {:.1} s |",
        creates.as_secs_f64(),
        all_deployments.as_secs_f64(),
        all_running.as_secs_f64()
    );
    println!(
        "| Events (100 at once, then 50 a second) still queued when all were Running | {} |",
        if queued_when_running == 0.0 {
            "none".to_string()
        } else {
            format!("{queued_when_running}, all published at {:.1} s", all_events.as_secs_f64())
        }
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
    if !cluster1.is_empty() {
        println!("| cluster CPU for the burst, by component | {} |", cluster_spent(&cluster0, &cluster1).join(", "));
    }
    let spent = |a: Option<f64>, b: Option<f64>| a.zip(b).map_or("n/a".into(), |(a, b)| format!("{:.1} s", b - a));
    let mut until: Vec<String> =
        vec![format!("operator {}", spent(cpu0, cpu_d)), format!("this benchmark's client {}", spent(bench0, bench_d))];
    until.extend(cluster_spent(&cluster0, &cluster_d));
    println!("| CPU until all Deployments, by process | {} |", until.join(", "));
    let to_deployments = delta(&req0, &req_d);
    println!(
        "| operator API requests until all Deployments | {:.1} reads and {:.1} writes per server |",
        to_deployments.reads / n,
        to_deployments.writes / n
    );
    println!(
        "| operator API requests for the burst | {:.1} reads and {:.1} writes per server ({}) |",
        converge.reads / n,
        converge.writes / n,
        converge.detail
    );
    println!(
        "| quiet {} s: operator API requests / objects rewritten (of {}) / reconciles | {} / {} / {} |",
        quiet.as_secs(),
        before.len(),
        quiet_delta.summary(),
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
    assert_eq!(quiet_delta.writes, 0.0, "no write requests while quiet: {}", quiet_delta.detail);
    assert_eq!(quiet_delta.reads, 0.0, "no read requests while quiet: {}", quiet_delta.detail);

    if let (Ok(bin), Ok(crds)) = (std::env::var("BENCH_TOOLHIVE"), std::env::var("BENCH_TOOLHIVE_CRDS")) {
        env.stop_operator().expect("stopping our operator");
        let thv = toolhive(&bin, &crds, total, quiet, paused).await;
        let ours = Figures {
            all_deployments,
            p50: pct(&loaded, 50.0),
            p99: pct(&loaded, 99.0),
            cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
            peak_kib: peak,
            quiet: quiet_delta.summary(),
        };
        println!(
            "\n## Side by side: ToolHive's operator ({}), the same burst of {total}\n",
            bin.rsplit('/').next().unwrap_or(&bin)
        );
        println!("| measure | mcp-operator | ToolHive | ToolHive / ours |");
        println!("|---|---:|---:|---:|");
        let ratio = |a: f64, b: f64| if a > 0.0 { format!("{:.1}x", b / a) } else { "n/a".into() };
        println!(
            "| all Deployments | {:.1} s | {:.1} s | {} |",
            ours.all_deployments.as_secs_f64(),
            thv.all_deployments.as_secs_f64(),
            ratio(ours.all_deployments.as_secs_f64(), thv.all_deployments.as_secs_f64())
        );
        println!(
            "| create to Deployment p50 | {:.0} ms | {:.0} ms | {} |",
            ours.p50,
            thv.p50,
            ratio(ours.p50, thv.p50)
        );
        println!(
            "| create to Deployment p99 | {:.0} ms | {:.0} ms | {} |",
            ours.p99,
            thv.p99,
            ratio(ours.p99, thv.p99)
        );
        let cpu = |c: Option<f64>| c.map_or("n/a".into(), |c| format!("{c:.1} s"));
        println!(
            "| CPU for the burst | {} | {} | {} |",
            cpu(ours.cpu),
            cpu(thv.cpu),
            ours.cpu.zip(thv.cpu).map_or("n/a".into(), |(a, b)| ratio(a, b))
        );
        let mib = |k: Option<u64>| k.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        println!("| peak memory | {} | {} | |", mib(ours.peak_kib), mib(thv.peak_kib));
        println!("| quiet {} s: API requests | {} | {} | |", quiet.as_secs(), ours.quiet, thv.quiet);
    }
}

/// One operator's figures for a burst.
struct Figures {
    all_deployments: Duration,
    p50: f64,
    p99: f64,
    cpu: Option<f64>,
    peak_kib: Option<u64>,
    quiet: String,
}

/// The API requests of a controller-runtime operator so far, by method
/// (`rest_client_requests_total{code,host,method}` on its metrics endpoint).
async fn rest_client_requests(metrics: &str) -> BTreeMap<String, f64> {
    let body = mcp_operator_e2e::env::http_get(&format!("http://{metrics}/metrics")).await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with("rest_client_requests_total{")) {
        let Some(method) = line.split("method=\"").nth(1).and_then(|m| m.split('"').next()) else { continue };
        let Some(n) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let verb = match method {
            "GET" => "get",
            "POST" => "create",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            other => other,
        };
        *out.entry(format!("{verb} any")).or_insert(0.0) += n;
    }
    out
}

/// The same burst against ToolHive's operator: its CRDs applied, its binary run as a local
/// process with the admin kubeconfig, `total` ToolHive MCPServers created 32 at a time (with the
/// simulator stopped until every Deployment exists when `paused`, as for ours).
async fn toolhive(bin: &str, crds: &str, total: usize, quiet: Duration, paused: bool) -> Figures {
    use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
    let env = env();
    let out = env.admin_sh(&format!("kubectl apply --server-side -f '{crds}' >/dev/null")).expect("ToolHive CRDs");
    assert!(out.status.success(), "ToolHive CRDs: {}", String::from_utf8_lossy(&out.stderr));
    // Every one of them: the operator sets up a controller per kind and exits on a missing one.
    let out = env
        .admin_sh(&format!("kubectl wait --for=condition=Established -f '{crds}' --timeout=60s >/dev/null"))
        .expect("CRDs established");
    assert!(out.status.success(), "ToolHive CRDs established: {}", String::from_utf8_lossy(&out.stderr));
    let port = |_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (metrics, probes) = (format!("127.0.0.1:{}", port(0)), format!("127.0.0.1:{}", port(1)));
    let log = std::fs::File::create(env.work.join("thv-operator.log")).expect("log");
    let mut child = std::process::Command::new(bin)
        .args([format!("--metrics-bind-address={metrics}"), format!("--health-probe-bind-address={probes}")])
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .env("POD_NAMESPACE", "default")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting thv-operator");
    let pid = Some(child.id());
    let started = Instant::now();
    while mcp_operator_e2e::env::http_get(&format!("http://{probes}/readyz")).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(120), "thv-operator did not get ready (see thv-operator.log)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ns = env.namespace("thv").await.expect("namespace");
    let gvk = GroupVersionKind::gvk("toolhive.stacklok.dev", "v1beta1", "MCPServer");
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.client().await.unwrap(), &ns.name, &ApiResource::from_gvk(&gvk));
    // Deployments by the MCPServer that owns them.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (deployments, s) = (ns.api::<PartialObjectMeta<Deployment>>(), seen.clone());
    tokio::spawn(async move {
        let mut stream = watcher(deployments, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(d) = stream.next().await {
            let Ok(d) = d else { continue };
            for o in d.owner_references().iter().filter(|o| o.kind == "MCPServer") {
                s.lock().unwrap().entry(o.name.clone()).or_insert_with(Instant::now);
            }
        }
    });
    let paused = paused && signal_simulator("-STOP");
    let (cpu0, req0) = (cpu_seconds(pid), rest_client_requests(&metrics).await);
    let t = Instant::now();
    let created: Vec<(String, Instant)> = futures::stream::iter((0..total).map(|i| format!("t-{i}")))
        .map(|name| {
            let api = api.clone();
            async move {
                let obj: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "toolhive.stacklok.dev/v1beta1", "kind": "MCPServer",
                    "metadata": {"name": name}, "spec": {"image": "mcp-rs:latest", "transport": "stdio"},
                }))
                .unwrap();
                let c = Instant::now();
                api.create(&PostParams::default(), &obj).await.expect("create a ToolHive MCPServer");
                (name, c)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut latencies = vec![];
    for (name, c) in &created {
        let deadline = Instant::now() + Duration::from_secs(1800);
        let at = loop {
            if let Some(at) = seen.lock().unwrap().get(name).copied() {
                break at;
            }
            assert!(Instant::now() < deadline, "ToolHive made no Deployment for {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        latencies.push(at.duration_since(*c).as_secs_f64() * 1e3);
    }
    let all = seen.lock().unwrap().values().max().map(|m| m.duration_since(t)).unwrap_or_default();
    if paused {
        signal_simulator("-CONT");
    }
    let (cpu1, req1) = (cpu_seconds(pid), rest_client_requests(&metrics).await);
    let peak = peak_rss_kib(pid);
    println!("\nToolHive's API requests for the burst: {}", delta(&req0, &req1).detail);
    let q0 = rest_client_requests(&metrics).await;
    tokio::time::sleep(quiet).await;
    let quiet_requests = delta(&q0, &rest_client_requests(&metrics).await).summary();
    let _ = child.kill();
    let _ = child.wait();
    Figures {
        all_deployments: all,
        p50: pct(&latencies, 50.0),
        p99: pct(&latencies, 99.0),
        cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
        peak_kib: peak,
        quiet: quiet_requests,
    }
}
