// Real MCP clients, each run as its own child process on loopback and bounded by a timeout:
// the v2 SDK client (@modelcontextprotocol/client 2.x) in its three version-negotiation modes and
// the v1 SDK client (@modelcontextprotocol/sdk 1.x), each optionally through OAuth with the SDK's
// own auth flow; mcp-remote, driven by a v1 stdio client as Claude Desktop would; and the MCP
// Inspector's command line. Each connects, lists the tools, makes its calls (by default `echo` and
// `fail`, a tool error), and closes. The browser step is sign-in.mjs: in the SDK scripts directly,
// for mcp-remote and the Inspector as $BROWSER (sign-in-browser.mjs), which their opener runs.
// The scripts are plain ESM evaluated with the repository as working directory, so they load the
// packages from its node_modules exactly as an application would.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
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
  /** The Coda API token pasted on the bundled server's sign-in page (other servers consent at once). */
  codaToken?: string;
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

/** A tool call a client makes after listing the tools. */
export interface ToolCall {
  name: string;
  arguments?: Record<string, unknown>;
}

/** The calls of the eras fixtures' servers: `echo` works, `fail` answers a tool error. */
const DEFAULT_CALLS: ToolCall[] = [
  { name: "echo", arguments: { message: "hello" } },
  { name: "fail", arguments: {} },
];

export interface V2ClientOptions {
  mode: V2Mode;
  /** clientInfo.name; default eras-v2-<mode>. */
  name?: string;
  oauth?: OAuthClientOptions;
  calls?: ToolCall[];
  /** Wait between tools/list and the tool calls (e.g. for a token to expire). */
  pauseBeforeCallsMs?: number;
  timeoutMs?: number;
}

const REQUEST_TIMEOUT_MS = 8000;
const SIGN_IN_MODULE = pathToFileURL(path.join(ROOT, "tests/helpers/sign-in.mjs")).href;
/** $BROWSER for the clients that open one. */
const SIGN_IN_BROWSER = path.join(ROOT, "tests/helpers/sign-in-browser.mjs");

// The parts every script shares: printing events, the browser, the tool calls, the exit code.
const PRELUDE = String.raw`
import { consent } from ${JSON.stringify(SIGN_IN_MODULE)};
import { readFileSync, writeFileSync } from 'node:fs';
const cfg = JSON.parse(process.env.ERAS_CLIENT_CONFIG);
const emit = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const errorText = (e) => [e?.constructor?.name, e?.code, e?.message].filter((x) => x !== undefined).join(' ');
async function exercise(client, callTool) {
  const tools = await client.listTools(undefined, { timeout: ${REQUEST_TIMEOUT_MS} });
  emit('tools', { names: tools.tools.map((t) => t.name) });
  if (cfg.pauseBeforeCallsMs) await sleep(cfg.pauseBeforeCallsMs);
  for (const call of cfg.calls) {
    const result = await callTool({ name: call.name, arguments: call.arguments ?? {} });
    emit('call', { name: call.name, isError: result.isError === true, text: result.content?.[0]?.text });
  }
}

// An OAuth client as the SDKs expect one; its registration and tokens optionally kept in a file.
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
const provider = cfg.oauth ? new Provider({ redirectUri: 'http://localhost:33418/callback', clientName: cfg.name, authMethod: 'none', ...cfg.oauth }) : undefined;

// The user's browser: consents to the pending authorization; the callback's parameters.
async function browser(url) {
  const params = new URL(await consent(url, cfg.oauth?.codaToken)).searchParams;
  emit('callback', { hasCode: params.has('code'), error: params.get('error'), iss: params.get('iss') });
  return params;
}
`;

const V2_SCRIPT = String.raw`
import { Client, StreamableHTTPClientTransport, UnauthorizedError, refreshAuthorization } from '@modelcontextprotocol/client';
${PRELUDE}
const options = {};
if (cfg.mode === 'auto') options.versionNegotiation = { mode: 'auto' };
if (cfg.mode === 'pin') options.versionNegotiation = { mode: { pin: '2026-07-28' } };

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
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
${PRELUDE}
let client = new Client({ name: cfg.name, version: '1.32.2' });
let transport = new StreamableHTTPClientTransport(new URL(cfg.url), provider ? { authProvider: provider } : {});
try {
  try {
    await client.connect(transport, { timeout: ${REQUEST_TIMEOUT_MS} });
  } catch (e) {
    if (!provider || !(e instanceof UnauthorizedError) || !provider.pending) throw e;
    // Signed out: the browser step, the code redeemed, then connect again.
    const params = await browser(provider.pending);
    await transport.finishAuth(params.get('code'));
    await client.close().catch(() => {});
    client = new Client({ name: cfg.name, version: '1.32.2' });
    transport = new StreamableHTTPClientTransport(new URL(cfg.url), { authProvider: provider });
    await client.connect(transport, { timeout: ${REQUEST_TIMEOUT_MS} });
  }
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
  // The callback port is mcp-remote's second positional argument, right after the URL.
  args: [cfg.mcpRemote, cfg.url, ...(cfg.callbackPort ? [String(cfg.callbackPort)] : []), '--transport', 'http-only', '--host', '127.0.0.1'],
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

function runScript(kind: string, script: string, config: Record<string, unknown>, timeoutMs: number, env: Record<string, string> = {}): Promise<ClientRun> {
  const args = ["--input-type=module", "--eval", script];
  return runProcess(kind, args, { ...process.env, ...env, ERAS_CLIENT_CONFIG: JSON.stringify(config), NODE_NO_WARNINGS: "1" }, timeoutMs);
}

/** `node <args>` in the repository, killed with everything it started after `timeoutMs`; its JSON lines are the events. */
function runProcess(kind: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<ClientRun> {
  return new Promise((resolve) => {
    const startedAt = Date.now();
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env,
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
  const config = { url, name, mode: opts.mode, oauth: opts.oauth, calls: opts.calls ?? DEFAULT_CALLS, pauseBeforeCallsMs: opts.pauseBeforeCallsMs };
  return runScript(`v2-${opts.mode}`, V2_SCRIPT, config, opts.timeoutMs ?? 25_000);
}

export interface V1ClientOptions {
  name?: string;
  oauth?: OAuthClientOptions;
  calls?: ToolCall[];
  timeoutMs?: number;
}

/** The v1 SDK client (1.x): legacy era only; with `oauth`, it registers by DCR (its only way). */
export function runV1Client(url: string, opts: V1ClientOptions = {}): Promise<ClientRun> {
  const config = { url, name: opts.name ?? "eras-v1", oauth: opts.oauth, calls: opts.calls ?? DEFAULT_CALLS };
  return runScript("v1", V1_SCRIPT, config, opts.timeoutMs ?? 20_000);
}

export interface BrowserClientOptions {
  calls?: ToolCall[];
  /** Signs in on the bundled server's page with this Coda token when the client opens the browser. */
  codaToken?: string;
  timeoutMs?: number;
}

/** The environment of a client that opens the user's browser: sign-in-browser.mjs is that browser. */
function browserEnv(codaToken: string | undefined, logFile: string): Record<string, string> {
  return { BROWSER: SIGN_IN_BROWSER, SIGN_IN_CODA_TOKEN: codaToken ?? "", SIGN_IN_LOG: logFile, DISPLAY: "", WAYLAND_DISPLAY: "" };
}

/**
 * mcp-remote (devDependency) in http-only mode, driven over stdio by a v1 client named `name`. Its
 * OAuth callback listens on 127.0.0.1:`callbackPort`; the browser it opens signs in.
 */
export async function runMcpRemote(url: string, opts: BrowserClientOptions & { name?: string; callbackPort?: number } = {}): Promise<ClientRun> {
  const config = tempDir("mcp-remote-config-");
  const browserLog = path.join(config.dir, "browser.log");
  try {
    const run = await runScript(
      "mcp-remote",
      MCP_REMOTE_SCRIPT,
      {
        url,
        name: opts.name ?? "eras-via-mcp-remote",
        mcpRemote: path.join(ROOT, "node_modules/mcp-remote/dist/proxy.js"),
        configDir: config.dir,
        callbackPort: opts.callbackPort,
        calls: opts.calls ?? DEFAULT_CALLS,
      },
      opts.timeoutMs ?? 30_000,
      browserEnv(opts.codaToken, browserLog),
    );
    return withBrowserLog(run, browserLog);
  } finally {
    config.cleanup();
  }
}

const INSPECTOR_CLI = path.join(ROOT, "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js");

/**
 * The MCP Inspector's command line (2.x): one `tools/call`, which connects, lists the tools and calls
 * one. With a browser (MCP_AUTO_OPEN_ENABLED, no terminal) it signs in by OAuth: DCR, its callback
 * on an ephemeral loopback port; its state lives in a temporary directory, secrets in memory.
 * Proxy variables are dropped: the CLI's undici crashes on Node 20 when one is set, and every
 * address here is loopback anyway.
 */
export async function runInspectorCli(url: string, opts: BrowserClientOptions & { era?: "legacy" | "auto" | "modern" } = {}): Promise<ClientRun> {
  const state = tempDir("mcp-inspector-");
  const browserLog = path.join(state.dir, "browser.log");
  const call = (opts.calls ?? DEFAULT_CALLS)[0]!;
  const args = [
    INSPECTOR_CLI, "--cli", url, "--callback-url", "http://127.0.0.1:0/oauth/callback",
    ...(opts.era ? ["--protocol-era", opts.era] : []),
    "--method", "tools/call", "--tool-name", call.name, "--tool-args-json", JSON.stringify(call.arguments ?? {}), "--format", "json", "-q",
  ];
  const env: Record<string, string> = {
    ...withoutProxyVariables(process.env),
    HOME: state.dir,
    MCP_STORAGE_DIR: path.join(state.dir, "storage"),
    MCP_INSPECTOR_SECRET_STORE: "memory",
    MCP_AUTO_OPEN_ENABLED: "true",
    ...browserEnv(opts.codaToken, browserLog),
  };
  try {
    const run = await runProcess("inspector-cli", args, env, opts.timeoutMs ?? 30_000);
    return withBrowserLog(run, browserLog);
  } finally {
    state.cleanup();
  }
}

function withoutProxyVariables(env: NodeJS.ProcessEnv): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) if (value !== undefined && !/^(https?|all|no)_proxy$/i.test(name)) kept[name] = value;
  return kept;
}

/** What the browser did, as an event, so a failed sign-in shows in the run's description. */
function withBrowserLog(run: ClientRun, logFile: string): ClientRun {
  let log = "";
  try {
    log = readFileSync(logFile, "utf8");
  } catch {
    return run; // the client never opened the browser
  }
  return { ...run, events: [...run.events, { event: "browser", log: log.trim().split("\n") }] };
}

/** One line per run for failure messages. */
export function describeClientRun(run: ClientRun): string {
  const events = run.events.map((e) => JSON.stringify(e)).join(" ");
  return `exit=${run.code}${run.timedOut ? " (timed out)" : ""} in ${run.endedAt - run.startedAt} ms ${events}${run.code === 0 ? "" : `\nstderr: ${run.stderr.slice(-1500)}`}`;
}
