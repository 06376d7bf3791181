// The deployment files, checked without a Docker engine: the Dockerfile read as text (and its
// HEALTHCHECK and on-PATH commands run for real, in the image's layout rebuilt from dist/),
// docker-compose.yml through Debian's `docker-compose config`, and the nginx examples through the
// real `nginx -t`. A missing docker-compose or nginx skips its part with a message, and is a
// failure under CI=true. The Grafana dashboard and the alert rules are read against the metrics
// mcp-lens registers (names and label names; tests/integration/e2e-nginx-prometheus.test.ts then
// evaluates every query on a real Prometheus).
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Histogram } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LensMetrics, TrafficMetrics, type LiveGauges } from "../../proxy/admin/metrics.js";
import { proxyNodeFlags } from "../helpers/node-flags.js";
import { vectorSelectors } from "../helpers/promql.js";
import { CLI, ROOT, startLensProcess, startServerProcess, tempDir, type RunningLens } from "../helpers/processes.js";

const IN_CI = process.env.CI === "true";
const read = (file: string) => readFileSync(path.join(ROOT, file), "utf8");

/** The first executable called `name` on PATH (or in the extra directories), like `command -v`. */
function findBinary(name: string, extraDirs: string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), ...extraDirs].filter(Boolean);
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** Runs a command to completion with a deadline; never throws. */
function run(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 20_000);
    child.once("error", (error) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: stderr + error.message });
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on("error", () => {}); // a command that exits without reading its input: EPIPE
    child.stdin.end(opts.input ?? "");
  });
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile, as text

interface Instruction {
  keyword: string;
  args: string;
}

/** Instructions per stage: continuation lines joined, comments and blank lines dropped. */
function parseDockerfile(text: string): Instruction[][] {
  const logical: string[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (current === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.startsWith("#")) continue; // a comment inside a continued instruction
    if (line.endsWith("\\")) {
      current += line.slice(0, -1).trim() + " ";
      continue;
    }
    logical.push((current + line).trim());
    current = "";
  }
  const stages: Instruction[][] = [];
  for (const line of logical) {
    const match = /^(\w+)\s+([\s\S]*)$/.exec(line);
    if (!match) throw new Error(`unparsable Dockerfile line: ${line}`);
    const instruction = { keyword: match[1]!.toUpperCase(), args: match[2]!.trim() };
    if (instruction.keyword === "FROM") stages.push([]);
    stages.at(-1)!.push(instruction);
  }
  return stages;
}

const all = (stage: Instruction[], keyword: string) => stage.filter((i) => i.keyword === keyword);
const one = (stage: Instruction[], keyword: string) => {
  const found = all(stage, keyword);
  expect(found, `one ${keyword}`).toHaveLength(1);
  return found[0]!;
};

/** `ln -s TARGET LINK` pairs in the RUN instructions. */
function symlinksOf(stage: Instruction[]): Array<{ target: string; link: string }> {
  return all(stage, "RUN").flatMap((i) => [...i.args.matchAll(/\bln\s+-s\s+(\S+)\s+(\S+)/g)].map((m) => ({ target: m[1]!, link: m[2]! })));
}

/** `chmod MODE FILE…` in the RUN instructions (up to the next `&&`). */
function chmodsOf(stage: Instruction[]): Array<{ mode: string; files: string[] }> {
  return all(stage, "RUN").flatMap((i) =>
    [...i.args.matchAll(/\bchmod\s+(\S+)\s+([^&;|]+)/g)].map((m) => ({ mode: m[1]!, files: m[2]!.trim().split(/\s+/) })),
  );
}

describe("Dockerfile", () => {
  const stages = parseDockerfile(read("Dockerfile"));
  const build = stages[0] ?? [];
  const runtime = stages.at(-1) ?? [];
  const tmp = tempDir("mcp-lens-deploy-");
  /** The runtime image's file layout, rebuilt from dist/: /app and /usr/local/bin. */
  const app = path.join(tmp.dir, "app");
  const bin = path.join(tmp.dir, "bin");
  let lens: RunningLens | undefined;

  const healthcheck = one(runtime, "HEALTHCHECK");
  const healthArgv = JSON.parse(healthcheck.args.replace(/^(--\S+\s+)*CMD\s+/, "")) as string[];
  /** Runs the HEALTHCHECK's command in the image's working directory, as Docker would (with its --timeout). */
  const runHealthcheck = (env: Record<string, string>) =>
    run([healthArgv[0] === "node" ? process.execPath : healthArgv[0]!, ...healthArgv.slice(1)], {
      cwd: app,
      env: { ...process.env, ...env },
      timeoutMs: 5_000,
    });

  /** PATH as inside the image: the link directory first. */
  const imageEnv = (extra: Record<string, string> = {}) => ({
    ...process.env,
    PATH: [bin, path.dirname(process.execPath), process.env.PATH].join(path.delimiter),
    ...extra,
  });

  beforeAll(async () => {
    // COPY --from=build: package.json, node_modules, dist, as the runtime stage lays them out.
    mkdirSync(app, { recursive: true });
    mkdirSync(bin, { recursive: true });
    copyFileSync(path.join(ROOT, "package.json"), path.join(app, "package.json"));
    cpSync(path.join(ROOT, "dist"), path.join(app, "dist"), { recursive: true });
    symlinkSync(path.join(ROOT, "node_modules"), path.join(app, "node_modules"), "dir");
    // The RUN's chmod and ln -s, with /app and /usr/local/bin moved into the temp directory.
    const inImage = (p: string) => p.replace(/^\/app\//, `${app}/`).replace(/^\/usr\/local\/bin\//, `${bin}/`);
    for (const { mode, files } of chmodsOf(runtime)) {
      for (const file of files.filter((f) => f.startsWith("/app/"))) chmodSync(inImage(file), /^[0-7]+$/.test(mode) ? parseInt(mode, 8) : 0o755);
    }
    for (const { target, link } of symlinksOf(runtime)) symlinkSync(inImage(target), inImage(link));
    lens = await startLensProcess({ upstream: "http://127.0.0.1:9", dbPath: path.join(tmp.dir, "volume", "mcp-lens.db") });
  });

  afterAll(async () => {
    await lens?.stop();
    tmp.cleanup();
  });

  it("builds on node:20-bookworm-slim with the toolchain better-sqlite3 needs, then installs, builds and prunes", () => {
    expect(stages).toHaveLength(2);
    expect(one(build, "FROM").args).toMatch(/^node:20-bookworm-slim\s+AS\s+build$/i);
    const runs = all(build, "RUN").map((i) => i.args).join("\n");
    expect(runs).toMatch(/apt-get install[^\n]*\bpython3\b/);
    expect(runs).toMatch(/apt-get install[^\n]*\bmake\b/);
    expect(runs).toMatch(/apt-get install[^\n]*\bg\+\+/);
    const order = ["npm ci", "npm rebuild better-sqlite3", "npm run build", "npm prune --omit=dev"].map((step) => runs.indexOf(step));
    expect(order.every((at) => at >= 0), `all of npm ci, rebuild, build, prune in:\n${runs}`).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    // Every COPY into the build stage is let through by .dockerignore (an allow-list), and
    // nothing secret or local is.
    const ignore = read(".dockerignore").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    expect(ignore[0]).toBe("*");
    const sources = all(build, "COPY").flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    for (const source of sources) expect(ignore, `.dockerignore lets ${source} in`).toContain(`!${source.replace(/^\.\//, "").replace(/\/$/, "")}`);
    for (const kept of ignore.filter((l) => l.startsWith("!"))) expect(kept).not.toMatch(/^!(\.env|node_modules|dist|data|.*\.db|.*\.key)/);
    // Every folder `npm run build` compiles (tsconfig.json's include) is copied in, or the image cannot build.
    const compiled = (JSON.parse(read("tsconfig.json")) as { include: string[] }).include.map((glob) => glob.split("/")[0]!);
    const copied = sources.map((source) => source.replace(/^\.\//, "").replace(/\/$/, ""));
    for (const folder of new Set(compiled)) expect(copied, `the build stage copies ${folder}/`).toContain(folder);
  });

  it("runs from node:20-bookworm-slim with only dist/, node_modules/ and package.json, as the node user", () => {
    expect(one(runtime, "FROM").args).toBe("node:20-bookworm-slim");
    const copies = all(runtime, "COPY").map((i) => i.args.split(/\s+/));
    expect(copies.every((c) => c[0] === "--from=build")).toBe(true);
    expect(copies.map((c) => c[1]).sort()).toEqual(["/app/dist", "/app/node_modules", "/app/package.json"]);
    expect(all(runtime, "ADD")).toHaveLength(0);
    expect(one(runtime, "WORKDIR").args).toBe("/app");
    expect(one(runtime, "USER").args).toBe("node");
    const env = one(runtime, "ENV").args;
    expect(env).toMatch(/\bMCP_LENS_DB=\/data\/mcp-lens\.db\b/);
    expect(env).toMatch(/\bMCP_LENS_SERVER_DB=\/data\/server\.db\b/);
    expect(one(runtime, "VOLUME").args).toBe("/data");
    // /data is the node user's before it becomes a volume (changes after VOLUME are discarded).
    const chownAt = runtime.findIndex((i) => i.keyword === "RUN" && /chown node:node \/data\b/.test(i.args));
    expect(chownAt).toBeGreaterThanOrEqual(0);
    expect(chownAt).toBeLessThan(runtime.findIndex((i) => i.keyword === "VOLUME"));
    expect(one(runtime, "EXPOSE").args.split(/\s+/).sort()).toEqual(["8080", "9464"]);
    expect(JSON.parse(one(runtime, "CMD").args)).toEqual(["mcp-lens", "proxy"]);
  });

  it("runs the proxy with the same node flags from the image (shebang) and from npm start", () => {
    const shebangFlags = proxyNodeFlags(CLI);
    expect(shebangFlags).toEqual(["--max-semi-space-size=4", "--heap-growing-percent=100"]);
    const start = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts.start!;
    expect(start).toContain(`node ${shebangFlags.join(" ")} dist/cli/mcp-lens.js start`);
  });

  it("puts mcp-lens and inspector on PATH, linked to package.json's bin entries, executable with a node shebang", async () => {
    const links = symlinksOf(runtime);
    const pkgBin = (JSON.parse(read("package.json")) as { bin: Record<string, string> }).bin;
    expect(links.map((l) => l.link).sort()).toEqual(["/usr/local/bin/inspector", "/usr/local/bin/mcp-lens"]);
    for (const { target, link } of links) {
      const name = path.basename(link);
      expect(target, name).toBe(`/app/${pkgBin[name]}`);
      expect(readFileSync(path.join(ROOT, pkgBin[name]!), "utf8").split("\n")[0], `${pkgBin[name]} shebang`).toMatch(/^#!\/usr\/bin\/env (-S )?node( --[\w-]+=\w+)*$/);
      expect(chmodsOf(runtime).some((c) => /^(7[57][57]|\+x|a\+x)$/.test(c.mode) && c.files.includes(target)), `chmod +x ${target}`).toBe(true);
    }
    // Run through the links, from elsewhere, as `docker exec` would.
    for (const command of [["mcp-lens", "--help"], ["inspector", "--help"], ["mcp-lens", "server", "--help"]]) {
      const result = await run(command, { cwd: tmp.dir, env: imageEnv() });
      expect(result.code, `${command.join(" ")}: ${result.stderr}`).toBe(0);
      expect(result.stdout).toMatch(/Usage:/);
    }
  });

  it("`inspector` in the container finds the proxy's database through MCP_LENS_DB alone", async () => {
    for (const command of [["inspector", "list", "--json"], ["mcp-lens", "inspector", "list", "--json"]]) {
      const result = await run(command, { cwd: tmp.dir, env: imageEnv({ MCP_LENS_DB: lens!.dbPath }) });
      expect(result.code, `${command.join(" ")}: ${result.stderr}`).toBe(0);
      expect(JSON.parse(result.stdout)).toEqual([]);
    }
  });

  it("HEALTHCHECK: a node one-liner on the admin /health, exit 0 while the proxy serves, non-zero when it is down", async () => {
    expect(healthcheck.args).toMatch(/--timeout=\d+s/);
    expect(healthArgv[0]).toBe("node");
    expect(healthArgv.join(" ")).toMatch(/http:\/\/127\.0\.0\.1:'\+\(process\.env\.MCP_LENS_ADMIN_PORT\|\|9464\)\+'\/health/);
    const adminPort = new URL(lens!.adminUrl).port;

    const healthy = await runHealthcheck({ MCP_LENS_ADMIN_PORT: adminPort });
    expect(healthy.code, healthy.stderr).toBe(0);

    await lens!.stop();
    const down = await runHealthcheck({ MCP_LENS_ADMIN_PORT: adminPort });
    expect(down.code).not.toBe(0);
    expect(down.code).not.toBeNull(); // it answered, rather than hanging until killed
  });
});

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard and the alert rules, against the metrics mcp-lens registers

/**
 * Every series name mcp-lens exports, with its label names: both registries (the process's and
 * the recorder thread's traffic metrics), a histogram as its _bucket (with le), _sum and _count;
 * plus Prometheus's own `up`. Prometheus adds `instance` and `job` to every series it scrapes.
 */
function exportedSeries(): Map<string, Set<string>> {
  const live: LiveGauges = { inFlight: () => 0, activeSseStreams: () => 0, activeWebSockets: () => 0, recorder: () => { throw new Error("not collected here"); } };
  const metrics = [...new LensMetrics("0.0.0", live).registry.getMetricsAsArray(), ...new TrafficMetrics().registry.getMetricsAsArray()];
  const series = new Map<string, Set<string>>([["up", new Set(["instance", "job"])]]);
  for (const metric of metrics) {
    const { name, labelNames = [] } = metric as unknown as { name: string; labelNames?: string[] };
    const labels = [...labelNames, "instance", "job"];
    if (metric instanceof Histogram) {
      series.set(`${name}_bucket`, new Set([...labels, "le"]));
      series.set(`${name}_sum`, new Set(labels));
      series.set(`${name}_count`, new Set(labels));
    } else {
      series.set(name, new Set(labels));
    }
  }
  return series;
}

interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { uid: string };
  targets?: Array<{ expr: string; refId: string; legendFormat?: string }>;
}

/** The expressions of deploy/alerts.yml: the `expr: |` block scalars. */
function alertExpressions(text: string): Array<{ alert: string; expr: string }> {
  const lines = text.split("\n");
  const found: Array<{ alert: string; expr: string }> = [];
  let alert = "";
  lines.forEach((line, i) => {
    alert = /^\s*- alert:\s*(\S+)/.exec(line)?.[1] ?? alert;
    const start = /^(\s*)expr:\s*\|-?\s*$/.exec(line);
    if (!start) return;
    const body: string[] = [];
    for (let j = i + 1; j < lines.length && (lines[j]!.trim() === "" || lines[j]!.search(/\S/) > start[1]!.length); j++) body.push(lines[j]!);
    found.push({ alert, expr: body.join("\n").trim() });
  });
  return found;
}

/** Label names an expression groups or matches on: by (…), without (…), on (…), ignoring (…). */
const groupingLabels = (expr: string) =>
  [...expr.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)].flatMap((m) => m[1]!.split(",").map((l) => l.trim()).filter(Boolean));

/** A selector's metric name and the label names of its matchers. */
function parseSelector(selector: string): { name: string; labels: string[] } {
  const match = /^([A-Za-z_:][\w:]*)?(?:\{([\s\S]*)\})?$/.exec(selector.trim());
  if (!match) throw new Error(`unreadable selector ${selector}`);
  return { name: match[1] ?? "", labels: [...(match[2] ?? "").matchAll(/(\w+)\s*(?:=~|!~|!=|=)\s*["'`]/g)].map((m) => m[1]!) };
}

/** What is wrong with an expression against the exported series: unknown metrics or labels. */
function problems(expr: string, series: Map<string, Set<string>>, legendFormat = ""): string[] {
  const found: string[] = [];
  const selectors = vectorSelectors(expr).map(parseSelector);
  if (selectors.length === 0) found.push("reads no metric");
  for (const { name, labels } of selectors) {
    const known = series.get(name);
    if (!known) {
      found.push(`unknown metric ${name || "(no name)"}`);
      continue;
    }
    for (const label of labels) if (!known.has(label)) found.push(`${name} has no label ${label}`);
  }
  // Grouping or matching on a label: every metric the expression reads must have it.
  for (const label of groupingLabels(expr)) {
    for (const { name } of selectors) if (series.get(name) && !series.get(name)!.has(label)) found.push(`${name} has no label ${label} (by/on)`);
  }
  // A legend names labels of the result: with `by`, only those; else any of the metrics'.
  const grouped = new Set(groupingLabels(expr));
  for (const [, label] of legendFormat.matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
    const ok = grouped.size > 0 ? grouped.has(label!) : selectors.some(({ name }) => series.get(name)?.has(label!));
    if (!ok) found.push(`legend {{${label}}} is not a label of the result`);
  }
  return found;
}

describe("deploy/grafana/dashboards/mcp-lens.json and deploy/alerts.yml, against the metrics", () => {
  const series = exportedSeries();
  const dashboard = JSON.parse(read("deploy/grafana/dashboards/mcp-lens.json")) as { uid: string; panels: DashboardPanel[] };
  const panels = dashboard.panels;

  it("reads the series mcp-lens exports, with the era and registration labels on the terminal handshake counters", () => {
    expect(series.get("mcp_lens_handshakes_started_total")).toEqual(new Set(["client_family", "instance", "job"]));
    expect(series.get("mcp_lens_handshakes_succeeded_total")).toEqual(new Set(["client_family", "era", "registration", "instance", "job"]));
    expect(series.get("mcp_lens_handshakes_failed_total")).toEqual(new Set(["client_family", "failed_step", "code", "era", "registration", "instance", "job"]));
    expect(series.get("mcp_lens_era_fallbacks_total")).toEqual(new Set(["client_family", "instance", "job"]));
    expect(series.get("mcp_lens_request_duration_seconds_bucket")).toEqual(new Set(["kind", "le", "instance", "job"]));
  });

  it("is a dashboard whose panels have unique ids and do not overlap on the 24-column grid", () => {
    expect(dashboard.uid).toBe("mcp-lens");
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    const cells = new Map<string, string>();
    for (const p of panels) {
      const { x, y, w, h } = p.gridPos;
      expect(x + w, `panel "${p.title}"`).toBeLessThanOrEqual(24);
      for (let row = y; row < y + h; row++) {
        for (let col = x; col < x + w; col++) {
          const key = `${col},${row}`;
          expect(cells.get(key), `panel "${p.title}" overlaps at ${key}`).toBeUndefined();
          cells.set(key, p.title);
        }
      }
    }
    // In reading order: a panel never starts above the one before it.
    const ys = panels.map((p) => p.gridPos.y);
    expect(ys).toEqual([...ys].sort((a, b) => a - b));
  });

  it("queries only metrics and labels mcp-lens exports, in every panel and every alert rule", () => {
    const found: string[] = [];
    for (const p of panels.filter((p) => p.type !== "row")) {
      expect(p.datasource?.uid, `panel "${p.title}"`).toBe("prometheus");
      expect(p.targets?.length, `panel "${p.title}" has queries`).toBeGreaterThan(0);
      for (const t of p.targets!) found.push(...problems(t.expr, series, t.legendFormat).map((e) => `panel "${p.title}" ${t.refId}: ${e}`));
    }
    const alerts = alertExpressions(read("deploy/alerts.yml"));
    expect(alerts.map((a) => a.alert)).toContain("McpLensHandshakeFailures");
    for (const { alert, expr } of alerts) found.push(...problems(expr, series).map((e) => `alert ${alert}: ${e}`));
    expect(found).toEqual([]);
    // The checker itself finds what it is for.
    expect(problems('sum by (era) (rate(mcp_lens_handshakes_started_total{code="x"}[5m]))', series, "{{client_family}}")).toEqual([
      "mcp_lens_handshakes_started_total has no label code",
      "mcp_lens_handshakes_started_total has no label era (by/on)",
      "legend {{client_family}} is not a label of the result",
    ]);
    expect(problems("sum(rate(mcp_lens_handshakes_total[5m]))", series)).toEqual(["unknown metric mcp_lens_handshakes_total"]);
  });

  it("has the row 'Eras and registration': handshakes by era and by registration kind per client family, and era fallbacks", () => {
    const start = panels.findIndex((p) => p.type === "row" && p.title === "Eras and registration");
    expect(start).toBeGreaterThan(0);
    const end = panels.findIndex((p, i) => i > start && p.type === "row");
    const row = panels.slice(start + 1, end === -1 ? undefined : end);
    const queries = (title: string) => row.find((p) => p.title === title)?.targets?.map((t) => t.expr);
    expect(row.map((p) => p.title)).toEqual([
      "Handshakes by era and client family (selected range)",
      "Handshakes by registration kind and client family (selected range)",
      "Handshakes by era",
      "Era fallbacks by client family (selected range)",
    ]);
    expect(queries("Handshakes by era and client family (selected range)")).toEqual([
      "sum by (client_family, era) (increase(mcp_lens_handshakes_succeeded_total[$__range]))",
      "sum by (client_family, era) (increase(mcp_lens_handshakes_failed_total[$__range]))",
    ]);
    expect(queries("Handshakes by registration kind and client family (selected range)")).toEqual([
      "sum by (client_family, registration) (increase(mcp_lens_handshakes_succeeded_total[$__range]))",
      "sum by (client_family, registration) (increase(mcp_lens_handshakes_failed_total[$__range]))",
    ]);
    expect(queries("Handshakes by era")).toEqual([
      "sum by (era) (increase(mcp_lens_handshakes_succeeded_total[$__rate_interval]))",
      "sum by (era) (increase(mcp_lens_handshakes_failed_total[$__rate_interval]))",
    ]);
    expect(queries("Era fallbacks by client family (selected range)")).toEqual(["sort_desc(sum by (client_family) (increase(mcp_lens_era_fallbacks_total[$__range])))"]);
    // Each groups by labels its metrics have (the check above, for these panels by name).
    for (const p of row) for (const t of p.targets!) expect(problems(t.expr, series, t.legendFormat), `${p.title} ${t.refId}`).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// docker-compose.yml through `docker-compose config`

const DOCKER_COMPOSE = findBinary("docker-compose");
if (!DOCKER_COMPOSE && !IN_CI) {
  console.warn("docker-compose.yml check skipped: docker-compose is missing (apt-get install docker-compose); CI=true makes this a failure");
}

/** The Python that runs docker-compose has PyYAML (docker-compose reads YAML with it). */
function composePython(composePath: string): string[] {
  const first = readFileSync(realpathSync(composePath), "utf8").split("\n", 1)[0] ?? "";
  if (first.startsWith("#!")) return first.slice(2).trim().split(/\s+/);
  return ["python3"];
}

interface ComposeService {
  image?: string;
  build?: { context: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  ports?: Array<string | { published: number; target: number; host_ip?: string }>;
  volumes?: string[];
  networks?: Record<string, unknown>;
  profiles?: string[];
  labels?: Record<string, string>;
  tmpfs?: string[];
  healthcheck?: { test: string[] };
  user?: string;
  container_name?: string;
}
interface ComposeConfig {
  services: Record<string, ComposeService>;
  volumes: Record<string, unknown>;
  networks: Record<string, unknown>;
}

const SECRETS = { MCP_LENS_ADMIN_TOKEN: "test-admin-token-0001", MCP_LENS_SERVER_KEY: "ab".repeat(32), GRAFANA_ADMIN_PASSWORD: "test-grafana-password" };

describe.runIf(DOCKER_COMPOSE || IN_CI)("docker-compose.yml", () => {
  const tmp = tempDir("mcp-lens-compose-");
  const envExample = read(".env.example");
  const configIn = (dir: string, profiles: string[] = []) =>
    run([DOCKER_COMPOSE ?? "docker-compose", "-f", path.join(ROOT, "docker-compose.yml"), "--project-directory", dir, ...profiles.flatMap((p) => ["--profile", p]), "config"], { cwd: dir });
  /** `docker-compose config`'s answer as an object. */
  const parseConfig = async (yaml: string): Promise<ComposeConfig> => {
    const parsed = await run([...composePython(DOCKER_COMPOSE!), "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"], { input: yaml });
    expect(parsed.code, parsed.stderr).toBe(0);
    return JSON.parse(parsed.stdout) as ComposeConfig;
  };
  let config: ComposeConfig;
  const service = (name: string) => {
    const found = config.services[name];
    expect(found, `service ${name}`).toBeDefined();
    return found!;
  };
  const publishedPorts = (s: ComposeService) => (s.ports ?? []).map((p) => (typeof p === "string" ? p : `${p.host_ip ? p.host_ip + ":" : ""}${p.published}:${p.target}`));
  /** The named volume mounted at `target`. */
  const volumeAt = (s: ComposeService, target: string) => s.volumes?.map((v) => v.split(":")).find((parts) => parts[1] === target)?.[0];

  beforeAll(async () => {
    if (!DOCKER_COMPOSE) throw new Error("docker-compose is missing (apt-get install docker-compose)");
    writeFileSync(path.join(tmp.dir, ".env"), envExample);
    // As shipped, the required secrets are empty: config refuses, naming one.
    const unfilled = await configIn(tmp.dir);
    expect(unfilled.code).not.toBe(0);
    expect(unfilled.stderr).toMatch(/MCP_LENS_ADMIN_TOKEN|GRAFANA_ADMIN_PASSWORD/);
    // Filled in as the README says.
    let env = envExample;
    for (const [name, value] of Object.entries(SECRETS)) env = env.replace(new RegExp(`^${name}=$`, "m"), `${name}=${value}`);
    writeFileSync(path.join(tmp.dir, ".env"), env);
    const result = await configIn(tmp.dir);
    expect(result.code, result.stderr).toBe(0);
    config = await parseConfig(result.stdout);
  });

  afterAll(() => tmp.cleanup());

  it("has the production services, optional acme-companion and cloudflared behind profiles", () => {
    for (const name of ["nginx-proxy", "mcp-lens", "coda-mcp", "prometheus", "grafana"]) {
      expect(config.services[name], name).toBeDefined();
      expect(config.services[name]!.profiles, `${name} always runs`).toBeUndefined();
    }
    expect(service("acme-companion").profiles).toEqual(["acme"]);
    expect(service("cloudflared").profiles).toEqual(["tunnel"]);
    expect(service("postgres").profiles).toEqual(["postgres"]);
    expect(service("mcp-lens-2").profiles).toEqual(["postgres"]);
  });

  it("--profile postgres: PostgreSQL and a second replica, both replicas on the database .env names", async () => {
    const dir = path.join(tmp.dir, "postgres-profile");
    mkdirSync(dir);
    const url = "postgres://lens:test-postgres-password@postgres:5432/lens";
    let env = envExample.replace("# POSTGRES_PASSWORD=", "POSTGRES_PASSWORD=test-postgres-password").replace(/^# MCP_LENS_DB=postgres:.*$/m, `MCP_LENS_DB=${url}`);
    for (const [name, value] of Object.entries(SECRETS)) env = env.replace(new RegExp(`^${name}=$`, "m"), `${name}=${value}`);
    writeFileSync(path.join(dir, ".env"), env);
    const result = await configIn(dir, ["postgres"]);
    expect(result.code, result.stderr).toBe(0);
    const withProfile = await parseConfig(result.stdout);
    const [first, second, postgres] = ["mcp-lens", "mcp-lens-2", "postgres"].map((name) => withProfile.services[name]!);
    expect(first!.environment).toMatchObject({ MCP_LENS_DB: url, MCP_LENS_REPLICA: "mcp-lens", VIRTUAL_HOST: "mcp.example.com" });
    // nginx-proxy balances over every container of the VIRTUAL_HOST: both replicas.
    expect(second!.environment).toMatchObject({ MCP_LENS_DB: url, MCP_LENS_REPLICA: "mcp-lens-2", VIRTUAL_HOST: "mcp.example.com", MCP_LENS_ADMIN_ALLOWED_HOSTS: "mcp-lens-2", MCP_LENS_UPSTREAM: "http://coda-mcp:8081" });
    expect(second!.command).toEqual(["mcp-lens", "proxy"]);
    expect(second!.ports ?? []).toEqual([]);
    expect(postgres!.image).toMatch(/^postgres:/);
    expect(postgres!.environment).toMatchObject({ POSTGRES_USER: "lens", POSTGRES_DB: "lens", POSTGRES_PASSWORD: "test-postgres-password" });
    expect(postgres!.ports ?? []).toEqual([]);
    expect(Object.keys(postgres!.networks ?? {})).toEqual(["internal"]);
    expect(volumeAt(postgres!, "/var/lib/postgresql/data")).toBeDefined();
  });

  it("nginx-proxy: ports 80 and 443, the Docker socket read-only, the SSE settings in vhost.d", () => {
    const proxy = service("nginx-proxy");
    expect(proxy.image).toMatch(/^nginxproxy\/nginx-proxy:/);
    expect(publishedPorts(proxy).sort()).toEqual(["443:443", "80:80"]);
    expect(proxy.volumes).toContain("/var/run/docker.sock:/tmp/docker.sock:ro");
    expect(proxy.volumes).toContain(`${path.join(tmp.dir, "deploy/nginx/vhost.d")}:/etc/nginx/vhost.d:ro`);
    expect(existsSync(path.join(ROOT, "deploy/nginx/vhost.d/default_location"))).toBe(true);
    expect(Object.keys(proxy.networks ?? {})).toEqual(["proxy"]);
  });

  it("mcp-lens: the service nginx-proxy routes to, `mcp-lens proxy`, its own volume, admin port unpublished", () => {
    const lens = service("mcp-lens");
    expect(lens.command).toEqual(["mcp-lens", "proxy"]);
    expect(lens.container_name).toBe("mcp-lens"); // docker exec -it mcp-lens inspector
    expect(lens.build?.context).toBe(tmp.dir);
    expect(lens.environment).toMatchObject({
      VIRTUAL_HOST: "mcp.example.com",
      VIRTUAL_PORT: "8080",
      LETSENCRYPT_HOST: "mcp.example.com",
      MCP_LENS_UPSTREAM: "http://coda-mcp:8081",
      MCP_LENS_TRUST_PROXY: "true",
      MCP_LENS_ADMIN_HOST: "0.0.0.0",
      // The admin port refuses Host names it does not know (DNS rebinding); Prometheus scrapes mcp-lens:9464.
      MCP_LENS_ADMIN_ALLOWED_HOSTS: "mcp-lens",
      MCP_LENS_ADMIN_TOKEN: SECRETS.MCP_LENS_ADMIN_TOKEN, // from env_file: .env
      MCP_LENS_DB: "/data/mcp-lens.db",
    });
    expect(lens.ports ?? []).toEqual([]);
    expect(Object.keys(lens.networks ?? {}).sort()).toEqual(["internal", "proxy"]);
  });

  it("coda-mcp: the same image running `mcp-lens server`, not published, on the internal network only", () => {
    const server = service("coda-mcp");
    expect(server.command).toEqual(["mcp-lens", "server"]);
    expect(server.image).toBe(service("mcp-lens").image);
    expect(server.ports ?? []).toEqual([]);
    expect(Object.keys(server.networks ?? {})).toEqual(["internal"]);
    expect(server.environment).toMatchObject({
      MCP_LENS_SERVER_HOST: "0.0.0.0",
      MCP_LENS_SERVER_PORT: "8081",
      PUBLIC_URL: "https://mcp.example.com",
      MCP_LENS_SERVER_KEY: SECRETS.MCP_LENS_SERVER_KEY,
      CODA_API_BASE: "https://coda.io/apis/v1",
      MCP_LENS_SERVER_DB: "/data/server.db",
    });
  });

  it("both SQLite files live in named volumes of their own", () => {
    const lensVolume = volumeAt(service("mcp-lens"), "/data");
    const serverVolume = volumeAt(service("coda-mcp"), "/data");
    expect(lensVolume).toBeDefined();
    expect(serverVolume).toBeDefined();
    expect(lensVolume).not.toBe(serverVolume);
    expect(Object.keys(config.volumes)).toEqual(expect.arrayContaining([lensVolume, serverVolume]));
  });

  it("prometheus: the deploy/ files mounted, the admin token handed over as a file in memory", () => {
    const prometheus = service("prometheus");
    expect(prometheus.image).toMatch(/^prom\/prometheus:/);
    expect(prometheus.volumes).toEqual(
      expect.arrayContaining([
        `${path.join(tmp.dir, "deploy/prometheus.yml")}:/etc/prometheus/prometheus.yml:ro`,
        `${path.join(tmp.dir, "deploy/alerts.yml")}:/etc/prometheus/alerts.yml:ro`,
      ]),
    );
    expect(prometheus.environment?.MCP_LENS_ADMIN_TOKEN).toBe(SECRETS.MCP_LENS_ADMIN_TOKEN);
    expect(prometheus.tmpfs).toContain("/run/mcp-lens");
    const script = (prometheus.entrypoint ?? []).concat(prometheus.command ?? []).join(" ");
    expect(script).toMatch(/> \/run\/mcp-lens\/admin-token && exec \/bin\/prometheus --config\.file=\/etc\/prometheus\/prometheus\.yml/);
    expect(Object.keys(prometheus.networks ?? {})).toEqual(["internal"]);
  });

  it("grafana: provisioning and dashboards mounted, password from .env, published on loopback only", () => {
    const grafana = service("grafana");
    expect(grafana.image).toMatch(/^grafana\/grafana:/);
    expect(grafana.volumes).toEqual(
      expect.arrayContaining([
        `${path.join(tmp.dir, "deploy/grafana/provisioning")}:/etc/grafana/provisioning:ro`,
        `${path.join(tmp.dir, "deploy/grafana/dashboards")}:/var/lib/grafana/dashboards:ro`,
      ]),
    );
    expect(grafana.environment?.GF_SECURITY_ADMIN_PASSWORD).toBe(SECRETS.GRAFANA_ADMIN_PASSWORD);
    expect(publishedPorts(grafana)).toEqual(["127.0.0.1:3000:3000/tcp"]);
    expect(Object.keys(grafana.networks ?? {})).toEqual(["internal"]);
  });

  it("only nginx-proxy listens beyond this host; the networks split the public side from the internal one", () => {
    for (const [name, s] of Object.entries(config.services)) {
      if (name === "nginx-proxy") continue;
      for (const port of publishedPorts(s)) expect(port, `${name} publishes ${port}`).toMatch(/^127\.0\.0\.1:/);
    }
    expect(Object.keys(config.networks).sort()).toEqual(["internal", "proxy"]);
    const on = (network: string) => Object.entries(config.services).filter(([, s]) => network in (s.networks ?? {})).map(([n]) => n).sort();
    expect(on("internal")).toEqual(["coda-mcp", "grafana", "mcp-lens", "mcp-lens-2", "postgres", "prometheus"]);
    expect(on("proxy")).toEqual(["acme-companion", "cloudflared", "mcp-lens", "mcp-lens-2", "nginx-proxy"]);
  });

  // deploy/prometheus.yml and deploy/grafana/ are written alongside: where they exist, they must
  // agree with the paths and names this file gives them.
  it.skipIf(!existsSync(path.join(ROOT, "deploy/prometheus.yml")))("deploy/prometheus.yml scrapes mcp-lens:9464 with the token file and loads the alert rules", async () => {
    const parsed = await run([...composePython(DOCKER_COMPOSE!), "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"], {
      input: read("deploy/prometheus.yml"),
    });
    expect(parsed.code, parsed.stderr).toBe(0);
    const prometheus = JSON.parse(parsed.stdout) as {
      rule_files?: string[];
      scrape_configs?: Array<{ static_configs?: Array<{ targets?: string[] }>; authorization?: { credentials_file?: string } }>;
    };
    // Relative rule files are read from the config file's directory, /etc/prometheus.
    expect((prometheus.rule_files ?? []).map((f) => path.posix.resolve("/etc/prometheus", f))).toContain("/etc/prometheus/alerts.yml");
    const job = prometheus.scrape_configs?.find((c) => c.static_configs?.some((t) => t.targets?.includes("mcp-lens:9464")));
    expect(job, "a scrape job with target mcp-lens:9464").toBeDefined();
    expect(job!.authorization?.credentials_file).toBe("/run/mcp-lens/admin-token");
  });

  it.skipIf(!existsSync(path.join(ROOT, "deploy/grafana/provisioning")))("deploy/grafana/provisioning points at http://prometheus:9090 and /var/lib/grafana/dashboards", () => {
    const files = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : [path.join(dir, e.name)]));
    const provisioning = files(path.join(ROOT, "deploy/grafana/provisioning")).map((f) => readFileSync(f, "utf8")).join("\n");
    expect(provisioning).toMatch(/http:\/\/prometheus:9090/);
    expect(provisioning).toMatch(/\/var\/lib\/grafana\/dashboards/);
  });

  it(".env.example names every variable docker-compose.yml reads, with no secret filled in", () => {
    const used = new Set([...read("docker-compose.yml").matchAll(/(?<!\$)\$\{([A-Z0-9_]+)/g)].map((m) => m[1]!));
    for (const name of used) expect(envExample, `${name} in .env.example`).toMatch(new RegExp(`^(# )?${name}=`, "m"));
    for (const name of Object.keys(SECRETS)) expect(envExample).toMatch(new RegExp(`^${name}=$`, "m"));
  });

  it("coda-mcp's healthcheck passes against a running `mcp-lens server` and fails once it stops", async () => {
    const test = service("coda-mcp").healthcheck?.test ?? [];
    expect(test.slice(0, 2)).toEqual(["CMD", "node"]);
    const argv = [process.execPath, ...test.slice(2)];
    const server = await startServerProcess({ dbPath: path.join(tmp.dir, "server.db"), codaApiBase: "http://127.0.0.1:9" });
    const port = new URL(server.url).port;
    try {
      const healthy = await run(argv, { env: { ...process.env, MCP_LENS_SERVER_PORT: port }, timeoutMs: 5_000 });
      expect(healthy.code, healthy.stderr).toBe(0);
    } finally {
      await server.stop();
    }
    const down = await run(argv, { env: { ...process.env, MCP_LENS_SERVER_PORT: port }, timeoutMs: 5_000 });
    expect(down.code).not.toBe(0);
    expect(down.code).not.toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------
// The nginx examples through the real `nginx -t`

const NGINX = findBinary("nginx", ["/usr/sbin"]);
if (!NGINX && !IN_CI) {
  console.warn("nginx -t of deploy/nginx skipped: nginx is missing (apt-get install nginx); CI=true makes this a failure");
}
const OPENSSL = findBinary("openssl");

/** Directives of a config text, comments dropped, one per entry, whitespace collapsed. */
function directives(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.replace(/#.*$/, "").trim())
    .join(" ")
    .split(/[;{}]/)
    .map((d) => d.replace(/\s+/g, " ").trim())
    .filter(Boolean);
}

/** The body of the first `location / { … }` block (no nested blocks inside it). */
function locationRoot(text: string): string {
  const uncommented = text.split("\n").map((line) => line.replace(/#.*$/, "")).join("\n");
  const blocks = [...uncommented.matchAll(/location\s+\/\s*\{([^{}]*)\}/g)].map((m) => m[1]!);
  return blocks.find((b) => /proxy_pass/.test(b)) ?? "";
}

const SSE_DIRECTIVES = ["proxy_buffering off", "proxy_cache off", "proxy_read_timeout 3600s", "proxy_http_version 1.1"];

describe.runIf(NGINX || IN_CI)("deploy/nginx with the real nginx", () => {
  const tmp = tempDir("mcp-lens-nginx-");

  /** `nginx -t` on a main config holding `http` (the contents of an http {} block). */
  async function nginxTest(name: string, http: string) {
    const prefix = path.join(tmp.dir, name);
    mkdirSync(prefix, { recursive: true });
    const conf = path.join(prefix, "nginx.conf");
    writeFileSync(
      conf,
      [
        `pid ${prefix}/nginx.pid;`,
        "events {}",
        "http {",
        "  access_log off;",
        ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${prefix}/${t}_temp;`),
        http,
        "}",
        "",
      ].join("\n"),
    );
    if (!NGINX) throw new Error("nginx is missing (apt-get install nginx)");
    return run([NGINX, "-t", "-e", "stderr", "-c", conf, "-p", `${prefix}/`]);
  }

  /**
   * deploy/nginx/mcp-lens.conf, ready for `nginx -t` here: the upstream on loopback (nginx
   * resolves names at load), and the placeholder certificate replaced by a fresh self-signed one
   * (without openssl, the TLS lines are dropped instead).
   */
  function renderSite(text: string): string {
    let site = text.replace(/server\s+mcp-lens:8080;/, "server 127.0.0.1:8080;");
    const cert = path.join(tmp.dir, "cert.pem");
    const key = path.join(tmp.dir, "key.pem");
    const made =
      OPENSSL &&
      spawnSync(OPENSSL, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mcp.example.com", "-keyout", key, "-out", cert], { stdio: "ignore" }).status === 0;
    if (made) {
      site = site.replace(/(ssl_certificate\s+)\S+;/, `$1${cert};`).replace(/(ssl_certificate_key\s+)\S+;/, `$1${key};`);
    } else {
      console.warn("openssl is missing: nginx -t runs on mcp-lens.conf without its TLS lines");
      site = site.replace(/listen 443 ssl;/, "listen 443;").replace(/^\s*ssl_\w+[^;]*;/gm, "");
    }
    return site;
  }

  afterAll(() => tmp.cleanup());

  it("mcp-lens.conf: TLS on 443, 80 redirects, and the location proxies with SSE, keep-alive, WebSocket and X-Forwarded-* settings", () => {
    const text = read("deploy/nginx/mcp-lens.conf");
    const all = directives(text);
    expect(all).toEqual(expect.arrayContaining(["listen 443 ssl", "listen 80", "return 301 https://$host$request_uri"]));
    expect(all.some((d) => /^ssl_certificate \S+$/.test(d))).toBe(true);
    expect(all.some((d) => /^ssl_certificate_key \S+$/.test(d))).toBe(true);
    // The WebSocket map: Upgrade when asked for, else an empty Connection (keep-alive upstream).
    expect(text).toMatch(/map \$http_upgrade \$mcp_lens_connection \{\s*default upgrade;\s*''\s+'';\s*\}/);
    expect(all).toEqual(expect.arrayContaining(["server mcp-lens:8080", "keepalive 16"]));
    const location = directives(locationRoot(text));
    expect(location).toEqual(
      expect.arrayContaining([
        "proxy_pass http://mcp_lens",
        ...SSE_DIRECTIVES,
        "proxy_request_buffering off",
        "proxy_send_timeout 3600s",
        "proxy_set_header Upgrade $http_upgrade",
        "proxy_set_header Connection $mcp_lens_connection",
        "proxy_set_header Host $host",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for",
        "proxy_set_header X-Forwarded-Proto $scheme",
        "proxy_set_header X-Forwarded-Host $host",
        "proxy_set_header X-Forwarded-Port $server_port",
      ]),
    );
  });

  it("mcp-lens.conf passes nginx -t (and a broken copy does not, so the check can fail)", async () => {
    const site = renderSite(read("deploy/nginx/mcp-lens.conf"));
    const ok = await nginxTest("site", site);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/test is successful/);

    const broken = await nginxTest("broken", site.replace("proxy_buffering off;", "proxy_buffering of;"));
    expect(broken.code).not.toBe(0);
    expect(broken.stderr).toMatch(/proxy_buffering/);
  });

  it("vhost.d/default_location: the SSE settings, and no proxy_set_header to shadow nginx-proxy's", () => {
    const text = read("deploy/nginx/vhost.d/default_location");
    const found = directives(text);
    expect(found).toEqual(expect.arrayContaining([...SSE_DIRECTIVES, "chunked_transfer_encoding on", "proxy_send_timeout 3600s"]));
    expect(found.filter((d) => d.startsWith("proxy_set_header"))).toEqual([]);
  });

  it("vhost.d/default_location passes nginx -t inside a location shaped like nginx-proxy's", async () => {
    const vhostDir = path.join(tmp.dir, "vhost.d");
    mkdirSync(vhostDir, { recursive: true });
    copyFileSync(path.join(ROOT, "deploy/nginx/vhost.d/default_location"), path.join(vhostDir, "default_location"));
    // What nginx-proxy generates around it: its proxy settings at http level, an upstream per
    // VIRTUAL_HOST, and the include at the end of `location /`.
    const generated = `
  map $http_upgrade $proxy_connection { default upgrade; '' close; }
  proxy_http_version 1.1;
  proxy_buffering off;
  proxy_set_header Host $http_host;
  proxy_set_header Upgrade $http_upgrade;
  proxy_set_header Connection $proxy_connection;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  upstream mcp.example.com { server 127.0.0.1:8080; }
  server {
    server_name mcp.example.com;
    listen 80;
    location / {
      proxy_pass http://mcp.example.com;
      set $upstream_keepalive false;
      include ${vhostDir}/default_location;
    }
  }`;
    const result = await nginxTest("vhost", generated);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/test is successful/);
  });
});
