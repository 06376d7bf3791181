// The diagnosis rules of the modern era (2026-07-28) and where the two eras meet: era_mismatch,
// header_mismatch, cimd_fetch_failed, authorization_response_iss_mismatch, and the era-aware
// protocol_version_rejected, session_not_found, sse_not_flushed and registration_unavailable.
// Wire shapes follow recordings of the TypeScript SDK 2.x client and server (and a 1.x client
// against a modern-only server) through mcp-lens.
import { describe, expect, it } from "vitest";
import { diagnose, explainCode } from "../../analysis/diagnose/index.js";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import type { DiagnosisCode, HandshakeStep, Severity } from "../../analysis/handshake.js";
import {
  type Client,
  CHATGPT,
  CIMD_CLIENT_ID,
  CLAUDE,
  CLAUDE_CODE,
  CLAUDE_MODERN,
  codes,
  Flow,
  flow,
  INSPECTOR,
  INSPECTOR_MODERN,
  JSON_TYPE,
  json,
  MCP_REMOTE,
  MODERN,
  rpcError,
  SSE_TYPE,
  type Tweak,
  V1_SDK,
  V2_SDK,
} from "../helpers/diagnose-flow.js";

/** A -32xxx error answer with data, as the 2.x server sends it. */
const rpcErrorData = (code: number, message: string, data: unknown, id: number | string | null = 0) =>
  json({ jsonrpc: "2.0", error: { code, message, data }, id });

/** b.db #7: a 1.x client's initialize refused by a modern-only 2.x server. */
const modernOnlyRefusal: Tweak = {
  status: 400,
  resWithout: ["content-type", "mcp-session-id"],
  res: [JSON_TYPE],
  reply: rpcErrorData(-32022, "Unsupported protocol version: 2025-11-25", { supported: [MODERN], requested: "2025-11-25" }),
  sseEvents: null,
};

/** A legacy SDK 1.x server's answer to MCP-Protocol-Version 2026-07-28 (stateless mode checks the header first). */
const legacyVersionRefusal =
  "Bad Request: Unsupported protocol version: 2026-07-28 (supported versions: 2025-11-25, 2025-06-18, 2025-03-26, 2024-11-05)";

// ---------------------------------------------------------------------------------------------
// Healthy handshakes of both eras: no diagnosis at all

describe("healthy modern and dual-era handshakes", () => {
  const healthy: Array<[string, () => Flow]> = [
    [
      "modern, authless: server/discover, tools/list, tools/call without a token",
      () => {
        const f = flow(V2_SDK);
        f.registration = "none";
        f.discover({}, false);
        f.modernList({}, false);
        f.modernCall({}, false);
        return f;
      },
    ],
    ["modern, OAuth with a Client ID Metadata Document (no registration), iss in the callback", () => flow(V2_SDK).modernAuthorizeAll({ cimd: true }).modernSession()],
    [
      "modern, OAuth with DCR carrying application_type",
      () => {
        const f = flow(V2_SDK).modernAuthorizeAll({ cimd: false }).modernSession();
        const reg = f.exchanges.find((e) => e.kind === "registration")!;
        expect(reg.facts.applicationType).toBe("native");
        return f;
      },
    ],
    ["modern hosted connector (Claude.ai backend), CIMD, JSON answers", () => flow(CLAUDE_MODERN).modernAuthorizeAll().modernSession()],
    ["modern browser client (Inspector): preflights for Mcp-Method and Mcp-Name allowed", () => flow(INSPECTOR_MODERN).modernAuthorizeAll({ cimd: false }).modernSession()],
    [
      "dual-era fallback, authless legacy server: server/discover 400 'Server not initialized', then initialize → legacy session",
      () => {
        const f = flow({ ...V2_SDK, sse: true, stateful: true });
        f.era = "legacy";
        f.eraFallback = true;
        f.registration = "none";
        f.discover(f.legacyRefusal("Bad Request: Server not initialized"), false);
        f.probe({
          status: 200,
          resWithout: ["www-authenticate", "content-type"],
          res: [SSE_TYPE, ["Mcp-Session-Id", "sess-7f3a"]],
          reply: `event: message\ndata: ${json({ jsonrpc: "2.0", id: 0, result: { protocolVersion: "2025-11-25", capabilities: {}, serverInfo: { name: "legacy", version: "1.24.0" } } })}\n\n`,
        });
        f.initialized({}, false);
        f.list({}, false);
        f.toolCall({}, false);
        return f;
      },
    ],
    [
      "dual-era fallback, protected legacy stateless server: the authenticated server/discover gets 400 'Unsupported protocol version', then initialize",
      () => {
        const f = flow({ ...V2_SDK, sse: false, stateful: false });
        f.era = "legacy";
        f.eraFallback = true;
        f.modernProbe();
        f.signIn();
        f.discover(f.legacyRefusal(legacyVersionRefusal));
        f.initialize();
        f.initialized();
        f.list();
        f.toolCall();
        return f;
      },
    ],
    [
      "dual-era fallback on a plain 404 (no JSON-RPC body) to server/discover, then initialize",
      () => {
        const f = flow({ ...V2_SDK, sse: false, stateful: false });
        f.era = "legacy";
        f.eraFallback = true;
        f.modernProbe();
        f.signIn();
        f.discover({ status: 404, resWithout: ["content-type"], res: [["Content-Type", "text/plain"]], reply: "Not Found" });
        f.initialize();
        f.initialized();
        f.list();
        return f;
      },
    ],
    [
      "modern version fallback: -32022 to a newer version, the client retries with the listed 2026-07-28",
      () => {
        const f = flow(V2_SDK).modernAuthorizeAll();
        f.modernList(
          {
            status: 400,
            reply: rpcErrorData(-32022, "Unsupported protocol version: 2027-03-01", { supported: [MODERN], requested: "2027-03-01" }, 1),
          },
          true,
          "2027-03-01",
        );
        f.modernList();
        f.modernCall();
        return f;
      },
    ],
    [
      "modern server without prompts: 404 -32601 to prompts/list, the client goes on",
      () => {
        const f = flow(V2_SDK).modernAuthorizeAll();
        f.discover();
        f.add({
          step: "list",
          method: "POST",
          path: "/mcp",
          req: f.modernHeaders("prompts/list", { auth: true }),
          body: f.modernBody(4, "prompts/list"),
          status: 404,
          res: [JSON_TYPE],
          reply: rpcErrorData(-32601, "Method not found", undefined, 4),
        });
        f.modernList();
        f.modernCall();
        return f;
      },
    ],
    [
      "an idle subscriptions/listen stream that was acknowledged, closed by the client",
      () => {
        const f = flow(V2_SDK).modernAuthorizeAll().modernSession();
        f.listen({ durationMs: 600_000 });
        return f;
      },
    ],
    [
      "an authorization response without iss where the metadata promises none",
      () => {
        const f = flow(V2_SDK);
        f.modernProbe();
        f.prm();
        f.asMetadata({ reply: json(f.asDoc({ client_id_metadata_document_supported: true })) });
        f.useCimd();
        f.authorize();
        f.consent();
        f.token();
        return f.modernSession();
      },
    ],
  ];

  it.each(healthy)("%s", (_name, build) => {
    const f = build();
    expect(codes(f.diagnose(null))).toEqual([]);
  });

  const legacy: Array<[string, Client]> = [
    ["Claude.ai", CLAUDE],
    ["ChatGPT", CHATGPT],
    ["Claude Code", CLAUDE_CODE],
    ["MCP Inspector", INSPECTOR],
    ["mcp-remote", MCP_REMOTE],
    ["TypeScript SDK 1.x", V1_SDK],
  ];

  it.each(legacy)("legacy %s handshake stays silent", (_name, client) => {
    expect(codes(flow(client).authorizeAll().session().diagnose(null))).toEqual([]);
  });

  it("a modern request after a legacy session (the next client's probe) that falls back is no session error", () => {
    const f = flow(CLAUDE).authorizeAll().session();
    f.add(
      {
        step: "probe",
        method: "POST",
        path: "/mcp",
        req: f.modernHeaders("server/discover", { auth: true }),
        body: f.modernBody("server-discover-probe-1", "server/discover"),
      },
      f.legacyRefusal("Bad Request: No valid session ID provided"),
    );
    f.initialize();
    f.initialized();
    f.list();
    expect(codes(f.diagnose(null))).toEqual([]);
  });

  it("the helper's modern requests carry what the 2.x SDK sends", () => {
    const f = flow(V2_SDK);
    const d = f.discover({}, false);
    const c = f.modernCall({}, false);
    expect(d.facts.mcp).toMatchObject({
      era: "modern",
      metaProtocolVersion: MODERN,
      methodHeader: "server/discover",
      protocolVersionHeader: MODERN,
      clientInfo: { name: "verify-v2-client" },
      serverInfo: { name: "acme-mcp" },
      resultType: "complete",
      supportedVersions: [MODERN],
    });
    expect(d.facts.mcp?.headerMismatch).toBeUndefined();
    expect(c.facts.mcp).toMatchObject({ nameHeader: "search_docs", toolNames: ["search_docs"] });
    const f2 = flow(V2_SDK).modernAuthorizeAll();
    const authorize = f2.exchanges.find((e) => e.kind === "authorize")!;
    const callback = f2.exchanges.find((e) => e.kind === "authorize_consent")!;
    expect(authorize.facts).toMatchObject({ clientId: CIMD_CLIENT_ID, clientIdIsMetadataDocument: true });
    expect(callback.facts.iss).toBe("https://mcp.example.com");
    expect(f2.exchanges.some((e) => e.kind === "registration")).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Each code fires on the traffic that shows it

interface Expectation {
  evidence: ClassifiedExchange[];
  /** Substrings of the summary. */
  says: string[];
  /** Substrings of the fix. */
  fix?: string[];
  /** Substrings the fix must not contain. */
  fixNot?: string[];
  /** Default: the step of the last exchange. */
  failed?: HandshakeStep | null;
  also?: DiagnosisCode[];
  first?: DiagnosisCode;
  severity?: Severity;
}

interface Case {
  name: string;
  code: DiagnosisCode;
  client?: Client;
  build: (f: Flow) => Expectation;
}

/** Probe to token against a legacy (2025-era) protected server: the AS metadata knows no CIMD. */
const legacyOAuth = (f: Flow) => {
  f.modernProbe();
  f.signIn();
};

const eraCases: Case[] = [
  // --- era_mismatch --------------------------------------------------------------------------
  {
    name: "modern-only client, protected legacy server: server/discover 400 'Server not initialized', no fallback",
    code: "era_mismatch",
    client: V2_SDK,
    build: (f) => {
      legacyOAuth(f);
      const d = f.discover(f.legacyRefusal("Bad Request: Server not initialized"));
      return {
        evidence: [d],
        says: [
          "The client speaks only the modern era",
          `server/discover POST /mcp (#${d.id})`,
          `_meta protocolVersion ${MODERN}`,
          `MCP-Protocol-Version ${MODERN}`,
          "answered 400",
          "Bad Request: Server not initialized",
          "legacy server",
          "never fell back to initialize",
        ],
        fix: ["upgrade it to an MCP SDK that serves 2026-07-28", "@modelcontextprotocol/server 2.x", "serve both eras", "automatic version negotiation"],
      };
    },
  },
  {
    name: "modern-only client, authless legacy stateless server: 400 naming the legacy versions it supports",
    code: "era_mismatch",
    client: V2_SDK,
    build: (f) => {
      f.registration = "none";
      const d = f.discover(f.legacyRefusal(legacyVersionRefusal), false);
      return {
        evidence: [d],
        says: [`_meta protocolVersion ${MODERN}`, "the server supports only 2025-11-25, 2025-06-18, 2025-03-26, 2024-11-05 (legacy era)"],
        fix: ["@modelcontextprotocol/server 2.x", "falls back to initialize with 2025-11-25"],
      };
    },
  },
  {
    name: "modern-only client, legacy server answering -32601 to server/discover (200)",
    code: "era_mismatch",
    client: V2_SDK,
    build: (f) => {
      legacyOAuth(f);
      const d = f.discover({ reply: rpcErrorData(-32601, "Method not found", undefined, "server-discover-probe-1") });
      return { evidence: [d], says: ["answered 200", "Method not found", "legacy"] };
    },
  },
  {
    name: "legacy client (SDK 1.x), modern-only server: initialize refused with -32022 data.supported [2026-07-28] (b.db #7)",
    code: "era_mismatch",
    client: V1_SDK,
    build: (f) => {
      f.era = "legacy";
      f.registration = "none";
      const i = f.probe(modernOnlyRefusal);
      return {
        evidence: [i],
        says: [
          "The client speaks only the legacy era",
          "asked for protocol version 2025-11-25",
          "clientInfo verify-v1-client",
          "answered 400",
          "Unsupported protocol version: 2025-11-25",
          `the server is modern-only: it supports ${MODERN}`,
          "-32022 data.supported, data.requested 2025-11-25",
        ],
        fix: ["upgrade it to a dual-era MCP SDK", "@modelcontextprotocol/client 2.x", "Python mcp 2.x", "legacy: 'stateless'"],
        fixNot: ["upgrade the server", "Upgrade the server"],
      };
    },
  },
  {
    name: "legacy hosted client (Claude.ai 2025-06-18) after OAuth, modern-only server",
    code: "era_mismatch",
    client: CLAUDE,
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize({
        ...modernOnlyRefusal,
        reply: rpcErrorData(-32022, "Unsupported protocol version: 2025-06-18", { supported: [MODERN], requested: "2025-06-18" }),
      });
      return {
        evidence: [i],
        says: ["asked for protocol version 2025-06-18", "clientInfo Anthropic", `supports ${MODERN}`],
        fix: ["dual-era MCP SDK", "serve both eras"],
        fixNot: ["upgrade the server", "Upgrade the server"],
      };
    },
  },
  {
    name: "legacy client after OAuth, a modern-only server without initialize: 404 -32601",
    code: "era_mismatch",
    client: CLAUDE,
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize({
        status: 404,
        resWithout: ["content-type", "mcp-session-id"],
        res: [JSON_TYPE],
        reply: rpcErrorData(-32601, "Method not found: initialize", undefined),
        sseEvents: null,
      });
      return {
        evidence: [i],
        says: ["The client speaks only the legacy era", "answered 404", "no initialize method (404 -32601)", "most likely modern-only"],
        fix: ["dual-era MCP SDK"],
        fixNot: ["upgrade the server", "Upgrade the server"],
      };
    },
  },
  // --- client_capability_missing -------------------------------------------------------------
  {
    name: "a tool that needs elicitation the client did not declare: -32021",
    code: "client_capability_missing",
    client: V2_SDK,
    build: (f) => {
      f.modernAuthorizeAll();
      f.discover();
      f.modernList();
      const c = f.modernCall({
        status: 400,
        reply: rpcErrorData(-32021, "Missing required client capability: elicitation", { requiredCapabilities: { elicitation: {} } }, 2),
      });
      return {
        evidence: [c],
        says: ["tools/call POST /mcp", "answered 400", "the server requires elicitation", "the client declared no capability"],
        fix: ["declares and implements elicitation", "io.modelcontextprotocol/clientCapabilities"],
      };
    },
  },
  // --- header_mismatch -----------------------------------------------------------------------
  {
    name: "a client prefixing tool names in Mcp-Name only: -32020",
    code: "header_mismatch",
    client: V2_SDK,
    build: (f) => {
      f.modernAuthorizeAll();
      f.discover();
      f.modernList();
      const c = f.modernCall(
        {
          status: 400,
          reply: rpcErrorData(-32020, "Header mismatch: Mcp-Name header value 'acme__search_docs' does not match body value 'search_docs'", undefined, 2),
        },
        true,
        "acme__search_docs",
      );
      return {
        evidence: [c],
        says: ["tools/call POST /mcp", "400 -32020 HeaderMismatch", "Mcp-Name: acme__search_docs but the body says search_docs"],
        fix: ["Mcp-Name", "prefix", "same name in the header and the body"],
      };
    },
  },
  {
    name: "a gateway behind mcp-lens rewrote the body: -32020 although the recorded headers match",
    code: "header_mismatch",
    client: V2_SDK,
    build: (f) => {
      f.modernAuthorizeAll();
      const d = f.discover({ status: 400, reply: rpcErrorData(-32020, "Header mismatch: Mcp-Method", undefined, "server-discover-probe-1") });
      return {
        evidence: [d],
        says: ["-32020 HeaderMismatch", "the headers mcp-lens recorded match the body", "Mcp-Method server/discover", "most likely rewrote"],
        fix: ["gateway", "Mcp-Method"],
      };
    },
  },
  {
    name: "Mcp-Method missing: a plain 400 from a modern server",
    code: "header_mismatch",
    client: V2_SDK,
    build: (f) => {
      f.modernAuthorizeAll();
      const l = f.modernList({ without: ["mcp-method"], status: 400, reply: json({ jsonrpc: "2.0", error: { code: -32600, message: "Invalid request headers" }, id: 1 }) });
      return { evidence: [l], says: ["Mcp-Method is missing (the body says tools/list)"], fix: ["Mcp-Method"] };
    },
  },
  // --- cimd_fetch_failed ---------------------------------------------------------------------
  {
    name: "AS advertises CIMD, /authorize answers invalid_client: document too large",
    code: "cimd_fetch_failed",
    client: V2_SDK,
    build: (f) => {
      f.modernProbe();
      f.prm();
      const m = f.modernAsMetadata({ dcr: false });
      f.useCimd();
      const a = f.authorize({
        status: 400,
        resWithout: ["content-type"],
        res: [JSON_TYPE],
        reply: json({ error: "invalid_client", error_description: "client metadata document exceeds 5120 bytes" }),
      });
      return {
        evidence: [a, m],
        says: [
          "advertises client_id_metadata_document_supported",
          `answered 400 "invalid_client: client metadata document exceeds 5120 bytes" for client_id ${CIMD_CLIENT_ID}`,
          "most likely could not fetch the document",
        ],
        fix: [CIMD_CLIENT_ID, "not behind a WAF", `its client_id must be exactly ${CIMD_CLIENT_ID}`, V2_SDK.callback],
      };
    },
  },
  {
    name: "AS advertises CIMD, the document does not list the redirect URI: not redirect_uri_rejected",
    code: "cimd_fetch_failed",
    client: V2_SDK,
    build: (f) => {
      f.modernProbe();
      f.prm();
      const m = f.modernAsMetadata({ dcr: false });
      f.useCimd();
      const a = f.authorize({
        status: 400,
        resWithout: ["content-type"],
        res: [JSON_TYPE],
        reply: json({ error: "invalid_request", error_description: "redirect_uri not listed in the client metadata document" }),
      });
      return {
        evidence: [a, m],
        says: [`does not list the redirect URI ${V2_SDK.callback}`],
        fix: [`its redirect_uris must include ${V2_SDK.callback}`],
      };
    },
  },
  {
    name: "AS advertises CIMD, /authorize answers 502 while fetching the document",
    code: "cimd_fetch_failed",
    client: CLAUDE_MODERN,
    build: (f) => {
      f.modernProbe();
      f.prm();
      const m = f.modernAsMetadata({ dcr: false });
      f.useCimd();
      const a = f.authorize({ status: 502, resWithout: ["content-type"], res: [["Content-Type", "text/plain"]], reply: "Bad Gateway" });
      return { evidence: [a, m], says: ["answered 502", "could not fetch the document"] };
    },
  },
  {
    name: "URL client_id at an AS that does not advertise CIMD: rejected as unknown client",
    code: "cimd_fetch_failed",
    client: V2_SDK,
    build: (f) => {
      f.modernProbe();
      f.prm();
      const m = f.asMetadata();
      f.useCimd();
      const a = f.authorize({
        status: 400,
        resWithout: ["content-type"],
        res: [JSON_TYPE],
        reply: json({ error: "invalid_client", error_description: "Client not found" }),
      });
      return {
        evidence: [a, m],
        says: ["used a Client ID Metadata Document URL", "does not advertise client_id_metadata_document_supported", "does not accept CIMD client ids"],
        fix: ["register at https://mcp.example.com/register", "client_id_metadata_document_supported: true"],
      };
    },
  },
  {
    name: "the code is issued, then /token refuses the CIMD client_id: the AS could not re-fetch the document",
    code: "cimd_fetch_failed",
    client: V2_SDK,
    build: (f) => {
      f.modernProbe();
      f.prm();
      const m = f.modernAsMetadata({ dcr: false });
      f.useCimd();
      f.responseIss = V2_SDK.issuer;
      f.authorize();
      f.consent();
      const t = f.token({
        status: 401,
        reply: json({ error: "invalid_client", error_description: "could not retrieve client metadata document: timeout" }),
      });
      return {
        evidence: [t, m],
        says: [`POST /token (#${t.id}) answered 401`, "could not retrieve client metadata document", "could not fetch the document"],
        also: ["token_request_rejected"],
      };
    },
  },
  // --- authorization_response_iss_mismatch ---------------------------------------------------
  {
    name: "iss with a trailing slash, the client stops before /token",
    code: "authorization_response_iss_mismatch",
    client: V2_SDK,
    build: (f) => {
      f.modernProbe();
      f.prm();
      const m = f.modernAsMetadata({ dcr: false });
      f.useCimd();
      f.authorize();
      f.responseIss = "https://mcp.example.com/";
      const c = f.consent();
      return {
        evidence: [c, m],
        says: ["carries iss=https://mcp.example.com/", "says issuer https://mcp.example.com", "only by a trailing slash", "never called /token"],
        fix: ["exactly equal to the metadata's issuer https://mcp.example.com", "byte-for-byte"],
      };
    },
  },
  {
    name: "no iss although the metadata promises it, the client stops before /token",
    code: "authorization_response_iss_mismatch",
    client: CLAUDE_MODERN,
    build: (f) => {
      f.modernProbe();
      f.prm();
      const m = f.modernAsMetadata();
      f.register();
      f.authorize();
      const c = f.consent();
      return {
        evidence: [c, m],
        says: ["carries no iss", "authorization_response_iss_parameter_supported: true", "never called /token"],
        fix: ["Add iss=https%3A%2F%2Fmcp.example.com", "or stop advertising authorization_response_iss_parameter_supported"],
      };
    },
  },
  {
    name: "iss on another scheme, the client redeemed the code anyway: a warning",
    code: "authorization_response_iss_mismatch",
    client: V2_SDK,
    build: (f) => {
      f.modernProbe();
      f.prm();
      const m = f.modernAsMetadata({ dcr: false });
      f.useCimd();
      f.authorize();
      f.responseIss = "http://mcp.example.com";
      const c = f.consent();
      const t = f.token();
      f.modernSession();
      return {
        evidence: [c, m, t],
        says: ["iss=http://mcp.example.com", "(scheme http vs https)", "redeemed the code anyway"],
        failed: null,
        severity: "warning",
      };
    },
  },
  // --- protocol_version_rejected, per era ----------------------------------------------------
  {
    name: "modern peers, -32022 and the client does not retry with the listed version",
    code: "protocol_version_rejected",
    client: V2_SDK,
    build: (f) => {
      f.modernAuthorizeAll();
      const l = f.modernList(
        {
          status: 400,
          reply: rpcErrorData(-32022, "Unsupported protocol version: 2027-03-01", { supported: [MODERN], requested: "2027-03-01" }, 1),
        },
        true,
        "2027-03-01",
      );
      return {
        evidence: [l],
        says: ["tools/list POST /mcp", "asked for protocol version 2027-03-01", "-32022 UnsupportedProtocolVersion", `data.supported ${MODERN}`, "data.requested 2027-03-01", "did not retry"],
        fix: ["Upgrade the server's MCP SDK so it supports 2027-03-01", `retry with ${MODERN}`],
      };
    },
  },
  {
    name: "modern peers, the server is newer: the fix points at the client",
    code: "protocol_version_rejected",
    client: V2_SDK,
    build: (f) => {
      f.modernAuthorizeAll();
      const l = f.modernList({
        status: 400,
        reply: rpcErrorData(-32022, "Unsupported protocol version", { supported: ["2027-03-01"], requested: MODERN }, 1),
      });
      return {
        evidence: [l],
        says: ["data.supported 2027-03-01"],
        fix: ["The client is behind", "support 2027-03-01"],
        fixNot: ["server's MCP SDK"],
      };
    },
  },
  {
    name: "legacy peers: 400 'Unsupported protocol version' to initialize with a legacy version",
    code: "protocol_version_rejected",
    client: { ...CLAUDE, protocolVersion: "2025-11-25" },
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize({
        status: 400,
        resWithout: ["content-type", "mcp-session-id"],
        res: [JSON_TYPE],
        reply: rpcError("Bad Request: Unsupported protocol version: 2025-11-25 (supported versions: 2025-06-18, 2025-03-26)"),
        sseEvents: null,
      });
      return {
        evidence: [i],
        says: ["protocol version 2025-11-25 answered 400", "Unsupported protocol version"],
        fix: ["upgrade the server's MCP SDK"],
      };
    },
  },
  {
    name: "server/discover lists no version the client speaks, and the client stops",
    code: "protocol_version_rejected",
    client: V2_SDK,
    build: (f) => {
      f.modernAuthorizeAll();
      const d = f.discover({
        reply: json({
          jsonrpc: "2.0",
          id: "server-discover-probe-1",
          result: f.modernResult({ supportedVersions: ["2027-03-01"], capabilities: {} }),
        }),
      });
      return {
        evidence: [d],
        says: [`asked with protocol version ${MODERN}`, "supportedVersions are 2027-03-01", "sent nothing more"],
        fix: ["The client is behind", "2027-03-01"],
        fixNot: ["server's MCP SDK"],
      };
    },
  },
  // --- sse_not_flushed, modern ---------------------------------------------------------------
  {
    name: "subscriptions/listen never delivers notifications/subscriptions/acknowledged",
    code: "sse_not_flushed",
    client: V2_SDK,
    build: (f) => {
      f.modernAuthorizeAll();
      f.discover();
      f.modernList();
      const s = f.listen({ reply: undefined, sseEvents: 0, durationMs: 30_000 });
      return {
        evidence: [s],
        says: ["POST /mcp", "text/event-stream", "notifications/subscriptions/acknowledged, never came", "30.0 s"],
        fix: ["X-Accel-Buffering: no", "write notifications/subscriptions/acknowledged as soon as subscriptions/listen arrives"],
        fixNot: ["enableJsonResponse", "GET"],
        failed: "stream",
      };
    },
  },
  {
    name: "a modern tools/call answered as a stream that never flushes",
    code: "sse_not_flushed",
    client: { ...V2_SDK, sse: true },
    build: (f) => {
      f.modernAuthorizeAll();
      f.discover();
      const c = f.modernCall({ aborted: true, durationMs: 60_000, sseEvents: 0, reply: undefined });
      return {
        evidence: [c],
        says: ["no event came before the client gave up after 60.0 s"],
        fix: ["proxy_buffering off;", "answer requests with JSON"],
        fixNot: ["GET"],
      };
    },
  },
  // --- registration_unavailable, era-aware ---------------------------------------------------
  {
    name: "the AS offers only CIMD and the client did not use it",
    code: "registration_unavailable",
    client: CLAUDE,
    build: (f) => {
      f.probe();
      f.prm();
      const m = f.modernAsMetadata({ dcr: false });
      return {
        evidence: [m],
        says: ["offers only Client ID Metadata Documents", "client_id_metadata_document_supported: true, no registration_endpoint", "never presented a client id"],
        fix: ["supports Client ID Metadata Documents", "pre-register a client"],
      };
    },
  },
  {
    name: "neither DCR nor CIMD, a modern client never presents a client id",
    code: "registration_unavailable",
    client: V2_SDK,
    build: (f) => {
      f.modernProbe();
      f.prm();
      const m = f.asMetadata({ reply: json(f.asDoc({ registration_endpoint: undefined })) });
      return {
        evidence: [m],
        says: ["has no registration_endpoint and does not advertise client_id_metadata_document_supported"],
        fix: ["advertise registration_endpoint", "client_id_metadata_document_supported: true", "static client id"],
      };
    },
  },
];

describe("each era code fires on the traffic that shows it", () => {
  it.each(eraCases.map((c) => [`${c.code}: ${c.name}`, c] as const))("%s", (_name, c) => {
    const f = flow(c.client);
    const expected = c.build(f);
    const failed = expected.failed === undefined ? f.lastStep : expected.failed;
    const ds = f.diagnose(failed);

    expect(codes(ds).sort()).toEqual([c.code, ...(expected.also ?? [])].sort());
    expect(ds[0]?.code).toBe(expected.first ?? c.code);
    const d = ds.find((x) => x.code === c.code)!;
    expect(d.evidence).toEqual(expected.evidence.map((e) => e.id).sort((a, b) => a - b));
    for (const value of expected.says) expect(d.summary).toContain(value);
    for (const value of expected.fix ?? []) expect(d.fix).toContain(value);
    for (const value of expected.fixNot ?? []) expect(d.fix).not.toContain(value);
    expect(d.severity).toBe(expected.severity ?? "error");
    expect(d.reference).toBe(explainCode(c.code).reference);
    expect(d.reference).toMatch(/RFC|MCP/);
  });

  it("covers the era codes and the era-aware ones", () => {
    expect(new Set(eraCases.map((c) => c.code))).toEqual(
      new Set<DiagnosisCode>([
        "era_mismatch",
        "header_mismatch",
        "cimd_fetch_failed",
        "authorization_response_iss_mismatch",
        "client_capability_missing",
        "protocol_version_rejected",
        "sse_not_flushed",
        "registration_unavailable",
      ]),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The boundaries between the era codes and the legacy ones

describe("era boundaries", () => {
  it("a modern request refused by a legacy server is never protocol_version_rejected, session_not_found or mcp_endpoint_not_found", () => {
    for (const refusal of [
      f0().legacyRefusal(legacyVersionRefusal),
      f0().legacyRefusal("Bad Request: No valid session ID provided"),
      { status: 404, resWithout: ["content-type"], res: [["Content-Type", "text/plain"]] as Array<[string, string]>, reply: "Not Found" },
    ]) {
      const f = flow(V2_SDK);
      legacyOAuth(f);
      f.discover(refusal);
      expect(codes(f.diagnose("discover"))).toEqual(["era_mismatch"]);
    }
  });

  it("a plain 404 where the PRM puts MCP at another path is a wrong path, not an era", () => {
    const f = flow(V2_SDK);
    f.modernProbe();
    f.prm({ reply: json({ resource: "https://mcp.example.com/api/mcp", authorization_servers: ["https://mcp.example.com"] }) });
    f.asMetadata();
    f.register();
    f.authorize();
    f.consent();
    f.token();
    f.discover({ status: 404, resWithout: ["content-type"], res: [["Content-Type", "text/plain"]], reply: "Not Found" });
    const found = codes(f.diagnose("discover"));
    expect(found).toContain("mcp_endpoint_not_found");
    expect(found).not.toContain("era_mismatch");
  });

  it("waits for the client: no era_mismatch while a dual-era client may still fall back", () => {
    const f = flow(V2_SDK);
    legacyOAuth(f);
    f.discover(f.legacyRefusal());
    const inProgress = { ...f.handshake(null), outcome: "in_progress" as const };
    expect(codes(diagnose(inProgress, f.exchanges))).toEqual([]);
    expect(codes(diagnose({ ...inProgress, outcome: "failed", failedStep: "discover" }, f.exchanges))).toEqual(["era_mismatch"]);
  });

  it("the handshake's eraFallback alone silences era_mismatch", () => {
    const f = flow(V2_SDK);
    legacyOAuth(f);
    f.discover(f.legacyRefusal());
    f.eraFallback = true;
    expect(codes(f.diagnose("discover"))).toEqual([]);
  });

  it("a modern request with a header mismatch that a legacy server refuses for its session is era_mismatch", () => {
    const f = flow(V2_SDK);
    legacyOAuth(f);
    f.modernList({ without: ["mcp-method"], ...f.legacyRefusal("Bad Request: No valid session ID provided") });
    expect(codes(f.diagnose("list"))).toEqual(["era_mismatch"]);
  });

  it("a legacy initialize refused by a dual-era server that lacks that old version is protocol_version_rejected, not era_mismatch", () => {
    const f = flow({ ...CLAUDE, protocolVersion: "2024-11-05" });
    f.authorizeAll();
    f.initialize({
      ...modernOnlyRefusal,
      reply: rpcErrorData(-32022, "Unsupported protocol version: 2024-11-05", { supported: [MODERN, "2025-11-25", "2025-06-18"], requested: "2024-11-05" }),
    });
    const ds = f.diagnose("initialize");
    expect(codes(ds)).toEqual(["protocol_version_rejected"]);
    expect(ds[0]!.fix).toContain("The client is behind");
  });

  it("a CIMD client's unregistered redirect URI is reported once, as cimd_fetch_failed", () => {
    const f = flow(V2_SDK);
    f.modernProbe();
    f.prm();
    f.modernAsMetadata({ dcr: false });
    f.useCimd();
    f.authorize({
      status: 400,
      resWithout: ["content-type"],
      res: [JSON_TYPE],
      reply: json({ error: "invalid_redirect_uri", error_description: "redirect_uri is not registered" }),
    });
    expect(codes(f.diagnose("authorize"))).toEqual(["cimd_fetch_failed"]);
  });

  it("an iss mismatch is not reported before the client had the chance to redeem the code", () => {
    const f = flow(V2_SDK);
    f.modernProbe();
    f.prm();
    f.modernAsMetadata({ dcr: false });
    f.useCimd();
    f.authorize();
    f.responseIss = "https://mcp.example.com/";
    f.consent();
    expect(codes(diagnose({ ...f.handshake(null), outcome: "in_progress" }, f.exchanges))).toEqual([]);
  });
});

const f0 = () => flow(V2_SDK);
