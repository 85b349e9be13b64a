//! Every name users see in one place, so that the code, the chart and the manifests agree.

/// API group of the three custom resources.
pub const GROUP: &str = "mcp.n-takatsu.dev";
/// API version of the three custom resources.
pub const VERSION: &str = "v1alpha1";
/// CRD category: `kubectl get mcp-all` lists every object the operator owns in a namespace.
pub const CATEGORY: &str = "mcp-all";

/// Server-side apply field manager for every object and status the operator writes.
pub const FIELD_MANAGER: &str = "mcp-operator";
/// Finalizer earlier versions put on MCPServers; released wherever found (no finalizers now: the
/// children go with their server through owner references).
pub const FINALIZER: &str = "mcp.n-takatsu.dev/finalizer";
/// Finalizer earlier versions put on Plugins and SecurityPolicies in use; released wherever found.
pub const IN_USE_FINALIZER: &str = "mcp.n-takatsu.dev/in-use-protection";

/// `app.kubernetes.io/name` of everything built for an MCPServer.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the MCPServer's name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/component`: `server` or `plugin`.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// `app`: the guide reads server logs with `kubectl logs -l app=NAME`.
pub const LABEL_APP: &str = "app";
/// The Plugin object a plugin workload runs.
pub const LABEL_PLUGIN: &str = "mcp.n-takatsu.dev/plugin";
/// Value of `app.kubernetes.io/name` on MCP server children.
pub const NAME_MCP_SERVER: &str = "mcp-server";
/// Value of `app.kubernetes.io/name` on plugin workloads.
pub const NAME_MCP_PLUGIN: &str = "mcp-plugin";
/// Value of `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "mcp-operator";
/// Component label values.
pub const COMPONENT_SERVER: &str = "server";
/// Component label value of plugin workloads.
pub const COMPONENT_PLUGIN: &str = "plugin";

/// Pod-template annotation hashing every rendered config and Secret version: a change rolls pods.
pub const ANNOTATION_CONFIG_HASH: &str = "mcp.n-takatsu.dev/config-hash";

/// Where the rendered `NAME-config` ConfigMap is mounted in the server container.
pub const CONFIG_DIR: &str = mcp_gateway_contract::CONFIG_DIR;
/// Where a plugin finds its own config JSON.
pub const PLUGIN_CONFIG_DIR: &str = "/etc/mcp/plugin";
/// Where the policy's TLS Secret is mounted.
pub const TLS_DIR: &str = mcp_gateway_contract::TLS_DIR;
/// ConfigMap key listing the plugins (read by the MCP server).
pub const PLUGINS_JSON: &str = "plugins.json";
/// ConfigMap key holding the effective security policy (read by the gateway).
pub const POLICY_JSON: &str = mcp_gateway_contract::POLICY_FILE;

/// Default port a plugin serves on when its spec names none.
pub const DEFAULT_PLUGIN_PORT: i32 = 8080;
/// Operator HTTP port: health, readiness and Prometheus metrics.
pub const METRICS_PORT: u16 = 8080;
/// Default image of MCP servers that name none (operator flag `--default-server-image`).
pub const DEFAULT_SERVER_IMAGE: &str = "mcp-rs:latest";
/// Default RuntimeClass of `isolation.level: VM` plugins (operator flag `--vm-runtime-class`).
pub const DEFAULT_VM_RUNTIME_CLASS: &str = "kata";
/// Lease used for leader election.
pub const LEADER_LEASE: &str = "mcp-operator-leader";

/// Name of the MCP gateway container (sidecar for http/websocket servers).
pub const GATEWAY_CONTAINER: &str = "gateway";
/// Port the gateway serves MCP on inside the pod (the Service's `port` targets it).
pub const GATEWAY_PORT: i32 = mcp_gateway_contract::GATEWAY_PORT as i32;
/// Gateway admin port: /healthz, /readyz, /metrics, /status.
pub const GATEWAY_ADMIN_PORT: i32 = mcp_gateway_contract::GATEWAY_ADMIN_PORT as i32;
/// Where the init container puts the gateway binary that wraps stdio servers.
pub const GATEWAY_BIN_DIR: &str = mcp_gateway_contract::INSTALL_DIR;
/// Where the gateway writes rotated audit files.
pub const AUDIT_DIR: &str = mcp_gateway_contract::AUDIT_DIR;
/// Name of the Service and container port of the gateway's admin server.
pub const ADMIN_PORT_NAME: &str = "admin";

/// Default gateway image: the gateway released with this operator version.
pub fn default_gateway_image() -> String {
    format!("ghcr.io/n-takatsu/mcp-gateway:{}", env!("CARGO_PKG_VERSION"))
}
