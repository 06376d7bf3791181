// The processes under test, each pinned to the server CPU: the upstream, the bare http-proxy-3
// proxy, mcp-lens (the built CLI, recording to a temp SQLite file) and nginx.
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { proxyNodeFlags } from "../helpers/node-flags.js";
import { CLI_LENS } from "./common.js";
import { childPids, cpuSeconds, mainThreadCpuSeconds, freePort, getJson, NGINX, SERVER_CPU, startProcess, tsxArgs, type Proc } from "./procs.js";

export interface Target {
  proc: Proc;
  /** Base URL, no trailing slash. */
  url: string;
  /** CPU seconds so far of every process doing its work (nginx: master and workers). */
  cpu(): number;
  /** CPU seconds of the thread that forwards, where the process has others (mcp-lens's recorder). */
  mainThreadCpu?(): number;
}

export async function startUpstream(name = "upstream"): Promise<Target> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    name,
    command: process.execPath,
    args: tsxArgs("upstream-server.ts", ["--port", String(port)]),
    cpu: SERVER_CPU,
    readyUrl: `${url}/count`,
  });
  return { proc, url, cpu: () => cpuSeconds(proc.pid) };
}

/** Requests the upstream has answered so far. */
export async function upstreamCount(upstream: Target): Promise<number> {
  return (await getJson<{ answered: number }>(`${upstream.url}/count`)).answered;
}

export async function startBareProxy(upstream: Target): Promise<Target> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    name: "bare proxy",
    command: process.execPath,
    args: tsxArgs("bare-proxy.ts", ["--port", String(port), "--upstream", upstream.url]),
    cpu: SERVER_CPU,
    readyUrl: `${url}/count`,
  });
  return { proc, url, cpu: () => cpuSeconds(proc.pid) };
}

export interface LensTarget extends Target {
  adminUrl: string;
  dbPath: string;
}

export interface LensHealth {
  status: string;
  recorder: { queued: number; written: number; batches: number; dropped: Record<string, number>; failing: boolean };
}

/**
 * The flags the bench runs mcp-lens with beyond its addresses and database: none, so it runs with
 * the shipped defaults (`--log-level info`, no per-exchange line: `--log-exchanges` is opt-in).
 * Its stdout goes to a file, as to a log collector.
 */
export const LENS_BENCH_FLAGS: readonly string[] = [];

/** mcp-lens as an operator runs it: the shipped defaults (LENS_BENCH_FLAGS), with `extraArgs` on top; an SQLite file in `dir` unless `db` names one (a postgres:// URL). */
export async function startLens(upstreamUrl: string, dir: string, extraArgs: string[] = [], db?: string): Promise<LensTarget> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const dbPath = db ?? path.join(dir, `lens-${port}.db`);
  const args = ["proxy", "--upstream", upstreamUrl, "--host", "127.0.0.1", "--port", String(port), "--admin-port", String(adminPort)];
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const proc = await startProcess({
    name: "mcp-lens",
    command: process.execPath,
    args: [...proxyNodeFlags(CLI_LENS), CLI_LENS, ...args, "--db", dbPath, ...LENS_BENCH_FLAGS, ...extraArgs],
    cpu: SERVER_CPU,
    readyUrl: `${adminUrl}/health`,
    stdoutFile: path.join(dir, `lens-${port}.log`),
  });
  return { proc, url: `http://127.0.0.1:${port}`, adminUrl, dbPath, cpu: () => cpuSeconds(proc.pid), mainThreadCpu: () => mainThreadCpuSeconds(proc.pid) };
}

export function lensHealth(lens: LensTarget): Promise<LensHealth> {
  return getJson<LensHealth>(`${lens.adminUrl}/health`);
}

/** mcp-lens's own gauge of open SSE streams, from /metrics. */
export async function lensActiveSseStreams(lens: LensTarget): Promise<number> {
  const res = await fetch(`${lens.adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  const match = /^mcp_lens_active_sse_streams(?:\{[^}]*\})?\s+(\S+)/m.exec(await res.text());
  return match ? Number(match[1]) : NaN;
}

/**
 * nginx as a keep-alive reverse proxy, the way the README's deployment runs it. keepalive_requests
 * is raised on both sides so that neither nginx nor wrk reconnects every 1000 requests while the
 * Node proxies never do.
 */
function nginxConf(dir: string, port: number, upstreamPort: number): string {
  const temp = (name: string) => path.join(dir, name);
  return `daemon off;
worker_processes 1;
pid ${temp("nginx.pid")};
error_log ${temp("error.log")} warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${temp("client_body")};
  proxy_temp_path ${temp("proxy")};
  fastcgi_temp_path ${temp("fastcgi")};
  uwsgi_temp_path ${temp("uwsgi")};
  scgi_temp_path ${temp("scgi")};
  keepalive_requests 1000000;
  upstream u { server 127.0.0.1:${upstreamPort}; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://u;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
`;
}

export async function startNginx(upstream: Target, dir: string): Promise<Target> {
  if (!NGINX) throw new Error("nginx is missing: install it: apt-get install nginx");
  const prefix = path.join(dir, "nginx");
  mkdirSync(prefix, { recursive: true });
  // The worker runs as an unprivileged user when started as root: it must reach its temp dirs.
  chmodSync(dir, 0o755);
  const port = await freePort();
  const conf = path.join(prefix, "nginx.conf");
  writeFileSync(conf, nginxConf(prefix, port, Number(new URL(upstream.url).port)));
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    name: "nginx",
    command: NGINX,
    args: ["-p", prefix, "-c", conf, "-e", path.join(prefix, "error.log")],
    cpu: SERVER_CPU,
    readyUrl: `${url}/count`,
  });
  const cpu = () => cpuSeconds(proc.pid) + childPids(proc.pid).reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  return { proc, url, cpu };
}
