// A minimal MCP upstream for the bench, as its own process (pinned beside the proxy under test):
//   POST /mcp            a small JSON-RPC result
//   GET  /count          how many requests it has answered so far (not counting /count)
//   POST /echo           the request body streamed back (10 MiB bodies: never buffered)
//   GET  /big?mib=N      N MiB streamed
//   GET  /sse?n=&interval=  n events, one per interval ms, data = performance.now() at the write
//   GET  /hold           an event stream held open, a heartbeat comment every 5 s
// Usage: node --import tsx tests/bench/upstream-server.ts --port N
import http from "node:http";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { port: { type: "string" } } });
const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0) throw new Error("usage: upstream-server.ts --port N");

const MCP_RESULT = JSON.stringify({ jsonrpc: "2.0", id: 7, result: { content: [{ type: "text", text: "ok" }] } });
const CHUNK = Buffer.alloc(64 * 1024, "x");
const HEARTBEAT_MS = 5000;

let answered = 0;
const held = new Set<http.ServerResponse>();

function answerMcp(req: http.IncomingMessage, res: http.ServerResponse): void {
  req.resume();
  req.once("end", () => res.writeHead(200, { "content-type": "application/json", "content-length": MCP_RESULT.length }).end(MCP_RESULT));
}

function echo(req: http.IncomingMessage, res: http.ServerResponse): void {
  res.writeHead(200, { "content-type": req.headers["content-type"] ?? "application/octet-stream" });
  req.pipe(res);
}

/** Writes N MiB honouring backpressure, so the upstream holds one chunk, not the whole body. */
function big(res: http.ServerResponse, mib: number): void {
  let left = Math.max(0, Math.round(mib * 16)); // 64 KiB chunks
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": left * CHUNK.length });
  const pump = () => {
    while (left > 0) {
      left--;
      if (!res.write(CHUNK)) return void res.once("drain", pump);
    }
    res.end();
  };
  pump();
}

function openEventStream(res: http.ServerResponse): void {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  res.flushHeaders();
}

function timedEvents(res: http.ServerResponse, count: number, intervalMs: number): void {
  openEventStream(res);
  let seq = 0;
  const timer = setInterval(() => {
    res.write(`id: ${seq}\ndata: ${performance.now()}\n\n`);
    if (++seq >= count) {
      clearInterval(timer);
      res.end();
    }
  }, intervalMs);
  res.once("close", () => clearInterval(timer));
}

function hold(res: http.ServerResponse): void {
  openEventStream(res);
  held.add(res);
  res.once("close", () => held.delete(res));
}

// One timer for every held stream, not one each.
setInterval(() => {
  for (const res of held) res.write(": heartbeat\n\n");
}, HEARTBEAT_MS).unref();

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://upstream");
  if (url.pathname === "/count") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ answered }));
  answered++;
  if (req.method === "POST" && url.pathname === "/mcp") return answerMcp(req, res);
  if (req.method === "POST" && url.pathname === "/echo") return echo(req, res);
  if (url.pathname === "/big") return big(res, Number(url.searchParams.get("mib") ?? 10));
  if (url.pathname === "/sse") return timedEvents(res, Number(url.searchParams.get("n") ?? 10), Number(url.searchParams.get("interval") ?? 20));
  if (url.pathname === "/hold") return hold(res);
  req.resume();
  res.writeHead(404).end();
});
// Longer than any proxy's idle keep-alive (nginx keeps upstream connections 60 s): the proxy,
// not the upstream, closes idle sockets, so no request races a closing connection.
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.requestTimeout = 0;
server.listen(port, "127.0.0.1");

for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => process.exit(0));
