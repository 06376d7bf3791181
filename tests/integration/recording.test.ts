// What mcp-lens records: one classified, redacted row per exchange, from real MCP SDK
// clients and OAuth traffic through the real binary.
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMinimalServer } from "../fixtures/minimal-server.js";
import { ConnectorLikeProvider } from "../helpers/connector.js";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { closedPort, request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

interface Row {
  id: number;
  kind: string;
  method: string;
  path: string;
  query: string | null;
  status: number | null;
  facts: string;
  req_headers: string;
  req_body: string | null;
  res_headers: string | null;
  res_body: string | null;
  res_body_truncated: number;
  res_body_decoded: string | null;
  req_body_encoding: string;
  sse_events: number | null;
}

function readRows(dbPath: string): Row[] {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.prepare("SELECT * FROM exchanges ORDER BY id").all() as Row[];
  } finally {
    db.close();
  }
}

describe("recording MCP and OAuth traffic", () => {
  let server: Awaited<ReturnType<typeof startMinimalServer>>;
  let lens: RunningLens;
  const tmp = tempDir();

  beforeAll(async () => {
    server = await startMinimalServer({ port: 0, responseMode: "sse" });
    lens = await startLensProcess({ upstream: server.url, dbPath: `${tmp.dir}/lens.db`, args: ["--flush-interval", "20"] });
  });

  afterAll(async () => {
    await lens?.stop();
    await server?.close();
    tmp.cleanup();
  });

  it("records an MCP session from the SDK client with its protocol facts", async () => {
    const client = new Client({ name: "recording-test", version: "1.2.3" });
    const transport = new StreamableHTTPClientTransport(new URL(lens.url + "/mcp"));
    await client.connect(transport);
    const tools = await client.listTools();
    expect(tools.tools.map((t) => t.name)).toContain("echo");
    const result = await client.callTool({ name: "echo", arguments: { text: "hi there" } });
    expect(JSON.stringify(result)).toContain("hi there");
    const sessionId = transport.sessionId;
    await transport.terminateSession();
    await client.close();

    const rows = await waitFor(() => {
      const r = readRows(lens.dbPath).filter((x) => x.path === "/mcp");
      return r.some((x) => x.kind === "mcp_delete") ? r : null;
    }, "the session's exchanges");
    const facts = rows.map((r) => ({ kind: r.kind, facts: JSON.parse(r.facts) }));
    const init = facts.find((f) => f.facts.mcp?.methods?.includes("initialize"))!;
    expect(init.kind).toBe("mcp_post");
    expect(init.facts.mcp.clientInfo).toEqual({ name: "recording-test", version: "1.2.3" });
    expect(init.facts.mcp.protocolVersionRequested).toBeTruthy();
    expect(init.facts.mcp.protocolVersionAnswered).toBeTruthy();
    expect(init.facts.mcp.serverInfo?.name).toBeTruthy();
    expect(init.facts.mcp.sessionIdAssigned).toBe(sessionId);
    const call = facts.find((f) => f.facts.mcp?.methods?.includes("tools/call"))!;
    expect(call.facts.mcp.toolNames).toEqual(["echo"]);
    expect(call.facts.mcp.sessionId).toBe(sessionId);
    expect(call.facts.mcp.protocolVersionHeader).toBe(init.facts.mcp.protocolVersionAnswered);
    expect(facts.some((f) => f.facts.mcp?.methods?.includes("notifications/initialized"))).toBe(true);
    const sseRow = rows.find((r) => JSON.parse(r.facts).mcp?.methods?.includes("tools/list"))!;
    expect(sseRow.sse_events).toBeGreaterThanOrEqual(1);
    // At the default --log-level info, without --log-exchanges: the database has them, the log does not.
    expect(lens.stdout.some((line) => line.includes('"msg":"exchange"'))).toBe(false);
  });

  it("records the OAuth discovery documents and classifies them", async () => {
    await request(lens.url + "/.well-known/oauth-protected-resource/mcp");
    await request(lens.url + "/.well-known/oauth-authorization-server");
    const rows = await waitFor(() => {
      const r = readRows(lens.dbPath).filter((x) => x.path.startsWith("/.well-known/"));
      return r.length >= 2 ? r : null;
    }, "discovery rows");
    expect(rows.map((r) => r.kind)).toEqual(["protected_resource_metadata", "authorization_server_metadata"]);
    expect(JSON.parse(rows[1]!.facts).metadata.codeChallengeMethodsSupported).toEqual(["S256"]);
  });
});

describe("recording a hosted connector's OAuth handshake", () => {
  it("records discovery, registration, authorize, token and the authenticated MCP calls, following the token by fingerprint", async () => {
    const tmp = tempDir();
    const port = await closedPort();
    const publicUrl = `http://127.0.0.1:${port}`;
    const server = await startMinimalServer({ port: 0, requireAuth: true, publicUrl });
    const lens = await startLensProcess({ upstream: server.url, dbPath: `${tmp.dir}/lens.db`, args: ["--flush-interval", "20", "--port", String(port)] });
    try {
      const provider = new ConnectorLikeProvider();
      const mcpUrl = new URL(`${publicUrl}/mcp`);
      const first = new Client({ name: "Anthropic", version: "1.0.0" });
      await expect(first.connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider }))).rejects.toThrow(UnauthorizedError);
      // The user's browser: consent is automatic on the minimal server.
      const consent = await fetch(provider.authorizationUrl!, { redirect: "manual" });
      expect(consent.status).toBe(302);
      const code = new URL(consent.headers.get("location")!).searchParams.get("code")!;
      const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider });
      await transport.finishAuth(code);
      const client = new Client({ name: "Anthropic", version: "1.0.0" });
      await client.connect(transport);
      expect((await client.listTools()).tools.length).toBeGreaterThan(0);
      await client.close();

      const rows = await waitFor(() => {
        const r = readRows(lens.dbPath);
        return r.some((x) => x.kind === "mcp_post" && x.status === 200) ? r : null;
      }, "the authenticated MCP calls");
      const kinds = new Set(rows.map((r) => r.kind));
      for (const kind of ["mcp_post", "protected_resource_metadata", "authorization_server_metadata", "registration", "authorize", "token"]) {
        expect(kinds, kind).toContain(kind);
      }
      const probe = rows.find((r) => r.kind === "mcp_post")!;
      expect(probe.status).toBe(401);
      expect(JSON.parse(probe.facts).resourceMetadataUrl).toBe(`${publicUrl}/.well-known/oauth-protected-resource/mcp`);
      const registration = JSON.parse(rows.find((r) => r.kind === "registration")!.facts);
      expect(registration.redirectUris).toEqual([provider.redirectUrl]);
      expect(registration.clientId).toBe(provider.clientInformation()!.client_id);
      const authorize = JSON.parse(rows.find((r) => r.kind === "authorize")!.facts);
      expect(authorize).toMatchObject({ codeChallengeMethod: "S256", clientId: registration.clientId, resource: mcpUrl.href });
      const token = JSON.parse(rows.find((r) => r.kind === "token")!.facts);
      expect(token.grantType).toBe("authorization_code");
      expect(token.issued.accessToken).toMatch(/^[0-9a-f]{8}$/);
      // The access token is followed from the token response to the Authorization of MCP calls.
      const authenticated = rows.filter((r) => r.kind === "mcp_post" && r.status === 200);
      expect(authenticated.length).toBeGreaterThan(0);
      for (const r of authenticated) expect(JSON.parse(r.facts).bearerFingerprint).toBe(token.issued.accessToken);
      expect(JSON.stringify(rows)).not.toContain(provider.tokens()!.access_token);
    } finally {
      await lens.stop();
      await server.close();
      tmp.cleanup();
    }
  });
});

describe("recording awkward bodies", () => {
  let upstream: TestUpstream;
  let lens: RunningLens;
  const tmp = tempDir();
  const big = "x".repeat(200_000);

  beforeAll(async () => {
    upstream = await startUpstream((req, res, body) => {
      if (req.url === "/gzip") {
        res.writeHead(200, { "content-type": "application/json", "content-encoding": "gzip" });
        res.end(gzipSync(JSON.stringify({ jsonrpc: "2.0", id: 1, result: { hello: "compressed" } })));
      } else if (req.url === "/big") {
        res.writeHead(200, { "content-type": "text/plain" }).end(big);
      } else {
        res.writeHead(400, { "content-type": "application/json" }).end(body);
      }
    });
    lens = await startLensProcess({ upstream: upstream.url, dbPath: `${tmp.dir}/lens.db`, args: ["--flush-interval", "20", "--max-body", "16k"] });
  });

  afterAll(async () => {
    await lens?.stop();
    await upstream?.close();
    tmp.cleanup();
  });

  it("decodes gzip for recording while the client gets the compressed bytes", async () => {
    const res = await request(lens.url + "/gzip");
    expect(res.headers["content-encoding"]).toBe("gzip");
    const row = await waitFor(() => readRows(lens.dbPath).find((r) => r.path === "/gzip"), "gzip row");
    expect(row.res_body_decoded).toBe("gzip");
    expect(row.res_body).toContain("compressed");
  });

  it("caps recorded bodies and marks them truncated; the client still gets everything", async () => {
    const res = await request(lens.url + "/big");
    expect(res.body.length).toBe(big.length);
    const row = await waitFor(() => readRows(lens.dbPath).find((r) => r.path === "/big"), "big row");
    expect(row.res_body_truncated).toBe(1);
    expect(row.res_body!.length).toBe(16 * 1024);
  });

  it("forwards and records invalid JSON and invalid UTF-8 without breaking", async () => {
    const invalidJson = '{"jsonrpc":"2.0","id":1,"method":';
    const invalidUtf8 = Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]);
    const a = await request(lens.url + "/bad-json", { method: "POST", headers: { "content-type": "application/json" }, body: invalidJson });
    const b = await request(lens.url + "/bad-utf8", { method: "POST", headers: { "content-type": "application/json" }, body: invalidUtf8 });
    expect(a.body.toString()).toBe(invalidJson);
    expect(b.body.equals(invalidUtf8)).toBe(true);
    const rows = await waitFor(() => {
      const r = readRows(lens.dbPath).filter((x) => x.path.startsWith("/bad-"));
      return r.length === 2 ? r : null;
    }, "bad rows");
    expect(rows[0]!.req_body).toBe(invalidJson);
    // Not text, so not redactable: only its size is recorded.
    expect(rows[1]).toMatchObject({ req_body: null, req_body_encoding: "omitted", req_body_size: invalidUtf8.length });
  });
});

describe("secrets never reach disk or logs", () => {
  it("replaces every canary secret with a fingerprint in the DB file, its WAL and the logs", async () => {
    const canary = (name: string) => `CANARY${name}${randomBytes(12).toString("hex")}`;
    const secrets = {
      bearer: canary("bearer"),
      basic: canary("basic"),
      cookie: canary("cookie"),
      setCookie: canary("setcookie"),
      queryCode: canary("querycode"),
      queryToken: canary("querytoken"),
      formSecret: canary("formsecret"),
      formVerifier: canary("formverifier"),
      formCode: canary("formcode"),
      jsonAccess: canary("jsonaccess"),
      jsonRefresh: canary("jsonrefresh"),
      registrationSecret: canary("regsecret"),
      codaToken: canary("codatoken"),
      password: canary("password"),
      sse: canary("sse"),
      locationCode: canary("locationcode"),
      fragmentToken: canary("fragmenttoken"),
      apiKey: canary("apikey"),
    };
    const upstream = await startUpstream((req, res) => {
      switch (req.url!.split("?")[0]) {
        case "/token":
          res.writeHead(200, { "content-type": "application/json", "set-cookie": `sid=${secrets.setCookie}; HttpOnly` });
          res.end(JSON.stringify({ access_token: secrets.jsonAccess, token_type: "Bearer", expires_in: 3600, refresh_token: secrets.jsonRefresh }));
          return;
        case "/register":
          res.writeHead(201, { "content-type": "application/json" });
          res.end(JSON.stringify({ client_id: "c1", client_secret: secrets.registrationSecret, redirect_uris: ["https://claude.ai/api/mcp/auth_callback"] }));
          return;
        case "/authorize":
          res.writeHead(302, { location: `https://claude.ai/api/mcp/auth_callback?code=${secrets.locationCode}&state=s1#access_token=${secrets.fragmentToken}` });
          res.end();
          return;
        case "/mcp":
          res.writeHead(200, { "content-type": "text/event-stream" });
          res.end(`event: message\ndata: ${JSON.stringify({ jsonrpc: "2.0", id: 1, result: { access_token: secrets.sse } })}\n\n`);
          return;
        default:
          res.writeHead(200, { "content-type": "text/plain" }).end("ok");
      }
    });
    const tmp = tempDir();
    const lens = await startLensProcess({ upstream: upstream.url, dbPath: `${tmp.dir}/lens.db`, args: ["--flush-interval", "20", "--log-level", "trace", "--log-exchanges"] });
    try {
      const form = `grant_type=authorization_code&code=${secrets.formCode}&code_verifier=${secrets.formVerifier}&client_secret=${secrets.formSecret}&redirect_uri=https%3A%2F%2Fclaude.ai%2Fapi%2Fmcp%2Fauth_callback`;
      await request(lens.url + "/token", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", authorization: `Basic ${Buffer.from(`c1:${secrets.basic}`).toString("base64")}` }, body: form });
      await request(lens.url + "/register", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ client_name: "Claude", redirect_uris: ["https://claude.ai/api/mcp/auth_callback"] }) });
      await request(lens.url + `/authorize?response_type=code&client_id=c1&code=${secrets.queryCode}&access_token=${secrets.queryToken}`);
      await request(lens.url + "/mcp", { method: "POST", headers: { authorization: `Bearer ${secrets.bearer}`, cookie: `session=${secrets.cookie}; theme=dark`, "x-api-key": secrets.apiKey, "content-type": "application/json" }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' });
      await request(lens.url + "/login", { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: `coda_token=${secrets.codaToken}&password=${secrets.password}` });
      await waitFor(() => readRows(`${tmp.dir}/lens.db`).length >= 5, "five rows");
      const rows = readRows(`${tmp.dir}/lens.db`);
      // The same access token is followed by its fingerprint, never by its value.
      expect(JSON.stringify(rows)).toMatch(/\[redacted:[0-9a-f]{8}\]/);
      expect(await lens.stop()).toBe(0);

      // --log-exchanges: the log is one of the carriers scanned.
      expect(lens.stdout.filter((line) => line.includes('"msg":"exchange"')).length).toBeGreaterThanOrEqual(5);
      const files = readdirSync(tmp.dir).map((f) => path.join(tmp.dir, f));
      const haystacks = [
        ...files.map((f) => ({ where: path.basename(f), bytes: readFileSync(f) })),
        { where: "stdout", bytes: Buffer.from(lens.stdout.join("\n")) },
        { where: "stderr", bytes: Buffer.from(lens.stderr.join("")) },
      ];
      for (const [name, secret] of Object.entries(secrets)) {
        // Also look for the secret's base64 and hex forms, and its significant middle part.
        const needles = [secret, secret.slice(6, 30), Buffer.from(secret).toString("base64").slice(0, 20), createHash("sha256").update(secret).digest("hex").slice(0, 16)];
        for (const { where, bytes } of haystacks) {
          for (const needle of needles) {
            expect(bytes.includes(needle), `${name} found in ${where}`).toBe(false);
          }
        }
      }
    } finally {
      await lens.stop();
      await upstream.close();
      tmp.cleanup();
    }
  });
});
