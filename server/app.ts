// The Coda MCP server's HTTP surface: OAuth (SDK handlers), MCP at /mcp behind bearer auth,
// Origin/Host checks that work behind nginx-proxy, Cloudflare and mcp-lens, and /health.
import type { IncomingMessage } from "node:http";
import cors from "cors";
import express, { type NextFunction, type Request, type Response } from "express";
import { InvalidTokenError } from "@modelcontextprotocol/sdk/server/auth/errors.js";
import { requireBearerAuth } from "@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js";
import type { OAuthTokenVerifier } from "@modelcontextprotocol/sdk/server/auth/provider.js";
import type { Logger } from "../common/log.js";
import { createTrustPolicy } from "../common/trust.js";
import { publicMcpUrl, publicOrigin } from "./public-url.js";
import type { McpEndpoint } from "./mcp/endpoint.js";
import { setRawHeader } from "./mcp/raw-headers.js";
import { LOOPBACK_HOST_NAMES, type ServerSettings } from "./settings.js";

export const MCP_PATH = "/mcp";
/** The largest MCP request body accepted (express's parser and the SDK's modern leg alike). */
export const MAX_MCP_BODY_BYTES = 4 * 1024 * 1024;
const LOCAL_HOSTS = new Set<string>(LOOPBACK_HOST_NAMES);

export interface AppDeps {
  settings: ServerSettings;
  verifier: OAuthTokenVerifier;
  authRouter: express.Router;
  endpoint: McpEndpoint;
  logger: Logger;
}

function list(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter(Boolean);
}

/** The origin as the client sees it, for every URL this server advertises. */
export function originResolver(settings: Pick<ServerSettings, "publicUrl" | "ignoreForwarded">): (req: IncomingMessage) => URL {
  const configured = settings.publicUrl ? new URL(settings.publicUrl) : null;
  return (req) => publicOrigin(req, configured, !settings.ignoreForwarded);
}

/**
 * Browser origins allowed to call /mcp. Hosted connectors call from their backends and send
 * no Origin at all; browser clients (MCP Inspector) send theirs.
 */
function originPolicy(settings: ServerSettings, originOf: (req: IncomingMessage) => URL) {
  const allowed = new Set(list(settings.allowedOrigins).map((o) => o.replace(/\/$/, "")));
  return (origin: string, req: IncomingMessage): boolean => {
    if (allowed.has("*") || allowed.has(origin) || origin === originOf(req).origin) return true;
    try {
      return LOCAL_HOSTS.has(new URL(origin).hostname) || LOCAL_HOSTS.has(`[${new URL(origin).hostname}]`);
    } catch {
      return false;
    }
  };
}

/**
 * DNS-rebinding protection that survives a reverse proxy: the host the client asked for is
 * X-Forwarded-Host when a front proxy set it, else Host. Checked only when the public URL
 * (or an explicit list) says what to expect; otherwise every host is the public one.
 */
function hostCheck(settings: ServerSettings) {
  const expected = new Set(list(settings.allowedHosts).map((h) => h.toLowerCase()));
  if (settings.publicUrl) expected.add(new URL(settings.publicUrl).hostname.toLowerCase());
  return (req: Request, res: Response, next: NextFunction) => {
    if (expected.size === 0) return next();
    const forwarded = settings.ignoreForwarded ? undefined : req.headers["x-forwarded-host"];
    const hostHeader = (typeof forwarded === "string" ? forwarded.split(",")[0]!.trim() : req.headers.host) ?? "";
    const hostname = hostHeader.replace(/:\d+$/, "").toLowerCase();
    if (expected.has(hostname) || LOCAL_HOSTS.has(hostname)) return next();
    res.status(421).json({
      error: "misdirected_request",
      error_description: `This server answers for ${[...expected].join(", ")}, not '${hostHeader}'. Set PUBLIC_URL or MCP_LENS_ALLOWED_HOSTS.`,
    });
  };
}

/**
 * Express's `trust proxy`: which peers may name the client in X-Forwarded-For, so that req.ip
 * (the key of the registration limit) is the client behind mcp-lens rather than mcp-lens.
 * Walking the header from the right, the first untrusted hop is the client (proxy-addr).
 */
function trustedProxies(settings: Pick<ServerSettings, "forwardedForTrust" | "ignoreForwarded">): false | ((address: string) => boolean) {
  if (settings.ignoreForwarded) return false;
  const policy = createTrustPolicy(false, settings.forwardedForTrust);
  return (address) => policy.isTrusted(address);
}

/**
 * RFC 8707 audience: a token we issued is good only at the resource it was issued for, i.e.
 * this request's public MCP URL (derived like the PRM's `resource`). Without this check a token
 * issued through tenant-a.example would be accepted when the same server answers as tenant-b.
 * Raw Coda API tokens carry no resource: they are not ours to bind and pass unchanged.
 */
function audienceBound(verifier: OAuthTokenVerifier, expected: URL): OAuthTokenVerifier {
  return {
    async verifyAccessToken(token) {
      const info = await verifier.verifyAccessToken(token);
      if (info.resource && info.resource.href !== expected.href) {
        throw new InvalidTokenError(`This token was issued for ${info.resource.href}, not ${expected.href}`);
      }
      return info;
    },
  };
}

// An Accept of "*/*" or none is how some clients probe; the SDK insists on both types (406 otherwise).
function acceptBothTypes(req: Request): void {
  const accept = req.headers.accept ?? "";
  const wantsEverything = accept === "" || accept.includes("*/*");
  if (req.method === "POST" && wantsEverything) setRawHeader(req, "Accept", "application/json, text/event-stream");
  if (req.method === "GET" && wantsEverything) setRawHeader(req, "Accept", "text/event-stream");
}

function jsonRpcError(res: Response, status: number, code: number, message: string): void {
  res.status(status).json({ jsonrpc: "2.0", error: { code, message }, id: null });
}

export function createApp(deps: AppDeps): express.Express {
  const { settings, endpoint } = deps;
  const originOf = originResolver(settings);
  const originAllowed = originPolicy(settings, originOf);
  const app = express();
  app.disable("x-powered-by");
  app.set("trust proxy", trustedProxies(settings));

  app.get("/health", (_req, res) => {
    res.json({ status: "ok", era: settings.era, sessions: endpoint.sessions });
  });

  app.use(hostCheck(settings));
  app.use(
    cors((req, callback) => {
      const origin = req.headers.origin;
      callback(null, {
        origin: origin !== undefined && originAllowed(origin, req) ? origin : false,
        methods: ["GET", "POST", "DELETE", "OPTIONS"],
        allowedHeaders: ["Authorization", "Content-Type", "Accept", "Mcp-Session-Id", "MCP-Protocol-Version", "Mcp-Method", "Mcp-Name", "Last-Event-ID"],
        exposedHeaders: ["Mcp-Session-Id", "MCP-Protocol-Version", "WWW-Authenticate"],
        maxAge: 86_400,
      });
    }),
  );
  app.use(deps.authRouter);

  const mcp = express.Router();
  mcp.use((req, res, next) => {
    const origin = req.headers.origin;
    if (origin !== undefined && !originAllowed(origin, req)) {
      return jsonRpcError(res, 403, -32000, `Origin ${origin} is not allowed: add it to MCP_LENS_ALLOWED_ORIGINS`);
    }
    next();
  });
  // Built per request: the resource_metadata URL and the audience follow the public origin of this request.
  mcp.use((req, res, next) => {
    const origin = originOf(req);
    const resourceMetadataUrl = new URL(`/.well-known/oauth-protected-resource${MCP_PATH}`, origin).href;
    const verifier = audienceBound(deps.verifier, publicMcpUrl(origin, MCP_PATH));
    return requireBearerAuth({ verifier, resourceMetadataUrl })(req, res, next);
  });
  mcp.use(express.json({ limit: MAX_MCP_BODY_BYTES, type: () => true }));
  mcp.all("/", (req, res, next) => {
    acceptBothTypes(req);
    const body = req.method === "POST" ? (req.body as unknown) : undefined;
    endpoint.handle(req, res, body).catch(next);
  });
  // Strict routing is off: /mcp and /mcp/ are the same endpoint, never a redirect.
  app.use(MCP_PATH, mcp);

  app.use((error: Error & { type?: string; status?: number }, req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) return void res.destroy();
    if (error.type === "entity.parse.failed") return jsonRpcError(res, 400, -32700, "Parse error: the body is not valid JSON");
    if (error.type === "entity.too.large") return jsonRpcError(res, 413, -32000, "Request body too large");
    deps.logger.error({ err: error, method: req.method, path: req.path }, "request failed");
    jsonRpcError(res, 500, -32603, "Internal error");
  });

  app.use((req, res) => {
    res.status(404).json({ error: "not_found", error_description: `No route for ${req.method} ${req.path}; the MCP endpoint is ${publicMcpUrl(originOf(req)).href}` });
  });
  return app;
}
