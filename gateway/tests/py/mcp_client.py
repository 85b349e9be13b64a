"""An MCP client built on the official Python SDK (`mcp` on PyPI), driven by the gateway tests.

usage: mcp_client.py URL TOKEN ALLOWED_TOOL DENIED_TOOL
Connects over Streamable HTTP with `Authorization: Bearer TOKEN`, initializes, lists the tools,
calls ALLOWED_TOOL (echo) and tries DENIED_TOOL last; prints one JSON object with what happened.
The gateway answers a denied tool with HTTP 403, which this SDK raises out of the session (not
as an error of the one call), so the denied call comes last and the 403 is caught around it.
"""

import asyncio
import json
import sys

import httpx

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError


async def main(url: str, token: str, allowed: str, denied: str) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out = {}
    try:
        await session_run(url, headers, allowed, denied, out)
    except BaseException as e:  # an ExceptionGroup from the SDK's task group
        status = http_status(e)
        if status is None:
            raise
        out["denied"] = {"status": status}
    print(json.dumps(out))


def http_status(e: BaseException):
    """The HTTP status of the first HTTPStatusError inside e (or None)."""
    if isinstance(e, httpx.HTTPStatusError):
        return e.response.status_code
    for inner in getattr(e, "exceptions", ()):
        s = http_status(inner)
        if s is not None:
            return s
    return None


async def session_run(url: str, headers: dict, allowed: str, denied: str, out: dict) -> None:
    async with streamablehttp_client(url, headers=headers) as (read, write, get_session_id):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = init.serverInfo.name
            out["protocolVersion"] = init.protocolVersion
            out["session"] = get_session_id()
            tools = await session.list_tools()
            out["tools"] = [t.name for t in tools.tools]
            res = await session.call_tool(allowed, {"message": "hello through the gateway"})
            out["allowed"] = [c.text for c in res.content if getattr(c, "type", "") == "text"]
            try:
                res = await session.call_tool(denied, {})
                out["denied"] = {"isError": res.isError, "content": [getattr(c, "text", "") for c in res.content]}
            except McpError as e:
                out["denied"] = {"code": e.error.code, "message": e.error.message}


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
