// mcp-lens assembled: the request path (forward → capture) on the public port; the record
// pipeline (redact → classify → handshakes → store, traffic metrics) in its own thread
// (proxy/recorder.ts); the process metrics, the live feed and the admin port here.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { createAdminServer } from "./admin.js";
import { createForwarder } from "./forward.js";
import { listen, urlOf } from "./listen.js";
import { LiveFeed } from "./live.js";
import type { Logger } from "./log.js";
import { LensMetrics } from "./metrics.js";
import { Recorder, recorderConfig } from "./recorder.js";
import type { ProxySettings } from "./settings.js";
import { nextExchangeId, openDatabase } from "./store/db.js";
import { createTrustPolicy } from "./trust.js";
import { VERSION } from "./version.js";

export interface Lens {
  /** Where clients reach the proxy, e.g. http://127.0.0.1:8080 */
  url: string;
  adminUrl: string;
  recorder: Recorder;
  /** Graceful stop: stop accepting, drain, flush every record, close the DB. */
  close(): Promise<void>;
}

export async function startLens(settings: ProxySettings, logger: Logger): Promise<Lens> {
  const trust = createTrustPolicy(settings.trustProxy, settings.trustedProxies);
  // Opened here first: migrations, and a one-line error before anything listens.
  const db = openDatabase(settings.db, { maxSizeBytes: settings.dbMaxSize || undefined });
  let nextId = nextExchangeId(db);

  // The gauges and the live feed call into the forwarder and the recorder only once traffic flows.
  const metrics = new LensMetrics(VERSION, {
    inFlight: () => forwarder.inFlightCount,
    activeSseStreams: () => forwarder.openStreams().sse,
    activeWebSockets: () => forwarder.openStreams().websockets,
    recorder: () => recorder.stats(),
  });
  const live = new LiveFeed((subscribers) => recorder.setLiveWanted(subscribers > 0));
  const recorder = await Recorder.start(
    recorderConfig(settings),
    {
      onRecorded: (_count, batch) => {
        if (batch) live.publish(batch.exchanges, batch.handshakes, batch.handshakeIds);
      },
    },
    logger,
  ).catch((error: Error) => {
    db.close();
    throw error;
  });

  // The request path hands each finished exchange to the recorder; everything else happens there.
  const forwarder = createForwarder({
    upstream: settings.upstream,
    trust,
    maxBodyBytes: settings.maxBody,
    upstreamTimeoutMs: settings.upstreamTimeout,
    headerTimeoutMs: settings.headerTimeout,
    nextId: () => nextId++,
    onExchange: (raw) => recorder.enqueue(raw),
  });
  const server = http.createServer(
    {
      requestTimeout: 0,
      headersTimeout: settings.headerTimeout,
      connectionsCheckingInterval: Math.min(30_000, Math.max(50, Math.floor(settings.headerTimeout / 4))),
    },
    forwarder.handleRequest,
  );
  server.on("upgrade", forwarder.handleUpgrade);
  server.on("clientError", forwarder.handleClientError);

  const admin = createAdminServer({
    recorder: () => recorder.freshStats(),
    inFlight: () => forwarder.inFlightCount,
    upstream: settings.upstream,
    // The traffic's text comes with fresh writer stats, which the recorder gauges then read.
    metrics: async () => metrics.scrape(await recorder.trafficMetrics()),
    metricsContentType: metrics.registry.contentType,
    live,
    token: settings.adminToken,
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
    db.close();
    const e = error as NodeJS.ErrnoException;
    throw new Error(`cannot listen: ${e.code === "EADDRINUSE" ? `address ${(e as { address?: string }).address}:${(e as { port?: number }).port} is already in use` : e.message}`);
  }

  const url = urlOf(publicAddress);
  const adminUrl = urlOf(adminAddress);
  // Where this proxy runs, for the inspector: replays go through it so they are recorded too.
  const setMeta = db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
  for (const [key, value] of Object.entries({ upstream: settings.upstream, proxy_url: url, admin_url: adminUrl, version: VERSION })) {
    setMeta.run(key, value);
  }
  db.close(); // from here on only the recorder thread writes
  logger.info({ url, adminUrl, upstream: settings.upstream, db: settings.db }, "mcp-lens proxy listening");

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
        await new Promise<void>((resolve) => admin.close(() => resolve()));
        admin.closeAllConnections();
        logger.info(recorder.stats(), "stopped");
      })();
      return closing;
    },
  };
}
