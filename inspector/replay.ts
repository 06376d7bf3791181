// Re-run of a recorded handshake: the same handshake performed NOW, as the same client, against a
// target (the proxy's own URL by default, so the re-run is recorded like any traffic; or the public
// URL), then compared step by step with the original.
//
// As the same client: from the recorded exchanges it takes the User-Agent, the Accept and the
// initialize params (protocol version, capabilities, clientInfo) of the probe, the registration
// payload as the client posted it (else the known client's, by family; redacted values left out),
// its Origin (a browser client), the connector URL (the probe's path; the scheme and host the
// client used: X-Forwarded-Proto/-Host, else Host, and https for hosted clients, as the analyser
// reads them) and, unless the target is that very origin (whose front sets them itself), the
// Host / X-Forwarded-Host / X-Forwarded-Proto its requests carried, so that the server computes
// the same public URLs; URLs the server advertises on the connector's host are dialled at the
// target. The resource and scope of its authorize/token requests, and PKCE S256 with a fresh
// verifier, belong to the authorize and token requests, which a re-run does not send (below).
// Every request is bounded by timeoutMs and nothing is retried (inspector/connector.ts).
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
//     - nothing failed, but the original's failed step could not be re-checked (it needs the
//       user's browser, e.g. token without --token; or the re-run does not replay it): failedStep is
//       the original's, code is null, and the summary says "not re-checked: could not re-check X
//       without --token; …" — the third wording: neither "now passes" nor a failure seen again.
//
// `code` is the connector-side check of the re-run's own answers (what a client can tell: non-401
// probe, relative resource_metadata, resource or issuer mismatch, no S256, no registration
// endpoint, 4xx registration, 421, 403 challenge, redirects, 404 sessions…; see answerCode in
// connector.ts), mapped to diagnosis codes. It is not the analyser's rules (proxy/diagnose.ts):
// those run on the re-run's recorded exchanges when the target is the proxy.
//
// `same` per step: the re-run's status equals the original's, "skipped" and "not_reached" counting as "absent".
import { HOSTED_FAMILIES } from "../proxy/client-family.js";
import type { ClassifiedExchange } from "../proxy/exchange.js";
import { HANDSHAKE_STEPS, type DiagnosisCode, type HandshakeStep } from "../proxy/handshake.js";
import { fingerprintsIn } from "../proxy/redact.js";
import {
  KNOWN_CLIENTS,
  LATEST_PROTOCOL_VERSION,
  MCP_ACCEPT,
  registrationPayload,
  runConnector,
  type ConnectorOptions,
  type StepOutcome,
} from "./connector.js";
import type { HandshakeDetail } from "./data.js";

export interface ReplayOptions {
  /** Base URL the re-run dials: the proxy's URL (recorded like any traffic) or the public URL. */
  target: string;
  /** A bearer (or a raw Coda API token) for the MCP steps; without it the run stops before authorize. */
  token?: string;
  /** Per request; default 10 000 ms, like hosted clients. */
  timeoutMs?: number;
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
  const run = await runConnector(url, {
    ...client,
    via: options.target,
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
    const was = before && before !== run.failedAt ? ` (originally failed at ${before})` : "";
    const summary = `still fails at ${run.failedAt}${run.code ? `: ${run.code}` : ""}${was} — ${run.error ?? ""}`.trim();
    return { ...base, verdict: "still_fails", failedStep: run.failedAt, code: run.code, summary };
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
    const detail = outcome.skipped ? SKIP_DETAIL[outcome.skipped] : outcome.detail;
    return { status: outcome.status, ...(outcome.httpStatus !== undefined ? { httpStatus: outcome.httpStatus } : {}), ...(detail ? { detail } : {}) };
  }
  if (!REPLAYED.has(step)) return { status: "skipped", detail: `not replayed: ${step} is left to the client's own use` };
  return { status: "not_reached", ...(failedAt ? { detail: `the re-run stopped at ${failedAt}` } : {}) };
}

// ---------------------------------------------------------------------------------------------
// The client, as the recording shows it

type Client = Omit<ConnectorOptions, "via" | "auth" | "toolCall" | "timeoutMs" | "sseTimeoutMs"> & { url: string };

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

  // The connector URL as the client used it.
  const source = probe ?? backend[0] ?? sorted[0];
  const resource = fact((e) => (BROWSER_KINDS.has(e.kind) || e.kind === "token" ? e.facts.resource : undefined));
  const prmPath = sorted.find((e) => e.kind === "protected_resource_metadata" && e.facts.wellKnownVariant === "path_inserted")?.path.replace(/^\/\.well-known\/oauth-protected-resource/, "");
  const path = probe?.path ?? (resource ? safeUrl(resource)?.pathname : undefined) ?? prmPath ?? "/mcp";
  const host = firstValue(header(source, "x-forwarded-host")) ?? source?.host ?? new URL(target).host;
  const scheme = firstValue(header(source, "x-forwarded-proto")) ?? (HOSTED_FAMILIES.has(handshake.clientFamily) ? "https" : "http");
  const url = new URL(path, `${scheme}://${host}`).href;

  // Host and X-Forwarded-* as the client's requests carried them, unless the target is the connector's origin.
  const forwardHeaders: Record<string, string> = {};
  if (new URL(target).origin !== new URL(url).origin) {
    for (const name of ["host", "x-forwarded-host", "x-forwarded-proto"]) {
      const value = name === "host" ? (source?.host ?? undefined) : header(source, name);
      if (value) forwardHeaders[name] = value;
    }
  }

  const initialize = requestJson(probe);
  const params = initialize?.method === "initialize" && isRecord(initialize.params) ? initialize.params : undefined;
  const info = probe?.facts.mcp;
  const registered = requestJson(sorted.find((e) => e.kind === "registration" && e.method === "POST"));
  // A redacted value (a secret) cannot be replayed: left out.
  const payload = registered && Object.fromEntries(Object.entries(registered).filter(([, v]) => fingerprintsIn(JSON.stringify(v)).length === 0));
  const redirectUri = fact((e) => e.facts.redirectUris?.[0]) ?? known?.redirectUri ?? "http://localhost:33418/callback";
  const registration =
    payload && Array.isArray(payload.redirect_uris) && payload.redirect_uris.every((u) => typeof u === "string")
      ? (payload as Client["registration"])
      : registrationPayload(known?.clientName ?? handshake.clientName ?? "mcp-lens replay", redirectUri, known?.authMethod ?? "none");
  const origin = fact((e) => (BROWSER_KINDS.has(e.kind) ? undefined : e.facts.origin));
  const userAgent = probe?.facts.userAgent ?? fact((e) => (BROWSER_KINDS.has(e.kind) ? undefined : e.facts.userAgent));
  const accept = probe ? header(probe, "accept") : MCP_ACCEPT;
  const scope = fact((e) => (BROWSER_KINDS.has(e.kind) ? e.facts.scope : undefined));
  return {
    url,
    ...(userAgent ? { userAgent } : {}),
    ...(accept ? { accept } : {}),
    initialize: {
      capabilities: {},
      clientInfo: info?.clientInfo ?? known?.clientInfo ?? { name: handshake.clientName ?? "mcp-lens replay", version: "0" },
      ...params,
      protocolVersion: typeof params?.protocolVersion === "string" ? params.protocolVersion : (info?.protocolVersionRequested ?? LATEST_PROTOCOL_VERSION),
    },
    registration,
    ...(resource ? { resource } : {}),
    ...(scope ? { scope } : {}),
    ...(origin ? { origin } : {}),
    ...(Object.keys(forwardHeaders).length ? { forwardHeaders } : {}),
  };
}

function safeUrl(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}
