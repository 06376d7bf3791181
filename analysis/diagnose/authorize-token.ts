// Authorize and token: the browser step, the callback and the code's redemption.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { type ClassifiedExchange, startedAfter } from "../exchange.js";
import {
  andMore,
  AUTHORIZE_KINDS,
  bodyJson,
  bodyText,
  claimed,
  codeGrants,
  describe,
  detail,
  errorText,
  ids,
  is2xx,
  isAuthenticated,
  isFailure,
  MCP_KINDS,
  MCP_STEPS,
  reqHeader,
  resHeader,
  seconds,
  stringField,
} from "./evidence.js";
import type { DiagnosisContext, DiagnosisRule } from "./rule.js";

export const AUTHORIZE_TOKEN_RULES: readonly DiagnosisRule[] = [
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
    code: "resource_rejected",
    severity: "error",
    reference: "RFC 8707 §2; MCP 2025-06-18 Authorization §Resource Parameter Implementation",
    meaning:
      "The authorization or token endpoint answered invalid_target to the resource parameter (RFC 8707) the client sent, " +
      "which MCP clients must send: an authorization server that does not support resource indicators (Entra ID v1 style), " +
      "or one that expects another value than the resource its Protected Resource Metadata names.",
    steps: ["authorize", "callback", "token"],
    check(ctx) {
      const hits = ctx.of(...AUTHORIZE_KINDS, "token").filter((e) => e.facts.oauthError === "invalid_target");
      const e = hits[0];
      if (!e) return null;
      const sent = e.facts.resource ?? lastUpTo(ctx.of("authorize"), e)?.facts.resource;
      const named = ctx.prm?.facts.metadata?.resource;
      const differs = sent !== undefined && named !== undefined && sent !== named;
      return {
        summary:
          `${describe(e)} answered invalid_target${description(e)} to resource "${sent ?? "(none)"}"` +
          (named ? `; the protected resource metadata names "${named}"${differs ? " (the client sent another value)" : ""}` : "") +
          andMore(hits),
        evidence: [...ids(hits), ...(ctx.prm ? [ctx.prm.id] : [])],
        fix: differs
          ? `Make the resource the client is told and the one the authorization server accepts the same string: the metadata's resource "${named}" is what clients send`
          : `Accept resource=${sent ?? named ?? "the MCP endpoint's URL"} at the authorization and token endpoints (RFC 8707): it is the protected resource metadata's resource, exactly; an authorization server without resource indicators must ignore the parameter, not reject it`,
      };
    },
  },
  {
    code: "sign_in_failed",
    severity: "error",
    reference: "RFC 6749 §4.1.2.1",
    meaning:
      "The authorization endpoint or its sign-in page answered the user's browser with an error page (4xx/5xx) instead of redirecting back to the client: the user could not sign in, and the client never hears why.",
    steps: ["authorize", "callback"],
    check(ctx) {
      const hits = ctx.of(...AUTHORIZE_KINDS).filter(isSignInFailure);
      const e = hits[0];
      if (!e) return null;
      return {
        summary: `The sign-in ${describe(e)} answered ${e.status}${pageMessage(e)} in the user's browser, with no redirect back to the client${andMore(hits)}`,
        evidence: ids(hits),
        fix: signInFix(e),
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
      // A client that authenticates otherwise than it registered, or presents a client_id the server
      // no longer knows, has its own code (token_auth_method_mismatch, stale_client_registration).
      const hits = codeGrants(ctx).filter(
        (e) =>
          tokenFailed(e) &&
          e.facts.oauthError !== "invalid_grant" &&
          e.facts.oauthError !== "invalid_scope" &&
          authMethodMismatch(ctx, e) === undefined &&
          !isUnknownClient(e),
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
          .filter((e) => startedAfter(e, token) && isAuthenticated(e) && (e.facts.bearerFingerprint ?? issued) === issued);
        const refused = uses.find((e) => e.status === 401 || e.status === 403);
        // Refused after it worked once is expiry or revocation, not the audience; a 403
        // insufficient_scope is about scopes (step-up), not the audience either.
        if (!refused || claimed(refused) || isInsufficientScope(refused) || uses.some((e) => startedAfter(refused, e) && is2xx(e))) {
          continue;
        }
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
];

// ---------------------------------------------------------------------------------------------
// What these rules read and say

function tokenFailed(e: ClassifiedExchange): boolean {
  return !claimed(e) && (isFailure(e) || (is2xx(e) && e.facts.issued?.accessToken === undefined));
}

/** How a token request authenticates the client: client_secret_basic, client_secret_post, a JWT assertion, or none. */
export function clientAuthUsed(e: ClassifiedExchange): string {
  if (/^basic\s/i.test(reqHeader(e, "authorization") ?? "")) return "client_secret_basic";
  const body = bodyText(e.requestBody);
  if (/(^|&)client_secret=|"client_secret"\s*:/.test(body)) return "client_secret_post";
  return /(^|&)client_assertion=|"client_assertion"\s*:/.test(body) ? CLIENT_ASSERTION : "none";
}

/** What clientAuthUsed calls a client_assertion (private_key_jwt or client_secret_jwt, RFC 7523). */
const CLIENT_ASSERTION = "private_key_jwt/client_secret_jwt";

/** The token endpoint refused the client's authentication: invalid_client, or a bare 401. */
export function clientAuthFailed(e: ClassifiedExchange): boolean {
  if (claimed(e)) return false;
  return e.facts.oauthError === "invalid_client" || (e.status === 401 && e.facts.oauthError === undefined);
}

export interface AuthMethodMismatch {
  /**
   * The method the client is registered with: what its registration recorded (the response's
   * token_endpoint_auth_method, else the request's), what the token endpoint's error names, or the
   * methods the metadata supports; undefined when the error says only that the method differs.
   */
  registered: string | undefined;
  /** What the client asked for in its registration request, when the response recorded another one. */
  requested?: string;
  /** What the token request did. */
  used: string;
  /**
   * registration: the registration recorded another method; error: the token endpoint's error says
   * so (the registration response, if any, echoed the request: `echoed`); metadata: no registration,
   * and token_endpoint_auth_methods_supported lacks the method used.
   */
  from: "registration" | "error" | "metadata";
  /** The registration (or, from metadata, the metadata document) it is compared with; absent for an error alone. */
  basis?: ClassifiedExchange;
  /** The registration response named the method the client used, which the token endpoint then refused. */
  echoed?: string;
}

/**
 * A token request refused for its client authentication (invalid_client / 401) that authenticates
 * otherwise than the client is registered for (Basic header, client_secret in the form, none): the
 * registration recorded another method, or the token endpoint's error says so. Without a registration
 * in the handshake (a pre-registered or cached client), the authorization server's
 * token_endpoint_auth_methods_supported stands in for it. Undefined unless certain: a registration
 * that names no method (RFC 7591's default would be client_secret_basic) says nothing.
 */
export function authMethodMismatch(ctx: DiagnosisContext, e: ClassifiedExchange): AuthMethodMismatch | undefined {
  if (e.kind !== "token" || !clientAuthFailed(e) || isUnknownClient(e)) return undefined;
  const used = clientAuthUsed(e);
  const clientId = e.facts.clientId;
  const registration = ctx
    .of("registration")
    .filter((r) => startedAfter(e, r) && is2xx(r) && r.facts.clientId !== undefined && (clientId === undefined || r.facts.clientId === clientId))
    .at(-1);
  const requested = registration && stringField(bodyJson(registration.requestBody), "token_endpoint_auth_method");
  const answered = registration && stringField(bodyJson(registration.responseBody), "token_endpoint_auth_method");
  const recorded = answered ?? requested;
  if (recorded !== undefined && !sameAuthMethod(recorded, used)) {
    return {
      registered: recorded,
      requested: requested !== undefined && requested !== recorded ? requested : undefined,
      used,
      from: "registration",
      basis: registration,
    };
  }
  const said = errorText(e);
  const named = registeredMethodSaid(said, used);
  if (named !== undefined || AUTH_METHOD_ERROR.test(said)) {
    return { registered: named, used, from: "error", basis: registration, echoed: recorded };
  }
  if (registration || ctx.of("registration").length > 0) return undefined;
  const doc = ctx.asDocs.find((d) => d.facts.metadata?.tokenEndpointAuthMethodsSupported !== undefined);
  const supported = doc?.facts.metadata?.tokenEndpointAuthMethodsSupported ?? [];
  if (!doc || supported.length === 0 || supported.some((m) => sameAuthMethod(m, used))) return undefined;
  return { registered: supported.join(" or "), used, from: "metadata", basis: doc };
}

/**
 * The method an error text says the client is registered for: after "registered for", "expected",
 * "must use"…; else the one method it names when that is not the one used (a list naming the used
 * method too is a list of supported ones, which proves nothing).
 */
function registeredMethodSaid(text: string, used: string): string | undefined {
  const m = REGISTERED_FOR.exec(text);
  const said = (m?.[1] ?? m?.[2] ?? m?.[3])?.toLowerCase();
  if (said !== undefined && (said === "none" || AUTH_METHOD_NAME.test(said)) && !sameAuthMethod(said, used)) return said;
  const named = [...new Set([...text.matchAll(new RegExp(AUTH_METHOD_NAME, "gi"))].map((m) => m[0].toLowerCase()))];
  return named.length === 1 && !sameAuthMethod(named[0]!, used) ? named[0] : undefined;
}

const REGISTERED_FOR =
  /\b(?:registered|configured)\s+(?:for|with|as|to use)\s+(?:token_endpoint_auth_method\s*=?\s*)?["'`]?([a-z_]+)|\bexpected\s+(?:token_endpoint_auth_method\s*=?\s*)?["'`]?([a-z_]+)|\bmust (?:use|authenticate with)\s+["'`]?([a-z_]+)/i;

const AUTH_METHOD_NAME = /\b(?:client_secret_basic|client_secret_post|client_secret_jwt|private_key_jwt|tls_client_auth|self_signed_tls_client_auth)\b/i;

/** An error that says the authentication method (not the secret) is what is wrong. */
const AUTH_METHOD_ERROR =
  /(?:token_endpoint_auth_method|auth(?:entication)?[ _]method|authentication mechanism)[^.;]{0,60}(?:mismatch|does not match|doesn't match|not allowed|not supported|unsupported|not permitted|registered)|(?:mismatch|does not match|doesn't match|not allowed|not supported|unsupported)[^.;]{0,60}(?:token_endpoint_auth_method|auth(?:entication)?[ _]method|authentication mechanism)/i;

function sameAuthMethod(registered: string, used: string): boolean {
  if (used === CLIENT_ASSERTION) return registered === "private_key_jwt" || registered === "client_secret_jwt";
  return registered === used;
}

/** invalid_client "unknown client"-like answers: the server does not know the client_id at all. */
const UNKNOWN_CLIENT =
  /\bunknown[ _-]?client(?:[ _-]?id)?\b|\bno such client\b|\bunregistered client\b|\bclient(?:[ _-]?id)?\b[^.;\n]{0,40}?\b(?:not found|does not exist|doesn't exist|no longer exists|is not registered|not registered|is unknown|unknown)\b|\bclient_id\b[^.;\n]{0,20}\bnot recogni[sz]ed\b/i;

/**
 * /authorize or /token answered that the client_id is unknown. At /authorize (no client
 * authentication there) invalid_client means just that; at /token the text must say so, since
 * invalid_client there is mostly a failed authentication. A CIMD client_id is cimd_fetch_failed's.
 */
export function isUnknownClient(e: ClassifiedExchange): boolean {
  if (claimed(e) || e.facts.clientIdIsMetadataDocument === true) return false;
  if (!isFailure(e) && e.facts.oauthError === undefined) return false;
  if (e.facts.oauthError !== undefined && !["invalid_client", "invalid_request", "unauthorized_client"].includes(e.facts.oauthError)) {
    return false;
  }
  const said = errorText(e);
  // "registered for client_secret_basic": the client is known, its authentication method is not the one.
  if (e.kind === "token" && (AUTH_METHOD_NAME.test(said) || AUTH_METHOD_ERROR.test(said))) return false;
  if (UNKNOWN_CLIENT.test(said)) return true;
  return e.kind !== "token" && e.facts.oauthError === "invalid_client";
}

/** A 403 whose challenge says error="insufficient_scope" (RFC 6750 §3.1): a step-up, not a refusal of the token. */
export function isInsufficientScope(e: ClassifiedExchange): boolean {
  return e.status === 403 && /(?:^|[\s,])error\s*=\s*"?insufficient_scope\b/i.test(resHeader(e, "www-authenticate") ?? "");
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

/** What the traffic suggests about an invalid_grant: reuse, redirect_uri change, delay, PKCE. */
function invalidGrantCauses(ctx: DiagnosisContext, token: ClassifiedExchange): GrantCause[] {
  const causes: GrantCause[] = [];
  const code = token.facts.codeFingerprint;
  const sameCode = (e: ClassifiedExchange) => code !== undefined && e.facts.codeFingerprint === code;
  const earlier = codeGrants(ctx).find((t) => startedAfter(token, t) && sameCode(t));
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

/** Authorization codes live from 30 s to 10 min: one redeemed later than this likely expired. */
const CODE_LIFETIME_MS = 60_000;

const description = (e: ClassifiedExchange) =>
  e.facts.oauthErrorDescription ? ` ("${e.facts.oauthErrorDescription}")` : "";

/** The last of `list` up to and including `e`. */
function lastUpTo(list: readonly ClassifiedExchange[], e: ClassifiedExchange): ClassifiedExchange | undefined {
  return list.filter((x) => !startedAfter(x, e)).at(-1);
}

interface GrantCause {
  reason: string;
  fix: string;
  evidence: number[];
}

/**
 * A sign-in page's own failure: an error status with no OAuth error of its own (invalid_client,
 * invalid_scope, a redirect URI: the codes for those say more), on a request that is no CIMD fetch.
 */
function isSignInFailure(e: ClassifiedExchange): boolean {
  if (e.status === null || e.status < 400 || claimed(e)) return false;
  if (e.facts.oauthError !== undefined || e.facts.clientIdIsMetadataDocument) return false;
  return !/redirect|callback|client_id|unknown client|invalid_client|scope/i.test(errorText(e));
}

/** The page's own error message (an element with role="alert" or class "error"), else what detail() quotes. */
function pageMessage(e: ClassifiedExchange): string {
  const alert = ALERT_ELEMENT.exec(bodyText(e.responseBody).slice(0, 64_000))?.[2];
  const text = (alert ?? "")
    .replace(/<[^>]+>/g, " ")
    .replace(/&(amp|lt|gt|quot|#39);/g, (_, name: string) => ENTITIES[name] ?? "")
    .replace(/\s+/g, " ")
    .trim();
  if (text === "") return detail(e);
  return ` "${text.length > 160 ? `${text.slice(0, 157)}…` : text}"`;
}

const ALERT_ELEMENT = /<(\w+)\b[^>]*\b(?:role="alert"|class="[^"]*\berror\b[^"]*")[^>]*>([\s\S]*?)<\/\1>/i;
const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', "#39": "'" };

function signInFix(e: ClassifiedExchange): string {
  if (/coda/i.test(errorText(e))) {
    return "The Coda API token the user entered was refused: create a new one at https://coda.io/account (API settings) and sign in again";
  }
  if ((e.status ?? 0) >= 500) {
    return `The authorization server failed while the user signed in: its logs for ${e.path} say why (an identity provider or database it needs, a crash); the page's text is quoted above`;
  }
  return "The sign-in itself was refused (wrong credentials, a consent the user denied, a form the server did not accept): the page's text says which; when the user denies, redirect back with error=access_denied so the client can say so";
}
