#!/usr/bin/env bash
# Deletes the local kwokctl cluster made by hack/cluster-up.sh (processes, etcd data, pki, logs)
# and its kubeconfig, and first its real node if it has one (hack/node-down.sh: every process,
# interface, netfilter rule, mount and host path the node added). Fine when there is none.
# MCP_CLUSTER_NAME selects it (default mcp-dev).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

if [[ ! -e "$CLUSTER_DIR" ]]; then
  if node_state_exists; then "$HACK_DIR/node-down.sh"; fi
  rm -f "$CLUSTER_KUBECONFIG"
  stop_log_pump
  rm -rf "$ATTACH_DIR"
  log "cluster '$CLUSTER_NAME': none to delete"
  exit 0
fi
lock_cluster
log "cluster '$CLUSTER_NAME': deleting"
delete_cluster
log "cluster '$CLUSTER_NAME': deleted"
