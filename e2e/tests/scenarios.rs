//! Every scenario of the user guide against a real API server, through real kubectl and helm.
//! Tests are named after the scenario they drive.

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use mcp_operator::api::{McpServer, McpServerPhase, Plugin, PluginPhase, SecurityPolicy, SecurityPolicyPhase};
use mcp_operator_e2e::wait::eventually;
use mcp_operator_e2e::{env, guide, hs256_token, wait_for, wait_gone, TestNamespace};
use rstest::rstest;
use std::collections::BTreeSet;

fn phase_is(phase: McpServerPhase, ready: i32) -> impl Fn(Option<&McpServer>) -> bool {
    move |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.phase == phase && st.ready_replicas == ready && st.observed_generation == s.unwrap().metadata.generation
        })
    }
}

fn condition(s: &McpServer, type_: &str) -> (String, String, String) {
    let c = s.status.as_ref().and_then(|st| st.conditions.iter().find(|c| c.type_ == type_)).expect(type_);
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

async fn running(ns: &TestNamespace, name: &str, ready: i32) -> Result<McpServer> {
    wait_for(
        &ns.api::<McpServer>(),
        name,
        &format!("Running with {ready} ready"),
        phase_is(McpServerPhase::Running, ready),
    )
    .await
}

async fn pod_uids(ns: &TestNamespace, selector: &str) -> Result<BTreeSet<String>> {
    let pods = ns.api::<Pod>().list(&ListParams::default().labels(selector)).await?;
    Ok(pods.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).filter_map(|p| p.uid()).collect())
}

/// The guide's basic deployment, Running with both replicas.
async fn deploy_guide_server(ns: &TestNamespace) -> Result<McpServer> {
    ns.sh_ok(guide::DEPLOY)?;
    running(ns, "my-mcp-server", 2).await
}

// ---------------------------------------------------------------- install

#[tokio::test(flavor = "multi_thread")]
async fn install_helm_registers_crds_and_runs_operator() -> Result<()> {
    let env = env();
    let _install = env.exclusive().await;
    env.admin_sh(&format!("{} --ignore-not-found", guide::UNINSTALL_HELM)).ok();
    env.stop_operator()?;
    let out = env.admin_sh(guide::INSTALL_HELM)?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("STATUS: deployed"), "helm install output: {text}");
    env.admin_sh("kubectl rollout status deployment mcp-operator -n mcp-system --timeout=120s")?;
    env.start_operator().await?;
    let pods = String::from_utf8_lossy(&env.admin_sh(guide::CHECK_PODS)?.stdout).into_owned();
    ensure!(pods.lines().any(|l| l.starts_with("mcp-operator-") && l.contains("Running")), "{pods}");
    let crds = String::from_utf8_lossy(&env.admin_sh(guide::CHECK_CRDS)?.stdout).into_owned();
    for crd in ["mcpservers.mcp.n-takatsu.dev", "plugins.mcp.n-takatsu.dev", "securitypolicies.mcp.n-takatsu.dev"] {
        ensure!(crds.contains(crd), "{crd} missing from:\n{crds}");
    }
    // The operator is really working: a server comes up.
    let ns = env.namespace("install-helm").await?;
    deploy_guide_server(&ns).await?;
    Ok(())
}

/// A second release (a namespace-scoped tenant) rendered with `helm template` applies next to the
/// guide's release without touching it: cluster-scoped names of its own, its own Lease.
#[tokio::test(flavor = "multi_thread")]
async fn install_a_second_release_in_another_namespace_applies_beside_the_first() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("tenant").await?;
    let release = &ns.name;
    let template = format!(
        "helm template {release} charts/mcp-operator --namespace {release} --set 'watchNamespaces={{{release}}}'"
    );
    let before = env.admin_sh("kubectl get clusterrole mcp-operator -o jsonpath='{.metadata.resourceVersion}'")?;
    let result = async {
        let applied = String::from_utf8_lossy(&env.admin_sh(&format!("{template} | kubectl apply -f -"))?.stdout).into_owned();
        ensure!(applied.contains(&format!("clusterrole.rbac.authorization.k8s.io/{release}-mcp-operator created")), "{applied}");
        ensure!(!applied.contains("configured"), "nothing of the first release is changed: {applied}");
        let after = env.admin_sh("kubectl get clusterrole mcp-operator -o jsonpath='{.metadata.resourceVersion}'")?;
        ensure!(before.stdout == after.stdout, "the first release's ClusterRole is untouched");
        let sa = format!("system:serviceaccount:{release}:{release}-mcp-operator");
        let can = |verb_ns: &str| -> Result<String> {
            let out = env.sh_with(&env.cluster.kubeconfig, &format!("kubectl auth can-i patch mcpservers --as={sa} -n {verb_ns}"))?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        ensure!(can(release)? == "yes", "the tenant's operator may work in its namespace");
        ensure!(can("default")? == "no", "and nowhere else");
        let args = String::from_utf8_lossy(
            &env.admin_sh(&format!("kubectl get deployment {release}-mcp-operator -n {release} -o jsonpath='{{.spec.template.spec.containers[0].args}}'"))?.stdout,
        )
        .into_owned();
        ensure!(args.contains(&format!("--leader-election-lease={release}-mcp-operator-leader")), "{args}");
        Ok(())
    }
    .await;
    env.admin_sh(&format!("{template} | kubectl delete --ignore-not-found -f -"))?;
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn install_kubectl_manifests_runs_operator() -> Result<()> {
    let env = env();
    let _install = env.exclusive().await;
    env.stop_operator()?;
    env.admin_sh(guide::UNINSTALL_HELM)?;
    let ns = env.namespace("install-kubectl").await?;
    let result = async {
        ns.sh_ok(guide::INSTALL_KUBECTL)?;
        env.admin_sh("kubectl rollout status deployment mcp-operator -n mcp-system --timeout=120s")?;
        env.start_operator().await?;
        ensure!(String::from_utf8_lossy(&env.admin_sh(guide::CAN_I)?.stdout).trim() == "yes");
        deploy_guide_server(&ns).await?;
        // examples.yaml came along into the current namespace.
        ns.api::<SecurityPolicy>().get("default-policy").await?;
        Ok(())
    }
    .await;
    // Back to the chart install the other scenarios expect.
    env.stop_operator()?;
    env.admin_sh(&format!("{} --ignore-not-found", guide::UNINSTALL_KUBECTL))?;
    env.reset_install().await?;
    result
}

// ---------------------------------------------------------------- deploy

#[tokio::test(flavor = "multi_thread")]
async fn deploy_basic_mcpserver_creates_children_and_status() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("deploy").await?;
    let server = deploy_guide_server(&ns).await?;
    let st = server.status.as_ref().context("status")?;
    ensure!(st.replicas == 2 && st.ready.as_deref() == Some("2/2"));
    ensure!(st.url.as_deref() == Some(&*format!("http://my-mcp-server.{}.svc:3000/mcp", ns.name)));
    ensure!(st.selector.as_deref().is_some_and(|s| s.contains("app.kubernetes.io/instance=my-mcp-server")));
    for (t, want) in [
        ("Available", "True"),
        ("Progressing", "True"),
        ("Degraded", "False"),
        ("SecurityPolicyResolved", "True"),
        ("PluginsResolved", "True"),
    ] {
        ensure!(condition(&server, t).0 == want, "{t}: {:?}", condition(&server, t));
    }
    let d = ns.api::<Deployment>().get("my-mcp-server").await?;
    ensure!(d.owner_references().iter().any(|o| o.kind == "MCPServer" && o.controller == Some(true)));
    ns.api::<ConfigMap>().get("my-mcp-server-config").await?;
    ns.api::<k8s_openapi::api::core::v1::Service>().get("my-mcp-server").await?;
    ns.api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>().get("my-mcp-server").await?;
    ensure!(pod_uids(&ns, "app=my-mcp-server").await?.len() == 2, "pods carry app=NAME");

    let out = ns.sh_ok(guide::STATUS)?;
    let header = out.lines().next().unwrap_or_default();
    for col in ["NAME", "PHASE", "READY", "TRANSPORT", "POLICY", "TOOLS", "URL", "AGE"] {
        ensure!(header.contains(col), "column {col} in {header}");
    }
    ensure!(
        out.lines().nth(1).is_some_and(|l| l.contains("Running") && l.contains("2/2") && l.contains("http")),
        "{out}"
    );
    ensure!(out.contains("Available") && out.contains("Created"), "describe shows conditions and events:\n{out}");
    let all = ns.sh_ok("kubectl get mcp-all")?;
    ensure!(all.contains("mcpserver.mcp.n-takatsu.dev/my-mcp-server"), "{all}");
    // The guide's short names resolve (an unknown one makes kubectl fail).
    for short in ["mcp", "mcps"] {
        let listed = ns.sh_ok(&format!("kubectl get {short} my-mcp-server -o name"))?;
        ensure!(listed.trim() == "mcpserver.mcp.n-takatsu.dev/my-mcp-server", "kubectl get {short}: {listed}");
    }
    ns.sh_ok("kubectl get mcpplugin && kubectl get secpol")?;
    // As on other operators: wait on the Ready condition, by plain or fully qualified kind.
    let waited = ns.sh_ok(
        "kubectl wait --for=condition=Ready mcpserver/my-mcp-server --timeout=60s && \
         kubectl wait --for=condition=Ready mcpservers.mcp.n-takatsu.dev/my-mcp-server --timeout=60s",
    )?;
    ensure!(waited.matches("condition met").count() == 2, "{waited}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_steady_server_is_not_rewritten() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("steady").await?;
    let server = deploy_guide_server(&ns).await?;
    let d1 = ns.api::<Deployment>().get("my-mcp-server").await?;
    // A no-op change of the spec (same values) reconciles again; nothing may be rewritten.
    ns.sh_ok("kubectl annotate mcpserver my-mcp-server touched=1")?;
    wait_for(&ns.api::<McpServer>(), "my-mcp-server", "annotation seen", |s: Option<&McpServer>| {
        s.is_some_and(|s| s.annotations().contains_key("touched"))
    })
    .await?;
    let d2 = ns.api::<Deployment>().get("my-mcp-server").await?;
    ensure!(d1.metadata.generation == d2.metadata.generation, "Deployment generation moved");
    let s2 = ns.api::<McpServer>().get("my-mcp-server").await?;
    let times = |s: &McpServer| {
        s.status.as_ref().map(|st| st.conditions.iter().map(|c| c.last_transition_time.clone()).collect::<Vec<_>>())
    };
    ensure!(times(&server) == times(&s2), "conditions flapped");
    Ok(())
}

#[rstest]
#[case::http("http", "command: [srv]", &["server", "gateway"], false)]
#[case::websocket("websocket", "command: [srv]", &["server", "gateway"], false)]
#[case::stdio("stdio", "command: [npx, \"@modelcontextprotocol/server-everything\"]", &["server"], true)]
#[tokio::test(flavor = "multi_thread")]
async fn deploy_every_transport_is_fronted_by_the_gateway(
    #[case] transport: &str,
    #[case] command: &str,
    #[case] containers: &[&str],
    #[case] wrapped: bool,
) -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace(&format!("gw-{transport}")).await?;
    ns.sh_ok(&format!(
        "kubectl apply -f - <<EOF\napiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: s}}\nspec: {{transport: {transport}, {command}, port: 4000}}\nEOF"
    ))?;
    running(&ns, "s", 1).await?;
    let d = ns.api::<Deployment>().get("s").await?;
    let pod = d.spec.template.spec.as_ref().context("pod spec")?;
    let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    ensure!(names == containers, "{transport}: containers {names:?}");
    let gateway = pod
        .containers
        .iter()
        .find(|c| c.ports.iter().flatten().any(|p| p.name.as_deref() == Some("mcp")))
        .context("gateway port")?;
    let gw_port = gateway.ports.iter().flatten().find(|p| p.name.as_deref() == Some("mcp")).unwrap().container_port;
    ensure!(gw_port == 8443, "gateway listens on 8443, got {gw_port}");
    ensure!(gateway
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .is_some_and(|h| h.path.as_deref() == Some("/readyz")));
    if wrapped {
        let init = pod.init_containers.as_ref().context("init container")?;
        ensure!(init[0].name == "install-gateway");
        let cmd = pod.containers[0].command.clone().unwrap_or_default();
        ensure!(
            cmd.first().map(String::as_str) == Some("/opt/mcp-gateway/mcp-gateway")
                && cmd.contains(&"--stdio".to_string()),
            "{cmd:?}"
        );
    } else {
        let args = gateway.args.clone().unwrap_or_default();
        ensure!(args.contains(&"--upstream=http://127.0.0.1:4000/mcp".to_string()), "{args:?}");
    }
    let svc = ns.api::<k8s_openapi::api::core::v1::Service>().get("s").await?;
    let port = &svc.spec.context("service spec")?.ports.context("ports")?[0];
    ensure!(
        port.port == 4000
            && port.target_port
                == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("mcp".into())),
        "the Service targets the gateway: {port:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------- add plugin

#[tokio::test(flavor = "multi_thread")]
async fn add_plugin_with_the_guides_json_patch() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("plugin").await?;
    deploy_guide_server(&ns).await?;
    ns.sh_ok(guide::ADD_PLUGIN)?;
    ns.sh_ok(guide::PATCH_PLUGIN)?;
    let server = wait_for(&ns.api::<McpServer>(), "my-mcp-server", "plugins resolved", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.phase == McpServerPhase::Running
                && st.conditions.iter().any(|c| c.type_ == "PluginsResolved" && c.message.contains("wordpress-plugin"))
        })
    })
    .await?;
    ensure!(server.spec.plugins == vec!["wordpress-plugin"]);
    let pd = wait_for(
        &ns.api::<Deployment>(),
        "my-mcp-server-wordpress-plugin",
        "plugin workload ready",
        |d: Option<&Deployment>| d.and_then(|d| d.status.as_ref()).and_then(|s| s.ready_replicas) == Some(1),
    )
    .await?;
    ensure!(
        pd.spec.template.spec.as_ref().unwrap().containers[0].image.as_deref()
            == Some("mcp-rs-wordpress-plugin:latest")
    );
    ns.api::<k8s_openapi::api::core::v1::Service>().get("my-mcp-server-wordpress-plugin").await?;
    let cm = ns.api::<ConfigMap>().get("my-mcp-server-config").await?;
    let plugins: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["plugins.json"])?;
    ensure!(
        plugins[0]["endpoint"] == format!("http://my-mcp-server-wordpress-plugin.{}.svc:8080", ns.name),
        "{plugins}"
    );
    let plugin = wait_for(&ns.api::<Plugin>(), "wordpress-plugin", "used by the server", |p: Option<&Plugin>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.phase == PluginPhase::Ready && s.used_by == vec!["my-mcp-server"])
    })
    .await?;
    ensure!(plugin.finalizers().is_empty(), "no finalizer: deleting a plugin in use never waits");
    let plugins = ns.sh_ok("kubectl get plugins.mcp.n-takatsu.dev")?;
    ensure!(plugins.contains("USED-BY") && plugins.contains("Container"), "{plugins}");
    Ok(())
}

#[rstest]
#[case::none("None", 3, false)]
#[case::process("Process", 3, false)]
#[case::container("Container", 2, true)]
#[case::vm("VM", 2, true)]
#[tokio::test(flavor = "multi_thread")]
async fn add_plugin_isolation_levels_have_their_shape(
    #[case] level: &str,
    #[case] containers_in_server_pod: usize,
    #[case] own_workload: bool,
) -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace(&format!("iso-{}", level.to_lowercase())).await?;
    if level == "VM" {
        let rcs = Api::<RuntimeClass>::all(env.client().await?);
        if rcs.get_opt("kata").await?.is_some() {
            rcs.delete("kata", &DeleteParams::default()).await?;
            wait_gone(&rcs, "kata").await?;
        }
    }
    ns.sh_ok(&format!(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {{name: p}}
spec: {{name: p, image: \"mcp-plugin:e2e\", port: 9000, isolation: {{level: {level}, networkIsolation: true}}, config: {{answer: 42}}}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {{name: s}}
spec: {{plugins: [p]}}
EOF"
    ))?;
    if level == "VM" {
        // Without the sandbox RuntimeClass the server is held back with a clear condition; once
        // it exists, the plugin runs as its own workload with that RuntimeClass.
        let s = wait_for(&ns.api::<McpServer>(), "s", "RuntimeClass reported", |s: Option<&McpServer>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.conditions.iter().any(|c| c.message.contains("RuntimeClass \"kata\""))
                    && st.phase == McpServerPhase::Failed
            })
        })
        .await?;
        ensure!(ns.api::<Deployment>().get_opt("s").await?.is_none(), "held back: {:?}", s.status);
        wait_for(&ns.api::<Plugin>(), "p", "plugin reports RuntimeClassNotFound", |p: Option<&Plugin>| {
            p.and_then(|p| p.status.as_ref())
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "RuntimeClassNotFound"))
        })
        .await?;
        let rc: RuntimeClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "kata", "labels": {"e2e": "vm-isolation"}}, "handler": "kata"
        }))?;
        Api::<RuntimeClass>::all(env.client().await?).create(&PostParams::default(), &rc).await?;
    }
    let server = running(&ns, "s", 1).await?;
    ensure!(condition(&server, "PluginsResolved").0 == "True");
    let d = ns.api::<Deployment>().get("s").await?;
    let pod = d.spec.template.spec.as_ref().unwrap();
    ensure!(pod.containers.len() == containers_in_server_pod, "{level}: {} containers", pod.containers.len());
    let workload = ns.api::<Deployment>().get_opt("s-p").await?;
    ensure!(workload.is_some() == own_workload, "{level}: plugin workload {}", workload.is_some());
    if let Some(w) = workload {
        let runtime = w.spec.template.spec.as_ref().unwrap().runtime_class_name.clone();
        ensure!(runtime.as_deref() == (level == "VM").then_some("kata"), "{level}: runtimeClassName {runtime:?}");
        ns.api::<NetworkPolicy>().get("s-p").await.context("plugin NetworkPolicy")?;
    } else {
        ns.api::<NetworkPolicy>().get("s").await.context("server NetworkPolicy for an isolated sidecar")?;
    }
    Ok(())
}

/// Server `web` with Container plugin `db`: its plugin workload is named `web-db`.
fn apply_web_with_plugin_db(ns: &TestNamespace) -> Result<String> {
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {name: db}
spec: {name: db, image: \"mcp-plugin:e2e\", isolation: {level: Container}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: web}
spec: {plugins: [db]}
EOF",
    )
}

/// Server `name` once refused with `Ready=False` reason `NameTaken`.
async fn name_taken(ns: &TestNamespace, name: &str) -> Result<McpServer> {
    wait_for(&ns.api::<McpServer>(), name, "Ready False NameTaken", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "NameTaken"))
    })
    .await
}

/// The other order: a server named like another server's plugin workload is refused, and that
/// workload is neither taken over, nor scaled to the new server's replicas.
#[tokio::test(flavor = "multi_thread")]
async fn server_named_like_another_servers_plugin_workload_is_refused_and_that_workload_untouched() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("plugin-names-2").await?;
    apply_web_with_plugin_db(&ns)?;
    running(&ns, "web", 1).await?;
    let before = ns.api::<Deployment>().get("web-db").await?;
    ns.sh_ok("kubectl apply -f - <<EOF\napiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: web-db}\nspec: {replicas: 3}\nEOF")?;
    let taken = name_taken(&ns, "web-db").await?;
    let (_, _, message) = condition(&taken, "Ready");
    ensure!(message.contains("belongs to MCPServer \"web\""), "names the other server: {message}");
    let status = taken.status.clone().unwrap_or_default();
    ensure!(status.ready_replicas == 0, "web's plugin pods are not reported as web-db's: {status:?}");
    // Give a wrong scale time to land, then look: web's plugin workload is as it was.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = ns.api::<Deployment>().get("web-db").await?;
    let spec = |d: &Deployment| (d.metadata.generation, d.spec.replicas, d.labels().clone());
    ensure!(spec(&after) == spec(&before), "web's plugin Deployment is untouched: {:?}", spec(&after));
    running(&ns, "web", 1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn add_plugin_whose_workload_name_is_another_servers_is_refused_and_that_server_untouched() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("plugin-names").await?;
    ns.sh_ok("kubectl apply -f - <<EOF\napiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: web-db}\nspec: {}\nEOF")?;
    running(&ns, "web-db", 1).await?;
    let before = ns.api::<k8s_openapi::api::core::v1::Service>().get("web-db").await?;
    // Server web with a Container plugin db: its plugin workload would be named web-db.
    apply_web_with_plugin_db(&ns)?;
    let web = name_taken(&ns, "web").await?;
    let (_, _, message) = condition(&web, "Ready");
    ensure!(message.contains("web-db") && message.contains("belongs to MCPServer"), "names both: {message}");
    eventually("a NameTaken Warning Event on web", || {
        let ns = &ns;
        async move {
            let out = ns.sh_ok("kubectl get events --field-selector involvedObject.name=web,type=Warning")?;
            Ok(out.contains("NameTaken").then_some(()))
        }
    })
    .await?;
    let after = ns.api::<k8s_openapi::api::core::v1::Service>().get("web-db").await?;
    ensure!(
        after.metadata.resource_version == before.metadata.resource_version,
        "the other server's Service is untouched"
    );
    running(&ns, "web-db", 1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn add_plugin_dependency_closure_missing_and_cycle_are_reported() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("deps").await?;
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {name: wordpress-plugin}
spec: {name: wordpress, image: \"mcp-plugin:e2e\", dependencies: [base-plugin], isolation: {level: Container}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: s}
spec: {plugins: [wordpress-plugin]}
EOF",
    )?;
    // Missing dependency: both the Plugin and the server name it; nothing is started.
    let s = wait_for(&ns.api::<McpServer>(), "s", "missing dependency reported", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.phase == McpServerPhase::Failed)
    })
    .await?;
    let msg = condition(&s, "PluginsResolved").2;
    ensure!(msg.contains("base-plugin") && msg.contains("wordpress-plugin"), "{msg}");
    ensure!(ns.api::<Deployment>().get_opt("s").await?.is_none(), "fail closed: no workload");
    wait_for(&ns.api::<Plugin>(), "wordpress-plugin", "dependency reported", |p: Option<&Plugin>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.phase == PluginPhase::Failed && s.conditions.iter().any(|c| c.message.contains("base-plugin"))
        })
    })
    .await?;
    // The dependency appears: the closure resolves in order and the server starts.
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {name: base-plugin}
spec: {name: base, image: \"mcp-plugin:e2e\", port: 9001, isolation: {level: Process}}
EOF",
    )?;
    running(&ns, "s", 1).await?;
    let cm = ns.api::<ConfigMap>().get("s-config").await?;
    let list: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["plugins.json"])?;
    ensure!(list[0]["plugin"] == "base-plugin" && list[1]["plugin"] == "wordpress-plugin", "{list}");
    wait_for(&ns.api::<Plugin>(), "wordpress-plugin", "closure", |p: Option<&Plugin>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.dependencies == vec!["base-plugin"] && s.phase == PluginPhase::Ready)
    })
    .await?;
    // A cycle: reported with its path; the running workload is kept.
    ns.sh_ok("kubectl patch plugin.mcp.n-takatsu.dev base-plugin --type=merge -p '{\"spec\":{\"dependencies\":[\"wordpress-plugin\"]}}'")?;
    let s = wait_for(&ns.api::<McpServer>(), "s", "cycle reported", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.conditions.iter().any(|c| c.message.contains("cycle")))
    })
    .await?;
    let msg = condition(&s, "PluginsResolved").2;
    ensure!(msg.contains("wordpress-plugin -> base-plugin -> wordpress-plugin"), "{msg}");
    ensure!(s.status.unwrap().phase == McpServerPhase::Failed);
    ensure!(ns.api::<Deployment>().get_opt("s").await?.is_some(), "the running workload is left as it is");
    Ok(())
}

// ---------------------------------------------------------------- apply policy

#[tokio::test(flavor = "multi_thread")]
async fn apply_policy_examples_and_merge_patch_roll_the_pods() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("policy").await?;
    deploy_guide_server(&ns).await?;
    let before = pod_uids(&ns, "app=my-mcp-server").await?;
    // On a fresh namespace, as the guide has it: no Secret is created by hand.
    ns.sh_ok(guide::APPLY_EXAMPLES)?;
    ns.sh_ok(guide::PATCH_POLICY)?;
    let server = wait_for(&ns.api::<McpServer>(), "my-mcp-server", "policy enforced", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.phase == McpServerPhase::Running
                && st.ready_replicas == 2
                && st.conditions.iter().any(|c| c.type_ == "SecurityPolicyResolved" && c.reason == "PolicyValid")
                && st.conditions.iter().any(|c| c.type_ == "Progressing" && c.reason == "RolloutComplete")
        })
    })
    .await?;
    ensure!(server.status.unwrap().url.unwrap().starts_with("https://"));
    let cm = ns.api::<ConfigMap>().get("my-mcp-server-config").await?;
    let policy: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["policy.json"])?;
    ensure!(policy["enabled"] == true && policy["tls"]["minVersion"] == "1.3", "{policy}");
    ensure!(policy["authentication"]["methods"] == serde_json::json!(["jwt"]), "{policy}");
    ensure!(policy["rateLimiting"]["requestsPerMinute"] == 100, "{policy}");
    let d = ns.api::<Deployment>().get("my-mcp-server").await?;
    let vol = serde_json::to_string(&d.spec.template.spec.as_ref().unwrap().volumes)?;
    ensure!(vol.contains("mcp-example-tls") && vol.contains("tls/tls.key"), "TLS Secret mounted: {vol}");
    // Issued by the operator, owned by the policy that asked, announced.
    for name in ["mcp-example-tls", "mcp-example-jwt"] {
        let secret = ns.api::<Secret>().get(name).await?;
        ensure!(secret.annotations().contains_key("mcp.n-takatsu.dev/issued"), "{name} issued");
        ensure!(
            secret.owner_references().iter().any(|o| o.kind == "SecurityPolicy"),
            "{name} owned by a policy: {:?}",
            secret.owner_references()
        );
    }
    let events = ns.sh_ok("kubectl get events --field-selector involvedObject.kind=SecurityPolicy")?;
    ensure!(events.contains("CertificateIssued") && events.contains("JwtKeyIssued"), "{events}");
    let after = eventually("the pods to be replaced", || {
        let ns = &ns;
        async move {
            let now = pod_uids(ns, "app=my-mcp-server").await?;
            Ok((now.len() == 2).then_some(now))
        }
    })
    .await?;
    ensure!(before.is_disjoint(&after), "pods rolled: before {before:?} after {after:?}");
    let p = wait_for(&ns.api::<SecurityPolicy>(), "default-policy", "Active and used", |p: Option<&SecurityPolicy>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.phase == Some(SecurityPolicyPhase::Active) && s.used_by_count == 1)
    })
    .await?;
    ensure!(p.finalizers().is_empty(), "no finalizer: deleting a policy in use never waits");
    let events = ns.sh_ok("kubectl get events --field-selector involvedObject.name=my-mcp-server")?;
    ensure!(events.contains("PolicyApplied"), "{events}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_policy_missing_fails_closed_then_starts() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("failclosed").await?;
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: guarded}
spec: {replicas: 1, securityPolicy: default-policy}
EOF",
    )?;
    let s = wait_for(&ns.api::<McpServer>(), "guarded", "fail closed", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.phase == McpServerPhase::Failed)
    })
    .await?;
    let (st, reason, msg) = condition(&s, "SecurityPolicyResolved");
    ensure!(st == "False" && reason == "PolicyNotFound" && msg.contains("default-policy"), "{reason}: {msg}");
    ensure!(ns.api::<Deployment>().get_opt("guarded").await?.is_none(), "no workload without the policy");
    let events = ns.sh_ok("kubectl get events --field-selector involvedObject.name=guarded")?;
    ensure!(events.contains("PolicyNotFound"), "{events}");
    // A policy naming a Secret it does not ask the operator to issue, absent: still held back,
    // naming the field.
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: default-policy}
spec: {encryption: {tlsEnabled: true, certSecretName: my-own-cert}}
EOF",
    )?;
    let s = wait_for(&ns.api::<McpServer>(), "guarded", "invalid policy", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.conditions.iter().any(|c| c.reason == "PolicyInvalid"))
    })
    .await?;
    ensure!(condition(&s, "SecurityPolicyResolved").2.contains("spec.encryption.certSecretName"));
    ensure!(condition(&s, "Ready").1 == "PolicyInvalid");
    wait_for(&ns.api::<SecurityPolicy>(), "default-policy", "Error phase", |p: Option<&SecurityPolicy>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.phase == Some(SecurityPolicyPhase::Error))
    })
    .await?;
    ensure!(ns.api::<Secret>().get_opt("my-own-cert").await?.is_none(), "nothing is invented unasked");
    // The guide's examples work as shipped: the operator issues what they ask for.
    ns.sh_ok(guide::APPLY_EXAMPLES)?;
    running(&ns, "guarded", 1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_policy_deleting_an_in_use_policy_holds_the_server_back() -> Result<()> {
    let policy = "apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: open}
spec: {enabled: true, rateLimiting: {enabled: true, requestsPerMinute: 10}}";
    deleting_in_use_holds_the_server_back(
        "inuse",
        policy,
        "{securityPolicy: open}",
        "securitypolicy open",
        "PolicyNotFound",
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn add_plugin_deleting_an_in_use_plugin_holds_the_server_back() -> Result<()> {
    let plugin = "apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {name: tool-plugin}
spec: {name: tool, image: \"mcp-plugin:e2e\", port: 9000, isolation: {level: Process}}";
    deleting_in_use_holds_the_server_back(
        "inuse-plugin",
        plugin,
        "{plugins: [tool-plugin]}",
        "plugin tool-plugin",
        "PluginsUnresolved",
    )
    .await
}

/// The guide's fail-closed promise for a policy or plugin deleted while a server uses it
/// (`referenced`, deleted as `kubectl delete <kind_and_name>`): the delete completes at once, the
/// server is held back (Failed, Ready=False with `reason`, a Warning Event naming the object), its
/// pods keep running, scaling still follows the spec, and it resumes once the object is back.
async fn deleting_in_use_holds_the_server_back(
    namespace: &str,
    referenced: &str,
    server_spec: &str,
    kind_and_name: &str,
    reason: &str,
) -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace(namespace).await?;
    ns.sh_ok(&format!(
        "kubectl apply -f - <<EOF
{referenced}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {{name: s}}
spec: {server_spec}
EOF"
    ))?;
    running(&ns, "s", 1).await?;
    let pods = pod_uids(&ns, "app=s").await?;
    let finalizers = ns.sh_ok(&format!("kubectl get {kind_and_name} -o jsonpath='{{.metadata.finalizers}}'"))?;
    ensure!(finalizers.trim().is_empty(), "no finalizer holds a {kind_and_name}: {finalizers}");
    // Deleting it while in use completes at once: nothing can leave it stuck.
    ns.sh_ok(&format!("kubectl delete {kind_and_name} --timeout=60s"))?;
    let servers = ns.api::<McpServer>();
    let held = wait_for(&servers, "s", "held back without it", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason)
        })
    })
    .await?;
    ensure!(held.status.as_ref().unwrap().phase == McpServerPhase::Failed, "{:?}", held.status);
    let shown = ns.sh_ok("kubectl get mcpserver s")?;
    ensure!(
        shown.contains("Failed") && shown.contains("1/1"),
        "visible in kubectl get, the pods still counted: {shown}"
    );
    let name = kind_and_name.rsplit(' ').next().unwrap_or_default();
    let events = ns.sh_ok("kubectl get events --field-selector involvedObject.name=s,type=Warning")?;
    ensure!(events.contains(name), "a Warning Event names the missing {kind_and_name}: {events}");
    ensure!(pod_uids(&ns, "app=s").await? == pods, "the running pods keep their admitted configuration");
    // The replica count still follows the spec.
    ns.sh_ok("kubectl scale mcpserver s --replicas=2")?;
    wait_for(&ns.api::<Deployment>(), "s", "2 replicas", |d: Option<&Deployment>| {
        d.is_some_and(|d| d.spec.replicas == Some(2))
    })
    .await?;
    // Back under the same name, the server resumes.
    ns.sh_ok(&format!("kubectl apply -f - <<EOF\n{referenced}\nEOF"))?;
    running(&ns, "s", 2).await?;
    Ok(())
}

// ---------------------------------------------------------------- scale

#[tokio::test(flavor = "multi_thread")]
async fn scale_with_kubectl_scale_follows_through() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("scale").await?;
    deploy_guide_server(&ns).await?;
    let pods_before = pod_uids(&ns, "app=my-mcp-server").await?;
    ns.sh_ok(guide::SCALE)?;
    let s = running(&ns, "my-mcp-server", 5).await?;
    ensure!(s.status.as_ref().unwrap().replicas == 5);
    let d = ns.api::<Deployment>().get("my-mcp-server").await?;
    ensure!(d.spec.replicas == Some(5));
    let pods_after = pod_uids(&ns, "app=my-mcp-server").await?;
    ensure!(pods_before.is_subset(&pods_after), "scaling does not restart existing pods");
    let scale = ns.sh_ok("kubectl get --raw /apis/mcp.n-takatsu.dev/v1alpha1/namespaces/$(kubectl config view --minify -o jsonpath='{..namespace}')/mcpservers/my-mcp-server/scale")?;
    let scale: serde_json::Value = serde_json::from_str(&scale)?;
    ensure!(
        scale["status"]["replicas"] == 5
            && scale["status"]["selector"].as_str().unwrap_or("").contains("my-mcp-server"),
        "{scale}"
    );
    let events = ns.sh_ok("kubectl get events --field-selector involvedObject.name=my-mcp-server")?;
    ensure!(events.contains("Scaled"), "{events}");
    Ok(())
}

/// The guide's order: deploy, plugin, examples and policy, then scale, then edit. Each replica
/// change lands on the Deployment (the examples run as shipped, so nothing is held back; the
/// held-back case is `apply_policy_deleting_an_in_use_policy_holds_the_server_back`).
#[tokio::test(flavor = "multi_thread")]
async fn scale_and_edit_after_the_guides_policy_steps_land() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("scale-order").await?;
    guide_objects(&ns).await?;
    ns.sh_ok(guide::SCALE)?;
    let replicas = |n: i32| move |d: Option<&Deployment>| d.is_some_and(|d| d.spec.replicas == Some(n));
    wait_for(&ns.api::<Deployment>(), "my-mcp-server", "5 replicas", replicas(5)).await?;
    // `kubectl edit` as the guide has it, with an editor that changes replicas to 4.
    ns.sh_ok("KUBE_EDITOR=\"sed -i -e 's/^  replicas: 5$/  replicas: 4/'\" kubectl edit mcpserver my-mcp-server")?;
    wait_for(&ns.api::<Deployment>(), "my-mcp-server", "4 replicas", replicas(4)).await?;
    let s = running(&ns, "my-mcp-server", 4).await?;
    ensure!(condition(&s, "Ready").0 == "True", "{:?}", condition(&s, "Ready"));
    let shown = ns.sh_ok("kubectl get mcpserver my-mcp-server")?;
    ensure!(shown.contains("4/4") && shown.contains("Running"), "{shown}");
    Ok(())
}

#[rstest]
#[case::too_many("--replicas=11", "spec.replicas")]
#[case::zero("--replicas=0", "spec.replicas")]
#[tokio::test(flavor = "multi_thread")]
async fn scale_out_of_range_is_rejected(#[case] arg: &str, #[case] field: &str) -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("scale-bad").await?;
    deploy_guide_server(&ns).await?;
    let err = ns.sh_err(&format!("kubectl scale mcpserver my-mcp-server {arg}"))?;
    ensure!(err.contains(field), "{err}");
    ensure!(ns.api::<Deployment>().get("my-mcp-server").await?.spec.replicas == Some(2), "nothing changed");
    Ok(())
}

// ---------------------------------------------------------------- version skew

const TRANSPORT_ENUM: &str = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/transport/enum";

/// An object this operator cannot read (as after installing a newer CRD than the running operator
/// knows) gets a Warning Event naming the problem and is left as it is, every other object goes
/// on reconciling, and deleting the unreadable one is not held up.
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_object_is_reported_and_the_others_go_on() -> Result<()> {
    let env = env();
    let _install = env.exclusive().await;
    let ns = env.namespace("skew").await?;
    let server = |name: &str, spec: &str| {
        format!("kubectl apply -f - <<EOF\napiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: {name}}}\nspec: {spec}\nEOF")
    };
    ns.sh_ok(&server("today", "{}"))?;
    running(&ns, "today", 1).await?;
    let deployment = ns.api::<Deployment>().get("today").await?.metadata;
    // The CRD as a newer operator version might ship it: spec.transport takes any string.
    env.admin_sh(&format!(
        "kubectl patch crd mcpservers.mcp.n-takatsu.dev --type=json -p '[{{\"op\":\"remove\",\"path\":\"{TRANSPORT_ENUM}\"}}]'"
    ))?;
    let result = async {
        ns.sh_ok(&server("future", "{transport: grpc}"))?;
        ns.sh_ok("kubectl patch mcpserver today --type=merge -p '{\"spec\":{\"transport\":\"grpc\"}}'")?;
        // Created after the unreadable ones, in the same namespace: still reconciled.
        ns.sh_ok(&server("later", "{}"))?;
        running(&ns, "later", 1).await?;
        for name in ["future", "today"] {
            let events = eventually(&format!("an InvalidObject Event on {name}"), || {
                let ns = &ns;
                async move {
                    let out = ns.sh_ok(&format!("kubectl get events --field-selector involvedObject.name={name}"))?;
                    Ok(out.contains("InvalidObject").then_some(out))
                }
            })
            .await?;
            ensure!(events.contains("grpc") && events.contains("cannot be read"), "names the problem: {events}");
        }
        ensure!(ns.api::<Deployment>().get_opt("future").await?.is_none(), "no workload for an unreadable server");
        let now = ns.api::<Deployment>().get("today").await?.metadata;
        ensure!(
            (now.uid, now.generation) == (deployment.uid, deployment.generation),
            "the running workload of a server that became unreadable is left as it was"
        );
        // Deleting them is not held up by the operator's finalizer.
        ns.sh_ok("kubectl delete mcpserver future today --wait=false")?;
        // (Watched as the operator does: the test's own client cannot read them either.)
        let servers = ns.api::<kube::core::DeserializeGuard<McpServer>>();
        wait_gone(&servers, "today").await?;
        wait_gone(&servers, "future").await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    env.admin_sh(&format!(
        "kubectl patch crd mcpservers.mcp.n-takatsu.dev --type=json \\
         -p '[{{\"op\":\"add\",\"path\":\"{TRANSPORT_ENUM}\",\"value\":[\"http\",\"stdio\",\"websocket\"]}}]'"
    ))?;
    result
}

// ---------------------------------------------------------------- upgrade

/// The MCPServer CRD as an earlier release shipped it: an older version, no Tools column.
const AGE_THE_CRD: &str =
    "kubectl annotate crd mcpservers.mcp.n-takatsu.dev mcp.n-takatsu.dev/version=0.0.1 --overwrite
kubectl patch crd mcpservers.mcp.n-takatsu.dev --type=json \\
  -p '[{\"op\":\"remove\",\"path\":\"/spec/versions/0/additionalPrinterColumns/4\"}]'";
const CRD_STATE: &str = "kubectl get crd mcpservers.mcp.n-takatsu.dev \\
  -o jsonpath='{.metadata.annotations.mcp\\.n-takatsu\\.dev/version} {.spec.versions[0].additionalPrinterColumns[*].name}'";

async fn upgrade_keeps_pods(upgrade: &str, before_upgrade: &str) -> Result<()> {
    let env = env();
    let _install = env.exclusive().await;
    let ns = env.namespace("upgrade").await?;
    deploy_guide_server(&ns).await?;
    let pods = pod_uids(&ns, "app=my-mcp-server").await?;
    let generation = ns.api::<Deployment>().get("my-mcp-server").await?.metadata.generation;
    env.admin_sh(before_upgrade)?;
    env.admin_sh(AGE_THE_CRD)?;
    let aged = String::from_utf8_lossy(&env.admin_sh(CRD_STATE)?.stdout).into_owned();
    ensure!(aged.starts_with("0.0.1 ") && !aged.contains("Tools"), "the CRD looks older: {aged}");
    env.admin_sh(upgrade)?;
    // A new operator version starts (for the local provider, a restarted process).
    env.stop_operator()?;
    env.start_operator().await?;
    // The schema change lands through the upgrade: the operator brought its CRD up to date.
    let version = env!("CARGO_PKG_VERSION");
    let state = eventually("the operator to upgrade the CRD", || async {
        let out = String::from_utf8_lossy(&env.admin_sh(CRD_STATE)?.stdout).into_owned();
        Ok(out.starts_with(&format!("{version} ")).then_some(out))
    })
    .await?;
    ensure!(state.contains("Phase Ready Transport Policy Tools URL Age"), "{state}");
    ensure!(ns.sh_ok("kubectl get mcpservers")?.lines().next().is_some_and(|h| h.contains("TOOLS")));
    ns.sh_ok("kubectl annotate mcpserver my-mcp-server upgraded=1")?;
    wait_for(&ns.api::<McpServer>(), "my-mcp-server", "reconciled after upgrade", |s: Option<&McpServer>| {
        s.is_some_and(|s| {
            s.annotations().contains_key("upgraded")
                && s.status.as_ref().is_some_and(|st| st.phase == McpServerPhase::Running)
        })
    })
    .await?;
    ensure!(pod_uids(&ns, "app=my-mcp-server").await? == pods, "an operator upgrade alone restarts no pod");
    ensure!(ns.api::<Deployment>().get("my-mcp-server").await?.metadata.generation == generation);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_with_helm_keeps_servers_running() -> Result<()> {
    upgrade_keeps_pods(guide::UPGRADE_HELM, "true").await
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_with_kubectl_keeps_servers_running() -> Result<()> {
    let env = env();
    let result = upgrade_keeps_pods(
        guide::UPGRADE_KUBECTL,
        // The plain-manifest install: the chart's release is removed, objects stay named alike.
        "helm uninstall mcp-operator --namespace mcp-system && kubectl apply -f k8s/manifests/",
    )
    .await;
    let _install = env.exclusive().await;
    env.stop_operator()?;
    env.admin_sh("kubectl delete -f k8s/manifests/ --ignore-not-found")?;
    env.reset_install().await?;
    result
}

// ---------------------------------------------------------------- uninstall

/// What an uninstall must not leave behind, anywhere in the cluster: one line per leftover.
const LEFTOVERS: &str = "kubectl get crd -o name | grep mcp.n-takatsu.dev || true
kubectl get deployments,services,configmaps,poddisruptionbudgets,networkpolicies,secrets -A \\
  -l app.kubernetes.io/managed-by=mcp-operator -o name
kubectl get pods -A -l app.kubernetes.io/managed-by=mcp-operator -o name
kubectl get clusterroles,clusterrolebindings -o name | grep -E '/mcp-operator(-[a-z-]+)?$' || true
kubectl get deployments,serviceaccounts,roles,rolebindings,leases,services -n mcp-system -o name \\
  | grep -E '/mcp-operator(-[a-z-]+)?$' || true";

/// Waits up to 60 s for the cluster to hold nothing of the operator's.
async fn nothing_left(env: &mcp_operator_e2e::Env) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        let out = env.admin_sh(LEFTOVERS)?;
        let left = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if left.is_empty() {
            return Ok(());
        }
        ensure!(start.elapsed() < std::time::Duration::from_secs(60), "left after 60 s:\n{left}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The guide's state before an uninstall: the basic server running with the plugin and the
/// example policies applied, so policy and plugin are in use.
async fn guide_objects(ns: &TestNamespace) -> Result<()> {
    deploy_guide_server(ns).await?;
    ns.sh_ok(guide::ADD_PLUGIN)?;
    ns.sh_ok(guide::PATCH_PLUGIN)?;
    ns.sh_ok(guide::APPLY_EXAMPLES)?;
    ns.sh_ok(guide::PATCH_POLICY)?;
    Ok(())
}

/// Runs the guide's uninstall, `uninstall` then the CRD deletion or the other way round, every
/// command bounded by 60 s, and asserts nothing is left.
async fn uninstall_as_the_guide_writes(prefix: &str, install: &str, uninstall: &str, crds_first: bool) -> Result<()> {
    let env = env();
    let _install = env.exclusive().await;
    let ns = env.namespace(prefix).await?;
    let result = async {
        if install != "helm" {
            env.stop_operator()?;
            env.admin_sh(guide::UNINSTALL_HELM)?;
            ns.sh_ok(guide::INSTALL_KUBECTL)?;
            env.admin_sh("kubectl rollout status deployment mcp-operator -n mcp-system --timeout=120s")?;
            env.start_operator().await?;
        }
        env.wait_for_settled_crds().await?;
        guide_objects(&ns).await?;
        let steps = if crds_first { [guide::DELETE_CRDS, uninstall] } else { [uninstall, guide::DELETE_CRDS] };
        for step in steps {
            // The operator process of the local provider stands for the chart's pod: it goes
            // with the uninstall.
            if step == uninstall {
                env.stop_operator_process();
            }
            let out = ns.sh(&format!("timeout 60 bash -c {}", shell_quote(step)))?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            // With the CRDs already gone, kubectl cannot delete examples.yaml's policies (their
            // kind is unknown, or known from its discovery cache but no longer served): it says
            // so for those and deletes everything else (the guide's docs say the same).
            let unmappable_examples = crds_first
                && step == guide::UNINSTALL_KUBECTL
                && stderr.lines().all(|l| {
                    l.contains("examples.yaml")
                        && (l.contains("ensure CRDs are installed first")
                            || l.contains("the server could not find the requested resource"))
                });
            ensure!(
                out.status.success() || unmappable_examples,
                "{step:?} failed or did not complete within 60 s ({}):\n{stderr}",
                out.status
            );
        }
        nothing_left(env).await
    }
    .await;
    env.admin_sh("kubectl delete -f k8s/manifests/00-namespace.yaml --ignore-not-found --wait=true").ok();
    env.reset_install().await?;
    result
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_helm_then_crds_leaves_nothing() -> Result<()> {
    uninstall_as_the_guide_writes("uninstall-helm", "helm", guide::UNINSTALL_HELM, false).await
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_crds_then_helm_leaves_nothing() -> Result<()> {
    uninstall_as_the_guide_writes("uninstall-crds-helm", "helm", guide::UNINSTALL_HELM, true).await
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_kubectl_then_crds_leaves_nothing() -> Result<()> {
    uninstall_as_the_guide_writes("uninstall-kubectl", "kubectl", guide::UNINSTALL_KUBECTL, false).await
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_crds_then_kubectl_leaves_nothing() -> Result<()> {
    uninstall_as_the_guide_writes("uninstall-crds-kubectl", "kubectl", guide::UNINSTALL_KUBECTL, true).await
}

#[tokio::test(flavor = "multi_thread")]
async fn uninstall_helm_keeps_crds_and_running_servers() -> Result<()> {
    let env = env();
    let _install = env.exclusive().await;
    let ns = env.namespace("uninstall-keeps").await?;
    let result = async {
        deploy_guide_server(&ns).await?;
        env.stop_operator_process();
        env.admin_sh(guide::UNINSTALL_HELM)?;
        ensure!(String::from_utf8_lossy(&env.admin_sh(guide::CHECK_CRDS)?.stdout).lines().count() == 3, "CRDs stay");
        ensure!(ns.api::<McpServer>().get_opt("my-mcp-server").await?.is_some(), "user objects stay");
        ensure!(
            ns.api::<Deployment>().get("my-mcp-server").await?.status.and_then(|s| s.ready_replicas) == Some(2),
            "servers keep running"
        );
        // Deleting a server without the operator is not held up: its workload goes with it.
        ns.sh_ok("kubectl delete mcpserver my-mcp-server --timeout=60s")?;
        wait_gone(&ns.api::<Deployment>(), "my-mcp-server").await?;
        Ok(())
    }
    .await;
    env.reset_install().await?;
    result
}

// ---------------------------------------------------------------- stuck finalizer

#[tokio::test(flavor = "multi_thread")]
async fn stuck_finalizer_guide_patch_frees_the_object() -> Result<()> {
    let env = env();
    let _install = env.exclusive().await;
    let ns = env.namespace("stuck").await?;
    deploy_guide_server(&ns).await?;
    let result = async {
        env.stop_operator()?;
        // A finalizer the operator does not release (another controller's, or an earlier
        // version's while no operator runs) keeps a deleted server in Terminating.
        ns.sh_ok("kubectl patch mcpserver my-mcp-server --type=merge -p '{\"metadata\":{\"finalizers\":[\"example.com/hold\"]}}'")?;
        ns.sh_ok("kubectl delete mcpserver my-mcp-server --wait=false")?;
        let api = ns.api::<McpServer>();
        wait_for(&api, "my-mcp-server", "deletion requested", |s: Option<&McpServer>| {
            s.is_some_and(|s| s.metadata.deletion_timestamp.is_some())
        })
        .await?;
        let shown = ns.sh_ok(&guide::show_finalizers("my-mcp-server"))?;
        ensure!(shown.contains("finalizers"), "{shown}");
        ensure!(api.get_opt("my-mcp-server").await?.is_some(), "stays in Terminating");
        ns.sh_ok(&guide::remove_finalizers("my-mcp-server"))?;
        wait_gone(&api, "my-mcp-server").await?;
        wait_gone(&ns.api::<Deployment>(), "my-mcp-server").await?;
        Ok(())
    }
    .await;
    env.start_operator().await?;
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn stuck_finalizer_of_an_earlier_version_is_released_by_the_operator() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("legacy").await?;
    deploy_guide_server(&ns).await?;
    ns.sh_ok(guide::ADD_PLUGIN)?;
    ns.sh_ok(guide::PATCH_PLUGIN)?;
    // The finalizers earlier versions put on servers and on plugins in use.
    ns.sh_ok(
        "kubectl patch mcpserver my-mcp-server --type=merge -p '{\"metadata\":{\"finalizers\":[\"mcp.n-takatsu.dev/finalizer\"]}}'
kubectl patch plugin wordpress-plugin --type=merge -p '{\"metadata\":{\"finalizers\":[\"mcp.n-takatsu.dev/in-use-protection\"]}}'",
    )?;
    ns.sh_ok("kubectl delete plugin wordpress-plugin --timeout=60s")?;
    ns.sh_ok("kubectl delete mcpserver my-mcp-server --timeout=60s")?;
    wait_gone(&ns.api::<Deployment>(), "my-mcp-server").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_server_removes_its_workload() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("delete").await?;
    deploy_guide_server(&ns).await?;
    ensure!(ns.api::<McpServer>().get("my-mcp-server").await?.finalizers().is_empty(), "no finalizer");
    ns.sh_ok("kubectl delete mcpserver my-mcp-server --timeout=60s")?;
    wait_gone(&ns.api::<Deployment>(), "my-mcp-server").await?;
    eventually("the server's pods to go", || {
        let ns = &ns;
        async move { Ok(pod_uids(ns, "app=my-mcp-server").await?.is_empty().then_some(())) }
    })
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- leader election

const LEASE: &str = "mcp-operator-leader";

fn lease_holder(env: &mcp_operator_e2e::Env) -> Result<String> {
    let out = env.admin_sh(&format!(
        "kubectl get lease {LEASE} -n mcp-system -o jsonpath='{{.spec.holderIdentity}}' 2>/dev/null || true"
    ))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Another holder takes the Lease for an hour (as a replica that acquired it would), with an
/// unconditional write; returns the Lease's spec as the intruder wrote it (holder, renew time,
/// term).
fn take_lease(env: &mcp_operator_e2e::Env) -> Result<String> {
    let now = k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let patch =
        format!(r#"{{"spec":{{"holderIdentity":"intruder","renewTime":"{now}","leaseDurationSeconds":3600}}}}"#);
    env.admin_sh(&format!("kubectl patch lease {LEASE} -n mcp-system --type=merge -p '{patch}'"))?;
    Ok(format!("intruder {now} 3600"))
}

fn lease_spec(env: &mcp_operator_e2e::Env) -> Result<String> {
    let out = env.admin_sh(&format!(
        "kubectl get lease {LEASE} -n mcp-system -o jsonpath='{{.spec.holderIdentity}} {{.spec.renewTime}} {{.spec.leaseDurationSeconds}}'"
    ))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The taken Lease stays exactly as the intruder wrote it, for longer than a term, whatever
/// replicas wait: the deposed leader's renewals are conditional on the Lease it read, so one in
/// flight when the Lease was taken fails instead of writing its renew time and 15 s term over
/// the intruder's hour (which kube-lease-manager, used before, did).
async fn nobody_takes_a_current_lease(env: &'static mcp_operator_e2e::Env, taken: &str) -> Result<()> {
    ensure!(lease_spec(env)? == taken, "the deposed leader wrote over the taken Lease");
    tokio::time::sleep(std::time::Duration::from_secs(mcp_operator::leader::LEASE_SECONDS + 5)).await;
    ensure!(lease_spec(env)? == taken, "nobody takes a current Lease");
    Ok(())
}

/// Two replicas: when the leader goes, the other one leads and reconciles; a leader that sees
/// another holder on its Lease stops (it exits, and waits as a standby when restarted) instead
/// of reconciling beside it.
#[tokio::test(flavor = "multi_thread")]
async fn leader_failover_and_a_taken_lease_stop_the_old_leader() -> Result<()> {
    let env = env();
    let _x = env.exclusive().await;
    let result = if env.operator_is_local() { failover_local(env).await } else { failover_in_cluster(env).await };
    // Whatever happened, the next scenario starts from one leading operator: the taken Lease goes,
    // and so do the replicas (a standby sleeps until the Lease it saw expires: an hour here).
    env.admin_sh(&format!("kubectl delete lease {LEASE} -n mcp-system --ignore-not-found"))?;
    if !env.operator_is_local() {
        env.admin_sh(
            "kubectl scale deployment mcp-operator -n mcp-system --replicas=1 && \
             kubectl delete pod -n mcp-system -l app.kubernetes.io/name=mcp-operator --wait=true",
        )?;
    }
    env.start_operator().await?;
    if !env.operator_is_local() {
        eventually("the operator to lead again", || async move { Ok((!lease_holder(env)?.is_empty()).then_some(())) })
            .await?;
    }
    result
}

async fn failover_in_cluster(env: &'static mcp_operator_e2e::Env) -> Result<()> {
    let pods = "kubectl get pods -n mcp-system -l app.kubernetes.io/name=mcp-operator --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}'";
    env.admin_sh("kubectl scale deployment mcp-operator -n mcp-system --replicas=2 && kubectl rollout status deployment mcp-operator -n mcp-system --timeout=180s")?;
    let leader = eventually("a leader among the operator's pods", || async move {
        let names = String::from_utf8_lossy(&env.admin_sh(pods)?.stdout).into_owned();
        let holder = lease_holder(env)?;
        Ok(names.split_whitespace().any(|n| n == holder).then_some(holder))
    })
    .await?;
    env.admin_sh(&format!("kubectl delete pod {leader} -n mcp-system --wait=false"))?;
    let next = eventually("the other replica to take the Lease", || {
        let leader = leader.clone();
        async move {
            let holder = lease_holder(env)?;
            Ok((!holder.is_empty() && holder != leader).then_some(holder))
        }
    })
    .await?;
    let ns = env.namespace("failover").await?;
    deploy_guide_server(&ns).await.context("the new leader reconciles")?;

    let taken = take_lease(env)?;
    eventually("the leader to stop on seeing another holder (a container restart)", || {
        let next = next.clone();
        async move {
            let out = env.admin_sh(&format!(
                "kubectl get pod {next} -n mcp-system -o jsonpath='{{.status.containerStatuses[0].restartCount}}'"
            ))?;
            let restarts: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
            Ok((restarts > 0).then_some(()))
        }
    })
    .await?;
    let log = env.admin_sh(&format!("kubectl logs {next} -n mcp-system --previous"))?;
    let log = String::from_utf8_lossy(&log.stdout);
    ensure!(log.contains("lost the leader Lease"), "the old leader's log:\n{log}");
    nobody_takes_a_current_lease(env, &taken).await
}

async fn failover_local(env: &'static mcp_operator_e2e::Env) -> Result<()> {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let mut standby = env.spawn_standby("e2e-standby", &addr)?;
    let metrics = format!("http://{addr}/metrics");
    let result = async {
        eventually("the standby to wait (mcp_operator_leader 0)", || {
            let url = metrics.clone();
            async move {
                let body = mcp_operator_e2e::env::http_get(&url).await.ok();
                Ok(body
                    .filter(|b| mcp_operator_e2e::env::metric_value(b, "mcp_operator_leader") == Some(0.0))
                    .map(|_| ()))
            }
        })
        .await?;
        let pid = env.operator_pid().context("the leader's pid")?;
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
        eventually("the standby to lead", || async move { Ok((lease_holder(env)? == "e2e-standby").then_some(())) })
            .await?;
        let ns = env.namespace("failover").await?;
        deploy_guide_server(&ns).await.context("the new leader reconciles")?;
        let taken = take_lease(env)?;
        eventually("the leader to exit on seeing another holder", || {
            let exited = standby.try_wait().ok().flatten().is_some();
            async move { Ok(exited.then_some(())) }
        })
        .await?;
        let log = std::fs::read_to_string(env.work.join("operator-e2e-standby.log")).unwrap_or_default();
        ensure!(log.contains("lost the leader Lease"), "the standby's log:\n{log}");
        nobody_takes_a_current_lease(env, &taken).await
    }
    .await;
    let _ = standby.kill();
    let _ = standby.wait();
    result
}

// ---------------------------------------------------------------- troubleshooting

#[tokio::test(flavor = "multi_thread")]
async fn troubleshooting_commands_answer() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    // Real pods where there are any: the guide reads the server's logs.
    let ns = env.pods_namespace("trouble").await?;
    ensure!(ns.sh_ok(guide::CAN_I)?.trim() == "yes");
    let explain = ns.sh_ok(guide::EXPLAIN)?;
    for field in ["replicas", "transport", "securityPolicy", "plugins"] {
        ensure!(explain.contains(field), "explain lists {field}");
    }
    let file = env.work.join("your-resource.yaml");
    std::fs::write(
        &file,
        "apiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: dry}\nspec: {replicas: 1}\n",
    )?;
    let out = ns.sh_ok(&guide::dry_run(&file.to_string_lossy()))?;
    ensure!(out.contains("created (dry run)"), "{out}");
    ensure!(ns.api::<McpServer>().get_opt("dry").await?.is_none());
    deploy_guide_server(&ns).await?;
    ns.sh_ok(&guide::trouble_server("my-mcp-server"))?;
    ns.sh_ok(guide::TROUBLE_OPERATOR)?;
    let logs = ns.sh_ok(guide::OPERATOR_LOGS)?;
    ensure!(!logs.trim().is_empty(), "operator logs by the guide's label");
    ns.sh_ok(guide::SERVER_LOGS)?;
    // The metrics endpoint, through the guide's port-forward.
    let metrics = ns.sh_ok(&format!(
        "{} >/dev/null 2>&1 & pf=$!; trap 'kill $pf' EXIT; for i in $(seq 1 60); do curl -fsS localhost:8080/metrics && exit 0; sleep 1; done; exit 1",
        guide::PORT_FORWARD
    ))?;
    ensure!(metrics.contains("mcp_operator_reconcile_total") && metrics.contains("mcp_operator_objects"), "{metrics}");
    Ok(())
}

// ---------------------------------------------------------------- canary and multi-tenant

#[tokio::test(flavor = "multi_thread")]
async fn canary_staging_and_production_run_side_by_side() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("canary").await?;
    ns.sh_ok(guide::CANARY)?;
    running(&ns, "mcp-server-canary", 1).await?;
    running(&ns, "mcp-server-production", 5).await?;
    let image = |d: Deployment| d.spec.template.spec.unwrap().containers[0].image.clone();
    ensure!(image(ns.api::<Deployment>().get("mcp-server-canary").await?).as_deref() == Some("mcp-rs:v0.2.0-beta"));
    ensure!(image(ns.api::<Deployment>().get("mcp-server-production").await?).as_deref() == Some("mcp-rs:v0.1.0"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_tenant_policy_per_tenant_namespace() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let admin = env.namespace("mt-admin").await?;
    admin.sh("kubectl delete namespace tenant-a --ignore-not-found --wait=true --timeout=120s").ok();
    let result = async {
        admin.sh_ok(&guide::multi_tenant("tenant-a"))?;
        let api: Api<McpServer> = Api::namespaced(env.client().await?, "tenant-a");
        // The tenant's policy does not exist yet: fail closed.
        let s = wait_for(&api, "mcp-server-a", "fail closed", |s: Option<&McpServer>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.phase == McpServerPhase::Failed)
        })
        .await?;
        ensure!(condition(&s, "SecurityPolicyResolved").2.contains("tenant-a-policy"));
        // The tenant applies the example policies into its namespace.
        admin.sh_ok("kubectl apply -n tenant-a -f k8s/manifests/examples.yaml")?;
        wait_for(&api, "mcp-server-a", "running with the tenant policy", |s: Option<&McpServer>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.phase == McpServerPhase::Running && st.ready_replicas == 2)
        })
        .await?;
        let cm: Api<ConfigMap> = Api::namespaced(env.client().await?, "tenant-a");
        let policy: serde_json::Value = serde_json::from_str(&cm.get("mcp-server-a-config").await?.data.unwrap()["policy.json"])?;
        ensure!(policy["policy"] == "tenant-a-policy", "{policy}");
        ensure!(policy["authorization"]["allowedRoles"].to_string().contains("tenant-a-admin"), "{policy}");
        // Another namespace's server cannot use tenant-a's policy.
        admin.sh_ok("kubectl apply -f - <<EOF\napiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: other}\nspec: {securityPolicy: tenant-a-policy}\nEOF")?;
        wait_for(&admin.api::<McpServer>(), "other", "not found across namespaces", |s: Option<&McpServer>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.phase == McpServerPhase::Failed)
        })
        .await?;
        Ok(())
    }
    .await;
    admin.sh("kubectl delete namespace tenant-a --wait=false").ok();
    result
}

// ---------------------------------------------------------------- bad input

#[rstest]
#[case::replicas_too_many("replicas: 11", "spec.replicas")]
#[case::replicas_zero("replicas: 0", "spec.replicas")]
#[case::port_privileged("port: 80", "spec.port")]
#[case::port_too_high("port: 70000", "spec.port")]
#[case::unknown_transport("transport: grpc", "spec.transport")]
#[case::stdio_without_command("transport: stdio", "spec.command is required when spec.transport is stdio")]
#[case::duplicate_plugins("plugins: [a, a]", "spec.plugins")]
#[case::bad_path("path: no-slash", "spec.path")]
#[case::bad_quantity("resources: {limits: {cpu: 1.5.5}}", "spec.resources.limits.cpu")]
#[case::bad_request_quantity("resources: {requests: {memory: 1GB}}", "spec.resources.requests.memory")]
#[case::empty_env_name("env: [{name: \"\", value: x}]", "spec.env[0].name")]
#[case::env_name_with_digit_first("env: [{name: 1ABC, value: x}]", "spec.env[0].name")]
#[case::env_name_dot("env: [{name: x, value: y}, {name: ., value: x}]", "spec.env[1].name")]
#[case::env_name_dot_dot("env: [{name: ..x, value: x}]", "spec.env[0].name")]
#[case::negative_quantity("resources: {limits: {cpu: \"-1\"}}", "spec.resources.limits.cpu")]
#[case::fractional_exponent("resources: {limits: {cpu: 1e1.5}}", "spec.resources.limits.cpu")]
#[case::image_with_a_space("image: \"mcp-rs latest\"", "spec.image")]
#[case::empty_executable("command: [\"\", serve]", "spec.command[0]")]
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_mcpserver_is_rejected_naming_the_field(#[case] spec: &str, #[case] field: &str) -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("bad").await?;
    let err = ns.sh_err(&format!(
        "kubectl apply -f - <<EOF\napiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {{name: bad}}\nspec:\n  {spec}\nEOF"
    ))?;
    ensure!(err.contains(field), "error names {field}: {err}");
    ensure!(ns.api::<McpServer>().get_opt("bad").await?.is_none());
    Ok(())
}

#[rstest]
#[case::isolation_level(
    "kind: Plugin\nmetadata: {name: p}\nspec: {name: p, image: x, isolation: {level: Sandbox}}",
    "spec.isolation.level"
)]
#[case::plugin_without_image("kind: Plugin\nmetadata: {name: p}\nspec: {name: p}", "spec.image")]
#[case::plugin_bad_quantity(
    "kind: Plugin\nmetadata: {name: p}\nspec: {name: p, image: x, resources: {limits: {memory: lots}}}",
    "spec.resources.limits.memory"
)]
#[case::plugin_dotted_name(
    "kind: Plugin\nmetadata: {name: dotted.plugin}\nspec: {name: p, image: x}",
    "metadata.name must be a DNS-1123 label"
)]
#[case::server_dotted_name(
    "kind: MCPServer\nmetadata: {name: dotted.name}\nspec: {}",
    "metadata.name must be a DNS-1035 label"
)]
#[case::server_name_of_64(
    "kind: MCPServer\nmetadata: {name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\nspec: {}",
    "metadata.name must be a DNS-1035 label"
)]
#[case::server_name_starting_with_a_digit(
    "kind: MCPServer\nmetadata: {name: 1server}\nspec: {}",
    "metadata.name must be a DNS-1035 label"
)]
#[case::tls_without_cert(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {encryption: {tlsEnabled: true}}",
    "spec.encryption.certSecretName is required"
)]
#[case::tls_version("kind: SecurityPolicy\nmetadata: {name: p}\nspec: {encryption: {tlsEnabled: true, tlsVersion: \"1.0\", certSecretName: c}}", "spec.encryption.tlsVersion")]
#[case::auth_method(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {authentication: {methods: [basic]}}",
    "spec.authentication.methods"
)]
#[case::required_without_methods(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {authentication: {required: true}}",
    "spec.authentication.methods must name at least one method"
)]
#[case::authz_mode(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {authorization: {mode: abac}}",
    "spec.authorization.mode"
)]
#[case::jwt_without_keys(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {authentication: {methods: [jwt], jwt: {issuer: x}}}",
    "spec.authentication.jwt needs jwksUri or secretRef"
)]
#[case::jwks_without_audience(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {authentication: {methods: [jwt], jwt: {issuer: x, jwksUri: \"https://idp.example/jwks\"}}}",
    "spec.authentication.jwt.jwksUri needs issuer and audiences"
)]
#[case::rate_zero(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {rateLimiting: {enabled: true, requestsPerMinute: 0}}",
    "spec.rateLimiting.requestsPerMinute"
)]
#[case::audit_level(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {audit: {enabled: true, logLevel: debug}}",
    "spec.audit.logLevel"
)]
#[case::cert_secret_name_with_a_space(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {encryption: {tlsEnabled: true, certSecretName: \"my cert\"}}",
    "spec.encryption.certSecretName"
)]
#[case::secret_ref_uppercase(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {authentication: {methods: [apikey], apiKeys: {secretRef: {name: Keys}}}}",
    "spec.authentication.apiKeys.secretRef.name"
)]
#[case::cidr_octet(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {network: {allowedCIDRs: [10.0.0.0/8, 999.1.1.1/8]}}",
    "spec.network.allowedCIDRs[1]"
)]
#[case::cidr_prefix(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {network: {allowedCIDRs: [1.2.3.4/40]}}",
    "spec.network.allowedCIDRs[0]"
)]
#[case::namespace_name(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {network: {allowedNamespaces: [Team A]}}",
    "spec.network.allowedNamespaces[0]"
)]
#[case::duplicate_role(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {authorization: {tools: [{role: dev, allow: [a]}, {role: dev, allow: [b]}]}}",
    "spec.authorization.tools"
)]
#[case::empty_roles_claim(
    "kind: SecurityPolicy\nmetadata: {name: p}\nspec: {authorization: {rolesClaim: \"\"}}",
    "spec.authorization.rolesClaim"
)]
#[case::plugin_image_with_a_space("kind: Plugin\nmetadata: {name: p}\nspec: {name: p, image: \"a b\"}", "spec.image")]
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_plugin_and_policy_are_rejected_naming_the_field(
    #[case] body: &str,
    #[case] field: &str,
) -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("bad").await?;
    let err = ns.sh_err(&format!("kubectl apply -f - <<EOF\napiVersion: mcp.n-takatsu.dev/v1alpha1\n{body}\nEOF"))?;
    ensure!(err.contains(field), "error names {field}: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_policy_method_without_settings_is_reported_and_running_server_kept() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("bad-policy").await?;
    ns.sh_ok("kubectl apply -f - <<EOF\napiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: SecurityPolicy\nmetadata: {name: p}\nspec: {enabled: true}\n---\napiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: s}\nspec: {securityPolicy: p}\nEOF")?;
    running(&ns, "s", 1).await?;
    let pods = pod_uids(&ns, "app=s").await?;
    // The guide's own SecurityPolicy example names jwt and oauth2 without their settings.
    ns.sh_ok("kubectl patch securitypolicy p --type=merge -p '{\"spec\":{\"authentication\":{\"required\":true,\"methods\":[\"jwt\",\"oauth2\"]}}}'")?;
    let p = wait_for(&ns.api::<SecurityPolicy>(), "p", "Error naming the field", |p: Option<&SecurityPolicy>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.phase == Some(SecurityPolicyPhase::Error))
    })
    .await?;
    ensure!(p.status.unwrap().conditions[0].message.contains("spec.authentication.jwt is required"));
    wait_for(&ns.api::<McpServer>(), "s", "held back", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.phase == McpServerPhase::Failed)
    })
    .await?;
    ensure!(pod_uids(&ns, "app=s").await? == pods, "nothing running is lost");
    let secrets = ns.api::<Secret>().list(&ListParams::default()).await?;
    ensure!(secrets.items.iter().all(|s| !s.name_any().contains("jwt")), "nothing invented");
    // An IPv6 range the schema's pattern lets through (it checks IPv6 characters only) is named by
    // the policy's own condition, before any server's NetworkPolicy is refused with it.
    ns.sh_ok("kubectl patch securitypolicy p --type=merge -p '{\"spec\":{\"authentication\":null,\"network\":{\"allowedCIDRs\":[\"10.0.0.0/8\",\"fd00::1::/64\"]}}}'")?;
    let p = wait_for(&ns.api::<SecurityPolicy>(), "p", "Error naming the range", |p: Option<&SecurityPolicy>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.message.contains("spec.network.allowedCIDRs[1]")))
    })
    .await?;
    ensure!(p.status.unwrap().phase == Some(SecurityPolicyPhase::Error));
    let s = wait_for(&ns.api::<McpServer>(), "s", "held back naming the range", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.conditions.iter().any(|c| c.reason == "PolicyInvalid" && c.message.contains("allowedCIDRs[1]"))
        })
    })
    .await?;
    ensure!(condition(&s, "Ready").1 == "PolicyInvalid");
    ensure!(pod_uids(&ns, "app=s").await? == pods, "nothing running is lost");
    // A range with bits set beyond its prefix, which API servers from 1.36 refuse and earlier ones
    // take meaning the range: the NetworkPolicy gets the range, on every version.
    ns.sh_ok("kubectl patch securitypolicy p --type=merge -p '{\"spec\":{\"network\":{\"allowedCIDRs\":[\"192.168.1.10/24\"]}}}'")?;
    wait_for(&ns.api::<NetworkPolicy>(), "s", "the range in the NetworkPolicy", |np: Option<&NetworkPolicy>| {
        let cidrs: Vec<_> = np
            .and_then(|np| np.spec.as_ref()?.ingress.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|rule| rule.from.iter().flatten())
            .filter_map(|peer| peer.ip_block.as_ref().map(|b| b.cidr.clone()))
            .collect();
        cidrs == ["192.168.1.0/24"]
    })
    .await?;
    wait_for(&ns.api::<McpServer>(), "s", "running again", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "AllReplicasReady"))
    })
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- gateway (data plane)

/// Kills a child process when dropped.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;

/// POSTs an MCP initialize to `url`; returns the HTTP status (0: no answer) and body.
fn mcp_initialize(ns: &TestNamespace, url: &str, token: Option<&str>) -> Result<(u16, String)> {
    let auth = token.map(|t| format!("-H 'Authorization: Bearer {t}'")).unwrap_or_default();
    let out = ns.sh_ok(&format!(
        "b=$(mktemp); code=$(curl -sS --max-time 10 -o $b -w '%{{http_code}}' -X POST {auth} \
         -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
         --data '{INITIALIZE}' {url} 2>/dev/null || true); echo \"${{code:-0}}\"; cat $b; rm -f $b"
    ))?;
    let (code, body) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_real_mcp_call_with_a_token_follows_the_rendered_policy() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.pods_namespace("gw-call").await?;
    let secret = "e2e-hs256-secret-for-the-gateway-0123456789";
    ns.sh_ok(&format!(
        "kubectl create secret generic jwt-key --from-literal=hs256={secret} && kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: p}}
spec:
  authentication: {{required: true, methods: [jwt], jwt: {{issuer: e2e, audiences: [mcp], secretRef: {{name: jwt-key, key: hs256}}}}}}
  authorization: {{mode: rbac, allowedRoles: [developer]}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {{name: s}}
spec: {{securityPolicy: p, port: 3000}}
EOF"
    ))?;
    running(&ns, "s", 1).await?;
    let developer = hs256_token(secret, "e2e", "mcp", &["developer"])?;
    let guest = hs256_token(secret, "e2e", "mcp", &["guest"])?;
    // Keep the processes of the local path alive for the whole test.
    let mut _processes: Vec<Child> = vec![];
    let url = if env.operator_is_local() {
        // No container runs on the local cluster: run the real gateway binary with exactly the
        // arguments and policy document the operator rendered into the pod, in front of the
        // reference MCP server, so that the rendered config is proven consumable as is.
        let d = ns.api::<Deployment>().get("s").await?;
        let gw = d
            .spec
            .template
            .spec
            .as_ref()
            .context("pod")?
            .containers
            .iter()
            .find(|c| c.name == "gateway")
            .context("gateway container")?
            .clone();
        let cm = ns.api::<ConfigMap>().get("s-config").await?;
        let work = env.work.join(format!("gw-{}", ns.name));
        let secrets = work.join("secrets");
        std::fs::create_dir_all(secrets.join("jwt-key"))?;
        std::fs::write(secrets.join("jwt-key/hs256"), secret)?;
        let policy =
            cm.data.context("data")?["policy.json"].replace("/var/run/secrets/mcp", &secrets.to_string_lossy());
        std::fs::write(work.join("policy.json"), policy)?;
        let deps = ns.sh_ok("hack/gateway-test-deps.sh")?;
        let everything =
            deps.lines().find_map(|l| l.strip_prefix("SERVER_EVERYTHING=")).context("server-everything")?.to_string();
        let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let (up, listen, admin) = (free()?, free()?, free()?);
        _processes.push(Child(
            std::process::Command::new("node")
                .args([everything.as_str(), "streamableHttp"])
                .env("PORT", up.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?,
        ));
        ns.sh_ok("cargo build --quiet -p mcp-gateway")?;
        let mut args: Vec<String> = gw.args.clone().unwrap_or_default();
        for a in args.iter_mut() {
            if a.starts_with("--listen=") {
                *a = format!("--listen=127.0.0.1:{listen}");
            } else if a.starts_with("--admin-listen=") {
                *a = format!("--admin-listen=127.0.0.1:{admin}");
            } else if a.starts_with("--upstream=") {
                ensure!(a == "--upstream=http://127.0.0.1:3000/mcp", "rendered upstream: {a}");
                *a = format!("--upstream=http://127.0.0.1:{up}/mcp");
            } else if a.starts_with("--policy=") {
                ensure!(a == "--policy=/etc/mcp/policy.json", "rendered policy path: {a}");
                *a = format!("--policy={}", work.join("policy.json").display());
            }
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env.repo.join("target"));
        _processes.push(Child(
            std::process::Command::new(target.join("debug/mcp-gateway"))
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(work.join("gateway.log"))?)
                .spawn()?,
        ));
        eventually("the gateway to be ready (MCP handshake with the server)", || {
            let url = format!("http://127.0.0.1:{admin}/readyz");
            async move { Ok(mcp_operator_e2e::env::http_get(&url).await.ok().map(|_| ())) }
        })
        .await?;
        format!("http://127.0.0.1:{listen}/mcp")
    } else {
        // Real pods (node, k3s): through the Service, with the guide's kind of command.
        let port = 18000 + (std::process::id() % 1000) as u16;
        _processes.push(Child(
            std::process::Command::new("kubectl")
                .args(["port-forward", "svc/s", &format!("{port}:3000"), "-n", &ns.name])
                .env("KUBECONFIG", &env.cluster.kubeconfig)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?,
        ));
        let url = format!("http://127.0.0.1:{port}/mcp");
        eventually("the port-forward to the Service", || {
            let (ns, url) = (&ns, url.clone());
            async move { Ok(mcp_initialize(ns, &url, None).ok().filter(|(c, _)| *c != 0).map(|_| ())) }
        })
        .await?;
        url
    };
    let (code, body) = mcp_initialize(&ns, &url, None)?;
    ensure!(code == 401, "no token: {code} {body}");
    let (code, body) = mcp_initialize(&ns, &url, Some(&guest))?;
    ensure!(code == 403, "role not allowed: {code} {body}");
    let (code, body) = mcp_initialize(&ns, &url, Some(&developer))?;
    ensure!(code == 200 && body.contains("serverInfo"), "allowed: {code} {body}");
    Ok(())
}

/// What the schema cannot see (the ConfigMap a server's plugins fill must stay under 1 MiB) is
/// a Ready=False condition and a Warning Event naming the field; what runs stays; the server is
/// still deletable; a neighbour is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_plugin_config_nested_too_deep_is_reported_and_the_others_go_on() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("deep-config").await?;
    // The API server stores JSON nested up to 10,000 levels; the operator reads 127. Such a
    // Plugin once failed every list of Plugins, and with it every reconcile in the cluster.
    let depth = 300;
    let config = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let deep = format!(
        r#"{{"apiVersion":"mcp.n-takatsu.dev/v1alpha1","kind":"Plugin","metadata":{{"name":"deep"}},"spec":{{"name":"deep","image":"mcp-plugin:e2e","isolation":{{"level":"None"}},"config":{config}}}}}"#
    );
    ns.sh_ok(&format!("kubectl create -f - <<'EOF'\n{deep}\nEOF"))?;
    let events = eventually("an InvalidObject Event on the deep Plugin", || {
        let ns = &ns;
        async move {
            let out = ns.sh_ok("kubectl get events --field-selector involvedObject.name=deep,type=Warning")?;
            Ok(out.contains("InvalidObject").then_some(out))
        }
    })
    .await?;
    ensure!(events.contains("127 levels"), "names the problem: {events}");
    // A Plugin made after it, and a server using that one, are reconciled as ever.
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {name: fine}
spec: {name: fine, image: \"mcp-plugin:e2e\", port: 9000, isolation: {level: Process}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: s}
spec: {plugins: [fine]}
EOF",
    )?;
    running(&ns, "s", 1).await?;
    // A server naming the deep Plugin is told it cannot be read, not that it does not exist.
    ns.sh_ok("kubectl apply -f - <<EOF\napiVersion: mcp.n-takatsu.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: uses-deep}\nspec: {plugins: [deep]}\nEOF")?;
    let held = wait_for(&ns.api::<McpServer>(), "uses-deep", "PluginsResolved False", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "PluginsResolved" && c.status == "False"))
    })
    .await?;
    let (_, _, message) = condition(&held, "PluginsResolved");
    ensure!(message.contains("\"deep\" cannot be read") && message.contains("127 levels"), "says why: {message}");
    ns.sh_ok("kubectl delete mcpserver uses-deep --timeout=60s")?;
    ns.sh_ok("kubectl delete plugin deep --timeout=60s")?;
    Ok(())
}

/// A request above its limit passes the schema (Kubernetes 1.25 has no CEL quantity functions) and
/// would be refused by the API server naming only the Deployment's pod template: the operator
/// names the MCPServer's (or the plugin's) own fields instead, writes no child, and what runs stays.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_request_above_its_limit_names_the_field_and_nothing_running_is_lost() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("bad-limits").await?;
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: s}
spec: {}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: fresh}
spec: {resources: {requests: {memory: 1Gi}, limits: {memory: 512Mi}}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {name: greedy}
spec: {name: greedy, image: mcp-rs:latest, isolation: {level: Container}, resources: {requests: {cpu: 1500m}, limits: {cpu: 1}}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: with-plugin}
spec: {plugins: [greedy]}
EOF",
    )?;
    running(&ns, "s", 1).await?;
    let pods = pod_uids(&ns, "app=s").await?;
    let reason_is = |reason: &'static str| {
        move |s: Option<&McpServer>| {
            s.and_then(|s| s.status.as_ref())
                .is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == reason))
        }
    };
    // A new server: refused naming both fields, nothing created.
    let fresh =
        wait_for(&ns.api::<McpServer>(), "fresh", "Ready False InvalidResources", reason_is("InvalidResources"))
            .await?;
    let (_, _, message) = condition(&fresh, "Ready");
    ensure!(
        message.contains("spec.resources.requests.memory (1Gi) is more than spec.resources.limits.memory (512Mi)"),
        "names the fields: {message}"
    );
    ensure!(ns.api::<Deployment>().get_opt("fresh").await?.is_none(), "no workload for a refused spec");
    let events = ns.sh_ok("kubectl get events --field-selector involvedObject.name=fresh,type=Warning")?;
    ensure!(events.contains("InvalidResources"), "{events}");
    // A plugin's: the server using it is held back naming the plugin.
    let held =
        wait_for(&ns.api::<McpServer>(), "with-plugin", "PluginsUnresolved", reason_is("PluginsUnresolved")).await?;
    let (_, _, message) = condition(&held, "PluginsResolved");
    ensure!(
        message.contains(
            "plugin \"greedy\": spec.resources.requests.cpu (1500m) is more than spec.resources.limits.cpu (1)"
        ),
        "names the plugin and its fields: {message}"
    );
    wait_for(&ns.api::<Plugin>(), "greedy", "Plugin Ready False InvalidResources", |p: Option<&Plugin>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|st| {
            st.phase == PluginPhase::Failed
                && st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "InvalidResources")
        })
    })
    .await?;
    // A running server changed to one: held back, its pods untouched; fixed, it applies again.
    ns.sh_ok(r#"kubectl patch mcpserver s --type merge -p '{"spec":{"resources":{"requests":{"cpu":"2"},"limits":{"cpu":"1"}}}}'"#)?;
    wait_for(&ns.api::<McpServer>(), "s", "Ready False InvalidResources", reason_is("InvalidResources")).await?;
    ensure!(pod_uids(&ns, "app=s").await? == pods, "what runs stays");
    ns.sh_ok(r#"kubectl patch mcpserver s --type merge -p '{"spec":{"resources":{"requests":{"cpu":"1"}}}}'"#)?;
    wait_for(&ns.api::<Deployment>(), "s", "the fixed resources applied", |d: Option<&Deployment>| {
        let server = d
            .and_then(|d| d.spec.template.spec.as_ref())
            .and_then(|p| p.containers.iter().find(|c| c.name == "server").and_then(|c| c.resources.clone()));
        let cpu = |m: Option<std::collections::BTreeMap<String, Quantity>>| m.and_then(|m| m.get("cpu").cloned());
        server.is_some_and(|r| {
            (cpu(r.requests).as_ref(), cpu(r.limits).as_ref())
                == (Some(&Quantity("1".into())), Some(&Quantity("1".into())))
        })
    })
    .await?;
    // Likewise a resource a container cannot ask for, and an env entry the API server would
    // refuse: each named, what runs stays, and fixed, the server runs again. (First the rollout of
    // the fixed resources ends: its new pod replaces the old.)
    wait_for(&ns.api::<McpServer>(), "s", "the rollout complete", |s: Option<&McpServer>| {
        s.and_then(|s| Some((s.metadata.generation, s.status.as_ref()?))).is_some_and(|(generation, st)| {
            st.observed_generation == generation
                && st.conditions.iter().any(|c| c.type_ == "Progressing" && c.reason == "RolloutComplete")
                && st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "AllReplicasReady")
        })
    })
    .await?;
    let pods = eventually("one pod of s", || {
        let ns = &ns;
        async move { Ok(Some(pod_uids(ns, "app=s").await?).filter(|p| p.len() == 1)) }
    })
    .await?;
    ns.sh_ok(r#"kubectl patch mcpserver s --type merge -p '{"spec":{"resources":{"limits":{"CPU":"1"}}}}'"#)?;
    let s = wait_for(&ns.api::<McpServer>(), "s", "Ready False InvalidResources", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.conditions.iter().any(|c| c.type_ == "Ready" && c.message.contains("spec.resources.limits.CPU"))
        })
    })
    .await?;
    ensure!(condition(&s, "Ready").1 == "InvalidResources");
    ns.sh_ok(r#"kubectl patch mcpserver s --type merge -p '{"spec":{"resources":{"limits":{"CPU":null}},"env":[{"name":"TOKEN","value":"x","valueFrom":{"secretKeyRef":{"name":"t","key":"k"}}}]}}'"#)?;
    let s = wait_for(&ns.api::<McpServer>(), "s", "Ready False InvalidEnv", reason_is("InvalidEnv")).await?;
    let (_, _, message) = condition(&s, "Ready");
    ensure!(message.contains("spec.env[0] (TOKEN): value and valueFrom are exclusive"), "{message}");
    eventually("an InvalidEnv Warning Event on s", || {
        let ns = &ns;
        async move {
            let out = ns.sh_ok("kubectl get events --field-selector involvedObject.name=s,type=Warning")?;
            Ok(out.contains("InvalidEnv").then_some(()))
        }
    })
    .await?;
    ensure!(pod_uids(&ns, "app=s").await? == pods, "what runs stays");
    // A variable the operator sets, or one set twice: the Deployment's apply would refuse the
    // repeated name, naming the pod template's env; here the spec's entries are named.
    ns.sh_ok(r#"kubectl patch mcpserver s --type merge -p '{"spec":{"env":[{"name":"MCP_PORT","value":"9000"},{"name":"A","value":"1"},{"name":"A","value":"2"}]}}'"#)?;
    let s = wait_for(&ns.api::<McpServer>(), "s", "InvalidEnv naming the repeated names", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.message.contains("spec.env[2] (A): repeats spec.env[1]"))
        })
    })
    .await?;
    let (_, reason, message) = condition(&s, "Ready");
    ensure!(reason == "InvalidEnv", "{reason}");
    ensure!(message.contains("spec.env[0] (MCP_PORT): reserved: the operator sets it from spec.port"), "{message}");
    ensure!(pod_uids(&ns, "app=s").await? == pods, "what runs stays");
    ns.sh_ok(r#"kubectl patch mcpserver s --type merge -p '{"spec":{"env":null}}'"#)?;
    wait_for(&ns.api::<McpServer>(), "s", "Ready again", reason_is("AllReplicasReady")).await?;
    ns.sh_ok("kubectl delete mcpserver s fresh with-plugin --timeout=60s")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_plugin_config_over_a_configmap_is_reported_and_nothing_running_is_lost() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let ns = env.namespace("bad-config").await?;
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {name: big}
spec: {name: big, image: mcp-rs:latest, isolation: {level: None}, config: {}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: s}
spec: {plugins: [big]}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: neighbour}
spec: {}
EOF",
    )?;
    running(&ns, "s", 1).await?;
    running(&ns, "neighbour", 1).await?;
    let pods = pod_uids(&ns, "app=s").await?;
    let neighbour = pod_uids(&ns, "app=neighbour").await?;
    // 600 KiB of config: the Plugin itself is storable, the server's ConfigMap (which holds it
    // twice) is not. (`kubectl apply` would also keep a copy in an annotation: patch instead.)
    let blob = "x".repeat(600 * 1024);
    let patch = serde_json::json!({"spec": {"config": {"blob": blob}}});
    ns.api::<Plugin>().patch("big", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    let s = wait_for(&ns.api::<McpServer>(), "s", "Ready False ConfigTooLarge", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "ConfigTooLarge"))
    })
    .await?;
    let (_, _, message) = condition(&s, "Ready");
    ensure!(message.contains("spec.config of Plugin \"big\""), "names the field: {message}");
    ensure!(s.status.as_ref().unwrap().phase == McpServerPhase::Failed);
    let events = ns.sh_ok("kubectl get events --field-selector involvedObject.name=s,type=Warning")?;
    ensure!(events.contains("ConfigTooLarge"), "{events}");
    ensure!(pod_uids(&ns, "app=s").await? == pods, "what runs stays");
    ensure!(pod_uids(&ns, "app=neighbour").await? == neighbour, "a neighbour is untouched");
    ns.sh_ok("kubectl delete mcpserver s --timeout=60s")?;
    wait_gone(&ns.api::<Deployment>(), "s").await?;
    Ok(())
}
