// Command-line flags and environment variables, declared once in a table so that
// parsing, validation and --help can never drift apart.
import { parseArgs } from "node:util";
import { isPostgresUrl } from "./database-location.js";

/** A mistake in the user's flags or environment: printed as one line, exit code 2. */
export class UsageError extends Error {}

type Kind = "string" | "boolean";

export interface OptionSpec<T> {
  flag: string;
  env?: string;
  kind: Kind;
  default: T;
  /** Shown in --help after the flag. */
  valueName?: string;
  help: string;
  parse?: (raw: string, where: string) => T;
}

type Specs = Record<string, OptionSpec<unknown>>;
export type Values<S extends Specs> = { [K in keyof S]: S[K]["default"] };

/** Every option at its default, as a settings object. */
export function defaultsOf<S extends Specs>(specs: S): Values<S> {
  return Object.fromEntries(Object.entries(specs).map(([key, spec]) => [key, spec.default])) as Values<S>;
}

export function option<T>(spec: OptionSpec<T>): OptionSpec<T> {
  return spec;
}

export function parseInteger(min: number, max: number) {
  return (raw: string, where: string): number => {
    const value = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new UsageError(`${where} must be a whole number from ${min} to ${max}, got '${raw}'`);
    }
    return value;
  };
}

export function parsePort(raw: string, where: string): number {
  return parseInteger(0, 65535)(raw, where);
}

/** "64k", "1m", "65536" → bytes. */
export function parseSize(raw: string, where: string): number {
  const match = /^\s*(\d+)\s*([kmg]i?b?|b)?\s*$/i.exec(raw);
  if (!match) throw new UsageError(`${where} must be a size such as 65536, 64k or 1m, got '${raw}'`);
  const units: Record<string, number> = { "": 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
  const unit = (match[2] ?? "").toLowerCase().charAt(0);
  return Number(match[1]) * (units[unit] ?? 1);
}

export function parseHttpUrl(raw: string, where: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`${where} must be an http:// or https:// URL, got '${raw}'`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`${where} must be an http:// or https:// URL, got '${raw}'`);
  }
  return url.toString().replace(/\/$/, "");
}

export function parseChoice<T extends string>(choices: readonly T[]) {
  return (raw: string, where: string): T => {
    if (!(choices as readonly string[]).includes(raw)) {
      throw new UsageError(`${where} must be one of ${choices.join(", ")}, got '${raw}'`);
    }
    return raw as T;
  };
}

/** A comma-separated list of header or field names (HTTP token characters). */
export function parseNameList(raw: string, where: string): string[] {
  const names = raw.split(",").map((n) => n.trim()).filter((n) => n !== "");
  const bad = names.find((n) => !/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,200}$/.test(n));
  if (bad !== undefined) throw new UsageError(`${where} must be a comma-separated list of names, got '${bad}'`);
  return names;
}

/**
 * A comma-separated list of regular expressions. Commas inside (), [] and {} belong to the
 * pattern (`\d{4,}` stays whole); a backslash escapes the next character.
 */
export function parseRegexList(raw: string, where: string): string[] {
  const patterns = splitOutsideGroups(raw);
  for (const source of patterns) {
    try {
      new RegExp(source);
    } catch (error) {
      throw new UsageError(`${where}: invalid regular expression '${source}': ${(error as Error).message.split("\n")[0]}`);
    }
  }
  return patterns;
}

function splitOutsideGroups(raw: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let inClass = false;
  let current = "";
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === "\\") {
      current += c + (raw[i + 1] ?? "");
      i++;
      continue;
    }
    if (inClass) inClass = c !== "]";
    else if (c === "[") inClass = true;
    else if (c === "(" || c === "{") depth++;
    else if ((c === ")" || c === "}") && depth > 0) depth--;
    else if (c === "," && depth === 0) {
      out.push(current.trim());
      current = "";
      continue;
    }
    current += c;
  }
  out.push(current.trim());
  return out.filter((p) => p !== "");
}

function parseBooleanEnv(raw: string, where: string): boolean {
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off|)$/i.test(raw)) return false;
  throw new UsageError(`${where} must be true or false, got '${raw}'`);
}

/**
 * Parses argv against the specs: flag beats environment variable beats default.
 * Throws UsageError with a one-line message on anything wrong.
 */
export function parseOptions<S extends Specs>(
  specs: S,
  argv: string[],
  env: NodeJS.ProcessEnv,
  command: string,
): Values<S> & { help: boolean } {
  const parserOptions = parserTable([specs]);
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: parserOptions, strict: true, allowPositionals: false });
  } catch (error) {
    throw new UsageError(`${(error as Error).message.split("\n")[0]} (see '${command} --help')`);
  }
  const values: Record<string, unknown> = { help: parsed.values.help === true };
  for (const [key, spec] of Object.entries(specs)) {
    const fromFlag = parsed.values[spec.flag];
    const fromEnv = spec.env ? env[spec.env] : undefined;
    if (fromFlag !== undefined) {
      values[key] =
        spec.kind === "boolean" ? fromFlag : spec.parse ? spec.parse(String(fromFlag), `--${spec.flag}`) : fromFlag;
    } else if (fromEnv !== undefined && fromEnv !== "") {
      values[key] =
        spec.kind === "boolean"
          ? parseBooleanEnv(fromEnv, spec.env!)
          : spec.parse
            ? spec.parse(fromEnv, spec.env!)
            : fromEnv;
    } else {
      values[key] = spec.default;
    }
  }
  return values as Values<S> & { help: boolean };
}

export function formatHelp(usage: string, summary: string, specs: Specs): string {
  const rows = Object.values(specs).map((spec) => {
    const left = `--${spec.flag}${spec.kind === "string" ? ` ${spec.valueName ?? "VALUE"}` : ""}`;
    const defaultText =
      spec.default === undefined || spec.default === false || spec.default === "" || (Array.isArray(spec.default) && spec.default.length === 0)
        ? ""
        : ` (default: ${String(spec.default)})`;
    const envText = spec.env ? `  [${spec.env}]` : "";
    return { left, right: `${spec.help}${defaultText}${envText}` };
  });
  const width = Math.max(...rows.map((r) => r.left.length), 10) + 2;
  const lines = rows.map((r) => `  ${r.left.padEnd(width)}${r.right}`);
  return `${usage}\n\n${summary}\n\nOptions (flag, else environment variable, else default):\n${lines.join("\n")}\n  ${"--help".padEnd(width)}Show this help\n`;
}

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** --log-level, shared by every command. */
export function logLevelOption(note = "") {
  return option({
    flag: "log-level",
    env: "MCP_LENS_LOG_LEVEL",
    kind: "string",
    default: "info" as (typeof LOG_LEVELS)[number],
    valueName: "LEVEL",
    help: `Log level: ${LOG_LEVELS.join(", ")}${note}`,
    parse: parseChoice(LOG_LEVELS),
  });
}

/**
 * The subcommand wherever it stands among the options (`inspector --db X list` works as
 * `inspector list --db X`): the first positional argument, knowing which flags take a value.
 * The other arguments keep their order.
 */
export function findCommand(argv: string[], specsList: readonly Specs[]): { command: string | undefined; rest: string[] } {
  const first = positionalIndexes(argv, specsList)[0];
  if (first === undefined) return { command: undefined, rest: argv };
  return { command: argv[first], rest: argv.filter((_, i) => i !== first) };
}

/** Separates positional arguments (a handshake id, a URL) from flags, knowing which flags take a value. */
export function splitPositionals(specs: Specs, argv: string[]): { positionals: string[]; flags: string[] } {
  const positional = new Set(positionalIndexes(argv, [specs]));
  return { positionals: argv.filter((_, i) => positional.has(i)), flags: argv.filter((_, i) => !positional.has(i)) };
}

/** Where the positional arguments stand in argv, knowing which flags take a value. */
function positionalIndexes(argv: string[], specsList: readonly Specs[]): number[] {
  const { tokens } = parseArgs({ args: argv, options: parserTable(specsList), strict: false, allowPositionals: true, tokens: true });
  return tokens.flatMap((t) => (t.kind === "positional" ? [t.index] : []));
}

/** node:util parseArgs's option table for the specs, with --help. */
function parserTable(specsList: readonly Specs[]): Record<string, { type: Kind }> {
  const options: Record<string, { type: Kind }> = { help: { type: "boolean" } };
  for (const specs of specsList) for (const spec of Object.values(specs)) options[spec.flag] = { type: spec.kind };
  return options;
}

// Options the proxy and the inspector share: the same flag and variable name the same thing.

/** The recording database: the proxy writes it, the inspector reads it. */
/** A file path as it is; a PostgreSQL URL must parse (its password is never repeated back). */
function parseDatabase(raw: string, where: string): string {
  if (!isPostgresUrl(raw)) return raw;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`${where} is not a valid postgres:// URL`);
  }
  if (url.hostname === "" && !url.searchParams.has("host")) throw new UsageError(`${where} must name a host: postgres://user:password@host:5432/database`);
  return raw;
}

export const RECORDING_DB_OPTION = option({
  flag: "db",
  env: "MCP_LENS_DB",
  kind: "string",
  default: "./data/mcp-lens.db",
  valueName: "PATH|URL",
  help: "SQLite file for recorded exchanges (its directory is created when its parent exists), or a postgres://user:password@host/db URL that several replicas share",
  parse: parseDatabase,
});

/** The admin port's token: the proxy requires it, the inspector sends it to /live. */
export const ADMIN_TOKEN_OPTION = option({
  flag: "admin-token",
  env: "MCP_LENS_ADMIN_TOKEN",
  kind: "string",
  default: "",
  valueName: "TOKEN",
  help: "Require this bearer token for /metrics and /live (/health stays open for health checks)",
});
