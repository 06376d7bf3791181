// The writer's sink on PostgreSQL (store/sink.ts): one transaction a batch over a small pool,
// exchanges inserted once whatever the retries (a restart can lose the acknowledgement of a
// commit that happened, and the writer sends the batch again), handshakes rewritten as they grow,
// a NUL character (which its text cannot hold) stored as U+FFFD.
// What an error means comes from its SQLSTATE class: the connection or the server going away is
// worth waiting for; a value PostgreSQL cannot hold, or a statement it rejects, is not.
import pg, { type ClientBase, type Pool } from "pg";
import type { Handshake } from "../analysis/handshake.js";
import { exchangeRowValues, HANDSHAKE_COLUMNS, handshakeToRow, ROW_COLUMNS, type ExchangeRow } from "./schema.js";
import type { RecordSink, WriteFailure } from "./sink.js";

/** Every connection's: bounded waits, and 64-bit integers read as numbers. */
export function clientSettings(connectionString: string, options: { readOnly?: boolean } = {}): pg.ClientConfig {
  return {
    connectionString,
    // The inspector's sessions: every transaction read-only, whatever a query asks.
    ...(options.readOnly ? { options: "-c default_transaction_read_only=on" } : {}),
    connectionTimeoutMillis: 5_000,
    query_timeout: 10_000,
    types: { getTypeParser: (oid: number, format?: string) => (oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format as "text")) } as pg.CustomTypesConfig,
  };
}

/**
 * A small pool for the recorder: bounded waits (a server that stops answering is an error to
 * retry, not a hung write), 64-bit integers read as numbers (ids and epoch ms fit in 2^53), and
 * an idle connection the server closes (a restart) reported, not thrown into the thread.
 */
export function createPostgresPool(connectionString: string, onIdleError: (err: Error) => void, max = 2, options: { readOnly?: boolean } = {}): Pool {
  const pool = new pg.Pool({ ...clientSettings(connectionString, options), max, idleTimeoutMillis: 30_000 });
  pool.on("error", onIdleError);
  return pool;
}

/** `INSERT … VALUES ($1…), ($n…)` for `count` rows of `columns`. */
function insertSql(table: string, columns: readonly string[], count: number, tail: string): string {
  const values = Array.from({ length: count }, (_, row) => `(${columns.map((_, column) => `$${row * columns.length + column + 1}`).join(", ")})`);
  return `INSERT INTO ${table} (${columns.join(", ")}) VALUES ${values.join(", ")} ${tail}`;
}

const EXCHANGE_TAIL = "ON CONFLICT (id) DO NOTHING";
const HANDSHAKE_TAIL = `ON CONFLICT (id) DO UPDATE SET ${HANDSHAKE_COLUMNS.filter((c) => c !== "id").map((c) => `${c} = EXCLUDED.${c}`).join(", ")}`;

/**
 * PostgreSQL's text holds no NUL character, which a body may (valid UTF-8, never valid JSON): it
 * is stored as U+FFFD, the replacement character, so the text stays text for every reader.
 */
const withoutNul = (value: unknown) => (typeof value === "string" && value.includes("\u0000") ? value.replaceAll("\u0000", "\uFFFD") : value);

/** At most this many rows a statement: PostgreSQL takes at most 65,535 parameters (36 a row here). */
const ROWS_PER_STATEMENT = 1_000;

/** Inserts `rows` in statements of ROWS_PER_STATEMENT, within the caller's transaction. */
async function insertRows<T>(client: ClientBase, table: string, columns: readonly string[], tail: string, rows: readonly T[], values: (row: T) => unknown[]): Promise<void> {
  for (let from = 0; from < rows.length; from += ROWS_PER_STATEMENT) {
    const chunk = rows.slice(from, from + ROWS_PER_STATEMENT);
    await client.query(insertSql(table, columns, chunk.length, tail), chunk.flatMap(values).map(withoutNul));
  }
}

/** Inserts or rewrites the handshakes, within the caller's transaction. */
export function upsertHandshakes(client: ClientBase, handshakes: readonly Handshake[]): Promise<void> {
  return insertRows(client, "handshakes", HANDSHAKE_COLUMNS, HANDSHAKE_TAIL, handshakes, (h) => {
    const row = handshakeToRow(h);
    return HANDSHAKE_COLUMNS.map((column) => row[column]);
  });
}

/** The channel a replica's batch notifies when it commits exchanges. */
export const RECORDED_CHANNEL = "mcp_lens_recorded";

/**
 * SQLSTATE classes of a batch that will never go in: a value it cannot hold (22), integrity (23),
 * a value too large for an index (54: a hostile header's kilobytes in an indexed column), a
 * statement it rejects (42).
 */
const DROP_CLASSES = new Set(["22", "23", "42", "54"]);
/** disk_full, out_of_memory… are retried like an outage; disk_full also makes room first. */
const FULL_STATES = new Set(["53100"]);

/** The server refused these values or this statement for good: a write that can never succeed. */
export const refusedForGood = (err: unknown): boolean => DROP_CLASSES.has(sqlState(err)?.slice(0, 2) ?? "");

function sqlState(err: unknown): string | null {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : null;
}

export function postgresSink(pool: Pool): RecordSink {
  return {
    async write(rows: readonly ExchangeRow[], handshakes: readonly Handshake[]) {
      const client = await pool.connect();
      // A connection that dies while checked out also says so as an event: the query's own
      // rejection is the one that counts, the event must not crash the thread.
      const onError = (err: Error) => void (broken ??= err);
      client.on("error", onError);
      let broken: Error | undefined;
      try {
        await client.query("BEGIN");
        await insertRows(client, "exchanges", ROW_COLUMNS, EXCHANGE_TAIL, rows, exchangeRowValues);
        await upsertHandshakes(client, handshakes);
        // Delivered at commit, to the analyser (proxy/record/shared-analyser.ts): new rows to read.
        if (rows.length > 0) await client.query(`NOTIFY ${RECORDED_CHANNEL}`);
        await client.query("COMMIT");
      } catch (err) {
        broken = err as Error;
        await client.query("ROLLBACK").catch(() => undefined);
        throw err;
      } finally {
        client.off("error", onError);
        // A connection that failed mid-transaction is not given back to the pool.
        client.release(broken !== undefined && sqlState(broken) === null ? broken : undefined);
      }
    },
    failure(err): WriteFailure {
      const state = sqlState(err);
      // Without a SQLSTATE it is the connection (refused, reset, timed out, terminated), or the
      // driver meeting a broken one: worth waiting for. A batch is only given up on the server's word.
      if (state === null) return "retry";
      if (FULL_STATES.has(state)) return "full";
      return DROP_CLASSES.has(state.slice(0, 2)) ? "drop" : "retry";
    },
    code(err) {
      return sqlState(err) ?? ((err as { code?: unknown } | null)?.code as string | undefined) ?? null;
    },
  };
}
