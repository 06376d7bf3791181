// The data model of connector handshakes and their diagnoses: what the analyser derives,
// purely, from recorded exchanges (see shared/reference/connector-handshake.md).

export const CLIENT_FAMILIES = ["claude.ai", "chatgpt", "claude-code", "mcp-inspector", "mcp-remote", "other"] as const;
export type ClientFamily = (typeof CLIENT_FAMILIES)[number];

/** The steps of the handshake a hosted connector performs, in order. */
export const HANDSHAKE_STEPS = [
  "probe", // unauthenticated POST initialize
  "protected_resource_metadata",
  "authorization_server_metadata",
  "registration",
  "authorize", // in the user's browser
  "callback", // the authorization response: redirect with code (consent POST or authorize GET)
  "token",
  "initialize", // authenticated (or authless) initialize
  "initialized",
  "list", // tools/list, prompts/list, resources/list
  "tool_call",
  "stream", // GET text/event-stream
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
] as const;
export type DiagnosisCode = (typeof DIAGNOSIS_CODES)[number];

export interface Handshake {
  /** The id of its first exchange: stable when the analysis is re-run over the same rows. */
  id: number;
  clientFamily: ClientFamily;
  /** clientInfo.name or the registered client_name, when the traffic showed one. */
  clientName: string | null;
  startedAt: number;
  endedAt: number;
  /** In the order they were first reached; a step may be failed. */
  steps: StepRecord[];
  outcome: HandshakeOutcome;
  failedStep: HandshakeStep | null;
  exchangeIds: number[];
  diagnoses: Diagnosis[];
}
