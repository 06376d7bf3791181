// What the inspector reads a recording through, wherever it is: an SQLite file (InspectorData,
// synchronous) or a PostgreSQL database several replicas share (PostgresRecording, whose answers
// are promises; open-recording.ts picks). Callers await every answer, the views through
// useRecorded (ui/use-recorded.ts), which renders an SQLite answer at once as before.
import type { LiveMessage } from "../common/live-protocol.js";
import type { ClassifiedExchange } from "../analysis/exchange.js";
import type { DiagnosisCode, Handshake } from "../analysis/handshake.js";

export type Maybe<T> = T | Promise<T>;

export interface HandshakeFilter {
  failedOnly?: boolean;
  /** Substring of the client family or client name, case-insensitive. */
  client?: string;
  /** Only handshakes started at or after this epoch ms. */
  sinceMs?: number;
  /** Substring of the client, a diagnosis code or summary, the failed step, or an exchange's path. */
  text?: string;
  /** Default 100. */
  limit?: number;
  /** Paging: only handshakes listed after this one (older). */
  beforeId?: number;
}

/** A listing's row: the handshake without its steps, diagnoses and exchange ids, with its first diagnosis and how many exchanges it has. */
export type HandshakeSummary = Pick<
  Handshake,
  "id" | "clientFamily" | "clientName" | "era" | "eraFallback" | "registration" | "startedAt" | "endedAt" | "outcome" | "failedStep"
> & {
  firstCode: DiagnosisCode | null;
  firstSummary: string | null;
  exchangeCount: number;
};

export interface HandshakeDetail {
  handshake: Handshake;
  /** In the order they started (by id where they started together). */
  exchanges: ClassifiedExchange[];
}

export interface RecordedExchangeEntry {
  exchange: ClassifiedExchange;
  handshakeId: number | null;
}

/** Follows new traffic by reading the recording: each poll, what the /live feed would have sent since the last. */
export interface RecordingPoller {
  poll(): Maybe<LiveMessage[]>;
}

export interface Recording {
  /** Where it is, as shown: a file's path, a PostgreSQL URL without its password. */
  readonly path: string;
  /** An SQLite file one proxy writes, or a PostgreSQL database replicas share. */
  readonly kind: "sqlite" | "postgres";
  /** Newest first. */
  listHandshakes(filter?: HandshakeFilter): Maybe<HandshakeSummary[]>;
  /** The same selection as listHandshakes, as full handshake records. */
  findHandshakes(filter?: HandshakeFilter): Maybe<Handshake[]>;
  getHandshake(id: number): Maybe<HandshakeDetail | null>;
  /** Those of the ids that are stored, with the handshake each was assigned to. */
  exchangeEntries(ids: readonly number[]): Maybe<RecordedExchangeEntry[]>;
  /** What the proxy wrote about itself (proxy_url, upstream, admin_url, version): read when opened. */
  meta(): Record<string, string>;
  /** Polls for new traffic from now (SQLite: from exchange `afterId` when given). */
  poller(afterId?: number): Maybe<RecordingPoller>;
  close(): Maybe<void>;
}
