// A real PostgreSQL server from Debian's packages, started by a test on a loopback port with a
// data directory of its own (never the system's service or cluster), and stopped with it.
//
// PostgreSQL refuses to run as root: when the tests do (CI, these machines), initdb, pg_ctl and
// the server run as the `postgres` user the Debian package creates, through setpriv, in a
// directory that user owns. The Unix socket goes into that directory too, never /var/run.
import { execFileSync, type ExecFileSyncOptions } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Pool } from "pg";
import { afterAll, beforeAll } from "vitest";
import { createPostgresPool } from "../../store/postgres-sink.js";
import { migratePostgres } from "../../store/schema.js";
import { closedPort } from "./upstream.js";

export interface RunningPostgres {
  /** postgres://lens@127.0.0.1:PORT/lens */
  url: string;
  port: number;
  /** Stops it at once (`-m immediate`: as a crash would), keeping its data. */
  stop(): void;
  /** Starts it again on the same port, with the same data. */
  start(): void;
  /** Stops it and removes its data directory. */
  remove(): void;
}

/** The directory of initdb and pg_ctl: $MCP_LENS_PG_BIN, else pg_config's, else the newest Debian one. */
export function postgresBinDir(): string | undefined {
  if (process.env.MCP_LENS_PG_BIN) return process.env.MCP_LENS_PG_BIN;
  try {
    const dir = execFileSync("pg_config", ["--bindir"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    if (existsSync(path.join(dir, "initdb"))) return dir;
  } catch {
    /* not installed: look for Debian's layout */
  }
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => existsSync(path.join(root, v, "bin", "initdb"))).sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], "bin") : undefined;
}

const asRoot = typeof process.getuid === "function" && process.getuid() === 0;

/** Runs a PostgreSQL program, as the postgres user when the tests run as root. */
function run(bin: string, program: string, args: string[], options: ExecFileSyncOptions = {}): void {
  const file = path.join(bin, program);
  const [command, argv] = asRoot ? ["setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", file, ...args]] : [file, args];
  execFileSync(command, argv as string[], { stdio: ["ignore", "pipe", "pipe"], timeout: 60_000, ...options });
}

export async function startPostgres(): Promise<RunningPostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error("PostgreSQL is not installed (Debian: apt-get install postgresql; or set MCP_LENS_PG_BIN)");
  // Its own directory under the system temp dir: the test run's directory is root's alone.
  const dir = mkdtempSync(path.join(tmpdir(), "mcp-lens-pg-"));
  const data = path.join(dir, "data");
  if (asRoot) {
    const { uid, gid } = userIds("postgres");
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
  const port = await closedPort();
  // fsync off: a stopped server (even `-m immediate`) loses nothing the OS was given, only a
  // crash of the machine would. Commits stay synchronous: an acknowledged commit is on disk.
  const options = `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir} -c fsync=off -c full_page_writes=off`;
  const start = () => run(bin, "pg_ctl", ["-D", data, "-w", "-t", "60", "-l", path.join(dir, "server.log"), "-o", options, "start"]);
  const stop = () => run(bin, "pg_ctl", ["-D", data, "-w", "-m", "immediate", "stop"]);
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    process.off("exit", remove);
    try {
      stop();
    } catch {
      /* not running */
    }
    rmSync(dir, { recursive: true, force: true });
  };
  // Whatever ends the test process (a crash, a timeout) ends its server and its data too.
  process.on("exit", remove);
  try {
    run(bin, "initdb", ["-D", data, "-U", "lens", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
    start();
    run(bin, "createdb", ["-h", "127.0.0.1", "-p", String(port), "-U", "lens", "lens"]);
  } catch (error) {
    remove();
    throw error;
  }
  return { url: `postgres://lens@127.0.0.1:${port}/lens`, port, stop, start, remove };
}

function userIds(name: string): { uid: number; gid: number } {
  const [uid, gid] = ["-u", "-g"].map((flag) => Number(execFileSync("id", [flag, name], { encoding: "utf8" }).trim()));
  return { uid: uid!, gid: gid! };
}

/**
 * One server for a test file, started before its tests and removed after them (with every pool
 * taken from here), and fresh databases of its own on it for each test.
 */
export function postgresForTests(): {
  /** The server: started once beforeAll has run. */
  server(): RunningPostgres;
  /** A new, empty database's URL; migrated when asked. */
  freshDatabase(options?: { migrated?: boolean }): Promise<string>;
  /** A pool as the recorder makes one (closed after the file's tests). */
  pool(url: string, size?: number): Pool;
} {
  let running: RunningPostgres | undefined;
  const pools: Pool[] = [];
  let databases = 0;
  beforeAll(async () => {
    running = await startPostgres();
  }, 90_000);
  afterAll(async () => {
    for (const pool of pools) await pool.end().catch(() => undefined);
    running?.remove();
  });
  const server = () => {
    if (!running) throw new Error("the PostgreSQL server is not started yet (use it in a test)");
    return running;
  };
  const pool = (url: string, size = 2) => {
    const made = createPostgresPool(url, () => undefined, size);
    pools.push(made);
    return made;
  };
  return {
    server,
    pool,
    async freshDatabase({ migrated = false } = {}) {
      const name = `test_${++databases}`;
      await pool(server().url, 1).query(`CREATE DATABASE ${name}`);
      const url = server().url.replace(/\/lens$/, `/${name}`);
      if (migrated) {
        const client = await pool(url, 1).connect();
        await migratePostgres(client).finally(() => client.release());
      }
      return url;
    },
  };
}
