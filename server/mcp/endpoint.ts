// The MCP endpoint of both protocol eras on one URL. 2026-07-28 ("modern") requests carry their
// own `_meta` envelope and are served statelessly by the v2 SDK's createMcpHandler, which owns the
// modern validation ladder (-32020 header mismatch, -32022 with `supported`, 404/-32601, `server/
// discover`, `resultType`, cache hints, `subscriptions/listen`). 2025-era requests (initialize,
// sessions, the GET stream) go to LegacySessions. The SDK's own predicate, isLegacyRequest, makes
// the split, so the routing can never disagree with the SDK. `--era` lets an operator reproduce a
// single-era server: `modern` refuses 2025-era requests as the spec says (-32022 naming the
// supported revisions), `legacy` never routes to the modern leg.
import type { IncomingMessage, ServerResponse } from "node:http";
import { toNodeHandler, toWebRequest } from "@modelcontextprotocol/node";
import { createMcpHandler, isLegacyRequest, type AuthInfo, type McpServer, type McpServerFactory } from "@modelcontextprotocol/server";
import type { ServerEra } from "../settings.js";
import { LegacySessions } from "./legacy-sessions.js";

export interface McpEndpointOptions {
  era: ServerEra;
  /** One factory for both eras: the same tools answer 2025-era and 2026-era clients. */
  createServer: () => McpServer;
  /** 2025-era: no sessions (replicas without sticky sessions). The modern era has none anyway. */
  stateless: boolean;
  /** Answer with JSON, never an SSE stream (proxies that buffer); subscriptions/listen still streams. */
  jsonResponse: boolean;
  /** Idle 2026-07-28 SSE streams (subscriptions/listen) get a comment this often. */
  keepAliveMs: number;
  /** A request body at most this large (bytes); the express parser in front has the same bound. */
  maxBodyBytes: number;
  onStatelessFallback?: (reason: "missing" | "unknown", method: string | undefined) => void;
  onError?: (error: Error) => void;
}

export interface McpEndpoint {
  /** `body` is the parsed JSON of a POST (express.json in front), undefined otherwise. */
  handle(req: IncomingMessage & { auth?: AuthInfo }, res: ServerResponse, body: unknown): Promise<void>;
  /** Open 2025-era sessions. */
  readonly sessions: number;
  close(): Promise<void>;
}

export function createMcpEndpoint(options: McpEndpointOptions): McpEndpoint {
  const legacy = new LegacySessions({
    createServer: options.createServer,
    stateless: options.stateless,
    jsonResponse: options.jsonResponse,
    onStatelessFallback: options.onStatelessFallback,
  });
  const factory: McpServerFactory = () => options.createServer();
  const modernHandler = createMcpHandler(factory, {
    legacy: "reject",
    responseMode: options.jsonResponse ? "json" : "auto",
    keepAliveMs: options.keepAliveMs,
    maxRequestBodySize: options.maxBodyBytes,
    onerror: options.onError,
  });
  const modern = toNodeHandler(modernHandler, { onerror: options.onError, maxRequestBodySize: options.maxBodyBytes });

  async function isLegacy(req: IncomingMessage, body: unknown): Promise<boolean> {
    if (options.era !== "dual") return options.era === "legacy";
    // Given the parsed body, the SDK classifies by it and the headers: the probe needs no copy of
    // the body (toWebRequest would serialise all of it again, for nothing).
    const probe = await toWebRequest(req, body === undefined ? undefined : null);
    return isLegacyRequest(probe, body, { maxRequestBodySize: options.maxBodyBytes });
  }

  return {
    async handle(req, res, body) {
      if (await isLegacy(req, body)) return legacy.handle(req, res, body);
      return modern(req, res, body);
    },
    get sessions() {
      return legacy.size;
    },
    async close() {
      await Promise.all([legacy.closeAll(), modernHandler.close()]);
    },
  };
}
