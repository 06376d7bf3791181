// One connector handshake as the tracker (handshakes.ts) holds it while it grows: its steps, what
// its exchanges showed (era, registration, client signals), its outcome at a given time, and which
// exchanges without a naming id it can still take. Pure; the tracker does the linking.

import { clientFamily, type ClientSignals } from "./client-family.js";
import type { ClassifiedExchange } from "./exchange.js";
import { endOf, exchangeFailed, isPreflightGet, isSuccess, opensConnection, type Placement } from "./handshake-steps.js";
import type {
  ClientFamily,
  Handshake,
  HandshakeEra,
  HandshakeOutcome,
  HandshakeStep,
  RegistrationKind,
  StepRecord,
} from "./handshake.js";

/** The user signs in and consents in between: the browser's steps may come this late. */
export const AUTH_WINDOW_MS = 10 * 60_000;
/** Without success or failure, a handshake is in progress this long after its last exchange… */
const ACTIVE_MS = 2 * 60_000;
/** …or this long while the user is on the authorization page… */
const USER_MS = AUTH_WINDOW_MS;
/** …or this long after a code was delivered or a token issued: clients use them at once, or gave up. */
const AFTER_CODE_MS = 15_000;
/** A failed step that clients follow with a fallback is final only after this much quiet. */
export const FALLBACK_GRACE_MS = 10_000;
/** mcp-remote's throw-away connection that tests the transport before the real one. */
export const MCP_REMOTE_FALLBACK_TEST = "mcp-remote-fallback-test";
/** Per handshake: recorded ids (the start and the latest activity are kept) and client signals. */
const MAX_EXCHANGE_IDS = 1_000;
const MAX_STEP_IDS = 100;
const MAX_SIGNALS = 8;
const INSUFFICIENT_SCOPE = /error\s*=\s*"?insufficient_scope/i;

// ---------------------------------------------------------------------------------------------
// Handshake state

export interface StepState {
  step: HandshakeStep;
  ok: boolean;
  exchangeIds: number[];
  at: number;
  /** When its last exchange came, in the handshake's own count: the step that failed last wins. */
  lastSeq: number;
}

export interface State {
  id: number;
  /** In first-reached order. */
  steps: Map<HandshakeStep, StepState>;
  exchangeIds: number[];
  startedAt: number;
  endedAt: number;
  seq: number;
  /** An initialize was answered ok (or, seen from mid-session on, any MCP request). */
  connected: boolean;
  /** A list or tool call was answered ok: succeeded for good. */
  usable: boolean;
  /** The latest exchange's step; whether it failed; whether it was a pre-flight check the connection follows. */
  last: { step: HandshakeStep; failed: boolean; preflight: boolean };
  clientId: string | undefined;
  signals: { userAgents: string[]; redirectUris: string[]; clientIds: string[]; clientName?: string; clientInfoName?: string };
  /** Origin headers seen: a browser's later preflights join by them. */
  origins: string[];
  family: ClientFamily;
  era: HandshakeEra;
  eraFallback: boolean;
  /** A registration was answered 2xx; a client_id that is a metadata document's URL was used. */
  registered: boolean;
  metadataDocument: boolean;
  /** Its last connection was mcp-remote's transport test: the real connection follows at once. */
  testConnection: boolean;
  /** Its probes so far were modern requests the server refused: a dual-era client falls back next. */
  modernRefused: boolean;
  /** A probe was a POST: a real connection attempt, not only a GET checking the endpoint. */
  postedProbe: boolean;
  /** The server assigned it an Mcp-Session-Id. */
  sessions: boolean;
  /** A 403 asked for more scope and no token has been issued since: a re-authorization joins. */
  stepUp: boolean;
  /** Index keys pointing here, least recently used first. */
  keys: Set<string>;
  /** The outcome last handed out, to report changes that time alone brings. */
  reported: HandshakeOutcome | undefined;
}

export const CONNECTING_STEPS = new Set<HandshakeStep>(["discover", "initialize", "list", "tool_call"]);
export const USING_STEPS = new Set<HandshakeStep>(["list", "tool_call"]);
/** After initialize, the connector is unusable when one of these failed before a list or tool call succeeded. */
export const UNUSABLE_STEPS: HandshakeStep[] = ["initialized", "list"];
/**
 * Failures clients follow up at once: the next well-known variant; well-known discovery after a
 * 401 without challenge; the older SSE transport after a probe's 404 or 405; initialize after a
 * modern probe the server refused (dual-era clients); the real connection after a refused GET.
 */
export const FALLBACK_STEPS = new Set<HandshakeStep>(["probe", "protected_resource_metadata", "authorization_server_metadata"]);
/** Keys of ids that name one handshake for good: a closed handshake holding one may resume. */
export const RESUMING_KEY = /^(session|token|refresh):/;

export function newState(e: ClassifiedExchange): State {
  return {
    id: e.id,
    steps: new Map(),
    exchangeIds: [],
    startedAt: e.startedAt,
    endedAt: endOf(e),
    seq: 0,
    connected: false,
    usable: false,
    last: { step: "probe", failed: false, preflight: false },
    clientId: undefined,
    signals: { userAgents: [], redirectUris: [], clientIds: [] },
    origins: [],
    family: "other",
    era: "unknown",
    eraFallback: false,
    registered: false,
    metadataDocument: false,
    testConnection: false,
    modernRefused: false,
    postedProbe: false,
    sessions: false,
    stepUp: false,
    keys: new Set(),
    reported: undefined,
  };
}

/** The step that makes a connected handshake unusable, if any. */
export function unusableStep(s: State): HandshakeStep | undefined {
  return s.connected && !s.usable ? UNUSABLE_STEPS.find((step) => s.steps.get(step)?.ok === false) : undefined;
}

export const succeeded = (s: State) => s.usable || (s.connected && unusableStep(s) === undefined);

export function outcomeAt(s: State, now: number): HandshakeOutcome {
  if (succeeded(s)) return "succeeded";
  if (s.connected) return "failed";
  const quiet = now - s.endedAt;
  const followedUp = FALLBACK_STEPS.has(s.last.step) || s.last.preflight;
  if (s.last.failed && (!followedUp || quiet > FALLBACK_GRACE_MS)) return "failed";
  const redeemNext = (s.last.step === "token" || s.last.step === "callback") && !s.last.failed;
  const patience = s.last.step === "authorize" ? USER_MS : redeemNext ? AFTER_CODE_MS : ACTIVE_MS;
  return quiet <= patience ? "in_progress" : "abandoned";
}

export function failedStepOf(s: State): HandshakeStep | null {
  if (succeeded(s)) return null;
  const unusable = unusableStep(s);
  if (unusable) return unusable;
  let latest: StepState | undefined;
  for (const step of s.steps.values()) {
    if (!step.ok && (!latest || step.lastSeq > latest.lastSeq)) latest = step;
  }
  return latest?.step ?? null;
}

export function toHandshake(s: State, now: number): Handshake {
  // In the order they were reached: when each step's first exchange started (the order they were
  // placed in, for steps reached at the same moment). Exchanges recorded by several replicas may
  // be placed a little out of order; when they started is the same either way.
  const steps: StepRecord[] = [...s.steps.values()]
    .map((r) => ({ step: r.step, status: r.ok ? ("ok" as const) : ("failed" as const), exchangeIds: [...r.exchangeIds], at: r.at }))
    .sort((a, b) => a.at - b.at);
  const { clientInfoName, clientName } = s.signals;
  return {
    id: s.id,
    clientFamily: s.family,
    clientName: clientInfoName ?? clientName ?? null,
    era: s.era,
    eraFallback: s.eraFallback,
    registration: registrationKind(s),
    startedAt: s.startedAt,
    endedAt: s.endedAt,
    steps,
    outcome: outcomeAt(s, now),
    failedStep: failedStepOf(s),
    exchangeIds: [...s.exchangeIds],
    diagnoses: [],
  };
}

export function registrationKind(s: State): RegistrationKind {
  if (s.metadataDocument) return "cimd";
  if (s.registered) return "dcr";
  return s.clientId !== undefined ? "pre_registered" : "none";
}

/** Inserts in id order (exchanges complete out of order); when full, drops from the middle. */
export function insertId(ids: number[], id: number, cap: number): void {
  let i = ids.length;
  while (i > 0 && ids[i - 1]! > id) i--;
  if (i > 0 && ids[i - 1] === id) return;
  ids.splice(i, 0, id);
  if (ids.length > cap) ids.splice(cap >> 1, 1);
}

export function recordExchange(s: State, e: ClassifiedExchange, placement: Placement): void {
  s.seq++;
  noteEra(s, e);
  let failed = false;
  for (const step of placement.steps) {
    failed = exchangeFailed(e, step);
    let record = s.steps.get(step);
    if (!record) s.steps.set(step, (record = { step, ok: true, exchangeIds: [], at: e.startedAt, lastSeq: 0 }));
    insertId(record.exchangeIds, e.id, MAX_STEP_IDS);
    record.at = Math.min(record.at, e.startedAt);
    record.ok = !failed; // a step's status is its latest exchange's: a later variant may succeed
    record.lastSeq = s.seq;
    // A preflight only says whether the request it precedes may be sent: it connects nothing.
    if (!failed && e.kind !== "cors_preflight" && CONNECTING_STEPS.has(step)) {
      s.connected = true;
      s.usable ||= USING_STEPS.has(step);
    }
  }
  insertId(s.exchangeIds, e.id, MAX_EXCHANGE_IDS);
  s.startedAt = Math.min(s.startedAt, e.startedAt);
  s.endedAt = Math.max(s.endedAt, endOf(e));
  s.last = { step: placement.steps.at(-1)!, failed, preflight: placement.role === "discovery" && isPreflightGet(e) };
  s.clientId = e.facts.clientId ?? s.clientId;
  if (e.facts.mcp?.sessionIdAssigned !== undefined) s.sessions = true;
  if (e.status === 403 && INSUFFICIENT_SCOPE.test(e.facts.wwwAuthenticate ?? "")) s.stepUp = true;
  if (e.kind === "token" && e.facts.issued?.accessToken !== undefined) s.stepUp = false;
  if (e.kind === "registration" && isSuccess(e.status) && e.facts.clientId !== undefined) s.registered = true;
  if (e.facts.clientIdIsMetadataDocument) s.metadataDocument = true;
  if (placement.role === "probe" && e.method !== "GET") s.postedProbe = true;
  noteOpening(s, e, failed);
  addSignal(s.origins, e.facts.origin);
  if (noteSignals(s.signals, e)) s.family = familyOf(s.signals);
}

/**
 * The era follows the client's MCP requests. A legacy request after modern ones the server refused,
 * before anything connected, is a dual-era client falling back: the healthy path, noted as such.
 */
export function noteEra(s: State, e: ClassifiedExchange): void {
  const era = e.facts.mcp?.era;
  if (era === undefined) return;
  if (era === "legacy" && s.era === "modern" && !s.connected) s.eraFallback = true;
  if (!s.connected || s.era === "unknown") s.era = era;
}

/** How the connection it opened went: refused in the modern era; mcp-remote's test connection. */
export function noteOpening(s: State, e: ClassifiedExchange, failed: boolean): void {
  if (!opensConnection(e)) return;
  if (e.facts.mcp?.era === "modern") s.modernRefused = failed && e.status !== 401;
  const info = e.facts.mcp?.clientInfo?.name;
  if (info !== undefined) s.testConnection = info === MCP_REMOTE_FALLBACK_TEST;
}


export function noteSignals(signals: State["signals"], e: ClassifiedExchange): boolean {
  const { facts } = e;
  let changed = addSignal(signals.userAgents, facts.userAgent);
  for (const uri of facts.redirectUris ?? []) changed = addSignal(signals.redirectUris, uri) || changed;
  if (facts.clientIdIsMetadataDocument) changed = addSignal(signals.clientIds, facts.clientId) || changed;
  if (signals.clientName === undefined && facts.clientName !== undefined) {
    signals.clientName = facts.clientName;
    changed = true;
  }
  const infoName = facts.mcp?.clientInfo?.name;
  const placeholder = signals.clientInfoName === undefined || signals.clientInfoName === MCP_REMOTE_FALLBACK_TEST;
  if (placeholder && infoName !== undefined && infoName !== signals.clientInfoName) {
    signals.clientInfoName = infoName;
    changed = true;
  }
  return changed;
}

export function addSignal(list: string[], value: string | undefined): boolean {
  if (value === undefined || list.length >= MAX_SIGNALS || list.includes(value)) return false;
  list.push(value);
  return true;
}

/** A handshake shows several user agents (backend, browser): the first that names a family decides. */
export function familyOf({ userAgents, redirectUris, clientName, clientInfoName, clientIds }: State["signals"]): ClientFamily {
  const base: ClientSignals = { redirectUris, clientName, clientInfoName, clientIds };
  // An application named by any user agent wins over the SDK another one shows.
  let sdk: ClientFamily | undefined;
  for (const userAgent of userAgents) {
    const family = clientFamily({ ...base, userAgent });
    if (family === "typescript-sdk" || family === "python-sdk") sdk ??= family;
    else if (family !== "other") return family;
  }
  return sdk ?? clientFamily(base);
}

// Which handshakes an exchange without a naming id may join.
export const beforeToken = (s: State) => !s.connected && !s.steps.has("token");
export const notConnected = (s: State) => !s.connected;
export const anyState = () => true;
/** A client repeating its probe; after anything else, or a failure, a probe is a new attempt. */
export const onlyGoodProbes = (s: State) => s.steps.size === 1 && s.steps.get("probe")?.ok === true;
export const awaitsAuthorization = (s: State) => beforeToken(s) && s.clientId === undefined && !s.steps.has("authorize");
/** Only what a client checks before it connects: discovery documents, a refused GET. */
export const PRELIMINARY_STEPS = new Set<HandshakeStep>(["protected_resource_metadata", "authorization_server_metadata", "stream"]);
/** A GET refused with 401 is the probe step, but still only a check (mcp-remote before its OAuth). */
export const preliminary = (s: State) =>
  !s.connected && [...s.steps.keys()].every((step) => PRELIMINARY_STEPS.has(step) || (step === "probe" && !s.postedProbe));
/** The browser's part is still to come: no authorization response delivered yet. */
export const awaitsBrowser = (s: State) => beforeToken(s) && s.steps.get("callback")?.ok !== true;
/** Where a probe continues a connection attempt rather than starting one (see continuedBy). */
export const probeContinues = (e: ClassifiedExchange) => (s: State) =>
  preliminary(s) ||
  (s.testConnection && (e.facts.mcp?.methods ?? []).includes("initialize")) ||
  (s.modernRefused && !s.connected && e.facts.mcp?.era === "legacy" && sameClientInfo(s, e));

/** The client info names agree, or one side has none (dual-era clients send the same in both eras). */
export function sameClientInfo(s: State, e: ClassifiedExchange): boolean {
  const name = e.facts.mcp?.clientInfo?.name;
  return name === undefined || s.signals.clientInfoName === undefined || name === s.signals.clientInfoName;
}

