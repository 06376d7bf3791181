// Structured JSON logs on stdout (one line per exchange at info with --log-exchanges). Pretty output is a
// development concern: pipe through `npx pino-pretty`.
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(level: string, destination: pino.DestinationStream = pino.destination(1)): Logger {
  return pino({ level, base: { service: "mcp-lens" }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}

/**
 * A logger whose lines are gathered and written a batch at a time (every `flushEveryMs`, or when
 * `bufferBytes` fill up), for the recorder thread's one line per exchange: a write(2) per line cost
 * ~20 µs an exchange, more than redaction. Lines still reach stdout whole, in order, within
 * `flushEveryMs`; `close` writes what is left. A crash of the thread loses at most that interval.
 */
export function createBatchedLogger(level: string, flushEveryMs = 100, bufferBytes = 8 * 1024): { logger: Logger; close(): void } {
  const destination = pino.destination({ dest: 1, sync: true, minLength: bufferBytes });
  const logger = createLogger(level, destination);
  const timer = setInterval(() => destination.flushSync(), flushEveryMs);
  timer.unref();
  return {
    logger,
    close() {
      clearInterval(timer);
      destination.flushSync();
    },
  };
}
