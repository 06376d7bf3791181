// The admin port: kept off the public port so health, metrics and the live feed are never
// exposed through nginx by accident. With --admin-token, /metrics and /live require it.
// Every endpoint first refuses what a web page in the operator's browser could send
// (proxy/admin-access.ts): a foreign Host (DNS rebinding) or a foreign Origin.
import { timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { Duplex } from "node:stream";
import { refusal, type AdminAccess } from "./admin-access.js";
import type { LiveFeed } from "./live.js";
import type { WriterStats } from "../../store/writer.js";

export interface AdminDeps {
  /** The recorder's state now (asked of its thread; the metrics read the answer too). */
  recorder: () => Promise<WriterStats>;
  inFlight: () => number;
  /** The upstream as shown to anyone: without its password (see withoutPassword). */
  upstream: string;
  /** The whole Prometheus scrape: this process's registry and the recorder thread's. */
  metrics: () => Promise<string>;
  metricsContentType: string;
  live: LiveFeed;
  /** Required as a bearer token (or ?token=) for /metrics and /live when set. */
  token: string;
  /** The Host names and Origins allowed besides IP literals and localhost. */
  access: AdminAccess;
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

/** An answer on a raw socket, for upgrade requests refused before any WebSocket exists. */
export function refuseUpgrade(socket: Duplex, status: number, body: Record<string, string>): void {
  const text = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`,
  );
}

export function createAdminServer(deps: AdminDeps): http.Server {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const refused = refusal(req.headers, deps.access);
    if (refused) return sendJson(res, refused.status, { error: refused.error, message: refused.message });
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
    const refused = refusal(req.headers, deps.access);
    if (refused) return refuseUpgrade(socket, refused.status, { error: refused.error, message: refused.message });
    if (path !== "/live") return refuseUpgrade(socket, 404, { error: "not_found", message: "the admin WebSocket is /live" });
    if (!authorized(req, deps.token)) return refuseUpgrade(socket, 401, { error: "unauthorized", message: "send the admin token as a bearer token" });
    if (deps.live.full) {
      return refuseUpgrade(socket, 503, {
        error: "too_many_subscribers",
        message: `the live feed has its maximum of ${deps.live.maxSubscribers} subscribers (--live-max-subscribers); the database has everything they see`,
      });
    }
    deps.live.accept(req, socket, head);
  });
  return server;
}
