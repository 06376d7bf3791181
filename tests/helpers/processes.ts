// Real processes on loopback: the built `mcp-lens` binary, started the way an operator would.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { keepArtifact } from "./artifacts.js";
import { proxyNodeFlags } from "./node-flags.js";

export { tempDir } from "./artifacts.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI = path.join(ROOT, "dist/cli/mcp-lens.js");
/** `node <these> dist/cli/mcp-lens.js`: as the image runs it (read from the built file, once built). */
let nodeFlags: string[] | undefined;
export const cliNodeFlags = () => (nodeFlags ??= proxyNodeFlags(CLI));

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

/** The CLI processes this test process started and that still run: a test process that ends (a crash, a failed beforeAll that never stops them) ends them too. */
const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** Spawns the CLI and resolves once it logs `readyMessage` (JSON logs on stdout). */
async function spawnUntilReady(args: string[], env: Record<string, string> | undefined, readyMessage: string) {
  const child = spawn(process.execPath, [...cliNodeFlags(), CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stdout: string[] = [];
  const stderr: string[] = [];
  let buffered = "";
  running.add(child);
  // "close", not "exit": stdout is fully read by then, so tests that scan the logs see every line.
  const exited = new Promise<number | null>((resolve) =>
    child.once("close", (code) => {
      running.delete(child);
      keepArtifact(`${args[0]}-${child.pid}.log`, [...stdout, buffered, ...stderr].join("\n"));
      resolve(code);
    }),
  );
  let giveUp: NodeJS.Timeout | undefined;
  const ready = new Promise<Record<string, string>>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      let newline: number;
      while ((newline = buffered.indexOf("\n")) !== -1) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        stdout.push(line);
        try {
          const entry = JSON.parse(line) as Record<string, string>;
          if (entry.msg === readyMessage) resolve(entry);
        } catch {
          /* not JSON: keep it for the test to read */
        }
      }
    });
    child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk.toString("utf8")));
    void exited.then((code) => reject(new Error(`mcp-lens ${args[0]} exited with ${code} before it was ready: ${stderr.join("")}`)));
    // Bounded: a process that never says it is ready is killed, not left behind.
    giveUp = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`mcp-lens ${args[0]} did not log "${readyMessage}" within 15 s`));
    }, 15_000);
  });
  const entry = await ready.finally(() => clearTimeout(giveUp));
  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (child.exitCode === null) child.kill(signal);
    return exited;
  };
  return { entry, child, stdout, stderr, exited, stop };
}

/** Runs `mcp-lens proxy` on ephemeral ports and waits for its "listening" log line. */
export async function startLensProcess(opts: {
  upstream: string;
  dbPath: string;
  args?: string[];
  env?: Record<string, string>;
}): Promise<RunningLens> {
  const args = ["proxy", "--upstream", opts.upstream, "--host", "127.0.0.1", "--port", "0", "--admin-port", "0", "--db", opts.dbPath, ...(opts.args ?? [])];
  const { entry, ...rest } = await spawnUntilReady(args, opts.env, "mcp-lens proxy listening");
  return { url: entry.url!, adminUrl: entry.adminUrl!, dbPath: opts.dbPath, ...rest };
}

/** Runs `mcp-lens start` (the bundled server behind the proxy) on ephemeral ports; `url` is the connector URL it logs. */
export async function startStartProcess(opts: { dbPath: string; serverDbPath: string; codaApiBase: string; args?: string[]; env?: Record<string, string> }): Promise<RunningLens & { connectorUrl: string }> {
  const args = ["start", "--port", "0", "--admin-port", "0", "--server-port", "0", "--db", opts.dbPath, "--server-db", opts.serverDbPath, "--coda-api-base", opts.codaApiBase, ...(opts.args ?? [])];
  const { entry, ...rest } = await spawnUntilReady(args, opts.env, "ready: point your MCP client at the connector URL");
  const connectorUrl = entry.connectorUrl!;
  return { url: new URL(connectorUrl).origin, adminUrl: "", connectorUrl, dbPath: opts.dbPath, ...rest };
}

export interface RunningServer {
  url: string;
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

/** Runs `mcp-lens server` (the Coda MCP server) on an ephemeral port. */
export async function startServerProcess(opts: { dbPath: string; codaApiBase: string; args?: string[]; env?: Record<string, string> }): Promise<RunningServer> {
  const args = ["server", "--host", "127.0.0.1", "--port", "0", "--db", opts.dbPath, "--coda-api-base", opts.codaApiBase, ...(opts.args ?? [])];
  const { entry, ...rest } = await spawnUntilReady(args, opts.env, "Coda MCP server listening");
  return { url: entry.url!, ...rest };
}

/** Runs the CLI to completion (for --help and error cases). */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...cliNodeFlags(), CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.once("close", (code) => {
      keepArtifact(`cli-${args[0] ?? "main"}-${child.pid}.out`, stdout + stderr);
      resolve({ code, stdout, stderr });
    });
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
