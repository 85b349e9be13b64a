#!/usr/bin/env bash
# On the local cluster (hack/cluster-up.sh) the operator Deployment's pod is a kwok fake and the
# real operator runs as a local process. This points the guide's commands at that process:
#
#   kubectl logs -n mcp-system -l app.kubernetes.io/name=mcp-operator [-f]   -> its log file
#   kubectl port-forward -n mcp-system svc/mcp-operator-metrics 8080:8080    -> its metrics address
#   kubectl logs -l app=my-mcp-server (any other pod: MCP servers, plugins)  -> a one-line note
#
#   hack/attach-operator.sh --log FILE --metrics HOST:PORT [--pid PID]
#   hack/attach-operator.sh --detach
#
# It (re)applies the cluster-scoped kwok resources ClusterLogs/mcp-local-pods and
# ClusterPortForward/mcp-operator, and (re)starts a background process that copies FILE, as it
# grows, into the CRI log format that kwok serves (kwok reads container logs only in that
# format). That process ends with --pid PID's process (give the operator's pid), on the next run,
# on --detach or on hack/cluster-down.sh. Run it again whenever FILE or the address change.
# KUBECONFIG: from the environment, else $(hack/kubeconfig.sh); MCP_CLUSTER_NAME as for
# hack/cluster-up.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=cluster-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"

OPERATOR_NAMESPACE=mcp-system
OPERATOR_CONTAINER=operator # the chart's container (no MCP server or plugin container has it)
METRICS_POD_PORT=8080       # the chart's containerPort "metrics"
CLUSTER_LOGS=mcp-local-pods
CLUSTER_PORT_FORWARD=mcp-operator
PUMP_LOG="$ATTACH_DIR/operator.log"     # CRI-format copy of the operator log
STATIC_LOG="$ATTACH_DIR/simulated-pod.log"

usage() {
  printf 'usage: %s --log FILE --metrics HOST:PORT [--pid PID]\n       %s --detach\n' "$0" "$0" >&2
  exit 2
}

log_file='' metrics='' pid='' detach=false
while (($#)); do
  case "$1" in
    --log) [[ $# -ge 2 ]] || usage; log_file=$2; shift 2 ;;
    --log=*) log_file=${1#*=}; shift ;;
    --metrics) [[ $# -ge 2 ]] || usage; metrics=$2; shift 2 ;;
    --metrics=*) metrics=${1#*=}; shift ;;
    --pid) [[ $# -ge 2 ]] || usage; pid=$2; shift 2 ;;
    --pid=*) pid=${1#*=}; shift ;;
    --detach) detach=true; shift ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done

if [[ -z "${KUBECONFIG:-}" ]]; then
  KUBECONFIG=$("$HACK_DIR/kubeconfig.sh")
  export KUBECONFIG
fi
kubectl_() { "$TOOLS_BIN/kubectl" --request-timeout=10s "$@"; }
[[ -x "$TOOLS_BIN/kubectl" ]] || die "missing $TOOLS_BIN/kubectl; run hack/tools.sh first"

if $detach; then
  stop_log_pump
  kubectl_ delete clusterlogs.kwok.x-k8s.io "$CLUSTER_LOGS" --ignore-not-found >/dev/null 2>&1 || true
  kubectl_ delete clusterportforwards.kwok.x-k8s.io "$CLUSTER_PORT_FORWARD" --ignore-not-found >/dev/null 2>&1 || true
  log "detached: kubectl logs/port-forward no longer reach a local operator"
  exit 0
fi

[[ -n "$log_file" && -n "$metrics" ]] || usage
[[ -z "$pid" || "$pid" =~ ^[1-9][0-9]*$ ]] || die "--pid must be a process id"
[[ -z "$pid" ]] || kill -0 "$pid" 2>/dev/null || die "--pid $pid: no such process"
log_file=$(realpath -m -- "$log_file")
[[ ! -d "$log_file" ]] || die "--log $log_file is a directory"

# HOST:PORT, [v6]:PORT or :PORT; a wildcard listen address is reached through loopback.
if [[ "$metrics" =~ ^\[([0-9A-Fa-f:.]+)\]:([0-9]+)$ || "$metrics" =~ ^([^:]*):([0-9]+)$ ]]; then
  host=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]}
else
  die "--metrics '$metrics' is not HOST:PORT"
fi
((port >= 1 && port <= 65535)) || die "--metrics: bad port $port"
case "$host" in "" | 0.0.0.0 | '*') host=127.0.0.1 ;; :: | 0:0:0:0:0:0:0:0) host=::1 ;; esac

if ! kubectl_ get crd "${KWOK_CRD_NAMES[@]}" >/dev/null 2>&1; then
  kubectl_ get --raw /readyz >/dev/null || die "the cluster of $KUBECONFIG does not answer"
  die "the cluster of $KUBECONFIG lacks kwok's CRDs (${KWOK_CRD_NAMES[*]}): it is no local cluster of hack/cluster-up.sh (re-run that: it re-creates a cluster made without them)"
fi

# --- the CRI-format copy of the operator log --------------------------------------------------
mkdir -p "$ATTACH_DIR"
exec {lock_fd}>"$ATTACH_DIR/.lock" # one run at a time per cluster
flock -w 30 "$lock_fd" || die "another hack/attach-operator.sh holds $ATTACH_DIR/.lock"
stop_log_pump
# A new file rather than a truncated one: a running `kubectl logs -f` sees it replaced and reopens.
: >"$PUMP_LOG.new" && mv -f "$PUMP_LOG.new" "$PUMP_LOG"
[[ -e "$log_file" ]] || { mkdir -p "$(dirname "$log_file")" && : >>"$log_file"; }
# Runs in a session of its own (so that stop_log_pump can end tail and the loop together) with
# no descriptor of the caller: `$(hack/attach-operator.sh ...)` and the e2e harness, which read
# this script's output to its end, must not wait for it. `mcp-log-pump DIR` names it for that.
# tail -F follows FILE across truncation and re-creation (the operator restarted); each line
# gets a CRI prefix "<RFC 3339 time> stdout F " (UTC, microseconds; no fork per line).
# shellcheck disable=SC2016 # the script's own variables
pump='
dir=$1 file=$2 pid=$3
echo "$$" >"$dir/pump.pid"
export LC_ALL=C # a "." in EPOCHREALTIME
args=(-n +1 -F)
[[ -z "$pid" ]] || args+=("--pid=$pid")
export TZ=UTC
tail "${args[@]}" -- "$file" 2>/dev/null | while IFS= read -r line || [[ -n "$line" ]]; do
  t=$EPOCHREALTIME
  printf "%(%Y-%m-%dT%H:%M:%S)T.%sZ stdout F %s\n" "${t%.*}" "${t#*.}" "$line"
done >>"$dir/operator.log"
'
setsid bash -c "$pump" mcp-log-pump "$ATTACH_DIR" "$log_file" "$pid" </dev/null >/dev/null 2>&1 {lock_fd}>&- &
# Wait (up to 5s) until it runs and has copied what FILE holds now.
want=$(wc -l <"$log_file")
for _ in $(seq 1 50); do
  [[ -s "$ATTACH_DIR/pump.pid" ]] && (($(wc -l <"$PUMP_LOG") >= want)) && break
  sleep 0.1
done
[[ -s "$ATTACH_DIR/pump.pid" ]] || die "the log copier did not start"

if [[ ! -s "$STATIC_LOG" ]]; then
  printf '%s stdout F kwok: simulated pod (no container runs on the local cluster; the operator runs as a local process)\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)" >"$STATIC_LOG"
fi

# --- the kwok resources ------------------------------------------------------------------------
# kwok v0.8.0 selects pods by namespace and name only (no label selector), and takes the first
# matching ClusterLogs in no defined order. So one ClusterLogs for every pod: the container named
# "operator" (only the chart's Deployment has one) shows the operator log, any other container
# (MCP server "server", plugins "plugin-*", anything else) the static note.
kubectl_ apply -f - >/dev/null <<YAML
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: $CLUSTER_LOGS
  labels: {app.kubernetes.io/managed-by: hack-attach-operator}
spec:
  logs:
    - containers: [$OPERATOR_CONTAINER]
      logsFile: '$PUMP_LOG'
      follow: true
    - logsFile: '$STATIC_LOG'
      previousLogsFile: '$STATIC_LOG'
      follow: true
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterPortForward
metadata:
  name: $CLUSTER_PORT_FORWARD
  labels: {app.kubernetes.io/managed-by: hack-attach-operator}
spec:
  selector:
    matchNamespaces: [$OPERATOR_NAMESPACE]
  forwards:
    - ports: [$METRICS_POD_PORT]
      target:
        address: '$host'
        port: $port
YAML

log "attached: operator pods in $OPERATOR_NAMESPACE log $log_file (kwok copy: $PUMP_LOG) and forward port $METRICS_POD_PORT to $host:$port"
