// doctor --db FILE: its exchanges and handshakes stored like recorded traffic (redacted with the
// database's own key, classified, grouped, diagnosed), so `inspector list/show --db FILE` shows a
// doctor check like any handshake a user made. Ids continue the database's: a file of its own is
// best (the proxy's own database gets its traffic from the proxy: point doctor at the proxy).
import { nextExchangeId, openDatabase } from "../../store/db.js";
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

export function recordRuns(dbPath: string, runs: readonly ConnectorRun[], secrets: readonly string[] = []): RecordedRuns {
  const db = openDatabase(dbPath);
  try {
    const redactor = createRedactor(loadOrCreateRedactionKey(dbPath));
    const sink = sqliteSink(db);
    const result: RecordedRuns = { db: dbPath, exchanges: 0, handshakeIds: [] };
    // Immediate: the next free id is read and used in one write transaction.
    db.transaction(() => {
      let next = nextExchangeId(db);
      for (const run of runs) {
        const { exchanges, handshakes } = judgeExchanges(run.exchanges, { redactor, firstId: next, secrets });
        next += exchanges.length;
        const owner = new Map(handshakes.flatMap((h) => h.exchangeIds.map((id) => [id, h.id] as const)));
        // Within this transaction, the sink's own nests as a savepoint.
        sink.write(exchanges.map((e) => exchangeToRow(e, owner.get(e.id) ?? null)), handshakes);
        result.exchanges += exchanges.length;
        result.handshakeIds.push(...handshakes.map((h) => h.id));
      }
    }).immediate();
    return result;
  } finally {
    db.close();
  }
}
