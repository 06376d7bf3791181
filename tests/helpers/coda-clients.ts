// The real clients people use, as cases for the bundled server's tests: the v2 SDK client pinned
// to 2026-07-28 with a Client ID Metadata Document, the v2 SDK client in auto mode (DCR), the v1
// SDK client (DCR), mcp-remote 0.15 and the MCP Inspector CLI 2.x, each signing in on the
// server's own page and calling a Coda tool; what mcp-lens must record of each. Shared by the
// SQLite test (coda-server-clients) and the replicas on PostgreSQL (postgres-real-clients).
import type { ClientFamily } from "../../analysis/handshake.js";
import type { ServerEra } from "../../server/settings.js";
import { runInspectorCli, runMcpRemote, runV1Client, runV2Client, type ClientRun } from "./real-clients.js";
import type { ClientRunRecord } from "./recording.js";
import { closedPort } from "./upstream.js";

export const CODA_TOKEN = "3f1e9a52-7c4b-4e0d-9b21-coda-clients-e2e";
export const CODA_USER = { name: "Grace Hopper", loginId: "grace@example.com" };
export const WHOAMI = [{ name: "whoami", arguments: {} }];

export interface Expected {
  era: "modern" | "legacy";
  family: ClientFamily;
  registration: "cimd" | "dcr";
}

export interface ClientCase extends ClientRunRecord {
  /** The bundled server's --era. */
  server: ServerEra;
  expected: Expected;
  run(mcpUrl: string): Promise<ClientRun>;
}

/** The v2 client's metadata document, on its own https host (a client's website). */
export function metadataDocument(url: string) {
  return {
    client_id: url,
    client_name: "Coda E2E (metadata document)",
    redirect_uris: ["http://localhost:33418/callback"],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: "none",
  };
}

/** Every client against the dual-era server; `documentUrl` serves the pinned client's metadata document. */
export function dualEraCases(documentUrl: () => string): ClientCase[] {
  return [
    {
      server: "dual",
      label: "v2 SDK pinned to 2026-07-28, Client ID Metadata Document",
      expected: { era: "modern", family: "typescript-sdk", registration: "cimd" },
      run: (url) => runV2Client(url, { mode: "pin", name: "coda-e2e-v2-pin", calls: WHOAMI, oauth: { codaToken: CODA_TOKEN, clientMetadataUrl: documentUrl() } }),
    },
    {
      server: "dual",
      label: "v2 SDK in auto mode, DCR",
      expected: { era: "modern", family: "typescript-sdk", registration: "dcr" },
      run: (url) => runV2Client(url, { mode: "auto", name: "coda-e2e-v2-auto", calls: WHOAMI, oauth: { codaToken: CODA_TOKEN } }),
    },
    {
      server: "dual",
      label: "v1 SDK, DCR",
      expected: { era: "legacy", family: "typescript-sdk", registration: "dcr" },
      run: (url) => runV1Client(url, { name: "coda-e2e-v1", calls: WHOAMI, oauth: { codaToken: CODA_TOKEN } }),
    },
    {
      server: "dual",
      label: "mcp-remote 0.15",
      expected: { era: "legacy", family: "mcp-remote", registration: "dcr" },
      run: async (url) => runMcpRemote(url, { name: "coda-e2e-desktop", calls: WHOAMI, codaToken: CODA_TOKEN, callbackPort: await closedPort() }),
    },
    {
      server: "dual",
      label: "MCP Inspector CLI 2.x",
      expected: { era: "legacy", family: "mcp-inspector", registration: "dcr" },
      run: (url) => runInspectorCli(url, { calls: WHOAMI, codaToken: CODA_TOKEN }),
    },
  ];
}
