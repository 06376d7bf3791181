// Connector handshakes built from realistic recorded exchanges, classified by the real classifier:
// the clients of each family, a Flow that adds one step's healthy exchange at a time (each step
// tweakable), and the handshake the grouping would make of it. Shared by the diagnosis tests.
import { createClassifier } from "../../analysis/classify.js";
import { diagnose } from "../../analysis/diagnose/index.js";
import type { ClassifiedExchange, HeaderPairs, RecordedBody, RecordedExchange } from "../../analysis/exchange.js";
import type { ClientFamily, Diagnosis, Handshake, HandshakeStep, RegistrationKind, StepRecord } from "../../analysis/handshake.js";

// ---------------------------------------------------------------------------------------------
// Clients: how each family connects (connector URL, front proxy, callback, client type, transport)

export interface Client {
  family: ClientFamily;
  /** clientInfo.name and the registered client_name. */
  name: string;
  userAgent: string;
  /** The connector URL the user entered. */
  url: string;
  /** What the TLS-terminating front proxy says; undefined when it says nothing. */
  forwardedProto?: "https";
  callback: string;
  authMethod: "none" | "client_secret_post";
  /** The server answers POSTs as SSE streams (else JSON). */
  sse: boolean;
  /** The server assigns Mcp-Session-Id. */
  stateful: boolean;
  /** Browser clients send Origin and preflight their requests. */
  origin?: string;
  protocolVersion: string;
  /** authorization_servers[0] and the AS metadata issuer. */
  issuer: string;
  accept: string;
  /**
   * Speaks the modern era (2026-07-28): `_meta` and Mcp-* headers on every request; its
   * protocolVersion is the modern one, and a dual-era client's fallback initialize asks for legacyVersion.
   */
  modern?: boolean;
  /** The version a dual-era client's initialize asks for (default 2025-11-25). */
  legacyVersion?: string;
}

export const CLAUDE: Client = {
  family: "claude.ai",
  name: "Anthropic",
  userAgent: "Claude-User",
  url: "https://mcp.example.com/mcp",
  forwardedProto: "https",
  callback: "https://claude.ai/api/mcp/auth_callback",
  authMethod: "client_secret_post",
  sse: true,
  stateful: true,
  protocolVersion: "2025-06-18",
  issuer: "https://mcp.example.com",
  accept: "application/json, text/event-stream",
};

export const CHATGPT: Client = {
  family: "chatgpt",
  name: "openai-mcp",
  userAgent: "openai-mcp/1.0.0",
  url: "https://mcp.example.com/mcp",
  forwardedProto: "https",
  callback: "https://chatgpt.com/connector_platform_oauth_redirect",
  authMethod: "none",
  sse: false,
  stateful: false,
  protocolVersion: "2025-06-18",
  issuer: "https://mcp.example.com/", // as the MCP SDK's auth router spells an origin issuer
  accept: "*/*",
};

export const CLAUDE_CODE: Client = {
  family: "claude-code",
  name: "claude-code",
  userAgent: "claude-code/2.0.31",
  url: "http://localhost:8080/mcp",
  callback: "http://localhost:54212/callback",
  authMethod: "none",
  sse: true,
  stateful: true,
  protocolVersion: "2025-06-18",
  issuer: "http://localhost:8080",
  accept: "application/json, text/event-stream",
};

export const INSPECTOR: Client = {
  family: "mcp-inspector",
  name: "mcp-inspector",
  userAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/141.0",
  url: "https://mcp.example.com/mcp",
  forwardedProto: "https",
  callback: "http://localhost:6274/oauth/callback",
  authMethod: "none",
  sse: true,
  stateful: true,
  origin: "http://localhost:6274",
  protocolVersion: "2025-11-25",
  issuer: "https://mcp.example.com",
  accept: "application/json, text/event-stream",
};

/** Behind a TLS proxy that sends no X-Forwarded-Proto, with an issuer that has a path. */
export const MCP_REMOTE: Client = {
  family: "mcp-remote",
  name: "mcp-remote",
  userAgent: "node",
  url: "https://mcp.example.com/mcp",
  callback: "http://127.0.0.1:3334/oauth/callback",
  authMethod: "none",
  sse: true,
  stateful: true,
  protocolVersion: "2025-06-18",
  issuer: "https://mcp.example.com/oauth",
  accept: "application/json, text/event-stream",
};

/** The 2026-07-28 version: every modern client below asks for it. */
export const MODERN = "2026-07-28";

/**
 * A client on the TypeScript SDK 2.x (as recorded: user agent "node", `_meta` clientInfo), talking to a
 * stateless 2.x server that answers JSON; a loopback callback (a native client).
 */
export const V2_SDK: Client = {
  family: "typescript-sdk",
  name: "verify-v2-client",
  userAgent: "node",
  url: "https://mcp.example.com/mcp",
  forwardedProto: "https",
  callback: "http://127.0.0.1:33418/callback",
  authMethod: "none",
  sse: false,
  stateful: false,
  protocolVersion: MODERN,
  issuer: "https://mcp.example.com",
  accept: "application/json, text/event-stream",
  modern: true,
};

/** A TypeScript SDK 1.x client: legacy only (initialize with 2025-11-25). */
export const V1_SDK: Client = {
  ...V2_SDK,
  name: "verify-v1-client",
  protocolVersion: "2025-11-25",
  modern: false,
};

/** A hosted connector of the modern era: Claude.ai's backend speaking 2026-07-28. */
export const CLAUDE_MODERN: Client = { ...CLAUDE, protocolVersion: MODERN, sse: false, stateful: false, modern: true };

/** A browser client of the modern era: preflights ask for Mcp-Method and Mcp-Name too. */
export const INSPECTOR_MODERN: Client = { ...INSPECTOR, protocolVersion: MODERN, sse: false, stateful: false, modern: true };

/** The Client ID Metadata Document URL a CIMD client uses as its client_id. */
export const CIMD_CLIENT_ID = "https://client.example/oauth/client-metadata.json";

// ---------------------------------------------------------------------------------------------
// Building a handshake: realistic recorded exchanges, classified by the real classifier

export type Pair = [string, string];
export const JSON_TYPE: Pair = ["Content-Type", "application/json"];
export const HTML_TYPE: Pair = ["Content-Type", "text/html; charset=utf-8"];
export const SSE_TYPE: Pair = ["Content-Type", "text/event-stream"];
export const FORM_TYPE: Pair = ["Content-Type", "application/x-www-form-urlencoded"];
export const PRM = "/.well-known/oauth-protected-resource";
export const T0 = 1_760_000_000_000;
export const SESSION = "sess-7f3a";
export const CLIENT_ID = "client-4b1d";
export const CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
export const FP = { access: "acce55e1", refresh: "4ef4e540", code: "c0de0001", secret: "5ec12e70", verifier: "7e71f1e2" };

export const marker = (hex: string) => `[redacted:${hex}]`;
export const json = (value: unknown) => JSON.stringify(value);
export const form = (params: Record<string, string>) => new URLSearchParams(params).toString();
export const sse = (...messages: unknown[]) => messages.map((m) => `event: message\ndata: ${json(m)}\n\n`).join("");
export const rpcError = (message: string, code = -32000) => json({ jsonrpc: "2.0", error: { code, message }, id: null });

export function recordedBody(text: string | undefined): RecordedBody {
  return text
    ? { text, encoding: "utf8", size: Buffer.byteLength(text), truncated: false, decoded: null }
    : { text: null, encoding: "utf8", size: 0, truncated: false, decoded: null };
}

export interface Spec {
  step: HandshakeStep;
  method: string;
  path: string;
  query?: string;
  status?: number | null;
  req?: HeaderPairs;
  res?: HeaderPairs;
  body?: string;
  reply?: string;
  durationMs?: number;
  ttfbMs?: number;
  aborted?: boolean;
  upstreamError?: string;
  sseEvents?: number | null;
  /** Ms since the previous exchange ended. */
  gap?: number;
  /** A top-level navigation in the user's browser: no Origin, no CORS. */
  navigation?: boolean;
  /** The exchange carries its own CORS headers (a preflight). */
  ownCors?: boolean;
}

/** Changes to a step's healthy exchange: fields replace, req/res headers are appended. */
export interface Tweak extends Partial<Omit<Spec, "step">> {
  /** Request headers to drop (lower-case names) before `req` is appended. */
  without?: string[];
  /** Response headers to drop (lower-case names) before `res` is appended. */
  resWithout?: string[];
  /** Changes to the CORS preflight a browser sends first. */
  preflight?: Tweak;
}

export const ALLOWED_HEADERS =
  "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID";
export const PREFLIGHTED = ["authorization", "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id"];

export class Flow {
  readonly exchanges: ClassifiedExchange[] = [];
  private readonly stepOf = new Map<number, HandshakeStep>();
  private readonly classify = createClassifier();
  private clock = T0;
  readonly host: string;
  readonly path: string;
  readonly origin: string;
  readonly asBase: string;
  /** The era the handshake reports; a modern client's flow starts modern. */
  era: Handshake["era"] = "legacy";
  /** The handshake reports a dual-era client's fallback to the legacy era. */
  eraFallback = false;
  /** How the handshake reports the client got its id. */
  registration: RegistrationKind = "dcr";
  /** The client_id the OAuth steps send (a CIMD URL for a metadata-document client). */
  clientId = CLIENT_ID;
  /** The `iss` the authorization response carries (RFC 9207); none when undefined. */
  responseIss: string | undefined;

  constructor(readonly client: Client) {
    const url = new URL(client.url);
    this.host = url.host;
    this.path = url.pathname;
    this.origin = url.origin;
    this.asBase = client.issuer.replace(/\/$/, "");
    if (client.modern) this.era = "modern";
  }

  get prmUrl(): string {
    return `${this.origin}${PRM}${this.path === "/" ? "" : this.path}`;
  }

  add(spec: Spec, t: Tweak = {}): ClassifiedExchange {
    const { without = [], resWithout = [], preflight, req: extraReq = [], res: extraRes = [], ...fields } = t;
    const s: Spec = { ...spec, ...fields };
    const browser = this.client.origin !== undefined && !s.navigation;
    const base: HeaderPairs = [
      ["Host", this.host],
      ["User-Agent", this.client.userAgent],
      ...(this.client.forwardedProto ? [["X-Forwarded-Proto", this.client.forwardedProto] as Pair] : []),
      ...(browser ? [["Origin", this.client.origin!] as Pair] : []),
    ];
    const kept = (names: string[]) => ([n]: Pair) => !names.includes(n.toLowerCase());
    const requestHeaders = [...base, ...(s.req ?? [])].filter(kept(without)).concat(extraReq);
    if (browser && s.method !== "OPTIONS") {
      const asked = requestHeaders
        .map(([n, v]) => [n.toLowerCase(), v] as Pair)
        .filter(([n, v]) => PREFLIGHTED.includes(n) || (n === "content-type" && v.includes("json")))
        .map(([n]) => n)
        .sort();
      if (asked.length > 0 || s.method === "DELETE") this.preflight(s.step, s.path, s.method, asked, preflight);
    }
    const cors: HeaderPairs =
      browser && !s.ownCors
        ? [
            ["Access-Control-Allow-Origin", this.client.origin!],
            ["Access-Control-Expose-Headers", "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"],
          ]
        : [];
    const responseHeaders = [...(s.res ?? []), ...cors].filter(kept(resWithout)).concat(extraRes);
    this.clock += s.gap ?? 100;
    const durationMs = s.durationMs ?? 15;
    const isSse = responseHeaders.some(([n, v]) => /^content-type$/i.test(n) && v.startsWith("text/event-stream"));
    const recorded: RecordedExchange = {
      id: this.exchanges.length + 1,
      startedAt: this.clock,
      durationMs,
      ttfbMs: s.ttfbMs ?? Math.min(10, durationMs),
      clientAddr: "203.0.113.7",
      method: s.method,
      host: this.host,
      path: s.path,
      query: s.query ?? null,
      status: s.status === undefined ? 200 : s.status,
      upstreamError: s.upstreamError ?? null,
      aborted: s.aborted ?? false,
      websocket: false,
      requestHeaders,
      requestBody: recordedBody(s.body),
      responseHeaders,
      responseBody: recordedBody(s.reply),
      sseEvents: s.sseEvents !== undefined ? s.sseEvents : isSse ? 1 : null,
    };
    this.clock += durationMs;
    const e = this.classify(recorded);
    this.exchanges.push(e);
    this.stepOf.set(e.id, s.step);
    return e;
  }

  preflight(step: HandshakeStep, path: string, method: string, asked: string[], t?: Tweak): ClassifiedExchange {
    return this.add(
      {
        step,
        method: "OPTIONS",
        path,
        ownCors: true,
        req: [
          ["Access-Control-Request-Method", method],
          ...(asked.length > 0 ? [["Access-Control-Request-Headers", asked.join(",")] as Pair] : []),
        ],
        status: 204,
        res: [
          ["Access-Control-Allow-Origin", this.client.origin!],
          ["Access-Control-Allow-Methods", "GET, POST, DELETE"],
          ["Access-Control-Allow-Headers", ALLOWED_HEADERS],
          ["Access-Control-Max-Age", "86400"],
        ],
      },
      t,
    );
  }

  // --- MCP ---------------------------------------------------------------------------------

  private mcpHeaders(opts: { auth: boolean; session: boolean; version: boolean }): HeaderPairs {
    return [
      JSON_TYPE,
      ["Accept", this.client.accept],
      ...(opts.auth ? [["Authorization", `Bearer ${marker(FP.access)}`] as Pair] : []),
      ...(opts.session && this.client.stateful ? [["Mcp-Session-Id", SESSION] as Pair] : []),
      ...(opts.version ? [["MCP-Protocol-Version", this.legacyVersion] as Pair] : []),
    ];
  }

  /** The version legacy-era requests speak: a dual-era client's fallback version. */
  get legacyVersion(): string {
    return this.client.modern ? (this.client.legacyVersion ?? "2025-11-25") : this.client.protocolVersion;
  }

  /** A JSON-RPC answer as this server sends it: an SSE stream or JSON. */
  private answer(id: number | string, result: unknown, assignSession = false): Partial<Spec> {
    const message = { jsonrpc: "2.0", id, result };
    const session: HeaderPairs = assignSession && this.client.stateful ? [["Mcp-Session-Id", SESSION]] : [];
    return this.client.sse
      ? { res: [SSE_TYPE, ...session], reply: sse(message), sseEvents: 1 }
      : { res: [JSON_TYPE, ...session], reply: json(message) };
  }

  private initializeBody(): string {
    return json({
      jsonrpc: "2.0",
      id: 0,
      method: "initialize",
      params: {
        protocolVersion: this.legacyVersion,
        capabilities: {},
        clientInfo: { name: this.client.name, version: "1.0.0" },
      },
    });
  }

  private initializeResult(version = this.legacyVersion) {
    return {
      protocolVersion: version,
      capabilities: { tools: { listChanged: true } },
      serverInfo: { name: "acme-mcp", version: "2.3.0" },
    };
  }

  probe(t?: Tweak): ClassifiedExchange {
    return this.add(
      {
        step: "probe",
        method: "POST",
        path: this.path,
        req: this.mcpHeaders({ auth: false, session: false, version: false }),
        body: this.initializeBody(),
        status: 401,
        res: [["WWW-Authenticate", `Bearer resource_metadata="${this.prmUrl}"`], JSON_TYPE],
        reply: json({ error: "invalid_token", error_description: "Missing Authorization header" }),
      },
      t,
    );
  }

  initialize(t?: Tweak, answeredVersion?: string): ClassifiedExchange {
    return this.add(
      {
        step: "initialize",
        method: "POST",
        path: this.path,
        req: this.mcpHeaders({ auth: true, session: false, version: false }),
        body: this.initializeBody(),
        ...this.answer(0, this.initializeResult(answeredVersion), true),
      },
      t,
    );
  }

  initialized(t?: Tweak, auth = true): ClassifiedExchange {
    return this.add(
      {
        step: "initialized",
        method: "POST",
        path: this.path,
        req: this.mcpHeaders({ auth, session: true, version: true }),
        body: json({ jsonrpc: "2.0", method: "notifications/initialized" }),
        status: 202,
      },
      t,
    );
  }

  list(t?: Tweak, auth = true): ClassifiedExchange {
    return this.add(
      {
        step: "list",
        method: "POST",
        path: this.path,
        req: this.mcpHeaders({ auth, session: true, version: true }),
        body: json({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
        ...this.answer(1, { tools: [{ name: "search_docs", inputSchema: { type: "object" } }] }),
      },
      t,
    );
  }

  toolCall(t?: Tweak, auth = true): ClassifiedExchange {
    return this.add(
      {
        step: "tool_call",
        method: "POST",
        path: this.path,
        req: this.mcpHeaders({ auth, session: true, version: true }),
        body: json({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "search_docs", arguments: {} } }),
        ...this.answer(2, { content: [{ type: "text", text: "found" }] }),
      },
      t,
    );
  }

  stream(t?: Tweak): ClassifiedExchange {
    return this.add(
      {
        step: "stream",
        method: "GET",
        path: this.path,
        req: [
          ["Accept", "text/event-stream"],
          ["Authorization", `Bearer ${marker(FP.access)}`],
          ...(this.client.stateful ? [["Mcp-Session-Id", SESSION] as Pair] : []),
          ["MCP-Protocol-Version", this.legacyVersion],
        ],
        status: 405,
        res: [["Allow", "POST, DELETE"]],
      },
      t,
    );
  }

  teardown(t?: Tweak): ClassifiedExchange {
    return this.add(
      {
        step: "teardown",
        method: "DELETE",
        path: this.path,
        req: this.mcpHeaders({ auth: true, session: true, version: true }).filter(([n]) => n !== "Content-Type"),
        status: 200,
      },
      t,
    );
  }

  // --- MCP, modern era (2026-07-28) ---------------------------------------------------------

  /** `params._meta` of every modern request. */
  requestMeta(version = this.client.protocolVersion): Record<string, unknown> {
    return {
      "io.modelcontextprotocol/protocolVersion": version,
      "io.modelcontextprotocol/clientInfo": { name: this.client.name, version: "2.4.0" },
      "io.modelcontextprotocol/clientCapabilities": {},
    };
  }

  /** POST headers of a modern request: MCP-Protocol-Version, Mcp-Method, Mcp-Name when the method names one. */
  modernHeaders(method: string, opts: { auth: boolean; name?: string; version?: string }): HeaderPairs {
    return [
      JSON_TYPE,
      ["Accept", this.client.accept],
      ...(opts.auth ? [["Authorization", `Bearer ${marker(FP.access)}`] as Pair] : []),
      ["MCP-Protocol-Version", opts.version ?? this.client.protocolVersion],
      ["Mcp-Method", method],
      ...(opts.name !== undefined ? [["Mcp-Name", opts.name] as Pair] : []),
    ];
  }

  modernBody(id: number | string, method: string, params: Record<string, unknown> = {}, version?: string): string {
    return json({ jsonrpc: "2.0", id, method, params: { ...params, _meta: this.requestMeta(version) } });
  }

  /** A modern result: resultType and the server's `_meta` serverInfo. */
  modernResult(result: Record<string, unknown>): Record<string, unknown> {
    return {
      ...result,
      resultType: "complete",
      _meta: { "io.modelcontextprotocol/serverInfo": { name: "acme-mcp", version: "3.0.0" } },
    };
  }

  private modernRequest(
    step: HandshakeStep,
    method: string,
    opts: { auth: boolean; id: number | string; params?: Record<string, unknown>; name?: string; result: Record<string, unknown>; version?: string },
    t?: Tweak,
  ): ClassifiedExchange {
    return this.add(
      {
        step,
        method: "POST",
        path: this.path,
        req: this.modernHeaders(method, { auth: opts.auth, name: opts.name, version: opts.version }),
        body: this.modernBody(opts.id, method, opts.params, opts.version),
        ...this.answer(opts.id, this.modernResult(opts.result)),
      },
      t,
    );
  }

  /** The unauthenticated modern probe (server/discover) a protected server answers with its challenge. */
  modernProbe(t?: Tweak): ClassifiedExchange {
    return this.add(
      {
        step: "probe",
        method: "POST",
        path: this.path,
        req: this.modernHeaders("server/discover", { auth: false }),
        body: this.modernBody("server-discover-probe-1", "server/discover"),
        status: 401,
        res: [["WWW-Authenticate", `Bearer resource_metadata="${this.prmUrl}"`], JSON_TYPE],
        reply: json({ error: "invalid_token", error_description: "Missing Authorization header" }),
      },
      t,
    );
  }

  /** server/discover answered with supportedVersions (authless: `auth` false, then it is also the probe). */
  discover(t?: Tweak, auth = true): ClassifiedExchange {
    return this.modernRequest(
      auth ? "discover" : "probe",
      "server/discover",
      {
        auth,
        id: "server-discover-probe-1",
        result: { supportedVersions: [this.client.protocolVersion], capabilities: { tools: { listChanged: true } } },
      },
      t,
    );
  }

  modernList(t?: Tweak, auth = true, version?: string): ClassifiedExchange {
    return this.modernRequest(
      "list",
      "tools/list",
      { auth, id: 1, version, result: { tools: [{ name: "search_docs", inputSchema: { type: "object" } }] } },
      t,
    );
  }

  /** tools/call with Mcp-Name (`headerName` to send another name than the body's). */
  modernCall(t?: Tweak, auth = true, headerName = "search_docs"): ClassifiedExchange {
    return this.modernRequest(
      "tool_call",
      "tools/call",
      {
        auth,
        id: 2,
        name: headerName,
        params: { name: "search_docs", arguments: {} },
        result: { content: [{ type: "text", text: "found" }] },
      },
      t,
    );
  }

  /** subscriptions/listen: an SSE response opening with notifications/subscriptions/acknowledged, closed by the client. */
  listen(t?: Tweak): ClassifiedExchange {
    const ack = { jsonrpc: "2.0", method: "notifications/subscriptions/acknowledged", params: {} };
    return this.add(
      {
        step: "stream",
        method: "POST",
        path: this.path,
        req: this.modernHeaders("subscriptions/listen", { auth: true }),
        body: this.modernBody(3, "subscriptions/listen", { subscriptions: { toolsListChanged: true } }),
        res: [SSE_TYPE, ["Cache-Control", "no-cache"], ["X-Accel-Buffering", "no"]],
        reply: sse(ack),
        sseEvents: 1,
        aborted: true,
        durationMs: 120_000,
      },
      t,
    );
  }

  /** What a legacy (2025-era SDK) server answers a modern request: 400 and a -32000 error. */
  legacyRefusal(message = "Bad Request: Server not initialized"): Tweak {
    return {
      status: 400,
      resWithout: ["content-type"],
      res: [JSON_TYPE],
      reply: rpcError(message),
      sseEvents: null,
    };
  }

  // --- Discovery ---------------------------------------------------------------------------

  get(step: HandshakeStep, path: string, t?: Tweak): ClassifiedExchange {
    const accept: Pair = ["Accept", "application/json"];
    return this.add({ step, method: "GET", path, req: [accept], status: 200, res: [JSON_TYPE] }, t);
  }

  prm(t?: Tweak): ClassifiedExchange {
    const doc = {
      resource: this.client.url,
      authorization_servers: [this.client.issuer],
      scopes_supported: ["mcp"],
      bearer_methods_supported: ["header"],
    };
    const path = `${PRM}${this.path === "/" ? "" : this.path}`;
    return this.get("protected_resource_metadata", path, { reply: json(doc), ...t });
  }

  asDoc(overrides: Record<string, unknown> = {}): Record<string, unknown> {
    const base = this.asBase;
    return {
      issuer: this.client.issuer,
      authorization_endpoint: `${base}/authorize`,
      token_endpoint: `${base}/token`,
      registration_endpoint: `${base}/register`,
      revocation_endpoint: `${base}/revoke`,
      code_challenge_methods_supported: ["S256"],
      response_types_supported: ["code"],
      grant_types_supported: ["authorization_code", "refresh_token"],
      token_endpoint_auth_methods_supported: ["client_secret_post", "client_secret_basic", "none"],
      scopes_supported: ["mcp"],
      ...overrides,
    };
  }

  asMetadata(t?: Tweak): ClassifiedExchange {
    const issuerPath = new URL(this.client.issuer).pathname.replace(/\/$/, "");
    const path = `/.well-known/oauth-authorization-server${issuerPath}`;
    return this.get("authorization_server_metadata", path, { reply: json(this.asDoc()), ...t });
  }

  /** AS metadata of the modern era: CIMD and RFC 9207 iss advertised; `dcr` false drops registration_endpoint. */
  modernAsMetadata(opts: { dcr?: boolean } = {}, t?: Tweak): ClassifiedExchange {
    const doc = this.asDoc({
      client_id_metadata_document_supported: true,
      authorization_response_iss_parameter_supported: true,
      ...(opts.dcr === false ? { registration_endpoint: undefined } : {}),
    });
    return this.asMetadata({ reply: json(doc), ...t });
  }

  // --- OAuth -------------------------------------------------------------------------------

  private get asPath(): string {
    return new URL(this.asBase).pathname.replace(/\/$/, "");
  }

  private get confidential(): boolean {
    return this.client.authMethod !== "none";
  }

  register(t?: Tweak, clientId = CLIENT_ID): ClassifiedExchange {
    const metadata = {
      client_name: this.client.name,
      redirect_uris: [this.client.callback],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: this.client.authMethod,
      // 2026-07-28 DCR: native for loopback redirects, web otherwise.
      ...(this.client.modern ? { application_type: /^http:\/\/(localhost|127\.0\.0\.1)[:/]/.test(this.client.callback) ? "native" : "web" } : {}),
    };
    const secret = this.confidential ? { client_secret: marker(FP.secret), client_secret_expires_at: 0 } : {};
    return this.add(
      {
        step: "registration",
        method: "POST",
        path: `${this.asPath}/register`,
        req: [JSON_TYPE],
        body: json(metadata),
        status: 201,
        res: [JSON_TYPE],
        reply: json({ client_id: clientId, client_id_issued_at: 1_760_000_000, ...secret, ...metadata }),
      },
      t,
    );
  }

  authorizeParams(fields: Record<string, string> = {}): Record<string, string> {
    return {
      response_type: "code",
      client_id: this.clientId,
      redirect_uri: this.client.callback,
      code_challenge: CHALLENGE,
      code_challenge_method: "S256",
      state: "st-91c2",
      scope: "mcp",
      resource: this.client.url,
      ...fields,
    };
  }

  authorize(t?: Tweak, fields?: Record<string, string>): ClassifiedExchange {
    const params = this.authorizeParams(fields);
    // The login page carries the request along: its text mentions redirect_uri on a healthy 200.
    const page =
      `<!doctype html><html><body><form method="post" action="${this.asPath}/authorize">` +
      `<input type="hidden" name="redirect_uri" value="${params.redirect_uri}"><button>Allow</button></form></body></html>`;
    const path = `${this.asPath}/authorize`;
    return this.add(
      { step: "authorize", method: "GET", path, query: form(params), navigation: true, res: [HTML_TYPE], reply: page },
      t,
    );
  }

  consent(t?: Tweak, fields?: Record<string, string>): ClassifiedExchange {
    const { response_type: _, ...params } = this.authorizeParams(fields);
    const iss = this.responseIss === undefined ? "" : `&iss=${encodeURIComponent(this.responseIss)}`;
    const location = `${this.client.callback}?code=${marker(FP.code)}&state=${params.state}${iss}`;
    return this.add(
      {
        step: "callback",
        method: "POST",
        path: `${this.asPath}/authorize`,
        navigation: true,
        req: [FORM_TYPE],
        body: form({ ...params, login: "ada" }),
        status: 302,
        res: [["Location", location]],
        reply: `Found. Redirecting to ${location}`,
      },
      t,
    );
  }

  token(t?: Tweak, fields: Record<string, string> = {}, reply: Record<string, unknown> = {}): ClassifiedExchange {
    const params = {
      grant_type: "authorization_code",
      code: marker(FP.code),
      redirect_uri: this.client.callback,
      code_verifier: marker(FP.verifier),
      client_id: this.clientId,
      resource: this.client.url,
      ...(this.confidential ? { client_secret: marker(FP.secret) } : {}),
      ...fields,
    };
    const tokens = {
      access_token: marker(FP.access),
      token_type: "Bearer",
      expires_in: 3600,
      refresh_token: marker(FP.refresh),
      scope: "mcp",
      ...reply,
    };
    return this.add(
      {
        step: "token",
        method: "POST",
        path: `${this.asPath}/token`,
        req: [FORM_TYPE, ["Accept", "application/json"]],
        body: form(params),
        status: 200,
        res: [JSON_TYPE, ["Cache-Control", "no-store"]],
        reply: json(Object.fromEntries(Object.entries(tokens).filter(([, v]) => v !== undefined))),
      },
      t,
    );
  }

  refresh(t?: Tweak): ClassifiedExchange {
    return this.add(
      {
        step: "refresh",
        method: "POST",
        path: `${this.asPath}/token`,
        req: [FORM_TYPE],
        body: form({ grant_type: "refresh_token", refresh_token: marker(FP.refresh), client_id: this.clientId }),
        status: 200,
        res: [JSON_TYPE],
        reply: json({ access_token: marker("acce55e2"), token_type: "Bearer", refresh_token: marker("4ef4e541") }),
      },
      t,
    );
  }

  // --- Sequences ---------------------------------------------------------------------------

  /** Probe to token, all healthy. */
  authorizeAll(): this {
    this.probe();
    return this.signIn();
  }

  /** After the probe: discovery, DCR, the browser's authorize and consent, the token. All healthy. */
  signIn(): this {
    this.prm();
    this.asMetadata();
    this.register();
    this.authorize();
    this.consent();
    this.token();
    return this;
  }

  /** Authenticated MCP session, all healthy. */
  session(): this {
    this.initialize();
    this.initialized();
    this.list();
    this.toolCall();
    this.stream();
    if (this.client.stateful) this.teardown();
    return this;
  }

  /**
   * The modern OAuth part, all healthy: the server/discover probe, metadata advertising CIMD and iss, then
   * a CIMD client id (no registration) or DCR with application_type; the callback carries iss.
   */
  modernAuthorizeAll(opts: { cimd: boolean } = { cimd: true }): this {
    this.modernProbe();
    this.prm();
    this.modernAsMetadata({ dcr: !opts.cimd });
    if (opts.cimd) this.useCimd();
    else this.register();
    this.responseIss = this.client.issuer;
    this.authorize();
    this.consent();
    this.token();
    return this;
  }

  /** The client identifies itself with a Client ID Metadata Document URL. */
  useCimd(): this {
    this.clientId = CIMD_CLIENT_ID;
    this.registration = "cimd";
    return this;
  }

  /** Authenticated modern requests, all healthy: server/discover, tools/list, tools/call, subscriptions/listen. */
  modernSession(): this {
    this.discover();
    this.modernList();
    this.modernCall();
    this.listen();
    return this;
  }

  handshake(failed: HandshakeStep | null = null): Handshake {
    const steps: StepRecord[] = [];
    for (const e of this.exchanges) {
      const step = this.stepOf.get(e.id)!;
      let record = steps.find((s) => s.step === step);
      if (!record) steps.push((record = { step, status: "ok", exchangeIds: [], at: e.startedAt }));
      record.exchangeIds.push(e.id);
    }
    if (failed !== null) {
      const record = steps.find((s) => s.step === failed);
      if (!record) throw new Error(`no exchange in failed step ${failed}`);
      record.status = "failed";
    }
    const last = this.exchanges.at(-1)!;
    return {
      id: this.exchanges[0]!.id,
      clientFamily: this.client.family,
      clientName: this.client.name,
      startedAt: this.exchanges[0]!.startedAt,
      endedAt: last.startedAt + (last.durationMs ?? 0),
      era: this.era,
      eraFallback: this.eraFallback,
      registration: this.registration,
      steps,
      outcome: failed === null ? "succeeded" : "failed",
      failedStep: failed,
      exchangeIds: this.exchanges.map((e) => e.id),
      diagnoses: [],
    };
  }

  /** The step of the last exchange: where a stopped handshake failed. */
  get lastStep(): HandshakeStep {
    return this.stepOf.get(this.exchanges.length)!;
  }

  diagnose(failed: HandshakeStep | null): Diagnosis[] {
    return diagnose(this.handshake(failed), this.exchanges);
  }
}

export const flow = (client: Client = CLAUDE) => new Flow(client);
export const codes = (ds: Diagnosis[]) => ds.map((d) => d.code);
