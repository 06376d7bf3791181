// What /authorize answers, beyond the SDK's handler: the issuer in every authorization response
// (RFC 9207), and clients identified by a metadata document (CIMD) checked before the SDK sees
// them, so that a document that cannot be used is a clear invalid_client, not a generic error.
import type { NextFunction, Request, RequestHandler, Response } from "express";
import { redirectUriMatches } from "@modelcontextprotocol/sdk/server/auth/handlers/authorize.js";
import { InvalidClientError } from "@modelcontextprotocol/sdk/server/auth/errors.js";
import type { OAuthClientInformationFull } from "@modelcontextprotocol/sdk/shared/auth.js";
import { isClientIdUrl } from "./client-metadata-document.js";

/**
 * RFC 9207: `iss` on every authorization response, success and error. The SDK's handler reports
 * errors after the redirect URI is known by redirecting without it, and answers the others
 * (unknown client, bad redirect URI) directly; both are given the issuer here. Mounted first on
 * /authorize, so every answer of the route passes through it. The login form's decision adds
 * `iss` itself (provider.decide).
 */
export function issuerOnAuthorizationResponses(issuerOf: (req: Request) => string): RequestHandler {
  return (req, res, next) => {
    const iss = issuerOf(req);
    const redirect = res.redirect.bind(res) as (status: number, url: string) => void;
    res.redirect = ((statusOrUrl: number | string, maybeUrl?: string) => {
      const [status, url] = typeof statusOrUrl === "number" ? [statusOrUrl, maybeUrl!] : [302, statusOrUrl];
      redirect(status, withResponseParameters(url, iss, requestState(req)));
    }) as Response["redirect"];
    const json = res.json.bind(res);
    res.json = ((body: unknown) => json(isErrorObject(body) ? { ...body, iss } : body)) as Response["json"];
    next();
  };
}

/**
 * The issuer, and the request's `state` on an error the SDK reports before it has read `state`
 * (a request without code_challenge fails its schema as a whole): a client checks state on errors too.
 */
function withResponseParameters(location: string, iss: string, state: string | undefined): string {
  const url = new URL(location);
  if (state !== undefined && url.searchParams.has("error") && !url.searchParams.has("state")) url.searchParams.set("state", state);
  if (!url.searchParams.has("iss")) url.searchParams.set("iss", iss);
  return url.href;
}

/** An authorization request's parameters: the form of a POST, else the query. */
export function authorizationParams(req: Request): Record<string, unknown> | undefined {
  return (req.method === "POST" ? req.body : req.query) as Record<string, unknown> | undefined;
}

/** The request's state (bounded before this runs: refuseOversizedState). */
function requestState(req: Request): string | undefined {
  const state = authorizationParams(req)?.state;
  return typeof state === "string" ? state : undefined;
}

function isErrorObject(body: unknown): body is Record<string, unknown> {
  return typeof body === "object" && body !== null && !Array.isArray(body) && typeof (body as Record<string, unknown>).error === "string";
}

export interface MetadataDocumentClients {
  /** The client a metadata document describes; throws InvalidClientError when it cannot be used. */
  getClient(clientId: string): Promise<OAuthClientInformationFull | undefined>;
  /** Runs the rest of the request with that client: the SDK's handler looks it up again. */
  withCheckedClient(client: OAuthClientInformationFull, next: () => void): void;
}

/**
 * For a URL client_id, fetches and checks its metadata document, then the redirect URI against the
 * document's list, answering 400 invalid_client naming what failed. The SDK's handler then gets
 * the same document without fetching it again. Other client ids pass untouched.
 */
export function metadataDocumentClientCheck(clients: MetadataDocumentClients): RequestHandler {
  return async (req: Request, res: Response, next: NextFunction) => {
    const params = authorizationParams(req);
    const clientId = params?.client_id;
    if (typeof clientId !== "string" || !isClientIdUrl(clientId)) return next();
    try {
      const client = await clients.getClient(clientId);
      const redirectUri = params?.redirect_uri;
      if (client && typeof redirectUri === "string" && !client.redirect_uris.some((listed) => redirectUriMatches(redirectUri, listed))) {
        throw new InvalidClientError(
          `The redirect URI ${JSON.stringify(redirectUri.slice(0, 200))} is not among the redirect_uris of the client metadata document ${clientId}`,
        );
      }
      if (client) clients.withCheckedClient(client, next);
      else next();
    } catch (error) {
      if (!(error instanceof InvalidClientError)) return next(error);
      res.status(400).set("Cache-Control", "no-store").json(error.toResponseObject());
    }
  };
}
