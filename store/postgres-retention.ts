// Retention on PostgreSQL, run by the elected analyser alone (proxy/record/shared-analyser.ts): the
// same rules as SQLite's (store/retention.ts), by age, by row count and by size (--db-max-size,
// the exchanges table with its indexes and TOAST), in batches of one short transaction each, so
// no delete holds locks for long and replicas' inserts never wait on them. Oldest means started
// first: ids are not in time order across replicas.
import type { ClientBase } from "pg";
import { DAY_MS, type RetentionOptions } from "./retention.js";

export interface PostgresRetentionOptions extends RetentionOptions {
  /** Bytes the exchanges table (indexes and TOAST included) may take; beyond it the oldest tenth goes. */
  maxBytes?: number;
}

/** What the size cap remembers between runs (and analysers), in the meta table. */
interface SizeCapState {
  /** The table's size when the cap last made room. */
  prunedAtBytes: number;
  /** Exchanges still to delete to make that room. */
  toFree: number;
}

async function sizeCapState(client: ClientBase): Promise<SizeCapState> {
  const { rows } = await client.query<{ value: string }>("SELECT value FROM meta WHERE key = 'retention_size_cap'");
  try {
    const { prunedAtBytes, toFree } = JSON.parse(rows[0]?.value ?? "{}") as Partial<SizeCapState>;
    return { prunedAtBytes: Number(prunedAtBytes) || 0, toFree: Number(toFree) || 0 };
  } catch {
    return { prunedAtBytes: 0, toFree: 0 };
  }
}

const deleteOldest = (where: string) =>
  `DELETE FROM exchanges WHERE id IN (SELECT id FROM exchanges ${where} ORDER BY started_at LIMIT $1)`;

/** Deletes at most `batch` exchanges (and handshakes past the age); returns how many exchanges went. */
export async function prunePostgresOnce(client: ClientBase, options: PostgresRetentionOptions): Promise<number> {
  const { maxAgeDays, maxRows, maxBytes, batch = 1000, now = Date.now } = options;
  let deleted = 0;
  if (maxAgeDays !== undefined) {
    const cutoff = now() - maxAgeDays * DAY_MS;
    deleted += (await client.query(deleteOldest("WHERE started_at < $2"), [batch, cutoff])).rowCount ?? 0;
    await client.query("DELETE FROM handshakes WHERE id IN (SELECT id FROM handshakes WHERE ended_at < $2 ORDER BY started_at LIMIT $1)", [batch, cutoff]);
  }
  if (maxRows !== undefined && deleted < batch) {
    const total = Number((await client.query<{ total: number }>("SELECT count(*) AS total FROM exchanges")).rows[0]!.total);
    const excess = Math.min(total - maxRows, batch - deleted);
    if (excess > 0) deleted += (await client.query(deleteOldest(""), [excess])).rowCount ?? 0;
  }
  if (maxBytes !== undefined && maxBytes > 0 && deleted < batch) {
    // PostgreSQL does not shrink a table when rows go: it reuses their space (autovacuum). Over
    // the cap, the oldest tenth goes, once; then only when the table has grown again, else it
    // would go on deleting the space new rows are about to reuse (SQLite's file behaves alike).
    // What it did is kept in the database: the next analyser must not start over.
    const state = await sizeCapState(client);
    const size = Number((await client.query<{ size: number }>("SELECT pg_total_relation_size('exchanges') AS size")).rows[0]!.size);
    // Back under the cap (space reused, or the table rewritten by VACUUM FULL): the mark starts over.
    if (size <= maxBytes) state.prunedAtBytes = 0;
    if (size > maxBytes && size > state.prunedAtBytes) {
      const total = Number((await client.query<{ total: number }>("SELECT count(*) AS total FROM exchanges")).rows[0]!.total);
      state.toFree = Math.max(100, Math.ceil(total / 10));
      state.prunedAtBytes = size;
    }
    if (state.toFree > 0) {
      const gone = (await client.query(deleteOldest(""), [Math.min(batch - deleted, state.toFree)])).rowCount ?? 0;
      state.toFree = gone > 0 ? state.toFree - gone : 0;
      deleted += gone;
    }
    await client.query("INSERT INTO meta (key, value) VALUES ('retention_size_cap', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", [JSON.stringify(state)]);
  }
  return deleted;
}
