import { randomBytes } from "node:crypto";
import zlib from "node:zlib";
import { describe, expect, it } from "vitest";
import type { CapturedBody, HeaderPairs, RawExchange, RecordedBody, RecordedExchange } from "../../analysis/exchange.js";
import { recordBody, toRecorded } from "../../recording/record.js";
import { fingerprintsIn } from "../../analysis/redacted.js";
import { createRedactor } from "../../recording/redact.js";
import { captured, rawExchange } from "../helpers/exchanges.js";

const redactor = createRedactor(randomBytes(32));
const canary = () => `CANARY-${randomBytes(12).toString("hex")}`;
const marker = (secret: string) => `[redacted:${redactor.fingerprint(secret)}]`;

const cut = (bytes: Buffer, length: number): CapturedBody => ({ bytes: bytes.subarray(0, length), size: bytes.length, truncated: true });

/** The compressed body cut where its decoded prefix ends 20 chars into the secret. */
function cutInsideSecret(compressed: Buffer, decode: (b: Buffer) => Buffer, secret: string): CapturedBody {
  for (let length = 1; length < compressed.length; length++) {
    const text = decode(compressed.subarray(0, length)).toString();
    if (text.includes(secret.slice(0, 20))) {
      expect(text).not.toContain(secret);
      return cut(compressed, length);
    }
  }
  throw new Error("secret not found");
}
const gunzipPrefix = (b: Buffer) => zlib.gunzipSync(b, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
const unbrotliPrefix = (b: Buffer) => zlib.brotliDecompressSync(b, { finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH });

const exchange = rawExchange;

/** Everything a reader of the record could see: its JSON, base64 bodies as bytes, and what those bytes inflate to. */
function visible(records: RecordedExchange[]): string {
  const binaries = records
    .flatMap((r) => [r.requestBody, r.responseBody])
    .filter((b) => b.encoding === "base64" && b.text !== null)
    .map((b) => Buffer.from(b.text!, "base64"));
  const inflated = binaries.flatMap((bytes) =>
    [zlib.gunzipSync, zlib.inflateSync, zlib.inflateRawSync, zlib.brotliDecompressSync].map((decode) => {
      try {
        return decode(bytes, { finishFlush: zlib.constants.Z_SYNC_FLUSH }).toString("latin1");
      } catch {
        return "";
      }
    }),
  );
  return [JSON.stringify(records), ...binaries.map((b) => b.toString("latin1")), ...inflated].join("\n");
}

/** No canary, nor any 12-char piece of one, survives. */
function expectNoCanary(text: string, canaries: string[]) {
  for (const c of canaries) {
    for (let i = 0; i + 12 <= c.length; i++) expect(text, `piece of ${c} at ${i}`).not.toContain(c.slice(i, i + 12));
  }
}

const json = (value: unknown) => JSON.stringify(value);
const jsonHeaders = (...more: HeaderPairs): HeaderPairs => [["Content-Type", "application/json"], ...more];

describe("toRecorded: an OAuth + MCP session with canary secrets everywhere", () => {
  const s = {
    bearer: canary(), basicSecret: canary(), cookie: canary(), setCookie: canary(), apiKey: canary(),
    queryCode: canary(), queryToken: canary(), querySecret: canary(), queryVerifier: canary(),
    locationCode: canary(), fragmentToken: canary(), refererCode: canary(),
    formVerifier: canary(), formSecret: canary(), refresh: canary(), idToken: canary(),
    regSecret: canary(), regToken: canary(), coda: canary(), password: canary(),
    sse: canary(), nested: canary(), cutJson: canary(), gzipCut: canary(), brCut: canary(), binary: canary(),
  };
  const tokenResponse = json({ access_token: s.bearer, token_type: "Bearer", expires_in: 3600, refresh_token: s.refresh, id_token: s.idToken, scope: "mcp" });
  const cutJsonBody = Buffer.from(json({ token_type: "Bearer", access_token: s.cutJson, refresh_token: "x" }));
  const gzipped = zlib.gzipSync(json({ refresh_token: s.gzipCut, filler: randomBytes(2000).toString("hex") }));
  const brotlied = zlib.brotliCompressSync(json({ access_token: s.brCut, filler: randomBytes(2000).toString("hex") }));
  const binaryBody = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00]), Buffer.from(`grant=x&access_token=${s.binary}&z=1 `), Buffer.from([0xc3, 0x28])]);

  const raws: RawExchange[] = [
    exchange({ // the login/consent page posts the user's Coda token and password, redirects with a code and a fragment token
      id: 1, method: "POST", path: "/authorize/consent", status: 302,
      requestHeaders: [["Content-Type", "application/x-www-form-urlencoded"], ["Referer", `https://as.example/authorize?client_id=c1&code=${s.refererCode}`]],
      requestBody: captured(`coda_token=${s.coda}&password=${s.password}&state=st1&client_id=c1`),
      responseHeaders: [
        ["Location", `https://client.example/cb?code=${s.locationCode}&state=st1#access_token=${s.fragmentToken}&token_type=Bearer`],
        ["Set-Cookie", `lens_session=${s.setCookie}; Path=/; HttpOnly`],
      ],
    }),
    exchange({ // the token request redeems the code, the response is gzip-compressed
      id: 2, method: "POST", path: "/token",
      requestHeaders: [
        ["content-type", "application/x-www-form-urlencoded"],
        ["Authorization", `Basic ${Buffer.from(`c1:${s.basicSecret}`).toString("base64")}`],
      ],
      requestBody: captured(`grant_type=authorization_code&code=${s.locationCode}&code_verifier=${s.formVerifier}&client_id=c1&client_secret=${s.formSecret}&redirect_uri=https%3A%2F%2Fclient.example%2Fcb&resource=https%3A%2F%2Fmcp.example%2Fmcp`),
      responseHeaders: jsonHeaders(["Content-Encoding", "gzip"]),
      responseBody: captured(zlib.gzipSync(tokenResponse)),
    }),
    exchange({ // dynamic client registration, brotli response
      id: 3, method: "POST", path: "/register", status: 201,
      requestHeaders: jsonHeaders(),
      requestBody: captured(json({ client_name: "Claude", redirect_uris: ["https://client.example/cb"], token_endpoint_auth_method: "client_secret_post" })),
      responseHeaders: jsonHeaders(["content-encoding", "br"]),
      responseBody: captured(zlib.brotliCompressSync(json({ client_id: "c1", client_secret: s.regSecret, registration_access_token: s.regToken, client_secret_expires_at: 0 }))),
    }),
    exchange({ // an MCP call with the issued token, a cookie and an API key; the answer streams a token over SSE
      id: 4, method: "POST", path: "/mcp", sseEvents: 1,
      requestHeaders: jsonHeaders(["Authorization", `Bearer ${s.bearer}`], ["Cookie", `a=${s.cookie}; b=plain`], ["x-api-key", s.apiKey]),
      requestBody: captured(json({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "login", arguments: { config: { auth: { client_secret: s.nested } } } } })),
      responseHeaders: [["Content-Type", "text/event-stream"]],
      responseBody: captured(`event: message\ndata: ${json({ jsonrpc: "2.0", id: 2, result: { content: [{ type: "text", text: json({ refresh_token: s.sse }) }] } })}\n\n`),
    }),
    exchange({ // secrets in the query string
      id: 5, path: "/callback",
      query: `code=${s.queryCode}&access_token=${s.queryToken}&client_secret=${s.querySecret}&code_verifier=${s.queryVerifier}&state=st1&pageToken=p2`,
    }),
    exchange({ // bodies cut by the capture cap in the middle of a secret: plain, gzip and br
      id: 6, method: "POST", path: "/token",
      requestHeaders: jsonHeaders(),
      requestBody: cut(cutJsonBody, cutJsonBody.indexOf(s.cutJson) + 20),
      responseHeaders: jsonHeaders(["Content-Encoding", "gzip"]),
      responseBody: cutInsideSecret(gzipped, gunzipPrefix, s.gzipCut),
    }),
    exchange({
      id: 7, method: "POST", path: "/token",
      responseHeaders: jsonHeaders(["Content-Encoding", "br"]),
      responseBody: cutInsideSecret(brotlied, unbrotliPrefix, s.brCut),
      requestHeaders: [["Content-Type", "application/octet-stream"]],
      requestBody: captured(binaryBody),
    }),
  ];
  const records = raws.map((raw) => toRecorded(raw, redactor));
  const byId = (id: number) => records.find((r) => r.id === id)!;

  it("lets no canary, nor a 12-char piece of one, survive anywhere in the records", () => {
    expectNoCanary(visible(records), Object.values(s));
    expect(fingerprintsIn(JSON.stringify(records)).length).toBeGreaterThanOrEqual(Object.keys(s).length - 3);
  });

  it("follows a secret by its marker from where it was issued to where it is used", () => {
    const issued = JSON.parse(byId(2).responseBody.text!);
    expect(issued.access_token).toBe(marker(s.bearer));
    expect(byId(4).requestHeaders).toContainEqual(["Authorization", `Bearer ${issued.access_token}`]);
    // the code delivered by the redirect is the one the token request redeems
    expect(byId(1).responseHeaders![0]![1]).toContain(`code=${marker(s.locationCode)}&`);
    expect(byId(2).requestBody.text).toContain(`&code=${marker(s.locationCode)}&`);
  });

  it("keeps what is not secret", () => {
    const issued = JSON.parse(byId(2).responseBody.text!);
    expect(issued).toMatchObject({ token_type: "Bearer", expires_in: 3600, scope: "mcp" });
    expect(byId(2).responseBody).toMatchObject({ decoded: "gzip", encoding: "utf8" });
    expect(byId(3).responseBody.decoded).toBe("br");
    expect(JSON.parse(byId(3).requestBody.text!).token_endpoint_auth_method).toBe("client_secret_post");
    expect(byId(5).query).toBe(`code=${marker(s.queryCode)}&access_token=${marker(s.queryToken)}&client_secret=${marker(s.querySecret)}&code_verifier=${marker(s.queryVerifier)}&state=st1&pageToken=p2`);
    expect(byId(2).requestBody.text).toContain("client_id=c1&");
    expect(byId(2).requestBody.text).toContain("&redirect_uri=https%3A%2F%2Fclient.example%2Fcb&resource=https%3A%2F%2Fmcp.example%2Fmcp");
    expect(byId(4).requestHeaders).toContainEqual(["Cookie", `a=${marker(s.cookie)}; b=${marker("plain")}`]);
    expect(JSON.parse(byId(3).responseBody.text!)).toMatchObject({ client_id: "c1", client_secret_expires_at: 0 });
    expect(byId(1).requestHeaders).toContainEqual(["Referer", `https://as.example/authorize?client_id=c1&code=${marker(s.refererCode)}`]);
    expect(byId(6).requestBody).toMatchObject({ encoding: "utf8", truncated: true, size: cutJsonBody.length });
    expect(byId(6).requestBody.text).toMatch(/^\{"token_type":"Bearer","access_token":"\[redacted:[0-9a-f]{8}\]$/);
    expect(byId(6).responseBody).toMatchObject({ encoding: "utf8", decoded: "gzip", truncated: true });
    expect(byId(6).responseBody.text).toMatch(/^\{"refresh_token":"\[redacted:[0-9a-f]{8}\]$/);
    expect(byId(7).responseBody.text).toMatch(/^\{"access_token":"\[redacted:[0-9a-f]{8}\]$/);
  });

  it("copies every other field", () => {
    const { requestHeaders, requestBody, responseHeaders, responseBody, query, ...rest } = raws[3]!;
    const recorded = byId(4);
    expect(recorded).toMatchObject(rest);
    expect(Object.keys(recorded).sort()).toEqual(Object.keys(raws[3]!).sort());
  });

  it("keeps WWW-Authenticate and JSON-RPC error codes of a 401", () => {
    const challenge = 'Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp", scope="mcp"';
    const error = json({ jsonrpc: "2.0", id: null, error: { code: -32600, message: "Invalid Request" } });
    const recorded = toRecorded(exchange({ status: 401, responseHeaders: jsonHeaders(["WWW-Authenticate", challenge]), responseBody: captured(error) }), redactor);
    expect(recorded.responseHeaders).toContainEqual(["WWW-Authenticate", challenge]);
    expect(recorded.responseBody.text).toBe(error);
    expect(recorded.responseHeaders).toBeTruthy();
    expect(toRecorded(exchange({ responseHeaders: null, status: null, upstreamError: "refused" }), redactor).responseHeaders).toBeNull();
  });
});

describe("recordBody", () => {
  const record = (body: CapturedBody, ...headers: HeaderPairs): RecordedBody => recordBody(body, headers, redactor);

  it("returns bodies without secrets byte-identical", () => {
    const texts: Array<[string, string]> = [
      ['{\n  "jsonrpc": "2.0",\n  "id": 1,\n  "result": { "tools": [] }\n}\n', "application/json"],
      ["grant_type=client_credentials&client_id=c1&scope=mcp%3Aread", "application/x-www-form-urlencoded"],
      ['event: message\r\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\r\n\r\n', "text/event-stream"],
      ["\ufeffhello, wörld ✓ 🎉", "text/plain; charset=utf-8"],
    ];
    for (const [text, type] of texts) {
      expect(record(captured(text), ["Content-Type", type])).toEqual({ text, encoding: "utf8", size: Buffer.byteLength(text), truncated: false, decoded: null });
    }
    const binary = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0x80]);
    // Not text: not recorded, only its size (redaction cannot see into it).
    expect(record(captured(binary), ["Content-Type", "image/png"])).toEqual({ text: null, encoding: "omitted", size: 11, truncated: false, decoded: null });
    expect(record(captured(""))).toEqual({ text: null, encoding: "utf8", size: 0, truncated: false, decoded: null });
  });

  it("decodes gzip, x-gzip, zlib and raw deflate, and br", () => {
    const text = json({ jsonrpc: "2.0", id: 1, result: { content: [{ type: "text", text: "héllo" }] } });
    const encodings: Array<[string, Buffer, string]> = [
      ["gzip", zlib.gzipSync(text), "gzip"],
      [" X-GZIP", zlib.gzipSync(text), "x-gzip"],
      ["deflate", zlib.deflateSync(text), "deflate"],
      ["deflate", zlib.deflateRawSync(text), "deflate"],
      ["br", zlib.brotliCompressSync(text), "br"],
    ];
    for (const [header, bytes, decoded] of encodings) {
      expect(record(captured(bytes), ["Content-Type", "application/json"], ["Content-Encoding", header])).toEqual({ text, encoding: "utf8", size: bytes.length, truncated: false, decoded });
    }
  });

  it("decodes what it can of a truncated compressed body", () => {
    const secret = canary();
    const text = `{"access_token":"${secret}","items":[${Array.from({ length: 300 }, (_, i) => `"item-${i}-${randomBytes(3).toString("hex")}"`).join(",")}]}`;
    for (const [encoding, bytes] of [["gzip", zlib.gzipSync(text)], ["br", zlib.brotliCompressSync(text)]] as const) {
      for (const length of [10, 40, 80, 200, Math.floor(bytes.length / 2), bytes.length - 1]) {
        const out = record(cut(bytes, length), ["Content-Type", "application/json"], ["Content-Encoding", encoding]);
        expect(out.truncated).toBe(true);
        expect(out.size).toBe(bytes.length);
        expectNoCanary(visible([toRecorded(exchange({ responseBody: cut(bytes, length), responseHeaders: [["Content-Encoding", encoding]] }), redactor)]), [secret]);
        if (out.text !== null && out.text.length > 20) {
          expect(out).toMatchObject({ encoding: "utf8", decoded: encoding });
          expect(out.text.startsWith(`{"access_token":"[redacted:`)).toBe(true);
        }
      }
    }
  });

  it("caps the decoded size at the recording cap and keeps a decoded prefix rather than the compressed bytes", () => {
    for (let i = 0; i < 6; i++) {
      const secret = canary();
      const text = `{"access_token":"${secret}","padding":"${"é€".repeat(40_000 + i)}"}`;
      const bytes = zlib.gzipSync(text);
      const cap = 16 * 1024 + i;
      const out = recordBody(captured(bytes), [["Content-Type", "application/json"], ["Content-Encoding", "gzip"]], redactor, cap);
      // The cap may cut a character; the record says it is truncated.
      expect(out).toMatchObject({ encoding: "utf8", decoded: "gzip", size: bytes.length, truncated: true });
      expect(Buffer.byteLength(out.text!)).toBeLessThanOrEqual(cap);
      expect(Buffer.byteLength(out.text!)).toBeGreaterThan(cap - 1024);
      expect(out.text!.startsWith(`{"access_token":"${marker(secret)}","padding":"é€é€`)).toBe(true);
    }
  });

  it("decodes a truncated gzip bomb to the cap only, quickly", () => {
    const bomb = zlib.gzipSync(Buffer.alloc(32 * 1024 * 1024, "a")).subarray(0, 16 * 1024);
    const started = performance.now();
    const out = recordBody(cut(bomb, bomb.length), [["Content-Type", "text/plain"], ["Content-Encoding", "gzip"]], redactor);
    expect(out.text!.length).toBeLessThanOrEqual(64 * 1024);
    expect(out).toMatchObject({ encoding: "utf8", decoded: "gzip", truncated: true });
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it("undoes stacked encodings, and omits what it cannot decode: unknown, too many layers, corrupt", () => {
    const secret = canary();
    const text = `{"access_token":"${secret}"}`;
    const twice = zlib.gzipSync(zlib.gzipSync(text));
    expect(record(captured(twice), ["Content-Type", "application/json"], ["Content-Encoding", "gzip, gzip"])).toEqual({
      text: `{"access_token":"${marker(secret)}"}`, encoding: "utf8", size: twice.length, truncated: false, decoded: "gzip, gzip",
    });
    const omitted = (bytes: Buffer, encoding: string) => record(captured(bytes), ["Content-Type", "application/json"], ["Content-Encoding", encoding]);
    expect(omitted(Buffer.from(text), "zstd")).toEqual({ text: null, encoding: "omitted", size: text.length, truncated: false, decoded: null });
    expect(omitted(zlib.gzipSync(text), "gzip, zstd")).toMatchObject({ text: null, encoding: "omitted" });
    expect(omitted(twice, "gzip")).toMatchObject({ text: null, encoding: "omitted" }); // one layer left: binary
    expect(omitted(Buffer.from(text), "gzip, gzip, gzip, gzip")).toMatchObject({ text: null, encoding: "omitted" });
  });

  it("keeps the decodable prefix of a corrupt stream, and omits bytes that were never compressed", () => {
    const secret = canary();
    const bytes = zlib.gzipSync(`{"access_token":"${secret}","filler":"${randomBytes(3000).toString("hex")}"}`);
    bytes.fill(0xff, bytes.length - 200, bytes.length - 100);
    const corrupt = record(captured(bytes), ["Content-Type", "application/json"], ["Content-Encoding", "gzip"]);
    expect(corrupt).toMatchObject({ encoding: "utf8", decoded: "gzip" });
    expect(corrupt.text!.startsWith(`{"access_token":"${marker(secret)}","filler":"`)).toBe(true);

    // Mislabelled: what the header says cannot be undone, so nothing is kept but the size.
    const plain = `{"access_token":"${secret}"}`;
    expect(record(captured(plain), ["Content-Type", "application/json"], ["Content-Encoding", "gzip"])).toEqual({
      text: null, encoding: "omitted", size: plain.length, truncated: false, decoded: null,
    });
  });

  it("drops a character cut by the capture cap, but not an invalid byte", () => {
    const text = "prix: 10€";
    const bytes = Buffer.from(text);
    expect(record(cut(bytes, bytes.length - 1))).toMatchObject({ text: "prix: 10", encoding: "utf8", truncated: true });
    expect(record(cut(bytes, bytes.length - 2))).toMatchObject({ text: "prix: 10", encoding: "utf8" });
    expect(record(captured(bytes.subarray(0, bytes.length - 1)))).toMatchObject({ text: null, encoding: "omitted" });
    expect(record(cut(Buffer.concat([bytes, Buffer.from([0xff])]), bytes.length + 1))).toMatchObject({ text: null, encoding: "omitted" });
  });

  it("omits bodies that are not UTF-8: size only, nothing recoverable", () => {
    const secret = canary();
    const bytes = Buffer.concat([Buffer.from([0xc3, 0x28, 0xff]), Buffer.from(`x=1&access_token=${secret}&y=2`), Buffer.from([0xe9])]);
    const out = record(captured(bytes), ["Content-Type", "application/x-www-form-urlencoded"]);
    expect(out).toEqual({ text: null, encoding: "omitted", size: bytes.length, truncated: false, decoded: null });
  });

  it("never throws on random bytes, whatever the headers say", () => {
    const types = ["application/json", "application/x-www-form-urlencoded", "text/event-stream", "text/plain", "image/png"];
    const encodings = ["gzip", "deflate", "br", "identity", "gzip, br"];
    const samples = [zlib.gzipSync("{}"), zlib.brotliCompressSync("a=b"), zlib.deflateSync("access_token=x")];
    for (let i = 0; i < 400; i++) {
      const random = randomBytes(i % 300);
      const bytes = i % 4 === 0 ? Buffer.concat([samples[i % 3]!.subarray(0, 10), random]) : random;
      const body: CapturedBody = { bytes, size: bytes.length + (i % 2) * 100, truncated: i % 2 === 1 };
      const headers: HeaderPairs = [["Content-Type", types[i % types.length]!], ["Content-Encoding", encodings[(i >> 1) % encodings.length]!]];
      expect(() => recordBody(body, headers, redactor)).not.toThrow();
      const value = random.toString("latin1");
      expect(() => toRecorded(exchange({ query: value, requestHeaders: [[value, value], ["Authorization", value]], requestBody: body, responseHeaders: headers, responseBody: body }), redactor)).not.toThrow();
    }
  });
});
