// A handshake's exchanges as HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/) or as curl
// commands. Both are redacted as stored: a secret appears only as its [redacted:xxxxxxxx] marker.
import { STATUS_CODES } from "node:http";
import type { ClassifiedExchange, HeaderPairs, RecordedBody } from "../proxy/exchange.js";
import { REDACTED_PATTERN } from "../proxy/redact.js";
import { VERSION } from "../proxy/version.js";
import type { HandshakeDetail } from "./data.js";
import { iso, plural } from "./format.js";

interface HarNameValue {
  name: string;
  value: string;
}

interface HarContent {
  size: number;
  mimeType: string;
  text?: string;
  encoding?: "base64";
  comment?: string;
}

export interface HarEntry {
  pageref: string;
  startedDateTime: string;
  time: number;
  request: {
    method: string;
    url: string;
    httpVersion: string;
    cookies: HarNameValue[];
    headers: HarNameValue[];
    queryString: HarNameValue[];
    postData?: HarContent;
    headersSize: -1;
    bodySize: number;
  };
  response: {
    status: number;
    statusText: string;
    httpVersion: string;
    cookies: HarNameValue[];
    headers: HarNameValue[];
    content: HarContent;
    redirectURL: string;
    headersSize: -1;
    bodySize: number;
    comment?: string;
  };
  cache: Record<string, never>;
  timings: { send: number; wait: number; receive: number };
  comment: string;
  /** Custom fields (HAR allows names starting with "_"). */
  _exchangeId: number;
  _kind: string;
}

export interface Har {
  log: {
    version: "1.2";
    creator: { name: string; version: string };
    pages: Array<{ startedDateTime: string; id: string; title: string; pageTimings: Record<string, never> }>;
    entries: HarEntry[];
    comment: string;
  };
}

const header = (headers: HeaderPairs | null, name: string) => headers?.find(([n]) => n.toLowerCase() === name)?.[1];

/** The URL the client asked for: scheme from X-Forwarded-Proto (a TLS front), else http. */
function urlOf(e: ClassifiedExchange): string {
  const scheme = header(e.requestHeaders, "x-forwarded-proto")?.split(",")[0]?.trim() || "http";
  const host = e.host ?? header(e.requestHeaders, "host") ?? "localhost";
  return `${scheme}://${host}${e.path}${e.query !== null ? `?${e.query}` : ""}`;
}

function truncationNote(body: RecordedBody): string | undefined {
  return body.truncated ? `body recorded up to ${body.text === null ? 0 : Buffer.byteLength(body.text, body.encoding)} of ${body.size} bytes` : undefined;
}

function contentOf(body: RecordedBody, mimeType: string | undefined): HarContent {
  const comment = truncationNote(body);
  return {
    size: body.size,
    mimeType: mimeType ?? "",
    ...(body.text !== null ? { text: body.text } : {}),
    ...(body.encoding === "base64" && body.text !== null ? { encoding: "base64" as const } : {}),
    ...(comment ? { comment } : {}),
  };
}

const nameValues = (headers: HeaderPairs | null): HarNameValue[] => (headers ?? []).map(([name, value]) => ({ name, value }));

function harEntry(e: ClassifiedExchange, pageref: string): HarEntry {
  // HAR wants send, wait and receive as non-negative numbers; mcp-lens measures headers and end.
  const wait = Math.max(0, e.ttfbMs ?? e.durationMs ?? 0);
  const receive = Math.max(0, (e.durationMs ?? wait) - wait);
  const query = e.query === null ? [] : [...new URLSearchParams(e.query)].map(([name, value]) => ({ name, value }));
  const status = e.status ?? 0;
  const problems = [e.upstreamError && `upstream error: ${e.upstreamError}`, e.aborted && "the client went away first"].filter(Boolean);
  return {
    pageref,
    startedDateTime: iso(e.startedAt),
    time: wait + receive,
    request: {
      method: e.method,
      url: urlOf(e),
      httpVersion: "HTTP/1.1",
      cookies: [],
      headers: nameValues(e.requestHeaders),
      queryString: query,
      ...(e.requestBody.size > 0 ? { postData: contentOf(e.requestBody, header(e.requestHeaders, "content-type")) } : {}),
      headersSize: -1,
      bodySize: e.requestBody.size,
    },
    response: {
      status,
      statusText: STATUS_CODES[status] ?? "",
      httpVersion: "HTTP/1.1",
      cookies: [],
      headers: nameValues(e.responseHeaders),
      content: contentOf(e.responseBody, header(e.responseHeaders, "content-type")),
      redirectURL: header(e.responseHeaders, "location") ?? "",
      headersSize: -1,
      bodySize: e.responseBody.size,
      ...(problems.length ? { comment: problems.join("; ") } : {}),
    },
    cache: {},
    timings: { send: 0, wait, receive },
    comment: `mcp-lens exchange #${e.id}: ${e.kind}`,
    _exchangeId: e.id,
    _kind: e.kind,
  };
}

export function toHar({ handshake: h, exchanges }: HandshakeDetail): Har {
  const pageref = `handshake-${h.id}`;
  return {
    log: {
      version: "1.2",
      creator: { name: "mcp-lens inspector", version: VERSION },
      pages: [{ startedDateTime: iso(h.startedAt), id: pageref, title: `handshake #${h.id} (${h.clientFamily}): ${h.outcome}`, pageTimings: {} }],
      entries: exchanges.map((e) => harEntry(e, pageref)),
      comment: "Recorded by mcp-lens, redacted: [redacted:xxxxxxxx] stands for a secret that was never stored.",
    },
  };
}

// ---------------------------------------------------------------------------------------------
// curl

/** POSIX shell single quotes. */
export const shellQuote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;

/** Set by curl itself from the URL and the body, or meaningless on a new connection. */
const CURL_SETS = new Set(["host", "content-length", "connection", "transfer-encoding", "keep-alive", "accept-encoding"]);

/** One exchange as a curl command, with comments saying what to replace. */
export function curlCommand(e: ClassifiedExchange): string {
  const body = e.requestBody;
  const headers = e.requestHeaders.filter(([name]) => !CURL_SETS.has(name.toLowerCase()));
  const method = e.method === "HEAD" ? ["--head"] : e.method === "GET" || (e.method === "POST" && body.text !== null) ? [] : ["-X", e.method];
  const args = [
    ["curl", ...method, shellQuote(urlOf(e))].join(" "),
    ...(header(e.requestHeaders, "accept-encoding") ? ["--compressed"] : []),
    ...headers.map(([name, value]) => `-H ${shellQuote(`${name}: ${value}`)}`),
    ...(body.text === null ? [] : body.encoding === "base64" ? ["--data-binary @-"] : [`--data-binary ${shellQuote(body.text)}`]),
  ];
  const command = args.join(" \\\n  ");
  const comments = [
    `# #${e.id} ${e.kind}: ${e.method} ${e.path} → ${e.status ?? e.upstreamError ?? "no response"}`,
    ...(new RegExp(REDACTED_PATTERN.source).test(command) ? ["# replace each [redacted:xxxxxxxx] marker with the real value before running: mcp-lens never stored it"] : []),
    ...(body.truncated ? [`# the request ${truncationNote(body)}: this sends only that part`] : []),
  ];
  const piped = body.text !== null && body.encoding === "base64" ? `printf %s ${shellQuote(body.text)} | base64 -d | ${command}` : command;
  return `${comments.join("\n")}\n${piped}\n`;
}

/** One curl command per exchange, in id order. */
export function toCurl({ handshake: h, exchanges }: HandshakeDetail): string {
  const head = `# mcp-lens handshake #${h.id} (${h.clientFamily}), ${h.outcome}${h.failedStep ? ` at ${h.failedStep}` : ""}: ${plural(exchanges.length, "exchange")}\n`;
  return [head, ...exchanges.map(curlCommand)].join("\n");
}
