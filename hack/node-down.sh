#!/usr/bin/env bash
# Stops the real node of the local cluster (hack/node-up.sh) and undoes everything it did to the
# machine: kubelet, kube-proxy, kube-router, containerd, its shims and every container process;
# the bridge and the pods' veths, the nft guard table, kube-proxy's nft tables, the iptables
# rules, chains and ipsets of the kubelet and kube-router, mounts, the kubepods cgroups, the
# /etc/hosts line, the sysctls it set and the host paths the kubelet, containerd and libcni
# created outside their directories. hack/cluster-down.sh runs it first; fine when there is no
# node. The control plane is left alone; the node's logs stay in $TOOLS_DIR/node-<cluster>/logs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

if ! node_state_exists; then
  log "real node of cluster '$CLUSTER_NAME': none to stop"
  exit 0
fi
[[ $(id -u) == 0 ]] || die "stopping the real node needs root"
start=$(now_ms)
lock_node
node_teardown
release_node
log "real node of cluster '$CLUSTER_NAME': stopped and cleaned up in $(($(now_ms) - start)) ms (logs kept in $NODE_LOG_DIR)"
