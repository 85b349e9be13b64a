#!/usr/bin/env bash
# Fails when the committed generated files (CRDs, chart CRD copies, manifests) differ from what
# `just generate` would write.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cargo run --quiet --bin crdgen -- "$tmp"
for dir in k8s/crds charts/mcp-operator/crds; do
  if ! diff -r -x .gitkeep "$tmp" "$dir" >/dev/null; then
    diff -r -x .gitkeep "$tmp" "$dir" | head -40 >&2 || true
    die "$dir is out of date: run \`just generate\` and commit the result"
  fi
done
log "generated CRDs are current"
