// Off the request path, for each classified exchange: assign it to a connector handshake
// (proxy/handshakes.ts), diagnose the handshakes that changed (proxy/diagnose.ts), count them.
// Both are pure; this module feeds them the exchanges they need, from memory or the database.
import type { Database } from "better-sqlite3";
import { diagnose } from "./diagnose.js";
import type { ClassifiedExchange } from "./exchange.js";
import type { Diagnosis, Handshake } from "./handshake.js";
import { HandshakeTracker } from "./handshakes.js";
import { rowToExchange, type ExchangeRow } from "./store/schema.js";
import type { Analysis } from "./store/writer.js";

/** Recent exchanges kept in memory for diagnosis; older ones are read back from the database. */
const CACHE_BYTES = 32 * 1024 * 1024;
/** Idle handshakes are closed (in progress → abandoned) this often. */
const EVICT_EVERY_MS = 30_000;
/** A very long session is diagnosed on its first and last exchanges. */
const MAX_DIAGNOSED_EXCHANGES = 1000;

function approxBytes(e: ClassifiedExchange): number {
  return 2048 + (e.requestBody.text?.length ?? 0) + (e.responseBody.text?.length ?? 0);
}

/**
 * What makes a new diagnosis worth its cost: outcome and step statuses, and how many exchanges
 * the setup steps have. Repeated healthy tool calls do not change it.
 */
function signature(h: Handshake): string {
  const steps = h.steps.map((s) => `${s.step}:${s.status}${s.step === "list" || s.step === "tool_call" ? "" : `:${s.exchangeIds.length}`}`);
  return `${h.outcome}|${h.failedStep}|${steps.join(",")}`;
}

export class HandshakeAnalysis {
  private readonly tracker = new HandshakeTracker();
  private readonly cache = new Map<number, ClassifiedExchange>();
  private cacheBytes = 0;
  private readonly diagnosed = new Map<number, { signature: string; diagnoses: Diagnosis[] }>();
  private lastEviction = 0;
  private readonly selectExchange;

  constructor(db: Database) {
    this.selectExchange = db.prepare("SELECT * FROM exchanges WHERE id = ?");
  }

  analyse(exchange: ClassifiedExchange): Analysis {
    this.remember(exchange);
    const { handshakeId, updated } = this.tracker.add(exchange);
    const changed = [...updated];
    if (exchange.startedAt - this.lastEviction > EVICT_EVERY_MS) {
      this.lastEviction = exchange.startedAt;
      changed.push(...this.tracker.evictIdle(exchange.startedAt));
    }
    return { handshakeId, handshakes: changed.map((h) => this.withDiagnoses(h)) };
  }

  private withDiagnoses(h: Handshake): Handshake {
    const sig = signature(h);
    let entry = this.diagnosed.get(h.id);
    if (!entry || entry.signature !== sig) {
      entry = { signature: sig, diagnoses: diagnose(h, this.exchangesOf(h.exchangeIds)) };
      this.diagnosed.delete(h.id); // re-insert: oldest first, for the bound below
      this.diagnosed.set(h.id, entry);
      while (this.diagnosed.size > 10_000) this.diagnosed.delete(this.diagnosed.keys().next().value!);
    }
    return { ...h, diagnoses: entry.diagnoses };
  }

  private exchangesOf(ids: number[]): ClassifiedExchange[] {
    const half = MAX_DIAGNOSED_EXCHANGES / 2;
    const chosen = ids.length > MAX_DIAGNOSED_EXCHANGES ? [...ids.slice(0, half), ...ids.slice(-half)] : ids;
    const found: ClassifiedExchange[] = [];
    for (const id of chosen) {
      const cached = this.cache.get(id);
      const row = cached ? undefined : (this.selectExchange.get(id) as ExchangeRow | undefined);
      const exchange = cached ?? (row && rowToExchange(row));
      if (exchange) found.push(exchange);
    }
    return found;
  }

  private remember(exchange: ClassifiedExchange): void {
    this.cache.set(exchange.id, exchange);
    this.cacheBytes += approxBytes(exchange);
    for (const [id, old] of this.cache) {
      if (this.cacheBytes <= CACHE_BYTES) break;
      this.cache.delete(id);
      this.cacheBytes -= approxBytes(old);
    }
  }
}
