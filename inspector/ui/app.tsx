// The interactive inspector: a stack of screens (list → handshake → exchange, replay, help).
// Screens below the top stay mounted (hidden), so going back finds them as they were.
import { Box, render, useApp, useStdout } from "ink";
import { useEffect, useState, type ReactNode } from "react";
import type { Recording } from "../recording.js";
import { replayHandshake } from "../replay.js";
import { ExchangeView } from "./exchange.js";
import { HandshakeView } from "./handshake.js";
import { HelpView } from "./help.js";
import { KeyRouter } from "./input.js";
import type { Action, View } from "./keymap.js";
import { ListView } from "./list.js";
import { useFollow } from "./live.js";
import { ReplayView } from "./replay.js";
import { ENTER, LEAVE, LineDiffScreen } from "./screen.js";
import type { Replay, Screen, ScreenProps, UiData } from "./types.js";

export interface AppProps {
  data: UiData;
  dbPath: string;
  liveUrl?: string;
  adminToken?: string;
  /** Fixed size (tests); default: the terminal's, following resizes. */
  width?: number;
  height?: number;
  /** Follow new traffic (default true). */
  follow?: boolean;
  pollMs?: number;
  replay?: Replay;
}

/** The terminal's size, kept current on resize. */
function useTerminalSize(fixed: { width?: number; height?: number }): { width: number; height: number } {
  const { stdout } = useStdout();
  const [size, setSize] = useState({ width: stdout.columns || 80, height: stdout.rows || 24 });
  useEffect(() => {
    const onResize = () => setSize({ width: stdout.columns || 80, height: stdout.rows || 24 });
    stdout.on("resize", onResize);
    return () => {
      stdout.off("resize", onResize);
    };
  }, [stdout]);
  return { width: fixed.width ?? size.width, height: fixed.height ?? size.height };
}

type Entry = Screen & { key: number };

export function App({ data, dbPath, liveUrl, adminToken, width: w, height: h, follow = true, pollMs, replay = replayHandshake }: AppProps): ReactNode {
  const { exit } = useApp();
  const { width, height: rows } = useTerminalSize({ width: w, height: h });
  const height = Math.max(5, rows);
  const { tick, mode } = useFollow({ data, ...(liveUrl ? { liveUrl } : {}), ...(adminToken ? { adminToken } : {}), ...(pollMs ? { pollMs } : {}), enabled: follow });
  const [stack, setStack] = useState<Entry[]>([{ view: "list", key: 0 }]);
  const top = stack[stack.length - 1]!;

  const open = (screen: Screen) => setStack((s) => [...s, { ...screen, key: (s[s.length - 1]?.key ?? 0) + 1 }]);
  const back = () => (stack.length > 1 ? setStack((s) => s.slice(0, -1)) : exit());
  const fallback = (action: Action, view: View) => {
    if (action === "quit") exit();
    else if (action === "back") back();
    else if (action === "help") (view === "help" ? back() : open({ view: "help" }));
  };

  const screen = (entry: Entry, active: boolean): ReactNode => {
    const props: ScreenProps = { data, active, width, height, tick, open };
    switch (entry.view) {
      case "list":
        return <ListView {...props} dbPath={dbPath} mode={mode} />;
      case "handshake":
        return <HandshakeView {...props} id={entry.id} />;
      case "exchange":
        return <ExchangeView {...props} id={entry.id} />;
      case "replay":
        return <ReplayView {...props} id={entry.id} replay={replay} />;
      case "help":
        return <HelpView {...props} />;
    }
  };

  return (
    <KeyRouter fallback={fallback}>
      <Box flexDirection="column" width={width} height={height} overflow="hidden">
        {stack.map((entry) => (
          <Box key={entry.key} display={entry === top ? "flex" : "none"} flexDirection="column">
            {screen(entry, entry === top)}
          </Box>
        ))}
      </Box>
    </KeyRouter>
  );
}

/** Runs the inspector full screen (the alternate screen, left as it was on exit) until the user quits. */
export async function runInteractive(opts: { data: Recording; dbPath: string; liveUrl?: string; adminToken?: string }): Promise<void> {
  const screen = new LineDiffScreen(process.stdout);
  const restore = () => process.stdout.write(LEAVE);
  process.stdout.write(ENTER);
  process.once("exit", restore);
  try {
    const app = render(
      <App data={opts.data} dbPath={opts.dbPath} {...(opts.liveUrl ? { liveUrl: opts.liveUrl } : {})} {...(opts.adminToken ? { adminToken: opts.adminToken } : {})} />,
      {
        stdout: screen as unknown as NodeJS.WriteStream,
        // Whole frames, one write each: LineDiffScreen writes only the lines that changed.
        debug: true,
        patchConsole: false,
        exitOnCtrlC: false, // Ctrl-C is in the keymap
      },
    );
    // Stopped from outside (docker stop, a closed terminal): unmount, so the terminal is restored.
    const stop = () => app.unmount();
    process.once("SIGTERM", stop);
    process.once("SIGHUP", stop);
    try {
      await app.waitUntilExit();
    } finally {
      process.off("SIGTERM", stop);
      process.off("SIGHUP", stop);
    }
  } finally {
    screen.close();
    process.off("exit", restore);
    restore();
  }
}
