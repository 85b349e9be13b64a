//! The shared test environment: cluster, CRDs, chart and operator, set up once per run.

use crate::cluster::{run, Cluster, Provider};
use crate::{OPERATOR_NAMESPACE, OPERATOR_SA};
use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The shared environment.
pub struct Env {
    /// The cluster.
    pub cluster: Cluster,
    /// The repository root (the guide's relative paths start here).
    pub repo: PathBuf,
    /// Scratch space of this run.
    pub work: PathBuf,
    /// Where kubectl and helm come from (the tools cache for local, else $PATH).
    pub tools_bin: Option<PathBuf>,
    /// Address of the operator's admin server when it runs as a local process.
    pub metrics_addr: String,
    operator: Mutex<Option<Child>>,
    install_lock: RwLock<()>,
}

static ENV: OnceLock<Env> = OnceLock::new();

/// Upper bound of any one shell command of a test (seconds, for `timeout`).
const COMMAND_TIMEOUT: &str = "300";

/// The environment, set up on first use (in a thread and runtime of its own that live as long as
/// the process, because the k3s container handle belongs to that runtime).
pub fn env() -> &'static Env {
    ENV.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let env = rt.block_on(Env::setup()).unwrap_or_else(|e| panic!("e2e environment failed to start: {e:#}"));
            // Keep the runtime (and the k3s container it owns) for the life of the process.
            std::mem::forget(rt);
            env
        })
        .join()
        .expect("setup thread")
    })
}

/// The image the chart deploys by default (`image.repository:appVersion`).
pub fn chart_image(repo: &Path) -> Result<String> {
    let chart = std::fs::read_to_string(repo.join("charts/mcp-operator/Chart.yaml"))?;
    let values = std::fs::read_to_string(repo.join("charts/mcp-operator/values.yaml"))?;
    let chart: serde_norway::Value = serde_norway::from_str(&chart)?;
    let values: serde_norway::Value = serde_norway::from_str(&values)?;
    let repo_name = values["image"]["repository"].as_str().context("values.image.repository")?;
    let tag = chart["appVersion"].as_str().context("Chart appVersion")?;
    Ok(format!("{repo_name}:{tag}"))
}

/// The gateway image the chart's operator uses by default (`gateway.image.repository:appVersion`).
pub fn chart_gateway_image(repo: &Path) -> Result<String> {
    let chart: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo.join("charts/mcp-operator/Chart.yaml"))?)?;
    let values: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo.join("charts/mcp-operator/values.yaml"))?)?;
    let repo_name = values["gateway"]["image"]["repository"].as_str().context("values.gateway.image.repository")?;
    let tag = chart["appVersion"].as_str().context("Chart appVersion")?;
    Ok(format!("{repo_name}:{tag}"))
}

fn tools_cache_bin() -> Option<PathBuf> {
    let base = std::env::var_os("MCP_TOOLS_DIR").map(PathBuf::from).or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("mcp-operator/tools"))
    })?;
    Some(base.join("bin")).filter(|b| b.join("kubectl").exists())
}

impl Env {
    async fn setup() -> Result<Self> {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().context("repo root")?.to_path_buf();
        let provider = Provider::choose()?;
        eprintln!("[e2e] provider: {provider:?}");
        let work = std::env::temp_dir().join(format!("mcp-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&work)?;
        let cluster = Cluster::start(provider, &repo, &work).await?;
        let port = free_port()?;
        let env = Env {
            cluster,
            repo,
            work,
            tools_bin: tools_cache_bin(),
            metrics_addr: format!("127.0.0.1:{port}"),
            operator: Mutex::new(None),
            install_lock: RwLock::new(()),
        };
        env.reset_install().await?;
        Ok(env)
    }

    /// Brings the install to the state every scenario starts from: CRDs applied, the chart
    /// installed with the guide's command, no plain-manifest install, the operator running.
    pub async fn reset_install(&self) -> Result<()> {
        self.stop_operator()?;
        self.admin_sh(
            "kubectl apply -f k8s/crds/ && kubectl wait --for=condition=Established crd --all --timeout=60s",
        )?;
        let helm = self.admin_sh(&format!(
            "helm status mcp-operator -n {OPERATOR_NAMESPACE} >/dev/null 2>&1 && echo yes || echo no"
        ))?;
        if String::from_utf8_lossy(&helm.stdout).trim() != "yes" {
            // A plain-manifest install owns the same names; remove it first.
            self.admin_sh("kubectl delete -f k8s/manifests/00-namespace.yaml -f k8s/manifests/01-rbac.yaml -f k8s/manifests/02-deployment.yaml --ignore-not-found --wait=true")?;
            self.admin_sh(
                "helm install mcp-operator charts/mcp-operator \\\n  --namespace mcp-system \\\n  --create-namespace",
            )?;
        }
        self.start_operator().await
    }

    /// Waits until the MCPServer CRD is a minute old. Kubernetes' garbage collector picks up a new
    /// CRD on its discovery resync (every 30 s); when the CRD is deleted before that, the collector
    /// can never map the owners of its objects' dependents and leaves them (it retries the unknown
    /// kind forever). A user's CRDs have been there a while; the uninstall scenarios run on CRDs
    /// that an earlier scenario may have just re-created.
    pub async fn wait_for_settled_crds(&self) -> Result<()> {
        let out =
            self.admin_sh("kubectl get crd mcpservers.mcp.n-takatsu.dev -o jsonpath='{.metadata.creationTimestamp}'")?;
        let created = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let created: k8s_openapi::jiff::Timestamp = created.parse().context("CRD creationTimestamp")?;
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(created);
        let settle = std::time::Duration::from_secs(60);
        if let Some(left) = settle.checked_sub(age.unsigned_abs()) {
            eprintln!(
                "[e2e] the MCPServer CRD is {}s old: waiting {}s for the garbage collector",
                age.as_secs(),
                left.as_secs()
            );
            tokio::time::sleep(left).await;
        }
        Ok(())
    }

    /// Takes the install for a scenario that only touches its own namespace (many at once).
    pub async fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.install_lock.read().await
    }

    /// Takes the install for a scenario that changes it (install, upgrade, uninstall, operator
    /// down): nothing else runs meanwhile.
    pub async fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.install_lock.write().await
    }

    /// An admin client.
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.cluster.kubeconfig).await
    }

    /// Runs a shell script (a guide command) as cluster admin, from the repository root.
    pub fn admin_sh(&self, script: &str) -> Result<Output> {
        succeeded(script, self.sh_with(&self.cluster.kubeconfig, script)?)
    }

    /// Runs a shell script with `kubeconfig`; returns its output whatever the exit status.
    pub fn sh_with(&self, kubeconfig: &Path, script: &str) -> Result<Output> {
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(bin) = &self.tools_bin {
            let mut p = std::ffi::OsString::from(bin);
            p.push(":");
            p.push(&path);
            path = p;
        }
        // Every command is bounded: a hung command fails its test instead of the whole run.
        Command::new("timeout")
            .args(["--kill-after=10", COMMAND_TIMEOUT, "bash", "-o", "pipefail", "-c", script])
            .current_dir(&self.repo)
            .env("KUBECONFIG", kubeconfig)
            .env("PATH", path)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running bash -c {script:?}"))
    }

    /// Whether the operator runs as a local process (local and existing providers).
    pub fn operator_is_local(&self) -> bool {
        !self.cluster.provider.operator_in_cluster()
    }

    /// Starts the operator and waits until it is ready and leading.
    pub async fn start_operator(&self) -> Result<()> {
        if self.operator_is_local() {
            self.stop_operator()?;
            let bin = operator_binary(&self.repo)?;
            let kubeconfig = self.impersonating_kubeconfig()?;
            // The log of the run before (a restart, a kill -9) is kept next to it.
            let _ = std::fs::rename(self.operator_log(), self.work.join("operator.previous.log"));
            let log = std::fs::File::create(self.operator_log())?;
            // A watchdog shell ends the operator when this test process ends, however it ends.
            let script = format!(
                "\"$0\" \"$@\" & op=$!; trap 'kill $op 2>/dev/null; wait $op' EXIT TERM INT; \
                 while kill -0 {} 2>/dev/null && kill -0 $op 2>/dev/null; do sleep 1; done",
                std::process::id()
            );
            let child = Command::new("bash")
                .arg("-c")
                .arg(script)
                .arg(&bin)
                .args(["--leader-election=true", "--leader-election-namespace", OPERATOR_NAMESPACE])
                .args(["--leader-election-owner", "mcp-operator"])
                .args(["--metrics-addr", &self.metrics_addr, "--identity", "e2e-local"])
                // Service-proxy reads would dial simulated pod addresses on the local cluster.
                .args(["--gateway-status", if self.cluster.provider == Provider::Local { "false" } else { "true" }])
                .env("KUBECONFIG", kubeconfig)
                .env(
                    "RUST_LOG",
                    std::env::var("E2E_OPERATOR_RUST_LOG").unwrap_or("info,mcp_operator=debug,kube=warn".into()),
                )
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting the operator")?;
            let pid = child.id();
            *self.operator.lock().expect("operator lock") = Some(child);
            let url = format!("http://{}/metrics", self.metrics_addr);
            crate::wait::eventually("the operator to lead (mcp_operator_leader 1)", || {
                let url = url.clone();
                async move {
                    let body = http_get(&url).await.ok();
                    Ok(body.filter(|b| leads(b)).map(|_| ()))
                }
            })
            .await
            .with_context(|| format!("operator log:\n{}", self.operator_log_text()))?;
            if self.cluster.provider == Provider::Local {
                // The chart's operator pod is a kwok stand-in there: make `kubectl logs` and
                // `kubectl port-forward` on it reach this process, so the guide's commands work.
                self.admin_sh(&format!(
                    "hack/attach-operator.sh --log '{}' --metrics {} --pid {pid}",
                    self.operator_log().display(),
                    self.metrics_addr
                ))?;
            }
            Ok(())
        } else {
            self.admin_sh("kubectl scale deployment mcp-operator -n mcp-system --replicas=1 && kubectl rollout status deployment mcp-operator -n mcp-system --timeout=120s")?;
            Ok(())
        }
    }

    /// Starts a second local operator replica (a standby: it waits for the leader Lease) with
    /// `identity`, serving its metrics on `metrics_addr`. The caller stops it.
    pub fn spawn_standby(&self, identity: &str, metrics_addr: &str) -> Result<std::process::Child> {
        let bin = operator_binary(&self.repo)?;
        let log = std::fs::File::create(self.work.join(format!("operator-{identity}.log")))?;
        Command::new(&bin)
            .args(["--leader-election=true", "--leader-election-namespace", OPERATOR_NAMESPACE])
            .args(["--leader-election-owner", "mcp-operator"])
            .args(["--metrics-addr", metrics_addr, "--identity", identity])
            .args(["--gateway-status", if self.cluster.provider == Provider::Local { "false" } else { "true" }])
            .env("KUBECONFIG", self.impersonating_kubeconfig()?)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a standby operator")
    }

    /// Stops the local operator process (local and existing providers), which stands for the
    /// chart's pod that an uninstall removes; an in-cluster operator is left to the uninstall.
    pub fn stop_operator_process(&self) {
        if self.operator_is_local() {
            let _ = self.stop_operator();
        }
    }

    /// Stops the operator (the "operator gone" situations of the guide).
    pub fn stop_operator(&self) -> Result<()> {
        if self.operator_is_local() {
            if let Some(mut child) = self.operator.lock().expect("operator lock").take() {
                // SIGTERM through the watchdog, which waits for the operator to exit.
                let _ = Command::new("kill").arg(child.id().to_string()).status();
                let _ = child.wait();
            }
            Ok(())
        } else {
            // Nothing to stop before the first install (or after an uninstall).
            self.admin_sh("kubectl get deployment mcp-operator -n mcp-system >/dev/null 2>&1 || exit 0; kubectl scale deployment mcp-operator -n mcp-system --replicas=0 && kubectl wait --for=delete pod -n mcp-system -l app.kubernetes.io/name=mcp-operator --timeout=120s")?;
            Ok(())
        }
    }

    /// The process id of the operator when it runs as a local process (Linux: the child of its
    /// watchdog shell).
    pub fn operator_pid(&self) -> Option<u32> {
        let watchdog = self.operator.lock().expect("operator lock").as_ref()?.id();
        let children = std::fs::read_to_string(format!("/proc/{watchdog}/task/{watchdog}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Path of the local operator's log file.
    pub fn operator_log(&self) -> PathBuf {
        self.work.join("operator.log")
    }

    /// The local operator's log so far.
    pub fn operator_log_text(&self) -> String {
        std::fs::read_to_string(self.operator_log()).unwrap_or_default()
    }

    /// A kubeconfig whose user impersonates the chart's ServiceAccount, so that the local
    /// operator is held to the chart's RBAC.
    pub fn impersonating_kubeconfig(&self) -> Result<PathBuf> {
        let mut cfg: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(&self.cluster.kubeconfig)?)?;
        for user in cfg["users"].as_sequence_mut().context("kubeconfig users")? {
            user["user"]["as"] = OPERATOR_SA.into();
            user["user"]["as-groups"] = serde_norway::to_value([
                "system:serviceaccounts",
                "system:serviceaccounts:mcp-system",
                "system:authenticated",
            ])?;
        }
        let path = self.work.join("operator.kubeconfig");
        std::fs::write(&path, serde_norway::to_string(&cfg)?)?;
        Ok(path)
    }

    /// A fresh namespace for one test, deleted when the returned value drops. With a real node
    /// and simulated ones (provider node), its pods go to the simulated nodes: most scenarios
    /// check the operator, not the containers, and images the guide names exist nowhere.
    pub async fn namespace(&'static self, prefix: &str) -> Result<TestNamespace> {
        self.new_namespace(prefix, self.cluster.provider.has_simulated_nodes()).await
    }

    /// A fresh namespace whose pods run for real (providers node, k3s, existing): the data-plane
    /// scenarios. None on the local provider, whose pods are all simulated.
    pub async fn real_namespace(&'static self, prefix: &str) -> Result<Option<TestNamespace>> {
        if !self.cluster.provider.real_pods() {
            eprintln!(
                "[e2e] SKIPPED {prefix}: needs real pods; run with E2E_CLUSTER=node (root, Linux) or k3s (Docker)"
            );
            return Ok(None);
        }
        Ok(Some(self.new_namespace(prefix, false).await?))
    }

    /// A namespace whose pods are real where the provider has real pods (for guide commands that
    /// read what containers do: logs, port-forward), else a simulated one.
    pub async fn pods_namespace(&'static self, prefix: &str) -> Result<TestNamespace> {
        self.new_namespace(prefix, !self.cluster.provider.real_pods()).await
    }

    async fn new_namespace(&'static self, prefix: &str, simulated: bool) -> Result<TestNamespace> {
        let name = format!("{prefix}-{}", unique_suffix());
        self.admin_sh(&format!("kubectl create namespace {name}"))?;
        if simulated && self.cluster.provider.has_simulated_nodes() {
            self.admin_sh(&format!("hack/simulated-namespace.sh {name}"))?;
        }
        let mut cfg: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(&self.cluster.kubeconfig)?)?;
        for ctx in cfg["contexts"].as_sequence_mut().context("kubeconfig contexts")? {
            ctx["context"]["namespace"] = name.clone().into();
        }
        let kubeconfig = self.work.join(format!("{name}.kubeconfig"));
        std::fs::write(&kubeconfig, serde_norway::to_string(&cfg)?)?;
        let client = client_for(&kubeconfig).await?;
        Ok(TestNamespace { name, kubeconfig, client, env: self })
    }
}

/// A throw-away namespace whose kubeconfig makes it the default, so that the guide's commands
/// (which name no namespace) run verbatim inside it.
pub struct TestNamespace {
    /// Namespace name.
    pub name: String,
    /// Kubeconfig whose current context defaults to this namespace.
    pub kubeconfig: PathBuf,
    /// A client defaulting to this namespace.
    pub client: Client,
    env: &'static Env,
}

impl TestNamespace {
    /// Runs a guide command in this namespace; returns its output whatever the exit status.
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.env.sh_with(&self.kubeconfig, script)
    }

    /// Runs a guide command in this namespace and fails unless it succeeds; returns stdout.
    pub fn sh_ok(&self, script: &str) -> Result<String> {
        let out = succeeded(script, self.sh(script)?)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn sh_err(&self, script: &str) -> Result<String> {
        let out = self.sh(script)?;
        if out.status.success() {
            bail!("command succeeded but should have failed:\n{script}\n{}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// A namespaced Api in this namespace.
    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("E2E_KEEP_NAMESPACES").is_none() {
            let _ = self.env.admin_sh(&format!("kubectl delete namespace {} --wait=false", self.name));
        }
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// The output of `script`, or an error showing both streams when it failed.
fn succeeded(script: &str, out: Output) -> Result<Output> {
    if !out.status.success() {
        bail!(
            "command failed ({}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// A client for a kubeconfig file.
pub async fn client_for(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The value of the metric `name` (without labels) in a Prometheus text exposition; `# HELP`
/// and `# TYPE` lines do not count (the leader gauge's help text starts with "1 while").
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Whether the operator whose metrics are `body` leads (`mcp_operator_leader 1`).
pub fn leads(body: &str) -> bool {
    metric_value(body, "mcp_operator_leader") == Some(1.0)
}

/// GET over plain HTTP (the operator's admin port), body as text.
pub async fn http_get(url: &str) -> Result<String> {
    let out = tokio::process::Command::new("curl").args(["-fsS", "--max-time", "5", url]).output().await?;
    if !out.status.success() {
        bail!("GET {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn operator_binary(repo: &Path) -> Result<PathBuf> {
    // Build it here so that a run always exercises the current code (a no-op when up to date).
    // E2E_OPERATOR_PROFILE=release (benchmarks) runs an optimized build.
    let release = std::env::var("E2E_OPERATOR_PROFILE").is_ok_and(|p| p == "release");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args(["build", "--quiet", "--bin", "mcp-operator"]).current_dir(repo);
    if release {
        cargo.arg("--release");
    }
    run(&mut cargo)?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"));
    let bin = target.join(if release { "release/mcp-operator" } else { "debug/mcp-operator" });
    if !bin.exists() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id() % 100000, N.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_metric_is_read_from_its_sample_line_not_its_help() {
        let body = "# HELP mcp_operator_leader 1 while this replica is the leader\n# TYPE mcp_operator_leader gauge\nmcp_operator_leader 0\n";
        assert_eq!(super::metric_value(body, "mcp_operator_leader"), Some(0.0));
        assert!(!super::leads(body));
        assert!(super::leads("mcp_operator_leader_x 0\nmcp_operator_leader 1\n"));
        assert_eq!(super::metric_value("", "mcp_operator_leader"), None);
    }
}
