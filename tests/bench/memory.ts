// mcp-lens's memory with 10 MiB bodies: it records only the first --max-body bytes (64 KiB by
// default) and streams the rest, so its RSS must level off, not grow request after request.
// Garbage-collected heaps rise and fall in a sawtooth, so "flat" compares the highest peak of
// the first half of the run (after a warm-up window) with the highest of the second half.
// The bare proxy runs the same load: what streaming these bodies costs without recording.
import { randomBytes } from "node:crypto";
import http from "node:http";
import { note, sleep, target, type BenchRow } from "./common.js";
import { makeTempDir, PINNING_NOTE, rssMiB, stopAll, type Proc } from "./procs.js";
import { startBareProxy, startLens, startUpstream, type Target } from "./targets.js";

const MIB = 1024 * 1024;
const BODY_MIB = 10;
const REQUESTS = 400;
/** Every fifth request downloads (GET /big), the others upload and read the echo: 160 + 40. */
const DOWNLOAD_EVERY = 5;
const CONCURRENCY = 4;
const WINDOW = 25;
/** MiB the second half's highest peak may exceed the first half's and still count as flat. */
const FLAT_TOLERANCE_MIB = 5;
const SAMPLE_MS = 50;
const REQUEST_TIMEOUT_MS = 30_000;

/** Sends one request and reads the whole answer; resolves with the bytes received. */
function exchange(baseUrl: string, index: number, body: Buffer): Promise<number> {
  const download = index % DOWNLOAD_EVERY === DOWNLOAD_EVERY - 1;
  const url = download ? `${baseUrl}/big?mib=${BODY_MIB}` : `${baseUrl}/echo`;
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: download ? "GET" : "POST", agent: false, headers: { "content-type": "application/octet-stream" } }, (res) => {
      let received = 0;
      res.on("data", (chunk: Buffer) => (received += chunk.length));
      res.once("end", () => resolve(received));
      res.once("error", reject);
    });
    req.once("error", reject);
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`request ${index} timed out`)));
    req.end(download ? undefined : body);
  });
}

/** Runs requests [from, to) with CONCURRENCY in flight; checks every answer is whole. */
async function runRequests(baseUrl: string, from: number, to: number, body: Buffer): Promise<void> {
  let next = from;
  const worker = async () => {
    while (next < to) {
      const index = next++;
      const received = await exchange(baseUrl, index, body);
      if (received !== BODY_MIB * MIB) throw new Error(`request ${index}: ${received} bytes back, expected ${BODY_MIB * MIB}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

/** Samples a process's RSS in the background; `peak()` is the highest since the last `reset()`. */
function rssSampler(pid: number) {
  let peak = rssMiB(pid);
  const timer = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), SAMPLE_MS);
  return {
    peak: () => Math.max(peak, rssMiB(pid)),
    reset: () => (peak = rssMiB(pid)),
    stop: () => clearInterval(timer),
  };
}

interface MemoryRun {
  idle: number;
  /** The highest RSS of each window of WINDOW bodies, the warm-up window first. */
  windowPeaks: number[];
}

/** Idle RSS, then REQUESTS bodies in windows, each window's peak RSS sampled. */
async function measure(target: Target, body: Buffer): Promise<MemoryRun> {
  await sleep(1000);
  const idle = rssMiB(target.proc.pid);
  const sampler = rssSampler(target.proc.pid);
  const windowPeaks: number[] = [];
  try {
    for (let from = 0; from < REQUESTS; from += WINDOW) {
      sampler.reset();
      await runRequests(target.url, from, Math.min(REQUESTS, from + WINDOW), body);
      windowPeaks.push(sampler.peak());
    }
  } finally {
    sampler.stop();
  }
  return { idle, windowPeaks };
}

/** The highest peak of each half, the warm-up window left out. */
function halves(run: MemoryRun): { first: number; second: number; peak: number } {
  const settled = run.windowPeaks.slice(1);
  const middle = Math.ceil(settled.length / 2);
  return { first: Math.max(...settled.slice(0, middle)), second: Math.max(...settled.slice(middle)), peak: Math.max(...run.windowPeaks) };
}

export async function benchMemory(): Promise<BenchRow[]> {
  const { dir, remove: removeDir } = makeTempDir("memory");
  const procs: Proc[] = [];
  try {
    const upstream = await startUpstream();
    procs.push(upstream.proc);
    const body = randomBytes(BODY_MIB * MIB);
    const lens = await startLens(upstream.url, dir);
    procs.push(lens.proc);
    const lensRun = await measure(lens, body);
    await stopAll([lens.proc]);
    const bare = await startBareProxy(upstream);
    procs.push(bare.proc);
    const bareRun = await measure(bare, body);

    const l = halves(lensRun);
    const b = halves(bareRun);
    const growth = l.second - l.first;
    const bodies = (from: number, to: number) => `bodies ${from * WINDOW + 1}–${to * WINDOW}`;
    const windows = lensRun.windowPeaks.length;
    const halfNote = `highest peak of ${bodies(1, 1 + Math.ceil((windows - 1) / 2))} vs ${bodies(1 + Math.ceil((windows - 1) / 2), windows)}`;
    const setup = `${REQUESTS} × ${BODY_MIB} MiB (${REQUESTS - REQUESTS / DOWNLOAD_EVERY} echoed uploads, ${REQUESTS / DOWNLOAD_EVERY} downloads), ${CONCURRENCY} at a time, default --max-body`;
    return [
      { case: "memory rss idle", value: lensRun.idle, unit: "MiB", note: note("mcp-lens, VmRSS", PINNING_NOTE) },
      { case: `memory rss peak during ${BODY_MIB} MiB bodies`, value: l.peak, unit: "MiB", note: `${setup}; sampled every ${SAMPLE_MS} ms` },
      {
        case: "memory rss growth, first → second half",
        value: growth,
        unit: "MiB",
        note: `${l.first.toFixed(1)} → ${l.second.toFixed(1)} MiB, ${halfNote}; flat: ${target(growth, "≤", FLAT_TOLERANCE_MIB, `${FLAT_TOLERANCE_MIB} MiB`)}`,
      },
      { case: "memory rss window peaks (MiB)", value: NaN, unit: "", note: lensRun.windowPeaks.map((p) => p.toFixed(0)).join(" ") },
      { case: "memory bare rss idle → peak", value: b.peak, unit: "MiB", note: `idle ${bareRun.idle.toFixed(1)} MiB; the same load, no recording` },
      { case: "memory bare rss growth, first → second half", value: b.second - b.first, unit: "MiB", note: `${b.first.toFixed(1)} → ${b.second.toFixed(1)} MiB` },
    ];
  } finally {
    await stopAll(procs);
    removeDir();
  }
}
