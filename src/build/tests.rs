//! Unit tests of the pure builders: each transport, isolation level and policy combination.

use super::*;
use crate::api::*;
use crate::consts::*;
use rstest::rstest;
use serde_json::Value;

pub(crate) fn server(yaml: &str) -> McpServer {
    let mut s: McpServer = serde_yaml::from_str(yaml).expect("valid MCPServer YAML");
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
    let mut p: Plugin = serde_yaml::from_str(&format!(
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
    serde_yaml::from_str(&format!(
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
#[case::http("http", true, "http")]
#[case::websocket("websocket", true, "kubernetes.io/ws")]
#[case::stdio("stdio", false, "http")]
fn transports_shape_the_container(#[case] transport: &str, #[case] has_port: bool, #[case] app_protocol: &str) {
    let s = server(&format!(
        "apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: t}}\nspec: {{transport: {transport}, command: [srv], port: 4000}}\n"
    ));
    let c = build(&s, None, &[]);
    let ctr = &pod_spec(&c.deployment).containers[0];
    assert_eq!(ctr.ports.is_some(), has_port);
    assert_eq!(ctr.readiness_probe.is_some(), has_port);
    assert_eq!(ctr.stdin, (!has_port).then_some(true));
    assert_eq!(ctr.command.as_deref(), Some(&["srv".to_string()][..]));
    let env = ctr.env.as_ref().unwrap();
    assert!(env.iter().any(|e| e.name == "MCP_TRANSPORT" && e.value.as_deref() == Some(transport)));
    let port = &c.service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!((port.port, port.app_protocol.as_deref()), (4000, Some(app_protocol)));
    let doc: Value = serde_json::from_str(&c.config_map.data.as_ref().unwrap()["server.json"]).unwrap();
    assert_eq!(doc["transport"], transport);
}

#[test]
fn user_env_comes_after_ours_so_it_wins() {
    let s = server("apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: e}\nspec: {env: [{name: RUST_LOG, value: info}, {name: MCP_PATH, value: /x}]}\n");
    let env = pod_spec(&build(&s, None, &[]).deployment).containers[0].env.clone().unwrap();
    let last_path = env.iter().rposition(|e| e.name == "MCP_PATH").unwrap();
    assert_eq!(env[last_path].value.as_deref(), Some("/x"));
    assert_eq!(env.last().unwrap().name, "MCP_PATH");
}

#[rstest]
#[case::none("None", 2, true, true)]
#[case::process("Process", 2, false, false)]
#[case::container("Container", 1, false, false)]
#[case::vm("VM", 1, false, false)]
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
        let ctr = &pod.containers[1];
        assert_eq!(ctr.name, "plugin-wp");
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
        "{enabled: true, encryption: {tlsEnabled: true, tlsVersion: \"1.3\", certSecretName: tls-cert-secret}, network: {allowedCIDRs: [10.0.0.0/8], allowedNamespaces: [ingress]}}",
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
    assert_eq!(from[0].ip_block.as_ref().unwrap().cidr, "10.0.0.0/8");
    assert!(from[1].namespace_selector.is_some());
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
