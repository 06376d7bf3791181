// A connector's handshake, step by step, as hosted clients perform it (see
// shared/reference/connector-handshake.md), in the era the client speaks:
//   legacy (≤ 2025-11-25)  probe (initialize) → Protected Resource Metadata → AS metadata →
//                          registration → [authorize → callback → token] → initialize → initialized
//                          → list [→ tools/call], with the session id the server assigned;
//   modern (2026-07-28)    probe (server/discover, or tools/list) → the same OAuth steps →
//                          discover → list [→ tools/call]: self-contained requests, each with the
//                          `_meta` protocol version, client info and capabilities and the
//                          MCP-Protocol-Version / Mcp-Method / Mcp-Name headers; no initialize, no
//                          session id, no GET stream, no DELETE;
//   dual-era               modern first; a modern request answered with a 4xx (or a JSON-RPC error)
//                          that is no recognized modern error sends it to initialize and the legacy
//                          flow for the rest of the run (Streamable HTTP §Backward Compatibility).
// No SDK client: it stops at the first step that fails the way real clients do, and every check it
// makes is one a connector makes on the wire (the request shapes and the modern errors are the v2
// SDK's, inspector/clients.ts; the requests themselves, inspector/connector-wire.ts). Every request
// has a timeout and nothing is retried beyond the discovery fallbacks and the era fallback the
// guide describes, so a run is bounded. Used by the replay (inspector/replay.ts) and by the tests'
// hosted connector.
import { createHash, randomBytes } from "node:crypto";
import { METHOD_NOT_FOUND } from "@modelcontextprotocol/client";
import { HANDSHAKE_STEPS, type HandshakeStep } from "../analysis/handshake.js";
import type { Era, RawExchange } from "../analysis/exchange.js";
import {
  type ClientEra,
  judgeModernAnswer,
  mcpParamHeaders,
  MODERN_PROTOCOL_VERSION,
  type ModernAnswer,
  type ModernClient,
  modernHeaders,
  modernRequest,
  type Registration,
} from "./clients.js";
import { NotFollowed, openWire, originOf, type RpcReply, safeUrl, StepFailure, type WireOptions } from "./connector-wire.js";

export interface ConnectorOptions extends WireOptions {
  /** The params of initialize as the client sends them (protocolVersion, capabilities, clientInfo). */
  initialize: { protocolVersion: string } & Record<string, unknown>;
  /**
   * The client's era: "legacy" (default) sends initialize and keeps a session; "modern" sends
   * 2026-07-28 requests only; "dual" sends a modern request first and falls back to initialize
   * when the server answers it with a 4xx without a recognized modern error.
   */
  era?: ClientEra;
  /**
   * What a modern (or dual-era) client puts in every request's `_meta`; default: initialize's
   * clientInfo and capabilities with protocol version 2026-07-28.
   */
  modern?: ModernClient;
  /** A modern client's first request (its probe): server/discover (default) or tools/list. */
  opening?: "server/discover" | "tools/list";
  registration: Registration;
  /**
   * The client's Client ID Metadata Document (an https URL with a path): used as its client_id,
   * without a registration call, when the authorization server advertises
   * client_id_metadata_document_supported (2026-07-28 clients prefer it); DCR otherwise.
   */
  clientMetadataUrl?: string;
  /** `resource` of the authorize and token requests; default the connector URL. */
  resource?: string;
  /** `scope` of the authorize request; default the PRM's scopes_supported, else the AS's. */
  scope?: string;
  /**
   * Past registration:
   *  - "stop" (default): the browser step needs the user; authorize, callback, token and the MCP
   *    steps after them are skipped (`needs_user`) and the run ends;
   *  - "follow": plays a browser whose authorization server consents at once (test servers,
   *    remembered consent): GET authorize, only a 302/303 to the callback is followed, then the
   *    code is redeemed at the token endpoint;
   *  - "sign_in": as far as a client goes without a person: the authorize request, as the user's
   *    browser sends it, must bring up the sign-in (a 200 page, or a redirect that is not an error
   *    sent back to the callback); callback, token and the MCP steps are then skipped (`needs_user`);
   *  - { bearer }: authorize, callback and token are skipped (`credential_given`) and the MCP steps use this token.
   */
  auth?: "stop" | "follow" | "sign_in" | { bearer: string };
  /**
   * With allowedOrigins: also dial the origin of the authorization server the server's own
   * Protected Resource Metadata names (mcp-lens doctor), and nothing else the metadata names.
   */
  followAuthorizationServer?: boolean;
  /** Also call the first listed tool (side effects: off by default). */
  toolCall?: boolean;
  /**
   * Also open the stream the era offers and read its start: a legacy client's GET with Accept
   * text/event-stream (a 405 is allowed; a 200 must answer at once), a modern client's
   * subscriptions/listen (its first event is notifications/subscriptions/acknowledged; -32601 when
   * the server offers none). The stream is closed once its start is read.
   */
  stream?: boolean;
}

/** Why a step was not performed. */
export type SkipReason =
  | "authless" // the server answered the unauthenticated initialize (or server/discover): no OAuth needed
  | "needs_user" // the user's browser step (and what depends on it) without a credential
  | "credential_given" // a token was given in place of the OAuth steps
  | "not_followed" // the server sent it to another origin, which the operator did not allow
  | "era_fallback"; // a dual-era client's modern request the server did not speak: it went on with initialize

export interface StepOutcome {
  step: HandshakeStep;
  status: "ok" | "failed" | "skipped";
  /** The status of the step's last HTTP answer. */
  httpStatus?: number;
  /** Why it failed, or was skipped. */
  detail?: string;
  skipped?: SkipReason;
}

export interface ConnectorRun {
  /** The connector URL as the client used it. */
  url: string;
  /** The steps performed or skipped, in handshake order; absent ones were not reached. */
  steps: StepOutcome[];
  failedAt: HandshakeStep | null;
  error?: string;
  /**
   * Every request the run sent with its answer, as the proxy would have captured it: the re-run
   * is judged by the same classification and diagnosis rules as live traffic (inspector/replay.ts).
   */
  exchanges: RawExchange[];
  /** HTTP requests sent (each one exchange at a proxy on the way). */
  requests: number;
  /** The step not performed because its URL is on an origin not allowed (see allowedOrigins). */
  notFollowed?: HandshakeStep;
  /** The era the run spoke in the end: a dual-era run that fell back is legacy. */
  era: Era;
  /** The origins the run's requests went to, in the order first dialled. */
  dialled: string[];
  /** Whether the authorization server's metadata advertises the refresh_token grant, once it was read. */
  refreshToken?: "advertised" | "not_advertised" | "not_said";
  /** Whether that metadata promises iss in the authorization response (RFC 9207 authorization_response_iss_parameter_supported). */
  issInRedirect?: "advertised" | "not_advertised";
  /** A dual-era run fell back to initialize (the server did not speak the modern era). */
  eraFallback: boolean;
  /** The steps this client performs in the era it spoke, in order; those not in `steps` were not reached. */
  plan: HandshakeStep[];
}

const OAUTH_STEPS: HandshakeStep[] = ["protected_resource_metadata", "authorization_server_metadata", "registration", "authorize", "callback", "token"];
const USER_STEPS: HandshakeStep[] = ["authorize", "callback", "token"];
const SESSION_STEPS: HandshakeStep[] = ["initialize", "initialized", "list"];
/** A protocol version that can go in MCP-Protocol-Version. */
const VERSION_TOKEN = /^[\x21-\x7e]{1,64}$/;

/** A modern client's `_meta` from a legacy client's initialize params: its clientInfo and capabilities. */
export function modernClientOf(initialize: ConnectorOptions["initialize"]): ModernClient {
  const info = initialize.clientInfo as { name?: unknown; version?: unknown } | undefined;
  const name = typeof info?.name === "string" ? info.name : "mcp-lens replay";
  const version = typeof info?.version === "string" ? info.version : "0";
  const capabilities = typeof initialize.capabilities === "object" && initialize.capabilities !== null ? (initialize.capabilities as Record<string, unknown>) : {};
  return { protocolVersion: MODERN_PROTOCOL_VERSION, clientInfo: { name, version }, clientCapabilities: capabilities };
}

/** The strings of a metadata field that should be a list of them (anything else: none). */
const stringsIn = (value: unknown): string[] => (Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : []);

/** The JSON-RPC error code of an answer's body, when it is one. */
function rpcErrorCode(text: string): number | undefined {
  try {
    const error = (JSON.parse(text) as { error?: { code?: unknown } } | null)?.error;
    return typeof error?.code === "number" ? error.code : undefined;
  } catch {
    return undefined;
  }
}

/** A PKCE S256 pair (RFC 7636): the verifier the client keeps, the challenge it sends. */
export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

export async function runConnector(connectorUrl: string, opts: ConnectorOptions): Promise<ConnectorRun> {
  const logical = new URL(connectorUrl);
  const resourceUrl = logical.href;
  const wire = openWire(logical, opts);
  const { send, readText, getJson, rpc, sendToConnector, firstEvent, challengeOf, captures, lastStatus } = wire;
  let refreshToken: ConnectorRun["refreshToken"];
  let issInRedirect: ConnectorRun["issInRedirect"];
  // A URL on a recorded public origin (a re-run) counts as on the connector's own origin when
  // compared. `via` is not mapped here: a plain-http `via` behind a TLS front must still see a
  // resource that says http:// where the client came over https.
  const alias = new Set((opts.mappedOrigins ?? []).flatMap((o) => originOf(o) ?? []));
  const asConnectorUrl = (url: string) => {
    const u = safeUrl(url);
    if (!u) return url;
    if (alias.has(u.origin)) {
      u.protocol = logical.protocol;
      u.host = logical.host;
    }
    return u.href;
  };
  // The client's own `resource` (a re-run's, as recorded) names the connector as the client saw
  // it: on a recorded public origin, it is the target's resource now, path kept; on any other
  // origin it is not sent (a recorded value the target never advertised), the connector URL is.
  const mappedResource = opts.resource ? asConnectorUrl(opts.resource) : undefined;
  const resource = mappedResource && safeUrl(mappedResource)?.origin === logical.origin ? mappedResource : resourceUrl;
  const outcomes = new Map<HandshakeStep, StepOutcome>();

  // The era: a dual-era client starts modern and may fall back once, to legacy.
  const mode: ClientEra = opts.era ?? "legacy";
  let era: Era = mode === "legacy" ? "legacy" : "modern";
  let eraFallback = false;
  const modern = opts.modern && VERSION_TOKEN.test(opts.modern.protocolVersion) ? opts.modern : { ...(opts.modern ?? modernClientOf(opts.initialize)), protocolVersion: MODERN_PROTOCOL_VERSION };
  const opening = opts.opening ?? "server/discover";
  const openingStep: HandshakeStep = opening === "server/discover" ? "discover" : "list";
  const MODERN_STEPS: HandshakeStep[] = opening === "server/discover" ? ["discover", "list"] : ["list"];
  let modernId = 0;

  /** The MCP steps of an era, with the optional ones asked for. */
  const mcpStepsOf = (spoken: Era): HandshakeStep[] => [
    ...(spoken === "modern" ? MODERN_STEPS : SESSION_STEPS),
    ...(opts.toolCall ? (["tool_call"] as const) : []),
    ...(opts.stream ? (["stream"] as const) : []),
  ];
  const httpOf = (step: HandshakeStep) => (lastStatus.has(step) ? { httpStatus: lastStatus.get(step)! } : {});
  const pass = (step: HandshakeStep, detail?: string) => outcomes.set(step, { step, status: "ok", ...httpOf(step), ...(detail ? { detail } : {}) });
  const skip = (steps: HandshakeStep[], skipped: SkipReason, detail: string) => {
    for (const step of steps) if (!outcomes.has(step)) outcomes.set(step, { step, status: "skipped", skipped, detail });
  };

  const describe = (status: number, text: string) => `${status} ${text.slice(0, 200)}`;
  /** The step failed on an unusable answer: the code is what the answer itself tells. */
  const unusable = (step: HandshakeStep, what: string, status: number, text: string) =>
    new StepFailure(step, `${what} answered ${describe(status, text)}`);

  /** One 2026-07-28 request: `_meta` in the body, the request metadata headers, no session id. */
  async function modernRpc(step: HandshakeStep, method: string, params: Record<string, unknown>, bearer: string | undefined, extra: Record<string, string> = {}) {
    const message = modernRequest(modernId++, method, params, modern);
    const reply = await rpc(step, message, { ...modernHeaders(message), ...extra, ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) });
    return { reply, answer: judgeModernAnswer(method, modern.protocolVersion, reply) };
  }

  /** Why a modern request failed: a modern-only client has no other era to try. */
  const modernFailure = (answer: Exclude<ModernAnswer, { kind: "ok" }>, reply: RpcReply) =>
    answer.kind === "not_modern"
      ? `${answer.detail}: the server does not speak ${modern.protocolVersion}, and a modern-only client has nowhere to go`
      : answer.kind === "challenge"
        ? `${opening} answered 401 ${reply.text.slice(0, 200)}`.trim()
        : answer.detail;

  /** A dual-era client meets a server that does not speak the modern era: initialize from now on. */
  const fallBack = (detail: string) => {
    era = "legacy";
    eraFallback = true;
    return `${detail}: fell back to initialize, as a dual-era client does`;
  };

  /** tools/list's tools: at least one, or the step fails. */
  function toolsOf(list: RpcReply): Array<{ name: string; inputSchema?: { required?: string[] } }> {
    const tools = list.message?.result?.tools as Array<{ name: string; inputSchema?: { required?: string[] } }> | undefined;
    if (list.status !== 200 || !Array.isArray(tools) || tools.length === 0) throw unusable("list", "tools/list", list.status, list.text);
    return tools;
  }

  /** The first listed tool's call: its required arguments filled with a greeting. */
  const callOf = (tool: { name: string; inputSchema?: { required?: string[] } }) => ({
    name: tool.name,
    arguments: Object.fromEntries(stringsIn(tool.inputSchema?.required).map((name) => [name, "hello from mcp-lens"])) as Record<string, unknown>,
  });

  /** A legacy client's GET stream: 405 (none offered) is fine; a 200 must be an event stream, at once. */
  async function getStream(headers: Record<string, string>): Promise<void> {
    const got = await sendToConnector("stream", { method: "GET", headers: { ...headers, accept: "text/event-stream" } });
    const isStream = (got.headers.get("content-type") ?? "").includes("text/event-stream");
    if (got.status === 200 && isStream) {
      got.cancel();
      return void pass("stream", "the GET stream opened at once");
    }
    const text = await readText("stream", got);
    if (got.status === 405) return void pass("stream", "no GET stream (405), which clients accept");
    throw unusable("stream", "the GET stream", got.status, text);
  }

  /** A modern client's subscriptions/listen: its first event acknowledges it; -32601 means none is offered. */
  async function listen(bearer: string | undefined): Promise<void> {
    const message = modernRequest(modernId++, "subscriptions/listen", { notifications: { toolsListChanged: true } }, modern);
    const headers = { "content-type": "application/json", ...(opts.accept ? { accept: opts.accept } : {}), ...modernHeaders(message), ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) };
    const got = await sendToConnector("stream", { method: "POST", headers, body: JSON.stringify(message) });
    if (!(got.headers.get("content-type") ?? "").includes("text/event-stream")) {
      const text = await readText("stream", got);
      if (got.status === 404 && rpcErrorCode(text) === METHOD_NOT_FOUND) return void pass("stream", "subscriptions/listen is not offered (-32601), which clients accept");
      throw unusable("stream", "subscriptions/listen", got.status, text);
    }
    const { data } = await firstEvent("stream", got);
    got.cancel();
    let method: unknown;
    try {
      method = (JSON.parse(data ?? "") as { method?: unknown }).method;
    } catch {
      /* reported below */
    }
    if (method !== "notifications/subscriptions/acknowledged") throw new StepFailure("stream", `subscriptions/listen's first event is ${String(data ?? "missing").slice(0, 200)}, not notifications/subscriptions/acknowledged`);
    pass("stream", "subscriptions/listen acknowledged at once");
  }

  try {
    // 1. Probe: the client's opening request without credentials — initialize (legacy), or
    // server/discover (modern, dual-era). An authless server answers it: it is also the opening.
    const initialize = { jsonrpc: "2.0", id: 0, method: "initialize", params: opts.initialize };
    let session: RpcReply | undefined;
    let connected = false;
    let opened: RpcReply | undefined; // the modern opening's answer (for tools/list as the opening)
    let bearer: string | undefined;
    let metadataUrl: string | undefined;
    const legacyProbe = async (detail?: string) => {
      const probe = await rpc("probe", initialize, {});
      if (probe.status === 200 && probe.message?.result) {
        session = probe; // authless server: the probe was the initialize
        connected = true;
        skip(OAUTH_STEPS, "authless", "the server answered the unauthenticated initialize: no OAuth needed");
      } else if (probe.status === 401) {
        metadataUrl = challengeOf(probe);
      } else {
        throw unusable("probe", "probe", probe.status, probe.text);
      }
      pass("probe", detail);
    };
    if (era === "modern") {
      const { reply, answer } = await modernRpc("probe", opening, {}, undefined);
      if (answer.kind === "ok") {
        if (openingStep === "list") toolsOf(reply);
        opened = reply;
        connected = true;
        skip(OAUTH_STEPS, "authless", `the server answered the unauthenticated ${opening}: no OAuth needed`);
        lastStatus.set(openingStep, reply.status); // the probe was the opening
        pass("probe");
        pass(openingStep);
      } else if (answer.kind === "challenge") {
        metadataUrl = challengeOf(reply);
        pass("probe");
      } else if (answer.kind === "not_modern" && mode === "dual") {
        await legacyProbe(fallBack(answer.detail));
      } else {
        throw new StepFailure("probe", modernFailure(answer, reply));
      }
    } else {
      await legacyProbe();
    }

    if (!connected) {
      // 2. Protected Resource Metadata: the challenge's URL, else the path form, then the root.
      const candidates = [...new Set([metadataUrl, `${logical.origin}/.well-known/oauth-protected-resource${logical.pathname.replace(/\/$/, "")}`, `${logical.origin}/.well-known/oauth-protected-resource`])].filter((u): u is string => !!u);
      const tried: string[] = [];
      let prm: Record<string, unknown> | undefined;
      for (const url of candidates) {
        const got = await getJson("protected_resource_metadata", url);
        tried.push(`${url} → ${got.status}`);
        if (typeof got.json?.resource === "string") {
          prm = got.json;
          break;
        }
      }
      if (!prm) throw new StepFailure("protected_resource_metadata", `no Protected Resource Metadata: ${tried.join("; ")}`);
      if (asConnectorUrl(String(prm.resource)) !== resourceUrl) {
        throw new StepFailure("protected_resource_metadata", `PRM resource ${String(prm.resource)} is not the connector URL ${resourceUrl}`);
      }
      const issuer = (prm.authorization_servers as unknown[] | undefined)?.[0];
      if (typeof issuer !== "string") throw new StepFailure("protected_resource_metadata", "PRM has no authorization_servers");
      pass("protected_resource_metadata");
      if (opts.followAuthorizationServer) wire.allow(issuer);

      // 3. AS metadata: RFC 8414 then OIDC, path-inserted forms when the issuer has a path.
      const step = "authorization_server_metadata";
      let is: URL;
      try {
        is = new URL(issuer);
      } catch {
        throw new StepFailure(step, `the advertised authorization server ${issuer} is not a URL`);
      }
      const p = is.pathname.replace(/\/$/, "");
      const asCandidates = p
        ? [`${is.origin}/.well-known/oauth-authorization-server${p}`, `${is.origin}/.well-known/openid-configuration${p}`, `${is.origin}${p}/.well-known/openid-configuration`]
        : [`${is.origin}/.well-known/oauth-authorization-server`, `${is.origin}/.well-known/openid-configuration`];
      let as: Record<string, unknown> | undefined;
      const asTried: string[] = [];
      for (const url of asCandidates) {
        const got = await getJson(step, url);
        asTried.push(`${url} → ${got.status}`);
        if (got.json?.issuer !== undefined) {
          as = got.json;
          break;
        }
      }
      if (!as) throw new StepFailure(step, `no authorization server metadata: ${asTried.join("; ")}`);
      if (as.issuer !== issuer) throw new StepFailure(step, `issuer ${String(as.issuer)} differs from the advertised authorization server ${issuer}`);
      if (!stringsIn(as.code_challenge_methods_supported).includes("S256")) throw new StepFailure(step, "code_challenge_methods_supported lacks S256");
      if (typeof as.authorization_endpoint !== "string" || typeof as.token_endpoint !== "string") throw new StepFailure(step, "authorization_endpoint or token_endpoint missing");
      const metadataDocument = opts.clientMetadataUrl !== undefined && as.client_id_metadata_document_supported === true;
      if (typeof as.registration_endpoint !== "string" && !metadataDocument) {
        throw new StepFailure(step, `no registration_endpoint${opts.clientMetadataUrl ? " and no client_id_metadata_document_supported" : " (and no client ID metadata document support used)"}`);
      }
      pass(step);
      // RFC 8414: without grant_types_supported the default is authorization_code and implicit.
      const grants = Array.isArray(as.grant_types_supported) ? as.grant_types_supported : undefined;
      refreshToken = grants === undefined ? "not_said" : grants.includes("refresh_token") ? "advertised" : "not_advertised";
      issInRedirect = as.authorization_response_iss_parameter_supported === true ? "advertised" : "not_advertised";

      // 4. The client's identity: its metadata document's URL (no call: the authorization server
      // fetches the document when the client comes to /authorize), else dynamic registration.
      let client: { client_id: string; client_secret?: string };
      if (metadataDocument) {
        client = { client_id: opts.clientMetadataUrl! };
        pass("registration", `client ID metadata document ${opts.clientMetadataUrl}: no registration call`);
      } else {
        const reg = await send("registration", String(as.registration_endpoint), {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json" },
          body: JSON.stringify(opts.registration),
        });
        const regText = await readText("registration", reg);
        let answer: { client_id?: unknown; client_secret?: unknown } = {};
        try {
          if (reg.status === 200 || reg.status === 201) answer = (JSON.parse(regText) as typeof answer | null) ?? {};
        } catch {
          /* reported below */
        }
        if (typeof answer.client_id !== "string") throw unusable("registration", "registration", reg.status, regText);
        client = { client_id: answer.client_id, ...(typeof answer.client_secret === "string" ? { client_secret: answer.client_secret } : {}) };
        pass("registration", opts.clientMetadataUrl ? "dynamic registration: the authorization server does not advertise client ID metadata documents" : undefined);
      }

      const auth = opts.auth ?? "stop";
      if (auth === "stop") {
        skip([...USER_STEPS, ...mcpStepsOf(era)], "needs_user", "needs the user's sign-in in a browser");
        return finish(null);
      }
      if (typeof auth === "object") {
        skip(USER_STEPS, "credential_given", "a credential was given instead");
        bearer = auth.bearer;
      } else {
        // 5-6. Authorize in the user's browser; consent is automatic; only 302/303 is followed.
        const redirectUri = opts.registration.redirect_uris[0]!;
        const { verifier, challenge } = pkcePair();
        const state = randomBytes(12).toString("base64url");
        const scopes = stringsIn(prm.scopes_supported ?? as.scopes_supported);
        const scope = opts.scope ?? (scopes.length ? scopes.join(" ") : undefined);
        const authorizeUrl = safeUrl(as.authorization_endpoint);
        if (!authorizeUrl) throw new StepFailure("authorize", `the authorization_endpoint ${as.authorization_endpoint.slice(0, 200)} is not a URL`);
        const query: Record<string, string> = {
          response_type: "code",
          client_id: client.client_id,
          redirect_uri: redirectUri,
          code_challenge: challenge,
          code_challenge_method: "S256",
          state,
          ...(scope ? { scope } : {}),
          resource,
        };
        for (const [k, v] of Object.entries(query)) authorizeUrl.searchParams.set(k, v);
        const authz = await send("authorize", authorizeUrl.href, { browser: true, headers: { accept: "text/html" } });
        const authText = await readText("authorize", authz);
        const location = authz.headers.get("location");
        const sentBack = location ? safeUrl(location, authorizeUrl) : undefined;
        const toCallback = sentBack !== undefined && `${sentBack.origin}${sentBack.pathname}` === redirectUri;
        // A sign-in page may redirect as it likes; the authorization response must be a 302 or 303.
        if ((auth !== "sign_in" || toCallback) && (authz.status === 307 || authz.status === 308)) {
          throw new StepFailure("callback", `the authorization response is a ${authz.status}; hosted clients need 302 or 303`);
        }
        if (auth === "sign_in") {
          // The sign-in page, or a redirect to one; an error sent back to the callback, or any
          // other answer, is the authorization server refusing this client before a person could act.
          if (toCallback && sentBack.searchParams.get("error")) {
            throw new StepFailure("authorize", `the authorization server sent the client back with error ${sentBack.searchParams.get("error")}: ${sentBack.searchParams.get("error_description") ?? ""}`.trim());
          }
          if (authz.status !== 200 && !(authz.status >= 300 && authz.status < 400 && location)) throw unusable("authorize", "authorize", authz.status, authText);
          pass("authorize", toCallback ? "consent remembered: sent straight back to the callback" : authz.status === 200 ? "the sign-in page" : `redirected to ${sentBack?.origin ?? "the sign-in"}`);
          const why = toCallback ? "the code goes to the client's own callback, which doctor cannot play" : "needs the user's sign-in in a browser";
          skip(["callback", "token", ...mcpStepsOf(era)], "needs_user", why);
          return finish(null);
        }
        if (authz.status !== 302 && authz.status !== 303) throw unusable("authorize", "authorize", authz.status, authText);
        pass("authorize");
        const callback = sentBack;
        if (!callback) throw new StepFailure("callback", `the authorization response's Location ${String(location).slice(0, 200)} is missing or not a URL`);
        if (`${callback.origin}${callback.pathname}` !== redirectUri) throw new StepFailure("callback", `redirected to ${callback.href}, not ${redirectUri}`);
        if (callback.searchParams.get("state") !== state) throw new StepFailure("callback", "state mismatch");
        const error = callback.searchParams.get("error");
        if (error) throw new StepFailure("callback", `authorization error ${error}: ${callback.searchParams.get("error_description") ?? ""}`);
        const code = callback.searchParams.get("code");
        if (!code) throw new StepFailure("callback", "no code in the authorization response");
        pass("callback");

        // 7. Token, form-encoded, from the client's backend.
        const form = new URLSearchParams({ grant_type: "authorization_code", code, redirect_uri: redirectUri, code_verifier: verifier, resource, client_id: client.client_id });
        if (client.client_secret) form.set("client_secret", client.client_secret);
        const tok = await send("token", as.token_endpoint, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" }, body: form.toString() });
        const tokText = await readText("token", tok);
        let tokens: { access_token?: string; token_type?: string } = {};
        try {
          tokens = JSON.parse(tokText) as typeof tokens;
        } catch {
          /* reported below */
        }
        if (tok.status !== 200 || typeof tokens.access_token !== "string" || tokens.token_type?.toLowerCase() !== "bearer") {
          throw unusable("token", "token", tok.status, tokText);
        }
        pass("token");
        bearer = tokens.access_token;
      }
    }

    // 8. The authenticated opening request: server/discover (modern; a dual-era client falls back
    // to initialize when the server does not speak it), or initialize.
    if (!connected && era === "modern") {
      const { reply, answer } = await modernRpc(openingStep, opening, {}, bearer);
      if (answer.kind === "ok") {
        if (openingStep === "list") toolsOf(reply);
        opened = reply;
        connected = true;
        pass(openingStep);
      } else if (answer.kind === "not_modern" && mode === "dual") {
        skip([openingStep], "era_fallback", fallBack(answer.detail));
      } else {
        throw new StepFailure(openingStep, modernFailure(answer, reply));
      }
    }
    const auth: Record<string, string> = bearer ? { authorization: `Bearer ${bearer}` } : {};

    if (era === "modern") {
      // 9. tools/list (unless it was the opening), optionally one tools/call: each self-contained.
      let tools: ReturnType<typeof toolsOf>;
      if (openingStep === "list") {
        tools = toolsOf(opened!);
      } else {
        const { reply } = await modernRpc("list", "tools/list", {}, bearer);
        tools = toolsOf(reply);
        pass("list");
      }
      if (opts.toolCall) {
        const tool = tools[0]!;
        const call = callOf(tool);
        const { reply } = await modernRpc("tool_call", "tools/call", call, bearer, mcpParamHeaders(tool.inputSchema, call.arguments));
        if (reply.status !== 200 || !reply.message?.result) throw unusable("tool_call", "tools/call", reply.status, reply.text);
        pass("tool_call");
      }
      if (opts.stream) await listen(bearer);
      return finish(null);
    }

    if (!session) {
      session = await rpc("initialize", { ...initialize, id: 1 }, auth);
      if (session.status !== 200 || !session.message?.result) throw unusable("initialize", "initialize", session.status, session.text);
    }
    pass("initialize");

    // 9-10. initialized, tools/list, optionally one tools/call, with the session id and protocol version.
    const common: Record<string, string> = {
      ...auth,
      ...(session.sessionId ? { "mcp-session-id": session.sessionId } : {}),
      "mcp-protocol-version": String(session.message!.result!.protocolVersion ?? opts.initialize.protocolVersion),
    };
    const notified = await rpc("initialized", { jsonrpc: "2.0", method: "notifications/initialized" }, common);
    if (![200, 202, 204].includes(notified.status)) throw unusable("initialized", "notifications/initialized", notified.status, notified.text);
    pass("initialized");

    const tools = toolsOf(await rpc("list", { jsonrpc: "2.0", id: 2, method: "tools/list", params: {} }, common));
    pass("list");

    if (opts.toolCall) {
      const call = await rpc("tool_call", { jsonrpc: "2.0", id: 3, method: "tools/call", params: callOf(tools[0]!) }, common);
      if (call.status !== 200 || !call.message?.result) throw unusable("tool_call", "tools/call", call.status, call.text);
      pass("tool_call");
    }
    if (opts.stream) await getStream(common);
    return finish(null);
  } catch (error) {
    if (!(error instanceof StepFailure)) throw error;
    if (error instanceof NotFollowed) {
      outcomes.set(error.step, { step: error.step, status: "skipped", skipped: "not_followed", detail: error.message });
      return { ...finish(null), notFollowed: error.step };
    }
    outcomes.set(error.step, { step: error.step, status: "failed", ...httpOf(error.step), detail: error.message });
    return finish(error);
  }

  function finish(failure: StepFailure | null): ConnectorRun {
    const order = (s: StepOutcome) => HANDSHAKE_STEPS.indexOf(s.step);
    const steps = [...outcomes.values()].sort((a, b) => order(a) - order(b));
    const exchanges = captures.map((c) => c.exchange());
    const mcpSteps = mcpStepsOf(era);
    const plan = HANDSHAKE_STEPS.filter((step) => ["probe", ...OAUTH_STEPS, ...mcpSteps].includes(step) || outcomes.has(step));
    const common = { url: resourceUrl, steps, requests: wire.requests, exchanges, era, eraFallback, plan, dialled: [...wire.dialled], ...(refreshToken ? { refreshToken } : {}), ...(issInRedirect ? { issInRedirect } : {}) };
    if (!failure) return { ...common, failedAt: null };
    return { ...common, failedAt: failure.step, error: failure.message };
  }
}
