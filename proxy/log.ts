// Structured JSON logs on stdout (one line per exchange at info). Pretty output is a
// development concern: pipe through `npx pino-pretty`.
import { pino, type Logger } from "pino";
import type { ClassifiedExchange } from "./exchange.js";

export type { Logger };

export function createLogger(level: string, destination: pino.DestinationStream = pino.destination(1)): Logger {
  return pino({ level, base: { service: "mcp-lens" }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/** The exchange as one log line: redacted fields only, facts reduced to what an operator scans for. */
export function exchangeLogFields(e: ClassifiedExchange): Record<string, unknown> {
  return {
    id: e.id,
    kind: e.kind,
    method: e.method,
    host: e.host,
    path: e.path,
    query: e.query ?? undefined,
    status: e.status,
    durationMs: e.durationMs === null ? null : Math.round(e.durationMs * 10) / 10,
    ttfbMs: e.ttfbMs === null ? null : Math.round(e.ttfbMs * 10) / 10,
    client: e.clientAddr,
    userAgent: e.facts.userAgent,
    mcpMethods: e.facts.mcp?.methods.length ? e.facts.mcp.methods : undefined,
    upstreamError: e.upstreamError ?? undefined,
    aborted: e.aborted || undefined,
  };
}
