// Inspector on a large database: 1,000,000 exchanges in 100,000 handshakes (10 % failed).
// Prints how long opening, listing failed handshakes, showing one and searching take.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { InspectorData } from "../../inspector/data.js";
import { openDatabase } from "../../store/db.js";
import { INSERT_EXCHANGE_SQL, UPSERT_HANDSHAKE_SQL, exchangeRowValues, exchangeToRow, handshakeToRow } from "../../store/schema.js";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import type { Handshake } from "../../analysis/handshake.js";
import { CLI_INSPECTOR, type BenchRow } from "./common.js";

const EXCHANGES = 1_000_000;
const PER_HANDSHAKE = 10;

function exchange(id: number, startedAt: number, failed: boolean): ClassifiedExchange {
  const body = (text: string | null) => ({ text, encoding: "utf8" as const, size: text?.length ?? 0, truncated: false, decoded: null });
  return {
    id, startedAt, durationMs: 3.2, ttfbMs: 2.9, clientAddr: "203.0.113.7", method: "POST", host: "coda.example.com",
    path: "/mcp", query: null, status: failed ? 401 : 200, upstreamError: null, aborted: false, websocket: false,
    requestHeaders: [["content-type", "application/json"], ["user-agent", "python-httpx/0.28.1"]],
    requestBody: body('{"jsonrpc":"2.0","id":1,"method":"tools/list"}'),
    responseHeaders: [["content-type", "application/json"]],
    responseBody: body('{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}'),
    sseEvents: null, kind: "mcp_post", facts: { userAgent: "python-httpx/0.28.1", mcp: { messages: [], methods: ["tools/list"] } },
  };
}

function handshake(first: number, startedAt: number, failed: boolean): Handshake {
  const ids = Array.from({ length: PER_HANDSHAKE }, (_, i) => first + i);
  return {
    id: first, clientFamily: failed ? "chatgpt" : "claude.ai", clientName: null, era: "legacy", eraFallback: false, registration: "dcr", startedAt, endedAt: startedAt + 900,
    steps: [{ step: "probe", status: failed ? "failed" : "ok", exchangeIds: ids, at: startedAt }],
    outcome: failed ? "failed" : "succeeded", failedStep: failed ? "probe" : null, exchangeIds: ids,
    diagnoses: failed ? [{ code: "issuer_mismatch", severity: "error", summary: "issuer https://a/ is not https://a", evidence: [first], fix: "f", reference: "RFC 8414 §3.3" }] : [],
  };
}

function time<T>(fn: () => T): { ms: number; value: T } {
  const start = performance.now();
  const value = fn();
  return { ms: performance.now() - start, value };
}

export function benchInspector(): BenchRow[] {
  const dir = mkdtempSync(path.join(tmpdir(), "mcp-lens-bench-"));
  const file = path.join(dir, "big.db");
  try {
    const db = openDatabase(file);
    const insert = db.prepare(INSERT_EXCHANGE_SQL);
    const upsert = db.prepare(UPSERT_HANDSHAKE_SQL);
    const base = Date.now() - EXCHANGES * 1000;
    const fill = time(() =>
      db.transaction(() => {
        for (let first = 1; first <= EXCHANGES; first += PER_HANDSHAKE) {
          const failed = first % (PER_HANDSHAKE * 10) === 1;
          const at = base + first * 1000;
          for (let i = 0; i < PER_HANDSHAKE; i++) insert.run(exchangeRowValues(exchangeToRow(exchange(first + i, at + i, failed), first)));
          upsert.run(handshakeToRow(handshake(first, at, failed)));
        }
      })(),
    );
    db.close();

    const open = time(() => new InspectorData(file));
    const data = open.value;
    const failed = time(() => data.listHandshakes({ failedOnly: true, limit: 100 }));
    const show = time(() => data.getHandshake(EXCHANGES / 2 + 1));
    const search = time(() => data.listHandshakes({ text: "issuer_mismatch", limit: 100 }));
    data.close();
    const cli = time(() => spawnSync(process.execPath, [CLI_INSPECTOR, "list", "--failed", "--db", file], { encoding: "utf8" }));
    if (cli.value.status !== 0) throw new Error(`inspector list failed: ${cli.value.stderr}`);
    return [
      { case: "inspector: fill 1,000,000 exchanges (setup)", value: fill.ms / 1000, unit: "s" },
      { case: "inspector: open the 1M-exchange DB", value: open.ms, unit: "ms" },
      { case: "inspector: list 100 failed handshakes", value: failed.ms, unit: "ms", note: `${failed.value.length} rows` },
      { case: "inspector: show one handshake with its exchanges", value: show.ms, unit: "ms" },
      { case: "inspector: text search", value: search.ms, unit: "ms" },
      { case: "inspector: `inspector list --failed` process, end to end", value: cli.ms, unit: "ms" },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
