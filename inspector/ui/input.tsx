// Input routing: one useInput for the whole app. The visible screen (or an open prompt, which
// always wins) registers its handlers; a key press becomes an action through KEYMAP, goes to the
// registered handler when it has one, else to the app (help, back, quit).
import { Text, useInput } from "ink";
import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { actionFor, keyName, type Action, type View } from "./keymap.js";
import { terminalSafe } from "../../common/terminal-safe.js";
import { toneProps } from "./lines.js";

export type Handlers = Partial<Record<Action, () => void>>;

interface Entry {
  view: View;
  handlers: { current: Handlers };
  onText?: { current: (text: string) => void };
}

interface Router {
  register(entry: Entry): () => void;
  /** A screen rendered: the next queued key may go. */
  rendered(): void;
}

/** Control characters inside a run of typed text. */
const CHAR_NAMES: Record<string, string> = { "\r": "enter", "\n": "enter", "\t": "tab", "\x7f": "backspace", "\b": "backspace", " ": "space" };
/**
 * A key that changed nothing renders nothing: the next one goes after this long anyway. Long
 * enough for a new screen to load and register on a busy machine (keys typed ahead of it must
 * reach it, not the screen below); a key that changes something goes on at its render.
 */
const SETTLE_MS = 250;

const RouterContext = createContext<Router>({ register: () => () => {}, rendered: () => {} });

/**
 * Keys are handled one at a time, each after the screen has rendered the one before: the handlers
 * are those of the last render, so "G" then Enter opens the last row even when both arrive in
 * one read (fast typing, pastes, tmux send-keys).
 */
export function KeyRouter({ fallback, children }: { fallback: (action: Action, view: View) => void; children?: ReactNode }): ReactNode {
  const entries = useRef<Entry[]>([]);
  const queue = useRef<Array<{ name: string; text: string }>>([]);
  const waiting = useRef<NodeJS.Timeout | undefined>(undefined);
  const fallbackRef = useRef(fallback);
  fallbackRef.current = fallback;

  const dispatch = (name: string, text: string) => {
    const all = entries.current;
    const top = all.filter((e) => e.view === "prompt").at(-1) ?? all.at(-1);
    if (!top) return;
    const action = actionFor(top.view, name);
    const handler = action ? top.handlers.current[action] : undefined;
    if (handler) handler();
    else if (top.onText && !action && text) top.onText.current(text);
    else if (action) fallbackRef.current(action, top.view);
  };
  const pump = () => {
    clearTimeout(waiting.current);
    waiting.current = undefined;
    const next = queue.current.shift();
    if (!next) return;
    waiting.current = setTimeout(pump, SETTLE_MS);
    dispatch(next.name, next.text);
  };
  const router = useRef<Router>({
    register(entry) {
      entries.current.push(entry);
      return () => {
        entries.current = entries.current.filter((e) => e !== entry);
      };
    },
    rendered() {
      if (!waiting.current) return;
      clearTimeout(waiting.current);
      waiting.current = setTimeout(pump, 0);
    },
  });
  useEffect(() => () => clearTimeout(waiting.current), []);

  useInput((input, key) => {
    const name = keyName(input, key);
    if (name !== input || input.length <= 1) {
      queue.current.push({ name, text: key.ctrl || key.meta || (name !== input && name !== "space") ? "" : input });
    } else {
      for (const c of input) queue.current.push({ name: CHAR_NAMES[c] ?? c, text: c >= " " && c !== "\x7f" ? c : "" });
    }
    if (!waiting.current) pump();
  });
  return <RouterContext.Provider value={router.current}>{children}</RouterContext.Provider>;
}

/** Routes the keys of `view` to `handlers` while `active`. */
export function useKeys(view: View, handlers: Handlers, active = true, onText?: (text: string) => void): void {
  const { register, rendered } = useContext(RouterContext);
  const handlersRef = useRef(handlers);
  handlersRef.current = handlers;
  const textRef = useRef(onText ?? (() => {}));
  textRef.current = onText ?? (() => {});
  const hasText = onText !== undefined;
  useEffect(() => {
    if (!active) return;
    return register({ view, handlers: handlersRef, ...(hasText ? { onText: textRef } : {}) });
  }, [register, view, active, hasText]);
  // Every render of a screen lets the next key go.
  useEffect(() => {
    if (active) rendered();
  });
}

export interface Field {
  label: string;
  value: string;
  /** Shown as • while typing (tokens). */
  secret?: boolean;
}

/**
 * Text fields on their own lines, with the keyboard while mounted: Enter moves on (and submits on
 * the last field), Tab cycles, Esc cancels. `onChange` sees every keystroke (live filters).
 */
export function Prompt({ fields, onSubmit, onCancel, onChange, width }: {
  fields: Field[];
  onSubmit: (values: string[]) => void;
  onCancel: () => void;
  onChange?: (values: string[]) => void;
  width: number;
}): ReactNode {
  const [values, setValues] = useState(() => fields.map((f) => f.value));
  const [focus, setFocus] = useState(0);
  const update = (next: string[]) => {
    setValues(next);
    onChange?.(next);
  };
  const edit = (f: (v: string) => string) => update(values.map((v, i) => (i === focus ? f(v) : v)));
  useKeys(
    "prompt",
    {
      submit: () => (focus < fields.length - 1 ? setFocus(focus + 1) : onSubmit(values)),
      cancel: onCancel,
      nextField: () => setFocus((focus + 1) % fields.length),
      deleteChar: () => edit((v) => v.slice(0, -1)),
    },
    true,
    (text) => edit((v) => v + text.replace(/[\r\n]/g, "")),
  );
  return (
    <>
      {fields.map((f, i) => {
        // A pasted value or a default read from the database may hold controls: shown escaped.
        const shown = f.secret ? "•".repeat(values[i]!.length) : terminalSafe(values[i]!);
        const label = `${f.label}: `;
        // Keep the end of a long value (where the typing happens) in view.
        const room = Math.max(1, width - label.length - 2);
        const visible = shown.length > room ? "…" + shown.slice(shown.length - room + 1) : shown;
        const caret = i === focus ? "▏" : "";
        return (
          <Text key={f.label} wrap="truncate-end">
            <Text {...toneProps(i === focus ? "accent" : "dim")}>{label}</Text>
            <Text>{visible}</Text>
            <Text {...toneProps("accent")}>{caret}</Text>
          </Text>
        );
      })}
    </>
  );
}
