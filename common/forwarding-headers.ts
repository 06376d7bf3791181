// The headers that say who the client is and which URL it used: which ones mcp-lens sets, which
// it removes from untrusted peers, and the Connection tokens that must not strip them; and what
// the upstream received against what the client claimed, for the recording.

import type { Forwarding, HeaderPairs } from "../analysis/exchange.js";

/** The forwarding headers mcp-lens sets on every forwarded request: kept from a trusted peer, else replaced. */
export const SET_BY_PROXY = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] as const;

/**
 * Other claims about the client or the public URL that servers read (RFC 7239 Forwarded, the
 * X-Forwarded-Port/-Prefix that frameworks add to the public URL, nginx's X-Real-IP, IIS/Azure's
 * X-Original-Host). From an untrusted peer they are removed rather than set from facts: mcp-lens
 * knows no fact for a port or a path prefix the public URL may have, and one set of forwarding
 * headers (X-Forwarded-For/-Proto/-Host, set above) is all a server needs; a Forwarded of our own
 * would be a second source that could only disagree.
 */
export const REMOVED_FROM_UNTRUSTED = ["forwarded", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "x-original-host"] as const;

/** Any header name a Connection token could use to make a hop drop what mcp-lens set. */
export const FORWARDING_HEADER_NAMES: ReadonlySet<string> = new Set<string>([...SET_BY_PROXY, ...REMOVED_FROM_UNTRUSTED]);

/** Cheap pre-check (no allocation) that a Connection value may name a forwarding header. */
export const NAMES_FORWARDING_HEADER = /forwarded|x-real-ip|x-original-host/i;

/**
 * Connection without the tokens that name a forwarding header (a hop-by-hop header: the next hop,
 * or any proxy between mcp-lens and the server, drops the headers it names, which would strip what
 * mcp-lens set). null when nothing is left.
 */
export function withoutForwardingTokens(connection: string): string | null {
  const kept = connection.split(",").map((t) => t.trim()).filter((t) => t && !FORWARDING_HEADER_NAMES.has(t.toLowerCase()));
  return kept.length ? kept.join(", ") : null;
}

/**
 * The request as the upstream received it, and what the client claimed: the client's headers with
 * mcp-lens's forwarding values in place of its own (at the first occurrence, appended when it sent
 * none), the removed ones left out; `claimed` holds the client's originals of every header whose
 * value did not reach the upstream. Run off the request path (the record worker). A trusted
 * peer's X-Forwarded-For, extended with its address, is no claim: it went on, with one more hop.
 */
export function forwardedHeaders(
  clientHeaders: HeaderPairs,
  forwarding: Forwarding | undefined,
): { sent: HeaderPairs; claimed: HeaderPairs; setByProxy: string[] } {
  if (!forwarding) return { sent: clientHeaders, claimed: [], setByProxy: [] };
  // A Map, not an object: a header named "constructor" must not find Object's.
  const set = new Map<string, string | null>([
    ["x-forwarded-for", forwarding.forwardedFor],
    ["x-forwarded-proto", forwarding.forwardedProto],
    ["x-forwarded-host", forwarding.forwardedHost],
    ["connection", forwarding.connection],
  ]);
  const sent: HeaderPairs = [];
  const claimed: HeaderPairs = [];
  const placed = new Set<string>();
  for (const pair of clientHeaders) {
    const lower = pair[0].toLowerCase();
    const ours = set.has(lower);
    if (!ours && (forwarding.trusted || !FORWARDING_HEADER_NAMES.has(lower))) {
      sent.push(pair); // as the client sent it (Node joins repeated lines, the upstream sees the same)
      continue;
    }
    const value = ours ? (set.get(lower) ?? null) : null;
    const kept = value !== null && !placed.has(lower);
    if (kept) {
      placed.add(lower);
      sent.push([pair[0], value]);
    }
    const extended = forwarding.trusted && lower === "x-forwarded-for";
    if (!extended && (!kept || value !== pair[1])) claimed.push(pair);
  }
  // Which forwarding values are mcp-lens's own rather than a trusted front's: the analyser must not
  // read its default `X-Forwarded-Proto: http` as the scheme the client used (the TLS front that
  // passed none is the very fault it diagnoses).
  const setByProxy: string[] = [];
  for (const name of SET_BY_PROXY) {
    const value = set.get(name);
    const fromPeer = forwarding.trusted && clientHeaders.some(([n]) => n.toLowerCase() === name);
    if (value && !fromPeer) setByProxy.push(name);
    if (!placed.has(name) && value) sent.push([name, value]);
  }
  return { sent, claimed, setByProxy };
}
