// The inspector's data layer on a database filled by real traffic: the real mcp-lens binary in
// front of a server that accepts only the claude.ai callback, so a claude.ai connector connects and
// a ChatGPT one fails at authorize. Reads are read-only and use the indexes, never a scan of exchanges.
import { writeFileSync } from "node:fs";
import BetterSqlite3 from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Handshake } from "../../analysis/handshake.js";
import { DatabasePoller, InspectorData, type LiveMessage } from "../../inspector/data.js";
import { followTraffic } from "../../inspector/follow.js";
import { openDatabase } from "../../store/db.js";
import { handshakeToRow, UPSERT_HANDSHAKE_SQL } from "../../store/schema.js";
import { closedPort } from "../helpers/upstream.js";
import { startMisbehavingServer, type MisbehavingServer } from "../fixtures/misbehaving-server.js";
import { runHostedConnector, type ConnectorFamily } from "../helpers/hosted-connector.js";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { handshakeOf } from "../helpers/exchanges.js";

describe("InspectorData", () => {
  const tmp = tempDir("mcp-lens-inspector-data-");
  let server: MisbehavingServer;
  let lens: RunningLens;
  let data: InspectorData;

  /** Runs a connector through the proxy and waits until its exchanges are stored and its handshake settled. */
  async function connect(family: ConnectorFamily) {
    const before = data.maxExchangeId();
    const result = await runHostedConnector(`${lens.url}/mcp`, { family });
    const handshake = await waitFor(() => {
      const stored = data.exchangesAfter(before, 1_000);
      const id = stored[0]?.handshakeId;
      const h = id === undefined || id === null ? null : data.getHandshake(id)?.handshake;
      return stored.length === result.requests && h && h.outcome !== "in_progress" ? h : null;
    }, `the ${family} handshake`);
    return { result, handshake };
  }

  let healthy: Awaited<ReturnType<typeof connect>>;
  let failed: Awaited<ReturnType<typeof connect>>;

  beforeAll(async () => {
    server = await startMisbehavingServer("redirect_uri_rejected");
    lens = await startLensProcess({ upstream: server.url, dbPath: `${tmp.dir}/lens.db`, args: ["--flush-interval", "20"] });
    data = new InspectorData(lens.dbPath);
    healthy = await connect("claude.ai");
    failed = await connect("chatgpt");
  });

  afterAll(async () => {
    data?.close();
    await server?.close();
    await lens?.stop();
    tmp.cleanup();
  });

  it("lists handshakes newest first, with the first diagnosis and the exchange count", () => {
    expect(healthy.result.failedAt).toBeNull();
    expect(failed.result.failedAt).toBe("authorize");
    expect(failed.handshake.diagnoses.map((d) => d.code)).toContain("redirect_uri_rejected");
    expect(data.listHandshakes()).toEqual([
      {
        id: failed.handshake.id,
        clientFamily: "chatgpt",
        clientName: "openai-mcp",
        // As the analyser stored them (the era rules are tested with the analyser).
        era: failed.handshake.era,
        eraFallback: failed.handshake.eraFallback,
        registration: failed.handshake.registration,
        startedAt: failed.handshake.startedAt,
        endedAt: failed.handshake.endedAt,
        outcome: "failed",
        failedStep: "authorize",
        firstCode: failed.handshake.diagnoses[0]!.code,
        firstSummary: expect.stringContaining("chatgpt.com"),
        exchangeCount: failed.result.requests,
      },
      expect.objectContaining({
        id: healthy.handshake.id,
        clientFamily: "claude.ai",
        era: healthy.handshake.era,
        eraFallback: healthy.handshake.eraFallback,
        registration: healthy.handshake.registration,
        outcome: "succeeded",
        failedStep: null,
        exchangeCount: healthy.result.requests,
      }),
    ]);
  });

  it("filters by outcome, client, time and text, and pages", () => {
    const ids = (filter: Parameters<InspectorData["listHandshakes"]>[0]) => data.listHandshakes(filter).map((h) => h.id);
    const [f, h] = [failed.handshake.id, healthy.handshake.id];
    expect(ids({ failedOnly: true })).toEqual([f]);
    expect(ids({ client: "CLAUDE" })).toEqual([h]);
    expect(ids({ sinceMs: failed.handshake.startedAt })).toEqual([f]);
    expect(ids({ sinceMs: Date.now() + 60_000 })).toEqual([]);
    expect(ids({ text: "redirect_uri_rej" })).toEqual([f]); // a code
    expect(ids({ text: "chatgpt.com/connector" })).toEqual([f]); // a summary
    expect(ids({ text: "tools/call" })).toEqual([]); // paths only, not bodies
    expect(ids({ text: "/.well-known/oauth-authorization-server" })).toEqual([f, h]); // a path
    expect(ids({ text: "%" })).toEqual([]); // LIKE wildcards are literal
    expect(ids({ limit: 1 })).toEqual([f]);
    expect(ids({ limit: 1, beforeId: f })).toEqual([h]);
    expect(data.findHandshakes({ failedOnly: true })).toEqual([failed.handshake]);
  });

  it("reads one handshake with its exchanges in id order, and single exchanges", () => {
    const detail = data.getHandshake(failed.handshake.id)!;
    expect(detail.handshake).toEqual(failed.handshake);
    const exchangeIds = detail.exchanges.map((e) => e.id);
    expect(exchangeIds).toEqual(failed.handshake.exchangeIds);
    expect(exchangeIds).toEqual([...exchangeIds].sort((a, b) => a - b));
    const evidence = detail.handshake.diagnoses[0]!.evidence;
    expect(exchangeIds).toEqual(expect.arrayContaining(evidence));
    expect(detail.exchanges.find((e) => e.id === evidence.at(-1))!.kind).toBe("authorize");
    expect(data.getExchange(evidence[0]!)).toEqual(detail.exchanges.find((e) => e.id === evidence[0]));
    expect(data.getHandshake(999_999)).toBeNull();
    expect(data.getExchange(999_999)).toBeNull();
  });

  it("reads what the proxy recorded about itself", () => {
    expect(data.meta()).toMatchObject({ proxy_url: lens.url, upstream: server.url, admin_url: lens.adminUrl, version: expect.any(String) });
    const all = data.exchangesAfter(0, 10_000);
    expect(data.maxExchangeId()).toBe(all.at(-1)!.exchange.id);
    expect(all).toHaveLength(healthy.result.requests + failed.result.requests);
    expect(new Set(all.map((e) => e.handshakeId))).toEqual(new Set([healthy.handshake.id, failed.handshake.id]));
  });

  it("re-analyses the stored exchanges in memory to the same handshakes", () => {
    const pick = (h: { id: number; outcome: string; failedStep: string | null; exchangeIds: number[]; diagnoses: Array<{ code: string }> }) => ({
      id: h.id,
      outcome: h.outcome,
      failedStep: h.failedStep,
      exchangeIds: h.exchangeIds,
      codes: h.diagnoses.map((d) => d.code),
    });
    expect(data.reanalyse().map(pick)).toEqual(data.findHandshakes().map(pick));
    expect(data.reanalyse({ maxExchanges: failed.result.requests }).map((h) => h.id)).toEqual([failed.handshake.id]);
  });

  it("lists, shows and polls through the indexes, never scanning exchanges or sorting", () => {
    const scans = (plan: string[]) => plan.filter((d) => /^SCAN (e|exchanges)\b/.test(d) || /TEMP B-TREE/.test(d));
    const failedPlan = data.queryPlans({ failedOnly: true }).list;
    expect(failedPlan.join("\n")).toMatch(/SEARCH h USING INDEX handshakes_outcome \(outcome=\?/);
    for (const filter of [{}, { failedOnly: true }, { failedOnly: true, sinceMs: 1, client: "claude", beforeId: failed.handshake.id }, { text: "x" }]) {
      const { list, show } = data.queryPlans(filter);
      expect(scans(list), JSON.stringify({ filter, list })).toEqual([]);
      expect(scans(show), JSON.stringify(show)).toEqual([]);
    }
    const { list, poll } = data.queryPlans();
    expect(list.join("\n")).toMatch(/handshakes_started_at/);
    // New exchanges by primary key range, not through the handshake_id index.
    expect(poll.filter((d) => / exchanges\b/.test(d))).toEqual(["SEARCH exchanges USING INTEGER PRIMARY KEY (rowid>?)"]);
  });

  it("follows new traffic by polling the database, and through the live feed", async () => {
    const start = data.maxExchangeId();
    const poller = new DatabasePoller(data);
    const polled: LiveMessage[] = [];
    const live: LiveMessage[] = [];
    const modes: string[] = [];
    const viaLive = followTraffic(data, { liveUrl: `${lens.adminUrl.replace("http", "ws")}/live`, onMessage: (m) => live.push(m), onMode: (m) => modes.push(m) });
    const fallback = followTraffic(data, { liveUrl: `ws://127.0.0.1:${await closedPort()}/live`, pollMs: 50, onMessage: (m) => polled.push(m), onMode: (m) => modes.push(m) });
    try {
      await waitFor(() => modes.includes("live") && modes.includes("polling"), "both modes");
      const run = await connect("claude-code");
      const fromPoller = poller.poll();
      const exchanges = (messages: LiveMessage[]) => messages.flatMap((m) => (m.type === "exchange" ? [m.exchange.id] : []));
      const expected = data.exchangesAfter(start, 10_000).map((e) => e.exchange.id);
      expect(expected).toHaveLength(run.result.requests);
      expect(exchanges(fromPoller)).toEqual(expected);
      expect(fromPoller.filter((m) => m.type === "handshake").map((m) => m.type === "handshake" && m.handshake)).toContainEqual(run.handshake);
      expect(poller.poll()).toEqual([]); // nothing new, nothing again
      await waitFor(() => exchanges(live).length === expected.length && exchanges(polled).length === expected.length, "both followers");
      expect(exchanges(live)).toEqual(expected);
      expect(exchanges(polled)).toEqual(expected);
    } finally {
      viaLive.close();
      fallback.close();
    }
  });

  it("refuses what it cannot read with one line naming the file", () => {
    expect(() => new InspectorData(`${tmp.dir}/missing.db`)).toThrow(/^cannot open database .*missing\.db: no such file/);
    writeFileSync(`${tmp.dir}/text.db`, "not sqlite at all, just some text that is long enough to be a header".repeat(10));
    expect(() => new InspectorData(`${tmp.dir}/text.db`)).toThrow(/^cannot open database .*text\.db: file is not a database$/);
    const other = new BetterSqlite3(`${tmp.dir}/other.db`);
    other.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY)");
    other.close();
    expect(() => new InspectorData(`${tmp.dir}/other.db`)).toThrow(/not an mcp-lens database/);
  });
});

describe("InspectorData: eras and registration kinds", () => {
  // Rows written directly, so every era, the fallback and every registration kind are there
  // whatever the analyser makes of real traffic.
  const tmp = tempDir("mcp-lens-inspector-eras-");
  const dbPath = `${tmp.dir}/lens.db`;
  let data: InspectorData;

  const handshake = (id: number, fields: Partial<Handshake>): Handshake => handshakeOf(id, { outcome: "succeeded", ...fields });

  beforeAll(() => {
    const db = openDatabase(dbPath);
    const upsert = db.prepare(UPSERT_HANDSHAKE_SQL);
    upsert.run(handshakeToRow(handshake(1, { clientFamily: "claude.ai", era: "modern", registration: "cimd" })));
    upsert.run(handshakeToRow(handshake(2, { clientFamily: "vscode", era: "legacy", eraFallback: true, registration: "dcr" })));
    upsert.run(handshakeToRow(handshake(3, { clientFamily: "claude-code", era: "legacy", registration: "pre_registered", outcome: "failed", failedStep: "token" })));
    upsert.run(handshakeToRow(handshake(4, { outcome: "in_progress" })));
    // A row as an mcp-lens before migration 4 wrote it: the columns' defaults.
    db.prepare(
      `INSERT INTO handshakes (id, client_family, client_name, started_at, ended_at, outcome, failed_step, first_code, steps, diagnoses, exchange_ids)
       VALUES (5, 'chatgpt', NULL, 1700000000005, 1700000000505, 'abandoned', NULL, NULL, '[]', '[]', '[5]')`,
    ).run();
    db.close();
    data = new InspectorData(dbPath);
  });

  afterAll(() => {
    data?.close();
    tmp.cleanup();
  });

  it("lists each handshake's era, fallback and registration kind", () => {
    const pick = ({ id, era, eraFallback, registration }: { id: number; era: string; eraFallback: boolean; registration: string }) => ({ id, era, eraFallback, registration });
    expect(data.listHandshakes().map(pick)).toEqual([
      { id: 5, era: "unknown", eraFallback: false, registration: "none" },
      { id: 4, era: "unknown", eraFallback: false, registration: "none" },
      { id: 3, era: "legacy", eraFallback: false, registration: "pre_registered" },
      { id: 2, era: "legacy", eraFallback: true, registration: "dcr" },
      { id: 1, era: "modern", eraFallback: false, registration: "cimd" },
    ]);
    expect(data.getHandshake(2)!.handshake).toMatchObject({ era: "legacy", eraFallback: true, registration: "dcr" });
    expect(data.findHandshakes({ failedOnly: true }).map(pick)).toEqual([{ id: 3, era: "legacy", eraFallback: false, registration: "pre_registered" }]);
  });

  it("reports a handshake whose era alone changed when polling", () => {
    const poller = new DatabasePoller(data);
    expect(poller.poll()).toEqual([]);
    const db = openDatabase(dbPath);
    try {
      db.prepare(UPSERT_HANDSHAKE_SQL).run(handshakeToRow(handshake(4, { outcome: "in_progress", era: "modern", registration: "cimd" })));
    } finally {
      db.close();
    }
    const updates = poller.poll().flatMap((m) => (m.type === "handshake" ? [m.handshake] : []));
    expect(updates).toEqual([expect.objectContaining({ id: 4, era: "modern", registration: "cimd" })]);
    expect(poller.poll()).toEqual([]);
  });
});
