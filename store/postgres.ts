// Opening the recording database on PostgreSQL (--db postgres://…): one pool, migrated before any
// traffic, and what the replicas writing it share: the redaction key and the exchange id blocks.
import { randomBytes } from "node:crypto";
import type { Pool } from "pg";
import { oneLineMessage, shownDatabase } from "../common/database-location.js";
import { createPostgresPool } from "./postgres-sink.js";
import { migratePostgres } from "./schema.js";

/** Migrates the database at `url` and returns a pool on it; one-line errors that never show the password. */
export async function openPostgres(url: string, onIdleError: (err: Error) => void, max = 2): Promise<Pool> {
  const pool = createPostgresPool(url, onIdleError, max);
  try {
    const client = await pool.connect();
    try {
      await migratePostgres(client);
    } finally {
      client.release();
    }
    return pool;
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new Error(`cannot open database ${shownDatabase(url)}: ${oneLineMessage(err)}`, { cause: err });
  }
}

/**
 * The redaction key every replica fingerprints secrets with: the first replica to start creates
 * it, the others read it. One token must have one fingerprint whichever replica saw it, since
 * handshakes are linked by fingerprints (a token issued through one replica, used through another).
 */
export async function sharedRedactionKey(pool: Pool): Promise<Buffer> {
  await pool.query("INSERT INTO lens_secrets (name, value) VALUES ('redaction_key', $1) ON CONFLICT (name) DO NOTHING", [randomBytes(32).toString("hex")]);
  const { rows } = await pool.query<{ value: string }>("SELECT value FROM lens_secrets WHERE name = 'redaction_key'");
  const hex = rows[0]?.value ?? "";
  if (!/^[0-9a-f]{64}$/i.test(hex)) throw new Error("the database's redaction key is invalid: expected 64 hex chars");
  return Buffer.from(hex, "hex");
}

/** What the proxy writes about itself for the inspector (proxy_url, admin_url, upstream, version): the last replica to start wins. */
export async function writeMeta(pool: Pool, entries: Record<string, string>): Promise<void> {
  for (const [key, value] of Object.entries(entries)) {
    await pool.query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", [key, value]);
  }
}
