// Terminal injection, unit level: terminalSafe/terminalSafeLines/jsonSafe on every class of
// control, and every text view (CLI and TUI) given a handshake whose clientInfo.name retitles the
// window (OSC 0) and writes the clipboard (OSC 52), and exchanges whose path, facts, diagnoses and
// replay details carry ESC, BEL, C1 CSI and bidi overrides.
import { EventEmitter } from "node:events";
import { render } from "ink-testing-library";
import { createElement } from "react";
import { describe, expect, it } from "vitest";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import type { Handshake } from "../../analysis/handshake.js";
import type { HandshakeDetail, HandshakeSummary } from "../../inspector/data.js";
import { formatHandshake, formatHandshakeTable, formatLiveLine, formatReplay, painter, truncate } from "../../inspector/format.js";
import type { ReplayResult } from "../../inspector/replay.js";
import { isTerminalSafe, jsonSafe, terminalSafe, terminalSafeDeep, terminalSafeLines, terminalSafeStyled } from "../../common/terminal-safe.js";
import { bodyLines, requestLines, responseLines } from "../../inspector/ui/exchange.js";
import { buildBody, exchangeRow, headerLines } from "../../inspector/ui/handshake.js";
import { clip, fit, line, LineView, seg, wrapText, type Line } from "../../inspector/ui/lines.js";
import { LineDiffScreen } from "../../inspector/ui/screen.js";

const NAME = "\x1b]0;pwned\x07\x1b]52;c;Q0FOQVJZ\x07evil";
/** Anything a terminal acts on: C0 but LF, DEL, C1, bidi and zero-width format characters. */
const ACTIVE = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]|\u{e0001}|[\u{e0020}-\u{e007f}]/u;
const ACTIVE_OR_TAB_OR_LF = /[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/;

describe("terminalSafe", () => {
  const cases: Array<[string, string, string]> = [
    ["C0 NUL, BEL, BS", "a\x00b\x07c\x08d", "a\\x00b\\x07c\\x08d"],
    ["CR (overwrites the line)", "ok\rFAKE", "ok\\x0dFAKE"],
    ["ESC CSI", "\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"],
    ["OSC 0 title and OSC 52 clipboard", NAME, "\\x1b]0;pwned\\x07\\x1b]52;c;Q0FOQVJZ\\x07evil"],
    ["OSC ended by ST", "\x1b]8;;http://x\x1b\\link", "\\x1b]8;;http://x\\x1b\\link"],
    ["DEL", "a\x7fb", "a\\x7fb"],
    ["C1 CSI 0x9b and OSC 0x9d", "\u009b2J\u009d0;t\u009c", "\\x9b2J\\x9d0;t\\x9c"],
    ["bidi override and isolates", "abc\u202edcba\u2066x\u2069\u061c", "abc\\u202edcba\\u2066x\\u2069\\u061c"],
    ["zero-width and BOM", "a\u200bb\u200dc\u2060d\ufeffe", "a\\u200bb\\u200dc\\u2060d\\ufeffe"],
    ["line and paragraph separators", "a\u2028b\u2029c", "a\\u2028b\\u2029c"],
    ["tag characters (invisible text)", "x\u{e0041}\u{e0042}", "x\\u{e0041}\\u{e0042}"],
    ["line feed and tab in a one-line field", "a\nb\tc", "a\\x0ab\\x09c"],
  ];
  for (const [what, input, expected] of cases) {
    it(what, () => {
      const out = terminalSafe(input);
      expect(out).toBe(expected);
      expect(out).not.toMatch(ACTIVE_OR_TAB_OR_LF);
      expect(terminalSafe(out), "idempotent").toBe(out);
    });
  }

  it("leaves printable text alone, emoji and accents included", () => {
    const text = "Claude Code 1.2 — café ✓ 日本語 🙂 [redacted:bearer]";
    expect(terminalSafe(text)).toBe(text);
    expect(isTerminalSafe(text)).toBe(true);
    expect(isTerminalSafe(NAME)).toBe(false);
  });

  it("terminalSafeLines keeps line feeds and tabs, turns CRLF into LF, escapes a lone CR", () => {
    expect(terminalSafeLines("a\r\nb\tc\rd\x1b[Ae\u009bf")).toBe("a\nb\tc\\x0dd\\x1b[Ae\\x9bf");
  });

  it("terminalSafeDeep escapes every string of plain data, keeps the rest", () => {
    const value = { a: NAME, list: [1, "\x07", null, { b: "\u202e" }], n: 3, t: true, nothing: null };
    expect(terminalSafeDeep(value)).toEqual({ a: terminalSafe(NAME), list: [1, "\\x07", null, { b: "\\u202e" }], n: 3, t: true, nothing: null });
    expect(value.a).toBe(NAME); // a copy
  });

  it("jsonSafe escapes what JSON.stringify leaves raw, losslessly", () => {
    const value = { name: `${NAME}\u009b1A\u202e\u2028\x7f\u{e0041}`, list: ["\u200b"] };
    const raw = JSON.stringify(value, null, 2);
    expect(raw).toMatch(/[\u009b\u202e\u2028\x7f]/); // what JSON leaves raw
    const safe = jsonSafe(raw);
    expect(safe).not.toMatch(ACTIVE);
    expect(JSON.parse(safe)).toEqual(value);
    expect(safe.split("\n").length).toBe(raw.split("\n").length); // the layout stays
  });
});

// ---------------------------------------------------------------------------------------------
// The views, given hostile recorded data

const hostile = "\x1b[2J\x1b[1;1H\u009b31m\u202e";

function exchange(id: number, fields: Partial<ClassifiedExchange> = {}): ClassifiedExchange {
  const body = { text: null, encoding: "utf8" as const, size: 0, truncated: false, decoded: null };
  return {
    id,
    startedAt: 1_700_000_000_000 + id,
    durationMs: 5,
    ttfbMs: 3,
    clientAddr: "127.0.0.1",
    method: "POST",
    host: `mcp.example${hostile}`,
    path: `/mcp/\x1b]0;path\x07${hostile}`,
    query: `q=\x1b]52;c;Q0FOQVJZ\x07`,
    status: 200,
    upstreamError: `reset\x1b[2K`,
    aborted: false,
    websocket: false,
    requestHeaders: [[`x-evil\x1b[5m`, `v\x1b]0;hdr\x07`], ["content-type", "text/plain"]],
    requestBody: { ...body, text: `line1\x1b[2J\r\nline2\u009b1A\u202e`, size: 30 },
    responseHeaders: [["content-type", "application/json"]],
    responseBody: { ...body, text: JSON.stringify({ name: `x\u009b2J\u202e` }), size: 30 },
    sseEvents: null,
    kind: "mcp_post",
    facts: {
      origin: `https://o${hostile}`,
      redirectUris: [`https://cb/\x1b]0;r\x07`],
      oauthError: `invalid\x1b[31m`,
      mcp: { methods: [`initialize\x1b[2J`], protocolVersionRequested: `2025\u009b`, clientInfo: { name: NAME } },
    } as ClassifiedExchange["facts"],
    ...fields,
  };
}

const handshake: Handshake = {
  id: 7,
  clientFamily: "other",
  clientName: NAME,
  era: "legacy",
  eraFallback: false,
  registration: "none",
  startedAt: 1_700_000_000_000,
  endedAt: 1_700_000_000_100,
  steps: [{ step: "initialize", status: "failed", at: 1_700_000_000_001, exchangeIds: [1, 2] }] as Handshake["steps"],
  outcome: "failed",
  failedStep: "initialize",
  exchangeIds: [1, 2],
  diagnoses: [
    {
      code: "waf_block",
      severity: "error",
      summary: `The server answered ${NAME} with ${hostile}`,
      evidence: [1],
      fix: `Allow \x1b]52;c;Q0FOQVJZ\x07 through`,
      reference: `https://ref/\x1b[2J`,
    },
  ] as Handshake["diagnoses"],
};
const detail: HandshakeDetail = { handshake, exchanges: [exchange(1), exchange(2, { status: null })] };
const summary = { ...handshake, firstCode: null, firstSummary: `quote ${NAME}`, exchangeCount: 2 } as unknown as HandshakeSummary;
const replay: ReplayResult = {
  handshakeId: 7,
  target: `http://127.0.0.1:1/\x1b]0;t\x07`,
  verdict: "still_fails",
  failedStep: "initialize",
  code: null,
  summary: `server said ${NAME}`,
  steps: [{ step: "initialize", original: { status: "failed", exchangeIds: [1] }, rerun: { status: "failed", httpStatus: 500, detail: `answer: ${NAME}${hostile}` }, same: true }],
  era: "legacy",
  eraFallback: false,
  diagnosis: { code: "probe_unexpected_status", summary: `said ${NAME}`, fix: `fix ${NAME}`, reference: `see ${NAME}` },
  evidence: [{ exchangeId: 1, request: `POST 127.0.0.1:1/mcp${NAME}`, status: 500, body: `body ${NAME}${hostile}` }],
  warnings: [{ code: "slow_answer", summary: `warned ${NAME}` }],
  dialled: [`http://127.0.0.1:1${NAME}`],
};

function expectInert(text: string, where: string): void {
  const found = ACTIVE.exec(text);
  expect(found, `${where}: ${JSON.stringify(found?.[0])} in ${JSON.stringify(text.slice(Math.max(0, (found?.index ?? 0) - 30), (found?.index ?? 0) + 30))}`).toBeNull();
}

const text = (l: Line) => l.map((s) => s.text).join("");

describe("the CLI text views", () => {
  const plain = { width: 100, paint: painter(false), now: 1_700_000_000_000 };

  it("show: the client name, paths, facts and diagnoses are visible escapes", () => {
    const out = formatHandshake(detail, plain);
    expectInert(out.replace(/\n/g, " "), "show");
    expect(out).toContain("other (\\x1b]0;pwned\\x07\\x1b]52;c;Q0FOQVJZ\\x07evil)");
    expect(out).toContain("\\x9b31m\\u202e");
  });

  it("show with colour: only its own SGR sequences reach the terminal", () => {
    const out = formatHandshake(detail, { ...plain, paint: painter(true) });
    expectInert(out.replace(/\x1b\[\d+m/g, "").replace(/\n/g, " "), "show in colour");
    expect(out).toContain("\\x1b]0;pwned");
  });

  it("show: a record that is not plain data (skipped by the deep copy) still cannot act: the last gate", () => {
    const notPlain = Object.assign(Object.create({ fromAClass: true }) as ClassifiedExchange, exchange(5));
    const out = formatHandshake({ handshake, exchanges: [notPlain] }, { ...plain, paint: painter(true) });
    expectInert(out.replace(/\x1b\[\d+m/g, "").replace(/\n/g, " "), "show, not plain data");
    expect(out).toContain("/mcp/\\x1b]0;path\\x07");
  });

  it("list, tail, replay", () => {
    expectInert(formatHandshakeTable([summary], plain).replace(/\n/g, " "), "list");
    for (const message of [
      { type: "exchange", handshakeId: 7, exchange: exchange(3) },
      { type: "handshake", handshake },
    ] as const) {
      const out = formatLiveLine(message, plain);
      expectInert(out, `tail ${message.type}`);
      expect([...out].length).toBeLessThanOrEqual(plain.width);
    }
    const replayed = formatReplay(replay, plain);
    expectInert(replayed.replace(/\n/g, " "), "replay");
    expect(replayed).toContain("answer: \\x1b]0;pwned");
    for (const where of ["fix ", "see ", "body ", "warned ", "dialled: "]) expect(replayed, where).toMatch(new RegExp(`${where}.*\\\\x1b`));
  });

  it("keeps columns: escaping happens before truncation, so the width holds", () => {
    const line = formatLiveLine({ type: "exchange", handshakeId: null, exchange: exchange(4, { path: "/" + "\x1b".repeat(200) }) }, { ...plain, width: 60 });
    expect([...line].length).toBe(60);
    expect(line.endsWith("…")).toBe(true);
    expect(truncate(terminalSafe("\x1b".repeat(10)), 9)).toBe("\\x1b\\x1b…");
    for (const row of formatHandshake(detail, plain).split("\n")) expect([...row].length, row).toBeLessThanOrEqual(plain.width + 10);
  });
});

describe("the TUI", () => {
  it("the line helpers escape before they measure", () => {
    expect(fit("\x1b[2J", 8)).toBe("\\x1b[2J ");
    expect(fit("\x1b[2J", 8)).toHaveLength(8);
    expect(clip(NAME, 6)).toBe("\\x1b]…");
    expect(seg(NAME).text).toBe(terminalSafe(NAME));
    expect(text(line("\x07", seg("\u009b")))).toBe("\\x07\\x9b");
    for (const l of wrapText(`${NAME} ${hostile}\nsecond\x1b[A`, 12)) {
      expectInert(l, "wrapText");
      expect(l.length).toBeLessThanOrEqual(12);
    }
  });

  it("handshake, exchange and body lines hold no control", () => {
    const all: Line[] = [
      ...headerLines(detail),
      ...buildBody(detail, 80).lines,
      exchangeRow(exchange(1), 0),
      ...requestLines(exchange(1)),
      ...responseLines(exchange(1)),
      ...responseLines(exchange(2, { responseHeaders: null })),
      ...bodyLines({ text: `a\x1b]0;x\x07\r\nb\tc`, encoding: "utf8", size: 10, truncated: false, decoded: null }, "text/plain"),
    ];
    for (const l of all) expectInert(text(l), "TUI line");
    expect(text(headerLines(detail)[0]!)).toContain("(\\x1b]0;pwned\\x07");
  });

  it("the screen writes Ink's colour codes and nothing else that a terminal obeys", () => {
    expect(terminalSafeStyled(`\x1b[31mred\x1b[39m ${NAME}\x1b[1;1H`)).toBe(`\x1b[31mred\x1b[39m ${terminalSafe(NAME)}\\x1b[1;1H`);
    const written: string[] = [];
    const out = Object.assign(new EventEmitter(), { columns: 80, rows: 24, write: (s: string) => (written.push(s), true) });
    const screen = new LineDiffScreen(out as unknown as NodeJS.WriteStream);
    screen.write(`\x1b[1mtitle\x1b[22m\n${NAME}\u009b2J\u202e\n`);
    screen.close();
    const all = written.join("");
    expect(all).toContain("\x1b[1mtitle\x1b[22m");
    expect(all).toContain("\\x1b]0;pwned\\x07");
    expect(all).not.toContain("\x1b]");
    expect(all).not.toMatch(/[\x07\u009b\u202e]/);
  });

  it("LineView prints a segment built by hand as visible escapes", () => {
    const view = render(createElement(LineView, { line: [{ text: NAME }, { text: hostile }] }));
    try {
      const frame = view.lastFrame() ?? "";
      expect(frame).toContain("\\x1b]0;pwned\\x07");
      expect(frame).not.toContain("\x1b]");
      expect(frame).not.toMatch(/[\u009b\u202e\x07]/);
    } finally {
      view.unmount();
    }
  });
});
