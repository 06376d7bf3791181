// Where the recording goes: an SQLite file (the embedded default) or a PostgreSQL database that
// several replicas share (`--db postgres://user:password@host/db`). A connection URL carries its
// password, which only connecting needs: anything shown (logs, /health, errors) goes without it.

const POSTGRES_SCHEMES = ["postgres:", "postgresql:"];

export type DatabaseLocation =
  | { kind: "sqlite"; file: string }
  | { kind: "postgres"; url: string };

export const isPostgresUrl = (db: string): boolean => POSTGRES_SCHEMES.some((scheme) => db.toLowerCase().startsWith(`${scheme}//`));

export function databaseLocation(db: string): DatabaseLocation {
  return isPostgresUrl(db) ? { kind: "postgres", url: db } : { kind: "sqlite", file: db };
}

/** A URL as shown to anyone: its password replaced by ***. Unchanged when it has none; anything unparsable is shown as "(unparsable URL)". */
export function withoutPassword(url: string): string {
  // A password with an unescaped '#', '/' or '?' parses as something else (postgres://u:12#x@h
  // is host "u", port 12): whatever stands between "//" and the last "@" is the user's.
  const userinfo = /^([a-z][a-z0-9+.-]*:\/\/)([^@]*@)/i.exec(url.slice(0, url.lastIndexOf("@") + 1));
  if (userinfo && userinfo[2]!.includes(":")) {
    const user = userinfo[2]!.slice(0, userinfo[2]!.indexOf(":"));
    url = `${userinfo[1]}${user}:***@${url.slice(url.lastIndexOf("@") + 1)}`;
  }
  // libpq's ?password=: everything from it to the end goes (an unescaped '#' or '&' in it would
  // otherwise leave its tail in sight).
  const param = /([?&]password=)/i.exec(url);
  if (param) url = `${url.slice(0, param.index)}${param[1]}***`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "(unparsable URL)";
  }
  // libpq's own ?password= parameter is a password too.
  const passwordParams = [...parsed.searchParams.keys()].filter((key) => key.toLowerCase() === "password");
  if (parsed.password === "" && passwordParams.length === 0) return url;
  if (parsed.password !== "") parsed.password = "***";
  for (const key of passwordParams) parsed.searchParams.set(key, "***");
  return parsed.toString().replace(/\/$/, "");
}

/** The database as shown in logs and errors: a file as it is, a PostgreSQL URL without its password. */
export const shownDatabase = (db: string): string => (isPostgresUrl(db) ? withoutPassword(db) : db);

/** An error's message on one line, for "cannot open database …: <reason>". */
export function oneLineMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.replace(/\s*\n\s*/g, " ");
}
