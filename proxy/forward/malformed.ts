// Requests Node's HTTP parser rejects (bad request line, oversized headers, bad
// Content-Length, broken chunking, headers that never finish) never reach the
// upstream. They are answered here with a clear reason, and recorded like any other
// exchange, so an operator can see a client (or a front proxy) sending garbage.
import http from "node:http";
import type { Socket } from "node:net";
import { headerPairs } from "../../analysis/exchange.js";
import { headerValue, type HeaderPairs, type RawExchange } from "../../analysis/exchange.js";

/** Parser errors worth an answer and a record; others (ECONNRESET on an idle socket) are a client leaving. */
export function isMalformedRequest(error: NodeJS.ErrnoException): boolean {
  return error.code?.startsWith("HPE_") === true || error.code === "ERR_HTTP_REQUEST_TIMEOUT";
}

export interface MalformedAnswer {
  status: number;
  reason: string;
  body: string;
}

/** The status Node itself would answer with, and a body that says why. */
export function malformedAnswer(error: NodeJS.ErrnoException, headersTimeoutMs: number, bodyTimeoutMs?: number): MalformedAnswer {
  const code = error.code ?? "unknown";
  if (code === "HPE_HEADER_OVERFLOW") {
    return answer(431, "Request Header Fields Too Large", code, `the request headers exceed ${http.maxHeaderSize} bytes`);
  }
  if (code === "ERR_HTTP_REQUEST_TIMEOUT" && bodyTimeoutMs !== undefined) {
    return answer(408, "Request Timeout", code, `the whole request did not arrive within ${bodyTimeoutMs} ms`);
  }
  if (code === "ERR_HTTP_REQUEST_TIMEOUT") {
    return answer(408, "Request Timeout", code, `the request headers did not arrive within ${headersTimeoutMs} ms`);
  }
  if (code === "HPE_INVALID_EOF_STATE") {
    return answer(400, "Bad Request", code, "the client closed the connection before its request was complete");
  }
  const detail = ((error as { reason?: string }).reason ?? error.message).replace(/^Parse Error: /, "");
  return answer(400, "Bad Request", code, `the request is not valid HTTP/1.1 (${detail})`);
}

function answer(status: number, reason: string, code: string, detail: string): MalformedAnswer {
  // "reason", not "code": a string under "code" is an OAuth code to the redactor.
  const body = JSON.stringify({ error: "malformed_request", reason: code, message: `mcp-lens: ${detail}` });
  return { status, reason, body };
}

/** The answer's headers, as recorded and sent. */
export function malformedAnswerHeaders(a: MalformedAnswer): HeaderPairs {
  return [
    ["content-type", "application/json"],
    ["content-length", String(Buffer.byteLength(a.body))],
    ["x-mcp-lens-error", "malformed_request"],
    ["connection", "close"],
  ];
}

/** Writes the answer and closes the connection: after a parse error its framing cannot be trusted. */
export function sendMalformedAnswer(socket: Socket, a: MalformedAnswer): HeaderPairs {
  const headers = malformedAnswerHeaders(a);
  if (!socket.writable) {
    socket.destroy();
    return headers;
  }
  const head = headers.map(([name, value]) => `${name}: ${value}\r\n`).join("");
  socket.write(`HTTP/1.1 ${a.status} ${a.reason}\r\n${head}\r\n${a.body}`);
  // Closed once written, even if the client never closes its side.
  socket.destroySoon();
  return headers;
}

const KNOWN_METHODS = new Set(http.METHODS);
// Request line and header lines of whatever part of the request arrived.
const REQUEST_LINE = /^([A-Z]+) (\S+) HTTP\/\d\.\d$/;
const HEADER_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*)$/;
const MAX_RECORDED_HEADERS = 100;
const MAX_HEADER_VALUE = 1024;

/**
 * What can be read off the bytes the parser saw: a known method and a path (anything else is
 * "-", so metric labels stay bounded) and the complete header lines, values cut at 1 KiB.
 * They go through redaction like every recorded request.
 */
export interface RequestHead {
  method: string;
  url: string;
  headers: HeaderPairs;
}

export function readRequestHead(rawPacket: Buffer | undefined): RequestHead {
  const text = (rawPacket ?? Buffer.alloc(0)).subarray(0, 64 * 1024).toString("latin1");
  const end = text.indexOf("\r\n\r\n");
  const lines = (end === -1 ? text : text.slice(0, end)).split("\r\n");
  // The last line may be cut mid-way: only lines followed by a line break are whole.
  if (end === -1) lines.pop();
  const requestLine = REQUEST_LINE.exec(lines[0] ?? "");
  const method = requestLine && KNOWN_METHODS.has(requestLine[1]!) ? requestLine[1]! : "-";
  const url = requestLine ? requestLine[2]! : "-";
  const raw: string[] = [];
  for (const line of lines.slice(requestLine ? 1 : lines.length)) {
    const header = HEADER_LINE.exec(line);
    if (!header || raw.length / 2 >= MAX_RECORDED_HEADERS) continue;
    raw.push(header[1]!, header[2]!.slice(0, MAX_HEADER_VALUE));
  }
  return { method, url, headers: headerPairs(raw) };
}

/** The record of a rejected request: nothing reached the upstream, mcp-lens answered. */
export function malformedExchange(opts: {
  id: number;
  startedAt: number;
  clientAddr: string | null;
  head: RequestHead;
  answer: MalformedAnswer;
  responseHeaders: HeaderPairs;
}): RawExchange {
  const { method, url, headers } = opts.head;
  const q = url.indexOf("?");
  const host = headerValue(headers, "host") ?? null;
  const body = Buffer.from(opts.answer.body);
  return {
    id: opts.id,
    startedAt: opts.startedAt,
    durationMs: Date.now() - opts.startedAt,
    ttfbMs: null,
    clientAddr: opts.clientAddr,
    method,
    host,
    path: q === -1 ? url : url.slice(0, q),
    query: q === -1 ? null : url.slice(q + 1),
    status: opts.answer.status,
    upstreamError: null,
    aborted: false,
    websocket: false,
    requestHeaders: headers,
    requestBody: { bytes: Buffer.alloc(0), size: 0, truncated: false },
    responseHeaders: opts.responseHeaders,
    responseBody: { bytes: body, size: body.length, truncated: false },
    sseEvents: null,
  };
}
