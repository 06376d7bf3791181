// Diagnosis rules: which step of a connector handshake failed, why, the exchanges that prove it
// and what to change (shared/reference/connector-handshake.md, "Failure catalogue").
//
// Pure: a function of one handshake and its classified exchanges, no I/O and no clock, so the
// inspector can re-run it over stored rows. Rules key on what is visible on the wire.
//
// One answer, one cause: the specific causes "claim" an exchange (an upstream failure, a WAF page,
// a Host or Origin check, an Accept check, a redirect on the MCP URL, a protocol-version error),
// and the generic status rules (probe status, missing metadata, rejected token call…) skip
// claimed exchanges.
//
// The rules live by handshake stage beside this file (discovery, registration, authorize-token,
// transport, edge, after-connecting); add a rule to its stage and its code to DIAGNOSIS_CODES.

import type { ClassifiedExchange } from "../exchange.js";
import { type Diagnosis, DIAGNOSIS_CODES, type DiagnosisCode, type Handshake, type Severity } from "../handshake.js";
import { AFTER_CONNECTING_RULES } from "./after-connecting.js";
import { AUTHORIZE_TOKEN_RULES } from "./authorize-token.js";
import { contextOf } from "./context.js";
import { DISCOVERY_RULES } from "./discovery.js";
import { EDGE_RULES } from "./edge.js";
import { ERA_RULES } from "./eras.js";
import { FIELD_REPORT_RULES } from "./field-reports.js";
import { REGISTRATION_RULES } from "./registration.js";
import type { CodeExplanation, DiagnosisRule } from "./rule.js";
import { TRANSPORT_RULES } from "./transport.js";

export type { CodeExplanation, ConnectorUrl, DiagnosisContext, DiagnosisRule, Finding } from "./rule.js";

export function diagnose(handshake: Handshake, exchanges: ClassifiedExchange[]): Diagnosis[] {
  const ctx = contextOf(handshake, exchanges);
  // Errors are causes of a failed step. When nothing failed, a rule's default "error" becomes a
  // warning (it will break later, or stricter clients); a severity the rule judged from the traffic stands.
  const nothingFailed = handshake.outcome === "succeeded" && !handshake.steps.some((s) => s.status === "failed");
  const found: Found[] = [];
  DIAGNOSIS_RULES.forEach((rule, index) => {
    const finding = rule.check(ctx);
    if (!finding) return;
    const severity = finding.severity ?? (nothingFailed && rule.severity === "error" ? "warning" : rule.severity);
    const diagnosis: Diagnosis = {
      code: rule.code,
      severity,
      summary: finding.summary,
      evidence: [...new Set(finding.evidence)].sort((a, b) => a - b),
      fix: finding.fix,
      reference: rule.reference,
    };
    found.push({ diagnosis, index, rule });
  });
  // Most decisive first: errors, then those whose evidence is the failed step's own exchanges,
  // then those that explain that kind of step, then the earliest in the flow (a cause precedes
  // its effects), then table order. One rule per code, so codes are unique.
  const failedIds = new Set(handshake.steps.filter((s) => s.status === "failed").flatMap((s) => s.exchangeIds));
  const key = ({ diagnosis: d, index, rule }: Found) => [
    SEVERITY_RANK[d.severity],
    d.evidence.some((id) => failedIds.has(id)) ? 0 : 1,
    handshake.failedStep !== null && rule.steps.includes(handshake.failedStep) ? 0 : 1,
    d.evidence[0] ?? Number.MAX_SAFE_INTEGER,
    index,
  ];
  const ordered = found
    .map((f) => ({ f, k: key(f) }))
    .sort((a, b) => compareKeys(a.k, b.k))
    .map(({ f }) => f);
  for (const cause of [...ordered]) {
    const at = ordered.indexOf(cause);
    const symptom = ordered.findIndex((f) => explains(cause, f));
    if (symptom !== -1 && symptom < at) ordered.splice(symptom, 0, ...ordered.splice(at, 1));
  }
  return ordered.map((f) => f.diagnosis);
}

export function explainCode(code: DiagnosisCode): CodeExplanation {
  const rule = DIAGNOSIS_RULES.find((r) => r.code === code);
  if (!rule) throw new Error(`unknown diagnosis code: ${code}`);
  return { code, severity: rule.severity, reference: rule.reference, meaning: rule.meaning, steps: rule.steps };
}

interface Found {
  diagnosis: Diagnosis;
  index: number;
  rule: DiagnosisRule;
}

const SEVERITY_RANK: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

function compareKeys(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** A cause goes right before its symptom when both fire on the same exchanges. */
function explains(cause: Found, symptom: Found): boolean {
  return (
    (cause.rule.explains ?? []).includes(symptom.rule.code) &&
    SEVERITY_RANK[cause.diagnosis.severity] <= SEVERITY_RANK[symptom.diagnosis.severity] &&
    cause.diagnosis.evidence.some((id) => symptom.diagnosis.evidence.includes(id))
  );
}

/** Every rule: the stages in the order a handshake meets them (the order breaks ties in ranking). */
export const DIAGNOSIS_RULES: readonly DiagnosisRule[] = [
  ...DISCOVERY_RULES,
  ...REGISTRATION_RULES,
  ...AUTHORIZE_TOKEN_RULES,
  ...TRANSPORT_RULES,
  ...EDGE_RULES,
  ...AFTER_CONNECTING_RULES,
  ...ERA_RULES,
  ...FIELD_REPORT_RULES,
];

// Fails at import if the table and DIAGNOSIS_CODES drift apart: one rule per code.
{
  const codes = DIAGNOSIS_RULES.map((r) => r.code);
  const missing = DIAGNOSIS_CODES.filter((c) => !codes.includes(c));
  if (codes.length !== new Set(codes).size || missing.length > 0 || codes.length !== DIAGNOSIS_CODES.length) {
    throw new Error(`DIAGNOSIS_RULES must list one rule per DIAGNOSIS_CODES entry (missing: ${missing.join(", ") || "none"})`);
  }
}
