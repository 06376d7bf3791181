// Numbered migrations tracked by PRAGMA user_version: shared by the proxy's recording
// database and the server's OAuth database, each with its own list. The recording database's
// also runs on PostgreSQL (common/migrations-postgres.ts): one history, the dialect only where
// it must differ.
import type { Database } from "better-sqlite3";

export type Dialect = "sqlite" | "postgres";

export interface Migration {
  version: number;
  /** Plain SQL for both (see postgresSql), or each dialect's own. */
  up: string | Record<Dialect, string>;
}

/**
 * A migration's SQL in a dialect. Plain SQL is written for SQLite, whose INTEGER holds 64 bits;
 * PostgreSQL's holds 32, too few for epoch milliseconds and for ids, so there it is BIGINT.
 */
export function migrationSql(migration: Migration, dialect: Dialect): string {
  if (typeof migration.up !== "string") return migration.up[dialect];
  return dialect === "sqlite" ? migration.up : postgresSql(migration.up);
}

/** SQLite's SQL as PostgreSQL takes it: INTEGER columns are BIGINT. */
export const postgresSql = (sql: string): string => sql.replace(/\bINTEGER\b/g, "BIGINT");

export function latestVersion(migrations: readonly Migration[]): number {
  return migrations.at(-1)?.version ?? 0;
}

export function schemaVersion(db: Database): number {
  return db.pragma("user_version", { simple: true }) as number;
}

export function assertNotNewer(version: number, migrations: readonly Migration[]): void {
  const latest = latestVersion(migrations);
  if (version > latest) {
    throw new Error(`database schema version ${version} is newer than this mcp-lens supports (${latest}); upgrade mcp-lens`);
  }
}

/** Applies the pending migrations, each in its own transaction. */
export function runMigrations(db: Database, migrations: readonly Migration[]): void {
  assertNotNewer(schemaVersion(db), migrations);
  for (const migration of migrations) {
    if (migration.version > schemaVersion(db)) applyMigration(db, migration, migrations);
  }
}

function applyMigration(db: Database, migration: Migration, migrations: readonly Migration[]): void {
  // IMMEDIATE takes the write lock before the version is read again: another
  // process starting at the same time may have applied this migration already.
  db.transaction(() => {
    const current = schemaVersion(db);
    assertNotNewer(current, migrations);
    if (migration.version <= current) return;
    db.exec(migrationSql(migration, "sqlite"));
    db.pragma(`user_version = ${migration.version}`);
  }).immediate();
}
