//! Pure builders: an MCPServer plus what it references in, the desired child objects out.
//! No I/O here, so that nearly all behaviour is unit-tested without a cluster.

mod gateway;
mod names;
mod plugins;
mod server;

pub use gateway::{gateway_ports, GatewayPorts};
pub use names::*;
pub use plugins::{plugin_endpoint, plugin_port};
pub use server::*;

use crate::api::{McpServer, Plugin, SecurityPolicy};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use std::collections::BTreeMap;

/// Operator-wide settings that shape the children (from command-line flags).
#[derive(Clone, Debug)]
pub struct Defaults {
    /// Image of servers whose spec names none.
    pub server_image: String,
    /// RuntimeClass of VM-isolated plugins.
    pub vm_runtime_class: String,
    /// Image of the MCP gateway put in every server pod.
    pub gateway_image: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            server_image: crate::consts::DEFAULT_SERVER_IMAGE.to_string(),
            vm_runtime_class: crate::consts::DEFAULT_VM_RUNTIME_CLASS.to_string(),
            gateway_image: crate::consts::default_gateway_image(),
        }
    }
}

/// Everything the build step needs, already resolved and validated.
#[derive(Clone, Debug)]
pub struct BuildInputs<'a> {
    /// The server being reconciled.
    pub server: &'a McpServer,
    /// Its SecurityPolicy when one is named (valid, or disabled).
    pub policy: Option<&'a SecurityPolicy>,
    /// resourceVersion of every Secret the policy references, by name (hashed into the pods).
    pub secret_versions: BTreeMap<String, String>,
    /// The plugin closure in start order (dependencies first).
    pub plugins: Vec<&'a Plugin>,
    /// Operator defaults.
    pub defaults: &'a Defaults,
}

/// The desired children of one MCPServer.
#[derive(Clone, Debug, Default)]
pub struct Children {
    /// ServiceAccount NAME (token automount off).
    pub service_account: ServiceAccount,
    /// ConfigMap NAME-config: plugins.json, policy.json, each plugin's config.
    pub config_map: ConfigMap,
    /// Service NAME on spec.port.
    pub service: Service,
    /// Deployment NAME.
    pub deployment: Deployment,
    /// PodDisruptionBudget NAME when replicas > 1.
    pub pdb: Option<PodDisruptionBudget>,
    /// NetworkPolicies: the server's (policy network rules, sidecar plugin isolation) and one per
    /// network-isolated plugin workload.
    pub network_policies: Vec<NetworkPolicy>,
    /// Deployments of Container/VM plugins, one per plugin.
    pub plugin_deployments: Vec<Deployment>,
    /// Services of Container/VM plugins, one per plugin.
    pub plugin_services: Vec<Service>,
}

/// Builds every child of the server.
pub fn build_children(inputs: &BuildInputs<'_>) -> Children {
    let config_map = build_config_map(inputs);
    let hash = config_hash(&config_map, &inputs.secret_versions);
    let (plugin_deployments, plugin_services) = plugins::build_plugin_workloads(inputs, &hash);
    let mut network_policies: Vec<NetworkPolicy> = build_server_network_policy(inputs).into_iter().collect();
    network_policies.extend(plugins::build_plugin_network_policies(inputs));
    Children {
        service_account: build_service_account(inputs.server),
        service: build_service(inputs.server),
        deployment: build_deployment(inputs, &hash),
        pdb: build_pdb(inputs.server),
        config_map,
        network_policies,
        plugin_deployments,
        plugin_services,
    }
}

#[cfg(test)]
pub(crate) mod tests;
