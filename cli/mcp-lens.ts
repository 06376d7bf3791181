#!/usr/bin/env -S node --max-semi-space-size=4 --heap-growing-percent=100
// `mcp-lens`: the command-line entry and the composition root: `proxy` (../proxy), `start`
// (the bundled server and the proxy in front of it), `server` (../server), `inspector`
// (../inspector), `doctor` (../inspector/doctor). Nothing imports this file. Subcommands share one option table each, so every
// flag has an environment variable and --help can never disagree with the parser.
// The shebang caps V8's young generation at 4 MiB per semi-space (16 by default), in both
// threads: a burst of connections grows it, and the cap keeps RSS nearer the bare proxy's.
// Little of an exchange survives a scavenge now, so a smaller young generation costs no
// measurable CPU. It also runs a full collection once the heap has doubled since the last one
// (V8 would let it grow up to four times): ~18 MiB less RSS at peak, no CPU the bench can see
// (README § Configuration). `npm start` passes the same flags.
import { findCommand, formatHelp, parseOptions, UsageError, type Values } from "../common/config.js";
import { startLens } from "../proxy/lens.js";
import { createLogger, type Logger } from "../common/log.js";
import { PROXY_OPTIONS, type ProxySettings } from "../proxy/settings.js";
import { LOOPBACK_HOST_NAMES, SERVER_OPTIONS, serverSettings } from "../server/settings.js";
import { publicMcpUrl } from "../server/public-url.js";
import { VERSION } from "../common/version.js";

/** Loaded only by the commands that run it: `proxy` stays free of express and the MCP SDK (~13 MiB RSS). */
async function startCodaServer(...args: Parameters<typeof import("../server/index.js").startCodaServer>) {
  const server = await import("../server/index.js");
  return server.startCodaServer(...args);
}


const MAIN_HELP = `Usage: mcp-lens <command> [options]

mcp-lens ${VERSION}: an observable reverse proxy for remote MCP servers. It forwards every
request unchanged and records each OAuth and MCP exchange, redacted, to SQLite.

Commands:
  start     Run the bundled Coda MCP server and the proxy in front of it (what 'npm start' runs)
  proxy     Run the proxy in front of an MCP server you already have
  server    Run the Coda MCP server alone (Streamable HTTP + OAuth 2.1)
  inspector Which connector handshakes failed, where and why, from the recording database
  doctor    Will Claude.ai, ChatGPT, Claude Code… connect to an MCP server URL, and if not, why

Run 'mcp-lens <command> --help' for the options of each command.
`;

/** What the admin port hands anyone who reaches it, said where operators choose its options. */
const ADMIN_PORT_NOTE = `

Admin port (--admin-host, --admin-port): GET /health (always open: status, counts, the upstream
without its password), GET /metrics and WebSocket /live. Without --admin-token, anyone who can
connect to it reads the metrics and, on /live, every exchange as it is recorded: URLs, headers and
the recorded request and response bodies (redacted: secrets become fingerprints, the rest of the
traffic is there as sent). Requests from web pages are refused (Host and Origin checks), but keep
the port private, or set --admin-token.`;

const { upstream: _upstream, ...PROXY_OPTIONS_WITHOUT_UPSTREAM } = PROXY_OPTIONS;
// `start` runs both: the proxy's options as they are, the server's under server-* names
// where they would clash, with the same environment variables as `mcp-lens server`.
const START_OPTIONS = {
  ...PROXY_OPTIONS_WITHOUT_UPSTREAM,
  serverPort: { ...SERVER_OPTIONS.port, flag: "server-port", help: "Loopback port of the bundled Coda MCP server (the proxy's upstream)" },
  serverDb: { ...SERVER_OPTIONS.db, flag: "server-db" },
  publicUrl: { ...SERVER_OPTIONS.publicUrl, help: "The URL clients use to reach the proxy (default: the Host they asked for, e.g. http://localhost:<port> or http://127.0.0.1:<port>)" },
  codaApiBase: SERVER_OPTIONS.codaApiBase,
  secretKey: SERVER_OPTIONS.secretKey,
  allowedOrigins: SERVER_OPTIONS.allowedOrigins,
  allowedHosts: SERVER_OPTIONS.allowedHosts,
  registrationLimit: SERVER_OPTIONS.registrationLimit,
  maxClients: SERVER_OPTIONS.maxClients,
  unauthorizedClientTtl: SERVER_OPTIONS.unauthorizedClientTtl,
  idleClientTtl: SERVER_OPTIONS.idleClientTtl,
  era: SERVER_OPTIONS.era,
  cimdAllowPrivate: SERVER_OPTIONS.cimdAllowPrivate,
  sseKeepalive: SERVER_OPTIONS.sseKeepalive,
  stateless: SERVER_OPTIONS.stateless,
  jsonResponse: SERVER_OPTIONS.jsonResponse,
};

/** Runs until SIGTERM/SIGINT, then stops gracefully; a second signal exits at once. */
function stopOnSignals(logger: Logger, stops: Array<() => Promise<void>>): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "signal received");
    (async () => {
      for (const stop of stops) await stop();
      process.exit(0);
    })().catch((error: Error) => {
      logger.error({ err: error }, "error while stopping");
      process.exit(1);
    });
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}

/** A subcommand: its option table, a one-line summary for --help, and what it does. */
interface Command<S extends Parameters<typeof parseOptions>[0]> {
  name: string;
  summary: string;
  options: S;
  run(settings: Values<S>): Promise<void>;
}

async function runCommand<S extends Parameters<typeof parseOptions>[0]>(command: Command<S>, argv: string[]): Promise<void> {
  const usage = `mcp-lens ${command.name}`;
  const settings = parseOptions(command.options, argv, process.env, usage);
  if (settings.help) {
    process.stdout.write(formatHelp(`Usage: ${usage} [options]`, command.summary, command.options));
    return;
  }
  await command.run(settings);
}

const PROXY_COMMAND: Command<typeof PROXY_OPTIONS> = {
  name: "proxy",
  summary: `Forward every request to --upstream unchanged and record each exchange to --db.${ADMIN_PORT_NOTE}`,
  options: PROXY_OPTIONS,
  async run(settings) {
    const logger = createLogger(settings.logLevel);
    const lens = await startLens(settings, logger);
    stopOnSignals(logger, [() => lens.close()]);
  },
};

const SERVER_COMMAND: Command<typeof SERVER_OPTIONS> = {
  name: "server",
  summary: "Run the Coda MCP server: Streamable HTTP at /mcp with its own OAuth 2.1 authorization server.",
  options: SERVER_OPTIONS,
  async run(settings) {
    const logger = createLogger(settings.logLevel);
    const server = await startCodaServer(settings, logger);
    stopOnSignals(logger, [() => server.close()]);
  },
};

const START_COMMAND: Command<typeof START_OPTIONS> = {
  name: "start",
  summary: `Start the bundled Coda MCP server on loopback and the recording proxy in front of it.${ADMIN_PORT_NOTE}`,
  options: START_OPTIONS,
  async run(settings) {
    const logger = createLogger(settings.logLevel);
    // Without --public-url the bundled server takes its public origin from the Host the client
    // asked the proxy for (X-Forwarded-Host), so http://localhost:<port> and
    // http://127.0.0.1:<port> both work, each with its own issuer and audience. Only those names
    // are answered then (DNS-rebinding protection); --public-url names the one to serve instead.
    const server = await startCodaServer(
      serverSettings({
        ...settings,
        host: "127.0.0.1",
        port: settings.serverPort,
        db: settings.serverDb,
        allowedHosts: [settings.allowedHosts, settings.publicUrl ? "" : LOOPBACK_HOST_NAMES.join(",")].filter(Boolean).join(","),
      }),
      logger,
    ).catch((error: Error) => {
      throw new Error(`cannot start the bundled server: ${error.message}${/in use/.test(error.message) ? " (--server-port)" : ""}`);
    });
    const proxySettings: ProxySettings = { ...settings, upstream: server.url };
    const lens = await startLens(proxySettings, logger).catch(async (error: Error) => {
      await server.close();
      throw error;
    });
    const connectorUrl = publicMcpUrl(new URL(settings.publicUrl || `http://localhost:${new URL(lens.url).port}`)).href;
    logger.info({ connectorUrl }, "ready: point your MCP client at the connector URL");
    stopOnSignals(logger, [() => lens.close(), () => server.close()]);
  },
};

async function main(argv: string[]): Promise<void> {
  // The subcommand may come after options (`mcp-lens --log-level warn proxy`); a lone --help or
  // --version has none.
  const found = findCommand(argv, [PROXY_OPTIONS, START_OPTIONS, SERVER_OPTIONS]);
  const [command, rest] = found.command === undefined && argv.length > 0 ? [argv[0], argv.slice(1)] : [found.command, found.rest];
  switch (command) {
    case "proxy":
      return runCommand(PROXY_COMMAND, rest);
    case "start":
      return runCommand(START_COMMAND, rest);
    case "server":
      return runCommand(SERVER_COMMAND, rest);
    case "inspector": {
      // Loaded on demand: the proxy and server do not need the inspector's modules.
      const inspector = await import("../inspector/cli.js");
      process.exitCode = await inspector.main(rest, "mcp-lens inspector");
      return;
    }
    case "doctor": {
      const doctor = await import("../inspector/doctor/cli.js");
      process.exitCode = await doctor.main(rest, "mcp-lens doctor");
      return;
    }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(MAIN_HELP);
      return;
    case "--version":
    case "-v":
      process.stdout.write(`${VERSION}\n`);
      return;
    default:
      throw new UsageError(`unknown command '${command}' (see 'mcp-lens --help')`);
  }
}

main(process.argv.slice(2)).catch((error: Error) => {
  // Operators get one line, not a stack trace; the stack is for MCP_LENS_DEBUG=1.
  process.stderr.write(`mcp-lens: ${error.message}\n`);
  if (process.env.MCP_LENS_DEBUG) process.stderr.write(`${error.stack}\n`);
  process.exit(error instanceof UsageError ? 2 : 1);
});
