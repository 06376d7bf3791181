// The canary suite: every carrier of a secret seen in real traffic goes through the real binary
// (request and response, headers, query, path, bodies of each content type and encoding, SSE,
// a WebSocket upgrade), then every place a record can reach is scanned: the DB file and its WAL,
// the process's logs, a /live subscriber's messages, and `inspector export` HAR and curl output.
import { randomBytes } from "node:crypto";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { promisify } from "node:util";
import zlib from "node:zlib";
import BetterSqlite3 from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { keepArtifact } from "../helpers/artifacts.js";
import { ROOT, runCli, startLensProcess, tempDir, waitFor, type RunningLens } from "../helpers/processes.js";
import { request, startUpstream, type TestUpstream } from "../helpers/upstream.js";

const INSPECTOR = path.join(ROOT, "dist/inspector/cli.js");
const run = promisify(execFile);

/** Every canary starts with CANARY (the global teardown scans for it); the tag says which carrier. */
const planted = new Map<string, string>();
function canary(tag: string): string {
  const value = `CANARY${tag}${randomBytes(10).toString("hex")}`;
  planted.set(tag, value);
  return value;
}
const b64url = (s: string) => Buffer.from(s).toString("base64url");
/** A JWT whose signature segment carries the canary, so a leak of any piece of it is found. */
function jwt(tag: string): string {
  const value = `${b64url('{"alg":"RS256","typ":"JWT"}')}.${b64url('{"sub":"user-1","aud":"mcp"}')}.${canary(tag)}`;
  planted.set(tag, value);
  return value;
}

const C = {
  cfJwt: jwt("cfjwt"),
  iapJwt: jwt("iapjwt"),
  xJwt: jwt("xjwt"),
  wsProto: canary("wsproto"),
  multipartPassword: canary("mppassword"),
  multipartSecret: canary("mpsecret"),
  privateKey: canary("privatekey"),
  passphrase: canary("passphrase"),
  credentials: canary("credentials"),
  accessKey: canary("accesskey"),
  jsonJwt: canary("jsonjwt"),
  queryKey: canary("querykey"),
  querySig: canary("querysig"),
  amzSig: canary("amzsig"),
  idTokenHint: canary("idtokenhint"),
  userinfo: canary("userinfo"),
  targetFragment: canary("targetfragment"),
  locationUserinfo: canary("locuserinfo"),
  locationFragment: canary("locfragment"),
  formPostCode: canary("formpostcode"),
  refreshCode: canary("refreshcode"),
  metaRefreshCode: canary("metarefreshcode"),
  passwordText: canary("passwordtext"),
  sseSplit: canary("ssesplit"),
  zstdBody: canary("zstdbody"),
  gzipGzip: canary("gzipgzip"),
  compressBody: canary("compressbody"),
  gzipJson: canary("gzipjson"),
  deflateForm: canary("deflateform"),
  basicInBody: canary("basicinbody"),
  pathSecret: canary("pathsecret"),
  customHeader: canary("customheader"),
  customField: canary("customfield"),
  responseJwt: jwt("responsejwt"),
  responseKey: canary("responsekey"),
};

describe("redaction of every carrier, end to end", () => {
  const tmp = tempDir();
  const dbPath = `${tmp.dir}/lens.db`;
  let upstream: TestUpstream;
  let wss: WebSocketServer;
  let lens: RunningLens;
  const live: string[] = [];
  let subscriber: WebSocket;

  beforeAll(async () => {
    upstream = await startUpstream((req, res) => respond(req.url ?? "/", res));
    // The upstream takes WebSocket upgrades too: the upgrade's headers are what is recorded.
    wss = new WebSocketServer({ server: upstream.server, handleProtocols: () => "mcp" });
    wss.on("connection", (ws) => ws.close());
    lens = await startLensProcess({
      upstream: upstream.url,
      dbPath,
      args: ["--flush-interval", "20", "--log-exchanges", "--redact-paths", "^/mcp/s/([^/]+)", "--redact-headers", "X-Tenant-Session"],
      env: { MCP_LENS_REDACT_FIELDS: "tenant_pin" },
    });
    subscriber = new WebSocket(lens.adminUrl.replace("http", "ws") + "/live");
    subscriber.on("message", (data) => live.push(String(data)));
    await new Promise((resolve, reject) => {
      subscriber.once("open", resolve);
      subscriber.once("error", reject);
    });
    await waitFor(() => live.length > 0, "the live feed's hello");
    await sendTraffic().catch((error: Error) => {
      throw new Error(`${error.message}; the proxy said: ${lens.stderr.join("").slice(0, 2000)}`);
    });
  }, 30_000);

  afterAll(async () => {
    subscriber?.close();
    await lens?.stop();
    await upstream?.close();
    wss?.close();
    keepArtifact("redaction-carriers-live.jsonl", live.join("\n"));
    tmp.cleanup();
  });

  function respond(url: string, res: http.ServerResponse): void {
    const route = url.split("?")[0]!;
    if (route === "/authorize") {
      // OAuth response_mode=form_post and the redirects that carry the code.
      res.writeHead(200, {
        "content-type": "text/html",
        refresh: `0; url=https://client.example/cb?code=${C.refreshCode}&state=s1`,
        location: `https://me:${C.locationUserinfo}@client.example/cb#access_token=${C.locationFragment}&token_type=bearer`,
      });
      res.end(
        `<html><head><meta http-equiv="refresh" content="0;url=https://client.example/cb?code=${C.metaRefreshCode}"></head>` +
          `<body onload="document.forms[0].submit()"><form method="post" action="https://client.example/cb">` +
          `<input type="hidden" name="code" value="${C.formPostCode}"/><input type="hidden" name="state" value="s1"/></form></body></html>`,
      );
      return;
    }
    if (route === "/sse") {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(`event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"access_token":\ndata: "${C.sseSplit}"}}\n\n`);
      return;
    }
    if (route === "/zstd") {
      // The zstd magic number, then bytes as a raw block would hold them: not decodable here.
      res.writeHead(200, { "content-type": "application/json", "content-encoding": "zstd" });
      res.end(Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58]), Buffer.from(`{"note":"${C.zstdBody}"}`)]));
      return;
    }
    if (route === "/gzip-gzip") {
      res.writeHead(200, { "content-type": "application/json", "content-encoding": "gzip, gzip" });
      res.end(zlib.gzipSync(zlib.gzipSync(`{"refresh_token":"${C.gzipGzip}"}`)));
      return;
    }
    if (route === "/compress") {
      res.writeHead(200, { "content-type": "text/plain", "content-encoding": "compress" });
      res.end(`note: ${C.compressBody}`);
      return;
    }
    if (route === "/gzip-json") {
      res.writeHead(200, { "content-type": "application/json", "content-encoding": "gzip" });
      res.end(zlib.gzipSync(JSON.stringify({ id_token: C.responseJwt, api: { privateKey: C.gzipJson }, key: C.responseKey })));
      return;
    }
    if (route === "/text") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(`user: alice\npassword: ${C.passwordText}\nsee also Authorization: Basic ${C.basicInBody}\n`);
      return;
    }
    if (route.startsWith("/mcp/s/")) {
      res.writeHead(302, { location: `${route}?step=2`, "content-type": "application/json" });
      res.end(JSON.stringify({ next: `https://lens.example${route}` }));
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end("{}");
  }

  async function sendTraffic(): Promise<void> {
    const base = lens.url;
    await request(`${base}/identity`, {
      headers: {
        "Cf-Access-Jwt-Assertion": C.cfJwt,
        "X-Goog-Iap-Jwt-Assertion": C.iapJwt,
        "X-Jwt-Assertion": C.xJwt,
        "X-Tenant-Session": C.customHeader,
      },
    });
    const boundary = "----lensboundary42";
    await request(`${base}/login`, {
      method: "POST",
      headers: { "content-type": `multipart/form-data; boundary=${boundary}` },
      body:
        `--${boundary}\r\nContent-Disposition: form-data; name="username"\r\n\r\nalice\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="password"\r\n\r\n${C.multipartPassword}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="client_secret"\r\n\r\n${C.multipartSecret}\r\n--${boundary}--\r\n`,
    });
    await request(`${base}/keys`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ privateKey: C.privateKey, passphrase: C.passphrase, credentials: C.credentials, access_key: C.accessKey, jwt: C.jsonJwt, tenant_pin: C.customField }),
    });
    await request(`${base}/download?key=${C.queryKey}&sig=${C.querySig}&X-Amz-Signature=${C.amzSig}&id_token_hint=${C.idTokenHint}&state=kept-state`);
    // Request targets a hostile or careless client may send: absolute form with userinfo, a fragment.
    await rawRequest(`http://bob:${C.userinfo}@127.0.0.1/abs`);
    await rawRequest(`/callback#access_token=${C.targetFragment}&state=s2`);
    await request(`${base}/authorize?client_id=c1&state=s1`);
    await request(`${base}/sse`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    await request(`${base}/zstd`);
    await request(`${base}/gzip-gzip`);
    await request(`${base}/compress`);
    await request(`${base}/gzip-json`);
    await request(`${base}/text`);
    await request(`${base}/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", "content-encoding": "deflate" },
      body: zlib.deflateSync(`grant_type=client_credentials&key=${C.deflateForm}`),
    });
    await request(`${base}/mcp/s/${C.pathSecret}/mcp`, { headers: { referer: `https://lens.example/mcp/s/${C.pathSecret}/mcp` } });
    await websocketUpgrade();
    await waitFor(async () => (await recordedCount()) >= 16, "every exchange recorded", 10_000).catch(async (error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(await recordedPaths())} ${lens.stderr.join("")}`);
    });
  }

  /** Sends a request target node's URL handling would not: verbatim bytes on a socket. */
  async function rawRequest(target: string): Promise<void> {
    const { port, hostname } = new URL(lens.url);
    await new Promise<void>((resolve, reject) => {
      const req = http.request({ host: hostname, port, path: target, method: "GET", agent: false }, (res) => {
        res.resume();
        res.on("end", resolve);
      });
      req.on("error", reject);
      req.end();
    });
  }

  async function websocketUpgrade(): Promise<void> {
    await new Promise<void>((resolve) => {
      const ws = new WebSocket(lens.url.replace("http", "ws") + "/ws", ["mcp", `bearer.${C.wsProto}`]);
      ws.on("error", () => resolve());
      ws.on("close", () => resolve());
      ws.on("open", () => ws.close());
    });
  }

  async function recordedPaths(): Promise<string[]> {
    const db = new BetterSqlite3(dbPath, { readonly: true, fileMustExist: true });
    try {
      return (db.prepare("SELECT path FROM exchanges").all() as Array<{ path: string }>).map((r) => r.path);
    } finally {
      db.close();
    }
  }

  async function recordedCount(): Promise<number> {
    if (!existsSync(dbPath)) return 0;
    const db = new BetterSqlite3(dbPath, { readonly: true, fileMustExist: true });
    try {
      return (db.prepare("SELECT count(*) AS n FROM exchanges").get() as { n: number }).n;
    } finally {
      db.close();
    }
  }

  /** The canaries found in a text, as such or in a base64 (or base64 of gzip) a reader could undo. */
  function leaks(text: string): string[] {
    const views = [text];
    for (const m of text.matchAll(/[A-Za-z0-9+/]{16,}={0,2}/g)) {
      let bytes = Buffer.from(m[0], "base64");
      views.push(bytes.toString("latin1"));
      for (let i = 0; i < 3; i++) {
        try {
          bytes = zlib.gunzipSync(bytes);
          views.push(bytes.toString("latin1"));
        } catch {
          break;
        }
      }
    }
    const found: string[] = [];
    for (const [tag, value] of planted) {
      const secretPart = value.includes("CANARY") ? value.slice(value.indexOf("CANARY")) : value;
      if (views.some((v) => v.includes(secretPart))) found.push(tag);
    }
    return found;
  }

  it("stores none of them: DB file, WAL and every row (base64 bodies decoded)", async () => {
    const db = new BetterSqlite3(dbPath, { readonly: true, fileMustExist: true });
    const rows = db.prepare("SELECT * FROM exchanges").all() as Array<Record<string, unknown>>;
    db.close();
    expect(leaks(rows.map((r) => JSON.stringify(r)).join("\n"))).toEqual([]);
    for (const file of [dbPath, `${dbPath}-wal`]) {
      if (existsSync(file)) expect(leaks(readFileSync(file).toString("latin1")), file).toEqual([]);
    }
  });

  it("keeps the undecodable bodies out entirely (size and a marker only), and unwraps stacked encodings", async () => {
    const db = new BetterSqlite3(dbPath, { readonly: true, fileMustExist: true });
    const rows = db.prepare("SELECT path, res_body, res_body_encoding, res_body_size FROM exchanges WHERE path IN ('/zstd', '/compress')").all() as Array<Record<string, unknown>>;
    const twice = db.prepare("SELECT res_body, res_body_decoded FROM exchanges WHERE path = '/gzip-gzip'").get();
    db.close();
    expect(rows).toHaveLength(2);
    for (const row of rows) expect(row).toMatchObject({ res_body: null, res_body_encoding: "omitted", res_body_size: expect.any(Number) });
    expect(twice).toEqual({ res_body: expect.stringMatching(/^\{"refresh_token":"\[redacted:[0-9a-f]{8}\]"\}$/), res_body_decoded: "gzip, gzip" });
  });

  it("logs none of them and the live feed carries none of them", async () => {
    // The recorder thread writes its log lines in batches, at least every 100 ms.
    await waitFor(() => lens.stdout.filter((line) => line.includes('"msg":"exchange"')).length >= 16, "every exchange's log line", 5_000);
    expect(leaks(lens.stdout.join("\n") + lens.stderr.join(""))).toEqual([]);
    await waitFor(() => live.filter((m) => m.includes('"type":"exchange"')).length >= 16, "every exchange on /live", 5_000);
    expect(leaks(live.join("\n"))).toEqual([]);
    // The operator's path pattern replaced the secret segment in the log line's path too.
    expect(lens.stdout.join("\n")).toMatch(/"path":"\/mcp\/s\/\[redacted:[0-9a-f]{8}\]\/mcp"/);
  });

  it("exports none of them as HAR or curl", async () => {
    const list = JSON.parse((await inspector(["list", "--json"])).stdout) as Array<{ id: number }>;
    expect(list.length).toBeGreaterThan(0);
    for (const { id } of list) {
      for (const format of ["--har", "--curl"]) {
        const out = await inspector(["export", String(id), format]);
        expect(out.code).toBe(0);
        expect(leaks(out.stdout)).toEqual([]);
      }
    }
  });

  it("keeps what the analysis reads in clear", async () => {
    const db = new BetterSqlite3(dbPath, { readonly: true, fileMustExist: true });
    const download = db.prepare("SELECT query FROM exchanges WHERE path = '/download'").get() as { query: string };
    const authorize = db.prepare("SELECT query, res_headers FROM exchanges WHERE path = '/authorize'").get() as { query: string; res_headers: string };
    const ws = db.prepare("SELECT req_headers FROM exchanges WHERE websocket = 1").get() as { req_headers: string } | undefined;
    db.close();
    expect(download.query).toMatch(/&state=kept-state$/);
    expect(authorize.query).toBe("client_id=c1&state=s1");
    expect(authorize.res_headers).toContain("state=s1");
    expect(ws?.req_headers).toMatch(/"mcp, \[redacted:[0-9a-f]{8}\]"/);
  });

  async function inspector(args: string[]): Promise<{ code: number; stdout: string }> {
    try {
      const { stdout, stderr } = await run(process.execPath, [INSPECTOR, ...args], { env: { ...process.env, MCP_LENS_DB: dbPath } });
      keepArtifact(`redaction-inspector-${args.join("-")}.out`, stdout + stderr);
      return { code: 0, stdout };
    } catch (error) {
      const e = error as { code: number; stdout: string; stderr: string };
      keepArtifact(`redaction-inspector-${args.join("-")}.out`, e.stdout + e.stderr);
      return { code: e.code, stdout: e.stdout };
    }
  }
});

describe("operator redaction patterns", () => {
  it("refuses an invalid --redact-paths regex at start-up with a clear message", async () => {
    const { code, stderr } = await runCli(["proxy", "--redact-paths", "^/mcp/s/([^/]+", "--db", "/nonexistent/x.db"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/--redact-paths.*invalid regular expression/i);
    const env = await runCli(["proxy", "--db", "/nonexistent/x.db"], { MCP_LENS_REDACT_PATHS: "(" });
    expect(env.code).toBe(2);
    expect(env.stderr).toMatch(/MCP_LENS_REDACT_PATHS.*invalid regular expression/i);
  });
});
