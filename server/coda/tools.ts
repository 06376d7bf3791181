/**
 * The Coda tools of the MCP server: one table of specs, one handler wrapper.
 *
 * Each call builds its Coda client from the authenticated request (`clientFor(auth)`), runs one
 * client method, and answers compact JSON (text + structuredContent). Failures never throw: they
 * become `isError` results with a plain sentence a person or a model can act on.
 */
import type { AuthInfo, CallToolResult, McpServer, ToolAnnotations } from "@modelcontextprotocol/server";
import { z } from "zod";

import { CodaApiError, type CodaClient } from "./client.js";

/** The Coda client for the request's credentials (the bearer's AuthInfo, from either era). */
export type ClientFor = (auth: { authInfo?: AuthInfo }) => CodaClient;

interface ToolSpec<Shape extends z.ZodRawShape> {
  name: string;
  title: string;
  description: string;
  input: Shape;
  annotations: ToolAnnotations;
  run(client: CodaClient, args: z.infer<z.ZodObject<Shape>>): Promise<unknown>;
}

type AnyToolSpec = ToolSpec<z.ZodRawShape>;

/** Keeps each spec's argument types checked against its own shape, then erases them for the table. */
function tool<Shape extends z.ZodRawShape>(spec: ToolSpec<Shape>): AnyToolSpec {
  return spec as unknown as AnyToolSpec;
}

// ---------------------------------------------------------------------------------------------
// Shared inputs
// ---------------------------------------------------------------------------------------------

const docId = z
  .string()
  .min(1)
  .describe("Doc id, e.g. 'AbCDeFGH': from list_docs, or the part after '_d' in a doc URL (coda.io/d/Name_dAbCDeFGH).");
const pageIdOrName = z.string().min(1).describe("Page id (e.g. 'canvas-IjkLmnO', from list_pages) or the page's exact name.");
const tableIdOrName = z
  .string()
  .min(1)
  .describe("Table or view id (e.g. 'grid-pqRst-U', from list_tables) or its exact name. Ids are safer: names can change.");
const rowIdOrName = z.string().min(1).describe("Row id (e.g. 'i-tuVwxYz', from list_rows) or the value of the table's display column.");
const limit = z.number().int().min(1).max(500).optional().describe("Maximum items to return; Coda may return fewer.");
const pageToken = z
  .string()
  .optional()
  .describe("nextPageToken from the previous call, to fetch the next page. Other filters are implied by the token.");
const paging = { limit, pageToken };
const useColumnNames = z
  .boolean()
  .default(true)
  .describe("Key row values by column name (true, default) instead of column id ('c-…').");
const valueFormat = z
  .enum(["simple", "simpleWithArrays", "rich"])
  .optional()
  .describe("How cell values are rendered: 'simple' (default) text, 'simpleWithArrays' keeps lists as arrays, 'rich' adds structure/markdown.");
const cellValue = z.union([z.string(), z.number(), z.boolean(), z.array(z.union([z.string(), z.number(), z.boolean()]))]);
const cells = z
  .array(
    z.object({
      column: z.string().min(1).describe("Column id ('c-…', from list_columns) or exact column name."),
      value: cellValue.describe("New value: text, number, boolean, or a list for multi-value columns. '' clears the cell."),
    }),
  )
  .min(1);

const READ: ToolAnnotations = { readOnlyHint: true, idempotentHint: true, openWorldHint: true };
const OVERWRITE: ToolAnnotations = { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: true };
const ASYNC_NOTE = "Coda applies changes asynchronously: they usually show up in reads within a few seconds.";

// ---------------------------------------------------------------------------------------------
// The tools
// ---------------------------------------------------------------------------------------------

const TOOLS: AnyToolSpec[] = [
  tool({
    name: "whoami",
    title: "Who am I",
    description: "Returns the Coda user behind the current credentials: name, loginId (email), workspace. Useful to check the connection works.",
    input: {},
    annotations: READ,
    run: (client) => client.whoami(),
  }),
  tool({
    name: "list_docs",
    title: "List docs",
    description:
      "Lists the Coda docs the user can access: id, name, owner, browserLink. " +
      "Filter by a name search and/or only docs the user owns. Pages of results: pass nextPageToken back as pageToken.",
    input: {
      query: z.string().optional().describe("Search text matched against doc names."),
      isOwner: z.boolean().optional().describe("Only docs owned by the user."),
      ...paging,
    },
    annotations: READ,
    run: (client, { query, isOwner, limit, pageToken }) => client.listDocs({ query, isOwner, limit, pageToken }),
  }),
  tool({
    name: "get_doc",
    title: "Get doc",
    description: "Returns one doc's metadata: name, owner, workspace, folder, created/updated times, browserLink.",
    input: { docId },
    annotations: READ,
    run: (client, args) => client.getDoc(args.docId),
  }),
  tool({
    name: "list_pages",
    title: "List pages",
    description:
      "Lists the pages of a doc (id 'canvas-…', name, parent, children, browserLink), including subpages. " +
      "Use a page id with get_page_content. Pages of results: pass nextPageToken back as pageToken.",
    input: { docId, ...paging },
    annotations: READ,
    run: (client, args) => client.listPages(args.docId, { limit: args.limit, pageToken: args.pageToken }),
  }),
  tool({
    name: "get_page_content",
    title: "Get page content",
    description:
      "Returns the text of one page (not its subpages). 'plainText' (default) is read directly, one line per paragraph. " +
      "'markdown' and 'html' run a Coda export that can take several seconds; markdown omits page attachments, html keeps them. " +
      "Only canvas pages have content.",
    input: {
      docId,
      pageIdOrName,
      contentFormat: z.enum(["plainText", "markdown", "html"]).default("plainText").describe("Output format."),
    },
    annotations: READ,
    run: (client, args) => client.getPageContent(args.docId, args.pageIdOrName, { contentFormat: args.contentFormat }),
  }),
  tool({
    name: "list_tables",
    title: "List tables",
    description:
      "Lists the tables and views of a doc: id ('grid-…' for tables, 'table-…' for views), name, tableType, parent page. " +
      "Pages of results: pass nextPageToken back as pageToken.",
    input: {
      docId,
      tableTypes: z.array(z.enum(["table", "view"])).optional().describe("Only these kinds; default both."),
      ...paging,
    },
    annotations: READ,
    run: (client, { docId, tableTypes, limit, pageToken }) => client.listTables(docId, { tableTypes, limit, pageToken }),
  }),
  tool({
    name: "list_columns",
    title: "List columns",
    description:
      "Lists the columns of a table or view: id ('c-…'), name, format type (text, number, checkbox, button, …), " +
      "whether it is the display column. Use before writing rows or filtering. Pages of results: pass nextPageToken back as pageToken.",
    input: { docId, tableIdOrName, ...paging },
    annotations: READ,
    run: (client, args) => client.listColumns(args.docId, args.tableIdOrName, { limit: args.limit, pageToken: args.pageToken }),
  }),
  tool({
    name: "list_rows",
    title: "List rows",
    description:
      "Lists rows of a table or view: id ('i-…'), name (display column value), values. " +
      'Filter with query, Coda\'s `<column>:<value>` syntax where column is an id or a quoted name and value is JSON: ' +
      '`"Status":"Done"`, `c-tuVwxYz:"Apple"`, `"Done":true`, `"Estimate":3` (one column, exact match). ' +
      "Pages of results: pass nextPageToken back as pageToken (it carries the filter and sort).",
    input: {
      docId,
      tableIdOrName,
      query: z.string().optional().describe('Filter `<column>:<value>`, e.g. "Status":"Done" or c-tuVwxYz:true.'),
      sortBy: z.enum(["natural", "createdAt", "updatedAt"]).optional().describe("Row order; default 'natural' (as in the table)."),
      useColumnNames,
      valueFormat,
      visibleOnly: z.boolean().optional().describe("Only rows and columns visible in the table's UI."),
      ...paging,
    },
    annotations: READ,
    run: (client, { docId, tableIdOrName, ...options }) => client.listRows(docId, tableIdOrName, options),
  }),
  tool({
    name: "get_row",
    title: "Get row",
    description: "Returns one row of a table or view with all its values.",
    input: { docId, tableIdOrName, rowIdOrName, useColumnNames, valueFormat },
    annotations: READ,
    run: (client, { docId, tableIdOrName, rowIdOrName, ...options }) => client.getRow(docId, tableIdOrName, rowIdOrName, options),
  }),
  tool({
    name: "upsert_rows",
    title: "Insert or update rows",
    description:
      "Adds rows to a table. With keyColumns, a row whose values in those columns match an existing row updates it instead. " +
      `Returns requestId and addedRowIds. ${ASYNC_NOTE}`,
    input: {
      docId,
      tableIdOrName,
      rows: z.array(z.object({ cells })).min(1).describe("Rows to write, each a list of { column, value } cells."),
      keyColumns: z.array(z.string().min(1)).optional().describe("Column ids or names that identify an existing row to update."),
    },
    annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: true },
    run: (client, args) => client.upsertRows(args.docId, args.tableIdOrName, args.rows, args.keyColumns),
  }),
  tool({
    name: "update_row",
    title: "Update row",
    description: `Overwrites the given cells of one row; other cells stay as they are. ${ASYNC_NOTE}`,
    input: { docId, tableIdOrName, rowIdOrName, cells },
    annotations: OVERWRITE,
    run: (client, args) => client.updateRow(args.docId, args.tableIdOrName, args.rowIdOrName, args.cells),
  }),
  tool({
    name: "delete_rows",
    title: "Delete rows",
    description: `Deletes rows by id ('i-…', from list_rows). Cannot be undone through the API. ${ASYNC_NOTE}`,
    input: { docId, tableIdOrName, rowIds: z.array(z.string().min(1)).min(1).describe("Row ids to delete.") },
    annotations: OVERWRITE,
    run: (client, args) => client.deleteRows(args.docId, args.tableIdOrName, args.rowIds),
  }),
  tool({
    name: "push_button",
    title: "Push button",
    description:
      "Pushes the button in a button column for one row, running whatever action the button is set up to do " +
      `(it may change other rows, tables or outside services). Find button columns with list_columns (format type 'button'). ${ASYNC_NOTE}`,
    input: {
      docId,
      tableIdOrName,
      rowIdOrName,
      columnIdOrName: z.string().min(1).describe("The button column's id ('c-…') or exact name."),
    },
    annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: true },
    run: (client, args) => client.pushButton(args.docId, args.tableIdOrName, args.rowIdOrName, args.columnIdOrName),
  }),
  tool({
    name: "list_formulas",
    title: "List formulas",
    description: "Lists the named formulas of a doc (id 'f-…', name). Pages of results: pass nextPageToken back as pageToken.",
    input: { docId, ...paging },
    annotations: READ,
    run: (client, args) => client.listFormulas(args.docId, { limit: args.limit, pageToken: args.pageToken }),
  }),
  tool({
    name: "list_controls",
    title: "List controls",
    description:
      "Lists the controls of a doc (sliders, selects, buttons on pages…): id 'ctrl-…', name. " +
      "Pages of results: pass nextPageToken back as pageToken.",
    input: { docId, ...paging },
    annotations: READ,
    run: (client, args) => client.listControls(args.docId, { limit: args.limit, pageToken: args.pageToken }),
  }),
];

// ---------------------------------------------------------------------------------------------
// Registration and results
// ---------------------------------------------------------------------------------------------

/** Built once: a 2026-07-28 request gets a server of its own, and every server registers them all. */
const INPUT_SCHEMAS = new Map(TOOLS.map((spec) => [spec.name, z.object(spec.input)]));

export function registerCodaTools(server: McpServer, clientFor: ClientFor): void {
  for (const spec of TOOLS) {
    server.registerTool(
      spec.name,
      { title: spec.title, description: spec.description, inputSchema: INPUT_SCHEMAS.get(spec.name)!, annotations: spec.annotations },
      async (args: Record<string, unknown>, ctx) => {
        let client: CodaClient;
        try {
          client = clientFor({ authInfo: ctx.http?.authInfo });
        } catch {
          return errorResult("Authentication required: this request carries no usable Coda credentials. Sign in again.");
        }
        try {
          return successResult(await spec.run(client, args));
        } catch (error) {
          return errorResult(describeFailure(error, args));
        }
      },
    );
  }
}

function successResult(value: unknown): CallToolResult {
  const compact = withoutApiLinks(value ?? {});
  const structured = isRecord(compact) ? compact : { result: compact };
  return { content: [{ type: "text", text: JSON.stringify(structured) }], structuredContent: structured };
}

function errorResult(text: string): CallToolResult {
  return { isError: true, content: [{ type: "text", text }] };
}

/** Plain-language failure, naming the ids involved so a 404 says what was not found. */
function describeFailure(error: unknown, args: Record<string, unknown>): string {
  if (!(error instanceof CodaApiError)) {
    return `Unexpected failure talking to Coda: ${error instanceof Error ? error.message : String(error)}`;
  }
  const detail = error.codaMessage && error.codaMessage !== "Not Found" ? ` Coda says: ${error.codaMessage}` : "";
  const { status } = error;
  if (status === 0) return `Could not reach Coda: ${error.message}. Try again shortly.`;
  if (status === 401) return "Coda rejected the API token (401): sign in again / check the token.";
  if (status === 403) return `No access (403): the signed-in Coda user cannot access ${targetOf(args)}.${detail}`;
  if (status === 404) return `Not found (404): ${targetOf(args)} does not exist or is not visible to this user.${detail}`;
  if (status === 429) {
    const wait = error.retryAfterSeconds !== undefined ? `${error.retryAfterSeconds} s` : "a few seconds";
    return `Coda rate limit reached (429): retry after ${wait}.`;
  }
  if (status >= 500) return `Coda is having trouble (${status}); try again in a moment.${detail}`;
  return `Coda refused the request (${status}).${detail}`;
}

const ID_ARGS = ["docId", "pageIdOrName", "tableIdOrName", "rowIdOrName", "columnIdOrName"] as const;

function targetOf(args: Record<string, unknown>): string {
  const named = ID_ARGS.filter((key) => typeof args[key] === "string").map((key) => `${key} '${String(args[key])}'`);
  return named.length ? named.join(", ") : "the requested resource";
}

/** API `href`s and `nextPageLink`s are useless to a model (it calls tools, not URLs) and cost tokens. */
function withoutApiLinks(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutApiLinks);
  if (!isRecord(value)) return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([key]) => key !== "href" && key !== "nextPageLink")
      .map(([key, inner]) => [key, withoutApiLinks(inner)]),
  );
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
