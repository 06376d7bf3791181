// --client-metadata-url: the operator's own Client ID Metadata Document, read once so that the
// clients that use one (profiles.ts: usesMetadataDocument) send its client_id and one of its
// redirect URIs to /authorize. The authorization server fetches the document itself; doctor reads
// it only for the redirect URI, bounded like every answer it reads.
const MAX_DOCUMENT_BYTES = 64 * 1024;

export interface ClientMetadataDocument {
  url: string;
  redirectUris: string[];
}

/** The document at `url`, or an Error saying in words why a client could not use it. */
export async function readClientMetadataDocument(url: string, timeoutMs: number): Promise<ClientMetadataDocument | Error> {
  const at = `the client metadata document ${url}`;
  let text: string;
  try {
    const res = await fetch(url, { redirect: "manual", signal: AbortSignal.timeout(timeoutMs), headers: { accept: "application/json" } });
    if (res.status !== 200) return new Error(`${at} answered ${res.status}`);
    text = await readBounded(res);
  } catch (error) {
    return new Error(`${at} could not be read: ${(error as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return new Error(`${at} is not JSON`);
  }
  const record = typeof doc === "object" && doc !== null ? (doc as Record<string, unknown>) : {};
  if (record.client_id !== url) return new Error(`${at} says client_id ${JSON.stringify(record.client_id)?.slice(0, 200)}, not its own URL`);
  const uris = Array.isArray(record.redirect_uris) ? record.redirect_uris.filter((u): u is string => typeof u === "string" && u.length <= 2048) : [];
  if (uris.length === 0) return new Error(`${at} lists no redirect_uris`);
  return { url, redirectUris: uris };
}

async function readBounded(res: Response): Promise<string> {
  const reader = res.body?.getReader();
  if (!reader) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_DOCUMENT_BYTES) {
      await reader.cancel();
      throw new Error(`larger than ${MAX_DOCUMENT_BYTES} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString("utf8");
}
