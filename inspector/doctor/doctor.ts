// `mcp-lens doctor URL`: the connector handshake performed now, as each client performs it and in
// the era it speaks, against any MCP server (with or without mcp-lens in front), after the checks
// that come before HTTP (network.ts). Each run is inspector/connector.ts's, judged by the same
// analysis as live traffic (../judge-run.ts); what it reports per client and era: connects (with
// --token, which also opens the era's stream: the GET stream or subscriptions/listen), ready for
// the user's sign-in (without), or fails at a step, with the diagnosis, its fix and the exchanges
// that prove it (redacted); and whether the authorization server advertises refresh tokens.
//
// Safe by construction: it dials the given URL's origin and, once the server's own Protected
// Resource Metadata names one, that authorization server's origin; nothing else (a URL elsewhere
// is reported, not followed). --token goes to the given origin only (connector-wire.ts); what it
// prints is the redacted recording of its own exchanges and the servers' answers, with the token
// replaced wherever a server echoed it.
import type { ClassifiedExchange, Era } from "../../analysis/exchange.js";
import type { HandshakeStep } from "../../analysis/handshake.js";
import { LATEST_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSION, type ClientEra } from "../clients.js";
import { runConnector, type ConnectorRun, type StepOutcome } from "../connector.js";
import { judgeRun, SECRET_MARK } from "../judge-run.js";
import { checkNetwork, type NetworkCheck } from "./network.js";
import type { DoctorProfile } from "./profiles.js";
import { readClientMetadataDocument } from "./metadata-document.js";
import { recordRuns, type RecordedRuns } from "./record.js";

export interface DoctorOptions {
  profiles: readonly DoctorProfile[];
  /** The eras to play each profile in; empty: each profile's own. */
  eras: readonly ClientEra[];
  /** A bearer the server accepts: the run continues with the authenticated MCP requests. */
  token?: string;
  /** Per request, over each profile's own; default the profile's (10 s, like hosted clients). */
  timeoutMs?: number;
  /** Also call the first listed tool (with --token; side effects: only when asked). */
  toolCall?: boolean;
  /** Store the runs' exchanges and handshakes in this recording database (record.ts). */
  db?: string;
  /** The operator's Client ID Metadata Document, for the clients that use one. */
  clientMetadataUrl?: string;
}

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

export interface DoctorReport {
  url: string;
  network: NetworkCheck;
  rows: DoctorRow[];
  /** Every origin any run dialled: the given one and the authorization servers its metadata named. */
  dialled: string[];
  /** Every row connects or is ready for the user's sign-in. */
  ok: boolean;
  /** Whether the authorization server's metadata advertises the refresh_token grant (when a run read it). */
  refreshToken?: "advertised" | "not_advertised" | "not_said";
  /** With --db: what was stored there, or why nothing was. */
  recorded?: RecordedRuns | { db: string; error: string };
}

const PASSING: ReadonlySet<DoctorResult> = new Set(["connects", "ready_for_sign_in"]);
const EXCERPT_CHARS = 300;

export async function runDoctor(url: string, options: DoctorOptions): Promise<DoctorReport> {
  const target = new URL(url);
  const network = await checkNetwork(target, options.timeoutMs ?? 10_000);
  const plan = options.profiles.flatMap((profile) => (options.eras.length ? options.eras : [profile.era]).map((era) => ({ profile, era })));
  const rows: DoctorRow[] = [];
  const dialled = new Set<string>();
  // Read once, only when a client that uses it is asked for and the network is there.
  const wantsDocument = options.clientMetadataUrl !== undefined && network.ok && options.profiles.some((p) => p.usesMetadataDocument);
  const document = wantsDocument ? await readClientMetadataDocument(options.clientMetadataUrl!, options.timeoutMs ?? 10_000) : undefined;
  if (wantsDocument) dialled.add(new URL(options.clientMetadataUrl!).origin);
  let refreshToken: DoctorReport["refreshToken"];
  const runs: ConnectorRun[] = [];
  const secrets = options.token ? [options.token] : [];
  for (const { profile, era } of plan) {
    if (!network.ok) {
      rows.push(failedBeforeHttp(profile, era, "network", network.problem ?? ""));
      continue;
    }
    const usable = profile.usesMetadataDocument === true ? document : undefined;
    if (usable instanceof Error) {
      rows.push(failedBeforeHttp(profile, era, "registration", usable.message));
      continue;
    }
    // A run that throws (a bug meeting what a server sent) is that client's failed check, not the end of the report.
    const run = await runConnector(target.href, {
      ...(profile.userAgent ? { userAgent: profile.userAgent } : {}),
      ...(profile.accept ? { accept: profile.accept } : {}),
      ...(profile.origin ? { origin: profile.origin } : {}),
      initialize: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: profile.clientInfo },
      modern: { protocolVersion: MODERN_PROTOCOL_VERSION, clientInfo: profile.clientInfo, clientCapabilities: {} },
      registration: usable ? { ...profile.registration, redirect_uris: usable.redirectUris } : profile.registration,
      ...(usable ? { clientMetadataUrl: usable.url } : {}),
      era,
      allowedOrigins: [],
      followAuthorizationServer: true,
      auth: options.token ? { bearer: options.token } : "sign_in",
      timeoutMs: options.timeoutMs ?? profile.timeoutMs,
      toolCall: options.toolCall === true,
      stream: true,
      notFollowedHint: () => "doctor dials only the server's origin and the authorization server its metadata names",
    }).catch((error: Error) => error);
    if (run instanceof Error) {
      rows.push(failedBeforeHttp(profile, era, null, `doctor could not finish this check: ${run.message}`));
      continue;
    }
    runs.push(run);
    for (const origin of run.dialled) dialled.add(origin);
    refreshToken ??= run.refreshToken;
    rows.push(rowOf(profile, era, run, secrets));
  }
  // A database that cannot take the checks loses them, not the report.
  let recorded: RecordedRuns | { db: string; error: string } | undefined;
  if (options.db !== undefined) {
    try {
      recorded = recordRuns(options.db, runs, secrets);
    } catch (error) {
      recorded = { db: options.db, error: (error as Error).message };
    }
  }
  const report: DoctorReport = {
    url: target.href,
    network,
    rows,
    dialled: [...dialled],
    ok: rows.every((r) => PASSING.has(r.result)),
    ...(refreshToken ? { refreshToken } : {}),
    ...(recorded ? { recorded } : {}),
  };
  // A server may echo the bearer back (in an error, a body): it is never printed.
  return options.token ? withoutSecret(report, options.token) : report;
}

/** Every string of the report with the secret replaced: answers are the server's, and hostile. */
function withoutSecret<T>(value: T, secret: string): T {
  if (typeof value === "string") return value.split(secret).join(SECRET_MARK) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => withoutSecret(v, secret)) as T;
  if (value !== null && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withoutSecret(v, secret)])) as T;
  return value;
}

/** A check that could not start: nothing reached the server, or the client's own document is unusable. */
function failedBeforeHttp(profile: DoctorProfile, era: ClientEra, failedStep: DoctorRow["failedStep"], detail: string): DoctorRow {
  const spoke: Era = era === "legacy" ? "legacy" : "modern";
  return { profile: profile.name, label: profile.label, era, spoke, eraFallback: false, result: "fails", failedStep, detail, warnings: [], evidence: [], steps: [] };
}

function rowOf(profile: DoctorProfile, era: ClientEra, run: ConnectorRun, secrets: readonly string[]): DoctorRow {
  // Every run is judged: a passing one may still carry warnings.
  const { diagnoses, exchanges } = judgeRun(run, secrets);
  const warnings = diagnoses.filter((d) => d.severity !== "error").map((d) => ({ code: d.code, summary: d.summary }));
  const base = { profile: profile.name, label: profile.label, era, spoke: run.era, eraFallback: run.eraFallback, steps: run.steps };
  if (run.failedAt) {
    const top = diagnoses[0];
    return {
      ...base,
      result: "fails",
      failedStep: run.failedAt,
      detail: run.error ?? "",
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
