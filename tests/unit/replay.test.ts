// The replay engine on real recordings: a connector's handshake recorded by mcp-lens (in-process)
// in front of a server with one fault, re-analysed the way the inspector does, then re-run against
// the same faulty server, a fixed one, the bundled Coda server with a raw token, or a server that
// only notes the headers it gets. And the two eras: the 2026-07-28 requests the connector builds,
// and handshakes of the v2 SDK's client recorded against the v2 SDK's modern-only server, re-run
// as recorded (modern), as a dual-era client against a v1 SDK (legacy) server, or as asked.
import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Client, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, isSpecType, PROTOCOL_VERSION_META_KEY, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  encodeHeaderValue,
  judgeModernAnswer,
  KNOWN_CLIENTS,
  MCP_ACCEPT,
  mcpParamHeaders,
  modernHeaders,
  modernRequest,
  registrationPayload,
  type ModernClient,
} from "../../inspector/clients.js";
import { runConnector, type ConnectorRun } from "../../inspector/connector.js";
import type { HandshakeDetail } from "../../inspector/data.js";
import { replayHandshake, type ReplayResult } from "../../inspector/replay.js";
import { createClassifier } from "../../analysis/classify.js";
import { diagnose } from "../../analysis/diagnose/index.js";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import { createForwarder } from "../../proxy/forward/forward.js";
import type { DiagnosisCode, HandshakeStep } from "../../analysis/handshake.js";
import { groupHandshakes } from "../../analysis/handshakes.js";
import { toRecorded } from "../../recording/record.js";
import { createRedactor } from "../../recording/redact.js";
import { createTrustPolicy } from "../../common/trust.js";
import { withVerdict } from "../../analysis/verdict.js";
import { FAKE_TOKEN, startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";
import { startMisbehavingServer, type Fault } from "../fixtures/misbehaving-server.js";
import { runHostedConnector, type HostedConnectorOptions } from "../helpers/hosted-connector.js";
import { startServerProcess, tempDir, waitFor, type RunningServer } from "../helpers/processes.js";
import { startErasServer, type ServerEra } from "../fixtures/eras-server.js";
import { startHttpsOnLoopback } from "../helpers/tls.js";

const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function listening(server: http.Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function server(faults: Fault[] | Fault = []) {
  const s = await startMisbehavingServer(faults);
  closers.push(s.close);
  return s;
}

/**
 * Records one connector run the way mcp-lens does (its forwarder, redaction and classifier, in
 * process, without the database) and returns its handshake as the inspector re-analyses it, judged
 * once the client has long gone quiet.
 */
async function record(upstream: string, connect: (proxyUrl: string) => Promise<unknown>): Promise<HandshakeDetail> {
  const redactor = createRedactor(randomBytes(32));
  const classify = createClassifier();
  const exchanges: ClassifiedExchange[] = [];
  let ids = 0;
  const forwarder = createForwarder({
    upstream,
    trust: createTrustPolicy(false, "loopback"),
    maxBodyBytes: 256 * 1024,
    upstreamTimeoutMs: 10_000,
    headerTimeoutMs: 10_000,
    nextId: () => ++ids,
    onExchange: (raw) => exchanges.push(classify(toRecorded(raw, redactor))),
  });
  const proxy = http.createServer(forwarder.handleRequest);
  try {
    await connect(await listening(proxy));
    await waitFor(() => exchanges.length === ids, "every exchange recorded");
  } finally {
    forwarder.close();
  }
  exchanges.sort((a, b) => a.id - b.id);
  const now = Date.now() + 60_000;
  const handshakes = groupHandshakes(exchanges, now);
  expect(handshakes).toHaveLength(1);
  const handshake = handshakes[0]!;
  return { handshake: withVerdict(handshake, diagnose(handshake, exchanges), now), exchanges };
}

const recordConnector = (upstream: string, opts: Partial<HostedConnectorOptions> = {}) =>
  record(upstream, (url) => runHostedConnector(`${url}/mcp`, { family: "claude.ai", ...opts }));

const rerun = (r: ReplayResult, step: HandshakeStep) => r.steps.find((s) => s.step === step)!;
const statuses = (r: ReplayResult) => Object.fromEntries(r.steps.map((s) => [s.step, s.rerun.status]));
const DISCOVERY: HandshakeStep[] = ["probe", "protected_resource_metadata", "authorization_server_metadata", "registration"];

describe("the connector's own record of a run", () => {
  it("keeps every request it sent with its answer, as the proxy would capture them", async () => {
    const faulty = await server("probe_404");
    const run = await runConnector(`${faulty.url}/mcp`, { initialize: { protocolVersion: "2025-11-25" }, registration: registrationPayload("x", "http://localhost:1/cb", "none") });
    expect(run.failedAt).toBe("probe");
    expect(run.exchanges).toHaveLength(run.requests);
    const [probe] = run.exchanges;
    expect(probe).toMatchObject({ method: "POST", path: "/mcp", status: 404, host: new URL(faulty.url).host, upstreamError: null });
    expect(probe!.requestBody.bytes.toString()).toContain('"method":"initialize"');
    expect(probe!.requestHeaders[0]).toEqual(["Host", new URL(faulty.url).host]);
    expect(probe!.responseBody.size).toBeGreaterThan(0);
  });

  it("records a refused connection as the proxy records an unreachable upstream", async () => {
    const run = await runConnector("http://127.0.0.1:1/mcp", { initialize: { protocolVersion: "2025-11-25" }, registration: registrationPayload("x", "http://localhost:1/cb", "none") });
    expect(run.exchanges).toEqual([expect.objectContaining({ status: null, upstreamError: "upstream_refused" })]);
  });
});

describe("replayHandshake against the server that failed", () => {
  const cases: Array<[Fault, HandshakeStep, DiagnosisCode]> = [
    ["probe_404", "probe", "probe_unexpected_status"],
    ["relative_resource_metadata", "probe", "resource_metadata_url_invalid"],
    // prm_http_resource is not here: the re-run sends no recorded X-Forwarded-Proto (a client chose
    // it), so a plain-http target cannot be told it sits behind https; --target the public https URL.
    ["issuer_trailing_slash", "authorization_server_metadata", "issuer_mismatch"],
    ["no_s256", "authorization_server_metadata", "pkce_s256_not_advertised"],
    ["registration_rejects_auth_method", "registration", "registration_rejected"],
  ];
  it.each(cases)("%s: still fails at %s with %s", async (fault, step, code) => {
    const faulty = await server(fault);
    const detail = await recordConnector(faulty.url);
    expect(detail.handshake.failedStep).toBe(step);

    const result = await replayHandshake(detail, { target: faulty.url, timeoutMs: 3000 });
    expect(result).toMatchObject({ handshakeId: detail.handshake.id, target: faulty.url, verdict: "still_fails", failedStep: step, code });
    expect(result.summary).toMatch(new RegExp(`^still fails at ${step}: ${code} — `));
    const failed = rerun(result, step);
    expect(failed).toMatchObject({ original: { status: "failed" }, rerun: { status: "failed" }, same: true });
    expect(failed.original.exchangeIds.length).toBeGreaterThan(0);
    // Nothing after the failure ran.
    const after = result.steps.slice(result.steps.indexOf(failed) + 1);
    expect(new Set(after.map((s) => s.rerun.status))).toEqual(new Set(["not_reached"]));
  });
});

describe("replayHandshake against a fixed server", () => {
  it("now passes the discovery, registration and authorize (up to the sign-in page) it could check; the user's steps are skipped", async () => {
    const detail = await recordConnector((await server("issuer_trailing_slash")).url);
    const fixed = await server();
    const result = await replayHandshake(detail, { target: fixed.url, timeoutMs: 3000 });
    expect(result).toMatchObject({ verdict: "now_passes", failedStep: null, code: null });
    expect(statuses(result)).toEqual({
      probe: "ok",
      protected_resource_metadata: "ok",
      authorization_server_metadata: "ok",
      registration: "ok",
      authorize: "ok",
      callback: "skipped",
      token: "skipped",
      initialize: "skipped",
      initialized: "skipped",
      list: "skipped",
      stream: "skipped",
    });
    expect(rerun(result, "probe")).toMatchObject({ original: { status: "ok" }, rerun: { httpStatus: 401 }, same: true });
    expect(rerun(result, "authorization_server_metadata")).toMatchObject({ original: { status: "failed" }, rerun: { status: "ok", httpStatus: 200 }, same: false });
    expect(rerun(result, "registration")).toMatchObject({ original: { status: "absent", exchangeIds: [] }, rerun: { httpStatus: 201 }, same: false });
    // As doctor does: the authorize request goes as far as the sign-in page, the rest needs the user.
    expect(rerun(result, "authorize")).toMatchObject({ original: { status: "absent" }, rerun: { status: "ok", httpStatus: 302, detail: "consent remembered: sent straight back to the callback" } });
    expect(rerun(result, "callback").rerun.detail).toContain("--token");
    expect(result.summary).toMatch(/^now passes: probe, protected_resource_metadata, authorization_server_metadata, registration, authorize ok; originally failed at authorization_server_metadata; callback, .*list, stream not checked without --token$/);
    expect(result.dialled).toEqual([new URL(fixed.url).origin]);
  });

  it("cannot re-check a step that needs the user without a token: still_fails, worded as not re-checked", async () => {
    const detail = await recordConnector((await server("token_invalid_grant")).url);
    expect(detail.handshake.failedStep).toBe("token");
    const result = await replayHandshake(detail, { target: (await server()).url, timeoutMs: 3000 });
    expect(result).toMatchObject({ verdict: "still_fails", failedStep: "token", code: null });
    expect(result.summary).toBe(
      "not re-checked: could not re-check token without --token; the steps that ran pass now: probe, protected_resource_metadata, authorization_server_metadata, registration, authorize ok",
    );
    expect(rerun(result, "token")).toMatchObject({ original: { status: "failed" }, rerun: { status: "skipped" }, same: false });
    expect(rerun(result, "authorize")).toMatchObject({ original: { status: "ok" }, rerun: { status: "ok" }, same: true });
    expect(rerun(result, "callback")).toMatchObject({ original: { status: "ok" }, rerun: { status: "skipped" } });
  });

  it("re-runs an authless server's handshake through initialize, initialized and list", async () => {
    const detail = await recordConnector((await server("probe_404")).url);
    // An authless server: the unauthenticated initialize is answered.
    const authless = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        if (req.method === "GET") return void res.writeHead(405).end(); // no GET stream
        const message = JSON.parse(body || "{}") as { id?: number; method?: string };
        if (message.id === undefined) return void res.writeHead(202).end();
        const result = message.method === "initialize" ? { protocolVersion: "2025-11-25", capabilities: { tools: {} }, serverInfo: { name: "authless", version: "1" } } : { tools: [{ name: "echo", inputSchema: { type: "object" } }] };
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id: message.id, result }));
      });
    });
    const result = await replayHandshake(detail, { target: await listening(authless) });
    expect(result.verdict).toBe("now_passes");
    expect(statuses(result)).toMatchObject({ probe: "ok", protected_resource_metadata: "skipped", token: "skipped", initialize: "ok", initialized: "ok", list: "ok", stream: "ok" });
    expect(rerun(result, "stream").rerun.detail).toMatch(/405/);
    expect(rerun(result, "registration").rerun.detail).toMatch(/not needed/);
  });
});

describe("replayHandshake with a token", () => {
  // The bundled Coda server accepts a raw Coda API token as the bearer.
  const tmp = tempDir("mcp-lens-replay-");
  let coda: FakeCoda;
  let codaServer: RunningServer;
  beforeAll(async () => {
    coda = await startFakeCoda();
    codaServer = await startServerProcess({ dbPath: `${tmp.dir}/server.db`, codaApiBase: coda.url });
  });
  afterAll(async () => {
    await codaServer?.stop();
    await coda?.close();
    tmp.cleanup();
  });

  it("skips authorize/callback/token and uses the token for initialize, initialized and tools/list", async () => {
    const detail = await recordConnector((await server("audience_mismatch")).url);
    expect(detail.handshake.failedStep).toBe("initialize");

    const result = await replayHandshake(detail, { target: codaServer.url, token: FAKE_TOKEN, timeoutMs: 5000 });
    expect(result, result.summary).toMatchObject({ verdict: "now_passes", failedStep: null, code: null });
    expect(statuses(result)).toMatchObject({ registration: "ok", authorize: "skipped", callback: "skipped", token: "skipped", initialize: "ok", initialized: "ok", list: "ok", stream: "ok" });
    expect(rerun(result, "token").rerun.detail).toBe("replaced by the given token");
    // As doctor does with a token: the era's stream is opened (the bundled server's GET stream).
    expect(rerun(result, "stream")).toMatchObject({ original: { status: "absent" }, rerun: { status: "ok" } });
    expect(rerun(result, "initialize")).toMatchObject({ original: { status: "failed" }, rerun: { httpStatus: 200 }, same: false });
    // The raw Coda token reached Coda: the server validated it.
    expect(coda.requests.some((r) => r.auth === FAKE_TOKEN)).toBe(true);
  });

  it("a rejected token fails at initialize", async () => {
    const detail = await recordConnector((await server("audience_mismatch")).url);
    const result = await replayHandshake(detail, { target: codaServer.url, token: "not-a-token", timeoutMs: 5000 });
    // The analyser's rules judge the re-run: a bearer the operator gave, refused with no token step
    // in the traffic, is no audience mismatch they can prove, so no code; the summary says what came back.
    expect(result).toMatchObject({ verdict: "still_fails", failedStep: "initialize", code: null });
    expect(result.summary).toMatch(/initialize answered 401/);
    expect(rerun(result, "initialize")).toMatchObject({ rerun: { status: "failed", httpStatus: 401 }, same: true });
  });
});

describe("replayHandshake is doctor seeded with the recorded client", () => {
  it("re-checks authorize up to the sign-in page: a rejected callback still fails with the analyser's fix, and passes once the server accepts it", async () => {
    const faulty = await server("redirect_uri_rejected");
    const detail = await record(faulty.url, (url) => runHostedConnector(`${url}/mcp`, { family: "chatgpt" }));
    expect(detail.handshake.failedStep).toBe("authorize");

    const still = await replayHandshake(detail, { target: faulty.url, timeoutMs: 3000 });
    expect(still).toMatchObject({ verdict: "still_fails", failedStep: "authorize", code: "redirect_uri_rejected" });
    expect(still.diagnosis?.fix).toMatch(/redirect/i);
    expect(still.evidence).toContainEqual(expect.objectContaining({ request: expect.stringMatching(/^GET .*\/authorize$/), status: 400 }));
    expect(rerun(still, "authorize")).toMatchObject({ original: { status: "failed" }, rerun: { status: "failed", httpStatus: 400 }, same: true });

    const fixed = await replayHandshake(detail, { target: (await server()).url, timeoutMs: 3000 });
    expect(fixed).toMatchObject({ verdict: "now_passes", failedStep: null });
    expect(fixed.summary).toMatch(/^now passes: .*authorize ok; originally failed at authorize; callback, /);
    expect(rerun(fixed, "authorize")).toMatchObject({ original: { status: "failed" }, rerun: { status: "ok" }, same: false });
  });

  it("does not call an authorize that failed past the sign-in page re-checked by showing the page", async () => {
    const detail = await recordConnector((await server()).url);
    // As if the user's sign-in form POST had been refused: the analyser files it under authorize.
    const authorize = detail.handshake.steps.find((r) => r.step === "authorize")!;
    detail.handshake = { ...detail.handshake, failedStep: "authorize", outcome: "failed", steps: detail.handshake.steps.map((r) => (r === authorize ? { ...r, status: "failed" } : r)) };
    detail.exchanges = detail.exchanges.map((e) => (authorize.exchangeIds.includes(e.id) ? { ...e, method: "POST" } : e));
    const result = await replayHandshake(detail, { target: (await server()).url, timeoutMs: 3000 });
    expect(rerun(result, "authorize").rerun.status).toBe("ok");
    expect(result).toMatchObject({ verdict: "still_fails", failedStep: "authorize", code: null });
    expect(result.summary).toMatch(/^not re-checked: could not re-check authorize: it failed after the sign-in page/);
  });

  it("never returns the --token, even where the target echoes it", async () => {
    const token = "CANARY-replay-echoed-token-91ab";
    const echo = http.createServer((req, res) => {
      req.resume();
      const base = `http://${req.headers.host}`;
      const json = (status: number, body: unknown, headers: Record<string, string> = {}) => res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(body));
      if (req.url?.startsWith("/.well-known/oauth-protected-resource")) return json(200, { resource: `${base}/mcp`, authorization_servers: [base] });
      if (req.url === "/.well-known/oauth-authorization-server") {
        return json(200, { issuer: base, authorization_endpoint: `${base}/authorize`, token_endpoint: `${base}/token`, registration_endpoint: `${base}/register`, response_types_supported: ["code"], code_challenge_methods_supported: ["S256"] });
      }
      if (req.url === "/register") return json(201, { client_id: "c1", redirect_uris: [KNOWN_CLIENTS["claude.ai"].redirectUri] });
      const auth = req.headers.authorization;
      if (!auth) return json(401, { error: "invalid_token" }, { "www-authenticate": `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"` });
      json(401, { error: "invalid_token", error_description: `the token ${auth.slice(7)} is unknown here` });
    });
    const detail = await recordConnector((await server()).url);
    const result = await replayHandshake(detail, { target: await listening(echo), token, timeoutMs: 3000 });
    expect(result).toMatchObject({ verdict: "still_fails", failedStep: "initialize" });
    const text = JSON.stringify(result);
    expect(text).not.toContain(token);
    expect(text).toContain("[the --token]");
  });

  it("checks what comes before HTTP first: nothing reaches a refused port or an untrusted certificate, in words", async () => {
    const detail = await recordConnector((await server()).url);
    const refused = await replayHandshake(detail, { target: "http://127.0.0.1:1", timeoutMs: 3000 });
    expect(refused).toMatchObject({ verdict: "still_fails", failedStep: "network", code: null, dialled: ["http://127.0.0.1:1"] });
    expect(refused.summary).toBe("still fails: nothing reaches the server: 127.0.0.1 port 1 refuses connections (nothing listens there)");
    expect(new Set(refused.steps.map((s) => s.rerun.status))).toEqual(new Set(["not_reached"]));

    const work = tempDir("mcp-lens-replay-tls-");
    closers.push(async () => work.cleanup());
    const tls = await startHttpsOnLoopback(work.dir, (_req, res) => res.writeHead(404).end());
    closers.push(tls.close);
    const untrusted = await replayHandshake(detail, { target: tls.origin, timeoutMs: 3000 });
    expect(untrusted).toMatchObject({ verdict: "still_fails", failedStep: "network" });
    expect(untrusted.summary).toMatch(/certificate/);
  });
});

describe("replayHandshake as the same client", () => {
  // A client behind a TLS front that rewrites Host and passes X-Forwarded-Host/-Proto, with
  // Accept: */* and an older protocol version, registering as ChatGPT.
  const FRONT = { host: "lens.internal:8080", "x-forwarded-host": "mcp.example.com", "x-forwarded-proto": "https" };
  const chatgpt = KNOWN_CLIENTS.chatgpt;
  const client = (lensUrl: string) =>
    runConnector("https://mcp.example.com/mcp", {
      userAgent: chatgpt.userAgent,
      accept: "*/*",
      initialize: { protocolVersion: "2025-06-18", capabilities: { roots: {} }, clientInfo: chatgpt.clientInfo },
      registration: registrationPayload(chatgpt.clientName, chatgpt.redirectUri, chatgpt.authMethod),
      via: lensUrl,
      forwardHeaders: FRONT,
      auth: "follow",
      timeoutMs: 3000,
    });

  it("sends the recorded User-Agent, Accept, initialize params and registration payload, but the target's Host and no recorded X-Forwarded-*", async () => {
    const detail = await record((await server()).url, async (url) => expect((await client(url)).failedAt).toBeNull());
    expect(detail.handshake.outcome).toBe("succeeded");

    // A server that notes what it gets: 401 with a challenge on the public host, then registration.
    const seen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }> = [];
    const base = "https://mcp.example.com";
    const noting = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
        const json = (status: number, value: unknown, headers: Record<string, string> = {}) =>
          res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify(value));
        if (req.url === "/mcp") return json(401, { error: "invalid_token" }, { "www-authenticate": `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"` });
        if (req.url === "/.well-known/oauth-protected-resource/mcp") return json(200, { resource: `${base}/mcp`, authorization_servers: [base] });
        if (req.url === "/.well-known/oauth-authorization-server") {
          return json(200, { issuer: base, authorization_endpoint: `${base}/authorize`, token_endpoint: `${base}/token`, registration_endpoint: `${base}/register`, response_types_supported: ["code"], code_challenge_methods_supported: ["S256"] });
        }
        json(400, { error: "invalid_client_metadata" });
      });
    });
    const target = await listening(noting);

    const result = await replayHandshake(detail, { target, timeoutMs: 3000 });
    expect(result).toMatchObject({ verdict: "still_fails", failedStep: "registration", code: "registration_rejected" });
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      "POST /mcp",
      "GET /.well-known/oauth-protected-resource/mcp",
      "GET /.well-known/oauth-authorization-server",
      "POST /register",
    ]);
    // The recorded public origin (https://mcp.example.com) is dialled at the target, as the target.
    for (const { headers } of seen) {
      expect(headers).toMatchObject({ host: new URL(target).host, "user-agent": chatgpt.userAgent });
      expect(headers["x-forwarded-host"]).toBeUndefined();
      // The target's own scheme (a fact), never the recorded https.
      expect(headers["x-forwarded-proto"]).toBe("http");
    }
    expect(seen[0]!.headers.accept).toBe("*/*");
    expect(JSON.parse(seen[0]!.body)).toMatchObject({ method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: { roots: {} }, clientInfo: chatgpt.clientInfo } });
    expect(JSON.parse(seen[3]!.body)).toEqual(registrationPayload(chatgpt.clientName, chatgpt.redirectUri, chatgpt.authMethod));
  });

  it("a healthy handshake recorded behind a front passes against the target, its public origin dialled there", async () => {
    const healthy = await server();
    const detail = await record(healthy.url, async (url) => expect((await client(url)).failedAt).toBeNull());
    // Recorded as https://mcp.example.com: that origin is dialled at the target, whose own URLs the server now advertises.
    const result = await replayHandshake(detail, { target: healthy.url, timeoutMs: 3000 });
    expect(result, result.summary).toMatchObject({ verdict: "now_passes" });
    for (const step of DISCOVERY) expect(rerun(result, step)).toMatchObject({ original: { status: "ok" }, rerun: { status: "ok" }, same: true });
  });

  it("does not send them when the target is the connector's own origin", async () => {
    const seen: http.IncomingHttpHeaders[] = [];
    const plain = http.createServer((req, res) => {
      seen.push(req.headers);
      req.resume();
      res.writeHead(404).end();
    });
    const target = await listening(plain);
    // Recorded behind a front that rewrote Host and named the target's host in X-Forwarded-Host:
    // the target is the connector's own host, so its front sets them again, not the replay.
    const detail = await record((await server()).url, (url) => runHostedConnector(`${url}/mcp`, { family: "claude-code" }));
    const front: Array<[string, string]> = [["Host", "lens.internal:8080"], ["X-Forwarded-Host", new URL(target).host], ["X-Forwarded-Proto", "http"]];
    detail.exchanges = detail.exchanges.map((e) => ({ ...e, host: "lens.internal:8080", requestHeaders: [...front, ...e.requestHeaders.filter(([n]) => n.toLowerCase() !== "host")] }));
    const result = await replayHandshake(detail, { target });
    expect(result).toMatchObject({ verdict: "still_fails", failedStep: "probe", code: "probe_unexpected_status" });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.host).toBe(new URL(target).host);
    expect(seen[0]!["x-forwarded-host"]).toBeUndefined();
    expect(seen[0]!["x-forwarded-proto"]).toBe("http");
  });
});

describe("replayHandshake dials the target and the authorization server its metadata names, nothing else unless told", () => {
  /** An MCP server whose authorization server lives on a second origin, with its registration endpoint on a third. */
  async function split() {
    const seen: string[] = [];
    const registrar = http.createServer((req, res) => {
      seen.push(`reg ${req.method} ${req.url} ${req.headers.authorization ?? ""}`);
      req.resume();
      res.writeHead(201, { "content-type": "application/json" }).end('{"client_id":"c1"}');
    });
    const regUrl = await listening(registrar);
    const as = http.createServer((req, res) => {
      seen.push(`as ${req.method} ${req.url} ${req.headers.authorization ?? ""}`);
      req.resume();
      const base = `http://127.0.0.1:${(as.address() as AddressInfo).port}`;
      res.writeHead(200, { "content-type": "application/json" }).end(
        JSON.stringify({ issuer: base, authorization_endpoint: `${base}/a`, token_endpoint: `${base}/t`, registration_endpoint: `${regUrl}/register`, code_challenge_methods_supported: ["S256"] }),
      );
    });
    const asUrl = await listening(as);
    const mcp = http.createServer((req, res) => {
      seen.push(`mcp ${req.method} ${req.url}`);
      req.resume();
      const base = `http://${req.headers.host}`;
      if (req.url === "/mcp") return res.writeHead(401, { "www-authenticate": `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"` }).end();
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ resource: `${base}/mcp`, authorization_servers: [asUrl] }));
    });
    return { target: await listening(mcp), asUrl, regUrl, seen };
  }

  it("follows the authorization server the metadata names, as doctor does; a registration endpoint elsewhere only with --allow-origin; the token never leaves the target", async () => {
    const healthy = await server();
    const detail = await record(healthy.url, (url) => runHostedConnector(`${url}/mcp`, { family: "claude-code" }));
    const { target, asUrl, regUrl, seen } = await split();

    const blocked = await replayHandshake(detail, { target, token: "CANARY-unit-token", timeoutMs: 3000 });
    expect(seen.filter((s) => s.startsWith("as "))).toEqual(["as GET /.well-known/oauth-authorization-server "]);
    expect(seen.filter((s) => s.startsWith("reg "))).toEqual([]);
    expect(blocked).toMatchObject({ verdict: "still_fails", failedStep: "registration", code: null, dialled: [target, asUrl] });
    expect(rerun(blocked, "authorization_server_metadata").rerun.status).toBe("ok");
    expect(rerun(blocked, "registration").rerun).toMatchObject({ status: "skipped", detail: expect.stringContaining(`not followed: ${regUrl}/register is on another origin`) });
    expect(blocked.summary).toContain(`--allow-origin ${regUrl}`);

    const allowed = await replayHandshake(detail, { target, token: "CANARY-unit-token", allowOrigins: [regUrl], timeoutMs: 3000 });
    expect(rerun(allowed, "registration").rerun.status).toBe("ok");
    expect(seen.filter((s) => s.startsWith("reg ")).length).toBe(1);
    expect(seen.filter((s) => !s.startsWith("mcp ")).join("\n")).not.toContain("CANARY");
  });

  it("rebuilds the registration from known fields and keeps the connector URL on the target", async () => {
    const healthy = await server();
    const detail = await record(healthy.url, (url) => runHostedConnector(`${url}/mcp`, { family: "claude-code" }));
    const hostileBody = JSON.stringify({ client_name: "x", redirect_uris: ["http://localhost:1/cb"], jwks_uri: "http://127.0.0.1:1/", software_statement: "s", grant_types: [1] });
    const hostilePath = "//127.0.0.1:1/mcp";
    detail.exchanges = detail.exchanges.map((e) =>
      e.kind === "registration" && e.method === "POST"
        ? { ...e, requestBody: { ...e.requestBody, text: hostileBody, size: hostileBody.length } }
        : e.kind.startsWith("mcp_") ? { ...e, path: hostilePath } : e,
    );
    const bodies: string[] = [];
    const noting = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        bodies.push(`${req.method} ${req.url} ${body}`);
        res.writeHead(404).end();
      });
    });
    const target = await listening(noting);
    const result = await replayHandshake(detail, { target, timeoutMs: 3000 });
    expect(result.failedStep).toBe("probe");
    expect(bodies[0]).toMatch(/^POST \/mcp /); // the hostile "//host" path is not a path: the default one
    // The registration the re-run would send: only the known, well-typed fields.
    const { registrationOf } = await import("../../inspector/recorded-client.js");
    expect(registrationOf(JSON.parse(hostileBody) as Record<string, unknown>)).toEqual({ client_name: "x", redirect_uris: ["http://localhost:1/cb"] });
  });
});

// ---------------------------------------------------------------------------------------------
// The two eras

/**
 * A real server of an era (tests/fixtures/eras-server.ts), authless: "modern" is the v2 SDK's
 * createMcpHandler with legacy "reject", "legacy" the v1 SDK's stateful transport, "dual" the v2
 * SDK's with the stateless legacy fallback.
 */
async function eraServer(era: ServerEra): Promise<string> {
  const s = await startErasServer({ era });
  closers.push(s.close);
  return s.url;
}
const v2Server = () => eraServer("modern");
const v1Server = () => eraServer("legacy");

/** The v2 SDK's client: connects (pin: 2026-07-28 only; auto: dual-era), lists its tools and calls echo. */
async function v2Client(url: string, mode: "pin" | "auto" = "pin"): Promise<void> {
  const client = new Client({ name: `replay-v2-client-${mode}`, version: "2.4.0" }, { versionNegotiation: { mode: mode === "pin" ? { pin: "2026-07-28" } : "auto" } });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  await client.listTools();
  await client.callTool({ name: "echo", arguments: { message: "hello from the v2 client" } });
  await client.close();
}

const CLIENT: ModernClient = { protocolVersion: "2026-07-28", clientInfo: { name: "Example", version: "1.0.0" }, clientCapabilities: { roots: {} } };
const INITIALIZE = { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: CLIENT.clientInfo };
const headerOf = (e: ConnectorRun["exchanges"][number], name: string) => e.requestHeaders.find(([n]) => n.toLowerCase() === name)?.[1];
const bodyOf = (e: ConnectorRun["exchanges"][number]) => JSON.parse(e.requestBody.bytes.toString("utf8") || "{}") as { method?: string; params?: Record<string, unknown> };
const outcomes = (run: ConnectorRun) => Object.fromEntries(run.steps.map((s) => [s.step, s.status]));
const modernOptions = { accept: MCP_ACCEPT, initialize: { protocolVersion: "2025-11-25" }, registration: registrationPayload("x", "http://localhost:1/cb", "none"), timeoutMs: 3000 };

describe("2026-07-28 requests, as the connector builds them", () => {
  it("carries the protocol version, client info and capabilities in _meta, and keeps the params", () => {
    const message = modernRequest(7, "tools/call", { name: "echo", arguments: { message: "hi" } }, CLIENT);
    expect(message).toEqual({
      jsonrpc: "2.0",
      id: 7,
      method: "tools/call",
      params: {
        name: "echo",
        arguments: { message: "hi" },
        _meta: { [PROTOCOL_VERSION_META_KEY]: "2026-07-28", [CLIENT_INFO_META_KEY]: { name: "Example", version: "1.0.0" }, [CLIENT_CAPABILITIES_META_KEY]: { roots: {} } },
      },
    });
    expect(PROTOCOL_VERSION_META_KEY).toBe("io.modelcontextprotocol/protocolVersion");
    // The v2 SDK's own schemas accept them.
    expect(isSpecType.JSONRPCRequest(message)).toBe(true);
    expect(isSpecType.CallToolRequest(message)).toBe(true);
    expect(isSpecType.DiscoverRequest(modernRequest(0, "server/discover", {}, CLIENT))).toBe(true);
    expect(isSpecType.ListToolsRequest(modernRequest(1, "tools/list", {}, CLIENT))).toBe(true);
  });

  it("mirrors the body in MCP-Protocol-Version, Mcp-Method and (for tools/call, prompts/get, resources/read) Mcp-Name", () => {
    expect(modernHeaders(modernRequest(0, "server/discover", {}, CLIENT))).toEqual({ "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover" });
    expect(modernHeaders(modernRequest(1, "tools/list", {}, { ...CLIENT, protocolVersion: "2027-01-01" }))).toEqual({ "mcp-protocol-version": "2027-01-01", "mcp-method": "tools/list" });
    expect(modernHeaders(modernRequest(2, "tools/call", { name: "get_weather", arguments: {} }, CLIENT))).toEqual({
      "mcp-protocol-version": "2026-07-28",
      "mcp-method": "tools/call",
      "mcp-name": "get_weather",
    });
    expect(modernHeaders(modernRequest(3, "resources/read", { uri: "file:///projects/myapp/config.json" }, CLIENT))["mcp-name"]).toBe("file:///projects/myapp/config.json");
    expect(modernHeaders(modernRequest(4, "prompts/get", { name: "météo" }, CLIENT))["mcp-name"]).toBe(`=?base64?${Buffer.from("météo").toString("base64")}?=`);
  });

  it("encodes header values as the spec's table does", () => {
    expect(encodeHeaderValue("us-west1")).toBe("us-west1");
    expect(encodeHeaderValue("Hello, 世界")).toBe("=?base64?SGVsbG8sIOS4lueVjA==?=");
    expect(encodeHeaderValue(" padded ")).toBe("=?base64?IHBhZGRlZCA=?=");
    expect(encodeHeaderValue("line1\nline2")).toBe("=?base64?bGluZTEKbGluZTI=?=");
    expect(encodeHeaderValue("=?base64?literal?=")).toBe("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=");
    expect(mcpParamHeaders({ type: "object", properties: { region: { type: "string", "x-mcp-header": "Region" }, query: { type: "string" }, n: { type: "integer", "x-mcp-header": "N" } } }, { region: "us-west1", query: "SELECT 1", n: 42 })).toEqual({
      "mcp-param-region": "us-west1",
      "mcp-param-n": "42",
    });
    expect(mcpParamHeaders({ properties: { a: { "x-mcp-header": "bad name" } } }, { a: "x" })).toEqual({});
  });

  it("tells a modern server's answer from a legacy server's, as a dual-era client must", () => {
    const judge = (status: number, message?: unknown, method = "server/discover") => judgeModernAnswer(method, "2026-07-28", { status, text: JSON.stringify(message ?? ""), ...(message ? { message: message as never } : {}) }).kind;
    const error = (code: number, message: string, data?: unknown) => ({ jsonrpc: "2.0", id: 0, error: { code, message, ...(data ? { data } : {}) } });
    expect(judge(200, { jsonrpc: "2.0", id: 0, result: { supportedVersions: ["2026-07-28"], capabilities: {}, resultType: "complete" } })).toBe("ok");
    expect(judge(200, { jsonrpc: "2.0", id: 0, result: { tools: [] } }, "tools/list")).toBe("ok");
    expect(judge(401)).toBe("challenge");
    // A v1 SDK (legacy, stateful) server: 400 without a modern error.
    expect(judge(400, error(-32000, "Bad Request: Mcp-Session-Id header is required"))).toBe("not_modern");
    expect(judge(404)).toBe("not_modern");
    expect(judge(405, error(-32000, "Method not allowed"))).toBe("not_modern");
    expect(judge(200, error(-32601, "Method not found"))).toBe("not_modern"); // a stateless legacy server
    expect(judge(200, { jsonrpc: "2.0", id: 0, result: { protocolVersion: "2025-11-25" } })).toBe("not_modern"); // no DiscoverResult
    // Modern errors: the server speaks the modern era, the request was wrong.
    expect(judge(400, error(-32020, "Header mismatch"))).toBe("modern_error");
    expect(judge(400, error(-32021, "Missing required client capability"))).toBe("modern_error");
    expect(judge(400, error(-32022, "Unsupported protocol version", { supported: ["2027-01-01"], requested: "2026-07-28" }))).toBe("modern_error");
    expect(judge(404, error(-32601, "Method not found"))).toBe("modern_error");
    expect(judge(200, { jsonrpc: "2.0", id: 0, result: { supportedVersions: ["2027-01-01"], capabilities: {} } })).toBe("modern_error");
    // Only legacy versions supported: retrying with one of them is initialize.
    expect(judge(400, error(-32022, "Unsupported protocol version", { supported: ["2025-11-25", "2025-06-18"] }))).toBe("not_modern");
    expect(judge(500, error(-32603, "Internal error"))).toBe("failed");
    expect(judge(302)).toBe("failed");
  });
});

describe("the connector in each era, against the v1 and v2 SDK servers", () => {
  it("modern: server/discover, tools/list, tools/call, each with _meta and the request metadata headers; no initialize, session, GET or DELETE", async () => {
    const target = await v2Server();
    const run = await runConnector(`${target}/mcp`, { ...modernOptions, era: "modern", modern: CLIENT, toolCall: true });
    expect(run, run.error).toMatchObject({ failedAt: null, era: "modern", eraFallback: false });
    expect(outcomes(run)).toMatchObject({ probe: "ok", discover: "ok", list: "ok", tool_call: "ok", protected_resource_metadata: "skipped" });
    expect(run.steps.map((s) => s.step)).not.toContain("initialize");
    expect(run.exchanges.map((e) => `${e.method} ${bodyOf(e).method}`)).toEqual(["POST server/discover", "POST tools/list", "POST tools/call"]);
    for (const e of run.exchanges) {
      const body = bodyOf(e);
      expect(body.params?._meta).toEqual({ [PROTOCOL_VERSION_META_KEY]: "2026-07-28", [CLIENT_INFO_META_KEY]: CLIENT.clientInfo, [CLIENT_CAPABILITIES_META_KEY]: CLIENT.clientCapabilities });
      expect(headerOf(e, "mcp-protocol-version")).toBe("2026-07-28");
      expect(headerOf(e, "mcp-method")).toBe(body.method);
      expect(headerOf(e, "mcp-session-id")).toBeUndefined();
      expect(headerOf(e, "connection")).toBe("keep-alive"); // never Connection: close (see connector.ts)
      expect(e.status).toBe(200);
    }
    expect(headerOf(run.exchanges[2]!, "mcp-name")).toBe("echo");
    expect(run.plan).toEqual(["probe", "protected_resource_metadata", "authorization_server_metadata", "registration", "authorize", "callback", "token", "discover", "list", "tool_call"]);
  });

  it("modern, opening with tools/list as some clients do: no server/discover at all", async () => {
    const run = await runConnector(`${await v2Server()}/mcp`, { ...modernOptions, era: "modern", modern: CLIENT, opening: "tools/list" });
    expect(run, run.error).toMatchObject({ failedAt: null, era: "modern" });
    expect(outcomes(run)).toMatchObject({ probe: "ok", list: "ok" });
    expect(run.plan).not.toContain("discover");
    expect(run.exchanges.map((e) => bodyOf(e).method)).toEqual(["tools/list"]);
  });

  it("modern against a legacy server: fails at the probe, the server does not speak 2026-07-28", async () => {
    const run = await runConnector(`${await v1Server()}/mcp`, { ...modernOptions, era: "modern", modern: CLIENT });
    expect(run).toMatchObject({ failedAt: "probe", era: "modern", eraFallback: false });
    expect(run.error).toMatch(/^server\/discover answered 400 -32000 .*: the server does not speak 2026-07-28, and a modern-only client has nowhere to go$/);
    expect(run.exchanges).toHaveLength(1);
  });

  it("dual against a legacy server: the modern probe's 4xx without a modern error sends it to initialize", async () => {
    // Without Accept the v1 server answers 406 to both eras: the fallback happens, then the probe fails.
    const noAccept = await runConnector(`${await v1Server()}/mcp`, { ...modernOptions, accept: undefined, initialize: INITIALIZE, era: "dual", modern: CLIENT });
    expect(noAccept).toMatchObject({ failedAt: "probe", era: "legacy", eraFallback: true });
    expect(noAccept.exchanges.map((e) => `${bodyOf(e).method} ${e.status}`)).toEqual(["server/discover 400", "initialize 406"]);

    const run = await runConnector(`${await v1Server()}/mcp`, { ...modernOptions, initialize: INITIALIZE, era: "dual", modern: CLIENT, toolCall: true });
    expect(run, run.error).toMatchObject({ failedAt: null, era: "legacy", eraFallback: true });
    expect(outcomes(run)).toMatchObject({ probe: "ok", initialize: "ok", initialized: "ok", list: "ok", tool_call: "ok" });
    expect(run.steps.find((s) => s.step === "probe")?.detail).toMatch(/^server\/discover answered 400 .*: fell back to initialize, as a dual-era client does$/);
    expect(run.exchanges.map((e) => bodyOf(e).method)).toEqual(["server/discover", "initialize", "notifications/initialized", "tools/list", "tools/call"]);
    // After the fallback, legacy requests: a session id, no modern headers.
    for (const e of run.exchanges.slice(2)) {
      expect(headerOf(e, "mcp-session-id")).toBeDefined();
      expect(headerOf(e, "mcp-method")).toBeUndefined();
    }
  });

  it("dual against a modern server stays modern; legacy against it fails at the probe", async () => {
    const target = await v2Server();
    const dual = await runConnector(`${target}/mcp`, { ...modernOptions, era: "dual", modern: CLIENT });
    expect(dual).toMatchObject({ failedAt: null, era: "modern", eraFallback: false });
    const legacy = await runConnector(`${target}/mcp`, modernOptions);
    expect(legacy).toMatchObject({ failedAt: "probe", era: "legacy" });
    expect(legacy.error).toMatch(/^probe answered 400 .*-32022/);
  });

  it("through OAuth: the modern probe's 401 leads to discovery; a dual-era client falls back after the token", async () => {
    const legacyOAuth = await server(); // the misbehaving server, healthy: OAuth, legacy sessions
    const dual = await runConnector(`${legacyOAuth.url}/mcp`, { ...modernOptions, era: "dual", modern: CLIENT, auth: "follow", toolCall: true });
    expect(dual, dual.error).toMatchObject({ failedAt: null, era: "legacy", eraFallback: true });
    expect(outcomes(dual)).toMatchObject({ probe: "ok", protected_resource_metadata: "ok", registration: "ok", token: "ok", discover: "skipped", initialize: "ok", list: "ok" });
    expect(dual.steps.find((s) => s.step === "discover")).toMatchObject({ skipped: "era_fallback", detail: expect.stringMatching(/fell back to initialize/) });
    const methods = dual.exchanges.filter((e) => e.path === "/mcp").map((e) => `${bodyOf(e).method} ${e.status}`);
    expect(methods.slice(0, 3)).toEqual(["server/discover 401", "server/discover 400", "initialize 200"]);

    const modern = await runConnector(`${legacyOAuth.url}/mcp`, { ...modernOptions, era: "modern", modern: CLIENT, auth: "follow" });
    expect(modern).toMatchObject({ failedAt: "discover", era: "modern" });
    expect(modern.error).toContain("a modern-only client has nowhere to go");
    // Without a token the MCP steps of its era are skipped.
    const stop = await runConnector(`${legacyOAuth.url}/mcp`, { ...modernOptions, era: "modern", modern: CLIENT });
    expect(outcomes(stop)).toMatchObject({ registration: "ok", token: "skipped", discover: "skipped", list: "skipped" });
    expect(outcomes(stop).initialize).toBeUndefined();
  });

  it("refuses to send a recorded value that is no valid header value, as a failed step", async () => {
    const run = await runConnector(`${await v2Server()}/mcp`, { ...modernOptions, era: "modern", modern: { ...CLIENT, protocolVersion: "2026-07-28\u202e" } });
    // An unusable recorded version is replaced by 2026-07-28 rather than sent.
    expect(run).toMatchObject({ failedAt: null });
    const hostileUa = await runConnector(`${await v2Server()}/mcp`, { ...modernOptions, era: "modern", userAgent: "ok\u2028" });
    expect(hostileUa).toMatchObject({ failedAt: "probe", error: expect.stringContaining("user-agent header would not be a valid header value") });
    expect(hostileUa.exchanges).toHaveLength(0);
  });
});

describe("replayHandshake in the era the handshake was recorded in", () => {
  it("a succeeded 2026-07-28 handshake of the v2 SDK's client re-runs as modern and now passes against the modern-only server", async () => {
    const upstream = await v2Server();
    const detail = await record(upstream, (url) => v2Client(`${url}/mcp`, "pin"));
    expect(detail.handshake).toMatchObject({ era: "modern", eraFallback: false, outcome: "succeeded", failedStep: null });

    const result = await replayHandshake(detail, { target: upstream, timeoutMs: 3000 });
    expect(result, result.summary).toMatchObject({ verdict: "now_passes", failedStep: null, code: null, era: "modern", eraFallback: false });
    expect(statuses(result)).toMatchObject({ probe: "ok", discover: "ok", list: "ok", protected_resource_metadata: "skipped" });
    expect(statuses(result).initialize).toBeUndefined();
    expect(rerun(result, "discover")).toMatchObject({ original: { status: "ok" }, rerun: { status: "ok", httpStatus: 200 }, same: true });
    expect(rerun(result, "tool_call").rerun).toMatchObject({ status: "skipped", detail: expect.stringContaining("not replayed") });
    expect(result.summary).toBe("now passes: probe, discover, list, stream ok; as a modern (2026-07-28) client");
  });

  it("re-runs it as the same modern client: its _meta client info and capabilities, its user agent, the headers", async () => {
    const upstream = await v2Server();
    const detail = await record(upstream, (url) => v2Client(`${url}/mcp`, "pin"));
    const seen: Array<{ headers: http.IncomingHttpHeaders; body: string }> = [];
    const noting = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        seen.push({ headers: req.headers, body });
        res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "Bad Request: Server not initialized" } }));
      });
    });
    const result = await replayHandshake(detail, { target: await listening(noting), timeoutMs: 3000 });
    // A modern-only client against a server that answers like a legacy one: nowhere to go.
    expect(result).toMatchObject({ verdict: "still_fails", failedStep: "probe", era: "modern" });
    expect(result.summary).toMatch(/^still fails at probe: era_mismatch — server\/discover answered 400 -32000 .*nowhere to go; as a modern \(2026-07-28\) client$/);
    expect(seen).toHaveLength(1);
    const body = JSON.parse(seen[0]!.body) as { method: string; params: { _meta: Record<string, unknown> } };
    expect(body.method).toBe("server/discover");
    expect(body.params._meta).toEqual({
      [PROTOCOL_VERSION_META_KEY]: "2026-07-28",
      [CLIENT_INFO_META_KEY]: { name: "replay-v2-client-pin", version: "2.4.0" },
      [CLIENT_CAPABILITIES_META_KEY]: {},
    });
    expect(seen[0]!.headers).toMatchObject({ "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover", "user-agent": "node", accept: "application/json, text/event-stream" });
  });

  it("against a v1 SDK (legacy) server: the modern re-run fails at the probe; --era dual now passes by falling back", async () => {
    const detail = await record(await v2Server(), (url) => v2Client(`${url}/mcp`, "pin"));
    const legacy = await v1Server();

    const modern = await replayHandshake(detail, { target: legacy, timeoutMs: 3000 });
    expect(modern).toMatchObject({ verdict: "still_fails", failedStep: "probe", era: "modern", eraFallback: false });
    // The analyser's code for a modern-only client at a legacy server.
    expect(modern.code).toBe("era_mismatch");

    const dual = await replayHandshake(detail, { target: legacy, era: "dual", timeoutMs: 3000 });
    expect(dual, dual.summary).toMatchObject({ verdict: "now_passes", era: "dual", eraFallback: true });
    expect(statuses(dual)).toMatchObject({ probe: "ok", initialize: "ok", initialized: "ok", list: "ok" });
    // The original's discover has no counterpart once the re-run went legacy.
    expect(rerun(dual, "discover").rerun).toMatchObject({ status: "skipped" });
    expect(rerun(dual, "probe").rerun.detail).toMatch(/fell back to initialize/);
    expect(dual.summary).toMatch(/; as a dual-era client, which fell back to initialize$/);

    const asLegacy = await replayHandshake(detail, { target: legacy, era: "legacy", timeoutMs: 3000 });
    expect(asLegacy).toMatchObject({ verdict: "now_passes", era: "legacy", eraFallback: false });
  });

  it("a dual-era client's recorded fallback re-runs as a dual-era client", async () => {
    const legacy = await v1Server();
    const detail = await record(legacy, (url) => v2Client(`${url}/mcp`, "auto"));
    expect(detail.handshake).toMatchObject({ era: "legacy", eraFallback: true, outcome: "succeeded" });
    const again = await replayHandshake(detail, { target: legacy, timeoutMs: 3000 });
    expect(again, again.summary).toMatchObject({ verdict: "now_passes", era: "dual", eraFallback: true });
    // Against a modern-only server the same client stays modern.
    const modern = await replayHandshake(detail, { target: await v2Server(), timeoutMs: 3000 });
    expect(modern, modern.summary).toMatchObject({ verdict: "now_passes", era: "dual", eraFallback: false });
    expect(statuses(modern)).toMatchObject({ probe: "ok", discover: "ok", list: "ok" });
  });

  it("a legacy client that failed at a modern-only server: still fails as recorded; --era dual checks a dual-era client now passes", async () => {
    const modernOnly = await v2Server();
    const detail = await record(modernOnly, (url) => runHostedConnector(`${url}/mcp`, { family: "claude-code" }).then(() => undefined));
    expect(detail.handshake).toMatchObject({ era: "legacy", outcome: "failed", failedStep: "probe" });
    const again = await replayHandshake(detail, { target: modernOnly, timeoutMs: 3000 });
    expect(again).toMatchObject({ verdict: "still_fails", failedStep: "probe", era: "legacy" });
    const dual = await replayHandshake(detail, { target: modernOnly, era: "dual", timeoutMs: 3000 });
    expect(dual, dual.summary).toMatchObject({ verdict: "now_passes", era: "dual", eraFallback: false });
    expect(rerun(dual, "probe")).toMatchObject({ original: { status: "failed" }, rerun: { status: "ok", httpStatus: 200 }, same: false });
    expect(statuses(dual)).toMatchObject({ discover: "ok", list: "ok" });
    expect(dual.steps.map((s) => s.step)).not.toContain("initialize");
  });

  it("an unknown era (no MCP request recorded) re-runs as a legacy client", async () => {
    const detail = await recordConnector((await server("prm_404")).url);
    const unknown: HandshakeDetail = {
      handshake: { ...detail.handshake, era: "unknown", eraFallback: false },
      exchanges: detail.exchanges.filter((e) => !e.kind.startsWith("mcp_")),
    };
    const result = await replayHandshake(unknown, { target: (await server()).url, timeoutMs: 3000 });
    expect(result).toMatchObject({ era: "legacy", eraFallback: false });
    expect(statuses(result)).toMatchObject({ probe: "ok", initialize: "skipped" });
  });
});
