//! What the controllers read, from reflector caches instead of the API server: the MCPServers,
//! the Plugins and SecurityPolicies they name, the RuntimeClasses, every kind of child and the
//! server pods (as compact views: [`ChildMeta`] instead of `ObjectMeta`, and of a Deployment or
//! pod only the status fields read). Secrets are never listed or watched:
//! each one a policy names is read with `get` by the SecurityPolicy controller and kept here, so
//! a server reconcile reads none.
//!
//! With these, a reconcile of a server whose inputs and children did not change makes no API
//! call at all; [`Caches::needs_apply`] decides which children must be applied.

use super::watch::Synced;
use super::Guarded;
use crate::api::{McpServer, Plugin, SecurityPolicy};
use crate::consts::{LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PLUGIN, MANAGED_BY};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The annotation on every child that records the hash of the object the operator applied.
pub const ANNOTATION_APPLIED: &str = "mcp.n-takatsu.dev/applied-hash";

/// The reflector stores the controllers read.
pub struct Caches {
    /// MCPServers (the MCPServer controller's own store).
    pub servers: Store<Guarded<McpServer>>,
    /// SecurityPolicies.
    pub policies: Store<Guarded<SecurityPolicy>>,
    /// Plugins.
    pub plugins: Store<Guarded<Plugin>>,
    /// RuntimeClasses (names only).
    pub runtime_classes: Store<PartialObjectMeta<RuntimeClass>>,
    /// Deployments the operator manages (trimmed: no pod template).
    pub deployments: Store<CachedDeployment>,
    /// Services the operator manages (metadata as [`ChildMeta`], as for the kinds below).
    pub services: Store<CachedChild<Service>>,
    /// ConfigMaps the operator manages (metadata).
    pub config_maps: Store<CachedChild<ConfigMap>>,
    /// ServiceAccounts the operator manages (metadata).
    pub service_accounts: Store<CachedChild<ServiceAccount>>,
    /// NetworkPolicies the operator manages (metadata).
    pub network_policies: Store<CachedChild<NetworkPolicy>>,
    /// PodDisruptionBudgets the operator manages (metadata).
    pub pdbs: Store<CachedChild<PodDisruptionBudget>>,
    /// Pods of the servers and plugins (trimmed: labels, readiness, address, container states).
    pub pods: Store<CachedPod>,
    /// Which of the stores above their first list has filled.
    synced: Synced,
    /// Secrets named by policies, as last read.
    pub secrets: SecretCache,
    /// Per child: the applied hash, the version marker the API server returned for it, and when.
    applied: Mutex<HashMap<String, Baseline>>,
    /// Per server: the resourceVersion of its last status write (a cached server older than
    /// that has not caught up with the operator's own write yet).
    status_written: Mutex<HashMap<String, u64>>,
}

/// What the operator knows it applied to a child.
#[derive(Clone, Debug)]
pub struct Baseline {
    /// The applied hash.
    pub hash: String,
    /// The child's version marker (see [`marker`]) then.
    pub marker: String,
    /// When (None: seen in the cache, not applied by this process).
    pub applied_at: Option<Instant>,
}

/// How long an applied child may be missing from its cache before it counts as gone.
pub const CACHE_LAG: Duration = Duration::from_secs(10);

/// What the caches keep of a child's (or pod's) metadata: name, namespace, the labels the
/// controllers select by, the applied hash, generation, resourceVersion and deletion, as plain
/// fields. An `ObjectMeta` is 360 bytes before any of its strings and each of its maps a
/// ~550-byte node however few entries it holds; this is about 150, and at 5,000 servers the
/// caches hold some 25,000 children and pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildMeta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// The values of [`READ_LABELS`] but the first (managed-by, which is `managed`).
    pub(crate) labels: [Option<Box<str>>; 4],
    /// Whether the managed-by label names this operator.
    pub(crate) managed: bool,
    /// The applied hash ([`ANNOTATION_APPLIED`]).
    pub hash: Option<Box<str>>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// [`instance_key`] of the namespace and the instance label (0 without that label): finding
    /// a server's few children among every cached one compares this first, not strings.
    pub(crate) instance_key: u64,
}

/// A number for a (namespace, instance label) pair; equal pairs give equal numbers.
fn instance_key(ns: Option<&str>, instance: &str) -> u64 {
    super::watch::hash_of((ns, instance))
}

impl From<ObjectMeta> for ChildMeta {
    fn from(meta: ObjectMeta) -> Self {
        let mut labels = meta.labels.unwrap_or_default();
        let mut take = |key: &str| labels.remove(key).map(String::into_boxed_str);
        let managed = take(LABEL_MANAGED_BY).is_some_and(|m| &*m == MANAGED_BY);
        let read = [take(READ_LABELS[1]), take(READ_LABELS[2]), take(READ_LABELS[3]), take(READ_LABELS[4])];
        let instance_key = read[0].as_deref().map_or(0, |i| instance_key(meta.namespace.as_deref(), i));
        Self {
            instance_key,
            name: meta.name.unwrap_or_default(),
            namespace: meta.namespace,
            labels: read,
            managed,
            hash: meta.annotations.and_then(|mut a| a.remove(ANNOTATION_APPLIED)).map(String::into_boxed_str),
            generation: meta.generation,
            resource_version: meta.resource_version,
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

impl ChildMeta {
    /// The value of one of the labels kept ([`READ_LABELS`]); None for any other.
    pub fn label(&self, key: &str) -> Option<&str> {
        if key == LABEL_MANAGED_BY {
            return self.managed.then_some(MANAGED_BY);
        }
        let at = READ_LABELS[1..].iter().position(|k| *k == key)?;
        self.labels[at].as_deref()
    }

    /// Whether the labels kept include every key and value of `selector`.
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.label(k) == Some(v.as_str()))
    }
}

/// A child of a kind of which only the metadata is cached.
#[derive(Debug)]
pub struct CachedChild<K> {
    /// Its metadata.
    pub metadata: ChildMeta,
    kind: std::marker::PhantomData<fn() -> K>,
}

// Not derived: those would require `K: Clone` (the kind is only a marker).
impl<K> Clone for CachedChild<K> {
    fn clone(&self) -> Self {
        Self { metadata: self.metadata.clone(), kind: std::marker::PhantomData }
    }
}

impl<K> From<PartialObjectMeta<K>> for CachedChild<K> {
    fn from(o: PartialObjectMeta<K>) -> Self {
        Self { metadata: o.metadata.into(), kind: std::marker::PhantomData }
    }
}

/// A Deployment as the caches hold it: its metadata, desired replica count and status (the
/// conditions without their messages and times). Read from the watch as a [`WatchedDeployment`],
/// so the pod template is never even deserialized.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "WatchedDeployment")]
pub struct CachedDeployment {
    /// The Deployment's metadata.
    pub metadata: ChildMeta,
    /// What is read of its spec.
    pub spec: CachedDeploymentSpec,
    /// Its status.
    pub status: Option<DeploymentStatus>,
}

/// What is read of a Deployment's spec.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CachedDeploymentSpec {
    /// Desired pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
}

/// A Deployment as its watch reads it (whole metadata: the watcher resumes from its
/// resourceVersion), turned into a [`CachedDeployment`] before the cache.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct WatchedDeployment {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: CachedDeploymentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<DeploymentStatus>,
}

impl From<WatchedDeployment> for CachedDeployment {
    fn from(mut d: WatchedDeployment) -> Self {
        if let Some(conditions) = d.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            for c in conditions {
                c.message = None;
                c.last_transition_time = None;
                c.last_update_time = None;
            }
        }
        Self { metadata: d.metadata.into(), spec: d.spec, status: d.status }
    }
}

impl From<Deployment> for CachedDeployment {
    fn from(d: Deployment) -> Self {
        WatchedDeployment {
            metadata: d.metadata,
            spec: CachedDeploymentSpec { replicas: d.spec.replicas },
            status: d.status,
        }
        .into()
    }
}

/// A pod as the caches hold it: metadata and what is read of its status, never its spec.
/// Read from the watch as a [`WatchedPod`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "WatchedPod")]
pub struct CachedPod {
    /// The pod's metadata.
    pub metadata: ChildMeta,
    /// What is read of its status (of the conditions, the Ready one).
    pub status: Option<CachedPodStatus>,
}

/// A pod as its watch reads it, turned into a [`CachedPod`] before the cache.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct WatchedPod {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<CachedPodStatus>,
}

impl From<WatchedPod> for CachedPod {
    fn from(mut p: WatchedPod) -> Self {
        if let Some(status) = p.status.as_mut() {
            if let Some(conditions) = status.conditions.as_mut() {
                conditions.retain(|c| c.type_ == "Ready");
            }
            // A waiting container's message is kept for the status (only while it waits), cut.
            let all = status.container_statuses.iter_mut().chain(status.init_container_statuses.iter_mut());
            for waiting in all.flatten().filter_map(|c| c.state.as_mut()?.waiting.as_mut()) {
                if let Some(message) = waiting.message.as_mut() {
                    *message = super::events::cut(message, MAX_WAITING_MESSAGE);
                }
            }
        }
        Self { metadata: p.metadata.into(), status: p.status }
    }
}

/// What is read of a pod's status (a `PodStatus` and its container statuses are ~1.5 KB per pod
/// before any of their strings): phase, address, conditions (the Ready one once trimmed) and
/// each container's waiting reason.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    /// `status.phase`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `status.podIP`.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// `status.conditions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<CachedPodCondition>>,
    /// `status.containerStatuses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_statuses: Option<Vec<CachedContainerStatus>>,
    /// `status.initContainerStatuses` (a stdio server's install step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_container_statuses: Option<Vec<CachedContainerStatus>>,
}

/// A pod condition: type and status.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CachedPodCondition {
    /// `type`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `status`.
    pub status: String,
}

/// The longest waiting message of a container kept in the cache (the kubelet's image-pull
/// messages are a few hundred bytes).
pub const MAX_WAITING_MESSAGE: usize = 512;

/// A container's status: whether and why it waits.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CachedContainerStatus {
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<CachedContainerState>,
}

/// A container's state: waiting or not.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CachedContainerState {
    /// `waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<CachedWaiting>,
}

/// Why a container waits.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CachedWaiting {
    /// `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `message` (cut to [`MAX_WAITING_MESSAGE`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The type-level facts of `$kind` (kind, group, version, plural), for a view's `Resource` or
/// `Lookup` implementation.
macro_rules! kind_of {
    ($kind:ty) => {
        fn kind(dt: &()) -> Cow<'_, str> {
            <$kind as Resource>::kind(dt)
        }
        fn group(dt: &()) -> Cow<'_, str> {
            <$kind as Resource>::group(dt)
        }
        fn version(dt: &()) -> Cow<'_, str> {
            <$kind as Resource>::version(dt)
        }
        fn plural(dt: &()) -> Cow<'_, str> {
            <$kind as Resource>::plural(dt)
        }
    };
}

/// `$view` is read from and written to the API of the namespaced kind `$kind`.
macro_rules! view_of {
    ($view:ty, $kind:ty) => {
        impl Resource for $view {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;
            kind_of!($kind);
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
view_of!(WatchedDeployment, Deployment);
view_of!(WatchedPod, Pod);

/// Cached views that carry a [`ChildMeta`].
pub trait HasChildMeta {
    /// The view's metadata.
    fn child_meta(&self) -> &ChildMeta;
}

/// `$view` (with its [`ChildMeta`] in `metadata`) is cached for the kind `$kind`; its store keys
/// carry no resourceVersion or UID.
macro_rules! cached_as {
    ($view:ty, $kind:ty $(, $generic:ident)?) => {
        impl$(<$generic: Resource<DynamicType = ()>>)? reflector::Lookup for $view {
            type DynamicType = ();
            kind_of!($kind);
            fn name(&self) -> Option<Cow<'_, str>> {
                Some(Cow::Borrowed(&self.metadata.name))
            }
            fn namespace(&self) -> Option<Cow<'_, str>> {
                self.metadata.namespace.as_deref().map(Cow::Borrowed)
            }
            fn resource_version(&self) -> Option<Cow<'_, str>> {
                None
            }
            fn uid(&self) -> Option<Cow<'_, str>> {
                None
            }
        }
        impl$(<$generic>)? HasChildMeta for $view {
            fn child_meta(&self) -> &ChildMeta {
                &self.metadata
            }
        }
    };
}
cached_as!(CachedDeployment, Deployment);
cached_as!(CachedPod, Pod);
cached_as!(CachedChild<K>, K, K);

/// The writing ends of the stores, fed by the controllers' watches.
pub struct Writers {
    /// Feeds [`Caches::servers`].
    pub servers: reflector::store::Writer<Guarded<McpServer>>,
    /// Feeds [`Caches::policies`].
    pub policies: reflector::store::Writer<Guarded<SecurityPolicy>>,
    /// Feeds [`Caches::plugins`].
    pub plugins: reflector::store::Writer<Guarded<Plugin>>,
    /// Feeds [`Caches::runtime_classes`].
    pub runtime_classes: reflector::store::Writer<PartialObjectMeta<RuntimeClass>>,
    /// Feeds [`Caches::deployments`].
    pub deployments: reflector::store::Writer<CachedDeployment>,
    /// Feeds [`Caches::services`].
    pub services: reflector::store::Writer<CachedChild<Service>>,
    /// Feeds [`Caches::config_maps`].
    pub config_maps: reflector::store::Writer<CachedChild<ConfigMap>>,
    /// Feeds [`Caches::service_accounts`].
    pub service_accounts: reflector::store::Writer<CachedChild<ServiceAccount>>,
    /// Feeds [`Caches::network_policies`].
    pub network_policies: reflector::store::Writer<CachedChild<NetworkPolicy>>,
    /// Feeds [`Caches::pdbs`].
    pub pdbs: reflector::store::Writer<CachedChild<PodDisruptionBudget>>,
    /// Feeds [`Caches::pods`].
    pub pods: reflector::store::Writer<CachedPod>,
    /// Records the stores' first lists (see [`crate::controller::watch::reflect`]).
    pub synced: Synced,
}

/// Empty caches and their writers.
pub fn caches() -> (Caches, Writers) {
    let (servers, w_servers) = reflector::store();
    let (policies, w_policies) = reflector::store();
    let (plugins, w_plugins) = reflector::store();
    let (runtime_classes, w_runtime_classes) = reflector::store();
    let (deployments, w_deployments) = reflector::store();
    let (services, w_services) = reflector::store();
    let (config_maps, w_config_maps) = reflector::store();
    let (service_accounts, w_service_accounts) = reflector::store();
    let (network_policies, w_network_policies) = reflector::store();
    let (pdbs, w_pdbs) = reflector::store();
    let (pods, w_pods) = reflector::store();
    let synced = Synced::default();
    let caches = Caches {
        servers,
        policies,
        plugins,
        runtime_classes,
        deployments,
        services,
        config_maps,
        service_accounts,
        network_policies,
        pdbs,
        pods,
        synced: synced.clone(),
        secrets: SecretCache::default(),
        applied: Default::default(),
        status_written: Default::default(),
    };
    let writers = Writers {
        servers: w_servers,
        policies: w_policies,
        plugins: w_plugins,
        runtime_classes: w_runtime_classes,
        deployments: w_deployments,
        services: w_services,
        config_maps: w_config_maps,
        service_accounts: w_service_accounts,
        network_policies: w_network_policies,
        pdbs: w_pdbs,
        pods: w_pods,
        synced,
    };
    (caches, writers)
}

/// A readable object of a guarded store; an unreadable one as its error message.
fn readable<K: Clone>(obj: &Guarded<K>) -> Result<K, String> {
    obj.0.as_ref().cloned().map_err(|e| e.error.clone())
}

impl Caches {
    /// Resolves once every store has been filled by its first list (any number of waiters).
    pub async fn ready(&self) {
        self.synced.wait().await;
    }

    /// The policy `name` in `ns`: None when absent, Err when this operator cannot read it.
    pub fn policy(&self, ns: &str, name: &str) -> Option<Result<SecurityPolicy, String>> {
        self.policies.get(&ObjectRef::new(name).within(ns)).map(|p| readable(&p))
    }

    /// The readable plugins of `ns`.
    pub fn plugins(&self, ns: &str) -> Vec<Plugin> {
        self.plugins
            .state_filter(|p| p.namespace().as_deref() == Some(ns))
            .iter()
            .filter_map(|p| readable(p).ok())
            .collect()
    }

    /// Why Plugin `name` of `ns` cannot be read, when it exists but cannot.
    pub fn unreadable_plugin(&self, ns: &str, name: &str) -> Option<String> {
        self.plugins.get(&ObjectRef::new(name).within(ns)).and_then(|p| readable(&p).err())
    }

    /// The readable servers of `ns`.
    pub fn servers(&self, ns: &str) -> Vec<McpServer> {
        self.servers
            .state_filter(|s| s.namespace().as_deref() == Some(ns))
            .iter()
            .filter_map(|s| readable(s).ok())
            .collect()
    }

    /// Whether the RuntimeClass `name` exists.
    pub fn runtime_class_exists(&self, name: &str) -> bool {
        self.runtime_classes.get(&ObjectRef::new(name)).is_some()
    }

    /// The Deployment `name` in `ns`, as cached.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<CachedDeployment> {
        self.deployments.get(&ObjectRef::new(name).within(ns)).map(|d| (*d).clone())
    }

    /// The pods of `ns` whose labels include every one of `selector` (which names an instance).
    pub fn pods(&self, ns: &str, selector: &BTreeMap<String, String>) -> Vec<CachedPod> {
        let key = selector.get(LABEL_INSTANCE).map(|i| instance_key(Some(ns), i));
        self.pods
            .state_filter(|p| {
                key.is_none_or(|k| p.metadata.instance_key == k)
                    && p.metadata.namespace.as_deref() == Some(ns)
                    && p.metadata.selected_by(selector)
            })
            .iter()
            .map(|p| (**p).clone())
            .collect()
    }

    /// Decides whether `desired` (carrying its applied-hash annotation) must be applied, given
    /// the cached child's metadata. Records the cached child as the baseline when it already
    /// carries the desired hash, so that a later change by someone else is noticed.
    pub fn needs_apply(&self, key: &str, desired_hash: &str, cached: Option<&ChildMeta>) -> Decision {
        let mut applied = self.applied.lock().expect("applied lock");
        let decision = apply_decision(desired_hash, cached, applied.get(key), Instant::now());
        if let (Decision::Skip, Some(meta)) = (&decision, cached) {
            applied.entry(key.to_string()).or_insert_with(|| Baseline {
                hash: desired_hash.to_string(),
                marker: marker(meta),
                applied_at: None,
            });
        }
        decision
    }

    /// Records what the API server returned for an applied child.
    pub fn applied(&self, key: &str, hash: &str, stored: &ObjectMeta) {
        let marker = version_marker(stored.generation, stored.resource_version.as_deref());
        let baseline = Baseline { hash: hash.to_string(), marker, applied_at: Some(Instant::now()) };
        self.applied.lock().expect("applied lock").insert(key.to_string(), baseline);
    }

    /// Forgets every child of a deleted server.
    pub fn forget(&self, ns: &str, server: &str) {
        let prefix = format!("/{ns}/");
        self.applied.lock().expect("applied lock").retain(|k, _| {
            !(k.contains(&prefix)
                && k.rsplit('/').next().is_some_and(|n| n == server || n.starts_with(&format!("{server}-"))))
        });
        self.status_written.lock().expect("status lock").remove(&format!("{ns}/{server}"));
    }

    /// Records the resourceVersion of a server after its status was written.
    pub fn status_written(&self, ns: &str, name: &str, resource_version: Option<String>) {
        if let Some(rv) = resource_version.and_then(|v| v.parse().ok()) {
            self.status_written.lock().expect("status lock").insert(format!("{ns}/{name}"), rv);
        }
    }

    /// Whether the cached `server` predates the operator's own last status write (its watch
    /// event is on the way; a reconcile now would compare against an outdated status).
    pub fn server_is_stale(&self, server: &McpServer) -> bool {
        let key = format!("{}/{}", server.namespace().unwrap_or_default(), server.name_any());
        let written = self.status_written.lock().expect("status lock").get(&key).copied();
        let cached = server.resource_version().and_then(|v| v.parse::<u64>().ok());
        matches!((written, cached), (Some(w), Some(c)) if c < w)
    }
}

/// The metadata of the cached children of `server` (by the managed-by and instance labels) in
/// `ns`, out of any store. Only the matches are copied out (a reconcile does not clone every
/// cached object's handle of a kind to find its few).
pub fn children_of<K>(store: &Store<K>, ns: &str, server: &str) -> Vec<ChildMeta>
where
    K: reflector::Lookup + HasChildMeta + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let key = instance_key(Some(ns), server);
    store
        .state_filter(|o| {
            let m = o.child_meta();
            m.instance_key == key
                && m.managed
                && m.namespace.as_deref() == Some(ns)
                && m.label(LABEL_INSTANCE) == Some(server)
        })
        .iter()
        .map(|o| o.child_meta().clone())
        .collect()
}

/// What to do with a desired child.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Apply it.
    Apply,
    /// The cached child is what was applied and nobody changed it since: skip.
    Skip,
    /// Applied moments ago and not in the cache yet: skip, and look again shortly.
    Lagging,
}

/// The version of a child that changes when its desired state does: the generation where the
/// kind has one (a Deployment's status updates do not count), else the resourceVersion.
pub fn marker(meta: &ChildMeta) -> String {
    version_marker(meta.generation, meta.resource_version.as_deref())
}

/// [`marker`] from the generation and resourceVersion themselves.
fn version_marker(generation: Option<i64>, resource_version: Option<&str>) -> String {
    match generation {
        Some(g) => format!("g{g}"),
        None => format!("rv{}", resource_version.unwrap_or("")),
    }
}

/// The pure decision behind [`Caches::needs_apply`].
pub fn apply_decision(
    desired_hash: &str,
    cached: Option<&ChildMeta>,
    baseline: Option<&Baseline>,
    now: Instant,
) -> Decision {
    let Some(meta) = cached else {
        // Just applied with this very hash: the cache has not caught up yet. Missing for longer
        // (deleted by someone): applied again.
        let recent = baseline
            .is_some_and(|b| b.hash == desired_hash && b.applied_at.is_some_and(|t| now.duration_since(t) < CACHE_LAG));
        return if recent { Decision::Lagging } else { Decision::Apply };
    };
    if meta.deleting {
        // Going away: its deletion brings the server back here, and it is applied anew.
        return Decision::Skip;
    }
    // The cache still holds the version from before the operator's own apply of moments ago.
    let lagging = baseline.is_some_and(|b| {
        b.hash == desired_hash
            && b.applied_at.is_some_and(|t| now.duration_since(t) < CACHE_LAG)
            && version_number(&b.marker) > version_number(&marker(meta))
    });
    if lagging {
        return Decision::Lagging;
    }
    if meta.hash.as_deref() != Some(desired_hash) {
        return Decision::Apply;
    }
    match baseline {
        // Someone else changed what the operator applied (an edit, a `kubectl scale` of the
        // Deployment): the operator's fields are applied again.
        Some(b) if b.hash == desired_hash && b.marker != marker(meta) => Decision::Apply,
        _ => Decision::Skip,
    }
}

fn version_number(marker: &str) -> u64 {
    marker.trim_start_matches(['g', 'r', 'v']).parse().unwrap_or(0)
}

/// The hash recorded on a child: of the object as it will be applied, without the annotation.
pub fn applied_hash<K: serde::Serialize>(obj: &K) -> String {
    let bytes = serde_json::to_vec(obj).expect("objects serialize");
    crate::build::hex(&Sha256::digest(&bytes))[..16].to_string()
}

/// `obj` with its applied-hash annotation set; returns the hash too.
pub fn with_applied_hash<K: Resource + Clone + serde::Serialize>(obj: &K) -> (K, String) {
    let mut obj = obj.clone();
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove(ANNOTATION_APPLIED);
        if a.is_empty() {
            obj.meta_mut().annotations = None;
        }
    }
    let hash = applied_hash(&obj);
    obj.annotations_mut().insert(ANNOTATION_APPLIED.into(), hash.clone());
    (obj, hash)
}

/// The labels read from cached children and pods: the owning server's ([`children_of`],
/// `owning_server`), the server pod selector's, and a plugin workload's plugin.
const READ_LABELS: [&str; 5] = [LABEL_MANAGED_BY, LABEL_INSTANCE, LABEL_NAME, LABEL_COMPONENT, LABEL_PLUGIN];

/// The Secrets named by SecurityPolicies, as last read (with `get`): absent ones as `None`.
#[derive(Default)]
pub struct SecretCache {
    entries: Mutex<HashMap<(String, String), Option<Secret>>>,
}

impl SecretCache {
    /// The Secrets `names` in `ns`, reading from the API server only those never read yet.
    pub async fn get(
        &self,
        client: &kube::Client,
        ns: &str,
        names: &BTreeSet<String>,
    ) -> kube::Result<BTreeMap<String, Secret>> {
        let missing: Vec<String> = {
            let entries = self.entries.lock().expect("secret cache lock");
            names.iter().filter(|n| !entries.contains_key(&(ns.to_string(), (*n).clone()))).cloned().collect()
        };
        if !missing.is_empty() {
            self.read(client, ns, &missing).await?;
        }
        let entries = self.entries.lock().expect("secret cache lock");
        Ok(names
            .iter()
            .filter_map(|n| entries.get(&(ns.to_string(), n.clone())).cloned().flatten().map(|s| (n.clone(), s)))
            .collect())
    }

    /// Reads `names` from the API server; true when any of them changed (resourceVersion,
    /// appeared or disappeared) since it was last read.
    pub async fn refresh(&self, client: &kube::Client, ns: &str, names: &BTreeSet<String>) -> kube::Result<bool> {
        let names: Vec<String> = names.iter().cloned().collect();
        self.read(client, ns, &names).await
    }

    async fn read(&self, client: &kube::Client, ns: &str, names: &[String]) -> kube::Result<bool> {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let mut changed = false;
        for name in names {
            let secret = api.get_opt(name).await?;
            changed |= self.put(ns, name, secret);
        }
        Ok(changed)
    }

    /// Records what is known of a Secret (read or written); true when it differs from before.
    pub fn put(&self, ns: &str, name: &str, secret: Option<Secret>) -> bool {
        let mut entries = self.entries.lock().expect("secret cache lock");
        let key = (ns.to_string(), name.to_string());
        let version = |s: &Option<Secret>| s.as_ref().map(|s| s.resource_version());
        let changed = entries.get(&key).is_some_and(|old| version(old) != version(&secret));
        entries.insert(key, secret);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(hash: Option<&str>, generation: Option<i64>, rv: &str) -> ChildMeta {
        ChildMeta {
            name: "s".into(),
            hash: hash.map(Into::into),
            generation,
            resource_version: Some(rv.into()),
            ..Default::default()
        }
    }

    fn seen(hash: &str, marker: &str) -> Baseline {
        Baseline { hash: hash.into(), marker: marker.into(), applied_at: None }
    }

    fn applied_at(hash: &str, marker: &str, at: Instant) -> Baseline {
        Baseline { hash: hash.into(), marker: marker.into(), applied_at: Some(at) }
    }

    #[test]
    fn a_missing_or_different_child_is_applied() {
        let now = Instant::now();
        assert_eq!(apply_decision("h1", None, None, now), Decision::Apply);
        assert_eq!(apply_decision("h1", Some(&meta(None, Some(1), "5")), None, now), Decision::Apply);
        assert_eq!(apply_decision("h1", Some(&meta(Some("h0"), Some(1), "5")), None, now), Decision::Apply);
    }

    #[test]
    fn an_unchanged_child_is_skipped_until_someone_else_changes_it() {
        let now = Instant::now();
        let cached = meta(Some("h1"), Some(3), "5");
        assert_eq!(apply_decision("h1", Some(&cached), None, now), Decision::Skip, "first sight: trusted");
        let baseline = seen("h1", "g3");
        assert_eq!(apply_decision("h1", Some(&cached), Some(&baseline), now), Decision::Skip);
        // A status update changes the resourceVersion, not the generation.
        let status_update = meta(Some("h1"), Some(3), "9");
        assert_eq!(apply_decision("h1", Some(&status_update), Some(&baseline), now), Decision::Skip);
        // `kubectl scale deployment` or an edit: the generation moved.
        let scaled = meta(Some("h1"), Some(4), "9");
        assert_eq!(apply_decision("h1", Some(&scaled), Some(&baseline), now), Decision::Apply);
        // Kinds without a generation compare resourceVersions.
        let cm = seen("h1", "rv5");
        assert_eq!(apply_decision("h1", Some(&meta(Some("h1"), None, "5")), Some(&cm), now), Decision::Skip);
        assert_eq!(apply_decision("h1", Some(&meta(Some("h1"), None, "6")), Some(&cm), now), Decision::Apply);
    }

    #[test]
    fn a_cache_behind_the_operators_own_apply_is_waited_for_briefly() {
        let now = Instant::now();
        let just = applied_at("h2", "g4", now);
        // Not in the cache yet, or still the version before the apply (old hash, older generation).
        assert_eq!(apply_decision("h2", None, Some(&just), now), Decision::Lagging);
        assert_eq!(apply_decision("h2", Some(&meta(Some("h1"), Some(3), "5")), Some(&just), now), Decision::Lagging);
        assert_eq!(apply_decision("h2", Some(&meta(Some("h2"), Some(4), "7")), Some(&just), now), Decision::Skip);
        // Still missing long after: deleted by someone, applied again.
        let later = now + CACHE_LAG;
        assert_eq!(apply_decision("h2", None, Some(&just), later), Decision::Apply);
        // A different desired object is applied whatever the cache holds.
        assert_eq!(apply_decision("h3", None, Some(&just), now), Decision::Apply);
    }

    #[test]
    fn a_child_being_deleted_is_left_to_its_deletion() {
        let mut m = meta(Some("h0"), Some(1), "5");
        m.deleting = true;
        assert_eq!(apply_decision("h1", Some(&m), None, Instant::now()), Decision::Skip);
    }

    #[test]
    fn the_cache_records_baselines_and_what_was_applied() {
        let (caches, _writers) = caches();
        let cached = meta(Some("h1"), Some(3), "5");
        assert_eq!(caches.needs_apply("Deployment/ns/a", "h1", Some(&cached)), Decision::Skip);
        // Someone scaled it: generation 4 with the same annotation.
        let scaled = meta(Some("h1"), Some(4), "6");
        assert_eq!(caches.needs_apply("Deployment/ns/a", "h1", Some(&scaled)), Decision::Apply);
        let stored = ObjectMeta { generation: Some(5), resource_version: Some("7".into()), ..Default::default() };
        caches.applied("Deployment/ns/a", "h1", &stored);
        let now_cached = meta(Some("h1"), Some(5), "8");
        assert_eq!(caches.needs_apply("Deployment/ns/a", "h1", Some(&now_cached)), Decision::Skip);
        caches.forget("ns", "a");
        let moved = meta(Some("h1"), Some(9), "9");
        assert_eq!(caches.needs_apply("Deployment/ns/a", "h1", Some(&moved)), Decision::Skip, "forgotten");
    }

    #[test]
    fn a_cached_server_older_than_the_last_status_write_is_stale() {
        let (caches, _writers) = caches();
        let server = |rv: &str| -> McpServer {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "mcp.n-takatsu.dev/v1alpha1", "kind": "MCPServer",
                "metadata": {"name": "s", "namespace": "ns", "resourceVersion": rv}, "spec": {}
            }))
            .unwrap()
        };
        assert!(!caches.server_is_stale(&server("10")), "nothing written yet");
        caches.status_written("ns", "s", Some("12".into()));
        assert!(caches.server_is_stale(&server("10")));
        assert!(!caches.server_is_stale(&server("12")));
        assert!(!caches.server_is_stale(&server("15")), "changed since by someone: reconcile");
    }

    #[test]
    fn the_hash_ignores_its_own_annotation_and_follows_the_object() {
        let cm = ConfigMap {
            metadata: ObjectMeta { name: Some("c".into()), ..Default::default() },
            data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
            ..Default::default()
        };
        let (annotated, hash) = with_applied_hash(&cm);
        assert_eq!(annotated.annotations()[ANNOTATION_APPLIED], hash);
        assert_eq!(with_applied_hash(&annotated).1, hash, "re-hashing an annotated object is stable");
        let mut other = cm.clone();
        other.data.as_mut().unwrap().insert("k".into(), "w".into());
        assert_ne!(with_applied_hash(&other).1, hash);
    }

    #[test]
    fn cached_metadata_keeps_what_the_decisions_read() {
        let full = ObjectMeta {
            name: Some("a".into()),
            namespace: Some("ns".into()),
            uid: Some("u".into()),
            labels: Some(BTreeMap::from([
                ("l".to_string(), "v".to_string()),
                (LABEL_INSTANCE.to_string(), "s".to_string()),
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                (ANNOTATION_APPLIED.to_string(), "h1".to_string()),
                ("deployment.kubernetes.io/revision".to_string(), "3".to_string()),
            ])),
            generation: Some(4),
            resource_version: Some("77".into()),
            deletion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default())),
            ..Default::default()
        };
        let m = ChildMeta::from(full);
        assert_eq!((m.name.as_str(), m.namespace.as_deref()), ("a", Some("ns")));
        assert_eq!((m.hash.as_deref(), m.generation, m.resource_version.as_deref()), (Some("h1"), Some(4), Some("77")));
        assert!(m.deleting);
        assert_eq!(marker(&m), "g4");
        assert_eq!((m.label(LABEL_INSTANCE), m.label(LABEL_MANAGED_BY)), (Some("s"), Some(MANAGED_BY)));
        assert_eq!((m.label("l"), m.label(LABEL_NAME)), (None, None), "other labels are not kept");
        let other = ChildMeta::from(ObjectMeta {
            labels: Some(BTreeMap::from([(LABEL_MANAGED_BY.to_string(), "helm".to_string())])),
            ..Default::default()
        });
        assert_eq!(other.label(LABEL_MANAGED_BY), None, "managed by someone else");
        assert!(m.selected_by(&BTreeMap::from([(LABEL_INSTANCE.to_string(), "s".to_string())])));
        assert!(!m.selected_by(&BTreeMap::from([(LABEL_INSTANCE.to_string(), "t".to_string())])));
        assert!(!m.selected_by(&BTreeMap::from([("l".to_string(), "v".to_string())])), "not kept, never selected");
    }

    #[test]
    fn children_are_found_by_namespace_managed_by_and_instance() {
        let (caches, mut writers) = caches();
        let child = |name: &str, ns: &str, instance: &str, manager: &str| -> CachedChild<Service> {
            PartialObjectMeta::<Service> {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some(ns.into()),
                    labels: Some(BTreeMap::from([
                        (LABEL_INSTANCE.to_string(), instance.to_string()),
                        (LABEL_MANAGED_BY.to_string(), manager.to_string()),
                    ])),
                    ..Default::default()
                },
                ..Default::default()
            }
            .into()
        };
        for c in [
            child("s", "ns", "s", MANAGED_BY),
            child("s-plugin", "ns", "s", MANAGED_BY),
            child("t", "ns", "t", MANAGED_BY),
            child("s", "other", "s", MANAGED_BY),
            child("x", "ns", "s", "helm"),
        ] {
            writers.services.apply_watcher_event(&kube::runtime::watcher::Event::Apply(c));
        }
        let mut names: Vec<String> = children_of(&caches.services, "ns", "s").into_iter().map(|m| m.name).collect();
        names.sort();
        assert_eq!(names, ["s", "s-plugin"]);
        let key = ObjectRef::<CachedChild<Service>>::new("t").within("ns");
        assert_eq!(caches.services.get(&key).map(|c| c.metadata.name.clone()).as_deref(), Some("t"));
    }

    #[test]
    fn secret_versions_changes_are_reported() {
        let cache = SecretCache::default();
        let s = |rv: &str| Secret {
            metadata: ObjectMeta { name: Some("x".into()), resource_version: Some(rv.into()), ..Default::default() },
            ..Default::default()
        };
        assert!(!cache.put("ns", "x", Some(s("1"))), "first read is not a change");
        assert!(!cache.put("ns", "x", Some(s("1"))));
        assert!(cache.put("ns", "x", Some(s("2"))));
        assert!(cache.put("ns", "x", None), "deleted");
        assert!(cache.put("ns", "x", Some(s("3"))), "back");
    }

    #[test]
    fn a_cached_deployment_is_read_without_its_pod_template() {
        let full: Deployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns", "generation": 2},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"observedGeneration": 2, "readyReplicas": 1}
        }))
        .unwrap();
        let watched: WatchedDeployment = serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert!(!serde_json::to_string(&watched).unwrap().contains("template"), "not even read");
        let read = CachedDeployment::from(watched);
        assert_eq!(read, CachedDeployment::from(full));
        assert_eq!((read.spec.replicas, read.status.as_ref().unwrap().ready_replicas), (Some(3), Some(1)));
        assert_eq!(read.metadata.generation, Some(2));
        assert_eq!(
            (<CachedDeployment as reflector::Lookup>::kind(&()), <CachedDeployment as reflector::Lookup>::plural(&())),
            ("Deployment".into(), "deployments".into())
        );
        assert_eq!(WatchedDeployment::url_path(&(), Some("ns")), Deployment::url_path(&(), Some("ns")));
        assert_eq!(WatchedPod::url_path(&(), Some("ns")), Pod::url_path(&(), Some("ns")));
        assert_eq!(reflector::Lookup::resource_version(&read), None, "store keys carry no resourceVersion");
    }

    #[test]
    fn a_servers_pods_are_found_by_namespace_and_every_selector_label() {
        let (caches, mut writers) = caches();
        let pod = |name: &str, ns: &str, instance: &str, component: &str| -> CachedPod {
            let mut labels = crate::build::server_selector(instance);
            labels.insert(LABEL_COMPONENT.to_string(), component.to_string());
            serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": ns, "labels": labels}}))
                .unwrap()
        };
        for p in [
            pod("s-1", "ns", "s", "server"),
            pod("s-2", "ns", "s", "server"),
            pod("s-plugin", "ns", "s", "plugin"),
            pod("t-1", "ns", "t", "server"),
            pod("s-1", "other", "s", "server"),
        ] {
            writers.pods.apply_watcher_event(&kube::runtime::watcher::Event::Apply(p));
        }
        let found = |ns: &str, instance: &str| {
            let mut names: Vec<String> = caches
                .pods(ns, &crate::build::server_selector(instance))
                .into_iter()
                .map(|p| format!("{}/{}", p.metadata.namespace.unwrap_or_default(), p.metadata.name))
                .collect();
            names.sort();
            names
        };
        assert_eq!(found("ns", "s"), ["ns/s-1", "ns/s-2"]);
        assert_eq!(found("other", "s"), ["other/s-1"]);
        assert_eq!(found("ns", "u"), Vec::<String>::new());
    }

    #[test]
    fn trimmed_pods_keep_what_status_and_gateway_reads_need() {
        // As a watch reads it: the spec is not even deserialized.
        let pod: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"a": "b", "app.kubernetes.io/instance": "s"}, "annotations": {"x": "y"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "hostIP": "1.2.3.4",
                       "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "c", "ready": false, "restartCount": 3, "image": "i", "imageID": "sha",
                          "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "m".repeat(2000)}}}]}
        }))
        .unwrap();
        let trimmed = pod;
        let st = trimmed.status.as_ref().unwrap();
        assert_eq!((st.phase.as_deref(), st.pod_ip.as_deref()), (Some("Running"), Some("10.0.0.5")));
        let ready = CachedPodCondition { type_: "Ready".into(), status: "True".into() };
        assert_eq!(st.conditions, Some(vec![ready]), "the Ready condition only");
        let (container, reason, message) = super::super::status::stuck_container(&trimmed).unwrap();
        assert_eq!((container, reason), ("c", "CrashLoopBackOff"));
        assert!(message.len() <= MAX_WAITING_MESSAGE && message.starts_with("mmm"), "the message is kept, cut");
        assert_eq!((trimmed.metadata.label(LABEL_INSTANCE), trimmed.metadata.label("a")), (Some("s"), None));
        let mine = crate::build::server_selector("s");
        assert!(mine.keys().all(|k| READ_LABELS.contains(&k.as_str())), "the pod selector's labels are kept");
        let plugin = crate::build::plugin_selector("s", "p");
        assert!(plugin.keys().all(|k| READ_LABELS.contains(&k.as_str())), "a plugin pod's labels are kept");
        assert_eq!(super::super::gateway_status::pick_pod(std::slice::from_ref(&trimmed)).as_deref(), Some("10.0.0.5"));
    }
}
