/**
 * A fake Coda REST API v1 for tests: real HTTP on 127.0.0.1, in-memory data, Coda's documented
 * shapes (Bearer auth, `{ items, href, nextPageToken, nextPageLink }` lists, `{ statusCode,
 * statusMessage, message }` errors, 202 `{ requestId }` mutations). Unlike Coda it applies
 * mutations immediately, so tests can read their writes without waiting.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";

export const FAKE_TOKEN = "fake-coda-token";
export const FAKE_USER = { name: "Ada Lovelace", loginId: "ada@example.com" };

/** Ids of the seeded data, for tests to address. */
export const SEED_IDS = {
  docId: "AbCDeFGH",
  otherDocId: "XyZ98765",
  overviewPageId: "canvas-Ov3rvw",
  faqPageName: "Q&A / FAQ",
  longPageId: "canvas-L0ngPg",
  tableId: "grid-T4sks",
  tableName: "Tasks",
  viewName: "Open Tasks",
  columns: { name: "c-Nm", status: "c-St", owner: "c-Ow", done: "c-Dn", complete: "c-Cp" },
  rowCount: 25,
  longPageLines: 120,
  formulaId: "f-OpenCnt",
  controlId: "ctrl-Thresh",
} as const;

export interface FakeRequest {
  method: string;
  /** Path as sent (still URL-encoded), without the query string. */
  path: string;
  query: Record<string, string>;
  /** Bearer token, when one was sent. */
  auth?: string;
}

export interface FakeColumn {
  id: string;
  name: string;
  format: { type: string; isArray: boolean };
  display?: boolean;
}

export interface FakeRow {
  id: string;
  values: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
}

export interface FakeTable {
  id: string;
  name: string;
  tableType: "table" | "view";
  pageId: string;
  columns: FakeColumn[];
  rows: FakeRow[];
  /** Views show a filtered subset of their parent table's rows and write through to it. */
  viewOf?: { tableId: string; keep: (row: FakeRow) => boolean };
}

export interface FakeLine {
  style: string;
  content: string;
  lineLevel: number;
}

export interface FakePage {
  id: string;
  name: string;
  parentId?: string;
  lines: FakeLine[];
}

export interface FakeDoc {
  id: string;
  name: string;
  owner: string;
  ownerName: string;
  pages: FakePage[];
  tables: FakeTable[];
  formulas: Array<{ id: string; name: string; value: unknown }>;
  controls: Array<{ id: string; name: string; controlType: string; value: unknown }>;
}

export interface FakeCoda {
  /** API base, e.g. http://127.0.0.1:PORT/apis/v1 */
  url: string;
  requests: FakeRequest[];
  /** The live in-memory data (seeded at start): mutations through the API change it. */
  seed: { docs: FakeDoc[] };
  /**
   * The next `count` API calls answer `status` with Coda's error body (and Retry-After if given).
   * Each call replaces failures still pending from an earlier one; `failNext(0, …)` clears them.
   */
  failNext(count: number, status: number, opts?: { retryAfter?: string }): void;
  /** The next `count` API calls never answer, to exercise client timeouts. */
  stallNext(count: number): void;
  close(): Promise<void>;
}

const API_PREFIX = "/apis/v1";
const DEFAULT_LIMIT = 10;
const MAX_LIMIT = 50;
const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    message = STATUS_TEXT[status] ?? "Error",
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Seed
// ---------------------------------------------------------------------------------------------

const STATUSES = ["Not started", "In progress", "Blocked", "Done"];
const OWNERS = ["ada@example.com", "grace@example.com", "alan@example.com"];

/** The first doc belongs to `owner` (so isOwner finds it), the second to someone else. */
function seedDocs(owner: { name: string; loginId: string }): FakeDoc[] {
  const c = SEED_IDS.columns;
  const base = Date.parse("2024-01-01T00:00:00Z");
  const rows: FakeRow[] = Array.from({ length: SEED_IDS.rowCount }, (_, i) => {
    const n = i + 1;
    const at = new Date(base + n * 3_600_000).toISOString();
    const status = STATUSES[i % STATUSES.length]!;
    return {
      id: `i-row${String(n).padStart(2, "0")}`,
      values: { [c.name]: `Task ${String(n).padStart(2, "0")}`, [c.status]: status, [c.owner]: OWNERS[i % OWNERS.length], [c.done]: status === "Done", [c.complete]: "Complete" },
      createdAt: at,
      // Updated in reverse creation order, so sortBy=updatedAt differs from natural order.
      updatedAt: new Date(base + (100 - n) * 3_600_000).toISOString(),
    };
  });
  const columns: FakeColumn[] = [
    { id: c.name, name: "Name", format: { type: "text", isArray: false }, display: true },
    { id: c.status, name: "Status", format: { type: "select", isArray: false } },
    { id: c.owner, name: "Owner", format: { type: "person", isArray: false } },
    { id: c.done, name: "Done", format: { type: "checkbox", isArray: false } },
    { id: c.complete, name: "Complete", format: { type: "button", isArray: false } },
  ];
  return [
    {
      id: SEED_IDS.docId,
      name: "Project Tracker",
      owner: owner.loginId,
      ownerName: owner.name,
      pages: [
        {
          id: SEED_IDS.overviewPageId,
          name: "Overview",
          lines: [
            { style: "h1", content: "Project overview", lineLevel: 0 },
            { style: "paragraph", content: "This doc tracks the launch.", lineLevel: 0 },
            { style: "bulletedList", content: "Ship the API", lineLevel: 1 },
            { style: "bulletedList", content: "Write the docs", lineLevel: 2 },
          ],
        },
        { id: "canvas-F4q", name: SEED_IDS.faqPageName, parentId: SEED_IDS.overviewPageId, lines: [{ style: "paragraph", content: "Ask away.", lineLevel: 0 }] },
        {
          id: SEED_IDS.longPageId,
          name: "Long notes",
          lines: Array.from({ length: SEED_IDS.longPageLines }, (_, i) => ({ style: "paragraph", content: `Line ${i + 1}`, lineLevel: 0 })),
        },
        { id: "canvas-T4skPg", name: "Task board", lines: [] },
      ],
      tables: [
        { id: SEED_IDS.tableId, name: SEED_IDS.tableName, tableType: "table", pageId: "canvas-T4skPg", columns, rows },
        {
          id: "table-0pen",
          name: SEED_IDS.viewName,
          tableType: "view",
          pageId: "canvas-T4skPg",
          columns,
          rows: [],
          viewOf: { tableId: SEED_IDS.tableId, keep: (row) => row.values[c.done] !== true },
        },
      ],
      formulas: [{ id: SEED_IDS.formulaId, name: "OpenTaskCount", value: 18 }],
      controls: [{ id: SEED_IDS.controlId, name: "Threshold", controlType: "slider", value: 5 }],
    },
    {
      id: SEED_IDS.otherDocId,
      name: "Meeting Notes",
      owner: "grace@example.com",
      ownerName: "Grace Hopper",
      pages: [{ id: "canvas-M33t", name: "Weekly sync", lines: [{ style: "paragraph", content: "Agenda", lineLevel: 0 }] }],
      tables: [],
      formulas: [],
      controls: [],
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

interface Ctx {
  params: Record<string, string>;
  query: Record<string, string>;
  body: any;
  user: { name: string; loginId: string };
  token: string;
}

type Handler = (ctx: Ctx) => { status?: number; body: unknown };

export async function startFakeCoda(opts: { tokens?: Record<string, { name: string; loginId: string }> } = {}): Promise<FakeCoda> {
  const tokens = opts.tokens ?? { [FAKE_TOKEN]: FAKE_USER };
  const docs = seedDocs(Object.values(tokens)[0] ?? FAKE_USER);
  const requests: FakeRequest[] = [];
  let failures: Array<{ status: number; retryAfter?: string }> = [];
  let stalls = 0;
  let counter = 0;
  const exports = new Map<string, { polls: number; content: string }>();
  let origin = "";

  const nextId = (prefix: string) => `${prefix}-${(++counter).toString(36).padStart(4, "0")}`;
  const apiUrl = (...segments: string[]) => `${origin}${API_PREFIX}/${segments.map(encodeURIComponent).join("/")}`;
  const browserLink = (docId: string, suffix = "") => `https://coda.io/d/_d${docId}${suffix}`;

  // --- lookups -------------------------------------------------------------------------------

  const findDoc = (id: string) => docs.find((d) => d.id === id) ?? notFound();
  const findPage = (doc: FakeDoc, idOrName: string) => doc.pages.find((p) => p.id === idOrName) ?? doc.pages.find((p) => p.name === idOrName) ?? notFound();
  const findTable = (doc: FakeDoc, idOrName: string) => doc.tables.find((t) => t.id === idOrName) ?? doc.tables.find((t) => t.name === idOrName) ?? notFound();
  const baseTable = (doc: FakeDoc, table: FakeTable) => (table.viewOf ? findTable(doc, table.viewOf.tableId) : table);
  const rowsOf = (doc: FakeDoc, table: FakeTable) => (table.viewOf ? baseTable(doc, table).rows.filter(table.viewOf.keep) : table.rows);
  const findColumn = (table: FakeTable, idOrName: string) => table.columns.find((c) => c.id === idOrName) ?? table.columns.find((c) => c.name === idOrName);
  const displayColumn = (table: FakeTable) => table.columns.find((c) => c.display) ?? table.columns[0]!;
  const rowName = (table: FakeTable, row: FakeRow) => String(row.values[displayColumn(table).id] ?? "");
  const findRow = (doc: FakeDoc, table: FakeTable, idOrName: string) => {
    const rows = rowsOf(doc, table);
    return rows.find((r) => r.id === idOrName) ?? rows.find((r) => rowName(table, r) === idOrName) ?? notFound();
  };

  // --- shapes --------------------------------------------------------------------------------

  const pageRef = (doc: FakeDoc, page: FakePage) => ({
    id: page.id,
    type: "page",
    href: apiUrl("docs", doc.id, "pages", page.id),
    browserLink: browserLink(doc.id, `/${page.name.replace(/\W+/g, "-")}_su${page.id.slice(-4)}`),
    name: page.name,
  });
  const tableRef = (doc: FakeDoc, table: FakeTable) => ({
    id: table.id,
    type: "table",
    tableType: table.tableType,
    href: apiUrl("docs", doc.id, "tables", table.id),
    browserLink: browserLink(doc.id, `#_tu${table.id}`),
    name: table.name,
    parent: pageRef(doc, findPage(doc, table.pageId)),
  });
  const docShape = (doc: FakeDoc) => ({
    id: doc.id,
    type: "doc",
    href: apiUrl("docs", doc.id),
    browserLink: browserLink(doc.id),
    name: doc.name,
    owner: doc.owner,
    ownerName: doc.ownerName,
    createdAt: "2024-01-01T00:00:00.000Z",
    updatedAt: "2024-02-01T00:00:00.000Z",
    workspace: { id: "ws-Wk1", type: "workspace", browserLink: "https://coda.io/docs?workspaceId=ws-Wk1", name: "Acme" },
    folder: { id: "fl-Fd1", type: "folder", browserLink: "https://coda.io/docs?folderId=fl-Fd1", name: "Projects" },
    workspaceId: "ws-Wk1",
    folderId: "fl-Fd1",
  });
  const pageShape = (doc: FakeDoc, page: FakePage) => ({
    ...pageRef(doc, page),
    subtitle: "",
    contentType: "canvas",
    isHidden: false,
    isEffectivelyHidden: false,
    children: doc.pages.filter((p) => p.parentId === page.id).map((p) => pageRef(doc, p)),
    ...(page.parentId ? { parent: pageRef(doc, findPage(doc, page.parentId)) } : {}),
  });
  const columnShape = (doc: FakeDoc, table: FakeTable, column: FakeColumn) => ({
    id: column.id,
    type: "column",
    href: apiUrl("docs", doc.id, "tables", table.id, "columns", column.id),
    name: column.name,
    ...(column.display ? { display: true } : {}),
    format: column.format,
    parent: tableRef(doc, table),
  });
  const rowShape = (doc: FakeDoc, table: FakeTable, row: FakeRow, useColumnNames: boolean) => ({
    id: row.id,
    type: "row",
    href: apiUrl("docs", doc.id, "tables", table.id, "rows", row.id),
    name: rowName(table, row),
    index: baseTable(doc, table).rows.indexOf(row),
    browserLink: browserLink(doc.id, `#_tu${table.id}/_ru${row.id}`),
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    values: Object.fromEntries(table.columns.map((c) => [useColumnNames ? c.name : c.id, row.values[c.id] ?? ""])),
  });

  // --- handlers ------------------------------------------------------------------------------

  const mutation = (extra: Record<string, unknown> = {}) => ({ status: 202, body: { requestId: nextId("mutate"), ...extra } });

  const cellsToValues = (table: FakeTable, cells: unknown): Record<string, unknown> => {
    if (!Array.isArray(cells)) badRequest("Expected `cells` to be an array");
    const values: Record<string, unknown> = {};
    for (const cell of cells as Array<{ column?: unknown; value?: unknown }>) {
      const column = typeof cell.column === "string" ? findColumn(table, cell.column) : undefined;
      if (!column) badRequest(`Column ${JSON.stringify(cell.column)} not found`);
      if (column.format.type === "button") badRequest(`Column ${column.name} is a button and cannot be written`);
      values[column.id] = cell.value;
    }
    return values;
  };

  const filterRows = (table: FakeTable, rows: FakeRow[], query: string) => {
    const match = /^(?:"((?:[^"\\]|\\.)*)"|([^:]+)):(.*)$/s.exec(query);
    if (!match) badRequest(`Invalid query: ${query}`);
    const column = findColumn(table, match[1] ?? match[2]!);
    if (!column) badRequest(`Column ${match[1] ?? match[2]} not found`);
    const wanted = parseQueryValue(match[3]!);
    return rows.filter((row) => row.values[column.id] === wanted);
  };

  const listRows: Handler = ({ params, query }) => {
    const doc = findDoc(params.docId!);
    const table = findTable(doc, params.tableIdOrName!);
    let rows = rowsOf(doc, table);
    if (query.query) rows = filterRows(table, rows, query.query);
    if (query.sortBy === "createdAt" || query.sortBy === "updatedAt") {
      const key = query.sortBy;
      rows = [...rows].sort((a, b) => a[key].localeCompare(b[key]));
    }
    const useNames = query.useColumnNames === "true";
    return { body: paginate(rows.map((r) => rowShape(doc, table, r, useNames)), query, apiUrl("docs", doc.id, "tables", table.id, "rows")) };
  };

  const upsertRows: Handler = ({ params, body }) => {
    const doc = findDoc(params.docId!);
    const table = baseTable(doc, findTable(doc, params.tableIdOrName!));
    if (!Array.isArray(body?.rows)) badRequest("Expected `rows` to be an array");
    const keyColumns = ((body.keyColumns ?? []) as string[]).map((k) => findColumn(table, k) ?? badRequest(`Key column ${k} not found`));
    const addedRowIds: string[] = [];
    const now = new Date().toISOString();
    for (const { cells } of body.rows as Array<{ cells: unknown }>) {
      const values = cellsToValues(table, cells);
      const existing = keyColumns.length ? table.rows.find((r) => keyColumns.every((k) => r.values[k.id] === values[k.id])) : undefined;
      if (existing) {
        Object.assign(existing.values, values);
        existing.updatedAt = now;
      } else {
        const row = { id: nextId("i"), values, createdAt: now, updatedAt: now };
        table.rows.push(row);
        addedRowIds.push(row.id);
      }
    }
    return mutation({ addedRowIds });
  };

  const updateRow: Handler = ({ params, body }) => {
    const doc = findDoc(params.docId!);
    const table = findTable(doc, params.tableIdOrName!);
    const row = findRow(doc, table, params.rowIdOrName!);
    Object.assign(row.values, cellsToValues(table, body?.row?.cells));
    row.updatedAt = new Date().toISOString();
    return mutation({ id: row.id });
  };

  const deleteRows: Handler = ({ params, body }) => {
    const doc = findDoc(params.docId!);
    const table = baseTable(doc, findTable(doc, params.tableIdOrName!));
    if (!Array.isArray(body?.rowIds)) badRequest("Expected `rowIds` to be an array");
    const doomed = new Set(body.rowIds as string[]);
    table.rows = table.rows.filter((r) => !doomed.has(r.id));
    return mutation({ rowIds: body.rowIds });
  };

  /** The seeded "Complete" button marks its row done. */
  const pushButton: Handler = ({ params }) => {
    const doc = findDoc(params.docId!);
    const table = findTable(doc, params.tableIdOrName!);
    const row = findRow(doc, table, params.rowIdOrName!);
    const column = findColumn(table, params.columnIdOrName!) ?? notFound();
    if (column.format.type !== "button") badRequest(`Column ${column.name} is not a button column`);
    row.values[SEED_IDS.columns.done] = true;
    row.values[SEED_IDS.columns.status] = "Done";
    row.updatedAt = new Date().toISOString();
    return mutation({ rowId: row.id, columnId: column.id });
  };

  const listPageContent: Handler = ({ params, query }) => {
    const doc = findDoc(params.docId!);
    const page = findPage(doc, params.pageIdOrName!);
    if (query.contentFormat && query.contentFormat !== "plainText") badRequest("contentFormat must be plainText");
    const items = page.lines.map((line, i) => ({
      id: `cl-${page.id.slice(-4)}${i}`,
      type: "line",
      itemContent: { style: line.style, format: "plainText", content: line.content, lineLevel: line.lineLevel },
    }));
    return { body: paginate(items, query, apiUrl("docs", doc.id, "pages", page.id, "content")) };
  };

  const beginExport: Handler = ({ params, body }) => {
    const doc = findDoc(params.docId!);
    const page = findPage(doc, params.pageIdOrName!);
    const format = body?.outputFormat;
    if (format !== "html" && format !== "markdown") badRequest("outputFormat must be html or markdown");
    const id = nextId("export");
    exports.set(id, { polls: 0, content: renderPage(page, format) });
    return { status: 202, body: { id, status: "inProgress", href: apiUrl("docs", doc.id, "pages", page.id, "export", id) } };
  };

  /** The first poll reports inProgress, later ones complete: callers have to poll. */
  const exportStatus: Handler = ({ params }) => {
    const doc = findDoc(params.docId!);
    const page = findPage(doc, params.pageIdOrName!);
    const job = exports.get(params.requestId!) ?? notFound();
    const href = apiUrl("docs", doc.id, "pages", page.id, "export", params.requestId!);
    if (job.polls++ === 0) return { body: { id: params.requestId, status: "inProgress", href } };
    return { body: { id: params.requestId, status: "complete", href, downloadLink: `${origin}/blobs/${params.requestId}` } };
  };

  const whoami: Handler = ({ user, token }) => ({
    body: {
      name: user.name,
      loginId: user.loginId,
      type: "user",
      scoped: false,
      tokenName: `token-${token.slice(-4)}`,
      href: apiUrl("whoami"),
      pictureLink: "https://cdn.coda.io/avatars/default.png",
      workspace: { id: "ws-Wk1", type: "workspace", browserLink: "https://coda.io/docs?workspaceId=ws-Wk1", name: "Acme" },
    },
  });

  const routes: Array<[string, string, Handler]> = [
    ["GET", "whoami", whoami],
    [
      "GET",
      "docs",
      ({ query, user }) => {
        let list = docs;
        if (query.query) list = list.filter((d) => d.name.toLowerCase().includes(query.query!.toLowerCase()));
        if (query.isOwner === "true") list = list.filter((d) => d.owner === user.loginId);
        return { body: paginate(list.map(docShape), query, apiUrl("docs")) };
      },
    ],
    ["GET", "docs/:docId", ({ params }) => ({ body: docShape(findDoc(params.docId!)) })],
    [
      "GET",
      "docs/:docId/pages",
      ({ params, query }) => {
        const doc = findDoc(params.docId!);
        return { body: paginate(doc.pages.map((p) => pageShape(doc, p)), query, apiUrl("docs", doc.id, "pages")) };
      },
    ],
    [
      "GET",
      "docs/:docId/pages/:pageIdOrName",
      ({ params }) => {
        const doc = findDoc(params.docId!);
        return { body: pageShape(doc, findPage(doc, params.pageIdOrName!)) };
      },
    ],
    ["GET", "docs/:docId/pages/:pageIdOrName/content", listPageContent],
    ["POST", "docs/:docId/pages/:pageIdOrName/export", beginExport],
    ["GET", "docs/:docId/pages/:pageIdOrName/export/:requestId", exportStatus],
    [
      "GET",
      "docs/:docId/tables",
      ({ params, query }) => {
        const doc = findDoc(params.docId!);
        const types = query.tableTypes?.split(",");
        const tables = doc.tables.filter((t) => !types || types.includes(t.tableType));
        return { body: paginate(tables.map((t) => tableRef(doc, t)), query, apiUrl("docs", doc.id, "tables")) };
      },
    ],
    [
      "GET",
      "docs/:docId/tables/:tableIdOrName/columns",
      ({ params, query }) => {
        const doc = findDoc(params.docId!);
        const table = findTable(doc, params.tableIdOrName!);
        return { body: paginate(table.columns.map((c) => columnShape(doc, table, c)), query, apiUrl("docs", doc.id, "tables", table.id, "columns")) };
      },
    ],
    ["GET", "docs/:docId/tables/:tableIdOrName/rows", listRows],
    ["POST", "docs/:docId/tables/:tableIdOrName/rows", upsertRows],
    ["DELETE", "docs/:docId/tables/:tableIdOrName/rows", deleteRows],
    [
      "GET",
      "docs/:docId/tables/:tableIdOrName/rows/:rowIdOrName",
      ({ params, query }) => {
        const doc = findDoc(params.docId!);
        const table = findTable(doc, params.tableIdOrName!);
        return { body: rowShape(doc, table, findRow(doc, table, params.rowIdOrName!), query.useColumnNames === "true") };
      },
    ],
    ["PUT", "docs/:docId/tables/:tableIdOrName/rows/:rowIdOrName", updateRow],
    ["POST", "docs/:docId/tables/:tableIdOrName/rows/:rowIdOrName/buttons/:columnIdOrName", pushButton],
    [
      "GET",
      "docs/:docId/formulas",
      ({ params, query }) => {
        const doc = findDoc(params.docId!);
        const items = doc.formulas.map((f) => ({ id: f.id, type: "formula", href: apiUrl("docs", doc.id, "formulas", f.id), name: f.name }));
        return { body: paginate(items, query, apiUrl("docs", doc.id, "formulas")) };
      },
    ],
    [
      "GET",
      "docs/:docId/controls",
      ({ params, query }) => {
        const doc = findDoc(params.docId!);
        const items = doc.controls.map((c) => ({ id: c.id, type: "control", href: apiUrl("docs", doc.id, "controls", c.id), name: c.name }));
        return { body: paginate(items, query, apiUrl("docs", doc.id, "controls")) };
      },
    ],
  ];

  // --- transport -----------------------------------------------------------------------------

  const handleApi = (req: http.IncomingMessage, res: http.ServerResponse, url: URL, rawBody: string) => {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    const query = Object.fromEntries(url.searchParams);
    requests.push({ method: req.method!, path: url.pathname, query, ...(token ? { auth: token } : {}) });

    if (stalls > 0) {
      stalls--;
      return; // never answered; close() tears the socket down
    }
    const failure = failures.shift();
    if (failure) return sendError(res, failure.status, undefined, failure.retryAfter);

    const user = token ? tokens[token] : undefined;
    if (!user || !token) return sendError(res, 401);
    const segments = url.pathname.slice(API_PREFIX.length + 1).split("/").map(decodeURIComponent);
    for (const [method, pattern, handler] of routes) {
      const params = matchRoute(pattern, segments);
      if (!params || method !== req.method) continue;
      try {
        // Like Coda, a pageToken stands for the whole original query.
        const effective = query.pageToken ? { ...decodeToken(query.pageToken).query, pageToken: query.pageToken } : query;
        const body = rawBody ? JSON.parse(rawBody) : undefined;
        const result = handler({ params, query: effective, body, user, token });
        return sendJson(res, result.status ?? 200, result.body);
      } catch (error) {
        if (error instanceof HttpError) return sendError(res, error.status, error.message);
        if (error instanceof SyntaxError) return sendError(res, 400, "Request body is not valid JSON");
        throw error;
      }
    }
    sendError(res, 404);
  };

  /** Export downloads live outside the API, need no token, and arrive gzip-encoded like Coda's. */
  const handleBlob = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    requests.push({ method: req.method!, path: url.pathname, query: {}, ...(token ? { auth: token } : {}) });
    const job = exports.get(url.pathname.slice("/blobs/".length));
    if (!job) {
      res.writeHead(403, { "Content-Type": "application/xml" });
      return res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code></Error>');
    }
    res.writeHead(200, { "Content-Type": "text/plain", "Content-Encoding": "gzip" });
    res.end(gzipSync(job.content));
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const url = new URL(req.url!, "http://fake.invalid");
      if (url.pathname.startsWith(`${API_PREFIX}/`)) handleApi(req, res, url, Buffer.concat(chunks).toString("utf8"));
      else if (url.pathname.startsWith("/blobs/")) handleBlob(req, res, url);
      else sendError(res, 404);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url: `${origin}${API_PREFIX}`,
    requests,
    seed: { docs },
    failNext(count, status, failOpts = {}) {
      const failure = { status, ...(failOpts.retryAfter ? { retryAfter: failOpts.retryAfter } : {}) };
      failures = Array.from({ length: count }, () => failure);
    },
    stallNext(count) {
      stalls += count;
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function notFound(): never {
  throw new HttpError(404);
}

function badRequest(message: string): never {
  throw new HttpError(400, message);
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

function sendError(res: http.ServerResponse, status: number, message?: string, retryAfter?: string): void {
  const statusMessage = STATUS_TEXT[status] ?? "Error";
  if (retryAfter) res.setHeader("Retry-After", retryAfter);
  sendJson(res, status, { statusCode: status, statusMessage, message: message ?? statusMessage });
}

function matchRoute(pattern: string, segments: string[]): Record<string, string> | undefined {
  const parts = pattern.split("/");
  if (parts.length !== segments.length) return undefined;
  const params: Record<string, string> = {};
  for (const [i, part] of parts.entries()) {
    if (part.startsWith(":")) params[part.slice(1)] = segments[i]!;
    else if (part !== segments[i]) return undefined;
  }
  return params;
}

/** Opaque to clients: the offset plus the original query, which the token stands for. */
function encodeToken(offset: number, query: Record<string, string>): string {
  return Buffer.from(JSON.stringify({ offset, query })).toString("base64url");
}

function decodeToken(token: string): { offset: number; query: Record<string, string> } {
  try {
    return JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    badRequest("Invalid pageToken");
  }
}

function paginate<T>(items: T[], query: Record<string, string>, href: string) {
  const { pageToken, ...original } = query;
  const offset = pageToken ? decodeToken(pageToken).offset : 0;
  const limit = Math.min(Number(original.limit) || DEFAULT_LIMIT, MAX_LIMIT);
  const page = items.slice(offset, offset + limit);
  const next = offset + limit < items.length ? encodeToken(offset + limit, original) : undefined;
  return {
    items: page,
    href,
    ...(next ? { nextPageToken: next, nextPageLink: `${href}?pageToken=${next}` } : {}),
  };
}

/** Query values are JSON (`"Done"`, `true`, `3`); anything else is taken as a bare string. */
function parseQueryValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

function renderPage(page: FakePage, format: "html" | "markdown"): string {
  if (format === "markdown") {
    return page.lines
      .map((l) => (l.style === "h1" ? `# ${l.content}` : l.style === "bulletedList" ? `${"  ".repeat(l.lineLevel - 1)}- ${l.content}` : l.content))
      .join("\n\n");
  }
  return page.lines.map((l) => (l.style === "h1" ? `<h1>${l.content}</h1>` : l.style === "bulletedList" ? `<li>${l.content}</li>` : `<p>${l.content}</p>`)).join("");
}
