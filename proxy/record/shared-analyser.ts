// Where several replicas write one PostgreSQL database, a connector's discovery may go through
// one, its token request through another, its MCP calls through a third: only the exchanges of
// all of them make its handshake. One replica, elected through the database (a session advisory
// lock), groups and diagnoses everything every replica records, as a single proxy would its own
// (the same HandshakeAnalysis), and writes the handshakes and each exchange's handshake id.
//
// Every replica runs this; the one holding the lock leads, the others retry it each second. The
// lock lives on the leader's connection, and every write goes through that connection: a leader
// that dies, or loses its connection, loses the lock and can write nothing more. Server-side TCP
// keepalives on it free the lock of a leader whose host vanished within seconds.
//
// New exchanges are read in commit order (store/commit-cursor.ts), woken by the replicas' NOTIFY
// at each commit. Replicas commit their batches on their own clocks, so an exchange is held for
// `holdMs` after it ended and placed in the order exchanges ended, as a single proxy places them.
// A new leader has no tracker state: it re-places the exchanges of the last half hour (the
// tracker's own window) first, which rebuilds the handshakes under the same ids (a handshake's
// id is its first exchange's), without counting them in the metrics again. The analyser also runs
// retention (store/postgres-retention.ts): one replica deleting, in short batches.
import pg from "pg";
import type { Logger } from "pino";
import type { Handshake } from "../../analysis/handshake.js";
import { settle } from "../../analysis/verdict.js";
import type { TrafficMetrics } from "../admin/metrics.js";
import { cursorAtNow, readCommitted, type CommitCursor } from "../../store/commit-cursor.js";
import { clientSettings, RECORDED_CHANNEL, refusedForGood, upsertHandshakes } from "../../store/postgres-sink.js";
import { prunePostgresOnce, type PostgresRetentionOptions } from "../../store/postgres-retention.js";
import { ROW_COLUMNS, rowToExchange, rowToHandshake, type ExchangeRow, type HandshakeRow } from "../../store/schema.js";
import { HandshakeAnalysis } from "./analysis-feed.js";

/** The lock the analyser holds, by name. */
const LOCK_KEY = "hashtextextended('mcp-lens analyser', 0)";
/** How often a follower asks for the lock, and how long a leader waits before it reads without a notification. */
const ELECTION_MS = 1_000;
const POLL_MS = 1_000;
/** How often idle handshakes are re-judged (as the SQLite recorder does). */
const SETTLE_CHECK_MS = 2_000;
/** What a new leader re-places: the tracker's idle window, at most this many exchanges. */
const TAKEOVER_WINDOW_MS = 30 * 60_000;
const TAKEOVER_MAX_ROWS = 50_000;
/** …the open handshakes rebuilt: the tracker holds at most 5,000 open and 5,000 dormant. */
const TAKEOVER_MAX_HANDSHAKES = 10_000;
/** Rows read a page; exchanges held at most (beyond it the oldest are placed at once). */
const PAGE = 1_000;
const MAX_HELD = 10_000;
/** …and their bodies, headers and facts, at most this many bytes (a backlog of large bodies). */
const MAX_HELD_BYTES = 32 * 1024 * 1024;
/** Retention: exchanges deleted a transaction, and how often it runs with and without a backlog. */
const PRUNE_BATCH = 1_000;
const PRUNE_BACKLOG_MS = 5_000;
const PRUNE_IDLE_MS = 60_000;
/** How long one retention run may go on deleting batches while a backlog remains. */
const PRUNE_BUDGET_MS = 2_000;

/** The server gave up on a statement (query_timeout, statement_timeout): a slow table, not a lost connection. */
const isTimeout = (err: unknown): boolean => err instanceof Error && (err.message === "Query read timeout" || (err as { code?: string }).code === "57014");

export interface SharedAnalyserOptions {
  url: string;
  logger: Logger;
  /** The handshake metrics (counted here only while leading) and the analyser gauge. */
  metrics: TrafficMetrics;
  /** How long an exchange waits, after it ended, for those that ended before it on other replicas. */
  holdMs: number;
  /** Retention, run by the analyser alone, on its connection. */
  retention: PostgresRetentionOptions;
}

const endOf = (row: ExchangeRow) => row.started_at + (row.duration_ms ?? 0);
const byEnd = (a: ExchangeRow, b: ExchangeRow) => endOf(a) - endOf(b) || a.id - b.id;

/** One leadership's state: gone with the connection. */
interface Lead {
  client: pg.Client;
  analysis: HandshakeAnalysis;
  cursor: CommitCursor;
  /** Read, not placed yet: waiting out holdMs. */
  held: Array<{ row: ExchangeRow; readAt: number; bytes: number }>;
  heldBytes: number;
  /** Rows the current step read, for the analysis's lookups. */
  rows: Map<number, ExchangeRow>;
  lastSettle: number;
  /** When retention runs next. */
  pruneAt: number;
}

export class SharedAnalyser {
  private stopped = false;
  private wake: (() => void) | undefined;
  /** A replica committed exchanges since the leader last waited. */
  private notified = false;
  private running: Promise<void> | undefined;
  private client: pg.Client | undefined;
  private leading = false;

  constructor(private readonly options: SharedAnalyserOptions) {
    options.metrics.setAnalyser(false);
  }

  start(): void {
    this.running ??= this.run();
  }

  /** Stops leading (the lock goes with the connection) or campaigning. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.client?.end().catch(() => undefined);
    await this.running;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.campaign();
      } catch (err) {
        if (!this.stopped) this.options.logger.warn({ err }, this.leading ? "the analyser lost its database connection: another replica takes over" : "cannot reach the database to elect the analyser");
      }
      if (this.leading) this.options.logger.info("this replica no longer analyses handshakes");
      this.leading = false;
      this.options.metrics.setAnalyser(false);
      await this.sleep(ELECTION_MS);
    }
  }

  /** One connection's life: ask for the lock until it is granted, then lead until the connection fails. */
  private async campaign(): Promise<void> {
    const client = new pg.Client({ ...clientSettings(this.options.url), keepAlive: true });
    // A connection that breaks also says so as an event: the failing query is what counts.
    client.on("error", () => undefined);
    client.on("notification", () => {
      this.notified = true;
      this.wake?.();
    });
    this.client = client;
    try {
      await client.connect();
      // Server-side keepalives: the lock of a leader whose host vanished is freed in ~11 s.
      await client.query("SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3");
      // The server cancels a statement before the driver gives up on it (query_timeout, 10 s): a
      // slow delete then fails alone, and the connection, and with it the lock, stays usable.
      await client.query("SET statement_timeout = 8000");
      while (!this.stopped) {
        const { rows } = await client.query<{ granted: boolean }>(`SELECT pg_try_advisory_lock(${LOCK_KEY}) AS granted`);
        if (rows[0]?.granted) break;
        await this.sleep(ELECTION_MS);
      }
      if (this.stopped) return;
      this.leading = true;
      this.options.metrics.setAnalyser(true);
      this.options.logger.info("this replica analyses the handshakes of every replica now");
      await client.query(`LISTEN ${RECORDED_CHANNEL}`);
      const lead = await this.takeOver(client);
      while (!this.stopped) {
        await this.step(lead);
        const first = lead.held[0];
        const due = first ? Math.min(endOf(first.row), first.readAt) + this.options.holdMs - Date.now() : POLL_MS;
        await this.sleep(Math.max(10, Math.min(POLL_MS, due)));
      }
    } finally {
      this.client = undefined;
      await client.end().catch(() => undefined);
    }
  }

  /**
   * A new leader: re-places the exchanges of the handshakes still open (in progress, or active
   * within the tracker's window) and the recent ones no handshake has, in the order they ended,
   * to rebuild the open handshakes under their ids; settles the stored ones in progress it could
   * not rebuild (an analyser long gone left them); reads new rows from where that snapshot ends.
   */
  private async takeOver(client: pg.Client): Promise<Lead> {
    const since = Date.now() - TAKEOVER_WINDOW_MS;
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    let recent: number[];
    let known: HandshakeRow[];
    let cursor: CommitCursor;
    try {
      cursor = await cursorAtNow(client);
      known = (
        await client.query<HandshakeRow>("SELECT * FROM handshakes WHERE outcome = 'in_progress' OR ended_at >= $1 ORDER BY ended_at DESC LIMIT $2", [since, TAKEOVER_MAX_HANDSHAKES])
      ).rows;
      // The open handshakes whole (a handshake is rebuilt from its first exchange, which names
      // it), and the newest of the exchanges no handshake has.
      recent = (
        await client.query<{ id: number }>(
          `SELECT id FROM (
             SELECT id, started_at + coalesce(duration_ms, 0) AS ended FROM exchanges WHERE handshake_id = ANY($1::bigint[])
             UNION ALL
             SELECT id, ended FROM (SELECT id, started_at, started_at + coalesce(duration_ms, 0) AS ended FROM exchanges
               WHERE handshake_id IS NULL AND started_at >= $2 ORDER BY started_at DESC LIMIT $3) unassigned
           ) recent ORDER BY ended DESC, id DESC LIMIT $4`,
          [known.map((h) => h.id), since, TAKEOVER_MAX_ROWS, 2 * TAKEOVER_MAX_ROWS],
        )
      ).rows
        .map((r) => r.id)
        .reverse();
      await client.query("COMMIT");
    } catch (err) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    }
    // What the analyser before counted stays counted: remembered here, not counted again.
    this.options.metrics.observeHandshakes(known.map(rowToHandshake), false);
    const rows = new Map<number, ExchangeRow>();
    const analysis = new HandshakeAnalysis(
      (id) => rows.get(id),
      (err, count) => this.options.logger.error({ err, count }, "could not diagnose handshakes: stored without their diagnosis"),
    );
    const lead: Lead = { client, analysis, cursor, held: [], heldBytes: 0, rows, lastSettle: Date.now(), pruneAt: Date.now() + PRUNE_BACKLOG_MS };
    const rebuilt = new Set<number>();
    for (let from = 0; from < recent.length; from += PAGE) {
      const page = await this.rowsById(client, recent.slice(from, from + PAGE));
      for (const id of await this.place(lead, page.sort(byEnd))) rebuilt.add(id);
    }
    const orphans = known.filter((h) => h.outcome === "in_progress" && !rebuilt.has(h.id));
    await this.write(lead, [], orphans.map((row) => settle(rowToHandshake(row))));
    if (recent.length > 0) this.options.logger.info({ exchanges: recent.length, settled: orphans.length }, "re-placed the open handshakes' exchanges");
    return lead;
  }

  /** New rows, the held ones that are due placed, idle handshakes judged and retention now and then. */
  private async step(lead: Lead): Promise<void> {
    const readAt = Date.now();
    for (let read = PAGE; read === PAGE && !this.heldFull(lead); ) {
      const rows = await readCommitted(lead.client, lead.cursor, PAGE);
      read = rows.length;
      // A row that arrives with its handshake (doctor --db) was grouped by its writer.
      for (const row of rows) if (row.handshake_id === null) this.hold(lead, row, readAt);
    }
    lead.held.sort((a, b) => byEnd(a.row, b.row));
    // Due once held for holdMs after it ended, or after it was read (a replica's clock may run ahead).
    const now = Date.now();
    let due = 0;
    while (due < lead.held.length && (Math.min(endOf(lead.held[due]!.row), lead.held[due]!.readAt) + this.options.holdMs <= now || this.heldFull(lead, lead.held.length - due))) {
      lead.heldBytes -= lead.held[due]!.bytes;
      due++;
    }
    if (due > 0) await this.place(lead, lead.held.splice(0, due).map((h) => h.row));
    if (now - lead.lastSettle >= SETTLE_CHECK_MS) {
      lead.lastSettle = now;
      // The clock the analysis sees is holdMs behind: an exchange still held may yet continue a handshake.
      const seen = now - this.options.holdMs;
      const candidates = lead.analysis.tickCandidates(seen);
      await this.readAhead(lead, candidates);
      await this.write(lead, [], lead.analysis.judgeTick(candidates, seen));
    }
    if (now >= lead.pruneAt) await this.prune(lead);
  }

  private hold(lead: Lead, row: ExchangeRow, readAt: number): void {
    const text = [row.req_body, row.res_body, row.req_body_decoded, row.res_body_decoded, row.req_headers, row.res_headers, row.facts, row.forwarding];
    const bytes = text.reduce((sum, t) => sum + (t?.length ?? 0), 0);
    lead.held.push({ row, readAt, bytes });
    lead.heldBytes += bytes;
  }

  /** Held beyond the bounds (`count` rows, `heldBytes` of what is not on its way out): the oldest are placed at once. */
  private heldFull(lead: Lead, count = lead.held.length): boolean {
    return count > MAX_HELD || lead.heldBytes > MAX_HELD_BYTES;
  }

  /**
   * Retention, a batch at a time while a backlog remains (within a time budget), on the lock's
   * connection. A failure is logged and retried later: it must not cost the leadership, which
   * would pass it on to the next analyser, and the next.
   */
  private async prune(lead: Lead): Promise<void> {
    const until = Date.now() + PRUNE_BUDGET_MS;
    let deleted = 0;
    try {
      for (let batch = PRUNE_BATCH; batch >= PRUNE_BATCH && Date.now() < until; ) {
        batch = await prunePostgresOnce(lead.client, { ...this.options.retention, batch: PRUNE_BATCH });
        deleted += batch;
      }
      if (deleted > 0) this.options.logger.debug({ deleted }, "retention pruned exchanges");
      // While a backlog remains, come back soon; otherwise rarely.
      lead.pruneAt = Date.now() + (Date.now() >= until ? PRUNE_BACKLOG_MS : PRUNE_IDLE_MS);
    } catch (err) {
      if (!refusedForGood(err) && !isTimeout(err)) throw err;
      this.options.logger.warn({ err, deleted }, "retention could not prune exchanges; it tries again later");
      lead.pruneAt = Date.now() + PRUNE_IDLE_MS;
    }
  }

  /** Places rows (in the order they ended), judges the handshakes they changed, writes both; returns the handshakes' ids. */
  private async place(lead: Lead, rows: ExchangeRow[]): Promise<number[]> {
    const assigned: Array<[number, number]> = [];
    for (const row of rows) {
      lead.rows.set(row.id, row);
      const handshakeId = lead.analysis.analyse(rowToExchange(row));
      if (handshakeId !== null) assigned.push([row.id, handshakeId]);
    }
    const changed = lead.analysis.takeChanged();
    await this.readAhead(lead, changed);
    await this.write(lead, assigned, lead.analysis.judgeChanged(changed));
    return changed.map((h) => h.id);
  }

  /** Reads the exchanges the judging of `handshakes` will look up that this step has not read. */
  private async readAhead(lead: Lead, handshakes: Handshake[]): Promise<void> {
    const missing = [...new Set(handshakes.flatMap((h) => lead.analysis.idsToRead(h)))].filter((id) => !lead.rows.has(id));
    for (let from = 0; from < missing.length; from += PAGE) {
      for (const row of await this.rowsById(lead.client, missing.slice(from, from + PAGE))) lead.rows.set(row.id, row);
    }
  }

  /** Each exchange's handshake id and the judged handshakes, in one transaction on the lock's connection. */
  private async write(lead: Lead, assigned: Array<[number, number]>, handshakes: Handshake[]): Promise<void> {
    lead.rows.clear();
    if (assigned.length === 0 && handshakes.length === 0) return;
    await lead.client.query("BEGIN");
    try {
      if (assigned.length > 0) {
        await lead.client.query("UPDATE exchanges e SET handshake_id = a.handshake_id FROM unnest($1::bigint[], $2::bigint[]) AS a(id, handshake_id) WHERE e.id = a.id", [
          assigned.map(([id]) => id),
          assigned.map(([, handshakeId]) => handshakeId),
        ]);
      }
      await upsertHandshakes(lead.client, handshakes);
      await lead.client.query("COMMIT");
    } catch (err) {
      await lead.client.query("ROLLBACK").catch(() => undefined);
      // Values the server will never take: this write is given up on, not the leadership, which
      // would pass them on to the next analyser, and the next, for ever.
      if (!refusedForGood(err)) throw err;
      this.options.logger.error({ err, handshakes: handshakes.length, exchanges: assigned.length }, "the database refused the analyser's write: these handshakes are not stored");
      return;
    }
    this.options.metrics.observeHandshakes(handshakes);
  }

  private async rowsById(client: pg.Client, ids: number[]): Promise<ExchangeRow[]> {
    if (ids.length === 0) return [];
    return (await client.query<ExchangeRow>(`SELECT ${ROW_COLUMNS.join(", ")} FROM exchanges WHERE id = ANY($1::bigint[])`, [ids])).rows;
  }

  /** Waits `ms`, or less when a notification arrives (or arrived since the last wait) or stop is called. */
  private sleep(ms: number): Promise<void> {
    if (this.stopped || this.notified) {
      this.notified = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(), ms);
      const done = () => {
        clearTimeout(timer);
        this.notified = false;
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
    });
  }
}
