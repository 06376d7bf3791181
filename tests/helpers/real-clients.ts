// Real MCP clients, each run as its own child process on loopback and bounded by a timeout:
// the v2 SDK client (@modelcontextprotocol/client 2.x) in its three version-negotiation modes,
// optionally through OAuth with the SDK's own auth flow; the v1 SDK client
// (@modelcontextprotocol/sdk 1.x); and mcp-remote, driven by a v1 stdio client as Claude Desktop
// would. Each connects, lists the tools, calls `echo` and `fail` (a tool error), and closes.
// The scripts are plain ESM evaluated with the repository as working directory, so they load the
// packages from its node_modules exactly as an application would.
import { spawn } from "node:child_process";
import path from "node:path";
import { keepArtifact, tempDir } from "./artifacts.js";
import { ROOT } from "./processes.js";

/** v2 client modes: "default" = legacy (2025 handshake), "auto" = modern first, legacy fallback, "pin" = 2026-07-28 only. */
export type V2Mode = "default" | "auto" | "pin";

export interface ClientRun {
  /** Exit code (0: connected, listed, called; 3: the client failed; null: killed at the timeout). */
  code: number | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** Epoch ms around the process: every request it sent was received by the proxy in between. */
  startedAt: number;
  endedAt: number;
  /** The JSON events the script printed ({event: "connected" | "tools" | "call" | "error" | …}). */
  events: Array<Record<string, unknown>>;
}

export interface OAuthClientOptions {
  /** Callback registered and used; never listened on (the script reads the redirect's Location). */
  redirectUri?: string;
  clientName?: string;
  authMethod?: "none" | "client_secret_post" | "client_secret_basic";
  /** A Client ID Metadata Document URL (used when the AS advertises CIMD). */
  clientMetadataUrl?: string;
  /** Keeps the client registration and tokens here across runs (a client's on-disk cache). */
  stateFile?: string;
  /** After listing the tools, refresh twice at once with the same refresh token (two tabs, a race). */
  refreshTwice?: boolean;
  /** Authorization rounds (initial sign-in and step-ups) before giving up; default 3. */
  maxAuthRounds?: number;
}

export interface V2ClientOptions {
  mode: V2Mode;
  /** clientInfo.name; default eras-v2-<mode>. */
  name?: string;
  oauth?: OAuthClientOptions;
  /** Wait between tools/list and the tool calls (e.g. for a token to expire). */
  pauseBeforeCallsMs?: number;
  timeoutMs?: number;
}

const REQUEST_TIMEOUT_MS = 8000;

// The parts every script shares: printing events, the tool calls, the exit code.
const PRELUDE = String.raw`
const cfg = JSON.parse(process.env.ERAS_CLIENT_CONFIG);
const emit = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const errorText = (e) => [e?.constructor?.name, e?.code, e?.message].filter((x) => x !== undefined).join(' ');
async function exercise(client, callTool) {
  const tools = await client.listTools(undefined, { timeout: ${REQUEST_TIMEOUT_MS} });
  emit('tools', { names: tools.tools.map((t) => t.name) });
  if (cfg.pauseBeforeCallsMs) await sleep(cfg.pauseBeforeCallsMs);
  const echo = await callTool({ name: 'echo', arguments: { message: 'hello from ' + cfg.name } });
  emit('call', { name: 'echo', isError: echo.isError === true, text: echo.content?.[0]?.text });
  const fail = await callTool({ name: 'fail', arguments: {} });
  emit('call', { name: 'fail', isError: fail.isError === true, text: fail.content?.[0]?.text });
}
`;

const V2_SCRIPT = String.raw`
import { Client, StreamableHTTPClientTransport, UnauthorizedError, refreshAuthorization } from '@modelcontextprotocol/client';
import { readFileSync, writeFileSync } from 'node:fs';
${PRELUDE}
const options = {};
if (cfg.mode === 'auto') options.versionNegotiation = { mode: 'auto' };
if (cfg.mode === 'pin') options.versionNegotiation = { mode: { pin: '2026-07-28' } };

class Provider {
  constructor(o) {
    this.o = o;
    this.pending = null;
    this.discovery = undefined;
    this.store = {};
    if (o.stateFile) try { this.store = JSON.parse(readFileSync(o.stateFile, 'utf8')); } catch {}
    if (o.clientMetadataUrl) this.clientMetadataUrl = o.clientMetadataUrl;
  }
  persist() { if (this.o.stateFile) writeFileSync(this.o.stateFile, JSON.stringify(this.store)); }
  get redirectUrl() { return this.o.redirectUri; }
  get clientMetadata() {
    return { client_name: this.o.clientName, redirect_uris: [this.o.redirectUri], grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], token_endpoint_auth_method: this.o.authMethod };
  }
  clientInformation() { return this.store.client; }
  saveClientInformation(info) { this.store.client = info; this.persist(); emit('registered', { client_id: info.client_id }); }
  tokens() { return this.store.tokens; }
  saveTokens(tokens) { this.store.tokens = tokens; this.persist(); emit('tokens', { scope: tokens.scope }); }
  redirectToAuthorization(url) { this.pending = url; }
  saveCodeVerifier(v) { this.store.verifier = v; this.persist(); }
  codeVerifier() { return this.store.verifier; }
  saveDiscoveryState(state) { this.discovery = state; }
  discoveryState() { return this.discovery; }
}

// The user's browser: opens the authorization URL; the AS consents at once and redirects.
async function browser(url) {
  const r = await fetch(url, { redirect: 'manual', headers: { 'user-agent': 'Mozilla/5.0 (X11; Linux x86_64) Chrome/141.0' } });
  const location = r.headers.get('location');
  if (r.status < 300 || r.status > 399 || !location) throw new Error('authorize answered ' + r.status + ': ' + (await r.text()).slice(0, 200));
  const params = new URL(location).searchParams;
  emit('callback', { hasCode: params.has('code'), error: params.get('error'), iss: params.get('iss') });
  return params;
}

const provider = cfg.oauth ? new Provider({ redirectUri: 'http://localhost:33418/callback', clientName: cfg.name, authMethod: 'none', ...cfg.oauth }) : undefined;
const maxRounds = cfg.oauth?.maxAuthRounds ?? 3;
let rounds = 0;
/** True when the SDK sent the user to authorize; then plays the browser and redeems the code on t. */
async function authorized(e, t) {
  if (!provider || !(e instanceof UnauthorizedError) || !provider.pending || rounds >= maxRounds) return false;
  rounds++;
  const url = provider.pending;
  provider.pending = null;
  emit('authorize', { round: rounds });
  await t.finishAuth(await browser(url));
  return true;
}

let client, transport;
try {
  for (;;) {
    client = new Client({ name: cfg.name, version: '2.4.0' }, options);
    transport = new StreamableHTTPClientTransport(new URL(cfg.url), provider ? { authProvider: provider } : {});
    try {
      await client.connect(transport, { timeout: ${REQUEST_TIMEOUT_MS} });
      break;
    } catch (e) {
      if (!(await authorized(e, transport))) throw e;
      await client.close().catch(() => {}); // then connect again, signed in
    }
  }
  emit('connected', { protocolVersion: transport.protocolVersion, sessionId: transport.sessionId ?? null, server: client.getServerVersion?.()?.name ?? null });
  if (cfg.oauth?.refreshTwice) {
    const d = provider.discovery;
    const refreshToken = provider.store.tokens?.refresh_token;
    const results = await Promise.allSettled([0, 1].map(() => refreshAuthorization(d.authorizationServerUrl, {
      metadata: d.authorizationServerMetadata, clientInformation: provider.store.client, refreshToken, resource: new URL(cfg.url),
    })));
    emit('refreshed', { results: results.map((r) => r.status === 'fulfilled' ? 'ok' : errorText(r.reason)) });
  }
  await exercise(client, async (params) => {
    for (;;) {
      try {
        return await client.callTool(params, { timeout: ${REQUEST_TIMEOUT_MS} });
      } catch (e) {
        if (!(await authorized(e, transport))) throw e; // a step-up: signed in again, call again
      }
    }
  });
  if (transport.sessionId) await transport.terminateSession().catch((e) => emit('terminate_error', { message: e.message }));
  await client.close();
} catch (e) {
  emit('error', { message: errorText(e) });
  process.exitCode = 3;
  await client?.close().catch(() => {});
}
`;

const V1_SCRIPT = String.raw`
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
${PRELUDE}
const client = new Client({ name: cfg.name, version: '1.32.2' });
const transport = new StreamableHTTPClientTransport(new URL(cfg.url));
try {
  await client.connect(transport, { timeout: ${REQUEST_TIMEOUT_MS} });
  emit('connected', { protocolVersion: transport.protocolVersion ?? null, sessionId: transport.sessionId ?? null, server: client.getServerVersion()?.name ?? null });
  await exercise(client, (params) => client.callTool(params, undefined, { timeout: ${REQUEST_TIMEOUT_MS} }));
  if (transport.sessionId) await transport.terminateSession().catch((e) => emit('terminate_error', { message: e.message }));
  await client.close();
} catch (e) {
  emit('error', { message: errorText(e) });
  process.exitCode = 3;
  await client.close().catch(() => {});
}
`;

// Claude Desktop's way to a remote server: a stdio client starting mcp-remote, which speaks HTTP.
const MCP_REMOTE_SCRIPT = String.raw`
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
${PRELUDE}
const client = new Client({ name: cfg.name, version: '0.9.0' });
const transport = new StdioClientTransport({
  command: process.execPath,
  args: [cfg.mcpRemote, cfg.url, '--transport', 'http-only', '--host', '127.0.0.1', ...(cfg.callbackPort ? [String(cfg.callbackPort)] : [])],
  env: { ...process.env, MCP_REMOTE_CONFIG_DIR: cfg.configDir },
  stderr: 'pipe',
});
transport.stderr?.on('data', (d) => process.stderr.write('[mcp-remote] ' + d));
try {
  await client.connect(transport, { timeout: ${REQUEST_TIMEOUT_MS} });
  emit('connected', { server: client.getServerVersion()?.name ?? null });
  await exercise(client, (params) => client.callTool(params, undefined, { timeout: ${REQUEST_TIMEOUT_MS} }));
  await client.close();
} catch (e) {
  emit('error', { message: errorText(e) });
  process.exitCode = 3;
  await client.close().catch(() => {});
}
`;

function runScript(kind: string, script: string, config: Record<string, unknown>, timeoutMs: number): Promise<ClientRun> {
  return new Promise((resolve) => {
    const startedAt = Date.now();
    const child = spawn(process.execPath, ["--input-type=module", "--eval", script], {
      cwd: ROOT,
      env: { ...process.env, ERAS_CLIENT_CONFIG: JSON.stringify(config), NODE_NO_WARNINGS: "1" },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so the timeout also ends what it started (mcp-remote).
      detached: true,
    });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    const killGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        /* already gone */
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup("SIGKILL");
    }, timeoutMs);
    child.once("close", (code) => {
      clearTimeout(timer);
      killGroup("SIGKILL"); // whatever it left behind (an mcp-remote that outlived its client)
      const endedAt = Date.now();
      keepArtifact(`client-${kind}-${child.pid}.out`, `${stdout}\n${stderr}`);
      const events: Array<Record<string, unknown>> = [];
      for (const line of stdout.split("\n")) {
        if (!line.startsWith("{")) continue;
        try {
          events.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          /* not one of ours */
        }
      }
      resolve({ code, timedOut, stdout, stderr, startedAt, endedAt, events });
    });
  });
}

/** The v2 SDK client (2.x) in one of its version-negotiation modes. */
export function runV2Client(url: string, opts: V2ClientOptions): Promise<ClientRun> {
  const name = opts.name ?? `eras-v2-${opts.mode}`;
  return runScript(`v2-${opts.mode}`, V2_SCRIPT, { url, name, mode: opts.mode, oauth: opts.oauth, pauseBeforeCallsMs: opts.pauseBeforeCallsMs }, opts.timeoutMs ?? 25_000);
}

/** The v1 SDK client (1.x): legacy era only. */
export function runV1Client(url: string, opts: { name?: string; timeoutMs?: number } = {}): Promise<ClientRun> {
  return runScript("v1", V1_SCRIPT, { url, name: opts.name ?? "eras-v1" }, opts.timeoutMs ?? 20_000);
}

/** mcp-remote (devDependency) in http-only mode, driven over stdio by a v1 client named `name`. */
export function runMcpRemote(url: string, opts: { name?: string; timeoutMs?: number } = {}): Promise<ClientRun> {
  const config = tempDir("mcp-remote-config-");
  return runScript(
    "mcp-remote",
    MCP_REMOTE_SCRIPT,
    { url, name: opts.name ?? "eras-via-mcp-remote", mcpRemote: path.join(ROOT, "node_modules/mcp-remote/dist/proxy.js"), configDir: config.dir },
    opts.timeoutMs ?? 30_000,
  ).finally(config.cleanup);
}

/** One line per run for failure messages. */
export function describeClientRun(run: ClientRun): string {
  const events = run.events.map((e) => JSON.stringify(e)).join(" ");
  return `exit=${run.code}${run.timedOut ? " (timed out)" : ""} in ${run.endedAt - run.startedAt} ms ${events}${run.code === 0 ? "" : `\nstderr: ${run.stderr.slice(-1500)}`}`;
}
