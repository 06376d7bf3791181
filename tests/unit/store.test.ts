import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import BetterSqlite3, { type Database } from "better-sqlite3";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import type { Handshake } from "../../analysis/handshake.js";
import { migrationSql } from "../../common/migrations.js";
import { nextExchangeId, openDatabase } from "../../store/db.js";
import { pruneOnce, startRetention } from "../../store/retention.js";
import {
  exchangeRowValues,
  exchangeToRow,
  handshakeToRow,
  INSERT_EXCHANGE_SQL,
  migrate,
  MIGRATIONS,
  rowToExchange,
  SCHEMA_VERSION,
  type ExchangeRow,
  UPSERT_HANDSHAKE_SQL,
} from "../../store/schema.js";
import { settleUnfinishedHandshakes } from "../../store/settle.js";
import { RecordWriter, type RecordWriterOptions } from "../../store/writer.js";
import { sqliteSink } from "../../store/sink.js";
import { classifiedExchange } from "../helpers/exchanges.js";

let dir: string;
const opened: Database[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "mcp-lens-store-"));
});

afterEach(() => {
  vi.useRealTimers();
  for (const db of opened.splice(0)) if (db.open) db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function dbPath(): string {
  return path.join(dir, "lens.db");
}

function open(options?: Parameters<typeof openDatabase>[1]): Database {
  const db = openDatabase(dbPath(), options);
  opened.push(db);
  return db;
}

/** A second, independent connection, as another process would have. */
function otherConnection(): Database {
  const db = new BetterSqlite3(dbPath());
  opened.push(db);
  return db;
}

function captureLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
      done();
    },
  });
  const logger = pino({ level: "debug" }, stream);
  const messages = (level: "warn" | "info" | "error") =>
    lines.filter((l) => l.level === pino.levels.values[level]).map((l) => l.msg);
  return { logger, lines, messages };
}

const exchange = classifiedExchange;

function insert(db: Database, exchanges: ClassifiedExchange[]): void {
  const statement = db.prepare(INSERT_EXCHANGE_SQL);
  db.transaction(() => exchanges.forEach((e) => statement.run(exchangeRowValues(exchangeToRow(e)))))();
}

function rowCount(db: Database): number {
  return (db.prepare("SELECT count(*) AS n FROM exchanges").get() as { n: number }).n;
}

function handshake(id: number, exchangeIds: number[]): Handshake {
  const [first = id, ...rest] = exchangeIds;
  return {
    id,
    clientFamily: "claude.ai",
    clientName: null,
    era: "legacy",
    eraFallback: false,
    registration: "dcr",
    startedAt: 1_000,
    endedAt: 2_000,
    steps: [{ step: "initialize", status: "ok", exchangeIds: [first, ...rest], at: 1_000 }],
    outcome: "in_progress",
    failedStep: null,
    exchangeIds,
    diagnoses: [],
  };
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

describe("openDatabase and migrations", () => {
  it("migrates an empty database and records the version", () => {
    const db = open();
    expect(db.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
    expect(tables).toEqual(["exchanges", "handshakes", "meta"]);
    const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'exchanges'").pluck().all();
    expect(indexes).toEqual(
      expect.arrayContaining(["exchanges_started_at", "exchanges_kind", "exchanges_session_id", "exchanges_client_id", "exchanges_bearer_fp", "exchanges_handshake_id"]),
    );
  });

  it("creates a new file with 16 KiB pages, and opens an existing one with the pages it has", () => {
    const fresh = open();
    expect(fresh.pragma("page_size", { simple: true })).toBe(16_384);
    const file = path.join(dir, "older.db");
    const old = new BetterSqlite3(file);
    old.pragma("page_size = 4096");
    old.pragma("journal_mode = WAL");
    old.exec("CREATE TABLE keep (x)");
    old.close();
    const reopened = openDatabase(file);
    try {
      expect(reopened.pragma("page_size", { simple: true })).toBe(4096);
      expect(reopened.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    } finally {
      reopened.close();
    }
  });

  it("sizes the page cache in KiB once the page size is known, for new and existing files alike", () => {
    // better-sqlite3's default (-16000) sized the cache in the 4 KiB pages a connection opens
    // with, then held 16 KiB pages: ~64 MB a recorder grew into. Set after the size, it is 8 MiB.
    expect(open().pragma("cache_size", { simple: true })).toBe(-8192);
    const file = dbPath();
    openDatabase(file).close();
    const reopened = openDatabase(file);
    try {
      expect(reopened.pragma("page_size", { simple: true })).toBe(16_384);
      expect(reopened.pragma("cache_size", { simple: true })).toBe(-8192);
    } finally {
      reopened.close();
    }
  });

  it("migrates a version 1 database forward without losing rows", () => {
    const file = dbPath();
    const v1 = new BetterSqlite3(file);
    v1.exec(migrationSql(MIGRATIONS[0]!, "sqlite"));
    v1.pragma("user_version = 1");
    v1.prepare("INSERT INTO meta (key, value) VALUES ('kept', 'yes')").run();
    v1.close();
    const db = open();
    expect(db.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    expect(db.prepare("SELECT value FROM meta WHERE key = 'kept'").pluck().get()).toBe("yes");
    expect(db.prepare("SELECT handshake_id FROM exchanges").all()).toEqual([]);
  });

  it("sets the pragmas the proxy relies on", () => {
    const db = open({ maxSizeBytes: 1024 * 1024 });
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(db.pragma("synchronous", { simple: true })).toBe(1);
    expect(db.pragma("busy_timeout", { simple: true })).toBe(50);
    expect(db.pragma("foreign_keys", { simple: true })).toBe(1);
    expect(db.pragma("max_page_count", { simple: true })).toBe((1024 * 1024) / (db.pragma("page_size", { simple: true }) as number));
  });

  it("reopening a current database changes nothing", () => {
    const first = open();
    insert(first, [exchange(1)]);
    first.close();
    const again = open();
    expect(again.pragma("user_version", { simple: true })).toBe(SCHEMA_VERSION);
    expect(rowCount(again)).toBe(1);
    expect(() => migrate(again)).not.toThrow();
  });

  it("refuses a database newer than the code", () => {
    open().pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    expect(() => openDatabase(dbPath())).toThrow(
      `cannot open database ${dbPath()}: database schema version ${SCHEMA_VERSION + 1} is newer than this mcp-lens supports (${SCHEMA_VERSION}); upgrade mcp-lens`,
    );
    expect(() => openDatabase(dbPath(), { readonly: true })).toThrow(/is newer than this mcp-lens supports/);
  });

  it("names the path and the cause in one line when the directory's parent is missing", () => {
    const file = path.join(dir, "nope", "deeper", "x.db");
    expect(() => openDatabase(file)).toThrow(
      new Error(`cannot open database ${file}: directory ${path.join(dir, "nope", "deeper")} does not exist`),
    );
    expect(fs.existsSync(path.join(dir, "nope"))).toBe(false);
  });

  it("creates the database's own directory when its parent exists (./data on a fresh clone)", () => {
    const file = path.join(dir, "data", "x.db");
    openDatabase(file).close();
    expect(fs.existsSync(file)).toBe(true);
  });

  it("names the cause when the parent is a file or the database is missing in read-only mode", () => {
    const notADir = path.join(dir, "file");
    fs.writeFileSync(notADir, "");
    expect(() => openDatabase(path.join(notADir, "x.db"))).toThrow(`cannot open database ${notADir}/x.db: ${notADir} is not a directory`);
    let message = "";
    try {
      openDatabase(dbPath(), { readonly: true });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(new RegExp(`^cannot open database ${dbPath()}: .+`));
    expect(message).not.toContain("\n");
  });

  it("opens read-only without writing", () => {
    insert(open(), [exchange(1)]);
    const reader = openDatabase(dbPath(), { readonly: true });
    opened.push(reader);
    expect(rowCount(reader)).toBe(1);
    expect(() => insert(reader, [exchange(2)])).toThrow(/readonly/);
  });

  it("nextExchangeId continues after the highest stored id", () => {
    const db = open();
    expect(nextExchangeId(db)).toBe(1);
    insert(db, [exchange(1), exchange(41)]);
    expect(nextExchangeId(db)).toBe(42);
  });
});

describe("exchangeToRow / rowToExchange", () => {
  const full = exchange(7, {
    durationMs: 1234.5,
    query: "a=1&b=2",
    status: 401,
    upstreamError: "reset",
    aborted: true,
    websocket: true,
    requestHeaders: [
      ["Authorization", "Bearer [redacted]"],
      ["X-Dup", "1"],
      ["x-dup", "2"],
    ],
    requestBody: { text: "AAEC", encoding: "base64", size: 99_999, truncated: true, decoded: "gzip" },
    responseHeaders: [],
    responseBody: { text: "event: message\ndata: {}\n\n", encoding: "utf8", size: 24, truncated: false, decoded: "br" },
    sseEvents: 3,
    kind: "token",
    facts: {
      userAgent: "claude/1.0",
      origin: "https://claude.ai",
      bearerFingerprint: "fp:abc",
      clientId: "client-1",
      issued: { accessToken: "fp:tok" },
      mcp: { messages: [{ direction: "request", type: "request", method: "initialize", id: 1 }], methods: ["initialize", "tools/list"], sessionIdAssigned: "s-1" },
    },
  });
  const sparse = exchange(8, {
    durationMs: null,
    ttfbMs: null,
    clientAddr: null,
    host: null,
    status: null,
    responseHeaders: null,
    requestBody: { text: null, encoding: "utf8", size: 0, truncated: false, decoded: null },
  });

  it.each([
    ["every field set", full],
    ["nulls everywhere they are allowed", sparse],
  ])("preserves %s through the database", (_name, original) => {
    const db = open();
    insert(db, [original]);
    const row = db.prepare("SELECT * FROM exchanges").get() as ExchangeRow;
    expect(rowToExchange(row)).toEqual(original);
  });

  it("promotes the lookup columns from the facts", () => {
    const row = exchangeToRow(full);
    expect(row).toMatchObject({
      user_agent: "claude/1.0",
      origin: "https://claude.ai",
      session_id: "s-1",
      client_id: "client-1",
      bearer_fp: "fp:abc",
      mcp_method: "initialize",
    });
    expect(exchangeToRow(exchange(1, { facts: { mcp: { messages: [], methods: [], sessionId: "sent", sessionIdAssigned: "new" } } })).session_id).toBe("sent");
    expect(exchangeToRow(sparse)).toMatchObject({ user_agent: null, session_id: null, mcp_method: null, res_headers: null });
  });
});

describe("RecordWriter", () => {
  const writers: Array<RecordWriter<unknown>> = [];
  afterEach(() => {
    for (const w of writers.splice(0)) w.close();
  });

  function writer<T = number>(db: Database, options: Partial<RecordWriterOptions<T>> = {}) {
    const log = captureLogger();
    const recorded: ClassifiedExchange[][] = [];
    const w = new RecordWriter<T>({
      sink: sqliteSink(db),
      logger: log.logger,
      prepare: (id) => exchange(id as number),
      onRecorded: (batch) => recorded.push(batch),
      flushIntervalMs: 60_000, // tests flush explicitly unless they say otherwise
      ...options,
    });
    writers.push(w as RecordWriter<unknown>);
    return { w, log, recorded };
  }

  it("never inserts on enqueue and writes N items in ceil(N / batchSize) transactions", () => {
    const db = open();
    const { w, recorded } = writer(db, { batchSize: 100 });
    for (const id of range(1, 250)) expect(w.enqueue(id, 100)).toBe(true);
    expect(rowCount(db)).toBe(0);
    expect(w.stats()).toMatchObject({ queued: 250, queuedBytes: 25_000, written: 0 });
    w.flush();
    expect(rowCount(db)).toBe(250);
    expect(recorded.map((b) => b.length)).toEqual([100, 100, 50]);
    expect(w.stats()).toMatchObject({ queued: 0, queuedBytes: 0, written: 250, batches: 3, failing: false });
  });

  it("flushes on the next turn once a batch is full, and on its timer otherwise", async () => {
    const db = open();
    const { w } = writer(db, { batchSize: 10 });
    range(1, 10).forEach((id) => w.enqueue(id, 1));
    expect(rowCount(db)).toBe(0);
    await nextTurn();
    expect(rowCount(db)).toBe(10);

    const timed = writer(db, { flushIntervalMs: 10 }).w;
    timed.enqueue(11, 1);
    await vi.waitFor(() => expect(rowCount(db)).toBe(11));
  });

  it("drops an item whose prepare throws and writes the rest", () => {
    const db = open();
    const { w, log } = writer(db, {
      prepare: (id: number) => {
        if (id === 2) throw new Error("redaction bug");
        return exchange(id);
      },
    });
    range(1, 3).forEach((id) => w.enqueue(id, 10));
    w.flush();
    expect(db.prepare("SELECT id FROM exchanges").pluck().all()).toEqual([1, 3]);
    expect(w.stats()).toMatchObject({ written: 2, queuedBytes: 0, dropped: { prepare: 1, queue_full: 0, db_error: 0 } });
    expect(log.messages("error")).toHaveLength(1);
  });

  it("analyses every prepared item as it arrives, the dropped ones too, and stores their handshakes", () => {
    const db = open();
    const analysed: number[] = [];
    const asked: Array<number | undefined> = [];
    const { w } = writer(db, {
      maxQueue: 2,
      analyse: (e) => {
        analysed.push(e.id);
        return 7;
      },
      changedHandshakes: (dropped) => {
        asked.push(dropped?.id);
        return [handshake(7, [...analysed])];
      },
    });
    expect(range(1, 4).map((id) => w.enqueue(id, 10))).toEqual([true, true, false, false]);
    expect(analysed).toEqual([1, 2, 3, 4]); // on enqueue, before any flush
    // Handshakes are built per batch; a dropped exchange is handed over at once, as no lookup finds it.
    expect(asked).toEqual([3, 4]);
    w.flush();
    expect(asked).toEqual([3, 4, undefined]);
    expect(db.prepare("SELECT id, handshake_id FROM exchanges").raw().all()).toEqual([[1, 7], [2, 7]]);
    // The handshake's latest state (after the dropped 3 and 4) is what is stored.
    expect(JSON.parse(db.prepare("SELECT exchange_ids FROM handshakes WHERE id = 7").pluck().get() as string)).toEqual([1, 2, 3, 4]);
    expect(w.stats()).toMatchObject({ written: 2, dropped: { queue_full: 2 } });
  });

  it("stores the handshakes of the last exchanges at close", () => {
    const db = open();
    const placed: number[] = [];
    const { w } = writer(db, {
      analyse: (e) => {
        placed.push(e.id);
        return 7;
      },
      changedHandshakes: () => (placed.length > 0 ? [handshake(7, placed.splice(0))] : []),
    });
    range(1, 2).forEach((id) => w.enqueue(id, 10));
    w.close();
    expect(db.prepare("SELECT id, handshake_id FROM exchanges").raw().all()).toEqual([[1, 7], [2, 7]]);
    expect(JSON.parse(db.prepare("SELECT exchange_ids FROM handshakes WHERE id = 7").pluck().get() as string)).toEqual([1, 2]);
  });

  it("asks for changed handshakes on every tick, while the database fails too, and logs an analysis that throws", async () => {
    const db = open();
    let asked = 0;
    const { w, log } = writer(db, {
      flushIntervalMs: 10,
      changedHandshakes: () => {
        if (++asked === 1) throw new Error("analysis bug");
        return [handshake(9, [1])];
      },
    });
    const locker = otherConnection();
    locker.exec("BEGIN EXCLUSIVE");
    w.enqueue(1, 10);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(asked).toBeGreaterThan(2); // each tick, though the writes wait for the lock
    expect(log.messages("error").some((m) => /could not analyse/.test(String(m)))).toBe(true);
    locker.exec("ROLLBACK");
    w.flush();
    expect(db.prepare("SELECT id FROM handshakes").pluck().all()).toEqual([9]);
    w.close();
  });

  it("drops a batch the database rejects for a reason retrying cannot fix", () => {
    const db = open();
    insert(db, [exchange(1)]);
    const { w } = writer(db, { batchSize: 2 });
    range(1, 4).forEach((id) => w.enqueue(id, 10)); // batch [1, 2] violates the primary key
    w.flush();
    expect(db.prepare("SELECT id FROM exchanges").pluck().all()).toEqual([1, 3, 4]);
    expect(w.stats()).toMatchObject({ written: 2, failing: false, dropped: { db_error: 2 } });
    expect(w.stats().lastError).toMatch(/^SQLITE_CONSTRAINT_PRIMARYKEY/);
  });

  it("bounds the queue by bytes", () => {
    const { w } = writer(open(), { maxQueueBytes: 1000 });
    expect([1, 2, 3, 4].map((id) => w.enqueue(id, 300))).toEqual([true, true, true, false]);
    expect(w.stats()).toMatchObject({ queued: 3, queuedBytes: 900, dropped: { queue_full: 1 } });
  });

  it("retains items while another connection holds the lock, then writes them all", () => {
    const db = open();
    let now = 1_000_000;
    const { w, log } = writer(db, { batchSize: 4, maxQueue: 10, now: () => now });
    const locker = otherConnection();
    locker.exec("BEGIN EXCLUSIVE");

    range(1, 4).forEach((id) => w.enqueue(id, 10));
    expect(() => w.flush()).not.toThrow();
    expect(w.stats()).toMatchObject({ written: 0, queued: 4, failing: true, lastErrorAt: now });
    expect(w.stats().lastError).toMatch(/^SQLITE_BUSY/);

    // The retained batch counts toward the bound: 6 more fit, the rest are dropped.
    const accepted = range(5, 14).map((id) => w.enqueue(id, 10));
    expect(accepted.filter(Boolean)).toHaveLength(6);
    for (let i = 0; i < 5; i++) {
      now += 1000;
      w.flush();
    }
    expect(w.stats()).toMatchObject({ written: 0, queued: 10, queuedBytes: 100, dropped: { queue_full: 4 } });
    expect(log.messages("warn")).toEqual(["cannot write to the recording database: retrying, traffic is unaffected"]);
    expect(log.lines.find((l) => l.level === 40)).toMatchObject({ code: "SQLITE_BUSY", dropped: { queue_full: 0 } });

    now += 60_000;
    w.flush();
    expect(log.messages("warn")).toHaveLength(2); // a reminder, with the drops so far
    expect(log.lines.filter((l) => l.level === 40)[1]).toMatchObject({ dropped: { queue_full: 4 } });

    locker.exec("COMMIT");
    w.flush();
    expect(rowCount(db)).toBe(10);
    expect(w.stats()).toMatchObject({ written: 10, queued: 0, queuedBytes: 0, failing: false });
    expect(log.messages("info")).toEqual(["recording to the database resumed"]);
  });

  it("waits out the backoff between attempts on its own timer", async () => {
    const db = open();
    let now = 0;
    const { w } = writer(db, { flushIntervalMs: 5, now: () => now });
    const locker = otherConnection();
    locker.exec("BEGIN EXCLUSIVE");
    w.enqueue(1, 1);
    await vi.waitFor(() => expect(w.stats().failing).toBe(true));
    locker.exec("COMMIT");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(w.stats().written).toBe(0); // the clock has not moved past the backoff
    now += 2_000;
    await vi.waitFor(() => expect(w.stats().written).toBe(1));
  });

  it("survives a full database and resumes once there is room", () => {
    const probe = open();
    const pageSize = probe.pragma("page_size", { simple: true }) as number;
    const pages = probe.pragma("page_count", { simple: true }) as number;
    probe.close();
    const db = open({ maxSizeBytes: (pages + 2) * pageSize });
    const big = (id: number) =>
      exchange(id, { responseBody: { text: "x".repeat(3 * pageSize), encoding: "utf8", size: 3 * pageSize, truncated: false, decoded: null } });
    const { w, log } = writer(db, { batchSize: 1, maxQueue: 3, prepare: big });

    range(1, 5).forEach((id) => w.enqueue(id, 10));
    w.flush();
    expect(w.stats()).toMatchObject({ written: 0, failing: true, queued: 3, dropped: { queue_full: 2 } });
    expect(w.stats().lastError).toMatch(/^SQLITE_FULL/);
    expect(log.lines.find((l) => l.level === 40)).toMatchObject({ code: "SQLITE_FULL" });

    db.pragma("max_page_count = 100000");
    w.flush();
    expect(db.prepare("SELECT id FROM exchanges").pluck().all()).toEqual([1, 2, 3]);
    expect(w.stats()).toMatchObject({ written: 3, failing: false });
    expect(log.messages("info")).toEqual(["recording to the database resumed"]);
  });

  it("close() writes everything still queued and refuses what comes after", () => {
    const db = open();
    const { w } = writer(db, { batchSize: 7 });
    range(1, 20).forEach((id) => w.enqueue(id, 1));
    w.close();
    expect(rowCount(db)).toBe(20);
    expect(db.open).toBe(true);
    expect(w.enqueue(21, 1)).toBe(false);
    expect(w.stats().dropped.queue_full).toBe(1);
  });

  it("close() counts and logs what the database still refuses", () => {
    const db = open();
    const { w, log } = writer(db, { batchSize: 2 });
    otherConnection().exec("BEGIN EXCLUSIVE");
    range(1, 5).forEach((id) => w.enqueue(id, 1));
    w.close();
    expect(w.stats()).toMatchObject({ queued: 0, queuedBytes: 0, written: 0, dropped: { db_error: 5 } });
    expect(log.lines.find((l) => l.level === 50)).toMatchObject({ lost: 5 });
  });
});

describe("retention", () => {
  const DAY = 24 * 60 * 60 * 1000;
  const now = 1_800_000_000_000;

  it("deletes rows older than maxAgeDays, a batch at a time", () => {
    const db = open();
    insert(db, range(1, 2500).map((id) => exchange(id, { startedAt: id <= 2200 ? now - 8 * DAY : now - DAY })));
    const prune = () => pruneOnce(db, { maxAgeDays: 7, batch: 1000, now: () => now });
    expect([prune(), prune(), prune(), prune()]).toEqual([1000, 1000, 200, 0]);
    expect(rowCount(db)).toBe(300);
    expect(db.prepare("SELECT min(id) FROM exchanges").pluck().get()).toBe(2201);
  });

  it("keeps the newest maxRows rows, a batch at a time", () => {
    const db = open();
    insert(db, range(1, 2500).map((id) => exchange(id, { startedAt: now })));
    const prune = () => pruneOnce(db, { maxRows: 1000, batch: 1000, now: () => now });
    expect([prune(), prune(), prune()]).toEqual([1000, 500, 0]);
    expect(db.prepare("SELECT min(id) AS lo, max(id) AS hi FROM exchanges").get()).toEqual({ lo: 1501, hi: 2500 });
  });

  it("spends what is left of the batch on the row limit after the age limit", () => {
    const db = open();
    insert(db, range(1, 10).map((id) => exchange(id, { startedAt: id <= 2 ? now - 30 * DAY : now })));
    expect(pruneOnce(db, { maxAgeDays: 7, maxRows: 5, batch: 4, now: () => now })).toBe(4);
    expect(db.prepare("SELECT min(id) FROM exchanges").pluck().get()).toBe(5);
  });

  it("runs in the background, quickly while there is a backlog, and survives a locked database", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const db = open();
    insert(db, range(1, 250).map((id) => exchange(id, { startedAt: now })));
    const { logger, messages } = captureLogger();
    const stop = startRetention(db, { maxRows: 100, batch: 100, now: () => now }, logger);

    vi.advanceTimersByTime(5_000);
    expect(rowCount(db)).toBe(150);
    vi.advanceTimersByTime(5_000); // a full batch was deleted: back soon
    expect(rowCount(db)).toBe(100);

    insert(db, range(251, 260).map((id) => exchange(id, { startedAt: now })));
    const locker = otherConnection();
    locker.exec("BEGIN EXCLUSIVE");
    vi.advanceTimersByTime(60_000); // the last run deleted less than a batch: idle interval
    expect(messages("warn")).toEqual(["retention could not prune exchanges"]);
    locker.exec("COMMIT");
    vi.advanceTimersByTime(60_000);
    expect(rowCount(db)).toBe(100);

    stop();
    insert(db, range(261, 300).map((id) => exchange(id, { startedAt: now })));
    vi.advanceTimersByTime(10 * 60_000);
    expect(rowCount(db)).toBe(140);
  });
});

describe("settling at start-up", () => {
  it("settles what the last run left in progress, keeps era and registration, touches nothing else", () => {
    const db = open();
    const upsert = db.prepare(UPSERT_HANDSHAKE_SQL);
    const stuck: Handshake = {
      ...handshake(1, [1, 2]),
      era: "modern",
      registration: "cimd",
      steps: [{ step: "probe", status: "ok", exchangeIds: [1], at: 1_000 }, { step: "authorize", status: "failed", exchangeIds: [2], at: 1_500 }],
    };
    upsert.run(handshakeToRow(stuck));
    upsert.run(handshakeToRow({ ...handshake(3, [3]), outcome: "in_progress" }));
    upsert.run(handshakeToRow({ ...handshake(4, [4]), outcome: "succeeded" }));
    expect(settleUnfinishedHandshakes(db)).toBe(2);
    const rows = db.prepare("SELECT id, outcome, failed_step, era, registration FROM handshakes ORDER BY id").all();
    expect(rows).toEqual([
      { id: 1, outcome: "failed", failed_step: "authorize", era: "modern", registration: "cimd" },
      { id: 3, outcome: "abandoned", failed_step: null, era: "legacy", registration: "dcr" },
      { id: 4, outcome: "succeeded", failed_step: null, era: "legacy", registration: "dcr" },
    ]);
    expect(settleUnfinishedHandshakes(db)).toBe(0);
    db.close();
  });
});
