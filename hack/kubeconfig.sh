#!/usr/bin/env bash
# Prints the path of the local cluster's admin kubeconfig (written by hack/cluster-up.sh):
#
#   export KUBECONFIG=$(hack/kubeconfig.sh)
#
# MCP_CLUSTER_NAME selects the cluster (default mcp-dev).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

[[ -s "$CLUSTER_KUBECONFIG" ]] ||
  log "warning: $CLUSTER_KUBECONFIG does not exist yet; run hack/cluster-up.sh"
echo "$CLUSTER_KUBECONFIG"
