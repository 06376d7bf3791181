// A connector run (a re-run, a doctor check) judged like live traffic: its exchanges, as the
// connector sent and received them, redacted (with a key of its own, in memory), classified,
// grouped into handshakes, settled (the run has stopped) and diagnosed by the very rules that
// judge what the proxy records (analysis/). One diagnosis, whether the traffic came from a user
// or from mcp-lens itself.
import { randomBytes } from "node:crypto";
import { createClassifier } from "../analysis/classify.js";
import { diagnose } from "../analysis/diagnose/index.js";
import type { ClassifiedExchange } from "../analysis/exchange.js";
import type { Diagnosis } from "../analysis/handshake.js";
import { groupHandshakes } from "../analysis/handshakes.js";
import { settle } from "../analysis/verdict.js";
import { toRecorded } from "../recording/record.js";
import { createRedactor } from "../recording/redact.js";
import type { ConnectorRun } from "./connector.js";

export interface JudgedRun {
  /** The diagnoses of the handshake holding the run's last exchange (where it stopped), most decisive first. */
  diagnoses: Diagnosis[];
  /** Every exchange of the run, redacted and classified: the evidence the diagnoses point to, by id. */
  exchanges: ClassifiedExchange[];
}

export function judgeRun(run: ConnectorRun): JudgedRun {
  if (run.exchanges.length === 0) return { diagnoses: [], exchanges: [] };
  const redactor = createRedactor(randomBytes(32));
  const classify = createClassifier();
  const exchanges = run.exchanges.map((raw) => classify(toRecorded(raw, redactor)));
  const last = exchanges[exchanges.length - 1]!.id;
  const grouped = groupHandshakes(exchanges, Date.now()).find((h) => h.exchangeIds.includes(last));
  if (!grouped) return { diagnoses: [], exchanges };
  // Nothing will add to its handshake: it is judged as the proxy judges one whose client went
  // quiet (no grace for a fallback that will not come).
  const handshake = settle(grouped);
  const own = exchanges.filter((e) => handshake.exchangeIds.includes(e.id));
  return { diagnoses: diagnose(handshake, own), exchanges };
}
