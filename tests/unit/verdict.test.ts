import { describe, expect, it } from "vitest";
import type { Diagnosis, Handshake } from "../../analysis/handshake.js";
import { SETTLE_MS, withVerdict } from "../../analysis/verdict.js";

function handshake(overrides: Partial<Handshake> = {}): Handshake {
  return {
    id: 1,
    clientFamily: "claude.ai",
    clientName: "Anthropic",
    era: "legacy",
    eraFallback: false,
    registration: "dcr",
    startedAt: 1_000,
    endedAt: 2_000,
    steps: [
      { step: "probe", status: "ok", exchangeIds: [1], at: 1_000 },
      { step: "protected_resource_metadata", status: "ok", exchangeIds: [2], at: 1_500 },
    ],
    outcome: "in_progress",
    failedStep: null,
    exchangeIds: [1, 2],
    diagnoses: [],
    ...overrides,
  };
}

const diagnosis = (code: Diagnosis["code"], severity: Diagnosis["severity"], evidence: number[]): Diagnosis => ({
  code,
  severity,
  evidence,
  summary: "s",
  fix: "f",
  reference: "r",
});

describe("withVerdict", () => {
  it("calls a client that went quiet after an error failed, at the last step the errors point to", () => {
    const diagnoses = [diagnosis("resource_metadata_url_invalid", "error", [1]), diagnosis("resource_mismatch", "error", [1, 2])];
    const judged = withVerdict(handshake(), diagnoses, 2_000 + SETTLE_MS);
    expect(judged).toMatchObject({ outcome: "failed", failedStep: "protected_resource_metadata", diagnoses });
  });

  it("waits while the client may still be trying a fallback", () => {
    const judged = withVerdict(handshake(), [diagnosis("resource_mismatch", "error", [2])], 2_000 + SETTLE_MS - 1);
    expect(judged.outcome).toBe("in_progress");
  });

  it("leaves successes, warnings and the grouping's own failed step alone", () => {
    expect(withVerdict(handshake({ outcome: "succeeded" }), [diagnosis("resource_mismatch", "error", [2])], 99_999).outcome).toBe("succeeded");
    expect(withVerdict(handshake(), [diagnosis("refresh_token_missing", "warning", [2])], 99_999).outcome).toBe("in_progress");
    const failed = handshake({ outcome: "failed", failedStep: "probe" });
    expect(withVerdict(failed, [diagnosis("resource_mismatch", "error", [2])], 2_001).failedStep).toBe("probe");
  });

  it("turns an abandoned handshake with an error into a failure at once", () => {
    expect(withVerdict(handshake({ outcome: "abandoned" }), [diagnosis("issuer_mismatch", "error", [2])], 2_001).outcome).toBe("failed");
  });
});
