import { existsSync, readFileSync } from "node:fs";

// package.json is one level up from common/*.ts (sources, as tests run them) and two from dist/common/*.js.
const packageJson = [new URL("../package.json", import.meta.url), new URL("../../package.json", import.meta.url)].find((url) => existsSync(url))!;

/** mcp-lens's version, from package.json. */
export const VERSION = (JSON.parse(readFileSync(packageJson, "utf8")) as { version: string }).version;
