// The modern era (2026-07-28) and where the two eras meet: versions, request headers, Client ID
// Metadata Documents, the authorization response's iss.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { type ClassifiedExchange, MODERN_PROTOCOL_VERSION, startedAfter, byStart } from "../exchange.js";
import { ended } from "./context.js";
import {
  andMore,
  answeredOk,
  AUTHORIZE_KINDS,
  bodyJson,
  claimed,
  codeGrants,
  describe,
  detail,
  errorText,
  HEADER_MISMATCH_ERROR,
  ids,
  isHeaderMismatchAnswer,
  isLegacyAnswerToModern,
  isModernOnlyRefusal,
  isModernRequest,
  isRedirect,
  MCP_KINDS,
  MISSING_CAPABILITY_ERROR,
  MCP_STEPS,
  methods,
  parseUrl,
  pathOf,
  rpcErrorCodes,
  serverVersions,
  trimSlash,
  UNSUPPORTED_VERSION_ERROR,
} from "./evidence.js";
import type { DiagnosisContext, DiagnosisRule, Finding } from "./rule.js";

export const ERA_RULES: readonly DiagnosisRule[] = [
  {
    code: "era_mismatch",
    severity: "error",
    reference: "MCP 2026-07-28 Versioning §Compatibility; MCP 2026-07-28 Transports: Streamable HTTP §Backward Compatibility",
    meaning:
      "Client and server speak different eras and neither can move: a modern-only client (2026-07-28 `_meta`, " +
      "server/discover) gets a legacy server's 4xx without a modern error and never falls back to initialize, or a " +
      "legacy client's initialize is refused by a modern-only server (-32022 listing only 2026-07-28). A dual-era " +
      "client's fallback to initialize is healthy and not reported.",
    steps: ["probe", "discover", ...MCP_STEPS],
    explains: ["probe_unexpected_status", "mcp_endpoint_not_found", "protocol_version_rejected", "session_not_found"],
    check(ctx) {
      return modernClientLegacyServer(ctx) ?? legacyClientModernServer(ctx);
    },
  },
  {
    code: "header_mismatch",
    severity: "error",
    reference: "MCP 2026-07-28 Transports: Streamable HTTP §Request Metadata (-32020 HeaderMismatch)",
    meaning:
      "The server rejected a modern request (400, -32020 HeaderMismatch) because its Mcp-Method, Mcp-Name or " +
      "MCP-Protocol-Version header is missing or differs from the body: a client that prefixes tool names in one " +
      "place only, or a gateway that rewrites bodies or headers.",
    steps: ["probe", "discover", "list", "tool_call", "stream"],
    check(ctx) {
      const hits = ctx.of(...MCP_KINDS).filter(isHeaderMismatchAnswer);
      const e = hits[0];
      if (!e) return null;
      const mismatch = e.facts.mcp?.headerMismatch;
      const what = methods(e)[0] ?? "the request";
      const code = rpcErrorCodes(e).includes(HEADER_MISMATCH_ERROR) ? " -32020 HeaderMismatch" : "";
      const summary = mismatch
        ? `${what} ${describe(e)} was answered ${e.status}${code}${detail(e)}: ${mismatch.join("; ")}`
        : `${what} ${describe(e)} was answered ${e.status}${code}${detail(e)}, although the headers mcp-lens ` +
          `recorded match the body (${sentHeaders(e)}): something between mcp-lens and the server most likely ` +
          "rewrote the body or the headers";
      return { summary: summary + andMore(hits), evidence: ids(hits), fix: headerFix(e) };
    },
  },
  {
    code: "cimd_fetch_failed",
    severity: "error",
    reference: "MCP 2026-07-28 Authorization §Client ID Metadata Documents; draft-ietf-oauth-client-id-metadata-document §4",
    meaning:
      "The client's client_id is a Client ID Metadata Document URL and the authorization server refuses it at " +
      "/authorize or /token (invalid_client, invalid_request, unauthorized_client, 5xx): it could not fetch or " +
      "accept the document (size limit, WAF, timeout, the document's client_id not equal to its URL, the " +
      "redirect URI not listed), or it does not support CIMD at all while the client used it anyway.",
    steps: ["authorize", "callback", "token"],
    explains: ["redirect_uri_rejected", "token_request_rejected", "stale_client_registration", "token_auth_method_mismatch"],
    check(ctx) {
      const hits = [...ctx.of(...AUTHORIZE_KINDS), ...ctx.of("token")].filter(isCimdRefusal).sort(byStart);
      const e = hits[0];
      if (!e) return null;
      return cimdFinding(ctx, e, hits);
    },
  },
  {
    code: "authorization_response_iss_mismatch",
    severity: "error",
    reference: "RFC 9207 §2.4; MCP 2026-07-28 Authorization §Authorization Response",
    meaning:
      "The authorization response (the redirect to the callback) carries an iss that is not byte-for-byte the " +
      "issuer of the authorization server metadata (a trailing slash, scheme, port), or none although the " +
      "metadata says authorization_response_iss_parameter_supported: true. Clients of 2026-07-28 compare the two " +
      "before redeeming the code and stop between the callback and /token.",
    steps: ["callback", "token"],
    check(ctx) {
      for (const e of ctx.of(...AUTHORIZE_KINDS).filter((x) => isRedirect(x) && x.facts.issued?.code !== undefined)) {
        const doc = issuerDoc(ctx, e);
        const issuer = doc?.facts.metadata?.issuer;
        if (!doc || issuer === undefined) continue;
        const iss = e.facts.iss;
        const promised = doc.facts.metadata?.authorizationResponseIssParameterSupported === true;
        if (iss === undefined ? !promised : iss === issuer) continue;
        const token = codeGrants(ctx).find((t) => startedAfter(t, e));
        // Not redeemed yet: only the client's stopping tells it refused the response.
        if (!token && !ended(ctx)) continue;
        return issFinding(e, doc, issuer, iss, token);
      }
      return null;
    },
  },
  {
    code: "client_capability_missing",
    severity: "error",
    reference: "MCP 2026-07-28 Transports: Streamable HTTP §Server Validation (-32021 MissingRequiredClientCapability)",
    meaning:
      "A modern server refused a request with -32021 MissingRequiredClientCapability: it needs a client capability (elicitation, sampling, roots…) the client did not declare in its `_meta`.",
    steps: ["probe", "discover", ...MCP_STEPS],
    check(ctx) {
      const hits = ctx.of(...MCP_KINDS).filter((e) => rpcErrorCodes(e).includes(MISSING_CAPABILITY_ERROR));
      const e = hits[0];
      if (!e) return null;
      const required = requiredCapabilities(e);
      const declared = e.facts.mcp?.clientCapabilities ?? [];
      const needs = required.length > 0 ? required.join(", ") : "a capability it does not name";
      return {
        summary:
          `${methods(e)[0] ?? "The request"} ${describe(e)} answered ${e.status}${detail(e)}: the server requires ${needs}; ` +
          `the client declared ${declared.length > 0 ? declared.join(", ") : "no capability"}${andMore(hits)}`,
        evidence: ids(hits),
        fix:
          `Either the client declares and implements ${needs} (\`_meta\` io.modelcontextprotocol/clientCapabilities), or the ` +
          "server answers this request without it: require a capability only where the request cannot be served otherwise",
      };
    },
  },
];

// ---------------------------------------------------------------------------------------------
// era_mismatch

/** A modern request answered as a legacy server answers it, with no initialize after it (no dual-era fallback). */
function modernClientLegacyServer(ctx: DiagnosisContext): Finding | null {
  if (ctx.handshake.eraFallback) return null;
  const mcp = ctx.of(...MCP_KINDS);
  // The server answered a modern request: it speaks the era (other rules explain what failed).
  if (mcp.some((e) => isModernRequest(e) && answeredOk(e))) return null;
  const hits = mcp.filter(isLegacyAnswerToModern);
  const e = hits[0];
  if (!e || !ended(ctx)) return null;
  if (mcp.some((x) => startedAfter(x, e) && methods(x).includes("initialize"))) return null; // the dual-era fallback
  // A plain 404 where the protected resource metadata puts MCP elsewhere is a wrong path, not an era.
  const resource = ctx.prm?.facts.metadata?.resource;
  if (e.status === 404 && resource !== undefined && pathOf(resource) !== "" && pathOf(resource) !== trimSlash(e.path)) return null;
  const mcpMeta = e.facts.mcp;
  const offered = [
    mcpMeta?.metaProtocolVersion !== undefined ? `_meta protocolVersion ${mcpMeta.metaProtocolVersion}` : undefined,
    mcpMeta?.protocolVersionHeader !== undefined ? `MCP-Protocol-Version ${mcpMeta.protocolVersionHeader}` : undefined,
  ].filter((s) => s !== undefined);
  const supported = serverVersions(e);
  const plain404 = e.status === 404 && rpcErrorCodes(e).length === 0;
  const serverSide =
    supported.length > 0
      ? `the server supports only ${supported.join(", ")} (legacy era)`
      : plain404
        ? "a 404 with no JSON-RPC body is most likely a legacy server (≤ 2025-11-25) that does not serve 2026-07-28 requests, or no MCP route at this path"
        : "no -32020/-32021/-32022 error: that is how a legacy server (≤ 2025-11-25) answers, so the server most likely speaks only the legacy era";
  return {
    summary:
      `The client speaks only the modern era: ${methods(e)[0] ?? "its request"} ${describe(e)} carried ` +
      `${offered.join(" and ") || "the 2026-07-28 request metadata"}; the server answered ${e.status}${detail(e)} — ` +
      `${serverSide}; the client never fell back to initialize${andMore(hits)}`,
    evidence: ids(hits),
    fix:
      "The server is the side that is behind: upgrade it to an MCP SDK that serves 2026-07-28 (TypeScript " +
      "@modelcontextprotocol/server 2.x, Python mcp 2.x) and keep serving the legacy era beside it (serve both eras), " +
      "or configure the client for automatic version negotiation (dual-era), so it falls back to initialize" +
      (supported.length > 0 ? ` with ${supported[0]}` : ""),
  };
}

/** A legacy initialize refused by a modern-only server, the client never getting any further. */
function legacyClientModernServer(ctx: DiagnosisContext): Finding | null {
  const mcp = ctx.of(...MCP_KINDS);
  const hits = mcp.filter(isModernOnlyRefusal);
  const e = hits[0];
  if (!e || !ended(ctx)) return null;
  // The client got on (a dual-era client that went modern after all, or a retry that worked).
  if (mcp.some((x) => startedAfter(x, e) && answeredOk(x))) return null;
  const asked = e.facts.mcp?.protocolVersionRequested ?? e.facts.mcp?.protocolVersionHeader ?? "(none)";
  const info = e.facts.mcp?.clientInfo;
  const client = info?.name ? ` (clientInfo ${info.name}${info.version ? ` ${info.version}` : ""})` : "";
  const supported = serverVersions(e);
  const requested = e.facts.mcp?.versionRequestedByError;
  const serverSide =
    supported.length > 0
      ? `the server is modern-only: it supports ${supported.join(", ")}` +
        `${rpcErrorCodes(e).includes(UNSUPPORTED_VERSION_ERROR) ? ` (-32022 data.supported${requested ? `, data.requested ${requested}` : ""})` : ""}`
      : rpcErrorCodes(e).includes(UNSUPPORTED_VERSION_ERROR)
        ? `the server answered -32022 UnsupportedProtocolVersion, a 2026-07-28 error: it is most likely modern-only`
        : "the server has no initialize method (404 -32601): it is most likely modern-only";
  return {
    summary:
      `The client speaks only the legacy era: initialize ${describe(e)} asked for protocol version ${asked}${client}; ` +
      `the server answered ${e.status}${detail(e)} — ${serverSide}; the client cannot move to ${MODERN_PROTOCOL_VERSION}` +
      andMore(hits),
    evidence: ids(hits),
    fix:
      "The client is the side that is behind: upgrade it to a dual-era MCP SDK (TypeScript @modelcontextprotocol/client " +
      "2.x, Python mcp 2.x), or have the server serve both eras while legacy clients remain (e.g. TypeScript SDK 2.x " +
      "createMcpHandler with legacy: 'stateless', which answers initialize with a legacy version)",
  };
}

// ---------------------------------------------------------------------------------------------
// header_mismatch

function sentHeaders(e: ClassifiedExchange): string {
  const m = e.facts.mcp;
  return [
    `Mcp-Method ${m?.methodHeader ?? "(none)"}`,
    ...(m?.nameHeader !== undefined ? [`Mcp-Name ${m.nameHeader}`] : []),
    `MCP-Protocol-Version ${m?.protocolVersionHeader ?? "(none)"}`,
  ].join(", ");
}

function headerFix(e: ClassifiedExchange): string {
  const m = e.facts.mcp;
  const base =
    "Send Mcp-Method, Mcp-Name (tools/call, resources/read, prompts/get) and MCP-Protocol-Version equal to the body's " +
    "method, params.name / params.uri and _meta protocolVersion on every request";
  const body = e.facts.mcp?.toolNames?.[0];
  if (m?.nameHeader !== undefined && body !== undefined && m.nameHeader !== body) {
    const prefixed = m.nameHeader.endsWith(body) || body.endsWith(m.nameHeader);
    return prefixed
      ? `${base}: Mcp-Name ${m.nameHeader} vs the body's ${body} is a tool-name prefix applied in one place only — a client ` +
          "or gateway that namespaces tool names must put the same name in the header and the body"
      : `${base}: a gateway that rewrites tool names in the body must rewrite Mcp-Name too (here ${m.nameHeader} vs ${body})`;
  }
  if (!m?.headerMismatch) {
    return (
      `${base}. The request reached mcp-lens consistent, so look behind it: a gateway or middleware that rewrites ` +
      "JSON-RPC bodies (method or tool names, _meta) or strips Mcp-* headers must keep the two equal"
    );
  }
  return `${base}: a client built on an SDK older than 2026-07-28 that sets _meta by hand, or a gateway that rewrites bodies or drops Mcp-* headers, breaks this`;
}

// ---------------------------------------------------------------------------------------------
// cimd_fetch_failed

const CIMD_ERRORS = new Set(["invalid_client", "invalid_request", "unauthorized_client", "server_error", "temporarily_unavailable", "invalid_redirect_uri"]);

/**
 * /authorize or /token refusing a URL client_id (not the user's choice, the code or the scope). At
 * /token an invalid_request is mostly about the grant's own parameters: it counts only when it names the client.
 */
function isCimdRefusal(e: ClassifiedExchange): boolean {
  if (!e.facts.clientIdIsMetadataDocument || claimed(e)) return false;
  const error = e.facts.oauthError;
  if (e.kind === "token" && error === "invalid_request") return /client/i.test(e.facts.oauthErrorDescription ?? "");
  if (error !== undefined) return CIMD_ERRORS.has(error);
  return e.status !== null && (e.status >= 500 || (e.status >= 400 && e.kind !== "token"));
}

function cimdFinding(ctx: DiagnosisContext, e: ClassifiedExchange, hits: ClassifiedExchange[]): Finding {
  const url = e.facts.clientId!;
  const advertising = ctx.asDocs.find((d) => d.facts.metadata?.clientIdMetadataDocumentSupported === true);
  const doc = advertising ?? ctx.asDocs[0];
  const said = `${describe(e)} answered ${e.status}${detail(e)} for client_id ${url}`;
  const evidence = [...ids(hits), ...(doc ? [doc.id] : [])];
  if (!advertising) {
    const registration = doc?.facts.metadata?.registrationEndpoint;
    return {
      summary:
        `The client used a Client ID Metadata Document URL as its client_id, but ` +
        `${doc ? `the authorization server metadata ${describe(doc)} does not advertise client_id_metadata_document_supported` : "no authorization server metadata advertising client_id_metadata_document_supported was seen"}; ` +
        `${said}: the authorization server does not accept CIMD client ids${andMore(hits)}`,
      evidence,
      fix: registration
        ? `The client should register at ${registration} (DCR) when the metadata does not advertise CIMD; or enable Client ID Metadata Documents on the authorization server and advertise client_id_metadata_document_supported: true`
        : "Enable Client ID Metadata Documents on the authorization server (advertise client_id_metadata_document_supported: true), or pre-register the client and configure it with that client id",
    };
  }
  const callback = e.facts.redirectUris?.[0] ?? ctx.of("authorize").find((a) => a.facts.redirectUris)?.facts.redirectUris?.[0];
  const text = errorText(e);
  const why = /redirect/i.test(text)
    ? `the document at ${url} most likely does not list the redirect URI ${callback ?? "the client used"}`
    : /client_id/i.test(text) && /match|equal|differ|mismatch/i.test(text)
      ? `the document's client_id is most likely not exactly its own URL ${url}`
      : (e.status ?? 0) >= 500 || /fetch|retriev|timeout|timed out|too large|size|exceed|unreachable|could not|failed to|blocked/i.test(text)
        ? `the authorization server most likely could not fetch the document at ${url}`
        : `the authorization server most likely could not fetch or accept the document at ${url}`;
  return {
    summary:
      `The authorization server metadata ${describe(doc!)} advertises client_id_metadata_document_supported, ` +
      `but ${said}: ${why}${andMore(hits)}`,
    evidence,
    fix:
      `Make ${url} a document the authorization server can fetch and accept: public https, 200 application/json within ` +
      "a few seconds, small (authorization servers cap it at a few KB), not behind a WAF or bot challenge; its client_id " +
      `must be exactly ${url}` +
      (callback ? ` and its redirect_uris must include ${callback}` : " and its redirect_uris must include the client's callback") +
      "; check the authorization server's log for its fetch error",
  };
}

// ---------------------------------------------------------------------------------------------
// authorization_response_iss_mismatch

/** The AS metadata whose authorization endpoint this response came from, else the first. */
function issuerDoc(ctx: DiagnosisContext, e: ClassifiedExchange): ClassifiedExchange | undefined {
  const served = ctx.asDocs.find((d) => {
    const endpoint = parseUrl(d.facts.metadata?.authorizationEndpoint ?? "");
    return endpoint !== undefined && trimSlash(endpoint.pathname) === trimSlash(e.path);
  });
  return served ?? ctx.asDocs[0];
}

function issFinding(
  e: ClassifiedExchange,
  doc: ClassifiedExchange,
  issuer: string,
  iss: string | undefined,
  token: ClassifiedExchange | undefined,
): Finding {
  const what =
    iss === undefined
      ? `The authorization response ${describe(e)} carries no iss, although the metadata ${describe(doc)} says authorization_response_iss_parameter_supported: true (issuer ${issuer})`
      : `The authorization response ${describe(e)} carries iss=${iss}, but the metadata ${describe(doc)} says issuer ${issuer}${issDifference(iss, issuer)}`;
  const then = token
    ? `; this client redeemed the code anyway (${describe(token)}), clients that check iss (2026-07-28, RFC 9207) stop here`
    : "; the client never called /token, most likely because it compares iss with the issuer byte-for-byte before redeeming the code";
  return {
    summary: what + then,
    evidence: [e.id, doc.id, ...(token ? [token.id] : [])],
    fix:
      iss === undefined
        ? `Add iss=${encodeURIComponent(issuer)} (the metadata's issuer, exactly) to every redirect to the callback (RFC 9207), or stop advertising authorization_response_iss_parameter_supported`
        : `Send iss exactly equal to the metadata's issuer ${issuer} (byte-for-byte: same scheme, host, port and path, trailing slash included), or change the metadata's issuer to ${iss} everywhere it is used`,
    ...(token ? { severity: "warning" as const } : {}),
  };
}

function issDifference(iss: string, issuer: string): string {
  if (trimSlash(iss) === trimSlash(issuer)) return " (they differ only by a trailing slash)";
  const a = parseUrl(iss);
  const b = parseUrl(issuer);
  if (!a || !b) return " (one of them is not a URL)";
  if (a.protocol !== b.protocol) return ` (scheme ${a.protocol.slice(0, -1)} vs ${b.protocol.slice(0, -1)})`;
  if (a.host !== b.host) return a.hostname === b.hostname ? " (the port differs)" : ` (host ${a.host} vs ${b.host})`;
  if (iss.toLowerCase() === issuer.toLowerCase()) return " (they differ in letter case)";
  return " (the path differs)";
}

/** The capabilities a -32021 answer says are missing (data.requiredCapabilities), by name. */
function requiredCapabilities(e: ClassifiedExchange): string[] {
  const error = bodyJson(e.responseBody)?.error;
  const data = typeof error === "object" && error !== null ? (error as Record<string, unknown>).data : undefined;
  const required = typeof data === "object" && data !== null ? (data as Record<string, unknown>).requiredCapabilities : undefined;
  return typeof required === "object" && required !== null ? Object.keys(required).slice(0, 16) : [];
}
