// How a recorded secret looks: `[redacted:xxxxxxxx]`, the first 8 hex chars of an HMAC of the
// secret (proxy/record/redact.ts makes them). The analysis follows a token from the response
// that issued it to the requests that carry it by these fingerprints, and the inspector shows them.

/** A marker anywhere in a text; group 1 is the fingerprint. Global: use with matchAll/replace. */
export const REDACTED_PATTERN = /\[redacted:([0-9a-f]{8})\]/g;
/** The first marker in a text; group 1 is the fingerprint. */
export const REDACTED_MARKER = /\[redacted:([0-9a-f]{8})\]/;
/** A text that is one marker and nothing else. */
export const MARKER_ONLY = /^\[redacted:[0-9a-f]{8}\]$/;

/** The fingerprints of the markers in a text, in order of appearance, without duplicates. */
export function fingerprintsIn(text: string): string[] {
  return [...new Set(Array.from(text.matchAll(REDACTED_PATTERN), (m) => m[1]!))];
}
