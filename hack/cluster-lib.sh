# Shared by hack/cluster-up.sh, hack/cluster-down.sh and hack/kubeconfig.sh: where the local
# kwokctl cluster (binary runtime, our own binaries from hack/tools.sh) keeps its state.
# shellcheck shell=bash
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER_NAME="${MCP_CLUSTER_NAME:-mcp-dev}"
[[ "$CLUSTER_NAME" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ ]] ||
  die "MCP_CLUSTER_NAME='$CLUSTER_NAME' is not a valid name (lowercase letters, digits and '-')"

# kwokctl keeps every cluster (config, pki, etcd data, pids, logs, binary symlinks) under
# $KWOK_WORKDIR/clusters/<name>; keep it in the tools cache, never in the checkout or ~/.kwok.
export KWOK_WORKDIR="$TOOLS_DIR/kwok"
CLUSTER_DIR="$KWOK_WORKDIR/clusters/$CLUSTER_NAME"
# A flattened admin (system:masters) kubeconfig at a path that does not change across re-creation.
CLUSTER_KUBECONFIG="$TOOLS_DIR/kubeconfig-$CLUSTER_NAME"

# Service addresses of every local cluster: a /16 (the API server's default /24 holds only ~250
# Services; scale runs need thousands), the `kubernetes` Service on its first address and cluster
# DNS (the real node's CoreDNS) on .10. Simulated pods get addresses of their node's podCIDR,
# 10.0.N.0/24 for kwokctl's node N (within KWOK_POD_CIDR up to 4096 nodes), and the real node's
# pods 10.244.0.0/24 of POD_CIDR: none of them overlap.
# shellcheck disable=SC2034 # used by the scripts that source this file
SERVICE_CIDR=10.96.0.0/16
# shellcheck disable=SC2034
API_SERVICE_IP=10.96.0.1
# shellcheck disable=SC2034
DNS_SERVICE_IP=10.96.0.10
# shellcheck disable=SC2034
POD_CIDR=10.244.0.0/16
# shellcheck disable=SC2034
KWOK_POD_CIDR=10.0.0.0/12
# The real node's pods, on its bridge; the bridge's address is the node's (InternalIP) and the
# API server's advertised one, so that nothing a pod reaches depends on the machine's own address.
# shellcheck disable=SC2034
NODE_POD_SUBNET=10.244.0.0/24
# shellcheck disable=SC2034
NODE_IP=10.244.0.1

# simulated: kwok's nodes only; real: one real node (kubelet + containerd, hack/node-up.sh) and
# no simulated ones; both: the real node for namespaces marked by hack/real-namespace.sh and
# simulated nodes for every other namespace.
CLUSTER_MODE="${MCP_CLUSTER_MODE:-simulated}"
case "$CLUSTER_MODE" in
  simulated | real | both) ;;
  *) die "MCP_CLUSTER_MODE='$CLUSTER_MODE': use simulated, real or both" ;;
esac

# The real node's state (hack/node-up.sh), and whether there is one to tear down (hack/node-down.sh
# keeps only its logs).
NODE_DIR="$TOOLS_DIR/node-$CLUSTER_NAME"
node_state_exists() { [[ -d "$NODE_DIR/pids" || -d "$NODE_DIR/host" ]]; }

# kwokctl logs JSON lines when not on a terminal: keep its chatter in a file, shown on failure.
KWOKCTL_LOG="$KWOK_WORKDIR/$CLUSTER_NAME.kwokctl.log"

# kwok's kubelet-like server (kwokControllerPort, the nodes' kubelet endpoint) answers
# `kubectl logs` and `kubectl port-forward` from these resources; as CRDs they can be created at
# runtime (hack/attach-operator.sh). Kinds of kwok.x-k8s.io/v1alpha1 (kwok v0.8.0 names).
# shellcheck disable=SC2034 # used by the scripts that source this file
KWOK_CRDS=(Logs ClusterLogs PortForward ClusterPortForward)
# shellcheck disable=SC2034
KWOK_CRD_NAMES=(logs.kwok.x-k8s.io clusterlogs.kwok.x-k8s.io portforwards.kwok.x-k8s.io clusterportforwards.kwok.x-k8s.io)
# hack/attach-operator.sh's state: the CRI-format copy of the operator log that kwok serves, the
# pid of the process that keeps it up to date, and the static log of every other pod.
ATTACH_DIR="$KWOK_WORKDIR/attach-$CLUSTER_NAME"

# Stops the process that copies the operator log for kwok (hack/attach-operator.sh), if any.
# It runs in a session of its own whose leader's command line names its state directory.
stop_log_pump() {
  local pid
  [[ -f "$ATTACH_DIR/pump.pid" ]] || return 0
  pid=$(<"$ATTACH_DIR/pump.pid")
  if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" == *"mcp-log-pump $ATTACH_DIR "* ]]; then
    kill -- "-$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      running "$pid" || break
      sleep 0.1
    done
  fi
  rm -f "$ATTACH_DIR/pump.pid"
}

CLUSTER_LOCK_FD=
kwokctl_() {
  if [[ -n "$CLUSTER_LOCK_FD" ]]; then
    # Not into the components kwokctl forks: they would hold the lock for as long as they run.
    "$TOOLS_BIN/kwokctl" --name "$CLUSTER_NAME" "$@" {CLUSTER_LOCK_FD}>&-
  else
    "$TOOLS_BIN/kwokctl" --name "$CLUSTER_NAME" "$@"
  fi
}
kwokctl_logged() {
  mkdir -p "$KWOK_WORKDIR"
  { printf '$ kwokctl --name %s' "$CLUSTER_NAME"; printf ' %q' "$@"; echo; } >>"$KWOKCTL_LOG"
  kwokctl_ "$@" >>"$KWOKCTL_LOG" 2>&1
}

require_binaries() {
  local b missing=()
  for b in kwokctl kwok etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$TOOLS_BIN/$b" ]] || missing+=("$b")
  done
  [[ ${#missing[@]} -eq 0 ]] ||
    die "missing in $TOOLS_BIN: ${missing[*]}; run hack/tools.sh first"
}

# kwokctl's binary runtime decides "running" from pids/<component>.pid alone. After a reboot a
# recorded pid may belong to an unrelated process, which kwokctl would then neither start again
# nor spare on stop; drop every pid file whose process is not that component's binary.
sanitize_pids() {
  local f pid exe want
  for f in "$CLUSTER_DIR"/pids/*.pid; do
    [[ -e "$f" ]] || continue
    pid=$(<"$f")
    want=$(readlink -f "$CLUSTER_DIR/bin/$(basename "$f" .pid)" 2>/dev/null) || want=
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || exe=
    exe=${exe% (deleted)} # the binary was rebuilt underneath a running process
    if [[ -z "$exe" || -z "$want" || "$exe" != "$want" ]]; then rm -f "$f"; fi
  done
}

# One cluster-up/cluster-down at a time per cluster.
lock_cluster() {
  mkdir -p "$KWOK_WORKDIR"
  exec {CLUSTER_LOCK_FD}>"$KWOK_WORKDIR/.$CLUSTER_NAME.lock"
  if ! flock -n "$CLUSTER_LOCK_FD"; then
    log "cluster '$CLUSTER_NAME': waiting for another hack/cluster-*.sh to finish"
    flock -w 300 "$CLUSTER_LOCK_FD" || die "cluster '$CLUSTER_NAME' is still locked by another hack/cluster-*.sh"
  fi
}

delete_cluster() {
  # The real node first: its identities and its pods belong to this cluster.
  if node_state_exists; then "$HACK_DIR/node-down.sh"; fi
  sanitize_pids
  # --kubeconfig: kwokctl would otherwise edit ~/.kube/config (and it refuses an empty path here).
  if [[ -f "$CLUSTER_DIR/kwok.yaml" ]]; then
    [[ -x "$TOOLS_BIN/kwokctl" ]] || die "missing $TOOLS_BIN/kwokctl; run hack/tools.sh first"
    if ! kwokctl_logged delete cluster --kubeconfig "$CLUSTER_KUBECONFIG"; then
      tail -n 20 "$KWOKCTL_LOG" >&2
      die "kwokctl delete cluster failed (log: $KWOKCTL_LOG); stop the processes in $CLUSTER_DIR/pids and remove $CLUSTER_DIR"
    fi
  fi
  rm -rf "$CLUSTER_DIR" # a half-created cluster has no kwok.yaml, and kwokctl ignores it
  rm -f "$CLUSTER_KUBECONFIG"
  stop_log_pump
  rm -rf "$ATTACH_DIR"
}
