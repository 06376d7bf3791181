// What mcp-lens recorded for real client runs: the exchanges each run sent (runs are sequential,
// so a process's lifetime brackets its requests), the handshakes they belong to, and a readable
// account of both for failure messages. Read from the recording database as the inspector reads it.
import Database from "better-sqlite3";
import { expect } from "vitest";
import type { Diagnosis } from "../../analysis/handshake.js";
import type { HandshakeRow } from "../../store/schema.js";
import type { Pool } from "pg";
import { describeClientRun, type ClientRun } from "./real-clients.js";

export interface ExchangeSummary {
  id: number;
  handshake_id: number | null;
  started_at: number;
  method: string;
  path: string;
  status: number | null;
  kind: string;
  rpc: string | null;
  user_agent: string | null;
  fail_call: 0 | 1;
}

export interface Recording {
  exchanges: ExchangeSummary[];
  handshakes: HandshakeRow[];
}

/** One client process: what it did, and under which label it is reported. */
export interface ClientRunRecord {
  label: string;
  result?: ClientRun;
  failure?: unknown;
}

/** The same from a PostgreSQL recording (replicas sharing one database). */
export async function postgresSnapshot(pool: Pool): Promise<Recording> {
  try {
    const exchanges = await pool.query<ExchangeSummary>(
      `SELECT id, handshake_id, started_at, method, path, status, kind,
         facts::jsonb->'mcp'->>'methods' AS rpc, facts::jsonb->>'userAgent' AS user_agent,
         (req_body LIKE '%"name":"fail"%')::int AS fail_call
       FROM exchanges ORDER BY id`,
    );
    const handshakes = await pool.query<HandshakeRow>("SELECT * FROM handshakes ORDER BY id");
    return { exchanges: exchanges.rows, handshakes: handshakes.rows };
  } catch {
    return { exchanges: [], handshakes: [] }; // schema not there yet
  }
}

function snapshot(dbPath: string): Recording {
  let db: Database.Database;
  try {
    db = new Database(dbPath, { readonly: true, fileMustExist: true });
  } catch {
    return { exchanges: [], handshakes: [] };
  }
  try {
    return {
      exchanges: db
        .prepare(
          `SELECT id, handshake_id, started_at, method, path, status, kind,
             json_extract(facts, '$.mcp.methods') AS rpc, json_extract(facts, '$.userAgent') AS user_agent,
             (req_body LIKE '%"name":"fail"%') AS fail_call
           FROM exchanges ORDER BY id`,
        )
        .all() as ExchangeSummary[],
      handshakes: db.prepare("SELECT * FROM handshakes ORDER BY id").all() as HandshakeRow[],
    };
  } catch {
    return { exchanges: [], handshakes: [] }; // schema not there yet
  } finally {
    db.close();
  }
}

/** The exchanges a run sent. */
export function exchangesOf(run: ClientRunRecord, rec: Recording): ExchangeSummary[] {
  if (!run.result) return [];
  const { startedAt, endedAt } = run.result;
  return rec.exchanges.filter((e) => e.started_at >= startedAt && e.started_at <= endedAt);
}

export function handshakesOf(run: ClientRunRecord, rec: Recording): HandshakeRow[] {
  const ids = new Set(exchangesOf(run, rec).map((e) => e.handshake_id));
  return rec.handshakes.filter((h) => ids.has(h.id));
}

export const diagnosesOf = (h: HandshakeRow) => JSON.parse(h.diagnoses) as Diagnosis[];
const idsOf = (h: HandshakeRow) => JSON.parse(h.exchange_ids) as number[];

/** What the recording shows for a run: its exchanges, and every handshake they belong to. */
export function explain(run: ClientRunRecord, rec: Recording): string {
  const own = exchangesOf(run, rec);
  const lines = [`${run.label}: client ${run.result ? describeClientRun(run.result) : `did not run: ${String(run.failure)}`}`];
  for (const e of own) {
    lines.push(`  #${e.id} hs=${e.handshake_id} ${e.method} ${e.path} ${e.rpc ?? ""} → ${e.status} (${e.kind}, ${e.user_agent ?? "-"})`);
  }
  for (const h of handshakesOf(run, rec)) {
    const foreign = idsOf(h).filter((id) => !own.some((e) => e.id === id));
    const steps = (JSON.parse(h.steps) as Array<{ step: string; status: string; exchangeIds: number[] }>).map((s) => `${s.step}:${s.status}[${s.exchangeIds.join(",")}]`);
    lines.push(
      `  handshake ${h.id}: family=${h.client_family} name=${h.client_name} era=${h.era} era_fallback=${h.era_fallback} registration=${h.registration} ` +
        `outcome=${h.outcome} failed_step=${h.failed_step} first_code=${h.first_code} exchanges=[${idsOf(h).join(",")}]` +
        (foreign.length ? ` (of other runs: ${foreign.join(",")})` : ""),
    );
    lines.push(`    steps ${steps.join(" ")}`);
    for (const d of diagnosesOf(h)) lines.push(`    ${d.severity} ${d.code} [${d.evidence.join(",")}] ${d.summary}`);
  }
  return lines.join("\n");
}

/**
 * The recording once the runs' exchanges are all in handshakes and none is in progress (the
 * tracker settles a failed step after its client's silence), or as it is after `timeoutMs`.
 */
export async function settle(source: string | (() => Promise<Recording>), runs: ClientRunRecord[], timeoutMs: number): Promise<Recording> {
  const deadline = Date.now() + timeoutMs;
  let count = -1;
  for (;;) {
    const rec = typeof source === "string" ? snapshot(source) : await source();
    const stable = rec.exchanges.length === count;
    count = rec.exchanges.length;
    const open = runs.some((run) => exchangesOf(run, rec).some((e) => e.handshake_id === null) || handshakesOf(run, rec).some((h) => h.outcome === "in_progress"));
    if ((stable && !open) || Date.now() > deadline) return rec;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** One client connection is one handshake: all of the run's exchanges in it, and nothing else. */
export function expectOneHandshake(run: ClientRunRecord, rec: Recording): HandshakeRow | undefined {
  const context = explain(run, rec);
  const own = exchangesOf(run, rec);
  const found = handshakesOf(run, rec);
  expect.soft(own.filter((e) => e.handshake_id === null).map((e) => e.id), `${context}\nexchanges without a handshake`).toEqual([]);
  expect.soft(found.map((h) => h.id), `${context}\nexactly one handshake for the connection`).toHaveLength(1);
  const handshake = found.find((h) => h.id === own[0]?.handshake_id);
  if (handshake) expect.soft(idsOf(handshake), `${context}\nthe handshake holds this run's exchanges and no other run's`).toEqual(own.map((e) => e.id));
  return handshake;
}
