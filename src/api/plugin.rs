//! Plugin: a capability added to MCP servers, run at a chosen isolation level.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a plugin.
// clippy 1.95 reads the repeated `type_` of separate printcolumn(...) entries as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mcp.n-takatsu.dev",
    version = "v1alpha1",
    kind = "Plugin",
    plural = "plugins",
    singular = "plugin",
    shortname = "mcpplugin",
    category = "mcp-all",
    namespaced,
    status = "PluginStatus",
    derive = "PartialEq",
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1123 label (at most 63 characters: lower-case letters, digits and '-', starting and ending with a letter or digit): it names the plugin's container and labels its workload"),
    doc = "Plugin adds a capability to the MCP servers that name it, run as a sidecar (None, Process) or as its own workload per server (Container, VM).",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Ready or Failed"
    ),
    printcolumn(
        name = "Isolation",
        type_ = "string",
        json_path = ".spec.isolation.level",
        description = "None, Process, Container or VM"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Used-By",
        type_ = "integer",
        json_path = ".status.usedByCount",
        description = "Number of MCPServers using it"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    /// Logical plugin name, as the MCP server sees it in /etc/mcp/plugins.json.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,

    /// Container image of the plugin (no whitespace).
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[^\s]+$"))]
    pub image: String,

    /// Plugin version.
    #[serde(default = "default_version")]
    #[schemars(length(min = 1, max = 128))]
    pub version: String,

    /// Port the plugin serves on (default 8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// How strongly the plugin is separated from the MCP server.
    #[serde(default)]
    pub isolation: PluginIsolation,

    /// Compute resources of the plugin container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::resources")]
    pub resources: Option<ResourceRequirements>,

    /// Free-form configuration, delivered to the plugin as the JSON file
    /// /etc/mcp/plugin/config.json (path also in $MCP_PLUGIN_CONFIG).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::free_form_object")]
    pub config: Option<serde_json::Value>,

    /// Other Plugin objects (metadata.name, same namespace) this one needs; resolved transitively.
    #[serde(default)]
    #[schemars(schema_with = "super::string_set")]
    pub dependencies: Vec<String>,
}

fn default_version() -> String {
    "latest".to_string()
}

/// Isolation settings of a plugin.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginIsolation {
    /// None and Process run the plugin in the server pod; Container runs it as its own
    /// Deployment and Service per server; VM is Container plus a sandboxing RuntimeClass.
    #[serde(default)]
    pub level: IsolationLevel,
    /// Only the MCP servers using the plugin may reach it (NetworkPolicy).
    #[serde(default)]
    pub network_isolation: bool,
    /// Read-only root filesystem and no volumes shared with the server.
    #[serde(default)]
    pub filesystem_isolation: bool,
    /// Never share a process namespace with the server.
    #[serde(default)]
    pub process_isolation: bool,
}

/// Isolation level of a plugin.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum IsolationLevel {
    /// A container in the server pod.
    None,
    /// A container in the server pod with a hardened security context and its own filesystem.
    Process,
    /// Its own Deployment and Service per MCP server.
    #[default]
    Container,
    /// Container plus a sandboxing RuntimeClass (operator flag `--vm-runtime-class`).
    #[serde(rename = "VM")]
    Vm,
}

impl IsolationLevel {
    /// The spelling used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Process => "Process",
            Self::Container => "Container",
            Self::Vm => "VM",
        }
    }

    /// Whether the plugin runs inside the MCP server pod.
    pub fn is_sidecar(self) -> bool {
        matches!(self, Self::None | Self::Process)
    }
}

/// Lifecycle phase of a Plugin.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PluginPhase {
    /// Not reconciled yet.
    #[default]
    Pending,
    /// Dependencies resolved and runnable.
    Ready,
    /// A dependency is missing, there is a cycle, or the VM RuntimeClass does not exist.
    Failed,
}

/// Observed state of a plugin.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// Pending, Ready or Failed.
    #[serde(default)]
    pub phase: PluginPhase,
    /// MCPServers that use this plugin, directly or through dependencies.
    #[serde(default)]
    pub used_by: Vec<String>,
    /// Number of MCPServers in usedBy.
    #[serde(default)]
    pub used_by_count: i32,
    /// The resolved dependency closure, in the order the plugins start (dependencies first).
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// DependenciesResolved, Ready.
    #[serde(default)]
    #[schemars(schema_with = "super::conditions")]
    pub conditions: Vec<Condition>,
}

/// Condition types of a Plugin.
pub mod plugin_condition_types {
    /// Every dependency exists and there is no cycle.
    pub const DEPENDENCIES_RESOLVED: &str = "DependenciesResolved";
    /// The plugin can run (dependencies resolved, RuntimeClass present for VM).
    pub const READY: &str = "Ready";
}
