//! MCPServer: one MCP server deployment.

use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of an MCP server.
// clippy 1.95 reads the repeated `type_` of separate printcolumn(...) entries as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mcp.n-takatsu.dev",
    version = "v1alpha1",
    kind = "MCPServer",
    root = "McpServer",
    plural = "mcpservers",
    singular = "mcpserver",
    shortname = "mcp",
    shortname = "mcps",
    category = "mcp-all",
    namespaced,
    status = "McpServerStatus",
    derive = "PartialEq",
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1035 label (at most 63 characters: lower-case letters, digits and '-', starting with a letter and ending with a letter or digit): it names the server's Service and labels its pods"),
    doc = "MCPServer runs a Model Context Protocol server: a Deployment, a Service and the MCP gateway in front of it, protected by an optional SecurityPolicy and extended by Plugins.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Failed or Terminating"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready replicas out of desired"
    ),
    printcolumn(
        name = "Transport",
        type_ = "string",
        json_path = ".spec.transport",
        description = "http, stdio or websocket"
    ),
    printcolumn(
        name = "Policy",
        type_ = "string",
        json_path = ".spec.securityPolicy",
        description = "SecurityPolicy in force"
    ),
    printcolumn(
        name = "Tools",
        type_ = "integer",
        json_path = ".status.toolCount",
        description = "Tools the server offers (from its gateway's tools/list)"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        description = "Where clients reach the server"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.transport != 'stdio' || (has(self.command) && size(self.command) > 0)",
     "message": "spec.command is required when spec.transport is stdio"},
    {"rule": "!has(self.command) || size(self.command) == 0 || size(self.command[0]) > 0",
     "message": "spec.command[0] (the executable) must not be empty"}
]))]
pub struct McpServerSpec {
    /// Number of server pods, 1 to 10. The scale subresource (`kubectl scale`, HPA) sets it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: i32,

    /// Container image of the MCP server (no whitespace). Defaults to the operator's
    /// `--default-server-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[^\s]+$"))]
    pub image: Option<String>,

    /// When the kubelet pulls the server's and its plugins' images: Always, IfNotPresent or Never.
    /// Default IfNotPresent, for every tag including `latest` (an image loaded onto the nodes
    /// without a registry runs). The gateway's versioned image is always IfNotPresent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Secrets holding registry credentials for the server's and its plugins' images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// Entrypoint of the server container. Required when transport is stdio: the gateway runs
    /// this command once per MCP session and speaks to it over stdin/stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,

    /// How the server speaks MCP: http (Streamable HTTP), stdio or websocket.
    #[serde(default)]
    pub transport: Transport,

    /// Port clients connect to (the Service port), 1024 to 65535.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,

    /// HTTP path of the MCP endpoint.
    #[serde(default = "default_path")]
    #[schemars(regex(pattern = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$"), length(max = 256))]
    pub path: String,

    /// Compute resources of the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::resources")]
    pub resources: Option<ResourceRequirements>,

    /// Name of a SecurityPolicy in the same namespace. The server never runs without it: if it
    /// is missing or invalid, no workload is created (an existing one is left as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub security_policy: Option<String>,

    /// Names of Plugin objects in the same namespace (a set); their dependencies are added.
    #[serde(default)]
    #[schemars(schema_with = "super::string_set")]
    pub plugins: Vec<String>,

    /// Environment variables of the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::env_vars")]
    pub env: Option<Vec<EnvVar>>,
}

fn default_replicas() -> i32 {
    1
}
fn default_port() -> i32 {
    3000
}
fn default_path() -> String {
    "/mcp".to_string()
}

/// MCP transport of a server.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Streamable HTTP.
    #[default]
    Http,
    /// stdin/stdout of a process, bridged to Streamable HTTP by the gateway.
    Stdio,
    /// WebSocket.
    Websocket,
}

impl Transport {
    /// The name used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Stdio => "stdio",
            Self::Websocket => "websocket",
        }
    }
}

/// Image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Always pull.
    Always,
    /// Pull when absent.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl ImagePullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Lifecycle phase of an MCPServer.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum McpServerPhase {
    /// Accepted, not yet available.
    #[default]
    Pending,
    /// At least one replica is ready.
    Running,
    /// A reference cannot be resolved or the rollout failed.
    Failed,
    /// Being deleted.
    Terminating,
}

/// Observed state of an MCP server.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpServerStatus {
    /// Pending, Running, Failed or Terminating.
    #[serde(default)]
    pub phase: McpServerPhase,
    /// Desired replicas as last applied (scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `readyReplicas/replicas`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Label selector of the server pods (scale subresource, HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Cluster URL of the MCP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The MCP server's identity as its gateway's initialize handshake reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<ServerInfo>,
    /// Number of tools the server offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_count: Option<i32>,
    /// Names of the tools the server offers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Ready, Available, Progressing, Degraded, SecurityPolicyResolved, PluginsResolved, McpReady.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions")]
    pub conditions: Vec<Condition>,
}

/// What an MCP server says about itself in the initialize handshake.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// serverInfo.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// serverInfo.version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Negotiated MCP protocol version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Capability names the server declared (tools, resources, prompts, logging, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// Condition types of an MCPServer.
pub mod condition_types {
    /// At least one replica is ready.
    pub const AVAILABLE: &str = "Available";
    /// A rollout is in progress or has completed.
    pub const PROGRESSING: &str = "Progressing";
    /// Fewer ready replicas than desired, crash loops or a failed rollout.
    pub const DEGRADED: &str = "Degraded";
    /// The SecurityPolicy was found and is valid (True also when none is set).
    pub const SECURITY_POLICY_RESOLVED: &str = "SecurityPolicyResolved";
    /// Every plugin and its dependency closure was found, is acyclic and ready.
    pub const PLUGINS_RESOLVED: &str = "PluginsResolved";
    /// The gateway completes an MCP initialize handshake with the server.
    pub const MCP_READY: &str = "McpReady";
    /// The server runs as specified: references resolved (nothing held back) and every desired
    /// replica ready (`kubectl wait --for=condition=Ready mcpserver/NAME`).
    pub const READY: &str = "Ready";
}
