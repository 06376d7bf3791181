// The inspector reads a database that hostile traffic filled, with search terms an operator types
// (or pastes from that traffic). Its SQL is parameterised and its connection read-only: neither a
// recorded client name nor a search term can change what is stored.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InspectorData } from "../../inspector/data.js";
import type { Handshake } from "../../analysis/handshake.js";
import { openDatabase } from "../../store/db.js";
import { handshakeToRow, UPSERT_HANDSHAKE_SQL } from "../../store/schema.js";
import { tempDir } from "../helpers/artifacts.js";

const HOSTILE_NAME = "x'); DROP TABLE handshakes; --";
const INJECTIONS = ["' OR 1=1 --", "%' OR '1'='1", "x'); DELETE FROM handshakes; --", "\\", "%", "_", '"; DROP TABLE exchanges; --'];

function handshake(id: number, clientName: string): Handshake {
  return {
    id,
    clientFamily: "other",
    clientName,
    era: "legacy",
    eraFallback: false,
    registration: "none",
    startedAt: 1_700_000_000_000 + id,
    endedAt: 1_700_000_000_500 + id,
    steps: [],
    outcome: "failed",
    failedStep: "probe",
    exchangeIds: [id],
    diagnoses: [],
  };
}

describe("inspector SQL on hostile data and hostile search terms", () => {
  const tmp = tempDir("mcp-lens-sql-safety-");
  const dbPath = `${tmp.dir}/lens.db`;
  const digest = () => createHash("sha256").update(readFileSync(dbPath)).digest("hex");
  let data: InspectorData;
  let before: string;

  beforeAll(() => {
    const db = openDatabase(dbPath);
    const upsert = db.prepare(UPSERT_HANDSHAKE_SQL);
    upsert.run(handshakeToRow(handshake(1, "claude-ai")));
    upsert.run(handshakeToRow(handshake(2, HOSTILE_NAME)));
    db.pragma("wal_checkpoint(TRUNCATE)");
    db.close();
    before = digest();
    data = new InspectorData(dbPath);
  });

  afterAll(() => {
    data?.close();
    tmp.cleanup();
  });

  it("treats search terms as text: an injection matches nothing and drops nothing", () => {
    for (const term of INJECTIONS) {
      expect(data.listHandshakes({ text: term }).map((h) => h.id), term).toEqual([]);
      expect(data.listHandshakes({ client: term }).map((h) => h.id), term).toEqual([]);
    }
    // The LIKE wildcards in a term are escaped: "%" finds only a literal percent sign.
    expect(data.listHandshakes().map((h) => h.id)).toEqual([2, 1]);
  });

  it("finds a stored hostile client name by its literal text, and returns it unchanged", () => {
    const found = data.listHandshakes({ client: "DROP TABLE handshakes" });
    expect(found.map((h) => [h.id, h.clientName])).toEqual([[2, HOSTILE_NAME]]);
  });

  it("cannot write: the connection is read-only and the file is unchanged after every read", () => {
    const db = (data as unknown as { db: { exec(sql: string): void } }).db;
    expect(() => db.exec("DELETE FROM handshakes")).toThrow(/readonly|read-only/i);
    expect(data.listHandshakes().length).toBe(2);
    expect(digest()).toBe(before);
  });
});
