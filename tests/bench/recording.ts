// The recorder's pace, in process: how many exchanges per second the writer turns into rows
// (decode, redact, classify, assign to a handshake, insert), and the bare INSERT for context.
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { Database } from "better-sqlite3";
import { HandshakeAnalysis } from "../../proxy/record/analysis-feed.js";
import { createClassifier } from "../../analysis/classify.js";
import type { ClassifiedExchange, RawExchange } from "../../analysis/exchange.js";
import { createLogger } from "../../common/log.js";
import { toRecorded } from "../../recording/record.js";
import { createRedactor, loadOrCreateRedactionKey, type Redactor } from "../../recording/redact.js";
import { openDatabase } from "../../store/db.js";
import { exchangeRowValues, exchangeToRow, INSERT_EXCHANGE_SQL } from "../../store/schema.js";
import { RecordWriter } from "../../store/writer.js";
import { sqliteSink } from "../../store/sink.js";
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

/** The writer wired as proxy/record/record-worker.ts wires it, minus metrics and the live feed; flushes only when told. */
function lensWriter({ db, redactor }: Store): RecordWriter<RawExchange> {
  const classify = createClassifier();
  const analysis: HandshakeAnalysis = new HandshakeAnalysis(db, (id) => writer.unwrittenRow(id));
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

export function benchRecording(): BenchRow[] {
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
      { case: "recorder rows/s (prepare + insert)", value: median(writer), unit: "rows/s", note: `${setup}; redact, classify, handshakes, batches of 500` },
      { case: "recorder rows/s (insert only)", value: median(insert), unit: "rows/s", note: "exchangeToRow + INSERT, one transaction" },
      { case: "recorder cpu per row", value: 1e6 / median(writer), unit: "µs", note: "prepare + analyse + insert, on one thread" },
      { case: "recorder cpu per row, insert only", value: 1e6 / median(insert), unit: "µs", note: "storing the row alone, before any redaction or classification" },
    ];
  } finally {
    removeDir();
  }
}
