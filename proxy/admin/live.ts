// The live feed: a WebSocket on the admin port (/live) that streams every recorded exchange
// and handshake update as JSON, for the inspector's live view and for other tools.
import type http from "node:http";
import type { Duplex } from "node:stream";
import type { WebSocket, WebSocketServer } from "ws";
import type { ClassifiedExchange } from "../../analysis/exchange.js";
import type { Handshake } from "../../analysis/handshake.js";
import type { LiveMessage } from "../../common/live-protocol.js";

/** A subscriber this far behind is cut: the feed never grows memory without bound. */
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
/**
 * The largest frame a subscriber may send. The feed is one-way: clients send nothing but
 * control frames (ping, close: at most 125 bytes). ws reads the length from the frame header
 * and closes with 1009 before buffering the payload; its default (100 MiB) let eight
 * subscribers grow the proxy by ~1 GB.
 */
const MAX_INCOMING_FRAME_BYTES = 4 * 1024;

export type { LiveMessage };

export class LiveFeed {
  /** Loaded with the first subscriber: most proxies never have one (the `ws` module is ~4 MiB RSS). */
  private wss: WebSocketServer | null = null;
  private loading: Promise<WebSocketServer> | null = null;
  private closed = false;
  /** Upgrades accepted but not yet open (ws loading, handshake under way): they count against the cap. */
  private pending = 0;

  /**
   * `onSubscribers` hears the count change: records are only shipped while someone listens.
   * `maxSubscribers` bounds the sockets (and their send buffers) the feed holds at once.
   */
  constructor(
    private readonly onSubscribers: (count: number) => void = () => {},
    readonly maxSubscribers = 16,
  ) {}

  get subscribers(): number {
    return this.wss?.clients.size ?? 0;
  }

  /** No room for another subscriber: the admin server refuses the upgrade (503). */
  get full(): boolean {
    return this.subscribers + this.pending >= this.maxSubscribers;
  }

  /** Called from the admin server's upgrade event once the request is authorized. */
  accept(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    this.loading ??= import("ws").then(
      ({ WebSocketServer }) => (this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_INCOMING_FRAME_BYTES })),
    );
    const onError = () => socket.destroy(); // the client left while ws loads: no unhandled error
    socket.on("error", onError);
    this.pending++;
    // Once, whichever way the handshake ends: opened, refused by ws, or the socket gone.
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      this.pending--;
    };
    socket.once("close", settle);
    this.loading.then(
      (wss) => {
        socket.off("error", onError);
        if (this.closed || socket.destroyed) {
          settle();
          return void socket.destroy();
        }
        wss.handleUpgrade(req, socket, head, (ws) => {
          settle();
          ws.on("error", () => ws.terminate());
          ws.on("close", () => this.onSubscribers(wss.clients.size));
          this.onSubscribers(wss.clients.size);
          ws.send(JSON.stringify({ type: "hello", version: 1 }));
        });
      },
      () => {
        settle();
        socket.destroy();
      },
    );
  }

  publish(exchanges: ClassifiedExchange[], handshakes: Handshake[], handshakeIds: Array<number | null>): void {
    if (!this.wss || this.wss.clients.size === 0) return;
    const messages: string[] = [];
    exchanges.forEach((exchange, i) => messages.push(JSON.stringify({ type: "exchange", exchange, handshakeId: handshakeIds[i] ?? null } satisfies LiveMessage)));
    for (const handshake of handshakes) messages.push(JSON.stringify({ type: "handshake", handshake } satisfies LiveMessage));
    for (const client of this.wss.clients) this.send(client, messages);
  }

  close(): void {
    this.closed = true;
    if (!this.wss) return;
    for (const client of this.wss.clients) client.terminate();
    this.wss.close();
  }

  private send(client: WebSocket, messages: string[]): void {
    if (client.readyState !== client.OPEN) return;
    if (client.bufferedAmount > MAX_BUFFERED_BYTES) {
      client.close(1013, "too slow: reconnect and catch up from the database");
      return;
    }
    for (const message of messages) client.send(message);
  }
}
