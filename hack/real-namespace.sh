#!/usr/bin/env bash
# Pins every pod of a namespace to the real node (in mode both the scheduler puts pods there
# anyway unless the namespace was marked by hack/simulated-namespace.sh; this undoes that):
# creates the namespace if needed and annotates it so that the API server's PodNodeSelector
# admission plugin gives each new pod the node selector mcp.n-takatsu.dev/node=real. Pods that
# exist already keep where they run; create them again.
#
#   hack/real-namespace.sh NAMESPACE...
#
# KUBECONFIG: from the environment, else the local cluster's (MCP_CLUSTER_NAME).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

[[ $# -gt 0 ]] || die "usage: hack/real-namespace.sh NAMESPACE..."
export KUBECONFIG="${KUBECONFIG:-$CLUSTER_KUBECONFIG}"
for ns in "$@"; do
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  kubectl annotate namespace "$ns" --overwrite >/dev/null \
    "scheduler.alpha.kubernetes.io/node-selector=$NODE_ROLE_KEY=$NODE_ROLE_VALUE" \
    scheduler.alpha.kubernetes.io/defaultTolerations-
  log "namespace '$ns': its new pods run on the real node"
done
