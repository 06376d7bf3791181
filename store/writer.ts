// The batching writer, in the recorder thread: each raw item is prepared as it arrives (redacted,
// classified, assigned to a handshake: the metrics count it then, whether or not the database
// can take it), and a timer writes them in batches to a sink (store/sink.ts). Whatever happens to
// the database, traffic never waits for it and never sees an error from it. A sink that answers
// with a promise has one batch in flight at a time; the queue, its bounds, the retries and the
// drop counts are the same for every sink.
import type { Logger } from "pino";
import type { ClassifiedExchange } from "../analysis/exchange.js";
import type { Handshake } from "../analysis/handshake.js";
import { exchangeToRow, type ExchangeRow } from "./schema.js";
import type { RecordSink } from "./sink.js";

export interface RecordWriterOptions<T> {
  sink: RecordSink;
  logger: Logger;
  /** Turns a raw item into what is stored; runs on enqueue, before the queue's bounds are checked. */
  prepare: (item: T) => ClassifiedExchange;
  /**
   * Runs after prepare, in order, for every prepared exchange, queued or dropped: assigns it to
   * a connector handshake and returns that handshake's id (null: none).
   */
  analyse?: (exchange: ClassifiedExchange) => number | null;
  /**
   * The handshakes that analysed exchanges changed since the last call, in their new state, stored
   * with the next batch: asked for on each flush and each timer tick (the database failing or
   * not), at close, and at once with an exchange that could not be queued, which a diagnosis
   * would find nowhere else. Building a handshake once per batch, not once per exchange, is what
   * keeps a long session's traffic cheap. Goes with `analyse`: whatever it places, this drains.
   */
  changedHandshakes?: (dropped?: ClassifiedExchange) => Handshake[];
  /**
   * Called after each committed batch with its exchanges (those kept: keepExchanges), the
   * handshakes they changed, each exchange's handshake id (same order as the exchanges), and
   * how many rows the batch wrote.
   */
  onRecorded?: (exchanges: ClassifiedExchange[], handshakes: Handshake[], handshakeIds: Array<number | null>, written: number) => void;
  /**
   * Whether a queued row keeps its exchange for onRecorded (default: always). A record held only
   * until its batch commits outlives a young-generation collection or two and is copied, then
   * promoted; the row alone (flat strings) is a fraction of the exchange's object graph.
   */
  keepExchanges?: () => boolean;
  /**
   * Called when the database is full (disk or --db-max-size): deletes the oldest records
   * and returns how many, so the newest traffic, the most useful when debugging, gets in.
   */
  makeRoom?: () => number;
  /**
   * Rows per transaction, and the queue length that writes at once rather than at the next
   * interval. Under load a row waits at most this many arrivals: waiting the whole interval, a
   * row outlived two young-generation collections and was promoted to the old generation.
   */
  batchSize?: number;
  flushIntervalMs?: number;
  /** Bounds on what waits in memory, the batch retained for a retry included. */
  maxQueue?: number;
  maxQueueBytes?: number;
  /**
   * The memory a prepared record holds (see recordedBytes). It counts against maxQueueBytes when
   * larger than the raw item's approxBytes: decoding can make a record far bigger than what
   * arrived (a compressed body), and it is the record that waits in the queue.
   */
  measure?: (exchange: ClassifiedExchange) => number;
  now?: () => number;
}

/** At 3,000 exchanges a second, a transaction every ~40 ms: see batchSize. */
const DEFAULT_BATCH_SIZE = 128;

export type DropReason = "queue_full" | "db_error" | "prepare";

export interface WriterStats {
  queued: number;
  queuedBytes: number;
  written: number;
  /** Old records deleted to make room when the database was full. */
  prunedForRoom: number;
  dropped: Record<DropReason, number>;
  batches: number;
  lastError: string | null;
  lastErrorAt: number | null;
  failing: boolean;
}

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 2_000;
const WARN_INTERVAL_MS = 60_000;

interface Queued {
  /** Null when onRecorded does not need it (keepExchanges). */
  exchange: ClassifiedExchange | null;
  row: ExchangeRow;
  bytes: number;
}

interface Batch {
  /** The rows' exchanges, those kept (keepExchanges), with their handshake ids. */
  exchanges: ClassifiedExchange[];
  handshakeIds: Array<number | null>;
  rows: ExchangeRow[];
  /** The latest state of each handshake the batch changed, by id. */
  handshakes: Map<number, Handshake>;
  /** What the batch's records count against maxQueueBytes until they are written. */
  bytes: number;
  /** Old records were deleted for it once this attempt (the database was full). */
  roomMade: boolean;
}

export class RecordWriter<T> {
  private readonly logger: Logger;
  private readonly prepare: (item: T) => ClassifiedExchange;
  private readonly analyse: (exchange: ClassifiedExchange) => number | null;
  private readonly changedHandshakes: (dropped?: ClassifiedExchange) => Handshake[];
  private readonly onRecorded: NonNullable<RecordWriterOptions<T>["onRecorded"]>;
  private readonly keepExchanges: () => boolean;
  private readonly makeRoom: () => number;
  private readonly batchSize: number;
  private readonly maxQueue: number;
  private readonly maxQueueBytes: number;
  private readonly measure: (exchange: ClassifiedExchange) => number;
  private readonly now: () => number;
  private readonly sink: RecordSink;
  private readonly timer: NodeJS.Timeout;
  private immediate: NodeJS.Immediate | null = null;
  /** A sink's write that answered with a promise, until it settles: whether the writing may go on. */
  private inFlight: Promise<boolean> | null = null;
  /** close() was called: nothing more is queued. */
  private closing = false;
  /** A close that waits for writes in flight, for a second caller to wait on too. */
  private closingDone: Promise<void> | undefined;
  private closed = false;

  private readonly queue: Queued[] = [];
  /** Items whose prepare threw since the last flush, logged once per flush. */
  private prepareFailures = 0;
  private firstPrepareError: unknown;
  private readonly pendingHandshakes = new Map<number, Handshake>();
  /** Prepared but not yet accepted by the database. */
  private retained: Batch | null = null;
  private queuedBytes = 0;

  private written = 0;
  private batches = 0;
  private prunedForRoom = 0;
  private readonly dropped: Record<DropReason, number> = { queue_full: 0, db_error: 0, prepare: 0 };
  private lastError: string | null = null;
  private lastErrorAt: number | null = null;

  private failingSince: number | null = null;
  private backoffMs = 0;
  private nextAttemptAt = 0;
  private lastWarnAt = -Infinity;
  private warnedThisOutage = false;

  constructor(options: RecordWriterOptions<T>) {
    this.logger = options.logger;
    this.prepare = options.prepare;
    this.analyse = options.analyse ?? (() => null);
    this.changedHandshakes = options.changedHandshakes ?? (() => []);
    this.onRecorded = options.onRecorded ?? (() => {});
    this.keepExchanges = options.keepExchanges ?? (() => true);
    this.makeRoom = options.makeRoom ?? (() => 0);
    this.batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
    this.maxQueue = options.maxQueue ?? 10_000;
    this.maxQueueBytes = options.maxQueueBytes ?? 64 * 1024 * 1024;
    this.measure = options.measure ?? (() => 0);
    this.now = options.now ?? Date.now;

    this.sink = options.sink;

    this.timer = setInterval(() => this.tick(), options.flushIntervalMs ?? 100).unref();
  }

  /**
   * Prepares and analyses the item, then queues it: no I/O, never throws. False when it was
   * dropped. `approxBytes` is the raw item's size; the larger of it and `measure` of the record
   * counts against maxQueueBytes.
   */
  enqueue(item: T, approxBytes: number): boolean {
    const rawBytes = Number.isFinite(approxBytes) && approxBytes > 0 ? approxBytes : 0;
    // A closed writer has no room left either.
    if (this.closing) {
      this.dropped.queue_full++;
      return false;
    }
    let exchange: ClassifiedExchange;
    let row: ExchangeRow;
    try {
      exchange = this.prepare(item);
      row = exchangeToRow(exchange, this.analyse(exchange));
    } catch (err) {
      if (this.prepareFailures++ === 0) this.firstPrepareError = err;
      this.dropped.prepare++;
      return false;
    }
    const bytes = Math.max(rawBytes, this.measure(exchange));
    if (this.queuedCount() >= this.maxQueue || this.queuedBytes + bytes > this.maxQueueBytes) {
      this.dropped.queue_full++;
      // The handshakes' newest state is stored either way: their verdicts hold without this row.
      this.collectHandshakes(exchange);
      return false;
    }
    this.queue.push({ exchange: this.keepExchanges() ? exchange : null, row, bytes });
    this.queuedBytes += bytes;
    if (this.queue.length >= this.batchSize && !this.isFailing()) this.flushSoon();
    return true;
  }

  /**
   * Handshake states to store with the next batch: those enqueued exchanges changed, and those
   * that changed with time alone (an idle handshake settling as failed or abandoned). Bounded
   * like the queue; the newest state of each wins.
   */
  enqueueHandshakes(handshakes: Handshake[]): void {
    for (const handshake of handshakes) {
      if (this.closed || (this.pendingHandshakes.size >= this.maxQueue && !this.pendingHandshakes.has(handshake.id))) return;
      this.pendingHandshakes.set(handshake.id, handshake);
    }
  }

  /** A row prepared but not written yet (queued, or held for a retry), by exchange id. */
  unwrittenRow(id: number): ExchangeRow | undefined {
    // Newest last: a diagnosis mostly asks for the exchanges just before the one at hand.
    for (let i = this.queue.length - 1; i >= 0; i--) if (this.queue[i]!.row.id === id) return this.queue[i]!.row;
    return this.retained?.rows.find((row) => row.id === id);
  }

  /**
   * Writes everything queued now, unless the database refuses; ignores the retry backoff. With a
   * sink that answers with a promise, starts the next write (none while one is in flight); the
   * rest follows as each settles.
   */
  flush(): void {
    this.logPrepareFailures();
    this.collectHandshakes();
    while (!this.inFlight && (this.retained || this.queue.length > 0 || this.pendingHandshakes.size > 0)) {
      const batch = (this.retained ??= this.prepareBatch());
      if (!this.write(batch)) return;
    }
  }

  /**
   * Stops the timer and makes a last attempt; what still cannot be written is counted as lost. The
   * database stays open. A promise when the sink's writes are: it settles once they have.
   */
  close(): void | Promise<void> {
    if (this.closing) return this.closingDone;
    this.closing = true;
    clearInterval(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.flush(); // still open: it takes the last handshakes too
    if (!this.inFlight) return this.finishClose();
    this.closingDone = this.drain().then(() => this.finishClose());
    return this.closingDone;
  }

  /**
   * Until nothing is in flight: each write that settles lets the next one go (as the synchronous
   * loop does), until one leaves its batch for later.
   */
  private async drain(): Promise<void> {
    while (this.inFlight) {
      if (!(await this.inFlight)) return;
      this.flush();
    }
  }

  private finishClose(): void {
    this.closed = true;
    const lost = this.queuedCount();
    if (lost === 0) return;
    this.dropped.db_error += lost;
    this.queue.length = 0;
    this.retained = null;
    this.queuedBytes = 0;
    this.logger.error({ lost, lastError: this.lastError }, "recording database still failing at shutdown: exchanges lost");
  }

  stats(): WriterStats {
    return {
      queued: this.queuedCount(),
      queuedBytes: this.queuedBytes,
      written: this.written,
      prunedForRoom: this.prunedForRoom,
      dropped: { ...this.dropped },
      batches: this.batches,
      lastError: this.lastError,
      lastErrorAt: this.lastErrorAt,
      failing: this.isFailing(),
    };
  }

  private tick(): void {
    if (this.isFailing() && this.now() < this.nextAttemptAt) {
      this.logPrepareFailures();
      // While the database fails too: what the analysis holds for the next batch stays bounded.
      this.collectHandshakes();
      return;
    }
    this.flush();
  }

  /** Not synchronously: a message's whole batch of items is queued first, then written together. */
  private flushSoon(): void {
    this.immediate ??= setImmediate(() => {
      this.immediate = null;
      this.tick();
    });
  }

  private collectHandshakes(dropped?: ClassifiedExchange): void {
    try {
      this.enqueueHandshakes(this.changedHandshakes(dropped));
    } catch (err) {
      // A bug in the analysis costs the handshakes' state, never the recording.
      this.logger.error({ err }, "could not analyse the handshakes of recorded exchanges");
    }
  }

  private isFailing(): boolean {
    return this.failingSince !== null;
  }

  private queuedCount(): number {
    return this.queue.length + (this.retained?.rows.length ?? 0);
  }

  private prepareBatch(): Batch {
    const batch: Batch = { exchanges: [], handshakeIds: [], rows: [], handshakes: new Map(this.pendingHandshakes), bytes: 0, roomMade: false };
    this.pendingHandshakes.clear();
    for (const { exchange, row, bytes } of this.queue.splice(0, this.batchSize)) {
      batch.rows.push(row);
      if (exchange) {
        batch.exchanges.push(exchange);
        batch.handshakeIds.push(row.handshake_id);
      }
      batch.bytes += bytes;
    }
    return batch;
  }

  private logPrepareFailures(): void {
    if (this.prepareFailures === 0) return;
    this.logger.error({ err: this.firstPrepareError, count: this.prepareFailures }, "could not prepare exchanges for recording: dropped");
    this.prepareFailures = 0;
    this.firstPrepareError = undefined;
  }

  /**
   * True when the batch is done with (written, or given up) or may be tried again at once; false
   * when the database cannot be written now (the batch stays retained for the next attempt) or
   * the write is in flight (what follows happens when it settles).
   */
  private write(batch: Batch): boolean {
    if (batch.rows.length === 0 && batch.handshakes.size === 0) {
      this.release(batch);
      return true;
    }
    let pending: void | PromiseLike<void>;
    try {
      pending = this.sink.write(batch.rows, [...batch.handshakes.values()]);
    } catch (err) {
      return this.failed(batch, err);
    }
    if (typeof (pending as PromiseLike<void> | undefined)?.then !== "function") {
      this.succeeded(batch);
      return true;
    }
    const settled = (goOn: () => boolean): boolean => {
      this.inFlight = null;
      let more = false;
      try {
        more = goOn();
      } catch (err) {
        // A bug in what follows a write (a logger, a callback) must not end the recorder thread.
        this.logger.error({ err }, "could not follow up a write to the recording database");
      }
      if (more && !this.closing) this.flushSoon();
      return more;
    };
    this.inFlight = Promise.resolve(pending).then(
      () => settled(() => (this.succeeded(batch), true)),
      (err: unknown) => settled(() => this.failed(batch, err)),
    );
    return false;
  }

  private succeeded(batch: Batch): void {
    this.release(batch);
    this.written += batch.rows.length;
    if (batch.rows.length > 0) this.batches++;
    this.noteRecovered();
    this.notify(batch);
  }

  /**
   * What a failed write leads to: a full database gets old records deleted and the batch tried
   * again at once (true), a batch the database refuses is dropped (true), and a database that
   * cannot be written now gets the batch later (false).
   */
  private failed(batch: Batch, err: unknown): boolean {
    const failure = this.sink.failure(err);
    // Room made and the batch tried again: a full database that took it is no error to report.
    if (failure === "full" && !batch.roomMade) {
      const freed = this.tryMakeRoom();
      if (freed > 0) {
        this.prunedForRoom += freed;
        batch.roomMade = true;
        return true;
      }
    }
    this.noteError(err);
    if (failure === "drop") {
      this.release(batch);
      this.dropped.db_error += batch.rows.length;
      this.logger.error({ err, count: batch.rows.length }, "could not insert a batch of exchanges: dropped");
      return true;
    }
    batch.roomMade = false; // the next attempt may make room again
    this.noteFailing(err);
    return false;
  }

  private tryMakeRoom(): number {
    try {
      return this.makeRoom();
    } catch {
      return 0; // e.g. locked: the insert's own error is the one worth reporting
    }
  }

  private release(batch: Batch): void {
    this.retained = null;
    this.queuedBytes -= batch.bytes;
  }

  private notify(batch: Batch): void {
    try {
      this.onRecorded(batch.exchanges, [...batch.handshakes.values()], batch.handshakeIds, batch.rows.length);
    } catch (err) {
      this.logger.error({ err }, "onRecorded callback failed");
    }
  }

  private noteError(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    const code = this.sink.code(err);
    this.lastError = code ? `${code}: ${message}` : message;
    this.lastErrorAt = this.now();
  }

  private noteFailing(err: unknown): void {
    const now = this.now();
    this.backoffMs = this.isFailing() ? Math.min(this.backoffMs * 2, MAX_BACKOFF_MS) : MIN_BACKOFF_MS;
    this.failingSince ??= now;
    this.nextAttemptAt = now + this.backoffMs;
    if (now - this.lastWarnAt < WARN_INTERVAL_MS) return;
    this.lastWarnAt = now;
    this.warnedThisOutage = true;
    this.logger.warn(
      { code: this.sink.code(err), queued: this.queuedCount(), dropped: { ...this.dropped } },
      "cannot write to the recording database: retrying, traffic is unaffected",
    );
  }

  private noteRecovered(): void {
    if (this.failingSince === null) return;
    // A short outage that fell inside the warning rate limit stays quiet on recovery too.
    if (this.warnedThisOutage) {
      this.logger.info(
        { failedForMs: this.now() - this.failingSince, dropped: { ...this.dropped } },
        "recording to the database resumed",
      );
    }
    this.failingSince = null;
    this.warnedThisOutage = false;
  }
}

/**
 * What a queued record holds in memory, roughly: a byte a character (V8 keeps Latin-1 text, most
 * HTTP and JSON, as one-byte strings), headers and a per-record overhead included. The row shares
 * these strings with the exchange, so they are counted once.
 */
export function recordedBytes(e: ClassifiedExchange): number {
  let chars = e.path.length + (e.query?.length ?? 0) + (e.requestBody.text?.length ?? 0) + (e.responseBody.text?.length ?? 0);
  for (const [name, value] of e.requestHeaders) chars += name.length + value.length;
  for (const [name, value] of e.responseHeaders ?? []) chars += name.length + value.length;
  return chars + 1024;
}
