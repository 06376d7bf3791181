// Open-loop load at a fixed rate (plain wrk has none): request i is due at start + i/rate, sent
// then whatever the earlier ones are doing, and its latency counts from that due time, so a
// stall shows up in the figures instead of silently slowing the sender (coordinated omission).
// Prints one JSON line: {sent, completed, errors, p50, p90, p99, freezes, frozenMs}, latencies in
// ms. A freeze is a gap of FREEZE_MS or more between two turns of the spinning send loop while
// measuring: the generator's own garbage collection or callbacks, or, as the ~100 ms gaps show,
// the load CPU taken away (on these VMs the host throttles both vCPUs for 100 ms at a time once
// the VM's CPU use passes its quota). Either way that run's latencies say as much about the
// machine as about the proxy.
// Usage: node --import tsx tests/bench/open-loop.ts --url URL --rate R --duration S [--warmup S]
import http from "node:http";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { MCP_POST_HEADERS, quantile, TOOLS_CALL_BODY } from "./common.js";

const { values } = parseArgs({
  options: { url: { type: "string" }, rate: { type: "string" }, duration: { type: "string" }, warmup: { type: "string", default: "0.5" } },
});
const url = new URL(values.url ?? "");
const rate = Number(values.rate);
const durationMs = Number(values.duration) * 1000;
const warmupMs = Number(values.warmup) * 1000;
if (!(rate > 0) || !(durationMs > 0) || !(warmupMs >= 0)) throw new Error("usage: open-loop.ts --url URL --rate R --duration S [--warmup S]");

const GRACE_MS = 5000;
const FREEZE_MS = 20;
const body = Buffer.from(TOOLS_CALL_BODY);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const request: http.RequestOptions = {
  agent,
  method: "POST",
  host: url.hostname,
  port: url.port,
  path: url.pathname,
  headers: { ...MCP_POST_HEADERS, "Content-Length": String(body.length) },
};

const total = Math.round((rate * (warmupMs + durationMs)) / 1000);
const intervalMs = 1000 / rate;
const start = performance.now() + 50;
/** Requests due before this are warm-up: sent, not counted. */
const measureFrom = start + warmupMs;
const latencies: number[] = [];
let measured = 0;
let completed = 0;
let errors = 0;
let outstanding = 0;

function send(due: number): void {
  const counted = due >= measureFrom;
  if (counted) measured++;
  outstanding++;
  const done = (ok: boolean) => {
    outstanding--;
    if (!counted) return;
    if (!ok) return void errors++;
    completed++;
    latencies.push(performance.now() - due);
  };
  const req = http.request(request, (res) => {
    res.resume();
    res.once("end", () => done(res.statusCode !== undefined && res.statusCode < 300));
    res.once("error", () => done(false));
  });
  req.once("error", () => done(false));
  req.end(body);
}

// Spins through setImmediate rather than timers: a 1 ms timer would add up to 1 ms of its own
// lateness to every latency. The load CPU has nothing else to do meanwhile.
let next = 0;
let lastTurn = start;
let freezes = 0;
let frozenMs = 0;
function pump(): void {
  const now = performance.now();
  if (now - lastTurn >= FREEZE_MS && lastTurn >= measureFrom) {
    freezes++;
    frozenMs += now - lastTurn;
  }
  lastTurn = now;
  while (next < total && start + next * intervalMs <= now) send(start + next++ * intervalMs);
  if (next < total) setImmediate(pump);
  else void finish();
}

async function finish(): Promise<void> {
  const deadline = performance.now() + GRACE_MS;
  while (outstanding > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const ms = (q: number) => Math.round(quantile(latencies, q) * 1000) / 1000;
  console.log(JSON.stringify({ sent: measured, completed, errors, p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), freezes, frozenMs: Math.round(frozenMs) }));
  process.exit(0);
}

pump();
