#!/usr/bin/env bash
# Starts a local Kubernetes cluster for development and the e2e tests: kwokctl's binary runtime
# running our own etcd, kube-apiserver (RBAC on), kube-controller-manager, kube-scheduler and
# kwok controller from hack/tools.sh (nothing is downloaded), plus simulated nodes on which
# kwok fakes pods as Running/Ready. kwok's Logs, ClusterLogs, PortForward and ClusterPortForward
# CRDs are enabled, so that `kubectl logs` and `kubectl port-forward` can be pointed at local
# files and ports at runtime (hack/attach-operator.sh). Idempotent: a healthy cluster is left as
# it is, a stopped one (e.g. after a reboot) is started again, or re-created if it cannot be (or
# if it was created without those CRDs).
#
#   hack/cluster-up.sh && export KUBECONFIG=$(hack/kubeconfig.sh)
#   MCP_CLUSTER_MODE=real hack/cluster-up.sh      # pods run for real (as root)
#
# Modes (MCP_CLUSTER_MODE):
#   simulated  kwok's nodes only; pods become Running without containers (default)
#   real       no simulated node; one real node, real-0 (hack/node-up.sh: containerd, kubelet,
#              kube-proxy, kube-router's firewall, CoreDNS), on which every pod runs
#   both       the real node for every pod, and simulated nodes, labelled and tainted
#              mcp.n-takatsu.dev/node=simulated:NoSchedule, for the pods of namespaces marked by
#              hack/simulated-namespace.sh (their pods get that node selector and toleration from
#              the PodNodeSelector and PodTolerationRestriction admission plugins): the guide's
#              own namespaces (mcp-system, tenant-a) run for real, a test that needs many servers
#              uses a simulated namespace
# real and both need root, hack/tools.sh node, hack/node-packages.sh, and images from
# hack/images.sh (the node's own are built when missing); one real node per machine. Services
# get 10.96.0.0/16 in every mode. A cluster made in another mode or configuration is re-created.
#
# Environment:
#   MCP_CLUSTER_NAME          cluster name (default mcp-dev)
#   MCP_CLUSTER_MODE          simulated, real or both (default simulated)
#   MCP_CLUSTER_NODES         simulated nodes (default 3; 0 and only 0 in mode real)
#   MCP_CLUSTER_TIMEOUT       seconds to wait for the cluster to be ready (default 120)
#   MCP_CLUSTER_API_PORT      kube-apiserver port on 127.0.0.1 (default 0: kwokctl picks a free
#                             one when the cluster is created; it is kept across restarts)
#   MCP_CLUSTER_BIND_ADDRESS  address the components listen on (default 127.0.0.1)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

TIMEOUT="${MCP_CLUSTER_TIMEOUT:-120}"
API_PORT="${MCP_CLUSTER_API_PORT:-0}"
BIND_ADDRESS="${MCP_CLUSTER_BIND_ADDRESS:-127.0.0.1}"
if [[ "$CLUSTER_MODE" == real ]]; then
  NODES="${MCP_CLUSTER_NODES:-0}"
  [[ "$NODES" == 0 ]] || die "MCP_CLUSTER_MODE=real has no simulated nodes (MCP_CLUSTER_NODES=$NODES): use MCP_CLUSTER_MODE=both"
else
  NODES="${MCP_CLUSTER_NODES:-3}"
  [[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "MCP_CLUSTER_NODES must be a positive integer"
fi
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "MCP_CLUSTER_TIMEOUT must be a positive number of seconds"
if ! [[ "$API_PORT" =~ ^[0-9]+$ ]] || ((API_PORT > 65535)); then
  die "MCP_CLUSTER_API_PORT must be a port number (0: any free port)"
fi

require_binaries
if [[ "$CLUSTER_MODE" != simulated ]]; then
  require_node_prerequisites
  require_node_free
fi

START=$(now_ms)
DEADLINE=$((START + TIMEOUT * 1000))
elapsed() { local ms=$(($(now_ms) - START)); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }

kubectl_() { "$TOOLS_BIN/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" --request-timeout=5s "$@"; }

# Every option, so that kwokctl neither guesses (docker/podman first) nor downloads anything.
# Only the five components below run: no metrics-server, prometheus, jaeger or dashboard.
kwokctl_config() {
  cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: '$KUBERNETES_VERSION'
  kwokVersion: '$KWOK_VERSION'
  etcdVersion: '${ETCD_VERSION#v}'
  components: [etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok-controller]
  securePort: true
  kubeAuthorization: true
  kubeAdmission: true
  bindAddress: '$BIND_ADDRESS'
  kubeApiserverPort: $API_PORT
  etcdBinary: '$TOOLS_BIN/etcd'
  kubeApiserverBinary: '$TOOLS_BIN/kube-apiserver'
  kubeControllerManagerBinary: '$TOOLS_BIN/kube-controller-manager'
  kubeSchedulerBinary: '$TOOLS_BIN/kube-scheduler'
  kwokControllerBinary: '$TOOLS_BIN/kwok'
  kubectlBinary: '$TOOLS_BIN/kubectl'
  enableCRDs: [$(IFS=,; echo "${KWOK_CRDS[*]}")]
EOF
  # The real node's pods reach the API server as $API_SERVICE_IP:443, which kube-proxy sends to
  # $NODE_IP (the node's bridge): it listens on all addresses (hack/node-up.sh's guard answers
  # only lo and the bridge) and its certificate names the Service address. It calls the kubelet
  # with its admin client certificate. kwok leaves the real node alone (it manages only the
  # nodes kwokctl makes, annotated kwok.x-k8s.io/node=fake).
  [[ "$CLUSTER_MODE" == simulated ]] || echo "  kubeApiserverCertSANs: ['$API_SERVICE_IP']"
  cat <<EOF
componentsPatches:
- name: kube-apiserver
  extraArgs:
  - {key: service-cluster-ip-range, value: '$SERVICE_CIDR'}
EOF
  if [[ "$CLUSTER_MODE" != simulated ]]; then
    cat <<EOF
  - {key: bind-address, value: 0.0.0.0, override: true}
  - {key: advertise-address, value: '$NODE_IP'}
  - {key: enable-admission-plugins, value: 'PodNodeSelector,PodTolerationRestriction'}
  - {key: kubelet-client-certificate, value: '$CLUSTER_DIR/pki/admin.crt'}
  - {key: kubelet-client-key, value: '$CLUSTER_DIR/pki/admin.key'}
- name: kwok-controller
  extraArgs:
  - {key: manage-all-nodes, value: 'false', override: true}
  - {key: manage-nodes-with-annotation-selector, value: 'kwok.x-k8s.io/node=fake'}
EOF
  fi
  # Benchmarks (MCP_CLUSTER_FAST=1): the controller manager and scheduler get client limits and
  # worker counts high enough that the figures measure the operator, not the simulator, and no
  # leader election: one that loses its Lease in the recovery benchmark's API server outage
  # exits, and nothing restarts it here.
  if [[ "${MCP_CLUSTER_FAST:-}" == 1 ]]; then
    cat <<EOF
- name: kube-controller-manager
  extraArgs:
  - {key: leader-elect, value: 'false'}
  - {key: kube-api-qps, value: '1000'}
  - {key: kube-api-burst, value: '2000'}
  - {key: concurrent-deployment-syncs, value: '50'}
  - {key: concurrent-replicaset-syncs, value: '50'}
  - {key: concurrent-service-endpoint-syncs, value: '50'}
  - {key: concurrent-gc-syncs, value: '50'}
- name: kube-scheduler
  extraArgs:
  - {key: leader-elect, value: 'false'}
  - {key: kube-api-qps, value: '1000'}
  - {key: kube-api-burst, value: '2000'}
EOF
  fi
}

# Whether the cluster was made from the configuration this run would make (kwokctl fixes the
# components' flags at creation; clusters made by an older hack/cluster-up.sh, without kwok's
# CRDs or the Service range, or in another mode, are not).
CLUSTER_CONFIG="$CLUSTER_DIR/mcp-cluster-config.yaml"
wanted_config() { echo "# mode: $CLUSTER_MODE"; kwokctl_config; }
configured_as_wanted() { [[ "$(cat "$CLUSTER_CONFIG" 2>/dev/null)" == "$(wanted_config)" ]]; }
crds_installed() {
  [[ $(kubectl_ get crd "${KWOK_CRD_NAMES[@]}" -o name 2>/dev/null | wc -l) -eq ${#KWOK_CRD_NAMES[@]} ]]
}

# The flattened admin kubeconfig (client cert of group system:masters), refreshed on every run.
write_kubeconfig() {
  local tmp
  tmp=$(mktemp "$CLUSTER_KUBECONFIG.XXXXXX") # mode 0600
  if kwokctl_ get kubeconfig >"$tmp" 2>/dev/null && [[ -s "$tmp" ]]; then
    mv -f "$tmp" "$CLUSTER_KUBECONFIG"
  else
    rm -f "$tmp"
    return 1
  fi
}

api_ready() { [[ "$(kubectl_ get --raw /readyz 2>/dev/null)" == ok ]]; }
# The simulated nodes (every node but the real one).
node_count() { kubectl_ get nodes -l "$NODE_ROLE_KEY!=$NODE_ROLE_VALUE" -o name 2>/dev/null | wc -l; }
ready_nodes() {
  kubectl_ get nodes -l "$NODE_ROLE_KEY!=$NODE_ROLE_VALUE" \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
    2>/dev/null | grep -c '^True$' || true
}
components_running() {
  kwokctl_ get components -o wide 2>/dev/null |
    awk 'NR > 1 { n++; if ($2 != "Ready") bad = 1 } END { exit (bad || n == 0) }'
}

healthy() {
  [[ -f "$CLUSTER_DIR/kwok.yaml" ]] || return 1
  sanitize_pids
  components_running && write_kubeconfig && api_ready && (($(ready_nodes) >= NODES)) && crds_installed
}

# Until DEADLINE: the API server answers, NODES simulated nodes are Ready, the controller
# manager works (it made the default ServiceAccount, without which no pod can be created) and
# kwok's CRDs are there (kwokctl creates them once, at cluster creation).
# A component that exited fails at once: kwokctl's binary runtime does not restart it.
wait_ready() {
  local scaled=false
  while :; do
    if api_ready; then
      if ! $scaled && (($(node_count) < NODES)); then
        kwokctl_logged scale node --replicas "$NODES" && scaled=true
      fi
      if (($(ready_nodes) >= NODES)) && kubectl_ -n default get serviceaccount default >/dev/null 2>&1 &&
        crds_installed && mark_simulated_nodes; then
        return 0
      fi
    elif ! components_running; then
      log "a component exited (nothing restarts it)"
      return 1
    fi
    (($(now_ms) < DEADLINE)) || return 1
    sleep 0.5
  done
}

# Mode both: the simulated nodes get the role label `simulated` and its NoSchedule taint, so that
# only pods of namespaces marked by hack/simulated-namespace.sh land on them.
mark_simulated_nodes() {
  [[ "$CLUSTER_MODE" == both ]] || return 0
  local sel="$NODE_ROLE_KEY!=$NODE_ROLE_VALUE"
  kubectl_ label nodes -l "$sel" --overwrite "$NODE_ROLE_KEY=$SIMULATED_ROLE_VALUE" >/dev/null &&
    kubectl_ taint nodes -l "$sel" --overwrite "$NODE_ROLE_KEY=$SIMULATED_ROLE_VALUE:NoSchedule" >/dev/null
}

# create|start, then wait. kwokctl forks the components and then only waits for /version (for
# all of --timeout even when kube-apiserver has exited): keep that short, wait_ready does the rest.
bring_up() {
  local secs=$(((DEADLINE - $(now_ms)) / 1000))
  ((secs < 20)) || secs=20
  ((secs > 5)) || secs=5
  if [[ "$1" == create ]]; then
    # --kubeconfig "": leave ~/.kube/config alone.
    kwokctl_config | kwokctl_logged create cluster --config - --kubeconfig "" --timeout "${secs}s" || return 1
    wanted_config >"$CLUSTER_CONFIG"
  else
    sanitize_pids
    kwokctl_logged start cluster --timeout 5s || return 1
  fi
  write_kubeconfig || { log "kwokctl get kubeconfig failed"; return 1; }
  wait_ready
}

report_failure() {
  local f
  log "cluster '$CLUSTER_NAME' is not ready after $(elapsed); last lines of the component logs:"
  for f in "$CLUSTER_DIR"/logs/*.log; do
    [[ -e "$f" ]] || continue
    printf '\n==> %s <==\n' "$f" >&2
    tail -n 15 "$f" >&2
  done
  printf '\n' >&2
  kwokctl_ get components -o wide >&2 2>/dev/null || true
  kubectl_ get nodes >&2 2>/dev/null || true
  if [[ -s "$KWOKCTL_LOG" ]]; then
    printf '\n==> %s <==\n' "$KWOKCTL_LOG" >&2
    tail -n 20 "$KWOKCTL_LOG" >&2
  fi
}

# The admin must be cluster-admin (and so may impersonate); everyone else is subject to RBAC.
verify_rbac() {
  local admin sa
  admin=$(kubectl_ auth can-i '*' '*' 2>/dev/null) || true
  sa=$(kubectl_ auth can-i list pods --as=system:serviceaccount:default:default 2>/dev/null) || true
  [[ "$admin" == yes ]] || die "the admin kubeconfig is not cluster-admin (can-i '*' '*': '$admin')"
  [[ "$sa" == no ]] || die "RBAC is not enforced (a bare ServiceAccount may list pods: '$sa'); re-create: hack/cluster-down.sh && hack/cluster-up.sh"
}

usage() {
  local server
  server=$(kubectl_ config view -o jsonpath='{.clusters[0].cluster.server}' 2>/dev/null) || true
  log "API server $server; admin kubeconfig $CLUSTER_KUBECONFIG. Use it with:"
  # shellcheck disable=SC2016 # printed for the user to run
  printf '    export KUBECONFIG=$(hack/kubeconfig.sh)   # %s\n    kubectl get nodes\n    hack/cluster-down.sh                      # delete the cluster\n' \
    "$CLUSTER_KUBECONFIG" >&2
}

lock_cluster
: >"$KWOKCTL_LOG"

if [[ -f "$CLUSTER_DIR/kwok.yaml" ]] && ! configured_as_wanted; then
  log "cluster '$CLUSTER_NAME' was created in another mode or configuration: re-creating it ($CLUSTER_MODE)"
  delete_cluster
fi

# The real node (modes real and both), once the control plane is ready.
node_up() {
  [[ "$CLUSTER_MODE" != simulated ]] || return 0
  "$HACK_DIR/node-up.sh" || die "the real node did not come up (logs: $NODE_DIR/logs; hack/cluster-down.sh cleans up)"
}

if healthy; then
  verify_rbac
  log "cluster '$CLUSTER_NAME' is already running and healthy ($(ready_nodes) simulated nodes Ready; checked in $(elapsed))"
  node_up
  usage
  exit 0
fi

if [[ -f "$CLUSTER_DIR/kwok.yaml" ]]; then
  log "cluster '$CLUSTER_NAME' exists but is not healthy (stopped, e.g. by a reboot): starting it"
  if ! bring_up start; then
    report_failure
    log "cluster '$CLUSTER_NAME' could not be started again: re-creating it"
    delete_cluster
    DEADLINE=$(($(now_ms) + TIMEOUT * 1000))
    bring_up create || { report_failure; die "cluster '$CLUSTER_NAME' did not become ready within ${TIMEOUT}s"; }
  fi
else
  [[ ! -e "$CLUSTER_DIR" ]] || rm -rf "$CLUSTER_DIR" # left half-created; kwokctl ignores it
  log "cluster '$CLUSTER_NAME': creating (kwokctl binary runtime, Kubernetes $KUBERNETES_VERSION, $NODES simulated nodes)"
  bring_up create || { report_failure; die "cluster '$CLUSTER_NAME' did not become ready within ${TIMEOUT}s"; }
fi

verify_rbac
log "cluster '$CLUSTER_NAME' ready in $(elapsed): $(ready_nodes) simulated nodes Ready, RBAC enforced"
node_up
usage
