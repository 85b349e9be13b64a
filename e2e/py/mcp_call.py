"""An MCP client built on the official Python SDK (`mcp` on PyPI), used by the e2e data-plane
tests to call a server through its Kubernetes Service.

usage: mcp_call.py TRANSPORT URL [TOKEN] [TOOL]
  TRANSPORT  http (Streamable HTTP, also for stdio servers behind the bridge) or websocket
  TOKEN      a bearer token, or "-" for none
  TOOL       the tool to call (default echo, with {"message": "hello from e2e"})
Prints one JSON object: {"server", "tools", "result"}; with {"rpcError": code} when the call was
refused in-band (WebSocket), {"status": HTTP status} when the gateway refused over HTTP (the SDK
raises that out of the session), or {"error": text}.
"""

import asyncio
import functools
import json
import sys

import httpx

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
import mcp.client.websocket as mcp_ws
from mcp.shared.exceptions import McpError


def http_status(e: BaseException):
    if isinstance(e, httpx.HTTPStatusError):
        return e.response.status_code
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status is not None:
        return status
    for inner in getattr(e, "exceptions", ()):
        s = http_status(inner)
        if s is not None:
            return s
    return None


async def session(read, write, tool, out):
    async with ClientSession(read, write) as s:
        init = await s.initialize()
        out["server"] = init.serverInfo.name
        tools = await s.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        args = {"message": "hello from e2e"} if tool == "echo" else {}
        try:
            res = await s.call_tool(tool, args)
        except McpError as e:  # refused in-band (WebSocket): a JSON-RPC error for the call
            out["rpcError"] = e.error.code
            return
        out["isError"] = bool(res.isError)
        out["result"] = [getattr(c, "text", "") for c in res.content]


async def main(transport, url, token, tool):
    headers = {"Authorization": f"Bearer {token}"} if token and token != "-" else {}
    out = {}
    try:
        if transport == "websocket":
            # The SDK's WebSocket client sends no headers: give its connect the token.
            mcp_ws.ws_connect = functools.partial(mcp_ws.ws_connect, additional_headers=headers)
            async with mcp_ws.websocket_client(url) as (read, write):
                await session(read, write, tool, out)
        else:
            async with streamablehttp_client(url, headers=headers, timeout=20) as (read, write, _):
                await session(read, write, tool, out)
    except BaseException as e:  # an ExceptionGroup out of the SDK's task group
        status = http_status(e)
        if status is None:
            out = {"error": repr(e)[:2000]}
        else:
            out["status"] = status
    print(json.dumps(out))


if __name__ == "__main__":
    a = sys.argv[1:] + [None] * 4
    asyncio.run(main(a[0], a[1], a[2] or "-", a[3] or "echo"))
