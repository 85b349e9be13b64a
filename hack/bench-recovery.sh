#!/usr/bin/env bash
# The recovery benchmark (for `just bench-recovery`; e2e/benches/recovery.rs): kill -9 of the
# operator during the creation, update and deletion of BENCH_RECOVERY_SERVERS MCPServers
# (default 300), the API server stopped and killed for BENCH_OUTAGE_SECS (default 20), and a
# leader failover to a standby replica; each ends with every server converged exactly once, and
# the time to converge is printed as a markdown table. On a local kwok cluster of its own
# (mcp-bench, deleted afterwards) with an optimized operator build running as a local process.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

export E2E_CLUSTER=local
export MCP_CLUSTER_NAME="${MCP_CLUSTER_NAME:-mcp-bench}"
export E2E_OPERATOR_PROFILE=release
export BENCH_RECOVERY_SERVERS="${BENCH_RECOVERY_SERVERS:-300}"
"$HACK_DIR/tools.sh" kubernetes etcd kwok helm
"$HACK_DIR/cluster-down.sh"
# Exported: the benchmark's harness runs hack/cluster-up.sh again, which must not scale back.
export MCP_CLUSTER_NODES="${MCP_CLUSTER_NODES:-$((BENCH_RECOVERY_SERVERS * 2 / 100 + 3))}" MCP_CLUSTER_FAST=1
"$HACK_DIR/cluster-up.sh"
# The benchmark restarts the API server itself: whatever kwokctl no longer tracks goes too.
trap '"$HACK_DIR/cluster-down.sh"; pkill -f "kwok/clusters/$MCP_CLUSTER_NAME/" || true' EXIT
cargo build --quiet --release --bin mcp-operator
cargo bench --profile dev -q -p mcp-operator-e2e --bench recovery "$@" -- --test --nocapture
