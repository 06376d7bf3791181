// Forwarding must be invisible: same bytes, same headers, same timing, as without mcp-lens.
import http from "node:http";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import Database from "better-sqlite3";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { REFUSING_UPSTREAM, request, startUpstream, type Received, type TestUpstream } from "../helpers/upstream.js";

// Headers that legitimately differ hop by hop. Framing too: an empty chunked body may be
// re-framed as Content-Length: 0; the body bytes themselves are compared separately.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "date", "transfer-encoding", "content-length"]);
const PROXY_ADDED_REQUEST = new Set(["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "content-length"]);

function endToEndHeaders(raw: string[], skip: Set<string>): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < raw.length; i += 2) if (!skip.has(raw[i]!.toLowerCase())) pairs.push([raw[i]!, raw[i + 1]!]);
  return pairs;
}

// Host differs only because the direct and proxied requests go to different ports.
function normalizeReceived(r: Received) {
  return { method: r.method, url: r.url, headers: endToEndHeaders(r.rawHeaders, new Set([...HOP_BY_HOP, ...PROXY_ADDED_REQUEST, "host"])), body: r.body.toString("hex") };
}

function headerValue(raw: string[], name: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) return raw[i + 1];
  return undefined;
}

describe("forwarding through mcp-lens", () => {
  let upstream: TestUpstream;
  let lens: RunningLens;
  const tmp = tempDir();
  let wss: WebSocketServer;
  const sseWrites: number[] = [];

  beforeAll(async () => {
    upstream = await startUpstream((req, res, body) => {
      const url = new URL(req.url!, "http://x");
      switch (url.pathname) {
        case "/mcp-unauthorized":
          res.writeHead(401, {
            "WWW-Authenticate": 'Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"',
            "Content-Type": "application/json",
          });
          res.end('{"error":"invalid_token"}');
          return;
        case "/redirect":
          res.writeHead(302, { Location: "https://claude.ai/api/mcp/auth_callback?code=abc&state=xyz" }).end();
          return;
        case "/moved":
          res.writeHead(308, { Location: "/mcp/" }).end();
          return;
        case "/session":
          res.writeHead(200, {
            "Content-Type": "application/json",
            "Mcp-Session-Id": "3f1e-session",
            "MCP-Protocol-Version": "2025-06-18",
            "Access-Control-Allow-Origin": "https://claude.ai",
            "Access-Control-Expose-Headers": "Mcp-Session-Id",
            "Set-Cookie": ["a=1; Path=/", "b=2; HttpOnly"],
            "X-Custom-Case": "Kept",
          });
          res.end(body.length ? body : '{"ok":true}');
          return;
        case "/preflight":
          res.writeHead(204, {
            "Access-Control-Allow-Origin": "https://claude.ai",
            "Access-Control-Allow-Methods": "GET, POST, DELETE",
            "Access-Control-Allow-Headers": "authorization, content-type, mcp-protocol-version, mcp-session-id",
            "Access-Control-Max-Age": "86400",
          });
          res.end();
          return;
        case "/echo":
          res.writeHead(200, { "Content-Type": "application/octet-stream" }).end(body);
          return;
        case "/sse": {
          const count = Number(url.searchParams.get("n") ?? 5);
          const gap = Number(url.searchParams.get("gap") ?? 50);
          res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
          res.flushHeaders();
          let sent = 0;
          const timer = setInterval(() => {
            sseWrites.push(performance.timeOrigin + performance.now());
            res.write(`id: ${sent}\nevent: message\ndata: {"n":${sent}}\n\n`);
            if (++sent === count) {
              clearInterval(timer);
              res.end();
            }
          }, gap);
          res.on("close", () => clearInterval(timer));
          return;
        }
        case "/hang":
          return; // never answers
        case "/reset":
          res.writeHead(200, { "Content-Type": "application/json" });
          res.write('{"partial":');
          setTimeout(() => res.socket?.destroy(), 20);
          return;
        default:
          res.writeHead(404, { "Content-Type": "text/plain" }).end("not found");
      }
    });
    wss = new WebSocketServer({ server: upstream.server, path: "/ws" });
    wss.on("connection", (socket) => socket.on("message", (data) => socket.send(`echo:${data.toString()}`)));
    lens = await startLensProcess({
      upstream: upstream.url,
      dbPath: `${tmp.dir}/lens.db`,
      args: ["--upstream-timeout", "400", "--flush-interval", "20"],
    });
  });

  afterAll(async () => {
    await lens?.stop();
    wss?.close();
    await upstream?.close();
    tmp.cleanup();
  });

  async function bothWays(path: string, options: Parameters<typeof request>[1] = {}) {
    upstream.received.length = 0;
    const direct = await request(upstream.url + path, options);
    const proxied = await request(lens.url + path, options);
    return { direct, proxied, receivedDirect: upstream.received[0]!, receivedProxied: upstream.received[1]! };
  }

  it.each([
    ["401 with WWW-Authenticate", "/mcp-unauthorized", { method: "POST", headers: { "content-type": "application/json" }, body: '{"jsonrpc":"2.0","id":1,"method":"initialize"}' }],
    ["302 with Location", "/redirect?x=1&y=%20z", {}],
    ["308 to /mcp/", "/moved", { method: "POST", body: "{}" }],
    ["session, protocol version, CORS and cookies", "/session", { method: "POST", headers: { "Mcp-Session-Id": "3f1e-session", "MCP-Protocol-Version": "2025-06-18", Origin: "https://claude.ai", Cookie: "a=1" }, body: '{"jsonrpc":"2.0","method":"notifications/initialized"}' }],
    ["OPTIONS preflight", "/preflight", { method: "OPTIONS", headers: { Origin: "https://claude.ai", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, mcp-protocol-version" } }],
    ["invalid UTF-8 and binary bodies", "/echo", { method: "POST", headers: { "content-type": "application/json" }, body: Buffer.from([0xff, 0xfe, 0x7b, 0x00, 0xc3, 0x28]) }],
    ["404 text", "/nope?q=1", {}],
  ])("passes %s through unchanged", async (_name, path, options) => {
    const { direct, proxied, receivedDirect, receivedProxied } = await bothWays(path, options);
    expect(proxied.status).toBe(direct.status);
    expect(endToEndHeaders(proxied.rawHeaders, HOP_BY_HOP)).toEqual(endToEndHeaders(direct.rawHeaders, HOP_BY_HOP));
    expect(proxied.body.equals(direct.body)).toBe(true);
    expect(normalizeReceived(receivedProxied)).toEqual(normalizeReceived(receivedDirect));
    expect(headerValue(receivedProxied.rawHeaders, "host")).toBe(new URL(lens.url).host);
  });

  it("streams a 5 MiB body both ways byte for byte", async () => {
    const body = Buffer.alloc(5 * 1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
    const { proxied } = await bothWays("/echo", { method: "POST", body });
    expect(proxied.body.equals(body)).toBe(true);
  });

  it("sets X-Forwarded-* for the upstream when the peer is not a front proxy it trusts", async () => {
    upstream.received.length = 0;
    await request(lens.url + "/echo", { headers: { "X-Forwarded-Proto": "https", "X-Forwarded-Host": "coda.example.com" } });
    const headers = Object.fromEntries(endToEndHeaders(upstream.received[0]!.rawHeaders, new Set()).map(([k, v]) => [k.toLowerCase(), v]));
    // 127.0.0.1 is trusted by default (loopback): what it says is kept, its address appended.
    expect(headers["x-forwarded-proto"]).toBe("https");
    expect(headers["x-forwarded-host"]).toBe("coda.example.com");
    expect(headers["x-forwarded-for"]).toBe("127.0.0.1");
  });

  it("delivers each SSE event as soon as the upstream writes it, with X-Accel-Buffering: no", async () => {
    sseWrites.length = 0;
    const arrivals: number[] = [];
    const headers = await new Promise<http.IncomingHttpHeaders>((resolve, reject) => {
      http
        .get(lens.url + "/sse?n=10&gap=40", { agent: false }, (res) => {
          let buffered = "";
          res.on("data", (chunk: Buffer) => {
            buffered += chunk.toString();
            let end: number;
            while ((end = buffered.indexOf("\n\n")) !== -1) {
              arrivals.push(performance.timeOrigin + performance.now());
              buffered = buffered.slice(end + 2);
            }
          });
          res.on("end", () => resolve(res.headers));
        })
        .on("error", reject);
    });
    expect(headers["x-accel-buffering"]).toBe("no");
    expect(arrivals).toHaveLength(10);
    const delays = arrivals.map((t, i) => t - sseWrites[i]!).sort((a, b) => a - b);
    // Each event arrives well before the next is written (40 ms later): nothing is buffered.
    expect(delays[Math.floor(delays.length / 2)]!).toBeLessThan(10);
    expect(delays[delays.length - 1]!).toBeLessThan(35);
  });

  it("proxies WebSocket upgrades", async () => {
    const socket = new WebSocket(lens.url.replace("http", "ws") + "/ws");
    const reply = await new Promise<string>((resolve, reject) => {
      socket.once("open", () => socket.send("hello"));
      socket.once("message", (data) => resolve(data.toString()));
      socket.once("error", reject);
    });
    expect(reply).toBe("echo:hello");
    socket.close();
  });

  it("closes the upstream request at once when the client aborts mid-SSE, leaking no socket", async () => {
    const baseline = upstream.connections();
    const aborts = 40;
    await Promise.all(
      Array.from({ length: aborts }, () =>
        new Promise<void>((resolve, reject) => {
          const req = http.get(lens.url + "/sse?n=1000&gap=10", { agent: false }, (res) => {
            res.once("data", () => {
              req.destroy();
              resolve();
            });
          });
          req.on("error", (error: NodeJS.ErrnoException) => (error.code === "ECONNRESET" ? resolve() : reject(error)));
        }),
      ),
    );
    await waitFor(() => upstream.connections() <= baseline, `upstream connections back to ${baseline}`, 3000);
    expect(upstream.connections()).toBeLessThanOrEqual(baseline);
  });

  it("closes the upstream request when the client aborts mid-request", async () => {
    const baseline = upstream.connections();
    const req = http.request(lens.url + "/echo", { method: "POST", agent: false, headers: { "content-length": "100000" } });
    req.on("error", () => {});
    req.write(Buffer.alloc(1000));
    await new Promise((r) => setTimeout(r, 50));
    req.destroy();
    await waitFor(() => upstream.connections() <= baseline, "upstream connection closed", 3000);
  });

  it("answers 504 with a JSON-RPC error when the upstream sends no response in time", async () => {
    const res = await request(lens.url + "/hang", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"jsonrpc":"2.0","id":7,"method":"tools/list"}',
    });
    expect(res.status).toBe(504);
    expect(res.headers["x-mcp-lens-error"]).toBe("upstream_timeout");
    const body = JSON.parse(res.body.toString());
    expect(body).toMatchObject({ jsonrpc: "2.0", id: 7, error: { code: -32000, data: { reason: "upstream_timeout" } } });
    expect(body.error.message).toContain("no response within 400 ms");
  });

  it("cuts the client connection when the upstream resets mid-response", async () => {
    await expect(request(lens.url + "/reset")).rejects.toThrow();
  });

  it("records every exchange, including failures and aborts", async () => {
    const db = new Database(`${tmp.dir}/lens.db`, { readonly: true });
    try {
      const rows = await waitFor(
        () => {
          const r = db.prepare("SELECT path, status, upstream_error, aborted, websocket FROM exchanges").all() as Array<{
            path: string;
            status: number | null;
            upstream_error: string | null;
            aborted: number;
            websocket: number;
          }>;
          return r.some((x) => x.path === "/reset") ? r : null;
        },
        "the reset exchange to be recorded",
      );
      expect(rows.find((r) => r.path === "/hang")).toMatchObject({ status: 504, upstream_error: "upstream_timeout" });
      expect(rows.find((r) => r.path === "/reset")).toMatchObject({ status: 200, upstream_error: "upstream_reset" });
      expect(rows.find((r) => r.path === "/ws")).toMatchObject({ status: 101, websocket: 1 });
      expect(rows.filter((r) => r.path === "/sse" && r.aborted === 1).length).toBeGreaterThanOrEqual(40);
    } finally {
      db.close();
    }
  });
});

describe("upstream down", () => {
  it("answers 502 naming the cause, as JSON-RPC on MCP routes and plain JSON elsewhere", async () => {
    const tmp = tempDir();
    const lens = await startLensProcess({ upstream: REFUSING_UPSTREAM, dbPath: `${tmp.dir}/lens.db` });
    try {
      const mcp = await request(lens.url + "/mcp", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"jsonrpc":"2.0","id":"a1","method":"initialize","params":{}}',
      });
      expect(mcp.status).toBe(502);
      expect(JSON.parse(mcp.body.toString())).toMatchObject({ jsonrpc: "2.0", id: "a1", error: { data: { reason: "upstream_refused" } } });
      const wellKnown = await request(lens.url + "/.well-known/oauth-protected-resource");
      expect(wellKnown.status).toBe(502);
      const body = JSON.parse(wellKnown.body.toString());
      expect(body.error).toBe("upstream_refused");
      expect(body.message).toContain(new URL(REFUSING_UPSTREAM).host);
      // Both recorded, with the cause.
      const rows = await waitFor(() => {
        const db = new Database(`${tmp.dir}/lens.db`, { readonly: true });
        try {
          const all = db.prepare("SELECT status, upstream_error FROM exchanges ORDER BY id").all();
          return all.length === 2 ? all : null;
        } finally {
          db.close();
        }
      }, "both exchanges recorded");
      expect(rows).toEqual([
        { status: 502, upstream_error: "upstream_refused" },
        { status: 502, upstream_error: "upstream_refused" },
      ]);
    } finally {
      await lens.stop();
      tmp.cleanup();
    }
  });
});

describe("X-Forwarded-* from a peer that is not trusted", () => {
  it("replaces them, so a client cannot make the upstream believe it came over https", async () => {
    const tmp = tempDir();
    const upstream = await startUpstream((_req, res) => res.end("ok"));
    const lens = await startLensProcess({ upstream: upstream.url, dbPath: `${tmp.dir}/lens.db`, args: ["--trusted-proxies", "none"] });
    try {
      await request(lens.url + "/x", { headers: { "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example", "X-Forwarded-For": "6.6.6.6" } });
      const seen = upstream.received[0]!.rawHeaders;
      expect(headerValue(seen, "x-forwarded-proto")).toBe("http");
      expect(headerValue(seen, "x-forwarded-host")).toBe(new URL(lens.url).host);
      expect(headerValue(seen, "x-forwarded-for")).toBe("127.0.0.1");
    } finally {
      await lens.stop();
      await upstream.close();
      tmp.cleanup();
    }
  });
});

describe("a WebSocket client that leaves while a refused upgrade is answered", () => {
  // http-proxy re-emits the client socket's EPIPE on the proxy object, where an unhandled
  // "error" threw and took the whole proxy down: any client could stop it with a few requests.
  it("does not take the proxy down", { timeout: 20_000 }, async () => {
    const tmp = tempDir();
    const upstream = await startUpstream((_req, res) => res.end("plain answer to an upgrade\n".repeat(4096)));
    const lens = await startLensProcess({ upstream: upstream.url, dbPath: `${tmp.dir}/lens.db` });
    let exitedWith: number | null | undefined;
    void lens.exited.then((code) => (exitedWith = code));
    try {
      const { port } = new URL(lens.url);
      for (let round = 0; round < 3; round++) {
        await Promise.all(
          Array.from({ length: 10 }, () =>
            new Promise<void>((resolve) => {
              const socket = net.connect(Number(port), "127.0.0.1", () => {
                socket.write("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
                setTimeout(() => socket.destroy(), 5);
              });
              socket.on("error", () => {});
              socket.on("close", () => resolve());
            }),
          ),
        );
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(exitedWith).toBeUndefined();
      expect((await request(lens.url + "/still-there")).status).toBe(200);
    } finally {
      await lens.stop();
      await upstream.close();
      tmp.cleanup();
    }
  });
});

describe("SSE response headers", () => {
  it("reach the client as soon as the upstream sends them, before any event", async () => {
    const tmp = tempDir();
    const upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.flushHeaders(); // the first event comes much later (or never)
      setTimeout(() => res.end("data: late\n\n"), 1500);
    });
    const lens = await startLensProcess({ upstream: upstream.url, dbPath: `${tmp.dir}/lens.db` });
    try {
      const started = performance.now();
      const headersAfter = await new Promise<number>((resolve, reject) => {
        http.get(lens.url + "/stream", { agent: false }, (res) => {
          resolve(performance.now() - started);
          res.resume();
        }).on("error", reject);
      });
      expect(headersAfter).toBeLessThan(500);
    } finally {
      await lens.stop();
      await upstream.close();
      tmp.cleanup();
    }
  });
});
