//! Plugin shapes: sidecars in the server pod (None, Process) or a Deployment and Service per
//! server (Container, VM), their config files and network isolation.

use super::server::{restricted_container_security, restricted_pod_security};
use super::{names::*, BuildInputs};
use crate::api::{IsolationLevel, Plugin};
use crate::consts::*;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::*;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Port a plugin serves on.
pub fn plugin_port(plugin: &Plugin) -> i32 {
    plugin.spec.port.unwrap_or(DEFAULT_PLUGIN_PORT)
}

/// Where the MCP server reaches a plugin: localhost for sidecars, its Service otherwise.
pub fn plugin_endpoint(server: &str, namespace: &str, plugin: &Plugin) -> String {
    let port = plugin_port(plugin);
    if plugin.spec.isolation.level.is_sidecar() {
        format!("http://127.0.0.1:{port}")
    } else {
        format!("http://{}.{namespace}.svc:{port}", plugin_workload_name(server, &plugin.name_any()))
    }
}

/// ConfigMap key of a plugin's config JSON.
pub fn plugin_config_key(plugin: &Plugin) -> String {
    format!("plugin-{}.json", plugin.name_any())
}

/// `plugin-NAME`, hash-shortened to a DNS label: two long plugin names never collide.
fn container_name(plugin: &Plugin) -> String {
    fit_dns_label(format!("plugin-{}", plugin.name_any()))
}

/// A volume holding only this plugin's config.json, from the server's ConfigMap.
fn plugin_config_volume(server: &str, plugin: &Plugin, volume: String) -> Volume {
    Volume {
        name: volume,
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(server),
            items: Some(vec![KeyToPath {
                key: plugin_config_key(plugin),
                path: "config.json".into(),
                mode: None,
                user: None,
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A plugin's container; its image is pulled as the server's (`spec.imagePullPolicy`).
fn plugin_container(inputs: &BuildInputs<'_>, plugin: &Plugin, config_volume: &str) -> Container {
    let iso = &plugin.spec.isolation;
    let port = plugin_port(plugin);
    // Literal: a version may hold a `$`, which the kubelet would expand.
    let var = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(super::server::literal(&value)),
        ..Default::default()
    };
    let read_only = iso.filesystem_isolation || iso.level == IsolationLevel::Process;
    Container {
        name: container_name(plugin),
        image: Some(plugin.spec.image.clone()),
        image_pull_policy: Some(super::server::pull_policy(&inputs.server.spec)),
        env: Some(vec![
            var("MCP_PLUGIN_NAME", plugin.spec.name.clone()),
            var("MCP_PLUGIN_VERSION", plugin.spec.version.clone()),
            var("MCP_PLUGIN_PORT", port.to_string()),
            var("MCP_PLUGIN_CONFIG", format!("{PLUGIN_CONFIG_DIR}/config.json")),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("plugin".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: plugin.spec.resources.clone(),
        security_context: Some(restricted_container_security(read_only)),
        volume_mounts: Some(vec![VolumeMount {
            name: config_volume.to_string(),
            mount_path: PLUGIN_CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// What sidecar plugins add to the server pod.
#[derive(Default)]
pub(super) struct Sidecars {
    pub containers: Vec<Container>,
    pub volumes: Vec<Volume>,
    /// Mounts added to the server container (the scratch space shared with None plugins).
    pub server_mounts: Vec<VolumeMount>,
    /// A None plugin without process isolation shares the server's process namespace.
    pub share_process_namespace: bool,
}

/// Name of the emptyDir the server shares with None-level plugins without filesystem isolation.
pub const SHARED_VOLUME: &str = "plugin-shared";
/// Where the shared emptyDir is mounted.
pub const SHARED_DIR: &str = "/var/run/mcp/shared";

pub(super) fn build_sidecars(inputs: &BuildInputs<'_>) -> Sidecars {
    let server = inputs.server.name_any();
    let mut out = Sidecars::default();
    for (i, plugin) in inputs.plugins.iter().filter(|p| p.spec.isolation.level.is_sidecar()).enumerate() {
        let iso = &plugin.spec.isolation;
        let volume = format!("plugin-config-{i}");
        out.volumes.push(plugin_config_volume(&server, plugin, volume.clone()));
        let mut container = plugin_container(inputs, plugin, &volume);
        if iso.level == IsolationLevel::None && !iso.filesystem_isolation {
            container.volume_mounts.get_or_insert_with(Vec::new).push(shared_mount());
            if out.server_mounts.is_empty() {
                out.server_mounts.push(shared_mount());
                out.volumes.push(Volume {
                    name: SHARED_VOLUME.into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                });
            }
        }
        if iso.level == IsolationLevel::None && !iso.process_isolation {
            out.share_process_namespace = true;
        }
        out.containers.push(container);
    }
    out
}

fn shared_mount() -> VolumeMount {
    VolumeMount { name: SHARED_VOLUME.into(), mount_path: SHARED_DIR.into(), ..Default::default() }
}

/// Deployments and Services of Container and VM plugins: one of each per plugin and server.
pub(super) fn build_plugin_workloads(inputs: &BuildInputs<'_>, hash: &str) -> (Vec<Deployment>, Vec<Service>) {
    let server = inputs.server;
    let server_name = server.name_any();
    let mut deployments = vec![];
    let mut services = vec![];
    for plugin in inputs.plugins.iter().filter(|p| !p.spec.isolation.level.is_sidecar()) {
        let plugin_name = plugin.name_any();
        let name = plugin_workload_name(&server_name, &plugin_name);
        let labels = plugin_labels(&server_name, &plugin_name);
        let selector = plugin_selector(&server_name, &plugin_name);
        let volume = "plugin-config".to_string();
        let runtime_class =
            (plugin.spec.isolation.level == IsolationLevel::Vm).then(|| inputs.defaults.vm_runtime_class.clone());
        deployments.push(Deployment {
            metadata: child_meta(server, name.clone(), labels.clone()),
            spec: DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector { match_labels: Some(selector.clone()), ..Default::default() },
                revision_history_limit: Some(3),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        annotations: Some(BTreeMap::from([(ANNOTATION_CONFIG_HASH.to_string(), hash.to_string())])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        automount_service_account_token: Some(false),
                        enable_service_links: Some(false),
                        runtime_class_name: runtime_class,
                        security_context: Some(restricted_pod_security()),
                        // As a sidecar the plugin's image is pulled with the server's Secrets.
                        image_pull_secrets: server.spec.image_pull_secrets.as_deref().map(super::distinct_pull_secrets),
                        containers: vec![plugin_container(inputs, plugin, &volume)],
                        volumes: Some(vec![plugin_config_volume(&server_name, plugin, volume)]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            ..Default::default()
        });
        services.push(Service {
            metadata: child_meta(server, name, labels),
            spec: Some(ServiceSpec {
                selector: Some(selector),
                ports: Some(vec![ServicePort {
                    name: Some("plugin".into()),
                    port: plugin_port(plugin),
                    target_port: Some(IntOrString::String("plugin".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    (deployments, services)
}

/// One NetworkPolicy per network-isolated plugin workload: only its server's pods may connect.
pub(super) fn build_plugin_network_policies(inputs: &BuildInputs<'_>) -> Vec<NetworkPolicy> {
    let server = inputs.server;
    let server_name = server.name_any();
    inputs
        .plugins
        .iter()
        .filter(|p| !p.spec.isolation.level.is_sidecar() && p.spec.isolation.network_isolation)
        .map(|plugin| {
            let plugin_name = plugin.name_any();
            NetworkPolicy {
                metadata: child_meta(
                    server,
                    plugin_workload_name(&server_name, &plugin_name),
                    plugin_labels(&server_name, &plugin_name),
                ),
                spec: Some(NetworkPolicySpec {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(plugin_selector(&server_name, &plugin_name)),
                        ..Default::default()
                    }),
                    policy_types: Some(vec!["Ingress".into()]),
                    ingress: Some(vec![NetworkPolicyIngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            pod_selector: Some(LabelSelector {
                                match_labels: Some(server_selector(&server_name)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ports: Some(vec![NetworkPolicyPort {
                            port: Some(IntOrString::Int(plugin_port(plugin))),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]),
                    }]),
                    ..Default::default()
                }),
            }
        })
        .collect()
}
