// Reading the recording from a view: an SQLite answer comes at once and renders as before; a
// PostgreSQL answer is a promise, and the view shows what it had (or nothing) until it resolves.
import { useEffect, useMemo, useState } from "react";
import type { Maybe } from "../recording.js";

/** `read()`'s answer, read again when `deps` change; undefined while the first one is on its way. */
export function useRecorded<T>(read: () => Maybe<T>, deps: readonly unknown[]): T | undefined {
  // eslint-disable-next-line react-hooks/exhaustive-deps -- the caller names what read() depends on
  const answer = useMemo(read, deps);
  const [resolved, setResolved] = useState<{ value: T } | undefined>(undefined);
  useEffect(() => {
    if (!(answer instanceof Promise)) return;
    let current = true;
    answer.then(
      (value) => current && setResolved({ value }),
      () => undefined, // the next tick reads again
    );
    return () => {
      current = false;
    };
  }, [answer]);
  return answer instanceof Promise ? resolved?.value : answer;
}
