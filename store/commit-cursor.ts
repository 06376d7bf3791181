// New exchanges in the order their transactions committed, on PostgreSQL, for the one analyser
// that follows every replica's writes and for the followers of new traffic (store/postgres-feed.ts).
// Ids are taken before a transaction commits, so a replica whose batch commits late has rows with
// ids below ones already read: reading "id > last" would skip them for good. Each row carries the
// transaction that wrote it (rec_xid), and each read remembers its snapshot's bounds: the rows
// new to the next read are exactly those of transactions that snapshot did not see committed,
// those at or above its xmax and those it saw running (its xip). Nothing is read twice, nothing
// is skipped, and a transaction left open for hours costs nothing: only its own rows wait for it.
import type { ClientBase } from "pg";
import { ROW_COLUMNS, type ExchangeRow } from "./schema.js";

/** What a snapshot had seen committed: every transaction below xmax but those in xip. */
interface Seen {
  xmax: string;
  xip: string[];
}

export interface CommitCursor {
  /** Rows of transactions this snapshot had not seen committed are new. */
  after: Seen;
  /**
   * A read that stopped at its limit: it goes on with the rows `upTo` had seen committed (and
   * `after` had not) past this (rec_xid, id), before anything newer.
   */
  partial?: { upTo: Seen; xid: string; id: number };
}

/** From the first row on. */
export const startCursor = (): CommitCursor => ({ after: { xmax: "0", xip: [] } });

const NEW = "(rec_xid >= $1::text::xid8 OR rec_xid = ANY($2::text[]::xid8[]))";
const SEEN_BY = "(rec_xid < $3::text::xid8 AND NOT (rec_xid = ANY($4::text[]::xid8[])))";
const COLUMNS = `${ROW_COLUMNS.join(", ")}, rec_xid::text AS rec_xid`;

async function currentSnapshot(client: ClientBase): Promise<Seen> {
  const { rows } = await client.query<Seen>(
    "SELECT pg_snapshot_xmax(s)::text AS xmax, ARRAY(SELECT pg_snapshot_xip(s)::text) AS xip FROM pg_current_snapshot() s",
  );
  return rows[0]!;
}

/** A cursor that hands out what commits from now on. */
export async function cursorAtNow(client: ClientBase): Promise<CommitCursor> {
  return { after: await currentSnapshot(client) };
}

type Read = ExchangeRow & { rec_xid: string };

const strip = (rows: Read[]): ExchangeRow[] => rows.map(({ rec_xid: _, ...row }) => row as ExchangeRow);

/** Rows committed since the cursor, each once, in commit-transaction order, at most `limit`; advances the cursor. */
export async function readCommitted(client: ClientBase, cursor: CommitCursor, limit = 1_000): Promise<ExchangeRow[]> {
  const next = { ...cursor };
  const rows = await readInto(client, next, limit);
  // Moved only once the read is whole: a read that fails hands out nothing and loses nothing.
  cursor.after = next.after;
  cursor.partial = next.partial;
  return rows;
}

async function readInto(client: ClientBase, cursor: CommitCursor, limit: number): Promise<ExchangeRow[]> {
  // One snapshot for the rows and the bounds the next read starts from.
  await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  try {
    const now = await currentSnapshot(client);
    const out: Read[] = [];
    if (cursor.partial) {
      const { upTo, xid, id } = cursor.partial;
      const rows = (
        await client.query<Read>(
          `SELECT ${COLUMNS} FROM exchanges WHERE ${NEW} AND ${SEEN_BY} AND (rec_xid, id) > ($5::text::xid8, $6) ORDER BY rec_xid, id LIMIT $7`,
          [cursor.after.xmax, cursor.after.xip, upTo.xmax, upTo.xip, xid, id, limit],
        )
      ).rows;
      out.push(...rows);
      if (rows.length === limit) {
        cursor.partial = { upTo, xid: rows.at(-1)!.rec_xid, id: rows.at(-1)!.id };
        await client.query("COMMIT");
        return strip(out);
      }
      cursor.after = upTo;
      cursor.partial = undefined;
    }
    const room = limit - out.length;
    const rows = (
      await client.query<Read>(`SELECT ${COLUMNS} FROM exchanges WHERE ${NEW} ORDER BY rec_xid, id LIMIT $3`, [cursor.after.xmax, cursor.after.xip, room])
    ).rows;
    out.push(...rows);
    if (rows.length === room) cursor.partial = { upTo: now, xid: rows.at(-1)!.rec_xid, id: rows.at(-1)!.id };
    else cursor.after = now;
    await client.query("COMMIT");
    return strip(out);
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  }
}
