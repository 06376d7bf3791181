// Load generators, both pinned to the load CPU: wrk for closed-loop peak throughput, and the
// fixed-rate open-loop generator (open-loop.ts) for latency at a steady, realistic rate.
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { MCP_POST_HEADERS, ROOT, TOOLS_CALL_BODY } from "./common.js";
import { LOAD_CPU, pinnedCommand, track, tsxArgs, WRK } from "./procs.js";

export interface WrkResult {
  rps: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  socketErrors: number;
  non2xx: number;
}

/** The wrk script: every request is the MCP tools/call POST a connector sends. */
export function writeWrkScript(dir: string): string {
  const file = path.join(dir, "tools-call.lua");
  writeFileSync(
    file,
    [
      'wrk.method = "POST"',
      `wrk.body = ${luaString(TOOLS_CALL_BODY)}`,
      ...Object.entries(MCP_POST_HEADERS).map(([name, value]) => `wrk.headers[${luaString(name)}] = ${luaString(value)}`),
      "",
    ].join("\n"),
  );
  return file;
}

const luaString = (s: string) => `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

export async function runWrk(url: string, script: string, durationS: number, connections = 32): Promise<WrkResult> {
  if (!WRK) throw new Error("wrk is missing: install it: apt-get install wrk");
  const args = ["-t1", `-c${connections}`, `-d${durationS}s`, "--latency", "--timeout", "5s", "-s", script, url];
  const output = await runToCompletion(...pinnedCommand(LOAD_CPU, WRK, args), (durationS + 15) * 1000);
  return parseWrk(output);
}

/** Converts wrk's "812.00us", "1.23ms", "2.00s", "1.5m" to milliseconds. */
export function wrkDurationMs(text: string): number {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (!match) return NaN;
  const factor = { us: 0.001, ms: 1, s: 1000, m: 60_000 }[match[2] as "us" | "ms" | "s" | "m"];
  return Number(match[1]) * factor;
}

export function parseWrk(output: string): WrkResult {
  const number = (re: RegExp) => Number(re.exec(output)?.[1] ?? NaN);
  const percentile = (p: number) => wrkDurationMs(new RegExp(`^\\s+${p}(?:\\.0+)?%\\s+(\\S+)`, "m").exec(output)?.[1] ?? "");
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output);
  const result: WrkResult = {
    rps: number(/^Requests\/sec:\s+([\d.]+)/m),
    requests: number(/^\s+(\d+) requests in/m),
    p50Ms: percentile(50),
    p99Ms: percentile(99),
    socketErrors: socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0,
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0),
  };
  if (!Number.isFinite(result.rps) || !Number.isFinite(result.p50Ms)) throw new Error(`cannot read wrk's output:\n${output}`);
  return result;
}

export interface OpenLoopResult {
  sent: number;
  completed: number;
  errors: number;
  p50: number;
  p90: number;
  p99: number;
  /** Times the load CPU was taken away for 20 ms or more while measuring, and for how long. */
  freezes: number;
  frozenMs: number;
}

/** Fixed-rate POSTs from a separate process on the load CPU; latencies in ms from each scheduled send. */
export async function runOpenLoop(url: string, rate: number, durationS: number, warmupS = 0.5): Promise<OpenLoopResult> {
  const args = tsxArgs("open-loop.ts", ["--url", url, "--rate", String(rate), "--duration", String(durationS), "--warmup", String(warmupS)]);
  // Bounded by the generator itself (duration + 5 s grace); this is the backstop.
  const output = await runToCompletion(...pinnedCommand(LOAD_CPU, process.execPath, args), (warmupS + durationS + 20) * 1000);
  const line = output.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(line) as OpenLoopResult;
  } catch {
    throw new Error(`cannot read the open-loop generator's output:\n${output}`);
  }
}

/** Runs a command, returns its stdout; killed after `timeoutMs`; fails on a non-zero exit. */
function runToCompletion(command: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(command, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] }));
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${path.basename(command)} ${args.join(" ")} exited with ${code ?? signal}:\n${stderr}${stdout}`));
    });
  });
}
