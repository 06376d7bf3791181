// `mcp-lens doctor URL`: will Claude.ai, ChatGPT, Claude Code… connect to this MCP server, and if
// not, why? Options come from a table (common/config.ts), like every mcp-lens command. Exit code
// 0 when every client and era checked connects (or, without --token, is ready for the user's
// sign-in), 1 otherwise, 2 on bad usage.
import { writeFileSync } from "node:fs";
import { formatHelp, option, parseChoice, parseHttpUrl, parseInteger, parseOptions, splitPositionals, UsageError } from "../../common/config.js";
import { jsonSafe, terminalSafe } from "../../common/terminal-safe.js";
import { CLIENT_ERAS, type ClientEra } from "../clients.js";
import { colorEnabled, painter } from "../format.js";
import { runDoctor } from "./doctor.js";
import { DOCTOR_PROFILES, PROFILE_NAMES } from "./profiles.js";
import { doctorJunit, formatDoctor } from "./report.js";

const ERA_CHOICES = [...CLIENT_ERAS, "all"] as const;

function parseProfiles(raw: string, where: string): string[] {
  const names = raw.split(",").map((n) => n.trim()).filter(Boolean);
  const unknown = names.filter((n) => !PROFILE_NAMES.includes(n));
  if (names.length === 0 || unknown.length) throw new UsageError(`${where} takes client names among ${PROFILE_NAMES.join(", ")}, got '${raw}'`);
  return [...new Set(names)];
}

const DOCTOR_OPTIONS = {
  as: option<string[]>({
    flag: "as",
    kind: "string",
    default: [],
    valueName: "CLIENTS",
    help: `The clients to play, comma-separated: ${PROFILE_NAMES.join(", ")} (default: all)`,
    parse: parseProfiles,
  }),
  era: option<(typeof ERA_CHOICES)[number] | undefined>({
    flag: "era",
    kind: "string",
    default: undefined,
    valueName: "ERA",
    help: "modern (2026-07-28 only), legacy (initialize), dual (modern first, initialize as a fallback) or all three; default: the era each client speaks",
    parse: parseChoice(ERA_CHOICES),
  }),
  token: option({
    flag: "token",
    env: "MCP_LENS_DOCTOR_TOKEN",
    kind: "string",
    default: "",
    valueName: "TOKEN",
    help: "A bearer the server accepts: also check the authenticated MCP requests (sent to URL's origin only)",
  }),
  clientMetadataUrl: option({
    flag: "client-metadata-url",
    kind: "string",
    default: "",
    valueName: "URL",
    help: "Your client's Client ID Metadata Document (https): claude-code and v2-sdk use it as their client_id where the server advertises support, instead of registering",
    parse: parseHttpUrl,
  }),
  call: option({ flag: "call", kind: "boolean", default: false, help: "With --token, also call the first listed tool (it may have side effects)" }),
  timeout: option<number | undefined>({ flag: "timeout", kind: "string", default: undefined, valueName: "MS", help: "Per-request timeout (default: each client's, 10 s)", parse: parseInteger(1, 600_000) }),
  json: option({ flag: "json", kind: "boolean", default: false, help: "JSON output (the shape is in the README)" }),
  db: option({
    flag: "db",
    kind: "string",
    default: "",
    valueName: "FILE|URL",
    help: "Also store the checks' exchanges and handshakes (redacted) in this recording database, for 'inspector list/show --db …': an SQLite file of its own (not the proxy's live one), or the postgres:// database replicas share",
  }),
  junit: option({ flag: "junit", kind: "string", default: "", valueName: "FILE", help: "Also write a JUnit XML report to FILE, for CI" }),
};

const SUMMARY = `Performs the connector handshake against URL (an MCP endpoint, e.g. https://host/mcp) the way
each client performs it, after the name, TCP and TLS checks, and reports per client and era
whether it would connect: the step that fails, the diagnosis, the fix and the exchanges that
prove it (redacted). Without --token it goes as far as a client goes without a person: metadata,
registration, the authorize request up to the sign-in page. It dials URL's origin and the
authorization server the server's metadata names, nothing else.
Exit code 0 when every check passes, 1 when one does not, 2 on bad usage.`;

export async function main(argv: string[], prog = "mcp-lens doctor"): Promise<number> {
  try {
    const { positionals, flags } = splitPositionals(DOCTOR_OPTIONS, argv.map((a) => (a === "-h" ? "--help" : a)));
    const s = parseOptions(DOCTOR_OPTIONS, flags, process.env, prog);
    if (s.help) {
      process.stdout.write(formatHelp(`Usage: ${prog} URL [options]`, SUMMARY, DOCTOR_OPTIONS));
      return 0;
    }
    if (positionals.length !== 1) throw new UsageError(positionals.length ? `unexpected argument '${positionals[1]}' (see '${prog} --help')` : `${prog} needs the MCP endpoint's URL, e.g. https://host/mcp (see '${prog} --help')`);
    const url = parseHttpUrl(positionals[0]!, "URL");
    const parsed = new URL(url);
    if (parsed.username || parsed.password || parsed.hash) throw new UsageError(`URL takes no user, password or #fragment (clients send none), got '${positionals[0]}'`);
    const eras: ClientEra[] = s.era === "all" ? [...CLIENT_ERAS] : s.era ? [s.era] : [];
    const profiles = s.as.length ? DOCTOR_PROFILES.filter((p) => s.as.includes(p.name)) : DOCTOR_PROFILES;
    const report = await runDoctor(url, {
      profiles,
      eras,
      ...(s.token ? { token: s.token } : {}),
      ...(s.timeout ? { timeoutMs: s.timeout } : {}),
      toolCall: s.call,
      ...(s.db ? { db: s.db } : {}),
      ...(s.clientMetadataUrl ? { clientMetadataUrl: s.clientMetadataUrl } : {}),
    });
    process.stdout.write(s.json ? `${jsonSafe(JSON.stringify(report, null, 2))}\n` : formatDoctor(report, painter(colorEnabled(process.stdout))));
    // After the report, so that a file that cannot be written loses nothing else.
    if (s.junit) writeFileSync(s.junit, doctorJunit(report));
    const notStored = report.recorded && "error" in report.recorded;
    if (notStored) process.stderr.write(`${prog}: the checks were not stored in ${terminalSafe(report.recorded!.db)}: ${terminalSafe((report.recorded as { error: string }).error)}\n`);
    return report.ok && !notStored ? 0 : 1;
  } catch (error) {
    const e = error as Error;
    process.stderr.write(`${prog}: ${terminalSafe(e.message.replace(/\s*\n\s*/g, " "))}\n`);
    return e instanceof UsageError ? 2 : 1;
  }
}
