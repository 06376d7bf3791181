// After the token, as the field reports catch it failing: step-up re-authorizations that loop
// between scopes, and clients that give up once they hold a token.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { type ClassifiedExchange, startedAfter } from "../exchange.js";
import { isInsufficientScope } from "./authorize-token.js";
import { ended } from "./context.js";
import { bodyJson, codeGrants, describe, ids, is2xx, isAuthenticated, MCP_KINDS, methods } from "./evidence.js";
import type { DiagnosisContext, DiagnosisRule } from "./rule.js";
import { challengeScope } from "./www-authenticate.js";

export const AFTER_TOKEN_RULES: readonly DiagnosisRule[] = [
  {
    code: "step_up_loop",
    severity: "error",
    reference: "MCP 2025-11-25 Authorization §Scope Challenge Handling; MCP 2026-07-28 Authorization §Step-Up Authorization Flow; RFC 6750 §3.1",
    meaning:
      "403 insufficient_scope → re-authorization asking only for the challenged scope (not the union with the scopes granted " +
      "before) → a new token → 403 insufficient_scope again: the client loops between scopes. Also when the authorization " +
      "server does not grant the scope the client asked for, so no re-authorization can end the 403s.",
    steps: ["authorize", "token", "tool_call", "list"],
    check(ctx) {
      const denials = ctx.of(...MCP_KINDS).filter(isInsufficientScope);
      for (const [i, first] of denials.entries()) {
        for (const again of denials.slice(i + 1)) {
          const reauth = ctx.of("authorize").filter((a) => startedAfter(a, first) && startedAfter(again, a));
          const last = reauth.at(-1);
          const token = last && codeGrants(ctx).find((t) => startedAfter(t, last) && startedAfter(again, t) && is2xx(t));
          if (!last || !token) continue;
          const cause = stepUpCause(ctx, first, last, token, again);
          if (!cause) continue;
          const recovered = ctx.of(...MCP_KINDS).some((x) => startedAfter(x, again) && isAuthenticated(x) && is2xx(x) && sameCall(x, again));
          return {
            summary:
              `${describe(first)} answered 403 insufficient_scope (scope="${challengeScope(first) ?? ""}"); the re-authorization ` +
              `${describe(last)} asked for scope "${last.facts.scope ?? ""}"${cause.asked}; with the new token ` +
              `${describe(again)} got 403 insufficient_scope again (scope="${challengeScope(again) ?? ""}"): a step-up loop` +
              (cause.why ? `, ${cause.why}` : ""),
            evidence: [first.id, ...ids(reauth), ...(cause.showToken ? [token.id] : []), again.id],
            fix: cause.fix,
            severity: recovered ? "warning" : undefined,
          };
        }
      }
      // One round seen (a re-authorization may start a handshake of its own): the client asked for
      // the scope, the token it got lacks it, and the server challenges for it: asking again gets the same.
      for (const denial of denials) {
        const ungranted = ungrantedScope(ctx, denial);
        if (!ungranted) continue;
        const { authorize, token, missing } = ungranted;
        return {
          summary:
            `${describe(authorize)} asked for scope "${authorize.facts.scope}", but the token response ${describe(token)} ` +
            `granted only "${token.facts.scope}"; with that token ${describe(denial)} got 403 insufficient_scope ` +
            `(scope="${challengeScope(denial) ?? ""}"): re-authorizing for ${missing.map((x) => `"${x}"`).join(", ")} gets ` +
            "the same token again, a step-up loop",
          evidence: [authorize.id, token.id, denial.id],
          fix:
            `Authorization server: grant ${missing.map((x) => `"${x}"`).join(", ")} when the client asks and the user consents ` +
            "(or tell the user why not); resource server: if this user can never have it, answer with a plain 403 (no " +
            "insufficient_scope challenge) so the client stops re-authorizing",
        };
      }
      return null;
    },
  },
  {
    code: "client_abandoned_after_token",
    severity: "error",
    reference: "RFC 6749 §5.1; RFC 6750 §2.1; mcp-lens field guide §Field reports",
    meaning:
      "The token call answered 200 with an access token, then no authenticated MCP request ever came and the handshake " +
      "ended: the client gave up after the token step (often a token response it could not use).",
    steps: ["token", "discover", "initialize"],
    check(ctx) {
      if (!ended(ctx)) return null;
      // The last code redemption: one the client went away from (aborted) never reached it, and a
      // later failed one is the failure (token_invalid_grant, token_request_rejected…).
      const token = codeGrants(ctx).at(-1);
      if (!token || !is2xx(token) || token.aborted) return null;
      if (token.facts.issued?.accessToken === undefined && bodyJson(token.responseBody)?.access_token === undefined) return null;
      if (ctx.of(...MCP_KINDS).some((e) => startedAfter(e, token) && isAuthenticated(e))) return null;
      const problems = tokenResponseProblems(token);
      return {
        summary:
          `Abandoned after token: ${describe(token)} answered ${token.status} with an access token, then no authenticated ` +
          "MCP request came and the handshake ended; " +
          (problems.length > 0
            ? `likely because the token response ${problems.map((p) => p.text).join(", and ")}`
            : `the token response looks usable (${usableSummary(token)}), so the cause is probably in the client`),
        evidence: [token.id],
        fix:
          problems.length > 0
            ? `${problems.map((p, k) => (k === 0 ? p.fix : p.fix.replace(/^./, (c) => c.toLowerCase()))).join("; ")} (RFC 6749 §5.1)`
            : "Nothing on the wire explains it: look in the client's logs for what it did with the token (for a hosted connector, " +
              "its error message in the connector settings; for local clients, their debug log), and check it can reach " +
              `${ctx.connector?.url ?? "the MCP URL"} with the token`,
      };
    },
  },
];

// ---------------------------------------------------------------------------------------------
// Step-up authorization (step_up_loop)

const scopeList = (scope: string | undefined) => (scope ?? "").split(/\s+/).filter(Boolean);

/** The scopes the client held before a denial: asked for at /authorize, or granted by a token response. */
function grantedBefore(ctx: DiagnosisContext, denial: ClassifiedExchange): string[] {
  const asked = ctx.of("authorize").filter((a) => startedAfter(denial, a)).flatMap((a) => scopeList(a.facts.scope));
  const granted = ctx
    .of("token")
    .filter((t) => startedAfter(denial, t) && is2xx(t))
    .flatMap((t) => scopeList(t.facts.scope));
  return [...new Set([...asked, ...granted])];
}

interface StepUpCause {
  /** Said after the re-authorization's scope. */
  asked: string;
  /** Said after "a step-up loop". */
  why?: string;
  fix: string;
  /** The token response shows the cause (the scope it granted). */
  showToken?: boolean;
}

/**
 * Why a re-authorization after 403 insufficient_scope did not end the 403s: the client asked only for
 * the challenged scope and lost the ones it had (the client's fault, SEP-2350); the authorization
 * server did not grant what was asked; or the token still lacks it for a reason the wire does not show.
 * Undefined when the second 403 asks for a scope never requested before: that is the next step-up, not a loop.
 */
function stepUpCause(
  ctx: DiagnosisContext,
  first: ClassifiedExchange,
  reauth: ClassifiedExchange,
  token: ClassifiedExchange,
  again: ClassifiedExchange,
): StepUpCause | undefined {
  const asked = scopeList(reauth.facts.scope);
  const before = grantedBefore(ctx, first);
  const dropped = before.filter((s) => !asked.includes(s));
  const challenged = scopeList(challengeScope(again));
  const granted = token.facts.scope === undefined ? undefined : scopeList(token.facts.scope);
  const union = [...new Set([...before, ...asked, ...challenged])].join(" ");
  const clientFix =
    `Client: on 403 insufficient_scope, re-authorize with the union of the scopes already granted and the challenged ones ` +
    `(here scope="${union}"), as MCP 2026-07-28 (SEP-2350) requires. Server, for clients that do not yet: list in the ` +
    "challenge's scope every scope the client needs to keep (the granted ones plus the new one), or have the " +
    "authorization server carry previously granted scopes over into the new token";
  const list = (scopes: string[]) => scopes.map((s) => `"${s}"`).join(", ");
  if (dropped.length > 0 && challenged.some((s) => dropped.includes(s) || !asked.includes(s))) {
    return { asked: ` only, dropping ${list(dropped)} granted before`, fix: clientFix };
  }
  const notGranted = granted === undefined ? [] : challenged.filter((s) => asked.includes(s) && !granted.includes(s));
  if (notGranted.length > 0) {
    return {
      asked: "",
      why: `because the token response ${describe(token)} granted only scope "${token.facts.scope}", without ${list(notGranted)}`,
      fix:
        `Authorization server: grant ${list(notGranted)} when the client asks and the user consents (or tell the user why ` +
        "not); resource server: if this user can never have it, answer with a plain 403 (no insufficient_scope challenge) " +
        "so the client stops re-authorizing",
      showToken: true,
    };
  }
  if (challenged.length > 0 && challenged.every((s) => asked.includes(s))) {
    return {
      asked: "",
      why: "though it asked for that scope and got a token (the token does not carry it, or the server reads scopes from elsewhere)",
      fix:
        "Put the granted scopes into the access token (its scope claim, or the introspection answer) and check them from " +
        "there at the MCP route: the token issued after the step-up must pass the same check",
    };
  }
  if (before.length === 0 && challenged.some((s) => !asked.includes(s)) && scopeList(challengeScope(first)).every((s) => asked.includes(s))) {
    // Nothing known of earlier grants: the client asked for exactly the first challenge and lost the rest.
    return { asked: " only (the first challenge's scope)", fix: clientFix };
  }
  return undefined;
}

/**
 * A 403 insufficient_scope whose challenged scopes the client had asked for at /authorize, while the
 * token it presents (the code grant that issued it, else the latest before) was granted without them.
 */
function ungrantedScope(
  ctx: DiagnosisContext,
  denial: ClassifiedExchange,
): { authorize: ClassifiedExchange; token: ClassifiedExchange; missing: string[] } | undefined {
  const challenged = scopeList(challengeScope(denial));
  if (challenged.length === 0) return undefined;
  const grants = codeGrants(ctx).filter((t) => startedAfter(denial, t) && is2xx(t) && t.facts.issued?.accessToken !== undefined);
  const presented = denial.facts.bearerFingerprint;
  const token = grants.find((t) => presented !== undefined && t.facts.issued?.accessToken === presented) ?? grants.at(-1);
  if (!token || token.facts.scope === undefined) return undefined;
  const authorize = ctx.of("authorize").filter((a) => startedAfter(token, a) && a.facts.scope !== undefined).at(-1);
  if (!authorize) return undefined;
  const asked = scopeList(authorize.facts.scope);
  const granted = scopeList(token.facts.scope);
  const missing = challenged.filter((x) => !granted.includes(x));
  if (missing.length === 0 || !challenged.every((x) => asked.includes(x))) return undefined;
  return { authorize, token, missing };
}

/** The same MCP call (method and tool) as another: a retry of it. */
function sameCall(a: ClassifiedExchange, b: ClassifiedExchange): boolean {
  return methods(a).join() === methods(b).join() && (a.facts.mcp?.toolNames ?? []).join() === (b.facts.mcp?.toolNames ?? []).join();
}
// ---------------------------------------------------------------------------------------------
// The token response (client_abandoned_after_token)

interface TokenProblem {
  text: string;
  fix: string;
}

function tokenResponseProblems(e: ClassifiedExchange): TokenProblem[] {
  const reply = bodyJson(e.responseBody);
  const problems: TokenProblem[] = [];
  if (!reply) return problems;
  const { access_token: access, token_type: type, expires_in: expires } = reply;
  if (typeof access !== "string" || access === "") {
    problems.push({ text: `has access_token ${JSON.stringify(access)} (not a string)`, fix: 'Return access_token as a non-empty string' });
  }
  if (type === undefined) {
    problems.push({ text: "has no token_type", fix: 'Add "token_type": "Bearer"' });
  } else if (typeof type !== "string" || type.toLowerCase() !== "bearer") {
    problems.push({ text: `has token_type ${JSON.stringify(type)} (clients expect "Bearer")`, fix: 'Answer "token_type": "Bearer"' });
  }
  if (typeof expires === "string") {
    problems.push({
      text: `has expires_in as a string (${JSON.stringify(expires)})`,
      fix: `Send expires_in as a number (${Number.isFinite(Number(expires)) ? Number(expires) : 3600}, not ${JSON.stringify(expires)})`,
    });
  } else if (expires !== undefined && (typeof expires !== "number" || !(expires > 0))) {
    problems.push({ text: `has expires_in ${JSON.stringify(expires)}`, fix: "Send expires_in as a positive number of seconds" });
  }
  const type_ = e.facts.responseContentType ?? "";
  if (!/json/i.test(type_)) {
    problems.push({
      text: `came as ${type_ || "no content type"} rather than application/json`,
      fix: "Answer with Content-Type: application/json",
    });
  }
  return problems;
}

function usableSummary(e: ClassifiedExchange): string {
  const reply = bodyJson(e.responseBody) ?? {};
  const parts = [`token_type ${JSON.stringify(reply.token_type)}`];
  if (reply.expires_in !== undefined) parts.push(`expires_in ${JSON.stringify(reply.expires_in)}`);
  parts.push(reply.refresh_token !== undefined ? "a refresh_token" : "no refresh_token");
  return parts.join(", ");
}
