// The cat-facts page of `keyward demo` in headless Chromium (Debian's /usr/bin/chromium, driven
// by playwright-core). Usage: node run.mjs <site-url> <foreign-site-url> <gateway-url> [screenshot-dir]
// Prints "- step … ok" lines and "N passed, M failed"; exit 0 when every step passed.
// Screenshots of each step go to the directory (default target/demo-page-screenshots).
import { chromium } from 'playwright-core';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const [site, foreign, gateway, outDir = 'target/demo-page-screenshots'] = process.argv.slice(2);
if (!site || !foreign || !gateway) {
  console.error('usage: node run.mjs <site-url> <foreign-site-url> <gateway-url> [screenshot-dir]');
  process.exit(2);
}
const origin = (u) => new URL(u).origin;
rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
const problems = [];
// Works offline: anything not on loopback is a failure.
await context.route(/^https?:\/\/(?!127\.0\.0\.1[:/]|localhost[:/])/, (route) => {
  problems.push(`request to the outside: ${route.request().url()}`);
  return route.abort();
});
const page = await context.newPage();
const gatewayRequests = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  // The foreign page's refused fetches are logged by Chromium as errors; that is the point.
  if (m.type() === 'error' && origin(page.url()) === origin(site)) problems.push(`console: ${m.text()}`);
});
page.on('request', (r) => { if (r.url().startsWith(gateway)) gatewayRequests.push(`${r.method()} ${r.url()}`); });
page.setDefaultTimeout(10000);

let n = 0;
let passed = 0;
let failed = 0;
async function step(name, fn) {
  n += 1;
  process.stdout.write(`- ${name} … `);
  try {
    await fn();
    passed += 1;
    console.log('ok');
  } catch (e) {
    failed += 1;
    console.log(`FAILED: ${e.message}`);
  }
  await page.screenshot({ path: join(outDir, `${String(n).padStart(2, '0')}-${name.replace(/[^a-z0-9]+/gi, '-')}.png`), fullPage: true }).catch(() => {});
}
function check(cond, msg) { if (!cond) throw new Error(msg); }
const tid = (id) => page.getByTestId(id);
const count = async (id) => Number(await tid(id).textContent());
const text = async (id) => (await tid(id).textContent()).trim();

try {
  await step('site first fact', async () => {
    const resp = await page.goto(site);
    check(resp.status() === 200, `status ${resp.status()}`);
    const csp = resp.headers()['content-security-policy'] || '';
    check(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), `CSP: ${csp}`);
    const html = await resp.text();
    check(!/kw_(test|live)_/.test(html), 'a secret key in the page');
    const js = await (await page.request.get(new URL('/app.js', site).href)).text();
    check(!/kw_(test|live)_/.test(js), 'a secret key in the script');
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="pk-count"]').textContent) >= 1);
    const fact = await text('pk-fact');
    check(fact.length > 10 && fact !== '…', `fact: ${fact}`);
    check((await text('pk-status')) === '', `status: ${await text('pk-status')}`);
    const why = await text('why');
    check(why.split(/(?<=\.)\s+/).length === 2 && why.includes('secret'), `the explanation: ${why}`);
  });

  await step('site new fact', async () => {
    const before = await count('pk-count');
    const requests = gatewayRequests.length;
    // The upstream may pick the same fact twice: the counter says a new one was fetched.
    await tid('pk-new').click();
    await page.waitForFunction((b) => Number(document.querySelector('[data-testid="pk-count"]').textContent) > b, before);
    check(gatewayRequests.length > requests, 'the click went to the gateway');
    check((await text('pk-fact')).length > 10, 'a fact');
    check((await text('pk-status')) === '', `status: ${await text('pk-status')}`);
  });

  await step('bff token fact', async () => {
    check(await count('bff-count') === 0, 'nothing before the click');
    const tokenAnswer = page.waitForResponse((r) => r.url() === new URL('/bff/token', site).href);
    const factAnswer = page.waitForResponse((r) => r.url().startsWith(`${gateway}/fact`) && r.request().method() === 'GET'
      && (r.request().headers().authorization || '').startsWith('Bearer '));
    await tid('bff-new').click();
    const t = await tokenAnswer;
    check(t.status() === 200, `/bff/token: ${t.status()}`);
    const body = await t.json();
    check(body.scope === 'facts:read' && body.expires_in <= 300, `token answer: ${JSON.stringify({ ...body, access_token: '…' })}`);
    const f = await factAnswer;
    check(f.status() === 200, `gateway with the token: ${f.status()}`);
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="bff-count"]').textContent) >= 1);
    check((await text('bff-fact')).length > 10, 'a fact');
    check((await text('bff-token')).includes('facts:read'), `token line: ${await text('bff-token')}`);
    check(!(await page.content()).includes(body.access_token), 'the token is not shown in the page');
  });

  await step('bff second fact', async () => {
    const before = await count('bff-count');
    await tid('bff-new').click();
    await page.waitForFunction((b) => Number(document.querySelector('[data-testid="bff-count"]').textContent) > b, before);
    check((await text('bff-status')) === '', `status: ${await text('bff-status')}`);
  });

  await step('foreign origin refused', async () => {
    const refused = [];
    const onFail = (r) => { if (r.url().startsWith(gateway) || r.url().startsWith(site)) refused.push(r.url()); };
    page.on('requestfailed', onFail);
    const resp = await page.goto(foreign);
    check(resp.status() === 200, `status ${resp.status()}`);
    check(origin(page.url()) !== origin(site), 'another origin');
    await page.waitForFunction(() => document.querySelector('[data-testid="foreign-result"]').textContent.startsWith('refused')
      && document.querySelector('[data-testid="foreign-bff"]').textContent.startsWith('refused'));
    const result = await text('foreign-result');
    check(/CORS/.test(result), `the browser blocked it: ${result}`);
    check((await text('foreign-bff')).startsWith('refused'), 'the site backend refused it');
    // Once more from the button, and the counter moved.
    await tid('foreign-try').click();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="foreign-count"]').textContent) >= 2
      && document.querySelector('[data-testid="foreign-result"]').textContent.startsWith('refused'));
    page.off('requestfailed', onFail);
    check(refused.length >= 1, 'Chromium reported the blocked requests');
  });

  await step('foreign origin direct check', async () => {
    // What the browser hid from the page: keyward's own answer to the foreign origin.
    const key = await page.locator('meta[name="kw-publishable-key"]').getAttribute('content');
    check(/^kw_pk_/.test(key), 'the copied key is the publishable one');
    const r = await page.request.get(`${gateway}/fact`, { headers: { 'x-api-key': key, origin: origin(foreign) } });
    const body = await r.json();
    check(r.status() === 403 && body.code === 'origin_not_allowed', `${r.status()} ${JSON.stringify(body)}`);
    const ok = await page.request.get(`${gateway}/fact`, { headers: { 'x-api-key': key, origin: origin(site) } });
    check(ok.status() === 200, `from the site's origin: ${ok.status()}`);
  });

  await step('back on the site', async () => {
    await page.goto(site);
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="pk-count"]').textContent) >= 1);
  });

  if (problems.length) {
    failed += 1;
    console.log(`problems:\n  ${problems.join('\n  ')}`);
  }
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
