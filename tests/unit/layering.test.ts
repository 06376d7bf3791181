// The house's plan, checked: imports only run downwards, and nowhere in a loop.
//
//   cli/                          the mcp-lens command: composes everything; nothing imports it
//   proxy/  server/  inspector/   the three programs: each imports only its own files and below
//   store/  recording/            the recording's schema, database, writer and retention; raw → recorded (decode, redact)
//   common/                       options, logger, listen, version, migrations, trust, terminal safety
//   analysis/                     the pure connector analysis: imports nothing but itself
import { readFileSync } from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { ROOT } from "../helpers/processes.js";

const LAYER: Record<string, number> = { analysis: 0, common: 1, store: 2, recording: 2, proxy: 3, server: 3, inspector: 3, cli: 4 };
const PROGRAMS = new Set(["proxy", "server", "inspector"]);

const sources = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "*.ts", "*.tsx"], { cwd: ROOT, encoding: "utf8" })
  .split("\n")
  .filter((f) => f && (f.split("/")[0]! in LAYER) && !f.endsWith(".d.ts"));

const IMPORT = /(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g;

/** Each source file's imports of other source files, as repository paths. */
const graph = new Map<string, string[]>(
  sources.map((file) => {
    const text = readFileSync(path.join(ROOT, file), "utf8");
    const targets = [...text.matchAll(IMPORT)].map((m) => {
      const resolved = path.normalize(path.join(path.dirname(file), m[1]!)).replace(/\.js$/, "");
      return sources.find((s) => s === `${resolved}.ts` || s === `${resolved}.tsx`) ?? `${resolved} (missing)`;
    });
    return [file, targets];
  }),
);

const top = (file: string) => file.split("/")[0]!;

describe("the layering of the source tree", () => {
  it("finds the source files", () => {
    expect(sources.length).toBeGreaterThan(40);
    expect([...graph.values()].flat().filter((t) => t.endsWith("(missing)"))).toEqual([]);
  });

  it("imports only run downwards; the programs do not import each other", () => {
    const wrong: string[] = [];
    for (const [file, targets] of graph) {
      for (const target of targets) {
        const [from, to] = [top(file), top(target)];
        if (from === to) continue;
        const downwards = LAYER[to]! < LAYER[from]!;
        if (!downwards || (PROGRAMS.has(from) && PROGRAMS.has(to))) wrong.push(`${file} → ${target}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("the inspector's engines (data, replay, export, format) never import its Ink views", () => {
    // inspector/cli.ts is the inspector's command line: it starts the interactive view, like cli/ composes all.
    const engines = [...graph].filter(([file]) => file.startsWith("inspector/") && !file.startsWith("inspector/ui/") && file !== "inspector/cli.ts");
    expect(engines.flatMap(([file, targets]) => targets.filter((t) => t.startsWith("inspector/ui/")).map((t) => `${file} → ${t}`))).toEqual([]);
  });

  it("has no import loops", () => {
    // Tarjan's strongly connected components: any component of more than one file is a loop.
    let index = 0;
    const indices = new Map<string, number>();
    const low = new Map<string, number>();
    const stack: string[] = [];
    const onStack = new Set<string>();
    const loops: string[][] = [];
    const visit = (v: string) => {
      indices.set(v, index);
      low.set(v, index++);
      stack.push(v);
      onStack.add(v);
      for (const w of graph.get(v) ?? []) {
        if (!indices.has(w)) {
          visit(w);
          low.set(v, Math.min(low.get(v)!, low.get(w)!));
        } else if (onStack.has(w)) {
          low.set(v, Math.min(low.get(v)!, indices.get(w)!));
        }
      }
      if (low.get(v) === indices.get(v)) {
        const component: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          component.push(w);
        } while (w !== v);
        if (component.length > 1) loops.push(component.sort());
      }
    };
    for (const v of graph.keys()) if (!indices.has(v)) visit(v);
    expect(loops).toEqual([]);
  });
});
