// The recorder's pace, in process: how many exchanges per second the writer turns into rows
// (decode, redact, classify, assign to a handshake, insert), and the bare INSERT for context;
// and the same writer on PostgreSQL (Debian's, started for the run on loopback; skipped where it
// is not installed), against SQLite in the same run.
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { Database } from "better-sqlite3";
import { HandshakeAnalysis } from "../../proxy/record/analysis-feed.js";
import { createClassifier } from "../../analysis/classify.js";
import type { ClassifiedExchange, RawExchange } from "../../analysis/exchange.js";
import { createLogger } from "../../common/log.js";
import { toRecorded } from "../../recording/record.js";
import { createRedactor, loadOrCreateRedactionKey, type Redactor } from "../../recording/redact.js";
import { exchangeById, openDatabase } from "../../store/db.js";
import { exchangeRowValues, exchangeToRow, INSERT_EXCHANGE_SQL, type ExchangeRow } from "../../store/schema.js";
import { RecordWriter } from "../../store/writer.js";
import { sqliteSink } from "../../store/sink.js";
import { createPostgresPool, postgresSink } from "../../store/postgres-sink.js";
import { migratePostgres } from "../../store/schema.js";
import { postgresBinDir, startPostgres } from "../helpers/postgres.js";
import { median, type BenchRow } from "./common.js";
import { captured, rawExchange } from "../helpers/exchanges.js";
import { makeTempDir } from "./procs.js";

const EXCHANGES = 20_000;
const SESSIONS = 100;
const REPEATS = 3;

/** A connector's tools/call: bearer token, session id, ~300-byte request, ~500-byte answer. */
function toolsCall(id: number, startedAt: number): RawExchange {
  const session = id % SESSIONS;
  const request = JSON.stringify({
    jsonrpc: "2.0",
    id,
    method: "tools/call",
    params: { name: "search_docs", arguments: { query: `quarterly roadmap item ${id}`, docId: "AbCdEf123", limit: 5, includeArchived: false, sort: "relevance", fields: ["title", "owner", "updatedAt"] } },
  });
  const response = JSON.stringify({
    jsonrpc: "2.0",
    id,
    result: {
      content: [{ type: "text", text: `Found 3 rows for "quarterly roadmap item ${id}": Q3 launch plan (owner: ana@example.com, updated 2025-06-02); Pricing review (owner: li@example.com, updated 2025-05-28); Hiring plan (owner: sam@example.com, updated 2025-05-11).` }],
      isError: false,
      structuredContent: { rows: 3, docId: "AbCdEf123", nextPageToken: null },
    },
  });
  return rawExchange({
    id,
    startedAt,
    durationMs: 42.5,
    ttfbMs: 41.9,
    clientAddr: `203.0.113.${session % 250}`,
    method: "POST",
    host: "coda.example.com",
    path: "/mcp",
    requestHeaders: [
      ["Host", "coda.example.com"],
      ["User-Agent", "Claude-User"],
      ["Content-Type", "application/json"],
      ["Accept", "application/json, text/event-stream"],
      ["Authorization", `Bearer eyJhbGciOiJIUzI1NiJ9.session-${session}.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg`],
      ["Mcp-Session-Id", `6f1c2d3e-0000-4000-8000-${String(session).padStart(12, "0")}`],
      ["Mcp-Protocol-Version", "2025-06-18"],
    ],
    requestBody: captured(request),
    responseHeaders: [
      ["Content-Type", "application/json"],
      ["Content-Length", String(Buffer.byteLength(response))],
    ],
    responseBody: captured(response),
  });
}

function makeExchanges(): RawExchange[] {
  const start = Date.now() - EXCHANGES;
  return Array.from({ length: EXCHANGES }, (_, i) => toolsCall(i + 1, start + i));
}

interface Store {
  db: Database;
  redactor: Redactor;
}

function openStore(dir: string, name: string): Store {
  const file = path.join(dir, name);
  return { db: openDatabase(file), redactor: createRedactor(loadOrCreateRedactionKey(file)) };
}

/** The analysis's lookup as the recorder's: the writer's queue, then the file. */
function lookupIn(db: Database, writer: () => RecordWriter<RawExchange>): (id: number) => ExchangeRow | undefined {
  const stored = exchangeById(db);
  return (id) => writer().unwrittenRow(id) ?? stored(id);
}

/** The writer wired as proxy/record/record-worker.ts wires it, minus metrics and the live feed; flushes only when told. */
function lensWriter({ db, redactor }: Store): RecordWriter<RawExchange> {
  const classify = createClassifier();
  const analysis: HandshakeAnalysis = new HandshakeAnalysis(lookupIn(db, () => writer));
  const writer: RecordWriter<RawExchange> = new RecordWriter<RawExchange>({
    sink: sqliteSink(db),
    logger: createLogger("silent"),
    flushIntervalMs: 1_000_000_000,
    maxQueue: EXCHANGES,
    maxQueueBytes: 1 << 30,
    prepare: (raw) => classify(toRecorded(raw, redactor)),
    analyse: (exchange) => analysis.analyse(exchange),
    changedHandshakes: (dropped) => analysis.changed(dropped),
    keepExchanges: () => false, // no live feed
  });
  return writer;
}

/** Rows per second through the writer: prepare + analyse + insert, in its batches. */
function writerRate(dir: string, raws: RawExchange[], repeat: number): number {
  const store = openStore(dir, `writer-${repeat}.db`);
  const writer = lensWriter(store);
  try {
    // enqueue prepares and analyses, flush inserts: both are timed.
    const start = performance.now();
    for (const raw of raws) writer.enqueue(raw, raw.requestBody.size + raw.responseBody.size + 1024);
    writer.flush(); // synchronous: the writer's own immediate finds the queue empty
    const seconds = (performance.now() - start) / 1000;
    const { written } = writer.stats();
    if (written !== raws.length) throw new Error(`the writer wrote ${written} of ${raws.length} exchanges`);
    return written / seconds;
  } finally {
    writer.close();
    store.db.close();
  }
}

/** Rows per second of exchangeToRow + INSERT alone, in one transaction. */
function insertRate(dir: string, raws: RawExchange[], repeat: number): number {
  const store = openStore(dir, `insert-${repeat}.db`);
  try {
    const classify = createClassifier();
    const prepared: ClassifiedExchange[] = raws.map((raw) => classify(toRecorded(raw, store.redactor)));
    const insert = store.db.prepare(INSERT_EXCHANGE_SQL);
    const insertAll = store.db.transaction((exchanges: ClassifiedExchange[]) => {
      for (const e of exchanges) insert.run(exchangeRowValues(exchangeToRow(e)));
    });
    const start = performance.now();
    insertAll(prepared);
    return prepared.length / ((performance.now() - start) / 1000);
  } finally {
    store.db.close();
  }
}

/**
 * Rows per second through the same writer with PostgreSQL's sink: prepare + analyse on this
 * thread, batches of 128 in flight one at a time, until every row is committed.
 */
async function postgresWriterRate(url: string, dir: string, raws: RawExchange[], repeat: number): Promise<number> {
  const admin = createPostgresPool(url, () => undefined);
  const name = `bench_${repeat}`;
  await admin.query(`DROP DATABASE IF EXISTS ${name}`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const pool = createPostgresPool(url.replace(/\/lens$/, `/${name}`), () => undefined);
  const client = await pool.connect();
  await migratePostgres(client);
  client.release();
  // The same analysis as the SQLite writer, over a SQLite file it reads back from: the store's
  // reads are not what is measured here, the writes are.
  const store = openStore(dir, `pg-analysis-${repeat}.db`);
  const classify = createClassifier();
  const analysis: HandshakeAnalysis = new HandshakeAnalysis(lookupIn(store.db, () => writer));
  const writer: RecordWriter<RawExchange> = new RecordWriter<RawExchange>({
    sink: postgresSink(pool),
    logger: createLogger("silent"),
    flushIntervalMs: 1_000_000_000,
    maxQueue: EXCHANGES,
    maxQueueBytes: 1 << 30,
    prepare: (raw) => classify(toRecorded(raw, store.redactor)),
    analyse: (exchange) => analysis.analyse(exchange),
    changedHandshakes: (dropped) => analysis.changed(dropped),
    keepExchanges: () => false,
  });
  try {
    const start = performance.now();
    for (const raw of raws) writer.enqueue(raw, raw.requestBody.size + raw.responseBody.size + 1024);
    await writer.close(); // writes every batch, one in flight at a time
    const seconds = (performance.now() - start) / 1000;
    const { written } = writer.stats();
    if (written !== raws.length) throw new Error(`the writer wrote ${written} of ${raws.length} exchanges to PostgreSQL: ${JSON.stringify(writer.stats())}`);
    return written / seconds;
  } finally {
    store.db.close();
    await pool.end();
  }
}

export async function benchRecording(): Promise<BenchRow[]> {
  const rows = sqliteRecording();
  if (postgresBinDir() === undefined) {
    return [...rows, { case: "recorder rows/s to PostgreSQL", value: Number.NaN, unit: "rows/s", note: "skipped: PostgreSQL is not installed (apt-get install postgresql)" }];
  }
  const { dir, remove: removeDir } = makeTempDir("recording-pg");
  const server = await startPostgres();
  try {
    const raws = makeExchanges();
    const rates: number[] = [];
    for (let repeat = 0; repeat < REPEATS; repeat++) rates.push(await postgresWriterRate(server.url, dir, raws, repeat));
    const sqlite = rows.find((r) => r.case === "recorder rows/s (prepare + insert)")!.value;
    const pg = median(rates);
    return [
      ...rows,
      { case: "recorder rows/s to PostgreSQL", value: pg, unit: "rows/s", note: `the same writer, PostgreSQL ${path.basename(path.dirname(postgresBinDir()!))} on loopback (fsync off), batches of 128, one in flight` },
      { case: "recorder PostgreSQL vs SQLite", value: sqlite / pg, unit: "×", note: "time per recorded row, PostgreSQL over SQLite, same run" },
    ];
  } finally {
    server.remove();
    removeDir();
  }
}

function sqliteRecording(): BenchRow[] {
  const { dir, remove: removeDir } = makeTempDir("recording");
  try {
    const raws = makeExchanges();
    const writer: number[] = [];
    const insert: number[] = [];
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      writer.push(writerRate(dir, raws, repeat));
      insert.push(insertRate(dir, raws, repeat));
    }
    const setup = `${EXCHANGES.toLocaleString("en")} tools/call exchanges in ${SESSIONS} sessions, median of ${REPEATS}`;
    return [
      { case: "recorder rows/s (prepare + insert)", value: median(writer), unit: "rows/s", note: `${setup}; redact, classify, handshakes, batches of 128` },
      { case: "recorder rows/s (insert only)", value: median(insert), unit: "rows/s", note: "exchangeToRow + INSERT, one transaction" },
      { case: "recorder cpu per row", value: 1e6 / median(writer), unit: "µs", note: "prepare + analyse + insert, on one thread" },
      { case: "recorder cpu per row, insert only", value: 1e6 / median(insert), unit: "µs", note: "storing the row alone, before any redaction or classification" },
    ];
  } finally {
    removeDir();
  }
}
