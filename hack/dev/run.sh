#!/bin/sh
# The entrypoint of the operator's dev image (Tilt): runs the operator, and runs it again whenever
# it exits. A live update syncs a freshly compiled binary to /opt/dev/mcp-operator and stops the
# running process (killall mcp-operator); the next round copies the new binary aside (so the file
# being synced is never the one running) and starts it. SIGTERM ends the loop and the operator.
set -u
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 0' TERM INT
while true; do
  bin=/app/mcp-operator
  if [ -f /opt/dev/mcp-operator ]; then
    mkdir -p /opt/dev/run
    cp /opt/dev/mcp-operator /opt/dev/run/mcp-operator.new && chmod 755 /opt/dev/run/mcp-operator.new &&
      mv /opt/dev/run/mcp-operator.new /opt/dev/run/mcp-operator && bin=/opt/dev/run/mcp-operator
  fi
  echo "[dev] starting $bin" >&2
  "$bin" "$@" &
  pid=$!
  wait "$pid"
  echo "[dev] mcp-operator exited ($?); restarting" >&2
  pid=
  sleep 0.2
done
