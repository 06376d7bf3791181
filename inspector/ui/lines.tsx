// Screens are built as arrays of lines (styled segments) so every view scrolls, truncates and
// wraps the same way at any terminal size. Colour is a hint only: markers (✗ ✓ › [redacted:…])
// carry the meaning, so NO_COLOR loses nothing.
//
// Text from traffic never reaches the terminal raw: seg(), line() and the measuring helpers (fit,
// clip, wrapText) turn every control into a visible escape (common/terminal-safe.ts) before anything
// is measured, so widths are those of what is shown; LineView, through which every line reaches
// Ink, escapes once more for segments built by hand (escaping twice changes nothing).
import { Box, Text } from "ink";
import type { ReactNode } from "react";
import { terminalSafe } from "../../common/terminal-safe.js";

export type Tone = "plain" | "dim" | "bold" | "ok" | "bad" | "warn" | "accent" | "redacted" | "heading";
export interface Segment {
  text: string;
  tone?: Tone;
}
export type Line = Segment[];

/** https://no-color.org: present and not empty. */
export function colorEnabled(): boolean {
  const v = process.env.NO_COLOR;
  return v === undefined || v === "";
}

const COLORS: Partial<Record<Tone, string>> = { ok: "green", bad: "red", warn: "yellow", accent: "cyan", redacted: "magenta", heading: "cyan" };

export function toneProps(tone: Tone = "plain", selected = false): { color?: string; bold?: boolean; dimColor?: boolean; inverse?: boolean; underline?: boolean } {
  const props: ReturnType<typeof toneProps> = {};
  if (colorEnabled() && COLORS[tone]) props.color = COLORS[tone];
  if (tone === "bold" || tone === "heading" || tone === "bad") props.bold = true;
  if (tone === "redacted" && !colorEnabled()) props.underline = true;
  if (tone === "dim") props.dimColor = true;
  if (selected) props.inverse = true;
  return props;
}

export const seg = (text: string, tone?: Tone): Segment => (tone ? { text: terminalSafe(text), tone } : { text: terminalSafe(text) });
export const line = (...parts: Array<Segment | string>): Line => parts.map((p) => (typeof p === "string" ? seg(p) : p));

/** Exactly `width` characters: cut with … or padded with spaces. */
export function fit(raw: string, width: number): string {
  if (width <= 0) return "";
  const text = terminalSafe(raw);
  if (text.length > width) return width === 1 ? "…" : text.slice(0, width - 1) + "…";
  return text.padEnd(width);
}

/** Cut to at most `width` characters, with … when cut. */
export function clip(raw: string, width: number): string {
  const text = terminalSafe(raw);
  return text.length > width ? fit(text, width) : text;
}

/** Word-wraps plain text to lines of at most `width` characters (long words are split). */
export function wrapText(text: string, width: number): string[] {
  const w = Math.max(1, width);
  const out: string[] = [];
  for (const paragraph of text.split("\n")) {
    let current = "";
    for (const word of paragraph.split(/\s+/).filter(Boolean)) {
      let rest = terminalSafe(word);
      while (rest.length > w) {
        if (current) out.push(current), (current = "");
        out.push(rest.slice(0, w));
        rest = rest.slice(w);
      }
      if (!current) current = rest;
      else if (current.length + 1 + rest.length <= w) current += " " + rest;
      else out.push(current), (current = rest);
    }
    out.push(current);
  }
  return out;
}

/** Hard-wraps a styled line at `width` characters; continuation lines start with `indent`. */
export function wrapLine(l: Line, width: number, indent = ""): Line[] {
  const w = Math.max(indent.length + 1, width);
  const out: Line[] = [];
  let current: Line = [];
  let used = 0;
  for (const s of l) {
    let text = s.text;
    while (text.length > 0) {
      const room = w - used;
      if (room <= 0) {
        out.push(current);
        current = indent ? [seg(indent, "dim")] : [];
        used = indent.length;
        continue;
      }
      current.push({ ...s, text: text.slice(0, room) });
      used += Math.min(room, text.length);
      text = text.slice(room);
    }
  }
  out.push(current);
  return out;
}

const REDACTED = /\[redacted:[^\]\s]*\]/g;

/** Splits text so every [redacted:…] marker is its own highlighted segment. */
export function markRedacted(text: string, tone?: Tone): Segment[] {
  const out: Segment[] = [];
  let last = 0;
  for (const m of text.matchAll(REDACTED)) {
    if (m.index > last) out.push(seg(text.slice(last, m.index), tone));
    out.push(seg(m[0], "redacted"));
    last = m.index + m[0].length;
  }
  if (last < text.length || out.length === 0) out.push(seg(text.slice(last), tone));
  return out;
}

/** One line, cut at the terminal's edge. */
export function LineView({ line: l, selected = false }: { line: Line; selected?: boolean }): ReactNode {
  return (
    <Text wrap="truncate-end">
      {l.length === 0 ? " " : l.map((s, i) => <Text key={i} {...toneProps(s.tone, selected)}>{terminalSafe(s.text)}</Text>)}
    </Text>
  );
}

/**
 * A window of `height` lines starting at `offset`, always exactly `height` tall so the screen
 * never jumps; `cursor` (an index into lines) is marked with › and shown inverted.
 */
export function ScrollLines({ lines, offset, height, cursor }: { lines: Line[]; offset: number; height: number; cursor?: number }): ReactNode {
  const rows: ReactNode[] = [];
  for (let i = offset; i < offset + height; i++) {
    const l = lines[i];
    const gutter = cursor === undefined ? [] : [seg(i === cursor ? "› " : "  ", "accent")];
    rows.push(<LineView key={i - offset} line={l ? [...gutter, ...l] : []} selected={i === cursor} />);
  }
  return <Box flexDirection="column" height={height} overflow="hidden">{rows}</Box>;
}

/** The offset that keeps `cursor` inside a window of `height` lines. */
export function follow(offset: number, cursor: number, height: number): number {
  if (cursor < offset) return cursor;
  if (cursor >= offset + height) return cursor - height + 1;
  return offset;
}

export const clamp = (n: number, min: number, max: number) => Math.max(min, Math.min(max, n));

/** The offset after a scroll action, for views without a cursor. */
export function scrollBy(offset: number, delta: number, total: number, height: number): number {
  return clamp(offset + delta, 0, Math.max(0, total - height));
}
