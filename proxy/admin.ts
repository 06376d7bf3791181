// The admin port: kept off the public port so health, metrics and the live feed are never
// exposed through nginx by accident. With --admin-token, /metrics and /live require it.
import { timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { LiveFeed } from "./live.js";
import type { WriterStats } from "./store/writer.js";

export interface AdminDeps {
  /** The recorder's state now (asked of its thread; the metrics read the answer too). */
  recorder: () => Promise<WriterStats>;
  inFlight: () => number;
  upstream: string;
  /** The whole Prometheus scrape: this process's registry and the recorder thread's. */
  metrics: () => Promise<string>;
  metricsContentType: string;
  live: LiveFeed;
  /** Required as a bearer token (or ?token=) for /metrics and /live when set. */
  token: string;
}

const startedAt = Date.now();

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(body));
}

function authorized(req: http.IncomingMessage, token: string): boolean {
  if (!token) return true;
  const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "")?.[1];
  const given = bearer ?? new URL(req.url ?? "/", "http://admin").searchParams.get("token") ?? "";
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function createAdminServer(deps: AdminDeps): http.Server {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET") return sendJson(res, 405, { error: "method_not_allowed" });
    if (path === "/health" || path === "/healthz") {
      // Healthy while traffic flows: a failing recorder is reported, not fatal.
      void deps.recorder().then((recorder) =>
        sendJson(res, 200, {
          status: "ok",
          uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
          upstream: deps.upstream,
          inFlight: deps.inFlight(),
          liveSubscribers: deps.live.subscribers,
          recorder,
        }),
      );
      return;
    }
    if (path === "/metrics") {
      if (!authorized(req, deps.token)) return sendJson(res, 401, { error: "unauthorized", message: "send the admin token as a bearer token" });
      deps
        .metrics()
        .then((text) => res.writeHead(200, { "content-type": deps.metricsContentType }).end(text))
        .catch((error: Error) => sendJson(res, 500, { error: "metrics_failed", message: error.message }));
      return;
    }
    sendJson(res, 404, { error: "not_found", message: "admin endpoints: GET /health, GET /metrics, WebSocket /live" });
  });
  server.on("upgrade", (req, socket, head) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/live" || !authorized(req, deps.token)) {
      socket.end(`HTTP/1.1 ${path === "/live" ? "401 Unauthorized" : "404 Not Found"}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
      return;
    }
    deps.live.accept(req, socket, head);
  });
  return server;
}
