// The Coda MCP server assembled: OAuth store and provider, the Coda tools, the MCP endpoint of
// both eras, HTTP.
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../common/log.js";
import { terminalSafe, terminalSafeLines } from "../common/terminal-safe.js";
import { createApp, MAX_MCP_BODY_BYTES, MCP_PATH, originResolver } from "./app.js";
import { ClientMetadataFetcher } from "./auth/client-metadata-document.js";
import { loadOrCreateServerKey } from "./auth/crypto.js";
import { CodaOAuthProvider } from "./auth/provider.js";
import { createAuthRouter } from "./auth/routes.js";
import { AuthStore } from "./auth/store.js";
import { CodaApiError, CodaClient } from "./coda/client.js";
import { createCodaMcpServer } from "./coda/mcp-server.js";
import type { ClientFor } from "./coda/tools.js";
import { createMcpEndpoint } from "./mcp/endpoint.js";
import { publicMcpUrl } from "./public-url.js";
import { parseDuration, type ServerSettings } from "./settings.js";
import { listen, urlOf } from "../common/listen.js";


export interface RunningCodaServer {
  /** Where it listens, e.g. http://127.0.0.1:8081 */
  url: string;
  port: number;
  close(): Promise<void>;
}

const PRUNE_EVERY_MS = 10 * 60_000;

/** A Coda token is valid when Coda's /whoami accepts it; network trouble is an error, not a verdict. */
function codaTokenValidator(baseUrl: string) {
  return async (token: string): Promise<{ name: string; loginId: string } | null> => {
    try {
      const me = await new CodaClient({ baseUrl, token, maxRetries: 1 }).whoami();
      return { name: me.name, loginId: me.loginId };
    } catch (error) {
      if (error instanceof CodaApiError && (error.status === 401 || error.status === 403)) return null;
      throw error;
    }
  };
}

export async function startCodaServer(settings: ServerSettings, logger: Logger): Promise<RunningCodaServer> {
  const key = loadOrCreateServerKey({ keyHex: settings.secretKey || undefined, keyFile: `${settings.db}.key` });
  const store = new AuthStore(settings.db, {
    clientExpiry: {
      unauthorizedMs: parseDuration(settings.unauthorizedClientTtl, "--unauthorized-client-ttl"),
      idleMs: parseDuration(settings.idleClientTtl, "--idle-client-ttl"),
    },
  });
  // The store also prunes from its writes; this catches a server nobody writes to.
  const pruning = setInterval(() => {
    try {
      const forgotten = store.prune();
      if (forgotten > 0) logger.info({ forgotten }, "forgot OAuth clients nobody uses");
    } catch (error) {
      logger.warn({ err: error }, "pruning the auth database failed");
    }
  }, PRUNE_EVERY_MS);
  pruning.unref();
  const originOf = originResolver(settings);
  const provider = new CodaOAuthProvider({
    store,
    key,
    validateCodaToken: codaTokenValidator(settings.codaApiBase),
    mcpUrlFor: (req) => publicMcpUrl(originOf(req), MCP_PATH),
    maxClients: settings.maxClients,
    clientMetadata: new ClientMetadataFetcher({ allowPrivateAddresses: settings.cimdAllowPrivate }),
  });
  if (settings.cimdAllowPrivate) {
    logger.warn("--cimd-allow-private: client metadata documents may be fetched from loopback and private addresses (development only)");
  }
  const clientFor: ClientFor = ({ authInfo }) => {
    const token = authInfo?.extra?.codaToken;
    if (typeof token !== "string") throw new Error("this request carries no Coda credentials");
    return new CodaClient({ baseUrl: settings.codaApiBase, token });
  };
  const endpoint = createMcpEndpoint({
    era: settings.era,
    createServer: () => createCodaMcpServer(clientFor),
    stateless: settings.stateless,
    jsonResponse: settings.jsonResponse,
    keepAliveMs: parseDuration(settings.sseKeepalive, "--sse-keepalive"),
    maxBodyBytes: MAX_MCP_BODY_BYTES,
    // Both can quote the request (its method, a header): traffic's strings reach a terminal escaped.
    onStatelessFallback: (reason, method) => logger.debug({ reason, method: method && terminalSafe(method) }, "served without a session"),
    onError: (error) =>
      logger.debug({ err: { type: error.name, message: terminalSafe(error.message), stack: error.stack && terminalSafeLines(error.stack) } }, "MCP request refused or failed"),
  });
  const app = createApp({
    settings,
    verifier: provider,
    authRouter: createAuthRouter({
      provider,
      publicOrigin: originOf,
      mcpPath: MCP_PATH,
      registrationLimitPerHour: settings.registrationLimit,
      maxClients: settings.maxClients,
    }),
    endpoint,
    logger,
  });

  const server = http.createServer(app);
  server.requestTimeout = 0; // SSE streams stay open; the client decides when to leave
  let address: AddressInfo;
  try {
    address = await listen(server, settings.port, settings.host);
  } catch (error) {
    clearInterval(pruning);
    store.close();
    const e = error as NodeJS.ErrnoException;
    throw new Error(e.code === "EADDRINUSE" ? `cannot listen: port ${settings.port} is already in use` : `cannot listen: ${e.message}`);
  }
  const url = urlOf(address);
  logger.info({ url, era: settings.era, publicUrl: settings.publicUrl || "(from X-Forwarded-Proto/-Host)", codaApi: settings.codaApiBase }, "Coda MCP server listening");

  let closing: Promise<void> | null = null;
  return {
    url,
    port: address.port,
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        await endpoint.close();
        server.closeAllConnections();
        await closed;
        clearInterval(pruning);
        store.close();
      })();
      return closing;
    },
  };
}
