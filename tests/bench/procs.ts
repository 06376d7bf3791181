// Child processes for the bench: pinned to a CPU with taskset, ready once a URL answers,
// always killed (a registry SIGKILLs leftovers on exit), and read through /proc.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, sleep } from "./common.js";

function commandPath(name: string): string | null {
  const found = spawnSync("sh", ["-c", 'command -v "$1"', "sh", name], { encoding: "utf8" });
  return found.status === 0 ? found.stdout.trim() : null;
}

export const TASKSET = commandPath("taskset");
export const WRK = commandPath("wrk");
export const NGINX = ["/usr/sbin/nginx", commandPath("nginx")].find((p) => p && spawnSync(p, ["-v"]).status === 0) ?? null;
/** For the notes: figures from unpinned processes compete for both cores. */
export const PINNING_NOTE = TASKSET ? "" : "taskset missing: unpinned";

/** The load generator gets CPU 0; everything under test gets CPU 1. */
export const LOAD_CPU = 0;
export const SERVER_CPU = 1;

/** argv that runs the command on one CPU. taskset execs it, so the child's pid is the command's own. */
export function pinnedCommand(cpu: number | undefined, command: string, args: string[]): [string, string[]] {
  if (cpu === undefined || !TASKSET) return [command, args];
  return [TASKSET, ["-c", String(cpu), command, ...args]];
}

/** node args to run a TypeScript file of this directory through tsx (resolved from the repo root). */
export function tsxArgs(file: string, args: string[]): string[] {
  return ["--import", "tsx", path.join(ROOT, "tests/bench", file), ...args];
}

// Every child still alive when the bench exits, however it exits (Ctrl-C included), is
// SIGKILLed, and every temp dir still there is removed.
const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** Registers a child so that it is killed if the bench exits before it does. */
export function track<T extends ChildProcess>(child: T): T {
  live.add(child);
  child.once("exit", () => live.delete(child));
  return child;
}

/** A fresh temp dir; `remove()` deletes it, and exit does if nothing else did. */
export function makeTempDir(name: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), `mcp-lens-bench-${name}-`));
  tempDirs.add(dir);
  return {
    dir,
    remove() {
      tempDirs.delete(dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Proc {
  name: string;
  pid: number;
  child: ChildProcess;
  /** The last lines it wrote, for error messages. */
  output(): string;
  /** SIGTERM, then SIGKILL for it and its children after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  name: string;
  command: string;
  args: string[];
  /** Pinned to this CPU; unpinned when undefined or without taskset. */
  cpu?: number;
  /** Ready once a GET here answers 200. */
  readyUrl?: string;
  readyTimeoutMs?: number;
  /** Its stdout goes to this file, as to a log collector: the bench does not read it. */
  stdoutFile?: string;
}

export async function startProcess(options: StartOptions): Promise<Proc> {
  const [command, args] = pinnedCommand(options.cpu, options.command, options.args);
  const stdout = options.stdoutFile ? openSync(options.stdoutFile, "a") : "pipe";
  const child = track(spawn(command, args, { cwd: ROOT, stdio: ["ignore", stdout, "pipe"] }));
  if (typeof stdout === "number") closeSync(stdout);
  const lines: string[] = [];
  const keep = (chunk: Buffer) => {
    lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
    if (lines.length > 40) lines.splice(0, lines.length - 40);
  };
  child.stdout?.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.once("error", (error) => lines.push(String(error)));
  const proc: Proc = {
    name: options.name,
    pid: child.pid ?? -1,
    child,
    output: () => lines.join("\n"),
    stop: (graceMs = 3000) => stopProcess(child, exited, graceMs),
  };
  try {
    if (child.pid === undefined) throw new Error(`cannot start ${options.name}: ${proc.output()}`);
    if (options.readyUrl) await waitReady(proc, options.readyUrl, exited, options.readyTimeoutMs ?? 15_000);
    checkPinned(proc, options.cpu);
    return proc;
  } catch (error) {
    await proc.stop(500);
    throw error;
  }
}

/** The pid must be the command's own (taskset execs it), running on the CPU asked for. */
function checkPinned(proc: Proc, cpu: number | undefined): void {
  if (cpu === undefined || !TASKSET) return;
  const status = readFileSync(`/proc/${proc.pid}/status`, "utf8");
  const name = /^Name:\s+(.*)$/m.exec(status)?.[1];
  const cpus = /^Cpus_allowed_list:\s+(.*)$/m.exec(status)?.[1];
  if (name === "taskset" || cpus !== String(cpu)) throw new Error(`${proc.name}: pid ${proc.pid} is ${name} on CPUs ${cpus}, expected the command on CPU ${cpu}`);
}

async function waitReady(proc: Proc, url: string, exited: Promise<void>, timeoutMs: number): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (gone) throw new Error(`${proc.name} exited before it was ready:\n${proc.output()}`);
    if ((await httpStatus(url)) === 200) return;
    await sleep(50);
  }
  throw new Error(`${proc.name} not ready at ${url} within ${timeoutMs} ms:\n${proc.output()}`);
}

async function stopProcess(child: ChildProcess, exited: Promise<void>, graceMs: number): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  // Collected first: nginx's workers outlive a SIGKILLed master.
  const descendants = descendantsOf(child.pid).map((pid) => ({ pid, started: startTime(pid) }));
  child.kill("SIGTERM");
  const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut) child.kill("SIGKILL");
  for (const { pid, started } of descendants) {
    // Only the same process: its pid may have been reused since.
    if (started !== null && startTime(pid) === started) killQuietly(pid);
  }
  await Promise.race([exited, sleep(2000)]);
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    /* already gone */
  }
}

/** Stops them all, in reverse order of start, whatever fails. */
export async function stopAll(procs: Array<Proc | undefined>): Promise<void> {
  for (const proc of [...procs].reverse()) {
    if (proc) await proc.stop().catch(() => {});
  }
}

/** GET status code, or 0 when nothing answers (within 2 s). */
export async function httpStatus(url: string): Promise<number> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

export async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status}`);
  return (await res.json()) as T;
}

export async function getText(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return res.text();
}

/** A port free right now on 127.0.0.1 (listen on 0, close, hand the number out). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// /proc readers

const CLOCK_TICKS = (() => {
  const out = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const ticks = Number(out.stdout?.trim());
  return Number.isFinite(ticks) && ticks > 0 ? ticks : 100;
})();

/** Fields of /proc/<pid>/stat from field 3 on (the command name may hold spaces and parens). */
function statFields(pid: number, file = `/proc/${pid}/stat`): string[] | null {
  try {
    const stat = readFileSync(file, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** utime + stime (fields 14 and 15) in seconds; 0 once the process is gone. */
export function cpuSeconds(pid: number): number {
  const fields = statFields(pid);
  if (!fields) return 0;
  return (Number(fields[14 - 3]) + Number(fields[15 - 3])) / CLOCK_TICKS;
}

/** The same for the process's main thread alone (its tid is the pid): the event loop. */
export function mainThreadCpuSeconds(pid: number): number {
  const fields = statFields(pid, `/proc/${pid}/task/${pid}/stat`);
  if (!fields) return 0;
  return (Number(fields[14 - 3]) + Number(fields[15 - 3])) / CLOCK_TICKS;
}

/** Field 22: start time since boot, in ticks. Together with the pid it names one process. */
function startTime(pid: number): string | null {
  return statFields(pid)?.[22 - 3] ?? null;
}

/** A memory field of /proc/<pid>/status (VmRSS, VmHWM…) in MiB; NaN once the process is gone. */
function statusMiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** VmRSS in MiB; NaN once the process is gone. */
export const rssMiB = (pid: number): number => statusMiB(pid, "VmRSS");

/** The process's peak RSS so far (VmHWM) in MiB. */
export const peakRssMiB = (pid: number): number => statusMiB(pid, "VmHWM");

export function childPids(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((task) =>
      readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").split(/\s+/).filter(Boolean).map(Number),
    );
  } catch {
    return [];
  }
}

export function descendantsOf(pid: number): number[] {
  const children = childPids(pid);
  return [...children, ...children.flatMap(descendantsOf)];
}

/** The soft "Max open files" of a process (node raises its own to the hard limit at startup). */
export function openFilesLimit(pid: number | "self"): number {
  try {
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"));
    return match?.[1] === "unlimited" ? Infinity : Number(match?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}
