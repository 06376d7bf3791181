// What a re-run sends and receives, kept as the proxy would capture it (analysis/exchange.ts's
// RawExchange), so its answers are judged by the same classification and diagnosis rules as live
// traffic. Bounded like the proxy's recording: the first bytes of each body.
import type { IncomingMessage } from "node:http";
import { performance } from "node:perf_hooks";
import { headerPairs, type HeaderPairs, type RawExchange } from "../analysis/exchange.js";

/** Bytes of each body kept, as the proxy's default --max-body. */
const KEEP_BYTES = 64 * 1024;

export class ExchangeRecord {
  private readonly startedAt = Date.now();
  private readonly t0 = performance.now();
  private ttfbMs: number | null = null;
  private endedMs: number | null = null;
  private status: number | null = null;
  private responseHeaders: HeaderPairs | null = null;
  private readonly kept: Buffer[] = [];
  private keptBytes = 0;
  private size = 0;
  private upstreamError: string | null = null;
  private complete = false;

  constructor(
    private readonly id: number,
    private readonly method: string,
    private readonly url: URL,
    private readonly requestHeaders: HeaderPairs,
    private readonly requestBody: string | undefined,
  ) {}

  /** The answer's head arrived; its end (or cut) is noted when the response closes. */
  answered(res: IncomingMessage): void {
    this.ttfbMs = performance.now() - this.t0;
    this.status = res.statusCode ?? null;
    this.responseHeaders = headerPairs(res.rawHeaders);
    res.once("close", () => {
      this.endedMs = performance.now() - this.t0;
      this.complete = res.complete;
    });
  }

  /** A chunk of the answer as a reader consumed it. */
  received(chunk: Buffer): void {
    this.size += chunk.length;
    if (this.keptBytes >= KEEP_BYTES) return;
    const piece = chunk.subarray(0, KEEP_BYTES - this.keptBytes);
    this.kept.push(piece);
    this.keptBytes += piece.length;
  }

  /** No answer at all: refused, timed out, reset. */
  failed(code: string): void {
    this.upstreamError = code;
    this.endedMs = performance.now() - this.t0;
  }

  exchange(): RawExchange {
    const body = Buffer.from(this.requestBody ?? "", "utf8");
    const responseBody = Buffer.concat(this.kept, this.keptBytes);
    const contentType = this.responseHeaders?.find(([n]) => n.toLowerCase() === "content-type")?.[1] ?? "";
    return {
      id: this.id,
      startedAt: this.startedAt,
      durationMs: this.endedMs ?? performance.now() - this.t0,
      ttfbMs: this.ttfbMs,
      clientAddr: "127.0.0.1",
      method: this.method,
      host: this.url.host,
      path: this.url.pathname,
      query: this.url.search ? this.url.search.slice(1) : null,
      status: this.status,
      upstreamError: this.upstreamError,
      // A stream the run let go of, or an answer it cut, is as a client that went away.
      aborted: this.status !== null && this.endedMs !== null && !this.complete,
      websocket: false,
      requestHeaders: this.requestHeaders,
      requestBody: { bytes: body, size: body.length, truncated: false },
      responseHeaders: this.responseHeaders,
      responseBody: { bytes: responseBody, size: this.size, truncated: this.size > this.keptBytes },
      sseEvents: /text\/event-stream/i.test(contentType) ? (responseBody.toString("utf8").match(/\r?\n\r?\n/g)?.length ?? 0) : null,
    };
  }
}
