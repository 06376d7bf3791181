// Client ID Metadata Documents: what a client_id URL may be, which addresses we connect to, and
// how documents are fetched, checked and cached, against a real https server on 127.0.0.1.
import type { IncomingMessage, ServerResponse } from "node:http";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

import {
  ClientMetadataError,
  ClientMetadataFetcher,
  freshnessSeconds,
  isClientIdUrl,
  isPublicAddress,
  type ClientMetadataFetcherOptions,
} from "../../server/auth/client-metadata-document.js";
import { tempDir } from "../helpers/artifacts.js";
import { startHttpsOnLoopback } from "../helpers/tls.js";

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const tmp = tempDir("mcp-lens-cimd-");
let cert: string;
let stopHost: (() => Promise<void>) | undefined;
let origin: string; // https://127.0.0.1:<port>
let port: number;
const routes = new Map<string, Handler>();
const hits = new Map<string, number>();

/** Serves `handler` at `pathname` (each test uses its own paths) and returns the full URL. */
function serve(pathname: string, handler: Handler): string {
  routes.set(pathname, handler);
  return `${origin}${pathname}`;
}

const hitsOf = (url: string) => hits.get(new URL(url).pathname) ?? 0;

function documentFor(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { client_id: url, client_name: "Example Client", redirect_uris: ["https://client.example/callback"], ...extra };
}

/** A JSON document at `pathname` whose client_id is its own URL unless `body` says otherwise. */
function serveDocument(pathname: string, body?: (url: string) => unknown, headers: Record<string, string> = {}): string {
  const url = `${origin}${pathname}`;
  return serve(pathname, (_req, res) => {
    res.writeHead(200, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(body ? body(url) : documentFor(url)));
  });
}

function fetcher(options: ClientMetadataFetcherOptions = {}): ClientMetadataFetcher {
  return new ClientMetadataFetcher({ allowPrivateAddresses: true, ca: cert, ...options });
}

/** The ClientMetadataError message `promise` rejects with. */
async function refusal(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ClientMetadataError);
  return (error as ClientMetadataError).message;
}

beforeAll(async () => {
  const host = await startHttpsOnLoopback(tmp.dir, (req, res) => {
    const pathname = new URL(req.url ?? "/", "https://x").pathname;
    hits.set(pathname, (hits.get(pathname) ?? 0) + 1);
    const handler = routes.get(pathname);
    if (handler) return handler(req, res);
    res.writeHead(404, { "content-type": "text/plain" }).end("not here");
  });
  cert = host.certificate.cert;
  origin = host.origin;
  port = Number(new URL(origin).port);
  stopHost = host.close;
});

afterAll(async () => {
  await stopHost?.();
  tmp.cleanup();
});

describe("isClientIdUrl", () => {
  it.each([
    ["https://client.example/metadata.json", true],
    ["https://client.example:8443/a/b?v=1", true],
    ["https://client.example/..well/x", true],
    ["https://client.example", false],
    ["https://client.example/", false],
    ["https://client.example/?x=1", false],
    ["http://client.example/metadata.json", false],
    ["https://client.example/metadata.json#frag", false],
    ["https://user:pw@client.example/metadata.json", false],
    ["https://@client.example/metadata.json", false],
    ["https://client.example/a/../metadata.json", false],
    ["https://client.example/a/./metadata.json", false],
    ["https://client.example/a/%2E%2e/metadata.json", false],
    ["https://client.example\\..\\metadata.json", false],
    ["https:///metadata.json", false],
    ["https://client.example/meta data.json", false],
    ["my-client-id", false],
    [`https://client.example/${"a".repeat(2_001)}`, false],
  ])("%s → %s", (clientId, expected) => {
    expect(isClientIdUrl(clientId)).toBe(expected);
  });
});

describe("isPublicAddress", () => {
  it.each([
    ["8.8.8.8", true],
    ["1.1.1.1", true],
    ["2606:4700:4700::1111", true],
    ["::ffff:8.8.8.8", true],
    ["127.0.0.1", false],
    ["127.255.0.9", false],
    ["::1", false],
    ["[::1]", false],
    ["::", false],
    ["0.0.0.0", false],
    ["10.1.2.3", false],
    ["172.16.0.1", false],
    ["172.31.255.255", false],
    ["172.32.0.1", true],
    ["192.168.1.1", false],
    ["100.64.0.1", false],
    ["169.254.169.254", false],
    ["192.0.0.8", false],
    ["192.0.2.1", false],
    ["198.18.0.1", false],
    ["198.19.255.1", false],
    ["198.51.100.1", false],
    ["203.0.113.1", false],
    ["224.0.0.1", false],
    ["255.255.255.255", false],
    ["fc00::1", false],
    ["fd12:3456::1", false],
    ["fe80::1", false],
    ["ff02::1", false],
    ["2001:db8::1", false],
    ["64:ff9b::7f00:1", false],
    ["::ffff:10.0.0.1", false],
    ["::ffff:127.0.0.1", false],
    ["::ffff:7f00:1", false],
    ["::ffff:a9fe:a9fe", false],
    ["::10.0.0.1", false],
    ["localhost", false],
    ["", false],
  ])("%s → %s", (address, expected) => {
    expect(isPublicAddress(address)).toBe(expected);
  });
});

describe("ClientMetadataFetcher", () => {
  it("fetches, validates and normalises a document", async () => {
    const url = serveDocument("/happy.json", (self) => documentFor(self, { client_uri: "https://client.example", scope: "read", grant_types: ["authorization_code"], software_id: "dropped" }));
    expect(await fetcher().resolve(url)).toEqual({
      client_id: url,
      client_name: "Example Client",
      redirect_uris: ["https://client.example/callback"],
      token_endpoint_auth_method: "none",
      client_uri: "https://client.example",
      scope: "read",
      grant_types: ["authorization_code"],
    });
  });

  it("refuses a loopback address without allowPrivateAddresses, for an IP literal and for localhost", async () => {
    const literal = serveDocument("/loopback-literal.json");
    const strict = new ClientMetadataFetcher({ ca: cert });
    expect(await refusal(strict.resolve(literal))).toBe(`Could not fetch the client metadata document ${literal}: it resolves to 127.0.0.1, a private or loopback address`);

    serveDocument("/loopback-name.json");
    const named = `https://localhost:${port}/loopback-name.json`;
    expect(await refusal(strict.resolve(named))).toMatch(/^Could not fetch the client metadata document https:\/\/localhost:\d+\/loopback-name\.json: it resolves to (127\.0\.0\.1|::1), a private or loopback address$/);
    expect(hitsOf(literal) + hitsOf(named)).toBe(0);

    // The same name with the development flag: the lookup resolves and connects (the certificate names localhost).
    serveDocument("/loopback-allowed.json", () => documentFor(`https://localhost:${port}/loopback-allowed.json`));
    await expect(fetcher().resolve(`https://localhost:${port}/loopback-allowed.json`)).resolves.toMatchObject({ client_name: "Example Client" });
  });

  it("verifies the server's certificate (the test CA is trusted only when passed as ca)", async () => {
    const url = serveDocument("/untrusted.json");
    const withoutCa = new ClientMetadataFetcher({ allowPrivateAddresses: true });
    expect(await refusal(withoutCa.resolve(url))).toMatch(/: the connection failed \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)\)$/);
  });

  it("refuses a plain http client_id without a request", async () => {
    const url = serveDocument("/plain.json");
    const message = await refusal(fetcher().resolve(url.replace("https:", "http:")));
    expect(message).toContain("is not an https URL with a path");
    expect(hitsOf(url)).toBe(0);
  });

  it("refuses a document that names another client_id", async () => {
    const url = serveDocument("/mismatch.json", () => documentFor(`${origin}/other.json`));
    expect(await refusal(fetcher().resolve(url))).toBe(`The client metadata document ${url} names client_id "${origin}/other.json"; it must name its own URL`);
  });

  it("refuses a document without redirect_uris", async () => {
    const url = serveDocument("/no-redirects.json", (self) => ({ client_id: self, client_name: "No Redirects" }));
    expect(await refusal(fetcher().resolve(url))).toBe(`The client metadata document ${url} lists no redirect_uris`);
  });

  it("refuses a document with a javascript: redirect URI", async () => {
    const url = serveDocument("/javascript.json", (self) => documentFor(self, { redirect_uris: ["https://ok.example/cb", "javascript:alert(1)"] }));
    expect(await refusal(fetcher().resolve(url))).toBe(`The client metadata document ${url} has a redirect_uri "javascript:alert(1)" that uses the javascript: scheme`);
  });

  it("refuses shared secrets and private_key_jwt", async () => {
    const basic = serveDocument("/secret-basic.json", (self) => documentFor(self, { token_endpoint_auth_method: "client_secret_basic" }));
    expect(await refusal(fetcher().resolve(basic))).toBe(`The client metadata document ${basic} asks for "client_secret_basic", but a metadata document cannot use a shared secret`);
    const secret = serveDocument("/secret-field.json", (self) => documentFor(self, { client_secret: "s3cret" }));
    expect(await refusal(fetcher().resolve(secret))).toContain("contains a client_secret, but a metadata document cannot use a shared secret");
    const jwt = serveDocument("/private-key-jwt.json", (self) => documentFor(self, { token_endpoint_auth_method: "private_key_jwt" }));
    expect(await refusal(fetcher().resolve(jwt))).toContain("which this server does not support");
  });

  it("quotes at most about 100 characters of a hostile value, escaped", async () => {
    const url = serveDocument("/long-id.json", () => documentFor(`https://evil.example/\u202e${"x".repeat(5_000)}`));
    const message = await refusal(fetcher({ maxBytes: 10_000 }).resolve(url));
    expect(message).toMatch(/names client_id "https:\/\/evil\.example\/\\u202ex{78}\\u2026"; it must name its own URL$/);
  });

  it("refuses a response that is not JSON, or has no Content-Type", async () => {
    const html = serveDocument("/html.json", undefined, { "content-type": "text/html" });
    expect(await refusal(fetcher().resolve(html))).toBe(`Could not fetch the client metadata document ${html}: its Content-Type is "text/html", not application/json`);
    const untyped = serve("/untyped.json", (_req, res) => {
      res.removeHeader("content-type");
      res.end(JSON.stringify(documentFor(`${origin}/untyped.json`)));
    });
    expect(await refusal(fetcher().resolve(untyped))).toContain(`its Content-Type is "missing"`);
    const broken = serve("/broken.json", (_req, res) => res.writeHead(200, { "content-type": "application/json; charset=utf-8" }).end("{not json"));
    expect(await refusal(fetcher().resolve(broken))).toBe(`Could not fetch the client metadata document ${broken}: it is not valid JSON`);
  });

  it("reports an HTTP error status", async () => {
    const url = `${origin}/missing.json`;
    expect(await refusal(fetcher().resolve(url))).toBe(`Could not fetch the client metadata document ${url}: HTTP 404`);
  });

  it("stops reading a body past maxBytes and closes the connection", async () => {
    const megabyte = 1024 * 1024;
    const seen = { written: 0, finished: false, closed: false };
    const url = serve("/huge.json", (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" }); // chunked: no Content-Length to refuse up front
      res.on("close", () => (seen.closed = true));
      const chunk = Buffer.alloc(16 * 1024, 0x20);
      const pump = () => {
        if (res.destroyed) return;
        if (seen.written >= megabyte) return void res.end(() => (seen.finished = true));
        res.write(chunk);
        seen.written += chunk.length;
        setTimeout(pump, 2);
      };
      pump();
    });
    expect(await refusal(fetcher().resolve(url))).toBe(`Could not fetch the client metadata document ${url}: it is larger than 5120 bytes`);
    await vi.waitFor(() => expect(seen.closed).toBe(true));
    expect(seen.finished).toBe(false);
    expect(seen.written).toBeLessThan(megabyte / 2);
  });

  it("refuses a declared Content-Length past maxBytes without waiting for the body", async () => {
    // Only the first bytes ever come: a fetcher that waited for the body would time out instead.
    const url = serve("/declared.json", (_req, res) => {
      res.writeHead(200, { "content-type": "application/json", "content-length": "6000" }).write("{");
    });
    expect(await refusal(fetcher({ timeoutMs: 2_000 }).resolve(url))).toBe(`Could not fetch the client metadata document ${url}: it is larger than 5120 bytes`);
  });

  it("gives up after timeoutMs and closes the connection", { timeout: 5_000 }, async () => {
    let closed = false;
    const url = serve("/silent.json", (req) => req.socket.on("close", () => (closed = true)));
    const started = Date.now();
    expect(await refusal(fetcher({ timeoutMs: 300 }).resolve(url))).toBe(`Could not fetch the client metadata document ${url}: timed out after 300 ms`);
    expect(Date.now() - started).toBeLessThan(2_000);
    await vi.waitFor(() => expect(closed).toBe(true));
  });

  it("follows up to maxRedirects redirects, and names the original URL as the client_id", async () => {
    const redirect = (to: string): Handler => (_req, res) => res.writeHead(302, { location: to }).end();
    const first = `${origin}/chain-1.json`;
    serve("/chain-1.json", redirect("/chain-2.json"));
    serve("/chain-2.json", redirect(`${origin}/chain-3.json`));
    serve("/chain-3.json", redirect("chain-doc.json"));
    serveDocument("/chain-doc.json", () => documentFor(first));
    await expect(fetcher({ maxRedirects: 3 }).resolve(first)).resolves.toMatchObject({ client_id: first });
    expect(hitsOf(`${origin}/chain-doc.json`)).toBe(1);

    expect(await refusal(fetcher({ maxRedirects: 2 }).resolve(first))).toBe(`Could not fetch the client metadata document ${first}: more than 2 redirects`);
    expect(hitsOf(`${origin}/chain-doc.json`)).toBe(1);
  });

  it("refuses a redirect to plain http", async () => {
    const target = `http://127.0.0.1:${port}/plain-target.json`;
    const url = serve("/to-http.json", (_req, res) => res.writeHead(301, { location: target }).end());
    expect(await refusal(fetcher().resolve(url))).toBe(`Could not fetch the client metadata document ${url}: it redirects to "${target}", which is not https`);
  });

  it("caches for max-age, capped by maxCacheSeconds, and refetches once stale", async () => {
    let clock = 1_000_000;
    const cached = fetcher({ now: () => clock, maxCacheSeconds: 600 });
    const url = serveDocument("/max-age.json", undefined, { "cache-control": "public, max-age=3600" });
    await cached.resolve(url);
    await cached.resolve(url);
    expect(hitsOf(url)).toBe(1);
    clock += 599_000;
    await cached.resolve(url);
    expect(hitsOf(url)).toBe(1);
    clock += 2_000; // past the 600 s cap, well before max-age
    await cached.resolve(url);
    expect(hitsOf(url)).toBe(2);
  });

  it("does not cache no-store, no-cache, or a response without freshness", async () => {
    const cached = fetcher();
    for (const [name, headers] of [["no-store", { "cache-control": "no-store, max-age=3600" }], ["no-cache", { "cache-control": "no-cache" }], ["none", {}]] as const) {
      const url = serveDocument(`/uncached-${name}.json`, undefined, headers);
      await cached.resolve(url);
      await cached.resolve(url);
      expect(hitsOf(url), name).toBe(2);
    }
  });

  it("computes freshness from max-age, Expires and Age", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(freshnessSeconds({ "cache-control": "max-age=120" }, now, 86_400)).toBe(120);
    expect(freshnessSeconds({ "cache-control": "max-age=120", age: "100" }, now, 86_400)).toBe(20);
    expect(freshnessSeconds({ "cache-control": "max-age=999999" }, now, 86_400)).toBe(86_400);
    expect(freshnessSeconds({ "cache-control": "max-age=abc" }, now, 86_400)).toBe(0);
    expect(freshnessSeconds({ expires: "Thu, 01 Jan 2026 00:05:00 GMT" }, now, 86_400)).toBe(300);
    expect(freshnessSeconds({ expires: "Thu, 01 Jan 2026 00:05:00 GMT", date: "Wed, 31 Dec 2025 23:59:00 GMT" }, now, 86_400)).toBe(360);
    expect(freshnessSeconds({ expires: "0" }, now, 86_400)).toBe(0);
    expect(freshnessSeconds({}, now, 86_400)).toBe(0);
  });

  it("keeps at most maxCacheEntries documents, dropping the oldest", async () => {
    const cached = fetcher({ maxCacheEntries: 2 });
    const urls = ["/lru-a.json", "/lru-b.json", "/lru-c.json"].map((p) => serveDocument(p, undefined, { "cache-control": "max-age=60" }));
    for (const url of urls) await cached.resolve(url);
    await cached.resolve(urls[2]!);
    await cached.resolve(urls[1]!);
    expect(urls.map(hitsOf)).toEqual([1, 1, 1]);
    await cached.resolve(urls[0]!);
    expect(urls.map(hitsOf)).toEqual([2, 1, 1]);

    const uncached = fetcher({ maxCacheEntries: 0 });
    await uncached.resolve(urls[1]!);
    await uncached.resolve(urls[1]!);
    expect(urls.map(hitsOf)).toEqual([2, 3, 1]);
  });

  it("shares one request between concurrent resolves", async () => {
    const url = `${origin}/slow.json`;
    serve("/slow.json", (_req, res) => {
      setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(documentFor(url))), 100);
    });
    const shared = fetcher();
    const [a, b, c] = await Promise.all([shared.resolve(url), shared.resolve(url), shared.resolve(url)]);
    expect(a).toEqual(b);
    expect(b).toEqual(c);
    expect(hitsOf(url)).toBe(1);
  });

  it("fetches at most maxConcurrentFetches documents at once; a refused URL is not remembered", async () => {
    const slow = (name: string) => {
      const url = `${origin}/busy-${name}.json`;
      serve(`/busy-${name}.json`, (_req, res) => {
        setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(documentFor(url))), 150);
      });
      return url;
    };
    const busy = fetcher({ maxConcurrentFetches: 2 });
    const [a, b, c] = [slow("a"), slow("b"), slow("c")];
    const first = [busy.resolve(a), busy.resolve(b), busy.resolve(a)];
    expect(await refusal(busy.resolve(c))).toBe(`Could not fetch the client metadata document ${c}: 2 other documents are being fetched; try again in a moment`);
    await Promise.all(first);
    expect(hitsOf(c)).toBe(0);
    await expect(busy.resolve(c)).resolves.toMatchObject({ client_id: c });
  });

  it("remembers a failure for failureCacheSeconds", async () => {
    let clock = 5_000_000;
    const remembering = fetcher({ now: () => clock, failureCacheSeconds: 30 });
    const url = `${origin}/gone.json`;
    const first = await refusal(remembering.resolve(url));
    expect(await refusal(remembering.resolve(url))).toBe(first);
    expect(hitsOf(url)).toBe(1);
    clock += 31_000;
    await refusal(remembering.resolve(url));
    expect(hitsOf(url)).toBe(2);
  });
});
