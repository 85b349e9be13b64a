//! The data plane for real: MCP servers in real pods (provider node: the local cluster's real
//! node; k3s; an existing cluster), reached through their Services by the official Python SDK
//! client, with and without a SecurityPolicy, for every transport; status read from the pods'
//! gateways; rolling updates that drop no call; NetworkPolicies that really block; a plugin
//! workload only its server reaches; real logs; scaling. The server image is `mcp-rs:latest`
//! (hack/images.sh: `@modelcontextprotocol/server-everything` for http, websocket and stdio).
//! On the local provider (simulated pods only) each scenario says SKIPPED and passes.

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::ResourceExt;
use mcp_operator::api::{McpServer, McpServerPhase};
use mcp_operator_e2e::wait::eventually;
use mcp_operator_e2e::{env, wait_for, TestNamespace};
use rstest::rstest;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;
const SECRET: &str = "e2e-hs256-secret-for-the-data-plane-0123456789";

fn token(roles: &[&str]) -> Result<String> {
    mcp_operator_e2e::hs256_token(SECRET, "e2e", "mcp", roles)
}

/// The Python SDK client (e2e/py/mcp_call.py) against `url`; its JSON report.
fn mcp_call(ns: &TestNamespace, transport: &str, url: &str, token: Option<&str>, tool: &str) -> Result<Value> {
    let deps = ns.sh_ok("hack/gateway-test-deps.sh")?;
    let python = deps.lines().find_map(|l| l.strip_prefix("PYTHON=")).context("PYTHON")?.to_string();
    let out =
        ns.sh_ok(&format!("timeout 90 {python} e2e/py/mcp_call.py {transport} {url} {} {tool}", token.unwrap_or("-")))?;
    serde_json::from_str(out.trim()).with_context(|| format!("client output: {out}"))
}

/// Waits until the gateway behind `ip:3000` answers HTTP at all (any status): a new pod's
/// NetworkPolicy (an enforced policy admits only the gateway) takes the policy controller a moment
/// to program, and a connection refused meanwhile says nothing about the policy.
async fn answering(ns: &TestNamespace, ip: &str) -> Result<()> {
    let probe = format!("curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{ip}:3000/mcp");
    eventually(&format!("{ip}:3000 to answer HTTP"), || {
        let out = ns.sh(&probe);
        async move {
            Ok(out.ok().filter(|o| !matches!(String::from_utf8_lossy(&o.stdout).trim(), "" | "000")).map(|_| ()))
        }
    })
    .await
}

async fn cluster_ip(ns: &TestNamespace, name: &str) -> Result<String> {
    ns.api::<Service>().get(name).await?.spec.and_then(|s| s.cluster_ip).context("clusterIP")
}

/// Running with `ready` replicas, and McpReady=True read from the real pods' gateways.
async fn serving(ns: &TestNamespace, name: &str, ready: i32) -> Result<McpServer> {
    wait_for(&ns.api::<McpServer>(), name, &format!("Running {ready}/{ready} and McpReady"), |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.phase == McpServerPhase::Running
                && st.ready_replicas == ready
                && st.conditions.iter().any(|c| c.type_ == "McpReady" && c.status == "True")
        })
    })
    .await
}

async fn pod_ips(ns: &TestNamespace, name: &str) -> Result<Vec<(String, String)>> {
    let pods = ns.api::<Pod>().list(&ListParams::default().labels(&format!("app={name}"))).await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.name_any(), p.status?.pod_ip?)))
        .collect())
}

fn apply_server(ns: &TestNamespace, name: &str, transport: &str, policy: Option<&str>) -> Result<()> {
    let command = if transport == "stdio" { "\n  command: [/usr/bin/node, /app/launch.mjs, stdio]" } else { "" };
    let policy = policy.map(|p| format!("\n  securityPolicy: {p}")).unwrap_or_default();
    ns.sh_ok(&format!(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {{name: {name}}}
spec:
  image: mcp-rs:latest
  transport: {transport}
  port: 3000{command}{policy}
EOF"
    ))?;
    Ok(())
}

fn jwt_policy(ns: &TestNamespace, extra: &str) -> Result<()> {
    ns.sh_ok(&format!(
        "kubectl create secret generic jwt-key --from-literal=hs256={SECRET} && kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: p}}
spec:
  authentication: {{required: true, methods: [jwt], jwt: {{issuer: e2e, audiences: [mcp], secretRef: {{name: jwt-key, key: hs256}}}}}}
  authorization: {{mode: rbac, allowedRoles: [developer, admin], tools: [{{role: developer, allow: [echo]}}]}}{extra}
EOF"
    ))?;
    Ok(())
}

fn tools(report: &Value) -> Vec<String> {
    report["tools"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect()
}

#[rstest]
#[case::http("http", "http")]
#[case::websocket("websocket", "ws")]
#[case::stdio("stdio", "http")]
#[tokio::test(flavor = "multi_thread")]
async fn real_pods_every_transport_answers_the_python_sdk_through_the_service(
    #[case] transport: &str,
    #[case] scheme: &str,
) -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let Some(ns) = env.real_namespace(&format!("dp-{transport}")).await? else { return Ok(()) };
    jwt_policy(&ns, "")?;
    apply_server(&ns, "open", transport, None)?;
    apply_server(&ns, "guarded", transport, Some("p"))?;

    // Without a policy: every tool, a real call.
    let s = serving(&ns, "open", 1).await?;
    let st = s.status.context("status")?;
    ensure!(st.server_info.as_ref().and_then(|i| i.name.as_deref()) == Some("mcp-servers/everything"), "{st:?}");
    ensure!(st.tools.contains(&"get-env".to_string()) && st.tool_count == Some(st.tools.len() as i32));
    let ip = cluster_ip(&ns, "open").await?;
    answering(&ns, &ip).await?;
    let url = format!("{scheme}://{ip}:3000/mcp");
    let r = mcp_call(&ns, transport, &url, None, "echo")?;
    ensure!(r["server"] == "mcp-servers/everything", "{r}");
    ensure!(r["result"][0] == "Echo: hello from e2e", "{r}");
    ensure!(tools(&r).contains(&"get-env".to_string()), "{r}");

    // With the policy: no token 401, the developer's tools only, a denied tool refused.
    serving(&ns, "guarded", 1).await?;
    let ip = cluster_ip(&ns, "guarded").await?;
    answering(&ns, &ip).await?;
    let url = format!("{scheme}://{ip}:3000/mcp");
    let anonymous = mcp_call(&ns, transport, &url, None, "echo")?;
    ensure!(anonymous["status"] == 401, "no token: {anonymous}");
    let dev = token(&["developer"])?;
    let r = mcp_call(&ns, transport, &url, Some(&dev), "echo")?;
    ensure!(r["result"][0] == "Echo: hello from e2e", "{r}");
    ensure!(tools(&r) == vec!["echo".to_string()], "tools/list filtered for the developer: {r}");
    let denied = mcp_call(&ns, transport, &url, Some(&dev), "get-env")?;
    ensure!(denied["status"] == 403 || denied["rpcError"] == -32001, "a denied tool: {denied}");
    ensure!(denied.get("result").is_none(), "get-env did not run: {denied}");
    let admin = mcp_call(&ns, transport, &url, Some(&token(&["admin"])?), "get-env")?;
    ensure!(admin["isError"] == false && admin.get("result").is_some(), "an admin may: {admin}");

    // The guide's log command shows the real server's output.
    let logs = ns.sh_ok("kubectl logs -l app=open --all-containers --tail=-1")?;
    let want = match transport {
        "http" => "Streamable HTTP",
        "websocket" => "WebSocket server",
        _ => "STDIO",
    };
    ensure!(logs.contains(want), "server output in the logs ({want}):\n{logs}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn real_pods_tls_13_is_enforced() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let Some(ns) = env.real_namespace("dp-tls").await? else { return Ok(()) };
    let dir = env.work.join(format!("tls-{}", ns.name));
    std::fs::create_dir_all(&dir)?;
    let host = format!("tls.{}.svc", ns.name);
    ns.sh_ok(&format!(
        "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN={host} \
         -addext subjectAltName=DNS:{host} -keyout tls.key -out tls.crt 2>/dev/null && \
         kubectl create secret tls tls-cert-secret --cert=tls.crt --key=tls.key",
        d = dir.display()
    ))?;
    jwt_policy(&ns, "\n  encryption: {tlsEnabled: true, tlsVersion: \"1.3\", certSecretName: tls-cert-secret}")?;
    apply_server(&ns, "tls", "http", Some("p"))?;
    serving(&ns, "tls", 1).await?;
    let ip = cluster_ip(&ns, "tls").await?;
    let dev = token(&["developer"])?;
    let curl = |extra: &str| {
        format!(
            "curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 --cacert {}/tls.crt --resolve {host}:3000:{ip} {extra} \
             -X POST -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
             -H 'Authorization: Bearer {dev}' --data '{INITIALIZE}' https://{host}:3000/mcp",
            dir.display()
        )
    };
    // The new pod's NetworkPolicy (an enforced policy admits only the gateway) can take a moment
    // to be programmed by the policy controller: wait for the first answer.
    eventually("a TLS 1.3 call with a token to answer 200", || {
        let out = ns.sh(&curl("--tlsv1.3"));
        async move { Ok(out.ok().filter(|o| String::from_utf8_lossy(&o.stdout).trim() == "200").map(|_| ())) }
    })
    .await?;
    // TLS 1.2 is refused in the handshake (curl exit 35), not for want of a connection.
    let old = ns.sh(&curl("--tlsv1.2 --tls-max 1.2"))?;
    ensure!(
        old.status.code() == Some(35),
        "TLS 1.2 must fail the handshake: {:?} {}",
        old.status,
        String::from_utf8_lossy(&old.stderr)
    );
    let plain = ns.sh(&format!("curl -sS --max-time 5 -o /dev/null -w '%{{http_code}}' http://{ip}:3000/mcp"))?;
    ensure!(String::from_utf8_lossy(&plain.stdout).trim() != "200", "no plain HTTP on a TLS policy");
    Ok(())
}

/// One full MCP exchange on one keep-alive connection (initialize, tools/call echo, DELETE):
/// the loop of the rolling-update test. Prints "ok" or what failed.
const EXCHANGE: &str = r#"
import http.client, json, sys
host = sys.argv[1]
c = http.client.HTTPConnection(host, 3000, timeout=10)
h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
def post(body, sid=None):
    hh = dict(h)
    if sid: hh["Mcp-Session-Id"] = sid
    c.request("POST", "/mcp", json.dumps(body), hh)
    r = c.getresponse(); data = r.read().decode()
    if r.status >= 300: raise SystemExit(f"HTTP {r.status}: {data[:200]}")
    return r, data
r, _ = post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "loop", "version": "1"}}})
sid = r.getheader("Mcp-Session-Id")
post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
_, data = post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "roll"}}}, sid)
if "Echo: roll" not in data: raise SystemExit(f"no echo: {data[:200]}")
c.request("DELETE", "/mcp", headers={"Mcp-Session-Id": sid}); c.getresponse().read()
print("ok")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn real_pods_rolling_update_drops_no_call() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let Some(ns) = env.real_namespace("dp-roll").await? else { return Ok(()) };
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: roll}
spec: {image: mcp-rs:latest, replicas: 2, port: 3000}
EOF",
    )?;
    serving(&ns, "roll", 2).await?;
    let before: BTreeSet<String> = pod_ips(&ns, "roll").await?.into_iter().map(|(n, _)| n).collect();
    let ip = cluster_ip(&ns, "roll").await?;
    answering(&ns, &ip).await?;
    let script = env.work.join(format!("exchange-{}.py", ns.name));
    std::fs::write(&script, EXCHANGE)?;
    let (stop, ok, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let caller = {
        let (stop, ok, failed, errors) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
        let script = script.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = std::process::Command::new("python3").arg(&script).arg(&ip).output();
                match out {
                    Ok(o) if o.status.success() => ok.fetch_add(1, Ordering::SeqCst),
                    Ok(o) => {
                        errors.lock().unwrap().push(String::from_utf8_lossy(&o.stderr).to_string());
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                    Err(e) => {
                        errors.lock().unwrap().push(e.to_string());
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_secs(2));
    // A change of the pod template rolls the pods (the guide's edit, as a patch).
    ns.sh_ok(
        "kubectl patch mcpserver roll --type=merge -p '{\"spec\":{\"env\":[{\"name\":\"ROLL\",\"value\":\"1\"}]}}'",
    )?;
    eventually("the rollout to replace both pods", || {
        let ns = &ns;
        let before = before.clone();
        async move {
            let now: BTreeSet<String> = pod_ips(ns, "roll").await?.into_iter().map(|(n, _)| n).collect();
            let all_pods = ns.api::<Pod>().list(&ListParams::default().labels("app=roll")).await?;
            let done = now.len() == 2 && now.is_disjoint(&before) && all_pods.items.len() == 2;
            Ok(done.then_some(()))
        }
    })
    .await?;
    serving(&ns, "roll", 2).await?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    caller.join().ok();
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    ensure!(
        failed == 0,
        "{failed} of {} exchanges failed during the rollout: {:?}",
        ok + failed,
        errors.lock().unwrap()
    );
    ensure!(ok >= 10, "only {ok} exchanges during the rollout");
    eprintln!("[e2e] rolling update: {ok} MCP exchanges, 0 failed");
    Ok(())
}

/// A client pod (the static test tool) in `ns`.
fn client_pod(ns: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {ns}}}
spec:
  securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: client
    image: mcp-nodetool:latest
    imagePullPolicy: IfNotPresent
    args: [serve]
    securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"
    )
}

/// Whether `nodetool mcp-initialize url` succeeds from the client pod of `ns`.
fn reaches(ns: &TestNamespace, pod_ns: &str, url: &str) -> Result<bool> {
    let out = ns.sh(&format!("kubectl exec -n {pod_ns} client -- /nodetool mcp-initialize {url}"))?;
    Ok(out.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn real_pods_network_policy_admits_only_the_gateway_from_allowed_namespaces() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let Some(ns) = env.real_namespace("dp-netpol").await? else { return Ok(()) };
    let Some(other) = env.real_namespace("dp-netpol-other").await? else { return Ok(()) };
    ns.sh_ok(&format!(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: net}}
spec:
  network: {{allowedNamespaces: [{ns}]}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {{name: s}}
spec: {{image: mcp-rs:latest, port: 3000, securityPolicy: net}}
---
{pod}
---
{other_pod}
EOF
kubectl wait --for=condition=Ready pod/client -n {ns} --timeout=60s && kubectl wait --for=condition=Ready pod/client -n {other_ns} --timeout=60s",
        ns = ns.name,
        other_ns = other.name,
        pod = client_pod(&ns.name),
        other_pod = client_pod(&other.name),
    ))?;
    serving(&ns, "s", 1).await?;
    let service = format!("http://s.{}.svc.cluster.local:3000/mcp", ns.name);
    let (_, pod_ip) = pod_ips(&ns, "s").await?.into_iter().next().context("server pod")?;
    // Allowed: the gateway, from the allowed namespace (by DNS name, through the Service).
    eventually("the gateway to answer its own namespace", || {
        let ok = reaches(&ns, &ns.name, &service).unwrap_or(false);
        async move { Ok(ok.then_some(())) }
    })
    .await?;
    // Blocked: the server's own port (around the gateway), and the gateway from elsewhere.
    ensure!(!reaches(&ns, &ns.name, &format!("http://{pod_ip}:3000/mcp"))?, "the server's own port is reachable");
    ensure!(!reaches(&ns, &other.name, &service)?, "another namespace reaches the gateway");
    ensure!(reaches(&ns, &ns.name, &format!("http://{pod_ip}:8443/mcp"))?, "the gateway port by pod IP");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn real_pods_container_plugin_is_reached_by_its_server_only() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let Some(ns) = env.real_namespace("dp-plugin").await? else { return Ok(()) };
    ns.sh_ok(&format!(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {{name: tool-plugin}}
spec:
  name: tool
  image: mcp-nodetool:latest
  port: 8080
  isolation: {{level: Container, networkIsolation: true}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {{name: s}}
spec: {{image: mcp-rs:latest, port: 3000, plugins: [tool-plugin]}}
---
{pod}
EOF
kubectl wait --for=condition=Ready pod/client --timeout=60s",
        pod = client_pod(&ns.name)
    ))?;
    serving(&ns, "s", 1).await?;
    // The endpoint the server learns from /etc/mcp/plugins.json.
    let plugins: Value =
        serde_json::from_str(&ns.sh_ok("kubectl get configmap s-config -o jsonpath='{.data.plugins\\.json}'")?)?;
    let endpoint = plugins[0]["endpoint"].as_str().context("plugin endpoint")?.to_string();
    ns.sh_ok(
        "kubectl wait --for=condition=Available deployment -l mcp.n-takatsu.dev/plugin=tool-plugin --timeout=120s",
    )?;
    let from_server = format!(
        "kubectl exec deploy/s -c server -- /usr/bin/node -e \"fetch('{endpoint}').then(r => r.text()).then(t => console.log(t), e => {{ console.error(e.message); process.exit(1) }})\""
    );
    eventually("the server to reach its plugin", || {
        let out = ns.sh(&from_server);
        async move {
            Ok(out
                .ok()
                .filter(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("hello from"))
                .map(|_| ()))
        }
    })
    .await?;
    let other = ns.sh(&format!("kubectl exec client -- /nodetool get {endpoint}"))?;
    ensure!(
        !other.status.success(),
        "a pod that is not the plugin's server reached it: {}",
        String::from_utf8_lossy(&other.stdout)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn real_pods_scaling_to_five_gives_five_answering_pods() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let Some(ns) = env.real_namespace("dp-scale").await? else { return Ok(()) };
    apply_server(&ns, "s", "http", None)?;
    serving(&ns, "s", 1).await?;
    ns.sh_ok("kubectl scale mcpserver s --replicas=5")?;
    serving(&ns, "s", 5).await?;
    let pods = pod_ips(&ns, "s").await?;
    ensure!(pods.len() == 5, "{pods:?}");
    for (name, ip) in pods {
        let out = ns.sh_ok(&format!(
            "curl -sS --max-time 10 -X POST -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
             --data '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"e2e\",\"version\":\"1\"}}}}}}' \
             http://{ip}:8443/mcp"
        ))?;
        ensure!(out.contains("mcp-servers/everything"), "pod {name} ({ip}): {out}");
    }
    Ok(())
}

/// Pods that cannot start on a real kubelet: the server's status names the kubelet's reason, the
/// container and its message (an image name the kubelet cannot parse, an image no registry here
/// serves, a Secret that does not exist), phase Failed, a Warning Event; fixed, the server runs.
/// A plugin workload that cannot start degrades its server the same way, naming the plugin.
#[tokio::test(flavor = "multi_thread")]
async fn real_pods_that_cannot_start_say_why_in_the_status() -> Result<()> {
    let env = env();
    let _g = env.shared().await;
    let Some(ns) = env.real_namespace("dp-stuck").await? else { return Ok(()) };
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: badname}
spec: {image: ghcr.io/MyOrg/server:1, port: 3000}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: nopull}
spec: {image: registry.invalid/none/server:1, port: 3000}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: nosecret}
spec:
  image: mcp-rs:latest
  port: 3000
  env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: absent, key: token}}}]
EOF",
    )?;
    for (name, reasons, detail) in [
        ("badname", &["InvalidImageName"][..], "MyOrg"),
        ("nopull", &["ErrImagePull", "ImagePullBackOff"][..], "registry.invalid/none/server:1"),
        ("nosecret", &["CreateContainerConfigError"][..], "absent"),
    ] {
        let s = wait_for(&ns.api::<McpServer>(), name, &format!("Ready False {reasons:?}"), |s: Option<&McpServer>| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.conditions.iter().any(|c| c.type_ == "Ready" && reasons.contains(&c.reason.as_str()))
            })
        })
        .await?;
        let st = s.status.as_ref().context("status")?;
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").context("Ready")?;
        ensure!(
            ready.message.starts_with("1 pod(s) cannot start: container \"server\" is waiting in ")
                && ready.message.contains(detail),
            "{name}: {}",
            ready.message
        );
        ensure!(st.phase == McpServerPhase::Failed, "{name}: no pod serves: {:?}", st.phase);
        let query = format!("kubectl get events --field-selector involvedObject.name={name},type=Warning");
        eventually(&format!("a RolloutFailed Warning Event on {name}"), || {
            let (ns, query) = (&ns, &query);
            async move { Ok(ns.sh_ok(query)?.contains("RolloutFailed").then_some(())) }
        })
        .await?;
    }
    // A plugin workload that cannot start: the server itself serves (Running, Ready), Degraded
    // names the plugin, its Deployment and the kubelet's reason, with a Warning Event.
    ns.sh_ok(
        "kubectl apply -f - <<EOF
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: Plugin
metadata: {name: nopull-plugin}
spec: {name: nopull, image: registry.invalid/none/plugin:1, port: 8080, isolation: {level: Container}}
---
apiVersion: mcp.n-takatsu.dev/v1alpha1
kind: MCPServer
metadata: {name: plugged}
spec: {image: mcp-rs:latest, port: 3000, plugins: [nopull-plugin]}
EOF",
    )?;
    let s = wait_for(&ns.api::<McpServer>(), "plugged", "Degraded by its plugin", |s: Option<&McpServer>| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
            st.conditions.iter().any(|c| {
                c.type_ == "Degraded"
                    && c.status == "True"
                    && ["ErrImagePull", "ImagePullBackOff"].contains(&c.reason.as_str())
            })
        })
    })
    .await?;
    let st = s.status.as_ref().context("status")?;
    let degraded = st.conditions.iter().find(|c| c.type_ == "Degraded").context("Degraded")?;
    ensure!(
        degraded.message.starts_with("plugin \"nopull-plugin\" (Deployment plugged-nopull-plugin): ")
            && degraded.message.contains(" pod(s) cannot start: container ")
            && degraded.message.contains("registry.invalid/none/plugin:1"),
        "{}",
        degraded.message
    );
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").context("Ready")?;
    ensure!(st.phase == McpServerPhase::Running && ready.status == "True", "the server serves: {st:?}");
    eventually("a RolloutFailed Warning Event on plugged", || {
        let ns = &ns;
        async move {
            let events = ns.sh_ok("kubectl get events --field-selector involvedObject.name=plugged,type=Warning")?;
            Ok((events.contains("RolloutFailed") && events.contains("nopull-plugin")).then_some(()))
        }
    })
    .await?;
    // Fixed: it runs and serves.
    ns.sh_ok("kubectl patch mcpserver badname --type merge -p '{\"spec\":{\"image\":\"mcp-rs:latest\"}}'")?;
    serving(&ns, "badname", 1).await?;
    Ok(())
}

/// The guide's order on a fresh namespace with real pods: deploy, apply examples.yaml, name
/// default-policy. Nothing is created by hand: the operator issues the certificate and the JWT
/// key the example asks for, the server runs, and a client that verifies the certificate against
/// the issued one and signs a token with the issued key gets through; without a token or with a
/// role the policy does not allow, it does not.
#[tokio::test(flavor = "multi_thread")]
async fn real_pods_the_guides_examples_work_as_shipped() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    use mcp_operator_e2e::guide;
    let env = env();
    let _g = env.shared().await;
    let Some(ns) = env.real_namespace("dp-examples").await? else { return Ok(()) };
    ns.sh_ok(guide::DEPLOY)?;
    ns.sh_ok(guide::APPLY_EXAMPLES)?;
    ns.sh_ok(guide::PATCH_POLICY)?;
    let s = serving(&ns, "my-mcp-server", 2).await?;
    let url = s.status.and_then(|st| st.url).context("url")?;
    ensure!(url.starts_with("https://"), "{url}");
    let secrets = ns.api::<Secret>();
    let data =
        |s: Secret, key: &str| -> Result<Vec<u8>> { Ok(s.data.context("data")?.get(key).context("key")?.0.clone()) };
    let key = String::from_utf8(data(secrets.get("mcp-example-jwt").await?, "hs256")?)?;
    let dir = env.work.join(format!("examples-{}", ns.name));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.crt"), data(secrets.get("mcp-example-tls").await?, "tls.crt")?)?;
    let mint = |roles: &[&str]| mcp_operator_e2e::hs256_token(&key, "mcp-operator-example", "mcp", roles);
    let ip = cluster_ip(&ns, "my-mcp-server").await?;
    let host = format!("my-mcp-server.{}.svc", ns.name);
    let call = |auth: String| {
        format!(
            "curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 --tlsv1.3 --cacert {}/ca.crt --resolve {host}:3000:{ip} \
             {auth} -X POST -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
             --data '{INITIALIZE}' https://{host}:3000/mcp",
            dir.display()
        )
    };
    let developer = call(format!("-H 'Authorization: Bearer {}'", mint(&["developer"])?));
    eventually("a verified TLS call with a token signed by the issued key to answer 200", || {
        let out = ns.sh(&developer);
        async move { Ok(out.ok().filter(|o| String::from_utf8_lossy(&o.stdout).trim() == "200").map(|_| ())) }
    })
    .await?;
    let code = |script: String| -> Result<String> { Ok(ns.sh_ok(&script)?.trim().to_string()) };
    ensure!(code(call(String::new()))? == "401", "no token");
    ensure!(code(call(format!("-H 'Authorization: Bearer {}'", mint(&["guest"])?)))? == "403", "a role not allowed");
    Ok(())
}
