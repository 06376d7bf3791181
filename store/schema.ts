// The recording's schema: numbered migrations (tracked by PRAGMA user_version on SQLite, by the
// schema_migrations table on PostgreSQL), and the mapping between a ClassifiedExchange and its row.
import type { Database } from "better-sqlite3";
import type { ClassifiedExchange, ExchangeKind, HeaderPairs, RecordedBody } from "../analysis/exchange.js";
import type { Handshake } from "../analysis/handshake.js";
import type { ClientBase } from "pg";
import { latestVersion, postgresSql, runMigrations, type Migration } from "../common/migrations.js";
import { runPostgresMigrations } from "../common/migrations-postgres.js";

/** The first migration, as SQLite has always run it. */
const V1 = `
      CREATE TABLE exchanges (
        id INTEGER PRIMARY KEY,            -- assigned by the proxy, monotonic
        started_at INTEGER NOT NULL,       -- epoch ms
        duration_ms INTEGER,
        ttfb_ms INTEGER,
        client_addr TEXT,
        method TEXT NOT NULL,
        host TEXT,
        path TEXT NOT NULL,
        query TEXT,
        status INTEGER,
        upstream_error TEXT,
        aborted INTEGER NOT NULL,          -- 0/1
        websocket INTEGER NOT NULL,        -- 0/1
        kind TEXT NOT NULL,
        facts TEXT NOT NULL,               -- JSON ExchangeFacts, the source of truth for the promoted columns
        -- Promoted from facts so lookups do not parse JSON.
        user_agent TEXT,
        origin TEXT,
        session_id TEXT,                   -- Mcp-Session-Id sent, else assigned
        client_id TEXT,
        bearer_fp TEXT,
        mcp_method TEXT,                   -- first method the client sent
        req_headers TEXT NOT NULL,         -- JSON array of [name, value]
        req_body TEXT,
        req_body_encoding TEXT NOT NULL,
        req_body_size INTEGER NOT NULL,
        req_body_truncated INTEGER NOT NULL,
        req_body_decoded TEXT,
        res_headers TEXT,                  -- JSON array of [name, value]; NULL when no response arrived
        res_body TEXT,
        res_body_encoding TEXT NOT NULL,
        res_body_size INTEGER NOT NULL,
        res_body_truncated INTEGER NOT NULL,
        res_body_decoded TEXT,
        sse_events INTEGER
      );
      -- Time-range listings and age-based retention.
      CREATE INDEX exchanges_started_at ON exchanges (started_at);
      -- Filtering by kind (all token requests, all registrations, ...).
      CREATE INDEX exchanges_kind ON exchanges (kind, id);
      -- Following one MCP session, one OAuth client, or one bearer token across
      -- exchanges. Partial: most rows have none of these, so the indexes stay small.
      CREATE INDEX exchanges_session_id ON exchanges (session_id, id) WHERE session_id IS NOT NULL;
      CREATE INDEX exchanges_client_id ON exchanges (client_id, id) WHERE client_id IS NOT NULL;
      CREATE INDEX exchanges_bearer_fp ON exchanges (bearer_fp, id) WHERE bearer_fp IS NOT NULL;

      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT
      );
    `;

/** The second migration, as SQLite has always run it. */
const V2 = `
      -- Connector handshakes, derived from exchanges by analysis/handshakes.ts and analysis/diagnose/.
      CREATE TABLE handshakes (
        id INTEGER PRIMARY KEY,            -- the id of its first exchange
        client_family TEXT NOT NULL,
        client_name TEXT,
        started_at INTEGER NOT NULL,       -- epoch ms
        ended_at INTEGER NOT NULL,
        outcome TEXT NOT NULL,             -- succeeded | failed | abandoned | in_progress
        failed_step TEXT,
        first_code TEXT,                   -- the most decisive diagnosis, for lists and filters
        steps TEXT NOT NULL,               -- JSON StepRecord[]
        diagnoses TEXT NOT NULL,           -- JSON Diagnosis[]
        exchange_ids TEXT NOT NULL         -- JSON number[]
      );
      -- Newest first, and failed ones first, are the inspector's two listings.
      CREATE INDEX handshakes_started_at ON handshakes (started_at);
      CREATE INDEX handshakes_outcome ON handshakes (outcome, started_at);
      ALTER TABLE exchanges ADD COLUMN handshake_id INTEGER;
      CREATE INDEX exchanges_handshake_id ON exchanges (handshake_id, id) WHERE handshake_id IS NOT NULL;
    `;

const REPLICA_COLUMN = "ALTER TABLE exchanges ADD COLUMN replica TEXT;";

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    up: {
      sqlite: V1,
      // Durations are fractional milliseconds (performance.now()): SQLite keeps them as REAL in an
      // INTEGER column, PostgreSQL's BIGINT would refuse them.
      // rec_xid: the transaction that wrote the row. Replicas take ids before they commit, so rows
      // commit out of id order; the analyser reads new rows by transaction (store/commit-cursor.ts).
      postgres:
        postgresSql(V1).replace(/\b(duration_ms|ttfb_ms) BIGINT\b/g, "$1 DOUBLE PRECISION") +
        `
      ALTER TABLE exchanges ADD COLUMN rec_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
      CREATE INDEX exchanges_rec_xid ON exchanges (rec_xid, id);
    `,
    },
  },
  {
    version: 2,
    up: {
      sqlite: V2,
      // A handshake's times come from its exchanges' (started_at + duration_ms): fractional.
      postgres: postgresSql(V2).replace(/\b(started_at|ended_at) BIGINT NOT NULL/g, "$1 DOUBLE PRECISION NOT NULL"),
    },
  },
  {
    version: 3,
    up: `
      -- req_headers are what the upstream received. This keeps what mcp-lens changed on the way, as
      -- JSON {"claimedHeaders": [[name, value]...], "setByProxy": [name...]}: the client's own values
      -- (redacted) of the headers it replaced or removed (an untrusted peer's X-Forwarded-*,
      -- Forwarded, X-Real-IP...), and the X-Forwarded-* whose value is mcp-lens's own. NULL: none.
      ALTER TABLE exchanges ADD COLUMN forwarding TEXT;
    `,
  },
  {
    version: 4,
    up: `
      -- The MCP era a handshake spoke (modern = 2026-07-28, legacy, unknown), whether a dual-era client
      -- fell back from modern to legacy, and how it got its OAuth client id (cimd, dcr, pre_registered,
      -- none). Rows written before this migration say unknown / none until re-analysed.
      ALTER TABLE handshakes ADD COLUMN era TEXT NOT NULL DEFAULT 'unknown';
      ALTER TABLE handshakes ADD COLUMN era_fallback INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE handshakes ADD COLUMN registration TEXT NOT NULL DEFAULT 'none';
    `,
  },
  {
    version: 5,
    up: {
      // The proxy that recorded the exchange (--replica, default the host name): several write one
      // PostgreSQL database, and a handshake's steps may each have gone through a different one.
      sqlite: REPLICA_COLUMN,
      // Shared by the replicas: exchange ids, handed out in blocks (store/id-blocks.ts), since each
      // replica numbers its exchanges before they are written; and the redaction key, so that one
      // token has one fingerprint whichever replica saw it (the analyser links by fingerprint).
      postgres: `${REPLICA_COLUMN}
      CREATE SEQUENCE exchange_id_blocks MINVALUE 0 START 0;
      CREATE TABLE lens_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    `,
    },
  },
];

export const SCHEMA_VERSION = latestVersion(MIGRATIONS);

/** Applies the pending migrations of the recording database. */
export function migrate(db: Database): void {
  runMigrations(db, MIGRATIONS);
}

/** The same, for a recording database on PostgreSQL (--db postgres://…). */
export function migratePostgres(client: ClientBase): Promise<void> {
  return runPostgresMigrations(client, MIGRATIONS);
}

export interface ExchangeRow {
  id: number;
  started_at: number;
  duration_ms: number | null;
  ttfb_ms: number | null;
  client_addr: string | null;
  method: string;
  host: string | null;
  path: string;
  query: string | null;
  status: number | null;
  upstream_error: string | null;
  aborted: 0 | 1;
  websocket: 0 | 1;
  kind: string;
  facts: string;
  user_agent: string | null;
  origin: string | null;
  session_id: string | null;
  client_id: string | null;
  bearer_fp: string | null;
  mcp_method: string | null;
  req_headers: string;
  req_body: string | null;
  req_body_encoding: string;
  req_body_size: number;
  req_body_truncated: 0 | 1;
  req_body_decoded: string | null;
  res_headers: string | null;
  res_body: string | null;
  res_body_encoding: string;
  res_body_size: number;
  res_body_truncated: 0 | 1;
  res_body_decoded: string | null;
  sse_events: number | null;
  handshake_id: number | null;
  forwarding: string | null;
  replica: string | null;
}

/** The exchanges table's columns a row fills, in insert order. */
export const ROW_COLUMNS: ReadonlyArray<keyof ExchangeRow> = [
  "id", "started_at", "duration_ms", "ttfb_ms", "client_addr", "method", "host", "path", "query",
  "status", "upstream_error", "aborted", "websocket", "kind", "facts",
  "user_agent", "origin", "session_id", "client_id", "bearer_fp", "mcp_method",
  "req_headers", "req_body", "req_body_encoding", "req_body_size", "req_body_truncated", "req_body_decoded",
  "res_headers", "res_body", "res_body_encoding", "res_body_size", "res_body_truncated", "res_body_decoded",
  "sse_events", "handshake_id", "forwarding", "replica",
];

/**
 * Positional INSERT: run it with exchangeRowValues(row). Binding 36 named parameters looks each
 * one up on the object (~2 µs a row, a fifth of the insert).
 */
export const INSERT_EXCHANGE_SQL = `INSERT INTO exchanges (${ROW_COLUMNS.join(", ")}) VALUES (${ROW_COLUMNS.map(() => "?").join(", ")})`;

/** A row's values in INSERT_EXCHANGE_SQL's column order. */
export function exchangeRowValues(row: ExchangeRow): Array<ExchangeRow[keyof ExchangeRow]> {
  return ROW_COLUMNS.map((column) => row[column]);
}

const flag = (b: boolean): 0 | 1 => (b ? 1 : 0);

export function exchangeToRow(e: ClassifiedExchange, handshakeId: number | null = null): ExchangeRow {
  const { facts } = e;
  return {
    id: e.id,
    started_at: e.startedAt,
    duration_ms: e.durationMs,
    ttfb_ms: e.ttfbMs,
    client_addr: e.clientAddr,
    method: e.method,
    host: e.host,
    path: e.path,
    query: e.query,
    status: e.status,
    upstream_error: e.upstreamError,
    aborted: flag(e.aborted),
    websocket: flag(e.websocket),
    kind: e.kind,
    facts: JSON.stringify(facts),
    user_agent: facts.userAgent ?? null,
    origin: facts.origin ?? null,
    session_id: facts.mcp?.sessionId ?? facts.mcp?.sessionIdAssigned ?? null,
    client_id: facts.clientId ?? null,
    bearer_fp: facts.bearerFingerprint ?? null,
    mcp_method: facts.mcp?.methods[0] ?? null,
    req_headers: JSON.stringify(e.requestHeaders),
    req_body: e.requestBody.text,
    req_body_encoding: e.requestBody.encoding,
    req_body_size: e.requestBody.size,
    req_body_truncated: flag(e.requestBody.truncated),
    req_body_decoded: e.requestBody.decoded,
    res_headers: e.responseHeaders === null ? null : JSON.stringify(e.responseHeaders),
    res_body: e.responseBody.text,
    res_body_encoding: e.responseBody.encoding,
    res_body_size: e.responseBody.size,
    res_body_truncated: flag(e.responseBody.truncated),
    res_body_decoded: e.responseBody.decoded,
    sse_events: e.sseEvents,
    handshake_id: handshakeId,
    forwarding: forwardingColumn(e),
    replica: e.replica ?? null,
  };
}

/** The inverse of exchangeToRow; the promoted columns are ignored (facts holds them). */
/** What mcp-lens changed on the way (migration 3), in one column: NULL for most exchanges. */
function forwardingColumn(e: ClassifiedExchange): string | null {
  const claimed = e.claimedHeaders?.length ? e.claimedHeaders : undefined;
  const setByProxy = e.setByProxy?.length ? e.setByProxy : undefined;
  return claimed || setByProxy ? JSON.stringify({ claimedHeaders: claimed, setByProxy }) : null;
}

function forwardingOf(column: string | null): Pick<ClassifiedExchange, "claimedHeaders" | "setByProxy"> {
  if (!column) return {};
  const { claimedHeaders, setByProxy } = JSON.parse(column) as Pick<ClassifiedExchange, "claimedHeaders" | "setByProxy">;
  return { ...(claimedHeaders ? { claimedHeaders } : {}), ...(setByProxy ? { setByProxy } : {}) };
}

export function rowToExchange(row: ExchangeRow): ClassifiedExchange {
  return {
    id: row.id,
    startedAt: row.started_at,
    durationMs: row.duration_ms,
    ttfbMs: row.ttfb_ms,
    clientAddr: row.client_addr,
    method: row.method,
    host: row.host,
    path: row.path,
    query: row.query,
    status: row.status,
    upstreamError: row.upstream_error,
    aborted: row.aborted === 1,
    websocket: row.websocket === 1,
    requestHeaders: JSON.parse(row.req_headers) as HeaderPairs,
    requestBody: body(row.req_body, row.req_body_encoding, row.req_body_size, row.req_body_truncated, row.req_body_decoded),
    responseHeaders: row.res_headers === null ? null : (JSON.parse(row.res_headers) as HeaderPairs),
    responseBody: body(row.res_body, row.res_body_encoding, row.res_body_size, row.res_body_truncated, row.res_body_decoded),
    sseEvents: row.sse_events,
    ...forwardingOf(row.forwarding),
    ...(row.replica === null ? {} : { replica: row.replica }),
    kind: row.kind as ExchangeKind,
    facts: JSON.parse(row.facts) as ClassifiedExchange["facts"],
  };
}

function body(
  text: string | null,
  encoding: string,
  size: number,
  truncated: 0 | 1,
  decoded: string | null,
): RecordedBody {
  return { text, encoding: encoding as RecordedBody["encoding"], size, truncated: truncated === 1, decoded };
}

export interface HandshakeRow {
  id: number;
  client_family: string;
  client_name: string | null;
  era: string;
  era_fallback: 0 | 1;
  registration: string;
  started_at: number;
  ended_at: number;
  outcome: string;
  failed_step: string | null;
  first_code: string | null;
  steps: string;
  diagnoses: string;
  exchange_ids: string;
}

/** The handshakes table's columns, in insert order. */
export const HANDSHAKE_COLUMNS: ReadonlyArray<keyof HandshakeRow> = [
  "id", "client_family", "client_name", "era", "era_fallback", "registration", "started_at", "ended_at",
  "outcome", "failed_step", "first_code", "steps", "diagnoses", "exchange_ids",
];

/** Insert or replace: a handshake's row is rewritten as it grows. */
export const UPSERT_HANDSHAKE_SQL = `INSERT OR REPLACE INTO handshakes (${HANDSHAKE_COLUMNS.join(", ")}) VALUES (${HANDSHAKE_COLUMNS.map((c) => `@${c}`).join(", ")})`;

export function handshakeToRow(h: Handshake): HandshakeRow {
  return {
    id: h.id,
    client_family: h.clientFamily,
    client_name: h.clientName,
    era: h.era,
    era_fallback: h.eraFallback ? 1 : 0,
    registration: h.registration,
    started_at: h.startedAt,
    ended_at: h.endedAt,
    outcome: h.outcome,
    failed_step: h.failedStep,
    first_code: h.diagnoses[0]?.code ?? null,
    steps: JSON.stringify(h.steps),
    diagnoses: JSON.stringify(h.diagnoses),
    exchange_ids: JSON.stringify(h.exchangeIds),
  };
}

export function rowToHandshake(row: HandshakeRow): Handshake {
  return {
    id: row.id,
    clientFamily: row.client_family as Handshake["clientFamily"],
    clientName: row.client_name,
    era: row.era as Handshake["era"],
    eraFallback: row.era_fallback === 1,
    registration: row.registration as Handshake["registration"],
    startedAt: row.started_at,
    endedAt: row.ended_at,
    outcome: row.outcome as Handshake["outcome"],
    failedStep: row.failed_step as Handshake["failedStep"],
    steps: JSON.parse(row.steps) as Handshake["steps"],
    diagnoses: JSON.parse(row.diagnoses) as Handshake["diagnoses"],
    exchangeIds: JSON.parse(row.exchange_ids) as number[],
  };
}
