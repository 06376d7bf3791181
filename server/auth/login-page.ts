// The one page a person sees during the OAuth flow: paste a Coda API token, then Allow or Deny.
// Self-contained (inline CSS, no script, no external resources) so a strict CSP can apply.
import { createHash } from "node:crypto";
import type { Response } from "express";
import { isLoopbackHost } from "./registration.js";

/** Where the login form posts; routes.ts mounts the handler here. */
export const DECISION_PATH = "/authorize/decision";

export interface LoginPageProps {
  clientName: string;
  /** For a client identified by its metadata document (CIMD): the document's URL, which vouches for it. */
  documentUrl?: string;
  redirectUri: string;
  requestId: string;
  scopes: string[];
  error?: string;
}

const STYLE = `
  :root { color-scheme: light; }
  body { margin: 0; background: #f3f4f6; color: #1f2937; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; }
  main { max-width: 32rem; margin: 2rem auto; padding: 1.5rem 2rem; background: #fff; border: 1px solid #d1d5db; border-radius: 8px; }
  h1 { font-size: 1.4rem; margin-top: 0; }
  a { color: #1d4ed8; text-decoration: underline; }
  label { display: block; font-weight: 600; margin-top: 1rem; }
  input { box-sizing: border-box; width: 100%; margin-top: .25rem; padding: .6rem; font: inherit; border: 2px solid #6b7280; border-radius: 6px; }
  input[aria-invalid="true"] { border-color: #b91c1c; }
  .hint { font-size: .9rem; color: #374151; margin: .25rem 0 0; }
  .error { margin: .5rem 0 0; padding: .5rem .75rem; background: #fef2f2; color: #991b1b; border-left: 4px solid #b91c1c; }
  .warning { padding: .5rem .75rem; background: #fffbeb; color: #78350f; border-left: 4px solid #b45309; }
  .actions { display: flex; gap: .75rem; margin-top: 1.5rem; }
  button { font: inherit; font-weight: 600; padding: .6rem 1.4rem; border-radius: 6px; border: 2px solid #1d4ed8; cursor: pointer; }
  button[value="allow"] { background: #1d4ed8; color: #fff; }
  button[value="deny"] { background: #fff; color: #1d4ed8; }
  :focus-visible { outline: 3px solid #f59e0b; outline-offset: 2px; }
`;

// Lets the CSP allow exactly this stylesheet instead of 'unsafe-inline'.
const STYLE_HASH = createHash("sha256").update(STYLE).digest("base64");

// No form-action: browsers apply it to the redirect that follows the form post, which
// goes to the client's callback (any origin, or a custom scheme for desktop apps).
const CONTENT_SECURITY_POLICY = `default-src 'none'; style-src 'sha256-${STYLE_HASH}'; base-uri 'none'; frame-ancestors 'none'`;

export function renderLoginPage({ clientName, documentUrl, redirectUri, requestId, scopes, error }: LoginPageProps): string {
  const client = escapeHtml(clientName);
  const returnHost = displayHost(redirectUri);
  // The name is the client's own claim; the document's host is what vouches for it (CIMD).
  const identity = documentUrl
    ? `<p>The app describes itself at <strong>${escapeHtml(displayHost(documentUrl))}</strong>
      (<code>${escapeHtml(documentUrl)}</code>).</p>`
    : "";
  // MCP 2026-07-28 security considerations: any local program can claim a loopback redirect.
  const loopbackWarning =
    documentUrl && isLoopbackHost(new URL(redirectUri).hostname)
      ? `<p class="warning" role="note">This app returns to a program on your own computer (${escapeHtml(returnHost)}). Any program there could
      claim that name: allow only if you just started connecting ${client} yourself.</p>`
      : "";
  const describedBy = error ? "token-hint token-error" : "token-hint";
  const scopeList = scopes.length > 0 ? `<p>Requested scopes: ${scopes.map(scope => `<code>${escapeHtml(scope)}</code>`).join(", ")}.</p>` : "";
  const body = `
    <h1>Connect ${client} to Coda</h1>
    <p><strong>${client}</strong> wants to use Coda on your behalf. It will be able to read and change
      the docs, tables and rows that your Coda API token can access, until you revoke the token.</p>
    ${identity}
    ${scopeList}
    <p>When you are done you will return to <strong>${escapeHtml(returnHost)}</strong>.</p>
    ${loopbackWarning}
    <form method="post" action="${DECISION_PATH}">
      <input type="hidden" name="request_id" value="${escapeHtml(requestId)}">
      <label for="coda_token">Coda API token</label>
      <p class="hint" id="token-hint">Create one in your
        <a href="https://coda.io/account" target="_blank" rel="noopener noreferrer">Coda account settings (opens in a new tab)</a>
        under “API settings”, then paste it here. It is stored encrypted and used only to call Coda for you.</p>
      ${error ? `<p class="error" id="token-error" role="alert">${escapeHtml(error)}</p>` : ""}
      <input id="coda_token" name="coda_token" type="password" autocomplete="off" spellcheck="false" autocapitalize="off"
        required aria-describedby="${describedBy}"${error ? ' aria-invalid="true"' : ""}>
      <div class="actions">
        <button type="submit" name="action" value="allow">Allow</button>
        <button type="submit" name="action" value="deny" formnovalidate>Deny</button>
      </div>
    </form>`;
  return page(`Connect ${clientName} to Coda`, body);
}

/** For a decision whose request is unknown, expired or already decided. */
export function renderExpiredRequestPage(): string {
  return page(
    "Sign-in request expired",
    `<h1>This sign-in request has expired</h1>
    <p>It was already completed, or it is more than 10 minutes old. Go back to the app you were
      connecting (Claude, ChatGPT, …) and start connecting to Coda again.</p>`,
  );
}

/** For a decision whose client can no longer be identified (its metadata document failed). */
export function renderClientUnavailablePage(reason: string): string {
  return page(
    "The app could not be identified",
    `<h1>The app could not be identified</h1>
    <p class="error" role="alert">${escapeHtml(reason)}</p>
    <p>Nothing was shared. Go back to the app you were connecting and try again in a moment.</p>`,
  );
}

/** Sends a page with the headers every auth page needs: never cached, never framed. */
export function sendPage(res: Response, status: number, html: string): void {
  res
    .status(status)
    .set({
      "Content-Type": "text/html; charset=utf-8",
      "Cache-Control": "no-store",
      "X-Frame-Options": "DENY",
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "no-referrer",
      "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    })
    .send(html);
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>${body}
</main>
</body>
</html>
`;
}

// The scheme and host are what tell a person where they are sent; custom schemes (desktop apps) have no host.
function displayHost(uri: string): string {
  const url = new URL(uri);
  return url.host ? `${url.protocol}//${url.host}` : uri;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, char => `&#${char.charCodeAt(0)};`);
}
