// On start-up: handshakes a previous run left in progress can no longer progress (the tracker that
// followed them is gone), so they are settled once, by analysis/verdict.ts's rule.
import type { Database } from "better-sqlite3";
import { settle } from "../analysis/verdict.js";
import { type HandshakeRow, handshakeToRow, rowToHandshake, UPSERT_HANDSHAKE_SQL } from "./schema.js";

/** Settles every handshake stored in progress; returns how many changed. */
export function settleUnfinishedHandshakes(db: Database): number {
  const rows = db.prepare("SELECT * FROM handshakes WHERE outcome = 'in_progress'").all() as HandshakeRow[];
  const upsert = db.prepare(UPSERT_HANDSHAKE_SQL);
  db.transaction(() => {
    for (const row of rows) upsert.run(handshakeToRow(settle(rowToHandshake(row))));
  })();
  return rows.length;
}
