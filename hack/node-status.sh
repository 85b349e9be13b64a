#!/usr/bin/env bash
# The real node of the local cluster at a glance: which cluster owns this machine's node, its
# processes (pid, CPU time, RSS), its Node object, the pods on it and its images.
#
#   hack/node-status.sh             the overview
#   hack/node-status.sh --idle 60   CPU (% of one core) and RSS of the node side over 60 s, by
#                                   component: kubelet, containerd, shims, kube-proxy,
#                                   kube-router, CoreDNS, pause, other pod processes
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node-lib.sh"

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'; } # utime + stime
rss_kib() { local r; r=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null) || true; echo "${r:-0}"; }
measure_idle() { # seconds
  local secs=$1 pid c g hz
  declare -A group t0 cpu rss
  for c in kubelet containerd kube-proxy kube-router; do
    if pid=$(daemon_pid "$c"); then group[$pid]=$c; fi
  done
  for pid in $(node_container_pids); do
    case $(cat "/proc/$pid/comm" 2>/dev/null) in
      containerd-shim*) group[$pid]=shims ;;
      coredns) group[$pid]=coredns ;;
      pause) group[$pid]=pause ;;
      *) group[$pid]="pod processes" ;;
    esac
  done
  for pid in "${!group[@]}"; do t0[$pid]=$(cpu_ticks "$pid"); done
  sleep "$secs"
  for pid in "${!group[@]}"; do
    g=${group[$pid]}
    c=$(cpu_ticks "$pid") || c=
    cpu[$g]=$((${cpu[$g]:-0} + ${c:-${t0[$pid]}} - ${t0[$pid]:-0}))
    rss[$g]=$((${rss[$g]:-0} + $(rss_kib "$pid")))
  done
  hz=$(getconf CLK_TCK)
  printf '%-14s %14s %9s\n' component "cpu % of 1 core" "RSS MiB"
  for g in kubelet containerd shims kube-proxy kube-router coredns pause "pod processes"; do
    [[ -n "${cpu[$g]:-}" ]] || continue
    awk -v g="$g" -v t="${cpu[$g]}" -v hz="$hz" -v s="$secs" -v r="${rss[$g]}" \
      'BEGIN {printf "%-14s %14.2f %9.1f\n", g, 100 * t / hz / s, r / 1024}'
  done
}

if [[ "${1:-}" == --idle ]]; then
  node_state_exists || die "cluster '$CLUSTER_NAME' has no real node"
  [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "usage: hack/node-status.sh --idle SECONDS"
  measure_idle "$2"
  exit 0
fi

owner=$(node_owner) || owner=
echo "real node owner on this machine: ${owner:-none}"
if ! node_state_exists; then
  echo "cluster '$CLUSTER_NAME': no real node (MCP_CLUSTER_MODE=real|both hack/cluster-up.sh starts one)"
  exit 0
fi
echo "cluster '$CLUSTER_NAME': mode $(cat "$NODE_DIR/mode" 2>/dev/null || echo "? (not fully up)"), state $NODE_DIR"
printf '%-12s %8s %10s %9s\n' process pid cpu-time rss-MiB
for c in containerd kubelet kube-proxy kube-router; do
  if pid=$(daemon_pid "$c"); then
    read -r t rss < <(ps -o times=,rss= -p "$pid")
    printf '%-12s %8s %9ss %9s\n' "$c" "$pid" "$t" "$((rss / 1024))"
  else
    printf '%-12s %8s\n' "$c" "DOWN (log: $NODE_LOG_DIR/$c.log)"
  fi
done
echo "container processes (shims and pods): $(node_container_pids | wc -l)"
echo
node_kubectl get node "$NODE_NAME" -o wide 2>/dev/null || echo "node $NODE_NAME: not registered"
echo
node_kubectl get pods -A -o wide --field-selector "spec.nodeName=$NODE_NAME" 2>/dev/null || true
if containerd_up; then
  echo
  ctr_ images ls -q | grep -v '^sha256:' || true
fi
