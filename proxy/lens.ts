// mcp-lens assembled. The request path, forward → capture → hand-over, runs on the public port
// (forward/); the record pipeline, decode + redact (../recording/) → classify → handshakes →
// diagnose (../analysis/) → store (../store/) and the traffic metrics, in its own thread
// (record/recorder.ts); the process metrics, the live feed and the admin port here (admin/).
import http from "node:http";
import type { AddressInfo } from "node:net";
import { adminAccess } from "./admin/admin-access.js";
import { createAdminServer } from "./admin/admin.js";
import { UsageError } from "../common/config.js";
import { createForwarder } from "./forward/forward.js";
import { listen, urlOf } from "../common/listen.js";
import { LiveFeed } from "./admin/live.js";
import type { Logger } from "../common/log.js";
import { LensMetrics } from "./admin/metrics.js";
import { Recorder, recorderConfig } from "./record/recorder.js";
import type { ProxySettings } from "./settings.js";
import { openProxyStore } from "../store/proxy-store.js";
import { createTrustPolicy } from "../common/trust.js";
import { shownDatabase, withoutPassword } from "../common/database-location.js";
import { VERSION } from "../common/version.js";

export interface Lens {
  /** Where clients reach the proxy, e.g. http://127.0.0.1:8080 */
  url: string;
  adminUrl: string;
  recorder: Recorder;
  /** Graceful stop: stop accepting, drain, flush every record, close the DB. */
  close(): Promise<void>;
}

/** Cross-option checks parseOptions cannot make: one line, like any other usage error. */
function checkSettings(settings: ProxySettings): void {
  // Node refuses a headersTimeout above requestTimeout; say it in the operator's terms.
  if (settings.requestTimeout > 0 && settings.requestTimeout < settings.headerTimeout) {
    throw new UsageError(`--request-timeout (${settings.requestTimeout} ms) must be 0 or at least --header-timeout (${settings.headerTimeout} ms)`);
  }
}

/** How many refusals a warning line stays quiet for: a flood is one line per interval, not per connection. */
const DROP_LOG_INTERVAL_MS = 10_000;

export async function startLens(settings: ProxySettings, logger: Logger): Promise<Lens> {
  checkSettings(settings);
  // An --upstream may carry credentials (http://user:password@host), which only forwarding needs.
  const upstreamShown = withoutPassword(settings.upstream);
  const trust = createTrustPolicy(settings.trustProxy, settings.trustedProxies);
  // Opened here first: migrations, and a one-line error before anything listens.
  const store = await openProxyStore(settings.db, {
    maxSizeBytes: settings.dbMaxSize || undefined,
    onError: (err) => logger.warn({ err }, "cannot reserve exchange ids in the database: exchanges are forwarded, not recorded, once the ids in hand run out"),
  });

  // The gauges and the live feed call into the forwarder and the recorder only once traffic flows.
  const metrics = new LensMetrics(VERSION, {
    inFlight: () => forwarder.inFlightCount,
    activeSseStreams: () => forwarder.openStreams().sse,
    activeWebSockets: () => forwarder.openStreams().websockets,
    recorder: () => recorder.stats(),
  });
  const live = new LiveFeed((subscribers) => recorder.setLiveWanted(subscribers > 0), settings.liveMaxSubscribers);
  const recorder = await Recorder.start(
    recorderConfig(settings),
    {
      onRecorded: (_count, batch) => {
        if (batch) live.publish(batch.exchanges, batch.handshakes, batch.handshakeIds);
      },
    },
    logger,
  ).catch(async (error: Error) => {
    await store.close();
    throw error;
  });

  // The request path hands each finished exchange to the recorder; everything else happens there.
  const forwarder = createForwarder({
    upstream: settings.upstream,
    trust,
    maxBodyBytes: settings.maxBody,
    upstreamTimeoutMs: settings.upstreamTimeout,
    headerTimeoutMs: settings.headerTimeout,
    requestTimeoutMs: settings.requestTimeout,
    upstreamMaxSockets: settings.upstreamMaxSockets,
    // 0: no id could be had (PostgreSQL unreachable for long): forwarded, counted as not recorded.
    nextId: () => store.nextId() ?? 0,
    onExchange: (raw) => recorder.enqueue(raw),
  });
  // requestTimeout bounds receiving a whole request, body included (a slow-body client holds a
  // connection and an upstream socket). Node stops timing once the request is complete, so a
  // response, an SSE stream or an upgraded WebSocket is never cut by it; only a slower upload is.
  const shortestTimeout = Math.min(settings.headerTimeout, settings.requestTimeout || Infinity);
  const server = http.createServer(
    {
      requestTimeout: settings.requestTimeout,
      headersTimeout: settings.headerTimeout,
      connectionsCheckingInterval: Math.min(30_000, Math.max(50, Math.floor(shortestTimeout / 4))),
    },
    forwarder.handleRequest,
  );
  // Past the cap Node closes new connections as they are accepted, before reading a byte: the
  // cheapest refusal, and the only one that cannot be slowed down. Counted and logged (bounded).
  if (settings.maxConnections > 0) server.maxConnections = settings.maxConnections;
  let dropsUnlogged = 0;
  let lastDropLog = 0;
  server.on("drop", () => {
    metrics.countDroppedConnection();
    dropsUnlogged++;
    if (Date.now() - lastDropLog < DROP_LOG_INTERVAL_MS) return;
    lastDropLog = Date.now();
    logger.warn({ dropped: dropsUnlogged, maxConnections: settings.maxConnections }, "connection cap reached: new connections are closed (--max-connections)");
    dropsUnlogged = 0;
  });
  server.on("upgrade", forwarder.handleUpgrade);
  server.on("clientError", forwarder.handleClientError);

  const admin = createAdminServer({
    recorder: () => recorder.freshStats(),
    inFlight: () => forwarder.inFlightCount,
    upstream: upstreamShown,
    // The traffic's text comes with fresh writer stats, which the recorder gauges then read.
    metrics: async () => metrics.scrape(await recorder.trafficMetrics()),
    metricsContentType: metrics.registry.contentType,
    live,
    token: settings.adminToken,
    access: adminAccess(settings.adminAllowedHosts, settings.adminAllowedOrigins),
  });

  let publicAddress: AddressInfo;
  let adminAddress: AddressInfo;
  try {
    publicAddress = await listen(server, settings.port, settings.host);
    adminAddress = await listen(admin, settings.adminPort, settings.adminHost);
  } catch (error) {
    server.close();
    await recorder.close();
    live.close();
    await store.close();
    const e = error as NodeJS.ErrnoException;
    throw new Error(`cannot listen: ${e.code === "EADDRINUSE" ? `address ${(e as { address?: string }).address}:${(e as { port?: number }).port} is already in use` : e.message}`);
  }

  const url = urlOf(publicAddress);
  const adminUrl = urlOf(adminAddress);
  // Where this proxy runs, for the inspector: replays go through it so they are recorded too.
  await store.writeMeta({ upstream: upstreamShown, proxy_url: url, admin_url: adminUrl, version: VERSION }).catch((err: unknown) => {
    logger.warn({ err }, "could not write this proxy's address for the inspector");
  });
  logger.info({ url, adminUrl, upstream: upstreamShown, db: shownDatabase(settings.db) }, "mcp-lens proxy listening");

  let closing: Promise<void> | null = null;
  return {
    url,
    adminUrl,
    recorder,
    close() {
      closing ??= (async () => {
        logger.info({ inFlight: forwarder.inFlightCount }, "shutting down: draining in-flight requests");
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await forwarder.drain(settings.shutdownTimeout);
        server.closeAllConnections();
        await serverClosed;
        await recorder.close();
        live.close();
        forwarder.close();
        await store.close();
        await new Promise<void>((resolve) => admin.close(() => resolve()));
        admin.closeAllConnections();
        logger.info(recorder.stats(), "stopped");
      })();
      return closing;
    },
  };
}
