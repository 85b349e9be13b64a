//! MCPServer controller: resolve references → validate → build children (pure) → server-side
//! apply → status. No finalizer: the children carry owner references and go with the server
//! through the garbage collector, so a server never waits for the operator to be deleted.

use super::status::{server_status, Observation, Resolution};
use super::usage::release_finalizer;
use super::{apply, apply_status, Context, Error, Guarded, Result, Scope};
use crate::api::condition_types::*;
use crate::api::{McpServer, McpServerPhase, McpServerStatus, Plugin, SecurityPolicy};
use crate::build::{
    build_children, config_map_too_large, owned_selector, selector_string, server_selector, BuildInputs, Children,
};
use crate::consts::*;
use crate::plugins::{check_sidecar_ports, describe, index, resolve_plugins};
use crate::policy::{required_secrets, validate_policy};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
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

/// Reads the Secrets a policy references; missing ones are simply absent from the map.
pub async fn fetch_secrets(ctx: &Context, policy: &SecurityPolicy) -> Result<BTreeMap<String, Secret>> {
    let ns = policy.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let names: BTreeSet<String> = required_secrets(&policy.spec).into_iter().map(|n| n.name).collect();
    let mut out = BTreeMap::new();
    for name in names {
        if let Some(secret) = api.get_opt(&name).await? {
            out.insert(name, secret);
        }
    }
    Ok(out)
}

/// Resolve: read the policy, its Secrets, the plugins and (for VM plugins) the RuntimeClass.
pub async fn resolve(server: &McpServer, ctx: &Context) -> Result<Resolved> {
    let ns = server.namespace().ok_or(Error::MissingNamespace)?;
    let mut secret_versions = BTreeMap::new();
    let (policy, policy_resolution) = match &server.spec.security_policy {
        None => (None, Resolution::ok("NoPolicy", "no SecurityPolicy is named: requests are not authenticated")),
        Some(name) => match Api::<SecurityPolicy>::namespaced(ctx.client.clone(), &ns).get_opt(name).await? {
            None => (
                None,
                Resolution::failed(
                    "PolicyNotFound",
                    format!(
                        "SecurityPolicy {name:?} not found in namespace {ns}: the server is not started without it"
                    ),
                ),
            ),
            Some(policy) => {
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
        let all = super::list_readable::<Plugin>(ctx, &ns).await?;
        let idx = index(&all);
        match resolve_plugins(&server.spec.plugins, &idx) {
            Err(problems) => (vec![], Resolution::failed("PluginsUnresolved", describe(&problems))),
            Ok(order) => {
                let plugins: Vec<Plugin> = order.iter().map(|n| idx[n].clone()).collect();
                let refs: Vec<&Plugin> = plugins.iter().collect();
                let mut problems = check_sidecar_ports(server.spec.port, &refs);
                if plugins.iter().any(|p| p.spec.isolation.level == crate::api::IsolationLevel::Vm) {
                    let class = &ctx.defaults.vm_runtime_class;
                    if Api::<RuntimeClass>::all(ctx.client.clone()).get_opt(class).await?.is_none() {
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

/// Applies every child, then deletes the children this server no longer needs. Returns the
/// server Deployment as the API server holds it.
pub async fn apply_children(ctx: &Context, ns: &str, server: &str, children: &Children) -> Result<Deployment> {
    apply(&api::<ServiceAccount>(ctx, ns), &children.service_account).await?;
    apply(&api::<ConfigMap>(ctx, ns), &children.config_map).await?;
    apply(&api::<Service>(ctx, ns), &children.service).await?;
    let deployment = apply(&api::<Deployment>(ctx, ns), &children.deployment).await?;
    for d in &children.plugin_deployments {
        apply(&api::<Deployment>(ctx, ns), d).await?;
    }
    for s in &children.plugin_services {
        apply(&api::<Service>(ctx, ns), s).await?;
    }
    for np in &children.network_policies {
        apply(&api::<NetworkPolicy>(ctx, ns), np).await?;
    }
    if let Some(pdb) = &children.pdb {
        apply(&api::<PodDisruptionBudget>(ctx, ns), pdb).await?;
    }
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
    prune::<Deployment>(ctx, ns, server, &keep_deployments).await?;
    prune::<Service>(ctx, ns, server, &keep_services).await?;
    prune::<NetworkPolicy>(ctx, ns, server, &keep_policies).await?;
    prune::<PodDisruptionBudget>(ctx, ns, server, &keep_pdbs).await?;
    Ok(deployment)
}

/// Deletes the children of `server` of kind K that are not in `keep`.
async fn prune<K>(ctx: &Context, ns: &str, server: &str, keep: &BTreeSet<String>) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api = api::<K>(ctx, ns);
    let existing = api.list_metadata(&ListParams::default().labels(&owned_selector(server))).await?;
    for obj in existing.items {
        let name = obj.name_any();
        if !keep.contains(&name) && obj.metadata.deletion_timestamp.is_none() {
            tracing::info!(%server, kind = K::kind(&()).as_ref(), %name, "deleting child no longer needed");
            api.delete(&name, &DeleteParams::background()).await?;
        }
    }
    Ok(())
}

async fn apply_server(server: &McpServer, ctx: &Context) -> Result<Action> {
    let ns = server.namespace().ok_or(Error::MissingNamespace)?;
    let name = server.name_any();
    let resolved = resolve(server, ctx).await?;
    let deployments = api::<Deployment>(ctx, &ns);
    let existing = deployments.get_opt(&name).await?;
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
        let outcome = match config_map_too_large(&inputs, &children.config_map) {
            Some(problem) => Err(Resolution::failed("ConfigTooLarge", problem)),
            None => match apply_children(ctx, &ns, &name, &children).await {
                Ok(deployment) => Ok(deployment),
                Err(Error::Kube(kube::Error::Api(e))) if refused(&e) => Err(Resolution::failed(
                    "ApplyFailed",
                    format!("the API server refused a child object ({}): {}", e.reason, e.message),
                )),
                Err(e) => return Err(e),
            },
        };
        match outcome {
            Ok(deployment) => Some(deployment),
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
    let pods = api::<Pod>(ctx, &ns)
        .list(&ListParams::default().labels(&selector_string(&server_selector(&name))))
        .await?
        .items;
    let status = server_status(
        server,
        &Observation {
            policy: &resolved.policy_resolution,
            plugins: &resolved.plugins_resolution,
            applied: &applied,
            deployment: deployment.as_ref(),
            pods: &pods,
            tls: resolved.tls(),
        },
    );
    let previous = server.status.clone().unwrap_or_default();
    let mut status = status;
    let gateway = if ctx.gateway_status && deployment.is_some() {
        Some(super::gateway_status::read(&ctx.client, server).await)
    } else {
        None
    };
    super::gateway_status::merge(&mut status, &previous, server.metadata.generation, gateway);
    if status != previous {
        apply_status(&api::<McpServer>(ctx, &ns), &name, &status).await?;
    }
    publish_transitions(ctx, server, &resolved, existing.as_ref(), &previous, &status).await;
    if !applied.ok {
        // Retried with the controller's backoff: the condition and Event say why meanwhile.
        return Err(Error::Refused(applied.message));
    }
    Ok(next_check(&resolved, &status, ctx.gateway_status))
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
    existing: Option<Deployment>,
    replicas: i32,
) -> Result<Option<Deployment>> {
    let Some(mut deployment) = existing else { return Ok(None) };
    if deployment.spec.replicas != Some(replicas) {
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        api.patch_scale(&deployment.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        deployment.spec.replicas = Some(replicas);
    }
    Ok(Some(deployment))
}

/// When to look again without a watch event: soon while something is wrong or rolling (Secrets
/// are not watched), rarely once steady.
fn next_check(resolved: &Resolved, status: &McpServerStatus, gateway_status: bool) -> Action {
    let steady = resolved.ok() && status.phase == McpServerPhase::Running && status.ready_replicas >= status.replicas;
    // With gateway status on, the tool list is refreshed every minute.
    let steady_wait = if gateway_status { 60 } else { 300 };
    Action::requeue(Duration::from_secs(if steady { steady_wait } else { 30 }))
}

fn condition<'a>(
    status: &'a McpServerStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// One Event per meaningful transition, derived from the previous and the new status.
async fn publish_transitions(
    ctx: &Context,
    server: &McpServer,
    resolved: &Resolved,
    existing: Option<&Deployment>,
    previous: &McpServerStatus,
    status: &McpServerStatus,
) {
    let name = server.name_any();
    match existing.and_then(|d| d.spec.replicas) {
        None if resolved.ok() => {
            let note = format!("Created Deployment, Service, ServiceAccount and ConfigMap {name}-config");
            ctx.event(server, EventType::Normal, "Created", "Create", note).await;
        }
        Some(old) if old != server.spec.replicas => {
            let held = if resolved.ok() { "" } else { " (the running pod template; other changes are held back)" };
            let note = format!("Scaled from {old} to {} replicas{held}", server.spec.replicas);
            ctx.event(server, EventType::Normal, "Scaled", "Scale", note).await;
        }
        _ => {}
    }
    let refusal = |s: &McpServerStatus| {
        condition(s, READY).filter(|c| matches!(c.reason.as_str(), "ApplyFailed" | "ConfigTooLarge")).cloned()
    };
    if let Some(new) = refusal(status) {
        if refusal(previous).is_none_or(|old| old.message != new.message) {
            ctx.event(server, EventType::Warning, &new.reason, "Apply", new.message.clone()).await;
        }
    }
    for type_ in [SECURITY_POLICY_RESOLVED, PLUGINS_RESOLVED] {
        let (Some(new), old) = (condition(status, type_), condition(previous, type_)) else { continue };
        if old.is_some_and(|o| o.status == new.status && o.message == new.message) {
            continue;
        }
        if new.status == "False" {
            ctx.event(server, EventType::Warning, &new.reason, "Resolve", new.message.clone()).await;
        } else if type_ == SECURITY_POLICY_RESOLVED && server.spec.security_policy.is_some() {
            ctx.event(server, EventType::Normal, "PolicyApplied", "ApplyPolicy", new.message.clone()).await;
        }
    }
    if previous.server_info.is_some()
        && status.tools != previous.tools
        && condition(status, MCP_READY).is_some_and(|c| c.status == "True")
    {
        let added: Vec<_> = status.tools.iter().filter(|t| !previous.tools.contains(t)).cloned().collect();
        let removed: Vec<_> = previous.tools.iter().filter(|t| !status.tools.contains(t)).cloned().collect();
        let note = format!("tools added: [{}]; removed: [{}]", added.join(", "), removed.join(", "));
        ctx.event(server, EventType::Normal, "ToolsChanged", "Discover", note).await;
    }
    let failed_rollout = |s: &McpServerStatus| {
        condition(s, DEGRADED).is_some_and(|c| {
            c.status == "True" && matches!(c.reason.as_str(), "ProgressDeadlineExceeded" | "CrashLoopBackOff")
        })
    };
    if failed_rollout(status) && !failed_rollout(previous) {
        let msg = condition(status, DEGRADED).map(|c| c.message.clone()).unwrap_or_default();
        ctx.event(server, EventType::Warning, "RolloutFailed", "Rollout", msg).await;
    }
}

/// Runs the MCPServer controller in `scope` until shutdown. Returns its store for metrics.
pub fn controller(
    ctx: Arc<Context>,
    scope: &Scope,
) -> (Store<Guarded<McpServer>>, impl std::future::Future<Output = ()>) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let controller = Controller::new(scope.api::<Guarded<McpServer>>(&client), watcher::Config::default());
    let store = controller.store();
    let by_policy = store.clone();
    let by_plugin = store.clone();
    let done = ctx.clone();
    let fut = controller
        .owns(scope.api::<Deployment>(&client), owned.clone())
        .owns(scope.api::<Service>(&client), owned.clone())
        .owns(scope.api::<ConfigMap>(&client), owned.clone())
        .owns(scope.api::<ServiceAccount>(&client), owned.clone())
        .owns(scope.api::<NetworkPolicy>(&client), owned.clone())
        .owns(scope.api::<PodDisruptionBudget>(&client), owned)
        .watches(scope.api::<Guarded<SecurityPolicy>>(&client), watcher::Config::default(), move |policy| {
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
        })
        .watches(scope.api::<Guarded<Plugin>>(&client), watcher::Config::default(), move |plugin| {
            // Any server with plugins may reach this one through dependencies.
            let ns = plugin.namespace();
            by_plugin
                .state()
                .into_iter()
                .filter(|s| s.namespace() == ns && s.0.as_ref().is_ok_and(|s| !s.spec.plugins.is_empty()))
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(|server, ctx| super::reconcile_guarded(server, ctx, CONTROLLER, reconcile), error_policy, ctx)
        .for_each(super::forget_failures(done, CONTROLLER));
    (store, fut)
}
