#!/usr/bin/env bash
# Joins one real node, "real-0", to the local cluster (hack/cluster-up.sh runs this in
# MCP_CLUSTER_MODE=real|both, after the control plane is ready): Debian's containerd + runc with
# the CNI bridge plugin (bridge mcp0, pods in 10.244.0.0/24), kubelet and kube-proxy (nftables)
# from hack/tools.sh node, kube-router's firewall for NetworkPolicy, and CoreDNS for *.svc names.
# Images come from hack/images.sh (nothing is pulled). As root; state, logs and pids in
# $TOOLS_DIR/node-$MCP_CLUSTER_NAME. Idempotent: a healthy node is left as it is (a fast no-op);
# anything else (e.g. after a reboot) is torn down and started again. hack/node-down.sh undoes it.
#
# Nothing a pod or Service address sends leaves the machine: an nft table drops pod, Service and
# simulated-pod traffic towards any interface but the bridge, the bridge does no masquerading,
# pods resolve names only through CoreDNS, which has no upstream, and the API server's and the
# kubelet's ports answer only on lo and the bridge.
#
# In mode both the node is tainted mcp.n-takatsu.dev/node=real:NoSchedule: only pods of
# namespaces marked by hack/real-namespace.sh (and CoreDNS) run on it. One real node per machine.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

[[ "$CLUSTER_MODE" == real || "$CLUSTER_MODE" == both ]] ||
  die "hack/node-up.sh is for MCP_CLUSTER_MODE=real or both (is: $CLUSTER_MODE)"
require_node_prerequisites
CNI_BIN_DIR=$(cni_bin_dir)
TIMEOUT="${MCP_NODE_TIMEOUT:-90}"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "MCP_NODE_TIMEOUT must be a positive number of seconds"
((${#CONTAINERD_SOCK} < 100)) || die "$CONTAINERD_SOCK is too long for a unix socket; set MCP_TOOLS_DIR to a shorter path"
[[ -s "$CLUSTER_KUBECONFIG" && -f "$CLUSTER_DIR/pki/ca.key" ]] ||
  die "cluster '$CLUSTER_NAME' does not exist; start it with MCP_CLUSTER_MODE=$CLUSTER_MODE hack/cluster-up.sh"
node_kubectl get --raw /readyz >/dev/null 2>&1 || die "the API server of cluster '$CLUSTER_NAME' does not answer"

START=$(now_ms)
step() { log "real node: $* (+$(($(now_ms) - START)) ms)"; }
# What the running node was made from: a change to any of it (or another cluster CA) restarts it.
config_fingerprint() {
  { echo "$CLUSTER_MODE"; cat "$CLUSTER_DIR/pki/ca.crt" "$HACK_DIR"/{node-up.sh,node-lib.sh,cluster-lib.sh,versions.env} \
    "$HACK_DIR/node/coredns.yaml"; } | sha256sum | cut -d' ' -f1
}
# Ready as reported since a time (epoch seconds; 0: ever): after a restart the API still shows
# what the previous kubelet reported until the new one speaks.
epoch() { date -d "$1" +%s 2>/dev/null || echo 0; }
node_ready() { # since
  local status heartbeat
  read -r status heartbeat < <(node_kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  [[ "$status" == True ]] && (($(epoch "$heartbeat") >= $1))
}
coredns_ready() { # since: a CoreDNS container started since then is ready
  local ready started
  while read -r ready started; do
    [[ "$ready" == true ]] && (($(epoch "$started") >= $1)) && return 0
  done < <(node_kubectl -n kube-system get pods -l k8s-app=kube-dns \
    -o jsonpath='{range .items[*]}{.status.containerStatuses[0].ready} {.status.containerStatuses[0].state.running.startedAt}{"\n"}{end}')
  return 1
}
healthy() {
  [[ "$(cat "$NODE_DIR/fingerprint" 2>/dev/null)" == "$(config_fingerprint)" ]] || return 1
  local c
  for c in containerd kubelet kube-proxy kube-router; do daemon_pid "$c" >/dev/null || return 1; done
  nft list table inet "$NODE_GUARD_TABLE" >/dev/null 2>&1 && node_ready 0 && coredns_ready 0
}

lock_node
claim_node
if healthy; then
  log "real node '$NODE_NAME' of cluster '$CLUSTER_NAME' ($CLUSTER_MODE) is already running (checked in $(($(now_ms) - START)) ms)"
  exit 0
fi
if node_state_exists; then
  step "not running as configured: tearing the old node down first"
  node_teardown
fi

# Nothing else may own what the node needs.
for p in kubelet kube-proxy kube-router; do
  ! pgrep -x "$p" >/dev/null || die "a $p process not started by hack/node-up.sh runs on this machine ($(pgrep -x "$p" | head -3 | tr '\n' ' ')); stop it first"
done
busy=$(ss -Hltn | awk '{print $4}' | grep -E ":($(IFS='|'; echo "${NODE_PORTS[*]}"))\$" || true)
[[ -z "$busy" ]] || die "ports the node needs are in use: $(echo "$busy" | tr '\n' ' ')"
! ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || die "interface $NODE_BRIDGE exists but is not this node's; remove it (ip link del $NODE_BRIDGE)"

mkdir -p "$NODE_DIR"/{logs,pids,host,containerd,cni/net.d,cni/ipam,kubelet,kube-proxy,pki}
record_host_state

step "network guard and bridge $NODE_BRIDGE ($NODE_IP/${NODE_POD_SUBNET#*/})"
API_PORT=$(node_kubectl config view -o jsonpath='{.clusters[0].cluster.server}' | sed 's|.*:||; s|/.*||')
[[ "$API_PORT" =~ ^[0-9]+$ ]] || die "cannot read the API server port from $CLUSTER_KUBECONFIG"
ip link add "$NODE_BRIDGE" type bridge
ip addr add "$NODE_IP/${NODE_POD_SUBNET#*/}" dev "$NODE_BRIDGE"
ip link set "$NODE_BRIDGE" up
nft -f - <<NFT
table inet $NODE_GUARD_TABLE {
  # Everything the node owns: Service, pod and kwok's simulated pod addresses.
  set cluster_ranges {
    type ipv4_addr; flags interval
    elements = { $SERVICE_CIDR, $POD_CIDR, $KWOK_POD_CIDR }
  }
  chain forward {
    type filter hook forward priority -5; policy accept;
    # Pods talk to each other (bridged or through a Service) and to this host, never beyond it;
    # nothing from elsewhere reaches them, nor any other address of the cluster.
    iifname "$NODE_BRIDGE" oifname "$NODE_BRIDGE" accept
    iifname "$NODE_BRIDGE" counter drop
    oifname "$NODE_BRIDGE" counter drop
    ip daddr @cluster_ranges counter drop
  }
  # postrouting, not output: in the output hook a Service address still has the route it had
  # before kube-proxy's DNAT (the default one), so a check there would drop host -> Service.
  chain postrouting {
    type filter hook postrouting priority 90; policy accept;
    oifname { "lo", "$NODE_BRIDGE" } accept
    ip daddr @cluster_ranges counter drop
    ip saddr @cluster_ranges counter drop
    ct original ip daddr @cluster_ranges counter drop
  }
  # The API server listens on all addresses (pods reach it on $NODE_IP), the kubelet's and
  # kube-router's ports likewise: answer only on lo and the bridge.
  chain input {
    type filter hook input priority -5; policy accept;
    iifname { "lo", "$NODE_BRIDGE" } accept
    tcp dport { $API_PORT, $(IFS=,; echo "${NODE_PORTS[*]}") } counter drop
  }
}
NFT
# A FORWARD policy of DROP (Docker sets one) would cut pod <-> pod through the bridge.
iptables -I FORWARD 1 -i "$NODE_BRIDGE" -o "$NODE_BRIDGE" -m comment --comment "$NODE_RULE_COMMENT" -j ACCEPT
# Pod -> Service -> pod on the same bridge needs the bridged replies to pass conntrack.
[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null ||
  die "br_netfilter is not available (bridged pod traffic would bypass kube-proxy's NAT)"
sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1

step "containerd ($(containerd --version | awk '{print $3}'))"
cat >"$NODE_DIR/containerd/config.toml" <<TOML
# hack/node-up.sh: a containerd of its own (root, state, socket under $NODE_DIR); it never
# touches /var/lib/containerd or another containerd's socket.
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # Never pulled: hack/images.sh imports a static pause under exactly this name.
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  disable_apparmor = true
  # Some machines withhold CAP_SYS_RESOURCE even from root; lowering a container's
  # oom_score_adj (-998 for sandboxes) then fails in runc ("can't get final child's PID from
  # pipe: EOF"). Keep every container at containerd's own score instead.
  restrict_oom_score_adj = true
  # Pod network namespaces under state/, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$NODE_DIR/cni/net.d"
    max_conf_num = 1
TOML
# No masquerading (ipMasq false): a pod's address never appears beyond the bridge.
cat >"$NODE_DIR/cni/net.d/10-mcp-node.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "mcp-node",
  "plugins": [{
    "type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
      "ranges": [[{"subnet": "$NODE_POD_SUBNET", "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "0.0.0.0/0"}]
    }
  }]
}
JSON
start_daemon containerd containerd --config "$NODE_DIR/containerd/config.toml"
wait_until 20 "containerd answering on $CONTAINERD_SOCK" containerd containerd_up

step "images (hack/images.sh --node)"
"$HACK_DIR/images.sh" --node

step "identities and kubeconfigs"
server=$(node_kubectl config view -o jsonpath='{.clusters[0].cluster.server}')
# A client certificate signed by the cluster's CA, and a kubeconfig with it embedded.
client_kubeconfig() { # name CN [O]
  local k="$NODE_DIR/pki/$1" subj="/CN=$2"
  [[ -z "${3:-}" ]] || subj="/O=$3/CN=$2"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subj" \
    -keyout "$k.key" -out "$k.csr" 2>/dev/null
  openssl x509 -req -in "$k.csr" -CA "$CLUSTER_DIR/pki/ca.crt" -CAkey "$CLUSTER_DIR/pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 12)" -days 365 -out "$k.crt" 2>/dev/null
  cat >"$k.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster: {server: '$server', certificate-authority-data: $(base64 -w0 "$CLUSTER_DIR/pki/ca.crt")}
users:
- name: $1
  user: {client-certificate-data: $(base64 -w0 "$k.crt"), client-key-data: $(base64 -w0 "$k.key")}
contexts:
- name: default
  context: {cluster: $CLUSTER_NAME, user: $1}
current-context: default
YAML
  chmod 600 "$k.key" "$k.kubeconfig"
}
client_kubeconfig kubelet "system:node:$NODE_NAME" system:nodes
client_kubeconfig kube-proxy system:kube-proxy
# The API server dials a kubelet by its Hostname address first (kwok's nodes rely on that).
grep -qxF "$NODE_HOSTS_LINE" /etc/hosts || echo "$NODE_HOSTS_LINE" >>/etc/hosts

step "kubelet"
printf 'options ndots:1\n' >"$NODE_DIR/kubelet/resolv.conf" # no nameserver: pods never get the host's
cat >"$NODE_DIR/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The API server reaches it as $NODE_NAME (/etc/hosts: 127.0.0.1) with its admin client
# certificate (--kubelet-client-certificate, set by hack/cluster-up.sh); nothing else may.
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CLUSTER_DIR/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
# Kubelet >= 1.35 refuses cgroup v1 hosts unless told.
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: cluster.local
resolvConf: $NODE_DIR/kubelet/resolv.conf
podLogsDir: $NODE_DIR/kubelet/pod-logs
volumePluginDir: $NODE_DIR/kubelet/volume-plugins
serializeImagePulls: false
# Imported images cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
YAML
mkdir -p "$NODE_DIR/kubelet/root" "$NODE_DIR/kubelet/pod-logs"
t_kubelet=$(now_ms)
since=$((t_kubelet / 1000))
start_daemon kubelet "$TOOLS_BIN/kubelet" --config="$NODE_DIR/kubelet/config.yaml" \
  --kubeconfig="$NODE_DIR/pki/kubelet.kubeconfig" --root-dir="$NODE_DIR/kubelet/root" \
  --cert-dir="$NODE_DIR/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
  --node-labels="$NODE_ROLE_KEY=$NODE_ROLE_VALUE" --v=1
wait_until "$TIMEOUT" "node $NODE_NAME Ready" "kubelet containerd" node_ready "$since"
step "node $NODE_NAME Ready $(($(now_ms) - t_kubelet)) ms after the kubelet started"

step "kube-proxy (nftables) and kube-router (NetworkPolicy)"
cat >"$NODE_DIR/kube-proxy/config.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE_DIR/pki/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: nftables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts on the node's address, the bridge's, only.
nodePortAddresses: [primary]
# 0: leave the machine's conntrack limits and timeouts alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
start_daemon kube-proxy "$TOOLS_BIN/kube-proxy" --config="$NODE_DIR/kube-proxy/config.yaml" --v=1
start_daemon kube-router "$TOOLS_BIN/kube-router" --run-firewall=true --run-router=false \
  --run-service-proxy=false --enable-cni=false --enable-ipv6=false --hostname-override="$NODE_NAME" \
  --kubeconfig="$CLUSTER_KUBECONFIG" --service-cluster-ip-range="$SERVICE_CIDR" \
  --health-port=20244 --metrics-port=0 --iptables-sync-period=1m --v=1
wait_until 30 "kube-proxy healthy" kube-proxy curl -fsS -m 2 http://127.0.0.1:10256/healthz
wait_until 30 "kube-router healthy" kube-router curl -fsS -m 2 http://127.0.0.1:20244/healthz

step "CoreDNS at $DNS_SERVICE_IP"
sed -e "s|@NODE_ROLE_KEY@|$NODE_ROLE_KEY|g; s|@NODE_ROLE_VALUE@|$NODE_ROLE_VALUE|g" \
  -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g; s|@DNS_SERVICE_IP@|$DNS_SERVICE_IP|g" \
  "$HACK_DIR/node/coredns.yaml" | node_kubectl apply -f - >/dev/null
wait_until "$TIMEOUT" "CoreDNS ready" kubelet coredns_ready "$since"

echo "$CLUSTER_MODE" >"$NODE_DIR/mode"
config_fingerprint >"$NODE_DIR/fingerprint"
log "real node '$NODE_NAME' ready in $(($(now_ms) - START)) ms ($CLUSTER_MODE mode; logs: $NODE_LOG_DIR)"
[[ "$CLUSTER_MODE" != both ]] ||
  log "mode both: pods run on $NODE_NAME except in namespaces marked by hack/simulated-namespace.sh NAMESPACE"
