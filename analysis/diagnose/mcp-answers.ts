// What the MCP endpoint answers, as the field reports catch it wrong: a token error with a status
// that makes no client refresh, a malformed WWW-Authenticate challenge, tools hosted clients drop.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { asList, isRecord, view } from "../exchange-view.js";
import { type ClassifiedExchange, startedAfter } from "../exchange.js";
import {
  HEADER_MISMATCH_ERROR,
  listedToolNames,
  METHOD_NOT_FOUND_ERROR,
  MISSING_CAPABILITY_ERROR,
  sseMessages,
  UNSUPPORTED_VERSION_ERROR,
} from "../mcp-facts.js";
import {
  andMore,
  claimed,
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
} from "./evidence.js";
import type { DiagnosisContext, DiagnosisRule } from "./rule.js";
import { challengeValues, parseChallenges, quote } from "./www-authenticate.js";

/** Tool names hosted clients accept (claude.ai's FrontendRemoteMcpToolDefinition, OpenAI's tools[].name). */
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * claude.ai's connector drops a tool whose serialised inputSchema exceeds 16 KiB (field reports of
 * 2026, found by bisection: 16,384 bytes load, 16,385 do not; per tool, the schema alone, compact
 * JSON). Below mcp-lens's default 64 KiB body capture, so a recorded tools/list shows it.
 */
export const TOOL_SCHEMA_LIMIT_BYTES = 16 * 1024;

export const MCP_ANSWER_RULES: readonly DiagnosisRule[] = [
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
        ctx.of("token").some((t) => startedAfter(t, e) && t.facts.grantType === "refresh_token" && is2xx(t)) &&
        ctx.of(...MCP_KINDS).some((x) => startedAfter(x, e) && isAuthenticated(x) && is2xx(x));
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
          const problem = toolDefinitionProblem(tool.name, tool.schemaBytes);
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
        (x) => startedAfter(x, e) && is2xx(x) && (x.kind === "protected_resource_metadata" || (MCP_KINDS.includes(x.kind) && isAuthenticated(x))),
      );
      return {
        summary: `${describe(e)} answered ${e.status} with ${shown}: ${problem.text}${andMore(hits)}`,
        evidence: hits.map((h) => h.e.id),
        fix: problem.fix(prmUrl(ctx)),
        severity: wentOn ? "warning" : undefined,
      };
    },
  },
];

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
const PROTOCOL_ERROR_CODES = new Set([
  HEADER_MISMATCH_ERROR,
  MISSING_CAPABILITY_ERROR,
  UNSUPPORTED_VERSION_ERROR,
  METHOD_NOT_FOUND_ERROR,
  -32600, // invalid request
  -32700, // parse error
]);

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

/** Why hosted clients drop a tool with this name and compact inputSchema size, or undefined when they keep it. */
export function toolDefinitionProblem(name: string, schemaBytes: number): string | undefined {
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
// Challenges (www_authenticate_malformed)

interface ChallengeProblem {
  text: string;
  fix: (prm: string) => string;
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
// ---------------------------------------------------------------------------------------------
// Shared

/** The protected resource metadata URL the client should be pointed at. */
function prmUrl(ctx: DiagnosisContext): string {
  const c = ctx.connector;
  return c ? `${c.origin}${PRM_PATH}${c.path === "/" ? "" : c.path}` : `https://<host>${PRM_PATH}/<mcp path>`;
}

