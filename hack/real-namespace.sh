#!/usr/bin/env bash
# Makes every pod of a namespace run on the real node (MCP_CLUSTER_MODE=both; harmless in mode
# real, where every pod does anyway): creates the namespace if needed and annotates it so that the
# API server's PodNodeSelector and PodTolerationRestriction admission plugins give each new pod
# the node selector mcp.n-takatsu.dev/node=real and the toleration of the node's taint. Pods that
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
toleration=$(printf '[{"key":"%s","operator":"Equal","value":"%s","effect":"NoSchedule"}]' "$NODE_ROLE_KEY" "$NODE_ROLE_VALUE")
for ns in "$@"; do
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  kubectl annotate namespace "$ns" --overwrite >/dev/null \
    "scheduler.alpha.kubernetes.io/node-selector=$NODE_ROLE_KEY=$NODE_ROLE_VALUE" \
    "scheduler.alpha.kubernetes.io/defaultTolerations=$toleration"
  log "namespace '$ns': its new pods run on the real node"
done
