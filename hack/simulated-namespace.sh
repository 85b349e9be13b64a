#!/usr/bin/env bash
# Mode both: makes every new pod of a namespace run on the simulated (kwok) nodes instead of the
# real one (for tests and benchmarks that need many servers, or images that exist nowhere):
# creates the namespace if needed and annotates it so that the API server's PodNodeSelector and
# PodTolerationRestriction admission plugins give each new pod the node selector
# mcp.n-takatsu.dev/node=simulated and the toleration of those nodes' taint. Pods that exist
# already keep where they run.
#
#   hack/simulated-namespace.sh NAMESPACE...
#
# KUBECONFIG: from the environment, else the local cluster's (MCP_CLUSTER_NAME).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

[[ $# -gt 0 ]] || die "usage: hack/simulated-namespace.sh NAMESPACE..."
export KUBECONFIG="${KUBECONFIG:-$CLUSTER_KUBECONFIG}"
toleration=$(printf '[{"key":"%s","operator":"Equal","value":"%s","effect":"NoSchedule"}]' \
  "$NODE_ROLE_KEY" "$SIMULATED_ROLE_VALUE")
for ns in "$@"; do
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  kubectl annotate namespace "$ns" --overwrite >/dev/null \
    "scheduler.alpha.kubernetes.io/node-selector=$NODE_ROLE_KEY=$SIMULATED_ROLE_VALUE" \
    "scheduler.alpha.kubernetes.io/defaultTolerations=$toleration"
  log "namespace '$ns': its new pods run on the simulated nodes"
done
