// Diagnosis rules: which step of a connector handshake failed, why, the exchanges that prove it
// and what to change (shared/reference/connector-handshake.md, "Failure catalogue").
//
// Pure: a function of one handshake and its classified exchanges, no I/O and no clock, so the
// inspector can re-run it over stored rows. Rules key on what is visible on the wire.
//
// One answer, one cause: the specific causes "claim" an exchange (an upstream failure, a WAF page,
// a Host or Origin check, an Accept check, a redirect on the MCP URL, a protocol-version error),
// and the generic status rules (probe status, missing metadata, rejected token call…) skip
// claimed exchanges.

import { HOSTED_FAMILIES } from "../client-family.js";
import type { ClassifiedExchange, ExchangeKind, HeaderPairs, RecordedBody } from "../exchange.js";
import {
  DIAGNOSIS_CODES,
  HANDSHAKE_STEPS,
  type Diagnosis,
  type DiagnosisCode,
  type Handshake,
  type HandshakeStep,
  type Severity,
} from "../handshake.js";

// ---------------------------------------------------------------------------------------------
// Public API

/** What a rule found: the rule supplies code, reference and default severity. */
export interface Finding {
  summary: string;
  evidence: number[];
  fix: string;
  /** The severity the traffic shows (e.g. a slow answer the client still waited for), over the rule's default. */
  severity?: Severity;
}

export interface DiagnosisRule {
  code: DiagnosisCode;
  severity: Severity;
  reference: string;
  /** What the code means, for docs and help. */
  meaning: string;
  /** Steps whose failure this cause explains: it ranks first when one of them failed. */
  steps: readonly HandshakeStep[];
  /** Codes that show up as symptoms of this cause: when both fire on shared evidence, this goes first. */
  explains?: readonly DiagnosisCode[];
  check(ctx: DiagnosisContext): Finding | null;
}

export interface CodeExplanation {
  code: DiagnosisCode;
  severity: Severity;
  reference: string;
  meaning: string;
  steps: readonly HandshakeStep[];
}

/** The URL the client connected to, as far as the traffic shows. */
export interface ConnectorUrl {
  /** Normalised by WHATWG URL: lowercase scheme and host, default port dropped, path as sent. */
  url: string;
  origin: string;
  host: string;
  path: string;
  scheme: "http" | "https";
  /** X-Forwarded-Proto/Forwarded said so; a hosted client (they dial https only); or a guess. */
  schemeFrom: "forwarded" | "hosted_client" | "assumed";
  /** The exchange the URL was read from. */
  exchangeId: number;
}

export interface DiagnosisContext {
  readonly handshake: Handshake;
  /** Sorted by id. */
  readonly exchanges: readonly ClassifiedExchange[];
  /** Unauthenticated initialize requests (else the first unauthenticated MCP POST). */
  readonly probes: readonly ClassifiedExchange[];
  /** An unauthenticated initialize succeeded: the server is authless. */
  readonly authless: boolean;
  readonly connector: ConnectorUrl | undefined;
  /** The first protected resource metadata document that came back. */
  readonly prm: ClassifiedExchange | undefined;
  /** Authorization server metadata / OpenID configuration documents that came back. */
  readonly asDocs: readonly ClassifiedExchange[];
  of(...kinds: ExchangeKind[]): ClassifiedExchange[];
}

export function diagnose(handshake: Handshake, exchanges: ClassifiedExchange[]): Diagnosis[] {
  const ctx = contextOf(handshake, exchanges);
  // Errors are causes of a failed step. When nothing failed, a rule's default "error" becomes a
  // warning (it will break later, or stricter clients); a severity the rule judged from the traffic stands.
  const nothingFailed = handshake.outcome === "succeeded" && !handshake.steps.some((s) => s.status === "failed");
  const found: Found[] = [];
  DIAGNOSIS_RULES.forEach((rule, index) => {
    const finding = rule.check(ctx);
    if (!finding) return;
    const severity = finding.severity ?? (nothingFailed && rule.severity === "error" ? "warning" : rule.severity);
    const diagnosis: Diagnosis = {
      code: rule.code,
      severity,
      summary: finding.summary,
      evidence: [...new Set(finding.evidence)].sort((a, b) => a - b),
      fix: finding.fix,
      reference: rule.reference,
    };
    found.push({ diagnosis, index, rule });
  });
  // Most decisive first: errors, then those whose evidence is the failed step's own exchanges,
  // then those that explain that kind of step, then the earliest in the flow (a cause precedes
  // its effects), then table order. One rule per code, so codes are unique.
  const failedIds = new Set(handshake.steps.filter((s) => s.status === "failed").flatMap((s) => s.exchangeIds));
  const key = ({ diagnosis: d, index, rule }: Found) => [
    SEVERITY_RANK[d.severity],
    d.evidence.some((id) => failedIds.has(id)) ? 0 : 1,
    handshake.failedStep !== null && rule.steps.includes(handshake.failedStep) ? 0 : 1,
    d.evidence[0] ?? Number.MAX_SAFE_INTEGER,
    index,
  ];
  const ordered = found
    .map((f) => ({ f, k: key(f) }))
    .sort((a, b) => compareKeys(a.k, b.k))
    .map(({ f }) => f);
  for (const cause of [...ordered]) {
    const at = ordered.indexOf(cause);
    const symptom = ordered.findIndex((f) => explains(cause, f));
    if (symptom !== -1 && symptom < at) ordered.splice(symptom, 0, ...ordered.splice(at, 1));
  }
  return ordered.map((f) => f.diagnosis);
}

export function explainCode(code: DiagnosisCode): CodeExplanation {
  const rule = DIAGNOSIS_RULES.find((r) => r.code === code);
  if (!rule) throw new Error(`unknown diagnosis code: ${code}`);
  return { code, severity: rule.severity, reference: rule.reference, meaning: rule.meaning, steps: rule.steps };
}

interface Found {
  diagnosis: Diagnosis;
  index: number;
  rule: DiagnosisRule;
}

const SEVERITY_RANK: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

function compareKeys(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** A cause goes right before its symptom when both fire on the same exchanges. */
function explains(cause: Found, symptom: Found): boolean {
  return (
    (cause.rule.explains ?? []).includes(symptom.rule.code) &&
    SEVERITY_RANK[cause.diagnosis.severity] <= SEVERITY_RANK[symptom.diagnosis.severity] &&
    cause.diagnosis.evidence.some((id) => symptom.diagnosis.evidence.includes(id))
  );
}

// ---------------------------------------------------------------------------------------------
// Thresholds

/** Hosted clients give up on discovery, registration and token calls after about 10 s. */
const CLIENT_TIMEOUT_MS = 10_000;
/** An aborted call this long hit that timeout: the proxy's clock starts after the client's. */
const GAVE_UP_MS = 8_000;
/** Authorization codes live from 30 s to 10 min: one redeemed later than this likely expired. */
const CODE_LIFETIME_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// The rules, one per code, in DIAGNOSIS_CODES order

const PRM_PATH = "/.well-known/oauth-protected-resource";
const MCP_STEPS: HandshakeStep[] = ["initialize", "initialized", "list", "tool_call"];

export const DIAGNOSIS_RULES: readonly DiagnosisRule[] = [
  {
    code: "www_authenticate_missing",
    severity: "error",
    reference: "RFC 9728 §5.1; MCP 2025-06-18 Authorization §2.3",
    meaning:
      "The probe's 401 has no WWW-Authenticate header, or one without resource_metadata: the client cannot find the protected resource metadata.",
    steps: ["probe", "protected_resource_metadata"],
    check(ctx) {
      const e = ctx.probes.find((p) => p.status === 401 && p.facts.resourceMetadataUrl === undefined);
      if (!e) return null;
      const header = e.facts.wwwAuthenticate;
      return {
        summary:
          header === undefined
            ? `The probe ${describe(e)} answered 401 without a WWW-Authenticate header`
            : `The probe ${describe(e)} answered 401 with WWW-Authenticate: ${header} — no resource_metadata parameter`,
        evidence: [e.id],
        fix: `Answer unauthenticated MCP requests with 401 and WWW-Authenticate: Bearer resource_metadata="${expectedPrmUrl(ctx)}"`,
        // Clients of 2025-11-25 fall back to the well-known URL; older ones stop here.
        severity: ctx.prm ? "warning" : "error",
      };
    },
  },
  {
    code: "resource_metadata_url_invalid",
    severity: "error",
    reference: "RFC 9728 §5.1",
    meaning:
      "WWW-Authenticate's resource_metadata is relative, not a URL, points at the authorization server metadata or at another host.",
    steps: ["probe", "protected_resource_metadata"],
    check(ctx) {
      for (const e of ctx.probes) {
        const url = e.facts.resourceMetadataUrl;
        const problem = url === undefined ? undefined : metadataUrlProblem(url, ctx.connector, ctx.prm !== undefined);
        if (problem === undefined) continue;
        return {
          summary: `The probe ${describe(e)} points the client at resource_metadata="${url}", which ${problem}`,
          evidence: [e.id],
          fix: `Send an absolute URL on the host the client uses: resource_metadata="${expectedPrmUrl(ctx)}"`,
        };
      }
      return null;
    },
  },
  {
    code: "probe_unexpected_status",
    severity: "error",
    reference: "MCP 2025-06-18 Authorization §2.3; RFC 6750 §3.1",
    meaning: "The unauthenticated initialize got neither 401 (protected server) nor 200 (authless server).",
    steps: ["probe"],
    check(ctx) {
      const e = ctx.probes.find((p) => p.status !== null && !is2xx(p) && p.status !== 401 && !claimed(p));
      if (!e || e.status === null) return null;
      return {
        summary: `The probe ${describe(e)} answered ${e.status}${detail(e)} instead of 401 (protected) or 200 (authless)`,
        evidence: [e.id],
        fix: probeFix(e.status, e.path),
      };
    },
  },
  {
    code: "accept_header_rejected",
    severity: "error",
    reference: "MCP 2025-06-18 Transports: Streamable HTTP §Sending Messages to the Server",
    meaning: "The MCP endpoint answered 406 because the client's Accept (e.g. */*) does not list text/event-stream.",
    steps: ["probe", ...MCP_STEPS, "stream"],
    check(ctx) {
      const hits = ctx.of(...MCP_KINDS).filter(isAcceptRejection);
      const e = hits[0];
      if (!e) return null;
      const accept = reqHeader(e, "accept");
      const sent = accept === undefined ? "a request without Accept" : `Accept: ${accept}`;
      return {
        summary: `${describe(e)} answered 406${detail(e)} to ${sent}${andMore(hits)}`,
        evidence: ids(hits),
        fix:
          "Treat Accept: */* (or no Accept) as accepting both application/json and text/event-stream: the MCP SDK's " +
          "transport answers 406 to it, so rewrite the header in front of the transport or relax the check",
      };
    },
  },
  {
    code: "protected_resource_metadata_missing",
    severity: "error",
    reference: "RFC 9728 §3; MCP 2025-06-18 Authorization §2.3",
    meaning:
      "No protected resource metadata: 404 at every well-known variant, 401 from the auth middleware, or HTML/non-JSON.",
    steps: ["protected_resource_metadata"],
    check(ctx) {
      if (ctx.authless || ctx.prm) return null;
      const failures = ctx.of("protected_resource_metadata").filter((e) => !claimed(e));
      if (failures.length === 0) return null;
      const url = expectedPrmUrl(ctx);
      return {
        summary: `No protected resource metadata: ${attempts(failures)}`,
        evidence: ids(failures),
        fix: failures.some((e) => e.status === 401)
          ? `Exempt ${PRM_PATH}* from the auth middleware: the metadata is how clients learn to authenticate (serve it at ${url})`
          : failures.some(isHtml)
            ? `Route ${PRM_PATH}* to the MCP server before the web app's catch-all, and serve JSON at ${url}`
            : `Serve RFC 9728 metadata at ${url}: ` +
              `{"resource": "${ctx.connector?.url ?? "<MCP URL>"}", "authorization_servers": ["<issuer>"]}`,
        // A client that fell back to the 2025-03-26 discovery got past it; 2025-06-18 clients do not.
        severity: ctx.asDocs.length > 0 ? "warning" : "error",
      };
    },
  },
  {
    code: "resource_mismatch",
    severity: "error",
    reference: "RFC 9728 §3.3",
    meaning:
      "The metadata's resource differs from the URL the client connected to (http vs https, origin only, trailing slash, other host).",
    steps: ["protected_resource_metadata"],
    check(ctx) {
      const { prm, connector } = ctx;
      if (!prm || !connector) return null;
      const resource = prm.facts.metadata?.resource;
      const difference = resource === undefined ? "missing" : urlDifference(resource, connector);
      if (difference === undefined) return null;
      const via = connector.schemeFrom === "forwarded" ? ` (X-Forwarded-Proto: ${connector.scheme})` : "";
      return {
        summary:
          resource === undefined
            ? `The protected resource metadata ${describe(prm)} has no resource; the client connected to ${connector.url}`
            : `The protected resource metadata ${describe(prm)} says resource ${resource} ` +
              `but the client connected to ${connector.url}${via}: ${difference}`,
        evidence: [prm.id, connector.exchangeId],
        fix: resourceFix(difference, connector),
      };
    },
  },
  {
    code: "issuer_mismatch",
    severity: "error",
    reference: "RFC 8414 §3.3",
    meaning:
      "The authorization server metadata's issuer is not string-identical to the authorization_servers entry (scheme, port, path, trailing slash).",
    steps: ["authorization_server_metadata"],
    check(ctx) {
      const servers = ctx.prm?.facts.metadata?.authorizationServers ?? [];
      const first = servers[0];
      if (ctx.prm && first !== undefined && !isHttpUrl(first)) {
        return {
          summary: `authorization_servers[0] in ${describe(ctx.prm)} is "${first}", not an https URL`,
          evidence: [ctx.prm.id],
          fix: "List the authorization server's issuer URL (https://…) in authorization_servers",
        };
      }
      for (const doc of ctx.asDocs) {
        const issuer = doc.facts.metadata?.issuer;
        if (issuer === undefined || servers.includes(issuer)) continue;
        // Compared with what the PRM advertised when this document is that server's; else with
        // the issuer the fetched well-known URL implies (the 2025-03-26 discovery).
        const advertised = first !== undefined && hostOf(first) === publicHost(doc) ? first : undefined;
        const expected = advertised ?? issuerFromWellKnown(doc, ctx);
        if (expected === undefined) continue;
        if (advertised === undefined && looselyEqual(issuer, expected, ctx.connector)) continue;
        const against =
          advertised !== undefined ? `authorization_servers[0] is "${advertised}"` : `it was fetched for issuer "${expected}"`;
        return {
          summary: `The authorization server metadata ${describe(doc)} has issuer "${issuer}" but ${against}`,
          evidence: [...(advertised !== undefined && ctx.prm ? [ctx.prm.id] : []), doc.id],
          fix:
            `Make them identical strings: set the issuer to exactly "${expected}"` +
            `${advertised !== undefined ? " or advertise the issuer in authorization_servers" : ""}` +
            " (scheme, host, port, path and trailing slash all count)",
        };
      }
      return null;
    },
  },
  {
    code: "authorization_server_metadata_missing",
    severity: "error",
    reference: "RFC 8414 §3.1; OpenID Connect Discovery 1.0 §4",
    meaning:
      "Every authorization server metadata / OpenID configuration URL tried failed (404, non-JSON), including the issuer-with-path variants.",
    steps: ["authorization_server_metadata"],
    check(ctx) {
      if (ctx.asDocs.length > 0) return null;
      const failures = ctx.of(...AS_KINDS).filter((e) => !claimed(e));
      const e = failures[0];
      if (!e) return null;
      const issuer = ctx.prm?.facts.metadata?.authorizationServers?.[0] ?? issuerFromWellKnown(e, ctx) ?? "<issuer>";
      const path = pathOf(issuer);
      const wellKnown = `${originOf(issuer) ?? "https://<host>"}/.well-known/oauth-authorization-server${path}`;
      // Some clients then invent /authorize, /token and /register on the MCP origin.
      const wentOn = ctx.of("registration", "authorize", "authorize_consent", "token").some((x) => x.id > e.id);
      return {
        summary: `No authorization server metadata for issuer ${issuer}: ${attempts(failures)}`,
        evidence: ids(failures),
        fix:
          path === ""
            ? `Serve RFC 8414 metadata at ${wellKnown} with "issuer": "${issuer}"`
            : `The issuer has a path: serve RFC 8414 metadata at ${wellKnown} (path inserted after /.well-known/) ` +
              "— or advertise an issuer without a path",
        severity: wentOn ? "warning" : "error",
      };
    },
  },
  {
    code: "pkce_s256_not_advertised",
    severity: "error",
    reference: "RFC 8414 §2; MCP 2025-11-25 Authorization §Authorization Code Protection",
    meaning: "code_challenge_methods_supported is missing or lacks S256: 2025-11-25 clients refuse to continue.",
    steps: ["authorization_server_metadata", "registration", "authorize"],
    check(ctx) {
      const doc = ctx.asDocs.find((d) => !(d.facts.metadata?.codeChallengeMethodsSupported ?? []).includes("S256"));
      if (!doc) return null;
      const methods = doc.facts.metadata?.codeChallengeMethodsSupported;
      const wentOn = ctx.of("registration", "authorize").some((x) => x.id > doc.id);
      return {
        summary:
          methods === undefined
            ? `The authorization server metadata ${describe(doc)} has no code_challenge_methods_supported`
            : `The authorization server metadata ${describe(doc)} lists code_challenge_methods_supported ` +
              `${JSON.stringify(methods)} without S256`,
        evidence: [doc.id],
        fix: 'Add "code_challenge_methods_supported": ["S256"] to the authorization server metadata (and enforce PKCE S256)',
        severity: wentOn ? "warning" : "error",
      };
    },
  },
  {
    code: "registration_unavailable",
    severity: "error",
    reference: "RFC 7591 §3; MCP 2025-06-18 Authorization §2.4",
    meaning:
      "The client cannot get a client id: no registration_endpoint (nor a static id, nor CIMD used), or the registration endpoint is 404/405.",
    steps: ["authorization_server_metadata", "registration"],
    check(ctx) {
      const missing = ctx.of("registration").find((e) => [404, 405, 501].includes(e.status ?? 0) && !claimed(e));
      if (missing) {
        return {
          summary: `Dynamic client registration ${describe(missing)} answered ${missing.status}${detail(missing)}`,
          evidence: [missing.id],
          fix:
            `Serve RFC 7591 registration at ${missing.path} (and advertise it as registration_endpoint), ` +
            "or support Client ID Metadata Documents",
        };
      }
      const doc = ctx.asDocs.find((d) => d.facts.metadata?.registrationEndpoint === undefined);
      // No "client stopped" condition: a client that goes on with a static client id shows it
      // in a later authorize or token request, and the rules run again then.
      if (!doc || ctx.of("registration").length > 0) return null;
      const later = ctx.of(...AUTHORIZE_KINDS, "token").filter((e) => e.id > doc.id);
      if (later.some((e) => e.facts.clientId !== undefined)) return null;
      const cimd = doc.facts.metadata?.clientIdMetadataDocumentSupported === true;
      return {
        summary:
          `The authorization server metadata ${describe(doc)} has no registration_endpoint` +
          `${cimd ? " (it supports Client ID Metadata Documents, which this client did not use)" : ""}, ` +
          "and the client never presented a client id",
        evidence: [doc.id],
        fix:
          "Enable dynamic client registration (RFC 7591) and advertise registration_endpoint, or have the user " +
          "enter a static client id (and secret) in the connector's advanced settings",
      };
    },
  },
  {
    code: "registration_rejected",
    severity: "error",
    reference: "RFC 7591 §3.2.2",
    meaning:
      "Dynamic client registration answered 4xx to the client's metadata (auth method, redirect host, scope, initial access token).",
    steps: ["registration"],
    check(ctx) {
      const e = ctx
        .of("registration")
        .find((r) => isClientError(r) && ![404, 405].includes(r.status ?? 0) && !claimed(r));
      if (!e) return null;
      const method = e.facts.tokenEndpointAuthMethod;
      const uris = e.facts.redirectUris ?? [];
      return {
        summary:
          `Registration ${describe(e)} answered ${e.status}${detail(e)} to ` +
          `token_endpoint_auth_method=${method ?? "(none given)"}, redirect_uris=${JSON.stringify(uris)}`,
        evidence: [e.id],
        fix: registrationFix(e, method, uris),
      };
    },
  },
  {
    code: "registration_stub",
    severity: "error",
    reference: "RFC 7591 §3.2.1",
    meaning:
      "Registration does not really register: every client gets the same client_id, or redirect_uris are not stored, so a later authorize rejects them.",
    steps: ["registration", "authorize", "callback"],
    explains: ["redirect_uri_rejected"],
    check(ctx) {
      const registered = ctx.of("registration").filter((e) => is2xx(e) && e.facts.clientId !== undefined);
      for (const [i, a] of registered.entries()) {
        const b = registered.slice(i + 1).find((r) => r.facts.clientId === a.facts.clientId);
        if (!b) continue;
        return {
          summary: `Registrations ${describe(a)} and ${describe(b)} both got client_id ${a.facts.clientId}: the endpoint hands out a fixed client`,
          evidence: [a.id, b.id],
          fix: "Issue a fresh client_id per registration and store each client's redirect_uris (RFC 7591 §3.2.1)",
        };
      }
      for (const authorize of ctx.of(...AUTHORIZE_KINDS).filter(isRedirectRejection)) {
        const reg = registrationAccepting(registered, authorize);
        if (!reg) continue;
        return {
          summary:
            `Registration ${describe(reg)} accepted redirect_uri ${authorize.facts.redirectUris?.[0]} for client ` +
            `${reg.facts.clientId}, yet ${describe(authorize)} rejected it${detail(authorize)}`,
          evidence: [reg.id, authorize.id],
          fix: "Store the redirect_uris each registration sends and check authorize requests against that client's own list",
        };
      }
      const dropped = registered.find((r) => {
        const echoed = stringList(bodyJson(r.responseBody)?.redirect_uris);
        return (r.facts.redirectUris ?? []).some((u) => !echoed.includes(u));
      });
      if (!dropped) return null;
      const failedLater = ctx.of(...AUTHORIZE_KINDS).some((x) => x.id > dropped.id && isClientError(x));
      return {
        summary:
          `Registration ${describe(dropped)} sent redirect_uris ${JSON.stringify(dropped.facts.redirectUris)} ` +
          "but the response does not return them",
        evidence: [dropped.id],
        fix: "Return the registered metadata, redirect_uris included, in the registration response (and store them)",
        severity: failedLater ? "error" : "warning",
      };
    },
  },
  {
    code: "redirect_uri_rejected",
    severity: "error",
    reference: "RFC 6749 §3.1.2.3; RFC 6749 §4.1.2.1",
    meaning:
      "The authorization endpoint rejects the client's callback (unregistered redirect URI, e.g. claude.com next to claude.ai).",
    steps: ["authorize", "callback"],
    check(ctx) {
      const hits = ctx.of(...AUTHORIZE_KINDS).filter(isRedirectRejection);
      const e = hits[0];
      if (!e) return null;
      const uri = e.facts.redirectUris?.[0];
      const client = e.facts.clientId ? ` for client ${e.facts.clientId}` : "";
      // When this client's registration listed the URI, registration_stub names the cause.
      const reg = registrationAccepting(ctx.of("registration").filter(is2xx), e);
      return {
        summary:
          `${describe(e)} rejected redirect_uri ${uri ?? "(none sent)"}${client}: ${e.status}${detail(e)}` +
          `${reg ? `, although registration ${describe(reg)} listed it` : ""}`,
        evidence: [...ids(hits), ...(reg ? [reg.id] : [])],
        fix: reg
          ? "Check authorize requests against the redirect_uris this client registered, not a fixed list"
          : redirectFix(uri),
      };
    },
  },
  {
    code: "scope_rejected",
    severity: "error",
    reference: "RFC 6749 §4.1.2.1; RFC 6749 §5.2",
    meaning: "The authorization or token endpoint answered invalid_scope to the scope the client asked for.",
    steps: ["authorize", "callback", "token"],
    check(ctx) {
      const hits = ctx.of(...AUTHORIZE_KINDS, "token").filter((e) => e.facts.oauthError === "invalid_scope");
      const e = hits[0];
      if (!e) return null;
      const asked = e.facts.scope ?? lastUpTo(ctx.of("authorize"), e)?.facts.scope;
      const supported = ctx.asDocs[0]?.facts.metadata?.scopesSupported ?? ctx.prm?.facts.metadata?.scopesSupported;
      return {
        summary:
          `${describe(e)} answered invalid_scope${description(e)} to scope "${asked ?? "(none)"}"` +
          `${supported ? `; scopes_supported is ${JSON.stringify(supported)}` : ""}`,
        evidence: ids(hits),
        fix:
          `Accept the scope the client asks for ("${asked ?? ""}"), or advertise the valid ones in scopes_supported ` +
          "(PRM) and the WWW-Authenticate scope so the client asks for those",
      };
    },
  },
  {
    code: "authorization_redirect_status",
    severity: "error",
    reference: "RFC 9700 §4.12",
    meaning:
      "The authorization response is a 307/308, which replays the consent POST (with the user's form) to the callback, instead of a 302/303.",
    steps: ["authorize", "callback"],
    check(ctx) {
      const e = ctx.of(...AUTHORIZE_KINDS).find((x) => (x.status === 307 || x.status === 308) && x.facts.location);
      if (!e) return null;
      return {
        summary: `${describe(e)} redirected to the callback with ${e.status} (Location: ${e.facts.location}) instead of 302/303`,
        evidence: [e.id],
        fix: "Redirect to the callback with 302 Found or 303 See Other: a 307/308 makes the browser re-POST the consent form to the client",
      };
    },
  },
  {
    code: "token_request_rejected",
    severity: "error",
    reference: "RFC 6749 §5.2; RFC 6749 §4.1.3",
    meaning: "The token endpoint rejects the request itself (form encoding, client credentials) or answers non-JSON.",
    steps: ["token"],
    check(ctx) {
      const hits = codeGrants(ctx).filter(
        (e) => tokenFailed(e) && e.facts.oauthError !== "invalid_grant" && e.facts.oauthError !== "invalid_scope",
      );
      const e = hits[0];
      if (!e) return null;
      const auth = clientAuthUsed(e);
      const outcome = is2xx(e)
        ? `answered ${e.status} ${e.facts.responseContentType ?? "without a content type"} without an access_token`
        : `answered ${e.status}${detail(e)}`;
      return {
        summary:
          `The token request ${describe(e)} (Content-Type: ${e.facts.contentType ?? "none"}, ` +
          `client authentication: ${auth}) ${outcome}`,
        evidence: ids(hits),
        fix: tokenFix(e, auth),
      };
    },
  },
  {
    code: "token_invalid_grant",
    severity: "error",
    reference: "RFC 6749 §5.2; RFC 7636 §4.6",
    meaning:
      "The token endpoint answered invalid_grant: the code was reused or expired, redirect_uri differs from the authorize call, or PKCE failed.",
    steps: ["token"],
    check(ctx) {
      const e = codeGrants(ctx).find((t) => t.facts.oauthError === "invalid_grant");
      if (!e) return null;
      const causes = invalidGrantCauses(ctx, e);
      const why =
        causes.length > 0
          ? causes.map((c) => c.reason).join("; ")
          : "the traffic shows no reuse, redirect_uri change or delay, so probably the PKCE verifier or the code's binding to the client";
      return {
        summary: `The token request ${describe(e)} got invalid_grant${description(e)}: ${why}`,
        evidence: [...causes.flatMap((c) => c.evidence), e.id],
        fix:
          causes.length > 0
            ? causes.map((c) => c.fix).join("; ")
            : "Check the code is bound to the same client_id, redirect_uri and code_challenge the token request " +
              "presents, and lives long enough (≥ 60 s)",
      };
    },
  },
  {
    code: "token_audience_mismatch",
    severity: "error",
    reference: "RFC 8707 §2; MCP 2025-06-18 Authorization §Token Audience Binding and Validation",
    meaning:
      "A token was issued, then the MCP endpoint refused it (401/403): the audience/resource it validates differs from the one the token got.",
    steps: MCP_STEPS,
    check(ctx) {
      for (const token of codeGrants(ctx).filter((t) => is2xx(t) && t.facts.issued?.accessToken !== undefined)) {
        const issued = token.facts.issued?.accessToken;
        const uses = ctx
          .of(...MCP_KINDS)
          .filter((e) => e.id > token.id && isAuthenticated(e) && (e.facts.bearerFingerprint ?? issued) === issued);
        const refused = uses.find((e) => e.status === 401 || e.status === 403);
        // Refused after it worked once is expiry or revocation, not the audience.
        if (!refused || claimed(refused) || uses.some((e) => e.id < refused.id && is2xx(e))) continue;
        const requested = token.facts.resource;
        const challenge = refused.facts.wwwAuthenticate ? ` (WWW-Authenticate: ${refused.facts.wwwAuthenticate})` : "";
        const mcpUrl = ctx.connector?.url ?? refused.path;
        return {
          summary:
            `${describe(refused)} answered ${refused.status} to the token issued by ${describe(token)}${challenge}; ` +
            `the token was requested for resource ${requested ?? "(none: no resource parameter)"}, the MCP URL is ${mcpUrl}`,
          evidence: [token.id, refused.id],
          fix:
            requested !== undefined && requested !== mcpUrl
              ? "Issue tokens for the resource the client asks for and validate the same string at the MCP route: " +
                `make the PRM resource, the token's audience and the check all exactly ${mcpUrl}`
              : "The MCP route validates the token differently from how it was issued: check its expected audience and " +
                "issuer (origin vs /mcp, trailing slash) and that it uses the same validator as the authorization server",
        };
      }
      return null;
    },
  },
  {
    code: "mcp_endpoint_redirect",
    severity: "error",
    reference: "MCP 2025-06-18 Transports: Streamable HTTP",
    meaning: "The MCP URL answers 301/302/307/308: hosted clients do not follow it (and a 301/302 turns POST into GET).",
    steps: ["probe", ...MCP_STEPS, "stream", "teardown"],
    check(ctx) {
      const hits = ctx.of(...MCP_KINDS).filter(isRedirect);
      const e = hits[0];
      if (!e) return null;
      const location = e.facts.location ?? "(no Location)";
      return {
        summary: `${describe(e)} answered ${e.status} → ${location}${andMore(hits)}`,
        evidence: ids(hits),
        fix: mcpRedirectFix(e, location, ctx.connector),
      };
    },
  },
  {
    code: "mcp_endpoint_not_found",
    severity: "error",
    reference: "RFC 9728 §3.3; MCP 2025-06-18 Transports: Streamable HTTP",
    meaning:
      "404 on the MCP URL after the token step: the client posts to / while MCP is at /mcp (or the reverse), or the route is missing.",
    steps: MCP_STEPS,
    check(ctx) {
      const firstToken = codeGrants(ctx).find((t) => is2xx(t) && t.facts.issued?.accessToken !== undefined);
      const afterToken = (e: ClassifiedExchange) =>
        isAuthenticated(e) || (firstToken !== undefined && e.id > firstToken.id);
      const hits = ctx
        .of("mcp_post")
        .filter((e) => e.status === 404 && !claimed(e) && !isSessionError(e) && afterToken(e));
      const e = hits[0];
      if (!e) return null;
      const resource = ctx.prm?.facts.metadata?.resource;
      const resourcePath = resource === undefined ? "" : pathOf(resource);
      const elsewhere = resourcePath !== "" && resourcePath !== trimSlash(e.path);
      return {
        summary:
          `${describe(e)} answered 404${detail(e)} after the token step` +
          `${elsewhere ? `, while the protected resource metadata says the resource is ${resource}` : ""}`,
        evidence: [...ids(hits), ...(elsewhere && ctx.prm ? [ctx.prm.id] : [])],
        fix: elsewhere
          ? `Point the connector at ${resource} (where MCP is mounted), or mount MCP at ${e.path} and advertise that as the resource`
          : `Serve MCP at ${e.path} for authenticated requests too: the 401 came from middleware in front of a route that does not exist`,
      };
    },
  },
  {
    code: "host_header_rejected",
    severity: "error",
    reference: "MCP 2025-06-18 Transports §Security Warning",
    meaning:
      "The server's Host check (DNS-rebinding protection) rejects the Host the proxy passes on: 421, or 400/403 'Invalid Host'.",
    steps: ["probe", "protected_resource_metadata", "authorization_server_metadata", "initialize"],
    check(ctx) {
      const hits = ctx.exchanges.filter(isHostRejection);
      const e = hits[0];
      if (!e) return null;
      const host = e.host ?? "(none)";
      const forwarded = reqHeader(e, "x-forwarded-host");
      return {
        summary:
          `${describe(e)} answered ${e.status}${detail(e)}: the server rejected Host ${host}` +
          `${forwarded ? ` (X-Forwarded-Host ${forwarded})` : ""}${andMore(hits)}`,
        evidence: ids(hits),
        fix:
          `Add ${forwarded ?? host} to the server's allowed hosts (MCP SDK: allowedHosts with DNS-rebinding protection; ` +
          "set PUBLIC_URL) or have the front proxy pass the public Host (nginx: proxy_set_header Host $host)",
      };
    },
  },
  {
    code: "origin_rejected",
    severity: "error",
    reference: "MCP 2025-11-25 Transports §Origin",
    meaning: "The server's Origin allow-list rejects a browser client (403); hosted connectors send no Origin.",
    steps: ["probe", ...MCP_STEPS, "stream"],
    check(ctx) {
      const hits = ctx.exchanges.filter(isOriginRejection);
      const e = hits[0];
      if (!e) return null;
      const origin = reqHeader(e, "origin") ?? "";
      return {
        summary: `${describe(e)} from Origin ${origin} answered 403${detail(e)}${andMore(hits)}`,
        evidence: ids(hits),
        fix: `Allow ${origin} in the server's Origin allow-list (browser clients such as MCP Inspector send it; keep rejecting unknown origins)`,
      };
    },
  },
  {
    code: "sse_not_flushed",
    severity: "error",
    reference: "MCP 2025-06-18 Transports: Streamable HTTP §Sending Messages to the Server",
    meaning:
      "An SSE response or GET stream does not deliver its first event in time (buffering in nginx, Cloudflare, compression) and the client gives up.",
    steps: ["probe", ...MCP_STEPS, "stream"],
    check(ctx) {
      const streamFailed = stepFailed(ctx, "stream");
      const hits = ctx.exchanges.filter((e) => e.upstreamError === null && sseStall(e, streamFailed) !== undefined);
      const e = hits[0];
      if (!e) return null;
      const compressed = e.responseBody.decoded ? ` (the stream is ${e.responseBody.decoded}-compressed)` : "";
      return {
        summary: `${describe(e)} answered ${e.status} text/event-stream but ${sseStall(e, streamFailed)}${compressed}${andMore(hits)}`,
        evidence: ids(hits),
        fix:
          "Flush each event as it is written: turn off buffering between the server and the client (nginx " +
          "`proxy_buffering off;` or the response header `X-Accel-Buffering: no`; no gzip on text/event-stream), " +
          "send `: keep-alive` comments during long calls — or answer POSTs with JSON (enableJsonResponse)",
      };
    },
  },
  {
    code: "session_not_found",
    severity: "error",
    reference: "MCP 2025-03-26 Transports: Streamable HTTP §Session Management",
    meaning:
      "After initialize, requests get 400/404 'session' errors: sent without Mcp-Session-Id, or the id is unknown (another replica, a restart).",
    steps: ["initialized", "list", "tool_call"],
    check(ctx) {
      const init = ctx.of("mcp_post").find((e) => is2xx(e) && methods(e).includes("initialize"));
      if (!init) return null;
      const hits = ctx
        .of("mcp_post")
        .filter((e) => e.id > init.id && (e.status === 400 || e.status === 404) && !methods(e).includes("initialize"))
        .filter((e) => isSessionError(e) && !claimed(e));
      const e = hits[0];
      if (!e) return null;
      const { summary, fix } = sessionStory(e, init);
      return { summary: summary + andMore(hits), evidence: [init.id, ...ids(hits)], fix };
    },
  },
  {
    code: "protocol_version_rejected",
    severity: "error",
    reference: "MCP 2025-06-18 Lifecycle §Version Negotiation; MCP 2025-06-18 Transports §Protocol Version Header",
    meaning:
      "400 'Unsupported protocol version', or initialize answered a version the client did not ask for and the client stopped.",
    steps: ["probe", ...MCP_STEPS],
    check(ctx) {
      const rejected = ctx.of(...MCP_KINDS).find(isProtocolRejection);
      if (rejected) {
        const mcp = rejected.facts.mcp;
        const version = mcp?.protocolVersionRequested ?? mcp?.protocolVersionHeader ?? "(none)";
        return {
          summary: `${describe(rejected)} with protocol version ${version} answered ${rejected.status}${detail(rejected)}`,
          evidence: [rejected.id],
          fix: `Accept protocol version ${version}: upgrade the server's MCP SDK (or add ${version} to its supported versions)`,
        };
      }
      if (!ended(ctx)) return null;
      const e = ctx.of("mcp_post").find((x) => {
        const m = x.facts.mcp;
        return is2xx(x) && m?.protocolVersionAnswered !== undefined && m.protocolVersionRequested !== undefined &&
          m.protocolVersionAnswered !== m.protocolVersionRequested;
      });
      if (!e || ctx.of("mcp_post").some((x) => x.id > e.id)) return null;
      const asked = e.facts.mcp?.protocolVersionRequested;
      return {
        summary:
          `initialize ${describe(e)} asked for protocol version ${asked} and the server answered ` +
          `${e.facts.mcp?.protocolVersionAnswered}; the client sent nothing more`,
        evidence: [e.id],
        fix: `Support protocol version ${asked} (answer it when requested): upgrade the server's MCP SDK`,
      };
    },
  },
  {
    code: "cors_preflight_failed",
    severity: "error",
    reference: "Fetch Standard §3.2 (CORS protocol)",
    meaning:
      "A browser client's OPTIONS preflight fails: non-2xx, no Access-Control-Allow-Origin, or a requested header/method (mcp-protocol-version, authorization) not allowed.",
    steps: HANDSHAKE_STEPS,
    check(ctx) {
      const hits = ctx.of("cors_preflight").filter((e) => !claimed(e) && preflightProblem(e) !== undefined);
      const e = hits[0];
      if (!e) return null;
      const origin = reqHeader(e, "origin") ?? "<origin>";
      const method = e.facts.cors?.requestMethod?.toUpperCase();
      // The browser does not send a request whose preflight failed: when none followed, it was blocked.
      const blocked = !ctx.exchanges.some((x) => x.id > e.id && x.path === e.path && x.method.toUpperCase() === method);
      return {
        summary:
          `The CORS preflight ${describe(e)} from ${origin} for ${method ?? "?"}: ` +
          `${preflightProblem(e)}${blocked ? "; the browser never sent the request" : ""}${andMore(hits)}`,
        evidence: ids(hits),
        fix:
          `Answer OPTIONS ${e.path} with 204 before any auth check, with Access-Control-Allow-Origin: ${origin}, ` +
          "Access-Control-Allow-Methods: GET, POST, DELETE and Access-Control-Allow-Headers: Authorization, " +
          "Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID",
        ...(blocked ? { severity: "error" as const } : {}),
      };
    },
  },
  {
    code: "cors_expose_headers_missing",
    severity: "error",
    reference: "Fetch Standard §3.2 (CORS protocol); MCP 2025-03-26 Transports: Streamable HTTP §Session Management",
    meaning:
      "A browser client got Mcp-Session-Id without Access-Control-Expose-Headers listing it, so it cannot read the session id.",
    steps: MCP_STEPS,
    explains: ["session_not_found"],
    check(ctx) {
      const e = ctx.exchanges.find(
        (x) =>
          reqHeader(x, "origin") !== undefined &&
          resHeader(x, "mcp-session-id") !== undefined &&
          !exposes(x, "mcp-session-id"),
      );
      if (!e) return null;
      const next = ctx.of("mcp_post").find((x) => x.id > e.id && reqHeader(x, "mcp-session-id") === undefined);
      return {
        summary:
          `${describe(e)} assigned Mcp-Session-Id to the browser client at ${reqHeader(e, "origin")} without ` +
          `Access-Control-Expose-Headers listing it (${e.facts.cors?.exposeHeaders ?? "none"})` +
          `${next ? `; the next request ${describe(next)} came without it` : ""}`,
        evidence: [e.id, ...(next ? [next.id] : [])],
        fix: "Add Access-Control-Expose-Headers: Mcp-Session-Id (cors: exposedHeaders: ['Mcp-Session-Id', 'WWW-Authenticate'])",
      };
    },
  },
  {
    code: "upstream_unreachable",
    severity: "error",
    reference: "mcp-lens field guide §Reachability and edge",
    meaning: "mcp-lens could not reach the MCP server (refused, DNS, no route) or the connection broke (reset, malformed HTTP).",
    steps: HANDSHAKE_STEPS,
    check(ctx) {
      const hits = ctx.exchanges.filter((e) => upstreamFailure(e) !== undefined);
      const e = hits[0];
      const failure = e && upstreamFailure(e);
      if (!e || !failure) return null;
      return {
        summary:
          `mcp-lens could not complete ${describe(e)} with the upstream: ${failure.what} (${e.upstreamError})` +
          `${e.status !== null ? `; the client got ${e.status}` : ""}${andMore(hits)}`,
        evidence: ids(hits),
        fix: failure.fix,
      };
    },
  },
  {
    code: "upstream_timeout",
    severity: "error",
    reference: "mcp-lens field guide §Reachability and edge",
    meaning: "The MCP server sent no response headers in time: mcp-lens (or a gateway behind it) answered 504.",
    steps: HANDSHAKE_STEPS,
    check(ctx) {
      const hits = ctx.exchanges.filter(
        (e) => e.upstreamError === "upstream_timeout" || (e.upstreamError === null && e.status === 504),
      );
      const e = hits[0];
      if (!e) return null;
      const waited = seconds(e.durationMs ?? e.ttfbMs);
      return {
        summary:
          e.upstreamError === "upstream_timeout"
            ? `The upstream sent no response to ${describe(e)} within ${waited}; mcp-lens answered ${e.status ?? 504}${andMore(hits)}`
            : `${describe(e)} answered 504 Gateway Timeout after ${waited}: a gateway behind mcp-lens timed out${andMore(hits)}`,
        evidence: ids(hits),
        fix:
          "Find what the server waits on for this request (a slow upstream API, a lock, a cold start): discovery, " +
          "registration and token calls must answer within a few seconds; stream long tool calls with progress. " +
          "If the server is merely slow to start, raise mcp-lens --upstream-timeout",
      };
    },
  },
  {
    code: "slow_response",
    severity: "warning",
    reference: "mcp-lens field guide §Reachability and edge (clients time out after ~10 s)",
    meaning: "A discovery, registration or token response took over ~10 s: hosted clients give up around then.",
    steps: ["probe", "protected_resource_metadata", "authorization_server_metadata", "registration", "token"],
    // A token call the client gave up on, then retried with the same code.
    explains: ["token_invalid_grant"],
    check(ctx) {
      const hits = [...ctx.probes, ...ctx.of("protected_resource_metadata", ...AS_KINDS, "registration", "token")]
        .filter((e) => e.upstreamError === null && e.status !== 504 && isSlow(e))
        .sort((a, b) => a.id - b.id);
      const e = hits[0];
      if (!e) return null;
      const remedy =
        e.kind === "registration" || e.kind === "token"
          ? "keep slow calls to other services (database, upstream identity provider) off the registration and token paths"
          : "serve it from memory";
      return {
        summary:
          `${describe(e)} took ${seconds(e.durationMs)}${e.aborted ? " and the client gave up" : ""} ` +
          `(hosted clients time out after ~10 s)${andMore(hits)}`,
        evidence: ids(hits),
        fix: `Make ${e.path} answer in well under 10 s: ${remedy}, and keep the server warm (no cold starts)`,
        severity: hits.some((x) => x.aborted) ? "error" : "warning",
      };
    },
  },
  {
    code: "waf_block",
    severity: "error",
    reference: "mcp-lens field guide §Reachability and edge",
    meaning: "Bot protection or a WAF answered instead of the server (cf-mitigated: challenge, a challenge or block page).",
    steps: HANDSHAKE_STEPS,
    check(ctx) {
      const hits = ctx.exchanges.filter((e) => wafMarker(e) !== undefined);
      const e = hits[0];
      if (!e) return null;
      const paths = new Set(hits.map((x) => x.path));
      for (const path of [ctx.connector?.path ?? "/mcp", "/.well-known/*", "/register", "/token"]) paths.add(path);
      return {
        summary: `${describe(e)} answered ${e.status} from bot protection (${wafMarker(e)})${andMore(hits)}`,
        evidence: ids(hits),
        fix:
          `Exempt ${[...paths].join(", ")} from bot protection: hosted clients cannot solve challenges ` +
          "(e.g. a Cloudflare WAF skip rule for these paths, or Bot Fight Mode off)",
      };
    },
  },
  {
    code: "refresh_token_missing",
    severity: "warning",
    reference: "RFC 6749 §6; RFC 6749 §5.1",
    meaning: "No refresh_token was issued, or the refresh_token grant fails: the connector dies when the access token expires.",
    steps: ["refresh"],
    check(ctx) {
      const refresh = ctx
        .of("token")
        .find((e) => e.facts.grantType === "refresh_token" && isFailure(e) && !claimed(e));
      if (refresh) {
        return {
          summary: `The refresh_token grant ${describe(refresh)} answered ${refresh.status}${detail(refresh)}`,
          evidence: [refresh.id],
          fix: "Keep refresh tokens redeemable: persist them across restarts and replicas, and when rotating, accept the one just issued",
          severity: "error",
        };
      }
      const e = codeGrants(ctx).find(
        (t) => is2xx(t) && t.facts.issued?.accessToken !== undefined && !t.facts.issued.refreshToken,
      );
      if (!e) return null;
      const expires = e.facts.expiresIn !== undefined ? ` (the access token expires in ${e.facts.expiresIn} s)` : "";
      return {
        summary: `The token response ${describe(e)} has no refresh_token${expires}`,
        evidence: [e.id],
        fix:
          'Issue a refresh_token with the authorization_code grant (list "refresh_token" in grant_types_supported ' +
          "and honour the registered grant_types)",
      };
    },
  },
];

// Fails at import if the table and DIAGNOSIS_CODES drift apart.
if (DIAGNOSIS_RULES.map((r) => r.code).join() !== DIAGNOSIS_CODES.join()) {
  throw new Error("DIAGNOSIS_RULES must list one rule per DIAGNOSIS_CODES entry, in order");
}

// ---------------------------------------------------------------------------------------------
// Context

const MCP_KINDS: ExchangeKind[] = ["mcp_post", "mcp_get_stream", "mcp_delete"];
const AS_KINDS: ExchangeKind[] = ["authorization_server_metadata", "openid_configuration"];
const AUTHORIZE_KINDS: ExchangeKind[] = ["authorize", "authorize_consent"];

function contextOf(handshake: Handshake, exchanges: ClassifiedExchange[]): DiagnosisContext {
  const sorted = [...exchanges].sort((a, b) => a.id - b.id);
  const of = (...kinds: ExchangeKind[]) => sorted.filter((e) => kinds.includes(e.kind));
  const unauthenticated = of("mcp_post").filter((e) => !isAuthenticated(e));
  const initializes = unauthenticated.filter((e) => methods(e).includes("initialize"));
  const probes = initializes.length > 0 ? initializes : unauthenticated.slice(0, 1);
  const metadata = (e: ClassifiedExchange) => (is2xx(e) ? e.facts.metadata : undefined);
  return {
    handshake,
    exchanges: sorted,
    probes,
    authless: initializes.some(is2xx),
    connector: connectorUrl(handshake, sorted, probes),
    prm: of("protected_resource_metadata").find((e) => metadata(e)?.resource ?? metadata(e)?.authorizationServers),
    asDocs: of(...AS_KINDS).filter((e) => metadata(e)?.issuer ?? metadata(e)?.authorizationEndpoint),
    of,
  };
}

/** From the probe's host and path (else any MCP request, else a path-inserted PRM fetch). */
function connectorUrl(
  handshake: Handshake,
  exchanges: readonly ClassifiedExchange[],
  probes: readonly ClassifiedExchange[],
): ConnectorUrl | undefined {
  const mcp = exchanges.find((e) => MCP_KINDS.includes(e.kind));
  const prm = exchanges.find(
    (e) => e.kind === "protected_resource_metadata" && e.facts.wellKnownVariant === "path_inserted",
  );
  const source = probes[0] ?? mcp ?? prm;
  const host = source && publicHost(source);
  if (!source || !host) return undefined;
  const path = source === prm ? source.path.slice(PRM_PATH.length) : source.path;
  const forwarded = forwardedProto(source) ?? exchanges.map(forwardedProto).find((p) => p !== undefined);
  const [scheme, schemeFrom]: [ConnectorUrl["scheme"], ConnectorUrl["schemeFrom"]] = forwarded
    ? [forwarded, "forwarded"]
    : HOSTED_FAMILIES.has(handshake.clientFamily)
      ? ["https", "hosted_client"]
      : ["http", "assumed"];
  const url = parseUrl(`${scheme}://${host}${path || "/"}`);
  if (!url) return undefined;
  const { href, origin, host: urlHost, pathname } = url;
  return { url: href, origin, host: urlHost, path: pathname, scheme, schemeFrom, exchangeId: source.id };
}

/** The host the client asked for: X-Forwarded-Host from a front proxy, else Host. */
function publicHost(e: ClassifiedExchange): string | undefined {
  const forwarded = reqHeader(e, "x-forwarded-host")?.split(",")[0]?.trim();
  return (forwarded || e.host || undefined)?.toLowerCase();
}

/** The scheme a front proxy passed on; mcp-lens's own default (`setByProxy`) says nothing about the client's. */
function forwardedProto(e: ClassifiedExchange): "http" | "https" | undefined {
  const fromFront = !e.setByProxy?.includes("x-forwarded-proto");
  const proto =
    (fromFront ? reqHeader(e, "x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase() : undefined) ??
    /(?:^|[;,\s])proto="?(https?)"?/i.exec(reqHeader(e, "forwarded") ?? "")?.[1]?.toLowerCase();
  return proto === "https" || proto === "http" ? proto : undefined;
}

function stepFailed(ctx: DiagnosisContext, step: HandshakeStep): boolean {
  return ctx.handshake.failedStep === step || ctx.handshake.steps.some((s) => s.step === step && s.status === "failed");
}

/** The client stopped: the absence of a next step only means something then. */
function ended(ctx: DiagnosisContext): boolean {
  return ctx.handshake.outcome === "failed" || ctx.handshake.outcome === "abandoned";
}

// ---------------------------------------------------------------------------------------------
// Claims: specific causes that explain an exchange, so generic status rules skip it

function claimed(e: ClassifiedExchange): boolean {
  return (
    e.upstreamError !== null ||
    e.status === 504 ||
    wafMarker(e) !== undefined ||
    isHostRejection(e) ||
    isOriginRejection(e) ||
    isAcceptRejection(e) ||
    (MCP_KINDS.includes(e.kind) && isRedirect(e)) ||
    isProtocolRejection(e)
  );
}

const WAF_PAGE = new RegExp(
  [
    "cf-chl",
    "challenge-platform",
    "just a moment\\.\\.\\.",
    "attention required! \\| cloudflare",
    "cf-error-details",
    "sucuri website firewall",
    "incapsula incident",
    "_incapsula_resource",
    "the requested url was rejected", // F5
    "aws waf",
    "mod_?security",
    "ddos-guard",
    "reference #\\d+\\.[0-9a-f]+", // Akamai
  ].join("|"),
  "i",
);

function wafMarker(e: ClassifiedExchange): string | undefined {
  const mitigated = resHeader(e, "cf-mitigated");
  if (mitigated !== undefined) return `cf-mitigated: ${mitigated}`;
  const action = resHeader(e, "x-amzn-waf-action");
  if (action !== undefined) return `x-amzn-waf-action: ${action}`;
  if (![403, 429, 503].includes(e.status ?? 0) || !isHtml(e)) return undefined;
  const page = WAF_PAGE.exec(bodyText(e.responseBody));
  return page ? `a challenge/block page: "${page[0]}"` : undefined;
}

const HOST_ERROR = /invalid host|host header|host not allowed|disallowed host|dns.rebinding|misdirected/i;

function isHostRejection(e: ClassifiedExchange): boolean {
  return e.status === 421 || ((e.status === 400 || e.status === 403) && HOST_ERROR.test(errorText(e)));
}

function isOriginRejection(e: ClassifiedExchange): boolean {
  if (e.status !== 403 || reqHeader(e, "origin") === undefined) return false;
  return /origin/i.test(errorText(e)) && !isHostRejection(e);
}

function isAcceptRejection(e: ClassifiedExchange): boolean {
  if (e.status !== 406 || !MCP_KINDS.includes(e.kind)) return false;
  const accept = (reqHeader(e, "accept") ?? "").toLowerCase();
  return !accept.includes("text/event-stream") || (e.method === "POST" && !accept.includes("application/json"));
}

function isProtocolRejection(e: ClassifiedExchange): boolean {
  return e.status === 400 && MCP_KINDS.includes(e.kind) && /protocol.?version/i.test(errorText(e));
}

function isSessionError(e: ClassifiedExchange): boolean {
  return /session|not initialized/i.test(errorText(e));
}

function isRedirectRejection(e: ClassifiedExchange): boolean {
  const error = e.facts.oauthError;
  if (error === "invalid_redirect_uri") return true;
  // A healthy 302 to the callback mentions redirects too: only errors count.
  const failed = isClientError(e) || error !== undefined;
  return failed && error !== "invalid_scope" && /redirect|callback/i.test(errorText(e));
}

const UPSTREAM_FAILURES: Record<string, { what: string; fix: string }> = {
  upstream_refused: {
    what: "the connection was refused",
    fix: "Start the MCP server, or point mcp-lens at the port it listens on (--upstream / MCP_LENS_UPSTREAM)",
  },
  upstream_dns: {
    what: "the upstream host name does not resolve",
    fix: "Fix the upstream host name in --upstream (MCP_LENS_UPSTREAM)",
  },
  upstream_unreachable: {
    what: "there is no route to the upstream",
    fix: "Check the network path from mcp-lens to the upstream (container network, firewall, --upstream address)",
  },
  upstream_reset: {
    what: "the upstream closed the connection",
    fix: "The server crashed or dropped the connection on this request: check its logs (and idle timeouts shorter than a stream)",
  },
  upstream_bad_response: {
    what: "the upstream answered malformed HTTP",
    fix: "Check that --upstream points at an HTTP server (not TLS or another protocol) and that it answers valid HTTP/1.1",
  },
  upstream_error: {
    what: "the upstream connection failed",
    fix: "Check the server's logs and the --upstream address",
  },
};

/** Every upstream failure but the timeout, which has its own code. */
function upstreamFailure(e: ClassifiedExchange): { what: string; fix: string } | undefined {
  return e.upstreamError === null ? undefined : UPSTREAM_FAILURES[e.upstreamError];
}

// ---------------------------------------------------------------------------------------------
// Rule helpers

function probeFix(status: number, path: string): string {
  if (status === 403) {
    return "Answer requests without a token with 401 and WWW-Authenticate (RFC 6750 §3.1), not 403 (which means: authenticated but not allowed)";
  }
  if (status === 404) return `Nothing serves MCP at ${path}: check the connector URL, or mount the MCP endpoint there`;
  if (status === 405) {
    return `${path} does not take POST: Streamable HTTP needs POST on the MCP URL (a 2024-11-05 HTTP+SSE server only serves GET /sse — upgrade it)`;
  }
  if (status >= 500) {
    return "The server failed on an unauthenticated initialize (see its logs): it must answer 401 with WWW-Authenticate, or 200 when authless";
  }
  return "Answer an unauthenticated initialize with 401 and WWW-Authenticate: Bearer resource_metadata=… (protected) or 200 with an InitializeResult (authless)";
}

function expectedPrmUrl(ctx: DiagnosisContext): string {
  const c = ctx.connector;
  return c ? `${c.origin}${PRM_PATH}${c.path === "/" ? "" : c.path}` : `https://<host>${PRM_PATH}/<mcp path>`;
}

function metadataUrlProblem(url: string, connector: ConnectorUrl | undefined, prmFetched: boolean): string | undefined {
  if (url.startsWith("/")) return "is relative: it must be an absolute URL";
  const parsed = parseUrl(url);
  if (!parsed || !/^https?:$/.test(parsed.protocol)) return "is not an http(s) URL";
  if (/oauth-authorization-server|openid-configuration/.test(parsed.pathname)) {
    return "is the authorization server metadata, not the protected resource metadata";
  }
  if (!connector) return undefined;
  if (parsed.host !== connector.host) return `is on host ${parsed.host} while the client connected to ${connector.host}`;
  // A wrong scheme matters when the client could not fetch it; once it did, resource_mismatch says it.
  if (!prmFetched && connector.schemeFrom !== "assumed" && parsed.protocol !== `${connector.scheme}:`) {
    return `uses ${parsed.protocol.slice(0, -1)} while the client connected over ${connector.scheme}`;
  }
  return undefined;
}

/** How a resource differs from the connector URL, or undefined when they match. */
function urlDifference(resource: string, c: ConnectorUrl): string | undefined {
  const r = parseUrl(resource);
  if (!r) return "the resource is not a URL";
  if (r.href === c.url) return undefined;
  if (r.host !== c.host) return `other host (${r.host})`;
  // Without X-Forwarded-Proto the client's scheme is a guess: say nothing about it.
  if (r.protocol !== `${c.scheme}:` && c.schemeFrom !== "assumed") return `${r.protocol.slice(0, -1)} instead of ${c.scheme}`;
  if (r.pathname === c.path) return undefined;
  if (trimSlash(r.pathname) === trimSlash(c.path)) return "trailing slash";
  if (r.pathname === "/") return `origin only instead of ${c.path}`;
  return `path ${r.pathname} instead of ${c.path}`;
}

function resourceFix(difference: string, c: ConnectorUrl): string {
  if (/^https? instead/.test(difference)) {
    return (
      `Set PUBLIC_URL=${c.origin} or trust X-Forwarded-Proto so the resource is ${c.url} (TLS ends at the front ` +
      "proxy; if mcp-lens receives X-Forwarded-Proto, check --trusted-proxies keeps it)"
    );
  }
  if (difference.startsWith("other host")) return `Set PUBLIC_URL=${c.origin} (the host clients use) so the resource is ${c.url}`;
  if (difference.startsWith("path ")) {
    return `Make them one URL: point the connector at the MCP endpoint the resource names, or advertise "resource": "${c.url}"`;
  }
  return `Advertise exactly the URL the connector uses: "resource": "${c.url}"`;
}

/** The issuer a well-known URL was built from (RFC 8414 §3.1, OIDC path-appended form). */
function issuerFromWellKnown(e: ClassifiedExchange, ctx: DiagnosisContext): string | undefined {
  const m = /^(.*?)\/\.well-known\/(?:oauth-authorization-server|openid-configuration)(\/.*)?$/.exec(e.path);
  const host = publicHost(e);
  if (!m || !host) return undefined;
  const scheme = forwardedProto(e) ?? ctx.connector?.scheme ?? "http";
  return `${scheme}://${host}${m[1] || m[2] || ""}`;
}

/** For an issuer derived from the URL, where the scheme may be a guess and an origin's "/" is moot. */
function looselyEqual(issuer: string, expected: string, c: ConnectorUrl | undefined): boolean {
  const a = parseUrl(issuer);
  const b = parseUrl(expected);
  if (!a || !b) return false;
  return a.href === b.href || (c?.schemeFrom === "assumed" && a.host === b.host && a.pathname === b.pathname);
}

/** "GET /x (#3) → 404, GET /y (#4) → 200 HTML instead of JSON" */
function attempts(list: readonly ClassifiedExchange[]): string {
  return list.map((e) => `${describe(e)} → ${metadataFailure(e) ?? e.status}`).join(", ");
}

function metadataFailure(e: ClassifiedExchange): string | undefined {
  if (e.status === null) return "no answer";
  if (e.status === 401) return "401 (behind the auth middleware)";
  if (!is2xx(e)) return String(e.status);
  if (isHtml(e)) return `${e.status} HTML instead of JSON`;
  if (e.facts.metadata === undefined) return `${e.status} ${e.facts.parseError ? "unparsable JSON" : "not a JSON metadata document"}`;
  return undefined;
}

function registrationFix(e: ClassifiedExchange, method: string | undefined, uris: string[]): string {
  const said = errorText(e);
  if (e.status === 401 || e.status === 403) {
    return "Open registration to anonymous clients: hosted connectors have no initial access token (RFC 7591 §3)";
  }
  if (e.facts.oauthError === "invalid_redirect_uri" || /redirect/i.test(said)) {
    // The URIs come from the client: never advise a server to accept file:, javascript: or a
    // plain-http host (a misconfigured or hostile registration was rightly refused).
    const acceptable = uris.filter(isAcceptableRedirectUri);
    if (acceptable.length === 0 && uris.length > 0) {
      return "Nothing to change on the server if this was not a real client: these redirect URIs are neither https nor http on a loopback address, and refusing them is right; a client must register its https (or loopback) callback";
    }
    return `Accept the client's redirect URIs ${JSON.stringify(acceptable)} (claude.ai, claude.com, chatgpt.com callbacks; any loopback port for local clients)`;
  }
  if (method !== undefined && /auth.?method|client_secret|token_endpoint_auth/i.test(said)) {
    return `Accept token_endpoint_auth_method "${method}" (Claude registers client_secret_post, ChatGPT and local clients none)`;
  }
  if (/scope/i.test(said)) return "Accept (or ignore) the scope the registration carries";
  return "Accept the client's registration metadata (RFC 7591 §2), or ignore fields you do not support instead of rejecting them";
}

/** https without userinfo, or http to a loopback address: what an authorization server should accept. */
function isAcceptableRedirectUri(uri: string): boolean {
  const url = parseUrl(uri);
  if (!url || url.username || url.password || url.hash) return false;
  if (url.protocol === "https:") return true;
  return url.protocol === "http:" && /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])$/.test(url.hostname);
}

/** The successful registration of the authorize request's client that listed its redirect_uri. */
function registrationAccepting(
  registered: readonly ClassifiedExchange[],
  authorize: ClassifiedExchange,
): ClassifiedExchange | undefined {
  const uri = authorize.facts.redirectUris?.[0];
  if (uri === undefined) return undefined;
  return registered.find(
    (r) => r.facts.clientId === authorize.facts.clientId && (r.facts.redirectUris ?? []).includes(uri),
  );
}

function redirectFix(uri: string | undefined): string {
  if (uri === undefined) return "The authorize request had no redirect_uri: with one registered redirect URI the server may default to it";
  if (uri.startsWith("https://claude.com/")) return `Register ${uri} next to claude.ai's (https://claude.ai/api/mcp/auth_callback)`;
  if (uri.startsWith("https://claude.ai/")) return `Register ${uri} next to claude.com's (https://claude.com/api/mcp/auth_callback)`;
  if (uri.startsWith("https://chatgpt.com/")) {
    return `Register ${uri} (ChatGPT also uses per-connector callbacks https://chatgpt.com/connector/oauth/<id>)`;
  }
  if (/^https?:\/\/(localhost|127\.0\.0\.1|\[::1\])[:/]/.test(uri)) {
    return `Allow ${uri}: accept loopback redirect URIs on any port (RFC 8252 §7.3)`;
  }
  return `Register ${uri} as a redirect URI of this client`;
}

/** Authorization-code token requests (and those that name no grant). */
function codeGrants(ctx: DiagnosisContext): ClassifiedExchange[] {
  return ctx.of("token").filter((e) => e.facts.grantType !== "refresh_token");
}

function tokenFailed(e: ClassifiedExchange): boolean {
  return !claimed(e) && (isFailure(e) || (is2xx(e) && e.facts.issued?.accessToken === undefined));
}

function clientAuthUsed(e: ClassifiedExchange): string {
  if (/^basic\s/i.test(reqHeader(e, "authorization") ?? "")) return "client_secret_basic";
  return /(^|&)client_secret=|"client_secret"\s*:/.test(bodyText(e.requestBody)) ? "client_secret_post" : "none";
}

function tokenFix(e: ClassifiedExchange, auth: string): string {
  if (e.status === 415 || /json|content.?type|media type/i.test(errorText(e))) {
    return "Parse token requests as application/x-www-form-urlencoded (RFC 6749 §4.1.3), not only JSON";
  }
  if (e.facts.oauthError === "invalid_client" || e.status === 401) {
    return (
      `Accept the client's ${auth} credentials as registered (support client_secret_post and client_secret_basic, ` +
      "and none for public clients, as token_endpoint_auth_methods_supported says)"
    );
  }
  if (is2xx(e)) return 'Answer with application/json: {access_token, token_type: "Bearer", expires_in, refresh_token} (RFC 6749 §5.1)';
  return (
    "Accept the standard authorization_code request: grant_type, code, redirect_uri, code_verifier, resource, " +
    "client_id (RFC 6749 §4.1.3, RFC 8707 §2)"
  );
}

interface GrantCause {
  reason: string;
  fix: string;
  evidence: number[];
}

/** What the traffic suggests about an invalid_grant: reuse, redirect_uri change, delay, PKCE. */
function invalidGrantCauses(ctx: DiagnosisContext, token: ClassifiedExchange): GrantCause[] {
  const causes: GrantCause[] = [];
  const code = token.facts.codeFingerprint;
  const sameCode = (e: ClassifiedExchange) => code !== undefined && e.facts.codeFingerprint === code;
  const earlier = codeGrants(ctx).find((t) => t.id < token.id && sameCode(t));
  if (earlier) {
    causes.push({
      reason: `the code was already redeemed by ${describe(earlier)} (codes are single-use)`,
      fix:
        "Redeem each code once: a client that retries a timed-out token call needs a fresh authorization " +
        "(and the token endpoint must answer well within 10 s)",
      evidence: [earlier.id],
    });
  }
  const delivery = ctx.of(...AUTHORIZE_KINDS).find((e) => code !== undefined && e.facts.issued?.code === code);
  const request = lastUpTo(ctx.of("authorize").filter((e) => e.facts.redirectUris !== undefined), delivery ?? token);
  const asked = request?.facts.redirectUris?.[0];
  const redeemed = token.facts.redirectUris?.[0];
  if (request && asked !== undefined && redeemed !== undefined && asked !== redeemed) {
    causes.push({
      reason: `redirect_uri ${redeemed} differs from the authorize request's ${asked} (${describe(request)})`,
      fix: "Send the token request the same redirect_uri as the authorize request (RFC 6749 §4.1.3)",
      evidence: [request.id],
    });
  }
  const age = delivery ? token.startedAt - (delivery.startedAt + (delivery.durationMs ?? 0)) : 0;
  if (delivery && age > CODE_LIFETIME_MS) {
    causes.push({
      reason: `the code was redeemed ${seconds(age)} after ${describe(delivery)} issued it (expired?)`,
      fix: "Keep authorization codes valid for at least 60 s (up to 10 min) and redeem them at once",
      evidence: [delivery.id],
    });
  }
  const form = (token.facts.contentType ?? "").includes("x-www-form-urlencoded");
  const noVerifier = form && !/(^|&)code_verifier=/.test(bodyText(token.requestBody));
  const noChallenge = request?.facts.codeChallengePresent === false;
  if (noVerifier || noChallenge || /pkce|verifier|code.?challenge/i.test(errorText(token))) {
    causes.push({
      reason: noVerifier
        ? "the token request carries no code_verifier"
        : noChallenge && request
          ? `the authorize request ${describe(request)} carried no code_challenge`
          : "the PKCE verifier does not match the code_challenge",
      fix: "Verify PKCE as S256: BASE64URL(SHA-256(code_verifier)) must equal the code_challenge stored with the code (RFC 7636 §4.6)",
      evidence: request ? [request.id] : [],
    });
  }
  return causes;
}

function mcpRedirectFix(e: ClassifiedExchange, location: string, c: ConnectorUrl | undefined): string {
  const target = parseUrl(location) ?? (c ? parseUrl(new URL(location, c.origin).href) : undefined);
  const path = trimSlash(e.path);
  if (target && target.pathname === `${path}/`) {
    return `Serve ${e.path} itself instead of redirecting to ${target.pathname} (mount the MCP app at "${path}" exactly; Starlette/FastAPI: redirect_slashes=False)`;
  }
  if (target && c && target.protocol === "http:" && c.scheme === "https") {
    return "The server redirects to http: it does not know TLS ends in front of it — set PUBLIC_URL or trust X-Forwarded-Proto";
  }
  return (
    `Configure the connector with ${target?.href ?? location}, or serve MCP at ${e.path} without a redirect: ` +
    "hosted clients do not follow redirects (and a 301/302 turns POST into GET)"
  );
}

/** Why an SSE response stalled, in words, or undefined when it did not. */
function sseStall(e: ClassifiedExchange, streamFailed: boolean): string | undefined {
  if (!isSse(e)) return undefined;
  if ((e.ttfbMs ?? 0) > CLIENT_TIMEOUT_MS) return `its headers arrived only after ${seconds(e.ttfbMs)}`;
  const none = (e.sseEvents ?? 0) === 0;
  if (e.method === "POST" && e.aborted && none) {
    return `no event came before the client gave up after ${seconds(e.durationMs)}`;
  }
  // An idle GET stream is normal; it counts only when the client needed it and gave up on it.
  if (e.kind === "mcp_get_stream" && is2xx(e) && streamFailed && none) {
    return `the stream delivered no event in ${seconds(e.durationMs)} and the client gave up on it`;
  }
  return undefined;
}

function sessionStory(e: ClassifiedExchange, init: ClassifiedExchange): { summary: string; fix: string } {
  const assigned = resHeader(init, "mcp-session-id");
  const sent = reqHeader(e, "mcp-session-id");
  const request = `${methods(e)[0] ?? "the request"} ${describe(e)}`;
  const answered = `answered ${e.status}${detail(e)}`;
  if (sent === undefined && assigned === undefined) {
    return {
      summary: `${request} ${answered}, but initialize ${describe(init)} assigned no Mcp-Session-Id`,
      fix:
        "Either return Mcp-Session-Id from initialize or run the transport stateless (sessionIdGenerator: undefined) " +
        "so requests without a session are served",
    };
  }
  if (sent === undefined) {
    return {
      summary: `${request} came without Mcp-Session-Id although initialize ${describe(init)} assigned ${assigned}; ${answered}`,
      fix:
        "Make sure the Mcp-Session-Id response header reaches the client (proxies must pass it; browsers need " +
        "Access-Control-Expose-Headers: Mcp-Session-Id), or run stateless",
    };
  }
  const known =
    sent === assigned
      ? `, which initialize ${describe(init)} assigned`
      : ` (initialize ${describe(init)} assigned ${assigned ?? "none"})`;
  return {
    summary: `${request} sent Mcp-Session-Id ${sent}${known}; ${answered}`,
    fix:
      "Keep sessions where every request finds them: sticky routing on Mcp-Session-Id or a shared session store " +
      "across replicas and restarts — or run the transport stateless",
  };
}

const SAFELISTED_METHODS = new Set(["GET", "HEAD", "POST"]);

function preflightProblem(e: ClassifiedExchange): string | undefined {
  const cors = e.facts.cors ?? {};
  if (e.status === null) return undefined;
  if (!is2xx(e)) return `answered ${e.status}${e.status === 401 ? " (the auth middleware runs before CORS)" : ""}`;
  const origin = reqHeader(e, "origin");
  if (cors.allowOrigin === undefined) return "has no Access-Control-Allow-Origin";
  if (cors.allowOrigin !== "*" && origin !== undefined && cors.allowOrigin !== origin) {
    return `allows origin ${cors.allowOrigin}, not ${origin}`;
  }
  // "*" covers every header but Authorization (Fetch Standard).
  const allowed = tokens(cors.allowHeaders);
  const covered = (h: string) => allowed.includes(h) || (allowed.includes("*") && h !== "authorization");
  const missing = tokens(cors.requestHeaders).filter((h) => !covered(h));
  if (missing.length > 0) return `Access-Control-Allow-Headers (${cors.allowHeaders ?? "none"}) lacks ${missing.join(", ")}`;
  const method = cors.requestMethod?.toUpperCase();
  const allowedMethods = tokens(cors.allowMethods).map((m) => m.toUpperCase());
  if (method && !SAFELISTED_METHODS.has(method) && !allowedMethods.includes(method) && !allowedMethods.includes("*")) {
    return `Access-Control-Allow-Methods (${cors.allowMethods ?? "none"}) lacks ${method}`;
  }
  return undefined;
}

function exposes(e: ClassifiedExchange, header: string): boolean {
  const list = tokens(e.facts.cors?.exposeHeaders);
  return list.includes(header) || list.includes("*");
}

function isSlow(e: ClassifiedExchange): boolean {
  const ms = e.durationMs ?? e.ttfbMs ?? 0;
  return ms > CLIENT_TIMEOUT_MS || (e.aborted && ms >= GAVE_UP_MS);
}

// ---------------------------------------------------------------------------------------------
// Reading exchanges

function headerOf(pairs: HeaderPairs | null, lowerName: string): string | undefined {
  const values = (pairs ?? []).filter(([n]) => n.toLowerCase() === lowerName).map(([, v]) => v);
  return values.length > 0 ? values.join(", ") : undefined;
}
const reqHeader = (e: ClassifiedExchange, lowerName: string) => headerOf(e.requestHeaders, lowerName);
const resHeader = (e: ClassifiedExchange, lowerName: string) => headerOf(e.responseHeaders, lowerName);

function bodyText(body: RecordedBody): string {
  return body.encoding === "utf8" ? (body.text ?? "") : "";
}

function bodyJson(body: RecordedBody): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(bodyText(body));
    const isObject = typeof value === "object" && value !== null && !Array.isArray(value);
    return isObject ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function stringField(record: Record<string, unknown> | undefined, name: string): string | undefined {
  const value = record?.[name];
  return typeof value === "string" ? value : undefined;
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

/** Everything the server said about an error, for matching. */
function errorText(e: ClassifiedExchange): string {
  const rpc = (e.facts.mcp?.messages ?? []).flatMap((m) => (m.errorMessage ? [m.errorMessage] : []));
  // A redirect's body is boilerplate ("Found. Redirecting to …"), never the error.
  const body = isRedirect(e) ? "" : bodyText(e.responseBody).slice(0, 4000);
  return [e.facts.oauthError, e.facts.oauthErrorDescription, ...rpc, e.facts.wwwAuthenticate, body]
    .filter((s) => s !== undefined)
    .join(" ");
}

/** A short quote of what the server said, for summaries: ` "invalid_grant: code expired"`, or "". */
function detail(e: ClassifiedExchange): string {
  const { oauthError, oauthErrorDescription } = e.facts;
  const rpc = e.facts.mcp?.messages.find((m) => m.errorMessage)?.errorMessage;
  const text = (isRedirect(e) ? "" : bodyText(e.responseBody))
    .replace(/<(script|style)[\s\S]*?<\/\1>/gi, " ")
    .replace(/<[^>]+>/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  // Many error bodies say it in "message" rather than error_description.
  const message = oauthErrorDescription ?? (isRedirect(e) ? undefined : stringField(bodyJson(e.responseBody), "message"));
  const said =
    oauthError !== undefined
      ? message
        ? `${oauthError}: ${message}`
        : oauthError
      : (rpc ?? (text.length > 120 ? `${text.slice(0, 117)}…` : text));
  return said ? ` "${said}"` : "";
}

const description = (e: ClassifiedExchange) =>
  e.facts.oauthErrorDescription ? ` ("${e.facts.oauthErrorDescription}")` : "";
const describe = (e: ClassifiedExchange) => `${e.method} ${e.path} (#${e.id})`;
const andMore = (hits: readonly unknown[]) => (hits.length > 1 ? ` (and ${hits.length - 1} more)` : "");
const seconds = (ms: number | null | undefined) => `${((ms ?? 0) / 1000).toFixed(1)} s`;
const ids = (list: readonly ClassifiedExchange[]) => list.map((e) => e.id);
const methods = (e: ClassifiedExchange) => e.facts.mcp?.methods ?? [];

const is2xx = (e: ClassifiedExchange) => e.status !== null && e.status >= 200 && e.status < 300;
const isFailure = (e: ClassifiedExchange) => e.status !== null && e.status >= 400;
const isClientError = (e: ClassifiedExchange) => e.status !== null && e.status >= 400 && e.status < 500;
const isRedirect = (e: ClassifiedExchange) => [301, 302, 303, 307, 308].includes(e.status ?? 0);
const isAuthenticated = (e: ClassifiedExchange) => reqHeader(e, "authorization") !== undefined;
const isSse = (e: ClassifiedExchange) => /^text\/event-stream/i.test(e.facts.responseContentType ?? "");

function isHtml(e: ClassifiedExchange): boolean {
  const type = e.facts.responseContentType ?? "";
  return /text\/html/i.test(type) || /^\s*<(!doctype|html)/i.test(bodyText(e.responseBody));
}

/** The last of `list` up to and including `e`. */
function lastUpTo(list: readonly ClassifiedExchange[], e: ClassifiedExchange): ClassifiedExchange | undefined {
  return list.filter((x) => x.id <= e.id).at(-1);
}

/** Comma-separated header tokens, lower-cased. */
function tokens(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}

function parseUrl(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}

const isHttpUrl = (url: string) => /^https?:$/.test(parseUrl(url)?.protocol ?? "");
const hostOf = (url: string) => parseUrl(url)?.host;
const originOf = (url: string) => parseUrl(url)?.origin;
/** The path of a URL without its trailing slash: "" for an origin. */
const pathOf = (url: string) => trimSlash(parseUrl(url)?.pathname ?? "");
const trimSlash = (path: string) => path.replace(/\/+$/, "");
