// Forwarding: http-proxy-3 streams every request and response through unchanged,
// while an ExchangeCapture taps the bytes. Errors become clear 502/504 answers.
import http from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { ProxyServer } from "http-proxy-3";
import { ExchangeCapture, isEventStream } from "./capture.js";
import { headerValue, type RawExchange } from "../../analysis/exchange.js";
import {
  isMalformedRequest,
  malformedAnswer,
  malformedAnswerHeaders,
  malformedExchange,
  readRequestHead,
  sendMalformedAnswer,
  type MalformedAnswer,
} from "./malformed.js";
import { clientAddress, type TrustPolicy } from "../../common/trust.js";
import { NAMES_FORWARDING_HEADER, REMOVED_FROM_UNTRUSTED, withoutForwardingTokens } from "../../common/forwarding-headers.js";

export interface ForwarderOptions {
  upstream: string;
  trust: TrustPolicy;
  maxBodyBytes: number;
  upstreamTimeoutMs: number;
  /** For the 408 answer's message: the server's headersTimeout. */
  headerTimeoutMs: number;
  /** For the 408 answer's message when the body was too slow: the server's requestTimeout. */
  requestTimeoutMs?: number;
  /** Upstream connections at once (http.Agent maxSockets); default UPSTREAM_AGENT_OPTIONS'. */
  upstreamMaxSockets?: number;
  nextId: () => number;
  /** Called once per exchange when it completes, aborts or fails. Must be cheap. */
  onExchange: (raw: RawExchange) => void;
}

export interface Forwarder {
  handleRequest(req: http.IncomingMessage, res: http.ServerResponse): void;
  handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Exchanges whose response is still open. */
  readonly inFlightCount: number;
  /**
   * The HTTP server's clientError: a request Node's parser rejected is answered (400, 431, 408)
   * and recorded. One whose headers were fine and forwarded (a broken chunked body, EOF
   * mid-body) stays one exchange, answered by mcp-lens, its upstream request cut.
   */
  handleClientError(error: NodeJS.ErrnoException, socket: Socket): void;
  /** Open SSE responses and upgraded WebSockets, counted on demand (for metrics scrapes). */
  openStreams(): { sse: number; websockets: number };
  /**
   * For shutdown: ends streams at once (they never finish by themselves), lets other
   * requests finish within `timeoutMs`, then cuts what is left. Every one is recorded.
   */
  drain(timeoutMs: number): Promise<void>;
  close(): void;
}

const CAPTURE = Symbol("mcp-lens.capture");
type Tagged = http.IncomingMessage & { [CAPTURE]?: ExchangeCapture };
/** A client connection, tagged with the exchange it is serving (one at a time: no pipelining). */
type TaggedSocket = Socket & { [CAPTURE]?: ExchangeCapture };

/** Upstream failures, named for the operator: the code in the JSON body, the log and the DB. */
export function upstreamErrorCode(error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case "ECONNREFUSED":
      return "upstream_refused";
    case "ECONNRESET":
    case "EPIPE":
    case "HPE_INVALID_CONSTANT":
      return "upstream_reset";
    case "ETIMEDOUT":
    case "UPSTREAM_TIMEOUT":
      return "upstream_timeout";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "upstream_dns";
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return "upstream_unreachable";
    default:
      return error.code?.startsWith("HPE_") ? "upstream_bad_response" : "upstream_error";
  }
}

/**
 * X-Forwarded-For/-Proto/-Host: kept from a trusted front proxy (and For extended with its
 * address), otherwise replaced, so the upstream computes its public URLs (issuer,
 * resource, WWW-Authenticate) from facts, not from what any client claims. From an untrusted peer
 * the other forwarding claims (Forwarded, X-Forwarded-Port/-Prefix, X-Real-IP, X-Original-Host)
 * are removed (forwarding-headers.ts says why). A Connection token naming any of them is removed for
 * every peer: http-proxy and Node forward Connection as is, and a hop that honours it would drop
 * what mcp-lens set. The client's originals stay in req.rawHeaders (recorded as claims).
 * Hot path: for a trusted front proxy that set everything, one string concat and no other allocation.
 */
export function setForwardedHeaders(req: http.IncomingMessage, trusted: boolean): void {
  const headers = req.headers;
  const peer = req.socket.remoteAddress ?? "";
  const priorFor = trusted ? headers["x-forwarded-for"] : undefined;
  headers["x-forwarded-for"] = priorFor ? `${priorFor}, ${peer}` : peer;
  if (!trusted || !headers["x-forwarded-proto"]) headers["x-forwarded-proto"] = "http";
  if ((!trusted || !headers["x-forwarded-host"]) && headers.host) headers["x-forwarded-host"] = headers.host;
  else if (!trusted) delete headers["x-forwarded-host"]; // no Host: no public host to claim
  if (!trusted) for (const name of REMOVED_FROM_UNTRUSTED) if (headers[name] !== undefined) delete headers[name];
  const connection = headers.connection;
  if (connection !== undefined && NAMES_FORWARDING_HEADER.test(connection)) {
    const kept = withoutForwardingTokens(connection);
    if (kept === null) delete headers.connection;
    else headers.connection = kept;
  }
}

/** A `close` token in Connection (tested on the header as it went upstream, without allocating). */
const CLOSE_TOKEN = /(?:^|,)\s*close\s*(?:,|$)/i;

/**
 * http-proxy builds the upstream request from Node's lower-cased `req.headers`; put back the
 * client's spelling so the upstream sees the request exactly as sent.
 */
function restoreHeaderCase(proxyReq: http.ClientRequest, rawHeaders: string[]): void {
  if (proxyReq.headersSent) return;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    if (name === lower) continue;
    const value = proxyReq.getHeader(lower);
    if (value !== undefined) proxyReq.setHeader(name, value); // same key, the client's case
  }
}

/** A client that speaks JSON-RPC gets its error as JSON-RPC, so SDK clients show the cause. */
function wantsJsonRpc(req: http.IncomingMessage): boolean {
  return req.method === "POST" && (req.headers["content-type"] ?? "").includes("json");
}

function jsonRpcId(capture: ExchangeCapture): string | number | null {
  const body = capture.requestBody.result();
  if (body.truncated || body.bytes.length === 0) return null;
  try {
    const message = JSON.parse(body.bytes.toString("utf8"));
    const id = Array.isArray(message) ? undefined : message?.id;
    return typeof id === "string" || typeof id === "number" ? id : null;
  } catch {
    return null;
  }
}

function errorResponse(code: string, detail: string, capture: ExchangeCapture): { status: number; body: string } {
  const status = code === "upstream_timeout" ? 504 : 502;
  const message = `mcp-lens: ${detail}`;
  const body = wantsJsonRpc(capture.req)
    ? { jsonrpc: "2.0", id: jsonRpcId(capture), error: { code: -32000, message, data: { reason: code } } }
    : { error: code, message };
  return { status, body: JSON.stringify(body) };
}

/**
 * The exchanges whose response is still open: a doubly linked list through the captures. Not a
 * Map or a Set (nor a WeakMap): keyed by these short-lived objects under load, a hash collection
 * got ~1.9 MB of them promoted to the old generation at every scavenge (pauses 0.4 → 2.5 ms,
 * ~20 µs more CPU a request on the forwarding thread).
 */
class OpenExchanges {
  private head: ExchangeCapture | null = null;
  size = 0;

  add(capture: ExchangeCapture): void {
    capture.open = true;
    capture.prevOpen = null;
    capture.nextOpen = this.head;
    if (this.head) this.head.prevOpen = capture;
    this.head = capture;
    this.size++;
  }

  remove(capture: ExchangeCapture): void {
    if (!capture.open) return;
    if (capture.prevOpen) capture.prevOpen.nextOpen = capture.nextOpen;
    else this.head = capture.nextOpen;
    if (capture.nextOpen) capture.nextOpen.prevOpen = capture.prevOpen;
    capture.open = false;
    capture.prevOpen = capture.nextOpen = null;
    this.size--;
  }

  /** A copy: cutting an exchange may remove it while the caller walks on. */
  list(): ExchangeCapture[] {
    const all: ExchangeCapture[] = [];
    for (let c = this.head; c; c = c.nextOpen) all.push(c);
    return all;
  }
}

/**
 * Keep-alive upstream: one TCP connect per burst, not per request. Shared with the benchmark's
 * bare proxy, so both run under the same socket cap. maxSockets is --upstream-max-sockets'
 * default: a client connection holds at most one upstream request at a time, so with the
 * public port's --max-connections (same default) it never binds on its own; it bounds what a
 * flood of slow requests can hold open on the upstream (Node's default is no bound at all).
 */
export const UPSTREAM_AGENT_OPTIONS: http.AgentOptions = { keepAlive: true, keepAliveMsecs: 1000, maxFreeSockets: 256, maxSockets: 4096, scheduling: "lifo" };

export function createForwarder(options: ForwarderOptions): Forwarder {
  const target = new URL(options.upstream);
  const agent = new http.Agent({ ...UPSTREAM_AGENT_OPTIONS, maxSockets: options.upstreamMaxSockets ?? UPSTREAM_AGENT_OPTIONS.maxSockets });
  const proxy = new ProxyServer({
    target: options.upstream,
    agent,
    xfwd: false, // X-Forwarded-* are set by setForwardedHeaders, honouring the trust policy
    preserveHeaderKeyCase: true,
    ws: true,
  });
  // http-proxy re-emits a WebSocket client's socket errors on the proxy (EPIPE when the client left
  // while a refused upgrade was being answered); with no listener of ours it throws and takes the
  // whole process down. The socket's close handler records the exchange: only end it here.
  proxy.on("error", (_error, _req, res) => {
    if (res && !(res instanceof http.ServerResponse)) res.destroy();
  });
  // Connections already answered as malformed: the client's FIN after our answer is no new error.
  const rejectedSockets = new WeakSet<Socket>();
  const inFlight = new OpenExchanges();

  function complete(capture: ExchangeCapture, aborted: boolean): void {
    inFlight.remove(capture);
    const socket = capture.req.socket as TaggedSocket | null;
    if (socket?.[CAPTURE] === capture) socket[CAPTURE] = undefined; // not `delete`: keeps the socket's shape
    const raw = capture.finish(aborted);
    if (raw) options.onExchange(raw);
  }

  function begin(req: http.IncomingMessage): ExchangeCapture {
    const trusted = options.trust.isTrusted(req.socket.remoteAddress);
    const forwardedFor = trusted ? (req.headers["x-forwarded-for"] as string | undefined) : undefined;
    const capture = new ExchangeCapture(
      options.nextId(),
      req,
      clientAddress(req.socket.remoteAddress, forwardedFor, options.trust, trusted),
      options.maxBodyBytes,
    );
    capture.trustedPeer = trusted;
    setForwardedHeaders(req, trusted);
    (req as Tagged)[CAPTURE] = capture;
    return capture;
  }

  // Emitted once the upstream request has a socket, which can be after the client's request
  // was rejected mid-body (it all arrived in one read): then it is cut here.
  proxy.on("proxyReq", (proxyReq, req) => {
    const capture = (req as Tagged)[CAPTURE];
    if (capture?.rejected) {
      proxyReq.destroy();
      return;
    }
    if (capture) capture.upstreamRequest = proxyReq;
    restoreHeaderCase(proxyReq, req.rawHeaders);
    // A client that closes after this request (Connection: close; Node's agentless requests send it)
    // closes this upstream connection too. The header goes on as sent, but Node honours it only for
    // the framing: when the server still answers keep-alive (the v1 SDK's SSE does), the socket went
    // back to the agent's pool while the server closed it, and the next request on it got a bare 400.
    if (CLOSE_TOKEN.test(req.headers.connection ?? "")) proxyReq.shouldKeepAlive = false;
  });

  proxy.on("proxyReqWs", (proxyReq, req) => {
    const capture = (req as Tagged)[CAPTURE];
    if (!capture) return;
    proxyReq.once("upgrade", (proxyRes: http.IncomingMessage) => capture.respond(101, proxyRes.rawHeaders, false));
    proxyReq.once("response", (proxyRes: http.IncomingMessage) =>
      capture.respond(proxyRes.statusCode ?? 0, proxyRes.rawHeaders, false),
    );
  });

  proxy.on("proxyRes", (proxyRes, req, res) => {
    const capture = (req as Tagged)[CAPTURE];
    if (!capture) return;
    const eventStream = isEventStream(proxyRes.headers["content-type"]);
    // nginx in front buffers responses unless told otherwise: SSE must flush per event.
    if (eventStream && proxyRes.headers["x-accel-buffering"] === undefined) {
      proxyRes.headers["x-accel-buffering"] = "no";
    }
    capture.respond(proxyRes.statusCode ?? 0, proxyRes.rawHeaders, eventStream);
    proxyRes.on("data", (chunk: Buffer) => capture.onResponseChunk(chunk));
    // Node sends headers with the first body byte; an SSE client must see the stream open at
    // once, as it would without mcp-lens. By the next tick http-proxy has copied the headers.
    if (eventStream) process.nextTick(() => res.headersSent || res.destroyed || res.flushHeaders());
    // The upstream died mid-response: pipe() would leave the client waiting forever.
    proxyRes.once("close", () => {
      if (proxyRes.complete || res.destroyed) return;
      capture.upstreamError ??= "upstream_reset";
      res.destroy();
    });
  });

  /** A request of this connection already forwarded: answer 400 in its stead, cut its upstream request. */
  function rejectInFlight(socket: Socket, answer: MalformedAnswer): boolean {
    const capture = (socket as TaggedSocket)[CAPTURE];
    const res = capture?.open ? capture.response : null;
    if (!capture || !res) return false;
    capture.rejected = true;
    capture.upstreamRequest?.destroy();
    if (res.headersSent) {
      socket.destroy(); // the upstream's answer has begun: cutting it is all that is left
      return true;
    }
    const headers = malformedAnswerHeaders(answer);
    capture.respond(answer.status, headers.flat(), false);
    capture.onResponseChunk(Buffer.from(answer.body));
    res.shouldKeepAlive = false;
    res.writeHead(answer.status, Object.fromEntries(headers)).end(answer.body);
    return true;
  }

  function fail(error: NodeJS.ErrnoException, req: http.IncomingMessage, res: http.ServerResponse | Duplex): void {
    const capture = (req as Tagged)[CAPTURE];
    if (!capture || capture.rejected) return; // rejected: mcp-lens already answered 400
    const code = capture.upstreamError ?? upstreamErrorCode(error);
    capture.upstreamError = code;
    if (!(res instanceof http.ServerResponse)) {
      res.destroy();
      return;
    }
    if (res.headersSent) {
      // Mid-response failure: the only honest signal left is to cut the connection.
      res.destroy();
      return;
    }
    const detail =
      code === "upstream_timeout"
        ? `the upstream ${target.origin} sent no response within ${options.upstreamTimeoutMs} ms`
        : `cannot reach the upstream ${target.origin}: ${error.code ?? error.message}`;
    const { status, body } = errorResponse(code, detail, capture);
    const headers = {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(body),
      "x-mcp-lens-error": code,
    };
    capture.respond(status, Object.entries(headers).flatMap(([k, v]) => [k, String(v)]), false);
    capture.onResponseChunk(Buffer.from(body));
    res.writeHead(status, headers).end(body);
  }

  return {
    get inFlightCount() {
      return inFlight.size;
    },

    handleClientError(error, socket) {
      if (!isMalformedRequest(error) || rejectedSockets.has(socket)) {
        socket.destroy(); // the client left (ECONNRESET, EPIPE), or our answer is on its way
        return;
      }
      rejectedSockets.add(socket);
      // A request already forwarded had its headers: a timeout now is --request-timeout's, on its body.
      const forwarded = (socket as TaggedSocket)[CAPTURE]?.open === true;
      const answer = malformedAnswer(error, options.headerTimeoutMs, forwarded ? options.requestTimeoutMs : undefined);
      if (rejectInFlight(socket, answer)) return;
      const responseHeaders = sendMalformedAnswer(socket, answer);
      const head = readRequestHead((error as { rawPacket?: Buffer }).rawPacket);
      const trusted = options.trust.isTrusted(socket.remoteAddress);
      const forwardedFor = trusted ? headerValue(head.headers, "x-forwarded-for") : undefined;
      options.onExchange(
        malformedExchange({
          id: options.nextId(),
          startedAt: Date.now(),
          clientAddr: clientAddress(socket.remoteAddress, forwardedFor, options.trust, trusted),
          head,
          answer,
          responseHeaders,
        }),
      );
    },

    openStreams() {
      let sse = 0;
      let websockets = 0;
      for (const capture of inFlight.list()) {
        if (capture.sse) sse++;
        else if (capture.websocket && capture.status === 101) websockets++;
      }
      return { sse, websockets };
    },

    async drain(timeoutMs) {
      for (const capture of inFlight.list()) if (capture.sse || capture.websocket) capture.cut();
      const deadline = Date.now() + timeoutMs;
      while (inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      for (const capture of inFlight.list()) capture.cut();
    },

    handleRequest(req, res) {
      const capture = begin(req);
      capture.response = res;
      inFlight.add(capture);
      (req.socket as TaggedSocket)[CAPTURE] = capture;
      // Only the wait for response headers is bounded: a stream, once started, may idle for hours.
      const timer = setTimeout(() => {
        if (capture.status !== null) return;
        capture.upstreamError = "upstream_timeout";
        const error = Object.assign(new Error("upstream timeout"), { code: "UPSTREAM_TIMEOUT" });
        if (capture.upstreamRequest) capture.upstreamRequest.destroy(error);
        else fail(error, req, res);
      }, options.upstreamTimeoutMs);
      timer.unref();
      res.once("close", () => {
        clearTimeout(timer);
        complete(capture, !res.writableFinished);
      });
      proxy.web(req, res, {}, (error, errReq, errRes) => fail(error, errReq, errRes as http.ServerResponse));
      // Attached in the same tick as http-proxy's pipe, so both see every chunk.
      req.on("data", (chunk: Buffer) => capture.requestBody.push(chunk));
    },

    handleUpgrade(req, socket, head) {
      const capture = begin(req);
      capture.websocket = true;
      capture.upgradeSocket = socket;
      inFlight.add(capture);
      socket.once("close", () => complete(capture, capture.status === null));
      socket.on("error", () => {}); // the close handler records it; an unhandled error would crash
      proxy.ws(req, socket, head, {}, (error) => {
        capture.upstreamError ??= upstreamErrorCode(error);
        if (capture.status === null && !socket.destroyed) {
          socket.end("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
      });
    },

    close() {
      agent.destroy();
      proxy.close();
    },
  };
}
