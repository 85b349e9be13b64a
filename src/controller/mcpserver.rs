//! MCPServer controller: resolve references → validate → build children (pure) → server-side
//! apply → status. No finalizer: the children carry owner references and go with the server
//! through the garbage collector, so a server never waits for the operator to be deleted.

use super::cache::{
    children_of, marker, with_applied_hash, CachedChild, CachedDeployment, CachedPod, ChildMeta, Decision,
    WatchedDeployment, WatchedPod, Writers,
};
use super::ssa::apply_dry_run;
use super::status::{server_status, workload_created, Observation, Resolution};
use super::usage::release_finalizer;
use super::watch::{
    self, changed_objects, changes, detach, hash_of, owning_server, referenced_key, reflect, server_key, viewed,
    BoundedBackoff,
};
use super::{apply, write_status, Context, Error, Guarded, Result, Scope};
use crate::api::condition_types::*;
use crate::api::{McpServer, McpServerPhase, McpServerStatus, Plugin, SecurityPolicy};
use crate::build::{
    build_children, config_map_too_large, plugin_workload_name, plugin_workloads_selector, server_selector,
    BuildInputs, Children, OPERATOR_ENV,
};
use crate::consts::*;
use crate::env::env_problems;
use crate::plugins::{check_plugin_names, check_sidecar_ports, describe, index};
use crate::policy::{required_secrets, validate_policy};
use crate::quantity::resource_problems;
use futures::channel::mpsc::{unbounded, UnboundedSender};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "mcpserver";

/// Reconciles one MCPServer.
pub async fn reconcile(server: Arc<McpServer>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let ns = server.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<McpServer> = Api::namespaced(ctx.client.clone(), &ns);
    // A finalizer of an earlier version is released: a deleted server then goes at once.
    if release_finalizer(&api, &*server, FINALIZER).await? || server.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    apply_server(&server, &ctx).await
}

/// Requeue policy after a failed reconcile.
pub fn error_policy<K: Resource<DynamicType = ()>>(server: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after(CONTROLLER, &*server, err)
}

/// What the references of a server resolved to.
#[derive(Debug)]
pub struct Resolved {
    /// The SecurityPolicy when found.
    pub policy: Option<SecurityPolicy>,
    /// Outcome for the SecurityPolicyResolved condition.
    pub policy_resolution: Resolution,
    /// resourceVersion of each referenced Secret that exists.
    pub secret_versions: BTreeMap<String, String>,
    /// The plugin closure in start order.
    pub plugins: Vec<Plugin>,
    /// Outcome for the PluginsResolved condition.
    pub plugins_resolution: Resolution,
}

impl Resolved {
    /// Whether the workload may be created or changed.
    pub fn ok(&self) -> bool {
        self.policy_resolution.ok && self.plugins_resolution.ok
    }
    /// Whether the workload being applied serves TLS (a held-back change does not count).
    fn tls(&self) -> bool {
        self.ok()
            && self
                .policy
                .as_ref()
                .filter(|p| p.spec.enabled)
                .and_then(|p| p.spec.encryption.as_ref())
                .is_some_and(|e| e.tls_enabled)
    }
}

/// The Secrets a policy references, from the secret cache (read from the API server only the
/// first time); missing ones are simply absent from the map.
pub async fn fetch_secrets(ctx: &Context, policy: &SecurityPolicy) -> Result<BTreeMap<String, Secret>> {
    let ns = policy.namespace().unwrap_or_default();
    let names: BTreeSet<String> = required_secrets(&policy.spec).into_iter().map(|n| n.name).collect();
    Ok(ctx.caches.secrets.get(&ctx.client, &ns, &names).await?)
}

/// Resolve: the policy, its Secrets, the plugins and (for VM plugins) the RuntimeClass, all from
/// the caches.
pub async fn resolve(server: &McpServer, ctx: &Context) -> Result<Resolved> {
    let ns = server.namespace().ok_or(Error::MissingNamespace)?;
    let mut secret_versions = BTreeMap::new();
    let (policy, policy_resolution) = match &server.spec.security_policy {
        None => (None, Resolution::ok("NoPolicy", "no SecurityPolicy is named: requests are not authenticated")),
        Some(name) => match ctx.caches.policy(&ns, name) {
            Some(Err(problem)) => (
                None,
                Resolution::failed(
                    "PolicyInvalid",
                    format!("SecurityPolicy {name:?} cannot be read by this operator version: {problem}"),
                ),
            ),
            None => (
                None,
                Resolution::failed(
                    "PolicyNotFound",
                    format!(
                        "SecurityPolicy {name:?} not found in namespace {ns}: the server is not started without it"
                    ),
                ),
            ),
            Some(Ok(policy)) => {
                let secrets = fetch_secrets(ctx, &policy).await?;
                secret_versions =
                    secrets.iter().map(|(k, s)| (k.clone(), s.resource_version().unwrap_or_default())).collect();
                let resolution = if !policy.spec.enabled {
                    Resolution::ok(
                        "PolicyDisabled",
                        format!("SecurityPolicy {name:?} has enabled: false: requests are not enforced"),
                    )
                } else {
                    let problems = validate_policy(&policy.spec, &secrets);
                    if problems.is_empty() {
                        Resolution::ok(
                            "PolicyValid",
                            format!(
                                "SecurityPolicy {name:?} (generation {}) is enforced",
                                policy.metadata.generation.unwrap_or(0)
                            ),
                        )
                    } else {
                        Resolution::failed(
                            "PolicyInvalid",
                            format!("SecurityPolicy {name:?} is invalid: {}", problems.join("; ")),
                        )
                    }
                };
                (Some(policy), resolution)
            }
        },
    };
    let (plugins, plugins_resolution) = if server.spec.plugins.is_empty() {
        (vec![], Resolution::ok("NoPlugins", "no plugins are requested"))
    } else {
        let all = ctx.caches.plugins(&ns);
        let idx = index(&all);
        match super::plugin::resolve(ctx, &ns, &server.spec.plugins, &idx) {
            Err(problems) => (vec![], Resolution::failed("PluginsUnresolved", describe(&problems))),
            Ok(order) => {
                let plugins: Vec<Plugin> = order.iter().map(|n| idx[n].clone()).collect();
                let refs: Vec<&Plugin> = plugins.iter().collect();
                let mut problems = check_plugin_names(&refs);
                problems.extend(check_sidecar_ports(server.spec.port, &refs));
                for p in &plugins {
                    let over_limit = resource_problems("spec.resources", p.spec.resources.as_ref());
                    problems.extend(over_limit.into_iter().map(|m| format!("plugin {:?}: {m}", p.name_any())));
                }
                if plugins.iter().any(|p| p.spec.isolation.level == crate::api::IsolationLevel::Vm) {
                    let class = &ctx.defaults.vm_runtime_class;
                    if !ctx.caches.runtime_class_exists(class) {
                        problems.push(format!("RuntimeClass {class:?} for VM isolation does not exist in the cluster"));
                    }
                }
                if problems.is_empty() {
                    let msg = format!("{} plugin(s) resolved in start order: {}", order.len(), order.join(", "));
                    (plugins, Resolution::ok("PluginsResolved", msg))
                } else {
                    (vec![], Resolution::failed("PluginsUnresolved", problems.join("; ")))
                }
            }
        }
    };
    Ok(Resolved { policy, policy_resolution, secret_versions, plugins, plugins_resolution })
}

fn api<K>(ctx: &Context, ns: &str) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    Api::namespaced(ctx.client.clone(), ns)
}

/// What [`apply_children`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The server Deployment: as applied, or as cached when it needed nothing.
    pub deployment: Option<CachedDeployment>,
    /// A child applied moments ago is not in its cache yet (look again shortly).
    pub lagging: bool,
    /// Nothing was applied: a child's name is another server's child's (the problem).
    pub taken: Option<String>,
}

/// One child's apply, built once: run as a server-side dry run (true) or for real (false). A
/// Deployment's real apply yields what the API server holds.
type Apply<'a> = Box<dyn Fn(bool) -> BoxFuture<'a, Result<Option<CachedDeployment>>> + Send + Sync + 'a>;

/// The writes of one reconcile, run concurrently.
#[derive(Default)]
struct Writes<'a> {
    applies: Vec<Apply<'a>>,
    /// How many of the first `applies` are NetworkPolicies.
    fences: usize,
    lagging: bool,
    /// The first child whose name another server's child has.
    taken: Option<String>,
}

impl<'a> Writes<'a> {
    /// Adds a write; true when it applies.
    fn add(&mut self, write: Write<'a>) -> bool {
        match write {
            Write::Skip => false,
            Write::Lagging => {
                self.lagging = true;
                false
            }
            Write::Taken(problem) => {
                self.taken.get_or_insert(problem);
                false
            }
            Write::Apply(f) => {
                self.applies.push(f);
                true
            }
        }
    }
}

/// The writes of `children`, the Deployment's last; whether the Deployment is among them, and the
/// Deployment as cached.
fn plan<'a>(ctx: &'a Context, ns: &'a str, children: &Children) -> (Writes<'a>, bool, Option<CachedDeployment>) {
    let caches = &ctx.caches;
    fn meta_of<K: Resource<DynamicType = ()>>(
        store: &Store<CachedChild<K>>,
        ns: &str,
        name: &Option<String>,
    ) -> Option<ChildMeta> {
        name.as_ref().and_then(|n| cached_meta(store, ns, n))
    }
    let mut writes = Writes::default();
    // First, so that a new server's pods can wait for them (see apply_children).
    for np in &children.network_policies {
        if writes.add(write(ctx, ns, np, meta_of(&caches.network_policies, ns, &np.metadata.name))) {
            writes.fences += 1;
        }
    }
    let sa = &children.service_account;
    writes.add(write(ctx, ns, sa, meta_of(&caches.service_accounts, ns, &sa.metadata.name)));
    let cm = &children.config_map;
    writes.add(write(ctx, ns, cm, meta_of(&caches.config_maps, ns, &cm.metadata.name)));
    for svc in std::iter::once(&children.service).chain(&children.plugin_services) {
        writes.add(write(ctx, ns, svc, meta_of(&caches.services, ns, &svc.metadata.name)));
    }
    if let Some(pdb) = &children.pdb {
        writes.add(write(ctx, ns, pdb, meta_of(&caches.pdbs, ns, &pdb.metadata.name)));
    }
    let cached_deployment = |d: &Deployment| d.metadata.name.as_ref().and_then(|n| caches.deployment(ns, n));
    for d in &children.plugin_deployments {
        writes.add(write(ctx, ns, d, cached_deployment(d).map(|c| c.metadata)));
    }
    let main = &children.deployment;
    let cached_main = cached_deployment(main);
    // Last in the list, so that its result is the last one.
    let main_applied = writes.add(write(ctx, ns, main, cached_main.as_ref().map(|c| c.metadata.clone())));
    (writes, main_applied, cached_main)
}

/// Applies, concurrently, every child that is missing or differs from what was last applied
/// (see [`super::cache::Caches::needs_apply`]), then deletes the children this server no longer
/// needs. A change of a running server that touches more than one child is first applied as a
/// dry run: a child the API server refuses then leaves every child as it was (else a new
/// NetworkPolicy or Service could already have landed beside the old pods). A server without a
/// Deployment gets its NetworkPolicies before any other child.
pub async fn apply_children(ctx: &Context, ns: &str, server: &str, children: &Children) -> Result<Applied> {
    let caches = &ctx.caches;
    let (writes, main_applied, cached_main) = plan(ctx, ns, children);
    if let Some(problem) = writes.taken {
        return Ok(Applied { taken: Some(problem), ..Applied::default() });
    }
    if cached_main.is_some() && writes.applies.len() > 1 {
        futures::future::try_join_all(writes.applies.iter().map(|apply| apply(true))).await?;
    }
    let lagging = writes.lagging;
    let results = if cached_main.is_none() && writes.fences > 0 {
        // No pod of this server runs yet: its NetworkPolicies first, so that none starts without
        // the isolation asked for (a refused one leaves nothing running).
        let (fences, rest) = writes.applies.split_at(writes.fences);
        let mut results = futures::future::try_join_all(fences.iter().map(|apply| apply(false))).await?;
        results.extend(futures::future::try_join_all(rest.iter().map(|apply| apply(false))).await?);
        results
    } else {
        futures::future::try_join_all(writes.applies.iter().map(|apply| apply(false))).await?
    };
    let deployment = if main_applied { results.into_iter().last().flatten() } else { cached_main };

    let names =
        |items: &mut dyn Iterator<Item = &Option<String>>| -> BTreeSet<String> { items.flatten().cloned().collect() };
    let keep_deployments = names(
        &mut std::iter::once(&children.deployment.metadata.name)
            .chain(children.plugin_deployments.iter().map(|d| &d.metadata.name)),
    );
    let keep_services = names(
        &mut std::iter::once(&children.service.metadata.name)
            .chain(children.plugin_services.iter().map(|s| &s.metadata.name)),
    );
    let keep_policies = names(&mut children.network_policies.iter().map(|n| &n.metadata.name));
    let keep_pdbs = names(&mut children.pdb.iter().map(|p| &p.metadata.name));
    prune::<Deployment>(ctx, ns, server, children_of(&caches.deployments, ns, server), &keep_deployments).await?;
    prune::<Service>(ctx, ns, server, children_of(&caches.services, ns, server), &keep_services).await?;
    prune::<NetworkPolicy>(ctx, ns, server, children_of(&caches.network_policies, ns, server), &keep_policies).await?;
    prune::<PodDisruptionBudget>(ctx, ns, server, children_of(&caches.pdbs, ns, server), &keep_pdbs).await?;
    Ok(Applied { deployment, lagging, taken: None })
}

/// The cached metadata of the child `name` of `ns` in `store`.
fn cached_meta<K: Resource<DynamicType = ()>>(
    store: &Store<CachedChild<K>>,
    ns: &str,
    name: &str,
) -> Option<ChildMeta> {
    store.get(&ObjectRef::new(name).within(ns)).map(|o| o.metadata.clone())
}

/// One child's write: none, none yet (the cache lags the operator's own apply), none because
/// another server's child has the name (the problem, naming both), or an apply.
enum Write<'a> {
    Skip,
    Lagging,
    Taken(String),
    Apply(Apply<'a>),
}

/// The apply of `desired` when it needs one (see [`Write`]).
fn write<'a, K>(ctx: &'a Context, ns: &'a str, desired: &K, cached: Option<ChildMeta>) -> Write<'a>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + Debug
        + Send
        + Sync
        + 'static,
{
    // A plugin workload is named SERVER-PLUGIN, which can be another server's own name: the
    // apply would take that server's object over.
    let mine = desired.labels().get(LABEL_INSTANCE).map(String::as_str);
    if let Some(other) = cached.as_ref().and_then(|c| c.label(LABEL_INSTANCE)).filter(|other| Some(*other) != mine) {
        return Write::Taken(format!(
            "{} {:?} belongs to MCPServer {other:?}: this server's would replace it (a plugin's workload is named \
             SERVER-PLUGIN; rename the plugin object or one of the servers)",
            K::kind(&()),
            desired.name_any()
        ));
    }
    let (obj, hash) = with_applied_hash(desired);
    let key = format!("{}/{ns}/{}", K::kind(&()), obj.name_any());
    match ctx.caches.needs_apply(&key, &hash, cached.as_ref()) {
        Decision::Skip => Write::Skip,
        Decision::Lagging => Write::Lagging,
        Decision::Apply => Write::Apply(Box::new(move |dry_run| {
            let (obj, hash, key) = (obj.clone(), hash.clone(), key.clone());
            async move {
                if dry_run {
                    apply_dry_run(&api::<K>(ctx, ns), &obj).await?;
                    return Ok(None);
                }
                let stored = apply(&api::<K>(ctx, ns), &obj).await?;
                ctx.caches.applied(&key, &hash, stored.meta());
                // Only the Deployment's answer is used (for status).
                let value = serde_json::to_value(&stored).ok().filter(|_| K::kind(&()) == "Deployment");
                Ok(value.and_then(|v| serde_json::from_value(v).ok()))
            }
            .boxed()
        })),
    }
}

/// Deletes the children of `server` of kind K (as cached) that are not in `keep`.
async fn prune<K>(
    ctx: &Context,
    ns: &str,
    server: &str,
    existing: Vec<ChildMeta>,
    keep: &BTreeSet<String>,
) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    for meta in existing {
        let name = meta.name;
        if !keep.contains(&name) && !meta.deleting {
            tracing::info!(%server, kind = K::kind(&()).as_ref(), %name, "deleting child no longer needed");
            match api::<K>(ctx, ns).delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                // Already gone (the cache lags a deletion by someone else).
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// How soon to look again when a cache has not caught up with the operator's own writes.
const CATCH_UP: Duration = Duration::from_secs(2);

async fn apply_server(server: &McpServer, ctx: &Context) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingNamespace)?;
    let name = server.name_any();
    if ctx.caches.server_is_stale(server) {
        // Its own status write is not in the cache yet; that watch event reconciles it again.
        return Ok(Action::requeue(CATCH_UP));
    }
    let resolved = resolve(server, ctx).await?;
    let mut lagging = false;
    let deployments = api::<Deployment>(ctx, &ns);
    // A Deployment of this name that another server's child holds (a plugin workload named
    // SERVER-PLUGIN made before this server) is not this server's: never scaled or reported.
    let existing =
        ctx.caches.deployment(&ns, &name).filter(|d| d.metadata.label(LABEL_INSTANCE).is_none_or(|i| i == name));
    let mut applied = Resolution::ok("Applied", "every child object is applied");
    let deployment = if resolved.ok() {
        let inputs = BuildInputs {
            server,
            policy: resolved.policy.as_ref(),
            secret_versions: resolved.secret_versions.clone(),
            plugins: resolved.plugins.iter().collect(),
            defaults: &ctx.defaults,
        };
        let children = build_children(&inputs);
        let over_limit = resource_problems("spec.resources", server.spec.resources.as_ref());
        let bad_env = env_problems("spec.env", server.spec.env.as_deref().unwrap_or_default(), &OPERATOR_ENV);
        let blocked = if !over_limit.is_empty() {
            Some(Resolution::failed("InvalidResources", over_limit.join("; ")))
        } else if !bad_env.is_empty() {
            Some(Resolution::failed("InvalidEnv", bad_env.join("; ")))
        } else {
            config_map_too_large(&inputs, &children.config_map)
                .map(|problem| Resolution::failed("ConfigTooLarge", problem))
        };
        let outcome = match blocked {
            Some(problem) => Err(problem),
            None => match apply_children(ctx, &ns, &name, &children).await {
                Ok(Applied { taken: Some(problem), .. }) => Err(Resolution::failed("NameTaken", problem)),
                // The Deployment was applied moments ago and is not cached yet: nothing to report.
                Ok(done) if done.lagging && done.deployment.is_none() => return Ok(Action::requeue(CATCH_UP)),
                Ok(done) => {
                    lagging = done.lagging;
                    Ok(done.deployment)
                }
                Err(Error::Kube(kube::Error::Api(e))) if refused(&e) => Err(Resolution::failed(
                    "ApplyFailed",
                    format!("the API server refused a child object ({}): {}", e.reason, e.message),
                )),
                Err(e) => return Err(e),
            },
        };
        match outcome {
            Ok(deployment) => deployment,
            Err(problem) => {
                // Held back like an unresolved reference: what runs keeps running.
                applied = problem;
                scale_held_back(&deployments, existing.clone(), server.spec.replicas).await?
            }
        }
    } else {
        // Fail closed: nothing new is created and a running workload keeps its admitted pod
        // template; only the replica count follows the spec (scaling changes no configuration).
        scale_held_back(&deployments, existing.clone(), server.spec.replicas).await?
    };
    let pods = ctx.caches.pods(&ns, &server_selector(&name));
    let plugin_pods = current_plugin_pods(ctx.caches.pods(&ns, &plugin_workloads_selector(&name)), |plugin| {
        ctx.caches.deployment(&ns, &plugin_workload_name(&name, plugin)).is_some_and(|d| !d.metadata.deleting)
    });
    let status = server_status(
        server,
        &Observation {
            policy: &resolved.policy_resolution,
            plugins: &resolved.plugins_resolution,
            applied: &applied,
            deployment: deployment.as_ref(),
            pods: &pods,
            plugin_pods: &plugin_pods,
            tls: resolved.tls(),
        },
    );
    let previous = server.status.clone().unwrap_or_default();
    let mut status = status;
    let settled = condition(&previous, MCP_READY).is_some_and(|c| c.status == "True");
    let gateway = if ctx.gateway_status && deployment.is_some() {
        if ctx.gateway_reader.due(server, &pods, settled) {
            Some(Some(ctx.gateway_reader.read(server, &pods).await))
        } else {
            // Nothing changed since the last read: what it found stands.
            Some(None)
        }
    } else {
        None
    };
    match gateway {
        Some(None) => super::gateway_status::keep(&mut status, &previous, server.metadata.generation),
        Some(Some(doc)) => super::gateway_status::merge(&mut status, &previous, server.metadata.generation, Some(doc)),
        None => super::gateway_status::merge(&mut status, &previous, server.metadata.generation, None),
    }
    if status != previous {
        let stored = write_status(&api::<McpServer>(ctx, &ns), &name, &status).await?;
        ctx.caches.status_written(&ns, &name, stored.resource_version());
    }
    publish_transitions(ctx, server, &resolved, existing.as_ref(), &previous, &status);
    if !applied.ok {
        // Retried with the controller's backoff: the condition and Event say why meanwhile.
        return Err(Error::Refused(applied.message));
    }
    if lagging {
        return Ok(Action::requeue(CATCH_UP));
    }
    Ok(next_check(&resolved, &status, ctx.gateway_status))
}

/// The pods of `pods` (a server's plugin workloads') that its status reports: not those being
/// deleted, nor those of a plugin whose workload is gone (`has_workload` says, by plugin name):
/// a pod left behind must not keep the server degraded.
fn current_plugin_pods(pods: Vec<CachedPod>, has_workload: impl Fn(&str) -> bool) -> Vec<CachedPod> {
    pods.into_iter()
        .filter(|p| !p.metadata.deleting && p.metadata.label(LABEL_PLUGIN).is_some_and(&has_workload))
        .collect()
}

/// Whether the API server refused an object as invalid (retrying the same object cannot help
/// until the spec or the cluster changes): 400 Bad Request, 413 too large, 422 Invalid.
fn refused(e: &kube::core::Status) -> bool {
    matches!(e.code, 400 | 413 | 422)
}

/// A held-back server's running Deployment, scaled to `replicas` through the scale subresource
/// (nothing of its admitted pod template changes).
async fn scale_held_back(
    api: &Api<Deployment>,
    existing: Option<CachedDeployment>,
    replicas: i32,
) -> Result<Option<CachedDeployment>> {
    let Some(mut deployment) = existing else { return Ok(None) };
    if deployment.spec.replicas != Some(replicas) {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        api.patch_scale(&deployment.metadata.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        deployment.spec.replicas = Some(replicas);
    }
    Ok(Some(deployment))
}

/// When to look again without a watch event: soon while something is wrong or rolling (Secrets
/// are not watched), rarely once steady.
fn next_check(resolved: &Resolved, status: &McpServerStatus, gateway_status: bool) -> Action {
    // Degraded while Running: a plugin workload that cannot start (its recovery may show only in
    // its pods, which trigger while stuck).
    let degraded = condition(status, DEGRADED).is_some_and(|c| c.status == "True");
    let steady = resolved.ok()
        && status.phase == McpServerPhase::Running
        && status.ready_replicas >= status.replicas
        && !degraded;
    // With gateway status on, a handshake that does not succeed yet is retried soon.
    let settled = !gateway_status || condition(status, MCP_READY).is_some_and(|c| c.status == "True");
    Action::requeue(Duration::from_secs(if steady && settled { 300 } else { 30 }))
}

fn condition<'a>(
    status: &'a McpServerStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// One Event per meaningful transition, derived from the previous and the new status.
fn publish_transitions(
    ctx: &Context,
    server: &McpServer,
    resolved: &Resolved,
    existing: Option<&CachedDeployment>,
    previous: &McpServerStatus,
    status: &McpServerStatus,
) {
    let name = server.name_any();
    match existing.and_then(|d| d.spec.replicas) {
        _ if resolved.ok() && workload_created(existing.is_some(), previous, status) => {
            let note = format!("Created Deployment, Service, ServiceAccount and ConfigMap {name}-config");
            ctx.event(server, EventType::Normal, "Created", "Create", note);
        }
        Some(old) if old != server.spec.replicas => {
            let held = if resolved.ok() { "" } else { " (the running pod template; other changes are held back)" };
            let note = format!("Scaled from {old} to {} replicas{held}", server.spec.replicas);
            ctx.event(server, EventType::Normal, "Scaled", "Scale", note);
        }
        _ => {}
    }
    let refusal = |s: &McpServerStatus| {
        condition(s, READY)
            .filter(|c| {
                matches!(
                    c.reason.as_str(),
                    "ApplyFailed" | "ConfigTooLarge" | "InvalidResources" | "InvalidEnv" | "NameTaken"
                )
            })
            .cloned()
    };
    if let Some(new) = refusal(status) {
        if refusal(previous).is_none_or(|old| old.message != new.message) {
            ctx.event(server, EventType::Warning, &new.reason, "Apply", new.message.clone());
        }
    }
    for type_ in [SECURITY_POLICY_RESOLVED, PLUGINS_RESOLVED] {
        let (Some(new), old) = (condition(status, type_), condition(previous, type_)) else { continue };
        if old.is_some_and(|o| o.status == new.status && o.message == new.message) {
            continue;
        }
        if new.status == "False" {
            ctx.event(server, EventType::Warning, &new.reason, "Resolve", new.message.clone());
        } else if type_ == SECURITY_POLICY_RESOLVED && server.spec.security_policy.is_some() {
            ctx.event(server, EventType::Normal, "PolicyApplied", "ApplyPolicy", new.message.clone());
        }
    }
    if previous.server_info.is_some()
        && status.tools != previous.tools
        && condition(status, MCP_READY).is_some_and(|c| c.status == "True")
    {
        let added: Vec<_> = status.tools.iter().filter(|t| !previous.tools.contains(t)).cloned().collect();
        let removed: Vec<_> = previous.tools.iter().filter(|t| !status.tools.contains(t)).cloned().collect();
        let note = format!("tools added: [{}]; removed: [{}]", added.join(", "), removed.join(", "));
        ctx.event(server, EventType::Normal, "ToolsChanged", "Discover", note);
    }
    let failed_rollout = |s: &McpServerStatus| {
        condition(s, DEGRADED).is_some_and(|c| {
            c.status == "True"
                && (c.reason == "ProgressDeadlineExceeded" || super::status::STUCK_REASONS.contains(&c.reason.as_str()))
        })
    };
    if failed_rollout(status) && !failed_rollout(previous) {
        let msg = condition(status, DEGRADED).map(|c| c.message.clone()).unwrap_or_default();
        ctx.event(server, EventType::Warning, "RolloutFailed", "Rollout", msg);
    }
}

/// Tuning of the MCPServer controller.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Reconciles running at once.
    pub concurrency: u16,
    /// How long a trigger waits for more of the same object before the reconcile starts.
    pub debounce: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self { concurrency: 32, debounce: Duration::ZERO }
    }
}

/// What triggers a reconcile of a server from one of its children: its spec (generation, or
/// resourceVersion for kinds without one), the applied hash, deletion, and for Deployments the
/// status fields the server's status reports.
fn child_key<K>(o: &CachedChild<K>) -> u64 {
    meta_key(&o.metadata)
}

fn meta_key(m: &ChildMeta) -> u64 {
    hash_of((marker(m), &m.hash, m.deleting))
}

fn deployment_key(d: &CachedDeployment) -> u64 {
    let st = d.status.as_ref();
    let conditions: Vec<_> = st
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    hash_of((
        meta_key(&d.metadata),
        d.spec.replicas,
        st.map(|s| (s.observed_generation, s.replicas, s.ready_replicas, s.available_replicas, s.updated_replicas)),
        conditions,
    ))
}

/// A pod's trigger key: why its containers cannot start, if they cannot (the reasons only: the
/// kubelet's messages change with every retry).
fn stuck_key(pod: &CachedPod) -> u64 {
    hash_of(super::status::stuck_container(pod).map(|(container, reason, _)| (container, reason)))
}

/// The server of a pod that cannot start (see [`super::status::STUCK_REASONS`]), its own or one of
/// its plugin workloads'; none for any other pod, whose changes its Deployment reports.
fn stuck_pod_owner(pod: &CachedPod) -> Vec<ObjectRef<Guarded<McpServer>>> {
    let component = pod.metadata.label(LABEL_COMPONENT);
    if matches!(component, Some(COMPONENT_SERVER | COMPONENT_PLUGIN)) && super::status::stuck_container(pod).is_some() {
        owning_server(pod)
    } else {
        vec![]
    }
}

/// The events of a watch that only fills its cache, as a trigger stream that yields nothing (run
/// with [`detach`] like the others, so that the watch makes progress).
fn fills_only<K>(
    events: impl futures::Stream<Item = kube::runtime::watcher::Event<K>> + Send,
) -> impl futures::Stream<Item = ObjectRef<Guarded<McpServer>>> + Send {
    events.filter_map(|_| futures::future::ready(None))
}

/// What the cache of a user's object (a server, plugin, policy) never reads: its managed fields
/// and `kubectl apply`'s copy of the whole object in an annotation (often its largest part).
fn without_managed_fields<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The annotation in which `kubectl apply` keeps what it applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The sending ends of the [`super::Feed`]s of the Plugin and SecurityPolicy controllers.
pub struct Feeds {
    plugins: UnboundedSender<watcher::Event<Guarded<Plugin>>>,
    policies: UnboundedSender<watcher::Event<Guarded<SecurityPolicy>>>,
    servers: [UnboundedSender<Guarded<McpServer>>; 2],
}

/// Feeds for the Plugin and SecurityPolicy controllers, and their sending ends.
pub fn feeds() -> (Feeds, super::Feed<Plugin>, super::Feed<SecurityPolicy>) {
    let (plugins, plugin_objects) = unbounded();
    let (policies, policy_objects) = unbounded();
    let (to_plugins, plugin_servers) = unbounded();
    let (to_policies, policy_servers) = unbounded();
    (
        Feeds { plugins, policies, servers: [to_plugins, to_policies] },
        super::Feed { objects: plugin_objects, servers: plugin_servers },
        super::Feed { objects: policy_objects, servers: policy_servers },
    )
}

/// Passes every event on to `to` (dropped once its controller is gone).
fn pass_on<K: Clone>(to: UnboundedSender<K>) -> impl FnMut(&K) {
    move |item| {
        let _ = to.unbounded_send(item.clone());
    }
}

/// Runs the MCPServer controller in `scope` until shutdown: every watch is reflected into
/// `ctx.caches` (through `writers`), and a server is reconciled when it, one of its children,
/// its policy or plugins, or a Secret of its policy (`triggers`) changed.
pub fn controller(
    ctx: Arc<Context>,
    scope: &Scope,
    writers: Writers,
    triggers: futures::channel::mpsc::UnboundedReceiver<ObjectRef<Guarded<McpServer>>>,
    tuning: &Tuning,
    feeds: Feeds,
) -> impl std::future::Future<Output = ()> {
    let client = ctx.client.clone();
    let owned = watch::config(watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")));
    let all = watch::config(watcher::Config::default());
    let watches = watch::Watches { health: ctx.health.clone(), synced: writers.synced.clone() };
    let forget = ctx.clone();
    let servers = reflect(
        watcher(scope.api::<Guarded<McpServer>>(&client), all.clone()).modify(without_managed_fields),
        writers.servers,
        &watches,
        "MCPServer",
    )
    .inspect(move |event| {
        if let watcher::Event::Delete(s) = event {
            let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
            forget.caches.forget(&ns, &name);
            forget.gateway_reader.forget(&ns, &name);
        }
    });
    let [to_plugins, to_policies] = feeds.servers;
    let servers =
        changed_objects(servers, server_key).inspect(pass_on(to_plugins)).inspect(pass_on(to_policies)).map(Ok);
    let deployments = changes(
        reflect(
            viewed::<_, CachedDeployment, _>(watcher(scope.api::<WatchedDeployment>(&client), owned.clone())),
            writers.deployments,
            &watches,
            "Deployment",
        ),
        ctx.caches.deployments.clone(),
        deployment_key,
        owning_server,
    );
    macro_rules! meta_child {
        ($kind:ty, $writer:ident, $name:expr) => {
            changes(
                reflect(
                    viewed::<_, CachedChild<$kind>, _>(watcher(
                        scope.api::<PartialObjectMeta<$kind>>(&client),
                        owned.clone(),
                    )),
                    writers.$writer,
                    &watches,
                    $name,
                ),
                ctx.caches.$writer.clone(),
                child_key,
                owning_server,
            )
        };
    }
    let services = meta_child!(Service, services, "Service");
    let config_maps = meta_child!(ConfigMap, config_maps, "ConfigMap");
    let service_accounts = meta_child!(ServiceAccount, service_accounts, "ServiceAccount");
    let network_policies = meta_child!(NetworkPolicy, network_policies, "NetworkPolicy");
    let pdbs = meta_child!(PodDisruptionBudget, pdbs, "PodDisruptionBudget");
    // A server's status follows its Deployment's; of its pods, only one that cannot start (an
    // image that cannot be pulled, a missing Secret, a crash loop) triggers, so that the status
    // names why at once. RuntimeClasses fill their cache and trigger nothing.
    let pods = changes(
        reflect(
            viewed::<_, CachedPod, _>(watcher(scope.api::<WatchedPod>(&client), owned.clone())),
            writers.pods,
            &watches,
            "Pod",
        ),
        ctx.caches.pods.clone(),
        stuck_key,
        stuck_pod_owner,
    );
    let runtime_classes = fills_only(reflect(
        watcher(Api::<PartialObjectMeta<RuntimeClass>>::all(client.clone()), all.clone())
            .modify(without_managed_fields),
        writers.runtime_classes,
        &watches,
        "RuntimeClass",
    ));
    let by_policy = ctx.caches.servers.clone();
    let policies = changes(
        reflect(
            watcher(scope.api::<Guarded<SecurityPolicy>>(&client), all.clone()).modify(without_managed_fields),
            writers.policies,
            &watches,
            "SecurityPolicy",
        )
        .inspect(pass_on(feeds.policies)),
        ctx.caches.policies.clone(),
        referenced_key,
        move |policy: &Guarded<SecurityPolicy>| {
            let (ns, name) = (policy.namespace(), policy.name_any());
            by_policy
                .state()
                .into_iter()
                .filter(|s| {
                    s.namespace() == ns
                        && s.0.as_ref().is_ok_and(|s| s.spec.security_policy.as_deref() == Some(name.as_str()))
                })
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        },
    );
    let by_plugin = ctx.caches.servers.clone();
    let plugins = changes(
        reflect(
            watcher(scope.api::<Guarded<Plugin>>(&client), all).modify(without_managed_fields),
            writers.plugins,
            &watches,
            "Plugin",
        )
        .inspect(pass_on(feeds.plugins)),
        ctx.caches.plugins.clone(),
        referenced_key,
        move |plugin: &Guarded<Plugin>| {
            // Any server with plugins may reach this one through dependencies.
            let ns = plugin.namespace();
            by_plugin
                .state()
                .into_iter()
                .filter(|s| s.namespace() == ns && s.0.as_ref().is_ok_and(|s| !s.spec.plugins.is_empty()))
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        },
    );
    let done = ctx.clone();
    let config = controller::Config::default().concurrency(tuning.concurrency).debounce(tuning.debounce);
    Controller::for_stream(servers, ctx.caches.servers.clone())
        .with_config(config)
        .trigger_backoff(BoundedBackoff::default())
        .reconcile_on(detach(deployments))
        .reconcile_on(detach(services))
        .reconcile_on(detach(config_maps))
        .reconcile_on(detach(service_accounts))
        .reconcile_on(detach(network_policies))
        .reconcile_on(detach(pdbs))
        .reconcile_on(detach(pods))
        .reconcile_on(detach(runtime_classes))
        .reconcile_on(detach(policies))
        .reconcile_on(detach(plugins))
        .reconcile_on(triggers)
        .shutdown_on_signal()
        .run(
            |server, ctx| async move {
                super::bounded(&ctx.clone(), super::reconcile_guarded(server, ctx, CONTROLLER, reconcile)).await
            },
            error_policy,
            ctx,
        )
        .for_each(super::forget_failures(done, CONTROLLER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_users_object_drops_managed_fields_and_kubectls_copy_only() {
        let mut server: Guarded<McpServer> = serde_json::from_value(serde_json::json!({
            "apiVersion": "mcp.n-takatsu.dev/v1alpha1", "kind": "MCPServer",
            "metadata": {"name": "s", "namespace": "ns",
                "annotations": {LAST_APPLIED: "{\"a\": \"whole object\"}", "team": "a"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"image": "i"}
        }))
        .unwrap();
        without_managed_fields(&mut server);
        assert_eq!(server.meta().managed_fields, None);
        assert_eq!(server.annotations(), &BTreeMap::from([("team".to_string(), "a".to_string())]));
        let mut only_kubectl: Guarded<Plugin> = serde_json::from_value(serde_json::json!({
            "apiVersion": "mcp.n-takatsu.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": "p", "namespace": "ns", "annotations": {LAST_APPLIED: "{}"}},
            "spec": {"image": "i"}
        }))
        .unwrap();
        without_managed_fields(&mut only_kubectl);
        assert_eq!(only_kubectl.meta().annotations, None);
    }

    #[test]
    fn a_plugin_pod_being_deleted_or_left_without_its_workload_is_not_reported() {
        let pod = |name: &str, plugin: &str, deleting: bool| -> CachedPod {
            let mut meta = serde_json::json!({"name": name, "namespace": "ns", "labels": {LABEL_INSTANCE: "s", LABEL_PLUGIN: plugin}});
            if deleting {
                meta["deletionTimestamp"] = "2026-12-08T00:00:00Z".into();
            }
            serde_json::from_value(serde_json::json!({"metadata": meta})).unwrap()
        };
        let pods = vec![pod("a-1", "a", false), pod("a-2", "a", true), pod("gone-1", "gone", false)];
        let kept: Vec<String> =
            current_plugin_pods(pods, |plugin| plugin == "a").into_iter().map(|p| p.metadata.name).collect();
        assert_eq!(kept, vec!["a-1".to_string()]);
    }

    #[test]
    fn only_a_pod_that_cannot_start_triggers_its_server_and_on_its_reason_not_its_message() {
        let pod = |state: serde_json::Value| -> CachedPod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "s-abc", "namespace": "ns", "labels": {LABEL_INSTANCE: "s", LABEL_COMPONENT: COMPONENT_SERVER}},
                "status": {"containerStatuses": [{"name": "server", "state": state}]}
            }))
            .unwrap()
        };
        let waiting =
            |reason: &str, message: &str| pod(serde_json::json!({"waiting": {"reason": reason, "message": message}}));
        let pulling = waiting("ImagePullBackOff", "Back-off pulling image \"a\"");
        assert_eq!(stuck_pod_owner(&pulling), vec![ObjectRef::new("s").within("ns")]);
        for fine in [pod(serde_json::json!({"running": {}})), waiting("ContainerCreating", "")] {
            assert_eq!(stuck_pod_owner(&fine), vec![], "its Deployment reports it");
        }
        let mut plugin = pulling.clone();
        plugin.metadata = serde_json::from_value::<CachedPod>(serde_json::json!({
            "metadata": {"name": "s-p-abc", "namespace": "ns", "labels": {LABEL_INSTANCE: "s", LABEL_COMPONENT: COMPONENT_PLUGIN}}
        }))
        .unwrap()
        .metadata;
        assert_eq!(
            stuck_pod_owner(&plugin),
            vec![ObjectRef::new("s").within("ns")],
            "a plugin workload's pod is in its status"
        );
        let mut other = pulling.clone();
        other.metadata = serde_json::from_value::<CachedPod>(serde_json::json!({
            "metadata": {"name": "x", "namespace": "ns", "labels": {LABEL_INSTANCE: "s", LABEL_COMPONENT: "cache"}}
        }))
        .unwrap()
        .metadata;
        assert_eq!(stuck_pod_owner(&other), vec![], "not a pod of the server's");
        assert_eq!(stuck_key(&pulling), stuck_key(&waiting("ImagePullBackOff", "Back-off pulling image \"a\" (2)")));
        assert_ne!(stuck_key(&pulling), stuck_key(&waiting("ErrImagePull", "x")));
        assert_ne!(stuck_key(&pulling), stuck_key(&pod(serde_json::json!({"running": {}}))));
    }
}
