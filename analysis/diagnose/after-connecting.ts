// After connecting: what breaks the connector later (refresh).
// Each rule: its code, meaning, reference and the fix, beside the check that finds it.

import { claimed, codeGrants, describe, detail, is2xx, isFailure } from "./evidence.js";
import type { DiagnosisRule } from "./rule.js";

export const AFTER_CONNECTING_RULES: readonly DiagnosisRule[] = [
  {
    code: "refresh_token_missing",
    severity: "warning",
    reference: "RFC 6749 §6; RFC 6749 §5.1",
    meaning: "No refresh_token was issued, or the refresh_token grant fails: the connector dies when the access token expires.",
    steps: ["refresh"],
    check(ctx) {
      const refresh = ctx
        .of("token")
        .find((e) => e.facts.grantType === "refresh_token" && isFailure(e) && !claimed(e));
      if (refresh) {
        return {
          summary: `The refresh_token grant ${describe(refresh)} answered ${refresh.status}${detail(refresh)}`,
          evidence: [refresh.id],
          fix: "Keep refresh tokens redeemable: persist them across restarts and replicas, and when rotating, accept the one just issued",
          severity: "error",
        };
      }
      const e = codeGrants(ctx).find(
        (t) => is2xx(t) && t.facts.issued?.accessToken !== undefined && !t.facts.issued.refreshToken,
      );
      if (!e) return null;
      const expires = e.facts.expiresIn !== undefined ? ` (the access token expires in ${e.facts.expiresIn} s)` : "";
      return {
        summary: `The token response ${describe(e)} has no refresh_token${expires}`,
        evidence: [e.id],
        fix:
          'Issue a refresh_token with the authorization_code grant (list "refresh_token" in grant_types_supported ' +
          "and honour the registered grant_types)",
      };
    },
  },
];
