#!/usr/bin/env node
// The user's browser for third-party clients that open one (mcp-remote, MCP Inspector CLI): their
// `open` package runs xdg-open, which, with no display, runs "$BROWSER <authorization URL>". It
// consents (sign-in.mjs, with SIGN_IN_CODA_TOKEN), then opens the client's loopback callback.
// What it did goes to SIGN_IN_LOG, if set.
import { appendFileSync } from "node:fs";
import { consent } from "./sign-in.mjs";

const log = (line) => process.env.SIGN_IN_LOG && appendFileSync(process.env.SIGN_IN_LOG, `${new Date().toISOString()} ${line}\n`);

try {
  log(`open ${process.argv[2]}`);
  const callback = await consent(process.argv[2], process.env.SIGN_IN_CODA_TOKEN);
  log(`callback ${callback}`);
  log(`callback answered ${(await fetch(callback)).status}`);
} catch (error) {
  log(`failed: ${error.message}`);
  process.exitCode = 1;
}
