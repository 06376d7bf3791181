// One directory for everything the run leaves on disk; afterwards, the secrets check:
// no canary secret a test planted may appear in any DB file, key, log or export.
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { ARTIFACTS_ENV, CANARY_MARK, createRunDir } from "./helpers/artifacts.js";

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return filesUnder(full);
    return entry.isFile() ? [full] : [];
  });
}

/** Files holding the canary mark, with the first hit in context. */
export function canaryHits(dir: string): string[] {
  const mark = Buffer.from(CANARY_MARK);
  const hits: string[] = [];
  for (const file of filesUnder(dir)) {
    if (statSync(file).size === 0) continue;
    const bytes = readFileSync(file);
    const at = bytes.indexOf(mark);
    if (at !== -1) hits.push(`${path.relative(dir, file)}: …${bytes.subarray(Math.max(0, at - 60), at + 60).toString("latin1")}…`);
  }
  return hits;
}

export default function setup(): () => void {
  const dir = createRunDir();
  process.env[ARTIFACTS_ENV] = dir;
  return () => {
    const files = filesUnder(dir).length;
    const hits = canaryHits(dir);
    if (hits.length > 0) {
      // vitest reports an error thrown here but still exits 0: fail the run explicitly.
      console.error(`secrets check FAILED: canary secrets reached disk (kept in ${dir} for a look):\n${hits.join("\n")}`);
      process.exitCode = 1;
      return;
    }
    rmSync(dir, { recursive: true, force: true });
    console.log(`secrets check: no canary in ${files} files (DB files, keys, logs, exports) left by the tests`);
  };
}
