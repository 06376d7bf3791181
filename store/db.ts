// Opening the recording database: checks that fail with a one-line reason,
// the pragmas the proxy relies on, and migrations.
import fs from "node:fs";
import path from "node:path";
import BetterSqlite3, { type Database } from "better-sqlite3";
import { oneLineMessage } from "../common/database-location.js";
import { assertNotNewer, schemaVersion } from "../common/migrations.js";
import { migrate, MIGRATIONS, SCHEMA_VERSION, type ExchangeRow } from "./schema.js";

export interface OpenDatabaseOptions {
  readonly?: boolean;
  /** Cap on the database file size (PRAGMA max_page_count); writes beyond it fail with SQLITE_FULL. */
  maxSizeBytes?: number;
}

// Migrations run at startup, before any traffic: waiting for another process's lock is fine then.
const STARTUP_BUSY_TIMEOUT_MS = 5_000;
// better-sqlite3 is synchronous, so a busy wait stalls the proxy's event loop:
// give up quickly and let the writer retry later.
const BUSY_TIMEOUT_MS = 50;

export function openDatabase(file: string, options: OpenDatabaseOptions = {}): Database {
  const readonly = options.readonly ?? false;
  let db: Database | undefined;
  try {
    checkDirectory(file, readonly);
    if (!readonly) createPrivately(file);
    db = new BetterSqlite3(file, { readonly, fileMustExist: readonly, timeout: STARTUP_BUSY_TIMEOUT_MS });
    configure(db, readonly);
    if (readonly) assertCurrentSchema(db);
    else migrate(db);
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    if (options.maxSizeBytes !== undefined) capSize(db, options.maxSizeBytes);
    return db;
  } catch (err) {
    db?.close();
    throw new Error(`cannot open database ${file}: ${oneLineMessage(err)}`, { cause: err });
  }
}

/** The id for the next exchange: ids stay monotonic across restarts. */
export function nextExchangeId(db: Database): number {
  const row = db.prepare("SELECT coalesce(max(id), 0) + 1 AS next FROM exchanges").get() as { next: number };
  return row.next;
}

function checkDirectory(file: string, readonly: boolean): void {
  if (file === ":memory:" || file === "") return;
  const dir = path.dirname(file);
  let stat = fs.statSync(dir, { throwIfNoEntry: false });
  // The last level is created (./data on a fresh clone); a missing parent means a typo, not a wish.
  if (!stat && !readonly && fs.statSync(path.dirname(dir), { throwIfNoEntry: false })?.isDirectory()) {
    fs.mkdirSync(dir, { mode: 0o700 }); // it holds the recordings and their redaction key
    stat = fs.statSync(dir);
  }
  if (!stat) throw new Error(`directory ${dir} does not exist`);
  if (!stat.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (readonly) return;
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new Error(`directory ${dir} is not writable`);
  }
}

/**
 * The recordings are redacted, but still every request and response an operator's users made:
 * readable by the owner only. SQLite would create the file 0644 (less the umask); created here
 * first, 0600, it also gives its -wal and -shm files that mode (SQLite copies the database's).
 * An existing file keeps its mode: an operator may have opened it to a group on purpose.
 */
function createPrivately(file: string): void {
  if (file === ":memory:" || file === "" || file.startsWith("file:")) return;
  try {
    fs.closeSync(fs.openSync(file, "wx", 0o600)); // never opens (nor touches) an existing file
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
}

const PAGE_SIZE = 16_384;
const CACHE_KIB = 8_192;

function configure(db: Database, readonly: boolean): void {
  // 16 KiB pages, for a new (empty) file only: on an existing one SQLite defers the change to a
  // VACUUM that WAL mode never runs, yet reports the new size, which --db-max-size would then
  // divide by. A recorded exchange is 1–2 KiB: 4 KiB pages held two or three and wasted the rest,
  // and every page costs a WAL frame and a write at commit. In-process: 2,114 → 1,568 bytes a row.
  if (!readonly && db.pragma("page_count", { simple: true }) === 0) db.pragma(`page_size = ${PAGE_SIZE}`);
  // The page cache, set after the page size is known. Left to better-sqlite3's default (16 MB),
  // a connection sized its cache in pages of the 4 KiB size it opened with (~3,900), then held
  // 16 KiB pages in each: up to 64 MB of heap the recorder grew into under load, and faults and
  // re-reads as it did (in-process: 40 → 31 µs of CPU a row, 129 → 75 MB of RSS at 45,000 rows).
  // The recorder's connection needs the paths to the tables' and indexes' newest pages.
  db.pragma(`cache_size = -${CACHE_KIB}`);
  // WAL: the inspector's reads never block the proxy's writes, nor the reverse.
  // The mode is stored in the file, so a read-only connection inherits it.
  if (!readonly) db.pragma("journal_mode = WAL");
  // In WAL mode NORMAL survives process crashes; a power loss may lose the
  // last transactions, which is acceptable for a traffic recorder.
  db.pragma("synchronous = NORMAL");
  db.pragma("foreign_keys = ON");
}

function assertCurrentSchema(db: Database): void {
  const version = schemaVersion(db);
  assertNotNewer(version, MIGRATIONS);
  if (version < SCHEMA_VERSION) {
    throw new Error(
      `database schema version ${version} is older than this mcp-lens expects (${SCHEMA_VERSION}); open it read-write once to migrate`,
    );
  }
}

/** SQLite never shrinks max_page_count below the current size: the cap then holds the file where it is. */
function capSize(db: Database, maxSizeBytes: number): void {
  const pageSize = db.pragma("page_size", { simple: true }) as number;
  db.pragma(`max_page_count = ${Math.max(1, Math.floor(maxSizeBytes / pageSize))}`);
}

/** Reads one stored exchange's row by id: what the recorder's analysis diagnoses from. */
export function exchangeById(db: Database): (id: number) => ExchangeRow | undefined {
  const select = db.prepare("SELECT * FROM exchanges WHERE id = ?");
  return (id) => select.get(id) as ExchangeRow | undefined;
}
