//! Chart unit tests: `helm template` (the real helm from the tools cache, no cluster) with the
//! values a platform team sets, asserting on the rendered objects. Run by `just lint`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/mcp-operator")
}

/// `helm template RELEASE chart -n NAMESPACE ARGS...`, as objects.
fn render(release: &str, namespace: &str, args: &[&str]) -> Result<Vec<Value>> {
    let out = Command::new("helm")
        .args(["template", release])
        .arg(chart())
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .context("run helm (hack/tools.sh helm puts it on PATH)")?;
    if !out.status.success() {
        bail!("helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut objects = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            objects.push(v);
        }
    }
    Ok(objects)
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "one {kind}: {found:?}");
    found[0]
}

fn names(objects: &[Value], kinds: &[&str]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| kinds.contains(&o["kind"].as_str().unwrap_or_default()))
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect()
}

fn container(objects: &[Value]) -> Value {
    one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0].clone()
}

fn args(objects: &[Value]) -> Vec<String> {
    container(objects)["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

const CLUSTER_SCOPED: &[&str] = &["ClusterRole", "ClusterRoleBinding"];

#[test]
fn the_guides_release_keeps_the_names_the_guide_uses() -> Result<()> {
    let objects = render("mcp-operator", "mcp-system", &[])?;
    assert_eq!(
        names(&objects, &["Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"]),
        BTreeSet::from(
            [
                "Deployment/mcp-operator",
                "Service/mcp-operator-metrics",
                "ServiceAccount/mcp-operator",
                "ClusterRole/mcp-operator",
                "ClusterRoleBinding/mcp-operator"
            ]
            .map(String::from)
        )
    );
    let labels = &one(&objects, "Deployment")["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "mcp-operator", "the guide's kubectl logs -l selector");
    let args = args(&objects);
    assert!(args.contains(&"--leader-election-lease=mcp-operator-leader".into()), "{args:?}");
    assert!(args.contains(&"--leader-election-owner=mcp-operator".into()), "{args:?}");
    // Default image tags are the chart's appVersion, for the operator and the gateway alike.
    let chart: Value = serde_norway::from_str(&std::fs::read_to_string(chart().join("Chart.yaml"))?)?;
    let app = chart["appVersion"].as_str().context("appVersion")?;
    assert_eq!(container(&objects)["image"], format!("ghcr.io/n-takatsu/mcp-operator:{app}"));
    assert!(args.contains(&format!("--gateway-image=ghcr.io/n-takatsu/mcp-gateway:{app}")), "{args:?}");
    Ok(())
}

#[test]
fn a_second_release_in_another_namespace_has_names_of_its_own() -> Result<()> {
    let first = render("mcp-operator", "mcp-system", &[])?;
    let second = render("tenant-b", "tenant-b", &["--set", "watchNamespaces={tenant-b}"])?;
    let (a, b) = (names(&first, CLUSTER_SCOPED), names(&second, CLUSTER_SCOPED));
    assert!(a.is_disjoint(&b), "cluster-scoped names collide: {a:?} / {b:?}");
    assert!(b.contains("ClusterRole/tenant-b-mcp-operator"), "{b:?}");
    for o in &second {
        if !CLUSTER_SCOPED.contains(&o["kind"].as_str().unwrap()) {
            assert_eq!(o["metadata"]["namespace"], "tenant-b", "{}", o["metadata"]["name"]);
        }
    }
    let args = args(&second);
    assert!(args.contains(&"--leader-election-lease=tenant-b-mcp-operator-leader".into()), "{args:?}");
    assert!(args.contains(&"--namespaces=tenant-b".into()), "{args:?}");
    // The binding names the second release's own ServiceAccount.
    let binding = one(&second, "ClusterRoleBinding");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "tenant-b-mcp-operator", "namespace": "tenant-b"})
    );
    Ok(())
}

#[test]
fn name_overrides() -> Result<()> {
    let objects = render("x", "ns", &["--set", "fullnameOverride=ops", "--set", "nameOverride=mcp"])?;
    assert!(names(&objects, &["Deployment", "Service", "ClusterRole"])
        .is_superset(&BTreeSet::from(["Deployment/ops", "Service/ops-metrics", "ClusterRole/ops"].map(String::from))));
    assert_eq!(one(&objects, "Deployment")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "mcp");
    let over = render("x", "ns", &["--set", "fullnameOverride=not_a_name"]);
    assert!(over.is_err_and(|e| e.to_string().contains("fullnameOverride")), "schema refuses a bad name");
    Ok(())
}

/// In the cluster the gateway status is read from the pods: no `services/proxy` (which would let
/// the operator reach any Service through the API server); only with `gateway.statusVia=proxy`.
#[test]
fn services_proxy_is_granted_only_when_status_goes_through_the_proxy() -> Result<()> {
    let grants_proxy = |objects: &[Value]| {
        find(objects, "ClusterRole").iter().chain(find(objects, "Role").iter()).any(|role| {
            role["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["resources"].to_string().contains("services/proxy"))
        })
    };
    assert!(!grants_proxy(&render("mcp-operator", "mcp-system", &[])?));
    assert!(!grants_proxy(&render("mcp-operator", "mcp-system", &["--set", "watchNamespaces={a}"])?));
    assert!(grants_proxy(&render("mcp-operator", "mcp-system", &["--set", "gateway.statusVia=proxy"])?));
    let objects = render("mcp-operator", "mcp-system", &[])?;
    let args = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(args.as_array().unwrap().contains(&json!("--gateway-status-via=pod")), "{args}");
    Ok(())
}

#[test]
fn service_monitors_the_guides_and_the_charts_select_the_metrics_port() -> Result<()> {
    assert!(find(&render("mcp-operator", "mcp-system", &[])?, "ServiceMonitor").is_empty(), "off by default");
    let objects = render(
        "mcp-operator",
        "mcp-system",
        &["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=prometheus"],
    )?;
    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["namespace"], "mcp-system");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus", "serviceMonitor.labels");
    assert_eq!(monitor["spec"]["namespaceSelector"]["matchNames"], json!(["mcp-system"]));
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    // Both the chart's selector and the guide's hand-written one (app.kubernetes.io/name:
    // mcp-operator, port metrics) pick exactly the metrics Service, which has that port.
    let guides = json!({"app.kubernetes.io/name": "mcp-operator"});
    for selector in [&monitor["spec"]["selector"]["matchLabels"], &guides] {
        let selected: Vec<_> = find(&objects, "Service")
            .into_iter()
            .filter(|svc| {
                selector.as_object().unwrap().iter().all(|(k, v)| &svc["metadata"]["labels"][k.as_str()] == v)
            })
            .filter(|svc| svc["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == "metrics"))
            .map(|svc| svc["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(selected, ["mcp-operator-metrics"], "selector {selector}");
    }
    Ok(())
}

#[test]
fn pod_disruption_budget_is_configurable() -> Result<()> {
    let pdb = |args: &[&str]| -> Result<Option<Value>> {
        Ok(find(&render("mcp-operator", "mcp-system", args)?, "PodDisruptionBudget").first().map(|p| p["spec"].clone()))
    };
    assert_eq!(pdb(&[])?, None, "one replica: no PDB by default");
    assert_eq!(pdb(&["--set", "replicaCount=2"])?.unwrap()["maxUnavailable"], 1);
    assert_eq!(pdb(&["--set", "replicaCount=2", "--set", "podDisruptionBudget.enabled=false"])?, None);
    let forced = pdb(&["--set", "podDisruptionBudget.enabled=true", "--set", "podDisruptionBudget.minAvailable=1"])?;
    let forced = forced.unwrap();
    assert_eq!((forced["minAvailable"].clone(), forced.get("maxUnavailable")), (json!(1), None));
    Ok(())
}

#[test]
fn network_policy_egress_is_dns_the_api_server_and_gateway_admin_ports_only() -> Result<()> {
    let objects = render("mcp-operator", "mcp-system", &["--set", "networkPolicy.enabled=true"])?;
    let spec = &one(&objects, "NetworkPolicy")["spec"];
    let egress = spec["egress"].as_array().unwrap();
    assert!(egress.iter().all(|r| r.get("ports").is_some()), "no allow-all egress rule: {egress:?}");
    let ports: BTreeSet<(i64, String)> = egress
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap().iter())
        .map(|p| (p["port"].as_i64().unwrap(), p["protocol"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        ports,
        BTreeSet::from([
            (53, "UDP".into()),
            (53, "TCP".into()),
            (443, "TCP".into()),
            (6443, "TCP".into()),
            // Gateway status, read from the server pods' admin port.
            (9090, "TCP".into()),
            (9091, "TCP".into()),
        ])
    );
    let admin = &egress[2];
    assert_eq!(
        admin["to"][0]["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "mcp-server", "app.kubernetes.io/component": "server"}),
        "only to server pods"
    );
    assert_eq!(spec["ingress"][0]["ports"], json!([{"port": 8080, "protocol": "TCP"}]));
    let proxy = render(
        "mcp-operator",
        "mcp-system",
        &["--set", "networkPolicy.enabled=true", "--set", "gateway.statusVia=proxy"],
    )?;
    assert_eq!(
        one(&proxy, "NetworkPolicy")["spec"]["egress"].as_array().unwrap().len(),
        2,
        "no pod egress via the proxy"
    );

    let pinned = render(
        "mcp-operator",
        "mcp-system",
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
            "--set",
            "networkPolicy.apiServer.ports={6443}",
        ],
    )?;
    let api = &one(&pinned, "NetworkPolicy")["spec"]["egress"][1];
    assert_eq!(api["to"], json!([{"ipBlock": {"cidr": "10.0.0.1/32"}}]));
    assert_eq!(api["ports"], json!([{"port": 6443, "protocol": "TCP"}]));
    Ok(())
}

#[test]
fn extra_args_env_volumes_and_scheduling_reach_the_pod() -> Result<()> {
    let values = r#"
extraArgs: ["--log-format=text"]
extraEnv: [{name: HTTPS_PROXY, value: "http://proxy:3128"}]
extraVolumes: [{name: ca, configMap: {name: corp-ca}}]
extraVolumeMounts: [{name: ca, mountPath: /etc/corp-ca, readOnly: true}]
tolerations: [{key: dedicated, operator: Equal, value: ops, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: ops, operator: Exists}]}]}}}
topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app.kubernetes.io/name: mcp-operator}}}]
"#;
    let file = std::env::temp_dir().join(format!("mcp-chart-values-{}.yaml", std::process::id()));
    std::fs::write(&file, values)?;
    let objects = render("mcp-operator", "mcp-system", &["-f", file.to_str().unwrap()]);
    std::fs::remove_file(&file)?;
    let objects = objects?;
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert!(args(&objects).contains(&"--log-format=text".into()));
    assert!(c["env"].as_array().unwrap().iter().any(|e| e["name"] == "HTTPS_PROXY"));
    assert!(pod["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "ca"));
    assert!(pod["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "tmp"), "the chart's own volume stays");
    assert!(c["volumeMounts"].as_array().unwrap().iter().any(|m| m["mountPath"] == "/etc/corp-ca"));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert!(pod["affinity"]["nodeAffinity"].is_object());
    assert_eq!(pod["topologySpreadConstraints"][0]["topologyKey"], "kubernetes.io/hostname");
    Ok(())
}

#[test]
fn misspelt_values_are_refused() {
    for set in ["nmeOverride=x", "podDisruptionBudget.maxUnavalable=1", "networkPolicy.apiserver.ports={443}"] {
        let r = render("mcp-operator", "mcp-system", &["--set", set]);
        assert!(r.is_err(), "--set {set} must be refused by values.schema.json");
    }
}

#[test]
fn crd_upgrades_are_granted_by_name_and_only_when_enabled() -> Result<()> {
    let crd_rules = |objects: &[Value]| -> Vec<Value> {
        one(objects, "ClusterRole")["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["resources"] == json!(["customresourcedefinitions"]))
            .cloned()
            .collect()
    };
    let on = render("mcp-operator", "mcp-system", &[])?;
    let names =
        json!(["mcpservers.mcp.n-takatsu.dev", "plugins.mcp.n-takatsu.dev", "securitypolicies.mcp.n-takatsu.dev"]);
    let rules = crd_rules(&on);
    assert!(rules.iter().any(|r| r["verbs"] == json!(["update"]) && r["resourceNames"] == names), "{rules:?}");
    assert!(rules
        .iter()
        .all(|r| !r["verbs"].to_string().contains("create") && !r["verbs"].to_string().contains("delete")));
    assert!(args(&on).contains(&"--upgrade-crds=true".into()));

    let off = render("mcp-operator", "mcp-system", &["--set", "crds.upgrade=false"])?;
    assert!(crd_rules(&off).iter().all(|r| r["verbs"] == json!(["get"])), "{:?}", crd_rules(&off));
    assert!(args(&off).contains(&"--upgrade-crds=false".into()));
    Ok(())
}
