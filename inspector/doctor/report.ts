// The doctor's report for people (a table to read in seconds, then per failure its diagnosis, fix
// and evidence), for scripts (JSON) and for CI (JUnit XML). Everything in it that came from the
// server (details, diagnosis text, bodies, certificate names) is hostile: escaped for the
// terminal here, for XML in the JUnit file.
import { terminalSafe as safe } from "../../common/terminal-safe.js";
import type { Paint } from "../format.js";
import type { DoctorResult, DoctorRow } from "./check.js";
import type { DoctorReport } from "./doctor.js";

const RESULT_WORDS: Record<DoctorResult, string> = {
  connects: "connects",
  ready_for_sign_in: "ok up to sign-in",
  fails: "FAILS",
  not_checked: "not checked",
};

const REFRESH_WORDS = {
  advertised: "the authorization server advertises the refresh_token grant",
  not_advertised: "the authorization server does not advertise the refresh_token grant: users may have to sign in again whenever an access token expires",
  not_said: "the authorization server's metadata has no grant_types_supported (RFC 8414's default has no refresh_token); the token response will tell",
} as const;

const ISS_WORDS = {
  advertised:
    "the authorization server promises iss in its redirects to the callback (RFC 9207): 2026-07-28 clients compare it byte for byte with the issuer before redeeming the code (doctor sees that redirect only where consent is remembered: a person signs in first)",
  not_advertised: "the authorization server does not promise iss in its redirects to the callback (RFC 9207): clients accept them without, and cannot tell them from a mix-up attacker's",
} as const;

/** The era asked for; for a dual-era client that ran, the one it ended in. */
const eraOf = (row: DoctorRow) => (row.era !== "dual" ? row.era : row.steps.length === 0 ? "dual-era" : `dual→${row.eraFallback ? "legacy" : "modern"}`);

export function formatDoctor(report: DoctorReport, paint: Paint): string {
  const lines: string[] = [`mcp-lens doctor ${safe(report.url)}`, ""];
  for (const stage of report.network.stages) lines.push(`  ${stage.stage.padEnd(4)} ${stage.ok ? paint("green", "ok") : paint("red", "FAILS")}  ${safe(stage.detail)}`);
  for (const warning of report.network.warnings) lines.push(`  ${paint("yellow", "warning")}  ${safe(warning)}`);
  lines.push("");
  const width = Math.max(6, ...report.rows.map((r) => r.profile.length));
  const eraWidth = Math.max(3, ...report.rows.map((r) => eraOf(r).length));
  lines.push(`  ${"client".padEnd(width)}  ${"era".padEnd(eraWidth)}  result`);
  for (const row of report.rows) {
    const result = RESULT_WORDS[row.result];
    const colored = row.result === "fails" ? paint("red", result) : row.result === "not_checked" ? paint("yellow", result) : paint("green", result);
    const where = row.failedStep ? ` at ${row.failedStep}` : "";
    const why = row.diagnosis ? `: ${row.diagnosis.code}` : row.result === "fails" || row.result === "not_checked" ? `: ${row.detail}` : "";
    const warned = row.warnings.length ? paint("yellow", ` (warning: ${row.warnings.map((w) => w.code).join(", ")})`) : "";
    lines.push(`  ${row.profile.padEnd(width)}  ${eraOf(row).padEnd(eraWidth)}  ${colored}${where}${safe(why)}${warned}`);
  }
  const warnings = new Map(report.rows.flatMap((r) => r.warnings).map((w) => [w.code, w.summary]));
  for (const [code, summary] of warnings) lines.push(`  ${paint("yellow", "warning")} ${code}: ${safe(summary)}`);
  const failures = report.rows.filter((r) => r.result === "fails" || r.result === "not_checked");
  // Clients that fail the same way are told once: the same step, diagnosis and words.
  const groups = new Map<string, DoctorRow[]>();
  for (const row of failures) {
    const key = JSON.stringify([row.result, row.failedStep, row.diagnosis?.code, row.diagnosis?.summary.replace(/#\d+/g, "#"), row.detail]);
    groups.set(key, [...(groups.get(key) ?? []), row]);
  }
  for (const rows of groups.values()) {
    const row = rows[0]!;
    const who = rows.map((r) => `${r.profile} (${eraOf(r)})`).join(", ");
    lines.push("", paint("bold", `${who}: ${RESULT_WORDS[row.result]}${row.failedStep ? ` at ${row.failedStep}` : ""}`));
    if (row.diagnosis) {
      lines.push(`  ${safe(row.diagnosis.summary)}`, `  fix: ${safe(row.diagnosis.fix)}`, `  see: ${safe(row.diagnosis.reference)}`);
    }
    if (row.detail) lines.push(`  seen: ${safe(row.detail)}`);
    for (const e of row.evidence) {
      lines.push(`  #${e.exchangeId} ${safe(e.request)} → ${e.status ?? "no answer"}${e.body ? `  ${safe(e.body.replace(/\s+/g, " "))}` : ""}`);
    }
  }
  if (report.refreshToken) lines.push("", `refresh: ${REFRESH_WORDS[report.refreshToken]}`);
  if (report.issInRedirect) lines.push(`iss: ${ISS_WORDS[report.issInRedirect]}`);
  const stored = report.recorded;
  if (stored && "error" in stored) lines.push("", paint("red", `not stored in ${safe(stored.db)}: ${safe(stored.error)}`));
  else if (stored) {
    const ids = stored.handshakeIds.map((id) => `#${id}`).join(", ");
    lines.push("", `stored in ${safe(stored.db)}: ${stored.exchanges} exchanges, handshakes ${ids} (inspector show ID --db ${safe(stored.db)})`);
  }
  lines.push("", `dialled: ${report.dialled.length ? safe(report.dialled.join(", ")) : "nothing past the network checks"}`);
  lines.push(report.ok ? paint("green", "every client checked connects, or is ready for the user's sign-in") : paint("red", `${failures.length} of ${report.rows.length} checks do not pass`));
  return `${lines.join("\n")}\n`;
}

const xml = (text: string) =>
  text.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\ufffe\uffff]/g, "\ufffd").replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** One testsuite, one testcase per client and era; a failure carries the diagnosis and evidence. */
export function doctorJunit(report: DoctorReport): string {
  const failures = report.rows.filter((r) => r.result !== "connects" && r.result !== "ready_for_sign_in");
  const cases = report.rows.map((row) => {
    const name = xml(`${row.profile} (${eraOf(row)})`);
    if (row.result === "connects" || row.result === "ready_for_sign_in") return `    <testcase classname="mcp-lens doctor" name="${name}"><system-out>${xml(RESULT_WORDS[row.result])}: ${xml(row.detail)}</system-out></testcase>`;
    const message = `${RESULT_WORDS[row.result]}${row.failedStep ? ` at ${row.failedStep}` : ""}${row.diagnosis ? `: ${row.diagnosis.code}` : ""}`;
    const body = [
      row.diagnosis ? `${row.diagnosis.summary}\nfix: ${row.diagnosis.fix}\nsee: ${row.diagnosis.reference}` : "",
      row.detail ? `seen: ${row.detail}` : "",
      ...row.evidence.map((e) => `#${e.exchangeId} ${e.request} → ${e.status ?? "no answer"} ${e.body}`),
    ].filter(Boolean).join("\n");
    return `    <testcase classname="mcp-lens doctor" name="${name}"><failure message="${xml(message)}">${xml(body)}</failure></testcase>`;
  });
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<testsuites>`,
    `  <testsuite name="${xml(`mcp-lens doctor ${report.url}`)}" tests="${report.rows.length}" failures="${failures.length}">`,
    ...cases,
    `  </testsuite>`,
    `</testsuites>`,
    "",
  ].join("\n");
}
