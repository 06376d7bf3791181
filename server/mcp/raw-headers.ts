// The SDKs read request headers from rawHeaders (their Node adapters rebuild a web Request from
// them), so a header rewritten on the way must change there too.
import type { IncomingMessage } from "node:http";

export function removeRawHeader(req: IncomingMessage, lowerName: string): void {
  for (let i = req.rawHeaders.length - 2; i >= 0; i -= 2) {
    if (req.rawHeaders[i]!.toLowerCase() === lowerName) req.rawHeaders.splice(i, 2);
  }
}

export function setRawHeader(req: IncomingMessage, name: string, value: string): void {
  removeRawHeader(req, name.toLowerCase());
  req.rawHeaders.push(name, value);
  req.headers[name.toLowerCase()] = value;
}
