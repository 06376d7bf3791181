// The admin port against a hostile web page, and what the proxy leaves on disk and in its
// output: cross-site WebSocket hijacking (Origin), DNS rebinding (Host), oversized frames and
// subscriber floods on /live, credentials in --upstream, and the modes of the files it creates.
// The proxy runs without --admin-token: the checks must hold even then.
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { CANARY_MARK } from "../helpers/artifacts.js";
import { runCli, startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

const PASSWORD = `${CANARY_MARK}upstreamPass42`;
const MAX_SUBSCRIBERS = 2;

let upstream: TestUpstream;
let lens: RunningLens;
const tmp = tempDir();
// A directory mcp-lens creates itself: its mode is checked too.
const dbPath = path.join(tmp.dir, "fresh", "lens.db");

beforeAll(async () => {
  upstream = await startUpstream((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}'));
  const withCredentials = upstream.url.replace("http://", `http://lensuser:${PASSWORD}@`);
  lens = await startLensProcess({
    upstream: withCredentials,
    dbPath,
    args: ["--flush-interval", "20", "--live-max-subscribers", String(MAX_SUBSCRIBERS), "--admin-allowed-hosts", "scraper.internal:9464,metrics-host"],
  });
  // One exchange, so the WAL files exist and the feed has something behind it.
  expect((await request(lens.url + "/ping")).status).toBe(200);
});

afterAll(async () => {
  await lens?.stop();
  await upstream?.close();
  tmp.cleanup();
});

const liveUrl = () => lens.adminUrl.replace("http", "ws") + "/live";
const adminPort = () => new URL(lens.adminUrl).port;

/** Opens /live; resolves once the feed said hello, rejects with the refusal. */
function subscribe(options: WebSocket.ClientOptions = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(liveUrl(), options);
    socket.once("message", () => resolve(socket));
    socket.once("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => reject(new Error(`${res.statusCode} ${body}`)));
    });
    socket.once("error", reject);
  });
}

async function subscribers(): Promise<number> {
  const health = JSON.parse((await request(lens.adminUrl + "/health")).body.toString()) as { liveSubscribers: number };
  return health.liveSubscribers;
}

describe("admin port against web pages", () => {
  it("refuses a WebSocket /live from a page on another origin (cross-site WebSocket hijacking)", async () => {
    await expect(subscribe({ origin: "https://evil.example" })).rejects.toThrow(/^403 .*origin_not_allowed/);
    // Plain HTTP too: a page's fetch of /metrics or /health.
    const res = await request(lens.adminUrl + "/metrics", { headers: { origin: "https://evil.example" } });
    expect(res.status).toBe(403);
    expect(JSON.parse(res.body.toString()).error).toBe("origin_not_allowed");
  });

  it("refuses a Host that is not an IP, localhost or an allowed name (DNS rebinding)", async () => {
    await expect(subscribe({ headers: { host: `evil.example:${adminPort()}` } })).rejects.toThrow(/^421 .*host_not_allowed/);
    for (const endpoint of ["/health", "/metrics"]) {
      const res = await request(lens.adminUrl + endpoint, { headers: { host: `evil.example:${adminPort()}` } });
      expect(res.status).toBe(421);
      expect(JSON.parse(res.body.toString()).error).toBe("host_not_allowed");
    }
    // What scrapers and operators send is still answered.
    for (const host of [`127.0.0.1:${adminPort()}`, `localhost:${adminPort()}`, `[::1]:${adminPort()}`, "scraper.internal:9464", "metrics-host:1234"]) {
      expect((await request(lens.adminUrl + "/metrics", { headers: { host } })).status, host).toBe(200);
    }
    expect((await request(lens.adminUrl + "/metrics", { headers: { host: "scraper.internal:80" } })).status).toBe(421);
    const ok = await subscribe({ headers: { host: `localhost:${adminPort()}` } });
    ok.close();
    await waitFor(async () => (await subscribers()) === 0, "the subscriber to leave");
  });

  it("closes a subscriber that sends a large frame, without taking its memory", async () => {
    const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${lens.child.pid}/status`, "utf8"))![1]);
    const before = rssKb();
    const socket = await subscribe();
    const closed = new Promise<number>((resolve) => socket.once("close", (code) => resolve(code)));
    socket.on("error", () => {});
    socket.send(Buffer.alloc(8 * 1024 * 1024, 0x61));
    const code = await Promise.race([closed, new Promise((r) => setTimeout(() => r("still open"), 5000))]);
    // 1009 "message too big", or 1006 when the proxy cut the socket while the client still wrote.
    expect([1006, 1009]).toContain(code);
    expect(rssKb() - before).toBeLessThan(32 * 1024);
    await waitFor(async () => (await subscribers()) === 0, "the subscriber to be gone");
  });

  it(`refuses subscribers beyond --live-max-subscribers (${MAX_SUBSCRIBERS})`, async () => {
    const held = [];
    for (let i = 0; i < MAX_SUBSCRIBERS; i++) held.push(await subscribe());
    await expect(subscribe()).rejects.toThrow(/^503 .*too_many_subscribers/);
    held.pop()!.close();
    await waitFor(async () => (await subscribers()) === MAX_SUBSCRIBERS - 1, "a slot to free up");
    held.push(await subscribe());
    for (const socket of held) socket.close();
    await waitFor(async () => (await subscribers()) === 0, "the subscribers to leave");
  });

  it("says in --help what the admin port exposes without --admin-token", async () => {
    const help = (await runCli(["proxy", "--help"])).stdout;
    expect(help).toMatch(/without --admin-token/i);
    expect(help).toMatch(/recorded (request and response )?bodies/i);
    for (const flag of ["--admin-allowed-hosts", "--admin-allowed-origins", "--live-max-subscribers", "--request-timeout", "--max-connections", "--upstream-max-sockets"]) {
      expect(help).toContain(flag);
    }
  });
});

describe("credentials and files", () => {
  it("forwards to an --upstream with credentials, but never shows its password", async () => {
    expect(upstream.received.length).toBeGreaterThan(0); // forwarding works as before
    const health = JSON.parse((await request(lens.adminUrl + "/health")).body.toString()) as { upstream: string };
    expect(health.upstream).toBe(upstream.url.replace("http://", "http://lensuser:***@"));
    expect(lens.stdout.find((line) => line.includes("mcp-lens proxy listening"))).toContain("lensuser:***@");
    expect(lens.stdout.join("\n")).not.toContain(CANARY_MARK);
    const db = new Database(dbPath, { readonly: true });
    try {
      const meta = db.prepare("SELECT key, value FROM meta").all() as Array<{ key: string; value: string }>;
      expect(meta.find((m) => m.key === "upstream")?.value).toContain("lensuser:***@");
      expect(JSON.stringify(meta)).not.toContain(CANARY_MARK);
    } finally {
      db.close();
    }
  });

  it("creates the database, its -wal and -shm 0600 and its directory 0700", () => {
    const mode = (file: string) => statSync(file).mode & 0o777;
    expect(mode(path.dirname(dbPath)).toString(8)).toBe("700");
    for (const file of [dbPath, `${dbPath}-wal`, `${dbPath}-shm`]) expect(mode(file).toString(8), file).toBe("600");
  });
});
