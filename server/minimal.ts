/**
 * A small but real upstream MCP server for mcp-lens.
 *
 * Used as the default upstream by `npm start` (until the full Coda server exists) and as the
 * server behind the proxy in integration tests. Plain `node:http` outer server, the MCP SDK for
 * the protocol (stateful Streamable HTTP, one transport per session), and a tiny in-memory OAuth
 * 2.1 authorization server (RFC 8414 / 9728 / 7591 / 7636 / 7009 shapes) so the proxy has real
 * OAuth traffic to record.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

export interface MinimalServerOptions {
  /** Port to listen on; 0 (default) picks an ephemeral port. */
  port?: number;
  /** Interface to bind; default 127.0.0.1. */
  host?: string;
  /** Externally visible base URL (no path), used in OAuth metadata; default the listening URL. */
  publicUrl?: string;
  /** How POST requests are answered: one JSON body, or an SSE stream (default). */
  responseMode?: "json" | "sse";
  /** When true, /mcp requires a Bearer access token issued by this server's /token. */
  requireAuth?: boolean;
}

export interface MinimalServerHandle {
  /** Listening base URL, e.g. http://127.0.0.1:41234 (no trailing slash, no path). */
  url: string;
  /** `${url}/mcp` */
  mcpUrl: string;
  port: number;
  /** Closes every MCP session, open SSE stream and socket, then the listener. Idempotent. */
  close(): Promise<void>;
}

const MCP_PATH = "/mcp";
const MAX_MCP_BODY = 4 * 1024 * 1024;
const MAX_FORM_BODY = 64 * 1024;
const ACCESS_TOKEN_TTL_S = 3600;
const AUTH_CODE_TTL_MS = 10 * 60 * 1000;
const SUPPORTED_SCOPES = ["mcp"];
const AUTH_METHODS = ["none", "client_secret_post", "client_secret_basic"] as const;
type AuthMethod = (typeof AUTH_METHODS)[number];

// ---------------------------------------------------------------------------------------------
// MCP server (one instance per session)
// ---------------------------------------------------------------------------------------------

const BIG_PATTERN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

function bigText(bytes: number): string {
  const reps = Math.ceil(bytes / BIG_PATTERN.length);
  return BIG_PATTERN.repeat(reps).slice(0, bytes);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Error("aborted"));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Error("aborted"));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

function createMcpServer(responseMode: "json" | "sse", shutdown: AbortSignal): McpServer {
  const mcp = new McpServer(
    { name: "mcp-lens-minimal", version: "0.1.0" },
    {
      capabilities: { logging: {} },
      instructions: "Minimal upstream used by mcp-lens for local runs and integration tests.",
    },
  );

  mcp.registerTool(
    "echo",
    {
      title: "Echo",
      description: "Returns the given text unchanged.",
      inputSchema: { text: z.string().describe("Text to echo back") },
    },
    async ({ text }) => ({ content: [{ type: "text", text }] }),
  );

  mcp.registerTool(
    "count",
    {
      title: "Count",
      description:
        "Sends n logging notifications (notifications/message, plus notifications/progress when the " +
        "caller passes a progressToken) spaced delayMs apart, then returns 'counted n'. " +
        "Useful to measure SSE event timing through a proxy.",
      inputSchema: {
        n: z.number().int().min(0).max(50).describe("Number of notifications (0-50)"),
        delayMs: z.number().int().min(0).max(2000).default(0).describe("Gap between notifications in ms (0-2000)"),
      },
    },
    async ({ n, delayMs }, extra) => {
      const signal = AbortSignal.any([extra.signal, shutdown]);
      const progressToken = extra._meta?.progressToken;
      // In SSE mode notifications travel on the POST's own SSE stream (related to the request).
      // In JSON mode that stream does not exist, so they go to the session's standalone GET stream.
      const notify = async (notification: { method: string; params: Record<string, unknown> }) => {
        if (responseMode === "sse") {
          await extra.sendNotification(notification as Parameters<typeof extra.sendNotification>[0]);
        } else {
          await mcp.server.notification(notification as Parameters<typeof mcp.server.notification>[0]);
        }
      };
      for (let i = 1; i <= n; i++) {
        await notify({
          method: "notifications/message",
          params: { level: "info", logger: "count", data: { i, n, at: Date.now() } },
        });
        if (progressToken !== undefined) {
          await notify({
            method: "notifications/progress",
            params: { progressToken, progress: i, total: n, message: `count ${i}/${n}` },
          });
        }
        if (i < n && delayMs > 0) await sleep(delayMs, signal);
      }
      return { content: [{ type: "text", text: `counted ${n}` }] };
    },
  );

  mcp.registerTool(
    "big",
    {
      title: "Big",
      description: "Returns a text content block of exactly `bytes` ASCII characters.",
      inputSchema: { bytes: z.number().int().min(0).max(5_000_000).describe("Size of the text (0-5,000,000)") },
    },
    async ({ bytes }) => ({ content: [{ type: "text", text: bigText(bytes) }] }),
  );

  mcp.registerTool(
    "fail",
    {
      title: "Fail",
      description: "Always returns a tool error result (isError: true).",
      inputSchema: { message: z.string().optional().describe("Error text to return") },
    },
    async ({ message }) => ({
      isError: true,
      content: [{ type: "text", text: message ?? "the fail tool always fails" }],
    }),
  );

  mcp.registerResource(
    "hello",
    "minimal://hello",
    { title: "Hello", description: "A static greeting.", mimeType: "text/plain" },
    async (uri) => ({
      contents: [{ uri: uri.href, mimeType: "text/plain", text: "Hello from the mcp-lens minimal server" }],
    }),
  );

  mcp.registerPrompt(
    "greet",
    {
      title: "Greet",
      description: "Asks the model to greet someone.",
      argsSchema: { name: z.string().describe("Who to greet") },
    },
    ({ name }) => ({
      messages: [{ role: "user", content: { type: "text", text: `Please greet ${name} warmly.` } }],
    }),
  );

  return mcp;
}

// ---------------------------------------------------------------------------------------------
// In-memory OAuth authorization server
// ---------------------------------------------------------------------------------------------

interface RegisteredClient {
  client_id: string;
  client_secret?: string;
  client_id_issued_at: number;
  redirect_uris: string[];
  token_endpoint_auth_method: AuthMethod;
  grant_types: string[];
  response_types: string[];
  client_name?: string;
  scope?: string;
}

interface AuthCode {
  clientId: string;
  redirectUri: string;
  redirectUriExplicit: boolean;
  codeChallenge: string;
  scope: string;
  resource?: string;
  expiresAt: number;
}

interface AccessToken {
  clientId: string;
  scopes: string[];
  resource?: string;
  expiresAt: number; // epoch seconds
}

interface RefreshToken {
  clientId: string;
  scope: string;
  resource?: string;
}

class OAuthError extends Error {
  constructor(
    readonly error: string,
    readonly description: string,
    readonly status = 400,
  ) {
    super(description);
  }
}

const newToken = () => randomBytes(32).toString("base64url");

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

function normalizeUrl(u: string): string {
  try {
    const url = new URL(u);
    return (url.origin + url.pathname).replace(/\/+$/, "") + url.search;
  } catch {
    return u;
  }
}

class AuthServer {
  readonly clients = new Map<string, RegisteredClient>();
  readonly codes = new Map<string, AuthCode>();
  readonly accessTokens = new Map<string, AccessToken>();
  readonly refreshTokens = new Map<string, RefreshToken>();

  constructor(private readonly publicUrl: string) {}

  get resource(): string {
    return `${this.publicUrl}${MCP_PATH}`;
  }

  get resourceMetadataUrl(): string {
    return `${this.publicUrl}/.well-known/oauth-protected-resource${MCP_PATH}`;
  }

  protectedResourceMetadata() {
    return {
      resource: this.resource,
      authorization_servers: [this.publicUrl],
      scopes_supported: SUPPORTED_SCOPES,
      bearer_methods_supported: ["header"],
      resource_name: "mcp-lens minimal server",
    };
  }

  authorizationServerMetadata() {
    const base = this.publicUrl;
    return {
      issuer: base,
      authorization_endpoint: `${base}/authorize`,
      token_endpoint: `${base}/token`,
      registration_endpoint: `${base}/register`,
      revocation_endpoint: `${base}/revoke`,
      scopes_supported: SUPPORTED_SCOPES,
      response_types_supported: ["code"],
      response_modes_supported: ["query"],
      grant_types_supported: ["authorization_code", "refresh_token"],
      code_challenge_methods_supported: ["S256"],
      token_endpoint_auth_methods_supported: [...AUTH_METHODS],
      revocation_endpoint_auth_methods_supported: [...AUTH_METHODS],
    };
  }

  /** RFC 8707: accept the MCP endpoint URL (or the bare origin); anything else is invalid_target. */
  checkResource(resource: string | undefined): void {
    if (resource === undefined || resource === "") return;
    const r = normalizeUrl(resource);
    if (r !== normalizeUrl(this.resource) && r !== normalizeUrl(this.publicUrl)) {
      throw new OAuthError("invalid_target", `Unknown resource ${resource}; expected ${this.resource}`);
    }
  }

  /** RFC 7591 dynamic client registration. */
  register(body: unknown): RegisteredClient {
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw new OAuthError("invalid_client_metadata", "Registration body must be a JSON object");
    }
    const meta = body as Record<string, unknown>;
    const redirectUris = meta.redirect_uris;
    if (!Array.isArray(redirectUris) || redirectUris.length === 0) {
      throw new OAuthError("invalid_redirect_uri", "redirect_uris must be a non-empty array");
    }
    for (const uri of redirectUris) {
      let parsed: URL;
      try {
        parsed = new URL(String(uri));
      } catch {
        throw new OAuthError("invalid_redirect_uri", `Invalid redirect URI: ${String(uri)}`);
      }
      if (typeof uri !== "string" || parsed.hash) {
        throw new OAuthError("invalid_redirect_uri", `Invalid redirect URI: ${String(uri)}`);
      }
    }
    const method = (meta.token_endpoint_auth_method ?? "client_secret_basic") as string;
    if (!(AUTH_METHODS as readonly string[]).includes(method)) {
      throw new OAuthError("invalid_client_metadata", `Unsupported token_endpoint_auth_method: ${method}`);
    }
    const grantTypes = Array.isArray(meta.grant_types)
      ? meta.grant_types.map(String)
      : ["authorization_code", "refresh_token"];
    const unsupportedGrant = grantTypes.find((g) => g !== "authorization_code" && g !== "refresh_token");
    if (unsupportedGrant) {
      throw new OAuthError("invalid_client_metadata", `Unsupported grant type: ${unsupportedGrant}`);
    }
    const responseTypes = Array.isArray(meta.response_types) ? meta.response_types.map(String) : ["code"];
    if (responseTypes.some((r) => r !== "code")) {
      throw new OAuthError("invalid_client_metadata", "Only response_type code is supported");
    }
    const client: RegisteredClient = {
      client_id: randomUUID(),
      client_id_issued_at: Math.floor(Date.now() / 1000),
      redirect_uris: redirectUris as string[],
      token_endpoint_auth_method: method as AuthMethod,
      grant_types: grantTypes,
      response_types: responseTypes,
      ...(typeof meta.client_name === "string" ? { client_name: meta.client_name } : {}),
      ...(typeof meta.scope === "string" ? { scope: meta.scope } : {}),
      ...(method !== "none" ? { client_secret: newToken() } : {}),
    };
    this.clients.set(client.client_id, client);
    return client;
  }

  /**
   * Authorization endpoint, auto-approving. Returns the redirect URL (success or error redirect);
   * throws OAuthError when no safe redirect target exists (unknown client / bad redirect_uri).
   */
  authorize(params: URLSearchParams): string {
    const clientId = params.get("client_id");
    if (!clientId) throw new OAuthError("invalid_request", "client_id is required");
    const client = this.clients.get(clientId);
    if (!client) throw new OAuthError("invalid_client", `Unknown client_id ${clientId}`);

    const requested = params.get("redirect_uri");
    let redirectUri: string;
    if (requested) {
      if (!client.redirect_uris.includes(requested)) {
        throw new OAuthError("invalid_request", `Unregistered redirect_uri ${requested}`);
      }
      redirectUri = requested;
    } else if (client.redirect_uris.length === 1) {
      redirectUri = client.redirect_uris[0]!;
    } else {
      throw new OAuthError("invalid_request", "redirect_uri is required when several are registered");
    }

    const state = params.get("state");
    const redirect = (query: Record<string, string>) => {
      const url = new URL(redirectUri);
      for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
      if (state !== null) url.searchParams.set("state", state);
      return url.toString();
    };
    const fail = (error: string, description: string) =>
      redirect({ error, error_description: description });

    if (params.get("response_type") !== "code") {
      return fail("unsupported_response_type", "response_type must be code");
    }
    const challenge = params.get("code_challenge");
    if (!challenge || !/^[A-Za-z0-9_-]{43,128}$/.test(challenge)) {
      return fail("invalid_request", "code_challenge is required (base64url, 43-128 chars)");
    }
    if (params.get("code_challenge_method") !== "S256") {
      return fail("invalid_request", "code_challenge_method must be S256");
    }
    const resource = params.get("resource") ?? undefined;
    try {
      this.checkResource(resource);
    } catch (err) {
      if (err instanceof OAuthError) return fail(err.error, err.description);
      throw err;
    }
    const scope = params.get("scope") || client.scope || SUPPORTED_SCOPES.join(" ");
    const code = newToken();
    this.codes.set(code, {
      clientId,
      redirectUri,
      redirectUriExplicit: requested !== null && requested !== "",
      codeChallenge: challenge,
      scope,
      ...(resource ? { resource } : {}),
      expiresAt: Date.now() + AUTH_CODE_TTL_MS,
    });
    return redirect({ code });
  }

  /** Client authentication at /token and /revoke: none, client_secret_post or client_secret_basic. */
  authenticateClient(form: URLSearchParams, authorization: string | undefined): RegisteredClient {
    let clientId = form.get("client_id") ?? undefined;
    let secret = form.get("client_secret") ?? undefined;
    let usedBasic = false;
    if (authorization && /^basic /i.test(authorization)) {
      const decoded = Buffer.from(authorization.slice(6).trim(), "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon < 0) throw new OAuthError("invalid_client", "Malformed Basic credentials", 401);
      try {
        const basicId = decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, " "));
        const basicSecret = decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, " "));
        if (clientId !== undefined && clientId !== basicId) {
          throw new OAuthError("invalid_request", "client_id in body differs from Basic credentials");
        }
        if (secret !== undefined) {
          throw new OAuthError("invalid_request", "Use only one client authentication method");
        }
        clientId = basicId;
        secret = basicSecret;
        usedBasic = true;
      } catch (err) {
        if (err instanceof OAuthError) throw err;
        throw new OAuthError("invalid_client", "Malformed Basic credentials", 401);
      }
    }
    if (!clientId) throw new OAuthError("invalid_client", "Client authentication required", 401);
    const client = this.clients.get(clientId);
    if (!client) throw new OAuthError("invalid_client", `Unknown client_id ${clientId}`, 401);
    if (client.client_secret !== undefined) {
      if (secret === undefined) throw new OAuthError("invalid_client", "client_secret is required", 401);
      if (!safeEqual(secret, client.client_secret)) {
        throw new OAuthError("invalid_client", "Invalid client credentials", 401);
      }
    } else if (usedBasic && secret) {
      throw new OAuthError("invalid_client", "Public client must not send a secret", 401);
    }
    return client;
  }

  token(form: URLSearchParams, authorization: string | undefined) {
    const grantType = form.get("grant_type");
    if (!grantType) throw new OAuthError("invalid_request", "grant_type is required");
    if (grantType !== "authorization_code" && grantType !== "refresh_token") {
      throw new OAuthError("unsupported_grant_type", `Unsupported grant_type ${grantType}`);
    }
    const client = this.authenticateClient(form, authorization);
    if (!client.grant_types.includes(grantType)) {
      throw new OAuthError("unauthorized_client", `Client is not allowed to use ${grantType}`);
    }
    const resource = form.get("resource") || undefined;
    this.checkResource(resource);

    if (grantType === "authorization_code") {
      const code = form.get("code");
      const verifier = form.get("code_verifier");
      if (!code) throw new OAuthError("invalid_request", "code is required");
      if (!verifier) throw new OAuthError("invalid_request", "code_verifier is required");
      const grant = this.codes.get(code);
      if (!grant || grant.clientId !== client.client_id) {
        throw new OAuthError("invalid_grant", "Invalid or already used authorization code");
      }
      this.codes.delete(code); // single use, even when the rest of the checks fail
      if (grant.expiresAt < Date.now()) throw new OAuthError("invalid_grant", "Authorization code expired");
      const redirectUri = form.get("redirect_uri");
      if (grant.redirectUriExplicit ? redirectUri !== grant.redirectUri : redirectUri && redirectUri !== grant.redirectUri) {
        throw new OAuthError("invalid_grant", "redirect_uri does not match the authorization request");
      }
      const computed = createHash("sha256").update(verifier).digest("base64url");
      if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier) || !safeEqual(computed, grant.codeChallenge)) {
        throw new OAuthError("invalid_grant", "PKCE verification failed");
      }
      if (resource && grant.resource && normalizeUrl(resource) !== normalizeUrl(grant.resource)) {
        throw new OAuthError("invalid_target", "resource differs from the authorization request");
      }
      return this.issue(client.client_id, grant.scope, resource ?? grant.resource);
    }

    const refreshToken = form.get("refresh_token");
    if (!refreshToken) throw new OAuthError("invalid_request", "refresh_token is required");
    const stored = this.refreshTokens.get(refreshToken);
    if (!stored || stored.clientId !== client.client_id) {
      throw new OAuthError("invalid_grant", "Invalid refresh token");
    }
    this.refreshTokens.delete(refreshToken); // rotation: each refresh token works once
    const requestedScope = form.get("scope");
    let scope = stored.scope;
    if (requestedScope) {
      const granted = new Set(stored.scope.split(" "));
      if (requestedScope.split(" ").some((s) => !granted.has(s))) {
        throw new OAuthError("invalid_scope", "Requested scope exceeds the original grant");
      }
      scope = requestedScope;
    }
    return this.issue(client.client_id, scope, resource ?? stored.resource);
  }

  private issue(clientId: string, scope: string, resource: string | undefined) {
    const accessToken = newToken();
    const refreshToken = newToken();
    const scopes = scope.split(" ").filter(Boolean);
    this.accessTokens.set(accessToken, {
      clientId,
      scopes,
      ...(resource ? { resource } : {}),
      expiresAt: Math.floor(Date.now() / 1000) + ACCESS_TOKEN_TTL_S,
    });
    this.refreshTokens.set(refreshToken, { clientId, scope, ...(resource ? { resource } : {}) });
    return {
      access_token: accessToken,
      token_type: "Bearer",
      expires_in: ACCESS_TOKEN_TTL_S,
      refresh_token: refreshToken,
      scope,
    };
  }

  /** RFC 7009: 200 whether or not the token was known. */
  revoke(form: URLSearchParams, authorization: string | undefined): void {
    const client = this.authenticateClient(form, authorization);
    const token = form.get("token");
    if (!token) throw new OAuthError("invalid_request", "token is required");
    const access = this.accessTokens.get(token);
    if (access && access.clientId === client.client_id) this.accessTokens.delete(token);
    const refresh = this.refreshTokens.get(token);
    if (refresh && refresh.clientId === client.client_id) this.refreshTokens.delete(token);
  }

  /** Validates a Bearer token; returns AuthInfo or an error description. */
  verifyAccessToken(token: string): AuthInfo | string {
    const stored = this.accessTokens.get(token);
    if (!stored) return "Unknown or revoked access token";
    if (stored.expiresAt <= Math.floor(Date.now() / 1000)) {
      this.accessTokens.delete(token);
      return "Access token expired";
    }
    return {
      token,
      clientId: stored.clientId,
      scopes: stored.scopes,
      expiresAt: stored.expiresAt,
      ...(stored.resource ? { resource: new URL(stored.resource) } : {}),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------------------------

class BodyTooLargeError extends Error {}

function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new BodyTooLargeError(`Body exceeds ${limit} bytes`));
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function sendJson(
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

const NO_STORE = { "Cache-Control": "no-store", Pragma: "no-cache" };

function jsonRpcError(res: http.ServerResponse, status: number, code: number, message: string): void {
  sendJson(res, status, { jsonrpc: "2.0", error: { code, message }, id: null });
}

function sendOAuthError(res: http.ServerResponse, err: OAuthError, extraHeaders: Record<string, string> = {}): void {
  const headers: Record<string, string> = { ...NO_STORE, ...extraHeaders };
  if (err.status === 401 && err.error === "invalid_client") headers["WWW-Authenticate"] = 'Basic realm="mcp-lens-minimal"';
  sendJson(res, err.status, { error: err.error, error_description: err.description }, headers);
}

function isFormRequest(req: http.IncomingMessage): boolean {
  const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
  return type === "application/x-www-form-urlencoded";
}

function formatHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

interface Session {
  transport: StreamableHTTPServerTransport;
  mcp: McpServer;
}

export async function startMinimalServer(opts: MinimalServerOptions = {}): Promise<MinimalServerHandle> {
  const host = opts.host ?? "127.0.0.1";
  const responseMode = opts.responseMode ?? "sse";
  const requireAuth = opts.requireAuth ?? false;

  const sessions = new Map<string, Session>();
  /** Transports created for an initialize that has not (yet) produced a session. */
  const pending = new Set<Session>();
  const shutdown = new AbortController();
  let auth!: AuthServer; // set once the port is known (publicUrl may default to it)

  async function handleMcp(req: http.IncomingMessage & { auth?: AuthInfo }, res: http.ServerResponse) {
    const method = req.method ?? "GET";
    if (method !== "POST" && method !== "GET" && method !== "DELETE") {
      res.setHeader("Allow", "GET, POST, DELETE");
      return jsonRpcError(res, 405, -32000, "Method not allowed");
    }

    if (requireAuth) {
      const header = req.headers.authorization;
      const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
      const challenge = (error?: string, description?: string) =>
        `Bearer ${error ? `error="${error}", error_description="${description}", ` : ""}resource_metadata="${auth.resourceMetadataUrl}"`;
      if (!match) {
        return sendJson(
          res,
          401,
          { error: "invalid_token", error_description: "Missing Bearer access token" },
          { "WWW-Authenticate": challenge() },
        );
      }
      const verified = auth.verifyAccessToken(match[1]!);
      if (typeof verified === "string") {
        return sendJson(
          res,
          401,
          { error: "invalid_token", error_description: verified },
          { "WWW-Authenticate": challenge("invalid_token", verified) },
        );
      }
      req.auth = verified;
    }

    let parsedBody: unknown;
    if (method === "POST") {
      let raw: Buffer;
      try {
        raw = await readBody(req, MAX_MCP_BODY);
      } catch (err) {
        if (err instanceof BodyTooLargeError) return jsonRpcError(res, 413, -32600, "Request body too large");
        throw err;
      }
      try {
        parsedBody = JSON.parse(raw.toString("utf8"));
      } catch {
        return jsonRpcError(res, 400, -32700, "Parse error: invalid JSON");
      }
    }

    const sessionHeader = req.headers["mcp-session-id"];
    const sessionId = Array.isArray(sessionHeader) ? sessionHeader[0] : sessionHeader;

    if (sessionId) {
      const session = sessions.get(sessionId);
      if (!session) return jsonRpcError(res, 404, -32001, "Session not found");
      return session.transport.handleRequest(req, res, parsedBody);
    }

    const isInit =
      method === "POST" &&
      (isInitializeRequest(parsedBody) || (Array.isArray(parsedBody) && parsedBody.some((m) => isInitializeRequest(m))));
    if (!isInit) {
      return jsonRpcError(res, 400, -32000, "Bad Request: Mcp-Session-Id header is required");
    }
    if (shutdown.signal.aborted) return jsonRpcError(res, 503, -32000, "Server is shutting down");

    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: responseMode === "json",
      onsessioninitialized: (id) => {
        sessions.set(id, session);
        pending.delete(session);
      },
    });
    const mcp = createMcpServer(responseMode, shutdown.signal);
    const session: Session = { transport, mcp };
    // Set before connect(): Protocol.connect wraps (and keeps calling) an existing onclose.
    transport.onclose = () => {
      pending.delete(session);
      const id = transport.sessionId;
      if (id && sessions.get(id) === session) sessions.delete(id);
    };
    pending.add(session);
    await mcp.connect(transport);
    await transport.handleRequest(req, res, parsedBody);
    if (!transport.sessionId) {
      // initialize was rejected: nothing to keep
      await mcp.close().catch(() => {});
    }
  }

  async function handleOAuth(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<boolean> {
    const method = req.method ?? "GET";
    const path = url.pathname;

    if (
      method === "GET" &&
      (path === `/.well-known/oauth-protected-resource${MCP_PATH}` || path === "/.well-known/oauth-protected-resource")
    ) {
      sendJson(res, 200, auth.protectedResourceMetadata());
      return true;
    }
    if (method === "GET" && path === "/.well-known/oauth-authorization-server") {
      sendJson(res, 200, auth.authorizationServerMetadata());
      return true;
    }

    if (path === "/register") {
      if (method !== "POST") return methodNotAllowed(res, "POST");
      try {
        const raw = await readBody(req, MAX_FORM_BODY);
        let body: unknown;
        try {
          body = JSON.parse(raw.toString("utf8"));
        } catch {
          throw new OAuthError("invalid_client_metadata", "Body must be JSON");
        }
        const client = auth.register(body);
        sendJson(
          res,
          201,
          { ...client, ...(client.client_secret ? { client_secret_expires_at: 0 } : {}) },
          NO_STORE,
        );
      } catch (err) {
        if (err instanceof BodyTooLargeError) {
          sendOAuthError(res, new OAuthError("invalid_client_metadata", err.message, 413));
        } else if (err instanceof OAuthError) sendOAuthError(res, err);
        else throw err;
      }
      return true;
    }

    if (path === "/authorize") {
      if (method !== "GET") return methodNotAllowed(res, "GET");
      try {
        const location = auth.authorize(url.searchParams);
        res.writeHead(302, { Location: location, "Cache-Control": "no-store" });
        res.end();
      } catch (err) {
        if (err instanceof OAuthError) sendOAuthError(res, err);
        else throw err;
      }
      return true;
    }

    if (path === "/token" || path === "/revoke") {
      if (method !== "POST") return methodNotAllowed(res, "POST");
      try {
        if (!isFormRequest(req)) {
          throw new OAuthError("invalid_request", "Content-Type must be application/x-www-form-urlencoded");
        }
        let raw: Buffer;
        try {
          raw = await readBody(req, MAX_FORM_BODY);
        } catch (err) {
          if (err instanceof BodyTooLargeError) throw new OAuthError("invalid_request", err.message, 413);
          throw err;
        }
        const form = new URLSearchParams(raw.toString("utf8"));
        if (path === "/token") {
          sendJson(res, 200, auth.token(form, req.headers.authorization), NO_STORE);
        } else {
          auth.revoke(form, req.headers.authorization);
          res.writeHead(200, { "Content-Length": "0", ...NO_STORE });
          res.end();
        }
      } catch (err) {
        if (err instanceof OAuthError) sendOAuthError(res, err);
        else throw err;
      }
      return true;
    }
    return false;
  }

  function methodNotAllowed(res: http.ServerResponse, allow: string): true {
    sendJson(res, 405, { error: "invalid_request", error_description: "Method not allowed" }, { Allow: allow });
    return true;
  }

  const httpServer = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? "/", "http://localhost");
      try {
        if (url.pathname === MCP_PATH) return await handleMcp(req, res);
        if (url.pathname === "/health" && req.method === "GET") return sendJson(res, 200, { status: "ok" });
        if (await handleOAuth(req, res, url)) return;
        sendJson(res, 404, { error: "not_found", path: url.pathname });
      } catch (err) {
        if (!res.headersSent) {
          if (url.pathname === MCP_PATH) jsonRpcError(res, 500, -32603, "Internal server error");
          else sendJson(res, 500, { error: "server_error", error_description: String(err) });
        } else {
          res.destroy();
        }
      }
    })();
  });

  await new Promise<void>((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(opts.port ?? 0, host, () => {
      httpServer.off("error", reject);
      resolve();
    });
  });

  const port = (httpServer.address() as AddressInfo).port;
  const url = `http://${formatHost(host)}:${port}`;
  auth = new AuthServer((opts.publicUrl ?? url).replace(/\/+$/, ""));

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      shutdown.abort();
      const all = [...sessions.values(), ...pending];
      sessions.clear();
      pending.clear();
      // Closing each transport ends its open SSE streams (POST and standalone GET).
      await Promise.allSettled(all.map((s) => s.mcp.close()));
      await new Promise<void>((resolve) => {
        httpServer.close(() => resolve());
        httpServer.closeAllConnections();
      });
    })();
    return closing;
  };

  return { url, mcpUrl: `${url}${MCP_PATH}`, port, close };
}
