// One Coda MCP server instance: its identity, instructions, cache hints and tools. Built per
// 2025-era session and per 2026-era request, from the same code, so the eras never drift apart.
import { McpServer } from "@modelcontextprotocol/server";
import { VERSION } from "../../common/version.js";
import { registerCodaTools, type ClientFor } from "./tools.js";

const INSTRUCTIONS =
  "Tools for the Coda documents of the signed-in user: list docs, read pages and tables, " +
  "query and change rows, push buttons. Ids come from the list tools (docs → tables → rows).";

// The tool list and the discovery answer are the same for every user and change only with a
// deployment: a client may keep them for ten minutes and share them (2026-07-28 caching).
const TEN_MINUTES = { ttlMs: 10 * 60_000, cacheScope: "public" } as const;

export function createCodaMcpServer(clientFor: ClientFor): McpServer {
  const server = new McpServer(
    { name: "coda-mcp", version: VERSION },
    { instructions: INSTRUCTIONS, cacheHints: { "tools/list": TEN_MINUTES, "server/discover": TEN_MINUTES } },
  );
  registerCodaTools(server, clientFor);
  return server;
}
