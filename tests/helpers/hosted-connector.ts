// A connector that behaves, step by step, like the hosted ones in the field guide
// (shared/reference/connector-handshake.md): the production client flow (inspector/connector.ts)
// with a known client's profile, the user's consent played automatically, and one tool call.
// Here TLS "ends" at a front proxy in front of mcp-lens (see `tls`).
import { BROWSER_UA, KNOWN_CLIENTS, LATEST_PROTOCOL_VERSION, MCP_ACCEPT, registrationPayload, type KnownClient } from "../../inspector/clients.js";
import { runConnector } from "../../inspector/connector.js";
import type { HandshakeStep } from "../../analysis/handshake.js";

export type ConnectorFamily = KnownClient;
export const FAMILIES = KNOWN_CLIENTS;

export interface HostedConnectorOptions {
  family: ConnectorFamily;
  /** A browser-based client: sends this Origin, preflights /mcp requests and obeys CORS. */
  origin?: string;
  /** Requested in initialize; default 2025-11-25. */
  protocolVersion?: string;
  /** Per-request timeout, like the ~10 s hosted clients allow; default 10 000 ms. */
  timeoutMs?: number;
  /** How long an SSE answer may take to flush its first event; default 1500 ms. */
  sseTimeoutMs?: number;
  /** Accept of MCP requests; default "application/json, text/event-stream" (some clients send *\/*). */
  accept?: string;
  /**
   * Hosted clients dial https only; here TLS "ends" at a front proxy in front of mcp-lens: the
   * connector URL the client uses is https, requests go over http on loopback, and the front proxy
   * either passes X-Forwarded-Proto: https ("forwarded") or does not ("stripped"). "none": plain
   * http. Default: "forwarded" for claude.ai and chatgpt, "none" for claude-code.
   */
  tls?: "forwarded" | "stripped" | "none";
}

export interface HostedConnectorResult {
  /** The connector URL as the client used it (https behind a TLS front). */
  url: string;
  /** Steps completed, in order (HANDSHAKE_STEPS names). */
  reached: HandshakeStep[];
  failedAt: HandshakeStep | null;
  error?: string;
  /** HTTP requests sent (each is one exchange at the proxy). */
  requests: number;
}

/** The public name a TLS front passes on (never resolved: requests go to the proxy). */
const PUBLIC_HOST = "mcp.example.test";

export async function runHostedConnector(connectorUrl: string, opts: HostedConnectorOptions): Promise<HostedConnectorResult> {
  const family = FAMILIES[opts.family];
  const tls = opts.tls ?? (opts.family === "claude-code" ? "none" : "forwarded");
  const dialled = new URL(connectorUrl);
  const logical = new URL(connectorUrl);
  if (tls !== "none") logical.protocol = "https:";
  // The URL the user entered is the public one; the front passes its name on.
  if (tls === "stripped") {
    logical.hostname = PUBLIC_HOST;
    logical.port = "";
  }
  const run = await runConnector(logical.href, {
    userAgent: opts.origin ? BROWSER_UA : family.userAgent,
    accept: opts.accept ?? MCP_ACCEPT,
    initialize: { protocolVersion: opts.protocolVersion ?? LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: family.clientInfo },
    registration: registrationPayload(family.clientName, family.redirectUri, family.authMethod),
    ...(opts.origin ? { origin: opts.origin } : {}),
    via: dialled.origin,
    ...(tls === "forwarded" ? { forwardHeaders: { "x-forwarded-proto": "https" } } : {}),
    // A front that passes the public name but not the scheme: a loopback Host would say the
    // client is on this machine, where no hosted client ever is.
    ...(tls === "stripped"
      ? { forwardHeaders: { "x-forwarded-host": PUBLIC_HOST }, frontOrigins: [`http://${PUBLIC_HOST}`] }
      : {}),
    auth: "follow",
    toolCall: true,
    timeoutMs: opts.timeoutMs ?? 10_000,
    sseTimeoutMs: opts.sseTimeoutMs ?? 1500,
  });
  const reached = run.steps.filter((s) => s.status === "ok").map((s) => s.step);
  return { url: run.url, reached, failedAt: run.failedAt, ...(run.error ? { error: run.error } : {}), requests: run.requests };
}
