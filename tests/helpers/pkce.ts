import { createHash, randomBytes } from "node:crypto";

/** A PKCE S256 pair (RFC 7636): the verifier the client keeps, the challenge it sends. */
export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}
