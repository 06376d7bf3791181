// Groups classified exchanges into connector handshakes: one connection attempt by one client,
// from its probe to its tool calls (see shared/reference/connector-handshake.md). Pure: time comes
// from the exchanges or an explicit `now`, so the proxy runs it live and the inspector re-runs it.
//
// Both eras (shared/reference/connector-handshake.md): a legacy connection opens with initialize and
// keeps a session id; a modern (2026-07-28) one opens with server/discover (or its first request)
// and every request is self-contained, grouped by token, address, user agent and `_meta` client info.
//
// Linking, first match wins:
//   1. ids that name one handshake, whatever its state: Mcp-Session-Id, a bearer or refresh token
//      its token response issued, the authorization code its callback delivered. A bearer shared
//      by separate connections does not merge them: a request that opens a connection after the
//      named handshake connected (unless that was mcp-remote's test connection, which signs in for
//      the real one), or whose `_meta` client info names another client, starts anew
//   2. ids of the authorization phase, into a handshake that has not reached the token step:
//      state (authorize → callback), client_id (registration → authorize → token)
//   3. the same client (address + user agent), then the same address, within a short window and
//      only into a handshake the exchange can continue (a probe after anything but a probe, or
//      discovery after the token step, is a new attempt — except a probe right after pre-flight
//      checks, after mcp-remote's test connection, or a dual-era client's fallback after its
//      modern probe was refused); a preflight for a request after the probe joins only the same
//      client's handshake that showed its Origin; a modern request without a token joins the
//      same modern client (address, user agent, `_meta` client info) unless it opens a connection
//   4. the user's browser without ids (a pre-registered or metadata-document client_id): the
//      handshake from the same address, else the latest one, that did discovery without
//      registering and awaits authorization
//   Else the exchange starts a handshake, unless it can only be evidence within one (`other`, revoke).
//
// Outcome:
//   succeeded    the connector is usable: an initialize or server/discover (not its preflight) was
//                answered ok (for a handshake seen from mid-session on, any MCP request), and neither
//                notifications/initialized nor the list step failed; once a list or tool call is
//                answered ok it stays succeeded, whatever fails later
//   failed       connected but unusable (initialized or list failed), or its last exchange failed:
//                the client stopped there. A failed probe or discovery document gets a grace
//                period first, since clients try a fallback at once
//   in_progress  activity within ACTIVE_MS, or USER_MS while the user is on the authorization page
//   abandoned    otherwise

import { type ClassifiedExchange, byStart } from "./exchange.js";
import { endOf, isPreflightGet, opensConnection, placementOf, type Role } from "./handshake-steps.js";
import type { Handshake } from "./handshake.js";
import {
  anyState,
  AUTH_WINDOW_MS,
  awaitsAuthorization,
  awaitsBrowser,
  beforeToken,
  FALLBACK_GRACE_MS,
  MCP_REMOTE_FALLBACK_TEST,
  newState,
  notConnected,
  onlyGoodProbes,
  outcomeAt,
  probeContinues,
  recordExchange,
  RESUMING_KEY,
  sameClientInfo,
  type State,
  toHandshake,
} from "./handshake-state.js";

/** Discovery without ids joins the same client's handshake within this time of its last exchange. */
const PEER_WINDOW_MS = 60_000;
/**
 * A modern (2026-07-28) connection has no session id and no teardown: its self-contained requests
 * join the same client (address, user agent, `_meta` client info) this long after the last one.
 */
const MODERN_WINDOW_MS = 30 * 60_000;

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

// ---------------------------------------------------------------------------------------------
// The tracker

interface AddResult {
  handshakeId: number | null;
  /** Every handshake changed since takeChanged last ran (this exchange's among them), in its new state. */
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
  /** Placed into (or closed) since takeChanged last ran; drained by it, so bounded by its caller's pace. */
  private readonly changed = new Set<State>();
  /** The latest time the exchanges have shown. */
  private clock = -Infinity;
  private readonly limits: TrackerLimits;

  constructor(limits: Partial<TrackerLimits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /**
   * place + takeChanged, for one exchange at a time (the unit tests): hands out every handshake
   * changed since takeChanged last ran, so it is not to be mixed with place.
   */
  add(e: ClassifiedExchange): AddResult {
    const handshakeId = this.place(e);
    return handshakeId === null ? NOT_ATTACHED : { handshakeId, updated: this.takeChanged() };
  }

  /**
   * Places the exchange into its handshake and returns that handshake's id (null: it belongs to
   * none), without building the handshake: takeChanged does, once for all the exchanges placed
   * since. A recorder placing hundreds of one session's exchanges between two batches built (and
   * copied the exchange ids of) the same handshake for each of them.
   */
  place(e: ClassifiedExchange): number | null {
    this.clock = Math.max(this.clock, endOf(e));
    const placement = placementOf(e);
    if (!placement) return null;
    const named = this.namedBy(e);
    // A bearer names the handshake that got it, but separate connections may share one (several
    // processes with one static token, a rerun with a cached token): a new connection is its own.
    const mcp = e.facts.mcp;
    const sentSession = mcp?.sessionId !== undefined && mcp.sessionId !== mcp.sessionIdAssigned;
    const separate = named !== undefined && !sentSession && separateConnection(named, e);
    // A refresh token names the handshake that got it; when the client is meanwhile re-connecting
    // (its token refused, discovery again), the refresh is part of that newer attempt.
    const newer = placement.role === "refresh" && named !== undefined ? this.newerAttempt(e, named) : undefined;
    let state = separate ? undefined : (newer ?? named ?? this.continuedBy(e, placement.role));
    if (!state) {
      if (!placement.canStart) return null;
      state = newState(e);
    }
    recordExchange(state, e, placement);
    this.indexExchange(state, e, placement.role, separate);
    this.changed.add(state);
    for (const closed of this.activate(state)) this.changed.add(closed);
    return state.id;
  }

  /** The handshakes changed since the last call (placed into, or closed by the cap), at the latest time the exchanges have shown. */
  takeChanged(): Handshake[] {
    const states = [...this.changed];
    this.changed.clear(); // first: a state that cannot be built must not stay here for good
    return states.map((s) => this.emit(s, this.clock));
  }

  /** The latest time the exchanges have shown (epoch ms). */
  get now(): number {
    return this.clock;
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

  /** The same client's handshake started after `named` went quiet, not yet connected. */
  private newerAttempt(e: ClassifiedExchange, named: State): State | undefined {
    const peer = this.index.get(peerKey(e) ?? "");
    const recent = peer !== undefined && e.startedAt - peer.endedAt <= PEER_WINDOW_MS;
    return recent && peer !== named && !peer.connected && peer.startedAt >= named.endedAt ? peer : undefined;
  }

  /** Weaker signals, each within a window and only into a handshake this role can continue. */
  private continuedBy(e: ClassifiedExchange, role: Role): State | undefined {
    const { facts } = e;
    const byKey = (key: string | undefined) => (key === undefined ? undefined : this.index.get(key));
    const client = byKey(clientKey(e));
    const peer = byKey(peerKey(e));
    const address = byKey(addressKey(e));
    const joinable = (found: State | undefined, windowMs: number, accepts: (s: State) => boolean) =>
      found && e.startedAt - found.endedAt <= windowMs && accepts(found) ? found : undefined;
    const modern = byKey(modernKey(e));
    switch (role) {
      case "probe":
        // A repeated probe; the real connection after pre-flight checks (a refused GET, discovery
        // on an authless server, mcp-remote's test connection); a dual-era client's fallback.
        return (
          joinable(peer, PEER_WINDOW_MS, (s) => onlyGoodProbes(s) && sameClientInfo(s, e)) ??
          joinable(peer, FALLBACK_GRACE_MS, probeContinues(e)) ??
          joinable(address, FALLBACK_GRACE_MS, probeContinues(e))
        );
      case "discovery":
        return (
          // A refused GET right after a stateless server's initialize is that connection's.
          (isPreflightGet(e) ? joinable(peer, FALLBACK_GRACE_MS, (s) => s.connected && !s.sessions) : undefined) ??
          joinable(peer, PEER_WINDOW_MS, beforeToken) ??
          joinable(address, PEER_WINDOW_MS, beforeToken)
        );
      case "browser":
        return (
          joinable(byKey(facts.state !== undefined ? `state:${facts.state}` : undefined), Infinity, beforeToken) ??
          // A step-up: the connected client authorizes again for the scope a 403 asked for.
          joinable(client, AUTH_WINDOW_MS, (s) => s.stepUp) ??
          joinable(client, AUTH_WINDOW_MS, beforeToken) ??
          joinable(peer, AUTH_WINDOW_MS, awaitsBrowser) ??
          joinable(peer, AUTH_WINDOW_MS, (s) => s.stepUp) ??
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
        if (facts.bearerFingerprint !== undefined) return undefined;
        // A modern request is self-contained: the same client is the same address, user agent and
        // `_meta` client info; server/discover after the connection was made opens another.
        if (facts.mcp?.era === "modern") {
          return joinable(modern, MODERN_WINDOW_MS, (s) => !(s.connected && opensConnection(e)));
        }
        return joinable(peer, PEER_WINDOW_MS, anyState);
    }
  }

  private indexExchange(s: State, e: ClassifiedExchange, role: Role, separate: boolean): void {
    const { facts } = e;
    const { issued, mcp } = facts;
    // The latest connection on a shared bearer is the one its next requests continue.
    if (separate) this.link(s, facts.bearerFingerprint && `token:${facts.bearerFingerprint}`, true);
    this.link(s, modernKey(e), true);
    // Ids this handshake brought into being: they now point here.
    this.link(s, mcp?.sessionIdAssigned && `session:${mcp.sessionIdAssigned}`, true);
    this.link(s, issued?.accessToken && `token:${issued.accessToken}`, true);
    this.link(s, issued?.refreshToken && `refresh:${issued.refreshToken}`, true);
    this.link(s, issued?.code && `code:${issued.code}`, true);
    this.link(s, facts.state && `state:${facts.state}`, true);
    this.link(s, clientKey(e), true);
    // Ids it merely carried: known elsewhere, they stay there (e.g. a tracker started mid-session).
    this.link(s, mcp?.sessionId && `session:${mcp.sessionId}`, false);
    this.link(s, facts.bearerFingerprint && `token:${facts.bearerFingerprint}`, false);
    // Only the connecting steps speak for a client: a connected session's traffic must not draw
    // the next attempt from the same (shared, hosted) address into it.
    // A token refused (401, or 403 asking for more scope) is where a client authenticates again: the
    // discovery or authorization that follows continues this handshake.
    if ((role !== "session" && role !== "refresh") || isAuthChallenge(e)) {
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

/** The same modern client: address, user agent and the `_meta` client info its requests carry. */
function modernKey(e: ClassifiedExchange): string | undefined {
  const mcp = e.facts.mcp;
  if (e.clientAddr === null || mcp?.era !== "modern") return undefined;
  const info = mcp.clientInfo;
  return `modern:${e.clientAddr}|${e.facts.userAgent ?? ""}|${info?.name ?? ""}@${info?.version ?? ""}`;
}

/**
 * Whether an exchange carrying a known bearer is another connection than the handshake the bearer
 * names: it opens one (initialize, server/discover) after that handshake connected, or its `_meta`
 * client info names another client.
 */
function separateConnection(s: State, e: ClassifiedExchange): boolean {
  // mcp-remote's test connection signed in; its real connection follows with the same token.
  if (s.connected && opensConnection(e)) return !s.testConnection;
  const info = e.facts.mcp?.era === "modern" ? e.facts.mcp.clientInfo?.name : undefined;
  return info !== undefined && s.signals.clientInfoName !== undefined && info !== s.signals.clientInfoName &&
    s.signals.clientInfoName !== MCP_REMOTE_FALLBACK_TEST;
}

/** A client_id names one client's registration; a metadata document's URL is every installation's. */
function clientKey(e: ClassifiedExchange): string | undefined {
  const { clientId, clientIdIsMetadataDocument } = e.facts;
  return clientId === undefined || clientIdIsMetadataDocument ? undefined : `client:${clientId}`;
}

/** An authenticated request refused with a challenge: the token is stale, or lacks a scope. */
function isAuthChallenge(e: ClassifiedExchange): boolean {
  return e.facts.bearerFingerprint !== undefined && (e.status === 401 || (e.status === 403 && e.facts.wwwAuthenticate !== undefined));
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
  for (const e of [...exchanges].sort(byStart)) tracker.place(e);
  return tracker.snapshot(now);
}
