// Reading exchanges: thresholds, the specific causes that claim an exchange, headers, bodies, URLs.

import { type ClassifiedExchange, type ExchangeKind, MODERN_PROTOCOL_VERSION, type RecordedBody } from "../exchange.js";
import { header } from "../exchange-view.js";
import type { HandshakeStep } from "../handshake.js";
import type { DiagnosisContext } from "./rule.js";
import { HEADER_MISMATCH_ERROR, METHOD_NOT_FOUND_ERROR, MISSING_CAPABILITY_ERROR, UNSUPPORTED_VERSION_ERROR } from "../mcp-facts.js";

/** Hosted clients give up on discovery, registration and token calls after about 10 s. */
export const CLIENT_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Shared by the rules

export const MCP_KINDS: ExchangeKind[] = ["mcp_post", "mcp_get_stream", "mcp_delete"];
export const AS_KINDS: ExchangeKind[] = ["authorization_server_metadata", "openid_configuration"];
export const AUTHORIZE_KINDS: ExchangeKind[] = ["authorize", "authorize_consent"];
export const PRM_PATH = "/.well-known/oauth-protected-resource";
export const MCP_STEPS: HandshakeStep[] = ["initialize", "initialized", "list", "tool_call"];

// Claims: specific causes that explain an exchange, so generic status rules skip it

export function claimed(e: ClassifiedExchange): boolean {
  return (
    e.upstreamError !== null ||
    e.status === 504 ||
    wafMarker(e) !== undefined ||
    isHostRejection(e) ||
    isOriginRejection(e) ||
    isAcceptRejection(e) ||
    (MCP_KINDS.includes(e.kind) && isRedirect(e)) ||
    isProtocolRejection(e)
  );
}

export const WAF_PAGE = new RegExp(
  [
    "cf-chl",
    "challenge-platform",
    "just a moment\\.\\.\\.",
    "attention required! \\| cloudflare",
    "cf-error-details",
    "sucuri website firewall",
    "incapsula incident",
    "_incapsula_resource",
    "the requested url was rejected", // F5
    "aws waf",
    "mod_?security",
    "ddos-guard",
    "reference #\\d+\\.[0-9a-f]+", // Akamai
  ].join("|"),
  "i",
);

export function wafMarker(e: ClassifiedExchange): string | undefined {
  const mitigated = resHeader(e, "cf-mitigated");
  if (mitigated !== undefined) return `cf-mitigated: ${mitigated}`;
  const action = resHeader(e, "x-amzn-waf-action");
  if (action !== undefined) return `x-amzn-waf-action: ${action}`;
  if (![403, 429, 503].includes(e.status ?? 0) || !isHtml(e)) return undefined;
  const page = WAF_PAGE.exec(bodyText(e.responseBody));
  return page ? `a challenge/block page: "${page[0]}"` : undefined;
}

export const HOST_ERROR = /invalid host|host header|host not allowed|disallowed host|dns.rebinding|misdirected/i;

export function isHostRejection(e: ClassifiedExchange): boolean {
  return e.status === 421 || ((e.status === 400 || e.status === 403) && HOST_ERROR.test(errorText(e)));
}

export function isOriginRejection(e: ClassifiedExchange): boolean {
  if (e.status !== 403 || reqHeader(e, "origin") === undefined) return false;
  return /origin/i.test(errorText(e)) && !isHostRejection(e);
}

export function isAcceptRejection(e: ClassifiedExchange): boolean {
  if (e.status !== 406 || !MCP_KINDS.includes(e.kind)) return false;
  const accept = (reqHeader(e, "accept") ?? "").toLowerCase();
  return !accept.includes("text/event-stream") || (e.method === "POST" && !accept.includes("application/json"));
}

export function isProtocolRejection(e: ClassifiedExchange): boolean {
  return e.status === 400 && MCP_KINDS.includes(e.kind) && /protocol.?version/i.test(errorText(e));
}

/** All values of a header, joined: exchange-view's reading, the one classification uses. */
export const reqHeader = (e: ClassifiedExchange, lowerName: string) => header(e.requestHeaders, lowerName);
export const resHeader = (e: ClassifiedExchange, lowerName: string) => header(e.responseHeaders, lowerName);

export function bodyText(body: RecordedBody): string {
  return body.encoding === "utf8" ? (body.text ?? "") : "";
}

export function bodyJson(body: RecordedBody): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(bodyText(body));
    const isObject = typeof value === "object" && value !== null && !Array.isArray(value);
    return isObject ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export function stringField(record: Record<string, unknown> | undefined, name: string): string | undefined {
  const value = record?.[name];
  return typeof value === "string" ? value : undefined;
}

/** Everything the server said about an error, for matching. */
export function errorText(e: ClassifiedExchange): string {
  const rpc = (e.facts.mcp?.messages ?? []).flatMap((m) => (m.errorMessage ? [m.errorMessage] : []));
  // A redirect's body is boilerplate ("Found. Redirecting to …"), never the error.
  const body = isRedirect(e) ? "" : bodyText(e.responseBody).slice(0, 4000);
  return [e.facts.oauthError, e.facts.oauthErrorDescription, ...rpc, e.facts.wwwAuthenticate, body]
    .filter((s) => s !== undefined)
    .join(" ");
}

/** A short quote of what the server said, for summaries: ` "invalid_grant: code expired"`, or "". */
export function detail(e: ClassifiedExchange): string {
  const { oauthError, oauthErrorDescription } = e.facts;
  const rpc = e.facts.mcp?.messages.find((m) => m.errorMessage)?.errorMessage;
  const text = (isRedirect(e) ? "" : bodyText(e.responseBody))
    .replace(/<(script|style)[\s\S]*?<\/\1>/gi, " ")
    .replace(/<[^>]+>/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  // Many error bodies say it in "message" rather than error_description.
  const message = oauthErrorDescription ?? (isRedirect(e) ? undefined : stringField(bodyJson(e.responseBody), "message"));
  const said =
    oauthError !== undefined
      ? message
        ? `${oauthError}: ${message}`
        : oauthError
      : (rpc ?? (text.length > 120 ? `${text.slice(0, 117)}…` : text));
  return said ? ` "${said}"` : "";
}

export const describe = (e: ClassifiedExchange) => `${e.method} ${e.path} (#${e.id})`;
export const andMore = (hits: readonly unknown[]) => (hits.length > 1 ? ` (and ${hits.length - 1} more)` : "");
export const seconds = (ms: number | null | undefined) => `${((ms ?? 0) / 1000).toFixed(1)} s`;
export const ids = (list: readonly ClassifiedExchange[]) => list.map((e) => e.id);
export const methods = (e: ClassifiedExchange) => e.facts.mcp?.methods ?? [];

export const is2xx = (e: ClassifiedExchange) => e.status !== null && e.status >= 200 && e.status < 300;
export const isFailure = (e: ClassifiedExchange) => e.status !== null && e.status >= 400;
export const isRedirect = (e: ClassifiedExchange) => [301, 302, 303, 307, 308].includes(e.status ?? 0);
export const isAuthenticated = (e: ClassifiedExchange) => reqHeader(e, "authorization") !== undefined;
export function isHtml(e: ClassifiedExchange): boolean {
  const type = e.facts.responseContentType ?? "";
  return /text\/html/i.test(type) || /^\s*<(!doctype|html)/i.test(bodyText(e.responseBody));
}

/** Comma-separated header tokens, lower-cased. */
export function tokens(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

/** `url` (resolved against `base` when given) as a URL, or undefined: a traffic value never throws. */
export function parseUrl(url: string, base?: string): URL | undefined {
  try {
    return new URL(url, base);
  } catch {
    return undefined;
  }
}

/** The path of a URL without its trailing slash: "" for an origin. */
export const pathOf = (url: string) => trimSlash(parseUrl(url)?.pathname ?? "");
export const trimSlash = (path: string) => path.replace(/\/+$/, "");

/** Authorization-code token requests (and those that name no grant). */
export function codeGrants(ctx: DiagnosisContext): ClassifiedExchange[] {
  return ctx.of("token").filter((e) => e.facts.grantType !== "refresh_token");
}

// ---------------------------------------------------------------------------------------------
// The two eras (2026-07-28): what a modern request and its answer show

export { HEADER_MISMATCH_ERROR, METHOD_NOT_FOUND_ERROR, MISSING_CAPABILITY_ERROR, UNSUPPORTED_VERSION_ERROR };
const MODERN_ERRORS = new Set([HEADER_MISMATCH_ERROR, MISSING_CAPABILITY_ERROR, UNSUPPORTED_VERSION_ERROR]);

/** What a legacy server says when a request comes without the session or version it expects. */
const LEGACY_REFUSAL = /session|not initiali[sz]ed|protocol.?version/i;

export const isModernRequest = (e: ClassifiedExchange) => e.facts.mcp?.era === "modern";
export const isLegacyRequest = (e: ClassifiedExchange) => e.facts.mcp?.era === "legacy";

/** JSON-RPC error codes the server answered with. */
export const rpcErrorCodes = (e: ClassifiedExchange): number[] =>
  (e.facts.mcp?.messages ?? []).flatMap((m) => (m.direction === "response" && m.errorCode !== undefined ? [m.errorCode] : []));

/** The protocol version a request speaks: `_meta`, initialize's protocolVersion, else MCP-Protocol-Version. */
export const versionOf = (e: ClassifiedExchange): string | undefined =>
  e.facts.mcp?.metaProtocolVersion ?? e.facts.mcp?.protocolVersionRequested ?? e.facts.mcp?.protocolVersionHeader;

/** An MCP answer that did what was asked: 2xx, no JSON-RPC error, no HTML page. */
export function answeredOk(e: ClassifiedExchange): boolean {
  const errors = (e.facts.mcp?.messages ?? []).some((m) => m.direction === "response" && m.type === "error");
  return is2xx(e) && !errors && !isHtml(e);
}

/** 404 with -32601 to a modern request: the server lacks that method (server/discover excepted: a modern server must have it). */
export function isModernMethodNotFound(e: ClassifiedExchange): boolean {
  return (
    isModernRequest(e) &&
    e.status === 404 &&
    rpcErrorCodes(e).includes(METHOD_NOT_FOUND_ERROR) &&
    !methods(e).includes("server/discover")
  );
}

/** The answer is one of the modern era's errors (-32020/-32021/-32022, or 404 with -32601): only a modern server sends these. */
export function hasModernError(e: ClassifiedExchange): boolean {
  return rpcErrorCodes(e).some((c) => MODERN_ERRORS.has(c)) || isModernMethodNotFound(e);
}

/**
 * A modern request rejected for its headers: -32020 HeaderMismatch, or a 400 to a request whose
 * Mcp-Method / Mcp-Name / MCP-Protocol-Version disagree with its body when the answer is no legacy
 * server's session or version refusal.
 */
export function isHeaderMismatchAnswer(e: ClassifiedExchange): boolean {
  if (!MCP_KINDS.includes(e.kind)) return false;
  if (rpcErrorCodes(e).includes(HEADER_MISMATCH_ERROR)) return true;
  return (
    e.status === 400 &&
    isModernRequest(e) &&
    e.facts.mcp?.headerMismatch !== undefined &&
    !hasModernError(e) &&
    !LEGACY_REFUSAL.test(errorText(e))
  );
}

/**
 * A modern request answered as only a legacy (≤ 2025-11-25) server answers it: 400/404/405 without
 * a modern error body (e.g. 400 "Server not initialized", "No valid session ID", "Unsupported
 * protocol version"), or -32601 to server/discover. Either era_mismatch (the client stops there) or
 * a dual-era client's healthy fallback to initialize: never a session, version or routing problem.
 */
export function isLegacyAnswerToModern(e: ClassifiedExchange): boolean {
  if (!MCP_KINDS.includes(e.kind) || !isModernRequest(e) || e.upstreamError !== null) return false;
  if (methods(e).includes("server/discover") && rpcErrorCodes(e).includes(METHOD_NOT_FOUND_ERROR)) return true;
  if (hasModernError(e) || isHeaderMismatchAnswer(e)) return false;
  if (wafMarker(e) !== undefined || isHostRejection(e) || isOriginRejection(e) || isAcceptRejection(e)) return false;
  return e.status === 400 || e.status === 404 || e.status === 405;
}

/**
 * A legacy initialize refused by a server that speaks only the modern era: 4xx with a -32022 (or an
 * error text) whose supported versions are all 2026-07-28 or later; -32022 without a list, or 404 with
 * -32601 (no initialize method), which only a modern server sends.
 */
export function isModernOnlyRefusal(e: ClassifiedExchange): boolean {
  if (!MCP_KINDS.includes(e.kind) || !methods(e).includes("initialize") || isModernRequest(e)) return false;
  if (e.status === null || e.status < 400 || e.status >= 500) return false;
  const supported = serverVersions(e);
  if (supported.length > 0) return supported.every((v) => v >= MODERN_PROTOCOL_VERSION);
  const codes = rpcErrorCodes(e);
  return codes.includes(UNSUPPORTED_VERSION_ERROR) || (e.status === 404 && codes.includes(METHOD_NOT_FOUND_ERROR));
}

/** The versions the server said it supports: server/discover's or -32022's list, else the dates its error text lists as supported. */
export function serverVersions(e: ClassifiedExchange): string[] {
  const listed = e.facts.mcp?.supportedVersions;
  if (listed && listed.length > 0) return listed;
  const said = /\bsupported\b[^0-9]{0,40}((?:\d{4}-\d{2}-\d{2}[^0-9a-z]{0,6})+)/i.exec(errorText(e));
  return said ? (said[1]!.match(/\d{4}-\d{2}-\d{2}/g) ?? []) : [];
}
