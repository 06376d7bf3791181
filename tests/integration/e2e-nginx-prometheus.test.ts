// The production shape end to end, with real Debian binaries on loopback:
//
//   MCP SDK client (a hosted connector) ─▶ nginx (deploy/nginx/mcp-lens.conf, plain HTTP here)
//     ─▶ mcp-lens ─▶ the Coda MCP server (no --public-url) ─▶ the fake Coda API
//   Prometheus (deploy/prometheus.yml + deploy/alerts.yml) ─▶ mcp-lens's admin port, bearer token
//
// It checks what the deploy files promise: the server derives its public https URLs from the
// X-Forwarded-* nginx sets, SSE events pass through nginx as they are written, a connector gets
// through OAuth to working tool calls, mcp-lens records the handshake; and Prometheus, scraping
// that mcp-lens, answers every PromQL expression of the Grafana dashboard and the alert rules
// with data, so neither can drift from the metrics (tests/helpers/promql.ts for the rules).
//
// Needs nginx and prometheus (promtool): skipped with a message where they are missing, a
// failure under CI=true (.ci/run installs them).
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";
import { CALLBACKS, ConnectorLikeProvider, signInWithCodaToken } from "../helpers/connector.js";
import { ROOT, startLensProcess, startServerProcess, tempDir, waitFor, type RunningLens, type RunningServer } from "../helpers/processes.js";
import { conditionSignals, expandGrafanaVariables, vectorSelectors } from "../helpers/promql.js";
import { closedPort } from "../helpers/upstream.js";
import { NGINX, portOpen, startChild, type Child } from "../helpers/children.js";

const PROMETHEUS = "/usr/bin/prometheus";
const PROMTOOL = "/usr/bin/promtool";
const MISSING = [NGINX, PROMETHEUS, PROMTOOL].filter((p) => !existsSync(p));
const IN_CI = process.env.CI === "true";
if (MISSING.length > 0 && !IN_CI) {
  console.warn(`end-to-end nginx + Prometheus test skipped: ${MISSING.join(", ")} missing (apt-get install nginx prometheus); CI=true makes this a failure`);
}

const DEPLOY = path.join(ROOT, "deploy");
const CODA_TOKEN = "0c7a51e2-3f4b-4d5e-8a9b-e2e-nginx-token";
const CODA_USER = { name: "Ada Lovelace", loginId: "ada@example.com" };
const ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef";

/**
 * The public URL: nginx passes `Host` / `X-Forwarded-Host` as `$host` (no port, as for TLS on
 * 443) and here `X-Forwarded-Proto: https`, so the server advertises https://127.0.0.1.
 */
const PUBLIC = "https://127.0.0.1";

/** Replaces `from` in `text`, failing loudly when a deploy file no longer has it. */
function substitute(text: string, from: string | RegExp, to: string, file: string): string {
  const found = typeof from === "string" ? text.includes(from) : from.test(text);
  if (!found) throw new Error(`${file} no longer contains ${String(from)}: update the end-to-end test`);
  return typeof from === "string" ? text.split(from).join(to) : text.replace(new RegExp(from.source, from.flags.includes("g") ? from.flags : from.flags + "g"), to);
}

// ---------------------------------------------------------------------------------------------
// nginx: the deploy example's own directives, with only what a loopback test must change.

/** Top-level statements of an nginx file (inside `http {}`): `name args;` or `name args { … }`. */
function nginxStatements(conf: string): string[] {
  const text = conf.replace(/("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')|#[^\n]*/g, (whole, quoted?: string) => quoted ?? "");
  const statements: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"' || c === "'") {
      const end = text.indexOf(c, i + 1);
      i = end === -1 ? text.length : end;
    } else if (c === "{") depth++;
    else if (c === "}" && --depth === 0) {
      statements.push(text.slice(start, i + 1).trim());
      start = i + 1;
    } else if (c === ";" && depth === 0) {
      statements.push(text.slice(start, i + 1).trim());
      start = i + 1;
    }
  }
  return statements.filter(Boolean);
}

/**
 * The test's nginx.conf from deploy/nginx/mcp-lens.conf: its map, its upstream (pointed at the
 * test's mcp-lens) and its TLS server block with the same location and proxy settings — only
 * `listen` becomes a loopback port without TLS (the ssl_* lines go), and X-Forwarded-Proto is
 * `https`, as `$scheme` is behind the TLS this test cannot terminate, and X-Accel-Buffering from
 * upstream is ignored. The port-80 server (ACME and the redirect to https) is left out.
 */
function nginxConf(opts: { dir: string; port: number; upstream: string }): string {
  const file = path.join(DEPLOY, "nginx/mcp-lens.conf");
  const deployConf = readFileSync(file, "utf8");
  const kept: string[] = [];
  let tlsServers = 0;
  for (const statement of nginxStatements(deployConf)) {
    if (/^upstream\b/.test(statement)) {
      kept.push(substitute(statement, /\bserver\s+[^;]+;/, `server ${opts.upstream};`, file));
    } else if (/^server\s*\{/.test(statement)) {
      if (!/\blisten\s+[^;]*\b443\b/.test(statement)) continue; // the plain-HTTP redirect server
      tlsServers++;
      let server = statement.replace(/^\s*listen\s+[^;]*;\s*$/gm, "").replace(/^\s*ssl_\w+\s+[^;]*;\s*$/gm, "");
      server = server.replace(/^server\s*\{/, `server {\n    listen 127.0.0.1:${opts.port};`);
      server = substitute(server, /proxy_set_header\s+X-Forwarded-Proto\s+[^;]+;/i, "proxy_set_header X-Forwarded-Proto https;", file);
      server = server.replace(/(proxy_set_header\s+X-Forwarded-Port\s+)\$server_port;/i, "$1443;");
      // mcp-lens (and the MCP SDK) send X-Accel-Buffering: no on SSE responses, which turns nginx's
      // buffering off whatever the config says: ignored here, so the SSE test checks that the
      // deploy config's own settings deliver events unbuffered.
      server = substitute(server, /(proxy_pass\s[^;]+;)/, "$1\n        proxy_ignore_headers X-Accel-Buffering;", file);
      kept.push(server);
    } else {
      kept.push(statement);
    }
  }
  if (tlsServers !== 1) throw new Error(`${file}: expected one server block listening on 443, found ${tlsServers}`);
  const d = opts.dir;
  return [
    // One process, no privilege drop to `nobody` (which could not read this private temp dir
    // when the tests run as root); the proxying is the same as with workers.
    "master_process off;",
    `error_log ${d}/error.log info;`,
    "events { worker_connections 256; }",
    "http {",
    `  access_log ${d}/access.log;`,
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${d}/${t}_temp;`),
    ...kept.map((s) => s.replace(/^/gm, "  ")),
    "}",
    "",
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/** deploy/prometheus.yml with the credentials file at `tokenFile` (and anything else swapped). */
function prometheusConf(tokenFile: string, extra: Array<[string | RegExp, string]> = []): string {
  const file = path.join(DEPLOY, "prometheus.yml");
  let text = substitute(readFileSync(file, "utf8"), /credentials_file:\s*\S+/, `credentials_file: ${tokenFile}`, file);
  for (const [from, to] of extra) text = substitute(text, from, to, file);
  return text;
}

interface PromResult {
  status: "success" | "error";
  error?: string;
  data?: { resultType: string; result: unknown[] | unknown };
}

// ---------------------------------------------------------------------------------------------

describe.skipIf(MISSING.length > 0 && !IN_CI)("end to end: nginx → mcp-lens → Coda MCP server, scraped by Prometheus", () => {
  const tmp = tempDir("mcp-lens-e2e-");
  let coda: FakeCoda;
  let server: RunningServer;
  let lens: RunningLens;
  let nginx: Child | undefined;
  let prometheus: Child | undefined;
  /** nginx's loopback address, where the client's requests really go. */
  let dialled: string;
  let promUrl: string;
  let client: Client | undefined;
  let transport: StreamableHTTPClientTransport;
  let provider: ConnectorLikeProvider;

  /**
   * The TLS front. Hosted connectors dial https://<host>/mcp; a front proxy ends TLS and nginx
   * forwards with X-Forwarded-Proto: https. There is no TLS here, so this fetch does what the
   * front would: a request for the public https origin goes to nginx's plain-HTTP loopback port,
   * path and query unchanged. nginx sees Host 127.0.0.1:PORT, and the deploy config passes it on
   * as `$host`, without the port, exactly as for a public URL on 443: so the public origin is
   * https://127.0.0.1, not https://127.0.0.1:PORT. Anything that would leave loopback is refused.
   */
  const viaTlsFront = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.hostname !== "127.0.0.1") throw new Error(`the test client only talks to 127.0.0.1, not ${url.href}`);
    const target = url.origin === PUBLIC ? dialled + url.pathname + url.search : url.href;
    return input instanceof Request ? fetch(new Request(target, input), init) : fetch(target, init);
  };

  beforeAll(async () => {
    if (MISSING.length > 0) throw new Error(`CI=true and ${MISSING.join(", ")} missing: apt-get install nginx prometheus`);
    coda = await startFakeCoda({ tokens: { [CODA_TOKEN]: CODA_USER } });
    // No --public-url: the server derives its URLs from the X-Forwarded-* headers.
    server = await startServerProcess({ dbPath: `${tmp.dir}/server.db`, codaApiBase: coda.url });
    lens = await startLensProcess({
      upstream: server.url,
      dbPath: `${tmp.dir}/lens.db`,
      args: ["--flush-interval", "20", "--admin-token", ADMIN_TOKEN],
    });

    const nginxPort = await closedPort();
    const nginxDir = path.join(tmp.dir, "nginx");
    mkdirSync(nginxDir);
    writeFileSync(path.join(nginxDir, "nginx.conf"), nginxConf({ dir: nginxDir, port: nginxPort, upstream: new URL(lens.url).host }));
    nginx = startChild(NGINX, ["-p", nginxDir, "-c", path.join(nginxDir, "nginx.conf"), "-e", path.join(nginxDir, "error.log"), "-g", `daemon off; pid ${nginxDir}/nginx.pid;`]);
    dialled = `http://127.0.0.1:${nginxPort}`;
    await waitFor(async () => nginx!.child.exitCode !== null || (await portOpen(nginxPort)), "nginx to listen", 10_000);
    if (nginx.child.exitCode !== null) throw new Error(`nginx exited: ${nginx.output.join("")}${readFileSync(path.join(nginxDir, "error.log"), "utf8")}`);

    // Prometheus on deploy/prometheus.yml and alerts.yml, scraping and evaluating every second.
    const promPort = await closedPort();
    const promDir = path.join(tmp.dir, "prometheus");
    mkdirSync(promDir);
    writeFileSync(path.join(promDir, "admin-token"), ADMIN_TOKEN + "\n", { mode: 0o600 });
    writeFileSync(
      path.join(promDir, "prometheus.yml"),
      prometheusConf(path.join(promDir, "admin-token"), [
        [/scrape_interval:\s*\S+/, "scrape_interval: 1s"],
        [/scrape_timeout:\s*\S+/, "scrape_timeout: 1s"],
        [/evaluation_interval:\s*\S+/, "evaluation_interval: 1s"],
        ["mcp-lens:9464", new URL(lens.adminUrl).host],
      ]),
    );
    copyFileSync(path.join(DEPLOY, "alerts.yml"), path.join(promDir, "alerts.yml"));
    prometheus = startChild(PROMETHEUS, [
      `--config.file=${promDir}/prometheus.yml`,
      `--storage.tsdb.path=${promDir}/data`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      "--log.level=warn",
    ]);
    promUrl = `http://127.0.0.1:${promPort}`;
    await waitFor(
      async () => prometheus!.child.exitCode !== null || (await fetch(`${promUrl}/-/ready`).then((r) => r.ok, () => false)),
      "Prometheus to be ready",
      15_000,
    );
    if (prometheus.child.exitCode !== null) throw new Error(`prometheus exited: ${prometheus.output.join("")}`);
  });

  afterAll(async () => {
    await client?.close().catch(() => {});
    await prometheus?.stop();
    await nginx?.stop();
    await lens?.stop();
    await server?.stop();
    await coda?.close();
    tmp.cleanup();
  });

  async function promQuery(query: string): Promise<PromResult> {
    const res = await fetch(`${promUrl}/api/v1/query`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ query }),
    });
    return (await res.json()) as PromResult;
  }

  it("passes promtool check config and check rules on the deploy files", () => {
    const checkDir = path.join(tmp.dir, "promtool");
    mkdirSync(checkDir);
    // The credentials file must exist for `check config`: a copy names one in the temp dir.
    writeFileSync(path.join(checkDir, "admin-token"), "token\n", { mode: 0o600 });
    writeFileSync(path.join(checkDir, "prometheus.yml"), prometheusConf(path.join(checkDir, "admin-token")));
    copyFileSync(path.join(DEPLOY, "alerts.yml"), path.join(checkDir, "alerts.yml"));
    const config = spawnSync(PROMTOOL, ["check", "config", path.join(checkDir, "prometheus.yml")], { encoding: "utf8" });
    expect(config.stdout + config.stderr).toContain("SUCCESS");
    expect(config.status, config.stdout + config.stderr).toBe(0);
    const rules = spawnSync(PROMTOOL, ["check", "rules", path.join(DEPLOY, "alerts.yml")], { encoding: "utf8" });
    expect(rules.status, rules.stdout + rules.stderr).toBe(0);
    expect(rules.stdout).toMatch(/SUCCESS: [1-9]\d* rules found/);
  });

  it("advertises the public https URL, derived from the X-Forwarded-* nginx sets", async () => {
    const probe = await viaTlsFront(`${PUBLIC}/mcp`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "probe", version: "1" } } }),
    });
    expect(probe.status).toBe(401);
    expect(probe.headers.get("www-authenticate")).toContain(`resource_metadata="${PUBLIC}/.well-known/oauth-protected-resource/mcp"`);
    const prm = (await (await viaTlsFront(`${PUBLIC}/.well-known/oauth-protected-resource/mcp`)).json()) as { resource: string; authorization_servers: string[] };
    expect(prm.resource).toBe(`${PUBLIC}/mcp`);
    expect(prm.authorization_servers).toEqual([PUBLIC]);
    const as = (await (await viaTlsFront(`${PUBLIC}/.well-known/oauth-authorization-server`)).json()) as Record<string, string>;
    expect(as.issuer).toBe(PUBLIC);
    for (const endpoint of ["authorization_endpoint", "token_endpoint", "registration_endpoint"]) expect(as[endpoint]).toMatch(/^https:\/\/127\.0\.0\.1\//);
  });

  it("takes a hosted connector through the full OAuth flow via nginx, and its tool calls work", async () => {
    provider = new ConnectorLikeProvider(CALLBACKS.claude, "none", "Claude");
    const mcpUrl = new URL(`${PUBLIC}/mcp`);
    const probe = new Client({ name: "Anthropic", version: "1.0.0" });
    await expect(probe.connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: viaTlsFront }))).rejects.toThrow(UnauthorizedError);
    expect(provider.authorizationUrl!.origin).toBe(PUBLIC);
    // The user's browser goes through the same TLS front to the sign-in page.
    const consent = await signInWithCodaToken(new URL(dialled + provider.authorizationUrl!.pathname + provider.authorizationUrl!.search), CODA_TOKEN);
    expect(consent.status).toBe(302);
    const callback = new URL(consent.headers.get("location")!);
    expect(callback.origin + callback.pathname).toBe(CALLBACKS.claude);
    expect(callback.searchParams.get("iss")).toBe(PUBLIC);
    transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: viaTlsFront });
    await transport.finishAuth(callback.searchParams.get("code")!);
    client = new Client({ name: "Anthropic", version: "1.0.0" });
    await client.connect(transport);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(expect.arrayContaining(["whoami", "list_docs"]));
    const whoami = await client.callTool({ name: "whoami", arguments: {} });
    expect(JSON.stringify(whoami.content)).toContain(CODA_USER.name);
    expect((await client.callTool({ name: "list_docs", arguments: {} })).isError).toBeFalsy();
  });

  it("passes SSE events through nginx the moment they are written, not when the stream ends", async () => {
    // A timed upstream: Coda answers the next API call with 429 Retry-After: 1, so one of the
    // two tool calls in this batch is answered ~1 s after the other, on the same SSE response.
    // Buffering anywhere (nginx, gzip) would hold the first event back until the stream ends.
    coda.failNext(1, 429, { retryAfter: "1" });
    const started = performance.now();
    const res = await fetch(`${dialled}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${provider.tokens()!.access_token}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": transport.sessionId!,
        "mcp-protocol-version": transport.protocolVersion!,
      },
      body: JSON.stringify([
        { jsonrpc: "2.0", id: 101, method: "tools/call", params: { name: "whoami", arguments: {} } },
        { jsonrpc: "2.0", id: 102, method: "tools/call", params: { name: "list_docs", arguments: {} } },
      ]),
      signal: AbortSignal.timeout(10_000),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const arrivals = new Map<number, number>();
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of res.body!) {
      const at = performance.now() - started;
      buffered += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffered.indexOf("\n\n")) !== -1) {
        const data = buffered.slice(0, end).split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
        buffered = buffered.slice(end + 2);
        if (data) arrivals.set((JSON.parse(data) as { id: number }).id, at);
      }
    }
    const ended = performance.now() - started;
    expect([...arrivals.keys()].sort()).toEqual([101, 102]);
    const [first, second] = [...arrivals.values()].sort((a, b) => a - b) as [number, number];
    expect(second).toBeGreaterThan(900); // the retried call really waited
    expect(first).toBeLessThan(second - 500); // and the other event did not wait for it
    expect(first).toBeLessThan(ended - 500);
  });

  it("recorded one succeeded claude.ai handshake, every exchange arriving through nginx as https", async () => {
    await client!.close();
    client = undefined;
    const db = new Database(lens.dbPath, { readonly: true });
    try {
      const succeeded = await waitFor(() => {
        const rows = db.prepare("SELECT client_family, outcome FROM handshakes WHERE outcome = 'succeeded'").all() as Array<{ client_family: string }>;
        return rows.length > 0 ? rows : null;
      }, "the succeeded handshake");
      expect(succeeded).toEqual([{ client_family: "claude.ai", outcome: "succeeded" }]);
      const exchanges = db.prepare("SELECT id, req_headers FROM exchanges").all() as Array<{ id: number; req_headers: string }>;
      expect(exchanges.length).toBeGreaterThan(8);
      for (const e of exchanges) {
        const headers = (JSON.parse(e.req_headers) as Array<[string, string]>).map(([k, v]) => [k.toLowerCase(), v]);
        expect(headers, `exchange ${e.id}`).toContainEqual(["x-forwarded-proto", "https"]);
      }
    } finally {
      db.close();
    }
  });

  it("records a failing handshake too: the MCP server restarts while a connector is at its token step", async () => {
    // The failure metrics (handshakes failed by step and code, upstream errors by reason, the 5xx
    // share) need one failure for the queries below to return data: a ChatGPT connector signs in,
    // the server goes down before the token request (mcp-lens answers 502 upstream_refused), and
    // comes back on the same port.
    const failing = new ConnectorLikeProvider(CALLBACKS.chatgpt, "none", "ChatGPT");
    const mcpUrl = new URL(`${PUBLIC}/mcp`);
    const probe = new Client({ name: "openai-mcp", version: "1.0.0" });
    await expect(probe.connect(new StreamableHTTPClientTransport(mcpUrl, { authProvider: failing, fetch: viaTlsFront }))).rejects.toThrow(UnauthorizedError);
    const consent = await signInWithCodaToken(new URL(dialled + failing.authorizationUrl!.pathname + failing.authorizationUrl!.search), CODA_TOKEN);
    expect(consent.status).toBe(302);
    const code = new URL(consent.headers.get("location")!).searchParams.get("code")!;
    const port = new URL(server.url).port;
    await server.stop();
    // The connector's backend redeems the code, as the SDK's finishAuth would after discovery.
    const refused = await viaTlsFront(`${PUBLIC}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code,
        code_verifier: failing.codeVerifier(),
        redirect_uri: CALLBACKS.chatgpt,
        client_id: failing.clientInformation()!.client_id,
        resource: `${PUBLIC}/mcp`,
      }),
    });
    expect(refused.status).toBe(502);
    expect(refused.headers.get("x-mcp-lens-error")).toBe("upstream_refused");
    server = await startServerProcess({ dbPath: `${tmp.dir}/server.db`, codaApiBase: coda.url, args: ["--port", port] });

    const db = new Database(lens.dbPath, { readonly: true });
    try {
      const token = await waitFor(() => db.prepare("SELECT status, upstream_error FROM exchanges WHERE kind = 'token' AND status = 502").get(), "the token exchange");
      expect(token).toEqual({ status: 502, upstream_error: "upstream_refused" });
      const failed = await waitFor(() => {
        const rows = db.prepare("SELECT client_family, failed_step, first_code FROM handshakes WHERE outcome = 'failed'").all();
        return rows.length > 0 ? rows : null;
      }, "the failed handshake");
      expect(failed).toEqual([{ client_family: "chatgpt", failed_step: "token", first_code: "upstream_unreachable" }]);
      expect(db.prepare("SELECT count(*) AS n FROM handshakes WHERE outcome = 'succeeded'").get()).toEqual({ n: 1 });
    } finally {
      db.close();
    }
  });

  it("is scraped by Prometheus with the bearer token, and every dashboard and alert query returns data", async () => {
    // The target is up: a wrong or missing token would be a 401 and `up` 0.
    const target = await waitFor(async () => {
      const body = (await (await fetch(`${promUrl}/api/v1/targets`)).json()) as { data: { activeTargets: Array<{ labels: { job: string }; health: string; lastError: string }> } };
      return body.data.activeTargets.find((t) => t.labels.job === "mcp-lens" && t.health !== "unknown");
    }, "the first scrape of mcp-lens", 10_000);
    expect(target.lastError).toBe("");
    expect(target.health).toBe("up");

    // What to evaluate, and what each must give:
    //  - every target of every dashboard panel, Grafana's variables replaced ($__rate_interval
    //    → 1m, $__range → 5m): it must parse and return a non-empty result;
    //  - every alert rule, as Prometheus loaded it from alerts.yml: the whole condition must
    //    evaluate (it is empty while nothing is wrong, which is fine), and each of its signals —
    //    the condition cut at and/or/unless with the threshold comparisons removed, `a / b > 0.05
    //    and c >= 5` → `a / b`, `c` (conditionSignals) — must return data, so a label mismatch
    //    between the two sides of a ratio is caught too;
    //  - every vector selector in all of them, with its label matchers (vectorSelectors): it
    //    must return data on its own, so no metric, label or label value is misspelt, and an
    //    `or vector(0)` cannot hide one.
    const dashboard = JSON.parse(readFileSync(path.join(DEPLOY, "grafana/dashboards/mcp-lens.json"), "utf8")) as {
      schemaVersion: number;
      templating: { list: Array<{ name: string; type: string }> };
      panels: Panel[];
    };
    type Panel = { title: string; type: string; datasource?: { uid: string }; targets?: Array<{ expr: string; refId: string; datasource?: { uid: string } }>; panels?: Panel[] };
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    // A query variable would need its own evaluation here: teach the test before adding one.
    expect(dashboard.templating.list.filter((v) => v.type === "query")).toEqual([]);
    const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
    const checks: Array<{ what: string; expr: string; needsData: boolean }> = [];
    for (const panel of panels.filter((p) => p.type !== "row")) {
      expect(panel.datasource?.uid, `panel "${panel.title}"`).toBe("prometheus");
      expect(panel.targets?.length, `panel "${panel.title}" has queries`).toBeGreaterThan(0);
      for (const t of panel.targets!) {
        expect(t.datasource?.uid, `panel "${panel.title}" ${t.refId}`).toBe("prometheus");
        const expr = expandGrafanaVariables(t.expr);
        checks.push({ what: `panel "${panel.title}" ${t.refId}`, expr, needsData: true });
        for (const s of vectorSelectors(expr)) checks.push({ what: `panel "${panel.title}" ${t.refId} selector`, expr: s, needsData: true });
      }
    }

    // The rules as Prometheus loaded them, each evaluated at least once without error.
    type Rule = { name: string; query: string; health: string; lastError?: string; lastEvaluation: string };
    const rules = await waitFor(async () => {
      const body = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: Array<{ rules: Rule[] }> } };
      const all = body.data.groups.flatMap((g) => g.rules);
      return all.length > 0 && all.every((r) => !r.lastEvaluation.startsWith("0001")) ? all : null;
    }, "the alert rules to be evaluated", 10_000);
    const promtoolCount = Number(/SUCCESS: (\d+) rules found/.exec(spawnSync(PROMTOOL, ["check", "rules", path.join(DEPLOY, "alerts.yml")], { encoding: "utf8" }).stdout)?.[1]);
    expect(rules.length).toBe(promtoolCount);
    for (const rule of rules) {
      expect(rule.health, `${rule.name}: ${rule.lastError}`).toBe("ok");
      checks.push({ what: `alert ${rule.name}`, expr: rule.query, needsData: false });
      for (const s of conditionSignals(rule.query)) checks.push({ what: `alert ${rule.name} signal`, expr: s, needsData: true });
      for (const s of vectorSelectors(rule.query)) checks.push({ what: `alert ${rule.name} selector`, expr: s, needsData: true });
    }

    // rate() and increase() need two scrapes of each series: poll, bounded, until all have data.
    const pending = new Map(checks.map((c) => [`${c.what}: ${c.expr}`, c]));
    const errors: string[] = [];
    const deadline = Date.now() + 20_000;
    while (pending.size > 0 && Date.now() < deadline) {
      await Promise.all(
        [...pending].map(async ([key, check]) => {
          const answer = await promQuery(check.expr);
          if (answer.status !== "success") {
            errors.push(`${key}\n    → ${answer.error}`);
            pending.delete(key);
          } else if (!check.needsData || !Array.isArray(answer.data!.result) || answer.data!.result.length > 0) {
            pending.delete(key);
          }
        }),
      );
      if (pending.size > 0) await new Promise((r) => setTimeout(r, 500));
    }
    expect(errors, "queries Prometheus refused").toEqual([]);
    expect([...pending.keys()], "queries without data").toEqual([]);
    expect(checks.length).toBeGreaterThan(100);

    // The era and registration labels reach Prometheus as the analyser stored each handshake (the
    // "Eras and registration" panels group by them); whatever era it found, the plumbing holds.
    const db = new Database(lens.dbPath, { readonly: true });
    const ended = db.prepare("SELECT client_family, era, registration, outcome FROM handshakes WHERE outcome IN ('succeeded', 'failed')").all() as Array<Record<string, string>>;
    db.close();
    expect(ended.map((h) => h.outcome).sort()).toEqual(["failed", "succeeded"]);
    for (const h of ended) {
      const selector = `mcp_lens_handshakes_${h.outcome}_total{client_family="${h.client_family}",era="${h.era}",registration="${h.registration}"}`;
      const answer = await promQuery(selector);
      expect(answer.status, selector).toBe("success");
      expect((answer.data!.result as unknown[]).length, selector).toBe(1);
    }

    // And the alert meant for it fires on the failed handshake (no `for:`, a brand-new series).
    const alert = await waitFor(async () => {
      const body = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: Array<{ labels: Record<string, string>; state: string }> } };
      return body.data.alerts.find((a) => a.labels.alertname === "McpLensHandshakeFailures" && a.state === "firing");
    }, "McpLensHandshakeFailures to fire", 10_000);
    expect(alert.labels).toMatchObject({ client_family: "chatgpt", failed_step: "token", code: "upstream_unreachable", severity: "warning" });
  });
});

describe("PromQL reading of the end-to-end test", () => {
  it("finds the vector selectors, skipping functions, label lists, ranges and strings", () => {
    expect(vectorSelectors('histogram_quantile(0.95, sum by (le, kind) (rate(a_bucket{kind=~"x|y"}[1m])))')).toEqual(['a_bucket{kind=~"x|y"}']);
    expect(vectorSelectors("x - y > 0 and on (instance) sum by (instance) (increase(z[10m])) == 0")).toEqual(["x", "y", "z"]);
    expect(vectorSelectors("(sum(rate(r{s=~\"5..\"}[1m])) or sum(rate(r[1m])) * 0) / sum(rate(r[1m]))")).toEqual(['r{s=~"5.."}', "r"]);
    expect(vectorSelectors("f unless f offset 15m")).toEqual(["f"]);
    expect(vectorSelectors('count_values("v", b) or vector(1)')).toEqual(["b"]);
  });

  it("cuts an alert condition into its signals", () => {
    expect(conditionSignals("sum by (k) (rate(a[5m])) / sum by (k) (rate(b[5m])) > 0.05 and sum by (k) (increase(b[5m])) >= 5")).toEqual([
      "sum by (k) (rate(a[5m])) / sum by (k) (rate(b[5m]))",
      "sum by (k) (increase(b[5m]))",
    ]);
    expect(conditionSignals("increase(f[15m]) > 0 or (f unless f offset 15m)")).toEqual(["increase(f[15m])", "f"]);
    expect(conditionSignals("x - y > 0 and on (instance, job) sum by (instance, job) (increase(z[10m])) == 0")).toEqual(["x - y", "sum by (instance, job) (increase(z[10m]))"]);
    expect(conditionSignals('up{job="mcp-lens"} == 0')).toEqual(['up{job="mcp-lens"}']);
    expect(conditionSignals("(a > bool 1)")).toEqual(["a"]);
    expect(conditionSignals("sum(a > 0)")).toEqual(["sum(a > 0)"]);
  });

  it("replaces Grafana's variables and refuses unknown ones", () => {
    expect(expandGrafanaVariables("rate(a[$__rate_interval]) + increase(a[${__range}])")).toBe("rate(a[1m]) + increase(a[5m])");
    expect(() => expandGrafanaVariables('a{instance="$instance"}')).toThrow(/\$instance/);
  });
});
