// Diagnosis end to end: for each code, a server misbehaving the way the field guide describes,
// the real mcp-lens binary in front of it, a connector that behaves like the hosted ones, and
// the handshake row mcp-lens writes: outcome, failed step, and the diagnosis with its evidence.
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIAGNOSIS_CODES, type Diagnosis, type DiagnosisCode, type HandshakeStep } from "../../analysis/handshake.js";
import { ERA_RULES } from "../../analysis/diagnose/eras.js";
import { FIELD_REPORT_RULES } from "../../analysis/diagnose/field-reports.js";
import type { HandshakeRow } from "../../store/schema.js";
import { startMisbehavingServer, type Fault } from "../fixtures/misbehaving-server.js";
import { FAMILIES, runHostedConnector, type HostedConnectorOptions, type HostedConnectorResult } from "../helpers/hosted-connector.js";
import { startLensProcess, tempDir } from "../helpers/processes.js";
import { REFUSING_UPSTREAM, startUpstream } from "../helpers/upstream.js";

const BROWSER_ORIGIN = "https://inspector.example.com";
const httpVsHttps = (base: string) => [`${base.replace("https:", "http:")}/mcp`, `${base}/mcp`];

interface Case {
  /** The code that must be diagnosed; null for a healthy run (then no error-severity diagnosis at all). */
  code: DiagnosisCode | null;
  name?: string;
  fault?: Fault | Fault[];
  /** Instead of the misbehaving server: a closed port, or a server that never answers. */
  upstream?: "closed" | "silent";
  connector?: Partial<HostedConnectorOptions>;
  outcome: "succeeded" | "failed";
  /** Where the connector stops, and the handshake's failed_step: any of these. */
  steps?: HandshakeStep[];
  /** Concrete values the diagnosis summary must name (case-insensitive); base: the origin the client used. */
  mentions?: (base: string) => string[];
  server?: { sse?: boolean; slowMs?: number };
  lensArgs?: string[];
}

const CASES: Case[] = [
  { code: null, name: "healthy: claude.ai", outcome: "succeeded" },
  { code: null, name: "healthy: chatgpt", outcome: "succeeded", connector: { family: "chatgpt" } },
  { code: null, name: "healthy: claude-code, SSE answers", outcome: "succeeded", connector: { family: "claude-code" }, server: { sse: true } },
  { code: null, name: "healthy: browser client with an Origin", outcome: "succeeded", connector: { family: "claude-code", origin: BROWSER_ORIGIN } },

  // The connector falls back to the well-known PRM URL (2025-11-25), so it still connects.
  { code: "www_authenticate_missing", fault: "no_www_authenticate", outcome: "succeeded" },
  { code: "resource_metadata_url_invalid", fault: "relative_resource_metadata", outcome: "failed", steps: ["probe"], mentions: () => ["/.well-known/oauth-protected-resource/mcp"] },
  { code: "probe_unexpected_status", fault: "probe_404", outcome: "failed", steps: ["probe"], mentions: () => ["404"] },
  { code: "accept_header_rejected", fault: "strict_accept_406", connector: { family: "chatgpt", accept: "*/*" }, outcome: "failed", steps: ["probe"], mentions: () => ["*/*"] },
  { code: "protected_resource_metadata_missing", fault: "prm_404", outcome: "failed", steps: ["protected_resource_metadata"], mentions: () => ["404"] },
  // Hosted clients come over https (the connector's default: a TLS front passing X-Forwarded-Proto).
  { code: "resource_mismatch", name: "resource_mismatch: X-Forwarded-Proto ignored", fault: "prm_http_resource", outcome: "failed", steps: ["protected_resource_metadata"], mentions: httpVsHttps },
  { code: "resource_mismatch", name: "resource_mismatch: TLS front without X-Forwarded-Proto", connector: { tls: "stripped" }, outcome: "failed", steps: ["protected_resource_metadata"], mentions: httpVsHttps },
  { code: "resource_mismatch", name: "resource_mismatch: origin only", fault: "prm_origin_only_resource", outcome: "failed", steps: ["protected_resource_metadata"], mentions: (base) => [`${base}/mcp`] },
  { code: "issuer_mismatch", fault: "issuer_trailing_slash", outcome: "failed", steps: ["authorization_server_metadata"], mentions: (base) => [`${base}/`] },
  { code: "authorization_server_metadata_missing", fault: "as_metadata_404", outcome: "failed", steps: ["authorization_server_metadata"], mentions: () => ["/.well-known/oauth-authorization-server"] },
  { code: "pkce_s256_not_advertised", fault: "no_s256", outcome: "failed", steps: ["authorization_server_metadata"], mentions: () => ["code_challenge_methods_supported"] },
  { code: "registration_unavailable", fault: "no_registration_endpoint", connector: { family: "chatgpt" }, outcome: "failed", steps: ["authorization_server_metadata", "registration"], mentions: () => ["registration_endpoint"] },
  { code: "registration_rejected", fault: "registration_rejects_auth_method", outcome: "failed", steps: ["registration"], mentions: () => ["client_secret_post"] },
  // One registration seen: what shows the stub is that the answer drops the redirect_uris (the fixed
  // client_id shows only across two registrations).
  { code: "registration_stub", fault: "registration_fixed_client_id", outcome: "failed", steps: ["authorize"], mentions: () => ["does not return them"] },
  { code: "redirect_uri_rejected", fault: "redirect_uri_rejected", connector: { family: "chatgpt" }, outcome: "failed", steps: ["authorize"], mentions: () => [FAMILIES.chatgpt.redirectUri] },
  { code: "sign_in_failed", fault: "sign_in_error", outcome: "failed", steps: ["authorize"], mentions: () => ["502", "identity provider is unreachable"] },
  { code: "scope_rejected", fault: "invalid_scope", outcome: "failed", steps: ["authorize", "callback"], mentions: () => ["invalid_scope"] },
  { code: "resource_rejected", fault: "resource_rejected", outcome: "failed", steps: ["authorize", "callback"], mentions: (base) => ["invalid_target", `${base}/mcp`] },
  { code: "authorization_redirect_status", fault: "redirect_307", outcome: "failed", steps: ["authorize", "callback"], mentions: () => ["307"] },
  { code: "token_request_rejected", fault: "token_json_only", connector: { family: "chatgpt" }, outcome: "failed", steps: ["token"], mentions: () => ["400"] },
  { code: "token_invalid_grant", fault: "token_invalid_grant", outcome: "failed", steps: ["token"], mentions: () => ["invalid_grant"] },
  { code: "token_audience_mismatch", fault: "audience_mismatch", outcome: "failed", steps: ["initialize"], mentions: () => ["401"] },
  { code: "mcp_endpoint_redirect", fault: "mcp_redirect", outcome: "failed", steps: ["probe"], mentions: () => ["308"] },
  { code: "mcp_endpoint_not_found", fault: "mcp_404_after_token", connector: { family: "claude-code" }, outcome: "failed", steps: ["initialize"], mentions: () => ["404"] },
  { code: "host_header_rejected", fault: "host_rejected_421", outcome: "failed", steps: ["probe"], mentions: () => ["421"] },
  { code: "origin_rejected", fault: "origin_rejected_403", connector: { family: "claude-code", origin: BROWSER_ORIGIN }, outcome: "failed", steps: ["probe"], mentions: () => [BROWSER_ORIGIN] },
  // mcp-lens only forwards the SSE headers with the first event, so the request timeout applies: keep it short.
  { code: "sse_not_flushed", fault: "sse_never_flushes", connector: { timeoutMs: 3000 }, outcome: "failed", steps: ["initialize"] },
  { code: "session_not_found", fault: "session_lost", connector: { family: "chatgpt" }, outcome: "failed", steps: ["initialized"] },
  { code: "protocol_version_rejected", fault: "protocol_version_rejected", outcome: "failed", steps: ["initialize"], mentions: () => ["2025-11-25"] },
  { code: "cors_preflight_failed", fault: "cors_preflight_fails", connector: { family: "claude-code", origin: BROWSER_ORIGIN }, outcome: "failed", steps: ["initialize"], mentions: () => ["authorization"] },
  // A browser cannot read Mcp-Session-Id; this server does not enforce sessions, so it still works.
  { code: "cors_expose_headers_missing", fault: "cors_no_expose_headers", connector: { family: "claude-code", origin: BROWSER_ORIGIN }, outcome: "succeeded", mentions: () => ["mcp-session-id"] },
  { code: "upstream_unreachable", upstream: "closed", outcome: "failed", steps: ["probe"] },
  { code: "upstream_timeout", upstream: "silent", lensArgs: ["--upstream-timeout", "300"], outcome: "failed", steps: ["probe"] },
  // The rules flag responses above 10 s; the connector gives up at 10.5 s, the token comes at 11 s.
  { code: "slow_response", fault: "slow_token", server: { slowMs: 11_000 }, connector: { timeoutMs: 10_500 }, outcome: "failed", steps: ["token"] },
  { code: "waf_block", fault: "waf_challenge", outcome: "failed", steps: ["probe"], mentions: () => ["403"] },
  { code: "refresh_token_missing", fault: "no_refresh_token", outcome: "succeeded" },
];

interface ExchangeSummary {
  id: number;
  handshake_id: number | null;
  method: string;
  path: string;
  status: number | null;
  kind: string;
}

function snapshot(dbPath: string): { exchanges: ExchangeSummary[]; handshakes: HandshakeRow[] } {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    return {
      exchanges: db.prepare("SELECT id, handshake_id, method, path, status, kind FROM exchanges ORDER BY id").all() as ExchangeSummary[],
      handshakes: db.prepare("SELECT * FROM handshakes ORDER BY id").all() as HandshakeRow[],
    };
  } catch {
    return { exchanges: [], handshakes: [] }; // schema not there yet
  } finally {
    db.close();
  }
}

/**
 * A failed probe or discovery document is only "failed" after the tracker's grace period (clients
 * try a fallback at once), so a run may take this long after its last request to settle.
 */
const SETTLE_MS = 13_000;
/** Runs in flight at once: each is a server, an mcp-lens process and a connector. */
const PARALLEL_RUNS = 8;

/**
 * Polls until every request of the run is recorded and the run's handshake (the one its first
 * exchange belongs to) is settled and carries the expected code; returns the last state either way.
 */
async function settled(dbPath: string, requests: number, code: DiagnosisCode | null) {
  const deadline = Date.now() + SETTLE_MS;
  for (;;) {
    const state = snapshot(dbPath);
    const handshake = state.handshakes.find((h) => h.id === state.exchanges[0]?.handshake_id);
    const done =
      state.exchanges.length >= requests &&
      handshake !== undefined &&
      handshake.outcome !== "in_progress" &&
      (code === null || (JSON.parse(handshake.diagnoses) as Diagnosis[]).some((d) => d.code === code));
    if (done || Date.now() > deadline) return { ...state, handshake };
    await new Promise((r) => setTimeout(r, 100));
  }
}

type RunResult = Awaited<ReturnType<typeof run>>;

async function run(c: Case) {
  const tmp = tempDir("mcp-lens-diagnosis-");
  const closers: Array<() => Promise<unknown>> = [];
  try {
    let upstream: string;
    if (c.upstream === "closed") {
      upstream = REFUSING_UPSTREAM;
    } else if (c.upstream === "silent") {
      const silent = await startUpstream(() => {}); // reads the request, never answers
      closers.push(silent.close);
      upstream = silent.url;
    } else {
      const server = await startMisbehavingServer(c.fault ?? [], c.server);
      closers.push(server.close);
      upstream = server.url;
    }
    const lens = await startLensProcess({
      upstream,
      dbPath: `${tmp.dir}/lens.db`,
      args: ["--flush-interval", "20", "--shutdown-timeout", "500", ...(c.lensArgs ?? [])],
    });
    closers.push(() => lens.stop());
    const result = await runHostedConnector(`${lens.url}/mcp`, { family: "claude.ai", ...c.connector });
    return { result, base: new URL(result.url).origin, ...(await settled(lens.dbPath, result.requests, c.code)) };
  } finally {
    // Upstream first: it cuts streams the proxy would otherwise drain on shutdown.
    for (const close of closers) await close();
    tmp.cleanup();
  }
}

function describeRun(result: HostedConnectorResult, exchanges: ExchangeSummary[], handshakes: HandshakeRow[]): string {
  const lines = [`connector: failedAt=${result.failedAt} reached=${result.reached.join(",")} ${result.error ?? ""}`];
  for (const e of exchanges) lines.push(`  #${e.id} hs=${e.handshake_id} ${e.method} ${e.path} → ${e.status} (${e.kind})`);
  for (const h of handshakes) {
    const steps = (JSON.parse(h.steps) as Array<{ step: string; status: string; exchangeIds: number[] }>).map((s) => `${s.step}:${s.status}[${s.exchangeIds.join(",")}]`);
    lines.push(`  handshake ${h.id} ${h.client_family} ${h.outcome} failed_step=${h.failed_step} first_code=${h.first_code} steps=${steps.join(" ")}`);
    for (const d of JSON.parse(h.diagnoses) as Diagnosis[]) lines.push(`    ${d.severity} ${d.code} [${d.evidence.join(",")}] ${d.summary}`);
  }
  return lines.join("\n");
}

/** At most `n` at once, in order. */
function limiter(n: number) {
  let active = 0;
  const queue: Array<() => void> = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((r) => queue.push(r));
    active++;
    try {
      return await task();
    } finally {
      active--;
      queue.shift()?.();
    }
  };
}

describe("handshake diagnosis through the real proxy", () => {
  // The eras' codes and the field reports' are driven by real v2/v1 SDK peers in eras.test.ts.
  it("has a case for every diagnosis code of the stages before the eras' and the field reports'", () => {
    const elsewhere = new Set([...ERA_RULES, ...FIELD_REPORT_RULES].map((r) => r.code));
    expect(new Set(CASES.map((c) => c.code).filter(Boolean))).toEqual(new Set(DIAGNOSIS_CODES.filter((c) => !elsewhere.has(c))));
  });

  // All runs start at once (bounded by PARALLEL_RUNS: most of a run is waiting), each test awaits its own.
  const runs = new Map<Case, Promise<RunResult | { failure: unknown }>>();
  beforeAll(() => {
    const limit = limiter(PARALLEL_RUNS);
    for (const c of CASES) runs.set(c, limit(() => run(c)).catch((failure: unknown) => ({ failure })));
  });
  afterAll(async () => {
    await Promise.all(runs.values());
  });

  for (const c of CASES) {
    const name = c.name ?? `${c.code} (${c.upstream ? `upstream ${c.upstream}` : String(c.fault)})`;
    it(name, { timeout: 90_000 }, async ({ expect }) => {
      const outcome = await runs.get(c)!;
      if ("failure" in outcome) throw outcome.failure;
      const { result, base, exchanges, handshakes, handshake } = outcome;
      const context = `${name}\n${describeRun(result, exchanges, handshakes)}`;
      if (process.env.DIAGNOSIS_TRACE) console.log(context);

      // The connector itself stopped where the fault makes a real client stop.
      expect(result.failedAt === null ? "succeeded" : "failed", context).toBe(c.outcome);
      if (c.outcome === "failed") expect(c.steps, context).toContain(result.failedAt);

      expect(handshake, context).toBeDefined();
      if (!handshake) return;
      expect.soft(exchanges.map((e) => e.handshake_id), `${context}\none run, one handshake`).toEqual(exchanges.map(() => handshake.id));
      expect.soft(handshake.client_family, `${context}\nclient_family`).toBe(c.connector?.family ?? "claude.ai");
      expect.soft(handshake.outcome, `${context}\noutcome`).toBe(c.outcome);
      if (c.outcome === "failed") expect.soft(c.steps, `${context}\nfailed_step`).toContain(handshake.failed_step);

      const diagnoses = JSON.parse(handshake.diagnoses) as Diagnosis[];
      if (c.code === null) {
        expect.soft(diagnoses.filter((d) => d.severity === "error"), context).toEqual([]);
        return;
      }
      const diagnosis = diagnoses.find((d) => d.code === c.code);
      expect(diagnosis, `${context}\nexpected ${c.code}`).toBeDefined();
      if (!diagnosis) return;
      if (c.outcome === "failed") expect.soft(diagnosis.severity, `${context}\nseverity`).toBe("error");
      else expect.soft(diagnosis.severity, `${context}\nseverity`).not.toBe("error");
      for (const field of ["summary", "fix", "reference"] as const) expect.soft(diagnosis[field].trim(), `${context}\n${field}`).not.toBe("");
      expect.soft(diagnosis.evidence.length, `${context}\nevidence`).toBeGreaterThan(0);
      const ours = new Set(exchanges.filter((e) => e.handshake_id === handshake.id).map((e) => e.id));
      for (const id of diagnosis.evidence) expect.soft(ours.has(id), `${context}\nevidence #${id} is an exchange of this handshake`).toBe(true);
      for (const value of c.mentions?.(base) ?? []) {
        expect.soft(diagnosis.summary.toLowerCase(), `${context}\nsummary names ${value}`).toContain(value.toLowerCase());
      }
    });
  }
});
