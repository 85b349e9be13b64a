#!/usr/bin/env bash
# The operator benchmark (for `just bench-operator [N]`; e2e/benches/operator.rs): reconcile
# latency against the API round trip, a burst of N MCPServers (default 200; 1000 and 5000 are
# the scale modes) to all Deployments and all Running, memory, CPU, the operator's API requests
# by verb during the burst and in a quiet window (no write allowed). On the local kwok cluster by
# default (a cluster of its own, mcp-bench, with one simulated node per 100 servers and the
# controller manager's client limits raised, deleted afterwards), or E2E_CLUSTER=k3s|existing as
# for the e2e suite; an optimized operator build. Prints a markdown table. Extra arguments go to
# cargo. BENCH_PROFILE_APISERVER=1 profiles the API server during the burst (hack/profile-apiserver.sh).
# BENCH_PAUSE_CLUSTER=1 stops the local cluster's controller manager, scheduler and kwok
# during the burst until every Deployment exists (the operator's own pace; see the bench).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  export BENCH_SERVERS="$1"
  shift
fi
export BENCH_SERVERS="${BENCH_SERVERS:-200}"
export E2E_CLUSTER="${E2E_CLUSTER:-local}"
export MCP_CLUSTER_NAME="${MCP_CLUSTER_NAME:-mcp-bench}"
export E2E_OPERATOR_PROFILE=release
if [[ "$E2E_CLUSTER" == local ]]; then
  "$HACK_DIR/tools.sh" kubernetes etcd kwok helm
  "$HACK_DIR/cluster-down.sh"
  # kwok's nodes hold 110 pods each: room for every server pod, and the simulator's own limits
  # out of the way.
  # Exported: the benchmark's harness runs hack/cluster-up.sh again, which must not scale back.
  export MCP_CLUSTER_NODES="${MCP_CLUSTER_NODES:-$((BENCH_SERVERS / 100 + 3))}" MCP_CLUSTER_FAST=1
  "$HACK_DIR/cluster-up.sh"
  # The cluster's processes, for the CPU each uses during the burst.
  export BENCH_CLUSTER_PIDS="$TOOLS_DIR/kwok/clusters/$MCP_CLUSTER_NAME/pids"
  trap '"$HACK_DIR/cluster-down.sh"' EXIT
fi
# BENCH_TOOLHIVE=1: the same burst against ToolHive's operator, built with hack/toolhive.sh.
if [[ "${BENCH_TOOLHIVE:-}" == 1 ]]; then
  BENCH_TOOLHIVE="$("$HACK_DIR/toolhive.sh")"
  BENCH_TOOLHIVE_CRDS="$("$HACK_DIR/toolhive.sh" crds)"
  export BENCH_TOOLHIVE BENCH_TOOLHIVE_CRDS
fi
cargo build --quiet --release --bin mcp-operator
# BENCH_PROFILE_APISERVER=1 (local cluster): a 40 s CPU profile of the API server once a tenth of
# the burst exists, and a summary of where its time went.
if [[ "${BENCH_PROFILE_APISERVER:-}" == 1 && "$E2E_CLUSTER" == local ]]; then
  mkdir -p "$TOOLS_DIR/../bench"
  "$HACK_DIR/profile-apiserver.sh" "$TOOLS_DIR/../bench/apiserver-$BENCH_SERVERS.pprof" \
    "$((BENCH_SERVERS / 10 > 0 ? BENCH_SERVERS / 10 : 1))" 40 &
  profiler=$!
  trap 'kill "$profiler" 2>/dev/null || true; "$HACK_DIR/cluster-down.sh"' EXIT
fi
# libtest harness (Cargo's default for benches): the benchmark is a #[test], run with --test. The
# measuring client is built like the e2e suite (dev profile, shared with `just test`): it times
# the baseline round trip and the reconciles alike, and the operator itself is the release build.
cargo bench --profile dev -q -p mcp-operator-e2e --bench operator "$@" -- --test --nocapture
