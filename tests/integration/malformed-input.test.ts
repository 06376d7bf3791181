// Malformed input, generated: a few thousand raw TCP requests (random bytes as JSON-RPC
// bodies, invalid UTF-8, huge and duplicated headers, bad Content-Length, truncated chunked
// bodies, garbage, slow headers). mcp-lens must stay up, answer or close each one cleanly,
// record each one, leak nothing, and store no planted secret.
import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import net from "node:net";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CANARY_MARK } from "../helpers/artifacts.js";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

const CASES = 3000;
const CONCURRENCY = 32;
const HEADER_TIMEOUT_MS = 1000;
/** A case that neither answers nor closes by then has hung. */
const CASE_DEADLINE_MS = 5000;

/** Seeded, so a failure can be replayed: the seed is in the test name. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface FuzzCase {
  index: number;
  category: string;
  chunks: Buffer[];
  /** Pause between chunks (slow clients). */
  gapMs: number;
  /**
   * after-write: the client half-closes once sent (a client going away mid-request);
   * after-response: it closes once answered (complete requests: Node drops a request whose
   * client half-closed, as it should); never: it waits for mcp-lens to act (slow headers).
   */
  end: "after-write" | "after-response" | "never";
  /** The request line is intact and arrives in one piece: the record must carry its path. */
  tagged: boolean;
}

interface Outcome {
  status: number | null;
  hung: boolean;
}

const SEED = 20261125;
const canary = `${CANARY_MARK}fuzz${randomBytes(12).toString("hex")}`;

function generate(count: number, random: () => number): FuzzCase[] {
  const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(0, 255)));
  const pick = <T,>(items: T[]) => items[int(0, items.length - 1)]!;
  const jsonRpcPrefix = () => Buffer.from(pick(['{"jsonrpc":"2.0","id":1,"method":"', '{"jsonrpc":"2.0","method":"tools/call","params":', "[{", '{"id":', ""]));
  const secretHeader = () => pick([`Authorization: Bearer ${canary}\r\n`, `Cookie: session=${canary}\r\n`, ""]);
  const head = (i: number, lines: string) =>
    `POST /fuzz/${i}${random() < 0.2 ? `?access_token=${canary}` : ""} HTTP/1.1\r\nHost: 127.0.0.1\r\n${secretHeader()}${lines}`;

  const makers: Array<[weight: number, make: (i: number) => Omit<FuzzCase, "index">]> = [
    [30, (i) => {
      const body = Buffer.concat([jsonRpcPrefix(), bytes(int(0, 2000))]);
      return { category: "random bytes as a JSON-RPC body", chunks: [Buffer.concat([Buffer.from(head(i, `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`)), body])], gapMs: 0, end: "after-response", tagged: true };
    }],
    [10, (i) => {
      const body = Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"'), Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0xed, 0xa0, 0x80]), bytes(int(0, 50)), Buffer.from('"}}')]);
      const headerBytes = Buffer.concat([Buffer.from(head(i, "X-Latin: caf")), Buffer.from([0xe9, 0xff, 0x80]), Buffer.from(`\r\nContent-Length: ${body.length}\r\n\r\n`)]);
      return { category: "invalid UTF-8", chunks: [Buffer.concat([headerBytes, body])], gapMs: 0, end: "after-response", tagged: true };
    }],
    [8, (i) => {
      const many = random() < 0.5;
      const lines = many ? Array.from({ length: int(500, 900) }, (_, k) => `X-H${k}: ${"v".repeat(30)}\r\n`).join("") : `X-Big: ${"a".repeat(int(17_000, 30_000))}\r\n`;
      return { category: "huge headers", chunks: [Buffer.from(head(i, `${lines}Content-Length: 0\r\n\r\n`))], gapMs: 0, end: "after-response", tagged: false };
    }],
    [10, (i) => {
      const dup = pick(["Host: 127.0.0.1\r\n", "Content-Type: application/json\r\n", `Authorization: Bearer ${canary}\r\n`, "Mcp-Session-Id: abc\r\n", "Transfer-Encoding: chunked\r\n", "Content-Length: 2\r\n"]);
      const lines = dup.repeat(int(2, 50));
      const chunked = dup.startsWith("Transfer");
      const body = chunked ? "2\r\n{}\r\n0\r\n\r\n" : "{}";
      return { category: "duplicated headers", chunks: [Buffer.from(head(i, `${lines}${chunked || dup.startsWith("Content-Length") ? "" : "Content-Length: 2\r\n"}\r\n${body}`))], gapMs: 0, end: "after-response", tagged: true };
    }],
    [10, (i) => {
      const body = '{"jsonrpc":"2.0","id":1,"method":"ping"}';
      const longer = String(body.length + int(1, 500));
      const length = pick(["abc", "-1", "1e3", " 12 34", "99999999999999999999", longer, String(int(0, body.length - 1)), "0x10"]);
      // A body shorter than announced ends when the client gives up; the rest are refused at once.
      return { category: "bad Content-Length", chunks: [Buffer.from(head(i, `Content-Length: ${length}\r\n\r\n${body}`))], gapMs: 0, end: length === longer ? "after-write" : "after-response", tagged: true };
    }],
    [10, (i) => {
      const size = int(1, 4096);
      const sent = random() < 0.5 ? `${size.toString(16)}\r\n${"x".repeat(int(0, size - 1))}` : pick(["zz\r\n{}\r\n0\r\n\r\n", "2\r\n{}XX0\r\n\r\n", "2;ext=\x01\r\n{}\r\n0\r\n\r\n", "-2\r\n{}\r\n"]);
      return { category: "truncated or broken chunked body", chunks: [Buffer.from(head(i, `Transfer-Encoding: chunked\r\n\r\n${sent}`))], gapMs: 0, end: "after-write", tagged: true };
    }],
    [20, () => {
      const valid = Buffer.from("GET /fuzz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      const garbage = pick([bytes(int(1, 300)), valid.subarray(0, int(1, valid.length - 2)), Buffer.concat([bytes(int(1, 10)), valid]), Buffer.from(`GET /${"\x00".repeat(int(1, 5))} HTTP/1.1\r\n\r\n`)]);
      return { category: "garbage", chunks: [garbage], gapMs: 0, end: "after-write", tagged: false };
    }],
    [1, (i) => {
      const text = head(i, "Content-Length: 2\r\n\r\n{}");
      const pieces = Array.from({ length: 6 }, (_, k) => Buffer.from(text.slice((k * text.length) / 6, ((k + 1) * text.length) / 6)));
      return { category: "slow but complete headers", chunks: pieces, gapMs: 60, end: "after-response", tagged: true };
    }],
    [1, () => ({ category: "headers that never finish", chunks: [Buffer.from("POST /fuzz HTTP/1.1\r\nHost: 127.0.0.1\r\n"), Buffer.from("X-Slow: 1\r\n")], gapMs: 100, end: "never", tagged: false })],
  ];
  const total = makers.reduce((sum, [w]) => sum + w, 0);
  return Array.from({ length: count }, (_, index) => {
    let roll = random() * total;
    const make = makers.find(([w]) => (roll -= w) < 0)?.[1] ?? makers[0]![1];
    return { index, ...make(index) };
  });
}

/** The whole response is in: its headers and Content-Length bytes of body (every answer here has one). */
function responseComplete(received: Buffer): boolean {
  const end = received.indexOf("\r\n\r\n");
  if (end === -1) return false;
  const length = /\r\ncontent-length: *(\d+)/i.exec(received.subarray(0, end).toString("latin1"));
  return received.length >= end + 4 + Number(length?.[1] ?? 0);
}

/** Sends one case on its own connection; resolves with the status it got, if any. */
function send(port: number, c: FuzzCase): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let received = Buffer.alloc(0);
    let hung = false;
    const deadline = setTimeout(() => {
      hung = true;
      socket.destroy();
    }, CASE_DEADLINE_MS);
    socket.on("data", (d: Buffer) => {
      received = Buffer.concat([received, d]);
      if (c.end === "after-response" && responseComplete(received)) socket.destroy();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(deadline);
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(received.subarray(0, 64).toString("latin1"));
      resolve({ status: status ? Number(status[1]) : null, hung });
    });
    socket.on("connect", async () => {
      for (const [k, chunk] of c.chunks.entries()) {
        if (k > 0 && c.gapMs > 0) await new Promise((r) => setTimeout(r, c.gapMs));
        if (socket.destroyed) return;
        socket.write(chunk);
      }
      if (c.end === "after-write") socket.end();
    });
  });
}

let upstream: TestUpstream;
let lens: RunningLens;
const tmp = tempDir();
const dbPath = `${tmp.dir}/lens.db`;

beforeAll(async () => {
  upstream = await startUpstream((_req, res, body) =>
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id: 1, result: { bytes: body.length } })),
  );
  lens = await startLensProcess({ upstream: upstream.url, dbPath, args: ["--header-timeout", String(HEADER_TIMEOUT_MS), "--flush-interval", "50"] });
});

afterAll(async () => {
  await lens?.stop();
  await upstream?.close();
  tmp.cleanup();
});

describe("malformed input", () => {
  it(`survives ${CASES} generated malformed requests (seed ${SEED}): answers or closes each, records each`, async () => {
    const cases = generate(CASES, prng(SEED));
    const fds = () => readdirSync(`/proc/${lens.child.pid}/fd`).length;
    const fdsBefore = fds();
    const upstreamBefore = upstream.connections();
    const port = Number(new URL(lens.url).port);

    const outcomes: Outcome[] = new Array(cases.length);
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < cases.length) {
          const c = cases[next++]!;
          outcomes[c.index] = await send(port, c);
        }
      }),
    );

    // Each was answered with a status line, or its connection closed: none hung.
    const hung = cases.filter((c) => outcomes[c.index]!.hung).map((c) => `#${c.index} ${c.category}`);
    expect(hung).toEqual([]);
    const byCategory = new Map<string, Map<string, number>>();
    for (const c of cases) {
      const statuses = byCategory.get(c.category) ?? new Map<string, number>();
      const key = String(outcomes[c.index]!.status ?? "closed");
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
      byCategory.set(c.category, statuses);
    }
    console.log(
      [...byCategory].map(([category, statuses]) => `${category}: ${[...statuses].map(([s, n]) => `${n}× ${s}`).join(", ")}`).join("\n"),
    );
    for (const c of cases) {
      const { status } = outcomes[c.index]!;
      if (c.category === "random bytes as a JSON-RPC body" || c.category === "slow but complete headers") expect(status, `#${c.index}`).toBe(200);
      if (c.category === "huge headers") expect(status, `#${c.index}`).toBe(431);
      if (c.category === "headers that never finish") expect(status, `#${c.index}`).toBe(408);
    }

    // Still up, still forwarding, nothing leaked.
    const ok = await request(lens.url + "/mcp", { method: "POST", headers: { "content-type": "application/json" }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' });
    expect(ok.status).toBe(200);
    // Requests cut mid-body must not leave their upstream request waiting for the rest.
    await waitFor(() => upstream.connections() <= upstreamBefore, `upstream connections back to ${upstreamBefore}`, 10_000);
    await waitFor(() => fds() <= fdsBefore, `mcp-lens file descriptors back to ${fdsBefore}`, 10_000);
    expect(lens.child.exitCode).toBeNull();

    // Every case is recorded: those with an intact request line under their own path.
    const rows = await waitFor(() => {
      const db = new Database(dbPath, { readonly: true });
      try {
        const all = db.prepare("SELECT path FROM exchanges").all() as Array<{ path: string }>;
        return all.length >= CASES + 1 ? all : null;
      } finally {
        db.close();
      }
    }, `at least ${CASES + 1} rows`, 15_000);
    const paths = new Set(rows.map((r) => r.path));
    const unrecorded = cases.filter((c) => c.tagged && !paths.has(`/fuzz/${c.index}`)).map((c) => `#${c.index} ${c.category}`);
    expect(unrecorded).toEqual([]);
    expect(lens.stderr.join("")).toBe("");
  });
});
