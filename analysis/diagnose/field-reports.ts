// Failures the field reports most (2025-2026 trackers of clients, SDKs and servers): client
// authentication, stale registrations, refresh races, token errors, tool definitions, challenges.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { asList, isRecord, view } from "../exchange-view.js";
import type { ClassifiedExchange } from "../exchange.js";
import { listedToolNames, sseMessages } from "../mcp-facts.js";
import { type AuthMethodMismatch, authMethodMismatch, isInsufficientScope, isUnknownClient } from "./authorize-token.js";
import { ended, publicHost } from "./context.js";
import {
  andMore,
  AUTHORIZE_KINDS,
  bodyJson,
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
  methods,
  PRM_PATH,
  seconds,
} from "./evidence.js";
import type { DiagnosisContext, DiagnosisRule } from "./rule.js";

/** Tool names hosted clients accept (claude.ai's FrontendRemoteMcpToolDefinition, OpenAI's tools[].name). */
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * claude.ai's connector drops a tool whose serialised inputSchema exceeds 16 KiB (field reports of
 * 2026, found by bisection: 16,384 bytes load, 16,385 do not; per tool, the schema alone, compact
 * JSON). Below mcp-lens's default 64 KiB body capture, so a recorded tools/list shows it.
 */
export const TOOL_SCHEMA_LIMIT_BYTES = 16 * 1024;

export const FIELD_REPORT_RULES: readonly DiagnosisRule[] = [
  {
    code: "token_auth_method_mismatch",
    severity: "error",
    reference: "RFC 7591 §2 (token_endpoint_auth_method); RFC 6749 §2.3.1; RFC 8414 §2",
    meaning:
      "The token endpoint answers invalid_client (401/400) because the client authenticates otherwise than its registration " +
      "recorded: an HTTP Basic header, client_secret in the form, or no secret (none).",
    steps: ["token", "refresh"],
    explains: ["token_request_rejected", "refresh_token_missing"],
    check(ctx) {
      const found = ctx
        .of("token")
        .flatMap((e) => {
          const m = authMethodMismatch(ctx, e);
          return m ? [{ e, m }] : [];
        });
      const first = found[0];
      if (!first) return null;
      const { e, m } = first;
      const recorded =
        m.from === "registration"
          ? `the registration ${describe(m.basis!)} recorded token_endpoint_auth_method=${m.registered}` +
            `${m.requested !== undefined ? ` (the client had asked for ${m.requested})` : ""}`
          : m.from === "metadata"
            ? `no registration in this handshake, and the authorization server metadata ${describe(m.basis!)} ` +
              `supports only ${m.registered}`
            : `the token endpoint says the client is registered for ${m.registered ?? "another method"}` +
              (m.echoed !== undefined && m.basis
                ? ` although the registration response ${describe(m.basis)} said token_endpoint_auth_method=${m.echoed} ` +
                  "(it echoed the request instead of what was stored)"
                : "");
      return {
        summary:
          `The token request ${describe(e)} authenticated the client with ${m.used} (${AUTH_HOW[m.used] ?? m.used}) ` +
          `but ${recorded}; it answered ${e.status}${detail(e)}${andMore(found)}`,
        evidence: [...(m.basis ? [m.basis.id] : []), ...found.map((f) => f.e.id)],
        fix: authMethodFix(m),
      };
    },
  },
  {
    code: "stale_client_registration",
    severity: "error",
    reference: "RFC 7591 §3; RFC 6749 §5.2 (invalid_client); MCP 2026-07-28 Authorization §Client Registration",
    meaning:
      "/authorize or /token answers invalid_client (\"unknown client\") for a client_id this handshake did not just register: " +
      "the client keeps a registration the authorization server no longer knows (pruned, store reset, another replica or AS) and never registers again.",
    steps: ["authorize", "callback", "token", "refresh"],
    explains: ["token_request_rejected", "refresh_token_missing", "redirect_uri_rejected"],
    check(ctx) {
      const hits = ctx.of(...AUTHORIZE_KINDS, "token").filter((e) => isUnknownClient(e) && staleness(ctx, e) !== undefined);
      const e = hits[0];
      if (!e) return null;
      const why = staleness(ctx, e)!;
      const clientId = e.facts.clientId;
      return {
        summary:
          `${describe(e)} answered ${e.status}${detail(e)} for client_id ${clientId ?? "(in the Basic header)"}, ` +
          `${why.text}; the client did not register again${andMore(hits)}`,
        evidence: [...ids(hits), ...(why.registration ? [why.registration.id] : []), ...(why.accepted ? [why.accepted.id] : [])],
        fix:
          "Client: on invalid_client for a dynamically registered client_id, drop the stored registration and register " +
          "again (RFC 7591) — for a hosted connector, remove and re-add it. Server: keep registrations in a database shared " +
          "by every replica so they survive restarts and deploys, and do not prune clients that still hold refresh tokens " +
          "(a static client_id entered by hand: check it against the authorization server's)",
      };
    },
  },
  {
    code: "refresh_token_replayed",
    severity: "error",
    reference: "RFC 9700 §4.14.2 (refresh token rotation); RFC 6749 §6",
    meaning:
      "Two refresh_token grants present the same refresh token within seconds and the second gets invalid_grant: rotation " +
      "without a grace window meets concurrent or retried refreshes, and the user must sign in again.",
    steps: ["refresh"],
    explains: ["refresh_token_missing"],
    check(ctx) {
      const refreshes = ctx.of("token").filter((e) => e.facts.grantType === "refresh_token" && e.facts.refreshTokenFingerprint);
      for (const refused of refreshes.filter(grantRefused)) {
        // The other use of the same refresh token: usually the earlier one; with concurrent requests
        // the one the server happened to serve first may have arrived second.
        const others = refreshes.filter(
          (o) =>
            o.id !== refused.id &&
            o.facts.refreshTokenFingerprint === refused.facts.refreshTokenFingerprint &&
            Math.abs(refused.startedAt - o.startedAt) <= REPLAY_WINDOW_MS,
        );
        // A first use that was refused too was no rotation: the token was dead already.
        const other = others.find(is2xx) ?? others.find((o) => o.id < refused.id && (o.status === null || o.aborted));
        if (!other) continue;
        const [a, b] = other.id < refused.id ? [other, refused] : [refused, other];
        const apart = seconds(Math.abs(b.startedAt - a.startedAt));
        const concurrent = a.durationMs === null || b.startedAt < a.startedAt + a.durationMs;
        const rotated = other.facts.issued?.refreshToken;
        const otherOutcome = is2xx(other)
          ? `${describe(other)} redeemed it${rotated ? " and rotated it (a new refresh token was issued)" : ""}`
          : `${describe(other)} ${other.status === null ? "got no answer" : `answered ${other.status}`}`;
        return {
          summary:
            `Two refresh_token grants with the same refresh token (fingerprint ${refused.facts.refreshTokenFingerprint}) ${apart} apart` +
            `${concurrent ? ", concurrently" : other.id < refused.id && !is2xx(other) ? " (a retry)" : ""}: ${otherOutcome}, and ` +
            `${describe(refused)} got${detail(refused) || ` ${refused.status}`}; the connector loses its session and the user ` +
            "must sign in again",
          evidence: [other.id, refused.id],
          fix:
            "Server: when rotating refresh tokens, keep accepting the previous one for a grace period (30–60 s) and answer " +
            "a repeat with the tokens just issued, instead of refusing it or revoking the whole token family. Client: run " +
            "one refresh at a time per connection (concurrent requests wait for the same refresh) and store the rotated " +
            "refresh token before using it again",
        };
      }
      return null;
    },
  },
  {
    code: "invalid_token_wrong_status",
    severity: "error",
    reference: "RFC 6750 §3.1; MCP 2025-06-18 Authorization §Error Handling",
    meaning:
      "An authenticated MCP request is answered 400 or 5xx with an error about the token (expired, invalid, JWT, signature) " +
      "instead of 401 with WWW-Authenticate, so the client never refreshes or re-authorizes. (A 401 without " +
      "WWW-Authenticate is the right status: clients refresh on it; it is not this code.)",
    steps: [...MCP_STEPS, "stream", "discover"],
    check(ctx) {
      const hits = ctx.of(...MCP_KINDS).filter(isTokenErrorWithWrongStatus);
      const e = hits[0];
      if (!e) return null;
      // The client refreshed anyway (on its own schedule) and went on: a latent problem.
      const recovered =
        ctx.of("token").some((t) => t.id > e.id && t.facts.grantType === "refresh_token" && is2xx(t)) &&
        ctx.of(...MCP_KINDS).some((x) => x.id > e.id && isAuthenticated(x) && is2xx(x));
      // An error carrying the call's own id came from the tool's handler, which may speak of its
      // own upstream credential; middleware answers before any handler (id null, or no JSON-RPC).
      const handlerAnswered = (e.facts.mcp?.messages ?? []).some(
        (m) => m.direction === "response" && m.type === "error" && m.id !== null && m.id !== undefined,
      );
      const upstreamCaveat = handlerAnswered ? " (unless the handler speaks of its own upstream credential)" : "";
      return {
        summary:
          `${describe(e)} carried a bearer token and answered ${e.status}${detail(e)}: the error is about the token${upstreamCaveat}, ` +
          `but only a 401 with WWW-Authenticate makes a client refresh or re-authorize${andMore(hits)}`,
        evidence: ids(hits),
        fix:
          "Answer a missing, expired or invalid bearer token with 401 and WWW-Authenticate: Bearer error=\"invalid_token\", " +
          `resource_metadata="${prmUrl(ctx)}" (RFC 6750 §3.1): catch the JWT library's errors (TokenExpiredError, ` +
          "JsonWebTokenError, signature failures) in the auth middleware instead of letting them become a 500 or 400",
        severity: recovered ? "warning" : undefined,
      };
    },
  },
  {
    code: "tool_definition_rejected",
    severity: "warning",
    reference: "mcp-lens field guide §Field reports; MCP 2025-11-25 Server Tools §Tool Names",
    meaning:
      "tools/list succeeds but lists a tool hosted clients drop: a name outside ^[a-zA-Z0-9_-]{1,64}$ (the spec allows " +
      `dots and 128 characters), or an inputSchema over ${TOOL_SCHEMA_LIMIT_BYTES / 1024} KiB serialised. The tool never appears; calls to it fail.`,
    steps: ["list", "tool_call"],
    check(ctx) {
      const lists = ctx.of("mcp_post").filter((e) => is2xx(e) && methods(e).includes("tools/list"));
      const bad = new Map<string, { problem: string; list: ClassifiedExchange; schemaBytes: number }>();
      for (const list of lists) {
        for (const tool of listedTools(list)) {
          const problem = toolProblem(tool.name, tool.schemaBytes);
          if (problem !== undefined && !bad.has(tool.name)) bad.set(tool.name, { problem, list, schemaBytes: tool.schemaBytes });
        }
      }
      const calls = ctx.of("mcp_post").filter((e) => methods(e).includes("tools/call"));
      const callsOf = (name: string) => calls.filter((c) => c.facts.mcp?.toolNames?.includes(name));
      // A tool this client called successfully was not dropped by it.
      const dropped = [...bad.entries()].filter(([name]) => !callsOf(name).some((c) => is2xx(c) && !rpcError(c)));
      if (dropped.length === 0) return null;
      const failedCalls = dropped.flatMap(([name]) => callsOf(name).filter((c) => isFailure(c) || rpcError(c)));
      const listed = dropped.map(([name, b]) => `"${name}" (${b.problem})`).join(", ");
      const listExchanges = [...new Set(dropped.map(([, b]) => b.list))];
      const failed = failedCalls[0];
      const badName = dropped.some(([name]) => !validToolName(name));
      const bigSchema = dropped.some(([name, b]) => validToolName(name) && b.schemaBytes > TOOL_SCHEMA_LIMIT_BYTES);
      const why = [
        ...(badName ? ["claude.ai checks every name against ^[a-zA-Z0-9_-]{1,64}$ and may withhold the whole tool list"] : []),
        ...(bigSchema ? [`claude.ai drops a tool whose inputSchema exceeds ${TOOL_SCHEMA_LIMIT_BYTES / 1024} KiB`] : []),
      ];
      return {
        summary:
          `tools/list ${describe(listExchanges[0]!)} lists ${dropped.length === 1 ? "a tool" : `${dropped.length} tools`} ` +
          `hosted clients drop: ${listed}` +
          (failed ? `; then tools/call ${describe(failed)}${detail(failed)} failed` : "") +
          ` — field reports: ${why.join("; ")}`,
        evidence: [...ids(listExchanges), ...ids(failedCalls)],
        fix: dropped
          .map(([name, b]) =>
            b.schemaBytes > TOOL_SCHEMA_LIMIT_BYTES && validToolName(name)
              ? `shrink the inputSchema of "${name}" below ${TOOL_SCHEMA_LIMIT_BYTES / 1024} KiB (compact JSON): move long ` +
                "enums and descriptions out of it, drop unused $defs"
              : `rename "${name}" to "${saneToolName(name)}" (letters, digits, _ and - only, at most 64 characters)`,
          )
          .join("; ")
          .replace(/^./, (c) => c.toUpperCase()),
        severity: failed ? "error" : undefined,
      };
    },
  },
  {
    code: "www_authenticate_malformed",
    severity: "error",
    reference: "RFC 9110 §11.2, §11.6.1; RFC 6750 §3; RFC 9728 §5.1",
    meaning:
      "A WWW-Authenticate on an MCP 401/403 is malformed: resource_metadata twice (two layers add it), parameters stripped " +
      "or garbled by an intermediary (junk after Bearer, unbalanced quotes), or no Bearer challenge at all.",
    steps: ["probe", "protected_resource_metadata", ...MCP_STEPS],
    explains: ["www_authenticate_missing", "resource_metadata_url_invalid"],
    check(ctx) {
      const hits = ctx
        .of(...MCP_KINDS)
        .flatMap((e) => {
          const problem = (e.status === 401 || e.status === 403) && !claimed(e) ? challengeProblem(e) : undefined;
          return problem ? [{ e, problem }] : [];
        });
      const first = hits[0];
      if (!first) return null;
      const { e, problem } = first;
      const values = challengeValues(e);
      const shown = values.map((v) => `WWW-Authenticate: ${v}`).join(" + ");
      // Clients of 2025-11-25 fall back to the well-known URL; once one did, this did not stop it.
      const wentOn = ctx.exchanges.some(
        (x) => x.id > e.id && is2xx(x) && (x.kind === "protected_resource_metadata" || (MCP_KINDS.includes(x.kind) && isAuthenticated(x))),
      );
      return {
        summary: `${describe(e)} answered ${e.status} with ${shown}: ${problem.text}${andMore(hits)}`,
        evidence: hits.map((h) => h.e.id),
        fix: problem.fix(prmUrl(ctx)),
        severity: wentOn ? "warning" : undefined,
      };
    },
  },
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
          const reauth = ctx.of("authorize").filter((a) => a.id > first.id && a.id < again.id);
          const last = reauth.at(-1);
          const token = last && codeGrants(ctx).find((t) => t.id > last.id && t.id < again.id && is2xx(t));
          if (!last || !token) continue;
          const cause = stepUpCause(ctx, first, last, token, again);
          if (!cause) continue;
          const recovered = ctx.of(...MCP_KINDS).some((x) => x.id > again.id && isAuthenticated(x) && is2xx(x) && sameCall(x, again));
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
      if (ctx.of(...MCP_KINDS).some((e) => e.id > token.id && isAuthenticated(e))) return null;
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
// Client authentication (token_auth_method_mismatch)

const AUTH_HOW: Record<string, string> = {
  client_secret_basic: "an Authorization: Basic header",
  client_secret_post: "client_secret in the form body",
  none: "client_id only, no secret",
  "private_key_jwt/client_secret_jwt": "a client_assertion",
};

const AUTH_DO: Record<string, string> = {
  client_secret_basic: "send Authorization: Basic base64(client_id:client_secret) and no client_secret in the form",
  client_secret_post: "send client_id and client_secret in the form body and no Authorization header",
  none: "send only client_id (a public client, PKCE protects the code)",
};

function authMethodFix(m: AuthMethodMismatch): string {
  if (m.from === "metadata") {
    return (
      `Make the two agree: have the client use ${m.registered} (as token_endpoint_auth_methods_supported says), or accept ` +
      `${m.used} at the token endpoint and list it in token_endpoint_auth_methods_supported`
    );
  }
  if (m.from === "error") {
    const echoed = m.echoed !== undefined
      ? `Server: store the token_endpoint_auth_method the client registered (${m.echoed}), or answer the registration with ` +
        `the one actually stored${m.registered ? ` (${m.registered})` : ""} so the client can follow it (RFC 7591 §3.2.1)`
      : `Server: accept ${m.used} for this client (many servers accept client_secret_basic and client_secret_post alike)`;
    const client = m.registered && AUTH_DO[m.registered] ? `; client: ${AUTH_DO[m.registered]}` : "";
    return `${echoed}${client}`;
  }
  const client = (m.registered && AUTH_DO[m.registered]) ?? `authenticate with ${m.registered}`;
  const server =
    m.requested !== undefined
      ? `register the method the client asked for (${m.requested}) instead of answering ${m.registered}`
      : `accept ${m.used} for this client too (many servers accept both client_secret_basic and client_secret_post for confidential clients)`;
  return `Make the token request match the registration: the client must ${client}, as its registration recorded ${m.registered}; or the server must ${server}`;
}

// ---------------------------------------------------------------------------------------------
// Stale registrations (stale_client_registration)

/** A registration this old (or older) is not "just now": the client kept it from an earlier connection. */
const FRESH_REGISTRATION_MS = 10 * 60_000;

interface Staleness {
  text: string;
  registration?: ClassifiedExchange;
  /** Where the authorization server last accepted the client_id. */
  accepted?: ClassifiedExchange;
}

/** Why the unknown client_id is a stale one; undefined when the handshake just registered it, or the client re-registered afterwards. */
function staleness(ctx: DiagnosisContext, e: ClassifiedExchange): Staleness | undefined {
  if (ctx.of("registration").some((r) => r.id > e.id)) return undefined; // it registered again: it got past
  const clientId = e.facts.clientId;
  const registration = ctx
    .of("registration")
    .filter((r) => r.id < e.id && is2xx(r) && r.facts.clientId !== undefined && (clientId === undefined || r.facts.clientId === clientId))
    .at(-1);
  if (!registration) {
    return {
      text:
        "which this handshake never registered (no registration call: probably a client_id the client stored from an " +
        "earlier connection), and the authorization server no longer knows it",
    };
  }
  const host = publicHost(registration);
  if (host !== undefined && host !== publicHost(e)) {
    return {
      text: `which ${describe(registration)} registered at another authorization server (${host}): client ids are bound to the server that issued them`,
      registration,
    };
  }
  // The authorization server accepted the client_id since (a code delivered, a token issued), then forgot it.
  const accepted = ctx
    .of(...AUTHORIZE_KINDS, "token")
    .find(
      (x) =>
        x.id > registration.id &&
        x.id < e.id &&
        x.facts.clientId === registration.facts.clientId &&
        (x.facts.issued?.code !== undefined || (x.kind === "token" && is2xx(x) && x.facts.issued?.accessToken !== undefined)),
    );
  if (accepted) {
    return {
      text:
        `which ${describe(registration)} registered ${duration(e.startedAt - registration.startedAt)} earlier and the ` +
        `authorization server accepted at ${describe(accepted)}; it has since forgotten it (a store reset, pruning, another replica)`,
      registration,
      accepted,
    };
  }
  const age = e.startedAt - registration.startedAt;
  if (age < FRESH_REGISTRATION_MS) return undefined;
  return {
    text: `which ${describe(registration)} registered ${duration(age)} earlier; the authorization server has since forgotten it`,
    registration,
  };
}

/** "12 s", "45 min", "3.0 h", "30 days": how long ago, readably. */
function duration(ms: number): string {
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 2 * 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (ms < 48 * 3_600_000) return `${(ms / 3_600_000).toFixed(1)} h`;
  return `${Math.round(ms / 86_400_000)} days`;
}

// ---------------------------------------------------------------------------------------------
// Refresh races (refresh_token_replayed)

/** Two refreshes with one refresh token this close are a race or a retry, not a token kept too long. */
const REPLAY_WINDOW_MS = 30_000;

function grantRefused(e: ClassifiedExchange): boolean {
  if (claimed(e)) return false;
  if (e.facts.oauthError === "invalid_grant") return true;
  return isFailure(e) && /invalid_grant|revoked|already (?:been )?used|reused?|replay/i.test(errorText(e));
}

// ---------------------------------------------------------------------------------------------
// Token errors with the wrong status (invalid_token_wrong_status)

/** What an auth middleware says about a bad bearer token. */
const TOKEN_ERROR = new RegExp(
  [
    "\\binvalid_token\\b",
    "\\b(?:TokenExpiredError|JsonWebTokenError|NotBeforeError|JWTExpired|JWSSignatureVerificationFailed|JWTInvalid|ExpiredSignatureError|InvalidTokenError)\\b",
    "\\bjwt (?:expired|malformed|must be provided|signature)",
    "\\b(?:invalid|bad) signature\\b",
    "\\bsignature (?:verification )?failed\\b",
    "\\bunauthori[sz]ed\\b",
    "\\b(?:access[ _-]?token|bearer|jwt|token)\\b[^.;\\n]{0,40}?\\b(?:expired|invalid|malformed|revoked|not valid|verification|signature)\\b",
    "\\b(?:expired|invalid|malformed|revoked)\\b[^.;\\n]{0,20}?\\b(?:access[ _-]?token|bearer|jwt|token|credentials)\\b",
  ].join("|"),
  "i",
);

/** JSON-RPC errors of the protocol itself (2026-07-28 request validation, unknown method): not about the token. */
const PROTOCOL_ERROR_CODES = new Set([-32020, -32021, -32022, -32601, -32600, -32700]);

function isTokenErrorWithWrongStatus(e: ClassifiedExchange): boolean {
  if (!isAuthenticated(e) || e.status === null || !(e.status === 400 || e.status >= 500) || claimed(e)) return false;
  if ((e.facts.mcp?.messages ?? []).some((m) => m.errorCode !== undefined && PROTOCOL_ERROR_CODES.has(m.errorCode))) return false;
  const said = errorText(e);
  // Session errors (a missing or unknown Mcp-Session-Id) are session_not_found's.
  if (/\bsession\b/i.test(said) && !/\b(?:jwt|bearer|access[ _-]?token)\b/i.test(said)) return false;
  return TOKEN_ERROR.test(said);
}

// ---------------------------------------------------------------------------------------------
// Tool definitions (tool_definition_rejected)

const validToolName = (name: string) => TOOL_NAME.test(name);

function saneToolName(name: string): string {
  return name.replace(/[^a-zA-Z0-9_-]/g, "_").slice(0, 64) || "tool";
}

function toolProblem(name: string, schemaBytes: number): string | undefined {
  if (!validToolName(name)) {
    if (name.length === 0) return "an empty name";
    const invalid = [...new Set(name.replace(/[a-zA-Z0-9_-]/g, ""))].map((c) => JSON.stringify(c));
    const why = [
      ...(invalid.length > 0 ? [`${invalid.join(", ")} outside [a-zA-Z0-9_-]`] : []),
      ...(name.length > 64 ? [`${name.length} characters, over 64`] : []),
    ];
    return `name: ${why.join(", ")}`;
  }
  if (schemaBytes > TOOL_SCHEMA_LIMIT_BYTES) {
    return `inputSchema ${(schemaBytes / 1024).toFixed(1)} KiB, over ${TOOL_SCHEMA_LIMIT_BYTES / 1024} KiB`;
  }
  return undefined;
}

/** The tools the server listed (names from listedToolNames) with the compact size of their inputSchema. */
function listedTools(e: ClassifiedExchange): Array<{ name: string; schemaBytes: number }> {
  const names = listedToolNames(e);
  if (names.length === 0) return [];
  const v = view(e);
  const sizes = new Map<string, number>();
  for (const m of v.answeredSse ? sseMessages(v) : asList(v.responseJson)) {
    if (!isRecord(m) || !isRecord(m.result) || !Array.isArray(m.result.tools)) continue;
    for (const tool of m.result.tools) {
      if (isRecord(tool) && typeof tool.name === "string" && !sizes.has(tool.name)) {
        sizes.set(tool.name, Buffer.byteLength(JSON.stringify(tool.inputSchema ?? {}) ?? ""));
      }
    }
  }
  return names.map((name) => ({ name, schemaBytes: sizes.get(name) ?? 0 }));
}

const rpcError = (e: ClassifiedExchange) => (e.facts.mcp?.messages ?? []).some((m) => m.type === "error");

// ---------------------------------------------------------------------------------------------
// Challenges (www_authenticate_malformed, step_up_loop)

interface Challenge {
  scheme: string;
  params: Array<[name: string, value: string]>;
  token68?: string;
}

interface ChallengeProblem {
  text: string;
  fix: (prm: string) => string;
}

/** Every WWW-Authenticate value of the response, in wire order. */
function challengeValues(e: ClassifiedExchange): string[] {
  return (e.responseHeaders ?? []).filter(([n]) => n.toLowerCase() === "www-authenticate").map(([, v]) => v);
}

const TCHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;

/**
 * Parses WWW-Authenticate values (RFC 9110 §11.6.1: #challenge, challenge = scheme [ token68 / #auth-param ]).
 * Lenient where clients are: an unquoted value may hold any character but whitespace, "," and '"' (URLs).
 * Returns the challenges, or what makes the header unparsable.
 */
export function parseChallenges(values: readonly string[]): { challenges: Challenge[] } | { error: string } {
  const challenges: Challenge[] = [];
  for (const value of values) {
    const s = value;
    let i = 0;
    const ows = () => {
      while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
    };
    const token = () => {
      const start = i;
      while (i < s.length && TCHAR.test(s[i]!)) i++;
      return s.slice(start, i);
    };
    let current: Challenge | undefined;
    while (i < s.length) {
      ows();
      if (s[i] === ",") {
        i++;
        continue;
      }
      if (i >= s.length) break;
      const start = i;
      const name = token();
      if (name === "") return { error: `unparsable text ${quote(s.slice(i))} where an auth scheme or parameter should be` };
      ows();
      if (s[i] === "=" && !current) return { error: `a parameter (${name}=…) without an auth scheme before it` };
      if (s[i] === "=" && current && current.token68 === undefined) {
        // name=value: a parameter of the current challenge (or the current one's token68 padding).
        i++;
        ows();
        let v: string;
        if (s[i] === '"') {
          i++;
          let out = "";
          let closed = false;
          while (i < s.length) {
            const c = s[i]!;
            if (c === "\\" && i + 1 < s.length) {
              out += s[i + 1];
              i += 2;
              continue;
            }
            if (c === '"') {
              closed = true;
              i++;
              break;
            }
            out += c;
            i++;
          }
          if (!closed) return { error: `an unbalanced quote in the value of ${name}` };
          v = out;
        } else {
          const from = i;
          while (i < s.length && !/[\s,"]/.test(s[i]!)) i++;
          v = s.slice(from, i);
          if (v === "") return { error: `${name}= has no value` };
        }
        current.params.push([name, v]);
        ows();
        if (i < s.length && s[i] !== ",") return { error: `unparsable text ${quote(s.slice(i))} after ${name}` };
        continue;
      }
      // A scheme: a new challenge. What follows it is its token68 or its first parameter.
      i = start + name.length;
      current = { scheme: name, params: [] };
      challenges.push(current);
      if (i >= s.length || s[i] === ",") continue;
      if (s[i] !== " " && s[i] !== "\t") return { error: `unparsable text ${quote(s.slice(i))} after ${name}` };
      ows();
      if (i >= s.length || s[i] === ",") continue;
      const after = i;
      const next = token();
      ows();
      const isParam = next !== "" && s[i] === "=" && !/^=*\s*(?:,|$)/.test(s.slice(i));
      i = after;
      if (isParam) continue;
      const t68 = /^[A-Za-z0-9\-._~+/]+=*/.exec(s.slice(i));
      if (!t68) return { error: `unparsable text ${quote(s.slice(i))} after ${name}` };
      current.token68 = t68[0];
      i += t68[0].length;
      ows();
      if (i < s.length && s[i] !== ",") return { error: `unparsable text ${quote(s.slice(i))} after ${name}` };
    }
  }
  return { challenges };
}

function quote(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 57)}…` : text);
}

function challengeProblem(e: ClassifiedExchange): ChallengeProblem | undefined {
  const values = challengeValues(e);
  if (values.length === 0) return undefined; // no header: www_authenticate_missing's
  const parsed = parseChallenges(values);
  const wellFormed = (prm: string) => `WWW-Authenticate: Bearer resource_metadata="${prm}"`;
  if ("error" in parsed) {
    return {
      text: `the challenge is garbled (${parsed.error}), so clients cannot read resource_metadata from it`,
      fix: (prm) =>
        `Send one well-formed challenge, ${wellFormed(prm)} (quoted values, comma-separated parameters), and check that no ` +
        "proxy, CDN or framework between the server and the client rewrites or truncates the header",
    };
  }
  if (parsed.challenges.length === 0) return undefined; // an empty header: as good as none
  const bearer = parsed.challenges.filter((c) => c.scheme.toLowerCase() === "bearer");
  if (bearer.length === 0) {
    if (e.status !== 401) return undefined;
    const schemes = [...new Set(parsed.challenges.map((c) => c.scheme))].join(", ");
    return {
      text: `no Bearer challenge (scheme ${schemes}), so OAuth clients do not see that a bearer token is wanted`,
      fix: (prm) =>
        `Answer MCP requests without a valid token with ${wellFormed(prm)} (RFC 6750 §3), not a ${schemes} challenge ` +
        "(one from a web server or gateway auth layer in front of the MCP route)",
    };
  }
  const metadata = bearer.flatMap((c) => c.params.filter(([n]) => n.toLowerCase() === "resource_metadata").map(([, v]) => v));
  if (metadata.length > 1) {
    const distinct = [...new Set(metadata)];
    const where = values.length > 1 ? `${values.length} WWW-Authenticate headers` : "one challenge";
    return {
      text:
        `resource_metadata appears ${metadata.length} times (in ${where}${distinct.length > 1 ? `, with different URLs: ${distinct.join(" and ")}` : ""}): ` +
        "two layers add the challenge, and clients read it wrong or reject it",
      fix: (prm) =>
        `Let one layer add the challenge and the other pass it through: exactly one ${wellFormed(prm)} (e.g. the MCP SDK's ` +
        "bearer-auth middleware and a gateway or reverse-proxy auth plugin both add it; turn one off)",
    };
  }
  const token68 = bearer.find((c) => c.token68 !== undefined);
  if (token68) {
    return {
      text: `Bearer is followed by ${quote(token68.token68!)} instead of name="value" parameters: the parameters were stripped or mangled`,
      fix: (prm) => `Send ${wellFormed(prm)}; check that no proxy or framework rewrites the header`,
    };
  }
  const duplicated = bearer.flatMap((c) => {
    const names = c.params.map(([n]) => n.toLowerCase());
    return names.filter((n, k) => names.indexOf(n) !== k);
  });
  if (duplicated.length > 0) {
    return {
      text: `the Bearer challenge repeats ${[...new Set(duplicated)].join(", ")} (each parameter may appear once, RFC 9110 §11.2)`,
      fix: (prm) => `Send each parameter once: ${wellFormed(prm)}`,
    };
  }
  return undefined;
}

/** The scope of a challenge, quoted or not. */
function challengeScope(e: ClassifiedExchange): string | undefined {
  const parsed = parseChallenges(challengeValues(e));
  if ("error" in parsed) return e.facts.scope;
  for (const c of parsed.challenges) {
    const scope = c.params.find(([n]) => n.toLowerCase() === "scope");
    if (scope) return scope[1];
  }
  return undefined;
}

const scopeList = (scope: string | undefined) => (scope ?? "").split(/\s+/).filter(Boolean);

/** The scopes the client held before a denial: asked for at /authorize, or granted by a token response. */
function grantedBefore(ctx: DiagnosisContext, denial: ClassifiedExchange): string[] {
  const asked = ctx.of("authorize").filter((a) => a.id < denial.id).flatMap((a) => scopeList(a.facts.scope));
  const granted = ctx
    .of("token")
    .filter((t) => t.id < denial.id && is2xx(t))
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
  const grants = codeGrants(ctx).filter((t) => t.id < denial.id && is2xx(t) && t.facts.issued?.accessToken !== undefined);
  const presented = denial.facts.bearerFingerprint;
  const token = grants.find((t) => presented !== undefined && t.facts.issued?.accessToken === presented) ?? grants.at(-1);
  if (!token || token.facts.scope === undefined) return undefined;
  const authorize = ctx.of("authorize").filter((a) => a.id < token.id && a.facts.scope !== undefined).at(-1);
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

// ---------------------------------------------------------------------------------------------
// Shared

/** The protected resource metadata URL the client should be pointed at. */
function prmUrl(ctx: DiagnosisContext): string {
  const c = ctx.connector;
  return c ? `${c.origin}${PRM_PATH}${c.path === "/" ? "" : c.path}` : `https://<host>${PRM_PATH}/<mcp path>`;
}

