// Operating mcp-lens: CLI errors and one-line failures (reliability-*.test.ts: the rest).
import { describe, expect, it } from "vitest";
import { runCli } from "../helpers/processes.js";

describe("command line", () => {
  it("explains itself", async () => {
    const main = await runCli(["--help"]);
    expect(main.code).toBe(0);
    expect(main.stdout).toContain("mcp-lens <command>");
    const proxy = await runCli(["proxy", "--help"]);
    expect(proxy.code).toBe(0);
    for (const text of ["--upstream", "MCP_LENS_UPSTREAM", "--trust-proxy", "MCP_LENS_TRUST_PROXY", "--admin-port", "--db", "MCP_LENS_DB"]) {
      expect(proxy.stdout).toContain(text);
    }
  });

  it.each([
    [["proxy", "--bogus"], "Unknown option '--bogus'"],
    [["proxy", "--port", "99999"], "--port must be a whole number from 0 to 65535"],
    [["proxy", "--upstream", "ftp://x"], "--upstream must be an http:// or https:// URL"],
    [["frobnicate"], "unknown command 'frobnicate'"],
  ])("rejects %j with one line and exit code 2", async (args, message) => {
    const result = await runCli(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(message);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("rejects a bad environment variable by name", async () => {
    const result = await runCli(["proxy"], { MCP_LENS_PORT: "eighty" });
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe("mcp-lens: MCP_LENS_PORT must be a whole number from 0 to 65535, got 'eighty'");
  });

  it("fails with one line when the DB path cannot be opened", async () => {
    const result = await runCli(["proxy", "--db", "/nonexistent-dir/sub/lens.db", "--port", "0", "--admin-port", "0"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("/nonexistent-dir/sub/lens.db");
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
  });
});
