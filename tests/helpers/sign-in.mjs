// The user's part of an authorization request, as a browser plays it: open the authorization URL;
// on the bundled Coda server's sign-in page, paste the Coda token and click Allow; on an
// authorization server that consents at once, follow its redirect. Returns the callback URL the
// browser is sent to (with code, state and iss). Plain ESM: the real-client scripts import it too.
export async function consent(authorizationUrl, codaToken = "") {
  const page = await fetch(authorizationUrl, { redirect: "manual", headers: { "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/141.0" } });
  if (page.status >= 300 && page.status < 400) return page.headers.get("location");
  const html = await page.text();
  if (page.status !== 200) throw new Error(`authorize answered ${page.status}: ${html.slice(0, 200)}`);
  const form = /<form\b[^>]*action="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  const requestId = form && /name="request_id" value="([^"]*)"/.exec(form[2])?.[1];
  if (!form || !requestId) throw new Error(`no sign-in form in the page: ${html.slice(0, 200)}`);
  const decision = await fetch(new URL(form[1], authorizationUrl), {
    method: "POST",
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ request_id: requestId, coda_token: codaToken, action: "allow" }),
  });
  if (decision.status !== 302) throw new Error(`the decision answered ${decision.status}: ${(await decision.text()).slice(0, 200)}`);
  return decision.headers.get("location");
}
