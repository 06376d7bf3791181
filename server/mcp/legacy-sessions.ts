// 2025-era MCP (initialize, Mcp-Session-Id, the GET stream) over Streamable HTTP, tolerant of the
// client quirks seen in the field: a client that re-initializes gets a new session without losing
// its old one; a request whose session is missing or unknown (a restart, another replica, a
// client that forgot the header) is served statelessly instead of failing with "session not found".
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { NodeStreamableHTTPServerTransport } from "@modelcontextprotocol/node";
import { isInitializeRequest, type AuthInfo, type McpServer } from "@modelcontextprotocol/server";
import { removeRawHeader } from "./raw-headers.js";

export interface LegacySessionOptions {
  /** Builds the MCP server (tools, resources) for one session or one stateless request. */
  createServer: () => McpServer;
  /** No sessions at all: every request is served by a fresh server. */
  stateless: boolean;
  /** Answer with JSON instead of an SSE stream (no progress notifications then). */
  jsonResponse: boolean;
  /** Sessions unused for this long are closed. */
  idleTimeoutMs?: number;
  maxSessions?: number;
  onStatelessFallback?: (reason: "missing" | "unknown", method: string | undefined) => void;
}

interface Session {
  transport: NodeStreamableHTTPServerTransport;
  server: McpServer;
  lastUsed: number;
}

type AuthedRequest = IncomingMessage & { auth?: AuthInfo };

function jsonRpcError(res: ServerResponse, status: number, code: number, message: string): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id: null }));
}

function containsInitialize(body: unknown): boolean {
  return Array.isArray(body) ? body.some((m) => isInitializeRequest(m)) : isInitializeRequest(body);
}

function firstMethod(body: unknown): string | undefined {
  const message = Array.isArray(body) ? body[0] : body;
  return typeof message === "object" && message !== null && "method" in message ? String(message.method) : undefined;
}

export class LegacySessions {
  private readonly sessions = new Map<string, Session>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly options: LegacySessionOptions) {
    const idle = options.idleTimeoutMs ?? 30 * 60_000;
    this.sweeper = setInterval(() => this.closeIdle(idle), Math.min(idle, 60_000)).unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  async handle(req: AuthedRequest, res: ServerResponse, body: unknown): Promise<void> {
    if (this.options.stateless) return this.serveStateless(req, res, body);
    const header = req.headers["mcp-session-id"];
    const sessionId = Array.isArray(header) ? header[0] : header;
    const session = sessionId ? this.sessions.get(sessionId) : undefined;

    if (req.method === "POST" && containsInitialize(body)) return this.startSession(req, res, body);
    if (session) {
      session.lastUsed = Date.now();
      return session.transport.handleRequest(req, res, body);
    }
    if (req.method === "POST") {
      this.options.onStatelessFallback?.(sessionId ? "unknown" : "missing", firstMethod(body));
      return this.serveStateless(req, res, body);
    }
    if (!sessionId) {
      // A standalone stream needs a session to attach notifications to; 405 is what the spec allows.
      res.setHeader("allow", "POST");
      return jsonRpcError(res, 405, -32000, "Method not allowed without an Mcp-Session-Id: initialize first");
    }
    return jsonRpcError(res, 404, -32001, "Session not found: initialize a new session");
  }

  async closeAll(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.sessions.values()].map((s) => s.transport.close()));
    this.sessions.clear();
  }

  private async startSession(req: AuthedRequest, res: ServerResponse, body: unknown): Promise<void> {
    this.evictOldestBeyond((this.options.maxSessions ?? 10_000) - 1);
    const server = this.options.createServer();
    const transport: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: this.options.jsonResponse,
      onsessioninitialized: (id) => {
        this.sessions.set(id, { transport, server, lastUsed: Date.now() });
      },
    });
    transport.onclose = () => {
      if (transport.sessionId) this.sessions.delete(transport.sessionId);
    };
    await server.connect(transport);
    // A re-initializing client may still send its old session id: this is a new session.
    delete req.headers["mcp-session-id"];
    removeRawHeader(req, "mcp-session-id");
    await transport.handleRequest(req, res, body);
  }

  private async serveStateless(req: AuthedRequest, res: ServerResponse, body: unknown): Promise<void> {
    const server = this.options.createServer();
    const transport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: this.options.jsonResponse,
    });
    res.once("close", () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  }

  private closeIdle(idleMs: number): void {
    const cutoff = Date.now() - idleMs;
    for (const session of this.sessions.values()) if (session.lastUsed < cutoff) void session.transport.close();
  }

  private evictOldestBeyond(limit: number): void {
    while (this.sessions.size > limit) {
      const oldest = [...this.sessions.values()].reduce((a, b) => (a.lastUsed <= b.lastUsed ? a : b));
      void oldest.transport.close();
      if (oldest.transport.sessionId) this.sessions.delete(oldest.transport.sessionId);
    }
  }
}
