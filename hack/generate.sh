#!/usr/bin/env bash
# Regenerates every generated file: CRDs (from the Rust types, via crdgen) into k8s/crds and the
# chart's crds/, then the plain manifests rendered from the chart.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
for dir in k8s/crds charts/mcp-operator/crds; do
  mkdir -p "$dir"
  rm -f "$dir"/*.yaml
done
log "CRDs: cargo run --bin crdgen"
cargo run --quiet --bin crdgen -- k8s/crds charts/mcp-operator/crds
rm -f charts/mcp-operator/crds/.gitkeep
"$HACK_DIR/render-manifests.sh"
log "generated: $(ls k8s/crds | tr '\n' ' ')"
