// The recording's schema on a real PostgreSQL server (Debian's, started here on a loopback port
// with a data directory of its own): the same numbered history as SQLite, the same tables and
// columns, 64-bit ids and times, any number of replicas migrating at once, and a database newer
// than this mcp-lens refused without a change.
//
// Needs PostgreSQL: skipped with a message where it is missing, a failure under CI=true
// (.ci/run installs it).
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { postgresSchemaVersion } from "../../common/migrations-postgres.js";
import { MIGRATIONS, migrate, migratePostgres, SCHEMA_VERSION } from "../../store/schema.js";
import { tempDir } from "../helpers/processes.js";
import { postgresBinDir, postgresForTests } from "../helpers/postgres.js";

const IN_CI = process.env.CI === "true";
const MISSING = postgresBinDir() === undefined;
if (MISSING && !IN_CI) console.warn("PostgreSQL tests skipped: PostgreSQL is not installed (apt-get install postgresql); CI=true makes this a failure");

describe.skipIf(MISSING && !IN_CI)("the recording's schema on PostgreSQL", () => {
  const postgres = postgresForTests();
  const clients: pg.Client[] = [];
  afterAll(async () => {
    for (const client of clients) await client.end().catch(() => undefined);
  });

  const freshDatabase = () => postgres.freshDatabase();
  async function connect(url: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    clients.push(client);
    return client;
  }

  it("migrates an empty database to the latest version, with 64-bit ids and times", async () => {
    const client = await connect(await freshDatabase());
    expect(await postgresSchemaVersion(client)).toBe(0);
    await migratePostgres(client);
    expect(await postgresSchemaVersion(client)).toBe(SCHEMA_VERSION);
    const applied = await client.query<{ version: number }>("SELECT version FROM schema_migrations ORDER BY version");
    expect(applied.rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
    // Past 2^31: an id or an epoch-ms time in a 32-bit INTEGER would not fit.
    const id = 2 ** 40;
    await client.query(
      `INSERT INTO exchanges (id, started_at, method, path, aborted, websocket, kind, facts, req_headers, req_body_encoding, req_body_size, req_body_truncated, res_body_encoding, res_body_size, res_body_truncated)
       VALUES ($1, $2, 'POST', '/mcp', 0, 0, 'mcp_post', '{}', '[]', 'utf8', 0, 0, 'utf8', 0, 0)`,
      [id, Date.now()],
    );
    const row = await client.query<{ id: string; started_at: string }>("SELECT id, started_at FROM exchanges");
    expect(Number(row.rows[0]!.id)).toBe(id);
    // Migrating again finds nothing to do.
    await migratePostgres(client);
    expect((await client.query("SELECT count(*)::int AS n FROM schema_migrations")).rows[0]).toEqual({ n: MIGRATIONS.length });
  });

  it("has the tables and columns the SQLite file has, in the same order", async () => {
    const client = await connect(await freshDatabase());
    await migratePostgres(client);
    const dir = tempDir("mcp-lens-pg-schema-");
    const sqlite = new BetterSqlite3(path.join(dir.dir, "schema.db"));
    try {
      migrate(sqlite);
      for (const table of ["exchanges", "handshakes", "meta"]) {
        const own = (sqlite.pragma(`table_info(${table})`) as Array<{ name: string }>).map((c) => c.name);
        const theirs = await client.query<{ column_name: string }>("SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position", [table]);
        // rec_xid is PostgreSQL's alone: the transaction that wrote the row (store/commit-cursor.ts).
        expect(theirs.rows.map((r) => r.column_name).filter((c) => c !== "rec_xid"), table).toEqual(own);
      }
      const indexes = (sqlite.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name").all() as Array<{ name: string }>).map((r) => r.name);
      const pgIndexes = await client.query<{ indexname: string }>("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE '%_pkey' ORDER BY indexname");
      expect(pgIndexes.rows.map((r) => r.indexname).filter((i) => i !== "exchanges_rec_xid")).toEqual(indexes);
    } finally {
      sqlite.close();
      dir.cleanup();
    }
  });

  it("lets three replicas migrate at once: one applies each migration, the others wait and find it done", async () => {
    const url = await freshDatabase();
    const replicas = await Promise.all([1, 2, 3].map(() => connect(url)));
    await Promise.all(replicas.map((client) => migratePostgres(client)));
    const applied = await replicas[0]!.query<{ version: number }>("SELECT version FROM schema_migrations ORDER BY version");
    expect(applied.rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
  });

  it("refuses a database newer than this mcp-lens, changing nothing", async () => {
    const client = await connect(await freshDatabase());
    await migratePostgres(client);
    await client.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)", [SCHEMA_VERSION + 1]);
    await expect(migratePostgres(client)).rejects.toThrow(`database schema version ${SCHEMA_VERSION + 1} is newer than this mcp-lens supports (${SCHEMA_VERSION}); upgrade mcp-lens`);
    expect(await postgresSchemaVersion(client)).toBe(SCHEMA_VERSION + 1);
    // The failed attempt left the connection usable (its transaction rolled back).
    expect((await client.query("SELECT 1 AS ok")).rows[0]).toEqual({ ok: 1 });
  });
});
