// The client a recorded handshake shows, as doctor plays it on a re-run (inspector/replay.ts): a
// doctor profile of its own, the connector URL on the target, and the era the recording shows.
// A recording is hostile input: every value is type-checked and size-bounded, nothing the
// recording holds chooses where the re-run connects (only a path on the target's origin), and the
// registration is rebuilt from known fields, never sent as recorded.
import { CLIENT_CAPABILITIES_META_KEY } from "@modelcontextprotocol/client";
import { HOSTED_FAMILIES } from "../analysis/client-family.js";
import { byStart, type ClassifiedExchange, type Era } from "../analysis/exchange.js";
import { isRecord } from "../analysis/exchange-view.js";
import type { HandshakeEra } from "../analysis/handshake.js";
import { META_CLIENT_INFO, META_PROTOCOL_VERSION } from "../analysis/mcp-facts.js";
import { fingerprintsIn } from "../analysis/redacted.js";
import { KNOWN_CLIENTS, LATEST_PROTOCOL_VERSION, MCP_ACCEPT, MODERN_PROTOCOL_VERSION, type ModernClient, type Registration, registrationPayload } from "./clients.js";
import type { HandshakeDetail } from "./data.js";
import { safeUrl } from "./connector-wire.js";
import type { DoctorProfile } from "./doctor/profiles.js";

const BROWSER_KINDS = new Set(["authorize", "authorize_consent"]);

/** The recorded client as doctor plays it: a profile of its own, on the target. */
export interface RecordedClient {
  /** The connector URL on the target. */
  url: string;
  profile: DoctorProfile;
  /** The public origin the upstream saw, dialled at the target (none when it is the target's). */
  mappedOrigins: string[];
}

const header = (e: ClassifiedExchange | undefined, name: string) => e?.requestHeaders.find(([n]) => n.toLowerCase() === name)?.[1];
const firstValue = (v: string | undefined) => v?.split(",")[0]?.trim() || undefined;

function requestJson(e: ClassifiedExchange | undefined): Record<string, unknown> | undefined {
  const body = e?.requestBody;
  if (!body?.text || body.encoding !== "utf8" || body.truncated) return undefined;
  try {
    const json = JSON.parse(body.text) as unknown;
    return isRecord(json) ? json : undefined;
  } catch {
    return undefined;
  }
}

/** A recorded request's era: the analyser's fact, else its body (a `_meta` protocol version, or initialize). */
function eraOfExchange(e: ClassifiedExchange): Era | undefined {
  if (e.facts.mcp?.era) return e.facts.mcp.era;
  const json = requestJson(e);
  const params = isRecord(json?.params) ? json.params : undefined;
  if (isRecord(params?._meta) && typeof params._meta[META_PROTOCOL_VERSION] === "string") return "modern";
  return json?.method === "initialize" || json?.method === "notifications/initialized" ? "legacy" : undefined;
}

/**
 * The handshake's era as the analyser judged it; for a handshake it could not place in one (a
 * database recorded before eras were analysed), the era of its last MCP request, and a fallback
 * when a legacy request followed a modern one.
 */
function recordedEra(handshake: HandshakeDetail["handshake"], mcp: ClassifiedExchange[]): { era: HandshakeEra; eraFallback: boolean } {
  if (handshake.era === "modern" || handshake.era === "legacy") return { era: handshake.era, eraFallback: handshake.eraFallback === true };
  const eras = mcp.flatMap((e) => eraOfExchange(e) ?? []);
  const firstModern = eras.indexOf("modern");
  return { era: eras.at(-1) ?? "unknown", eraFallback: firstModern !== -1 && eras.slice(firstModern).includes("legacy") };
}

const requestsInitialize = (e: ClassifiedExchange) => e.facts.mcp?.methods.includes("initialize") === true || requestJson(e)?.method === "initialize";

export function recordedClient({ handshake, exchanges }: HandshakeDetail, target: string): RecordedClient {
  const sorted = [...exchanges].sort(byStart);
  const mcp = sorted.filter((e) => e.kind.startsWith("mcp_"));
  const recorded = recordedEra(handshake, mcp);
  const unauthenticated = mcp.filter((e) => e.facts.bearerFingerprint === undefined);
  const isModern = (e: ClassifiedExchange) => eraOfExchange(e) === "modern";
  // The client's opening without credentials: initialize, or its first modern request.
  const probe = unauthenticated.find((e) => requestsInitialize(e) || isModern(e)) ?? unauthenticated[0] ?? mcp[0];
  const initializing = unauthenticated.find(requestsInitialize) ?? mcp.find(requestsInitialize);
  const modernFirst = unauthenticated.find(isModern) ?? mcp.find(isModern);
  const backend = sorted.filter((e) => !BROWSER_KINDS.has(e.kind));
  const known = handshake.clientFamily in KNOWN_CLIENTS ? KNOWN_CLIENTS[handshake.clientFamily as keyof typeof KNOWN_CLIENTS] : undefined;
  const fact = <T>(pick: (e: ClassifiedExchange) => T | undefined) => sorted.map(pick).find((v) => v !== undefined);

  // The connector URL: the target's origin and the path the client used (a path only: "//host"
  // or anything else that would change the origin is not a path).
  const targetOrigin = new URL(target).origin;
  const source = probe ?? backend[0] ?? sorted[0];
  const resource = text(fact((e) => (BROWSER_KINDS.has(e.kind) || e.kind === "token" ? e.facts.resource : undefined)), 2048);
  const prmPath = sorted.find((e) => e.kind === "protected_resource_metadata" && e.facts.wellKnownVariant === "path_inserted")?.path.replace(/^\/\.well-known\/oauth-protected-resource/, "");
  const path = [probe?.path, resource ? safeUrl(resource)?.pathname : undefined, prmPath].find(isPath) ?? "/mcp";
  const url = safeUrl(`${targetOrigin}${path}`);
  const connectorUrl = url && url.origin === targetOrigin ? url.href : `${targetOrigin}/mcp`;

  // The public origin the upstream saw (recorded headers are what it received): mapped onto the
  // target, so URLs a server with a fixed public URL advertises are dialled at the target.
  const host = firstValue(header(source, "x-forwarded-host")) ?? source?.host ?? undefined;
  const scheme = firstValue(header(source, "x-forwarded-proto")) ?? (HOSTED_FAMILIES.has(handshake.clientFamily) ? "https" : "http");
  const publicOrigin = host && /^https?$/.test(scheme) ? safeUrl(`${scheme}://${host}`)?.origin : undefined;

  // Each era's params, the one from the other when the recording shows only one era.
  const initialize = requestJson(initializing ?? probe);
  const params = initialize?.method === "initialize" && isRecord(initialize.params) ? initialize.params : undefined;
  const modernJson = requestJson(modernFirst);
  const meta = isRecord(modernJson?.params) && isRecord(modernJson.params._meta) ? modernJson.params._meta : undefined;
  const info = (initializing ?? probe)?.facts.mcp;
  const clientInfo =
    clientInfoOf(params?.clientInfo) ??
    clientInfoOf(meta?.[META_CLIENT_INFO]) ??
    clientInfoOf(info?.clientInfo) ??
    clientInfoOf(modernFirst?.facts.mcp?.clientInfo) ??
    known?.clientInfo ?? { name: text(handshake.clientName, 200) ?? "mcp-lens replay", version: "0" };
  const capabilities = boundedRecord(params?.capabilities) ?? boundedRecord(meta?.[CLIENT_CAPABILITIES_META_KEY]) ?? {};
  const protocolVersion = text(params?.protocolVersion, 64) ?? text(info?.protocolVersionRequested, 64) ?? LATEST_PROTOCOL_VERSION;
  const modern: ModernClient = {
    protocolVersion: text(meta?.[META_PROTOCOL_VERSION], 64) ?? text(modernFirst?.facts.mcp?.metaProtocolVersion, 64) ?? MODERN_PROTOCOL_VERSION,
    clientInfo,
    clientCapabilities: boundedRecord(meta?.[CLIENT_CAPABILITIES_META_KEY]) ?? capabilities,
  };
  // Its first modern request: server/discover when it sent one, else tools/list when it opened with that.
  const modernMethods = mcp.filter(isModern).flatMap((e) => e.facts.mcp?.methods ?? []);
  const opening = !modernMethods.includes("server/discover") && modernMethods[0] === "tools/list" ? "tools/list" : "server/discover";

  const redirectUri = fact((e) => text(e.facts.redirectUris?.[0], 2048)) ?? known?.redirectUri ?? "http://localhost:33418/callback";
  const registration =
    registrationOf(requestJson(sorted.find((e) => e.kind === "registration" && e.method === "POST"))) ??
    registrationPayload(known?.clientName ?? text(handshake.clientName, 200) ?? "mcp-lens replay", redirectUri, known?.authMethod ?? "none");
  const origin = fact((e) => (BROWSER_KINDS.has(e.kind) ? undefined : e.facts.origin));
  const browserOrigin = origin && safeUrl(origin)?.origin === origin ? origin : undefined;
  const userAgent = headerText(probe?.facts.userAgent ?? fact((e) => (BROWSER_KINDS.has(e.kind) ? undefined : e.facts.userAgent)));
  const accept = probe ? headerText(header(probe, "accept")) : MCP_ACCEPT;
  const scope = text(fact((e) => (BROWSER_KINDS.has(e.kind) ? e.facts.scope : undefined)), 1024);
  const profile: DoctorProfile = {
    name: text(handshake.clientFamily, 64) ?? "recorded",
    label: `the client of handshake #${handshake.id}, as recorded`,
    ...(userAgent ? { userAgent } : {}),
    ...(accept ? { accept } : {}),
    ...(browserOrigin ? { origin: browserOrigin } : {}),
    clientInfo,
    registration,
    // The client it was: modern, dual-era when it fell back to initialize, else (legacy, or no MCP
    // request recorded: it stopped in discovery) legacy, as the hosted connectors of 2025 are.
    era: recorded.eraFallback ? "dual" : recorded.era === "modern" ? "modern" : "legacy",
    timeoutMs: 10_000, // as hosted clients allow
    seed: { initialize: { protocolVersion, capabilities, clientInfo }, modern, opening, ...(resource ? { resource } : {}), ...(scope ? { scope } : {}) },
  };
  return { url: connectorUrl, profile, mappedOrigins: publicOrigin && publicOrigin !== targetOrigin ? [publicOrigin] : [] };
}

/** A recorded string, when it is one, printable (no control characters) and at most `max` long. */
function text(value: unknown, max: number): string | undefined {
  return typeof value === "string" && value.length > 0 && value.length <= max && !/[\u0000-\u001f\u007f-\u009f]/.test(value) ? value : undefined;
}

/** A header value Node will send as is (HTAB, visible ASCII and obs-text), bounded. */
const headerText = (value: string | undefined) => (value !== undefined && value.length <= 1024 && /^[\t\x20-\x7e\x80-\xff]*$/.test(value) ? value : undefined);

const isPath = (p: string | undefined): p is string => typeof p === "string" && p.length <= 2048 && /^\/(?!\/)[\x21-\x7e]*$/.test(p) && !p.includes("\\");

/** A recorded object (capabilities) when its JSON is at most 8 KiB. */
const boundedRecord = (value: unknown) => (isRecord(value) && JSON.stringify(value).length <= 8192 ? value : undefined);

function clientInfoOf(value: unknown): { name: string; version: string } | undefined {
  if (!isRecord(value)) return undefined;
  const name = text(value.name, 200);
  return name ? { name, version: text(value.version, 64) ?? "0" } : undefined;
}

const STRING_FIELDS = { client_name: 200, token_endpoint_auth_method: 64, scope: 1024, application_type: 32, software_id: 200, software_version: 64 } as const;
const LIST_FIELDS = { redirect_uris: 2048, grant_types: 128, response_types: 64 } as const;
const MAX_LIST = 10;

/**
 * The client's registration rebuilt from the RFC 7591 fields a re-run needs, each type-checked and
 * bounded; anything else the recorded body held (unknown fields, URLs the AS would fetch, a
 * redacted secret) is dropped. Undefined without usable redirect_uris.
 */
export function registrationOf(recorded: Record<string, unknown> | undefined): Registration | undefined {
  if (!recorded) return undefined;
  const clean = (v: string | undefined) => (v !== undefined && fingerprintsIn(v).length === 0 ? v : undefined);
  const out: Record<string, unknown> = {};
  for (const [name, max] of Object.entries(STRING_FIELDS)) {
    const v = clean(text(recorded[name], max));
    if (v !== undefined) out[name] = v;
  }
  for (const [name, max] of Object.entries(LIST_FIELDS)) {
    const list = recorded[name];
    if (!Array.isArray(list) || list.length === 0 || list.length > MAX_LIST) continue;
    const items = list.map((v) => clean(text(v, max)));
    if (items.every((v): v is string => v !== undefined)) out[name] = items;
  }
  const uris = out.redirect_uris as string[] | undefined;
  if (!uris?.every((u) => /^[a-z][a-z0-9+.-]*:/i.test(u) && safeUrl(u))) return undefined;
  return out as unknown as Registration;
}
