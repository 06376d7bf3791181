import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fingerprintsIn, REDACTED_PATTERN } from "../../analysis/redacted.js";
import { createRedactor, loadOrCreateRedactionKey } from "../../recording/redact.js";

const redactor = createRedactor(randomBytes(32));
const canary = () => `CANARY-${randomBytes(12).toString("hex")}`;
const marker = (secret: string) => `[redacted:${redactor.fingerprint(secret)}]`;

/** No canary, nor any 12-char piece of one, is left in the text. */
function expectNoCanary(text: string, ...canaries: string[]) {
  for (const c of canaries) {
    for (let i = 0; i + 12 <= c.length; i++) expect(text, `piece of ${c} at ${i}`).not.toContain(c.slice(i, i + 12));
  }
}

describe("loadOrCreateRedactionKey", () => {
  const dir = mkdtempSync(join(tmpdir(), "mcp-lens-redact-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("creates <db>.key with mode 0600 on first start and reads the same key afterwards", () => {
    const db = join(dir, "lens.db");
    const key = loadOrCreateRedactionKey(db);
    expect(key).toHaveLength(32);
    expect(readFileSync(`${db}.key`, "utf8").trim()).toBe(key.toString("hex"));
    expect(statSync(`${db}.key`).mode & 0o777).toBe(0o600);
    expect(loadOrCreateRedactionKey(db).equals(key)).toBe(true);
  });

  it("throws a one-line error when the file is invalid or cannot be created", () => {
    const bad = join(dir, "bad.db");
    writeFileSync(`${bad}.key`, "not hex\n");
    expect(() => loadOrCreateRedactionKey(bad)).toThrow(/^redaction key file .*bad\.db\.key is invalid: expected 64 hex chars$/);
    expect(() => loadOrCreateRedactionKey(join(dir, "missing", "lens.db"))).toThrow(/^cannot create redaction key file .*ENOENT[^\n]*$/);
  });

  it("throws a one-line error when the file cannot be read", () => {
    const db = join(dir, "unreadable.db");
    mkdirSync(`${db}.key`); // unreadable as a file even for root
    expect(() => loadOrCreateRedactionKey(db)).toThrow(/^cannot read redaction key file .*EISDIR[^\n]*$/);
  });
});

describe("fingerprint and markers", () => {
  it("is the first 8 hex of an HMAC: stable per key, different across keys", () => {
    const secret = canary();
    expect(redactor.fingerprint(secret)).toMatch(/^[0-9a-f]{8}$/);
    expect(redactor.fingerprint(secret)).toBe(redactor.fingerprint(secret));
    expect(createRedactor(randomBytes(32)).fingerprint(secret)).not.toBe(redactor.fingerprint(secret));
  });

  it("finds the fingerprints of the markers in a text", () => {
    const text = "a [redacted:0123abcd] b [redacted:ffffffff] c [redacted:0123abcd] [redacted:xyz]";
    expect(fingerprintsIn(text)).toEqual(["0123abcd", "ffffffff"]);
    expect([...text.matchAll(REDACTED_PATTERN)].map((m) => m[1])).toEqual(["0123abcd", "ffffffff", "0123abcd"]);
  });
});

describe("headers", () => {
  it("keeps the scheme of Authorization and Proxy-Authorization and redacts the credential", () => {
    const token = canary();
    const basic = Buffer.from(`client:${canary()}`).toString("base64");
    const out = redactor.headers([
      ["Authorization", `Bearer ${token}`],
      ["proxy-authorization", `Basic ${basic}`],
      ["X-Forwarded-Authorization", `Bearer ${token}`],
    ]);
    expect(out).toEqual([
      ["Authorization", `Bearer ${marker(token)}`],
      ["proxy-authorization", `Basic ${marker(basic)}`],
      ["X-Forwarded-Authorization", `Bearer ${marker(token)}`],
    ]);
    expect(redactor.headers([["authorization", token]])).toEqual([["authorization", marker(token)]]);
    expect(redactor.headers([["Authorization", ""]])).toEqual([["Authorization", ""]]);
  });

  it("redacts each cookie value and the Set-Cookie value, keeping names and attributes", () => {
    const [a, b, c] = [canary(), canary(), canary()];
    expect(redactor.headers([["Cookie", `sid=${a}; theme=; csrf=${b}==`]])).toEqual([
      ["Cookie", `sid=${marker(a)}; theme=; csrf=${marker(`${b}==`)}`],
    ]);
    expect(redactor.headers([["Set-Cookie", `session=${c}; Path=/; HttpOnly; Secure; SameSite=Lax`]])).toEqual([
      ["Set-Cookie", `session=${marker(c)}; Path=/; HttpOnly; Secure; SameSite=Lax`],
    ]);
    expect(redactor.headers([["set-cookie", c]])).toEqual([["set-cookie", marker(c)]]);
  });

  it("redacts headers whose name looks secret, whole", () => {
    const names = ["X-Api-Key", "x-coda-token", "X-Auth-Token", "X-Authentication", "X-CSRF-Token", "Client-Secret",
      "x-goog-api-key", "Ocp-Apim-Subscription-Key", "X-Refresh-Token-Value", "x-password"];
    for (const name of names) {
      const secret = canary();
      expect(redactor.headers([[name, secret]]), name).toEqual([[name, marker(secret)]]);
    }
  });

  it("redacts secret parameters in URL headers and keeps challenges, other headers, names and order", () => {
    const [code, token, other] = [canary(), canary(), canary()];
    const challenge = 'Bearer error="invalid_token", resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp?token=x"';
    const pairs: Array<[string, string]> = [
      ["Location", `https://client.example/cb?code=${code}&state=s1#access_token=${token}&token_type=Bearer`],
      ["Referer", `/authorize/consent?client_id=abc&code=${other}`],
      ["WWW-Authenticate", challenge],
      ["Link", `<https://api.example/items?page_token=p2&api_key=${other}>; rel="next"`],
      ["Content-Type", "application/json"],
      ["Mcp-Session-Id", "6f1c2d"],
      ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="],
    ];
    expect(redactor.headers(pairs)).toEqual([
      ["Location", `https://client.example/cb?code=${marker(code)}&state=s1#access_token=${marker(token)}&token_type=Bearer`],
      ["Referer", `/authorize/consent?client_id=abc&code=${marker(other)}`],
      ["WWW-Authenticate", challenge],
      ["Link", `<https://api.example/items?page_token=p2&api_key=${marker(other)}>; rel="next"`],
      ["Content-Type", "application/json"],
      ["Mcp-Session-Id", "6f1c2d"],
      ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="],
    ]);
  });
});

describe("query and url", () => {
  it("replaces only the value spans of secret parameters, leaving the rest byte-identical", () => {
    const [code, token, secret, verifier] = [canary(), canary(), canary(), canary()];
    const qs = `response_type=code&client_id=c%20id&code=${code}&access_token=${token}&client_secret=${secret}&code_verifier=${verifier}&redirect_uri=https%3A%2F%2Fx%2Fcb&state=a+b&scope=mcp%3Aread&resource=https%3A%2F%2Fmcp.example%2Fmcp&flag&=x&code=`;
    expect(redactor.query(qs)).toBe(
      `response_type=code&client_id=c%20id&code=${marker(code)}&access_token=${marker(token)}&client_secret=${marker(secret)}&code_verifier=${marker(verifier)}&redirect_uri=https%3A%2F%2Fx%2Fcb&state=a+b&scope=mcp%3Aread&resource=https%3A%2F%2Fmcp.example%2Fmcp&flag&=x&code=`,
    );
    expect(redactor.query(null)).toBeNull();
    expect(redactor.query("")).toBe("");
    expect(redactor.query("pageToken=abc&nextPageToken=def&syncToken=ghi&token_type_hint=refresh_token")).toBe(
      "pageToken=abc&nextPageToken=def&syncToken=ghi&token_type_hint=refresh_token",
    );
  });

  it("fingerprints the percent-decoded value, and decodes names", () => {
    expect(redactor.query("code=a%2Bb")).toBe(`code=${marker("a+b")}`);
    expect(redactor.query("code=a+b")).toBe(`code=${marker("a b")}`);
    expect(redactor.query("access%5Ftoken=xyz&code=%E0%A4%A")).toMatch(/^access%5Ftoken=\[redacted:[0-9a-f]{8}\]&code=\[redacted:[0-9a-f]{8}\]$/);
    expect(redactor.query("auth=Bearer%20abc")).toBe(`auth=Bearer+${marker("abc")}`);
  });

  it("redacts query and fragment of absolute and relative URLs", () => {
    const token = canary();
    expect(redactor.url(`https://c.example/cb#access_token=${token}&state=s`)).toBe(`https://c.example/cb#access_token=${marker(token)}&state=s`);
    expect(redactor.url(`/cb?code=${token}`)).toBe(`/cb?code=${marker(token)}`);
    expect(redactor.url("https://mcp.example/mcp")).toBe("https://mcp.example/mcp");
  });
});

describe("JSON bodies", () => {
  const json = "application/json; charset=utf-8";

  it("redacts a token response by key, keeping token_type and numbers", () => {
    const [access, refresh, id] = [canary(), canary(), canary()];
    const body = JSON.stringify({ access_token: access, token_type: "Bearer", expires_in: 3600, refresh_token: refresh, id_token: id, scope: "mcp" });
    expect(JSON.parse(redactor.body(body, json))).toEqual({
      access_token: marker(access), token_type: "Bearer", expires_in: 3600, refresh_token: marker(refresh), id_token: marker(id), scope: "mcp",
    });
  });

  it("redacts a registration response but not its metadata vocabulary", () => {
    const [secret, rat] = [canary(), canary()];
    const body = {
      client_id: "client-1", client_secret: secret, client_secret_expires_at: 0, registration_access_token: rat,
      token_endpoint_auth_method: "client_secret_post", redirect_uris: ["https://c.example/cb"],
      token_endpoint_auth_methods_supported: ["client_secret_basic"], token_endpoint: "https://as.example/token",
    };
    expect(JSON.parse(redactor.body(JSON.stringify(body), "application/json"))).toEqual({
      ...body, client_secret: marker(secret), registration_access_token: marker(rat),
    });
  });

  it("walks nested objects and arrays, redacts the strings of secret keys and Bearer values anywhere", () => {
    const [a, b, c, d, e, f] = [canary(), canary(), canary(), canary(), canary(), canary()];
    const body = {
      jsonrpc: "2.0", id: 7, error: { code: -32600, message: "Invalid Request" },
      result: {
        items: [{ nested: { deeper: { Access_Token: a } } }, { headers: { Authorization: `Bearer ${b}` } }],
        api_key: [c, [d, 42]],
        note: `Bearer ${e}`,
        text: JSON.stringify({ refresh_token: f }),
        nextPageToken: "page-2", progressToken: "p1", code: 12,
      },
    };
    const out = redactor.body(JSON.stringify(body), "application/vnd.api+json");
    expectNoCanary(out, a, b, c, d, e, f);
    expect(JSON.parse(out)).toEqual({
      ...body,
      result: {
        ...body.result,
        items: [{ nested: { deeper: { Access_Token: marker(a) } } }, { headers: { Authorization: `Bearer ${marker(b)}` } }],
        api_key: [marker(c), [marker(d), 42]],
        note: `Bearer ${marker(e)}`,
        text: JSON.stringify({ refresh_token: marker(f) }),
      },
    });
  });

  it("returns JSON without secrets unchanged, formatting included", () => {
    const bodies = [
      '{\n  "jsonrpc": "2.0",\n  "id": 1,\n  "error": { "code": -32600, "message": "Invalid Request" }\n}',
      '{"issuer":"https://as.example","token_endpoint":"https://as.example/token","code_challenge_methods_supported":["S256"]}',
      '{"token_type":"Bearer","pageToken":"abc","error_description":"Bearer token required"}',
      '{"name":"login","inputSchema":{"type":"object","properties":{"code":{"type":"string"},"password":{"type":"string","description":"Your password"}}}}',
      '{"a":"\\u00e9","b":1.0}',
      "[]",
      "",
    ];
    for (const body of bodies) expect(redactor.body(body, "application/json")).toBe(body);
  });

  it("redacts keys spelled with escapes and keeps a __proto__ key a plain key", () => {
    const secret = canary();
    const out = redactor.body(`{"__proto__":{"x":1},"access\\u005ftoken":"${secret}"}`, "application/json");
    expect(out).toBe(`{"__proto__":{"x":1},"access_token":"${marker(secret)}"}`);
  });

  it("falls back to the text scan when the JSON is cut, even mid-secret", () => {
    const [access, refresh] = [canary(), canary()];
    const body = `{"token_type":"Bearer","access_token":"${access}","refresh_token":"${refresh}","scope":"mcp"}`;
    for (let cut = 1; cut < body.length; cut++) {
      const out = redactor.body(body.slice(0, cut), "application/json");
      expectNoCanary(out, access, refresh);
      expect(out.startsWith(body.slice(0, Math.min(cut, 38)))).toBe(true); // everything before the secret is kept
    }
    expect(redactor.body(body.slice(0, -20), "application/json")).toBe(
      `{"token_type":"Bearer","access_token":"${marker(access)}","refresh_token":"${marker(refresh.slice(0, -4))}`,
    );
    expect(redactor.body(`{"access_token": "ab\\"c\\u00`, "application/json")).toBe(`{"access_token": "${marker('ab\\"c\\u00')}`);
  });
});

describe("form and SSE bodies", () => {
  it("redacts a token request form and a login form", () => {
    const [code, verifier, secret, refresh, coda, password] = [canary(), canary(), canary(), canary(), canary(), canary()];
    const form = "application/x-www-form-urlencoded";
    expect(redactor.body(`grant_type=authorization_code&code=${code}&code_verifier=${verifier}&client_id=c1&client_secret=${secret}&redirect_uri=https%3A%2F%2Fc%2Fcb&resource=https%3A%2F%2Fmcp`, form)).toBe(
      `grant_type=authorization_code&code=${marker(code)}&code_verifier=${marker(verifier)}&client_id=c1&client_secret=${marker(secret)}&redirect_uri=https%3A%2F%2Fc%2Fcb&resource=https%3A%2F%2Fmcp`,
    );
    expect(redactor.body(`grant_type=refresh_token&refresh_token=${refresh}`, form)).toBe(`grant_type=refresh_token&refresh_token=${marker(refresh)}`);
    expect(redactor.body(`codaToken=${coda}&password=${password}&state=s`, form)).toBe(`codaToken=${marker(coda)}&password=${marker(password)}&state=s`);
    expect(redactor.body(`coda_token=${coda}`, form)).toBe(`coda_token=${marker(coda)}`);
  });

  it("redacts each data line of an event stream and keeps the framing", () => {
    const token = canary();
    const stream = `event: message\r\nid: 1\r\ndata: {"jsonrpc":"2.0","id":1,"result":{"access_token":"${token}"}}\r\n\r\n: comment\ndata:{"partial":"x","refresh_token":"${token.slice(0, 20)}`;
    expect(redactor.body(stream, "text/event-stream")).toBe(
      `event: message\r\nid: 1\r\ndata: {"jsonrpc":"2.0","id":1,"result":{"access_token":"${marker(token)}"}}\r\n\r\n: comment\ndata:{"partial":"x","refresh_token":"${marker(token.slice(0, 20))}`,
    );
    const plain = 'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"tools":[]}}\n\n';
    expect(redactor.body(plain, "text/event-stream")).toBe(plain);
  });
});

describe("the text scan", () => {
  it("catches key=value pairs, quoted values and Bearer credentials in plain text", () => {
    const [a, b, c, d, e] = [canary(), canary(), canary(), canary(), canary()];
    const html = `<a href="https://c.example/cb?code=${a}&amp;state=s">go</a> API_KEY="${b}" password='${c}'\nAuthorization: Bearer ${d}\nauth=Bearer ${e}`;
    const out = redactor.body(html, "text/html");
    expectNoCanary(out, a, b, c, d, e);
    expect(out).toBe(
      `<a href="https://c.example/cb?code=${marker(a)}&amp;state=s">go</a> API_KEY="${marker(b)}" password='${marker(c)}'\nAuthorization: Bearer ${marker(d)}\nauth=Bearer ${marker(e)}`,
    );
  });

  it("leaves non-secrets alone", () => {
    const texts = [
      "status_code=200 error_code=x code_challenge=abc client_id=c state=s",
      'Bearer realm="mcp", error="invalid_token", resource_metadata="https://x/.well-known/oauth-protected-resource"',
      "The Bearer token is missing. Use Bearer authentication.",
      "token_type=Bearer&pageToken=p&token_endpoint=https://as/token",
      "plain text without anything",
    ];
    for (const text of texts) expect(redactor.body(text, null)).toBe(text);
  });

  it("is idempotent", () => {
    const token = canary();
    const once = redactor.body(`{"access_token":"${token}","x":"Bearer ${token}"}`, "application/json");
    expect(redactor.body(once, "application/json")).toBe(once);
    expect(redactor.text(once)).toBe(once);
  });
});

describe("robustness", () => {
  const kinds = ["application/json", "application/x-www-form-urlencoded", "text/event-stream", "text/plain", null];

  it("never throws on random input", () => {
    const alphabet = '{}[]":,=&?#;%+\\ \n\r\tabcdeBearer token code secret access_token password _-.';
    for (let i = 0; i < 300; i++) {
      const bytes = randomBytes(1 + (i % 200));
      const inputs = [bytes.toString("utf8"), bytes.toString("latin1"), Array.from(bytes, (x) => alphabet[x % alphabet.length]).join("")];
      for (const input of inputs) {
        for (const kind of kinds) expect(() => redactor.body(input, kind)).not.toThrow();
        expect(() => redactor.query(input)).not.toThrow();
        expect(() => redactor.url(input)).not.toThrow();
        expect(() => redactor.headers([[input, input], ["Cookie", input], ["Set-Cookie", input], ["Authorization", input], ["Location", input]])).not.toThrow();
      }
    }
  });

  it("handles huge and deeply nested inputs in linear time", () => {
    const mib = 1024 * 1024;
    const inputs = [
      "a".repeat(mib),
      "&".repeat(mib),
      `{"access_token":"${"\\\\".repeat(mib / 2)}`,
      `{"access_token":"${"x".repeat(mib)}`,
      `${"[".repeat(100_000)}"Bearer abc"${"]".repeat(100_000)}`,
      "code=".repeat(mib / 5),
      `"token" : ${" ".repeat(mib)}`,
      "Bearer ".repeat(mib / 7),
      `password="${"x".repeat(mib)}`,
      `a=${"b=".repeat(mib / 2)}`,
    ];
    const started = Date.now();
    for (const input of inputs) for (const kind of kinds) expect(() => redactor.body(input, kind)).not.toThrow();
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe("carriers found in real traffic (issue 12)", () => {
  const r = createRedactor(randomBytes(32), { headers: ["X-Tenant-Session"], fields: ["tenant_pin"], paths: ["^/mcp/s/([^/]+)", "/k/(\\d{4,})"] });
  const m = (secret: string) => `[redacted:${r.fingerprint(secret)}]`;
  const jwt = () => `eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.${canary()}`;
  /** 43 base64url chars, as random as a real token (the canaries are not). */
  const randomToken = () => randomBytes(32).toString("base64url");

  it("redacts identity-aware-proxy JWT headers, the operator's headers, and smuggled WebSocket subprotocols", () => {
    const [a, b, c, custom, ws] = [jwt(), jwt(), jwt(), canary(), canary()];
    expect(r.headers([
      ["Cf-Access-Jwt-Assertion", a], ["X-Goog-Iap-Jwt-Assertion", b], ["X-Jwt-Assertion", c], ["x-tenant-session", custom],
      ["Sec-WebSocket-Protocol", `mcp, graphql-ws, bearer.${ws}`], ["Access-Control-Allow-Credentials", "true"],
    ])).toEqual([
      ["Cf-Access-Jwt-Assertion", m(a)], ["X-Goog-Iap-Jwt-Assertion", m(b)], ["X-Jwt-Assertion", m(c)], ["x-tenant-session", m(custom)],
      ["Sec-WebSocket-Protocol", `mcp, graphql-ws, ${m(`bearer.${ws}`)}`], ["Access-Control-Allow-Credentials", "true"],
    ]);
  });

  it("redacts JSON fields by more spellings, and an object under a secret key whole unless it is a schema", () => {
    const [k, p, c, a, j, pin, inner] = [canary(), canary(), canary(), canary(), canary(), canary(), canary()];
    const body = JSON.stringify({ privateKey: k, passphrase: p, credentials: c, access_key: a, jwt: j, tenant_pin: pin, creds: { credentials: { value: inner } } });
    expect(JSON.parse(r.body(body, "application/json"))).toEqual({
      privateKey: m(k), passphrase: m(p), credentials: m(c), access_key: m(a), jwt: m(j), tenant_pin: m(pin), creds: { credentials: { value: m(inner) } },
    });
    const schema = JSON.stringify({ inputSchema: { properties: { password: { type: "string", description: "the password" } } } });
    expect(r.body(schema, "application/json")).toBe(schema);
  });

  it("redacts query parameters key, sig, X-Amz-Signature, id_token_hint; a JWT or a random token under any name", () => {
    const [key, sig, amz, hint, token] = [canary(), canary(), canary(), jwt(), jwt()];
    const random = randomToken();
    expect(r.query(`key=${key}&sig=${sig}&X-Amz-Signature=${amz}&id_token_hint=${hint}&x=${token}&y=${random}&n=1`)).toBe(
      `key=${m(key)}&sig=${m(sig)}&X-Amz-Signature=${m(amz)}&id_token_hint=${m(hint)}&x=${m(token)}&y=${m(random)}&n=1`,
    );
  });

  it("leaves what the analysis reads: state, code_challenge, client_id, UUIDs, hex ids, identifiers, URLs", () => {
    const challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const state = randomToken();
    const qs = `response_type=code&client_id=${randomToken()}&state=${state}&code_challenge=${challenge}&code_challenge_method=S256&redirect_uri=https%3A%2F%2Fclaude.ai%2Fapi%2Fmcp%2Fauth_callback`;
    expect(r.query(qs)).toBe(qs);
    const session = randomToken();
    expect(r.headers([["Mcp-Session-Id", session], ["X-Request-Id", "6f1c2b9e-5d4a-4f7e-9a51-0c2d3e4f5a6b"]])).toEqual([["Mcp-Session-Id", session], ["X-Request-Id", "6f1c2b9e-5d4a-4f7e-9a51-0c2d3e4f5a6b"]]);
    const text = "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, getDocumentTablesAndColumnsV2024, /api/v1/docs/AbCdEf123/tables/grid-xyz, https://auth.example.com/oauth2/v1/authorize";
    expect(r.text(text)).toBe(text);
    expect(r.body(JSON.stringify({ state, id: "c4a1d9b0-0d7e-4b0a-9c1e-2f3a4b5c6d7e" }), "application/json")).toBe(JSON.stringify({ state, id: "c4a1d9b0-0d7e-4b0a-9c1e-2f3a4b5c6d7e" }));
  });

  it("redacts userinfo, fragments and the operator's secret path segments in request targets, Location and bodies", () => {
    const [user, frag, seg, num] = [canary(), canary(), canary(), "48213377"];
    expect(r.path(`http://bob:${user}@mcp.example/abs`)).toBe(`http://${m(`bob:${user}`)}@mcp.example/abs`);
    expect(r.path(`/cb#access_token=${frag}&state=s`)).toBe(`/cb#access_token=${m(frag)}&state=s`);
    expect(r.query(`a=1#access_token=${frag}`)).toBe(`a=1#access_token=${m(frag)}`);
    expect(r.path(`/mcp/s/${seg}/mcp`)).toBe(`/mcp/s/${m(seg)}/mcp`);
    expect(r.path(`/k/${num}`)).toBe(`/k/${m(num)}`);
    expect(r.headers([["Location", `https://me:${user}@client.example/mcp/s/${seg}/mcp#access_token=${frag}`], ["Referer", `https://lens.example/mcp/s/${seg}/x`]])).toEqual([
      ["Location", `https://${m(`me:${user}`)}@client.example/mcp/s/${m(seg)}/mcp#access_token=${m(frag)}`],
      ["Referer", `https://lens.example/mcp/s/${m(seg)}/x`],
    ]);
    expect(r.body(`{"next":"https://lens.example/mcp/s/${seg}/mcp"}`, "application/json")).toBe(`{"next":"https://lens.example/mcp/s/${m(seg)}/mcp"}`);
  });

  it("redacts form_post inputs, code= in Refresh and meta refresh, `password:` text, Basic and Bearer credentials in prose", () => {
    const [code, refresh, meta, pw, basic] = [canary(), canary(), canary(), canary(), Buffer.from(`u:${canary()}`).toString("base64")];
    const html = `<meta http-equiv="refresh" content="0;url=https://c.example/cb?code=${meta}"><input type="hidden" value="${code}" name="code"/><input name="state" value="s1">`;
    expect(r.body(html, "text/html")).toBe(`<meta http-equiv="refresh" content="0;url=https://c.example/cb?code=${m(meta)}"><input type="hidden" value="${m(code)}" name="code"/><input name="state" value="s1">`);
    expect(r.headers([["Refresh", `0; url=https://c.example/cb?code=${refresh}&state=s1`]])).toEqual([["Refresh", `0; url=https://c.example/cb?code=${m(refresh)}&state=s1`]]);
    expect(r.text(`user: alice\npassword: ${pw}\nAuthorization: Basic ${basic}\nerror code: 404, invalid authorization code: expired`)).toBe(
      `user: alice\npassword: ${m(pw)}\nAuthorization: Basic ${m(basic)}\nerror code: 404, invalid authorization code: expired`,
    );
    expect(r.text("Basic realm=\"x\", basic auth is off")).toBe("Basic realm=\"x\", basic auth is off");
  });

  it("joins an SSE event's data lines before parsing: a key and its value on different lines", () => {
    const secret = canary();
    const stream = `event: message\ndata: {"result":{"access_token":\ndata: "${secret}"}}\n\nevent: message\ndata: {"ok":true}\n\n`;
    const out = r.body(stream, "text/event-stream");
    expectNoCanary(out, secret);
    expect(out).toContain(m(secret));
    expect(out.endsWith(`\n\nevent: message\ndata: {"ok":true}\n\n`)).toBe(true);
  });

  it("redacts multipart fields by name, and the other parts by their own type", () => {
    const [pw, cs, tok] = [canary(), canary(), canary()];
    const body =
      `--B\r\nContent-Disposition: form-data; name="username"\r\n\r\nalice\r\n` +
      `--B\r\nContent-Disposition: form-data; name="password"\r\n\r\n${pw}\r\n` +
      `--B\r\nContent-Disposition: form-data; name="client_secret"\r\n\r\n${cs}\r\n` +
      `--B\r\nContent-Disposition: form-data; name="meta"\r\nContent-Type: application/json\r\n\r\n{"refresh_token":"${tok}"}\r\n--B--\r\n`;
    const out = r.body(body, 'multipart/form-data; boundary="B"');
    expectNoCanary(out, pw, cs, tok);
    expect(out).toBe(body.replace(pw, m(pw)).replace(cs, m(cs)).replace(tok, m(tok)));
  });
});

describe("tool data is not over-redacted (what real clients showed)", () => {
  const r = createRedactor(randomBytes(32));
  const m = (secret: string) => `[redacted:${r.fingerprint(secret)}]`;
  const rpc = (fields: Record<string, unknown>) => JSON.stringify({ jsonrpc: "2.0", id: 7, ...fields });

  it("keeps a tool's own `key`, `code`, `pin`, `sig` in JSON-RPC, and still redacts unambiguous names and shapes there", () => {
    const [token, apiKey] = [canary(), canary()];
    const jwt = `eyJhbGciOiJIUzI1NiJ9.${Buffer.from(canary()).toString("base64url")}.c2lnbmF0dXJlc2lnbmF0dXJl`;
    const args = { key: "ENG-123", code: "print(sum(range(10)))", pin: "1234", sig: "v2", token, api_key: apiKey, note: jwt };
    const out = r.body(rpc({ method: "tools/call", params: { name: "jira", arguments: args } }), "application/json");
    expect(JSON.parse(out).params.arguments).toEqual({ ...args, token: m(token), api_key: m(apiKey), note: m(jwt) });
    const text = JSON.stringify({ key: "ENG-1", pin: "0000", password: token });
    const result = r.body(rpc({ result: { content: [{ type: "text", text }] } }), "application/json");
    expect(JSON.parse(JSON.parse(result).result.content[0].text)).toEqual({ key: "ENG-1", pin: "0000", password: m(token) });
  });

  it("still redacts `code` and `key` outside JSON-RPC: OAuth JSON, forms, queries", () => {
    const [code, key] = [canary(), canary()];
    expect(JSON.parse(r.body(JSON.stringify({ grant_type: "authorization_code", code }), "application/json")).code).toBe(m(code));
    expect(r.body(`grant_type=authorization_code&code=${code}`, "application/x-www-form-urlencoded")).toBe(`grant_type=authorization_code&code=${m(code)}`);
    expect(r.query(`key=${key}&q=1`)).toBe(`key=${m(key)}&q=1`);
  });

  it("keeps URL paths in text, and marks only a random segment of one", () => {
    const page = "https://coda.io/d/_dAbCDeFGH/Long-notes_suL0ngPg";
    expect(r.text(`see ${page}`)).toBe(`see ${page}`);
    const secret = "Zq8Jx0T3kLmN9pQrS7tUvW2yA4bC6dE8fG1hI";
    expect(r.text(`https://x.io/s/${secret}/mcp`)).toBe(`https://x.io/s/${m(secret)}/mcp`);
  });

  it("scans JSON-as-text inside a body cut before its end", () => {
    const secret = canary();
    const cut = `{"result":{"content":[{"type":"text","text":"{\\"note\\":\\"x\\",\\"client_secret\\":\\"${secret}\\",\\"more`;
    const out = r.body(cut, "application/json");
    expectNoCanary(out, secret);
    expect(out).toContain(m(secret));
  });
});
