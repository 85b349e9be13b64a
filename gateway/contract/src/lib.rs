//! The seam between the operator and the MCP gateway, typed once and used by both sides so that
//! they cannot drift: the policy document the operator renders into `/etc/mcp/policy.json`, the
//! status document the gateway serves on its admin port, the gateway's command line, its ports
//! and its paths.
//!
//! The documents are strict (`deny_unknown_fields`): a gateway that meets a policy field it does
//! not know refuses to start rather than silently not enforcing it.

pub mod command;
pub mod policy;
pub mod status;

/// Port the gateway serves MCP on inside the pod (the Service's `port` targets it).
pub const GATEWAY_PORT: u16 = 8443;
/// Gateway admin port: liveness, readiness, metrics and the status document.
pub const GATEWAY_ADMIN_PORT: u16 = 9090;
/// Directory of the rendered configuration in the pod (a ConfigMap, read-only).
pub const CONFIG_DIR: &str = "/etc/mcp";
/// File name of the policy document in [`CONFIG_DIR`].
pub const POLICY_FILE: &str = "policy.json";
/// Where the policy's TLS certificate and key are mounted.
pub const TLS_DIR: &str = "/etc/mcp/tls";
/// Where referenced Secrets are mounted, one directory per Secret.
pub const SECRETS_DIR: &str = "/var/run/secrets/mcp";
/// Where the gateway writes its daily audit files.
pub const AUDIT_DIR: &str = "/var/log/mcp-audit";
/// Where the init container puts the gateway binary that wraps stdio servers.
pub const INSTALL_DIR: &str = "/opt/mcp-gateway";
/// The gateway binary's file name.
pub const BINARY: &str = "mcp-gateway";
/// MCP endpoint path when a server names none.
pub const DEFAULT_MCP_PATH: &str = "/mcp";

/// The admin port's paths.
pub mod admin {
    /// Liveness: the process serves.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness: an MCP `initialize` handshake with the server succeeds.
    pub const READYZ: &str = "/readyz";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// The status document ([`crate::status::StatusDocument`]).
    pub const STATUS: &str = "/status";
    /// The gateway's preStop hook (`mcp-gateway --drain`, in the pod): not ready from now on;
    /// answered after the drain delay. Only over the pod's drain socket (an abstract Unix socket):
    /// on the admin port it is refused (403), loopback included, else any client that reaches the
    /// admin port, or a server tool fetching a loopback URL, could take pods out of their Service.
    pub const DRAIN: &str = "/drain";
    /// The server container's preStop hook (an httpGet; server images need no tool): answered
    /// once the gateway has drained (it waits for the drain to start, at most the drain delay,
    /// then the delay), so the server outlives the gateway's last call. Starts nothing itself.
    pub const DRAINED: &str = "/drained";
}

/// `/etc/mcp/policy.json`.
pub fn policy_path() -> String {
    format!("{CONFIG_DIR}/{POLICY_FILE}")
}

/// `/mcp-gateway`: the binary in the gateway's image.
pub fn image_binary() -> String {
    format!("/{BINARY}")
}

/// `/opt/mcp-gateway/mcp-gateway`.
pub fn installed_binary() -> String {
    format!("{INSTALL_DIR}/{BINARY}")
}
