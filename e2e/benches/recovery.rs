//! The recovery benchmark (`just bench-recovery`, hack/bench-recovery.sh): on the local kwok
//! cluster, with an optimized operator build running as a local process, each of these ends with
//! every server converged exactly once, and the time to converge is reported:
//!
//! 1. kill -9 of the operator during the creation of BENCH_RECOVERY_SERVERS (default 300)
//!    MCPServers, restarted at once;
//! 2. kill -9 during an update (replicas 1 -> 2) of a third of them;
//! 3. kill -9 during the deletion of another third;
//! 4. the API server stopped (SIGSTOP) for BENCH_OUTAGE_SECS (default 20) s, then continued;
//! 5. the API server killed (SIGKILL) and started again after BENCH_OUTAGE_SECS s;
//! 6. a leader failover: a standby replica takes over when the leader is killed.
//!
//! After each outage a server is created and another scaled right away: the time until both
//! are reconciled is what a user would wait. "Converged exactly once": every server has exactly
//! one Deployment, Service and ConfigMap, owned by it (no orphan of a deleted server remains),
//! its status reports the current generation and it is Running with the replicas it asks for;
//! no server holds a finalizer.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use mcp_operator::api::{McpServer, McpServerPhase};
use mcp_operator_e2e::{env, TestNamespace};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn server(name: &str) -> McpServer {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "mcp.n-takatsu.dev/v1alpha1", "kind": "MCPServer",
        "metadata": {"name": name}, "spec": {"replicas": 1},
    }))
    .expect("MCPServer")
}

/// What is wrong with the namespace's servers, or None when every one (of `want`, with the
/// replicas asked) converged exactly once.
async fn problems(ns: &TestNamespace, want: &BTreeMap<String, i32>) -> Option<String> {
    let servers = ns.api::<McpServer>().list(&ListParams::default()).await.ok()?.items;
    let deployments = ns.api::<Deployment>().list(&ListParams::default()).await.ok()?.items;
    let services = ns.api::<Service>().list(&ListParams::default()).await.ok()?.items;
    let config_maps = ns.api::<ConfigMap>().list(&ListParams::default()).await.ok()?.items;
    let mut out = vec![];
    let names: BTreeSet<String> = servers.iter().map(|s| s.name_any()).collect();
    let wanted: BTreeSet<String> = want.keys().cloned().collect();
    if names != wanted {
        out.push(format!("{} servers, {} wanted", names.len(), wanted.len()));
    }
    let owned_by = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| -> Vec<String> {
        meta.owner_references.iter().flatten().filter(|o| o.kind == "MCPServer").map(|o| o.uid.clone()).collect()
    };
    let uids: BTreeMap<String, String> = servers.iter().map(|s| (s.uid().unwrap_or_default(), s.name_any())).collect();
    for (kind, metas) in [
        ("Deployment", deployments.iter().map(|d| &d.metadata).collect::<Vec<_>>()),
        ("Service", services.iter().map(|s| &s.metadata).collect()),
        ("ConfigMap", config_maps.iter().map(|c| &c.metadata).filter(|m| !owned_by(m).is_empty()).collect()),
    ] {
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for m in metas {
            match owned_by(m).first().and_then(|u| uids.get(u)) {
                Some(name) => *per.entry(name.clone()).or_default() += 1,
                None => out.push(format!("{kind} {} has no server (orphan)", m.name.as_deref().unwrap_or(""))),
            }
        }
        let wrong: Vec<_> = names.iter().filter(|n| per.get(*n).copied().unwrap_or(0) != 1).collect();
        if !wrong.is_empty() {
            out.push(format!("{} servers without exactly one {kind} (e.g. {})", wrong.len(), wrong[0]));
        }
    }
    for s in &servers {
        let st = s.status.clone().unwrap_or_default();
        let replicas = want.get(&s.name_any()).copied().unwrap_or(1);
        let d = deployments.iter().find(|d| d.name_any() == s.name_any());
        if !s.finalizers().is_empty() {
            out.push(format!("{} holds finalizers", s.name_any()));
        } else if st.observed_generation != s.metadata.generation
            || st.phase != McpServerPhase::Running
            || st.ready_replicas != replicas
            || d.and_then(|d| d.spec.replicas) != Some(replicas)
        {
            out.push(format!(
                "{} not converged (generation {:?}, observed {:?}, {:?} {}/{replicas})",
                s.name_any(),
                s.metadata.generation,
                st.observed_generation,
                st.phase,
                st.ready_replicas
            ));
        }
    }
    if out.is_empty() {
        None
    } else {
        let n = out.len();
        out.truncate(3);
        Some(format!("{n} problems: {}", out.join("; ")))
    }
}

/// Waits until the namespace converged; returns how long it took.
async fn converge(ns: &TestNamespace, want: &BTreeMap<String, i32>, what: &str) -> Duration {
    let t = Instant::now();
    let deadline = t + Duration::from_secs(900);
    loop {
        match problems(ns, want).await {
            None => return t.elapsed(),
            Some(p) if Instant::now() > deadline => panic!("{what}: not converged after 900 s: {p}"),
            Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

fn kill9(pid: u32) {
    let ok = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(ok, "kill -9 {pid}");
}

/// Kills the operator with SIGKILL when `done` reaches `at`, and starts it again at once.
async fn kill_operator_at(done: &AtomicUsize, at: usize) -> Instant {
    while done.load(Ordering::Relaxed) < at {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill9(env().operator_pid().expect("the operator runs as a local process"));
    env().start_operator().await.expect("operator restarted");
    Instant::now()
}

/// Runs `each` on every name, 32 at a time, counting what is done.
async fn for_all<F, Fut>(names: Vec<String>, done: Arc<AtomicUsize>, each: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(names)
        .map(|n| {
            let done = done.clone();
            let fut = each(n);
            async move {
                fut.await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// The kube-apiserver process of the benchmark's cluster.
fn api_server_pid() -> u32 {
    let cluster = std::env::var("MCP_CLUSTER_NAME").unwrap_or_else(|_| "mcp-bench".into());
    let needle = format!("clusters/{cluster}/");
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(pid) = entry.expect("entry").file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.first().is_some_and(|a| a.ends_with("kube-apiserver")) && args.iter().any(|a| a.contains(&needle)) {
            return pid;
        }
    }
    panic!("no kube-apiserver of cluster {cluster}");
}

/// How to start a process again: its arguments, environment and working directory.
struct Relaunch {
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: std::path::PathBuf,
}

fn relaunch_of(pid: u32) -> Relaunch {
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
    };
    Relaunch {
        args: split(std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline")),
        env: split(std::fs::read(format!("/proc/{pid}/environ")).expect("environ"))
            .into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect(),
        cwd: std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
    }
}

fn relaunch(r: &Relaunch) -> u32 {
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(env().work.join("kube-apiserver.log")).expect("log");
    let child = std::process::Command::new(&r.args[0])
        .args(&r.args[1..])
        .env_clear()
        .envs(r.env.iter().cloned())
        .current_dir(&r.cwd)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("restarting kube-apiserver");
    let pid = child.id();
    // Left running for the cluster (hack/cluster-down.sh ends it with the rest).
    std::mem::forget(child);
    pid
}

async fn api_ready(client: &kube::Client) -> bool {
    client.apiserver_version().await.is_ok()
}

async fn ready_status(metrics_addr: &str) -> String {
    match mcp_operator_e2e::env::http_get(&format!("http://{metrics_addr}/readyz")).await {
        Ok(_) => "ready".into(),
        Err(_) => "not ready".into(),
    }
}

/// Whether the operator has done its part for `new` (created: a Deployment, status current) and
/// `scaled` (its Deployment asks for `replicas`, status current); Running also needs the cluster's
/// controller manager, scheduler and kwok, which recover from an outage on their own schedule.
async fn reconciled(ns: &TestNamespace, new: &str, scaled: &str, replicas: i32) -> bool {
    let (servers, deployments) = (ns.api::<McpServer>(), ns.api::<Deployment>());
    let current = |s: Option<McpServer>| {
        s.is_some_and(|s| s.status.and_then(|st| st.observed_generation) == s.metadata.generation)
    };
    let (Ok(a), Ok(b)) = (servers.get_opt(new).await, servers.get_opt(scaled).await) else { return false };
    let (Ok(da), Ok(db)) = (deployments.get_opt(new).await, deployments.get_opt(scaled).await) else { return false };
    current(a) && current(b) && da.is_some() && db.and_then(|d| d.spec.replicas) == Some(replicas)
}

/// Right after an outage: a new server and a scale of an existing one; the time until the
/// operator reconciled both, and until both are Running.
async fn after_outage(
    ns: &TestNamespace,
    want: &mut BTreeMap<String, i32>,
    new: &str,
    scale: &str,
) -> (Duration, Duration) {
    let api = ns.api::<McpServer>();
    let t = Instant::now();
    loop {
        match api.create(&PostParams::default(), &server(new)).await {
            Ok(_) => break,
            Err(e) if t.elapsed() < Duration::from_secs(60) => {
                eprintln!("create after the outage: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("create after the outage: {e}"),
        }
    }
    let patch = serde_json::json!({"spec": {"replicas": 2}});
    api.patch(scale, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("scale");
    want.insert(new.to_string(), 1);
    want.insert(scale.to_string(), 2);
    while !reconciled(ns, new, scale, 2).await {
        assert!(t.elapsed() < Duration::from_secs(900), "{new}: not reconciled after 900 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let operator = t.elapsed();
    converge(ns, want, new).await;
    (operator, t.elapsed())
}

/// A standby operator process (`identity`) and its metrics address, once it has had 5 s to
/// find the Lease held.
async fn start_standby(identity: &str) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let child = env().spawn_standby(identity, &addr).expect("standby");
    tokio::time::sleep(Duration::from_secs(5)).await;
    (child, addr)
}

/// How long until the operator serving metrics on `addr` leads.
async fn leads_after(addr: &str) -> Duration {
    let t = Instant::now();
    loop {
        let body = mcp_operator_e2e::env::http_get(&format!("http://{addr}/metrics")).await.unwrap_or_default();
        if mcp_operator_e2e::env::leads(&body) {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(120), "the standby on {addr} did not take over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// "reconciled in X s, Running in Y s".
fn split((operator, running): (Duration, Duration)) -> String {
    format!("{:.1} s / {:.1} s", operator.as_secs_f64(), running.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_recovery() {
    let total = setting("BENCH_RECOVERY_SERVERS", 300) as usize;
    let outage = Duration::from_secs(setting("BENCH_OUTAGE_SECS", 20));
    let env = env();
    let _install = env.exclusive().await;
    let ns = env.namespace("recovery").await.expect("namespace");
    let servers = ns.api::<McpServer>();
    let client = env.client().await.expect("client");
    let mut rows: Vec<(String, String)> = vec![];
    let mut want: BTreeMap<String, i32> = BTreeMap::new();

    // 1. kill -9 during creation.
    let names: Vec<String> = (0..total).map(|i| format!("s-{i}")).collect();
    let done = Arc::new(AtomicUsize::new(0));
    let create = for_all(names.clone(), done.clone(), |n| {
        let api = servers.clone();
        async move {
            api.create(&PostParams::default(), &server(&n)).await.expect("create");
        }
    });
    let (_, restarted) = tokio::join!(create, kill_operator_at(&done, total / 3));
    want.extend(names.iter().map(|n| (n.clone(), 1)));
    converge(&ns, &want, "creation").await;
    let took = restarted.elapsed();
    rows.push((
        format!("kill -9 during the creation of {total}: converged after the restart in"),
        format!("{:.1} s", took.as_secs_f64()),
    ));

    // 2. kill -9 during an update of a third.
    let third = total / 3;
    let updated: Vec<String> = names[..third].to_vec();
    let done = Arc::new(AtomicUsize::new(0));
    let update = for_all(updated.clone(), done.clone(), |n| {
        let api = servers.clone();
        async move {
            let patch = serde_json::json!({"spec": {"replicas": 2}});
            api.patch(&n, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("update");
        }
    });
    let (_, restarted) = tokio::join!(update, kill_operator_at(&done, third / 2));
    want.extend(updated.iter().map(|n| (n.clone(), 2)));
    converge(&ns, &want, "update").await;
    let took = restarted.elapsed();
    rows.push((
        format!("kill -9 during an update of {third}: converged after the restart in"),
        format!("{:.1} s", took.as_secs_f64()),
    ));

    // 3. kill -9 during a deletion of another third.
    let deleted: Vec<String> = names[third..2 * third].to_vec();
    let done = Arc::new(AtomicUsize::new(0));
    let delete = for_all(deleted.clone(), done.clone(), |n| {
        let api = servers.clone();
        async move {
            api.delete(&n, &DeleteParams::default()).await.expect("delete");
        }
    });
    let (_, restarted) = tokio::join!(delete, kill_operator_at(&done, third / 2));
    for n in &deleted {
        want.remove(n);
    }
    converge(&ns, &want, "deletion").await;
    let took = restarted.elapsed();
    rows.push((
        format!("kill -9 during a deletion of {third}: everything gone, the rest converged, after the restart in"),
        format!("{:.1} s", took.as_secs_f64()),
    ));

    let remaining: Vec<String> = want.keys().cloned().collect();
    let metrics_addr = env.metrics_addr.clone();

    // 4. The API server stopped, then continued.
    let pid = api_server_pid();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
    tokio::time::sleep(outage).await;
    let during = ready_status(&metrics_addr).await;
    assert!(std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status().unwrap().success());
    while !api_ready(&client).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = after_outage(&ns, &mut want, "after-stop", &remaining[0]).await;
    rows.push((
        format!(
            "API server stopped {} s (readyz during: {during}): a new server and a scale reconciled / Running in",
            outage.as_secs()
        ),
        split(took),
    ));

    // 5. The API server killed, started again after the outage.
    let pid = api_server_pid();
    let again = relaunch_of(pid);
    kill9(pid);
    tokio::time::sleep(outage).await;
    let during = ready_status(&metrics_addr).await;
    relaunch(&again);
    let t = Instant::now();
    while !api_ready(&client).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let api_back = t.elapsed();
    let took = after_outage(&ns, &mut want, "after-kill", &remaining[1]).await;
    rows.push((
        format!(
            "API server killed -9, restarted after {} s (back in {:.1} s; readyz during: {during}): a new server and a scale reconciled / Running in",
            outage.as_secs(),
            api_back.as_secs_f64()
        ),
        split(took),
    ));
    let quiet_ready = ready_status(&metrics_addr).await;
    rows.push(("operator readyz once the API server is back".into(), quiet_ready));

    // 6. Leader failover to a standby replica.
    let (mut standby, standby_addr) = start_standby("e2e-standby").await;
    kill9(env.operator_pid().expect("leader pid"));
    let took_over = leads_after(&standby_addr).await;
    let took = after_outage(&ns, &mut want, "after-failover", &remaining[2]).await;
    rows.push((
        format!(
            "leader killed -9: the standby leads after {:.1} s; a new server and a scale reconciled / Running in",
            took_over.as_secs_f64()
        ),
        split(took),
    ));

    // 7. The leader shut down (SIGTERM: it releases the Lease): another standby takes over at
    // once instead of at the Lease's expiry.
    let (mut second, second_addr) = start_standby("e2e-standby-2").await;
    assert!(std::process::Command::new("kill").args(["-TERM", &standby.id().to_string()]).status().unwrap().success());
    let took_over = leads_after(&second_addr).await;
    rows.push((
        "leader shut down (SIGTERM, it releases the Lease): the next standby leads after".into(),
        format!("{:.1} s", took_over.as_secs_f64()),
    ));
    let _ = standby.wait();
    let _ = second.kill();
    let _ = second.wait();

    println!("\n## mcp-operator recovery benchmark ({total} MCPServers, outages of {} s)\n", outage.as_secs());
    println!("| situation | time |");
    println!("|---|---:|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
    assert!(problems(&ns, &want).await.is_none());
}
