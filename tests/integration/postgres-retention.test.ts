// Retention on a real PostgreSQL server: by age, by row count and by size, oldest first by start
// time (ids are not in time order across replicas), in batches; and run by the elected analyser
// of a real mcp-lens process.
import { describe, expect, it } from "vitest";
import { postgresSink } from "../../store/postgres-sink.js";
import { prunePostgresOnce } from "../../store/postgres-retention.js";
import { exchangeToRow } from "../../store/schema.js";
import { classifiedExchange, handshakeOf } from "../helpers/exchanges.js";
import { postgresBinDir, postgresForTests } from "../helpers/postgres.js";
import { startLensProcess, waitFor } from "../helpers/processes.js";
import { startUpstream } from "../helpers/upstream.js";

const IN_CI = process.env.CI === "true";
const MISSING = postgresBinDir() === undefined;
if (MISSING && !IN_CI) console.warn("PostgreSQL tests skipped: PostgreSQL is not installed (apt-get install postgresql); CI=true makes this a failure");

const DAY = 24 * 60 * 60 * 1000;
const NOW = 1_800_000_000_000;

describe.skipIf(MISSING && !IN_CI)("retention on PostgreSQL", () => {
  const pg = postgresForTests();

  /** A migrated database with exchanges started `ages` days before NOW, ids running against time (as across replicas). */
  async function recorded(ages: number[], body = "") {
    const url = await pg.freshDatabase({ migrated: true });
    const pool = pg.pool(url);
    const rows = ages.map((age, i) =>
      exchangeToRow(classifiedExchange(ages.length - i, { startedAt: NOW - age * DAY, requestBody: { text: body, encoding: "utf8", size: body.length, truncated: false, decoded: null } })),
    );
    for (let from = 0; from < rows.length; from += 500) await postgresSink(pool).write(rows.slice(from, from + 500), []);
    const left = async () => (await pool.query<{ id: number; started_at: number }>("SELECT id, started_at FROM exchanges ORDER BY started_at")).rows;
    return { url, pool, left };
  }

  it("deletes what is older than the age, in batches, and the handshakes that ended before it", async () => {
    const { pool, left } = await recorded([30, 20, 15, 10, 5, 1]);
    await postgresSink(pool).write([], [handshakeOf(1, { startedAt: NOW - 20 * DAY, endedAt: NOW - 20 * DAY }), handshakeOf(2, { startedAt: NOW - DAY, endedAt: NOW - DAY })]);
    const client = await pool.connect();
    try {
      expect(await prunePostgresOnce(client, { maxAgeDays: 14, batch: 2, now: () => NOW })).toBe(2);
      expect(await prunePostgresOnce(client, { maxAgeDays: 14, batch: 2, now: () => NOW })).toBe(1);
      expect(await prunePostgresOnce(client, { maxAgeDays: 14, batch: 2, now: () => NOW })).toBe(0);
    } finally {
      client.release();
    }
    expect((await left()).map((r) => (NOW - r.started_at) / DAY)).toEqual([10, 5, 1]);
    expect((await pool.query<{ id: number }>("SELECT id FROM handshakes")).rows.map((r) => r.id)).toEqual([2]);
  });

  it("keeps the newest rows by start time beyond the row cap, whatever their ids", async () => {
    const { pool, left } = await recorded([6, 5, 4, 3, 2, 1]);
    const client = await pool.connect();
    try {
      expect(await prunePostgresOnce(client, { maxRows: 4, now: () => NOW })).toBe(2);
      expect(await prunePostgresOnce(client, { maxRows: 4, now: () => NOW })).toBe(0);
    } finally {
      client.release();
    }
    // Ids ran against time: the oldest two had the highest ids, and went.
    expect(await left()).toEqual([4, 3, 2, 1].map((age) => ({ id: age, started_at: NOW - age * DAY })));
  });

  it("makes room past the size cap once, then only when the table grows again, whichever analyser runs it", async () => {
    const { pool, left } = await recorded(Array.from({ length: 400 }, (_, i) => 400 - i), "x".repeat(1_500));
    const client = await pool.connect();
    const size = Number((await client.query<{ size: number }>("SELECT pg_total_relation_size('exchanges') AS size")).rows[0]!.size);
    try {
      // Under the cap: nothing goes.
      expect(await prunePostgresOnce(client, { maxBytes: size * 2, now: () => NOW })).toBe(0);
      // Over it: the oldest tenth (at least 100 rows), in batches; then nothing while the table does not grow.
      expect(await prunePostgresOnce(client, { maxBytes: size / 2, batch: 60, now: () => NOW })).toBe(60);
      expect(await prunePostgresOnce(client, { maxBytes: size / 2, batch: 60, now: () => NOW })).toBe(40);
      expect(await prunePostgresOnce(client, { maxBytes: size / 2, batch: 60, now: () => NOW })).toBe(0);
    } finally {
      client.release();
    }
    // Another analyser, another connection: what the cap did is in the database.
    const next = await pool.connect();
    try {
      expect(await prunePostgresOnce(next, { maxBytes: size / 2, batch: 60, now: () => NOW })).toBe(0);
    } finally {
      client.release();
    }
    const rows = await left();
    expect(rows).toHaveLength(300);
    expect((NOW - rows[0]!.started_at) / DAY).toBe(300);
  });

  it("runs in the elected analyser of a real proxy: --retention-rows holds the table at the cap", { timeout: 60_000 }, async () => {
    const url = await pg.freshDatabase();
    const upstream = await startUpstream((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end("{}"));
    const lens = await startLensProcess({ upstream: upstream.url, dbPath: url, args: ["--retention-rows", "5", "--flush-interval", "20"] });
    try {
      for (let i = 0; i < 12; i++) await fetch(`${lens.url}/mcp`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      const pool = pg.pool(url, 1);
      const count = async () => Number((await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM exchanges")).rows[0]!.n);
      await waitFor(async () => (await count()) === 12, "12 exchanges recorded", 10_000);
      // Retention's first run comes 5 s after the analyser is elected.
      await waitFor(async () => (await count()) === 5, "retention to prune to 5 rows", 20_000);
    } finally {
      await lens.stop();
      await upstream.close();
    }
  });
});
