// Child processes a test starts from Debian's packages (nginx, Prometheus): output kept for
// failure messages, stopped for sure. And nginx as a round-robin front for several mcp-lens replicas.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { waitFor } from "./processes.js";
import { closedPort } from "./upstream.js";

export const NGINX = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => existsSync(p)) ?? "/usr/sbin/nginx";

export interface Child {
  child: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

export function startChild(command: string, args: string[]): Child {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  const output: string[] = [];
  child.stdout!.on("data", (c: Buffer) => output.push(c.toString()));
  child.stderr!.on("data", (c: Buffer) => output.push(c.toString()));
  const exited = new Promise<number | null>((resolve) => {
    child.once("close", (code) => resolve(code));
    child.once("error", (error) => {
      output.push(String(error));
      resolve(null);
    });
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };
  return { child, output, exited, stop };
}

export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Starts nginx in `dir` with `conf` (a whole nginx.conf; PORT is replaced by a free port); resolves once it listens. */
export async function startNginx(dir: string, conf: (port: number) => string): Promise<Child & { url: string }> {
  const port = await closedPort();
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "nginx.conf"), conf(port));
  const nginx = startChild(NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-e", path.join(dir, "error.log"), "-g", `daemon off; pid ${dir}/nginx.pid;`]);
  await waitFor(async () => nginx.child.exitCode !== null || (await portOpen(port)), "nginx to listen", 10_000);
  if (nginx.child.exitCode !== null) throw new Error(`nginx exited: ${nginx.output.join("")}${readFileSync(path.join(dir, "error.log"), "utf8")}`);
  return { ...nginx, url: `http://127.0.0.1:${port}` };
}

/**
 * nginx spreading requests over `upstreams` (host:port) in turn, as a load balancer in front of
 * replicas does: unbuffered (SSE), HTTP/1.1 with keepalive upstream, the client's Host passed on.
 */
export function roundRobinConf(dir: string, upstreams: string[]) {
  return (port: number) => `
worker_processes 1;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream replicas {
    ${upstreams.map((u) => `server ${u} max_fails=0;`).join("\n    ")}
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 60s;
      proxy_next_upstream error timeout;
    }
  }
}
`;
}
