// Reading WWW-Authenticate challenges (RFC 9110 §11.6.1) as clients do: the parser the rules on
// malformed challenges and on step-up scopes share.

import { isHeaderName, type ClassifiedExchange } from "../exchange.js";

interface Challenge {
  scheme: string;
  params: Array<[name: string, value: string]>;
  token68?: string;
}
/** Every WWW-Authenticate value of the response, in wire order. */
export function challengeValues(e: ClassifiedExchange): string[] {
  return (e.responseHeaders ?? []).filter(([n]) => isHeaderName(n, "www-authenticate")).map(([, v]) => v);
}

const TCHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;

/**
 * Parses WWW-Authenticate values (RFC 9110 §11.6.1: #challenge, challenge = scheme [ token68 / #auth-param ]).
 * Lenient where clients are: an unquoted value may hold any character but whitespace, "," and '"' (URLs).
 * Returns the challenges, or what makes the header unparsable.
 */
export function parseChallenges(values: readonly string[]): { challenges: Challenge[] } | { error: string } {
  const challenges: Challenge[] = [];
  for (const value of values) {
    const s = value;
    let i = 0;
    const ows = () => {
      while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
    };
    const token = () => {
      const start = i;
      while (i < s.length && TCHAR.test(s[i]!)) i++;
      return s.slice(start, i);
    };
    let current: Challenge | undefined;
    while (i < s.length) {
      ows();
      if (s[i] === ",") {
        i++;
        continue;
      }
      if (i >= s.length) break;
      const start = i;
      const name = token();
      if (name === "") return { error: `unparsable text ${quote(s.slice(i))} where an auth scheme or parameter should be` };
      ows();
      if (s[i] === "=" && !current) return { error: `a parameter (${name}=…) without an auth scheme before it` };
      if (s[i] === "=" && current && current.token68 === undefined) {
        // name=value: a parameter of the current challenge (or the current one's token68 padding).
        i++;
        ows();
        let v: string;
        if (s[i] === '"') {
          i++;
          let out = "";
          let closed = false;
          while (i < s.length) {
            const c = s[i]!;
            if (c === "\\" && i + 1 < s.length) {
              out += s[i + 1];
              i += 2;
              continue;
            }
            if (c === '"') {
              closed = true;
              i++;
              break;
            }
            out += c;
            i++;
          }
          if (!closed) return { error: `an unbalanced quote in the value of ${name}` };
          v = out;
        } else {
          const from = i;
          while (i < s.length && !/[\s,"]/.test(s[i]!)) i++;
          v = s.slice(from, i);
          if (v === "") return { error: `${name}= has no value` };
        }
        current.params.push([name, v]);
        ows();
        if (i < s.length && s[i] !== ",") return { error: `unparsable text ${quote(s.slice(i))} after ${name}` };
        continue;
      }
      // A scheme: a new challenge. What follows it is its token68 or its first parameter.
      i = start + name.length;
      current = { scheme: name, params: [] };
      challenges.push(current);
      if (i >= s.length || s[i] === ",") continue;
      if (s[i] !== " " && s[i] !== "\t") return { error: `unparsable text ${quote(s.slice(i))} after ${name}` };
      ows();
      if (i >= s.length || s[i] === ",") continue;
      const after = i;
      const next = token();
      ows();
      const isParam = next !== "" && s[i] === "=" && !/^=*\s*(?:,|$)/.test(s.slice(i));
      i = after;
      if (isParam) continue;
      const t68 = /^[A-Za-z0-9\-._~+/]+=*/.exec(s.slice(i));
      if (!t68) return { error: `unparsable text ${quote(s.slice(i))} after ${name}` };
      current.token68 = t68[0];
      i += t68[0].length;
      ows();
      if (i < s.length && s[i] !== ",") return { error: `unparsable text ${quote(s.slice(i))} after ${name}` };
    }
  }
  return { challenges };
}
export function quote(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 57)}…` : text);
}
/** The scope of a challenge, quoted or not. */
export function challengeScope(e: ClassifiedExchange): string | undefined {
  const parsed = parseChallenges(challengeValues(e));
  if ("error" in parsed) return e.facts.scope;
  for (const c of parsed.challenges) {
    const scope = c.params.find(([n]) => n.toLowerCase() === "scope");
    if (scope) return scope[1];
  }
  return undefined;
}
