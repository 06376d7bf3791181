// A client's `Connection: close` goes upstream as sent; the upstream connection must then close too.
// It did not: a real MCP server (the v1 SDK) answers its SSE with keep-alive, Node put the socket
// back in mcp-lens's pool while the server closed it, and the next request on it got a bare 400.
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startErasServer, type ErasServer } from "../fixtures/eras-server.js";
import { startLensProcess, tempDir, type RunningLens } from "../helpers/processes.js";

interface Answer {
  status: number;
  session: string | undefined;
  body: string;
}

function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: "POST",
        agent: false,
        timeout: 10_000,
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream", connection: "close", ...headers },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (text += chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, session: res.headers["mcp-session-id"] as string | undefined, body: text }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

describe("a client that closes its connection after each request", () => {
  let server: ErasServer;
  let lens: RunningLens;
  const tmp = tempDir();

  beforeAll(async () => {
    server = await startErasServer({ era: "legacy" });
    lens = await startLensProcess({ upstream: server.url, dbPath: `${tmp.dir}/lens.db` });
  });
  afterAll(async () => {
    await lens?.stop();
    await server?.close();
    tmp.cleanup();
  });

  it("gets every answer the server gives, request after request", async () => {
    const url = `${lens.url}/mcp`;
    const init = await post(url, { jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "closer", version: "1" } } });
    expect(init.status).toBe(200);
    expect(init.session).toBeDefined();
    const headers = { "mcp-session-id": init.session!, "mcp-protocol-version": "2025-06-18" };
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await post(url, { jsonrpc: "2.0", method: "notifications/initialized" }, headers)).status);
    const list = await post(url, { jsonrpc: "2.0", id: 1, method: "tools/list" }, headers);
    expect(statuses).toEqual([202, 202, 202, 202]);
    expect(list.status).toBe(200);
    expect(list.body).toContain("echo");
  });
});
