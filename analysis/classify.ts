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

import {
  bodyParam,
  compact,
  defined,
  header,
  isRecord,
  normalizePath,
  oauthParam,
  param,
  str,
  strings,
  view,
  type View,
} from "./exchange-view.js";
import type { ClassifiedExchange, ExchangeFacts, ExchangeKind, MetadataFacts, RecordedExchange } from "./exchange.js";
import { mcpFacts } from "./mcp-facts.js";
import { REDACTED_MARKER } from "./redacted.js";

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
    // Object.assign, not a spread: V8 (Node 20) promoted ~200 KiB a young-generation collection
    // out of `{ ...e, ...classification }` with nothing holding the results (a scratch loop of
    // this alone), which made the recorder's old generation grow and its full collections run.
    const classified: ClassifiedExchange = Object.assign({}, e, classify(e, known));
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

function transportKind(v: View): ExchangeKind | undefined {
  if (v.e.websocket) return "websocket";
  if (v.method === "OPTIONS" && header(v.e.requestHeaders, "access-control-request-method") !== undefined) {
    return "cors_preflight";
  }
  return undefined;
}

function learnedKind(v: View, known: KnownEndpoints): ExchangeKind | undefined {
  const endpoints = v.host === null ? undefined : known.hosts.get(v.host);
  if (!endpoints) return undefined;
  for (const [role, path] of Object.entries(endpoints) as Array<[EndpointRole, string]>) {
    if (path === v.path) return roleKind(role, v);
    // The sign-in and consent pages an authorization server serves below its endpoint.
    if (role === "authorization" && v.path.startsWith(`${path}/`)) return consentKind(v);
  }
  return undefined;
}

/** A page of the user's sign-in: its form POSTs are the consent, GETs more of the authorization pages. */
function consentKind(v: View): ExchangeKind {
  return v.method === "POST" ? "authorize_consent" : "authorize";
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
  const oauthPath = v.path.replace(/^\/oauth2?(?=\/)/, "");
  const oauthRole = CONVENTIONAL_ROLES.get(oauthPath);
  if (oauthRole) return roleKind(oauthRole, v);
  if (oauthPath.startsWith("/authorize/")) return consentKind(v);
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
  const clientId = oauthParam(v, "client_id") ?? str(reply?.client_id);
  return defined<ExchangeFacts>({
      wellKnownVariant: v.wellKnown?.variant,
      origin: header(request, "origin"),
      userAgent: header(request, "user-agent"),
      accept: header(request, "accept"),
      contentType: header(request, "content-type"),
      responseContentType: header(response, "content-type"),
      bearerFingerprint: bearerFingerprint(header(request, "authorization")),
      redirectUris: redirectUris(v),
      clientId,
      clientIdIsMetadataDocument: clientId !== undefined && isMetadataDocumentUrl(clientId) ? true : undefined,
      clientName: bodyParam(v, "client_name") ?? str(reply?.client_name),
      applicationType: kind === "registration" ? (bodyParam(v, "application_type") ?? str(reply?.application_type)) : undefined,
      iss: param(redirect, "iss"),
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
  const iss = doc.authorization_response_iss_parameter_supported;
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
    authorizationResponseIssParameterSupported: typeof iss === "boolean" ? iss : undefined,
  });
}


/** A Client ID Metadata Document's URL: https with a path (draft-ietf-oauth-client-id-metadata-document §3). */
export function isMetadataDocumentUrl(clientId: string): boolean {
  const url = parseUrl(clientId, null);
  return url !== undefined && url.protocol === "https:" && url.pathname.length > 1;
}

/** The 8-hex fingerprint of a redacted secret; anything unredacted is never copied into facts. */
function fingerprint(value: string | undefined): string | undefined {
  return value === undefined ? undefined : REDACTED_MARKER.exec(value)?.[1];
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

