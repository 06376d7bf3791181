import { describe, expect, it } from "vitest";
import { clientFamily, type ClientSignals } from "../../analysis/client-family.js";
import type { ClientFamily } from "../../analysis/handshake.js";

const CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback";

const cases: Array<[name: string, signals: ClientSignals, family: ClientFamily]> = [
  // Hosted callbacks
  ["the claude.ai callback", { redirectUris: [CLAUDE_CALLBACK] }, "claude.ai"],
  ["the claude.com callback", { redirectUris: ["https://claude.com/api/mcp/auth_callback"] }, "claude.ai"],
  ["ChatGPT's platform callback", { redirectUris: ["https://chatgpt.com/connector_platform_oauth_redirect"] }, "chatgpt"],
  ["ChatGPT's per-connector callback", { redirectUris: ["https://chatgpt.com/connector/oauth/abc123"] }, "chatgpt"],
  ["a hosted callback among others", { redirectUris: ["not a url", "https://example.com/cb", CLAUDE_CALLBACK] }, "claude.ai"],
  ["a look-alike callback over http", { redirectUris: ["http://claude.ai/api/mcp/auth_callback"] }, "other"],
  ["a look-alike host", { redirectUris: ["https://claude.ai.evil.example/api/mcp/auth_callback"] }, "other"],

  // clientInfo names
  ["clientInfo Anthropic", { clientInfoName: "Anthropic" }, "claude.ai"],
  ["clientInfo claude-ai", { clientInfoName: "claude-ai" }, "claude.ai"],
  ["clientInfo openai-mcp", { clientInfoName: "openai-mcp" }, "chatgpt"],
  ["clientInfo claude-code", { clientInfoName: "claude-code" }, "claude-code"],
  ["clientInfo mcp-inspector", { clientInfoName: "mcp-inspector" }, "mcp-inspector"],
  ["clientInfo inspector-client", { clientInfoName: "inspector-client" }, "mcp-inspector"],
  ["MCP Inspector 2.x CLI's clientInfo", { clientInfoName: "inspector-cli" }, "mcp-inspector"],
  ["MCP Inspector 2.x CLI registering", { clientName: "MCP Inspector", redirectUris: ["http://127.0.0.1:6276/oauth/callback"] }, "mcp-inspector"],
  ["client_name MCP Inspector with another loopback port", { clientName: "MCP Inspector", redirectUris: ["http://localhost:9999/cb"] }, "mcp-inspector"],
  ["client_name MCP Inspector with a non-loopback callback", { clientName: "MCP Inspector", redirectUris: ["https://example.com/cb"] }, "other"],
  ["an unknown clientInfo", { clientInfoName: "acme-agent" }, "other"],

  // User agents
  ["UA Claude-User", { userAgent: "Claude-User" }, "claude.ai"],
  ["UA openai-mcp", { userAgent: "openai-mcp/1.0.0" }, "chatgpt"],
  ["UA claude-code", { userAgent: "claude-code/2.0.14" }, "claude-code"],
  ["Claude Code's own fetches", { userAgent: "Claude-User (claude-code/1.0.88; +https://support.anthropic.com/)" }, "claude-code"],
  ["python-httpx alone", { userAgent: "python-httpx/0.28.1" }, "other"],
  ["python-httpx registering as Claude", { userAgent: "python-httpx/0.28.1", clientName: "Claude" }, "claude.ai"],
  ["python-httpx with the Anthropic clientInfo", { userAgent: "python-httpx/0.28.1", clientInfoName: "Anthropic" }, "claude.ai"],
  ["a browser", { userAgent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/141.0 Safari/537.36" }, "other"],

  // mcp-remote wraps other clients
  ["Claude Desktop through mcp-remote", { clientInfoName: "claude-ai (via mcp-remote 0.1.37)", redirectUris: ["http://localhost:3334/oauth/callback"] }, "mcp-remote"],
  ["mcp-remote's default client_name", { clientName: "MCP CLI Proxy", redirectUris: ["http://127.0.0.1:5173/oauth/callback"] }, "mcp-remote"],
  ["mcp-remote in the user agent", { userAgent: "mcp-remote/0.1.29 node" }, "mcp-remote"],

  // Loopback callbacks count only with other signals
  ["the Inspector's callback port", { redirectUris: ["http://localhost:6274/oauth/callback"] }, "mcp-inspector"],
  ["the Inspector's port on 127.0.0.1", { redirectUris: ["http://127.0.0.1:6274/oauth/callback/debug"] }, "mcp-inspector"],
  ["Claude Code's client_name with a loopback callback", { clientName: "Claude Code (acme)", redirectUris: ["http://localhost:54212/callback"] }, "claude-code"],
  ["Claude Code's client_name alone", { clientName: "Claude Code (acme)" }, "other"],
  ["a bare loopback callback", { redirectUris: ["http://localhost:33418/callback"] }, "other"],
  ["nothing at all", {}, "other"],

  // Editors and desktop apps
  ["VS Code's clientInfo", { clientInfoName: "Visual Studio Code" }, "vscode"],
  ["VS Code's web callback", { redirectUris: ["https://vscode.dev/redirect"] }, "vscode"],
  ["VS Code's own scheme", { redirectUris: ["vscode://vscode.github-authentication/did-authenticate"] }, "vscode"],
  ["Cursor's clientInfo", { clientInfoName: "cursor-vscode" }, "cursor"],
  ["Cursor's own scheme", { redirectUris: ["cursor://anysphere.cursor-mcp/oauth/callback"] }, "cursor"],
  ["Claude Desktop's Electron user agent", { userAgent: "Mozilla/5.0 (Macintosh) Claude/0.14.4 Chrome/138.0 Electron/37.2.0 Safari/537.36" }, "claude-desktop"],

  // Client ID Metadata Documents name their vendor by host
  ["a CIMD client_id on claude.ai", { clientIds: ["https://claude.ai/oauth/mcp-oauth-client-metadata"] }, "claude.ai"],
  ["a CIMD client_id on vscode.dev", { clientIds: ["https://vscode.dev/oauth/client-metadata.json"] }, "vscode"],
  ["a CIMD client_id on an unknown host", { clientIds: ["https://agent.example/client.json"] }, "other"],
  ["a CIMD look-alike host", { clientIds: ["https://claude.ai.evil.example/meta.json"] }, "other"],

  // The SDK, when nothing names the application
  ["Node's fetch with a clientInfo: the TypeScript SDK", { userAgent: "node", clientInfoName: "acme-agent" }, "typescript-sdk"],
  ["undici with a clientInfo", { userAgent: "undici", clientInfoName: "acme-agent" }, "typescript-sdk"],
  ["python-httpx with the Python SDK's default clientInfo", { userAgent: "python-httpx/0.28.1", clientInfoName: "mcp" }, "python-sdk"],
  ["Node's fetch alone (discovery only) names nothing", { userAgent: "node" }, "other"],
  ["a named application over Node's fetch", { userAgent: "node", clientInfoName: "inspector-cli" }, "mcp-inspector"],

  // Precedence
  ["a hosted callback over a contradicting clientInfo", { redirectUris: [CLAUDE_CALLBACK], clientInfoName: "openai-mcp" }, "claude.ai"],
  ["clientInfo over the user agent", { clientInfoName: "claude-code", userAgent: "openai-mcp/1.0.0" }, "claude-code"],
];

describe("clientFamily", () => {
  it.each(cases)("%s", (_name, signals, family) => {
    expect(clientFamily(signals)).toBe(family);
  });
});
