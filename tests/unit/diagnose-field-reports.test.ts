// The field-report rules (analysis/diagnose/field-reports.ts): each fires on realistic traffic that
// shows it, with the right evidence, headline, summary, fix and severity, and stays silent on the
// near misses and on healthy handshakes of both eras.
import { describe, expect, it } from "vitest";
import { diagnose, explainCode } from "../../analysis/diagnose/index.js";
import { parseChallenges, TOOL_SCHEMA_LIMIT_BYTES } from "../../analysis/diagnose/field-reports.js";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import { FIELD_REPORT_CODES, type Diagnosis, type DiagnosisCode, type HandshakeOutcome, type HandshakeStep } from "../../analysis/handshake.js";
import {
  CHATGPT,
  CLAUDE,
  CLAUDE_CODE,
  CLAUDE_MODERN,
  CLIENT_ID,
  codes,
  type Flow,
  type Tweak,
  flow,
  FP,
  INSPECTOR,
  json,
  JSON_TYPE,
  marker,
  MCP_REMOTE,
  PRM,
  rpcError,
  sse,
  V2_SDK,
} from "../helpers/diagnose-flow.js";

const FIELD_CODES: readonly DiagnosisCode[] = FIELD_REPORT_CODES;

/** Diagnoses of the flow, with the outcome the grouping would give (failed when a step is named). */
function run(f: Flow, failed: HandshakeStep | null, outcome?: HandshakeOutcome): Diagnosis[] {
  const handshake = f.handshake(failed);
  return diagnose(outcome ? { ...handshake, outcome } : handshake, f.exchanges);
}

function only(ds: Diagnosis[], code: DiagnosisCode): Diagnosis {
  const d = ds.find((x) => x.code === code);
  if (!d) throw new Error(`${code} did not fire: ${codes(ds).join(", ") || "nothing"}`);
  expect(d.reference).toBe(explainCode(code).reference);
  expect(d.fix.length).toBeGreaterThan(20);
  return d;
}

const idsOf = (...es: ClassifiedExchange[]) => es.map((e) => e.id).sort((a, b) => a - b);

/** Probe to consent, healthy: the token call is the case's. */
function uptoToken(f: Flow): ClassifiedExchange {
  f.probe();
  f.prm();
  f.asMetadata();
  const r = f.register();
  f.authorize();
  f.consent();
  return r;
}

const oauthError = (status: number, error: string, description: string) => ({
  status,
  resWithout: ["content-type", "cache-control"],
  res: [JSON_TYPE],
  reply: json({ error, error_description: description }),
});

// ---------------------------------------------------------------------------------------------

describe("healthy handshakes carry none of these codes", () => {
  const flows: Array<[string, () => Flow]> = [
    ["Claude.ai", () => flow(CLAUDE).authorizeAll().session()],
    ["ChatGPT", () => flow(CHATGPT).authorizeAll().session()],
    ["Claude Code", () => flow(CLAUDE_CODE).authorizeAll().session()],
    ["MCP Inspector", () => flow(INSPECTOR).authorizeAll().session()],
    ["mcp-remote", () => flow(MCP_REMOTE).authorizeAll().session()],
    ["a modern client with CIMD", () => flow(V2_SDK).modernAuthorizeAll().modernSession()],
    ["Claude.ai, modern era, DCR", () => flow(CLAUDE_MODERN).modernAuthorizeAll({ cimd: false }).modernSession()],
    [
      "Claude.ai, then one refresh and more calls",
      () => {
        const f = flow(CLAUDE).authorizeAll().session();
        f.refresh();
        return f;
      },
    ],
  ];

  it.each(flows)("%s", (_name, build) => {
    const f = build();
    expect(codes(run(f, null))).toEqual([]);
    // A session that went quiet is no abandonment after the token: MCP requests came.
    expect(codes(run(f, null, "abandoned")).filter((c) => FIELD_CODES.includes(c))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe("token_auth_method_mismatch", () => {
  it("the server registered client_secret_basic when the client asked for client_secret_post, which it then uses", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata();
    const r = f.register({
      reply: json({
        client_id: CLIENT_ID,
        client_secret: marker(FP.secret),
        redirect_uris: [CLAUDE.callback],
        token_endpoint_auth_method: "client_secret_basic",
      }),
    });
    f.authorize();
    f.consent();
    const t = f.token(oauthError(401, "invalid_client", "Client authentication failed"));
    const ds = run(f, "token");
    // One headline: token_request_rejected stays silent when the cause is certain.
    expect(codes(ds)).toEqual(["token_auth_method_mismatch"]);
    const d = only(ds, "token_auth_method_mismatch");
    expect(d.severity).toBe("error");
    expect(d.evidence).toEqual(idsOf(r, t));
    expect(d.summary).toContain("POST /token (#7) authenticated the client with client_secret_post");
    expect(d.summary).toContain("recorded token_endpoint_auth_method=client_secret_basic (the client had asked for client_secret_post)");
    expect(d.summary).toContain('answered 401 "invalid_client: Client authentication failed"');
    expect(d.fix).toContain("register the method the client asked for (client_secret_post)");
    expect(d.fix).toContain("Authorization: Basic");
  });

  it("a public client (none) that sends an HTTP Basic header", () => {
    const f = flow(CHATGPT);
    const r = uptoToken(f);
    const t = f.token({
      req: [["Authorization", `Basic ${marker("ba51c0de")}`]],
      ...oauthError(400, "invalid_client", "client authentication method mismatch"),
    });
    const ds = run(f, "token");
    expect(codes(ds)).toEqual(["token_auth_method_mismatch"]);
    const d = only(ds, "token_auth_method_mismatch");
    expect(d.evidence).toEqual(idsOf(r, t));
    expect(d.summary).toContain("client_secret_basic (an Authorization: Basic header)");
    expect(d.summary).toContain("token_endpoint_auth_method=none");
    expect(d.fix).toContain("send only client_id");
  });

  it("the registration echoed client_secret_post but the server stored client_secret_basic: its error says so", () => {
    const f = flow(CLAUDE);
    const r = uptoToken(f);
    const t = f.token(
      oauthError(401, "invalid_client", "client authentication failed: this client is registered for client_secret_basic, not client_secret_post"),
    );
    const ds = run(f, "token");
    expect(codes(ds)).toEqual(["token_auth_method_mismatch"]);
    const d = only(ds, "token_auth_method_mismatch");
    expect(d.evidence).toEqual(idsOf(r, t));
    expect(d.summary).toContain("the token endpoint says the client is registered for client_secret_basic");
    expect(d.summary).toContain("although the registration response POST /register (#4) said token_endpoint_auth_method=client_secret_post");
    expect(d.fix).toContain("store the token_endpoint_auth_method the client registered (client_secret_post)");
    expect(d.fix).toContain("client: send Authorization: Basic");
  });

  it("near miss: an error that lists the supported methods, the one used among them", () => {
    const f = flow(CLAUDE);
    uptoToken(f);
    f.token(oauthError(401, "invalid_client", "bad credentials (supported: client_secret_basic, client_secret_post)"));
    expect(codes(run(f, "token"))).toEqual(["token_request_rejected"]);
  });

  it("a pre-registered client whose method the metadata does not support", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    const a = f.asMetadata({ reply: json(f.asDoc({ token_endpoint_auth_methods_supported: ["client_secret_basic"] })) });
    f.authorize();
    f.consent();
    const t = f.token(oauthError(401, "invalid_client", "Client authentication failed"));
    const ds = run(f, "token");
    expect(codes(ds)).toEqual(["token_auth_method_mismatch"]);
    const d = only(ds, "token_auth_method_mismatch");
    expect(d.evidence).toEqual(idsOf(a, t));
    expect(d.summary).toContain("supports only client_secret_basic");
    expect(d.fix).toContain("token_endpoint_auth_methods_supported");
  });

  it("near miss: the client authenticates as registered, the server still refuses: token_request_rejected alone", () => {
    const f = flow(CLAUDE);
    uptoToken(f);
    f.token(oauthError(401, "invalid_client", "Client authentication failed"));
    expect(codes(run(f, "token"))).toEqual(["token_request_rejected"]);
  });

  it("near miss: a registration that names no method proves nothing", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata();
    f.register({
      body: json({ client_name: "Claude", redirect_uris: [CLAUDE.callback] }),
      reply: json({ client_id: CLIENT_ID, client_secret: marker(FP.secret), redirect_uris: [CLAUDE.callback] }),
    });
    f.authorize();
    f.consent();
    f.token(oauthError(401, "invalid_client", "Client authentication failed"));
    expect(codes(run(f, "token"))).toEqual(["token_request_rejected"]);
  });
});

// ---------------------------------------------------------------------------------------------

describe("stale_client_registration", () => {
  it("a cached client_id the authorization server no longer knows, at /authorize", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata();
    const a = f.authorize(oauthError(400, "invalid_client", "Client not found"));
    const ds = run(f, "authorize");
    expect(codes(ds)).toEqual(["stale_client_registration"]);
    const d = only(ds, "stale_client_registration");
    expect(d.severity).toBe("error");
    expect(d.evidence).toEqual(idsOf(a));
    expect(d.summary).toContain(`GET /authorize (#4) answered 400 "invalid_client: Client not found" for client_id ${CLIENT_ID}`);
    expect(d.summary).toContain("never registered");
    expect(d.summary).toContain("probably a client_id the client stored");
    expect(d.summary).toContain("did not register again");
    expect(d.fix).toContain("register again");
    expect(d.fix).toContain("shared by every replica");
  });

  it("a refresh weeks after the registration: the server pruned it", () => {
    const f = flow(CLAUDE);
    const r = uptoToken(f);
    const t = f.token();
    f.session();
    const refresh = f.refresh({ gap: 30 * 86_400_000, ...oauthError(401, "invalid_client", `unknown client_id ${CLIENT_ID}`) });
    const ds = run(f, "refresh");
    expect(codes(ds)).toEqual(["stale_client_registration", "refresh_token_missing"]);
    const d = only(ds, "stale_client_registration");
    // The consent delivered a code for it: the authorization server knew the client then.
    expect(d.evidence).toEqual(idsOf(r, f.exchanges[5]!, refresh));
    expect(d.summary).toContain(`POST /token (#${refresh.id}) answered 401 "invalid_client: unknown client_id ${CLIENT_ID}"`);
    expect(d.summary).toContain("POST /register (#4) registered 30 days earlier and the authorization server accepted at POST /authorize (#6)");
    expect(d.summary).toContain("since forgotten it");
    expect(t.id).toBe(7);
  });

  it("a token call with a client_id registered at another authorization server", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata();
    const r = f.register({ req: [["X-Forwarded-Host", "old-auth.example.com"]] });
    f.authorize();
    f.consent();
    const t = f.token(oauthError(401, "invalid_client", "Client ID not found"));
    const ds = run(f, "token");
    expect(codes(ds)).toEqual(["stale_client_registration"]);
    const d = only(ds, "stale_client_registration");
    expect(d.evidence).toEqual(idsOf(r, t));
    expect(d.summary).toContain("at another authorization server (old-auth.example.com)");
  });

  it("near misses: a registration just made, a client that re-registers, a failed client authentication", () => {
    // Registered a moment ago and never used: not a stale registration kept by the client.
    const fresh = flow(CLAUDE);
    fresh.probe();
    fresh.prm();
    fresh.asMetadata();
    fresh.register();
    fresh.authorize(oauthError(400, "invalid_client", "Client not found"));
    expect(codes(run(fresh, "authorize"))).not.toContain("stale_client_registration");

    // The client re-registers on invalid_client: it got past it.
    const recovers = flow(CLAUDE);
    recovers.probe();
    recovers.prm();
    recovers.asMetadata();
    recovers.authorize(oauthError(400, "invalid_client", "Client not found"));
    recovers.register({}, "client-new");
    recovers.authorize({}, { client_id: "client-new" });
    expect(codes(run(recovers, null, "in_progress"))).not.toContain("stale_client_registration");

    // invalid_client for the credentials, not the client id.
    const auth = flow(CLAUDE);
    auth.probe();
    auth.prm();
    auth.asMetadata();
    auth.authorize();
    auth.consent();
    auth.token(oauthError(401, "invalid_client", "Client authentication failed"));
    expect(codes(run(auth, "token"))).toEqual(["token_request_rejected"]);
  });
});

// ---------------------------------------------------------------------------------------------

describe("refresh_token_replayed", () => {
  it("a second refresh with the rotated-away token 1.5 s later gets invalid_grant", () => {
    const f = flow(CLAUDE).authorizeAll().session();
    const a = f.refresh({ gap: 3_600_000 });
    const b = f.refresh({ gap: 1_485, ...oauthError(400, "invalid_grant", "refresh token already used") });
    const ds = run(f, "refresh");
    expect(codes(ds)).toEqual(["refresh_token_replayed", "refresh_token_missing"]);
    const d = only(ds, "refresh_token_replayed");
    expect(d.severity).toBe("error");
    expect(d.evidence).toEqual(idsOf(a, b));
    expect(d.summary).toContain(`same refresh token (fingerprint ${FP.refresh}) 1.5 s apart`);
    expect(d.summary).toContain(`POST /token (#${a.id}) redeemed it and rotated it (a new refresh token was issued)`);
    expect(d.summary).toContain(`and POST /token (#${b.id}) got "invalid_grant: refresh token already used"`);
    expect(d.summary).toContain("sign in again");
    expect(d.fix).toContain("grace period");
    expect(d.fix).toContain("one refresh at a time");
  });

  it("concurrent refreshes: the second starts while the first is in flight", () => {
    const f = flow(CLAUDE).authorizeAll().session();
    const a = f.refresh({ gap: 3_600_000, durationMs: 800 });
    const b = f.refresh(oauthError(400, "invalid_grant", "Invalid refresh token"));
    (b as { startedAt: number }).startedAt = a.startedAt + 40;
    const d = only(run(f, "refresh"), "refresh_token_replayed");
    expect(d.summary).toContain("apart, concurrently:");
    expect(d.evidence).toEqual(idsOf(a, b));
  });

  it("near misses: one failing refresh, the same token 60 s apart, two successful refreshes", () => {
    const single = flow(CLAUDE).authorizeAll().session();
    single.refresh(oauthError(400, "invalid_grant", "refresh token expired"));
    expect(codes(run(single, "refresh"))).toEqual(["refresh_token_missing"]);

    const apart = flow(CLAUDE).authorizeAll().session();
    apart.refresh();
    apart.refresh({ gap: 60_000, ...oauthError(400, "invalid_grant", "refresh token already used") });
    expect(codes(run(apart, "refresh"))).toEqual(["refresh_token_missing"]);

    const both = flow(CLAUDE).authorizeAll().session();
    both.refresh();
    both.refresh({ gap: 500 });
    expect(codes(run(both, null))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe("invalid_token_wrong_status", () => {
  it("an expired token an hour later gets a 500 from the JWT library", () => {
    const f = flow(CLAUDE).authorizeAll().session();
    const l = f.list({
      gap: 3_700_000,
      status: 500,
      resWithout: ["content-type"],
      res: [["Content-Type", "text/plain"]],
      reply: "Internal Server Error: TokenExpiredError: jwt expired",
      sseEvents: null,
    });
    const ds = run(f, "list");
    expect(codes(ds)).toEqual(["invalid_token_wrong_status"]);
    const d = only(ds, "invalid_token_wrong_status");
    expect(d.severity).toBe("error");
    expect(d.evidence).toEqual(idsOf(l));
    expect(d.summary).toContain(`POST /mcp (#${l.id}) carried a bearer token and answered 500`);
    expect(d.summary).toContain("TokenExpiredError: jwt expired");
    expect(d.fix).toContain('401 and WWW-Authenticate: Bearer error="invalid_token"');
    expect(d.fix).toContain(`resource_metadata="https://mcp.example.com${PRM}/mcp"`);
    expect(d.summary).not.toContain("unless");
  });

  it("modern era: a tools/call with an expired token answered 500 -32603 by the middleware (id null)", () => {
    const f = flow(V2_SDK).modernAuthorizeAll();
    f.discover();
    f.modernList();
    const c = f.modernCall({
      gap: 1_500,
      status: 500,
      reply: json({ jsonrpc: "2.0", id: null, error: { code: -32603, message: "Internal server error: TokenExpiredError: jwt expired" } }),
    });
    const ds = run(f, "tool_call");
    expect(codes(ds)).toEqual(["invalid_token_wrong_status"]);
    const d = only(ds, "invalid_token_wrong_status");
    expect(d.evidence).toEqual(idsOf(c));
    expect(d.summary).toContain("answered 500");
    expect(d.summary).not.toContain("unless");
  });

  it("a JSON-RPC 400 about the token's signature on the authenticated initialize", () => {
    const f = flow(CHATGPT).authorizeAll();
    const i = f.initialize({
      status: 400,
      resWithout: ["content-type", "mcp-session-id"],
      res: [JSON_TYPE],
      reply: rpcError("Invalid token: signature verification failed"),
    });
    const ds = run(f, "initialize");
    expect(codes(ds)).toEqual(["invalid_token_wrong_status"]);
    expect(only(ds, "invalid_token_wrong_status").evidence).toEqual(idsOf(i));
  });

  it("a warning when the client refreshed anyway and went on", () => {
    const f = flow(CLAUDE).authorizeAll().session();
    // The tool's handler answered (the call's own id): it may speak of its own upstream credential.
    f.toolCall({
      gap: 3_700_000,
      status: 500,
      resWithout: ["content-type"],
      res: [JSON_TYPE],
      reply: json({ jsonrpc: "2.0", id: 2, error: { code: -32603, message: "jwt expired" } }),
    });
    f.refresh();
    f.toolCall({ without: ["authorization"], req: [["Authorization", `Bearer ${marker("acce55e2")}`]] });
    const d = only(run(f, null), "invalid_token_wrong_status");
    expect(d.severity).toBe("warning");
    expect(d.summary).toContain("unless the handler speaks of its own upstream credential");
  });

  it("near misses: a 401 with a good challenge then a refresh, a 401 without challenge, a 500 about something else, a -32022", () => {
    const expiry = flow(CLAUDE).authorizeAll().session();
    expiry.list({
      gap: 3_700_000,
      status: 401,
      resWithout: ["content-type"],
      res: [
        ["WWW-Authenticate", `Bearer error="invalid_token", error_description="The access token expired", resource_metadata="${expiry.prmUrl}"`],
        JSON_TYPE,
      ],
      reply: json({ error: "invalid_token", error_description: "The access token expired" }),
      sseEvents: null,
    });
    expiry.refresh();
    expiry.list({ without: ["authorization"], req: [["Authorization", `Bearer ${marker("acce55e2")}`]] });
    expect(codes(run(expiry, null))).toEqual([]);

    // A 401 is the right status even without WWW-Authenticate: clients refresh on it.
    const bare = flow(CLAUDE).authorizeAll().session();
    bare.list({ gap: 3_700_000, status: 401, resWithout: ["content-type"], res: [JSON_TYPE], reply: json({ error: "invalid_token" }), sseEvents: null });
    expect(codes(run(bare, "list"))).not.toContain("invalid_token_wrong_status");

    const other = flow(CLAUDE).authorizeAll().session();
    other.toolCall({ status: 500, resWithout: ["content-type"], res: [JSON_TYPE], reply: rpcError("database connection refused") });
    expect(codes(run(other, "tool_call"))).not.toContain("invalid_token_wrong_status");

    const version = flow(CLAUDE).authorizeAll();
    version.initialize({
      status: 400,
      resWithout: ["content-type", "mcp-session-id"],
      res: [JSON_TYPE],
      reply: json({ jsonrpc: "2.0", id: 0, error: { code: -32022, message: "Unsupported protocol version (token: 2025-06-18)" } }),
    });
    expect(codes(run(version, "initialize"))).not.toContain("invalid_token_wrong_status");
  });
});

// ---------------------------------------------------------------------------------------------

describe("tool_definition_rejected", () => {
  const tools = (...list: Array<{ name: string; inputSchema?: unknown }>) =>
    sse({ jsonrpc: "2.0", id: 1, result: { tools: list.map((t) => ({ inputSchema: { type: "object" }, ...t })) } });
  const bigSchema = {
    type: "object",
    properties: { kind: { type: "string", enum: Array.from({ length: 1200 }, (_, i) => `document-kind-${i}`) } },
  };

  it("a dotted name: a warning while nothing failed", () => {
    const f = flow(CLAUDE).authorizeAll();
    f.initialize();
    f.initialized();
    const l = f.list({ reply: tools({ name: "calendar.read" }, { name: "search_docs" }) });
    f.toolCall();
    const ds = run(f, null);
    expect(codes(ds)).toEqual(["tool_definition_rejected"]);
    const d = only(ds, "tool_definition_rejected");
    expect(d.severity).toBe("warning");
    expect(d.evidence).toEqual(idsOf(l));
    expect(d.summary).toContain(`tools/list POST /mcp (#${l.id}) lists a tool hosted clients drop: "calendar.read" (name: "." outside [a-zA-Z0-9_-])`);
    expect(d.summary).toContain("^[a-zA-Z0-9_-]{1,64}$");
    expect(d.fix).toBe('Rename "calendar.read" to "calendar_read" (letters, digits, _ and - only, at most 64 characters)');
  });

  it("modern era: a dotted name in a JSON tools/list", () => {
    const f = flow(CLAUDE_MODERN).modernAuthorizeAll({ cimd: false });
    f.discover();
    const l = f.modernList({
      reply: json({
        jsonrpc: "2.0",
        id: 1,
        result: { tools: [{ name: "echo", inputSchema: { type: "object" } }, { name: "coda.docs.list", inputSchema: { type: "object" } }], resultType: "complete" },
      }),
    });
    f.modernCall();
    const ds = run(f, null);
    expect(codes(ds)).toEqual(["tool_definition_rejected"]);
    const d = only(ds, "tool_definition_rejected");
    expect(d.severity).toBe("warning");
    expect(d.evidence).toEqual(idsOf(l));
    expect(d.fix).toContain('"coda_docs_list"');
  });

  it("an oversized inputSchema and a 70-character name", () => {
    const f = flow(CLAUDE).authorizeAll();
    f.initialize();
    f.initialized();
    const long = `export_${"x".repeat(63)}`;
    const l = f.list({ reply: tools({ name: "search_docs" }, { name: "classify_document", inputSchema: bigSchema }, { name: long }) });
    expect(JSON.stringify(bigSchema).length).toBeGreaterThan(TOOL_SCHEMA_LIMIT_BYTES);
    const d = only(run(f, null), "tool_definition_rejected");
    expect(d.evidence).toEqual(idsOf(l));
    expect(d.summary).toContain("lists 2 tools");
    expect(d.summary).toMatch(/"classify_document" \(inputSchema \d+\.\d KiB, over 16 KiB\)/);
    expect(d.summary).toContain("70 characters, over 64");
    expect(d.summary).toContain("drops a tool whose inputSchema exceeds 16 KiB");
    expect(d.fix).toContain('Shrink the inputSchema of "classify_document" below 16 KiB');
    expect(d.fix).toContain(`rename "${long}" to "${long.slice(0, 64)}"`);
  });

  it("an error when a later tools/call to the dropped tool failed", () => {
    const f = flow(CLAUDE).authorizeAll();
    f.initialize();
    f.initialized();
    const l = f.list({ reply: tools({ name: "drive/search" }) });
    const c = f.toolCall({
      body: json({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "drive/search", arguments: {} } }),
      reply: sse({ jsonrpc: "2.0", id: 2, error: { code: -32602, message: "Unknown tool: drive/search" } }),
    });
    const ds = run(f, null);
    expect(codes(ds)).toEqual(["tool_definition_rejected"]);
    const d = only(ds, "tool_definition_rejected");
    expect(d.severity).toBe("error");
    expect(d.evidence).toEqual(idsOf(l, c));
    expect(d.summary).toContain(`then tools/call POST /mcp (#${c.id}) "Unknown tool: drive/search" failed`);
    expect(d.fix).toContain('"drive_search"');
  });

  it("near misses: normal names, a 10 KiB schema, a bad name this client called successfully", () => {
    const f = flow(CHATGPT).authorizeAll();
    f.initialize();
    f.initialized();
    const mid = { type: "object", properties: { q: { type: "string", description: "d".repeat(10_000) } } };
    f.list({
      reply: json({
        jsonrpc: "2.0",
        id: 1,
        result: {
          tools: [
            { name: "echo", inputSchema: { type: "object" } },
            { name: "coda_list_docs", inputSchema: mid },
            { name: "get-weather", inputSchema: { type: "object" } },
            { name: "A1_b2-C3", inputSchema: { type: "object" } },
          ],
        },
      }),
    });
    f.toolCall();
    expect(codes(run(f, null))).toEqual([]);

    const called = flow(CLAUDE).authorizeAll();
    called.initialize();
    called.initialized();
    called.list({ reply: tools({ name: "notes.search" }) });
    called.toolCall({ body: json({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "notes.search", arguments: {} } }) });
    expect(codes(run(called, null))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe("www_authenticate_malformed", () => {
  it("resource_metadata twice: two layers each add a challenge, and the client stops", () => {
    const f = flow(CLAUDE);
    const p = f.probe({ res: [["WWW-Authenticate", `Bearer resource_metadata="${f.prmUrl}"`]] });
    const ds = run(f, "probe");
    // www_authenticate_missing stays silent: the first header has resource_metadata.
    expect(codes(ds)).toEqual(["www_authenticate_malformed"]);
    const d = only(ds, "www_authenticate_malformed");
    expect(d.severity).toBe("error");
    expect(d.evidence).toEqual(idsOf(p));
    expect(d.summary).toContain("POST /mcp (#1) answered 401 with WWW-Authenticate: Bearer resource_metadata=");
    expect(d.summary).toContain("resource_metadata appears 2 times (in 2 WWW-Authenticate headers)");
    expect(d.fix).toContain(`exactly one WWW-Authenticate: Bearer resource_metadata="https://mcp.example.com${PRM}/mcp"`);
  });

  it("resource_metadata twice in one challenge, with different URLs; the client went on: a warning", () => {
    const f = flow(CLAUDE);
    const p = f.probe({
      resWithout: ["www-authenticate"],
      res: [["WWW-Authenticate", `Bearer resource_metadata="${f.prmUrl}", resource_metadata="http://internal:8080${PRM}"`]],
    });
    f.signIn();
    f.session();
    const ds = run(f, null);
    expect(codes(ds)).toEqual(["www_authenticate_malformed"]);
    const d = only(ds, "www_authenticate_malformed");
    expect(d.severity).toBe("warning");
    expect(d.evidence).toEqual(idsOf(p));
    expect(d.summary).toContain(`with different URLs: ${f.prmUrl} and http://internal:8080${PRM}`);
  });

  it("an unbalanced quote: ranks before resource_metadata_url_invalid, which reads the garbled value", () => {
    const f = flow(CLAUDE);
    const p = f.probe({ resWithout: ["www-authenticate"], res: [["WWW-Authenticate", `Bearer resource_metadata="${f.prmUrl}`]] });
    const ds = run(f, "probe");
    expect(codes(ds)).toEqual(["www_authenticate_malformed", "resource_metadata_url_invalid"]);
    const d = only(ds, "www_authenticate_malformed");
    expect(d.evidence).toEqual(idsOf(p));
    expect(d.summary).toContain("the challenge is garbled (an unbalanced quote in the value of resource_metadata)");
    expect(d.fix).toContain("rewrites or truncates the header");
  });

  it("junk after Bearer: ranks before www_authenticate_missing (no resource_metadata could be read)", () => {
    const f = flow(CLAUDE);
    const p = f.probe({ resWithout: ["www-authenticate"], res: [["WWW-Authenticate", "Bearer ;; resource_metadata"]] });
    const ds = run(f, "probe");
    expect(codes(ds)).toEqual(["www_authenticate_malformed", "www_authenticate_missing"]);
    const d = only(ds, "www_authenticate_malformed");
    expect(d.evidence).toEqual(idsOf(p));
    expect(d.summary).toContain('unparsable text ";; resource_metadata" after Bearer');
  });

  it("a Basic challenge on the MCP 401: ranks before www_authenticate_missing", () => {
    const f = flow(CLAUDE);
    const p = f.probe({ resWithout: ["www-authenticate"], res: [["WWW-Authenticate", 'Basic realm="Restricted"']] });
    const ds = run(f, "probe");
    expect(codes(ds)).toEqual(["www_authenticate_malformed", "www_authenticate_missing"]);
    const d = only(ds, "www_authenticate_malformed");
    expect(d.evidence).toEqual(idsOf(p));
    expect(d.summary).toContain("no Bearer challenge (scheme Basic)");
    expect(d.fix).toContain("not a Basic challenge");
  });

  it("near misses: full challenges, several schemes, bare Bearer, unquoted URL, lower-case scheme", () => {
    for (const header of [
      `Bearer realm="mcp", error="invalid_token", error_description="The access token expired", resource_metadata="https://mcp.example.com${PRM}/mcp"`,
      `Bearer resource_metadata="https://mcp.example.com${PRM}/mcp", scope="mcp files:read", DPoP algs="ES256 PS256"`,
      `bearer resource_metadata=https://mcp.example.com${PRM}/mcp`,
      `Bearer error="invalid_token", error_description="needs \\"mcp\\"", resource_metadata="https://mcp.example.com${PRM}/mcp"`,
    ]) {
      const f = flow(CLAUDE);
      f.probe({ resWithout: ["www-authenticate"], res: [["WWW-Authenticate", header]] });
      f.prm();
      expect(codes(run(f, null, "in_progress")), header).toEqual([]);
    }
    // A bare Bearer is well-formed: its missing resource_metadata is www_authenticate_missing's alone.
    const bare = flow(CLAUDE);
    bare.probe({ resWithout: ["www-authenticate"], res: [["WWW-Authenticate", "Bearer"]] });
    expect(codes(run(bare, "probe"))).toEqual(["www_authenticate_missing"]);
  });

  it("parses challenges as RFC 9110 does", () => {
    expect(parseChallenges(['Bearer realm="a, b", scope="x y", Basic realm="z"'])).toEqual({
      challenges: [
        { scheme: "Bearer", params: [["realm", "a, b"], ["scope", "x y"]] },
        { scheme: "Basic", params: [["realm", "z"]] },
      ],
    });
    expect(parseChallenges(["Negotiate abc123=="])).toEqual({ challenges: [{ scheme: "Negotiate", params: [], token68: "abc123==" }] });
    expect(parseChallenges(['resource_metadata="x"'])).toHaveProperty("error");
    expect(parseChallenges(['Bearer scope="a'])).toHaveProperty("error");
  });
});

// ---------------------------------------------------------------------------------------------

describe("step_up_loop", () => {
  const STEP_UP_TOKEN = "acce55e3";
  const insufficient = (f: Flow, scope: string): Tweak => ({
    status: 403,
    resWithout: ["content-type"],
    res: [
      ["WWW-Authenticate", `Bearer error="insufficient_scope", scope="${scope}", resource_metadata="${f.prmUrl}"`],
      JSON_TYPE,
    ],
    reply: json({ error: "insufficient_scope", error_description: `requires ${scope}` }),
    sseEvents: null,
  });
  const withToken = (fp: string) => ({ without: ["authorization"], req: [["Authorization", `Bearer ${marker(fp)}`]] as Array<[string, string]> });

  /** The connected session, a 403 insufficient_scope, and a re-authorization for `asked`. */
  function stepUp(asked: string): { f: Flow; first: ClassifiedExchange; reauth: ClassifiedExchange } {
    const f = flow(CLAUDE).authorizeAll();
    f.initialize();
    f.initialized();
    f.list();
    const first = f.toolCall(insufficient(f, "files:write"));
    const reauth = f.authorize({}, { scope: asked, state: "st-step-up" });
    f.consent(
      { res: [["Location", `${CLAUDE.callback}?code=${marker("c0de0002")}&state=st-step-up`]], resWithout: ["location"] },
      { scope: asked, state: "st-step-up" },
    );
    f.token({}, { code: marker("c0de0002") }, { access_token: marker(STEP_UP_TOKEN), scope: asked, refresh_token: marker("4ef4e542") });
    return { f, first, reauth };
  }

  it("re-authorization asks only for the challenged scope, dropping mcp: 403 again", () => {
    const { f, first, reauth } = stepUp("files:write");
    const again = f.toolCall({ ...withToken(STEP_UP_TOKEN), ...insufficient(f, "mcp") });
    const ds = run(f, "tool_call");
    expect(codes(ds)).toEqual(["step_up_loop"]);
    const d = only(ds, "step_up_loop");
    expect(d.severity).toBe("error");
    expect(d.evidence).toEqual(idsOf(first, reauth, again));
    expect(d.summary).toContain(`POST /mcp (#${first.id}) answered 403 insufficient_scope (scope="files:write")`);
    expect(d.summary).toContain(`the re-authorization GET /authorize (#${reauth.id}) asked for scope "files:write" only, dropping "mcp" granted before`);
    expect(d.summary).toContain(`POST /mcp (#${again.id}) got 403 insufficient_scope again (scope="mcp"): a step-up loop`);
    expect(d.fix).toContain('scope="mcp files:write"');
    expect(d.fix).toContain("every scope the client needs to keep");
  });

  it("the client asks the union, the authorization server never grants admin: 403 after every re-authorization", () => {
    const f = flow(CLAUDE).authorizeAll();
    f.initialize();
    f.initialized();
    f.list();
    const first = f.toolCall(insufficient(f, "admin"));
    const reauth = f.authorize({}, { scope: "mcp admin", state: "st-step-up" });
    f.consent(
      { res: [["Location", `${CLAUDE.callback}?code=${marker("c0de0002")}&state=st-step-up`]], resWithout: ["location"] },
      { scope: "mcp admin", state: "st-step-up" },
    );
    const t = f.token({}, { code: marker("c0de0002") }, { access_token: marker(STEP_UP_TOKEN), scope: "mcp", refresh_token: marker("4ef4e542") });
    const again = f.toolCall({ ...withToken(STEP_UP_TOKEN), ...insufficient(f, "admin") });
    const ds = run(f, "tool_call");
    expect(codes(ds)).toEqual(["step_up_loop"]);
    const d = only(ds, "step_up_loop");
    expect(d.evidence).toEqual(idsOf(first, reauth, t, again));
    expect(d.summary).toContain('asked for scope "mcp admin"; with the new token');
    expect(d.summary).toContain(`because the token response POST /token (#${t.id}) granted only scope "mcp", without "admin"`);
    expect(d.fix).toContain('Authorization server: grant "admin"');
    expect(d.fix).toContain("plain 403");
  });

  it("one round seen (the re-authorization split off): asked for admin, granted without it, 403 for admin", () => {
    const f = flow(CLAUDE);
    const a = f.authorize({}, { scope: "mcp admin", state: "st-step-up" });
    f.consent(
      { res: [["Location", `${CLAUDE.callback}?code=${marker("c0de0002")}&state=st-step-up`]], resWithout: ["location"] },
      { scope: "mcp admin", state: "st-step-up" },
    );
    const t = f.token({}, { code: marker("c0de0002") }, { access_token: marker(STEP_UP_TOKEN), scope: "mcp", refresh_token: marker("4ef4e542") });
    const d403 = f.toolCall({ ...withToken(STEP_UP_TOKEN), ...insufficient(f, "admin") });
    const ds = run(f, "tool_call");
    expect(codes(ds)).toEqual(["step_up_loop"]);
    const d = only(ds, "step_up_loop");
    expect(d.evidence).toEqual(idsOf(a, t, d403));
    expect(d.summary).toContain(`GET /authorize (#${a.id}) asked for scope "mcp admin", but the token response POST /token (#${t.id}) granted only "mcp"`);
    expect(d.summary).toContain('re-authorizing for "admin" gets the same token again');
    expect(d.fix).toContain('grant "admin"');
  });

  it("near misses: the union re-authorization works; a single 403 the client has not acted on", () => {
    const { f } = stepUp("mcp files:write");
    f.toolCall(withToken(STEP_UP_TOKEN));
    expect(codes(run(f, null))).toEqual([]);

    const once = flow(CLAUDE).authorizeAll();
    once.initialize();
    once.initialized();
    once.list();
    once.toolCall(insufficient(once, "files:write"));
    expect(codes(run(once, null, "in_progress"))).not.toContain("step_up_loop");
  });
});

// ---------------------------------------------------------------------------------------------

describe("client_abandoned_after_token", () => {
  function tokenThenNothing(reply: Record<string, unknown> = {}) {
    const f = flow(CLAUDE);
    uptoToken(f);
    const t = f.token({}, {}, reply);
    return { f, t };
  }

  it('a token_type of "JWT" the client cannot use', () => {
    const { f, t } = tokenThenNothing({ token_type: "JWT" });
    const ds = run(f, null, "abandoned");
    expect(codes(ds)).toEqual(["client_abandoned_after_token"]);
    const d = only(ds, "client_abandoned_after_token");
    expect(d.severity).toBe("error");
    expect(d.evidence).toEqual(idsOf(t));
    expect(d.summary).toContain("Abandoned after token: POST /token (#7) answered 200 with an access token");
    expect(d.summary).toContain('likely because the token response has token_type "JWT" (clients expect "Bearer")');
    expect(d.fix).toContain('Answer "token_type": "Bearer"');
  });

  it("no token_type and expires_in as a string", () => {
    const { f } = tokenThenNothing({ token_type: undefined, expires_in: "3600" });
    const d = only(run(f, "token", "failed"), "client_abandoned_after_token");
    expect(d.summary).toContain('the token response has no token_type, and has expires_in as a string ("3600")');
    expect(d.fix).toContain('Add "token_type": "Bearer"; send expires_in as a number (3600, not "3600")');
  });

  it("modern era, CIMD: a token response without token_type, the handshake failed", () => {
    const f = flow(V2_SDK);
    f.modernProbe();
    f.prm();
    f.modernAsMetadata();
    f.useCimd();
    f.responseIss = V2_SDK.issuer;
    f.authorize();
    f.consent();
    const t = f.token({}, {}, { token_type: undefined });
    const ds = run(f, null, "failed");
    expect(codes(ds)).toEqual(["client_abandoned_after_token"]);
    const d = only(ds, "client_abandoned_after_token");
    expect(d.evidence).toEqual(idsOf(t));
    expect(d.summary).toContain("likely because the token response has no token_type");
  });

  it("a usable token response: says so and points at the client's logs", () => {
    const { f } = tokenThenNothing({ token_type: "bearer" });
    const d = only(run(f, null, "abandoned"), "client_abandoned_after_token");
    expect(d.summary).toContain('looks usable (token_type "bearer", expires_in 3600, a refresh_token)');
    expect(d.summary).toContain("probably in the client");
    expect(d.fix).toContain("client's logs");
  });

  it("near misses: still in progress; the token followed by initialize; an unauthenticated re-probe only", () => {
    const { f } = tokenThenNothing({ token_type: "JWT" });
    expect(codes(run(f, null, "in_progress"))).toEqual([]);

    const connected = flow(CLAUDE).authorizeAll();
    connected.initialize();
    expect(codes(run(connected, null, "abandoned"))).not.toContain("client_abandoned_after_token");

    const reprobe = flow(CLAUDE).authorizeAll();
    reprobe.probe();
    expect(codes(run(reprobe, null, "abandoned"))).toContain("client_abandoned_after_token");
  });
});
