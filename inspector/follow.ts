// Following new traffic: the proxy's /live WebSocket when it connects, else (or once it closes)
// polling the recording read-only (Recording.poller). Messages are the /live feed's either way.
import WebSocket from "ws";
import type { LiveMessage } from "../common/live-protocol.js";
import type { Recording, RecordingPoller } from "./recording.js";

/**
 * ws://…/live of the proxy's admin port: `adminUrl` (--admin-url), else the one the proxy
 * recorded. On a shared PostgreSQL database, only an explicit one: the database itself is where
 * every replica's traffic meets, and it is polled.
 */
export function liveUrlOf(data: Recording, adminUrl = ""): string | undefined {
  const base = adminUrl || (data.kind === "sqlite" ? data.meta().admin_url : undefined);
  if (!base) return undefined;
  try {
    const url = new URL("/live", base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  } catch {
    return undefined;
  }
}

export type FollowMode = "live" | "polling";

export interface FollowOptions {
  /** The proxy's feed, ws://…/live on its admin port; without it the database is polled. */
  liveUrl?: string;
  adminToken?: string;
  /** Default 500 ms. */
  pollMs?: number;
  onMessage(message: LiveMessage): void;
  /** How traffic is followed from now on, and why. */
  onMode?(mode: FollowMode, reason: string): void;
  /** A poll that failed (the next one retries). */
  onError?(error: Error): void;
}

/**
 * Follows new traffic: the /live WebSocket when it connects, else (or once it closes) polling the
 * recording, from the last exchange seen. Messages are the /live feed's either way.
 */
export function followTraffic(data: Recording, options: FollowOptions): { close(): void } {
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let socket: WebSocket | undefined;
  /** The newest exchange the live feed delivered: polling goes on from there. */
  let last: number | undefined;
  // Taken now, so that a feed that never connects loses nothing recorded meanwhile.
  const fromNow = new Promise<RecordingPoller>((resolve) => resolve(data.poller()));
  fromNow.catch(() => undefined); // reported by the first poll
  const deliver = (message: LiveMessage) => {
    if (message.type === "exchange") last = Math.max(last ?? 0, message.exchange.id);
    options.onMessage(message);
  };
  const poll = (reason: string) => {
    if (closed || timer) return;
    options.onMode?.("polling", reason);
    const start = () => {
      const started = new Promise<RecordingPoller>((resolve) => resolve(data.poller(last)));
      started.catch(() => undefined); // reported by the poll that uses it
      return started;
    };
    let poller = last === undefined ? fromNow : start();
    let polling = false;
    timer = setInterval(() => {
      if (polling) return; // one poll at a time: a slow database is not asked again meanwhile
      polling = true;
      const current = poller;
      current
        .then((p) => p.poll())
        .then(
          (messages) => messages.forEach(deliver),
          (error: unknown) => {
            options.onError?.(error as Error);
            // A poller that could not start (the database was down) is started again.
            current.catch(() => {
              if (poller === current && !closed) poller = start();
            });
          },
        )
        .finally(() => (polling = false));
    }, options.pollMs ?? 500);
  };
  if (!options.liveUrl) {
    poll("no live feed address");
  } else {
    const url = options.liveUrl;
    const headers: Record<string, string> = options.adminToken ? { authorization: `Bearer ${options.adminToken}` } : {};
    socket = new WebSocket(url, { headers, handshakeTimeout: 2_000 });
    socket.on("open", () => options.onMode?.("live", `following ${url}`));
    socket.on("message", (raw) => {
      const message = JSON.parse(String(raw)) as LiveMessage | { type: "hello" };
      if (message.type !== "hello") deliver(message);
    });
    socket.on("error", (error) => poll(`cannot follow ${url}: ${error.message}`));
    socket.on("close", (code) => poll(`the live feed at ${url} closed (${code})`));
  }
  return {
    close() {
      closed = true;
      clearInterval(timer);
      socket?.terminate();
    },
  };
}
