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
// As the same client: from the recorded exchanges it takes, each type-checked and size-bounded,
// the User-Agent, the Accept and the initialize params (protocol version, capabilities,
// clientInfo) of the probe, its Origin (a browser client), and the registration payload REBUILT
// from the known RFC 7591 fields the client posted (client_name, redirect_uris, grant_types,
// response_types, token_endpoint_auth_method, scope, application_type, software_id/_version;
// unknown fields and redacted values dropped; never the raw recorded body), else the known
// client's, by family. The resource and scope of its authorize/token requests, and PKCE S256 with
// a fresh verifier, belong to the authorize and token requests, which a re-run does not send
// (below). Every request and answer is bounded (timeoutMs, 1 MiB) and nothing is retried.
//
// The browser authorize step is never replayed. Without a token the run goes probe → discovery →
// registration and stops where the user is needed: authorize, callback, token, initialize,
// initialized and list are "skipped". With a token, authorize/callback/token are skipped and the
// token is the Bearer of initialize → notifications/initialized → tools/list (one of the server's
// access tokens, or a raw Coda API token for the bundled server). tools/call, the GET stream,
// teardown and refresh are never replayed (side effects, or optional).
//
// Verdict (binary):
//   now_passes  no step the re-run performed failed, AND the step the original failed at
//               (handshake.failedStep) is ok in the re-run, or was skipped because the server no
//               longer needs it (it answered the unauthenticated initialize: no OAuth at all);
//   still_fails otherwise. Two cases:
//     - a step failed: failedStep/code are the re-run's ("still fails at X: code — detail");
//     - a step was not followed (another origin, not allowed): failedStep is that step, code null,
//       and the summary says "not re-checked: … not followed";
//     - nothing failed, but the original's failed step could not be re-checked (it needs the
//       user's browser, e.g. token without --token; or the re-run does not replay it): failedStep is
//       the original's, code is null, and the summary says "not re-checked: could not re-check X
//       without --token; …" — the third wording: neither "now passes" nor a failure seen again.
//
// `code` is the analyser's: the re-run's exchanges, as the connector sent and received them, are
// redacted (with a key of its own, in memory), classified, grouped and diagnosed by the very rules
// that judge live traffic (analysis/), and the most decisive diagnosis of the handshake that failed
// is the code. One diagnosis, whether the traffic came from a user or from a re-run; when the
// target is the proxy, it records and diagnoses the same exchanges once more.
//
// `same` per step: the re-run's status equals the original's, "skipped" and "not_reached" counting as "absent".
import { randomBytes } from "node:crypto";
import { createClassifier } from "../analysis/classify.js";
import { HOSTED_FAMILIES } from "../analysis/client-family.js";
import { diagnose } from "../analysis/diagnose/index.js";
import type { ClassifiedExchange } from "../analysis/exchange.js";
import { groupHandshakes } from "../analysis/handshakes.js";
import { HANDSHAKE_STEPS, type DiagnosisCode, type HandshakeStep } from "../analysis/handshake.js";
import { fingerprintsIn } from "../analysis/redacted.js";
import { KNOWN_CLIENTS, LATEST_PROTOCOL_VERSION, MCP_ACCEPT, registrationPayload } from "./clients.js";
import { toRecorded } from "../recording/record.js";
import { createRedactor } from "../recording/redact.js";
import { runConnector, type ConnectorOptions, type ConnectorRun, type StepOutcome } from "./connector.js";
import type { HandshakeDetail } from "./data.js";

export interface ReplayOptions {
  /** Base URL the re-run dials: the proxy's URL (recorded like any traffic) or the public URL. */
  target: string;
  /** A bearer (or a raw Coda API token) for the MCP steps; without it the run stops before authorize. */
  token?: string;
  /** Per request; default 10 000 ms, like hosted clients. */
  timeoutMs?: number;
  /** Origins besides the target's that the re-run may dial when the server sends it there (--allow-origin). */
  allowOrigins?: string[];
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
  failedStep: HandshakeStep | null;
  code: DiagnosisCode | null;
  summary: string;
  steps: ReplayStep[];
}

/** The steps a re-run performs (or skips for want of the user); others are shown only when the original has them. */
const REPLAYED = new Set<HandshakeStep>([
  "probe", "protected_resource_metadata", "authorization_server_metadata", "registration",
  "authorize", "callback", "token", "initialize", "initialized", "list",
]);
const BROWSER_KINDS = new Set(["authorize", "authorize_consent"]);

const SKIP_DETAIL = {
  authless: "not needed: the server answered the unauthenticated initialize",
  needs_user: "needs the user's sign-in in a browser: pass --token to check the MCP steps",
  credential_given: "replaced by the given token",
} as const;

export async function replayHandshake(detail: HandshakeDetail, options: ReplayOptions): Promise<ReplayResult> {
  const { handshake } = detail;
  const { url, ...client } = clientOf(detail, options.target);
  const target = new URL(options.target);
  const run = await runConnector(url, {
    ...client,
    via: target.origin,
    // The scheme the re-run really uses, as a front proxy would pass it: a fact about the target,
    // not a recorded claim. Without it the analyser would take the proxy's default for a hosted
    // client behind a TLS front that forgot the header, and diagnose the re-run's own http.
    forwardHeaders: { "x-forwarded-proto": target.protocol.slice(0, -1) },
    allowedOrigins: options.allowOrigins ?? [],
    auth: options.token ? { bearer: options.token } : "stop",
    timeoutMs: options.timeoutMs ?? 10_000,
  });

  const ran = new Map(run.steps.map((s) => [s.step, s]));
  const steps = HANDSHAKE_STEPS.filter((step) => REPLAYED.has(step) || handshake.steps.some((r) => r.step === step)).map((step): ReplayStep => {
    const records = handshake.steps.filter((r) => r.step === step);
    const failed = handshake.failedStep === step || records.some((r) => r.status === "failed");
    const original = { status: records.length === 0 && !failed ? "absent" : failed ? "failed" : "ok", exchangeIds: records.flatMap((r) => r.exchangeIds) } as const;
    const rerun = rerunOf(step, ran.get(step), run.failedAt);
    const observed = rerun.status === "ok" || rerun.status === "failed" ? rerun.status : "absent";
    return { step, original, rerun, same: observed === original.status };
  });

  const ok = steps.filter((s) => s.rerun.status === "ok").map((s) => s.step);
  const passing = ok.length ? `${ok.join(", ")} ok` : "no step ran";
  const base = { handshakeId: handshake.id, target: options.target, steps };
  const before = handshake.failedStep;
  if (run.failedAt) {
    const code = diagnosisOf(run);
    const was = before && before !== run.failedAt ? ` (originally failed at ${before})` : "";
    const summary = `still fails at ${run.failedAt}${code ? `: ${code}` : ""}${was} — ${run.error ?? ""}`.trim();
    return { ...base, verdict: "still_fails", failedStep: run.failedAt, code, summary };
  }
  if (run.notFollowed) {
    const why = ran.get(run.notFollowed)?.detail ?? "not followed";
    const summary = `not re-checked: ${run.notFollowed} ${why}; the steps that ran pass now: ${passing}`;
    return { ...base, verdict: "still_fails", failedStep: run.notFollowed, code: null, summary };
  }
  const recheck = before ? ran.get(before) : undefined;
  if (!before || recheck?.status === "ok" || recheck?.skipped === "authless") {
    const unchecked = steps.filter((s) => s.rerun.status === "skipped" && ran.get(s.step)?.skipped === "needs_user").map((s) => s.step);
    const summary = [
      `now passes: ${passing}`,
      before ? `originally failed at ${before}` : "",
      unchecked.length ? `${unchecked.join(", ")} not checked without --token` : "",
    ].filter(Boolean).join("; ");
    return { ...base, verdict: "now_passes", failedStep: null, code: null, summary };
  }
  const why = !REPLAYED.has(before)
    ? `: the re-run does not replay ${before}`
    : options.token
      ? ": with --token, authorize, callback and token are not replayed"
      : " without --token";
  const summary = `not re-checked: could not re-check ${before}${why}; the steps that ran pass now: ${passing}`;
  return { ...base, verdict: "still_fails", failedStep: before, code: null, summary };
}

function rerunOf(step: HandshakeStep, outcome: StepOutcome | undefined, failedAt: HandshakeStep | null): ReplayStep["rerun"] {
  if (outcome) {
    const detail = outcome.skipped && outcome.skipped !== "not_followed" ? SKIP_DETAIL[outcome.skipped] : outcome.detail;
    return { status: outcome.status, ...(outcome.httpStatus !== undefined ? { httpStatus: outcome.httpStatus } : {}), ...(detail ? { detail } : {}) };
  }
  if (!REPLAYED.has(step)) return { status: "skipped", detail: `not replayed: ${step} is left to the client's own use` };
  return { status: "not_reached", ...(failedAt ? { detail: `the re-run stopped at ${failedAt}` } : {}) };
}

// ---------------------------------------------------------------------------------------------
// The client, as the recording shows it

type Client = Omit<ConnectorOptions, "via" | "auth" | "toolCall" | "timeoutMs" | "sseTimeoutMs" | "allowedOrigins" | "forwardHeaders"> & { url: string };

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

function clientOf({ handshake, exchanges }: HandshakeDetail, target: string): Client {
  const sorted = [...exchanges].sort((a, b) => a.id - b.id);
  const mcp = sorted.filter((e) => e.kind.startsWith("mcp_"));
  const unauthenticated = mcp.filter((e) => e.facts.bearerFingerprint === undefined);
  const probe = unauthenticated.find((e) => e.facts.mcp?.methods.includes("initialize")) ?? unauthenticated[0] ?? mcp[0];
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

  const initialize = requestJson(probe);
  const params = initialize?.method === "initialize" && isRecord(initialize.params) ? initialize.params : undefined;
  const info = probe?.facts.mcp;
  const clientInfo = clientInfoOf(params?.clientInfo) ?? clientInfoOf(info?.clientInfo) ?? known?.clientInfo ?? { name: text(handshake.clientName, 200) ?? "mcp-lens replay", version: "0" };
  const capabilities = isRecord(params?.capabilities) && JSON.stringify(params.capabilities).length <= 8192 ? params.capabilities : {};
  const protocolVersion = text(params?.protocolVersion, 64) ?? text(info?.protocolVersionRequested, 64) ?? LATEST_PROTOCOL_VERSION;

  const redirectUri = fact((e) => text(e.facts.redirectUris?.[0], 2048)) ?? known?.redirectUri ?? "http://localhost:33418/callback";
  const registration =
    registrationOf(requestJson(sorted.find((e) => e.kind === "registration" && e.method === "POST"))) ??
    registrationPayload(known?.clientName ?? text(handshake.clientName, 200) ?? "mcp-lens replay", redirectUri, known?.authMethod ?? "none");
  const origin = fact((e) => (BROWSER_KINDS.has(e.kind) ? undefined : e.facts.origin));
  const browserOrigin = origin && safeUrl(origin)?.origin === origin ? origin : undefined;
  const userAgent = headerText(probe?.facts.userAgent ?? fact((e) => (BROWSER_KINDS.has(e.kind) ? undefined : e.facts.userAgent)));
  const accept = probe ? headerText(header(probe, "accept")) : MCP_ACCEPT;
  const scope = text(fact((e) => (BROWSER_KINDS.has(e.kind) ? e.facts.scope : undefined)), 1024);
  return {
    url: connectorUrl,
    ...(userAgent ? { userAgent } : {}),
    ...(accept ? { accept } : {}),
    initialize: { protocolVersion, capabilities, clientInfo },
    registration,
    ...(resource ? { resource } : {}),
    ...(scope ? { scope } : {}),
    ...(browserOrigin ? { origin: browserOrigin } : {}),
    ...(publicOrigin && publicOrigin !== targetOrigin ? { mappedOrigins: [publicOrigin] } : {}),
  };
}

/**
 * The re-run judged like live traffic: its exchanges redacted, classified, grouped into
 * handshakes and diagnosed. The code is the first (most decisive) diagnosis of the handshake
 * holding the run's last exchange, where it stopped.
 */
function diagnosisOf(run: ConnectorRun): DiagnosisCode | null {
  if (run.exchanges.length === 0) return null;
  const redactor = createRedactor(randomBytes(32));
  const classify = createClassifier();
  const exchanges = run.exchanges.map((raw) => classify(toRecorded(raw, redactor)));
  const last = exchanges[exchanges.length - 1]!.id;
  const handshake = groupHandshakes(exchanges, Date.now()).find((h) => h.exchangeIds.includes(last));
  if (!handshake) return null;
  const own = exchanges.filter((e) => handshake.exchangeIds.includes(e.id));
  return diagnose(handshake, own)[0]?.code ?? null;
}

/** A recorded string, when it is one, printable (no control characters) and at most `max` long. */
function text(value: unknown, max: number): string | undefined {
  return typeof value === "string" && value.length > 0 && value.length <= max && !/[\u0000-\u001f\u007f-\u009f]/.test(value) ? value : undefined;
}

/** A header value Node will send as is (HTAB, visible ASCII and obs-text), bounded. */
const headerText = (value: string | undefined) => (value !== undefined && value.length <= 1024 && /^[\t\x20-\x7e\x80-\xff]*$/.test(value) ? value : undefined);

const isPath = (p: string | undefined): p is string => typeof p === "string" && p.length <= 2048 && /^\/(?!\/)[\x21-\x7e]*$/.test(p) && !p.includes("\\");

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
function registrationOf(recorded: Record<string, unknown> | undefined): Client["registration"] | undefined {
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
  return out as Client["registration"];
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
