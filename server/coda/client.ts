/**
 * A small client for Coda's REST API v1 (https://coda.io/apis/v1).
 *
 * Shapes follow Coda's documentation: lists answer `{ items, href, nextPageToken?, nextPageLink? }`,
 * errors answer `{ statusCode, statusMessage, message }`, mutations answer 202 `{ requestId, ... }`
 * and are applied asynchronously by Coda. The token is only ever sent as a Bearer header to
 * `baseUrl`; it never appears in an error message.
 */

export type ContentFormat = "plainText" | "markdown" | "html";
export type ValueFormat = "simple" | "simpleWithArrays" | "rich";
export type RowSortBy = "createdAt" | "natural" | "updatedAt";
export type TableType = "table" | "view";

export interface CodaClientOptions {
  /** API base, e.g. https://coda.io/apis/v1 */
  baseUrl: string;
  token: string;
  fetch?: typeof fetch;
  /** Retries after a 429 / 502 / 503 / 504 before giving up; default 3. */
  maxRetries?: number;
  /** Injected for tests so waits are recorded instead of spent. */
  sleep?: (ms: number) => Promise<void>;
  /** Per-attempt deadline; default 30 000 ms. */
  timeoutMs?: number;
}

/** Any Coda resource: every one carries `id`, `type` and `href`; most carry `name` and `browserLink`. */
export interface CodaResource {
  id: string;
  type: string;
  href: string;
  name?: string;
  browserLink?: string;
  [field: string]: unknown;
}

export interface CodaRow extends CodaResource {
  /** Cell values keyed by column id (`c-…`), or by column name with `useColumnNames`. */
  values: Record<string, unknown>;
}

export interface CodaList<T> {
  items: T[];
  href?: string;
  nextPageToken?: string;
  nextPageLink?: string;
}

export interface CodaUser {
  name: string;
  loginId: string;
  type: string;
  scoped: boolean;
  tokenName?: string;
  href: string;
  workspace?: CodaResource;
  [field: string]: unknown;
}

/** Coda answers every mutation with 202 and a request id; the change lands a few seconds later. */
export interface MutationResult {
  requestId: string;
  [field: string]: unknown;
}

export interface PageContent {
  format: ContentFormat;
  content: string;
  /** Set when a very long page was cut off after the bounded number of reads. */
  truncated?: boolean;
}

export interface CellEdit {
  column: string;
  value: unknown;
}

export type Paging = {
  limit?: number;
  pageToken?: string;
};

export class CodaApiError extends Error {
  override name = "CodaApiError";
  /** HTTP status from Coda; 0 when Coda could not be reached or did not answer in time. */
  readonly status: number;
  /** Coda's own `message` from the error body, when it sent one. */
  readonly codaMessage?: string;
  readonly retryAfterSeconds?: number;

  constructor(status: number, message: string, details: { codaMessage?: string; retryAfterSeconds?: number } = {}) {
    super(message);
    this.status = status;
    if (details.codaMessage !== undefined) this.codaMessage = details.codaMessage;
    if (details.retryAfterSeconds !== undefined) this.retryAfterSeconds = details.retryAfterSeconds;
  }
}

type QueryValue = string | number | boolean | string[] | undefined;
type Query = Record<string, QueryValue>;
type Method = "GET" | "POST" | "PUT" | "DELETE";

const MAX_WAIT_MS = 30_000;
const BACKOFF_BASE_MS = 1_000;
/** A 502/504 may mean the request ran anyway, so only methods that are safe to repeat retry it. */
const RETRYABLE_FOR_ANY_METHOD = new Set([429, 503]);
const RETRYABLE_IF_REPEATABLE = new Set([502, 504]);
/** listPageContent accepts up to 500 lines per call; cap how many calls one read may take. */
const PAGE_CONTENT_LIMIT = 500;
const MAX_PAGE_CONTENT_CALLS = 20;
/** Page exports are polled once a second for at most this many polls. */
const EXPORT_POLL_INTERVAL_MS = 1_000;
const EXPORT_MAX_POLLS = 30;

const realSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class CodaClient {
  private readonly baseUrl: string;
  private readonly token: string;
  private readonly fetchImpl: typeof fetch;
  private readonly maxRetries: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly timeoutMs: number;

  constructor(options: CodaClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.token = options.token;
    this.fetchImpl = options.fetch ?? fetch;
    this.maxRetries = options.maxRetries ?? 3;
    this.sleep = options.sleep ?? realSleep;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  whoami(): Promise<CodaUser> {
    return this.request("GET", ["whoami"]);
  }

  listDocs(options: { query?: string; isOwner?: boolean } & Paging = {}): Promise<CodaList<CodaResource>> {
    return this.request("GET", ["docs"], { query: options });
  }

  getDoc(docId: string): Promise<CodaResource> {
    return this.request("GET", ["docs", docId]);
  }

  listPages(docId: string, options: Paging = {}): Promise<CodaList<CodaResource>> {
    return this.request("GET", ["docs", docId, "pages"], { query: options });
  }

  /**
   * Plain text comes from the synchronous content endpoint (one item per line). Markdown and HTML
   * exist only through Coda's asynchronous export: begin, poll the status, fetch `downloadLink`.
   */
  getPageContent(docId: string, pageIdOrName: string, options: { contentFormat?: ContentFormat } = {}): Promise<PageContent> {
    const format = options.contentFormat ?? "plainText";
    return format === "plainText" ? this.readPlainText(docId, pageIdOrName) : this.exportPage(docId, pageIdOrName, format);
  }

  listTables(docId: string, options: { tableTypes?: TableType[] } & Paging = {}): Promise<CodaList<CodaResource>> {
    return this.request("GET", ["docs", docId, "tables"], { query: options });
  }

  listColumns(docId: string, tableIdOrName: string, options: Paging = {}): Promise<CodaList<CodaResource>> {
    return this.request("GET", ["docs", docId, "tables", tableIdOrName, "columns"], { query: options });
  }

  listRows(
    docId: string,
    tableIdOrName: string,
    options: {
      query?: string;
      sortBy?: RowSortBy;
      useColumnNames?: boolean;
      valueFormat?: ValueFormat;
      visibleOnly?: boolean;
    } & Paging = {},
  ): Promise<CodaList<CodaRow>> {
    return this.request("GET", ["docs", docId, "tables", tableIdOrName, "rows"], { query: options });
  }

  getRow(
    docId: string,
    tableIdOrName: string,
    rowIdOrName: string,
    options: { useColumnNames?: boolean; valueFormat?: ValueFormat } = {},
  ): Promise<CodaRow> {
    return this.request("GET", ["docs", docId, "tables", tableIdOrName, "rows", rowIdOrName], { query: options });
  }

  /** Inserts rows, or updates those matching every `keyColumns` value. Answers `addedRowIds`. */
  upsertRows(
    docId: string,
    tableIdOrName: string,
    rows: Array<{ cells: CellEdit[] }>,
    keyColumns?: string[],
  ): Promise<MutationResult & { addedRowIds?: string[] }> {
    const body = keyColumns?.length ? { rows, keyColumns } : { rows };
    return this.request("POST", ["docs", docId, "tables", tableIdOrName, "rows"], { body });
  }

  updateRow(docId: string, tableIdOrName: string, rowIdOrName: string, cells: CellEdit[]): Promise<MutationResult> {
    return this.request("PUT", ["docs", docId, "tables", tableIdOrName, "rows", rowIdOrName], { body: { row: { cells } } });
  }

  deleteRows(docId: string, tableIdOrName: string, rowIds: string[]): Promise<MutationResult> {
    return this.request("DELETE", ["docs", docId, "tables", tableIdOrName, "rows"], { body: { rowIds } });
  }

  pushButton(docId: string, tableIdOrName: string, rowIdOrName: string, columnIdOrName: string): Promise<MutationResult> {
    const path = ["docs", docId, "tables", tableIdOrName, "rows", rowIdOrName, "buttons", columnIdOrName];
    return this.request("POST", path);
  }

  listFormulas(docId: string, options: Paging = {}): Promise<CodaList<CodaResource>> {
    return this.request("GET", ["docs", docId, "formulas"], { query: options });
  }

  listControls(docId: string, options: Paging = {}): Promise<CodaList<CodaResource>> {
    return this.request("GET", ["docs", docId, "controls"], { query: options });
  }

  // -------------------------------------------------------------------------------------------
  // Page content
  // -------------------------------------------------------------------------------------------

  private async readPlainText(docId: string, pageIdOrName: string): Promise<PageContent> {
    const path = ["docs", docId, "pages", pageIdOrName, "content"];
    const lines: string[] = [];
    let pageToken: string | undefined;
    for (let call = 0; call < MAX_PAGE_CONTENT_CALLS; call++) {
      const page = await this.request<CodaList<PageContentItem>>("GET", path, {
        query: { contentFormat: "plainText", limit: PAGE_CONTENT_LIMIT, pageToken },
      });
      for (const item of page.items) lines.push(lineText(item));
      pageToken = page.nextPageToken;
      if (!pageToken) break;
    }
    return { format: "plainText", content: lines.join("\n"), ...(pageToken ? { truncated: true } : {}) };
  }

  private async exportPage(docId: string, pageIdOrName: string, format: "markdown" | "html"): Promise<PageContent> {
    const exportPath = ["docs", docId, "pages", pageIdOrName, "export"];
    const started = await this.request<{ id: string }>("POST", exportPath, { body: { outputFormat: format } });
    const downloadLink = await this.waitForExport([...exportPath, started.id]);
    return { format, content: await this.download(downloadLink) };
  }

  /** Gates on `downloadLink` / `error` rather than `status`, whose spelling Coda never pinned down. */
  private async waitForExport(statusPath: string[]): Promise<string> {
    for (let poll = 0; poll < EXPORT_MAX_POLLS; poll++) {
      // Coda documents that a fresh export id may 404 until it has replicated: wait first, then ask.
      await this.sleep(EXPORT_POLL_INTERVAL_MS);
      const status = await this.request<ExportStatus>("GET", statusPath).catch((error: unknown) => {
        if (error instanceof CodaApiError && error.status === 404) return undefined;
        throw error;
      });
      if (status?.downloadLink) return status.downloadLink;
      if (status?.error) throw new CodaApiError(502, `Coda could not export the page: ${status.error}`, { codaMessage: status.error });
    }
    const seconds = (EXPORT_MAX_POLLS * EXPORT_POLL_INTERVAL_MS) / 1000;
    throw new CodaApiError(504, `Coda did not finish exporting the page within ${seconds} s`);
  }

  /** The download link points at Coda's file storage, not the API: it needs (and gets) no token. */
  private async download(link: string): Promise<string> {
    const res = await this.fetchWithTimeout(link, { method: "GET" });
    const text = await res.text();
    // An expired link answers an S3-style XML error document, sometimes even with a 200.
    if (!res.ok || text.startsWith("<?xml")) {
      throw new CodaApiError(502, `Downloading the exported page failed (HTTP ${res.status})`);
    }
    return text;
  }

  // -------------------------------------------------------------------------------------------
  // HTTP
  // -------------------------------------------------------------------------------------------

  private async request<T>(method: Method, segments: string[], options: { query?: Query; body?: unknown } = {}): Promise<T> {
    const url = this.urlFor(segments, options.query ?? {});
    const init: RequestInit = {
      method,
      headers: {
        Authorization: `Bearer ${this.token}`,
        Accept: "application/json",
        ...(options.body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    };
    const label = `${method} /${segments.join("/")}`;
    for (let attempt = 0; ; attempt++) {
      const res = await this.fetchWithTimeout(url, init);
      if (res.ok) return (await readJson(res)) as T;
      const error = await apiErrorFrom(res, label);
      if (attempt >= this.maxRetries || !isRetryable(res.status, method)) throw error;
      await this.sleep(retryDelayMs(error.retryAfterSeconds, attempt));
    }
  }

  private urlFor(segments: string[], query: Query): string {
    const url = new URL(`${this.baseUrl}/${segments.map(encodeURIComponent).join("/")}`);
    for (const [key, value] of Object.entries(query)) {
      if (value === undefined) continue;
      url.searchParams.set(key, Array.isArray(value) ? value.join(",") : String(value));
    }
    return url.href;
  }

  private async fetchWithTimeout(url: string, init: RequestInit): Promise<Response> {
    try {
      return await this.fetchImpl(url, { ...init, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (error) {
      const timedOut = error instanceof Error && error.name === "TimeoutError";
      const reason = timedOut ? `did not answer within ${this.timeoutMs} ms` : "could not be reached";
      throw new CodaApiError(0, `Coda ${reason} (${init.method} ${new URL(url).pathname})`);
    }
  }
}

interface PageContentItem {
  id: string;
  type: string;
  itemContent?: { content?: string; lineLevel?: number; style?: string };
}

interface ExportStatus {
  id: string;
  status: string;
  downloadLink?: string;
  error?: string;
}

/** Indents nested list lines so plain text keeps the page's outline. */
function lineText(item: PageContentItem): string {
  const level = item.itemContent?.lineLevel ?? 0;
  return "  ".repeat(Math.max(0, level)) + (item.itemContent?.content ?? "");
}

function isRetryable(status: number, method: Method): boolean {
  return RETRYABLE_FOR_ANY_METHOD.has(status) || (method !== "POST" && RETRYABLE_IF_REPEATABLE.has(status));
}

/** Honours Retry-After when given, else exponential backoff with jitter so callers sharing a bucket spread out. */
function retryDelayMs(retryAfterSeconds: number | undefined, attempt: number): number {
  if (retryAfterSeconds !== undefined) return Math.min(retryAfterSeconds * 1000, MAX_WAIT_MS);
  const backoff = Math.min(BACKOFF_BASE_MS * 2 ** attempt, MAX_WAIT_MS);
  return backoff / 2 + Math.random() * (backoff / 2);
}

/** Retry-After is either delta-seconds or an HTTP date. */
export function parseRetryAfter(header: string | null, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}

async function readJson(res: Response): Promise<unknown> {
  const text = await res.text();
  return text ? JSON.parse(text) : {};
}

async function apiErrorFrom(res: Response, label: string): Promise<CodaApiError> {
  const body = await res.text().catch(() => "");
  let codaMessage: string | undefined;
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === "string") codaMessage = parsed.message;
  } catch {
    // Not Coda's JSON error shape (e.g. an HTML page from a gateway): keep the status only.
  }
  const retryAfterSeconds = parseRetryAfter(res.headers.get("retry-after"));
  const detail = codaMessage ? `: ${codaMessage}` : "";
  return new CodaApiError(res.status, `Coda API ${res.status} on ${label}${detail}`, { codaMessage, retryAfterSeconds });
}
