// Grouping across the two eras of MCP: modern (2026-07-28, stateless) connections, dual-era
// fallbacks, pre-flight checks, connections that share a bearer, and settling what cannot progress.
// The wire formats are those real clients send (v2 TypeScript SDK 2.4, v1 SDK 1.32, mcp-remote 0.15).
import { describe, expect, it } from "vitest";
import type { Handshake } from "../../analysis/handshake.js";
import { groupHandshakes } from "../../analysis/handshakes.js";
import { settle } from "../../analysis/verdict.js";
import { JSON_TYPE, json, MCP_ACCEPT, type Peer, secret, type Spec, Wire } from "../helpers/wire.js";

const NODE: Peer = { addr: "127.0.0.1", ua: "node" };
const UNDICI: Peer = { addr: "127.0.0.1", ua: "undici" };
const MODERN = "2026-07-28";

/** A 2026-07-28 request as the v2 SDK sends it: `_meta` in the body, the three headers. */
function modern(method: string, client: string, opts: { params?: Record<string, unknown>; status?: number; reply?: unknown; bearer?: string } = {}): Spec {
  const params = {
    ...opts.params,
    _meta: {
      "io.modelcontextprotocol/protocolVersion": MODERN,
      "io.modelcontextprotocol/clientInfo": { name: client, version: "2.4.0" },
      "io.modelcontextprotocol/clientCapabilities": {},
    },
  };
  const name = typeof opts.params?.name === "string" ? [["mcp-name", opts.params.name] as [string, string]] : [];
  const id = method === "server/discover" ? "server-discover-probe-1" : 1;
  const result = method === "server/discover" ? { supportedVersions: [MODERN], capabilities: {}, resultType: "complete" } : { resultType: "complete" };
  return {
    method: "POST",
    path: "/mcp",
    req: [
      JSON_TYPE,
      MCP_ACCEPT,
      ["mcp-protocol-version", MODERN],
      ["mcp-method", method],
      ...name,
      ...(opts.bearer ? [["authorization", `Bearer ${opts.bearer}`] as [string, string]] : []),
    ],
    body: json({ jsonrpc: "2.0", id, method, params }),
    status: opts.status ?? 200,
    res: [JSON_TYPE],
    reply: json(opts.reply ?? { jsonrpc: "2.0", id, result }),
  };
}

/** A legacy request; initialize carries clientInfo, the rest a session id when there is one. */
function legacy(method: string, client: string, opts: { session?: string; assign?: string; status?: number; reply?: unknown; bearer?: string } = {}): Spec {
  const initialize = method === "initialize";
  const notification = method.startsWith("notifications/");
  const params = initialize ? { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: client, version: "1.0.0" } } : {};
  const body = json(notification ? { jsonrpc: "2.0", method } : { jsonrpc: "2.0", id: 1, method, params });
  return {
    method: "POST",
    path: "/mcp",
    req: [
      JSON_TYPE,
      MCP_ACCEPT,
      ...(opts.session ? [["mcp-session-id", opts.session] as [string, string]] : []),
      ...(opts.bearer ? [["authorization", `Bearer ${opts.bearer}`] as [string, string]] : []),
    ],
    body,
    status: opts.status ?? (notification ? 202 : 200),
    res: [JSON_TYPE, ...(opts.assign ? [["mcp-session-id", opts.assign] as [string, string]] : [])],
    reply: notification ? undefined : json(opts.reply ?? { jsonrpc: "2.0", id: 1, result: initialize ? { protocolVersion: "2025-11-25", capabilities: {}, serverInfo: { name: "s" } } : {} }),
  };
}

const notInitialized = { jsonrpc: "2.0", error: { code: -32000, message: "Bad Request: Server not initialized" }, id: null };

function grouped(w: Wire, now = w.now): Handshake[] {
  return groupHandshakes(w.exchanges, now);
}

const summary = (h: Handshake) => ({ ids: h.exchangeIds, era: h.era, fallback: h.eraFallback, outcome: h.outcome, name: h.clientName });

describe("a modern connection", () => {
  it("is one handshake from server/discover through its self-contained requests, with the `_meta` client info", () => {
    const w = new Wire();
    w.send(NODE, modern("server/discover", "acme"));
    w.send(NODE, modern("tools/list", "acme"));
    w.wait(5 * 60_000); // a user working slowly: no session id ties the calls, the client does
    w.send(NODE, modern("tools/call", "acme", { params: { name: "echo", arguments: {} } }));
    const [h, ...rest] = grouped(w);
    expect(rest).toEqual([]);
    expect(summary(h!)).toEqual({ ids: [1, 2, 3], era: "modern", fallback: false, outcome: "succeeded", name: "acme" });
    expect(h!.steps.map((s) => `${s.step}:${s.status}`)).toEqual(["probe:ok", "discover:ok", "list:ok", "tool_call:ok"]);
    expect(h!.clientFamily).toBe("typescript-sdk");
  });

  it("keeps a tool's error inside its handshake, which stays succeeded", () => {
    const w = new Wire();
    w.send(NODE, modern("server/discover", "acme"));
    w.send(NODE, modern("tools/list", "acme"));
    w.send(NODE, modern("tools/call", "acme", { params: { name: "fail" }, reply: { jsonrpc: "2.0", id: 1, result: { content: [{ type: "text", text: "boom" }], isError: true } } }));
    w.send(NODE, modern("tools/call", "acme", { params: { name: "nope" }, reply: { jsonrpc: "2.0", id: 1, error: { code: -32602, message: "Unknown tool" } } }));
    const [h, ...rest] = grouped(w, w.now + 60 * 60_000);
    expect(rest).toEqual([]);
    expect(h!.outcome).toBe("succeeded");
    expect(h!.steps.find((s) => s.step === "tool_call")?.status).toBe("ok");
  });

  it("is a new handshake when the next client (or the same one again) opens with server/discover", () => {
    const w = new Wire();
    w.send(NODE, modern("server/discover", "acme"));
    w.send(NODE, modern("tools/list", "acme"));
    w.send(NODE, modern("server/discover", "acme"));
    w.send(NODE, modern("tools/list", "acme"));
    w.send(NODE, modern("server/discover", "other-tool"));
    expect(grouped(w).map((h) => h.exchangeIds)).toEqual([[1, 2], [3, 4], [5]]);
  });

  it("two clients' challenged probes from one address stay apart when their `_meta` names differ", () => {
    const w = new Wire();
    const challenged = (client: string): Spec => {
      const spec = modern("server/discover", client, { status: 401, reply: { error: "invalid_token" } });
      return { ...spec, res: [...(spec.res ?? []), ["www-authenticate", 'Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource/mcp"']] };
    };
    w.send(NODE, challenged("agent-auto"));
    w.send(NODE, challenged("agent-auto")); // the same client probing again
    w.send(NODE, challenged("agent-pinned"));
    expect(grouped(w).map((h) => [h.exchangeIds, h.clientName])).toEqual([
      [[1, 2], "agent-auto"],
      [[3], "agent-pinned"],
    ]);
  });

  it("does not take the next legacy client's requests, nor does the next modern client's probe join a legacy session", () => {
    const w = new Wire();
    w.send(NODE, legacy("initialize", "v1", { assign: "s1" }));
    w.send(NODE, legacy("notifications/initialized", "v1", { session: "s1" }));
    w.send(NODE, legacy("tools/list", "v1", { session: "s1" }));
    w.send(NODE, { method: "DELETE", path: "/mcp", req: [["mcp-session-id", "s1"]], status: 200 });
    w.send(NODE, modern("server/discover", "v2"));
    w.send(NODE, modern("tools/list", "v2"));
    const hs = grouped(w);
    expect(hs.map((h) => [h.exchangeIds, h.era])).toEqual([
      [[1, 2, 3, 4], "legacy"],
      [[5, 6], "modern"],
    ]);
    expect(hs.every((h) => h.outcome === "succeeded")).toBe(true);
  });
});

describe("where the eras meet", () => {
  it("a dual-era client's fallback is one healthy handshake in the legacy era, marked as a fallback", () => {
    const w = new Wire();
    w.send(NODE, modern("server/discover", "dual", { status: 400, reply: notInitialized }));
    w.send(NODE, legacy("initialize", "dual", { assign: "s1" }));
    w.send(NODE, legacy("notifications/initialized", "dual", { session: "s1" }));
    w.send(NODE, legacy("tools/list", "dual", { session: "s1" }));
    const [h, ...rest] = grouped(w, w.now + 60 * 60_000);
    expect(rest).toEqual([]);
    expect(summary(h!)).toEqual({ ids: [1, 2, 3, 4], era: "legacy", fallback: true, outcome: "succeeded", name: "dual" });
  });

  it("a modern-only client refused by a legacy server fails alone; the next client is not its fallback", () => {
    const w = new Wire();
    w.send(NODE, modern("server/discover", "pinned", { status: 400, reply: notInitialized }));
    w.send(NODE, legacy("initialize", "someone-else", { assign: "s2" }));
    const hs = grouped(w, w.now + 60_000);
    expect(hs.map(summary)).toEqual([
      { ids: [1], era: "modern", fallback: false, outcome: "failed", name: "pinned" },
      { ids: [2], era: "legacy", fallback: false, outcome: "succeeded", name: "someone-else" },
    ]);
  });

  it("a legacy client refused by a modern-only server fails in the legacy era", () => {
    const w = new Wire();
    w.send(NODE, legacy("initialize", "v1", {
      status: 400,
      reply: { jsonrpc: "2.0", id: 0, error: { code: -32022, message: "Unsupported protocol version: 2025-11-25", data: { supported: [MODERN], requested: "2025-11-25" } } },
    }));
    const [h] = grouped(w, w.now + 60_000);
    expect(summary(h!)).toEqual({ ids: [1], era: "legacy", fallback: false, outcome: "failed", name: "v1" });
    expect(h!.failedStep).toBe("probe");
  });
});

describe("pre-flight checks join the attempt they precede", () => {
  it("mcp-remote: a refused GET, discovery on an authless server, its test connection, then the real one", () => {
    const w = new Wire();
    w.send(UNDICI, { path: "/mcp", req: [["accept", "text/event-stream"]], status: 400, res: [JSON_TYPE], reply: json(notInitialized) });
    for (const path of ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server"]) {
      w.send(NODE, { path, status: 404 });
    }
    w.send(UNDICI, legacy("initialize", "mcp-remote-fallback-test", { assign: "t1" }));
    w.send(UNDICI, legacy("notifications/initialized", "x", { session: "t1" }));
    w.send(UNDICI, legacy("initialize", "claude-ai (via mcp-remote 0.15.1)", { assign: "s1" }));
    w.send(UNDICI, legacy("tools/list", "x", { session: "s1" }));
    const [h, ...rest] = grouped(w, w.now + 60 * 60_000);
    expect(rest).toEqual([]);
    expect(summary(h!)).toEqual({ ids: [1, 2, 3, 4, 5, 6, 7, 8], era: "legacy", fallback: false, outcome: "succeeded", name: "claude-ai (via mcp-remote 0.15.1)" });
    expect(h!.clientFamily).toBe("mcp-remote");
  });

  it("mcp-remote signing in: refused GETs (401), its test connection through OAuth, then the real one with the same token", () => {
    const w = new Wire();
    const challenge = { status: 401, res: [JSON_TYPE, ["www-authenticate", 'Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource/mcp"'] as [string, string]], reply: json({ error: "invalid_token" }) };
    const discovery = () => {
      w.send(NODE, { path: "/.well-known/oauth-protected-resource/mcp", status: 200, res: [JSON_TYPE], reply: json({ resource: "http://127.0.0.1/mcp", authorization_servers: ["http://127.0.0.1"] }) });
      w.send(NODE, { path: "/.well-known/oauth-authorization-server", status: 200, res: [JSON_TYPE], reply: json({ issuer: "http://127.0.0.1" }) });
    };
    w.send(UNDICI, { path: "/mcp", req: [["accept", "text/event-stream"]], ...challenge });
    discovery();
    w.send(NODE, { path: "/mcp", req: [["accept", "text/event-stream"]], ...challenge });
    w.send(UNDICI, { ...legacy("initialize", "mcp-remote-fallback-test"), ...challenge });
    w.send(UNDICI, { method: "POST", path: "/register", req: [JSON_TYPE], body: json({ client_name: "MCP CLI Proxy", redirect_uris: ["http://127.0.0.1:5598/oauth/callback"] }), status: 201, res: [JSON_TYPE], reply: json({ client_id: "c-r", redirect_uris: ["http://127.0.0.1:5598/oauth/callback"] }) });
    const browser: Peer = { addr: "127.0.0.1", ua: "Mozilla/5.0 Chrome/141.0" };
    w.send(browser, { path: "/authorize", query: "response_type=code&client_id=c-r&state=st-r&redirect_uri=http%3A%2F%2F127.0.0.1%3A5598%2Foauth%2Fcallback", status: 200, res: [["content-type", "text/html"]], reply: "<form>" });
    w.send(NODE, { method: "POST", path: "/authorize/decision", req: [["content-type", "application/x-www-form-urlencoded"]], body: "request_id=r&action=allow", status: 302, res: [["location", "http://127.0.0.1:5598/oauth/callback?code=k-1&state=st-r&iss=http%3A%2F%2F127.0.0.1"]] });
    const token = secret();
    w.send(UNDICI, { method: "POST", path: "/token", req: [["content-type", "application/x-www-form-urlencoded"]], body: "grant_type=authorization_code&code=k-1&client_id=c-r", status: 200, res: [JSON_TYPE], reply: json({ access_token: token, token_type: "Bearer", expires_in: 3600 }) });
    w.send(UNDICI, legacy("initialize", "mcp-remote-fallback-test", { bearer: token, assign: "t1" }));
    w.send(UNDICI, legacy("notifications/initialized", "x", { bearer: token, session: "t1" }));
    w.send(UNDICI, legacy("initialize", "claude-ai (via mcp-remote 0.15.1)", { bearer: token, assign: "s1" }));
    w.send(UNDICI, legacy("tools/list", "x", { bearer: token, session: "s1" }));
    // The next client from the same address: its own handshake, not mcp-remote's.
    const next = w.send(NODE, { ...legacy("initialize", "inspector-cli"), ...challenge });
    const [h, other, ...rest] = grouped(w, w.now + 60 * 60_000);
    expect(rest).toEqual([]);
    expect(summary(h!)).toMatchObject({ era: "legacy", outcome: "succeeded", name: "claude-ai (via mcp-remote 0.15.1)" });
    expect(h!.exchangeIds).toEqual(w.exchanges.filter((e) => e.id !== next.id).map((e) => e.id));
    expect([h!.clientFamily, h!.registration]).toEqual(["mcp-remote", "dcr"]);
    expect(other!.exchangeIds).toEqual([next.id]);
  });

  it("a refused GET inside a stateless legacy connection stays in it", () => {
    const w = new Wire();
    w.send(NODE, legacy("initialize", "v1"));
    w.send(NODE, legacy("notifications/initialized", "v1"));
    w.send(NODE, { path: "/mcp", req: [["accept", "text/event-stream"]], status: 405 });
    w.send(NODE, legacy("tools/list", "v1"));
    expect(grouped(w).map((h) => h.exchangeIds)).toEqual([[1, 2, 3, 4]]);
  });

  it("a lone refused GET is not a failure until the grace for the connection it precedes has passed", () => {
    const w = new Wire();
    w.send(UNDICI, { path: "/mcp", req: [["accept", "text/event-stream"]], status: 400 });
    expect(grouped(w)[0]!.outcome).toBe("in_progress");
    expect(grouped(w, w.now + 11_000)[0]!.outcome).toBe("failed");
  });
});

describe("connections that share a bearer", () => {
  it("three processes with one static token, each opening its own connection, are three handshakes", () => {
    const w = new Wire();
    const token = secret();
    for (const name of ["a", "b", "c"]) {
      w.send(NODE, legacy("initialize", name, { bearer: token, assign: `s-${name}` }));
      w.send(NODE, legacy("tools/list", name, { bearer: token, session: `s-${name}` }));
    }
    expect(grouped(w).map((h) => [h.exchangeIds, h.clientName])).toEqual([
      [[1, 2], "a"],
      [[3, 4], "b"],
      [[5, 6], "c"],
    ]);
  });

  it("a rerun with a cached token minutes later is its own handshake, and its failure stays visible", () => {
    const w = new Wire();
    const token = secret();
    w.send(NODE, modern("server/discover", "agent", { bearer: token }));
    w.send(NODE, modern("tools/list", "agent", { bearer: token }));
    w.wait(7 * 60_000);
    w.send(NODE, modern("server/discover", "agent", { bearer: token, status: 500, reply: { error: "boom" } }));
    const hs = grouped(w, w.now + 60 * 60_000);
    expect(hs.map((h) => [h.exchangeIds, h.outcome])).toEqual([
      [[1, 2], "succeeded"],
      [[3], "failed"],
    ]);
  });

  it("modern requests whose `_meta` names another client are another connection", () => {
    const w = new Wire();
    const token = secret();
    w.send(NODE, modern("tools/list", "agent-1", { bearer: token }));
    w.send(NODE, modern("tools/list", "agent-2", { bearer: token }));
    w.send(NODE, modern("tools/call", "agent-2", { bearer: token, params: { name: "echo" } }));
    expect(grouped(w).map((h) => [h.exchangeIds, h.clientName])).toEqual([
      [[1], "agent-1"],
      [[2, 3], "agent-2"],
    ]);
  });
});

describe("the bundled server's own sign-in page", () => {
  it("a refused Coda token (POST /authorize/decision → 400) joins the handshake and fails it at authorize", () => {
    const w = new Wire();
    const backend: Peer = { addr: "203.0.113.7", ua: "Claude-User" };
    const browser: Peer = { addr: "198.51.100.4", ua: "Mozilla/5.0 Chrome/141.0" };
    w.send(backend, legacy("initialize", "claude-ai", { status: 401 }));
    w.send(backend, { method: "POST", path: "/register", req: [JSON_TYPE], body: json({ client_name: "Claude", redirect_uris: ["https://claude.ai/api/mcp/auth_callback"] }), status: 201, res: [JSON_TYPE], reply: json({ client_id: "c-9", redirect_uris: ["https://claude.ai/api/mcp/auth_callback"] }) });
    w.send(browser, { path: "/authorize", query: "response_type=code&client_id=c-9&state=st-1&redirect_uri=https%3A%2F%2Fclaude.ai%2Fapi%2Fmcp%2Fauth_callback", status: 200, res: [["content-type", "text/html"]], reply: "<form>" });
    const decision = w.send(browser, { method: "POST", path: "/authorize/decision", req: [["content-type", "application/x-www-form-urlencoded"]], body: "request=r-1&action=allow", status: 400, res: [["content-type", "text/html"]], reply: "<p>Coda did not accept this token</p>" });
    expect(decision.kind).toBe("authorize_consent");
    const [h, ...rest] = grouped(w, w.now + 11_000);
    expect(rest).toEqual([]);
    expect(h!.exchangeIds).toContain(decision.id);
    expect([h!.outcome, h!.failedStep]).toEqual(["failed", "authorize"]);
  });
});

describe("settling what can no longer progress", () => {
  const base: Handshake = {
    id: 1, clientFamily: "other", clientName: null, era: "legacy", eraFallback: false, registration: "none",
    startedAt: 0, endedAt: 1, steps: [], outcome: "in_progress", failedStep: null, exchangeIds: [1], diagnoses: [],
  };

  it("in progress with a failed step becomes failed at that step", () => {
    const h = settle({ ...base, steps: [{ step: "probe", status: "ok", exchangeIds: [1], at: 0 }, { step: "authorize", status: "failed", exchangeIds: [2], at: 1 }] });
    expect([h.outcome, h.failedStep]).toEqual(["failed", "authorize"]);
  });

  it("in progress without a failure becomes abandoned; other outcomes stay as they are", () => {
    expect(settle({ ...base, steps: [{ step: "authorize", status: "ok", exchangeIds: [2], at: 1 }] }).outcome).toBe("abandoned");
    expect(settle({ ...base, outcome: "succeeded" }).outcome).toBe("succeeded");
  });
});
