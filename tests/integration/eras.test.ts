// The two MCP eras end to end: real clients (the v2 SDK in its default, auto and pinned modes, the
// v1 SDK, mcp-remote under a stdio client) against real servers of each era (v1 SDK stateful,
// v2 SDK dual-era, v2 SDK modern-only), through the real mcp-lens binary; then one misbehaving
// upstream per diagnosis code of the modern era and the field reports. Everything is asserted on
// the recording: one handshake per client connection, its era, the dual-era fallback, the outcome,
// and the diagnosis codes (first_code) — none on a healthy handshake.
//
// Two mcp-lens processes (one for the era matrix, one for the misbehaving upstreams), each in front
// of a switchboard that points at one server after another, so every client comes from the same
// address into one recording, one after the other, as at a real deployment.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERA_CODES, FIELD_REPORT_CODES, type DiagnosisCode } from "../../analysis/handshake.js";
import type { HandshakeRow } from "../../store/schema.js";
import {
  startErasServer,
  startHeaderRewritingGateway,
  startSwitchboard,
  type ErasFault,
  type ErasServer,
  type ErasServerOptions,
  type Switchboard,
} from "../fixtures/eras-server.js";
import { startLensProcess, tempDir, type RunningLens } from "../helpers/processes.js";
import { runMcpRemote, runV1Client, runV2Client, type ClientRun, type V2ClientOptions } from "../helpers/real-clients.js";
import { diagnosesOf, exchangesOf, expectOneHandshake, explain, handshakesOf, settle, type Recording } from "../helpers/recording.js";

const LENS_ARGS = ["--flush-interval", "20", "--shutdown-timeout", "500"];
/** A failed step is only "failed" after the tracker's 10 s of client silence; margin for a loaded machine. */
const SETTLE_MS = 12_000;

type ClientKind = "v1" | "v2-default" | "v2-auto" | "v2-pin" | "mcp-remote";
type Bench = "matrix" | "faults";

interface Expectation {
  /** The client process's exit: 0 connected, listed and called; 3 it failed. */
  exit: 0 | 3;
  outcome?: "succeeded" | "failed";
  era?: "modern" | "legacy";
  eraFallback?: boolean;
  registration?: "dcr" | "cimd" | "none";
  /** The diagnosis code that must fire and come first; undefined: a healthy handshake, no diagnosis at all. */
  code?: DiagnosisCode;
}

interface Run {
  label: string;
  bench: Bench;
  /** The server the switchboard points at during the run. */
  server: string;
  client: ClientKind;
  /** clientInfo.name the client sends. */
  name: string;
  v2?: Omit<V2ClientOptions, "mode" | "name">;
  /** Send the client through the header-rewriting gateway in front of mcp-lens. */
  viaGateway?: boolean;
  /** Called before the run (e.g. a store reset). */
  before?: () => void;
  /** Earlier runs whose exchanges the diagnosis may cite as well (the registration a stale client got). */
  evidenceFrom?: string[];
  expect: Expectation;
  result?: ClientRun;
  failure?: unknown;
}

// ---------------------------------------------------------------------------------------------
// The runs

const OK = (era: "modern" | "legacy", more: Partial<Expectation> = {}): Expectation => ({ exit: 0, outcome: "succeeded", era, eraFallback: false, ...more });
const ERA_MISMATCH = (era: "modern" | "legacy"): Expectation => ({ exit: 3, outcome: "failed", era, code: "era_mismatch" });

function matrixRun(server: "legacy" | "dual" | "modern", client: ClientKind, expectation: Expectation): Run {
  const who = client === "mcp-remote" ? "desktop-via-mcp-remote" : `eras-${client}`;
  return { label: `${client} → ${server} server`, bench: "matrix", server, client, name: `${who}-to-${server}`, expect: expectation };
}

// Failing combinations first: their handshakes settle (10 s of silence) while the others run.
const MATRIX: Run[] = [
  matrixRun("modern", "v1", ERA_MISMATCH("legacy")),
  matrixRun("modern", "v2-default", ERA_MISMATCH("legacy")),
  matrixRun("legacy", "v2-pin", ERA_MISMATCH("modern")),
  matrixRun("modern", "v2-auto", OK("modern")),
  matrixRun("modern", "v2-pin", OK("modern")),
  matrixRun("legacy", "v1", OK("legacy")),
  matrixRun("legacy", "v2-default", OK("legacy")),
  matrixRun("legacy", "v2-auto", OK("legacy", { eraFallback: true })),
  matrixRun("legacy", "mcp-remote", OK("legacy")),
  matrixRun("dual", "v1", OK("legacy")),
  matrixRun("dual", "v2-default", OK("legacy")),
  matrixRun("dual", "v2-auto", OK("modern")),
  matrixRun("dual", "v2-pin", OK("modern")),
  matrixRun("dual", "mcp-remote", OK("legacy")),
];

/** Servers of the misbehaving bench, by name. */
const FAULT_SERVERS: Record<string, ErasServerOptions> = {
  oauth: { era: "dual", oauth: true, cimd: true },
  header_mismatch: { era: "modern", fault: "header_mismatch" },
  modern: { era: "modern" },
  www_authenticate_malformed: { era: "dual", fault: "www_authenticate_malformed" },
  invalid_token_wrong_status: { era: "dual", fault: "invalid_token_wrong_status", accessTokenTtlMs: 1200 },
  tool_definition_rejected: { era: "dual", fault: "tool_definition_rejected" },
  client_abandoned_after_token: { era: "dual", fault: "client_abandoned_after_token" },
  authorization_response_iss_mismatch: { era: "dual", fault: "authorization_response_iss_mismatch" },
  cimd_fetch_failed: { era: "dual", fault: "cimd_fetch_failed" },
  token_auth_method_mismatch: { era: "dual", fault: "token_auth_method_mismatch" },
  stale_client_registration: { era: "dual", fault: "stale_client_registration" },
  refresh_token_replayed: { era: "dual", fault: "refresh_token_replayed" },
  step_up_loop: { era: "dual", fault: "step_up_loop" },
};

const CIMD_URL = "https://client.example.com/oauth/client-metadata.json";
const servers = new Map<string, ErasServer>();
const work = tempDir("mcp-lens-eras-");
const staleState = path.join(work.dir, "stale-client.json");

function faultRun(label: string, server: string, client: "v2-auto" | "v2-pin" | "v2-default", expectation: Expectation, v2: Run["v2"] = {}, more: Partial<Run> = {}): Run {
  return { label, bench: "faults", server, client, name: `eras-${label.replace(/[^\w]+/g, "-").toLowerCase()}`, v2, expect: expectation, ...more };
}
const fires = (code: ErasFault | DiagnosisCode, exit: 0 | 3 = 3): Expectation => ({ exit, code: code as DiagnosisCode });

const FAULTS: Run[] = [
  faultRun("header_mismatch: gateway behind mcp-lens rewrites Mcp-Name", "header_mismatch", "v2-pin", fires("header_mismatch")),
  faultRun("header_mismatch: gateway in front of mcp-lens rewrites Mcp-Name", "modern", "v2-pin", fires("header_mismatch"), {}, { viaGateway: true }),
  faultRun("invalid_token_wrong_status: expired token answered 500", "invalid_token_wrong_status", "v2-auto", fires("invalid_token_wrong_status"), {
    oauth: {},
    pauseBeforeCallsMs: 1500,
  }),
  faultRun("client_abandoned_after_token: token response without token_type", "client_abandoned_after_token", "v2-auto", fires("client_abandoned_after_token"), { oauth: {} }),
  faultRun("authorization_response_iss_mismatch: iss with a trailing slash", "authorization_response_iss_mismatch", "v2-auto", fires("authorization_response_iss_mismatch"), { oauth: {} }),
  faultRun("cimd_fetch_failed: the AS cannot fetch the document", "cimd_fetch_failed", "v2-auto", fires("cimd_fetch_failed"), { oauth: { clientMetadataUrl: CIMD_URL } }),
  faultRun("token_auth_method_mismatch: basic registered, post sent", "token_auth_method_mismatch", "v2-auto", fires("token_auth_method_mismatch"), {
    oauth: { authMethod: "client_secret_post" },
  }),
  // The same client twice, keeping its registration on disk; the AS's store is reset in between.
  faultRun("stale_client_registration: first connection (healthy)", "stale_client_registration", "v2-auto", OK("modern", { registration: "dcr" }), {
    oauth: { stateFile: staleState },
  }),
  faultRun("stale_client_registration: after the AS forgot the client", "stale_client_registration", "v2-auto", fires("stale_client_registration"), { oauth: { stateFile: staleState } }, {
    before: () => servers.get("fault:stale_client_registration")!.resetAuthorizationServer(),
    evidenceFrom: ["stale_client_registration: first connection (healthy)"],
  }),
  faultRun("refresh_token_replayed: two refreshes with one refresh token", "refresh_token_replayed", "v2-auto", fires("refresh_token_replayed"), { oauth: { refreshTwice: true } }),
  faultRun("step_up_loop: 403 insufficient_scope after every re-authorization", "step_up_loop", "v2-auto", fires("step_up_loop"), { oauth: {} }),
  // Last, the runs that succeed: the failed handshakes above settle meanwhile.
  // The SDK copes with the duplicate (it reads the first), so the client connects.
  faultRun("www_authenticate_malformed: resource_metadata twice", "www_authenticate_malformed", "v2-auto", fires("www_authenticate_malformed", 0), { oauth: {} }),
  faultRun("tool_definition_rejected: dotted and 70-character tool names", "tool_definition_rejected", "v2-auto", fires("tool_definition_rejected", 0)),
  // Healthy protected handshakes of both eras, with DCR and with a Client ID Metadata Document.
  faultRun("healthy OAuth, modern, DCR", "oauth", "v2-auto", OK("modern", { registration: "dcr" }), { oauth: {} }),
  faultRun("healthy OAuth, legacy, DCR", "oauth", "v2-default", OK("legacy", { registration: "dcr" }), { oauth: {} }),
  faultRun("healthy OAuth, modern, CIMD", "oauth", "v2-auto", OK("modern", { registration: "cimd" }), { oauth: { clientMetadataUrl: CIMD_URL } }),
];
// Both runs of the stale client carry the same clientInfo name, as the same application would.
for (const run of FAULTS.filter((r) => r.server === "stale_client_registration")) run.name = "eras-cached-client";

// ---------------------------------------------------------------------------------------------

interface BenchSetup {
  lens: RunningLens;
  switchboard: Switchboard;
  gateway?: Switchboard;
  recording: Recording;
}
const benches = new Map<Bench, BenchSetup>();

async function runClient(run: Run, url: string): Promise<ClientRun> {
  switch (run.client) {
    case "v1":
      return runV1Client(url, { name: run.name });
    case "mcp-remote":
      return runMcpRemote(url, { name: run.name });
    default:
      return runV2Client(url, { mode: run.client.slice(3) as "default" | "auto" | "pin", name: run.name, ...run.v2 });
  }
}

beforeAll(async () => {
  const t0 = Date.now();
  for (const era of ["legacy", "dual", "modern"] as const) servers.set(era, await startErasServer({ era }));
  for (const [name, opts] of Object.entries(FAULT_SERVERS)) servers.set(`fault:${name}`, await startErasServer(opts));
  writeFileSync(staleState, "{}");

  const start = async (bench: Bench): Promise<[Bench, BenchSetup]> => {
    const switchboard = await startSwitchboard();
    const lens = await startLensProcess({ upstream: switchboard.url, dbPath: path.join(work.dir, `${bench}.db`), args: LENS_ARGS });
    const gateway = bench === "faults" ? await startHeaderRewritingGateway(lens.url) : undefined;
    return [bench, { lens, switchboard, ...(gateway ? { gateway } : {}), recording: { exchanges: [], handshakes: [] } }];
  };
  for (const [bench, setup] of await Promise.all([start("matrix"), start("faults")])) benches.set(bench, setup);

  const trace = (what: string) => process.env.ERAS_TRACE && console.log(`[eras] ${what} at +${Date.now() - t0} ms`);
  trace("servers and mcp-lens started");
  // Two lanes, one per mcp-lens, run one after the other: within a lane one client at a time, as consecutive connections.
  const lane = async (runs: Run[]) => {
    for (const run of runs) {
      const bench = benches.get(run.bench)!;
      const server = servers.get(run.bench === "matrix" ? run.server : `fault:${run.server}`)!;
      bench.switchboard.route(server.url);
      run.before?.();
      const url = `${run.viaGateway ? bench.gateway!.url : bench.lens.url}/mcp`;
      try {
        run.result = await runClient(run, url);
      } catch (failure) {
        run.failure = failure;
      }
    }
  };
  // One lane after the other: a client process at a time keeps this file from starving the
  // timing-sensitive files (reliability-*) that run beside it on the other core.
  await lane(MATRIX);
  await lane(FAULTS);
  trace("clients done");
  const [matrix, faults] = await Promise.all([settle(benches.get("matrix")!.lens.dbPath, MATRIX, SETTLE_MS), settle(benches.get("faults")!.lens.dbPath, FAULTS, SETTLE_MS)]);
  benches.get("matrix")!.recording = matrix;
  benches.get("faults")!.recording = faults;
  trace("recordings settled");
  if (process.env.ERAS_TRACE) for (const run of [...MATRIX, ...FAULTS]) console.log(explain(run, benches.get(run.bench)!.recording));
}, 170_000);

afterAll(async () => {
  for (const bench of benches.values()) {
    await bench.gateway?.close();
    await bench.lens.stop();
    await bench.switchboard.close();
  }
  for (const server of servers.values()) await server.close();
  work.cleanup();
});

const recordingOf = (run: Run) => benches.get(run.bench)?.recording ?? { exchanges: [], handshakes: [] };

/** The client behaved as the combination makes a real client behave (else the fixture is wrong, not the analyser). */
function expectClient(run: Run, rec: Recording): void {
  const context = explain(run, rec);
  expect(run.failure, context).toBeUndefined();
  expect(run.result?.timedOut, context).toBe(false);
  expect(run.result?.code, context).toBe(run.expect.exit);
  expect(exchangesOf(run, rec).length, `${context}\nthe run's requests were recorded`).toBeGreaterThan(0);
}

function expectHandshake(run: Run, rec: Recording, handshake: HandshakeRow | undefined): void {
  const context = explain(run, rec);
  expect(handshake, context).toBeDefined();
  if (!handshake) return;
  const e = run.expect;
  if (e.outcome) expect.soft(handshake.outcome, `${context}\noutcome`).toBe(e.outcome);
  if (e.era) expect.soft(handshake.era, `${context}\nera`).toBe(e.era);
  if (e.eraFallback !== undefined) expect.soft(handshake.era_fallback, `${context}\nera_fallback`).toBe(e.eraFallback ? 1 : 0);
  if (e.registration) expect.soft(handshake.registration, `${context}\nregistration`).toBe(e.registration);
  if (e.code === undefined) {
    expect.soft(diagnosesOf(handshake).map((d) => `${d.severity} ${d.code}`), `${context}\na healthy handshake has no diagnosis`).toEqual([]);
  } else {
    expect.soft(handshake.first_code, `${context}\nfirst_code`).toBe(e.code);
  }
}

/** No handshake holds exchanges of two client runs (the next client's first request must not join the previous one). */
function expectSeparate(runs: Run[]): void {
  const owner = new Map<number, string>();
  const shared: string[] = [];
  for (const run of runs.filter((r) => r.result)) {
    for (const h of handshakesOf(run, recordingOf(run))) {
      const other = owner.get(h.id);
      if (other && other !== run.label) shared.push(`handshake ${h.id} holds exchanges of "${other}" and "${run.label}"`);
      owner.set(h.id, run.label);
    }
  }
  expect(shared, runs.map((r) => explain(r, recordingOf(r))).join("\n")).toEqual([]);
}

describe("era matrix: real clients × real servers through mcp-lens", () => {
  for (const run of MATRIX) {
    const verdict = run.expect.code ? `one failed handshake, first_code ${run.expect.code}` : `one succeeded ${run.expect.era} handshake${run.expect.eraFallback ? " with era_fallback" : ""}, no diagnosis`;
    it(`${run.label}: ${verdict}`, () => {
      const rec = recordingOf(run);
      expectClient(run, rec);
      const handshake = expectOneHandshake(run, rec);
      expectHandshake(run, rec, handshake);
      if (!handshake) return;
      const context = explain(run, rec);
      if (run.client === "mcp-remote") {
        expect.soft(handshake.client_family, `${context}\nclient_family`).toBe("mcp-remote");
        // The stdio client's name (mcp-remote appends its own), not the pre-flight's mcp-remote-fallback-test.
        expect.soft(handshake.client_name ?? "", `${context}\nclient_name`).toContain(run.name);
        expect.soft(handshake.client_name ?? "", `${context}\nclient_name`).not.toContain("fallback-test");
      } else {
        expect.soft(handshake.client_name, `${context}\nclient_name`).toBe(run.name);
      }
    });
  }

  it("a tool error (the fail tool) stays inside its succeeded handshake", () => {
    for (const run of MATRIX.filter((r) => r.expect.exit === 0)) {
      const rec = recordingOf(run);
      const context = explain(run, rec);
      const calls = exchangesOf(run, rec).filter((e) => e.fail_call === 1);
      expect(calls.length, `${context}\nthe fail call was recorded`).toBeGreaterThan(0);
      for (const call of calls) {
        const handshake = rec.handshakes.find((h) => h.id === call.handshake_id);
        expect.soft(handshake?.outcome, `${context}\nhandshake of the fail call #${call.id}`).toBe("succeeded");
        expect.soft(handshake ? diagnosesOf(handshake).map((d) => d.code) : null, `${context}\nno diagnosis for a tool error`).toEqual([]);
        expect.soft(handshake?.id, `${context}\nthe fail call #${call.id} is in the connection's handshake`).toBe(exchangesOf(run, rec)[0]?.handshake_id);
      }
    }
  });

  it("consecutive clients from the same address stay separate handshakes", () => expectSeparate(MATRIX));
});

describe("misbehaving upstreams: each code fires on its traffic, first", () => {
  for (const run of FAULTS) {
    const verdict = run.expect.code ? `${run.expect.code} fires and is first` : `one succeeded ${run.expect.era} handshake (registration ${run.expect.registration}), no diagnosis`;
    it(`${run.label}: ${verdict}`, () => {
      const rec = recordingOf(run);
      expectClient(run, rec);
      const handshake = expectOneHandshake(run, rec);
      const context = explain(run, rec);
      if (run.expect.code) {
        // Whatever the grouping, the code must be on a handshake of this run's traffic.
        const withCode = handshakesOf(run, rec).find((h) => diagnosesOf(h).some((d) => d.code === run.expect.code));
        expect(withCode, `${context}\n${run.expect.code} on a handshake of this run`).toBeDefined();
        if (withCode) {
          expect.soft(withCode.first_code, `${context}\nfirst_code`).toBe(run.expect.code);
          const diagnosis = diagnosesOf(withCode).find((d) => d.code === run.expect.code)!;
          const earlier = FAULTS.filter((r) => run.evidenceFrom?.includes(r.label));
          const own = new Set([run, ...earlier].flatMap((r) => exchangesOf(r, rec)).map((e) => e.id));
          expect.soft(diagnosis.evidence.length, `${context}\nevidence`).toBeGreaterThan(0);
          for (const id of diagnosis.evidence) expect.soft(own.has(id), `${context}\nevidence #${id} is an exchange of this run`).toBe(true);
        }
      } else {
        expectHandshake(run, rec, handshake);
      }
    });
  }

  it("consecutive clients from the same address stay separate handshakes", () => expectSeparate(FAULTS));

  it("the new codes stay silent on every healthy handshake of both eras", () => {
    const NEW_CODES = new Set<string>([...ERA_CODES, ...FIELD_REPORT_CODES]);
    const noisy: string[] = [];
    for (const run of [...MATRIX, ...FAULTS].filter((r) => r.expect.code === undefined)) {
      const rec = recordingOf(run);
      for (const h of handshakesOf(run, rec)) {
        for (const d of diagnosesOf(h)) if (NEW_CODES.has(d.code)) noisy.push(`${run.label}: handshake ${h.id} ${d.code} [${d.evidence.join(",")}] ${d.summary}`);
      }
    }
    expect(noisy).toEqual([]);
  });
});
