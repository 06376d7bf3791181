import { describe, expect, it } from "vitest";
import { UsageError } from "../../common/config.js";
import { clientAddress, createTrustPolicy } from "../../common/trust.js";

describe("trust policy", () => {
  const defaults = createTrustPolicy(false, "loopback,private");

  it.each([
    ["127.0.0.1", true],
    ["::1", true],
    ["::ffff:127.0.0.1", true],
    ["10.1.2.3", true],
    ["172.20.0.5", true],
    ["192.168.1.1", true],
    ["fd00::1", true],
    ["8.8.8.8", false],
    ["172.32.0.1", false],
    ["2001:db8::1", false],
    [undefined, false],
  ])("by default trusts loopback and private peers: %s → %s", (peer, trusted) => {
    expect(defaults.isTrusted(peer)).toBe(trusted);
  });

  it("accepts addresses and CIDRs, and 'none'", () => {
    const policy = createTrustPolicy(false, "203.0.113.7, 198.51.100.0/24");
    expect(policy.isTrusted("203.0.113.7")).toBe(true);
    expect(policy.isTrusted("198.51.100.99")).toBe(true);
    expect(policy.isTrusted("127.0.0.1")).toBe(false);
    expect(createTrustPolicy(false, "none").isTrusted("127.0.0.1")).toBe(false);
    expect(createTrustPolicy(true, "none").isTrusted("8.8.8.8")).toBe(true);
  });

  it("rejects what is not an address with a usage error", () => {
    expect(() => createTrustPolicy(false, "nginx")).toThrow(UsageError);
    expect(() => createTrustPolicy(false, "10.0.0.0/33")).toThrow(/invalid prefix length/);
  });

  it("takes the client address from a trusted X-Forwarded-For only", () => {
    expect(clientAddress("8.8.8.8", "1.2.3.4", defaults)).toBe("8.8.8.8");
    expect(clientAddress("10.0.0.2", "1.2.3.4", defaults)).toBe("1.2.3.4");
    // Right to left, skipping trusted hops: the first untrusted one is the client.
    expect(clientAddress("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.9", defaults)).toBe("1.2.3.4");
    expect(clientAddress("10.0.0.2", "6.6.6.6, 1.2.3.4", createTrustPolicy(true, ""))).toBe("6.6.6.6");
    expect(clientAddress("::ffff:10.0.0.2", undefined, defaults)).toBe("10.0.0.2");
  });
});
