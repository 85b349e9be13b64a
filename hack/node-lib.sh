# Shared by hack/node-up.sh, node-down.sh, images.sh, node-smoke.sh and real-namespace.sh: the
# real node (containerd + runc + CNI bridge, kubelet, kube-proxy, kube-router's firewall,
# CoreDNS) that hack/cluster-up.sh adds to a local cluster in MCP_CLUSTER_MODE=real|both.
# Everything it keeps is under $NODE_DIR (in the tools cache, never in the checkout).
# shellcheck shell=bash
# shellcheck source-path=SCRIPTDIR source=cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

# shellcheck disable=SC2034 # used by the scripts that source this file
NODE_NAME=real-0
NODE_LOG_DIR="$NODE_DIR/logs"
NODE_PID_DIR="$NODE_DIR/pids"
CONTAINERD_SOCK="$NODE_DIR/containerd/containerd.sock"
NODE_BRIDGE=mcp0
# The real node's label (modes real and both); in mode both the simulated nodes carry the same key
# with the value `simulated` and its taint, so that every pod runs on the real node unless its
# namespace was marked by hack/simulated-namespace.sh (selector and toleration of the simulated
# nodes).
# shellcheck disable=SC2034
NODE_ROLE_KEY=mcp.n-takatsu.dev/node
# shellcheck disable=SC2034
NODE_ROLE_VALUE=real
# shellcheck disable=SC2034
SIMULATED_ROLE_VALUE=simulated
# shellcheck disable=SC2034
NODE_HOSTS_LINE="127.0.0.1 $NODE_NAME # mcp-operator real node"
# shellcheck disable=SC2034
NODE_GUARD_TABLE=mcp_node_guard
# shellcheck disable=SC2034
NODE_RULE_COMMENT=mcp-operator-node
# The images every node needs; containerd's sandbox_image is exactly PAUSE_IMAGE (never pulled).
# shellcheck disable=SC2034
PAUSE_IMAGE=registry.k8s.io/pause:3.10
# shellcheck disable=SC2034
COREDNS_IMAGE=mcp-coredns:${COREDNS_VERSION#v}
# One real node per machine: it owns the bridge, the nft table, iptables rules and ports.
NODE_OWNER_FILE=/run/mcp-operator-node.owner
NODE_LOCK_FILE=/run/mcp-operator-node.lock
# Ports the node side listens on (kubelet, its healthz, kube-proxy healthz/metrics, kube-router health).
# shellcheck disable=SC2034
NODE_PORTS=(10250 10248 10256 10249 20244)
# Host paths the kubelet, containerd 1.6, libcni and mount(8) write outside their directories;
# hack/node-down.sh removes those that did not exist before hack/node-up.sh.
# shellcheck disable=SC2034
NODE_HOST_PATHS=(/var/lib/kubelet /var/lib/cni /var/log/containers /var/log/pods /run/containerd /run/netns /run/mount)

node_kubectl() { "$TOOLS_BIN/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" --request-timeout=10s "$@"; }
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
containerd_up() { [[ -S "$CONTAINERD_SOCK" ]] && ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# The pid of a daemon started by start_daemon, if it still runs the binary it was started with.
daemon_pid() { # name
  local pid exe
  [[ -f "$NODE_PID_DIR/$1.pid" && -f "$NODE_PID_DIR/$1.exe" ]] || return 1
  pid=$(<"$NODE_PID_DIR/$1.pid")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ "${exe% (deleted)}" == "$(<"$NODE_PID_DIR/$1.exe")" ]] || return 1
  echo "$pid"
}

# In a session of its own (a Ctrl-C of the caller does not reach it), output appended to its
# log, and without the caller's other open files: a daemon must not hold the callers' flocks.
start_daemon() { # name binary args...
  local name=$1 bin
  bin=$(readlink -f "$(command -v "$2")") || die "$2 not found"
  shift 2
  mkdir -p "$NODE_PID_DIR" "$NODE_LOG_DIR"
  printf '\n==== %s: %s %s\n' "$(date -Is)" "$bin" "$*" >>"$NODE_LOG_DIR/$name.log"
  (
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    exec setsid "$bin" "$@" >>"$NODE_LOG_DIR/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$NODE_PID_DIR/$name.pid"
  echo "$bin" >"$NODE_PID_DIR/$name.exe"
}

# SIGTERM, then SIGKILL after a grace period; only the process recorded for this node.
stop_daemon() { # name [grace-seconds]
  local pid i
  if pid=$(daemon_pid "$1"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < ${2:-10} * 10; i++)); do
      running "$pid" || break
      sleep 0.1
    done
    if running "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      while running "$pid"; do sleep 0.1; done
    fi
  fi
  rm -f "$NODE_PID_DIR/$1.pid" "$NODE_PID_DIR/$1.exe"
}

# The last lines of the node's component logs (on failure).
show_node_logs() { # ["component component..."]
  local names f
  read -ra names <<<"${1:-containerd kubelet kube-proxy kube-router}"
  for f in "${names[@]}"; do
    [[ -s "$NODE_LOG_DIR/$f.log" ]] || continue
    printf '\n==> %s <==\n' "$NODE_LOG_DIR/$f.log" >&2
    tail -n 20 "$NODE_LOG_DIR/$f.log" >&2
  done
}

# Until a command succeeds, at most SECONDS; then the named logs and a clear error.
wait_until() { # seconds what "component..." cmd args...
  local secs=$1 what=$2 logs=$3 deadline
  shift 3
  deadline=$(($(now_ms) + secs * 1000))
  until "$@" >/dev/null 2>&1; do
    if (($(now_ms) > deadline)); then
      show_node_logs "$logs"
      die "$what: not within ${secs}s (logs: $NODE_LOG_DIR)"
    fi
    sleep 0.2
  done
}

# Unmounts everything mounted at or below a directory, deepest first.
unmount_under() { # dir
  local m
  awk -v d="${1%/}/" 'index($5 "/", d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}

# One real node per machine, and one hack/node-*.sh at a time: a machine-wide lock, and an owner
# file naming the cluster whose node holds the host state.
# hack/node-down.sh removes the lock file: whoever waited on the removed one locks again.
lock_node() {
  local i
  for ((i = 0; i < 5; i++)); do
    exec {NODE_LOCK_FD}>>"$NODE_LOCK_FILE"
    if ! flock -n "$NODE_LOCK_FD"; then
      log "real node: waiting for another hack/node-*.sh to finish"
      flock -w 300 "$NODE_LOCK_FD" || die "real node: $NODE_LOCK_FILE is still locked by another hack/node-*.sh"
    fi
    [[ "$(stat -Lc %i "/proc/$$/fd/$NODE_LOCK_FD")" != "$(stat -c %i "$NODE_LOCK_FILE" 2>/dev/null)" ]] || return 0
    exec {NODE_LOCK_FD}>&-
  done
  die "real node: could not lock $NODE_LOCK_FILE"
}
node_owner() { [[ -s "$NODE_OWNER_FILE" ]] && cut -f1 "$NODE_OWNER_FILE"; }
# Dies when another cluster's real node holds this machine.
require_node_free() {
  local owner
  owner=$(node_owner) || owner=
  [[ -z "$owner" || "$owner" == "$CLUSTER_NAME" ]] ||
    die "the real node of cluster '$owner' owns this machine's node networking (bridge $NODE_BRIDGE, nft table $NODE_GUARD_TABLE, iptables rules, ports ${NODE_PORTS[*]}); only one real node can run at a time. Stop it first: MCP_CLUSTER_NAME=$owner hack/cluster-down.sh (or MCP_CLUSTER_NAME=$owner hack/node-down.sh to keep its control plane)"
}
claim_node() {
  require_node_free
  printf '%s\t%s\n' "$CLUSTER_NAME" "$NODE_DIR" >"$NODE_OWNER_FILE"
}
release_node() {
  [[ "$(node_owner)" != "$CLUSTER_NAME" ]] || rm -f "$NODE_OWNER_FILE" "$NODE_LOCK_FILE"
}

# Root, the binaries of hack/tools.sh node and the packages of hack/node-packages.sh.
require_node_prerequisites() {
  local b missing=()
  [[ $(id -u) == 0 ]] || die "the real node needs root (containerd, kubelet, netfilter)"
  for b in kubelet kube-proxy kube-router coredns kubectl; do [[ -x "$TOOLS_BIN/$b" ]] || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] || die "missing in $TOOLS_BIN: ${missing[*]}; run hack/tools.sh node"
  for b in containerd containerd-shim-runc-v2 ctr runc dockerd nft iptables ipset conntrack ip ss openssl gcc node npm; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  cni_bin_dir >/dev/null || missing+=(cni-plugins)
  [[ ${#missing[@]} -eq 0 ]] || die "missing on this machine: ${missing[*]}; run hack/node-packages.sh"
}

# The CNI plugin directory of the machine (Debian/Ubuntu package, or the upstream tarball's).
cni_bin_dir() {
  local d
  for d in /usr/lib/cni /opt/cni/bin; do
    [[ -x "$d/bridge" && -x "$d/host-local" && -x "$d/loopback" ]] && { echo "$d"; return; }
  done
  return 1
}

# What the node changes on the host, recorded once before it does; node_teardown restores it.
record_host_state() {
  local h="$NODE_DIR/host" p
  [[ ! -f "$h/recorded" ]] || return 0
  mkdir -p "$h"
  for p in "${NODE_HOST_PATHS[@]}"; do [[ ! -e "$p" ]] || echo "$p"; done >"$h/paths"
  sysctl -n net.ipv4.ip_forward >"$h/ip_forward"
  sysctl -n net.bridge.bridge-nf-call-iptables >"$h/bridge-nf-call-iptables" 2>/dev/null || : >"$h/bridge-nf-call-iptables"
  nft list tables >"$h/nft-tables"
  touch "$h/recorded"
}

# The processes of the node's pods (kubepods cgroups) and the shims of its containerd.
node_container_pids() {
  local f p
  {
    for f in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods; do
      [[ ! -d "$f" ]] || find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null
    done
    for p in /proc/[0-9]*; do
      [[ "$(readlink "$p/exe" 2>/dev/null)" == */containerd-shim-runc-v2 ]] || continue
      [[ "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" != *" -address $CONTAINERD_SOCK "* ]] || echo "${p#/proc/}"
    done
  } | sort -un
}

# Rules in the built-in chains of iptables(-nft) that jump to the kubelet's and kube-router's
# chains (KUBE-*) or carry this node's comment, then those chains, then kube-router's ipsets.
# (kube-router v2.1.0's --cleanup-config leaves its chains in place and then panics.)
iptables_cleanup() {
  local ipt t chain n chains
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle raw; do
      "$ipt" -t "$t" -S >/dev/null 2>&1 || continue
      for chain in $("$ipt" -t "$t" -S | awk '$1 == "-P" {print $2}'); do
        for n in $("$ipt" -t "$t" -L "$chain" -n --line-numbers |
          awk -v c="/* $NODE_RULE_COMMENT */" 'NR > 2 && ($2 ~ /^KUBE-/ || index($0, c)) {print $1}' | sort -rn); do
          "$ipt" -t "$t" -D "$chain" "$n"
        done
      done
      chains=$("$ipt" -t "$t" -S | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}')
      for chain in $chains; do "$ipt" -t "$t" -F "$chain"; done
      for chain in $chains; do "$ipt" -t "$t" -X "$chain"; done
    done
  done
  if command -v ipset >/dev/null; then
    for n in $(ipset list -n 2>/dev/null | grep -E '^(inet6:)?(KUBE-|kube-router-)' || true); do ipset destroy "$n"; done
  fi
}

# Stops everything the node runs and undoes what it did to the host, in the order that lets
# each step succeed; fine to run on a half-started or already stopped node.
node_teardown() {
  local h="$NODE_DIR/host" id pids p i
  stop_daemon kube-router 5
  stop_daemon kube-proxy 5
  stop_daemon kubelet 10
  if containerd_up; then # the kubelet is gone: nothing restarts what is killed now
    for id in $(ctr_ tasks ls -q); do ctr_ tasks kill --all --signal SIGKILL "$id" >/dev/null 2>&1 || true; done
    for ((i = 0; i < 50; i++)); do
      [[ -z "$(ctr_ tasks ls 2>/dev/null | awk 'NR > 1 && $3 != "STOPPED"')" ]] && break
      sleep 0.1
    done
    for id in $(ctr_ tasks ls -q); do ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ containers ls -q); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop_daemon containerd 10
  for ((i = 0; i < 50; i++)); do
    pids=$(node_container_pids)
    [[ -n "$pids" ]] || break
    # shellcheck disable=SC2086 # one pid per word
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  [[ -z "$(node_container_pids)" ]] || log "warning: processes of the node's pods survived: $(node_container_pids | tr '\n' ' ')"
  unmount_under "$NODE_DIR"
  for p in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods; do
    [[ ! -d "$p" ]] || find "$p" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  nft delete table inet "$NODE_GUARD_TABLE" 2>/dev/null || true
  nft delete table ip kube-proxy 2>/dev/null || true
  nft delete table ip6 kube-proxy 2>/dev/null || true
  iptables_cleanup
  if grep -qxF "$NODE_HOSTS_LINE" /etc/hosts; then
    # Rewritten in place: /etc/hosts may be a mount point that a rename cannot replace.
    p=$(grep -vxF "$NODE_HOSTS_LINE" /etc/hosts || true)
    printf '%s\n' "$p" >/etc/hosts
  fi
  if [[ -f "$h/recorded" ]]; then
    sysctl -qw "net.ipv4.ip_forward=$(<"$h/ip_forward")"
    [[ ! -s "$h/bridge-nf-call-iptables" ]] ||
      sysctl -qw "net.bridge.bridge-nf-call-iptables=$(<"$h/bridge-nf-call-iptables")"
    # Tables iptables-nft made for the kubelet's and kube-router's rules, now empty.
    nft list tables | while read -r _ fam t; do
      grep -qxF "table $fam $t" "$h/nft-tables" && continue
      p=$(nft list table "$fam" "$t")
      grep -qvE '^\s*(table .*\{|chain .*\{|type .* policy accept;|\}|)$' <<<"$p" || nft delete table "$fam" "$t"
    done
    for p in "${NODE_HOST_PATHS[@]}"; do
      if [[ ! -e "$p" ]] || grep -qxF "$p" "$h/paths"; then continue; fi
      case $p in
        /run/*) find "$p" -depth -type d -empty -delete 2>/dev/null || true ;; # only empty directories
        *) unmount_under "$p"; rm -rf "$p" ;;
      esac
    done
  fi
  rm -rf "$NODE_DIR"/{containerd,cni,kubelet,kube-proxy,pki,pids,host,mode,fingerprint}
}
