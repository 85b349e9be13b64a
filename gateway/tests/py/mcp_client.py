"""An MCP client built on the official Python SDK (`mcp` on PyPI), driven by the gateway tests.

usage: mcp_client.py URL TOKEN ALLOWED_TOOL DENIED_TOOL
Connects over Streamable HTTP with `Authorization: Bearer TOKEN`, initializes, lists the tools,
calls ALLOWED_TOOL (echo) and tries DENIED_TOOL; prints one JSON object with what happened.
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError


async def main(url: str, token: str, allowed: str, denied: str) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out = {}
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
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
