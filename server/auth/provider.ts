// The OAuth 2.1 authorization server behind the SDK's handlers. A person "signs in" by pasting a
// Coda API token on our login page; the access tokens we issue stand for that Coda token.
import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import type { Request, Response } from "express";
import type { OAuthRegisteredClientsStore } from "@modelcontextprotocol/sdk/server/auth/clients.js";
import {
  InvalidClientError,
  InvalidClientMetadataError,
  InvalidGrantError,
  InvalidRequestError,
  InvalidScopeError,
  InvalidTargetError,
  InvalidTokenError,
  TemporarilyUnavailableError,
} from "@modelcontextprotocol/sdk/server/auth/errors.js";
import type { AuthorizationParams, OAuthServerProvider } from "@modelcontextprotocol/sdk/server/auth/provider.js";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import type { OAuthClientInformationFull, OAuthTokenRevocationRequest, OAuthTokens } from "@modelcontextprotocol/sdk/shared/auth.js";

import { ClientMetadataError, isClientIdUrl, type ClientMetadataFetcher } from "./client-metadata-document.js";
import { decryptSecret, encryptSecret, hashToken, newToken } from "./crypto.js";
import { renderClientUnavailablePage, renderExpiredRequestPage, renderLoginPage, sendPage } from "./login-page.js";
import type { AuthStore, Grant, PendingAuthorization, PendingParams, StoredCode, StoredToken } from "./store.js";

/** Client authentication methods accepted at registration and at /token and /revoke. */
export const CLIENT_AUTH_METHODS = ["none", "client_secret_post", "client_secret_basic"];
/** The `clientId` of AuthInfo for a bearer that is a raw Coda API token rather than one of ours. */
export const RAW_CODA_TOKEN_CLIENT_ID = "coda-token";

const PENDING_TTL_MS = 10 * 60_000;
const CODE_TTL_MS = 60_000;
const ACCESS_TTL_MS = 60 * 60_000;
const REFRESH_TTL_MS = 30 * 24 * 60 * 60_000;
const FULL_PRUNE_INTERVAL_MS = 60_000;
// Each /authorize stores a pending request until the user decides: what it may hold is bounded
// (real states are 30-100 characters; an S256 challenge is 43), and so is how many one client has.
export const MAX_STATE_LENGTH = 1_024;
const MAX_SCOPE_LENGTH = 1_024;
const MAX_CHALLENGE_LENGTH = 128;
const MAX_PENDING_PER_CLIENT = 20;
const CODA_TOKEN_CACHE_TTL_MS = 5 * 60_000;
// Bounds memory when someone sprays random bearers (negative results are cached too).
const CODA_TOKEN_CACHE_MAX = 1_000;

export interface CodaUser {
  name: string;
  loginId: string;
}

export interface CodaOAuthProviderOptions {
  store: AuthStore;
  key: Buffer;
  /** The Coda user for a Coda API token, or null when Coda refuses it. */
  validateCodaToken: (token: string) => Promise<CodaUser | null>;
  /** Epoch milliseconds; defaults to the store's clock. */
  now?: () => number;
  /** The public MCP URL for this request: the `resource` tokens are issued for. */
  mcpUrlFor: (req: Request) => URL;
  /** Registered clients kept at most (the registration route refuses politely before this). */
  maxClients?: number;
  /** Resolves client ids that are metadata document URLs (CIMD); without it such ids are unknown. */
  clientMetadata?: Pick<ClientMetadataFetcher, "resolve">;
}

/** What the login form submitted, and the issuer to name in the redirect (RFC 9207 `iss`). */
export interface DecisionInput {
  requestId: string;
  action: "allow" | "deny";
  codaToken: string;
  issuer: string;
}

export type Decision = { kind: "redirect"; location: string } | { kind: "page"; status: number; html: string };

type CodaTokenCheck = { user: CodaUser } | { status: number; error: string };

interface CachedCodaUser {
  user: CodaUser | null;
  until: number;
}

export class CodaOAuthProvider implements OAuthServerProvider {
  readonly clientsStore: OAuthRegisteredClientsStore = {
    getClient: clientId => this.getClient(clientId),
    registerClient: client => this.registerClient(client),
  };
  private readonly store: AuthStore;
  private readonly key: Buffer;
  private readonly validateCodaToken: CodaOAuthProviderOptions["validateCodaToken"];
  private readonly now: () => number;
  private readonly mcpUrlFor: CodaOAuthProviderOptions["mcpUrlFor"];
  private readonly maxClients: number;
  private readonly clientMetadata: Pick<ClientMetadataFetcher, "resolve"> | undefined;
  private lastFullPrune = Number.NEGATIVE_INFINITY;
  private readonly codaTokenCache = new Map<string, CachedCodaUser>();
  /** The metadata document's client of the request being handled (see withCheckedClient). */
  private readonly checkedDocument = new AsyncLocalStorage<OAuthClientInformationFull>();

  constructor(opts: CodaOAuthProviderOptions) {
    this.store = opts.store;
    this.key = opts.key;
    this.validateCodaToken = opts.validateCodaToken;
    this.now = opts.now ?? opts.store.now;
    this.mcpUrlFor = opts.mcpUrlFor;
    this.maxClients = opts.maxClients ?? Number.POSITIVE_INFINITY;
    this.clientMetadata = opts.clientMetadata;
  }

  // --- clients: metadata documents (CIMD) and registrations (RFC 7591) ---

  /** Whether a client may name itself by its metadata document's URL (advertised in the metadata). */
  get acceptsMetadataDocuments(): boolean {
    return this.clientMetadata !== undefined;
  }

  /** A client named by its metadata document's URL, or one registered here. */
  async getClient(clientId: string): Promise<OAuthClientInformationFull | undefined> {
    const checked = this.checkedDocument.getStore();
    if (checked?.client_id === clientId) return checked;
    if (this.clientMetadata && isClientIdUrl(clientId)) return this.documentedClient(this.clientMetadata, clientId);
    return this.registeredClient(clientId);
  }

  /**
   * Runs `next` (the rest of this request's handling) with the metadata document's client it
   * already fetched and checked: the SDK's own lookup gets it again without a second fetch (a
   * document that may not be cached would otherwise be fetched twice per /authorize).
   */
  withCheckedClient(client: OAuthClientInformationFull, next: () => void): void {
    this.checkedDocument.run(client, next);
  }

  /** The document, fetched or from the cache; one that cannot be used makes the client invalid, with the reason. */
  private async documentedClient(fetcher: Pick<ClientMetadataFetcher, "resolve">, clientId: string): Promise<OAuthClientInformationFull> {
    try {
      return { ...(await fetcher.resolve(clientId)) };
    } catch (error) {
      if (error instanceof ClientMetadataError) throw new InvalidClientError(error.message);
      throw error;
    }
  }

  private registeredClient(clientId: string): OAuthClientInformationFull | undefined {
    const stored = this.store.getClient(clientId);
    if (!stored) return undefined;
    return {
      ...(stored.metadata as Omit<OAuthClientInformationFull, "client_id">),
      client_id: stored.clientId,
      client_id_issued_at: toSeconds(stored.issuedAt),
      ...(stored.sealedSecret !== null && { client_secret: decryptSecret(this.key, stored.sealedSecret) }),
    };
  }

  /**
   * Whether another client may register. When full, clients nobody uses are forgotten first,
   * at most once a minute so that a flood of refused registrations is not a flood of deletes.
   */
  hasRoomForClient(): boolean {
    if (this.store.countClients() < this.maxClients) return true;
    if (this.now() - this.lastFullPrune < FULL_PRUNE_INTERVAL_MS) return false;
    this.lastFullPrune = this.now();
    this.store.prune();
    return this.store.countClients() < this.maxClients;
  }

  /** Every registration gets a fresh client_id; the SDK's handler has generated the secret unless the client is public. */
  private registerClient(client: Omit<OAuthClientInformationFull, "client_id" | "client_id_issued_at">): OAuthClientInformationFull {
    const method = client.token_endpoint_auth_method;
    if (method !== undefined && !CLIENT_AUTH_METHODS.includes(method)) {
      throw new InvalidClientMetadataError(`token_endpoint_auth_method must be one of ${CLIENT_AUTH_METHODS.join(", ")}`);
    }
    if (client.redirect_uris.length === 0) throw new InvalidClientMetadataError("redirect_uris must list at least one URI");
    // The hard bound, for registrations that raced past the route's check.
    if (this.store.countClients() >= this.maxClients) throw new TemporarilyUnavailableError(`This server keeps at most ${this.maxClients} registered clients`);
    const { client_secret: secret, ...metadata } = client;
    const issuedAt = this.now();
    const clientId = randomUUID();
    this.store.saveClient({ clientId, sealedSecret: secret ? encryptSecret(this.key, secret) : null, metadata, issuedAt });
    return { ...client, client_id: clientId, client_id_issued_at: toSeconds(issuedAt) };
  }

  // --- authorization: the login page and its decision ---

  async authorize(client: OAuthClientInformationFull, params: AuthorizationParams, res: Response): Promise<void> {
    const mcpUrl = this.mcpUrlFor(res.req);
    if (params.resource && !isSameResource(params.resource, mcpUrl)) {
      throw new InvalidTargetError(`resource must be ${mcpUrl.href}`);
    }
    if ((params.state?.length ?? 0) > MAX_STATE_LENGTH) throw new InvalidRequestError(`state is longer than ${MAX_STATE_LENGTH} characters`);
    if ((params.scopes ?? []).join(" ").length > MAX_SCOPE_LENGTH) throw new InvalidScopeError(`scope is longer than ${MAX_SCOPE_LENGTH} characters`);
    if (params.codeChallenge.length > MAX_CHALLENGE_LENGTH) throw new InvalidRequestError(`code_challenge is longer than ${MAX_CHALLENGE_LENGTH} characters`);
    const pending: PendingAuthorization = {
      id: newToken(),
      clientId: client.client_id,
      params: {
        state: params.state,
        scopes: params.scopes?.filter(Boolean) ?? [],
        codeChallenge: params.codeChallenge,
        redirectUri: params.redirectUri,
        resource: mcpUrl.href,
      },
      expiresAt: this.now() + PENDING_TTL_MS,
    };
    // A client's oldest requests give way: only its own abandoned tabs are lost.
    this.store.savePending(pending, MAX_PENDING_PER_CLIENT);
    sendPage(res, 200, this.loginPage(pending, client));
  }

  /** Applies the login form: a code on allow with a token Coda accepts, access_denied on deny. */
  async decide({ requestId, action, codaToken, issuer }: DecisionInput): Promise<Decision> {
    const pending = this.store.getPending(requestId);
    let client: OAuthClientInformationFull | undefined;
    try {
      client = pending && pending.expiresAt > this.now() ? await this.getClient(pending.clientId) : undefined;
    } catch (error) {
      // A metadata document that was fine at /authorize may be gone by now (not cached, host down).
      if (error instanceof InvalidClientError) return { kind: "page", status: 400, html: renderClientUnavailablePage(error.message) };
      throw error;
    }
    if (!pending || !client) return expiredPage();
    if (action === "deny") {
      if (!this.store.deletePending(pending.id)) return expiredPage();
      return redirectTo(pending.params, issuer, { error: "access_denied", error_description: "The user denied access" });
    }
    const pastedToken = codaToken.trim();
    const check = await this.checkCodaToken(pastedToken);
    if ("error" in check) return { kind: "page", status: check.status, html: this.loginPage(pending, client, check.error) };
    // Deleting decides the request exactly once, even when the form is submitted twice.
    if (!this.store.deletePending(pending.id)) return expiredPage();
    const code = newToken();
    const { redirectUri, codeChallenge, resource, scopes } = pending.params;
    this.store.saveCode({
      codeHash: hashToken(code),
      redirectUri,
      codeChallenge,
      resource,
      scopes,
      clientId: client.client_id,
      sealedCodaToken: encryptSecret(this.key, pastedToken),
      codaUser: check.user.name,
      familyId: randomUUID(),
      expiresAt: this.now() + CODE_TTL_MS,
      usedAt: null,
    });
    return redirectTo(pending.params, issuer, { code });
  }

  private loginPage(pending: PendingAuthorization, client: OAuthClientInformationFull, error?: string): string {
    const { redirectUri, scopes } = pending.params;
    const documentUrl = isClientIdUrl(client.client_id) ? client.client_id : undefined;
    return renderLoginPage({ clientName: client.client_name || client.client_id, documentUrl, redirectUri, requestId: pending.id, scopes, error });
  }

  private async checkCodaToken(codaToken: string): Promise<CodaTokenCheck> {
    if (!codaToken) return { status: 400, error: "Paste your Coda API token to continue." };
    try {
      const user = await this.validateCodaToken(codaToken);
      return user ? { user } : { status: 400, error: "Coda did not accept this token. Check that you copied all of it, or create a new one." };
    } catch {
      return { status: 502, error: "Could not reach Coda to check the token. Please try again in a moment." };
    }
  }

  // --- token endpoint (the SDK has checked client authentication and PKCE) ---

  async challengeForAuthorizationCode(client: OAuthClientInformationFull, authorizationCode: string): Promise<string> {
    return this.redeemableCode(client, authorizationCode).codeChallenge;
  }

  async exchangeAuthorizationCode(
    client: OAuthClientInformationFull,
    authorizationCode: string,
    _codeVerifier?: string,
    redirectUri?: string,
    resource?: URL,
  ): Promise<OAuthTokens> {
    const code = this.redeemableCode(client, authorizationCode);
    if (redirectUri !== undefined && redirectUri !== code.redirectUri) {
      throw new InvalidGrantError("redirect_uri differs from the one in the authorization request");
    }
    assertResource(resource, code);
    // Two concurrent exchanges can both get here: only one marks the code used.
    if (!this.store.markCodeUsed(code.codeHash)) throw this.replayed(code.familyId, "Authorization code");
    return this.issueTokens(code);
  }

  async exchangeRefreshToken(client: OAuthClientInformationFull, refreshToken: string, scopes?: string[], resource?: URL): Promise<OAuthTokens> {
    const stored = this.store.getToken(hashToken(refreshToken));
    if (stored?.kind !== "refresh" || stored.clientId !== client.client_id) throw new InvalidGrantError("Unknown refresh token");
    if (stored.expiresAt <= this.now()) throw new InvalidGrantError("Refresh token expired");
    assertResource(resource, stored);
    const requested = scopes?.filter(Boolean);
    if (requested?.some(scope => !stored.scopes.includes(scope))) throw new InvalidScopeError("A refresh can only narrow the granted scopes");
    // Rotation: revoking fails when the token was rotated (or revoked) before, i.e. it was replayed.
    if (!this.store.revokeToken(stored.tokenHash)) throw this.replayed(stored.familyId, "Refresh token");
    return this.issueTokens({ ...stored, scopes: requested ?? stored.scopes });
  }

  /** The code if this client may still redeem it; a replayed code revokes the tokens it produced. */
  private redeemableCode(client: OAuthClientInformationFull, authorizationCode: string): StoredCode {
    const code = this.store.getCode(hashToken(authorizationCode));
    if (!code || code.clientId !== client.client_id) throw new InvalidGrantError("Unknown authorization code");
    if (code.usedAt !== null) throw this.replayed(code.familyId, "Authorization code");
    if (code.expiresAt <= this.now()) throw new InvalidGrantError("Authorization code expired");
    return code;
  }

  // RFC 6749 §4.1.2 and OAuth 2.1 §4.3.1: a replay means a leak, so the whole grant goes.
  private replayed(familyId: string, what: string): InvalidGrantError {
    this.store.revokeFamily(familyId);
    return new InvalidGrantError(`${what} was already used; the tokens issued from it are revoked`);
  }

  private issueTokens(grant: Grant): OAuthTokens {
    this.store.markClientUsed(grant.clientId);
    const accessToken = newToken();
    const refreshToken = newToken();
    this.saveToken(grant, "access", accessToken, ACCESS_TTL_MS);
    this.saveToken(grant, "refresh", refreshToken, REFRESH_TTL_MS);
    return {
      access_token: accessToken,
      token_type: "Bearer",
      expires_in: ACCESS_TTL_MS / 1000,
      refresh_token: refreshToken,
      ...(grant.scopes.length > 0 && { scope: grant.scopes.join(" ") }),
    };
  }

  private saveToken(grant: Grant, kind: StoredToken["kind"], token: string, ttlMs: number): void {
    const { clientId, resource, scopes, sealedCodaToken, codaUser, familyId } = grant;
    const expiresAt = this.now() + ttlMs;
    this.store.saveToken({ clientId, resource, scopes, sealedCodaToken, codaUser, familyId, tokenHash: hashToken(token), kind, expiresAt, revokedAt: null });
  }

  // --- resource server side ---

  /** Our access tokens first; any other bearer is tried as a raw Coda API token (scripts, MCP Inspector). */
  async verifyAccessToken(token: string): Promise<AuthInfo> {
    const stored = this.store.getToken(hashToken(token));
    return stored ? this.authInfoForIssued(token, stored) : this.authInfoForCodaToken(token);
  }

  private authInfoForIssued(token: string, stored: StoredToken): AuthInfo {
    if (stored.kind !== "access") throw new InvalidTokenError("A refresh token is not an access token");
    if (stored.revokedAt !== null) throw new InvalidTokenError("Token was revoked");
    if (stored.expiresAt <= this.now()) throw new InvalidTokenError("Token has expired");
    return {
      token,
      clientId: stored.clientId,
      scopes: stored.scopes,
      expiresAt: toSeconds(stored.expiresAt),
      resource: new URL(stored.resource),
      extra: { codaToken: decryptSecret(this.key, stored.sealedCodaToken), codaUser: stored.codaUser },
    };
  }

  private async authInfoForCodaToken(token: string): Promise<AuthInfo> {
    const { user, until } = await this.cachedCodaUser(token);
    if (!user) throw new InvalidTokenError("Unknown access token");
    // "Expires" when the cached check does: the next request validates the token again.
    return { token, clientId: RAW_CODA_TOKEN_CLIENT_ID, scopes: [], expiresAt: toSeconds(until), extra: { codaToken: token, codaUser: user.name } };
  }

  private async cachedCodaUser(token: string): Promise<CachedCodaUser> {
    const key = hashToken(token);
    const cached = this.codaTokenCache.get(key);
    if (cached && cached.until > this.now()) return cached;
    const entry = { user: await this.validateCodaToken(token), until: this.now() + CODA_TOKEN_CACHE_TTL_MS };
    this.codaTokenCache.delete(key);
    if (this.codaTokenCache.size >= CODA_TOKEN_CACHE_MAX) this.codaTokenCache.delete(this.codaTokenCache.keys().next().value!);
    this.codaTokenCache.set(key, entry);
    return entry;
  }

  /** RFC 7009: unknown tokens and other clients' tokens are silently ignored. */
  async revokeToken(client: OAuthClientInformationFull, request: OAuthTokenRevocationRequest): Promise<void> {
    const stored = this.store.getToken(hashToken(request.token));
    if (!stored || stored.clientId !== client.client_id) return;
    // A refresh token stands for the whole grant (RFC 7009 §2.1): its access tokens go too.
    if (stored.kind === "refresh") this.store.revokeFamily(stored.familyId);
    else this.store.revokeToken(stored.tokenHash);
  }
}

/** RFC 8707: the resource a client names must be this server's MCP URL (its origin form is accepted too). */
function isSameResource(requested: URL, mcpUrl: URL): boolean {
  const normalized = comparable(requested);
  return normalized === comparable(mcpUrl) || normalized === mcpUrl.origin;
}

function comparable(url: URL): string {
  const copy = new URL(url);
  copy.hash = "";
  return copy.href.replace(/\/$/, "");
}

function assertResource(requested: URL | undefined, grant: Grant): void {
  if (requested && !isSameResource(requested, new URL(grant.resource))) {
    throw new InvalidTargetError(`resource must be ${grant.resource}`);
  }
}

function redirectTo(params: PendingParams, issuer: string, result: Record<string, string>): Decision {
  const location = new URL(params.redirectUri);
  const query = { ...result, ...(params.state !== undefined && { state: params.state }), iss: issuer };
  for (const [name, value] of Object.entries(query)) location.searchParams.set(name, value);
  return { kind: "redirect", location: location.href };
}

function expiredPage(): Decision {
  return { kind: "page", status: 400, html: renderExpiredRequestPage() };
}

function toSeconds(ms: number): number {
  return Math.floor(ms / 1000);
}
