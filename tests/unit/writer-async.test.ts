// The writer over a sink whose writes answer with a promise (a store over the network, as
// PostgreSQL will be): one batch in flight at a time, the same queue bounds, retries, room-making
// and drop counts as the synchronous SQLite sink, and a close that waits for the write in flight.
// The sinks here are fakes that hold, fail or lose the acknowledgement of a write on demand.
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { ExchangeRow } from "../../store/schema.js";
import type { RecordSink, WriteFailure } from "../../store/sink.js";
import { RecordWriter, type RecordWriterOptions } from "../../store/writer.js";
import { classifiedExchange } from "../helpers/exchanges.js";
import { waitFor } from "../helpers/processes.js";

class SinkError extends Error {
  constructor(readonly failure: WriteFailure) {
    super(`fake ${failure}`);
  }
}

/** A sink that takes its orders from the test: each write waits for `release`, then commits or fails. */
class FakeSink implements RecordSink {
  readonly committed: number[] = [];
  readonly attempts: number[][] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** What the next writes do, in order; when empty, they commit. */
  readonly plan: Array<WriteFailure | "commit_then_lose_ack"> = [];
  hold = false;
  private readonly waiting: Array<() => void> = [];

  write(rows: readonly ExchangeRow[]): Promise<void> {
    this.attempts.push(rows.map((r) => r.id));
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const step = this.plan.shift();
    return new Promise<void>((resolve, reject) => {
      const settle = () => {
        this.inFlight--;
        if (step === undefined || step === "commit_then_lose_ack") {
          // A store that keeps a row once, whatever the retries (ON CONFLICT DO NOTHING).
          for (const row of rows) if (!this.committed.includes(row.id)) this.committed.push(row.id);
        }
        if (step === undefined) resolve();
        else reject(new SinkError(step === "commit_then_lose_ack" ? "retry" : step));
      };
      if (this.hold) this.waiting.push(settle);
      else setImmediate(settle);
    });
  }
  failure(err: unknown): WriteFailure {
    return err instanceof SinkError ? err.failure : "drop";
  }
  code(err: unknown): string | null {
    return err instanceof SinkError ? `FAKE_${err.failure.toUpperCase()}` : null;
  }
  release(): void {
    this.hold = false;
    for (const settle of this.waiting.splice(0)) settle();
  }
}


const writers: Array<RecordWriter<number>> = [];
afterEach(async () => {
  for (const w of writers.splice(0)) await w.close();
});

function writer(sink: FakeSink, options: Partial<RecordWriterOptions<number>> = {}) {
  const recorded: number[] = [];
  const w = new RecordWriter<number>({
    sink,
    logger: pino({ level: "silent" }),
    prepare: (id) => classifiedExchange(id),
    onRecorded: (batch) => recorded.push(...batch.map((e) => e.id)),
    batchSize: 4,
    flushIntervalMs: 10,
    ...options,
  });
  writers.push(w);
  return { w, recorded };
}

const ids = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("the writer over a sink that answers with a promise", () => {
  it("has one batch in flight at a time and writes everything, in order", async () => {
    const sink = new FakeSink();
    sink.hold = true;
    const { w, recorded } = writer(sink);
    for (const id of ids(1, 10)) w.enqueue(id, 100);
    w.flush();
    expect(sink.attempts).toEqual([[1, 2, 3, 4]]);
    w.flush(); // nothing more while a write is in flight
    expect(sink.attempts).toHaveLength(1);
    for (const id of ids(11, 14)) w.enqueue(id, 100);
    expect(w.stats().queued).toBe(14);
    sink.release();
    await waitFor(() => sink.committed.length === 14, "every row committed");
    expect(sink.committed).toEqual(ids(1, 14));
    expect(recorded).toEqual(ids(1, 14));
    expect(sink.maxInFlight).toBe(1);
    expect(w.stats()).toMatchObject({ written: 14, queued: 0, failing: false });
  });

  it("keeps a batch the store cannot take now, retries it with backoff, and writes it when the store is back", async () => {
    const sink = new FakeSink();
    sink.plan.push("retry", "retry");
    const { w } = writer(sink);
    for (const id of ids(1, 3)) w.enqueue(id, 100);
    w.flush();
    await waitFor(() => w.stats().failing, "failing");
    expect(w.stats()).toMatchObject({ queued: 3, written: 0, lastError: "FAKE_RETRY: fake retry" });
    await waitFor(() => sink.committed.length === 3, "written once the store is back", 5000);
    expect(sink.attempts).toEqual([[1, 2, 3], [1, 2, 3], [1, 2, 3]]);
    expect(w.stats()).toMatchObject({ written: 3, failing: false, dropped: { db_error: 0, queue_full: 0 } });
  });

  it("bounds what waits while the store fails: the rest is counted as dropped, never blocks", async () => {
    const sink = new FakeSink();
    sink.plan.push(...Array<WriteFailure>(50).fill("retry"));
    const { w } = writer(sink, { maxQueue: 6 });
    for (const id of ids(1, 4)) w.enqueue(id, 100);
    w.flush();
    await waitFor(() => w.stats().failing, "failing");
    const accepted = ids(5, 20).map((id) => w.enqueue(id, 100));
    expect(accepted.filter(Boolean)).toHaveLength(2);
    expect(w.stats()).toMatchObject({ queued: 6, dropped: { queue_full: 14 } });
  });

  it("a store that committed but lost the acknowledgement gets the same rows again; a store that keeps each row once has each once", async () => {
    const sink = new FakeSink();
    sink.plan.push("commit_then_lose_ack");
    const { w, recorded } = writer(sink);
    for (const id of ids(1, 4)) w.enqueue(id, 100);
    w.flush();
    await waitFor(() => w.stats().written === 4, "written after the retry", 5000);
    expect(sink.attempts).toEqual([[1, 2, 3, 4], [1, 2, 3, 4]]);
    expect(sink.committed).toEqual([1, 2, 3, 4]);
    expect(recorded).toEqual([1, 2, 3, 4]);
  });

  it("drops a batch the store refuses, counts it, and goes on with the next", async () => {
    const sink = new FakeSink();
    sink.plan.push("drop");
    const { w } = writer(sink);
    for (const id of ids(1, 8)) w.enqueue(id, 100);
    w.flush();
    await waitFor(() => sink.committed.length === 4, "the next batch written");
    expect(sink.committed).toEqual(ids(5, 8));
    expect(w.stats()).toMatchObject({ written: 4, dropped: { db_error: 4 }, failing: false });
  });

  it("deletes old records once when the store is full and tries the batch again at once", async () => {
    const sink = new FakeSink();
    sink.plan.push("full");
    let madeRoom = 0;
    const { w } = writer(sink, { makeRoom: () => (madeRoom++, 10) });
    for (const id of ids(1, 4)) w.enqueue(id, 100);
    w.flush();
    await waitFor(() => sink.committed.length === 4, "written after making room");
    expect(madeRoom).toBe(1);
    // Room made and the batch taken: no error to report.
    expect(w.stats()).toMatchObject({ written: 4, prunedForRoom: 10, failing: false, lastError: null });
  });

  it("close waits for the write in flight and writes the rest; a store still failing loses only what was queued, counted", async () => {
    const sink = new FakeSink();
    sink.hold = true;
    const { w } = writer(sink);
    for (const id of ids(1, 6)) w.enqueue(id, 100);
    w.flush();
    const closing = w.close();
    expect(closing).toBeInstanceOf(Promise);
    expect(w.enqueue(7, 100)).toBe(false); // closing: nothing more is queued
    setTimeout(() => sink.release(), 20);
    await closing;
    expect(sink.committed).toEqual(ids(1, 6));
    expect(w.stats()).toMatchObject({ written: 6, queued: 0, dropped: { db_error: 0, queue_full: 1 } });

    // Closing while the store fails: a batch the store refuses is dropped and the next one still
    // gets its attempt, as the synchronous loop would give it.
    const refusing = new FakeSink();
    refusing.plan.push("retry", "drop");
    const third = writer(refusing).w;
    for (const id of ids(1, 8)) third.enqueue(id, 100);
    third.flush();
    await waitFor(() => third.stats().failing, "failing");
    await third.close();
    expect(refusing.committed).toEqual(ids(5, 8));
    expect(third.stats()).toMatchObject({ written: 4, dropped: { db_error: 4 } });

    const failing = new FakeSink();
    failing.plan.push(...Array<WriteFailure>(10).fill("retry"));
    const second = writer(failing).w;
    for (const id of ids(1, 5)) second.enqueue(id, 100);
    await second.close();
    expect(failing.attempts).toHaveLength(1); // one last attempt, not a loop
    expect(second.stats()).toMatchObject({ written: 0, queued: 0, dropped: { db_error: 5 } });
  });
});
