// `mcp-lens doctor URL`: the connector handshake performed now, as each client performs it and in
// the era it speaks, against any MCP server (with or without mcp-lens in front), after the checks
// that come before HTTP (network.ts). Each run is inspector/connector.ts's, judged by the same
// analysis as live traffic (../judge-run.ts); what it reports per client and era: connects (with
// --token, which also opens the era's stream: the GET stream or subscriptions/listen), ready for
// the user's sign-in (without), or fails at a step, with the diagnosis, its fix and the exchanges
// that prove it (redacted); and whether the authorization server advertises refresh tokens.
//
// Safe by construction: it dials the given URL's origin and, once the server's own Protected
// Resource Metadata names one, that authorization server's origin; nothing else (a URL elsewhere
// is reported, not followed). --token goes to the given origin only (connector-wire.ts); what it
// prints is the redacted recording of its own exchanges and the servers' answers, with the token
// replaced wherever a server echoed it.
import type { ClientEra } from "../clients.js";
import type { ConnectorRun } from "../connector.js";
import { withoutSecret } from "../judge-run.js";
import { checkClient, type DoctorResult, type DoctorRow, failedBeforeHttp } from "./check.js";
import { checkNetwork, type NetworkCheck } from "./network.js";
import type { DoctorProfile } from "./profiles.js";
import { readClientMetadataDocument } from "./metadata-document.js";
import { recordRuns, type RecordedRuns } from "./record.js";
import { shownDatabase } from "../../common/database-location.js";

export type { DoctorResult, DoctorRow, EvidenceExcerpt } from "./check.js";

export interface DoctorOptions {
  profiles: readonly DoctorProfile[];
  /** The eras to play each profile in; empty: each profile's own. */
  eras: readonly ClientEra[];
  /** A bearer the server accepts: the run continues with the authenticated MCP requests. */
  token?: string;
  /** Per request, over each profile's own; default the profile's (10 s, like hosted clients). */
  timeoutMs?: number;
  /** Also call the first listed tool (with --token; side effects: only when asked). */
  toolCall?: boolean;
  /** Store the runs' exchanges and handshakes in this recording database (record.ts). */
  db?: string;
  /** The operator's Client ID Metadata Document, for the clients that use one. */
  clientMetadataUrl?: string;
}

export interface DoctorReport {
  url: string;
  network: NetworkCheck;
  rows: DoctorRow[];
  /** Every origin any run dialled: the given one and the authorization servers its metadata named. */
  dialled: string[];
  /** Every row connects or is ready for the user's sign-in. */
  ok: boolean;
  /** Whether the authorization server's metadata advertises the refresh_token grant (when a run read it). */
  refreshToken?: "advertised" | "not_advertised" | "not_said";
  /** Whether it promises iss in its redirects to the callback (RFC 9207), when a run read its metadata. */
  issInRedirect?: "advertised" | "not_advertised";
  /** With --db: what was stored there, or why nothing was. */
  recorded?: RecordedRuns | { db: string; error: string };
}

const PASSING: ReadonlySet<DoctorResult> = new Set(["connects", "ready_for_sign_in"]);

export async function runDoctor(url: string, options: DoctorOptions): Promise<DoctorReport> {
  const target = new URL(url);
  const network = await checkNetwork(target, options.timeoutMs ?? 10_000);
  const plan = options.profiles.flatMap((profile) => (options.eras.length ? options.eras : [profile.era]).map((era) => ({ profile, era })));
  const rows: DoctorRow[] = [];
  const dialled = new Set<string>();
  // Read once, only when a client that uses it is asked for and the network is there.
  const wantsDocument = options.clientMetadataUrl !== undefined && network.ok && options.profiles.some((p) => p.usesMetadataDocument);
  const document = wantsDocument ? await readClientMetadataDocument(options.clientMetadataUrl!, options.timeoutMs ?? 10_000) : undefined;
  if (wantsDocument) dialled.add(new URL(options.clientMetadataUrl!).origin);
  let refreshToken: DoctorReport["refreshToken"];
  let issInRedirect: DoctorReport["issInRedirect"];
  const runs: ConnectorRun[] = [];
  const secrets = options.token ? [options.token] : [];
  for (const { profile, era } of plan) {
    if (!network.ok) {
      rows.push(failedBeforeHttp(profile, era, "network", network.problem ?? ""));
      continue;
    }
    const usable = profile.usesMetadataDocument === true ? document : undefined;
    if (usable instanceof Error) {
      rows.push(failedBeforeHttp(profile, era, "registration", usable.message));
      continue;
    }
    const { row, run } = await checkClient(target.href, profile, era, {
      ...(options.token ? { token: options.token } : {}),
      ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
      toolCall: options.toolCall === true,
      ...(usable ? { document: usable } : {}),
      notFollowedHint: () => "doctor dials only the server's origin and the authorization server its metadata names",
    });
    rows.push(row);
    if (!run) continue;
    runs.push(run);
    for (const origin of run.dialled) dialled.add(origin);
    refreshToken ??= run.refreshToken;
    issInRedirect ??= run.issInRedirect;
  }
  // A database that cannot take the checks loses them, not the report.
  let recorded: RecordedRuns | { db: string; error: string } | undefined;
  if (options.db !== undefined) {
    try {
      recorded = await recordRuns(options.db, runs, secrets);
    } catch (error) {
      recorded = { db: shownDatabase(options.db), error: (error as Error).message };
    }
  }
  const report: DoctorReport = {
    url: target.href,
    network,
    rows,
    dialled: [...dialled],
    ok: rows.every((r) => PASSING.has(r.result)),
    ...(refreshToken ? { refreshToken } : {}),
    ...(issInRedirect ? { issInRedirect } : {}),
    ...(recorded ? { recorded } : {}),
  };
  // A server may echo the bearer back (in an error, a body): it is never printed.
  return options.token ? withoutSecret(report, options.token) : report;
}
