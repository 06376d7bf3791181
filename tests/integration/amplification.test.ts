// Decompression amplification: an upstream (or a client) sends truncated gzip bombs, each a
// --max-body-sized prefix of a stream that inflates ~1000×. What the recorder decodes must stay
// within the recording cap, and the decoded bytes, not the compressed ones, count against the
// writer's memory bound: memory and the database stay small, whatever the ratio.
import { readFileSync, statSync } from "node:fs";
import zlib from "node:zlib";
import BetterSqlite3 from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

const BOMBS = 300;
const CONCURRENCY = 16;
const MAX_BODY = 64 * 1024;

/** Peak and current resident set of a process, in bytes (Linux /proc). */
function memoryOf(pid: number): { hwm: number; rss: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)![1]) * 1024;
  return { hwm: kib("VmHWM"), rss: kib("VmRSS") };
}

describe("truncated gzip bombs", () => {
  const tmp = tempDir();
  const dbPath = `${tmp.dir}/lens.db`;
  let upstream: TestUpstream;
  let lens: RunningLens;
  // 96 MiB of zeros gzip to ~94 KiB: the first 64 KiB inflate to ~64 MiB.
  const bomb = zlib.gzipSync(Buffer.alloc(96 * 1024 * 1024), { level: 9 }).subarray(0, MAX_BODY);

  beforeAll(async () => {
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { "content-type": "text/plain", "content-encoding": "gzip" });
      res.end(bomb);
    });
    lens = await startLensProcess({ upstream: upstream.url, dbPath, args: ["--flush-interval", "20", "--max-body", String(MAX_BODY)] });
  });

  afterAll(async () => {
    await lens?.stop();
    await upstream?.close();
    tmp.cleanup();
  });

  it("decodes at most --max-body of each, keeps memory and the database small, and records them all", async () => {
    const before = memoryOf(lens.child.pid!);
    let next = 0;
    const worker = async () => {
      while (next < BOMBS) {
        next++;
        await request(`${lens.url}/bomb`, { method: "POST", headers: { "content-type": "text/plain", "content-encoding": "gzip" }, body: bomb });
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const recorded = await waitFor(
      async () => {
        const health = JSON.parse((await request(`${lens.adminUrl}/health`)).body.toString()) as { recorder?: { written?: number; queued?: number } };
        const db = new BetterSqlite3(dbPath, { readonly: true });
        const n = (db.prepare("SELECT count(*) AS n FROM exchanges").get() as { n: number }).n;
        db.close();
        return n >= BOMBS || (health.recorder?.queued === 0 && n > 0) ? n : 0;
      },
      "the bombs recorded",
      15_000,
    );
    const after = memoryOf(lens.child.pid!);
    const db = new BetterSqlite3(dbPath, { readonly: true });
    const largest = db.prepare("SELECT max(length(req_body)) AS req, max(length(res_body)) AS res FROM exchanges").get() as { req: number; res: number };
    db.close();
    const dbBytes = statSync(dbPath).size + statSync(`${dbPath}-wal`, { throwIfNoEntry: false })!.size;
    console.log(`amplification: ${BOMBS} bombs, peak RSS ${Math.round(before.hwm / 2 ** 20)} → ${Math.round(after.hwm / 2 ** 20)} MiB, DB+WAL ${Math.round(dbBytes / 2 ** 20)} MiB, ${recorded} recorded`);
    expect(largest.req).toBeLessThanOrEqual(MAX_BODY);
    expect(largest.res).toBeLessThanOrEqual(MAX_BODY);
    expect(recorded).toBe(BOMBS);
    // Each exchange holds at most 2 × 64 KiB decoded: 300 of them are ~40 MiB of bodies.
    expect(dbBytes).toBeLessThan(120 * 2 ** 20); // the WAL holds a second copy of pages until a checkpoint
    expect(after.hwm - before.hwm).toBeLessThan(160 * 2 ** 20);
  }, 60_000);
});
