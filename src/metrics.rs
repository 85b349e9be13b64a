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
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
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
        registry.register("leader", "1 while this replica is the leader", leader.clone());
        Self { reconciles, failures, duration, objects, leader, registry }
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

#[cfg(test)]
mod tests {
    use super::*;

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
