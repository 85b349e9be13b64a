//! Plugin controller: dependency closure, usedBy and the RuntimeClass check (no finalizer: see
//! `usage`).
//! The workloads themselves are built per MCP server by the MCPServer controller.

use super::usage::release_finalizer;
use super::{write_status, Context, Error, Result};
use crate::api::plugin_condition_types::*;
use crate::api::{condition, set_condition, IsolationLevel, McpServer, Plugin, PluginPhase, PluginStatus};
use crate::consts::IN_USE_FINALIZER;
use crate::plugins::{describe, index, reachable, resolve_plugins, PluginIndex, PluginProblem};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "plugin";

/// MCPServers that use `plugin`, directly or through dependencies, sorted.
pub fn used_by(plugin: &str, servers: &[McpServer], plugins: &[Plugin]) -> Vec<String> {
    let idx = index(plugins);
    let mut names: Vec<String> =
        servers.iter().filter(|s| reachable(&s.spec.plugins, &idx).contains(plugin)).map(|s| s.name_any()).collect();
    names.sort();
    names
}

/// [`resolve_plugins`] over the readable Plugins of `ns` (`plugins`), a Plugin that exists but
/// cannot be read said to be so (not to be missing).
pub(crate) fn resolve(
    ctx: &Context,
    ns: &str,
    roots: &[String],
    plugins: &PluginIndex<'_>,
) -> Result<Vec<String>, Vec<PluginProblem>> {
    resolve_plugins(roots, plugins).map_err(|problems| {
        problems.into_iter().map(|p| p.explained(|n| ctx.caches.unreadable_plugin(ns, n))).collect()
    })
}

/// Computes a plugin's status from its dependency resolution, users and RuntimeClass check.
pub fn plugin_status(
    plugin: &Plugin,
    dependencies: &Result<Vec<String>, Vec<PluginProblem>>,
    used_by: Vec<String>,
    runtime_class_problem: Option<String>,
) -> PluginStatus {
    let previous = plugin.status.clone().unwrap_or_default();
    let generation = plugin.metadata.generation;
    let name = plugin.name_any();
    let mut conditions = vec![];
    let deps_ok = dependencies.is_ok();
    let deps_condition = match dependencies {
        Ok(order) if order.len() <= 1 => {
            condition(DEPENDENCIES_RESOLVED, true, "NoDependencies", "no dependencies", generation)
        }
        Ok(order) => {
            condition(DEPENDENCIES_RESOLVED, true, "Resolved", format!("start order: {}", order.join(", ")), generation)
        }
        Err(problems) => condition(DEPENDENCIES_RESOLVED, false, "Unresolved", describe(problems), generation),
    };
    set_condition(&mut conditions, &previous.conditions, deps_condition);
    // A request above its limit: every server using the plugin is held back (PluginsUnresolved).
    let over_limit = crate::quantity::resource_problems("spec.resources", plugin.spec.resources.as_ref());
    let ready = match (&runtime_class_problem, deps_ok) {
        (Some(problem), _) => condition(READY, false, "RuntimeClassNotFound", problem.clone(), generation),
        _ if !over_limit.is_empty() => condition(READY, false, "InvalidResources", over_limit.join("; "), generation),
        (None, false) => condition(READY, false, "DependenciesUnresolved", "dependencies are not resolved", generation),
        (None, true) => {
            condition(READY, true, "Ready", format!("isolation {}", plugin.spec.isolation.level.as_str()), generation)
        }
    };
    let is_ready = ready.status == "True";
    set_condition(&mut conditions, &previous.conditions, ready);
    PluginStatus {
        phase: if is_ready { PluginPhase::Ready } else { PluginPhase::Failed },
        used_by_count: used_by.len() as i32,
        used_by,
        // The closure without the plugin itself, dependencies first.
        dependencies: dependencies
            .as_ref()
            .map(|o| o.iter().filter(|n| **n != name).cloned().collect())
            .unwrap_or_default(),
        observed_generation: generation,
        conditions,
    }
}

/// Reconciles one Plugin.
pub async fn reconcile(plugin: Arc<Plugin>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let ns = plugin.namespace().ok_or(Error::MissingNamespace)?;
    let name = plugin.name_any();
    let api: Api<Plugin> = Api::namespaced(ctx.client.clone(), &ns);
    let servers = ctx.caches.servers(&ns);
    let plugins = ctx.caches.plugins(&ns);
    let users = used_by(&name, &servers, &plugins);
    let dependencies = resolve(&ctx, &ns, std::slice::from_ref(&name), &index(&plugins));
    let runtime_class_problem = if plugin.spec.isolation.level == IsolationLevel::Vm {
        let class = &ctx.defaults.vm_runtime_class;
        (!ctx.caches.runtime_class_exists(class))
            .then(|| format!("RuntimeClass {class:?} for VM isolation does not exist in the cluster"))
    } else {
        None
    };
    if release_finalizer(&api, &*plugin, IN_USE_FINALIZER).await? && plugin.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let status = plugin_status(&plugin, &dependencies, users, runtime_class_problem);
    let previous = plugin.status.clone().unwrap_or_default();
    if status != previous {
        write_status(&api, &name, &status).await?;
        let ready = |s: &PluginStatus| s.conditions.iter().find(|c| c.type_ == READY).cloned();
        if let Some(c) = ready(&status).filter(|c| c.status == "False") {
            if ready(&previous).is_none_or(|p| p.status != c.status || p.message != c.message) {
                ctx.event(&*plugin, EventType::Warning, &c.reason, "Resolve", c.message);
            }
        }
    }
    let wait = if status.phase == PluginPhase::Ready { 300 } else { 10 };
    Ok(Action::requeue(Duration::from_secs(wait)))
}

/// Requeue policy after a failed reconcile.
pub fn error_policy<K: kube::Resource<DynamicType = ()>>(plugin: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after(CONTROLLER, &*plugin, err)
}

/// Runs the Plugin controller until shutdown, fed by the MCPServer controller's watches.
pub fn controller(ctx: Arc<Context>, feed: super::Feed<Plugin>) -> impl std::future::Future<Output = ()> {
    let objects = ctx.caches.plugins.clone();
    super::referenced_kind_controller(ctx, objects, feed, CONTROLLER, reconcile, error_policy, uses)
}

/// Whether `server` may use `plugin` (to reconcile the plugin when the server changes): it
/// names plugins (any may be reached through dependencies) or the plugin lists it as a user.
fn uses(server: &McpServer, plugin: &Plugin) -> bool {
    !server.spec.plugins.is_empty()
        || plugin.status.as_ref().is_some_and(|s| s.used_by.iter().any(|u| *u == server.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{plugin, server};

    fn srv(name: &str, plugins: &str) -> McpServer {
        server(&format!("apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: {name}}}\nspec: {{plugins: [{plugins}]}}\n"))
    }

    #[test]
    fn used_by_counts_direct_and_transitive_users() {
        let plugins = vec![plugin("wp", "Container", "dependencies: [base]"), plugin("base", "None", "")];
        let servers = vec![srv("b-server", "wp"), srv("a-server", "base"), srv("c-server", "")];
        assert_eq!(used_by("base", &servers, &plugins), vec!["a-server", "b-server"]);
        assert_eq!(used_by("wp", &servers, &plugins), vec!["b-server"]);
    }

    #[test]
    fn resolved_plugin_is_ready_with_its_closure() {
        let p = plugin("wp", "Container", "dependencies: [base]");
        let st = plugin_status(&p, &Ok(vec!["base".into(), "wp".into()]), vec!["s".into()], None);
        assert_eq!(st.phase, PluginPhase::Ready);
        assert_eq!(st.dependencies, vec!["base"]);
        assert_eq!((st.used_by.as_slice(), st.used_by_count), (&["s".to_string()][..], 1));
        assert_eq!(st.conditions.iter().find(|c| c.type_ == READY).unwrap().status, "True");
    }

    #[test]
    fn cycle_fails_with_the_cycle_named() {
        let p = plugin("a", "Container", "dependencies: [b]");
        let cycle = Err(vec![PluginProblem::Cycle(vec!["a".into(), "b".into(), "a".into()])]);
        let st = plugin_status(&p, &cycle, vec![], None);
        assert_eq!(st.phase, PluginPhase::Failed);
        let c = st.conditions.iter().find(|c| c.type_ == DEPENDENCIES_RESOLVED).unwrap();
        assert_eq!((c.status.as_str(), c.message.as_str()), ("False", "dependency cycle: a -> b -> a"));
    }

    #[test]
    fn missing_runtime_class_is_a_clear_condition() {
        let p = plugin("vm", "VM", "");
        let st = plugin_status(&p, &Ok(vec!["vm".into()]), vec![], Some("RuntimeClass \"kata\" missing".into()));
        assert_eq!(st.phase, PluginPhase::Failed);
        let c = st.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(c.reason, "RuntimeClassNotFound");
    }

    #[test]
    fn a_request_above_its_limit_is_a_clear_condition() {
        let p = plugin("wp", "Container", "resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}");
        let st = plugin_status(&p, &Ok(vec!["wp".into()]), vec![], None);
        assert_eq!(st.phase, PluginPhase::Failed);
        let c = st.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(c.reason, "InvalidResources");
        assert!(c
            .message
            .starts_with("spec.resources.requests.memory (2Gi) is more than spec.resources.limits.memory (1Gi)"));
        let fine = plugin("wp", "Container", "resources: {requests: {memory: 1Gi}, limits: {memory: 1Gi}}");
        assert_eq!(plugin_status(&fine, &Ok(vec!["wp".into()]), vec![], None).phase, PluginPhase::Ready);
    }
}
