// Entry point of the local mcp-rs image (hack/images.sh): runs the MCP reference server
// "everything" (npm @modelcontextprotocol/server-everything) with the transport and port the
// operator gives every server container (MCP_TRANSPORT, MCP_PORT, MCP_PATH).
//   MCP_TRANSPORT=http  -> Streamable HTTP on 0.0.0.0:$MCP_PORT (default 3000), path /mcp
//   MCP_TRANSPORT=stdio -> MCP over stdin/stdout
// An argument (e.g. `streamableHttp`, `sse`, `stdio`) picks the server's own transport name.
const server = "/app/node_modules/@modelcontextprotocol/server-everything/dist/index.js";
const byOperatorName = { http: "streamableHttp", stdio: "stdio" };

function quit(message) {
  console.error(`mcp-rs: ${message}`);
  process.exit(64);
}

const wanted = process.env.MCP_TRANSPORT || "http";
const transport = process.argv[2] || byOperatorName[wanted];
if (!transport) quit(`MCP_TRANSPORT=${wanted} is not served by this image (http or stdio)`);
if (transport !== "stdio") {
  process.env.PORT = process.env.MCP_PORT || process.env.PORT || "3000";
  const path = process.env.MCP_PATH || "/mcp";
  if (transport === "streamableHttp" && path !== "/mcp") {
    quit(`the everything server serves /mcp only, not MCP_PATH=${path}`);
  }
}
// The server reads its transport from argv[2].
process.argv.splice(2, Infinity, transport);
await import(server);
