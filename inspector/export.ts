// A handshake's exchanges as HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/) or as curl
// commands. Both are redacted as stored: a secret appears only as its [redacted:xxxxxxxx] marker.
// The URL is the one the proxy actually forwarded to (its recorded upstream, without userinfo, and
// the recorded path and query), never built from Host or X-Forwarded-*: a client chooses those.
// What a client claimed (the X-Forwarded-* and the like mcp-lens replaced) is shown as its claim:
// a custom HAR field, a `#` comment in curl. Every string from traffic is hostile: the curl text
// is shell-safe (single quotes, or $'…' with escapes when it holds a control character) and no raw
// control character reaches the terminal from either format.
import { STATUS_CODES } from "node:http";
import type { ClassifiedExchange, HeaderPairs, RecordedBody } from "../analysis/exchange.js";
import { REDACTED_PATTERN } from "../analysis/redacted.js";
import { VERSION } from "../common/version.js";
import type { HandshakeDetail } from "./data.js";
import { iso, plural } from "./format.js";
import { terminalSafe } from "../common/terminal-safe.js";

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
  /** What the client sent that mcp-lens replaced or removed before forwarding: its claim, not a fact. */
  _clientClaimed?: { host: string | null; headers: HarNameValue[] };
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

/** Where no upstream was recorded (a database from elsewhere): a name that resolves nowhere. */
const UNKNOWN_UPSTREAM = "http://upstream.invalid";

/** The URL the proxy forwarded to: the upstream's origin and base path (as http-proxy joins them), the recorded path and query. */
function urlOf(e: ClassifiedExchange, upstream: string | undefined): string {
  let base: URL;
  try {
    base = new URL(upstream || UNKNOWN_UPSTREAM);
  } catch {
    base = new URL(UNKNOWN_UPSTREAM);
  }
  const prefix = base.pathname.replace(/\/$/, "");
  return `${base.origin}${prefix}${e.path}${e.query !== null ? `?${e.query}` : ""}`;
}

const claimedOf = (e: ClassifiedExchange) => (e.claimedHeaders?.length ? e.claimedHeaders : undefined);

/** See RecordedBody.encoding: the recorder keeps no bytes it could not redact. */
const OMITTED_NOTE = "body not recorded: not text, or in a content encoding mcp-lens cannot decode";

function truncationNote(body: RecordedBody): string | undefined {
  return body.truncated ? `body recorded up to ${body.text === null ? 0 : Buffer.byteLength(body.text, body.encoding === "base64" ? "base64" : "utf8")} of ${body.size} bytes` : undefined;
}

function contentOf(body: RecordedBody, mimeType: string | undefined): HarContent {
  const comment = body.encoding === "omitted" ? OMITTED_NOTE : truncationNote(body);
  return {
    size: body.size,
    mimeType: mimeType ?? "",
    ...(body.text !== null ? { text: body.text } : {}),
    ...(body.encoding === "base64" && body.text !== null ? { encoding: "base64" as const } : {}),
    ...(comment ? { comment } : {}),
  };
}

const nameValues = (headers: HeaderPairs | null): HarNameValue[] => (headers ?? []).map(([name, value]) => ({ name, value }));

function harEntry(e: ClassifiedExchange, pageref: string, upstream: string | undefined): HarEntry {
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
      url: urlOf(e, upstream),
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
    ...(claimedOf(e) ? { _clientClaimed: { host: e.host, headers: nameValues(claimedOf(e)!) } } : {}),
  };
}

/** `upstream`: the proxy's recorded upstream (meta `upstream`), where every request was forwarded. */
export function toHar({ handshake: h, exchanges }: HandshakeDetail, upstream?: string): Har {
  const pageref = `handshake-${h.id}`;
  return {
    log: {
      version: "1.2",
      creator: { name: "mcp-lens inspector", version: VERSION },
      pages: [{ startedDateTime: iso(h.startedAt), id: pageref, title: `handshake #${h.id} (${h.clientFamily}): ${h.outcome}`, pageTimings: {} }],
      entries: exchanges.map((e) => harEntry(e, pageref, upstream)),
      comment:
        "Recorded by mcp-lens, redacted: [redacted:xxxxxxxx] stands for a secret that was never stored. " +
        "URLs are where the proxy forwarded; _clientClaimed holds what a client claimed (X-Forwarded-* and the like) that the proxy replaced.",
    },
  };
}

// ---------------------------------------------------------------------------------------------
// curl

/** Characters that must not reach a terminal raw, nor sit raw in a shell word. */
const UNSAFE_IN_SHELL = /[\p{Cc}\p{Cf}\u2028\u2029]/u;

/**
 * One shell word: POSIX single quotes (nothing inside is special but the quote itself); when the
 * text holds a control or format character, bash's $'…' with every such character, the backslash
 * and the quote escaped, so the command carries the exact text and prints no raw control byte.
 */
export function shellQuote(text: string): string {
  if (!UNSAFE_IN_SHELL.test(text)) return `'${text.replace(/'/g, `'\\''`)}'`;
  let out = "";
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (char === "\\" || char === "'") out += `\\${char}`;
    else if (!UNSAFE_IN_SHELL.test(char)) out += char;
    else if (code < 0x80) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else if (code <= 0xffff) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else out += `\\U${code.toString(16).padStart(8, "0")}`;
  }
  return `$'${out}'`;
}

/** Set by curl itself from the URL and the body, or meaningless on a new connection. */
const CURL_SETS = new Set(["host", "content-length", "connection", "transfer-encoding", "keep-alive", "accept-encoding"]);

/** One exchange as a curl command, with comments saying what to replace. */
export function curlCommand(e: ClassifiedExchange, upstream?: string): string {
  const body = e.requestBody;
  const headers = e.requestHeaders.filter(([name]) => !CURL_SETS.has(name.toLowerCase()));
  const method = e.method === "HEAD" ? ["--head"] : e.method === "GET" || (e.method === "POST" && body.text !== null) ? [] : ["-X", e.method];
  const args = [
    ["curl", ...method, shellQuote(urlOf(e, upstream))].join(" "),
    ...(header(e.requestHeaders, "accept-encoding") ? ["--compressed"] : []),
    ...headers.map(([name, value]) => `-H ${shellQuote(`${name}: ${value}`)}`),
    ...(body.text === null ? [] : body.encoding === "base64" ? ["--data-binary @-"] : [`--data-binary ${shellQuote(body.text)}`]),
  ];
  const command = args.join(" \\\n  ");
  const claimed = claimedOf(e);
  const comments = [
    terminalSafe(`# #${e.id} ${e.kind}: ${e.method} ${e.path} → ${e.status ?? e.upstreamError ?? "no response"}`),
    // One line each, every control escaped: a comment that a line break could end would run the rest.
    ...(claimed ? [terminalSafe(`# the client claimed (replaced by the proxy, not sent here): ${claimed.map(([n, v]) => `${n}: ${v}`).join("; ")}`)] : []),
    ...(new RegExp(REDACTED_PATTERN.source).test(command) ? ["# replace each [redacted:xxxxxxxx] marker with the real value before running: mcp-lens never stored it"] : []),
    ...(body.truncated ? [`# the request ${truncationNote(body)}: this sends only that part`] : []),
  ];
  const piped = body.text !== null && body.encoding === "base64" ? `printf %s ${shellQuote(body.text)} | base64 -d | ${command}` : command;
  return `${comments.join("\n")}\n${piped}\n`;
}

/** One curl command per exchange, in the order they started. */
export function toCurl({ handshake: h, exchanges }: HandshakeDetail, upstream?: string): string {
  const head = `${terminalSafe(`# mcp-lens handshake #${h.id} (${h.clientFamily}), ${h.outcome}${h.failedStep ? ` at ${h.failedStep}` : ""}: ${plural(exchanges.length, "exchange")}`)}\n`;
  return [head, ...exchanges.map((e) => curlCommand(e, upstream))].join("\n");
}
