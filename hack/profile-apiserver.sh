#!/usr/bin/env bash
# A CPU profile of the local cluster's API server during a benchmark burst (BENCH_PROFILE_APISERVER=1
# just bench-operator N): waits until MIN MCPServers exist, profiles for SECONDS, writes OUT and
# prints where the time went (the Go toolchain's pprof). Usage: profile-apiserver.sh OUT [MIN] [SECONDS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
out=$1 min=${2:-500} seconds=${3:-40}
kubeconfig="$("$HACK_DIR/kubeconfig.sh")"
count() {
  local page
  page=$(kubectl --kubeconfig "$kubeconfig" get --raw "/apis/mcp.n-takatsu.dev/v1alpha1/mcpservers?limit=$min" 2>/dev/null) || page=
  grep -o '"kind":"MCPServer"' <<<"$page" | wc -l
}
until (($(count) >= min)); do sleep 0.5; done
log "profiling the API server for ${seconds}s ($min MCPServers exist)"
kubectl --kubeconfig "$kubeconfig" get --raw "/debug/pprof/profile?seconds=$seconds" >"$out"
log "API server profile: $out (go tool pprof -top -cum $out)"
# The frames that name the work: service IP allocation, server-side apply, status writes, create,
# watch delivery, garbage collection.
summary=$(go tool pprof -top -cum -nodecount=400 "$out" 2>/dev/null) || exit 0
grep -E 'Total samples|ipallocator.\(\*Allocator\).createIPAddress$|applyPatcher\).createNewObject$|customresource.\(\*StatusREST\).Update$|registry.\(\*Store\).Create$|handlers.\(\*WatchServer\).HandleHTTP$|runtime.gcBgMarkWorker$|etcd3.\(\*store\).GuaranteedUpdate$' <<<"$summary" >&2 || true
