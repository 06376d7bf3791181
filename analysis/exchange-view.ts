// One recorded exchange read once for classification: its key headers, its path, its bodies
// parsed (JSON, forms), so the kind and the facts are computed from the same view.

import { isHeaderName, type ExchangeKind, type HeaderPairs, type RecordedBody, type RecordedExchange, type WellKnownVariant } from "./exchange.js";

/** An exchange with its headers' key values read and its bodies parsed, each once. */
export interface View {
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

export const JSONRPC_TEXT = /"jsonrpc"\s*:/;

export function view(e: RecordedExchange): View {
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

export const WELL_KNOWN_KINDS: Record<string, ExchangeKind> = {
  "oauth-protected-resource": "protected_resource_metadata",
  "oauth-authorization-server": "authorization_server_metadata",
  "openid-configuration": "openid_configuration",
};

export const WELL_KNOWN_PATH =
  /^(.*?)\/\.well-known\/(oauth-protected-resource|oauth-authorization-server|openid-configuration)(\/.*)?$/;

/** Path-appended is only standard for OpenID; clients that append to the others are still recognised. */
export function parseWellKnown(path: string): View["wellKnown"] {
  const match = WELL_KNOWN_PATH.exec(path);
  const kind = match && WELL_KNOWN_KINDS[match[2]!];
  if (!match || !kind) return undefined;
  const variant: WellKnownVariant = match[1] ? "path_appended" : match[3] ? "path_inserted" : "root";
  return { kind, variant };
}

/** All values of a header (names compared case-insensitively), joined as HTTP list headers are. */
export function header(headers: HeaderPairs | null, lowerName: string): string | undefined {
  let value: string | undefined;
  for (const [name, v] of headers ?? []) {
    if (isHeaderName(name, lowerName)) value = value === undefined ? v : `${value}, ${v}`;
  }
  return value;
}

export function mediaType(contentType: string | undefined): string | undefined {
  return contentType?.split(";", 1)[0]!.trim().toLowerCase();
}

/** The body as text, unless empty or recorded as base64 (binary: never parsed). */
export function bodyText(body: RecordedBody): string | undefined {
  return body.encoding === "utf8" && body.text !== null && body.text !== "" ? body.text : undefined;
}

export const JSON_TYPE = /[/+]json$/;

export const JSON_START = /^\s*[[{]/;

/** Parses a body its content type calls JSON or that plainly looks like JSON; notes failures. */
export function parseJsonBody(side: string, body: RecordedBody, type: string | undefined, errors: string[]): unknown {
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
export function bodyParam(v: View, name: string): string | undefined {
  if (v.requestForm) return param(v.requestForm, name);
  return isRecord(v.requestJson) ? str(v.requestJson[name]) : undefined;
}

/** An OAuth parameter from the query, else the body (consent forms and token requests). */
export function oauthParam(v: View, name: string): string | undefined {
  return param(v.query, name) ?? bodyParam(v, name);
}

export function param(params: URLSearchParams | undefined, name: string): string | undefined {
  return params?.get(name) ?? undefined;
}

export function normalizePath(path: string): string {
  if (path === "") return "/";
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

export function isJsonRpcShaped(value: unknown): boolean {
  return isRecord(value) && "jsonrpc" in value;
}

export function asList(value: unknown): unknown[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function str(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

/** The strings of an array (others left out); undefined when it is no array. */
export function strings(value: unknown): string[] | undefined {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === "string") : undefined;
}

/** Drops undefined fields, so facts list only what the traffic showed. */
/** A copy without the undefined fields (a plain loop: this runs for every exchange). */
export function defined<T extends object>(record: T): T {
  const kept: Record<string, unknown> = {};
  for (const key in record) if (record[key] !== undefined) kept[key] = record[key];
  return kept as T;
}

/** Like `defined`, and undefined when nothing is left. */
export function compact<T extends object>(record: T): T | undefined {
  const kept = defined(record);
  return Object.keys(kept).length > 0 ? kept : undefined;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

