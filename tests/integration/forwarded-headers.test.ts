// What the upstream receives of the forwarding headers, and what the recording keeps of them,
// through the real binary. From an untrusted peer, every claim about the client or the public URL
// (X-Forwarded-*, Forwarded, X-Forwarded-Port/-Prefix, X-Real-IP, X-Original-Host) is replaced or
// removed; a Connection header naming them must not make any hop strip what mcp-lens set. The
// recording holds what the upstream received, and the client's originals as claims.
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

const HOSTILE = {
  "X-Forwarded-Proto": "https",
  "X-Forwarded-Host": "evil.example",
  "X-Forwarded-For": "6.6.6.6",
  Forwarded: 'for=6.6.6.6;proto=https;host="evil.example"',
  "X-Forwarded-Port": "443",
  "X-Forwarded-Prefix": "/evil",
  "X-Real-IP": "6.6.6.6",
  "X-Original-Host": "evil.example",
  Connection: "keep-alive, X-Forwarded-For, x-forwarded-host, Forwarded, X-Real-IP",
};

const received = (raw: string[]) => {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < raw.length; i += 2) pairs.push([raw[i]!.toLowerCase(), raw[i + 1]!]);
  return pairs;
};
const value = (pairs: Array<[string, string]>, name: string) => pairs.find(([n]) => n.toLowerCase() === name)?.[1];

function recorded(dbPath: string, path: string) {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.prepare("SELECT req_headers, forwarding FROM exchanges WHERE path = ?").get(path) as { req_headers: string; forwarding: string | null } | undefined;
  } finally {
    db.close();
  }
}

describe.each([
  ["an untrusted peer", ["--trusted-proxies", "none"], false],
  ["a trusted front proxy", ["--trusted-proxies", "loopback"], true],
])("forwarding headers from %s", (_name, args, trusted) => {
  const tmp = tempDir("mcp-lens-forwarded-");
  const dbPath = `${tmp.dir}/lens.db`;
  let upstream: TestUpstream;
  let lens: RunningLens;

  beforeAll(async () => {
    upstream = await startUpstream((_req, res) => res.end("ok"));
    lens = await startLensProcess({ upstream: upstream.url, dbPath, args: [...args, "--flush-interval", "20"] });
    await request(`${lens.url}/claims`, { headers: HOSTILE });
  });
  afterAll(async () => {
    await lens?.stop();
    await upstream?.close();
    tmp.cleanup();
  });

  it("reach the upstream replaced or removed (untrusted) or kept (trusted); Connection names none of them", () => {
    const seen = received(upstream.received[0]!.rawHeaders);
    const connection = value(seen, "connection") ?? "";
    for (const token of connection.split(",").map((t) => t.trim().toLowerCase())) {
      expect(["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded", "x-real-ip", "x-original-host"]).not.toContain(token);
    }
    if (trusted) {
      expect(value(seen, "x-forwarded-for")).toBe("6.6.6.6, 127.0.0.1");
      expect(value(seen, "x-forwarded-host")).toBe("evil.example");
      expect(value(seen, "forwarded")).toBe(HOSTILE.Forwarded);
      expect(value(seen, "x-real-ip")).toBe("6.6.6.6");
      return;
    }
    expect(value(seen, "x-forwarded-for")).toBe("127.0.0.1");
    expect(value(seen, "x-forwarded-proto")).toBe("http");
    expect(value(seen, "x-forwarded-host")).toBe(new URL(lens.url).host);
    for (const name of ["forwarded", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "x-original-host"]) expect(value(seen, name), name).toBeUndefined();
    expect(JSON.stringify(seen)).not.toContain("evil");
  });

  it("are recorded as the upstream received them, the client's originals as claims", async () => {
    const row = await waitFor(() => recorded(dbPath, "/claims"), "the exchange recorded");
    const headers = JSON.parse(row.req_headers) as Array<[string, string]>;
    const upstreamGot = received(upstream.received[0]!.rawHeaders);
    for (const name of ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip", "x-original-host", "x-forwarded-port", "x-forwarded-prefix"]) {
      expect(value(headers, name), name).toBe(value(upstreamGot, name));
    }
    expect(value(headers, "connection")).toBe(value(upstreamGot, "connection"));
    const forwarding = JSON.parse(row.forwarding ?? "{}") as { claimedHeaders?: Array<[string, string]>; setByProxy?: string[] };
    const claimed = forwarding.claimedHeaders ?? [];
    if (trusted) {
      // Kept as sent: nothing replaced but the Connection tokens; every X-Forwarded-* is the front's.
      expect(claimed).toEqual([["Connection", HOSTILE.Connection]]);
      expect(forwarding.setByProxy).toBeUndefined();
      return;
    }
    expect(Object.fromEntries(claimed)).toEqual(HOSTILE);
    // From an untrusted peer the forwarding values are mcp-lens's own facts, and say so.
    expect(forwarding.setByProxy?.sort()).toEqual(["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"]);
  });
});
