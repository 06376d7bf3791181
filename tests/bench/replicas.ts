// Recording into PostgreSQL, measured as an operator would run it (issue 18): one mcp-lens on
// SQLite against one on PostgreSQL, at peak, in interleaved rounds, for the recording's cost per
// request (CPU µs, all threads) as a ratio of SQLite's in the same run; then three replicas
// writing one PostgreSQL database at once, at peak, every exchange recorded or the row says so.
// PostgreSQL is Debian's, started here on a loopback port (tests/helpers/postgres.ts).
import pg from "pg";
import BetterSqlite3 from "better-sqlite3";
import { median, note, sleep, type BenchOptions, type BenchRow } from "./common.js";
import { runWrk, writeWrkScript } from "./load.js";
import { getText, mainThreadCpuSeconds, makeTempDir, PINNING_NOTE, stopAll, WRK, type Proc } from "./procs.js";
import { lensHealth, startLens, startUpstream, upstreamCount, type LensTarget, type Target } from "./targets.js";
import { postgresBinDir, startPostgres, type RunningPostgres } from "../helpers/postgres.js";

const ROUNDS = 3;
const CONNECTIONS = 32;

async function createDatabase(server: RunningPostgres, name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: server.url });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return server.url.replace(/\/lens$/, `/${name}`);
}

async function postgresRows(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return Number((await client.query<{ n: string }>("SELECT count(*) AS n FROM exchanges")).rows[0]!.n);
  } finally {
    await client.end();
  }
}

function sqliteRows(file: string): number {
  const db = new BetterSqlite3(file, { readonly: true });
  try {
    return (db.prepare("SELECT count(*) AS n FROM exchanges").get() as { n: number }).n;
  } finally {
    db.close();
  }
}

/**
 * Waits until the proxies' queues are empty; the exchanges they saw (mcp_lens_requests_total:
 * every exchange is counted as it is classified, stored or not) and dropped, summed.
 */
async function drained(lenses: LensTarget[]): Promise<{ seen: number; dropped: number }> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const health = await Promise.all(lenses.map(lensHealth));
    if (health.every((h) => h.recorder.queued === 0) || Date.now() > deadline) {
      const dropped = health.reduce((sum, h) => sum + Object.values(h.recorder.dropped).reduce((a, b) => a + b, 0), 0);
      const seen = (await Promise.all(lenses.map((l) => getText(`${l.adminUrl}/metrics`)))).reduce((sum, text) => sum + requestsTotal(text), 0);
      return { seen, dropped };
    }
    await sleep(200);
  }
}

function requestsTotal(metrics: string): number {
  let sum = 0;
  for (const match of metrics.matchAll(/^mcp_lens_requests_total(?:\{[^}]*\})? (\S+)$/gm)) sum += Number(match[1]);
  return sum;
}

/** One closed-loop run at peak through `lens`: requests, and CPU µs per request of its process. */
async function peakRun(lens: LensTarget, upstream: Target, script: string, durationS: number) {
  const before = { cpu: lens.cpu(), answered: await upstreamCount(upstream) };
  const wrk = await runWrk(`${lens.url}/mcp`, script, durationS, CONNECTIONS);
  const answered = (await upstreamCount(upstream)) - before.answered;
  return { rps: wrk.rps, answered, cpuUs: ((lens.cpu() - before.cpu) * 1e6) / Math.max(1, answered) };
}

export async function benchReplicas(options: BenchOptions): Promise<BenchRow[]> {
  if (!WRK) return [{ case: "replicas", value: NaN, unit: "", note: "skipped: wrk is missing, install it: apt-get install wrk" }];
  if (postgresBinDir() === undefined) return [{ case: "replicas", value: NaN, unit: "", note: "skipped: PostgreSQL is missing, install it: apt-get install postgresql" }];
  const { dir, remove: removeDir } = makeTempDir("replicas");
  const procs: Proc[] = [];
  const server = await startPostgres();
  try {
    const script = writeWrkScript(dir);
    const upstream = await startUpstream();
    procs.push(upstream.proc);

    // One proxy on each store, measured in turns.
    const sqlite = await startLens(upstream.url, dir);
    const single = await createDatabase(server, "single");
    const onPostgres = await startLens(upstream.url, dir, [], single);
    procs.push(sqlite.proc, onPostgres.proc);
    const runs = { sqlite: [] as Array<Awaited<ReturnType<typeof peakRun>>>, postgres: [] as Array<Awaited<ReturnType<typeof peakRun>>> };
    for (let round = 0; round < ROUNDS; round++) {
      runs.sqlite.push(await peakRun(sqlite, upstream, script, options.durationS));
      runs.postgres.push(await peakRun(onPostgres, upstream, script, options.durationS));
    }
    const sqliteSeen = await drained([sqlite]);
    const postgresSeen = await drained([onPostgres]);
    const recordedSqlite = sqliteRows(sqlite.dbPath);
    const recordedPostgres = await postgresRows(single);
    await stopAll([sqlite.proc, onPostgres.proc]);

    // Three replicas loaded at once, a third of the connections each: on one PostgreSQL database,
    // and (the control: three processes sharing one core cost more per request whatever they
    // record into) each on an SQLite file of its own.
    const shared = await createDatabase(server, "shared");
    const three = async (label: string, db: (name: string) => string | undefined) => {
      const replicas: LensTarget[] = [];
      for (const name of ["r1", "r2", "r3"]) replicas.push(await startLens(upstream.url, dir, ["--replica", name], db(name)));
      procs.push(...replicas.map((r) => r.proc));
      const cpuBefore = replicas.map((r) => r.cpu());
      const mainBefore = replicas.map((r) => mainThreadCpuSeconds(r.proc.pid));
      const loads = await Promise.all(replicas.map((lens) => runWrk(`${lens.url}/mcp`, script, options.durationS, Math.ceil(CONNECTIONS / 3))));
      const cpuEach = replicas.map((r, i) => r.cpu() - cpuBefore[i]!);
      const mainEach = replicas.map((r, i) => mainThreadCpuSeconds(r.proc.pid) - mainBefore[i]!);
      const seen = await drained(replicas);
      const recorded = label === "PostgreSQL" ? await postgresRows(shared) : replicas.reduce((sum, r) => sum + sqliteRows(r.dbPath), 0);
      await stopAll(replicas.map((r) => r.proc));
      const cpuUs = (cpuEach.reduce((a, b) => a + b, 0) * 1e6) / Math.max(1, seen.seen);
      return { label, rps: loads.reduce((sum, l) => sum + l.rps, 0), recorded, seen, cpuUs, cpuEach, mainEach };
    };
    const threeSqlite = await three("SQLite", () => undefined);
    const threePostgres = await three("PostgreSQL", () => shared);

    const cpu = (list: Array<{ cpuUs: number }>) => median(list.map((r) => r.cpuUs));
    const rps = (list: Array<{ rps: number }>) => median(list.map((r) => r.rps));
    const ratio = cpu(runs.postgres) / cpu(runs.sqlite);
    // Every exchange the proxies saw is a row, and none was dropped.
    const recordedNote = (recorded: number, { seen, dropped }: { seen: number; dropped: number }) =>
      recorded === seen && dropped === 0 ? `all ${seen} exchanges recorded` : `${recorded} of ${seen} exchanges recorded, ${dropped} dropped`;
    return [
      { case: "1 proxy on SQLite: requests/s at peak", value: rps(runs.sqlite), unit: "req/s", note: note(recordedNote(recordedSqlite, sqliteSeen), PINNING_NOTE) },
      { case: "1 proxy on PostgreSQL: requests/s at peak", value: rps(runs.postgres), unit: "req/s", note: recordedNote(recordedPostgres, postgresSeen) },
      { case: "CPU per request on SQLite (all threads)", value: cpu(runs.sqlite), unit: "µs" },
      { case: "CPU per request on PostgreSQL (all threads)", value: cpu(runs.postgres), unit: "µs" },
      { case: "PostgreSQL / SQLite CPU per request", value: ratio, unit: "×", note: "the proxy's own CPU; PostgreSQL's server is not counted" },
      ...[threeSqlite, threePostgres].flatMap((t) => [
        { case: `3 replicas on ${t.label === "PostgreSQL" ? "one PostgreSQL database" : "3 SQLite files"}: requests/s at peak`, value: t.rps, unit: "req/s", note: recordedNote(t.recorded, t.seen) },
        {
          case: `3 replicas on ${t.label}: CPU per request`,
          value: t.cpuUs,
          unit: "µs",
          note: `all three on one core; CPU s per replica ${t.cpuEach.map((c, i) => `${c.toFixed(2)} (forwarding ${t.mainEach[i]!.toFixed(2)})`).join(", ")}${t.label === "PostgreSQL" ? "; one of them analyses all" : ""}`,
        },
      ]),
      { case: "3 replicas: PostgreSQL / SQLite CPU per request", value: threePostgres.cpuUs / threeSqlite.cpuUs, unit: "×" },
    ];
  } finally {
    await stopAll(procs);
    server.remove();
    removeDir();
  }
}
