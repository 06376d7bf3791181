// The modern era (2026-07-28) and where the two eras meet: versions, request headers, Client ID
// Metadata Documents, the authorization response's iss.
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import type { DiagnosisRule } from "./rule.js";

// Placeholders until each rule is written: they never fire.
export const ERA_RULES: readonly DiagnosisRule[] = [
  {
    code: "era_mismatch",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "header_mismatch",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "cimd_fetch_failed",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
  {
    code: "authorization_response_iss_mismatch",
    severity: "error",
    reference: "TODO",
    meaning: "TODO",
    steps: [],
    check: () => null,
  },
];
