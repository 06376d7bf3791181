// Which client a connector handshake comes from, judged by what its traffic shows. Conservative:
// "other" unless a signal names the client. Precedence, strongest first:
//   1. mcp-remote anywhere (clientInfo name, user agent, its default client_name "MCP CLI Proxy"):
//      it wraps other clients, so Claude Desktop through it says "claude-ai (via mcp-remote 0.1.37)"
//   2. a hosted platform's callback among the redirect URIs: only that platform receives the code
//   3. the clientInfo name of the initialize request
//   4. the user agent's product token
//   5. weaker signals that only count together: the Inspector's callback ports (6274, 2.x CLI 6276)
//      on a loopback host, or its client_name "MCP Inspector" with a loopback callback; client_name
//      "Claude Code" with a loopback callback; python-httpx registering as "Claude"
//   6. a Client ID Metadata Document's host (client_id https://claude.ai/…, https://vscode.dev/…)
//   7. the SDK that speaks, when nothing names the application: Node's fetch user agent with the
//      TypeScript SDK's traffic, python-httpx with a clientInfo (the Python SDK's default is "mcp")
// The clientInfo may come from initialize (legacy) or from each request's `_meta` (2026-07-28).
import type { ClientFamily } from "./handshake.js";

export interface ClientSignals {
  userAgent?: string;
  redirectUris?: string[];
  /** The client_name of a registration. */
  clientName?: string;
  /** clientInfo.name of an initialize request, or of a modern request's `_meta`. */
  clientInfoName?: string;
  /** OAuth client ids the client used (a metadata document's URL names its vendor). */
  clientIds?: string[];
}

/** Families that connect from their vendor's backend, over https on port 443 only. */
export const HOSTED_FAMILIES: ReadonlySet<ClientFamily> = new Set<ClientFamily>(["claude.ai", "chatgpt"]);

export function clientFamily(signals: ClientSignals): ClientFamily {
  if (isMcpRemote(signals)) return "mcp-remote";
  const callbacks = (signals.redirectUris ?? []).flatMap(parseUrl);
  return (
    hostedCallbackFamily(callbacks) ??
    clientInfoFamily(signals.clientInfoName) ??
    userAgentFamily(signals.userAgent) ??
    combinedFamily(signals, callbacks) ??
    metadataDocumentFamily(signals.clientIds) ??
    sdkFamily(signals) ??
    "other"
  );
}

const MCP_REMOTE_CLIENT_NAME = "MCP CLI Proxy";

function isMcpRemote({ userAgent, clientName, clientInfoName }: ClientSignals): boolean {
  return /mcp-remote/i.test(`${clientInfoName ?? ""} ${userAgent ?? ""}`) || clientName === MCP_REMOTE_CLIENT_NAME;
}

function hostedCallbackFamily(callbacks: URL[]): ClientFamily | undefined {
  for (const url of callbacks) {
    if (url.protocol !== "https:") continue;
    const { hostname, pathname } = url;
    if ((hostname === "claude.ai" || hostname === "claude.com") && pathname === "/api/mcp/auth_callback") return "claude.ai";
    if (hostname === "chatgpt.com" && (pathname === "/connector_platform_oauth_redirect" || pathname.startsWith("/connector/oauth/"))) {
      return "chatgpt";
    }
    if (hostname === "vscode.dev" && pathname === "/redirect") return "vscode";
  }
  // Native apps' own schemes: only that app receives the code.
  if (callbacks.some((url) => url.protocol === "cursor:")) return "cursor";
  if (callbacks.some((url) => url.protocol === "vscode:")) return "vscode";
  return undefined;
}

/** The vendors whose Client ID Metadata Documents are hosted on their own sites. */
const METADATA_DOCUMENT_HOSTS = new Map<string, ClientFamily>([
  ["claude.ai", "claude.ai"],
  ["claude.com", "claude.ai"],
  ["chatgpt.com", "chatgpt"],
  ["openai.com", "chatgpt"],
  ["vscode.dev", "vscode"],
  ["cursor.com", "cursor"],
]);

function metadataDocumentFamily(clientIds: string[] | undefined): ClientFamily | undefined {
  for (const url of (clientIds ?? []).flatMap(parseUrl)) {
    if (url.protocol !== "https:") continue;
    const host = url.hostname.replace(/^www\./, "");
    const family = METADATA_DOCUMENT_HOSTS.get(host);
    if (family) return family;
  }
  return undefined;
}

/**
 * When nothing names the application, the SDK it is built on: Node's fetch ("node", "undici")
 * speaking MCP is the TypeScript SDK; python-httpx with a clientInfo is the Python SDK (alone it
 * may be a hosted backend's discovery, which says nothing).
 */
function sdkFamily({ userAgent, clientInfoName }: ClientSignals): ClientFamily | undefined {
  if (userAgent === undefined || clientInfoName === undefined) return undefined;
  if (/^(node|undici)(\/|$)/i.test(userAgent)) return "typescript-sdk";
  if (/^python-httpx\//i.test(userAgent)) return "python-sdk";
  return undefined;
}

const CLIENT_INFO_FAMILIES = new Map<string, ClientFamily>([
  ["anthropic", "claude.ai"],
  ["claude-ai", "claude.ai"],
  ["openai-mcp", "chatgpt"],
  ["claude-code", "claude-code"],
  ["mcp-inspector", "mcp-inspector"],
  ["inspector-client", "mcp-inspector"],
  // MCP Inspector 2.x's command line
  ["inspector-cli", "mcp-inspector"],
  ["visual studio code", "vscode"],
  ["visual studio code - insiders", "vscode"],
  ["cursor-vscode", "cursor"],
  ["cursor", "cursor"],
  ["claude-desktop", "claude-desktop"],
  ["claude desktop", "claude-desktop"],
]);

function clientInfoFamily(name: string | undefined): ClientFamily | undefined {
  return name === undefined ? undefined : CLIENT_INFO_FAMILIES.get(name.trim().toLowerCase());
}

/** claude-code/ comes first: Claude Code's own fetches say "Claude-User (claude-code/1.0.88; …)". */
const USER_AGENT_FAMILIES: Array<[RegExp, ClientFamily]> = [
  [/\bclaude-code\//i, "claude-code"],
  [/\bClaude\/[\d.]+.*\bElectron\//, "claude-desktop"],
  [/\bCursor\/[\d.]+/, "cursor"],
  [/\bCode\/[\d.]+.*\bElectron\//, "vscode"],
  [/\bopenai-mcp\//i, "chatgpt"],
  [/(^|[\s(;])claude-user\b/i, "claude.ai"],
];

function userAgentFamily(userAgent: string | undefined): ClientFamily | undefined {
  if (userAgent === undefined) return undefined;
  return USER_AGENT_FAMILIES.find(([pattern]) => pattern.test(userAgent))?.[1];
}

/** MCP Inspector's OAuth callbacks on loopback: the web UI's port (1.x) and the 2.x CLI's. */
const INSPECTOR_PORTS = new Set(["6274", "6276"]);

function combinedFamily({ userAgent, clientName }: ClientSignals, callbacks: URL[]): ClientFamily | undefined {
  const loopback = callbacks.filter(isLoopback);
  if (loopback.some((url) => INSPECTOR_PORTS.has(url.port))) return "mcp-inspector";
  if (clientName === "MCP Inspector" && loopback.length > 0) return "mcp-inspector";
  if (clientName?.startsWith("Claude Code") && loopback.length > 0) return "claude-code";
  if (clientName === "Claude" && /^python-httpx\//i.test(userAgent ?? "")) return "claude.ai";
  return undefined;
}

function isLoopback(url: URL): boolean {
  return url.protocol === "http:" && isLoopbackHost(url.hostname);
}

/** localhost (and its subdomains), 127.0.0.0/8 or ::1, with or without brackets and a port. */
export function isLoopbackHost(host: string): boolean {
  const name = host.replace(/:\d+$/, "").replace(/^\[|\]$/g, "").toLowerCase();
  return name === "localhost" || name.endsWith(".localhost") || /^127(?:\.\d{1,3}){3}$/.test(name) || name === "::1";
}

function parseUrl(uri: string): URL[] {
  try {
    return [new URL(uri)];
  } catch {
    return [];
  }
}
