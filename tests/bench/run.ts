// `npm run bench`: speed and memory figures, printed as a table and written to
// tests/bench/results.json. Not part of `npm test`: these machines are shared and noisy.
import { writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT, type BenchRow } from "./common.js";
import { benchInspector } from "./inspector.js";

const rows: BenchRow[] = [...benchInspector()];
const width = Math.max(...rows.map((r) => r.case.length));
console.log(`mcp-lens bench on ${os.cpus().length} × ${os.cpus()[0]?.model ?? "cpu"}, node ${process.version}\n`);
for (const r of rows) console.log(`${r.case.padEnd(width)}  ${r.value.toFixed(r.value < 10 ? 2 : 1).padStart(9)} ${r.unit}${r.note ? `  (${r.note})` : ""}`);
const out = path.join(ROOT, "tests/bench/results.json");
writeFileSync(out, JSON.stringify({ at: new Date().toISOString(), machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version }, rows }, null, 2));
console.log(`\nwritten to ${path.relative(process.cwd(), out)}`);
