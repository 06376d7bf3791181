// Every string that came from traffic (client names, paths, headers, bodies, diagnoses quoting
// them) passes through here before it reaches the operator's terminal. A recorded
// `clientInfo.name` may hold OSC 0 (retitle the window), OSC 52 (write the clipboard), CSI
// sequences that move the cursor and overwrite what the operator reads, or bidirectional
// overrides that make text read differently from what it is. None of them may act: each
// becomes a visible escape (`\x1b`, `\u202e`) that shows what was sent.
//
// Unsafe: every control (Cc: C0, DEL, C1 — 0x9b is a one-byte CSI on terminals that honour C1),
// every format character (Cf: bidi embeddings, overrides and isolates, zero-width characters,
// soft hyphen, tag characters that carry invisible text) and the line and paragraph separators
// (U+2028/2029, which some terminals and viewers break lines on). A visible escape is made of
// printable ASCII only, so escaping twice changes nothing: the views may escape at every layer.

const UNSAFE_ONE_LINE = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;
/** The same but line feed and tab, which multi-line text keeps. */
const UNSAFE = /[^\P{Cc}\n\t]|[\p{Cf}\u2028\u2029]/gu;

function visible(char: string): string {
  const code = char.codePointAt(0)!;
  if (code <= 0xff) return `\\x${code.toString(16).padStart(2, "0")}`;
  return code <= 0xffff ? `\\u${code.toString(16).padStart(4, "0")}` : `\\u{${code.toString(16)}}`;
}

/** A one-line field: every control, including line breaks and tabs, becomes a visible escape. */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE_ONE_LINE, visible);
}

/**
 * A multi-line text (a body, a detail): line feeds and tabs stay (CRLF counts as a line feed),
 * every other control is escaped, a lone CR too (it would let a line overwrite itself).
 */
export function terminalSafeLines(text: string): string {
  return text.replace(/\r\n/g, "\n").replace(UNSAFE, visible);
}

/** True when the text would reach a terminal unchanged as a multi-line text. */
export function isTerminalSafe(text: string): boolean {
  return terminalSafeLines(text) === text;
}

/**
 * A rendered line whose only escapes may be colour and style (SGR, `ESC [ … m`): the TUI's last
 * gate before the terminal, so a string that reached Ink without passing the views' escaping still
 * cannot move the cursor, retitle the window or write the clipboard.
 */
export function terminalSafeStyled(line: string): string {
  return line.replace(/(\x1b\[[0-9;]*m)|[\p{Cc}\p{Cf}\u2028\u2029]/gu, (char, sgr: string | undefined) => sgr ?? visible(char));
}

/**
 * A copy of a value with every string in it made a safe one-line field: for the text views, whose
 * every field from the database is shown on one line. Applied where a view receives its data, so a
 * field added later is covered without anyone remembering to.
 */
export function terminalSafeDeep<T>(value: T): T {
  if (typeof value === "string") return terminalSafe(value) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => terminalSafeDeep(v)) as T;
  const proto = value !== null && typeof value === "object" ? Object.getPrototypeOf(value) : undefined;
  if (proto === Object.prototype || proto === null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as object)) out[k] = terminalSafeDeep(v);
    return out as T;
  }
  return value; // numbers, booleans, null, and objects that are not plain data (Map, Buffer) as they are
}

/**
 * JSON text for a terminal or a pipe. JSON.stringify escapes C0 controls (ESC included) but leaves
 * DEL, C1 (0x9b), the bidi and zero-width format characters and U+2028/2029 raw. Those can only
 * sit inside JSON strings, so replacing each with its \uXXXX escape is lossless: a JSON parser
 * reads back the very same string.
 */
export function jsonSafe(json: string): string {
  // Line feeds here are JSON's own layout (JSON.stringify escapes those inside strings).
  return json.replace(UNSAFE, (char) => {
    let out = "";
    for (let i = 0; i < char.length; i++) out += `\\u${char.charCodeAt(i).toString(16).padStart(4, "0")}`;
    return out;
  });
}
