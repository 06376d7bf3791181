// Hostile recordings against the real binaries: a client that reaches mcp-lens directly (an
// untrusted peer: --trusted-proxies none) with a forged Host / X-Forwarded-Host / -Proto and a
// crafted /register body. `inspector replay` must dial only the target (the proxy), never the
// decoy the forged Host names nor the registration endpoint the decoy advertises, must not send
// the recorded body raw, and must send --token only to the target with the target's Host.
// `inspector export` must show the URL the proxy forwarded to, the client's claims as claims, and
// write curl lines a shell parses as intended (no raw control byte on the terminal).
import { execFile, execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InspectorData } from "../../inspector/data.js";
import { keepArtifact } from "../helpers/artifacts.js";
import { ROOT, startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";

const INSPECTOR = path.join(ROOT, "dist/inspector/cli.js");
const run = promisify(execFile);
const tmp = tempDir("mcp-lens-replay-hostile-");
const dbPath = `${tmp.dir}/lens.db`;
const TOKEN = "CANARY-replay-operator-token-7f3a";
const FORGED_HOST = "forged.example.test";

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A loopback server that records every request; `answer` decides the response. */
async function server(answer: (req: http.IncomingMessage, body: string, origin: string) => { status: number; json?: unknown; headers?: Record<string, string> }) {
  const seen: Seen[] = [];
  let origin = "";
  const srv = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (body += c.slice(0, 65_536)));
    req.on("end", () => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      const a = answer(req, body, origin);
      const text = a.json === undefined ? "" : JSON.stringify(a.json);
      res.writeHead(a.status, { "content-type": "application/json", ...a.headers }).end(text);
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  return { origin, seen, close: () => new Promise<void>((resolve) => srv.close(() => resolve())) };
}

const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v)?.split(",")[0]?.trim();

/**
 * An OAuth-protected MCP server that, like many frameworks, takes its public origin from the first
 * X-Forwarded-Host (else Host): what an attacker steers when a replay sends a recorded Host.
 */
function mcpAnswer(req: http.IncomingMessage, body: string) {
  const base = `${first(req.headers["x-forwarded-proto"]) ?? "http"}://${first(req.headers["x-forwarded-host"]) ?? req.headers.host}`;
  const url = req.url ?? "/";
  if (url === "/.well-known/oauth-protected-resource/mcp") return { status: 200, json: { resource: `${base}/mcp`, authorization_servers: [base] } };
  if (url === "/.well-known/oauth-authorization-server") {
    return {
      status: 200,
      json: { issuer: base, authorization_endpoint: `${base}/authorize`, token_endpoint: `${base}/token`, registration_endpoint: `${base}/register`, code_challenge_methods_supported: ["S256"] },
    };
  }
  if (url === "/register") return { status: 201, json: { client_id: "client-1" } };
  if (url.startsWith("/mcp")) {
    if (!req.headers.authorization) return { status: 401, json: { error: "unauthorized" }, headers: { "www-authenticate": `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"` } };
    const message = JSON.parse(body || "{}") as { id?: number; method?: string };
    if (message.method === "initialize") return { status: 200, json: { jsonrpc: "2.0", id: message.id, result: { protocolVersion: "2025-06-18", capabilities: {}, serverInfo: { name: "t", version: "1" } } } };
    if (message.method === "tools/list") return { status: 200, json: { jsonrpc: "2.0", id: message.id, result: { tools: [{ name: "echo", inputSchema: { type: "object" } }] } } };
    return { status: 202 };
  }
  return { status: 404, json: { error: "not_found" } };
}

async function inspector(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [INSPECTOR, ...args], { env: { ...process.env, MCP_LENS_DB: dbPath } });
    keepArtifact(`hostile-${args[0]}.out`, stdout + stderr);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    keepArtifact(`hostile-${args[0]}.out`, e.stdout + e.stderr);
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** One raw request to the proxy, with exactly these headers (Host included). */
function raw(url: string, method: string, headers: Record<string, string>, body = ""): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: { ...headers, "content-length": String(Buffer.byteLength(body)) }, agent: false, setHost: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode!));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("a hostile recording: replay and export", () => {
  let upstream: Awaited<ReturnType<typeof server>>;
  let decoy: Awaited<ReturnType<typeof server>>;
  let sink: Awaited<ReturnType<typeof server>>;
  let lens: RunningLens;
  let handshakeId: number;

  beforeAll(async () => {
    upstream = await server((req, body) => mcpAnswer(req, body));
    sink = await server(() => ({ status: 201, json: { client_id: "sink-client" } }));
    // The decoy plays the server the forged Host names, and sends the registration elsewhere.
    decoy = await server((req, _body, origin) => {
      if (req.url?.startsWith("/.well-known/oauth-protected-resource")) return { status: 200, json: { resource: `http://${FORGED_HOST}/mcp`, authorization_servers: [origin] } };
      return {
        status: 200,
        json: { issuer: origin, authorization_endpoint: `${origin}/a`, token_endpoint: `${origin}/t`, registration_endpoint: `${sink.origin}/containers/create`, code_challenge_methods_supported: ["S256"] },
      };
    });
    lens = await startLensProcess({ upstream: upstream.origin, dbPath, args: ["--trusted-proxies", "none", "--flush-interval", "20"] });

    const decoyHost = new URL(decoy.origin).host;
    const forged = { host: decoyHost, "x-forwarded-host": FORGED_HOST, "x-forwarded-proto": "http", "user-agent": "python-httpx/0.28.1", accept: "application/json, text/event-stream", "content-type": "application/json" };
    const init = { jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "Anthropic", version: "1.0.0" } } };
    expect(await raw(`${lens.url}/mcp`, "POST", forged, JSON.stringify(init))).toBe(401);
    const registration = {
      client_name: "Claude",
      redirect_uris: ["https://claude.ai/api/mcp/auth_callback"],
      grant_types: ["authorization_code"],
      token_endpoint_auth_method: "none",
      Image: "alpine",
      Cmd: ["sh", "-c", "echo pwned"],
      HostConfig: { Privileged: true },
    };
    // An ESC and a quote in a body: the curl export must neither print the ESC raw nor let the quote end its quoting.
    await raw(`${lens.url}/mcp`, "POST", { ...forged, "content-type": "text/plain" }, "it's \u001b[31mred\u001b[0m $(touch /tmp/x)");
    await raw(`${lens.url}/register`, "POST", forged, JSON.stringify(registration));
    handshakeId = await waitFor(() => {
      const data = new InspectorData(dbPath);
      try {
        return data.listHandshakes().find((h) => data.getHandshake(h.id)?.exchanges.some((e) => e.kind === "registration"))?.id;
      } finally {
        data.close();
      }
    }, "the hostile handshake stored", 10_000);
  }, 30_000);

  afterAll(async () => {
    await lens?.stop();
    for (const s of [upstream, decoy, sink]) await s?.close();
    tmp.cleanup();
  });

  it("replay dials only the target: never the decoy nor its registration endpoint; the token goes only to the target, with its Host", { timeout: 20_000 }, async () => {
    const before = upstream.seen.length;
    const result = await inspector(["replay", String(handshakeId), "--json", "--token", TOKEN, "--timeout", "3000"]);
    expect(result.stderr).not.toContain("TypeError");
    expect(decoy.seen, "the decoy was contacted").toEqual([]);
    expect(sink.seen, "the decoy's registration endpoint was contacted").toEqual([]);
    const rerun = upstream.seen.slice(before);
    expect(rerun.length).toBeGreaterThan(0);
    const proxyHost = new URL(lens.url).host;
    for (const r of rerun) {
      // The proxy (untrusted peer) sets X-Forwarded-Host from Host: the replay's Host must be the target's.
      expect(r.headers.host, `${r.method} ${r.url}`).toBe(proxyHost);
      expect(r.headers["x-forwarded-host"]).toBe(proxyHost);
      expect(JSON.stringify(r.headers)).not.toContain(FORGED_HOST);
    }
    const registered = rerun.filter((r) => r.url === "/register");
    expect(registered).toHaveLength(1);
    const body = JSON.parse(registered[0]!.body) as Record<string, unknown>;
    // Rebuilt from known fields: the crafted ones are gone.
    expect(Object.keys(body).sort(), JSON.stringify(body)).toEqual(["client_name", "grant_types", "redirect_uris", "token_endpoint_auth_method"]);
    expect(registered[0]!.body).not.toContain("pwned");
    const withToken = rerun.filter((r) => r.headers.authorization);
    expect(withToken.length).toBeGreaterThan(0);
    for (const r of withToken) expect(r.headers.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it("export --curl and --har use the URL the proxy forwarded to; the forged headers show only as claims", async () => {
    const curl = await inspector(["export", String(handshakeId), "--curl"]);
    expect(curl.code).toBe(0);
    expect(curl.stdout).not.toContain("\u001b");
    const urls = [...curl.stdout.matchAll(/^curl .*?'(https?:\/\/[^']*)'/gm)].map((m) => m[1]!);
    expect(urls.length).toBeGreaterThan(0);
    for (const url of urls) expect(url.startsWith(`${upstream.origin}/`), url).toBe(true);
    // The client's claims are kept, as what the client claimed, on comment lines only.
    for (const line of curl.stdout.split("\n").filter((l) => l.includes(FORGED_HOST))) expect(line.startsWith("#"), line).toBe(true);
    expect(curl.stdout).toMatch(/^# .*client claimed.*forged\.example\.test/im);
    // A shell parses it as intended: bash -n accepts it, and running it with curl stubbed sees the body intact.
    const file = `${tmp.dir}/export.sh`;
    writeFileSync(file, curl.stdout);
    execFileSync("bash", ["-n", file]);
    const args = execFileSync("bash", ["-c", `curl() { printf '%s\\0' "$@"; }; . ${file}`], { encoding: "utf8" }).split("\0");
    expect(args.filter((a) => a.includes("touch"))).toEqual(["it's \u001b[31mred\u001b[0m $(touch /tmp/x)"]);

    const har = JSON.parse((await inspector(["export", String(handshakeId), "--har"])).stdout) as {
      log: { entries: Array<{ request: { url: string; headers: Array<{ name: string; value: string }> }; _clientClaimed?: unknown }> };
    };
    for (const entry of har.log.entries) {
      expect(entry.request.url.startsWith(`${upstream.origin}/`), entry.request.url).toBe(true);
      expect(JSON.stringify(entry.request.headers)).not.toContain(FORGED_HOST);
    }
    expect(JSON.stringify(har.log.entries.map((e) => e._clientClaimed))).toContain(FORGED_HOST);
  });
});
