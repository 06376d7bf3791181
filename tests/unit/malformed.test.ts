import { describe, expect, it } from "vitest";
import { isMalformedRequest, malformedAnswer, malformedExchange, readRequestHead } from "../../proxy/forward/malformed.js";

const err = (code: string, reason?: string) => Object.assign(new Error(`Parse Error: ${reason ?? code}`), { code, reason });

describe("readRequestHead", () => {
  it("reads a known method, the target and the whole header lines", () => {
    const head = readRequestHead(Buffer.from("POST /mcp?x=1 HTTP/1.1\r\nHost: a.example\r\nX-Cut: par"));
    expect(head).toEqual({ method: "POST", url: "/mcp?x=1", headers: [["Host", "a.example"]] });
  });

  it("keeps unknown methods and binary garbage out of the method (a metric label)", () => {
    expect(readRequestHead(Buffer.from("FROB / HTTP/1.1\r\n\r\n")).method).toBe("-");
    expect(readRequestHead(Buffer.from([0, 1, 2, 0xff, 13, 10, 13, 10]))).toEqual({ method: "-", url: "-", headers: [] });
    expect(readRequestHead(undefined)).toEqual({ method: "-", url: "-", headers: [] });
  });

  it("cuts header values at 1 KiB", () => {
    const head = readRequestHead(Buffer.from(`GET / HTTP/1.1\r\nX-Big: ${"a".repeat(5000)}\r\n\r\n`));
    expect(head.headers[0]![1]).toHaveLength(1024);
  });
});

describe("malformedAnswer", () => {
  it("answers as Node would: 431 for big headers, 408 for slow ones, 400 otherwise, saying why", () => {
    expect(malformedAnswer(err("HPE_HEADER_OVERFLOW"), 1000).status).toBe(431);
    const slow = malformedAnswer(Object.assign(new Error("timeout"), { code: "ERR_HTTP_REQUEST_TIMEOUT" }), 1500);
    expect(slow.status).toBe(408);
    expect(JSON.parse(slow.body).message).toContain("1500 ms");
    const bad = malformedAnswer(err("HPE_INVALID_CHUNK_SIZE", "Invalid character in chunk size"), 1000);
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toEqual({
      error: "malformed_request",
      reason: "HPE_INVALID_CHUNK_SIZE",
      message: "mcp-lens: the request is not valid HTTP/1.1 (Invalid character in chunk size)",
    });
  });

  it("treats a client that leaves as no malformed request", () => {
    expect(isMalformedRequest(Object.assign(new Error("reset"), { code: "ECONNRESET" }))).toBe(false);
    expect(isMalformedRequest(err("HPE_INVALID_METHOD"))).toBe(true);
  });
});

describe("malformedExchange", () => {
  it("records what arrived and what mcp-lens answered", () => {
    const answer = malformedAnswer(err("HPE_INVALID_HEADER_TOKEN"), 1000);
    const raw = malformedExchange({
      id: 7,
      startedAt: Date.now(),
      clientAddr: "127.0.0.1",
      head: readRequestHead(Buffer.from("GET /mcp?a=b HTTP/1.1\r\nHost: h\r\nX: \u0001\r\n\r\n")),
      answer,
      responseHeaders: [["content-type", "application/json"]],
    });
    expect(raw).toMatchObject({ id: 7, method: "GET", host: "h", path: "/mcp", query: "a=b", status: 400, upstreamError: null, aborted: false });
    expect(raw.responseBody.bytes.toString()).toBe(answer.body);
  });
});
