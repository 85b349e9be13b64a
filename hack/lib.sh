# Shared by the hack/ scripts: where the tools live and how to report.
# shellcheck shell=bash
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"
# Outside the checkout so that fresh clones and CI reuse what was built once.
TOOLS_DIR="${MCP_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-operator/tools}"
TOOLS_BIN="$TOOLS_DIR/bin"
export PATH="$TOOLS_BIN:$HOME/.cargo/bin:$PATH"

log() { printf '\033[1;34m[hack]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[hack] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Whether a process runs; a zombie does not (not every init reaps at once).
running() { [[ "$(ps -o stat= -p "$1" 2>/dev/null)" =~ ^[^Z] ]]; }

# True when what a command prints contains a fixed string. The output is captured whole first:
# `cmd | grep -q` under pipefail fails when grep exits early and cmd dies of SIGPIPE.
output_has() { # needle cmd args...
  local needle=$1 out; shift
  out=$("$@" 2>&1) || return 1
  [[ "$out" == *"$needle"* ]]
}
