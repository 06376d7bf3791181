// Markers the screens share (the rest of the formatting is ../format.ts).
import type { HandshakeOutcome } from "../../analysis/handshake.js";
import { OUTCOME_LABELS } from "../format.js";
import type { Tone } from "./lines.js";

/** The marker carries the meaning without colour (NO_COLOR); labels are the CLI's. */
export const OUTCOME_MARK: Record<HandshakeOutcome, { mark: string; tone: Tone; label: string }> = {
  failed: { mark: "✗", tone: "bad", label: OUTCOME_LABELS.failed },
  succeeded: { mark: "✓", tone: "ok", label: OUTCOME_LABELS.succeeded },
  abandoned: { mark: "–", tone: "warn", label: OUTCOME_LABELS.abandoned },
  in_progress: { mark: "…", tone: "accent", label: OUTCOME_LABELS.in_progress },
};

export const stepMark = (status: string): { mark: string; tone: Tone } =>
  status === "ok" ? { mark: "✓", tone: "ok" } : status === "failed" ? { mark: "✗", tone: "bad" } : { mark: "·", tone: "dim" };

/** ✓ for 1xx-3xx, ✗ for 4xx/5xx and no response. */
export function httpMark(status: number | null): { mark: string; tone: Tone } {
  if (status === null || status >= 400) return { mark: "✗", tone: "bad" };
  return { mark: "✓", tone: "ok" };
}

/** +1.2 s, +340 ms: an offset from the start of a handshake. */
export function offset(ms: number): string {
  return ms < 1000 ? `+${Math.round(ms)}ms` : `+${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`;
}

