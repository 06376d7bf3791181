// Structured JSON logs on stdout (one line per exchange at info). Pretty output is a
// development concern: pipe through `npx pino-pretty`.
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(level: string, destination: pino.DestinationStream = pino.destination(1)): Logger {
  return pino({ level, base: { service: "mcp-lens" }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}
