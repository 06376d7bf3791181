// The sign-in page in a real browser (Debian's Chromium): a person using only the keyboard
// can paste their Coda token, allow, and land back on the client's callback with a code.
import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFakeCoda, type FakeCoda } from "../fakes/coda-api.js";
import { startServerProcess, tempDir, type RunningServer } from "../helpers/processes.js";
import { pkcePair } from "../helpers/pkce.js";
import { startHttpsOnLoopback, type HttpsOnLoopback } from "../helpers/tls.js";

const CHROMIUM = "/usr/bin/chromium";
const CODA_TOKEN = "5e0b1c9a-7d2e-4f3a-9b8c-keyboard-test";
const available = existsSync(CHROMIUM);
if (!available && process.env.CI !== "true") {
  console.warn(`login page browser test skipped: ${CHROMIUM} is missing (apt-get install chromium); CI=true makes this a failure`);
}

describe.skipIf(!available && process.env.CI !== "true")("the sign-in page in Chromium", () => {
  let coda: FakeCoda;
  let server: RunningServer;
  let browser: Browser;
  let callback: http.Server;
  let callbackUrl: string;
  /** A client's website serving its Client ID Metadata Document over https (the test's certificate). */
  let documentHost: HttpsOnLoopback;
  let documentUrl: string;
  const received: string[] = [];
  const tmp = tempDir();

  beforeAll(async () => {
    coda = await startFakeCoda({ tokens: { [CODA_TOKEN]: { name: "Keyboard User", loginId: "kb@example.com" } } });
    documentHost = await startHttpsOnLoopback(tmp.dir, (_req, res) => {
      const document = { client_id: documentUrl, client_name: "Desk Notes", redirect_uris: [callbackUrl], token_endpoint_auth_method: "none" };
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(document));
    });
    const { certificate } = documentHost;
    documentUrl = `${documentHost.origin}/oauth/client-metadata.json`;
    server = await startServerProcess({
      dbPath: `${tmp.dir}/server.db`,
      codaApiBase: coda.url,
      args: ["--cimd-allow-private"],
      env: { NODE_EXTRA_CA_CERTS: certificate.certFile },
    });
    callback = http.createServer((req, res) => {
      received.push(req.url!);
      res.writeHead(200, { "content-type": "text/html" }).end("<title>callback</title>signed in");
    });
    await new Promise<void>((resolve) => callback.listen(0, "127.0.0.1", resolve));
    callbackUrl = `http://127.0.0.1:${(callback.address() as AddressInfo).port}/callback`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });

  afterAll(async () => {
    await browser?.close();
    callback?.close();
    await documentHost?.close();
    await server?.stop();
    await coda?.close();
    tmp.cleanup();
  });

  it("works with the keyboard alone: paste the token, allow, return to the callback", async () => {
    const registration = await fetch(`${server.url}/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ client_name: "Keyboard Client", redirect_uris: [callbackUrl], token_endpoint_auth_method: "none" }),
    });
    const { client_id } = (await registration.json()) as { client_id: string };
    const { challenge } = pkcePair();
    const authorize = new URL(`${server.url}/authorize`);
    authorize.search = new URLSearchParams({ response_type: "code", client_id, redirect_uri: callbackUrl, code_challenge: challenge, code_challenge_method: "S256", state: "kb-state" }).toString();

    const page = await browser.newPage();
    await page.goto(authorize.href);
    expect(await page.title()).not.toBe("");
    const tokenInput = page.getByLabel(/coda api token/i);
    expect(await tokenInput.getAttribute("type")).toBe("password");

    // Tab to the token field, type it, Tab to Allow, press Enter: no mouse.
    for (let i = 0; i < 10 && !(await tokenInput.evaluate((el) => el === document.activeElement)); i++) await page.keyboard.press("Tab");
    expect(await tokenInput.evaluate((el) => el === document.activeElement)).toBe(true);
    await page.keyboard.type(CODA_TOKEN);
    const allow = page.getByRole("button", { name: /allow/i });
    for (let i = 0; i < 10 && !(await allow.evaluate((el) => el === document.activeElement)); i++) await page.keyboard.press("Tab");
    expect(await allow.evaluate((el) => el === document.activeElement)).toBe(true);
    await Promise.all([page.waitForURL(/\/callback\?/), page.keyboard.press("Enter")]);

    const landed = new URL(page.url());
    expect(landed.searchParams.get("state")).toBe("kb-state");
    expect(landed.searchParams.get("code")).toBeTruthy();
    expect(received.filter((url) => url.startsWith("/callback?"))).toHaveLength(1);
    await page.close();
  });

  it("shows a wrong token as an alert tied to the field, and keeps focus usable", async () => {
    const registration = await fetch(`${server.url}/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ client_name: "Keyboard Client", redirect_uris: [callbackUrl], token_endpoint_auth_method: "none" }),
    });
    const { client_id } = (await registration.json()) as { client_id: string };
    const authorize = new URL(`${server.url}/authorize`);
    authorize.search = new URLSearchParams({ response_type: "code", client_id, redirect_uri: callbackUrl, code_challenge: pkcePair().challenge, code_challenge_method: "S256", state: "s2" }).toString();
    const page = await browser.newPage();
    await page.goto(authorize.href);
    await page.getByLabel(/coda api token/i).fill("wrong-token-123");
    await Promise.all([page.waitForLoadState("load"), page.getByRole("button", { name: /allow/i }).press("Enter")]);
    const alert = page.getByRole("alert");
    expect(await alert.textContent()).toMatch(/token/i);
    const input = page.getByLabel(/coda api token/i);
    const describedBy = (await input.getAttribute("aria-describedby")) ?? "";
    expect(describedBy.split(" ")).toContain(await alert.getAttribute("id"));
    expect(await page.content()).not.toContain("wrong-token-123");
    await page.close();
  });

  it("names a metadata-document client by its document's host, shows where it returns, warns about a loopback return, and signs in", async () => {
    const authorize = new URL(`${server.url}/authorize`);
    authorize.search = new URLSearchParams({ response_type: "code", client_id: documentUrl, redirect_uri: callbackUrl, code_challenge: pkcePair().challenge, code_challenge_method: "S256", state: "cimd-state" }).toString();
    const page = await browser.newPage();
    await page.goto(authorize.href);
    expect(await page.getByRole("heading", { level: 1 }).textContent()).toBe("Connect Desk Notes to Coda");
    const documentHostShown = new URL(documentUrl).origin;
    expect(await page.getByText(/describes itself at/).textContent()).toContain(documentHostShown);
    expect(await page.getByText(/you will return to/).textContent()).toContain(new URL(callbackUrl).origin);
    const warning = page.getByRole("note");
    expect(await warning.textContent()).toMatch(/program on your own computer/);
    if (process.env.LOGIN_PAGE_SCREENSHOT) await page.screenshot({ path: process.env.LOGIN_PAGE_SCREENSHOT, fullPage: true });

    await page.getByLabel(/coda api token/i).fill(CODA_TOKEN);
    await Promise.all([page.waitForURL(/\/callback\?/), page.getByRole("button", { name: /allow/i }).press("Enter")]);
    const landed = new URL(page.url());
    expect(landed.searchParams.get("state")).toBe("cimd-state");
    expect(landed.searchParams.get("code")).toBeTruthy();
    expect(landed.searchParams.get("iss")).toBe(server.url);
    await page.close();
  });
});
