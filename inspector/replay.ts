// Re-run of a recorded handshake: the same handshake performed NOW, as the same client, against a
// target (the proxy's own URL by default, so the re-run is recorded like any traffic; or the public
// URL), then compared step by step with the original.
//
// A recording is hostile input: whoever reached the proxy chose its Host, X-Forwarded-*, paths and
// bodies. So the re-run dials ONLY the target origin: the connector URL is the target's origin
// plus the recorded path; the connector's public origin as recorded (the X-Forwarded-Proto/-Host
// the upstream received, else Host) is mapped onto the target (a URL the server advertises there
// is dialled at the target), never dialled itself. A URL the server advertises on any other origin
// (an authorization server elsewhere, a registration endpoint) is followed only when the operator
// names that origin (--allow-origin); otherwise the step is reported "not followed: … on another
// origin" and not performed, and the run stops there. No recorded Host, X-Forwarded-Host/-Proto
// or Origin-derived host goes out: Host and TLS SNI are always the dialled origin's, and --token
// goes only to the target origin (inspector/connector.ts enforces both per request).
//
// In the same era: a handshake recorded as modern (2026-07-28) is re-run by a modern-only client
// (server/discover — or tools/list when that was the client's opening — then tools/list, each
// request self-contained with `_meta` and the MCP-Protocol-Version / Mcp-Method / Mcp-Name headers;
// no initialize, session, GET or DELETE); one whose client fell back from modern to initialize
// (eraFallback) by a dual-era client (modern first; initialize after a 4xx without a recognized
// modern error); a legacy one as before; an "unknown" one (no MCP request recorded: it stopped in
// discovery) by a legacy client, as the hosted connectors of 2025 are. `era` (--era) overrides it:
// modern, legacy or dual. The era comes from the analyser's handshake, else (a database recorded
// before eras were analysed) from the recorded requests themselves.
//
// As the same client: from the recorded exchanges it takes, each type-checked and size-bounded,
// the User-Agent, the Accept and the initialize params (protocol version, capabilities,
// clientInfo) of the probe, or the `_meta` of its first modern request (protocol version,
// clientInfo, clientCapabilities) — each era's params made from the other's when the recording has
// only one, for a re-run in another era —, its Origin (a browser client), and the registration payload REBUILT
// from the known RFC 7591 fields the client posted (client_name, redirect_uris, grant_types,
// response_types, token_endpoint_auth_method, scope, application_type, software_id/_version;
// unknown fields and redacted values dropped; never the raw recorded body), else the known
// client's, by family. The resource and scope of its authorize/token requests, and PKCE S256 with
// a fresh verifier, belong to the authorize and token requests, which a re-run does not send
// (below). Every request and answer is bounded (timeoutMs, 1 MiB) and nothing is retried.
//
// The browser authorize step is never replayed. Without a token the run goes probe → discovery →
// registration and stops where the user is needed: authorize, callback, token and the MCP steps
// (initialize, initialized and list; or discover and list) are "skipped". With a token,
// authorize/callback/token are skipped and the token is the Bearer of the MCP steps (one of the
// server's access tokens, or a raw Coda API token for the bundled server). tools/call, the GET
// stream, subscriptions/listen, teardown and refresh are never replayed (side effects, or optional).
//
// Verdict (binary):
//   now_passes  no step the re-run performed failed, AND the step the original failed at
//               (handshake.failedStep) is ok in the re-run, or was skipped because the server no
//               longer needs it (it answered the unauthenticated initialize: no OAuth at all). A
//               re-run in another era than the original checks the connection's opening in its
//               own era: initialize/initialized by discover (else list), discover by initialize;
//   still_fails otherwise. Two cases:
//     - a step failed: failedStep/code are the re-run's ("still fails at X: code — detail");
//     - a step was not followed (another origin, not allowed): failedStep is that step, code null,
//       and the summary says "not re-checked: … not followed";
//     - nothing failed, but the original's failed step could not be re-checked (it needs the
//       user's browser, e.g. token without --token; or the re-run does not replay it): failedStep is
//       the original's, code is null, and the summary says "not re-checked: could not re-check X
//       without --token; …" — the third wording: neither "now passes" nor a failure seen again.
//
// `code` is the analyser's (inspector/judge-run.ts): the re-run's exchanges, as the connector sent and received them, are
// redacted (with a key of its own, in memory), classified, grouped and diagnosed by the very rules
// that judge live traffic (analysis/), and the most decisive diagnosis of the handshake that failed
// is the code. One diagnosis, whether the traffic came from a user or from a re-run; when the
// target is the proxy, it records and diagnoses the same exchanges once more.
//
// `same` per step: the re-run's status equals the original's, "skipped" and "not_reached" counting as "absent".
// `era` is the client the re-run played, `eraFallback` whether it (dual-era) fell back to
// initialize; a summary of a re-run that did not play a legacy client ends with the era ("; as a
// modern (2026-07-28) client", "; as a dual-era client, which fell back to initialize").
import { CLIENT_CAPABILITIES_META_KEY } from "@modelcontextprotocol/client";
import { HOSTED_FAMILIES } from "../analysis/client-family.js";
import type { ClassifiedExchange, Era } from "../analysis/exchange.js";
import { HANDSHAKE_STEPS, type DiagnosisCode, type HandshakeEra, type HandshakeStep } from "../analysis/handshake.js";
import { META_CLIENT_INFO, META_PROTOCOL_VERSION } from "../analysis/mcp-facts.js";
import { fingerprintsIn } from "../analysis/redacted.js";
import { type ClientEra, KNOWN_CLIENTS, LATEST_PROTOCOL_VERSION, MCP_ACCEPT, MODERN_PROTOCOL_VERSION, type ModernClient, type Registration, registrationPayload } from "./clients.js";
import type { ConnectorRun, StepOutcome } from "./connector.js";
import type { HandshakeDetail } from "./data.js";
import { checkClient, type DoctorRow } from "./doctor/check.js";
import { checkNetwork } from "./doctor/network.js";
import type { DoctorProfile } from "./doctor/profiles.js";

export interface ReplayOptions {
  /** Base URL the re-run dials: the proxy's URL (recorded like any traffic) or the public URL. */
  target: string;
  /** A bearer (or a raw Coda API token) for the MCP steps; without it the run stops at the sign-in page. */
  token?: string;
  /** Per request; default 10 000 ms, like hosted clients. */
  timeoutMs?: number;
  /** Origins besides the target's and its authorization server's that the re-run may dial when the server sends it there (--allow-origin). */
  allowOrigins?: string[];
  /** The client's era (--era); default as recorded: modern, dual (it fell back) or legacy (also for unknown). */
  era?: ClientEra;
}

export interface ReplayStep {
  step: HandshakeStep;
  original: { status: "ok" | "failed" | "absent"; exchangeIds: number[] };
  rerun: { status: "ok" | "failed" | "skipped" | "not_reached"; httpStatus?: number; detail?: string };
  same: boolean;
}

export interface ReplayResult {
  handshakeId: number;
  target: string;
  verdict: "now_passes" | "still_fails";
  /** Where the re-run failed (or was not followed, or could not re-check); "network" when nothing reached the target. */
  failedStep: HandshakeStep | "network" | null;
  code: DiagnosisCode | null;
  summary: string;
  steps: ReplayStep[];
  /** The client the re-run played: modern (2026-07-28 only), legacy, or dual-era. */
  era: ClientEra;
  /** The re-run (a dual-era client) fell back to initialize: the server does not speak the modern era. */
  eraFallback: boolean;
  /** The analyser's diagnosis of the re-run's failure, with its fix, and the exchanges (redacted) that prove it. */
  diagnosis?: DoctorRow["diagnosis"];
  evidence: DoctorRow["evidence"];
  /** What the analyser found short of a failure. */
  warnings: DoctorRow["warnings"];
  /** Every origin the re-run dialled: the target's, and the authorization server its metadata named (or --allow-origin). */
  dialled: string[];
}

const BROWSER_KINDS = new Set(["authorize", "authorize_consent"]);

const SKIP_DETAIL = {
  needs_user: "needs the user's sign-in in a browser: pass --token to check the MCP steps",
  credential_given: "replaced by the given token",
} as const;

/** The step of the other era that checks the same thing: the connection's opening. */
const OPENING_IN_OTHER_ERA: Partial<Record<HandshakeStep, HandshakeStep[]>> = {
  initialize: ["discover", "list"],
  initialized: ["discover", "list"],
  discover: ["initialize"],
};

const ERA_WORDS: Record<ClientEra, string> = { modern: "a modern (2026-07-28) client", legacy: "a legacy client", dual: "a dual-era client" };

export async function replayHandshake(detail: HandshakeDetail, options: ReplayOptions): Promise<ReplayResult> {
  const { handshake } = detail;
  const { url, recorded, profile, mappedOrigins } = clientOf(detail, options.target);
  const era = options.era ?? (recorded.eraFallback ? "dual" : recorded.era === "modern" ? "modern" : "legacy");
  const target = new URL(options.target);
  const timeoutMs = options.timeoutMs ?? 10_000;
  const same = { handshakeId: handshake.id, target: options.target, era, warnings: [], evidence: [] };

  // Doctor's checks, in doctor's order: first what comes before HTTP (name, TCP, TLS).
  const network = await checkNetwork(new URL(url), timeoutMs);
  if (!network.ok) {
    const steps = compare(handshake, [], undefined);
    const summary = `still fails: ${network.problem ?? `nothing reaches ${target.origin}`}`;
    return { ...same, verdict: "still_fails", failedStep: "network", code: null, summary, steps, eraFallback: false, dialled: [target.origin] };
  }
  // Then the handshake, as doctor performs it for its own clients, with the recorded client's parameters.
  const { row, run } = await checkClient(url, profile, era, {
    ...(options.token ? { token: options.token } : {}),
    timeoutMs,
    via: target.origin,
    // The scheme the re-run really uses, as a front proxy would pass it: a fact about the target,
    // not a recorded claim. Without it the analyser would take the proxy's default for a hosted
    // client behind a TLS front that forgot the header, and diagnose the re-run's own http.
    forwardHeaders: { "x-forwarded-proto": target.protocol.slice(0, -1) },
    mappedOrigins,
    allowedOrigins: options.allowOrigins ?? [],
    notFollowedHint: (origin) => `--allow-origin ${origin} to follow`,
  });
  if (!run) {
    return { ...same, verdict: "still_fails", failedStep: null, code: null, summary: row.detail, steps: compare(handshake, [], undefined), eraFallback: false, dialled: [target.origin] };
  }

  const ran = new Map(run.steps.map((s) => [s.step, s]));
  const steps = compare(handshake, run.plan, run);
  const ok = steps.filter((s) => s.rerun.status === "ok").map((s) => s.step);
  const passing = ok.length ? `${ok.join(", ")} ok` : "no step ran";
  const base = { ...same, steps, eraFallback: run.eraFallback, warnings: row.warnings, dialled: run.dialled };
  // How the re-run spoke, when not as a legacy client (the wording before there were eras).
  const asClient = era === "legacy" ? "" : `as ${ERA_WORDS[era]}${era === "dual" ? (run.eraFallback ? ", which fell back to initialize" : ", which stayed modern") : ""}`;
  const withEra = (summary: string) => (asClient ? `${summary}; ${asClient}` : summary);
  const before = handshake.failedStep;
  if (row.result === "fails") {
    const code = (row.diagnosis?.code as DiagnosisCode | undefined) ?? null;
    const was = before && before !== row.failedStep ? ` (originally failed at ${before})` : "";
    const summary = `still fails at ${row.failedStep ?? "?"}${code ? `: ${code}` : ""}${was} — ${row.detail}`.trim();
    return { ...base, verdict: "still_fails", failedStep: row.failedStep, code, summary: withEra(summary), evidence: row.evidence, ...(row.diagnosis ? { diagnosis: row.diagnosis } : {}) };
  }
  if (row.result === "not_checked" && run.notFollowed) {
    const summary = `not re-checked: ${run.notFollowed} ${row.detail}; the steps that ran pass now: ${passing}`;
    return { ...base, verdict: "still_fails", failedStep: run.notFollowed, code: null, summary: withEra(summary) };
  }
  const recheck = before ? recheckOf(before, ran) : undefined;
  if (!before || recheck?.status === "ok" || recheck?.skipped === "authless") {
    const unchecked = steps.filter((s) => s.rerun.status === "skipped" && ran.get(s.step)?.skipped === "needs_user").map((s) => s.step);
    const summary = [
      `now passes: ${passing}`,
      before ? `originally failed at ${before}` : "",
      unchecked.length ? `${unchecked.join(", ")} not checked without --token` : "",
    ].filter(Boolean).join("; ");
    return { ...base, verdict: "now_passes", failedStep: null, code: null, summary: withEra(summary) };
  }
  const why = !run.plan.includes(before) && !recheck
    ? `: the re-run does not replay ${before}`
    : recheck?.skipped === "credential_given"
      ? ": with --token, authorize, callback and token are not replayed (without it, authorize is re-checked up to the sign-in page)"
      : " without --token";
  const summary = `not re-checked: could not re-check ${before}${why}; the steps that ran pass now: ${passing}`;
  return { ...base, verdict: "still_fails", failedStep: before, code: null, summary: withEra(summary) };
}

/** The recorded handshake's steps next to the re-run's (none when it never started). */
function compare(handshake: HandshakeDetail["handshake"], plan: readonly HandshakeStep[], run: ConnectorRun | undefined): ReplayStep[] {
  const ran = new Map((run?.steps ?? []).map((s) => [s.step, s]));
  const planned = new Set(plan);
  return HANDSHAKE_STEPS.filter((step) => planned.has(step) || handshake.steps.some((r) => r.step === step)).map((step): ReplayStep => {
    const records = handshake.steps.filter((r) => r.step === step);
    const failed = handshake.failedStep === step || records.some((r) => r.status === "failed");
    const original = { status: records.length === 0 && !failed ? "absent" : failed ? "failed" : "ok", exchangeIds: records.flatMap((r) => r.exchangeIds) } as const;
    const rerun: ReplayStep["rerun"] = run ? rerunOf(step, ran.get(step), run) : { status: "not_reached", detail: "nothing reached the target" };
    const observed = rerun.status === "ok" || rerun.status === "failed" ? rerun.status : "absent";
    return { step, original, rerun, same: observed === original.status };
  });
}

/** What re-checks the step the original failed at: the same step, else its counterpart in the era the re-run spoke. */
function recheckOf(before: HandshakeStep, ran: Map<HandshakeStep, StepOutcome>): StepOutcome | undefined {
  const same = ran.get(before);
  if (same) return same;
  for (const step of OPENING_IN_OTHER_ERA[before] ?? []) {
    const other = ran.get(step);
    if (other && other.skipped !== "era_fallback") return other;
  }
  return undefined;
}

function rerunOf(step: HandshakeStep, outcome: StepOutcome | undefined, run: ConnectorRun): ReplayStep["rerun"] {
  if (outcome) {
    const detail =
      outcome.skipped === "authless"
        ? `not needed: ${outcome.detail?.replace(/: no OAuth needed$/, "") ?? "the server answered the unauthenticated request"}`
        : outcome.skipped === "needs_user" || outcome.skipped === "credential_given"
          ? SKIP_DETAIL[outcome.skipped]
          : outcome.detail;
    return { status: outcome.status, ...(outcome.httpStatus !== undefined ? { httpStatus: outcome.httpStatus } : {}), ...(detail ? { detail } : {}) };
  }
  if (!run.plan.includes(step)) {
    const other = run.era === "modern" ? ["initialize", "initialized"] : ["discover"];
    return other.includes(step)
      ? { status: "skipped", detail: `not in the ${run.era === "modern" ? "2026-07-28 (modern)" : "legacy"} era the re-run spoke` }
      : { status: "skipped", detail: `not replayed: ${step} is left to the client's own use` };
  }
  return { status: "not_reached", ...(run.failedAt ? { detail: `the re-run stopped at ${run.failedAt}` } : {}) };
}

// ---------------------------------------------------------------------------------------------
// The client, as the recording shows it

/** The recorded client as doctor plays it: a profile of its own, on the target. */
interface Client {
  /** The connector URL on the target. */
  url: string;
  /** The era the recording shows, and whether its client fell back from modern to initialize. */
  recorded: { era: HandshakeEra; eraFallback: boolean };
  profile: DoctorProfile;
  /** The public origin the upstream saw, dialled at the target (none when it is the target's). */
  mappedOrigins: string[];
}

const header = (e: ClassifiedExchange | undefined, name: string) => e?.requestHeaders.find(([n]) => n.toLowerCase() === name)?.[1];
const firstValue = (v: string | undefined) => v?.split(",")[0]?.trim() || undefined;
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function requestJson(e: ClassifiedExchange | undefined): Record<string, unknown> | undefined {
  const body = e?.requestBody;
  if (!body?.text || body.encoding !== "utf8" || body.truncated) return undefined;
  try {
    const json = JSON.parse(body.text) as unknown;
    return isRecord(json) ? json : undefined;
  } catch {
    return undefined;
  }
}

/** A recorded request's era: the analyser's fact, else its body (a `_meta` protocol version, or initialize). */
function eraOfExchange(e: ClassifiedExchange): Era | undefined {
  if (e.facts.mcp?.era) return e.facts.mcp.era;
  const json = requestJson(e);
  const params = isRecord(json?.params) ? json.params : undefined;
  if (isRecord(params?._meta) && typeof params._meta[META_PROTOCOL_VERSION] === "string") return "modern";
  return json?.method === "initialize" || json?.method === "notifications/initialized" ? "legacy" : undefined;
}

/**
 * The handshake's era as the analyser judged it; for a handshake it could not place in one (a
 * database recorded before eras were analysed), the era of its last MCP request, and a fallback
 * when a legacy request followed a modern one.
 */
function recordedEra(handshake: HandshakeDetail["handshake"], mcp: ClassifiedExchange[]): Client["recorded"] {
  if (handshake.era === "modern" || handshake.era === "legacy") return { era: handshake.era, eraFallback: handshake.eraFallback === true };
  const eras = mcp.flatMap((e) => eraOfExchange(e) ?? []);
  const firstModern = eras.indexOf("modern");
  return { era: eras.at(-1) ?? "unknown", eraFallback: firstModern !== -1 && eras.slice(firstModern).includes("legacy") };
}

const requestsInitialize = (e: ClassifiedExchange) => e.facts.mcp?.methods.includes("initialize") === true || requestJson(e)?.method === "initialize";

function clientOf({ handshake, exchanges }: HandshakeDetail, target: string): Client {
  const sorted = [...exchanges].sort((a, b) => a.id - b.id);
  const mcp = sorted.filter((e) => e.kind.startsWith("mcp_"));
  const recorded = recordedEra(handshake, mcp);
  const unauthenticated = mcp.filter((e) => e.facts.bearerFingerprint === undefined);
  const isModern = (e: ClassifiedExchange) => eraOfExchange(e) === "modern";
  // The client's opening without credentials: initialize, or its first modern request.
  const probe = unauthenticated.find((e) => requestsInitialize(e) || isModern(e)) ?? unauthenticated[0] ?? mcp[0];
  const initializing = unauthenticated.find(requestsInitialize) ?? mcp.find(requestsInitialize);
  const modernFirst = unauthenticated.find(isModern) ?? mcp.find(isModern);
  const backend = sorted.filter((e) => !BROWSER_KINDS.has(e.kind));
  const known = handshake.clientFamily in KNOWN_CLIENTS ? KNOWN_CLIENTS[handshake.clientFamily as keyof typeof KNOWN_CLIENTS] : undefined;
  const fact = <T>(pick: (e: ClassifiedExchange) => T | undefined) => sorted.map(pick).find((v) => v !== undefined);

  // The connector URL: the target's origin and the path the client used (a path only: "//host"
  // or anything else that would change the origin is not a path).
  const targetOrigin = new URL(target).origin;
  const source = probe ?? backend[0] ?? sorted[0];
  const resource = text(fact((e) => (BROWSER_KINDS.has(e.kind) || e.kind === "token" ? e.facts.resource : undefined)), 2048);
  const prmPath = sorted.find((e) => e.kind === "protected_resource_metadata" && e.facts.wellKnownVariant === "path_inserted")?.path.replace(/^\/\.well-known\/oauth-protected-resource/, "");
  const path = [probe?.path, resource ? safeUrl(resource)?.pathname : undefined, prmPath].find(isPath) ?? "/mcp";
  const url = safeUrl(`${targetOrigin}${path}`);
  const connectorUrl = url && url.origin === targetOrigin ? url.href : `${targetOrigin}/mcp`;

  // The public origin the upstream saw (recorded headers are what it received): mapped onto the
  // target, so URLs a server with a fixed public URL advertises are dialled at the target.
  const host = firstValue(header(source, "x-forwarded-host")) ?? source?.host ?? undefined;
  const scheme = firstValue(header(source, "x-forwarded-proto")) ?? (HOSTED_FAMILIES.has(handshake.clientFamily) ? "https" : "http");
  const publicOrigin = host && /^https?$/.test(scheme) ? safeUrl(`${scheme}://${host}`)?.origin : undefined;

  // Each era's params, the one from the other when the recording shows only one era.
  const initialize = requestJson(initializing ?? probe);
  const params = initialize?.method === "initialize" && isRecord(initialize.params) ? initialize.params : undefined;
  const modernJson = requestJson(modernFirst);
  const meta = isRecord(modernJson?.params) && isRecord(modernJson.params._meta) ? modernJson.params._meta : undefined;
  const info = (initializing ?? probe)?.facts.mcp;
  const clientInfo =
    clientInfoOf(params?.clientInfo) ??
    clientInfoOf(meta?.[META_CLIENT_INFO]) ??
    clientInfoOf(info?.clientInfo) ??
    clientInfoOf(modernFirst?.facts.mcp?.clientInfo) ??
    known?.clientInfo ?? { name: text(handshake.clientName, 200) ?? "mcp-lens replay", version: "0" };
  const capabilities = boundedRecord(params?.capabilities) ?? boundedRecord(meta?.[CLIENT_CAPABILITIES_META_KEY]) ?? {};
  const protocolVersion = text(params?.protocolVersion, 64) ?? text(info?.protocolVersionRequested, 64) ?? LATEST_PROTOCOL_VERSION;
  const modern: ModernClient = {
    protocolVersion: text(meta?.[META_PROTOCOL_VERSION], 64) ?? text(modernFirst?.facts.mcp?.metaProtocolVersion, 64) ?? MODERN_PROTOCOL_VERSION,
    clientInfo,
    clientCapabilities: boundedRecord(meta?.[CLIENT_CAPABILITIES_META_KEY]) ?? capabilities,
  };
  // Its first modern request: server/discover when it sent one, else tools/list when it opened with that.
  const modernMethods = mcp.filter(isModern).flatMap((e) => e.facts.mcp?.methods ?? []);
  const opening = !modernMethods.includes("server/discover") && modernMethods[0] === "tools/list" ? "tools/list" : "server/discover";

  const redirectUri = fact((e) => text(e.facts.redirectUris?.[0], 2048)) ?? known?.redirectUri ?? "http://localhost:33418/callback";
  const registration =
    registrationOf(requestJson(sorted.find((e) => e.kind === "registration" && e.method === "POST"))) ??
    registrationPayload(known?.clientName ?? text(handshake.clientName, 200) ?? "mcp-lens replay", redirectUri, known?.authMethod ?? "none");
  const origin = fact((e) => (BROWSER_KINDS.has(e.kind) ? undefined : e.facts.origin));
  const browserOrigin = origin && safeUrl(origin)?.origin === origin ? origin : undefined;
  const userAgent = headerText(probe?.facts.userAgent ?? fact((e) => (BROWSER_KINDS.has(e.kind) ? undefined : e.facts.userAgent)));
  const accept = probe ? headerText(header(probe, "accept")) : MCP_ACCEPT;
  const scope = text(fact((e) => (BROWSER_KINDS.has(e.kind) ? e.facts.scope : undefined)), 1024);
  const profile: DoctorProfile = {
    name: text(handshake.clientFamily, 64) ?? "recorded",
    label: `the client of handshake #${handshake.id}, as recorded`,
    ...(userAgent ? { userAgent } : {}),
    ...(accept ? { accept } : {}),
    ...(browserOrigin ? { origin: browserOrigin } : {}),
    clientInfo,
    registration,
    era: "legacy", // unused: the re-run's era is chosen above
    timeoutMs: 10_000,
    recorded: { initialize: { protocolVersion, capabilities, clientInfo }, modern, opening, ...(resource ? { resource } : {}), ...(scope ? { scope } : {}) },
  };
  return { url: connectorUrl, recorded, profile, mappedOrigins: publicOrigin && publicOrigin !== targetOrigin ? [publicOrigin] : [] };
}

/** A recorded string, when it is one, printable (no control characters) and at most `max` long. */
function text(value: unknown, max: number): string | undefined {
  return typeof value === "string" && value.length > 0 && value.length <= max && !/[\u0000-\u001f\u007f-\u009f]/.test(value) ? value : undefined;
}

/** A header value Node will send as is (HTAB, visible ASCII and obs-text), bounded. */
const headerText = (value: string | undefined) => (value !== undefined && value.length <= 1024 && /^[\t\x20-\x7e\x80-\xff]*$/.test(value) ? value : undefined);

const isPath = (p: string | undefined): p is string => typeof p === "string" && p.length <= 2048 && /^\/(?!\/)[\x21-\x7e]*$/.test(p) && !p.includes("\\");

/** A recorded object (capabilities) when its JSON is at most 8 KiB. */
const boundedRecord = (value: unknown) => (isRecord(value) && JSON.stringify(value).length <= 8192 ? value : undefined);

function clientInfoOf(value: unknown): { name: string; version: string } | undefined {
  if (!isRecord(value)) return undefined;
  const name = text(value.name, 200);
  return name ? { name, version: text(value.version, 64) ?? "0" } : undefined;
}

const STRING_FIELDS = { client_name: 200, token_endpoint_auth_method: 64, scope: 1024, application_type: 32, software_id: 200, software_version: 64 } as const;
const LIST_FIELDS = { redirect_uris: 2048, grant_types: 128, response_types: 64 } as const;
const MAX_LIST = 10;

/**
 * The client's registration rebuilt from the RFC 7591 fields a re-run needs, each type-checked and
 * bounded; anything else the recorded body held (unknown fields, URLs the AS would fetch, a
 * redacted secret) is dropped. Undefined without usable redirect_uris.
 */
function registrationOf(recorded: Record<string, unknown> | undefined): Registration | undefined {
  if (!recorded) return undefined;
  const clean = (v: string | undefined) => (v !== undefined && fingerprintsIn(v).length === 0 ? v : undefined);
  const out: Record<string, unknown> = {};
  for (const [name, max] of Object.entries(STRING_FIELDS)) {
    const v = clean(text(recorded[name], max));
    if (v !== undefined) out[name] = v;
  }
  for (const [name, max] of Object.entries(LIST_FIELDS)) {
    const list = recorded[name];
    if (!Array.isArray(list) || list.length === 0 || list.length > MAX_LIST) continue;
    const items = list.map((v) => clean(text(v, max)));
    if (items.every((v): v is string => v !== undefined)) out[name] = items;
  }
  const uris = out.redirect_uris as string[] | undefined;
  if (!uris?.every((u) => /^[a-z][a-z0-9+.-]*:/i.test(u) && safeUrl(u))) return undefined;
  return out as unknown as Registration;
}

function safeUrl(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}

/** For the unit tests: the registration a re-run would send for a recorded body. */
export const registrationOfForTest = registrationOf;
