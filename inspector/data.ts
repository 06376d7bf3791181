// The inspector's view of a recording database, opened READ-ONLY: the inspector never writes to
// the file the proxy records into. Listing reads only the handshakes table through its indexes
// (handshakes_started_at, handshakes_outcome for failed ones); a handshake's exchanges are read by
// primary key. New traffic is followed through the proxy's /live WebSocket, else by polling.
import fs from "node:fs";
import BetterSqlite3, { type Database } from "better-sqlite3";
import { diagnose } from "../analysis/diagnose/index.js";
import { byStart, type ClassifiedExchange } from "../analysis/exchange.js";
import type { ClientFamily, DiagnosisCode, Handshake, HandshakeEra, HandshakeOutcome, HandshakeStep, RegistrationKind } from "../analysis/handshake.js";
import { groupHandshakes } from "../analysis/handshakes.js";
import type { LiveMessage } from "../common/live-protocol.js";
import { oneLineMessage } from "../common/database-location.js";
import { assertNotNewer, schemaVersion } from "../common/migrations.js";
import { MIGRATIONS, rowToExchange, rowToHandshake, SCHEMA_VERSION, type ExchangeRow, type HandshakeRow } from "../store/schema.js";
import { withVerdict } from "../analysis/verdict.js";
import { HandshakeVersions } from "../analysis/handshake-versions.js";
import type { HandshakeDetail, HandshakeFilter, HandshakeSummary, RecordedExchangeEntry, Recording } from "./recording.js";

export type { HandshakeDetail, HandshakeFilter, HandshakeSummary, RecordedExchangeEntry };

export type { LiveMessage };

export interface ReanalyseOptions {
  /** Only exchanges started at or after this epoch ms. */
  sinceMs?: number;
  /** The newest this many exchanges at most (they are held in memory); default 20 000. */
  maxExchanges?: number;
  /** The clock the verdicts are judged at; default now. */
  now?: number;
}

const DEFAULT_LIMIT = 100;
const DEFAULT_REANALYSE_EXCHANGES = 20_000;

/** `%text%` for LIKE … ESCAPE '\'. */
const likePattern = (text: string) => `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

const SUMMARY_SQL = `SELECT h.*, (SELECT count(*) FROM exchanges e WHERE e.handshake_id = h.id) AS exchange_count FROM handshakes h`;
const TEXT_MATCH = `(h.client_family LIKE @text ESCAPE '\\' OR h.client_name LIKE @text ESCAPE '\\' OR h.failed_step LIKE @text ESCAPE '\\'
  OR EXISTS (SELECT 1 FROM json_each(h.diagnoses) d
             WHERE json_extract(d.value, '$.code') LIKE @text ESCAPE '\\' OR json_extract(d.value, '$.summary') LIKE @text ESCAPE '\\')
  OR EXISTS (SELECT 1 FROM exchanges e WHERE e.handshake_id = h.id AND e.path LIKE @text ESCAPE '\\'))`;

/** Opens a recording database read-only, with a one-line reason when it cannot be read. */
function openReadOnly(file: string): Database {
  let db: Database | undefined;
  try {
    if (!fs.existsSync(file)) throw new Error("no such file (set --db or MCP_LENS_DB)");
    db = new BetterSqlite3(file, { readonly: true, fileMustExist: true, timeout: 1_000 });
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[];
    if (!tables.includes("exchanges")) throw new Error("not an mcp-lens database (it has no exchanges table)");
    const version = schemaVersion(db);
    assertNotNewer(version, MIGRATIONS);
    if (version < SCHEMA_VERSION) throw new Error(`recorded by an older mcp-lens (schema ${version}); run the proxy on it once to migrate`);
    return db;
  } catch (error) {
    db?.close();
    throw new Error(`cannot open database ${file}: ${oneLineMessage(error)}`, { cause: error });
  }
}

export class InspectorData implements Recording {
  readonly kind = "sqlite";
  private readonly db: Database;
  private readonly statements;

  constructor(readonly path: string) {
    this.db = openReadOnly(path);
    const prepare = (sql: string) => this.db.prepare(sql);
    this.statements = {
      handshake: prepare("SELECT * FROM handshakes WHERE id = ?"),
      exchange: prepare("SELECT * FROM exchanges WHERE id = ?"),
      exchangesByIds: prepare("SELECT * FROM exchanges WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"),
      exchangesAfter: prepare("SELECT * FROM exchanges WHERE id > ? ORDER BY id LIMIT ?"),
      maxExchangeId: prepare("SELECT coalesce(max(id), 0) FROM exchanges").pluck(),
      meta: prepare("SELECT key, value FROM meta"),
      updatedAfter: prepare(`SELECT * FROM handshakes WHERE id IN (
          SELECT handshake_id FROM exchanges WHERE id > @after
          UNION SELECT id FROM handshakes WHERE outcome = 'in_progress'
          UNION SELECT value FROM json_each(@also)) ORDER BY id`),
    };
  }

  /** Newest first. */
  listHandshakes(filter: HandshakeFilter = {}): HandshakeSummary[] {
    return this.query(filter).map(({ row, exchangeCount }) => summaryOf(rowToHandshake(row), exchangeCount));
  }

  /** The same selection as listHandshakes, as full handshake records. */
  findHandshakes(filter: HandshakeFilter = {}): Handshake[] {
    return this.query(filter).map(({ row }) => rowToHandshake(row));
  }

  getHandshake(id: number): HandshakeDetail | null {
    const row = this.statements.handshake.get(id) as HandshakeRow | undefined;
    return row ? this.detailOf(rowToHandshake(row)) : null;
  }

  /** A handshake (stored or re-analysed) with its exchanges: those it keeps ids of, by primary key. */
  detailOf(handshake: Handshake): HandshakeDetail {
    return { handshake, exchanges: this.getExchanges(handshake.exchangeIds) };
  }

  getExchange(id: number): ClassifiedExchange | null {
    const row = this.statements.exchange.get(id) as ExchangeRow | undefined;
    return row ? rowToExchange(row) : null;
  }

  /** Those of the ids that are stored, in the order they started. */
  getExchanges(ids: readonly number[]): ClassifiedExchange[] {
    return this.exchangeEntries(ids).map((entry) => entry.exchange);
  }

  /** Those of the ids that are stored, in the order they started, with the handshake each was assigned to. */
  exchangeEntries(ids: readonly number[]): RecordedExchangeEntry[] {
    // By primary key in id order (no sort in SQLite), then in the order they started: the same
    // for one proxy's ids, not for a file other replicas' rows were copied into.
    if (ids.length === 0) return [];
    return entriesOf(this.statements.exchangesByIds.all(JSON.stringify(ids)) as ExchangeRow[]).sort((a, b) => byStart(a.exchange, b.exchange));
  }

  /** What the proxy wrote about itself: proxy_url, upstream, admin_url, version. */
  meta(): Record<string, string> {
    const rows = this.statements.meta.all() as Array<{ key: string; value: string | null }>;
    return Object.fromEntries(rows.filter((r) => r.value !== null).map((r) => [r.key, r.value!]));
  }

  /** Polls for what /live would have sent, from exchange `afterId` (default: the newest now). */
  poller(afterId?: number): DatabasePoller {
    return new DatabasePoller(this, afterId);
  }

  maxExchangeId(): number {
    return this.statements.maxExchangeId.get() as number;
  }

  /** Exchanges with an id above `id`, in id order, with the handshake each was assigned to. */
  exchangesAfter(id: number, limit = 500): RecordedExchangeEntry[] {
    return entriesOf(this.statements.exchangesAfter.all(id, limit) as ExchangeRow[]);
  }

  /**
   * Handshakes that may have changed since exchange `exchangeId` was recorded: those a later
   * exchange joined, those in progress (time alone settles them), and `alsoIds`.
   */
  handshakesUpdatedAfter(exchangeId: number, alsoIds: Iterable<number> = []): Handshake[] {
    const rows = this.statements.updatedAfter.all({ after: exchangeId, also: JSON.stringify([...alsoIds]) }) as HandshakeRow[];
    return rows.map(rowToHandshake);
  }

  /**
   * Re-runs grouping, diagnosis and verdict over the stored exchanges in memory, as this version
   * of mcp-lens would (for databases recorded by an older one). Newest first; writes nothing.
   */
  reanalyse(options: ReanalyseOptions = {}): Handshake[] {
    const rows = this.db
      .prepare("SELECT * FROM exchanges WHERE started_at >= ? ORDER BY id DESC LIMIT ?")
      .all(options.sinceMs ?? 0, options.maxExchanges ?? DEFAULT_REANALYSE_EXCHANGES) as ExchangeRow[];
    const exchanges = rows.reverse().map(rowToExchange);
    const byId = new Map(exchanges.map((e) => [e.id, e]));
    const now = options.now ?? Date.now();
    return groupHandshakes(exchanges, now)
      .map((h) => withVerdict(h, diagnose(h, h.exchangeIds.flatMap((id) => byId.get(id) ?? [])), now))
      .sort((a, b) => b.startedAt - a.startedAt || b.id - a.id);
  }

  /** The query plans of a listing, of reading one handshake with its exchanges, and of a poll (tests, benchmarks). */
  queryPlans(filter: HandshakeFilter = {}): { list: string[]; show: string[]; poll: string[] } {
    const plan = (sql: string, params: unknown) =>
      (this.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(params) as Array<{ detail: string }>).map((r) => r.detail);
    const { sql, params } = listQuery(filter, this.anchor(filter.beforeId));
    return {
      list: plan(sql, params),
      show: [...plan(this.statements.handshake.source, [1]), ...plan(this.statements.exchangesByIds.source, ["[1]"])],
      poll: plan(this.statements.updatedAfter.source, { after: 1, also: "[1]" }),
    };
  }

  close(): void {
    this.db.close();
  }

  private query(filter: HandshakeFilter): Array<{ row: HandshakeRow; exchangeCount: number }> {
    const { sql, params } = listQuery(filter, this.anchor(filter.beforeId));
    const rows = this.db.prepare(sql).all(params) as Array<HandshakeRow & { exchange_count: number }>;
    return rows.map(({ exchange_count, ...row }) => ({ row, exchangeCount: exchange_count }));
  }

  /** Where a page ends: the started_at of handshake `beforeId`. */
  private anchor(beforeId: number | undefined): { id: number; startedAt: number | null } | undefined {
    if (beforeId === undefined) return undefined;
    const row = this.statements.handshake.get(beforeId) as HandshakeRow | undefined;
    return { id: beforeId, startedAt: row?.started_at ?? null };
  }
}

/** A listing's row. */
export function summaryOf(h: Handshake, exchangeCount: number): HandshakeSummary {
  return {
    id: h.id,
    clientFamily: h.clientFamily,
    clientName: h.clientName,
    era: h.era,
    eraFallback: h.eraFallback,
    registration: h.registration,
    startedAt: h.startedAt,
    endedAt: h.endedAt,
    outcome: h.outcome,
    failedStep: h.failedStep,
    firstCode: h.diagnoses[0]?.code ?? null,
    firstSummary: h.diagnoses[0]?.summary ?? null,
    exchangeCount,
  };
}

export const entriesOf = (rows: ExchangeRow[]): RecordedExchangeEntry[] =>
  rows.map((row) => ({ exchange: rowToExchange(row), handshakeId: row.handshake_id }));

/** The listing's SQL: WHERE clauses the indexes serve, newest first (started_at, then id). */
function listQuery(filter: HandshakeFilter, anchor?: { id: number; startedAt: number | null }) {
  const where: string[] = [];
  const params: Record<string, string | number> = { limit: filter.limit ?? DEFAULT_LIMIT };
  if (filter.failedOnly) where.push("h.outcome = 'failed'");
  if (filter.sinceMs !== undefined) {
    where.push("h.started_at >= @since");
    params.since = filter.sinceMs;
  }
  if (filter.client) {
    where.push("(h.client_family LIKE @client ESCAPE '\\' OR h.client_name LIKE @client ESCAPE '\\')");
    params.client = likePattern(filter.client);
  }
  if (filter.text) {
    where.push(TEXT_MATCH);
    params.text = likePattern(filter.text);
  }
  if (anchor) {
    where.push(anchor.startedAt === null ? "h.id < @beforeId" : "(h.started_at, h.id) < (@beforeAt, @beforeId)");
    params.beforeId = anchor.id;
    if (anchor.startedAt !== null) params.beforeAt = anchor.startedAt;
  }
  const sql = `${SUMMARY_SQL}${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY h.started_at DESC, h.id DESC LIMIT @limit`;
  return { sql, params };
}

// ---------------------------------------------------------------------------------------------
// Following new traffic

/** Ids skipped by the cursor are re-checked this long: exchanges are recorded when they complete. */
const PENDING_MS = 10 * 60_000;
const MAX_PENDING = 10_000;
const POLL_BATCH = 1_000;

/**
 * Polls the database for what the /live feed would have sent since the last poll: new exchanges
 * (also those that completed late, under an id the cursor had passed) and changed handshakes.
 */
export class DatabasePoller {
  private cursor: number;
  /** Ids the cursor passed that were not recorded yet, with when they were first missed. */
  private readonly pending = new Map<number, number>();
  private readonly versions = new HandshakeVersions();

  constructor(
    private readonly data: InspectorData,
    fromExchangeId = data.maxExchangeId(),
  ) {
    this.cursor = fromExchangeId;
    // Known from the start: in-progress handshakes are reported when they change, not at once.
    for (const h of data.handshakesUpdatedAfter(Number.MAX_SAFE_INTEGER)) this.versions.note(h);
  }

  poll(now = Date.now()): LiveMessage[] {
    const since = this.cursor;
    const late = this.data.exchangeEntries([...this.pending.keys()]);
    const fresh = this.data.exchangesAfter(since, POLL_BATCH);
    for (const { exchange } of late) this.pending.delete(exchange.id);
    for (const [id, at] of this.pending) if (now - at > PENDING_MS) this.pending.delete(id);
    for (const { exchange } of fresh) {
      for (let id = this.cursor + 1; id < exchange.id && this.pending.size < MAX_PENDING; id++) this.pending.set(id, now);
      this.cursor = exchange.id;
    }
    const entries = [...late, ...fresh];
    const also = new Set([...this.versions.inProgress, ...entries.flatMap((e) => (e.handshakeId === null ? [] : [e.handshakeId]))]);
    const changed = this.data.handshakesUpdatedAfter(since, also).filter((h) => this.versions.note(h));
    return [
      ...entries.map((e): LiveMessage => ({ type: "exchange", ...e })),
      ...changed.map((handshake): LiveMessage => ({ type: "handshake", handshake })),
    ];
  }
}
