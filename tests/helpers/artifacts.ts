// Everything the tests leave on disk (DB files, keys, process logs, exports) goes under one
// run directory, kept until the global teardown has scanned it for canary secrets.
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/** Set by tests/global-setup.ts for the whole run; unset when a test file runs on its own. */
export const ARTIFACTS_ENV = "MCP_LENS_TEST_ARTIFACTS";

/** Every canary secret a test plants starts with this, so one scan finds them all. */
export const CANARY_MARK = "CANARY";

function runDir(): string | undefined {
  return process.env[ARTIFACTS_ENV] || undefined;
}

/**
 * A fresh directory; inside a run its cleanup is left to the global teardown (after the scan).
 * With `parent`, it is made there instead and removed by its own cleanup.
 */
export function tempDir(prefix = "mcp-lens-test-", parent?: string): { dir: string; cleanup: () => void } {
  const root = parent ? undefined : runDir();
  if (parent) mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(path.join(parent ?? root ?? tmpdir(), prefix));
  return { dir, cleanup: () => (root ? undefined : rmSync(dir, { recursive: true, force: true })) };
}

/** Keeps a copy of what a process printed (its logs, an export written to stdout) for the scan. */
export function keepArtifact(name: string, text: string): void {
  const root = runDir();
  if (!root || text === "") return;
  const dir = path.join(root, "outputs");
  mkdirSync(dir, { recursive: true });
  appendFileSync(path.join(dir, name.replace(/[^\w.-]+/g, "_")), text);
}

/** Creates the run directory; returns it. */
export function createRunDir(): string {
  return mkdtempSync(path.join(tmpdir(), "mcp-lens-run-"));
}

export function writeRunFile(root: string, name: string, text: string): void {
  writeFileSync(path.join(root, name), text);
}
