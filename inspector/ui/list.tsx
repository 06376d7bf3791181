// The handshake list: newest first, each with its MCP era (legacy↩: fell back from modern), failed
// ones marked ✗ and highlighted, filters by outcome, client and text, following new traffic in
// place (the selection stays on its handshake).
import { Box } from "ink";
import { useRef, useState, type ReactNode } from "react";
import { CLIENT_FAMILIES, type ClientFamily, type HandshakeOutcome } from "../../analysis/handshake.js";
import { eraLabel, ERA_WIDTH, formatTime, stepLabel } from "../format.js";
import { OUTCOME_MARK } from "./fmt.js";
import { Prompt, useKeys } from "./input.js";
import { hint } from "./keymap.js";
import { clamp, fit, follow, line, LineView, ScrollLines, seg, type Line } from "./lines.js";
import type { FollowMode } from "./live.js";
import type { ScreenProps, Summary } from "./types.js";
import { useRecorded } from "./use-recorded.js";
import type { Maybe } from "../recording.js";

/** What the list shows while a PostgreSQL listing is on its way. */
const NO_ROWS: Summary[] = [];

const OUTCOMES: HandshakeOutcome[] = ["failed", "succeeded", "abandoned", "in_progress"];
/** Read at most this many rows per refresh: a screen shows ~20, the rest is for scrolling. */
const LIMIT = 500;

export interface ListFilters {
  outcome: HandshakeOutcome | null;
  client: ClientFamily | null;
  text: string;
}

const NO_FILTERS: ListFilters = { outcome: null, client: null, text: "" };

function next<T>(all: readonly T[], current: T | null): T | null {
  const i = current === null ? -1 : all.indexOf(current);
  return i + 1 < all.length ? all[i + 1]! : null;
}

export function query(data: ScreenProps["data"], f: ListFilters): Maybe<Summary[]> {
  const rows = data.listHandshakes({
    limit: LIMIT,
    ...(f.outcome === "failed" ? { failedOnly: true } : {}),
    ...(f.client ? { client: f.client } : {}),
    ...(f.text ? { text: f.text } : {}),
  });
  const keep = (all: Summary[]) => (f.outcome && f.outcome !== "failed" ? all.filter((r) => r.outcome === f.outcome) : all);
  return rows instanceof Promise ? rows.then(keep) : keep(rows);
}

// Fixed widths (rows update in place as traffic arrives, the columns must not move). At 80
// columns the diagnosis keeps 22: the longest common codes (redirect_uri_rejected) stay whole.
// The era stands before the client ("legacy claude.ai"), the outcome right after the client.
const COLUMNS = { time: 11, era: ERA_WIDTH, client: 11, outcome: 9, step: 11 };

function row(s: Summary, width: number): Line {
  const o = OUTCOME_MARK[s.outcome];
  const failed = s.outcome === "failed";
  const fixed = 2 + COLUMNS.time + 1 + COLUMNS.era + 1 + COLUMNS.client + 1 + COLUMNS.outcome + 1 + COLUMNS.step + 1;
  const diagnosis = s.firstCode ? `${s.firstCode}: ${s.firstSummary ?? ""}` : s.clientName ? `(${s.clientName})` : "";
  return [
    seg(`${o.mark} `, o.tone),
    seg(fit(formatTime(s.startedAt), COLUMNS.time) + " "),
    seg(fit(eraLabel(s.era, s.eraFallback), COLUMNS.era) + " ", s.era === "modern" || s.era === "legacy" ? undefined : "dim"),
    seg(fit(s.clientFamily, COLUMNS.client) + " ", failed ? "bold" : undefined),
    seg(fit(o.label, COLUMNS.outcome) + " ", o.tone),
    seg(fit(s.failedStep ? stepLabel(s.failedStep) : "", COLUMNS.step) + " ", failed ? "bad" : undefined),
    seg(fit(diagnosis, Math.max(0, width - 2 - fixed)), failed ? "warn" : "dim"),
  ];
}

const header = (width: number): Line =>
  line(seg(fit(`    ${fit("TIME", COLUMNS.time)} ${fit("ERA", COLUMNS.era)} ${fit("CLIENT", COLUMNS.client)} ${fit("OUTCOME", COLUMNS.outcome)} ${fit("FAILED STEP", COLUMNS.step)} FIRST DIAGNOSIS`, width), "dim"));

function filterLine(f: ListFilters): Line {
  const value = (v: string | null) => seg(v ?? "all", v ? "accent" : "dim");
  return line(
    seg("filter ", "dim"),
    seg("outcome: "), value(f.outcome),
    seg("  client: "), value(f.client),
    seg("  text: "), value(f.text || null),
  );
}

export function ListView({ data, active, width, height, tick, open, dbPath, mode }: ScreenProps & { dbPath: string; mode: FollowMode }): ReactNode {
  const [filters, setFilters] = useState<ListFilters>(NO_FILTERS);
  const [editing, setEditing] = useState<{ before: string } | null>(null);
  const [selected, setSelected] = useState<{ id: number | null; index: number }>({ id: null, index: 0 });
  const offsetRef = useRef(0);

  // Re-read on every tick: the same rows produce the same lines, so Ink writes nothing.
  const rows = useRecorded(() => query(data, filters), [data, filters, tick], filters) ?? NO_ROWS;
  const found = selected.id === null ? -1 : rows.findIndex((r) => r.id === selected.id);
  const index = found >= 0 ? found : clamp(selected.index, 0, Math.max(0, rows.length - 1));
  const bodyHeight = Math.max(1, height - 4);
  offsetRef.current = follow(clamp(offsetRef.current, 0, Math.max(0, rows.length - bodyHeight)), index, bodyHeight);

  const select = (i: number) => {
    const j = clamp(i, 0, Math.max(0, rows.length - 1));
    setSelected({ id: rows[j]?.id ?? null, index: j });
  };
  const current = rows[index];
  const setFilter = (patch: Partial<ListFilters>) => {
    setFilters((f) => ({ ...f, ...patch }));
    setSelected((s) => ({ ...s, index: 0 }));
  };

  useKeys(
    "list",
    {
      down: () => select(index + 1),
      up: () => select(index - 1),
      pageDown: () => select(index + bodyHeight),
      pageUp: () => select(index - bodyHeight),
      top: () => setSelected({ id: null, index: 0 }),
      bottom: () => select(rows.length - 1),
      open: () => current && open({ view: "handshake", id: current.id }),
      replay: () => current && open({ view: "replay", id: current.id }),
      filterText: () => setEditing({ before: filters.text }),
      toggleFailed: () => setFilter({ outcome: filters.outcome === "failed" ? null : "failed" }),
      cycleOutcome: () => setFilter({ outcome: next(OUTCOMES, filters.outcome) }),
      cycleClient: () => setFilter({ client: next(CLIENT_FAMILIES, filters.client) }),
      clearFilters: () => setFilter(NO_FILTERS),
    },
    active,
  );

  const failed = rows.filter((r) => r.outcome === "failed").length;
  const title = line(
    seg("mcp-lens inspector ", "heading"),
    seg(`${rows.length}${rows.length === LIMIT ? "+" : ""} handshake${rows.length === 1 ? "" : "s"}, `),
    seg(`${failed} failed`, failed ? "bad" : "dim"),
    seg("  "),
    mode === "live" ? seg("● live", "ok") : seg(mode === "polling" ? "○ polling the database" : "○ not following", "dim"),
    seg(`  ${dbPath}`, "dim"),
  );
  const keys = line(
    seg(
      hint("list", [
        ["open", "open"],
        ["filterText", "text"],
        ["toggleFailed", "failed"],
        ["cycleClient", "client"],
        ["cycleOutcome", "outcome"],
        ["replay", "replay"],
        ["help", "help"],
        ["back", "quit"],
      ]),
      "dim",
    ),
  );
  const body: Line[] = rows.length
    ? rows.map((r) => row(r, width))
    : [line(seg(!filters.outcome && !filters.client && !filters.text ? "  No handshakes yet: waiting for traffic…" : "  No handshake matches the filters (x clears them).", "dim"))];

  return (
    <Box flexDirection="column" width={width} height={height}>
      <LineView line={title} />
      {editing && active ? (
        <Prompt
          fields={[{ label: "/ text (Enter keep, Esc cancel)", value: filters.text }]}
          width={width}
          onChange={([text]) => setFilter({ text: text ?? "" })}
          onSubmit={() => setEditing(null)}
          onCancel={() => {
            setFilter({ text: editing.before });
            setEditing(null);
          }}
        />
      ) : (
        <LineView line={filterLine(filters)} />
      )}
      <LineView line={header(width)} />
      <ScrollLines lines={body} offset={offsetRef.current} height={bodyHeight} {...(rows.length ? { cursor: index } : {})} />
      <LineView line={keys} />
    </Box>
  );
}
