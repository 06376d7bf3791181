// Classifies one recorded exchange: which OAuth or MCP step it is, and the facts its traffic shows.
// Pure and synchronous, so the proxy runs it live and the inspector can re-run it over stored rows.
//
// Kind precedence, first match wins:
//   1. transport: a websocket upgrade; a CORS preflight (OPTIONS + Access-Control-Request-Method)
//   2. well-known metadata paths (PRM, AS metadata, OpenID configuration), in root, path-inserted
//      or path-appended form: the URL alone says what the client asked for, whatever came back
//   3. endpoints this host's own metadata and challenges announced (see learnEndpoints)
//   4. content: a JSON-RPC body, an SSE answer, OAuth parameters, a redirect carrying an
//      authorization response, a metadata-shaped answer; for servers with unusual paths
//   5. conventional paths: /authorize /token /register /revoke (bare, /oauth/…, /oauth2/…),
//      /mcp /sse /messages, and health probes; everything else is `other`
// On an MCP path a GET counts as a stream only when it accepts or gets text/event-stream.

import { JSONRPCMessageSchema } from "@modelcontextprotocol/sdk/types.js";
import type {
  ClassifiedExchange,
  ExchangeFacts,
  ExchangeKind,
  HeaderPairs,
  JsonRpcMessageFact,
  McpFacts,
  MetadataFacts,
  RecordedBody,
  RecordedExchange,
  WellKnownVariant,
} from "./exchange.js";

// ---------------------------------------------------------------------------------------------
// Known endpoints

/** The endpoints a host's metadata or challenges revealed, as normalized paths. */
export type EndpointRole = "authorization" | "token" | "registration" | "revocation" | "mcp" | "resourceMetadata";
export type HostEndpoints = Readonly<Partial<Record<EndpointRole, string>>>;

/** Keyed by lower-cased host[:port], as in a Host header; insertion order is learning order. */
export interface KnownEndpoints {
  readonly hosts: ReadonlyMap<string, HostEndpoints>;
}

/** Beyond this many hosts the least recently learned ones are forgotten. */
export const KNOWN_HOSTS_CAP = 1_000;

export function emptyKnownEndpoints(): KnownEndpoints {
  return { hosts: new Map() };
}

/** Folds in the endpoints an exchange reveals. Returns `known` itself when nothing changed. */
export function learnEndpoints(known: KnownEndpoints, exchange: ClassifiedExchange): KnownEndpoints {
  let hosts: Map<string, HostEndpoints> | undefined;
  for (const { host, role, path } of revealedEndpoints(exchange)) {
    const current = (hosts ?? known.hosts).get(host);
    if (current?.[role] === path) continue;
    hosts ??= new Map(known.hosts);
    hosts.delete(host); // re-insert so the cap drops hosts not heard of for longest
    hosts.set(host, { ...current, [role]: path });
  }
  if (!hosts) return known;
  for (const host of hosts.keys()) {
    if (hosts.size <= KNOWN_HOSTS_CAP) break;
    hosts.delete(host);
  }
  return { hosts };
}

/** Classifies exchanges in arrival order, learning endpoints as it goes. */
export function createClassifier(
  initial: KnownEndpoints = emptyKnownEndpoints(),
): (e: RecordedExchange) => ClassifiedExchange {
  let known = initial;
  return (e) => {
    const classified: ClassifiedExchange = { ...e, ...classify(e, known) };
    known = learnEndpoints(known, classified);
    return classified;
  };
}

interface RevealedEndpoint {
  host: string;
  role: EndpointRole;
  path: string;
}

function revealedEndpoints(e: ClassifiedExchange): RevealedEndpoint[] {
  const found: RevealedEndpoint[] = [];
  const add = (role: EndpointRole, url: string | undefined) => {
    const parsed = url === undefined ? undefined : parseUrl(url, e.host);
    if (parsed) found.push({ host: parsed.host, role, path: normalizePath(parsed.pathname) });
  };
  const metadata = e.facts.metadata;
  if (e.kind === "protected_resource_metadata") add("mcp", metadata?.resource);
  if (e.kind === "authorization_server_metadata" || e.kind === "openid_configuration") {
    add("authorization", metadata?.authorizationEndpoint);
    add("token", metadata?.tokenEndpoint);
    add("registration", metadata?.registrationEndpoint);
    add("revocation", metadata?.revocationEndpoint);
  }
  add("resourceMetadata", e.facts.resourceMetadataUrl);
  return found;
}

/** Absolute URLs as they should be; relative ones resolved against the host that served them. */
function parseUrl(url: string, host: string | null): URL | undefined {
  try {
    return new URL(url);
  } catch {
    if (host === null || !url.startsWith("/")) return undefined;
    try {
      return new URL(url, `http://${host}`);
    } catch {
      return undefined;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Classification

export interface Classification {
  kind: ExchangeKind;
  facts: ExchangeFacts;
}

export function classify(exchange: RecordedExchange, known: KnownEndpoints): Classification {
  const v = view(exchange);
  const kind =
    transportKind(v) ?? v.wellKnown?.kind ?? learnedKind(v, known) ?? contentKind(v) ?? conventionalKind(v) ?? "other";
  return { kind, facts: factsOf(v, kind) };
}

/** An exchange with its headers' key values read and its bodies parsed, each once. */
interface View {
  e: RecordedExchange;
  method: string;
  /** Without a trailing slash, so /mcp/ and /mcp match alike. */
  path: string;
  host: string | null;
  query: URLSearchParams;
  wellKnown: { kind: ExchangeKind; variant: WellKnownVariant } | undefined;
  requestForm: URLSearchParams | undefined;
  /** Undefined when the body is absent, not JSON, or failed to parse. */
  requestJson: unknown;
  requestIsJsonRpc: boolean;
  responseJson: unknown;
  acceptsSse: boolean;
  answeredSse: boolean;
  parseErrors: string[];
}

const JSONRPC_TEXT = /"jsonrpc"\s*:/;

function view(e: RecordedExchange): View {
  const parseErrors: string[] = [];
  const path = normalizePath(e.path);
  const requestType = mediaType(header(e.requestHeaders, "content-type"));
  const responseType = mediaType(header(e.responseHeaders, "content-type"));
  const answeredSse = responseType === "text/event-stream";
  const requestText = bodyText(e.requestBody);
  const requestForm =
    requestText !== undefined && requestType === "application/x-www-form-urlencoded"
      ? new URLSearchParams(requestText)
      : undefined;
  const requestJson = requestForm ? undefined : parseJsonBody("request", e.requestBody, requestType, parseErrors);
  return {
    e,
    method: e.method.toUpperCase(),
    path,
    host: e.host?.toLowerCase() ?? null,
    query: new URLSearchParams(e.query ?? ""),
    wellKnown: parseWellKnown(path),
    requestForm,
    requestJson,
    // A truncated JSON-RPC body still shows its marker even though it does not parse.
    requestIsJsonRpc:
      requestJson !== undefined ? asList(requestJson).some(isJsonRpcShaped) : JSONRPC_TEXT.test(requestText ?? ""),
    responseJson: answeredSse ? undefined : parseJsonBody("response", e.responseBody, responseType, parseErrors),
    acceptsSse: (header(e.requestHeaders, "accept") ?? "").toLowerCase().includes("text/event-stream"),
    answeredSse,
    parseErrors,
  };
}

function transportKind(v: View): ExchangeKind | undefined {
  if (v.e.websocket) return "websocket";
  if (v.method === "OPTIONS" && header(v.e.requestHeaders, "access-control-request-method") !== undefined) {
    return "cors_preflight";
  }
  return undefined;
}

const WELL_KNOWN_KINDS: Record<string, ExchangeKind> = {
  "oauth-protected-resource": "protected_resource_metadata",
  "oauth-authorization-server": "authorization_server_metadata",
  "openid-configuration": "openid_configuration",
};
const WELL_KNOWN_PATH =
  /^(.*?)\/\.well-known\/(oauth-protected-resource|oauth-authorization-server|openid-configuration)(\/.*)?$/;

/** Path-appended is only standard for OpenID; clients that append to the others are still recognised. */
function parseWellKnown(path: string): View["wellKnown"] {
  const match = WELL_KNOWN_PATH.exec(path);
  const kind = match && WELL_KNOWN_KINDS[match[2]!];
  if (!match || !kind) return undefined;
  const variant: WellKnownVariant = match[1] ? "path_appended" : match[3] ? "path_inserted" : "root";
  return { kind, variant };
}

function learnedKind(v: View, known: KnownEndpoints): ExchangeKind | undefined {
  const endpoints = v.host === null ? undefined : known.hosts.get(v.host);
  if (!endpoints) return undefined;
  for (const [role, path] of Object.entries(endpoints) as Array<[EndpointRole, string]>) {
    if (path === v.path) return roleKind(role, v);
  }
  return undefined;
}

function contentKind(v: View): ExchangeKind | undefined {
  const { method } = v;
  if (method === "POST" && v.requestIsJsonRpc) return "mcp_post";
  if (method === "GET" && v.answeredSse) return "mcp_get_stream";
  if (method === "DELETE" && header(v.e.requestHeaders, "mcp-session-id") !== undefined) return "mcp_delete";
  if (method === "POST" && bodyParam(v, "grant_type") !== undefined) return "token";
  if (method === "POST" && bodyParam(v, "token") !== undefined && v.path.endsWith("/revoke")) return "revoke";
  if (method === "POST" && isRecord(v.requestJson) && "redirect_uris" in v.requestJson) return "registration";
  if (method === "GET" && v.query.has("response_type") && v.query.has("client_id")) return "authorize";
  // Also a GET: an AS that federates login delivers its code from its own upstream callback.
  if (authorizationResponse(v)) return "authorize_consent";
  const answer = v.responseJson;
  if (isRecord(answer) && "issuer" in answer && "authorization_endpoint" in answer) {
    return "authorization_server_metadata";
  }
  if (isRecord(answer) && "resource" in answer && "authorization_servers" in answer) {
    return "protected_resource_metadata";
  }
  return undefined;
}

const CONVENTIONAL_ROLES = new Map<string, EndpointRole>([
  ["/authorize", "authorization"],
  ["/token", "token"],
  ["/register", "registration"],
  ["/revoke", "revocation"],
]);
const MCP_PATHS = new Set(["/mcp", "/sse", "/messages"]);
const HEALTH_PATHS = new Set(["/health", "/healthz", "/livez", "/readyz"]);

function conventionalKind(v: View): ExchangeKind | undefined {
  const oauthRole = CONVENTIONAL_ROLES.get(v.path.replace(/^\/oauth2?(?=\/)/, ""));
  if (oauthRole) return roleKind(oauthRole, v);
  if (MCP_PATHS.has(v.path)) return mcpKind(v);
  if (HEALTH_PATHS.has(v.path)) return "health";
  return undefined;
}

function roleKind(role: EndpointRole, v: View): ExchangeKind | undefined {
  switch (role) {
    case "authorization":
      return v.method === "POST" ? "authorize_consent" : "authorize";
    case "token":
      return "token";
    case "registration":
      return "registration";
    case "revocation":
      return "revoke";
    case "resourceMetadata":
      return "protected_resource_metadata";
    case "mcp":
      return mcpKind(v);
  }
}

function mcpKind(v: View): ExchangeKind | undefined {
  if (v.method === "POST") return "mcp_post";
  if (v.method === "DELETE") return "mcp_delete";
  if (v.method === "GET" && (v.acceptsSse || v.answeredSse)) return "mcp_get_stream";
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Facts

const METADATA_KINDS = new Set<ExchangeKind>([
  "protected_resource_metadata",
  "authorization_server_metadata",
  "openid_configuration",
]);
const MCP_KINDS = new Set<ExchangeKind>(["mcp_post", "mcp_get_stream", "mcp_delete"]);

function factsOf(v: View, kind: ExchangeKind): ExchangeFacts {
  const request = v.e.requestHeaders;
  const response = v.e.responseHeaders;
  const reply = oauthReply(v);
  const redirect = authorizationResponse(v);
  const wwwAuthenticate = header(response, "www-authenticate");
  const metadata = METADATA_KINDS.has(kind) ? metadataFacts(v.responseJson) : undefined;
  const mcp = MCP_KINDS.has(kind) ? mcpFacts(v) : undefined; // may add SSE parse errors
  const deliveredCode = fingerprint(param(redirect, "code"));
  const codeChallengePresent = oauthParam(v, "code_challenge") !== undefined;
  return defined<ExchangeFacts>({
      wellKnownVariant: v.wellKnown?.variant,
      origin: header(request, "origin"),
      userAgent: header(request, "user-agent"),
      accept: header(request, "accept"),
      contentType: header(request, "content-type"),
      responseContentType: header(response, "content-type"),
      bearerFingerprint: bearerFingerprint(header(request, "authorization")),
      redirectUris: redirectUris(v),
      clientId: oauthParam(v, "client_id") ?? str(reply?.client_id),
      clientName: bodyParam(v, "client_name") ?? str(reply?.client_name),
      // The state handed back with a code is the client's, even where the request carried another
      // (an AS federating login receives its upstream IdP's state).
      state: param(redirect, "state") ?? oauthParam(v, "state"),
      grantType: bodyParam(v, "grant_type"),
      responseType: oauthParam(v, "response_type"),
      codeChallengeMethod: oauthParam(v, "code_challenge_method"),
      // Its absence only means something on the authorization request itself.
      codeChallengePresent: codeChallengePresent || (kind === "authorize" ? false : undefined),
      tokenEndpointAuthMethod: bodyParam(v, "token_endpoint_auth_method") ?? str(reply?.token_endpoint_auth_method),
      resource: oauthParam(v, "resource") ?? metadata?.resource,
      scope: oauthParam(v, "scope") ?? str(reply?.scope) ?? challengeParam(wwwAuthenticate, SCOPE_PARAM),
      wwwAuthenticate,
      resourceMetadataUrl: challengeParam(wwwAuthenticate, RESOURCE_METADATA_PARAM),
      location: header(response, "location"),
      oauthError: str(reply?.error) ?? param(redirect, "error"),
      oauthErrorDescription: str(reply?.error_description) ?? param(redirect, "error_description"),
      issued: compact({
        accessToken: fingerprint(str(reply?.access_token)),
        refreshToken: fingerprint(str(reply?.refresh_token)),
        idToken: fingerprint(str(reply?.id_token)),
        code: deliveredCode,
        clientSecret: fingerprint(str(reply?.client_secret)),
      }),
      codeFingerprint: fingerprint(bodyParam(v, "code")) ?? deliveredCode,
      refreshTokenFingerprint: fingerprint(bodyParam(v, "refresh_token")),
      tokenType: str(reply?.token_type),
      expiresIn: seconds(reply?.expires_in),
      metadata,
      mcp,
      cors: compact({
        requestMethod: header(request, "access-control-request-method"),
        requestHeaders: header(request, "access-control-request-headers"),
        allowOrigin: header(response, "access-control-allow-origin"),
        allowMethods: header(response, "access-control-allow-methods"),
        allowHeaders: header(response, "access-control-allow-headers"),
        exposeHeaders: header(response, "access-control-expose-headers"),
      }),
      parseError: v.parseErrors.length > 0 ? v.parseErrors.join("; ") : undefined,
    });
}

/** A JSON object answer that is not JSON-RPC: OAuth endpoints' replies and middleware error bodies. */
function oauthReply(v: View): Record<string, unknown> | undefined {
  return isRecord(v.responseJson) && !("jsonrpc" in v.responseJson) ? v.responseJson : undefined;
}

/** The query of a redirect whose Location carries an authorization response (code or error). */
function authorizationResponse(v: View): URLSearchParams | undefined {
  const location = header(v.e.responseHeaders, "location");
  if (location === undefined || v.e.status === null || v.e.status < 300 || v.e.status > 399) return undefined;
  const params = parseUrl(location, "redirect.invalid")?.searchParams;
  return params?.has("code") || params?.has("error") ? params : undefined;
}

function redirectUris(v: View): string[] | undefined {
  const registered = isRecord(v.requestJson) ? strings(v.requestJson.redirect_uris) : undefined;
  const single = oauthParam(v, "redirect_uri");
  return registered ?? (single === undefined ? undefined : [single]);
}

function metadataFacts(doc: unknown): MetadataFacts | undefined {
  if (!isRecord(doc)) return undefined;
  const cimd = doc.client_id_metadata_document_supported;
  return compact<MetadataFacts>({
    resource: str(doc.resource),
    authorizationServers: strings(doc.authorization_servers),
    issuer: str(doc.issuer),
    authorizationEndpoint: str(doc.authorization_endpoint),
    tokenEndpoint: str(doc.token_endpoint),
    registrationEndpoint: str(doc.registration_endpoint),
    revocationEndpoint: str(doc.revocation_endpoint),
    codeChallengeMethodsSupported: strings(doc.code_challenge_methods_supported),
    responseTypesSupported: strings(doc.response_types_supported),
    grantTypesSupported: strings(doc.grant_types_supported),
    tokenEndpointAuthMethodsSupported: strings(doc.token_endpoint_auth_methods_supported),
    scopesSupported: strings(doc.scopes_supported),
    clientIdMetadataDocumentSupported: typeof cimd === "boolean" ? cimd : undefined,
  });
}

const REDACTED = /\[redacted:([0-9a-f]{8})\]/;

/** The 8-hex fingerprint of a redacted secret; anything unredacted is never copied into facts. */
function fingerprint(value: string | undefined): string | undefined {
  return value === undefined ? undefined : REDACTED.exec(value)?.[1];
}

function bearerFingerprint(authorization: string | undefined): string | undefined {
  return authorization !== undefined && /^bearer\s/i.test(authorization) ? fingerprint(authorization) : undefined;
}

const RESOURCE_METADATA_PARAM = /(?:^|[\s,])resource_metadata\s*=\s*(?:"([^"]*)"|([^\s,]+))/i;
const SCOPE_PARAM = /(?:^|[\s,])scope\s*=\s*(?:"([^"]*)"|([^\s,]+))/i;

/** An auth-param of a WWW-Authenticate challenge, quoted or not. */
function challengeParam(challenge: string | undefined, pattern: RegExp): string | undefined {
  const match = challenge === undefined ? null : pattern.exec(challenge);
  return match ? (match[1] ?? match[2]) : undefined;
}

function seconds(value: unknown): number | undefined {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  return typeof n === "number" && Number.isFinite(n) ? n : undefined;
}

// ---------------------------------------------------------------------------------------------
// MCP

/**
 * The tool names the server listed in this exchange's answers to tools/list (result.tools[].name),
 * for the metrics' tool labels: names come from the server, never from what clients call. Parses
 * the bodies again, so callers ask only of exchanges whose facts show a tools/list.
 */
export function listedToolNames(e: RecordedExchange): string[] {
  const v = view(e);
  const ids = new Set<unknown>();
  for (const m of asList(v.requestJson)) {
    if (isRecord(m) && m.method === "tools/list" && (typeof m.id === "string" || typeof m.id === "number")) ids.add(m.id);
  }
  if (ids.size === 0) return [];
  const names: string[] = [];
  for (const m of v.answeredSse ? sseMessages(v) : asList(v.responseJson)) {
    if (!isRecord(m) || !ids.has(m.id) || !isRecord(m.result) || !Array.isArray(m.result.tools)) continue;
    for (const tool of m.result.tools) {
      const name = isRecord(tool) ? str(tool.name) : undefined;
      if (name !== undefined) names.push(name);
    }
  }
  return names;
}

function mcpFacts(v: View): McpFacts {
  const sent = asList(v.requestJson);
  // A JSON answer without "jsonrpc" is an error body from auth middleware: it goes to oauthError.
  const received = v.answeredSse ? sseMessages(v) : asList(v.responseJson).filter(isJsonRpcShaped);
  const messages = [
    ...sent.map((m) => messageFact("request", m)),
    ...received.map((m) => messageFact("response", m)),
  ];
  const requestSessionId = header(v.e.requestHeaders, "mcp-session-id");
  const sessionIdAssigned = header(v.e.responseHeaders, "mcp-session-id");
  const sentObjects = sent.filter(isRecord);
  const initialize = sentObjects.find((m) => m.method === "initialize");
  const initParams = isRecord(initialize?.params) ? initialize.params : undefined;
  const initResponse = initialize && received.filter(isRecord).find((m) => "result" in m && m.id === initialize.id);
  const initResult = isRecord(initResponse?.result) ? initResponse.result : undefined;
  const toolNames = sentObjects.flatMap((m) => (m.method === "tools/call" ? toolName(m.params) : []));
  return defined<McpFacts>({
    messages,
    methods: messages.flatMap((m) => (m.direction === "request" && m.method !== undefined ? [m.method] : [])),
    protocolVersionRequested: str(initParams?.protocolVersion),
    protocolVersionAnswered: str(initResult?.protocolVersion),
    protocolVersionHeader: header(v.e.requestHeaders, "mcp-protocol-version"),
    sessionId: requestSessionId ?? sessionIdAssigned,
    sessionIdAssigned,
    clientInfo: implementation(initParams?.clientInfo),
    serverInfo: implementation(initResult?.serverInfo),
    toolNames: toolNames.length > 0 ? toolNames : undefined,
    sse: v.answeredSse || (v.responseJson !== undefined ? false : undefined),
  });
}

/** Envelope checked with the SDK's schema. Payload fields (initialize, tools/call) are read
 *  leniently instead: the proxy must report what a client sent even where the SDK would reject it. */
function messageFact(direction: JsonRpcMessageFact["direction"], value: unknown): JsonRpcMessageFact {
  // JSON-RPC 2.0 answers unidentifiable requests with "id": null, which the SDK schema does not admit.
  const nullIdError = isRecord(value) && value.id === null && "error" in value;
  const parsed = JSONRPCMessageSchema.safeParse(nullIdError ? { ...value, id: undefined } : value);
  if (!parsed.success) {
    const raw = isRecord(value) ? value : {};
    const id = raw.id;
    return defined<JsonRpcMessageFact>({
      direction,
      type: "invalid",
      method: str(raw.method),
      id: typeof id === "string" || typeof id === "number" || id === null ? id : undefined,
    });
  }
  const m = parsed.data;
  if ("method" in m) {
    return "id" in m
      ? { direction, type: "request", method: m.method, id: m.id }
      : { direction, type: "notification", method: m.method };
  }
  if ("result" in m) return { direction, type: "result", id: m.id };
  return defined<JsonRpcMessageFact>({
    direction,
    type: "error",
    id: nullIdError ? null : m.id,
    errorCode: m.error.code,
    errorMessage: m.error.message,
  });
}

function toolName(params: unknown): string[] {
  const name = isRecord(params) ? str(params.name) : undefined;
  return name === undefined ? [] : [name];
}

function implementation(info: unknown): { name?: string; version?: string } | undefined {
  return isRecord(info) ? compact({ name: str(info.name), version: str(info.version) }) : undefined;
}

/** The JSON values of an SSE answer's message events (not e.g. the legacy `endpoint` event). */
function sseMessages(v: View): unknown[] {
  const text = bodyText(v.e.responseBody);
  if (text === undefined) return [];
  const values: unknown[] = [];
  for (const event of parseSse(text, v.e.responseBody.truncated)) {
    if (event.type !== "message") continue;
    let data: unknown;
    try {
      data = JSON.parse(event.data);
    } catch (err) {
      v.parseErrors.push(`response SSE event: ${errorMessage(err)}`);
    }
    for (const value of asList(data)) values.push(value); // a loop: spreading a huge batch overflows the stack
  }
  return values;
}

interface SseEvent {
  type: string;
  data: string;
}

/** Per the SSE spec; when the capture was cut off, the unterminated last event is dropped. */
function parseSse(text: string, truncated: boolean): SseEvent[] {
  const events: SseEvent[] = [];
  let type = "message";
  let data: string[] = [];
  const dispatch = () => {
    if (data.length > 0) events.push({ type, data: data.join("\n") });
    type = "message";
    data = [];
  };
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === "") {
      dispatch();
      continue;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? "" : line.slice(line[colon + 1] === " " ? colon + 2 : colon + 1);
    if (field === "data") data.push(value);
    else if (field === "event") type = value || "message";
  }
  if (!truncated) dispatch();
  return events;
}

// ---------------------------------------------------------------------------------------------
// Reading the recorded exchange

/** All values of a header (names compared case-insensitively), joined as HTTP list headers are. */
function header(headers: HeaderPairs | null, lowerName: string): string | undefined {
  let value: string | undefined;
  for (const [name, v] of headers ?? []) {
    if (name.toLowerCase() === lowerName) value = value === undefined ? v : `${value}, ${v}`;
  }
  return value;
}

function mediaType(contentType: string | undefined): string | undefined {
  return contentType?.split(";", 1)[0]!.trim().toLowerCase();
}

/** The body as text, unless empty or recorded as base64 (binary: never parsed). */
function bodyText(body: RecordedBody): string | undefined {
  return body.encoding === "utf8" && body.text !== null && body.text !== "" ? body.text : undefined;
}

const JSON_TYPE = /[/+]json$/;
const JSON_START = /^\s*[[{]/;

/** Parses a body its content type calls JSON or that plainly looks like JSON; notes failures. */
function parseJsonBody(side: string, body: RecordedBody, type: string | undefined, errors: string[]): unknown {
  const text = bodyText(body);
  if (text === undefined || !(JSON_TYPE.test(type ?? "") || JSON_START.test(text))) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    errors.push(`${side} body${body.truncated ? " (truncated)" : ""}: ${errorMessage(err)}`);
    return undefined;
  }
}

/** A string parameter of the request's form or JSON object body. */
function bodyParam(v: View, name: string): string | undefined {
  if (v.requestForm) return param(v.requestForm, name);
  return isRecord(v.requestJson) ? str(v.requestJson[name]) : undefined;
}

/** An OAuth parameter from the query, else the body (consent forms and token requests). */
function oauthParam(v: View, name: string): string | undefined {
  return param(v.query, name) ?? bodyParam(v, name);
}

function param(params: URLSearchParams | undefined, name: string): string | undefined {
  return params?.get(name) ?? undefined;
}

function normalizePath(path: string): string {
  if (path === "") return "/";
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

function isJsonRpcShaped(value: unknown): boolean {
  return isRecord(value) && "jsonrpc" in value;
}

function asList(value: unknown): unknown[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function str(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

function strings(value: unknown): string[] | undefined {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === "string") : undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Drops undefined fields, so facts list only what the traffic showed. */
/** A copy without the undefined fields (a plain loop: this runs for every exchange). */
function defined<T extends object>(record: T): T {
  const kept: Record<string, unknown> = {};
  for (const key in record) if (record[key] !== undefined) kept[key] = record[key];
  return kept as T;
}

/** Like `defined`, and undefined when nothing is left. */
function compact<T extends object>(record: T): T | undefined {
  const kept = defined(record);
  return Object.keys(kept).length > 0 ? kept : undefined;
}
