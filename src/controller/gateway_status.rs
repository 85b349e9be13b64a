//! The gateway's status document (server identity, tools), read through the API server's
//! service proxy so that it works in and out of the cluster, and merged into MCPServer status.

use crate::api::condition_types::MCP_READY;
use crate::api::{condition, set_condition, McpServer, McpServerStatus, ServerInfo};
use crate::consts::ADMIN_PORT_NAME;
use kube::{Client, ResourceExt};
use std::time::Duration;

/// The gateway's `/status` document: the contract crate's type, which the gateway writes.
pub use mcp_gateway_contract::status::StatusDocument as GatewayStatus;

/// Reads `/status` from the server's gateway admin port through the API server proxy.
pub async fn read(client: &Client, server: &McpServer) -> Result<GatewayStatus, String> {
    let ns = server.namespace().unwrap_or_default();
    let path = format!(
        "/api/v1/namespaces/{ns}/services/{}:{ADMIN_PORT_NAME}/proxy{}",
        server.name_any(),
        mcp_gateway_contract::admin::STATUS
    );
    let request = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(3), client.request::<GatewayStatus>(request)).await {
        Ok(Ok(doc)) => Ok(doc),
        Ok(Err(e)) => Err(format!("gateway status unavailable: {e}")),
        Err(_) => Err("gateway status unavailable: no answer within 3s".into()),
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
    fn unreachable_keeps_the_last_known_tools() {
        let mut known = McpServerStatus::default();
        merge(&mut known, &McpServerStatus::default(), Some(1), Some(Ok(doc())));
        let mut st = McpServerStatus::default();
        merge(&mut st, &known, Some(1), Some(Err("gateway status unavailable: 503".into())));
        assert_eq!(st.tools, known.tools);
        assert_eq!(mcp_ready(&st), ("False".into(), "GatewayUnreachable".into()));
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
