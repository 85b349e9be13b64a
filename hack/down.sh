#!/usr/bin/env bash
# Stops the quick-start operator and deletes the local cluster (--operator-only: just the operator).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STATE="$TOOLS_DIR/up-${MCP_CLUSTER_NAME:-mcp-dev}"
if [[ -f "$STATE/operator.pid" ]]; then
  pid=$(cat "$STATE/operator.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    log "stopped the operator (pid $pid)"
  fi
  rm -f "$STATE/operator.pid"
fi
[[ "${1:-}" == "--operator-only" ]] && exit 0
"$HACK_DIR/cluster-down.sh"
