// The inspector on a shared PostgreSQL recording (--db postgres://…): what it shows from an SQLite
// file it shows from the database two replicas write: list, show, export, tail (polling in commit
// order, every replica's exchanges and the analyser's handshakes), the interactive view; its
// sessions are read-only, and the database's password never appears in what it prints.
import { spawn } from "node:child_process";
import WebSocket from "ws";
import { render } from "ink-testing-library";
import { createElement } from "react";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openRecording } from "../../inspector/open-recording.js";
import type { Recording } from "../../inspector/recording.js";
import { App } from "../../inspector/ui/app.js";
import { HandshakeView } from "../../inspector/ui/handshake.js";
import { startMisbehavingServer, type MisbehavingServer } from "../fixtures/misbehaving-server.js";
import { runHostedConnector } from "../helpers/hosted-connector.js";
import { handshakeOf } from "../helpers/exchanges.js";
import { postgresSink } from "../../store/postgres-sink.js";
import path from "node:path";
import { roundRobinConf, startNginx } from "../helpers/children.js";
import { postgresBinDir, postgresForTests } from "../helpers/postgres.js";
import { CLI, cliNodeFlags, runCli, startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";

const IN_CI = process.env.CI === "true";
const MISSING = postgresBinDir() === undefined;
if (MISSING && !IN_CI) console.warn("PostgreSQL tests skipped: PostgreSQL is not installed (apt-get install postgresql); CI=true makes this a failure");

interface ListedJson {
  id: number;
  clientFamily: string;
  outcome: string;
  failedStep: string | null;
  diagnoses: Array<{ code: string }>;
}

describe.skipIf(MISSING && !IN_CI)("the inspector on a PostgreSQL recording", () => {
  const pg = postgresForTests();
  let server: MisbehavingServer;
  const lenses: RunningLens[] = [];
  let db: string;
  /** The same URL with a password in it (the test server trusts loopback): it must never be printed. */
  let withPassword: string;
  let failedId: number;

  beforeAll(async () => {
    db = await pg.freshDatabase();
    withPassword = db.replace("postgres://lens@", "postgres://lens:CANARY-pg-password@");
    server = await startMisbehavingServer("issuer_trailing_slash");
    for (const replica of ["a", "b"]) lenses.push(await startLensProcess({ upstream: server.url, dbPath: withPassword, args: ["--replica", replica, "--flush-interval", "20"] }));
    // Two replicas, the connector's requests alternating between them.
    const dir = tempDir("mcp-lens-inspector-pg-");
    cleanups.push(dir.cleanup);
    const nginx = await startNginx(path.join(dir.dir, "nginx"), roundRobinConf(path.join(dir.dir, "nginx"), lenses.map((l) => new URL(l.url).host)));
    cleanups.push(nginx.stop);
    await runHostedConnector(`${nginx.url}/mcp`, { family: "claude.ai" });
    const listed = await waitFor(
      async () => {
        const run = await runCli(["inspector", "list", "--json", "--db", withPassword]);
        const rows = run.code === 0 ? (JSON.parse(run.stdout) as ListedJson[]) : [];
        return rows.find((h) => h.outcome === "failed" && h.diagnoses[0]?.code === "issuer_mismatch");
      },
      "the failed handshake in the shared database",
      20_000,
    );
    failedId = listed.id;
  }, 60_000);

  const cleanups: Array<() => unknown> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    for (const lens of lenses) await lens.stop();
    await server?.close();
  });

  it("lists, shows and exports the handshake the replicas recorded together, never printing the password", async () => {
    const table = await runCli(["inspector", "list", "--failed"], { MCP_LENS_DB: withPassword });
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/claude\.ai .*FAILED .*issuer_mismatch/);
    const found = await runCli(["inspector", "list", "--text", "ISSUER", "--json", "--db", withPassword]);
    expect((JSON.parse(found.stdout) as ListedJson[]).map((h) => h.id)).toEqual([failedId]);

    const shown = await runCli(["inspector", "show", String(failedId), "--json", "--db", withPassword]);
    expect(shown.code, shown.stderr).toBe(0);
    const detail = JSON.parse(shown.stdout) as { failedStep: string; exchanges: Array<{ id: number }> };
    expect(detail.failedStep).toBe("authorization_server_metadata");
    expect(detail.exchanges.length).toBeGreaterThan(2);
    // Each exchange says which replica it went through; the text says it too.
    expect(new Set((detail.exchanges as Array<{ replica?: string }>).map((e) => e.replica))).toEqual(new Set(["a", "b"]));
    const text = await runCli(["inspector", "show", String(failedId), "--db", withPassword]);
    expect(text.stdout).toContain("through 2 replicas: ");
    expect(text.stdout).toMatch(/^ +via [ab]( · |$)/m);

    const har = await runCli(["inspector", "export", String(failedId), "--har", "--db", withPassword]);
    expect(har.code, har.stderr).toBe(0);
    expect((JSON.parse(har.stdout) as { log: { entries: unknown[] } }).log.entries).toHaveLength(detail.exchanges.length);

    // A hostile summary that jsonb cannot hold (NUL, a lone surrogate) leaves the text search working.
    await postgresSink(pg.pool(db)).write([], [handshakeOf(5_000_000_000, { diagnoses: [{ code: "waf_block", severity: "error", summary: "nul \u0000 and \ud800 here", evidence: [], fix: "", reference: "" }] })]);
    const searched = await runCli(["inspector", "list", "--text", "issuer", "--json", "--db", withPassword]);
    expect(searched.code, searched.stderr).toBe(0);
    expect((JSON.parse(searched.stdout) as ListedJson[]).map((h) => h.id)).toEqual([failedId]);

    // Replayed through a replica: the server still fails it (its traffic makes a handshake of its own, hence after the searches).
    const replayed = await runCli(["inspector", "replay", String(failedId), "--json", "--db", withPassword]);
    expect(replayed.code, replayed.stderr).toBe(1);
    expect(JSON.parse(replayed.stdout)).toMatchObject({ verdict: "still_fails", failedStep: "authorization_server_metadata", code: "issuer_mismatch" });

    const missing = await runCli(["inspector", "show", "999999999", "--db", withPassword]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("no handshake #999999999 in postgres://lens:***@127.0.0.1:");
    for (const run of [table, found, shown, replayed, har, missing]) expect(run.stdout + run.stderr).not.toContain("CANARY-pg-password");

    const wrong = await runCli(["inspector", "list", "--db", withPassword.replace(/\/[^/]+$/, "/no_such_db")]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/^mcp-lens inspector: cannot open database postgres:\/\/lens:\*\*\*@127\.0\.0\.1:\d+\/no_such_db: .*no_such_db/);
    expect(wrong.stderr).not.toContain("CANARY-pg-password");
  });

  it("doctor --db stores its checks in the shared database, where the inspector shows them", { timeout: 30_000 }, async () => {
    const run = await runCli(["doctor", `${lenses[0]!.url}/mcp`, "--as", "claude-code", "--json", "--db", withPassword]);
    const report = JSON.parse(run.stdout) as { recorded: { db: string; exchanges: number; handshakeIds: number[] } };
    expect(report.recorded.db).toMatch(/^postgres:\/\/lens:\*\*\*@127\.0\.0\.1:/);
    expect(report.recorded.exchanges).toBeGreaterThan(2);
    expect(run.stdout + run.stderr).not.toContain("CANARY-pg-password");
    const shown = await runCli(["inspector", "show", String(report.recorded.handshakeIds[0]), "--json", "--db", withPassword]);
    expect(shown.code, shown.stderr).toBe(0);
    const stored = JSON.parse(shown.stdout) as { client: string; exchanges: Array<{ id: number }> };
    expect(stored).toMatchObject({ client: "claude-code" });
    // The analyser leaves rows that came grouped alone: after its hold, the same handshake, the same exchanges.
    await new Promise((r) => setTimeout(r, 3_500));
    const later = JSON.parse((await runCli(["inspector", "show", String(report.recorded.handshakeIds[0]), "--json", "--db", withPassword])).stdout) as typeof stored;
    expect(later.exchanges.map((e) => e.id)).toEqual(stored.exchanges.map((e) => e.id));
  });

  it("reads through read-only sessions", async () => {
    const recording = await openRecording(db);
    try {
      const pool = (recording as unknown as { pool: { query(sql: string): Promise<unknown> } }).pool;
      await expect(pool.query("INSERT INTO meta (key, value) VALUES ('x', 'y')")).rejects.toMatchObject({ code: "25006" });
    } finally {
      await recording.close();
    }
  });

  it("tails every replica's exchanges and the analyser's handshake updates, polling the database", { timeout: 30_000 }, async () => {
    const child = spawn(process.execPath, [...cliNodeFlags(), CLI, "inspector", "tail", "--json", "--db", withPassword], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    try {
      await waitFor(() => err.includes("polling"), "tail to start polling", 10_000);
      // Not the one replica's /live: the database has both replicas' traffic.
      expect(err).toContain("polling postgres://lens:***@");
      const probe = (lens: RunningLens) => fetch(`${lens.url}/mcp`, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "tail-probe", version: "1" } } }) });
      await probe(lenses[0]!);
      await probe(lenses[1]!);
      const lines = () => out.split("\n").filter(Boolean).map((l) => JSON.parse(l) as { type: string; exchange?: { replica?: string } });
      await waitFor(() => new Set(lines().flatMap((l) => (l.type === "exchange" ? [l.exchange?.replica] : []))).size === 2, "both replicas' exchanges", 10_000);
      await waitFor(() => lines().some((l) => l.type === "handshake"), "a handshake update from the analyser", 10_000);
      expect(out + err).not.toContain("CANARY-pg-password");
    } finally {
      child.kill("SIGINT");
      await new Promise((r) => child.once("close", r));
    }
  });

  it("a replica's /live carries every replica's exchanges and the analyser's handshakes", { timeout: 30_000 }, async () => {
    const url = new URL("/live", lenses[1]!.adminUrl);
    url.protocol = "ws:";
    const socket = new WebSocket(url);
    const messages: Array<{ type: string; exchange?: { replica?: string }; handshake?: { clientName: string | null } }> = [];
    socket.on("message", (raw) => messages.push(JSON.parse(String(raw)) as (typeof messages)[number]));
    try {
      await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
      await waitFor(() => messages.some((m) => m.type === "hello"), "the feed's hello", 5_000);
      // Through the other replica only, until it shows: the feed follows from when its reader
      // started, a moment after the hello.
      const probe = () => fetch(`${lenses[0]!.url}/mcp`, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "live-probe", version: "1" } } }) });
      let sent = 0;
      await waitFor(
        async () => {
          if (messages.some((m) => m.type === "exchange" && m.exchange?.replica === "a")) return true;
          if (sent++ % 25 === 0) await probe(); // every ~500 ms
          return false;
        },
        "replica a's exchange on replica b's feed",
        10_000,
      );
      await waitFor(() => messages.some((m) => m.type === "handshake" && m.handshake?.clientName === "live-probe"), "the analyser's handshake on the feed", 10_000);
    } finally {
      socket.terminate();
    }
  });

  it("shows the list and the failed handshake in the interactive view", { timeout: 20_000 }, async () => {
    const recording: Recording = await openRecording(db);
    const app = render(createElement(App, { data: recording, dbPath: recording.path, width: 100, height: 24, follow: false }));
    const view = render(createElement(HandshakeView, { data: recording, active: false, width: 100, height: 40, tick: 0, open: () => undefined, id: failedId }));
    try {
      await waitFor(() => (app.lastFrame() ?? "").includes("issuer_mismatch"), "the list to show the failed handshake", 5_000);
      await waitFor(() => (view.lastFrame() ?? "").includes(`#${failedId}`) && (view.lastFrame() ?? "").includes("issuer_mismatch"), "the handshake view", 5_000);
    } finally {
      app.unmount();
      view.unmount();
      await recording.close();
    }
  });
});
