// Client credentials, as the field reports catch them failing: the token endpoint's client
// authentication, registrations the authorization server forgot, refresh tokens used twice.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { type ClassifiedExchange, startedAfter } from "../exchange.js";
import { type AuthMethodMismatch, authMethodMismatch, isUnknownClient } from "./authorize-token.js";
import { publicHost } from "./context.js";
import { andMore, AUTHORIZE_KINDS, claimed, describe, detail, errorText, ids, is2xx, isFailure, seconds } from "./evidence.js";
import type { DiagnosisContext, DiagnosisRule } from "./rule.js";

export const CLIENT_CREDENTIAL_RULES: readonly DiagnosisRule[] = [
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
        const other = others.find(is2xx) ?? others.find((o) => startedAfter(refused, o) && (o.status === null || o.aborted));
        if (!other) continue;
        const [a, b] = startedAfter(refused, other) ? [other, refused] : [refused, other];
        const apart = seconds(Math.abs(b.startedAt - a.startedAt));
        const concurrent = a.durationMs === null || b.startedAt < a.startedAt + a.durationMs;
        const rotated = other.facts.issued?.refreshToken;
        const otherOutcome = is2xx(other)
          ? `${describe(other)} redeemed it${rotated ? " and rotated it (a new refresh token was issued)" : ""}`
          : `${describe(other)} ${other.status === null ? "got no answer" : `answered ${other.status}`}`;
        return {
          summary:
            `Two refresh_token grants with the same refresh token (fingerprint ${refused.facts.refreshTokenFingerprint}) ${apart} apart` +
            `${concurrent ? ", concurrently" : startedAfter(refused, other) && !is2xx(other) ? " (a retry)" : ""}: ${otherOutcome}, and ` +
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
  if (ctx.of("registration").some((r) => startedAfter(r, e))) return undefined; // it registered again: it got past
  const clientId = e.facts.clientId;
  const registration = ctx
    .of("registration")
    .filter((r) => startedAfter(e, r) && is2xx(r) && r.facts.clientId !== undefined && (clientId === undefined || r.facts.clientId === clientId))
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
        startedAfter(x, registration) &&
        startedAfter(e, x) &&
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
