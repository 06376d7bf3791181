// A client that behaves like a hosted connector (Claude.ai, ChatGPT) or a local one (Claude
// Code): the MCP SDK's own OAuth client, with the user's browser step played by fetch.
import type { OAuthClientProvider } from "@modelcontextprotocol/sdk/client/auth.js";
import type { OAuthClientInformationFull, OAuthClientMetadata, OAuthTokens } from "@modelcontextprotocol/sdk/shared/auth.js";

export const CALLBACKS = {
  claude: "https://claude.ai/api/mcp/auth_callback",
  chatgpt: "https://chatgpt.com/connector_platform_oauth_redirect",
  localhost: "http://localhost:33418/callback",
} as const;

export class ConnectorLikeProvider implements OAuthClientProvider {
  authorizationUrl: URL | null = null;
  private client?: OAuthClientInformationFull;
  private saved?: OAuthTokens;
  private verifier = "";

  constructor(
    readonly redirectUrl: string = CALLBACKS.claude,
    private readonly authMethod: "none" | "client_secret_post" | "client_secret_basic" = "none",
    private readonly clientName = "Claude",
  ) {}

  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: this.clientName,
      redirect_uris: [this.redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: this.authMethod,
    };
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info: OAuthClientInformationFull) {
    this.client = info;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens: OAuthTokens) {
    this.saved = tokens;
  }
  redirectToAuthorization(url: URL) {
    this.authorizationUrl = url;
  }
  saveCodeVerifier(verifier: string) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

/** The hidden and named inputs of the first form in an HTML page, and where it posts. */
export function parseForm(html: string, pageUrl: string): { action: string; fields: Record<string, string> } {
  const form = /<form\b[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (!form) throw new Error(`no form in page: ${html.slice(0, 200)}`);
  const action = /action="([^"]*)"/i.exec(form[0])?.[1] ?? pageUrl;
  const fields: Record<string, string> = {};
  for (const input of form[1]!.matchAll(/<input\b[^>]*>/gi)) {
    const name = /name="([^"]*)"/i.exec(input[0])?.[1];
    const value = /value="([^"]*)"/i.exec(input[0])?.[1] ?? "";
    if (name && /type="hidden"/i.test(input[0])) fields[name] = value.replace(/&amp;/g, "&").replace(/&quot;/g, '"');
  }
  return { action: new URL(action.replace(/&amp;/g, "&"), pageUrl).href, fields };
}

/** The user's browser: opens the authorization URL, pastes the Coda token, clicks Allow. */
export async function signInWithCodaToken(authorizationUrl: URL, codaToken: string, decision: "allow" | "deny" = "allow"): Promise<Response> {
  const page = await fetch(authorizationUrl, { redirect: "manual" });
  if (page.status !== 200) throw new Error(`authorize answered ${page.status}: ${await page.text()}`);
  const { action, fields } = parseForm(await page.text(), authorizationUrl.href);
  return fetch(action, {
    method: "POST",
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ ...fields, coda_token: codaToken, action: decision }),
  });
}
