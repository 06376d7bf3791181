// The real inspector binary in a real terminal: `node dist/inspector/cli.js --db <db>` in a
// detached tmux session of 80×24, driven with send-keys and read with capture-pane, over a
// recording of real traffic (a ChatGPT connector failing at authorize, claude.ai connecting)
// while the proxy keeps running, so new traffic shows up through its /live feed.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InspectorData } from "../../inspector/data.js";
import { KEYMAP } from "../../inspector/ui/keymap.js";
import { startMisbehavingServer, type MisbehavingServer } from "../fixtures/misbehaving-server.js";
import { runHostedConnector } from "../helpers/hosted-connector.js";
import { ROOT, startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";

const INSPECTOR = path.join(ROOT, "dist/inspector/cli.js");
const haveTmux = spawnSync("tmux", ["-V"]).status === 0;
if (!haveTmux && process.env.CI !== "true") {
  console.warn("inspector tmux test skipped: tmux is missing (apt-get install tmux); CI=true makes this a failure");
}

// A private tmux server (-L): the test never touches the user's sessions.
const SOCKET = `mcp-lens-test-${process.pid}`;
const SESSION = "inspector";
const tmux = (...args: string[]) => execFileSync("tmux", ["-L", SOCKET, ...args], { encoding: "utf8" });
const screen = (escapes = false) => tmux("capture-pane", "-p", ...(escapes ? ["-e"] : []), "-t", SESSION);
const keys = (...k: string[]) => tmux("send-keys", "-t", SESSION, ...k);

async function waitScreen(test: (text: string) => boolean, what: string, timeoutMs = 5000): Promise<string> {
  try {
    return await waitFor(() => {
      const text = screen();
      return test(text) && text;
    }, what, timeoutMs);
  } catch (error) {
    throw new Error(`${(error as Error).message}; the screen was:\n${screen()}`);
  }
}

/** Colour SGR parameters (30–38, 40–48, 90–107) in `capture-pane -e` output. */
function colours(text: string): string[] {
  return [...text.matchAll(/\x1b\[([0-9;]*)m/g)].flatMap((m) => m[1]!.split(";")).filter((p) => /^(3[0-8]|4[0-8]|9[0-7]|10[0-7])$/.test(p));
}

describe.runIf(haveTmux || process.env.CI === "true")("the inspector in tmux at 80×24", () => {
  let server: MisbehavingServer;
  let lens: RunningLens;
  const tmp = tempDir("mcp-lens-inspector-tmux-");
  let failed: { id: number; code: string; summary: string };
  const statusFile = path.join(tmp.dir, "exit-status");

  beforeAll(async () => {
    server = await startMisbehavingServer("redirect_uri_rejected");
    lens = await startLensProcess({ upstream: server.url, dbPath: `${tmp.dir}/lens.db`, args: ["--flush-interval", "20"] });
    await runHostedConnector(`${lens.url}/mcp`, { family: "chatgpt" });
    await runHostedConnector(`${lens.url}/mcp`, { family: "claude.ai" });
    const data = new InspectorData(lens.dbPath);
    try {
      const row = await waitFor(() => data.listHandshakes({ failedOnly: true })[0], "the failed handshake", 25_000);
      failed = { id: row.id, code: row.firstCode!, summary: row.firstSummary! };
    } finally {
      data.close();
    }
    // remain-on-exit keeps the pane (and what is left on it) after the inspector exits.
    tmux("new-session", "-d", "-s", SESSION, "-x", "80", "-y", "24");
    tmux("set-option", "-t", SESSION, "remain-on-exit", "on");
    // The shell writes the exit status where the test can read it (tmux's pane_dead_status is racy).
    tmux("respawn-pane", "-k", "-t", SESSION, `NO_COLOR=1 ${process.execPath} ${INSPECTOR} --db ${lens.dbPath}; echo $? > ${statusFile}`);
  }, 60_000);

  afterAll(async () => {
    spawnSync("tmux", ["-L", SOCKET, "kill-session", "-t", SESSION]);
    spawnSync("tmux", ["-L", SOCKET, "kill-server"]);
    await lens?.stop();
    await server?.close();
    tmp.cleanup();
  });

  it("lists the failed handshake with its diagnosis code, following the proxy live", async () => {
    const text = await waitScreen((t) => t.includes("FIRST DIAGNOSIS") && t.includes("● live"), "the list, following /live", 10_000);
    if (process.env.INSPECTOR_SCREENSHOTS) console.log(`list:\n${text}`);
    expect(text).toMatch(new RegExp(`✗ .*chatgpt +FAILED +authorize +${failed.code}`));
    expect(text).toMatch(/✓ .*claude\.ai +succeeded/);
    expect(text).toContain("2 handshakes, 1 failed");
    for (const line of text.split("\n")) expect([...line].length).toBeLessThanOrEqual(80);
    expect(colours(screen(true)), "NO_COLOR: no colours").toEqual([]);

    // New traffic appears in place, without restarting the inspector.
    await runHostedConnector(`${lens.url}/mcp`, { family: "chatgpt" });
    await waitScreen((t) => t.includes("3 handshakes"), "the new handshake", 10_000);
  });

  it("opens the failed handshake and shows its diagnosis summary", async () => {
    // The newest handshake (the second ChatGPT one) is on top; the first failure is the last row.
    keys("G", "Enter");
    const text = await waitScreen((t) => t.includes(`Handshake #${failed.id}`), "the handshake view");
    if (process.env.INSPECTOR_SCREENSHOTS) console.log(`handshake:\n${text}`);
    expect(text).toContain(`FAILED at authorize: ${failed.code}`);
    expect(text.replace(/\s+/g, " ")).toContain(failed.summary.split(/\s+/).slice(0, 4).join(" "));
    expect(text).toMatch(/evidence ▸ #\d+/);
    expect(text).toMatch(/fix: \S/);
  });

  it("shows the help with every key, and goes back with q", async () => {
    keys("?");
    const text = await waitScreen((t) => t.includes("Keys") && t.includes("Everywhere"), "the help");
    for (const b of KEYMAP) expect(text, b.action).toContain(b.description);
    keys("q");
    await waitScreen((t) => t.includes(`Handshake #${failed.id}`), "back to the handshake");
  });

  it("opens an exchange and its curl, goes back, and moves with the arrows", async () => {
    keys("Enter");
    await waitScreen((t) => /Exchange #\d+ · /.test(t) && t.includes("REQUEST"), "the exchange view");
    keys("c");
    await waitScreen((t) => t.includes("COPY AS CURL") && /curl '/.test(t), "the curl command");
    keys("q", "q");
    // Back on the list, still on the handshake it opened (the oldest, last row); ↑ moves up one.
    await waitScreen((t) => t.includes("FIRST DIAGNOSIS") && /› ✗ .*chatgpt/.test(t), "back to the list");
    keys("Up");
    await waitScreen((t) => /› ✓ .*claude\.ai/.test(t), "the selection moved up");
    keys("Down");
    await waitScreen((t) => /› ✗ .*chatgpt/.test(t), "the selection moved down");
  });

  it("q quits with status 0, leaving the terminal as it was", async () => {
    keys("q");
    const status = await waitFor(() => existsSync(statusFile) && readFileSync(statusFile, "utf8").trim(), "the inspector to exit").catch((error: Error) => {
      throw new Error(`${error.message}; the screen was:\n${screen()}`);
    });
    expect(status).toBe("0");
    expect(screen()).not.toContain("FIRST DIAGNOSIS"); // the alternate screen is gone
  });
});
