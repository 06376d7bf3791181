// Hand-written upstreams for tests that need exact control of bytes, timing and failures.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { listenOnLoopback } from "../fixtures/http-json.js";

export interface Received {
  method: string;
  url: string;
  rawHeaders: string[];
  body: Buffer;
}

export interface TestUpstream {
  url: string;
  server: http.Server;
  received: Received[];
  /** Open TCP connections from the proxy. */
  connections(): number;
  close(): Promise<void>;
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void;

/** Starts an upstream that reads each request body fully, records it, then calls the handler. */
export async function startUpstream(handler: Handler): Promise<TestUpstream> {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      received.push({ method: req.method!, url: req.url!, rawHeaders: req.rawHeaders, body });
      handler(req, res, body);
    });
  });
  const { url, connections, close } = await listenOnLoopback(server);
  return { url, server, received, connections, close };
}

/**
 * An upstream that refuses connections for sure: port 1 (tcpmux) is outside the ephemeral
 * range, so no test server can take it, unlike a port picked and freed (closedPort).
 */
export const REFUSING_UPSTREAM = "http://127.0.0.1:1";

/** A port with nothing listening on it now (another process may take it later). */
export async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Sends one request with node:http (not fetch: we want raw headers and exact bytes). */
export function request(
  url: string,
  options: { method?: string; headers?: Record<string, string | string[]>; body?: Buffer | string } = {},
): Promise<{ status: number; rawHeaders: string[]; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? "GET", headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode!, rawHeaders: res.rawHeaders, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(options.body);
  });
}
