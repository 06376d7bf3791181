// The proxy's own use of the recording database, beside the recorder thread's writes: opened (and
// migrated) before anything listens, so a wrong --db is a one-line error at start; the ids of
// new exchanges; and the proxy's address for the inspector once it listens.
import type { Pool } from "pg";
import { databaseLocation } from "../common/database-location.js";
import { nextExchangeId, openDatabase } from "./db.js";
import { IdBlocks } from "./id-blocks.js";
import { openPostgres, writeMeta } from "./postgres.js";

export interface ProxyStore {
  /** The next exchange's id; null when none can be had now (see IdBlocks.take). Never waits. */
  nextId(): number | null;
  /** proxy_url, admin_url, upstream, version: where the inspector finds this proxy. */
  writeMeta(entries: Record<string, string>): Promise<void>;
  close(): Promise<void>;
}

export interface ProxyStoreOptions {
  /** --db-max-size, on SQLite. */
  maxSizeBytes?: number;
  /** A connection or reservation that failed after start (PostgreSQL): logged, never thrown. */
  onError(err: unknown): void;
}

export async function openProxyStore(db: string, options: ProxyStoreOptions): Promise<ProxyStore> {
  const location = databaseLocation(db);
  if (location.kind === "postgres") {
    // One connection: an id block now and then, the meta rows once.
    const pool: Pool = await openPostgres(location.url, (err) => options.onError(err), 1);
    try {
      const ids = await IdBlocks.start(pool, options.onError);
      return {
        nextId: () => ids.take(),
        writeMeta: (entries) => writeMeta(pool, entries),
        close: () => pool.end().catch(options.onError),
      };
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
  }
  const sqlite = openDatabase(location.file, { maxSizeBytes: options.maxSizeBytes });
  // SQLite has one writer: ids follow the largest stored, monotonic across restarts.
  let next = nextExchangeId(sqlite);
  const close = async () => {
    if (sqlite.open) sqlite.close();
  };
  return {
    nextId: () => next++,
    async writeMeta(entries) {
      const set = sqlite.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
      for (const [key, value] of Object.entries(entries)) set.run(key, value);
      await close(); // from here on only the recorder thread writes
    },
    close,
  };
}
