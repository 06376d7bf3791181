// Transport and session: the MCP endpoint, its Host/Origin checks, SSE, sessions, versions, CORS.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { type ClassifiedExchange, startedAfter } from "../exchange.js";
import { HANDSHAKE_STEPS } from "../handshake.js";
import { ended, stepFailed } from "./context.js";
import {
  andMore,
  answeredOk,
  claimed,
  CLIENT_TIMEOUT_MS,
  codeGrants,
  describe,
  detail,
  errorText,
  ids,
  is2xx,
  isAuthenticated,
  isHostRejection,
  isLegacyAnswerToModern,
  isModernMethodNotFound,
  isModernOnlyRefusal,
  isModernRequest,
  isOriginRejection,
  isProtocolRejection,
  isRedirect,
  MCP_KINDS,
  MCP_STEPS,
  methods,
  parseUrl,
  pathOf,
  reqHeader,
  resHeader,
  rpcErrorCodes,
  seconds,
  serverVersions,
  tokens,
  trimSlash,
  UNSUPPORTED_VERSION_ERROR,
  versionOf,
} from "./evidence.js";
import type { ConnectorUrl, DiagnosisContext, DiagnosisRule, Finding } from "./rule.js";

export const TRANSPORT_RULES: readonly DiagnosisRule[] = [
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
        isAuthenticated(e) || (firstToken !== undefined && startedAfter(e, firstToken));
      const resource = ctx.prm?.facts.metadata?.resource;
      const resourcePath = resource === undefined ? "" : pathOf(resource);
      const elsewhereThan = (e: ClassifiedExchange) => resourcePath !== "" && resourcePath !== trimSlash(e.path);
      // 404 with -32601 is a modern server's "no such method", not a missing route; a legacy server's
      // 404 to a modern request is era_mismatch (or a dual-era client's fallback) unless MCP lives elsewhere.
      const hits = ctx
        .of("mcp_post")
        .filter((e) => e.status === 404 && !claimed(e) && !isSessionError(e) && afterToken(e))
        .filter((e) => !isModernMethodNotFound(e) && !isModernOnlyRefusal(e) && (!isLegacyAnswerToModern(e) || elsewhereThan(e)));
      const e = hits[0];
      if (!e) return null;
      const elsewhere = elsewhereThan(e);
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
      "An SSE response does not deliver its first event in time (buffering in nginx, Cloudflare, compression) and the " +
      "client gives up: a POST answered as a stream, a legacy GET stream the client waited on, or a modern " +
      "subscriptions/listen whose first event, notifications/subscriptions/acknowledged, never came (2026-07-28 has no GET stream).",
    steps: ["probe", "discover", ...MCP_STEPS, "stream"],
    check(ctx) {
      const streamFailed = stepFailed(ctx, "stream");
      const hits = ctx.exchanges.filter((e) => e.upstreamError === null && sseStall(e, streamFailed) !== undefined);
      const e = hits[0];
      if (!e) return null;
      const compressed = e.responseBody.decoded ? ` (the stream is ${e.responseBody.decoded}-compressed)` : "";
      return {
        summary: `${describe(e)} answered ${e.status} text/event-stream but ${sseStall(e, streamFailed)}${compressed}${andMore(hits)}`,
        evidence: ids(hits),
        fix: isModernRequest(e)
          ? "Flush each event as it is written: turn off buffering between the server and the client (nginx " +
            "`proxy_buffering off;` or the response header `X-Accel-Buffering: no`; no gzip on text/event-stream)" +
            (methods(e).includes("subscriptions/listen")
              ? ", and write notifications/subscriptions/acknowledged as soon as subscriptions/listen arrives, then `: keep-alive` comments while idle"
              : ", send `: keep-alive` comments during long calls — or answer requests with JSON when nothing streams")
          : "Flush each event as it is written: turn off buffering between the server and the client (nginx " +
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
      "After initialize, legacy-era requests get 400/404 'session' errors: sent without Mcp-Session-Id, or the id is " +
      "unknown (another replica, a restart). Only the legacy era has sessions: a modern (2026-07-28) request's " +
      "'no session' answer is era_mismatch or a dual-era client's fallback, never this.",
    steps: ["initialized", "list", "tool_call"],
    check(ctx) {
      const init = ctx.of("mcp_post").find((e) => is2xx(e) && methods(e).includes("initialize"));
      if (!init) return null;
      const hits = ctx
        .of("mcp_post")
        .filter((e) => startedAfter(e, init) && (e.status === 400 || e.status === 404) && !methods(e).includes("initialize"))
        .filter((e) => !isModernRequest(e))
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
    reference:
      "MCP 2026-07-28 Versioning (-32022 UnsupportedProtocolVersion); MCP 2025-06-18 Lifecycle §Version Negotiation; MCP 2025-06-18 Transports §Protocol Version Header",
    meaning:
      "Two peers of the same era find no protocol version in common: a legacy 400 'Unsupported protocol version' " +
      "(or initialize answered a version the client did not ask for, and the client stopped), or a modern -32022 " +
      "UnsupportedProtocolVersion (data.supported vs data.requested) after which the client did not retry with a " +
      "listed version. A modern request refused by a legacy server is era_mismatch (or a dual-era client's " +
      "fallback); a client that retried with a supported version and went on is no finding.",
    steps: ["probe", "discover", ...MCP_STEPS],
    check(ctx) {
      const mcp = ctx.of(...MCP_KINDS);
      const rejected = mcp.find(
        (e) =>
          (isProtocolRejection(e) || rpcErrorCodes(e).includes(UNSUPPORTED_VERSION_ERROR)) &&
          !isLegacyAnswerToModern(e) &&
          !isModernOnlyRefusal(e) &&
          !retriedPast(mcp, e),
      );
      if (rejected) return rejectionFinding(rejected);
      if (!ended(ctx)) return null;
      return answeredOtherVersion(ctx) ?? noSharedDiscoveredVersion(ctx);
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
      const blocked = !ctx.exchanges.some((x) => startedAfter(x, e) && x.path === e.path && x.method.toUpperCase() === method);
      return {
        summary:
          `The CORS preflight ${describe(e)} from ${origin} for ${method ?? "?"}: ` +
          `${preflightProblem(e)}${blocked ? "; the browser never sent the request" : ""}${andMore(hits)}`,
        evidence: ids(hits),
        fix:
          `Answer OPTIONS ${e.path} with 204 before any auth check, with Access-Control-Allow-Origin: ${origin}, ` +
          "Access-Control-Allow-Methods: GET, POST, DELETE and Access-Control-Allow-Headers: Authorization, " +
          "Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID",
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
      const next = ctx.of("mcp_post").find((x) => startedAfter(x, e) && reqHeader(x, "mcp-session-id") === undefined);
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
];

// ---------------------------------------------------------------------------------------------
// What these rules read and say

function mcpRedirectFix(e: ClassifiedExchange, location: string, c: ConnectorUrl | undefined): string {
  const target = parseUrl(location, c?.origin);
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
  // 2026-07-28: the listen stream opens with notifications/subscriptions/acknowledged, at once.
  if (methods(e).includes("subscriptions/listen") && is2xx(e) && none && (e.aborted || streamFailed)) {
    return `its first event, notifications/subscriptions/acknowledged, never came: no event in ${seconds(e.durationMs)} before the client gave up`;
  }
  if (e.method === "POST" && e.aborted && none) {
    return `no event came before the client gave up after ${seconds(e.durationMs)}`;
  }
  // An idle GET stream is normal; it counts only when the client needed it and gave up on it.
  if (e.kind === "mcp_get_stream" && is2xx(e) && streamFailed && none) {
    return `the stream delivered no event in ${seconds(e.durationMs)} and the client gave up on it`;
  }
  return undefined;
}

/** The client sent a later request in another version and it was answered: the normal version fallback. */
function retriedPast(mcp: readonly ClassifiedExchange[], e: ClassifiedExchange): boolean {
  const version = versionOf(e);
  return mcp.some((x) => startedAfter(x, e) && answeredOk(x) && versionOf(x) !== undefined && versionOf(x) !== version);
}

/** Which side is behind, from the versions each offered (dates compare as strings). */
function behind(asked: string | undefined, supported: readonly string[]): "client" | "server" | undefined {
  if (asked === undefined || supported.length === 0) return undefined;
  if (supported.every((v) => v > asked)) return "client";
  if (supported.every((v) => v < asked)) return "server";
  return undefined;
}

function rejectionFinding(e: ClassifiedExchange): Finding {
  const mcp = e.facts.mcp;
  const version = versionOf(e) ?? "(none)";
  const supported = serverVersions(e);
  const method = methods(e)[0] ?? "the request";
  const side = behind(versionOf(e), supported);
  if (isModernRequest(e) || rpcErrorCodes(e).includes(UNSUPPORTED_VERSION_ERROR)) {
    const requested = mcp?.versionRequestedByError ?? version;
    const list = supported.length > 0 ? supported.join(", ") : "(none listed)";
    return {
      summary:
        `${method} ${describe(e)} asked for protocol version ${version} and the server answered ${e.status}` +
        ` -32022 UnsupportedProtocolVersion${detail(e)}: data.supported ${list}, data.requested ${requested}; ` +
        "the client did not retry with a listed version (it shares none with the server, or does not negotiate)",
      evidence: [e.id],
      fix:
        side === "client"
          ? `The client is behind: upgrade it (its MCP SDK) to support ${supported.join(" or ")}, or let it negotiate automatically instead of pinning ${version}`
          : side === "server"
            ? `Upgrade the server's MCP SDK so it supports ${version}, or have the client retry with ${supported.at(-1) ?? supported[0]} (automatic version negotiation instead of a pinned version)`
            : `Have the client retry with one of ${list} (automatic version negotiation instead of a pinned ${version}), or configure both on a common version`,
    };
  }
  const said = supported.length > 0 ? ` (the server supports ${supported.join(", ")})` : "";
  return {
    summary: `${describe(e)} with protocol version ${version} answered ${e.status}${detail(e)}`,
    evidence: [e.id],
    fix:
      side === "client"
        ? `The client is behind${said}: upgrade its MCP SDK so it speaks ${supported.join(" or ")}`
        : side === "server"
          ? `Accept protocol version ${version}: upgrade the server's MCP SDK (or add ${version} to its supported versions)`
          : `Accept protocol version ${version}: the server most likely predates it — upgrade the server's MCP SDK (or add ${version} to its supported versions); if the server is the newer side, upgrade the client instead`,
  };
}

/** A legacy initialize answered with another version than asked, and the client sent nothing more. */
function answeredOtherVersion(ctx: DiagnosisContext): Finding | null {
  const e = ctx.of("mcp_post").find((x) => {
    const m = x.facts.mcp;
    return is2xx(x) && m?.protocolVersionAnswered !== undefined && m.protocolVersionRequested !== undefined &&
      m.protocolVersionAnswered !== m.protocolVersionRequested;
  });
  if (!e || ctx.of("mcp_post").some((x) => startedAfter(x, e))) return null;
  const asked = e.facts.mcp?.protocolVersionRequested;
  const answered = e.facts.mcp?.protocolVersionAnswered;
  return {
    summary:
      `initialize ${describe(e)} asked for protocol version ${asked} and the server answered ` +
      `${answered}; the client sent nothing more`,
    evidence: [e.id],
    fix:
      answered !== undefined && asked !== undefined && answered > asked
        ? `The client is behind: upgrade its MCP SDK so it accepts ${answered}`
        : `Support protocol version ${asked} (answer it when requested): upgrade the server's MCP SDK`,
  };
}

/** 2026-07-28: server/discover lists versions without the client's, and the client sent nothing more. */
function noSharedDiscoveredVersion(ctx: DiagnosisContext): Finding | null {
  const mcp = ctx.of(...MCP_KINDS);
  const e = mcp.find((x) => {
    const asked = versionOf(x);
    const supported = x.facts.mcp?.supportedVersions;
    return methods(x).includes("server/discover") && answeredOk(x) && asked !== undefined &&
      supported !== undefined && supported.length > 0 && !supported.includes(asked);
  });
  if (!e || mcp.some((x) => startedAfter(x, e))) return null;
  const asked = versionOf(e)!;
  const supported = e.facts.mcp?.supportedVersions ?? [];
  const side = behind(asked, supported);
  return {
    summary:
      `server/discover ${describe(e)} asked with protocol version ${asked}; the server's supportedVersions are ` +
      `${supported.join(", ")}, and the client sent nothing more`,
    evidence: [e.id],
    fix:
      side === "client"
        ? `The client is behind: upgrade its MCP SDK so it speaks ${supported.join(" or ")}`
        : `Upgrade the server's MCP SDK so it supports ${asked}, or have the client use ${supported.join(" or ")}`,
  };
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

function isSessionError(e: ClassifiedExchange): boolean {
  return /session|not initialized/i.test(errorText(e));
}

const isSse = (e: ClassifiedExchange) => /^text\/event-stream/i.test(e.facts.responseContentType ?? "");

const SAFELISTED_METHODS = new Set(["GET", "HEAD", "POST"]);
