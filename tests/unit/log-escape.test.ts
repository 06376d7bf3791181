// Log lines carry values from traffic (an error's `input`, a header): whatever field holds one,
// its C1, bidi and line-separator characters leave the logger escaped, and the line still parses
// back to the very same value.
import { describe, expect, it } from "vitest";
import { createLogger } from "../../common/log.js";

describe("createLogger", () => {
  it("escapes what JSON leaves raw, in every field, losslessly", () => {
    const lines: string[] = [];
    const logger = createLogger("info", { write: (line: string) => void lines.push(line) });
    const hostile = "http://a b\u009b[2J\u202eevil\u2028";
    let thrown: unknown;
    try {
      new URL(hostile);
    } catch (error) {
      thrown = error;
    }
    logger.error({ err: thrown, header: hostile }, "could not read a redirect");
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toMatch(/[\u0080-\u009f\u202e\u2028]/);
    const parsed = JSON.parse(lines[0]!) as { header: string; err: { input?: string } };
    expect(parsed.header).toBe(hostile);
    expect(parsed.err.input).toBe(hostile);
  });
});
