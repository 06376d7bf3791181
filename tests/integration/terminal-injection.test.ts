// Terminal injection through recorded traffic, against the real binary: a client whose
// clientInfo.name holds OSC 0 (retitle the window), OSC 52 (write the clipboard), CSI (clear the
// screen, colour), a one-byte C1 CSI and a bidi override, and a malformed request whose path holds
// ESC and BEL. `inspector show`, `list`, `tail` and the TUI (under tmux, its raw output captured
// with pipe-pane) must print them as visible escapes, never as the bytes a terminal acts on.
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InspectorData } from "../../inspector/data.js";
import { CANARY_MARK } from "../helpers/artifacts.js";
import { proxyNodeFlags } from "../helpers/node-flags.js";
import { CLI, ROOT, runCli, startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

const INSPECTOR = path.join(ROOT, "dist/inspector/cli.js");
/** OSC 52's payload is base64 of a canary: what the attacker would put on the clipboard. */
const CLIPBOARD = Buffer.from(CANARY_MARK).toString("base64");
const NAME = `\x1b]0;pwned\x07\x1b]52;c;${CLIPBOARD}\x07\x1b[2J\x1b[31m\u009b1Aevil\u202eman`;
/** ESC and BEL survive the proxy's request-line reading (\S); Node's parser rejects them: a 400. */
const PATH = "/x\x1b]0;pathpwned\x07\x1b[2Jy";
/** What a terminal would act on, in any output of the inspector outside the TUI. */
const RAW = /[\x1b\x07\u009b\u202e]/;
/** The injected sequences (the TUI writes its own CSI, so these are looked for by content). */
const INJECTED = ["\x1b]0;", "\x1b]52;", "\x1b[2J\x1b[31m", "\u009b1A", "\u202e", "\x07"];

function initialize(name: string): string {
  return JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name, version: "1.0" } } });
}

/** One raw request line that Node's parser rejects, so the proxy records it as malformed. */
function sendMalformed(url: string, rawPath: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    let answer = "";
    socket.setTimeout(5000, () => socket.destroy(new Error("no answer to the malformed request")));
    socket.on("data", (c: Buffer) => (answer += c.toString("latin1")));
    socket.on("error", reject);
    socket.on("close", () => resolve(answer));
    socket.write(Buffer.from(`GET ${rawPath} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`, "latin1"));
  });
}

async function sendHostileTraffic(lens: RunningLens, tag: string): Promise<void> {
  const res = await request(`${lens.url}/mcp`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream", "user-agent": "hostile/1.0\x9b1A" }, // a C1 CSI: JSON logs leave it raw
    body: initialize(`${NAME}${tag}`),
  });
  expect(res.status).toBe(200);
  expect(await sendMalformed(lens.url, `${PATH}${tag}`)).toMatch(/^HTTP\/1\.1 400/);
}

const visibleName = "\\x1b]0;pwned\\x07";

let upstream: TestUpstream;
let lens: RunningLens;
const tmp = tempDir("mcp-lens-terminal-injection-");
let handshakeId: number;

beforeAll(async () => {
  upstream = await startUpstream((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ jsonrpc: "2.0", id: 1, result: { protocolVersion: "2025-06-18", capabilities: {}, serverInfo: { name: "tiny", version: "1" } } }));
  });
  lens = await startLensProcess({ upstream: upstream.url, dbPath: `${tmp.dir}/lens.db`, args: ["--flush-interval", "20", "--log-exchanges"] });
  await sendHostileTraffic(lens, "-first");
  const data = new InspectorData(lens.dbPath);
  try {
    handshakeId = await waitFor(() => data.listHandshakes({}).find((h) => h.clientName?.includes("pwned"))?.id, "the hostile handshake", 10_000);
    await waitFor(() => data.exchangeEntries([data.maxExchangeId()])[0]?.exchange.path.includes("pathpwned"), "the malformed request", 10_000);
  } finally {
    data.close();
  }
}, 30_000);

afterAll(async () => {
  await lens?.stop();
  await upstream?.close();
  tmp.cleanup();
});

function expectNeutralised(output: string, where: string): void {
  const found = RAW.exec(output);
  expect(found, `${where}: raw ${found ? JSON.stringify(found[0]) : ""} at ${found?.index}: ${JSON.stringify(output.slice(Math.max(0, (found?.index ?? 0) - 40), (found?.index ?? 0) + 40))}`).toBeNull();
}

describe("the proxy's own log lines", () => {
  it("carry traffic's strings as visible escapes (JSON leaves C1 and bidi raw)", async () => {
    await waitFor(() => lens.stdout.some((line) => line.includes("pathpwned")), "the malformed request logged", 10_000);
    const logs = lens.stdout.join("\n");
    expectNeutralised(logs, "proxy log");
    expect(logs).toMatch(/"userAgent":"hostile\/1\.0[^"]*\\\\x9b1A"/); // JSON of the visible escape \x9b
  });
});

describe("inspector show and list print hostile traffic as visible escapes", () => {
  it("show ID", async () => {
    const { code, stdout, stderr } = await runCli(["inspector", "show", String(handshakeId), "--db", lens.dbPath]);
    expect(code, stderr).toBe(0);
    expectNeutralised(stdout + stderr, "show");
    expect(stdout).toContain(visibleName);
    expect(stdout).toContain("\\x1b]52;c;");
    expect(stdout).toContain("\\u202e");
    expect(stdout).toContain("\\x9b1A");
  });

  it("list", async () => {
    const { code, stdout, stderr } = await runCli(["inspector", "list", "--db", lens.dbPath, "--text", "pwned"]);
    expect(code, stderr).toBe(0);
    expectNeutralised(stdout + stderr, "list");
    expect(stdout).toContain(`#${handshakeId}`);
  });

  it("show --json and list --json escape what JSON leaves raw (C1, bidi), losslessly", async () => {
    for (const args of [["show", String(handshakeId)], ["list"]]) {
      const { code, stdout, stderr } = await runCli(["inspector", ...args, "--json", "--db", lens.dbPath]);
      expect(code, stderr).toBe(0);
      expectNeutralised(stdout + stderr, args[0]!);
      const parsed = JSON.parse(stdout) as { clientName: string } | Array<{ clientName: string }>;
      const h = Array.isArray(parsed) ? parsed.find((x) => x.clientName?.includes("pwned"))! : parsed;
      expect(h.clientName).toBe(`${NAME}-first`);
    }
  });
});

describe("inspector tail prints live hostile traffic as visible escapes", () => {
  let tail: ChildProcess | undefined;
  afterAll(() => {
    if (tail?.exitCode === null) tail.kill("SIGKILL");
  });

  it("tail, following /live while the traffic arrives", async () => {
    tail = spawn(process.execPath, [...proxyNodeFlags(CLI), CLI, "inspector", "tail", "--db", lens.dbPath], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    tail.stdout!.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    tail.stderr!.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    const closed = new Promise<void>((resolve) => tail!.once("close", () => resolve()));
    // Live through /live (or, should the admin port refuse it, polling): either way tail prints it.
    await waitFor(() => /following ws:|polling/.test(stderr), "tail to start following", 10_000);
    await sendHostileTraffic(lens, "-tail");
    await waitFor(() => stdout.includes("pathpwned"), "the malformed request on tail", 10_000).catch((error: Error) => {
      throw new Error(`${error.message}; tail printed:\n${stdout}\n${stderr}`);
    });
    tail.kill("SIGINT");
    await closed;
    expectNeutralised(stdout + stderr, "tail");
    expect(stdout).toContain("/x\\x1b]0;pathpwned\\x07\\x1b[2Jy-tail");
  }, 20_000);
});

const haveTmux = spawnSync("tmux", ["-V"]).status === 0;

describe.runIf(haveTmux || process.env.CI === "true")("the TUI under tmux writes no injected sequence", () => {
  const SOCKET = `mcp-lens-injection-${process.pid}`;
  const SESSION = "injection";
  const tmux = (...args: string[]) => execFileSync("tmux", ["-L", SOCKET, ...args], { encoding: "utf8" });
  const screen = () => tmux("capture-pane", "-p", "-t", SESSION);
  const rawFile = path.join(tmp.dir, "tui-output.raw");
  const goFile = path.join(tmp.dir, "go");

  afterAll(() => {
    spawnSync("tmux", ["-L", SOCKET, "kill-server"]);
  });

  // The interactive view starts a Node process with Ink under the whole suite's load: its first
  // screen gets 20 s (it took over 10 on a loaded 2-core run), the test 60.
  it("shows the client name as text, and its OSC/CSI never reach the terminal", { timeout: 60_000 }, async () => {
    writeFileSync(rawFile, "");
    // The pane waits for the go file, so pipe-pane captures every byte the inspector writes.
    const command = `while [ ! -e ${goFile} ]; do sleep 0.05; done; exec ${process.execPath} ${INSPECTOR} --db ${lens.dbPath}`;
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "30", command);
    tmux("pipe-pane", "-o", "-t", SESSION, `cat >> ${rawFile}`);
    writeFileSync(goFile, "");
    const waitScreen = (test: (t: string) => boolean, what: string) =>
      waitFor(() => {
        const text = screen();
        return test(text) && text;
      }, what, 20_000).catch((error: Error) => {
        throw new Error(`${error.message}; the screen was:\n${screen()}`);
      });
    await waitScreen((t) => t.includes("FIRST DIAGNOSIS"), "the list");
    // The list quotes the client name (no diagnosis); the newest hostile handshake is on top:
    // open it, its header line shows the client name too.
    const list = await waitScreen((t) => t.includes("pwned"), "the client name in the list");
    tmux("send-keys", "-t", SESSION, "Enter");
    const view = await waitScreen((t) => /Handshake #\d+ · other/.test(t), "the handshake view");
    const title = tmux("display-message", "-p", "-t", SESSION, "#{pane_title}");
    tmux("send-keys", "-t", SESSION, "q", "q");
    await waitFor(() => existsSync(rawFile) && readFileSync(rawFile, "utf8").includes("Handshake #"), "the captured output");
    const raw = readFileSync(rawFile, "utf8");
    for (const sequence of INJECTED) expect(raw.includes(sequence), `the TUI wrote ${JSON.stringify(sequence)}`).toBe(false);
    expect(title, "OSC 0 retitled the pane").not.toContain("pwned");
    expect(raw).toContain(visibleName);
    expect(list, "the list shows the escapes").toContain(visibleName);
    expect(view, "the handshake view shows the escapes").toContain(visibleName);
  });
});
