// The per-exchange log line (at info): what an operator scans for, from the recorded (redacted)
// exchange, written by the recorder thread.
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import { terminalSafe } from "../../common/terminal-safe.js";

/**
 * Operators read these lines on a terminal (`npm start`, `docker logs`). JSON escapes C0 controls,
 * but leaves C1 (0x9b is a one-byte CSI), DEL and bidi overrides raw: traffic's strings are made
 * visible escapes first.
 */
const safe = (text: string | null | undefined) => (text ? terminalSafe(text) : text);

/** The exchange as one log line: redacted fields only, facts reduced to what an operator scans for. */
export function exchangeLogFields(e: ClassifiedExchange, handshakeId: number | null = null): Record<string, unknown> {
  return {
    id: e.id,
    handshake: handshakeId ?? undefined,
    kind: e.kind,
    method: safe(e.method),
    host: safe(e.host),
    path: safe(e.path),
    query: safe(e.query) ?? undefined,
    status: e.status,
    durationMs: e.durationMs === null ? null : Math.round(e.durationMs * 10) / 10,
    ttfbMs: e.ttfbMs === null ? null : Math.round(e.ttfbMs * 10) / 10,
    client: e.clientAddr,
    userAgent: safe(e.facts.userAgent),
    mcpMethods: e.facts.mcp?.methods.length ? e.facts.mcp.methods.map(safe) : undefined,
    upstreamError: e.upstreamError ?? undefined,
    aborted: e.aborted || undefined,
  };
}
