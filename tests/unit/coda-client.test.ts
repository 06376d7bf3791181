import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { CodaApiError, CodaClient, parseRetryAfter, type CodaClientOptions } from "../../server/coda/client.js";
import { FAKE_TOKEN, FAKE_USER, SEED_IDS, startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";

const C = SEED_IDS.columns;

let fake: FakeCoda;
let waits: number[];

beforeEach(async () => {
  fake = await startFakeCoda();
  waits = [];
});
afterEach(() => fake.close());

/** A client on the fake whose waits are recorded instead of slept. */
function client(options: Partial<CodaClientOptions> = {}): CodaClient {
  return new CodaClient({
    baseUrl: fake.url,
    token: FAKE_TOKEN,
    sleep: async (ms) => void waits.push(ms),
    ...options,
  });
}

const apiCalls = () => fake.requests.filter((r) => r.path.startsWith("/apis/v1/"));

async function codaError(promise: Promise<unknown>): Promise<CodaApiError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(CodaApiError);
  return error as CodaApiError;
}

describe("CodaClient reads", () => {
  it("whoami sends the token as a Bearer header and returns the user", async () => {
    const me = await client().whoami();
    expect(me).toMatchObject({ name: FAKE_USER.name, loginId: FAKE_USER.loginId, type: "user", scoped: false });
    expect(me.href).toBe(`${fake.url}/whoami`);
    expect(fake.requests).toEqual([{ method: "GET", path: "/apis/v1/whoami", query: {}, auth: FAKE_TOKEN }]);
  });

  it("accepts a base URL with a trailing slash", async () => {
    await client({ baseUrl: `${fake.url}/` }).whoami();
    expect(fake.requests[0]!.path).toBe("/apis/v1/whoami");
  });

  it("lists docs with Coda's resource fields, filtered by query and isOwner", async () => {
    const all = await client().listDocs();
    expect(all.items.map((d) => d.id)).toEqual([SEED_IDS.docId, SEED_IDS.otherDocId]);
    expect(all.items[0]).toMatchObject({ type: "doc", name: "Project Tracker", href: `${fake.url}/docs/${SEED_IDS.docId}` });
    expect(all.items[0]!.browserLink).toMatch(/^https:\/\/coda\.io\/d\//);
    expect(all.nextPageToken).toBeUndefined();

    expect((await client().listDocs({ query: "meeting" })).items.map((d) => d.name)).toEqual(["Meeting Notes"]);
    expect((await client().listDocs({ isOwner: true })).items.map((d) => d.id)).toEqual([SEED_IDS.docId]);
    expect(fake.requests.at(-1)!.query).toEqual({ isOwner: "true" });
  });

  it("gets a doc", async () => {
    expect(await client().getDoc(SEED_IDS.docId)).toMatchObject({ id: SEED_IDS.docId, type: "doc", owner: FAKE_USER.loginId });
  });

  it("pages through pages with limit and nextPageToken", async () => {
    const first = await client().listPages(SEED_IDS.docId, { limit: 3 });
    expect(first.items).toHaveLength(3);
    expect(first.nextPageToken).toBeTruthy();
    expect(first.nextPageLink).toContain("pageToken=");
    const second = await client().listPages(SEED_IDS.docId, { pageToken: first.nextPageToken! });
    expect(second.nextPageToken).toBeUndefined();
    expect([...first.items, ...second.items].map((p) => p.name)).toEqual(["Overview", SEED_IDS.faqPageName, "Long notes", "Task board"]);
    expect(first.items[0]).toMatchObject({ type: "page", children: [expect.objectContaining({ name: SEED_IDS.faqPageName })] });
  });

  it("lists tables, optionally only some table types", async () => {
    const all = await client().listTables(SEED_IDS.docId);
    expect(all.items.map((t) => [t.name, t.tableType])).toEqual([
      [SEED_IDS.tableName, "table"],
      [SEED_IDS.viewName, "view"],
    ]);
    const views = await client().listTables(SEED_IDS.docId, { tableTypes: ["view"] });
    expect(views.items.map((t) => t.name)).toEqual([SEED_IDS.viewName]);
    expect(fake.requests.at(-1)!.query).toEqual({ tableTypes: "view" });
  });

  it("lists columns by table name", async () => {
    const columns = await client().listColumns(SEED_IDS.docId, SEED_IDS.tableName);
    expect(columns.items.map((c) => c.name)).toEqual(["Name", "Status", "Owner", "Done", "Complete"]);
    expect(columns.items[4]).toMatchObject({ id: C.complete, type: "column", format: { type: "button" } });
  });

  it("pages through all rows, the token carrying the original parameters", async () => {
    const seen: string[] = [];
    let pageToken: string | undefined;
    let calls = 0;
    do {
      const page = await client().listRows(SEED_IDS.docId, SEED_IDS.tableId, pageToken ? { pageToken } : { useColumnNames: true });
      seen.push(...page.items.map((r) => String(r.values.Name)));
      pageToken = page.nextPageToken;
      calls++;
    } while (pageToken);
    expect(calls).toBe(3);
    expect(seen).toHaveLength(SEED_IDS.rowCount);
    expect(seen[0]).toBe("Task 01");
    expect(seen.at(-1)).toBe("Task 25");
  });

  it("filters rows with Coda's query syntax, by quoted name or by column id", async () => {
    const byName = await client().listRows(SEED_IDS.docId, SEED_IDS.tableId, { query: '"Status":"Done"', useColumnNames: true, limit: 50 });
    expect(byName.items.length).toBeGreaterThan(0);
    expect(byName.items.every((r) => r.values.Status === "Done")).toBe(true);
    expect(fake.requests.at(-1)!.query).toMatchObject({ query: '"Status":"Done"', useColumnNames: "true", limit: "50" });

    const byId = await client().listRows(SEED_IDS.docId, SEED_IDS.tableId, { query: `${C.done}:true`, limit: 50 });
    expect(byId.items.map((r) => r.id)).toEqual(byName.items.map((r) => r.id));
    expect(byId.items[0]!.values[C.done]).toBe(true);
  });

  it("sorts rows and reads views", async () => {
    const byUpdate = await client().listRows(SEED_IDS.docId, SEED_IDS.tableId, { sortBy: "updatedAt", limit: 1 });
    expect(byUpdate.items[0]!.name).toBe("Task 25");
    const open = await client().listRows(SEED_IDS.docId, SEED_IDS.viewName, { useColumnNames: true, limit: 50 });
    expect(open.items.every((r) => r.values.Done === false)).toBe(true);
  });

  it("gets a row by name, URL-encoding every path segment", async () => {
    const row = await client().getRow(SEED_IDS.docId, SEED_IDS.viewName, "Task 03", { useColumnNames: true });
    expect(row).toMatchObject({ id: "i-row03", type: "row", name: "Task 03", values: { Status: "Blocked" } });
    expect(fake.requests.at(-1)!.path).toBe(`/apis/v1/docs/${SEED_IDS.docId}/tables/Open%20Tasks/rows/Task%2003`);
  });

  it("lists formulas and controls", async () => {
    expect((await client().listFormulas(SEED_IDS.docId)).items).toEqual([
      expect.objectContaining({ id: SEED_IDS.formulaId, type: "formula", name: "OpenTaskCount" }),
    ]);
    expect((await client().listControls(SEED_IDS.docId)).items).toEqual([
      expect.objectContaining({ id: SEED_IDS.controlId, type: "control", name: "Threshold" }),
    ]);
  });
});

describe("CodaClient page content", () => {
  it("reads plain text from the content endpoint, keeping list nesting", async () => {
    const page = await client().getPageContent(SEED_IDS.docId, SEED_IDS.overviewPageId);
    expect(page).toEqual({ format: "plainText", content: "Project overview\nThis doc tracks the launch.\n  Ship the API\n    Write the docs" });
    expect(fake.requests[0]).toMatchObject({ path: `/apis/v1/docs/${SEED_IDS.docId}/pages/${SEED_IDS.overviewPageId}/content`, query: { contentFormat: "plainText" } });
  });

  it("follows nextPageToken until the whole page is read", async () => {
    const page = await client().getPageContent(SEED_IDS.docId, SEED_IDS.longPageId, { contentFormat: "plainText" });
    const lines = page.content.split("\n");
    expect(lines).toHaveLength(SEED_IDS.longPageLines);
    expect(lines.at(-1)).toBe(`Line ${SEED_IDS.longPageLines}`);
    expect(apiCalls().length).toBeGreaterThan(1);
  });

  it("encodes page names that contain '/', '&' and spaces", async () => {
    const page = await client().getPageContent(SEED_IDS.docId, SEED_IDS.faqPageName);
    expect(page.content).toBe("Ask away.");
    expect(fake.requests[0]!.path).toBe(`/apis/v1/docs/${SEED_IDS.docId}/pages/Q%26A%20%2F%20FAQ/content`);
  });

  it("exports markdown: begin, poll until downloadLink, download without the token", async () => {
    const page = await client().getPageContent(SEED_IDS.docId, SEED_IDS.overviewPageId, { contentFormat: "markdown" });
    expect(page.format).toBe("markdown");
    expect(page.content).toContain("# Project overview");
    expect(page.content).toContain("- Ship the API");
    const [begin, ...rest] = fake.requests;
    expect(begin).toMatchObject({ method: "POST", path: `/apis/v1/docs/${SEED_IDS.docId}/pages/${SEED_IDS.overviewPageId}/export` });
    const polls = rest.filter((r) => r.path.includes("/export/"));
    expect(polls).toHaveLength(2); // the fake answers inProgress first
    const download = rest.at(-1)!;
    expect(download.path).toMatch(/^\/blobs\//);
    expect(download.auth).toBeUndefined();
    expect(waits).toEqual([1000, 1000]);
  });

  it("exports html", async () => {
    const page = await client().getPageContent(SEED_IDS.docId, SEED_IDS.overviewPageId, { contentFormat: "html" });
    expect(page).toMatchObject({ format: "html" });
    expect(page.content).toContain("<h1>Project overview</h1>");
  });

  it("tolerates the 404 Coda documents for a just-started export", async () => {
    let firstWait = true;
    const c = client({
      sleep: async () => {
        if (firstWait) fake.failNext(1, 404);
        firstWait = false;
      },
    });
    const page = await c.getPageContent(SEED_IDS.docId, SEED_IDS.overviewPageId, { contentFormat: "markdown" });
    expect(page.content).toContain("# Project overview");
  });

  it("gives up on an export that never completes, after bounded polling", async () => {
    const c = client({
      sleep: async () => {
        if (fake.requests.length === 1) fake.failNext(100, 404);
      },
    });
    const error = await codaError(c.getPageContent(SEED_IDS.docId, SEED_IDS.overviewPageId, { contentFormat: "html" }));
    expect(error.status).toBe(504);
    expect(error.message).toMatch(/did not finish exporting/);
    expect(apiCalls().length).toBe(31);
  });

  it("refuses an expired download link's XML instead of returning it as content", async () => {
    const expiring: typeof fetch = async (input, init) => {
      const url = String(input);
      if (!url.includes("/blobs/")) return fetch(input, init);
      return new Response('<?xml version="1.0"?><Error><Code>NoSuchKey</Code></Error>', { status: 200 });
    };
    const error = await codaError(client({ fetch: expiring }).getPageContent(SEED_IDS.docId, SEED_IDS.overviewPageId, { contentFormat: "markdown" }));
    expect(error.status).toBe(502);
  });
});

describe("CodaClient mutations", () => {
  const rowsOf = () => fake.seed.docs[0]!.tables[0]!.rows;

  it("upserts: inserts new rows and reports addedRowIds", async () => {
    const result = await client().upsertRows(SEED_IDS.docId, SEED_IDS.tableId, [
      { cells: [{ column: "Name", value: "Task 26" }, { column: C.status, value: "In progress" }] },
    ]);
    expect(result.requestId).toBeTruthy();
    expect(result.addedRowIds).toHaveLength(1);
    const row = await client().getRow(SEED_IDS.docId, SEED_IDS.tableId, result.addedRowIds![0]!, { useColumnNames: true });
    expect(row.values).toMatchObject({ Name: "Task 26", Status: "In progress" });
    expect(fake.requests.find((r) => r.method === "POST")!.path).toBe(`/apis/v1/docs/${SEED_IDS.docId}/tables/${SEED_IDS.tableId}/rows`);
  });

  it("upserts with keyColumns: updates the matching row instead of adding one", async () => {
    const result = await client().upsertRows(SEED_IDS.docId, SEED_IDS.tableName, [{ cells: [{ column: "Name", value: "Task 02" }, { column: "Owner", value: "x@example.com" }] }], ["Name"]);
    expect(result.addedRowIds).toEqual([]);
    expect(rowsOf()).toHaveLength(SEED_IDS.rowCount);
    expect(rowsOf()[1]!.values[C.owner]).toBe("x@example.com");
  });

  it("updates one row's cells", async () => {
    const result = await client().updateRow(SEED_IDS.docId, SEED_IDS.tableId, "i-row05", [{ column: "Status", value: "Blocked" }]);
    expect(result).toMatchObject({ id: "i-row05" });
    expect(rowsOf()[4]!.values[C.status]).toBe("Blocked");
  });

  it("deletes rows by id", async () => {
    const result = await client().deleteRows(SEED_IDS.docId, SEED_IDS.tableId, ["i-row01", "i-row02"]);
    expect(result).toMatchObject({ rowIds: ["i-row01", "i-row02"] });
    expect(rowsOf().map((r) => r.id)).not.toContain("i-row01");
    expect(rowsOf()).toHaveLength(SEED_IDS.rowCount - 2);
    expect(fake.requests[0]!.method).toBe("DELETE");
  });

  it("pushes a button", async () => {
    const result = await client().pushButton(SEED_IDS.docId, SEED_IDS.tableId, "i-row01", "Complete");
    expect(result).toMatchObject({ rowId: "i-row01", columnId: C.complete });
    expect(rowsOf()[0]!.values[C.done]).toBe(true);
    expect(fake.requests[0]!.path).toBe(`/apis/v1/docs/${SEED_IDS.docId}/tables/${SEED_IDS.tableId}/rows/i-row01/buttons/Complete`);
  });

  it("surfaces Coda's 400 message for an invalid write", async () => {
    const error = await codaError(client().updateRow(SEED_IDS.docId, SEED_IDS.tableId, "i-row01", [{ column: "Nope", value: 1 }]));
    expect(error.status).toBe(400);
    expect(error.codaMessage).toMatch(/Nope/);
  });
});

describe("CodaClient errors and retries", () => {
  it("waits Retry-After seconds after a 429, then succeeds", async () => {
    fake.failNext(1, 429, { retryAfter: "2" });
    expect((await client().whoami()).loginId).toBe(FAKE_USER.loginId);
    expect(waits).toEqual([2000]);
    expect(fake.requests).toHaveLength(2);
  });

  it("understands an HTTP-date Retry-After", async () => {
    fake.failNext(1, 429, { retryAfter: new Date(Date.now() + 10_000).toUTCString() });
    await client().whoami();
    expect(waits).toHaveLength(1);
    expect(waits[0]).toBeGreaterThanOrEqual(8000);
    expect(waits[0]).toBeLessThanOrEqual(11_000);
  });

  it("caps every wait at 30 s", async () => {
    fake.failNext(1, 429, { retryAfter: "120" });
    await client().whoami();
    expect(waits).toEqual([30_000]);
  });

  it("retries a 503 with growing, jittered backoff", async () => {
    fake.failNext(2, 503);
    await client().listDocs();
    expect(waits).toHaveLength(2);
    expect(waits[0]).toBeGreaterThanOrEqual(500);
    expect(waits[0]).toBeLessThanOrEqual(1000);
    expect(waits[1]).toBeGreaterThanOrEqual(1000);
    expect(waits[1]).toBeLessThanOrEqual(2000);
  });

  it("does not repeat a POST after a 502/504, which may have been applied", async () => {
    fake.failNext(1, 504);
    const error = await codaError(client().upsertRows(SEED_IDS.docId, SEED_IDS.tableId, [{ cells: [{ column: "Name", value: "x" }] }]));
    expect(error.status).toBe(504);
    expect(fake.requests).toHaveLength(1);
  });

  it("throws CodaApiError once retries are exhausted", async () => {
    fake.failNext(10, 429, { retryAfter: "1" });
    const error = await codaError(client({ maxRetries: 2 }).listTables(SEED_IDS.docId));
    expect(error).toMatchObject({ status: 429, retryAfterSeconds: 1, codaMessage: "Too Many Requests" });
    expect(fake.requests).toHaveLength(3);
    expect(waits).toEqual([1000, 1000]);
  });

  it("maps 401 without leaking the token", async () => {
    const secret = "super-secret-token-value";
    const error = await codaError(client({ token: secret }).whoami());
    expect(error).toMatchObject({ status: 401, codaMessage: "Unauthorized" });
    expect(error.message).not.toContain(secret);
    expect(JSON.stringify(error)).not.toContain(secret);
    expect(fake.requests).toHaveLength(1);
  });

  it("maps 404 for an unknown id", async () => {
    const error = await codaError(client().getRow(SEED_IDS.docId, SEED_IDS.tableId, "i-missing"));
    expect(error.status).toBe(404);
    expect(error.message).toContain("i-missing");
  });

  it("times out a request that never answers, as status 0", async () => {
    fake.stallNext(1);
    const error = await codaError(client({ timeoutMs: 200 }).whoami());
    expect(error.status).toBe(0);
    expect(error.message).toMatch(/did not answer within 200 ms/);
  });

  it("reports an unreachable Coda as status 0", async () => {
    const url = fake.url;
    await fake.close();
    const error = await codaError(client({ baseUrl: url }).whoami());
    expect(error.status).toBe(0);
    expect(error.message).toMatch(/could not be reached/);
    fake = await startFakeCoda(); // afterEach closes it
  });

  it("parses Retry-After as seconds or an HTTP date", () => {
    const now = Date.parse("2025-01-01T00:00:00Z");
    expect(parseRetryAfter("5", now)).toBe(5);
    expect(parseRetryAfter("Wed, 01 Jan 2025 00:00:12 GMT", now)).toBe(12);
    expect(parseRetryAfter("Tue, 31 Dec 2024 23:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
});
