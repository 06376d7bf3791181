// The recorder thread as a batch job for the kernel's scheduler (Linux SCHED_BATCH): it keeps its
// fair share of the CPU, so at saturation it still records everything, but it no longer preempts
// the forwarding thread when it wakes. Without this, each hand-over (every 10 ms) woke the
// recorder, which took the core the proxy and the recorder share (the bench pins both to one)
// and held requests up for its whole time slice: tens of ms at the p99 at a quarter of the load.
// Set on this thread only (Linux scheduling attributes are per thread), with util-linux's chrt:
// Node has no sched_setscheduler, and an unprivileged thread may switch itself to SCHED_BATCH.
import { spawnSync } from "node:child_process";
import { readlinkSync } from "node:fs";

/** Makes the calling thread a batch job; false where that is not possible (not Linux, no chrt). */
export function runAsBatchJob(): boolean {
  if (process.platform !== "linux") return false;
  try {
    // "<pid>/task/<tid>": the calling thread's own id, which chrt takes as a pid.
    const tid = readlinkSync("/proc/thread-self").split("/").at(-1) ?? "";
    if (!/^\d+$/.test(tid)) return false;
    return spawnSync("chrt", ["--batch", "--pid", "0", tid], { stdio: "ignore", timeout: 2_000 }).status === 0;
  } catch {
    return false;
  }
}
