// Where the writer's batches go: one transaction a batch, exchanges and the handshakes they
// changed together. The writer (store/writer.ts) owns the queue, its bounds, retries and drop
// counts; a sink only writes, and says what an error means. SQLite's writes synchronously
// (better-sqlite3, in the recorder thread); a sink may also answer with a promise, for a store
// reached over the network.
import BetterSqlite3, { type Database } from "better-sqlite3";
import type { Handshake } from "../analysis/handshake.js";
import { exchangeRowValues, handshakeToRow, INSERT_EXCHANGE_SQL, UPSERT_HANDSHAKE_SQL, type ExchangeRow } from "./schema.js";

/** What a failed write means: try again later, delete old records and try again, or give the batch up. */
export type WriteFailure = "retry" | "full" | "drop";

export interface RecordSink {
  /** Writes the rows and handshakes in one transaction, or throws (rejects) with nothing written. */
  write(rows: readonly ExchangeRow[], handshakes: readonly Handshake[]): void | Promise<void>;
  failure(err: unknown): WriteFailure;
  /** The store's code for the error, for the logs (SQLITE_BUSY, 57P01…). */
  code(err: unknown): string | null;
}

/** Primary SQLite codes that mean "cannot write now", as opposed to "this batch is wrong". */
const RETRYABLE_CODES = ["SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN"];

const sqliteCode = (err: unknown): string | null => (err instanceof BetterSqlite3.SqliteError ? err.code : null);

export function sqliteSink(db: Database): RecordSink {
  const insert = db.prepare(INSERT_EXCHANGE_SQL);
  const upsertHandshake = db.prepare(UPSERT_HANDSHAKE_SQL);
  const insertAll = db.transaction((rows: readonly ExchangeRow[], handshakes: readonly Handshake[]) => {
    for (const row of rows) insert.run(exchangeRowValues(row));
    for (const handshake of handshakes) upsertHandshake.run(handshakeToRow(handshake));
  });
  return {
    // IMMEDIATE: fail at BEGIN when another connection holds the write lock.
    write: (rows, handshakes) => insertAll.immediate(rows, handshakes),
    failure(err) {
      const code = sqliteCode(err);
      if (code === null) return "drop";
      // SQLITE_FULL: the disk, or --db-max-size (max_page_count).
      if (code === "SQLITE_FULL" || code.startsWith("SQLITE_FULL_")) return "full";
      return RETRYABLE_CODES.some((c) => code === c || code.startsWith(`${c}_`)) ? "retry" : "drop";
    },
    code: sqliteCode,
  };
}
