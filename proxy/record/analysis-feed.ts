// Off the request path, for each classified exchange: assign it to a connector handshake
// (analysis/handshakes.ts), diagnose the handshakes that changed (analysis/diagnose/), count them.
// Both are pure; this module feeds them the exchanges they need, through a lookup: the database
// or the writer's queue (SQLite, in the recorder thread), or rows read ahead (the PostgreSQL
// analyser, which asks idsToRead first: its reads cannot be synchronous).
import { diagnose } from "../../analysis/diagnose/index.js";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import type { Diagnosis, Handshake } from "../../analysis/handshake.js";
import { HandshakeTracker } from "../../analysis/handshakes.js";
import { rowToExchange, type ExchangeRow } from "../../store/schema.js";
import { withVerdict } from "../../analysis/verdict.js";

/** A very long session is diagnosed on its first and last exchanges. */
const MAX_DIAGNOSED_EXCHANGES = 1000;

/**
 * What makes a new diagnosis worth its cost: outcome and step statuses, and how many exchanges
 * the setup steps have. Repeated healthy tool calls do not change it.
 */
function signature(h: Handshake): string {
  const steps = h.steps.map((s) => `${s.step}:${s.status}${s.step === "list" || s.step === "tool_call" ? "" : `:${s.exchangeIds.length}`}`);
  return `${h.outcome}|${h.failedStep}|${steps.join(",")}`;
}

const verdictKey = (h: Handshake) => `${h.outcome}|${h.failedStep}`;

/** The exchanges a diagnosis reads: all of them, or a very long session's first and last. */
function diagnosedIds(ids: number[]): number[] {
  const half = MAX_DIAGNOSED_EXCHANGES / 2;
  return ids.length > MAX_DIAGNOSED_EXCHANGES ? [...ids.slice(0, half), ...ids.slice(-half)] : ids;
}

export class HandshakeAnalysis {
  private readonly tracker = new HandshakeTracker();
  private readonly diagnosed = new Map<number, { signature: string; diagnoses: Diagnosis[] }>();
  /** The outcome and failed step last handed out per handshake, to report only changes on tick. */
  private readonly reported = new Map<number, string>();

  /**
   * Diagnosis reads a handshake's exchanges through `lookup`: from the database, and those not
   * written yet from the writer's queue. No cache of recent exchanges: holding every one for
   * seconds, just in case, had each promoted to the old generation and cost ~12 MiB of RSS at
   * peak, for a diagnosis that runs only when a handshake's setup changes (see signature).
   */
  constructor(
    private readonly lookup: (id: number) => ExchangeRow | undefined,
    /** Diagnoses that threw, once per batch: the first error and how many. */
    private readonly onError: (err: unknown, count: number) => void = () => {},
  ) {}

  /**
   * Places the exchange into its handshake; returns the handshake's id (null: none). The
   * handshakes it changed are built and judged by `changed`, once per batch, not per exchange.
   */
  analyse(exchange: ClassifiedExchange): number | null {
    return this.tracker.place(exchange);
  }

  /**
   * The handshakes changed since the last call, in their new state, diagnosed where their setup
   * changed. `dropped`: an exchange the writer could not queue, which no lookup would find.
   */
  changed(dropped?: ClassifiedExchange): Handshake[] {
    return this.judgeChanged(this.takeChanged(), dropped);
  }

  /** changed in two steps, for a caller that reads the exchanges (idsToRead) in between. */
  takeChanged(): Handshake[] {
    return this.tracker.takeChanged();
  }

  judgeChanged(handshakes: Handshake[], dropped?: ClassifiedExchange): Handshake[] {
    const now = this.tracker.now;
    const judged: Handshake[] = [];
    let failures = 0;
    let firstError: unknown;
    for (const h of handshakes) {
      try {
        judged.push(this.judge(h, now, dropped));
      } catch (err) {
        // A rule that throws on one handshake costs that handshake its diagnosis, not the batch
        // its handshakes: the grouping's state is stored as it is.
        failures++;
        firstError ??= err;
        judged.push(h);
      }
    }
    if (failures > 0) this.onError(firstError, failures);
    return judged;
  }

  /**
   * Time passing changes verdicts without any new exchange: a client that went quiet after an
   * error has failed, one that never came back from the browser has abandoned. Returns the
   * handshakes whose outcome or failed step changed since they were last handed out.
   */
  tick(now: number): Handshake[] {
    return this.judgeTick(this.tickCandidates(now), now);
  }

  /** tick in two steps, for a caller that reads the exchanges (idsToRead) in between. */
  tickCandidates(now: number): Handshake[] {
    const candidates = new Map<number, Handshake>();
    for (const h of this.tracker.evictIdle(now)) candidates.set(h.id, h);
    for (const h of this.tracker.snapshot(now)) if (!candidates.has(h.id) && h.outcome !== "succeeded") candidates.set(h.id, h);
    return [...candidates.values()];
  }

  judgeTick(candidates: Handshake[], now: number): Handshake[] {
    const changed: Handshake[] = [];
    for (const h of candidates) {
      const judged = withVerdict(h, this.diagnosesOf(h), now);
      if (this.reported.get(h.id) !== verdictKey(judged)) changed.push(this.report(judged));
    }
    return changed;
  }

  private judge(h: Handshake, now: number, current?: ClassifiedExchange): Handshake {
    return this.report(withVerdict(h, this.diagnosesOf(h, current), now));
  }

  private report(h: Handshake): Handshake {
    this.reported.delete(h.id); // re-insert: oldest first, for the bound below
    this.reported.set(h.id, verdictKey(h));
    while (this.reported.size > 20_000) this.reported.delete(this.reported.keys().next().value!);
    return h;
  }

  /** The exchange ids judging `h` will read: none while its diagnosis is current. */
  idsToRead(h: Handshake): number[] {
    return this.diagnosed.get(h.id)?.signature === signature(h) ? [] : diagnosedIds(h.exchangeIds);
  }

  private diagnosesOf(h: Handshake, current?: ClassifiedExchange): Diagnosis[] {
    const sig = signature(h);
    let entry = this.diagnosed.get(h.id);
    if (!entry || entry.signature !== sig) {
      entry = { signature: sig, diagnoses: diagnose(h, this.exchangesOf(h.exchangeIds, current)) };
      this.diagnosed.delete(h.id); // re-insert: oldest first, for the bound below
      this.diagnosed.set(h.id, entry);
      while (this.diagnosed.size > 10_000) this.diagnosed.delete(this.diagnosed.keys().next().value!);
    }
    return entry.diagnoses;
  }

  private exchangesOf(ids: number[], current?: ClassifiedExchange): ClassifiedExchange[] {
    const found: ClassifiedExchange[] = [];
    for (const id of diagnosedIds(ids)) {
      if (id === current?.id) {
        found.push(current);
        continue;
      }
      const row = this.lookup(id);
      if (row) found.push(rowToExchange(row));
    }
    return found;
  }
}
