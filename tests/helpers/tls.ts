// A self-signed certificate for 127.0.0.1 and localhost, made with the openssl command line, for
// https servers the tests start on loopback (a client's metadata document host). Whoever must
// trust it gets its PEM: the `ca` option, or NODE_EXTRA_CA_CERTS for a child process.
import { execFileSync } from "node:child_process";
import type http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import path from "node:path";

export interface SelfSignedCertificate {
  cert: string;
  key: string;
  /** The certificate's PEM file, for NODE_EXTRA_CA_CERTS. */
  certFile: string;
}

export function selfSignedCertificate(dir: string): SelfSignedCertificate {
  const certFile = path.join(dir, "cert.pem");
  const keyFile = path.join(dir, "key.pem");
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1", "-keyout", keyFile, "-out", certFile],
    { stdio: "ignore", timeout: 10_000 },
  );
  return { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8"), certFile };
}

export interface HttpsOnLoopback {
  server: https.Server;
  /** https://127.0.0.1:<port> */
  origin: string;
  certificate: SelfSignedCertificate;
  /** Stops it, open connections included. */
  close(): Promise<void>;
}

/** An https server on 127.0.0.1 with a fresh self-signed certificate made in `dir`. */
export async function startHttpsOnLoopback(dir: string, handler: http.RequestListener): Promise<HttpsOnLoopback> {
  const certificate = selfSignedCertificate(dir);
  const server = https.createServer({ cert: certificate.cert, key: certificate.key }, handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    server,
    origin: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    certificate,
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
