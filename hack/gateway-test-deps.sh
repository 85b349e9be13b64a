#!/usr/bin/env bash
# Installs what the gateway's integration tests talk to: MCP software that others wrote.
#   - @modelcontextprotocol/server-everything (npm): the reference server, Streamable HTTP and stdio
#   - mcp (PyPI): the official Python SDK, used as the client
#   - @modelcontextprotocol/conformance (npm): the MCP conformance suite (hack/conformance.sh)
# and, with --bench, the stdio-to-HTTP peers hack/bench-gateway.sh compares the bridge with:
#   - supergateway (npm), in its own prefix (it pins its own MCP SDK)
#   - mcp-proxy (PyPI), in its own venv (it needs a newer `mcp` than the tests pin)
# into $GATEWAY_DEPS_DIR (default ~/.cache/mcp-operator/gateway-test-deps), outside the checkout.
# Idempotent: a stamp per pinned version makes a second run instant. Prints nothing on success
# unless it installed something. The tests run it themselves (gateway/tests/common) and fail when
# it fails.
set -euo pipefail

SERVER_EVERYTHING_VERSION="${SERVER_EVERYTHING_VERSION:-2026.8.31}"
PYTHON_MCP_VERSION="${PYTHON_MCP_VERSION:-1.27.0}"
CONFORMANCE_VERSION="${CONFORMANCE_VERSION:-0.1.16}"
SUPERGATEWAY_VERSION="${SUPERGATEWAY_VERSION:-4.0.0}"
MCP_PROXY_VERSION="${MCP_PROXY_VERSION:-0.13.0}"

BENCH=0
case "${1:-}" in
  "") ;;
  --bench) BENCH=1 ;;
  *) echo "usage: $0 [--bench]" >&2; exit 2 ;;
esac

DEPS_DIR="${GATEWAY_DEPS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-operator/gateway-test-deps}"
NPM_DIR="$DEPS_DIR/npm"
VENV="$DEPS_DIR/venv"
BENCH_NPM_DIR="$DEPS_DIR/npm-bench"
BENCH_VENV="$DEPS_DIR/venv-mcp-proxy"
mkdir -p "$DEPS_DIR"

log() { printf '\033[1;34m[gateway-test-deps]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[gateway-test-deps] error:\033[0m %s\n' "$*" >&2; exit 1; }

# One installer at a time (tests start in parallel).
exec 9>"$DEPS_DIR/.lock"
flock 9

stamp_ok() { [[ -f "$DEPS_DIR/.$1.version" && "$(cat "$DEPS_DIR/.$1.version")" == "$2" ]]; }

if ! stamp_ok server-everything "$SERVER_EVERYTHING_VERSION" || [[ ! -f "$NPM_DIR/node_modules/@modelcontextprotocol/server-everything/dist/index.js" ]]; then
  command -v npm >/dev/null || die "npm (Node.js 20+) is required"
  log "installing @modelcontextprotocol/server-everything@$SERVER_EVERYTHING_VERSION into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  [[ -f "$NPM_DIR/package.json" ]] || echo '{"name":"gateway-test-deps","private":true}' >"$NPM_DIR/package.json"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/server-everything@$SERVER_EVERYTHING_VERSION" >&2
  echo "$SERVER_EVERYTHING_VERSION" >"$DEPS_DIR/.server-everything.version"
fi

CONFORMANCE_JS="$NPM_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
if ! stamp_ok conformance "$CONFORMANCE_VERSION" || [[ ! -f "$CONFORMANCE_JS" ]]; then
  command -v npm >/dev/null || die "npm (Node.js 20+) is required"
  log "installing @modelcontextprotocol/conformance@$CONFORMANCE_VERSION into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  [[ -f "$NPM_DIR/package.json" ]] || echo '{"name":"gateway-test-deps","private":true}' >"$NPM_DIR/package.json"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >&2
  echo "$CONFORMANCE_VERSION" >"$DEPS_DIR/.conformance.version"
fi

if ! stamp_ok python-mcp "$PYTHON_MCP_VERSION" || [[ ! -x "$VENV/bin/python" ]]; then
  command -v python3 >/dev/null || die "python3 (3.10+) is required"
  log "installing mcp==$PYTHON_MCP_VERSION into $VENV"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "mcp==$PYTHON_MCP_VERSION" >&2
  echo "$PYTHON_MCP_VERSION" >"$DEPS_DIR/.python-mcp.version"
fi

if [[ $BENCH == 1 ]]; then
  if ! stamp_ok supergateway "$SUPERGATEWAY_VERSION" || [[ ! -f "$BENCH_NPM_DIR/node_modules/supergateway/dist/index.js" ]]; then
    command -v npm >/dev/null || die "npm (Node.js 20+) is required"
    log "installing supergateway@$SUPERGATEWAY_VERSION into $BENCH_NPM_DIR"
    mkdir -p "$BENCH_NPM_DIR"
    [[ -f "$BENCH_NPM_DIR/package.json" ]] || echo '{"name":"gateway-bench-deps","private":true}' >"$BENCH_NPM_DIR/package.json"
    npm install --prefix "$BENCH_NPM_DIR" --no-audit --no-fund --loglevel=error "supergateway@$SUPERGATEWAY_VERSION" >&2
    echo "$SUPERGATEWAY_VERSION" >"$DEPS_DIR/.supergateway.version"
  fi
  if ! stamp_ok mcp-proxy "$MCP_PROXY_VERSION" || [[ ! -x "$BENCH_VENV/bin/mcp-proxy" ]]; then
    command -v python3 >/dev/null || die "python3 (3.10+) is required"
    log "installing mcp-proxy==$MCP_PROXY_VERSION into $BENCH_VENV"
    [[ -x "$BENCH_VENV/bin/python" ]] || python3 -m venv "$BENCH_VENV"
    "$BENCH_VENV/bin/pip" install --quiet --disable-pip-version-check "mcp-proxy==$MCP_PROXY_VERSION" >&2
    echo "$MCP_PROXY_VERSION" >"$DEPS_DIR/.mcp-proxy.version"
  fi
fi

# What the tests read.
echo "SERVER_EVERYTHING=$NPM_DIR/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
echo "PYTHON=$VENV/bin/python"
echo "CONFORMANCE=$CONFORMANCE_JS"
if [[ $BENCH == 1 ]]; then
  echo "SUPERGATEWAY=$BENCH_NPM_DIR/node_modules/supergateway/dist/index.js"
  echo "MCP_PROXY=$BENCH_VENV/bin/mcp-proxy"
fi
