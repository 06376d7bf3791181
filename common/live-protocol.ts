// The messages of the live feed (WebSocket /live on the proxy's admin port), as the proxy sends
// them and the inspector and other tools read them: one JSON object per message, after a
// {"type":"hello","version":1}.
import type { ClassifiedExchange } from "../analysis/exchange.js";
import type { Handshake } from "../analysis/handshake.js";

export type LiveMessage =
  | { type: "exchange"; exchange: ClassifiedExchange; handshakeId: number | null }
  | { type: "handshake"; handshake: Handshake };
