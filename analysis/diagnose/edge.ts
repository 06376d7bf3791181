// Reachability and edge: the upstream, timeouts and WAF pages in front of the server.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { type ClassifiedExchange, byStart } from "../exchange.js";
import { HANDSHAKE_STEPS } from "../handshake.js";
import { andMore, AS_KINDS, CLIENT_TIMEOUT_MS, describe, ids, seconds, wafMarker } from "./evidence.js";
import type { DiagnosisRule } from "./rule.js";

export const EDGE_RULES: readonly DiagnosisRule[] = [
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
        .sort(byStart);
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
];

// ---------------------------------------------------------------------------------------------
// What these rules read and say

function isSlow(e: ClassifiedExchange): boolean {
  const ms = e.durationMs ?? e.ttfbMs ?? 0;
  return ms > CLIENT_TIMEOUT_MS || (e.aborted && ms >= GAVE_UP_MS);
}

/** An aborted call this long hit that timeout: the proxy's clock starts after the client's. */
const GAVE_UP_MS = 8_000;

/** Every upstream failure but the timeout, which has its own code. */
function upstreamFailure(e: ClassifiedExchange): { what: string; fix: string } | undefined {
  return e.upstreamError === null ? undefined : UPSTREAM_FAILURES[e.upstreamError];
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
