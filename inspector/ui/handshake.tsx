// One handshake: its era and how the client got its client id, its diagnoses (summary, evidence,
// fix, reference) and the timeline of steps with each exchange on its row. The cursor moves over
// the rows that lead to an exchange.
import { Box } from "ink";
import { useMemo, useState, type ReactNode } from "react";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import type { Diagnosis } from "../../analysis/handshake.js";
import { eraText, formatDuration, formatTime, keyFacts, plural, registrationText, stepLabel } from "../format.js";
import { httpMark, offset, OUTCOME_MARK, stepMark } from "./fmt.js";
import { useKeys } from "./input.js";
import { hint } from "./keymap.js";
import { clamp, clip, fit, follow, line, LineView, ScrollLines, seg, wrapText, type Line, type Tone } from "./lines.js";
import type { Detail, ScreenProps } from "./types.js";
import { useRecorded } from "./use-recorded.js";

const SEVERITY: Record<Diagnosis["severity"], { mark: string; tone: Tone }> = {
  error: { mark: "✗", tone: "bad" },
  warning: { mark: "!", tone: "warn" },
  info: { mark: "i", tone: "dim" },
};

export interface Body {
  lines: Line[];
  /** The exchange each line leads to (Enter), null for text. */
  targets: Array<number | null>;
  /** Where each exchange sits in the timeline. */
  rowOf: Map<number, number>;
  /** Evidence exchange ids, in diagnosis order, each once. */
  evidence: number[];
}

/** One exchange on one row: id, time, status, method, path, kind, key facts. */
export function exchangeRow(e: ClassifiedExchange, start: number): Line {
  const m = httpMark(e.status);
  const path = e.path + (e.query ? `?${e.query}` : "");
  return [
    seg(fit(`#${e.id}`, 6)),
    seg(fit(offset(e.startedAt - start), 7), "dim"),
    seg(fit(e.status === null ? "---" : String(e.status), 4), m.tone),
    seg(`${e.method} ${clip(path, 36)} `),
    seg(e.kind, "accent"),
    seg(keyFacts(e).map((f) => `  ${f}`).join(""), "dim"),
  ];
}

export function buildBody({ handshake: h, exchanges }: Detail, width: number): Body {
  const body: Body = { lines: [], targets: [], rowOf: new Map(), evidence: [] };
  const push = (l: Line, target: number | null = null) => {
    body.lines.push(l);
    body.targets.push(target);
  };
  const wrapped = (label: string, text: string, tone?: Tone) =>
    wrapText(text, width - 4 - label.length).forEach((t, i) => push(line(seg(i === 0 ? `  ${label}` : " ".repeat(2 + label.length), "dim"), seg(t, tone))));
  const byId = new Map(exchanges.map((e) => [e.id, e]));

  push(line(seg(`DIAGNOSES (${h.diagnoses.length})`, "heading")));
  if (h.diagnoses.length === 0) push(line(seg("  none: nothing went wrong that the traffic shows", "dim")));
  for (const d of h.diagnoses) {
    const s = SEVERITY[d.severity];
    push(line(seg(`${s.mark} `, s.tone), seg(d.code, "bold"), seg(`  ${d.severity}`, s.tone)));
    wrapped("", d.summary);
    for (const id of d.evidence) {
      const e = byId.get(id);
      if (!body.evidence.includes(id)) body.evidence.push(id);
      push(line(seg("  evidence ▸ ", "dim"), seg(`#${id}`, "accent"), seg(e ? ` ${e.method} ${clip(e.path, 40)} → ${e.status ?? "no response"}` : " (not stored)", "dim")), id);
    }
    wrapped("fix: ", d.fix);
    wrapped("ref: ", d.reference, "dim");
  }

  push([]);
  push(line(seg(`TIMELINE (${plural(h.steps.length, "step")}, ${plural(exchanges.length, "exchange")})`, "heading")));
  const placed = new Set<number>();
  const exchangeLine = (e: ClassifiedExchange) => {
    placed.add(e.id);
    body.rowOf.set(e.id, body.lines.length);
    push([seg("    "), ...exchangeRow(e, h.startedAt)], e.id);
  };
  for (const step of h.steps) {
    const m = stepMark(step.status);
    push(line(seg(`${m.mark} `, m.tone), seg(fit(step.step, 30), step.status === "failed" ? "bad" : "bold"), seg(offset(step.at - h.startedAt), "dim")));
    for (const id of step.exchangeIds) {
      const e = byId.get(id);
      if (e && !placed.has(id)) exchangeLine(e);
    }
  }
  const rest = exchanges.filter((e) => !placed.has(e.id));
  if (rest.length) {
    push(line(seg("· ", "dim"), seg("other exchanges", "dim")));
    rest.forEach(exchangeLine);
  }
  return body;
}

/** How many lines headerLines gives. */
const HEADER_LINES = 4;

export function headerLines({ handshake: h, exchanges }: Detail): Line[] {
  const o = OUTCOME_MARK[h.outcome];
  const first = h.diagnoses[0];
  return [
    line(
      seg(`Handshake #${h.id}`, "heading"),
      seg(` · ${h.clientFamily}${h.clientName ? ` (${h.clientName})` : ""} · ${formatTime(h.startedAt)} · ${formatDuration(h.endedAt - h.startedAt)} · ${plural(exchanges.length, "exchange")}`),
    ),
    line(
      seg(`${o.mark} ${o.label}`, o.tone),
      seg(h.failedStep ? ` at ${h.failedStep}` : "", o.tone),
      seg(first && h.outcome === "failed" ? `: ${first.code}` : "", "bold"),
    ),
    line(seg("era ", "dim"), seg(eraText(h.era, h.eraFallback)), seg(" · client id ", "dim"), seg(registrationText(h.registration))),
    // The steps at a glance; the timeline below has them with their exchanges.
    h.steps.flatMap((s, i) => {
      const m = stepMark(s.status);
      return [...(i ? [seg(" › ", "dim")] : []), seg(`${m.mark} ${stepLabel(s.step)}`, m.tone)];
    }),
  ];
}

export function HandshakeView({ data, active, width, height, tick, open, id }: ScreenProps & { id: number }): ReactNode {
  const detail = useRecorded(() => data.getHandshake(id), [data, id, tick], id);
  const body = useMemo(() => (detail ? buildBody(detail, width) : null), [detail, width]);
  const selectable = useMemo(() => body?.targets.flatMap((t, i) => (t === null ? [] : [i])) ?? [], [body]);
  // The cursor is anchored to what it points at (the nth row of an exchange), not to a line
  // index: live updates add diagnoses and exchanges above it without moving it.
  const [view, setView] = useState<{ cursor: number | null; anchor: Anchor | null; offset: number }>({ cursor: null, anchor: null, offset: 0 });
  const [evidenceAt, setEvidenceAt] = useState(-1);
  const viewHeight = Math.max(1, height - HEADER_LINES - 1); // the header, then the keys line

  const anchored = body && view.anchor ? lineOfAnchor(body.targets, view.anchor) : undefined;
  const at = clamp(anchored ?? view.cursor ?? selectable[0] ?? 0, 0, Math.max(0, (body?.lines.length ?? 1) - 1));
  const off = follow(view.offset, at, viewHeight);
  const pos = selectable.indexOf(at);
  const goLine = (lineIndex: number, offset = follow(off, lineIndex, viewHeight)) =>
    setView({ cursor: lineIndex, anchor: body ? anchorOfLine(body.targets, lineIndex) : null, offset });
  const moveTo = (k: number) => selectable.length > 0 && goLine(selectable[clamp(k, 0, selectable.length - 1)]!);
  /** The first selectable row at least `n` lines below (n > 0) or above (n < 0) the cursor. */
  const rowsAway = (n: number) => {
    const k = n > 0 ? selectable.findIndex((i) => i >= at + n) : lastIndex(selectable, (i) => i <= at + n);
    return k === -1 ? (n > 0 ? selectable.length - 1 : 0) : k;
  };

  useKeys(
    "handshake",
    {
      down: () => moveTo(pos + 1),
      // Above the first row there is only text: scroll it into view.
      up: () => (pos <= 0 ? goLine(at, Math.max(0, off - 1)) : moveTo(pos - 1)),
      pageDown: () => moveTo(rowsAway(viewHeight)),
      pageUp: () => moveTo(rowsAway(-viewHeight)),
      top: () => selectable.length > 0 && goLine(selectable[0]!, 0),
      bottom: () => moveTo(selectable.length - 1),
      open: () => body?.targets[at] != null && open({ view: "exchange", id: body.targets[at]! }),
      replay: () => open({ view: "replay", id }),
      evidence: () => {
        if (!body?.evidence.length) return;
        const k = (evidenceAt + 1) % body.evidence.length;
        setEvidenceAt(k);
        const row = body.rowOf.get(body.evidence[k]!);
        if (row !== undefined) goLine(row);
      },
    },
    active,
  );

  if (detail === undefined) return <LineView line={line(seg(`Reading handshake #${id}…`, "dim"))} />;
  if (!detail || !body) {
    return <LineView line={line(seg(`Handshake #${id} is not in the database (pruned, or the id is wrong). q: back`, "warn"))} />;
  }
  const keys = line(seg(hint("handshake", [[["down", "up"], "select"], ["open", "open exchange"], ["evidence", "next evidence"], ["replay", "replay"], ["help", "help"], ["back", "back"]]), "dim"));
  return (
    <Box flexDirection="column" width={width} height={height}>
      {headerLines(detail).map((l, i) => <LineView key={i} line={l} />)}
      <ScrollLines lines={body.lines} offset={off} height={viewHeight} cursor={at} />
      <LineView line={keys} />
    </Box>
  );
}

/** The nth line (0-based) pointing at an exchange: evidence rows and timeline rows share ids. */
interface Anchor {
  target: number;
  nth: number;
}

function anchorOfLine(targets: Array<number | null>, lineIndex: number): Anchor | null {
  const target = targets[lineIndex];
  if (target === null || target === undefined) return null;
  let nth = 0;
  for (let i = 0; i < lineIndex; i++) if (targets[i] === target) nth++;
  return { target, nth };
}

function lineOfAnchor(targets: Array<number | null>, anchor: Anchor): number | undefined {
  let seen = 0;
  for (let i = 0; i < targets.length; i++) {
    if (targets[i] !== anchor.target) continue;
    if (seen++ === anchor.nth) return i;
  }
  return undefined;
}

function lastIndex<T>(items: T[], test: (item: T) => boolean): number {
  for (let i = items.length - 1; i >= 0; i--) if (test(items[i]!)) return i;
  return -1;
}
