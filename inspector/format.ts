// Pure formatting for the inspector's CLI and UI: times, durations, outcome labels, truncation to
// a width, colour (none under NO_COLOR or off a terminal), the text views, and the JSON shapes.
//
// JSON output (stable: `inspector list --json`, `show --json`, `tail --json`)
//
//   handshake = {
//     id: number,                    the id of its first exchange
//     client: string,                claude.ai | chatgpt | claude-code | claude-desktop | vscode | cursor |
//                                    mcp-inspector | mcp-remote | typescript-sdk | python-sdk | other
//     clientName: string | null,     clientInfo.name or the registered client_name
//     era: "modern" | "legacy" | "unknown",   the MCP era it spoke: modern = 2026-07-28 (stateless,
//                                    server/discover); unknown until an MCP request shows one
//     eraFallback: boolean,          a dual-era client fell back from modern to legacy (healthy)
//     registration: "cimd" | "dcr" | "pre_registered" | "none",   how the client got its OAuth
//                                    client id: Client ID Metadata Document, dynamic registration,
//                                    one it already had, or none (authless)
//     startedAt: string,             ISO 8601, UTC
//     endedAt: string,
//     outcome: "succeeded" | "failed" | "abandoned" | "in_progress",
//     stepsReached: [{ step, status: "ok" | "failed", at: string, exchangeIds: number[] }],  in the order reached
//     failedStep: string | null,     a step name, e.g. "token"
//     diagnoses: [{ code, severity: "error" | "warning" | "info", summary, evidence: number[], fix, reference }],
//                                    most decisive first; evidence are exchange ids
//     exchanges: [{ id, startedAt, method, host, path, query, status, kind, durationMs, ttfbMs,
//                   upstreamError, facts: {…} }]    `show` only, in the order they started; facts as recorded
//   }
//   list --json    an array of handshakes without `exchanges`, newest first
//   show --json    one handshake
//   tail --json    one object per line: {"type":"exchange","handshakeId":number|null,"exchange":{…}}
//                  or {"type":"handshake","handshake":{… without exchanges}}
//   replay --json  { handshakeId, target, era, eraFallback, verdict: "now_passes" | "still_fails", failedStep, code,
//                    summary, steps: [{ step, original: { status, exchangeIds }, rerun: { status,
//                    httpStatus?, detail? }, same }] }
import type { ClassifiedExchange } from "../analysis/exchange.js";
import type { Diagnosis, Handshake, HandshakeEra, HandshakeOutcome, HandshakeStep, RegistrationKind } from "../analysis/handshake.js";
import type { HandshakeDetail, HandshakeSummary, LiveMessage } from "./data.js";
import type { ReplayResult } from "./replay.js";
import { terminalSafeDeep, terminalSafeStyled } from "../common/terminal-safe.js";

/** "1 exchange", "3 exchanges". */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

// ---------------------------------------------------------------------------------------------
// JSON shapes

export interface ExchangeJson {
  id: number;
  startedAt: string;
  method: string;
  host: string | null;
  path: string;
  query: string | null;
  status: number | null;
  kind: ClassifiedExchange["kind"];
  durationMs: number | null;
  ttfbMs: number | null;
  upstreamError: string | null;
  facts: ClassifiedExchange["facts"];
  /** The replica that recorded it (--replica), in recordings made since it was added. */
  replica?: string;
}

export interface HandshakeJson {
  id: number;
  client: Handshake["clientFamily"];
  clientName: string | null;
  era: HandshakeEra;
  eraFallback: boolean;
  registration: RegistrationKind;
  startedAt: string;
  endedAt: string;
  outcome: HandshakeOutcome;
  stepsReached: Array<{ step: HandshakeStep; status: "ok" | "failed"; at: string; exchangeIds: number[] }>;
  failedStep: HandshakeStep | null;
  diagnoses: Diagnosis[];
  exchanges?: ExchangeJson[];
}

export const iso = (ms: number): string => new Date(ms).toISOString();

export function exchangeJson(e: ClassifiedExchange): ExchangeJson {
  return {
    id: e.id,
    startedAt: iso(e.startedAt),
    method: e.method,
    host: e.host,
    path: e.path,
    query: e.query,
    status: e.status,
    kind: e.kind,
    durationMs: e.durationMs,
    ttfbMs: e.ttfbMs,
    upstreamError: e.upstreamError,
    facts: e.facts,
    ...(e.replica !== undefined ? { replica: e.replica } : {}),
  };
}

/** With `exchanges` for `show`, without for lists and live updates. */
export function handshakeJson(h: Handshake, exchanges?: ClassifiedExchange[]): HandshakeJson {
  return {
    id: h.id,
    client: h.clientFamily,
    clientName: h.clientName,
    era: h.era,
    eraFallback: h.eraFallback,
    registration: h.registration,
    startedAt: iso(h.startedAt),
    endedAt: iso(h.endedAt),
    outcome: h.outcome,
    stepsReached: h.steps.map((s) => ({ step: s.step, status: s.status, at: iso(s.at), exchangeIds: s.exchangeIds })),
    failedStep: h.failedStep,
    diagnoses: h.diagnoses.map(({ code, severity, summary, evidence, fix, reference }) => ({ code, severity, summary, evidence, fix, reference })),
    ...(exchanges ? { exchanges: exchanges.map(exchangeJson) } : {}),
  };
}

export function liveMessageJson(message: LiveMessage): object {
  return message.type === "exchange"
    ? { type: "exchange", handshakeId: message.handshakeId, exchange: exchangeJson(message.exchange) }
    : { type: "handshake", handshake: handshakeJson(message.handshake) };
}

// ---------------------------------------------------------------------------------------------
// Colour

export type Style = "red" | "green" | "yellow" | "cyan" | "dim" | "bold";
export type Paint = (style: Style, text: string) => string;

const SGR: Record<Style, [number, number]> = { red: [31, 39], green: [32, 39], yellow: [33, 39], cyan: [36, 39], dim: [2, 22], bold: [1, 22] };

/** Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org). */
export function colorEnabled(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && !env.NO_COLOR;
}

export function painter(enabled: boolean): Paint {
  return enabled ? (style, text) => `\x1b[${SGR[style][0]}m${text}\x1b[${SGR[style][1]}m` : (_style, text) => text;
}

export const OUTCOME_LABELS: Record<HandshakeOutcome, string> = {
  succeeded: "succeeded",
  failed: "FAILED",
  abandoned: "abandoned",
  in_progress: "running",
};

export const OUTCOME_STYLES: Record<HandshakeOutcome, Style> = { succeeded: "green", failed: "red", abandoned: "yellow", in_progress: "cyan" };

/**
 * A handshake's era in a list column (at most ERA_WIDTH): modern, legacy, legacy↩ when a
 * dual-era client fell back from modern, ? while no MCP request has shown it. Only these: a
 * value the database holds that is none of the eras shows as ?.
 */
export function eraLabel(era: string, fallback: boolean): string {
  if (era === "modern") return "modern";
  if (era === "legacy") return fallback ? "legacy↩" : "legacy";
  return "?";
}
export const ERA_WIDTH = 7;

/** A handshake's era in words, for `show` and the handshake view (after "era "). */
export function eraText(era: string, fallback: boolean): string {
  if (era === "modern") return "modern (MCP 2026-07-28)";
  if (era === "legacy") return fallback ? "legacy↩ (fell back from modern)" : "legacy";
  return era === "unknown" ? "unknown (no MCP request yet)" : era;
}

const REGISTRATION_TEXT: Record<RegistrationKind, string> = {
  cimd: "CIMD (metadata document)",
  dcr: "DCR (dynamic registration)",
  pre_registered: "pre-registered",
  none: "none",
};

/** How the client got its OAuth client id, in words (after "client id "). */
export function registrationText(kind: string): string {
  return Object.hasOwn(REGISTRATION_TEXT, kind) ? REGISTRATION_TEXT[kind as RegistrationKind] : kind;
}

/** Short names for the two long steps, for narrow columns. */
export function stepLabel(step: HandshakeStep): string {
  return step === "protected_resource_metadata" ? "prm" : step === "authorization_server_metadata" ? "as_metadata" : step;
}

// ---------------------------------------------------------------------------------------------
// Text
//
// Each text view takes its recorded data through terminalSafeDeep first: every string from
// traffic (client names, paths, facts, diagnoses quoting them, replay details) becomes visible
// escapes before it is measured, cut and painted, so the columns hold and only our own colour
// sequences reach the terminal. The finished lines pass terminalSafeStyled as a last gate.

/** Lines out of a text view: our colour codes pass, any other control still in them is shown escaped. */
const finish = (out: string[]) => `${out.map(terminalSafeStyled).join("\n")}\n`;

const pad2 = (n: number) => String(n).padStart(2, "0");
const clock = (d: Date) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;

/** Local time: "14:02:03" today, "01-02 14:02" on another day (both at most 11 columns). */
export function formatTime(ms: number, now: number = Date.now()): string {
  const d = new Date(ms);
  if (d.toDateString() === new Date(now).toDateString()) return clock(d);
  return `${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

/** Local date and time with milliseconds: "2025-01-02 14:02:03.120". */
export function formatDateTime(ms: number): string {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${clock(d)}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m ${pad2(Math.floor((ms % 60_000) / 1_000))}s`;
  return `${Math.floor(ms / 3_600_000)}h ${pad2(Math.floor((ms % 3_600_000) / 60_000))}m`;
}

/** At most `width` characters (code points), with "…" when cut. */
export function truncate(text: string, width: number): string {
  const chars = [...text];
  if (chars.length <= width) return text;
  return width <= 0 ? "" : `${chars.slice(0, width - 1).join("")}…`;
}

const fit = (text: string, width: number) => truncate(text, width).padEnd(width);

/**
 * Wraps to `width` columns, each line prefixed by `indent`: the words of a text, or the given
 * pieces joined by `separator`. A piece longer than a line is cut.
 */
export function wrap(text: string | string[], width: number, indent = "", separator = " "): string[] {
  const room = Math.max(10, width - indent.length);
  const lines: string[] = [];
  let line = "";
  for (const piece of typeof text === "string" ? text.split(/\s+/).filter(Boolean) : text) {
    if (line && line.length + separator.length + piece.length > room) {
      lines.push(line);
      line = "";
    }
    line = line ? `${line}${separator}${piece}` : truncate(piece, room);
  }
  if (line) lines.push(line);
  return lines.map((l) => indent + l);
}

/** The facts worth a glance on an exchange's row: redirect URI, protocol version, origin, errors. */
export function keyFacts(e: ClassifiedExchange): string[] {
  const { facts } = e;
  const mcp = facts.mcp;
  const requested = mcp?.protocolVersionRequested ?? mcp?.protocolVersionHeader;
  const answered = mcp?.protocolVersionAnswered;
  const protocol = requested && answered && requested !== answered ? `${requested}→${answered}` : (requested ?? answered);
  return [
    mcp?.methods.length ? `rpc ${mcp.methods.join(",")}` : undefined,
    protocol && `protocol ${protocol}`,
    facts.redirectUris?.length ? `redirect_uri ${facts.redirectUris.join(" ")}` : undefined,
    facts.origin && `origin ${facts.origin}`,
    facts.oauthError && `error ${facts.oauthError}`,
    e.upstreamError && `upstream ${e.upstreamError}`,
  ].filter((f): f is string => !!f);
}

export interface TextOptions {
  width: number;
  paint: Paint;
  now?: number;
}

/**
 * The handshake list as a table that fits `width` columns (80 off a terminal). The columns are as
 * wide as what they hold (up to a cap), so the diagnosis code keeps the most room.
 */
export function formatHandshakeTable(recorded: HandshakeSummary[], { width, paint, now = Date.now() }: TextOptions): string {
  const rows = terminalSafeDeep(recorded);
  const headings = ["TIME", "ID", "ERA", "CLIENT", "OUTCOME", "FAILED STEP", "FIRST DIAGNOSIS"];
  const cells = rows.map((r) => [
    formatTime(r.startedAt, now),
    `#${r.id}`,
    eraLabel(r.era, r.eraFallback),
    r.clientFamily,
    OUTCOME_LABELS[r.outcome],
    r.failedStep ? stepLabel(r.failedStep) : "",
    r.firstCode ?? "",
  ]);
  const caps = [11, Infinity, ERA_WIDTH, 13, 9, 12]; // the diagnosis gets the rest
  const widths = caps.map((cap, i) => Math.min(cap, Math.max(headings[i]!.length, ...cells.map((c) => [...c[i]!].length))));
  const codeWidth = Math.max(10, width - widths.reduce((a, b) => a + b + 1, 0));
  const line = (row: string[], styles: Array<Style | null> = []) =>
    row
      .map((cell, i) => {
        const text = i === row.length - 1 ? truncate(cell, codeWidth) : i === 1 ? cell.padStart(widths[1]!) : fit(cell, widths[i]!);
        const style = styles[i];
        return style ? paint(style, text) : text;
      })
      .join(" ")
      .trimEnd();
  const header = paint("bold", line(headings));
  if (rows.length === 0) return `${header}\n${paint("dim", "(no handshakes)")}\n`;
  const body = cells.map((row, i) => {
    const r = rows[i]!;
    return line(row, [null, null, null, null, OUTCOME_STYLES[r.outcome], null, r.outcome === "failed" ? "red" : null]);
  });
  return finish([header, ...body]);
}

const ids = (list: number[]) => list.map((id) => `#${id}`).join(" ");

/** `show`: the handshake, its steps with timing, its exchanges with key facts, its diagnoses. */
export function formatHandshake(recorded: HandshakeDetail, { width, paint }: TextOptions): string {
  const { handshake: h, exchanges } = terminalSafeDeep(recorded);
  const byId = new Map(exchanges.map((e) => [e.id, e]));
  const endOf = (e: ClassifiedExchange) => e.startedAt + (e.durationMs ?? 0);
  const client = h.clientName ? `${h.clientFamily} (${h.clientName})` : h.clientFamily;
  const verdict = paint(OUTCOME_STYLES[h.outcome], OUTCOME_LABELS[h.outcome]) + (h.failedStep ? ` at ${h.failedStep}` : "");
  const out = [
    paint("bold", `Handshake #${h.id}`) + `  ${client}  ${verdict}`,
    `started ${formatDateTime(h.startedAt)}, lasted ${formatDuration(h.endedAt - h.startedAt)}, ${plural(h.exchangeIds.length, "exchange")}`,
    ...wrap(`era ${eraText(h.era, h.eraFallback)} · client id ${registrationText(h.registration)}`, width),
  ];
  // Replicas sharing one database: each exchange says which one it went through.
  const replicas = [...new Set(exchanges.flatMap((e) => (e.replica === undefined ? [] : [e.replica])))];
  const shared = replicas.length > 1;
  if (shared) out.push(...wrap(`through ${replicas.length} replicas: ${replicas.join(", ")}`, width));
  out.push("", paint("bold", "Steps"));
  for (const s of h.steps) {
    const own = s.exchangeIds.flatMap((id) => byId.get(id) ?? []);
    const took = own.length ? formatDuration(Math.max(...own.map(endOf)) - s.at) : "-";
    const status = paint(s.status === "ok" ? "green" : "red", fit(s.status, 6));
    out.push(`  ${status}  ${fit(s.step, 29)} +${fit(formatDuration(s.at - h.startedAt), 8)} ${fit(took, 8)} ${truncate(ids(s.exchangeIds), width - 60)}`.trimEnd());
  }
  out.push("", paint("bold", "Exchanges"));
  const idWidth = Math.max(3, ...exchanges.map((e) => String(e.id).length + 1));
  for (const e of exchanges) {
    const status = e.status === null ? "---" : String(e.status);
    const statusStyle: Style = e.status === null || e.status >= 400 ? "red" : e.status >= 300 ? "yellow" : "green";
    const right = ` ${paint(statusStyle, status)} ${fit(e.kind, 29)} ${formatDuration(e.durationMs)}`;
    const pathWidth = Math.max(10, width - idWidth - 54); // what the other columns leave
    out.push(`  ${`#${e.id}`.padStart(idWidth)} ${fit(e.method, 7)} ${fit(e.path, pathWidth)}${right}`);
    const facts = shared && e.replica !== undefined ? [`via ${e.replica}`, ...keyFacts(e)] : keyFacts(e);
    out.push(...wrap(facts, width, " ".repeat(idWidth + 3), " · ").map((line) => paint("dim", line)));
  }
  out.push("", paint("bold", "Diagnoses"));
  if (h.diagnoses.length === 0) out.push(paint("dim", "  none"));
  for (const d of h.diagnoses) {
    const style: Style = d.severity === "error" ? "red" : d.severity === "warning" ? "yellow" : "cyan";
    out.push(`  ${paint(style, d.severity.toUpperCase())} ${paint("bold", d.code)}`);
    out.push(...wrap(d.summary, width, "    "));
    out.push(...wrap(`evidence: ${ids(d.evidence)}`, width, "    "));
    out.push(...wrap(`fix: ${d.fix}`, width, "    "));
    out.push(...wrap(`reference: ${d.reference}`, width, "    "));
  }
  return finish(out);
}

/** `replay`: per step, original and re-run side by side, then the verdict. */
export function formatReplay(result: ReplayResult, { width, paint }: TextOptions): string {
  const r = terminalSafeDeep(result);
  const out = [paint("bold", `Replay of handshake #${r.handshakeId} against ${r.target}`), ""];
  out.push(paint("bold", `  ${fit("STEP", 29)} ${fit("ORIGINAL", 8)} ${fit("RE-RUN", 16)} RESULT`));
  for (const s of r.steps) {
    const rerun = s.rerun.status + (s.rerun.httpStatus !== undefined ? ` (${s.rerun.httpStatus})` : "");
    out.push(`  ${fit(s.step, 29)} ${fit(s.original.status, 8)} ${fit(rerun, 16)} ${s.same ? "same" : paint("yellow", "changed")}`);
    if (s.rerun.detail) out.push(paint("dim", `    ${truncate(s.rerun.detail, width - 4)}`));
  }
  out.push("", replayVerdict(r, paint));
  if (r.summary) out.push(...wrap(r.summary, width));
  if (r.diagnosis) out.push(...wrap(`fix: ${r.diagnosis.fix}`, width), ...wrap(`see: ${r.diagnosis.reference}`, width));
  for (const e of r.evidence) out.push(truncate(`  #${e.exchangeId} ${e.request} → ${e.status ?? "no answer"}${e.body ? `  ${e.body.replace(/\s+/g, " ")}` : ""}`, width));
  if (r.warnings.length) out.push(...r.warnings.flatMap((w) => wrap(`warning ${w.code}: ${w.summary}`, width)));
  out.push(paint("dim", `dialled: ${r.dialled.join(", ")}`));
  return finish(out);
}

export function replayVerdict(r: ReplayResult, paint: Paint = painter(false)): string {
  return r.verdict === "now_passes"
    ? paint("green", "now passes")
    : paint("red", `still fails${r.failedStep ? ` at step ${r.failedStep}` : ""}${r.code ? `: ${r.code}` : ""}`);
}

/** `tail`: one line per recorded exchange or handshake update. */
export function formatLiveLine(live: LiveMessage, { width, paint, now = Date.now() }: TextOptions): string {
  const message = terminalSafeDeep(live);
  if (message.type === "exchange") {
    const e = message.exchange;
    const status = e.status === null ? `--- ${e.upstreamError ?? ""}`.trim() : String(e.status);
    const owner = message.handshakeId === null ? "" : `  handshake #${message.handshakeId}`;
    return terminalSafeStyled(truncate(`${formatTime(e.startedAt, now)} #${e.id} ${e.method} ${e.path} ${status} ${e.kind} ${formatDuration(e.durationMs)}${owner}`, width));
  }
  const h = message.handshake;
  const code = h.diagnoses[0]?.code;
  const line = `${formatTime(h.endedAt, now)} handshake #${h.id} ${h.clientFamily} ${OUTCOME_LABELS[h.outcome]}${h.failedStep ? ` at ${h.failedStep}` : ""}${code ? `: ${code}` : ""}`;
  return terminalSafeStyled(paint(OUTCOME_STYLES[h.outcome], truncate(line, width)));
}
