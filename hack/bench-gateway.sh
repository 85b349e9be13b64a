#!/usr/bin/env bash
# The gateway benchmark (for `just bench-gateway`): on loopback, in one run, added latency (p50/p99)
# and throughput of mcp-gateway in front of @modelcontextprotocol/server-everything versus the
# server directly, and the stdio bridge versus supergateway (npm) and mcp-proxy (PyPI), all with the
# same client and requests (gateway/benches/gateway.rs). Bounded in requests and time (about a
# minute plus the build); prints markdown tables. Dependencies: hack/gateway-test-deps.sh --bench.
# Before/after in the same run: the gateway of MCP_GATEWAY_BASELINE_REF (default: the last commit
# before the default-deny admission work) is built once into the cache and measured beside this
# tree's (MCP_GATEWAY_BASELINE=none skips it; a path uses that binary).
# Extra arguments go to cargo (e.g. --offline).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/hack/lib.sh"
bash "$ROOT/hack/gateway-test-deps.sh" --bench >/dev/null
cd "$ROOT"
BASELINE_REF="${MCP_GATEWAY_BASELINE_REF:-6ea7b99}"
case "${MCP_GATEWAY_BASELINE:-}" in
  none) unset MCP_GATEWAY_BASELINE ;;
  "")
    work="$TOOLS_DIR/../bench-baseline/$BASELINE_REF"
    if [[ ! -x "$work/bin/mcp-gateway" ]]; then
      log "building the baseline gateway ($BASELINE_REF) into $work"
      rm -rf "$work/src" && mkdir -p "$work"
      git -C "$ROOT" archive --format=tar --prefix=src/ "$BASELINE_REF" | tar -x -C "$work"
      (cd "$work/src" && CARGO_TARGET_DIR="$work/target" cargo build --quiet --release --locked -p mcp-gateway)
      mkdir -p "$work/bin" && cp "$work/target/release/mcp-gateway" "$work/bin/"
    fi
    export MCP_GATEWAY_BASELINE="$work/bin/mcp-gateway"
    ;;
  *) export MCP_GATEWAY_BASELINE ;;
esac
# libtest harness (Cargo's default for benches): the benchmark is a #[test], run with --test.
exec cargo bench -q -p mcp-gateway --bench gateway "$@" -- --test --nocapture
