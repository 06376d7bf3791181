// The proxy's settings: every flag has an environment variable for containers.
import {
  defaultsOf,
  option,
  parseChoice,
  parseHttpUrl,
  parseInteger,
  parsePort,
  parseSize,
  type Values,
} from "./config.js";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** --log-level, shared by every command. */
export function logLevelOption(note = "") {
  return option({
    flag: "log-level",
    env: "MCP_LENS_LOG_LEVEL",
    kind: "string",
    default: "info" as (typeof LOG_LEVELS)[number],
    valueName: "LEVEL",
    help: `Log level: ${LOG_LEVELS.join(", ")}${note}`,
    parse: parseChoice(LOG_LEVELS),
  });
}

export const PROXY_OPTIONS = {
  upstream: option({
    flag: "upstream",
    env: "MCP_LENS_UPSTREAM",
    kind: "string",
    default: "http://127.0.0.1:8081",
    valueName: "URL",
    help: "MCP server to forward to",
    parse: parseHttpUrl,
  }),
  host: option({
    flag: "host",
    env: "MCP_LENS_HOST",
    kind: "string",
    default: "0.0.0.0",
    valueName: "ADDR",
    help: "Address the public (proxied) port listens on",
  }),
  port: option({
    flag: "port",
    env: "MCP_LENS_PORT",
    kind: "string",
    default: 8080,
    valueName: "PORT",
    help: "Public port: point nginx / the tunnel here",
    parse: parsePort,
  }),
  adminHost: option({
    flag: "admin-host",
    env: "MCP_LENS_ADMIN_HOST",
    kind: "string",
    default: "127.0.0.1",
    valueName: "ADDR",
    help: "Address of the admin port; keep it private",
  }),
  adminPort: option({
    flag: "admin-port",
    env: "MCP_LENS_ADMIN_PORT",
    kind: "string",
    default: 9464,
    valueName: "PORT",
    help: "Admin port: /health, /metrics, WebSocket /live",
    parse: parsePort,
  }),
  adminToken: option({
    flag: "admin-token",
    env: "MCP_LENS_ADMIN_TOKEN",
    kind: "string",
    default: "",
    valueName: "TOKEN",
    help: "Require this bearer token for /metrics and /live (/health stays open for health checks)",
  }),
  db: option({
    flag: "db",
    env: "MCP_LENS_DB",
    kind: "string",
    default: "./data/mcp-lens.db",
    valueName: "PATH",
    help: "SQLite file for recorded exchanges (its directory is created when its parent exists)",
  }),
  trustProxy: option({
    flag: "trust-proxy",
    env: "MCP_LENS_TRUST_PROXY",
    kind: "boolean",
    default: false,
    help: "Trust X-Forwarded-For/-Proto/-Host from any peer (mcp-lens reachable only from your front proxy)",
  }),
  trustedProxies: option({
    flag: "trusted-proxies",
    env: "MCP_LENS_TRUSTED_PROXIES",
    kind: "string",
    default: "loopback,private",
    valueName: "LIST",
    help: "Peers whose X-Forwarded-* headers are kept: addresses, CIDRs, 'loopback', 'private' or 'none'",
  }),
  maxBody: option({
    flag: "max-body",
    env: "MCP_LENS_MAX_BODY",
    kind: "string",
    default: 64 * 1024,
    valueName: "SIZE",
    help: "Bytes of each request and response body to record (forwarding is never capped)",
    parse: parseSize,
  }),
  upstreamTimeout: option({
    flag: "upstream-timeout",
    env: "MCP_LENS_UPSTREAM_TIMEOUT",
    kind: "string",
    default: 120_000,
    valueName: "MS",
    help: "Milliseconds to wait for the upstream's response headers before answering 504 (streams are never cut)",
    parse: parseInteger(1, 3_600_000),
  }),
  headerTimeout: option({
    flag: "header-timeout",
    env: "MCP_LENS_HEADER_TIMEOUT",
    kind: "string",
    default: 60_000,
    valueName: "MS",
    help: "Milliseconds a client may take to send its request headers before 408 (slow-header attacks)",
    parse: parseInteger(1, 600_000),
  }),
  retentionDays: option({
    flag: "retention-days",
    env: "MCP_LENS_RETENTION_DAYS",
    kind: "string",
    default: 14,
    valueName: "DAYS",
    help: "Prune recorded exchanges older than this",
    parse: parseInteger(1, 3650),
  }),
  retentionRows: option({
    flag: "retention-rows",
    env: "MCP_LENS_RETENTION_ROWS",
    kind: "string",
    default: 1_000_000,
    valueName: "ROWS",
    help: "Prune the oldest exchanges beyond this many",
    parse: parseInteger(1, 1_000_000_000),
  }),
  dbMaxSize: option({
    flag: "db-max-size",
    env: "MCP_LENS_DB_MAX_SIZE",
    kind: "string",
    default: 0,
    valueName: "SIZE",
    help: "Cap the database file size (e.g. 512m); 0 = no cap. When full, the oldest records make room",
    parse: parseSize,
  }),
  flushInterval: option({
    flag: "flush-interval",
    env: "MCP_LENS_FLUSH_INTERVAL",
    kind: "string",
    default: 100,
    valueName: "MS",
    help: "Milliseconds between batched writes (at most this much is lost on a crash)",
    parse: parseInteger(5, 60_000),
  }),
  maxQueue: option({
    flag: "max-queue",
    env: "MCP_LENS_MAX_QUEUE",
    kind: "string",
    default: 10_000,
    valueName: "COUNT",
    help: "Exchanges held in memory while the DB cannot be written; beyond it they are dropped and counted",
    parse: parseInteger(1, 1_000_000),
  }),
  shutdownTimeout: option({
    flag: "shutdown-timeout",
    env: "MCP_LENS_SHUTDOWN_TIMEOUT",
    kind: "string",
    default: 10_000,
    valueName: "MS",
    help: "On SIGTERM, how long in-flight requests may take to finish",
    parse: parseInteger(0, 600_000),
  }),
  logLevel: logLevelOption("; one JSON line per exchange at info"),
};

export type ProxySettings = Values<typeof PROXY_OPTIONS>;

/** Settings as a program (tests, `start`) would write them: everything but the essentials defaulted. */
export function proxySettings(overrides: Partial<ProxySettings> = {}): ProxySettings {
  return { ...defaultsOf(PROXY_OPTIONS), ...overrides };
}
