// The Coda MCP server as hosted connectors meet it: behind mcp-lens, through the full OAuth
// flow with the MCP SDK's own client, for Claude.ai, ChatGPT and a localhost client.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";
import { CALLBACKS, ConnectorLikeProvider, signInWithCodaToken } from "../helpers/connector.js";
import { startLensProcess, startServerProcess, tempDir, waitFor, type RunningLens, type RunningServer } from "../helpers/processes.js";
import { closedPort, request } from "../helpers/upstream.js";

const CODA_TOKEN = "0c7a51e2-3f4b-4d5e-8a9b-coda-test-token";
const CODA_USER = { name: "Ada Lovelace", loginId: "ada@example.com" };

function resultText(result: unknown): string {
  const content = (result as { content?: Array<{ type: string; text?: string }> }).content ?? [];
  return content.map((c) => c.text ?? "").join("\n");
}

describe("the Coda MCP server behind mcp-lens", () => {
  let coda: FakeCoda;
  let server: RunningServer;
  let lens: RunningLens;
  let publicUrl: string;
  const tmp = tempDir();

  beforeAll(async () => {
    coda = await startFakeCoda({ tokens: { [CODA_TOKEN]: CODA_USER } });
    const port = await closedPort();
    publicUrl = `http://127.0.0.1:${port}`;
    server = await startServerProcess({ dbPath: `${tmp.dir}/server.db`, codaApiBase: coda.url, args: ["--public-url", publicUrl, "--sse-keepalive", "1s"] });
    lens = await startLensProcess({ upstream: server.url, dbPath: `${tmp.dir}/lens.db`, args: ["--port", String(port), "--flush-interval", "20"] });
  });

  afterAll(async () => {
    await lens?.stop();
    await server?.stop();
    await coda?.close();
    tmp.cleanup();
  });

  /** Discovery → DCR → authorize (the login form) → token, as the SDK client does it. */
  async function connectAs(provider: ConnectorLikeProvider): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
    const mcpUrl = new URL(`${publicUrl}/mcp`);
    const probe = new Client({ name: "Anthropic", version: "1.0.0" });
    await expect(probe.connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider }))).rejects.toThrow(UnauthorizedError);
    const consent = await signInWithCodaToken(provider.authorizationUrl!, CODA_TOKEN);
    expect(consent.status).toBe(302);
    const callback = new URL(consent.headers.get("location")!);
    expect(callback.origin + callback.pathname).toBe(provider.redirectUrl);
    expect(callback.searchParams.get("state")).toBe(provider.authorizationUrl!.searchParams.get("state"));
    expect(callback.searchParams.get("iss")).toBe(publicUrl);
    const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider });
    await transport.finishAuth(callback.searchParams.get("code")!);
    const client = new Client({ name: "Anthropic", version: "1.0.0" });
    await client.connect(transport);
    return { client, transport };
  }

  async function token(body: Record<string, string>, basic?: [string, string]): Promise<{ status: number; json: Record<string, unknown> }> {
    const headers: Record<string, string> = { "content-type": "application/x-www-form-urlencoded" };
    if (basic) headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(basic[0])}:${encodeURIComponent(basic[1])}`).toString("base64")}`;
    const res = await fetch(`${publicUrl}/token`, { method: "POST", headers, body: new URLSearchParams(body) });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  }

  it.each([
    ["Claude.ai", CALLBACKS.claude, "client_secret_post"],
    ["ChatGPT", CALLBACKS.chatgpt, "none"],
    ["a localhost client", CALLBACKS.localhost, "client_secret_basic"],
  ] as const)("connects %s through the full OAuth flow, then refreshes and revokes", async (_name, callback, method) => {
    const provider = new ConnectorLikeProvider(callback, method);
    const { client } = await connectAs(provider);
    const tools = await client.listTools();
    expect(tools.tools.map((t) => t.name)).toEqual(expect.arrayContaining(["whoami", "list_docs", "list_rows", "upsert_rows"]));
    expect(resultText(await client.callTool({ name: "whoami", arguments: {} }))).toContain(CODA_USER.name);
    const docs = await client.callTool({ name: "list_docs", arguments: {} });
    expect(docs.isError).toBeFalsy();
    await client.close();

    // Refresh rotates: the new refresh token works once, the old one no longer does.
    const info = provider.clientInformation()!;
    const credentials: Record<string, string> = method === "client_secret_post" ? { client_id: info.client_id, client_secret: info.client_secret! } : method === "none" ? { client_id: info.client_id } : {};
    const basic: [string, string] | undefined = method === "client_secret_basic" ? [info.client_id, info.client_secret!] : undefined;
    const oldRefresh = provider.tokens()!.refresh_token!;
    const refreshed = await token({ grant_type: "refresh_token", refresh_token: oldRefresh, ...credentials }, basic);
    expect(refreshed.status).toBe(200);
    expect(refreshed.json.refresh_token).not.toBe(oldRefresh);
    expect((await token({ grant_type: "refresh_token", refresh_token: oldRefresh, ...credentials }, basic)).json.error).toBe("invalid_grant");

    // Revoking the access token ends access at once.
    const accessToken = String(refreshed.json.access_token);
    const revokeHeaders: Record<string, string> = { "content-type": "application/x-www-form-urlencoded" };
    if (basic) revokeHeaders.authorization = `Basic ${Buffer.from(`${basic[0]}:${basic[1]}`).toString("base64")}`;
    const revoked = await fetch(`${publicUrl}/revoke`, { method: "POST", headers: revokeHeaders, body: new URLSearchParams({ token: accessToken, ...credentials }) });
    expect(revoked.status).toBe(200);
    const after = await fetch(`${publicUrl}/mcp`, {
      method: "POST",
      headers: { authorization: `Bearer ${accessToken}`, "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } } }),
    });
    expect(after.status).toBe(401);
  });

  it.each(["2025-03-26", "2025-06-18", "2025-11-25"])("speaks protocol version %s, with a raw Coda token as the bearer", async (version) => {
    const headers = { authorization: `Bearer ${CODA_TOKEN}`, "content-type": "application/json", accept: "application/json, text/event-stream" };
    const rpc = async (body: unknown, extra: Record<string, string> = {}) => {
      const res = await fetch(`${publicUrl}/mcp`, { method: "POST", headers: { ...headers, ...extra }, body: JSON.stringify(body) });
      const text = await res.text();
      const data = text.split("\n").find((l) => l.startsWith("data: "));
      return { res, json: data ? JSON.parse(data.slice(6)) : text ? JSON.parse(text) : null };
    };
    const init = await rpc({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: version, capabilities: {}, clientInfo: { name: "raw", version: "1" } } });
    expect(init.res.status).toBe(200);
    expect(init.json.result.protocolVersion).toBe(version);
    const session = init.res.headers.get("mcp-session-id")!;
    expect(session).toBeTruthy();
    // 2025-03-26 predates the MCP-Protocol-Version header.
    const sessionHeaders: Record<string, string> = { "mcp-session-id": session };
    if (version !== "2025-03-26") sessionHeaders["mcp-protocol-version"] = version;
    const initialized = await fetch(`${publicUrl}/mcp`, { method: "POST", headers: { ...headers, ...sessionHeaders }, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) });
    expect(initialized.status).toBe(202);
    const list = await rpc({ jsonrpc: "2.0", id: 2, method: "tools/list" }, sessionHeaders);
    expect(list.json.result.tools.length).toBe(15);
    const call = await rpc({ jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "list_tables", arguments: { docId: coda.seed.docs[0]!.id } } }, sessionHeaders);
    expect(call.json.result.isError).toBeFalsy();
    expect(JSON.stringify(call.json.result)).toContain("Tasks");
  });

  describe("MCP 2026-07-28, statelessly, on the same endpoint", () => {
    const META = {
      "io.modelcontextprotocol/protocolVersion": "2026-07-28",
      "io.modelcontextprotocol/clientInfo": { name: "raw-modern", version: "1" },
      "io.modelcontextprotocol/clientCapabilities": {},
    };
    /** A modern request as a client sends it: `_meta` in the body, MCP-Protocol-Version, Mcp-Method (and Mcp-Name). */
    function modernRequest(
      method: string,
      params: Record<string, unknown> = {},
      options: { headers?: Record<string, string>; meta?: Record<string, unknown>; signal?: AbortSignal } = {},
    ): Promise<Response> {
      const name: Record<string, string> = typeof params.name === "string" ? { "mcp-name": params.name } : {};
      return fetch(`${publicUrl}/mcp`, {
        method: "POST",
        signal: options.signal,
        headers: {
          authorization: `Bearer ${CODA_TOKEN}`,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-protocol-version": "2026-07-28",
          "mcp-method": method,
          ...name,
          ...options.headers,
        },
        body: JSON.stringify({ jsonrpc: "2.0", id: 7, method, params: { ...params, _meta: options.meta ?? META } }),
      });
    }

    async function modern(method: string, params: Record<string, unknown> = {}, headers: Record<string, string> = {}) {
      const res = await modernRequest(method, params, { headers });
      return { res, json: (await res.json()) as { result?: Record<string, unknown>; error?: { code: number; message: string; data?: Record<string, unknown> } } };
    }

    it("server/discover, tools/list with cache hints, tools/call: no initialize, no session", async () => {
      const discover = await modern("server/discover");
      expect(discover.res.status).toBe(200);
      expect(discover.res.headers.get("mcp-session-id")).toBeNull();
      expect(discover.json.result).toMatchObject({ supportedVersions: ["2026-07-28"], resultType: "complete", ttlMs: 600_000, cacheScope: "public" });
      expect((discover.json.result!._meta as Record<string, { name: string }>)["io.modelcontextprotocol/serverInfo"]!.name).toBe("coda-mcp");
      const list = await modern("tools/list");
      expect(list.json.result).toMatchObject({ resultType: "complete", ttlMs: 600_000, cacheScope: "public" });
      expect((list.json.result!.tools as unknown[]).length).toBe(15);
      const call = await modern("tools/call", { name: "whoami", arguments: {} });
      expect(call.json.result).toMatchObject({ resultType: "complete" });
      expect(resultText(call.json.result)).toContain(CODA_USER.name);
    });

    it("validates headers against the body (-32020), versions (-32022 with supported), methods (404 -32601)", async () => {
      const mismatch = await modern("tools/call", { name: "whoami", arguments: {} }, { "mcp-name": "list_docs" });
      expect([mismatch.res.status, mismatch.json.error?.code]).toEqual([400, -32020]);
      const future = await modern("tools/list", {}, { "mcp-protocol-version": "2099-01-01" });
      expect([future.res.status, future.json.error?.code]).toEqual([400, -32020]); // the header now disagrees with `_meta`
      const res = await modernRequest("tools/list", {}, {
        headers: { "mcp-protocol-version": "2099-01-01" },
        meta: { ...META, "io.modelcontextprotocol/protocolVersion": "2099-01-01" },
      });
      const unsupported = (await res.json()) as { error: { code: number; data: { supported: string[]; requested: string } } };
      expect([res.status, unsupported.error.code]).toEqual([400, -32022]);
      expect(unsupported.error.data).toEqual({ supported: ["2026-07-28"], requested: "2099-01-01" });
      const unknown = await modern("coda/frobnicate");
      expect([unknown.res.status, unknown.json.error?.code]).toEqual([404, -32601]);
    });

    it("subscriptions/listen: acknowledged at once, then kept alive (every --sse-keepalive) through mcp-lens", async () => {
      const abort = new AbortController();
      // The read below waits for the stream; the signal also bounds it if the keep-alive never comes.
      const res = await modernRequest("subscriptions/listen", { notifications: { toolsListChanged: true } }, { signal: AbortSignal.any([abort.signal, AbortSignal.timeout(5000)]) });
      expect(res.headers.get("content-type")).toContain("text/event-stream");
      const reader = res.body!.getReader();
      let text = "";
      const started = Date.now();
      while (!text.includes(": keepalive") && Date.now() - started < 5000) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      abort.abort();
      expect(text).toContain("notifications/subscriptions/acknowledged");
      expect(text).toContain(": keepalive");
      expect(Date.now() - started).toBeLessThan(4000);
    });
  });

  it("answers the unauthenticated probe with 401 and an absolute resource_metadata URL, even with Accept: */* and at /mcp/", async () => {
    for (const path of ["/mcp", "/mcp/"]) {
      const res = await fetch(`${publicUrl}${path}`, {
        method: "POST",
        redirect: "manual",
        headers: { "content-type": "application/json", accept: "*/*", "user-agent": "python-httpx/0.28.1" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "Anthropic" } } }),
      });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toContain(`resource_metadata="${publicUrl}/.well-known/oauth-protected-resource/mcp"`);
    }
    const prm = (await (await fetch(`${publicUrl}/.well-known/oauth-protected-resource/mcp`)).json()) as { resource: string; authorization_servers: string[] };
    expect(prm.resource).toBe(`${publicUrl}/mcp`);
    const as = (await (await fetch(`${publicUrl}/.well-known/oauth-authorization-server`)).json()) as { issuer: string; code_challenge_methods_supported: string[]; token_endpoint_auth_methods_supported: string[] };
    expect(as.issuer).toBe(prm.authorization_servers[0]);
    expect(as.code_challenge_methods_supported).toEqual(["S256"]);
    expect(as.token_endpoint_auth_methods_supported).toEqual(expect.arrayContaining(["none", "client_secret_post", "client_secret_basic"]));
  });

  it("serves requests whose session is missing or unknown instead of failing them", async () => {
    const headers = { authorization: `Bearer ${CODA_TOKEN}`, "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18" };
    const missing = await fetch(`${publicUrl}/mcp`, { method: "POST", headers, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) });
    expect(missing.status).toBe(202);
    const unknown = await fetch(`${publicUrl}/mcp`, { method: "POST", headers: { ...headers, "mcp-session-id": "gone-after-a-restart" }, body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "tools/list" }) });
    expect(unknown.status).toBe(200);
    expect(await unknown.text()).toContain("list_rows");
  });

  it("allows hosted and local origins, refuses others with 403", async () => {
    const ask = (origin: string) =>
      fetch(`${publicUrl}/mcp`, {
        method: "POST",
        headers: { origin, authorization: `Bearer ${CODA_TOKEN}`, "content-type": "application/json", accept: "application/json, text/event-stream" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } } }),
      });
    const claude = await ask("https://claude.ai");
    expect(claude.status).toBe(200);
    expect(claude.headers.get("access-control-allow-origin")).toBe("https://claude.ai");
    expect(claude.headers.get("access-control-expose-headers")).toContain("Mcp-Session-Id");
    expect((await ask("http://localhost:6274")).status).toBe(200);
    expect((await ask("https://evil.example")).status).toBe(403);
    const preflight = await fetch(`${publicUrl}/mcp`, {
      method: "OPTIONS",
      headers: { origin: "https://claude.ai", "access-control-request-method": "POST", "access-control-request-headers": "authorization, mcp-protocol-version, mcp-session-id" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("mcp-protocol-version");
  });

  it("refuses a Host it does not serve (DNS rebinding) but accepts the public one behind a proxy", async () => {
    const probe = (headers: Record<string, string>) => request(`${server.url}/mcp`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: "{}" });
    const rebound = await probe({ host: "attacker.example:80" });
    expect(rebound.status).toBe(421);
    expect(rebound.body.toString()).toContain("attacker.example");
    // nginx-proxy rewrites Host to the container; X-Forwarded-Host carries what the client asked for.
    expect((await probe({ host: "coda-mcp:8081", "x-forwarded-host": "127.0.0.1" })).status).toBe(401);
  });

  it("turns Coda's rate limits and outages into tool errors the model can read", async () => {
    const provider = new ConnectorLikeProvider(CALLBACKS.claude, "none");
    const { client } = await connectAs(provider);
    coda.failNext(10, 429, { retryAfter: "0" });
    const limited = await client.callTool({ name: "list_docs", arguments: {} });
    expect(limited.isError).toBe(true);
    expect(resultText(limited)).toMatch(/rate limit/i);
    coda.failNext(10, 503);
    const down = await client.callTool({ name: "list_docs", arguments: {} });
    expect(down.isError).toBe(true);
    coda.failNext(0, 200);
    expect((await client.callTool({ name: "list_docs", arguments: {} })).isError).toBeFalsy();
    await client.close();
  });

  it("rejects a bad Coda token on the sign-in page without echoing it", async () => {
    const provider = new ConnectorLikeProvider(CALLBACKS.claude, "none");
    const probe = new Client({ name: "Anthropic", version: "1.0.0" });
    await expect(probe.connect(new StreamableHTTPClientTransport(new URL(`${publicUrl}/mcp`), { authProvider: provider }))).rejects.toThrow(UnauthorizedError);
    const badToken = "not-a-real-coda-token-0123456789";
    const res = await signInWithCodaToken(provider.authorizationUrl!, badToken);
    expect(res.status).toBe(400);
    const page = await res.text();
    expect(page).toContain('role="alert"');
    expect(page).not.toContain(badToken);
  });

  it("keeps clients and tokens across a restart, and never stores a token in plain text", async () => {
    const provider = new ConnectorLikeProvider(CALLBACKS.claude, "none");
    const { client } = await connectAs(provider);
    await client.close();
    const accessToken = provider.tokens()!.access_token;
    await server.stop();
    server = await startServerProcess({ dbPath: `${tmp.dir}/server.db`, codaApiBase: coda.url, args: ["--public-url", publicUrl, "--port", String(new URL(server.url).port)] });
    const again = new Client({ name: "Anthropic", version: "1.0.0" });
    await again.connect(new StreamableHTTPClientTransport(new URL(`${publicUrl}/mcp`), { authProvider: provider }));
    expect((await again.listTools()).tools.length).toBe(15);
    await again.close();
    const db = new Database(`${tmp.dir}/server.db`, { readonly: true });
    const dump = JSON.stringify(db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((t) => db.prepare(`SELECT * FROM "${(t as { name: string }).name}"`).all()));
    db.close();
    expect(dump).not.toContain(accessToken);
    expect(dump).not.toContain(CODA_TOKEN);
  });

  it("recorded the handshakes in mcp-lens, with the tokens redacted", async () => {
    const db = new Database(lens.dbPath, { readonly: true });
    try {
      const kinds = await waitFor(() => {
        const rows = db.prepare("SELECT DISTINCT kind FROM exchanges").all() as Array<{ kind: string }>;
        return rows.length >= 6 ? rows.map((r) => r.kind) : null;
      }, "the handshake kinds");
      expect(kinds).toEqual(expect.arrayContaining(["protected_resource_metadata", "authorization_server_metadata", "registration", "authorize", "authorize_consent", "token", "mcp_post"]));
      const all = JSON.stringify(db.prepare("SELECT * FROM exchanges").all());
      expect(all).not.toContain(CODA_TOKEN);
    } finally {
      db.close();
    }
  });
});
