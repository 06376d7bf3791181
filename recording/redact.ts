// Secrets never reach disk or logs: every credential is replaced by a marker
// `[redacted:xxxxxxxx]`, xxxxxxxx being the first 8 hex chars of HMAC-SHA256(key, secret).
// The same secret always yields the same marker, so a token issued by a token response
// can be followed to the Authorization header of later calls without being recoverable.

import { createHmac, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { unescape as percentDecode } from "node:querystring";
import type { HeaderPairs } from "../analysis/exchange.js";
import {
  applyPathPatterns,
  compilePathPattern,
  hasLongRun,
  isHighEntropyToken,
  isProtocolName,
  JWT,
  LONG_RUN,
  MIN_TOKEN_LENGTH,
  mapMultipart,
  multipartBoundary,
} from "./redact-shapes.js";

export interface Redactor {
  /** First 8 hex chars of HMAC-SHA256(key, secret). */
  fingerprint(secret: string): string;
  headers(pairs: HeaderPairs): HeaderPairs;
  /** A raw query string without '?': only the value spans of secret parameters change. */
  query(qs: string | null): string | null;
  /** Redacts the userinfo, the path, the query and the fragment of an absolute or relative URL. */
  url(u: string): string;
  /**
   * A request target's path (the part before '?'): userinfo of an absolute-form target, a
   * fragment a client sent, the operator's --redact-paths, and segments shaped like secrets.
   */
  path(p: string): string;
  /** Redacts by content type: JSON, form, multipart, SSE, else the text scan. */
  body(text: string, contentType: string | null): string;
  /**
   * The text scan: `"key": "value`, `key=value`, `key: value`, form inputs, `Bearer`/`Basic`
   * credentials, JWTs and long high-entropy tokens in arbitrary text.
   */
  text(text: string): string;
}

/** What the operator adds (--redact-headers, --redact-fields, --redact-paths). */
export interface RedactionRules {
  /** Header names, any case: their values are redacted whole. */
  headers?: readonly string[];
  /** JSON keys, form and multipart fields, query parameters, any case. */
  fields?: readonly string[];
  /** Regex sources; each capture group (else the whole match) of a path is secret. */
  paths?: readonly string[];
}

import { MARKER_ONLY } from "../analysis/redacted.js";

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
  // The same few dozen names come by in every message (jsonrpc, id, method, params…): remembered.
  let secret = knownNames.get(name);
  if (secret === undefined) {
    secret = nameIsSecret(name);
    if (knownNames.size >= KNOWN_NAMES) knownNames.clear();
    knownNames.set(name, secret);
  }
  return secret;
}

const knownNames = new Map<string, boolean>();
const KNOWN_NAMES = 4096;

function nameIsSecret(name: string): boolean {
  const n = name.toLowerCase();
  if (NOT_SECRET_NAMES.has(n) || n.endsWith("_endpoint") || n.endsWith("_supported") || n.endsWith("_uri")) return false;
  if (SECRET_NAMES.has(n) || n.endsWith("token") || n.includes("secret") || n.includes("password") || /api[-_]?key/.test(n)) return true;
  // Spellings vary (privateKey, private_key, X-Amz-Signature): compared without separators.
  const bare = n.replace(/[-_.\s]/g, "");
  return (
    SECRET_BARE_NAMES.has(bare) ||
    bare.includes("jwt") ||
    bare.includes("passphrase") ||
    bare.endsWith("credential") ||
    bare.endsWith("credentials") ||
    /(?:private|access|secret|signing|session|encryption|master)key$/.test(bare)
  );
}

/**
 * Spelled without separators: query-string signatures (`sig`, X-Amz-Signature of presigned
 * URLs), `key` (Google APIs and many others), OIDC's id_token_hint, `jwt` fields.
 */
const SECRET_BARE_NAMES = new Set(["key", "sig", "signature", "xamzsignature", "idtokenhint", "logintokenhint", "otp", "pin", "privatekey"]);

/**
 * Names that are credentials in OAuth and URLs (an authorization `code`, an API `key`, a `sig`)
 * but ordinary vocabulary in a tool's arguments and results (`{"key": "ENG-123"}`, source `code`,
 * a `pin` on a map): inside an MCP JSON-RPC message they are not secret by name. A credential
 * there is still caught by its shape (JWT, Bearer/Basic, a long random token) or by an
 * unambiguous name (token, secret, password, api_key…).
 */
const AMBIGUOUS_IN_TOOL_DATA = new Set(["code", "key", "sig", "signature", "pin", "otp"]);

/** A JSON-RPC message (or batch) cut before its end: `"jsonrpc"` may come after `result`. */
const JSON_RPC_START = /^\s*[[{][\s\S]*?"jsonrpc"\s*:\s*"2\.0"/;
/** A JSON-RPC message or batch: MCP's own bodies, whose nested names belong to the tools. */
const isJsonRpc = (value: unknown): boolean => {
  const message: unknown = Array.isArray(value) ? value[0] : value; // a batch: one level, no deeper
  return message !== null && typeof message === "object" && (message as { jsonrpc?: unknown }).jsonrpc === "2.0";
};

/**
 * Names whose values the analysis reads or groups on (redirect correlation, PKCE, sessions,
 * JSON-RPC): never shape-scanned, so a random-looking state or code_challenge stays readable.
 * A value under them is still redacted when it is a Bearer/Basic credential or a JWT.
 */
const KEEP_NAMES = new Set([
  "state", "code_challenge", "code_challenge_method", "client_id", "nonce", "redirect_uri", "resource", "scope",
  "response_type", "grant_type", "issuer", "iss", "aud", "kid", "jti", "id", "jsonrpc", "method", "cursor", "nextcursor",
  "progresstoken", "protocolversion", "mcp-session-id", "mcp-protocol-version", "session_id", "sessionid", "last-event-id",
  "x-request-id", "request-id", "x-correlation-id", "traceparent", "tracestate", "etag", "if-none-match", "if-match",
  "sec-websocket-key", "sec-websocket-accept", "user-agent", "host",
]);

/** Headers go further: `*token*`, `x-auth*` and `*-key` (subscription keys) are credentials too. */
function isSecretHeaderName(lower: string): boolean {
  if (lower === "sec-websocket-key") return false; // a handshake nonce, useful when debugging upgrades
  if (lower.startsWith("access-control-")) return false; // CORS vocabulary (Allow-Credentials: true)
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
const SECRET_HINT = /token|code|secret|pass|key|assert|auth|cookie|bearer|basic|\\u|sig|jwt|eyJ|credential|<input|otp|pin/i;

// ---------------------------------------------------------------------------------------------

const RECENT_FINGERPRINTS = 1024;

export function createRedactor(key: Buffer, rules: RedactionRules = {}): Redactor {
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

  // --- the operator's rules -----------------------------------------------------------------------
  const extraHeaders = new Set((rules.headers ?? []).map((h) => h.toLowerCase()));
  const extraFields = new Set((rules.fields ?? []).map((f) => f.toLowerCase()));
  const pathPatterns = (rules.paths ?? []).map(compilePathPattern);
  // Set while a JSON-RPC message is redacted (redactJsonText; synchronous, never re-entered).
  let inToolData = false;
  const secretName = (name: string) =>
    (extraFields.size > 0 && extraFields.has(name.toLowerCase())) ||
    (isSecretName(name) && !(inToolData && AMBIGUOUS_IN_TOOL_DATA.has(name.toLowerCase())));
  const keepName = (name: string) => KEEP_NAMES.has(name.toLowerCase());
  // The pre-check must let the operator's names through too.
  const extraHint = [...extraFields, ...extraHeaders].map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const hint = extraHint.length === 0 ? SECRET_HINT : new RegExp(`${SECRET_HINT.source}|${extraHint.join("|")}`, "i");

  /** The operator's secret path segments, in a path on its own. */
  const securePath = (p: string) => (pathPatterns.length === 0 ? p : applyPathPatterns(p, pathPatterns, mark));
  /** … and in every URL or path that appears in a text (Location, Referer, bodies, links). */
  const securePathsIn = (input: string) =>
    pathPatterns.length === 0 || !input.includes("/")
      ? input
      : input.replace(PATH_IN_TEXT, (_m, origin: string | undefined, p: string) => (origin ?? "") + securePath(p));

  /** A `Bearer xxx` value keeps its scheme, so the marker matches the token where it was issued. */
  function redactSecretValue(value: string): string {
    const bearer = WHOLE_BEARER.exec(value);
    return bearer ? `${bearer[1]}${bearer[2]}${mark(bearer[3]!)}` : mark(value);
  }

  // --- shapes -----------------------------------------------------------------------------------

  /** JWTs and `Bearer`/`Basic` credentials: secrets wherever they are, whatever their name. */
  function credentialShapes(input: string): string {
    let out = input.includes("eyJ") ? input.replace(JWT, mark) : input;
    if (/bearer|basic/i.test(out)) {
      out = out.replace(PROSE_CREDENTIAL, (match, scheme: string, space: string, credential: string) =>
        LOOKS_LIKE_A_WORD.test(credential) || MARKER_ONLY.test(credential) ? match : `${scheme}${space}${mark(credential)}`,
      );
    }
    return out;
  }

  /** credentialShapes, then long high-entropy tokens (see isHighEntropyToken). */
  function shapes(input: string): string {
    const out = credentialShapes(input);
    return hasLongRun(out) ? out.replace(LONG_RUN, (run) => (isHighEntropyToken(run) ? markToken(run) : run)) : out;
  }

  /** A path-like run (see isHighEntropyToken) keeps its other segments: only the random one is marked. */
  function markToken(run: string): string {
    if (!run.includes("/") || run.includes("+") || run.endsWith("=")) return mark(run);
    return run
      .split("/")
      .map((segment) => (segment.length >= MIN_TOKEN_LENGTH && isHighEntropyToken(segment) ? mark(segment) : segment))
      .join("/");
  }

  // --- query strings, fragments and form bodies ----------------------------------------------

  /** Replaces only the value spans of secret parameters; everything else stays byte-identical. */
  const redactParams = (qs: string) => (qs.includes("=") ? qs.split("&").map(redactParam).join("&") : qs.includes("eyJ") ? shapes(qs) : qs);

  function redactParam(pair: string): string {
    const eq = pair.indexOf("=");
    if (eq < 0 || eq === pair.length - 1) return pair;
    const rawName = pair.slice(0, eq);
    const rawValue = pair.slice(eq + 1);
    const name = /[%+]/.test(rawName) ? formDecode(rawName) : rawName;
    // Decoded before fingerprinting: `a%2Bb` here and "a+b" in JSON are the same secret.
    if (secretName(name) || BEARER_PARAM_VALUE.test(rawValue)) return `${rawName}=${redactSecretValue(formDecode(rawValue)).replace(/ /g, "+")}`;
    const value = /[%+]/.test(rawValue) ? formDecode(rawValue) : rawValue;
    const shaped = keepName(name) ? credentialShapes(value) : shapes(value);
    return shaped === value ? pair : `${rawName}=${encodeKeepingMarkers(shaped)}`;
  }

  /** A query string, and a fragment a client sent after it (`?a=b#access_token=…`). */
  function queryAndFragment(qs: string): string {
    const hash = qs.indexOf("#");
    return hash < 0 ? redactParams(qs) : `${redactParams(qs.slice(0, hash))}#${redactParams(qs.slice(hash + 1))}`;
  }

  /** `scheme://userinfo@` loses its userinfo to a marker; the operator's paths and shaped segments too. */
  function pathPart(p: string): string {
    const origin = ORIGIN.exec(p);
    const prefix = origin ? origin[1]! + (origin[2] ? `${mark(origin[2].slice(0, -1))}@` : "") + origin[3]! : "";
    const rest = origin ? p.slice(origin[0].length) : p;
    const secured = securePath(rest);
    return prefix + (secured.includes("/") ? secured.split("/").map(shapes).join("/") : shapes(secured));
  }

  function url(u: string): string {
    const hash = u.indexOf("#");
    const beforeHash = hash < 0 ? u : u.slice(0, hash);
    const fragment = hash < 0 ? "" : `#${redactParams(u.slice(hash + 1))}`;
    const q = beforeHash.indexOf("?");
    const base = q < 0 ? pathPart(beforeHash) : `${pathPart(beforeHash.slice(0, q))}?${redactParams(beforeHash.slice(q + 1))}`;
    return base + fragment;
  }

  // --- the text scan ----------------------------------------------------------------------------

  function text(input: string): string {
    return securePathsIn(scan(input, true));
  }

  /** The name-based scan, then the shapes (all of them, or only credentials under kept names). */
  function scan(input: string, allShapes: boolean): string {
    let out = input;
    if (hint.test(out)) {
      if (/<input/i.test(out)) out = out.replace(FORM_INPUT, redactFormInput);
      out = out
        .replace(JSON_PAIR, (pair, prefix: string, name: string, value: string) => {
          if (value === "") return pair;
          if (secretName(name.includes("\\") ? jsonUnescape(name) : name)) return prefix + redactSecretValue(jsonUnescape(value));
          // JSON as text inside a value (MCP tool results), in a body cut before its end: the
          // pair regex took the escaped document as one value; scan it unescaped.
          if (!value.includes('\\"')) return pair;
          const inner = jsonUnescape(value.endsWith("\\") && !value.endsWith("\\\\") ? value.slice(0, -1) : value);
          const scanned = inner === value ? inner : scan(inner, allShapes);
          return scanned === inner ? pair : prefix + JSON.stringify(scanned).slice(1, -1);
        })
        .replace(TEXT_PARAM, (pair, name: string, value: string) =>
          value !== "" && secretName(name) ? `${name}=${redactSecretValue(formDecode(value))}` : pair,
        )
        .replace(QUOTED_PARAM, (pair, name: string, doubleQuoted?: string, singleQuoted?: string) => {
          const value = doubleQuoted ?? singleQuoted ?? "";
          if (value === "" || !secretName(name)) return pair;
          return `${name}=${doubleQuoted === undefined ? "'" : '"'}${redactSecretValue(value)}`;
        })
        .replace(COLON_PARAM, (pair, name: string, separator: string, value: string) =>
          !secretName(name) || PROSE_NAMES.has(name.toLowerCase()) || /^-?\d{1,5}$/.test(value) || MARKER_ONLY.test(value)
            ? pair
            : `${name}${separator}${redactSecretValue(value)}`,
        );
    }
    return allShapes ? shapes(out) : credentialShapes(out);
  }

  /** `<input name="code" value="…">` (OAuth form_post, login pages), attributes in either order. */
  function redactFormInput(tag: string): string {
    const name = /\bname\s*=\s*["']?([^"'\s>]+)/i.exec(tag)?.[1];
    if (name === undefined || !secretName(name)) return tag;
    return tag.replace(/(\bvalue\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>]+))/i, (attr, prefix: string, dq?: string, sq?: string, bare?: string) => {
      const value = dq ?? sq ?? bare ?? "";
      if (value === "") return attr;
      const quote = dq !== undefined ? '"' : sq !== undefined ? "'" : "";
      return `${prefix}${quote}${redactSecretValue(value)}${quote}`;
    });
  }

  // --- JSON, SSE and multipart bodies -------------------------------------------------------------

  /** Parsed and redacted by key; text we cannot parse (invalid, truncated) gets the text scan. */
  function redactJsonText(input: string): string {
    if (!hint.test(input) && !hasLongRun(input)) return input;
    let parsed: unknown;
    let whole = true;
    try {
      parsed = JSON.parse(input);
    } catch {
      whole = false; // invalid, or cut at --max-body: the text scan
    }
    inToolData = whole ? isJsonRpc(parsed) : JSON_RPC_START.test(input);
    try {
      if (!whole) return scan(input, true);
      const redacted = redactJsonValue(parsed, false, false);
      return redacted === parsed ? input : JSON.stringify(redacted);
    } catch {
      return scan(input, true); // nesting too deep to walk
    } finally {
      inToolData = false;
    }
  }

  /**
   * Returns the same reference when nothing changed, so unchanged documents keep their text.
   * `secret`: the value sits under a secret key. Its strings (also inside arrays) are secret; its
   * numbers are not (JSON-RPC `code`, `client_secret_expires_at`). An object under it is walked
   * by its own keys when it is a JSON Schema (tool parameters named `code` or `password` are no
   * secrets); any other object under a secret key (`credentials: {user, value}`) is secret whole.
   * Other strings get the text scan: they may hold URLs with a code, an embedded `Bearer xxx`,
   * a JWT, or JSON as text (MCP tool results). `keep`: under a name the analysis reads.
   */
  function redactJsonValue(value: unknown, secret: boolean, keep: boolean): unknown {
    if (typeof value === "string") return secret ? redactSecretValue(value) : redactStringValue(value, keep);
    if (Array.isArray(value)) {
      const items = value.map((item) => redactJsonValue(item, secret, keep));
      return items.some((item, i) => item !== value[i]) ? items : value;
    }
    if (value === null || typeof value !== "object") return value;
    const entries = Object.entries(value);
    const schema = secret && isJsonSchema(value as Record<string, unknown>);
    const redacted = entries.map(([k, v]): [string, unknown] => [
      k,
      k.toLowerCase().endsWith("_supported") ? v : redactJsonValue(v, (secret && !schema) || secretName(k), keepName(k)),
    ]);
    // fromEntries defines own properties: a "__proto__" key stays a plain key.
    return redacted.some(([, v], i) => v !== entries[i]![1]) ? Object.fromEntries(redacted) : value;
  }

  /** A whole value `Bearer <credential>` is a credential whatever its shape or its key. */
  const redactStringValue = (value: string, keep: boolean) =>
    WHOLE_BEARER.test(value) ? redactSecretValue(value) : securePathsIn(scan(value, !keep));

  /**
   * Per the SSE spec an event's `data:` lines are one payload joined with "\n": a JSON message
   * may put a key on one line and its value on the next. Each event's data is redacted as one
   * text; other lines (event, id, comments) get the text scan. An unchanged event keeps its bytes.
   */
  function redactEventStream(input: string): string {
    const parts = input.split(LINE_BREAK); // lines at even indices, their line breaks at odd ones
    const out: string[] = [];
    let data: Array<{ prefix: string; value: string; index: number }> = [];
    const flushEvent = () => {
      if (data.length === 0) return;
      const joined = data.map((d) => d.value).join("\n");
      const redacted = redactJsonText(joined);
      if (redacted !== joined) {
        const lines = redacted.split("\n");
        // The same number of lines when only values changed; else the rest go on the last line.
        data.forEach((d, i) => {
          const line = i < data.length - 1 ? (lines[i] ?? "") : lines.slice(i).join(" ");
          out[d.index] = d.prefix + line;
        });
      }
      data = [];
    };
    for (let i = 0; i < parts.length; i++) {
      const line = parts[i]!;
      if (i % 2 === 1) {
        out.push(line);
        continue;
      }
      const prefix = /^data: ?/.exec(line);
      if (prefix) {
        data.push({ prefix: prefix[0], value: line.slice(prefix[0].length), index: out.length });
        out.push(line);
        continue;
      }
      if (line === "") flushEvent();
      out.push(line === "" ? line : text(line));
    }
    flushEvent();
    return out.join("");
  }

  /** Each part by its field name: a secret field is redacted whole, others by their own type. */
  function redactMultipart(input: string, boundary: string): string {
    return mapMultipart(input, boundary, (part) => {
      if (part.name !== null && secretName(part.name)) return part.body === "" ? "" : mark(part.body);
      return part.contentType ? body(part.body, part.contentType, false) : text(part.body);
    });
  }

  function body(input: string, contentType: string | null, nested = false): string {
    if (input === "") return input;
    const boundary = nested ? null : multipartBoundary(contentType);
    if (boundary !== null) return redactMultipart(input, boundary);
    switch (bodyKind(contentType)) {
      case "json":
        return securePathsIn(redactJsonText(input));
      case "form":
        return securePathsIn(redactParams(input));
      case "sse":
        return securePathsIn(redactEventStream(input));
      default:
        return text(input);
    }
  }

  // --- headers --------------------------------------------------------------------------------

  function headerValue(name: string, value: string): string {
    const lower = name.toLowerCase();
    if (CHALLENGE_HEADERS.has(lower)) return value;
    if (extraHeaders.has(lower)) return redactSecretValue(value);
    if (lower.includes("authorization")) return redactAuthorization(value);
    if (lower === "cookie") return value.replace(COOKIE_PAIR, redactCookieValue);
    if (lower === "set-cookie") return value.replace(SET_COOKIE_PAIR, redactCookieValue);
    if (lower === "sec-websocket-protocol") return value.split(",").map((item) => (isProtocolName(item.trim()) ? item.trim() : mark(item.trim()))).join(", ");
    if (isSecretHeaderName(lower) || lower.includes("jwt") || lower.includes("assertion")) return redactSecretValue(value);
    if (URL_HEADERS.has(lower)) return url(value);
    if (keepName(lower)) return securePathsIn(scan(value, false));
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
    query: (qs) => (qs === null ? null : securePathsIn(queryAndFragment(qs))),
    url,
    path(p) {
      const hash = p.indexOf("#");
      return hash < 0 ? pathPart(p) : `${pathPart(p.slice(0, hash))}#${redactParams(p.slice(hash + 1))}`;
    },
    body: (input, contentType) => body(input, contentType),
    text,
  };
}

/** A JSON Schema (a tool's input schema under a parameter named `password`), walked by its keys. */
function isJsonSchema(value: Record<string, unknown>): boolean {
  return typeof value.type === "string" || "properties" in value || "$ref" in value || "anyOf" in value || "oneOf" in value || "items" in value;
}

/** Percent-encodes what a shape scan left of a parameter value, keeping its markers readable. */
function encodeKeepingMarkers(value: string): string {
  return value
    .split(/(\[redacted:[0-9a-f]{8}\])/)
    .map((piece, i) => (i % 2 === 1 ? piece : encodeURIComponent(piece)))
    .join("");
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
 * The value also ends at '?': in `url=https://client/cb?code=…` (Refresh, meta refresh) the
 * URL's own parameters must be scanned, not swallowed as the value of `url`.
 */
const TEXT_PARAM = /(?<![\w.%-])([A-Za-z][\w.-]*)=((?:[Bb]earer +)?[^\s&#;"'<>?]*)/g;
/** `key="value"` or `key='value'` (env and config dumps); a cut value runs to the end of the line. */
const QUOTED_PARAM = /(?<![\w.%-])([A-Za-z][\w.-]*)=(?:"([^"\r\n]*)|'([^'\r\n]*))/g;
/** `Bearer <token68>` or `Basic <base64>` anywhere in text. */
const PROSE_CREDENTIAL = /\b(bearer|basic)(\s+)([A-Za-z0-9\-._~+/]+=*)/gi;
/**
 * `password: value` in YAML, logs and prose. The value runs to a delimiter; a `Bearer`/`Basic`
 * scheme is kept with it.
 */
const COLON_PARAM = /(?<![\w.-])([A-Za-z][\w.-]*)([ \t]*:[ \t]*)((?:[Bb](?:earer|asic) +)?[^\s,;"'<>]+)/g;
/**
 * Names that also read as prose before a colon ("invalid authorization code: expired", "error
 * token: …"): the colon form leaves them to the other rules, or error descriptions the
 * diagnosis quotes would lose their words. `Authorization: Bearer x` is still caught as a Bearer.
 */
const PROSE_NAMES = new Set(["code", "token", "key", "sig", "signature", "authorization", "cookie", "credentials", "credential", "pin"]);
/** An HTML input element (value and name in either order). Bounded: a tag is short. */
const FORM_INPUT = /<input\b[^<>]{0,2000}>/gi;
/** A URL's `scheme://`, its `userinfo@` (group 2, with the '@') and its host (group 3). */
const ORIGIN = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#@\s]*@)?([^/?#\s]*)/i;
/** An absolute URL's origin (group 1) and path (group 2), or a path alone, in free text. */
const PATH_IN_TEXT = /(?<![\w/.:-])((?:[a-z][a-z0-9+.-]*:)?\/\/[^/\s"'<>?#]*)?(\/[^\s"'<>?#\\]*)/gi;
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
