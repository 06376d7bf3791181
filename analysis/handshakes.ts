// Groups classified exchanges into connector handshakes: one connection attempt by one client,
// from its probe to its tool calls (see shared/reference/connector-handshake.md). Pure: time comes
// from the exchanges or an explicit `now`, so the proxy runs it live and the inspector re-runs it.
//
// Linking, first match wins:
//   1. ids that name one handshake, whatever its state: Mcp-Session-Id, a bearer or refresh token
//      its token response issued, the authorization code its callback delivered
//   2. ids of the authorization phase, into a handshake that has not reached the token step:
//      state (authorize → callback), client_id (registration → authorize → token)
//   3. the same client (address + user agent), then the same address, within a short window and
//      only into a handshake the exchange can continue (a probe after anything but a probe, or
//      discovery after the token step, is a new attempt); a preflight for a request after the
//      probe joins only the same client's handshake that showed its Origin
//   4. the user's browser without ids (a pre-registered or metadata-document client_id): the
//      handshake from the same address, else the latest one, that did discovery without
//      registering and awaits authorization
//   Else the exchange starts a handshake, unless it can only be evidence within one (`other`, revoke).
//
// Outcome:
//   succeeded    the connector is usable: an initialize (not its preflight) was answered ok (for a
//                handshake seen from mid-session on, any MCP request), and neither
//                notifications/initialized nor the list step failed; once a list or tool call is
//                answered ok it stays succeeded, whatever fails later
//   failed       connected but unusable (initialized or list failed), or its last exchange failed:
//                the client stopped there. A failed probe or discovery document gets a grace
//                period first, since clients try a fallback at once
//   in_progress  activity within ACTIVE_MS, or USER_MS while the user is on the authorization page
//   abandoned    otherwise

import { clientFamily, type ClientSignals } from "./client-family.js";
import type { ClassifiedExchange } from "./exchange.js";
import { endOf, exchangeFailed, type Placement, placementOf, type Role } from "./handshake-steps.js";
import type {
  ClientFamily,
  Handshake,
  HandshakeEra,
  HandshakeOutcome,
  HandshakeStep,
  RegistrationKind,
  StepRecord,
} from "./handshake.js";

/** Discovery without ids joins the same client's handshake within this time of its last exchange. */
const PEER_WINDOW_MS = 60_000;
/** The user signs in and consents in between: the browser's steps may come this late. */
const AUTH_WINDOW_MS = 10 * 60_000;
/** Without success or failure, a handshake is in progress this long after its last exchange… */
const ACTIVE_MS = 2 * 60_000;
/** …or this long while the user is on the authorization page. */
const USER_MS = AUTH_WINDOW_MS;
/** A failed step that clients follow with a fallback is final only after this much quiet. */
export const FALLBACK_GRACE_MS = 10_000;

export interface TrackerLimits {
  /** Handshakes held open; beyond it the least recently active is closed. */
  maxOpen: number;
  /** Closed handshakes kept so that a later refresh or session can resume them. */
  maxDormant: number;
  /** evictIdle closes handshakes idle this long. */
  idleMs: number;
}

export const DEFAULT_LIMITS: TrackerLimits = { maxOpen: 5_000, maxDormant: 5_000, idleMs: 30 * 60_000 };

/** Per handshake: index keys, and recorded ids (the start and the latest activity are kept). */
const MAX_KEYS = 32;
const MAX_EXCHANGE_IDS = 1_000;
const MAX_STEP_IDS = 100;
const MAX_SIGNALS = 8;

// ---------------------------------------------------------------------------------------------
// Handshake state

interface StepState {
  step: HandshakeStep;
  ok: boolean;
  exchangeIds: number[];
  at: number;
  /** When its last exchange came, in the handshake's own count: the step that failed last wins. */
  lastSeq: number;
}

interface State {
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
  last: { step: HandshakeStep; failed: boolean };
  clientId: string | undefined;
  signals: { userAgents: string[]; redirectUris: string[]; clientName?: string; clientInfoName?: string };
  /** Origin headers seen: a browser's later preflights join by them. */
  origins: string[];
  family: ClientFamily;
  era: HandshakeEra;
  eraFallback: boolean;
  /** A registration was answered 2xx; a client_id that is a metadata document's URL was used. */
  registered: boolean;
  metadataDocument: boolean;
  /** Index keys pointing here, least recently used first. */
  keys: Set<string>;
  /** The outcome last handed out, to report changes that time alone brings. */
  reported: HandshakeOutcome | undefined;
}

const CONNECTING_STEPS = new Set<HandshakeStep>(["initialize", "list", "tool_call"]);
const USING_STEPS = new Set<HandshakeStep>(["list", "tool_call"]);
/** After initialize, the connector is unusable when one of these failed before a list or tool call succeeded. */
const UNUSABLE_STEPS: HandshakeStep[] = ["initialized", "list"];
/**
 * Failures clients follow up at once: the next well-known variant; well-known discovery after a
 * 401 without challenge; the older SSE transport after a probe's 404 or 405.
 */
const FALLBACK_STEPS = new Set<HandshakeStep>(["probe", "protected_resource_metadata", "authorization_server_metadata"]);
/** Keys of ids that name one handshake for good: a closed handshake holding one may resume. */
const RESUMING_KEY = /^(session|token|refresh):/;

function newState(e: ClassifiedExchange): State {
  return {
    id: e.id,
    steps: new Map(),
    exchangeIds: [],
    startedAt: e.startedAt,
    endedAt: endOf(e),
    seq: 0,
    connected: false,
    usable: false,
    last: { step: "probe", failed: false },
    clientId: undefined,
    signals: { userAgents: [], redirectUris: [] },
    origins: [],
    family: "other",
    era: "unknown",
    eraFallback: false,
    registered: false,
    metadataDocument: false,
    keys: new Set(),
    reported: undefined,
  };
}

/** The step that makes a connected handshake unusable, if any. */
function unusableStep(s: State): HandshakeStep | undefined {
  return s.connected && !s.usable ? UNUSABLE_STEPS.find((step) => s.steps.get(step)?.ok === false) : undefined;
}

const succeeded = (s: State) => s.usable || (s.connected && unusableStep(s) === undefined);

function outcomeAt(s: State, now: number): HandshakeOutcome {
  if (succeeded(s)) return "succeeded";
  if (s.connected) return "failed";
  const quiet = now - s.endedAt;
  if (s.last.failed && (!FALLBACK_STEPS.has(s.last.step) || quiet > FALLBACK_GRACE_MS)) return "failed";
  return quiet <= (s.last.step === "authorize" ? USER_MS : ACTIVE_MS) ? "in_progress" : "abandoned";
}

function failedStepOf(s: State): HandshakeStep | null {
  if (succeeded(s)) return null;
  const unusable = unusableStep(s);
  if (unusable) return unusable;
  let latest: StepState | undefined;
  for (const step of s.steps.values()) {
    if (!step.ok && (!latest || step.lastSeq > latest.lastSeq)) latest = step;
  }
  return latest?.step ?? null;
}

function toHandshake(s: State, now: number): Handshake {
  const steps: StepRecord[] = [...s.steps.values()].map((r) => ({
    step: r.step,
    status: r.ok ? "ok" : "failed",
    exchangeIds: [...r.exchangeIds],
    at: r.at,
  }));
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

function registrationKind(s: State): RegistrationKind {
  if (s.metadataDocument) return "cimd";
  if (s.registered) return "dcr";
  return s.clientId !== undefined ? "pre_registered" : "none";
}

/** Inserts in id order (exchanges complete out of order); when full, drops from the middle. */
function insertId(ids: number[], id: number, cap: number): void {
  let i = ids.length;
  while (i > 0 && ids[i - 1]! > id) i--;
  if (i > 0 && ids[i - 1] === id) return;
  ids.splice(i, 0, id);
  if (ids.length > cap) ids.splice(cap >> 1, 1);
}

function recordExchange(s: State, e: ClassifiedExchange, placement: Placement): void {
  s.seq++;
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
  s.last = { step: placement.steps.at(-1)!, failed };
  s.clientId = e.facts.clientId ?? s.clientId;
  addSignal(s.origins, e.facts.origin);
  if (noteSignals(s.signals, e)) s.family = familyOf(s.signals);
}

function noteSignals(signals: State["signals"], e: ClassifiedExchange): boolean {
  const { facts } = e;
  let changed = addSignal(signals.userAgents, facts.userAgent);
  for (const uri of facts.redirectUris ?? []) changed = addSignal(signals.redirectUris, uri) || changed;
  if (signals.clientName === undefined && facts.clientName !== undefined) {
    signals.clientName = facts.clientName;
    changed = true;
  }
  const infoName = facts.mcp?.clientInfo?.name;
  if (signals.clientInfoName === undefined && infoName !== undefined) {
    signals.clientInfoName = infoName;
    changed = true;
  }
  return changed;
}

function addSignal(list: string[], value: string | undefined): boolean {
  if (value === undefined || list.length >= MAX_SIGNALS || list.includes(value)) return false;
  list.push(value);
  return true;
}

/** A handshake shows several user agents (backend, browser): the first that names a family decides. */
function familyOf({ userAgents, redirectUris, clientName, clientInfoName }: State["signals"]): ClientFamily {
  const base: ClientSignals = { redirectUris, clientName, clientInfoName };
  for (const userAgent of userAgents) {
    const family = clientFamily({ ...base, userAgent });
    if (family !== "other") return family;
  }
  return clientFamily(base);
}

// Which handshakes an exchange without a naming id may join.
const beforeToken = (s: State) => !s.connected && !s.steps.has("token");
const notConnected = (s: State) => !s.connected;
const anyState = () => true;
/** A client repeating its probe; after anything else, or a failure, a probe is a new attempt. */
const onlyGoodProbes = (s: State) => s.steps.size === 1 && s.steps.get("probe")?.ok === true;
const awaitsAuthorization = (s: State) => beforeToken(s) && s.clientId === undefined && !s.steps.has("authorize");

// ---------------------------------------------------------------------------------------------
// The tracker

export interface AddResult {
  handshakeId: number | null;
  /** The handshakes this exchange changed, in their new state. */
  updated: Handshake[];
}

const NOT_ATTACHED: AddResult = { handshakeId: null, updated: [] };

/**
 * Assigns exchanges, in the order they are recorded, to handshakes held in memory. Bounded: at most
 * `maxOpen` open and `maxDormant` closed-but-resumable handshakes, each with bounded keys and ids.
 */
export class HandshakeTracker {
  /** Least recently active first. */
  private readonly open = new Map<number, State>();
  /** Closed by idleness or the cap, kept while a later refresh or session may resume them. */
  private readonly dormant = new Map<number, State>();
  private readonly index = new Map<string, State>();
  private awaiting: State | undefined;
  /** The latest time the exchanges have shown. */
  private clock = -Infinity;
  private readonly limits: TrackerLimits;

  constructor(limits: Partial<TrackerLimits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  add(e: ClassifiedExchange): AddResult {
    this.clock = Math.max(this.clock, endOf(e));
    const placement = placementOf(e);
    if (!placement) return NOT_ATTACHED;
    let state = this.namedBy(e) ?? this.continuedBy(e, placement.role);
    if (!state) {
      if (!placement.canStart) return NOT_ATTACHED;
      state = newState(e);
    }
    recordExchange(state, e, placement);
    this.indexExchange(state, e, placement.role);
    const closed = this.activate(state);
    return { handshakeId: state.id, updated: [this.emit(state, this.clock), ...closed.map((s) => this.emit(s, this.clock))] };
  }

  /** The open handshakes, by id. */
  snapshot(now: number): Handshake[] {
    return [...this.open.values()].map((s) => toHandshake(s, now)).sort((a, b) => a.id - b.id);
  }

  /**
   * Closes handshakes idle longer than `idleMs` and returns their final state (in progress becomes
   * abandoned or failed). Also returns open handshakes whose outcome time alone changed since they
   * were last handed out, so a caller that stores what it gets stays current.
   */
  evictIdle(now: number): Handshake[] {
    const changed: Handshake[] = [];
    for (const state of this.open.values()) {
      if (now - state.endedAt > this.limits.idleMs) {
        this.open.delete(state.id);
        this.close(state);
        changed.push(this.emit(state, now));
      } else if (outcomeAt(state, now) !== state.reported) {
        changed.push(this.emit(state, now));
      }
    }
    return changed;
  }

  private emit(state: State, now: number): Handshake {
    const handshake = toHandshake(state, now);
    state.reported = handshake.outcome;
    return handshake;
  }

  /** Ids that name one handshake, open or closed. */
  private namedBy(e: ClassifiedExchange): State | undefined {
    const { facts } = e;
    const keys = [
      facts.mcp?.sessionId !== undefined ? `session:${facts.mcp.sessionId}` : undefined,
      facts.bearerFingerprint !== undefined ? `token:${facts.bearerFingerprint}` : undefined,
      facts.refreshTokenFingerprint !== undefined ? `refresh:${facts.refreshTokenFingerprint}` : undefined,
      // On a redirect codeFingerprint is the code it delivers, not one redeemed.
      e.kind === "token" && facts.codeFingerprint !== undefined ? `code:${facts.codeFingerprint}` : undefined,
    ];
    for (const key of keys) {
      const state = key === undefined ? undefined : this.index.get(key);
      if (state) return state;
    }
    return undefined;
  }

  /** Weaker signals, each within a window and only into a handshake this role can continue. */
  private continuedBy(e: ClassifiedExchange, role: Role): State | undefined {
    const { facts } = e;
    const byKey = (key: string | undefined) => (key === undefined ? undefined : this.index.get(key));
    const client = byKey(facts.clientId !== undefined ? `client:${facts.clientId}` : undefined);
    const peer = byKey(peerKey(e));
    const address = byKey(addressKey(e));
    const joinable = (found: State | undefined, windowMs: number, accepts: (s: State) => boolean) =>
      found && e.startedAt - found.endedAt <= windowMs && accepts(found) ? found : undefined;
    switch (role) {
      case "probe":
        return joinable(peer, PEER_WINDOW_MS, onlyGoodProbes);
      case "discovery":
        return joinable(peer, PEER_WINDOW_MS, beforeToken) ?? joinable(address, PEER_WINDOW_MS, beforeToken);
      case "browser":
        return (
          joinable(byKey(facts.state !== undefined ? `state:${facts.state}` : undefined), Infinity, beforeToken) ??
          joinable(client, AUTH_WINDOW_MS, beforeToken) ??
          joinable(peer, AUTH_WINDOW_MS, beforeToken) ??
          joinable(address, AUTH_WINDOW_MS, awaitsAuthorization) ??
          joinable(this.awaiting, AUTH_WINDOW_MS, awaitsAuthorization)
        );
      case "token":
        return (
          joinable(client, AUTH_WINDOW_MS, notConnected) ??
          joinable(peer, PEER_WINDOW_MS, notConnected) ??
          joinable(address, PEER_WINDOW_MS, notConnected)
        );
      case "refresh":
        return undefined; // a refresh token names its handshake, or the tracker never saw it issued
      case "session":
        // A browser's preflight: only into the handshake of the same client and Origin.
        if (e.kind === "cors_preflight") return joinable(peer, PEER_WINDOW_MS, (s) => facts.origin !== undefined && s.origins.includes(facts.origin));
        // A bearer names its handshake: with an unknown one, this is another client or an older token.
        return facts.bearerFingerprint === undefined ? joinable(peer, PEER_WINDOW_MS, anyState) : undefined;
    }
  }

  private indexExchange(s: State, e: ClassifiedExchange, role: Role): void {
    const { facts } = e;
    const { issued, mcp } = facts;
    // Ids this handshake brought into being: they now point here.
    this.link(s, mcp?.sessionIdAssigned && `session:${mcp.sessionIdAssigned}`, true);
    this.link(s, issued?.accessToken && `token:${issued.accessToken}`, true);
    this.link(s, issued?.refreshToken && `refresh:${issued.refreshToken}`, true);
    this.link(s, issued?.code && `code:${issued.code}`, true);
    this.link(s, facts.state && `state:${facts.state}`, true);
    this.link(s, facts.clientId && `client:${facts.clientId}`, true);
    // Ids it merely carried: known elsewhere, they stay there (e.g. a tracker started mid-session).
    this.link(s, mcp?.sessionId && `session:${mcp.sessionId}`, false);
    this.link(s, facts.bearerFingerprint && `token:${facts.bearerFingerprint}`, false);
    // Only the connecting steps speak for a client: a connected session's traffic must not draw
    // the next attempt from the same (shared, hosted) address into it.
    if (role !== "session" && role !== "refresh") {
      this.link(s, peerKey(e), true);
      this.link(s, addressKey(e), true);
    }
    if (role === "discovery") this.awaiting = s;
  }

  private link(s: State, key: string | undefined, overwrite: boolean): void {
    if (!key) return;
    const current = this.index.get(key);
    if (current && current !== s && !overwrite) return;
    this.index.set(key, s);
    s.keys.delete(key); // re-insert: least recently used first
    s.keys.add(key);
    if (s.keys.size > MAX_KEYS) this.unlink(s, s.keys.values().next().value!);
  }

  private unlink(s: State, key: string): void {
    s.keys.delete(key);
    if (this.index.get(key) === s) this.index.delete(key);
  }

  /** Marks the handshake most recently active; returns those the cap closed. */
  private activate(s: State): State[] {
    this.dormant.delete(s.id);
    this.open.delete(s.id);
    this.open.set(s.id, s);
    const closed: State[] = [];
    for (const oldest of this.open.values()) {
      if (this.open.size <= this.limits.maxOpen) break;
      this.open.delete(oldest.id);
      this.close(oldest);
      closed.push(oldest);
    }
    return closed;
  }

  /** Keeps a closed handshake dormant when a later exchange may still name it, else forgets it. */
  private close(s: State): void {
    if (this.awaiting === s) this.awaiting = undefined;
    if (![...s.keys].some((key) => RESUMING_KEY.test(key))) {
      this.forget(s);
      return;
    }
    this.dormant.set(s.id, s);
    for (const oldest of this.dormant.values()) {
      if (this.dormant.size <= this.limits.maxDormant) break;
      this.forget(oldest);
    }
  }

  private forget(s: State): void {
    this.dormant.delete(s.id);
    for (const key of [...s.keys]) this.unlink(s, key);
  }
}

function peerKey(e: ClassifiedExchange): string | undefined {
  return e.clientAddr === null ? undefined : `peer:${e.clientAddr}|${e.facts.userAgent ?? ""}`;
}

function addressKey(e: ClassifiedExchange): string | undefined {
  return e.clientAddr === null ? undefined : `address:${e.clientAddr}`;
}

/**
 * The batch form, for re-running over stored exchanges: the same as feeding an unbounded tracker
 * the exchanges in id order, then taking its snapshot at `now`.
 */
export function groupHandshakes(exchanges: ClassifiedExchange[], now: number): Handshake[] {
  const tracker = new HandshakeTracker({ maxOpen: Infinity });
  for (const e of [...exchanges].sort((a, b) => a.id - b.id)) tracker.add(e);
  return tracker.snapshot(now);
}
