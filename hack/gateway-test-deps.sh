#!/usr/bin/env bash
# Installs what the gateway's integration tests talk to: MCP software that others wrote.
#   - @modelcontextprotocol/server-everything (npm): the reference server, Streamable HTTP and stdio
#   - mcp (PyPI): the official Python SDK, used as the client (with websockets for its WebSocket one)
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
# The Python SDK's WebSocket client transport needs it (the e2e calls a websocket server with it).
WEBSOCKETS_VERSION="${WEBSOCKETS_VERSION:-15.0.1}"
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

# npm_dep STAMP PACKAGE VERSION DIR ENTRY: PACKAGE@VERSION in DIR, unless the stamp and ENTRY show it is there.
npm_dep() {
  local stamp=$1 package=$2 version=$3 dir=$4 entry=$5
  stamp_ok "$stamp" "$version" && [[ -f "$entry" ]] && return 0
  command -v npm >/dev/null || die "npm (Node.js 20+) is required"
  log "installing $package@$version into $dir"
  mkdir -p "$dir"
  [[ -f "$dir/package.json" ]] || echo "{\"name\":\"${dir##*/}\",\"private\":true}" >"$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$package@$version" >&2
  echo "$version" >"$DEPS_DIR/.$stamp.version"
}

# pip_dep STAMP PACKAGE VERSION VENV ENTRY: PACKAGE==VERSION in VENV, unless the stamp and ENTRY show it is there.
pip_dep() {
  local stamp=$1 package=$2 version=$3 venv=$4 entry=$5
  stamp_ok "$stamp" "$version" && [[ -x "$entry" ]] && return 0
  command -v python3 >/dev/null || die "python3 (3.10+) is required"
  log "installing $package==$version into $venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$version" >&2
  echo "$version" >"$DEPS_DIR/.$stamp.version"
}

SERVER_EVERYTHING_JS="$NPM_DIR/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
CONFORMANCE_JS="$NPM_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
npm_dep server-everything @modelcontextprotocol/server-everything "$SERVER_EVERYTHING_VERSION" "$NPM_DIR" "$SERVER_EVERYTHING_JS"
npm_dep conformance @modelcontextprotocol/conformance "$CONFORMANCE_VERSION" "$NPM_DIR" "$CONFORMANCE_JS"
pip_dep python-mcp mcp "$PYTHON_MCP_VERSION" "$VENV" "$VENV/bin/python"
pip_dep python-websockets websockets "$WEBSOCKETS_VERSION" "$VENV" "$VENV/lib"
if [[ $BENCH == 1 ]]; then
  npm_dep supergateway supergateway "$SUPERGATEWAY_VERSION" "$BENCH_NPM_DIR" "$BENCH_NPM_DIR/node_modules/supergateway/dist/index.js"
  pip_dep mcp-proxy mcp-proxy "$MCP_PROXY_VERSION" "$BENCH_VENV" "$BENCH_VENV/bin/mcp-proxy"
fi

# What the tests read.
echo "SERVER_EVERYTHING=$SERVER_EVERYTHING_JS"
echo "PYTHON=$VENV/bin/python"
echo "CONFORMANCE=$CONFORMANCE_JS"
if [[ $BENCH == 1 ]]; then
  echo "SUPERGATEWAY=$BENCH_NPM_DIR/node_modules/supergateway/dist/index.js"
  echo "MCP_PROXY=$BENCH_VENV/bin/mcp-proxy"
fi
