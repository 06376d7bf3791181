// New exchanges in the order their transactions committed, on PostgreSQL, for the one analyser
// that follows every replica's writes. Ids are taken before a transaction commits, so a replica
// whose batch commits late has rows with ids below ones already read: reading "id > last" would
// skip them for good. Each row carries the transaction that wrote it (rec_xid); a read starts at
// the oldest transaction still running when the previous read's snapshot was taken (xmin): no
// transaction below it can commit later, so nothing below it can appear. Rows at or above it may
// be read twice, and are handed out once.
import type { ClientBase } from "pg";
import { ROW_COLUMNS, type ExchangeRow } from "./schema.js";

export interface CommitCursor {
  /** No transaction below this one can still add rows. */
  from: bigint;
  /** Rows already handed out at or above `from`: id → its transaction. */
  seen: Map<number, bigint>;
}

export const startCursor = (): CommitCursor => ({ from: 0n, seen: new Map() });

const min = (a: bigint, b: bigint) => (a < b ? a : b);

/** Rows committed since the cursor, each once, in commit-transaction order; advances the cursor. */
export async function readCommitted(client: ClientBase, cursor: CommitCursor, limit = 1_000): Promise<ExchangeRow[]> {
  // One snapshot for both: the rows it sees, and the oldest transaction it did not see finish.
  await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  let rows: Array<ExchangeRow & { rec_xid: string }>;
  let horizon: bigint;
  try {
    horizon = BigInt((await client.query<{ xmin: string }>("SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin")).rows[0]!.xmin);
    rows = (
      await client.query<ExchangeRow & { rec_xid: string }>(
        `SELECT ${ROW_COLUMNS.join(", ")}, rec_xid::text AS rec_xid FROM exchanges WHERE rec_xid >= $1::text::xid8 ORDER BY rec_xid, id LIMIT $2`,
        [cursor.from.toString(), limit + cursor.seen.size],
      )
    ).rows;
    await client.query("COMMIT");
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  }
  const fresh = rows.filter((row) => !cursor.seen.has(row.id)).slice(0, limit);
  for (const row of fresh) cursor.seen.set(row.id, BigInt(row.rec_xid));
  // A full page may stop inside a transaction, or before one still running: the next read starts
  // at the lower of the two.
  const next = fresh.length === limit ? min(horizon, BigInt(fresh.at(-1)!.rec_xid)) : horizon;
  if (next > cursor.from) cursor.from = next;
  for (const [id, xid] of cursor.seen) if (xid < cursor.from) cursor.seen.delete(id);
  return fresh.map(({ rec_xid: _, ...row }) => row as ExchangeRow);
}

/** A cursor that hands out what commits from now on (and what the transactions running now add). */
export async function cursorAtNow(client: ClientBase): Promise<CommitCursor> {
  const { rows } = await client.query<{ xmin: string }>("SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin");
  return { from: BigInt(rows[0]!.xmin), seen: new Map() };
}
