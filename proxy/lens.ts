// mcp-lens assembled: the request path (forward → capture) on the public port, and off
// the request path the record pipeline (redact → classify → store / log), plus the admin port.
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { createAdminServer } from "./admin.js";
import { HandshakeAnalysis } from "./analysis.js";
import { createClassifier } from "./classify.js";
import type { RawExchange } from "./exchange.js";
import { createForwarder } from "./forward.js";
import { listen, urlOf } from "./listen.js";
import { LiveFeed } from "./live.js";
import { exchangeLogFields, type Logger } from "./log.js";
import { headerValue, isMalformedRequest, malformedAnswer, malformedExchange, readRequestHead, sendMalformedAnswer } from "./malformed.js";
import { LensMetrics } from "./metrics.js";
import { toRecorded } from "./record.js";
import { createRedactor, loadOrCreateRedactionKey } from "./redact.js";
import type { ProxySettings } from "./settings.js";
import { nextExchangeId, openDatabase } from "./store/db.js";
import { makeRoom, startRetention } from "./store/retention.js";
import { RecordWriter } from "./store/writer.js";
import { clientAddress, createTrustPolicy } from "./trust.js";
import { VERSION } from "./version.js";

/** How often idle handshakes are re-judged (see proxy/verdict.ts). */
const SETTLE_CHECK_MS = 2_000;

export interface Lens {
  /** Where clients reach the proxy, e.g. http://127.0.0.1:8080 */
  url: string;
  adminUrl: string;
  writer: RecordWriter<RawExchange>;
  /** Graceful stop: stop accepting, drain, flush every record, close the DB. */
  close(): Promise<void>;
}

/** Bytes a raw exchange holds in memory, for the writer's queue bound. */
function rawSize(raw: RawExchange): number {
  return raw.requestBody.bytes.length + raw.responseBody.bytes.length + 1024;
}

export async function startLens(settings: ProxySettings, logger: Logger): Promise<Lens> {
  const trust = createTrustPolicy(settings.trustProxy, settings.trustedProxies);
  const db = openDatabase(settings.db, { maxSizeBytes: settings.dbMaxSize || undefined });
  const redactor = createRedactor(loadOrCreateRedactionKey(settings.db));
  const classify = createClassifier();
  let nextId = nextExchangeId(db);

  // The request path hands each finished exchange to the writer; everything else happens there.
  const forwarder = createForwarder({
    upstream: settings.upstream,
    trust,
    maxBodyBytes: settings.maxBody,
    upstreamTimeoutMs: settings.upstreamTimeout,
    nextId: () => nextId++,
    onExchange: (raw) => writer.enqueue(raw, rawSize(raw)),
  });
  const metrics = new LensMetrics(VERSION, {
    inFlight: () => forwarder.inFlightCount,
    activeSseStreams: () => forwarder.openStreams().sse,
    activeWebSockets: () => forwarder.openStreams().websockets,
    recorder: () => writer.stats(),
  });
  const analysis = new HandshakeAnalysis(db);
  const live = new LiveFeed();
  const writer = new RecordWriter<RawExchange>({
    db,
    logger,
    flushIntervalMs: settings.flushInterval,
    maxQueue: settings.maxQueue,
    // A full database keeps the newest traffic: the oldest records make room.
    makeRoom: () => makeRoom(db),
    prepare: (raw) => classify(toRecorded(raw, redactor)),
    analyse: (exchange) => {
      metrics.observeExchange(exchange);
      const result = analysis.analyse(exchange);
      metrics.observeHandshakes(result.handshakes);
      return result;
    },
    onRecorded: (exchanges, handshakes, handshakeIds) => {
      if (exchanges.length > 0) metrics.observeBatch(exchanges.length);
      live.publish(exchanges, handshakes, handshakeIds);
      if (!logger.isLevelEnabled("info")) return;
      exchanges.forEach((e, i) => logger.info({ ...exchangeLogFields(e), handshake: handshakeIds[i] ?? undefined }, "exchange"));
    },
  });
  // Verdicts that change with time alone (a client gone quiet after an error) are stored too.
  const settler = setInterval(() => {
    const settled = analysis.tick(Date.now());
    metrics.observeHandshakes(settled);
    writer.enqueueHandshakes(settled);
  }, SETTLE_CHECK_MS).unref();
  const stopRetention = startRetention(
    db,
    { maxAgeDays: settings.retentionDays, maxRows: settings.retentionRows },
    logger,
  );

  // Streams may stay open for hours: no overall request timeout. Headers must arrive in time,
  // or a slow-header client would hold a socket forever; Node checks every 30 s by default,
  // too coarse for a short --header-timeout.
  const server = http.createServer(
    {
      requestTimeout: 0,
      headersTimeout: settings.headerTimeout,
      connectionsCheckingInterval: Math.min(30_000, Math.max(50, Math.floor(settings.headerTimeout / 4))),
    },
    forwarder.handleRequest,
  );
  server.on("upgrade", forwarder.handleUpgrade);
  // Connections already answered as malformed: the client's FIN after our answer is no new error.
  const rejectedSockets = new WeakSet<Socket>();
  server.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) => {
    if (!isMalformedRequest(error) || rejectedSockets.has(socket)) {
      socket.destroy(); // the client left (ECONNRESET, EPIPE): nobody to answer
      return;
    }
    rejectedSockets.add(socket);
    const answer = malformedAnswer(error, settings.headerTimeout);
    // A request whose headers were fine is already an exchange: it records the rejection.
    if (forwarder.rejectInFlight(socket, answer)) return;
    const responseHeaders = sendMalformedAnswer(socket, answer);
    const head = readRequestHead((error as { rawPacket?: Buffer }).rawPacket);
    const trusted = trust.isTrusted(socket.remoteAddress);
    const forwardedFor = trusted ? headerValue(head.headers, "x-forwarded-for") : undefined;
    const raw = malformedExchange({
      id: nextId++,
      startedAt: Date.now(),
      clientAddr: clientAddress(socket.remoteAddress, forwardedFor, trust, trusted),
      head,
      answer,
      responseHeaders,
    });
    writer.enqueue(raw, rawSize(raw));
    logger.debug({ code: error.code, status: answer.status }, "malformed request from client");
  });

  const admin = createAdminServer({
    recorder: () => writer.stats(),
    inFlight: () => forwarder.inFlightCount,
    upstream: settings.upstream,
    metrics,
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
    clearInterval(settler);
    await writer.close();
    stopRetention();
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
  logger.info({ url, adminUrl, upstream: settings.upstream, db: settings.db }, "mcp-lens proxy listening");

  let closing: Promise<void> | null = null;
  return {
    url,
    adminUrl,
    writer,
    close() {
      closing ??= (async () => {
        logger.info({ inFlight: forwarder.inFlightCount }, "shutting down: draining in-flight requests");
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await forwarder.drain(settings.shutdownTimeout);
        server.closeAllConnections();
        await serverClosed;
        clearInterval(settler);
        await writer.close();
        stopRetention();
        live.close();
        forwarder.close();
        db.close();
        await new Promise<void>((resolve) => admin.close(() => resolve()));
        admin.closeAllConnections();
        logger.info(writer.stats(), "stopped");
      })();
      return closing;
    },
  };
}
