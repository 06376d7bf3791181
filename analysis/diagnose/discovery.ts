// Discovery: the probe's challenge, protected resource and authorization server metadata.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { type ClassifiedExchange, startedAfter } from "../exchange.js";
import { forwardedProto, publicHost } from "./context.js";
import {
  andMore,
  AS_KINDS,
  claimed,
  describe,
  detail,
  ids,
  is2xx,
  isAcceptRejection,
  isHtml,
  MCP_KINDS,
  MCP_STEPS,
  parseUrl,
  pathOf,
  PRM_PATH,
  reqHeader,
  trimSlash,
} from "./evidence.js";
import type { ConnectorUrl, DiagnosisContext, DiagnosisRule } from "./rule.js";

export const DISCOVERY_RULES: readonly DiagnosisRule[] = [
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
      // A modern probe the server refused is the eras' business: a healthy fallback, or era_mismatch.
      const e = ctx.probes.find(
        (p) => p.status !== null && !is2xx(p) && p.status !== 401 && !claimed(p) && p.facts.mcp?.era !== "modern",
      );
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
      // With the scheme inferred from the client family, the URL is a conclusion, not a sighting.
      const connected =
        connector.schemeFrom === "hosted_client"
          ? `the client, a hosted one that dials https only, presumably connected to ${connector.url}`
          : `the client connected to ${connector.url}${via}`;
      // A client that went on to the authorization server got past this step: not its failure.
      const wentOn = ctx.exchanges.some((e) => startedAfter(e, prm) && LATER_KINDS.has(e.kind));
      return {
        summary:
          resource === undefined
            ? `The protected resource metadata ${describe(prm)} has no resource; ${connected}`
            : `The protected resource metadata ${describe(prm)} says resource ${resource} but ${connected}: ${difference}`,
        evidence: [prm.id, connector.exchangeId],
        fix: resourceFix(difference, connector),
        ...(wentOn ? { severity: "warning" as const } : {}),
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
      // An authless server has no authorization server: a client looking for one is only checking.
      if (ctx.authless || ctx.asDocs.length > 0) return null;
      const failures = ctx.of(...AS_KINDS).filter((e) => !claimed(e));
      const e = failures[0];
      if (!e) return null;
      const issuer = ctx.prm?.facts.metadata?.authorizationServers?.[0] ?? issuerFromWellKnown(e, ctx) ?? "<issuer>";
      const path = pathOf(issuer);
      const wellKnown = `${originOf(issuer) ?? "https://<host>"}/.well-known/oauth-authorization-server${path}`;
      // Some clients then invent /authorize, /token and /register on the MCP origin.
      const wentOn = ctx.of("registration", "authorize", "authorize_consent", "token").some((x) => startedAfter(x, e));
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
      const wentOn = ctx.of("registration", "authorize").some((x) => startedAfter(x, doc));
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
];

// ---------------------------------------------------------------------------------------------
// What these rules read and say

/** Steps after the protected resource metadata: reaching one means the client went past it. */
const LATER_KINDS = new Set<ClassifiedExchange["kind"]>([
  "authorization_server_metadata",
  "openid_configuration",
  "registration",
  "authorize",
  "authorize_consent",
  "token",
]);

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
  // Only a scheme the front proxy reported counts: an inferred one is no evidence against the URL.
  if (!prmFetched && connector.schemeFrom === "forwarded" && parsed.protocol !== `${connector.scheme}:`) {
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

const isHttpUrl = (url: string) => /^https?:$/.test(parseUrl(url)?.protocol ?? "");

const hostOf = (url: string) => parseUrl(url)?.host;

const originOf = (url: string) => parseUrl(url)?.origin;

function metadataFailure(e: ClassifiedExchange): string | undefined {
  if (e.status === null) return "no answer";
  if (e.status === 401) return "401 (behind the auth middleware)";
  if (!is2xx(e)) return String(e.status);
  if (isHtml(e)) return `${e.status} HTML instead of JSON`;
  if (e.facts.metadata === undefined) return `${e.status} ${e.facts.parseError ? "unparsable JSON" : "not a JSON metadata document"}`;
  return undefined;
}
