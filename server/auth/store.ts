// Persistence for the OAuth authorization server: registered clients, pending authorization
// requests, authorization codes and tokens, in one SQLite file. The store never sees a usable
// secret: codes and tokens arrive hashed, client secrets and Coda tokens sealed (see crypto.ts).
import fs from "node:fs";
import BetterSqlite3, { type Database } from "better-sqlite3";

import { runMigrations, type Migration } from "../../common/migrations.js";

const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    up: `
      CREATE TABLE clients (
        client_id TEXT PRIMARY KEY,
        client_secret TEXT,              -- sealed; NULL for public clients
        metadata TEXT NOT NULL,          -- RFC 7591 client metadata as JSON, without the secret
        issued_at INTEGER NOT NULL
      );
      CREATE TABLE pending_authorizations (
        id TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        params TEXT NOT NULL,            -- PendingParams as JSON
        expires_at INTEGER NOT NULL
      );
      CREATE TABLE authorization_codes (
        code_hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        code_challenge TEXT NOT NULL,
        resource TEXT NOT NULL,
        scope TEXT NOT NULL,             -- space-separated
        coda_token TEXT NOT NULL,        -- sealed
        coda_user TEXT NOT NULL,
        family_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
      );
      CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
        client_id TEXT NOT NULL,
        resource TEXT NOT NULL,
        scope TEXT NOT NULL,
        coda_token TEXT NOT NULL,
        coda_user TEXT NOT NULL,
        family_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
      );
      CREATE INDEX tokens_family ON tokens (family_id);
      CREATE INDEX tokens_expiry ON tokens (expires_at);
      CREATE INDEX codes_expiry ON authorization_codes (expires_at);
      CREATE INDEX pending_expiry ON pending_authorizations (expires_at);
    `,
  },
  {
    // last_used_at: when the client last got tokens (a completed authorization or a refresh);
    // NULL while it never completed one. Unused clients are forgotten (see pruneClients).
    version: 2,
    up: `
      ALTER TABLE clients ADD COLUMN last_used_at INTEGER;
      CREATE INDEX tokens_client ON tokens (client_id);
      CREATE INDEX codes_client ON authorization_codes (client_id);
      CREATE INDEX pending_client ON pending_authorizations (client_id);
    `,
  },
];

const PRUNE_INTERVAL_MS = 10 * 60_000;
// Used codes are kept past their expiry so a late replay is still recognised as reuse.
const CODE_RETENTION_MS = 24 * 60 * 60_000;

/** How long a registered client is kept without being used (milliseconds). */
export interface ClientExpiry {
  /** Since registration, for a client that never completed an authorization. */
  unauthorizedMs: number;
  /** Since it last got tokens, once it has no live tokens left. */
  idleMs: number;
}

// Defaults when the store is used without settings (tests, tools): the server options' defaults.
const DEFAULT_CLIENT_EXPIRY: ClientExpiry = { unauthorizedMs: 24 * 3_600_000, idleMs: 90 * 86_400_000 };

export interface StoredClient {
  clientId: string;
  sealedSecret: string | null;
  metadata: Record<string, unknown>;
  issuedAt: number;
}

/** What an authorization request asked for; `resource` is the canonical MCP URL the grant is for. */
export interface PendingParams {
  state?: string;
  scopes: string[];
  codeChallenge: string;
  redirectUri: string;
  resource: string;
}

export interface PendingAuthorization {
  id: string;
  clientId: string;
  params: PendingParams;
  expiresAt: number;
}

/** What a code or token carries: who granted what to whom. Tokens from one code share `familyId`. */
export interface Grant {
  clientId: string;
  resource: string;
  scopes: string[];
  sealedCodaToken: string;
  codaUser: string;
  familyId: string;
}

export interface StoredCode extends Grant {
  codeHash: string;
  redirectUri: string;
  codeChallenge: string;
  expiresAt: number;
  usedAt: number | null;
}

export type TokenKind = "access" | "refresh";

export interface StoredToken extends Grant {
  tokenHash: string;
  kind: TokenKind;
  expiresAt: number;
  revokedAt: number | null;
}

type GrantRow = Omit<Grant, "scopes"> & { scope: string };

// The Grant columns of authorization_codes and tokens: read as Grant fields, written from grantValues().
const GRANT_COLUMNS = "client_id, resource, scope, coda_token, coda_user, family_id";
const GRANT_FIELDS = "client_id AS clientId, resource, scope, coda_token AS sealedCodaToken, coda_user AS codaUser, family_id AS familyId";

export class AuthStore {
  readonly now: () => number;
  private readonly db: Database;
  private readonly clientExpiry: ClientExpiry;
  private lastPrune = Number.NEGATIVE_INFINITY;

  /** Times are epoch milliseconds from `now` (default Date.now). */
  constructor(file: string, opts: { now?: () => number; clientExpiry?: ClientExpiry } = {}) {
    this.now = opts.now ?? Date.now;
    this.clientExpiry = opts.clientExpiry ?? DEFAULT_CLIENT_EXPIRY;
    ownerOnly(file);
    this.db = new BetterSqlite3(file);
    try {
      this.db.pragma("journal_mode = WAL");
      this.db.pragma("synchronous = NORMAL");
      runMigrations(this.db, MIGRATIONS);
      // SQLite gives -wal and -shm the main file's mode; files left by older versions are tightened.
      for (const suffix of ["-wal", "-shm"]) ownerOnly(file + suffix, false);
    } catch (err) {
      this.db.close();
      throw new Error(`cannot open auth database ${file}: ${(err as Error).message}`, { cause: err });
    }
    this.pruneIfDue();
  }

  close(): void {
    this.db.close();
  }

  saveClient(client: StoredClient): void {
    this.db
      .prepare("INSERT INTO clients (client_id, client_secret, metadata, issued_at) VALUES (?, ?, ?, ?)")
      .run(client.clientId, client.sealedSecret, JSON.stringify(client.metadata), client.issuedAt);
  }

  countClients(): number {
    return (this.db.prepare("SELECT count(*) AS n FROM clients").get() as { n: number }).n;
  }

  /** The client got tokens: it is in use (see pruneClients). */
  markClientUsed(clientId: string): void {
    this.db.prepare("UPDATE clients SET last_used_at = ? WHERE client_id = ?").run(this.now(), clientId);
  }

  getClient(clientId: string): StoredClient | undefined {
    const row = this.db
      .prepare("SELECT client_id AS clientId, client_secret AS sealedSecret, metadata, issued_at AS issuedAt FROM clients WHERE client_id = ?")
      .get(clientId) as (Omit<StoredClient, "metadata"> & { metadata: string }) | undefined;
    return row && { ...row, metadata: JSON.parse(row.metadata) as Record<string, unknown> };
  }

  /** Saves the request; with `maxPerClient`, deletes that client's oldest requests beyond it. */
  savePending(pending: PendingAuthorization, maxPerClient = Number.POSITIVE_INFINITY): void {
    this.pruneIfDue();
    this.db.transaction(() => {
      this.db
        .prepare("INSERT INTO pending_authorizations (id, client_id, params, expires_at) VALUES (?, ?, ?, ?)")
        .run(pending.id, pending.clientId, JSON.stringify(pending.params), pending.expiresAt);
      if (Number.isFinite(maxPerClient)) {
        this.db
          .prepare(
            `DELETE FROM pending_authorizations WHERE client_id = @clientId AND id NOT IN
               (SELECT id FROM pending_authorizations WHERE client_id = @clientId ORDER BY expires_at DESC, rowid DESC LIMIT @keep)`,
          )
          .run({ clientId: pending.clientId, keep: maxPerClient });
      }
    })();
  }

  getPending(id: string): PendingAuthorization | undefined {
    const row = this.db
      .prepare("SELECT id, client_id AS clientId, params, expires_at AS expiresAt FROM pending_authorizations WHERE id = ?")
      .get(id) as (Omit<PendingAuthorization, "params"> & { params: string }) | undefined;
    return row && { ...row, params: JSON.parse(row.params) as PendingParams };
  }

  /** True when this call removed it: a request is decided once. */
  deletePending(id: string): boolean {
    return this.db.prepare("DELETE FROM pending_authorizations WHERE id = ?").run(id).changes === 1;
  }

  saveCode(code: StoredCode): void {
    this.pruneIfDue();
    this.db
      .prepare(
        `INSERT INTO authorization_codes (code_hash, redirect_uri, code_challenge, expires_at, used_at, ${GRANT_COLUMNS})
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(code.codeHash, code.redirectUri, code.codeChallenge, code.expiresAt, code.usedAt, ...grantValues(code));
  }

  getCode(codeHash: string): StoredCode | undefined {
    const row = this.db
      .prepare(
        `SELECT code_hash AS codeHash, redirect_uri AS redirectUri, code_challenge AS codeChallenge,
           expires_at AS expiresAt, used_at AS usedAt, ${GRANT_FIELDS} FROM authorization_codes WHERE code_hash = ?`,
      )
      .get(codeHash) as (Omit<StoredCode, "scopes"> & GrantRow) | undefined;
    return row && withScopes(row);
  }

  /** True when this call used the code; false when it had been used before (a replay). */
  markCodeUsed(codeHash: string): boolean {
    const result = this.db.prepare("UPDATE authorization_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL").run(this.now(), codeHash);
    return result.changes === 1;
  }

  saveToken(token: StoredToken): void {
    this.pruneIfDue();
    this.db
      .prepare(
        `INSERT INTO tokens (token_hash, kind, expires_at, revoked_at, ${GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(token.tokenHash, token.kind, token.expiresAt, token.revokedAt, ...grantValues(token));
  }

  getToken(tokenHash: string): StoredToken | undefined {
    const row = this.db
      .prepare(
        `SELECT token_hash AS tokenHash, kind, expires_at AS expiresAt, revoked_at AS revokedAt, ${GRANT_FIELDS}
           FROM tokens WHERE token_hash = ?`,
      )
      .get(tokenHash) as (Omit<StoredToken, "scopes"> & GrantRow) | undefined;
    return row && withScopes(row);
  }

  /** True when this call revoked it; false when it was already revoked (or unknown). */
  revokeToken(tokenHash: string): boolean {
    return this.db.prepare("UPDATE tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL").run(this.now(), tokenHash).changes === 1;
  }

  revokeFamily(familyId: string): void {
    this.db.prepare("UPDATE tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL").run(this.now(), familyId);
  }

  /** Deletes what can no longer be used. Runs on open, then at most every 10 minutes from the writes. */
  private pruneIfDue(): void {
    if (this.now() - this.lastPrune >= PRUNE_INTERVAL_MS) this.prune();
  }

  /** Deletes expired requests, codes and tokens, and forgets unused clients; returns the clients forgotten. */
  prune(): number {
    const now = this.now();
    this.lastPrune = now;
    return this.db.transaction(() => {
      this.db.prepare("DELETE FROM pending_authorizations WHERE expires_at <= ?").run(now);
      this.db.prepare("DELETE FROM authorization_codes WHERE expires_at <= ?").run(now - CODE_RETENTION_MS);
      // Rotated refresh tokens stay until they expire: presenting one revokes its family.
      this.db.prepare("DELETE FROM tokens WHERE expires_at <= ?").run(now);
      return this.pruneClients(now);
    })();
  }

  /**
   * Forgets a client that never completed an authorization within `unauthorizedMs` of registering,
   * or that has not got tokens for `idleMs`. Never one with a live token, an unused code or an
   * authorization in progress: a connector in use keeps working. Its used codes and revoked tokens
   * stay until they expire, so a late replay is still refused (the client_id is unknown by then).
   */
  private pruneClients(now: number): number {
    const { unauthorizedMs, idleMs } = this.clientExpiry;
    return this.db
      .prepare(
        `DELETE FROM clients WHERE
           ((last_used_at IS NULL AND issued_at <= @unauthorizedBefore) OR last_used_at <= @idleBefore)
           AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.client_id = clients.client_id AND t.revoked_at IS NULL AND t.expires_at > @now)
           AND NOT EXISTS (SELECT 1 FROM authorization_codes c WHERE c.client_id = clients.client_id AND c.used_at IS NULL AND c.expires_at > @now)
           AND NOT EXISTS (SELECT 1 FROM pending_authorizations p WHERE p.client_id = clients.client_id AND p.expires_at > @now)`,
      )
      .run({ now, unauthorizedBefore: now - unauthorizedMs, idleBefore: now - idleMs }).changes;
  }
}

/**
 * The database holds sealed Coda tokens and client secrets: owner read/write only (0600), for
 * a new file (created here, before SQLite opens it) and for one left by an older version.
 */
function ownerOnly(file: string, create = true): void {
  if (file === ":memory:" || file === "") return;
  try {
    if (create) fs.closeSync(fs.openSync(file, "a", 0o600));
    fs.chmodSync(file, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT" && !create) return;
    throw new Error(`cannot restrict ${file} to its owner: ${(err as Error).message}`, { cause: err });
  }
}

function grantValues(grant: Grant): string[] {
  return [grant.clientId, grant.resource, grant.scopes.join(" "), grant.sealedCodaToken, grant.codaUser, grant.familyId];
}

function withScopes<T extends GrantRow>(row: T): Omit<T, "scope"> & { scopes: string[] } {
  const { scope, ...rest } = row;
  return { ...rest, scopes: scope ? scope.split(" ") : [] };
}
