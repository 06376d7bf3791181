// The terminal as Ink sees it: Ink renders whole frames into this (its debug mode, one write per
// frame), and only the lines that differ from the previous frame are written to the real
// terminal, each at its absolute row on the alternate screen. No clear, no erase-and-redraw:
// nothing flickers when new traffic arrives, and Ink's own cursor arithmetic is out of the way.
import { EventEmitter } from "node:events";
import { terminalSafeStyled } from "../../common/terminal-safe.js";

const ESC = "\x1b[";
export const ENTER = `${ESC}?1049h${ESC}?25l${ESC}2J`;
export const LEAVE = `${ESC}?25h${ESC}?1049l`;
/** Synchronized update (mode 2026): terminals that know it paint the batch at once; others ignore it. */
const BEGIN = `${ESC}?2026h`;
const END = `${ESC}?2026l`;

export class LineDiffScreen extends EventEmitter {
  readonly isTTY = true;
  private previous: string[] = [];

  constructor(private readonly out: NodeJS.WriteStream) {
    super();
    out.on("resize", this.onResize);
  }

  get columns(): number {
    return this.out.columns || 80;
  }

  get rows(): number {
    return this.out.rows || 24;
  }

  write(frame: string, callback?: () => void): boolean {
    // Ink's frames hold its colour codes only; anything else that slipped in is shown, not obeyed.
    const lines = frame.replace(/\n$/, "").split("\n").map(terminalSafeStyled);
    let batch = "";
    for (let i = 0; i < Math.max(lines.length, this.previous.length); i++) {
      if (lines[i] !== this.previous[i]) batch += `${ESC}${i + 1};1H${lines[i] ?? ""}${ESC}0m${ESC}K`;
    }
    this.previous = lines;
    return batch ? this.out.write(BEGIN + batch + END, callback) : (callback?.(), true);
  }

  close(): void {
    this.out.off("resize", this.onResize);
  }

  /** A new size reflows every line: start from a blank screen once. */
  private readonly onResize = () => {
    this.previous = [];
    this.out.write(`${ESC}2J`);
    this.emit("resize");
  };
}
