// Bounded load for reliability tests: keeps a few small MCP POSTs in flight and remembers
// when each one was answered, so a test can check which answered exchanges reached the DB.
import http from "node:http";
import Database from "better-sqlite3";

const BODY = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ping","arguments":{}}}';

export interface LoadResult {
  /** Request number → Date.now() when its whole response had arrived. */
  answered: Map<number, number>;
  /** Statuses of the answered requests. */
  statuses: number[];
  failed: number;
}

export interface RunningLoad {
  readonly answered: Map<number, number>;
  /** Stops sending and waits for the requests in flight to settle. */
  stop(): Promise<LoadResult>;
  /** Waits until maxRequests or maxMs is reached. */
  finished(): Promise<LoadResult>;
}

function post(url: string, agent: http.Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .request(url, { method: "POST", agent, headers: { "content-type": "application/json", accept: "application/json, text/event-stream" } }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode!));
        res.on("error", reject);
      })
      .on("error", reject)
      .end(BODY);
  });
}

/**
 * Sends POST `${url}?n=<number>` from `concurrency` loops until stop(), `maxRequests` or
 * `maxMs`, whichever comes first. A failed request waits 10 ms before the next, so a dead
 * proxy is not hammered. With `ratePerSecond`, request n is not sent before start + n / rate:
 * a steady load instead of as fast as the proxy answers.
 */
export function startLoad(url: string, opts: { concurrency?: number; maxRequests?: number; maxMs?: number; ratePerSecond?: number } = {}): RunningLoad {
  const { concurrency = 8, maxRequests = 50_000, maxMs = 20_000, ratePerSecond } = opts;
  const startedAt = Date.now();
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const answered = new Map<number, number>();
  const statuses: number[] = [];
  let failed = 0;
  let next = 0;
  let stopped = false;
  const deadline = Date.now() + maxMs;
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped && next < maxRequests && Date.now() < deadline) {
      const n = next++;
      const early = ratePerSecond ? startedAt + (n * 1000) / ratePerSecond - Date.now() : 0;
      if (early > 0) await new Promise((r) => setTimeout(r, early));
      try {
        statuses.push(await post(`${url}?n=${n}`, agent));
        answered.set(n, Date.now());
      } catch {
        failed++;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
  });
  const done = Promise.all(loops).then(() => agent.destroy());
  const result = done.then(() => ({ answered, statuses, failed }));
  return {
    answered,
    stop() {
      stopped = true;
      return result;
    },
    finished: () => result,
  };
}

/** Sends `count` requests with bounded concurrency; resolves with the statuses. */
export async function load(url: string, count: number, concurrency = 8): Promise<number[]> {
  const run = startLoad(url, { concurrency, maxRequests: count, maxMs: 60_000 });
  const { statuses, failed } = await run.finished();
  if (failed > 0) throw new Error(`${failed} of ${count} requests failed`);
  return statuses;
}

/** The request numbers (`?n=`) of the exchanges recorded in a DB. */
export function recordedNumbers(dbPath: string): Set<number> {
  const db = new Database(dbPath, { readonly: true });
  try {
    const rows = db.prepare("SELECT query FROM exchanges WHERE query LIKE 'n=%'").all() as Array<{ query: string }>;
    return new Set(rows.map((r) => Number(r.query.slice(2))));
  } finally {
    db.close();
  }
}

export function countRows(dbPath: string): number {
  const db = new Database(dbPath, { readonly: true });
  try {
    return (db.prepare("SELECT count(*) AS n FROM exchanges").get() as { n: number }).n;
  } finally {
    db.close();
  }
}
