// The admin port: kept off the public port so health and (later) metrics are never
// exposed through nginx by accident.
import http from "node:http";
import type { RawExchange } from "./exchange.js";
import type { RecordWriter } from "./store/writer.js";

export interface AdminDeps {
  writer: RecordWriter<RawExchange>;
  inFlight: () => number;
  upstream: string;
}

const startedAt = Date.now();

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(text);
}

export function createAdminServer(deps: AdminDeps): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && (path === "/health" || path === "/healthz")) {
      // Healthy while traffic flows: a failing recorder is reported, not fatal.
      sendJson(res, 200, {
        status: "ok",
        uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
        upstream: deps.upstream,
        inFlight: deps.inFlight(),
        recorder: deps.writer.stats(),
      });
      return;
    }
    sendJson(res, 404, { error: "not_found", message: "admin endpoints: GET /health" });
  });
}
