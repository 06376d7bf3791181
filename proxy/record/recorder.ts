// The proxy's side of the record pipeline, which runs in a worker thread
// (proxy/record/record-worker.ts): raw exchanges go over in batches; live-feed batches, the writer's
// state and, on a scrape, the traffic metrics come back.
import { Worker } from "node:worker_threads";
import type { ClassifiedExchange, RawExchange } from "../../analysis/exchange.js";
import type { Handshake } from "../../analysis/handshake.js";
import type { Logger } from "../../common/log.js";
import type { ProxySettings } from "../settings.js";
import type { DropReason, WriterStats } from "../../store/writer.js";

/** The settings the recorder thread needs: where and how to record. */
export type RecorderConfig = Pick<
  ProxySettings,
  | "db"
  | "dbMaxSize"
  | "flushInterval"
  | "maxQueue"
  | "retentionDays"
  | "retentionRows"
  | "logLevel"
  | "logExchanges"
  // The recording cap bounds decoding too (decompression bombs); the operator's redaction rules.
  | "maxBody"
  | "redactHeaders"
  | "redactFields"
  | "redactPaths"
  | "replica"
>;

export function recorderConfig(settings: ProxySettings): RecorderConfig {
  const { db, dbMaxSize, flushInterval, maxQueue, retentionDays, retentionRows, logLevel, logExchanges } = settings;
  const { maxBody, redactHeaders, redactFields, redactPaths, replica } = settings;
  return { db, dbMaxSize, flushInterval, maxQueue, retentionDays, retentionRows, logLevel, logExchanges, maxBody, redactHeaders, redactFields, redactPaths, replica };
}

export interface LiveBatch {
  exchanges: ClassifiedExchange[];
  handshakes: Handshake[];
  handshakeIds: Array<number | null>;
}

/** What the proxy asks the thread and waits for. */
type Question = "stats" | "metrics";

export type ToRecorder =
  | { type: "enqueue"; items: RawExchange[] }
  | { type: "live"; wanted: boolean }
  | { type: "stats" }
  | { type: "metrics" }
  | { type: "close" };

export type ToProxy =
  | { type: "ready" }
  | { type: "recorded"; count: number; live?: LiveBatch }
  | { type: "stats"; stats: WriterStats; received: number }
  | { type: "metrics"; text: string; stats: WriterStats; received: number }
  | { type: "closed"; stats: WriterStats; received: number };

export interface RecorderEvents {
  /** A batch committed: its size, and its records when the live feed asked for them. */
  onRecorded(count: number, live: LiveBatch | undefined): void;
}

const EMPTY_STATS: WriterStats = {
  queued: 0,
  queuedBytes: 0,
  written: 0,
  prunedForRoom: 0,
  dropped: { queue_full: 0, db_error: 0, prepare: 0 },
  batches: 0,
  lastError: null,
  lastErrorAt: null,
  failing: false,
};

/**
 * The batch's bodies are copied into one buffer whose memory is handed over: one transfer per
 * batch, not two per exchange, and a body cut at --max-body (a view into a bigger chunk) does
 * not take the whole chunk along. The views arrive as views into that buffer.
 */
function packBodies(items: RawExchange[]): ArrayBuffer {
  let total = 0;
  for (const raw of items) total += raw.requestBody.bytes.byteLength + raw.responseBody.bytes.byteLength;
  const pool = new Uint8Array(total);
  let offset = 0;
  const place = (bytes: Buffer): Buffer => {
    pool.set(bytes, offset);
    const view = pool.subarray(offset, (offset += bytes.byteLength));
    return view as Buffer; // a Buffer again on the other side: see record-worker.ts
  };
  for (const raw of items) {
    raw.requestBody.bytes = place(raw.requestBody.bytes);
    raw.responseBody.bytes = place(raw.responseBody.bytes);
  }
  return pool.buffer;
}

/** A recorder thread that died is started again after this, doubling up to the max while it keeps dying. */
const RESTART_MIN_MS = 1_000;
const RESTART_MAX_MS = 60_000;
/** A thread that ran this long before dying restarts after RESTART_MIN_MS again. */
const STABLE_AFTER_MS = 60_000;

/** A worker this slow to answer a stats request is reported from its last message. */
const STATS_WAIT_MS = 1_000;
const CLOSE_WAIT_MS = 30_000;
const MIN_IN_TRANSIT_LIMIT = 10_000;
// Each message wakes the recorder thread (a syscall, often a context switch): exchanges go over
// in batches, every 10 ms or 256 exchanges, not one message per event-loop turn.
const SEND_EVERY_MS = 10;
const SEND_BATCH = 256;

/** Starts a recorder thread; rejects with its one-line reason when it cannot open the database. */
function spawnRecorderThread(config: RecorderConfig): Promise<Worker> {
  const worker = new Worker(new URL("./record-worker.js", import.meta.url), { workerData: config });
  return new Promise((resolve, reject) => {
    const fail = (error: Error) => reject(error);
    worker.once("error", fail);
    worker.once("message", (message: ToProxy) => {
      worker.off("error", fail);
      if (message.type === "ready") resolve(worker);
      else reject(new Error(`the recorder thread said ${message.type} before it was ready`));
    });
  });
}

/** Totals of two writers' stats: those of recorder threads that died, and the current one's. */
function addTotals(a: WriterStats, b: WriterStats): WriterStats {
  const dropped = { ...a.dropped };
  for (const reason of Object.keys(dropped) as DropReason[]) dropped[reason] += b.dropped[reason];
  return { ...b, written: a.written + b.written, prunedForRoom: a.prunedForRoom + b.prunedForRoom, batches: a.batches + b.batches, dropped };
}

export class Recorder {
  private worker: Worker;
  private workerStartedAt = Date.now();
  private batch: RawExchange[] = [];
  private sendTimer: NodeJS.Timeout | undefined;
  private sent = 0;
  private received = 0;
  private last: WriterStats = EMPTY_STATS;
  /** What the writers of recorder threads that died had done: totals stay monotonic for the metrics. */
  private earlier: WriterStats = EMPTY_STATS;
  private restartDelayMs = RESTART_MIN_MS;
  private restartTimer: NodeJS.Timeout | undefined;
  private liveWanted = false;
  /** Dropped on this side: the worker was gone, or too far behind (see maxQueue). */
  private readonly dropped: Record<DropReason, number> = { queue_full: 0, db_error: 0, prepare: 0 };
  /**
   * Callers waiting for the thread's answer to a question, one question in flight per kind. Each
   * waits for a report that covers what had been sent when it asked (`sent`): the thread's
   * periodic stats, already on their way, must not answer a question about later exchanges.
   */
  private readonly waiting: Record<Question, Array<{ sent: number; answer: (text: string | null) => void }>> = { stats: [], metrics: [] };
  private dead: string | null = null;
  private closing: Promise<void> | null = null;
  private closed = false;

  private constructor(
    worker: Worker,
    private readonly config: RecorderConfig,
    private readonly events: RecorderEvents,
    private readonly logger: Logger,
  ) {
    this.worker = worker;
    this.attach(worker);
  }

  /** Starts the recorder thread; rejects with its one-line reason when it cannot open the database. */
  static async start(config: RecorderConfig, events: RecorderEvents, logger: Logger): Promise<Recorder> {
    return new Recorder(await spawnRecorderThread(config), config, events, logger);
  }

  private attach(worker: Worker): void {
    worker.on("message", (message: ToProxy) => this.onMessage(message));
    worker.on("error", (error) => this.died(worker, error.message, { err: error }));
    worker.on("exit", (code) => this.died(worker, `the recorder thread exited (code ${code})`, { code }));
  }

  /**
   * A thread that dies (an uncaught error, out of memory) takes what it held with it: counted as
   * lost. Traffic is unaffected; exchanges are dropped (and counted) until it is started again.
   */
  private died(worker: Worker, reason: string, fields: Record<string, unknown>): void {
    this.answer("stats", null);
    this.answer("metrics", null);
    // "error" is followed by "exit"; a thread replaced or closed on purpose is no news.
    if (worker !== this.worker || this.dead !== null || this.closed) return;
    this.dead = reason;
    const lost = Math.max(0, this.sent - this.received) + this.last.queued;
    this.dropped.db_error += lost;
    this.earlier = addTotals(this.earlier, this.last);
    this.last = { ...EMPTY_STATS, lastError: reason, lastErrorAt: Date.now() };
    this.sent = 0;
    this.received = 0;
    if (Date.now() - this.workerStartedAt >= STABLE_AFTER_MS) this.restartDelayMs = RESTART_MIN_MS;
    this.logger.error({ ...fields, lost, restartInMs: this.restartDelayMs }, "the recorder thread died: recording stops until it restarts, traffic is unaffected");
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    this.restartTimer = setTimeout(() => void this.restart(), this.restartDelayMs);
    this.restartTimer.unref();
    this.restartDelayMs = Math.min(RESTART_MAX_MS, this.restartDelayMs * 2);
  }

  private async restart(): Promise<void> {
    let worker: Worker;
    try {
      worker = await spawnRecorderThread(this.config);
    } catch (error) {
      if (this.closed) return;
      this.logger.error({ err: error, restartInMs: this.restartDelayMs }, "the recorder thread could not restart");
      this.scheduleRestart();
      return;
    }
    if (this.closed) {
      await worker.terminate();
      return;
    }
    this.worker = worker;
    this.workerStartedAt = Date.now();
    this.attach(worker);
    this.dead = null;
    if (this.liveWanted) worker.postMessage({ type: "live", wanted: true } satisfies ToRecorder);
    this.send(); // what was batched before it died
    this.logger.info("the recorder thread restarted: recording resumed");
  }

  /** On the request path: O(1), no I/O, never throws. */
  enqueue(raw: RawExchange): void {
    // Id 0: the database could hand out no id (see store/id-blocks.ts).
    if (this.dead !== null || this.closed || raw.id <= 0) {
      this.dropped.db_error++;
      return;
    }
    // The writer bounds its own queue (--max-queue); this only guards against a thread that
    // stopped taking messages. `received` is reported a few times a second, hence the slack.
    if (this.sent + this.batch.length - this.received >= Math.max(MIN_IN_TRANSIT_LIMIT, this.config.maxQueue)) {
      this.dropped.queue_full++;
      return;
    }
    const size = this.batch.push(raw);
    if (size === 1) this.sendTimer = setTimeout(() => this.send(), SEND_EVERY_MS);
    else if (size >= SEND_BATCH) this.send();
  }

  /** The live feed has subscribers: full records are sent back with each batch. */
  setLiveWanted(wanted: boolean): void {
    this.liveWanted = wanted;
    if (this.dead === null) this.worker.postMessage({ type: "live", wanted } satisfies ToRecorder);
  }

  /** The writer's last reported state, with earlier threads' totals and this side's drops added. */
  stats(): WriterStats {
    const s = addTotals(this.earlier, this.last);
    const dropped = { ...s.dropped };
    for (const reason of Object.keys(dropped) as DropReason[]) dropped[reason] += this.dropped[reason];
    const inTransit = Math.max(0, this.sent + this.batch.length - this.received);
    const failing = s.failing || this.dead !== null;
    return { ...s, queued: s.queued + inTransit, dropped, failing, lastError: this.dead ?? s.lastError };
  }

  /** The writer's state now: asks the worker, which answers after what was sent before. */
  async freshStats(): Promise<WriterStats> {
    await this.ask("stats");
    return this.stats();
  }

  /**
   * The traffic metrics' exposition text (counted in the recorder thread), and fresh writer
   * stats with it. Empty when the thread is gone or too slow: a scrape still gets the rest.
   */
  async trafficMetrics(): Promise<string> {
    return (await this.ask("metrics")) ?? "";
  }

  /** Sends what is queued first, so the answer covers it; null when the thread is gone or too slow. */
  private ask(question: Question): Promise<string | null> {
    if (this.dead !== null || this.closed) return Promise.resolve(null);
    this.send();
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), STATS_WAIT_MS);
      const waiters = this.waiting[question];
      waiters.push({
        sent: this.sent,
        answer: (text) => {
          clearTimeout(timer);
          resolve(text);
        },
      });
      if (waiters.length === 1) this.worker.postMessage({ type: question } satisfies ToRecorder);
    });
  }

  /** Answers the waiters whose exchanges the thread had received (all of them when `received` is absent). */
  private answer(question: Question, text: string | null, received = Infinity): void {
    const waiters = this.waiting[question];
    this.waiting[question] = waiters.filter((w) => w.sent > received);
    for (const w of waiters) if (w.sent <= received) w.answer(text);
  }

  /** Sends what is queued, then lets the worker flush, close the database and stop. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.send();
      this.closed = true;
      clearTimeout(this.restartTimer);
      if (this.dead !== null) {
        this.dropped.db_error += this.batch.length; // no thread left to take them
        this.batch = [];
        return;
      }
      const closed = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_WAIT_MS);
        this.worker.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.worker.postMessage({ type: "close" } satisfies ToRecorder);
      await closed;
      await this.worker.terminate();
    })();
    return this.closing;
  }

  private send(): void {
    clearTimeout(this.sendTimer);
    if (this.batch.length === 0 || this.dead !== null) return;
    const items = this.batch;
    this.batch = [];
    this.sent += items.length;
    this.worker.postMessage({ type: "enqueue", items } satisfies ToRecorder, [packBodies(items)]);
  }

  private onMessage(message: ToProxy): void {
    switch (message.type) {
      case "recorded":
        this.events.onRecorded(message.count, message.live);
        return;
      case "stats":
      case "closed":
      case "metrics": // each comes with fresh stats
        this.last = message.stats;
        this.received = message.received;
        // Nothing follows "closed": whoever still waits is answered with the last stats.
        this.answer("stats", null, message.type === "closed" ? Infinity : message.received);
        if (message.type === "metrics") this.answer("metrics", message.text);
        return;
    }
  }
}
