// Replay end to end: a hosted connector's handshake fails through the real mcp-lens binary in front
// of a server with a fault; the upstream is fixed (a new mcp-lens on the same database, in front of
// the fixed server); re-running the stored handshake through the proxy now passes, and the re-run
// is recorded like any traffic, as a new handshake of the same client.
import { afterAll, describe, expect, it } from "vitest";
import { InspectorData, type HandshakeDetail } from "../../inspector/data.js";
import { replayHandshake } from "../../inspector/replay.js";
import { startMisbehavingServer, type MisbehavingServer } from "../fixtures/misbehaving-server.js";
import { FAMILIES, runHostedConnector } from "../helpers/hosted-connector.js";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";

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
          return detail && detail.handshake.steps.some((s) => s.step === "registration") ? detail : undefined;
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
