import { describe, expect, it } from "vitest";
import {
  classify,
  createClassifier,
  emptyKnownEndpoints,
  KNOWN_HOSTS_CAP,
  learnEndpoints,
  type KnownEndpoints,
} from "../../analysis/classify.js";
import {
  EXCHANGE_KINDS,
  headerValue,
  isHeaderName,
  type ClassifiedExchange,
  type ExchangeFacts,
  type ExchangeKind,
  type HeaderPairs,
  type McpFacts,
  type MetadataFacts,
  type RecordedBody,
  type RecordedExchange,
} from "../../analysis/exchange.js";

// ---------------------------------------------------------------------------------------------
// Building recorded exchanges

const HOST = "mcp.example.com";
const ORIGIN = `https://${HOST}`;
const CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback";
const JSON_TYPE: [string, string] = ["Content-Type", "application/json"];
const FORM_TYPE: [string, string] = ["content-type", "application/x-www-form-urlencoded"];
const SSE_TYPE: [string, string] = ["Content-Type", "text/event-stream"];
const MCP_ACCEPT: [string, string] = ["Accept", "application/json, text/event-stream"];
const BEARER: [string, string] = ["Authorization", "Bearer [redacted:5eed0a11]"];

interface Spec {
  method?: string;
  host?: string;
  path: string;
  query?: string;
  status?: number;
  websocket?: boolean;
  req?: HeaderPairs;
  res?: HeaderPairs;
  body?: string | RecordedBody;
  reply?: string | RecordedBody;
}

function text(value: string, extra: Partial<RecordedBody> = {}): RecordedBody {
  return { text: value, encoding: "utf8", size: Buffer.byteLength(value), truncated: false, decoded: null, ...extra };
}

const NO_BODY: RecordedBody = { text: null, encoding: "utf8", size: 0, truncated: false, decoded: null };

function body(value: string | RecordedBody | undefined): RecordedBody {
  if (value === undefined) return NO_BODY;
  return typeof value === "string" ? text(value) : value;
}

let nextId = 1;
function exchange(spec: Spec): RecordedExchange {
  return {
    id: nextId++,
    startedAt: 1_760_000_000_000,
    durationMs: 12,
    ttfbMs: 10,
    clientAddr: "203.0.113.7",
    method: spec.method ?? "GET",
    host: spec.host ?? HOST,
    path: spec.path,
    query: spec.query ?? null,
    status: spec.status ?? 200,
    upstreamError: null,
    aborted: false,
    websocket: spec.websocket ?? false,
    requestHeaders: spec.req ?? [],
    requestBody: body(spec.body),
    responseHeaders: spec.res ?? [],
    responseBody: body(spec.reply),
    sseEvents: null,
  };
}

const json = (value: unknown) => JSON.stringify(value);
const form = (params: Record<string, string>) => new URLSearchParams(params).toString();
const sse = (...events: string[]) => events.map((e) => `${e}\n\n`).join("");

const initializeRequest = (id: number, protocolVersion: string, clientInfo: object) => ({
  jsonrpc: "2.0",
  id,
  method: "initialize",
  params: { protocolVersion, capabilities: {}, clientInfo },
});

const initializeResult = {
  jsonrpc: "2.0",
  id: 1,
  result: {
    protocolVersion: "2025-06-18",
    capabilities: { tools: { listChanged: true } },
    serverInfo: { name: "acme-mcp", version: "2.3.0" },
  },
};

const asMetadata = {
  issuer: ORIGIN,
  authorization_endpoint: `${ORIGIN}/authorize`,
  token_endpoint: `${ORIGIN}/token`,
  registration_endpoint: `${ORIGIN}/register`,
  revocation_endpoint: `${ORIGIN}/revoke`,
  code_challenge_methods_supported: ["S256"],
  response_types_supported: ["code"],
  grant_types_supported: ["authorization_code", "refresh_token"],
  token_endpoint_auth_methods_supported: ["client_secret_post", "none"],
  scopes_supported: ["mcp"],
  client_id_metadata_document_supported: true,
};

// ---------------------------------------------------------------------------------------------
// The handshake, exchange by exchange

/** Expected facts: toMatchObject checks the fields given, arrays element by element. */
type Expected<T> = T extends Array<infer U> ? Array<Expected<U>> : T extends object ? { [K in keyof T]?: Expected<T[K]> } : T;

interface Case {
  name: string;
  spec: Spec;
  kind: ExchangeKind;
  facts?: Expected<ExchangeFacts>;
  /** Facts that must not be there. */
  absent?: Array<keyof ExchangeFacts>;
}

const cases: Case[] = [
  // --- The modern era (2026-07-28), as the v2 TypeScript SDK sends it -------------------------
  {
    name: "modern server/discover: _meta version and client info, the headers, supported versions and server info",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE, MCP_ACCEPT, ["mcp-protocol-version", "2026-07-28"], ["mcp-method", "server/discover"]],
      body: json({
        jsonrpc: "2.0",
        id: "server-discover-probe-1",
        method: "server/discover",
        params: {
          _meta: {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": { name: "verify-v2-client", version: "2.4.0" },
            "io.modelcontextprotocol/clientCapabilities": { sampling: {} },
          },
        },
      }),
      res: [JSON_TYPE],
      reply: json({
        jsonrpc: "2.0",
        id: "server-discover-probe-1",
        result: {
          supportedVersions: ["2026-07-28"],
          capabilities: { tools: {} },
          resultType: "complete",
          _meta: { "io.modelcontextprotocol/serverInfo": { name: "acme", version: "2.4.0" } },
        },
      }),
    },
    kind: "mcp_post",
    facts: {
      mcp: {
        methods: ["server/discover"],
        era: "modern",
        metaProtocolVersion: "2026-07-28",
        clientCapabilities: ["sampling"],
        protocolVersionHeader: "2026-07-28",
        methodHeader: "server/discover",
        clientInfo: { name: "verify-v2-client", version: "2.4.0" },
        serverInfo: { name: "acme", version: "2.4.0" },
        resultType: "complete",
        supportedVersions: ["2026-07-28"],
      },
    },
  },
  {
    name: "modern tools/call whose headers disagree with the body (a gateway renamed the tool), answered -32020",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE, ["MCP-Protocol-Version", "2026-07-28"], ["Mcp-Method", "tools/call"], ["Mcp-Name", "prefix_echo"]],
      body: json({
        jsonrpc: "2.0",
        id: 3,
        method: "tools/call",
        params: { name: "echo", _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28" } },
      }),
      status: 400,
      res: [JSON_TYPE],
      reply: json({ jsonrpc: "2.0", id: 3, error: { code: -32020, message: "Header mismatch" } }),
    },
    kind: "mcp_post",
    facts: {
      mcp: {
        era: "modern",
        nameHeader: "prefix_echo",
        headerMismatch: ["Mcp-Name: prefix_echo but the body says echo"],
        messages: [
          { direction: "request", type: "request", method: "tools/call", id: 3 },
          { direction: "response", type: "error", id: 3, errorCode: -32020, errorMessage: "Header mismatch" },
        ],
      },
    },
  },
  {
    name: "modern subscriptions/listen answered as an SSE stream that starts with the acknowledgement",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE, MCP_ACCEPT, ["MCP-Protocol-Version", "2026-07-28"], ["Mcp-Method", "subscriptions/listen"]],
      body: json({ jsonrpc: "2.0", id: 7, method: "subscriptions/listen", params: { _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28" } } }),
      res: [SSE_TYPE],
      reply: `event: message\ndata: ${json({ jsonrpc: "2.0", method: "notifications/subscriptions/acknowledged", params: {} })}\n\n`,
    },
    kind: "mcp_post",
    facts: {
      mcp: {
        era: "modern",
        sse: true,
        methods: ["subscriptions/listen"],
        messages: [
          { direction: "request", type: "request", method: "subscriptions/listen", id: 7 },
          { direction: "response", type: "notification", method: "notifications/subscriptions/acknowledged" },
        ],
      },
    },
  },
  {
    name: "modern tools/call answered with an InputRequiredResult (resultType input_required)",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE, ["MCP-Protocol-Version", "2026-07-28"], ["Mcp-Method", "tools/call"], ["Mcp-Name", "book"]],
      body: json({ jsonrpc: "2.0", id: 8, method: "tools/call", params: { name: "book", _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28" } } }),
      res: [JSON_TYPE],
      reply: json({ jsonrpc: "2.0", id: 8, result: { resultType: "input_required", inputRequests: {} } }),
    },
    kind: "mcp_post",
    facts: { mcp: { era: "modern", resultType: "input_required", toolNames: ["book"] } },
  },
  {
    name: "a modern request for a method the server lacks: 404 with -32601",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE, ["MCP-Protocol-Version", "2026-07-28"], ["Mcp-Method", "prompts/list"]],
      body: json({ jsonrpc: "2.0", id: 9, method: "prompts/list", params: { _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28" } } }),
      status: 404,
      res: [JSON_TYPE],
      reply: json({ jsonrpc: "2.0", id: 9, error: { code: -32601, message: "Method not found" } }),
    },
    kind: "mcp_post",
    facts: {
      mcp: {
        era: "modern",
        messages: [
          { direction: "request", type: "request", method: "prompts/list", id: 9 },
          { direction: "response", type: "error", id: 9, errorCode: -32601, errorMessage: "Method not found" },
        ],
      },
    },
  },
  {
    name: "a legacy initialize refused by a modern-only server: -32022 with supported and requested",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE, MCP_ACCEPT],
      body: json({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "v1" } } }),
      status: 400,
      res: [JSON_TYPE],
      reply: json({
        jsonrpc: "2.0",
        id: 0,
        error: { code: -32022, message: "Unsupported protocol version: 2025-11-25", data: { supported: ["2026-07-28"], requested: "2025-11-25" } },
      }),
    },
    kind: "mcp_post",
    facts: { mcp: { era: "legacy", supportedVersions: ["2026-07-28"], versionRequestedByError: "2025-11-25" } },
  },
  {
    name: "CIMD: the authorization request's client_id is the metadata document's URL",
    spec: {
      path: "/authorize",
      query: "response_type=code&client_id=https%3A%2F%2Fclient.example%2Foauth%2Fmetadata.json&redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2Fcb",
      status: 302,
      res: [["Location", "/login"]],
    },
    kind: "authorize",
    facts: { clientId: "https://client.example/oauth/metadata.json", clientIdIsMetadataDocument: true },
  },
  {
    name: "RFC 9207: the authorization response carries iss; the metadata promises it",
    spec: {
      method: "POST",
      path: "/authorize/decision",
      req: [FORM_TYPE],
      body: "decision=allow",
      status: 302,
      res: [["Location", `${CLAUDE_CALLBACK}?code=[redacted:c0de0009]&state=s&iss=https%3A%2F%2Fmcp.example.com`]],
    },
    kind: "authorize_consent",
    facts: { iss: "https://mcp.example.com" },
  },
  {
    name: "AS metadata with CIMD and iss support",
    spec: {
      path: "/.well-known/oauth-authorization-server",
      res: [JSON_TYPE],
      reply: json({
        issuer: ORIGIN,
        authorization_endpoint: `${ORIGIN}/authorize`,
        token_endpoint: `${ORIGIN}/token`,
        client_id_metadata_document_supported: true,
        authorization_response_iss_parameter_supported: true,
      }),
    },
    kind: "authorization_server_metadata",
    facts: { metadata: { clientIdMetadataDocumentSupported: true, authorizationResponseIssParameterSupported: true } },
  },
  {
    name: "2026-07-28 dynamic registration names its application_type",
    spec: {
      method: "POST",
      path: "/register",
      req: [JSON_TYPE],
      body: json({ client_name: "agent", redirect_uris: ["http://127.0.0.1:5000/cb"], application_type: "native" }),
      status: 201,
      res: [JSON_TYPE],
      reply: json({ client_id: "c-1", redirect_uris: ["http://127.0.0.1:5000/cb"], application_type: "native" }),
    },
    kind: "registration",
    facts: { applicationType: "native", clientId: "c-1" },
  },
  {
    name: "Claude.ai probe: unauthenticated initialize answered 401 with a PRM challenge",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [["user-agent", "python-httpx/0.28.1"], ["accept", "*/*"], JSON_TYPE],
      body: json(initializeRequest(0, "2025-11-25", { name: "Anthropic" })),
      status: 401,
      res: [
        JSON_TYPE,
        ["WWW-Authenticate", `Bearer resource_metadata="${ORIGIN}/.well-known/oauth-protected-resource/mcp"`],
      ],
      reply: json({ error: "invalid_token", error_description: "Missing bearer token" }),
    },
    kind: "mcp_post",
    facts: {
      userAgent: "python-httpx/0.28.1",
      accept: "*/*",
      contentType: "application/json",
      responseContentType: "application/json",
      wwwAuthenticate: `Bearer resource_metadata="${ORIGIN}/.well-known/oauth-protected-resource/mcp"`,
      resourceMetadataUrl: `${ORIGIN}/.well-known/oauth-protected-resource/mcp`,
      oauthError: "invalid_token",
      oauthErrorDescription: "Missing bearer token",
      mcp: {
        // The 401's JSON error body is not mistaken for a JSON-RPC message.
        messages: [{ direction: "request", type: "request", method: "initialize", id: 0 }],
        methods: ["initialize"],
        protocolVersionRequested: "2025-11-25",
        clientInfo: { name: "Anthropic" },
        sse: false,
      },
    },
    absent: ["bearerFingerprint", "parseError"],
  },
  {
    name: "step-up challenge: unquoted resource_metadata and a scope",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [BEARER, JSON_TYPE, ["Mcp-Session-Id", "sess-1"]],
      body: json({ jsonrpc: "2.0", id: 9, method: "tools/call", params: { name: "delete_file", arguments: {} } }),
      status: 403,
      res: [["www-authenticate", `Bearer error="insufficient_scope", scope="files:write", resource_metadata=${ORIGIN}/prm`]],
    },
    kind: "mcp_post",
    facts: {
      bearerFingerprint: "5eed0a11",
      scope: "files:write",
      resourceMetadataUrl: `${ORIGIN}/prm`,
      mcp: { messages: [{ type: "request", method: "tools/call", id: 9 }], toolNames: ["delete_file"], sessionId: "sess-1" },
    },
  },
  {
    name: "PRM at the path-inserted well-known URL",
    spec: {
      path: "/.well-known/oauth-protected-resource/mcp",
      res: [JSON_TYPE, ["Access-Control-Allow-Origin", "*"]],
      reply: json({
        resource: `${ORIGIN}/mcp`,
        authorization_servers: [ORIGIN],
        scopes_supported: ["mcp"],
        bearer_methods_supported: ["header"],
      }),
    },
    kind: "protected_resource_metadata",
    facts: {
      wellKnownVariant: "path_inserted",
      resource: `${ORIGIN}/mcp`,
      metadata: { resource: `${ORIGIN}/mcp`, authorizationServers: [ORIGIN], scopesSupported: ["mcp"] },
      cors: { allowOrigin: "*" },
    },
  },
  {
    name: "PRM at the root well-known URL, answered by an SPA catch-all",
    spec: {
      path: "/.well-known/oauth-protected-resource",
      res: [["content-type", "text/html; charset=utf-8"]],
      reply: "<!doctype html><html><body>app</body></html>",
    },
    kind: "protected_resource_metadata",
    facts: { wellKnownVariant: "root", responseContentType: "text/html; charset=utf-8" },
    absent: ["metadata", "parseError"],
  },
  {
    name: "AS metadata at the root",
    spec: { path: "/.well-known/oauth-authorization-server", res: [JSON_TYPE], reply: json(asMetadata) },
    kind: "authorization_server_metadata",
    facts: {
      wellKnownVariant: "root",
      metadata: {
        issuer: ORIGIN,
        authorizationEndpoint: `${ORIGIN}/authorize`,
        tokenEndpoint: `${ORIGIN}/token`,
        registrationEndpoint: `${ORIGIN}/register`,
        revocationEndpoint: `${ORIGIN}/revoke`,
        codeChallengeMethodsSupported: ["S256"],
        responseTypesSupported: ["code"],
        grantTypesSupported: ["authorization_code", "refresh_token"],
        tokenEndpointAuthMethodsSupported: ["client_secret_post", "none"],
        scopesSupported: ["mcp"],
        clientIdMetadataDocumentSupported: true,
      },
    },
  },
  {
    name: "AS metadata path-inserted for an issuer with a path",
    spec: { path: "/.well-known/oauth-authorization-server/tenant1", status: 404 },
    kind: "authorization_server_metadata",
    facts: { wellKnownVariant: "path_inserted" },
  },
  {
    name: "OpenID configuration path-appended",
    spec: { path: "/tenant1/.well-known/openid-configuration", res: [JSON_TYPE], reply: json(asMetadata) },
    kind: "openid_configuration",
    facts: { wellKnownVariant: "path_appended", metadata: { issuer: ORIGIN } },
  },
  {
    name: "OpenID configuration path-inserted",
    spec: { path: "/.well-known/openid-configuration/tenant1", status: 404 },
    kind: "openid_configuration",
    facts: { wellKnownVariant: "path_inserted" },
  },
  {
    name: "Dynamic client registration, confidential client",
    spec: {
      method: "POST",
      path: "/register",
      req: [JSON_TYPE, ["User-Agent", "Claude-User"]],
      body: json({
        client_name: "Claude",
        redirect_uris: [CLAUDE_CALLBACK],
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_post",
      }),
      status: 201,
      res: [JSON_TYPE],
      reply: json({
        client_id: "c-7f3a",
        client_secret: "[redacted:0a1b2c3d]",
        client_name: "Claude",
        redirect_uris: [CLAUDE_CALLBACK],
        token_endpoint_auth_method: "client_secret_post",
      }),
    },
    kind: "registration",
    facts: {
      clientName: "Claude",
      redirectUris: [CLAUDE_CALLBACK],
      tokenEndpointAuthMethod: "client_secret_post",
      clientId: "c-7f3a",
      issued: { clientSecret: "0a1b2c3d" },
    },
  },
  {
    name: "Authorization request with PKCE, in the user's browser",
    spec: {
      path: "/authorize",
      query: form({
        response_type: "code",
        client_id: "c-7f3a",
        redirect_uri: CLAUDE_CALLBACK,
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        code_challenge_method: "S256",
        state: "st-42",
        scope: "mcp",
        resource: `${ORIGIN}/mcp`,
      }),
      res: [["content-type", "text/html"]],
      reply: "<form method=post>…</form>",
    },
    kind: "authorize",
    facts: {
      responseType: "code",
      clientId: "c-7f3a",
      redirectUris: [CLAUDE_CALLBACK],
      codeChallengePresent: true,
      codeChallengeMethod: "S256",
      state: "st-42",
      scope: "mcp",
      resource: `${ORIGIN}/mcp`,
    },
  },
  {
    name: "Authorization request without PKCE",
    spec: { path: "/oauth/authorize", query: "response_type=code&client_id=c-7f3a" },
    kind: "authorize",
    facts: { codeChallengePresent: false },
    absent: ["codeChallengeMethod"],
  },
  {
    name: "Consent POST redirected to the callback with a code",
    spec: {
      method: "POST",
      path: "/consent",
      req: [FORM_TYPE, ["Origin", ORIGIN]],
      body: form({ decision: "approve" }),
      status: 302,
      res: [["Location", `${CLAUDE_CALLBACK}?code=[redacted:c0de0001]&state=st-42`]],
    },
    kind: "authorize_consent",
    facts: {
      origin: ORIGIN,
      location: `${CLAUDE_CALLBACK}?code=[redacted:c0de0001]&state=st-42`,
      state: "st-42",
      issued: { code: "c0de0001" },
      codeFingerprint: "c0de0001",
    },
  },
  {
    name: "Consent POST to the authorize path, denied with a 307",
    spec: {
      method: "POST",
      path: "/authorize",
      req: [FORM_TYPE],
      body: form({ decision: "deny" }),
      status: 307,
      res: [["location", `${CLAUDE_CALLBACK}?error=access_denied&error_description=User%20said%20no&state=st-42`]],
    },
    kind: "authorize_consent",
    facts: { oauthError: "access_denied", oauthErrorDescription: "User said no", state: "st-42" },
    absent: ["issued", "codeFingerprint"],
  },
  {
    name: "Token request redeeming a code",
    spec: {
      method: "POST",
      path: "/token",
      req: [FORM_TYPE, ["User-Agent", "python-httpx/0.28.1"]],
      body: form({
        grant_type: "authorization_code",
        code: "[redacted:c0de0001]",
        redirect_uri: CLAUDE_CALLBACK,
        code_verifier: "[redacted:7e71f1e5]",
        client_id: "c-7f3a",
        client_secret: "[redacted:0a1b2c3d]",
        resource: `${ORIGIN}/mcp`,
      }),
      res: [JSON_TYPE],
      reply: json({
        access_token: "[redacted:acce5500]",
        token_type: "Bearer",
        expires_in: 3600,
        refresh_token: "[redacted:4e4e4e4e]",
        id_token: "[redacted:1d1d1d1d]",
        scope: "mcp",
      }),
    },
    kind: "token",
    facts: {
      grantType: "authorization_code",
      codeFingerprint: "c0de0001",
      redirectUris: [CLAUDE_CALLBACK],
      clientId: "c-7f3a",
      resource: `${ORIGIN}/mcp`,
      issued: { accessToken: "acce5500", refreshToken: "4e4e4e4e", idToken: "1d1d1d1d" },
      tokenType: "Bearer",
      expiresIn: 3600,
      scope: "mcp",
    },
  },
  {
    name: "Token request authenticating the client with HTTP Basic",
    spec: {
      method: "POST",
      path: "/token",
      req: [FORM_TYPE, ["Authorization", "Basic [redacted:ba51c000]"]],
      body: form({ grant_type: "authorization_code", code: "[redacted:c0de0004]" }),
    },
    kind: "token",
    facts: { codeFingerprint: "c0de0004" },
    absent: ["bearerFingerprint"],
  },
  {
    name: "Refresh rejected with invalid_grant",
    spec: {
      method: "POST",
      path: "/oauth2/token",
      req: [FORM_TYPE],
      body: form({ grant_type: "refresh_token", refresh_token: "[redacted:4e4e4e4e]", client_id: "c-7f3a" }),
      status: 400,
      res: [JSON_TYPE],
      reply: json({ error: "invalid_grant", error_description: "refresh token expired" }),
    },
    kind: "token",
    facts: { grantType: "refresh_token", refreshTokenFingerprint: "4e4e4e4e", oauthError: "invalid_grant" },
    absent: ["issued"],
  },
  {
    name: "Token answer with expires_in as a string",
    spec: {
      method: "POST",
      path: "/token",
      req: [FORM_TYPE],
      body: "grant_type=client_credentials",
      res: [JSON_TYPE],
      reply: json({ access_token: "[redacted:acce5501]", token_type: "bearer", expires_in: "7200" }),
    },
    kind: "token",
    facts: { expiresIn: 7200, tokenType: "bearer" },
  },
  {
    name: "Revocation",
    spec: {
      method: "POST",
      path: "/oauth/revoke",
      req: [FORM_TYPE],
      body: form({ token: "[redacted:4e4e4e4e]", token_type_hint: "refresh_token" }),
    },
    kind: "revoke",
  },
  {
    name: "Authenticated initialize answered as SSE with a session id",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [BEARER, JSON_TYPE, MCP_ACCEPT],
      body: json(initializeRequest(1, "2025-06-18", { name: "claude-ai", version: "0.1.0" })),
      res: [
        SSE_TYPE,
        ["mcp-session-id", "sess-1"],
        ["Access-Control-Allow-Origin", "https://claude.ai"],
        ["Access-Control-Expose-Headers", "Mcp-Session-Id"],
      ],
      // CRLF line endings and an SSE comment, as some servers send.
      reply: `: ping\r\nevent: message\r\nid: 1\r\ndata: ${json(initializeResult)}\r\n\r\n`,
    },
    kind: "mcp_post",
    facts: {
      bearerFingerprint: "5eed0a11",
      cors: { allowOrigin: "https://claude.ai", exposeHeaders: "Mcp-Session-Id" },
      mcp: {
        messages: [
          { direction: "request", type: "request", method: "initialize", id: 1 },
          { direction: "response", type: "result", id: 1 },
        ],
        protocolVersionRequested: "2025-06-18",
        protocolVersionAnswered: "2025-06-18",
        clientInfo: { name: "claude-ai", version: "0.1.0" },
        serverInfo: { name: "acme-mcp", version: "2.3.0" },
        sessionId: "sess-1",
        sessionIdAssigned: "sess-1",
        sse: true,
      },
    },
  },
  {
    name: "notifications/initialized accepted with 202",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [BEARER, JSON_TYPE, ["Mcp-Session-Id", "sess-1"], ["MCP-Protocol-Version", "2025-06-18"]],
      body: json({ jsonrpc: "2.0", method: "notifications/initialized" }),
      status: 202,
    },
    kind: "mcp_post",
    facts: {
      mcp: {
        messages: [{ direction: "request", type: "notification", method: "notifications/initialized" }],
        methods: ["notifications/initialized"],
        protocolVersionHeader: "2025-06-18",
        sessionId: "sess-1",
      },
    },
  },
  {
    name: "2025-03-26 batch answered with a JSON array",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE],
      body: json([
        { jsonrpc: "2.0", id: "a", method: "tools/list" },
        { jsonrpc: "2.0", id: "b", method: "tools/call", params: { name: "search", arguments: { q: "x" } } },
      ]),
      res: [JSON_TYPE],
      reply: json([
        { jsonrpc: "2.0", id: "a", result: { tools: [] } },
        { jsonrpc: "2.0", id: "b", result: { content: [] } },
      ]),
    },
    kind: "mcp_post",
    facts: {
      mcp: {
        messages: [
          { direction: "request", type: "request", method: "tools/list", id: "a" },
          { direction: "request", type: "request", method: "tools/call", id: "b" },
          { direction: "response", type: "result", id: "a" },
          { direction: "response", type: "result", id: "b" },
        ],
        methods: ["tools/list", "tools/call"],
        toolNames: ["search"],
        sse: false,
      },
    },
  },
  {
    name: "Missing session answered with a JSON-RPC error whose id is null",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE],
      body: json({ jsonrpc: "2.0", id: 2, method: "tools/list" }),
      status: 400,
      res: [JSON_TYPE],
      reply: json({ jsonrpc: "2.0", id: null, error: { code: -32600, message: "Bad Request: No valid session ID" } }),
    },
    kind: "mcp_post",
    facts: {
      mcp: {
        messages: [
          { direction: "request", type: "request", method: "tools/list", id: 2 },
          { direction: "response", type: "error", id: null, errorCode: -32600, errorMessage: "Bad Request: No valid session ID" },
        ],
      },
    },
    absent: ["oauthError"],
  },
  {
    name: "Request that is not valid MCP JSON-RPC (params as an array)",
    spec: { method: "POST", path: "/mcp", req: [JSON_TYPE], body: json({ jsonrpc: "2.0", id: 3, method: "tools/list", params: [] }) },
    kind: "mcp_post",
    facts: { mcp: { messages: [{ direction: "request", type: "invalid", method: "tools/list", id: 3 }], methods: ["tools/list"] } },
  },
  {
    name: "GET stream on the MCP path delivering a server notification",
    spec: {
      path: "/mcp",
      req: [["Accept", "text/event-stream"], ["Mcp-Session-Id", "sess-1"]],
      res: [SSE_TYPE],
      reply: sse(`event: message\ndata: ${json({ jsonrpc: "2.0", method: "notifications/tools/list_changed" })}`),
    },
    kind: "mcp_get_stream",
    facts: {
      mcp: {
        messages: [{ direction: "response", type: "notification", method: "notifications/tools/list_changed" }],
        methods: [],
        sse: true,
      },
    },
  },
  {
    name: "An SSE event with an empty event name is a message",
    spec: { path: "/mcp", req: [MCP_ACCEPT], res: [SSE_TYPE], reply: sse(`event:\ndata: ${json({ jsonrpc: "2.0", method: "notifications/message" })}`) },
    kind: "mcp_get_stream",
    facts: { mcp: { messages: [{ direction: "response", type: "notification", method: "notifications/message" }] } },
  },
  {
    name: "GET stream refused with 405",
    spec: { path: "/mcp/", req: [["accept", "text/event-stream"]], status: 405 },
    kind: "mcp_get_stream",
  },
  {
    name: "Legacy HTTP+SSE stream: the endpoint event is not a message",
    spec: { path: "/sse", res: [SSE_TYPE], reply: sse("event: endpoint\ndata: /messages?sessionId=abc") },
    kind: "mcp_get_stream",
    facts: { mcp: { messages: [], methods: [], sse: true } },
    absent: ["parseError"],
  },
  {
    name: "Legacy POST /messages",
    spec: { method: "POST", path: "/messages", query: "sessionId=abc", req: [JSON_TYPE], body: json({ jsonrpc: "2.0", id: 1, method: "ping" }), status: 202 },
    kind: "mcp_post",
    facts: { mcp: { methods: ["ping"] } },
  },
  {
    name: "Session teardown",
    spec: { method: "DELETE", path: "/mcp", req: [BEARER, ["Mcp-Session-Id", "sess-1"]], status: 405 },
    kind: "mcp_delete",
    facts: { mcp: { messages: [], methods: [], sessionId: "sess-1" } },
  },
  {
    name: "CORS preflight from a browser client",
    spec: {
      method: "OPTIONS",
      path: "/mcp",
      req: [
        ["Origin", "http://localhost:6274"],
        ["Access-Control-Request-Method", "POST"],
        ["Access-Control-Request-Headers", "authorization, content-type, mcp-protocol-version"],
      ],
      status: 204,
      res: [
        ["Access-Control-Allow-Origin", "http://localhost:6274"],
        ["Access-Control-Allow-Methods", "GET, POST, DELETE"],
        ["Access-Control-Allow-Headers", "authorization, content-type"],
        ["Access-Control-Expose-Headers", "mcp-session-id"],
      ],
    },
    kind: "cors_preflight",
    facts: {
      origin: "http://localhost:6274",
      cors: {
        requestMethod: "POST",
        requestHeaders: "authorization, content-type, mcp-protocol-version",
        allowOrigin: "http://localhost:6274",
        allowMethods: "GET, POST, DELETE",
        allowHeaders: "authorization, content-type",
        exposeHeaders: "mcp-session-id",
      },
    },
    absent: ["mcp"],
  },
  {
    name: "Preflight for a well-known document is still a preflight",
    spec: { method: "OPTIONS", path: "/.well-known/oauth-protected-resource", req: [["access-control-request-method", "GET"]] },
    kind: "cors_preflight",
    facts: { wellKnownVariant: "root" },
  },
  { name: "Health probe", spec: { path: "/healthz", reply: "ok" }, kind: "health" },
  { name: "Websocket upgrade", spec: { path: "/mcp", websocket: true, status: 101 }, kind: "websocket" },
  { name: "Anything else", spec: { path: "/favicon.ico", status: 404 }, kind: "other" },
  {
    name: "A plain GET on the MCP path is not a stream attempt",
    spec: { path: "/mcp", req: [["accept", "text/html"]], status: 405 },
    kind: "other",
  },

  // Content heuristics: servers with their own paths, before anything was learned.
  {
    name: "JSON-RPC on an unusual path",
    spec: { method: "POST", path: "/api/v2/rpc", req: [JSON_TYPE], body: json({ jsonrpc: "2.0", id: 1, method: "tools/list" }) },
    kind: "mcp_post",
  },
  {
    name: "GET answered with an event stream",
    spec: { path: "/events", res: [["content-type", "text/event-stream; charset=utf-8"]], reply: ": keep-alive\n\n" },
    kind: "mcp_get_stream",
  },
  { name: "DELETE with a session id", spec: { method: "DELETE", path: "/rpc", req: [["mcp-session-id", "s"]] }, kind: "mcp_delete" },
  {
    name: "Token request on an unusual path",
    spec: { method: "POST", path: "/api/oauth/exchange", req: [FORM_TYPE], body: "grant_type=authorization_code&code=%5Bredacted%3Ac0de0002%5D" },
    kind: "token",
    facts: { codeFingerprint: "c0de0002" },
  },
  {
    name: "Token request sent as JSON (a client bug some servers reject)",
    spec: { method: "POST", path: "/oauth-token", req: [JSON_TYPE], body: json({ grant_type: "authorization_code" }) },
    kind: "token",
    facts: { grantType: "authorization_code" },
  },
  {
    name: "Revocation on an unusual path",
    spec: { method: "POST", path: "/auth/v1/revoke", req: [FORM_TYPE], body: "token=%5Bredacted%3A4e4e4e4e%5D" },
    kind: "revoke",
  },
  {
    name: "Registration on an unusual path",
    spec: { method: "POST", path: "/clients", req: [JSON_TYPE], body: json({ redirect_uris: ["http://localhost:33418/callback"] }) },
    kind: "registration",
    facts: { redirectUris: ["http://localhost:33418/callback"] },
  },
  {
    name: "Authorization request on an unusual path",
    spec: { path: "/login/oauth", query: "response_type=code&client_id=https%3A%2F%2Fclaude.ai%2Fmcp.json" },
    kind: "authorize",
    facts: { clientId: "https://claude.ai/mcp.json" },
  },
  {
    name: "A federated login's own callback delivering the code",
    spec: {
      path: "/oauth/github/callback",
      query: "code=gh-code&state=gh-state",
      status: 303,
      res: [["Location", "https://chatgpt.com/connector_platform_oauth_redirect?code=%5Bredacted%3Ac0de0003%5D&state=cg"]],
    },
    kind: "authorize_consent",
    facts: { issued: { code: "c0de0003" }, codeFingerprint: "c0de0003", state: "cg" },
  },
  {
    name: "AS metadata served from an unusual path",
    spec: { path: "/auth/meta.json", res: [JSON_TYPE], reply: json(asMetadata) },
    kind: "authorization_server_metadata",
    facts: { metadata: { tokenEndpoint: `${ORIGIN}/token` } },
    absent: ["wellKnownVariant"],
  },
  {
    name: "PRM served from an unusual path",
    spec: { path: "/prm.json", res: [JSON_TYPE], reply: json({ resource: `${ORIGIN}/mcp`, authorization_servers: [ORIGIN] }) },
    kind: "protected_resource_metadata",
    facts: { resource: `${ORIGIN}/mcp` },
  },

  // Damaged and binary bodies: facts from what survives, never a throw.
  {
    name: "Truncated JSON-RPC request is still an MCP POST",
    spec: {
      method: "POST",
      path: "/api/rpc",
      req: [JSON_TYPE, ["MCP-Protocol-Version", "2025-06-18"]],
      body: text('{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"upload","arguments":{"data":"AAAA', { truncated: true, size: 900_000 }),
    },
    kind: "mcp_post",
    facts: { parseError: expect.stringContaining("request body (truncated)") as string, mcp: { messages: [], protocolVersionHeader: "2025-06-18" } },
  },
  {
    name: "Truncated SSE answer: the cut-off last event is dropped",
    spec: {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE],
      body: json({ jsonrpc: "2.0", id: 5, method: "tools/list" }),
      res: [SSE_TYPE],
      reply: text(`${sse(`data: ${json({ jsonrpc: "2.0", method: "notifications/progress", params: { progressToken: 1, progress: 1 } })}`)}data: {"jsonrpc":"2.0","id":5,"result":{"tools":[{"na`, { truncated: true }),
    },
    kind: "mcp_post",
    facts: { mcp: { messages: [{ direction: "request", method: "tools/list" }, { direction: "response", type: "notification", method: "notifications/progress" }] } },
    absent: ["parseError"],
  },
  {
    name: "SSE event whose data is not JSON",
    spec: { method: "POST", path: "/mcp", req: [JSON_TYPE], body: json({ jsonrpc: "2.0", id: 6, method: "ping" }), res: [SSE_TYPE], reply: sse("data: {oops") },
    kind: "mcp_post",
    facts: { parseError: expect.stringContaining("response SSE event") as string },
  },
  {
    name: "Token endpoint claiming JSON but answering HTML",
    spec: { method: "POST", path: "/token", req: [FORM_TYPE], body: "grant_type=authorization_code", status: 502, res: [JSON_TYPE], reply: "<html>Bad Gateway</html>" },
    kind: "token",
    facts: { parseError: expect.stringContaining("response body:") as string },
  },
  {
    name: "Base64 bodies are never parsed",
    spec: {
      method: "POST",
      path: "/upload",
      req: [JSON_TYPE],
      body: { text: Buffer.from('{"jsonrpc":"2.0","id":1,"method":"x"}').toString("base64"), encoding: "base64", size: 36, truncated: false, decoded: null },
      res: [JSON_TYPE],
      reply: { text: "/w==", encoding: "base64", size: 1, truncated: false, decoded: "gzip" },
    },
    kind: "other",
    absent: ["parseError", "mcp"],
  },
  {
    name: "An unredacted bearer never becomes a fingerprint",
    spec: { method: "POST", path: "/mcp", req: [["authorization", "Bearer eyJhbGciOi.raw.token"]], body: json({ jsonrpc: "2.0", id: 1, method: "ping" }) },
    kind: "mcp_post",
    absent: ["bearerFingerprint"],
  },
];

describe("classify", () => {
  it.each(cases)("$name", ({ spec, kind, facts, absent }) => {
    const result = classify(exchange(spec), emptyKnownEndpoints());
    expect(result.kind).toBe(kind);
    if (facts) expect(result.facts).toMatchObject(facts);
    for (const key of absent ?? []) expect(result.facts).not.toHaveProperty(key);
  });

  it("never throws on odd bodies", () => {
    const odd = ["null", "[]", "[1,2]", '"str"', "{}", '{"jsonrpc":"2.0"}', '[{"jsonrpc":"2.0","id":{}}]', "{", "\u0000\uffff"];
    for (const value of odd) {
      for (const method of ["POST", "GET", "DELETE"]) {
        const spec: Spec = { method, path: "/mcp", req: [JSON_TYPE, MCP_ACCEPT], body: value, res: [JSON_TYPE], reply: value };
        expect(() => classify(exchange(spec), emptyKnownEndpoints())).not.toThrow();
        const sseSpec: Spec = { ...spec, res: [SSE_TYPE], reply: `data: ${value}\n\n` };
        expect(() => classify(exchange(sseSpec), emptyKnownEndpoints())).not.toThrow();
      }
    }
  });

  it("omits every fact the traffic does not show", () => {
    expect(classify(exchange({ path: "/" }), emptyKnownEndpoints()).facts).toEqual({});
  });
});

// Every kind and every fact is asserted somewhere in the table above. The Records below fail to
// compile when the data model grows a field, which brings the new field here.
describe("table coverage", () => {
  const factKeys: Record<keyof ExchangeFacts, true> = {
    wellKnownVariant: true, origin: true, userAgent: true, accept: true, contentType: true,
    responseContentType: true, bearerFingerprint: true, redirectUris: true, clientId: true,
    clientName: true, state: true, grantType: true, responseType: true, codeChallengeMethod: true,
    codeChallengePresent: true, tokenEndpointAuthMethod: true, resource: true, scope: true,
    wwwAuthenticate: true, resourceMetadataUrl: true, location: true, oauthError: true,
    oauthErrorDescription: true, issued: true, codeFingerprint: true, refreshTokenFingerprint: true,
    tokenType: true, expiresIn: true, metadata: true, mcp: true, cors: true, parseError: true,
    clientIdIsMetadataDocument: true, applicationType: true, iss: true,
  };
  const mcpKeys: Record<keyof McpFacts, true> = {
    messages: true, methods: true, protocolVersionRequested: true, protocolVersionAnswered: true,
    protocolVersionHeader: true, sessionId: true, sessionIdAssigned: true, clientInfo: true,
    serverInfo: true, toolNames: true, sse: true, era: true, metaProtocolVersion: true, methodHeader: true,
    nameHeader: true, headerMismatch: true, resultType: true, supportedVersions: true, versionRequestedByError: true,
    clientCapabilities: true,
  };
  const metadataKeys: Record<keyof MetadataFacts, true> = {
    resource: true, authorizationServers: true, issuer: true, authorizationEndpoint: true,
    tokenEndpoint: true, registrationEndpoint: true, revocationEndpoint: true,
    codeChallengeMethodsSupported: true, responseTypesSupported: true, grantTypesSupported: true,
    tokenEndpointAuthMethodsSupported: true, scopesSupported: true, clientIdMetadataDocumentSupported: true,
    authorizationResponseIssParameterSupported: true,
  };
  const issuedKeys: Record<keyof NonNullable<ExchangeFacts["issued"]>, true> = {
    accessToken: true, refreshToken: true, idToken: true, code: true, clientSecret: true,
  };
  const corsKeys: Record<keyof NonNullable<ExchangeFacts["cors"]>, true> = {
    requestMethod: true, requestHeaders: true, allowOrigin: true, allowMethods: true, allowHeaders: true, exposeHeaders: true,
  };
  const asserted = (pick: (facts: Expected<ExchangeFacts>) => object | undefined) =>
    new Set(cases.flatMap((c) => Object.keys((c.facts && pick(c.facts)) ?? {})));

  it("asserts every kind", () => {
    expect(new Set(cases.map((c) => c.kind))).toEqual(new Set(EXCHANGE_KINDS));
  });
  it.each([
    ["facts", factKeys, (f: Expected<ExchangeFacts>) => f],
    ["facts.mcp", mcpKeys, (f: Expected<ExchangeFacts>) => f.mcp],
    ["facts.metadata", metadataKeys, (f: Expected<ExchangeFacts>) => f.metadata],
    ["facts.issued", issuedKeys, (f: Expected<ExchangeFacts>) => f.issued],
    ["facts.cors", corsKeys, (f: Expected<ExchangeFacts>) => f.cors],
  ] as const)("asserts every field of %s", (_, keys, pick) => {
    expect(asserted(pick)).toEqual(new Set(Object.keys(keys)));
  });
});

// ---------------------------------------------------------------------------------------------
// Learning a server's own endpoints

describe("learnEndpoints", () => {
  const H = "h.example.com";
  const customMetadata = exchange({
    host: H,
    path: "/.well-known/oauth-authorization-server",
    res: [JSON_TYPE],
    reply: json({
      issuer: `https://${H}`,
      authorization_endpoint: `https://${H}/oauth2/v1/authorize`,
      token_endpoint: `https://${H}/oauth2/v1/tok`,
      registration_endpoint: `https://${H}/oauth2/v1/clients`,
      revocation_endpoint: `https://${H}/oauth2/v1/revoke`,
    }),
  });
  const customPrm = exchange({
    host: H,
    path: "/.well-known/oauth-protected-resource",
    res: [JSON_TYPE],
    reply: json({ resource: `https://${H}/api/mcp`, authorization_servers: [`https://${H}`] }),
  });
  const challenge = exchange({
    method: "POST",
    host: H,
    path: "/api/mcp",
    status: 401,
    res: [["WWW-Authenticate", `Bearer resource_metadata="https://${H}/auth/resource.json"`]],
  });

  // Requests that only the learned paths can place: no telling content, no conventional path.
  const later: Array<[Spec, ExchangeKind]> = [
    [{ method: "GET", path: "/oauth2/v1/authorize", query: "client_id=x" }, "authorize"],
    [{ method: "POST", path: "/oauth2/v1/authorize", req: [FORM_TYPE], body: "approve=1" }, "authorize_consent"],
    [{ method: "POST", path: "/oauth2/v1/tok", req: [JSON_TYPE], body: "{}" }, "token"],
    [{ method: "POST", path: "/oauth2/v1/clients", req: [JSON_TYPE], body: json({ client_name: "x" }) }, "registration"],
    [{ method: "POST", path: "/oauth2/v1/revoke" }, "revoke"],
    [{ method: "POST", path: "/api/mcp", status: 400 }, "mcp_post"],
    [{ method: "GET", path: "/api/mcp", req: [["accept", "text/event-stream"]], status: 405 }, "mcp_get_stream"],
    [{ method: "DELETE", path: "/api/mcp/" }, "mcp_delete"],
    [{ method: "GET", path: "/auth/resource.json", status: 404 }, "protected_resource_metadata"],
  ];

  it.each(later.map(([spec, kind]) => [`${spec.method} ${spec.path}`, kind, spec] as const))("%s is %s by the learned paths", (_, kind, spec) => {
    const known = [customMetadata, customPrm, challenge].reduce(
      (k, e) => learnEndpoints(k, { ...e, ...classify(e, k) }),
      emptyKnownEndpoints(),
    );
    expect(classify(exchange({ ...spec, host: H }), emptyKnownEndpoints()).kind).toBe("other");
    expect(classify(exchange({ ...spec, host: H }), known).kind).toBe(kind);
    // Host names compare case-insensitively; other hosts learn nothing from this one.
    expect(classify(exchange({ ...spec, host: "H.Example.COM" }), known).kind).toBe(kind);
    expect(classify(exchange({ ...spec, host: "other.example.com" }), known).kind).toBe("other");
  });

  it("learns the same way through createClassifier", () => {
    const classifyNext = createClassifier();
    classifyNext(customMetadata);
    classifyNext(customPrm);
    const token = classifyNext(exchange({ method: "POST", host: H, path: "/oauth2/v1/tok" }));
    expect(token).toMatchObject({ kind: "token", id: expect.any(Number) as number, path: "/oauth2/v1/tok" });
  });

  it("keys endpoints on another host by that host, and resolves relative ones against the document's", () => {
    const e = exchange({
      host: H,
      path: "/.well-known/oauth-authorization-server",
      res: [JSON_TYPE],
      reply: json({ issuer: "https://auth.example.com", authorization_endpoint: "https://auth.example.com/a", token_endpoint: "/t" }),
    });
    const known = learnEndpoints(emptyKnownEndpoints(), { ...e, ...classify(e, emptyKnownEndpoints()) });
    expect(Object.fromEntries(known.hosts)).toEqual({
      "auth.example.com": { authorization: "/a" },
      [H]: { token: "/t" },
    });
  });

  it("returns the same object when nothing new is revealed, and never mutates its input", () => {
    const empty = emptyKnownEndpoints();
    const plain = exchange({ path: "/healthz" });
    expect(learnEndpoints(empty, { ...plain, ...classify(plain, empty) })).toBe(empty);

    const classified: ClassifiedExchange = { ...customPrm, ...classify(customPrm, empty) };
    const once = learnEndpoints(empty, classified);
    expect(empty.hosts.size).toBe(0);
    expect(learnEndpoints(once, classified)).toBe(once);
  });

  it(`keeps at most ${KNOWN_HOSTS_CAP} hosts, dropping the least recently learned`, () => {
    const prmFor = (host: string): ClassifiedExchange => {
      const e = exchange({ host, path: "/.well-known/oauth-protected-resource", res: [JSON_TYPE], reply: json({ resource: `https://${host}/mcp` }) });
      return { ...e, ...classify(e, emptyKnownEndpoints()) };
    };
    let known: KnownEndpoints = emptyKnownEndpoints();
    for (let i = 0; i < KNOWN_HOSTS_CAP; i++) known = learnEndpoints(known, prmFor(`h${i}.test`));
    // Re-learning h0 with a new path makes it the newest, so h1 goes first.
    const moved = exchange({ host: "h0.test", path: "/.well-known/oauth-protected-resource", res: [JSON_TYPE], reply: json({ resource: "https://h0.test/v2/mcp" }) });
    known = learnEndpoints(known, { ...moved, ...classify(moved, known) });
    known = learnEndpoints(known, prmFor("new.test"));
    expect(known.hosts.size).toBe(KNOWN_HOSTS_CAP);
    expect(known.hosts.has("h1.test")).toBe(false);
    expect(known.hosts.get("h0.test")).toEqual({ mcp: "/v2/mcp" });
    expect(known.hosts.get("new.test")).toEqual({ mcp: "/mcp" });
  });
});

describe("header names", () => {
  it("match in any ASCII letter case, and only ASCII letters fold", () => {
    expect(isHeaderName("Content-Type", "content-type")).toBe(true);
    expect(isHeaderName("MCP-PROTOCOL-VERSION", "mcp-protocol-version")).toBe(true);
    expect(isHeaderName("content-type", "content-type")).toBe(true);
    expect(isHeaderName("Content-Typ", "content-type")).toBe(false);
    expect(isHeaderName("Content_Type", "content-type")).toBe(false);
    // toLowerCase() folds the Kelvin sign (U+212A) to "k"; a header name never has it.
    expect(isHeaderName("\u212Aeep-Alive", "keep-alive")).toBe(false);
    expect(headerValue([["X-A", "1"], ["x-a", "2"]], "x-a")).toBe("1");
  });
});
