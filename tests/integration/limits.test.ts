// The public port's limits against hostile clients: slow bodies cut after --request-timeout (with
// their upstream sockets), upstream sockets capped by --upstream-max-sockets, connections past
// --max-connections refused; streams never cut by the body timeout; request smuggling refused.
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

const REQUEST_TIMEOUT_MS = 1000;
const SLOW_CLIENTS = 100;
const UPSTREAM_MAX_SOCKETS = 40;
const MAX_CONNECTIONS = 20;

let upstream: TestUpstream;
let lens: RunningLens;
const tmp = tempDir();

beforeAll(async () => {
  upstream = await startUpstream((req, res) => {
    if (req.url === "/sse") {
      // Five events, 400 ms apart: the stream outlives --request-timeout twice over.
      res.writeHead(200, { "content-type": "text/event-stream" });
      let sent = 0;
      const timer = setInterval(() => {
        res.write(`data: ${++sent}\n\n`);
        if (sent === 5) {
          clearInterval(timer);
          res.end();
        }
      }, 400);
      return;
    }
    res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
  });
  lens = await startLensProcess({
    upstream: upstream.url,
    dbPath: `${tmp.dir}/lens.db`,
    args: ["--header-timeout", "500", "--request-timeout", String(REQUEST_TIMEOUT_MS), "--upstream-max-sockets", String(UPSTREAM_MAX_SOCKETS)],
  });
});

afterAll(async () => {
  await lens?.stop();
  await upstream?.close();
  tmp.cleanup();
});

interface RawResult {
  status: number | null;
  text: string;
  closedAfterMs: number;
}

/** Sends raw bytes on a fresh connection; resolves when the proxy closes it (bounded). */
function raw(url: string, bytes: string, deadlineMs = 5000): Promise<RawResult> {
  return new Promise((resolve) => {
    const { hostname, port } = new URL(url);
    const started = Date.now();
    const socket = net.connect(Number(port), hostname);
    let text = "";
    const deadline = setTimeout(() => socket.destroy(), deadlineMs);
    socket.on("data", (d: Buffer) => (text += d.toString("latin1")));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(deadline);
      const status = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: status ? Number(status[1]) : null, text, closedAfterMs: Date.now() - started });
    });
    socket.write(bytes);
  });
}

describe("slow clients", () => {
  it(`cuts ${SLOW_CLIENTS} slow-body requests after --request-timeout, and frees their upstream sockets`, async () => {
    const baseline = upstream.connections();
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, upstream.connections())), 20);
    const head = "POST /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    const results = await Promise.all(Array.from({ length: SLOW_CLIENTS }, () => raw(lens.url, `${head}{"jsonrpc":`)));
    clearInterval(sampler);
    for (const r of results) {
      expect(r.status, r.text).toBe(408);
      expect(r.text).toContain("did not arrive within 1000 ms");
      expect(r.closedAfterMs).toBeLessThan(REQUEST_TIMEOUT_MS + 2000);
    }
    // The upstream held at most --upstream-max-sockets of them, and holds none now.
    expect(peak).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(UPSTREAM_MAX_SOCKETS);
    await waitFor(() => upstream.connections() <= baseline, "the upstream sockets to be released", 3000);
    expect((await request(lens.url + "/after")).status).toBe(200);
  });

  it("never cuts a response stream that outlives --request-timeout", async () => {
    const res = await request(lens.url + "/sse", { headers: { accept: "text/event-stream" } });
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe("data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5\n\n");
  });
});

describe("connection cap", () => {
  it(`closes connections beyond --max-connections (${MAX_CONNECTIONS}) and counts them`, async () => {
    const capped = await startLensProcess({ upstream: upstream.url, dbPath: `${tmp.dir}/capped.db`, args: ["--max-connections", String(MAX_CONNECTIONS)] });
    const { port } = new URL(capped.url);
    const open = (): Promise<{ socket: net.Socket; closed: Promise<void> }> =>
      new Promise((resolve) => {
        const socket = net.connect(Number(port), "127.0.0.1");
        socket.on("error", () => {});
        const closed = new Promise<void>((r) => socket.once("close", () => r()));
        socket.once("connect", () => resolve({ socket, closed }));
      });
    try {
      const held = [];
      for (let i = 0; i < MAX_CONNECTIONS; i++) held.push(await open());
      await new Promise((r) => setTimeout(r, 100)); // accepted by the proxy, not just the kernel
      const extra = await Promise.all(Array.from({ length: 5 }, open));
      const outcome = (c: { closed: Promise<void> }) => Promise.race([c.closed.then(() => "closed"), new Promise((r) => setTimeout(() => r("open"), 1500))]);
      expect(await Promise.all(extra.map(outcome))).toEqual(Array(5).fill("closed"));
      expect(await outcome(held[0]!)).toBe("open");
      for (const c of held) c.socket.destroy();
      // Room again once they are gone.
      await waitFor(async () => (await request(capped.url + "/again").catch(() => ({ status: 0 }))).status === 200, "a connection to be served");
      const metrics = (await request(capped.adminUrl + "/metrics")).body.toString();
      expect(metrics).toMatch(/mcp_lens_connections_dropped_total [5-9]/);
    } finally {
      await capped.stop();
    }
  });
});

describe("request smuggling", () => {
  const smuggled = "GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  const variants: Array<[string, string]> = [
    ["Content-Length with Transfer-Encoding (CL.TE)", `Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`],
    ["two different Content-Lengths", `Content-Length: 2\r\nContent-Length: ${2 + smuggled.length}\r\n\r\n{}${smuggled}`],
    ["Transfer-Encoding: xchunked", `Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${smuggled}`],
    ["a space before the colon", `Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${smuggled}`],
    ["chunked, then identity", `Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${smuggled}`],
    ["a line folded into Transfer-Encoding", `Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${smuggled}`],
  ];
  it.each(variants)("refuses %s with 400, and nothing reaches the upstream", async (_name, rest) => {
    const before = upstream.received.length;
    const result = await raw(lens.url, `POST /smuggle HTTP/1.1\r\nHost: 127.0.0.1\r\n${rest}`, 3000);
    expect(result.status, result.text).toBe(400);
    expect(result.text.match(/(^|\n)HTTP\/1\.1 \d{3} /g), "one answer: no second request was read").toHaveLength(1);
    expect(upstream.received.slice(before).map((r) => r.url)).toEqual([]);
  });
});
