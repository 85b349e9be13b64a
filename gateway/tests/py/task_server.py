"""An MCP server with tasks, built on the official Python SDK (`mcp` on PyPI, its experimental
task support with the default in-memory store), for the gateway tests.

usage: task_server.py PORT [--json]
Serves Streamable HTTP (stateful sessions; answers as SSE, or JSON with --json) on
127.0.0.1:PORT/mcp with one tool, `report`, that
may run as a task and answers "report for <arguments.who>". The SDK keeps one task store for the
whole server, not one per session, and knows nothing of the caller behind the gateway: any
session that names a task id gets that task. The tests prove the gateway keeps callers apart.
"""

import contextlib
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

import mcp.types as types
from mcp.server.experimental.task_context import ServerTaskContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

server = Server("task-server")
server.experimental.enable_tasks()


@server.list_tools()
async def list_tools() -> list[types.Tool]:
    return [
        types.Tool(
            name="report",
            description="Writes a report for someone.",
            inputSchema={"type": "object", "properties": {"who": {"type": "string"}}},
            execution=types.ToolExecution(taskSupport=types.TASK_OPTIONAL),
        )
    ]


@server.call_tool()
async def call_tool(name: str, arguments: dict):
    text = f"report for {arguments.get('who', 'nobody')}"
    result = types.CallToolResult(content=[types.TextContent(type="text", text=text)])
    ctx = server.request_context
    if ctx.experimental.is_task:

        async def work(task: ServerTaskContext) -> types.CallToolResult:
            return result

        return await ctx.experimental.run_task(work)
    return result


def main(port: int, json_response: bool) -> None:
    manager = StreamableHTTPSessionManager(app=server, json_response=json_response)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        async with manager.run():
            yield

    class McpEndpoint:
        """The session manager as an ASGI endpoint on exactly /mcp."""

        async def __call__(self, scope, receive, send):
            await manager.handle_request(scope, receive, send)

    app = Starlette(routes=[Route("/mcp", endpoint=McpEndpoint())], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), "--json" in sys.argv[2:])
