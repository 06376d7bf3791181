// The data model of connector handshakes and their diagnoses: what the analyser derives,
// purely, from recorded exchanges (see shared/reference/connector-handshake.md).

import type { Era } from "./exchange.js";

export const CLIENT_FAMILIES = [
  "claude.ai",
  "chatgpt",
  "claude-code",
  "claude-desktop",
  "vscode",
  "cursor",
  "mcp-inspector",
  "mcp-remote",
  "typescript-sdk",
  "python-sdk",
  "other",
] as const;
export type ClientFamily = (typeof CLIENT_FAMILIES)[number];

/** A handshake's era: "unknown" until an MCP request shows one (e.g. discovery only). */
export const HANDSHAKE_ERAS = ["modern", "legacy", "unknown"] as const;
export type HandshakeEra = Era | "unknown";

/**
 * How the client got its OAuth client id: a Client ID Metadata Document (client_id an https URL),
 * dynamic registration, one it already had (pre-registered or cached), or none seen (authless).
 */
export const REGISTRATION_KINDS = ["cimd", "dcr", "pre_registered", "none"] as const;
export type RegistrationKind = (typeof REGISTRATION_KINDS)[number];

/** The steps of the handshake a hosted connector performs, in order. */
export const HANDSHAKE_STEPS = [
  "probe", // unauthenticated POST initialize
  "protected_resource_metadata",
  "authorization_server_metadata",
  "registration",
  "authorize", // in the user's browser
  "callback", // the authorization response: redirect with code (consent POST or authorize GET)
  "token",
  "discover", // server/discover (2026-07-28): the modern era's first authenticated (or authless) request
  "initialize", // authenticated (or authless) initialize
  "initialized",
  "list", // tools/list, prompts/list, resources/list
  "tool_call",
  "stream", // GET text/event-stream, or subscriptions/listen (2026-07-28)
  "teardown", // DELETE
  "refresh", // grant_type=refresh_token
] as const;
export type HandshakeStep = (typeof HANDSHAKE_STEPS)[number];

export type HandshakeOutcome = "succeeded" | "failed" | "abandoned" | "in_progress";

export interface StepRecord {
  step: HandshakeStep;
  /** ok: the step did what the client needed; failed: it did not (the evidence is in exchangeIds). */
  status: "ok" | "failed";
  exchangeIds: number[];
  /** Epoch ms of the first exchange of this step. */
  at: number;
}

export type Severity = "error" | "warning" | "info";

export interface Diagnosis {
  /** Stable code, e.g. issuer_mismatch (see DIAGNOSIS_CODES). */
  code: DiagnosisCode;
  severity: Severity;
  /** One sentence naming the concrete values seen and expected. */
  summary: string;
  /** Ids of the exchanges that prove it. */
  evidence: number[];
  /** What to change, concretely. */
  fix: string;
  /** RFC or MCP specification section. */
  reference: string;
}

/** The modern era (2026-07-28) and where the eras meet. */
export const ERA_CODES = ["era_mismatch", "header_mismatch", "cimd_fetch_failed", "authorization_response_iss_mismatch", "client_capability_missing"] as const;

/** Field reports (2025-2026 trackers of clients, SDKs and servers). */
export const FIELD_REPORT_CODES = [
  "token_auth_method_mismatch",
  "stale_client_registration",
  "refresh_token_replayed",
  "invalid_token_wrong_status",
  "tool_definition_rejected",
  "www_authenticate_malformed",
  "step_up_loop",
  "client_abandoned_after_token",
] as const;

export const DIAGNOSIS_CODES = [
  "www_authenticate_missing",
  "resource_metadata_url_invalid",
  "probe_unexpected_status",
  "accept_header_rejected",
  "protected_resource_metadata_missing",
  "resource_mismatch",
  "issuer_mismatch",
  "authorization_server_metadata_missing",
  "pkce_s256_not_advertised",
  "registration_unavailable",
  "registration_rejected",
  "registration_stub",
  "redirect_uri_rejected",
  "scope_rejected",
  "resource_rejected",
  "sign_in_failed",
  "authorization_redirect_status",
  "token_request_rejected",
  "token_invalid_grant",
  "token_audience_mismatch",
  "mcp_endpoint_redirect",
  "mcp_endpoint_not_found",
  "host_header_rejected",
  "origin_rejected",
  "sse_not_flushed",
  "session_not_found",
  "protocol_version_rejected",
  "cors_preflight_failed",
  "cors_expose_headers_missing",
  "upstream_unreachable",
  "upstream_timeout",
  "slow_response",
  "waf_block",
  "refresh_token_missing",
  ...ERA_CODES,
  ...FIELD_REPORT_CODES,
] as const;
export type DiagnosisCode = (typeof DIAGNOSIS_CODES)[number];

export interface Handshake {
  /** The id of its first exchange: stable when the analysis is re-run over the same rows. */
  id: number;
  clientFamily: ClientFamily;
  /** clientInfo.name (initialize or `_meta`) or the registered client_name, when the traffic showed one. */
  clientName: string | null;
  era: HandshakeEra;
  /** A dual-era client tried the modern era, the server did not speak it, and it went on in the legacy era: healthy. */
  eraFallback: boolean;
  registration: RegistrationKind;
  startedAt: number;
  endedAt: number;
  /** In the order they were reached (when each first started); a step may be failed. */
  steps: StepRecord[];
  outcome: HandshakeOutcome;
  failedStep: HandshakeStep | null;
  exchangeIds: number[];
  diagnoses: Diagnosis[];
}
