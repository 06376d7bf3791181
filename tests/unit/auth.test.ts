// The OAuth 2.1 authorization server as hosted connectors see it: discovery, DCR, the login
// page, codes and tokens over real HTTP, and what survives a restart, on real SQLite files.
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

import express from "express";
import {
  discoverAuthorizationServerMetadata,
  discoverOAuthProtectedResourceMetadata,
  exchangeAuthorization,
  refreshAuthorization,
  registerClient,
  startAuthorization,
} from "@modelcontextprotocol/sdk/client/auth.js";
import { requireBearerAuth } from "@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ClientMetadataError, type ClientMetadataDocument } from "../../server/auth/client-metadata-document.js";
import { decryptSecret, encryptSecret, hashToken, loadOrCreateServerKey, newToken } from "../../server/auth/crypto.js";
import { renderLoginPage } from "../../server/auth/login-page.js";
import { CodaOAuthProvider } from "../../server/auth/provider.js";
import { createAuthRouter } from "../../server/auth/routes.js";
import { AuthStore } from "../../server/auth/store.js";
import { publicOrigin } from "../../server/public-url.js";

const CODA_TOKEN = "coda-pat-7d1c2b9e-4a5f-4c3d-8e2f-1b0a9c8d7e6f";
const CODA_USER = { name: "Ada Lovelace", loginId: "ada@example.com" };
const CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback";
const FORWARDED = { "X-Forwarded-Proto": "https", "X-Forwarded-Host": "coda.example.com" };
/** Client ID Metadata Documents the stub fetcher knows (the real fetcher: client-metadata-document.test.ts). */
const DOCUMENT_URL = "https://app.example.net/oauth/client-metadata.json";
const DOCUMENTS = new Map<string, ClientMetadataDocument>([
  [DOCUMENT_URL, { client_id: DOCUMENT_URL, client_name: "Example Desktop", redirect_uris: ["http://127.0.0.1:3000/callback"], token_endpoint_auth_method: "none" }],
]);
/** Every document the stub was asked for, in order. */
const resolvedDocuments: string[] = [];
const stubDocuments = {
  async resolve(url: string): Promise<ClientMetadataDocument> {
    resolvedDocuments.push(url);
    const document = DOCUMENTS.get(url);
    if (!document) throw new ClientMetadataError(`Could not fetch the client metadata document ${url}: HTTP 404`);
    return document;
  },
};

interface Registered {
  client_id: string;
  client_secret?: string;
  redirect_uris: string[];
  token_endpoint_auth_method?: string;
}

interface Tokens {
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_in: number;
  scope?: string;
}

/** One server process's worth of auth: store, provider and an express app on 127.0.0.1. */
interface AuthServer {
  origin: string;
  store: AuthStore;
  validations: string[];
  close(): Promise<void>;
}

const clock = { offsetMs: 0 };
const now = () => Date.now() + clock.offsetMs;
const originOf = (req: express.Request) => publicOrigin(req, null, true);
// Every secret the tests see, to prove none of them reaches the database file in clear.
const secretsSeen = new Set<string>([CODA_TOKEN]);

async function startAuthServer(dbFile: string, key: Buffer): Promise<AuthServer> {
  const store = new AuthStore(dbFile, { now });
  const validations: string[] = [];
  const provider = new CodaOAuthProvider({
    store,
    key,
    now,
    validateCodaToken: async token => {
      validations.push(token);
      return token === CODA_TOKEN ? CODA_USER : null;
    },
    mcpUrlFor: req => new URL("/mcp", originOf(req)),
    clientMetadata: stubDocuments,
  });
  const app = express();
  app.use(createAuthRouter({ provider, publicOrigin: originOf }));
  app.post(
    "/mcp",
    (req, res, next) => requireBearerAuth({ verifier: provider, resourceMetadataUrl: new URL("/.well-known/oauth-protected-resource/mcp", originOf(req)).href })(req, res, next),
    (req, res) => {
      res.json({ clientId: req.auth?.clientId, codaToken: req.auth?.extra?.codaToken, codaUser: req.auth?.extra?.codaUser });
    },
  );
  const server: Server = await new Promise(resolve => {
    const listening = app.listen(0, "127.0.0.1", () => resolve(listening));
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    store,
    validations,
    close: async () => {
      server.closeAllConnections();
      await new Promise(resolve => server.close(resolve));
      store.close();
    },
  };
}

function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

function basic(clientId: string, secret: string): string {
  return `Basic ${Buffer.from(`${clientId}:${secret}`).toString("base64")}`;
}

describe("OAuth authorization server", () => {
  let dir: string;
  let key: Buffer;
  let auth: AuthServer;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "mcp-lens-auth-"));
    key = loadOrCreateServerKey({ keyFile: path.join(dir, "server.key") });
    auth = await startAuthServer(path.join(dir, "auth.db"), key);
  });

  afterAll(async () => {
    await auth.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // --- HTTP helpers, all with redirect: "manual" as a connector's backend would ---

  async function register(payload: Record<string, unknown>): Promise<Registered> {
    const res = await fetch(`${auth.origin}/register`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
    expect(res.status).toBe(201);
    const client = (await res.json()) as Registered;
    if (client.client_secret) secretsSeen.add(client.client_secret);
    return client;
  }

  const registerClaude = () =>
    register({
      client_name: "Claude",
      redirect_uris: [CLAUDE_CALLBACK, "https://claude.com/api/mcp/auth_callback"],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_post",
    });

  interface AuthorizeOptions {
    redirectUri?: string;
    challenge?: string;
    challengeMethod?: string;
    state?: string;
    resource?: string;
    scope?: string;
    headers?: Record<string, string>;
  }

  function authorize(client: Registered, opts: AuthorizeOptions = {}): Promise<Response> {
    const url = new URL("/authorize", auth.origin);
    const params: Record<string, string | undefined> = {
      response_type: "code",
      client_id: client.client_id,
      redirect_uri: opts.redirectUri ?? client.redirect_uris[0],
      code_challenge: opts.challenge,
      code_challenge_method: opts.challengeMethod ?? "S256",
      state: opts.state ?? "state-123",
      resource: opts.resource ?? `${auth.origin}/mcp`,
      scope: opts.scope,
    };
    for (const [name, value] of Object.entries(params)) if (value !== undefined) url.searchParams.set(name, value);
    return fetch(url, { redirect: "manual", headers: opts.headers });
  }

  async function loginPage(client: Registered, opts: AuthorizeOptions = {}): Promise<{ requestId: string; html: string }> {
    const res = await authorize(client, { challenge: pkce().challenge, ...opts });
    expect(res.status).toBe(200);
    const html = await res.text();
    const requestId = /name="request_id" value="([^"]+)"/.exec(html)?.[1];
    expect(requestId).toBeTruthy();
    return { requestId: requestId!, html };
  }

  function decide(requestId: string, action: "allow" | "deny", codaToken = CODA_TOKEN, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(`${auth.origin}/authorize/decision`, {
      method: "POST",
      redirect: "manual",
      headers: { "Content-Type": "application/x-www-form-urlencoded", ...headers },
      body: new URLSearchParams({ request_id: requestId, coda_token: codaToken, action }),
    });
  }

  /** authorize → login page → Allow: the code and the PKCE verifier that goes with it. */
  async function obtainCode(client: Registered, opts: AuthorizeOptions = {}): Promise<{ code: string; verifier: string; location: URL }> {
    const { verifier, challenge } = pkce();
    const { requestId } = await loginPage(client, { ...opts, challenge });
    const res = await decide(requestId, "allow");
    expect(res.status).toBe(302);
    const location = new URL(res.headers.get("location")!);
    const code = location.searchParams.get("code")!;
    secretsSeen.add(code);
    return { code, verifier, location };
  }

  function tokenRequest(form: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
    return fetch(`${auth.origin}/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", ...headers },
      body: new URLSearchParams(form),
    });
  }

  async function tokensFrom(res: Response): Promise<Tokens> {
    expect(res.status).toBe(200);
    const tokens = (await res.json()) as Tokens;
    secretsSeen.add(tokens.access_token).add(tokens.refresh_token);
    return tokens;
  }

  function clientCredentials(client: Registered): Record<string, string> {
    return { client_id: client.client_id, ...(client.client_secret && { client_secret: client.client_secret }) };
  }

  async function exchangeCode(client: Registered, opts: AuthorizeOptions = {}): Promise<Tokens> {
    const { code, verifier } = await obtainCode(client, opts);
    const form = { grant_type: "authorization_code", code, code_verifier: verifier, redirect_uri: opts.redirectUri ?? client.redirect_uris[0]!, resource: `${auth.origin}/mcp` };
    return tokensFrom(await tokenRequest({ ...form, ...clientCredentials(client) }));
  }

  function refresh(client: Registered, refreshToken: string, extra: Record<string, string> = {}): Promise<Response> {
    return tokenRequest({ grant_type: "refresh_token", refresh_token: refreshToken, ...clientCredentials(client), ...extra });
  }

  function callMcp(token: string): Promise<Response> {
    return fetch(`${auth.origin}/mcp`, { method: "POST", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: "{}" });
  }

  async function expectOAuthError(res: Response, status: number, error: string): Promise<void> {
    expect(res.status).toBe(status);
    expect(((await res.json()) as { error: string }).error).toBe(error);
  }

  // --- discovery ---

  const RESOURCE_METADATA_PATHS = ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"];
  const SERVER_METADATA_PATHS = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-authorization-server/mcp",
    "/.well-known/openid-configuration",
    "/.well-known/openid-configuration/mcp",
    "/mcp/.well-known/openid-configuration",
  ];

  async function metadata(pathname: string, headers: Record<string, string> = {}): Promise<Record<string, unknown>> {
    const res = await fetch(`${auth.origin}${pathname}`, { headers: { Origin: "https://inspector.example", ...headers } });
    expect(res.status, pathname).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    return (await res.json()) as Record<string, unknown>;
  }

  it("serves protected-resource and authorization-server metadata at every variant clients probe", async () => {
    for (const pathname of RESOURCE_METADATA_PATHS) {
      const prm = await metadata(pathname);
      expect(prm).toMatchObject({ resource: `${auth.origin}/mcp`, authorization_servers: [auth.origin], bearer_methods_supported: ["header"] });
    }
    for (const pathname of SERVER_METADATA_PATHS) {
      const as = await metadata(pathname);
      expect(as.issuer, pathname).toBe(auth.origin);
      expect(as).toMatchObject({
        authorization_endpoint: `${auth.origin}/authorize`,
        token_endpoint: `${auth.origin}/token`,
        registration_endpoint: `${auth.origin}/register`,
        revocation_endpoint: `${auth.origin}/revoke`,
        response_types_supported: ["code"],
        grant_types_supported: ["authorization_code", "refresh_token"],
        code_challenge_methods_supported: ["S256"],
      });
      for (const field of ["token_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported"]) {
        expect([...(as[field] as string[])].sort()).toEqual(["client_secret_basic", "client_secret_post", "none"]);
      }
      // RFC 9207, and CIMD (the provider has a fetcher for metadata documents).
      expect(as.authorization_response_iss_parameter_supported).toBe(true);
      expect(as.client_id_metadata_document_supported).toBe(true);
    }
  });

  // --- Client ID Metadata Documents, RFC 9207 iss, application_type ---

  const documented: Registered = { client_id: DOCUMENT_URL, redirect_uris: ["http://127.0.0.1:3000/callback"] };

  it("signs in a client named by its metadata document: the consent page vouches by the document's host; no secret at /token", async () => {
    // Another loopback port than the document lists: RFC 8252 lets native apps pick theirs.
    const redirectUri = "http://127.0.0.1:49152/callback";
    const { html } = await loginPage(documented, { redirectUri });
    expect(html).toContain("Connect Example Desktop to Coda");
    expect(html).toContain("https://app.example.net");
    expect(html).toContain(DOCUMENT_URL);
    expect(html).toMatch(/class="warning"[^>]*>This app returns to a program on your own computer \(http:\/\/127\.0\.0\.1:49152\)/);
    const tokens = await exchangeCode(documented, { redirectUri });
    const me = await callMcp(tokens.access_token);
    expect(((await me.json()) as { clientId: string }).clientId).toBe(DOCUMENT_URL);
  });

  it("fetches the metadata document once per authorization request: the SDK's lookup reuses the check's", async () => {
    const before = resolvedDocuments.length;
    await loginPage(documented, { redirectUri: "http://127.0.0.1:3000/callback" });
    expect(resolvedDocuments.slice(before)).toEqual([DOCUMENT_URL]);
  });

  it("answers invalid_client with iss when the document cannot be used or does not list the redirect URI", async () => {
    const missing = await authorize({ client_id: "https://app.example.net/oauth/gone.json", redirect_uris: ["http://127.0.0.1:3000/callback"] }, { challenge: pkce().challenge });
    expect(missing.status).toBe(400);
    expect(await missing.json()).toEqual({
      error: "invalid_client",
      error_description: "Could not fetch the client metadata document https://app.example.net/oauth/gone.json: HTTP 404",
      iss: auth.origin,
    });
    const elsewhere = await authorize(documented, { challenge: pkce().challenge, redirectUri: "https://attacker.example/callback" });
    expect(elsewhere.status).toBe(400);
    const body = (await elsewhere.json()) as Record<string, string>;
    expect(body).toMatchObject({ error: "invalid_client", iss: auth.origin });
    expect(body.error_description).toContain("is not among the redirect_uris of the client metadata document");
    // No login page, no pending request for either.
    expect(elsewhere.headers.get("location")).toBeNull();
  });

  it("puts iss on every authorization response: code, denial, and the errors the SDK's handler redirects", async () => {
    const client = await registerClaude();
    const { location } = await obtainCode(client);
    expect(location.searchParams.get("iss")).toBe(auth.origin);
    const { requestId } = await loginPage(client);
    const denied = new URL((await decide(requestId, "deny")).headers.get("location")!);
    expect([denied.searchParams.get("error"), denied.searchParams.get("iss")]).toEqual(["access_denied", auth.origin]);
    // Without a PKCE challenge: reported to the callback, by the SDK, now with iss.
    const noPkce = await authorize(client);
    expect(noPkce.status).toBe(302);
    const error = new URL(noPkce.headers.get("location")!);
    expect([error.searchParams.get("error"), error.searchParams.get("state"), error.searchParams.get("iss")]).toEqual(["invalid_request", "state-123", auth.origin]);
    // An unknown client is answered directly, with iss too.
    const unknown = await authorize({ client_id: "no-such-client", redirect_uris: [CLAUDE_CALLBACK] }, { challenge: pkce().challenge });
    expect(await unknown.json()).toMatchObject({ error: "invalid_client", iss: auth.origin });
  });

  it("honours application_type in DCR: native for loopback or app schemes, web for https hosts, refused when they conflict", async () => {
    const attempt = (body: Record<string, unknown>) =>
      fetch(`${auth.origin}/register`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ client_name: "T", ...body }) });
    expect((await attempt({ application_type: "native", redirect_uris: ["http://127.0.0.1:6276/oauth/callback", "cursor://anysphere.cursor-mcp/oauth/callback"] })).status).toBe(201);
    expect((await attempt({ application_type: "web", redirect_uris: [CLAUDE_CALLBACK] })).status).toBe(201);
    // Older clients send none: accepted as they are.
    expect((await attempt({ redirect_uris: ["http://localhost:33418/callback", CLAUDE_CALLBACK] })).status).toBe(201);
    const webOnLoopback = await attempt({ application_type: "web", redirect_uris: ["http://localhost:33418/callback"] });
    expect(webOnLoopback.status).toBe(400);
    const refused = (await webOnLoopback.json()) as Record<string, string>;
    expect(refused.error).toBe("invalid_redirect_uri");
    expect(refused.error_description).toContain('register as application_type \"native\"'.replace(/\\"/g, '"'));
    const nativeOnWeb = await attempt({ application_type: "native", redirect_uris: [CLAUDE_CALLBACK] });
    expect(await nativeOnWeb.json()).toMatchObject({ error: "invalid_redirect_uri" });
    await expectOAuthError(await attempt({ application_type: "desktop", redirect_uris: [CLAUDE_CALLBACK] }), 400, "invalid_client_metadata");
  });

  it("advertises https URLs when a TLS-terminating proxy forwards the request", async () => {
    const prm = await metadata("/.well-known/oauth-protected-resource/mcp", FORWARDED);
    expect(prm.resource).toBe("https://coda.example.com/mcp");
    expect(prm.authorization_servers).toEqual(["https://coda.example.com"]);
    for (const pathname of SERVER_METADATA_PATHS) {
      const as = await metadata(pathname, FORWARDED);
      expect(as.issuer).toBe("https://coda.example.com");
      for (const field of ["authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"]) {
        expect(as[field]).toMatch(/^https:\/\/coda\.example\.com\//);
      }
    }
    const challenge = await fetch(`${auth.origin}/mcp`, { method: "POST", headers: FORWARDED });
    expect(challenge.status).toBe(401);
    expect(challenge.headers.get("www-authenticate")).toContain('resource_metadata="https://coda.example.com/.well-known/oauth-protected-resource/mcp"');
  });

  it("still serves metadata for a plain-http public origin outside loopback", async () => {
    const as = await metadata("/.well-known/oauth-authorization-server", { "X-Forwarded-Host": "coda.lan:8080" });
    expect(as.issuer).toBe("http://coda.lan:8080");
    expect(as.token_endpoint).toBe("http://coda.lan:8080/token");
  });

  it("answers the 401 probe with an absolute resource_metadata URL", async () => {
    const res = await fetch(`${auth.origin}/mcp`, { method: "POST", body: "{}" });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain(`resource_metadata="${auth.origin}/.well-known/oauth-protected-resource/mcp"`);
  });

  // --- registration ---

  it("registers Claude.ai, ChatGPT and local clients with fresh ids and keeps their redirect URIs", async () => {
    const claude = await registerClaude();
    const chatgpt = await register({
      client_name: "ChatGPT",
      redirect_uris: ["https://chatgpt.com/connector_platform_oauth_redirect", "https://chatgpt.com/connector/oauth/abc123XYZ"],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      scope: "coda",
    });
    const local = await register({
      client_name: "Claude Code",
      redirect_uris: ["http://localhost:33418/callback", "http://127.0.0.1:5173/oauth/callback"],
      token_endpoint_auth_method: "client_secret_basic",
    });
    const again = await registerClaude();

    expect(new Set([claude, chatgpt, local, again].map(c => c.client_id)).size).toBe(4);
    expect(claude.client_secret).toBeTruthy();
    expect(again.client_secret).not.toBe(claude.client_secret);
    expect(chatgpt.client_secret).toBeUndefined();
    expect(local.client_secret).toBeTruthy();
    expect(claude.redirect_uris).toEqual([CLAUDE_CALLBACK, "https://claude.com/api/mcp/auth_callback"]);

    for (const client of [claude, chatgpt, local]) {
      for (const redirectUri of client.redirect_uris) await loginPage(client, { redirectUri });
    }
    // RFC 8252: any port on a registered loopback callback.
    await loginPage(local, { redirectUri: "http://localhost:40001/callback" });
  });

  it("refuses a client authentication method it cannot serve", async () => {
    const res = await fetch(`${auth.origin}/register`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ redirect_uris: [CLAUDE_CALLBACK], token_endpoint_auth_method: "private_key_jwt" }),
    });
    await expectOAuthError(res, 400, "invalid_client_metadata");
  });

  // --- authorization ---

  it("shows a login page, then redirects with code, state and iss on Allow", async () => {
    const client = await registerClaude();
    const res = await authorize(client, { challenge: pkce().challenge, state: "s-1" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
    const html = await res.text();
    expect(html).toContain('<html lang="en">');
    expect(html).toMatch(/<label for="coda_token">/);
    expect(html).toMatch(/<input id="coda_token" name="coda_token" type="password" autocomplete="off"/);
    expect(html).toContain('href="https://coda.io/account"');
    expect(html).toContain("https://claude.ai");

    const requestId = /name="request_id" value="([^"]+)"/.exec(html)![1]!;
    const decision = await decide(requestId, "allow");
    expect(decision.status).toBe(302);
    const location = new URL(decision.headers.get("location")!);
    expect(location.origin + location.pathname).toBe(CLAUDE_CALLBACK);
    expect(location.searchParams.get("code")).toBeTruthy();
    expect(location.searchParams.get("state")).toBe("s-1");
    expect(location.searchParams.get("iss")).toBe(auth.origin);
  });

  it("names the https issuer in the redirect behind a TLS-terminating proxy", async () => {
    const client = await registerClaude();
    const { requestId } = await loginPage(client, { resource: "https://coda.example.com/mcp", headers: FORWARDED });
    const decision = await decide(requestId, "allow", CODA_TOKEN, FORWARDED);
    expect(new URL(decision.headers.get("location")!).searchParams.get("iss")).toBe("https://coda.example.com");
  });

  it("accepts the resource in origin form and with a trailing slash", async () => {
    const client = await registerClaude();
    await loginPage(client, { resource: auth.origin });
    await loginPage(client, { resource: `${auth.origin}/mcp/` });
  });

  it("redirects with invalid_target for another resource", async () => {
    const client = await registerClaude();
    const res = await authorize(client, { challenge: pkce().challenge, resource: "https://elsewhere.example/mcp" });
    expect(res.status).toBe(302);
    const location = new URL(res.headers.get("location")!);
    expect(location.searchParams.get("error")).toBe("invalid_target");
    expect(location.searchParams.get("state")).toBe("state-123");
  });

  it("refuses an unregistered redirect_uri without redirecting to it", async () => {
    const client = await registerClaude();
    const res = await authorize(client, { challenge: pkce().challenge, redirectUri: "https://evil.example/callback" });
    expect(res.status).toBe(400);
    expect(res.headers.get("location")).toBeNull();
    expect(((await res.json()) as { error: string }).error).toBe("invalid_request");
  });

  it("refuses every near miss of a registered redirect_uri, without redirecting to it", async () => {
    const client = await registerClaude();
    const nearMisses = [
      `${CLAUDE_CALLBACK}/`,
      CLAUDE_CALLBACK.replace("auth_callback", "AUTH_CALLBACK"),
      `${CLAUDE_CALLBACK}?next=https://evil.example`,
      CLAUDE_CALLBACK.replace("https:", "http:"),
      CLAUDE_CALLBACK.replace("claude.ai", "claude.ai.evil.example"),
      CLAUDE_CALLBACK.replace("claude.ai", "claude.ai:8443"),
    ];
    for (const redirectUri of nearMisses) {
      const res = await authorize(client, { challenge: pkce().challenge, redirectUri });
      expect(res.status, redirectUri).toBe(400);
      expect(res.headers.get("location")).toBeNull();
    }
  });

  it("refuses the plain PKCE method: S256 only", async () => {
    const client = await registerClaude();
    const { verifier } = pkce();
    const res = await authorize(client, { challenge: verifier, challengeMethod: "plain" });
    expect(res.status).toBe(302);
    const location = new URL(res.headers.get("location")!);
    expect(location.searchParams.get("error")).toBe("invalid_request");
    expect(location.searchParams.get("code")).toBeNull();
  });

  it("refuses a request without code_challenge (PKCE is required)", async () => {
    const client = await registerClaude();
    const res = await authorize(client);
    expect(res.status).toBe(302);
    const location = new URL(res.headers.get("location")!);
    expect(location.origin + location.pathname).toBe(CLAUDE_CALLBACK);
    expect(location.searchParams.get("error")).toBe("invalid_request");
    expect(location.searchParams.get("code")).toBeNull();
  });

  it("refuses an unknown client_id at authorize and token", async () => {
    const res = await authorize({ client_id: "no-such-client", redirect_uris: [CLAUDE_CALLBACK] }, { challenge: pkce().challenge });
    expect(res.status).toBe(400);
    expect(res.headers.get("location")).toBeNull();
    await expectOAuthError(await tokenRequest({ grant_type: "authorization_code", code: "x", code_verifier: "y", client_id: "no-such-client" }), 400, "invalid_client");
  });

  it("re-renders the page for a Coda token Coda refuses, without echoing it", async () => {
    const client = await registerClaude();
    const { requestId } = await loginPage(client);
    const badToken = "not-a-valid-coda-token-5f4e3d";
    const res = await decide(requestId, "allow", badToken);
    expect(res.status).toBe(400);
    const html = await res.text();
    expect(html).toContain('role="alert"');
    expect(html).toContain('aria-describedby="token-hint token-error"');
    expect(html).not.toContain(badToken);
    expect(res.headers.get("cache-control")).toBe("no-store");
    // The request stays open for a second try.
    expect((await decide(requestId, "allow")).status).toBe(302);
  });

  it("redirects with access_denied, state and iss on Deny", async () => {
    const client = await registerClaude();
    const { requestId } = await loginPage(client, { state: "deny-state" });
    const res = await decide(requestId, "deny", "");
    expect(res.status).toBe(302);
    const location = new URL(res.headers.get("location")!);
    expect(location.searchParams.get("error")).toBe("access_denied");
    expect(location.searchParams.get("state")).toBe("deny-state");
    expect(location.searchParams.get("iss")).toBe(auth.origin);
    expect(location.searchParams.get("code")).toBeNull();
  });

  it("explains an unknown, expired or already decided request", async () => {
    const client = await registerClaude();
    const { requestId } = await loginPage(client);
    expect((await decide(requestId, "allow")).status).toBe(302);
    for (const id of [requestId, "no-such-request"]) {
      const res = await decide(id, "allow");
      expect(res.status).toBe(400);
      expect(await res.text()).toContain("start connecting to Coda again");
    }
    const { requestId: stale } = await loginPage(client);
    clock.offsetMs += 11 * 60_000;
    try {
      expect((await decide(stale, "allow")).status).toBe(400);
    } finally {
      clock.offsetMs -= 11 * 60_000;
    }
  });

  // --- token endpoint ---

  it("exchanges a code with client_secret_post; the access token carries the Coda token", async () => {
    const client = await registerClaude();
    const tokens = await exchangeCode(client);
    expect(tokens).toMatchObject({ token_type: "Bearer", expires_in: 3600 });
    expect(tokens.refresh_token).toBeTruthy();
    const res = await callMcp(tokens.access_token);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ clientId: client.client_id, codaToken: CODA_TOKEN, codaUser: CODA_USER.name });
  });

  it("exchanges a code with client_secret_basic (percent-decoded credentials)", async () => {
    const client = await register({ client_name: "Basic", redirect_uris: ["http://127.0.0.1:6274/callback"], token_endpoint_auth_method: "client_secret_basic" });
    const { code, verifier } = await obtainCode(client);
    const encodedId = client.client_id.replace(/-/g, "%2D");
    const res = await tokenRequest({ grant_type: "authorization_code", code, code_verifier: verifier, redirect_uri: client.redirect_uris[0]! }, { Authorization: basic(encodedId, client.client_secret!) });
    expect((await callMcp((await tokensFrom(res)).access_token)).status).toBe(200);
  });

  it("refuses Basic credentials that contradict the body, or a wrong secret", async () => {
    const client = await registerClaude();
    const { code, verifier } = await obtainCode(client);
    const form = { grant_type: "authorization_code", code, code_verifier: verifier };
    await expectOAuthError(await tokenRequest({ ...form, client_id: "someone-else" }, { Authorization: basic(client.client_id, client.client_secret!) }), 400, "invalid_request");
    await expectOAuthError(await tokenRequest(form, { Authorization: basic(client.client_id, "wrong") }), 400, "invalid_client");
    await expectOAuthError(await tokenRequest(form, { Authorization: "Basic %%%" }), 401, "invalid_client");
  });

  it("exchanges a code for a public client (none), as ChatGPT registers", async () => {
    const client = await register({ client_name: "ChatGPT", redirect_uris: ["https://chatgpt.com/connector_platform_oauth_redirect"], token_endpoint_auth_method: "none" });
    const tokens = await exchangeCode(client);
    expect((await callMcp(tokens.access_token)).status).toBe(200);
  });

  it("refuses a wrong code_verifier, another redirect_uri, another client or another resource", async () => {
    const client = await registerClaude();
    const other = await registerClaude();
    const { code, verifier } = await obtainCode(client);
    const form = { grant_type: "authorization_code", code, code_verifier: verifier, ...clientCredentials(client) };
    await expectOAuthError(await tokenRequest({ ...form, code_verifier: pkce().verifier }), 400, "invalid_grant");
    await expectOAuthError(await tokenRequest({ ...form, redirect_uri: "https://claude.com/api/mcp/auth_callback" }), 400, "invalid_grant");
    await expectOAuthError(await tokenRequest({ ...form, redirect_uri: `${CLAUDE_CALLBACK}/` }), 400, "invalid_grant");
    await expectOAuthError(await tokenRequest({ ...form, ...clientCredentials(other) }), 400, "invalid_grant");
    await expectOAuthError(await tokenRequest({ ...form, resource: "https://elsewhere.example/mcp" }), 400, "invalid_target");
    // None of these used the code up.
    await tokensFrom(await tokenRequest(form));
  });

  it("refuses a reused code and revokes the tokens issued from it", async () => {
    const client = await registerClaude();
    const { code, verifier } = await obtainCode(client);
    const form = { grant_type: "authorization_code", code, code_verifier: verifier, ...clientCredentials(client) };
    const tokens = await tokensFrom(await tokenRequest(form));
    expect((await callMcp(tokens.access_token)).status).toBe(200);

    await expectOAuthError(await tokenRequest(form), 400, "invalid_grant");
    expect((await callMcp(tokens.access_token)).status).toBe(401);
    await expectOAuthError(await refresh(client, tokens.refresh_token), 400, "invalid_grant");
  });

  it("refuses an expired code", async () => {
    const client = await registerClaude();
    const { code, verifier } = await obtainCode(client);
    clock.offsetMs += 61_000;
    try {
      await expectOAuthError(await tokenRequest({ grant_type: "authorization_code", code, code_verifier: verifier, ...clientCredentials(client) }), 400, "invalid_grant");
    } finally {
      clock.offsetMs -= 61_000;
    }
  });

  it("rotates refresh tokens; a replayed refresh token revokes the whole grant", async () => {
    const client = await registerClaude();
    const first = await exchangeCode(client);
    const second = await tokensFrom(await refresh(client, first.refresh_token));
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect((await callMcp(second.access_token)).status).toBe(200);

    await expectOAuthError(await refresh(client, first.refresh_token), 400, "invalid_grant");
    expect((await callMcp(second.access_token)).status).toBe(401);
    await expectOAuthError(await refresh(client, second.refresh_token), 400, "invalid_grant");
  });

  it("lets a refresh narrow the scopes but not widen them", async () => {
    const client = await registerClaude();
    const tokens = await exchangeCode(client, { scope: "coda:read coda:write" });
    expect(tokens.scope).toBe("coda:read coda:write");
    await expectOAuthError(await refresh(client, tokens.refresh_token, { scope: "coda:read admin" }), 400, "invalid_scope");
    const narrowed = await tokensFrom(await refresh(client, tokens.refresh_token, { scope: "coda:read" }));
    expect(narrowed.scope).toBe("coda:read");
  });

  it("expires access tokens after an hour", async () => {
    const client = await registerClaude();
    const tokens = await exchangeCode(client);
    clock.offsetMs += 3601_000;
    try {
      expect((await callMcp(tokens.access_token)).status).toBe(401);
    } finally {
      clock.offsetMs -= 3601_000;
    }
  });

  it("works with the SDK's own client: discovery, registration (Basic), code exchange and refresh", async () => {
    const resourceMetadata = await discoverOAuthProtectedResourceMetadata(`${auth.origin}/mcp`);
    const issuer = resourceMetadata.authorization_servers![0]!;
    const metadata = (await discoverAuthorizationServerMetadata(issuer))!;
    expect(metadata.issuer).toBe(issuer);
    const redirectUrl = "http://localhost:33418/callback";
    const clientInformation = await registerClient(issuer, {
      metadata,
      clientMetadata: { client_name: "SDK client", redirect_uris: [redirectUrl], token_endpoint_auth_method: "client_secret_basic" },
    });
    secretsSeen.add(clientInformation.client_secret!);
    const { authorizationUrl, codeVerifier } = await startAuthorization(issuer, { metadata, clientInformation, redirectUrl, resource: resourceMetadata.resource, state: "sdk" });
    const page = await fetch(authorizationUrl, { redirect: "manual" });
    const requestId = /name="request_id" value="([^"]+)"/.exec(await page.text())![1]!;
    const authorizationCode = new URL((await decide(requestId, "allow")).headers.get("location")!).searchParams.get("code")!;
    secretsSeen.add(authorizationCode);

    const tokens = await exchangeAuthorization(issuer, { metadata, clientInformation, authorizationCode, codeVerifier, redirectUri: redirectUrl, resource: resourceMetadata.resource });
    const refreshed = await refreshAuthorization(issuer, { metadata, clientInformation, refreshToken: tokens.refresh_token!, resource: resourceMetadata.resource });
    for (const t of [tokens, refreshed]) secretsSeen.add(t.access_token).add(t.refresh_token!);
    expect((await callMcp(refreshed.access_token)).status).toBe(200);
  });

  // --- revocation and bearer tokens ---

  it("revokes an access token (Basic) and a refresh token with its grant; unknown tokens are fine", async () => {
    const client = await registerClaude();
    const tokens = await exchangeCode(client);
    const revoke = (form: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(`${auth.origin}/revoke`, { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded", ...headers }, body: new URLSearchParams(form) });

    expect((await revoke({ token: tokens.access_token, token_type_hint: "access_token" }, { Authorization: basic(client.client_id, client.client_secret!) })).status).toBe(200);
    const denied = await callMcp(tokens.access_token);
    expect(denied.status).toBe(401);
    expect(denied.headers.get("www-authenticate")).toContain("resource_metadata=");

    const next = await tokensFrom(await refresh(client, tokens.refresh_token));
    expect((await revoke({ token: next.refresh_token, ...clientCredentials(client) })).status).toBe(200);
    expect((await callMcp(next.access_token)).status).toBe(401);
    expect((await revoke({ token: "never-issued", ...clientCredentials(client) })).status).toBe(200);
  });

  it("accepts a raw Coda API token as bearer and caches the check", async () => {
    const before = auth.validations.length;
    for (let i = 0; i < 2; i++) {
      const res = await callMcp(CODA_TOKEN);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ clientId: "coda-token", codaToken: CODA_TOKEN, codaUser: CODA_USER.name });
    }
    for (let i = 0; i < 2; i++) expect((await callMcp("random-garbage-bearer")).status).toBe(401);
    expect(auth.validations.length - before).toBe(2);
  });

  // --- persistence ---

  it("never writes a token, code, client secret or Coda token in clear to the database", async () => {
    await exchangeCode(await registerClaude());
    const files = fs.readdirSync(dir).filter(name => name.startsWith("auth.db"));
    expect(files).toContain("auth.db-wal");
    const bytes = Buffer.concat(files.map(name => fs.readFileSync(path.join(dir, name))));
    for (const secret of secretsSeen) expect(bytes.includes(secret), "a secret in clear").toBe(false);
  });

  it("keeps clients and tokens across a restart", async () => {
    const client = await registerClaude();
    const tokens = await exchangeCode(client);
    await auth.close();
    auth = await startAuthServer(path.join(dir, "auth.db"), loadOrCreateServerKey({ keyFile: path.join(dir, "server.key") }));

    expect((await callMcp(tokens.access_token)).status).toBe(200);
    const refreshed = await tokensFrom(await refresh(client, tokens.refresh_token));
    expect((await callMcp(refreshed.access_token)).status).toBe(200);
    await loginPage(client);
  });
});

describe("auth store pruning", () => {
  it("drops what can no longer be used, keeps what replay detection needs", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mcp-lens-prune-"));
    let time = Date.now();
    const store = new AuthStore(path.join(dir, "auth.db"), { now: () => time });
    try {
      const grant = { clientId: "c", resource: "https://x.example/mcp", scopes: [], sealedCodaToken: "v1.a.b.c", codaUser: "u", familyId: "f" };
      store.savePending({ id: "p", clientId: "c", params: { scopes: [], codeChallenge: "x", redirectUri: CLAUDE_CALLBACK, resource: grant.resource }, expiresAt: time + 60_000 });
      store.saveCode({ ...grant, codeHash: "used", redirectUri: CLAUDE_CALLBACK, codeChallenge: "x", expiresAt: time + 60_000, usedAt: time });
      store.saveToken({ ...grant, tokenHash: "access", kind: "access", expiresAt: time + 3_600_000, revokedAt: null });
      store.saveToken({ ...grant, tokenHash: "rotated", kind: "refresh", expiresAt: time + 30 * 86_400_000, revokedAt: time });

      time += 2 * 3_600_000; // past the access token and the pending request, within code retention
      store.saveToken({ ...grant, tokenHash: "trigger", kind: "access", expiresAt: time + 3_600_000, revokedAt: null });
      expect(store.getPending("p")).toBeUndefined();
      expect(store.getToken("access")).toBeUndefined();
      expect(store.getToken("rotated")?.revokedAt).not.toBeNull();
      expect(store.getCode("used")?.usedAt).not.toBeNull();

      time += 2 * 86_400_000;
      store.saveToken({ ...grant, tokenHash: "trigger-2", kind: "access", expiresAt: time + 3_600_000, revokedAt: null });
      expect(store.getCode("used")).toBeUndefined();
    } finally {
      store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("forgetting unused clients", () => {
  const HOUR = 3_600_000;
  it("forgets clients never authorized or idle without live tokens; keeps those in use or mid-authorization", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mcp-lens-clients-"));
    let time = Date.now();
    const store = new AuthStore(path.join(dir, "auth.db"), { now: () => time, clientExpiry: { unauthorizedMs: 24 * HOUR, idleMs: 48 * HOUR } });
    try {
      const client = (clientId: string) => store.saveClient({ clientId, sealedSecret: null, metadata: { redirect_uris: [CLAUDE_CALLBACK] }, issuedAt: time });
      const grant = (clientId: string) => ({ clientId, resource: "https://x.example/mcp", scopes: [], sealedCodaToken: "v1.a.b.c", codaUser: "u", familyId: `f-${clientId}` });
      for (const id of ["abandoned", "authorizing", "in-use", "idle"]) client(id);
      store.markClientUsed("in-use");
      store.markClientUsed("idle");
      store.saveToken({ ...grant("in-use"), tokenHash: "refresh-live", kind: "refresh", expiresAt: time + 30 * 24 * HOUR, revokedAt: null });
      store.saveToken({ ...grant("idle"), tokenHash: "refresh-revoked", kind: "refresh", expiresAt: time + 30 * 24 * HOUR, revokedAt: time });
      // An authorization still in progress when the client's time is up (writes prune too, so it is saved first).
      store.savePending({ id: "p", clientId: "authorizing", params: { scopes: [], codeChallenge: "x", redirectUri: CLAUDE_CALLBACK, resource: "https://x.example/mcp" }, expiresAt: time + 26 * HOUR });

      time += 25 * HOUR;
      expect(store.prune()).toBe(1);
      expect(store.getClient("abandoned")).toBeUndefined();
      expect(store.getClient("authorizing")).toBeDefined();

      time += 24 * HOUR;
      expect(store.prune()).toBe(2); // "idle" (its only token revoked) and "authorizing" (its request expired)
      expect(store.getClient("idle")).toBeUndefined();
      expect(store.getClient("in-use")).toBeDefined();
      expect(store.countClients()).toBe(1);
    } finally {
      store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("creates the database file for its owner only and tightens an existing one", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mcp-lens-mode-"));
    try {
      const file = path.join(dir, "auth.db");
      fs.writeFileSync(file, "", { mode: 0o644 });
      fs.chmodSync(file, 0o644);
      const store = new AuthStore(file);
      store.saveClient({ clientId: "c", sealedSecret: null, metadata: {}, issuedAt: 0 });
      for (const name of fs.readdirSync(dir)) expect((fs.statSync(path.join(dir, name)).mode & 0o777).toString(8), name).toBe("600");
      store.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("server key and sealing", () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "mcp-lens-key-"));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("creates the key file once, mode 0600, and reads it back", () => {
    const keyFile = path.join(dir, "nested", "server.key");
    const key = loadOrCreateServerKey({ keyFile });
    expect(key).toHaveLength(32);
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(loadOrCreateServerKey({ keyFile }).equals(key)).toBe(true);
  });

  it("prefers a configured key and explains a malformed one in one line", () => {
    const hex = randomBytes(32).toString("hex");
    expect(loadOrCreateServerKey({ keyHex: hex, keyFile: path.join(dir, "unused.key") }).toString("hex")).toBe(hex);
    expect(fs.existsSync(path.join(dir, "unused.key"))).toBe(false);
    expect(() => loadOrCreateServerKey({ keyHex: "abc", keyFile: path.join(dir, "unused.key") })).toThrow(/must be 64 hex characters/);
    fs.writeFileSync(path.join(dir, "bad.key"), "not hex");
    expect(() => loadOrCreateServerKey({ keyFile: path.join(dir, "bad.key") })).toThrow(/bad\.key must be 64 hex characters/);
  });

  it("seals with a random IV and refuses a wrong key or tampering", () => {
    const key = randomBytes(32);
    const sealed = encryptSecret(key, "secret value");
    expect(sealed).toMatch(/^v1\.[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(encryptSecret(key, "secret value")).not.toBe(sealed);
    expect(decryptSecret(key, sealed)).toBe("secret value");
    expect(() => decryptSecret(randomBytes(32), sealed)).toThrow(/wrong server key/);
    expect(() => decryptSecret(key, `${sealed.slice(0, -2)}AA`)).toThrow(/cannot decrypt/);
    expect(() => decryptSecret(key, "v2.a.b.c")).toThrow(/unknown format/);
  });

  it("hashes tokens with SHA-256 and makes base64url tokens", () => {
    expect(hashToken("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(newToken()).toMatch(/^[\w-]{43}$/);
    expect(newToken(16)).toMatch(/^[\w-]{22}$/);
  });
});

describe("login page", () => {
  it("escapes what the client chose and shows where the user returns", () => {
    const html = renderLoginPage({
      clientName: `<script>alert("x")</script>`,
      redirectUri: "https://chatgpt.com/connector/oauth/x?a=<b>",
      requestId: `"><img src=x>`,
      scopes: ["<s>"],
      error: "<i>bad</i>",
    });
    expect(html).not.toMatch(/<script|<img|<s>|<i>/);
    expect(html).toContain("&#60;script&#62;");
    expect(html).toContain("https://chatgpt.com");
    expect(html).toContain('role="alert"');
  });

  it("is self-contained and labelled", () => {
    const html = renderLoginPage({ clientName: "Claude", redirectUri: CLAUDE_CALLBACK, requestId: "r1", scopes: [] });
    expect(html).toMatch(/<title>[^<]+<\/title>/);
    expect(html).toContain("<main>");
    expect(html).not.toMatch(/<script|<link|src=|url\(/);
    expect(html).not.toContain('role="alert"');
    expect(html).toContain('aria-describedby="token-hint"');
  });
});
