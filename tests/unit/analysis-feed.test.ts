// The recorder's analysis as record-worker.ts wires it: diagnosis reads a handshake's earlier
// exchanges back from the database, or from the writer's queue while they are not written yet.
import { afterEach, describe, expect, it } from "vitest";
import BetterSqlite3 from "better-sqlite3";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import type { Handshake } from "../../analysis/handshake.js";
import { HandshakeAnalysis } from "../../proxy/record/analysis-feed.js";
import { createLogger } from "../../common/log.js";
import { migrate, type ExchangeRow } from "../../store/schema.js";
import { RecordWriter } from "../../store/writer.js";
import { exchangeById } from "../../store/db.js";
import { sqliteSink } from "../../store/sink.js";
import { flow, PRM } from "../helpers/diagnose-flow.js";

const open: BetterSqlite3.Database[] = [];
afterEach(() => {
  for (const db of open.splice(0)) db.close();
});

function recorder(lookUpUnwritten: boolean, options: { maxQueue?: number; lookUp?: (id: number) => ExchangeRow | undefined } = {}) {
  const db = new BetterSqlite3(":memory:");
  open.push(db);
  migrate(db);
  const storedExchange = exchangeById(db);
  const handshakes: Handshake[] = [];
  const errors: Array<{ err: unknown; count: number }> = [];
  let exchangesRecorded = 0;
  const analysis: HandshakeAnalysis = new HandshakeAnalysis(
    (id): ExchangeRow | undefined => (options.lookUp ?? ((id) => (lookUpUnwritten ? writer.unwrittenRow(id) : undefined)))(id) ?? storedExchange(id),
    (err, count) => errors.push({ err, count }),
  );
  const writer: RecordWriter<ClassifiedExchange> = new RecordWriter<ClassifiedExchange>({
    sink: sqliteSink(db),
    logger: createLogger("silent"),
    flushIntervalMs: 60_000, // flushed by the test
    maxQueue: options.maxQueue,
    prepare: (e) => e,
    analyse: (e) => analysis.analyse(e),
    changedHandshakes: (dropped) => analysis.changed(dropped),
    keepExchanges: () => false,
    onRecorded: (exchanges, changed) => {
      handshakes.push(...changed);
      exchangesRecorded += exchanges.length;
    },
  });
  return { writer, handshakes, errors, exchangesRecorded: () => exchangesRecorded };
}

/** A probe, then 404 at both protected-resource metadata paths: the diagnosis cites both. */
function prmMissing() {
  const f = flow();
  f.probe();
  const first = f.prm({ status: 404, reply: "Not Found", res: [["Content-Type", "text/plain"]], resWithout: ["content-type"] });
  const second = f.get("protected_resource_metadata", PRM, { status: 404, reply: "Not Found" });
  return { exchanges: f.exchanges, evidence: [first.id, second.id] };
}

describe("HandshakeAnalysis in the recorder", () => {
  it("diagnoses with the exchanges still in the writer's queue, none of them written yet", () => {
    const { exchanges, evidence } = prmMissing();
    const { writer, handshakes, exchangesRecorded } = recorder(true);
    for (const e of exchanges) expect(writer.enqueue(e, 1024)).toBe(true);
    expect(writer.unwrittenRow(evidence[0]!)?.id).toBe(evidence[0]);
    writer.flush();
    expect(writer.unwrittenRow(evidence[0]!)).toBeUndefined(); // written: the database has it now
    const diagnosis = handshakes.at(-1)?.diagnoses.find((d) => d.code === "protected_resource_metadata_missing");
    expect(diagnosis?.evidence).toEqual(evidence);
    // Without the live feed, queued rows do not keep their exchanges.
    expect(exchangesRecorded()).toBe(0);
    writer.close();
  });

  it("without the queue, the same traffic is diagnosed from what the database has: not enough", () => {
    const { exchanges, evidence } = prmMissing();
    const { writer, handshakes } = recorder(false);
    for (const e of exchanges) writer.enqueue(e, 1024);
    writer.flush();
    expect(handshakes.length).toBeGreaterThan(0); // the handshake was stored, only its diagnosis differs
    const diagnosis = handshakes.at(-1)?.diagnoses.find((d) => d.code === "protected_resource_metadata_missing");
    expect(diagnosis?.evidence).not.toEqual(evidence);
    writer.close();
  });

  it("diagnoses from the database once the earlier exchanges are written, the newest from the queue", () => {
    const { exchanges, evidence } = prmMissing();
    const { writer, handshakes } = recorder(true);
    for (const e of exchanges.slice(0, -1)) writer.enqueue(e, 1024);
    writer.flush();
    expect(writer.unwrittenRow(evidence[0]!)).toBeUndefined(); // only the database has it
    writer.enqueue(exchanges.at(-1)!, 1024);
    expect(writer.unwrittenRow(evidence[1]!)?.id).toBe(evidence[1]);
    writer.flush();
    const diagnosis = handshakes.at(-1)?.diagnoses.find((d) => d.code === "protected_resource_metadata_missing");
    expect(diagnosis?.evidence).toEqual(evidence);
    writer.close();
  });

  it("diagnoses with an exchange the full queue dropped, which no lookup finds", () => {
    const { exchanges, evidence } = prmMissing();
    expect(exchanges.at(-1)!.id).toBe(evidence[1]); // the dropped one is evidence
    const { writer, handshakes } = recorder(true, { maxQueue: exchanges.length - 1 });
    expect(exchanges.map((e) => writer.enqueue(e, 1024)).at(-1)).toBe(false);
    writer.flush();
    expect(writer.stats().dropped.queue_full).toBe(1);
    const diagnosis = handshakes.at(-1)?.diagnoses.find((d) => d.code === "protected_resource_metadata_missing");
    expect(diagnosis?.evidence).toEqual(evidence);
    writer.close();
  });

  it("stores a handshake whose diagnosis throws without it, and says so once per batch", () => {
    const { exchanges } = prmMissing();
    const { writer, handshakes, errors } = recorder(true, {
      lookUp: () => {
        throw new Error("lookup bug");
      },
    });
    for (const e of exchanges) writer.enqueue(e, 1024);
    writer.flush();
    expect(handshakes.at(-1)?.exchangeIds).toEqual(exchanges.map((e) => e.id));
    expect(handshakes.at(-1)?.diagnoses).toEqual([]);
    expect(errors).toEqual([{ err: new Error("lookup bug"), count: 1 }]);
    writer.close();
  });
});
