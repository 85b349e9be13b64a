//! Unit tests of the pure builders: each transport, isolation level and policy combination.

use super::*;
use crate::api::*;
use crate::consts::*;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rstest::rstest;
use serde_json::Value;

pub(crate) fn server(yaml: &str) -> McpServer {
    let mut s: McpServer = serde_norway::from_str(yaml).expect("valid MCPServer YAML");
    s.metadata.namespace.get_or_insert_with(|| "default".into());
    s.metadata.uid = Some("uid-1".into());
    s
}

pub(crate) fn guide_server() -> McpServer {
    server(
        r#"
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: my-mcp-server}
spec: {replicas: 2, image: "mcp-rs:latest", transport: http, port: 3000}
"#,
    )
}

pub(crate) fn plugin(name: &str, level: &str, extra: &str) -> Plugin {
    let mut p: Plugin = serde_norway::from_str(&format!(
        r#"
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {{name: {name}, namespace: default}}
spec:
  name: {name}
  image: "{name}:1.0"
  version: "1.0.0"
  isolation: {{level: {level}}}
  {extra}
"#
    ))
    .expect("valid Plugin YAML");
    p.metadata.uid = Some(format!("uid-{name}"));
    p
}

pub(crate) fn policy(yaml_spec: &str) -> SecurityPolicy {
    serde_norway::from_str(&format!(
        "apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: SecurityPolicy\nmetadata: {{name: default-policy, namespace: default}}\nspec: {yaml_spec}\n"
    ))
    .expect("valid SecurityPolicy YAML")
}

fn build(server: &McpServer, policy: Option<&SecurityPolicy>, plugins: &[&Plugin]) -> Children {
    let defaults = Defaults::default();
    build_children(&BuildInputs {
        server,
        policy,
        secret_versions: Default::default(),
        plugins: plugins.to_vec(),
        defaults: &defaults,
    })
}

fn pod_spec(d: &k8s_openapi::api::apps::v1::Deployment) -> &k8s_openapi::api::core::v1::PodSpec {
    d.spec.template.spec.as_ref().unwrap()
}

fn hash_of(c: &Children) -> String {
    c.deployment.spec.template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[ANNOTATION_CONFIG_HASH].clone()
}

#[test]
fn guide_server_gets_deployment_service_account_config_and_pdb() {
    let c = build(&guide_server(), None, &[]);
    let d = &c.deployment;
    assert_eq!(d.metadata.name.as_deref(), Some("my-mcp-server"));
    assert_eq!(d.spec.replicas, Some(2));
    let labels = d.spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    assert_eq!(labels["app"], "my-mcp-server");
    assert_eq!(labels[LABEL_NAME], "mcp-server");
    assert_eq!(labels[LABEL_INSTANCE], "my-mcp-server");
    assert_eq!(labels[LABEL_MANAGED_BY], "mcp-operator");
    let pod = pod_spec(d);
    assert_eq!(pod.service_account_name.as_deref(), Some("my-mcp-server"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let ctr = &pod.containers[0];
    assert_eq!(ctr.image.as_deref(), Some("mcp-rs:latest"));
    assert_eq!(ctr.ports.as_ref().unwrap()[0].container_port, 3000);
    assert!(ctr.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert_eq!(ctr.volume_mounts.as_ref().unwrap()[0].mount_path, "/etc/mcp");
    assert_eq!(c.service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 3000);
    assert_eq!(c.service_account.automount_service_account_token, Some(false));
    assert_eq!(c.config_map.metadata.name.as_deref(), Some("my-mcp-server-config"));
    assert!(c.pdb.is_some(), "2 replicas get a PodDisruptionBudget");
    assert!(c.network_policies.is_empty());
    assert!(c.plugin_deployments.is_empty());
}

#[test]
fn every_child_is_owned_by_the_server_as_controller() {
    let p = plugin("wp", "Container", "");
    let c = build(&guide_server(), None, &[&p]);
    let metas = [
        &c.deployment.metadata,
        &c.service.metadata,
        &c.service_account.metadata,
        &c.config_map.metadata,
        &c.pdb.as_ref().unwrap().metadata,
        &c.plugin_deployments[0].metadata,
        &c.plugin_services[0].metadata,
    ];
    for m in metas {
        let owner = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("MCPServer", "my-mcp-server", Some(true))
        );
        assert_eq!(m.namespace.as_deref(), Some("default"));
        assert_eq!(m.labels.as_ref().unwrap()[LABEL_MANAGED_BY], "mcp-operator");
    }
}

#[test]
fn restricted_security_by_default() {
    let c = build(&guide_server(), None, &[]);
    let pod = pod_spec(&c.deployment);
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let sc = pod.containers[0].security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
}

#[test]
fn single_replica_has_no_pdb_and_default_image() {
    let s = server("apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: a}\nspec: {}\n");
    let c = build(&s, None, &[]);
    assert!(c.pdb.is_none());
    assert_eq!(pod_spec(&c.deployment).containers[0].image.as_deref(), Some(DEFAULT_SERVER_IMAGE));
    assert_eq!(c.deployment.spec.replicas, Some(1));
}

#[rstest]
#[case::http("http", "kubernetes.io/ws", false)]
#[case::websocket("websocket", "kubernetes.io/ws", true)]
fn http_and_websocket_servers_get_the_gateway_sidecar(
    #[case] transport: &str,
    #[case] ws_protocol: &str,
    #[case] is_ws: bool,
) {
    let s = server(&format!(
        "apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: t}}\nspec: {{transport: {transport}, port: 4000, path: /rpc}}\n"
    ));
    let c = build(&s, None, &[]);
    let pod = pod_spec(&c.deployment);
    let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["server", "gateway"]);
    let server_ctr = &pod.containers[0];
    let port = &server_ctr.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port), (Some("upstream"), 4000));
    assert!(server_ctr.readiness_probe.as_ref().unwrap().tcp_socket.is_some());
    let gw = &pod.containers[1];
    assert_eq!(gw.image.as_deref(), Some(crate::consts::default_gateway_image().as_str()));
    let args = gw.args.clone().unwrap();
    assert!(args.contains(&"--upstream=http://127.0.0.1:4000/rpc".to_string()), "{args:?}");
    assert!(args.contains(&format!("--transport={transport}")));
    assert!(args.contains(&"--policy=/etc/mcp/policy.json".to_string()));
    let ports: Vec<_> =
        gw.ports.as_ref().unwrap().iter().map(|p| (p.name.clone().unwrap(), p.container_port)).collect();
    assert_eq!(ports, vec![("mcp".to_string(), 8443), ("admin".to_string(), 9090)]);
    assert_eq!(gw.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    assert_eq!(gw.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    let svc_ports = c.service.spec.as_ref().unwrap().ports.clone().unwrap();
    assert_eq!(svc_ports[0].port, 4000, "clients keep using spec.port");
    assert_eq!(svc_ports[0].target_port, Some(IntOrString::String("mcp".into())), "which is the gateway");
    assert_eq!(svc_ports[0].app_protocol.as_deref() == Some(ws_protocol), is_ws);
    assert_eq!((svc_ports[1].name.as_deref(), svc_ports[1].port), (Some("admin"), 9090));
    let affinity = c.service.spec.as_ref().unwrap().session_affinity.as_deref();
    assert_eq!(affinity, Some("ClientIP"), "a session stays with the replica that created it");
    let doc: Value = serde_json::from_str(&c.config_map.data.as_ref().unwrap()["server.json"]).unwrap();
    assert_eq!(doc["transport"], transport);
}

#[test]
fn stdio_server_runs_inside_the_gateway() {
    let s = server(
        "apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: t}\nspec: {transport: stdio, command: [npx, server-everything], args: [stdio]}\n",
    );
    let c = build(&s, None, &[]);
    let pod = pod_spec(&c.deployment);
    assert_eq!(pod.containers.len(), 1, "no sidecar: the gateway is the server container's process");
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.args.as_deref(), Some(&["--install-to=/opt/mcp-gateway/mcp-gateway".to_string()][..]));
    let ctr = &pod.containers[0];
    let cmd = ctr.command.clone().unwrap();
    assert_eq!(&cmd[..2], &["/opt/mcp-gateway/mcp-gateway".to_string(), "--stdio".to_string()]);
    let sep = cmd.iter().position(|a| a == "--").unwrap();
    assert_eq!(&cmd[sep + 1..], &["npx", "server-everything", "stdio"]);
    assert!(ctr.args.is_none());
    assert!(ctr.stdin.is_none());
    assert_eq!(ctr.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    let mounts: Vec<_> = ctr.volume_mounts.as_ref().unwrap().iter().map(|m| m.mount_path.as_str()).collect();
    assert!(mounts.contains(&"/opt/mcp-gateway") && mounts.contains(&"/etc/mcp"), "{mounts:?}");
    let env = ctr.env.as_ref().unwrap();
    assert!(env.iter().any(|e| e.name == "MCP_TRANSPORT" && e.value.as_deref() == Some("stdio")));
}

#[test]
fn images_are_pulled_if_not_present_and_pods_drain_before_stop() {
    let s = server("apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: t}\nspec: {image: \"mcp-rs:latest\", port: 9090}\n");
    let c = build(&s, None, &[]);
    let pod = pod_spec(&c.deployment);
    let pre_stop = |ctr: &k8s_openapi::api::core::v1::Container| {
        ctr.lifecycle.clone().and_then(|l| l.pre_stop).expect("a preStop hook")
    };
    for ctr in &pod.containers {
        assert_eq!(ctr.image_pull_policy.as_deref(), Some("IfNotPresent"), "{}: also for :latest", ctr.name);
    }
    // The gateway drains itself over its drain socket, named by its admin port (moved aside from
    // the server's 9090); the server container waits for that (by number: it declares no admin
    // port).
    let gateway = pod.containers.iter().find(|c| c.name == "gateway").unwrap();
    let exec = pre_stop(gateway).exec.and_then(|e| e.command);
    assert_eq!(exec, Some(vec!["/mcp-gateway".to_string(), "--drain=127.0.0.1:9091".into()]));
    let wait = pre_stop(&pod.containers[0]).http_get.expect("an httpGet hook on the server container");
    assert_eq!((wait.path.as_deref(), &wait.port), (Some("/drained"), &IntOrString::Int(9091)));
    // A stdio server container runs the gateway itself, installed into it.
    let stdio = server("apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: t}\nspec: {transport: stdio, command: [srv]}\n");
    let pod = pod_spec(&build(&stdio, None, &[]).deployment).clone();
    assert_eq!(pod.containers.len(), 1);
    let exec = pre_stop(&pod.containers[0]).exec.and_then(|e| e.command);
    assert_eq!(exec, Some(vec!["/opt/mcp-gateway/mcp-gateway".to_string(), "--drain=127.0.0.1:9090".into()]));
    // The spec's policy is the server's and its plugins' (sidecars and workloads), not the
    // gateway's (the operator's versioned image).
    let explicit = server("apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: t}\nspec: {imagePullPolicy: Always}\n");
    let (sidecar, workload) = (plugin("wp", "Process", ""), plugin("db", "Container", ""));
    let c = build(&explicit, None, &[&sidecar, &workload]);
    let pod = pod_spec(&c.deployment);
    let policies: Vec<_> = pod.containers.iter().map(|c| (c.name.as_str(), c.image_pull_policy.as_deref())).collect();
    assert_eq!(
        policies,
        [("server", Some("Always")), ("gateway", Some("IfNotPresent")), ("plugin-wp", Some("Always"))],
        "the spec wins for the server's and plugins' images"
    );
    let inits: Vec<_> = pod.init_containers.iter().flatten().map(|c| c.image_pull_policy.as_deref()).collect();
    assert!(inits.iter().all(|p| *p == Some("IfNotPresent")), "{inits:?}");
    let plugin_pod = pod_spec(&c.plugin_deployments[0]);
    assert_eq!(plugin_pod.containers[0].image_pull_policy.as_deref(), Some("Always"), "a Container plugin's too");
}

#[test]
fn gateway_ports_step_aside_for_the_server() {
    assert_eq!(gateway_ports(3000), GatewayPorts { listen: 8443, admin: 9090 });
    assert_eq!(gateway_ports(8443), GatewayPorts { listen: 8444, admin: 9090 });
    assert_eq!(gateway_ports(9090), GatewayPorts { listen: 8443, admin: 9091 });
}

#[test]
fn policy_secrets_are_mounted_read_only_into_the_gateway_only() {
    let pol = policy(
        "{enabled: true, authentication: {required: true, methods: [oauth2, apikey], oauth2: {introspectionUrl: \"https://a/i\", clientSecretRef: {name: oauth2-client}}, apiKeys: {secretRef: {name: keys}}}, encryption: {tlsEnabled: true, certSecretName: tls}, audit: {enabled: true}}",
    );
    let c = build(&guide_server(), Some(&pol), &[]);
    let pod = pod_spec(&c.deployment);
    let gw = pod.containers.iter().find(|c| c.name == "gateway").unwrap();
    let mounts: Vec<_> =
        gw.volume_mounts.as_ref().unwrap().iter().map(|m| (m.mount_path.as_str(), m.read_only)).collect();
    assert!(mounts.contains(&("/var/run/secrets/mcp/oauth2-client", Some(true))), "{mounts:?}");
    assert!(mounts.contains(&("/var/run/secrets/mcp/keys", Some(true))));
    assert!(mounts.contains(&("/var/log/mcp-audit", None)));
    assert!(gw.args.as_ref().unwrap().contains(&"--audit-dir=/var/log/mcp-audit".to_string()));
    let server_mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
    assert!(
        server_mounts.iter().all(|m| !m.mount_path.starts_with("/var/run/secrets/mcp")),
        "the server sees no Secret"
    );
    let secret_volumes: Vec<_> = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .filter_map(|v| v.secret.as_ref())
        .map(|s| s.secret_name.clone().unwrap())
        .collect();
    assert_eq!(secret_volumes, vec!["keys", "oauth2-client"], "TLS comes through the config volume, once");
}

#[test]
fn enforced_policy_admits_only_the_gateway_ports() {
    let pol = policy("{enabled: true, rateLimiting: {enabled: true, requestsPerMinute: 10}}");
    let c = build(&guide_server(), Some(&pol), &[]);
    let np = c.network_policies[0].spec.as_ref().unwrap();
    let ports: Vec<_> =
        np.ingress.as_ref().unwrap().iter().map(|r| r.ports.as_ref().unwrap()[0].port.clone().unwrap()).collect();
    assert_eq!(ports, vec![IntOrString::Int(8443), IntOrString::Int(9090)], "spec.port itself is not reachable");
    let off = policy("{enabled: false}");
    assert!(build(&guide_server(), Some(&off), &[]).network_policies.is_empty());
}

#[test]
fn the_operator_sets_exactly_its_reserved_variables_and_the_users_follow() {
    let s = server("apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: e}\nspec: {env: [{name: RUST_LOG, value: info}, {name: OTHER, value: $(MCP_PORT)}]}\n");
    let env = pod_spec(&build(&s, None, &[]).deployment).containers[0].env.clone().unwrap();
    let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
    let mut expected: Vec<_> = OPERATOR_ENV.iter().map(|(name, _)| *name).collect();
    expected.extend(["RUST_LOG", "OTHER"]);
    // OPERATOR_ENV is what spec.env may not name: it must list every variable the builder sets.
    assert_eq!(names, expected);
}

#[test]
fn a_pull_secret_named_twice_is_passed_once() {
    let s = server("apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: e}\nspec: {imagePullSecrets: [{name: a}, {name: b}, {name: a}]}\n");
    let secrets = pod_spec(&build(&s, None, &[]).deployment).image_pull_secrets.clone().unwrap();
    let names: Vec<_> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    // A plugin in a pod of its own pulls its image with them too, as it would as a sidecar.
    let c = build(&s, None, &[&plugin("isolated", "Container", "")]);
    let secrets = pod_spec(&c.plugin_deployments[0]).image_pull_secrets.clone().unwrap();
    let names: Vec<_> = secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[rstest]
#[case::none("None", 3, true, true)]
#[case::process("Process", 3, false, false)]
#[case::container("Container", 2, false, false)]
#[case::vm("VM", 2, false, false)]
fn isolation_levels_map_to_pod_shapes(
    #[case] level: &str,
    #[case] containers: usize,
    #[case] shares_processes: bool,
    #[case] shares_volume: bool,
) {
    let p = plugin("wp", level, "");
    let c = build(&guide_server(), None, &[&p]);
    let pod = pod_spec(&c.deployment);
    assert_eq!(pod.containers.len(), containers);
    assert_eq!(pod.share_process_namespace.unwrap_or(false), shares_processes);
    let server_mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
    assert_eq!(server_mounts.iter().any(|m| m.name == "plugin-shared"), shares_volume);
    let sidecar = !matches!(level, "Container" | "VM");
    assert_eq!(c.plugin_deployments.len(), usize::from(!sidecar));
    assert_eq!(c.plugin_services.len(), usize::from(!sidecar));
    if sidecar {
        let ctr = pod.containers.iter().find(|c| c.name == "plugin-wp").expect("plugin sidecar");
        let read_only = ctr.security_context.as_ref().unwrap().read_only_root_filesystem;
        assert_eq!(read_only, (level == "Process").then_some(true), "Process gets its own read-only filesystem");
    } else {
        let d = &c.plugin_deployments[0];
        assert_eq!(d.metadata.name.as_deref(), Some("my-mcp-server-wp"));
        let runtime = pod_spec(d).runtime_class_name.as_deref();
        assert_eq!(runtime, (level == "VM").then_some(DEFAULT_VM_RUNTIME_CLASS));
        assert_eq!(c.plugin_services[0].metadata.name.as_deref(), Some("my-mcp-server-wp"));
    }
}

#[test]
fn plugins_json_lists_endpoints_and_config_in_dependency_order() {
    let base = plugin("base-plugin", "None", "port: 9001");
    let wp =
        plugin("wordpress-plugin", "Container", "config: {api_endpoint: \"https://api.wordpress.org\", timeout: 30s}");
    let c = build(&guide_server(), None, &[&base, &wp]);
    let data = c.config_map.data.as_ref().unwrap();
    let list: Value = serde_json::from_str(&data[PLUGINS_JSON]).unwrap();
    assert_eq!(list[0]["plugin"], "base-plugin");
    assert_eq!(list[0]["endpoint"], "http://127.0.0.1:9001");
    assert_eq!(list[0]["isolation"], "None");
    assert_eq!(list[1]["name"], "wordpress-plugin");
    assert_eq!(list[1]["version"], "1.0.0");
    assert_eq!(list[1]["endpoint"], "http://my-mcp-server-wordpress-plugin.default.svc:8080");
    assert_eq!(list[1]["config"]["api_endpoint"], "https://api.wordpress.org");
    let file: Value = serde_json::from_str(&data["plugin-wordpress-plugin.json"]).unwrap();
    assert_eq!(file["timeout"], "30s");
    let vol = &pod_spec(&c.plugin_deployments[0]).volumes.as_ref().unwrap()[0];
    let items = vol.config_map.as_ref().unwrap().items.as_ref().unwrap();
    assert_eq!((items[0].key.as_str(), items[0].path.as_str()), ("plugin-wordpress-plugin.json", "config.json"));
}

#[test]
fn network_isolated_plugin_workload_admits_only_its_server() {
    let p = plugin("wp", "Container", "");
    let mut isolated = p.clone();
    isolated.spec.isolation.network_isolation = true;
    assert!(build(&guide_server(), None, &[&p]).network_policies.is_empty());
    let c = build(&guide_server(), None, &[&isolated]);
    assert_eq!(c.network_policies.len(), 1);
    let np = c.network_policies[0].spec.as_ref().unwrap();
    let from = np.ingress.as_ref().unwrap()[0].from.as_ref().unwrap();
    let sel = from[0].pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap();
    assert_eq!(sel[LABEL_INSTANCE], "my-mcp-server");
    assert_eq!(sel[LABEL_COMPONENT], "server");
}

#[test]
fn network_isolated_sidecar_closes_every_port_but_mcp() {
    let mut p = plugin("wp", "Process", "");
    p.spec.isolation.network_isolation = true;
    let c = build(&guide_server(), None, &[&p]);
    let np = c.network_policies[0].spec.as_ref().unwrap();
    let rule = &np.ingress.as_ref().unwrap()[0];
    assert!(rule.from.is_none());
    assert_eq!(rule.ports.as_ref().unwrap().len(), 1);
}

#[test]
fn policy_renders_into_config_with_tls_mount_and_network_policy() {
    let pol = policy(
        "{enabled: true, encryption: {tlsEnabled: true, tlsVersion: \"1.3\", certSecretName: tls-cert-secret}, network: {allowedCIDRs: [10.0.0.0/8, 192.168.1.10/24, \"::ffff:172.16.0.0/108\"], allowedNamespaces: [ingress]}}",
    );
    let c = build(&guide_server(), Some(&pol), &[]);
    let doc: Value = serde_json::from_str(&c.config_map.data.as_ref().unwrap()[POLICY_JSON]).unwrap();
    assert_eq!(doc["enabled"], true);
    assert_eq!(doc["tls"]["minVersion"], "1.3");
    let vol = &pod_spec(&c.deployment).volumes.as_ref().unwrap()[0];
    let sources = vol.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let secret = sources[1].secret.as_ref().unwrap();
    assert_eq!(secret.name, "tls-cert-secret");
    assert_eq!(secret.items.as_ref().unwrap()[0].path, "tls/tls.crt");
    let np = c.network_policies[0].spec.as_ref().unwrap();
    let from = np.ingress.as_ref().unwrap()[0].from.as_ref().unwrap();
    let cidrs: Vec<_> = from.iter().filter_map(|p| p.ip_block.as_ref()).map(|b| b.cidr.as_str()).collect();
    // As every supported API server takes them (1.36's refuses host bits and mapped addresses).
    assert_eq!(cidrs, ["10.0.0.0/8", "192.168.1.0/24", "172.16.0.0/12"]);
    assert!(from[3].namespace_selector.is_some());
}

#[test]
fn disabled_policy_renders_no_enforcement_and_mounts_nothing() {
    let pol = policy("{enabled: false, encryption: {tlsEnabled: true, certSecretName: tls-cert-secret}}");
    let c = build(&guide_server(), Some(&pol), &[]);
    let doc: Value = serde_json::from_str(&c.config_map.data.as_ref().unwrap()[POLICY_JSON]).unwrap();
    assert_eq!(doc["enabled"], false);
    let vol = &pod_spec(&c.deployment).volumes.as_ref().unwrap()[0];
    assert_eq!(vol.projected.as_ref().unwrap().sources.as_ref().unwrap().len(), 1);
}

#[test]
fn hash_changes_with_policy_plugins_and_secret_versions_only() {
    let base = hash_of(&build(&guide_server(), None, &[]));
    let mut scaled = guide_server();
    scaled.spec.replicas = 5;
    assert_eq!(hash_of(&build(&scaled, None, &[])), base, "scaling does not roll pods");
    let pol = policy("{enabled: true, rateLimiting: {enabled: true, requestsPerMinute: 10}}");
    let with_policy = hash_of(&build(&guide_server(), Some(&pol), &[]));
    assert_ne!(with_policy, base);
    let p = plugin("wp", "None", "");
    assert_ne!(hash_of(&build(&guide_server(), None, &[&p])), base);
    let defaults = Defaults::default();
    let server = guide_server();
    let rotated = build_children(&BuildInputs {
        server: &server,
        policy: Some(&pol),
        secret_versions: [("tls".to_string(), "42".to_string())].into(),
        plugins: vec![],
        defaults: &defaults,
    });
    assert_ne!(hash_of(&rotated), with_policy, "a Secret rotation rolls pods");
}

#[test]
fn build_is_deterministic() {
    let p = plugin("wp", "None", "config: {b: 1, a: 2}");
    let a = serde_json::to_string(&build(&guide_server(), None, &[&p]).deployment).unwrap();
    let b = serde_json::to_string(&build(&guide_server(), None, &[&p]).deployment).unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_config_map_over_the_limit_is_refused_before_apply_naming_the_plugin_config() {
    let small = plugin("small", "None", "config: {a: 1}");
    let big = plugin("big", "None", &format!("config: {{blob: \"{}\"}}", "x".repeat(600 * 1024)));
    let server = guide_server();
    let defaults = Defaults::default();
    fn inputs<'a>(server: &'a McpServer, defaults: &'a Defaults, plugins: Vec<&'a Plugin>) -> BuildInputs<'a> {
        BuildInputs { server, policy: None, secret_versions: Default::default(), plugins, defaults }
    }
    let fits = inputs(&server, &defaults, vec![&small]);
    assert_eq!(config_map_too_large(&fits, &build_config_map(&fits)), None);
    // 600 KiB is stored twice (plugins.json and the plugin's own file): over 1 MiB.
    let over = inputs(&server, &defaults, vec![&small, &big]);
    let problem = config_map_too_large(&over, &build_config_map(&over)).expect("too large");
    assert!(problem.contains("my-mcp-server-config"), "{problem}");
    assert!(problem.contains("spec.config of Plugin \"big\""), "{problem}");
    assert!(problem.find("\"big\"") < problem.find("\"small\""), "largest first: {problem}");
}

#[test]
fn plugin_container_names_fit_and_stay_distinct() {
    let a = plugin(&format!("{}-a", "p".repeat(60)), "None", "");
    let b = plugin(&format!("{}-b", "p".repeat(60)), "None", "");
    let c = build(&guide_server(), None, &[&a, &b]);
    let names: Vec<String> = pod_spec(&c.deployment).containers.iter().map(|c| c.name.clone()).collect();
    assert!(names.iter().all(|n| n.len() <= 63), "{names:?}");
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}

/// What the kubelet makes of a container's command, args and env values: `$$` is `$`, and
/// `$(NAME)` is the value of a variable defined before it (else left as written).
fn kubelet_expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = rest.strip_prefix("$(").and_then(|r| r.split_once(')')) {
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[..name.len() + 3]),
            }
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out + rest
}

#[rstest]
#[case::http("http")]
#[case::stdio("stdio")]
fn a_path_with_dollars_reaches_the_server_and_the_gateway_as_written(#[case] transport: &str) {
    let path = "/a$(MCP_PORT)$$b$";
    let s = server(&format!(
        "apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: e}}\nspec: {{transport: {transport}, path: '{path}', command: [srv, '$(MCP_PORT)']}}\n"
    ));
    let pod = pod_spec(&build(&s, None, &[]).deployment).clone();
    for c in &pod.containers {
        let mut env: Vec<(String, String)> = vec![];
        for var in c.env.iter().flatten() {
            let value = kubelet_expand(var.value.as_deref().unwrap_or_default(), &env);
            env.push((var.name.clone(), value));
        }
        if c.name == "server" {
            let value = env.iter().find(|(n, _)| n == "MCP_PATH").map(|(_, v)| v.as_str());
            assert_eq!(value, Some(path), "{}: MCP_PATH", c.name);
        }
        let line: Vec<_> =
            c.command.iter().flatten().chain(c.args.iter().flatten()).map(|a| kubelet_expand(a, &env)).collect();
        let gateway = (transport == "stdio") == (c.name == "server");
        if gateway {
            let flag = line.iter().find(|a| a.starts_with("--path="));
            assert_eq!(flag, Some(&format!("--path={path}")), "{}: the gateway's path", c.name);
            if transport == "http" {
                let upstream = line.iter().find(|a| a.starts_with("--upstream=")).expect("an upstream");
                assert!(upstream.ends_with(path), "{}: {upstream}", c.name);
            }
        }
        // The user's own command is expanded as in any container.
        if transport == "stdio" && c.name == "server" {
            assert_eq!(line.last().map(String::as_str), Some("3000"), "the user's $(MCP_PORT) expands");
        }
    }
}

#[test]
fn a_plugin_version_with_dollars_reaches_the_plugin_as_written() {
    let mut p = plugin("dollar", "Container", "");
    p.spec.version = "1.0$(MCP_PLUGIN_PORT)$$x".into();
    let c = build(&guide_server(), None, &[&p]);
    let container = &pod_spec(&c.plugin_deployments[0]).containers[0];
    let mut env: Vec<(String, String)> = vec![];
    for var in container.env.iter().flatten() {
        let value = kubelet_expand(var.value.as_deref().unwrap_or_default(), &env);
        env.push((var.name.clone(), value));
    }
    let version = env.iter().find(|(n, _)| n == "MCP_PLUGIN_VERSION").map(|(_, v)| v.as_str());
    assert_eq!(version, Some("1.0$(MCP_PLUGIN_PORT)$$x"));
}
