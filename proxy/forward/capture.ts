// The tap on the request path: observes bytes as they stream past, keeps the first
// `cap` bytes of each body, and times the exchange. It never delays or alters a chunk;
// everything expensive (decoding, redaction, classification, SQLite) happens later,
// off the request path, in the record writer.
import type { ClientRequest, IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { performance } from "node:perf_hooks";
import { headerPairs, type CapturedBody, type Forwarding, type HeaderPairs, type RawExchange } from "../../analysis/exchange.js";

/** Keeps the first `cap` bytes of a stream and counts the rest. */
export class BodyTap {
  private chunks: Buffer[] = [];
  private kept = 0;
  size = 0;

  constructor(private readonly cap: number) {}

  push(chunk: Buffer): void {
    this.size += chunk.length;
    if (this.kept >= this.cap) return;
    const room = this.cap - this.kept;
    const piece = chunk.length <= room ? chunk : chunk.subarray(0, room);
    this.chunks.push(piece);
    this.kept += piece.length;
  }

  result(): CapturedBody {
    const bytes = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.kept);
    return { bytes, size: this.size, truncated: this.size > this.kept };
  }
}

/**
 * Counts SSE events (an event ends at a blank line) across chunk boundaries without
 * keeping the stream. Tolerates \n, \r\n and \r line endings.
 */
export class SseEventCounter {
  count = 0;
  /** Characters since the last line break: 0 means we are at the start of a line. */
  private lineLength = 0;
  /** The current event has at least one line. */
  private eventHasLines = false;
  private lastWasCR = false;

  push(chunk: Buffer): void {
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i]!;
      if (byte === 0x0a && this.lastWasCR) {
        this.lastWasCR = false; // the \n of a \r\n pair: already counted as a line break
        continue;
      }
      this.lastWasCR = byte === 0x0d;
      if (byte === 0x0a || byte === 0x0d) {
        if (this.lineLength === 0) {
          if (this.eventHasLines) this.count++;
          this.eventHasLines = false;
        } else {
          this.eventHasLines = true;
        }
        this.lineLength = 0;
      } else {
        this.lineLength++;
      }
    }
  }
}

export function isEventStream(contentType: string | string[] | undefined): boolean {
  return typeof contentType === "string" && contentType.toLowerCase().includes("text/event-stream");
}

/** One exchange in flight: filled in by the forwarder, frozen into a RawExchange at the end. */
export class ExchangeCapture {
  readonly startedAt = Date.now();
  private readonly t0 = performance.now();
  readonly requestBody: BodyTap;
  readonly responseBody: BodyTap;
  ttfbMs: number | null = null;
  status: number | null = null;
  responseHeaders: HeaderPairs | null = null;
  sse: SseEventCounter | null = null;
  upstreamError: string | null = null;
  /** mcp-lens answered 400 itself: the request turned out malformed mid-body. */
  rejected = false;
  /** The peer may set X-Forwarded-* (common/trust.ts); set by the forwarder with the headers. */
  trustedPeer = false;
  websocket = false;
  /** The request to the upstream, once a socket is assigned: destroyed on timeout. */
  upstreamRequest: ClientRequest | null = null;
  /** The answer to the client (none for a WebSocket): mcp-lens may answer in the upstream's stead. */
  response: ServerResponse | null = null;
  /** An upgraded WebSocket's client connection (set by the forwarder; none for HTTP). */
  upgradeSocket: Duplex | null = null;
  // The forwarder's list of open exchanges runs through the captures (see OpenExchanges).
  open = false;
  prevOpen: ExchangeCapture | null = null;
  nextOpen: ExchangeCapture | null = null;
  private done = false;

  constructor(
    readonly id: number,
    readonly req: IncomingMessage,
    readonly clientAddr: string | null,
    cap: number,
  ) {
    this.requestBody = new BodyTap(cap);
    this.responseBody = new BodyTap(cap);
  }

  /**
   * Ends the exchange's connection (for shutdown). A method, not a closure the forwarder stores:
   * with `() => res.destroy()` kept on each capture, every scavenge of the forwarding thread kept
   * ~1.3 MiB alive and promoted it (the bare proxy: ~0.1 MiB, nothing promoted; --trace-gc-nvp).
   */
  cut(): void {
    if (this.upgradeSocket) this.upgradeSocket.destroy();
    else this.response?.destroy();
  }

  /** The upstream's response headers arrived (or mcp-lens answered in its stead). */
  respond(status: number, rawHeaders: string[], eventStream: boolean): void {
    this.ttfbMs = performance.now() - this.t0;
    this.status = status;
    this.responseHeaders = headerPairs(rawHeaders);
    if (eventStream) this.sse = new SseEventCounter();
  }

  onResponseChunk(chunk: Buffer): void {
    this.responseBody.push(chunk);
    this.sse?.push(chunk);
  }

  /** Returns the raw exchange once; later calls return null (close and error can both fire). */
  finish(aborted: boolean): RawExchange | null {
    if (this.done) return null;
    this.done = true;
    const { req } = this;
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    return {
      id: this.id,
      startedAt: this.startedAt,
      durationMs: performance.now() - this.t0,
      ttfbMs: this.ttfbMs,
      clientAddr: this.clientAddr,
      method: req.method ?? "GET",
      host: req.headers.host ?? null,
      path: q === -1 ? url : url.slice(0, q),
      query: q === -1 ? null : url.slice(q + 1),
      status: this.status,
      upstreamError: this.upstreamError,
      aborted,
      websocket: this.websocket,
      requestHeaders: headerPairs(req.rawHeaders),
      requestBody: this.requestBody.result(),
      responseHeaders: this.responseHeaders,
      responseBody: this.responseBody.result(),
      sseEvents: this.sse ? this.sse.count : null,
      forwarding: forwardingOf(req, this.trustedPeer),
    };
  }
}

/** Reads back what setForwardedHeaders (proxy/forward/forward.ts) left in req.headers: no copies of the strings. */
function forwardingOf(req: IncomingMessage, trusted: boolean): Forwarding {
  const h = req.headers;
  return {
    trusted,
    forwardedFor: String(h["x-forwarded-for"] ?? ""),
    forwardedProto: String(h["x-forwarded-proto"] ?? "http"),
    forwardedHost: (h["x-forwarded-host"] as string | undefined) ?? null,
    connection: h.connection ?? null,
  };
}
