// One exchange: request and response headers and bodies (JSON pretty-printed, SSE events listed,
// forms and queries as key = value), [redacted:…] markers highlighted, truncation stated, and
// the request as a curl command to select and copy.
import { Box } from "ink";
import { useMemo, useState, type ReactNode } from "react";
import type { ClassifiedExchange, HeaderPairs, RecordedBody } from "../../analysis/exchange.js";
import { curlCommand } from "../export.js";
import { formatDuration, formatTime } from "../format.js";
import { terminalSafe } from "../../common/terminal-safe.js";
import { useKeys } from "./input.js";
import { hint } from "./keymap.js";
import { line, LineView, markRedacted, scrollBy, ScrollLines, seg, wrapLine, type Line } from "./lines.js";
import { metaValue } from "./live.js";
import type { ScreenProps } from "./types.js";
import { useRecorded } from "./use-recorded.js";

const header = (pairs: HeaderPairs, name: string) => pairs.find(([n]) => n.toLowerCase() === name)?.[1];
const text = (t: string, indent = "  ", tone?: Parameters<typeof seg>[1]): Line => [seg(indent), ...markRedacted(t, tone)];

function pretty(raw: string): string[] | null {
  const trimmed = raw.trim();
  if (!trimmed.startsWith("{") && !trimmed.startsWith("[")) return null;
  try {
    return JSON.stringify(JSON.parse(trimmed), null, 2).split("\n");
  } catch {
    return null;
  }
}

function decodeForm(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, " "));
  } catch {
    return value;
  }
}

/** key = value lines of a query string or form body. */
export function pairLines(raw: string, indent: string): Line[] {
  return raw
    .split("&")
    .filter(Boolean)
    .map((pair) => {
      const [k, ...v] = pair.split("=");
      return [seg(indent), seg(decodeForm(k ?? ""), "accent"), seg(" = ", "dim"), ...markRedacted(decodeForm(v.join("=")))];
    });
}

/** The events of a recorded text/event-stream body. */
function sseLines(raw: string, total: number | null): Line[] {
  const events = raw.split(/\r?\n\r?\n/).filter((b) => b.trim());
  const out: Line[] = [line(seg(`  SSE: ${total ?? events.length} event${(total ?? events.length) === 1 ? "" : "s"}${total !== null && total > events.length ? `, the first ${events.length} recorded` : ""}`, "dim"))];
  events.forEach((block, i) => {
    const fields = block.split(/\r?\n/);
    const name = fields.find((f) => f.startsWith("event:"))?.slice(6).trim() || "message";
    const id = fields.find((f) => f.startsWith("id:"))?.slice(3).trim();
    out.push(line(seg(`  event ${i + 1}`, "accent"), seg(` ${name}${id ? ` id=${id}` : ""}`, "dim")));
    const data = fields.filter((f) => f.startsWith("data:")).map((f) => f.slice(5).replace(/^ /, "")).join("\n");
    for (const l of pretty(data) ?? data.split("\n")) out.push(text(l, "    "));
  });
  return out;
}

export function bodyLines(body: RecordedBody, contentType: string | undefined, sseEvents: number | null = null): Line[] {
  if (body.encoding === "omitted") return [line(seg(`  body: ${body.size} bytes, not recorded (not text, or an encoding that cannot be decoded)`, "dim"))];
  if (body.text === null) return [line(seg(body.size > 0 ? `  body: ${body.size} bytes, not recorded` : "  (no body)", "dim"))];
  const ct = (contentType ?? "").toLowerCase();
  const about = [`${body.size} bytes`, ct.split(";")[0], body.decoded ? `decoded from ${body.decoded}` : "", body.encoding === "base64" ? "binary, shown as base64" : ""];
  const kept = body.encoding === "base64" ? Buffer.from(body.text, "base64").length : Buffer.byteLength(body.text);
  const truncated = line(seg(`  ⋯ truncated at ${kept} of ${body.size} bytes`, "warn"));
  const out: Line[] = [line(seg(`  body: ${about.filter(Boolean).join(", ")}`, "dim"))];
  if (body.truncated) out.push(truncated);
  if (body.encoding === "base64") out.push(text(body.text));
  else if (ct.includes("text/event-stream")) out.push(...sseLines(body.text, sseEvents));
  else if (ct.includes("application/x-www-form-urlencoded")) out.push(...pairLines(body.text, "  "));
  else for (const l of pretty(body.text) ?? body.text.split(/\r?\n/)) out.push(text(l));
  if (body.truncated) out.push(truncated);
  return out;
}

function headerBlock(pairs: HeaderPairs): Line[] {
  return pairs.map(([name, value]) => [seg("  "), seg(`${name}: `, "dim"), ...markRedacted(value)]);
}

/** What the client sent. */
export function requestLines(e: ClassifiedExchange): Line[] {
  const out: Line[] = [line(seg("REQUEST ", "heading"), seg(`${e.method} ${e.path}`, "bold"))];
  if (e.query) out.push(line(seg("  query:", "dim")), ...pairLines(e.query, "    "));
  out.push(...headerBlock(e.requestHeaders));
  // What the client sent in place of the forwarding headers the proxy set: its claim, not a fact.
  if (e.claimedHeaders?.length) {
    out.push(line(seg("  client claimed (replaced by mcp-lens, not forwarded):", "dim")));
    out.push(...headerBlock(e.claimedHeaders.map(([n, v]) => [terminalSafe(n), terminalSafe(v)])).map((l) => [seg("  "), ...l]));
  }
  out.push(...bodyLines(e.requestBody, header(e.requestHeaders, "content-type")));
  return out;
}

/** What it got. */
export function responseLines(e: ClassifiedExchange): Line[] {
  if (!e.responseHeaders) {
    const why = e.upstreamError ? `upstream ${e.upstreamError}` : e.aborted ? "the client went away first" : "none recorded";
    return [line(seg("RESPONSE ", "heading"), seg(`none: ${why}`, "bad"))];
  }
  const out: Line[] = [
    line(
      seg("RESPONSE ", "heading"),
      seg(String(e.status ?? "---"), e.status !== null && e.status < 400 ? "ok" : "bad"),
      seg(`  ${formatDuration(e.durationMs)}, first byte ${formatDuration(e.ttfbMs)}${e.aborted ? ", client went away" : ""}${e.upstreamError ? `, upstream ${e.upstreamError}` : ""}`, "dim"),
    ),
  ];
  out.push(...headerBlock(e.responseHeaders));
  out.push(...bodyLines(e.responseBody, header(e.responseHeaders, "content-type"), e.sseEvents));
  return out;
}

function factLines(e: ClassifiedExchange): Line[] {
  return [line(seg("FACTS ", "heading"), seg(`kind ${e.kind}`, "accent")), ...JSON.stringify(e.facts, null, 2).split("\n").map((l) => text(l))];
}

/** `upstream`: where the proxy forwarded (recorded), the curl's URL; never the client's Host. */
function curlBox(e: ClassifiedExchange, width: number, upstream: string | undefined): Line[] {
  const rule = "─".repeat(Math.max(0, width - 1));
  return [
    line(seg("COPY AS CURL", "heading"), seg("  select the lines between the rules with the mouse", "dim")),
    line(seg(`┌${rule}`, "dim")),
    ...curlCommand(e, upstream).trimEnd().split("\n").map((l) => (l.startsWith("#") ? line(seg(l, "dim")) : [...markRedacted(l)])),
    line(seg(`└${rule}`, "dim")),
  ];
}

export function ExchangeView({ data, active, width, height, tick, id }: ScreenProps & { id: number }): ReactNode {
  const entries = useRecorded(() => data.exchangeEntries([id]), [data, id, tick], id);
  const entry = entries?.[0] ?? null;
  const [curl, setCurl] = useState(false);
  const [offset, setOffset] = useState(0);
  const e = entry?.exchange ?? null;
  const lines = useMemo(() => {
    if (!e) return [];
    const all = curl ? curlBox(e, width, metaValue(data, "upstream") ?? undefined) : [...requestLines(e), [], ...responseLines(e), [], ...factLines(e)];
    // Curl lines are wrapped flush left so a selection copies them as they are.
    return all.flatMap((l) => wrapLine(l, width, curl ? "" : "      "));
  }, [e, curl, width, data]);
  const viewHeight = Math.max(1, height - 3);
  const scroll = (delta: number) => setOffset(scrollBy(offset, delta, lines.length, viewHeight));

  useKeys(
    "exchange",
    {
      down: () => scroll(1),
      up: () => scroll(-1),
      pageDown: () => scroll(viewHeight - 1),
      pageUp: () => scroll(-(viewHeight - 1)),
      top: () => setOffset(0),
      bottom: () => scroll(lines.length),
      curl: () => {
        setCurl(!curl);
        setOffset(0);
      },
    },
    active,
  );

  if (entries === undefined) return <LineView line={line(seg(`Reading exchange #${id}…`, "dim"))} />;
  if (!e) return <LineView line={line(seg(`Exchange #${id} is not in the database (pruned, or the id is wrong). q: back`, "warn"))} />;
  const more = lines.length > offset + viewHeight ? `  ↓ ${lines.length - offset - viewHeight} more lines` : "";
  return (
    <Box flexDirection="column" width={width} height={height}>
      <LineView
        line={line(
          seg(`Exchange #${e.id}`, "heading"),
          seg(` · ${e.kind}${entry?.handshakeId != null ? ` · handshake #${entry.handshakeId}` : ""} · ${formatTime(e.startedAt)}${e.clientAddr ? ` from ${e.clientAddr}` : ""}${e.replica ? ` via ${e.replica}` : ""}`),
        )}
      />
      <LineView
        line={line(
          seg(`${e.method} ${e.path}${e.query ? "?…" : ""} → `),
          seg(e.status === null ? "no response" : String(e.status), e.status !== null && e.status < 400 ? "ok" : "bad"),
          seg(` · ${formatDuration(e.durationMs)}`, "dim"),
        )}
      />
      <ScrollLines lines={lines} offset={Math.min(offset, Math.max(0, lines.length - viewHeight))} height={viewHeight} />
      <LineView line={line(seg(hint("exchange", [[["down", "up", "pageDown"], "scroll"], ["curl", curl ? "back to the exchange" : "copy as curl"], ["help", "help"], ["back", "back"]]) + more, "dim"))} />
    </Box>
  );
}
