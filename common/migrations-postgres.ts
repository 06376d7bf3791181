// The recording database's numbered migrations on PostgreSQL: the same history as on SQLite
// (common/migrations.ts), its version kept in a table (PostgreSQL has no user_version). Any number
// of replicas may start at once: an advisory lock held for the transaction lets one migrate while
// the others wait, then find nothing left to do. DDL is transactional here, so the pending
// migrations apply together or not at all.
import type { ClientBase } from "pg";
import { assertNotNewer, type Migration, migrationSql } from "./migrations.js";

/** The lock every migrator of one database takes, by name (no number to collide with by accident). */
const LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('mcp-lens schema migrations', 0))";

export async function postgresSchemaVersion(client: ClientBase): Promise<number> {
  const exists = await client.query<{ present: boolean }>("SELECT to_regclass('schema_migrations') IS NOT NULL AS present");
  if (!exists.rows[0]?.present) return 0;
  const result = await client.query<{ version: number | null }>("SELECT max(version) AS version FROM schema_migrations");
  return Number(result.rows[0]?.version ?? 0);
}

/** Applies the pending migrations in one transaction; throws, changing nothing, on a newer database. */
export async function runPostgresMigrations(client: ClientBase, migrations: readonly Migration[]): Promise<void> {
  await client.query("BEGIN");
  try {
    await client.query(LOCK);
    await client.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)");
    const current = await postgresSchemaVersion(client);
    assertNotNewer(current, migrations);
    for (const migration of migrations) {
      if (migration.version <= current) continue;
      await client.query(migrationSql(migration, "postgres"));
      await client.query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", [migration.version, Date.now()]);
    }
    await client.query("COMMIT");
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  }
}
