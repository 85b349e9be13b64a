//! Names and labels of the children, derived from the MCPServer.

use crate::api::McpServer;
use crate::consts::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Longest name a Service may have (DNS-1035 label).
const MAX_NAME: usize = 63;

/// `NAME-config`.
pub fn config_map_name(server: &str) -> String {
    format!("{server}-config")
}

/// Name of a plugin workload of a server: `SERVER-PLUGIN`, shortened with a hash suffix when it
/// would not fit a DNS label.
pub fn plugin_workload_name(server: &str, plugin: &str) -> String {
    fit_dns_label(format!("{server}-{plugin}"))
}

/// `name` when it fits a DNS label (63 characters), else its first characters and a hash of the
/// whole, so that distinct long names stay distinct. (`name` is ASCII: built from object names.)
pub fn fit_dns_label(name: String) -> String {
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = hex(&Sha256::digest(name.as_bytes()))[..8].to_string();
    let keep = MAX_NAME - digest.len() - 1;
    format!("{}-{digest}", name[..keep].trim_end_matches('-'))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Labels that select the server pods (Deployment, Service, PDB, NetworkPolicy, HPA).
pub fn server_selector(server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), NAME_MCP_SERVER.to_string()),
        (LABEL_INSTANCE.to_string(), server.to_string()),
        (LABEL_COMPONENT.to_string(), COMPONENT_SERVER.to_string()),
    ])
}

/// The selector as a string, for `status.selector`.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Labels on every server child.
pub fn server_labels(server: &str) -> BTreeMap<String, String> {
    let mut labels = server_selector(server);
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
    labels
}

/// Labels on server pods: the child labels plus `app=NAME`, which the guide selects logs by.
pub fn server_pod_labels(server: &str) -> BTreeMap<String, String> {
    let mut labels = server_labels(server);
    labels.insert(LABEL_APP.to_string(), server.to_string());
    labels
}

/// Labels that select every plugin workload's pods of a server.
pub fn plugin_workloads_selector(server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), NAME_MCP_PLUGIN.to_string()),
        (LABEL_INSTANCE.to_string(), server.to_string()),
        (LABEL_COMPONENT.to_string(), COMPONENT_PLUGIN.to_string()),
    ])
}

/// Labels that select one plugin workload of a server.
pub fn plugin_selector(server: &str, plugin: &str) -> BTreeMap<String, String> {
    let mut labels = plugin_workloads_selector(server);
    labels.insert(LABEL_PLUGIN.to_string(), plugin.to_string());
    labels
}

/// Labels on every plugin child.
pub fn plugin_labels(server: &str, plugin: &str) -> BTreeMap<String, String> {
    let mut labels = plugin_selector(server, plugin);
    labels.insert(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string());
    labels
}

/// Selector of everything the operator made for a server (to find stale children).
pub fn owned_selector(server: &str) -> String {
    format!("{LABEL_INSTANCE}={server},{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// The controller owner reference to the server.
pub fn owner_ref(server: &McpServer) -> OwnerReference {
    let mut r = server.controller_owner_ref(&()).expect("MCPServer has a name and uid");
    r.block_owner_deletion = Some(true);
    r
}

/// Metadata of a server child.
pub fn child_meta(server: &McpServer, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: server.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner_ref(server)]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_fit_a_dns_label() {
        assert_eq!(plugin_workload_name("srv", "wordpress-plugin"), "srv-wordpress-plugin");
        let long = plugin_workload_name(&"s".repeat(50), &"p".repeat(30));
        assert_eq!(long.len(), 63);
        assert_ne!(long, plugin_workload_name(&"s".repeat(50), &"p".repeat(31)), "hash keeps names apart");
        assert_eq!(fit_dns_label("a".repeat(63)), "a".repeat(63), "a fitting name stays");
    }

    #[test]
    fn selector_string_is_sorted_and_stable() {
        assert_eq!(
            selector_string(&server_selector("x")),
            "app.kubernetes.io/component=server,app.kubernetes.io/instance=x,app.kubernetes.io/name=mcp-server"
        );
    }
}
