// The headers that say who the client is and which URL it used: which ones mcp-lens sets, which
// it removes from untrusted peers, and the Connection tokens that must not strip them.

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
