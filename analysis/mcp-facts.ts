// The MCP facts of an exchange: its JSON-RPC messages (request and answer, SSE included), methods,
// ids, errors, versions, clientInfo and serverInfo, tool names; and the tools a server lists.

import {
  JSONRPCErrorResponseSchema,
  JSONRPCNotificationSchema,
  JSONRPCRequestSchema,
  JSONRPCResultResponseSchema,
} from "@modelcontextprotocol/sdk/types.js";
import {
  asList,
  bodyText,
  compact,
  defined,
  errorMessage,
  header,
  isJsonRpcShaped,
  isRecord,
  str,
  strings,
  view,
  type View,
} from "./exchange-view.js";
import { type Era, type JsonRpcMessageFact, type McpFacts, MODERN_PROTOCOL_VERSION, type RecordedExchange } from "./exchange.js";

/** The request metadata keys of 2026-07-28 (`params._meta`), and the server's in results. */
export const META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion";
export const META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo";
export const META_SERVER_INFO = "io.modelcontextprotocol/serverInfo";
export const META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities";

/** Methods only the modern era has. */
const MODERN_METHODS = new Set(["server/discover", "subscriptions/listen"]);
/** Methods only the legacy era has. */
const LEGACY_METHODS = new Set(["initialize", "notifications/initialized"]);
/** The requests whose Mcp-Name header names params.name (tools, prompts) or params.uri (resources). */
const NAMED_METHODS: Record<string, "name" | "uri"> = { "tools/call": "name", "prompts/get": "name", "resources/read": "uri" };

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

export function mcpFacts(v: View): McpFacts {
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
  const answers = received.filter(isRecord);
  const initResponse = initialize && answers.find((m) => "result" in m && m.id === initialize.id);
  const initResult = isRecord(initResponse?.result) ? initResponse.result : undefined;
  const toolNames = sentObjects.flatMap((m) => (m.method === "tools/call" ? toolName(m.params) : []));
  const first = sentObjects.find((m) => typeof m.method === "string");
  const meta = isRecord(first?.params) && isRecord(first.params._meta) ? first.params._meta : undefined;
  const metaProtocolVersion = str(meta?.[META_PROTOCOL_VERSION]);
  const protocolVersionHeader = header(v.e.requestHeaders, "mcp-protocol-version");
  const methodHeader = header(v.e.requestHeaders, "mcp-method");
  const nameHeader = header(v.e.requestHeaders, "mcp-name");
  const era = eraOf(str(first?.method), metaProtocolVersion, protocolVersionHeader, methodHeader, header(v.e.requestHeaders, "mcp-session-id"));
  const results = answers.flatMap((m) => (isRecord(m.result) ? [m.result] : []));
  const firstResult = results[0];
  const resultMeta = isRecord(firstResult?._meta) ? firstResult._meta : undefined;
  const versionError = answers
    .flatMap((m) => (isRecord(m.error) && m.error.code === UNSUPPORTED_VERSION_ERROR && isRecord(m.error.data) ? [m.error.data] : []))[0];
  const discovered = results.find((r) => Array.isArray(r.supportedVersions));
  return defined<McpFacts>({
    messages,
    methods: messages.flatMap((m) => (m.direction === "request" && m.method !== undefined ? [m.method] : [])),
    protocolVersionRequested: str(initParams?.protocolVersion),
    protocolVersionAnswered: str(initResult?.protocolVersion),
    protocolVersionHeader,
    sessionId: requestSessionId ?? sessionIdAssigned,
    sessionIdAssigned,
    clientInfo: implementation(initParams?.clientInfo) ?? implementation(meta?.[META_CLIENT_INFO]),
    serverInfo: implementation(initResult?.serverInfo) ?? implementation(resultMeta?.[META_SERVER_INFO]),
    toolNames: toolNames.length > 0 ? toolNames : undefined,
    sse: v.answeredSse || (v.responseJson !== undefined ? false : undefined),
    era,
    metaProtocolVersion,
    clientCapabilities: capabilityNames(initParams?.capabilities ?? meta?.[META_CLIENT_CAPABILITIES]),
    methodHeader,
    nameHeader,
    headerMismatch: era === "modern" && first ? headerMismatches(first, metaProtocolVersion, protocolVersionHeader, methodHeader, nameHeader) : undefined,
    resultType: str(firstResult?.resultType),
    supportedVersions: strings(discovered?.supportedVersions) ?? strings(versionError?.supported),
    versionRequestedByError: str(versionError?.requested),
  });
}

/** The modern server's errors (2026-07-28): HeaderMismatch, MissingRequiredClientCapability, UnsupportedProtocolVersion (with data.supported and data.requested). */
export const HEADER_MISMATCH_ERROR = -32020;
export const MISSING_CAPABILITY_ERROR = -32021;
export const UNSUPPORTED_VERSION_ERROR = -32022;
export const METHOD_NOT_FOUND_ERROR = -32601;

/** Which era a request speaks, from its first method, `_meta` and headers; undefined for an answer-only exchange. */
function eraOf(
  method: string | undefined,
  metaVersion: string | undefined,
  versionHeader: string | undefined,
  methodHeader: string | undefined,
  sessionId: string | undefined,
): Era | undefined {
  if (metaVersion !== undefined || (method !== undefined && MODERN_METHODS.has(method))) return "modern";
  if (method !== undefined && LEGACY_METHODS.has(method)) return "legacy";
  if (sessionId !== undefined) return "legacy";
  // Headers alone: a modern version with Mcp-Method (a body the capture cut short, say).
  if (methodHeader !== undefined && versionHeader !== undefined && versionHeader >= MODERN_PROTOCOL_VERSION) return "modern";
  return method === undefined ? undefined : "legacy";
}

/** 2026-07-28 Streamable HTTP §request metadata: the headers must be present and equal to the body. */
function headerMismatches(
  first: Record<string, unknown>,
  metaVersion: string | undefined,
  versionHeader: string | undefined,
  methodHeader: string | undefined,
  nameHeader: string | undefined,
): string[] | undefined {
  const found: string[] = [];
  const compare = (name: string, sent: string | undefined, body: string | undefined) => {
    if (body === undefined) return;
    if (sent === undefined) found.push(`${name} is missing (the body says ${body})`);
    else if (sent !== body) found.push(`${name}: ${sent} but the body says ${body}`);
  };
  const method = str(first.method);
  compare("Mcp-Method", methodHeader, method);
  compare("MCP-Protocol-Version", versionHeader, metaVersion);
  const named = method === undefined ? undefined : NAMED_METHODS[method];
  if (named) compare("Mcp-Name", nameHeader, isRecord(first.params) ? str(first.params[named]) : undefined);
  return found.length > 0 ? found : undefined;
}

/** The names of the capabilities an object declares (at most 32: a hostile body stays cheap). */
function capabilityNames(value: unknown): string[] | undefined {
  return isRecord(value) ? Object.keys(value).slice(0, 32) : undefined;
}


/** Envelope checked with the SDK's schema. Payload fields (initialize, tools/call) are read
 *  leniently instead: the proxy must report what a client sent even where the SDK would reject it. */
export function messageFact(direction: JsonRpcMessageFact["direction"], value: unknown): JsonRpcMessageFact {
  return envelopeFact(direction, value) ?? invalidFact(direction, value);
}

/**
 * The verdict of the SDK's JSONRPCMessageSchema, a union of four strict object schemas: a value can
 * only match the one its keys point to (method and id: a request; method alone: a notification;
 * result: a result; else an error), so only that one is parsed. Parsing an answer against the
 * union first failed it as a request and as a notification, a third of the classifier's garbage.
 */
function envelopeFact(direction: JsonRpcMessageFact["direction"], value: unknown): JsonRpcMessageFact | undefined {
  if (!isRecord(value)) return undefined;
  if ("method" in value) {
    if ("id" in value) {
      const request = JSONRPCRequestSchema.safeParse(value);
      return request.success ? { direction, type: "request", method: request.data.method, id: request.data.id } : undefined;
    }
    const notification = JSONRPCNotificationSchema.safeParse(value);
    return notification.success ? { direction, type: "notification", method: notification.data.method } : undefined;
  }
  if ("result" in value) {
    const result = JSONRPCResultResponseSchema.safeParse(value);
    return result.success ? { direction, type: "result", id: result.data.id } : undefined;
  }
  // JSON-RPC 2.0 answers unidentifiable requests with "id": null, which the SDK schema does not admit.
  const nullId = value.id === null;
  const error = JSONRPCErrorResponseSchema.safeParse(nullId ? { ...value, id: undefined } : value);
  if (!error.success) return undefined;
  return defined<JsonRpcMessageFact>({
    direction,
    type: "error",
    id: nullId ? null : error.data.id,
    errorCode: error.data.error.code,
    errorMessage: error.data.error.message,
  });
}

function invalidFact(direction: JsonRpcMessageFact["direction"], value: unknown): JsonRpcMessageFact {
  const raw = isRecord(value) ? value : {};
  const id = raw.id;
  return defined<JsonRpcMessageFact>({
    direction,
    type: "invalid",
    method: str(raw.method),
    id: typeof id === "string" || typeof id === "number" || id === null ? id : undefined,
  });
}

export function toolName(params: unknown): string[] {
  const name = isRecord(params) ? str(params.name) : undefined;
  return name === undefined ? [] : [name];
}

export function implementation(info: unknown): { name?: string; version?: string } | undefined {
  return isRecord(info) ? compact({ name: str(info.name), version: str(info.version) }) : undefined;
}

/** The JSON values of an SSE answer's message events (not e.g. the legacy `endpoint` event). */
export function sseMessages(v: View): unknown[] {
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

export interface SseEvent {
  type: string;
  data: string;
}

/** Per the SSE spec; when the capture was cut off, the unterminated last event is dropped. */
export function parseSse(text: string, truncated: boolean): SseEvent[] {
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

