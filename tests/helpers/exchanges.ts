// Raw exchanges as the capture tap hands them over, and handshakes, for tests and the bench:
// neutral defaults, each caller sets the fields its case is about.
import type { CapturedBody, ClassifiedExchange, RawExchange } from "../../analysis/exchange.js";
import type { Handshake } from "../../analysis/handshake.js";

/** A body as captured: all of it, or (truncated) half of what passed through. */
export function captured(content: string | Buffer, truncated = false): CapturedBody {
  const bytes = Buffer.from(content);
  return { bytes, size: truncated ? bytes.length * 2 : bytes.length, truncated };
}

export function rawExchange(fields: Partial<RawExchange>): RawExchange {
  return {
    id: 1,
    startedAt: 1_700_000_000_000,
    durationMs: 12,
    ttfbMs: 8,
    clientAddr: "127.0.0.1",
    method: "GET",
    host: "mcp.example",
    path: "/",
    query: null,
    status: 200,
    upstreamError: null,
    aborted: false,
    websocket: false,
    requestHeaders: [],
    requestBody: captured(""),
    responseHeaders: [],
    responseBody: captured(""),
    sseEvents: null,
    ...fields,
  };
}

/** A handshake written by hand (for what stores, counts or shows handshakes, whatever the analyser makes of traffic). */
export function handshakeOf(id: number, fields: Partial<Handshake>): Handshake {
  return {
    id,
    clientFamily: "other",
    clientName: null,
    era: "unknown",
    eraFallback: false,
    registration: "none",
    startedAt: 1_700_000_000_000 + id,
    endedAt: 1_700_000_000_500 + id,
    steps: [],
    outcome: "in_progress",
    failedStep: null,
    exchangeIds: [id],
    diagnoses: [],
    ...fields,
  };
}

/** An exchange as the recorder stores it: a POST /mcp answered 200, neutral facts. */
export function classifiedExchange(id: number, overrides: Partial<ClassifiedExchange> = {}): ClassifiedExchange {
  return {
    id,
    startedAt: 1_700_000_000_000 + id,
    durationMs: 12,
    ttfbMs: 7,
    clientAddr: "127.0.0.1",
    method: "POST",
    host: "mcp.example.com",
    path: "/mcp",
    query: null,
    status: 200,
    upstreamError: null,
    aborted: false,
    websocket: false,
    requestHeaders: [["content-type", "application/json"]],
    requestBody: { text: '{"jsonrpc":"2.0"}', encoding: "utf8", size: 17, truncated: false, decoded: null },
    responseHeaders: [["content-type", "application/json"]],
    responseBody: { text: null, encoding: "utf8", size: 0, truncated: false, decoded: null },
    sseEvents: null,
    kind: "mcp_post",
    facts: {},
    ...overrides,
  };
}
