//! Prometheus metrics of the operator (served on :8080/metrics).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Instant;

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// mcpserver, plugin or securitypolicy.
    pub controller: String,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// mcpserver, plugin or securitypolicy.
    pub controller: String,
    /// The error's stable label.
    pub reason: String,
}

/// Labels of the objects-by-phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// MCPServer, Plugin or SecurityPolicy.
    pub kind: String,
    /// The object's status.phase ("Unknown" before the first status).
    pub phase: String,
}

/// Labels of an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// get, list, watch, create, update, patch, delete (Kubernetes' verbs).
    pub verb: String,
    /// The resource (plural, e.g. deployments, leases, mcpservers; "" when none).
    pub resource: String,
}

/// The resource a request is about, from its path (`/api/v1/...` or `/apis/GROUP/VERSION/...`,
/// then `[namespaces/NS/]RESOURCE[/NAME[/SUB]]`); "" when none.
pub fn resource_of(uri: &http::Uri) -> String {
    match resource_path(uri).as_slice() {
        ["namespaces", _, resource, ..] => resource.to_string(),
        [resource, ..] => resource.to_string(),
        [] => String::new(),
    }
}

/// The path segments after `/api/v1` or `/apis/GROUP/VERSION`: `[namespaces/NS/]RESOURCE[/NAME[/SUB]]`.
fn resource_path(uri: &http::Uri) -> Vec<&str> {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let skip = match segments.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => return vec![],
    };
    segments.get(skip..).unwrap_or_default().to_vec()
}

/// The Kubernetes verb of a request to the API server, from its method and path.
pub fn verb_of(method: &http::Method, uri: &http::Uri) -> &'static str {
    match *method {
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        http::Method::GET if uri.query().is_some_and(|q| q.split('&').any(|p| p == "watch=true")) => "watch",
        http::Method::GET => match resource_path(uri).as_slice() {
            ["namespaces", _, _resource] => "list",
            ["namespaces", _, _resource, _name, ..] => "get",
            [_resource] => "list",
            _ => "get",
        },
        _ => "other",
    }
}

/// All metrics, registered under the `mcp_operator` prefix.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles started.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciles that failed, by error reason.
    pub failures: Family<FailureLabels, Counter>,
    /// Reconcile durations.
    pub duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    /// Objects by kind and phase, refreshed on every scrape.
    pub objects: Family<PhaseLabels, Gauge>,
    /// 1 while this replica leads: elected, and its Lease seen renewed recently (the fence is open).
    pub leader: Gauge,
    /// Requests made to the API server, by verb.
    pub kube_requests: Family<VerbLabels, Counter>,
    /// Events dropped because the queue of Events to publish was full.
    pub events_dropped: Counter,
    /// Events queued or being published.
    pub events_queued: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mcp_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 12))) as fn() -> Histogram,
        );
        let objects = Family::<PhaseLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register("reconcile", "Reconciles started", reconciles.clone());
        registry.register("reconcile_failures", "Reconciles that failed, by reason", failures.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration", duration.clone());
        registry.register("objects", "Objects by kind and phase", objects.clone());
        registry.register("leader", "1 while this replica is the leader and its Lease is current", leader.clone());
        let kube_requests = Family::<VerbLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Requests made to the Kubernetes API server, by verb",
            kube_requests.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events not published because the queue of Events to publish was full",
            events_dropped.clone(),
        );
        let events_queued = Gauge::default();
        registry.register("events_queued", "Events queued or being published", events_queued.clone());
        Self { reconciles, failures, duration, objects, leader, kube_requests, events_dropped, events_queued, registry }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile_started(&self, controller: &str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels { controller: controller.to_string() };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer { metrics: self, labels, start: Instant::now() }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, controller: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels { controller: controller.to_string(), reason: reason.to_string() })
            .inc();
    }

    /// Replaces the objects-by-phase gauge with these counts.
    pub fn set_phases(&self, counts: impl IntoIterator<Item = (String, String, i64)>) {
        self.objects.clear();
        for (kind, phase, n) in counts {
            self.objects.get_or_create(&PhaseLabels { kind, phase }).set(n);
        }
    }

    /// Counts a request to the API server.
    pub fn kube_request(&self, verb: &str, resource: String) {
        self.kube_requests.get_or_create(&VerbLabels { verb: verb.to_string(), resource }).inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.duration.get_or_create(&self.labels).observe(self.start.elapsed().as_secs_f64());
    }
}

/// A tower layer that counts every request of the Kubernetes client in [`Metrics::kube_requests`].
#[derive(Clone)]
pub struct CountRequestsLayer(pub std::sync::Arc<Metrics>);

impl<S> tower::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountRequests { inner, metrics: self.0.clone() }
    }
}

/// See [`CountRequestsLayer`].
#[derive(Clone)]
pub struct CountRequests<S> {
    inner: S,
    metrics: std::sync::Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for CountRequests<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.metrics.kube_request(verb_of(request.method(), request.uri()), resource_of(request.uri()));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_kubernetes_verb() {
        let verb = |m: &str, u: &str| verb_of(&m.parse().unwrap(), &u.parse().unwrap());
        assert_eq!(verb("GET", "/apis/apps/v1/namespaces/default/deployments?labelSelector=a%3Db"), "list");
        assert_eq!(verb("GET", "/apis/apps/v1/deployments?watch=true&resourceVersion=5"), "watch");
        assert_eq!(verb("GET", "/apis/apps/v1/namespaces/default/deployments/web"), "get");
        assert_eq!(verb("GET", "/api/v1/namespaces/default/services/web:admin/proxy/status"), "get");
        assert_eq!(verb("GET", "/api/v1/namespaces/default"), "get");
        assert_eq!(verb("GET", "/apis/node.k8s.io/v1/runtimeclasses"), "list");
        assert_eq!(verb("GET", "/apis/node.k8s.io/v1/runtimeclasses/kata"), "get");
        assert_eq!(verb("PATCH", "/apis/apps/v1/namespaces/default/deployments/web"), "patch");
        assert_eq!(verb("POST", "/apis/events.k8s.io/v1/namespaces/default/events"), "create");
        assert_eq!(verb("PUT", "/apis/coordination.k8s.io/v1/namespaces/x/leases/l"), "update");
        assert_eq!(verb("DELETE", "/api/v1/namespaces/default/services/web"), "delete");
        let resource = |u: &str| resource_of(&u.parse().unwrap());
        assert_eq!(resource("/apis/coordination.k8s.io/v1/namespaces/x/leases/l"), "leases");
        assert_eq!(resource("/apis/apps/v1/deployments?watch=true"), "deployments");
        assert_eq!(resource("/api/v1/namespaces/default/services/web:admin/proxy/status"), "services");
        assert_eq!(resource("/api/v1/namespaces/default"), "namespaces");
        assert_eq!(resource("/version"), "");
    }

    #[test]
    fn exposes_counters_histograms_and_phases() {
        let m = Metrics::default();
        drop(m.reconcile_started("mcpserver"));
        m.reconcile_failed("mcpserver", "Kube");
        m.set_phases([("MCPServer".into(), "Running".into(), 3)]);
        m.set_phases([("MCPServer".into(), "Pending".into(), 1)]);
        let text = m.encode();
        assert!(text.contains(r#"mcp_operator_reconcile_total{controller="mcpserver"} 1"#), "{text}");
        assert!(text.contains(r#"mcp_operator_reconcile_failures_total{controller="mcpserver",reason="Kube"} 1"#));
        assert!(text.contains(r#"mcp_operator_reconcile_duration_seconds_count{controller="mcpserver"} 1"#));
        assert!(text.contains(r#"mcp_operator_objects{kind="MCPServer",phase="Pending"} 1"#));
        assert!(!text.contains(r#"phase="Running""#), "a refresh replaces old phases");
    }
}
