// doctor --db FILE|URL: its exchanges and handshakes stored like recorded traffic (redacted with
// the database's own key, classified, grouped, diagnosed), so `inspector list/show --db …` shows a
// doctor check like any handshake a user made. In an SQLite file ids continue the file's: a file
// of its own is best (the proxy's own database gets its traffic from the proxy: point doctor at
// the proxy). In a PostgreSQL database replicas share, ids come from a block of its own.
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import type { Handshake } from "../../analysis/handshake.js";
import { databaseLocation, shownDatabase } from "../../common/database-location.js";
import { nextExchangeId, openDatabase } from "../../store/db.js";
import { ID_BLOCK_SIZE, reserveBlock } from "../../store/id-blocks.js";
import { openPostgres, sharedRedactionKey } from "../../store/postgres.js";
import { postgresSink } from "../../store/postgres-sink.js";
import { exchangeToRow } from "../../store/schema.js";
import { sqliteSink } from "../../store/sink.js";
import { createRedactor, loadOrCreateRedactionKey } from "../../recording/redact.js";
import type { ConnectorRun } from "../connector.js";
import { judgeExchanges } from "../judge-run.js";

export interface RecordedRuns {
  db: string;
  exchanges: number;
  /** The ids of the handshakes stored, for `inspector show ID`. */
  handshakeIds: number[];
}

export function recordRuns(db: string, runs: readonly ConnectorRun[], secrets: readonly string[] = []): Promise<RecordedRuns> {
  const location = databaseLocation(db);
  return location.kind === "sqlite" ? Promise.resolve(recordInSqlite(location.file, runs, secrets)) : recordInPostgres(location.url, runs, secrets);
}

/** The runs judged into stored exchanges (ids from `firstId` on) and handshakes, with each exchange's handshake. */
function judged(runs: readonly ConnectorRun[], redactor: ReturnType<typeof createRedactor>, firstId: number, secrets: readonly string[]) {
  let next = firstId;
  return runs.map((run) => {
    const { exchanges, handshakes } = judgeExchanges(run.exchanges, { redactor, firstId: next, secrets });
    next += exchanges.length;
    const owner = new Map(handshakes.flatMap((h) => h.exchangeIds.map((id) => [id, h.id] as const)));
    return { rows: exchanges.map((e: ClassifiedExchange) => exchangeToRow(e, owner.get(e.id) ?? null)), handshakes: handshakes as Handshake[] };
  });
}

async function recordInPostgres(url: string, runs: readonly ConnectorRun[], secrets: readonly string[]): Promise<RecordedRuns> {
  const pool = await openPostgres(url, () => undefined, 1);
  try {
    const redactor = createRedactor(await sharedRedactionKey(pool));
    const { next: firstId } = await reserveBlock(pool);
    const all = judged(runs, redactor, firstId, secrets);
    const rows = all.flatMap((r) => r.rows);
    if (rows.length > ID_BLOCK_SIZE) throw new Error(`${rows.length} exchanges do not fit in one id block`);
    const handshakes = all.flatMap((r) => r.handshakes);
    await postgresSink(pool).write(rows, handshakes);
    return { db: shownDatabase(url), exchanges: rows.length, handshakeIds: handshakes.map((h) => h.id) };
  } finally {
    await pool.end();
  }
}

function recordInSqlite(dbPath: string, runs: readonly ConnectorRun[], secrets: readonly string[]): RecordedRuns {
  const db = openDatabase(dbPath);
  try {
    const redactor = createRedactor(loadOrCreateRedactionKey(dbPath));
    const sink = sqliteSink(db);
    const result: RecordedRuns = { db: dbPath, exchanges: 0, handshakeIds: [] };
    // Immediate: the next free id is read and used in one write transaction.
    db.transaction(() => {
      for (const { rows, handshakes } of judged(runs, redactor, nextExchangeId(db), secrets)) {
        // Within this transaction, the sink's own nests as a savepoint.
        sink.write(rows, handshakes);
        result.exchanges += rows.length;
        result.handshakeIds.push(...handshakes.map((h) => h.id));
      }
    }).immediate();
    return result;
  } finally {
    db.close();
  }
}
