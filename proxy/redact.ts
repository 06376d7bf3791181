// Secrets never reach disk or logs: every credential is replaced by a marker
// `[redacted:xxxxxxxx]`, xxxxxxxx being the first 8 hex chars of HMAC-SHA256(key, secret).
// The same secret always yields the same marker, so a token issued by a token response
// can be followed to the Authorization header of later calls without being recoverable.

import { createHmac, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { unescape as percentDecode } from "node:querystring";
import type { HeaderPairs } from "./exchange.js";

export interface Redactor {
  /** First 8 hex chars of HMAC-SHA256(key, secret). */
  fingerprint(secret: string): string;
  headers(pairs: HeaderPairs): HeaderPairs;
  /** A raw query string without '?': only the value spans of secret parameters change. */
  query(qs: string | null): string | null;
  /** Redacts the query and fragment parameters of an absolute or relative URL. */
  url(u: string): string;
  /** Redacts by content type: JSON, form, SSE, else the text scan. */
  body(text: string, contentType: string | null): string;
  /** The text scan: `"key": "value`, `key=value` and `Bearer xxx` in arbitrary text. */
  text(text: string): string;
}

/** A marker anywhere in a text; group 1 is the fingerprint. Global: use with matchAll/replace. */
export const REDACTED_PATTERN = /\[redacted:([0-9a-f]{8})\]/g;
const MARKER_ONLY = /^\[redacted:[0-9a-f]{8}\]$/;

/** The fingerprints of the markers in a text, in order of appearance, without duplicates. */
export function fingerprintsIn(text: string): string[] {
  return [...new Set(Array.from(text.matchAll(REDACTED_PATTERN), (m) => m[1]!))];
}

/** Reads `<dbPath>.key` (64 hex chars), creating it with mode 0600 on first start. */
export function loadOrCreateRedactionKey(dbPath: string): Buffer {
  const file = `${dbPath}.key`;
  try {
    writeFileSync(file, `${randomBytes(32).toString("hex")}\n`, { mode: 0o600, flag: "wx" });
  } catch (err) {
    if (errorCode(err) !== "EEXIST") throw new Error(`cannot create redaction key file ${file}: ${errorMessage(err)}`);
  }
  let hex: string;
  try {
    hex = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new Error(`cannot read redaction key file ${file}: ${errorMessage(err)}`);
  }
  if (!/^[0-9a-f]{64}$/i.test(hex)) throw new Error(`redaction key file ${file} is invalid: expected 64 hex chars`);
  return Buffer.from(hex, "hex");
}

const errorCode = (err: unknown) => (err as NodeJS.ErrnoException | null)?.code;
const errorMessage = (err: unknown) => (err instanceof Error ? err.message : String(err)).split("\n")[0];

// ---------------------------------------------------------------------------------------------
// Which names are secret (JSON keys, form fields, query parameters, header names)

// Credentials by name. `code` is the OAuth authorization code; `coda_token`/`codatoken` is what
// the server's login page posts (the user's Coda API token); `authorization` and `cookie` catch
// header dumps inside bodies.
const SECRET_NAMES = new Set([
  "token", "code", "code_verifier", "passwd", "assertion", "client_assertion", "device_code", "user_code",
  "private_key", "authorization", "proxy-authorization", "cookie", "set-cookie",
]);
// Names that look secret but carry protocol vocabulary or correlation ids the diagnosis needs:
// pagination cursors (Coda pageToken/syncToken) and MCP's progressToken are not credentials.
const NOT_SECRET_NAMES = new Set([
  "token_type", "token_type_hint", "token_endpoint", "token_endpoint_auth_method",
  "pagetoken", "page_token", "nextpagetoken", "next_page_token", "synctoken", "sync_token", "nextsynctoken",
  "progresstoken",
]);

/**
 * Case-insensitive. Besides the list: anything ending in `token` (access_token, refresh_token,
 * id_token, api_token, coda_token, session_token, subject_token, registration_access_token,
 * codaToken, x-coda-token…) or containing `secret`, `password` or `api key` spellings.
 * `*_endpoint` values are URLs and `*_supported` values are metadata vocabularies: never secret.
 */
function isSecretName(name: string): boolean {
  const n = name.toLowerCase();
  if (NOT_SECRET_NAMES.has(n) || n.endsWith("_endpoint") || n.endsWith("_supported")) return false;
  return (
    SECRET_NAMES.has(n) ||
    n.endsWith("token") ||
    n.includes("secret") ||
    n.includes("password") ||
    /api[-_]?key/.test(n)
  );
}

/** Headers go further: `*token*`, `x-auth*` and `*-key` (subscription keys) are credentials too. */
function isSecretHeaderName(lower: string): boolean {
  if (lower === "sec-websocket-key") return false; // a handshake nonce, useful when debugging upgrades
  return isSecretName(lower) || lower.includes("token") || lower.startsWith("x-auth") || lower.endsWith("-key");
}

// Carry URLs whose query or fragment may hold a code or a token (redirects, implicit flow).
const URL_HEADERS = new Set(["location", "content-location", "referer", "referrer"]);
// Challenges are not secret and carry the resource_metadata URL the diagnosis needs.
const CHALLENGE_HEADERS = new Set(["www-authenticate", "proxy-authenticate"]);

/**
 * Cheap pre-check: a text matching none of these cannot hold a secret name or a Bearer credential
 * (every name isSecretName accepts contains one of them). `\u` because a JSON key may be spelled
 * with escapes; `auth` also covers `x-auth*`.
 */
const SECRET_HINT = /token|code|secret|passw|key|assert|auth|cookie|bearer|\\u/i;

// ---------------------------------------------------------------------------------------------

const RECENT_FINGERPRINTS = 1024;

export function createRedactor(key: Buffer): Redactor {
  // A connector sends the same bearer token on every call: remember recent fingerprints rather
  // than compute an HMAC per exchange. Bounded, in memory only, like the secrets themselves.
  const recent = new Map<string, string>();
  const fingerprint = (secret: string) => {
    let fp = recent.get(secret);
    if (fp === undefined) {
      fp = createHmac("sha256", key).update(secret, "utf8").digest("hex").slice(0, 8);
      if (recent.size >= RECENT_FINGERPRINTS) recent.delete(recent.keys().next().value!);
      recent.set(secret, fp);
    }
    return fp;
  };

  /** Empty stays empty; an existing marker stays as is so redacting twice changes nothing. */
  const mark = (secret: string) => (secret === "" || MARKER_ONLY.test(secret) ? secret : `[redacted:${fingerprint(secret)}]`);

  /** A `Bearer xxx` value keeps its scheme, so the marker matches the token where it was issued. */
  function redactSecretValue(value: string): string {
    const bearer = WHOLE_BEARER.exec(value);
    return bearer ? `${bearer[1]}${bearer[2]}${mark(bearer[3]!)}` : mark(value);
  }

  // --- query strings, fragments and form bodies ----------------------------------------------

  /** Replaces only the value spans of secret parameters; everything else stays byte-identical. */
  const redactParams = (qs: string) => (qs.includes("=") ? qs.split("&").map(redactParam).join("&") : qs);

  function redactParam(pair: string): string {
    const eq = pair.indexOf("=");
    if (eq < 0 || eq === pair.length - 1) return pair;
    const rawName = pair.slice(0, eq);
    const rawValue = pair.slice(eq + 1);
    const secretName = isSecretName(/[%+]/.test(rawName) ? formDecode(rawName) : rawName);
    if (!secretName && !BEARER_PARAM_VALUE.test(rawValue)) return pair;
    // Decoded before fingerprinting: `a%2Bb` here and "a+b" in JSON are the same secret.
    return `${rawName}=${redactSecretValue(formDecode(rawValue)).replace(/ /g, "+")}`;
  }

  function url(u: string): string {
    const hash = u.indexOf("#");
    const beforeHash = hash < 0 ? u : u.slice(0, hash);
    const fragment = hash < 0 ? "" : `#${redactParams(u.slice(hash + 1))}`;
    const q = beforeHash.indexOf("?");
    const base = q < 0 ? beforeHash : `${beforeHash.slice(0, q)}?${redactParams(beforeHash.slice(q + 1))}`;
    return base + fragment;
  }

  // --- the text scan ----------------------------------------------------------------------------

  function text(input: string): string {
    if (!SECRET_HINT.test(input)) return input;
    return input
      .replace(JSON_PAIR, (pair, prefix: string, name: string, value: string) =>
        isSecretName(name.includes("\\") ? jsonUnescape(name) : name) && value !== ""
          ? prefix + redactSecretValue(jsonUnescape(value))
          : pair,
      )
      .replace(TEXT_PARAM, (pair, name: string, value: string) =>
        value !== "" && isSecretName(name) ? `${name}=${redactSecretValue(formDecode(value))}` : pair,
      )
      .replace(QUOTED_PARAM, (pair, name: string, doubleQuoted?: string, singleQuoted?: string) => {
        const value = doubleQuoted ?? singleQuoted ?? "";
        if (value === "" || !isSecretName(name)) return pair;
        return `${name}=${doubleQuoted === undefined ? "'" : '"'}${redactSecretValue(value)}`;
      })
      .replace(PROSE_BEARER, (match, scheme: string, space: string, credential: string) =>
        LOOKS_LIKE_A_WORD.test(credential) ? match : `${scheme}${space}${mark(credential)}`,
      );
  }

  // --- JSON and SSE bodies --------------------------------------------------------------------

  /** Parsed and redacted by key; text we cannot parse (invalid, truncated) gets the text scan. */
  function redactJsonText(input: string): string {
    if (!SECRET_HINT.test(input)) return input;
    try {
      const parsed: unknown = JSON.parse(input);
      const redacted = redactJsonValue(parsed, false);
      return redacted === parsed ? input : JSON.stringify(redacted);
    } catch {
      return text(input); // also reached when nesting is too deep to walk
    }
  }

  /**
   * Returns the same reference when nothing changed, so unchanged documents keep their text.
   * `secret`: the value sits under a secret key. Its strings (also inside arrays) are secret; its
   * numbers are not (JSON-RPC `code`, `client_secret_expires_at`); an object under it is walked by
   * its own keys, as JSON Schemas of tool parameters named `code` or `password` are no secrets.
   * Other strings get the text scan: they may hold URLs with a code, an embedded `Bearer xxx`,
   * or JSON as text (MCP tool results).
   */
  function redactJsonValue(value: unknown, secret: boolean): unknown {
    if (typeof value === "string") return secret ? redactSecretValue(value) : redactStringValue(value);
    if (Array.isArray(value)) {
      const items = value.map((item) => redactJsonValue(item, secret));
      return items.some((item, i) => item !== value[i]) ? items : value;
    }
    if (value === null || typeof value !== "object") return value;
    const entries = Object.entries(value);
    const redacted = entries.map(([k, v]): [string, unknown] => [
      k,
      k.toLowerCase().endsWith("_supported") ? v : redactJsonValue(v, isSecretName(k)),
    ]);
    // fromEntries defines own properties: a "__proto__" key stays a plain key.
    return redacted.some(([, v], i) => v !== entries[i]![1]) ? Object.fromEntries(redacted) : value;
  }

  /** A whole value `Bearer <credential>` is a credential whatever its shape or its key. */
  const redactStringValue = (value: string) => (WHOLE_BEARER.test(value) ? redactSecretValue(value) : text(value));

  /** Each `data:` line is redacted as JSON (the usual payload); other lines get the text scan. */
  function redactEventStream(input: string): string {
    if (!SECRET_HINT.test(input)) return input;
    return input
      .split(LINE_BREAK)
      .map((line, i) => {
        if (i % 2 === 1) return line; // the captured line break itself
        const data = /^data: ?/.exec(line);
        return data ? data[0] + redactJsonText(line.slice(data[0].length)) : text(line);
      })
      .join("");
  }

  // --- headers --------------------------------------------------------------------------------

  function headerValue(name: string, value: string): string {
    const lower = name.toLowerCase();
    if (CHALLENGE_HEADERS.has(lower)) return value;
    if (lower.includes("authorization")) return redactAuthorization(value);
    if (lower === "cookie") return value.replace(COOKIE_PAIR, redactCookieValue);
    if (lower === "set-cookie") return value.replace(SET_COOKIE_PAIR, redactCookieValue);
    if (isSecretHeaderName(lower)) return redactSecretValue(value);
    if (URL_HEADERS.has(lower)) return url(value);
    return text(value); // Link, Refresh and unknown headers may carry URLs or credentials
  }

  const redactCookieValue = (pair: string, prefix: string, value: string) => prefix + mark(value);

  /** Keeps the scheme (`Bearer [redacted:…]`); a bare credential without scheme is redacted whole. */
  function redactAuthorization(value: string): string {
    const m = SCHEME_CREDENTIAL.exec(value);
    return m ? `${m[1]}${m[2]}${mark(m[3]!)}` : mark(value.trim());
  }

  return {
    fingerprint,
    headers: (pairs) => pairs.map(([name, value]): [string, string] => [name, headerValue(name, value)]),
    query: (qs) => (qs === null ? null : redactParams(qs)),
    url,
    body(input, contentType) {
      if (input === "") return input;
      switch (bodyKind(contentType)) {
        case "json":
          return redactJsonText(input);
        case "form":
          return redactParams(input);
        case "sse":
          return redactEventStream(input);
        default:
          return text(input);
      }
    },
    text,
  };
}

function bodyKind(contentType: string | null): "json" | "form" | "sse" | "text" {
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  if (type.endsWith("/json") || type.endsWith("+json")) return "json";
  if (type === "application/x-www-form-urlencoded") return "form";
  if (type === "text/event-stream") return "sse";
  return "text";
}

// ---------------------------------------------------------------------------------------------
// Patterns. Value patterns are written as unrolled loops so that huge inputs do not backtrack.

/** A parameter value `Bearer …` (space encoded as '+' or %20). */
const BEARER_PARAM_VALUE = /^bearer(\+|%20)/i;

/** `"key": "value` in JSON we could not parse: the closing quote may have been cut off. */
const JSON_PAIR = /("((?:[^"\\]|\\.){1,200})"\s*:\s*")([^"\\]*(?:\\[\s\S][^"\\]*)*\\?)/g;
/**
 * `key=value` in free text (URLs in HTML, logs): the key must not continue a longer name
 * (`status_code=` is not `code=`); the value ends at a delimiter. A value that starts with a
 * quote is left to QUOTED_PARAM, run afterwards so that `href="…?code=…"` is scanned inside.
 */
const TEXT_PARAM = /(?<![\w.%-])([A-Za-z][\w.-]*)=((?:[Bb]earer +)?[^\s&#;"'<>]*)/g;
/** `key="value"` or `key='value'` (env and config dumps); a cut value runs to the end of the line. */
const QUOTED_PARAM = /(?<![\w.%-])([A-Za-z][\w.-]*)=(?:"([^"\r\n]*)|'([^'\r\n]*))/g;
/** `Bearer <token68>` anywhere in text. */
const PROSE_BEARER = /\b(bearer)(\s+)([A-Za-z0-9\-._~+/]+=*)/gi;
/**
 * Not a credential: a lowercase word (maybe ending a sentence) or an auth-param name, as in
 * "Bearer token required" or a quoted challenge `Bearer realm="…"`, `Bearer resource_metadata="…"`.
 */
const LOOKS_LIKE_A_WORD = /^[a-z][a-z_-]*[=.]?$/;
/** A whole value that is `Bearer <credential>`. */
const WHOLE_BEARER = /^(bearer)(\s+)(\S+)\s*$/i;
/** `<scheme> <credentials>` of an Authorization header. */
const SCHEME_CREDENTIAL = /^(\s*[A-Za-z][\w!#$%&'*+.^`|~-]*)(\s+)(\S[\s\S]*?)\s*$/;

/** Each cookie of a Cookie header: the value after `name=`, or the whole pair when it has no name. */
const COOKIE_PAIR = /((?:^|;)\s*(?:[^;=]*=)?)([^;]*)/g;
/** The value of a Set-Cookie header, before its attributes. */
const SET_COOKIE_PAIR = /^(\s*(?:[^;=]*=)?)([^;]*)/;

const LINE_BREAK = /(\r\n|\r|\n)/;

/** Form decoding ('+' is a space); malformed percent escapes are kept rather than thrown on. */
const formDecode = (s: string) => percentDecode(s.replace(/\+/g, " "));

/** JSON string unescaping; a value cut in the middle of an escape is fingerprinted as is. */
function jsonUnescape(raw: string): string {
  if (!raw.includes("\\")) return raw;
  try {
    return JSON.parse(`"${raw}"`) as string;
  } catch {
    return raw;
  }
}
