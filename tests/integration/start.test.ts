// `mcp-lens start`, the first command of the README: the bundled server behind the proxy, with no
// --public-url. A newcomer's client may use http://localhost:<port>/mcp or http://127.0.0.1:<port>/mcp;
// both must work end to end, each advertising itself (resource, issuer) as the client asked for it,
// and a Host that is neither is refused (DNS-rebinding protection).
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";
import { startStartProcess, tempDir, type RunningLens } from "../helpers/processes.js";
import { describeClientRun, runV2Client } from "../helpers/real-clients.js";
import { request } from "../helpers/upstream.js";

const CODA_TOKEN = "9a7c1e3b-2d4f-4b6a-8c0e-start-newcomer";
const work = tempDir("mcp-lens-start-");
let coda: FakeCoda;
let started: RunningLens & { connectorUrl: string };
let port: string;

beforeAll(async () => {
  coda = await startFakeCoda({ tokens: { [CODA_TOKEN]: { name: "New Comer", loginId: "new@example.com" } } });
  started = await startStartProcess({ dbPath: path.join(work.dir, "lens.db"), serverDbPath: path.join(work.dir, "server.db"), codaApiBase: coda.url });
  port = new URL(started.connectorUrl).port;
});

afterAll(async () => {
  await started?.stop();
  await coda?.close();
  work.cleanup();
});

describe("npm start without --public-url", () => {
  it("logs the connector URL on localhost", () => {
    expect(started.connectorUrl).toBe(`http://localhost:${port}/mcp`);
  });

  for (const host of ["localhost", "127.0.0.1"]) {
    it(`answers a client at http://${host}:<port>/mcp with its own resource and issuer, and signs it in`, async () => {
      const origin = `http://${host}:${port}`;
      const probe = await fetch(`${origin}/mcp`, { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream" }, body: "{}" });
      expect(probe.status).toBe(401);
      expect(probe.headers.get("www-authenticate")).toContain(`resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp"`);
      const prm = (await (await fetch(`${origin}/.well-known/oauth-protected-resource/mcp`)).json()) as { resource: string; authorization_servers: string[] };
      expect(prm).toMatchObject({ resource: `${origin}/mcp`, authorization_servers: [origin] });
      const as = (await (await fetch(`${origin}/.well-known/oauth-authorization-server`)).json()) as { issuer: string };
      expect(as.issuer).toBe(origin);
      const run = await runV2Client(`${origin}/mcp`, { mode: "auto", name: `newcomer-${host}`, calls: [{ name: "whoami" }], oauth: { codaToken: CODA_TOKEN } });
      expect(run.code, describeClientRun(run)).toBe(0);
      expect(run.stdout).toContain("New Comer");
    });
  }

  it("refuses a Host it was not started for", async () => {
    // fetch() keeps its own Host; a DNS-rebinding page's request carries the attacker's name.
    const { status } = await request(`http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp`, { headers: { host: `rebound.example:${port}` } });
    expect(status).toBe(421);
  });
});
