// What the rules are given: a handshake's exchanges sorted and grouped, its probes, the connector URL
// the client used, the metadata documents that came back.

import { HOSTED_FAMILIES, isLoopbackHost } from "../client-family.js";
import { type ClassifiedExchange, type ExchangeKind, byStart } from "../exchange.js";
import { opensConnection } from "../handshake-steps.js";
import type { Handshake, HandshakeStep } from "../handshake.js";
import { AS_KINDS, is2xx, isAuthenticated, MCP_KINDS, parseUrl, PRM_PATH, reqHeader } from "./evidence.js";
import type { ConnectorUrl, DiagnosisContext } from "./rule.js";

export function contextOf(handshake: Handshake, exchanges: ClassifiedExchange[]): DiagnosisContext {
  const sorted = [...exchanges].sort(byStart);
  const of = (...kinds: ExchangeKind[]) => sorted.filter((e) => kinds.includes(e.kind));
  const unauthenticated = of("mcp_post").filter((e) => !isAuthenticated(e));
  // A connection opens with initialize (legacy) or server/discover (modern); a modern client may
  // also start straight with its first request.
  const openings = unauthenticated.filter(opensConnection);
  const probes = openings.length > 0 ? openings : unauthenticated.slice(0, 1);
  const metadata = (e: ClassifiedExchange) => (is2xx(e) ? e.facts.metadata : undefined);
  return {
    handshake,
    exchanges: sorted,
    probes,
    // Any unauthenticated MCP request the server answered (the modern era has no initialize).
    authless: unauthenticated.some((e) => is2xx(e) && !(e.facts.mcp?.messages ?? []).some((m) => m.type === "error")),
    connector: connectorUrl(handshake, sorted, probes),
    prm: of("protected_resource_metadata").find((e) => metadata(e)?.resource ?? metadata(e)?.authorizationServers),
    asDocs: of(...AS_KINDS).filter((e) => metadata(e)?.issuer ?? metadata(e)?.authorizationEndpoint),
    of,
  };
}

/** From the probe's host and path (else any MCP request, else a path-inserted PRM fetch). */
export function connectorUrl(
  handshake: Handshake,
  exchanges: readonly ClassifiedExchange[],
  probes: readonly ClassifiedExchange[],
): ConnectorUrl | undefined {
  const mcp = exchanges.find((e) => MCP_KINDS.includes(e.kind));
  const prm = exchanges.find(
    (e) => e.kind === "protected_resource_metadata" && e.facts.wellKnownVariant === "path_inserted",
  );
  const source = probes[0] ?? mcp ?? prm;
  const host = source && publicHost(source);
  if (!source || !host) return undefined;
  const path = source === prm ? source.path.slice(PRM_PATH.length) : source.path;
  const forwarded = forwardedProto(source) ?? exchanges.map(forwardedProto).find((p) => p !== undefined);
  // Hosted clients dial https only, so their scheme may be inferred — but none reaches a loopback
  // host: a request to one came from this machine, whatever the client family looks like.
  const [scheme, schemeFrom]: [ConnectorUrl["scheme"], ConnectorUrl["schemeFrom"]] = forwarded
    ? [forwarded, "forwarded"]
    : HOSTED_FAMILIES.has(handshake.clientFamily) && !isLoopbackHost(host)
      ? ["https", "hosted_client"]
      : ["http", "assumed"];
  const url = parseUrl(`${scheme}://${host}${path || "/"}`);
  if (!url) return undefined;
  const { href, origin, host: urlHost, pathname } = url;
  return { url: href, origin, host: urlHost, path: pathname, scheme, schemeFrom, exchangeId: source.id };
}

/** The host the client asked for: X-Forwarded-Host from a front proxy, else Host. */
export function publicHost(e: ClassifiedExchange): string | undefined {
  const forwarded = reqHeader(e, "x-forwarded-host")?.split(",")[0]?.trim();
  return (forwarded || e.host || undefined)?.toLowerCase();
}

/** The scheme a front proxy passed on; mcp-lens's own default (`setByProxy`) says nothing about the client's. */
export function forwardedProto(e: ClassifiedExchange): "http" | "https" | undefined {
  const fromFront = !e.setByProxy?.includes("x-forwarded-proto");
  const proto =
    (fromFront ? reqHeader(e, "x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase() : undefined) ??
    /(?:^|[;,\s])proto="?(https?)"?/i.exec(reqHeader(e, "forwarded") ?? "")?.[1]?.toLowerCase();
  return proto === "https" || proto === "http" ? proto : undefined;
}

export function stepFailed(ctx: DiagnosisContext, step: HandshakeStep): boolean {
  return ctx.handshake.failedStep === step || ctx.handshake.steps.some((s) => s.step === step && s.status === "failed");
}

/** The client stopped: the absence of a next step only means something then. */
export function ended(ctx: DiagnosisContext): boolean {
  return ctx.handshake.outcome === "failed" || ctx.handshake.outcome === "abandoned";
}
