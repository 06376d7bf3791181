// The real clients of both eras (the v2 SDK client pinned and in auto mode, the v1 SDK client,
// mcp-remote, the MCP Inspector CLI) through three mcp-lens replicas on one PostgreSQL database,
// behind a round-robin nginx, in front of the bundled Coda MCP server: each connection must be one
// succeeded handshake of its client family and era, with no diagnosis, its requests spread over
// the replicas; and `inspector show` must say so to an operator, nothing more.
import { existsSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NGINX, roundRobinConf, startNginx, type Child } from "../helpers/children.js";
import { CODA_TOKEN, CODA_USER, dualEraCases, metadataDocument } from "../helpers/coda-clients.js";
import { keepArtifact } from "../helpers/artifacts.js";
import { postgresBinDir, postgresForTests } from "../helpers/postgres.js";
import { runCli, startLensProcess, startServerProcess, tempDir, type RunningLens, type RunningServer } from "../helpers/processes.js";
import { diagnosesOf, exchangesOf, expectOneHandshake, explain, postgresSnapshot, settle, type Recording } from "../helpers/recording.js";
import { startHttpsOnLoopback, type HttpsOnLoopback } from "../helpers/tls.js";
import { startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";

const IN_CI = process.env.CI === "true";
const MISSING = [...(postgresBinDir() ? [] : ["postgresql"]), ...(existsSync(NGINX) ? [] : ["nginx"])];
if (MISSING.length > 0 && !IN_CI) console.warn(`real clients through replicas skipped: ${MISSING.join(", ")} missing; CI=true makes this a failure`);

/** The analyser holds exchanges 2 s; the tracker settles after its client's silence. */
const SETTLE_MS = 15_000;

describe.skipIf(MISSING.length > 0 && !IN_CI)("real clients of both eras through three replicas on one PostgreSQL database", () => {
  const pg = postgresForTests();
  const work = tempDir("mcp-lens-pg-clients-");
  let documentHost: HttpsOnLoopback;
  let coda: FakeCoda;
  let server: RunningServer;
  const lenses: RunningLens[] = [];
  let nginx: (Child & { url: string }) | undefined;
  let db: string;
  let recording: Recording = { exchanges: [], handshakes: [] };
  const documentUrl = () => `${documentHost.origin}/oauth/client-metadata.json`;
  const cases = dualEraCases(documentUrl);

  beforeAll(async () => {
    documentHost = await startHttpsOnLoopback(work.dir, (req, res) => {
      if (req.url !== "/oauth/client-metadata.json") return void res.writeHead(404).end();
      res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=300" }).end(JSON.stringify(metadataDocument(documentUrl())));
    });
    coda = await startFakeCoda({ tokens: { [CODA_TOKEN]: CODA_USER } });
    server = await startServerProcess({
      dbPath: path.join(work.dir, "server.db"),
      codaApiBase: coda.url,
      args: ["--era", "dual", "--cimd-allow-private"],
      env: { NODE_EXTRA_CA_CERTS: documentHost.certificate.certFile },
    });
    db = await pg.freshDatabase();
    for (const n of [1, 2, 3]) lenses.push(await startLensProcess({ upstream: server.url, dbPath: db, args: ["--replica", `replica-${n}`, "--flush-interval", "20", "--shutdown-timeout", "500"] }));
    const conf = path.join(work.dir, "nginx");
    nginx = await startNginx(conf, roundRobinConf(conf, lenses.map((l) => new URL(l.url).host)));
    // One client at a time, as consecutive connections from one address.
    for (const c of cases) {
      try {
        c.result = await c.run(`${nginx.url}/mcp`);
      } catch (failure) {
        c.failure = failure;
      }
    }
    const pool = pg.pool(db, 1);
    recording = await settle(() => postgresSnapshot(pool), cases, SETTLE_MS);
  }, 180_000);

  afterAll(async () => {
    await nginx?.stop();
    for (const lens of lenses) await lens.stop();
    await server?.stop();
    await coda?.close();
    await documentHost?.close();
    work.cleanup();
  });

  for (const c of cases) {
    const { era, family, registration } = c.expected;
    it(`${c.label}: one succeeded ${era} handshake, ${family}, ${registration}, no diagnosis, across the replicas`, async () => {
      const context = explain(c, recording);
      expect(c.failure, context).toBeUndefined();
      expect(c.result?.code, context).toBe(0);
      expect(c.result?.stdout, context).toContain(CODA_USER.name);
      const handshake = expectOneHandshake(c, recording);
      expect(handshake, context).toBeDefined();
      if (!handshake) return;
      expect.soft([handshake.outcome, handshake.era, handshake.client_family, handshake.registration], context).toEqual(["succeeded", era, family, registration]);
      expect.soft(diagnosesOf(handshake), context).toEqual([]);
      // What an operator reads: the client and its era in the headline, the replicas it went
      // through, and no diagnosis at all.
      const shown = await runCli(["inspector", "show", String(handshake.id), "--db", db]);
      keepArtifact(`pg-clients-show-${handshake.id}.txt`, shown.stdout);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout.split("\n")[0], shown.stdout).toMatch(new RegExp(`^Handshake #${handshake.id}  ${family}\\b.*  succeeded$`));
      expect(shown.stdout, shown.stdout).toContain(`era ${era}`);
      expect(shown.stdout, shown.stdout).toMatch(/Diagnoses\n {2}none\n?$/);
      if (exchangesOf(c, recording).length >= 3) expect(shown.stdout, shown.stdout).toContain("through 3 replicas");
    });
  }
});
