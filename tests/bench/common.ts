import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const CLI_INSPECTOR = path.join(ROOT, "dist/inspector/cli.js");

export interface BenchRow {
  case: string;
  value: number;
  unit: string;
  note?: string;
}
