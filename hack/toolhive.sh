#!/usr/bin/env bash
# Builds ToolHive's Kubernetes operator (github.com/stacklok/toolhive/cmd/thv-operator at
# TOOLHIVE_VERSION, with `go install`) into the tools cache for the side-by-side operator
# benchmark, and prints the binary's path; `hack/toolhive.sh crds` prints the folder of its CRDs
# (in the module). Needs the Go module proxy to serve every module ToolHive depends on: on the
# development machine of this project it does for v0.47.0, not for v0.55.2 or v0.66.0
# (sentry-go/otel/otlp, toolhive-core/redisconn, jwx-go/jwkfetch and one golang.org/x/exp/jsonrpc2
# pseudo-version are refused).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$HACK_DIR/versions.env"
export GOTOOLCHAIN="$TOOLHIVE_GOTOOLCHAIN"
BIN_DIR="$TOOLS_DIR/toolhive-$TOOLHIVE_VERSION"
MOD_DIR="$(go env GOMODCACHE)/github.com/stacklok/toolhive@$TOOLHIVE_VERSION"

if [[ ! -x "$BIN_DIR/thv-operator" ]]; then
  log "building thv-operator $TOOLHIVE_VERSION (a few minutes the first time)"
  GOBIN="$BIN_DIR" CGO_ENABLED=0 go install "github.com/stacklok/toolhive/cmd/thv-operator@$TOOLHIVE_VERSION" >&2
fi
if [[ "${1:-}" == crds ]]; then
  echo "$MOD_DIR/deploy/charts/operator-crds/files/crds"
else
  echo "$BIN_DIR/thv-operator"
fi
