// The writer's sink on PostgreSQL (store/sink.ts): one transaction a batch over a small pool,
// exchanges inserted once whatever the retries (a restart can lose the acknowledgement of a
// commit that happened, and the writer sends the batch again), handshakes rewritten as they grow.
// What an error means comes from its SQLSTATE class: the connection or the server going away is
// worth waiting for; a value PostgreSQL cannot hold, or a statement it rejects, is not.
import pg, { type Pool } from "pg";
import type { Handshake } from "../analysis/handshake.js";
import { HANDSHAKE_COLUMNS, handshakeToRow, ROW_COLUMNS, type ExchangeRow } from "./schema.js";
import type { RecordSink, WriteFailure } from "./sink.js";

/**
 * A small pool for the recorder: bounded waits (a server that stops answering is an error to
 * retry, not a hung write), 64-bit integers read as numbers (ids and epoch ms fit in 2^53), and
 * an idle connection the server closes (a restart) reported, not thrown into the thread.
 */
export function createPostgresPool(connectionString: string, onIdleError: (err: Error) => void): Pool {
  const pool = new pg.Pool({
    connectionString,
    max: 2,
    connectionTimeoutMillis: 5_000,
    query_timeout: 10_000,
    idleTimeoutMillis: 30_000,
    types: { getTypeParser: (oid: number, format?: string) => (oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format as "text")) } as pg.CustomTypesConfig,
  });
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

/** PostgreSQL's text holds no NUL character, which a body may: one is kept as U+0000's escape. */
const withoutNul = (value: unknown) => (typeof value === "string" && value.includes("\u0000") ? value.replaceAll("\u0000", "\\u0000") : value);

/**
 * A row as PostgreSQL can hold it. A body with a NUL character is kept whole, as base64 of its
 * (already redacted) text, which the readers decode like the base64 bodies of older records.
 */
function pgExchangeValues(row: ExchangeRow): unknown[] {
  const fixed: ExchangeRow = { ...row };
  for (const side of ["req", "res"] as const) {
    const text = fixed[`${side}_body`];
    if (text?.includes("\u0000") && fixed[`${side}_body_encoding`] === "utf8") {
      fixed[`${side}_body`] = Buffer.from(text, "utf8").toString("base64");
      fixed[`${side}_body_encoding`] = "base64";
    }
  }
  return ROW_COLUMNS.map((column) => withoutNul(fixed[column]));
}

/** SQLSTATE classes of a batch that will never go in: data exceptions, integrity, a statement it rejects. */
const DROP_CLASSES = new Set(["22", "23", "42"]);
/** disk_full, out_of_memory… are retried like an outage; disk_full also makes room first. */
const FULL_STATES = new Set(["53100"]);

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
        if (rows.length > 0) await client.query(insertSql("exchanges", ROW_COLUMNS, rows.length, EXCHANGE_TAIL), rows.flatMap(pgExchangeValues));
        if (handshakes.length > 0) {
          const values = handshakes.flatMap((h) => {
            const row = handshakeToRow(h);
            return HANDSHAKE_COLUMNS.map((column) => withoutNul(row[column]));
          });
          await client.query(insertSql("handshakes", HANDSHAKE_COLUMNS, handshakes.length, HANDSHAKE_TAIL), values);
        }
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
