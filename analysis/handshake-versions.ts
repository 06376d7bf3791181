// What a follower of new traffic has reported of each handshake, to report only what changed:
// the live feed, the inspector's pollers. Pure, bounded.
import type { Handshake } from "./handshake.js";

/** Handshake states remembered to report only changes. */
const MAX_VERSIONS = 50_000;
/** In-progress handshakes re-read each poll at most: the oldest are left to the time-window read. */
const MAX_IN_PROGRESS = 1_000;

const versionOf = (h: Handshake) =>
  `${h.endedAt}|${h.outcome}|${h.failedStep}|${h.era}|${h.eraFallback}|${h.registration}|${h.exchangeIds.length}|${h.diagnoses.map((d) => d.code).join(",")}`;

/** The handshakes a poller has reported, to report only changes; and those in progress (time alone settles them). */
export class HandshakeVersions {
  private readonly versions = new Map<number, string>();
  readonly inProgress = new Set<number>();

  /** Remembers the handshake's state; true when it changed. */
  note(h: Handshake): boolean {
    if (h.outcome === "in_progress") this.inProgress.add(h.id);
    else this.inProgress.delete(h.id);
    if (this.inProgress.size > MAX_IN_PROGRESS) this.inProgress.delete(this.inProgress.values().next().value!);
    const version = versionOf(h);
    if (this.versions.get(h.id) === version) return false;
    this.versions.delete(h.id); // re-insert: oldest first, for the bound below
    this.versions.set(h.id, version);
    if (this.versions.size > MAX_VERSIONS) this.versions.delete(this.versions.keys().next().value!);
    return true;
  }
}
