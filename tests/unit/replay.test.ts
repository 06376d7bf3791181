// The replay engine on real recordings: a connector's handshake recorded by mcp-lens (in-process)
// in front of a server with one fault, re-analysed the way the inspector does, then re-run against
// the same faulty server, a fixed one, the bundled Coda server with a raw token, or a server that
// only notes the headers it gets.
import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { KNOWN_CLIENTS, registrationPayload } from "../../inspector/clients.js";
import { runConnector } from "../../inspector/connector.js";
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
  it("now passes the discovery and registration it could check; the user's steps are skipped", async () => {
    const detail = await recordConnector((await server("issuer_trailing_slash")).url);
    const fixed = await server();
    const result = await replayHandshake(detail, { target: fixed.url, timeoutMs: 3000 });
    expect(result).toMatchObject({ verdict: "now_passes", failedStep: null, code: null });
    expect(statuses(result)).toEqual({
      probe: "ok",
      protected_resource_metadata: "ok",
      authorization_server_metadata: "ok",
      registration: "ok",
      authorize: "skipped",
      callback: "skipped",
      token: "skipped",
      initialize: "skipped",
      initialized: "skipped",
      list: "skipped",
    });
    expect(rerun(result, "probe")).toMatchObject({ original: { status: "ok" }, rerun: { httpStatus: 401 }, same: true });
    expect(rerun(result, "authorization_server_metadata")).toMatchObject({ original: { status: "failed" }, rerun: { status: "ok", httpStatus: 200 }, same: false });
    expect(rerun(result, "registration")).toMatchObject({ original: { status: "absent", exchangeIds: [] }, rerun: { httpStatus: 201 }, same: false });
    expect(rerun(result, "authorize").rerun.detail).toContain("--token");
    expect(result.summary).toMatch(/^now passes: probe, protected_resource_metadata, authorization_server_metadata, registration ok; originally failed at authorization_server_metadata; authorize, .*list not checked without --token$/);
  });

  it("cannot re-check a step that needs the user without a token: still_fails, worded as not re-checked", async () => {
    const detail = await recordConnector((await server("token_invalid_grant")).url);
    expect(detail.handshake.failedStep).toBe("token");
    const result = await replayHandshake(detail, { target: (await server()).url, timeoutMs: 3000 });
    expect(result).toMatchObject({ verdict: "still_fails", failedStep: "token", code: null });
    expect(result.summary).toBe(
      "not re-checked: could not re-check token without --token; the steps that ran pass now: probe, protected_resource_metadata, authorization_server_metadata, registration ok",
    );
    expect(rerun(result, "token")).toMatchObject({ original: { status: "failed" }, rerun: { status: "skipped" }, same: false });
    // Steps the re-run never performs are listed when the original has them.
    expect(rerun(result, "authorize")).toMatchObject({ original: { status: "ok" }, rerun: { status: "skipped" } });
  });

  it("re-runs an authless server's handshake through initialize, initialized and list", async () => {
    const detail = await recordConnector((await server("probe_404")).url);
    // An authless server: the unauthenticated initialize is answered.
    const authless = http.createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("end", () => {
        const message = JSON.parse(body || "{}") as { id?: number; method?: string };
        if (message.id === undefined) return void res.writeHead(202).end();
        const result = message.method === "initialize" ? { protocolVersion: "2025-11-25", capabilities: { tools: {} }, serverInfo: { name: "authless", version: "1" } } : { tools: [{ name: "echo", inputSchema: { type: "object" } }] };
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id: message.id, result }));
      });
    });
    const result = await replayHandshake(detail, { target: await listening(authless) });
    expect(result.verdict).toBe("now_passes");
    expect(statuses(result)).toMatchObject({ probe: "ok", protected_resource_metadata: "skipped", token: "skipped", initialize: "ok", initialized: "ok", list: "ok" });
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
    expect(statuses(result)).toMatchObject({ registration: "ok", authorize: "skipped", callback: "skipped", token: "skipped", initialize: "ok", initialized: "ok", list: "ok" });
    expect(rerun(result, "token").rerun.detail).toBe("replaced by the given token");
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

describe("replayHandshake dials only the target unless told otherwise", () => {
  /** An MCP server whose authorization server (metadata and registration) lives on another origin. */
  async function split() {
    const seen: string[] = [];
    const as = http.createServer((req, res) => {
      seen.push(`as ${req.method} ${req.url} ${req.headers.authorization ?? ""}`);
      req.resume();
      const base = `http://127.0.0.1:${(as.address() as AddressInfo).port}`;
      if (req.url === "/register") return res.writeHead(201, { "content-type": "application/json" }).end('{"client_id":"c1"}');
      res.writeHead(200, { "content-type": "application/json" }).end(
        JSON.stringify({ issuer: base, authorization_endpoint: `${base}/a`, token_endpoint: `${base}/t`, registration_endpoint: `${base}/register`, code_challenge_methods_supported: ["S256"] }),
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
    return { target: await listening(mcp), asUrl, seen };
  }

  it("reports a URL on another origin as not followed, and follows it with --allow-origin; the token never goes there", async () => {
    const healthy = await server();
    const detail = await record(healthy.url, (url) => runHostedConnector(`${url}/mcp`, { family: "claude-code" }));
    const { target, asUrl, seen } = await split();

    const blocked = await replayHandshake(detail, { target, token: "CANARY-unit-token", timeoutMs: 3000 });
    expect(seen.filter((s) => s.startsWith("as "))).toEqual([]);
    expect(blocked).toMatchObject({ verdict: "still_fails", failedStep: "authorization_server_metadata", code: null });
    expect(rerun(blocked, "authorization_server_metadata").rerun).toMatchObject({ status: "skipped", detail: expect.stringContaining(`not followed: ${asUrl}/.well-known/oauth-authorization-server is on another origin`) });
    expect(blocked.summary).toContain(`--allow-origin ${asUrl}`);

    const allowed = await replayHandshake(detail, { target, token: "CANARY-unit-token", allowOrigins: [asUrl], timeoutMs: 3000 });
    expect(rerun(allowed, "registration").rerun.status).toBe("ok");
    expect(seen.filter((s) => s.startsWith("as ")).length).toBeGreaterThan(0);
    expect(seen.join("\n")).not.toContain("CANARY");
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
    const { registrationOfForTest } = await import("../../inspector/replay.js");
    expect(registrationOfForTest(JSON.parse(hostileBody) as Record<string, unknown>)).toEqual({ client_name: "x", redirect_uris: ["http://localhost:1/cb"] });
  });
});
