#!/usr/bin/env bash
# Runs the e2e suite (e2e/) against E2E_CLUSTER: k3s (testcontainers), node (the local cluster with
# a real node and simulated ones, MCP_CLUSTER_MODE=both; images from hack/images.sh; the operator
# in-cluster), local (the local cluster, simulated nodes only; the operator a local process) or
# existing ($KUBECONFIG). Default: k3s where a Docker engine answers, else node as root on Linux,
# else local. Extra arguments go to the test binary (e.g. a test-name filter).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

provider="${E2E_CLUSTER:-}"
if [[ -z "$provider" ]]; then
  if docker info >/dev/null 2>&1; then
    provider=k3s
  elif [[ "$(id -u)" == 0 && "$(uname -s)" == Linux ]]; then
    provider=node
  else
    provider=local
  fi
fi
export E2E_CLUSTER="$provider"
# A cluster of its own, so that a `just up` cluster and its operator are left alone.
export MCP_CLUSTER_NAME="${MCP_CLUSTER_NAME:-mcp-e2e}"
log "e2e provider: $provider"
case "$provider" in
  local)
    "$HACK_DIR/tools.sh" kubernetes etcd kwok helm
    # A fresh cluster every run (seconds with kwok): no state left by an interrupted run.
    [[ "${E2E_REUSE_CLUSTER:-}" == 1 ]] || "$HACK_DIR/cluster-down.sh"
    "$HACK_DIR/cluster-up.sh"
    ;;
  node)
    "$HACK_DIR/node-packages.sh"
    "$HACK_DIR/tools.sh" kubernetes etcd kwok helm node
    [[ "${E2E_REUSE_CLUSTER:-}" == 1 ]] || "$HACK_DIR/cluster-down.sh"
    # The images the chart and the servers use, built from this tree (cached when unchanged);
    # the node imports them when it starts.
    "$HACK_DIR/images.sh"
    MCP_CLUSTER_MODE=both "$HACK_DIR/cluster-up.sh"
    ;;
  existing) command -v helm >/dev/null || "$HACK_DIR/tools.sh" helm ;;
  k3s) command -v kubectl >/dev/null && command -v helm >/dev/null || "$HACK_DIR/tools.sh" kubernetes helm ;;
  *) die "E2E_CLUSTER=$provider: use k3s, node, local or existing" ;;
esac
command -v curl >/dev/null || die "curl is required by the e2e suite"

cargo build --quiet --bin mcp-operator
cargo test --quiet -p mcp-operator-e2e --no-run
start=$(date +%s)
# Scenarios that change the install take an exclusive lock; the rest share the cluster.
cargo test -p mcp-operator-e2e -- --test-threads="${E2E_THREADS:-4}" "$@"
log "e2e wall time: $(($(date +%s) - start))s ($provider)"
