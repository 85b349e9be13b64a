// Entry point of the local mcp-rs image (hack/images.sh): runs the MCP reference server
// "everything" (npm @modelcontextprotocol/server-everything) with the transport and port the
// operator gives every server container (MCP_TRANSPORT, MCP_PORT, MCP_PATH).
//   MCP_TRANSPORT=http       -> Streamable HTTP on 0.0.0.0:$MCP_PORT (default 3000), path /mcp
//   MCP_TRANSPORT=websocket  -> WebSocket (subprotocol mcp) on 0.0.0.0:$MCP_PORT at $MCP_PATH:
//                               one server-everything instance per connection (npm ws)
//   MCP_TRANSPORT=stdio      -> MCP over stdin/stdout
// An argument (e.g. `streamableHttp`, `sse`, `stdio`, `websocket`) picks the transport instead.
const dist = "/app/node_modules/@modelcontextprotocol/server-everything/dist";
const byOperatorName = { http: "streamableHttp", stdio: "stdio", websocket: "websocket" };

function quit(message) {
  console.error(`mcp-rs: ${message}`);
  process.exit(64);
}

const wanted = process.env.MCP_TRANSPORT || "http";
const transport = process.argv[2] || byOperatorName[wanted];
if (!transport) quit(`MCP_TRANSPORT=${wanted} is not served by this image (http, websocket or stdio)`);
const port = Number(process.env.MCP_PORT || process.env.PORT || "3000");
const path = process.env.MCP_PATH || "/mcp";

if (transport === "websocket") {
  // The MCP server of server-everything behind a WebSocket: each text frame one JSON-RPC message.
  const { WebSocketServer } = await import("/app/node_modules/ws/wrapper.mjs");
  const { createServer } = await import(`${dist}/server/index.js`);
  const wss = new WebSocketServer({ port, path, handleProtocols: (protocols) => (protocols.has("mcp") ? "mcp" : false) });
  wss.on("connection", async (socket) => {
    const { server, cleanup } = createServer();
    const t = {
      async start() {},
      async send(message) {
        socket.send(JSON.stringify(message));
      },
      async close() {
        socket.close();
      },
    };
    socket.on("message", (data, isBinary) => {
      if (isBinary) return socket.close(1003, "MCP messages are text");
      let message;
      try {
        message = JSON.parse(data.toString("utf8"));
      } catch (e) {
        return t.onerror?.(e);
      }
      t.onmessage?.(message);
    });
    socket.on("close", () => {
      t.onclose?.();
      cleanup?.();
    });
    await server.connect(t);
  });
  console.error(`Starting WebSocket server on port ${port}, path ${path}`);
} else {
  if (transport !== "stdio") {
    process.env.PORT = String(port);
    if (transport === "streamableHttp" && path !== "/mcp") {
      quit(`the everything server serves /mcp only, not MCP_PATH=${path}`);
    }
  }
  // The server reads its transport from argv[2].
  process.argv.splice(2, Infinity, transport);
  await import(`${dist}/index.js`);
}
