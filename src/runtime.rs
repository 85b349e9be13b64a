//! The operator process: flags, logging, the admin HTTP server, CRD readiness, leader election
//! and the controllers. `main.rs` only calls [`run`].

use crate::build::Defaults;
use crate::consts::*;
use crate::controller::watch::WatchHealth;
use crate::controller::{cache, gateway_status, mcpserver, plugin, securitypolicy, Context, Guarded, Scope};
use crate::metrics::Metrics;
use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use clap::{ArgAction, Parser, ValueEnum};
use futures::future::{join_all, BoxFuture, FutureExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line flags of `mcp-operator` (each also settable by environment variable).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "mcp-operator",
    version,
    about = "Runs MCP servers on Kubernetes from MCPServer, Plugin and SecurityPolicy"
)]
pub struct Args {
    /// Image of MCPServers whose spec names none.
    #[arg(long, env = "MCP_DEFAULT_SERVER_IMAGE", default_value = DEFAULT_SERVER_IMAGE)]
    pub default_server_image: String,
    /// Image of the MCP gateway put in every server pod (sidecar, or stdio wrapper).
    #[arg(long, env = "MCP_GATEWAY_IMAGE", default_value_t = default_gateway_image())]
    pub gateway_image: String,
    /// Read each server's gateway status (server info, tools) through the API server's service
    /// proxy. Off where pod addresses are not reachable (the local kwok cluster).
    #[arg(long, env = "MCP_GATEWAY_STATUS", default_value_t = true, action = ArgAction::Set)]
    pub gateway_status: bool,
    /// Namespaces to watch, comma-separated; empty watches every namespace.
    #[arg(long, env = "MCP_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// RuntimeClass of plugins with `isolation.level: VM`.
    #[arg(long, env = "MCP_VM_RUNTIME_CLASS", default_value = DEFAULT_VM_RUNTIME_CLASS)]
    pub vm_runtime_class: String,
    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, env = "MCP_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mcp-system")]
    pub leader_election_namespace: String,
    /// Name of the leader Lease: two operators elect separately only with different Leases (the
    /// chart names it after the release: `<fullname>-leader`).
    #[arg(long, env = "MCP_LEADER_ELECTION_LEASE", default_value = LEADER_LEASE)]
    pub leader_election_lease: String,
    /// Deployment that owns the leader Lease (the operator's own, in the Lease's namespace): the
    /// garbage collector then removes the Lease with the operator, by `helm uninstall` or
    /// `kubectl delete`. Without it the Lease outlives the operator.
    #[arg(long, env = "MCP_LEADER_ELECTION_OWNER")]
    pub leader_election_owner: Option<String>,
    /// Upgrade the installed CRDs of this operator to its version when it starts leading (only
    /// forward, never create or delete): `helm upgrade` and `kubectl apply -f k8s/manifests/` do
    /// not touch CRDs, so this is how a schema change lands.
    #[arg(long, env = "MCP_UPGRADE_CRDS", default_value_t = true, action = ArgAction::Set)]
    pub upgrade_crds: bool,
    /// Address of the health, readiness and metrics server.
    #[arg(long, env = "MCP_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "MCP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Identity of this replica (Events, Lease holder); defaults to the pod name or host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// MCPServer reconciles running at once (each applies its children concurrently).
    #[arg(long, env = "MCP_MAX_CONCURRENT_RECONCILES", default_value_t = 32)]
    pub max_concurrent_reconciles: u16,
    /// How long (milliseconds) a reconcile trigger waits for more of the same server first (0:
    /// none; triggers already fire only when something the reconcile reads changed).
    #[arg(long, env = "MCP_RECONCILE_DEBOUNCE_MS", default_value_t = 0)]
    pub reconcile_debounce_ms: u64,
    /// Client-side limit of requests per second to the API server (0: none; the concurrency
    /// above bounds the load).
    #[arg(long, env = "MCP_KUBE_API_QPS", default_value_t = 0)]
    pub kube_api_qps: u32,
    /// Requests allowed in a burst above the QPS (0: twice the QPS).
    #[arg(long, env = "MCP_KUBE_API_BURST", default_value_t = 0)]
    pub kube_api_burst: u32,
    /// Events published a second once `--event-burst` is spent (0: no limit). Events are the
    /// least urgent writes: in a burst of new servers they trail the children.
    #[arg(long, env = "MCP_EVENT_QPS", default_value_t = 50.0)]
    pub event_qps: f64,
    /// Events published at once after a quiet time.
    #[arg(long, env = "MCP_EVENT_BURST", default_value_t = 100)]
    pub event_burst: u32,
    /// Where gateway status is read: `pod` (the pods' admin port, in the cluster), `proxy` (the
    /// API server's service proxy, for an operator running outside the cluster) or `auto`
    /// (`pod` when running in a pod).
    #[arg(long, env = "MCP_GATEWAY_STATUS_VIA", value_enum, default_value = "auto")]
    pub gateway_status_via: GatewayStatusVia,
    /// Gateway status reads at once.
    #[arg(long, env = "MCP_GATEWAY_STATUS_CONCURRENCY", default_value_t = 8)]
    pub gateway_status_concurrency: usize,
}

/// Where gateway status documents are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GatewayStatusVia {
    /// The pods directly in the cluster, else the proxy.
    Auto,
    /// The pods' admin port.
    Pod,
    /// The API server's service proxy.
    Proxy,
}

impl GatewayStatusVia {
    /// Whether reads go to the pods directly; `in_cluster`: the operator runs in a pod.
    pub fn direct(self, in_cluster: bool) -> bool {
        match self {
            Self::Auto => in_cluster,
            Self::Pod => true,
            Self::Proxy => false,
        }
    }
}

/// Sets up tracing; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    // Colour only on a terminal: logs read through `kubectl logs` stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// What the admin server reports.
#[derive(Clone, Default)]
struct Admin {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    health: Arc<WatchHealth>,
    phases: Arc<Mutex<Vec<PhaseSource>>>,
}

type PhaseSource = Box<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

fn phases_of<K, F>(kind: &'static str, store: Store<Guarded<K>>, phase: F) -> PhaseSource
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    F: Fn(&K) -> Option<String> + Send + Sync + 'static,
{
    Box::new(move || {
        store
            .state()
            .iter()
            .map(|o| {
                // An object this operator cannot read counts as phase "Invalid".
                let phase = o.0.as_ref().map_or_else(|_| Some("Invalid".into()), &phase);
                (kind.to_string(), phase.unwrap_or_else(|| "Unknown".into()))
            })
            .collect()
    })
}

async fn metrics_handler(State(admin): State<Admin>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    for source in admin.phases.lock().expect("phase sources lock").iter() {
        for key in source() {
            *counts.entry(key).or_default() += 1;
        }
    }
    admin.metrics.set_phases(counts.into_iter().map(|((k, p), n)| (k, p, n)));
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (StatusCode::OK, [("content-type", content_type)], admin.metrics.encode())
}

async fn serve_admin(addr: SocketAddr, admin: Admin) -> anyhow::Result<()> {
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(a): State<Admin>| async move {
                // A watch failing for minutes: restart (fresh connections, relists).
                match a.health.unhealthy() {
                    None => (StatusCode::OK, "ok".to_string()),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(a): State<Admin>| async move {
                if !a.ready.load(Ordering::Relaxed) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "waiting for CRDs".to_string());
                }
                match a.health.unready() {
                    None => (StatusCode::OK, "ready".to_string()),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                }
            }),
        )
        .route("/metrics", get(metrics_handler))
        .with_state(admin);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Names of the CRDs the operator needs.
pub fn crd_names() -> Vec<String> {
    crate::api::crds().into_iter().map(|c| c.name_any()).collect()
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
}

/// Waits until every CRD exists and is established, saying clearly what is missing meanwhile.
async fn wait_for_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    loop {
        let mut missing = vec![];
        for name in crd_names() {
            match api.get_opt(&name).await {
                Ok(Some(crd)) if established(&crd) => {}
                Ok(_) => missing.push(name),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read CustomResourceDefinitions (RBAC?)");
                    missing.push(name);
                }
            }
        }
        if missing.is_empty() {
            tracing::info!("CRDs are established");
            return Ok(());
        }
        tracing::error!(
            missing = %missing.join(", "),
            "CRDs not installed or not established yet; install them with `kubectl apply -f k8s/crds/`. Waiting."
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn scopes(args: &Args) -> Vec<Scope> {
    if args.namespaces.iter().all(|n| n.trim().is_empty()) {
        vec![Scope::All]
    } else {
        args.namespaces
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| Scope::Namespace(n.trim().to_string()))
            .collect()
    }
}

/// Starts every controller for every scope, each scope with its own caches; resolves when they
/// have all shut down.
fn controllers(base: Arc<Context>, args: &Args, admin: &Admin) -> BoxFuture<'static, ()> {
    let mut futs: Vec<BoxFuture<'static, ()>> = vec![];
    let mut phases = admin.phases.lock().expect("phase sources lock");
    let tuning = mcpserver::Tuning {
        concurrency: args.max_concurrent_reconciles,
        debounce: Duration::from_millis(args.reconcile_debounce_ms),
    };
    for scope in scopes(args) {
        tracing::info!(?scope, "starting controllers");
        let (caches, writers) = cache::caches();
        let (trigger, triggers) = futures::channel::mpsc::unbounded();
        let mut ctx = (*base).clone().with_caches(Arc::new(caches));
        ctx.server_trigger = Some(trigger);
        let ctx = Arc::new(ctx);
        phases.push(phases_of("MCPServer", ctx.caches.servers.clone(), |s| {
            s.status.as_ref().map(|st| format!("{:?}", st.phase))
        }));
        let (feeds, plugin_feed, policy_feed) = mcpserver::feeds();
        futs.push(mcpserver::controller(ctx.clone(), &scope, writers, triggers, &tuning, feeds).boxed());
        phases.push(phases_of("Plugin", ctx.caches.plugins.clone(), |p| {
            p.status.as_ref().map(|st| format!("{:?}", st.phase))
        }));
        futs.push(plugin::controller(ctx.clone(), plugin_feed).boxed());
        phases.push(phases_of("SecurityPolicy", ctx.caches.policies.clone(), |p| {
            p.status.as_ref().and_then(|st| st.phase).map(|ph| format!("{ph:?}"))
        }));
        futs.push(securitypolicy::controller(ctx.clone(), policy_feed).boxed());
    }
    join_all(futs).map(|_| ()).boxed()
}

/// The Kubernetes client: its requests counted by verb in `metrics`, and with the client-side
/// rate limit when one is set.
async fn client(args: &Args, metrics: &Arc<Metrics>) -> anyhow::Result<Client> {
    let mut config = kube::Config::infer().await.context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    // kube sets no read timeout: a response that never comes (a connection lost without a reset)
    // would hang its caller for good. Watches end on the server's side after
    // WATCH_TIMEOUT_SECS, so a socket silent for longer than that plus a margin is dead.
    config.read_timeout = Some(Duration::from_secs(u64::from(crate::controller::watch::WATCH_TIMEOUT_SECS) + 30));
    let builder = kube::client::ClientBuilder::try_from(config)
        .context("Kubernetes client")?
        .with_layer(&crate::metrics::CountRequestsLayer(metrics.clone()));
    if args.kube_api_qps == 0 {
        return Ok(builder.build());
    }
    let burst = if args.kube_api_burst == 0 { args.kube_api_qps * 2 } else { args.kube_api_burst };
    // A window of `burst` requests every burst/qps seconds: on average `qps` per second.
    let window = Duration::from_secs_f64(f64::from(burst) / f64::from(args.kube_api_qps));
    let limit = tower::limit::RateLimitLayer::new(u64::from(burst), window);
    Ok(builder.with_layer(&limit).build())
}

/// Runs the operator until SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let metrics = Arc::new(Metrics::default());
    let client = client(&args, &metrics).await?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("mcp-operator-{}", std::process::id()));
    let health = Arc::new(WatchHealth::default());
    let admin = Admin { metrics: metrics.clone(), health: health.clone(), ..Default::default() };
    let server = tokio::spawn(serve_admin(args.metrics_addr, admin.clone()));

    tokio::select! {
        r = wait_for_crds(&client) => r?,
        _ = shutdown_signal() => return Ok(()),
    }
    admin.ready.store(true, Ordering::Relaxed);

    let defaults = Defaults {
        server_image: args.default_server_image.clone(),
        vm_runtime_class: args.vm_runtime_class.clone(),
        gateway_image: args.gateway_image.clone(),
    };
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let direct = args.gateway_status_via.direct(in_cluster);
    let reader = gateway_status::Reader::new(client.clone(), direct, args.gateway_status_concurrency);
    if args.gateway_status {
        tracing::info!(via = if direct { "pod" } else { "proxy" }, "reading gateway status");
    }
    anyhow::ensure!(
        args.event_qps.is_finite() && args.event_qps >= 0.0,
        "--event-qps must be a number of Events a second, 0 or more (got {})",
        args.event_qps
    );
    let pace = crate::controller::EventPace { qps: args.event_qps, burst: f64::from(args.event_burst) };
    let mut ctx = Context::new(client.clone(), defaults, metrics.clone(), Some(identity.clone()), pace)
        .with_gateway_status(args.gateway_status)
        .with_gateway_reader(reader);
    ctx.health = health.clone();
    // Flushed at shutdown, whichever way the controllers ran.
    let events = ctx.events();

    if args.leader_election {
        let leases = Api::namespaced(client.clone(), &args.leader_election_namespace);
        let seconds = crate::leader::LEASE_SECONDS as i32;
        let mut lock = crate::leader::LeaseLock::new(leases, &args.leader_election_lease, &identity, seconds);
        // The Lease exists before its owner is set (the elector makes it again if it is deleted).
        lock.ensure().await.context("leader election Lease")?;
        if let Some(owner) = &args.leader_election_owner {
            // Not fatal: an orphaned Lease is only clutter; the operator still elects.
            if let Err(e) =
                own_lease(&client, &args.leader_election_namespace, &args.leader_election_lease, owner).await
            {
                tracing::warn!(error = %e, deployment = %owner, "could not make the Deployment own the leader Lease");
            }
        }
        let leader = metrics.leader.clone();
        let election = crate::leader::Election::start(
            client.clone(),
            lock,
            &args.leader_election_namespace,
            &args.leader_election_lease,
            &identity,
            health,
            move |open| {
                leader.set(i64::from(open));
            },
        );
        tracing::info!(%identity, lease = %args.leader_election_lease, namespace = %args.leader_election_namespace, "waiting to become leader");
        ctx.fence = election.fence();
        tokio::select! {
            _ = ctx.fence.wait() => {}
            _ = shutdown_signal() => {
                election.release(Duration::from_secs(5)).await;
                return Ok(());
            }
        }
        tracing::info!(%identity, "became leader");
        if args.upgrade_crds {
            upgrade_crds(&client).await;
        }
        let run = controllers(Arc::new(ctx), &args, &admin);
        tokio::select! {
            _ = run => tracing::info!("controllers stopped"),
            _ = election.lost() => {
                // Another replica reconciles now: stop at once (the fence is closed, no reconcile
                // starts), publish briefly what this one already said, and let Kubernetes restart
                // us.
                flush_events(&events, LOST_EVENT_FLUSH).await;
                anyhow::bail!("lost the leader Lease");
            }
        }
        // The successor may start at once; this replica's last Events still go out.
        election.release(Duration::from_secs(5)).await;
        flush_events(&events, EVENT_FLUSH).await;
    } else {
        if args.upgrade_crds {
            upgrade_crds(&client).await;
        }
        controllers(Arc::new(ctx), &args, &admin).await;
        flush_events(&events, EVENT_FLUSH).await;
    }
    server.abort();
    tracing::info!("shut down");
    Ok(())
}

/// How long a stopping operator waits for its queued Events (within the pod's 30 s grace, after
/// the Lease's release).
const EVENT_FLUSH: Duration = Duration::from_secs(10);
/// How long a replica that lost the Lease waits for its queued Events before it exits.
const LOST_EVENT_FLUSH: Duration = Duration::from_secs(2);

/// Publishes the Events still queued at shutdown, for at most `limit`; says how many are lost.
async fn flush_events(events: &crate::controller::EventQueue, limit: Duration) {
    let left = events.flush(limit).await;
    if left > 0 {
        tracing::warn!(left, "shutting down with Events not yet published");
    }
}

/// Upgrades this operator's installed CRDs (`crate::crds`) and logs what was done. Not fatal: the
/// controllers work with the installed schema, and an install whose RBAC predates this (no
/// `update` on the CRDs) says so in the log.
async fn upgrade_crds(client: &kube::Client) {
    use crate::crds::CrdPlan;
    let ours = env!("CARGO_PKG_VERSION");
    for (crd, result) in crate::crds::upgrade(client).await {
        match result {
            Ok(CrdPlan::Upgrade(from)) => {
                tracing::info!(%crd, from = from.as_deref().unwrap_or("unversioned"), to = ours, "upgraded the CRD")
            }
            Ok(CrdPlan::Newer(v)) => {
                tracing::warn!(%crd, installed = %v, ours, "the installed CRD is newer than this operator: left as it is")
            }
            Ok(CrdPlan::Missing) => tracing::warn!(%crd, "the CRD is not installed (kubectl apply -f k8s/crds/)"),
            Ok(CrdPlan::Current) => tracing::debug!(%crd, "the CRD is current"),
            Err(e) => tracing::warn!(%crd, error = %e, "could not upgrade the CRD"),
        }
    }
}

/// Makes the Deployment `owner` (in `namespace`) the owner of the leader Lease `lease`.
async fn own_lease(client: &kube::Client, namespace: &str, lease: &str, owner: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, Patch, PatchParams};
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace).get(owner).await?;
    let patch = serde_json::json!({"metadata": {"ownerReferences": [lease_owner(&deployment)]}});
    Api::<Lease>::namespaced(client.clone(), namespace)
        .patch(lease, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The owner reference of the leader Lease: the operator's Deployment, not as controller and
/// without blocking its deletion (that would need permission on `deployments/finalizers`).
fn lease_owner(deployment: &k8s_openapi::api::apps::v1::Deployment) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment.metadata.name,
        "uid": deployment.metadata.uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::McpServer;
    use kube::runtime::{reflector, watcher};

    fn guarded(name: &str, spec: serde_json::Value, phase: Option<&str>) -> Guarded<McpServer> {
        let mut obj = serde_json::json!({
            "apiVersion": "mcp.n-takatsu.dev/v1alpha1", "kind": "MCPServer",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec,
        });
        if let Some(p) = phase {
            obj["status"] = serde_json::json!({"phase": p});
        }
        serde_json::from_value(obj).expect("a guard takes any object")
    }

    #[test]
    fn unreadable_objects_count_as_phase_invalid() {
        let (store, mut writer) = reflector::store::<Guarded<McpServer>>();
        for obj in [
            guarded("a", serde_json::json!({}), Some("Running")),
            guarded("b", serde_json::json!({}), None),
            guarded("c", serde_json::json!({"transport": "grpc"}), Some("Running")),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(obj));
        }
        let source =
            phases_of("MCPServer", store, |s: &McpServer| s.status.as_ref().map(|st| format!("{:?}", st.phase)));
        let mut got = source();
        got.sort();
        let want: Vec<(String, String)> =
            [("MCPServer", "Invalid"), ("MCPServer", "Running"), ("MCPServer", "Unknown")]
                .iter()
                .map(|(k, p)| (k.to_string(), p.to_string()))
                .collect();
        assert_eq!(got, want);
    }
}
