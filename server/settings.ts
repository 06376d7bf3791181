// The Coda MCP server's settings: every flag has an environment variable for containers.
import { defaultsOf, logLevelOption, option, parseChoice, parseHttpUrl, parseInteger, parsePort, UsageError, type Values } from "../common/config.js";
import { createTrustPolicy } from "../common/trust.js";

function parseKeyHex(raw: string, where: string): string {
  if (!/^[0-9a-fA-F]{64}$/.test(raw.trim())) throw new UsageError(`${where} must be 64 hex characters (32 bytes), e.g. from 'openssl rand -hex 32'`);
  return raw.trim();
}

function parseOriginList(raw: string, where: string): string {
  for (const entry of raw.split(",").map((s) => s.trim()).filter(Boolean)) {
    if (entry === "*") continue;
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      throw new UsageError(`${where}: '${entry}' is not an origin such as https://claude.ai`);
    }
    if (url.origin !== entry.replace(/\/$/, "")) throw new UsageError(`${where}: '${entry}' is not an origin (scheme://host[:port], no path)`);
  }
  return raw;
}

const DURATION_UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "90d", "24h", "30m", "45s" → milliseconds. */
export function parseDuration(raw: string, where: string): number {
  const match = /^\s*(\d+)\s*([smhd])\s*$/i.exec(raw);
  const ms = match ? Number(match[1]) * DURATION_UNITS[match[2]!.toLowerCase()]! : NaN;
  if (!match || !Number.isSafeInteger(ms) || ms <= 0) throw new UsageError(`${where} must be a duration such as 90d, 24h, 30m or 45s, got '${raw}'`);
  return ms;
}

// Kept as text so --help shows "24h", not milliseconds; read with parseDuration where used.
function durationText(raw: string, where: string): string {
  parseDuration(raw, where);
  return raw.trim();
}

// The same syntax as the proxy's --trusted-proxies, checked the same way.
function parseProxyList(raw: string, where: string): string {
  try {
    createTrustPolicy(false, raw);
  } catch (error) {
    throw new UsageError(`${where}: ${(error as Error).message.replace(/^--trusted-proxies: /, "")}`);
  }
  return raw;
}

/** The host names a local server always answers (the Host check lets any other through only when listed). */
export const LOOPBACK_HOST_NAMES = ["localhost", "127.0.0.1", "[::1]"] as const;

/** Which MCP protocol eras /mcp serves: both (the default), or one, to reproduce a single-era server. */
export const SERVER_ERAS = ["dual", "modern", "legacy"] as const;
export type ServerEra = (typeof SERVER_ERAS)[number];

export const SERVER_OPTIONS = {
  host: option({
    flag: "host",
    env: "MCP_LENS_SERVER_HOST",
    kind: "string",
    default: "127.0.0.1",
    valueName: "ADDR",
    help: "Address to listen on (0.0.0.0 in a container behind mcp-lens)",
  }),
  port: option({
    flag: "port",
    env: "MCP_LENS_SERVER_PORT",
    kind: "string",
    default: 8081,
    valueName: "PORT",
    help: "Port to listen on",
    parse: parsePort,
  }),
  publicUrl: option({
    flag: "public-url",
    env: "PUBLIC_URL",
    kind: "string",
    default: "",
    valueName: "URL",
    help: "The https origin clients use (e.g. https://coda.example.com); default: from X-Forwarded-Proto/-Host",
    parse: parseHttpUrl,
  }),
  db: option({
    flag: "db",
    env: "MCP_LENS_SERVER_DB",
    kind: "string",
    default: "./data/server.db",
    valueName: "PATH",
    help: "SQLite file for OAuth clients, codes and tokens (hashed; Coda tokens encrypted)",
  }),
  secretKey: option({
    flag: "secret-key",
    env: "MCP_LENS_SERVER_KEY",
    kind: "string",
    default: "",
    valueName: "HEX",
    help: "32-byte hex key that encrypts stored Coda tokens; default: generated once into <db>.key",
    parse: parseKeyHex,
  }),
  codaApiBase: option({
    flag: "coda-api-base",
    env: "CODA_API_BASE",
    kind: "string",
    default: "https://coda.io/apis/v1",
    valueName: "URL",
    help: "Base URL of the Coda REST API",
    parse: parseHttpUrl,
  }),
  allowedOrigins: option({
    flag: "allowed-origins",
    env: "MCP_LENS_ALLOWED_ORIGINS",
    kind: "string",
    default: "https://claude.ai,https://claude.com,https://chatgpt.com",
    valueName: "LIST",
    help: "Browser origins allowed besides the public URL and localhost ('*' for any); requests without Origin always pass",
    parse: parseOriginList,
  }),
  allowedHosts: option({
    flag: "allowed-hosts",
    env: "MCP_LENS_ALLOWED_HOSTS",
    kind: "string",
    default: "",
    valueName: "LIST",
    help: "Host names accepted besides the public URL's and localhost (DNS-rebinding protection: with --public-url or this list, any other Host gets 421)",
  }),
  ignoreForwarded: option({
    flag: "ignore-forwarded",
    env: "MCP_LENS_SERVER_IGNORE_FORWARDED",
    kind: "boolean",
    default: false,
    help: "Do not take the public origin from X-Forwarded-Proto/-Host (when the server is reachable directly)",
  }),
  forwardedForTrust: option({
    flag: "trusted-proxies",
    env: "MCP_LENS_SERVER_TRUSTED_PROXIES",
    kind: "string",
    default: "loopback,private",
    valueName: "LIST",
    help: "Peers whose X-Forwarded-For names the client (for the registration limit): 'loopback', 'private', addresses, CIDRs or 'none'",
    parse: parseProxyList,
  }),
  registrationLimit: option({
    flag: "registration-limit",
    env: "MCP_LENS_SERVER_REGISTRATION_LIMIT",
    kind: "string",
    default: 60,
    valueName: "N",
    help: "Client registrations (POST /register) allowed per client address per hour; 0: no limit",
    parse: parseInteger(0, 1_000_000),
  }),
  maxClients: option({
    flag: "max-clients",
    env: "MCP_LENS_SERVER_MAX_CLIENTS",
    kind: "string",
    default: 2_000,
    valueName: "N",
    help: "Registered OAuth clients kept at most; further registrations get 503 until unused ones expire",
    parse: parseInteger(1, 10_000_000),
  }),
  unauthorizedClientTtl: option({
    flag: "unauthorized-client-ttl",
    env: "MCP_LENS_SERVER_UNAUTHORIZED_CLIENT_TTL",
    kind: "string",
    default: "24h",
    valueName: "DURATION",
    help: "A registered client that has not completed an authorization within this time is forgotten",
    parse: durationText,
  }),
  idleClientTtl: option({
    flag: "idle-client-ttl",
    env: "MCP_LENS_SERVER_IDLE_CLIENT_TTL",
    kind: "string",
    default: "90d",
    valueName: "DURATION",
    help: "A client without live tokens and unused for this long is forgotten; clients with live tokens stay",
    parse: durationText,
  }),
  era: option({
    flag: "era",
    env: "MCP_LENS_SERVER_ERA",
    kind: "string",
    default: "dual" as ServerEra,
    valueName: "ERA",
    help: "MCP eras served at /mcp: dual (2026-07-28 and 2025), modern (2026-07-28 only) or legacy (2025 only)",
    parse: parseChoice(SERVER_ERAS),
  }),
  cimdAllowPrivate: option({
    flag: "cimd-allow-private",
    env: "MCP_LENS_SERVER_CIMD_ALLOW_PRIVATE",
    kind: "boolean",
    default: false,
    help: "Development only: fetch client metadata documents (CIMD) from loopback and private addresses too (still https only)",
  }),
  sseKeepalive: option({
    flag: "sse-keepalive",
    env: "MCP_LENS_SERVER_SSE_KEEPALIVE",
    kind: "string",
    default: "15s",
    valueName: "DURATION",
    help: "A comment on idle 2026-07-28 SSE streams (subscriptions/listen) this often, so proxies do not close them",
    parse: durationText,
  }),
  stateless: option({
    flag: "stateless",
    env: "MCP_LENS_STATELESS",
    kind: "boolean",
    default: false,
    help: "No 2025-era MCP sessions: every request is served on its own (several replicas without sticky sessions; 2026-07-28 is stateless anyway)",
  }),
  jsonResponse: option({
    flag: "json-response",
    env: "MCP_LENS_JSON_RESPONSE",
    kind: "boolean",
    default: false,
    help: "Answer POSTs with JSON instead of SSE streams (proxies that buffer; no progress notifications)",
  }),
  logLevel: logLevelOption(),
};

export type ServerSettings = Values<typeof SERVER_OPTIONS>;

export function serverSettings(overrides: Partial<ServerSettings> = {}): ServerSettings {
  return { ...defaultsOf(SERVER_OPTIONS), ...overrides };
}
