import { createHash, randomBytes } from "node:crypto";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { LoggingMessageNotificationSchema, type LoggingMessageNotification } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";

import { startMinimalServer, type MinimalServerHandle } from "../fixtures/minimal-server.js";

const PROTOCOL_VERSION = "2025-06-18";
const INIT_BODY = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "raw-test", version: "1.0.0" } },
};
const MCP_HEADERS = { "Content-Type": "application/json", Accept: "application/json, text/event-stream" };

interface Connected {
  client: Client;
  transport: StreamableHTTPClientTransport;
  logs: (LoggingMessageNotification["params"] & { receivedAt: number })[];
  getStreamOpened: () => boolean;
}

/** Connects a real SDK client; records whether its standalone GET stream got a 200. */
async function connect(mcpUrl: string, token?: string): Promise<Connected> {
  let getOpened = false;
  const trackingFetch: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    if ((init?.method ?? "GET") === "GET" && res.status === 200) getOpened = true;
    return res;
  };
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), {
    fetch: trackingFetch,
    ...(token ? { requestInit: { headers: { Authorization: `Bearer ${token}` } } } : {}),
  });
  const client = new Client({ name: "minimal-server-test", version: "1.0.0" });
  const logs: Connected["logs"] = [];
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
    logs.push({ ...n.params, receivedAt: Date.now() });
  });
  await client.connect(transport);
  return { client, transport, logs, getStreamOpened: () => getOpened };
}

/** Raw initialize + initialized; returns the session id. */
async function rawSession(mcpUrl: string, headers: Record<string, string> = {}): Promise<string> {
  const init = await fetch(mcpUrl, { method: "POST", headers: { ...MCP_HEADERS, ...headers }, body: JSON.stringify(INIT_BODY) });
  expect(init.status).toBe(200);
  const sessionId = init.headers.get("mcp-session-id");
  expect(sessionId).toBeTruthy();
  await init.text();
  const initialized = await fetch(mcpUrl, {
    method: "POST",
    headers: { ...MCP_HEADERS, ...headers, "Mcp-Session-Id": sessionId!, "MCP-Protocol-Version": PROTOCOL_VERSION },
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  expect(initialized.status).toBe(202);
  return sessionId!;
}

const textOf = (result: unknown): string => {
  const content = (result as { content: { type: string; text?: string }[] }).content;
  return content[0]?.text ?? "";
};

describe.each(["json", "sse"] as const)("minimal server, responseMode=%s", (responseMode) => {
  let server: MinimalServerHandle;
  const clients: Client[] = [];

  beforeAll(async () => {
    server = await startMinimalServer({ port: 0, responseMode });
  });
  afterEach(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await server.close();
  });

  async function connected(): Promise<Connected> {
    const c = await connect(server.mcpUrl);
    clients.push(c.client);
    return c;
  }

  it("answers on the listening URL with health", async () => {
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);
    const res = await fetch(`${server.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  it("POST answers with the configured content type", async () => {
    const res = await fetch(server.mcpUrl, { method: "POST", headers: MCP_HEADERS, body: JSON.stringify(INIT_BODY) });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain(responseMode === "json" ? "application/json" : "text/event-stream");
    expect(res.headers.get("mcp-session-id")).toMatch(/^[0-9a-f-]{36}$/);
    await res.text();
  });

  it("lists and calls tools", async () => {
    const { client } = await connected();
    expect(client.getServerVersion()?.name).toBe("mcp-lens-minimal");
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(["big", "count", "echo", "fail"]);
    for (const tool of tools) {
      expect(tool.description).toBeTruthy();
      expect(tool.inputSchema.type).toBe("object");
    }
    expect(textOf(await client.callTool({ name: "echo", arguments: { text: "héllo ✓" } }))).toBe("héllo ✓");

    const big = await client.callTool({ name: "big", arguments: { bytes: 200_000 } });
    expect(textOf(big)).toHaveLength(200_000);

    const fail = await client.callTool({ name: "fail", arguments: {} });
    expect(fail.isError).toBe(true);

    const invalid = await client.callTool({ name: "count", arguments: { n: 51 } });
    expect(invalid.isError).toBe(true);
  });

  it("count sends n notifications spaced delayMs apart, then returns", async () => {
    const { client, logs, getStreamOpened } = await connected();
    // In JSON mode the notifications can only travel on the standalone GET stream.
    if (responseMode === "json") await vi.waitFor(() => expect(getStreamOpened()).toBe(true));
    const progress: number[] = [];
    const started = Date.now();
    const result = await client.callTool({ name: "count", arguments: { n: 3, delayMs: 100 } }, undefined, {
      onprogress: (p) => progress.push(p.progress),
    });
    const elapsed = Date.now() - started;
    expect(textOf(result)).toBe("counted 3");
    expect(elapsed).toBeGreaterThanOrEqual(190);
    await vi.waitFor(() => expect(logs).toHaveLength(3));
    expect(logs.map((l) => (l.data as { i: number }).i)).toEqual([1, 2, 3]);
    expect(logs.every((l) => l.level === "info" && l.logger === "count")).toBe(true);
    if (responseMode === "sse") {
      expect(progress).toEqual([1, 2, 3]); // same stream as the result, so all before it
    } else {
      // GET-stream notifications race the POST's JSON result; the client drops progress for a
      // request it has already completed, so only the early ones are guaranteed.
      expect([[1, 2, 3], [1, 2], [1], []].map((a) => JSON.stringify(a))).toContain(JSON.stringify(progress));
    }
    const at = logs.map((l) => (l.data as { at: number }).at);
    expect(at[2]! - at[0]!).toBeGreaterThanOrEqual(190);
    // Events are flushed as they happen, not buffered until the result.
    expect(logs[0]!.receivedAt - started).toBeLessThan(150);
  });

  it("lists and reads resources and prompts", async () => {
    const { client } = await connected();
    const { resources } = await client.listResources();
    expect(resources.map((r) => r.uri)).toContain("minimal://hello");
    const read = await client.readResource({ uri: "minimal://hello" });
    expect(read.contents[0]).toMatchObject({ uri: "minimal://hello", text: expect.stringContaining("Hello") });

    const { prompts } = await client.listPrompts();
    expect(prompts.map((p) => p.name)).toContain("greet");
    const prompt = await client.getPrompt({ name: "greet", arguments: { name: "Ada" } });
    expect(JSON.stringify(prompt.messages)).toContain("Ada");
  });

  it("opens the standalone GET stream at once", async () => {
    const sessionId = await rawSession(server.mcpUrl);
    const ac = new AbortController();
    const res = await fetch(server.mcpUrl, {
      headers: { Accept: "text/event-stream", "Mcp-Session-Id": sessionId, "MCP-Protocol-Version": PROTOCOL_VERSION },
      signal: ac.signal,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    ac.abort();
  });

  it("DELETE ends the session; later requests get 404", async () => {
    const { client, transport } = await connected();
    const sessionId = transport.sessionId!;
    expect(sessionId).toBeTruthy();
    await transport.terminateSession();
    const res = await fetch(server.mcpUrl, {
      method: "POST",
      headers: { ...MCP_HEADERS, "Mcp-Session-Id": sessionId, "MCP-Protocol-Version": PROTOCOL_VERSION },
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }),
    });
    expect(res.status).toBe(404);
    await client.close();
  });
});

describe("minimal server, protocol errors", () => {
  let server: MinimalServerHandle;
  beforeAll(async () => {
    server = await startMinimalServer({ port: 0 });
  });
  afterAll(async () => {
    await server.close();
  });

  it("unknown session → 404 JSON-RPC error", async () => {
    const res = await fetch(server.mcpUrl, {
      method: "POST",
      headers: { ...MCP_HEADERS, "Mcp-Session-Id": "00000000-0000-0000-0000-000000000000" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ jsonrpc: "2.0", error: { code: -32001 }, id: null });
  });

  it("missing session on a non-initialize request → 400", async () => {
    const res = await fetch(server.mcpUrl, {
      method: "POST",
      headers: MCP_HEADERS,
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ jsonrpc: "2.0", error: { code: -32000 } });
    const get = await fetch(server.mcpUrl, { headers: { Accept: "text/event-stream" } });
    expect(get.status).toBe(400);
  });

  it("invalid JSON → 400 parse error", async () => {
    const res = await fetch(server.mcpUrl, { method: "POST", headers: MCP_HEADERS, body: "{not json" });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ jsonrpc: "2.0", error: { code: -32700 }, id: null });
  });

  it("other methods → 405, unknown paths → 404", async () => {
    const put = await fetch(server.mcpUrl, { method: "PUT" });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toContain("POST");
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
  });

  it("serves OAuth metadata even without requireAuth, with publicUrl defaulting to the listening URL", async () => {
    const prm = await (await fetch(`${server.url}/.well-known/oauth-protected-resource/mcp`)).json();
    expect(prm).toMatchObject({ resource: `${server.url}/mcp`, authorization_servers: [server.url] });
  });
});

describe("close()", () => {
  it("resolves with an open GET stream and an in-flight SSE tool call, ending both", async () => {
    const server = await startMinimalServer({ port: 0 });
    const sessionId = await rawSession(server.mcpUrl);
    const headers = { "Mcp-Session-Id": sessionId, "MCP-Protocol-Version": PROTOCOL_VERSION };
    const get = await fetch(server.mcpUrl, { headers: { ...headers, Accept: "text/event-stream" } });
    expect(get.status).toBe(200);
    const post = await fetch(server.mcpUrl, {
      method: "POST",
      headers: { ...MCP_HEADERS, ...headers },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 7,
        method: "tools/call",
        params: { name: "count", arguments: { n: 50, delayMs: 2000 } },
      }),
    });
    expect(post.status).toBe(200);
    const drain = async (res: Response) => {
      try {
        await res.text();
      } catch {
        /* connection reset is fine */
      }
    };
    const drained = Promise.all([drain(get), drain(post)]);
    const started = Date.now();
    await server.close();
    await drained;
    expect(Date.now() - started).toBeLessThan(2000);
    await server.close(); // idempotent
    await expect(fetch(`${server.url}/health`)).rejects.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------
// OAuth
// ---------------------------------------------------------------------------------------------

const REDIRECT_URI = "https://claude.ai/api/mcp/auth_callback";

function pkce() {
  const verifier = randomBytes(32).toString("base64url");
  const challenge = createHash("sha256").update(verifier).digest("base64url");
  return { verifier, challenge };
}

const form = (params: Record<string, string>) => new URLSearchParams(params).toString();
const FORM_HEADERS = { "Content-Type": "application/x-www-form-urlencoded" };

describe("minimal server, requireAuth", () => {
  let server: MinimalServerHandle;
  let base: string;
  beforeAll(async () => {
    server = await startMinimalServer({ port: 0, requireAuth: true });
    base = server.url;
  });
  afterAll(async () => {
    await server.close();
  });

  async function register(body: Record<string, unknown>) {
    const res = await fetch(`${base}/register`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ redirect_uris: [REDIRECT_URI], ...body }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, string> };
  }

  async function authorize(clientId: string, challenge: string, extra: Record<string, string> = {}) {
    const url = new URL(`${base}/authorize`);
    const params = {
      response_type: "code",
      client_id: clientId,
      redirect_uri: REDIRECT_URI,
      code_challenge: challenge,
      code_challenge_method: "S256",
      state: "st-123",
      scope: "mcp",
      resource: `${base}/mcp`,
      ...extra,
    };
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    return fetch(url, { redirect: "manual" });
  }

  async function codeFor(clientId: string, challenge: string): Promise<string> {
    const res = await authorize(clientId, challenge);
    expect(res.status).toBe(302);
    const location = new URL(res.headers.get("location")!);
    expect(location.origin + location.pathname).toBe(REDIRECT_URI);
    expect(location.searchParams.get("state")).toBe("st-123");
    return location.searchParams.get("code")!;
  }

  async function token(params: Record<string, string>, headers: Record<string, string> = {}) {
    const res = await fetch(`${base}/token`, { method: "POST", headers: { ...FORM_HEADERS, ...headers }, body: form(params) });
    return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, string> };
  }

  it("401 with an absolute resource_metadata challenge on an unauthenticated probe", async () => {
    const res = await fetch(`${base}/mcp`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "*/*" },
      body: JSON.stringify(INIT_BODY),
    });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe(
      `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"`,
    );
    const bad = await fetch(`${base}/mcp`, {
      method: "POST",
      headers: { ...MCP_HEADERS, Authorization: "Bearer nope" },
      body: JSON.stringify(INIT_BODY),
    });
    expect(bad.status).toBe(401);
    expect(bad.headers.get("www-authenticate")).toMatch(/^Bearer error="invalid_token".*resource_metadata=/);
  });

  it("serves protected-resource and authorization-server metadata", async () => {
    for (const path of ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]) {
      const res = await fetch(`${base}${path}`);
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ resource: `${base}/mcp`, authorization_servers: [base] });
    }
    const as = await (await fetch(`${base}/.well-known/oauth-authorization-server`)).json();
    expect(as).toMatchObject({
      issuer: base,
      authorization_endpoint: `${base}/authorize`,
      token_endpoint: `${base}/token`,
      registration_endpoint: `${base}/register`,
      revocation_endpoint: `${base}/revoke`,
      response_types_supported: ["code"],
      grant_types_supported: ["authorization_code", "refresh_token"],
      code_challenge_methods_supported: ["S256"],
      token_endpoint_auth_methods_supported: ["none", "client_secret_post", "client_secret_basic"],
    });
  });

  it("full flow for a public client: register → authorize → token (PKCE) → MCP → refresh rotates", async () => {
    const reg = await register({ client_name: "ChatGPT", token_endpoint_auth_method: "none" });
    expect(reg.status).toBe(201);
    expect(reg.body.client_id).toBeTruthy();
    expect(reg.body.client_secret).toBeUndefined();
    expect(reg.body.redirect_uris).toEqual([REDIRECT_URI]);
    const again = await register({ token_endpoint_auth_method: "none" });
    expect(again.body.client_id).not.toBe(reg.body.client_id);

    const { verifier, challenge } = pkce();
    const code = await codeFor(reg.body.client_id!, challenge);
    const tok = await token({
      grant_type: "authorization_code",
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
      client_id: reg.body.client_id!,
      resource: `${base}/mcp`,
    });
    expect(tok.status).toBe(200);
    expect(tok.headers.get("cache-control")).toBe("no-store");
    expect(tok.body).toMatchObject({ token_type: "Bearer", expires_in: 3600, scope: "mcp" });
    expect(tok.body.access_token).toBeTruthy();
    expect(tok.body.refresh_token).toBeTruthy();

    // code is single use
    const reuse = await token({
      grant_type: "authorization_code",
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
      client_id: reg.body.client_id!,
    });
    expect(reuse.status).toBe(400);
    expect(reuse.body.error).toBe("invalid_grant");

    const { client } = await connect(`${base}/mcp`, tok.body.access_token);
    expect(textOf(await client.callTool({ name: "echo", arguments: { text: "authed" } }))).toBe("authed");
    await client.close();

    const refreshed = await token({
      grant_type: "refresh_token",
      refresh_token: tok.body.refresh_token!,
      client_id: reg.body.client_id!,
    });
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.refresh_token).not.toBe(tok.body.refresh_token);
    expect(refreshed.body.access_token).not.toBe(tok.body.access_token);
    const stale = await token({
      grant_type: "refresh_token",
      refresh_token: tok.body.refresh_token!,
      client_id: reg.body.client_id!,
    });
    expect(stale.status).toBe(400);
    expect(stale.body.error).toBe("invalid_grant");

    const second = await connect(`${base}/mcp`, refreshed.body.access_token);
    expect((await second.client.listTools()).tools.length).toBe(4);
    await second.client.close();
  });

  it("a wrong code_verifier gets invalid_grant", async () => {
    const reg = await register({ token_endpoint_auth_method: "none" });
    const { challenge } = pkce();
    const code = await codeFor(reg.body.client_id!, challenge);
    const res = await token({
      grant_type: "authorization_code",
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: pkce().verifier,
      client_id: reg.body.client_id!,
    });
    expect(res.status).toBe(400);
    expect(res.body.error).toBe("invalid_grant");
  });

  it("a redirect_uri differing from the authorize call gets invalid_grant", async () => {
    const reg = await register({ token_endpoint_auth_method: "none", redirect_uris: [REDIRECT_URI, "http://127.0.0.1:9/cb"] });
    const { verifier, challenge } = pkce();
    const code = await codeFor(reg.body.client_id!, challenge);
    const res = await token({
      grant_type: "authorization_code",
      code,
      redirect_uri: "http://127.0.0.1:9/cb",
      code_verifier: verifier,
      client_id: reg.body.client_id!,
    });
    expect(res.body.error).toBe("invalid_grant");
  });

  it("confidential clients: client_secret_basic and client_secret_post; bad secret → invalid_client", async () => {
    const reg = await register({ client_name: "Claude", token_endpoint_auth_method: "client_secret_post" });
    expect(reg.status).toBe(201);
    const { client_id: id, client_secret: secret } = reg.body as { client_id: string; client_secret: string };
    expect(secret).toBeTruthy();

    let p = pkce();
    let code = await codeFor(id, p.challenge);
    const post = await token({
      grant_type: "authorization_code",
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: p.verifier,
      client_id: id,
      client_secret: secret,
    });
    expect(post.status).toBe(200);

    p = pkce();
    code = await codeFor(id, p.challenge);
    const basic = `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;
    const viaBasic = await token(
      { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: p.verifier },
      { Authorization: basic },
    );
    expect(viaBasic.status).toBe(200);

    const wrong = await token({
      grant_type: "refresh_token",
      refresh_token: viaBasic.body.refresh_token!,
      client_id: id,
      client_secret: "wrong",
    });
    expect(wrong.status).toBe(401);
    expect(wrong.body.error).toBe("invalid_client");
    const missing = await token({ grant_type: "refresh_token", refresh_token: viaBasic.body.refresh_token!, client_id: id });
    expect(missing.body.error).toBe("invalid_client");
  });

  it("authorize errors: bad redirect_uri → 400 JSON; other errors redirect with error", async () => {
    const reg = await register({ token_endpoint_auth_method: "none" });
    const { challenge } = pkce();

    const badRedirect = await authorize(reg.body.client_id!, challenge, { redirect_uri: "https://evil.example/cb" });
    expect(badRedirect.status).toBe(400);
    expect((await badRedirect.json()).error).toBe("invalid_request");

    const unknownClient = await authorize("nope", challenge);
    expect(unknownClient.status).toBe(400);

    const plain = await authorize(reg.body.client_id!, challenge, { code_challenge_method: "plain" });
    expect(plain.status).toBe(302);
    const loc = new URL(plain.headers.get("location")!);
    expect(loc.searchParams.get("error")).toBe("invalid_request");
    expect(loc.searchParams.get("state")).toBe("st-123");

    const token = await authorize(reg.body.client_id!, challenge, { response_type: "token" });
    expect(new URL(token.headers.get("location")!).searchParams.get("error")).toBe("unsupported_response_type");

    const target = await authorize(reg.body.client_id!, challenge, { resource: "https://other.example/mcp" });
    expect(new URL(target.headers.get("location")!).searchParams.get("error")).toBe("invalid_target");
  });

  it("token endpoint rejects JSON bodies and unknown grant types; register rejects bad metadata", async () => {
    const json = await fetch(`${base}/token`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ grant_type: "authorization_code" }),
    });
    expect(json.status).toBe(400);
    expect((await json.json()).error).toBe("invalid_request");

    const grant = await token({ grant_type: "password", client_id: "x" });
    expect(grant.body.error).toBe("unsupported_grant_type");

    const noRedirects = await register({ redirect_uris: [] });
    expect(noRedirects.status).toBe(400);
    expect(noRedirects.body.error).toBe("invalid_redirect_uri");
    const badMethod = await register({ token_endpoint_auth_method: "private_key_jwt" });
    expect(badMethod.body.error).toBe("invalid_client_metadata");
  });

  it("revoke answers 200 and the revoked access token stops working", async () => {
    const reg = await register({ token_endpoint_auth_method: "none" });
    const { verifier, challenge } = pkce();
    const code = await codeFor(reg.body.client_id!, challenge);
    const tok = await token({
      grant_type: "authorization_code",
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
      client_id: reg.body.client_id!,
    });
    const revoke = await fetch(`${base}/revoke`, {
      method: "POST",
      headers: FORM_HEADERS,
      body: form({ token: tok.body.access_token!, client_id: reg.body.client_id! }),
    });
    expect(revoke.status).toBe(200);
    const res = await fetch(`${base}/mcp`, {
      method: "POST",
      headers: { ...MCP_HEADERS, Authorization: `Bearer ${tok.body.access_token}` },
      body: JSON.stringify(INIT_BODY),
    });
    expect(res.status).toBe(401);
    const unknown = await fetch(`${base}/revoke`, {
      method: "POST",
      headers: FORM_HEADERS,
      body: form({ token: "never-issued", client_id: reg.body.client_id! }),
    });
    expect(unknown.status).toBe(200);
  });
});

describe("publicUrl", () => {
  it("is used in metadata and the challenge instead of the listening URL", async () => {
    const server = await startMinimalServer({ port: 0, requireAuth: true, publicUrl: "https://lens.example.com/" });
    try {
      const res = await fetch(server.mcpUrl, { method: "POST", headers: MCP_HEADERS, body: JSON.stringify(INIT_BODY) });
      expect(res.headers.get("www-authenticate")).toContain(
        'resource_metadata="https://lens.example.com/.well-known/oauth-protected-resource/mcp"',
      );
      const as = await (await fetch(`${server.url}/.well-known/oauth-authorization-server`)).json();
      expect(as.issuer).toBe("https://lens.example.com");
      const prm = await (await fetch(`${server.url}/.well-known/oauth-protected-resource`)).json();
      expect(prm.resource).toBe("https://lens.example.com/mcp");
    } finally {
      await server.close();
    }
  });
});
