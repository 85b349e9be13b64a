//! The server's own children: ServiceAccount, ConfigMap, Service, Deployment, PDB, NetworkPolicy.

use super::gateway::{self, gateway_ports, GatewayPorts};
use super::{names::*, plugins, BuildInputs};
use crate::api::{McpServer, Transport};
use crate::consts::*;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::*;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Name of the MCP server container.
pub const SERVER_CONTAINER: &str = "server";
/// Name of the port of the MCP endpoint (container and Service).
pub const MCP_PORT_NAME: &str = "mcp";

/// ServiceAccount NAME with token automount off: MCP servers need no Kubernetes API.
pub fn build_service_account(server: &McpServer) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(server, server.name_any(), server_labels(&server.name_any())),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// ConfigMap NAME-config: the effective configuration of the pod.
pub fn build_config_map(inputs: &BuildInputs<'_>) -> ConfigMap {
    let server = inputs.server;
    let name = server.name_any();
    let ns = server.namespace().unwrap_or_default();
    let plugin_list: Vec<_> = inputs
        .plugins
        .iter()
        .map(|p| {
            json!({
                "name": p.spec.name,
                "plugin": p.name_any(),
                "version": p.spec.version,
                "isolation": p.spec.isolation.level.as_str(),
                "endpoint": plugins::plugin_endpoint(&name, &ns, p),
                "config": p.spec.config.clone().unwrap_or_else(|| json!({})),
            })
        })
        .collect();
    let server_doc = json!({
        "name": name,
        "transport": server.spec.transport.as_str(),
        "port": server.spec.port,
        "path": server.spec.path,
    });
    let mut data = BTreeMap::from([
        (PLUGINS_JSON.to_string(), pretty(&json!(plugin_list))),
        (POLICY_JSON.to_string(), pretty(&crate::policy::render_policy(inputs.policy))),
        ("server.json".to_string(), pretty(&server_doc)),
    ]);
    for p in &inputs.plugins {
        let config = p.spec.config.clone().unwrap_or_else(|| json!({}));
        data.insert(plugins::plugin_config_key(p), pretty(&config));
    }
    ConfigMap {
        metadata: child_meta(server, config_map_name(&name), server_labels(&name)),
        data: Some(data),
        ..Default::default()
    }
}

/// Most a ConfigMap may hold: its keys and values together (the API server's limit).
pub const CONFIG_MAP_LIMIT: usize = 1024 * 1024;

/// Why the ConfigMap cannot be stored, naming the fields that make it large: None when it fits.
/// Checked before anything is applied, so a too-large config changes nothing that runs.
pub fn config_map_too_large(inputs: &BuildInputs<'_>, config_map: &ConfigMap) -> Option<String> {
    let size: usize = config_map.data.iter().flatten().map(|(k, v)| k.len() + v.len()).sum();
    if size <= CONFIG_MAP_LIMIT {
        return None;
    }
    let mut parts: Vec<(usize, String)> = inputs
        .plugins
        .iter()
        .map(|p| {
            let bytes = p.spec.config.as_ref().map(|c| pretty(c).len()).unwrap_or(0);
            (bytes, format!("spec.config of Plugin {:?} is {bytes} bytes", p.name_any()))
        })
        .filter(|(bytes, _)| *bytes > 0)
        .collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    let detail = if parts.is_empty() {
        String::new()
    } else {
        format!(
            " ({}; each plugin's config is stored twice)",
            parts.into_iter().map(|(_, p)| p).collect::<Vec<_>>().join(", ")
        )
    };
    Some(format!(
        "the configuration ConfigMap {} would hold {size} bytes, more than the {CONFIG_MAP_LIMIT} bytes a ConfigMap may hold{detail}",
        config_map.metadata.name.as_deref().unwrap_or_default()
    ))
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).expect("documents serialize") + "\n"
}

/// Hash of the rendered config and every referenced Secret version: in the pod template, so that
/// a policy, plugin or Secret change rolls the pods and nothing else does.
pub fn config_hash(config_map: &ConfigMap, secret_versions: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in config_map.data.iter().flatten() {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    for (name, version) in secret_versions {
        h.update(format!("secret/{name}@{version}\0").as_bytes());
    }
    hex(&h.finalize())[..16].to_string()
}

/// Service NAME: `port` → the server's MCP port.
pub fn build_service(server: &McpServer) -> Service {
    let name = server.name_any();
    Service {
        metadata: child_meta(server, name.clone(), server_labels(&name)),
        spec: Some(ServiceSpec {
            selector: Some(server_selector(&name)),
            // Clients reach the gateway, never the server directly; the admin port serves the
            // gateway's status document (read by the operator through the API server proxy).
            ports: Some(vec![
                ServicePort {
                    name: Some(MCP_PORT_NAME.into()),
                    port: server.spec.port,
                    target_port: Some(IntOrString::String(MCP_PORT_NAME.into())),
                    protocol: Some("TCP".into()),
                    app_protocol: Some(
                        if server.spec.transport == Transport::Websocket { "kubernetes.io/ws" } else { "http" }.into(),
                    ),
                    ..Default::default()
                },
                ServicePort {
                    name: Some(ADMIN_PORT_NAME.into()),
                    port: gateway_ports(server.spec.port).admin,
                    target_port: Some(IntOrString::String(ADMIN_PORT_NAME.into())),
                    protocol: Some("TCP".into()),
                    app_protocol: Some("http".into()),
                    ..Default::default()
                },
            ]),
            // An MCP session lives in the pod that answered its initialize: a client keeps
            // reaching that pod (else a second replica answers 404, "session not found").
            session_affinity: Some("ClientIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The restricted pod security context every pod the operator makes gets.
pub fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// The restricted container security context; `read_only_root` for isolated filesystems.
pub fn restricted_container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: read_only_root.then_some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        ..Default::default()
    }
}

/// Name of the pod volume holding NAME-config and the policy's TLS Secret.
pub const CONFIG_VOLUME: &str = "mcp-config";

/// The projected volume mounted at /etc/mcp: the ConfigMap and, with TLS, the certificate.
fn config_volume(inputs: &BuildInputs<'_>) -> Volume {
    let name = inputs.server.name_any();
    let mut sources = vec![VolumeProjection {
        config_map: Some(ConfigMapProjection { name: config_map_name(&name), ..Default::default() }),
        ..Default::default()
    }];
    if let Some(policy) = inputs.policy.filter(|p| p.spec.enabled) {
        let tls_secret =
            policy.spec.encryption.as_ref().filter(|e| e.tls_enabled).and_then(|e| e.cert_secret_name.clone());
        let tls_dir = TLS_DIR.trim_start_matches(CONFIG_DIR).trim_start_matches('/');
        if let Some(secret) = tls_secret {
            sources.push(VolumeProjection {
                secret: Some(SecretProjection {
                    name: secret,
                    items: Some(
                        ["tls.crt", "tls.key"]
                            .iter()
                            .map(|k| KeyToPath {
                                key: k.to_string(),
                                path: format!("{tls_dir}/{k}"),
                                mode: None,
                                user: None,
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    Volume {
        name: CONFIG_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            default_mode: Some(0o440),
            default_user: None,
        }),
        ..Default::default()
    }
}

/// The variables the operator sets in the server's container, each with where its value comes
/// from. A `spec.env` entry naming one is refused: the container would have it twice, which the
/// Deployment's server-side apply refuses.
pub const OPERATOR_ENV: [(&str, &str); 6] = [
    ("MCP_SERVER_NAME", "from metadata.name"),
    ("MCP_TRANSPORT", "from spec.transport"),
    ("MCP_PORT", "from spec.port"),
    ("MCP_PATH", "from spec.path"),
    ("MCP_CONFIG_DIR", "to the directory of the server's configuration"),
    ("MCP_PLUGINS_FILE", "to the file listing the server's plugins"),
];

/// `value` as the kubelet must pass it on: it expands `$(VAR)` and turns `$$` into `$` in a
/// container's command, args and env values, so every `$` of what the operator renders there
/// (a `spec.path` may hold one) is doubled.
pub(super) fn literal(value: &str) -> String {
    value.replace('$', "$$")
}

fn server_env(server: &McpServer) -> Vec<EnvVar> {
    let var =
        |name: &str, value: String| EnvVar { name: name.into(), value: Some(literal(&value)), ..Default::default() };
    let mut env = vec![
        var("MCP_SERVER_NAME", server.name_any()),
        var("MCP_TRANSPORT", server.spec.transport.as_str().into()),
        var("MCP_PORT", server.spec.port.to_string()),
        var("MCP_PATH", server.spec.path.clone()),
        var("MCP_CONFIG_DIR", CONFIG_DIR.into()),
        var("MCP_PLUGINS_FILE", format!("{CONFIG_DIR}/{PLUGINS_JSON}")),
    ];
    // The user's variables follow ours (a `$(MCP_PORT)` in them expands); they never repeat one.
    env.extend(server.spec.env.clone().unwrap_or_default());
    env
}

/// `spec.imagePullSecrets` with each Secret once: a pod accepts a repeated one, the Deployment's
/// server-side apply does not ("duplicate entries for key [name=...]").
pub(super) fn distinct_pull_secrets(secrets: &[LocalObjectReference]) -> Vec<LocalObjectReference> {
    let mut seen = std::collections::HashSet::new();
    secrets.iter().filter(|s| seen.insert(s.name.clone())).cloned().collect()
}

/// Name of the server container's own port (reached only through the gateway).
pub const UPSTREAM_PORT_NAME: &str = "upstream";
/// The pull policy of every image the operator runs unless a spec says otherwise.
pub const IF_NOT_PRESENT: &str = "IfNotPresent";

/// How the server's and its plugins' images are pulled: `spec.imagePullPolicy`, else
/// IfNotPresent (the gateway's versioned image is always IfNotPresent).
pub(super) fn pull_policy(spec: &crate::api::McpServerSpec) -> String {
    spec.image_pull_policy.map_or(IF_NOT_PRESENT, |p| p.as_str()).to_string()
}

fn server_container(inputs: &BuildInputs<'_>, gw: GatewayPorts, gateway_mounts: &[VolumeMount]) -> Container {
    let server = inputs.server;
    let spec = &server.spec;
    let config_mount = VolumeMount {
        name: CONFIG_VOLUME.into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    };
    let mut container = Container {
        name: SERVER_CONTAINER.into(),
        image: Some(spec.image.clone().unwrap_or_else(|| inputs.defaults.server_image.clone())),
        image_pull_policy: Some(pull_policy(spec)),
        lifecycle: Some(if spec.transport == Transport::Stdio {
            // The gateway is this container's process.
            gateway::drain_before_stop(mcp_gateway_contract::installed_binary(), gw)
        } else {
            gateway::wait_for_drain(gw)
        }),
        command: spec.command.clone(),
        args: spec.args.clone(),
        env: Some(server_env(server)),
        resources: spec.resources.clone(),
        security_context: Some(restricted_container_security(false)),
        volume_mounts: Some(vec![config_mount]),
        ..Default::default()
    };
    if spec.transport == Transport::Stdio {
        // The gateway is the container's process and runs the server's command per session.
        let (_, _, command, ports) = gateway::stdio_wrapper(inputs, gw);
        let (readiness, liveness) = gateway::gateway_probes();
        container.command = Some(command);
        container.args = None;
        container.ports = Some(ports);
        container.readiness_probe = Some(readiness);
        container.liveness_probe = Some(liveness);
        let mut mounts = gateway_mounts.to_vec();
        mounts.push(VolumeMount {
            name: gateway::GATEWAY_BIN_VOLUME.into(),
            mount_path: GATEWAY_BIN_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        container.volume_mounts = Some(mounts);
    } else {
        container.ports = Some(vec![ContainerPort {
            name: Some(UPSTREAM_PORT_NAME.into()),
            container_port: spec.port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]);
        container.readiness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(UPSTREAM_PORT_NAME.into()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(2),
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..Default::default()
        });
    }
    container
}

/// Deployment NAME: the server container, sidecar plugins and the config volume.
pub fn build_deployment(inputs: &BuildInputs<'_>, hash: &str) -> Deployment {
    let server = inputs.server;
    let name = server.name_any();
    let gw = gateway_ports(server.spec.port);
    let (gateway_volumes, gateway_mounts) = gateway::gateway_volumes(inputs);
    let mut containers = vec![server_container(inputs, gw, &gateway_mounts)];
    let mut init_containers = vec![];
    let mut volumes = vec![config_volume(inputs)];
    volumes.extend(gateway_volumes);
    if server.spec.transport == Transport::Stdio {
        let (init, bin, _, _) = gateway::stdio_wrapper(inputs, gw);
        init_containers.push(init);
        volumes.push(bin);
    } else {
        containers.push(gateway::gateway_sidecar(inputs, gw, gateway_mounts));
    }
    let sidecars = plugins::build_sidecars(inputs);
    let share_processes = sidecars.share_process_namespace;
    containers.extend(sidecars.containers);
    volumes.extend(sidecars.volumes);
    if let Some(c) = containers.first_mut() {
        c.volume_mounts.get_or_insert_with(Vec::new).extend(sidecars.server_mounts);
    }
    Deployment {
        metadata: child_meta(server, name.clone(), server_labels(&name)),
        spec: DeploymentSpec {
            replicas: Some(server.spec.replicas),
            selector: LabelSelector { match_labels: Some(server_selector(&name)), ..Default::default() },
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(server_pod_labels(&name)),
                    annotations: Some(BTreeMap::from([
                        (ANNOTATION_CONFIG_HASH.to_string(), hash.to_string()),
                        ("kubectl.kubernetes.io/default-container".to_string(), SERVER_CONTAINER.to_string()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_security()),
                    share_process_namespace: share_processes.then_some(true),
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    image_pull_secrets: server.spec.image_pull_secrets.as_deref().map(distinct_pull_secrets),
                    containers,
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// PodDisruptionBudget NAME (maxUnavailable 1) when there is more than one replica.
pub fn build_pdb(server: &McpServer) -> Option<PodDisruptionBudget> {
    (server.spec.replicas > 1).then(|| {
        let name = server.name_any();
        PodDisruptionBudget {
            metadata: child_meta(server, name.clone(), server_labels(&name)),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector { match_labels: Some(server_selector(&name)), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    })
}

/// NetworkPolicy NAME on the server pods when the policy has network rules (who may connect)
/// or a sidecar plugin asks for network isolation (only the MCP port is reachable).
pub fn build_server_network_policy(inputs: &BuildInputs<'_>) -> Option<NetworkPolicy> {
    let server = inputs.server;
    let name = server.name_any();
    let network = inputs.policy.filter(|p| p.spec.enabled).and_then(|p| p.spec.network.as_ref());
    let gw = gateway_ports(server.spec.port);
    let isolated_sidecar =
        inputs.plugins.iter().any(|p| p.spec.isolation.level.is_sidecar() && p.spec.isolation.network_isolation);
    // An enforced policy must not be bypassed by connecting to the server's own port.
    let enforced = inputs.policy.is_some_and(|p| p.spec.enabled);
    if network.is_none() && !isolated_sidecar && !enforced {
        return None;
    }
    let mut from = vec![];
    if let Some(net) = network {
        from.extend(net.allowed_cidrs.iter().map(|cidr| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: crate::policy::canonical_cidr(cidr).unwrap_or_else(|_| cidr.clone()),
                except: None,
            }),
            ..Default::default()
        }));
        if !net.allowed_namespaces.is_empty() {
            from.push(NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "kubernetes.io/metadata.name".into(),
                        operator: "In".into(),
                        values: Some(net.allowed_namespaces.clone()),
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    Some(NetworkPolicy {
        metadata: child_meta(server, name.clone(), server_labels(&name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(server_selector(&name)), ..Default::default() }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    // No peers listed: anyone, but only on the gateway's MCP port.
                    from: (!from.is_empty()).then_some(from),
                    ports: Some(vec![tcp_port(gw.listen)]),
                },
                // Probes, Prometheus and the operator's status reads.
                NetworkPolicyIngressRule { from: None, ports: Some(vec![tcp_port(gw.admin)]) },
            ]),
            ..Default::default()
        }),
    })
}

fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(IntOrString::Int(port)), protocol: Some("TCP".into()), ..Default::default() }
}
