// Recorded exchanges on a wire the test drives: classified as the proxy does, on a clock the test
// moves, from peers (address + user agent). Shared by the grouping tests.
import { createClassifier } from "../../analysis/classify.js";
import type { ClassifiedExchange, HeaderPairs, RecordedBody } from "../../analysis/exchange.js";

// ---------------------------------------------------------------------------------------------
// The wire: recorded exchanges, classified as the proxy does, on a clock the test moves

export const HOST = "mcp.example.com";
export const ORIGIN = `https://${HOST}`;
export const MCP_URL = `${ORIGIN}/mcp`;
export const T0 = Date.UTC(2025, 10, 3, 14, 2);
export const SECOND = 1_000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;

export const CALLBACKS = {
  claude: "https://claude.ai/api/mcp/auth_callback",
  chatgpt: "https://chatgpt.com/connector_platform_oauth_redirect",
  localhost: "http://localhost:54212/callback",
  inspector: "http://localhost:6274/oauth/callback",
};

export interface Peer {
  addr: string;
  ua: string;
}

export const CHROME = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36";
export const browserAt = (addr: string): Peer => ({ addr, ua: CHROME });

export interface Spec {
  method?: string;
  path: string;
  query?: string;
  status: number;
  req?: HeaderPairs;
  body?: string;
  res?: HeaderPairs;
  reply?: string;
  durationMs?: number;
}

export function text(value: string | undefined): RecordedBody {
  return value === undefined
    ? { text: null, encoding: "utf8", size: 0, truncated: false, decoded: null }
    : { text: value, encoding: "utf8", size: Buffer.byteLength(value), truncated: false, decoded: null };
}

export class Wire {
  readonly exchanges: ClassifiedExchange[] = [];
  now = T0;
  private nextId = 1;
  private readonly classify = createClassifier();

  wait(ms: number): this {
    this.now += ms;
    return this;
  }

  send(peer: Peer, spec: Spec): ClassifiedExchange {
    const durationMs = spec.durationMs ?? 40;
    const e = this.classify({
      id: this.nextId++,
      startedAt: this.now,
      durationMs,
      ttfbMs: Math.min(durationMs, 30),
      clientAddr: peer.addr,
      method: spec.method ?? "GET",
      host: HOST,
      path: spec.path,
      query: spec.query ?? null,
      status: spec.status,
      upstreamError: null,
      aborted: false,
      websocket: false,
      requestHeaders: [["user-agent", peer.ua], ...(spec.req ?? [])],
      requestBody: text(spec.body),
      responseHeaders: spec.res ?? [],
      responseBody: text(spec.reply),
      sseEvents: null,
    });
    this.exchanges.push(e);
    this.now += durationMs + 200;
    return e;
  }

  /** The exchanges sent from here on. */
  mark(): () => number[] {
    const from = this.exchanges.length;
    return () => this.exchanges.slice(from).map((e) => e.id);
  }
}

let secrets = 0;
/** A fresh secret as the recorder leaves it: a redaction marker with an 8-hex fingerprint. */
export const secret = () => `[redacted:${(++secrets).toString(16).padStart(8, "0")}]`;
export const fingerprint = (redacted: string) => redacted.slice(10, 18);

export const json = (value: unknown) => JSON.stringify(value);
export const form = (params: Record<string, string>) => new URLSearchParams(params).toString();
export const JSON_TYPE: [string, string] = ["content-type", "application/json"];
export const FORM_TYPE: [string, string] = ["content-type", "application/x-www-form-urlencoded"];
export const MCP_ACCEPT: [string, string] = ["accept", "application/json, text/event-stream"];
