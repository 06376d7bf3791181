// Retention: deletes old exchanges in small batches, so each delete holds the
// write lock briefly and the writer is never starved.
import type { Database } from "better-sqlite3";
import type { Logger } from "pino";

export interface RetentionOptions {
  /** Delete exchanges that started longer ago than this. */
  maxAgeDays?: number;
  /** Keep at most this many exchanges, the newest by id. */
  maxRows?: number;
  /** Most rows deleted by one pruneOnce call. */
  batch?: number;
  now?: () => number;
}

export const DAY_MS = 24 * 60 * 60 * 1000;
// While a backlog remains (a full batch was deleted), come back soon; otherwise rarely.
const BACKLOG_INTERVAL_MS = 5_000;
const IDLE_INTERVAL_MS = 60_000;

/** Deletes at most `batch` rows: those older than maxAgeDays first, then the oldest beyond maxRows. */
export function pruneOnce(db: Database, options: RetentionOptions): number {
  const { maxAgeDays, maxRows, batch = 1000, now = Date.now } = options;
  let deleted = 0;
  if (maxAgeDays !== undefined) {
    deleted += db
      .prepare(
        `DELETE FROM exchanges WHERE id IN (
           SELECT id FROM exchanges WHERE started_at < ? ORDER BY started_at LIMIT ?)`,
      )
      .run(now() - maxAgeDays * DAY_MS, batch).changes;
  }
  if (maxRows !== undefined && deleted < batch) {
    const { total } = db.prepare("SELECT count(*) AS total FROM exchanges").get() as { total: number };
    const excess = Math.min(total - maxRows, batch - deleted);
    if (excess > 0) deleted += pruneOldest(db, excess);
  }
  return deleted;
}

/** Deletes the `count` oldest exchanges, whatever their age. */
export function pruneOldest(db: Database, count: number): number {
  return db.prepare("DELETE FROM exchanges WHERE id IN (SELECT id FROM exchanges ORDER BY id LIMIT ?)").run(count).changes;
}

/** Room for new exchanges in a full database: the oldest tenth goes (at least 100 rows). */
export function makeRoom(db: Database): number {
  const { total } = db.prepare("SELECT count(*) AS total FROM exchanges").get() as { total: number };
  return pruneOldest(db, Math.max(100, Math.ceil(total / 10)));
}

/** Prunes in the background until the returned function is called. */
export function startRetention(db: Database, options: RetentionOptions, logger: Logger): () => void {
  const batch = options.batch ?? 1000;
  let timer: NodeJS.Timeout;

  const schedule = (delayMs: number): void => {
    timer = setTimeout(run, delayMs).unref();
  };
  const run = (): void => {
    try {
      const deleted = pruneOnce(db, { ...options, batch });
      if (deleted > 0) logger.debug({ deleted }, "retention pruned exchanges");
      schedule(deleted >= batch ? BACKLOG_INTERVAL_MS : IDLE_INTERVAL_MS);
    } catch (err) {
      // Typically SQLITE_BUSY: another connection holds the lock. Try again later.
      logger.warn({ err }, "retention could not prune exchanges");
      schedule(IDLE_INTERVAL_MS);
    }
  };

  schedule(BACKLOG_INTERVAL_MS);
  return () => clearTimeout(timer);
}
