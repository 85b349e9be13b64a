//! Prometheus metrics of the gateway. Label values a client controls are bounded: methods outside
//! the MCP specification count as `other`, tools not in the server's tool list as `other`.

use crate::jsonrpc::method_metric_label;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    tool: String,
    status: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// All metrics, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    denials: Family<ReasonLabels, Counter>,
    rate_limited: Counter,
    /// Open MCP sessions (stdio children, or sessions seen through the proxy).
    pub sessions: Gauge,
    /// 1 while the MCP handshake with the server succeeds.
    pub upstream_ready: Gauge,
    known_tools: RwLock<HashSet<String>>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "MCP requests by method, tool, status and decision", requests.clone());
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register("request_duration_seconds", "Time to the response head", latency.clone());
        let denials = Family::<ReasonLabels, Counter>::default();
        registry.register("denials", "Requests refused by the policy, by reason", denials.clone());
        let rate_limited = Counter::default();
        registry.register("rate_limited", "Requests refused by the rate limit", rate_limited.clone());
        let sessions = Gauge::default();
        registry.register("sessions", "Open MCP sessions", sessions.clone());
        let upstream_ready = Gauge::default();
        registry.register(
            "upstream_ready",
            "1 while the MCP handshake with the server succeeds",
            upstream_ready.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            denials,
            rate_limited,
            sessions,
            upstream_ready,
            known_tools: RwLock::default(),
        }
    }

    /// The server's tool names (from the status handshake): only these become label values.
    pub fn set_known_tools(&self, tools: &[String]) {
        *self.known_tools.write().unwrap_or_else(|e| e.into_inner()) = tools.iter().cloned().collect();
    }

    fn tool_label(&self, tool: Option<&str>) -> String {
        match tool {
            None => String::new(),
            Some(t) if self.known_tools.read().unwrap_or_else(|e| e.into_inner()).contains(t) => t.to_string(),
            Some(_) => "other".to_string(),
        }
    }

    /// Count a finished request.
    pub fn observe(&self, method: &str, tool: Option<&str>, status: u16, decision: &str, took: Duration) {
        let method = method_metric_label(method).to_string();
        self.requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                tool: self.tool_label(tool),
                status: status.to_string(),
                decision: decision.to_string(),
            })
            .inc();
        self.latency.get_or_create(&MethodLabels { method }).observe(took.as_secs_f64());
    }

    /// Count a denial.
    pub fn deny(&self, reason: &str) {
        self.denials.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
        if reason == "rate_limited" {
            self.rate_limited.inc();
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_families_and_bounded_labels() {
        let m = Metrics::new();
        m.set_known_tools(&["echo".to_string()]);
        m.observe("tools/call", Some("echo"), 200, "allow", Duration::from_millis(2));
        m.observe("tools/call", Some("random-junk"), 200, "deny", Duration::from_millis(1));
        m.observe("made/up", None, 400, "deny", Duration::from_millis(1));
        m.deny("rate_limited");
        m.sessions.set(3);
        let text = m.encode();
        for needle in [
            r#"mcp_gateway_requests_total{method="tools/call",tool="echo",status="200",decision="allow"} 1"#,
            r#"mcp_gateway_requests_total{method="tools/call",tool="other",status="200",decision="deny"} 1"#,
            r#"mcp_gateway_requests_total{method="other",tool="",status="400",decision="deny"} 1"#,
            r#"mcp_gateway_denials_total{reason="rate_limited"} 1"#,
            "mcp_gateway_rate_limited_total 1",
            "mcp_gateway_sessions 3",
            "mcp_gateway_request_duration_seconds_bucket",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
