// The data model of one HTTP exchange as it moves through mcp-lens:
//   RawExchange (in memory only, may hold secrets)
//     → RecordedExchange (decoded, redacted: safe to store, log and show)
//     → ClassifiedExchange (kind + facts, derived purely from the recorded one)

/** Header name/value pairs in wire order, names as the peer sent them. */
export type HeaderPairs = Array<[name: string, value: string]>;

/**
 * `name` is `lowerName` (in lower case) in any ASCII letter case. Header names are tokens (ASCII):
 * comparing codes allocates nothing, where toLowerCase() made a string per header per lookup, an
 * eighth of what the recorder allocated an exchange.
 */
export function isHeaderName(name: string, lowerName: string): boolean {
  if (name.length !== lowerName.length) return false;
  if (name === lowerName) return true;
  for (let i = 0; i < name.length; i++) {
    const code = name.charCodeAt(i);
    if ((code >= 65 && code <= 90 ? code + 32 : code) !== lowerName.charCodeAt(i)) return false;
  }
  return true;
}

/** The first value of a header, its name compared case-insensitively (`lowerName` in lower case). */
export function headerValue(headers: HeaderPairs | null, lowerName: string): string | undefined {
  return headers?.find(([name]) => isHeaderName(name, lowerName))?.[1];
}

/** A body as captured from the wire: the first `cap` bytes, plus the total size seen. */
export interface CapturedBody {
  bytes: Buffer;
  /** Total bytes that passed through, including what the cap left out. */
  size: number;
  truncated: boolean;
}

/** One exchange's request line, timing, outcome and headers, the same before and after recording. */
export interface ExchangeEnvelope {
  id: number;
  /** Epoch milliseconds when the request headers arrived. */
  startedAt: number;
  /** Until the response finished, aborted or failed. */
  durationMs: number | null;
  /** Until the upstream's response headers arrived. */
  ttfbMs: number | null;
  clientAddr: string | null;
  method: string;
  host: string | null;
  path: string;
  /** Raw query string without the leading '?', null when the URL had none. */
  query: string | null;
  status: number | null;
  /** A short code when the upstream failed: refused, reset, timeout, dns, … */
  upstreamError: string | null;
  /** The client went away before the response completed. */
  aborted: boolean;
  websocket: boolean;
  requestHeaders: HeaderPairs;
  responseHeaders: HeaderPairs | null;
  /** Count of SSE events in a text/event-stream response, all of them, not only the captured ones. */
  sseEvents: number | null;
}

/** What the capture tap hands over when an exchange completes. Never stored as is. */
export interface RawExchange extends ExchangeEnvelope {
  requestBody: CapturedBody;
  responseBody: CapturedBody;
  /**
   * What mcp-lens set on the request it forwarded (proxy/forward/forward.ts setForwardedHeaders); absent
   * when nothing was forwarded (a malformed request). requestHeaders are the client's, as sent:
   * forwardedHeaders() in proxy/forward/capture.ts turns the two into what the upstream received.
   */
  forwarding?: Forwarding;
}

/** The forwarding headers as they went upstream, and whether the peer was trusted to set them. */
export interface Forwarding {
  trusted: boolean;
  forwardedFor: string;
  forwardedProto: string;
  forwardedHost: string | null;
  /** Connection after mcp-lens removed the tokens naming headers it sets; null when none was sent. */
  connection: string | null;
}

export interface RecordedBody {
  /** UTF-8 text (base64 in records made before bodies that are not text were omitted); null when empty or omitted. */
  text: string | null;
  /**
   * "omitted": not recorded, only its size: the bytes were not text, or were in a content
   * encoding that could not be undone (unknown, stacked beyond what is decoded, corrupt), so no
   * secret inside them could have been redacted.
   */
  encoding: "utf8" | "base64" | "omitted";
  size: number;
  truncated: boolean;
  /** Content-Encoding that was decoded for recording (gzip, deflate, br). */
  decoded: string | null;
}

/** Redacted and decoded: this is what is stored, logged and classified. */
export interface RecordedExchange extends ExchangeEnvelope {
  requestBody: RecordedBody;
  responseBody: RecordedBody;
  /**
   * The client's own values of the headers mcp-lens replaced or removed before forwarding (an
   * untrusted peer's X-Forwarded-*, Forwarded, X-Real-IP…): what it claimed, kept as a fact;
   * requestHeaders hold what the upstream received. Absent when nothing was replaced.
   */
  claimedHeaders?: HeaderPairs;
  /**
   * Lower-case names of the X-Forwarded-* in requestHeaders whose value mcp-lens set itself (the
   * peer was untrusted, or a trusted front sent none): facts about mcp-lens's own connection, not
   * what a front proxy saw. Absent when every one came from a trusted front.
   */
  setByProxy?: string[];
  /**
   * The mcp-lens replica that recorded it (--replica), where several write one database: a
   * handshake's steps may each have gone through another. Absent in records made before.
   */
  replica?: string;
}

export const EXCHANGE_KINDS = [
  "protected_resource_metadata",
  "authorization_server_metadata",
  "openid_configuration",
  "registration",
  "authorize",
  "authorize_consent",
  "token",
  "revoke",
  "mcp_post",
  "mcp_get_stream",
  "mcp_delete",
  "cors_preflight",
  "websocket",
  "health",
  "other",
] as const;
export type ExchangeKind = (typeof EXCHANGE_KINDS)[number];

/** The kinds that make up the OAuth part of a connector handshake. */
export const OAUTH_KINDS: ReadonlySet<ExchangeKind> = new Set<ExchangeKind>([
  "protected_resource_metadata",
  "authorization_server_metadata",
  "openid_configuration",
  "registration",
  "authorize",
  "authorize_consent",
  "token",
  "revoke",
]);

/** Which well-known URL form a metadata document was fetched from (RFC 8414 §3, RFC 9728 §3, OIDC Discovery). */
export type WellKnownVariant =
  | "root" // /.well-known/<name>
  | "path_inserted" // /.well-known/<name>/<issuer or resource path>
  | "path_appended"; // /<issuer path>/.well-known/openid-configuration

export interface JsonRpcMessageFact {
  direction: "request" | "response";
  type: "request" | "notification" | "result" | "error" | "invalid";
  method?: string;
  id?: string | number | null;
  errorCode?: number;
  errorMessage?: string;
}

/** The two eras of MCP (shared/reference/connector-handshake.md): 2026-07-28 is "modern". */
export type Era = "modern" | "legacy";

/** The first MCP revision of the modern era: stateless, `_meta` per request, no initialize. */
export const MODERN_PROTOCOL_VERSION = "2026-07-28";

export interface McpFacts {
  messages: JsonRpcMessageFact[];
  /** Methods of the requests and notifications the client sent. */
  methods: string[];
  protocolVersionRequested?: string;
  protocolVersionAnswered?: string;
  /** The MCP-Protocol-Version request header. */
  protocolVersionHeader?: string;
  /** Mcp-Session-Id from the request, else the one the response assigned. */
  sessionId?: string;
  sessionIdAssigned?: string;
  clientInfo?: { name?: string; version?: string };
  serverInfo?: { name?: string; version?: string };
  toolNames?: string[];
  /** The response came as SSE rather than JSON. */
  sse?: boolean;
  /**
   * The era the client's request speaks: modern when it carries the 2026-07-28 request metadata
   * (`_meta` protocol version, or a modern MCP-Protocol-Version with Mcp-Method, or a modern-only
   * method); legacy when it is initialize, notifications/initialized, or carries Mcp-Session-Id.
   */
  era?: Era;
  /** `_meta["io.modelcontextprotocol/protocolVersion"]` of the first request. */
  metaProtocolVersion?: string;
  /** The capabilities the client declared (their names), in initialize or a modern request's `_meta`. */
  clientCapabilities?: string[];
  /** The Mcp-Method and Mcp-Name request headers (2026-07-28). */
  methodHeader?: string;
  nameHeader?: string;
  /**
   * How the modern request headers disagree with the body, in words, one per header: absent or
   * different Mcp-Method / Mcp-Name / MCP-Protocol-Version. Only for modern requests.
   */
  headerMismatch?: string[];
  /** resultType of the first result ("complete", "input_required"…), 2026-07-28. */
  resultType?: string;
  /** server/discover's supportedVersions, or -32022 UnsupportedProtocolVersion's data.supported. */
  supportedVersions?: string[];
  /** -32022 UnsupportedProtocolVersion's data.requested. */
  versionRequestedByError?: string;
}

export interface MetadataFacts {
  /** PRM */
  resource?: string;
  authorizationServers?: string[];
  /** AS metadata / OpenID configuration */
  issuer?: string;
  authorizationEndpoint?: string;
  tokenEndpoint?: string;
  registrationEndpoint?: string;
  revocationEndpoint?: string;
  codeChallengeMethodsSupported?: string[];
  responseTypesSupported?: string[];
  grantTypesSupported?: string[];
  tokenEndpointAuthMethodsSupported?: string[];
  scopesSupported?: string[];
  clientIdMetadataDocumentSupported?: boolean;
  /** RFC 9207: the AS puts `iss` in its authorization responses. */
  authorizationResponseIssParameterSupported?: boolean;
}

/** Facts read off one exchange. Every field is optional: only what the traffic showed. */
export interface ExchangeFacts {
  wellKnownVariant?: WellKnownVariant;
  origin?: string;
  userAgent?: string;
  accept?: string;
  contentType?: string;
  responseContentType?: string;
  /** Fingerprint of the bearer token the request carried (see redact.ts). */
  bearerFingerprint?: string;
  redirectUris?: string[];
  clientId?: string;
  /** client_id is an https URL with a path: a Client ID Metadata Document (CIMD). */
  clientIdIsMetadataDocument?: boolean;
  clientName?: string;
  /** application_type of a registration request (2026-07-28 DCR: native or web). */
  applicationType?: string;
  /** RFC 9207 `iss` of an authorization response (the redirect to the callback). */
  iss?: string;
  state?: string;
  grantType?: string;
  responseType?: string;
  codeChallengeMethod?: string;
  codeChallengePresent?: boolean;
  tokenEndpointAuthMethod?: string;
  resource?: string;
  scope?: string;
  wwwAuthenticate?: string;
  /** The resource_metadata parameter of WWW-Authenticate. */
  resourceMetadataUrl?: string;
  location?: string;
  /** OAuth error from a JSON body or a redirect's query. */
  oauthError?: string;
  oauthErrorDescription?: string;
  /** Fingerprints of issued credentials (token and registration responses). */
  issued?: { accessToken?: string; refreshToken?: string; idToken?: string; code?: string; clientSecret?: string };
  /** The authorization code a token request redeems, or a redirect delivers (fingerprint). */
  codeFingerprint?: string;
  refreshTokenFingerprint?: string;
  tokenType?: string;
  expiresIn?: number;
  metadata?: MetadataFacts;
  mcp?: McpFacts;
  /** Headers the CORS preflight asked for and what the response allowed. */
  cors?: {
    requestMethod?: string;
    requestHeaders?: string;
    allowOrigin?: string;
    allowMethods?: string;
    allowHeaders?: string;
    exposeHeaders?: string;
  };
  /** Body could not be parsed as its content type claimed. */
  parseError?: string;
}

export interface ClassifiedExchange extends RecordedExchange {
  kind: ExchangeKind;
  facts: ExchangeFacts;
}

/** Node's rawHeaders ([name, value, name, value…]) as pairs, in wire order. */
export function headerPairs(raw: string[]): HeaderPairs {
  const pairs: HeaderPairs = [];
  for (let i = 0; i + 1 < raw.length; i += 2) pairs.push([raw[i]!, raw[i + 1]!]);
  return pairs;
}

/**
 * The order exchanges happened in: when they started, then their id. One proxy numbers exchanges
 * as they start, so its ids alone would do; replicas writing one database each number theirs from
 * a block of their own (store/id-blocks.ts), so across replicas only the time orders them.
 */
export function byStart(a: Pick<ExchangeEnvelope, "startedAt" | "id">, b: Pick<ExchangeEnvelope, "startedAt" | "id">): number {
  return a.startedAt - b.startedAt || a.id - b.id;
}

/** `a` started after `b` (see byStart). */
export const startedAfter = (a: Pick<ExchangeEnvelope, "startedAt" | "id">, b: Pick<ExchangeEnvelope, "startedAt" | "id">): boolean => byStart(a, b) > 0;
