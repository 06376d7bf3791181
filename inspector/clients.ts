// The clients a re-run can play when a recording lacks their details: what each sends, from its
// traffic, and the registration (RFC 7591) it posts.

/** A DCR payload: its first redirect URI is the callback. */
export type Registration = { redirect_uris: string[] } & Record<string, unknown>;

/** What the known clients send, from their traffic; the replay's fallback when a recording lacks it. */
export const KNOWN_CLIENTS = {
  "claude.ai": {
    userAgent: "python-httpx/0.28.1",
    clientInfo: { name: "Anthropic", version: "1.0.0" },
    clientName: "Claude",
    authMethod: "client_secret_post",
    redirectUri: "https://claude.ai/api/mcp/auth_callback",
  },
  chatgpt: {
    userAgent: "openai-mcp/1.0.0",
    clientInfo: { name: "openai-mcp", version: "1.0.0" },
    clientName: "ChatGPT",
    authMethod: "none",
    redirectUri: "https://chatgpt.com/connector_platform_oauth_redirect",
  },
  "claude-code": {
    userAgent: "claude-code/2.0",
    clientInfo: { name: "claude-code", version: "2.0.0" },
    clientName: "Claude Code",
    authMethod: "none",
    redirectUri: "http://localhost:33418/callback",
  },
} as const;
export type KnownClient = keyof typeof KNOWN_CLIENTS;

/** The user's browser, for the authorize step. */
export const BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
export const LATEST_PROTOCOL_VERSION = "2025-11-25";
export const MCP_ACCEPT = "application/json, text/event-stream";

/** The DCR payload a client registers with (RFC 7591); its first redirect URI is the callback. */
export function registrationPayload(clientName: string, redirectUri: string, authMethod: string): Registration {
  return {
    client_name: clientName,
    redirect_uris: [redirectUri],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: authMethod,
  };
}
