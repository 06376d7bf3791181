// The connector's wire: each request as a hosted client's backend sends it, its answer read within
// bounds, JSON-RPC over POST (a JSON answer or the first SSE event) behind a browser-based client's
// CORS checks, and every exchange recorded as the proxy would have captured it. The handshake's
// steps are inspector/connector.ts's. node:http rather than fetch: fetch retries a 421 on a new
// connection, adds Sec-Fetch-* headers and cannot set Host, and hosted backends do none of that.
import http from "node:http";
import https from "node:https";
import type { HandshakeStep } from "../analysis/handshake.js";
import { BROWSER_UA } from "./clients.js";
import { ExchangeRecord } from "./run-capture.js";

/** How a run's requests go out: the dialled origins, the headers a client adds, the timeouts. */
export interface WireOptions {
  /** User-Agent of the client's backend requests; none is sent when absent. */
  userAgent?: string;
  /** Accept of the MCP requests; none is sent when absent (some clients send none, or *\/*). */
  accept?: string;
  /** A browser-based client: sends this Origin, preflights its MCP requests and obeys CORS. */
  origin?: string;
  /**
   * Where requests for the connector's host are dialled (scheme://host:port), e.g. the proxy in
   * front of the server or a plain-http port behind a TLS front; default the connector URL itself.
   */
  via?: string;
  /** Added to every request for the connector's host, e.g. X-Forwarded-Proto (the tests' TLS front). */
  forwardHeaders?: Record<string, string>;
  /**
   * Other origins also dialled at `via` (the recorded public origin of the connector): a URL on
   * them goes to `via` with `via`'s own Host, as if the server had advertised it on the connector's.
   */
  mappedOrigins?: string[];
  /**
   * Origins dialled at `via` but compared as themselves: a TLS front's plain-http public origin,
   * whose URLs must still read as http:// where the client connected over https.
   */
  frontOrigins?: string[];
  /**
   * When set, the only origins dialled besides the connector's (and the mapped ones, and those
   * the run allows later with allow()): a URL the server advertises on any other origin is not
   * followed; the run stops there, the step skipped (`not_followed`) with the reason. Unset:
   * every advertised URL is followed (the tests' connector).
   */
  allowedOrigins?: string[];
  /** What the run's user can do about an origin it did not follow (replay: "--allow-origin X to follow"). */
  notFollowedHint?: (origin: string) => string;
  /** Per request, headers and body, like the ~10 s hosted clients allow; default 10 000 ms. */
  timeoutMs?: number;
  /** How long an SSE answer may take to send its first event; default timeoutMs. */
  sseTimeoutMs?: number;
}

/** A step that failed: the run stops there. */
export class StepFailure extends Error {
  constructor(
    readonly step: HandshakeStep,
    message: string,
  ) {
    super(message);
  }
}

/** A URL on an origin the run may not dial: the step is reported, not performed. */
export class NotFollowed extends StepFailure {}

/** Answers larger than this are not read further: metadata and JSON-RPC answers are small. */
const MAX_ANSWER_BYTES = 1024 * 1024;

/** A response whose body has not been read yet. */
interface Reply {
  status: number;
  headers: Headers;
  res: http.IncomingMessage;
  /** The exchange as recorded: readers hand it what they consume. */
  capture: ExchangeRecord;
  /** Cuts the connection. */
  cancel(): void;
  timedOut(): boolean;
}

export interface RpcReply {
  status: number;
  headers: Headers;
  text: string;
  message?: { result?: Record<string, unknown>; error?: { code: number; message: string; data?: unknown } };
  sessionId?: string;
}

const SAFELISTED = new Set(["accept", "accept-language", "content-language", "user-agent", "origin"]);
/** A header value node:http sends as is (HTAB, visible ASCII, obs-text): anything else is refused, not thrown. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * The wire of one run, to the connector URL `logical`: what it sends, how it reads the answers, and
 * what it recorded (the exchanges, each step's last HTTP status, the number of requests).
 */
export function openWire(logical: URL, opts: WireOptions) {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const sseTimeoutMs = opts.sseTimeoutMs ?? timeoutMs;
  const { origin, accept, userAgent } = opts;
  const resourceUrl = logical.href;
  const via = new URL(opts.via ?? logical.origin);
  // Origins dialled at `via`; with allowedOrigins, also the only others dialled (directly).
  const mapped = new Set(
    [logical.origin, via.origin, ...(opts.mappedOrigins ?? []), ...(opts.frontOrigins ?? [])].flatMap((o) => originOf(o) ?? []),
  );
  const allowed = opts.allowedOrigins && new Set(opts.allowedOrigins.flatMap((o) => originOf(o) ?? []));
  /** The origins requests went to (after `via`), in the order first dialled. */
  const dialled = new Set<string>();
  const captures: ExchangeRecord[] = [];
  const lastStatus = new Map<HandshakeStep, number>();
  let requests = 0;
  const corsAllowed = new Set<string>();

  /** One request; the timeout covers the answer's headers and body. Redirects are not followed. */
  function send(step: HandshakeStep, url: string, init: { method?: string; headers?: Record<string, string>; body?: string; browser?: boolean } = {}): Promise<Reply> {
    const method = init.method ?? "GET";
    const target = safeUrl(url);
    if (!target || (target.protocol !== "http:" && target.protocol !== "https:")) {
      return Promise.reject(new StepFailure(step, `${url} is not an http(s) URL`));
    }
    const ours = mapped.has(target.origin);
    if (ours) {
      target.protocol = via.protocol;
      target.host = via.host;
    } else if (allowed && !allowed.has(target.origin)) {
      return Promise.reject(new NotFollowed(step, `not followed: ${url} is on another origin (${target.origin})${opts.notFollowedHint ? `; ${opts.notFollowedHint(target.origin)}` : ""}`));
    }
    target.username = target.password = ""; // no credentials from a URL the server chose
    const ua = init.browser ? BROWSER_UA : userAgent;
    const headers: Record<string, string> = { ...(ours ? opts.forwardHeaders : {}), ...(ua ? { "user-agent": ua } : {}), ...init.headers };
    // The Host (and so TLS SNI) is always the dialled origin's: never one taken from a recording.
    for (const name of Object.keys(headers)) if (name.toLowerCase() === "host") delete headers[name];
    // A credential goes only to the origin the run targets.
    if (target.origin !== via.origin) for (const name of Object.keys(headers)) if (name.toLowerCase() === "authorization") delete headers[name];
    if (origin && !init.browser) headers.origin = origin; // a navigation (authorize) sends none
    // As clients with a connection pool do; the one-off agent still closes the connection after
    // the answer. Never `Connection: close`, which a proxy may forward to an upstream connection it
    // then reuses (mcp-lens in front of a server that answers `Connection: keep-alive`).
    headers.connection = "keep-alive";
    // A value from a recording or a server that node:http would refuse is a failed step, not a crash.
    const bad = Object.entries(headers).find(([, value]) => !HEADER_VALUE.test(value));
    if (bad) return Promise.reject(new StepFailure(step, `not sent: the ${bad[0]} header would not be a valid header value`));
    requests++;
    dialled.add(target.origin);
    const capture = new ExchangeRecord(captures.length + 1, method, target, [["Host", target.host], ...Object.entries(headers)], init.body);
    captures.push(capture);
    return new Promise((resolve, reject) => {
      let timedOut = false;
      let answered = false;
      const req = (target.protocol === "https:" ? https : http).request(target, { method, headers, agent: false });
      const timer = setTimeout(() => {
        timedOut = true;
        req.destroy(new Error(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      req.once("error", (error) => {
        clearTimeout(timer);
        // After the answer's head, what is cut is its body: an aborted answer, which the response's close records.
        if (answered) return;
        capture.failed(timedOut ? "upstream_timeout" : (error as NodeJS.ErrnoException).code === "ECONNREFUSED" ? "upstream_refused" : "upstream_error");
        reject(new StepFailure(step, `${method} ${url}: ${error.message}`));
      });
      req.once("response", (res) => {
        answered = true;
        res.once("close", () => clearTimeout(timer));
        lastStatus.set(step, res.statusCode!);
        capture.answered(res);
        const h = new Headers();
        for (const [name, value] of Object.entries(res.headers)) for (const v of [value ?? []].flat()) h.append(name, v);
        resolve({ status: res.statusCode!, headers: h, res, capture, cancel: () => req.destroy(), timedOut: () => timedOut });
      });
      req.end(init.body);
    });
  }

  function readText(step: HandshakeStep, reply: Reply): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      reply.res.on("data", (c: Buffer) => {
        reply.capture.received(c);
        size += c.length;
        if (size <= MAX_ANSWER_BYTES) chunks.push(c);
        else reply.cancel(); // bounded: a hostile server cannot make the run hold more
      });
      reply.res.once("error", () => {}); // reported by close
      reply.res.once("close", () => {
        if (size > MAX_ANSWER_BYTES) reject(new StepFailure(step, `the ${reply.status} answer is larger than ${MAX_ANSWER_BYTES} bytes`));
        else if (reply.res.complete) resolve(Buffer.concat(chunks).toString("utf8"));
        else reject(new StepFailure(step, `the ${reply.status} answer was cut${reply.timedOut() ? `: no end within ${timeoutMs} ms` : ""}`));
      });
    });
  }

  async function getJson(step: HandshakeStep, url: string): Promise<{ status: number; json?: Record<string, unknown> }> {
    const res = await send(step, url, { headers: { accept: "application/json" } });
    const text = await readText(step, res);
    try {
      const json = JSON.parse(text) as unknown;
      return { status: res.status, json: res.status === 200 && json && typeof json === "object" ? (json as Record<string, unknown>) : undefined };
    } catch {
      return { status: res.status };
    }
  }

  function corsCheck(step: HandshakeStep, headers: Headers): void {
    const allow = headers.get("access-control-allow-origin");
    if (allow !== origin && allow !== "*") throw new StepFailure(step, `CORS: the answer allows origin ${allow ?? "(none)"}, not ${origin}`);
  }

  const exposed = (headers: Headers, name: string) =>
    !origin || (headers.get("access-control-expose-headers") ?? "").split(",").some((h) => [name, "*"].includes(h.trim().toLowerCase()));

  /** A browser sends a preflight for header names it has not been allowed yet. */
  async function preflight(step: HandshakeStep, url: string, headerNames: string[], method = "POST"): Promise<void> {
    const needed = headerNames.filter((h) => !SAFELISTED.has(h) && !corsAllowed.has(h)).sort();
    if (needed.length === 0) return;
    const res = await send(step, url, { method: "OPTIONS", headers: { "access-control-request-method": method, "access-control-request-headers": needed.join(",") } });
    await readText(step, res);
    if (res.status < 200 || res.status > 299) throw new StepFailure(step, `CORS preflight answered ${res.status}`);
    corsCheck(step, res.headers);
    const allowed = (res.headers.get("access-control-allow-headers") ?? "").split(",").map((h) => h.trim().toLowerCase());
    const missing = needed.filter((h) => !allowed.includes(h) && !(allowed.includes("*") && h !== "authorization"));
    if (missing.length) throw new StepFailure(step, `CORS preflight does not allow ${missing.join(", ")} (Access-Control-Allow-Headers: ${allowed.join(", ")})`);
    for (const h of needed) corsAllowed.add(h);
  }

  /** A request to the connector URL as the client makes it: a browser-based client's behind its CORS checks. */
  async function sendToConnector(step: HandshakeStep, init: { method: string; headers: Record<string, string>; body?: string }): Promise<Reply> {
    if (origin) await preflight(step, resourceUrl, Object.keys(init.headers), init.method);
    const res = await send(step, resourceUrl, init);
    if (origin) corsCheck(step, res.headers);
    return res;
  }

  /** POST one JSON-RPC message to the connector URL; reads the JSON answer or the first SSE event. */
  async function rpc(step: HandshakeStep, message: object, extra: Record<string, string>): Promise<RpcReply> {
    const headers = { "content-type": "application/json", ...(accept ? { accept } : {}), ...extra };
    const res = await sendToConnector(step, { method: "POST", headers, body: JSON.stringify(message) });
    const sessionId = exposed(res.headers, "mcp-session-id") ? (res.headers.get("mcp-session-id") ?? undefined) : undefined;
    const reply: RpcReply = { status: res.status, headers: res.headers, text: "", ...(sessionId ? { sessionId } : {}) };
    const parse = (text: string) => {
      try {
        reply.message = JSON.parse(text) as RpcReply["message"];
      } catch {
        /* not JSON: the caller reports the status and text */
      }
    };
    if (!(res.headers.get("content-type") ?? "").includes("text/event-stream")) {
      reply.text = await readText(step, res);
      parse(reply.text);
      return reply;
    }
    const { data, text } = await firstEvent(step, res);
    reply.text = text;
    if (data !== undefined) parse(data);
    return reply;
  }

  /**
   * An SSE answer's first event with data, which must arrive within sseTimeoutMs and the first
   * MAX_ANSWER_BYTES. The stream is left to the server to end (the request's own timeout cuts one
   * that never does; a caller that holds a stream open on purpose cancels it).
   */
  async function firstEvent(step: HandshakeStep, res: Reply): Promise<{ data?: string; text: string }> {
    let sseTimedOut = false;
    let tooLarge = false;
    let text = "";
    let bytes = 0;
    const timer = setTimeout(() => {
      sseTimedOut = true;
      res.cancel();
    }, sseTimeoutMs);
    const data = await new Promise<string | undefined>((resolve) => {
      const onData = (chunk: Buffer) => {
        res.capture.received(chunk);
        text += chunk.toString("utf8");
        bytes += chunk.length;
        if (bytes > MAX_ANSWER_BYTES) {
          tooLarge = true;
          res.cancel(); // bounded: a stream that never ends an event cannot make the run hold more
          return;
        }
        const first = text
          .split(/\r?\n\r?\n/)
          .slice(0, -1)
          .map((event) => event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n"))
          .find(Boolean);
        if (first === undefined) return;
        res.res.off("data", onData); // the answer is in; let the server end its stream, do not cut it
        resolve(first);
      };
      res.res.on("data", onData);
      res.res.once("error", () => {});
      res.res.once("close", () => resolve(undefined));
    });
    clearTimeout(timer);
    if (data !== undefined) return { data, text };
    if (tooLarge) throw new StepFailure(step, `the SSE answer (${res.status}) sent more than ${MAX_ANSWER_BYTES} bytes without a complete event`);
    if (sseTimedOut) throw new StepFailure(step, `the SSE answer (${res.status}) sent no event within ${sseTimeoutMs} ms`);
    if (!res.res.complete) throw new StepFailure(step, `the SSE answer (${res.status}) was cut${res.timedOut() ? `: no event within ${timeoutMs} ms` : ""}`);
    return { text };
  }

  /** The 401's resource_metadata URL, when the challenge has one (an absolute URL, or the probe fails). */
  function challengeOf(probe: RpcReply): string | undefined {
    const challenge = exposed(probe.headers, "www-authenticate") ? probe.headers.get("www-authenticate") : null;
    const url = /resource_metadata="([^"]*)"/.exec(challenge ?? "")?.[1];
    if (url !== undefined && !/^https?:\/\//i.test(url)) throw new StepFailure("probe", `resource_metadata ${url} is not an absolute URL`);
    return url;
  }

  return {
    send,
    readText,
    getJson,
    rpc,
    sendToConnector,
    firstEvent,
    challengeOf,
    captures,
    lastStatus,
    dialled,
    /** Lets the run dial one more origin (with allowedOrigins set): one the server's own metadata named. */
    allow(originToAllow: string) {
      const normalised = originOf(originToAllow);
      if (allowed && normalised) allowed.add(normalised);
    },
    /** HTTP requests sent so far. */
    get requests() {
      return requests;
    },
  };
}

/** `url` (resolved against `base` when given) as a URL, or undefined when it is none. */
export function safeUrl(url: string, base?: URL): URL | undefined {
  try {
    return new URL(url, base);
  } catch {
    return undefined;
  }
}

export const originOf = (url: string) => safeUrl(url)?.origin;
