// `npm run bench`: speed and memory figures, printed as a table and written to
// tests/bench/results.json. Not part of `npm test`: these machines are shared and noisy.
//   npm run bench -- --only proxy,sse --duration 2
import { execFileSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { CLI_LENS, ROOT, type BenchOptions, type BenchRow } from "./common.js";
import { benchInspector } from "./inspector.js";
import { benchMemory } from "./memory.js";
import { PINNING_NOTE, TASKSET, WRK } from "./procs.js";
import { benchProxy } from "./proxy.js";
import { benchRecording } from "./recording.js";
import { benchReplicas } from "./replicas.js";
import { benchSse } from "./sse.js";

const GROUPS: Record<string, (options: BenchOptions) => BenchRow[] | Promise<BenchRow[]>> = {
  proxy: benchProxy,
  sse: benchSse,
  recording: benchRecording,
  replicas: benchReplicas,
  memory: benchMemory,
  inspector: () => benchInspector(),
};

function parseOptions(): { groups: string[]; options: BenchOptions } {
  const { values } = parseArgs({
    options: { only: { type: "string" }, duration: { type: "string", default: "5" } },
  });
  const groups = values.only ? values.only.split(",").map((g) => g.trim()).filter(Boolean) : Object.keys(GROUPS);
  const unknown = groups.filter((g) => !(g in GROUPS));
  if (unknown.length > 0) throw new Error(`unknown group ${unknown.join(", ")}: expected some of ${Object.keys(GROUPS).join(", ")}`);
  const durationS = Number(values.duration);
  if (!(durationS >= 1 && durationS <= 600)) throw new Error("--duration: seconds between 1 and 600");
  return { groups, options: { durationS } };
}

function machine() {
  const cpus = os.cpus();
  return { cpus: cpus.length, model: cpus[0]?.model, node: process.version, kernel: execFileSync("uname", ["-r"], { encoding: "utf8" }).trim() };
}

function formatValue(value: number): string {
  if (!Number.isFinite(value)) return "—";
  return value.toFixed(Math.abs(value) < 10 ? 2 : 1);
}

function printGroup(rows: BenchRow[], width: number): void {
  for (const r of rows) {
    console.log(`${r.case.padEnd(width)}  ${formatValue(r.value).padStart(9)} ${r.unit.padEnd(9)}${r.note ? `  ${r.note}` : ""}`);
  }
}

let failed = false;

/** A failing group is reported in the table; the others still run. */
async function runGroup(group: string, options: BenchOptions): Promise<BenchRow[]> {
  try {
    return await GROUPS[group]!(options);
  } catch (error) {
    failed = true;
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
    const message = (error instanceof Error ? error.message : String(error)).split("\n")[0]!;
    return [{ case: `${group} failed`, value: NaN, unit: "", note: message }];
  }
}

async function main(): Promise<void> {
  const { groups, options } = parseOptions();
  if (!existsSync(CLI_LENS)) throw new Error(`${path.relative(ROOT, CLI_LENS)} is missing: run npm run build first`);
  const m = machine();
  console.log(`mcp-lens bench on ${m.cpus} × ${m.model ?? "cpu"}, node ${m.node}, kernel ${m.kernel}`);
  console.log(`groups: ${groups.join(", ")}; ${options.durationS} s per run${PINNING_NOTE ? `; ${PINNING_NOTE}` : TASKSET ? "; load on CPU 0, servers on CPU 1" : ""}`);
  if (!WRK) console.log("wrk is missing: install it: apt-get install wrk (the cases that need it are skipped)");
  const started = performance.now();
  const results: Array<{ group: string; rows: BenchRow[] }> = [];
  for (const group of groups) {
    const groupStart = performance.now();
    process.stderr.write(`running ${group}…\n`);
    const rows = await runGroup(group, options);
    process.stderr.write(`${group} took ${((performance.now() - groupStart) / 1000).toFixed(0)} s\n`);
    results.push({ group, rows });
  }
  const all = results.flatMap((r) => r.rows);
  const width = Math.max(...all.map((r) => r.case.length));
  for (const { rows } of results) {
    console.log("");
    printGroup(rows, width);
  }
  const wallS = (performance.now() - started) / 1000;
  console.log(`\nwall time ${wallS.toFixed(0)} s`);
  const out = path.join(ROOT, "tests/bench/results.json");
  writeFileSync(out, JSON.stringify({ at: new Date().toISOString(), machine: m, rows: all }, null, 2));
  console.log(`written to ${path.relative(process.cwd(), out)}`);
}

// Ctrl-C: exit through the "exit" handlers, which kill every child still running.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130));

main().then(
  () => process.exit(failed ? 1 : 0),
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
    process.exit(1);
  },
);
