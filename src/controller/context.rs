//! State shared by every reconcile.

use crate::build::Defaults;
use crate::metrics::Metrics;
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which namespaces the operator watches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (cluster-wide install).
    #[default]
    All,
    /// One namespace (a namespace-scoped install runs one controller set per namespace).
    Namespace(String),
}

impl Scope {
    /// An Api for this scope.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match self {
            Self::All => Api::all(client.clone()),
            Self::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

/// Shared by the controllers.
#[derive(Clone)]
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Operator defaults that shape children.
    pub defaults: Defaults,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    events: super::events::Queue,
    failures: Arc<Mutex<HashMap<String, u32>>>,
    /// Read each server's gateway status (from its pods in the cluster, else through the API
    /// server proxy).
    pub gateway_status: bool,
    /// What the controllers read instead of the API server.
    pub caches: Arc<super::cache::Caches>,
    /// Asks the MCPServer controller to reconcile a server (a Secret its policy names changed).
    pub server_trigger:
        Option<futures::channel::mpsc::UnboundedSender<ObjectRef<super::Guarded<crate::api::McpServer>>>>,
    /// How gateway status documents are read.
    pub gateway_reader: super::gateway_status::Reader,
    /// How the watches fare (readiness and liveness).
    pub health: Arc<super::watch::WatchHealth>,
    /// Open while this replica may start reconciles (always, without leader election).
    pub fence: crate::leader::Fence,
}

fn events_queue(
    client: &Client,
    reporter: Reporter,
    metrics: &Metrics,
    pace: super::events::Pace,
) -> super::events::Queue {
    let publisher = super::events::Publisher::new(client.clone(), reporter);
    let (dropped, queued) = (metrics.events_dropped.clone(), metrics.events_queued.clone());
    super::events::Queue::start(publisher, pace, super::events::QUEUE_CAPACITY, dropped, queued)
}

fn failure_key<K: Resource<DynamicType = ()>>(controller: &str, obj: &ObjectRef<K>) -> String {
    format!("{controller}/{}/{}", obj.namespace.as_deref().unwrap_or(""), obj.name)
}

/// Backoff after the first failure of an object.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Longest backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Exponential backoff for the `failures`-th consecutive failure (1-based), capped.
pub fn backoff_delay(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

impl Context {
    /// A context whose Events are reported as `mcp-operator` from `instance` (the pod name) and
    /// published at `event_pace`.
    pub fn new(
        client: Client,
        defaults: Defaults,
        metrics: Arc<Metrics>,
        instance: Option<String>,
        event_pace: super::events::Pace,
    ) -> Self {
        let reporter = Reporter { controller: crate::consts::FIELD_MANAGER.into(), instance };
        let events = events_queue(&client, reporter, &metrics, event_pace);
        let gateway_reader = super::gateway_status::Reader::new(client.clone(), false, 8);
        Self {
            client,
            defaults,
            metrics,
            events,
            failures: Default::default(),
            gateway_status: false,
            caches: Arc::new(super::cache::caches().0),
            server_trigger: None,
            gateway_reader,
            health: Default::default(),
            fence: Default::default(),
        }
    }

    /// The queue this context's Events go through (to flush it at shutdown).
    pub fn events(&self) -> super::events::Queue {
        self.events.clone()
    }

    /// The same context reading `caches` (one set per watched scope).
    pub fn with_caches(mut self, caches: Arc<super::cache::Caches>) -> Self {
        self.caches = caches;
        self
    }

    /// Reads gateway status documents with `reader`.
    pub fn with_gateway_reader(mut self, reader: super::gateway_status::Reader) -> Self {
        self.gateway_reader = reader;
        self
    }

    /// Waits until this replica may start a reconcile: it leads (if elected) and its caches
    /// are filled.
    pub async fn may_reconcile(&self) {
        self.fence.wait().await;
        self.caches.ready().await;
    }

    /// Asks for a reconcile of every server of `ns` that names the SecurityPolicy `policy`.
    pub fn trigger_servers_of_policy(&self, ns: &str, policy: &str) {
        let Some(tx) = &self.server_trigger else { return };
        for server in self.caches.servers(ns) {
            if server.spec.security_policy.as_deref() == Some(policy) {
                let _ = tx.unbounded_send(ObjectRef::new(&server.name_any()).within(ns));
            }
        }
    }

    /// Turns reading the gateways' status documents on or off (off by default).
    pub fn with_gateway_status(mut self, on: bool) -> Self {
        self.gateway_status = on;
        self
    }

    /// Counts and logs a failed reconcile of `obj` and returns when to retry it: transient
    /// errors back off exponentially per object, so one broken object never slows the others.
    pub fn retry_after<K>(&self, controller: &str, obj: &K, err: &super::Error) -> kube::runtime::controller::Action
    where
        K: Resource<DynamicType = ()>,
    {
        self.metrics.reconcile_failed(controller, err.metric_label());
        let key = failure_key(controller, &ObjectRef::from_obj(obj));
        let delay = self.backoff(key.clone());
        tracing::warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
        kube::runtime::controller::Action::requeue(delay)
    }

    /// Records one more failure of `key` and returns how long to wait before retrying it.
    pub fn backoff(&self, key: String) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    /// Forgets the failures of an object after a successful reconcile.
    pub fn succeeded<K: Resource<DynamicType = ()>>(&self, controller: &str, obj: &ObjectRef<K>) {
        self.failures.lock().expect("backoff lock").remove(&failure_key(controller, obj));
    }

    /// Queues an Event on `obj` (published in the background, in order; see
    /// [`super::events::Queue`]).
    pub fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        self.events.send(ev, obj.object_ref(&()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let delays: Vec<u64> = (1..=10).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }
}
