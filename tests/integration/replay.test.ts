// Replay end to end: a hosted connector's handshake fails through the real mcp-lens binary in front
// of a server with a fault; the upstream is fixed (a new mcp-lens on the same database, in front of
// the fixed server); re-running the stored handshake through the proxy now passes, and the re-run
// is recorded like any traffic, as a new handshake of the same client.
// And in the modern era: the v2 SDK's client (2026-07-28 only) connects through the real proxy to
// the v2 SDK's modern-only server; `inspector replay ID` re-runs it as a modern client (exit 0),
// and `--era dual` against a v1 SDK (legacy) server falls back to initialize and passes (exit 0),
// where the modern re-run still fails (exit 1).
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { InspectorData, type HandshakeDetail } from "../../inspector/data.js";
import { replayHandshake, type ReplayResult } from "../../inspector/replay.js";
import { startErasServer } from "../fixtures/eras-server.js";
import { startMisbehavingServer, type MisbehavingServer } from "../fixtures/misbehaving-server.js";
import { keepArtifact } from "../helpers/artifacts.js";
import { FAMILIES, runHostedConnector } from "../helpers/hosted-connector.js";
import { describeClientRun, runV2Client } from "../helpers/real-clients.js";
import { ROOT, startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";

const tmp = tempDir("mcp-lens-replay-");
const running: Array<RunningLens | MisbehavingServer> = [];
afterAll(async () => {
  for (const r of running.reverse()) await ("stop" in r ? r.stop() : r.close());
  tmp.cleanup();
});

/** Reads the database the way `inspector replay ID` does: read-only, a fresh look each time. */
function look<T>(dbPath: string, read: (data: InspectorData) => T): T {
  const data = new InspectorData(dbPath);
  try {
    return read(data);
  } finally {
    data.close();
  }
}

describe("inspector replay through the real proxy", () => {
  it("turns a handshake that failed on issuer_trailing_slash into now_passes once the upstream is fixed", { timeout: 60_000 }, async () => {
    const dbPath = `${tmp.dir}/lens.db`;
    const lensArgs = ["--flush-interval", "20", "--shutdown-timeout", "500"];
    const faulty = await startMisbehavingServer("issuer_trailing_slash");
    running.push(faulty);
    const lens = await startLensProcess({ upstream: faulty.url, dbPath, args: lensArgs });
    running.push(lens);

    const connector = await runHostedConnector(`${lens.url}/mcp`, { family: "claude.ai" });
    expect(connector.failedAt).toBe("authorization_server_metadata");
    // The proxy settles the verdict once the client has stayed quiet (analysis/verdict.ts).
    const original: HandshakeDetail = await waitFor(
      () => look(dbPath, (data) => data.listHandshakes().flatMap((h) => (h.outcome === "failed" ? [data.getHandshake(h.id)!] : []))[0]),
      "the failed handshake stored",
      20_000,
    );
    expect(original.handshake).toMatchObject({ clientFamily: "claude.ai", failedStep: "authorization_server_metadata" });
    expect(original.handshake.diagnoses[0]?.code).toBe("issuer_mismatch");

    // Still broken: the re-run through the proxy fails where the original did.
    const again = await replayHandshake(original, { target: lens.url });
    expect(again, again.summary).toMatchObject({ verdict: "still_fails", failedStep: "authorization_server_metadata", code: "issuer_mismatch" });
    // One diagnosis: the re-run's code (its exchanges judged in memory) is the one the proxy's
    // analyser gives the same traffic, recorded as a handshake of its own.
    const proxied = await waitFor(
      () =>
        look(dbPath, (data) => {
          const h = data.listHandshakes().find((s) => s.id > original.handshake.id);
          return h && data.getHandshake(h.id)?.handshake.diagnoses[0]?.code;
        }),
      "the re-run's handshake diagnosed by the proxy",
    );
    expect(proxied).toBe(again.code);

    // Fixed: the same database, a new proxy (on another port) in front of the fixed server.
    await lens.stop();
    await faulty.close();
    const fixed = await startMisbehavingServer([]);
    running.push(fixed);
    const lens2 = await startLensProcess({ upstream: fixed.url, dbPath, args: lensArgs });
    running.push(lens2);
    const lastId = look(dbPath, (data) => data.maxExchangeId());

    const result = await replayHandshake(original, { target: lens2.url });
    expect(result, result.summary).toMatchObject({ handshakeId: original.handshake.id, target: lens2.url, verdict: "now_passes", failedStep: null, code: null });
    const as = result.steps.find((s) => s.step === "authorization_server_metadata")!;
    expect(as).toMatchObject({ original: { status: "failed" }, rerun: { status: "ok", httpStatus: 200 }, same: false });
    expect(result.steps.find((s) => s.step === "registration")).toMatchObject({ original: { status: "absent" }, rerun: { status: "ok", httpStatus: 201 } });
    expect(result.summary).toContain("now passes");

    // Recorded like any traffic: a new handshake of the same client, from the re-run's first request.
    const rerun = await waitFor(
      () =>
        look(dbPath, (data) => {
          const h = data.listHandshakes().find((s) => s.id > lastId);
          const detail = h && data.getHandshake(h.id);
          return detail && detail.handshake.steps.some((s) => s.step === "callback") ? detail : undefined;
        }),
      "the re-run's handshake stored",
    );
    expect(rerun.handshake.id).toBe(lastId + 1);
    expect(rerun.handshake.clientFamily).toBe("claude.ai");
    expect(rerun.handshake.steps.map((s) => [s.step, s.status])).toEqual([
      ["probe", "ok"],
      ["protected_resource_metadata", "ok"],
      ["authorization_server_metadata", "ok"],
      ["registration", "ok"],
      // The authorize request, as doctor sends it; this server remembers consent and answers with
      // the authorization response at once (the callback step), whose code nobody redeems.
      ["authorize", "ok"],
      ["callback", "ok"],
    ]);
    expect(rerun.handshake.diagnoses.filter((d) => d.severity === "error")).toEqual([]);
    // As the same client (its user agent), but at the target: the target's Host, no recorded X-Forwarded-*.
    const probe = rerun.exchanges[0]!;
    expect(probe.facts.userAgent).toBe(FAMILIES["claude.ai"].userAgent);
    expect(probe.host).toBe(new URL(lens2.url).host);
    expect(probe.requestHeaders.find(([n]) => n.toLowerCase() === "x-forwarded-proto")?.[1]).toBe("http");
    expect(rerun.exchanges.find((e) => e.kind === "registration")?.facts).toMatchObject({
      clientName: FAMILIES["claude.ai"].clientName,
      redirectUris: [FAMILIES["claude.ai"].redirectUri],
      tokenEndpointAuthMethod: FAMILIES["claude.ai"].authMethod,
    });
  });
});

const INSPECTOR = path.join(ROOT, "dist/inspector/cli.js");
const run = promisify(execFile);

/** `inspector replay …` as the operator runs it: exit code and the --json result. */
async function replayCli(args: string[], dbPath: string, name: string): Promise<{ code: number; result: ReplayResult }> {
  const argv = [INSPECTOR, "replay", ...args, "--db", dbPath, "--json", "--timeout", "5000"];
  try {
    const { stdout } = await run(process.execPath, argv);
    keepArtifact(`replay-${name}.json`, stdout);
    return { code: 0, result: JSON.parse(stdout) as ReplayResult };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    keepArtifact(`replay-${name}.json`, e.stdout + e.stderr);
    return { code: e.code, result: JSON.parse(e.stdout) as ReplayResult };
  }
}

describe("inspector replay of a 2026-07-28 handshake through the real proxy", () => {
  it("re-runs it as a modern client (exit 0); --era dual against a v1 SDK server falls back and passes", { timeout: 90_000 }, async () => {
    const dbPath = `${tmp.dir}/modern.db`;
    const lensArgs = ["--flush-interval", "20", "--shutdown-timeout", "500"];
    // The v2 SDK's modern-only server (createMcpHandler, legacy "reject").
    const modernOnly = await startErasServer({ era: "modern" });
    running.push(modernOnly);
    const lens = await startLensProcess({ upstream: modernOnly.url, dbPath, args: lensArgs });
    running.push(lens);

    // The v2 SDK's client, 2026-07-28 only, in its own process: server/discover, tools/list, tools/call.
    const client = await runV2Client(`${lens.url}/mcp`, { mode: "pin", name: "replay-v2-client-pin" });
    expect(client.code, describeClientRun(client)).toBe(0);

    const original: HandshakeDetail = await waitFor(
      () =>
        look(dbPath, (data) => {
          const h = data.listHandshakes().find((s) => s.exchangeCount >= 3);
          const detail = h && data.getHandshake(h.id);
          return detail?.handshake.outcome === "succeeded" ? detail : undefined;
        }),
      "the modern handshake stored as one, succeeded",
      20_000,
    );
    expect(original.handshake).toMatchObject({ era: "modern", eraFallback: false, failedStep: null });
    expect(original.exchanges.map((e) => e.facts.mcp?.methods[0]).slice(0, 2)).toEqual(["server/discover", "tools/list"]);
    const id = String(original.handshake.id);
    const lastId = look(dbPath, (data) => data.maxExchangeId());

    // As recorded, through the proxy that recorded it: modern, exit 0.
    const modern = await replayCli([id], dbPath, "modern");
    expect(modern.code, modern.result.summary).toBe(0);
    expect(modern.result).toMatchObject({ handshakeId: original.handshake.id, target: lens.url, verdict: "now_passes", era: "modern", eraFallback: false, failedStep: null });
    expect(modern.result.steps.filter((s) => s.rerun.status === "ok").map((s) => s.step)).toEqual(["probe", "discover", "list", "stream"]);

    // The proxy recorded the re-run as a modern handshake of its own: 2026-07-28 requests only.
    const rerun = await waitFor(
      () =>
        look(dbPath, (data) => {
          const h = data.listHandshakes().find((s) => s.id > lastId);
          const detail = h && data.getHandshake(h.id);
          return detail && detail.exchanges.length >= 2 && detail.handshake.outcome === "succeeded" ? detail : undefined;
        }),
      "the re-run's handshake stored",
      20_000,
    );
    expect(rerun.handshake).toMatchObject({ era: "modern", eraFallback: false, clientName: "replay-v2-client-pin" });
    expect(rerun.handshake.steps.map((s) => [s.step, s.status])).toEqual([
      ["probe", "ok"],
      ["discover", "ok"],
      ["list", "ok"],
      ["stream", "ok"], // subscriptions/listen, as doctor opens it
    ]);
    for (const e of rerun.exchanges) {
      expect(e.method).toBe("POST");
      expect(e.facts.mcp).toMatchObject({ era: "modern", metaProtocolVersion: "2026-07-28", protocolVersionHeader: "2026-07-28", methodHeader: e.facts.mcp?.methods[0] });
      expect(e.facts.mcp?.headerMismatch).toBeUndefined();
      expect(e.facts.mcp?.sessionId).toBeUndefined();
    }

    // A v1 SDK (legacy) server behind a second proxy on the same database.
    // The v1 SDK's stateful server, answering with SSE (its Connection: keep-alive and a re-run that
    // sent Connection: close once made the proxy reuse an upstream socket the server had closed).
    const legacy = await startErasServer({ era: "legacy" });
    running.push(legacy);
    const lens2 = await startLensProcess({ upstream: legacy.url, dbPath, args: lensArgs });
    running.push(lens2);

    // The modern-only client cannot connect to it: exit 1, at the probe.
    const mismatch = await replayCli([id, "--target", lens2.url], dbPath, "modern-vs-legacy");
    expect(mismatch.code).toBe(1);
    expect(mismatch.result).toMatchObject({ verdict: "still_fails", failedStep: "probe", era: "modern" });
    expect(mismatch.result.summary).toContain("a modern-only client has nowhere to go");
    // The analyser's code, as for live traffic: the client is modern-only, the server legacy.
    expect(mismatch.result.code).toBe("era_mismatch");

    // A dual-era client can: modern first, initialize after the 400 without a modern error.
    const before = look(dbPath, (data) => data.maxExchangeId());
    const dual = await replayCli([id, "--era", "dual", "--target", lens2.url], dbPath, "dual-vs-legacy");
    expect(dual.code, dual.result.summary).toBe(0);
    expect(dual.result).toMatchObject({ verdict: "now_passes", era: "dual", eraFallback: true });
    expect(dual.result.steps.filter((s) => s.rerun.status === "ok").map((s) => s.step)).toEqual(["probe", "initialize", "initialized", "list", "stream"]);

    // Recorded by the proxy as one handshake: a healthy fallback, legacy from then on.
    const fallback = await waitFor(
      () =>
        look(dbPath, (data) => {
          const h = data.listHandshakes().find((s) => s.id > before);
          const detail = h && data.getHandshake(h.id);
          return detail && detail.exchanges.length >= 4 && detail.handshake.outcome === "succeeded" ? detail : undefined;
        }),
      "the dual re-run's handshake stored",
      20_000,
    );
    expect(fallback.handshake).toMatchObject({ era: "legacy", eraFallback: true, failedStep: null });
    expect(fallback.exchanges.map((e) => `${e.facts.mcp?.methods[0]} ${e.status}`).slice(0, 2)).toEqual(["server/discover 400", "initialize 200"]);
    expect(fallback.handshake.diagnoses.filter((d) => d.severity === "error")).toEqual([]);
  });
});
