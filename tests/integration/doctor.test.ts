// `mcp-lens doctor URL`, as an operator runs it (the real CLI, a process of its own): against the
// bundled server behind the real proxy every client connects in every era (up to the sign-in
// without a token, all the way with one), and it dials that origin only; against a server with a
// fault, the client that meets it fails at the step the field guide says, with the analyser's
// diagnosis (the same code the live-traffic tests expect of the same fault), its fix and
// evidence, exit code 1 and a JUnit report; before HTTP, the name, TCP and TLS checks say in words
// what stops every client (a certificate expired, for another name, or from an untrusted CA).
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DoctorReport } from "../../inspector/doctor/doctor.js";
import { startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";
import { startErasServer } from "../fixtures/eras-server.js";
import { startMisbehavingServer, type Fault, type MisbehavingServer } from "../fixtures/misbehaving-server.js";
import { runCli, startServerProcess, startStartProcess, tempDir, type RunningLens } from "../helpers/processes.js";
import { startHttpsOnLoopback, type HttpsOnLoopback } from "../helpers/tls.js";

const CODA_TOKEN = "4d1f7c2a-9b3e-4e5f-8a6b-doctor-token";
const work = tempDir("mcp-lens-doctor-");
const closing: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const close of closing.reverse()) await close();
  work.cleanup();
});

async function doctor(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; report: DoctorReport; stderr: string }> {
  const { code, stdout, stderr } = await runCli(["doctor", ...args, "--json"], env);
  return { code, report: JSON.parse(stdout) as DoctorReport, stderr };
}

describe("doctor against the bundled server behind mcp-lens", () => {
  let started: RunningLens & { connectorUrl: string };
  let coda: FakeCoda;
  beforeAll(async () => {
    coda = await startFakeCoda({ tokens: { [CODA_TOKEN]: { name: "Doc Tor", loginId: "doc@example.com" } } });
    closing.push(() => coda.close());
    started = await startStartProcess({ dbPath: path.join(work.dir, "lens.db"), serverDbPath: path.join(work.dir, "server.db"), codaApiBase: coda.url });
    closing.push(async () => void (await started.stop()));
  }, 30_000);

  it("every client, in every era, is ready for the user's sign-in; it dials the given origin only", { timeout: 60_000 }, async () => {
    const url = started.connectorUrl.replace("localhost", "127.0.0.1");
    const { code, report } = await doctor([url, "--era", "all"]);
    expect(code).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.rows).toHaveLength(15); // five clients × three eras
    for (const row of report.rows) {
      expect(row, `${row.profile} ${row.era}`).toMatchObject({ result: "ready_for_sign_in", failedStep: null });
      expect(row.steps.find((s) => s.step === "authorize")).toMatchObject({ status: "ok" });
      expect(row.steps.find((s) => s.step === "token")).toMatchObject({ status: "skipped", skipped: "needs_user" });
    }
    // The dual-era clients stay modern: the bundled server speaks both eras.
    expect(report.rows.filter((r) => r.era === "dual").every((r) => r.spoke === "modern" && !r.eraFallback)).toBe(true);
    expect(report.dialled).toEqual([new URL(url).origin]);
    expect(report.refreshToken).toBe("advertised");
  });

  it("--db stores its checks like recorded traffic, for the inspector", { timeout: 60_000 }, async () => {
    const url = started.connectorUrl.replace("localhost", "127.0.0.1");
    const dbPath = path.join(work.dir, "doctor.db");
    const first = await doctor([url, "--as", "claude.ai,chatgpt", "--db", dbPath]);
    const second = await doctor([url, "--as", "claude.ai", "--db", dbPath]); // ids continue
    expect(first.report.recorded).toMatchObject({ db: dbPath, handshakeIds: [expect.any(Number), expect.any(Number)] });
    const idsOf = (recorded: DoctorReport["recorded"]) => (recorded && "handshakeIds" in recorded ? recorded.handshakeIds : []);
    const stored = [...idsOf(first.report.recorded), ...idsOf(second.report.recorded)];
    expect(new Set(stored).size).toBe(3);
    const list = await runCli(["inspector", "list", "--db", dbPath, "--json"]);
    expect(list.code).toBe(0);
    const handshakes = JSON.parse(list.stdout) as Array<{ id: number; client: string }>;
    expect(handshakes.map((h) => h.id).sort((a, b) => a - b)).toEqual(stored.sort((a, b) => a - b));
    expect(handshakes.map((h) => h.client).sort()).toEqual(["chatgpt", "claude.ai", "claude.ai"]);
    const show = await runCli(["inspector", "show", String(stored[0]), "--db", dbPath]);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain("registration");
  });

  it("with --token, every client connects in both eras, streams included (the token goes to the given origin only)", { timeout: 60_000 }, async () => {
    const url = started.connectorUrl.replace("localhost", "127.0.0.1");
    const { code, report } = await doctor([url, "--era", "all", "--as", "claude.ai,chatgpt,v2-sdk"], { MCP_LENS_DOCTOR_TOKEN: CODA_TOKEN });
    expect(code).toBe(0);
    for (const row of report.rows) expect(row, `${row.profile} ${row.era}`).toMatchObject({ result: "connects" });
    const modern = report.rows.find((r) => r.profile === "v2-sdk" && r.era === "modern")!;
    // Each era's stream too: subscriptions/listen acknowledged, the legacy GET stream opened (or 405).
    expect(modern.steps.map((s) => [s.step, s.status])).toEqual(expect.arrayContaining([["discover", "ok"], ["list", "ok"], ["stream", "ok"]]));
    expect(modern.steps.find((s) => s.step === "stream")?.detail).toBe("subscriptions/listen acknowledged at once");
    const legacy = report.rows.find((r) => r.profile === "claude.ai" && r.era === "legacy")!;
    expect(legacy.steps.map((s) => [s.step, s.status])).toEqual(expect.arrayContaining([["initialize", "ok"], ["initialized", "ok"], ["list", "ok"], ["stream", "ok"]]));
    // Nothing it printed holds the token.
    expect(JSON.stringify(report)).not.toContain(CODA_TOKEN);
  });
});

describe("doctor with a Client ID Metadata Document (--client-metadata-url)", () => {
  let documentHost: HttpsOnLoopback;
  let coda: FakeCoda;
  const documentUrl = () => `${documentHost.origin}/oauth/client-metadata.json`;
  beforeAll(async () => {
    documentHost = await startHttpsOnLoopback(work.dir, (req, res) => {
      if (req.url !== "/oauth/client-metadata.json") return void res.writeHead(404).end();
      const doc = { client_id: documentUrl(), client_name: "Doctor's client", redirect_uris: ["http://localhost:33418/callback"], grant_types: ["authorization_code"], response_types: ["code"], token_endpoint_auth_method: "none" };
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(doc));
    });
    closing.push(() => documentHost.close());
    coda = await startFakeCoda({ tokens: {} });
    closing.push(() => coda.close());
  });

  async function server(name: string, env: Record<string, string>): Promise<string> {
    const started = await startServerProcess({ dbPath: path.join(work.dir, `${name}.db`), codaApiBase: coda.url, args: ["--cimd-allow-private"], env });
    closing.push(async () => void (await started.stop()));
    return `${started.url}/mcp`;
  }

  it("sends the document's URL as client_id instead of registering, and its redirect URI; the server fetches it", { timeout: 60_000 }, async () => {
    const url = await server("cimd-ok", { NODE_EXTRA_CA_CERTS: documentHost.certificate.certFile });
    const trust = { NODE_EXTRA_CA_CERTS: documentHost.certificate.certFile };
    const { code, report } = await doctor([url, "--as", "v2-sdk,chatgpt", "--era", "modern", "--client-metadata-url", documentUrl()], trust);
    expect(code).toBe(0);
    const v2 = report.rows.find((r) => r.profile === "v2-sdk")!;
    expect(v2).toMatchObject({ result: "ready_for_sign_in" });
    expect(v2.steps.find((s) => s.step === "registration")?.detail).toBe(`client ID metadata document ${documentUrl()}: no registration call`);
    // ChatGPT registers (DCR) whatever the option says.
    expect(report.rows.find((r) => r.profile === "chatgpt")!.steps.find((s) => s.step === "registration")?.detail).toBeUndefined();
    expect(report.dialled.sort()).toEqual([new URL(url).origin, documentHost.origin].sort());
  });

  it("a server that cannot fetch the document fails the client at authorize: cimd_fetch_failed", { timeout: 60_000 }, async () => {
    const url = await server("cimd-untrusted", {}); // the document's certificate is not trusted there
    const { code, report } = await doctor([url, "--as", "v2-sdk", "--era", "modern", "--client-metadata-url", documentUrl()], { NODE_EXTRA_CA_CERTS: documentHost.certificate.certFile });
    expect(code).toBe(1);
    expect(report.rows[0]).toMatchObject({ result: "fails", failedStep: "authorize" });
    expect(report.rows[0]!.diagnosis?.code).toBe("cimd_fetch_failed");
  });

  it("a document doctor cannot read fails those clients at registration, in words", { timeout: 30_000 }, async () => {
    const url = await server("cimd-missing", {});
    const missing = `${documentHost.origin}/nothing-here.json`;
    const { code, report } = await doctor([url, "--as", "claude-code,claude.ai", "--client-metadata-url", missing], { NODE_EXTRA_CA_CERTS: documentHost.certificate.certFile });
    expect(code).toBe(1);
    expect(report.rows.find((r) => r.profile === "claude-code")).toMatchObject({ result: "fails", failedStep: "registration", detail: `the client metadata document ${missing} answered 404` });
    expect(report.rows.find((r) => r.profile === "claude.ai")).toMatchObject({ result: "ready_for_sign_in" });
  });
});

// The fault, the client that meets it, where that client stops and the analyser's code (as
// tests/integration/diagnosis.test.ts expects of the same fault in live traffic), in every era:
// the OAuth steps are the same in both; where an era's probe meets the fault differently, that
// era's step and code are given.
type Expected = { step: string; code: string | null };
const FAULT_CASES: Array<{ fault: Fault; as: string; step: string; code: string; eras?: { modern?: Expected; dual?: Expected } }> = [
  // A 404 without a JSON-RPC body reads as a legacy server to a modern-only client; a dual-era one falls back and meets the 404.
  { fault: "probe_404", as: "claude.ai", step: "probe", code: "probe_unexpected_status", eras: { modern: { step: "probe", code: "era_mismatch" } } },
  { fault: "mcp_redirect", as: "claude.ai", step: "probe", code: "mcp_endpoint_redirect" },
  { fault: "waf_challenge", as: "claude.ai", step: "probe", code: "waf_block" },
  { fault: "host_rejected_421", as: "chatgpt", step: "probe", code: "host_header_rejected" },
  // The modern probe's preflight asks for Mcp-Method, which this server's CORS does not allow:
  // the browser stops there (no diagnosis: a lone preflight starts no handshake).
  { fault: "origin_rejected_403", as: "mcp-inspector", step: "probe", code: "origin_rejected", eras: { modern: { step: "probe", code: null }, dual: { step: "probe", code: null } } },
  { fault: "prm_404", as: "claude.ai", step: "protected_resource_metadata", code: "protected_resource_metadata_missing" },
  { fault: "prm_origin_only_resource", as: "claude.ai", step: "protected_resource_metadata", code: "resource_mismatch" },
  { fault: "issuer_trailing_slash", as: "claude.ai", step: "authorization_server_metadata", code: "issuer_mismatch" },
  { fault: "as_metadata_404", as: "claude.ai", step: "authorization_server_metadata", code: "authorization_server_metadata_missing" },
  { fault: "no_s256", as: "claude.ai", step: "authorization_server_metadata", code: "pkce_s256_not_advertised" },
  { fault: "no_registration_endpoint", as: "chatgpt", step: "authorization_server_metadata", code: "registration_unavailable" },
  { fault: "registration_rejects_auth_method", as: "claude.ai", step: "registration", code: "registration_rejected" },
  { fault: "redirect_uri_rejected", as: "chatgpt", step: "authorize", code: "redirect_uri_rejected" },
  { fault: "invalid_scope", as: "claude.ai", step: "authorize", code: "scope_rejected" },
  { fault: "resource_rejected", as: "claude.ai", step: "authorize", code: "resource_rejected" },
  { fault: "sign_in_error", as: "claude.ai", step: "authorize", code: "sign_in_failed" },
  { fault: "redirect_307", as: "claude.ai", step: "callback", code: "authorization_redirect_status" },
];

describe("doctor against a server with a fault", () => {
  const servers = new Map<Fault, MisbehavingServer>();
  beforeAll(async () => {
    for (const { fault } of FAULT_CASES) servers.set(fault, await startMisbehavingServer(fault));
    closing.push(async () => {
      for (const server of servers.values()) await server.close();
    });
  });

  it.each(FAULT_CASES)("$fault: $as fails at $step with $code, in every era", { timeout: 30_000 }, async ({ fault, as, step, code, eras }) => {
    const server = servers.get(fault)!;
    const junit = path.join(work.dir, `${fault}.xml`);
    const result = await doctor([`${server.url}/mcp`, "--as", as, "--era", "all", "--junit", junit]);
    expect(result.code).toBe(1);
    expect(result.report.rows.map((r) => r.era)).toEqual(["modern", "legacy", "dual"]);
    for (const row of result.report.rows) {
      const expected = (row.era !== "legacy" && eras?.[row.era]) || { step, code };
      expect(row, row.era).toMatchObject({ profile: as, result: "fails", failedStep: expected.step });
      expect(row.diagnosis?.code ?? null, row.era).toBe(expected.code);
      if (expected.code) expect(row.diagnosis?.fix.length).toBeGreaterThan(10);
      expect(row.evidence.length).toBeGreaterThan(0);
    }
    expect(result.report.dialled).toEqual([new URL(server.url).origin]);
    const xml = readFileSync(junit, "utf8");
    expect(xml).toContain(`failures="3"`);
    expect(xml).toContain(`<failure message="FAILS at ${step}: ${code}"`);
  });

  // Past the sign-in, with a token the server accepts: the faults of the MCP steps, in the era
  // each client speaks (this server is a legacy one).
  const TOKEN_CASES: Array<{ fault: Fault; as: string; step: string; code: string; timeout?: string }> = [
    { fault: "protocol_version_rejected", as: "claude.ai", step: "initialize", code: "protocol_version_rejected" },
    { fault: "session_lost", as: "chatgpt", step: "initialized", code: "session_not_found" },
    { fault: "mcp_404_after_token", as: "claude.ai", step: "initialize", code: "mcp_endpoint_not_found" },
    { fault: "sse_never_flushes", as: "claude.ai", step: "initialize", code: "sse_not_flushed", timeout: "2000" },
    { fault: "cors_preflight_fails", as: "mcp-inspector", step: "initialize", code: "cors_preflight_failed" },
  ];
  it.each(TOKEN_CASES)("with --token, $fault: $as fails at $step with $code", { timeout: 30_000 }, async ({ fault, as, step, code, timeout }) => {
    const token = "doctor-accepted-token-7d2e";
    const server = await startMisbehavingServer(fault, { acceptedToken: token });
    closing.push(() => server.close());
    const result = await doctor([`${server.url}/mcp`, "--as", as, ...(timeout ? ["--timeout", timeout] : [])], { MCP_LENS_DOCTOR_TOKEN: token });
    expect(result.code).toBe(1);
    expect(result.report.rows).toHaveLength(1);
    const [row] = result.report.rows;
    expect(row).toMatchObject({ profile: as, result: "fails", failedStep: step });
    expect(row!.diagnosis?.code ?? null).toBe(code);
    expect(row!.diagnosis?.fix.length).toBeGreaterThan(10);
    expect(row!.evidence.length).toBeGreaterThan(0);
    expect(JSON.stringify(result.report)).not.toContain(token);
  });

  it("a modern-only client against a legacy server fails at the probe; a dual-era one falls back and connects", { timeout: 30_000 }, async () => {
    const legacy = await startErasServer({ era: "legacy" }); // the v1 SDK's server, authless
    closing.push(() => legacy.close());
    const { code, report } = await doctor([`${legacy.url}/mcp`, "--as", "v2-sdk", "--era", "all"]);
    expect(code).toBe(1);
    const byEra = Object.fromEntries(report.rows.map((r) => [r.era, r]));
    expect(byEra.modern).toMatchObject({ result: "fails", failedStep: "probe" });
    expect(byEra.modern!.diagnosis?.code).toBe("era_mismatch");
    expect(byEra.dual).toMatchObject({ result: "connects", spoke: "legacy", eraFallback: true });
    expect(byEra.legacy).toMatchObject({ result: "connects", spoke: "legacy" });
  });

  it("prints a table a person reads, escapes what the server sent, and exits 2 on bad usage", { timeout: 30_000 }, async () => {
    const server = servers.get("sign_in_error")!;
    const text = await runCli(["doctor", `${server.url}/mcp`, "--as", "claude.ai,chatgpt"]);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/claude\.ai\s+legacy\s+FAILS at authorize: sign_in_failed/);
    expect(text.stdout).toContain("fix: ");
    expect(text.stdout).not.toMatch(/\x1b/); // not a terminal: no colour
    // What a server sends reaches the terminal escaped: a probe answered with escape sequences.
    const hostile = http.createServer((_req, res) => res.writeHead(404, { "content-type": "text/plain" }).end("\x1b]0;owned\x07\x1b[2Jgone\u009b31m"));
    await new Promise<void>((resolve) => hostile.listen(0, "127.0.0.1", resolve));
    closing.push(() => new Promise((resolve) => hostile.close(() => resolve())));
    const escaped = await runCli(["doctor", `http://127.0.0.1:${(hostile.address() as AddressInfo).port}/mcp`, "--as", "claude.ai"]);
    expect(escaped.code).toBe(1);
    expect(escaped.stdout).toContain("gone");
    expect(escaped.stdout).not.toMatch(/[\x07\x1b\u009b]/);
    for (const args of [[], ["ftp://example.test/mcp"], [`${server.url}/mcp`, "--as", "nobody"], [`${server.url}/mcp`, "--era", "future"]]) {
      expect((await runCli(["doctor", ...args])).code, args.join(" ")).toBe(2);
    }
  });
});

// A server written for one hostile behaviour each: it echoes the bearer, sends malformed
// metadata, names an authorization server elsewhere, or streams without ever ending an event.
// Or its authorization server remembers consent and sends the client straight back to the
// callback, with or without the iss (RFC 9207) its metadata promises.
type Hostile = "echo_token" | "malformed_metadata" | "bad_authorization_endpoint" | "endless_event" | "redirect_elsewhere" | "remembered_consent";
async function startHostile(mode: Hostile, opts: { issuer?: string; iss?: boolean } = {}): Promise<{ url: string; origin: string; requests: string[] }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const origin = `http://${req.headers.host}`;
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(body));
    const url = req.url ?? "";
    if (mode === "redirect_elsewhere") return res.writeHead(301, { location: "https://edge.example/mcp" }).end();
    if (url.startsWith("/.well-known/oauth-protected-resource")) return json(200, { resource: `${origin}/mcp`, authorization_servers: [opts.issuer ?? origin] });
    if (url === "/.well-known/oauth-authorization-server") {
      return json(200, {
        issuer: origin,
        authorization_endpoint: mode === "bad_authorization_endpoint" ? "http://[not a url" : `${origin}/authorize`,
        token_endpoint: `${origin}/token`,
        registration_endpoint: `${origin}/register`,
        response_types_supported: ["code"],
        code_challenge_methods_supported: mode === "malformed_metadata" ? { S256: true } : ["S256"],
        scopes_supported: "openid",
        ...(mode === "remembered_consent" ? { authorization_response_iss_parameter_supported: true } : {}),
      });
    }
    if (url === "/register") return json(201, { client_id: "hostile-client" });
    if (url.startsWith("/authorize") && mode === "remembered_consent") {
      const asked = new URL(url, origin).searchParams;
      const back = new URL(asked.get("redirect_uri") ?? "");
      back.searchParams.set("code", "remembered-code");
      back.searchParams.set("state", asked.get("state") ?? "");
      if (opts.iss) back.searchParams.set("iss", origin);
      return res.writeHead(302, { location: back.href }).end();
    }
    if (url.startsWith("/authorize")) return res.writeHead(200, { "content-type": "text/html" }).end("<form>sign in</form>");
    if (mode === "endless_event") {
      res.writeHead(200, { "content-type": "text/event-stream" });
      const chunk = `data: ${"x".repeat(64 * 1024)}`; // never a blank line: no event ever ends
      const timer = setInterval(() => res.write(chunk), 1);
      res.once("close", () => clearInterval(timer));
      return;
    }
    const auth = req.headers.authorization;
    if (!auth) return json(401, { error: "invalid_token" }, { "www-authenticate": `Bearer resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp"` });
    return json(401, { error: "invalid_token", error_description: `the token ${auth.replace(/^Bearer /, "")} is unknown here` });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closing.push(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url: `${origin}/mcp`, origin, requests };
}

describe("doctor against hostile servers", () => {
  it("never prints the --token, even when the server echoes it", { timeout: 30_000 }, async () => {
    const server = await startHostile("echo_token");
    const token = "CANARY-doctor-echoed-token-5f1e";
    const junit = path.join(work.dir, "echo.xml");
    const dbPath = path.join(work.dir, "echo.db"); // also scanned for the canary with every file the run leaves
    const { code, report } = await doctor([server.url, "--as", "chatgpt,v2-sdk", "--era", "all", "--junit", junit, "--db", dbPath], { MCP_LENS_DOCTOR_TOKEN: token });
    expect(code).toBe(1);
    expect(report.rows.every((r) => r.result === "fails")).toBe(true);
    const text = await runCli(["doctor", server.url, "--as", "chatgpt"], { MCP_LENS_DOCTOR_TOKEN: token });
    expect(text.stderr).not.toContain(token);
    expect(readFileSync(dbPath).includes(token)).toBe(false);
    for (const output of [JSON.stringify(report), text.stdout, readFileSync(junit, "utf8")]) {
      expect(output).not.toContain(token);
      expect(output).toContain("[the --token]"); // the echo is there, the token is not
    }
  });

  it("turns malformed metadata into a failed step, not a crash", { timeout: 30_000 }, async () => {
    const malformed = await startHostile("malformed_metadata");
    const first = await doctor([malformed.url, "--as", "claude.ai"]);
    expect(first.code).toBe(1);
    expect(first.report.rows[0]).toMatchObject({ result: "fails", failedStep: "authorization_server_metadata", detail: "code_challenge_methods_supported lacks S256" });
    const endpoint = await startHostile("bad_authorization_endpoint");
    const second = await doctor([endpoint.url, "--as", "claude.ai"]);
    expect(second.report.rows[0]).toMatchObject({ result: "fails", failedStep: "authorize" });
    expect(second.report.rows[0]!.detail).toContain("is not a URL");
  });

  it("stops reading an event stream that never ends an event, and says so", { timeout: 30_000 }, async () => {
    const server = await startHostile("endless_event");
    const { code, report } = await doctor([server.url, "--as", "claude.ai", "--timeout", "20000"]);
    expect(code).toBe(1);
    expect(report.rows[0]).toMatchObject({ result: "fails", failedStep: "probe" });
    expect(report.rows[0]!.detail).toContain("more than 1048576 bytes without a complete event");
  });

  it("an edge that redirects the endpoint to another host: every client fails at the probe, and doctor stays put", { timeout: 30_000 }, async () => {
    const server = await startHostile("redirect_elsewhere");
    const { code, report } = await doctor([server.url, "--as", "claude.ai,v2-sdk"]);
    expect(code).toBe(1);
    for (const row of report.rows) {
      expect(row).toMatchObject({ result: "fails", failedStep: "probe" });
      expect(row.diagnosis?.code).toBe("mcp_endpoint_redirect");
    }
    expect(report.dialled).toEqual([server.origin]);
  });

  it("an authorization server that sends the client straight back without the iss it promises fails, as the analyser says (RFC 9207)", { timeout: 30_000 }, async () => {
    const without = await startHostile("remembered_consent");
    const failing = await doctor([without.url, "--as", "claude-code,v2-sdk"]);
    expect(failing.code).toBe(1);
    expect(failing.report.issInRedirect).toBe("advertised");
    for (const row of failing.report.rows) {
      expect(row).toMatchObject({ result: "fails", failedStep: "authorize", diagnosis: { code: "authorization_response_iss_mismatch" } });
      expect(row.diagnosis?.fix).toContain(`iss=${encodeURIComponent(without.origin)}`);
      expect(row.evidence.map((e) => e.request)).toContainEqual(expect.stringMatching(/^GET .*\/authorize$/));
      // The client's own check passed authorize; the analyser's judgement is in the steps too.
      expect(row.steps.find((x) => x.step === "authorize")).toMatchObject({ status: "failed", detail: row.diagnosis?.summary });
    }
    const withIss = await startHostile("remembered_consent", { iss: true });
    const passing = await doctor([withIss.url, "--as", "claude-code,v2-sdk"]);
    expect(passing.code).toBe(0);
    expect(passing.report.rows.map((r) => r.result)).toEqual(["ready_for_sign_in", "ready_for_sign_in"]);
    const text = await runCli(["doctor", withIss.url, "--as", "v2-sdk"]);
    expect(text.stdout).toContain("iss: the authorization server promises iss in its redirects to the callback (RFC 9207)");
    const none = await startHostile("echo_token");
    expect((await doctor([none.url, "--as", "v2-sdk"])).report.issInRedirect).toBe("not_advertised");
  });

  it("follows the authorization server the metadata names, and nothing it names elsewhere", { timeout: 30_000 }, async () => {
    // The authorization server lives on a second origin; its registration endpoint on a third.
    const elsewhere = await startHostile("echo_token");
    const as = http.createServer((req, res) => {
      const origin = `http://${req.headers.host}`;
      if (req.url === "/.well-known/oauth-authorization-server") {
        return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({
          issuer: origin, authorization_endpoint: `${origin}/authorize`, token_endpoint: `${origin}/token`,
          registration_endpoint: `${elsewhere.origin}/register`, response_types_supported: ["code"], code_challenge_methods_supported: ["S256"],
        }));
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => as.listen(0, "127.0.0.1", resolve));
    closing.push(() => new Promise((resolve) => as.close(() => resolve())));
    const asOrigin = `http://127.0.0.1:${(as.address() as AddressInfo).port}`;
    const server = await startHostile("echo_token", { issuer: asOrigin });
    const { code, report } = await doctor([server.url, "--as", "claude.ai"]);
    expect(code).toBe(1);
    expect(report.rows[0]).toMatchObject({ result: "not_checked", failedStep: "registration" });
    expect(report.rows[0]!.detail).toContain(`is on another origin (${elsewhere.origin})`);
    expect(report.dialled).toEqual([server.origin, asOrigin]);
    expect(elsewhere.requests).toEqual([]);
  });
});

describe("doctor before HTTP: name, TCP, TLS", () => {
  let ca: { cert: string; key: string; file: string };
  const makeCa = () => {
    const key = path.join(work.dir, "ca.key");
    const cert = path.join(work.dir, "ca.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=mcp-lens test CA", "-days", "2", "-keyout", key, "-out", cert], { stdio: "ignore" });
    return { cert: readFileSync(cert, "utf8"), key, file: cert };
  };
  /** A leaf for `names`, signed by the test CA (or self-signed), valid from `start` to `end` (openssl ca dates). */
  const leaf = (name: string, names: string, opts: { start?: string; end?: string; selfSigned?: boolean } = {}) => {
    const dir = work.dir;
    const key = path.join(dir, `${name}.key`);
    const csr = path.join(dir, `${name}.csr`);
    const cert = path.join(dir, `${name}.pem`);
    execFileSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", `/CN=${names.split(",")[0]!.replace(/^(DNS|IP):/, "")}`, "-keyout", key, "-out", csr], { stdio: "ignore" });
    if (opts.selfSigned) {
      execFileSync("openssl", ["x509", "-req", "-in", csr, "-signkey", key, "-days", "2", "-out", cert, "-extfile", ext(name, names)], { stdio: "ignore" });
    } else {
      // openssl ca takes explicit dates (an expired certificate); it needs a minimal database.
      const db = path.join(dir, `${name}-index.txt`);
      writeFileSync(db, "");
      const conf = path.join(dir, `${name}-ca.cnf`);
      writeFileSync(conf, `[ca]\ndefault_ca=test\n[test]\ndatabase=${db}\nnew_certs_dir=${dir}\nserial=${path.join(dir, `${name}-serial`)}\ndefault_md=sha256\npolicy=any\ncopy_extensions=none\n[any]\ncommonName=supplied\n[ext]\nsubjectAltName=${names}\n`);
      writeFileSync(path.join(dir, `${name}-serial`), "01\n");
      execFileSync("openssl", ["ca", "-batch", "-config", conf, "-extensions", "ext", "-cert", ca.file, "-keyfile", ca.key, "-in", csr, "-out", cert, "-notext",
        "-startdate", opts.start ?? "20250101000000Z", "-enddate", opts.end ?? "20991231000000Z"], { stdio: "ignore" });
    }
    return { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") };
  };
  const ext = (name: string, names: string) => {
    const file = path.join(work.dir, `${name}.ext`);
    writeFileSync(file, `subjectAltName=${names}\n`);
    return file;
  };
  async function httpsServer(credentials: { cert: string; key: string }): Promise<string> {
    const server = https.createServer(credentials, (_req, res) => res.writeHead(404).end());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closing.push(() => new Promise((resolve) => server.close(() => resolve())));
    return `https://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  }
  beforeAll(() => {
    ca = makeCa();
  });

  const cases = [
    { name: "expired", make: () => leaf("expired", "IP:127.0.0.1", { start: "20240101000000Z", end: "20240301000000Z" }), words: "the certificate for 127.0.0.1 expired on 2024-03-01" },
    { name: "wrong name", make: () => leaf("othername", "DNS:other.example"), words: "the certificate for 127.0.0.1 is not for that name: it names other.example" },
    { name: "untrusted chain", make: () => leaf("selfsigned", "IP:127.0.0.1", { selfSigned: true }), words: "the certificate for 127.0.0.1 is self-signed" },
  ];
  it.each(cases)("$name: every client fails at network, in words", { timeout: 30_000 }, async ({ make, words }) => {
    const url = await httpsServer(make());
    const { code, report } = await doctor([url, "--as", "claude.ai,chatgpt"], { NODE_EXTRA_CA_CERTS: ca.file });
    expect(code).toBe(1);
    expect(report.network.ok).toBe(false);
    expect(report.network.problem).toContain(`nothing reaches the server: ${words}`);
    for (const row of report.rows) expect(row).toMatchObject({ result: "fails", failedStep: "network" });
    expect(report.dialled).toEqual([]);
  });

  it("a certificate from a CA the client trusts passes the TLS stage, and the name and TCP stages say what they saw", { timeout: 30_000 }, async () => {
    const url = await httpsServer(leaf("good", "IP:127.0.0.1"));
    const { report } = await doctor([url, "--as", "claude.ai"], { NODE_EXTRA_CA_CERTS: ca.file });
    expect(report.network.ok).toBe(true);
    expect(report.network.stages.map((s) => s.stage)).toEqual(["dns", "tcp", "tls"]);
    expect(report.network.certificate).toMatchObject({ names: ["127.0.0.1"], validTo: "2099-12-31" });
    // The server behind it answers 404: the probe fails, past the network.
    expect(report.rows[0]).toMatchObject({ result: "fails", failedStep: "probe" });
    const closed = await doctor(["http://127.0.0.1:9/mcp", "--as", "claude.ai"]);
    expect(closed.report.network.problem).toBe("nothing reaches the server: 127.0.0.1 port 9 refuses connections (nothing listens there)");
    const unknown = await doctor(["http://name-that-does-not-exist.invalid/mcp", "--as", "claude.ai"]);
    expect(unknown.report.network.problem).toMatch(/^nothing reaches the server: (the name name-that-does-not-exist\.invalid does not resolve|name-that-does-not-exist\.invalid could not be resolved)/);
  });
});
