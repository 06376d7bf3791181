// One client's check: the connector handshake performed now as that client performs it, in one
// era, judged by the analysis that judges live traffic (../judge-run.ts), and told as a row: it
// connects (with a token), is ready for the user's sign-in (without), or fails at a step with the
// diagnosis, its fix and the exchanges that prove it (redacted). `mcp-lens doctor` runs it for each
// of its profiles; the inspector's replay runs it for the client a recording shows (its user
// agent, clientInfo, registration, era…), against the target the operator names.
//
// What it dials: the given URL's origin (at `via` when set) and, once the server's own Protected
// Resource Metadata names one, that authorization server's origin, plus `allowedOrigins`; a URL
// anywhere else is reported, not followed. A token goes to the given origin only (connector-wire.ts).
import type { ClassifiedExchange, Era } from "../../analysis/exchange.js";
import type { HandshakeStep } from "../../analysis/handshake.js";
import { LATEST_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSION, type ClientEra } from "../clients.js";
import { runConnector, type ConnectorRun, type StepOutcome } from "../connector.js";
import { judgeRun } from "../judge-run.js";
import type { DoctorProfile } from "./profiles.js";

export type DoctorResult = "connects" | "ready_for_sign_in" | "fails" | "not_checked";

export interface EvidenceExcerpt {
  exchangeId: number;
  request: string;
  status: number | null;
  /** The start of the answer's body, redacted as recorded. */
  body: string;
}

export interface DoctorRow {
  profile: string;
  label: string;
  /** The era asked for. */
  era: ClientEra;
  /** The era the run spoke in the end (a dual-era client that fell back speaks legacy). */
  spoke: Era;
  eraFallback: boolean;
  result: DoctorResult;
  /** Where it failed (or was not followed); "network" when nothing reached the server. */
  failedStep: HandshakeStep | "network" | null;
  detail: string;
  diagnosis?: { code: string; summary: string; fix: string; reference: string };
  /** What the analyser found short of a failure (a slow answer, a header clients tolerate…). */
  warnings: Array<{ code: string; summary: string }>;
  evidence: EvidenceExcerpt[];
  steps: StepOutcome[];
}

export interface CheckOptions {
  /** A bearer the server accepts: the run continues with the authenticated MCP requests and the era's stream. */
  token?: string;
  /** Per request, over the profile's own. */
  timeoutMs?: number;
  /** Also call the first listed tool (side effects: only when asked). */
  toolCall?: boolean;
  /** The client's Client ID Metadata Document, read and usable (metadata-document.ts). */
  document?: { url: string; redirectUris: string[] };
  /** Origins besides the given one and its authorization server that may be dialled (replay's --allow-origin). */
  allowedOrigins?: readonly string[];
  /** What the user can do about an origin that was not followed. */
  notFollowedHint: (origin: string) => string;
  /** A re-run: where the given origin is dialled, what a front would add, and the recorded public origins mapped onto it. */
  via?: string;
  forwardHeaders?: Record<string, string>;
  mappedOrigins?: string[];
}

const EXCERPT_CHARS = 300;

/** Runs one client in one era; a run that throws (a bug meeting what a server sent) is that client's failed check. */
export async function checkClient(url: string, profile: DoctorProfile, era: ClientEra, options: CheckOptions): Promise<{ row: DoctorRow; run?: ConnectorRun }> {
  const document = profile.usesMetadataDocument ? options.document : undefined;
  const seed = profile.seed;
  const run = await runConnector(url, {
    ...(profile.userAgent ? { userAgent: profile.userAgent } : {}),
    ...(profile.accept ? { accept: profile.accept } : {}),
    ...(profile.origin ? { origin: profile.origin } : {}),
    initialize: seed?.initialize ?? { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: profile.clientInfo },
    modern: seed?.modern ?? { protocolVersion: MODERN_PROTOCOL_VERSION, clientInfo: profile.clientInfo, clientCapabilities: {} },
    ...(seed ? { opening: seed.opening } : {}),
    ...(seed?.resource ? { resource: seed.resource } : {}),
    ...(seed?.scope ? { scope: seed.scope } : {}),
    registration: document ? { ...profile.registration, redirect_uris: document.redirectUris } : profile.registration,
    ...(document ? { clientMetadataUrl: document.url } : {}),
    era,
    ...(options.via ? { via: options.via } : {}),
    ...(options.forwardHeaders ? { forwardHeaders: options.forwardHeaders } : {}),
    ...(options.mappedOrigins?.length ? { mappedOrigins: options.mappedOrigins } : {}),
    allowedOrigins: [...(options.allowedOrigins ?? [])],
    followAuthorizationServer: true,
    auth: options.token ? { bearer: options.token } : "sign_in",
    timeoutMs: options.timeoutMs ?? profile.timeoutMs,
    toolCall: options.toolCall === true,
    stream: true,
    notFollowedHint: options.notFollowedHint,
  }).catch((error: Error) => error);
  if (run instanceof Error) return { row: failedBeforeHttp(profile, era, null, `the check could not finish: ${run.message}`) };
  return { row: rowOf(profile, era, run, options.token ? [options.token] : []), run };
}

/** A check that could not start: nothing reached the server, or the client's own document is unusable. */
export function failedBeforeHttp(profile: DoctorProfile, era: ClientEra, failedStep: DoctorRow["failedStep"], detail: string): DoctorRow {
  const spoke: Era = era === "legacy" ? "legacy" : "modern";
  return { profile: profile.name, label: profile.label, era, spoke, eraFallback: false, result: "fails", failedStep, detail, warnings: [], evidence: [], steps: [] };
}

function rowOf(profile: DoctorProfile, era: ClientEra, run: ConnectorRun, secrets: readonly string[]): DoctorRow {
  // Every run is judged: a passing one may still carry warnings, or a step the client's own checks
  // let through and the analyser judges failed (an authorization response without the iss its
  // server promised): the analyser's word decides, as it does for live traffic. Only a failed
  // step counts, not an error alone: a run stopped at the sign-in page is, to the analyser, a
  // client that went away, which no rule may hold against the server.
  const { diagnoses, exchanges, handshake } = judgeRun(run, secrets);
  const errors = diagnoses.filter((d) => d.severity === "error");
  const warnings = diagnoses.filter((d) => d.severity !== "error").map((d) => ({ code: d.code, summary: d.summary }));
  const judgedFailed = !run.failedAt && !run.notFollowed && errors.length > 0 ? (handshake?.failedStep ?? null) : null;
  const failedAt = run.failedAt ?? judgedFailed;
  const top = errors[0] ?? diagnoses[0];
  // The step the analyser failed is failed in the row's steps too (the client's own check passed it).
  const steps = judgedFailed ? run.steps.map((s) => (s.step === judgedFailed && s.status === "ok" ? { ...s, status: "failed" as const, detail: top?.summary ?? "" } : s)) : run.steps;
  const base = { profile: profile.name, label: profile.label, era, spoke: run.era, eraFallback: run.eraFallback, steps };
  if (failedAt) {
    return {
      ...base,
      result: "fails",
      failedStep: failedAt,
      detail: run.error ?? top?.summary ?? "",
      ...(top ? { diagnosis: { code: top.code, summary: top.summary, fix: top.fix, reference: top.reference } } : {}),
      warnings: warnings.filter((w) => w.code !== top?.code),
      evidence: excerpts(exchanges, top?.evidence.length ? top.evidence : exchanges.slice(-1).map((e) => e.id)),
    };
  }
  if (run.notFollowed) {
    const why = run.steps.find((s) => s.step === run.notFollowed)?.detail ?? "not followed";
    return { ...base, result: "not_checked", failedStep: run.notFollowed, detail: why, warnings, evidence: [] };
  }
  const waiting = run.steps.some((s) => s.skipped === "needs_user");
  const done = run.steps.filter((s) => s.status === "ok").map((s) => s.step);
  return {
    ...base,
    result: waiting ? "ready_for_sign_in" : "connects",
    failedStep: null,
    detail: waiting ? `${done.join(", ")} ok; the rest needs the user's sign-in (--token to check the MCP steps)` : `${done.join(", ")} ok`,
    warnings,
    evidence: [],
  };
}

function excerpts(exchanges: readonly ClassifiedExchange[], ids: readonly number[]): EvidenceExcerpt[] {
  return ids.flatMap((id) => {
    const e = exchanges.find((x) => x.id === id);
    if (!e) return [];
    const text = e.responseBody.encoding === "utf8" ? (e.responseBody.text ?? "") : e.responseBody.text ? "(not text)" : "";
    return [{ exchangeId: id, request: `${e.method} ${e.host ?? ""}${e.path}`, status: e.status ?? null, body: text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS)}…` : text }];
  });
}
