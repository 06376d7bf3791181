// Secrets recognised by their shape rather than by the name they sit under, and the operator's
// own redaction rules. Pure functions: redact.ts applies them.

/**
 * A JWS or JWE anywhere: the protected header is base64url JSON, so it always starts with `eyJ`
 * (`{"`); two to four more dot-separated base64url segments follow.
 */
export const JWT = /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){2,4}/g;

/** A candidate for the entropy test: a run of base64/base64url characters, '=' padding included. */
export const LONG_RUN = /(?<![A-Za-z0-9+/_~-])[A-Za-z0-9+/_~-]{32,}={0,2}/g;
/**
 * Cheap pre-check for the text scan: false when nothing here can hold a long token. One pass over
 * the char codes: a regex `[…]{32}` restarts at every position of a run shorter than 32 (most of
 * an English sentence), which made it the costliest step of recording a tool call.
 */
export function hasLongRun(text: string): boolean {
  let run = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const inRun =
      (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 43 || c === 47 || c === 95 || c === 126 || c === 45;
    if (!inRun) run = 0;
    else if (++run >= MIN_TOKEN_LENGTH) return true;
  }
  return false;
}

export const MIN_TOKEN_LENGTH = 32;

/**
 * A "long high-entropy token": at least 32 base64(url) characters that read as random. What is
 * left alone, on purpose:
 * - hex strings, UUIDs and hex hashes: ids and digests the analysis and an operator need to read
 *   (a hex-only secret is missed: the price of keeping request ids, trace ids and ETags);
 * - identifiers and words (camelCase, snake_case, paths): random text switches between lower
 *   case, upper case, digits and symbols at ~48% of positions, identifiers at under 25%;
 * - paths: a '/'-separated run with a lowercase word as a segment.
 * Names whose values the analysis groups on (state, code_challenge, client_id, Mcp-Session-Id…)
 * are never shape-scanned: see KEEP_NAMES in redact.ts.
 */
export function isHighEntropyToken(candidate: string): boolean {
  const s = candidate.replace(/=+$/, "");
  if (s.length < MIN_TOKEN_LENGTH) return false;
  if (/^[0-9a-f-]+$/i.test(s)) return false;
  if (!/[a-z]/.test(s) || !/[A-Z]/.test(s)) return false; // CONSTANT_NAMES, lowercase slugs
  if (s.includes("/")) {
    if (s.includes("//")) return false;
    // Without base64's '+' or padding, '/' separates path segments (a URL's host ends the run at
    // its last dot: `io/d/_dAbCDeFGH/Page-name_suAbc`): a token only when one segment is one
    // (`/mcp/s/<secret>/mcp`).
    if (!candidate.includes("+") && !candidate.endsWith("=")) {
      return s.split("/").some((segment) => segment.length >= MIN_TOKEN_LENGTH && isHighEntropyToken(segment));
    }
    if (s.split("/").some((segment) => /^[a-z]{3,}$/.test(segment))) return false;
  }
  let transitions = 0;
  let previous = charClass(s.charCodeAt(0));
  for (let i = 1; i < s.length; i++) {
    const current = charClass(s.charCodeAt(i));
    // Upper to lower is how a camelCase word goes on, not a switch: random text still switches
    // at ~48% of positions, `getDocumentTablesAndColumns` at under 20%.
    if (current !== previous && !(previous === 1 && current === 0)) transitions++;
    previous = current;
  }
  return transitions / s.length >= 0.3 && shannonEntropy(s) >= 3.5;
}

function charClass(code: number): number {
  if (code >= 97 && code <= 122) return 0; // a-z
  if (code >= 65 && code <= 90) return 1; // A-Z
  if (code >= 48 && code <= 57) return 2; // 0-9
  return 3;
}

function shannonEntropy(s: string): number {
  const counts = new Map<string, number>();
  for (const c of s) counts.set(c, (counts.get(c) ?? 0) + 1);
  let bits = 0;
  for (const n of counts.values()) bits -= (n / s.length) * Math.log2(n / s.length);
  return bits;
}

/**
 * Sec-WebSocket-Protocol items that are protocol names (`mcp`, `graphql-ws`, `v12.stomp`) stay;
 * anything else is a credential smuggled through the one header browsers let a page set on an
 * upgrade (`bearer.<token>`, `base64url.bearer.authorization.k8s.io.<token>`).
 */
export function isProtocolName(item: string): boolean {
  return (
    item.length <= 40 &&
    /^[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*$/.test(item) &&
    !/\d{5}/.test(item) &&
    !/(?:^|[._-])(?:bearer|token|auth\w*|key|jwt|secret|access)(?:$|[._-])/.test(item)
  );
}

// ---------------------------------------------------------------------------------------------
// multipart/form-data

export interface MultipartPart {
  /** The part's headers and the blank line after them, as they were. */
  head: string;
  name: string | null;
  contentType: string | null;
  body: string;
}

/** The boundary parameter of a multipart content type, or null. */
export function multipartBoundary(contentType: string | null): string | null {
  if (!contentType || !/^\s*multipart\//i.test(contentType)) return null;
  const m = /;\s*boundary=(?:"([^"]{1,200})"|([^;\s]{1,200}))/i.exec(contentType);
  return m ? (m[1] ?? m[2]!) : null;
}

/**
 * Splits a multipart body into its delimiters and parts; `redactPart` rewrites each part's body.
 * A part without the blank line that ends its headers (cut by --max-body) is given as a body
 * whole, so it still gets scanned.
 */
export function mapMultipart(input: string, boundary: string, redactPart: (part: MultipartPart) => string): string {
  const delimiter = `--${boundary}`;
  const pieces = input.split(delimiter);
  return pieces
    .map((piece, i) => {
      if (i === 0 || piece.startsWith("--")) return piece; // preamble, or the closing delimiter's tail
      const headEnd = /\r?\n\r?\n/.exec(piece);
      if (!headEnd) return redactPart({ head: "", name: null, contentType: null, body: piece });
      const head = piece.slice(0, headEnd.index + headEnd[0].length);
      const rest = piece.slice(head.length);
      const trailer = /\r?\n$/.exec(rest)?.[0] ?? "";
      const body = rest.slice(0, rest.length - trailer.length);
      const name = /content-disposition:[^\r\n]*?;\s*name="([^"\r\n]*)"/i.exec(head)?.[1] ?? null;
      const contentType = /^content-type:\s*([^\r\n]*)/im.exec(head)?.[1] ?? null;
      return head + redactPart({ head, name, contentType, body }) + trailer;
    })
    .join(delimiter);
}

// ---------------------------------------------------------------------------------------------
// Operator rules (--redact-headers, --redact-fields, --redact-paths)

/** Compiles a path pattern; throws with the engine's one-line reason when it is invalid. */
export function compilePathPattern(source: string): RegExp {
  return new RegExp(source, "g");
}

/**
 * Replaces what a path pattern marks as secret: each capture group's text, or the whole match
 * when the pattern has no group. `mark` turns a secret into its marker.
 */
export function applyPathPatterns(path: string, patterns: RegExp[], mark: (secret: string) => string): string {
  let out = path;
  for (const pattern of patterns) {
    pattern.lastIndex = 0;
    out = out.replace(pattern, (...args: unknown[]) => {
      const match = args[0] as string;
      // replace() passes the match, the groups, then the offset (the first number).
      const offsetIndex = args.findIndex((a, i) => i > 0 && typeof a === "number");
      const captured = args.slice(1, offsetIndex) as Array<string | undefined>;
      if (captured.length === 0) return mark(match);
      let result = match;
      for (const group of captured) if (group) result = result.split(group).join(mark(group));
      return result;
    });
  }
  return out;
}
