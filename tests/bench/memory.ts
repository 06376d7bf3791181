// mcp-lens's memory with 10 MiB bodies: it records only the first --max-body bytes (64 KiB by
// default) and streams the rest, so its RSS should stay near idle and not grow request after request.
import { randomBytes } from "node:crypto";
import http from "node:http";
import { note, sleep, type BenchRow } from "./common.js";
import { makeTempDir, PINNING_NOTE, rssMiB, stopAll, type Proc } from "./procs.js";
import { startLens, startUpstream } from "./targets.js";

const MIB = 1024 * 1024;
const BODY_MIB = 10;
const REQUESTS = 200;
/** Every fifth request downloads (GET /big), the others upload and read the echo: 160 + 40. */
const DOWNLOAD_EVERY = 5;
const CONCURRENCY = 4;
const WINDOW = 25;
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

export async function benchMemory(): Promise<BenchRow[]> {
  const { dir, remove: removeDir } = makeTempDir("memory");
  const procs: Proc[] = [];
  try {
    const upstream = await startUpstream();
    procs.push(upstream.proc);
    const lens = await startLens(upstream.url, dir);
    procs.push(lens.proc);
    const body = randomBytes(BODY_MIB * MIB);
    await sleep(1000);
    const idle = rssMiB(lens.proc.pid);
    const sampler = rssSampler(lens.proc.pid);
    try {
      // The first window warms up (heaps grow to their working size); the second and the last
      // each get their own peak: flat means the last is no higher than the second.
      sampler.reset();
      await runRequests(lens.url, 0, WINDOW, body);
      const warmupPeak = sampler.peak();
      sampler.reset();
      await runRequests(lens.url, WINDOW, 2 * WINDOW, body);
      const secondPeak = sampler.peak();
      await runRequests(lens.url, 2 * WINDOW, REQUESTS - WINDOW, body);
      const middlePeak = sampler.peak();
      sampler.reset();
      await runRequests(lens.url, REQUESTS - WINDOW, REQUESTS, body);
      const lastPeak = sampler.peak();
      const peak = Math.max(warmupPeak, secondPeak, middlePeak, lastPeak);
      const setup = `${REQUESTS} × ${BODY_MIB} MiB (${REQUESTS - REQUESTS / DOWNLOAD_EVERY} echoed uploads, ${REQUESTS / DOWNLOAD_EVERY} downloads), ${CONCURRENCY} at a time, default --max-body`;
      return [
        { case: "memory rss idle", value: idle, unit: "MiB", note: note("mcp-lens, VmRSS", PINNING_NOTE) },
        { case: `memory rss peak during ${BODY_MIB} MiB bodies`, value: peak, unit: "MiB", note: `${setup}; sampled every ${SAMPLE_MS} ms` },
        {
          case: `memory rss growth, bodies ${WINDOW + 1}–${2 * WINDOW} → ${REQUESTS - WINDOW + 1}–${REQUESTS}`,
          value: lastPeak - secondPeak,
          unit: "MiB",
          note: `peak ${secondPeak.toFixed(1)} → ${lastPeak.toFixed(1)} MiB (the first ${WINDOW}, warming up: ${warmupPeak.toFixed(1)}); flat ≈ 0`,
        },
      ];
    } finally {
      sampler.stop();
    }
  } finally {
    await stopAll(procs);
    removeDir();
  }
}
