#!/usr/bin/env bash
# Quick start: builds the tools (first run only), starts the local cluster, installs the CRDs and
# the chart exactly as the guide does, runs the operator as a local process that impersonates the
# chart's ServiceAccount (so the chart's RBAC applies), applies a sample MCPServer and shows it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

"$HACK_DIR/tools.sh" kubernetes etcd kwok helm
"$HACK_DIR/cluster-up.sh"
KUBECONFIG="$("$HACK_DIR/kubeconfig.sh")"
export KUBECONFIG
STATE="$TOOLS_DIR/up-${MCP_CLUSTER_NAME:-mcp-dev}"
mkdir -p "$STATE"
METRICS_ADDR="${MCP_UP_METRICS_ADDR:-127.0.0.1:8081}"

log "installing the CRDs and the chart"
kubectl apply -f k8s/crds/
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
helm upgrade --install mcp-operator charts/mcp-operator --namespace mcp-system --create-namespace --wait=false >/dev/null

log "building and starting the operator (log: $STATE/operator.log)"
cargo build --quiet --bin mcp-operator
"$HACK_DIR/down.sh" --operator-only
kubectl config view --raw --minify --flatten >"$STATE/operator.kubeconfig"
user=$(kubectl --kubeconfig "$STATE/operator.kubeconfig" config view -o jsonpath='{.users[0].name}')
kubectl --kubeconfig "$STATE/operator.kubeconfig" config set "users.$user.act-as" system:serviceaccount:mcp-system:mcp-operator >/dev/null
KUBECONFIG="$STATE/operator.kubeconfig" nohup "$REPO_ROOT/target/debug/mcp-operator" \
  --leader-election=true --leader-election-namespace=mcp-system --metrics-addr="$METRICS_ADDR" \
  --identity=quickstart --gateway-status=false >"$STATE/operator.log" 2>&1 &
echo $! >"$STATE/operator.pid"
for _ in $(seq 1 60); do
  [[ "$(curl -fsS "http://$METRICS_ADDR/metrics" 2>/dev/null)" == *$'\nmcp_operator_leader 1'* ]] && break
  kill -0 "$(cat "$STATE/operator.pid")" 2>/dev/null || { tail -20 "$STATE/operator.log"; die "the operator exited"; }
  sleep 1
done
# The chart's operator pod is a kwok fake: point `kubectl logs` and `kubectl port-forward` of it
# at this process (the copier behind the logs ends with it).
"$HACK_DIR/attach-operator.sh" --log "$STATE/operator.log" --metrics "$METRICS_ADDR" --pid "$(cat "$STATE/operator.pid")"

log "applying the sample MCPServer (k8s/samples/my-mcp-server.yaml)"
kubectl apply -f k8s/samples/my-mcp-server.yaml
kubectl wait --for=jsonpath='{.status.phase}'=Running mcpserver/my-mcp-server --timeout=120s >/dev/null
kubectl get mcpservers
cat <<MSG

The operator runs locally (metrics: http://$METRICS_ADDR/metrics, log: $STATE/operator.log);
the chart's operator pod is a kwok fake whose logs and port 8080 are that process's.
  export KUBECONFIG=\$(just kubeconfig)
  kubectl describe mcpserver my-mcp-server
  kubectl logs -n mcp-system -l app.kubernetes.io/name=mcp-operator
  kubectl port-forward -n mcp-system svc/mcp-operator-metrics 8080:8080
  just down      # stop the operator and delete the cluster
MSG
