// The record pipeline in its own thread: redact → classify → handshakes → store, with the
// settler and retention. The proxy's event loop only captures and hands raw exchanges over,
// so neither this work nor the garbage it makes (collected in this thread's own heap) ever
// holds a request up. The traffic metrics are counted here too; what goes back is small:
// stats, the metrics text on a scrape, records only while the live feed has subscribers.
import { parentPort, workerData } from "node:worker_threads";
import { settleUnfinishedHandshakes } from "../../store/settle.js";
import { HandshakeAnalysis } from "./analysis-feed.js";
import { createClassifier } from "../../analysis/classify.js";
import { listedToolNames } from "../../analysis/mcp-facts.js";
import type { ClassifiedExchange, RawExchange } from "../../analysis/exchange.js";
import { createBatchedLogger } from "../../common/log.js";
import { exchangeLogFields } from "./log-line.js";
import { TrafficMetrics } from "../admin/metrics.js";
import { toRecorded } from "../../recording/record.js";
import type { RecorderConfig, ToRecorder, ToProxy } from "./recorder.js";
import { createRedactor, loadOrCreateRedactionKey } from "../../recording/redact.js";
import { exchangeById, openDatabase } from "../../store/db.js";
import { makeRoom, startRetention } from "../../store/retention.js";
import { recordedBytes, RecordWriter } from "../../store/writer.js";
import { sqliteSink, type RecordSink } from "../../store/sink.js";
import { databaseLocation } from "../../common/database-location.js";
import { openPostgres, sharedRedactionKey } from "../../store/postgres.js";
import { postgresSink } from "../../store/postgres-sink.js";
import { SharedAnalyser } from "./shared-analyser.js";
import { PostgresFeed } from "../../store/postgres-feed.js";
import { rowToExchange, type ExchangeRow } from "../../store/schema.js";
import { runAsBatchJob } from "./scheduling.js";

/** How often idle handshakes are re-judged (see analysis/verdict.ts). */
const SETTLE_CHECK_MS = 2_000;
/** How often the live feed reads a shared database while someone follows it. */
const LIVE_POLL_MS = 250;
/** How often the proxy hears the writer's state (for /health and the recorder gauges). */
const STATS_INTERVAL_MS = 250;

const config = workerData as RecorderConfig;
const port = parentPort!;
const post = (message: ToProxy) => port.postMessage(message);

// Its lines (one per exchange with --log-exchanges) are written in batches: see createBatchedLogger.
const log = createBatchedLogger(config.logLevel);
const logger = log.logger;
// Opt-in (--log-exchanges): building and writing the line was a sixth of this thread's work.
const logExchanges = config.logExchanges && logger.isLevelEnabled("info");
const metrics = new TrafficMetrics();
const location = databaseLocation(config.db);
const store = location.kind === "sqlite" ? openSqliteStore(location.file) : await openSharedStore(location.url);
const redactor = createRedactor(store.redactionKey, {
  headers: config.redactHeaders,
  fields: config.redactFields,
  paths: config.redactPaths,
});
// Decoding stops at the recording cap: what is decoded is at most what would be recorded.
const recordOptions = { maxDecodedBytes: config.maxBody };
const classify = createClassifier();

interface RecordingStore {
  sink: RecordSink;
  redactionKey: Buffer;
  /** SQLite: this proxy sees all the traffic it records, and analyses it here, as it is classified. */
  analysis: HandshakeAnalysis | null;
  /** Deletes the oldest records when the database is full. */
  makeRoom?: () => number;
  /** PostgreSQL: the live feed follows the database (every replica's exchanges, the analyser's handshakes). */
  startFeed?: () => Promise<PostgresFeed>;
  close(): Promise<void>;
}

function openSqliteStore(file: string): RecordingStore {
  const db = openDatabase(file, { maxSizeBytes: config.dbMaxSize || undefined });
  // What the last run left in progress can no longer progress: this run's tracker starts empty.
  const settledAtStart = settleUnfinishedHandshakes(db);
  if (settledAtStart > 0) logger.info({ handshakes: settledAtStart }, "settled the handshakes the last run left in progress");
  // Exchanges not written yet come from the writer's queue (declared below; asked only once it runs).
  const storedExchange = exchangeById(db);
  const analysis = new HandshakeAnalysis(
    (id): ExchangeRow | undefined => writer.unwrittenRow(id) ?? storedExchange(id),
    (err, count) => logger.error({ err, count }, "could not diagnose handshakes: stored without their diagnosis"),
  );
  const stopRetention = startRetention(db, { maxAgeDays: config.retentionDays, maxRows: config.retentionRows }, logger);
  return {
    sink: sqliteSink(db),
    redactionKey: loadOrCreateRedactionKey(file),
    analysis,
    // A full database keeps the newest traffic: the oldest records make room.
    makeRoom: () => makeRoom(db),
    async close() {
      stopRetention();
      db.close();
    },
  };
}

/**
 * PostgreSQL, shared by replicas: each records what it forwards; the one elected analyser groups
 * and diagnoses every replica's exchanges (shared-analyser.ts), so none is analysed here.
 */
async function openSharedStore(url: string): Promise<RecordingStore> {
  const pool = await openPostgres(url, (err) => logger.warn({ err }, "a database connection closed: the next batch reconnects"));
  const redactionKey = await sharedRedactionKey(pool).catch(async (err: unknown) => {
    await pool.end();
    throw err;
  });
  const analyser = new SharedAnalyser({
    url,
    logger,
    metrics,
    // Replicas commit every --flush-interval; a loaded one later: two seconds covers both at the defaults.
    holdMs: Math.max(2_000, 2 * config.flushInterval),
    retention: { maxAgeDays: config.retentionDays, maxRows: config.retentionRows, maxBytes: config.dbMaxSize || undefined },
  });
  analyser.start();
  return {
    sink: postgresSink(pool),
    redactionKey,
    analysis: null,
    startFeed: () => PostgresFeed.start(pool),
    async close() {
      await analyser.stop();
      await pool.end();
    },
  };
}

let received = 0;
let liveWanted = false;

const analysis = store.analysis;
const writer = new RecordWriter<RawExchange>({
  sink: store.sink,
  logger,
  flushIntervalMs: config.flushInterval,
  maxQueue: config.maxQueue,
  makeRoom: store.makeRoom,
  prepare: (raw) => {
    const exchange = classify(toRecorded(raw, redactor, recordOptions));
    exchange.replica = config.replica;
    return exchange;
  },
  // The decoded, recorded size is what waits in memory, not the (compressed) bytes that arrived.
  measure: recordedBytes,
  // Every exchange that arrives is counted here, as it is classified, whether or not the
  // database can take it: the dashboards keep showing the traffic through a database outage.
  analyse: (exchange) => {
    const handshakeId = analysis?.analyse(exchange) ?? null;
    // Tool labels come from the server's tools/list answers, before any call is counted.
    if (exchange.facts.mcp?.methods.includes("tools/list")) metrics.allowToolLabels(listedToolNames(exchange));
    metrics.observeExchange(exchange);
    // Logged as it is classified, like the metrics: the exchange need not wait for its batch.
    if (logExchanges) logger.info(exchangeLogFields(exchange, handshakeId), "exchange");
    return handshakeId;
  },
  // Built and judged once per batch: the handshake metrics count what each batch left them at.
  changedHandshakes: (dropped) => {
    if (!analysis) return [];
    const handshakes = analysis.changed(dropped);
    metrics.observeHandshakes(handshakes);
    return handshakes;
  },
  // Only the live feed needs the exchanges after their batch commits (SQLite: on PostgreSQL it
  // follows the database, see followDatabase).
  keepExchanges: () => liveWanted && !store.startFeed,
  onRecorded: (exchanges: ClassifiedExchange[], handshakes, handshakeIds, written) => {
    metrics.observeBatch(written);
    post({ type: "recorded", count: written, live: liveWanted && !store.startFeed ? { exchanges, handshakes, handshakeIds } : undefined });
  },
});

/**
 * On PostgreSQL this replica's /live carries what every replica records and the analyser's
 * handshakes, read back from the database while someone follows it (its own batches alone would
 * be a share of the traffic, and no handshake).
 */
let feedTimer: NodeJS.Timeout | undefined;
function followDatabase(wanted: boolean): void {
  clearInterval(feedTimer);
  feedTimer = undefined;
  const startFeed = store.startFeed;
  if (!wanted || !startFeed) return;
  // From now (a subscriber sees what is recorded after it joined); started again after a failure
  // (the database restarting): a feed that never started has no cursor.
  let feed: Promise<PostgresFeed> | undefined = startFeed();
  feed.catch(() => undefined); // reported by the first poll
  let polling = false;
  let failing = false;
  feedTimer = setInterval(() => {
    if (polling) return;
    polling = true;
    const current = (feed ??= startFeed());
    current
      .then((f) => f.poll())
      .then(
        ({ exchanges, handshakes }) => {
          failing = false;
          if (exchanges.length === 0 && handshakes.length === 0) return;
          post({ type: "recorded", count: 0, live: { exchanges: exchanges.map(rowToExchange), handshakes, handshakeIds: exchanges.map((r) => r.handshake_id) } });
        },
        (err: unknown) => {
          if (!failing) logger.warn({ err }, "the live feed cannot read the database; it retries");
          failing = true;
          current.catch(() => (feed = feed === current ? undefined : feed));
        },
      )
      .finally(() => (polling = false));
  }, LIVE_POLL_MS);
}

// Verdicts that change with time alone (a client gone quiet after an error) are stored too.
// A bug here must not end the thread, and with it the recording: it is logged, and the next
// tick tries again.
const settler = setInterval(() => {
  try {
    if (!analysis) return;
    const settled = analysis.tick(Date.now());
    if (settled.length === 0) return;
    writer.enqueueHandshakes(settled);
    metrics.observeHandshakes(settled);
  } catch (err) {
    logger.error({ err }, "could not settle idle handshakes");
  }
}, SETTLE_CHECK_MS);
const stats = setInterval(() => post({ type: "stats", stats: writer.stats(), received }), STATS_INTERVAL_MS);

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

port.on("message", (message: ToRecorder) => {
  switch (message.type) {
    case "enqueue":
      for (const raw of message.items) {
        received++;
        // Buffers arrive as plain Uint8Arrays: the same bytes, wrapped again, not copied.
        raw.requestBody.bytes = asBuffer(raw.requestBody.bytes);
        raw.responseBody.bytes = asBuffer(raw.responseBody.bytes);
        writer.enqueue(raw, raw.requestBody.bytes.length + raw.responseBody.bytes.length + 1024);
      }
      return;
    case "stats":
      post({ type: "stats", stats: writer.stats(), received });
      return;
    case "metrics":
      metrics.registry.metrics().then(
        (text) => post({ type: "metrics", text, stats: writer.stats(), received }),
        (err: unknown) => {
          logger.error({ err }, "could not render the traffic metrics");
          post({ type: "metrics", text: "", stats: writer.stats(), received });
        },
      );
      return;
    case "live":
      if (message.wanted !== liveWanted) followDatabase(message.wanted);
      liveWanted = message.wanted;
      return;
    case "close": {
      followDatabase(false);
      clearInterval(settler);
      clearInterval(stats);
      const finish = () => {
        void store.close().then(
          () => undefined,
          (err: unknown) => logger.error({ err }, "could not close the database"),
        ).finally(() => {
          log.close();
          post({ type: "closed", stats: writer.stats(), received });
          port.close();
        });
      };
      // The last flush: what still cannot be written is counted as lost (a promise while a write is in flight).
      const closing = writer.close();
      if (closing) {
        void closing.then(finish, (err: unknown) => {
          logger.error({ err }, "could not close the recording writer");
          finish();
        });
      }
      else finish();
      return;
    }
  }
});

if (!runAsBatchJob()) logger.debug("the recorder thread runs with the default scheduling policy (SCHED_BATCH needs Linux and chrt)");
post({ type: "ready" });
