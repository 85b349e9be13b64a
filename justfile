# mcp-operator: `just --list` is the map of the repository.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

export PATH := env("MCP_TOOLS_DIR", env("HOME") / ".cache/mcp-operator/tools") / "bin:" + env("HOME") / ".cargo/bin:" + env("PATH")

# List the recipes.
default:
    @just --list

# Build the control-plane and dev tools from their pinned Go modules into the cache (idempotent).
tools *names:
    hack/tools.sh {{names}}

# Regenerate CRDs (from the Rust types), the chart's CRD copies and the plain manifests.
generate:
    hack/generate.sh

# Unit and mock-API tests (no cluster needed).
unit:
    cargo test --workspace --exclude mcp-operator-e2e

# The e2e suite: k3s where Docker answers, else the local cluster (E2E_CLUSTER=k3s|local|existing).
e2e *args:
    hack/e2e.sh "$@"

# The unit suite in a copy of the checkout that has no sibling directory (the repository stands alone).
standalone:
    hack/standalone.sh

# Everything CI runs: lint, the unit suite (in a standalone copy), fuzz (60 s a target), e2e.
test: lint standalone fuzz e2e

# Start the local cluster (MCP_CLUSTER_MODE=simulated|real|both; real and both as root).
cluster-up: (tools "kubernetes" "etcd" "kwok")
    if [[ "${MCP_CLUSTER_MODE:-simulated}" != simulated ]]; then hack/node-packages.sh && hack/tools.sh node; fi
    hack/cluster-up.sh

# Delete the local cluster and its real node.
cluster-down:
    hack/cluster-down.sh

# Show the real node: processes, Node, pods, images.
node-status:
    @hack/node-status.sh

# Check that the real node runs pods, Services, DNS, NetworkPolicy and the MCP images.
node-smoke:
    hack/node-smoke.sh

# Print the local cluster's kubeconfig path: export KUBECONFIG=$(just kubeconfig)
kubeconfig:
    @hack/kubeconfig.sh

# Quick start: local cluster, CRDs, chart, operator and a sample MCPServer.
up:
    hack/up.sh

# Stop the quick-start operator and delete the local cluster.
down:
    hack/down.sh

# fmt, clippy, cargo-deny, helm lint, chart unit tests, generated-file drift, manifest validation,
# workflow lint.
lint: (tools "helm" "actionlint")
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    helm lint --strict charts/mcp-operator
    helm lint --strict charts/mcp-operator --set watchNamespaces='{a,b}' --set replicaCount=2 --set serviceMonitor.enabled=true --set networkPolicy.enabled=true
    cargo test --quiet -p mcp-operator-e2e --test chart
    hack/render-manifests.sh --check
    hack/check-generated.sh
    actionlint
    hack/deny.sh

# Supply chain: RustSec advisories, licenses, duplicate crates, sources (cargo-deny).
deny:
    hack/deny.sh

# Fuzz the gateway's admission, JSON-RPC and SSE parsers (FUZZ_SECONDS each, default 60).
fuzz *targets:
    hack/fuzz.sh {{targets}}

# Build the local images without a registry and load them into the real node.
image *names:
    hack/images.sh {{names}}

# Build the operator and gateway images from the Dockerfile (pulls base images).
image-dockerfile tag="0.1.0":
    docker build -t ghcr.io/n-takatsu/mcp-operator:{{tag}} .
    docker build --target gateway -t ghcr.io/n-takatsu/mcp-gateway:{{tag}} .

# The release without publishing: version checks, chart package and assets in dist/ (as the tag
# workflow makes them), and the operator and gateway images for this machine's architecture.
release-dry-run:
    hack/release-assets.sh
    hack/images.sh operator gateway

# Gateway benchmark: added latency and throughput vs direct, stdio bridge vs mcp-proxy and supergateway.
bench-gateway:
    hack/bench-gateway.sh

# Operator benchmark: reconcile latency vs the API round trip, a burst, memory per object, quiet writes.
bench-operator n="200":
    hack/bench-operator.sh {{n}}

# Recovery benchmark: kill -9 of the operator during creation/update/deletion, API server
# outages (stopped and killed), leader failover; the time until everything converged.
bench-recovery:
    hack/bench-recovery.sh

# The MCP conformance suite directly, through the gateway, and through the stdio bridge.
conformance:
    hack/conformance.sh

# Run the operator against the current kubeconfig.
run *args:
    cargo run --bin mcp-operator -- "$@"
