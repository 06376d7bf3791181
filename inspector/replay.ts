// Re-run of a recorded handshake: `mcp-lens doctor` seeded with the recorded client's parameters,
// against a target (the proxy's own URL by default, so the re-run is recorded like any traffic; or
// the public URL), then compared step by step with the original. The check itself is doctor's
// (doctor/check.ts, after doctor/network.ts's name, TCP and TLS checks): without a token it goes
// as far as a client goes without a person (metadata, registration, the authorize request up to
// the sign-in page); with one, authorize/callback/token are skipped and the token is the Bearer of
// the MCP steps and the era's stream (one of the server's access tokens, or a raw Coda API token
// for the bundled server). tools/call, teardown and refresh are never replayed.
//
// A recording is hostile input: whoever reached the proxy chose its Host, X-Forwarded-*, paths and
// bodies. So the recording never chooses where the re-run connects: the connector URL is the
// target's origin plus the recorded path; the connector's public origin as recorded (the
// X-Forwarded-Proto/-Host the upstream received, else Host) is mapped onto the target (a URL the
// server advertises there is dialled at the target), never dialled itself. As doctor does, the
// re-run also dials the authorization server the target's own Protected Resource Metadata names
// (after its `resource` check); any other origin a server sends it to (a registration endpoint
// elsewhere) only when the operator names it (--allow-origin), else the step is reported "not
// followed: … on another origin" and the run stops there. Host and TLS SNI are always the dialled
// origin's, and --token goes only to the target origin (inspector/connector-wire.ts).
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
// As the same client (a doctor profile of its own): from the recorded exchanges it takes, each
// type-checked and size-bounded, the User-Agent, the Accept and the initialize params (protocol
// version, capabilities, clientInfo) of the probe, or the `_meta` of its first modern request
// (protocol version, clientInfo, clientCapabilities) — each era's params made from the other's when
// the recording has only one, for a re-run in another era —, its Origin (a browser client), the
// resource and scope of its authorize request, and the registration payload REBUILT from the
// known RFC 7591 fields the client posted (client_name, redirect_uris, grant_types,
// response_types, token_endpoint_auth_method, scope, application_type, software_id/_version;
// unknown fields and redacted values dropped; never the raw recorded body), else the known
// client's, by family. PKCE is S256 with a fresh verifier. Every request and answer is bounded
// (timeoutMs, 1 MiB) and nothing is retried.
//
// Verdict (binary):
//   now_passes  no step the re-run performed failed, AND the step the original failed at
//               (handshake.failedStep) is ok in the re-run, or was skipped because the server no
//               longer needs it (it answered the unauthenticated initialize: no OAuth at all). A
//               re-run in another era than the original checks the connection's opening in its
//               own era: initialize/initialized by discover (else list), discover by initialize;
//   still_fails otherwise:
//     - nothing reached the target (name, TCP, TLS): failedStep "network", in doctor's words;
//     - a step failed, or the analyser found an error in a run the client's own checks passed:
//       failedStep/code are the re-run's ("still fails at X: code — detail"), with the diagnosis's
//       fix and the exchanges that prove it;
//     - a step was not followed (another origin, not allowed): failedStep is that step, code null,
//       and the summary says "not re-checked: … not followed";
//     - nothing failed, but the original's failed step could not be re-checked (callback or token
//       need the user's browser; with --token authorize is skipped too; or the re-run does not
//       replay it): failedStep is the original's, code is null, and the summary says "not
//       re-checked: could not re-check X without --token; …" — neither "now passes" nor a failure.
//
// `code` is the analyser's: the re-run's exchanges, as the connector sent and received them, are
// redacted (with a key of its own, in memory), classified, grouped and diagnosed by the very rules
// that judge live traffic (analysis/, through inspector/judge-run.ts). One diagnosis, whether the
// traffic came from a user, from doctor or from a re-run; when the target is the proxy, it records
// and diagnoses the same exchanges once more.
//
// `same` per step: the re-run's status equals the original's, "skipped" and "not_reached" counting as "absent".
// `era` is the client the re-run played, `eraFallback` whether it (dual-era) fell back to
// initialize; a summary of a re-run that did not play a legacy client ends with the era ("; as a
// modern (2026-07-28) client", "; as a dual-era client, which fell back to initialize").
import { HANDSHAKE_STEPS, type DiagnosisCode, type HandshakeStep } from "../analysis/handshake.js";
import type { ClientEra } from "./clients.js";
import type { ConnectorRun, StepOutcome } from "./connector.js";
import type { HandshakeDetail } from "./data.js";
import { checkClient, type DoctorRow } from "./doctor/check.js";
import { checkNetwork } from "./doctor/network.js";
import { withoutSecret } from "./judge-run.js";
import { recordedClient } from "./recorded-client.js";

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
  const result = await rerun(detail, options);
  // A server may echo the bearer back (in an error, a body): it is never printed, as in doctor.
  return options.token ? withoutSecret(result, options.token) : result;
}

async function rerun(detail: HandshakeDetail, options: ReplayOptions): Promise<ReplayResult> {
  const { handshake } = detail;
  const { url, profile, mappedOrigins } = recordedClient(detail, options.target);
  const era = options.era ?? profile.era;
  const target = new URL(options.target);
  const timeoutMs = options.timeoutMs ?? 10_000;
  const common = { handshakeId: handshake.id, target: options.target, era, warnings: [], evidence: [] };
  /** A re-run that never got to the handshake: every step not reached, for `why`. */
  const unreached = (failedStep: "network" | null, problem: string, why: string): ReplayResult => ({
    ...common,
    verdict: "still_fails",
    failedStep,
    code: null,
    summary: `still fails: ${problem}`,
    steps: compare(handshake, new Map(), undefined, why),
    eraFallback: false,
    dialled: [target.origin],
  });

  // Doctor's checks, in doctor's order: first what comes before HTTP (name, TCP, TLS).
  const network = await checkNetwork(new URL(url), timeoutMs);
  if (!network.ok) return unreached("network", network.problem ?? `nothing reaches ${target.origin}`, "nothing reached the target");
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
  if (!run) return unreached(null, row.detail, "the re-run did not finish");

  // The row's steps: the run's, with a step the analyser judged failed marked so.
  const ran = new Map(row.steps.map((s) => [s.step, s]));
  const steps = compare(handshake, ran, run);
  const ok = steps.filter((s) => s.rerun.status === "ok").map((s) => s.step);
  const passing = ok.length ? `${ok.join(", ")} ok` : "no step ran";
  const base = { ...common, steps, eraFallback: run.eraFallback, warnings: row.warnings, dialled: run.dialled };
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
  // The sign-in page is as far as a re-run goes: an original that failed past it (the sign-in
  // form's POST, the consent) is not re-checked by an authorize request that shows the page.
  const pastSignIn = before === "authorize" && failedPastSignIn(detail);
  const recheck = before && !pastSignIn ? recheckOf(before, ran) : undefined;
  const fixed = !before || recheck?.status === "ok" || recheck?.skipped === "authless";
  const notFollowed = row.result === "not_checked" && run.notFollowed ? `${run.notFollowed} ${row.detail}` : undefined;
  // A step not followed leaves the run unfinished: it still fails, unless the step the original
  // failed at came before it and passes now.
  if (notFollowed && !(before && fixed)) {
    const summary = `not re-checked: ${notFollowed}; the steps that ran pass now: ${passing}`;
    return { ...base, verdict: "still_fails", failedStep: run.notFollowed!, code: null, summary: withEra(summary) };
  }
  if (fixed) {
    const unchecked = steps.filter((s) => s.rerun.status === "skipped" && ran.get(s.step)?.skipped === "needs_user").map((s) => s.step);
    const summary = [
      `now passes: ${passing}`,
      before ? `originally failed at ${before}` : "",
      unchecked.length ? `${unchecked.join(", ")} not checked without --token` : "",
      notFollowed ? `not checked further: ${notFollowed}` : "",
    ].filter(Boolean).join("; ");
    return { ...base, verdict: "now_passes", failedStep: null, code: null, summary: withEra(summary) };
  }
  const why = pastSignIn
    ? ": it failed after the sign-in page, which only the user's own sign-in gets past"
    : !run.plan.includes(before) && !recheck
      ? `: the re-run does not replay ${before}`
      : recheck?.skipped === "credential_given"
        ? ": with --token, authorize, callback and token are not replayed (without it, authorize is re-checked up to the sign-in page)"
        : " without --token";
  const summary = `not re-checked: could not re-check ${before}${why}; the steps that ran pass now: ${passing}`;
  return { ...base, verdict: "still_fails", failedStep: before, code: null, summary: withEra(summary) };
}

/** The original's authorize failed on a request the user's browser sent past the sign-in page (a form POST). */
function failedPastSignIn({ handshake, exchanges }: HandshakeDetail): boolean {
  const ids = new Set(handshake.steps.filter((r) => r.step === "authorize" && r.status === "failed").flatMap((r) => r.exchangeIds));
  return exchanges.some((e) => ids.has(e.id) && e.method === "POST");
}

/** The recorded handshake's steps next to the re-run's (`ran`; none when it never started, for `unreached`). */
function compare(handshake: HandshakeDetail["handshake"], ran: ReadonlyMap<HandshakeStep, StepOutcome>, run: ConnectorRun | undefined, unreached = ""): ReplayStep[] {
  const planned = new Set(run?.plan ?? []);
  return HANDSHAKE_STEPS.filter((step) => planned.has(step) || handshake.steps.some((r) => r.step === step)).map((step): ReplayStep => {
    const records = handshake.steps.filter((r) => r.step === step);
    const failed = handshake.failedStep === step || records.some((r) => r.status === "failed");
    const original = { status: records.length === 0 && !failed ? "absent" : failed ? "failed" : "ok", exchangeIds: records.flatMap((r) => r.exchangeIds) } as const;
    const rerun: ReplayStep["rerun"] = run ? rerunOf(step, ran.get(step), run) : { status: "not_reached", detail: unreached };
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
