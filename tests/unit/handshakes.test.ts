import { describe, expect, it } from "vitest";
import type { ClassifiedExchange, HeaderPairs } from "../../analysis/exchange.js";
import type { ClientFamily, Handshake, HandshakeOutcome, HandshakeStep } from "../../analysis/handshake.js";
import { groupHandshakes, HandshakeTracker } from "../../analysis/handshakes.js";
import {
  ORIGIN,
  MCP_URL,
  SECOND,
  MINUTE,
  HOUR,
  CALLBACKS,
  type Peer,
  browserAt,
  type Spec,
  Wire,
  secret,
  fingerprint,
  json,
  form,
  JSON_TYPE,
  FORM_TYPE,
  MCP_ACCEPT,
} from "../helpers/wire.js";


// ---------------------------------------------------------------------------------------------
// HTTP exchanges of the handshake

const http = {
  probe(clientInfo: string, answer: "challenge" | "authless" = "challenge", session?: string): Spec {
    const body = json({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: clientInfo } } });
    if (answer === "authless") return http.rpcAnswer({ body, status: 200, assign: session, result: initializeResult });
    return {
      method: "POST",
      path: "/mcp",
      req: [JSON_TYPE, ["accept", "*/*"]],
      body,
      status: 401,
      res: [JSON_TYPE, ["www-authenticate", `Bearer resource_metadata="${ORIGIN}/.well-known/oauth-protected-resource/mcp"`]],
      reply: json({ error: "invalid_token", error_description: "Missing bearer token" }),
    };
  },

  prm(form: "path" | "root", status = 200): Spec {
    return {
      path: form === "path" ? "/.well-known/oauth-protected-resource/mcp" : "/.well-known/oauth-protected-resource",
      status,
      res: status === 200 ? [JSON_TYPE] : [],
      reply: status === 200 ? json({ resource: MCP_URL, authorization_servers: [ORIGIN] }) : undefined,
    };
  },

  asMetadata(): Spec {
    return {
      path: "/.well-known/oauth-authorization-server",
      status: 200,
      res: [JSON_TYPE],
      reply: json({
        issuer: ORIGIN,
        authorization_endpoint: `${ORIGIN}/authorize`,
        token_endpoint: `${ORIGIN}/token`,
        registration_endpoint: `${ORIGIN}/register`,
        code_challenge_methods_supported: ["S256"],
        response_types_supported: ["code"],
      }),
    };
  },

  register(clientName: string, redirectUri: string, clientId: string, authMethod: string, status = 201): Spec {
    const metadata = { client_name: clientName, redirect_uris: [redirectUri], token_endpoint_auth_method: authMethod };
    return {
      method: "POST",
      path: "/register",
      req: [JSON_TYPE],
      body: json({ ...metadata, grant_types: ["authorization_code", "refresh_token"], response_types: ["code"] }),
      status,
      res: [JSON_TYPE],
      reply: json(status === 201 ? { ...metadata, client_id: clientId } : { error: "invalid_client_metadata" }),
    };
  },

  authorize(clientId: string, redirectUri: string, state: string): Spec {
    return {
      path: "/authorize",
      query: form({ response_type: "code", client_id: clientId, redirect_uri: redirectUri, code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", code_challenge_method: "S256", state, resource: MCP_URL }),
      status: 200,
      res: [["content-type", "text/html; charset=utf-8"]],
      reply: "<form method=post action=/consent>…</form>",
    };
  },

  consent(redirectUri: string, state: string, outcome: { code: string } | { error: string }, status = 302): Spec {
    const params: Record<string, string> = "code" in outcome ? { code: outcome.code, state } : { error: outcome.error, state };
    return {
      method: "POST",
      path: "/consent",
      req: [FORM_TYPE, ["origin", ORIGIN]],
      body: form({ decision: "code" in outcome ? "approve" : "deny" }),
      status,
      res: [["location", `${redirectUri}?${form(params)}`]],
    };
  },

  token(params: Record<string, string>, answer: { access: string; refresh: string } | { error: string }): Spec {
    return {
      method: "POST",
      path: "/token",
      req: [FORM_TYPE],
      body: form(params),
      status: "error" in answer ? 400 : 200,
      res: [JSON_TYPE],
      reply: json(
        "error" in answer
          ? { error: answer.error, error_description: "authorization code expired" }
          : { access_token: answer.access, token_type: "Bearer", expires_in: 3600, refresh_token: answer.refresh },
      ),
    };
  },

  /** A browser's CORS preflight from `origin`; the answer allows the headers in `allowed` (default: those asked). */
  preflight(origin: string, path: string, method: string, headers: string, allowed = headers): Spec {
    return {
      method: "OPTIONS",
      path,
      req: [["origin", origin], ["access-control-request-method", method], ["access-control-request-headers", headers]],
      status: 204,
      res: [["access-control-allow-origin", origin], ["access-control-allow-methods", "GET, POST, DELETE"], ["access-control-allow-headers", allowed]],
    };
  },

  /** A JSON-RPC POST to /mcp: `session` is the one it carries, `assign` the one its answer hands out. */
  rpcAnswer(o: { body: string; bearer?: string; session?: string; assign?: string; status: number; result?: unknown }): Spec {
    const req: HeaderPairs = [JSON_TYPE, MCP_ACCEPT];
    if (o.bearer) req.push(["authorization", `Bearer ${o.bearer}`]);
    if (o.session) req.push(["mcp-session-id", o.session]);
    const res: HeaderPairs = [JSON_TYPE];
    if (o.assign) res.push(["mcp-session-id", o.assign]);
    const id = (JSON.parse(o.body) as { id?: number }).id;
    const reply = o.result === undefined ? undefined : json({ jsonrpc: "2.0", id, result: o.result });
    if (o.status === 401) res.push(["www-authenticate", `Bearer error="invalid_token", resource_metadata="${ORIGIN}/.well-known/oauth-protected-resource/mcp"`]);
    return { method: "POST", path: "/mcp", req, body: o.body, status: o.status, res, reply };
  },
};

const initializeResult = { protocolVersion: "2025-06-18", capabilities: { tools: {} }, serverInfo: { name: "acme-mcp", version: "2.3.0" } };
const rpc = (id: number, method: string, params: object = {}) => json({ jsonrpc: "2.0", id, method, params });

// ---------------------------------------------------------------------------------------------
// A connecting client, step by step

interface Profile {
  /** The client's backend: probe, discovery, registration, token. */
  backend: Peer;
  /** Where its MCP calls come from, when not the backend. */
  mcp?: Peer;
  browser: Peer;
  clientInfo: string;
  clientName: string;
  redirectUri: string;
  authMethod: string;
}

const CLAUDE: Profile = {
  backend: { addr: "160.79.104.10", ua: "python-httpx/0.28.1" },
  mcp: { addr: "160.79.104.10", ua: "Claude-User" },
  browser: browserAt("198.51.100.23"),
  clientInfo: "Anthropic",
  clientName: "Claude",
  redirectUri: CALLBACKS.claude,
  authMethod: "client_secret_post",
};

const CHATGPT: Profile = {
  backend: { addr: "20.171.207.5", ua: "openai-mcp/1.0.0" },
  browser: browserAt("203.0.113.50"),
  clientInfo: "openai-mcp",
  clientName: "ChatGPT",
  redirectUri: CALLBACKS.chatgpt,
  authMethod: "none",
};

/** A browser-based client: every request from the browser, preflighted. */
const INSPECTOR_ORIGIN = "http://localhost:6274";
const INSPECTOR: Profile = {
  backend: browserAt("192.0.2.80"),
  browser: browserAt("192.0.2.80"),
  clientInfo: "mcp-inspector",
  clientName: "MCP Inspector",
  redirectUri: CALLBACKS.inspector,
  authMethod: "none",
};

const CLAUDE_CODE: Profile = {
  backend: { addr: "192.0.2.44", ua: "claude-code/2.0.14" },
  browser: browserAt("192.0.2.44"),
  clientInfo: "claude-code",
  clientName: "Claude Code (acme)",
  redirectUri: CALLBACKS.localhost,
  authMethod: "none",
};

let clients = 0;

class Connector {
  clientId = `c-${++clients}`;
  readonly state = `st-${clients}`;
  code = "";
  access = "";
  refreshToken = "";
  readonly session = `sess-${clients}`;
  private rpcId = 1;

  constructor(
    private readonly w: Wire,
    readonly p: Profile,
  ) {}

  private get mcpPeer(): Peer {
    return this.p.mcp ?? this.p.backend;
  }

  probe(): this {
    this.w.send(this.p.backend, http.probe(this.p.clientInfo));
    return this;
  }

  /** The PRM variants in turn, then (when one was found) the AS metadata. */
  discover(prm: Array<["path" | "root", number]> = [["path", 200]]): this {
    for (const [form, status] of prm) this.w.send(this.p.backend, http.prm(form, status));
    if (prm.some(([, status]) => status === 200)) this.w.send(this.p.backend, http.asMetadata());
    return this;
  }

  register(status = 201): this {
    this.w.send(this.p.backend, http.register(this.p.clientName, this.p.redirectUri, this.clientId, this.p.authMethod, status));
    return this;
  }

  /** The user's browser: the authorization page, then consent answered with the code. */
  authorize(): this {
    this.w.wait(2 * SECOND).send(this.p.browser, http.authorize(this.clientId, this.p.redirectUri, this.state));
    return this;
  }

  consent(outcome: "approve" | "deny" = "approve", status = 302): this {
    this.code = secret();
    const answer = outcome === "approve" ? { code: this.code } : { error: "access_denied" };
    this.w.wait(25 * SECOND).send(this.p.browser, http.consent(this.p.redirectUri, this.state, answer, status));
    return this;
  }

  token(answer: "tokens" | "invalid_grant" = "tokens"): this {
    this.access = secret();
    this.refreshToken = secret();
    const params = { grant_type: "authorization_code", code: this.code, redirect_uri: this.p.redirectUri, code_verifier: secret(), client_id: this.clientId, resource: MCP_URL };
    this.w.wait(SECOND).send(this.p.backend, http.token(params, answer === "tokens" ? { access: this.access, refresh: this.refreshToken } : { error: "invalid_grant" }));
    return this;
  }

  refresh(): this {
    const used = this.refreshToken;
    this.access = secret();
    this.refreshToken = secret();
    this.w.send(this.p.backend, http.token({ grant_type: "refresh_token", refresh_token: used, client_id: this.clientId }, { access: this.access, refresh: this.refreshToken }));
    return this;
  }

  initialize(status = 200): this {
    const body = json({ jsonrpc: "2.0", id: this.rpcId++, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: this.p.clientInfo } } });
    const answer = status === 200 ? { assign: this.session, result: initializeResult } : {};
    this.w.send(this.mcpPeer, http.rpcAnswer({ body, bearer: this.access, status, ...answer }));
    return this;
  }

  /** `session`: the one sent, none when the client could not read it. */
  initialized(status = 202, session: string | undefined = this.session): this {
    const body = json({ jsonrpc: "2.0", method: "notifications/initialized" });
    this.w.send(this.mcpPeer, http.rpcAnswer({ body, bearer: this.access, session, status }));
    return this;
  }

  call(method: string, params: object = {}, status = 200): this {
    const result = status !== 200 ? undefined : method === "tools/list" ? { tools: [{ name: "search" }] } : { content: [] };
    this.w.send(this.mcpPeer, http.rpcAnswer({ body: rpc(this.rpcId++, method, params), bearer: this.access, session: this.session, status, result }));
    return this;
  }

  /** Probe, discovery, registration, the browser's consent and the token. */
  oauth(): this {
    return this.probe().discover().register().authorize().consent().token();
  }

  connect(): this {
    return this.oauth().initialize().initialized().call("tools/list").call("tools/call", { name: "search", arguments: { q: "x" } });
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function track(exchanges: ClassifiedExchange[]): { tracker: HandshakeTracker; ids: Array<number | null> } {
  const tracker = new HandshakeTracker();
  return { tracker, ids: exchanges.map((e) => tracker.add(e).handshakeId) };
}

const stepList = (h: Handshake) => h.steps.map((s) => `${s.step}:${s.status}`);
const lastAt = (w: Wire) => w.exchanges.at(-1)!.startedAt;
const only = (handshakes: Handshake[]) => {
  expect(handshakes).toHaveLength(1);
  return handshakes[0]!;
};

const OAUTH_STEPS = ["probe", "protected_resource_metadata", "authorization_server_metadata", "registration", "authorize", "callback", "token"];
const CONNECTED_STEPS = [...OAUTH_STEPS, "initialize", "initialized", "list", "tool_call"];
const ok = (steps: string[]) => steps.map((s) => `${s}:ok`);

// ---------------------------------------------------------------------------------------------
// One client, one attempt

interface Scenario {
  name: string;
  run: (w: Wire) => void;
  /** How long after the last exchange the handshake is looked at. */
  after?: number;
  outcome: HandshakeOutcome;
  failedStep?: HandshakeStep;
  family?: ClientFamily;
  clientName?: string;
  steps: string[];
}

const scenarios: Scenario[] = [
  {
    name: "Claude.ai: probe, PRM, AS metadata, DCR, browser consent, token, initialize, tools",
    run: (w) => void new Connector(w, CLAUDE).connect(),
    outcome: "succeeded",
    family: "claude.ai",
    clientName: "Anthropic",
    steps: ok(CONNECTED_STEPS),
  },
  {
    name: "ChatGPT, a public client, finding PRM at the root after a 404 at the path form",
    run: (w) => void new Connector(w, CHATGPT).probe().discover([["path", 404], ["root", 200]]).register().authorize().consent().token().initialize().initialized().call("tools/list"),
    outcome: "succeeded",
    family: "chatgpt",
    clientName: "openai-mcp",
    steps: ok(CONNECTED_STEPS.slice(0, -1)),
  },
  {
    name: "Claude Code with a localhost callback, its browser on the same machine",
    run: (w) => void new Connector(w, CLAUDE_CODE).connect(),
    outcome: "succeeded",
    family: "claude-code",
    steps: ok(CONNECTED_STEPS),
  },
  {
    name: "Claude Code with a metadata-document client_id: no registration, its browser joins by address",
    run: (w) => {
      const c = new Connector(w, CLAUDE_CODE);
      c.clientId = "https://claude.ai/oauth/claude-code-client-metadata";
      c.probe().discover().authorize().consent().token().initialize();
    },
    outcome: "succeeded",
    family: "claude-code",
    steps: ok(["probe", "protected_resource_metadata", "authorization_server_metadata", "authorize", "callback", "token", "initialize"]),
  },
  {
    name: "A hosted client with a pre-registered client_id: the browser elsewhere joins the handshake awaiting authorization",
    run: (w) => {
      const c = new Connector(w, CLAUDE);
      c.clientId = "claude-static";
      c.probe().discover().authorize().consent().token().initialize();
    },
    outcome: "succeeded",
    family: "claude.ai",
    steps: ok(["probe", "protected_resource_metadata", "authorization_server_metadata", "authorize", "callback", "token", "initialize"]),
  },
  {
    name: "Token rejected with invalid_grant",
    run: (w) => void new Connector(w, CLAUDE).probe().discover().register().authorize().consent().token("invalid_grant"),
    after: 5 * SECOND,
    outcome: "failed",
    failedStep: "token",
    family: "claude.ai",
    steps: [...ok(OAUTH_STEPS.slice(0, -1)), "token:failed"],
  },
  {
    name: "PRM 404 at both well-known variants",
    run: (w) => void new Connector(w, CLAUDE).probe().discover([["path", 404], ["root", 404]]),
    after: MINUTE,
    outcome: "failed",
    failedStep: "protected_resource_metadata",
    steps: ["probe:ok", "protected_resource_metadata:failed"],
  },
  {
    name: "A 401 probe without a challenge, then well-known discovery: the probe failed, the handshake goes on",
    run: (w) => {
      const c = new Connector(w, CLAUDE);
      w.send(CLAUDE.backend, { ...http.probe("Anthropic"), res: [JSON_TYPE] });
      c.discover();
    },
    outcome: "in_progress",
    failedStep: "probe",
    steps: ["probe:failed", "protected_resource_metadata:ok", "authorization_server_metadata:ok"],
  },
  {
    name: "The user denies consent",
    run: (w) => void new Connector(w, CHATGPT).probe().discover().register().authorize().consent("deny"),
    outcome: "failed",
    failedStep: "callback",
    steps: [...ok(OAUTH_STEPS.slice(0, 5)), "callback:failed"],
  },
  {
    name: "Registration rejected",
    run: (w) => void new Connector(w, CLAUDE).probe().discover().register(400),
    outcome: "failed",
    failedStep: "registration",
    steps: [...ok(OAUTH_STEPS.slice(0, 3)), "registration:failed"],
  },
  {
    name: "Token issued, then the authenticated initialize gets 401 (audience mismatch)",
    run: (w) => void new Connector(w, CLAUDE).oauth().initialize(401),
    outcome: "failed",
    failedStep: "initialize",
    steps: [...ok(OAUTH_STEPS), "initialize:failed"],
  },
  {
    name: "The user never finishes the browser step: still in progress a minute later",
    run: (w) => void new Connector(w, CLAUDE).probe().discover().register().authorize(),
    after: MINUTE,
    outcome: "in_progress",
    steps: ok(OAUTH_STEPS.slice(0, 5)),
  },
  {
    name: "The user never finishes the browser step: abandoned a quarter of an hour later",
    run: (w) => void new Connector(w, CLAUDE).probe().discover().register().authorize(),
    after: 15 * MINUTE,
    outcome: "abandoned",
    steps: ok(OAUTH_STEPS.slice(0, 5)),
  },
  {
    name: "An authless server: the probe's 200 is the initialize",
    run: (w) => {
      const peer = CLAUDE.backend;
      w.send(peer, http.probe("Anthropic", "authless", "sess-authless"));
      w.send(peer, http.rpcAnswer({ body: json({ jsonrpc: "2.0", method: "notifications/initialized" }), session: "sess-authless", status: 202 }));
      w.send(peer, http.rpcAnswer({ body: rpc(1, "tools/list"), session: "sess-authless", status: 200, result: { tools: [] } }));
    },
    outcome: "succeeded",
    family: "claude.ai",
    steps: ok(["probe", "initialize", "initialized", "list"]),
  },
  {
    name: "A tracker started after the token was issued: the handshake starts at the tool calls",
    run: (w) => {
      const c = new Connector(w, CLAUDE);
      c.access = secret();
      c.call("tools/call", { name: "search" }).call("tools/list");
    },
    outcome: "succeeded",
    steps: ok(["tool_call", "list"]),
  },
  {
    name: "The MCP Inspector in the browser: preflights stand for the requests they precede",
    run: (w) => {
      const browser = INSPECTOR.browser;
      const preflight = (path: string, method: string, headers: string) => http.preflight(INSPECTOR_ORIGIN, path, method, headers);
      const c = new Connector(w, INSPECTOR);
      w.send(browser, preflight("/mcp", "POST", "content-type"));
      c.probe();
      w.send(browser, preflight("/.well-known/oauth-protected-resource/mcp", "GET", "mcp-protocol-version"));
      c.discover().register().authorize().consent();
      w.send(browser, preflight("/token", "POST", "content-type"));
      c.token();
      w.send(browser, preflight("/mcp", "POST", "authorization, content-type"));
      c.initialize();
      w.send(browser, preflight("/mcp", "POST", "authorization, content-type, mcp-protocol-version, mcp-session-id"));
      c.initialized();
    },
    outcome: "succeeded",
    family: "mcp-inspector",
    steps: ok([...OAUTH_STEPS, "initialize", "initialized"]),
  },
  {
    name: "A browser client whose probe preflight is refused: failed at the probe",
    run: (w) => {
      w.send(browserAt("192.0.2.81"), {
        method: "OPTIONS",
        path: "/mcp",
        req: [["origin", "http://localhost:6274"], ["access-control-request-method", "POST"], ["access-control-request-headers", "content-type"]],
        status: 204,
      });
    },
    after: 30 * SECOND,
    outcome: "failed",
    failedStep: "probe",
    steps: ["probe:failed"],
  },
  {
    name: "A browser client whose initialize preflight answers 204 without allowing Authorization: failed at initialize",
    run: (w) => {
      w.send(INSPECTOR.browser, http.preflight(INSPECTOR_ORIGIN, "/mcp", "POST", "content-type"));
      new Connector(w, INSPECTOR).oauth();
      w.send(INSPECTOR.browser, http.preflight(INSPECTOR_ORIGIN, "/mcp", "POST", "authorization", "content-type"));
    },
    outcome: "failed",
    failedStep: "initialize",
    family: "mcp-inspector",
    steps: [...ok(OAUTH_STEPS), "initialize:failed"],
  },
  {
    name: "A preflight answered ok is not the initialize: without the POST the handshake has not succeeded",
    run: (w) => {
      w.send(INSPECTOR.browser, http.preflight(INSPECTOR_ORIGIN, "/mcp", "POST", "content-type"));
      new Connector(w, INSPECTOR).oauth();
      w.send(INSPECTOR.browser, http.preflight(INSPECTOR_ORIGIN, "/mcp", "POST", "authorization"));
    },
    outcome: "in_progress",
    steps: ok([...OAUTH_STEPS, "initialize"]),
  },
  {
    name: "A browser that cannot read Mcp-Session-Id: its preflight for mcp-protocol-version alone joins after initialize",
    run: (w) => {
      const preflight = (headers: string) => w.send(INSPECTOR.browser, http.preflight(INSPECTOR_ORIGIN, "/mcp", "POST", headers));
      const c = new Connector(w, INSPECTOR);
      preflight("content-type");
      c.oauth();
      preflight("authorization");
      c.initialize();
      preflight("content-type,mcp-protocol-version");
      c.initialized(202, undefined);
    },
    outcome: "succeeded",
    family: "mcp-inspector",
    steps: ok([...OAUTH_STEPS, "initialize", "initialized"]),
  },
  {
    name: "notifications/initialized answered 404 Session not found after a good initialize: failed at initialized",
    run: (w) => void new Connector(w, CHATGPT).oauth().initialize().initialized(404),
    outcome: "failed",
    failedStep: "initialized",
    steps: [...ok([...OAUTH_STEPS, "initialize"]), "initialized:failed"],
  },
  {
    name: "The first tools/list answered 400 (session missing): failed at list",
    run: (w) => void new Connector(w, CLAUDE).oauth().initialize().initialized().call("tools/list", {}, 400),
    outcome: "failed",
    failedStep: "list",
    steps: [...ok([...OAUTH_STEPS, "initialize", "initialized"]), "list:failed"],
  },
  {
    name: "The session lost during tool calls, after a good tools/list: still succeeded",
    run: (w) => void new Connector(w, CLAUDE).connect().call("tools/list", {}, 404).call("tools/call", { name: "search" }, 404),
    outcome: "succeeded",
    steps: [...ok(CONNECTED_STEPS.slice(0, -2)), "list:failed", "tool_call:failed"],
  },
  {
    name: "The consent POST answered with a 307 to the callback (replaying the POST): the callback failed",
    run: (w) => void new Connector(w, CLAUDE).probe().discover().register().authorize().consent("approve", 307),
    outcome: "failed",
    failedStep: "callback",
    steps: [...ok(OAUTH_STEPS.slice(0, 5)), "callback:failed"],
  },
  {
    name: "Consent remembered, the authorize GET answered 308 with the code: authorize ok, the callback failed",
    run: (w) => {
      const c = new Connector(w, CLAUDE).probe().discover().register();
      c.code = secret();
      const location = `${CLAUDE.redirectUri}?${form({ code: c.code, state: c.state })}`;
      w.wait(2 * SECOND).send(CLAUDE.browser, { ...http.authorize(c.clientId, CLAUDE.redirectUri, c.state), status: 308, res: [["location", location]], reply: undefined });
    },
    outcome: "failed",
    failedStep: "callback",
    steps: [...ok(OAUTH_STEPS.slice(0, 5)), "callback:failed"],
  },
];

describe("one connector handshake", () => {
  it.each(scenarios)("$name", (scenario) => {
    const w = new Wire();
    scenario.run(w);
    const { tracker, ids } = track(w.exchanges);
    const h = only(tracker.snapshot(lastAt(w) + (scenario.after ?? SECOND)));
    expect(ids.every((id) => id === h.id)).toBe(true);
    expect(stepList(h)).toEqual(scenario.steps);
    expect(h.outcome).toBe(scenario.outcome);
    expect(h.failedStep).toBe(scenario.failedStep ?? null);
    if (scenario.family) expect(h.clientFamily).toBe(scenario.family);
    if (scenario.clientName) expect(h.clientName).toBe(scenario.clientName);
    expect(h.id).toBe(w.exchanges[0]!.id);
    expect(h.exchangeIds).toEqual(w.exchanges.map((e) => e.id));
    expect(h.startedAt).toBe(w.exchanges[0]!.startedAt);
    expect(h.endedAt).toBe(lastAt(w) + w.exchanges.at(-1)!.durationMs!);
    expect(h.diagnoses).toEqual([]);
  });

  it("records each exchange in its step, in first-reached order, retried variants appended", () => {
    const w = new Wire();
    new Connector(w, CHATGPT).probe().discover([["path", 404], ["root", 200]]);
    const [probe, pathForm, rootForm, as] = w.exchanges;
    const h = only(track(w.exchanges).tracker.snapshot(w.now));
    expect(h.steps).toEqual([
      { step: "probe", status: "ok", exchangeIds: [probe!.id], at: probe!.startedAt },
      { step: "protected_resource_metadata", status: "ok", exchangeIds: [pathForm!.id, rootForm!.id], at: pathForm!.startedAt },
      { step: "authorization_server_metadata", status: "ok", exchangeIds: [as!.id], at: as!.startedAt },
    ]);
  });

  it("gives a failing discovery document a moment for the client's next variant before calling it failed", () => {
    const w = new Wire();
    new Connector(w, CLAUDE).probe().discover([["path", 404]]); // the root form has not come yet
    const tracker = track(w.exchanges).tracker;
    const h = only(tracker.snapshot(lastAt(w) + SECOND));
    expect([h.outcome, h.failedStep]).toEqual(["in_progress", "protected_resource_metadata"]);
    expect(only(tracker.snapshot(lastAt(w) + 30 * SECOND)).outcome).toBe("failed");
  });
});

// ---------------------------------------------------------------------------------------------
// Several handshakes

describe("telling handshakes apart", () => {
  it("keeps two concurrent connectors from different addresses apart, step for step interleaved", () => {
    const w = new Wire();
    const claude = new Connector(w, CLAUDE);
    const chatgpt = new Connector(w, CHATGPT);
    claude.probe();
    chatgpt.probe();
    claude.discover();
    chatgpt.discover();
    claude.register();
    chatgpt.register();
    chatgpt.authorize();
    claude.authorize();
    claude.consent();
    chatgpt.consent();
    chatgpt.token();
    claude.token();
    claude.initialize();
    chatgpt.initialize();
    const from = (p: Profile) => w.exchanges.filter((e) => [p.backend.addr, p.browser.addr].includes(e.clientAddr!)).map((e) => e.id);

    const handshakes = track(w.exchanges).tracker.snapshot(w.now);
    expect(handshakes.map((h) => [h.clientFamily, h.outcome])).toEqual([
      ["claude.ai", "succeeded"],
      ["chatgpt", "succeeded"],
    ]);
    expect(handshakes[0]!.exchangeIds).toEqual(from(CLAUDE));
    expect(handshakes[1]!.exchangeIds).toEqual(from(CHATGPT));
  });

  it("joins a local client's browser to the handshake from its own address, though another awaits authorization", () => {
    const w = new Wire();
    const local = new Connector(w, CLAUDE_CODE);
    local.clientId = "https://claude.ai/oauth/claude-code-client-metadata";
    local.probe().discover();
    const hosted = new Connector(w, CLAUDE);
    hosted.clientId = "claude-static";
    hosted.probe().discover();
    local.authorize().consent().token().initialize();
    const handshakes = track(w.exchanges).tracker.snapshot(w.now);
    expect(handshakes.map((h) => [h.clientFamily, h.outcome])).toEqual([
      ["claude-code", "succeeded"],
      ["claude.ai", "in_progress"],
    ]);
  });

  it("starts a new handshake when the client retries after a failure", () => {
    const w = new Wire();
    const first = w.mark();
    new Connector(w, CLAUDE).probe().discover().register().authorize().consent().token("invalid_grant");
    const firstIds = first();
    w.wait(20 * SECOND);
    new Connector(w, CLAUDE).connect();

    const handshakes = track(w.exchanges).tracker.snapshot(w.now);
    expect(handshakes.map((h) => [h.outcome, h.failedStep])).toEqual([
      ["failed", "token"],
      ["succeeded", null],
    ]);
    expect(handshakes[0]!.exchangeIds).toEqual(firstIds);
  });

  it("starts a new handshake when the client probes again after failing discovery", () => {
    const w = new Wire();
    new Connector(w, CLAUDE).probe().discover([["path", 404], ["root", 404]]);
    w.wait(30 * SECOND);
    new Connector(w, CLAUDE).probe().discover();
    const handshakes = track(w.exchanges).tracker.snapshot(w.now + MINUTE);
    expect(handshakes.map((h) => h.outcome)).toEqual(["failed", "in_progress"]);
  });

  it("keeps a client repeating its probe in the same handshake", () => {
    const w = new Wire();
    new Connector(w, CLAUDE).probe().probe().discover();
    only(track(w.exchanges).tracker.snapshot(w.now));
  });

  it("joins a refresh hours later to the original handshake, and the calls with the new token", () => {
    const w = new Wire();
    const c = new Connector(w, CLAUDE).connect();
    w.wait(3 * HOUR);
    c.refresh().call("tools/call", { name: "search" });
    const h = only(track(w.exchanges).tracker.snapshot(w.now));
    expect(h.steps.map((s) => s.step)).toEqual([...CONNECTED_STEPS, "refresh"]);
    expect(h.steps.find((s) => s.step === "tool_call")!.exchangeIds).toHaveLength(2);
    expect(h.exchangeIds).toEqual(w.exchanges.map((e) => e.id));
  });

  it("resumes a handshake closed as idle when its refresh token comes back, with all its steps", () => {
    const w = new Wire();
    const c = new Connector(w, CLAUDE).connect();
    const tracker = new HandshakeTracker();
    for (const e of w.exchanges) tracker.add(e);
    const closed = only(tracker.evictIdle(w.now + HOUR));
    expect(closed.outcome).toBe("succeeded");
    expect(tracker.snapshot(w.now + HOUR)).toEqual([]);

    w.wait(3 * HOUR);
    c.refresh();
    const { handshakeId, updated } = tracker.add(w.exchanges.at(-1)!);
    expect(handshakeId).toBe(closed.id);
    expect(stepList(only(updated))).toEqual([...stepList(closed), "refresh:ok"]);
  });

  it("joins tool calls on a session, long after the probe, by the session id alone", () => {
    const w = new Wire();
    const peer = CLAUDE.backend;
    w.send(peer, http.probe("Anthropic", "authless", "sess-7"));
    w.wait(20 * MINUTE);
    w.send(peer, http.rpcAnswer({ body: rpc(5, "tools/call", { name: "search" }), session: "sess-7", status: 200, result: { content: [] } }));
    const h = only(track(w.exchanges).tracker.snapshot(w.now));
    expect(stepList(h)).toEqual(ok(["probe", "initialize", "tool_call"]));
  });

  it("takes a preflight for a request after initialize only into the handshake of its client and Origin, never as a new one", () => {
    const w = new Wire();
    w.send(INSPECTOR.browser, http.preflight(INSPECTOR_ORIGIN, "/mcp", "POST", "content-type"));
    new Connector(w, INSPECTOR).oauth().initialize();
    w.send(INSPECTOR.browser, http.preflight("https://elsewhere.example", "/mcp", "POST", "mcp-protocol-version"));
    w.send(browserAt("192.0.2.99"), http.preflight(INSPECTOR_ORIGIN, "/mcp", "POST", "mcp-protocol-version, mcp-session-id"));
    const { tracker, ids } = track(w.exchanges);
    expect(ids.slice(-2)).toEqual([null, null]);
    expect(stepList(only(tracker.snapshot(w.now)))).toEqual(ok([...OAUTH_STEPS, "initialize"]));
  });

  it("does not draw a new attempt from a shared address into a connected session's traffic", () => {
    const w = new Wire();
    const connected = new Connector(w, CLAUDE).connect();
    new Connector(w, CLAUDE).probe();
    connected.call("tools/call", { name: "search" });
    // Same address, a user agent only the connected session used: the address leads to the new attempt.
    w.send(CLAUDE.mcp!, http.prm("path"));
    const handshakes = track(w.exchanges).tracker.snapshot(w.now);
    expect(handshakes.map(stepList)).toEqual([ok([...CONNECTED_STEPS]), ok(["probe", "protected_resource_metadata"])]);
  });
});

describe("which exchanges belong to handshakes", () => {
  it("leaves out health checks, websockets and unrelated requests", () => {
    const w = new Wire();
    const peer = CLAUDE.backend;
    w.send(peer, { path: "/healthz", status: 200, reply: "ok" });
    w.send(peer, { path: "/favicon.ico", status: 404 });
    w.send(peer, { method: "OPTIONS", path: "/api/widgets", req: [["access-control-request-method", "POST"]], status: 204 });
    w.send(peer, { method: "POST", path: "/revoke", req: [FORM_TYPE], body: form({ token: secret() }), status: 200 });
    const { tracker, ids } = track(w.exchanges);
    expect(ids).toEqual([null, null, null, null]);
    expect(tracker.snapshot(w.now)).toEqual([]);
  });

  it("attaches a request gone astray with the connector's bearer token", () => {
    const w = new Wire();
    const c = new Connector(w, CLAUDE).oauth();
    // A plain GET on the MCP path, neither JSON-RPC nor a stream: the classifier calls it `other`.
    const astray = w.send(CLAUDE.mcp!, { path: "/mcp", req: [["authorization", `Bearer ${c.access}`], ["accept", "application/json"]], status: 404 });
    expect(astray.kind).toBe("other");
    const h = only(track(w.exchanges).tracker.snapshot(w.now));
    expect(stepList(h)).toEqual([...ok(OAUTH_STEPS), "stream:failed"]);
    expect(h.outcome).toBe("failed");
  });
});

// ---------------------------------------------------------------------------------------------
// Batch and memory

describe("groupHandshakes", () => {
  it("gives what the tracker gives exchange by exchange, whatever order the rows come in", () => {
    const w = new Wire();
    const claude = new Connector(w, CLAUDE);
    const chatgpt = new Connector(w, CHATGPT);
    claude.probe().discover();
    chatgpt.probe().discover([["path", 404], ["root", 200]]).register();
    claude.register().authorize();
    chatgpt.authorize().consent("deny");
    claude.consent().token().initialize().initialized();
    new Connector(w, CLAUDE_CODE).probe().discover().register().authorize();
    w.wait(2 * HOUR);
    claude.refresh().call("tools/list");
    new Connector(w, CHATGPT).probe().discover([["path", 404], ["root", 404]]);

    const now = w.now + 5 * MINUTE;
    const incremental = track(w.exchanges).tracker.snapshot(now);
    const shuffled = [...w.exchanges].sort((a, b) => ((a.id * 7919) % 13) - ((b.id * 7919) % 13));
    expect(groupHandshakes(shuffled, now)).toEqual(incremental);
    expect(incremental.map((h) => [h.clientFamily, h.outcome])).toEqual([
      ["claude.ai", "succeeded"],
      ["chatgpt", "failed"],
      ["claude-code", "abandoned"],
      ["chatgpt", "failed"],
    ]);
  });
});

describe("evictIdle", () => {
  it("closes idle handshakes with their final outcome and forgets them", () => {
    const w = new Wire();
    new Connector(w, CLAUDE).probe().discover().register().authorize();
    const tracker = track(w.exchanges).tracker;
    expect(tracker.evictIdle(w.now + 10 * MINUTE).map((h) => h.outcome)).toEqual(["abandoned"]); // time changed it
    expect(tracker.evictIdle(w.now + 11 * MINUTE)).toEqual([]); // nothing new
    const closed = only(tracker.evictIdle(w.now + HOUR));
    expect(closed.outcome).toBe("abandoned");
    expect(tracker.snapshot(w.now + HOUR)).toEqual([]);

    // Its keys went with it: the same client's discovery starts afresh.
    w.wait(HOUR);
    new Connector(w, CLAUDE).discover();
    const { handshakeId } = tracker.add(w.exchanges.at(-1)!);
    expect(handshakeId).not.toBe(closed.id);
  });

  it("reports a discovery failure once the client's next variant did not come", () => {
    const w = new Wire();
    new Connector(w, CLAUDE).probe().discover([["path", 404], ["root", 404]]);
    const tracker = new HandshakeTracker();
    const outcomes = w.exchanges.map((e) => tracker.add(e).updated[0]!.outcome);
    expect(outcomes).toEqual(["in_progress", "in_progress", "in_progress"]);
    expect(tracker.evictIdle(lastAt(w) + 30 * SECOND).map((h) => [h.outcome, h.failedStep])).toEqual([["failed", "protected_resource_metadata"]]);
  });

  it("holds at most maxOpen handshakes, closing the least recently active", () => {
    const tracker = new HandshakeTracker({ maxOpen: 2 });
    const w = new Wire();
    const peers = ["192.0.2.1", "192.0.2.2", "192.0.2.3"].map((addr) => ({ addr, ua: "python-httpx/0.28.1" }));
    const results = peers.map((peer) => tracker.add(w.send(peer, http.probe("Anthropic"))));
    expect(tracker.snapshot(w.now).map((h) => h.id)).toEqual([results[1]!.handshakeId, results[2]!.handshakeId]);
    expect(results[2]!.updated.map((h) => h.id)).toEqual([results[2]!.handshakeId, results[0]!.handshakeId]);
  });

  it("keeps at most maxDormant closed handshakes to resume", () => {
    const tracker = new HandshakeTracker({ maxDormant: 1 });
    const w = new Wire();
    const first = new Connector(w, CLAUDE).connect();
    w.wait(10 * SECOND);
    new Connector(w, CHATGPT).connect();
    for (const e of w.exchanges) tracker.add(e);
    expect(tracker.evictIdle(w.now + HOUR)).toHaveLength(2);

    first.refresh(); // its handshake was dropped for the newer one: the refresh starts afresh
    const refreshed = tracker.add(w.exchanges.at(-1)!);
    expect(stepList(only(refreshed.updated))).toEqual(["refresh:ok"]);
  });

  it("bounds what one long session holds, keeping its start and its latest calls", () => {
    const w = new Wire();
    const c = new Connector(w, CLAUDE).connect();
    for (let i = 0; i < 1_500; i++) c.call("tools/call", { name: "search" });
    const h = only(track(w.exchanges).tracker.snapshot(w.now));
    const all = w.exchanges.map((e) => e.id);
    expect(h.exchangeIds).toHaveLength(1_000);
    expect(h.exchangeIds.slice(0, 500)).toEqual(all.slice(0, 500));
    expect(h.exchangeIds.slice(-500)).toEqual(all.slice(-500));
    const calls = h.steps.find((s) => s.step === "tool_call")!.exchangeIds;
    expect(calls).toHaveLength(100);
    expect(calls.at(-1)).toBe(all.at(-1));
  });
});

describe("identity across the handshake", () => {
  it("recomputes the client family as signals arrive", () => {
    const w = new Wire();
    const c = new Connector(w, { ...CLAUDE, clientInfo: "acme-agent", backend: { addr: "192.0.2.9", ua: "python-httpx/0.28.1" }, mcp: undefined });
    const tracker = new HandshakeTracker();
    c.probe();
    // python-httpx speaking MCP with a clientInfo nothing else names: an application on the Python SDK.
    expect(tracker.add(w.exchanges.at(-1)!).updated[0]!.clientFamily).toBe("python-sdk");
    c.register();
    expect(tracker.add(w.exchanges.at(-1)!).updated[0]!.clientFamily).toBe("claude.ai"); // the claude.ai callback
  });

  it("follows the fingerprints the classifier read", () => {
    const w = new Wire();
    const c = new Connector(w, CLAUDE).oauth();
    const token = w.exchanges.at(-1)!;
    expect(token.facts.issued?.accessToken).toBe(fingerprint(c.access));
    expect(token.facts.codeFingerprint).toBe(fingerprint(c.code));
  });
});
