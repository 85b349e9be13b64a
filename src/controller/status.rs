//! Pure status computation for MCPServer: phase, conditions, readiness, URL.

use super::cache::CachedDeployment;
use super::cache::CachedPod;
use crate::api::condition_types::*;
use crate::api::{condition, set_condition, McpServer, McpServerPhase, McpServerStatus, Transport};
use crate::build::{plugin_workload_name, selector_string, server_selector};
use crate::consts::LABEL_PLUGIN;
use kube::ResourceExt;

/// The outcome of resolving one kind of reference (policy or plugins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// Resolved and usable.
    pub ok: bool,
    /// CamelCase reason for the condition.
    pub reason: String,
    /// Human message naming what was (not) found.
    pub message: String,
}

impl Resolution {
    /// A resolved reference.
    pub fn ok(reason: &str, message: impl Into<String>) -> Self {
        Self { ok: true, reason: reason.into(), message: message.into() }
    }
    /// An unresolved reference.
    pub fn failed(reason: &str, message: impl Into<String>) -> Self {
        Self { ok: false, reason: reason.into(), message: message.into() }
    }
}

/// What the MCPServer controller learned in one reconcile.
pub struct Observation<'a> {
    /// The SecurityPolicy reference.
    pub policy: &'a Resolution,
    /// The plugin references.
    pub plugins: &'a Resolution,
    /// Applying the children: refused by the API server (or too large to store) is not ok.
    pub applied: &'a Resolution,
    /// The server Deployment as the API server holds it (after apply, when applied).
    pub deployment: Option<&'a CachedDeployment>,
    /// The server pods.
    pub pods: &'a [CachedPod],
    /// The pods of the server's plugin workloads (plugins isolated as Container or VM).
    pub plugin_pods: &'a [CachedPod],
    /// Whether clients must use TLS (https URL).
    pub tls: bool,
}

/// Container waiting reasons that do not pass by waiting: the pod cannot start until something
/// changes (the image or its name, a referenced Secret, ConfigMap or key, the command) or the
/// container keeps exiting. `ContainerCreating` and `PodInitializing` are not among them.
pub const STUCK_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The first container of `pod` that waits for a [`STUCK_REASONS`] reason: its name, reason and
/// the kubelet's message.
pub fn stuck_container(pod: &CachedPod) -> Option<(&str, &str, &str)> {
    let status = pod.status.as_ref()?;
    // Init containers first: while one waits, no other container starts.
    let all = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    all.into_iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref().filter(|r| STUCK_REASONS.contains(r))?;
        Some((c.name.as_str(), reason, waiting.message.as_deref().unwrap_or_default()))
    })
}

/// Pods that cannot start (see [`STUCK_REASONS`]): how many, and why the first of them cannot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// How many pods have a container stuck.
    pub pods: usize,
    /// The kubelet's reason for the first (e.g. `ImagePullBackOff`).
    pub reason: String,
    /// What the condition says: how many pods, which container, the kubelet's message.
    pub message: String,
}

/// The pods of `pods` that cannot start, if any.
pub fn stuck<'p>(pods: impl IntoIterator<Item = &'p CachedPod>) -> Option<Stuck> {
    let all: Vec<_> = pods.into_iter().filter_map(|p| Some((p.metadata.name.as_str(), stuck_container(p)?))).collect();
    // The first by name: the same pod is named from one reconcile to the next.
    let &(_, (container, reason, detail)) = all.iter().min_by_key(|(name, _)| *name)?;
    let count = all.len();
    let what = if reason == "CrashLoopBackOff" { "crash-looping" } else { "cannot start" };
    let mut message = format!("{count} pod(s) {what}: container {container:?} is waiting in {reason}");
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    Some(Stuck { pods: count, reason: reason.into(), message })
}

/// The first plugin workload of `server` (by plugin name) whose pods cannot start, if any: the
/// message names the Plugin and its Deployment.
pub fn stuck_plugin(server: &str, plugin_pods: &[CachedPod]) -> Option<Stuck> {
    let plugin = |p: &CachedPod| p.metadata.label(LABEL_PLUGIN).map(str::to_string);
    let plugins: std::collections::BTreeSet<String> = plugin_pods.iter().filter_map(plugin).collect();
    plugins.into_iter().find_map(|name| {
        let mut found = stuck(plugin_pods.iter().filter(|p| plugin(p).as_deref() == Some(name.as_str())))?;
        found.message =
            format!("plugin {name:?} (Deployment {}): {}", plugin_workload_name(server, &name), found.message);
        Some(found)
    })
}

/// The server's URL inside the cluster.
pub fn server_url(server: &McpServer, tls: bool) -> String {
    let scheme = match (server.spec.transport, tls) {
        (Transport::Websocket, false) => "ws",
        (Transport::Websocket, true) => "wss",
        (_, false) => "http",
        (_, true) => "https",
    };
    format!(
        "{scheme}://{}.{}.svc:{}{}",
        server.name_any(),
        server.namespace().unwrap_or_default(),
        server.spec.port,
        server.spec.path
    )
}

/// Computes the status; conditions keep their transition times when unchanged.
pub fn server_status(server: &McpServer, obs: &Observation<'_>) -> McpServerStatus {
    let previous = server.status.clone().unwrap_or_default();
    let generation = server.metadata.generation;
    let desired = server.spec.replicas;
    let dep_status = obs.deployment.and_then(|d| d.status.as_ref());
    let ready = dep_status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = dep_status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let dep_replicas = obs.deployment.and_then(|d| d.spec.replicas);
    let dep_current =
        obs.deployment.is_some_and(|d| d.status.as_ref().and_then(|s| s.observed_generation) >= d.metadata.generation);
    let deadline_exceeded =
        dep_status.and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| {
            c.type_.as_deref() == Some("Progressing") && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
    let stuck = stuck(obs.pods);
    // A plugin workload that cannot start degrades the server; the server itself still serves
    // (its calls to that plugin fail), so it stays Ready and Running.
    let stuck_plugin = stuck_plugin(&server.name_any(), obs.plugin_pods);
    let all_stuck = stuck.as_ref().is_some_and(|s| ready == 0 && s.pods == obs.pods.len());
    // When the workload is held back (fail closed), report what actually runs.
    let held_back = [obs.policy, obs.plugins, obs.applied].into_iter().find(|r| !r.ok);
    let replicas = if held_back.is_none() { desired } else { dep_replicas.unwrap_or(0) };

    let mut conditions = vec![];
    let mut set = |c| set_condition(&mut conditions, &previous.conditions, c);
    set(condition(SECURITY_POLICY_RESOLVED, obs.policy.ok, &obs.policy.reason, obs.policy.message.clone(), generation));
    set(condition(PLUGINS_RESOLVED, obs.plugins.ok, &obs.plugins.reason, obs.plugins.message.clone(), generation));
    set(if ready >= 1 {
        condition(
            AVAILABLE,
            true,
            "MinimumReplicasAvailable",
            format!("{ready} of {replicas} replicas ready"),
            generation,
        )
    } else {
        condition(AVAILABLE, false, "NoReplicasReady", "no replica is ready", generation)
    });
    set(match obs.deployment {
        None => condition(PROGRESSING, false, NO_WORKLOAD, "no Deployment exists yet", generation),
        Some(_) if deadline_exceeded => condition(
            PROGRESSING,
            false,
            "ProgressDeadlineExceeded",
            "the rollout did not finish within its progress deadline",
            generation,
        ),
        Some(_) if dep_current && updated >= replicas && ready >= replicas => {
            condition(PROGRESSING, true, "RolloutComplete", "every replica runs the current pod template", generation)
        }
        Some(_) => condition(
            PROGRESSING,
            true,
            "RolloutInProgress",
            // Not the updated count: the status is written when it changes, and a rollout step
            // that only updates a pod (the Deployment says how many) is not worth a write.
            format!("rolling out: {ready} of {replicas} replicas ready"),
            generation,
        ),
    });
    // A pod that cannot start says why, also once the rollout's deadline has passed.
    set(if let Some(stuck) = &stuck {
        condition(DEGRADED, true, &stuck.reason, stuck.message.clone(), generation)
    } else if deadline_exceeded {
        condition(DEGRADED, true, "ProgressDeadlineExceeded", "the rollout exceeded its progress deadline", generation)
    } else if !(obs.policy.ok && obs.plugins.ok) {
        condition(
            DEGRADED,
            true,
            "ReferencesUnresolved",
            "changes are held back until every reference resolves",
            generation,
        )
    } else if !obs.applied.ok {
        condition(DEGRADED, true, &obs.applied.reason, obs.applied.message.clone(), generation)
    } else if ready < replicas {
        condition(DEGRADED, true, "InsufficientReplicas", format!("{ready} of {replicas} replicas ready"), generation)
    } else if let Some(plugin) = &stuck_plugin {
        condition(DEGRADED, true, &plugin.reason, plugin.message.clone(), generation)
    } else {
        condition(DEGRADED, false, "AsExpected", format!("{ready} of {replicas} replicas ready"), generation)
    });

    // Ready: what the spec asks for runs; False names the first thing that does not hold.
    set(if let Some(r) = held_back {
        condition(READY, false, &r.reason, format!("changes are held back: {}", r.message), generation)
    } else if let Some(stuck) = &stuck {
        condition(READY, false, &stuck.reason, stuck.message.clone(), generation)
    } else if deadline_exceeded {
        condition(READY, false, "ProgressDeadlineExceeded", "the rollout exceeded its progress deadline", generation)
    } else if ready < replicas || replicas == 0 {
        condition(READY, false, "ReplicasNotReady", format!("{ready} of {replicas} replicas ready"), generation)
    } else {
        condition(READY, true, "AllReplicasReady", format!("{ready} of {replicas} replicas ready"), generation)
    });

    let phase = if server.metadata.deletion_timestamp.is_some() {
        McpServerPhase::Terminating
    } else if held_back.is_some() || deadline_exceeded || all_stuck {
        McpServerPhase::Failed
    } else if ready >= 1 {
        McpServerPhase::Running
    } else {
        McpServerPhase::Pending
    };
    McpServerStatus {
        phase,
        replicas,
        ready_replicas: ready,
        ready: Some(format!("{ready}/{replicas}")),
        selector: Some(selector_string(&server_selector(&server.name_any()))),
        // While changes are held back, the URL of what actually runs stays.
        url: if obs.policy.ok && obs.plugins.ok {
            Some(server_url(server, obs.tls))
        } else {
            previous.url.clone().or_else(|| Some(server_url(server, obs.tls)))
        },
        observed_generation: generation,
        conditions,
        // Filled from the gateway by the controller (gateway_status::merge).
        ..Default::default()
    }
}

/// Reason of the Progressing condition while no Deployment exists.
pub const NO_WORKLOAD: &str = "NoWorkload";

/// Whether `status` reports a workload: a Deployment existed when it was computed.
fn reports_workload(status: &McpServerStatus) -> bool {
    status.conditions.iter().any(|c| c.type_ == PROGRESSING && c.reason != NO_WORKLOAD)
}

/// Whether the step from `previous` to `status` creates the server's workload (the `Created`
/// Event): `status` reports a Deployment, and either none was cached when the reconcile began
/// (`existed`) or `previous` never reported one. The second half is a reconcile that created the
/// Deployment and then failed (another child's apply, the status write): its retry finds the
/// Deployment cached, and the Event is its to publish.
pub fn workload_created(existed: bool, previous: &McpServerStatus, status: &McpServerStatus) -> bool {
    reports_workload(status) && (!existed || !reports_workload(previous))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::guide_server;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};

    fn progressing(reason: &str) -> McpServerStatus {
        let mut status = McpServerStatus::default();
        status.conditions.push(condition(PROGRESSING, reason != NO_WORKLOAD, reason, "m", Some(1)));
        status
    }

    #[test]
    fn workload_created_is_the_first_status_that_reports_a_deployment() {
        let (none, never) = (progressing(NO_WORKLOAD), McpServerStatus::default());
        let (rolling, complete) = (progressing("RolloutInProgress"), progressing("RolloutComplete"));
        // The first reconcile creates it.
        assert!(workload_created(false, &never, &rolling));
        // A held-back server gets one once its reference resolves.
        assert!(workload_created(false, &none, &rolling));
        // The reconcile that created it failed before its status: the retry finds it cached.
        assert!(workload_created(true, &never, &rolling));
        assert!(workload_created(true, &none, &rolling));
        // Deleted by someone and created again.
        assert!(workload_created(false, &complete, &rolling));
        // Steady, or nothing created (refused, held back).
        assert!(!workload_created(true, &rolling, &complete));
        assert!(!workload_created(false, &never, &none));
        assert!(!workload_created(true, &rolling, &none));
    }

    fn deployment(replicas: i32, ready: i32, updated: i32, deadline: bool) -> CachedDeployment {
        CachedDeployment {
            metadata: super::super::cache::ChildMeta { generation: Some(1), ..Default::default() },
            spec: super::super::cache::CachedDeploymentSpec { replicas: Some(replicas) },
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                conditions: deadline.then(|| {
                    vec![DeploymentCondition {
                        type_: Some("Progressing".into()),
                        status: Some("False".into()),
                        reason: Some("ProgressDeadlineExceeded".into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn waiting_pod(container: &str, reason: &str, message: &str) -> CachedPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [
                {"name": "gateway", "ready": true, "state": {"running": {}}},
                {"name": container, "ready": false, "restartCount": 7,
                 "state": {"waiting": {"reason": reason, "message": message}}}]}
        }))
        .unwrap()
    }

    fn crashing_pod() -> CachedPod {
        waiting_pod("server", "CrashLoopBackOff", "back-off 5m0s restarting failed container")
    }

    fn ok() -> Resolution {
        Resolution::ok("NotRequired", "none")
    }

    fn status(dep: Option<&CachedDeployment>, pods: &[CachedPod], policy: &Resolution) -> McpServerStatus {
        let mut s = guide_server();
        s.metadata.generation = Some(3);
        server_status(&s, &Observation { policy, pods, ..observed(dep) })
    }

    static OK: std::sync::LazyLock<Resolution> = std::sync::LazyLock::new(ok);

    /// What a reconcile observes of `deployment` when every reference resolves, every child is
    /// applied and no pod is stuck.
    fn observed(deployment: Option<&CachedDeployment>) -> Observation<'_> {
        Observation { policy: &OK, plugins: &OK, applied: &OK, deployment, pods: &[], plugin_pods: &[], tls: false }
    }

    fn cond<'a>(s: &'a McpServerStatus, t: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn all_ready_is_running_and_complete() {
        let d = deployment(2, 2, 2, false);
        let s = status(Some(&d), &[], &ok());
        assert_eq!(s.phase, McpServerPhase::Running);
        assert_eq!((s.replicas, s.ready_replicas, s.ready.as_deref()), (2, 2, Some("2/2")));
        assert_eq!(cond(&s, AVAILABLE).status, "True");
        assert_eq!(cond(&s, PROGRESSING).reason, "RolloutComplete");
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.url.as_deref(), Some("http://my-mcp-server.default.svc:3000/mcp"));
        assert_eq!(s.selector.as_deref(), Some("app.kubernetes.io/component=server,app.kubernetes.io/instance=my-mcp-server,app.kubernetes.io/name=mcp-server"));
    }

    #[test]
    fn a_rollout_step_that_changes_only_the_updated_count_changes_no_status() {
        let mut s = guide_server();
        s.metadata.generation = Some(3);
        let observe = |s: &McpServer, dep: &CachedDeployment| server_status(s, &observed(Some(dep)));
        let created = observe(&s, &deployment(2, 0, 0, false));
        s.status = Some(created.clone());
        assert_eq!(observe(&s, &deployment(2, 0, 2, false)), created, "no write: the same status");
        let one_ready = observe(&s, &deployment(2, 1, 2, false));
        assert_ne!(one_ready, created, "a pod became ready");
        assert_eq!(cond(&one_ready, PROGRESSING).message, "rolling out: 1 of 2 replicas ready");
    }

    #[test]
    fn nothing_ready_yet_is_pending_and_progressing() {
        let d = deployment(2, 0, 0, false);
        let s = status(Some(&d), &[], &ok());
        assert_eq!(s.phase, McpServerPhase::Pending);
        assert_eq!(cond(&s, AVAILABLE).status, "False");
        assert_eq!(cond(&s, PROGRESSING).reason, "RolloutInProgress");
        assert_eq!(cond(&s, DEGRADED).reason, "InsufficientReplicas");
    }

    #[test]
    fn partly_ready_is_running_but_degraded() {
        let d = deployment(2, 1, 2, false);
        let s = status(Some(&d), &[], &ok());
        assert_eq!(s.phase, McpServerPhase::Running);
        assert_eq!(cond(&s, DEGRADED).status, "True");
    }

    #[test]
    fn deadline_exceeded_fails() {
        let d = deployment(2, 0, 1, true);
        let s = status(Some(&d), &[], &ok());
        assert_eq!(s.phase, McpServerPhase::Failed);
        assert_eq!(cond(&s, PROGRESSING).status, "False");
        assert_eq!(cond(&s, DEGRADED).reason, "ProgressDeadlineExceeded");
    }

    #[test]
    fn all_pods_crash_looping_fails() {
        let d = deployment(2, 0, 2, false);
        let s = status(Some(&d), &[crashing_pod(), crashing_pod()], &ok());
        assert_eq!(s.phase, McpServerPhase::Failed);
        assert_eq!(cond(&s, DEGRADED).reason, "CrashLoopBackOff");
        let ready = cond(&s, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "CrashLoopBackOff"));
        assert_eq!(
            ready.message,
            "2 pod(s) crash-looping: container \"server\" is waiting in CrashLoopBackOff: back-off 5m0s restarting failed container"
        );
    }

    #[test]
    fn pods_that_cannot_start_name_the_container_the_kubelets_reason_and_message() {
        let d = deployment(1, 0, 1, false);
        for (reason, message) in [
            ("ImagePullBackOff", "Back-off pulling image \"example.invalid/x:1\""),
            ("ErrImagePull", "failed to pull and unpack image"),
            ("InvalidImageName", "Failed to apply default image tag \"ghcr.io/MyOrg/x:1\": couldn't parse image name"),
            ("CreateContainerConfigError", "secret \"api-keys\" not found"),
            ("CreateContainerError", "failed to create containerd container"),
            ("RunContainerError", "exec: \"serve\": executable file not found in $PATH"),
        ] {
            let s = status(Some(&d), &[waiting_pod("server", reason, message)], &ok());
            assert_eq!(s.phase, McpServerPhase::Failed, "{reason}: the only pod cannot start");
            let ready = cond(&s, READY);
            assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason));
            assert_eq!(
                ready.message,
                format!("1 pod(s) cannot start: container \"server\" is waiting in {reason}: {message}")
            );
            assert_eq!(
                (cond(&s, DEGRADED).reason.as_str(), cond(&s, DEGRADED).message.as_str()),
                (reason, ready.message.as_str())
            );
        }
    }

    #[test]
    fn the_kubelets_reason_outlasts_the_deadline_comes_from_init_containers_and_names_one_pod_steadily() {
        // Past the progress deadline the reason still shows.
        let d = deployment(1, 0, 1, true);
        let s = status(Some(&d), &[waiting_pod("server", "ImagePullBackOff", "Back-off")], &ok());
        assert_eq!(
            (cond(&s, READY).reason.as_str(), cond(&s, DEGRADED).reason.as_str()),
            ("ImagePullBackOff", "ImagePullBackOff")
        );
        assert_eq!(s.phase, McpServerPhase::Failed);
        // An init container (a stdio server's install step) that cannot start.
        let init: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"initContainerStatuses": [{"name": "install-gateway", "state": {"waiting": {"reason": "ErrImagePull", "message": "m"}}}],
                       "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": "PodInitializing"}}}]}
        }))
        .unwrap();
        assert_eq!(stuck_container(&init), Some(("install-gateway", "ErrImagePull", "m")));
        // Several: the first by name, whatever the cache's order.
        let named = |name: &str, container: &str| {
            let mut p = waiting_pod(container, "CrashLoopBackOff", "");
            p.metadata.name = name.into();
            p
        };
        for pods in [[named("s-b", "two"), named("s-a", "one")], [named("s-a", "one"), named("s-b", "two")]] {
            let st = stuck(&pods).unwrap();
            assert_eq!(
                (st.pods, st.message.as_str()),
                (2, "2 pod(s) crash-looping: container \"one\" is waiting in CrashLoopBackOff")
            );
        }
    }

    #[test]
    fn a_container_being_created_is_not_stuck_and_a_stuck_new_pod_beside_ready_ones_is_not_failed() {
        let d = deployment(2, 0, 1, false);
        let creating = waiting_pod("server", "ContainerCreating", "");
        let s = status(Some(&d), std::slice::from_ref(&creating), &ok());
        assert_eq!((s.phase, cond(&s, READY).reason.as_str()), (McpServerPhase::Pending, "ReplicasNotReady"));
        assert_eq!(stuck(std::slice::from_ref(&creating)), None);
        // A rollout whose new pod cannot pull its image while the old pods still serve.
        let rolling = deployment(2, 2, 1, false);
        let pulling = waiting_pod("server", "ImagePullBackOff", "Back-off pulling image \"x\"");
        let s = status(Some(&rolling), &[creating, pulling], &ok());
        assert_eq!(s.phase, McpServerPhase::Running, "what runs still serves");
        assert_eq!(cond(&s, READY).reason, "ImagePullBackOff");
        assert!(cond(&s, READY).message.starts_with("1 pod(s) cannot start: container \"server\""));
    }

    fn plugin_pod(plugin: &str, name: &str, state: serde_json::Value) -> CachedPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {LABEL_PLUGIN: plugin, "app.kubernetes.io/component": "plugin"}},
            "status": {"containerStatuses": [{"name": "plugin", "ready": false, "state": state}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_plugin_workload_that_cannot_start_degrades_the_server_naming_it_and_the_server_stays_ready() {
        let mut s = guide_server();
        s.metadata.generation = Some(3);
        let pulling = serde_json::json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"registry.invalid/p:1\""}});
        let plugin_pods = [
            plugin_pod(
                "zeta",
                "my-mcp-server-zeta-5d8-x",
                serde_json::json!({"waiting": {"reason": "ErrImagePull", "message": "m"}}),
            ),
            plugin_pod("wordpress-plugin", "my-mcp-server-wordpress-plugin-7c9-a", pulling),
            plugin_pod("base", "my-mcp-server-base-6f4-b", serde_json::json!({"running": {}})),
        ];
        let observe = |dep: &CachedDeployment, pods: &[CachedPod], plugin_pods: &[CachedPod]| {
            server_status(&s, &Observation { pods, plugin_pods, ..observed(Some(dep)) })
        };
        let serving = deployment(2, 2, 2, false);
        let st = observe(&serving, &[], &plugin_pods);
        assert_eq!(st.phase, McpServerPhase::Running, "the server itself serves");
        assert_eq!((cond(&st, READY).status.as_str(), cond(&st, READY).reason.as_str()), ("True", "AllReplicasReady"));
        let degraded = cond(&st, DEGRADED);
        assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "ImagePullBackOff"));
        assert_eq!(
            degraded.message,
            "plugin \"wordpress-plugin\" (Deployment my-mcp-server-wordpress-plugin): 1 pod(s) cannot start: \
             container \"plugin\" is waiting in ImagePullBackOff: Back-off pulling image \"registry.invalid/p:1\""
        );
        // The server's own trouble comes first.
        let st = observe(&deployment(2, 1, 2, false), &[crashing_pod()], &plugin_pods);
        assert_eq!(cond(&st, DEGRADED).reason, "CrashLoopBackOff");
        assert!(cond(&st, DEGRADED).message.starts_with("1 pod(s) crash-looping: container \"server\""));
        // A plugin pod that runs or is being created degrades nothing.
        let fine = [
            plugin_pod("base", "my-mcp-server-base-6f4-b", serde_json::json!({"running": {}})),
            plugin_pod(
                "zeta",
                "my-mcp-server-zeta-5d8-y",
                serde_json::json!({"waiting": {"reason": "ContainerCreating"}}),
            ),
        ];
        let st = observe(&serving, &[], &fine);
        assert_eq!((cond(&st, DEGRADED).status.as_str(), cond(&st, DEGRADED).reason.as_str()), ("False", "AsExpected"));
    }

    #[test]
    fn missing_policy_fails_closed_and_reports_what_runs() {
        let missing = Resolution::failed("PolicyNotFound", "SecurityPolicy \"p\" not found");
        let none = status(None, &[], &missing);
        assert_eq!(none.phase, McpServerPhase::Failed);
        assert_eq!(none.replicas, 0, "nothing was started");
        let c = cond(&none, SECURITY_POLICY_RESOLVED);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "PolicyNotFound"));
        let running = deployment(2, 2, 2, false);
        let kept = status(Some(&running), &[], &missing);
        assert_eq!(kept.phase, McpServerPhase::Failed);
        assert_eq!(kept.ready_replicas, 2, "the running workload is left as it is");
        assert_eq!(cond(&kept, AVAILABLE).status, "True");
    }

    #[test]
    fn refused_apply_is_ready_false_naming_the_api_error_and_keeps_what_runs() {
        let mut s = guide_server();
        s.metadata.generation = Some(3);
        let refused =
            Resolution::failed("ApplyFailed", "Deployment.apps \"x\" is invalid: spec.template...: Invalid value");
        let running = deployment(2, 2, 2, false);
        let st = server_status(&s, &Observation { applied: &refused, ..observed(Some(&running)) });
        assert_eq!(st.phase, McpServerPhase::Failed);
        assert_eq!(st.replicas, 2, "what runs, not what the spec asks");
        let ready = cond(&st, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ApplyFailed"));
        assert!(ready.message.contains("is invalid: spec.template"), "{}", ready.message);
        assert_eq!(cond(&st, DEGRADED).reason, "ApplyFailed");
        assert_eq!(cond(&st, AVAILABLE).status, "True", "the running workload still serves");
    }

    #[test]
    fn held_back_server_keeps_the_url_of_what_runs() {
        let mut s = guide_server();
        s.status = Some(McpServerStatus {
            url: Some("https://my-mcp-server.default.svc:3000/mcp".into()),
            ..Default::default()
        });
        let invalid = Resolution::failed("PolicyInvalid", "x");
        let st = server_status(&s, &Observation { policy: &invalid, ..observed(None) });
        assert_eq!(st.url.as_deref(), Some("https://my-mcp-server.default.svc:3000/mcp"));
    }

    #[test]
    fn terminating_wins() {
        let mut s = guide_server();
        s.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        let st = server_status(&s, &observed(None));
        assert_eq!(st.phase, McpServerPhase::Terminating);
    }

    #[test]
    fn steady_state_keeps_transition_times() {
        let d = deployment(2, 2, 2, false);
        let mut s = guide_server();
        let obs = observed(Some(&d));
        let first = server_status(&s, &obs);
        s.status = Some(first.clone());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(server_status(&s, &obs), first, "no status flapping");
    }

    #[test]
    fn url_follows_transport_and_tls() {
        let mut s = guide_server();
        assert_eq!(server_url(&s, true), "https://my-mcp-server.default.svc:3000/mcp");
        s.spec.transport = Transport::Websocket;
        assert_eq!(server_url(&s, false), "ws://my-mcp-server.default.svc:3000/mcp");
    }
}
