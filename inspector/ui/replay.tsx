// Replay: playback steps through the recorded handshake exchange by exchange (what the client sent
// beside what it got); re-run performs the handshake again now (../replay.ts) and shows each step
// beside the original, with the verdict.
import { Box } from "ink";
import { useEffect, useState, type ReactNode } from "react";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import { replayVerdict, stepLabel, wrap } from "../format.js";
import { requestLines, responseLines } from "./exchange.js";
import { httpMark, OUTCOME_MARK, stepMark } from "./fmt.js";
import { Prompt, useKeys } from "./input.js";
import { hint, keysFor } from "./keymap.js";
import { clamp, fit, line, LineView, seg, wrapLine, type Line } from "./lines.js";
import { metaValue } from "./live.js";
import type { Detail, Replay, ReplayResult, ScreenProps } from "./types.js";
import { useRecorded } from "./use-recorded.js";

const PLAY_MS = 1200;

type Rerun = { state: "idle" } | { state: "running"; target: string } | { state: "done"; result: ReplayResult } | { state: "error"; message: string };

/** Two columns of lines, cut to `height` rows; the last row says how much was left out. */
export function sideBySide(left: Line[], right: Line[], width: number, height: number): Line[] {
  const col = Math.floor((width - 3) / 2);
  const l = left.flatMap((x) => wrapLine(x, col, "  "));
  const r = right.flatMap((x) => wrapLine(x, col, "  "));
  const rows = Math.max(l.length, r.length);
  const shown = rows > height ? height - 1 : rows;
  const out: Line[] = [];
  for (let i = 0; i < shown; i++) {
    const a = l[i] ?? [];
    const used = a.reduce((n, s) => n + s.text.length, 0);
    out.push([...a, seg(" ".repeat(Math.max(0, col - used))), seg(" │ ", "dim"), ...(r[i] ?? [])]);
  }
  if (rows > shown) out.push(line(seg(`  … ${rows - shown} more lines: ${keysFor("replay", "open")[0]} opens the exchange`, "dim")));
  return out;
}

function stepOf(detail: Detail, id: number): string {
  return detail.handshake.steps.find((s) => s.exchangeIds.includes(id))?.step ?? "other";
}

function playbackLines(detail: Detail, index: number, playing: boolean, width: number, height: number): Line[] {
  const all = detail.exchanges;
  const e: ClassifiedExchange | undefined = all[index];
  if (!e) return [line(seg("This handshake has no stored exchanges to play back.", "dim"))];
  const strip: Line = [seg(playing ? "▶ playing " : "❚❚ paused ", playing ? "ok" : "dim")];
  all.forEach((x, i) => {
    // The exchange's step decides (a probe's 401 is what it should get), else its HTTP status.
    const status = detail.handshake.steps.find((s) => s.exchangeIds.includes(x.id))?.status;
    const m = status ? stepMark(status) : httpMark(x.status);
    strip.push(seg(i === index ? `[${m.mark}]` : ` ${m.mark} `, i === index ? "bold" : m.tone));
  });
  const step = stepOf(detail, e.id);
  const stepStatus = detail.handshake.steps.find((s) => s.step === step)?.status ?? "";
  const m = stepMark(stepStatus);
  return [
    strip,
    line(
      seg(`${index + 1}/${all.length} `, "bold"),
      seg(`${m.mark} ${step}`, m.tone),
      seg(`  #${e.id} ${e.method} ${e.path} → `),
      seg(String(e.status ?? "no response"), httpMark(e.status).tone),
      seg(`  ${e.kind}`, "accent"),
    ),
    line(seg(fit("CLIENT SENT", Math.floor((width - 3) / 2)), "heading"), seg(" │ ", "dim"), seg("IT GOT", "heading")),
    ...sideBySide(requestLines(e), responseLines(e), width, height - 3),
  ];
}

function resultLines(rerun: Rerun, original: Detail, width: number): Line[] {
  if (rerun.state === "idle") return [line(seg(`Press ${keysFor("replay", "rerun")[0]} to perform this handshake again now, as the same client.`, "dim"))];
  if (rerun.state === "running") return [line(seg(`Re-running against ${rerun.target}…`, "accent"))];
  if (rerun.state === "error") return [line(seg("The re-run could not be performed: ", "bad"), seg(rerun.message))];
  const r = rerun.result;
  const passes = r.verdict === "now_passes";
  const o = OUTCOME_MARK[original.handshake.outcome];
  const cols = { step: 14, original: 18, same: 8 };
  const rerunWidth = Math.max(10, width - cols.step - cols.original - cols.same - 3);
  const out: Line[] = [
    line(seg("RE-RUN ", "heading"), seg(`against ${r.target}`), seg(`  (original: ${o.mark} ${o.label}${original.handshake.failedStep ? ` at ${original.handshake.failedStep}` : ""})`, "dim")),
    line(seg(passes ? "✓ " : "✗ ", passes ? "ok" : "bad"), seg(replayVerdict(r), passes ? "ok" : "bad")),
    ...wrap(r.summary, width - 2, "  ").map((t) => line(seg(t, "dim"))),
    ...(r.diagnosis ? wrap(`fix: ${r.diagnosis.fix}`, width - 2, "  ").map((t) => line(seg(t))) : []),
    [],
    line(seg(`${fit("STEP", cols.step)} ${fit("ORIGINAL", cols.original)} ${fit("RE-RUN", rerunWidth)} `, "dim"), seg("SAME?", "dim")),
  ];
  for (const s of r.steps) {
    const a = stepMark(s.original.status);
    const b = stepMark(s.rerun.status);
    const originalText = `${a.mark} ${s.original.status}${s.original.exchangeIds.length ? ` #${s.original.exchangeIds[0]}` : ""}`;
    const rerunText = `${b.mark} ${s.rerun.status}${s.rerun.httpStatus !== undefined ? ` ${s.rerun.httpStatus}` : ""}${s.rerun.detail ? `: ${s.rerun.detail}` : ""}`;
    out.push([
      seg(fit(stepLabel(s.step), cols.step) + " "),
      seg(fit(originalText, cols.original) + " ", a.tone),
      seg(fit(rerunText, rerunWidth) + " ", b.tone),
      seg(s.same ? "same" : "CHANGED", s.same ? "dim" : "warn"),
    ]);
  }
  return out;
}

export function ReplayView({ data, active, width, height, tick, open, id, replay }: ScreenProps & { id: number; replay: Replay }): ReactNode {
  const detail = useRecorded(() => data.getHandshake(id), [data, id, tick], id);
  const [index, setIndex] = useState(0);
  const [playing, setPlaying] = useState(false);
  const [pane, setPane] = useState<"playback" | "rerun">("playback");
  const [asking, setAsking] = useState(false);
  const [rerun, setRerun] = useState<Rerun>({ state: "idle" });
  const count = detail?.exchanges.length ?? 0;
  const at = clamp(index, 0, Math.max(0, count - 1));

  useEffect(() => {
    if (!playing || !active) return;
    const timer = setInterval(() => setIndex((i) => i + 1), PLAY_MS);
    return () => clearInterval(timer);
  }, [playing, active]);
  useEffect(() => {
    if (playing && index >= count - 1) setPlaying(false);
  }, [playing, index, count]);

  const step = (delta: number) => {
    setPane("playback");
    setPlaying(false);
    setIndex(clamp(at + delta, 0, Math.max(0, count - 1)));
  };
  const start = (target: string, token: string) => {
    setAsking(false);
    setPane("rerun");
    if (!detail) return;
    setRerun({ state: "running", target });
    replay(detail, { target, ...(token ? { token } : {}) }).then(
      (result) => setRerun({ state: "done", result }),
      (error: unknown) => setRerun({ state: "error", message: error instanceof Error ? error.message : String(error) }),
    );
  };

  useKeys(
    "replay",
    {
      prevStep: () => step(-1),
      nextStep: () => step(1),
      playPause: () => {
        setPane("playback");
        if (!playing && at >= count - 1) setIndex(0);
        setPlaying(!playing);
      },
      open: () => detail?.exchanges[at] && open({ view: "exchange", id: detail.exchanges[at]!.id }),
      rerun: () => rerun.state !== "running" && (setPlaying(false), setAsking(true)),
      togglePane: () => setPane(pane === "playback" ? "rerun" : "playback"),
    },
    active && !asking,
  );

  if (detail === undefined) return <LineView line={line(seg(`Reading handshake #${id}…`, "dim"))} />;
  if (!detail) return <LineView line={line(seg(`Handshake #${id} is not in the database. q: back`, "warn"))} />;
  const h = detail.handshake;
  const o = OUTCOME_MARK[h.outcome];
  const bodyHeight = Math.max(3, height - 2 - (asking ? 2 : 0));
  const body = pane === "playback" ? playbackLines(detail, at, playing, width, bodyHeight) : resultLines(rerun, detail, width);
  const defaultTarget = metaValue(data, "proxy_url") ?? metaValue(data, "upstream") ?? "";
  return (
    <Box flexDirection="column" width={width} height={height}>
      <LineView
        line={line(
          seg(`Replay #${h.id}`, "heading"),
          seg(` · ${h.clientFamily} · `),
          seg(`${o.mark} ${o.label}${h.failedStep ? ` at ${h.failedStep}` : ""}`, o.tone),
          seg(h.diagnoses[0] && h.outcome === "failed" ? `: ${h.diagnoses[0].code}` : "", "bold"),
          seg(`  [${pane === "playback" ? "playback" : "re-run"}]`, "accent"),
        )}
      />
      {asking && active ? (
        <Prompt
          fields={[
            { label: "Target URL", value: defaultTarget },
            { label: "Token (optional, for the MCP steps)", value: "", secret: true },
          ]}
          width={width}
          onSubmit={([target, token]) => start((target ?? "").trim(), (token ?? "").trim())}
          onCancel={() => setAsking(false)}
        />
      ) : null}
      <Box flexDirection="column" height={bodyHeight} overflow="hidden">
        {body.slice(0, bodyHeight).map((l, i) => <LineView key={i} line={l} />)}
      </Box>
      <LineView line={line(seg(hint("replay", [[["prevStep", "nextStep"], "step"], ["playPause", "play"], ["open", "open"], ["rerun", "re-run"], ["togglePane", "playback/result"], ["back", "back"]]), "dim"))} />
    </Box>
  );
}
