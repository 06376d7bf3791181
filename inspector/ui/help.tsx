// The `?` screen, made from KEYMAP: every binding is listed, keys of the same action together.
import { Box } from "ink";
import { useState, type ReactNode } from "react";
import { useKeys } from "./input.js";
import { hint, KEYMAP, keyLabel, type Action, type KeyBinding, type View } from "./keymap.js";
import { fit, line, LineView, scrollBy, ScrollLines, seg, type Line } from "./lines.js";
import type { ScreenProps } from "./types.js";

const SCREENS: View[] = ["list", "handshake", "exchange", "replay", "help"];
const TITLES: Record<View, string> = {
  list: "Handshake list",
  handshake: "Handshake",
  exchange: "Exchange",
  replay: "Replay",
  help: "Help",
  prompt: "Typing in a field",
};

export interface HelpSection {
  title: string;
  entries: Array<{ keys: string[]; description: string }>;
}

function group(bindings: KeyBinding[]): HelpSection["entries"] {
  const entries: HelpSection["entries"] = [];
  for (const b of bindings) {
    const same = entries.find((e) => e.description === b.description);
    if (same) same.keys.push(keyLabel(b.key));
    else entries.push({ keys: [keyLabel(b.key)], description: b.description });
  }
  return entries;
}

export function helpSections(): HelpSection[] {
  const everywhere = KEYMAP.filter((b) => SCREENS.every((v) => b.views.includes(v)));
  const moving = KEYMAP.filter((b) => !everywhere.includes(b) && ["up", "down", "pageUp", "pageDown", "top", "bottom"].includes(b.action));
  const shown = new Set([...everywhere, ...moving]);
  const sections: HelpSection[] = [
    { title: "Everywhere", entries: group(everywhere) },
    { title: "Moving", entries: group(moving) },
  ];
  for (const view of ["list", "handshake", "exchange", "replay", "prompt"] as View[]) {
    const bindings = KEYMAP.filter((b) => !shown.has(b) && b.views.includes(view));
    if (bindings.length) sections.push({ title: TITLES[view], entries: group(bindings) });
  }
  return sections;
}

function sectionLines(s: HelpSection, width: number): Line[] {
  return [
    line(seg(s.title, "heading")),
    ...s.entries.map((e) => line(seg(" "), seg(fit(e.keys.join(" "), 12), "accent"), seg(fit(e.description, width - 13)))),
  ];
}

/** Sections in two columns when there is room, else one. */
export function helpLines(width: number): Line[] {
  const sections = helpSections();
  if (width < 70) return sections.flatMap((s) => sectionLines(s, width));
  const column = Math.floor((width - 2) / 2);
  const all = sections.map((s) => sectionLines(s, column));
  const total = all.reduce((n, l) => n + l.length, 0);
  const left: Line[] = [];
  const right: Line[] = [];
  for (const lines of all) (left.length < total / 2 ? left : right).push(...lines);
  return Array.from({ length: Math.max(left.length, right.length) }, (_, i) => {
    const l = left[i] ?? [];
    const pad = column + 2 - l.reduce((n, s) => n + s.text.length, 0);
    return [...l, seg(" ".repeat(Math.max(1, pad))), ...(right[i] ?? [])];
  });
}

export function HelpView({ active, width, height }: ScreenProps): ReactNode {
  const [offset, setOffset] = useState(0);
  const lines = helpLines(width);
  const viewHeight = Math.max(1, height - 2);
  const scroll = (delta: number) => setOffset(scrollBy(offset, delta, lines.length, viewHeight));
  useKeys(
    "help",
    {
      down: () => scroll(1),
      up: () => scroll(-1),
      pageDown: () => scroll(viewHeight),
      pageUp: () => scroll(-viewHeight),
      top: () => setOffset(0),
      bottom: () => scroll(lines.length),
    },
    active,
  );
  return (
    <Box flexDirection="column" width={width} height={height}>
      <LineView line={line(seg("Keys", "heading"), seg("  NO_COLOR is respected; the inspector never writes to the database", "dim"))} />
      <ScrollLines lines={lines} offset={offset} height={viewHeight} />
      <LineView line={line(seg(hint("help", [["back", "back"], ...(lines.length > viewHeight ? [[["down", "up"], "scroll"] as [Action[], string]] : [])]), "dim"))} />
    </Box>
  );
}
