// Which step of a connector handshake an exchange is (and which role it plays in linking it to
// one), and whether it did what the client needed: the per-exchange half of the grouping
// (handshakes.ts does the linking and the outcome).

import type { ClassifiedExchange } from "./exchange.js";
import type { HandshakeStep } from "./handshake.js";

// ---------------------------------------------------------------------------------------------
// Where an exchange goes

/** Decides which handshakes an exchange may join when it carries no id that names one. */
export type Role = "probe" | "discovery" | "browser" | "token" | "refresh" | "session";

export interface Placement {
  /** Usually one; an exchange that completes two steps at once is recorded in both. */
  steps: HandshakeStep[];
  role: Role;
  /** False for exchanges that are only evidence within a handshake. */
  canStart: boolean;
}

export const place = (role: Role, canStart: boolean, ...steps: HandshakeStep[]): Placement => ({ steps, role, canStart });

export function placementOf(e: ClassifiedExchange): Placement | null {
  switch (e.kind) {
    case "protected_resource_metadata":
      return place("discovery", true, "protected_resource_metadata");
    case "authorization_server_metadata":
    case "openid_configuration":
      return place("discovery", true, "authorization_server_metadata");
    case "registration":
      return place("discovery", true, "registration");
    case "authorize":
      // Answered with the code at once (consent remembered): that is also the callback.
      return e.facts.issued?.code !== undefined ? place("browser", true, "authorize", "callback") : place("browser", true, "authorize");
    case "authorize_consent":
      // A consent POST answered with another page keeps the user on the authorization pages.
      return place("browser", true, isAuthorizationResponse(e) ? "callback" : "authorize");
    case "token":
      return e.facts.grantType === "refresh_token" ? place("refresh", true, "refresh") : place("token", true, "token");
    case "revoke":
      return place("session", false, "teardown");
    case "mcp_post":
      return mcpPostPlacement(e);
    case "mcp_get_stream":
      if (isUnauthenticatedChallenge(e)) return place("probe", true, "probe");
      // Without a token or session, a refused GET is a client checking the endpoint before it
      // connects (mcp-remote does): it joins the attempt it precedes, as discovery does.
      return isPreflightGet(e) ? place("discovery", true, "stream") : place("session", true, "stream");
    case "mcp_delete":
      return place("session", true, "teardown");
    case "cors_preflight":
      return preflightPlacement(e);
    case "other":
      return otherPlacement(e);
    case "health":
    case "websocket":
      return null;
  }
}

/** The requests a client opens a connection with: initialize (legacy), server/discover (modern). */
export const OPENING_METHODS: ReadonlySet<string> = new Set(["initialize", "server/discover"]);

export function opensConnection(e: ClassifiedExchange): boolean {
  return (e.facts.mcp?.methods ?? []).some((m) => OPENING_METHODS.has(m));
}

export function mcpPostPlacement(e: ClassifiedExchange): Placement {
  const methods = e.facts.mcp?.methods ?? [];
  if (e.facts.bearerFingerprint === undefined && (opensConnection(e) || e.status === 401)) {
    // An authless server's 2xx answer to the probe is also the initialize (or server/discover).
    return isSuccess(e.status) && opensConnection(e)
      ? place("probe", true, "probe", mcpStep(methods))
      : place("probe", true, "probe");
  }
  return place("session", true, mcpStep(methods));
}

export function mcpStep(methods: string[]): HandshakeStep {
  if (methods.includes("initialize")) return "initialize";
  if (methods.includes("server/discover")) return "discover";
  if (methods.includes("notifications/initialized")) return "initialized";
  if (methods.includes("subscriptions/listen")) return "stream";
  if (methods.some((m) => m.endsWith("/list"))) return "list";
  return "tool_call"; // tools/call, and whatever else the client asks once connected
}

/** A preflight stands for the request that follows it: told by its path and the headers it asks for. */
export function preflightPlacement(e: ClassifiedExchange): Placement | null {
  const path = e.path.replace(/\/+$/, "");
  const asked = (e.facts.cors?.requestHeaders ?? "").toLowerCase();
  const method = (e.facts.cors?.requestMethod ?? "").toUpperCase();
  if (/\/\.well-known\/oauth-protected-resource/.test(path)) return place("discovery", true, "protected_resource_metadata");
  if (/\/\.well-known\/(oauth-authorization-server|openid-configuration)/.test(path)) {
    return place("discovery", true, "authorization_server_metadata");
  }
  if (path.endsWith("/register")) return place("discovery", true, "registration");
  if (path.endsWith("/token")) return place("token", true, "token");
  if (!/\/(mcp|sse|messages)$/.test(path) && !asked.includes("mcp-")) return null;
  if (method === "DELETE") return place("session", false, "teardown");
  if (method === "GET") return place("session", false, "stream");
  // Only requests after initialize send these (2025-06-18): the first is notifications/initialized.
  if (/mcp-(session-id|protocol-version)/.test(asked)) return place("session", false, "initialized");
  if (asked.includes("authorization")) return place("session", false, "initialize");
  return place("probe", true, "probe");
}

/**
 * The classifier calls unknown paths `other` (a JSON-RPC POST is always mcp_post already): with a
 * bearer token it is the client's MCP traffic gone astray, with OAuth parameters a sign-in page.
 */
export function otherPlacement(e: ClassifiedExchange): Placement | null {
  const { facts, method } = e;
  if (facts.bearerFingerprint !== undefined) {
    return place("session", false, method === "GET" ? "stream" : method === "DELETE" ? "teardown" : "tool_call");
  }
  if (facts.state !== undefined || facts.clientId !== undefined) return place("browser", false, "authorize");
  return null;
}

// ---------------------------------------------------------------------------------------------
// Whether an exchange did what the client needed

export function exchangeFailed(e: ClassifiedExchange, step: HandshakeStep): boolean {
  const status = e.status;
  if (e.upstreamError !== null || status === null) return true;
  // A client ends its GET stream by going away: only a stream that never got headers failed.
  if (e.aborted && !(step === "stream" && e.ttfbMs !== null)) return true;
  if (isRedirect(status) && e.facts.oauthError !== undefined) return true;
  if (e.kind === "cors_preflight") return !isSuccess(status) || !preflightAllows(e);
  switch (step) {
    case "probe":
      return status === 401 ? e.facts.wwwAuthenticate === undefined : !answeredMcp(e);
    case "protected_resource_metadata":
    case "authorization_server_metadata":
      return !isSuccess(status) || e.facts.metadata === undefined; // e.g. an SPA's HTML page
    case "token":
    case "refresh":
      return !isSuccess(status) || e.facts.issued?.accessToken === undefined;
    case "stream":
    case "teardown":
      return !isSuccess(status) && status !== 405; // both optional for a server
    case "discover":
    case "initialize":
    case "initialized":
    case "list":
      return !answeredMcp(e); // a redirect too: hosted clients do not follow it
    case "tool_call":
      // A tool's own error (a JSON-RPC error or isError in a 2xx answer) is the tool's, not the connector's.
      return !isSuccess(status) || /^text\/html/i.test(e.facts.responseContentType ?? "");
    case "callback":
      return status >= 400 || status === 307 || status === 308; // replays the consent POST: hosted clients need 302/303
    case "registration":
    case "authorize":
      return status >= 400;
  }
}

/** What the browser checks: the origin allowed, and the method and headers it asked for. */
export function preflightAllows(e: ClassifiedExchange): boolean {
  const cors = e.facts.cors;
  if (cors?.allowOrigin === undefined) return false;
  const list = (value: string | undefined) => (value ?? "").toLowerCase().split(",").map((v) => v.trim()).filter(Boolean);
  const methods = list(cors.allowMethods);
  const headers = list(cors.allowHeaders);
  const method = (cors.requestMethod ?? "").toUpperCase();
  // GET, HEAD and POST need no allowance; `*` allows any method and any header but Authorization.
  const methodOk = ["", "GET", "HEAD", "POST"].includes(method) || methods.includes("*") || methods.includes(method.toLowerCase());
  return methodOk && list(cors.requestHeaders).every((h) => headers.includes(h) || (headers.includes("*") && h !== "authorization"));
}

export function answeredMcp(e: ClassifiedExchange): boolean {
  const page = /^text\/html/i.test(e.facts.responseContentType ?? "");
  return isSuccess(e.status) && !page && !jsonRpcError(e);
}

/** An error answer to a request; notifications get none worth counting. */
export function jsonRpcError(e: ClassifiedExchange): boolean {
  const messages = e.facts.mcp?.messages ?? [];
  return (
    messages.some((m) => m.direction === "request" && m.type === "request") &&
    messages.some((m) => m.direction === "response" && m.type === "error")
  );
}

export function isAuthorizationResponse(e: ClassifiedExchange): boolean {
  return isRedirect(e.status) && (e.facts.issued?.code !== undefined || e.facts.oauthError !== undefined);
}

/** A GET on the MCP endpoint without token or session that the server refused: checking before connecting. */
export function isPreflightGet(e: ClassifiedExchange): boolean {
  return (
    e.kind === "mcp_get_stream" &&
    e.facts.bearerFingerprint === undefined &&
    e.facts.mcp?.sessionId === undefined &&
    !isSuccess(e.status)
  );
}

export function isUnauthenticatedChallenge(e: ClassifiedExchange): boolean {
  return e.status === 401 && e.facts.bearerFingerprint === undefined;
}

export const isSuccess = (status: number | null) => status !== null && status >= 200 && status < 300;

export const isRedirect = (status: number | null) => status !== null && status >= 300 && status < 400;

export const endOf = (e: ClassifiedExchange) => e.startedAt + (e.durationMs ?? 0);
