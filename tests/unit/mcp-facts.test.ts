// messageFact parses a JSON-RPC envelope with the one member of the SDK's JSONRPCMessageSchema
// union the value's keys point to: its verdict must be the union's, whatever the value.
import { describe, expect, it } from "vitest";
import { JSONRPCMessageSchema } from "@modelcontextprotocol/sdk/types.js";
import { messageFact } from "../../analysis/mcp-facts.js";

/** What the whole union says the value is. */
function unionVerdict(value: unknown): string {
  const candidate = value !== null && typeof value === "object" && !Array.isArray(value) && (value as { id?: unknown }).id === null && "error" in value
    ? { ...value, id: undefined }
    : value;
  const parsed = JSONRPCMessageSchema.safeParse(candidate);
  if (!parsed.success) return "invalid";
  const m = parsed.data;
  if ("method" in m) return "id" in m ? "request" : "notification";
  return "result" in m ? "result" : "error";
}

const VALUES: unknown[] = [
  { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "search", arguments: { q: "x" } } },
  { jsonrpc: "2.0", id: "a", method: "initialize" },
  { jsonrpc: "2.0", method: "notifications/initialized" },
  { jsonrpc: "2.0", id: 1, result: { tools: [] } },
  { jsonrpc: "2.0", id: 1, result: {} },
  { jsonrpc: "2.0", id: 1, error: { code: -32601, message: "Method not found" } },
  { jsonrpc: "2.0", id: null, error: { code: -32700, message: "Parse error" } },
  { jsonrpc: "2.0", error: { code: -32600, message: "Invalid Request" } },
  { jsonrpc: "2.0", id: 1, error: { code: 1.5, message: "not an integer" } },
  { jsonrpc: "2.0", id: 1, error: { code: -1 } },
  { jsonrpc: "2.0", id: 1, method: "x", result: {} },
  { jsonrpc: "2.0", id: 1, result: {}, error: { code: 1, message: "both" } },
  { jsonrpc: "2.0", method: "x", error: { code: 1, message: "m" } },
  { jsonrpc: "2.0", id: null, method: "x", error: { code: 1, message: "m" } },
  { jsonrpc: "2.0", id: 1, method: "x", extra: true },
  { jsonrpc: "2.0", method: 7 },
  { jsonrpc: "2.0", id: { nested: 1 }, method: "x" },
  { jsonrpc: "2.0", id: 1, result: "not an object" },
  { jsonrpc: "1.0", id: 1, method: "x" },
  { id: 1, method: "x" },
  { jsonrpc: "2.0", id: 1 },
  { jsonrpc: "2.0" },
  {},
  [],
  [{ jsonrpc: "2.0", id: 1, method: "x" }],
  null,
  "text",
  42,
  true,
];

describe("messageFact", () => {
  it.each(VALUES.map((value) => [JSON.stringify(value), value]))("gives the SDK union's verdict for %s", (_name, value) => {
    expect(messageFact("request", value).type).toBe(unionVerdict(value));
  });

  it("keeps the id, method and error of what it accepts, and what it can of what it does not", () => {
    expect(messageFact("request", VALUES[0])).toEqual({ direction: "request", type: "request", method: "tools/call", id: 1 });
    expect(messageFact("response", VALUES[6])).toEqual({ direction: "response", type: "error", id: null, errorCode: -32700, errorMessage: "Parse error" });
    expect(messageFact("request", VALUES[14])).toEqual({ direction: "request", type: "invalid", method: "x", id: 1 });
  });
});
