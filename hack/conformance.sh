#!/usr/bin/env bash
# The MCP conformance suite (@modelcontextprotocol/conformance, npm) against
# @modelcontextprotocol/server-everything three ways, on loopback:
#   direct        server-everything over Streamable HTTP
#   gateway       the same server behind `mcp-gateway --upstream` (policy enabled: false)
#   stdio-bridge  server-everything over stdio behind `mcp-gateway --stdio`
# Every server scenario the suite has (`--suite all`) runs in each mode. Prints a markdown table
# scenario x mode and exits non-zero when a scenario that passes directly fails through the gateway
# or the bridge (or when nothing passes directly, which would make the comparison empty).
#
# Environment:
#   MCP_GATEWAY_BIN   the gateway binary (default: cargo build --release -p mcp-gateway, then
#                     target/release/mcp-gateway)
#   CONFORMANCE_OUT   keep the suite's result directories here (default: a temporary directory,
#                     removed at exit)
#   CONFORMANCE_JSON  also write the per-scenario results as JSON to this file
# Dependencies come from hack/gateway-test-deps.sh (installed when missing; failure is fatal).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '\033[1;34m[conformance]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[conformance] error:\033[0m %s\n' "$*" >&2; exit 1; }
START=$SECONDS

for tool in node python3 curl; do command -v "$tool" >/dev/null || die "$tool is required"; done

# --- dependencies
DEPS="$(bash "$ROOT/hack/gateway-test-deps.sh")" || die "hack/gateway-test-deps.sh failed"
dep() { sed -n "s/^$1=//p" <<<"$DEPS"; }
SERVER_EVERYTHING="$(dep SERVER_EVERYTHING)"
CONFORMANCE="$(dep CONFORMANCE)"
[[ -f $SERVER_EVERYTHING && -f $CONFORMANCE ]] || die "dependencies missing after install"

if [[ -n ${MCP_GATEWAY_BIN:-} ]]; then
  GATEWAY="$MCP_GATEWAY_BIN"
else
  log "cargo build --release -p mcp-gateway"
  (cd "$ROOT" && cargo build --release -q -p mcp-gateway) || die "build failed"
  GATEWAY="${CARGO_TARGET_DIR:-$ROOT/target}/release/mcp-gateway"
fi
[[ -x $GATEWAY ]] || die "no gateway binary at $GATEWAY"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mcp-conformance.XXXXXX")"
OUT="${CONFORMANCE_OUT:-$WORK/results}"
mkdir -p "$OUT"
PIDS=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The suite's CLI imports fs.globSync (Node 22+) for its tier-check command only. On Node 20 a
# loader hook gives the suite an `fs` that also exports a globSync that throws; the server
# scenarios never call it.
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
CONF_NODE=(node)
if ((NODE_MAJOR < 22)); then
  cat >"$WORK/fs-globsync-shim.mjs" <<'EOF'
import { register } from 'node:module';
const shim = "import fs from 'node:fs'; export * from 'node:fs'; export default fs;" +
  " export function globSync() { throw new Error('fs.globSync needs Node.js 22'); }";
const hooks = `export async function resolve(spec, ctx, next) {
  if ((spec === 'fs' || spec === 'node:fs') && ctx.parentURL && ctx.parentURL.includes('/@modelcontextprotocol/conformance/'))
    return { url: 'data:text/javascript,' + encodeURIComponent(${JSON.stringify(shim)}), shortCircuit: true };
  return next(spec, ctx);
}`;
register('data:text/javascript,' + encodeURIComponent(hooks));
EOF
  CONF_NODE=(node --import "$WORK/fs-globsync-shim.mjs")
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_http() { # URL SECONDS what
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || die "$3 did not come up ($1)"
    sleep 0.2
  done
}

wait_port() { # PORT SECONDS what
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    ((SECONDS < deadline)) || die "$3 did not listen on $1"
    sleep 0.2
  done
}

echo '{"enabled": false}' >"$WORK/policy.json"

# --- direct: server-everything over Streamable HTTP
SE_PORT="$(free_port)"
PORT="$SE_PORT" node "$SERVER_EVERYTHING" streamableHttp >"$WORK/server-everything-http.log" 2>&1 &
PIDS+=($!)
wait_port "$SE_PORT" 30 "server-everything (streamableHttp)"

# --- gateway in front of it
GW_PORT="$(free_port)" GW_ADMIN="$(free_port)"
RUST_LOG=warn "$GATEWAY" --listen "127.0.0.1:$GW_PORT" --admin-listen "127.0.0.1:$GW_ADMIN" \
  --policy "$WORK/policy.json" --name everything-http --upstream "http://127.0.0.1:$SE_PORT/mcp" \
  >/dev/null 2>"$WORK/gateway-http.log" &
PIDS+=($!)

# --- stdio bridge: one server-everything child per MCP session. The suite does not DELETE its
# sessions, so a short idle timeout keeps the number of children down.
BR_PORT="$(free_port)" BR_ADMIN="$(free_port)"
RUST_LOG=warn "$GATEWAY" --stdio --listen "127.0.0.1:$BR_PORT" --admin-listen "127.0.0.1:$BR_ADMIN" \
  --policy "$WORK/policy.json" --name everything-stdio --path /mcp \
  --max-sessions 64 --idle-timeout 15s --check-interval 300s \
  -- node "$SERVER_EVERYTHING" stdio >/dev/null 2>"$WORK/gateway-stdio.log" &
PIDS+=($!)

wait_http "http://127.0.0.1:$GW_ADMIN/readyz" 30 "mcp-gateway (http)"
wait_http "http://127.0.0.1:$BR_ADMIN/readyz" 60 "mcp-gateway (stdio)"

run_suite() { # MODE URL
  local mode=$1 url=$2 t0=$SECONDS
  mkdir -p "$OUT/$mode"
  # The CLI's exit status reflects scenario failures, which are expected (server-everything is not
  # the suite's own test server); results are read from checks.json.
  "${CONF_NODE[@]}" "$CONFORMANCE" server --url "$url" --suite all -o "$OUT/$mode" \
    >"$OUT/$mode.log" 2>&1 || true
  log "$mode: $(grep -c '^=== Running scenario' "$OUT/$mode.log" || true) scenarios in $((SECONDS - t0)) s"
}

run_suite direct "http://127.0.0.1:$SE_PORT/mcp"
run_suite gateway "http://127.0.0.1:$GW_PORT/mcp"
run_suite stdio-bridge "http://127.0.0.1:$BR_PORT/mcp"

# Scenarios the suite has, to notice one that produced no result at all.
SCENARIOS="$("${CONF_NODE[@]}" "$CONFORMANCE" list --server | sed -n 's/^ *- \([^ ]*\).*/\1/p')"

set +e
python3 - "$OUT" "${CONFORMANCE_JSON:-}" "$SCENARIOS" <<'EOF'
import json, os, re, sys

out, json_path, listed = sys.argv[1], sys.argv[2], sys.argv[3].split()
modes = ["direct", "gateway", "stdio-bridge"]

RANK = {"FAILURE": 3, "WARNING": 2, "SUCCESS": 1, "INFO": 0}

def load(mode):
    res = {}
    base = os.path.join(out, mode)
    for d in sorted(os.listdir(base)):
        m = re.match(r"^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$", d)
        f = os.path.join(base, d, "checks.json")
        if not m or not os.path.isfile(f):
            continue
        checks = json.load(open(f))
        failed = [c for c in checks if c.get("status") == "FAILURE"]
        passed = [c for c in checks if c.get("status") == "SUCCESS"]
        # check id -> its worst status (an id can repeat; INFO records are observations)
        by_id = {}
        for c in checks:
            st = c.get("status", "INFO")
            if RANK.get(st, 0) >= RANK.get(by_id.get(c["id"]), -1):
                by_id[c["id"]] = st
        res[m.group(1)] = {
            # The suite's own verdict: a scenario passes when none of its checks fails.
            "pass": not failed,
            "passed": len(passed),
            "failed": len(failed),
            "checks": by_id,
            "errors": [f'{c["id"]}: {c.get("errorMessage", "")}'[:160] for c in failed],
        }
    return res

r = {m: load(m) for m in modes}
scenarios = list(dict.fromkeys(listed + sorted(set().union(*[r[m].keys() for m in modes]))))

def cell(mode, s):
    x = r[mode].get(s)
    if x is None:
        return "missing"
    word = "pass" if x["pass"] else "FAIL"
    return f'{word} ({x["passed"]}/{x["passed"] + x["failed"]})'

regressions, differs = [], []
print("| scenario | direct | gateway | stdio-bridge |")
print("|---|---|---|---|")
for s in scenarios:
    print(f"| {s} | {cell('direct', s)} | {cell('gateway', s)} | {cell('stdio-bridge', s)} |")
    d = r["direct"].get(s)
    for m in modes[1:]:
        x = r[m].get(s)
        if d and d["pass"] and not (x and x["pass"]):
            regressions.append((s, m, x["errors"] if x else ["no result"]))
        elif d and x:
            ids = sorted(set(d["checks"]) | set(x["checks"]))
            diff = [f'{i} {d["checks"].get(i, "-")}->{x["checks"].get(i, "-")}' for i in ids
                    if d["checks"].get(i) != x["checks"].get(i)]
            if diff:
                differs.append((s, m, diff))

print()
print("(pass/FAIL is the suite's verdict: no check failed; in brackets SUCCESS checks / SUCCESS+FAILURE checks)")
n_direct = sum(1 for s in scenarios if r["direct"].get(s, {}).get("pass"))
print()
print(f"{len(scenarios)} scenarios; passing: " + ", ".join(
    f'{m} {sum(1 for s in scenarios if r[m].get(s, {}).get("pass"))}' for m in modes))
failing_direct = [s for s in scenarios if not r["direct"].get(s, {}).get("pass")]
if failing_direct:
    print("failing directly (server-everything, not the gateway):")
    for s in failing_direct:
        errs = r["direct"].get(s, {}).get("errors") or ["no result"]
        print(f"  {s}: {errs[0]}")
for s, m, diff in differs:
    print(f"note: {s}: checks differ (direct->{m}): {', '.join(diff)}")
for s, m, errs in regressions:
    print(f"REGRESSION: {s} passes directly but fails through {m}: {'; '.join(errs)}")
if json_path:
    json.dump({"scenarios": scenarios, "results": {m: {s: {k: v for k, v in x.items()} for s, x in r[m].items()} for m in modes},
               "regressions": [{"scenario": s, "mode": m, "errors": e} for s, m, e in regressions]},
              open(json_path, "w"), indent=1)
if not scenarios or n_direct == 0:
    print("error: no scenario passed directly; the comparison is empty")
    sys.exit(2)
sys.exit(1 if regressions else 0)
EOF
rc=$?
set -e
log "done in $((SECONDS - START)) s"
if ((rc != 0)); then
  log "logs: gateway $(tail -n 5 "$WORK/gateway-http.log" | tr '\n' ' ')"
  log "logs: bridge $(tail -n 5 "$WORK/gateway-stdio.log" | tr '\n' ' ')"
fi
exit "$rc"
