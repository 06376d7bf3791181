// Failures the field reports most (2025-2026 trackers of clients, SDKs and servers): client
// authentication, stale registrations, refresh races, token errors, tool definitions, challenges.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import type { DiagnosisRule } from "./rule.js";

// Placeholders until each rule is written: they never fire.
export const FIELD_REPORT_RULES: readonly DiagnosisRule[] = [
  {
    code: "token_auth_method_mismatch",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "stale_client_registration",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "refresh_token_replayed",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "invalid_token_wrong_status",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "tool_definition_rejected",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "www_authenticate_malformed",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "step_up_loop",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "client_abandoned_after_token",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
];
