// OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document-00, required by
// MCP 2026-07-28): a client_id that is an https URL names a JSON document describing the client,
// fetched by us on demand. Anyone can send us to any URL through /authorize, so the fetch is the
// dangerous part (SSRF): https only, every connected address public, small, quick, and cached.
import dns from "node:dns";
import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import https from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import tls from "node:tls";
import { normalizeAddress } from "../../common/trust.js";
import { MAX_CLIENT_NAME_LENGTH, MAX_REDIRECT_URIS, MAX_URI_LENGTH, redirectUriProblem } from "./registration.js";

const MAX_STRING_LENGTH = 2_000;
const MAX_LIST_ITEMS = 10;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

const NON_PUBLIC_IPV4: Array<[string, number]> = [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.0.2.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["198.51.100.0", 24],
  ["203.0.113.0", 24], ["224.0.0.0", 4], ["240.0.0.0", 4],
];
const NON_PUBLIC_IPV6: Array<[string, number]> = [
  // ::/96 holds :: and ::1 and the deprecated IPv4-compatible form (::10.0.0.1), which must not slip past.
  ["::", 96], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8], ["2001:db8::", 32], ["64:ff9b::", 96],
];
const NON_PUBLIC = new BlockList();
for (const [net, prefix] of NON_PUBLIC_IPV4) {
  NON_PUBLIC.addSubnet(net, prefix, "ipv4");
  // IPv4-mapped IPv6 (::ffff:10.0.0.1, or ::ffff:a00:1 as the URL parser writes it) reaches the same host.
  NON_PUBLIC.addSubnet(`::ffff:${net}`, 96 + prefix, "ipv6");
}
for (const [net, prefix] of NON_PUBLIC_IPV6) NON_PUBLIC.addSubnet(net, prefix, "ipv6");

/** True for an IP address we may connect to on a stranger's behalf: not loopback, private, link-local, reserved or documentation. */
export function isPublicAddress(address: string): boolean {
  const normalized = normalizeAddress(address.replace(/^\[(.*)\]$/, "$1"));
  const family = isIP(normalized);
  if (family === 0) return false;
  return !NON_PUBLIC.check(normalized, family === 4 ? "ipv4" : "ipv6");
}

/** True for a client_id that names a metadata document: https, a host, a path other than "/", no fragment, no userinfo, no dot segments. */
export function isClientIdUrl(clientId: string): boolean {
  // The checks read the raw string: the URL parser silently removes dot segments (also %2e%2e),
  // turns "\" into "/", drops an empty "@" and invents a host for "https:///x".
  if (clientId.length > MAX_URI_LENGTH || /[\u0000-\u0020\u007f\\#]/.test(clientId)) return false;
  const parts = /^https:\/\/([^/?]+)(\/[^?]*)/i.exec(clientId);
  if (!parts) return false;
  const [, authority = "", path = ""] = parts;
  if (authority.includes("@") || path === "/") return false;
  if (path.split("/").some((segment) => /^(?:\.|%2e){1,2}$/i.test(segment))) return false;
  try {
    return new URL(clientId).hostname !== "";
  } catch {
    return false;
  }
}

/** A usable document, normalised: only the fields this server reads, and always a public client. */
export interface ClientMetadataDocument {
  client_id: string; client_name: string; redirect_uris: string[];
  token_endpoint_auth_method: "none";
  client_uri?: string; logo_uri?: string; grant_types?: string[]; response_types?: string[]; scope?: string;
}

/** Why a document cannot be used; `message` is the error_description for an invalid_client answer: one clear sentence naming the URL and the reason. */
export class ClientMetadataError extends Error {
  override name = "ClientMetadataError";
}

export interface ClientMetadataFetcherOptions {
  /** Development only: allow documents on loopback and private addresses (never plain http). */
  allowPrivateAddresses?: boolean;
  maxBytes?: number; // default 5 * 1024 (the draft's recommendation)
  timeoutMs?: number; // default 5000, for the whole fetch including redirects
  maxRedirects?: number; // default 3
  maxCacheEntries?: number; // default 500
  maxCacheSeconds?: number; // default 86400 (cap on max-age)
  /** Default 30: a failed fetch is remembered briefly so /authorize floods do not make us fetch a victim URL repeatedly. */
  failureCacheSeconds?: number;
  /** Default 16: fetches under way at once; beyond, a new URL is refused at once (a flood of /authorize with fresh URLs). */
  maxConcurrentFetches?: number;
  /** Extra trusted CA certificates (PEM), for tests and private PKI; the system CAs stay trusted. */
  ca?: string | string[];
  now?: () => number; // epoch ms
}

/** A value from the (hostile) document, short and escaped, fit for an error_description. */
function quote(value: string): string {
  const shown = value.length > 100 ? `${value.slice(0, 100)}…` : value;
  return JSON.stringify(shown).replace(/[^\u0020-\u007e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function isJsonContentType(header: string | undefined): boolean {
  const type = (header ?? "").split(";")[0]!.trim().toLowerCase();
  return /^application\/(?:[a-z0-9.!#$&^_-]+\+)?json$/.test(type);
}

/**
 * How long a response may be reused by a private cache (RFC 9111 §4.2.1), in seconds, capped.
 * 0 means "do not cache"; so is anything we cannot read, since serving a stale client is worse than a refetch.
 */
export function freshnessSeconds(headers: IncomingHttpHeaders, nowMs: number, capSeconds: number): number {
  const directives = (headers["cache-control"] ?? "").toLowerCase().split(",").map((d) => d.trim());
  if (directives.some((d) => d === "no-store" || d === "no-cache")) return 0;
  const age = Number(headers.age ?? 0) || 0;
  const maxAge = directives.find((d) => d.startsWith("max-age="));
  let lifetime = 0;
  if (maxAge !== undefined) lifetime = /^max-age=\d+$/.test(maxAge) ? Number(maxAge.slice(8)) : 0;
  else if (headers.expires !== undefined) {
    const origin = headers.date !== undefined ? Date.parse(headers.date) : nowMs;
    lifetime = (Date.parse(headers.expires) - (Number.isNaN(origin) ? nowMs : origin)) / 1000;
  }
  const seconds = Math.min(lifetime - age, capSeconds);
  return Number.isFinite(seconds) && seconds > 0 ? seconds : 0;
}

function optionalString(doc: Record<string, unknown>, name: string, fail: (reason: string) => never): string | undefined {
  const value = doc[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string") return fail(`has a ${name} that is not a string`);
  if (value.length > MAX_STRING_LENGTH) return fail(`has a ${name} longer than ${MAX_STRING_LENGTH} characters`);
  // The login page may show these as links or images: only https, never javascript: or data:.
  if ((name === "client_uri" || name === "logo_uri") && !/^https:\/\/[^\s]+$/i.test(value)) return fail(`has a ${name} ${quote(value)} that is not an https URL`);
  return value;
}

function optionalList(doc: Record<string, unknown>, name: string, fail: (reason: string) => never): string[] | undefined {
  const value = doc[name];
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.some((item) => typeof item !== "string" || item.length > MAX_STRING_LENGTH) || value.length > MAX_LIST_ITEMS) {
    return fail(`has a ${name} that is not a list of at most ${MAX_LIST_ITEMS} short strings`);
  }
  return [...(value as string[])];
}

/** The document as the rest of the server may use it, or a ClientMetadataError saying what is wrong. */
export function validateClientMetadata(clientId: string, body: unknown): ClientMetadataDocument {
  const problem = (reason: string) => new ClientMetadataError(`The client metadata document ${clientId} ${reason}`);
  const fail = (reason: string): never => {
    throw problem(reason);
  };
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw problem("is not a JSON object");
  const doc = body as Record<string, unknown>;
  // Simple string comparison (draft §4.1): the document speaks only for the URL it was fetched from.
  if (typeof doc.client_id !== "string") throw problem("has no client_id; it must name its own URL");
  if (doc.client_id !== clientId) throw problem(`names client_id ${quote(doc.client_id)}; it must name its own URL`);
  const clientName = doc.client_name;
  if (typeof clientName !== "string" || clientName.trim() === "") throw problem("has no client_name");
  if (clientName.length > MAX_CLIENT_NAME_LENGTH) throw problem(`has a client_name longer than ${MAX_CLIENT_NAME_LENGTH} characters`);

  const uris: unknown = doc.redirect_uris;
  if (!Array.isArray(uris) || uris.length === 0) throw problem("lists no redirect_uris");
  if (uris.length > MAX_REDIRECT_URIS) throw problem(`lists more than ${MAX_REDIRECT_URIS} redirect_uris`);
  const redirectUris: string[] = [];
  for (const uri of uris) {
    if (typeof uri !== "string") throw problem("has a redirect_uri that is not a string");
    const uriProblem = redirectUriProblem(uri);
    if (uriProblem) throw problem(`has a redirect_uri ${quote(uri)} that ${uriProblem}`);
    redirectUris.push(uri);
  }

  // The document is public, so the client it describes has no secret to keep: it is a public client (PKCE).
  const method = doc.token_endpoint_auth_method;
  if (typeof method === "string" && method.startsWith("client_secret_")) throw problem(`asks for ${quote(method)}, but a metadata document cannot use a shared secret`);
  if (method === "private_key_jwt") throw problem(`asks for "private_key_jwt", which this server does not support; use "none"`);
  if (method !== undefined && method !== "none") throw problem(`has an unknown token_endpoint_auth_method; use "none"`);
  if ("client_secret" in doc || "client_secret_expires_at" in doc) throw problem("contains a client_secret, but a metadata document cannot use a shared secret");

  const document: ClientMetadataDocument = { client_id: clientId, client_name: clientName, redirect_uris: redirectUris, token_endpoint_auth_method: "none" };
  for (const name of ["client_uri", "logo_uri", "scope"] as const) {
    const value = optionalString(doc, name, fail);
    if (value !== undefined) document[name] = value;
  }
  for (const name of ["grant_types", "response_types"] as const) {
    const value = optionalList(doc, name, fail);
    if (value !== undefined) document[name] = value;
  }
  return document;
}

interface CacheEntry {
  expiresAt: number;
  result: { document: ClientMetadataDocument } | { error: ClientMetadataError };
}

interface Fetched {
  body: unknown;
  headers: IncomingHttpHeaders;
}

export class ClientMetadataFetcher {
  private readonly settings: Required<Omit<ClientMetadataFetcherOptions, "ca">> & { ca: string[] | undefined };
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inFlight = new Map<string, Promise<ClientMetadataDocument>>();

  constructor(options: ClientMetadataFetcherOptions = {}) {
    // Node's `ca` option replaces the bundled roots rather than adding to them.
    const extraCa = options.ca === undefined ? [] : [options.ca].flat();
    this.settings = {
      allowPrivateAddresses: options.allowPrivateAddresses ?? false,
      maxBytes: options.maxBytes ?? 5 * 1024,
      timeoutMs: options.timeoutMs ?? 5_000,
      maxRedirects: options.maxRedirects ?? 3,
      maxCacheEntries: options.maxCacheEntries ?? 500,
      maxCacheSeconds: options.maxCacheSeconds ?? 86_400,
      failureCacheSeconds: options.failureCacheSeconds ?? 30,
      maxConcurrentFetches: options.maxConcurrentFetches ?? 16,
      ca: extraCa.length > 0 ? [...tls.rootCertificates, ...extraCa] : undefined,
      now: options.now ?? Date.now,
    };
  }

  /** The validated document for this client_id URL, from the cache while it is fresh; throws ClientMetadataError. Concurrent calls for one URL share one fetch. */
  async resolve(clientId: string): Promise<ClientMetadataDocument> {
    if (!isClientIdUrl(clientId)) {
      throw new ClientMetadataError(`The client_id ${quote(clientId)} is not an https URL with a path, so it cannot name a client metadata document`);
    }
    const cached = this.cache.get(clientId);
    if (cached && cached.expiresAt > this.settings.now()) {
      if ("error" in cached.result) throw cached.result.error;
      return cached.result.document;
    }
    if (cached) this.cache.delete(clientId);
    let pending = this.inFlight.get(clientId);
    if (!pending && this.inFlight.size >= this.settings.maxConcurrentFetches) {
      // Not remembered: the document may be fine, the server is only busy.
      throw new ClientMetadataError(`Could not fetch the client metadata document ${clientId}: ${this.inFlight.size} other documents are being fetched; try again in a moment`);
    }
    if (!pending) {
      pending = this.fetchAndRemember(clientId).finally(() => this.inFlight.delete(clientId));
      this.inFlight.set(clientId, pending);
    }
    return pending;
  }

  private async fetchAndRemember(clientId: string): Promise<ClientMetadataDocument> {
    try {
      const { body, headers } = await this.fetchWithDeadline(clientId);
      const document = validateClientMetadata(clientId, body);
      const seconds = freshnessSeconds(headers, this.settings.now(), this.settings.maxCacheSeconds);
      if (seconds > 0) this.remember(clientId, { expiresAt: this.settings.now() + seconds * 1000, result: { document } });
      return document;
    } catch (cause) {
      const error = cause instanceof ClientMetadataError ? cause : new ClientMetadataError(`Could not fetch the client metadata document ${clientId}: ${String(cause)}`);
      // Remembered briefly so a flood of /authorize requests cannot turn us into a fetcher of someone else's URL.
      if (this.settings.failureCacheSeconds > 0) this.remember(clientId, { expiresAt: this.settings.now() + this.settings.failureCacheSeconds * 1000, result: { error } });
      throw error;
    }
  }

  private remember(clientId: string, entry: CacheEntry): void {
    if (this.settings.maxCacheEntries <= 0) return;
    this.cache.delete(clientId);
    // A Map iterates in insertion order, so the first key is the oldest entry.
    while (this.cache.size >= this.settings.maxCacheEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(clientId, entry);
  }

  /** One deadline for the whole exchange (connect, headers, body, redirects); on expiry every socket is destroyed. */
  private async fetchWithDeadline(clientId: string): Promise<Fetched> {
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new ClientMetadataError(`Could not fetch the client metadata document ${clientId}: timed out after ${this.settings.timeoutMs} ms`));
        controller.abort();
      }, this.settings.timeoutMs);
    });
    try {
      return await Promise.race([this.fetchFollowingRedirects(clientId, controller.signal), timedOut]);
    } finally {
      clearTimeout(timer);
      controller.abort(); // also ends a request still running after an error elsewhere
    }
  }

  private async fetchFollowingRedirects(clientId: string, signal: AbortSignal): Promise<Fetched> {
    const fail = (reason: string) => new ClientMetadataError(`Could not fetch the client metadata document ${clientId}: ${reason}`);
    let url = new URL(clientId);
    for (let redirects = 0; ; redirects++) {
      const hop = redirects === 0 ? "it" : `its redirect to ${quote(url.href)}`;
      const response = await this.get(url, signal, hop, fail);
      const status = response.statusCode ?? 0;
      if (REDIRECT_STATUSES.has(status)) {
        response.destroy();
        if (redirects >= this.settings.maxRedirects) throw fail(`more than ${this.settings.maxRedirects} redirects`);
        const location = response.headers.location;
        const next = location && URL.canParse(location, url) ? new URL(location, url) : undefined;
        if (!next) throw fail(`HTTP ${status} without a usable Location`);
        if (next.protocol !== "https:") throw fail(`it redirects to ${quote(next.href)}, which is not https`);
        url = next;
        continue;
      }
      const type = response.headers["content-type"];
      const refused = status !== 200 ? `HTTP ${status}` : isJsonContentType(type) ? undefined : `its Content-Type is ${quote(type ?? "missing")}, not application/json`;
      if (refused) {
        response.destroy();
        throw fail(refused);
      }
      const text = await this.readBody(response, fail);
      try {
        return { body: JSON.parse(text) as unknown, headers: response.headers };
      } catch {
        throw fail("it is not valid JSON");
      }
    }
  }

  /** One GET, connected only to an address that was checked (the lookup below, or the IP literal itself). */
  private get(url: URL, signal: AbortSignal, hop: string, fail: (reason: string) => ClientMetadataError): Promise<IncomingMessage> {
    const refusal = (address: string) => fail(`${hop} resolves to ${address}, a private or loopback address`);
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    if (isIP(host) && !this.settings.allowPrivateAddresses && !isPublicAddress(host)) return Promise.reject(refusal(host));
    const lookup: LookupFunction = (hostname, options, callback) => {
      dns.lookup(hostname, { all: true, family: options.family, hints: options.hints }, (error, addresses) => {
        if (error) return callback(error, []);
        const refused = this.settings.allowPrivateAddresses ? undefined : addresses.find((a) => !isPublicAddress(a.address));
        if (refused) return callback(refusal(refused.address), []);
        if (options.all) return callback(null, addresses);
        const first = addresses[0];
        if (!first) return callback(Object.assign(new Error(`${hostname} has no address`), { code: "ENOTFOUND" }), []);
        callback(null, first.address, first.family);
      });
    };
    return new Promise((resolve, reject) => {
      const request = https.request(url, {
        agent: false, // a fresh connection each time: no pooled socket skips the address check
        ca: this.settings.ca,
        lookup,
        signal,
        headers: { accept: "application/json", "accept-encoding": "identity", "user-agent": "mcp-lens (client metadata document fetcher)" },
      });
      request.on("response", resolve);
      request.on("error", (error: NodeJS.ErrnoException) => reject(error instanceof ClientMetadataError ? error : fail(`the connection failed (${error.code ?? error.message})`)));
      request.end();
    });
  }

  /** The body as text, refusing (and closing the connection) as soon as it passes maxBytes. */
  private readBody(response: IncomingMessage, fail: (reason: string) => ClientMetadataError): Promise<string> {
    const tooLarge = () => fail(`it is larger than ${this.settings.maxBytes} bytes`);
    return new Promise((resolve, reject) => {
      if (Number(response.headers["content-length"]) > this.settings.maxBytes) {
        response.destroy();
        return reject(tooLarge());
      }
      const chunks: Buffer[] = [];
      let size = 0;
      response.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > this.settings.maxBytes) {
          response.destroy();
          return reject(tooLarge());
        }
        chunks.push(chunk);
      });
      const cutShort = () => reject(fail("the connection closed before the document was complete"));
      response.on("end", () => resolve(Buffer.concat(chunks).toString("utf8"))).on("error", cutShort).on("close", cutShort);
    });
  }
}
