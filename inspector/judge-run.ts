// Traffic mcp-lens made itself (a re-run, a doctor check) judged like live traffic: its exchanges,
// as the connector sent and received them, redacted (with a key of its own, in memory, or the
// recording database's), classified, grouped into handshakes, settled (the run has stopped) and
// diagnosed by the very rules that judge what the proxy records (analysis/). One diagnosis,
// whether the traffic came from a user or from mcp-lens itself.
import { randomBytes } from "node:crypto";
import { createClassifier } from "../analysis/classify.js";
import { diagnose } from "../analysis/diagnose/index.js";
import type { ClassifiedExchange, RawExchange } from "../analysis/exchange.js";
import type { Diagnosis, Handshake } from "../analysis/handshake.js";
import { groupHandshakes } from "../analysis/handshakes.js";
import { settle, withVerdict } from "../analysis/verdict.js";
import { toRecorded } from "../recording/record.js";
import { createRedactor, type Redactor } from "../recording/redact.js";
import type { ConnectorRun } from "./connector.js";

export interface JudgedRun {
  /** The diagnoses of the handshake holding the run's last exchange (where it stopped), most decisive first. */
  diagnoses: Diagnosis[];
  /** That handshake, as the analyser judged it (its outcome and failed step). */
  handshake?: Handshake;
  /** Every exchange of the run, redacted and classified: the evidence the diagnoses point to, by id. */
  exchanges: ClassifiedExchange[];
}

export interface JudgeOptions {
  /** The recording database's, to store the result; default a key of its own, in memory. */
  redactor?: Redactor;
  /** The id of the first exchange (the next free one of a database); default 1. */
  firstId?: number;
  /**
   * Secrets the run itself sent (doctor's --token): replaced before anything is recorded, in
   * headers and bodies alike, so a server that echoes one back cannot put it in a database.
   */
  secrets?: readonly string[];
}

/** What a known secret becomes in a recording. */
export const SECRET_MARK = "[the --token]";

/** Every string of a result with the secret replaced: what servers answered is theirs, and hostile (one may echo the bearer). */
export function withoutSecret<T>(value: T, secret: string): T {
  if (typeof value === "string") return value.split(secret).join(SECRET_MARK) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => withoutSecret(v, secret)) as T;
  if (value !== null && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withoutSecret(v, secret)])) as T;
  return value;
}

function withoutSecrets(raw: RawExchange, secrets: readonly string[]): RawExchange {
  const has = (text: string) => secrets.some((secret) => text.includes(secret));
  const scrub = (text: string) => secrets.reduce((out, secret) => out.split(secret).join(SECRET_MARK), text);
  const headers = (pairs: RawExchange["requestHeaders"]) => pairs.map(([name, value]): [string, string] => [name, has(value) ? scrub(value) : value]);
  const body = (b: RawExchange["requestBody"]) => (secrets.some((secret) => b.bytes.includes(secret)) ? { ...b, bytes: Buffer.from(scrub(b.bytes.toString("latin1")), "latin1") } : b);
  return {
    ...raw,
    requestHeaders: headers(raw.requestHeaders),
    ...(raw.responseHeaders ? { responseHeaders: headers(raw.responseHeaders) } : {}),
    requestBody: body(raw.requestBody),
    responseBody: body(raw.responseBody),
  };
}

/** Every handshake of the exchanges, settled and diagnosed, with the exchanges as recorded. */
export function judgeExchanges(raws: readonly RawExchange[], options: JudgeOptions = {}): { exchanges: ClassifiedExchange[]; handshakes: Handshake[] } {
  const redactor = options.redactor ?? createRedactor(randomBytes(32));
  const classify = createClassifier();
  const firstId = options.firstId ?? 1;
  const secrets = options.secrets?.filter(Boolean) ?? [];
  const exchanges = raws.map((raw, i) => classify(toRecorded({ ...(secrets.length ? withoutSecrets(raw, secrets) : raw), id: firstId + i }, redactor)));
  // Nothing will add to these handshakes: each is judged as the proxy judges one whose client
  // went quiet (no grace for a fallback that will not come).
  const handshakes = groupHandshakes(exchanges, Date.now()).map((grouped) => {
    const stopped = settle(grouped);
    const own = exchanges.filter((e) => stopped.exchangeIds.includes(e.id));
    return withVerdict(stopped, diagnose(stopped, own), Number.POSITIVE_INFINITY);
  });
  return { exchanges, handshakes };
}

export function judgeRun(run: ConnectorRun, secrets: readonly string[] = []): JudgedRun {
  const { exchanges, handshakes } = judgeExchanges(run.exchanges, { secrets });
  const last = exchanges.at(-1)?.id;
  const handshake = handshakes.find((h) => last !== undefined && h.exchangeIds.includes(last));
  return { diagnoses: handshake?.diagnoses ?? [], exchanges, ...(handshake ? { handshake } : {}) };
}
