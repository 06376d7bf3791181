// The baseline mcp-lens is compared with: http-proxy-3 alone, with the same upstream keep-alive
// agent and no capture, no recording. What is left between the two is mcp-lens's own cost.
// Usage: node --import tsx tests/bench/bare-proxy.ts --port N --upstream http://127.0.0.1:M
import http from "node:http";
import { parseArgs } from "node:util";
import { ProxyServer } from "http-proxy-3";
import { UPSTREAM_AGENT_OPTIONS } from "../../proxy/forward/forward.js";

const { values } = parseArgs({ options: { port: { type: "string" }, upstream: { type: "string" } } });
const port = Number(values.port);
if (!Number.isInteger(port) || port <= 0 || !values.upstream) throw new Error("usage: bare-proxy.ts --port N --upstream URL");

const proxy = new ProxyServer({ target: values.upstream, agent: new http.Agent(UPSTREAM_AGENT_OPTIONS), xfwd: false });
// Node sends response headers with the first body bytes; an event stream's client must see them
// at once (mcp-lens flushes them too), or a held stream is not open until its first heartbeat.
proxy.on("proxyRes", (proxyRes, _req, res) => {
  if (String(proxyRes.headers["content-type"] ?? "").includes("text/event-stream")) setImmediate(() => res.flushHeaders());
});

const server = http.createServer((req, res) =>
  proxy.web(req, res, {}, () => {
    if (res.headersSent) res.destroy();
    else res.writeHead(502, { "content-type": "text/plain" }).end("bad gateway");
  }),
);
server.requestTimeout = 0; // like mcp-lens: streams may stay open
server.listen(port, "127.0.0.1");

for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => process.exit(0));
