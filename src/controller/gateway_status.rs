//! The gateway's status document (server identity, tools) and how it is merged into MCPServer
//! status. In the cluster the operator asks a ready server pod's admin port directly (bounded
//! concurrency, only when the pods changed or on a slow period); out of the cluster (a developer
//! running the binary against a cluster) it goes through the API server's service proxy.

use super::cache::CachedPod;
use crate::api::condition_types::MCP_READY;
use crate::api::{condition, set_condition, McpServer, McpServerStatus, ServerInfo};
use crate::build::gateway_ports;
use crate::consts::ADMIN_PORT_NAME;
use http_body_util::BodyExt;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The gateway's `/status` document: the contract crate's type, which the gateway writes.
pub use mcp_gateway_contract::status::StatusDocument as GatewayStatus;

/// How long one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// A server whose pods did not change is asked again after this long.
pub const SLOW_PERIOD: Duration = Duration::from_secs(300);

type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// Reads gateway status documents: from the pods (`direct`) or through the API server proxy.
#[derive(Clone)]
pub struct Reader {
    client: Client,
    direct: bool,
    http: Http,
    limit: Arc<tokio::sync::Semaphore>,
    /// Per server: the pods last asked and when.
    last: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

impl Reader {
    /// A reader; `direct` in the cluster, at most `concurrency` reads at a time.
    pub fn new(client: Client, direct: bool, concurrency: usize) -> Self {
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Self {
            client,
            direct,
            http,
            limit: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            last: Default::default(),
        }
    }

    /// Whether reads go to the pods directly.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Whether `server` is due a read: its ready pods changed, it was never read, the last read
    /// failed (`settled` false), or the slow period passed.
    pub fn due(&self, server: &McpServer, pods: &[CachedPod], settled: bool) -> bool {
        let key = format!("{}/{}", server.namespace().unwrap_or_default(), server.name_any());
        let last = self.last.lock().expect("gateway reads lock");
        is_due(last.get(&key), &pods_key(pods), settled, Instant::now())
    }

    /// Reads the status document of `server`, whose pods are `pods`.
    pub async fn read(&self, server: &McpServer, pods: &[CachedPod]) -> Result<GatewayStatus, String> {
        let key = format!("{}/{}", server.namespace().unwrap_or_default(), server.name_any());
        self.last.lock().expect("gateway reads lock").insert(key, (pods_key(pods), Instant::now()));
        let _permit = self.limit.acquire().await.map_err(|e| e.to_string())?;
        let read = async {
            if self.direct {
                self.read_pod(server, pods).await
            } else {
                self.read_proxy(server).await
            }
        };
        match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(result) => result,
            Err(_) => Err(format!("gateway status unavailable: no answer within {}s", READ_TIMEOUT.as_secs())),
        }
    }

    /// Forgets a deleted server.
    pub fn forget(&self, ns: &str, name: &str) {
        self.last.lock().expect("gateway reads lock").remove(&format!("{ns}/{name}"));
    }

    async fn read_pod(&self, server: &McpServer, pods: &[CachedPod]) -> Result<GatewayStatus, String> {
        let Some(ip) = pick_pod(pods) else {
            return Err("gateway status unavailable: no ready server pod to ask".into());
        };
        let port = gateway_ports(server.spec.port).admin;
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
        let uri: http::Uri = format!("http://{host}:{port}{}", mcp_gateway_contract::admin::STATUS)
            .parse()
            .map_err(|e| format!("gateway status unavailable: {e}"))?;
        let response = self.http.get(uri).await.map_err(|e| format!("gateway status unavailable: {e}"))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("gateway status unavailable: {e}"))?;
        if !status.is_success() {
            return Err(format!("gateway status unavailable: HTTP {status}"));
        }
        serde_json::from_slice(&body.to_bytes()).map_err(|e| format!("gateway status unreadable: {e}"))
    }

    async fn read_proxy(&self, server: &McpServer) -> Result<GatewayStatus, String> {
        let ns = server.namespace().unwrap_or_default();
        let path = format!(
            "/api/v1/namespaces/{ns}/services/{}:{ADMIN_PORT_NAME}/proxy{}",
            server.name_any(),
            mcp_gateway_contract::admin::STATUS
        );
        let request = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
        self.client.request::<GatewayStatus>(request).await.map_err(|e| format!("gateway status unavailable: {e}"))
    }
}

/// The ready pods' names and addresses, which change when the gateway to ask changes.
fn pods_key(pods: &[CachedPod]) -> String {
    let mut ready: Vec<String> = pods
        .iter()
        .filter(|p| is_ready(p))
        .map(|p| {
            format!("{}@{}", p.metadata.name, p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default())
        })
        .collect();
    ready.sort();
    ready.join(",")
}

fn is_ready(pod: &CachedPod) -> bool {
    !pod.metadata.deleting
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The address of the pod to ask: a ready one, the first by name (stable across reads).
pub fn pick_pod(pods: &[CachedPod]) -> Option<String> {
    let mut ready: Vec<&CachedPod> =
        pods.iter().filter(|p| is_ready(p) && p.status.as_ref().is_some_and(|s| s.pod_ip.is_some())).collect();
    ready.sort_by_key(|p| &p.metadata.name);
    ready.first().and_then(|p| p.status.as_ref()).and_then(|s| s.pod_ip.clone())
}

/// The pure rule of [`Reader::due`].
pub fn is_due(last: Option<&(String, Instant)>, pods: &str, settled: bool, now: Instant) -> bool {
    match last {
        None => true,
        Some((seen, at)) => !settled || seen != pods || now.duration_since(*at) >= SLOW_PERIOD,
    }
}

/// Keeps what the last read found (no read was due).
pub fn keep(status: &mut McpServerStatus, previous: &McpServerStatus, generation: Option<i64>) {
    status.server_info = previous.server_info.clone();
    status.tool_count = previous.tool_count;
    status.tools = previous.tools.clone();
    if let Some(c) = previous.conditions.iter().find(|c| c.type_ == MCP_READY) {
        let mut c = c.clone();
        c.observed_generation = generation;
        set_condition(&mut status.conditions, &previous.conditions, c);
    }
}

/// Merges what was learnt from the gateway (or why nothing was) into the status.
pub fn merge(
    status: &mut McpServerStatus,
    previous: &McpServerStatus,
    generation: Option<i64>,
    doc: Option<Result<GatewayStatus, String>>,
) {
    let (ok, reason, message) = match doc {
        None => {
            (None, "StatusNotRead", "the operator does not read gateway status (--gateway-status=false)".to_string())
        }
        Some(Err(e)) => (Some(false), "GatewayUnreachable", e),
        Some(Ok(doc)) if !doc.ready => (
            Some(false),
            "HandshakeFailing",
            doc.error.clone().unwrap_or_else(|| "the MCP initialize handshake with the server fails".into()),
        ),
        Some(Ok(doc)) => {
            let mut capabilities: Vec<String> = doc
                .capabilities
                .as_ref()
                .and_then(|c| c.as_object())
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            capabilities.sort();
            status.server_info = Some(ServerInfo {
                name: doc.name.clone(),
                version: doc.version.clone(),
                protocol_version: doc.protocol_version.clone(),
                capabilities,
            });
            let mut tools = doc.tools.clone();
            tools.sort();
            status.tool_count = Some(tools.len() as i32);
            status.tools = tools;
            let who = doc.name.clone().unwrap_or_else(|| "the server".into());
            (Some(true), "HandshakeSucceeded", format!("{who} answers MCP initialize; {} tool(s)", status.tools.len()))
        }
    };
    if ok != Some(true) {
        // Keep the last known identity and tools while the gateway cannot be asked.
        status.server_info = previous.server_info.clone();
        status.tool_count = previous.tool_count;
        status.tools = previous.tools.clone();
    }
    let state = match ok {
        Some(b) => b.into(),
        None => crate::api::ConditionStatus::Unknown,
    };
    set_condition(
        &mut status.conditions,
        &previous.conditions,
        condition(MCP_READY, state, reason, message, generation),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> GatewayStatus {
        serde_json::from_value(serde_json::json!({
            "ready": true, "name": "everything", "version": "2.0.0", "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}, "resources": {}, "logging": {}},
            "tools": ["echo", "add", "longRunningOperation"]
        }))
        .unwrap()
    }

    fn mcp_ready(s: &McpServerStatus) -> (String, String) {
        let c = s.conditions.iter().find(|c| c.type_ == MCP_READY).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn records_identity_and_sorted_tools() {
        let mut st = McpServerStatus::default();
        merge(&mut st, &McpServerStatus::default(), Some(1), Some(Ok(doc())));
        let info = st.server_info.clone().unwrap();
        assert_eq!((info.name.as_deref(), info.protocol_version.as_deref()), (Some("everything"), Some("2025-06-18")));
        assert_eq!(info.capabilities, vec!["logging", "resources", "tools"]);
        assert_eq!(st.tools, vec!["add", "echo", "longRunningOperation"]);
        assert_eq!(st.tool_count, Some(3));
        assert_eq!(mcp_ready(&st), ("True".into(), "HandshakeSucceeded".into()));
    }

    #[test]
    fn no_read_due_keeps_what_the_last_read_found() {
        let mut known = McpServerStatus::default();
        merge(&mut known, &McpServerStatus::default(), Some(1), Some(Ok(doc())));
        let mut st = McpServerStatus::default();
        keep(&mut st, &known, Some(1));
        assert_eq!(
            (st.tools.clone(), st.tool_count, st.server_info.clone()),
            (known.tools.clone(), known.tool_count, known.server_info.clone())
        );
        assert_eq!(mcp_ready(&st), ("True".into(), "HandshakeSucceeded".into()));
        assert_eq!(st.conditions, known.conditions, "transition time kept");
    }

    #[test]
    fn unreachable_keeps_the_last_known_tools() {
        let mut known = McpServerStatus::default();
        merge(&mut known, &McpServerStatus::default(), Some(1), Some(Ok(doc())));
        let mut st = McpServerStatus::default();
        merge(&mut st, &known, Some(1), Some(Err("gateway status unavailable: 503".into())));
        assert_eq!(st.tools, known.tools);
        assert_eq!(mcp_ready(&st), ("False".into(), "GatewayUnreachable".into()));
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> CachedPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_pod_asked_is_a_ready_one_with_an_address() {
        assert_eq!(pick_pod(&[]), None);
        assert_eq!(pick_pod(&[pod("a", Some("10.0.0.1"), false), pod("b", None, true)]), None);
        let pods =
            [pod("c", Some("10.0.0.3"), true), pod("b", Some("10.0.0.2"), true), pod("a", Some("10.0.0.1"), false)];
        assert_eq!(pick_pod(&pods).as_deref(), Some("10.0.0.2"), "the first ready pod by name");
    }

    #[test]
    fn a_read_is_due_when_pods_change_a_read_failed_or_the_slow_period_passed() {
        let now = Instant::now();
        let pods = [pod("a", Some("10.0.0.1"), true)];
        let key = pods_key(&pods);
        assert!(is_due(None, &key, true, now), "never read");
        let last = (key.clone(), now);
        assert!(!is_due(Some(&last), &key, true, now + Duration::from_secs(60)), "nothing changed");
        assert!(is_due(Some(&last), &key, false, now + Duration::from_secs(1)), "the last read failed");
        let moved = pods_key(&[pod("a", Some("10.0.0.9"), true)]);
        assert!(is_due(Some(&last), &moved, true, now + Duration::from_secs(1)), "the pod moved");
        assert!(is_due(Some(&last), &key, true, now + SLOW_PERIOD), "slow period");
        assert_ne!(pods_key(&[pod("a", Some("10.0.0.1"), false)]), key, "readiness counts");
    }

    #[test]
    fn failing_handshake_and_disabled_reads_are_distinct() {
        let mut st = McpServerStatus::default();
        let failing = GatewayStatus { ready: false, error: Some("connection refused".into()), ..Default::default() };
        merge(&mut st, &McpServerStatus::default(), Some(1), Some(Ok(failing)));
        assert_eq!(mcp_ready(&st), ("False".into(), "HandshakeFailing".into()));
        let mut off = McpServerStatus::default();
        merge(&mut off, &McpServerStatus::default(), Some(1), None);
        assert_eq!(mcp_ready(&off), ("Unknown".into(), "StatusNotRead".into()));
    }
}
