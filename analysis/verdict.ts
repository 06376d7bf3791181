// A handshake's final word combines the grouping's outcome with the diagnoses: a client that
// stops after a 200 whose content is wrong (a resource or issuer mismatch, no S256) has not
// "abandoned" — it failed at that step. Pure, so the inspector reaches the same verdict.
import { FALLBACK_GRACE_MS } from "./handshake-state.js";
import type { Diagnosis, Handshake, HandshakeStep } from "./handshake.js";

/**
 * How long a client that stopped after an error may stay quiet before we call it failed: the
 * same grace the grouping gives a client trying discovery fallbacks.
 */
export const SETTLE_MS = FALLBACK_GRACE_MS;

/**
 * Where the latest of the exchanges belongs: each belongs to the first step that holds it, and
 * steps are in the order the handshake reached them (exchange ids are not in time order across
 * replicas: store/id-blocks.ts).
 */
function lastStepOf(h: Handshake, exchangeIds: number[]): HandshakeStep | null {
  let last = -1;
  for (const id of exchangeIds) last = Math.max(last, h.steps.findIndex((s) => s.exchangeIds.includes(id)));
  return h.steps[last]?.step ?? null;
}

export function withVerdict(h: Handshake, diagnoses: Diagnosis[], now: number): Handshake {
  const judged = { ...h, diagnoses };
  if (h.outcome === "succeeded") return judged;
  const errors = diagnoses.filter((d) => d.severity === "error");
  if (errors.length === 0) return judged;
  const settled = h.outcome === "failed" || h.outcome === "abandoned" || now - h.endedAt >= SETTLE_MS;
  if (!settled) return judged;
  // The client stopped at the last exchange an error points to: that step is where it failed.
  return { ...judged, outcome: "failed", failedStep: h.failedStep ?? lastStepOf(h, errors.flatMap((d) => d.evidence)) ?? h.steps.at(-1)?.step ?? null };
}

/**
 * A handshake nothing will add to any more (the proxy that followed it stopped, and its successor
 * starts with an empty tracker): in progress becomes failed when a step failed or an error
 * diagnosis stands, else abandoned, as the quiet rule would have said.
 */
export function settle(h: Handshake): Handshake {
  if (h.outcome !== "in_progress") return h;
  const lastFailed = [...h.steps].reverse().find((s) => s.status === "failed")?.step ?? null;
  const failedStep = h.failedStep ?? lastFailed;
  const stopped: Handshake = { ...h, outcome: failedStep !== null ? "failed" : "abandoned", failedStep };
  return withVerdict(stopped, h.diagnoses, Number.POSITIVE_INFINITY);
}
