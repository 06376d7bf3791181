// The inspector's view of a recording in PostgreSQL (--db postgres://…), which several replicas
// write: the same answers as InspectorData gives from an SQLite file, as promises. Its sessions
// are read-only (default_transaction_read_only): the inspector never writes to the database the
// proxies record into. Listing reads the handshakes table through its indexes; a handshake's
// exchanges are read by primary key. New traffic is followed by polling in commit order.
import type { Pool } from "pg";
import type { Handshake } from "../analysis/handshake.js";
import type { LiveMessage } from "../common/live-protocol.js";
import { oneLineMessage, shownDatabase } from "../common/database-location.js";
import { assertNotNewer } from "../common/migrations.js";
import { postgresSchemaVersion } from "../common/migrations-postgres.js";
import { PostgresFeed } from "../store/postgres-feed.js";
import { createPostgresPool } from "../store/postgres-sink.js";
import { MIGRATIONS, ROW_COLUMNS, rowToHandshake, SCHEMA_VERSION, type ExchangeRow, type HandshakeRow } from "../store/schema.js";
import { entriesOf, summaryOf } from "./data.js";
import type { HandshakeDetail, HandshakeFilter, HandshakeSummary, RecordedExchangeEntry, Recording, RecordingPoller } from "./recording.js";

const DEFAULT_LIMIT = 100;

/** `%text%` for ILIKE … ESCAPE '\' (PostgreSQL's LIKE is case-sensitive, SQLite's is not). */
const likePattern = (text: string) => `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/**
 * The diagnoses as jsonb, for the text search. jsonb refuses what JSON.stringify writes for a NUL
 * or a lone surrogate (\u0000, \ud800: a hostile summary can hold either): such a handshake's
 * diagnoses are left out of the search rather than failing it.
 */
const SAFE_DIAGNOSES = "CASE WHEN h.diagnoses ~ '\\\\u(0000|[dD][89a-fA-F])' THEN '[]'::jsonb ELSE h.diagnoses::jsonb END";

const EXCHANGES_BY_IDS = `SELECT ${ROW_COLUMNS.join(", ")} FROM exchanges WHERE id = ANY($1::bigint[]) ORDER BY started_at, id`;

/** The listing's SQL, as InspectorData's, in PostgreSQL's dialect: newest first (started_at, then id). */
function listQuery(filter: HandshakeFilter, anchor?: { id: number; startedAt: number | null }): { sql: string; params: unknown[] } {
  const params: unknown[] = [];
  const param = (value: unknown) => `$${params.push(value)}`;
  const where: string[] = [];
  if (filter.failedOnly) where.push("h.outcome = 'failed'");
  if (filter.sinceMs !== undefined) where.push(`h.started_at >= ${param(filter.sinceMs)}`);
  if (filter.client) {
    const client = param(likePattern(filter.client));
    where.push(`(h.client_family ILIKE ${client} ESCAPE '\\' OR h.client_name ILIKE ${client} ESCAPE '\\')`);
  }
  if (filter.text) {
    const text = param(likePattern(filter.text));
    where.push(`(h.client_family ILIKE ${text} ESCAPE '\\' OR h.client_name ILIKE ${text} ESCAPE '\\' OR h.failed_step ILIKE ${text} ESCAPE '\\'
      OR EXISTS (SELECT 1 FROM jsonb_array_elements(${SAFE_DIAGNOSES}) d WHERE d->>'code' ILIKE ${text} ESCAPE '\\' OR d->>'summary' ILIKE ${text} ESCAPE '\\')
      OR EXISTS (SELECT 1 FROM exchanges e WHERE e.handshake_id = h.id AND e.path ILIKE ${text} ESCAPE '\\'))`);
  }
  if (anchor) {
    where.push(anchor.startedAt === null ? `h.id < ${param(anchor.id)}` : `(h.started_at, h.id) < (${param(anchor.startedAt)}, ${param(anchor.id)})`);
  }
  const sql =
    "SELECT h.*, (SELECT count(*) FROM exchanges e WHERE e.handshake_id = h.id) AS exchange_count FROM handshakes h" +
    `${where.length ? ` WHERE ${where.join(" AND ")}` : ""} ORDER BY h.started_at DESC, h.id DESC LIMIT ${param(filter.limit ?? DEFAULT_LIMIT)}`;
  return { sql, params };
}

export class PostgresRecording implements Recording {
  readonly kind = "postgres";

  private constructor(
    readonly path: string,
    private readonly pool: Pool,
    private readonly metaValues: Record<string, string>,
  ) {}

  /** Opens the database read-only, checking it is an mcp-lens recording of this version; one-line errors. */
  static async open(url: string): Promise<PostgresRecording> {
    const shown = shownDatabase(url);
    const pool = createPostgresPool(url, () => undefined, 2, { readOnly: true });
    try {
      const client = await pool.connect();
      const version = await postgresSchemaVersion(client).finally(() => client.release());
      if (version === 0) throw new Error("not an mcp-lens database (it has no schema_migrations table)");
      assertNotNewer(version, MIGRATIONS);
      if (version < SCHEMA_VERSION) throw new Error(`recorded by an older mcp-lens (schema ${version}); run the proxy on it once to migrate`);
      const { rows } = await pool.query<{ key: string; value: string | null }>("SELECT key, value FROM meta");
      const meta = Object.fromEntries(rows.filter((r) => r.value !== null).map((r) => [r.key, r.value!]));
      return new PostgresRecording(shown, pool, meta);
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw new Error(`cannot open database ${shown}: ${oneLineMessage(error)}`, { cause: error });
    }
  }

  async listHandshakes(filter: HandshakeFilter = {}): Promise<HandshakeSummary[]> {
    return (await this.query(filter)).map(({ row, exchangeCount }) => summaryOf(rowToHandshake(row), exchangeCount));
  }

  async findHandshakes(filter: HandshakeFilter = {}): Promise<Handshake[]> {
    return (await this.query(filter)).map(({ row }) => rowToHandshake(row));
  }

  async getHandshake(id: number): Promise<HandshakeDetail | null> {
    const row = (await this.pool.query<HandshakeRow>("SELECT * FROM handshakes WHERE id = $1", [id])).rows[0];
    if (!row) return null;
    const handshake = rowToHandshake(row);
    return { handshake, exchanges: (await this.exchangeEntries(handshake.exchangeIds)).map((e) => e.exchange) };
  }

  /** Those of the ids that are stored, in the order they started. */
  async exchangeEntries(ids: readonly number[]): Promise<RecordedExchangeEntry[]> {
    if (ids.length === 0) return [];
    return entriesOf((await this.pool.query<ExchangeRow>(EXCHANGES_BY_IDS, [ids])).rows);
  }

  meta(): Record<string, string> {
    return { ...this.metaValues };
  }

  /** Polls from now: every replica's exchanges as they commit, and the handshakes the analyser rewrites. */
  async poller(): Promise<RecordingPoller> {
    const feed = await PostgresFeed.start(this.pool);
    return {
      async poll(): Promise<LiveMessage[]> {
        const { exchanges, handshakes } = await feed.poll();
        return [
          ...entriesOf(exchanges).map((entry): LiveMessage => ({ type: "exchange", ...entry })),
          ...handshakes.map((handshake): LiveMessage => ({ type: "handshake", handshake })),
        ];
      },
    };
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private async query(filter: HandshakeFilter): Promise<Array<{ row: HandshakeRow; exchangeCount: number }>> {
    const { sql, params } = listQuery(filter, await this.anchor(filter.beforeId));
    const { rows } = await this.pool.query<HandshakeRow & { exchange_count: number }>(sql, params);
    return rows.map(({ exchange_count, ...row }) => ({ row, exchangeCount: Number(exchange_count) }));
  }

  /** Where a page ends: the started_at of handshake `beforeId`. */
  private async anchor(beforeId: number | undefined): Promise<{ id: number; startedAt: number | null } | undefined> {
    if (beforeId === undefined) return undefined;
    const row = (await this.pool.query<{ started_at: number }>("SELECT started_at FROM handshakes WHERE id = $1", [beforeId])).rows[0];
    return { id: beforeId, startedAt: row?.started_at ?? null };
  }
}
