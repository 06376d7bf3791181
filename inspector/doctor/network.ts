// What happens before any HTTP: the name, the TCP connection, and for https the TLS handshake a
// client performs (the chain it validates against its trust store, the names on the certificate,
// its dates, the protocol offered). Each failure in words, with what was seen: "nothing reaches
// the server: the certificate for coda.example.com expired on 2026-01-03".
import { lookup } from "node:dns/promises";
import net from "node:net";
import tls from "node:tls";

export type NetworkStage = "dns" | "tcp" | "tls";

export interface NetworkCheck {
  /** Every stage passed (a certificate near its end is a warning, not a failure). */
  ok: boolean;
  stages: Array<{ stage: NetworkStage; ok: boolean; detail: string }>;
  /** The first failure, in words. */
  problem?: string;
  /** Things that work today but will not for long. */
  warnings: string[];
  certificate?: { subject: string; names: string[]; issuer: string; validTo: string; daysLeft: number; protocol: string; alpn: string };
}

/** A certificate this close to its end is worth a warning. */
const WARN_DAYS = 14;
const DAY_MS = 86_400_000;

const TLS_WORDS: Record<string, string> = {
  CERT_HAS_EXPIRED: "expired",
  CERT_NOT_YET_VALID: "is not valid yet",
  DEPTH_ZERO_SELF_SIGNED_CERT: "is self-signed: clients do not trust it",
  SELF_SIGNED_CERT_IN_CHAIN: "chains to a self-signed root clients do not trust",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "cannot be verified: its issuer is unknown and the server sends no chain up to a trusted root (a missing intermediate?)",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "chains to an issuer clients do not trust (a private CA, or a missing intermediate)",
  UNABLE_TO_GET_ISSUER_CERT: "chains to an issuer clients do not trust",
};

export async function checkNetwork(target: URL, timeoutMs: number): Promise<NetworkCheck> {
  const check: NetworkCheck = { ok: false, stages: [], warnings: [] };
  const host = target.hostname.replace(/^\[|\]$/g, "");
  const port = Number(target.port || (target.protocol === "https:" ? 443 : 80));
  const fail = (stage: NetworkStage, detail: string) => {
    check.stages.push({ stage, ok: false, detail });
    check.problem = `nothing reaches the server: ${detail}`;
    return check;
  };

  let addresses: string[];
  if (net.isIP(host)) {
    addresses = [host];
    check.stages.push({ stage: "dns", ok: true, detail: `${host} is an address` });
  } else {
    try {
      const found = await withTimeout(lookup(host, { all: true }), timeoutMs, `no answer for ${host} within ${timeoutMs} ms`);
      addresses = found.map((a) => a.address);
      check.stages.push({ stage: "dns", ok: true, detail: `${host} resolves to ${addresses.join(", ")}` });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      return fail("dns", code === "ENOTFOUND" ? `the name ${host} does not resolve` : `${host} could not be resolved: ${(error as Error).message}`);
    }
  }

  // Clients try each address in turn (Node's autoSelectFamily, browsers' happy eyeballs): one that
  // accepts is enough; the check fails only when none does.
  let address: string | undefined;
  const refused: string[] = [];
  for (const candidate of addresses) {
    try {
      await connectTcp(candidate, port, timeoutMs);
      address = candidate;
      break;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const why = code === "ECONNREFUSED" ? "refuses connections (nothing listens there)" : code === "ETIMEDOUT" ? `does not answer within ${timeoutMs} ms (a firewall?)` : (error as Error).message;
      refused.push(`${candidate} port ${port} ${why}`);
    }
  }
  if (address === undefined) return fail("tcp", refused.join("; "));
  check.stages.push({ stage: "tcp", ok: true, detail: `${address} port ${port} accepts connections${refused.length ? ` (${refused.join("; ")})` : ""}` });

  if (target.protocol === "https:") {
    const result = await handshakeTls(address, port, net.isIP(host) ? undefined : host, timeoutMs).catch((error: Error) => error);
    if (result instanceof Error) return fail("tls", `the TLS handshake with ${host} failed: ${result.message}`);
    const { socket, peer } = result;
    const names = (peer.subjectaltname ?? "").split(",").map((n) => n.trim().replace(/^(DNS|IP Address):/, "")).filter(Boolean);
    const validTo = new Date(peer.valid_to);
    if (Number.isNaN(validTo.getTime())) {
      socket.destroy();
      return fail("tls", `the certificate for ${host} has an unreadable expiry date`);
    }
    const daysLeft = Math.floor((validTo.getTime() - Date.now()) / DAY_MS);
    const cert = {
      subject: firstOf(peer.subject?.CN) ?? "",
      names,
      issuer: firstOf(peer.issuer?.O) ?? firstOf(peer.issuer?.CN) ?? "",
      validTo: validTo.toISOString().slice(0, 10),
      daysLeft,
      protocol: socket.getProtocol() ?? "",
      alpn: typeof socket.alpnProtocol === "string" ? socket.alpnProtocol : "none",
    };
    check.certificate = cert;
    const code = socket.authorizationError ? String((socket.authorizationError as NodeJS.ErrnoException).code ?? socket.authorizationError) : undefined;
    socket.destroy();
    const about = `the certificate for ${host}`;
    if (code === "CERT_HAS_EXPIRED") return fail("tls", `${about} expired on ${cert.validTo}`);
    const mismatch = code === "ERR_TLS_CERT_ALTNAME_INVALID" || tls.checkServerIdentity(host, peer) !== undefined;
    if (code && !mismatch) return fail("tls", `${about} ${TLS_WORDS[code] ?? `is refused (${code})`}`);
    if (mismatch) return fail("tls", `${about} is not for that name: it names ${names.join(", ") || cert.subject || "nothing"}`);
    if (daysLeft < WARN_DAYS) check.warnings.push(`${about} expires on ${cert.validTo}, in ${daysLeft} days`);
    check.stages.push({ stage: "tls", ok: true, detail: `${cert.protocol}, a certificate for ${names.join(", ") || cert.subject} from ${cert.issuer || "its issuer"}, valid until ${cert.validTo}` });
  }
  check.ok = true;
  return check;
}

/** A certificate field may repeat; the first is the one to show. */
const firstOf = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);

function connectTcp(address: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: address, port });
    socket.setTimeout(timeoutMs, () => socket.destroy(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })));
    socket.once("connect", () => {
      socket.destroy();
      resolve();
    });
    socket.once("error", reject);
  });
}

/** The handshake a client performs, not refused here so that what was wrong can be read. */
function handshakeTls(address: string, port: number, servername: string | undefined, timeoutMs: number): Promise<{ socket: tls.TLSSocket; peer: tls.PeerCertificate }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: address, port, ...(servername ? { servername } : {}), rejectUnauthorized: false, ALPNProtocols: ["h2", "http/1.1"] });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no TLS handshake within ${timeoutMs} ms`)));
    socket.once("secureConnect", () => resolve({ socket, peer: socket.getPeerCertificate() }));
    socket.once("error", reject);
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([promise, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]).finally(() => clearTimeout(timer));
}
