// The admin port: Prometheus metrics that pass promtool, and the /live WebSocket feed.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { CLIENT_FAMILIES, HANDSHAKE_ERAS, REGISTRATION_KINDS, type Handshake } from "../../analysis/handshake.js";
import { TrafficMetrics } from "../../proxy/admin/metrics.js";
import { startMinimalServer } from "../fixtures/minimal-server.js";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request } from "../helpers/upstream.js";
import { handshakeOf as handshake } from "../helpers/exchanges.js";

const PROMTOOL = "/usr/bin/promtool";
const ADMIN_TOKEN = "admin-token-for-tests";
const havePromtool = existsSync(PROMTOOL);

/** The series of `metric` in an exposition text, as label maps with their values. */
function series(text: string, metric: string): Array<{ labels: Record<string, string>; value: number }> {
  return [...text.matchAll(new RegExp(`^${metric}\\{([^}]*)\\} (\\S+)$`, "gm"))].map((m) => ({
    labels: Object.fromEntries([...m[1]!.matchAll(/(\w+)="((?:\\.|[^"\\])*)"/g)].map((l) => [l[1]!, l[2]!])),
    value: Number(m[2]),
  }));
}
if (!havePromtool && process.env.CI !== "true") {
  console.warn(`promtool check skipped: ${PROMTOOL} is missing (apt-get install prometheus); CI=true makes this a failure`);
}

describe("admin port: metrics and live feed", () => {
  let server: Awaited<ReturnType<typeof startMinimalServer>>;
  let lens: RunningLens;
  let sessionId: string | undefined;
  const tmp = tempDir();

  beforeAll(async () => {
    server = await startMinimalServer({ port: 0, responseMode: "sse" });
    lens = await startLensProcess({
      upstream: server.url,
      dbPath: `${tmp.dir}/lens.db`,
      args: ["--flush-interval", "20", "--admin-token", ADMIN_TOKEN],
    });
    const client = new Client({ name: "metrics-test", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(lens.url + "/mcp"));
    await client.connect(transport);
    await client.listTools();
    await client.callTool({ name: "echo", arguments: { text: "hello" } });
    sessionId = transport.sessionId;
    await client.close();
    await request(lens.url + "/.well-known/oauth-authorization-server");
  });

  afterAll(async () => {
    await lens?.stop();
    await server?.close();
    tmp.cleanup();
  });

  async function scrape(): Promise<string> {
    const res = await request(lens.adminUrl + "/metrics", { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toContain("text/plain");
    return res.body.toString();
  }

  it("requires the admin token for /metrics and /live, not for /health", async () => {
    expect((await request(lens.adminUrl + "/metrics")).status).toBe(401);
    expect((await request(lens.adminUrl + "/metrics?token=wrong")).status).toBe(401);
    expect((await request(lens.adminUrl + "/health")).status).toBe(200);
    const refused = new WebSocket(lens.adminUrl.replace("http", "ws") + "/live");
    await expect(new Promise((resolve, reject) => { refused.once("open", resolve); refused.once("error", reject); })).rejects.toThrow(/401/);
  });

  it("exposes RED metrics by route kind, JSON-RPC methods, tools, OAuth and the recorder", async () => {
    const text = await waitFor(async () => {
      const t = await scrape();
      // Every exchange of beforeAll is recorded (batched, off the request path) before asserting.
      return t.includes('method="tools/call"') && t.includes('kind="authorization_server_metadata"') ? t : null;
    }, "the exchanges to be counted");
    expect(text).toMatch(/mcp_lens_requests_total\{kind="mcp_post",method="POST",status="200"\} [1-9]/);
    expect(text).toMatch(/mcp_lens_jsonrpc_requests_total\{method="initialize",outcome="result"\} 1/);
    expect(text).toMatch(/mcp_lens_tool_calls_total\{tool="echo",outcome="result"\} 1/);
    expect(text).toMatch(/mcp_lens_oauth_exchanges_total\{kind="authorization_server_metadata",status="200"\} 1/);
    expect(text).toMatch(/mcp_lens_request_duration_seconds_bucket\{le="[^"]+",kind="authorization_server_metadata"\}/);
    expect(text).toMatch(/mcp_lens_upstream_ttfb_seconds_count\{kind="mcp_post"\} [1-9]/);
    expect(text).toMatch(/mcp_lens_recorder_rows_written_total [1-9]/);
    expect(text).toMatch(/mcp_lens_recorder_rows_dropped_total\{reason="queue_full"\} 0/);
    expect(text).toMatch(/mcp_lens_recorder_queue_depth \d/);
    expect(text).toMatch(/mcp_lens_in_flight_requests \d/);
    expect(text).toMatch(/mcp_lens_active_sse_streams \d/);
    expect(text).toMatch(/mcp_lens_handshakes_started_total\{client_family="[^"]+"\} [1-9]/);
    // Era fallbacks: one series per client family from the start, at 0 here.
    expect(series(text, "mcp_lens_era_fallbacks_total").map((s) => s.labels.client_family).sort()).toEqual([...CLIENT_FAMILIES].sort());
    expect(text).toMatch(/mcp_lens_build_info\{version="\d+\.\d+\.\d+",node_version="v\d+/);
    // Bounded labels: no session id, no raw path.
    expect(sessionId).toBeTruthy();
    expect(text).not.toContain(sessionId!);
    expect(text).not.toContain("/.well-known");
  });

  it("labels the terminal handshake counters with the era and registration kind the handshake was stored with", async () => {
    // The SDK client of beforeAll connected (initialize, tools/list, tools/call): one succeeded
    // handshake. Its era and registration kind are the analyser's: this checks they reach the labels.
    const db = new Database(`${tmp.dir}/lens.db`, { readonly: true });
    let stored: Array<{ client_family: string; era: string; registration: string }>;
    try {
      stored = await waitFor(() => {
        const rows = db.prepare("SELECT client_family, era, registration FROM handshakes WHERE outcome = 'succeeded'").all() as typeof stored;
        return rows.length > 0 ? rows : null;
      }, "the succeeded handshake");
    } finally {
      db.close();
    }
    const text = await waitFor(async () => {
      const t = await scrape();
      return series(t, "mcp_lens_handshakes_succeeded_total").length > 0 ? t : null;
    }, "the succeeded handshake to be counted");
    const succeeded = series(text, "mcp_lens_handshakes_succeeded_total");
    for (const row of stored) {
      expect(succeeded).toContainEqual({ labels: { client_family: row.client_family, era: row.era, registration: row.registration }, value: expect.any(Number) });
    }
    for (const { labels, value } of succeeded) {
      expect(Object.keys(labels).sort()).toEqual(["client_family", "era", "registration"]);
      expect(HANDSHAKE_ERAS).toContain(labels.era);
      expect(REGISTRATION_KINDS).toContain(labels.registration);
      expect(value).toBeGreaterThanOrEqual(1);
    }
  });

  it("takes tool labels from the server's tools/list answers: clients calling invented names mint none", async () => {
    const INVENTED = 60;
    for (let i = 0; i < INVENTED; i++) {
      await request(lens.url + "/mcp", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify({ jsonrpc: "2.0", id: i, method: "tools/call", params: { name: `invented_tool_${i}`, arguments: {} } }),
      });
    }
    const otherCalls = (text: string) =>
      [...text.matchAll(/mcp_lens_tool_calls_total\{tool="other",outcome="[^"]+"\} (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    const text = await waitFor(async () => {
      const t = await scrape();
      return otherCalls(t) >= INVENTED ? t : null;
    }, "the invented calls to be counted");
    expect(text).not.toContain("invented_tool");
    // "echo" was in the server's tools/list answer (beforeAll): it keeps its own label.
    expect(text).toMatch(/mcp_lens_tool_calls_total\{tool="echo",outcome="result"\} 1/);
  });

  it.skipIf(!havePromtool && process.env.CI !== "true")("passes promtool check metrics", async () => {
    const text = await scrape();
    const result = spawnSync(PROMTOOL, ["check", "metrics"], { input: text, encoding: "utf8" });
    expect(result.stdout + result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  it("streams each recorded exchange and handshake update on /live", async () => {
    const socket = new WebSocket(lens.adminUrl.replace("http", "ws") + "/live", { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const messages: Array<{ type: string; exchange?: { path: string; kind: string }; handshakeId?: number | null; handshake?: { id: number } }> = [];
    socket.on("message", (data) => messages.push(JSON.parse(data.toString())));
    await new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    });
    await request(lens.url + "/mcp", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "user-agent": "python-httpx/0.28.1" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "Anthropic", version: "1" } } }),
    });
    const exchange = await waitFor(() => messages.find((m) => m.type === "exchange" && m.exchange?.kind === "mcp_post"), "the exchange on /live");
    expect(messages[0]!.type).toBe("hello");
    expect(exchange.exchange!.path).toBe("/mcp");
    expect(exchange.handshakeId).toEqual(expect.any(Number));
    const update = await waitFor(() => messages.find((m) => m.type === "handshake" && m.handshake?.id === exchange.handshakeId), "the handshake update on /live");
    expect(update.handshake!.id).toBe(exchange.handshakeId);
    socket.close();
  });
});

describe("TrafficMetrics: handshakes by era and registration kind", () => {
  // Handshakes written by hand: every era, a fallback and every registration kind, whatever the
  // analyser makes of real traffic.
  const text = (m: TrafficMetrics) => m.registry.metrics();

  it("counts succeeded and failed handshakes with the era and registration they ended with, once each", async () => {
    const m = new TrafficMetrics();
    // Seen first with neither known (started counts it, by family only), then ending.
    m.observeHandshakes([handshake(1, { clientFamily: "claude.ai" }), handshake(2, { clientFamily: "vscode" })]);
    const modern = handshake(1, { clientFamily: "claude.ai", era: "modern", registration: "cimd", outcome: "succeeded" });
    const fellBack = handshake(2, { clientFamily: "vscode", era: "legacy", eraFallback: true, registration: "dcr", outcome: "failed", failedStep: "list" });
    const diagnosed = { ...fellBack, diagnoses: [{ code: "tool_definition_rejected", severity: "error", summary: "", evidence: [], fix: "", reference: "" }] } as Handshake;
    m.observeHandshakes([modern, diagnosed]);
    m.observeHandshakes([modern, diagnosed]); // updates of ended handshakes count nothing again
    m.observeHandshakes([handshake(3, { clientFamily: "claude-code", registration: "pre_registered", outcome: "failed", failedStep: "token" })]);
    const out = await text(m);
    expect(series(out, "mcp_lens_handshakes_started_total")).toEqual(
      expect.arrayContaining([
        { labels: { client_family: "claude.ai" }, value: 1 },
        { labels: { client_family: "vscode" }, value: 1 },
        { labels: { client_family: "claude-code" }, value: 1 },
      ]),
    );
    expect(series(out, "mcp_lens_handshakes_succeeded_total")).toEqual([{ labels: { client_family: "claude.ai", era: "modern", registration: "cimd" }, value: 1 }]);
    expect(series(out, "mcp_lens_handshakes_failed_total")).toEqual([
      { labels: { client_family: "vscode", failed_step: "list", code: "tool_definition_rejected", era: "legacy", registration: "dcr" }, value: 1 },
      { labels: { client_family: "claude-code", failed_step: "token", code: "none", era: "unknown", registration: "pre_registered" }, value: 1 },
    ]);
    const fallbacks = series(out, "mcp_lens_era_fallbacks_total");
    expect(fallbacks).toHaveLength(CLIENT_FAMILIES.length);
    expect(fallbacks.filter((s) => s.value > 0)).toEqual([{ labels: { client_family: "vscode" }, value: 1 }]);
  });

  it("counts a fallback once, when it first shows, even before the handshake ends", async () => {
    const m = new TrafficMetrics();
    m.observeHandshakes([handshake(7, { clientFamily: "cursor", era: "legacy", eraFallback: true })]);
    m.observeHandshakes([handshake(7, { clientFamily: "cursor", era: "legacy", eraFallback: true })]);
    m.observeHandshakes([handshake(7, { clientFamily: "cursor", era: "legacy", eraFallback: true, outcome: "succeeded", registration: "dcr" })]);
    const out = await text(m);
    expect(series(out, "mcp_lens_era_fallbacks_total").filter((s) => s.value > 0)).toEqual([{ labels: { client_family: "cursor" }, value: 1 }]);
    expect(series(out, "mcp_lens_handshakes_succeeded_total")).toEqual([{ labels: { client_family: "cursor", era: "legacy", registration: "dcr" }, value: 1 }]);
  });

  it("keeps the label sets closed: a value outside the enums is counted as unknown / none", async () => {
    const m = new TrafficMetrics();
    const odd = handshake(9, { era: "2026-07-28\nx" as Handshake["era"], registration: "https://client.example/id" as Handshake["registration"], outcome: "succeeded" });
    m.observeHandshakes([odd]);
    const out = await text(m);
    expect(series(out, "mcp_lens_handshakes_succeeded_total")).toEqual([{ labels: { client_family: "other", era: "unknown", registration: "none" }, value: 1 }]);
    expect(out).not.toContain("client.example");
  });
});
