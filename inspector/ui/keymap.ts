// Keys are data: this one table drives both the input handling of every view and the `?` help.
import type { Key } from "ink";

/** A screen of the inspector, or "prompt" while a text field has the keyboard. */
export type View = "list" | "handshake" | "exchange" | "replay" | "help" | "prompt";

export type Action =
  | "quit"
  | "back"
  | "help"
  | "up"
  | "down"
  | "pageUp"
  | "pageDown"
  | "top"
  | "bottom"
  | "open"
  | "filterText"
  | "toggleFailed"
  | "cycleClient"
  | "cycleOutcome"
  | "clearFilters"
  | "replay"
  | "evidence"
  | "curl"
  | "prevStep"
  | "nextStep"
  | "playPause"
  | "rerun"
  | "togglePane"
  | "submit"
  | "cancel"
  | "nextField"
  | "deleteChar";

export interface KeyBinding {
  /** The key's name as keyName() reports it: a character, or up, down, enter, esc, space, pgdn, ctrl+c, … */
  key: string;
  views: View[];
  action: Action;
  description: string;
}

const SCREENS: View[] = ["list", "handshake", "exchange", "replay", "help"];
const SCROLLING: View[] = ["list", "handshake", "exchange", "help"];

export const KEYMAP: KeyBinding[] = [
  { key: "?", views: SCREENS, action: "help", description: "this help" },
  { key: "q", views: SCREENS, action: "back", description: "back; quit from the list" },
  { key: "esc", views: SCREENS, action: "back", description: "back; quit from the list" },
  { key: "ctrl+c", views: [...SCREENS, "prompt"], action: "quit", description: "quit" },

  { key: "j", views: SCROLLING, action: "down", description: "down" },
  { key: "down", views: SCROLLING, action: "down", description: "down" },
  { key: "k", views: SCROLLING, action: "up", description: "up" },
  { key: "up", views: SCROLLING, action: "up", description: "up" },
  { key: "pgdn", views: SCROLLING, action: "pageDown", description: "page down" },
  { key: "pgup", views: SCROLLING, action: "pageUp", description: "page up" },
  { key: "g", views: SCROLLING, action: "top", description: "first line" },
  { key: "G", views: SCROLLING, action: "bottom", description: "last line" },
  { key: "home", views: SCROLLING, action: "top", description: "first line" },
  { key: "end", views: SCROLLING, action: "bottom", description: "last line" },

  { key: "enter", views: ["list"], action: "open", description: "open the handshake" },
  { key: "/", views: ["list"], action: "filterText", description: "filter by text" },
  { key: "f", views: ["list"], action: "toggleFailed", description: "failed only on/off" },
  { key: "c", views: ["list"], action: "cycleClient", description: "next client family" },
  { key: "o", views: ["list"], action: "cycleOutcome", description: "next outcome" },
  { key: "x", views: ["list"], action: "clearFilters", description: "clear the filters" },
  { key: "r", views: ["list", "handshake"], action: "replay", description: "replay the handshake" },

  { key: "enter", views: ["handshake"], action: "open", description: "open the exchange" },
  { key: "e", views: ["handshake"], action: "evidence", description: "jump to the next evidence" },

  { key: "c", views: ["exchange"], action: "curl", description: "copy as curl on/off" },

  { key: "left", views: ["replay"], action: "prevStep", description: "previous exchange" },
  { key: "h", views: ["replay"], action: "prevStep", description: "previous exchange" },
  { key: "right", views: ["replay"], action: "nextStep", description: "next exchange" },
  { key: "l", views: ["replay"], action: "nextStep", description: "next exchange" },
  { key: "enter", views: ["replay"], action: "open", description: "open the exchange" },
  { key: "space", views: ["replay"], action: "playPause", description: "play / pause" },
  { key: "r", views: ["replay"], action: "rerun", description: "re-run now (target, token)" },
  { key: "tab", views: ["replay"], action: "togglePane", description: "playback / re-run result" },

  { key: "enter", views: ["prompt"], action: "submit", description: "accept" },
  { key: "esc", views: ["prompt"], action: "cancel", description: "cancel" },
  { key: "tab", views: ["prompt"], action: "nextField", description: "next field" },
  { key: "backspace", views: ["prompt"], action: "deleteChar", description: "delete a character" },
];

/** The name of a key press, in the vocabulary of KEYMAP. */
export function keyName(input: string, key: Key): string {
  if (key.upArrow) return "up";
  if (key.downArrow) return "down";
  if (key.leftArrow) return "left";
  if (key.rightArrow) return "right";
  if (key.pageUp) return "pgup";
  if (key.pageDown) return "pgdn";
  if (key.home) return "home";
  if (key.end) return "end";
  if (key.return) return "enter";
  if (key.escape) return "esc";
  if (key.tab) return "tab";
  // Terminals send DEL (0x7f) for Backspace; Ink reports it as delete.
  if (key.backspace || key.delete) return "backspace";
  if (key.ctrl && input) return `ctrl+${input}`;
  if (input === " ") return "space";
  return input;
}

export function actionFor(view: View, name: string): Action | undefined {
  return KEYMAP.find((b) => b.key === name && b.views.includes(view))?.action;
}

/** How a key is shown in help and hints. */
export function keyLabel(key: string): string {
  const labels: Record<string, string> = { up: "↑", down: "↓", left: "←", right: "→", enter: "Enter", esc: "Esc", tab: "Tab", space: "Space", pgup: "PgUp", pgdn: "PgDn", home: "Home", end: "End", backspace: "Bksp", "ctrl+c": "Ctrl-C" };
  return labels[key] ?? key;
}

/** The keys bound to an action in a view, for the one-line hints at the bottom of each screen. */
export function keysFor(view: View, action: Action): string[] {
  return KEYMAP.filter((b) => b.action === action && b.views.includes(view)).map((b) => keyLabel(b.key));
}

/** A one-line hint such as "Enter open  / text  ? help", its keys read from KEYMAP. */
export function hint(view: View, items: Array<[Action | Action[], string]>): string {
  return items
    .map(([actions, label]) => [[actions].flat().map((a) => keysFor(view, a)[0] ?? "").filter(Boolean).join("/"), label] as const)
    .filter(([keys]) => keys)
    .map(([keys, label]) => `${keys} ${label}`)
    .join("  ");
}
