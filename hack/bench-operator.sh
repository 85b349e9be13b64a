#!/usr/bin/env bash
# The operator benchmark (for `just bench-operator`; e2e/benches/operator.rs): reconcile latency
# against the API round trip, a burst of BENCH_SERVERS MCPServers (default 200), memory per
# object, writes in a quiet window. On the local kwok cluster by default (a cluster of its own,
# mcp-bench, deleted afterwards), or E2E_CLUSTER=k3s|existing as for the e2e suite; an optimized
# operator build. Prints a markdown table. Extra arguments go to cargo.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

export E2E_CLUSTER="${E2E_CLUSTER:-local}"
export MCP_CLUSTER_NAME="${MCP_CLUSTER_NAME:-mcp-bench}"
export E2E_OPERATOR_PROFILE=release
if [[ "$E2E_CLUSTER" == local ]]; then
  "$HACK_DIR/tools.sh" kubernetes etcd kwok helm
  "$HACK_DIR/cluster-down.sh"
  "$HACK_DIR/cluster-up.sh"
  trap '"$HACK_DIR/cluster-down.sh"' EXIT
fi
cargo build --quiet --release --bin mcp-operator
# libtest harness (Cargo's default for benches): the benchmark is a #[test], run with --test. The
# measuring client is built like the e2e suite (dev profile, shared with `just test`): it times
# the baseline round trip and the reconciles alike, and the operator itself is the release build.
cargo bench --profile dev -q -p mcp-operator-e2e --bench operator "$@" -- --test --nocapture
