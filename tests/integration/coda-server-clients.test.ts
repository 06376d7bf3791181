// The bundled Coda MCP server meets the clients people use, through the real mcp-lens binary, with
// OAuth on the server's own sign-in page, each client calling a Coda tool: the v2 SDK client pinned
// to 2026-07-28 with a Client ID Metadata Document (served over https on loopback, the server
// started with its development flag and trusting the test's certificate), the v2 SDK client in
// auto mode (DCR with application_type), the v1 SDK client (DCR), mcp-remote 0.15 and the MCP
// Inspector CLI 2.x (each opening sign-in-browser.mjs as the user's browser). mcp-lens must record
// each as one succeeded handshake with no diagnosis, in its era, with the right client family.
// Then the server as a single-era deployment (--era modern, --era legacy): the clients that cannot
// meet it fail with era_mismatch, and a dual-era client falls back.
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SERVER_ERAS, type ServerEra } from "../../server/settings.js";
import { startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";
import { startLensProcess, startServerProcess, tempDir, type RunningLens, type RunningServer } from "../helpers/processes.js";
import { runV1Client, runV2Client, type ClientRun } from "../helpers/real-clients.js";
import { CODA_TOKEN, CODA_USER, dualEraCases, metadataDocument, WHOAMI } from "../helpers/coda-clients.js";
import { diagnosesOf, expectOneHandshake, explain, settle, type ClientRunRecord, type Recording } from "../helpers/recording.js";
import { startHttpsOnLoopback, type HttpsOnLoopback } from "../helpers/tls.js";

/** The tracker settles a handshake after its client's silence; margin for a loaded machine. */
const SETTLE_MS = 12_000;

interface Failing extends ClientRunRecord {
  server: ServerEra;
  /** A dual-era client meeting a single-era server: it falls back, one healthy handshake. */
  fallsBack?: boolean;
  run(mcpUrl: string): Promise<ClientRun>;
}

const work = tempDir("mcp-lens-coda-clients-");
let coda: FakeCoda;
let documentHost: HttpsOnLoopback;
/** Per --era: the bundled server and the mcp-lens in front of it, each with its own recording. */
const benches = new Map<ServerEra, { server: RunningServer; lens: RunningLens; recording: Recording }>();

const cases = dualEraCases(documentUrl);

/** The server as a single-era deployment: who cannot meet it, and the dual-era client that can. */
const singleEra: Failing[] = [
  {
    server: "modern",
    label: "v1 SDK against --era modern",
    run: (url) => runV1Client(url, { name: "coda-e2e-v1-to-modern", calls: WHOAMI, oauth: { codaToken: CODA_TOKEN } }),
  },
  {
    server: "legacy",
    label: "v2 SDK pinned to 2026-07-28 against --era legacy",
    run: (url) => runV2Client(url, { mode: "pin", name: "coda-e2e-pin-to-legacy", calls: WHOAMI, oauth: { codaToken: CODA_TOKEN } }),
  },
  {
    server: "legacy",
    label: "v2 SDK in auto mode against --era legacy",
    fallsBack: true,
    run: (url) => runV2Client(url, { mode: "auto", name: "coda-e2e-auto-to-legacy", calls: WHOAMI, oauth: { codaToken: CODA_TOKEN } }),
  },
];

function documentUrl(): string {
  return `${documentHost.origin}/oauth/client-metadata.json`;
}

beforeAll(async () => {
  documentHost = await startHttpsOnLoopback(work.dir, (req, res) => {
    if (req.url !== "/oauth/client-metadata.json") return void res.writeHead(404).end();
    res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=300" }).end(JSON.stringify(metadataDocument(documentUrl())));
  });
  const { certificate } = documentHost;
  coda = await startFakeCoda({ tokens: { [CODA_TOKEN]: CODA_USER } });
  for (const era of SERVER_ERAS) {
    const server = await startServerProcess({
      dbPath: path.join(work.dir, `server-${era}.db`),
      codaApiBase: coda.url,
      args: ["--era", era, "--cimd-allow-private"],
      env: { NODE_EXTRA_CA_CERTS: certificate.certFile },
    });
    const lens = await startLensProcess({ upstream: server.url, dbPath: path.join(work.dir, `lens-${era}.db`), args: ["--flush-interval", "20", "--shutdown-timeout", "500"] });
    benches.set(era, { server, lens, recording: { exchanges: [], handshakes: [] } });
  }
  // One client at a time, as consecutive connections from one address; the failing ones first,
  // so their handshakes settle (10 s of silence) while the others run.
  for (const c of [...singleEra, ...cases]) {
    try {
      c.result = await c.run(`${benches.get(c.server)!.lens.url}/mcp`);
    } catch (failure) {
      c.failure = failure;
    }
  }
  await Promise.all(
    [...benches].map(async ([era, bench]) => {
      bench.recording = await settle(bench.lens.dbPath, [...singleEra, ...cases].filter((c) => c.server === era), SETTLE_MS);
    }),
  );
}, 150_000);

afterAll(async () => {
  for (const { lens, server } of benches.values()) {
    await lens.stop();
    await server.stop();
  }
  await coda?.close();
  await documentHost?.close();
  work.cleanup();
});

describe("real clients sign in to the bundled server through mcp-lens and call a Coda tool", () => {
  for (const c of cases) {
    const { era, family, registration } = c.expected;
    it(`${c.label}: one succeeded ${era} handshake, ${family}, ${registration}, no diagnosis`, () => {
      const recording = benches.get(c.server)!.recording;
      const context = explain(c, recording);
      expect(c.failure, context).toBeUndefined();
      expect(c.result?.timedOut, context).toBe(false);
      expect(c.result?.code, context).toBe(0);
      // The tool answered with the signed-in Coda user: the token reached Coda through the grant.
      expect(c.result?.stdout, context).toContain(CODA_USER.name);
      const handshake = expectOneHandshake(c, recording);
      expect(handshake, context).toBeDefined();
      if (!handshake) return;
      expect.soft(handshake.outcome, `${context}\noutcome`).toBe("succeeded");
      expect.soft(handshake.era, `${context}\nera`).toBe(era);
      expect.soft(handshake.client_family, `${context}\nclient_family`).toBe(family);
      expect.soft(handshake.registration, `${context}\nregistration`).toBe(registration);
      expect.soft(diagnosesOf(handshake).map((d) => `${d.severity} ${d.code}`), `${context}\na healthy handshake has no diagnosis`).toEqual([]);
    });
  }
});

describe("--era reproduces a single-era deployment", () => {
  for (const c of singleEra) {
    const verdict = c.fallsBack ? "falls back: one succeeded legacy handshake with era_fallback, no diagnosis" : "fails: one failed handshake, era_mismatch first";
    it(`${c.label} ${verdict}`, () => {
      const recording = benches.get(c.server)!.recording;
      const context = explain(c, recording);
      expect(c.failure, context).toBeUndefined();
      expect(c.result?.code, context).toBe(c.fallsBack ? 0 : 3);
      const handshake = expectOneHandshake(c, recording);
      expect(handshake, context).toBeDefined();
      if (!handshake) return;
      if (c.fallsBack) {
        expect.soft([handshake.outcome, handshake.era, handshake.era_fallback], context).toEqual(["succeeded", "legacy", 1]);
        expect.soft(diagnosesOf(handshake), context).toEqual([]);
      } else {
        expect.soft([handshake.outcome, handshake.first_code], context).toEqual(["failed", "era_mismatch"]);
      }
    });
  }
});
