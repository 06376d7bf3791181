// The shape of a diagnosis rule and what it is given: the pieces every stage's rules share.

import type { ClassifiedExchange, ExchangeKind } from "../exchange.js";
import type { DiagnosisCode, Handshake, HandshakeStep, Severity } from "../handshake.js";

/** What a rule found: the rule supplies code, reference and default severity. */
export interface Finding {
  summary: string;
  evidence: number[];
  fix: string;
  /** The severity the traffic shows (e.g. a slow answer the client still waited for), over the rule's default. */
  severity?: Severity;
}

export interface DiagnosisRule {
  code: DiagnosisCode;
  severity: Severity;
  reference: string;
  /** What the code means, for docs and help. */
  meaning: string;
  /** Steps whose failure this cause explains: it ranks first when one of them failed. */
  steps: readonly HandshakeStep[];
  /** Codes that show up as symptoms of this cause: when both fire on shared evidence, this goes first. */
  explains?: readonly DiagnosisCode[];
  check(ctx: DiagnosisContext): Finding | null;
}

export interface CodeExplanation {
  code: DiagnosisCode;
  severity: Severity;
  reference: string;
  meaning: string;
  steps: readonly HandshakeStep[];
}

/** The URL the client connected to, as far as the traffic shows. */
export interface ConnectorUrl {
  /** Normalised by WHATWG URL: lowercase scheme and host, default port dropped, path as sent. */
  url: string;
  origin: string;
  host: string;
  path: string;
  scheme: "http" | "https";
  /** X-Forwarded-Proto/Forwarded said so; a hosted client (they dial https only); or a guess. */
  schemeFrom: "forwarded" | "hosted_client" | "assumed";
  /** The exchange the URL was read from. */
  exchangeId: number;
}

export interface DiagnosisContext {
  readonly handshake: Handshake;
  /** Sorted by id. */
  readonly exchanges: readonly ClassifiedExchange[];
  /** Unauthenticated initialize and server/discover requests (else the first unauthenticated MCP POST). */
  readonly probes: readonly ClassifiedExchange[];
  /** An unauthenticated MCP request was answered without an error: the server is authless. */
  readonly authless: boolean;
  readonly connector: ConnectorUrl | undefined;
  /** The first protected resource metadata document that came back. */
  readonly prm: ClassifiedExchange | undefined;
  /** Authorization server metadata / OpenID configuration documents that came back. */
  readonly asDocs: readonly ClassifiedExchange[];
  of(...kinds: ExchangeKind[]): ClassifiedExchange[];
}
