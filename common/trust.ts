// Which peers may tell us, through X-Forwarded-*, who the client is and how it came in.
import { BlockList, isIP } from "node:net";
import { UsageError } from "./config.js";

export interface TrustPolicy {
  isTrusted(peer: string | undefined): boolean;
  /** True when every peer is trusted: then the client is the left-most X-Forwarded-For entry. */
  readonly trustsAll: boolean;
}

const NAMED_RANGES: Record<string, Array<[string, number, "ipv4" | "ipv6"]>> = {
  loopback: [
    ["127.0.0.0", 8, "ipv4"],
    ["::1", 128, "ipv6"],
  ],
  // RFC 1918, RFC 4193 and link-local: where Docker networks and sidecars live.
  private: [
    ["10.0.0.0", 8, "ipv4"],
    ["172.16.0.0", 12, "ipv4"],
    ["192.168.0.0", 16, "ipv4"],
    ["169.254.0.0", 16, "ipv4"],
    ["fc00::", 7, "ipv6"],
    ["fe80::", 10, "ipv6"],
  ],
};

/** "::ffff:10.0.0.1" → "10.0.0.1", so IPv4 rules match dual-stack sockets. */
export function normalizeAddress(address: string): string {
  return address.startsWith("::ffff:") && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

export function createTrustPolicy(trustAll: boolean, list: string): TrustPolicy {
  if (trustAll) return { trustsAll: true, isTrusted: () => true };
  const blocks = new BlockList();
  for (const entry of list.split(",").map((s) => s.trim()).filter(Boolean)) {
    if (entry === "none") continue;
    const named = NAMED_RANGES[entry];
    if (named) {
      for (const [net, prefix, family] of named) blocks.addSubnet(net, prefix, family);
      continue;
    }
    const [address = "", prefixText] = entry.split("/");
    const family = isIP(address);
    if (!family) throw new UsageError(`--trusted-proxies: '${entry}' is not an address, a CIDR, 'loopback', 'private' or 'none'`);
    const type = family === 4 ? "ipv4" : "ipv6";
    if (prefixText === undefined) blocks.addAddress(address, type);
    else {
      const prefix = Number(prefixText);
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) {
        throw new UsageError(`--trusted-proxies: '${entry}' has an invalid prefix length`);
      }
      blocks.addSubnet(address, prefix, type);
    }
  }
  // Asked for every request, about the same few peers (the front proxy): BlockList.check
  // allocates a SocketAddress each time, so answers are remembered (bounded).
  const known = new Map<string, boolean>();
  return {
    trustsAll: false,
    isTrusted(peer) {
      if (!peer) return false;
      let trusted = known.get(peer);
      if (trusted === undefined) {
        const address = normalizeAddress(peer);
        const family = isIP(address);
        trusted = family !== 0 && blocks.check(address, family === 4 ? "ipv4" : "ipv6");
        if (known.size >= KNOWN_PEERS) known.clear();
        known.set(peer, trusted);
      }
      return trusted;
    },
  };
}

const KNOWN_PEERS = 4096;

/**
 * The client address: walking X-Forwarded-For from the right, the first hop we do not trust.
 * With trust-all, the left-most entry (what the outermost proxy saw).
 */
export function clientAddress(
  peer: string | undefined,
  forwardedFor: string | undefined,
  trust: TrustPolicy,
  trusted = trust.isTrusted(peer),
): string | null {
  const direct = peer ? normalizeAddress(peer) : null;
  if (!forwardedFor || !trusted) return direct;
  const hops = forwardedFor.split(",").map((s) => s.trim()).filter(Boolean);
  if (hops.length === 0) return direct;
  if (trust.trustsAll) return normalizeAddress(hops[0]!);
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = normalizeAddress(hops[i]!);
    if (!trust.isTrusted(hop) || i === 0) return hop;
  }
  return direct;
}
