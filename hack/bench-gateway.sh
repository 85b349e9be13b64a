#!/usr/bin/env bash
# The gateway benchmark (for `just bench-gateway`): on loopback, in one run, added latency (p50/p99)
# and throughput of mcp-gateway in front of @modelcontextprotocol/server-everything versus the
# server directly, and the stdio bridge versus supergateway (npm) and mcp-proxy (PyPI), all with the
# same client and requests (gateway/benches/gateway.rs). Bounded in requests and time (about a
# minute plus the build); prints markdown tables. Dependencies: hack/gateway-test-deps.sh --bench.
# Extra arguments go to cargo (e.g. --offline).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/hack/gateway-test-deps.sh" --bench >/dev/null
cd "$ROOT"
# libtest harness (Cargo's default for benches): the benchmark is a #[test], run with --test.
exec cargo bench -q -p mcp-gateway --bench gateway "$@" -- --test --nocapture
