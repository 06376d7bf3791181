// Just enough PromQL reading for the tests that keep the dashboard and the alert rules in step
// with the metrics: the vector selectors an expression reads, and the signals an alert condition
// compares with its thresholds. Prometheus itself parses and evaluates the expressions; this
// only cuts them apart along the grammar's top level (strings, {matchers}, [ranges] and
// parentheses are skipped, never split).

const AGGREGATIONS = new Set([
  "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
  "bottomk", "topk", "quantile", "limitk", "limit_ratio",
]);
/** Keywords followed by a parenthesised label list, not an expression. */
const LABEL_LISTS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);
const KEYWORDS = new Set(["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", ...LABEL_LISTS]);
const SET_OPERATORS = new Set(["and", "or", "unless"]);

const IDENT = /[A-Za-z_:][A-Za-z0-9_:]*/y;
const NUMBER_LIKE = /[0-9.][A-Za-z0-9_.+-]*/y; // numbers, 1e3, durations (5m, 1h30m)

/** Index just past the string starting at `i` (", ' or `), escapes honoured. */
function skipString(s: string, i: number): number {
  const quote = s[i]!;
  for (let j = i + 1; j < s.length; j++) {
    if (quote !== "`" && s[j] === "\\") j++;
    else if (s[j] === quote) return j + 1;
  }
  throw new Error(`unterminated string in ${s}`);
}

/** Index just past the bracket that closes the one at `i` ((), {} or []), strings skipped. */
function skipGroup(s: string, i: number): number {
  const open = s[i]!;
  const close = open === "(" ? ")" : open === "{" ? "}" : "]";
  let depth = 0;
  for (let j = i; j < s.length; j++) {
    const c = s[j]!;
    if (c === '"' || c === "'" || c === "`") {
      j = skipString(s, j) - 1;
    } else if (c === open) depth++;
    else if (c === close && --depth === 0) return j + 1;
  }
  throw new Error(`unbalanced ${open} in ${s}`);
}

function skipSpace(s: string, i: number): number {
  while (i < s.length && /\s/.test(s[i]!)) i++;
  return i;
}

function matchAt(re: RegExp, s: string, i: number): string | null {
  re.lastIndex = i;
  return re.exec(s)?.[0] ?? null;
}

/**
 * Every vector selector in an expression, with its matchers but without range or offset:
 * `rate(a{b="c"}[5m]) / on () d offset 1h` → [`a{b="c"}`, `d`].
 */
export function vectorSelectors(expr: string): string[] {
  const found: string[] = [];
  for (let i = 0; i < expr.length; ) {
    const c = expr[i]!;
    if (c === '"' || c === "'" || c === "`") {
      i = skipString(expr, i);
    } else if (c === "[") {
      i = skipGroup(expr, i);
    } else if (c === "{") {
      const end = skipGroup(expr, i); // a selector without a metric name
      found.push(expr.slice(i, end));
      i = end;
    } else if (c === "#") {
      while (i < expr.length && expr[i] !== "\n") i++;
    } else if (/[0-9.]/.test(c)) {
      i += matchAt(NUMBER_LIKE, expr, i)!.length;
    } else if (/[A-Za-z_:]/.test(c)) {
      const word = matchAt(IDENT, expr, i)!;
      const next = skipSpace(expr, i + word.length);
      const lower = word.toLowerCase();
      if (LABEL_LISTS.has(lower) && expr[next] === "(") i = skipGroup(expr, next);
      else if (KEYWORDS.has(lower) || AGGREGATIONS.has(lower) || expr[next] === "(") i += word.length;
      else if (expr[next] === "{") {
        const end = skipGroup(expr, next);
        found.push(word + expr.slice(next, end));
        i = end;
      } else {
        found.push(word);
        i += word.length;
      }
    } else {
      i++;
    }
  }
  return [...new Set(found)];
}

/** Splits at the top-level set operators: [operand, operator, operand, …]. */
function splitSetOperators(expr: string): string[] {
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i < expr.length; ) {
    const c = expr[i]!;
    if (c === '"' || c === "'" || c === "`") i = skipString(expr, i);
    else if (c === "(" || c === "{" || c === "[") i = skipGroup(expr, i);
    else if (/[A-Za-z_:]/.test(c)) {
      const word = matchAt(IDENT, expr, i)!;
      if (SET_OPERATORS.has(word.toLowerCase())) {
        parts.push(expr.slice(start, i), word.toLowerCase());
        start = i + word.length;
      }
      i += word.length;
    } else if (/[0-9.]/.test(c)) i += matchAt(NUMBER_LIKE, expr, i)!.length;
    else i++;
  }
  parts.push(expr.slice(start));
  return parts;
}

/** Without one pair of parentheses around the whole expression, if it has one. */
function unwrap(expr: string): string {
  const trimmed = expr.trim();
  return trimmed.startsWith("(") && skipGroup(trimmed, 0) === trimmed.length ? trimmed.slice(1, -1).trim() : trimmed;
}

const VECTOR_MATCHING = /^\s*(?:(?:on|ignoring)\s*\([^)]*\)\s*)?(?:group_(?:left|right)\s*(?:\([^)]*\))?\s*)?/i;
const THRESHOLD = /^([\s\S]*?\S)\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?\s*$/i;

/**
 * The signals of an alert condition: what it compares with its thresholds. The condition is cut
 * at its top-level `and` / `or` / `unless`; the right side of `unless` only excludes, so it is
 * dropped; each remaining operand loses its vector matching (`on (…)`) and its comparison with a
 * number (`> 0.05`), and a parenthesised operand is cut again.
 *   `a / b > 0.05 and c >= 5` → [`a / b`, `c`]
 *   `increase(x[15m]) > 0 or (x unless x offset 15m)` → [`increase(x[15m])`, `x`]
 */
export function conditionSignals(expr: string): string[] {
  const parts = splitSetOperators(unwrap(expr));
  if (parts.length === 1) {
    const operand = parts[0]!.trim();
    const bare = THRESHOLD.exec(operand)?.[1] ?? operand;
    const inner = unwrap(bare);
    return inner !== bare.trim() || bare !== operand ? conditionSignals(inner) : [operand];
  }
  const signals: string[] = [];
  for (let i = 0; i < parts.length; i += 2) {
    if (parts[i - 1] === "unless") continue;
    signals.push(...conditionSignals(parts[i]!.replace(VECTOR_MATCHING, "")));
  }
  return [...new Set(signals)];
}

/** Grafana's built-in variables, as they would be for the test's short-lived Prometheus. */
export const GRAFANA_VARIABLES: Record<string, string> = {
  __rate_interval: "1m",
  __interval: "15s",
  __range: "5m",
  __range_s: "300",
  __range_ms: "300000",
};

/** Replaces $var, ${var} and [[var]]; throws on a variable it has no value for. */
export function expandGrafanaVariables(expr: string, values: Record<string, string> = GRAFANA_VARIABLES): string {
  return expr.replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]/g, (whole, a?: string, b?: string, c?: string) => {
    const name = (a ?? b ?? c)!;
    const value = values[name];
    if (value === undefined) throw new Error(`no test value for the Grafana variable ${whole} in: ${expr}`);
    return value;
  });
}
