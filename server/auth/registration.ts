// Dynamic client registration (RFC 7591) is open to anyone on the internet, so what a
// registration may contain is bounded here, before the SDK's handler parses and stores it:
// the body's size, how many redirect URIs and how long each field, and which redirect URIs.
import { isIP } from "node:net";
import cors from "cors";
import express, { type NextFunction, type Request, type RequestHandler, type Response } from "express";
import { CustomOAuthError, InvalidClientMetadataError, TemporarilyUnavailableError, type OAuthError } from "@modelcontextprotocol/sdk/server/auth/errors.js";

// Real registrations (Claude, ChatGPT, Claude Code, MCP Inspector, Cursor) are 200-600 bytes;
// 8 KB leaves room for an inline JWKS while keeping every stored client small.
export const MAX_REGISTRATION_BYTES = 8 * 1024;
export const MAX_REDIRECT_URIS = 10;
export const MAX_URI_LENGTH = 2_000;
// Shown on the login page, so short.
export const MAX_CLIENT_NAME_LENGTH = 200;
const MAX_STRING_LENGTH = 2_000;
const MAX_LIST_ITEMS = 10;

/**
 * Schemes never accepted as a redirect: they run in the browser or name local files, or are
 * plain-text transports. Plain http is allowed for loopback hosts only (RFC 8252 §7.3).
 */
const REFUSED_SCHEMES = new Set(["javascript:", "data:", "vbscript:", "file:", "blob:", "about:", "filesystem:", "view-source:", "ftp:", "ws:", "wss:"]);

export function invalidRedirectUri(description: string): OAuthError {
  return new CustomOAuthError("invalid_redirect_uri", description);
}

export function isLoopbackHost(hostname: string): boolean {
  if (hostname === "localhost" || hostname === "[::1]") return true;
  // The URL parser has already normalised 127.1, 0x7f.0.0.1 etc. to dotted decimal.
  return isIP(hostname) === 4 && hostname.startsWith("127.");
}

/**
 * Why this redirect URI is refused, or undefined when it is acceptable:
 * - https, without userinfo or fragment: hosted clients (claude.ai, chatgpt.com, vscode.dev);
 * - http only to a loopback host (localhost, 127.0.0.0/8, [::1]): Claude Code, MCP Inspector;
 * - a private-use scheme of a native app (RFC 8252 §7.1), e.g. cursor://… or com.example.app:/cb.
 *   Allowed because native clients (Cursor) register them; PKCE, which is mandatory here, means an
 *   app that intercepts the code cannot redeem it. Schemes that execute or read files are refused.
 */
export function redirectUriProblem(uri: unknown): string | undefined {
  if (typeof uri !== "string") return "must be a string";
  if (uri.length > MAX_URI_LENGTH) return `is longer than ${MAX_URI_LENGTH} characters`;
  // The URL parser would silently drop tabs and newlines; the registered string must be the one used.
  if (/[\u0000-\u0020\u007f]/.test(uri)) return "contains whitespace or control characters";
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return "is not an absolute URI";
  }
  if (uri.includes("#")) return "has a fragment (RFC 6749 §3.1.2)";
  // Also catches an empty userinfo ("https://@host"), which the URL parser erases.
  if (url.username || url.password || /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(uri)) return "has userinfo (user:password@)";
  if (REFUSED_SCHEMES.has(url.protocol)) return `uses the ${url.protocol} scheme`;
  if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
    return "uses plain http for a host other than localhost, 127.0.0.1 or [::1]; use https";
  }
  return undefined;
}

/** Where a redirect URI sends the browser: this machine, an app's own scheme, or a web host. */
function redirectKind(uri: string): "loopback" | "app" | "web" {
  const url = new URL(uri);
  if (url.protocol !== "http:" && url.protocol !== "https:") return "app";
  return isLoopbackHost(url.hostname) ? "loopback" : "web";
}

/**
 * OpenID Connect Registration's application_type, as MCP 2026-07-28 asks clients to send it:
 * `native` (desktop and CLI apps: loopback or private-scheme redirects, RFC 8252) or `web`
 * (hosted clients: https redirects on their own host). A registration without it is an older
 * client's and is accepted as it is; one that names a type its redirect URIs contradict is refused,
 * as an OIDC server would, with the type that would fit.
 */
export function applicationTypeProblem(metadata: Record<string, unknown>): OAuthError | undefined {
  const type = metadata.application_type;
  if (type === undefined) return undefined;
  if (type !== "native" && type !== "web") {
    return new InvalidClientMetadataError(`application_type must be "native" or "web", not ${JSON.stringify(String(type).slice(0, 40))}`);
  }
  const uris = Array.isArray(metadata.redirect_uris) ? metadata.redirect_uris.filter((u): u is string => typeof u === "string") : [];
  for (const uri of uris) {
    const kind = redirectKind(uri);
    if (type === "native" && kind === "web") {
      return invalidRedirectUri(`application_type "native" is for redirects to this machine or an app's own scheme, but ${JSON.stringify(uri.slice(0, 100))} is a web address: register as application_type "web"`);
    }
    if (type === "web" && kind !== "web") {
      const where = kind === "loopback" ? "is on this machine (loopback)" : "is an app's own scheme";
      return invalidRedirectUri(`application_type "web" is for https redirects on the client's own host, but ${JSON.stringify(uri.slice(0, 100))} ${where}: register as application_type "native"`);
    }
  }
  return undefined;
}

function stringProblem(name: string, value: unknown, max: number): string | undefined {
  if (typeof value === "string" && value.length > max) return `${name} is longer than ${max} characters`;
  if (Array.isArray(value)) {
    if (value.length > MAX_LIST_ITEMS) return `${name} has more than ${MAX_LIST_ITEMS} entries`;
    for (const item of value) if (typeof item === "string" && item.length > max) return `${name} has an entry longer than ${max} characters`;
  }
  return undefined;
}

/** The first reason to refuse this registration body (as parsed JSON), as an RFC 7591 error. */
export function registrationProblem(body: unknown): OAuthError | undefined {
  // Shape errors (not an object, redirect_uris missing) are left to the SDK's schema.
  if (typeof body !== "object" || body === null || Array.isArray(body)) return undefined;
  const metadata = body as Record<string, unknown>;
  const uris = metadata.redirect_uris;
  if (Array.isArray(uris)) {
    if (uris.length > MAX_REDIRECT_URIS) return invalidRedirectUri(`redirect_uris may list at most ${MAX_REDIRECT_URIS} URIs`);
    for (const uri of uris) {
      const problem = redirectUriProblem(uri);
      if (problem) return invalidRedirectUri(`redirect_uris: ${JSON.stringify(String(uri).slice(0, 100))} ${problem}`);
    }
  }
  const typeProblem = applicationTypeProblem(metadata);
  if (typeProblem) return typeProblem;
  for (const [name, value] of Object.entries(metadata)) {
    if (name === "redirect_uris" || name === "jwks") continue; // checked above; jwks is bounded by the body size
    const problem = stringProblem(name, value, name === "client_name" ? MAX_CLIENT_NAME_LENGTH : MAX_STRING_LENGTH);
    if (problem) return new InvalidClientMetadataError(problem);
  }
  return undefined;
}

function sendError(res: Response, status: number, error: OAuthError): void {
  res.status(status).set("Cache-Control", "no-store").json(error.toResponseObject());
}

export interface RegistrationGuardOptions {
  /** Registered clients at most; checked before the SDK's handler so the refusal can be a 503. */
  maxClients: number;
  /** Whether another client fits (after forgetting unused ones). */
  hasRoomForClient: () => boolean;
}

/**
 * Mounted before the SDK's clientRegistrationHandler on /register. It parses the JSON itself
 * with a small limit (the SDK's own parser, 100 KB, then sees a consumed body and skips).
 */
export function registrationGuard(opts: RegistrationGuardOptions): RequestHandler[] {
  const parse = express.json({ limit: MAX_REGISTRATION_BYTES });
  const parseErrors = (error: Error & { type?: string }, _req: Request, res: Response, next: NextFunction) => {
    if (error.type === "entity.too.large") return sendError(res, 413, new InvalidClientMetadataError(`The registration is too large: at most ${MAX_REGISTRATION_BYTES} bytes`));
    if (error.type === "entity.parse.failed") return sendError(res, 400, new InvalidClientMetadataError("The registration is not valid JSON"));
    next(error);
  };
  const check: RequestHandler = (req, res, next) => {
    if (req.method !== "POST") return next();
    const problem = registrationProblem(req.body);
    if (problem) return sendError(res, 400, problem);
    if (!opts.hasRoomForClient()) {
      res.set("Retry-After", "3600");
      return sendError(res, 503, new TemporarilyUnavailableError(`This server keeps at most ${opts.maxClients} registered clients and has no room for another until unused ones expire; try again later or ask its operator to raise --max-clients`));
    }
    next();
  };
  // cors() as the SDK's handler has it, so a browser client (MCP Inspector) can read these refusals too.
  return [cors(), parse, parseErrors as unknown as RequestHandler, check];
}
