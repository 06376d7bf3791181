// Following new traffic (follow.ts: the proxy's /live WebSocket when it is reachable, else
// polling the read-only recording). The views only learn "something changed" (a
// tick) and re-read what they show: state is updated in place and Ink repaints only the lines
// that differ, so the screen never flickers.
import { useEffect, useState } from "react";
import { followTraffic, liveUrlOf } from "../follow.js";
import type { UiData } from "./types.js";

export type FollowMode = "live" | "polling" | "off";

export interface FollowOptions {
  data: UiData;
  /** ws://…/live; default: the admin URL the proxy recorded in the database's meta. */
  liveUrl?: string;
  adminToken?: string;
  /** Database poll interval while the WebSocket is not connected. */
  pollMs?: number;
  enabled?: boolean;
}

/** Bursts of messages become one re-read. */
const COALESCE_MS = 150;

/** The /live URL: the explicit one, else the proxy's (follow.ts liveUrlOf). */
export function liveUrlFor(data: UiData, explicit?: string): string | undefined {
  return explicit || liveUrlOf(data);
}

export function metaValue(data: UiData, key: string): string | null {
  try {
    return data.meta()[key] || null;
  } catch {
    return null;
  }
}

export function useFollow({ data, liveUrl, adminToken, pollMs = 1000, enabled = true }: FollowOptions): { tick: number; mode: FollowMode } {
  const [tick, setTick] = useState(0);
  const [mode, setMode] = useState<FollowMode>(enabled ? "polling" : "off");

  useEffect(() => {
    if (!enabled) return;
    let stopped = false;
    let pending: NodeJS.Timeout | undefined;
    const bump = () => {
      if (pending || stopped) return;
      pending = setTimeout(() => {
        pending = undefined;
        if (!stopped) setTick((t) => t + 1);
      }, COALESCE_MS);
    };
    const url = liveUrlFor(data, liveUrl);
    const follower = followTraffic(data, {
      ...(url ? { liveUrl: url } : {}),
      ...(adminToken ? { adminToken } : {}),
      pollMs,
      onMessage: bump,
      onMode: (m) => {
        if (stopped) return;
        setMode(m);
        bump(); // catch up on what happened while switching
      },
      onError: () => {}, // the next poll retries
    });
    return () => {
      stopped = true;
      clearTimeout(pending);
      follower.close();
    };
  }, [data, liveUrl, adminToken, pollMs, enabled]);

  return { tick, mode };
}
