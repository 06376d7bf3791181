// The recorder thread on its own (the built worker, as mcp-lens runs it): exchanges handed
// over are all written by close, counted in the traffic metrics, and a thread that cannot start says why.
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import type { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import pino from "pino";
import { describe, expect, it } from "vitest";
import type { RawExchange } from "../../analysis/exchange.js";
import type * as LogModule from "../../common/log.js";
import type * as RecorderModule from "../../proxy/record/recorder.js";
import type * as SettingsModule from "../../proxy/settings.js";
import type * as DbModule from "../../store/db.js";
import { tempDir } from "../helpers/artifacts.js";
import { captured, rawExchange } from "../helpers/exchanges.js";

// The built modules (the worker thread runs dist/), typed as their sources.
const built = (module: string) => import(new URL(`../../dist/${module}`, import.meta.url).href);
const { Recorder, recorderConfig } = (await built("proxy/record/recorder.js")) as typeof RecorderModule;
const { proxySettings } = (await built("proxy/settings.js")) as typeof SettingsModule;
const { openDatabase } = (await built("store/db.js")) as typeof DbModule;
const { createLogger } = (await built("common/log.js")) as typeof LogModule;

/** A client's tools/list over MCP, with a bearer token (a canary: it must never be stored). */
function raw(id: number): RawExchange {
  return rawExchange({
    id,
    startedAt: Date.now(),
    method: "POST",
    host: "127.0.0.1:8080",
    path: "/mcp",
    requestHeaders: [["Content-Type", "application/json"], ["Authorization", "Bearer CANARYrecorder0123456789abcdef"]],
    requestBody: captured(`{"jsonrpc":"2.0","id":${id},"method":"tools/list"}`),
    responseHeaders: [["content-type", "application/json"]],
    responseBody: captured(`{"jsonrpc":"2.0","id":${id},"result":{"tools":[]}}`),
  });
}

const config = (db: string) => recorderConfig(proxySettings({ db, flushInterval: 20, logLevel: "silent" }));

describe("the recorder thread", () => {
  it("writes every exchange handed over, counts them in the traffic metrics, and redacts in its own thread", async () => {
    const tmp = tempDir();
    const dbPath = `${tmp.dir}/lens.db`;
    openDatabase(dbPath).close(); // as mcp-lens does: migrations before the thread starts
    let recorded = 0;
    const recorder = await Recorder.start(config(dbPath), { onRecorded: (count) => (recorded += count) }, createLogger("silent"));
    // Bodies as views into a bigger buffer, as captured from a socket read.
    for (let id = 1; id <= 500; id++) {
      const exchange = raw(id);
      const text = exchange.requestBody.bytes;
      const socketRead = Buffer.alloc(65536);
      text.copy(socketRead, 1000);
      exchange.requestBody.bytes = socketRead.subarray(1000, 1000 + text.length);
      recorder.enqueue(exchange);
    }
    const fresh = await recorder.freshStats();
    expect(fresh.queued + fresh.written).toBe(500);
    // Counted once classified, which the writer does as it flushes (every 20 ms here).
    let metrics = "";
    for (let i = 0; i < 100 && !/mcp_lens_requests_total\{[^}]*\} 500\b/.test(metrics); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      metrics = await recorder.trafficMetrics();
    }
    expect(metrics).toContain('mcp_lens_requests_total{kind="mcp_post",method="POST",status="200"} 500');
    expect(metrics).toContain('mcp_lens_jsonrpc_requests_total{method="tools/list",outcome="result"} 500');
    await recorder.close();
    expect(await recorder.trafficMetrics()).toBe(""); // closed: a scrape gets the rest without waiting

    expect(recorder.stats()).toMatchObject({ written: 500, queued: 0, failing: false, dropped: { queue_full: 0, db_error: 0, prepare: 0 } });
    expect(recorded).toBe(500);
    const db = new Database(dbPath, { readonly: true });
    const rows = db.prepare("SELECT req_body, req_headers FROM exchanges ORDER BY id").all() as Array<{ req_body: string; req_headers: string }>;
    db.close();
    expect(rows).toHaveLength(500);
    expect(rows[41]!.req_body).toBe('{"jsonrpc":"2.0","id":42,"method":"tools/list"}');
    expect(rows[0]!.req_headers).toContain("[redacted:");
  });

  it.skipIf(process.platform !== "linux")("runs as a SCHED_BATCH job, the forwarding thread as any other (it never preempts forwarding)", async () => {
    const tmp = tempDir();
    const dbPath = `${tmp.dir}/lens.db`;
    openDatabase(dbPath).close();
    const policies = () =>
      readdirSync(`/proc/${process.pid}/task`).map((tid) => /policy: (\w+)/.exec(execFileSync("chrt", ["--pid", tid], { encoding: "utf8" }))?.[1]);
    const before = policies().filter((p) => p === "SCHED_BATCH").length;
    const recorder = await Recorder.start(config(dbPath), { onRecorded: () => {} }, createLogger("silent"));
    try {
      expect(policies().filter((p) => p === "SCHED_BATCH").length).toBe(before + 1);
      // This thread (the test's, like the proxy's event loop) keeps the default policy.
      expect(/policy: (\w+)/.exec(execFileSync("chrt", ["--pid", String(process.pid)], { encoding: "utf8" }))?.[1]).toBe("SCHED_OTHER");
    } finally {
      await recorder.close();
    }
  });

  it("counts what is handed over after close instead of losing it silently", async () => {
    const tmp = tempDir();
    const dbPath = `${tmp.dir}/lens.db`;
    openDatabase(dbPath).close();
    const recorder = await Recorder.start(config(dbPath), { onRecorded: () => {} }, createLogger("silent"));
    await recorder.close();
    recorder.enqueue(raw(1));
    expect(recorder.stats().dropped.db_error).toBe(1);
  });

  it("starts a thread that died again, counts what it held as lost, and records what comes after", async () => {
    const tmp = tempDir();
    const dbPath = `${tmp.dir}/lens.db`;
    openDatabase(dbPath).close();
    const lines: string[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(line) });
    const recorder = await Recorder.start(config(dbPath), { onRecorded: () => {} }, logger);
    const written = async (count: number) => {
      for (let i = 0; i < 200 && (await recorder.freshStats()).written < count; i++) await new Promise((r) => setTimeout(r, 10));
      return recorder.stats().written;
    };
    for (let id = 1; id <= 10; id++) recorder.enqueue(raw(id));
    expect(await written(10)).toBe(10);

    // The thread goes away as a crash would take it (out of memory, an uncaught error).
    await (recorder as unknown as { worker: Worker }).worker.terminate();
    recorder.enqueue(raw(11));
    expect(recorder.stats()).toMatchObject({ failing: true, written: 10, dropped: { db_error: 1 } });
    expect(recorder.stats().lastError).toMatch(/exited/);
    expect(lines.some((l) => l.includes("the recorder thread died"))).toBe(true);

    for (let i = 0; i < 100 && recorder.stats().failing; i++) await new Promise((r) => setTimeout(r, 50));
    expect(recorder.stats().failing).toBe(false);
    expect(lines.some((l) => l.includes("the recorder thread restarted"))).toBe(true);
    for (let id = 12; id <= 21; id++) recorder.enqueue(raw(id));
    expect(await written(20)).toBe(20); // the totals go on from the thread that died
    await recorder.close();

    const db = new Database(dbPath, { readonly: true });
    const ids = db.prepare("SELECT id FROM exchanges ORDER BY id").pluck().all();
    db.close();
    expect(ids).toEqual([...Array.from({ length: 10 }, (_, i) => i + 1), ...Array.from({ length: 10 }, (_, i) => i + 12)]);
  });

  it("rejects with the reason when its database cannot be opened", async () => {
    await expect(
      Recorder.start(config("/nonexistent-dir/sub/lens.db"), { onRecorded: () => {} }, createLogger("silent")),
    ).rejects.toThrow(/nonexistent-dir/);
  });
});
