// Operating mcp-lens: CLI errors, health, a DB that cannot be written, graceful shutdown.
import { statSync } from "node:fs";
import http from "node:http";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startLensProcess, tempDir, waitFor } from "../helpers/processes.js";
import { request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

function countRows(dbPath: string): number {
  const db = new Database(dbPath, { readonly: true });
  try {
    return (db.prepare("SELECT count(*) AS n FROM exchanges").get() as { n: number }).n;
  } finally {
    db.close();
  }
}

async function health(adminUrl: string): Promise<{ status: string; recorder: { written: number; prunedForRoom: number; failing: boolean; dropped: Record<string, number>; queued: number; lastError: string | null } }> {
  const res = await request(adminUrl + "/health");
  expect(res.status).toBe(200);
  return JSON.parse(res.body.toString());
}

/** Sends `count` requests with bounded concurrency; resolves with the statuses. */
async function load(url: string, count: number, concurrency = 8): Promise<number[]> {
  const statuses: number[] = [];
  let next = 0;
  const agent = new http.Agent({ keepAlive: true });
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        next++;
        const res = await new Promise<number>((resolve, reject) => {
          http
            .request(url, { method: "POST", agent, headers: { "content-type": "application/json" } }, (r) => {
              r.resume();
              r.on("end", () => resolve(r.statusCode!));
            })
            .on("error", reject)
            .end('{"jsonrpc":"2.0","id":1,"method":"ping"}');
        });
        statuses.push(res);
      }
    }),
  );
  agent.destroy();
  return statuses;
}

describe("command line", () => {
  it("explains itself", async () => {
    const main = await runCli(["--help"]);
    expect(main.code).toBe(0);
    expect(main.stdout).toContain("mcp-lens <command>");
    const proxy = await runCli(["proxy", "--help"]);
    expect(proxy.code).toBe(0);
    for (const text of ["--upstream", "MCP_LENS_UPSTREAM", "--trust-proxy", "MCP_LENS_TRUST_PROXY", "--admin-port", "--db", "MCP_LENS_DB"]) {
      expect(proxy.stdout).toContain(text);
    }
  });

  it.each([
    [["proxy", "--bogus"], "Unknown option '--bogus'"],
    [["proxy", "--port", "99999"], "--port must be a whole number from 0 to 65535"],
    [["proxy", "--upstream", "ftp://x"], "--upstream must be an http:// or https:// URL"],
    [["frobnicate"], "unknown command 'frobnicate'"],
  ])("rejects %j with one line and exit code 2", async (args, message) => {
    const result = await runCli(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("rejects a bad environment variable by name", async () => {
    const result = await runCli(["proxy"], { MCP_LENS_PORT: "eighty" });
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe("mcp-lens: MCP_LENS_PORT must be a whole number from 0 to 65535, got 'eighty'");
  });

  it("fails with one line when the DB path cannot be opened", async () => {
    const result = await runCli(["proxy", "--db", "/nonexistent-dir/sub/lens.db", "--port", "0", "--admin-port", "0"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("/nonexistent-dir/sub/lens.db");
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });
});

describe("when the database cannot be written", () => {
  let upstream: TestUpstream;
  beforeAll(async () => {
    upstream = await startUpstream((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end('{"jsonrpc":"2.0","id":1,"result":{}}'));
  });
  afterAll(() => upstream.close());

  it("keeps serving while another writer locks the DB, holds what it can, counts the rest", async () => {
    const tmp = tempDir();
    const dbPath = `${tmp.dir}/lens.db`;
    const lens = await startLensProcess({ upstream: upstream.url, dbPath, args: ["--flush-interval", "20", "--max-queue", "100"] });
    try {
      expect(await load(lens.url + "/mcp", 20)).toEqual(Array(20).fill(200));
      await waitFor(() => countRows(dbPath) === 20, "20 rows");

      const locker = new Database(dbPath);
      locker.exec("BEGIN EXCLUSIVE");
      const statuses = await load(lens.url + "/mcp", 250);
      expect(statuses.filter((s) => s === 200)).toHaveLength(250);
      const during = await health(lens.adminUrl);
      expect(during.status).toBe("ok");
      expect(during.recorder.failing).toBe(true);
      expect(during.recorder.lastError).toContain("SQLITE_BUSY");
      expect(during.recorder.queued).toBe(100);
      expect(during.recorder.dropped.queue_full).toBe(150);
      locker.exec("COMMIT");
      locker.close();

      // What was held is written once the lock is gone; what was dropped is accounted for.
      await waitFor(() => countRows(dbPath) === 120, "the 100 held rows after the lock is released", 10_000);
      const after = await health(lens.adminUrl);
      expect(after.recorder.failing).toBe(false);
      expect(after.recorder.written + after.recorder.dropped.queue_full!).toBe(270);
      expect(lens.stdout.some((l) => l.includes('"level":40') && l.includes("SQLITE_BUSY"))).toBe(true);
      await waitFor(() => lens.stdout.some((l) => l.includes("recording to the database resumed")), "the resume log line");
    } finally {
      await lens.stop();
      tmp.cleanup();
    }
  });

  it("keeps serving when the DB is full, and keeps the newest traffic by pruning the oldest", async () => {
    const tmp = tempDir();
    const dbPath = `${tmp.dir}/lens.db`;
    const cap = 1024 * 1024;
    const lens = await startLensProcess({
      upstream: upstream.url,
      dbPath,
      args: ["--flush-interval", "20", "--db-max-size", String(cap), "--max-body", "1k"],
    });
    try {
      const statuses = await load(lens.url + "/mcp?" + "p=".padEnd(900, "x"), 2000);
      expect(statuses.filter((s) => s === 200)).toHaveLength(2000);
      const h = await waitFor(async () => {
        const x = await health(lens.adminUrl);
        return x.recorder.queued === 0 && x.recorder.written === 2000 ? x : null;
      }, "every exchange to be written", 15_000);
      expect(h.recorder.prunedForRoom).toBeGreaterThan(0);
      expect(statSync(dbPath).size).toBeLessThanOrEqual(cap);
      const db = new Database(dbPath, { readonly: true });
      const { newest, n } = db.prepare("SELECT max(id) AS newest, count(*) AS n FROM exchanges").get() as { newest: number; n: number };
      db.close();
      expect(n).toBeLessThan(2000);
      expect(newest).toBe(2000);
    } finally {
      await lens.stop();
      tmp.cleanup();
    }
  });
});

describe("graceful shutdown", () => {
  it("on SIGTERM finishes in-flight requests and loses no recorded exchange", async () => {
    const upstream = await startUpstream((req, res) => {
      const delay = req.url === "/slow" ? 300 : 0;
      setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end("{}"), delay);
    });
    const tmp = tempDir();
    const dbPath = `${tmp.dir}/lens.db`;
    // A long flush interval: rows still queued at the signal must be flushed by the shutdown.
    const lens = await startLensProcess({ upstream: upstream.url, dbPath, args: ["--flush-interval", "60000"] });
    try {
      const answered = await load(lens.url + "/fast", 300);
      expect(answered).toHaveLength(300);
      const slow = request(lens.url + "/slow");
      await new Promise((r) => setTimeout(r, 50));
      lens.child.kill("SIGTERM");
      expect((await slow).status).toBe(200);
      expect(await lens.exited).toBe(0);
      expect(countRows(dbPath)).toBe(301);
    } finally {
      await lens.stop();
      await upstream.close();
      tmp.cleanup();
    }
  });
});
