// Streams under stress: an upstream slower than --upstream-timeout between SSE events, and
// a thousand clients that abort mid-stream. Nothing may be cut that should live, and nothing
// may leak (upstream sockets, file descriptors) once clients are gone.
import { readdirSync } from "node:fs";
import http from "node:http";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

const UPSTREAM_TIMEOUT_MS = 300;
const ABORTS = 1000;
const ABORT_BATCH = 100;

let upstream: TestUpstream;
let lens: RunningLens;
const tmp = tempDir();
const dbPath = `${tmp.dir}/lens.db`;

beforeAll(async () => {
  upstream = await startUpstream((req, res) => {
    const url = new URL(req.url!, "http://x");
    const count = Number(url.searchParams.get("n") ?? 3);
    const gap = Number(url.searchParams.get("gap") ?? 10);
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.flushHeaders();
    let sent = 0;
    const timer = setInterval(() => {
      res.write(`data: {"n":${sent}}\n\n`);
      if (++sent === count) {
        clearInterval(timer);
        res.end();
      }
    }, gap);
    res.on("close", () => clearInterval(timer));
  });
  lens = await startLensProcess({ upstream: upstream.url, dbPath, args: ["--upstream-timeout", String(UPSTREAM_TIMEOUT_MS), "--flush-interval", "20"] });
});

afterAll(async () => {
  await lens?.stop();
  await upstream?.close();
  tmp.cleanup();
});

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** GETs an SSE stream and destroys the request on its first event. */
function abortAfterFirstEvent(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { accept: "text/event-stream" } }, (res) => {
      res.once("data", () => {
        req.destroy();
        resolve();
      });
    });
    req.on("error", (error: NodeJS.ErrnoException) => (error.code === "ECONNRESET" ? resolve() : reject(error)));
  });
}

describe("SSE streams under stress", () => {
  it("keeps a stream whose events come slower than --upstream-timeout, and records every event", async () => {
    const gap = UPSTREAM_TIMEOUT_MS * 2;
    const started = Date.now();
    const res = await request(lens.url + `/slow-sse?n=3&gap=${gap}`, { headers: { accept: "text/event-stream" } });
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(3 * gap - 50);
    expect(res.body.toString().match(/^data: /gm)).toHaveLength(3);
    const row = await waitFor(() => {
      const db = new Database(dbPath, { readonly: true });
      try {
        return db.prepare("SELECT status, upstream_error, aborted, sse_events FROM exchanges WHERE path = '/slow-sse'").get();
      } finally {
        db.close();
      }
    }, "the slow stream's row");
    expect(row).toEqual({ status: 200, upstream_error: null, aborted: 0, sse_events: 3 });
  });

  it(`lets ${ABORTS} clients abort mid-SSE: upstream sockets and file descriptors return to the baseline`, async () => {
    // Baseline with the keep-alive pool warm, as in steady traffic.
    await request(lens.url + "/warm?n=1&gap=1");
    await new Promise((r) => setTimeout(r, 200));
    const fdsBefore = openFds(lens.child.pid!);
    const upstreamBefore = upstream.connections();

    let peakUpstream = 0;
    for (let i = 0; i < ABORTS; i += ABORT_BATCH) {
      await Promise.all(Array.from({ length: ABORT_BATCH }, () => abortAfterFirstEvent(lens.url + "/abort?n=100000&gap=10")));
      peakUpstream = Math.max(peakUpstream, upstream.connections());
    }

    await waitFor(() => upstream.connections() <= upstreamBefore, `upstream connections back to ${upstreamBefore}`, 10_000);
    await waitFor(() => openFds(lens.child.pid!) <= fdsBefore, `mcp-lens file descriptors back to ${fdsBefore}`, 10_000);
    console.log(
      `${ABORTS} aborts mid-SSE: upstream connections ${upstreamBefore} → ${upstream.connections()} (peak seen ${peakUpstream}), ` +
        `mcp-lens fds ${fdsBefore} → ${openFds(lens.child.pid!)}`,
    );

    // Every one is recorded as a stream the client left. The wait is bounded, not timed (speed is
    // the bench's): with the suite's other files loading both cores, recording 1000 streams once
    // took longer than waitFor's default 5 s.
    const counts = { recorded: 0, aborted: 0, withEvents: 0 };
    const aborted = await waitFor(() => {
      const db = new Database(dbPath, { readonly: true });
      try {
        const row = db
          .prepare("SELECT count(*) AS recorded, sum(aborted) AS aborted, sum(sse_events >= 1) AS withEvents FROM exchanges WHERE path = '/abort'")
          .get() as typeof counts;
        Object.assign(counts, row);
        const n = (db.prepare("SELECT count(*) AS n FROM exchanges WHERE path = '/abort' AND aborted = 1 AND sse_events >= 1").get() as { n: number }).n;
        return n === ABORTS ? n : null;
      } finally {
        db.close();
      }
    }, `${ABORTS} aborted streams recorded`, 20_000).catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(counts)}`);
    });
    expect(aborted).toBe(ABORTS);
    const health = JSON.parse((await request(lens.adminUrl + "/health")).body.toString());
    expect(health.inFlight).toBe(0);
  });
});
