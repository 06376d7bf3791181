// The interactive inspector's screens, rendered with ink-testing-library at 80×24 over a real
// recording: a misbehaving server that only accepts the claude.ai callback, the real mcp-lens in
// front of it, a ChatGPT connector that fails at authorize, then a claude.ai one that connects.
import { EventEmitter } from "node:events";
import { render } from "ink-testing-library";
import { createElement } from "react";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Handshake } from "../../analysis/handshake.js";
import { InspectorData } from "../../inspector/data.js";
import { eraLabel, eraText, registrationText } from "../../inspector/format.js";
import { App, type AppProps } from "../../inspector/ui/app.js";
import { ExchangeView } from "../../inspector/ui/exchange.js";
import { HandshakeView } from "../../inspector/ui/handshake.js";
import { KeyRouter } from "../../inspector/ui/input.js";
import { KEYMAP, keyLabel } from "../../inspector/ui/keymap.js";
import { toneProps } from "../../inspector/ui/lines.js";
import { LineDiffScreen } from "../../inspector/ui/screen.js";
import { startMisbehavingServer, type MisbehavingServer } from "../fixtures/misbehaving-server.js";
import { runHostedConnector } from "../helpers/hosted-connector.js";
import { startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request } from "../helpers/upstream.js";
import { openDatabase } from "../../store/db.js";
import { handshakeToRow, UPSERT_HANDSHAKE_SQL } from "../../store/schema.js";

const KEYS = { enter: "\r", esc: "\u001B", left: "\u001B[D", right: "\u001B[C", down: "\u001B[B", up: "\u001B[A", backspace: "\u007F", space: " ", tab: "\t" };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let server: MisbehavingServer;
let lens: RunningLens;
let data: InspectorData;
const tmp = tempDir("mcp-lens-inspector-ui-");

beforeAll(async () => {
  server = await startMisbehavingServer("redirect_uri_rejected");
  lens = await startLensProcess({ upstream: server.url, dbPath: `${tmp.dir}/lens.db`, args: ["--flush-interval", "20"] });
  const failed = await runHostedConnector(`${lens.url}/mcp`, { family: "chatgpt" });
  expect(failed.failedAt).toBe("authorize");
  await sleep(20); // the two handshakes start in distinct milliseconds
  const ok = await runHostedConnector(`${lens.url}/mcp`, { family: "claude.ai" });
  expect(ok.failedAt).toBeNull();
  // A body above --max-body (64k): recorded truncated.
  await request(`${lens.url}/upload`, { method: "POST", headers: { "content-type": "text/plain", "user-agent": "curl/8.5.0" }, body: "x".repeat(70_000) });
  data = new InspectorData(lens.dbPath);
  // Both handshakes recorded and settled (a failure is final once the client has gone quiet).
  await waitFor(
    () => {
      const rows = data.listHandshakes({});
      const upload = data.exchangeEntries([data.maxExchangeId()])[0]?.exchange.path === "/upload";
      return upload && rows.length === 2 && rows.every((r) => r.outcome !== "in_progress") && rows.some((r) => r.outcome === "failed");
    },
    "both handshakes settled",
    25_000,
  );
}, 60_000);

afterAll(async () => {
  data?.close();
  await lens?.stop();
  await server?.close();
  tmp.cleanup();
});

const mounted: Array<{ unmount(): void }> = [];
afterEach(() => {
  for (const m of mounted.splice(0)) m.unmount();
});

function show(props: Partial<AppProps> = {}) {
  const app = render(createElement(App, { data, dbPath: lens.dbPath, width: 80, height: 24, follow: false, ...props }));
  mounted.push(app);
  const frame = () => app.lastFrame() ?? "";
  /** Types keys one at a time, letting Ink parse each (a lone Esc waits a tick). */
  const press = async (...keys: string[]) => {
    for (const k of keys) {
      app.stdin.write(k);
      await sleep(40);
    }
  };
  /** Waits until `text` is on screen (keys are handled one render at a time). */
  const shows = (text: string | RegExp) => (typeof text === "string" ? frame().includes(text) : text.test(frame()));
  const see = async (text: string | RegExp) => {
    await waitFor(() => shows(text), `${text} on screen`, 8000).catch(() => expect(frame()).toMatch(text));
  };
  /** Presses `key` until `text` is on screen (at most `max` times). */
  const scrollTo = async (text: string | RegExp, key = "j", max = 80) => {
    for (let i = 0; i < max && !shows(text); i++) await press(key);
    await see(text);
  };
  return { ...app, frame, press, see, scrollTo, lines: () => frame().split("\n") };
}

const rowOf = (lines: string[], text: string) => lines.findIndex((l) => l.includes(text));
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

describe("handshake list", () => {
  it("lists newest first, the failed one marked ✗ with its era, step and first diagnosis", () => {
    const failed = data.listHandshakes({ failedOnly: true })[0]!;
    const healthy = data.listHandshakes({ client: "claude.ai" })[0]!;
    expect(failed.clientFamily).toBe("chatgpt");
    const { lines } = show();
    const screen = lines();
    expect(screen.find((l) => l.includes("FIRST DIAGNOSIS"))).toMatch(/^ +TIME +ERA +CLIENT +OUTCOME +FAILED STEP +FIRST DIAGNOSIS$/);
    const chatgpt = rowOf(screen, "chatgpt");
    const claude = rowOf(screen, "claude.ai");
    expect(claude).toBeGreaterThan(0);
    expect(chatgpt).toBeGreaterThan(claude); // claude.ai connected last: it is on top
    // At 80 columns the whole code still shows (the summary after it is cut).
    const era = (h: typeof failed) => escape(eraLabel(h.era, h.eraFallback));
    expect(screen[chatgpt]).toMatch(new RegExp(`✗ .* ${era(failed)} +chatgpt\\s+FAILED\\s+authorize\\s+${failed.firstCode}`));
    expect(screen[claude]).toMatch(new RegExp(`✓ .* ${era(healthy)} +claude\\.ai\\s+succeeded`));
    expect(screen[claude]).toContain("›"); // the newest is selected
    expect(screen.join("\n")).toContain("2 handshakes, 1 failed");
  });

  it("fits 80×24: no line wider than 80, exactly 24 lines", () => {
    const { lines } = show();
    expect(lines().length).toBe(24);
    for (const l of lines()) expect(l.length).toBeLessThanOrEqual(80);
  });

  it("toggles failed only, cycles the client, and filters by text with /", async () => {
    const { frame, press, see } = show();
    await press("f");
    await see("outcome: failed");
    await see("chatgpt");
    expect(frame()).not.toContain("claude.ai ");
    await press("f");
    await see("claude.ai");

    await press("c");
    await see("client: claude.ai");
    expect(frame()).not.toMatch(/chatgpt\s+FAILED/);
    await press("c");
    await see("client: chatgpt");
    await see(/chatgpt\s+FAILED/);
    await press("x");
    await see("client: all");

    await press("/", ..."redirect_uri_rej");
    await see("redirect_uri_rej▏");
    await see(/chatgpt\s+FAILED/);
    expect(frame()).not.toMatch(/claude\.ai\s+succeeded/);
    await press(KEYS.backspace, KEYS.enter);
    await see("text: redirect_uri_re");
    // Esc in the prompt puts the text back as it was.
    await press("/", "zzz", KEYS.esc);
    await see("text: redirect_uri_re");
    await press("x", "o");
    await see("outcome: failed");
    await press("o");
    await see("outcome: succeeded");
    expect(frame()).not.toMatch(/chatgpt\s+FAILED/);
  });
});

describe("handshake view", () => {
  it("shows the diagnosis with summary, evidence, fix and reference, then the timeline", async () => {
    const { frame, press, see, scrollTo } = show();
    const failed = data.listHandshakes({ failedOnly: true })[0]!;
    const detail = data.getHandshake(failed.id)!;
    const diagnosis = detail.handshake.diagnoses[0]!;
    expect(detail.handshake.diagnoses.map((d) => d.code)).toContain("redirect_uri_rejected");
    await press("j", KEYS.enter);
    const screen = frame();
    expect(screen).toContain(`Handshake #${failed.id}`);
    expect(screen).toContain(`✗ FAILED at authorize: ${diagnosis.code}`);
    expect(screen).toContain(`era ${eraText(detail.handshake.era, detail.handshake.eraFallback)} · client id ${registrationText(detail.handshake.registration)}`);
    expect(screen).toContain(diagnosis.summary.slice(0, 40));
    expect(screen).toContain(`evidence ▸ #${diagnosis.evidence[0]}`);
    expect(screen).toMatch(/fix: \S/);
    expect(screen).toMatch(/ref: \S/);
    // The evidence row is selected: Enter opens that exchange.
    expect(screen).toMatch(new RegExp(`› +evidence ▸ #${diagnosis.evidence[0]}`));
    // Below the diagnoses, the timeline: every step, every exchange on its row.
    await scrollTo("TIMELINE");
    for (const step of detail.handshake.steps) await scrollTo(new RegExp(`${step.status === "ok" ? "✓" : "✗"} ${step.step} +\\+\\d+m?s`));
    const last = detail.exchanges.at(-1)!;
    await see(new RegExp(`› +#${last.id} +\\+\\d+m?s +${last.status} +${last.method} ${last.path}.*${last.kind}`));
  });

  it("e jumps to the evidence exchange in the timeline; q goes back to the list", async () => {
    const { frame, press, see } = show();
    await press("j", KEYS.enter, "e");
    const evidence = data.getHandshake(data.listHandshakes({ failedOnly: true })[0]!.id)!.handshake.diagnoses[0]!.evidence[0]!;
    const e = data.getExchange(evidence)!;
    await see(new RegExp(`› +#${evidence} .*${e.status} +${e.method} ${e.path}.*${e.kind}`));
    await press("q");
    await see("FIRST DIAGNOSIS");
    await see(/› ✗ .*chatgpt/); // the selection was kept
  });
});

describe("eras and registration kinds", () => {
  // Rows written directly: every era, a fallback and every registration kind, whatever the
  // analyser makes of real traffic; long client families and codes, to hold the 80 columns.
  const eras = tempDir("mcp-lens-inspector-ui-eras-");
  const dbPath = `${eras.dir}/lens.db`;
  let own: InspectorData;
  const now = Date.now();
  const rows: Array<Partial<Handshake> & { id: number }> = [
    { id: 1, clientFamily: "claude.ai", era: "modern", registration: "cimd" },
    { id: 2, clientFamily: "typescript-sdk", era: "legacy", eraFallback: true, registration: "dcr" },
    { id: 3, clientFamily: "claude-desktop", era: "legacy", registration: "pre_registered", outcome: "failed", failedStep: "registration" },
    { id: 4, clientFamily: "chatgpt", era: "unknown", registration: "none", outcome: "failed", failedStep: "protected_resource_metadata" },
  ];

  beforeAll(() => {
    const db = openDatabase(dbPath);
    const upsert = db.prepare(UPSERT_HANDSHAKE_SQL);
    for (const r of rows) {
      const failed = r.outcome === "failed";
      upsert.run(
        handshakeToRow({
          clientName: null,
          era: "unknown",
          eraFallback: false,
          registration: "none",
          startedAt: now - 60_000 + r.id * 1_000,
          endedAt: now - 59_000 + r.id * 1_000,
          steps: [],
          outcome: "succeeded",
          failedStep: null,
          exchangeIds: [],
          diagnoses: failed
            ? [{ code: "authorization_server_metadata_missing", severity: "error", summary: "No authorization server metadata at any well-known URL.", evidence: [], fix: "Serve it.", reference: "RFC 8414 §3.1" }]
            : [],
          clientFamily: "other",
          ...r,
        }),
      );
    }
    db.close();
    own = new InspectorData(dbPath);
  });

  afterAll(() => {
    own?.close();
    eras.cleanup();
  });

  it("the list shows each era, legacy↩ for a fallback, within 80 columns", async () => {
    const app = render(createElement(App, { data: own, dbPath, width: 80, height: 24, follow: false }));
    mounted.push(app);
    await sleep(40);
    const screen = (app.lastFrame() ?? "").split("\n");
    expect(screen).toHaveLength(24);
    for (const l of screen) expect(l.length).toBeLessThanOrEqual(80);
    expect(screen[rowOf(screen, "claude.ai")]).toMatch(/✓ .* modern +claude\.ai +succeeded/);
    expect(screen[rowOf(screen, "typescript")]).toMatch(/✓ .* legacy↩ +typescript… +succeeded/);
    expect(screen[rowOf(screen, "claude-des")]).toMatch(/✗ .* legacy +claude-des… +FAILED +registrati… +authorization_server_…/);
    expect(screen[rowOf(screen, "chatgpt")]).toMatch(/✗ .* \? +chatgpt +FAILED +prm +authorization_serve/);
  });

  it("the handshake view shows the era, the fallback and how the client got its client id", async () => {
    const expected: Record<number, string> = {
      1: "era modern (MCP 2026-07-28) · client id CIMD (metadata document)",
      2: "era legacy↩ (fell back from modern) · client id DCR (dynamic registration)",
      3: "era legacy · client id pre-registered",
      4: "era unknown (no MCP request yet) · client id none",
    };
    for (const [id, text] of Object.entries(expected)) {
      const app = render(createElement(KeyRouter, { fallback: () => {} }, createElement(HandshakeView, { data: own, id: Number(id), active: true, width: 80, height: 24, tick: 0, open: () => {} })));
      mounted.push(app);
      await sleep(20);
      const screen = (app.lastFrame() ?? "").split("\n");
      expect(screen[2], `handshake #${id}`).toBe(text);
      expect(screen.length).toBeLessThanOrEqual(24);
      app.unmount();
    }
  });
});

describe("exchange view", () => {
  it("shows the request and response, query pairs, the rejected redirect URI and copy as curl", async () => {
    const { frame, press, see, scrollTo } = show();
    // G: the last row of the timeline, the rejected authorize.
    await press("j", KEYS.enter, "G", KEYS.enter);
    const screen = frame();
    expect(screen).toMatch(/Exchange #\d+ · authorize · handshake #\d+/);
    expect(screen).toContain("REQUEST GET /authorize");
    expect(screen).toContain("redirect_uri = https://chatgpt.com/connector_platform_oauth_redirect");
    expect(screen).toMatch(/GET \/authorize\?… → 400/);
    await scrollTo("RESPONSE 400");
    await scrollTo('"error": "invalid_request"'); // JSON pretty-printed
    await press("c");
    await see("COPY AS CURL");
    await see(/curl '(http|https):\/\/127\.0\.0\.1:\d+\/authorize\?/);
    await press("c", "q", "q");
    await see("FIRST DIAGNOSIS");
  });

  it("states truncation up front and at the end of the body", async () => {
    const upload = data.maxExchangeId();
    const app = render(createElement(KeyRouter, { fallback: () => {} }, createElement(ExchangeView, { data, id: upload, active: true, width: 80, height: 24, tick: 0, open: () => {} })));
    mounted.push(app);
    await sleep(20);
    expect(app.lastFrame()).toContain("REQUEST POST /upload");
    expect(app.lastFrame()).toMatch(/body: 70000 bytes, text\/plain\n +⋯ truncated at 65536 of 70000 bytes/);
    app.stdin.write("G");
    await sleep(40);
    expect(app.lastFrame()).toMatch(/⋯ truncated at 65536 of 70000 bytes\n\s*\nRESPONSE 404/);
  });

  it("marks redacted secrets", async () => {
    const detail = data.getHandshake(data.listHandshakes({ client: "claude.ai" })[0]!.id)!;
    const token = detail.exchanges.find((e) => e.kind === "token" && e.status === 200)!;
    const row = detail.exchanges.indexOf(token);
    const { frame, press, see, scrollTo } = show();
    await press(KEYS.enter, ...Array.from({ length: row }, () => "j"));
    // The cursor starts on the first exchange row (no diagnosis evidence to start on).
    await see(new RegExp(`› +#${token.id} `));
    await press(KEYS.enter);
    await scrollTo(/"access_token": "\[redacted:[0-9a-f]{8}\]"/);
  });
});

describe("help", () => {
  it("lists every keymap entry on one 80×24 screen", async () => {
    const { frame, press, see } = show();
    await press("?");
    const screen = frame();
    expect(screen.split("\n").length).toBeLessThanOrEqual(24);
    for (const b of KEYMAP) {
      expect(screen, `${b.key} (${b.action})`).toContain(keyLabel(b.key));
      expect(screen, `${b.key} (${b.action})`).toContain(b.description);
    }
    await press("?");
    await see("FIRST DIAGNOSIS");
    await press("?", KEYS.esc);
    await see("FIRST DIAGNOSIS");
  });
});

describe("replay", () => {
  it("plays the recorded handshake back exchange by exchange: what was sent beside what came back", async () => {
    const { frame, press, see } = show();
    const failed = data.getHandshake(data.listHandshakes({ failedOnly: true })[0]!.id)!;
    const n = failed.exchanges.length;
    await press("j", "r");
    await see(`Replay #${failed.handshake.id}`);
    await see(`1/${n} ✓ probe`);
    await see(/CLIENT SENT +│ IT GOT/);
    await see(`REQUEST ${failed.exchanges[0]!.method} ${failed.exchanges[0]!.path}`);
    await see(`RESPONSE ${failed.exchanges[0]!.status}`);
    await press(KEYS.right, KEYS.right);
    await see(`3/${n}`);
    await press(KEYS.left);
    await see(`2/${n}`);
    await press(...Array.from({ length: n }, () => "l"));
    await see(`${n}/${n} ✗ authorize`);
    await see("RESPONSE 400");
    // Space plays from the start when at the end, one exchange every 1.2 s.
    await press(KEYS.space);
    await see("▶ playing");
    await see(`1/${n}`);
    await see(`2/${n}`);
    await press(KEYS.space);
    await see("❚❚ paused");
  });

  it("re-runs the handshake against the proxy and shows each step beside the original, with the verdict", async () => {
    const { frame, press, see } = show();
    await press("j", "r");
    await see("[playback]");
    // Ink attaches a new view's key handler in an effect, after the frame shows: under load a key
    // pressed at once can reach no one. Press again only after a generous wait, so a late prompt
    // never gets a second "r" typed into its URL.
    const prompt = `Target URL: ${lens.url}`;
    for (let tries = 0; tries < 5 && !frame().includes(prompt); tries++) {
      await press("r");
      await waitFor(() => frame().includes(prompt), "the re-run prompt", 1_500).catch(() => undefined);
    }
    await see(prompt);
    await press(KEYS.enter, KEYS.enter);
    await waitFor(() => frame().includes("still fails") || frame().includes("now passes"), "the re-run verdict", 20_000);
    const screen = frame();
    expect(screen).toContain(`RE-RUN against ${lens.url}`);
    // The server still rejects the ChatGPT callback: the re-run's authorize request (as far as
    // the sign-in page, as doctor goes) is refused again, with the analyser's code and fix.
    expect(screen).toMatch(/✗ still fails at step authorize: redirect_uri_rejected/);
    expect(screen).toMatch(/fix: /);
    expect(screen).toMatch(/STEP +ORIGINAL +RE-RUN +SAME\?/);
    expect(screen).toMatch(/probe +✓ ok #\d+ +✓ ok 401 +same/);
    expect(screen).toMatch(/authorize +✗ failed #\d+ +✗ failed 400.* same/);
    await press(KEYS.tab);
    await see("CLIENT SENT");
  }, 30_000);
});

describe("NO_COLOR", () => {
  it("drops every colour but keeps the markers", async () => {
    const saved = process.env.NO_COLOR;
    process.env.NO_COLOR = "1";
    try {
      expect(toneProps("bad").color).toBeUndefined();
      expect(toneProps("redacted").color).toBeUndefined();
      expect(toneProps("redacted").underline).toBe(true);
      const { frame, see } = show();
      await see(/✗ .*chatgpt/);
      expect(frame()).not.toMatch(/\x1b\[3\dm/);
      delete process.env.NO_COLOR;
      expect(toneProps("bad").color).toBe("red");
    } finally {
      if (saved === undefined) delete process.env.NO_COLOR;
      else process.env.NO_COLOR = saved;
    }
  });
});

describe("following new traffic", () => {
  const count = (text: string) => Number(/(\d+) handshakes?,/.exec(text)?.[1] ?? -1);

  it("through the proxy's /live feed, updating the list in place", async () => {
    const { frame } = show({ follow: true });
    await waitFor(() => frame().includes("● live"), "the live feed", 5000);
    const before = count(frame());
    await runHostedConnector(`${lens.url}/mcp`, { family: "chatgpt" });
    await waitFor(() => count(frame()) === before + 1, "the new handshake", 5000);
    expect(frame().split("\n").length).toBe(24);
  });

  it("by polling the database when the feed cannot be reached", async () => {
    const { frame } = show({ follow: true, liveUrl: "ws://127.0.0.1:9/live", pollMs: 100 });
    await waitFor(() => frame().includes("○ polling the database"), "polling", 5000);
    const before = count(frame());
    await runHostedConnector(`${lens.url}/mcp`, { family: "claude.ai" });
    await waitFor(() => count(frame()) === before + 1, "the new handshake", 5000);
  });

  it("rewrites only the lines that changed, at their row, never clearing the screen", () => {
    const writes: string[] = [];
    const out = Object.assign(new EventEmitter(), { columns: 80, rows: 24, write: (s: string) => (writes.push(s), true) });
    const screen = new LineDiffScreen(out as unknown as NodeJS.WriteStream);
    screen.write("title\nrow 1\nrow 2\nfooter");
    screen.write("title\nrow 1\nrow 2 changed\nfooter");
    screen.write("title\nrow 1\nrow 2 changed\nfooter");
    expect(writes).toHaveLength(2);
    expect(writes[1]).toContain("\x1b[3;1Hrow 2 changed");
    expect(writes[1]).not.toMatch(/title|row 1|footer|\x1b\[2J|\x1b\[\d*J/);
    screen.close();
  });
});
