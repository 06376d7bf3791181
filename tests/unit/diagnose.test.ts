import { describe, expect, it } from "vitest";
import { createClassifier } from "../../analysis/classify.js";
import { DIAGNOSIS_RULES, diagnose, explainCode } from "../../analysis/diagnose/index.js";
import { ERA_RULES } from "../../analysis/diagnose/eras.js";
import { FIELD_REPORT_RULES } from "../../analysis/diagnose/field-reports.js";
import type { ClassifiedExchange, HeaderPairs, RecordedBody, RecordedExchange } from "../../analysis/exchange.js";
import {
  DIAGNOSIS_CODES,
  type ClientFamily,
  type Diagnosis,
  type DiagnosisCode,
  type Handshake,
  type HandshakeStep,
  type Severity,
  type StepRecord,
} from "../../analysis/handshake.js";
import {
  type Client,
  CLAUDE,
  CHATGPT,
  CLAUDE_CODE,
  INSPECTOR,
  MCP_REMOTE,
  JSON_TYPE,
  HTML_TYPE,
  FORM_TYPE,
  SSE_TYPE,
  PRM,
  SESSION,
  CLIENT_ID,
  FP,
  marker,
  json,
  form,
  rpcError,
  type Tweak,
  Flow,
  flow,
  codes,
} from "../helpers/diagnose-flow.js";


// ---------------------------------------------------------------------------------------------
// Healthy handshakes: no diagnosis at all

describe("healthy handshakes", () => {
  const healthy: Array<[string, () => Flow]> = [
    ["Claude.ai: confidential client, SSE responses, sessions", () => flow(CLAUDE).authorizeAll().session()],
    [
      "ChatGPT: public client, JSON responses, stateless, Accept */*, OpenID variant tried first",
      () => {
        const f = flow(CHATGPT);
        f.probe();
        f.prm();
        f.get("authorization_server_metadata", "/.well-known/openid-configuration", {
          status: 404,
          res: [HTML_TYPE],
          reply: "<h1>Not Found</h1>",
        });
        f.asMetadata();
        f.register();
        f.authorize();
        f.consent();
        f.token();
        return f.session();
      },
    ],
    [
      "Claude Code: localhost callback, plain http, an idle GET stream closed at the end",
      () => {
        const f = flow(CLAUDE_CODE).authorizeAll();
        f.initialize();
        f.initialized();
        f.stream({ status: 200, res: [SSE_TYPE], reply: undefined, sseEvents: 0, aborted: true, durationMs: 95_000 });
        f.list();
        f.toolCall();
        f.teardown();
        return f;
      },
    ],
    ["MCP Inspector: browser, Origin and CORS preflights right", () => flow(INSPECTOR).authorizeAll().session()],
    ["mcp-remote: issuer with a path, TLS proxy without X-Forwarded-Proto", () => flow(MCP_REMOTE).authorizeAll().session()],
    [
      "an authless server",
      () => {
        const serverInfo = { name: "open", version: "1" };
        const f = flow(CLAUDE);
        f.probe({
          status: 200,
          res: [JSON_TYPE],
          resWithout: ["www-authenticate"],
          reply: json({ jsonrpc: "2.0", id: 0, result: { protocolVersion: "2025-06-18", capabilities: {}, serverInfo } }),
        });
        f.initialized({}, false);
        f.list({}, false);
        f.toolCall({}, false);
        return f;
      },
    ],
  ];

  it.each(healthy)("%s", (_name, build) => {
    const f = build();
    expect(f.diagnose(null)).toEqual([]);
  });

  it("the Inspector flow really exercises CORS (preflights and Origin present)", () => {
    const f = flow(INSPECTOR).authorizeAll().session();
    expect(f.exchanges.filter((e) => e.kind === "cors_preflight").length).toBeGreaterThan(3);
    expect(f.exchanges.find((e) => e.kind === "mcp_post")?.facts.origin).toBe(INSPECTOR.origin);
  });

  it("blames a missing registration_endpoint as soon as it is seen; the verdict waits for the client to stop", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata({ reply: json(f.asDoc({ registration_endpoint: undefined })) });
    const handshake = { ...f.handshake(null), outcome: "in_progress" as const };
    expect(codes(diagnose(handshake, f.exchanges))).toEqual(["registration_unavailable"]);
    expect(codes(diagnose({ ...handshake, outcome: "abandoned" }, f.exchanges))).toEqual(["registration_unavailable"]);
  });

  it("stays silent when the client goes on with a static client id instead of registering", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata({ reply: json(f.asDoc({ registration_endpoint: undefined })) });
    f.authorize();
    expect(codes(diagnose({ ...f.handshake(null), outcome: "in_progress" }, f.exchanges))).not.toContain("registration_unavailable");
  });

  it("a retried registration that gets a fresh client_id is not a stub", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata();
    f.register({ status: null, aborted: true, durationMs: 3_000 });
    f.register({}, "client-second");
    expect(codes(f.diagnose(null))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Each code fires on the traffic that shows it

interface Expectation {
  evidence: ClassifiedExchange[];
  /** Substrings of the summary: the concrete values. */
  says: string[];
  /** Substrings of the fix. */
  fix?: string[];
  /** Default: the step of the last exchange. */
  failed?: HandshakeStep | null;
  /** Other codes that rightly fire too. */
  also?: DiagnosisCode[];
  /** The code that must come first, when not the case's own (its cause fired too). */
  first?: DiagnosisCode;
  severity?: Severity;
}

interface Case {
  name: string;
  code: DiagnosisCode;
  build: (f: Flow) => Expectation;
  client?: Client;
}

const noChallenge: Tweak = { resWithout: ["www-authenticate"] };
const uptoAs = (f: Flow) => [f.probe(), f.prm(), f.asMetadata()] as const;

const cases: Case[] = [
  // --- probe ---------------------------------------------------------------------------------
  {
    name: "401 without WWW-Authenticate",
    code: "www_authenticate_missing",
    build: (f) => {
      const p = f.probe(noChallenge);
      return {
        evidence: [p],
        says: ["POST /mcp (#1)", "without a WWW-Authenticate"],
        fix: [`resource_metadata="https://mcp.example.com${PRM}/mcp"`],
      };
    },
  },
  {
    name: "WWW-Authenticate without resource_metadata",
    code: "www_authenticate_missing",
    build: (f) => {
      const p = f.probe({ ...noChallenge, res: [["WWW-Authenticate", 'Bearer realm="mcp"']] });
      return { evidence: [p], says: ['Bearer realm="mcp"', "no resource_metadata"] };
    },
  },
  {
    name: "no resource_metadata, but the client found the well-known URL: a warning",
    code: "www_authenticate_missing",
    build: (f) => {
      const p = f.probe(noChallenge);
      f.signIn();
      f.session();
      return { evidence: [p], says: ["without a WWW-Authenticate"], failed: null, severity: "warning" };
    },
  },
  ...(
    [
      ["relative", "/.well-known/oauth-protected-resource/mcp", "is relative"],
      ["the AS document", "https://mcp.example.com/.well-known/oauth-authorization-server", "is the authorization server metadata"],
      ["another host", "http://localhost:3000/.well-known/oauth-protected-resource/mcp", "is on host localhost:3000 while the client connected to mcp.example.com"],
    ] as const
  ).map(
    ([what, url, says]): Case => ({
      name: `resource_metadata ${what}`,
      code: "resource_metadata_url_invalid",
      build: (f) => {
        const p = f.probe({ ...noChallenge, res: [["WWW-Authenticate", `Bearer resource_metadata="${url}"`]] });
        return { evidence: [p], says: [url, says], fix: [`https://mcp.example.com${PRM}/mcp`] };
      },
    }),
  ),
  ...([403, 404, 405, 500] as const).map(
    (status): Case => ({
      name: `probe answered ${status}`,
      code: "probe_unexpected_status",
      build: (f) => {
        const p = f.probe({ ...noChallenge, status, reply: json({ error: status === 403 ? "forbidden" : "nope" }) });
        return { evidence: [p], says: ["POST /mcp (#1)", `answered ${status}`, "instead of 401"] };
      },
    }),
  ),
  {
    name: "406 to Accept: */*",
    code: "accept_header_rejected",
    client: CHATGPT,
    build: (f) => {
      const p = f.probe({
        ...noChallenge,
        status: 406,
        reply: rpcError("Not Acceptable: Client must accept both application/json and text/event-stream"),
      });
      return { evidence: [p], says: ["406", "Accept: */*", "Not Acceptable"], fix: ["*/*"] };
    },
  },
  // --- protected resource metadata -------------------------------------------------------
  {
    name: "PRM 404 at both variants",
    code: "protected_resource_metadata_missing",
    build: (f) => {
      f.probe();
      const a = f.prm({
        status: 404,
        reply: "Not Found",
        res: [["Content-Type", "text/plain"]],
        resWithout: ["content-type"],
      });
      const b = f.get("protected_resource_metadata", PRM, { status: 404, reply: "Not Found" });
      return {
        evidence: [a, b],
        says: [`GET ${PRM}/mcp (#2) → 404`, `GET ${PRM} (#3) → 404`],
        fix: [`https://mcp.example.com${PRM}/mcp`, '"resource": "https://mcp.example.com/mcp"'],
      };
    },
  },
  {
    name: "PRM behind the auth middleware",
    code: "protected_resource_metadata_missing",
    build: (f) => {
      f.probe();
      const a = f.prm({ status: 401, res: [["WWW-Authenticate", "Bearer"]], reply: json({ error: "invalid_token" }) });
      return { evidence: [a], says: ["401 (behind the auth middleware)"], fix: ["Exempt"] };
    },
  },
  {
    name: "PRM served by the SPA catch-all",
    code: "protected_resource_metadata_missing",
    build: (f) => {
      f.probe();
      const a = f.prm({
        resWithout: ["content-type"],
        res: [HTML_TYPE],
        reply: '<!doctype html><html><div id="root"></div></html>',
      });
      return { evidence: [a], says: ["200 HTML instead of JSON"], fix: ["catch-all"] };
    },
  },
  ...(
    [
      ["http when the client came over https", "http://mcp.example.com/mcp", "http instead of https", ["PUBLIC_URL=https://mcp.example.com", "X-Forwarded-Proto", "https://mcp.example.com/mcp"]],
      ["the origin only", "https://mcp.example.com", "origin only instead of /mcp", ['"resource": "https://mcp.example.com/mcp"']],
      ["a trailing slash", "https://mcp.example.com/mcp/", "trailing slash", ['"resource": "https://mcp.example.com/mcp"']],
      ["another host", "https://internal.example.net/mcp", "other host (internal.example.net)", ["PUBLIC_URL=https://mcp.example.com"]],
    ] as const
  ).map(
    ([what, resource, difference, fix]): Case => ({
      name: `PRM resource is ${what}`,
      code: "resource_mismatch",
      build: (f) => {
        const p = f.probe();
        const m = f.prm({ reply: json({ resource, authorization_servers: [CLAUDE.issuer] }) });
        return {
          evidence: [p, m],
          says: [`resource ${resource}`, "connected to https://mcp.example.com/mcp", difference], fix: [...fix],
        };
      },
    }),
  ),
  {
    name: "X-Forwarded-Proto ignored everywhere: resource_metadata and resource both http",
    code: "resource_mismatch",
    build: (f) => {
      const p = f.probe({
        ...noChallenge,
        res: [["WWW-Authenticate", `Bearer resource_metadata="http://mcp.example.com${PRM}/mcp"`]],
      });
      const m = f.prm({ reply: json({ resource: "http://mcp.example.com/mcp", authorization_servers: [CLAUDE.issuer] }) });
      return { evidence: [p, m], says: ["http instead of https"], fix: ["X-Forwarded-Proto"] };
    },
  },
  // --- authorization server metadata -----------------------------------------------------
  ...(["https://mcp.example.com/", "http://mcp.example.com", "https://mcp.example.com:443"] as const).map(
    (issuer): Case => ({
      name: `issuer ${issuer} for authorization server https://mcp.example.com`,
      code: "issuer_mismatch",
      build: (f) => {
        f.probe();
        const m = f.prm();
        const a = f.asMetadata({ reply: json(f.asDoc({ issuer })) });
        return {
          evidence: [m, a],
          says: [`issuer "${issuer}"`, 'authorization_servers[0] is "https://mcp.example.com"'],
          fix: ['exactly "https://mcp.example.com"'],
        };
      },
    }),
  ),
  {
    name: "AS metadata 404 at the root variants",
    code: "authorization_server_metadata_missing",
    build: (f) => {
      f.probe();
      f.prm();
      const a = f.asMetadata({ status: 404, reply: "Not Found" });
      const b = f.get("authorization_server_metadata", "/.well-known/openid-configuration", {
        status: 404,
        reply: "Not Found",
      });
      return {
        evidence: [a, b],
        says: ["issuer https://mcp.example.com", "/.well-known/oauth-authorization-server (#3) → 404", "/.well-known/openid-configuration (#4) → 404"],
        fix: ["https://mcp.example.com/.well-known/oauth-authorization-server"],
      };
    },
  },
  {
    name: "AS metadata only at the root while the issuer has a path",
    code: "authorization_server_metadata_missing",
    client: { ...CLAUDE, issuer: "https://mcp.example.com/tenant" },
    build: (f) => {
      f.probe();
      f.prm();
      const tried = [
        "/.well-known/oauth-authorization-server/tenant",
        "/.well-known/openid-configuration/tenant",
        "/tenant/.well-known/openid-configuration",
      ].map((path) => f.get("authorization_server_metadata", path, { status: 404, reply: "Not Found" }));
      return {
        evidence: tried,
        says: ["issuer https://mcp.example.com/tenant", "/tenant/.well-known/openid-configuration (#5) → 404"],
        fix: ["https://mcp.example.com/.well-known/oauth-authorization-server/tenant"],
      };
    },
  },
  {
    name: "no code_challenge_methods_supported",
    code: "pkce_s256_not_advertised",
    build: (f) => {
      f.probe();
      f.prm();
      const a = f.asMetadata({ reply: json(f.asDoc({ code_challenge_methods_supported: undefined })) });
      return {
        evidence: [a],
        says: ["has no code_challenge_methods_supported"],
        fix: ['"code_challenge_methods_supported": ["S256"]'],
      };
    },
  },
  {
    name: "only plain PKCE",
    code: "pkce_s256_not_advertised",
    build: (f) => {
      f.probe();
      f.prm();
      const a = f.asMetadata({ reply: json(f.asDoc({ code_challenge_methods_supported: ["plain"] })) });
      return { evidence: [a], says: ['["plain"] without S256'] };
    },
  },
  // --- registration ------------------------------------------------------------------------
  {
    name: "no registration_endpoint and no client id",
    code: "registration_unavailable",
    build: (f) => {
      f.probe();
      f.prm();
      const a = f.asMetadata({ reply: json(f.asDoc({ registration_endpoint: undefined })) });
      return {
        evidence: [a],
        says: ["has no registration_endpoint", "never presented a client id"],
        fix: ["registration_endpoint"],
      };
    },
  },
  {
    name: "/register answers 404",
    code: "registration_unavailable",
    build: (f) => {
      uptoAs(f);
      const r = f.register({
        status: 404,
        res: [["Content-Type", "text/plain"]],
        resWithout: ["content-type"],
        reply: "Cannot POST /register",
      });
      return { evidence: [r], says: ["POST /register (#4) answered 404", "Cannot POST /register"] };
    },
  },
  {
    name: "DCR rejects client_secret_post",
    code: "registration_rejected",
    build: (f) => {
      uptoAs(f);
      const r = f.register({
        status: 400,
        reply: json({ error: "invalid_client_metadata", error_description: "token_endpoint_auth_method client_secret_post is not supported" }),
      });
      return {
        evidence: [r],
        says: ["400", "invalid_client_metadata", "token_endpoint_auth_method=client_secret_post", CLAUDE.callback],
        fix: ['token_endpoint_auth_method "client_secret_post"'],
      };
    },
  },
  {
    name: "registration refused for a file: redirect URI: the fix does not tell the server to accept it",
    code: "registration_rejected",
    build: (f) => {
      uptoAs(f);
      const r = f.register({
        body: json({ client_name: "x", redirect_uris: ["file:///etc/passwd", "http://evil.example/cb"] }),
        status: 400,
        reply: json({ error: "invalid_redirect_uri", error_description: "redirect_uris: file: scheme" }),
      });
      return { evidence: [r], says: ["400", "invalid_redirect_uri"], fix: ["refusing them is right"] };
    },
  },
  {
    name: "two registrations get the same client_id",
    code: "registration_stub",
    build: (f) => {
      uptoAs(f);
      const a = f.register();
      const b = f.register();
      return { evidence: [a, b], says: [`both got client_id ${CLIENT_ID}`] };
    },
  },
  {
    // The headline case: a callback the AS does not allow (claude.com beside claude.ai)
    // that the registration had accepted is the authorize step's fixed list, not a stub.
    name: "registration accepted the callback, authorize rejects it: the authorize step's fixed list",
    code: "redirect_uri_rejected",
    build: (f) => {
      uptoAs(f);
      const r = f.register();
      const a = f.authorize({
        status: 400,
        res: [JSON_TYPE],
        resWithout: ["content-type"],
        reply: json({ error: "invalid_request", error_description: "redirect_uri is not registered for this client" }),
      });
      return {
        evidence: [r, a],
        says: [`rejected redirect_uri ${CLAUDE.callback}`, "although registration", "not registered"],
        fix: ["redirect_uris this client registered"],
      };
    },
  },
  {
    name: "registration response drops redirect_uris (the flow still worked): a warning",
    code: "registration_stub",
    build: (f) => {
      uptoAs(f);
      const r = f.register({ reply: json({ client_id: CLIENT_ID, client_secret: marker(FP.secret) }) });
      f.authorize();
      f.consent();
      f.token();
      f.session();
      return { evidence: [r], says: ["does not return them", CLAUDE.callback], failed: null, severity: "warning" };
    },
  },
  // --- authorize and callback --------------------------------------------------------------
  {
    name: "claude.com callback not registered (cached client id, no registration)",
    code: "redirect_uri_rejected",
    client: { ...CLAUDE, callback: "https://claude.com/api/mcp/auth_callback" },
    build: (f) => {
      uptoAs(f);
      const a = f.authorize({
        status: 400,
        resWithout: ["content-type"],
        res: [JSON_TYPE],
        reply: json({ error: "invalid_request", error_description: "Invalid redirect_uri" }),
      });
      return {
        evidence: [a],
        says: ["rejected redirect_uri https://claude.com/api/mcp/auth_callback", `client ${CLIENT_ID}`, "Invalid redirect_uri"],
        fix: ["Register https://claude.com/api/mcp/auth_callback next to claude.ai's"],
      };
    },
  },
  {
    name: "ChatGPT's per-connector callback rejected on an HTML error page",
    code: "redirect_uri_rejected",
    client: { ...CHATGPT, callback: "https://chatgpt.com/connector/oauth/abc123" },
    build: (f) => {
      uptoAs(f);
      const a = f.authorize({
        status: 400,
        reply: "<html><body><h1>Error</h1><p>Unregistered redirect URI.</p></body></html>",
      });
      return { evidence: [a], says: ["https://chatgpt.com/connector/oauth/abc123", "Unregistered redirect URI"] };
    },
  },
  {
    name: "Claude Code's loopback callback on another port",
    code: "redirect_uri_rejected",
    client: CLAUDE_CODE,
    build: (f) => {
      uptoAs(f);
      const a = f.authorize({
        status: 400,
        resWithout: ["content-type"],
        res: [JSON_TYPE],
        reply: json({ error: "invalid_redirect_uri" }),
      });
      return { evidence: [a], says: ["http://localhost:54212/callback"], fix: ["any port"] };
    },
  },
  {
    name: "the sign-in page fails in the user's browser (the bundled server refusing a Coda token)",
    code: "sign_in_failed",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      const c = f.add(
        { step: "authorize", method: "POST", path: "/authorize/decision", status: 400, navigation: true },
        { req: [FORM_TYPE], body: "request=r-1&coda_token=x", res: [HTML_TYPE], reply: "<html><p>Coda did not accept this token.</p></html>" },
      );
      return {
        evidence: [c],
        says: ["POST /authorize/decision", "answered 400", "Coda did not accept this token", "no redirect back to the client"],
        fix: ["coda.io/account"],
      };
    },
  },
  {
    name: "invalid_scope for the fallback scope",
    code: "scope_rejected",
    build: (f) => {
      uptoAs(f);
      f.register();
      const a = f.authorize(
        {
          status: 302,
          resWithout: ["content-type"],
          res: [["Location", `${CLAUDE.callback}?error=invalid_scope&error_description=scope+openid+is+not+supported&state=st-91c2`]],
          reply: "",
        },
        { scope: "openid profile" },
      );
      return { evidence: [a], says: ["invalid_scope", 'scope "openid profile"', '["mcp"]'] };
    },
  },
  {
    name: "invalid_target for the resource the metadata names",
    code: "resource_rejected",
    build: (f) => {
      const [, prm] = uptoAs(f);
      f.register();
      const a = f.authorize({
        status: 302,
        resWithout: ["content-type"],
        res: [["Location", `${CLAUDE.callback}?error=invalid_target&error_description=AADSTS9010010&state=st-91c2`]],
        reply: "",
      });
      return { evidence: [a, prm], says: ["invalid_target", "AADSTS9010010", "the protected resource metadata names"], fix: ["RFC 8707", "must ignore the parameter"] };
    },
  },
  {
    name: "consent answered with 307",
    code: "authorization_redirect_status",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      const c = f.consent({ status: 307 });
      return {
        evidence: [c],
        says: ["with 307", `Location: ${CLAUDE.callback}?code=`], fix: ["302 Found or 303 See Other"],
      };
    },
  },
  // --- token -------------------------------------------------------------------------------
  {
    name: "token endpoint parses JSON only",
    code: "token_request_rejected",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      f.consent();
      const t = f.token({
        status: 415,
        reply: json({ error: "invalid_request", error_description: "Content-Type must be application/json" }),
      });
      return {
        evidence: [t],
        says: ["415", "Content-Type: application/x-www-form-urlencoded", "must be application/json"],
        fix: ["application/x-www-form-urlencoded"],
      };
    },
  },
  {
    name: "token endpoint ignores client_secret_post",
    code: "token_request_rejected",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      f.consent();
      const t = f.token({
        status: 401,
        reply: json({ error: "invalid_client", error_description: "Client authentication failed" }),
      });
      return {
        evidence: [t],
        says: ["client authentication: client_secret_post", "invalid_client: Client authentication failed"],
        fix: ["client_secret_post"],
      };
    },
  },
  {
    name: "token endpoint answers HTML",
    code: "token_request_rejected",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      f.consent();
      const t = f.token({ resWithout: ["content-type"], res: [HTML_TYPE], reply: "<html>Signed in!</html>" });
      return { evidence: [t], says: ["text/html", "without an access_token"], fix: ["application/json"] };
    },
  },
  {
    name: "code redeemed twice after the client gave up on the first call",
    code: "token_invalid_grant",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      f.consent();
      const first = f.token({
        status: null,
        aborted: true,
        durationMs: 10_200,
        reply: undefined,
        res: [],
        resWithout: ["content-type", "cache-control"],
      });
      const second = f.token({
        status: 400,
        reply: json({ error: "invalid_grant", error_description: "Invalid authorization code" }),
      });
      return {
        evidence: [first, second],
        says: ["already redeemed by POST /token (#7)", "Invalid authorization code"],
        also: ["slow_response"],
        first: "slow_response",
      };
    },
  },
  {
    name: "redirect_uri differs from the authorize request",
    code: "token_invalid_grant",
    build: (f) => {
      uptoAs(f);
      f.register();
      const a = f.authorize();
      f.consent();
      const t = f.token({
        status: 400,
        reply: json({ error: "invalid_grant" }) }, { redirect_uri: "https://claude.com/api/mcp/auth_callback",
      });
      return {
        evidence: [a, t],
        says: ["redirect_uri https://claude.com/api/mcp/auth_callback differs", CLAUDE.callback],
      };
    },
  },
  {
    name: "code redeemed five minutes after it was issued",
    code: "token_invalid_grant",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      const c = f.consent();
      const t = f.token({
        gap: 300_000,
        status: 400,
        reply: json({ error: "invalid_grant", error_description: "code expired" }),
      });
      return { evidence: [c, t], says: ["300.0 s after", "expired"] };
    },
  },
  {
    name: "PKCE verification failed",
    code: "token_invalid_grant",
    build: (f) => {
      uptoAs(f);
      f.register();
      const a = f.authorize();
      f.consent();
      const t = f.token({
        status: 400,
        reply: json({ error: "invalid_grant", error_description: "PKCE verification failed" }),
      });
      return { evidence: [a, t], says: ["PKCE verifier does not match"] };
    },
  },
  {
    name: "token for the origin, MCP route checks /mcp",
    code: "token_audience_mismatch",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      f.consent();
      const t = f.token({}, { resource: "https://mcp.example.com" });
      const i = f.initialize({
        status: 401,
        res: [["WWW-Authenticate", 'Bearer error="invalid_token", error_description="Token was not issued for this resource"'], JSON_TYPE],
        resWithout: ["content-type", "mcp-session-id"],
        reply: json({ error: "invalid_token", error_description: "Token was not issued for this resource" }),
        sseEvents: null,
      });
      return {
        evidence: [t, i],
        says: ["answered 401", "requested for resource https://mcp.example.com,", "the MCP URL is https://mcp.example.com/mcp", "not issued for this resource"],
        fix: ["exactly https://mcp.example.com/mcp"],
      };
    },
  },
  // --- transport ---------------------------------------------------------------------------
  {
    name: "/mcp redirects to /mcp/",
    code: "mcp_endpoint_redirect",
    build: (f) => {
      const p = f.probe({
        ...noChallenge,
        status: 307,
        res: [["Location", "https://mcp.example.com/mcp/"]],
        reply: "",
      });
      return { evidence: [p], says: ["answered 307 → https://mcp.example.com/mcp/"], fix: ["redirect_slashes=False"] };
    },
  },
  {
    name: "/mcp redirects to http",
    code: "mcp_endpoint_redirect",
    build: (f) => {
      const p = f.probe({ ...noChallenge, status: 301, res: [["Location", "http://mcp.example.com/mcp"]], reply: "" });
      return { evidence: [p], says: ["301 → http://mcp.example.com/mcp"], fix: ["X-Forwarded-Proto"] };
    },
  },
  {
    name: "connector at / while MCP is mounted at /mcp",
    code: "mcp_endpoint_not_found",
    client: { ...CLAUDE, url: "https://mcp.example.com/" },
    build: (f) => {
      f.probe();
      const m = f.prm({
        reply: json({ resource: "https://mcp.example.com/mcp", authorization_servers: [CLAUDE.issuer] }),
      });
      f.asMetadata();
      f.register();
      f.authorize();
      f.consent();
      f.token();
      const i = f.initialize({
        status: 404,
        resWithout: ["content-type", "mcp-session-id"],
        res: [HTML_TYPE],
        reply: "<pre>Cannot POST /</pre>",
        sseEvents: null,
      });
      return {
        evidence: [m, i],
        says: ["POST / (#8) answered 404", "Cannot POST /", "resource is https://mcp.example.com/mcp"],
        fix: ["Point the connector at https://mcp.example.com/mcp"],
        also: ["resource_mismatch"],
      };
    },
  },
  {
    name: "the MCP route is missing behind the auth middleware",
    code: "mcp_endpoint_not_found",
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize({
        status: 404,
        resWithout: ["content-type", "mcp-session-id"],
        res: [JSON_TYPE],
        reply: json({ error: "not_found", message: "Cannot POST /mcp" }),
        sseEvents: null,
      });
      return { evidence: [i], says: ['POST /mcp (#8) answered 404 "not_found: Cannot POST /mcp"'] };
    },
  },
  {
    name: "421 from the server's Host check",
    code: "host_header_rejected",
    build: (f) => {
      const p = f.probe({
        ...noChallenge,
        status: 421,
        reply: json({ error: "misdirected_request", error_description: "This server answers for coda.example.com, not 'mcp.example.com'" }),
      });
      return {
        evidence: [p],
        says: ["421", "rejected Host mcp.example.com", "not 'mcp.example.com'"],
        fix: ["mcp.example.com", "proxy_set_header Host $host"],
      };
    },
  },
  {
    name: "403 Invalid Host header (MCP SDK DNS-rebinding protection)",
    code: "host_header_rejected",
    build: (f) => {
      const p = f.probe({ ...noChallenge, status: 403, reply: rpcError("Invalid Host header: mcp.example.com") });
      return { evidence: [p], says: ["403", "Invalid Host header: mcp.example.com"] };
    },
  },
  {
    name: "the Inspector's Origin is not allowed",
    code: "origin_rejected",
    client: INSPECTOR,
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize({
        status: 403,
        resWithout: ["content-type", "mcp-session-id"],
        res: [JSON_TYPE],
        reply: rpcError("Origin http://localhost:6274 is not allowed"),
        sseEvents: null,
      });
      return {
        evidence: [i],
        says: ["from Origin http://localhost:6274 answered 403", "is not allowed"],
        fix: ["Allow http://localhost:6274"],
      };
    },
  },
  {
    name: "SSE initialize response never flushed: the client gave up with 0 events",
    code: "sse_not_flushed",
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize({ aborted: true, durationMs: 30_000, sseEvents: 0, reply: undefined });
      return {
        evidence: [i],
        says: ["POST /mcp (#8) answered 200 text/event-stream", "no event came before the client gave up after 30.0 s"],
        fix: ["proxy_buffering off;", "X-Accel-Buffering: no"],
      };
    },
  },
  {
    name: "SSE headers 15 s late",
    code: "sse_not_flushed",
    build: (f) => {
      f.authorizeAll();
      f.initialize();
      f.initialized();
      const l = f.list({ ttfbMs: 15_000, durationMs: 15_020 });
      return { evidence: [l], says: ["headers arrived only after 15.0 s"] };
    },
  },
  {
    name: "GET stream with no event, the stream step failed",
    code: "sse_not_flushed",
    client: CLAUDE_CODE,
    build: (f) => {
      f.authorizeAll();
      f.initialize();
      f.initialized();
      const s = f.stream({ status: 200, res: [SSE_TYPE], sseEvents: 0, aborted: true, durationMs: 60_000 });
      return { evidence: [s], says: ["GET /mcp", "no event in 60.0 s"], failed: "stream" };
    },
  },
  {
    name: "notifications/initialized without Mcp-Session-Id",
    code: "session_not_found",
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize();
      const n = f.initialized({
        without: ["mcp-session-id"],
        status: 400,
        res: [JSON_TYPE],
        reply: rpcError("Bad Request: Mcp-Session-Id header is required"),
      });
      return {
        evidence: [i, n],
        says: ["notifications/initialized POST /mcp (#9) came without Mcp-Session-Id", `assigned ${SESSION}`, "Bad Request: Mcp-Session-Id header is required"],
      };
    },
  },
  {
    name: "another replica does not know the session",
    code: "session_not_found",
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize();
      f.initialized();
      const l = f.list({
        status: 404,
        resWithout: ["content-type"],
        res: [JSON_TYPE],
        reply: rpcError("Session not found", -32001),
        sseEvents: null,
      });
      return {
        evidence: [i, l],
        says: [`sent Mcp-Session-Id ${SESSION}`, "answered 404", "Session not found"], fix: ["sticky routing"],
      };
    },
  },
  {
    name: "MCP-Protocol-Version rejected",
    code: "protocol_version_rejected",
    client: { ...CLAUDE, protocolVersion: "2025-11-25" },
    build: (f) => {
      f.authorizeAll();
      f.initialize();
      const n = f.initialized({
        status: 400,
        res: [JSON_TYPE],
        reply: rpcError("Bad Request: Unsupported protocol version: 2025-11-25 (supported versions: 2025-06-18, 2025-03-26)"),
      });
      return {
        evidence: [n],
        says: ["protocol version 2025-11-25 answered 400", "Unsupported protocol version"],
        fix: ["upgrade the server's MCP SDK"],
      };
    },
  },
  {
    name: "initialize answered an old version and the client stopped",
    code: "protocol_version_rejected",
    client: { ...CLAUDE, protocolVersion: "2025-11-25" },
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize({}, "2024-11-05");
      return { evidence: [i], says: ["asked for protocol version 2025-11-25", "answered 2024-11-05"] };
    },
  },
  {
    name: "preflight does not allow mcp-protocol-version",
    code: "cors_preflight_failed",
    client: INSPECTOR,
    build: (f) => {
      f.authorizeAll();
      f.initialize();
      const asked = ["authorization", "content-type", "mcp-protocol-version", "mcp-session-id"];
      const p = f.preflight("initialized", "/mcp", "POST", asked, {
        resWithout: ["access-control-allow-headers"],
        res: [["Access-Control-Allow-Headers", "Content-Type, Authorization, Mcp-Session-Id"]],
      });
      return {
        evidence: [p],
        says: ["OPTIONS /mcp", "from http://localhost:6274 for POST", "lacks mcp-protocol-version", "the browser never sent the request"],
        fix: ["MCP-Protocol-Version"],
      };
    },
  },
  {
    name: "preflight answered 401 by the auth middleware",
    code: "cors_preflight_failed",
    client: INSPECTOR,
    build: (f) => {
      const p = f.preflight("probe", "/mcp", "POST", ["content-type"], {
        status: 401,
        resWithout: ["access-control-allow-origin"],
      });
      return {
        evidence: [p],
        says: ["answered 401 (the auth middleware runs before CORS)"],
        fix: ["before any auth check"],
      };
    },
  },
  {
    name: "Mcp-Session-Id not exposed to the browser, so the next call lacks it",
    code: "cors_expose_headers_missing",
    client: INSPECTOR,
    build: (f) => {
      f.authorizeAll();
      const i = f.initialize({ resWithout: ["access-control-expose-headers"] });
      const n = f.initialized({
        without: ["mcp-session-id"],
        status: 400,
        res: [JSON_TYPE],
        reply: rpcError("Bad Request: Mcp-Session-Id header is required"),
      });
      return {
        evidence: [i, n],
        says: ["assigned Mcp-Session-Id to the browser client at http://localhost:6274", "came without it"],
        fix: ["Access-Control-Expose-Headers: Mcp-Session-Id"],
        also: ["session_not_found"],
      };
    },
  },
  // --- edge ----------------------------------------------------------------------------------
  {
    name: "upstream refused the connection",
    code: "upstream_unreachable",
    build: (f) => {
      const p = f.probe({
        ...noChallenge,
        status: 502,
        upstreamError: "upstream_refused",
        res: [["x-mcp-lens-error", "upstream_refused"]],
        reply: rpcError("cannot reach the upstream http://127.0.0.1:8081: ECONNREFUSED"),
      });
      return { evidence: [p], says: ["POST /mcp (#1)", "refused", "client got 502"], fix: ["--upstream"] };
    },
  },
  {
    name: "upstream timed out on the token call",
    code: "upstream_timeout",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      f.consent();
      const t = f.token({
        status: 504,
        upstreamError: "upstream_timeout",
        durationMs: 120_000,
        ttfbMs: 120_000,
        reply: json({ error: "upstream_timeout" }),
      });
      return {
        evidence: [t],
        says: ["POST /token (#7)", "within 120.0 s", "answered 504"],
        fix: ["--upstream-timeout"],
      };
    },
  },
  {
    name: "slow AS metadata the client still waited for: a warning",
    code: "slow_response",
    build: (f) => {
      f.probe();
      f.prm();
      const a = f.asMetadata({ durationMs: 12_500 });
      f.register();
      f.authorize();
      f.consent();
      f.token();
      f.session();
      return {
        evidence: [a],
        says: ["/.well-known/oauth-authorization-server (#3) took 12.5 s"],
        failed: null,
        severity: "warning",
      };
    },
  },
  {
    name: "slow registration the client gave up on: an error",
    code: "slow_response",
    build: (f) => {
      uptoAs(f);
      const r = f.register({
        status: null,
        aborted: true,
        durationMs: 9_900,
        reply: undefined,
        res: [],
        resWithout: ["content-type"],
      });
      return { evidence: [r], says: ["POST /register (#4) took 9.9 s and the client gave up"] };
    },
  },
  {
    name: "Cloudflare challenge on /mcp",
    code: "waf_block",
    build: (f) => {
      const p = f.probe({
        ...noChallenge,
        status: 403,
        resWithout: ["www-authenticate", "content-type"],
        res: [["cf-mitigated", "challenge"], HTML_TYPE, ["Server", "cloudflare"]],
        reply: '<!DOCTYPE html><html><head><title>Just a moment...</title></head><body><script src="/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1"></script></body></html>',
      });
      return {
        evidence: [p],
        says: ["POST /mcp (#1) answered 403", "cf-mitigated: challenge"],
        fix: ["/mcp", "bot protection"],
      };
    },
  },
  {
    name: "a WAF block page on the PRM",
    code: "waf_block",
    build: (f) => {
      f.probe();
      const m = f.prm({
        status: 403,
        resWithout: ["content-type"],
        res: [HTML_TYPE],
        reply: "<html><title>Attention Required! | Cloudflare</title><div class='cf-error-details'>blocked</div></html>",
      });
      return { evidence: [m], says: [`GET ${PRM}/mcp (#2) answered 403`, "Attention Required! | Cloudflare"] };
    },
  },
  // --- after connecting ----------------------------------------------------------------------
  {
    name: "no refresh_token issued: a warning",
    code: "refresh_token_missing",
    build: (f) => {
      uptoAs(f);
      f.register();
      f.authorize();
      f.consent();
      const t = f.token({}, {}, { refresh_token: undefined });
      f.session();
      return {
        evidence: [t],
        says: ["POST /token (#7) has no refresh_token", "expires in 3600 s"],
        failed: null,
        severity: "warning",
      };
    },
  },
  {
    name: "the refresh_token grant fails",
    code: "refresh_token_missing",
    build: (f) => {
      f.authorizeAll().session();
      const r = f.refresh({
        status: 400,
        reply: json({ error: "invalid_grant", error_description: "refresh token not found" }),
      });
      return { evidence: [r], says: ["refresh_token grant POST /token", "answered 400", "refresh token not found"] };
    },
  },
];

describe("each code fires on the traffic that shows it", () => {
  it.each(cases.map((c) => [`${c.code}: ${c.name}`, c] as const))("%s", (_name, c) => {
    const f = flow(c.client);
    const expected = c.build(f);
    const failed = expected.failed === undefined ? f.lastStep : expected.failed;
    const ds = f.diagnose(failed);

    expect(codes(ds).sort()).toEqual([c.code, ...(expected.also ?? [])].sort());
    expect(ds[0]?.code).toBe(expected.first ?? c.code); // most decisive first
    const d = ds.find((x) => x.code === c.code)!;
    expect(d.evidence).toEqual(expected.evidence.map((e) => e.id).sort((a, b) => a - b));
    for (const value of expected.says) expect(d.summary).toContain(value);
    for (const value of expected.fix ?? []) expect(d.fix).toContain(value);
    expect(d.severity).toBe(expected.severity ?? "error");
    expect(d.reference).toBe(explainCode(c.code).reference);
    for (const each of ds) {
      expect(each.evidence.every((id) => f.exchanges.some((e) => e.id === id))).toBe(true);
      expect(each.fix.length).toBeGreaterThan(20);
    }
  });

  it("covers every code of the stages before the eras' and the field reports' (each has its own file)", () => {
    const elsewhere = new Set([...ERA_RULES, ...FIELD_REPORT_RULES].map((r) => r.code));
    expect(new Set(cases.map((c) => c.code))).toEqual(new Set(DIAGNOSIS_CODES.filter((c) => !elsewhere.has(c))));
  });
});

// ---------------------------------------------------------------------------------------------
// Ordering, dedupe, purity

describe("ordering and dedupe", () => {
  it("puts the cause of the failed step before an earlier problem the client tolerated", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata({ reply: json(f.asDoc({ issuer: "https://mcp.example.com/" })) });
    f.register();
    f.authorize();
    f.consent();
    f.token({ status: 415, reply: json({ error: "invalid_request", error_description: "JSON body expected" }) });
    expect(codes(f.diagnose("token"))).toEqual(["token_request_rejected", "issuer_mismatch"]);
  });

  it("one headline: authorize rejecting a redirect_uri the registration accepted is redirect_uri_rejected alone", () => {
    const f = flow(CLAUDE);
    uptoAs(f);
    const r = f.register();
    const a = f.authorize({
      status: 400,
      resWithout: ["content-type"],
      res: [JSON_TYPE],
      reply: json({ error: "invalid_request", error_description: "bad redirect_uri" }),
    });
    const ds = f.diagnose("authorize");
    expect(codes(ds)).toEqual(["redirect_uri_rejected"]);
    expect(ds[0]!.evidence).toEqual([r.id, a.id]);
    expect(ds[0]!.summary).toContain(`although registration POST /register (#${r.id}) listed it`);
  });

  it("downgrades errors to warnings when the handshake succeeded anyway", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata({ reply: json(f.asDoc({ issuer: "https://mcp.example.com/" })) });
    f.register();
    f.authorize();
    f.consent();
    f.token();
    f.session();
    const ds = f.diagnose(null);
    expect(ds.map((d) => [d.code, d.severity])).toEqual([["issuer_mismatch", "warning"]]);
    expect(explainCode("issuer_mismatch").severity).toBe("error");
  });

  it("keeps an error the traffic proves even when the grouping called the handshake a success", () => {
    const f = flow(INSPECTOR).authorizeAll();
    f.preflight("initialize", "/mcp", "POST", ["authorization", "content-type"], {
      resWithout: ["access-control-allow-headers"],
      res: [["Access-Control-Allow-Headers", "content-type"]],
    });
    const ds = f.diagnose(null);
    expect(ds.map((d) => [d.code, d.severity])).toEqual([["cors_preflight_failed", "error"]]);
  });

  it("does not downgrade when a step failed, whatever the outcome says", () => {
    const f = flow(CLAUDE).authorizeAll();
    f.initialize();
    f.initialized({ status: 404, res: [JSON_TYPE], reply: rpcError("Session not found", -32001) });
    const handshake = { ...f.handshake("initialized"), outcome: "succeeded" as const, failedStep: null };
    expect(diagnose(handshake, f.exchanges).map((d) => [d.code, d.severity])).toEqual([["session_not_found", "error"]]);
  });

  it("puts errors before warnings", () => {
    const f = flow(CLAUDE);
    f.probe();
    f.prm();
    f.asMetadata({ durationMs: 11_000 });
    f.register();
    f.authorize();
    f.consent();
    f.token({ status: 400, reply: json({ error: "invalid_grant" }) });
    const ds = f.diagnose("token");
    expect(codes(ds)).toEqual(["token_invalid_grant", "slow_response"]);
    expect(ds.map((d) => d.severity)).toEqual(["error", "warning"]);
  });

  it("reports a code once, with every exchange that shows it", () => {
    const f = flow(CLAUDE).authorizeAll();
    const init = f.initialize();
    const notFound: Tweak = {
      status: 404,
      resWithout: ["content-type"],
      res: [JSON_TYPE],
      reply: rpcError("Session not found", -32001),
      sseEvents: null,
    };
    const lost = [1, 2, 3].map(() => f.list(notFound));
    const ds = f.diagnose("list");
    expect(codes(ds)).toEqual(["session_not_found"]);
    expect(ds[0]!.evidence).toEqual([init.id, ...lost.map((e) => e.id)]);
    expect(ds[0]!.summary).toContain("(and 2 more)");
  });

  it("is pure: same answer twice, inputs untouched, order of the input irrelevant", () => {
    const f = flow(CLAUDE);
    f.probe(noChallenge);
    f.prm({ status: 404, reply: "Not Found" });
    const handshake = f.handshake("protected_resource_metadata");
    const before = structuredClone({ handshake, exchanges: f.exchanges });
    const first = diagnose(handshake, f.exchanges);
    expect(diagnose(handshake, [...f.exchanges].reverse())).toEqual(first);
    expect({ handshake, exchanges: f.exchanges }).toEqual(before);
    expect(codes(first)).toEqual(["protected_resource_metadata_missing", "www_authenticate_missing"]);
  });
});

describe("the rules table", () => {
  it("has one rule per code, in DIAGNOSIS_CODES order", () => {
    expect(DIAGNOSIS_RULES.map((r) => r.code)).toEqual([...DIAGNOSIS_CODES]);
  });

  it.each([...DIAGNOSIS_CODES])("explains %s", (code) => {
    const explained = explainCode(code);
    expect(explained.code).toBe(code);
    expect(["error", "warning", "info"]).toContain(explained.severity);
    expect(explained.reference).toMatch(/RFC|MCP|Fetch|OpenID|field guide/);
    expect(explained.meaning.length).toBeGreaterThan(30);
    expect(explained.steps.length).toBeGreaterThan(0);
  });

  it("refuses an unknown code", () => {
    expect(() => explainCode("nope" as DiagnosisCode)).toThrow(/unknown/);
  });
});

describe("documentation", () => {
  it("the README lists every diagnosis code", async () => {
    const { readFileSync } = await import("node:fs");
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
    for (const code of DIAGNOSIS_CODES) expect(readme, code).toContain(`| \`${code}\` |`);
  });
});
