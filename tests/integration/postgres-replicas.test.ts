// Several replicas, one picture (PostgreSQL as the shared store): three real mcp-lens processes
// write one database on a real PostgreSQL server, behind a round-robin nginx, so a connector's
// discovery, token and MCP requests each go through another replica. The connector flows of the
// diagnosis tests are driven through them and through one SQLite proxy alike: the replicas must
// make the one handshake, with the diagnosis, the single proxy makes. One analyser at a time
// (the handshake metrics summed over replicas count each handshake once), another takes over when
// it is killed, and nothing is lost while PostgreSQL restarts under load.
import path from "node:path";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import type { Diagnosis, HandshakeStep } from "../../analysis/handshake.js";
import type { HandshakeRow } from "../../store/schema.js";
import { startMisbehavingServer, type Fault } from "../fixtures/misbehaving-server.js";
import { NGINX, roundRobinConf, startNginx, type Child } from "../helpers/children.js";
import { runHostedConnector, type HostedConnectorOptions } from "../helpers/hosted-connector.js";
import { startLoad } from "../helpers/load.js";
import { postgresBinDir, postgresForTests } from "../helpers/postgres.js";
import { startLensProcess, startServerProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { startFakeCoda } from "../fakes/coda-api.js";
import { CALLBACKS, ConnectorLikeProvider, signInWithCodaToken } from "../helpers/connector.js";
import { startUpstream } from "../helpers/upstream.js";
import { existsSync } from "node:fs";

const IN_CI = process.env.CI === "true";
const MISSING = [...(postgresBinDir() ? [] : ["postgresql"]), ...(existsSync(NGINX) ? [] : ["nginx"])];
if (MISSING.length > 0 && !IN_CI) console.warn(`replica tests skipped: ${MISSING.join(", ")} missing (apt-get install ${MISSING.join(" ")}); CI=true makes this a failure`);

const LENS_ARGS = ["--flush-interval", "20", "--shutdown-timeout", "500"];
const CODA_TOKEN = "0c7a51e2-3f4b-4d5e-8a9b-replicas-token";
/** A failed probe settles after the tracker's grace period; the analyser holds exchanges ~1 s more. */
const SETTLE_MS = 20_000;

interface Case {
  name: string;
  fault: Fault[];
  connector: Partial<HostedConnectorOptions>;
  server?: { sse?: boolean };
  outcome: "succeeded" | "failed";
  code: string | null;
  step?: HandshakeStep;
}

const CASES: Case[] = [
  { name: "healthy claude.ai", fault: [], connector: { family: "claude.ai" }, outcome: "succeeded", code: null },
  { name: "healthy chatgpt", fault: [], connector: { family: "chatgpt" }, outcome: "succeeded", code: null },
  { name: "healthy claude-code, SSE answers", fault: [], connector: { family: "claude-code" }, server: { sse: true }, outcome: "succeeded", code: null },
  { name: "issuer_mismatch", fault: ["issuer_trailing_slash"], connector: { family: "claude.ai" }, outcome: "failed", code: "issuer_mismatch", step: "authorization_server_metadata" },
  { name: "redirect_uri_rejected", fault: ["redirect_uri_rejected"], connector: { family: "chatgpt" }, outcome: "failed", code: "redirect_uri_rejected", step: "authorize" },
  { name: "session_not_found", fault: ["session_lost"], connector: { family: "chatgpt" }, outcome: "failed", code: "session_not_found", step: "initialized" },
];

interface Recorded {
  exchanges: Array<{ id: number; handshake_id: number | null; replica: string | null }>;
  handshakes: HandshakeRow[];
}

/** What a run's handshakes come to, as compared between one proxy and the replicas. */
function verdicts(handshakes: HandshakeRow[]) {
  return handshakes.map((h) => ({
    client: h.client_family,
    outcome: h.outcome,
    failedStep: h.failed_step,
    codes: (JSON.parse(h.diagnoses) as Diagnosis[]).map((d) => d.code),
    steps: (JSON.parse(h.steps) as Array<{ step: string; status: string }>).map((s) => `${s.step}:${s.status}`),
  }));
}

const pg = postgresForTests();

/** Three replicas on `db` in front of `upstream`, nginx spreading requests over them in turn. */
async function startReplicas(upstream: string, db: string, dir: string, extraArgs: string[] = []) {
  const started = await Promise.allSettled([1, 2, 3].map((n) => startLensProcess({ upstream, dbPath: db, args: ["--replica", `replica-${n}`, ...LENS_ARGS, ...extraArgs] })));
  const lenses = started.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  const failed = started.find((s) => s.status === "rejected");
  if (failed) {
    // The ones that started are stopped: nothing outlives a failed test.
    await Promise.all(lenses.map((l) => l.stop()));
    throw failed.reason;
  }
  let nginx: (Child & { url: string }) | undefined;
  try {
    nginx = await startNginx(path.join(dir, "nginx"), roundRobinConf(path.join(dir, "nginx"), lenses.map((l) => new URL(l.url).host)));
  } catch (error) {
    await Promise.all(lenses.map((l) => l.stop()));
    throw error;
  }
  return {
    lenses,
    url: nginx.url,
    async stop() {
      await nginx!.stop();
      await Promise.all(lenses.map((l) => l.stop()));
    },
  };
}

/** One pool a database: the tests poll every 200 ms. */
const pools = new Map<string, ReturnType<typeof pg.pool>>();

async function fromPostgres(db: string): Promise<Recorded> {
  let pool = pools.get(db);
  if (!pool) pools.set(db, (pool = pg.pool(db, 1)));
  const exchanges = (await pool.query<Recorded["exchanges"][number]>("SELECT id, handshake_id, replica FROM exchanges ORDER BY started_at, id")).rows;
  const handshakes = (await pool.query<HandshakeRow>("SELECT * FROM handshakes ORDER BY started_at, id")).rows;
  return { exchanges, handshakes };
}

function fromSqlite(file: string): Recorded {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return {
      exchanges: db.prepare("SELECT id, handshake_id, replica FROM exchanges ORDER BY started_at, id").all() as Recorded["exchanges"],
      handshakes: db.prepare("SELECT * FROM handshakes ORDER BY started_at, id").all() as HandshakeRow[],
    };
  } catch {
    return { exchanges: [], handshakes: [] };
  } finally {
    db.close();
  }
}

/** Every request recorded, every handshake settled, one with the expected code. */
const settledWith = (requests: number, code: string | null) => (state: Recorded) =>
  state.exchanges.length >= requests &&
  state.handshakes.length > 0 &&
  state.handshakes.every((h) => h.outcome !== "in_progress") &&
  (code === null || state.handshakes.some((h) => (JSON.parse(h.diagnoses) as Diagnosis[]).some((d) => d.code === code)));

/** Polls until `done`; the last state either way. */
async function settled(read: () => Recorded | Promise<Recorded>, done: (state: Recorded) => boolean): Promise<Recorded> {
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    const state = await read();
    if (done(state) || Date.now() > deadline) return state;
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function metricsOf(lens: RunningLens): Promise<string> {
  return (await fetch(`${lens.adminUrl}/metrics`)).text();
}

/** The sum of a metric's series in a Prometheus exposition (0 when absent). */
function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split("\n")) if (line.startsWith(name) && /^[a-z_]+(\{[^}]*\})? /.test(line) && line.split(/[ {]/)[0] === name) sum += Number(line.split(" ").at(-1));
  return sum;
}

describe.skipIf(MISSING.length > 0 && !IN_CI)("three replicas on one PostgreSQL database, behind round-robin nginx", () => {
  // Each test's processes end with it: three replicas hold a dozen connections.
  const cleanups: Array<() => Promise<unknown> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  for (const c of CASES) {
    it(`${c.name}: one handshake, diagnosed as one proxy diagnoses it`, { timeout: 90_000 }, async () => {
      const tmp = tempDir("mcp-lens-replicas-");
      cleanups.push(tmp.cleanup);
      const server = await startMisbehavingServer(c.fault, c.server);
      cleanups.push(server.close);

      // One proxy on SQLite, the reference, and the replicas: the same flow through each, at once.
      const single = await startLensProcess({ upstream: server.url, dbPath: path.join(tmp.dir, "single.db"), args: LENS_ARGS });
      cleanups.push(() => single.stop());
      const db = await pg.freshDatabase();
      const replicas = await startReplicas(server.url, db, tmp.dir);
      cleanups.push(replicas.stop);
      const [singleRun, run] = await Promise.all([
        runHostedConnector(`${single.url}/mcp`, { family: "claude.ai", ...c.connector }),
        runHostedConnector(`${replicas.url}/mcp`, { family: "claude.ai", ...c.connector }),
      ]);
      const reference = await settled(() => fromSqlite(single.dbPath), settledWith(singleRun.requests, c.code));
      // The analyser holds exchanges a second (another replica's may be due before them): the
      // replicas have caught up when they say what the single proxy says, or never.
      const caughtUp = (state: Recorded) => settledWith(run.requests, c.code)(state) && JSON.stringify(verdicts(state.handshakes)) === JSON.stringify(verdicts(reference.handshakes));
      const shared = await settled(() => fromPostgres(db), caughtUp);
      const explain = JSON.stringify({ run, reference: verdicts(reference.handshakes), shared: verdicts(shared.handshakes), exchanges: shared.exchanges }, null, 1);

      expect(run.failedAt, explain).toBe(singleRun.failedAt);
      expect(shared.exchanges.length, explain).toBe(run.requests);
      // Each replica recorded some of it, and says so.
      expect(new Set(shared.exchanges.map((e) => e.replica)), explain).toEqual(new Set(["replica-1", "replica-2", "replica-3"]));
      expect(shared.handshakes, explain).toHaveLength(1);
      expect(verdicts(shared.handshakes), explain).toEqual(verdicts(reference.handshakes));
      const [handshake] = shared.handshakes;
      expect(handshake!.outcome, explain).toBe(c.outcome);
      if (c.code) expect(handshake!.first_code, explain).toBe(c.code);
      if (c.step) expect(handshake!.failed_step, explain).toBe(c.step);
      // Every exchange the single proxy put into the handshake, the replicas did too.
      expect(shared.exchanges.filter((e) => e.handshake_id !== null).length, explain).toBe(reference.exchanges.filter((e) => e.handshake_id !== null).length);
      expect(new Set(shared.exchanges.flatMap((e) => (e.handshake_id === null ? [] : [e.handshake_id]))), explain).toEqual(new Set([handshake!.id]));

      // One analyser: its handshake metrics are the only ones, so their sum over replicas is exact.
      const metrics = await Promise.all(replicas.lenses.map(metricsOf));
      expect(metrics.map((m) => metricSum(m, "mcp_lens_analyser"))).toSatisfy((v: number[]) => v.filter((x) => x === 1).length === 1 && v.filter((x) => x === 0).length === 2);
      expect(metrics.reduce((sum, m) => sum + metricSum(m, "mcp_lens_handshakes_started_total"), 0)).toBe(1);
      const ended = c.outcome === "succeeded" ? "mcp_lens_handshakes_succeeded_total" : "mcp_lens_handshakes_failed_total";
      expect(metrics.reduce((sum, m) => sum + metricSum(m, ended), 0)).toBe(1);
      // Traffic metrics are each replica's own: together, every request once.
      expect(metrics.reduce((sum, m) => sum + metricSum(m, "mcp_lens_requests_total"), 0)).toBe(run.requests);
    });
  }

  it("the bundled Coda MCP server behind three replicas: a connector's OAuth flow and tool calls make one succeeded handshake", { timeout: 60_000 }, async () => {
    const tmp = tempDir("mcp-lens-replicas-");
    cleanups.push(tmp.cleanup);
    const coda = await startFakeCoda({ tokens: { [CODA_TOKEN]: { name: "Ada Lovelace", loginId: "ada@example.com" } } });
    cleanups.push(() => coda.close());
    const server = await startServerProcess({ dbPath: path.join(tmp.dir, "server.db"), codaApiBase: coda.url });
    cleanups.push(() => server.stop());
    const db = await pg.freshDatabase();
    const replicas = await startReplicas(server.url, db, tmp.dir);
    cleanups.push(replicas.stop);

    // The SDK's client as a hosted connector runs it; the user's browser signs in through the same front.
    const provider = new ConnectorLikeProvider(CALLBACKS.claude, "none", "Claude");
    const mcpUrl = new URL(`${replicas.url}/mcp`);
    const probe = new Client({ name: "Anthropic", version: "1.0.0" });
    await expect(probe.connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider }))).rejects.toThrow(UnauthorizedError);
    const consent = await signInWithCodaToken(provider.authorizationUrl!, CODA_TOKEN);
    expect(consent.status).toBe(302);
    const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider });
    await transport.finishAuth(new URL(consent.headers.get("location")!).searchParams.get("code")!);
    const client = new Client({ name: "Anthropic", version: "1.0.0" });
    await client.connect(transport);
    expect((await client.callTool({ name: "whoami", arguments: {} })).isError).toBeFalsy();
    expect((await client.callTool({ name: "list_docs", arguments: {} })).isError).toBeFalsy();
    await client.close();

    const state = await settled(
      () => fromPostgres(db),
      (s) => s.handshakes.some((h) => h.outcome === "succeeded" && JSON.parse(h.steps).some((x: { step: string }) => x.step === "tool_call")),
    );
    const explain = JSON.stringify({ handshakes: verdicts(state.handshakes), exchanges: state.exchanges }, null, 1);
    const succeeded = state.handshakes.filter((h) => h.outcome === "succeeded");
    expect(succeeded.map((h) => h.client_family), explain).toEqual(["claude.ai"]);
    expect(verdicts(succeeded)[0]!.steps, explain).toEqual(expect.arrayContaining(["token:ok", "initialize:ok", "tool_call:ok"]));
    // Its exchanges went through all three replicas.
    const own = state.exchanges.filter((e) => e.handshake_id === succeeded[0]!.id);
    expect(new Set(own.map((e) => e.replica)), explain).toEqual(new Set(["replica-1", "replica-2", "replica-3"]));
  });

  it("another replica takes over the analysis within seconds when the analyser is killed", { timeout: 90_000 }, async () => {
    const tmp = tempDir("mcp-lens-replicas-");
    cleanups.push(tmp.cleanup);
    const server = await startMisbehavingServer([]);
    cleanups.push(server.close);
    const db = await pg.freshDatabase();
    const replicas = await startReplicas(server.url, db, tmp.dir);
    cleanups.push(replicas.stop);
    const leaderOf = async () => {
      const gauges = await Promise.all(replicas.lenses.map(async (l) => (l.child.exitCode === null && l.child.signalCode === null ? metricSum(await metricsOf(l), "mcp_lens_analyser") : 0)));
      return gauges.indexOf(1);
    };
    const first = await runHostedConnector(`${replicas.url}/mcp`, { family: "claude.ai" });
    await settled(() => fromPostgres(db), (state) => settledWith(first.requests, null)(state) && state.exchanges.every((e) => e.handshake_id !== null));
    const leader = await waitFor(async () => (await leaderOf()) + 1, "an elected analyser", 10_000);
    replicas.lenses[leader - 1]!.child.kill("SIGKILL");
    await replicas.lenses[leader - 1]!.exited;

    const startedAt = Date.now();
    const next = await waitFor(async () => (await leaderOf()) + 1, "another replica to take over", 10_000);
    const tookOverMs = Date.now() - startedAt;
    expect(next).not.toBe(leader);
    expect(tookOverMs).toBeLessThan(5_000);

    const second = await runHostedConnector(`${replicas.url}/mcp`, { family: "chatgpt" });
    const state = await settled(
      () => fromPostgres(db),
      (s) => settledWith(first.requests + second.requests, null)(s) && s.handshakes.length === 2 && s.exchanges.every((e) => e.handshake_id !== null),
    );
    const explain = JSON.stringify({ handshakes: verdicts(state.handshakes), exchanges: state.exchanges }, null, 1);
    // The first handshake re-placed under its own id (not twice), the second analysed by the new leader.
    expect(state.handshakes.map((h) => [h.client_family, h.outcome]), explain).toEqual([
      ["claude.ai", "succeeded"],
      ["chatgpt", "succeeded"],
    ]);
    expect(state.exchanges.every((e) => e.handshake_id !== null), explain).toBe(true);
  });

  it("records every exchange while PostgreSQL is stopped and started again under load", { timeout: 90_000 }, async () => {
    const tmp = tempDir("mcp-lens-replicas-");
    cleanups.push(tmp.cleanup);
    const upstream = await startUpstream((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end('{"jsonrpc":"2.0","id":1,"result":{}}'));
    cleanups.push(upstream.close);
    const db = await pg.freshDatabase();
    const replicas = await startReplicas(upstream.url, db, tmp.dir);
    cleanups.push(replicas.stop);

    const load = startLoad(`${replicas.url}/mcp`, { concurrency: 6, maxMs: 8_000, maxRequests: 20_000 });
    await new Promise((r) => setTimeout(r, 1_500));
    pg.server().stop();
    await new Promise((r) => setTimeout(r, 2_500));
    pg.server().start();
    const result = await load.finished();
    expect(result.failed).toBe(0);
    const answered = result.answered.size;
    expect(answered).toBeGreaterThan(500);

    const pool = pg.pool(db, 1);
    const count = async () => Number((await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM exchanges")).rows[0]!.n);
    await waitFor(async () => (await count()) >= answered, `all ${answered} exchanges recorded`, 20_000).catch(() => undefined);
    expect(await count()).toBe(answered);
    const health = await Promise.all(replicas.lenses.map(async (l) => (await fetch(`${l.adminUrl}/health`)).json() as Promise<{ recorder: { dropped: Record<string, number>; written: number } }>));
    for (const h of health) expect(Object.values(h.recorder.dropped).reduce((a, b) => a + b, 0)).toBe(0);
    expect(health.reduce((sum, h) => sum + h.recorder.written, 0)).toBe(answered);
  });
});
