// Opening `--db` for the inspector, read-only: an SQLite file, or a postgres:// URL.
import { databaseLocation } from "../common/database-location.js";
import { InspectorData } from "./data.js";
import type { Recording } from "./recording.js";

/** One-line errors that never show a password. */
export async function openRecording(db: string): Promise<Recording> {
  const location = databaseLocation(db);
  if (location.kind === "sqlite") return new InspectorData(location.file);
  // Loaded only for PostgreSQL: the SQLite inspector's start-up does not pay for the driver.
  const { PostgresRecording } = await import("./postgres-recording.js");
  return PostgresRecording.open(location.url);
}
