// The URL clients use to reach this server. Behind nginx / Cloudflare / mcp-lens the
// request arrives over plain HTTP on an internal host, so the public URL comes from
// configuration (PUBLIC_URL) or, failing that, from the front proxy's X-Forwarded-* headers.
import type { IncomingMessage } from "node:http";

function firstValue(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  return value?.split(",")[0]?.trim() || undefined;
}

/**
 * The public origin as a URL without a trailing slash in its href's path (e.g. https://coda.example.com).
 * `configured` wins; otherwise X-Forwarded-Proto/-Host when `trustForwarded`, else the Host header.
 */
export function publicOrigin(req: IncomingMessage, configured: URL | null, trustForwarded: boolean): URL {
  if (configured) return new URL(configured.origin);
  const proto = (trustForwarded && firstValue(req.headers["x-forwarded-proto"])) || "http";
  const host = (trustForwarded && firstValue(req.headers["x-forwarded-host"])) || req.headers.host || "localhost";
  return new URL(`${proto === "https" ? "https" : "http"}://${host}`);
}

/** The MCP endpoint clients connect to: `<origin>/mcp`, the `resource` of the protected-resource metadata. */
export function publicMcpUrl(origin: URL, mcpPath = "/mcp"): URL {
  return new URL(mcpPath, origin);
}
