"""A stdio MCP server for the gateway tests that writes every line it receives to the file named
by its first argument
(so a test can prove a refused message never reached it) and answers initialize, tools/list and
tools/call. Standard library only."""

import json
import sys

TOOLS = ["echo", "get-sum", "admin-reset"]


def answer(msg):
    method = msg.get("method")
    if method == "initialize":
        return {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "recording-stdio", "version": "1.0.0"}}
    if method == "tools/list":
        return {"tools": [{"name": t, "inputSchema": {"type": "object"}} for t in TOOLS]}
    if method == "tools/call":
        return {"content": [{"type": "text", "text": "called " + str(msg.get("params", {}).get("name"))}]}
    return {}


def main():
    record = open(sys.argv[1], "a", buffering=1)
    for line in sys.stdin:
        record.write(line if line.endswith("\n") else line + "\n")
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and "id" in msg and "method" in msg:
            sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": answer(msg)}) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
