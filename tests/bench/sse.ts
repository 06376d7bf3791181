// SSE through mcp-lens: the delay it adds to each event, and its memory with 1,000 streams open.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { median, note, quantile, sleep, target, type BenchRow } from "./common.js";
import { makeTempDir, openFilesLimit, PINNING_NOTE, rssMiB, stopAll, type Proc } from "./procs.js";
import { lensActiveSseStreams, startBareProxy, startLens, startUpstream, type LensTarget } from "./targets.js";

const ROUNDS = 3;
const EVENTS = 200;
const EVENT_INTERVAL_MS = 20;
const ADDED_DELAY_TARGET_MS = 0.3;
const STREAMS = 1000;
const STREAM_BATCH = 100;
const OPEN_STREAMS_TIMEOUT_MS = 30_000;
/** mcp-lens's RSS with the streams held, at most this multiple of the bare proxy's under the same load. */
const RSS_RATIO_TARGET = 1.3;

export async function benchSse(): Promise<BenchRow[]> {
  const { dir, remove: removeDir } = makeTempDir("sse");
  const procs: Proc[] = [];
  try {
    return [...(await delayRows(dir, procs)), ...(await manyStreamsRows(dir, procs))];
  } finally {
    await stopAll(procs);
    removeDir();
  }
}

// ---------------------------------------------------------------------------------------------
// Delay per event. Writer and reader live in this process, so both read the same clock: each
// event carries performance.now() at its write, the reader subtracts it from its arrival time.

interface TimedEventServer {
  url: string;
  close(): Promise<void>;
}

async function startTimedEventServer(): Promise<TimedEventServer> {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.flushHeaders();
    let seq = 0;
    const timer = setInterval(() => {
      res.write(`id: ${seq}\ndata: ${performance.now()}\n\n`);
      if (++seq >= EVENTS) {
        clearInterval(timer);
        res.end();
      }
    }, EVENT_INTERVAL_MS);
    res.once("close", () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Reads one timed stream to its end; returns each event's delay in ms. */
function readEventDelays(url: string): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const delays: number[] = [];
    let buffered = "";
    const req = http.get(`${url}/sse`, { headers: { accept: "text/event-stream" }, agent: false }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        const arrived = performance.now();
        buffered += chunk;
        let end: number;
        while ((end = buffered.indexOf("\n\n")) !== -1) {
          const data = /^data: (.*)$/m.exec(buffered.slice(0, end))?.[1];
          buffered = buffered.slice(end + 2);
          if (data !== undefined) delays.push(arrived - Number(data));
        }
      });
      res.once("end", () => resolve(delays));
      res.once("error", reject);
    });
    req.once("error", reject);
    // Bounded: the stream lasts EVENTS × EVENT_INTERVAL_MS.
    req.setTimeout(EVENTS * EVENT_INTERVAL_MS + 10_000, () => req.destroy(new Error("SSE delay stream timed out")));
  });
}

interface DelayRun {
  p50: number;
  p99: number;
  events: number;
}

async function delayRun(url: string): Promise<DelayRun> {
  const delays = await readEventDelays(url);
  return { p50: quantile(delays, 0.5), p99: quantile(delays, 0.99), events: delays.length };
}

async function delayRows(dir: string, procs: Proc[]): Promise<BenchRow[]> {
  const upstream = await startTimedEventServer();
  try {
    const lens = await startLens(upstream.url, dir);
    procs.push(lens.proc);
    const direct: DelayRun[] = [];
    const viaLens: DelayRun[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      direct.push(await delayRun(upstream.url));
      viaLens.push(await delayRun(lens.url));
    }
    await lens.proc.stop();
    const p50 = (runs: DelayRun[]) => median(runs.map((r) => r.p50));
    const p99 = (runs: DelayRun[]) => median(runs.map((r) => r.p99));
    const added = p50(viaLens) - p50(direct);
    const events = viaLens.reduce((sum, r) => sum + r.events, 0);
    const setup = `${ROUNDS} rounds × ${EVENTS} events every ${EVENT_INTERVAL_MS} ms, medians`;
    return [
      { case: "sse delay direct p50", value: p50(direct), unit: "ms", note: setup },
      { case: "sse delay mcp-lens p50", value: p50(viaLens), unit: "ms", note: note(`${events} of ${ROUNDS * EVENTS} events`, PINNING_NOTE) },
      { case: "sse added delay p50", value: added, unit: "ms", note: target(added, "≤", ADDED_DELAY_TARGET_MS, `${ADDED_DELAY_TARGET_MS} ms`) },
      { case: "sse delay direct p99", value: p99(direct), unit: "ms", note: "for information" },
      { case: "sse delay mcp-lens p99", value: p99(viaLens), unit: "ms", note: "for information" },
    ];
  } finally {
    await upstream.close();
  }
}

// ---------------------------------------------------------------------------------------------
// 1,000 open streams. The upstream is a separate process (holding each stream open, a heartbeat
// every 5 s), so this process holds only the 1,000 client sockets and mcp-lens the 2,000 of both
// sides: each needs a file limit above that (node raises its soft limit to the hard one).

async function openStream(url: string, agent: http.Agent, open: http.ClientRequest[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const req = http.get(`${url}/hold`, { agent, headers: { accept: "text/event-stream" } }, (res) => {
      res.resume();
      res.on("error", () => {}); // closed by us at the end
      if (res.statusCode === 200) resolve();
      else reject(new Error(`stream answered ${res.statusCode}`));
    });
    req.once("error", reject);
    open.push(req);
  });
}

/** Opens STREAMS streams in batches; returns how many got their headers in time. */
async function openStreams(url: string, agent: http.Agent, open: http.ClientRequest[]): Promise<number> {
  const deadline = Date.now() + OPEN_STREAMS_TIMEOUT_MS;
  let opened = 0;
  while (opened < STREAMS && Date.now() < deadline) {
    const batch = Array.from({ length: Math.min(STREAM_BATCH, STREAMS - opened) }, () => openStream(url, agent, open));
    const settled = await Promise.race([Promise.allSettled(batch), sleep(Math.max(0, deadline - Date.now())).then(() => null)]);
    if (!settled) break;
    opened += settled.filter((s) => s.status === "fulfilled").length;
  }
  return opened;
}

/** The highest RSS over a second: a single sample can fall between two allocations. */
async function peakRss(pid: number, ms = 1000): Promise<number> {
  let peak = rssMiB(pid);
  for (let t = 0; t < ms; t += 100) {
    await sleep(100);
    peak = Math.max(peak, rssMiB(pid));
  }
  return peak;
}

async function waitStreamsClosed(lens: LensTarget): Promise<number> {
  const deadline = Date.now() + 10_000;
  let active = await lensActiveSseStreams(lens);
  while (active > 0 && Date.now() < deadline) {
    await sleep(100);
    active = await lensActiveSseStreams(lens);
  }
  return active;
}

function fdShortage(pids: Array<[string, number | "self"]>): string | null {
  const needed: Record<string, number> = { self: STREAMS + 200, "mcp-lens": 2 * STREAMS + 200, "bare proxy": 2 * STREAMS + 200, upstream: STREAMS + 200 };
  for (const [name, pid] of pids) {
    const limit = openFilesLimit(pid);
    const need = needed[name] ?? 0;
    if (!(limit >= need)) return `${name} may open ${limit} files, needs ${need}: raise ulimit -n`;
  }
  return null;
}

/** RSS with STREAMS streams held through `url` (the process `pid`): idle, held, and once they closed. */
async function holdStreams(
  url: string,
  pid: number,
  whileHeld: () => Promise<void>,
  closed: () => Promise<number>,
): Promise<{ idle: number; held: number; afterClose: number; opened: number; left: number }> {
  await sleep(1000);
  const idle = await peakRss(pid);
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const open: http.ClientRequest[] = [];
  try {
    const opened = await openStreams(url, agent, open);
    await whileHeld();
    const held = await peakRss(pid);
    for (const req of open) req.destroy();
    const left = await closed();
    await sleep(1000);
    return { idle, held, afterClose: await peakRss(pid), opened, left };
  } finally {
    for (const req of open) req.destroy();
    agent.destroy();
  }
}

async function manyStreamsRows(dir: string, procs: Proc[]): Promise<BenchRow[]> {
  const upstream = await startUpstream("SSE upstream");
  procs.push(upstream.proc);
  const bare = await startBareProxy(upstream);
  procs.push(bare.proc);
  const lens = await startLens(upstream.url, dir);
  procs.push(lens.proc);
  const shortage = fdShortage([["self", "self"], ["mcp-lens", lens.proc.pid], ["bare proxy", bare.proc.pid], ["upstream", upstream.proc.pid]]);
  if (shortage) return [{ case: `sse ${STREAMS} streams rss`, value: NaN, unit: "MiB", note: `skipped: ${shortage}` }];

  // The same load through the bare proxy first: what holding the streams costs without recording.
  const viaBare = await holdStreams(bare.url, bare.proc.pid, async () => {}, async () => (await sleep(500), 0));
  let counted = 0;
  const viaLens = await holdStreams(
    lens.url,
    lens.proc.pid,
    async () => void (counted = await lensActiveSseStreams(lens)),
    () => waitStreamsClosed(lens),
  );
  // Comparable only when both held the same streams.
  const ratio = viaBare.opened === viaLens.opened ? viaLens.held / viaBare.held : NaN;
  const openedNote = `${viaLens.opened} opened, mcp-lens counted ${counted}${viaLens.left > 0 ? `, ${viaLens.left} still open after close` : ""}`;
  return [
    { case: `sse ${STREAMS} streams rss`, value: viaLens.held, unit: "MiB", note: openedNote },
    { case: `sse ${STREAMS} streams rss bare`, value: viaBare.held, unit: "MiB", note: `${viaBare.opened} opened; idle ${viaBare.idle.toFixed(1)} MiB` },
    { case: `sse ${STREAMS} streams mcp-lens/bare rss`, value: ratio, unit: "×", note: target(ratio, "≤", RSS_RATIO_TARGET, RSS_RATIO_TARGET.toFixed(2)) },
    { case: "sse rss idle", value: viaLens.idle, unit: "MiB", note: "mcp-lens, VmRSS" },
    { case: "sse rss after close", value: viaLens.afterClose, unit: "MiB" },
  ];
}
