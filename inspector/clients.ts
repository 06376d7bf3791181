// The clients a re-run can play when a recording lacks their details: what each sends, from its
// traffic, and the registration (RFC 7591) it posts. And the wire format of the two eras' MCP
// requests (shared/reference/connector-handshake.md): a legacy client's initialize, and a modern
// (2026-07-28) client's self-contained requests with their `_meta` and request metadata headers,
// built with the v2 SDK's names for them.
import {
  CLIENT_CAPABILITIES_META_KEY,
  CLIENT_INFO_META_KEY,
  isSpecType,
  METHOD_NOT_FOUND,
  PROTOCOL_VERSION_META_KEY,
  ProtocolErrorCode,
} from "@modelcontextprotocol/client";
import { MODERN_PROTOCOL_VERSION } from "../analysis/exchange.js";
import { HEADER_MISMATCH_ERROR } from "../analysis/mcp-facts.js";

export { MODERN_PROTOCOL_VERSION };

/** A DCR payload: its first redirect URI is the callback. */
export type Registration = { redirect_uris: string[] } & Record<string, unknown>;

/** What the known clients send, from their traffic; the replay's fallback when a recording lacks it. */
export const KNOWN_CLIENTS = {
  "claude.ai": {
    userAgent: "python-httpx/0.28.1",
    clientInfo: { name: "Anthropic", version: "1.0.0" },
    clientName: "Claude",
    authMethod: "client_secret_post",
    redirectUri: "https://claude.ai/api/mcp/auth_callback",
  },
  chatgpt: {
    userAgent: "openai-mcp/1.0.0",
    clientInfo: { name: "openai-mcp", version: "1.0.0" },
    clientName: "ChatGPT",
    authMethod: "none",
    redirectUri: "https://chatgpt.com/connector_platform_oauth_redirect",
  },
  "claude-code": {
    userAgent: "claude-code/2.0",
    clientInfo: { name: "claude-code", version: "2.0.0" },
    clientName: "Claude Code",
    authMethod: "none",
    redirectUri: "http://localhost:33418/callback",
  },
} as const;
export type KnownClient = keyof typeof KNOWN_CLIENTS;

/** The user's browser, for the authorize step. */
export const BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/** The latest legacy (initialize-based) revision: what a legacy client, or a dual-era one falling back, asks for. */
export const LATEST_PROTOCOL_VERSION = "2025-11-25";
export const MCP_ACCEPT = "application/json, text/event-stream";

/** The DCR payload a client registers with (RFC 7591); its first redirect URI is the callback. */
export function registrationPayload(clientName: string, redirectUri: string, authMethod: string): Registration {
  return {
    client_name: clientName,
    redirect_uris: [redirectUri],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: authMethod,
  };
}

// ---------------------------------------------------------------------------------------------
// The eras

/**
 * Which client a run plays: a legacy client (initialize, notifications/initialized, a session), a
 * modern-only one (2026-07-28: stateless requests carrying `_meta`, no initialize, no session, no
 * GET stream), or a dual-era one (a modern request first; on a 4xx without a recognized modern
 * error body, initialize and the legacy flow — Streamable HTTP §Backward Compatibility).
 */
export const CLIENT_ERAS = ["modern", "legacy", "dual"] as const;
export type ClientEra = (typeof CLIENT_ERAS)[number];

/** What a modern client puts in every request's `_meta` (2026-07-28 §Request Metadata). */
export interface ModernClient {
  protocolVersion: string;
  clientInfo: { name: string; version: string } & Record<string, unknown>;
  clientCapabilities: Record<string, unknown>;
}

export interface JsonRpcRequest {
  jsonrpc: "2.0";
  id: number | string;
  method: string;
  params: Record<string, unknown>;
}

/** A 2026-07-28 request: `params._meta` carries the protocol version, the client's info and its capabilities. */
export function modernRequest(id: number | string, method: string, params: Record<string, unknown>, client: ModernClient): JsonRpcRequest {
  const meta = typeof params._meta === "object" && params._meta !== null ? (params._meta as Record<string, unknown>) : {};
  return {
    jsonrpc: "2.0",
    id,
    method,
    params: {
      ...params,
      _meta: {
        ...meta,
        [PROTOCOL_VERSION_META_KEY]: client.protocolVersion,
        [CLIENT_INFO_META_KEY]: client.clientInfo,
        [CLIENT_CAPABILITIES_META_KEY]: client.clientCapabilities,
      },
    },
  };
}

/** The body field the Mcp-Name header mirrors, per method (Streamable HTTP §Standard Request Headers). */
const MCP_NAME_SOURCE: Record<string, string> = { "tools/call": "name", "prompts/get": "name", "resources/read": "uri" };

/**
 * The request metadata headers of a 2026-07-28 POST, from its body: MCP-Protocol-Version (the
 * `_meta` version), Mcp-Method, and Mcp-Name for tools/call, prompts/get and resources/read.
 */
export function modernHeaders(message: JsonRpcRequest): Record<string, string> {
  const meta = message.params._meta as Record<string, unknown> | undefined;
  const headers: Record<string, string> = {
    "mcp-protocol-version": String(meta?.[PROTOCOL_VERSION_META_KEY] ?? ""),
    "mcp-method": message.method,
  };
  const field = MCP_NAME_SOURCE[message.method];
  const name = field === undefined ? undefined : message.params[field];
  if (typeof name === "string") headers["mcp-name"] = encodeHeaderValue(name);
  return headers;
}

const SENTINEL = /^=\?base64\?.*\?=$/s;

/**
 * A value for Mcp-Name or Mcp-Param-*: as is when it is plain visible ASCII (and tab) without
 * leading or trailing whitespace, else `=?base64?…?=` of its UTF-8 (§Value Encoding), as is any
 * value that looks like the sentinel itself.
 */
export function encodeHeaderValue(value: string): string {
  const plain = value.length > 0 && value === value.trim() && /^[\t\x20-\x7e]*$/.test(value) && !SENTINEL.test(value);
  return plain ? value : `=?base64?${Buffer.from(value, "utf8").toString("base64")}?=`;
}

/**
 * The Mcp-Param-{Name} headers of a tools/call (§Custom Headers from Tool Parameters): for each
 * top-level property of the tool's inputSchema marked `x-mcp-header`, the argument's value when it
 * is a string, an integer or a boolean. Invalid annotations are skipped (the call goes without).
 */
export function mcpParamHeaders(inputSchema: unknown, args: Record<string, unknown>): Record<string, string> {
  const properties = typeof inputSchema === "object" && inputSchema !== null ? (inputSchema as { properties?: unknown }).properties : undefined;
  if (typeof properties !== "object" || properties === null) return {};
  const headers: Record<string, string> = {};
  for (const [key, schema] of Object.entries(properties as Record<string, unknown>)) {
    const name = typeof schema === "object" && schema !== null ? (schema as Record<string, unknown>)["x-mcp-header"] : undefined;
    if (typeof name !== "string" || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/.test(name)) continue;
    const value = args[key];
    const text =
      typeof value === "string" ? value : typeof value === "boolean" ? String(value) : typeof value === "number" && Number.isSafeInteger(value) ? String(value) : undefined;
    if (text !== undefined) headers[`mcp-param-${name.toLowerCase()}`] = encodeHeaderValue(text);
  }
  return headers;
}

/** The JSON-RPC errors only a modern server answers: HeaderMismatch (the v2 SDK does not export it), MissingRequiredClientCapability, UnsupportedProtocolVersion. */
export const MODERN_ERROR_CODES: ReadonlySet<number> = new Set([
  HEADER_MISMATCH_ERROR,
  ProtocolErrorCode.MissingRequiredClientCapability,
  ProtocolErrorCode.UnsupportedProtocolVersion,
]);

export const isModernVersion = (version: string) => /^\d{4}-\d{2}-\d{2}$/.test(version) && version >= MODERN_PROTOCOL_VERSION;

/** How a modern request was answered, as a dual-era client tells the server's era. */
export type ModernAnswer =
  | { kind: "ok" } // a usable modern answer
  | { kind: "challenge" } // 401: authorization first, the same in both eras
  | { kind: "modern_error"; detail: string } // a recognized modern error: the server is modern, the request was wrong
  | { kind: "not_modern"; detail: string } // the server does not speak the modern era: a dual-era client falls back
  | { kind: "failed"; detail: string }; // neither (5xx, a redirect, an unusable body): no fallback

interface Answer {
  status: number;
  text: string;
  message?: { result?: Record<string, unknown>; error?: { code: number; message: string; data?: unknown } };
}

/**
 * Judges the answer to a modern request (Streamable HTTP §Backward Compatibility, Versioning
 * §Compatibility Matrix): a recognized modern JSON-RPC error (-32020, -32021, -32022, or a 404
 * with -32601 for a method the server does not implement) means a modern server; a 4xx without
 * one, or a JSON-RPC error no modern server sends, or a server/discover answer that is no
 * DiscoverResult, means a legacy server; 401 is the authorization challenge of either era. An
 * UnsupportedProtocolVersion listing no modern version sends a dual-era client to initialize too,
 * as the v2 SDK's does: "retry with a supported version" is the fallback then.
 */
export function judgeModernAnswer(method: string, protocolVersion: string, answer: Answer): ModernAnswer {
  const { status, message } = answer;
  // A JSON-RPC error is an object; an OAuth error body ({"error":"server_error"}) is not one.
  const error = typeof message?.error === "object" && message.error !== null && !Array.isArray(message.error) ? message.error : undefined;
  const said = `${status}${error ? ` ${error.code} ${error.message}` : answer.text ? ` ${answer.text}` : ""}`.slice(0, 200);
  if (status === 401) return { kind: "challenge" };
  if (error && typeof error.code === "number" && MODERN_ERROR_CODES.has(error.code)) {
    if (error.code === ProtocolErrorCode.UnsupportedProtocolVersion) {
      const supported = (error.data as { supported?: unknown } | undefined)?.supported;
      const versions = Array.isArray(supported) ? supported.filter((v): v is string => typeof v === "string") : [];
      if (versions.length > 0 && !versions.some(isModernVersion)) {
        return { kind: "not_modern", detail: `${method} answered ${said}: the server supports only ${versions.join(", ")}` };
      }
      return { kind: "modern_error", detail: `${method} answered ${said}: the server does not support ${protocolVersion}${versions.length ? ` (it supports ${versions.join(", ")})` : ""}` };
    }
    return { kind: "modern_error", detail: `${method} answered ${said}` };
  }
  // A modern server's answer to a method it does not implement; a legacy HTTP+SSE server's 404 has no such body.
  if (status === 404 && error?.code === METHOD_NOT_FOUND) return { kind: "modern_error", detail: `${method} answered ${said}: the server speaks 2026-07-28 but does not implement ${method}` };
  if (status >= 400 && status < 500) return { kind: "not_modern", detail: `${method} answered ${said}, no modern error` };
  if (status < 200 || status > 299) return { kind: "failed", detail: `${method} answered ${said}` };
  if (error) return { kind: "not_modern", detail: `${method} answered ${said}, no modern error` };
  const result = message?.result;
  if (!result) return { kind: "failed", detail: `${method} answered ${said} without a JSON-RPC result` };
  if (method === "server/discover") {
    if (!isSpecType.DiscoverResult(result)) return { kind: "not_modern", detail: `server/discover answered ${status} without a DiscoverResult` };
    const versions = Array.isArray(result.supportedVersions) ? (result.supportedVersions as unknown[]).filter((v): v is string => typeof v === "string") : [];
    if (!versions.includes(protocolVersion)) {
      const detail = `server/discover lists ${versions.join(", ") || "no version"}, not ${protocolVersion}`;
      return versions.some(isModernVersion) ? { kind: "modern_error", detail } : { kind: "not_modern", detail };
    }
  }
  return { kind: "ok" };
}
