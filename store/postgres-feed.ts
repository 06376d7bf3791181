// New traffic in a PostgreSQL database replicas share, as a follower sees it: the exchanges every
// replica commits (in commit order, store/commit-cursor.ts), and the handshakes that changed:
// those in progress (time alone settles them), those the new exchanges name, and those that ended
// lately (the analyser assigns exchanges to handshakes a second or so after they commit). Feeds
// each replica's /live and the inspector's poller alike.
import type { Pool } from "pg";
import type { Handshake } from "../analysis/handshake.js";
import { HandshakeVersions } from "../analysis/handshake-versions.js";
import { cursorAtNow, readCommitted, type CommitCursor } from "./commit-cursor.js";
import { rowToHandshake, type ExchangeRow, type HandshakeRow } from "./schema.js";

const BATCH = 1_000;
/** A handshake the analyser rewrote is one that ended lately: within this of the last poll (its hold, a slow write). */
const REWRITTEN_WITHIN_MS = 60_000;
/** …and started within the analyser's window (the handshakes_started_at index bounds the read). */
const OPEN_WINDOW_MS = 30 * 60_000;
/** Handshakes read a poll at most (the latest to change first): a flood of connections costs a bounded read. */
const MAX_HANDSHAKES = 1_000;

export interface FeedBatch {
  exchanges: ExchangeRow[];
  handshakes: Handshake[];
}

export class PostgresFeed {
  private lastPollAt = Date.now();

  private constructor(
    private readonly pool: Pool,
    private cursor: CommitCursor,
    private readonly versions: HandshakeVersions,
  ) {}

  /** From now on; the handshakes in progress now are reported when they change, not at once. */
  static async start(pool: Pool): Promise<PostgresFeed> {
    const client = await pool.connect();
    try {
      const cursor = await cursorAtNow(client);
      const versions = new HandshakeVersions();
      const open = await client.query<HandshakeRow>("SELECT * FROM handshakes WHERE outcome = 'in_progress' ORDER BY ended_at DESC LIMIT $1", [MAX_HANDSHAKES]);
      for (const row of open.rows) versions.note(rowToHandshake(row));
      return new PostgresFeed(pool, cursor, versions);
    } finally {
      client.release();
    }
  }

  /** What was committed and changed since the last poll. */
  async poll(): Promise<FeedBatch> {
    const client = await this.pool.connect();
    try {
      // The cursor and the clock move only once the whole poll has worked: a poll that fails
      // (the database going away) leaves them for the next, which then hands out what this one read.
      const cursor = { ...this.cursor };
      const exchanges = await readCommitted(client, cursor, BATCH);
      const since = this.lastPollAt - REWRITTEN_WITHIN_MS;
      const polledAt = Date.now();
      const named = [...this.versions.inProgress, ...exchanges.flatMap((r) => (r.handshake_id === null ? [] : [r.handshake_id]))];
      const { rows } = await client.query<HandshakeRow>(
        "SELECT * FROM handshakes WHERE id = ANY($1::bigint[]) OR (started_at >= $2 AND ended_at >= $3) ORDER BY ended_at DESC, id LIMIT $4",
        [named, since - OPEN_WINDOW_MS, since, MAX_HANDSHAKES],
      );
      rows.reverse();
      this.cursor = cursor;
      this.lastPollAt = polledAt;
      return { exchanges, handshakes: rows.map(rowToHandshake).filter((h) => this.versions.note(h)) };
    } finally {
      client.release();
    }
  }
}
