// Secrets at rest: the server key, sealing (AES-256-GCM) for values we must read back
// (client secrets, users' Coda tokens) and hashing for values we only compare (our tokens, codes).
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const KEY_BYTES = 32;
const IV_BYTES = 12;
const SEALED_VERSION = "v1";

/** The 32-byte server key: from `keyHex` when configured, else from `keyFile`, created (mode 0600) on first start. */
export function loadOrCreateServerKey(opts: { keyHex?: string; keyFile: string }): Buffer {
  if (opts.keyHex !== undefined) return parseKey(opts.keyHex, "the configured server key");
  const existing = readKeyFile(opts.keyFile);
  if (existing !== undefined) return parseKey(existing, opts.keyFile);
  return createKeyFile(opts.keyFile);
}

function parseKey(hex: string, source: string): Buffer {
  const text = hex.trim();
  if (!/^[0-9a-fA-F]{64}$/.test(text)) throw new Error(`${source} must be ${KEY_BYTES * 2} hex characters (${KEY_BYTES} bytes)`);
  return Buffer.from(text, "hex");
}

function readKeyFile(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`cannot read server key ${file}: ${(err as Error).message}`);
  }
}

function createKeyFile(file: string): Buffer {
  const key = randomBytes(KEY_BYTES);
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    // "wx": when another process created the file first, its key wins.
    fs.writeFileSync(file, `${key.toString("hex")}\n`, { mode: 0o600, flag: "wx" });
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return parseKey(fs.readFileSync(file, "utf8"), file);
    throw new Error(`cannot create server key ${file}: ${(err as Error).message}`);
  }
}

/** Seals `plaintext` as `v1.<iv>.<tag>.<ciphertext>` (base64url parts). */
export function encryptSecret(key: Buffer, plaintext: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
  const parts = [iv, cipher.getAuthTag(), ciphertext].map(bytes => bytes.toString("base64url"));
  return [SEALED_VERSION, ...parts].join(".");
}

export function decryptSecret(key: Buffer, sealed: string): string {
  const [version, iv, tag, ciphertext, ...rest] = sealed.split(".");
  if (version !== SEALED_VERSION || iv === undefined || tag === undefined || ciphertext === undefined || rest.length > 0) {
    throw new Error("cannot decrypt secret: unknown format");
  }
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(iv, "base64url"));
    decipher.setAuthTag(Buffer.from(tag, "base64url"));
    return Buffer.concat([decipher.update(Buffer.from(ciphertext, "base64url")), decipher.final()]).toString("utf8");
  } catch {
    throw new Error("cannot decrypt secret: wrong server key or corrupted data");
  }
}

/** SHA-256 hex: tokens and codes are stored and looked up by this. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export function newToken(bytes = 32): string {
  return randomBytes(bytes).toString("base64url");
}
