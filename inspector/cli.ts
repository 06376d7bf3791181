#!/usr/bin/env node
// `inspector` (also `mcp-lens inspector`): which connector handshakes failed, where, why and how
// to fix them, from the recording database opened read-only. Without a command, the interactive
// view; with one (list, show, replay, export, tail), output for scripts. Options come from tables
// (common/config.ts), so every flag has its --help line and errors are one line: exit 2 for bad
// input, 1 for a failure (an unknown id, a database that cannot be read, a replay that still fails).
import { realpathSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  ADMIN_TOKEN_OPTION,
  findCommand,
  formatHelp,
  option,
  parseChoice,
  parseHttpUrl,
  parseInteger,
  parseOptions,
  RECORDING_DB_OPTION,
  splitPositionals,
  UsageError,
  type Values,
} from "../common/config.js";
import type { ClientEra } from "./clients.js";
import type { HandshakeDetail } from "./data.js";
import { followTraffic, liveUrlOf } from "./follow.js";
import { openRecording } from "./open-recording.js";
import type { Recording } from "./recording.js";
import { toCurl, toHar } from "./export.js";
import {
  colorEnabled,
  formatHandshake,
  formatHandshakeTable,
  formatLiveLine,
  formatReplay,
  handshakeJson,
  liveMessageJson,
  painter,
  type TextOptions,
} from "./format.js";
import { jsonSafe, terminalSafe, terminalSafeLines } from "../common/terminal-safe.js";

type Specs = Parameters<typeof parseOptions>[0];

/** An expected failure (unknown id, replay still failing): one line, exit code 1. */
class Failure extends Error {}

// ---------------------------------------------------------------------------------------------
// Options

const DB = { ...RECORDING_DB_OPTION, help: "Recording database of the proxy, opened read-only" };
const JSON_OUTPUT = option({ flag: "json", kind: "boolean", default: false, help: "JSON output (the shape is in the README)" });
const ADMIN = {
  adminUrl: option({
    flag: "admin-url",
    env: "MCP_LENS_ADMIN_URL",
    kind: "string",
    default: "",
    valueName: "URL",
    help: "The proxy's admin port, whose WebSocket /live is followed (default: the admin_url the proxy recorded)",
    parse: parseHttpUrl,
  }),
  adminToken: { ...ADMIN_TOKEN_OPTION, help: "Bearer token for the proxy's /live (its --admin-token)" },
};

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** "30m", "1h", "2d" ago, or an ISO date → epoch ms. */
function parseSince(raw: string, where: string): number {
  const relative = /^(\d+)\s*([smhdw])$/i.exec(raw.trim());
  if (relative) return Date.now() - Number(relative[1]) * UNIT_MS[relative[2]!.toLowerCase()]!;
  const absolute = /^\d{4}-\d{2}-\d{2}/.test(raw) ? Date.parse(raw) : NaN;
  if (Number.isNaN(absolute)) throw new UsageError(`${where} must be a duration such as 30m, 1h or 2d, or an ISO date, got '${raw}'`);
  return absolute;
}

/** "https://a.example, http://b.example:8080" → the same origins, normalised and comma-joined. */
function parseOrigins(raw: string, where: string): string {
  return raw
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean)
    .map((entry) => {
      const url = new URL(parseHttpUrl(entry, where));
      if (url.username || url.password || url.pathname !== "/" || url.search || url.hash) {
        throw new UsageError(`${where} takes an origin (scheme://host[:port]), got '${entry}'`);
      }
      return url.origin;
    })
    .join(",");
}

/** A repeatable flag: every `--name VALUE` / `--name=VALUE` joined into one comma-separated value. */
function joinRepeated(argv: string[], name: string): string[] {
  const values: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === `--${name}` && i + 1 < argv.length) values.push(argv[++i]!);
    else if (arg.startsWith(`--${name}=`)) values.push(arg.slice(name.length + 3));
    else rest.push(arg);
  }
  return values.length ? [...rest, `--${name}=${values.join(",")}`] : rest;
}

function parseId(raw: string): number {
  const match = /^#?(\d{1,15})$/.exec(raw);
  if (!match) throw new UsageError(`'${raw}' is not a handshake id (a number, e.g. 123)`);
  return Number(match[1]);
}

const LIST_OPTIONS = {
  db: DB,
  failed: option({ flag: "failed", kind: "boolean", default: false, help: "Only failed handshakes" }),
  client: option({ flag: "client", kind: "string", default: "", valueName: "CLIENT", help: "Only this client (family or name, e.g. claude.ai, chatgpt)" }),
  since: option<number | undefined>({
    flag: "since",
    kind: "string",
    default: undefined,
    valueName: "WHEN",
    help: "Only handshakes started since then: 30m, 1h, 2d ago or an ISO date",
    parse: parseSince,
  }),
  text: option({ flag: "text", kind: "string", default: "", valueName: "TEXT", help: "Only those mentioning TEXT: client, code, summary, failed step or a path" }),
  limit: option({ flag: "limit", kind: "string", default: 50, valueName: "N", help: "At most N handshakes, newest first", parse: parseInteger(1, 1_000_000) }),
  json: JSON_OUTPUT,
};

const SHOW_OPTIONS = { db: DB, json: JSON_OUTPUT };

/** inspector/clients.ts's CLIENT_ERAS, named here so that the other commands need not load the re-run's clients. */
const CLIENT_ERAS = ["modern", "legacy", "dual"] as const satisfies readonly ClientEra[];

const REPLAY_OPTIONS = {
  db: DB,
  target: option({
    flag: "target",
    kind: "string",
    default: "",
    valueName: "URL",
    help: "Where to re-run the handshake (default: the proxy that recorded it, so the re-run is recorded too; else its upstream)",
    parse: parseHttpUrl,
  }),
  token: option({
    flag: "token",
    env: "MCP_LENS_REPLAY_TOKEN",
    kind: "string",
    default: "",
    valueName: "TOKEN",
    help: "A bearer (or Coda API) token for the MCP steps, sent only to the target; without it the re-run stops at the sign-in page",
  }),
  allowOrigin: option({
    flag: "allow-origin",
    env: "MCP_LENS_REPLAY_ALLOW_ORIGINS",
    kind: "string",
    default: "",
    valueName: "ORIGIN",
    help: "Also dial this origin (e.g. https://register.example.com) when the server sends the re-run there; repeatable or comma-separated. The target and the authorization server its metadata names are always dialled; others are reported, not followed",
    parse: parseOrigins,
  }),
  timeout: option<number | undefined>({
    flag: "timeout",
    kind: "string",
    default: undefined,
    valueName: "MS",
    help: "Per-request timeout of the re-run",
    parse: parseInteger(1, 600_000),
  }),
  era: option<ClientEra | undefined>({
    flag: "era",
    kind: "string",
    default: undefined,
    valueName: "ERA",
    help:
      "The client the re-run plays: modern (2026-07-28: server/discover then tools/list, each request carrying _meta and the MCP-Protocol-Version and Mcp-Method headers; no initialize, session or GET stream), " +
      "legacy (initialize, notifications/initialized, a session), or dual (modern first; initialize after a 4xx without a modern error, as a dual-era client). " +
      "Default: the era it was recorded in (dual when its client fell back to initialize; legacy when unknown, i.e. no MCP request was recorded)",
    parse: parseChoice(CLIENT_ERAS),
  }),
  json: JSON_OUTPUT,
};

const EXPORT_OPTIONS = {
  db: DB,
  har: option({ flag: "har", kind: "boolean", default: false, help: "HAR 1.2 (redacted as stored), for browser devtools and HAR viewers" }),
  curl: option({ flag: "curl", kind: "boolean", default: false, help: "One curl command per exchange (redacted values stay markers to replace)" }),
  output: option({ flag: "output", kind: "string", default: "", valueName: "FILE", help: "Write to FILE instead of stdout (also -o FILE)" }),
};

const TAIL_OPTIONS = { db: DB, ...ADMIN, json: JSON_OUTPUT };
const INTERACTIVE_OPTIONS = { db: DB, ...ADMIN };

/** Short flags, spelled out before parsing. */
const ALIASES: Record<string, string> = { "-o": "--output", "-h": "--help" };

// ---------------------------------------------------------------------------------------------
// Commands

interface Command<S extends Specs> {
  name: string;
  /** For the command list of --help. */
  brief: string;
  /** Takes a handshake ID as its one argument. */
  takesId: boolean;
  usage: string;
  summary: string;
  options: S;
  run(settings: Values<S>, id: number): Promise<number>;
}

/** How the user called us, for messages: "inspector" or "mcp-lens inspector". */
let prog = "inspector";

const write = (text: string) => process.stdout.write(text);

function textOptions(stream: NodeJS.WriteStream): TextOptions {
  return { width: stream.isTTY && stream.columns ? Math.max(40, stream.columns) : 80, paint: painter(colorEnabled(stream)) };
}

// JSON escapes C0 but leaves C1 and bidi raw: jsonSafe escapes those too, losslessly.
const json = (value: unknown) => write(`${jsonSafe(JSON.stringify(value, null, 2))}\n`);

/** Opens the database for the duration of `use`. */
async function withData<T>(db: string, use: (data: Recording) => T | Promise<T>): Promise<T> {
  const data = await openRecording(db);
  try {
    return await use(data);
  } finally {
    await data.close();
  }
}

async function handshakeOrFail(data: Recording, id: number): Promise<HandshakeDetail> {
  const detail = await data.getHandshake(id);
  if (!detail) throw new Failure(`no handshake #${id} in ${data.path} (see '${prog} list')`);
  return detail;
}

const LIST: Command<typeof LIST_OPTIONS> = {
  name: "list",
  brief: "Handshakes, newest first, with filters",
  takesId: false,
  usage: "list [options]",
  summary: "Handshakes newest first: time, id, client, outcome, failed step and first diagnosis.",
  options: LIST_OPTIONS,
  run: (s) =>
    withData(s.db, async (data) => {
      const filter = { failedOnly: s.failed, client: s.client, sinceMs: s.since, text: s.text, limit: s.limit };
      if (s.json) json((await data.findHandshakes(filter)).map((h) => handshakeJson(h)));
      else write(formatHandshakeTable(await data.listHandshakes(filter), textOptions(process.stdout)));
      return 0;
    }),
};

const SHOW: Command<typeof SHOW_OPTIONS> = {
  name: "show",
  brief: "One handshake: steps, exchanges, diagnoses",
  takesId: true,
  usage: "show ID [options]",
  summary: "One handshake: its steps with timing, its exchanges with their key facts, its diagnoses with evidence, fix and reference.",
  options: SHOW_OPTIONS,
  run: (s, id) =>
    withData(s.db, async (data) => {
      const detail = await handshakeOrFail(data, id);
      if (s.json) json(handshakeJson(detail.handshake, detail.exchanges));
      else write(formatHandshake(detail, textOptions(process.stdout)));
      return 0;
    }),
};

const REPLAY: Command<typeof REPLAY_OPTIONS> = {
  name: "replay",
  brief: "Re-run a handshake now and compare",
  takesId: true,
  usage: "replay ID [options]",
  summary:
    "Re-run a recorded handshake now: doctor's checks (name, TCP, TLS, then the handshake up to the sign-in page, or with --token the MCP requests and the stream), played as the same client and in the era it was recorded in (--era to choose), and compared step by step with the original. Exit code 0 when it now passes, 1 when it still fails.",
  options: REPLAY_OPTIONS,
  async run(s, id) {
    const { detail, target } = await withData(s.db, async (data) => {
      const meta = data.meta();
      const target = s.target || meta.proxy_url || meta.upstream;
      if (!target) throw new Failure(`${data.path} records no proxy_url or upstream: pass --target URL`);
      return { detail: await handshakeOrFail(data, id), target };
    });
    const allowOrigins = s.allowOrigin ? s.allowOrigin.split(",") : [];
    // Loaded here, like the interactive view: the re-run's clients (the v2 SDK) cost the other commands' start-up nothing.
    const { replayHandshake } = await import("./replay.js");
    const result = await replayHandshake(detail, {
      target,
      allowOrigins,
      ...(s.token ? { token: s.token } : {}),
      ...(s.timeout ? { timeoutMs: s.timeout } : {}),
      ...(s.era ? { era: s.era } : {}),
    });
    if (s.json) json(result);
    else write(formatReplay(result, textOptions(process.stdout)));
    return result.verdict === "now_passes" ? 0 : 1;
  },
};

const EXPORT: Command<typeof EXPORT_OPTIONS> = {
  name: "export",
  brief: "Its exchanges as HAR 1.2 or curl commands",
  takesId: true,
  usage: "export ID --har|--curl [-o FILE]",
  summary: "A handshake's exchanges as HAR 1.2 or as curl commands, redacted as stored.",
  options: EXPORT_OPTIONS,
  async run(s, id) {
    if (s.har === s.curl) throw new UsageError(`export needs one of --har or --curl (see '${prog} export --help')`);
    // URLs are the upstream the proxy recorded it forwarded to, never what a client's headers claim.
    const { detail, upstream } = await withData(s.db, async (data) => ({ detail: await handshakeOrFail(data, id), upstream: data.meta().upstream }));
    const text = s.har ? `${jsonSafe(JSON.stringify(toHar(detail, upstream), null, 2))}\n` : toCurl(detail, upstream);
    if (s.output) writeFileSync(s.output, text);
    else write(text);
    return 0;
  },
};

const TAIL: Command<typeof TAIL_OPTIONS> = {
  name: "tail",
  brief: "Live traffic, one line per event",
  takesId: false,
  usage: "tail [options]",
  summary: "Live traffic, one line per exchange and per handshake update: the proxy's /live feed, else polling the database. Ctrl-C stops.",
  options: TAIL_OPTIONS,
  run: (s) =>
    withData(s.db, async (data) => {
      const text = textOptions(process.stdout);
      const note = (line: string) => process.stderr.write(`${prog}: ${terminalSafe(line)}\n`);
      const follow = followTraffic(data, {
        liveUrl: liveUrlOf(data, s.adminUrl),
        adminToken: s.adminToken,
        onMessage: (m) => write(`${s.json ? jsonSafe(JSON.stringify(liveMessageJson(m))) : formatLiveLine(m, text)}\n`),
        onMode: (mode, reason) => note(mode === "live" ? reason : `${reason}; polling ${data.path} read-only every 500 ms`),
        onError: (error) => note(`cannot read ${data.path}: ${error.message}`),
      });
      await new Promise<void>((resolve) => {
        process.once("SIGINT", resolve);
        process.once("SIGTERM", resolve);
        process.stdout.once("error", resolve); // a closed pipe (| head)
      });
      follow.close();
      return 0;
    }),
};

const COMMANDS = { list: LIST, show: SHOW, replay: REPLAY, export: EXPORT, tail: TAIL };

function mainHelp(): string {
  const rows = Object.values(COMMANDS).map((c) => `  ${c.usage.replace(/ \[options\]$/, "").padEnd(34)}${c.brief}`);
  const summary = `The mcp-lens inspector: which connector handshakes failed, where, why and how to fix them,
from the proxy's recording database (opened read-only, never written).

Commands, for scripts:
${rows.join("\n")}

Run '${prog} <command> --help' for the options of each command. Without a command: the
interactive view (it needs a terminal), with the options below.`;
  return formatHelp(`Usage: ${prog} [command] [options]`, summary, INTERACTIVE_OPTIONS);
}

async function runCommand<S extends Specs>(command: Command<S>, argv: string[]): Promise<number> {
  const usage = `${prog} ${command.name}`;
  const { positionals, flags } = splitPositionals(command.options, joinRepeated(argv, "allow-origin"));
  const settings = parseOptions(command.options, flags, process.env, usage);
  if (settings.help) {
    write(formatHelp(`Usage: ${prog} ${command.usage}`, command.summary, command.options));
    return 0;
  }
  const expected = command.takesId ? 1 : 0;
  if (positionals.length < expected) throw new UsageError(`${usage} needs a handshake ID (see '${usage} --help')`);
  if (positionals.length > expected) throw new UsageError(`unexpected argument '${positionals[expected]}' (see '${usage} --help')`);
  return command.run(settings, command.takesId ? parseId(positionals[0]!) : 0);
}

async function interactive(argv: string[]): Promise<number> {
  const s = parseOptions(INTERACTIVE_OPTIONS, argv, process.env, prog);
  if (s.help) {
    write(mainHelp());
    return 0;
  }
  if (!process.stdout.isTTY || !process.stdin.isTTY) {
    process.stderr.write(`${mainHelp()}\n`);
    throw new UsageError(`the interactive view needs a terminal; in scripts use a command: ${Object.keys(COMMANDS).join(", ")}`);
  }
  const { runInteractive } = await import("./ui/app.js");
  await withData(s.db, (data) =>
    runInteractive({ data, dbPath: data.path, liveUrl: liveUrlOf(data, s.adminUrl), adminToken: s.adminToken || undefined }),
  );
  return 0;
}

/** Runs the inspector; returns the exit code, having printed any error as one line. */
export async function main(argv: string[], invokedAs = "inspector"): Promise<number> {
  prog = invokedAs;
  const args = argv.map((a) => ALIASES[a] ?? a);
  try {
    const { command: first, rest } = findCommand(args, [INTERACTIVE_OPTIONS, ...Object.values(COMMANDS).map((c) => c.options as Specs)]);
    if (first === "help") return await interactive(["--help"]);
    if (first === undefined) return await interactive(args);
    const command = Object.hasOwn(COMMANDS, first) ? (COMMANDS[first as keyof typeof COMMANDS] as Command<Specs>) : undefined;
    if (!command) throw new UsageError(`unknown command '${first}' (see '${prog} --help')`);
    return await runCommand(command, rest);
  } catch (error) {
    const e = error as Error;
    // Messages may quote recorded text or a server's answer (replay): shown escaped.
    process.stderr.write(`${prog}: ${terminalSafe(e.message.replace(/\s*\n\s*/g, " "))}\n`);
    if (process.env.MCP_LENS_DEBUG && !(e instanceof UsageError || e instanceof Failure)) process.stderr.write(`${terminalSafeLines(String(e.stack))}\n`);
    return e instanceof UsageError ? 2 : 1;
  }
}

const entry = process.argv[1];
if (entry !== undefined && realpathSync(entry) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}
