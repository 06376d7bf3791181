// Who may talk to the admin port, beyond the token: the Host and Origin checks that keep a web
// page in the operator's browser from reading it. Without them, any site the operator visits
// could open ws://127.0.0.1:9464/live (browsers send no CORS preflight for WebSockets: cross-site
// WebSocket hijacking), or rebind its own name to 127.0.0.1 (DNS rebinding), and read every
// recorded body. A browser always sends the name it resolved as Host, and a page's origin as
// Origin; neither can be forged by a page. Prometheus, curl, the inspector and health checks
// send an IP literal, localhost or a name the operator lists, and no Origin.
import net from "node:net";
import { UsageError } from "../../common/config.js";

/** What /health and the refusals say, and what the admin server checks against. */
export interface AdminAccess {
  /** Host names (lower-case) allowed on any port. */
  hosts: Set<string>;
  /** host:port pairs (lower-case) allowed on that port only. */
  hostPorts: Set<string>;
  /** Exact origins (scheme://host[:port]) whose pages may use the admin port. */
  origins: Set<string>;
}

// A DNS name: letters, digits, hyphens and dots; the port, if any, a number. Nothing else is a
// name a scraper would send, and a list entry that is not one is a typo worth reporting.
const HOST_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

function splitList(raw: string): string[] {
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** Host and port of a Host header value (or a list entry); undefined when it is not one. */
function splitHost(value: string): { host: string; port?: string } | undefined {
  const lower = value.trim().toLowerCase();
  const bracketed = /^\[([0-9a-f:.]+)\](?::(\d{1,5}))?$/.exec(lower);
  if (bracketed) return net.isIPv6(bracketed[1]!) ? { host: bracketed[1]!, port: bracketed[2] } : undefined;
  const plain = /^([^:]+)(?::(\d{1,5}))?$/.exec(lower);
  if (!plain) return undefined;
  return { host: plain[1]!, port: plain[2] };
}

/** --admin-allowed-hosts: names (any port) or name:port; returned normalized. */
export function parseAllowedHosts(raw: string, where: string): string {
  const entries = splitList(raw).map((entry) => {
    const parts = splitHost(entry);
    if (!parts || !HOST_NAME.test(parts.host)) {
      throw new UsageError(`${where} must be a comma-separated list of host names, each with an optional :port (e.g. mcp-lens:9464), got '${entry}'`);
    }
    return parts.port === undefined ? parts.host : `${parts.host}:${parts.port}`;
  });
  return entries.join(",");
}

/** --admin-allowed-origins: exact origins, e.g. https://dashboard.example.com; returned normalized. */
export function parseAllowedOrigins(raw: string, where: string): string {
  const entries = splitList(raw).map((entry) => {
    let url: URL | undefined;
    try {
      url = new URL(entry);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || url.origin !== entry.replace(/\/$/, "").toLowerCase()) {
      throw new UsageError(`${where} must be a comma-separated list of origins such as https://dashboard.example.com (scheme, host, optional port; no path), got '${entry}'`);
    }
    return url.origin;
  });
  return entries.join(",");
}

export function adminAccess(allowedHosts: string, allowedOrigins: string): AdminAccess {
  const hosts = new Set<string>();
  const hostPorts = new Set<string>();
  for (const entry of splitList(allowedHosts.toLowerCase())) (entry.includes(":") ? hostPorts : hosts).add(entry);
  return { hosts, hostPorts, origins: new Set(splitList(allowedOrigins.toLowerCase())) };
}

export type Refusal = { status: 421 | 403; error: string; message: string };

/**
 * Why a request to the admin port is refused, or undefined when it may go on. Checked before
 * the token on every endpoint: a page must not even learn whether its guess of a token was right.
 */
export function refusal(headers: { host?: string; origin?: string }, access: AdminAccess): Refusal | undefined {
  // No Host at all is no browser (browsers always send one); Node already answers HTTP/1.1 without one 400.
  if (headers.host !== undefined && !hostAllowed(headers.host, access)) {
    return {
      status: 421,
      error: "host_not_allowed",
      message: "mcp-lens admin port: this Host is not an IP address, localhost or a name in --admin-allowed-hosts (DNS rebinding protection)",
    };
  }
  if (headers.origin !== undefined && !access.origins.has(headers.origin.trim().toLowerCase())) {
    return {
      status: 403,
      error: "origin_not_allowed",
      message: "mcp-lens admin port: requests from web pages are refused unless their origin is in --admin-allowed-origins (cross-site request protection)",
    };
  }
  return undefined;
}

function hostAllowed(value: string, access: AdminAccess): boolean {
  const parts = splitHost(value);
  if (!parts) return false;
  // An IP literal cannot be rebound to another address: the browser connects where it says.
  if (net.isIP(parts.host) !== 0 || parts.host === "localhost") return true;
  return access.hosts.has(parts.host) || (parts.port !== undefined && access.hostPorts.has(`${parts.host}:${parts.port}`));
}
