// Prometheus metrics (prom-client): one prefix, base units, bounded labels. Never a session
// id, token, client_id or raw path as a label: kinds, families, steps, codes, eras and
// registration kinds are closed sets.
// Two registries, one per thread: TrafficMetrics counts exchanges and handshakes where they are
// classified (the recorder thread), LensMetrics holds the process, the forwarder's gauges and
// the writer's totals, and serves both as one scrape.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { OAUTH_KINDS, type ClassifiedExchange } from "../../analysis/exchange.js";
import { CLIENT_FAMILIES, HANDSHAKE_ERAS, REGISTRATION_KINDS, type Handshake, type HandshakeEra, type HandshakeOutcome, type RegistrationKind } from "../../analysis/handshake.js";
import type { WriterStats } from "../../store/writer.js";

/** JSON-RPC methods worth a label of their own; anything else is `other`. */
const MCP_METHODS = new Set([
  "initialize",
  "notifications/initialized",
  "ping",
  "tools/list",
  "tools/call",
  "prompts/list",
  "prompts/get",
  "resources/list",
  "resources/read",
  "resources/templates/list",
  "resources/subscribe",
  "completion/complete",
  "logging/setLevel",
  "notifications/cancelled",
  "notifications/progress",
  "notifications/roots/list_changed",
]);
/**
 * Tool labels are the names the upstream listed in its tools/list answers, up to this many
 * (a server with more tools is rare; a hostile one cannot grow the scrape past it). A tools/call
 * for any other name counts as `other`: clients cannot mint labels.
 */
const MAX_TOOL_LABELS = 500;
/** What a tool label may look like (MCP tool names: letters, digits, _ - . /, up to 128). */
const TOOL_LABEL = /^[\w./-]{1,128}$/;
const MAX_TRACKED_HANDSHAKES = 10_000;

// Era and registration labels. A handshake's era (modern = MCP 2026-07-28, legacy, unknown) and
// how it got its client id (cimd, dcr, pre_registered, none) are only known after its first
// exchanges, so they label the two terminal counters (succeeded, failed), never
// handshakes_started_total, which is counted at the first exchange, when both are still
// unknown (a started{era} would count nearly everything as "unknown" and its series would not
// add up with the terminal ones). Both are closed sets (HANDSHAKE_ERAS, REGISTRATION_KINDS): a
// value outside them (a bug, or an older analyser's row) is counted as unknown / none rather
// than minting a label. The series actually exported stay few: most combinations of family ×
// era × registration (× step × code for failures) never occur.
const ERA_LABELS: ReadonlySet<string> = new Set(HANDSHAKE_ERAS);
const REGISTRATION_LABELS: ReadonlySet<string> = new Set(REGISTRATION_KINDS);
const eraLabel = (era: string): HandshakeEra => (ERA_LABELS.has(era) ? (era as HandshakeEra) : "unknown");
const registrationLabel = (kind: string): RegistrationKind => (REGISTRATION_LABELS.has(kind) ? (kind as RegistrationKind) : "none");

export interface LiveGauges {
  inFlight(): number;
  activeSseStreams(): number;
  activeWebSockets(): number;
  recorder(): WriterStats;
}

/** What the traffic metrics read off an exchange. */
export type ObservedExchange = Pick<
  ClassifiedExchange,
  "kind" | "method" | "status" | "sseEvents" | "websocket" | "durationMs" | "ttfbMs" | "upstreamError"
> & { facts: Pick<ClassifiedExchange["facts"], "mcp"> };

/** The process, the forwarder's gauges and the writer's totals; the traffic's text is appended to a scrape. */
export class LensMetrics {
  readonly registry = new Registry();
  private readonly droppedConnections: Counter;

  constructor(version: string, live: LiveGauges) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "mcp_lens_" });
    // prom-client names these gauges *_total, which Prometheus reserves for counters (promtool fails).
    for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) {
      this.registry.removeSingleMetric(`mcp_lens_${name}`);
    }
    new Gauge({
      name: "mcp_lens_build_info",
      help: "Build information: always 1",
      labelNames: ["version", "node_version"],
      registers,
    }).set({ version, node_version: process.version }, 1);

    new Gauge({ name: "mcp_lens_in_flight_requests", help: "Requests whose response is still open", registers, collect() { this.set(live.inFlight()); } });
    new Gauge({ name: "mcp_lens_active_sse_streams", help: "Open SSE responses", registers, collect() { this.set(live.activeSseStreams()); } });
    new Gauge({ name: "mcp_lens_active_websockets", help: "Open proxied WebSocket connections", registers, collect() { this.set(live.activeWebSockets()); } });
    new Gauge({ name: "mcp_lens_recorder_queue_depth", help: "Exchanges waiting to be written", registers, collect() { this.set(live.recorder().queued); } });
    new Gauge({ name: "mcp_lens_recorder_failing", help: "1 while the database cannot be written", registers, collect() { this.set(live.recorder().failing ? 1 : 0); } });
    // Totals kept by the writer, exposed as counters that follow them. prom-client collects in
    // registration order, so the first counter's collect() brings all three up to date.
    let last: WriterStats | null = null;
    const dropped = new Counter({ name: "mcp_lens_recorder_rows_dropped_total", help: "Exchanges not recorded, by reason", labelNames: ["reason"], registers: [] });
    const pruned = new Counter({ name: "mcp_lens_recorder_rows_pruned_for_room_total", help: "Old exchanges deleted because the database was full", registers: [] });
    new Counter({
      name: "mcp_lens_recorder_rows_written_total",
      help: "Exchanges written to the database",
      registers,
      collect() {
        const now = live.recorder();
        this.inc(now.written - (last?.written ?? 0));
        pruned.inc(now.prunedForRoom - (last?.prunedForRoom ?? 0));
        for (const reason of Object.keys(now.dropped) as Array<keyof WriterStats["dropped"]>) {
          dropped.inc({ reason }, now.dropped[reason] - (last?.dropped[reason] ?? 0));
        }
        last = now;
      },
    });
    this.registry.registerMetric(dropped);
    this.registry.registerMetric(pruned);
    this.droppedConnections = new Counter({
      name: "mcp_lens_connections_dropped_total",
      help: "Client connections closed on arrival because --max-connections were open",
      registers,
    });
  }

  /** The public server refused a connection at its cap. */
  countDroppedConnection(): void {
    this.droppedConnections.inc();
  }

  /** One scrape: this registry, then the traffic metrics' exposition text (another registry, same format). */
  async scrape(trafficText: string): Promise<string> {
    const own = await this.registry.metrics();
    return trafficText ? `${own.endsWith("\n") ? own : `${own}\n`}${trafficText}` : own;
  }
}

/**
 * Exchanges, JSON-RPC calls and OAuth steps: counted in the recorder thread, as they are
 * classified. Handshakes: as each batch leaves them (see observeHandshakes).
 */
export class TrafficMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<"kind" | "method" | "status">;
  private readonly duration: Histogram<"kind">;
  private readonly ttfb: Histogram<"kind">;
  private readonly sseStreams: Counter<"kind">;
  private readonly upstreamErrors: Counter<"reason">;
  private readonly jsonRpc: Counter<"method" | "outcome">;
  private readonly toolCalls: Counter<"tool" | "outcome">;
  private readonly oauth: Counter<"kind" | "status">;
  private readonly handshakesStarted: Counter<"client_family">;
  private readonly handshakesSucceeded: Counter<"client_family" | "era" | "registration">;
  private readonly handshakesFailed: Counter<"client_family" | "failed_step" | "code" | "era" | "registration">;
  private readonly eraFallbacks: Counter<"client_family">;
  private readonly batchSize: Histogram;
  private readonly analyser: Gauge;
  private readonly toolLabels = new Set<string>();
  /** What was already counted per handshake: its terminal outcomes and its era fallback (bounded, most recent kept). */
  private readonly counted = new Map<number, Set<HandshakeOutcome | "era_fallback">>();

  constructor() {
    const registers = [this.registry];
    this.requests = new Counter({ name: "mcp_lens_requests_total", help: "Exchanges by route kind, method and status (status 0: no response)", labelNames: ["kind", "method", "status"], registers });
    this.duration = new Histogram({
      name: "mcp_lens_request_duration_seconds",
      help: "Whole exchange duration, SSE and WebSocket streams excluded",
      labelNames: ["kind"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.ttfb = new Histogram({
      name: "mcp_lens_upstream_ttfb_seconds",
      help: "Time until the upstream's response headers arrived",
      labelNames: ["kind"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.sseStreams = new Counter({ name: "mcp_lens_sse_streams_total", help: "Exchanges answered with an SSE stream (not in the duration histogram)", labelNames: ["kind"], registers });
    this.upstreamErrors = new Counter({ name: "mcp_lens_upstream_errors_total", help: "Upstream failures by reason", labelNames: ["reason"], registers });
    this.jsonRpc = new Counter({ name: "mcp_lens_jsonrpc_requests_total", help: "JSON-RPC messages clients sent, by MCP method and outcome", labelNames: ["method", "outcome"], registers });
    this.toolCalls = new Counter({ name: "mcp_lens_tool_calls_total", help: "tools/call by tool and outcome", labelNames: ["tool", "outcome"], registers });
    this.oauth = new Counter({ name: "mcp_lens_oauth_exchanges_total", help: "OAuth exchanges by kind and status", labelNames: ["kind", "status"], registers });
    this.handshakesStarted = new Counter({ name: "mcp_lens_handshakes_started_total", help: "Connector handshakes seen, by client family", labelNames: ["client_family"], registers });
    // The terminal counters keep their names and earlier labels (alerts and panels sum by them);
    // era and registration are added labels, known by the time a handshake ends (see ERA_LABELS).
    this.handshakesSucceeded = new Counter({
      name: "mcp_lens_handshakes_succeeded_total",
      help: "Connector handshakes that connected, by MCP era and how the client got its client id",
      labelNames: ["client_family", "era", "registration"],
      registers,
    });
    this.handshakesFailed = new Counter({
      name: "mcp_lens_handshakes_failed_total",
      help: "Connector handshakes that failed, by failed step, first diagnosis code, MCP era and how the client got its client id",
      labelNames: ["client_family", "failed_step", "code", "era", "registration"],
      registers,
    });
    // A dual-era client that tried the modern era, found the server does not speak it, and went
    // on in the legacy era: healthy, but worth seeing (a server about to be left behind). One
    // series per family, each exported from the start at 0, so the first fallback is an
    // increase() a dashboard shows and not a series appearing from nowhere.
    this.eraFallbacks = new Counter({
      name: "mcp_lens_era_fallbacks_total",
      help: "Connector handshakes in which a dual-era client fell back from the modern MCP era (2026-07-28) to the legacy one",
      labelNames: ["client_family"],
      registers,
    });
    for (const family of CLIENT_FAMILIES) this.eraFallbacks.inc({ client_family: family }, 0);
    this.batchSize = new Histogram({ name: "mcp_lens_recorder_batch_size", help: "Exchanges per committed batch", buckets: [1, 5, 10, 25, 50, 100, 250, 500], registers });
    // Handshake metrics come from the analyser alone: on PostgreSQL one replica, elected, counts
    // every replica's handshakes, so sum() over replicas counts each once.
    this.analyser = new Gauge({
      name: "mcp_lens_analyser",
      help: "1 where this process groups and diagnoses handshakes (and counts the handshake metrics): every proxy on SQLite, the one elected replica on PostgreSQL",
      registers,
    });
    this.analyser.set(1);
  }

  setAnalyser(active: boolean): void {
    this.analyser.set(active ? 1 : 0);
  }

  /** Names from the upstream's tools/list answers (see listedToolNames): each may become a tool label. */
  allowToolLabels(names: readonly string[]): void {
    for (const name of names) {
      if (this.toolLabels.size >= MAX_TOOL_LABELS) return;
      if (TOOL_LABEL.test(name)) this.toolLabels.add(name);
    }
  }

  /** One classified exchange: called off the request path, before it is stored. */
  observeExchange(e: ObservedExchange): void {
    const status = String(e.status ?? 0);
    this.requests.inc({ kind: e.kind, method: e.method, status });
    const streamed = e.sseEvents !== null || e.websocket;
    if (streamed) this.sseStreams.inc({ kind: e.kind });
    else if (e.durationMs !== null) this.duration.observe({ kind: e.kind }, e.durationMs / 1000);
    if (e.ttfbMs !== null) this.ttfb.observe({ kind: e.kind }, e.ttfbMs / 1000);
    if (e.upstreamError) this.upstreamErrors.inc({ reason: e.upstreamError });
    if (OAUTH_KINDS.has(e.kind)) this.oauth.inc({ kind: e.kind, status });
    this.observeJsonRpc(e);
  }

  /**
   * Counts each handshake once when first seen, once the first time it succeeds or fails (with
   * the era and registration it has then), and once when it is first seen to have fallen back
   * from the modern era. Called with the handshakes as each batch leaves them: one that failed
   * and recovered within a batch is counted as it ended. `count` false: what they are at was
   * counted elsewhere (by the analyser before this one), only remembered here.
   */
  observeHandshakes(handshakes: Handshake[], count = true): void {
    for (const h of handshakes) {
      const seen = this.counted.get(h.id);
      if (seen === undefined && count) this.handshakesStarted.inc({ client_family: h.clientFamily });
      const counted = seen ?? new Set<HandshakeOutcome | "era_fallback">();
      if ((h.outcome === "succeeded" || h.outcome === "failed") && !counted.has(h.outcome)) {
        counted.add(h.outcome);
        if (count) this.countEnd(h);
      }
      if (h.eraFallback && !counted.has("era_fallback")) {
        counted.add("era_fallback");
        if (count) this.eraFallbacks.inc({ client_family: h.clientFamily });
      }
      this.counted.delete(h.id); // re-insert: the map's order is recency, the oldest go first
      this.counted.set(h.id, counted);
    }
    while (this.counted.size > MAX_TRACKED_HANDSHAKES) this.counted.delete(this.counted.keys().next().value!);
  }

  private countEnd(h: Handshake): void {
    const labels = { client_family: h.clientFamily, era: eraLabel(h.era), registration: registrationLabel(h.registration) };
    if (h.outcome === "succeeded") this.handshakesSucceeded.inc(labels);
    else this.handshakesFailed.inc({ ...labels, failed_step: h.failedStep ?? "unknown", code: h.diagnoses[0]?.code ?? "none" });
  }

  observeBatch(size: number): void {
    this.batchSize.observe(size);
  }

  private observeJsonRpc(e: ObservedExchange): void {
    const mcp = e.facts.mcp;
    if (!mcp) return;
    const responses = new Map<string | number, "result" | "error">();
    for (const m of mcp.messages) {
      if (m.direction === "response" && m.id !== undefined && m.id !== null) responses.set(m.id, m.type === "error" ? "error" : "result");
    }
    for (const m of mcp.messages) {
      if (m.direction !== "request" || !m.method) continue;
      const outcome = m.type === "notification" ? "notification" : (m.id !== undefined && m.id !== null && responses.get(m.id)) || (e.status !== null && e.status >= 400 ? "http_error" : "no_response");
      const method = MCP_METHODS.has(m.method) ? m.method : "other";
      this.jsonRpc.inc({ method, outcome });
      if (m.method === "tools/call") this.toolCalls.inc({ tool: this.toolLabel(mcp.toolNames?.[0]), outcome });
    }
  }

  private toolLabel(name: string | undefined): string {
    if (!name) return "unknown";
    return this.toolLabels.has(name) ? name : "other";
  }
}
