import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI_INSPECTOR = path.join(ROOT, "dist/inspector/cli.js");
export const CLI_LENS = path.join(ROOT, "dist/cli/mcp-lens.js");
export const BENCH_DIR = path.join(ROOT, "tests/bench");

export interface BenchRow {
  case: string;
  value: number;
  unit: string;
  note?: string;
}

/** What every group gets from `run.ts`. */
export interface BenchOptions {
  /** Seconds of each measured wrk / open-loop run. */
  durationS: number;
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The q-quantile (0..1) of already collected samples, nearest rank. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** ✓ for a met target, ✗ for a missed one. */
export const mark = (met: boolean) => (met ? "✓" : "✗");

/** "target ≤ 1.10 ✓": the target spelled out, and whether this run met it. */
export function target(value: number, op: "≤" | "≥", limit: number, label = String(limit)): string {
  const met = Number.isFinite(value) && (op === "≤" ? value <= limit : value >= limit);
  return `target ${op} ${label} ${mark(met)}`;
}

/** Joins the non-empty parts of a note. */
export function note(...parts: Array<string | false | undefined | null>): string | undefined {
  const kept = parts.filter((p): p is string => typeof p === "string" && p.length > 0);
  return kept.length > 0 ? kept.join("; ") : undefined;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The headers of a connected client's MCP POST (bearer token, session, protocol version), so
 * mcp-lens records what it records in production: one handshake per session, not per call.
 */
export const MCP_POST_HEADERS: Record<string, string> = {
  "Content-Type": "application/json",
  Accept: "application/json, text/event-stream",
  Authorization: "Bearer eyJhbGciOiJIUzI1NiJ9.bench-session.c2lnbmF0dXJl",
  "Mcp-Session-Id": "6f1c2d3e-0000-4000-8000-000000000001",
  "MCP-Protocol-Version": "2025-06-18",
  "User-Agent": "Claude-User",
};

/** A small MCP tools/call, as a connector sends it: the body every load generator posts. */
export const TOOLS_CALL_BODY = JSON.stringify({
  jsonrpc: "2.0",
  id: 7,
  method: "tools/call",
  params: { name: "search_docs", arguments: { query: "quarterly roadmap", limit: 5 } },
});
