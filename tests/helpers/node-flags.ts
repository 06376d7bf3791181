// The node flags the proxy runs with: those of its shebang, which the image's `mcp-lens` link and
// npm's bin use. Tests and the bench start `node <flags> dist/cli/mcp-lens.js` to run it the same way.
import { readFileSync } from "node:fs";

export function proxyNodeFlags(cliPath: string): string[] {
  const shebang = readFileSync(cliPath, "utf8").split("\n", 1)[0] ?? "";
  const match = /^#!\/usr\/bin\/env (?:-S )?node((?: --[\w-]+(?:=\S+)?)*)$/.exec(shebang);
  if (!match) throw new Error(`${cliPath}: unexpected shebang ${JSON.stringify(shebang)}`);
  return match[1]!.split(" ").filter(Boolean);
}
