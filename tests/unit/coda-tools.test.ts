import { Client } from "@modelcontextprotocol/client";
import { InMemoryTransport, McpServer, type AuthInfo, type CallToolResult } from "@modelcontextprotocol/server";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { TOOL_SCHEMA_LIMIT_BYTES, toolDefinitionProblem } from "../../analysis/diagnose/mcp-answers.js";
import { CodaClient } from "../../server/coda/client.js";
import { registerCodaTools, type ClientFor } from "../../server/coda/tools.js";
import { FAKE_TOKEN, FAKE_USER, SEED_IDS, startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";

const TOOL_NAMES = [
  "whoami",
  "list_docs",
  "get_doc",
  "list_pages",
  "get_page_content",
  "list_tables",
  "list_columns",
  "list_rows",
  "get_row",
  "upsert_rows",
  "update_row",
  "delete_rows",
  "push_button",
  "list_formulas",
  "list_controls",
];
const D = SEED_IDS.docId;
const T = SEED_IDS.tableId;

let fake: FakeCoda;
let mcp: Client;
/** The bearer token every request's authInfo carries, as the HTTP layer would attach it. */
let requestToken: string;

/** Builds the per-request client from authInfo, the way the server does; no real waiting. */
const clientFromAuth: ClientFor = ({ authInfo }) => {
  if (!authInfo) throw new Error("no authInfo");
  return new CodaClient({ baseUrl: fake.url, token: authInfo.token, maxRetries: 2, sleep: async () => {} });
};

async function connect(clientFor: ClientFor): Promise<Client> {
  const server = new McpServer({ name: "coda-test", version: "0.0.0" });
  registerCodaTools(server, clientFor);
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  // The in-memory transport hands `authInfo` from send() to the other side's onmessage.
  const send = clientSide.send.bind(clientSide);
  clientSide.send = (message, options) => {
    const authInfo: AuthInfo = { token: requestToken, clientId: "test-client", scopes: [] };
    return send(message, { ...options, authInfo });
  };
  await server.connect(serverSide);
  const client = new Client({ name: "coda-tools-test", version: "0.0.0" });
  await client.connect(clientSide);
  return client;
}

async function call(name: string, args: Record<string, unknown> = {}): Promise<CallToolResult> {
  return (await mcp.callTool({ name, arguments: args })) as CallToolResult;
}

/** The JSON text of a successful result, checked against its structuredContent. */
async function ok(name: string, args: Record<string, unknown> = {}): Promise<any> {
  const result = await call(name, args);
  const text = textOf(result);
  expect(result.isError, text).toBeFalsy();
  const parsed = JSON.parse(text);
  expect(result.structuredContent).toEqual(parsed);
  return parsed;
}

async function failure(name: string, args: Record<string, unknown> = {}): Promise<string> {
  const result = await call(name, args);
  expect(result.isError).toBe(true);
  return textOf(result);
}

function textOf(result: CallToolResult): string {
  const block = result.content[0];
  return block?.type === "text" ? block.text : "";
}

beforeEach(async () => {
  fake = await startFakeCoda();
  requestToken = FAKE_TOKEN;
  mcp = await connect(clientFromAuth);
});
afterEach(async () => {
  await mcp.close();
  await fake.close();
});

describe("tool listing", () => {
  it("lists all 15 tools with titles, descriptions, input schemas and annotations", async () => {
    const { tools } = await mcp.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual([...TOOL_NAMES].sort());
    for (const tool of tools) {
      expect(tool.title, tool.name).toBeTruthy();
      expect(tool.description!.length, tool.name).toBeGreaterThan(40);
      expect(tool.inputSchema.type).toBe("object");
      expect(tool.annotations, tool.name).toBeDefined();
    }
    const byName = new Map(tools.map((t) => [t.name, t]));
    expect(byName.get("list_rows")!.description).toContain('"Status":"Done"');
    expect(byName.get("list_rows")!.inputSchema.properties).toHaveProperty("pageToken");
    expect(byName.get("get_doc")!.inputSchema.required).toEqual(["docId"]);
    expect(byName.get("list_docs")!.annotations).toMatchObject({ readOnlyHint: true });
    expect(byName.get("delete_rows")!.annotations).toMatchObject({ readOnlyHint: false, destructiveHint: true });
    expect(byName.get("push_button")!.annotations).toMatchObject({ idempotentHint: false });
  });
});

describe("tool definitions every hosted client accepts", () => {
  it("names match ^[a-zA-Z0-9_-]{1,64}$ and schemas stay small: mcp-lens finds nothing to diagnose in the list", async () => {
    const { tools } = await mcp.listTools();
    const sizes = tools.map((t) => ({ name: t.name, schemaBytes: Buffer.byteLength(JSON.stringify(t.inputSchema)) }));
    for (const { name, schemaBytes } of sizes) {
      expect(name, name).toMatch(/^[a-zA-Z0-9_-]{1,64}$/);
      // The judgement mcp-lens passes on a recorded tools/list (tool_definition_rejected).
      expect(toolDefinitionProblem(name, schemaBytes), name).toBeUndefined();
      // A quarter of the limit claude.ai enforces: room to grow, and cheap in every model's context.
      expect(schemaBytes, name).toBeLessThan(TOOL_SCHEMA_LIMIT_BYTES / 4);
    }
    const listBytes = Buffer.byteLength(JSON.stringify(tools));
    expect(listBytes).toBeLessThan(24 * 1024);
  });
});

describe("happy paths", () => {
  it("whoami uses the token from the request's authInfo", async () => {
    expect(await ok("whoami")).toMatchObject({ name: FAKE_USER.name, loginId: FAKE_USER.loginId });
    expect(fake.requests[0]!.auth).toBe(FAKE_TOKEN);
  });

  it("list_docs and get_doc, without API hrefs in the result", async () => {
    const docs = await ok("list_docs", { query: "project" });
    expect(docs.items.map((d: { id: string }) => d.id)).toEqual([D]);
    expect(docs.items[0]).toHaveProperty("browserLink");
    expect(docs.items[0]).not.toHaveProperty("href");
    expect(await ok("get_doc", { docId: D })).toMatchObject({ id: D, name: "Project Tracker" });
  });

  it("list_pages and get_page_content in plain text and markdown", async () => {
    const pages = await ok("list_pages", { docId: D });
    expect(pages.items.map((p: { name: string }) => p.name)).toContain("Overview");
    const plain = await ok("get_page_content", { docId: D, pageIdOrName: "Overview" });
    expect(plain).toMatchObject({ format: "plainText" });
    expect(plain.content).toContain("This doc tracks the launch.");
    const markdown = await ok("get_page_content", { docId: D, pageIdOrName: SEED_IDS.overviewPageId, contentFormat: "markdown" });
    expect(markdown.content).toContain("# Project overview");
  });

  it("list_tables, list_columns, list_formulas, list_controls", async () => {
    expect((await ok("list_tables", { docId: D, tableTypes: ["table"] })).items.map((t: { name: string }) => t.name)).toEqual([SEED_IDS.tableName]);
    const columns = await ok("list_columns", { docId: D, tableIdOrName: T });
    expect(columns.items.find((c: { name: string }) => c.name === "Complete")).toMatchObject({ format: { type: "button" } });
    expect((await ok("list_formulas", { docId: D })).items[0]).toMatchObject({ id: SEED_IDS.formulaId });
    expect((await ok("list_controls", { docId: D })).items[0]).toMatchObject({ id: SEED_IDS.controlId });
  });

  it("list_rows keys values by column name by default and filters with query", async () => {
    const rows = await ok("list_rows", { docId: D, tableIdOrName: T, query: '"Owner":"grace@example.com"', limit: 50 });
    expect(rows.items.length).toBeGreaterThan(0);
    expect(rows.items.every((r: { values: Record<string, unknown> }) => r.values.Owner === "grace@example.com")).toBe(true);
    expect(fake.requests.at(-1)!.query).toMatchObject({ useColumnNames: "true" });
    const byId = await ok("list_rows", { docId: D, tableIdOrName: T, useColumnNames: false, limit: 1 });
    expect(byId.items[0].values).toHaveProperty(SEED_IDS.columns.name);
  });

  it("list_rows pages with pageToken", async () => {
    const first = await ok("list_rows", { docId: D, tableIdOrName: T });
    expect(first.items).toHaveLength(10);
    expect(first.nextPageToken).toEqual(expect.any(String));
    expect(first).not.toHaveProperty("nextPageLink");
    const second = await ok("list_rows", { docId: D, tableIdOrName: T, pageToken: first.nextPageToken });
    expect(second.items[0].name).toBe("Task 11");
    const third = await ok("list_rows", { docId: D, tableIdOrName: T, pageToken: second.nextPageToken });
    expect(third.items).toHaveLength(5);
    expect(third).not.toHaveProperty("nextPageToken");
  });

  it("get_row", async () => {
    expect(await ok("get_row", { docId: D, tableIdOrName: SEED_IDS.tableName, rowIdOrName: "Task 07" })).toMatchObject({
      id: "i-row07",
      values: { Name: "Task 07", Status: "Blocked" },
    });
  });

  it("upsert_rows then list_rows sees the new row", async () => {
    const upsert = await ok("upsert_rows", {
      docId: D,
      tableIdOrName: T,
      rows: [{ cells: [{ column: "Name", value: "Write tests" }, { column: "Status", value: "In progress" }, { column: "Done", value: false }] }],
    });
    expect(upsert.requestId).toEqual(expect.any(String));
    expect(upsert.addedRowIds).toHaveLength(1);
    const found = await ok("list_rows", { docId: D, tableIdOrName: T, query: '"Name":"Write tests"' });
    expect(found.items).toEqual([expect.objectContaining({ id: upsert.addedRowIds[0], values: expect.objectContaining({ Status: "In progress" }) })]);
  });

  it("update_row, push_button and delete_rows change the table", async () => {
    await ok("update_row", { docId: D, tableIdOrName: T, rowIdOrName: "i-row02", cells: [{ column: "Owner", value: "new@example.com" }] });
    expect((await ok("get_row", { docId: D, tableIdOrName: T, rowIdOrName: "i-row02" })).values.Owner).toBe("new@example.com");

    expect(await ok("push_button", { docId: D, tableIdOrName: T, rowIdOrName: "i-row02", columnIdOrName: "Complete" })).toMatchObject({ rowId: "i-row02" });
    expect((await ok("get_row", { docId: D, tableIdOrName: T, rowIdOrName: "i-row02" })).values.Done).toBe(true);

    expect(await ok("delete_rows", { docId: D, tableIdOrName: T, rowIds: ["i-row02"] })).toMatchObject({ rowIds: ["i-row02"] });
    expect(await failure("get_row", { docId: D, tableIdOrName: T, rowIdOrName: "i-row02" })).toMatch(/Not found \(404\)/);
  });
});

describe("errors become isError results", () => {
  it("401: Coda rejected the token", async () => {
    requestToken = "revoked-token";
    const text = await failure("list_docs");
    expect(text).toBe("Coda rejected the API token (401): sign in again / check the token.");
    expect(text).not.toContain("revoked-token");
  });

  it("403: no access", async () => {
    fake.failNext(1, 403);
    expect(await failure("get_doc", { docId: D })).toMatch(/^No access \(403\).*docId 'AbCDeFGH'/);
  });

  it("404: names the ids that were asked for", async () => {
    const text = await failure("list_rows", { docId: D, tableIdOrName: "Nope" });
    expect(text).toMatch(/^Not found \(404\)/);
    expect(text).toContain(`docId '${D}'`);
    expect(text).toContain("tableIdOrName 'Nope'");
  });

  it("429 after retries: says how long to wait", async () => {
    fake.failNext(10, 429, { retryAfter: "7" });
    expect(await failure("list_tables", { docId: D })).toBe("Coda rate limit reached (429): retry after 7 s.");
    expect(fake.requests).toHaveLength(3);
  });

  it("5xx: Coda is having trouble", async () => {
    fake.failNext(10, 503);
    expect(await failure("list_pages", { docId: D })).toMatch(/^Coda is having trouble \(503\)/);
  });

  it("400: passes Coda's message on", async () => {
    const text = await failure("update_row", { docId: D, tableIdOrName: T, rowIdOrName: "i-row01", cells: [{ column: "Complete", value: "x" }] });
    expect(text).toMatch(/^Coda refused the request \(400\)\. Coda says: .*button/);
  });

  it("a throwing clientFor: authentication required", async () => {
    const unauthenticated = await connect(() => {
      throw new Error("no Coda credentials on this request");
    });
    const result = (await unauthenticated.callTool({ name: "whoami", arguments: {} })) as CallToolResult;
    expect(result.isError).toBe(true);
    expect(textOf(result)).toMatch(/^Authentication required/);
    expect(fake.requests).toHaveLength(0);
    await unauthenticated.close();
  });
});
