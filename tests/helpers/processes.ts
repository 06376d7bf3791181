// Real processes on loopback: the built `mcp-lens` binary, started the way an operator would.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI = path.join(ROOT, "dist/proxy/cli.js");

export function tempDir(prefix = "mcp-lens-test-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface RunningLens {
  url: string;
  adminUrl: string;
  dbPath: string;
  child: ChildProcess;
  /** Every stdout line so far (JSON logs). */
  stdout: string[];
  stderr: string[];
  /** Sends the signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

/** Runs `mcp-lens proxy` on ephemeral ports and waits for its "listening" log line. */
export async function startLensProcess(opts: {
  upstream: string;
  dbPath: string;
  args?: string[];
  env?: Record<string, string>;
  command?: "proxy" | "start";
}): Promise<RunningLens> {
  const command = opts.command ?? "proxy";
  const args = [
    CLI,
    command,
    ...(command === "proxy" ? ["--upstream", opts.upstream] : []),
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--admin-port",
    "0",
    "--db",
    opts.dbPath,
    ...(opts.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let buffered = "";
  const listening = new Promise<{ url: string; adminUrl: string }>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      let newline: number;
      while ((newline = buffered.indexOf("\n")) !== -1) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        stdout.push(line);
        try {
          const entry = JSON.parse(line) as { msg?: string; url?: string; adminUrl?: string };
          if (entry.msg === "mcp-lens proxy listening") resolve({ url: entry.url!, adminUrl: entry.adminUrl! });
        } catch {
          /* not JSON: keep it for the test to read */
        }
      }
    });
    child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk.toString("utf8")));
    void exited.then((code) => reject(new Error(`mcp-lens exited with ${code} before listening: ${stderr.join("")}`)));
  });
  const { url, adminUrl } = await listening;
  return {
    url,
    adminUrl,
    dbPath: opts.dbPath,
    child,
    stdout,
    stderr,
    exited,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs the CLI to completion (for --help and error cases). */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

type Falsy = null | undefined | false | 0 | "";

/** Polls until the probe returns something truthy, and returns it. */
export async function waitFor<T>(probe: () => T | Promise<T>, what: string, timeoutMs = 5000): Promise<Exclude<T, Falsy>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value as Exclude<T, Falsy>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
