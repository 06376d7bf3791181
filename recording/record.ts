// RawExchange → RecordedExchange: decode the bodies, then redact everything that may hold a secret.

import zlib from "node:zlib";
import { forwardedHeaders } from "../common/forwarding-headers.js";
import { headerValue, type CapturedBody, type HeaderPairs, type RawExchange, type RecordedBody, type RecordedExchange } from "../analysis/exchange.js";
import type { Redactor } from "./redact.js";

/**
 * Decoded output is capped at the recording cap (--max-body): a body is recorded up to that many
 * bytes anyway, and a decompression bomb then costs no more memory, CPU or disk than a plain
 * body. The default matches --max-body's.
 */
export const DEFAULT_MAX_DECODED_BYTES = 64 * 1024;
/** `gzip, gzip` is undone layer by layer; more layers than this are not worth unwrapping. */
const MAX_ENCODING_LAYERS = 3;

export interface RecordOptions {
  /** The most bytes a body decodes to for recording (the recording cap). */
  maxDecodedBytes?: number;
}

export function toRecorded(raw: RawExchange, redactor: Redactor, options: RecordOptions = {}): RecordedExchange {
  const max = options.maxDecodedBytes ?? DEFAULT_MAX_DECODED_BYTES;
  // The headers as the upstream received them; the client's replaced originals kept as claims.
  const { sent, claimed, setByProxy } = forwardedHeaders(raw.requestHeaders, raw.forwarding);
  // Field by field rather than a spread, so that a field added to RawExchange is never stored unredacted.
  return {
    id: raw.id,
    startedAt: raw.startedAt,
    durationMs: raw.durationMs,
    ttfbMs: raw.ttfbMs,
    clientAddr: raw.clientAddr,
    method: raw.method,
    host: raw.host,
    // The request target as sent: a client may put userinfo, a fragment or a secret segment in it.
    path: redactor.path(raw.path),
    query: redactor.query(raw.query),
    status: raw.status,
    upstreamError: raw.upstreamError,
    aborted: raw.aborted,
    websocket: raw.websocket,
    requestHeaders: redactor.headers(sent),
    requestBody: recordBody(raw.requestBody, raw.requestHeaders, redactor, max),
    responseHeaders: raw.responseHeaders && redactor.headers(raw.responseHeaders),
    responseBody: recordBody(raw.responseBody, raw.responseHeaders, redactor, max),
    sseEvents: raw.sseEvents,
    ...(claimed.length ? { claimedHeaders: redactor.headers(claimed) } : {}),
    ...(setByProxy.length ? { setByProxy } : {}),
  };
}

/**
 * Decodes the Content-Encoding, then redacts as UTF-8 text by content type. Bytes that cannot be
 * turned into text (an encoding that cannot be undone, binary data) are not recorded at all,
 * only their size: redaction cannot see into them, and base64 of them would keep any secret
 * inside recoverable.
 */
export function recordBody(
  body: CapturedBody,
  headers: HeaderPairs | null,
  redactor: Redactor,
  maxDecodedBytes = DEFAULT_MAX_DECODED_BYTES,
): RecordedBody {
  const recorded = { size: body.size, truncated: body.truncated };
  if (body.bytes.length === 0) return { text: null, encoding: "utf8", ...recorded, decoded: null };
  const result = decodeContent(body.bytes, headerValue(headers, "content-encoding") ?? null, maxDecodedBytes);
  if (result === null) return { text: null, encoding: "omitted", ...recorded, decoded: null };
  const { bytes, decoded, cut } = result;
  if (bytes.length === 0) return { text: null, encoding: "utf8", ...recorded, decoded };
  const text = utf8Text(bytes, body.truncated || cut);
  if (text === null) return { text: null, encoding: "omitted", ...recorded, decoded };
  return {
    text: redactor.body(text, headerValue(headers, "content-type") ?? null),
    encoding: "utf8",
    ...recorded,
    // A body cut at the decoding cap is a truncated record too.
    truncated: recorded.truncated || cut,
    decoded,
  };
}

// ---------------------------------------------------------------------------------------------
// Content-Encoding

type Decoder = (input: Buffer, maxOutputLength: number) => Buffer;

// Captured bodies are capped, so a compressed stream may be cut off: a sync flush instead of a
// finish returns what can be decoded rather than failing on the missing end.
const zlibOptions = (maxOutputLength: number) => ({ finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength });
const gunzip: Decoder = (input, max) => zlib.gunzipSync(input, zlibOptions(max));
const brotli: Decoder = (input, max) =>
  zlib.brotliDecompressSync(input, { finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH, maxOutputLength: max });
/** HTTP `deflate` is meant to be zlib-wrapped, but some servers send raw deflate. */
const inflate: Decoder = (input, max) => {
  try {
    return zlib.inflateSync(input, zlibOptions(max));
  } catch {
    return zlib.inflateRawSync(input, zlibOptions(max));
  }
};

const DECODERS: Record<string, Decoder> = { gzip: gunzip, "x-gzip": gunzip, deflate: inflate, br: brotli };

interface Decoded {
  bytes: Buffer;
  /** The encodings that were decoded, as the header listed them; null when there were none. */
  decoded: string | null;
  /** Only a prefix of the content could be decoded (cut at the cap, or corrupt further on). */
  cut: boolean;
}

/**
 * Undoes each listed encoding, last applied first. Null when one cannot be undone: unknown
 * (zstd, compress), too many layers, or data that does not decode at all.
 */
function decodeContent(bytes: Buffer, contentEncoding: string | null, max: number): Decoded | null {
  const layers = (contentEncoding ?? "")
    .toLowerCase()
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "" && e !== "identity");
  if (layers.length === 0) return { bytes, decoded: null, cut: false };
  if (layers.length > MAX_ENCODING_LAYERS || layers.some((e) => !DECODERS[e])) return null;
  let current = bytes;
  let cut = false;
  for (const encoding of [...layers].reverse()) {
    const decoder = DECODERS[encoding]!;
    const whole = tryDecode(decoder, current, max);
    if (whole) {
      current = whole;
      continue;
    }
    // Past the cap, or corrupt further on: keep what a prefix decodes to.
    const prefix = longestDecodablePrefix(decoder, current, max);
    if (!prefix || prefix.length === 0) return null;
    current = prefix;
    cut = true;
  }
  return { bytes: current, decoded: layers.join(", "), cut };
}

function tryDecode(decoder: Decoder, input: Buffer, max: number): Buffer | null {
  try {
    return decoder(input, max);
  } catch {
    return null;
  }
}

/**
 * Binary search: decodability only gets lost as the input grows (output cap, corrupt data).
 * Each try is bounded by the cap, so a bomb costs log2(input) decodes of at most `max` bytes.
 */
function longestDecodablePrefix(decoder: Decoder, bytes: Buffer, max: number): Buffer | null {
  let best: Buffer | null = null;
  let low = 0;
  let high = bytes.length - 1; // the whole input already failed
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    const out = tryDecode(decoder, bytes.subarray(0, mid), max);
    if (out) {
      best = out;
      low = mid;
    } else {
      high = mid - 1;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// UTF-8

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The text when the bytes are valid UTF-8; a cut body may end inside a character, which is dropped. */
function utf8Text(bytes: Buffer, cut: boolean): string | null {
  try {
    return utf8.decode(cut ? withoutIncompleteLastChar(bytes) : bytes);
  } catch {
    return null;
  }
}

function withoutIncompleteLastChar(bytes: Buffer): Buffer {
  // The lead byte of the last character is at most 3 bytes back.
  for (let back = 1; back <= Math.min(3, bytes.length); back++) {
    const byte = bytes[bytes.length - back]!;
    if ((byte & 0xc0) === 0x80) continue; // a continuation byte
    const length = byte >= 0xf8 ? 1 : byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1; // 0xf8+: invalid
    return length > back ? bytes.subarray(0, bytes.length - back) : bytes;
  }
  return bytes;
}
