#!/usr/bin/env bash
# Quick start: builds what it needs (first run only), starts the local cluster, installs the CRDs
# and the chart exactly as the guide does, applies the guide's sample MCPServer, and makes a real
# MCP call to it through its Service.
#
# Mode (MCP_UP_MODE; default real as root on Linux, else simulated):
#   real       the cluster gets a real node (MCP_CLUSTER_MODE=both): the operator runs in-cluster
#              from its image (hack/images.sh), the sample's pods run the reference MCP server
#              behind the MCP gateway, and the call goes through the Service
#   simulated  kwok's nodes only (no root needed): the operator runs as a local process that
#              impersonates the chart's ServiceAccount, `kubectl logs`/`port-forward` of the
#              chart's operator pod reach that process (hack/attach-operator.sh); pods are
#              simulated, so there is no MCP call
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

MODE="${MCP_UP_MODE:-}"
if [[ -z "$MODE" ]]; then
  if [[ "$(id -u)" == 0 && "$(uname -s)" == Linux ]]; then MODE=real; else MODE=simulated; fi
fi
STATE="$TOOLS_DIR/up-${MCP_CLUSTER_NAME:-mcp-dev}"
mkdir -p "$STATE"

case "$MODE" in
  real)
    "$HACK_DIR/node-packages.sh"
    "$HACK_DIR/tools.sh" kubernetes etcd kwok helm node
    log "building the images (operator, gateway, reference MCP server; first run only, then when the code changes)"
    "$HACK_DIR/images.sh"
    "$HACK_DIR/down.sh" --operator-only
    MCP_CLUSTER_MODE=both "$HACK_DIR/cluster-up.sh"
    ;;
  simulated)
    "$HACK_DIR/tools.sh" kubernetes etcd kwok helm
    "$HACK_DIR/cluster-up.sh"
    ;;
  *) die "MCP_UP_MODE=$MODE: use real or simulated" ;;
esac
KUBECONFIG="$("$HACK_DIR/kubeconfig.sh")"
export KUBECONFIG

log "installing the CRDs and the chart (the guide's commands)"
kubectl apply -f k8s/crds/
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
helm upgrade --install mcp-operator charts/mcp-operator --namespace mcp-system --create-namespace >/dev/null

if [[ "$MODE" == real ]]; then
  # A new image under the same tag: restart the pods so that they run it.
  kubectl -n mcp-system rollout restart deployment mcp-operator >/dev/null
  kubectl -n mcp-system rollout status deployment mcp-operator --timeout=180s
else
  METRICS_ADDR="${MCP_UP_METRICS_ADDR:-127.0.0.1:8081}"
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
fi

log "applying the sample MCPServer (k8s/samples/my-mcp-server.yaml, the guide's basic example)"
kubectl apply -f k8s/samples/my-mcp-server.yaml
kubectl wait --for=jsonpath='{.status.phase}'=Running mcpserver/my-mcp-server --timeout=180s >/dev/null
kubectl wait --for=jsonpath='{.status.readyReplicas}'=2 mcpserver/my-mcp-server --timeout=180s >/dev/null
kubectl get mcpservers

if [[ "$MODE" == real ]]; then
  ip=$(kubectl get service my-mcp-server -o jsonpath='{.spec.clusterIP}')
  url="http://$ip:3000/mcp"
  log "a real MCP call through the Service: $url (initialize, then tools/list)"
  accept=(-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream')
  for _ in $(seq 1 30); do
    sid=$(curl -fsS --max-time 5 -D - -o /dev/null "${accept[@]}" "$url" \
      --data '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"just-up","version":"1"}}}' \
      2>/dev/null | tr -d '\r' | sed -n 's/^[Mm]cp-[Ss]ession-[Ii]d: //p') && [[ -n "$sid" ]] && break
    sleep 1
  done
  [[ -n "${sid:-}" ]] || die "no MCP session from $url"
  curl -fsS --max-time 5 "${accept[@]}" -H "Mcp-Session-Id: $sid" "$url" \
    --data '{"jsonrpc":"2.0","method":"notifications/initialized"}' >/dev/null
  tools=$(curl -fsS --max-time 10 "${accept[@]}" -H "Mcp-Session-Id: $sid" "$url" \
    --data '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' | sed -n 's/^data: //p')
  curl -fsS --max-time 5 -X DELETE -H "Mcp-Session-Id: $sid" "$url" >/dev/null || true
  names=$(printf '%s' "$tools" | grep -o '"name":"[^"]*"' | cut -d'"' -f4 | tr '\n' ' ')
  [[ -n "$names" ]] || die "tools/list answered without tools: $tools"
  printf '\ntools/list through the Service %s (session %s):\n  %s\n' "$url" "$sid" "$names"
  cat <<MSG

The operator and the sample run in real pods on the local cluster's real node (real-0).
  export KUBECONFIG=\$(hack/just kubeconfig)
  kubectl describe mcpserver my-mcp-server
  kubectl logs -l app=my-mcp-server
  kubectl logs -n mcp-system -l app.kubernetes.io/name=mcp-operator
  kubectl port-forward -n mcp-system svc/mcp-operator-metrics 8080:8080
  hack/just down # delete the cluster and its real node
MSG
else
  cat <<MSG

The operator runs locally (metrics: http://$METRICS_ADDR/metrics, log: $STATE/operator.log);
the chart's operator pod is a kwok fake whose logs and port 8080 are that process's. Pods are
simulated in this mode (run as root on Linux for real ones).
  export KUBECONFIG=\$(hack/just kubeconfig)
  kubectl describe mcpserver my-mcp-server
  kubectl logs -n mcp-system -l app.kubernetes.io/name=mcp-operator
  kubectl port-forward -n mcp-system svc/mcp-operator-metrics 8080:8080
  hack/just down # stop the operator and delete the cluster
MSG
fi
