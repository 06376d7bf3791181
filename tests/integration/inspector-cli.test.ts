// The built `inspector` command as a process, against a database the real proxy filled: the MCP
// SDK's OAuth client connecting through mcp-lens to the minimal server, once redeeming a wrong
// (canary) code — the handshake fails at the token step — and once all the way to tools/list.
import { execFile, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Handshake } from "../../analysis/handshake.js";
import { InspectorData } from "../../inspector/data.js";
import { eraLabel, eraText, registrationText } from "../../inspector/format.js";
import { startMinimalServer, type MinimalServerHandle } from "../fixtures/minimal-server.js";
import { CALLBACKS, ConnectorLikeProvider } from "../helpers/connector.js";
import { ROOT, runCli, startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { keepArtifact } from "../helpers/artifacts.js";
import { closedPort } from "../helpers/upstream.js";

const INSPECTOR = path.join(ROOT, "dist/inspector/cli.js");
const run = promisify(execFile);
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
/** The era fields as the analyser stored them (its era rules are tested with the analyser). */
const eraOf = (h: Handshake) => ({ era: h.era, eraFallback: h.eraFallback, registration: h.registration });

/** Runs the inspector to completion with the database in MCP_LENS_DB. */
async function inspector(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [INSPECTOR, ...args], { env: { ...process.env, MCP_LENS_DB: dbPath, ...env } });
    keepArtifact(`inspector-${args.join("-")}.out`, stdout + stderr);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    keepArtifact(`inspector-${args.join("-")}.out`, e.stdout + e.stderr);
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Starts `inspector tail`; stop() sends Ctrl-C and resolves with the exit code. */
function startTail(args: string[]) {
  const child = spawn(process.execPath, [INSPECTOR, "tail", ...args], { env: { ...process.env, MCP_LENS_DB: dbPath }, stdio: ["ignore", "pipe", "pipe"] });
  const out = { stdout: "", stderr: "" };
  child.stdout.on("data", (c: Buffer) => (out.stdout += c.toString()));
  child.stderr.on("data", (c: Buffer) => (out.stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("close", resolve));
  const stop = () => {
    child.kill("SIGINT");
    return exited.finally(() => keepArtifact("inspector-tail.out", out.stdout + out.stderr));
  };
  return { out, stop };
}

const tmp = tempDir("mcp-lens-inspector-cli-");
const dbPath = `${tmp.dir}/lens.db`;
const fingerprint = () => ({ sha256: createHash("sha256").update(readFileSync(dbPath)).digest("hex"), mtimeMs: statSync(dbPath).mtimeMs });

describe("the inspector command", () => {
  let port: number;
  let server: MinimalServerHandle;
  let lens: RunningLens;
  let secrets: string[];
  let failedId: number;
  let healthyId: number;
  let failedEra: ReturnType<typeof eraOf>;
  let healthyEra: ReturnType<typeof eraOf>;
  let untouched: ReturnType<typeof fingerprint>;

  const startLens = () => startLensProcess({ upstream: server.url, dbPath, args: ["--flush-interval", "20", "--port", String(port)] });

  beforeAll(async () => {
    port = await closedPort();
    const publicUrl = `http://127.0.0.1:${port}`;
    server = await startMinimalServer({ port: 0, requireAuth: true, publicUrl });
    lens = await startLens();
    const mcpUrl = new URL(`${publicUrl}/mcp`);

    // A client that redeems a wrong code: invalid_grant at the token step.
    const wrongCode = `CANARYcode${randomBytes(12).toString("hex")}`;
    const failing = new ConnectorLikeProvider(CALLBACKS.localhost, "none", "Claude Code");
    await expect(new Client({ name: "claude-code", version: "2.0.0" }).connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: failing }))).rejects.toThrow(UnauthorizedError);
    await expect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: failing }).finishAuth(wrongCode)).rejects.toThrow();

    // A client that connects: the user's browser consents (automatic on the minimal server).
    const provider = new ConnectorLikeProvider("http://localhost:6274/oauth/callback", "none", "MCP Inspector");
    await expect(new Client({ name: "inspector-client", version: "1.0.0" }).connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider }))).rejects.toThrow(UnauthorizedError);
    const consent = await fetch(provider.authorizationUrl!, { redirect: "manual" });
    const code = new URL(consent.headers.get("location")!).searchParams.get("code")!;
    const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider });
    await transport.finishAuth(code);
    const client = new Client({ name: "inspector-client", version: "1.0.0" });
    await client.connect(transport);
    await client.listTools();
    await client.close();
    secrets = [wrongCode, code, provider.codeVerifier(), provider.tokens()!.access_token, provider.tokens()!.refresh_token!];

    const data = new InspectorData(dbPath);
    try {
      [failedId, healthyId] = await waitFor(() => {
        const list = data.listHandshakes();
        const failed = list.find((h) => h.outcome === "failed");
        const healthy = list.find((h) => h.outcome === "succeeded");
        return failed && healthy ? [failed.id, healthy.id] : null;
      }, "a failed and a healthy handshake");
      failedEra = eraOf(data.getHandshake(failedId)!.handshake);
      healthyEra = eraOf(data.getHandshake(healthyId)!.handshake);
    } finally {
      data.close();
    }
    await lens.stop();
    untouched = fingerprint();
  });

  afterAll(async () => {
    await lens?.stop();
    await server?.close();
    tmp.cleanup();
  });

  it("lists only the failed handshake with its code: list --failed --json", async () => {
    const { code, stdout } = await inspector(["list", "--failed", "--json"]);
    expect(code).toBe(0);
    const list = JSON.parse(stdout) as Array<Record<string, unknown>>;
    expect(list).toEqual([
      expect.objectContaining({ id: failedId, ...failedEra, outcome: "failed", failedStep: "token", diagnoses: [expect.objectContaining({ code: "token_invalid_grant" })] }),
    ]);
    expect(list[0]).not.toHaveProperty("exchanges");
  });

  it("shows a handshake in the documented JSON shape: show ID --json", async () => {
    const { code, stdout } = await inspector(["show", String(failedId), "--json"]);
    expect(code).toBe(0);
    const h = JSON.parse(stdout);
    expect(Object.keys(h)).toEqual(["id", "client", "clientName", "era", "eraFallback", "registration", "startedAt", "endedAt", "outcome", "stepsReached", "failedStep", "diagnoses", "exchanges"]);
    expect(h).toMatchObject({ id: failedId, client: "claude-code", ...failedEra, outcome: "failed", failedStep: "token", startedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT.*Z$/) });
    expect(h.era).toMatch(/^(modern|legacy|unknown)$/);
    expect(typeof h.eraFallback).toBe("boolean");
    expect(h.registration).toMatch(/^(cimd|dcr|pre_registered|none)$/);
    expect(h.stepsReached.map((s: { step: string; status: string }) => `${s.step}:${s.status}`)).toEqual([
      "probe:ok",
      "protected_resource_metadata:ok",
      "authorization_server_metadata:ok",
      "registration:ok",
      "token:failed",
    ]);
    expect(Object.keys(h.diagnoses[0])).toEqual(["code", "severity", "summary", "evidence", "fix", "reference"]);
    expect(Object.keys(h.exchanges[0])).toEqual(["id", "startedAt", "method", "host", "path", "query", "status", "kind", "durationMs", "ttfbMs", "upstreamError", "facts", "replica"]);
    expect(typeof h.exchanges[0].replica).toBe("string"); // --replica, default the host name
    const token = h.exchanges.find((e: { kind: string }) => e.kind === "token");
    expect(token).toMatchObject({ method: "POST", path: "/token", status: 400, facts: { oauthError: "invalid_grant" } });
    expect(h.diagnoses[0].evidence).toContain(token.id);
  });

  it("prints a table that fits 80 columns without ANSI under NO_COLOR, and a readable show", async () => {
    const list = await inspector(["list"], { NO_COLOR: "1" });
    expect(list.code).toBe(0);
    const [header, ...rows] = list.stdout.trimEnd().split("\n");
    for (const line of [header!, ...rows]) expect(line.length).toBeLessThanOrEqual(80);
    expect(list.stdout).not.toContain("\x1b");
    expect(header).toMatch(/^TIME +ID +ERA +CLIENT +OUTCOME +FAILED STEP +FIRST DIAGNOSIS$/);
    const era = (e: typeof failedEra) => escape(eraLabel(e.era, e.eraFallback));
    expect(rows).toContainEqual(expect.stringMatching(new RegExp(`#${failedId} +${era(failedEra)} +claude-code +FAILED +token +token_invalid_grant$`)));
    expect(rows).toContainEqual(expect.stringMatching(new RegExp(`#${healthyId} +${era(healthyEra)} +mcp-inspector +succeeded`)));
    expect(rows.map((r) => Number(/#(\d+)/.exec(r)![1]))).toEqual([...rows.map((r) => Number(/#(\d+)/.exec(r)![1]))].sort((a, b) => b - a));

    const show = await inspector(["show", `#${failedId}`], { NO_COLOR: "1" });
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/FAILED at token/);
    const eraLine = `era ${eraText(failedEra.era, failedEra.eraFallback)} · client id ${registrationText(failedEra.registration)}`;
    expect(show.stdout).toMatch(new RegExp(escape(eraLine).replace(/ /g, "\\s+")));
    expect(show.stdout).toMatch(/failed +token/);
    expect(show.stdout).toMatch(/POST +\/token +400 token/);
    expect(show.stdout).toMatch(/redirect_uri http:\/\/localhost:33418\/callback/);
    expect(show.stdout).toMatch(/ERROR token_invalid_grant\n.*\n[\s\S]*evidence: #\d+[\s\S]*fix: [\s\S]*reference: RFC 6749/);
    for (const line of show.stdout.split("\n")) expect(line.length).toBeLessThanOrEqual(80);
  });

  it("exports valid, redacted HAR 1.2: export ID --har [-o FILE]", async () => {
    for (const id of [failedId, healthyId]) {
      const { code, stdout } = await inspector(["export", String(id), "--har"]);
      expect(code).toBe(0);
      const har = JSON.parse(stdout);
      expect(har.log).toMatchObject({ version: "1.2", creator: { name: "mcp-lens inspector" }, pages: [{ id: `handshake-${id}` }] });
      expect(har.log.entries.length).toBeGreaterThan(3);
      for (const entry of har.log.entries) {
        expect(entry).toMatchObject({
          pageref: `handshake-${id}`,
          startedDateTime: expect.stringMatching(/Z$/),
          request: { method: expect.any(String), url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\//), headers: expect.any(Array), queryString: expect.any(Array) },
          response: { status: expect.any(Number), headers: expect.any(Array), content: { size: expect.any(Number), mimeType: expect.any(String) } },
        });
        const { send, wait, receive } = entry.timings;
        for (const t of [send, wait, receive]) expect(t).toBeGreaterThanOrEqual(0);
        expect(entry.time).toBeCloseTo(send + wait + receive);
      }
      expect(stdout).toMatch(/\[redacted:[0-9a-f]{8}\]/);
      for (const secret of secrets) expect(stdout).not.toContain(secret);
    }
    const file = `${tmp.dir}/failed.har`;
    const toFile = await inspector(["export", String(failedId), "--har", "-o", file]);
    expect(toFile).toMatchObject({ code: 0, stdout: "" });
    expect(JSON.parse(readFileSync(file, "utf8")).log.entries.length).toBeGreaterThan(3);
  });

  it("exports one shell-quoted curl command per exchange: export ID --curl", async () => {
    const { code, stdout } = await inspector(["export", String(failedId), "--curl"]);
    expect(code).toBe(0);
    const json = JSON.parse((await inspector(["show", String(failedId), "--json"])).stdout);
    expect(stdout.match(/^curl /gm)).toHaveLength(json.exchanges.length);
    expect(stdout).toMatch(/# replace each \[redacted:xxxxxxxx\] marker[^\n]*\ncurl 'http:\/\/[^']*\/token'/);
    expect(stdout).toMatch(/--data-binary 'grant_type=authorization_code&code=\[redacted:[0-9a-f]{8}\]&code_verifier=\[redacted:[0-9a-f]{8}\]&/);
    for (const secret of secrets) expect(stdout).not.toContain(secret);
    execFileSync("sh", ["-n"], { input: stdout }); // parses as a shell script
  });

  it("answers bad input with one line and exit code 2, an unknown id with exit code 1", async () => {
    const usage = [
      ["list", "--bogus"],
      ["list", "--limit", "many"],
      ["list", "--since", "yesterday"],
      ["show"],
      ["show", "abc"],
      ["show", "1", "2"],
      ["export", String(failedId)],
      ["frobnicate"],
      [], // no terminal for the interactive view
    ];
    for (const args of usage) {
      const { code, stderr } = await inspector(args);
      expect({ args, code }).toEqual({ args, code: 2 });
      expect(stderr.trimEnd().split("\n").at(-1), args.join(" ")).toMatch(/^inspector: \S/);
      if (args.length) expect(stderr.trimEnd().split("\n"), args.join(" ")).toHaveLength(1);
    }
    expect((await inspector(["list", "--bogus"])).stderr).toMatch(/--bogus.*inspector list --help/);
    expect((await inspector([])).stderr).toMatch(/interactive view needs a terminal/);

    const unknown = await inspector(["show", "999999"]);
    expect(unknown).toMatchObject({ code: 1, stdout: "", stderr: `inspector: no handshake #999999 in ${dbPath} (see 'inspector list')\n` });
    const missing = await inspector(["list", "--db", `${tmp.dir}/nope.db`]);
    expect(missing).toMatchObject({ code: 1, stderr: expect.stringMatching(/^inspector: cannot open database .*nope\.db: no such file/) });
  });

  it("has --help for itself and each command", async () => {
    const main = await inspector(["--help"]);
    expect(main.code).toBe(0);
    for (const word of ["list", "show ID", "replay ID", "export ID --har|--curl", "tail", "--db PATH", "MCP_LENS_DB", "--admin-url"]) expect(main.stdout).toContain(word);
    const list = await inspector(["list", "--help"]);
    expect(list.code).toBe(0);
    for (const word of ["Usage: inspector list", "--failed", "--client CLIENT", "--since WHEN", "--text TEXT", "--limit N", "--json"]) expect(list.stdout).toContain(word);
    expect((await inspector(["export", "--help"])).stdout).toMatch(/--output FILE[\s\S]*-o FILE/);
  });

  it("runs as `mcp-lens inspector` too", async () => {
    const direct = await inspector(["list", "--failed", "--json"]);
    const via = await runCli(["inspector", "list", "--failed", "--json"], { MCP_LENS_DB: dbPath });
    expect(via).toEqual({ code: 0, stdout: direct.stdout, stderr: "" });
    const bad = await runCli(["inspector", "show", "999999"], { MCP_LENS_DB: dbPath });
    expect(bad).toMatchObject({ code: 1, stderr: expect.stringMatching(/^mcp-lens inspector: no handshake #999999/) });
    expect((await runCli(["--help"])).stdout).toMatch(/inspector +Which connector handshakes failed/);
  });

  it("takes options before or after the command", async () => {
    const after = await runCli(["inspector", "list", "--failed", "--json", "--db", dbPath]);
    expect(after.code).toBe(0);
    for (const args of [["inspector", "--db", dbPath, "list", "--failed", "--json"], ["--db", dbPath, "inspector", "--json", "list", "--failed"]]) {
      expect(await runCli(args), args.join(" ")).toEqual(after);
    }
    expect(await runCli(["inspector", "--db", dbPath, "bogus"])).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown command 'bogus'/) });
    expect((await runCli(["--log-level", "silent", "proxy", "--help"])).stdout).toMatch(/^Usage: mcp-lens proxy/);
  });

  it("falls back to polling the database when the live feed is unreachable; Ctrl-C exits 0", async () => {
    const tail = startTail([]);
    await waitFor(() => /polling .*read-only every 500 ms/.test(tail.out.stderr), "the polling notice");
    expect(tail.out.stderr).toMatch(/^inspector: cannot follow ws:\/\/127\.0\.0\.1:\d+\/live: /);
    expect(await tail.stop()).toBe(0);
  });

  it("never wrote to the database it read", () => {
    expect(fingerprint()).toEqual(untouched);
  });

  describe("with the proxy running", () => {
    beforeAll(async () => {
      lens = await startLens();
    });

    it("follows the live feed: tail --json prints each exchange as it is recorded", async () => {
      const tail = startTail(["--json"]);
      await waitFor(() => tail.out.stderr.includes("following ws://"), "the live notice");
      await fetch(`${lens.url}/.well-known/oauth-protected-resource/mcp`);
      const line = await waitFor(() => tail.out.stdout.split("\n").find((l) => l.includes("oauth-protected-resource")), "the exchange line");
      expect(JSON.parse(line)).toMatchObject({ type: "exchange", exchange: { method: "GET", path: "/.well-known/oauth-protected-resource/mcp", status: 200, kind: "protected_resource_metadata" } });
      expect(await tail.stop()).toBe(0);
    });

    it("replays through the proxy: exit 0 when it now passes, 1 when it still fails", async () => {
      const healthy = await inspector(["replay", String(healthyId)], { NO_COLOR: "1" });
      expect(healthy.stdout).toContain(`Replay of handshake #${healthyId} against ${lens.url}`);
      expect(healthy.stdout).toMatch(/probe +ok +ok \(401\) +same/);
      expect(healthy.stdout).toMatch(/^now passes$/m);
      expect(healthy.code).toBe(0);

      const failed = await inspector(["replay", String(failedId), "--json"]);
      expect(failed.code).toBe(1);
      expect(JSON.parse(failed.stdout)).toMatchObject({ handshakeId: failedId, target: lens.url, verdict: "still_fails", failedStep: "token" });
    });
  });
});

describe("the commands as the README runs them", () => {
  it("npx mcp-lens runs from a fresh build, and both commands' files are executable", () => {
    const root = path.resolve(import.meta.dirname, "../..");
    for (const bin of ["dist/cli/mcp-lens.js", "dist/inspector/cli.js"]) {
      expect(statSync(path.join(root, bin)).mode & 0o111, bin).not.toBe(0);
    }
    // No scripts: on a fresh clone npx links the project itself, and its `prepare` (npm run build)
    // would rewrite dist/ under the tests running beside this one (a server failed to load a
    // half-written module in CI).
    const help = execFileSync("npx", ["--no-install", "mcp-lens", "--help"], {
      cwd: root,
      encoding: "utf8",
      timeout: 30_000,
      env: { ...process.env, npm_config_ignore_scripts: "true" },
    });
    expect(help).toContain("Usage: mcp-lens <command>");
  });
});
