// --db: which store a value names, and how it is shown: a PostgreSQL URL never with its password.
import { describe, expect, it } from "vitest";
import { databaseLocation, isPostgresUrl, shownDatabase, withoutPassword } from "../../common/database-location.js";

describe("database location", () => {
  it("tells a postgres:// or postgresql:// URL from an SQLite path", () => {
    expect(databaseLocation("./data/mcp-lens.db")).toEqual({ kind: "sqlite", file: "./data/mcp-lens.db" });
    expect(databaseLocation("postgres://lens@db/lens")).toEqual({ kind: "postgres", url: "postgres://lens@db/lens" });
    expect(isPostgresUrl("POSTGRESQL://lens@db/lens")).toBe(true);
    expect(isPostgresUrl("postgres.db")).toBe(false);
  });

  it("shows a URL without its password, however the password is written", () => {
    expect(shownDatabase("postgres://lens:s3cret@db.internal:5432/lens")).toBe("postgres://lens:***@db.internal:5432/lens");
    expect(shownDatabase("postgres://lens@db/lens")).toBe("postgres://lens@db/lens");
    // From ?password= to the end: an unescaped '#' or '&' in it would leave its tail in sight.
    expect(shownDatabase("postgres://lens@db/lens?sslmode=require&password=s3cret")).toBe("postgres://lens@db/lens?sslmode=require&password=***");
    expect(shownDatabase("postgres://lens@db/lens?password=s3#cr&et")).toBe("postgres://lens@db/lens?password=***");
    // Unescaped characters that end the userinfo early: still nothing of the password.
    for (const url of ["postgres://lens:123#abc@db/lens", "postgres://lens:p@ss/w?rd@db:5432/lens", "postgres://lens:a/b@db/lens"]) {
      const shown = shownDatabase(url);
      expect(shown, url).toMatch(/^postgres:\/\/lens:\*\*\*@db(:5432)?\/lens$/);
    }
    expect(withoutPassword("http://user:pw@upstream:8081")).toBe("http://user:***@upstream:8081");
    expect(withoutPassword("http://upstream:8081/")).toBe("http://upstream:8081/");
    expect(shownDatabase("./data/mcp-lens.db")).toBe("./data/mcp-lens.db");
  });
});
