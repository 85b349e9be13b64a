#!/usr/bin/env bash
# Proves that the real node of a local cluster in MCP_CLUSTER_MODE=real or both runs pods for
# real: scratch-image pods start, `kubectl logs`/`exec`/`port-forward` go through the kubelet, a
# Deployment's Service answers from the host and from a pod, *.svc.cluster.local resolves in
# pods, a NetworkPolicy deny-all blocks pod -> pod and an allow policy re-opens it, the mcp-rs
# image answers an MCP initialize on /mcp, and the static gateway image proxies to it by its DNS
# name and wraps it as a stdio server (the operator's two layouts, without the operator).
# One PASS/FAIL line per check; exits 1 when any fails. Needs the images of hack/images.sh.
#
#   MCP_CLUSTER_MODE=both hack/cluster-up.sh && hack/images.sh && hack/node-smoke.sh
#
# Environment: MCP_CLUSTER_NAME; MCP_SMOKE_NAMESPACE (default node-smoke, re-created);
# MCP_SMOKE_KEEP=1 keeps the namespaces afterwards.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

NS="${MCP_SMOKE_NAMESPACE:-node-smoke}"
SIM_NS="$NS-unmarked"
export KUBECONFIG="$CLUSTER_KUBECONFIG"
VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")
GATEWAY_IMAGE="ghcr.io/n-takatsu/mcp-gateway:$VERSION"
EVERYTHING=/app/node_modules/@modelcontextprotocol/server-everything/dist/index.js
passed=0 failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
# check "description" cmd args...: PASS when the command succeeds (its output shown on FAIL).
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$what"; else fail "$what"; [[ -z "$out" ]] || echo "$out" | tail -n 5 | sed 's/^/    /'; fi
}
# Until a command succeeds, at most N seconds (for what settles asynchronously).
eventually() { # seconds cmd args...
  local end=$((SECONDS + $1))
  shift
  until "$@"; do ((SECONDS < end)) || return 1; sleep 0.5; done
}
k() { kubectl -n "$NS" "$@"; }
indent() { sed "s/^/$(printf '%*s' "$1" '')/"; }
in_pod() { k exec "$1" -- /nodetool "${@:2}"; }
contains() { [[ "$1" == *"$2"* ]]; }

[[ "$CLUSTER_MODE" == real || "$CLUSTER_MODE" == both ]] ||
  die "MCP_CLUSTER_MODE=real or both: the cluster this checks (is: $CLUSTER_MODE)"
node_kubectl get node "$NODE_NAME" >/dev/null 2>&1 ||
  die "cluster '$CLUSTER_NAME' has no node $NODE_NAME: MCP_CLUSTER_MODE=$CLUSTER_MODE hack/cluster-up.sh"
for image in mcp-nodetool:latest mcp-rs:latest "$GATEWAY_IMAGE"; do
  full=$image; [[ $full == */* ]] || full="docker.io/library/$full"
  output_has "$full" ctr_ images ls -q || die "image $image is not on the node: run hack/images.sh"
done

trap 'echo "FAIL aborted at line $LINENO: $BASH_COMMAND"; echo "$passed passed, $((failed + 1)) failed"' ERR
kubectl delete namespace "$NS" "$SIM_NS" --ignore-not-found --wait=true --timeout=120s >/dev/null
"$HACK_DIR/real-namespace.sh" "$NS" 2>/dev/null
kubectl create namespace "$SIM_NS" >/dev/null

# The spec of a restricted pod of the nodetool image (no shell, nothing but /nodetool), as
# restricted as the operator's pods are.
nodetool_spec() { # args-json
  cat <<YAML
terminationGracePeriodSeconds: 1
securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
containers:
- name: main
  image: mcp-nodetool:latest
  imagePullPolicy: Never
  args: $1
  readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}
  securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
YAML
}
pod() { # name app args-json [namespace]
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: %s, labels: {app: %s}}\nspec:\n' "$1" "${4:-$NS}" "$2"
  nodetool_spec "$3" | indent 2
}

# ---- pods, logs, exec, port-forward
t0=$(now_ms)
{ pod server server '["serve"]'; echo ---; pod client client '["serve"]'; } | kubectl apply -f - >/dev/null
if k wait --for=condition=Ready pod/server pod/client --timeout=60s >/dev/null; then
  pass "pods of a FROM-scratch image Ready $(($(now_ms) - t0)) ms after creation"
else
  fail "pods Ready"; k describe pods | tail -n 20
fi
check "$NS's pods run on $NODE_NAME (hack/real-namespace.sh)" \
  test "$(k get pods -o jsonpath='{.items[*].spec.nodeName}')" == "$NODE_NAME $NODE_NAME"
check "kubectl logs through the kubelet" eventually 10 output_has "nodetool serving on" k logs server
server_ip=$(k get pod server -o jsonpath='{.status.podIP}')
check "kubectl exec through the kubelet: pod -> pod $server_ip" output_has "hello from server" in_pod client get "http://$server_ip:8080/"
pf_log=$(mktemp)
kubectl -n "$NS" port-forward pod/server :8080 >"$pf_log" 2>&1 &
pf=$!
port_forwarded() {
  local port
  port=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$pf_log")
  [[ -n "$port" ]] && output_has "hello from server" curl -fsS -m 3 "http://127.0.0.1:$port/"
}
check "kubectl port-forward through the kubelet" eventually 10 port_forwarded
kill "$pf" 2>/dev/null || true
wait "$pf" 2>/dev/null || true
rm -f "$pf_log"
check "in-cluster API from a pod ($API_SERVICE_IP:443, TLS verified, ServiceAccount token)" \
  output_has "\"gitVersion\": \"$KUBERNETES_VERSION\"" in_pod client kube /version

# ---- a Deployment behind a Service, from the host and from a pod; DNS
kubectl apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: $NS}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
$(nodetool_spec '["serve"]' | indent 6)
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: $NS}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
YAML
t0=$(now_ms)
if k rollout status deploy/web --timeout=60s >/dev/null; then
  pass "Deployment of 2 replicas available $(($(now_ms) - t0)) ms after creation"
else
  fail "Deployment web available"
fi
web_ip=$(k get svc web -o jsonpath='{.spec.clusterIP}')
replicas_seen() { # how many replicas answered 20 requests to the ClusterIP from the host
  local i
  for ((i = 0; i < 20; i++)); do curl -fsS -m 2 "http://$web_ip/" 2>/dev/null; done | sort -u | grep -c '^hello from web-'
}
both_replicas() { [[ "$(replicas_seen)" == 2 ]]; }
check "host -> Service $web_ip reaches both replicas" eventually 10 both_replicas
check "pod -> Service by name web.$NS.svc.cluster.local" \
  eventually 10 output_has "hello from web-" in_pod client get "http://web.$NS.svc.cluster.local/"
check "DNS in a pod: web.$NS.svc.cluster.local is $web_ip" \
  test "$(in_pod client lookup "web.$NS.svc.cluster.local" 2>&1)" == "$web_ip"
check "DNS in a pod: kubernetes.default.svc.cluster.local is $API_SERVICE_IP" \
  test "$(in_pod client lookup kubernetes.default.svc.cluster.local 2>&1)" == "$API_SERVICE_IP"
# NXDOMAIN at once from CoreDNS, which has no upstream.
not_resolved() { local out; ! out=$(in_pod client lookup "$1" 2>&1) && [[ "$out" == *"no such host"* ]]; }
check "DNS in a pod: names outside the cluster get NXDOMAIN (no forward)" not_resolved example.com

# ---- NetworkPolicy (kube-router's firewall)
client_reaches_web() { in_pod client get "http://web.$NS.svc.cluster.local/" >/dev/null 2>&1; }
client_blocked() { ! client_reaches_web; }
kubectl apply -f - >/dev/null <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all-ingress, namespace: $NS}
spec: {podSelector: {}, policyTypes: [Ingress]}
YAML
check "NetworkPolicy deny-all blocks pod -> pod" eventually 15 client_blocked
kubectl apply -f - >/dev/null <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: $NS}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 8080}]}]
YAML
check "NetworkPolicy allowing client -> web re-opens it" eventually 15 client_reaches_web
k delete networkpolicy --all >/dev/null

# ---- the MCP server image, directly and behind the gateway image
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: gateway-policy, namespace: $NS}
data: {policy.json: '{"enabled": false}'}
---
apiVersion: v1
kind: Pod
metadata: {name: mcp, namespace: $NS, labels: {app: mcp}}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: server
    image: mcp-rs:latest
    imagePullPolicy: IfNotPresent
    env: [{name: MCP_TRANSPORT, value: http}, {name: MCP_PORT, value: "3000"}, {name: MCP_PATH, value: /mcp}]
    readinessProbe: {tcpSocket: {port: 3000}, periodSeconds: 1}
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {name: mcp, namespace: $NS}
spec:
  selector: {app: mcp}
  ports: [{port: 3000, targetPort: 3000}]
---
apiVersion: v1
kind: Pod
metadata: {name: gateway, namespace: $NS}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: gateway
    image: $GATEWAY_IMAGE
    imagePullPolicy: IfNotPresent
    args: [--listen=0.0.0.0:8443, --admin-listen=0.0.0.0:9090, --policy=/etc/mcp/policy.json,
           "--upstream=http://mcp.$NS.svc.cluster.local:3000/mcp"]
    readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: policy, mountPath: /etc/mcp, readOnly: true}]
  volumes: [{name: policy, configMap: {name: gateway-policy}}]
---
apiVersion: v1
kind: Pod
metadata: {name: stdio, namespace: $NS}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
  initContainers:
  - name: install-gateway
    image: $GATEWAY_IMAGE
    imagePullPolicy: IfNotPresent
    args: [--install-to=/opt/mcp-gateway/mcp-gateway]
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: gateway-bin, mountPath: /opt/mcp-gateway}]
  containers:
  - name: server
    image: mcp-rs:latest
    imagePullPolicy: IfNotPresent
    command: [/opt/mcp-gateway/mcp-gateway, --stdio, --listen=0.0.0.0:8443, --admin-listen=0.0.0.0:9090,
              --policy=/etc/mcp/policy.json, --, /usr/bin/node, $EVERYTHING, stdio]
    readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    volumeMounts:
    - {name: gateway-bin, mountPath: /opt/mcp-gateway, readOnly: true}
    - {name: policy, mountPath: /etc/mcp, readOnly: true}
  volumes:
  - {name: gateway-bin, emptyDir: {}}
  - {name: policy, configMap: {name: gateway-policy}}
YAML
t0=$(now_ms)
if k wait --for=condition=Ready pod/mcp pod/gateway pod/stdio --timeout=90s >/dev/null; then
  pass "mcp-rs and gateway pods Ready $(($(now_ms) - t0)) ms after creation"
else
  fail "mcp-rs and gateway pods Ready"; k get pods; k logs gateway --tail=5; k logs stdio --all-containers --tail=5
fi
initialize() { # url: an MCP initialize from the host answers with serverInfo
  output_has '"serverInfo"' curl -sS -m 10 -X POST "$1" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"node-smoke","version":"1"}}}'
}
check "mcp-rs:latest answers MCP initialize on :3000/mcp (from the host)" \
  eventually 10 initialize "http://$(k get pod mcp -o jsonpath='{.status.podIP}'):3000/mcp"
check "mcp-rs:latest answers MCP initialize through its Service (from a pod)" \
  eventually 10 output_has '"serverInfo"' in_pod client mcp-initialize "http://mcp.$NS.svc.cluster.local:3000/mcp"
check "static gateway image proxies MCP to its upstream by DNS name" \
  eventually 10 initialize "http://$(k get pod gateway -o jsonpath='{.status.podIP}'):8443/mcp"
check "gateway copied in by an init container wraps mcp-rs as a stdio server" \
  eventually 10 initialize "http://$(k get pod stdio -o jsonpath='{.status.podIP}'):8443/mcp"

# ---- where the pods of a simulated namespace go (mode both; in mode real there is no such node)
[[ "$CLUSTER_MODE" != both ]] || "$HACK_DIR/simulated-namespace.sh" "$SIM_NS" 2>/dev/null
kubectl apply -f - >/dev/null <<YAML
$(pod elsewhere elsewhere '["serve"]' "$SIM_NS")
YAML
if [[ "$CLUSTER_MODE" == both ]]; then
  on_simulated_node() {
    local n
    n=$(kubectl -n "$SIM_NS" get pod elsewhere -o jsonpath='{.spec.nodeName}')
    [[ -n "$n" && "$n" != "$NODE_NAME" ]]
  }
  check "mode both: a pod of a namespace marked by hack/simulated-namespace.sh runs on a simulated node" \
    eventually 20 on_simulated_node
else
  check "mode real: a pod of any namespace runs on $NODE_NAME" \
    kubectl -n "$SIM_NS" wait --for=condition=Ready pod/elsewhere --timeout=60s
fi
check "CoreDNS runs on $NODE_NAME" \
  test "$(kubectl -n kube-system get pods -l k8s-app=kube-dns -o jsonpath='{.items[*].spec.nodeName}')" == "$NODE_NAME"

[[ "${MCP_SMOKE_KEEP:-}" == 1 ]] || kubectl delete namespace "$NS" "$SIM_NS" --wait=false >/dev/null
echo "$passed passed, $failed failed"
[[ $failed == 0 ]] || exit 1
