//! Cluster providers: k3s in a container (testcontainers), the local kwok control plane built by
//! hack/ (simulated nodes only, or with a real node), or an existing cluster from a kubeconfig.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use testcontainers::core::Mount;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::k3s::{K3s, KUBE_SECURE_PORT};

/// Where the cluster comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// k3s in a Docker container; the operator runs in-cluster from the chart.
    K3s,
    /// The local kwok cluster (hack/cluster-up.sh); the operator runs as a local process that
    /// impersonates the chart's ServiceAccount.
    Local,
    /// The local cluster with a real node (MCP_CLUSTER_MODE=both: containerd, kubelet, CNI,
    /// kube-proxy, DNS, NetworkPolicy) and simulated ones; images from hack/images.sh; the
    /// operator runs in-cluster from the chart, on the real node, as do the data-plane tests'
    /// servers; the other tests' namespaces go to the simulated nodes.
    Node,
    /// The cluster of $KUBECONFIG; the operator runs in-cluster (E2E_OPERATOR=local: as for local).
    Existing,
}

impl Provider {
    /// From `E2E_CLUSTER` (hack/e2e.sh chooses it), else k3s where a Docker engine answers, else
    /// local.
    pub fn choose() -> Result<Self> {
        match std::env::var("E2E_CLUSTER").as_deref() {
            Ok("k3s") => Ok(Self::K3s),
            Ok("local") => Ok(Self::Local),
            Ok("node") => Ok(Self::Node),
            Ok("existing") => Ok(Self::Existing),
            Ok(other) if !other.is_empty() => bail!("E2E_CLUSTER={other:?}: use k3s, node, local or existing"),
            _ => Ok(if docker_answers() { Self::K3s } else { Self::Local }),
        }
    }

    /// Whether the operator runs inside the cluster (from the chart's image): on k3s, and on an
    /// existing cluster (e.g. Tilt's) unless `E2E_OPERATOR=local`.
    pub fn operator_in_cluster(self) -> bool {
        match self {
            Self::K3s | Self::Node => true,
            Self::Local => false,
            Self::Existing => std::env::var("E2E_OPERATOR").as_deref() != Ok("local"),
        }
    }

    /// Whether pods run for real (containers, network, DNS): not on the simulated nodes alone.
    pub fn real_pods(self) -> bool {
        !matches!(self, Self::Local)
    }

    /// Whether test namespaces must be marked for the simulated nodes (mode both).
    pub fn has_simulated_nodes(self) -> bool {
        matches!(self, Self::Node)
    }
}

fn docker_answers() -> bool {
    Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output().is_ok_and(|o| o.status.success())
}

/// MCP server images the guide's examples name, served on k3s by the reference MCP server
/// (e2e/images/mcp-server).
pub const STAND_IN_SERVER_IMAGES: &[&str] = &["mcp-rs:latest", "mcp-rs:v0.1.0", "mcp-rs:v0.2.0-beta"];
/// Plugin images the e2e suite names, served on k3s by a small HTTP stand-in (e2e/images/stand-in).
pub const STAND_IN_PLUGIN_IMAGES: &[&str] = &["mcp-rs-wordpress-plugin:latest", "mcp-plugin:e2e"];

/// A running cluster; keeps the k3s container alive as long as it lives.
pub struct Cluster {
    /// The provider.
    pub provider: Provider,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    _k3s: Option<ContainerAsync<K3s>>,
}

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    /// Starts (or finds) the cluster of `provider`.
    pub async fn start(provider: Provider, repo: &Path, work: &Path) -> Result<Self> {
        match provider {
            Provider::Local | Provider::Node => {
                let mode = if provider == Provider::Node { "both" } else { "simulated" };
                run(Command::new(repo.join("hack/cluster-up.sh")).env("MCP_CLUSTER_MODE", mode).current_dir(repo))
                    .with_context(|| format!("the local cluster (mode {mode}) did not start (hack/cluster-up.sh)"))?;
                let path = run(Command::new(repo.join("hack/kubeconfig.sh")).current_dir(repo))?;
                Ok(Self { provider, kubeconfig: PathBuf::from(path.trim()), _k3s: None })
            }
            Provider::Existing => {
                let path = std::env::var("KUBECONFIG")
                    .ok()
                    .and_then(|p| std::env::split_paths(&p).next())
                    .or_else(|| std::env::var("HOME").ok().map(|h| PathBuf::from(h).join(".kube/config")))
                    .context("E2E_CLUSTER=existing needs KUBECONFIG or ~/.kube/config")?;
                Ok(Self { provider, kubeconfig: path, _k3s: None })
            }
            Provider::K3s => Self::start_k3s(repo, work).await,
        }
    }

    async fn start_k3s(repo: &Path, work: &Path) -> Result<Self> {
        // The chart's default image name, so that the guide's `helm install` works verbatim; k3s
        // imports every tarball in its agent images directory at start.
        let image = crate::env::chart_image(repo)?;
        let images = work.join("k3s-images");
        std::fs::create_dir_all(&images)?;
        run(Command::new("docker").args(["build", "-t", &image, "."]).current_dir(repo))
            .context("building the operator image for k3s")?;
        run(Command::new("docker").args(["save", "-o"]).arg(images.join("mcp-operator.tar")).arg(&image))?;
        // The gateway image the chart's operator puts into every server pod.
        let gateway = crate::env::chart_gateway_image(repo)?;
        run(Command::new("docker").args(["build", "--target", "gateway", "-t", &gateway, "."]).current_dir(repo))
            .context("building the gateway image for k3s")?;
        run(Command::new("docker").args(["save", "-o"]).arg(images.join("mcp-gateway.tar")).arg(&gateway))?;
        // Stand-ins for the server and plugin images the guide names.
        for (dir, tags, tar) in [
            ("e2e/images/mcp-server", STAND_IN_SERVER_IMAGES, "stand-in-servers.tar"),
            ("e2e/images/stand-in", STAND_IN_PLUGIN_IMAGES, "stand-in-plugins.tar"),
        ] {
            let mut build = Command::new("docker");
            build.arg("build");
            for tag in tags {
                build.args(["-t", tag]);
            }
            run(build.arg(dir).current_dir(repo)).with_context(|| format!("building {dir}"))?;
            run(Command::new("docker").args(["save", "-o"]).arg(images.join(tar)).args(tags))?;
        }
        let conf = work.join("k3s-conf");
        std::fs::create_dir_all(&conf)?;
        let tag = std::env::var("E2E_K3S_TAG").unwrap_or_else(|_| "v1.33.5-k3s1".to_string());
        // E2E_K3S_IMAGE=NAME[:TAG]: a k3s image loaded locally (no registry needed), e.g. on a
        // machine that reaches none; default rancher/k3s:E2E_K3S_TAG.
        let (name, tag) = match std::env::var("E2E_K3S_IMAGE") {
            Ok(image) => match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                Some((n, t)) => (Some(n.to_string()), t.to_string()),
                None => (Some(image), tag),
            },
            Err(_) => (None, tag),
        };
        let k3s = K3s::default().with_conf_mount(&conf);
        let request: testcontainers::ContainerRequest<K3s> = match name {
            Some(n) => k3s.with_name(n),
            None => k3s.into(),
        };
        let container = request
            .with_tag(tag)
            .with_privileged(true)
            .with_userns_mode("host")
            .with_mount(Mount::bind_mount(images.to_string_lossy(), "/var/lib/rancher/k3s/agent/images"))
            .start()
            .await
            .context("k3s did not start (is the Docker engine running?)")?;
        let port = container.get_host_port_ipv4(KUBE_SECURE_PORT).await?;
        let raw = container.image().read_kube_config()?;
        let kubeconfig = work.join("k3s.kubeconfig");
        std::fs::write(&kubeconfig, raw.replace(":6443", &format!(":{port}")))?;
        Ok(Self { provider: Provider::K3s, kubeconfig, _k3s: Some(container) })
    }
}
