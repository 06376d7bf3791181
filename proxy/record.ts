// RawExchange → RecordedExchange: decode the bodies, then redact everything that may hold a secret.

import zlib from "node:zlib";
import { headerValue, type CapturedBody, type HeaderPairs, type RawExchange, type RecordedBody, type RecordedExchange } from "./exchange.js";
import type { Redactor } from "./redact.js";

/** Decoded output is capped at 8× the captured bytes and at most this (decompression bombs). */
const MAX_DECODED_BYTES = 1024 * 1024;

export function toRecorded(raw: RawExchange, redactor: Redactor): RecordedExchange {
  // Field by field rather than a spread, so that a field added to RawExchange is never stored unredacted.
  return {
    id: raw.id,
    startedAt: raw.startedAt,
    durationMs: raw.durationMs,
    ttfbMs: raw.ttfbMs,
    clientAddr: raw.clientAddr,
    method: raw.method,
    host: raw.host,
    path: raw.path,
    query: redactor.query(raw.query),
    status: raw.status,
    upstreamError: raw.upstreamError,
    aborted: raw.aborted,
    websocket: raw.websocket,
    requestHeaders: redactor.headers(raw.requestHeaders),
    requestBody: recordBody(raw.requestBody, raw.requestHeaders, redactor),
    responseHeaders: raw.responseHeaders && redactor.headers(raw.responseHeaders),
    responseBody: recordBody(raw.responseBody, raw.responseHeaders, redactor),
    sseEvents: raw.sseEvents,
  };
}

/** Decodes the Content-Encoding, then redacts as UTF-8 text by content type, or as base64 of the bytes. */
export function recordBody(body: CapturedBody, headers: HeaderPairs | null, redactor: Redactor): RecordedBody {
  const recorded = { size: body.size, truncated: body.truncated };
  const { bytes, decoded, cut } = decodeContent(body.bytes, headerValue(headers, "content-encoding") ?? null);
  if (bytes.length === 0) return { text: null, encoding: "utf8", ...recorded, decoded };
  const text = utf8Text(bytes, body.truncated || cut);
  if (text !== null) {
    return { text: redactor.body(text, headerValue(headers, "content-type") ?? null), encoding: "utf8", ...recorded, decoded };
  }
  // Not UTF-8: the text scan on the latin1 view maps each byte to one char and back.
  const scanned = redactor.text(bytes.toString("latin1"));
  return { text: Buffer.from(scanned, "latin1").toString("base64"), encoding: "base64", ...recorded, decoded };
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
  /** The encoding that was decoded, null when the bytes are kept as captured. */
  decoded: string | null;
  /** Only a prefix of the content could be decoded. */
  cut: boolean;
}

function decodeContent(bytes: Buffer, contentEncoding: string | null): Decoded {
  const encoding = contentEncoding?.trim().toLowerCase() ?? "";
  const decoder = DECODERS[encoding];
  if (!decoder || bytes.length === 0) return { bytes, decoded: null, cut: false };
  const max = Math.min(bytes.length * 8, MAX_DECODED_BYTES);
  const whole = tryDecode(decoder, bytes, max);
  if (whole) return { bytes: whole, decoded: encoding, cut: false };
  // Keeping compressed bytes would store any secret inside them in recoverable form: when the
  // output exceeds the cap or the stream is corrupt further on, keep what a prefix decodes to.
  const prefix = longestDecodablePrefix(decoder, bytes, max);
  if (prefix && prefix.length > 0) return { bytes: prefix, decoded: encoding, cut: true };
  return { bytes, decoded: null, cut: false }; // not compressed after all (mislabelled): scanned as is
}

function tryDecode(decoder: Decoder, input: Buffer, max: number): Buffer | null {
  try {
    return decoder(input, max);
  } catch {
    return null;
  }
}

/** Binary search: decodability only gets lost as the input grows (output cap, corrupt data). */
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
