// A connector that behaves, step by step, like the hosted ones in the field guide
// (shared/reference/connector-handshake.md): no SDK, and it stops at the first step that fails
// the way real clients do. Every request has a timeout and nothing is retried beyond the discovery
// fallbacks the guide describes, so a run is bounded. node:http rather than fetch: fetch retries a
// 421 on a new connection and adds Sec-Fetch-* headers, which hosted backends do not.
import { randomBytes } from "node:crypto";
import http from "node:http";
import type { HandshakeStep } from "../../proxy/handshake.js";
import { pkcePair } from "./pkce.js";

export type ConnectorFamily = "claude.ai" | "chatgpt" | "claude-code";

export const FAMILIES = {
  "claude.ai": {
    userAgent: "python-httpx/0.28.1",
    clientInfo: { name: "Anthropic", version: "1.0.0" },
    clientName: "Claude",
    authMethod: "client_secret_post",
    redirectUri: "https://claude.ai/api/mcp/auth_callback",
  },
  chatgpt: {
    userAgent: "openai-mcp/1.0.0",
    clientInfo: { name: "openai-mcp", version: "1.0.0" },
    clientName: "ChatGPT",
    authMethod: "none",
    redirectUri: "https://chatgpt.com/connector_platform_oauth_redirect",
  },
  "claude-code": {
    userAgent: "claude-code/2.0",
    clientInfo: { name: "claude-code", version: "2.0.0" },
    clientName: "Claude Code",
    authMethod: "none",
    redirectUri: "http://localhost:33418/callback",
  },
} as const;

/** The user's browser, for the authorize step (and every request of a browser-based client). */
export const BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

export interface HostedConnectorOptions {
  family: ConnectorFamily;
  /** A browser-based client: sends this Origin, preflights /mcp requests and obeys CORS. */
  origin?: string;
  /** Requested in initialize; default 2025-11-25. */
  protocolVersion?: string;
  /** Per-request timeout, like the ~10 s hosted clients allow; default 10 000 ms. */
  timeoutMs?: number;
  /** How long an SSE answer may take to flush its first event; default 1500 ms. */
  sseTimeoutMs?: number;
  /** Accept of MCP requests; default "application/json, text/event-stream" (some clients send *\/*). */
  accept?: string;
  /**
   * Hosted clients dial https only; here TLS "ends" at a front proxy in front of mcp-lens: the
   * connector URL the client uses is https, requests go over http on loopback, and the front proxy
   * either passes X-Forwarded-Proto: https ("forwarded") or does not ("stripped"). "none": plain
   * http. Default: "forwarded" for claude.ai and chatgpt, "none" for claude-code.
   */
  tls?: "forwarded" | "stripped" | "none";
}

export interface HostedConnectorResult {
  /** The connector URL as the client used it (https behind a TLS front). */
  url: string;
  /** Steps completed, in order (HANDSHAKE_STEPS names). */
  reached: HandshakeStep[];
  failedAt: HandshakeStep | null;
  error?: string;
  /** HTTP requests sent (each is one exchange at the proxy). */
  requests: number;
}

class StepFailure extends Error {
  constructor(
    readonly step: HandshakeStep,
    message: string,
  ) {
    super(message);
  }
}

/** A response whose body has not been read yet. */
interface Reply {
  status: number;
  headers: Headers;
  res: http.IncomingMessage;
  /** Cuts the connection. */
  cancel(): void;
  timedOut(): boolean;
}

interface RpcReply {
  status: number;
  headers: Headers;
  text: string;
  message?: { result?: Record<string, unknown>; error?: { code: number; message: string } };
  sessionId?: string;
}

const SAFELISTED = new Set(["accept", "accept-language", "content-language", "user-agent", "origin"]);

export async function runHostedConnector(connectorUrl: string, opts: HostedConnectorOptions): Promise<HostedConnectorResult> {
  const family = FAMILIES[opts.family];
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const sseTimeoutMs = opts.sseTimeoutMs ?? 1500;
  const protocolVersion = opts.protocolVersion ?? "2025-11-25";
  const accept = opts.accept ?? "application/json, text/event-stream";
  const origin = opts.origin;
  const tls = opts.tls ?? (opts.family === "claude-code" ? "none" : "forwarded");
  const logical = new URL(connectorUrl);
  if (tls !== "none") logical.protocol = "https:";
  const resourceUrl = logical.href;
  const reached: HandshakeStep[] = [];
  let requests = 0;
  const corsAllowed = new Set<string>();

  /** One request; the timeout covers the answer's headers and body. Redirects are not followed. */
  function send(step: HandshakeStep, url: string, init: { method?: string; headers?: Record<string, string>; body?: string; browser?: boolean } = {}): Promise<Reply> {
    const method = init.method ?? "GET";
    const target = new URL(url);
    if (tls !== "none" && target.protocol === "https:" && target.host === logical.host) target.protocol = "http:";
    if (target.protocol !== "http:") return Promise.reject(new StepFailure(step, `cannot dial ${target.href} from a test`));
    const headers: Record<string, string> = { "user-agent": init.browser || origin ? BROWSER_UA : family.userAgent, ...init.headers };
    if (tls === "forwarded") headers["x-forwarded-proto"] = "https";
    if (origin && !init.browser) headers.origin = origin; // a navigation (authorize) sends none
    requests++;
    return new Promise((resolve, reject) => {
      let timedOut = false;
      const req = http.request(target, { method, headers, agent: false });
      const timer = setTimeout(() => {
        timedOut = true;
        req.destroy(new Error(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      req.once("error", (error) => {
        clearTimeout(timer);
        reject(new StepFailure(step, `${method} ${url}: ${error.message}`));
      });
      req.once("response", (res) => {
        res.once("close", () => clearTimeout(timer));
        const h = new Headers();
        for (const [name, value] of Object.entries(res.headers)) for (const v of [value ?? []].flat()) h.append(name, v);
        resolve({ status: res.statusCode!, headers: h, res, cancel: () => req.destroy(), timedOut: () => timedOut });
      });
      req.end(init.body);
    });
  }

  function readText(step: HandshakeStep, reply: Reply): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      reply.res.on("data", (c: Buffer) => chunks.push(c));
      reply.res.once("error", () => {}); // reported by close
      reply.res.once("close", () => {
        if (reply.res.complete) resolve(Buffer.concat(chunks).toString("utf8"));
        else reject(new StepFailure(step, `the ${reply.status} answer was cut${reply.timedOut() ? `: no end within ${timeoutMs} ms` : ""}`));
      });
    });
  }

  async function getJson(step: HandshakeStep, url: string): Promise<{ status: number; json?: Record<string, unknown> }> {
    const res = await send(step, url, { headers: { accept: "application/json" } });
    const text = await readText(step, res);
    try {
      const json = JSON.parse(text) as unknown;
      return { status: res.status, json: res.status === 200 && json && typeof json === "object" ? (json as Record<string, unknown>) : undefined };
    } catch {
      return { status: res.status };
    }
  }

  function corsCheck(step: HandshakeStep, headers: Headers): void {
    const allow = headers.get("access-control-allow-origin");
    if (allow !== origin && allow !== "*") throw new StepFailure(step, `CORS: the answer allows origin ${allow ?? "(none)"}, not ${origin}`);
  }

  const exposed = (headers: Headers, name: string) =>
    !origin || (headers.get("access-control-expose-headers") ?? "").split(",").some((h) => [name, "*"].includes(h.trim().toLowerCase()));

  /** A browser sends a preflight for header names it has not been allowed yet. */
  async function preflight(step: HandshakeStep, url: string, headerNames: string[]): Promise<void> {
    const needed = headerNames.filter((h) => !SAFELISTED.has(h) && !corsAllowed.has(h)).sort();
    if (needed.length === 0) return;
    const res = await send(step, url, { method: "OPTIONS", headers: { "access-control-request-method": "POST", "access-control-request-headers": needed.join(",") } });
    await readText(step, res);
    if (res.status < 200 || res.status > 299) throw new StepFailure(step, `CORS preflight answered ${res.status}`);
    corsCheck(step, res.headers);
    const allowed = (res.headers.get("access-control-allow-headers") ?? "").split(",").map((h) => h.trim().toLowerCase());
    const missing = needed.filter((h) => !allowed.includes(h) && !(allowed.includes("*") && h !== "authorization"));
    if (missing.length) throw new StepFailure(step, `CORS preflight does not allow ${missing.join(", ")} (Access-Control-Allow-Headers: ${allowed.join(", ")})`);
    for (const h of needed) corsAllowed.add(h);
  }

  /** POST one JSON-RPC message to the connector URL; reads the JSON answer or the first SSE event. */
  async function rpc(step: HandshakeStep, message: Record<string, unknown>, extra: Record<string, string>): Promise<RpcReply> {
    const headers = { "content-type": "application/json", accept, ...extra };
    if (origin) await preflight(step, resourceUrl, Object.keys(headers));
    const res = await send(step, resourceUrl, { method: "POST", headers, body: JSON.stringify(message) });
    if (origin) corsCheck(step, res.headers);
    const sessionId = exposed(res.headers, "mcp-session-id") ? (res.headers.get("mcp-session-id") ?? undefined) : undefined;
    const reply: RpcReply = { status: res.status, headers: res.headers, text: "", ...(sessionId ? { sessionId } : {}) };
    const parse = (text: string) => {
      try {
        reply.message = JSON.parse(text) as RpcReply["message"];
      } catch {
        /* not JSON: the caller reports the status and text */
      }
    };
    if (!(res.headers.get("content-type") ?? "").includes("text/event-stream")) {
      reply.text = await readText(step, res);
      parse(reply.text);
      return reply;
    }
    // SSE: the first event carrying a JSON-RPC message must arrive within sseTimeoutMs.
    let sseTimedOut = false;
    const timer = setTimeout(() => {
      sseTimedOut = true;
      res.cancel();
    }, sseTimeoutMs);
    const data = await new Promise<string | undefined>((resolve) => {
      const onData = (chunk: Buffer) => {
        reply.text += chunk.toString("utf8");
        const first = reply.text
          .split(/\r?\n\r?\n/)
          .slice(0, -1)
          .map((event) => event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n"))
          .find(Boolean);
        if (first === undefined) return;
        res.res.off("data", onData); // the answer is in; let the server end its stream, do not cut it
        resolve(first);
      };
      res.res.on("data", onData);
      res.res.once("error", () => {});
      res.res.once("close", () => resolve(undefined));
    });
    clearTimeout(timer);
    if (data !== undefined) {
      parse(data);
      return reply;
    }
    if (sseTimedOut) throw new StepFailure(step, `the SSE answer (${res.status}) sent no event within ${sseTimeoutMs} ms`);
    if (!res.res.complete) throw new StepFailure(step, `the SSE answer (${res.status}) was cut${res.timedOut() ? `: no event within ${timeoutMs} ms` : ""}`);
    return reply;
  }

  const describe = (status: number, text: string) => `${status} ${text.slice(0, 200)}`;

  try {
    // 1. Probe: unauthenticated initialize.
    const initialize = { jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion, capabilities: {}, clientInfo: family.clientInfo } };
    const probe = await rpc("probe", initialize, {});
    let session: RpcReply | undefined;
    let bearer: string | undefined;
    let metadataUrl: string | undefined;
    if (probe.status === 200 && probe.message?.result) {
      session = probe; // authless server: the probe was the initialize
    } else if (probe.status === 401) {
      const challenge = exposed(probe.headers, "www-authenticate") ? probe.headers.get("www-authenticate") : null;
      metadataUrl = /resource_metadata="([^"]*)"/.exec(challenge ?? "")?.[1];
      if (metadataUrl !== undefined && !/^https?:\/\//i.test(metadataUrl)) {
        throw new StepFailure("probe", `resource_metadata ${metadataUrl} is not an absolute URL`);
      }
    } else {
      throw new StepFailure("probe", `probe answered ${describe(probe.status, probe.text)}`);
    }
    reached.push("probe");

    if (!session) {
      // 2. Protected Resource Metadata: the challenge's URL, else the path form, then the root.
      const candidates = [...new Set([metadataUrl, `${logical.origin}/.well-known/oauth-protected-resource${logical.pathname.replace(/\/$/, "")}`, `${logical.origin}/.well-known/oauth-protected-resource`])].filter((u): u is string => !!u);
      const tried: string[] = [];
      let prm: Record<string, unknown> | undefined;
      for (const url of candidates) {
        const got = await getJson("protected_resource_metadata", url);
        tried.push(`${url} → ${got.status}`);
        if (typeof got.json?.resource === "string") {
          prm = got.json;
          break;
        }
      }
      if (!prm) throw new StepFailure("protected_resource_metadata", `no Protected Resource Metadata: ${tried.join("; ")}`);
      if (new URL(String(prm.resource)).href !== resourceUrl) {
        throw new StepFailure("protected_resource_metadata", `PRM resource ${String(prm.resource)} is not the connector URL ${resourceUrl}`);
      }
      const issuer = (prm.authorization_servers as unknown[] | undefined)?.[0];
      if (typeof issuer !== "string") throw new StepFailure("protected_resource_metadata", "PRM has no authorization_servers");
      reached.push("protected_resource_metadata");

      // 3. AS metadata: RFC 8414 then OIDC, path-inserted forms when the issuer has a path.
      const is = new URL(issuer);
      const p = is.pathname.replace(/\/$/, "");
      const asCandidates = p
        ? [`${is.origin}/.well-known/oauth-authorization-server${p}`, `${is.origin}/.well-known/openid-configuration${p}`, `${is.origin}${p}/.well-known/openid-configuration`]
        : [`${is.origin}/.well-known/oauth-authorization-server`, `${is.origin}/.well-known/openid-configuration`];
      let as: Record<string, unknown> | undefined;
      const asTried: string[] = [];
      for (const url of asCandidates) {
        const got = await getJson("authorization_server_metadata", url);
        asTried.push(`${url} → ${got.status}`);
        if (got.json?.issuer !== undefined) {
          as = got.json;
          break;
        }
      }
      const step = "authorization_server_metadata";
      if (!as) throw new StepFailure(step, `no authorization server metadata: ${asTried.join("; ")}`);
      if (as.issuer !== issuer) throw new StepFailure(step, `issuer ${String(as.issuer)} differs from the advertised authorization server ${issuer}`);
      if (!(as.code_challenge_methods_supported as unknown[] | undefined)?.includes("S256")) throw new StepFailure(step, "code_challenge_methods_supported lacks S256");
      if (typeof as.authorization_endpoint !== "string" || typeof as.token_endpoint !== "string") throw new StepFailure(step, "authorization_endpoint or token_endpoint missing");
      if (typeof as.registration_endpoint !== "string") throw new StepFailure(step, "no registration_endpoint (and no client ID metadata document support used)");
      reached.push(step);

      // 4. Dynamic client registration with the family's payload.
      const scopes = (prm.scopes_supported ?? as.scopes_supported) as string[] | undefined;
      const reg = await send("registration", as.registration_endpoint, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({
          client_name: family.clientName,
          redirect_uris: [family.redirectUri],
          grant_types: ["authorization_code", "refresh_token"],
          response_types: ["code"],
          token_endpoint_auth_method: family.authMethod,
        }),
      });
      const regText = await readText("registration", reg);
      let client: { client_id?: string; client_secret?: string } = {};
      try {
        if (reg.status === 200 || reg.status === 201) client = JSON.parse(regText) as typeof client;
      } catch {
        /* reported below */
      }
      if (typeof client.client_id !== "string") throw new StepFailure("registration", `registration answered ${describe(reg.status, regText)}`);
      reached.push("registration");

      // 5-6. Authorize in the user's browser; consent is automatic; only 302/303 is followed.
      const pkce = pkcePair();
      const state = randomBytes(12).toString("base64url");
      const authorizeUrl = new URL(as.authorization_endpoint);
      const query: Record<string, string> = {
        response_type: "code",
        client_id: client.client_id,
        redirect_uri: family.redirectUri,
        code_challenge: pkce.challenge,
        code_challenge_method: "S256",
        state,
        ...(scopes?.length ? { scope: scopes.join(" ") } : {}),
        resource: resourceUrl,
      };
      for (const [k, v] of Object.entries(query)) authorizeUrl.searchParams.set(k, v);
      const auth = await send("authorize", authorizeUrl.href, { browser: true, headers: { accept: "text/html" } });
      const authText = await readText("authorize", auth);
      if (auth.status === 307 || auth.status === 308) throw new StepFailure("callback", `the authorization response is a ${auth.status}; hosted clients need 302 or 303`);
      if (auth.status !== 302 && auth.status !== 303) throw new StepFailure("authorize", `authorize answered ${describe(auth.status, authText)}`);
      reached.push("authorize");
      const callback = new URL(auth.headers.get("location") ?? "", authorizeUrl);
      if (`${callback.origin}${callback.pathname}` !== family.redirectUri) throw new StepFailure("callback", `redirected to ${callback.href}, not ${family.redirectUri}`);
      if (callback.searchParams.get("state") !== state) throw new StepFailure("callback", "state mismatch");
      const error = callback.searchParams.get("error");
      if (error) throw new StepFailure("callback", `authorization error ${error}: ${callback.searchParams.get("error_description") ?? ""}`);
      const code = callback.searchParams.get("code");
      if (!code) throw new StepFailure("callback", "no code in the authorization response");
      reached.push("callback");

      // 7. Token, form-encoded, from the client's backend.
      const form = new URLSearchParams({ grant_type: "authorization_code", code, redirect_uri: family.redirectUri, code_verifier: pkce.verifier, resource: resourceUrl, client_id: client.client_id });
      if (client.client_secret) form.set("client_secret", client.client_secret);
      const tok = await send("token", as.token_endpoint, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" }, body: form.toString() });
      const tokText = await readText("token", tok);
      let tokens: { access_token?: string; token_type?: string } = {};
      try {
        tokens = JSON.parse(tokText) as typeof tokens;
      } catch {
        /* reported below */
      }
      if (tok.status !== 200 || typeof tokens.access_token !== "string" || tokens.token_type?.toLowerCase() !== "bearer") {
        throw new StepFailure("token", `token answered ${describe(tok.status, tokText)}`);
      }
      reached.push("token");

      // 8. Authenticated initialize.
      session = await rpc("initialize", { ...initialize, id: 1 }, { authorization: `Bearer ${tokens.access_token}` });
      if (session.status !== 200 || !session.message?.result) throw new StepFailure("initialize", `initialize answered ${describe(session.status, session.text)}`);
      bearer = tokens.access_token;
    }
    reached.push("initialize");

    // 9-10. initialized, tools/list, one tools/call, with the session id and protocol version.
    const common: Record<string, string> = {
      ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
      ...(session.sessionId ? { "mcp-session-id": session.sessionId } : {}),
      "mcp-protocol-version": String(session.message!.result!.protocolVersion ?? protocolVersion),
    };
    const notified = await rpc("initialized", { jsonrpc: "2.0", method: "notifications/initialized" }, common);
    if (![200, 202, 204].includes(notified.status)) throw new StepFailure("initialized", `notifications/initialized answered ${describe(notified.status, notified.text)}`);
    reached.push("initialized");

    const list = await rpc("list", { jsonrpc: "2.0", id: 2, method: "tools/list", params: {} }, common);
    const tools = list.message?.result?.tools as Array<{ name: string; inputSchema?: { properties?: Record<string, { type?: string }>; required?: string[] } }> | undefined;
    if (list.status !== 200 || !Array.isArray(tools) || tools.length === 0) throw new StepFailure("list", `tools/list answered ${describe(list.status, list.text)}`);
    reached.push("list");

    const tool = tools[0]!;
    const args = Object.fromEntries((tool.inputSchema?.required ?? []).map((name) => [name, `hello from ${opts.family}`]));
    const call = await rpc("tool_call", { jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: tool.name, arguments: args } }, common);
    if (call.status !== 200 || !call.message?.result) throw new StepFailure("tool_call", `tools/call answered ${describe(call.status, call.text)}`);
    reached.push("tool_call");
    return { url: resourceUrl, reached, failedAt: null, requests };
  } catch (error) {
    if (error instanceof StepFailure) return { url: resourceUrl, reached, failedAt: error.step, error: error.message, requests };
    throw error;
  }
}
