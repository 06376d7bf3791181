// What the views need from the read-only database, and from the replayer.
import type { HandshakeDetail, HandshakeSummary, Recording } from "../recording.js";
import type { replayHandshake } from "../replay.js";

/** The read-only recording the views read (and follow new traffic in). */
export type UiData = Recording;

export type Summary = HandshakeSummary;
export type Detail = HandshakeDetail;
export type Replay = typeof replayHandshake;
export type ReplayResult = Awaited<ReturnType<Replay>>;

/** What a screen gets from the app. */
export interface ScreenProps {
  data: UiData;
  /** True for the visible screen: only it reacts to keys. */
  active: boolean;
  width: number;
  height: number;
  /** Changes whenever new traffic may have arrived. */
  tick: number;
  open: (screen: Screen) => void;
}

export type Screen =
  | { view: "list" }
  | { view: "handshake"; id: number }
  | { view: "exchange"; id: number }
  | { view: "replay"; id: number }
  | { view: "help" };
