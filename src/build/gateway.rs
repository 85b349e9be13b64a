//! The MCP gateway in every server pod: a sidecar in front of http/websocket servers, the
//! wrapper process of stdio servers (its binary copied in by an init container). It enforces
//! the rendered policy (/etc/mcp/policy.json) with the Secrets mounted read-only.

use super::server::{restricted_container_security, CONFIG_VOLUME, MCP_PORT_NAME};
use super::{names::hex, BuildInputs};
use crate::api::Transport;
use crate::consts::*;
use crate::policy::{required_secrets, SECRETS_DIR};
use k8s_openapi::api::core::v1::*;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use mcp_gateway_contract::admin;
use mcp_gateway_contract::command::{drain_command, install_args, GatewayCommand, Upstream};
use sha2::{Digest, Sha256};

/// The gateway's ports in one pod: the defaults, moved by one where the server uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayPorts {
    /// MCP port (Service target).
    pub listen: i32,
    /// Admin port (probes, metrics, status).
    pub admin: i32,
}

/// Gateway ports that do not clash with the server's own port.
pub fn gateway_ports(server_port: i32) -> GatewayPorts {
    let avoid = |p: i32| if p == server_port { p + 1 } else { p };
    GatewayPorts { listen: avoid(GATEWAY_PORT), admin: avoid(GATEWAY_ADMIN_PORT) }
}

/// The gateway's command line for this server (the contract crate's, which the gateway's own
/// parser is tested against).
fn gateway_command(inputs: &BuildInputs<'_>, ports: GatewayPorts) -> GatewayCommand {
    let spec = &inputs.server.spec;
    let upstream = match spec.transport {
        Transport::Http => Upstream::Http(format!("http://127.0.0.1:{}{}", spec.port, spec.path)),
        Transport::Websocket => Upstream::WebSocket(format!("http://127.0.0.1:{}{}", spec.port, spec.path)),
        Transport::Stdio => {
            let mut command = spec.command.clone().unwrap_or_default();
            command.extend(spec.args.clone().unwrap_or_default());
            Upstream::Stdio(command)
        }
    };
    GatewayCommand {
        listen_port: u16::try_from(ports.listen).unwrap_or(mcp_gateway_contract::GATEWAY_PORT),
        admin_port: u16::try_from(ports.admin).unwrap_or(mcp_gateway_contract::GATEWAY_ADMIN_PORT),
        name: inputs.server.name_any(),
        path: spec.path.clone(),
        audit: audit_enabled(inputs),
        upstream,
    }
}

fn audit_enabled(inputs: &BuildInputs<'_>) -> bool {
    inputs.policy.filter(|p| p.spec.enabled).and_then(|p| p.spec.audit.as_ref()).is_some_and(|a| a.enabled)
}

fn ports(ports: GatewayPorts) -> Vec<ContainerPort> {
    vec![
        ContainerPort {
            name: Some(MCP_PORT_NAME.into()),
            container_port: ports.listen,
            protocol: Some("TCP".into()),
            ..Default::default()
        },
        ContainerPort {
            name: Some(ADMIN_PORT_NAME.into()),
            container_port: ports.admin,
            protocol: Some("TCP".into()),
            ..Default::default()
        },
    ]
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ADMIN_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Volume name of a referenced Secret (DNS label, stable).
fn secret_volume_name(secret: &str) -> String {
    format!("secret-{}", &hex(&Sha256::digest(secret.as_bytes()))[..12])
}

/// The policy's Secrets (all but the TLS one, which is in the config volume) as read-only
/// volumes at /var/run/secrets/mcp/NAME, and the audit scratch volume: volumes and mounts.
pub(super) fn gateway_volumes(inputs: &BuildInputs<'_>) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![];
    let mut mounts = vec![VolumeMount {
        name: CONFIG_VOLUME.into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    let Some(policy) = inputs.policy.filter(|p| p.spec.enabled) else { return (volumes, mounts) };
    let mut names: Vec<String> = required_secrets(&policy.spec)
        .into_iter()
        .filter(|n| n.field != "spec.encryption.certSecretName")
        .map(|n| n.name)
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let volume = secret_volume_name(&name);
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{SECRETS_DIR}/{name}"),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if audit_enabled(inputs) {
        volumes.push(Volume {
            name: "audit".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
        mounts.push(VolumeMount { name: "audit".into(), mount_path: AUDIT_DIR.into(), ..Default::default() });
    }
    (volumes, mounts)
}

/// The gateway's `args` as the kubelet must get them: its own flags literal (see
/// [`super::server::literal`]); the user's stdio command after `--` as written, expanded like any
/// container's.
fn kubelet_args(args: Vec<String>) -> Vec<String> {
    let mut user = false;
    args.into_iter()
        .map(|a| {
            if user {
                return a;
            }
            user = a == "--";
            super::server::literal(&a)
        })
        .collect()
}

/// The gateway sidecar in front of an http or websocket server on 127.0.0.1:port.
pub(super) fn gateway_sidecar(inputs: &BuildInputs<'_>, gw: GatewayPorts, mounts: Vec<VolumeMount>) -> Container {
    Container {
        name: GATEWAY_CONTAINER.into(),
        image: Some(inputs.defaults.gateway_image.clone()),
        image_pull_policy: Some(super::server::IF_NOT_PRESENT.into()),
        args: Some(kubelet_args(gateway_command(inputs, gw).args())),
        lifecycle: Some(drain_before_stop(mcp_gateway_contract::image_binary(), gw)),
        ports: Some(ports(gw)),
        readiness_probe: Some(http_probe(admin::READYZ, 5)),
        liveness_probe: Some(http_probe(admin::HEALTHZ, 10)),
        resources: Some(ResourceRequirements {
            requests: Some([("cpu".to_string(), quantity("10m")), ("memory".to_string(), quantity("16Mi"))].into()),
            limits: Some([("memory".to_string(), quantity("128Mi"))].into()),
            ..Default::default()
        }),
        security_context: Some(restricted_container_security(true)),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

fn quantity(q: &str) -> k8s_openapi::apimachinery::pkg::api::resource::Quantity {
    k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.to_string())
}

/// Name of the volume carrying the gateway binary into stdio server containers.
pub const GATEWAY_BIN_VOLUME: &str = "mcp-gateway-bin";

/// For stdio: the init container that copies the gateway binary, its volume, and the command
/// that makes the gateway the server container's process (it starts the server's command once
/// per MCP session).
pub(super) fn stdio_wrapper(
    inputs: &BuildInputs<'_>,
    gw: GatewayPorts,
) -> (Container, Volume, Vec<String>, Vec<ContainerPort>) {
    debug_assert_eq!(inputs.server.spec.transport, Transport::Stdio);
    let binary = mcp_gateway_contract::installed_binary();
    let init = Container {
        name: "install-gateway".into(),
        image: Some(inputs.defaults.gateway_image.clone()),
        image_pull_policy: Some(super::server::IF_NOT_PRESENT.into()),
        args: Some(install_args(&binary)),
        security_context: Some(restricted_container_security(true)),
        volume_mounts: Some(vec![VolumeMount {
            name: GATEWAY_BIN_VOLUME.into(),
            mount_path: GATEWAY_BIN_DIR.into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let volume = Volume {
        name: GATEWAY_BIN_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let mut command = vec![binary];
    command.extend(kubelet_args(gateway_command(inputs, gw).args()));
    (init, volume, command, ports(gw))
}

/// The preStop hook of the container the gateway runs in (`binary`: where its binary is there):
/// `mcp-gateway --drain` asks it over its drain socket to turn its readiness off and answers
/// after its drain delay, so the Service stops routing to the pod before any of its containers
/// gets SIGTERM. (The gateway drains only on a request over that abstract Unix socket, never over
/// its admin port: neither a client reaching the admin port nor a URL the server fetches over the
/// pod's loopback can take the pod out of its Service.)
pub(super) fn drain_before_stop(binary: String, ports: GatewayPorts) -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(drain_command(&binary, u16::try_from(ports.admin).expect("a port number"))),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The preStop hook of a server container beside the gateway: waits until the gateway has
/// drained (`/drained`, an httpGet hook: no tool needed in the server's image), so the server
/// outlives the gateway's last call.
pub(super) fn wait_for_drain(ports: GatewayPorts) -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some(admin::DRAINED.into()),
                // By number: a named port resolves only among the hooked container's own ports.
                port: IntOrString::Int(ports.admin),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Probes of the container the gateway runs in.
pub(super) fn gateway_probes() -> (Probe, Probe) {
    (http_probe(admin::READYZ, 5), http_probe(admin::HEALTHZ, 10))
}
