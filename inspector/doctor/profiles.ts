// The clients `mcp-lens doctor` plays: what each sends, from its traffic and the field guide
// (shared/reference/connector-handshake.md): user agent, clientInfo, Accept, the registration
// (RFC 7591) it posts and its callback, whether it is a browser page bound by CORS, its timeout,
// and the era it speaks. The hosted connectors of the guide speak the legacy era; clients built
// on today's SDKs (TypeScript v2, Python mcp 2.x) are dual-era: modern first, initialize when the
// server does not speak 2026-07-28.
import { BROWSER_UA, type ClientEra, KNOWN_CLIENTS, MCP_ACCEPT, type ModernClient, type Registration, registrationPayload } from "../clients.js";

export interface DoctorProfile {
  /** As `--as` names it. */
  name: string;
  /** For people: who this is. */
  label: string;
  userAgent?: string;
  accept?: string;
  /** A browser page: sends this Origin, preflights and obeys CORS. */
  origin?: string;
  clientInfo: { name: string; version: string };
  registration: Registration;
  /** The era it speaks unless --era says otherwise. */
  era: ClientEra;
  /** Per request, as the client allows. */
  timeoutMs: number;
  /** Uses a Client ID Metadata Document when given one (--client-metadata-url) and the server supports it. */
  usesMetadataDocument?: boolean;
  /**
   * A recorded client's own parameters (the inspector's replay seeds doctor with them); absent,
   * the profile's clientInfo with empty capabilities, the latest legacy and the modern protocol version.
   */
  seed?: {
    /** initialize's params as it sent them. */
    initialize: { protocolVersion: string } & Record<string, unknown>;
    /** Its modern requests' `_meta`. */
    modern: ModernClient;
    /** Its first modern request. */
    opening: "server/discover" | "tools/list";
    /** `resource` and `scope` of its authorize request. */
    resource?: string;
    scope?: string;
  };
}

const knownClientProfile = (name: keyof typeof KNOWN_CLIENTS, label: string, era: ClientEra, extra: Partial<DoctorProfile> = {}): DoctorProfile => {
  const client = KNOWN_CLIENTS[name];
  return {
    name,
    label,
    userAgent: client.userAgent,
    accept: MCP_ACCEPT,
    clientInfo: { ...client.clientInfo },
    registration: registrationPayload(client.clientName, client.redirectUri, client.authMethod),
    era,
    timeoutMs: 10_000,
    ...extra,
  };
};

export const DOCTOR_PROFILES: readonly DoctorProfile[] = [
  knownClientProfile("claude.ai", "Claude.ai's hosted connector (its backend, python-httpx)", "legacy"),
  knownClientProfile("chatgpt", "ChatGPT's connector platform", "legacy"),
  knownClientProfile("claude-code", "Claude Code, a local client on the TypeScript SDK v2", "dual", { usesMetadataDocument: true }),
  {
    name: "mcp-inspector",
    label: "MCP Inspector's web page (a browser client: CORS applies)",
    userAgent: BROWSER_UA,
    origin: "http://localhost:6274",
    accept: MCP_ACCEPT,
    clientInfo: { name: "mcp-inspector", version: "0.17.0" },
    registration: registrationPayload("MCP Inspector", "http://localhost:6274/oauth/callback", "none"),
    era: "legacy",
    timeoutMs: 10_000,
  },
  {
    name: "v2-sdk",
    label: "a client on today's SDKs (TypeScript v2, Python mcp 2.x): modern first, initialize as a fallback",
    userAgent: "node",
    accept: MCP_ACCEPT,
    clientInfo: { name: "mcp-lens-doctor", version: "2.4.0" },
    registration: { ...registrationPayload("mcp-lens doctor", "http://127.0.0.1:33418/callback", "none"), application_type: "native" },
    era: "dual",
    timeoutMs: 10_000,
    usesMetadataDocument: true,
  },
];

export const PROFILE_NAMES = DOCTOR_PROFILES.map((p) => p.name);
