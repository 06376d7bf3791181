// Reading the recording from a view: an SQLite answer comes at once and renders as before; a
// PostgreSQL answer is a promise, and the view shows what it had for the same key (or nothing)
// until it resolves. One read at a time: ticks that come while a read is on its way make one
// more read when it ends, not a queue of them on a slow database.
import { useEffect, useMemo, useRef, useState } from "react";
import type { Maybe } from "../recording.js";

const SKIPPED = Symbol("skipped");
/** A read that failed (the database away) is made again after this. */
const RETRY_MS = 1_000;

/**
 * `read()`'s answer, read again when `deps` change; undefined while the first answer for `key`
 * (what is shown: a handshake's id, the filters) is on its way.
 */
export function useRecorded<T>(read: () => Maybe<T>, deps: readonly unknown[], key: unknown = null): T | undefined {
  const [again, setAgain] = useState(0);
  const [resolved, setResolved] = useState<{ key: unknown; value: T } | undefined>(undefined);
  const reading = useRef(false);
  const missed = useRef(false);
  const mounted = useRef(true);
  useEffect(
    () => () => {
      mounted.current = false;
    },
    [],
  );
  const answer = useMemo(() => {
    if (reading.current) {
      missed.current = true;
      return SKIPPED;
    }
    return read();
    // eslint-disable-next-line react-hooks/exhaustive-deps -- the caller names what read() depends on
  }, [...deps, again]);
  useEffect(() => {
    if (!(answer instanceof Promise)) return;
    reading.current = true;
    const forKey = key;
    answer
      .then(
        (value: T) => mounted.current && setResolved({ key: forKey, value }),
        // Read again in a while: ticks come only with new traffic, a quiet recording sends none.
        () => void setTimeout(() => mounted.current && setAgain((n) => n + 1), RETRY_MS),
      )
      .finally(() => {
        reading.current = false;
        if (missed.current && mounted.current) {
          missed.current = false;
          setAgain((n) => n + 1);
        }
      });
    // eslint-disable-next-line react-hooks/exhaustive-deps -- the key is read with the answer it belongs to
  }, [answer]);
  if (answer !== SKIPPED && !(answer instanceof Promise)) return answer as T;
  return resolved !== undefined && Object.is(resolved.key, key) ? resolved.value : undefined;
}
