// The recorder thread's batched logger (common/log.ts createBatchedLogger), in a real process with
// stdout on a file, as a log collector or the bench has it: every line arrives whole and in order,
// and the file is never fsync'd (an fsync every flush held requests up when traffic resumed).
import { spawnSync } from "node:child_process";
import { closeSync, openSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../helpers/processes.js";

const LOG_MODULE = fileURLToPath(new URL("../../dist/common/log.js", import.meta.url));
const LINES = 60;
const { dir, cleanup } = tempDir("batched-logger-");
afterAll(cleanup);

/** Logs LINES lines over ~4 flush intervals of 25 ms, then closes; stdout is `out`. */
function runLogger(out: string, traceFile: string | null): void {
  const script = path.join(dir, "log-lines.mjs");
  writeFileSync(
    script,
    `import { createBatchedLogger } from ${JSON.stringify(LOG_MODULE)};
const log = createBatchedLogger("info", 25, 1024);
for (let i = 0; i < ${LINES}; i++) {
  log.logger.info({ n: i }, "line");
  if (i % 15 === 14) await new Promise((r) => setTimeout(r, 30));
}
log.close();
`,
  );
  const fd = openSync(out, "w");
  try {
    const command = traceFile === null ? [process.execPath, script] : ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", traceFile, process.execPath, script];
    const result = spawnSync(command[0]!, command.slice(1), { stdio: ["ignore", fd, "pipe"], timeout: 20_000 });
    expect(result.status, String(result.stderr)).toBe(0);
  } finally {
    closeSync(fd);
  }
}

const hasStrace = spawnSync("strace", ["-V"]).status === 0;

describe("the recorder's batched logger", () => {
  it("writes every line whole and in order, within the flush interval and at close", () => {
    const out = path.join(dir, "plain.log");
    runLogger(out, null);
    const lines = readFileSync(out, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as { n: number; msg: string });
    expect(lines.map((l) => l.n)).toEqual(Array.from({ length: LINES }, (_, i) => i));
    expect(lines.every((l) => l.msg === "line")).toBe(true);
  });

  // .ci/run installs strace: only a run outside CI may skip this.
  it.skipIf(!hasStrace && process.env.CI !== "true")("never fsyncs stdout", () => {
    const out = path.join(dir, "traced.log");
    const trace = path.join(dir, "fsync.trace");
    runLogger(out, trace);
    expect(readFileSync(out, "utf8").split("\n").filter(Boolean)).toHaveLength(LINES);
    expect(readFileSync(trace, "utf8").split("\n").filter((l) => /\bf(data)?sync\(/.test(l))).toEqual([]);
  });
});
