// Registration: dynamic client registration and the redirect URIs it records.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { isLoopbackHost } from "../client-family.js";
import { type ClassifiedExchange, startedAfter } from "../exchange.js";
import { AUTHORIZE_KINDS, bodyJson, claimed, describe, detail, errorText, ids, is2xx, parseUrl } from "./evidence.js";
import type { DiagnosisRule } from "./rule.js";

export const REGISTRATION_RULES: readonly DiagnosisRule[] = [
  {
    code: "registration_unavailable",
    severity: "error",
    reference: "RFC 7591 §3; MCP 2026-07-28 Authorization §Client Registration (CIMD, then DCR); MCP 2025-06-18 Authorization §2.4",
    meaning:
      "The client cannot get a client id: the registration endpoint is 404/405/501; or the authorization server " +
      "offers neither dynamic registration (no registration_endpoint) nor Client ID Metadata Documents " +
      "(client_id_metadata_document_supported) and the client never presented a static id; or it offers only " +
      "CIMD and the client, which did not use it, needs CIMD support or a pre-registered id.",
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
      // No "client stopped" condition: a client that goes on with a static client id (or a CIMD
      // URL) shows it in a later authorize or token request, and the rules run again then.
      if (!doc || ctx.of("registration").length > 0) return null;
      const later = ctx.of(...AUTHORIZE_KINDS, "token").filter((e) => startedAfter(e, doc));
      if (later.some((e) => e.facts.clientId !== undefined)) return null;
      if (doc.facts.metadata?.clientIdMetadataDocumentSupported === true) {
        return {
          summary:
            `The authorization server metadata ${describe(doc)} offers only Client ID Metadata Documents ` +
            "(client_id_metadata_document_supported: true, no registration_endpoint); the client did not use one " +
            "and never presented a client id",
          evidence: [doc.id],
          fix:
            "Use a client that supports Client ID Metadata Documents (MCP 2026-07-28 clients and SDKs 2.x do), or " +
            "pre-register a client at the authorization server and enter its client id (and secret) in the " +
            "connector's settings; or also enable dynamic client registration (RFC 7591) for older clients",
        };
      }
      return {
        summary:
          `The authorization server metadata ${describe(doc)} has no registration_endpoint and does not advertise ` +
          "client_id_metadata_document_supported, and the client never presented a client id",
        evidence: [doc.id],
        fix:
          "Enable dynamic client registration (RFC 7591) and advertise registration_endpoint, or support Client ID " +
          "Metadata Documents and advertise client_id_metadata_document_supported: true, or have the user enter a " +
          "static client id (and secret) in the connector's advanced settings",
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
      "Registration does not really register: every client gets the same client_id, or the response drops the redirect_uris it was sent.",
    steps: ["registration", "authorize", "callback"],
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
      // A registration that listed the redirect URI the authorize step then rejected is
      // redirect_uri_rejected's to tell: the authorization server checks a fixed list.
      const dropped = registered.find((r) => {
        const echoed = stringList(bodyJson(r.responseBody)?.redirect_uris);
        return (r.facts.redirectUris ?? []).some((u) => !echoed.includes(u));
      });
      if (!dropped) return null;
      const failedLater = ctx.of(...AUTHORIZE_KINDS).some((x) => startedAfter(x, dropped) && isClientError(x));
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
      // A Client ID Metadata Document lists its own redirect URIs: cimd_fetch_failed tells those.
      const hits = ctx.of(...AUTHORIZE_KINDS).filter((e) => isRedirectRejection(e) && !e.facts.clientIdIsMetadataDocument);
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
];

// ---------------------------------------------------------------------------------------------
// What these rules read and say

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

function isRedirectRejection(e: ClassifiedExchange): boolean {
  const error = e.facts.oauthError;
  if (error === "invalid_redirect_uri") return true;
  // A healthy 302 to the callback mentions redirects too: only errors count.
  const failed = isClientError(e) || error !== undefined;
  return failed && error !== "invalid_scope" && /redirect|callback/i.test(errorText(e));
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

/** https without userinfo, or http to a loopback address: what an authorization server should accept. */
function isAcceptableRedirectUri(uri: string): boolean {
  const url = parseUrl(uri);
  if (!url || url.username || url.password || url.hash) return false;
  if (url.protocol === "https:") return true;
  return url.protocol === "http:" && isLoopbackHost(url.hostname);
}

const isClientError = (e: ClassifiedExchange) => e.status !== null && e.status >= 400 && e.status < 500;
