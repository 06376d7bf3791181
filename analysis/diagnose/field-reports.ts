// Failures the field reports most (2025-2026 trackers of clients, SDKs and servers), by stage:
// client credentials (client-credentials.ts), the MCP endpoint's answers (mcp-answers.ts), and
// what follows the token (after-token.ts). Concatenated in that order: the order breaks ties.

import { AFTER_TOKEN_RULES } from "./after-token.js";
import { CLIENT_CREDENTIAL_RULES } from "./client-credentials.js";
import { MCP_ANSWER_RULES } from "./mcp-answers.js";
import type { DiagnosisRule } from "./rule.js";

export { TOOL_SCHEMA_LIMIT_BYTES } from "./mcp-answers.js";
export { parseChallenges } from "./www-authenticate.js";

export const FIELD_REPORT_RULES: readonly DiagnosisRule[] = [...CLIENT_CREDENTIAL_RULES, ...MCP_ANSWER_RULES, ...AFTER_TOKEN_RULES];
