//! State shared by every reconcile.

use crate::build::Defaults;
use crate::metrics::Metrics;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::sync::Arc;

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
    recorder: Recorder,
}

impl Context {
    /// A context whose Events are reported as `mcp-operator` from `instance` (the pod name).
    pub fn new(client: Client, defaults: Defaults, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: crate::consts::FIELD_MANAGER.into(), instance };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, defaults, metrics, recorder }
    }

    /// Publishes an Event on `obj`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish Event");
        }
    }
}
