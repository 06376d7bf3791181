// The OAuth 2.1 authorization server's HTTP surface: the SDK's handlers on our own router, plus
// what the SDK lacks: per-request public URLs in the metadata (behind a TLS-terminating proxy),
// every discovery variant clients probe, client_secret_basic, and the login form's target.
import express, { type NextFunction, type Request, type RequestHandler, type Response, type Router } from "express";
import { InvalidClientError, InvalidRequestError, TooManyRequestsError, type OAuthError } from "@modelcontextprotocol/sdk/server/auth/errors.js";
import { authorizationHandler } from "@modelcontextprotocol/sdk/server/auth/handlers/authorize.js";
import { metadataHandler } from "@modelcontextprotocol/sdk/server/auth/handlers/metadata.js";
import { clientRegistrationHandler } from "@modelcontextprotocol/sdk/server/auth/handlers/register.js";
import { revocationHandler } from "@modelcontextprotocol/sdk/server/auth/handlers/revoke.js";
import { tokenHandler } from "@modelcontextprotocol/sdk/server/auth/handlers/token.js";
import { createOAuthMetadata } from "@modelcontextprotocol/sdk/server/auth/router.js";
import type { OAuthMetadata, OAuthProtectedResourceMetadata } from "@modelcontextprotocol/sdk/shared/auth.js";

import { publicMcpUrl } from "../public-url.js";
import { authorizationParams, issuerOnAuthorizationResponses, metadataDocumentClientCheck } from "./authorization-responses.js";
import { DECISION_PATH, sendPage } from "./login-page.js";
import { CLIENT_AUTH_METHODS, MAX_STATE_LENGTH, type CodaOAuthProvider } from "./provider.js";
import { registrationGuard } from "./registration.js";

export interface AuthRouterOptions {
  provider: CodaOAuthProvider;
  /** The origin clients use for this request (see server/public-url.ts). */
  publicOrigin: (req: Request) => URL;
  /** Where the MCP endpoint is mounted; default /mcp. */
  mcpPath?: string;
  /** Advertised in both metadata documents; omitted when not given (any scope is accepted). */
  scopesSupported?: string[];
  /** Registrations per client address (req.ip, see the app's trust proxy) per hour; 0 or absent: no limit. */
  registrationLimitPerHour?: number;
  /** Registered clients at most (the provider enforces the same bound); absent: no bound. */
  maxClients?: number;
}

const HOUR_MS = 3_600_000;
// An authorization request is a URL's worth of parameters (the SDK's own parser allows 100 KB).
const AUTHORIZE_BODY_LIMIT = 16 * 1024;

const RESOURCE_NAME = "Coda";

/** Mount at the application root, before the MCP route (one variant lives under the MCP path). */
export function createAuthRouter(opts: AuthRouterOptions): Router {
  const { provider, publicOrigin, scopesSupported } = opts;
  const mcpPath = opts.mcpPath ?? "/mcp";
  const router = express.Router();

  // Path-suffixed variants first: router.use matches prefixes, so the bare path would see them too.
  const resourceMetadataPaths = [`/.well-known/oauth-protected-resource${mcpPath}`, "/.well-known/oauth-protected-resource"];
  const serverMetadataPaths = [
    `/.well-known/oauth-authorization-server${mcpPath}`,
    `/.well-known/openid-configuration${mcpPath}`,
    `${mcpPath}/.well-known/openid-configuration`,
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
  ];
  router.use(resourceMetadataPaths, perRequestMetadata(req => protectedResourceMetadata(publicOrigin(req), mcpPath, scopesSupported)));
  router.use(serverMetadataPaths, perRequestMetadata(req => authorizationServerMetadata(provider, publicOrigin(req), scopesSupported)));

  // Hosted connectors retry in bursts from shared egress addresses: no rate limits on the
  // authorization and token endpoints. Registration is different: it is the one endpoint that
  // stores what anyone sends, and a connector registers once, so it is bounded and limited.
  router.post(DECISION_PATH, express.urlencoded({ extended: false }), decisionHandler(provider, publicOrigin));
  router.use(
    "/authorize",
    issuerOnAuthorizationResponses((req) => issuerFor(publicOrigin(req))),
    express.urlencoded({ extended: false, limit: AUTHORIZE_BODY_LIMIT }),
    oversizedAuthorizeBody,
    refuseOversizedState,
    metadataDocumentClientCheck(provider),
    authorizationHandler({ provider, rateLimit: false }),
  );
  router.use("/token", ...clientSecretBasic, tokenHandler({ provider, rateLimit: false }));
  router.use("/revoke", ...clientSecretBasic, revocationHandler({ provider, rateLimit: false }));
  const registrationLimit = opts.registrationLimitPerHour ?? 0;
  router.use(
    "/register",
    ...registrationGuard({ maxClients: opts.maxClients ?? Number.POSITIVE_INFINITY, hasRoomForClient: () => provider.hasRoomForClient() }),
    clientRegistrationHandler({
      clientsStore: provider.clientsStore,
      // The SDK's express-rate-limit, keyed by req.ip: behind mcp-lens that is the client from
      // X-Forwarded-For only because the app trusts its proxy (server/app.ts), else every client
      // would share mcp-lens's loopback address and one flood would lock everyone out.
      rateLimit:
        registrationLimit > 0
          ? {
              windowMs: HOUR_MS,
              max: registrationLimit, // overrides the SDK's own `max: 20`
              // Trust is decided by the app's trust proxy setting; X-Forwarded-For ignored on purpose is fine.
              validate: { xForwardedForHeader: false },
              message: new TooManyRequestsError(`At most ${registrationLimit} client registrations per hour from one address; try again later`).toResponseObject(),
            }
          : false,
      clientIdGeneration: false, // the provider issues its own
      clientSecretExpirySeconds: 0, // never: connectors do not re-register when a secret expires
    }),
  );
  return router;
}

/** The issuer, exactly as in authorization_servers: the origin without the trailing slash URL.href adds. */
function issuerFor(origin: URL): string {
  return origin.origin;
}

function protectedResourceMetadata(origin: URL, mcpPath: string, scopesSupported?: string[]): OAuthProtectedResourceMetadata {
  return {
    resource: publicMcpUrl(origin, mcpPath).href,
    authorization_servers: [issuerFor(origin)],
    scopes_supported: scopesSupported,
    bearer_methods_supported: ["header"],
    resource_name: RESOURCE_NAME,
  };
}

function authorizationServerMetadata(provider: CodaOAuthProvider, origin: URL, scopesSupported?: string[]): OAuthMetadata {
  // createOAuthMetadata throws for a plain-http issuer outside loopback. Its endpoints come from
  // baseUrl and its issuer is replaced below, so an https twin only gets past that check and a
  // plain-http deployment still gets truthful metadata.
  const httpsTwin = new URL(origin);
  httpsTwin.protocol = "https:";
  const metadata = createOAuthMetadata({ provider, issuerUrl: httpsTwin, baseUrl: origin, scopesSupported });
  return {
    ...metadata,
    issuer: issuerFor(origin),
    token_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    revocation_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    // MCP 2026-07-28: a client may name itself by the URL of its metadata document instead of
    // registering (DCR stays, deprecated, for older clients).
    ...(provider.acceptsMetadataDocuments && { client_id_metadata_document_supported: true }),
    // RFC 9207: every authorization response carries `iss` (issuerOnAuthorizationResponses).
    authorization_response_iss_parameter_supported: true,
  } as OAuthMetadata;
}

// The documents depend on each request's public origin, so the SDK's handler (JSON, CORS *,
// GET/OPTIONS only) is built per request.
function perRequestMetadata(build: (req: Request) => OAuthMetadata | OAuthProtectedResourceMetadata): RequestHandler {
  return (req, res, next) => metadataHandler(build(req))(req, res, next);
}

function decisionHandler(provider: CodaOAuthProvider, publicOrigin: (req: Request) => URL): RequestHandler {
  return async (req, res) => {
    const form = (req.body ?? {}) as Record<string, unknown>;
    const decision = await provider.decide({
      requestId: formField(form.request_id),
      action: form.action === "allow" ? "allow" : "deny",
      codaToken: formField(form.coda_token),
      issuer: issuerFor(publicOrigin(req)),
    });
    if (decision.kind === "page") return sendPage(res, decision.status, decision.html);
    // 302, not 307: a 307 would replay the form post, Coda token included, to the client's callback.
    res.set("Cache-Control", "no-store").redirect(302, decision.location);
  };
}

function oversizedAuthorizeBody(error: Error & { type?: string }, _req: Request, res: Response, next: NextFunction): void {
  if (error.type !== "entity.too.large") return next(error);
  sendOAuthError(res, 413, new InvalidRequestError(`The authorization request is larger than ${AUTHORIZE_BODY_LIMIT} bytes`));
}

/**
 * The SDK reports most authorization errors by redirecting with the request's `state`; a huge
 * state would come back in that Location header, so it is refused here, directly, like a bad client_id.
 */
function refuseOversizedState(req: Request, res: Response, next: NextFunction): void {
  const state = authorizationParams(req)?.state;
  if (typeof state === "string" && state.length > MAX_STATE_LENGTH) {
    return sendOAuthError(res, 400, new InvalidRequestError(`state is longer than ${MAX_STATE_LENGTH} characters`));
  }
  next();
}

function formField(value: unknown): string {
  return typeof value === "string" ? value : "";
}

// client_secret_basic (RFC 6749 §2.3.1): the SDK's authenticateClient reads credentials from the
// body only, so the form is parsed here and Basic credentials are copied into it.
const clientSecretBasic: RequestHandler[] = [express.urlencoded({ extended: false }), basicCredentialsToBody];

function basicCredentialsToBody(req: Request, res: Response, next: NextFunction): void {
  const header = req.headers.authorization;
  if (!header || !/^basic /i.test(header)) return next();
  const credentials = parseBasicCredentials(header.slice("basic ".length).trim());
  if (!credentials) {
    res.set("WWW-Authenticate", 'Basic realm="oauth"');
    return sendOAuthError(res, 401, new InvalidClientError("Malformed Basic credentials"));
  }
  const body = (req.body ??= {}) as Record<string, unknown>;
  for (const [field, value] of Object.entries(credentials)) {
    if (body[field] !== undefined && body[field] !== value) {
      return sendOAuthError(res, 400, new InvalidRequestError(`${field} in the body differs from the Authorization header`));
    }
    body[field] = value;
  }
  next();
}

function parseBasicCredentials(encoded: string): { client_id: string; client_secret: string } | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) return undefined;
  const decoded = Buffer.from(encoded, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  try {
    return { client_id: formDecode(decoded.slice(0, colon)), client_secret: formDecode(decoded.slice(colon + 1)) };
  } catch {
    return undefined; // malformed percent-encoding
  }
}

// Client ids and secrets are form-urlencoded before they are base64-encoded.
function formDecode(text: string): string {
  return decodeURIComponent(text.replace(/\+/g, " "));
}

function sendOAuthError(res: Response, status: number, error: OAuthError): void {
  res.status(status).set("Cache-Control", "no-store").json(error.toResponseObject());
}
