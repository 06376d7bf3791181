// Structured JSON logs on stdout (one line per exchange at info with --log-exchanges). Pretty output is a
// development concern: pipe through `npx pino-pretty`.
import { pino, type Logger } from "pino";
import { jsonSafe } from "./terminal-safe.js";

export type { Logger };

/**
 * Every line leaves through jsonSafe: a value from traffic in any field (an error's `input`, a
 * header) has its C1, bidi and line-separator characters escaped, losslessly, before a terminal
 * that tails the log can see them (JSON.stringify escapes only C0).
 */
export function createLogger(level: string, destination: pino.DestinationStream = pino.destination(1)): Logger {
  return pino({ level, base: { service: "mcp-lens" }, timestamp: pino.stdTimeFunctions.isoTime, hooks: { streamWrite: jsonSafe } }, destination);
}

/**
 * A logger whose lines are gathered and written a batch at a time (every `flushEveryMs`, or when
 * `bufferBytes` fill up), for the recorder thread's one line per exchange: a write(2) per line cost
 * ~20 µs an exchange, more than redaction. Lines still reach stdout whole, in order, within
 * `flushEveryMs`; `close` writes what is left. A crash of the thread loses at most that interval.
 * Written with plain write(2)s and never fsync'd: sonic-boom's flushSync, used here before, ran
 * fsync(2) on stdout every interval, whatever was buffered, and with stdout on a file each one
 * committed the file system's journal (a log needs no more durability than the kernel gives it).
 */
export function createBatchedLogger(level: string, flushEveryMs = 100, bufferBytes = 8 * 1024): { logger: Logger; close(): void } {
  // sonic-boom's synchronous writes (partial writes and a full pipe retried), one per batch.
  const stdout = pino.destination({ dest: 1, sync: true });
  let lines: string[] = [];
  let buffered = 0;
  const flush = () => {
    if (lines.length === 0) return;
    const text = lines.join("");
    lines = [];
    buffered = 0;
    stdout.write(text);
  };
  const logger = createLogger(level, {
    write(line: string): void {
      lines.push(line);
      buffered += line.length;
      if (buffered >= bufferBytes) flush();
    },
  });
  const timer = setInterval(flush, flushEveryMs);
  timer.unref();
  return {
    logger,
    close() {
      clearInterval(timer);
      flush();
    },
  };
}
