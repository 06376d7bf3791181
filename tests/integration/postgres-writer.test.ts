// The recorder's writer over a real PostgreSQL (Debian's, started here on loopback with a data
// directory of its own): the rows SQLite gets, row for row; a batch sent again after a lost
// acknowledgement changes nothing; and the server stopped and started under load: the writer
// never blocks, retries, and every exchange is either in the database or counted as dropped.
//
// Needs PostgreSQL: skipped with a message where it is missing, a failure under CI=true.
import path from "node:path";
import { randomBytes } from "node:crypto";
import BetterSqlite3 from "better-sqlite3";
import type { Pool } from "pg";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { createClassifier } from "../../analysis/classify.js";
import type { ClassifiedExchange, RawExchange } from "../../analysis/exchange.js";
import { toRecorded } from "../../recording/record.js";
import { createRedactor } from "../../recording/redact.js";
import { postgresSink } from "../../store/postgres-sink.js";
import { exchangeToRow, handshakeToRow, migrate, rowToExchange, type ExchangeRow, type HandshakeRow } from "../../store/schema.js";
import { sqliteSink } from "../../store/sink.js";
import { RecordWriter } from "../../store/writer.js";
import { captured, handshakeOf, rawExchange } from "../helpers/exchanges.js";
import { postgresBinDir, postgresForTests } from "../helpers/postgres.js";
import { tempDir, waitFor } from "../helpers/processes.js";

const IN_CI = process.env.CI === "true";
const MISSING = postgresBinDir() === undefined;
if (MISSING && !IN_CI) console.warn("PostgreSQL tests skipped: PostgreSQL is not installed (apt-get install postgresql); CI=true makes this a failure");

describe.skipIf(MISSING && !IN_CI)("the recorder's writer on PostgreSQL", () => {
  const postgres = postgresForTests();
  const work = tempDir("mcp-lens-pg-writer-");
  afterAll(() => work.cleanup());

  /** A pool on a fresh, migrated database of its own. */
  const freshPool = async (): Promise<Pool> => postgres.pool(await postgres.freshDatabase({ migrated: true }));

  const redactor = createRedactor(randomBytes(32));
  const classify = createClassifier();
  const prepare = (raw: RawExchange): ClassifiedExchange => classify(toRecorded(raw, redactor));
  const raw = (id: number): RawExchange =>
    rawExchange({
      id,
      startedAt: 1_700_000_000_000 + id,
      // As the capture measures them: fractional milliseconds.
      durationMs: 12.345678 + id,
      ttfbMs: 3.25,
      method: "POST",
      path: "/mcp",
      requestHeaders: [["content-type", "application/json"], ["authorization", "Bearer CANARY-pg-writer-token"]],
      requestBody: captured(JSON.stringify({ jsonrpc: "2.0", id, method: "tools/list" })),
      responseHeaders: [["content-type", "application/json"]],
      responseBody: captured(id % 7 === 0 ? `text with a NUL \u0000 inside, #${id}` : JSON.stringify({ jsonrpc: "2.0", id, result: { tools: [] } })),
    });

  const writerOn = (sink: ReturnType<typeof postgresSink>, maxQueue = 10_000) =>
    new RecordWriter<RawExchange>({ sink, logger: pino({ level: "silent" }), prepare, flushIntervalMs: 10, maxQueue });

  it("writes the rows SQLite gets, row for row (fractional durations included); a NUL character becomes U+FFFD", async () => {
    const pool = await freshPool();
    const sqlite = new BetterSqlite3(path.join(work.dir, "same.db"));
    migrate(sqlite);
    // Times as the analyser derives them (the last exchange's start plus its duration): fractional.
    const handshakes = [handshakeOf(1, { exchangeIds: [1, 2, 3], outcome: "succeeded", endedAt: 1_700_000_000_003 + 15.345678 }), handshakeOf(4, { clientName: "nul \u0000 name" })];
    for (const sink of [postgresSink(pool), sqliteSink(sqlite)]) {
      const writer = writerOn(sink);
      for (let id = 1; id <= 50; id++) writer.enqueue(raw(id), 1000);
      writer.enqueueHandshakes(handshakes);
      await writer.close();
      expect(writer.stats()).toMatchObject({ written: 50, dropped: { queue_full: 0, db_error: 0, prepare: 0 } });
    }
    const theirs = (await pool.query<ExchangeRow>("SELECT * FROM exchanges ORDER BY id")).rows;
    const own = sqlite.prepare("SELECT * FROM exchanges ORDER BY id").all() as ExchangeRow[];
    expect(theirs).toHaveLength(50);
    for (const [i, row] of theirs.entries()) {
      const expected = rowToExchange(own[i]!);
      const got = rowToExchange(row);
      if (expected.responseBody.text?.includes("\u0000")) {
        // PostgreSQL's text holds no NUL: the replacement character stands in, the text stays text.
        expect(got.responseBody).toEqual({ ...expected.responseBody, text: expected.responseBody.text.replaceAll("\u0000", "\uFFFD") });
        expect({ ...got, responseBody: null }).toEqual({ ...expected, responseBody: null });
        continue;
      }
      expect(got, `exchange #${row.id}`).toEqual(expected);
      expect(got.durationMs).toBe(12.345678 + row.id);
    }
    expect(JSON.stringify(theirs)).not.toContain("CANARY-pg-writer-token");
    const stored = (await pool.query<HandshakeRow>("SELECT * FROM handshakes ORDER BY id")).rows;
    expect(stored[0]).toEqual(handshakeToRow(handshakes[0]!));
    expect(stored[1]!.client_name).toBe("nul \uFFFD name");
    sqlite.close();
  });

  it("takes a batch sent again (an acknowledgement lost in a restart) without a change, and rewrites a handshake as it grows", async () => {
    const pool = await freshPool();
    const sink = postgresSink(pool);
    const rows = [1, 2, 3].map((id) => exchangeToRow(prepare(raw(id))));
    await sink.write(rows, [handshakeOf(1, { outcome: "in_progress" })]);
    await sink.write(rows, [handshakeOf(1, { outcome: "failed", failedStep: "token" })]);
    expect((await pool.query("SELECT count(*)::int AS n FROM exchanges")).rows[0]).toEqual({ n: 3 });
    expect((await pool.query("SELECT outcome, failed_step FROM handshakes")).rows).toEqual([{ outcome: "failed", failed_step: "token" }]);
  });

  it("takes more handshakes in one batch than one statement's parameters allow, and drops a row no index can hold", async () => {
    const pool = await freshPool();
    const sink = postgresSink(pool);
    // 5,000 handshakes × 14 columns: over PostgreSQL's 65,535 parameters a statement.
    await sink.write([], Array.from({ length: 5_000 }, (_, i) => handshakeOf(i + 1, {})));
    expect((await pool.query("SELECT count(*)::int AS n FROM handshakes")).rows[0]).toEqual({ n: 5_000 });
    // A client's 8 KiB of random Mcp-Session-Id: too large for the session index's btree entry.
    const hostile = exchangeToRow(prepare(raw(9_001)));
    const rejected = await Promise.resolve(sink.write([{ ...hostile, session_id: randomBytes(6_000).toString("base64") }], [])).catch((err: unknown) => err);
    expect(rejected).toBeInstanceOf(Error);
    expect(sink.failure(rejected)).toBe("drop");
    expect(sink.code(rejected)).toMatch(/^54/);
  });

  it("says what an error means: the connection gone is retried, a statement PostgreSQL rejects is dropped", async () => {
    const sink = postgresSink(await freshPool());
    expect(sink.failure(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }))).toBe("retry");
    expect(sink.failure(new Error("Connection terminated unexpectedly"))).toBe("retry");
    expect(sink.failure(Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }))).toBe("retry");
    expect(sink.failure(Object.assign(new Error("could not extend file"), { code: "53100" }))).toBe("full");
    expect(sink.failure(Object.assign(new Error("invalid byte sequence"), { code: "22021" }))).toBe("drop");
    expect(sink.failure(new TypeError("Cannot read properties of null (reading 'write')"))).toBe("retry"); // the driver on a dead socket
  });

  it("keeps recording while PostgreSQL is stopped and started under load: nothing blocks, nothing is lost uncounted", { timeout: 60_000 }, async () => {
    const pool = await freshPool();
    const writer = writerOn(postgresSink(pool), 1_500);
    const total = 3_000;
    let sawFailing = false;
    let accepted = 0;
    // Bounded: 60 rounds of 50 exchanges, 5 ms apart; the server is down from round 20 to round 40.
    for (let round = 0; round < total / 50; round++) {
      if (round === 20) postgres.server().stop();
      if (round === 40) postgres.server().start();
      for (let i = 1; i <= 50; i++) if (writer.enqueue(raw(round * 50 + i), 1000)) accepted++;
      sawFailing ||= writer.stats().failing;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await waitFor(() => writer.stats().queued === 0 && !writer.stats().failing, "the queue written after the restart", 20_000);
    const stats = writer.stats();
    expect(sawFailing).toBe(true);
    expect(stats.lastError).toBeTruthy();
    const count = (await pool.query("SELECT count(*)::int AS n FROM exchanges")).rows[0].n as number;
    expect(count).toBe(stats.written);
    expect(stats.written, JSON.stringify(stats)).toBe(accepted);
    expect(stats.written + stats.dropped.queue_full, JSON.stringify(stats)).toBe(total);
    expect(stats.dropped.db_error).toBe(0);
    await writer.close();
  });
});
